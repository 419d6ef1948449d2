"""``sciml bench sciml-special``: log-Bessel, vMF fitting and evolved ``exp2`` against their peers.

log I_v and log K_v against scipy.special, the vMF fit against scipy.stats, ``exp2_evolved`` against ``torch.exp2``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from sciml_protocols import BenchContext, BenchMeasurement, BenchResult, measure_time

__all__ = ["EvolvedExp2Benchmark", "LogBesselBenchmark", "VonMisesFisherFitBenchmark", "cases"]


def _points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = 10.0 ** rng.uniform(-1.0, 3.0, n)
    x = 10.0 ** rng.uniform(-3.0, 3.0, n)
    return v, x


@dataclasses.dataclass(frozen=True)
class LogBesselBenchmark:
    """log I_v(x) or log K_v(x) over many float64 points, against scipy's scaled functions where they are finite.

    The peer computes ``log(ive(v, x)) + x`` (or ``log(kve(v, x)) - x``) on the CPU, the way users get a log-Bessel
    value from SciPy today; points where that is not finite are dropped so both sides do the same work. On CUDA our
    side runs on the GPU (the peer has no GPU path).
    """

    kind: str = "I"

    @property
    def name(self) -> str:
        """``log_iv`` or ``log_kv``."""
        return "log_iv" if self.kind == "I" else "log_kv"

    @property
    def peer(self) -> str:
        """The scipy function compared against."""
        return "scipy.special.ive" if self.kind == "I" else "scipy.special.kve"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time both sides on the same points and report how far apart they are."""
        from ._bessel_api import log_iv, log_kv

        n = 100_000 if ctx.quick else 1_000_000
        v, x = _points(n, ctx.seed)
        try:
            from scipy import special
        except ImportError:
            special = None
        reference = np.full_like(v, np.nan)
        if special is not None:
            with np.errstate(all="ignore"):
                reference = np.log(special.ive(v, x)) + x if self.kind == "I" else np.log(special.kve(v, x)) - x
            keep = np.isfinite(reference)
            v, x, reference = v[keep], x[keep], reference[keep]
        v_t = torch.as_tensor(v, device=ctx.device)
        x_t = torch.as_tensor(x, device=ctx.device)
        fn = log_iv if self.kind == "I" else log_kv
        ours_value = fn(v_t, x_t)
        ours_time = measure_time(lambda: fn(v_t, x_t), device=ctx.device, min_run_time=ctx.min_run_time)
        size = f"{len(v):,} float64 points, v in [0.1, 1e3], x in [1e-3, 1e3] (log-uniform)"
        ours_metrics: dict[str, Any] = {"finite": bool(torch.isfinite(ours_value).all())}
        if special is None:
            return BenchResult(
                self.name,
                size,
                BenchMeasurement(f"sciml_special.{self.name}", ours_time, ours_metrics),
                None,
                note="scipy not installed",
            )
        difference = np.abs(ours_value.cpu().numpy() - reference) / np.maximum(1.0, np.abs(reference))
        ours_metrics["max_rel_difference_to_scipy"] = float(difference.max())
        ours_metrics["median_rel_difference_to_scipy"] = float(np.median(difference))

        def peer() -> np.ndarray:
            with np.errstate(all="ignore"):
                if self.kind == "I":
                    return np.log(special.ive(v, x)) + x
                return np.log(special.kve(v, x)) - x

        peer_time = measure_time(peer, device="cpu", min_run_time=ctx.min_run_time)
        dropped = n - len(v)
        note = f"{dropped:,} of {n:,} points dropped where scipy's value is not finite (ours is finite there too)"
        if ctx.device.type == "cuda":
            note += "; ours on CUDA, scipy on the CPU"
        return BenchResult(
            self.name,
            size,
            BenchMeasurement(f"sciml_special.{self.name}", ours_time, ours_metrics),
            BenchMeasurement(f"log(scipy.special.{'ive' if self.kind == 'I' else 'kve'})", peer_time, {}),
            note=note,
        )


