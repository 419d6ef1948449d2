r"""Sinkhorn-Newton-Sparse (SNS) and Wasserstein distances computed with it.

Convention (shared by the whole package): the entropic transport problem is

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle P, C\rangle
    + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b),

with dual potentials :math:`f, g` and plan :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`. The
concave dual (the paper's Lyapunov potential, up to the shift of the potentials by the ``-1`` and the
:math:`\varepsilon \log a`, :math:`\varepsilon \log b` terms) is

.. math::
    D(f, g) = \langle a, f\rangle + \langle b, g\rangle
    - \varepsilon \langle a \otimes b, e^{(f \oplus g - C)/\varepsilon} - 1\rangle .

Reference:
    X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao, L. Ying, "Accelerating
    Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024, arXiv:2401.12253.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from sciml_protocols import FunctionOperator, SciMLInputError, Solution, cg, check_int
from sciml_protocols import check_dtype as _check_dtype
from sciml_protocols import check_finite as _check_finite

from ._costs import Cost, DenseCost
from ._result import SinkhornResult

__all__ = ["SNSResult", "SNSStats", "sinkhorn_newton_sparse", "wasserstein"]

_ARMIJO = 1e-4
_MAX_BACKTRACKS = 40


# --------------------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------------------


def _check_weights(name: str, w: object) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(w).__name__}")
    _check_dtype(name, w, "floating")
    if w.ndim != 1:
        raise SciMLInputError(name, f"expected a 1-D weight vector, got shape {tuple(w.shape)}")
    if w.numel() == 0:
        raise SciMLInputError(name, "must not be empty")
    _check_finite(name, w)
    if bool((w <= 0).any()):
        raise SciMLInputError(name, "every weight must be positive (drop the zero-mass points first)")
    return w


def _check_real(name: str, value: object, *, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise SciMLInputError(name, f"must be {'positive' if strict else 'non-negative'} and finite, got {value!r}")
    return v


def _as_cost(cost: object) -> Cost:
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, torch.Tensor):
        return DenseCost(cost)
    raise SciMLInputError(
        "cost", f"must be an (n, m) tensor or a cost object (DenseCost, PointCloudCost), got {type(cost).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class SNSStats:
    """Per-stage iteration counts of :func:`sinkhorn_newton_sparse`.

    Attributes:
        warmup_iters: Sinkhorn sweeps of stage 1.
        newton_iters: Newton steps taken.
        fallback_iters: Sinkhorn sweeps after the Newton stage (0 unless the fallback ran).
        cg_iters: conjugate-gradient iterations of every Newton step.
        step_sizes: the accepted step length of every Newton step.
        fallback_used: whether the Sinkhorn fallback ran.
        newton_failure: why the Newton stage stopped above the tolerance, or None.
    """

    warmup_iters: int
    newton_iters: int
    fallback_iters: int
    cg_iters: tuple[int, ...]
    step_sizes: tuple[float, ...]
    fallback_used: bool
    newton_failure: str | None


@dataclasses.dataclass(frozen=True)
class SNSResult(SinkhornResult):
    """A :class:`~sciml_ot.SinkhornResult` with the per-stage counts of Sinkhorn-Newton-Sparse in ``stats``.

    ``n_iter`` counts warm-up sweeps + Newton steps + fallback sweeps, and ``history`` holds the marginal error
    after each of them, in that order.
    """

    stats: SNSStats | None = None


# --------------------------------------------------------------------------------------------------------------
# log-domain primitives
# --------------------------------------------------------------------------------------------------------------


class _Problem:
    """The data of one problem in log form, and the maps that every stage shares."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float) -> None:
        self.a, self.b, self.cost, self.eps = a, b, cost, eps
        self.log_a, self.log_b = a.log(), b.log()
        self.scaled_cost = cost / eps

    def log_plan(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (self.log_a + f / self.eps)[:, None] + (self.log_b + g / self.eps)[None, :] - self.scaled_cost

    def f_update(self, g: torch.Tensor) -> torch.Tensor:
        """The ``f`` that makes the row marginal exact for this ``g``."""
        return -self.eps * torch.logsumexp((self.log_b + g / self.eps)[None, :] - self.scaled_cost, dim=1)

    def g_update(self, f: torch.Tensor) -> torch.Tensor:
        """The ``g`` that makes the column marginal exact for this ``f``."""
        return -self.eps * torch.logsumexp((self.log_a + f / self.eps)[:, None] - self.scaled_cost, dim=0)

    def dual(self, f: torch.Tensor, g: torch.Tensor, log_plan: torch.Tensor) -> float:
        mass = float(torch.logsumexp(log_plan.reshape(-1), dim=0).exp())
        return float(self.a @ f + self.b @ g) - self.eps * (mass - 1.0)

    def dual_scale(self, f: torch.Tensor, g: torch.Tensor) -> float:
        """Size of the terms of the dual, to judge which differences are rounding noise."""
        return float(self.a @ f.abs() + self.b @ g.abs()) + self.eps


def _sinkhorn_steps(
    problem: _Problem,
    f: torch.Tensor,
    g: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    history: list[float],
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    r"""Log-domain Sinkhorn from ``(f, g)``: at most ``max_iter`` sweeps, stopping once the marginal error <= tol.

    The error after a sweep (column marginal exact) is the row error
    :math:`\sum_i a_i |e^{(f_i - f^{+}_i)/\varepsilon} - 1|`, where :math:`f^{+}` is the next ``f`` update, so
    measuring it costs nothing extra.
    """
    eps = problem.eps
    f_next = problem.f_update(g)
    error = math.inf
    iterations = 0
    while iterations < max_iter:
        f = f_next
        g = problem.g_update(f)
        f_next = problem.f_update(g)
        error = float((problem.a * torch.expm1((f - f_next) / eps).abs()).sum())
        iterations += 1
        history.append(error)
        if not math.isfinite(error) or error <= tol:
            break
    return f, g, iterations, error


def _marginal_error(problem: _Problem, plan: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    rows, cols = plan.sum(1), plan.sum(0)
    error = float((rows - problem.a).abs().sum() + (cols - problem.b).abs().sum())
    return error, rows, cols


# --------------------------------------------------------------------------------------------------------------
# the Newton stage
# --------------------------------------------------------------------------------------------------------------


def _sparsify(plan: torch.Tensor, sparsity: int | float | None, dropped_mass: float) -> torch.Tensor:
    """The kept part of the plan, zero elsewhere; an O(nm log m) selection, no O(n^3).

    It is stored as a masked dense matrix: at the sizes a dense cost allows, a dense matrix-vector product is far
    faster than a scatter over the kept coordinates on CPU and GPU alike. The sparsity decides how good the Hessian
    approximation is (and the cost of a sparse implementation), not the storage here.

    ``None`` keeps, in every row and in every column, the largest entries that hold all but ``dropped_mass`` of
    that row's (column's) mass; an int keeps the ``sparsity`` largest entries of every row and of every column; a
    float keeps the entries ``>= sparsity``. Rows and columns contribute their union.
    """
    n, m = plan.shape
    if sparsity is None:
        mask = torch.zeros_like(plan, dtype=torch.bool)
        for dim in (1, 0):
            ordered, order = plan.sort(dim=dim, descending=True)
            before = ordered.cumsum(dim) - ordered  # mass strictly before each entry in its row (column)
            needed = before < (1.0 - dropped_mass) * ordered.sum(dim, keepdim=True)
            mask |= torch.zeros_like(mask).scatter_(dim, order, needed)
    elif isinstance(sparsity, int):
        mask = torch.zeros_like(plan, dtype=torch.bool)
        mask.scatter_(1, plan.topk(min(sparsity, m), dim=1).indices, True)
        mask.scatter_(0, plan.topk(min(sparsity, n), dim=0).indices, True)
    else:
        mask = plan >= sparsity
    return torch.where(mask, plan, 0.0)


def _newton_direction(
    rows: torch.Tensor,
    cols: torch.Tensor,
    kept: torch.Tensor,
    rhs_f: torch.Tensor,
    rhs_g: torch.Tensor,
    *,
    cg_tol: float,
    cg_max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, Solution[torch.Tensor]]:
    r"""Solve the sparsified Newton system by preconditioned conjugate gradient.

    The system is :math:`\begin{pmatrix}\mathrm{diag}(P1) & S\\ S^\top & \mathrm{diag}(P^\top 1)\end{pmatrix}
    \begin{pmatrix}\Delta f\\ \Delta g\end{pmatrix} = \begin{pmatrix}r_f\\ r_g\end{pmatrix}` with the gauge
    :math:`\Delta g_{m} = 0` (the full Hessian is singular along :math:`(1, -1)`).

    The pinned coordinate is replaced by the identity, so the operator stays symmetric positive definite: the
    diagonal is exact and ``0 <= S <= P`` entrywise, hence the matrix is diagonally dominant.
    """
    n, m = rows.numel(), cols.numel()
    pin = torch.zeros(n + m, dtype=rows.dtype, device=rows.device)
    pin[-1] = 1.0
    free = 1.0 - pin

    def matvec(x: torch.Tensor) -> torch.Tensor:
        xf, xg = x[:n], x[n:] * free[n:]
        out_f = rows * xf + kept @ xg
        out_g = cols * xg + xf @ kept
        return torch.cat([out_f, out_g]) * free + x * pin

    diagonal = torch.cat([rows, cols]) * free + pin
    operator = FunctionOperator(
        matvec, (n + m, n + m), dtype=rows.dtype, device=rows.device, symmetric=True, diagonal=diagonal
    )
    preconditioner = FunctionOperator(
        lambda v: v / diagonal, (n + m, n + m), dtype=rows.dtype, device=rows.device, symmetric=True
    )
    rhs = torch.cat([rhs_f, rhs_g]) * free
    solution = cg(
        operator,
        rhs,
        preconditioner=preconditioner,
        rtol=cg_tol,
        max_iter=cg_max_iter,
        check_symmetry=False,
        record_history=False,
    )
    step = solution.value
    return step[:n], step[n:], solution


# --------------------------------------------------------------------------------------------------------------
# the public solver
# --------------------------------------------------------------------------------------------------------------


def sinkhorn_newton_sparse(
    a: torch.Tensor,
    b: torch.Tensor,
    cost: Any,
    *,
    eps: float,
    tol: float = 1e-10,
    warmup_iters: int = 20,
    max_newton_iter: int = 100,
    sparsity: int | float | None = None,
    dropped_mass: float = 1e-6,
    cg_tol: float = 1e-10,
    cg_max_iter: int | None = None,
    line_search: bool = True,
    fallback_to_sinkhorn: bool = True,
    fallback_max_iter: int = 100_000,
    record_history: bool = True,
) -> SNSResult:
    r"""Entropic optimal transport by Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024).

    **Stage 1** runs at most ``warmup_iters`` log-domain Sinkhorn sweeps (exact block ascent on the dual :math:`D`),
    stopping early once the marginal error is below ``tol``:

    .. math::
        f_i \leftarrow -\varepsilon \log\sum_j b_j e^{(g_j - C_{ij})/\varepsilon}, \qquad
        g_j \leftarrow -\varepsilon \log\sum_i a_i e^{(f_i - C_{ij})/\varepsilon}.

    **Stage 2** takes Newton steps on the concave dual. Its gradient is the marginal residual and its negative
    Hessian is

    .. math::
        \nabla D = \begin{pmatrix} a - P\mathbf 1 \\ b - P^\top \mathbf 1 \end{pmatrix}, \qquad
        -\nabla^2 D = \frac1\varepsilon \begin{pmatrix} \mathrm{diag}(P\mathbf 1) & P \\ P^\top &
        \mathrm{diag}(P^\top \mathbf 1) \end{pmatrix}.

    The off-diagonal block ``P`` is sparsified (by default the largest entries of every row and column holding all
    but ``dropped_mass`` of its mass; or a fixed number per row and column, or a threshold; an :math:`O(nm \log m)`
    selection, never an :math:`O(n^3)` step), the gauge direction :math:`(\mathbf 1, -\mathbf 1)` is removed by
    pinning the last :math:`\Delta g`, the system is solved by Jacobi-preconditioned conjugate gradient
    (:func:`sciml_protocols.cg`) and the step length by Armijo backtracking on :math:`D`
    (:math:`D(z + \alpha\Delta) \ge D(z) + 10^{-4}\alpha\,\nabla D^\top \Delta`, halving :math:`\alpha`; once the
    change of :math:`D` is below its rounding noise a step that lowers the marginal error is accepted). If a Newton
    step fails (CG breaks down, no step length is found, a non-finite value) or the Newton stage ends above ``tol``,
    and ``fallback_to_sinkhorn`` is set, Sinkhorn sweeps continue from the last iterate.

    The marginal error is :math:`\|P\mathbf 1 - a\|_1 + \|P^\top \mathbf 1 - b\|_1`. Below about ``1e-12`` in
    float64 it stalls at rounding level, so tolerances under that are not reachable.

    Args:
        a: source weights ``(n,)``, positive, floating (float64 recommended).
        b: target weights ``(m,)``, positive, same dtype and device; ``a`` and ``b`` should have equal mass.
        cost: cost matrix ``(n, m)`` (a tensor, or a cost object holding a dense matrix).
        eps: entropic regularisation :math:`\varepsilon > 0` (the paper's :math:`1/\eta`).
        tol: target marginal error.
        warmup_iters: Sinkhorn sweeps before the Newton stage (the paper's :math:`N_1`; 20 there), ``>= 1``.
        max_newton_iter: cap on the Newton steps (``>= 0``; 0 means plain Sinkhorn warm-up then fallback).
        sparsity: None: adaptive (see ``dropped_mass``); int: entries of ``P`` kept per row and per column (the
            paper's fixed budget; 6-8 suits very small ``eps``, where the plan is nearly a permutation, but at
            ``eps`` of a few percent of the cost scale rows spread over dozens of entries and a fixed budget makes
            the Newton stage only linearly convergent); float: keep the entries of ``P`` that are ``>= sparsity``.
        dropped_mass: with ``sparsity=None``, the fraction of each row's and column's mass that may be dropped
            (in ``[0, 1)``); divided by 100 after every full Newton step that lowers the error less than tenfold.
        cg_tol: relative residual tolerance of each CG solve.
        cg_max_iter: cap on CG iterations per Newton step (default ``n + m``).
        line_search: Armijo backtracking; without it every Newton step is taken in full.
        fallback_to_sinkhorn: continue with Sinkhorn sweeps when the Newton stage fails or stops above ``tol``.
        fallback_max_iter: cap on those fallback sweeps.
        record_history: keep the marginal error after every iteration (warm-up, Newton, fallback, in order).

    Returns:
        :class:`SNSResult`, a :class:`~sciml_ot.SinkhornResult` (potentials ``f (n,)``, ``g (m,)``; ``cost`` the
        transport cost :math:`\langle P, C\rangle` and ``objective`` the dual value, both differentiable with the
        potentials held fixed; ``marginal_error``; ``n_iter`` = warm-up + Newton + fallback iterations;
        ``converged``; ``history``; ``plan``) whose ``stats`` (:class:`SNSStats`) holds the count of every stage,
        the CG iterations and step lengths of the Newton steps, and whether and why the fallback ran.

    Raises:
        SciMLInputError: weights not 1-D, not positive, not finite, empty or of another dtype/device than the
            cost; a cost of the wrong shape or with non-finite entries; a non-positive ``eps`` or ``tol``; bad
            iteration counts or ``sparsity``.

    Example:
        >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
        >>> C = (x - x.T) ** 2
        >>> w = torch.full((5,), 0.2, dtype=torch.float64)
        >>> result = sinkhorn_newton_sparse(w, w, C, eps=0.01, tol=1e-12)
        >>> result.converged, result.marginal_error <= 1e-12
        (True, True)
        >>> round(float(result.cost), 6)  # the identity coupling is almost optimal
        0.0

    Reference:
        X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao, L. Ying, "Accelerating
        Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024, arXiv:2401.12253.
    """
    a = _check_weights("a", a)
    b = _check_weights("b", b)
    cost_object = _as_cost(cost)
    matrix = cost_object.matrix()
    if matrix.ndim != 2:
        raise SciMLInputError("cost", f"batched costs are not supported, got shape {tuple(matrix.shape)}")
    _check_dtype("cost", matrix, "floating")
    if matrix.shape != (a.numel(), b.numel()):
        raise SciMLInputError("cost", f"expected shape ({a.numel()}, {b.numel()}), got {tuple(matrix.shape)}")
    for name, t in (("b", b), ("cost", matrix)):
        if t.dtype != a.dtype:
            raise SciMLInputError(name, f"dtype {t.dtype} differs from a's {a.dtype}")
        if t.device != a.device:
            raise SciMLInputError(name, f"is on {t.device} but 'a' is on {a.device}")
    _check_finite("cost", matrix)
    eps = _check_real("eps", eps)
    tol = _check_real("tol", tol)
    warmup_iters = check_int("warmup_iters", warmup_iters, minimum=1)
    max_newton_iter = check_int("max_newton_iter", max_newton_iter, minimum=0)
    fallback_max_iter = check_int("fallback_max_iter", fallback_max_iter, minimum=0)
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))):
        raise SciMLInputError(
            "sparsity", f"must be None, an int (entries per row) or a float threshold, got {sparsity!r}"
        )
    if isinstance(sparsity, int):
        check_int("sparsity", sparsity, minimum=1)
    elif isinstance(sparsity, float):
        _check_real("sparsity", sparsity, strict=False)
    dropped_mass = _check_real("dropped_mass", dropped_mass, strict=False)
    if dropped_mass >= 1:
        raise SciMLInputError("dropped_mass", f"must be in [0, 1), got {dropped_mass!r}")
    cg_tol = _check_real("cg_tol", cg_tol)
    n, m = matrix.shape
    cg_cap = n + m if cg_max_iter is None else check_int("cg_max_iter", cg_max_iter, minimum=1)
    for name, flag in (
        ("line_search", line_search),
        ("fallback_to_sinkhorn", fallback_to_sinkhorn),
        ("record_history", record_history),
    ):
        if not isinstance(flag, bool):
            raise SciMLInputError(name, f"must be a bool, got {type(flag).__name__}")

    with torch.no_grad():
        problem = _Problem(a.detach(), b.detach(), matrix.detach(), eps)
        history: list[float] = []
        zeros_f = torch.zeros(n, dtype=a.dtype, device=a.device)
        zeros_g = torch.zeros(m, dtype=a.dtype, device=a.device)
        f, g, n_warmup, _ = _sinkhorn_steps(problem, zeros_f, zeros_g, max_iter=warmup_iters, tol=tol, history=history)

        log_plan = problem.log_plan(f, g)
        plan = log_plan.exp()
        error, rows, cols = _marginal_error(problem, plan)
        n_newton = 0
        cg_iters: list[int] = []
        step_sizes: list[float] = []
        failure: str | None = None
        current_drop = dropped_mass
        while error > tol and n_newton < max_newton_iter:
            grad_f, grad_g = problem.a - rows, problem.b - cols
            kept = _sparsify(plan, sparsity, current_drop)
            # Newton direction of the dual: (eps^-1 H) delta = grad, i.e. H delta = eps * grad.
            delta_f, delta_g, solve = _newton_direction(
                rows, cols, kept, eps * grad_f, eps * grad_g, cg_tol=cg_tol, cg_max_iter=cg_cap
            )
            cg_iters.append(solve.n_iter)
            slope = float(grad_f @ delta_f + grad_g @ delta_g)
            if not (math.isfinite(slope) and slope > 0):
                failure = f"not an ascent direction (CG: {solve.stats.get('reason')})"
                break
            value = problem.dual(f, g, log_plan)
            noise = 64 * torch.finfo(a.dtype).eps * problem.dual_scale(f, g)
            alpha = 1.0
            f_try, g_try, log_try = f, g, log_plan
            accepted = False
            for _ in range(_MAX_BACKTRACKS if line_search else 1):
                f_try, g_try = f + alpha * delta_f, g + alpha * delta_g
                log_try = problem.log_plan(f_try, g_try)
                value_try = problem.dual(f_try, g_try, log_try)
                if not line_search:
                    accepted = math.isfinite(value_try)
                else:
                    armijo = value_try >= value + _ARMIJO * alpha * slope
                    within_noise = abs(value_try - value) <= noise
                    if armijo and not within_noise:
                        accepted = True
                    elif math.isfinite(value_try) and (armijo or within_noise):
                        # D cannot tell the points apart any more: judge by the marginal error instead.
                        accepted = _marginal_error(problem, log_try.exp())[0] < error
                if accepted:
                    break
                alpha *= 0.5
            if not accepted:
                failure = "the line search found no acceptable step"
                break
            f, g, log_plan = f_try, g_try, log_try
            plan = log_plan.exp()
            new_error, rows, cols = _marginal_error(problem, plan)
            n_newton += 1
            step_sizes.append(alpha)
            history.append(new_error)
            if not math.isfinite(new_error):
                failure = "non-finite marginal error"
                error = new_error
                break
            if alpha == 1.0 and new_error > 0.1 * error:
                # a full step that barely helped: the sparsified Hessian is too coarse, keep more of P
                current_drop = current_drop * 1e-2 if current_drop > 1e-14 else 0.0
            error = new_error
        if failure is None and error > tol and max_newton_iter > 0:
            failure = f"no convergence in {max_newton_iter} Newton steps"

        n_fallback = 0
        fallback_used = False
        if error > tol and fallback_to_sinkhorn and fallback_max_iter > 0:
            fallback_used = True
            if not math.isfinite(error):  # restart from the last finite Sinkhorn iterate is not kept: start over
                f, g = zeros_f, zeros_g
            f, g, n_fallback, _ = _sinkhorn_steps(problem, f, g, max_iter=fallback_max_iter, tol=tol, history=history)
            log_plan = problem.log_plan(f, g)
            plan = log_plan.exp()
            error, rows, cols = _marginal_error(problem, plan)

    # Values with a graph to a, b and the cost's tensors, the potentials held fixed (envelope theorem).
    log_plan_graph = (a.log() + f / eps)[:, None] + (b.log() + g / eps)[None, :] - matrix / eps
    transport_cost = (plan * matrix).sum()
    objective = a @ f + b @ g - eps * (torch.logsumexp(log_plan_graph.reshape(-1), dim=0).exp() - 1.0)
    stats = SNSStats(
        warmup_iters=n_warmup,
        newton_iters=n_newton,
        fallback_iters=n_fallback,
        cg_iters=tuple(cg_iters),
        step_sizes=tuple(step_sizes),
        fallback_used=fallback_used,
        newton_failure=failure,
    )
    hist = torch.tensor(history if record_history else [error], dtype=a.dtype, device=a.device)
    return SNSResult(
        f=f,
        g=g,
        cost=transport_cost,
        objective=objective,
        marginal_error=error,
        n_iter=n_warmup + n_newton + n_fallback,
        converged=bool(error <= tol),
        history=hist,
        eps=eps,
        a=a,
        b=b,
        cost_object=cost_object,
        stats=stats,
    )


