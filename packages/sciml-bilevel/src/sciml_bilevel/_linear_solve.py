r"""Matrix-free linear solvers for the adjoint systems of implicit differentiation.

One entry point, :func:`linear_solve`, solves :math:`(A + \rho I)\,x = b` given only the product
:math:`v \mapsto A v` (a Hessian- or Jacobian-vector product), by conjugate gradient, CG on the normal equations,
restarted GMRES, BiCGSTAB, a truncated Neumann series or a dense direct solve. Every system of a batch stops on its
own, every result is a :class:`sciml_protocols.Solution`, and the iterations run unchanged under ``torch.func``
transforms (``vmap``, ``jacrev``, ``grad``), where they take a fixed number of masked steps instead of testing
convergence on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from sciml_protocols import SciMLInputError, Solution, check_dtype, check_finite, check_nonempty, check_tensor

__all__ = ["linear_solve"]

Tensor = torch.Tensor
_Matvec = Callable[[Tensor], Tensor]

_METHODS = ("cg", "normal_cg", "gmres", "bicgstab", "neumann", "dense")

# Per-system status codes; stats["reason"] lists the words of the codes that occur.
_CONVERGED = 0
_MAX_ITER = 1
_BREAKDOWN = 2
_SINGULAR = 3
_NON_FINITE = 4
_INACCURATE = 5
_STATUS_WORDS = {
    _MAX_ITER: "max_iter",
    _BREAKDOWN: "breakdown",
    _SINGULAR: "singular",
    _NON_FINITE: "non-finite",
    _INACCURATE: "inaccurate",
}
# A system whose recurrence met the tolerance counts as converged when its recomputed residual is within this
# factor of the tolerance (the two drift apart by rounding).
_TRUE_RESIDUAL_SLACK = 10.0
_MAX_ITER_CAP = 1000
_NEUMANN_DEFAULT_TERMS = 500


def linear_solve(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    method: str = "gmres",
    rmatvec: Callable[[Tensor], Tensor] | None = None,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    atol: float = 0.0,
    max_iter: int | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    restart: int = 30,
    neumann_alpha: float = 1.0,
    ridge: float = 0.0,
) -> Solution[Tensor]:
    r"""Solve :math:`(A + \rho I)\,x = b` given only :math:`v \mapsto A v`.

    Each system stops when :math:`\|b - (A + \rho I) x_k\| \le \max(\mathrm{tol}\,\|b\|, \mathrm{atol})` (the
    residual of the method's recurrence; the true residual is recomputed at the end). The methods:

    * ``"cg"`` (symmetric positive definite :math:`A`), preconditioned conjugate gradient:
      :math:`\alpha_k = r_k^\top z_k / p_k^\top A p_k`, :math:`x_{k+1} = x_k + \alpha_k p_k`,
      :math:`r_{k+1} = r_k - \alpha_k A p_k`, :math:`z_{k+1} = M r_{k+1}`,
      :math:`p_{k+1} = z_{k+1} + (r_{k+1}^\top z_{k+1} / r_k^\top z_k)\, p_k`.
    * ``"normal_cg"`` (any nonsingular :math:`A`), CG on :math:`A^\top A x = A^\top b` in its CGLS form, which
      keeps :math:`r = b - A x` and :math:`s = A^\top r`: :math:`q = A p`, :math:`\alpha = s^\top z / q^\top q`,
      :math:`x \mathrel{+}= \alpha p`, :math:`r \mathrel{-}= \alpha q`, :math:`s = A^\top r`, :math:`z = M s`,
      :math:`p = z + \beta p`. The preconditioner approximates :math:`(A^\top A)^{-1}`.
    * ``"gmres"`` (general :math:`A`), restarted GMRES(m): an Arnoldi basis :math:`V_k` of
      :math:`\mathcal K_k(A M, r_0)` (classical Gram-Schmidt, applied twice), the Hessenberg matrix reduced by
      Givens rotations, so that :math:`\min_y \|\beta e_1 - \bar H_k y\|` is the residual after :math:`k` steps;
      :math:`x = x_0 + M V_k y` (right preconditioning), restarting from the true residual every ``restart`` steps.
    * ``"bicgstab"`` (general :math:`A`), van der Vorst's BiCGSTAB with right preconditioning; two products per
      iteration.
    * ``"neumann"``, the truncated series
      :math:`x = \alpha \sum_{k=0}^{K-1} (I - \alpha A)^k b`, i.e. Richardson's iteration
      :math:`x_{k+1} = x_k + \alpha M r_k`, :math:`r_{k+1} = r_k - \alpha A M r_k`. The residual after :math:`K`
      terms is :math:`(I - \alpha A)^K b` and the next increment is :math:`\alpha r_K`, so "the increment is small"
      and "the residual is small" are the same test. It converges when the spectral radius of
      :math:`I - \alpha A M` is below one.
    * ``"dense"`` (small :math:`n`): :math:`A` is materialised from :math:`n` products with the unit vectors and
      solved by LU. A numerically singular :math:`A` (rank below :math:`n` at the default rank tolerance) gets the
      minimum-norm least-squares solution :math:`A^+ b` (by pseudo-inverse) and is reported as ``"singular"``,
      never NaN. For a nonsingular system ``converged`` is True whatever ``tol`` (a direct solve reaches the
      accuracy the dtype allows; ``residual`` says what it is). ``preconditioner`` and ``max_iter`` are unused.

    Shapes. A 0-d or 1-d ``b`` is one system and ``matvec`` sees tensors of ``b``'s shape. A ``b`` with two or
    more dimensions is a batch along its first dimension: ``matvec`` maps ``(batch, ...)`` to ``(batch, ...)``,
    system ``i`` being ``b[i]`` with its own operator ``A_i``; each system has its own step sizes, stops on its own
    and is frozen from then on. To solve one system whose unknown is a matrix, pass ``b.unsqueeze(0)``.

    Failures are reported, not raised. ``stats["reason"]`` names the failures that occurred: ``"max_iter"``
    (iteration cap), ``"breakdown"`` (a zero or non-positive denominator: :math:`p^\top A p \le 0` in CG, an
    exhausted Krylov space in GMRES, :math:`\hat r^\top r = 0` in BiCGSTAB), ``"singular"`` (dense), ``"non-finite"``
    (the products overflowed) and ``"inaccurate"`` (the recurrence met the tolerance but the recomputed residual is
    more than 10 times larger). The value is always the last finite iterate.

    ``torch.func``. When a functorch transform is active (``torch._C._are_functorch_transforms_active()``, or a
    wrapped ``b``), nothing reads tensor data on the host: every method runs exactly ``max_iter`` masked steps
    (systems that have converged are frozen by ``torch.where``; divisions are guarded so that no NaN reaches a
    gradient), ``b`` is not checked for NaN, and ``converged``/``n_iter`` are filled in only when the final masks
    can be read (under ``vmap`` they cannot: ``converged`` is False and ``stats["reason"]`` is
    ``"unchecked (torch.func transform active)"``); ``stats["under_transform"]`` is True. So ``vmap`` over
    right-hand sides and ``jacrev``/``jacfwd`` of the solution compose with every method.

    Autograd. Nothing is detached: when ``b`` (or a tensor inside ``matvec``) requires grad, gradients flow through
    the iterations (unrolled differentiation, approximating :math:`A^{-\top}` for a converged solve). Implicit
    differentiation does not need this; pass ``b.detach()`` to avoid storing the iterations.

    Args:
        matvec: :math:`v \mapsto A v`, linear, mapping tensors of ``b``'s shape to the same shape, dtype and device.
        b: right-hand side(s): ``()``, ``(n,)``, or a batch ``(batch, ...)``; real floating, finite, non-empty.
        method: one of ``"cg"``, ``"normal_cg"``, ``"gmres"``, ``"bicgstab"``, ``"neumann"``, ``"dense"``.
        rmatvec: :math:`u \mapsto A^\top u` for ``"normal_cg"``. When None it is the vector-Jacobian product of
            ``matvec`` (``torch.autograd.grad`` on one linearisation, or ``torch.func.vjp`` under transforms), which
            needs a ``matvec`` differentiable in its input.
        x0: starting guess, shape of ``b`` (zeros when None).
        tol: relative tolerance, ``> 0``. In float32 values below about ``1e-6`` are out of reach of the iterative
            methods (they then stop at ``max_iter``).
        atol: absolute tolerance, ``>= 0``.
        max_iter: iteration cap, ``>= 1``: iterations of CG, normal CG and BiCGSTAB, total inner steps of GMRES,
            terms of the Neumann series. Default :math:`\min(10 n, 1000)` (Neumann: 500 terms).
        preconditioner: :math:`v \mapsto M v` with :math:`M \approx A^{-1}` (symmetric positive definite for
            ``"cg"``; approximating :math:`(A^\top A)^{-1}` for ``"normal_cg"``), same shapes as ``matvec``.
        restart: GMRES restart length ``m >= 1`` (capped at ``n``).
        neumann_alpha: step :math:`\alpha > 0` of the Neumann series.
        ridge: :math:`\rho \ge 0`, added to the diagonal.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` of ``b``'s shape; ``converged`` True when every system
        converged; ``n_iter`` the largest per-system iteration count; ``residual`` the recomputed relative
        residual :math:`\|b - (A + \rho I)x\| / \|b\|` (the absolute one where ``b = 0``), shape ``()`` for one
        system and ``(batch,)`` for a batch; ``history`` the per-iteration relative residuals of the recurrence,
        ``(passes + 1,)`` or ``(passes + 1, batch)``; ``stats`` with ``method``, ``n_iter_per_system``,
        ``converged_per_system``, ``status_per_system`` (0 converged, 1 max_iter, 2 breakdown, 3 singular,
        4 non-finite, 5 inaccurate), ``reason`` (None when converged), ``absolute_residual``, ``n_matvec``,
        ``max_iter``, ``under_transform``.

    Raises:
        SciMLInputError: ``matvec`` (or ``rmatvec``, ``preconditioner``) not callable or returning a wrong shape,
            dtype or device; ``b`` not a finite real floating tensor or empty; a bad ``x0``; an unknown ``method``;
            ``tol <= 0``; ``atol < 0``; ``max_iter < 1``; ``restart < 1``; ``neumann_alpha <= 0``; ``ridge < 0``;
            ``"normal_cg"`` without ``rmatvec`` and with a ``matvec`` that cannot be differentiated.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> sol = linear_solve(lambda v: A @ v, b, method="cg")
        >>> sol.converged, sol.n_iter
        (True, 2)
        >>> sol.value  # exact solution (1/11, 7/11)
        tensor([0.0909, 0.6364], dtype=torch.float64)
        >>> B = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # nonsymmetric
        >>> linear_solve(lambda v: v @ B.T, torch.stack([b, 2 * b]), method="gmres").value
        tensor([[-0.5000,  2.0000],
                [-1.0000,  4.0000]], dtype=torch.float64)

    References:
        Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-Lopez, Pedregosa, Vert, "Efficient and Modular Implicit
        Differentiation", NeurIPS 2022 (arXiv:2105.15183) -- the solvers of its implicit differentiation.
        Hestenes and Stiefel, "Methods of conjugate gradients for solving linear systems", J. Res. NBS 49 (1952).
        Saad and Schultz, "GMRES: a generalized minimal residual algorithm for solving nonsymmetric linear
        systems", SIAM J. Sci. Stat. Comput. 7 (1986). van der Vorst, "Bi-CGSTAB: a fast and smoothly converging
        variant of Bi-CG", SIAM J. Sci. Stat. Comput. 13 (1992). Saad, "Iterative Methods for Sparse Linear
        Systems", 2nd ed., SIAM (2003).
    """
    transformed = _transforms_active(b)
    _validate(matvec, b, method, rmatvec, x0, tol, atol, max_iter, preconditioner, restart, neumann_alpha, ridge)
    if not transformed:
        check_finite("b", b)
        if x0 is not None:
            check_finite("x0", x0)

    shape = b.shape
    batched = b.ndim >= 2
    n_systems = shape[0] if batched else 1
    n = b.numel() // n_systems
    if n_systems == 0 or n == 0:
        raise SciMLInputError("b", f"must not be empty, got shape {tuple(shape)}")
    if max_iter is None:
        max_iter = (
            1 if method == "dense" else _NEUMANN_DEFAULT_TERMS if method == "neumann" else min(10 * n, _MAX_ITER_CAP)
        )
    counter = [0]

    def to_user(v: Tensor) -> Tensor:
        return v.reshape(shape)

    def to_flat(v: Tensor) -> Tensor:
        return v.reshape(n_systems, n)

    def checked(fn: _Matvec, name: str) -> _Matvec:
        def apply(v: Tensor) -> Tensor:
            out = fn(to_user(v))
            if not isinstance(out, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must return a torch.Tensor, got {type(out).__name__}")
            if out.shape != shape:
                raise SciMLInputError(name, f"returned shape {tuple(out.shape)} for an input of shape {tuple(shape)}")
            if out.dtype != b.dtype:
                raise SciMLInputError(name, f"returned dtype {out.dtype}, expected {b.dtype}")
            if out.device != b.device:
                raise SciMLInputError(name, f"returned a tensor on {out.device}, expected {b.device}")
            return to_flat(out)

        return apply

    raw_a = checked(matvec, "matvec")

    def apply_a(v: Tensor) -> Tensor:
        counter[0] += 1
        out = raw_a(v)
        return out + ridge * v if ridge != 0.0 else out

    apply_m = checked(preconditioner, "preconditioner") if preconditioner is not None else None
    rhs = to_flat(b)
    x_start = to_flat(x0) if x0 is not None else torch.zeros_like(rhs)
    b_norm = torch.linalg.vector_norm(rhs, dim=-1)
    threshold = torch.clamp(tol * b_norm, min=atol)
    ctx = _Context(apply_a, apply_m, rhs, x_start, x0 is not None, b_norm, threshold, max_iter, transformed)

    if method == "cg":
        x, status, iters, history = _cg(ctx)
    elif method == "normal_cg":
        apply_at = _transpose(matvec, rmatvec, b, shape, ridge, transformed, to_flat, to_user, checked)
        x, status, iters, history = _normal_cg(ctx, apply_at)
    elif method == "gmres":
        x, status, iters, history = _gmres(ctx, min(restart, n))
    elif method == "bicgstab":
        x, status, iters, history = _bicgstab(ctx)
    elif method == "neumann":
        x, status, iters, history = _neumann(ctx, neumann_alpha)
    else:
        x, status, iters, history = _dense(ctx, n)

    absolute = torch.linalg.vector_norm(rhs - apply_a(x), dim=-1)
    safe_b = torch.where(b_norm > 0, b_norm, 1.0)
    relative = torch.where(b_norm > 0, absolute / safe_b, absolute)
    if method != "dense":
        drifted = (status == _CONVERGED) & ~(absolute <= _TRUE_RESIDUAL_SLACK * threshold)
        status = torch.where(drifted, _INACCURATE, status)
    converged_per_system = status == _CONVERGED
    converged, n_iter, reason = _summarise(converged_per_system, status, iters, max_iter)

    def per_system(t: Tensor) -> Tensor:
        return t if batched else t.reshape(t.shape[1:]) if t.ndim > 1 else t.reshape(())

    history_out = history if batched else history[:, 0]
    if not transformed:
        history_out = history_out[: n_iter + 1] if method != "gmres" else history_out
    stats: dict[str, Any] = {
        "method": method,
        "n_iter_per_system": per_system(iters),
        "converged_per_system": per_system(converged_per_system),
        "status_per_system": per_system(status),
        "reason": reason,
        "absolute_residual": per_system(absolute),
        "n_matvec": counter[0],
        "max_iter": max_iter,
        "under_transform": transformed,
    }
    if method == "gmres":
        stats["restart"] = min(restart, n)
    return Solution(
        value=to_user(x),
        converged=converged,
        n_iter=n_iter,
        residual=per_system(relative),
        history=history_out,
        stats=stats,
    )


# ---------------------------------------------------------------------------------------------------------------
# plumbing


class _Context:
    """What every method needs: the operators, the flat (batch, n) right-hand side and the stopping thresholds."""

    def __init__(
        self,
        apply_a: _Matvec,
        apply_m: _Matvec | None,
        b: Tensor,
        x0: Tensor,
        has_x0: bool,
        b_norm: Tensor,
        threshold: Tensor,
        max_iter: int,
        transformed: bool,
    ) -> None:
        self.apply_a = apply_a
        self.apply_m = apply_m
        self.b = b
        self.x0 = x0
        self.has_x0 = has_x0
        self.b_norm = b_norm
        self.safe_b_norm = torch.where(b_norm > 0, b_norm, 1.0)
        self.threshold = threshold
        self.max_iter = max_iter
        self.transformed = transformed

    def precondition(self, v: Tensor) -> Tensor:
        return v if self.apply_m is None else self.apply_m(v)

    def initial_residual(self) -> Tensor:
        return self.b - self.apply_a(self.x0) if self.has_x0 else self.b

    def keep_going(self, active: Tensor, iteration: int) -> bool:
        """Whether to run another pass; under transforms the count alone decides (no host read of tensor data)."""
        if iteration >= self.max_iter:
            return False
        return True if self.transformed else bool(active.any())

    def relative(self, r_norm: Tensor) -> Tensor:
        return r_norm / self.safe_b_norm


def _transforms_active(b: Tensor) -> bool:
    functorch = getattr(torch._C, "_functorch", None)  # pyright: ignore[reportAttributeAccessIssue]
    wrapped = bool(functorch is not None and functorch.is_functorch_wrapped_tensor(b))
    active_fn = getattr(torch._C, "_are_functorch_transforms_active", None)
    return wrapped or bool(active_fn is not None and active_fn())


def _validate(
    matvec: object,
    b: object,
    method: object,
    rmatvec: object,
    x0: object,
    tol: object,
    atol: object,
    max_iter: object,
    preconditioner: object,
    restart: object,
    neumann_alpha: object,
    ridge: object,
) -> None:
    if not callable(matvec):
        raise SciMLInputError("matvec", f"must be callable, got {type(matvec).__name__}")
    for name, fn in (("rmatvec", rmatvec), ("preconditioner", preconditioner)):
        if fn is not None and not callable(fn):
            raise SciMLInputError(name, f"must be callable or None, got {type(fn).__name__}")
    b = check_tensor("b", b)
    check_dtype("b", b)
    check_nonempty("b", b)
    if not isinstance(method, str) or method not in _METHODS:
        raise SciMLInputError("method", f"must be one of {_METHODS}, got {method!r}")
    if x0 is not None:
        x0 = check_tensor("x0", x0)
        if x0.shape != b.shape or x0.dtype != b.dtype or x0.device != b.device:
            raise SciMLInputError(
                "x0",
                f"must match b (shape {tuple(b.shape)}, {b.dtype}, {b.device}); "
                f"got shape {tuple(x0.shape)}, {x0.dtype}, {x0.device}",
            )
    _check_number("tol", tol, strict=True)
    _check_number("atol", atol, strict=False)
    _check_number("neumann_alpha", neumann_alpha, strict=True)
    _check_number("ridge", ridge, strict=False)
    for name, value in (("max_iter", max_iter), ("restart", restart)):
        if name == "max_iter" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SciMLInputError(name, f"must be an int >= 1{' or None' if name == 'max_iter' else ''}, got {value!r}")


def _check_number(name: str, value: object, *, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or (value <= 0 if strict else value < 0):
        raise SciMLInputError(name, f"must be {'> 0' if strict else '>= 0'} and finite, got {value}")


def _transpose(
    matvec: _Matvec,
    rmatvec: _Matvec | None,
    b: Tensor,
    shape: torch.Size,
    ridge: float,
    transformed: bool,
    to_flat: Callable[[Tensor], Tensor],
    to_user: Callable[[Tensor], Tensor],
    checked: Callable[[_Matvec, str], _Matvec],
) -> _Matvec:
    r"""The flat :math:`u \mapsto (A + \rho I)^\top u`, from ``rmatvec`` or from a VJP of ``matvec``."""
    if rmatvec is not None:
        raw = checked(rmatvec, "rmatvec")
    elif transformed:
        raw = _vjp_transpose(matvec, b, to_flat, to_user)
    else:
        raw = _autograd_transpose(matvec, b, shape, to_flat, to_user)
    if ridge == 0.0:
        return raw
    return lambda u: raw(u) + ridge * u


def _vjp_transpose(
    matvec: _Matvec, b: Tensor, to_flat: Callable[[Tensor], Tensor], to_user: Callable[[Tensor], Tensor]
) -> _Matvec:
    # torch.func composes with the transforms that are active; plain autograd would not see through vmap.
    from torch.func import vjp

    try:
        vjp_fn = vjp(matvec, torch.zeros_like(b))[1]
    except RuntimeError as err:
        raise SciMLInputError(
            "rmatvec", f"is None and matvec cannot be differentiated by torch.func.vjp ({err})"
        ) from None

    def transpose(u: Tensor) -> Tensor:
        return to_flat(vjp_fn(to_user(u))[0])

    return transpose


def _autograd_transpose(
    matvec: _Matvec,
    b: Tensor,
    shape: torch.Size,
    to_flat: Callable[[Tensor], Tensor],
    to_user: Callable[[Tensor], Tensor],
) -> _Matvec:
    # One linearisation at 0; every A^T u is a backward pass through it (the graph is kept).
    with torch.enable_grad():
        probe = torch.zeros(shape, dtype=b.dtype, device=b.device, requires_grad=True)
        out = matvec(probe)
    if not isinstance(out, torch.Tensor) or out.shape != shape or not out.requires_grad:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError(
            "rmatvec", "is None and matvec is not differentiable in its input (pass rmatvec = A^T u for normal_cg)"
        )

    def transpose(u: Tensor) -> Tensor:
        (grad,) = torch.autograd.grad(out, probe, to_user(u), retain_graph=True, create_graph=u.requires_grad)
        return to_flat(grad)

    return transpose


def _safe_divide(numerator: Tensor, denominator: Tensor, mask: Tensor) -> Tensor:
    """``numerator / denominator`` where ``mask``, 0 elsewhere, with no inf or NaN anywhere (so none in gradients)."""
    return torch.where(mask, numerator / torch.where(mask, denominator, 1.0), 0.0)


def _stop_where(status: Tensor, active: Tensor, ok: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Stop the active systems where ``ok`` fails: "non-finite" if ``value`` overflowed, else "breakdown"."""
    failed = active & ~ok
    code = torch.where(torch.isfinite(value), _BREAKDOWN, _NON_FINITE)
    return torch.where(failed, code, status), active & ok


def _finite_rows(*tensors: Tensor) -> Tensor:
    ok = torch.isfinite(tensors[0]).all(dim=-1)
    for t in tensors[1:]:
        ok = ok & torch.isfinite(t).all(dim=-1)
    return ok


def _norm(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v, dim=-1)


def _dot(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum(dim=-1)


def _project(basis: Tensor, v: Tensor) -> Tensor:
    """``(batch, k, n), (batch, n) -> (batch, k)``: the coefficients of ``v`` on the basis."""
    # Broadcast-and-sum rather than a batched matmul: as fast for these thin shapes, and free of the erratic
    # latency some CPU builds show for tiny bmm calls.
    return (basis * v.unsqueeze(-2)).sum(dim=-1)


def _combine(basis: Tensor, coefficients: Tensor) -> Tensor:
    """``(batch, k, n), (batch, k) -> (batch, n)``: the combination of the basis vectors."""
    return (basis * coefficients.unsqueeze(-1)).sum(dim=-2)


def _col(mask: Tensor) -> Tensor:
    return mask.unsqueeze(-1)


def _start(ctx: _Context, r_norm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Initial (active, status, per-system iterations)."""
    active = ~(r_norm <= ctx.threshold)
    status = torch.where(active, _MAX_ITER, _CONVERGED)
    iters = torch.zeros_like(status)
    return active, status, iters


def _summarise(
    converged_per_system: Tensor, status: Tensor, iters: Tensor, max_iter: int
) -> tuple[bool, int, str | None]:
    try:
        all_converged = bool(converged_per_system.all())
        n_iter = int(iters.max())
        codes = set(status.unique().tolist())
    except RuntimeError:  # under vmap the masks hold per-sample data the host cannot read
        return False, max_iter, "unchecked (torch.func transform active)"
    reason = None if all_converged else "; ".join(w for c, w in _STATUS_WORDS.items() if c in codes)
    return all_converged, n_iter, reason


# ---------------------------------------------------------------------------------------------------------------
# methods; each returns (x, status, per-system iterations, history (passes + 1, batch))


def _cg(ctx: _Context) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = ctx.x0
    r = ctx.initial_residual()
    r_norm = _norm(r)
    active, status, iters = _start(ctx, r_norm)
    z = ctx.precondition(r)
    rz = _dot(r, z)
    p = z
    history = [ctx.relative(r_norm)]
    iteration = 0
    while ctx.keep_going(active, iteration):
        iteration += 1
        ap = ctx.apply_a(p)
        pap = _dot(p, ap)
        curvature_ok = (pap > 0) & torch.isfinite(pap)
        status, active = _stop_where(status, active, curvature_ok, pap)
        alpha = _safe_divide(rz, pap, active).unsqueeze(-1)
        x_new, r_new = x + alpha * p, r - alpha * ap
        finite = _finite_rows(x_new, r_new)
        status = torch.where(active & ~finite, _NON_FINITE, status)
        active = active & finite
        x = torch.where(_col(active), x_new, x)
        r = torch.where(_col(active), r_new, r)
        iters = iters + active
        r_norm = torch.where(active, _norm(r), r_norm)
        history.append(ctx.relative(r_norm))
        done = active & (r_norm <= ctx.threshold)
        status = torch.where(done, _CONVERGED, status)
        active = active & ~done
        z = ctx.precondition(r)
        rz_new = _dot(r, z)
        positive = (rz_new > 0) & torch.isfinite(rz_new)
        status, active = _stop_where(status, active, positive, rz_new)
        beta = _safe_divide(rz_new, rz, active).unsqueeze(-1)
        p = torch.where(_col(active), z + beta * p, p)
        rz = torch.where(active, rz_new, rz)
    return x, status, iters, torch.stack(history)


def _normal_cg(ctx: _Context, apply_at: _Matvec) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = ctx.x0
    r = ctx.initial_residual()
    r_norm = _norm(r)
    active, status, iters = _start(ctx, r_norm)
    s = apply_at(r)
    z = ctx.precondition(s)
    gamma = _dot(s, z)
    p = z
    history = [ctx.relative(r_norm)]
    iteration = 0
    while ctx.keep_going(active, iteration):
        iteration += 1
        q = ctx.apply_a(p)
        qq = _dot(q, q)
        ok = (qq > 0) & torch.isfinite(qq) & (gamma > 0)
        status, active = _stop_where(status, active, ok, qq)
        alpha = _safe_divide(gamma, qq, active).unsqueeze(-1)
        x_new, r_new = x + alpha * p, r - alpha * q
        finite = _finite_rows(x_new, r_new)
        status = torch.where(active & ~finite, _NON_FINITE, status)
        active = active & finite
        x = torch.where(_col(active), x_new, x)
        r = torch.where(_col(active), r_new, r)
        iters = iters + active
        r_norm = torch.where(active, _norm(r), r_norm)
        history.append(ctx.relative(r_norm))
        done = active & (r_norm <= ctx.threshold)
        status = torch.where(done, _CONVERGED, status)
        active = active & ~done
        s = apply_at(r)
        z = ctx.precondition(s)
        gamma_new = _dot(s, z)
        # s = A^T r = 0 with r != 0: b is not in the range of A, the least-squares solution is reached.
        ok = (gamma_new > 0) & torch.isfinite(gamma_new)
        status, active = _stop_where(status, active, ok, gamma_new)
        beta = _safe_divide(gamma_new, gamma, active).unsqueeze(-1)
        p = torch.where(_col(active), z + beta * p, p)
        gamma = torch.where(active, gamma_new, gamma)
    return x, status, iters, torch.stack(history)


def _bicgstab(ctx: _Context) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    eps = torch.finfo(ctx.b.dtype).eps
    x = ctx.x0
    r = ctx.initial_residual()
    r_norm = _norm(r)
    active, status, iters = _start(ctx, r_norm)
    shadow = r
    shadow_norm = r_norm
    ones = torch.ones_like(r_norm)
    rho, alpha, omega = ones, ones, ones
    p = torch.zeros_like(r)
    v = torch.zeros_like(r)
    history = [ctx.relative(r_norm)]
    iteration = 0
    while ctx.keep_going(active, iteration):
        iteration += 1
        rho_new = _dot(shadow, r)
        ok = rho_new.abs() > eps * eps * shadow_norm * r_norm
        status, active = _stop_where(status, active, ok, rho_new)
        beta = _safe_divide(rho_new * alpha, rho * omega, active).unsqueeze(-1)
        p = torch.where(_col(active), r + beta * (p - omega.unsqueeze(-1) * v), p)
        p_hat = ctx.precondition(p)
        v = ctx.apply_a(p_hat)
        shadow_v = _dot(shadow, v)
        ok = (shadow_v != 0) & torch.isfinite(shadow_v)
        status, active = _stop_where(status, active, ok, shadow_v)
        alpha = torch.where(active, _safe_divide(rho_new, shadow_v, active), alpha)
        s = r - alpha.unsqueeze(-1) * v
        s_norm = _norm(s)
        x_half = x + alpha.unsqueeze(-1) * p_hat
        # Systems whose half step already meets the tolerance stop there.
        half_done = active & (s_norm <= ctx.threshold) & _finite_rows(x_half, s)
        x = torch.where(_col(half_done), x_half, x)
        r = torch.where(_col(half_done), s, r)
        r_norm = torch.where(half_done, s_norm, r_norm)
        status = torch.where(half_done, _CONVERGED, status)
        iters = iters + half_done
        active = active & ~half_done
        s_hat = ctx.precondition(s)
        t = ctx.apply_a(s_hat)
        tt = _dot(t, t)
        ok = (tt > 0) & torch.isfinite(tt)
        status, active = _stop_where(status, active, ok, tt)
        omega_new = _safe_divide(_dot(t, s), tt, active)
        x_new = x_half + omega_new.unsqueeze(-1) * s_hat
        r_new = s - omega_new.unsqueeze(-1) * t
        finite = _finite_rows(x_new, r_new)
        status = torch.where(active & ~finite, _NON_FINITE, status)
        active = active & finite
        x = torch.where(_col(active), x_new, x)
        r = torch.where(_col(active), r_new, r)
        iters = iters + active
        r_norm = torch.where(active, _norm(r), r_norm)
        history.append(ctx.relative(r_norm))
        done = active & (r_norm <= ctx.threshold)
        status = torch.where(done, _CONVERGED, status)
        active = active & ~done
        stalled = active & (omega_new == 0)
        status = torch.where(stalled, _BREAKDOWN, status)
        active = active & ~stalled
        rho = torch.where(active, rho_new, rho)
        omega = torch.where(active, omega_new, omega)
    return x, status, iters, torch.stack(history)


def _neumann(ctx: _Context, step: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = ctx.x0
    r = ctx.initial_residual()
    r_norm = _norm(r)
    active, status, iters = _start(ctx, r_norm)
    history = [ctx.relative(r_norm)]
    iteration = 0
    while ctx.keep_going(active, iteration):
        iteration += 1
        increment = step * ctx.precondition(r)
        x_new = x + increment
        r_new = r - ctx.apply_a(increment)
        finite = _finite_rows(x_new, r_new)
        status = torch.where(active & ~finite, _NON_FINITE, status)
        active = active & finite
        x = torch.where(_col(active), x_new, x)
        r = torch.where(_col(active), r_new, r)
        iters = iters + active
        r_norm = torch.where(active, _norm(r), r_norm)
        history.append(ctx.relative(r_norm))
        done = active & (r_norm <= ctx.threshold)
        status = torch.where(done, _CONVERGED, status)
        active = active & ~done
    return x, status, iters, torch.stack(history)


def _gmres(ctx: _Context, restart: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    eps = torch.finfo(ctx.b.dtype).eps
    x = ctx.x0
    r = ctx.initial_residual()
    r_norm = _norm(r)
    active, status, iters = _start(ctx, r_norm)
    history = [ctx.relative(r_norm)]
    total = 0
    first_cycle = True
    while ctx.keep_going(active, total):
        if not first_cycle:  # restart from the true residual
            r = ctx.b - ctx.apply_a(x)
            r_norm = torch.where(active, _norm(r), r_norm)
            done = active & (r_norm <= ctx.threshold)
            status = torch.where(done, _CONVERGED, status)
            active = active & ~done
            history[-1] = ctx.relative(r_norm)
            if not ctx.keep_going(active, total):
                break
        first_cycle = False
        cycle_active = active
        basis = [_safe_divide(r, r_norm.unsqueeze(-1), _col(active))]
        g = [r_norm]  # rotated right-hand side beta e_1
        columns: list[Tensor] = []  # rotated Hessenberg columns, column j of length j + 1
        cosines: list[Tensor] = []
        sines: list[Tensor] = []
        used = torch.zeros_like(iters)  # per system: columns of this cycle that enter its solution
        residual_estimate = r_norm
        for j in range(min(restart, ctx.max_iter - total)):
            if j > 0 and not ctx.keep_going(active, total):
                break
            total += 1
            w = ctx.apply_a(ctx.precondition(basis[j]))
            w_norm = _norm(w)
            stacked = torch.stack(basis, dim=1)  # (batch, j + 1, n)
            h = _project(stacked, w)
            w = w - _combine(stacked, h)
            correction = _project(stacked, w)  # second Gram-Schmidt pass
            w = w - _combine(stacked, correction)
            h = h + correction
            h_next = _norm(w)
            finite = torch.isfinite(h).all(dim=-1) & torch.isfinite(h_next)
            status = torch.where(active & ~finite, _NON_FINITE, status)
            active = active & finite
            h = torch.where(_col(active), h, 0.0)
            h_next = torch.where(active, h_next, 0.0)
            entries = list(h.unbind(dim=-1))
            for i in range(j):
                upper = cosines[i] * entries[i] + sines[i] * entries[i + 1]
                entries[i + 1] = -sines[i] * entries[i] + cosines[i] * entries[i + 1]
                entries[i] = upper
            diagonal = torch.sqrt(entries[j] * entries[j] + h_next * h_next)
            nonzero = diagonal > 0
            c = torch.where(nonzero, _safe_divide(entries[j], diagonal, nonzero), 1.0)
            s = _safe_divide(h_next, diagonal, nonzero)
            entries[j] = diagonal
            cosines.append(c)
            sines.append(s)
            columns.append(torch.stack(entries, dim=-1))
            g.append(torch.where(active, -s * g[j], 0.0))
            g[j] = torch.where(active, c * g[j], g[j])
            # A zero diagonal means A M v_j lies in the span of the basis and adds nothing: the Krylov space is
            # exhausted without reaching b (A singular), a breakdown.
            singular_step = active & ~(diagonal > eps * torch.clamp(w_norm, min=torch.finfo(ctx.b.dtype).tiny))
            status = torch.where(singular_step, _BREAKDOWN, status)
            active = active & ~singular_step
            used = used + active
            iters = iters + active
            residual_estimate = torch.where(active, g[j + 1].abs(), residual_estimate)
            history.append(ctx.relative(residual_estimate))
            done = active & (residual_estimate <= ctx.threshold)
            status = torch.where(done, _CONVERGED, status)
            active = active & ~done
            # A vanishing h_{j+1,j} (invariant subspace) with the tolerance unmet: nothing more to find.
            exhausted = active & ~(h_next > eps * w_norm)
            status = torch.where(exhausted, _BREAKDOWN, status)
            active = active & ~exhausted
            basis.append(_safe_divide(w, h_next.unsqueeze(-1), _col(active)))
        x = x + _gmres_update(ctx, basis, columns, g, used, cycle_active)
    return x, status, iters, torch.stack(history)


def _gmres_update(
    ctx: _Context, basis: list[Tensor], columns: list[Tensor], g: list[Tensor], used: Tensor, cycle_active: Tensor
) -> Tensor:
    """:math:`M V y` with :math:`R y = g`, each system using only its first ``used`` columns (others padded)."""
    k = len(columns)
    if k == 0:
        return torch.zeros_like(ctx.b)
    batch = ctx.b.shape[0]
    dtype, device = ctx.b.dtype, ctx.b.device
    padded = [torch.nn.functional.pad(column, (0, k - column.shape[-1])) for column in columns]
    upper = torch.stack(padded, dim=-1)  # (batch, k, k): column j holds R[:j+1, j]
    index = torch.arange(k, device=device)
    keep = index.unsqueeze(0) < used.unsqueeze(-1)  # (batch, k)
    keep2 = keep.unsqueeze(-1) & keep.unsqueeze(-2)
    eye = torch.eye(k, dtype=dtype, device=device).expand(batch, k, k)
    upper = torch.where(keep2, upper, eye)
    rhs = torch.where(keep, torch.stack(g[:k], dim=-1), 0.0)
    y = torch.linalg.solve_triangular(upper, rhs.unsqueeze(-1), upper=True).squeeze(-1)
    y = torch.where(keep & _col(cycle_active), y, 0.0)
    stacked = torch.stack(basis[:k], dim=1)
    return ctx.precondition(_combine(stacked, y))


def _dense(ctx: _Context, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch = ctx.b.shape[0]
    eye = torch.eye(n, dtype=ctx.b.dtype, device=ctx.b.device)
    columns = [ctx.apply_a(eye[j].expand(batch, n)) for j in range(n)]
    matrix = torch.stack(columns, dim=-1)  # (batch, n, n)
    finite = torch.isfinite(matrix).flatten(1).all(dim=-1)
    matrix = torch.where(finite.view(-1, 1, 1), matrix, 0.0)
    singular_values = torch.linalg.svdvals(matrix)
    eps = torch.finfo(ctx.b.dtype).eps
    singular = ~(singular_values[:, -1] > n * eps * singular_values[:, 0])
    safe_matrix = torch.where(singular.view(-1, 1, 1), torch.eye(n, dtype=matrix.dtype, device=matrix.device), matrix)
    rhs = ctx.initial_residual()
    step = torch.linalg.solve(safe_matrix, rhs.unsqueeze(-1)).squeeze(-1)
    if ctx.transformed or bool(singular.any()):
        least_squares = (torch.linalg.pinv(matrix) @ rhs.unsqueeze(-1)).squeeze(-1)
        step = torch.where(_col(singular), least_squares, step)
    x = ctx.x0 + step
    status = torch.where(singular, _SINGULAR, _CONVERGED)
    status = torch.where(finite, status, _NON_FINITE)
    x = torch.where(_col(finite), x, ctx.x0)
    iters = torch.ones(batch, dtype=torch.int64, device=ctx.b.device)
    r_norm = _norm(rhs)
    history = torch.stack([ctx.relative(r_norm), ctx.relative(_norm(ctx.b - ctx.apply_a(x)))])
    return x, status, iters, history
