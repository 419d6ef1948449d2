"""``sciml demo sciml-bilevel``: data hyper-cleaning three ways, and a Self-Tuning Network's hyperparameter schedule.

Everything runs on data generated here (no downloads) in well under a minute on a laptop CPU in quick mode.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from sciml_protocols import DemoContext, DemoResult

__all__ = ["HyperCleaningDemo", "SelfTuningNetworkDemo", "demos"]


def _implicit_descent(problem: Any, iterations: int, upper_lr: float, inner_steps: int, inner_lr: float) -> Any:
    """Hypergradient descent on x with implicit (CG) hypergradients, warm-starting the lower level."""
    from ._hypergrad import hypergradient

    x = problem.init_upper()
    y = problem.init_lower()
    for _ in range(iterations):
        result = hypergradient(problem, x, y, method="implicit_cg", inner_steps=inner_steps, inner_lr=inner_lr)
        grad, y_used = result.value
        assert y_used is not None
        y = y_used
        x = x - upper_lr * grad / grad.norm().clamp_min(1e-12)
    return x, y


@dataclasses.dataclass(frozen=True)
class HyperCleaningDemo:
    """Data hyper-cleaning with BO-REP, the penalty method and implicit hypergradient descent, side by side.

    A linear softmax classifier is trained on a synthetic Gaussian-mixture task whose training labels are 50%
    corrupted; the upper level learns one weight per training sample so that the classifier trained on the weighted
    loss does well on a small clean validation set. Reported: test accuracy (against no cleaning and against
    training on the clean samples only), the F1 score of flagging corrupted samples (weight below 1/2), the time,
    and the learned weights of clean and corrupted samples.
    """

    name: str = "hyper-cleaning"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Solve the same problem with the three methods and compare."""
        from .problems import HyperCleaning

        n_train = 200 if ctx.quick else 600
        problem = HyperCleaning(n_train=n_train, n_val=200, n_test=2000, dim=10, classes=3, seed=ctx.seed)
        iterations = 150 if ctx.quick else 400
        ctx.progress(0, 4, "training without cleaning")
        baseline = problem.accuracy_without_cleaning()
        clean = problem.corrupted_mask.logical_not()
        rows: dict[str, dict[str, float]] = {}
        weights: dict[str, np.ndarray] = {}

        def record(label: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> None:
            evaluation = problem.evaluate(x, y)
            rows[label] = {
                "test accuracy": evaluation["test_accuracy"],
                "corrupted-sample F1": evaluation["f1"],
                "seconds": seconds,
            }
            weights[label] = torch.sigmoid(x).detach().cpu().numpy()

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small problems: one thread is fastest and immune to a busy second core
        try:
            self._solve_all(ctx, problem, iterations, record)
        finally:
            torch.set_num_threads(threads)

        figure = self._draw(ctx, rows, weights, clean.cpu().numpy(), baseline)
        ctx.progress(4, 4, "done")
        metrics: dict[str, float | int | str | bool] = {
            "training samples (50% corrupted)": n_train,
            "no cleaning: test accuracy": baseline,
        }
        metrics["clean samples only (oracle): test accuracy"] = problem.accuracy_with_oracle_cleaning()
        for label, row in rows.items():
            for key, value in row.items():
                metrics[f"{label}: {key}"] = value
        worst_gain = min(row["test accuracy"] for row in rows.values()) - baseline
        summary = (
            f"A linear softmax classifier on a 3-class Gaussian mixture with {n_train} training samples, half of them "
            f"with wrong labels, reaches {baseline:.1%} test accuracy without cleaning. Learning per-sample weights "
            "on a clean validation set gives "
            + ", ".join(f"{label} {row['test accuracy']:.1%}" for label, row in rows.items())
            + "; the learned weights separate clean from corrupted samples (F1 of flagging weights below 1/2: "
            + ", ".join(f"{label} {row['corrupted-sample F1']:.2f}" for label, row in rows.items())
            + ")."
        )
        return DemoResult(
            title="Data hyper-cleaning: BO-REP, penalty method and implicit differentiation",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=worst_gain > 0.05,
        )

    @staticmethod
    def _solve_all(ctx: DemoContext, problem: Any, iterations: int, record: Any) -> None:
        from ._borep import bo_rep
        from ._penalty import penalty_method

        ctx.progress(1, 4, "BO-REP")
        start = time.perf_counter()
        solution = bo_rep(problem, iterations=iterations, upper_lr=0.5, lower_lr=0.5, generator=torch.Generator())
        record("BO-REP", solution.value[0], solution.value[1], time.perf_counter() - start)

        ctx.progress(2, 4, "penalty method")
        start = time.perf_counter()
        penalty = penalty_method(problem, sigma=0.1, iterations=iterations, upper_lr=5.0, lower_lr=0.5, inner_steps=10)
        record("penalty (first-order)", penalty.value[0], penalty.value[1], time.perf_counter() - start)

        ctx.progress(3, 4, "implicit hypergradient descent")
        start = time.perf_counter()
        x, y = _implicit_descent(problem, iterations // 3, upper_lr=1.0, inner_steps=20, inner_lr=0.5)
        record("implicit (CG)", x, y, time.perf_counter() - start)

    @staticmethod
    def _draw(
        ctx: DemoContext,
        rows: dict[str, dict[str, float]],
        weights: dict[str, np.ndarray],
        clean: np.ndarray,
        baseline: float,
    ) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, axes = plt.subplots(1, 1 + len(rows), figsize=(4 + 3.4 * len(rows), 3.8), constrained_layout=True)
        labels = list(rows)
        accuracy = [rows[label]["test accuracy"] for label in labels]
        ax = axes[0]
        ax.bar(["no cleaning", *labels], [baseline, *accuracy], color=["0.6"] + [f"C{i}" for i in range(len(rows))])
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.set_title("accuracy")
        bins = np.linspace(0.0, 1.0, 21)
        for ax, label in zip(axes[1:], labels, strict=True):
            ax.hist(weights[label][clean], bins=bins, alpha=0.7, label="clean labels", color="tab:green")
            ax.hist(weights[label][~clean], bins=bins, alpha=0.7, label="corrupted labels", color="tab:red")
            ax.set_xlabel("learned sample weight sigmoid(x_i)")
            ax.set_title(label, fontsize=10)
            ax.legend(fontsize=8)
        path = ctx.figure_path("hyper-cleaning")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _regression(seed: int, dim: int, n: int, noise: float, generator: torch.Generator) -> Any:
    weights = torch.randn(dim, 1, generator=torch.Generator().manual_seed(seed)) / dim**0.5
    x = torch.randn(n, dim, generator=generator)
    return x, torch.tanh(2.0 * x @ weights) + noise * torch.randn(n, 1, generator=generator)


@dataclasses.dataclass(frozen=True)
class SelfTuningNetworkDemo:
    """A Self-Tuning Network tunes its weight decay online; compared with a grid of fixed values, same budget.

    Noisy nonlinear regression with 25 training points (a 10-64-1 ReLU network, so regularization matters): every
    grid value trains its own network for the same number of weight updates as the STN, whose layers are gated by
    the hyperparameter and whose weight decay follows the validation loss through the best-response
    approximation. Shows the weight-decay schedule the STN found and the validation and test losses of both.
    """

    name: str = "stn-schedule"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Train the grid and the STN, then draw the schedule."""
        import torch.nn.functional as F
        from torch import nn

        from ._stn import Hyperparameter, STNLinear, STNTrainer

        dim, width, updates = 10, 64, 600
        generator = torch.Generator().manual_seed(ctx.seed)
        train = _regression(ctx.seed, dim, 25, 0.8, generator)
        val = _regression(ctx.seed, dim, 200, 0.8, generator)
        test = _regression(ctx.seed, dim, 1000, 0.8, generator)

        def squared_weights(model: nn.Module) -> torch.Tensor:
            return sum(
                ((p**2).sum() for n, p in model.named_parameters() if n.endswith("weight") and "gate" not in n),
                torch.zeros(()),
            )

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny networks: one thread is fastest and immune to a busy second core
        try:
            grid: dict[float, tuple[float, float]] = {}
            values = (1e-3, 1e-2, 1e-1, 1.0)
            for k, wd in enumerate(values):
                ctx.progress(k, len(values) + 2, f"fixed weight decay {wd:g}")
                torch.manual_seed(ctx.seed)
                net = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, 1))
                optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
                for _ in range(updates):
                    loss = F.mse_loss(net(train[0]), train[1]) + wd * squared_weights(net)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                with torch.no_grad():
                    grid[wd] = (float(F.mse_loss(net(val[0]), val[1])), float(F.mse_loss(net(test[0]), test[1])))

            class TwoLayer(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.first, self.second = STNLinear(dim, width, 1), STNLinear(width, 1, 1)

                def forward(self, x: torch.Tensor, h: Any) -> torch.Tensor:
                    return self.second(F.relu(self.first(x, h.hnet)), h.hnet)

            def mse(model: nn.Module, batch: Any, h: Any) -> torch.Tensor:
                return F.mse_loss(model(batch[0], h), batch[1])

            def train_loss(model: nn.Module, batch: Any, h: Any) -> torch.Tensor:
                return mse(model, batch, h) + h["wd"].mean() * squared_weights(model)

            ctx.progress(len(values), len(values) + 2, "self-tuning network")
            torch.manual_seed(ctx.seed)
            trainer = STNTrainer(
                TwoLayer(),
                [Hyperparameter("wd", 1e-2, low=0.0)],
                train_loss,
                mse,
                lr=1e-2,
                hyper_lr=5e-2,
                scale_lr=1e-2,
                train_steps=2,
                val_steps=1,
                warmup_steps=20,
                generator=torch.Generator().manual_seed(ctx.seed),
            )
            history = trainer.fit(train, val, steps=updates // 2)
            stn_val, stn_test = trainer.evaluate(val), trainer.evaluate(test)
        finally:
            torch.set_num_threads(threads)
        ctx.progress(len(values) + 1, len(values) + 2, "drawing")
        figure = self._draw(ctx, history, grid)
        ctx.progress(len(values) + 2, len(values) + 2, "done")
        best = min(grid, key=lambda wd: grid[wd][0])
        metrics: dict[str, float | int | str | bool] = {"weight updates per run": updates}
        for wd, (v, t) in grid.items():
            metrics[f"fixed wd={wd:g}: val / test MSE"] = f"{v:.4f} / {t:.4f}"
        metrics["STN: val / test MSE"] = f"{stn_val:.4f} / {stn_test:.4f}"
        metrics["STN: final weight decay"] = float(trainer.hyperparameters["wd"])
        summary = (
            f"With the same {updates} weight updates, the best fixed weight decay of the grid ({best:g}) reaches "
            f"validation MSE {grid[best][0]:.3f} (test {grid[best][1]:.3f}); the Self-Tuning Network, starting from "
            f"1e-2 and adapting online, reaches {stn_val:.3f} (test {stn_test:.3f}) and ends at weight decay "
            f"{float(trainer.hyperparameters['wd']):.2f}. One seed: on a similar task the package's tests found the "
            "STN ahead on two seeds out of three."
        )
        return DemoResult(
            title="Self-Tuning Network: a weight-decay schedule learned during training",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=bool(np.isfinite(stn_val)) and stn_val < 1.1 * grid[best][0],
        )

    @staticmethod
    def _draw(ctx: DemoContext, history: Any, grid: dict[float, tuple[float, float]]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        steps = np.asarray(history["step"])
        left.semilogy(steps, np.asarray(history["wd"]), color="tab:purple")
        left.set_xlabel("STN round (2 weight updates + 1 hyperparameter update)")
        left.set_ylabel("weight decay")
        left.set_title("schedule found by the STN")
        right.semilogx(list(grid), [v for v, _ in grid.values()], "o-", color="0.4", label="fixed weight decay")
        val = np.asarray(history["val_loss"], dtype=float)
        right.axhline(float(val[np.isfinite(val)][-1]), color="tab:purple", linestyle="--", label="STN (final)")
        right.set_xlabel("weight decay")
        right.set_ylabel("validation MSE")
        right.set_title("grid against STN, same number of weight updates")
        right.legend()
        path = ctx.figure_path("stn-schedule")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def demos() -> list[Any]:
    """The demos of sciml-bilevel (entry point ``sciml.demos``).

    Example:
        >>> [d.name for d in demos()]
        ['hyper-cleaning', 'stn-schedule']
    """
    return [HyperCleaningDemo(), SelfTuningNetworkDemo()]
