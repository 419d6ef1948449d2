r"""Hypergradient estimators: implicit differentiation (CG, Neumann, GMRES), full and truncated unrolling.

For :math:`\Phi(x) = f(x, y^*(x))` with :math:`y^*(x) = \arg\min_y g(x, y)` and :math:`g(x, \cdot)` strongly convex,
the implicit function theorem applied to :math:`\nabla_y g(x, y^*(x)) = 0` gives

.. math::
    \nabla\Phi(x) = \nabla_x f - \nabla^2_{xy} g\, z, \qquad \nabla^2_{yy} g\, z = \nabla_y f,

both evaluated at :math:`(x, y^*(x))`. :func:`hypergradient` evaluates it at an approximate :math:`\hat y`, with
the adjoint system solved matrix-free from Hessian-vector products (double backward, no forward-mode AD), or
differentiates through the inner gradient-descent iterations themselves (reverse-mode unrolling, full or truncated
to the last ``k`` steps).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
from sciml_protocols import SciMLInputError, Solution, check_dtype, check_finite, check_nonempty, check_tensor

from ._linear_solve import linear_solve

__all__ = ["hypergradient"]

Tensor = torch.Tensor
Loss = Callable[[Tensor, Tensor], Tensor]
Method = Literal["implicit_cg", "implicit_neumann", "implicit_gmres", "unrolled", "truncated"]

_METHODS = ("implicit_cg", "implicit_neumann", "implicit_gmres", "unrolled", "truncated")
_SOLVER_OF = {"implicit_cg": "cg", "implicit_neumann": "neumann", "implicit_gmres": "gmres"}


class _HasLosses(Protocol):
    def upper_loss(self, x: Tensor, y: Tensor, batch: Tensor | None = None) -> Tensor: ...

    def lower_loss(self, x: Tensor, y: Tensor, batch: Tensor | None = None) -> Tensor: ...

    def init_lower(self) -> Tensor: ...


class _SavedTensorMeter:
    """Measures what autograd saves for backward (saved_tensors_hooks).

    ``count`` is the number of pack calls. ``nbytes`` is the largest total size, over the calls to :meth:`measure`,
    of the distinct storages that saved tensors still alive at that moment use: called right before a graph is
    consumed, it is the memory the graph holds.
    """

    def __init__(self) -> None:
        self.count = 0
        self.nbytes = 0
        self._saved: list[weakref.ref[Tensor]] = []

    def pack(self, t: Tensor) -> Tensor:
        self.count += 1
        self._saved.append(weakref.ref(t))
        return t

    @staticmethod
    def unpack(t: Tensor) -> Tensor:
        return t

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def measure(self) -> None:
        sizes: dict[int, int] = {}
        alive: list[weakref.ref[Tensor]] = []
        for ref in self._saved:
            t = ref()
            if t is None:
                continue
            alive.append(ref)
            try:
                storage = t.untyped_storage()
                sizes[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without a plain storage
                sizes[id(t)] = t.numel() * t.element_size()
        self._saved = alive
        self.nbytes = max(self.nbytes, sum(sizes.values()))


def hypergradient(
    problem: _HasLosses | tuple[Loss, Loss],
    x: Tensor,
    y: Tensor | None = None,
    *,
    method: Method = "implicit_cg",
    inner_steps: int = 100,
    inner_lr: float = 0.1,
    truncate: int | None = None,
    neumann_terms: int = 100,
    neumann_alpha: float = 1.0,
    tol: float = 1e-10,
    max_iter: int | None = None,
    return_y: bool = True,
    progress: bool = False,
) -> Solution[tuple[Tensor, Tensor | None]]:
    r"""Estimate the hypergradient :math:`\nabla\Phi(x)` of a bilevel problem.

    First the lower level is approximated by ``inner_steps`` steps of gradient descent from ``y`` (or the problem's
    :meth:`init_lower`): :math:`y_{t+1} = y_t - \eta\,\nabla_y g(x, y_t)`, :math:`\eta` = ``inner_lr``; pass an
    accurate ``y`` and ``inner_steps=0`` to use it as it is. Then, with :math:`\hat y = y_T`:

    * ``"implicit_cg"``, ``"implicit_gmres"``, ``"implicit_neumann"``: :math:`\nabla_x f(x,\hat y) -
      \nabla^2_{xy} g(x,\hat y)\, z` where :math:`\nabla^2_{yy} g(x,\hat y)\, z = \nabla_y f(x,\hat y)` is solved
      matrix-free by conjugate gradient, GMRES, or the Neumann series
      :math:`z \approx \alpha\sum_{k<K}(I - \alpha\nabla^2_{yy}g)^k\nabla_y f` (:math:`K` = ``neumann_terms``,
      :math:`\alpha` = ``neumann_alpha``; it needs :math:`\alpha < 2/L`). Hessian-vector products come from double
      backward. The inner iterations are not recorded, so memory does not grow with ``inner_steps``; the error is
      linear in :math:`\|\hat y - y^*(x)\|` plus the linear-solve error (Blondel et al., Theorem 1).
    * ``"unrolled"``: the exact gradient of :math:`x \mapsto f(x, y_T(x))` through all ``inner_steps`` iterations
      (reverse mode, ``create_graph``), memory :math:`O(T)`.
    * ``"truncated"``: the same through the last ``truncate`` iterations only (the first ones are treated as
      constants), memory :math:`O(k)` (Shaban et al.).

    The result is detached: no graph is kept to ``x``.

    Args:
        problem: a :class:`~sciml_bilevel.problems.BilevelProblem` (anything with ``upper_loss(x, y)`` and
            ``lower_loss(x, y)``), or a pair ``(upper_loss, lower_loss)`` of callables ``(x, y) -> scalar``.
        x: the upper variable, a real floating tensor of any shape (1-D for the problems of this package).
        y: starting point of the inner iterations, same dtype and device as ``x``; required with a pair of
            callables, the problem's :meth:`init_lower` when None.
        method: ``"implicit_cg"``, ``"implicit_neumann"``, ``"implicit_gmres"``, ``"unrolled"`` or
            ``"truncated"``.
        inner_steps: gradient-descent steps on :math:`g(x, \cdot)`, ``>= 0`` (``>= 1`` for the unrolled methods).
        inner_lr: inner step size :math:`\eta > 0` (converges for :math:`\eta < 2/L_g`).
        truncate: for ``"truncated"``, the number ``k`` of last steps to differentiate through,
            ``1 <= k <= inner_steps`` (required there, unused otherwise).
        neumann_terms: terms of the Neumann series, ``>= 1`` (the series stops earlier once its residual meets
            ``tol``).
        neumann_alpha: Neumann step :math:`\alpha > 0`.
        tol: relative tolerance of the linear solve, ``> 0``.
        max_iter: iteration cap of CG/GMRES (``linear_solve``'s default when None).
        return_y: return :math:`\hat y` as the second entry of ``value`` (else None there).
        progress: show a tqdm progress bar over the inner steps.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value = (grad, y_hat)``: ``grad`` of the shape of ``x`` and
        :math:`\hat y` (detached; None when ``return_y`` is False). For the implicit methods ``converged``,
        ``n_iter``, ``residual`` (relative) and ``history`` are the linear solve's; for the unrolled ones
        ``converged`` is True (a fixed number of steps has nothing to converge), ``n_iter`` is ``inner_steps``,
        ``residual`` is :math:`\|\nabla_y g(x, \hat y)\|` and ``history`` the inner gradient norms. ``stats``:
        ``method``, ``inner_loss`` (:math:`g(x, \hat y)`), ``inner_grad_norm``, ``upper_loss``
        (:math:`f(x, \hat y)`), ``inner_steps``, ``differentiated_steps``, ``saved_tensor_bytes`` and
        ``saved_tensor_count`` (the bytes of the distinct storages that autograd holds for backward when the graph
        is largest, and the number of tensors it saved; the inner iterations count only when they are
        differentiated), and for the implicit methods ``linear_solve`` (its Solution) and ``n_matvec``.

    Raises:
        SciMLInputError: ``problem`` without the two losses; ``x`` or ``y`` not finite real floating tensors, empty,
            or of different dtype or device; ``y`` missing with callables; an unknown ``method``; a bad
            ``inner_steps``, ``inner_lr``, ``truncate``, ``neumann_terms``, ``neumann_alpha``, ``tol`` or
            ``max_iter``; a loss that does not return a scalar.

    Example:
        >>> from sciml_bilevel.problems import QuadraticBilevel
        >>> problem = QuadraticBilevel(dim=3, seed=0)
        >>> x = torch.ones(3, dtype=torch.float64)
        >>> sol = hypergradient(problem, x, method="implicit_cg", inner_steps=200, inner_lr=0.5)
        >>> grad, y_hat = sol.value
        >>> torch.allclose(grad, problem.hypergradient(x), atol=1e-10)
        True
        >>> unrolled = hypergradient(problem, x, method="unrolled", inner_steps=5, inner_lr=0.5).value[0]
        >>> float((unrolled - problem.hypergradient(x)).norm()) > 1e-3  # 5 steps are not enough
        True

    References:
        Blondel, Berthet, Cuturi, Frostig, Hoyer, Llinares-Lopez, Pedregosa, Vert, "Efficient and Modular Implicit
        Differentiation", NeurIPS 2022, arXiv:2105.15183. Lorraine, Vicol, Duvenaud, "Optimizing Millions of
        Hyperparameters by Implicit Differentiation", AISTATS 2020, arXiv:1911.02590 (Neumann series). Shaban,
        Cheng, Hatch, Boots, "Truncated Back-propagation for Bilevel Optimization", AISTATS 2019,
        arXiv:1810.10667. Franceschi, Donini, Frasconi, Pontil, "Forward and Reverse Gradient-Based
        Hyperparameter Optimization", ICML 2017, arXiv:1703.01785 (unrolling).
    """
    upper, lower, y0 = _resolve_problem(problem, y)
    _check_point("x", x)
    _check_point("y", y0)
    if y0.dtype != x.dtype:
        raise SciMLInputError("y", f"has dtype {y0.dtype} but x has {x.dtype}")
    if y0.device != x.device:
        raise SciMLInputError("y", f"is on {y0.device} but x is on {x.device}")
    if method not in _METHODS:
        raise SciMLInputError("method", f"must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    unrolled = method in ("unrolled", "truncated")
    _check_int("inner_steps", inner_steps, 1 if unrolled else 0)
    _check_real("inner_lr", inner_lr)
    _check_int("neumann_terms", neumann_terms, 1)
    _check_real("neumann_alpha", neumann_alpha)
    _check_real("tol", tol)
    if max_iter is not None:
        _check_int("max_iter", max_iter, 1)
    for flag_name, flag in (("return_y", return_y), ("progress", progress)):
        if not isinstance(flag, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(flag_name, f"must be a bool, got {type(flag).__name__}")
    if method == "truncated":
        if truncate is None:
            raise SciMLInputError("truncate", "is required by method='truncated'")
        _check_int("truncate", truncate, 1)
        if truncate > inner_steps:
            raise SciMLInputError("truncate", f"must be <= inner_steps = {inner_steps}, got {truncate}")
    differentiated = 0 if not unrolled else inner_steps if method == "unrolled" else int(truncate or 0)

    meter = _SavedTensorMeter()
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        y_hat, grad_norms = _inner_loop(
            lower, x_leaf, y0.detach(), inner_steps, inner_lr, differentiated, meter, progress
        )
        if unrolled:
            with meter.hooks():
                upper_value = _scalar("upper_loss", upper(x_leaf, y_hat))
            meter.measure()
            (grad,) = torch.autograd.grad(upper_value, x_leaf, allow_unused=True)
            grad = torch.zeros_like(x_leaf) if grad is None else grad
            y_out = y_hat.detach()
            inner_value, inner_grad = _lower_value_and_grad(lower, x_leaf.detach(), y_out)
            inner_norm = torch.linalg.vector_norm(inner_grad)
            grad_norms.append(inner_norm)
            history = torch.stack(grad_norms)
            stats: dict[str, Any] = {}
            converged, n_iter, residual = True, inner_steps, inner_norm
        else:
            y_out = y_hat.detach()
            grad, upper_value, inner_value, inner_grad, solve = _implicit(
                upper, lower, x_leaf, y_out, _SOLVER_OF[method], neumann_terms, neumann_alpha, tol, max_iter, meter
            )
            inner_norm = torch.linalg.vector_norm(inner_grad)
            stats = {"linear_solve": solve, "n_matvec": solve.stats.get("n_matvec")}
            converged, n_iter, residual, history = solve.converged, solve.n_iter, solve.residual, solve.history
    stats.update(
        method=method,
        inner_loss=float(inner_value),
        inner_grad_norm=float(inner_norm),
        upper_loss=float(upper_value.detach()),
        saved_tensor_bytes=meter.nbytes,
        saved_tensor_count=meter.count,
        inner_steps=inner_steps,
        differentiated_steps=differentiated,
    )
    return Solution(
        value=(grad.detach(), y_out if return_y else None),
        converged=converged,
        n_iter=n_iter,
        residual=residual.detach() if isinstance(residual, Tensor) else residual,
        history=None if history is None else history.detach(),
        stats=stats,
    )


def _resolve_problem(problem: object, y: Tensor | None) -> tuple[Loss, Loss, Tensor]:
    if isinstance(problem, tuple):
        pair: tuple[object, ...] = problem  # pyright: ignore[reportUnknownVariableType]
        if len(pair) != 2 or not all(callable(p) for p in pair):
            raise SciMLInputError("problem", "a tuple must hold two callables (upper_loss, lower_loss)")
        if y is None:
            raise SciMLInputError("y", "is required when problem is a pair of callables")
        upper_fn, lower_fn = pair
        return upper_fn, lower_fn, y  # pyright: ignore[reportReturnType]
    upper_fn = getattr(problem, "upper_loss", None)
    lower_fn = getattr(problem, "lower_loss", None)
    if not callable(upper_fn) or not callable(lower_fn):
        raise SciMLInputError(
            "problem", f"must be a BilevelProblem or a pair of callables, got {type(problem).__name__}"
        )
    if y is None:
        init = getattr(problem, "init_lower", None)
        if not callable(init):
            raise SciMLInputError("y", "is required: the problem has no init_lower()")
        y = check_tensor("y", init())
    return upper_fn, lower_fn, y  # pyright: ignore[reportReturnType]


def _check_point(name: str, t: object) -> None:
    t = check_tensor(name, t)
    check_dtype(name, t)
    check_nonempty(name, t)
    check_finite(name, t)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")


def _check_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < float("inf")):
        raise SciMLInputError(name, f"must be a finite number > 0, got {value!r}")


def _scalar(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise SciMLInputError(name, f"must return a scalar tensor, got {shape}")
    return value.reshape(())


def _lower_value_and_grad(lower: Loss, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        y_leaf = y.detach().requires_grad_(True)
        value = _scalar("lower_loss", lower(x, y_leaf))
        (grad,) = torch.autograd.grad(value, y_leaf, allow_unused=True)
    return value.detach(), torch.zeros_like(y_leaf) if grad is None else grad


def _inner_loop(
    lower: Loss,
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    differentiated: int,
    meter: _SavedTensorMeter,
    progress: bool,
) -> tuple[Tensor, list[Tensor]]:
    """Gradient descent on g(x, .); the last ``differentiated`` steps keep their graph to ``x``."""
    iterator: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="inner steps", leave=False)
    norms: list[Tensor] = []
    x_const = x.detach()
    for step in iterator:
        if step < steps - differentiated:
            value, grad = _lower_value_and_grad(lower, x_const, y)
            y = (y - lr * grad).detach()
        else:
            with meter.hooks():
                if not y.requires_grad:
                    y = y.detach().requires_grad_(True)
                value = _scalar("lower_loss", lower(x, y))
                (grad_or_none,) = torch.autograd.grad(value, y, create_graph=True, allow_unused=True)
                grad = torch.zeros_like(y) if grad_or_none is None else grad_or_none
                y = y - lr * grad
        norms.append(torch.linalg.vector_norm(grad.detach()))
    return y, norms


def _implicit(
    upper: Loss,
    lower: Loss,
    x: Tensor,
    y: Tensor,
    solver: str,
    neumann_terms: int,
    neumann_alpha: float,
    tol: float,
    max_iter: int | None,
    meter: _SavedTensorMeter,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Solution[Tensor]]:
    y_leaf = y.detach().requires_grad_(True)
    with meter.hooks():
        upper_value = _scalar("upper_loss", upper(x, y_leaf))
        grad_x_f, grad_y_f = torch.autograd.grad(upper_value, (x, y_leaf), allow_unused=True)
        lower_value = _scalar("lower_loss", lower(x, y_leaf))
        (grad_y_g,) = torch.autograd.grad(lower_value, y_leaf, create_graph=True, allow_unused=True)
    grad_x_f = torch.zeros_like(x) if grad_x_f is None else grad_x_f
    grad_y_f = torch.zeros_like(y_leaf) if grad_y_f is None else grad_y_f
    if grad_y_g is None or not grad_y_g.requires_grad:
        raise SciMLInputError("problem", "lower_loss must depend (twice differentiably) on y")

    def hvp(v: Tensor) -> Tensor:
        (out,) = torch.autograd.grad(grad_y_g, y_leaf, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    meter.measure()
    if solver == "neumann":
        solve = linear_solve(
            hvp, grad_y_f.detach(), method="neumann", tol=tol, max_iter=neumann_terms, neumann_alpha=neumann_alpha
        )
    else:
        solve = linear_solve(hvp, grad_y_f.detach(), method=solver, tol=tol, max_iter=max_iter)
    (cross,) = torch.autograd.grad(grad_y_g, x, solve.value, allow_unused=True)
    grad = grad_x_f - (torch.zeros_like(x) if cross is None else cross)
    return grad, upper_value, lower_value.detach(), grad_y_g.detach(), solve
