"""``sciml demo sciml-special``: log-Bessel functions, von Mises-Fisher fits and an evolved ``exp2``.

log I_v and log K_v where SciPy fails, von Mises-Fisher fits in high dimension, and an AutoNumerics-Zero search for
``exp2`` next to the shipped evolved program.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from sciml_protocols import DemoContext, DemoResult

__all__ = ["EvolvedExp2Demo", "LogBesselDemo", "VonMisesFisherFitDemo", "demos"]

# Points from the issue and the research notes where scipy.special returns inf, -inf or nothing useful.
_HARD_POINTS: tuple[tuple[str, float, float], ...] = (
    ("I", 1023.0, 1.0),
    ("I", 16383.0, 2e4),
    ("I", 1e5, 1e5),
    ("I", 4139.0, 2745.0),
    ("K", 1000.0, 10.0),
    ("K", 16383.0, 1.0),
    ("K", 1000.0, 1e4),
)


def _mpmath_log_i(v: float, x: float) -> float:
    import mpmath

    with mpmath.workdps(40):
        return float(mpmath.log(mpmath.besseli(v, x, maxterms=10**6)))


def _mpmath_log_k(v: float, x: float) -> float:
    """Log K_v(x) from K_v(x) = int_0^inf exp(-x cosh t) cosh(v t) dt in 40-digit arithmetic.

    mpmath's own besselk does not finish at (1000, 10) and fails at (1000, 1e4); the integral, split at the
    maximiser of the integrand, is an independent oracle.
    """
    import mpmath

    with mpmath.workdps(40):
        v_m, x_m = mpmath.mpf(v), mpmath.mpf(x)
        # The log-integrand v t - x cosh t peaks at asinh(v / x) with curvature x cosh(peak): integrate over +-60
        # widths around it (the rest is below exp(-1000) of the peak), one width per Gauss-Legendre panel (coarser
        # panels were seen to lose digits at (1000, 1e4)).
        peak = mpmath.asinh(v_m / x_m)
        width = 1 / mpmath.sqrt(x_m * mpmath.cosh(peak))
        low = max(mpmath.mpf(0), peak - 60 * width)
        nodes = [low] + [peak + k * width for k in range(-60, 61) if peak + k * width > low]
        value = mpmath.quad(
            lambda t: mpmath.exp(-x_m * mpmath.cosh(t)) * mpmath.cosh(v_m * t), nodes, method="gauss-legendre"
        )
        return float(mpmath.log(value))


def _scipy_values(kind: str, v: float, x: float) -> tuple[float, float]:
    """(log of the plain function, log of the scaled function unscaled) from scipy.special, or NaN without it."""
    try:
        from scipy import special
    except ImportError:  # scipy is optional: the table then shows NaN for it
        return math.nan, math.nan
    with np.errstate(all="ignore"):
        if kind == "I":
            return float(np.log(special.iv(v, x))), float(np.log(special.ive(v, x)) + x)
        return float(np.log(special.kv(v, x))), float(np.log(special.kve(v, x)) - x)


@dataclasses.dataclass(frozen=True)
class LogBesselDemo:
    """log I_v and log K_v at points where SciPy overflows, against a 40-digit mpmath oracle, and a map of both."""

    name: str = "log-bessel"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Evaluate the hard points, compare, and draw log I_v(x) and log K_v(x) over a wide range."""
        from ._bessel_api import log_iv, log_kv

        total = len(_HARD_POINTS) + 2
        rows: list[dict[str, Any]] = []
        worst = 0.0
        for i, (kind, v, x) in enumerate(_HARD_POINTS):
            ctx.progress(i, total, f"log {kind}_{v:g}({x:g}) with mpmath")
            fn = log_iv if kind == "I" else log_kv
            ours = float(fn(torch.tensor(v, dtype=torch.float64), torch.tensor(x, dtype=torch.float64)))
            reference = _mpmath_log_i(v, x) if kind == "I" else _mpmath_log_k(v, x)
            plain, scaled = _scipy_values(kind, v, x)
            error = abs(ours - reference) / max(1.0, abs(reference))
            worst = max(worst, error)
            rows.append(
                {
                    "kind": kind,
                    "v": v,
                    "x": x,
                    "ours": ours,
                    "mpmath": reference,
                    "scipy": plain,
                    "scipy_scaled": scaled,
                    "error": error,
                }
            )
        ctx.progress(len(_HARD_POINTS), total, "mapping log I and log K")
        figure = self._draw(ctx, log_iv, log_kv)
        ctx.progress(total, total, "done")
        scipy_failures = sum(1 for r in rows if not (math.isfinite(r["scipy"]) or math.isfinite(r["scipy_scaled"])))
        metrics: dict[str, float | int | str | bool] = {
            "max_error_vs_mpmath": worst,
            "points": len(rows),
            "scipy_no_finite_value": scipy_failures,
        }
        for r in rows:
            label = f"log{r['kind']}({r['v']:g},{r['x']:g})"
            metrics[label] = f"{r['ours']:.12g} (scipy {r['scipy']:.6g} / scaled {r['scipy_scaled']:.6g})"
        summary = (
            f"At {len(rows)} points where scipy.special overflows or underflows ({scipy_failures} of them give no "
            "finite log with either iv/kv or the scaled ive/kve), log_iv and log_kv agree with a 40-digit mpmath "
            f"oracle to {worst:.1e} relative (mpmath besseli with raised maxterms for I, a 40-digit integral for K, "
            "where mpmath's besselk does not finish). The map shows log I_v(x) and log K_v(x) for v up to 1e5 and "
            "x from 1e-6 to 1e6, with the region where SciPy's scaled functions are not finite hatched."
        )
        return DemoResult(
            title="log-Bessel functions of any order, where SciPy gives inf",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=worst <= 1e-12,
        )

    @staticmethod
    def _draw(ctx: DemoContext, log_iv: Any, log_kv: Any) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        n = 120 if ctx.quick else 300
        v = torch.cat([torch.zeros(1), torch.logspace(-2, 5, n - 1)]).double()
        x = torch.logspace(-6, 6, n).double()
        vv, xx = torch.meshgrid(v, x, indexing="ij")
        fields = {"I": log_iv(vv, xx).numpy(), "K": log_kv(vv, xx).numpy()}
        try:
            from scipy import special

            with np.errstate(all="ignore"):
                vn, xn = vv.numpy(), xx.numpy()
                scipy_ok = {
                    "I": np.isfinite(np.log(special.ive(vn, xn)) + xn),
                    "K": np.isfinite(np.log(special.kve(vn, xn)) - xn),
                }
        except ImportError:
            scipy_ok = None
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
        for ax, kind in zip(axes, ("I", "K"), strict=True):
            field = fields[kind]
            magnitude = np.sign(field) * np.log10(1 + np.abs(field))
            image = ax.pcolormesh(
                np.log10(x.numpy()),
                np.log10(v.numpy() + 1e-2),
                magnitude,
                shading="auto",
                cmap="RdBu_r" if kind == "I" else "PuOr_r",
            )
            if scipy_ok is not None:
                ax.contourf(
                    np.log10(x.numpy()),
                    np.log10(v.numpy() + 1e-2),
                    (~scipy_ok[kind]).astype(float),
                    levels=[0.5, 1.5],
                    colors="none",
                    hatches=["////"],
                )
                ax.contour(
                    np.log10(x.numpy()),
                    np.log10(v.numpy() + 1e-2),
                    (~scipy_ok[kind]).astype(float),
                    levels=[0.5],
                    colors="k",
                    linewidths=0.8,
                )
            ax.set_xlabel(r"$\log_{10} x$")
            ax.set_ylabel(r"$\log_{10}(v + 0.01)$")
            ax.set_title(rf"$\log {kind}_v(x)$ (hatched: SciPy's scaled value not finite)")
            bar = fig.colorbar(image, ax=ax)
            bar.set_label(r"sign $\cdot\log_{10}(1 + |\log " + kind + r"_v(x)|)$")
        path = ctx.figure_path("log-bessel-map")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@dataclasses.dataclass(frozen=True)
