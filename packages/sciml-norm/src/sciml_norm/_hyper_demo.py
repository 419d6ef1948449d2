r"""``sciml demo sciml-norm``: hypernetwork demos, MIP against the plain hypernetwork and NeuMeta across widths.

Both run on small synthetic tasks generated here (no downloads), under one CPU thread. Nothing heavy loads at
import: the experiments (:mod:`sciml_norm._mip`, :mod:`sciml_norm._neumeta`) load when a demo runs, matplotlib
when a figure is drawn.

References:
    Jose Javier Gonzalez Ortiz, John Guttag, Adrian V. Dalca, "Magnitude Invariant Parametrizations Improve
    Hypernetwork Learning", ICLR 2024, arXiv:2304.07645.
    Xingyi Yang and Xinchao Wang, "Neural Metamorphosis", ECCV 2024, arXiv:2410.11878.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import TYPE_CHECKING, Any

from sciml_protocols import DemoContext, DemoResult

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MIPHypernetworkDemo", "NeuMetaWidthsDemo"]


# ------------------------------------------------------------------------------------------------------------- MIP


def _mip_invariants() -> dict[str, bool]:
    """Constant-norm encodings and (non-)homogeneity, on fixed random inputs in float64."""
    import torch
    from torch import nn

    from ._mip import HyperNetwork, encode_cos_sin, encode_z_one_minus_z

    generator = torch.Generator().manual_seed(0)
    gamma = torch.rand(64, 3, generator=generator, dtype=torch.float64)
    cos_sin = torch.linalg.vector_norm(encode_cos_sin(gamma), dim=-1)
    z = torch.linalg.vector_norm(encode_z_one_minus_z(gamma), ord=1, dim=-1)
    l2_ok = bool(torch.allclose(cos_sin, torch.full_like(cos_sin, math.sqrt(3.0)), rtol=0, atol=1e-12))
    l1_ok = bool(torch.allclose(z, torch.full_like(z, 3.0), rtol=0, atol=1e-12))

    torch.manual_seed(0)
    primary = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    base = HyperNetwork.baseline(primary, 3, hidden_sizes=(16, 32))
    mip = HyperNetwork(primary, 3, hidden_sizes=(16, 32))
    small = gamma * 0.5
    homogeneous, proportional = True, False
    with torch.no_grad():
        for a in (0.25, 1.5, 2.0):
            plain, scaled = base(small), base(a * small)
            homogeneous &= all(
                bool(torch.allclose(scaled[n], a * plain[n], rtol=1e-9, atol=1e-12)) for n in base.predicted_names
            )
            flat = torch.cat([v.flatten(1) for v in mip(small).values()], 1)
            flat_scaled = torch.cat([v.flatten(1) for v in mip(a * small).values()], 1)
            gap = torch.linalg.vector_norm(flat_scaled - a * flat) / torch.linalg.vector_norm(a * flat)
            proportional |= bool(gap < 0.05 * abs(1 - a))
    return {
        "cos|sin encoding has L2 norm sqrt(k)": l2_ok,
        "z|1-z encoding has L1 norm k": l1_ok,
        "plain hypernetwork is positively homogeneous": homogeneous,
        "MIP hypernetwork is not proportional": not proportional,
    }


@dataclasses.dataclass(frozen=True)
class MIPHypernetworkDemo:
    r"""MIP against the plain hypernetwork: convergence over several seeds on a small data-mixing task.

    The primary is a 1-16-16-1 tanh MLP whose every parameter comes from a hypernetwork of input
    :math:`\gamma \in [0, 1]`, fitted to :math:`y(x;\gamma) = (1-\gamma)\sin 3x + \gamma(|2x| - \tfrac12 +
    0.3\cos 5x)` (:func:`~sciml_norm._mip.mip_convergence_experiment`). MIP (``cos|sin`` encoding, residual
    :math:`\theta_0`) and the plain hypernetwork (bias-free LeakyReLU MLP, :math:`\theta \propto \gamma`) share
    seed, data, optimizer and widths. Quick mode: 5 seeds x 100 Adam steps (seconds); full: 10 seeds x 300.

    Checks (``passed``): the encodings have constant norm (L2 :math:`\sqrt k` for ``cos|sin``, L1 :math:`k` for
    ``z|1-z``), the plain hypernetwork is positively homogeneous and MIP's is not, and MIP has the lower final
    evaluation loss *and* the lower area under the loss curve on a majority of the seeds.

    Example:
        >>> MIPHypernetworkDemo().name
        'mip-hypernetwork'

    Reference:
        Gonzalez Ortiz, Guttag, Dalca, "Magnitude Invariant Parametrizations Improve Hypernetwork Learning",
        ICLR 2024, arXiv:2304.07645.
    """

    name: str = "mip-hypernetwork"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Train both hypernetworks on every seed, check the invariants, tabulate and draw the loss curves."""
        from ._mip import mip_convergence_experiment

        seeds = tuple(range(ctx.seed, ctx.seed + (5 if ctx.quick else 10)))
        steps = 100 if ctx.quick else 300
        ctx.progress(0, 3, "invariants")
        checks = _mip_invariants()
        ctx.progress(1, 3, f"training {len(seeds)} seeds x 2 hypernetworks")
        start = time.perf_counter()
        result = mip_convergence_experiment(seeds=seeds, steps=steps, eval_every=10)
        seconds = time.perf_counter() - start
        ctx.progress(2, 3, "drawing")
        figure = _draw_mip(ctx, result)
        ctx.progress(3, 3, "done")

        mip, base = result["mip"], result["baseline"]
        final_wins = sum(m < b for m, b in zip(mip["final"], base["final"], strict=True))
        auc_wins = sum(m < b for m, b in zip(mip["auc"], base["auc"], strict=True))
        majority = len(seeds) // 2 + 1
        checks[f"MIP lower final loss on >= {majority}/{len(seeds)} seeds"] = final_wins >= majority
        checks[f"MIP lower loss-curve area on >= {majority}/{len(seeds)} seeds"] = auc_wins >= majority
        metrics: dict[str, float | int | str | bool] = {}
        for i, seed in enumerate(seeds):
            metrics[f"seed {seed}: final loss MIP / plain"] = f"{mip['final'][i]:.2e} / {base['final'][i]:.2e}"
            reach_m, reach_b = mip["steps_to_threshold"][i], base["steps_to_threshold"][i]
            metrics[f"seed {seed}: steps to loss {result['threshold']} MIP / plain"] = (
                f"{reach_m if reach_m is not None else 'never'} / {reach_b if reach_b is not None else 'never'}"
            )
        metrics["median final loss, MIP"] = statistics.median(mip["final"])
        metrics["median final loss, plain"] = statistics.median(base["final"])
        metrics["seeds where MIP ends lower"] = final_wins
        metrics["seeds where MIP's curve area is lower"] = auc_wins
        metrics["steps per run"] = steps
        metrics["training seconds (all runs)"] = seconds
        metrics.update({f"check: {name}": ok for name, ok in checks.items()})
        summary = (
            f"A 1-16-16-1 tanh MLP whose weights come from a hypernetwork of the mixing weight gamma, trained "
            f"{steps} Adam steps on {len(seeds)} seeds. MIP (cos|sin encoding, residual theta_0) ends with the lower "
            f"evaluation loss on {final_wins}/{len(seeds)} seeds and the lower area under the loss curve on "
            f"{auc_wins}/{len(seeds)} (median final loss {statistics.median(mip['final']):.2e} against "
            f"{statistics.median(base['final']):.2e} for the plain, positively homogeneous hypernetwork)."
            + (" All checks passed." if all(checks.values()) else
               " Failed checks: " + ", ".join(k for k, ok in checks.items() if not ok) + ".")
        )  # fmt: skip
        return DemoResult(
            title="Magnitude invariant parametrizations against the plain hypernetwork",
            summary=summary,
            metrics=metrics,
            figures=(figure,) if figure is not None else (),
            passed=all(checks.values()),
        )


