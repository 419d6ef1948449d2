"""Side-by-side benchmark of sciml-protocols against scipy: CG on the 2-D Poisson equation.

Run it with ``sciml bench sciml-protocols`` (entry point ``sciml.benchmarks``). scipy loads inside
:meth:`PoissonCGBenchmark.run`; without it the case reports our side alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._cg import cg
from ._linear_operator import FunctionOperator
from ._registry import BenchContext, BenchmarkCase, BenchMeasurement, BenchResult, measure_time

__all__ = ["PoissonCGBenchmark", "cases"]

_RTOL = 1e-8


def cases() -> list[BenchmarkCase]:
    """The benchmark cases of sciml-protocols, for the ``sciml.benchmarks`` entry point.

    Example:
        >>> [(c.name, c.peer) for c in cases()]
        [('poisson-cg', 'scipy.sparse.linalg.cg')]
    """
    return [PoissonCGBenchmark()]


class PoissonCGBenchmark:
    r"""Unpreconditioned CG on the 5-point Poisson matrix, ours against ``scipy.sparse.linalg.cg``.

    The system is :math:`h^{-2}(T \otimes I + I \otimes T)\,x = b` with :math:`T = \mathrm{tridiag}(-1, 2, -1)` of
    size ``N`` (``N = 64`` quick, 4096 unknowns; 256 otherwise, 65536 unknowns), ``h = 1 / (N + 1)``, in float64,
    with a seeded standard normal ``b``. scipy gets the assembled CSR matrix; ours gets whichever of the stencil
    (as a :class:`~sciml_protocols.FunctionOperator`) and a torch sparse CSR matrix has the faster matvec on
    ``ctx.device``. Both run with ``rtol = 1e-8``, ``atol = 0`` and no preconditioner; both stop on
    :math:`\|r\| \le \mathrm{rtol}\,\|b\|`. Reported for each side: the median time of one solve, the iteration
    count and the true relative residual :math:`\|b - A x\| / \|b\|` (computed with the scipy matrix when scipy is
    installed, so our stencil is checked against the assembled matrix).

    Example:
        >>> case = PoissonCGBenchmark()
        >>> case.name, case.peer
        ('poisson-cg', 'scipy.sparse.linalg.cg')
    """

    @property
    def name(self) -> str:
        """``"poisson-cg"``."""
        return "poisson-cg"

    @property
    def peer(self) -> str:
        """``"scipy.sparse.linalg.cg"``."""
        return "scipy.sparse.linalg.cg"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Solve the same system with both, time both, and compare iterations and residuals."""
        grid = 64 if ctx.quick else 256
        unknowns = grid * grid
        size = f"n={unknowns} ({grid} x {grid} grid), rtol={_RTOL:g}, float64"
        generator = torch.Generator().manual_seed(ctx.seed)
        rhs_cpu = torch.randn(unknowns, generator=generator, dtype=torch.float64)
        rhs = rhs_cpu.to(ctx.device)
        timing_seconds = max(ctx.min_run_time / 10, 1e-3)

        try:
            import scipy.sparse.linalg as sparse_linalg
        except ImportError:
            sparse_linalg = None
        candidates = {"stencil": _stencil_operator(grid, ctx.device)}
        scipy_matrix = _assembled(grid) if sparse_linalg is not None else None
        if scipy_matrix is not None:
            candidates["torch sparse CSR"] = _csr_operator(scipy_matrix, ctx.device)

        def matvec_time(op: FunctionOperator) -> float:
            return measure_time(lambda: op.matvec(rhs), device=ctx.device, min_run_time=timing_seconds)

        matvec_seconds = {label: matvec_time(op) for label, op in candidates.items()}
        chosen = min(matvec_seconds, key=matvec_seconds.__getitem__)
        operator = candidates[chosen]

        ours_solution = cg(operator, rhs, rtol=_RTOL)
        ours_time = measure_time(
            lambda: cg(operator, rhs, rtol=_RTOL), device=ctx.device, min_run_time=ctx.min_run_time
        )
        ours_x = ours_solution.value.cpu()
        note = f"ours uses the {chosen} matvec on {ctx.device} (the faster one there)"

        if sparse_linalg is None or scipy_matrix is None:
            residual = float(ours_solution.stats["relative_residual"])
            ours = BenchMeasurement(
                "sciml_protocols.cg",
                ours_time,
                {"iterations": ours_solution.n_iter, "relative_residual": residual, "operator": chosen},
            )
            return BenchResult(self.name, size, ours, None, "scipy not installed; " + note)

        rhs_numpy = rhs_cpu.numpy()
        iterations = 0

        def count(_: object) -> None:
            nonlocal iterations
            iterations += 1

        peer_x, info = sparse_linalg.cg(
            scipy_matrix, rhs_numpy, rtol=_RTOL, atol=0.0, maxiter=10 * unknowns, callback=count
        )

        def run_peer() -> None:
            sparse_linalg.cg(scipy_matrix, rhs_numpy, rtol=_RTOL, atol=0.0, maxiter=10 * unknowns)

        peer_time = measure_time(run_peer, device="cpu", min_run_time=ctx.min_run_time)
        peer_x_tensor = torch.from_numpy(peer_x)
        difference = float(torch.linalg.vector_norm(ours_x - peer_x_tensor) / torch.linalg.vector_norm(peer_x_tensor))
        ours = BenchMeasurement(
            "sciml_protocols.cg",
            ours_time,
            {
                "iterations": ours_solution.n_iter,
                "converged": ours_solution.converged,
                "relative_residual": _relative_residual(scipy_matrix, ours_x.numpy(), rhs_numpy),
                "relative_difference_to_peer": difference,
                "operator": chosen,
            },
        )
        peer = BenchMeasurement(
            "scipy.sparse.linalg.cg",
            peer_time,
            {
                "iterations": iterations,
                "converged": info == 0,
                "relative_residual": _relative_residual(scipy_matrix, peer_x, rhs_numpy),
            },
        )
        return BenchResult(self.name, size, ours, peer, note + "; scipy runs on the CPU")


