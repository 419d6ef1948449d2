"""``sciml demo sciml-ot``: transport between point clouds, Sinkhorn against Sinkhorn-Newton-Sparse, a Light SB.

Everything runs on data generated here (no downloads) in well under a minute on a laptop CPU in quick mode.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from sciml_protocols import DemoContext, DemoResult

__all__ = ["LightSBDemo", "PointCloudTransportDemo", "SinkhornNewtonSparseDemo", "demos"]


def _two_clouds(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    ring = torch.stack([angle.cos(), angle.sin()], 1) * (1.0 + 0.1 * torch.randn(n, 1, generator=generator))
    blobs = torch.randn(m, 2, generator=generator, dtype=torch.float64) * 0.25
    blobs[: m // 2] += torch.tensor([1.5, 0.0], dtype=torch.float64)
    blobs[m // 2 :] += torch.tensor([-1.0, 1.2], dtype=torch.float64)
    return ring, blobs


@dataclasses.dataclass(frozen=True)
class PointCloudTransportDemo:
    """Entropic transport between a noisy ring and two blobs, checked against POT, with the plan drawn."""

    name: str = "point-cloud-transport"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Solve with the point-cloud cost and with the dense matrix, compare with POT, draw the plan."""
        from ._costs import PointCloudCost
        from ._sinkhorn import sinkhorn

        n, m = (300, 200) if ctx.quick else (1000, 800)
        x, y = _two_clouds(n, m, ctx.seed)
        a = torch.full((n,), 1.0 / n, dtype=torch.float64)
        b = torch.full((m,), 1.0 / m, dtype=torch.float64)
        eps = 0.02
        ctx.progress(0, 3, "Sinkhorn on the point clouds (costs never stored)")
        start = time.perf_counter()
        online = sinkhorn(a, b, PointCloudCost(x, y), eps=eps, tol=1e-10, max_iter=20_000)
        online_seconds = time.perf_counter() - start
        matrix = torch.cdist(x, y) ** 2
        dense = sinkhorn(a, b, matrix, eps=eps, tol=1e-10, max_iter=20_000)
        metrics: dict[str, float | int | str | bool] = {
            "points": f"{n} x {m}",
            "eps": eps,
            "iterations": int(online.n_iter),
            "marginal error": float(online.marginal_error),
            "transport cost <P, C>": float(online.cost),
            "online vs dense: |cost difference|": abs(float(online.cost) - float(dense.cost)),
            "seconds (online)": online_seconds,
        }
        ctx.progress(1, 3, "POT for reference")
        plan = online.plan()
        try:
            import ot

            reference: Any = ot.sinkhorn(
                a.numpy(), b.numpy(), matrix.numpy(), eps, method="sinkhorn_log", numItermax=20_000, stopThr=1e-12
            )
            metrics["max |plan - POT plan|"] = float(np.abs(plan.detach().numpy() - reference).max())
            metrics["|cost - POT cost|"] = abs(float(online.cost) - float((reference * matrix.numpy()).sum()))
        except ImportError:
            metrics["POT"] = "not installed"
        ctx.progress(2, 3, "drawing")
        figure = self._draw(ctx, x, y, plan.detach())
        ctx.progress(3, 3, "done")
        agree = metrics.get("max |plan - POT plan|", 0.0)
        summary = (
            f"Entropic OT (eps = {eps}) between {n} points on a noisy ring and {m} points in two blobs, solved in the "
            f"log domain with the point-cloud cost evaluated tile by tile: {online.n_iter} iterations to marginal "
            f"error {float(online.marginal_error):.1e}; the plan agrees with POT's log-domain Sinkhorn to "
            f"{float(agree):.1e} and the dense and online paths agree on the cost."
        )
        return DemoResult(
            title="Entropic transport between point clouds",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=bool(online.converged) and float(agree) < 1e-8,
        )

    @staticmethod
    def _draw(ctx: DemoContext, x: torch.Tensor, y: torch.Tensor, plan: torch.Tensor) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.collections import LineCollection

        fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
        p = plan.numpy()
        threshold = np.quantile(p, 0.995)
        i, j = np.nonzero(p > threshold)
        segments = np.stack([x.numpy()[i], y.numpy()[j]], axis=1)
        strength = p[i, j] / p.max()
        ax.add_collection(
            LineCollection(list(segments), colors=[(0.2, 0.2, 0.2, float(s) * 0.6) for s in strength], lw=0.6)
        )
        ax.scatter(*x.numpy().T, s=6, color="tab:blue", label="source (ring)")
        ax.scatter(*y.numpy().T, s=6, color="tab:red", label="target (two blobs)")
        ax.set_aspect("equal")
        ax.set_title("entropic transport plan (strongest 0.5% of entries)")
        ax.legend(loc="lower left", fontsize=8)
        path = ctx.figure_path("point-cloud-transport")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@dataclasses.dataclass(frozen=True)