# --------------------------------------------------------------------------------------------------------------
# Wasserstein distances
# --------------------------------------------------------------------------------------------------------------


def _points(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(t).__name__}")
    _check_dtype(name, t, "floating")
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise SciMLInputError(name, f"expected points of shape (n,) or (n, d), got {tuple(t.shape)}")
    _check_finite(name, t)
    return t


def _density(name: str, t: object, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(t).__name__}")
    _check_dtype(name, t, "floating")
    if tuple(t.shape) != shape:
        raise SciMLInputError(name, f"expected a density of shape {shape} (the grid's), got {tuple(t.shape)}")
    _check_finite(name, t)
    if bool((t < 0).any()):
        raise SciMLInputError(name, "a density must be non-negative")
    total = t.sum()
    if not bool(total > 0):
        raise SciMLInputError(name, "a density must have positive total mass")
    return (t / total).reshape(-1)


def wasserstein(
    x_or_a: torch.Tensor,
    y_or_b: torch.Tensor,
    *,
    p: int = 2,
    grid: torch.Tensor | Sequence[torch.Tensor] | None = None,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float | None = None,
    tol: float = 1e-9,
    warmup_iters: int = 20,
    max_newton_iter: int = 200,
    sparsity: int | float | None = None,
    dropped_mass: float = 1e-6,
) -> torch.Tensor:
    r"""The Wasserstein distance :math:`W_p` (p = 1 or 2) by entropic transport with a small :math:`\varepsilon`.

    With the ground cost :math:`C_{ij} = \|x_i - y_j\|_2^p` the entropic plan :math:`P_\varepsilon` is computed by
    :func:`sinkhorn_newton_sparse`, and the result is :math:`\langle P_\varepsilon, C\rangle^{1/p}`. It
    overestimates :math:`W_p` by the entropic bias: :math:`\langle P_\varepsilon, C\rangle - W_p^p` is positive
    and of order :math:`\varepsilon \log(1/\varepsilon)` (for two 1-D Gaussians and p = 2 it is
    :math:`2\sigma_1\sigma_2 - (\sqrt{\varepsilon^2 + 16\sigma_1^2\sigma_2^2} - \varepsilon)/2 \approx
    \varepsilon/2`). For exact values use a linear-programming solver (``ot.emd2``).

    Two modes:

    * point clouds (``grid=None``): ``x_or_a`` ``(n, d)`` or ``(n,)`` and ``y_or_b`` ``(m, d)`` or ``(m,)``, with
      weights ``a``, ``b`` (uniform by default);
    * discretized densities (the paper's experiments): ``grid`` is the points ``(N,)``/``(N, d)``, with densities
      ``x_or_a``, ``y_or_b`` of shape ``(N,)``; or a sequence of 1-D axes ``(g_1, ..., g_d)``, the tensor-product
      grid (``indexing="ij"``), with densities of shape ``(len g_1, ..., len g_d)``. Densities are normalised to
      mass 1 and points of zero mass are dropped.

    Args:
        x_or_a: points or a density (see above).
        y_or_b: points or a density (see above).
        p: 1 or 2.
        grid: None for point clouds, else the grid of the densities.
        a: weights ``(n,)`` of the first cloud (point-cloud mode only; positive).
        b: weights ``(m,)`` of the second cloud.
        eps: entropic regularisation; default ``1e-2`` times the mean cost :math:`\sum_{ij} a_i b_j C_{ij}`.
        tol: marginal error tolerance.
        warmup_iters: Sinkhorn warm-up sweeps (the paper uses 20 for p = 2 and 700 for p = 1).
        max_newton_iter: cap on the Newton steps.
        sparsity: passed to :func:`sinkhorn_newton_sparse`.
        dropped_mass: passed to :func:`sinkhorn_newton_sparse`.

    Returns:
        :math:`\langle P_\varepsilon, C\rangle^{1/p}`, a 0-dim tensor (differentiable w.r.t. the points with the
        plan held fixed).

    Raises:
        SciMLInputError: ``p`` not 1 or 2; points or densities of the wrong shape, dtype, not finite; negative or
            zero-mass densities; weights given in grid mode; a solve that did not reach ``tol``.

    Example:
        >>> x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        >>> round(float(wasserstein(x, x + 0.5, p=1)), 3)  # a shift by 0.5
        0.5

    Reference:
        X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao, L. Ying, "Accelerating
        Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024, arXiv:2401.12253.
    """
    if isinstance(p, bool) or p not in (1, 2):
        raise SciMLInputError("p", f"must be 1 or 2, got {p!r}")
    if grid is None:
        x = _points("x_or_a", x_or_a)
        y = _points("y_or_b", y_or_b)
        if x.shape[1] != y.shape[1]:
            raise SciMLInputError("y_or_b", f"dimension {y.shape[1]} differs from x_or_a's {x.shape[1]}")
        if x.dtype != y.dtype or x.device != y.device:
            raise SciMLInputError("y_or_b", "must have the dtype and device of x_or_a")
        weights = []
        for name, w, size in (("a", a, x.shape[0]), ("b", b, y.shape[0])):
            if w is None:
                w = torch.full((size,), 1.0 / size, dtype=x.dtype, device=x.device)
            w = _check_weights(name, w)
            if w.numel() != size:
                raise SciMLInputError(name, f"expected {size} weights, got {w.numel()}")
            weights.append(w / w.sum())
        wa, wb = weights
    else:
        if a is not None or b is not None:
            raise SciMLInputError("a", "weights are given as the densities x_or_a, y_or_b in grid mode")
        if isinstance(grid, torch.Tensor):
            points = _points("grid", grid)
            shape: tuple[int, ...] = (points.shape[0],)
        else:
            axes = list(grid)
            if not axes or not all(isinstance(axis, torch.Tensor) and axis.ndim == 1 for axis in axes):
                raise SciMLInputError("grid", "must be a tensor of points or a sequence of 1-D axis tensors")
            for axis in axes:
                _check_finite("grid", axis)
            mesh = torch.meshgrid(*axes, indexing="ij")
            points = torch.stack([m.reshape(-1) for m in mesh], dim=1)
            shape = tuple(axis.numel() for axis in axes)
        da = _density("x_or_a", x_or_a, shape)
        db = _density("y_or_b", y_or_b, shape)
        if da.dtype != points.dtype or db.dtype != points.dtype:
            raise SciMLInputError("grid", "must have the dtype of the densities")
        keep_a, keep_b = da > 0, db > 0
        x, wa = points[keep_a], da[keep_a]
        y, wb = points[keep_b], db[keep_b]
    matrix = torch.cdist(x, y) if p == 1 else torch.cdist(x, y).square()
    if eps is None:
        eps = 1e-2 * float(wa @ matrix.detach() @ wb)
        if eps <= 0:  # identical single points
            return matrix.sum() * 0.0
    result = sinkhorn_newton_sparse(
        wa,
        wb,
        matrix,
        eps=eps,
        tol=tol,
        warmup_iters=warmup_iters,
        max_newton_iter=max_newton_iter,
        sparsity=sparsity,
        dropped_mass=dropped_mass,
    )
    if not result.converged:
        raise SciMLInputError(
            "eps", f"the entropic solve stopped at marginal error {result.marginal_error:.2e} > tol; raise eps or tol"
        )
    return result.cost.clamp_min(0.0) ** (1.0 / p)
