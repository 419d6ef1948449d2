"""Batched preconditioned conjugate gradient, with breakdown detection that never returns NaN."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._errors import SciMLError, SciMLInputError
from ._linear_operator import DiagonalOperator, LinearOperator, aslinearoperator, operator_diagonal
from ._solution import Solution
from ._validation import check_dtype, check_finite, check_nonempty, check_positive, check_tensor

__all__ = ["cg", "jacobi_preconditioner"]

# Per-system breakdown codes, in the order the reason string lists them.
_NO_BREAKDOWN = 0
_NOT_SYMMETRIC = 1
_OPERATOR_NOT_POSITIVE = 2
_PRECONDITIONER_NOT_POSITIVE = 3
_NOT_FINITE = 4
_BREAKDOWN_WORDS = {
    _NOT_SYMMETRIC: "operator is not symmetric",
    _OPERATOR_NOT_POSITIVE: "breakdown p^T A p <= 0 (operator not positive definite)",
    _PRECONDITIONER_NOT_POSITIVE: "breakdown r^T z <= 0 (preconditioner not positive definite)",
    _NOT_FINITE: "breakdown: the recurrence overflowed",
}
_SYMMETRY_PROBE_SEED = 0


def cg(
    a: LinearOperator | torch.Tensor,
    b: torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    preconditioner: LinearOperator | torch.Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 0.0,
    max_iter: int | None = None,
    check_symmetry: bool = True,
    record_history: bool = True,
) -> Solution[torch.Tensor]:
    r"""Solve the symmetric positive definite systems :math:`A x = b` by (preconditioned) conjugate gradient.

    With a preconditioner :math:`M \approx A^{-1}` (symmetric positive definite; the identity when None),
    starting from :math:`x_0`, :math:`r_0 = b - A x_0`, :math:`z_0 = M r_0`, :math:`p_0 = z_0`:

    .. math::
        \alpha_k = \frac{r_k^\top z_k}{p_k^\top A p_k}, \quad
        x_{k+1} = x_k + \alpha_k p_k, \quad
        r_{k+1} = r_k - \alpha_k A p_k,

        z_{k+1} = M r_{k+1}, \quad
        \beta_k = \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k}, \quad
        p_{k+1} = z_{k+1} + \beta_k p_k.

    Every system of the batch has its own :math:`\alpha, \beta` and stops on its own, frozen from then on, when
    :math:`\|r_k\| \le \max(\mathrm{rtol}\,\|b\|, \mathrm{atol})` (the recursive residual). A system whose
    :math:`p_k^\top A p_k \le 0` (``A`` indefinite or singular along :math:`p_k`) or :math:`r_k^\top z_k \le 0`
    (``M`` not positive definite) breaks down: it stops there and keeps its last finite iterate. With
    ``check_symmetry`` one pair of extra matvecs on random vectors ``u, v`` (from a fixed seed) compares
    :math:`u^\top A v` with :math:`v^\top A u`; a system whose operator is not symmetric, relative to
    :math:`\|u\|\|Av\| + \|v\|\|Au\|`, is reported as a breakdown without iterating. A zero right-hand side gives
    :math:`x = 0` after 0 iterations.

    Args:
        a: the operator ``(n, n)``: a :class:`LinearOperator`, or a matrix ``(..., n, n)`` (a batch of matrices
            broadcasts against the batch of ``b``).
        b: right-hand sides ``(..., n)``, same dtype and device as ``a``; leading dimensions are independent
            systems.
        x0: starting guess, broadcastable to ``(..., n)``; zeros when None.
        preconditioner: ``M`` ``(n, n)``, an operator or matrix approximating :math:`A^{-1}` (see
            :func:`jacobi_preconditioner`).
        rtol: relative tolerance on the residual norm, ``>= 0``.
        atol: absolute tolerance on the residual norm, ``>= 0``.
        max_iter: iteration cap (default ``10 n``).
        check_symmetry: probe ``A`` for symmetry first.
        record_history: keep the residual norm of every iteration.

    Returns:
        :class:`Solution` with ``value`` the solutions ``(..., n)``; ``converged`` True when every system met the
        tolerance; ``n_iter`` the largest per-system count; ``residual`` the true residual norms
        :math:`\|b - A x\|` recomputed at the end, shape ``(...)`` (0-dim for one system); ``history`` the recursive
        residual norms ``(n_iter + 1, ...)`` or None; ``stats`` with ``n_iter_per_system``,
        ``converged_per_system``, ``breakdown_per_system`` (tensors of the batch shape), ``reason`` (why it did not
        converge, None when it did) and ``relative_residual`` (:math:`\|b - A x\| / \|b\|`, 0 where ``b = 0``).

    Raises:
        SciMLInputError: a non-square or non-floating operator, ``b`` not floating, not finite, empty, of the wrong
            length, dtype or device; a bad ``x0`` or preconditioner; negative tolerances; a non-positive
            ``max_iter``.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> sol = cg(A, b, rtol=1e-10)
        >>> sol.converged, sol.n_iter
        (True, 2)
        >>> sol.value  # the exact solution is (1/11, 7/11)
        tensor([0.0909, 0.6364], dtype=torch.float64)
        >>> cg(A, torch.stack([b, 2 * b]), rtol=1e-10).value.shape  # a batch of two systems
        torch.Size([2, 2])

    References:
        Hestenes and Stiefel, "Methods of conjugate gradients for solving linear systems", J. Res. Nat. Bur.
        Standards 49 (1952). Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM (2003), Alg. 9.1.
    """
    op = aslinearoperator(a, name="a")
    n = _check_square_operator("a", op)
    dtype, device = op.dtype, op.device
    _check_rhs("b", b, n, dtype, device)
    check_positive("rtol", rtol, strict=False)
    check_positive("atol", atol, strict=False)
    if max_iter is None:
        max_iter = 10 * n
    elif isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter <= 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("max_iter", f"must be a positive int or None, got {max_iter!r}")
    for flag_name, flag in (("check_symmetry", check_symmetry), ("record_history", record_history)):
        if not isinstance(flag, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(flag_name, f"must be a bool, got {type(flag).__name__}")
    precond: LinearOperator | None = None
    if preconditioner is not None:
        precond = aslinearoperator(preconditioner, name="preconditioner")
        if precond.shape != (n, n):
            raise SciMLInputError("preconditioner", f"expected shape ({n}, {n}), got {precond.shape}")
        _check_like_operator("preconditioner", precond.dtype, precond.device, dtype, device)

    batch = torch.broadcast_shapes(
        b.shape[:-1],
        tuple(getattr(op, "batch_shape", ())),
        tuple(getattr(precond, "batch_shape", ())) if precond is not None else (),
    )
    if x0 is not None:
        _check_rhs("x0", x0, n, dtype, device)
        try:
            batch = torch.broadcast_shapes(batch, x0.shape[:-1])
        except RuntimeError:
            raise SciMLInputError("x0", f"shape {tuple(x0.shape)} does not broadcast with b {tuple(b.shape)}") from None
    rhs = b.expand(*batch, n)
    b_norm = torch.linalg.vector_norm(rhs, dim=-1)
    zero_rhs = b_norm == 0
    tolerance = torch.clamp(rtol * b_norm, min=atol)

    def apply_a(v: torch.Tensor) -> torch.Tensor:
        out = op.matvec(v)
        if out.shape != v.shape:
            raise SciMLInputError("a", f"matvec returned shape {tuple(out.shape)} for input {tuple(v.shape)}")
        return out

    def apply_m(v: torch.Tensor) -> torch.Tensor:
        if precond is None:
            return v
        out = precond.matvec(v)
        if out.shape != v.shape:
            raise SciMLInputError(
                "preconditioner", f"matvec returned shape {tuple(out.shape)} for input {tuple(v.shape)}"
            )
        return out

    if x0 is None:
        x = torch.zeros(*batch, n, dtype=dtype, device=device)
        r = rhs.clone()
    else:
        x = x0.expand(*batch, n).clone()
        x = torch.where(zero_rhs.unsqueeze(-1), 0.0, x)  # b = 0 has the solution 0 whatever the guess
        r = rhs - apply_a(x)
    breakdown = torch.zeros(batch, dtype=torch.int8, device=device)
    if check_symmetry:
        breakdown = torch.where(_not_symmetric(apply_a, batch, n, dtype, device), _NOT_SYMMETRIC, breakdown)

    r_norm = torch.linalg.vector_norm(r, dim=-1)
    converged = (r_norm <= tolerance) | zero_rhs
    active = ~converged & (breakdown == _NO_BREAKDOWN)
    z = apply_m(r)
    rz = torch.linalg.vecdot(r, z)
    usable = (rz > 0) & (rz < math.inf)  # NaN fails both
    breakdown = torch.where(active & ~usable, _PRECONDITIONER_NOT_POSITIVE, breakdown)
    active &= usable
    # Invariant: every system that is not active has a finite search direction, so its update x + 0 * p is exact.
    p = torch.where(active.unsqueeze(-1), z, 0.0)
    n_iter_per_system = torch.zeros(batch, dtype=torch.int64, device=device)
    history = [r_norm] if record_history else []
    x_previous, r_previous = x, r
    repair = torch.zeros(batch, dtype=torch.bool, device=device)

    iteration = 0
    while True:
        # One host synchronisation per iteration: whether to go on, and whether the last one broke a system.
        go_on, broke = torch.stack((active.any(), repair.any())).tolist()
        if broke:
            # A system that broke down in the last iteration gets its last finite iterate back, and a zero
            # direction (its p may hold inf or NaN), restoring the invariant above.
            x = torch.where(repair.unsqueeze(-1), x_previous, x)
            r = torch.where(repair.unsqueeze(-1), r_previous, r)
            p = torch.where(repair.unsqueeze(-1), 0.0, p)
        if not go_on or iteration >= max_iter:
            break
        iteration += 1
        ap = apply_a(p)
        pap = torch.linalg.vecdot(p, ap)
        alpha = rz / pap
        curvature_ok = (pap > 0) & (pap < math.inf) & (alpha < math.inf)
        bad_curvature = active & ~curvature_ok
        breakdown = torch.where(bad_curvature, _OPERATOR_NOT_POSITIVE, breakdown)
        active &= curvature_ok
        alpha = torch.where(active, alpha, 0.0).unsqueeze(-1)
        x_previous, r_previous = x, r
        x = torch.addcmul(x, alpha, p)
        r = torch.addcmul(r, alpha, ap, value=-1)
        if precond is None:
            z, rz_next = r, torch.linalg.vecdot(r, r)
            r_norm_next = rz_next.sqrt()
        else:
            z = apply_m(r)
            rz_next = torch.linalg.vecdot(r, z)
            r_norm_next = torch.linalg.vector_norm(r, dim=-1)
        overflow = active & ~(r_norm_next < math.inf)
        breakdown = torch.where(overflow, _NOT_FINITE, breakdown)
        active &= ~overflow
        repair = bad_curvature | overflow
        r_norm = torch.where(active, r_norm_next, r_norm)
        n_iter_per_system += active
        if record_history:
            history.append(r_norm)
        newly_converged = active & (r_norm <= tolerance)
        converged |= newly_converged
        active &= ~newly_converged
        if precond is not None:  # without one, r^T r > 0 for every system that has not converged
            bad_preconditioner = active & ~((rz_next > 0) & (rz_next < math.inf))
            breakdown = torch.where(bad_preconditioner, _PRECONDITIONER_NOT_POSITIVE, breakdown)
            active &= ~bad_preconditioner
        beta = torch.where(active, rz_next / rz, 0.0).unsqueeze(-1)
        p = torch.where(active.unsqueeze(-1), torch.addcmul(z, beta, p), p)
        rz = rz_next

    true_residual = torch.linalg.vector_norm(rhs - apply_a(x), dim=-1)
    relative_residual = torch.where(zero_rhs, 0.0, true_residual / torch.where(zero_rhs, 1.0, b_norm))
    all_converged = bool(converged.all())
    # The last loop pass may have updated no system (a breakdown found there), so count updates, not passes.
    n_iter = int(n_iter_per_system.max())
    stats = {
        "n_iter_per_system": n_iter_per_system,
        "converged_per_system": converged,
        "breakdown_per_system": breakdown != _NO_BREAKDOWN,
        "reason": None if all_converged else _reason(breakdown, converged, max_iter),
        "relative_residual": relative_residual,
    }
    return Solution(
        value=x,
        converged=all_converged,
        n_iter=n_iter,
        residual=true_residual,
        history=torch.stack(history[: n_iter + 1]) if record_history else None,
        stats=stats,
    )


def jacobi_preconditioner(a: LinearOperator | torch.Tensor) -> DiagonalOperator:
    r"""The Jacobi (diagonal) preconditioner :math:`M = \mathrm{diag}(A)^{-1}`.

    It equilibrates badly scaled rows: for a diagonally dominant ``A`` whose diagonal spans orders of magnitude,
    :math:`\kappa(M A)` is much smaller than :math:`\kappa(A)`.

    Args:
        a: a square operator with a ``diagonal()`` method (a matrix ``(..., n, n)``, :class:`DenseOperator`,
            :class:`DiagonalOperator`, :class:`KroneckerOperator`, or a :class:`FunctionOperator` built with
            ``diagonal=``).

    Returns:
        :class:`DiagonalOperator` holding ``1 / diag(A)``, shape ``(..., n)``.

    Raises:
        SciMLInputError: ``a`` has no diagonal, or a diagonal entry is not positive and finite.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 100.0]])
        >>> jacobi_preconditioner(A).diag
        tensor([0.2500, 0.0100])

    Reference:
        Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM (2003), Section 10.2.
    """
    op = aslinearoperator(a, name="a")
    _check_square_operator("a", op)
    try:
        diagonal = operator_diagonal(op, "a")
    except SciMLInputError:
        raise
    except SciMLError as err:  # an adapter without a cheap diagonal says so
        raise SciMLInputError("a", f"has no cheap diagonal for a Jacobi preconditioner ({err})") from None
    if not bool((diagonal > 0).all()) or not bool(torch.isfinite(diagonal).all()):
        raise SciMLInputError(
            "a", f"Jacobi needs a positive finite diagonal; smallest entry is {float(diagonal.min()):.3g}"
        )
    return DiagonalOperator(1.0 / diagonal)


def _check_square_operator(name: str, op: LinearOperator) -> int:
    n, m = op.shape
    if n != m:
        raise SciMLInputError(name, f"must be square, got shape {op.shape}")
    if not op.dtype.is_floating_point:
        raise SciMLInputError(name, f"must have a real floating dtype, got {op.dtype}")
    return n


def _check_like_operator(
    name: str, dtype: torch.dtype, device: torch.device, op_dtype: torch.dtype, op_device: torch.device
) -> None:
    if dtype != op_dtype:
        raise SciMLInputError(name, f"has dtype {dtype} but the operator 'a' has {op_dtype}")
    if torch.device(device) != torch.device(op_device):
        raise SciMLInputError(name, f"is on {device} but the operator 'a' is on {op_device}")


def _check_rhs(name: str, v: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> None:
    check_tensor(name, v)
    check_dtype(name, v)
    check_nonempty(name, v)
    if v.ndim < 1 or v.shape[-1] != n:
        raise SciMLInputError(name, f"expected shape (..., {n}) to match the operator, got {tuple(v.shape)}")
    _check_like_operator(name, v.dtype, v.device, dtype, device)
    check_finite(name, v)


def _not_symmetric(
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Size,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_SYMMETRY_PROBE_SEED)
    # Drawn on the CPU so every device sees the same probe vectors.
    u = torch.randn(*batch, n, generator=generator, dtype=dtype).to(device)
    v = torch.randn(*batch, n, generator=generator, dtype=dtype).to(device)
    au, av = apply_a(u), apply_a(v)
    gap = (torch.linalg.vecdot(u, av) - torch.linalg.vecdot(v, au)).abs()
    scale = torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(av, dim=-1) + torch.linalg.vector_norm(
        v, dim=-1
    ) * torch.linalg.vector_norm(au, dim=-1)
    tolerance = math.sqrt(torch.finfo(dtype).eps)
    return ~(gap <= tolerance * scale)  # NaN counts as not symmetric


def _reason(breakdown: torch.Tensor, converged: torch.Tensor, max_iter: int) -> str:
    total = breakdown.numel()
    parts: list[str] = []
    for code, words in _BREAKDOWN_WORDS.items():
        count = int((breakdown == code).sum())
        if count:
            parts.append(words if total == 1 else f"{words} for {count} of {total} systems")
    capped = int((~converged & (breakdown == _NO_BREAKDOWN)).sum())
    if capped:
        cap = f"iteration cap {max_iter} reached"
        parts.append(cap if total == 1 else f"{cap} for {capped} of {total} systems")
    return "; ".join(parts)
