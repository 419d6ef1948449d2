"""``sciml demo sciml-norm``: a short normalization-activation layer search against BN-ReLU and EvoNorm-S0.

Everything runs on the synthetic proxy task of :mod:`sciml_norm.search` (no downloads); quick mode takes well
under a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sciml_protocols import DemoContext, DemoResult

__all__ = ["LayerSearchDemo"]


@dataclasses.dataclass(frozen=True)
class LayerSearchDemo:
    """Evolve layers from random graphs, then retrain the best ones, BN-ReLU and EvoNorm-S0 on the proxy.

    The search (:func:`sciml_norm.search.search`) runs with the paper's rejection protocols and Pareto tournament
    over a ResNet-like and a MobileNet-like proxy CNN; the two best distinct layers it finds are retrained with
    fresh seeds next to BN-ReLU and EvoNorm-S0, identically. The demo passes when the best discovered layer's mean
    proxy accuracy is within ``margin`` (quick: 0.15, full: 0.08) of BN-ReLU's.

    Example:
        >>> LayerSearchDemo().name
        'evonorm-search'

    References:
        Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020, arXiv:2004.02967.
    """

    name: str = "evonorm-search"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Search, retrain the best layers and the baselines, draw the Pareto front and the progress curve."""
        from .search import ProxyTask, RejectionConfig, SearchConfig, evaluate_layers, known_layers, search

        if ctx.quick:
            population, budget, steps, seeds, margin = 8, 40, 100, (1, 2), 0.15
            rules = RejectionConfig(quality_steps=35)
        else:
            population, budget, steps, seeds, margin = 16, 200, 150, (1, 2, 3), 0.08
            rules = RejectionConfig()
        task = ProxyTask(train_steps=steps)
        config = SearchConfig(task=task, rejection=rules)
        total = budget + 2
        workers = max(1, min(2, os.cpu_count() or 1))
        executor: Executor | None = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            ctx.progress(0, total, "searching")
            start = time.perf_counter()
            result = search(
                population=population,
                budget=budget,
                seed=ctx.seed,
                config=config,
                executor=executor,
                progress=False,
                callback=lambda done, _, message: ctx.progress(done, total, message),
            )
            search_seconds = time.perf_counter() - start
            ranked = result.ranked()
            ctx.progress(budget, total, "retraining the best layers and the baselines")
            layers = {f"found #{k + 1}": c.graph for k, c in enumerate(ranked[:2])}
            baselines = known_layers(groups=config.groups)
            layers["BN-ReLU"] = baselines["BN-ReLU"]
            layers["EvoNorm-S0"] = baselines["EvoNorm-S0"]
            start = time.perf_counter()
            scores = evaluate_layers(layers, task, seeds=seeds, executor=executor)
            retrain_seconds = time.perf_counter() - start
        finally:
            if executor is not None:
                executor.shutdown()

        means = {name: statistics.mean(sum(s) / len(s) for s in runs) for name, runs in scores.items()}
        ctx.progress(budget + 1, total, "drawing")
        figure = _draw(ctx, result, means)
        ctx.progress(total, total, "done")
        statuses = [c.evaluation.status for c in result.history]
        best_name = "found #1" if "found #1" in means else None
        best_mean = means[best_name] if best_name else 0.0
        metrics: dict[str, float | int | str | bool] = {
            "best found: mean accuracy": best_mean,
            "BN-ReLU: mean accuracy": means["BN-ReLU"],
            "EvoNorm-S0: mean accuracy": means["EvoNorm-S0"],
            "best found: formula": str(ranked[0].graph) if ranked else "none accepted",
            "second found: formula": str(ranked[1].graph) if len(ranked) > 1 else "none",
            "candidates evaluated": len(result.history),
            "accepted": statuses.count("accepted"),
            "rejected (quality)": statuses.count("rejected-quality"),
            "rejected (stability)": statuses.count("rejected-stability"),
            "generations": result.generations,
            "search seconds": search_seconds,
            "retraining seconds": retrain_seconds,
            "margin vs BN-ReLU": margin,
        }
        for name, value in means.items():
            if name.startswith("found #2"):
                metrics["second found: mean accuracy"] = value
        passed = best_name is not None and best_mean >= means["BN-ReLU"] - margin
        summary = (
            f"A {len(result.history)}-candidate search (population {population}) from random graphs over the "
            f"paper's primitives, with quality and stability rejection and Pareto tournaments over a ResNet-like "
            f"and a MobileNet-like proxy CNN, took {search_seconds:.0f} s. Retrained with {len(seeds)} fresh seeds, "
            f"the best layer found ({metrics['best found: formula']}) reaches a mean proxy accuracy of "
            f"{best_mean:.3f}, against {means['BN-ReLU']:.3f} for BN-ReLU and {means['EvoNorm-S0']:.3f} for "
            f"EvoNorm-S0 trained identically."
        )
        return DemoResult(
            title="Evolving normalization-activation layers on a synthetic proxy",
            summary=summary,
            metrics=metrics,
            figures=(figure,) if figure is not None else (),
            passed=passed,
        )


def _draw(ctx: DemoContext, result: Any, means: dict[str, float]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:  # matplotlib is optional: the numbers still come back
        return None
    fig, (front_axes, curve_axes) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    accepted = result.ranked()
    front = result.pareto_front()
    architectures = result.config.task.architectures
    if accepted and len(architectures) >= 2:
        front_axes.scatter(
            [c.accuracies[0] for c in accepted], [c.accuracies[1] for c in accepted], s=14, color="0.6",
            label="accepted layers",
        )  # fmt: skip
        ordered = sorted(front, key=lambda c: c.accuracies[0])
        front_axes.plot(
            [c.accuracies[0] for c in ordered], [c.accuracies[1] for c in ordered], "o-", color="tab:red",
            label="Pareto front",
        )  # fmt: skip
    front_axes.set_xlabel(f"proxy accuracy, {architectures[0]}")
    if len(architectures) >= 2:
        front_axes.set_ylabel(f"proxy accuracy, {architectures[1]}")
    front_axes.set_title("discovered layers (search runs)")
    front_axes.legend(fontsize=8)

    generations = result.generations
    best_so_far, population_mean = [], []
    best = 0.0
    for generation in range(generations):
        batch = [c for c in result.history if c.generation == generation]
        best = max([best] + [c.mean_accuracy for c in batch if c.accepted])
        best_so_far.append(best)
        scores = [c.mean_accuracy for c in batch if c.accepted]
        population_mean.append(sum(scores) / len(scores) if scores else float("nan"))
    steps = range(1, generations + 1)
    curve_axes.plot(steps, best_so_far, "-", color="tab:red", label="best so far")
    curve_axes.plot(steps, population_mean, ".", color="0.5", label="accepted children (mean)")
    for name, color in (("BN-ReLU", "tab:blue"), ("EvoNorm-S0", "tab:green")):
        curve_axes.axhline(means[name], color=color, linestyle="--", label=f"{name} (retrained)")
    curve_axes.set_xlabel("generation")
    curve_axes.set_ylabel("mean proxy accuracy")
    curve_axes.set_title("search progress")
    curve_axes.legend(fontsize=8)
    path = ctx.figure_path("evonorm-search")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
