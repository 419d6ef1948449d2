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

__all__ = ["SinkhornBenchmark", "cases"]


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


def cases() -> list[Any]:
    """The benchmark cases of sciml-ot (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()]
        ['sinkhorn-n1000', 'sinkhorn-n5000']
    """
    return [SinkhornBenchmark(1000), SinkhornBenchmark(5000)]