def _stencil_operator(grid: int, device: torch.device) -> FunctionOperator:
    scale = float((grid + 1) ** 2)  # 1 / h^2

    def laplacian(u: torch.Tensor) -> torch.Tensor:
        values = u.reshape(*u.shape[:-1], grid, grid)
        out = (4 * scale) * values
        out[..., 1:, :].sub_(values[..., :-1, :], alpha=scale)
        out[..., :-1, :].sub_(values[..., 1:, :], alpha=scale)
        out[..., :, 1:].sub_(values[..., :, :-1], alpha=scale)
        out[..., :, :-1].sub_(values[..., :, 1:], alpha=scale)
        return out.reshape(u.shape)

    size = grid * grid
    return FunctionOperator(laplacian, (size, size), dtype=torch.float64, device=device, symmetric=True)


def _assembled(grid: int) -> Any:
    import scipy.sparse

    second_difference = 2 * scipy.sparse.eye(grid) - scipy.sparse.eye(grid, k=1) - scipy.sparse.eye(grid, k=-1)
    identity = scipy.sparse.eye(grid)
    scale = (grid + 1) ** 2
    laplacian = scale * (
        scipy.sparse.kron(second_difference, identity) + scipy.sparse.kron(identity, second_difference)
    )
    return scipy.sparse.csr_matrix(laplacian)


def _csr_operator(matrix: Any, device: torch.device) -> FunctionOperator:
    size = int(matrix.shape[0])
    with warnings.catch_warnings():
        # torch announces once per process that sparse CSR is a beta feature; the numbers are checked here anyway.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        csr = torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr).to(torch.int64),
            torch.from_numpy(matrix.indices).to(torch.int64),
            torch.from_numpy(matrix.data).to(torch.float64),
            size=(size, size),
            check_invariants=False,
        ).to(device)

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            return torch.mv(csr, x)
        columns = x.reshape(-1, size).mT
        return (csr @ columns).mT.reshape(x.shape)

    matvec: Callable[[torch.Tensor], torch.Tensor] = apply
    return FunctionOperator(matvec, (size, size), dtype=torch.float64, device=device, symmetric=True)


def _relative_residual(matrix: Any, x: Any, b: Any) -> float:
    import numpy as np

    return float(np.linalg.norm(b - matrix @ x) / np.linalg.norm(b)) if np.linalg.norm(b) > 0 else math.nan
