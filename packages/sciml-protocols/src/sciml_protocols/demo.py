"""The showcase of sciml-protocols: matrix-free preconditioned CG on a variable-coefficient Poisson problem.

Run it with ``sciml demo sciml-protocols`` (entry point ``sciml.demos``). Nothing heavy is imported at module level:
matplotlib and scipy load inside :meth:`PoissonCGDemo.run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ._cg import cg, jacobi_preconditioner
from ._linear_operator import DenseOperator, FunctionOperator, KroneckerOperator
from ._registry import Demo, DemoContext, DemoResult
from ._solution import Solution

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PoissonCGDemo", "demos"]

_RTOL = 1e-10
_ERROR_LIMIT = 1e-6


def demos() -> list[Demo]:
    """The demos of sciml-protocols, for the ``sciml.demos`` entry point.

    Example:
        >>> [d.name for d in demos()]
        ['poisson-cg']
    """
    return [PoissonCGDemo()]


class _PoissonProblem:
    r"""Cell-centred 5-point discretisation of :math:`-\nabla\cdot(k \nabla u)` on an ``N x N`` interior grid.

    Unknowns sit at ``((i + 1) h, (j + 1) h)``, ``h = 1 / (N + 1)``, with zero Dirichlet values on the boundary;
    the flux through each cell face uses ``k`` at the face midpoint, so the matrix is symmetric positive definite:

    .. math::
        (A u)_{ij} = h^{-2} \big[k_{i+\frac12,j}(u_{ij} - u_{i+1,j}) + k_{i-\frac12,j}(u_{ij} - u_{i-1,j})
        + k_{i,j+\frac12}(u_{ij} - u_{i,j+1}) + k_{i,j-\frac12}(u_{ij} - u_{i,j-1})\big].

    Vectors are the row-major flattening of ``(N, N)`` grids indexed ``[i, j]`` (``i`` along x).
    """

    def __init__(
        self,
        n: int,
        coefficient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.n = n
        self.h = 1.0 / (n + 1)
        grid = torch.arange(n + 1, dtype=dtype, device=device) + 0.5
        nodes = torch.arange(1, n + 1, dtype=dtype, device=device)
        # k on the x-faces (i + 1/2, j), shape (N + 1, N), and on the y-faces (i, j + 1/2), shape (N, N + 1)
        self.k_x = coefficient(grid[:, None] * self.h, nodes[None, :] * self.h)
        self.k_y = coefficient(nodes[:, None] * self.h, grid[None, :] * self.h)
        self.k_nodes = coefficient(nodes[:, None] * self.h, nodes[None, :] * self.h)
        self.dtype = dtype
        self.device = device

    @property
    def size(self) -> int:
        return self.n * self.n

    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        grid = u.reshape(*u.shape[:-1], self.n, self.n)
        padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
        flux_x = self.k_x * (padded[..., 1:, 1:-1] - padded[..., :-1, 1:-1])  # (N + 1, N)
        flux_y = self.k_y * (padded[..., 1:-1, 1:] - padded[..., 1:-1, :-1])  # (N, N + 1)
        divergence = flux_x[..., 1:, :] - flux_x[..., :-1, :] + flux_y[..., :, 1:] - flux_y[..., :, :-1]
        return (-divergence / self.h**2).reshape(u.shape)

    def diagonal(self) -> torch.Tensor:
        total = self.k_x[1:, :] + self.k_x[:-1, :] + self.k_y[:, 1:] + self.k_y[:, :-1]
        return (total / self.h**2).reshape(-1)

    def operator(self) -> FunctionOperator:
        return FunctionOperator(
            self.matvec,
            (self.size, self.size),
            dtype=self.dtype,
            device=self.device,
            symmetric=True,
            diagonal=self.diagonal(),
        )

    def spectral_preconditioner(self, mean_coefficient: float) -> FunctionOperator:
        r"""The inverse of ``mean_coefficient`` times the constant-coefficient Laplacian, by fast diagonalisation.

        With :math:`T = Q \Lambda Q^\top` the 1-D Dirichlet second difference (:math:`Q` the orthonormal sine
        matrix, symmetric), the 2-D Laplacian is :math:`h^{-2}(T \otimes I + I \otimes T)` and its inverse
        :math:`(Q \otimes Q)\,\mathrm{diag}(h^2 / (\lambda_i + \lambda_j))\,(Q \otimes Q)^\top`.
        """
        n, h = self.n, self.h
        index = torch.arange(1, n + 1, dtype=self.dtype, device=self.device)
        sines = math.sqrt(2.0 / (n + 1)) * torch.sin(torch.outer(index, index) * math.pi / (n + 1))
        eigenvalues = 4.0 * torch.sin(index * math.pi / (2 * (n + 1))) ** 2
        inverse_eigenvalues = (h**2 / (mean_coefficient * (eigenvalues[:, None] + eigenvalues[None, :]))).reshape(-1)
        basis = KroneckerOperator(DenseOperator(sines), DenseOperator(sines))

        def apply(r: torch.Tensor) -> torch.Tensor:
            return basis.matvec(inverse_eigenvalues * basis.rmatvec(r))

        return FunctionOperator(apply, (self.size, self.size), dtype=self.dtype, device=self.device, symmetric=True)

    def assembled(self) -> Any:
        """The same matrix as a scipy CSR matrix, built entry by entry (an independent check of ``matvec``)."""
        import numpy as np
        import scipy.sparse

        n, h2 = self.n, self.h**2
        k_x = self.k_x.cpu().numpy() / h2
        k_y = self.k_y.cpu().numpy() / h2
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        row = (i * n + j).ravel()
        diagonal = (k_x[1:, :] + k_x[:-1, :] + k_y[:, 1:] + k_y[:, :-1]).ravel()
        rows, cols, values = [row], [row], [diagonal]
        for di, dj, face in ((1, 0, k_x[1:, :]), (-1, 0, k_x[:-1, :]), (0, 1, k_y[:, 1:]), (0, -1, k_y[:, :-1])):
            inside = ((i + di >= 0) & (i + di < n) & (j + dj >= 0) & (j + dj < n)).ravel()
            rows.append(row[inside])
            cols.append(((i + di) * n + (j + dj)).ravel()[inside])
            values.append(-face.ravel()[inside])
        return scipy.sparse.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n)
        )


def _coefficient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""A smooth checkerboard between 0.1 and 10: :math:`k = 10^{\sin(2\pi x)\sin(2\pi y)}`."""
    return 10.0 ** (torch.sin(2 * math.pi * x) * torch.sin(2 * math.pi * y))