@dataclasses.dataclass(frozen=True)
class VonMisesFisherFitBenchmark:
    """Maximum-likelihood vMF fit against ``scipy.stats.vonmises_fisher.fit`` where SciPy still works (d = 64)."""

    name: str = "vmf_fit"
    peer: str = "scipy.stats.vonmises_fisher.fit"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Sample with SciPy, fit with both, compare the recovered concentration and the time."""
        from ._vmf import fit_vmf

        dim, kappa, n = 64, 20.0, (2_000 if ctx.quick else 20_000)
        rng = np.random.default_rng(ctx.seed)
        loc = rng.standard_normal(dim)
        loc /= np.linalg.norm(loc)
        try:
            from scipy import stats
        except ImportError:
            stats = None
        if stats is not None:
            samples = stats.vonmises_fisher(loc, kappa).rvs(n, random_state=rng)  # pyright: ignore[reportArgumentType]
        else:
            from ._vmf import VonMisesFisher

            samples = VonMisesFisher(torch.as_tensor(loc), kappa).sample((n,)).numpy()
        x = torch.as_tensor(samples, device=ctx.device)
        fit = fit_vmf(x)
        ours_time = measure_time(lambda: fit_vmf(x), device=ctx.device, min_run_time=ctx.min_run_time)
        kappa_hat = float(fit.value[1])
        size = f"d={dim}, n={n:,}, kappa={kappa:g}, float64"
        ours = BenchMeasurement(
            "sciml_special.fit_vmf",
            ours_time,
            {"kappa_hat": kappa_hat, "relative_error": abs(kappa_hat - kappa) / kappa},
        )
        if stats is None:
            return BenchResult(self.name, size, ours, None, note="scipy not installed")
        _, scipy_kappa = stats.vonmises_fisher.fit(samples)
        scipy_kappa = float(scipy_kappa)
        peer_time = measure_time(
            lambda: stats.vonmises_fisher.fit(samples), device="cpu", min_run_time=ctx.min_run_time
        )
        peer_error = abs(float(scipy_kappa) - kappa) / kappa if math.isfinite(scipy_kappa) else math.inf
        peer = BenchMeasurement(
            "scipy.stats.vonmises_fisher.fit",
            peer_time,
            {"kappa_hat": float(scipy_kappa), "relative_error": peer_error},
        )
        return BenchResult(
            self.name, size, ours, peer, note="samples drawn by scipy; from d = 80 up scipy's fit returns kappa = 1e-8"
        )


@dataclasses.dataclass(frozen=True)
class EvolvedExp2Benchmark:
    """``exp2_evolved`` (evolved 6-FMA program with range reduction) against ``torch.exp2`` on float32 inputs.

    Same inputs (uniform in [-100, 100]), same device, same process; on CUDA ours is the Triton kernel. Both are
    scored in float32 ULPs against ``torch.exp2`` in float64.
    """

    name: str = "exp2_evolved"
    peer: str = "torch.exp2"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time both functions on the same float32 tensor and report their maximum ULP errors."""
        from ._evolve._float32 import ulp_error
        from ._exp2 import exp2_evolved

        n = 1 << (20 if ctx.quick else 24)
        generator = torch.Generator().manual_seed(ctx.seed)
        x = (torch.rand(n, generator=generator) * 200.0 - 100.0).to(ctx.device)
        exact = torch.exp2(x.double()).cpu().numpy()
        measured = {}
        for label, function in (("ours", exp2_evolved), ("peer", torch.exp2)):
            seconds = measure_time(lambda f=function: f(x), device=ctx.device, min_run_time=ctx.min_run_time)
            error = ulp_error(function(x).cpu().numpy(), exact)
            measured[label] = (seconds, {"max_ulp": float(error.max()), "elements_per_s": n / seconds})
        backend = "Triton kernel" if ctx.device.type == "cuda" else "PyTorch reference"
        return BenchResult(
            self.name,
            f"{n:,} float32 values uniform in [-100, 100]",
            BenchMeasurement(f"sciml_special.exp2_evolved ({backend})", *measured["ours"]),
            BenchMeasurement("torch.exp2", *measured["peer"]),
            note="errors against torch.exp2 in float64; exhaustive accuracy in benchmarks/exhaustive_exp2.py",
        )


def cases() -> list[Any]:
    """The benchmark cases of sciml-special (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()]
        ['log_iv', 'log_kv', 'vmf_fit', 'exp2_evolved']
    """
    return [LogBesselBenchmark("I"), LogBesselBenchmark("K"), VonMisesFisherFitBenchmark(), EvolvedExp2Benchmark()]