def _draw_mip(ctx: DemoContext, result: dict[str, Any]) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib is optional: the numbers still come back
        return None
    figure = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    axes = figure.subplots()
    steps = result["eval_steps"]
    for key, color, label in (("mip", "tab:red", "MIP"), ("baseline", "tab:blue", "plain hypernetwork")):
        for i, curve in enumerate(result[key]["eval"]):
            axes.plot(steps, curve, color=color, alpha=0.6, linewidth=1.2, label=label if i == 0 else None)
    axes.axhline(result["threshold"], color="0.5", linestyle=":", label="threshold")
    axes.set_yscale("log")
    axes.set_xlabel("Adam step")
    axes.set_ylabel("evaluation MSE (10 values of gamma)")
    axes.set_title(f"hypernetwork convergence, {len(result['seeds'])} seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    path = ctx.figure_path("mip-hypernetwork")
    figure.savefig(path)
    return path


# --------------------------------------------------------------------------------------------------------- NeuMeta


@dataclasses.dataclass(frozen=True)
class NeuMetaWidthsDemo:
    r"""Networks of many widths sampled from one NeuMeta weight manifold against individually trained networks.

    The family is 2-w-w-2 ReLU MLPs on a 2-D two-class checkerboard (:func:`~sciml_norm._neumeta.
    neumeta_width_experiment`). A width-32 network is trained and its hidden channels permuted along shortest
    Hamiltonian paths (smoothing); the INR then learns with the paper's recipe (reconstruction warm-up, then
    coordinate noise, random training widths 8/16/24/32, cross-entropy + distillation + reconstruction), and
    networks are sampled at the trained widths and at unseen ones (12, 20, 28), averaged over 8 coordinate draws.
    Quick mode uses a smaller INR and fewer steps (about 20 s on one core); full mode also trains an INR on the
    unpermuted network, to show what the smoothing buys (a couple of minutes).

    Checks (``passed``): the permutation preserves the network's function (test logits within 1e-5) and lowers
    its total variation; the sampled networks reach on average at least 0.95 (full) / 0.88 (quick) of the
    individually trained networks' test accuracy, and at least 0.88 (full) / 0.70 (quick) at every trained and
    unseen width. Measured at seed 0 (full): ratios 0.91 at width 8 (0.836 against 0.923), 0.96-0.99 at the other
    widths, unseen ones included; the narrowest widths are the weak spot (seed 1: 0.91 at unseen width 12).

    Example:
        >>> NeuMetaWidthsDemo().name
        'neumeta-widths'

    Reference:
        Xingyi Yang and Xinchao Wang, "Neural Metamorphosis", ECCV 2024, arXiv:2410.11878.
    """

    name: str = "neumeta-widths"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Train the baselines and the INR, sample every width, check and draw accuracy against width."""
        from ._neumeta import neumeta_width_experiment

        if ctx.quick:
            settings: dict[str, Any] = {
                "inr_steps": 500,
                "warmup_steps": 250,
                "net_steps": 400,
                "hidden_dim": 64,
                "raw_baseline": False,
            }
            min_needed, mean_needed = 0.70, 0.88
        else:
            settings = {"raw_baseline": True}
            min_needed, mean_needed = 0.88, 0.95
        ctx.progress(0, 2, "training the baselines and the INR")
        result = neumeta_width_experiment(seed=ctx.seed, **settings)
        ctx.progress(1, 2, "drawing")
        figure = _draw_neumeta(ctx, result)
        ctx.progress(2, 2, "done")

        widths = result["widths"]
        individual = {w: result["individual"][w]["accuracy"] for w in widths}
        sampled = {w: result["neumeta_smooth"][w]["accuracy"] for w in widths}
        ratios = {w: sampled[w] / individual[w] for w in widths}
        unseen = set(result["unseen_widths"])
        checks = {
            "permutation preserves the function (1e-5)": result["permutation_max_abs_diff"] < 1e-5,
            "permutation lowers total variation": result["tv_after"] < result["tv_before"],
            f"sampled >= {min_needed:.2f} x individual at every width": min(ratios.values()) >= min_needed,
            f"sampled >= {mean_needed:.2f} x individual on average": statistics.mean(ratios.values()) >= mean_needed,
        }
        metrics: dict[str, float | int | str | bool] = {}
        for w in widths:
            tag = "unseen" if w in unseen else "trained"
            metrics[f"width {w} ({tag}): sampled / individual accuracy"] = f"{sampled[w]:.3f} / {individual[w]:.3f}"
        if "neumeta_raw" in result:
            for w in widths:
                metrics[f"width {w}: sampled without smoothing"] = result["neumeta_raw"][w]["accuracy"]
        metrics["min ratio sampled / individual"] = min(ratios.values())
        metrics["mean ratio sampled / individual"] = statistics.mean(ratios.values())
        metrics["mean ratio, unseen widths"] = statistics.mean(ratios[w] for w in unseen) if unseen else float("nan")
        metrics["total variation before permutation"] = result["tv_before"]
        metrics["total variation after permutation"] = result["tv_after"]
        metrics["permutation max |logit change|"] = result["permutation_max_abs_diff"]
        metrics["INR relative weight error at width 32"] = result["recon_rel_error"]["neumeta_smooth"]
        metrics["seconds (all training)"] = result["seconds"]
        metrics.update({f"check: {name}": ok for name, ok in checks.items()})
        seen_text = ", ".join(f"{w}: {sampled[w]:.3f}/{individual[w]:.3f}" for w in widths if w not in unseen)
        unseen_text = ", ".join(f"{w}: {sampled[w]:.3f}/{individual[w]:.3f}" for w in widths if w in unseen)
        summary = (
            f"One implicit weight manifold for 2-w-w-2 MLPs on a 2-D checkerboard. Test accuracy sampled / "
            f"individually trained at the trained widths {seen_text}; at unseen widths {unseen_text} (lowest ratio "
            f"{min(ratios.values()):.3f}). The SHP permutation kept the logits within "
            f"{result['permutation_max_abs_diff']:.1e} and cut the total variation from {result['tv_before']:.0f} to "
            f"{result['tv_after']:.0f}."
            + (" All checks passed." if all(checks.values()) else
               " Failed checks: " + ", ".join(k for k, ok in checks.items() if not ok) + ".")
        )  # fmt: skip
        return DemoResult(
            title="Neural Metamorphosis: networks of any width from one weight manifold",
            summary=summary,
            metrics=metrics,
            figures=(figure,) if figure is not None else (),
            passed=all(checks.values()),
        )


def _draw_neumeta(ctx: DemoContext, result: dict[str, Any]) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib is optional: the numbers still come back
        return None
    figure = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    axes = figure.subplots()
    widths = result["widths"]
    series = [
        ("individual", "individually trained", "k", "s"),
        ("neumeta_smooth", "NeuMeta (smoothed)", "tab:red", "o"),
    ]
    if "neumeta_raw" in result:
        series.append(("neumeta_raw", "NeuMeta (no permutation)", "tab:blue", "^"))
    for key, label, color, marker in series:
        axes.plot(widths, [result[key][w]["accuracy"] for w in widths], marker=marker, color=color, label=label)
    for w in result["unseen_widths"]:
        axes.axvline(w, color="0.85", zorder=0)
    axes.set_xlabel("hidden width (grey lines: unseen in training)")
    axes.set_ylabel("test accuracy")
    axes.set_title("accuracy against width")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    path = ctx.figure_path("neumeta-widths")
    figure.savefig(path)
    return path