class PoissonCGDemo:
    r"""Matrix-free CG, Jacobi PCG and a fast-diagonalisation (Kronecker) PCG on a variable-coefficient Poisson problem.

    Solves :math:`-\nabla\cdot(k\nabla u) = 1` on the unit square with :math:`u = 0` on the boundary and
    :math:`k(x, y) = 10^{\sin(2\pi x)\sin(2\pi y)}` (two orders of magnitude), discretised by the symmetric 5-point
    finite-volume stencil on an ``N x N`` interior grid (``N = 32`` quick, 96 otherwise) and applied as a
    :class:`~sciml_protocols.FunctionOperator` (no matrix is formed). Three solvers are compared at
    ``rtol = 1e-10``: plain :func:`~sciml_protocols.cg`, CG with :func:`~sciml_protocols.jacobi_preconditioner`,
    and CG preconditioned by the inverse of the constant-coefficient Laplacian (scaled by the geometric-mean
    coefficient), applied through :class:`~sciml_protocols.KroneckerOperator` of the 1-D sine eigenvectors. The
    solutions are checked against a sparse direct solve (scipy's ``spsolve``; without scipy, a dense
    ``torch.linalg.solve`` at quick sizes).

    Example:
        >>> PoissonCGDemo().name
        'poisson-cg'

    References:
        Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM (2003), Alg. 9.1. Lynch, Rice and Thomas,
        "Direct solution of partial difference equations by tensor product methods", Numer. Math. 6 (1964).
    """

    @property
    def name(self) -> str:
        """``"poisson-cg"``."""
        return "poisson-cg"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Solve the problem three ways, check against a direct solve, draw two figures."""
        total_steps = 6
        ctx.progress(0, total_steps, "building the Poisson operator")
        n = 32 if ctx.quick else 96
        dtype = torch.float64
        problem = _PoissonProblem(n, _coefficient, dtype=dtype, device=ctx.device)
        operator = problem.operator()
        rhs = torch.ones(problem.size, dtype=dtype, device=ctx.device)
        mean_coefficient = float(torch.exp(torch.log(problem.k_nodes).mean()))
        preconditioners = {
            "CG": None,
            "Jacobi PCG": jacobi_preconditioner(operator),
            "spectral PCG": problem.spectral_preconditioner(mean_coefficient),
        }

        _warm_up(ctx.device)
        solutions: dict[str, Solution[torch.Tensor]] = {}
        seconds: dict[str, float] = {}
        for step, (label, preconditioner) in enumerate(preconditioners.items(), start=1):
            ctx.progress(step, total_steps, f"solving with {label}")
            _synchronize(ctx.device)
            start = time.perf_counter()
            solutions[label] = cg(operator, rhs, preconditioner=preconditioner, rtol=_RTOL)
            _synchronize(ctx.device)
            seconds[label] = time.perf_counter() - start

        ctx.progress(4, total_steps, "direct solve for reference")
        reference, direct_method = _direct_solve(problem, rhs, allow_dense=ctx.quick)
        errors: dict[str, float] = {}
        if reference is not None:
            for label, solution in solutions.items():
                errors[label] = float(torch.linalg.vector_norm(solution.value - reference) / reference.norm())

        ctx.progress(5, total_steps, "drawing figures")
        figures = _draw(ctx, problem, solutions, rhs)
        ctx.progress(total_steps, total_steps, "done")

        keys = {"CG": "cg", "Jacobi PCG": "jacobi", "spectral PCG": "spectral"}
        worst_error = max(errors.values()) if errors else math.nan
        # the first entries are what the results table shows
        metrics: dict[str, float | int | str | bool] = {
            f"iterations_{key}": solutions[label].n_iter for label, key in keys.items()
        }
        metrics["max_error_vs_direct"] = worst_error
        metrics["grid"] = f"{n} x {n}"
        metrics["unknowns"] = problem.size
        metrics["coefficient_contrast"] = float(problem.k_nodes.max() / problem.k_nodes.min())
        metrics["rtol"] = _RTOL
        metrics["direct_solver"] = direct_method
        for label, key in keys.items():
            metrics[f"relative_residual_{key}"] = float(solutions[label].stats["relative_residual"])
            metrics[f"error_vs_direct_{key}"] = errors.get(label, math.nan)
            metrics[f"time_{key}_s"] = seconds[label]
        all_converged = all(s.converged for s in solutions.values())
        passed = all_converged and (reference is None or worst_error < _ERROR_LIMIT)

        iterations = {label: s.n_iter for label, s in solutions.items()}
        check = (
            f"all three agree with {direct_method} to a relative error of {worst_error:.1e}"
            if reference is not None
            else "no direct solver was available to check against (install scipy)"
        )
        summary = (
            f"Matrix-free CG on a {n} x {n} variable-coefficient Poisson problem (k spans "
            f"{metrics['coefficient_contrast']:.0f}x) needed {iterations['CG']} iterations to reach rtol {_RTOL:.0e}, "
            f"Jacobi PCG {iterations['Jacobi PCG']} and the Kronecker fast-diagonalisation (spectral) preconditioner "
            f"{iterations['spectral PCG']}. The spectral count depends only on the coefficient contrast, while the "
            f"other two grow with the grid; {check}."
        )
        return DemoResult(
            title="Preconditioned CG on a 2-D variable-coefficient Poisson problem",
            summary=summary,
            metrics=metrics,
            figures=figures,
            passed=passed,
        )


def _warm_up(device: torch.device) -> None:
    """Run each solver once on a tiny grid, so that no timing below pays for first-call costs (code loading)."""
    small = _PoissonProblem(6, _coefficient, dtype=torch.float64, device=device)
    operator = small.operator()
    rhs = torch.ones(small.size, dtype=torch.float64, device=device)
    for preconditioner in (None, jacobi_preconditioner(operator), small.spectral_preconditioner(1.0)):
        cg(operator, rhs, preconditioner=preconditioner)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _direct_solve(problem: _PoissonProblem, rhs: torch.Tensor, *, allow_dense: bool) -> tuple[torch.Tensor | None, str]:
    try:
        import scipy.sparse.linalg
    except ImportError:
        if not allow_dense:
            return None, "none (scipy not installed)"
        dense = problem.operator().to_dense()
        return torch.linalg.solve(dense, rhs), "torch.linalg.solve (dense)"
    solution = scipy.sparse.linalg.spsolve(problem.assembled().tocsc(), rhs.cpu().numpy())
    return torch.as_tensor(solution, dtype=rhs.dtype, device=rhs.device), "scipy.sparse.linalg.spsolve"


def _draw(
    ctx: DemoContext,
    problem: _PoissonProblem,
    solutions: dict[str, Solution[torch.Tensor]],
    rhs: torch.Tensor,
) -> tuple[Path, ...]:
    try:
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter
    except ImportError:  # matplotlib is optional: the numbers still come back
        return ()
    b_norm = float(rhs.norm())
    paths: list[Path] = []

    # The object-oriented Figure needs no pyplot and no global backend switch (it renders with Agg).
    figure = Figure(figsize=(7.0, 4.8), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    styles = {"CG": ("tab:gray", "-"), "Jacobi PCG": ("tab:blue", "--"), "spectral PCG": ("tab:red", "-")}
    for label, solution in solutions.items():
        assert solution.history is not None
        relative = (solution.history / b_norm).cpu().numpy()
        color, line = styles[label]
        axes.semilogy(relative, color=color, linestyle=line, linewidth=1.8, label=f"{label} ({solution.n_iter} it.)")
    axes.axhline(_RTOL, color="black", linewidth=0.8, linestyle=":", label=f"rtol = {_RTOL:.0e}")
    axes.set_xlabel("iteration", fontsize=12)
    axes.set_ylabel(r"relative residual $\|r_k\| / \|b\|$", fontsize=12)
    axes.set_title(f"CG on {problem.n} x {problem.n} Poisson, k from 0.1 to 10", fontsize=13)
    axes.tick_params(labelsize=11)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=11)
    path = ctx.figure_path("poisson-cg-residuals")
    figure.savefig(path)
    paths.append(path)

    figure = Figure(figsize=(10.0, 4.4), dpi=120, layout="constrained")
    coefficient_axes, solution_axes = figure.subplots(1, 2)
    extent = (0.0, 1.0, 0.0, 1.0)
    k = problem.k_nodes.cpu().numpy()
    image = coefficient_axes.imshow(
        k.T, origin="lower", extent=extent, cmap="viridis", norm=LogNorm(vmin=0.1, vmax=10.0)
    )
    ticks = [0.1, 0.3, 1.0, 3.0, 10.0]
    colorbar = figure.colorbar(image, ax=coefficient_axes, label="k(x, y)", ticks=ticks)
    colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    colorbar.ax.set_yticklabels([f"{t:g}" for t in ticks])
    coefficient_axes.set_title(r"coefficient $k = 10^{\sin 2\pi x \, \sin 2\pi y}$", fontsize=13)
    u = solutions["spectral PCG"].value.reshape(problem.n, problem.n).cpu().numpy()
    image = solution_axes.imshow(u.T, origin="lower", extent=extent, cmap="magma")
    figure.colorbar(image, ax=solution_axes, label="u(x, y)")
    solution_axes.set_title(r"solution of $-\nabla\cdot(k\nabla u) = 1$", fontsize=13)
    for axes in (coefficient_axes, solution_axes):
        axes.set_xlabel("x", fontsize=12)
        axes.set_ylabel("y", fontsize=12)
        axes.tick_params(labelsize=11)
    path = ctx.figure_path("poisson-cg-fields")
    figure.savefig(path)
    paths.append(path)
    return tuple(paths)