class VonMisesFisherFitDemo:
    """Sample von Mises-Fisher data in 2048 and 32768 dimensions and fit it back, next to SciPy's fit."""

    name: str = "vmf-fit"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Sample, fit, compare the recovered concentration with the truth and with scipy.stats."""
        from ._vmf import VonMisesFisher, fit_vmf

        cases = [(2048, 1000.0), (32768, 20000.0)]
        n = 400 if ctx.quick else 2000
        generator = torch.Generator().manual_seed(ctx.seed)
        rows = []
        for i, (dim, kappa) in enumerate(cases):
            ctx.progress(i, len(cases) + 1, f"d={dim}: sampling {n} points")
            loc = torch.nn.functional.normalize(torch.randn(dim, generator=generator, dtype=torch.float64), dim=0)
            torch.manual_seed(ctx.seed + i)
            dist = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64))
            start = time.perf_counter()
            samples = dist.sample((n,))
            sample_seconds = time.perf_counter() - start
            start = time.perf_counter()
            fit = fit_vmf(samples)
            fit_seconds = time.perf_counter() - start
            loc_hat, kappa_hat = fit.value
            debiased = fit.stats.get("debiased_concentration")
            scipy_kappa = self._scipy_fit(samples.numpy())
            rows.append(
                {
                    "dim": dim,
                    "kappa": kappa,
                    "n": n,
                    "kappa_hat": float(kappa_hat),
                    "kappa_debiased": float(debiased) if debiased is not None else math.nan,
                    "cosine": float(loc_hat @ loc),
                    "scipy_kappa": scipy_kappa,
                    "converged": fit.converged,
                    "sample_s": sample_seconds,
                    "fit_s": fit_seconds,
                }
            )
        ctx.progress(len(cases), len(cases) + 1, "drawing")
        figure = self._draw(ctx, rows)
        ctx.progress(len(cases) + 1, len(cases) + 1, "done")
        metrics: dict[str, float | int | str | bool] = {"samples_per_fit": n}
        worst = 0.0
        for r in rows:
            key = f"d={r['dim']}"
            estimate = r["kappa_debiased"] if math.isfinite(r["kappa_debiased"]) else r["kappa_hat"]
            relative = abs(estimate - r["kappa"]) / r["kappa"]
            worst = max(worst, relative)
            metrics[f"{key} kappa true"] = r["kappa"]
            metrics[f"{key} kappa MLE"] = r["kappa_hat"]
            metrics[f"{key} kappa debiased"] = r["kappa_debiased"]
            metrics[f"{key} relative error"] = relative
            metrics[f"{key} cos(mu_hat, mu)"] = r["cosine"]
            metrics[f"{key} scipy kappa"] = r["scipy_kappa"]
            metrics[f"{key} sample+fit s"] = r["sample_s"] + r["fit_s"]
        summary = (
            f"{n} samples drawn with Wood's rejection sampler in d = 2048 and d = 32768 and fitted back by "
            "maximum likelihood (Banerjee start, Newton on the Bessel ratio I_{d/2}/I_{d/2-1}). The debiased "
            f"estimate recovers the concentration to within {worst:.1%}; scipy.stats.vonmises_fisher.fit returns "
            "kappa = 1e-8 in these dimensions because its Bessel ratio underflows."
        )
        return DemoResult(
            title="von Mises-Fisher fits in 2048 and 32768 dimensions",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=all(r["converged"] for r in rows) and worst < 0.1,
        )

    @staticmethod
    def _scipy_fit(samples: np.ndarray) -> float:
        try:
            from scipy import stats
        except ImportError:
            return math.nan
        try:
            with np.errstate(all="ignore"):
                _, kappa = stats.vonmises_fisher.fit(samples)
        except Exception:  # scipy raising is itself the result being shown
            return math.nan
        return float(kappa)

    @staticmethod
    def _draw(ctx: DemoContext, rows: list[dict[str, Any]]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
        labels = [f"d = {r['dim']}" for r in rows]
        positions = np.arange(len(rows))
        width = 0.2
        series = [
            ("true", [r["kappa"] for r in rows], "0.3"),
            ("sciml MLE", [r["kappa_hat"] for r in rows], "tab:blue"),
            ("sciml debiased", [r["kappa_debiased"] for r in rows], "tab:green"),
            (
                "scipy fit",
                [max(r["scipy_kappa"], 1e-8) if math.isfinite(r["scipy_kappa"]) else 1e-8 for r in rows],
                "tab:red",
            ),
        ]
        for k, (label, values, color) in enumerate(series):
            ax.bar(positions + (k - 1.5) * width, values, width, label=label, color=color)
        ax.set_yscale("log")
        ax.set_xticks(positions, labels)
        ax.set_ylabel(r"concentration $\kappa$")
        ax.set_title("recovered concentration (log scale; scipy returns 1e-8)")
        ax.legend(loc="center right", fontsize=9)
        path = ctx.figure_path("vmf-fit")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@dataclasses.dataclass(frozen=True)
class EvolvedExp2Demo:
    """An AutoNumerics-Zero search for ``exp2`` on [0, 1) from empty programs, and the accuracy of the shipped program.

    A short :func:`~sciml_special.evolve` run (NSGA-II over maximum float32 ULP error and operation count, started
    from random one-operation programs) shows the Pareto front the search builds; the program shipped in
    :func:`~sciml_special.exp2_evolved` came out of a longer run of the same search. Its error is then measured
    next to ``torch.exp2`` against a float64 oracle, on every 2^k-th float32 of [0, 1) and on random points of the
    whole float32 range.
    """

    name: str = "evolved-exp2"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Search, then measure the shipped program against torch.exp2, and draw both."""
        from ._evolve import evolve
        from ._evolve._float32 import ulp_error
        from ._exp2 import exp2_evolved

        population, generations = (16, 30) if ctx.quick else (24, 60)
        ctx.progress(0, 3, f"evolving exp2 programs ({population} x {generations} generations)")
        start = time.perf_counter()
        search = evolve(
            np.exp2,
            (0.0, 1.0),
            population=population,
            generations=generations,
            max_ops=8,
            train_points=256,
            validation_points=4000,
            fit_generations=80,
            seed=ctx.seed,
        )
        search_seconds = time.perf_counter() - start
        front = [(c.ops, c.validation_ulp) for c in search.value]

        ctx.progress(1, 3, "measuring the shipped program against torch.exp2")
        # Every 2^k-th float32 of [0, 1) (bit patterns 0 .. 0x3f7fffff), plus random points of the full range.
        step = 1 << (12 if ctx.quick else 8)
        bits = np.arange(0, 0x3F800000, step, dtype=np.uint32)
        reduced = torch.from_numpy(bits.view(np.float32).copy())
        generator = torch.Generator().manual_seed(ctx.seed)
        wide = torch.rand(1 << 18, generator=generator) * 276.0 - 149.0
        rows: dict[str, dict[str, float]] = {}
        for label, x in (("[0, 1)", reduced), ("[-149, 127]", wide)):
            exact = torch.exp2(x.double()).numpy()
            ours = ulp_error(exp2_evolved(x).numpy(), exact)
            theirs = ulp_error(torch.exp2(x).numpy(), exact)
            rows[label] = {
                "points": float(x.numel()),
                "ours_max": float(ours.max()),
                "torch_max": float(theirs.max()),
                "ours_correctly_rounded": float((ours <= 0.5).mean()),
                "torch_correctly_rounded": float((theirs <= 0.5).mean()),
            }
        exact_reduced = torch.exp2(reduced.double()).numpy()
        ours_reduced = ulp_error(exp2_evolved(reduced).numpy(), exact_reduced)
        torch_reduced = ulp_error(torch.exp2(reduced).numpy(), exact_reduced)

        ctx.progress(2, 3, "drawing")
        figure = self._draw(ctx, front, reduced.numpy(), ours_reduced, torch_reduced)
        ctx.progress(3, 3, "done")
        best_sub_ulp = min((ops for ops, error in front if error < 1.0), default=None)
        metrics: dict[str, float | int | str | bool] = {
            "search population x generations": f"{population} x {generations}",
            "search seconds": search_seconds,
            "programs fitted": int(search.stats["evaluations"]),
            "front (ops: validation max ULP)": ", ".join(f"{ops}: {error:.3g}" for ops, error in front),
            "fewest ops below 1 ULP in this run": best_sub_ulp if best_sub_ulp is not None else "none yet",
        }
        for label, row in rows.items():
            metrics[f"{label} points"] = int(row["points"])
            metrics[f"{label} exp2_evolved max ULP"] = row["ours_max"]
            metrics[f"{label} torch.exp2 max ULP"] = row["torch_max"]
            metrics[f"{label} exp2_evolved correctly rounded"] = row["ours_correctly_rounded"]
            metrics[f"{label} torch.exp2 correctly rounded"] = row["torch_correctly_rounded"]
        shipped = max(row["ours_max"] for row in rows.values())
        summary = (
            f"A {population} x {generations} NSGA-II run from random one-operation programs "
            f"({int(search.stats['evaluations'])} programs, {search_seconds:.0f} s) builds the Pareto front of "
            "straight-line programs of add, multiply and FMA for 2^x on [0, 1); the shipped exp2_evolved (6 FMAs "
            "with range reduction, found by a longer run of the same search) stays below one float32 ULP: "
            f"{shipped:.3f} ULP at worst on the sampled points here, and 0.885 ULP over every float32 of [0, 1) "
            "(benchmarks/exhaustive_exp2.py)."
        )
        return DemoResult(
            title="Evolved float32 exp2 (AutoNumerics-Zero)",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=shipped < 1.0,
        )

    @staticmethod
    def _draw(
        ctx: DemoContext,
        front: list[tuple[int, float]],
        x: np.ndarray,
        ours: np.ndarray,
        theirs: np.ndarray,
    ) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        ops, errors = zip(*front, strict=True)
        left.step(ops, errors, where="post", color="tab:blue")
        left.plot(ops, errors, "o", color="tab:blue", label="Pareto front of this run")
        left.axhline(1.0, color="tab:red", linestyle="--", linewidth=1, label="1 ULP")
        left.plot([6], [0.885], "*", color="tab:green", markersize=12, label="shipped (exhaustive max)")
        left.set_yscale("log")
        left.set_xlabel("operations (add, mult, fma)")
        left.set_ylabel("max error on validation points (float32 ULP)")
        left.set_title("search: accuracy against cost")
        left.legend(fontsize=8)
        bins = 256
        edges = np.linspace(0.0, 1.0, bins + 1)
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        ours_max = np.zeros(bins)
        theirs_max = np.zeros(bins)
        np.maximum.at(ours_max, which, ours)
        np.maximum.at(theirs_max, which, theirs)
        centers = 0.5 * (edges[1:] + edges[:-1])
        right.plot(centers, ours_max, color="tab:green", label="exp2_evolved")
        right.plot(centers, theirs_max, color="0.4", label="torch.exp2 (CPU)")
        right.axhline(1.0, color="tab:red", linestyle="--", linewidth=1)
        right.set_xlabel("x")
        right.set_ylabel("max ULP error per bin (vs float64)")
        right.set_title("error of 2^x on [0, 1)")
        right.legend(fontsize=8)
        path = ctx.figure_path("evolved-exp2")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def demos() -> list[Any]:
    """The demos of sciml-special (entry point ``sciml.demos``).

    Example:
        >>> [d.name for d in demos()]
        ['log-bessel', 'vmf-fit', 'evolved-exp2']
    """
    return [LogBesselDemo(), VonMisesFisherFitDemo(), EvolvedExp2Demo()]
