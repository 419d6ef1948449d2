"""``sciml bench sciml-ot``: log-domain Sinkhorn against POT (and GeomLoss) on the same problems.

Both sides solve the same entropic problem (squared Euclidean cost between two uniform point clouds in 2-D,
``eps = 0.05`` of the cost scale) in float64 to the same marginal error; reported are the median time, the transport
cost, and the memory the cost representation needs: POT takes the dense ``n x m`` matrix; ours runs on the point
clouds (``PointCloudCost``: the cost is recomputed tile by tile, memory linear in ``n + m``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from sciml_protocols import BenchContext, BenchMeasurement, BenchResult, measure_time

__all__ = ["GeomLossBenchmark", "SinkhornBenchmark", "cases"]


@dataclasses.dataclass(frozen=True)
class SinkhornBenchmark:
    """Sinkhorn on ``n x n`` uniform point clouds: ours (point-cloud cost) against POT's log-domain Sinkhorn."""

    n: int = 1000

    @property
    def name(self) -> str:
        """``sinkhorn-n<n>``."""
        return f"sinkhorn-n{self.n}"

    @property
    def peer(self) -> str:
        """POT's log-domain Sinkhorn."""
        return "ot.sinkhorn(method='sinkhorn_log')"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Solve the same problem with both, time both, compare the costs."""
        from ._costs import PointCloudCost
        from ._sinkhorn import sinkhorn

        n = self.n if not ctx.quick else max(10, self.n // 5)
        generator = torch.Generator().manual_seed(ctx.seed)
        x = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        y = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        a = torch.full((n,), 1.0 / n, dtype=torch.float64)
        eps, tol, max_iter = 0.05, 1e-8, 10_000
        xs, ys, aa = x.to(ctx.device), y.to(ctx.device), a.to(ctx.device)
        cost = PointCloudCost(xs, ys)

        def ours() -> Any:
            return sinkhorn(aa, aa, cost, eps=eps, tol=tol, max_iter=max_iter)

        result = ours()
        seconds = measure_time(ours, device=ctx.device, min_run_time=ctx.min_run_time)
        our_metrics: dict[str, Any] = {
            "cost <P,C>": float(result.cost),
            "iterations": int(result.n_iter),
            "marginal error": float(result.marginal_error),
            "cost storage MB": 2 * n * 2 * 8 / 1e6,
        }
        size = f"n = m = {n:,} points in 2-D, squared Euclidean, eps = {eps}, marginal tol {tol:g}, float64"
        try:
            import ot
        except ImportError:
            return BenchResult(self.name, size, BenchMeasurement("sciml_ot.sinkhorn", seconds, our_metrics), None,
                               note="POT not installed")  # fmt: skip
        matrix = (torch.cdist(x, y) ** 2).numpy()

        def peer() -> Any:
            return ot.sinkhorn(a.numpy(), a.numpy(), matrix, eps, method="sinkhorn_log", numItermax=max_iter,
                               stopThr=tol)  # fmt: skip

        plan = peer()
        peer_seconds = measure_time(peer, device="cpu", min_run_time=ctx.min_run_time)
        peer_metrics = {"cost <P,C>": float((plan * matrix).sum()), "cost storage MB": n * n * 8 / 1e6}
        our_metrics["|cost - POT cost|"] = abs(our_metrics["cost <P,C>"] - peer_metrics["cost <P,C>"])
        note = "POT needs the dense cost matrix; ours recomputes it tile by tile (storage counts only the inputs)"
        if ctx.device.type == "cuda":
            note += "; ours on CUDA (online Triton kernel), POT on the CPU"
        return BenchResult(
            self.name,
            size,
            BenchMeasurement("sciml_ot.sinkhorn (point clouds)", seconds, our_metrics),
            BenchMeasurement("ot.sinkhorn (log)", peer_seconds, peer_metrics),
            note=note,
        )


@dataclasses.dataclass(frozen=True)
class GeomLossBenchmark:
    r"""Entropic OT between point clouds: ours (to a marginal tolerance) against GeomLoss's ``SamplesLoss``.

    GeomLoss (tensorized backend; KeOps is optional and not required) anneals :math:`\varepsilon` along a fixed
    schedule (``scaling=0.9``) instead of iterating to a tolerance, so besides the time the case reports the L1
    marginal error of the plan its potentials define, and the gap between the two objectives
    :math:`\mathrm{OT}_\varepsilon` (GeomLoss uses the same convention, :math:`\varepsilon\,KL(P\|a\otimes b)`; its
    cost is :math:`|x-y|^2/2`, so the points are scaled by :math:`\sqrt2`).
    """

    n: int = 2000

    @property
    def name(self) -> str:
        """``sinkhorn-geomloss-n<n>``."""
        return f"sinkhorn-geomloss-n{self.n}"

    @property
    def peer(self) -> str:
        """GeomLoss's Sinkhorn loss."""
        return "geomloss.SamplesLoss('sinkhorn', debias=False)"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Solve with both; time both; compare objectives and marginal errors."""
        import math

        from ._costs import PointCloudCost
        from ._sinkhorn import sinkhorn

        n = self.n if not ctx.quick else max(10, self.n // 10)
        generator = torch.Generator().manual_seed(ctx.seed)
        x = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(ctx.device)
        y = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(ctx.device)
        a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=ctx.device)
        eps, tol = 0.05, 1e-8
        cost = PointCloudCost(x, y)

        def ours() -> Any:
            return sinkhorn(a, a, cost, eps=eps, tol=tol, max_iter=10_000)

        result = ours()
        seconds = measure_time(ours, device=ctx.device, min_run_time=ctx.min_run_time)
        our_metrics: dict[str, Any] = {
            "objective OT_eps": float(result.objective),
            "marginal error (L1)": float(result.marginal_error),
            "iterations": int(result.n_iter),
        }
        size = f"n = m = {n:,} points in 2-D, squared Euclidean, eps = {eps}, float64"
        try:
            from geomloss import SamplesLoss  # pyright: ignore[reportMissingTypeStubs]
        except ImportError:
            return BenchResult(self.name, size, BenchMeasurement("sciml_ot.sinkhorn", seconds, our_metrics), None,
                               note="GeomLoss not installed")  # fmt: skip
        loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps), debias=False, potentials=True, scaling=0.9,
                           backend="tensorized")  # fmt: skip
        s = math.sqrt(2.0)

        def peer() -> Any:
            return loss(a, s * x, a, s * y)

        potentials = peer()
        peer_seconds = measure_time(peer, device=ctx.device, min_run_time=ctx.min_run_time)
        f_peer, g_peer = (p.reshape(-1) for p in potentials)
        log_a = torch.log(a)
        row = torch.exp(f_peer / eps + log_a - cost.softmin_rows(g_peer, eps, log_a) / eps)
        peer_objective = float((a * f_peer).sum() + (a * g_peer).sum())
        peer_metrics = {
            "objective OT_eps": peer_objective,
            "marginal error (L1)": float((row - a).abs().sum()),
        }
        our_metrics["|objective - GeomLoss|"] = abs(our_metrics["objective OT_eps"] - peer_objective)
        note = ("GeomLoss stops after its fixed eps-annealing schedule (scaling 0.9), not at a tolerance; compare the "
                "marginal errors along with the times")  # fmt: skip
        return BenchResult(
            self.name,
            size,
            BenchMeasurement("sciml_ot.sinkhorn (point clouds)", seconds, our_metrics),
            BenchMeasurement("geomloss (tensorized)", peer_seconds, peer_metrics),
            note=note,
        )


def cases() -> list[Any]:
    """The benchmark cases of sciml-ot (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()]
        ['sinkhorn-n1000', 'sinkhorn-n5000', 'sinkhorn-geomloss-n2000']
    """
    return [SinkhornBenchmark(1000), SinkhornBenchmark(5000), GeomLossBenchmark(2000)]