class SinkhornNewtonSparseDemo:
    """Iterations to marginal error 1e-10: Sinkhorn against Sinkhorn-Newton-Sparse (the paper's comparison)."""

    name: str = "sinkhorn-vs-sns"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Run both solvers to 1e-10 on random point clouds and report the iteration counts."""
        from ._sinkhorn import sinkhorn
        from ._sns import sinkhorn_newton_sparse

        n = 300 if ctx.quick else 1000
        generator = torch.Generator().manual_seed(ctx.seed)
        x = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        y = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        matrix = torch.cdist(x, y) ** 2
        a = torch.full((n,), 1.0 / n, dtype=torch.float64)
        eps = 0.005 * float(matrix.max())
        ctx.progress(0, 3, "Sinkhorn to 1e-10")
        start = time.perf_counter()
        plain = sinkhorn(a, a, matrix, eps=eps, tol=1e-10, max_iter=200_000, check_every=1)
        plain_seconds = time.perf_counter() - start
        ctx.progress(1, 3, "Sinkhorn-Newton-Sparse to 1e-10")
        start = time.perf_counter()
        sparse = sinkhorn_newton_sparse(a, a, matrix, eps=eps, tol=1e-10)
        sparse_seconds = time.perf_counter() - start
        ctx.progress(2, 3, "drawing")
        figure = self._draw(ctx, plain, sparse)
        ctx.progress(3, 3, "done")
        ratio = int(plain.n_iter) / max(int(sparse.n_iter), 1)
        metrics: dict[str, float | int | str | bool] = {
            "points": n,
            "eps (0.5% of max cost)": eps,
            "Sinkhorn iterations": int(plain.n_iter),
            "SNS iterations (warm-up + Newton)": int(sparse.n_iter),
            "iteration ratio": ratio,
            "Sinkhorn seconds": plain_seconds,
            "SNS seconds": sparse_seconds,
            "SNS marginal error": float(sparse.marginal_error),
            "|cost difference|": abs(float(plain.cost) - float(sparse.cost)),
        }
        summary = (
            f"Random point clouds, n = {n}, eps = 0.5% of the largest cost: Sinkhorn needs {int(plain.n_iter)} "
            f"iterations to reach marginal error 1e-10, Sinkhorn-Newton-Sparse {int(sparse.n_iter)} "
            f"({ratio:.0f}x fewer), with the same transport cost."
        )
        return DemoResult(
            title="Sinkhorn against Sinkhorn-Newton-Sparse to marginal error 1e-10",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=bool(sparse.converged) and float(sparse.marginal_error) <= 1e-10,
        )

    @staticmethod
    def _draw(ctx: DemoContext, plain: Any, sparse: Any) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
        for result, label in ((plain, "Sinkhorn"), (sparse, "Sinkhorn-Newton-Sparse")):
            history = result.history.detach().cpu().numpy() if result.history is not None else np.array([])
            ax.semilogy(np.arange(1, len(history) + 1), np.maximum(history, 1e-17), label=label)
        ax.axhline(1e-10, color="0.5", linestyle=":")
        ax.set_xlabel("iteration")
        ax.set_ylabel("marginal error")
        ax.set_title("convergence to high accuracy")
        ax.legend()
        path = ctx.figure_path("sinkhorn-vs-sns")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@dataclasses.dataclass(frozen=True)
class LightSBDemo:
    """A Light Schrödinger Bridge fitted between two 2-D distributions, with bridge trajectories drawn."""

    name: str = "light-sb"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Fit, sample endpoints and trajectories, compare the endpoint distribution's moments with the target's."""
        from ._lightsb import LightSB

        generator = torch.Generator().manual_seed(ctx.seed)
        torch.manual_seed(ctx.seed)

        def source(size: int) -> torch.Tensor:
            return torch.randn(size, 2, generator=generator) * 0.3

        centers = torch.tensor([[2.0 * math.cos(k * math.pi / 4), 2.0 * math.sin(k * math.pi / 4)] for k in range(8)])

        def target(size: int) -> torch.Tensor:
            pick = torch.randint(8, (size,), generator=generator)
            return centers[pick] + 0.15 * torch.randn(size, 2, generator=generator)

        steps = 1500 if ctx.quick else 5000
        model = LightSB(2, 16, 0.1)
        ctx.progress(0, 3, f"fitting ({steps} steps)")
        start = time.perf_counter()
        model.fit(source, target, steps=steps, batch_size=256, lr=1e-2, generator=generator)
        seconds = time.perf_counter() - start
        ctx.progress(1, 3, "sampling")
        x0 = source(2000)
        with torch.no_grad():
            endpoints = model.sample(x0).reshape(-1, 2)
            paths = model.sample_trajectory(x0[:64], 100, generator=generator)
        reference = target(20_000)
        radius = endpoints.norm(dim=1)
        metrics: dict[str, float | int | str | bool] = {
            "fit steps": steps,
            "fit seconds": seconds,
            "endpoint mean radius (target 2.0)": float(radius.mean()),
            "endpoint covariance error vs target": float((torch.cov(endpoints.T) - torch.cov(reference.T)).abs().max()),
        }
        ctx.progress(2, 3, "drawing")
        figure = self._draw(ctx, x0, endpoints, paths, reference)
        ctx.progress(3, 3, "done")
        summary = (
            f"A Light SB with 16 Gaussian potentials (epsilon = 0.1) fitted in {seconds:.0f} s between a Gaussian and "
            "a ring of 8 Gaussians, simulation-free; endpoints sampled from the closed-form conditional land on the "
            f"ring (mean radius {float(radius.mean()):.2f}, target 2.0) and bridge trajectories are drawn by "
            "Euler-Maruyama with the closed-form drift."
        )
        return DemoResult(
            title="Light Schrödinger Bridge between 2-D distributions",
            summary=summary,
            metrics=metrics,
            figures=(figure,),
            passed=abs(float(radius.mean()) - 2.0) < 0.2,
        )

    @staticmethod
    def _draw(
        ctx: DemoContext, x0: torch.Tensor, endpoints: torch.Tensor, paths: torch.Tensor, reference: torch.Tensor
    ) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 6), constrained_layout=True)
        ax.scatter(*reference[:3000].numpy().T, s=2, color="0.8", label="target samples")
        ax.scatter(*x0.numpy().T, s=2, color="tab:blue", label="source")
        ax.scatter(*endpoints.numpy().T, s=2, color="tab:red", label="bridge endpoints")
        trajectories = paths.numpy()
        for k in range(trajectories.shape[1]):
            ax.plot(trajectories[:, k, 0], trajectories[:, k, 1], color="tab:green", lw=0.5, alpha=0.6)
        ax.set_aspect("equal")
        ax.set_title("Light SB: endpoints and trajectories")
        ax.legend(loc="upper right", fontsize=8, markerscale=4)
        path = ctx.figure_path("light-sb")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def demos() -> list[Any]:
    """The demos of sciml-ot (entry point ``sciml.demos``).

    Example:
        >>> [d.name for d in demos()]
        ['point-cloud-transport', 'sinkhorn-vs-sns', 'light-sb']
    """
    return [PointCloudTransportDemo(), SinkhornNewtonSparseDemo(), LightSBDemo()]
