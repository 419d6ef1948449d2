r"""The catalogue of optimality mappings: the conditions that define the solution of an inner problem.

Implicit differentiation needs only a function :math:`F` with :math:`F(z^\star(\theta), \theta) = 0` at the
solution. Blondel et al. show that most solvers' outputs are characterized by a few generic mappings, each built
from the inner objective :math:`f(z, \theta)` and, where needed, a proximal operator, a projection, constraints or
a mirror map:

=================================  =====================================================================
``gradient_stationarity``          :math:`F(z, \theta) = \nabla_1 f(z, \theta)` (root form)
``prox_gradient_fixed_point``      :math:`T(z, \theta) = \operatorname{prox}_{\eta g}(z - \eta \nabla_1 f(z, \theta))`
``projected_gradient_fixed_point`` :math:`T(z, \theta) = \operatorname{proj}_C(z - \eta \nabla_1 f(z, \theta))`
``kkt_optimality``                 :math:`F(z, \theta) = (\nabla_1 f + \partial_1 H^\top \nu + \partial_1 G^\top
                                   \lambda,\ H,\ \lambda \circ G)`, :math:`z = (x, \nu, \lambda)` (root form)
``mirror_descent_fixed_point``     :math:`T(z, \theta) = \operatorname{proj}^\varphi_C(\nabla\varphi^*(\nabla\varphi(z)
                                   - \eta \nabla_1 f(z, \theta)))`
=================================  =====================================================================

Returned objects. Each function returns an object that is at the same time

* a plain callable with jaxopt's convention: ``F(z, *theta)`` for the root forms, ``T(z, *theta)`` for the
  fixed-point forms (so it can be handed to ``custom_root`` / ``custom_fixed_point``), and
* a :class:`sciml_protocols.OptimalityCondition`: :class:`RootMapping` subclasses
  :class:`sciml_protocols.RootCondition` and :class:`FixedPointMapping` subclasses
  :class:`sciml_protocols.FixedPointCondition`, so ``.kind``, ``.residual`` (always the root form, ``T - z`` for
  fixed points), ``.map`` and ``.is_satisfied`` work as for any condition.

The KKT mapping is the exception in one respect: its ``z`` and its residual are tuples ``(x, nu, lam)``, which the
tensor-only :class:`~sciml_protocols.RootCondition` cannot hold, so :class:`KKTCondition` implements the protocol's
``kind``/``residual`` itself (``isinstance(..., OptimalityCondition)`` holds at run time), and
:meth:`KKTCondition.flatten` gives an ordinary :class:`RootMapping` on the concatenated vector
``cat(x, nu, lam)``.

How ``theta`` is split. The objective is always called as ``f(z, *objective_args)``.

* ``gradient_stationarity`` and ``mirror_descent_fixed_point``: every ``theta`` goes to the objective.
* ``prox_gradient_fixed_point`` / ``projected_gradient_fixed_point`` follow jaxopt's
  ``fixed_point_fun(params, hyperparams_prox, *args)``: the first ``n_prox_args`` (``n_projection_args``, default
  1) entries of ``theta`` are the hyperparameters of the proximal operator (projection), the rest go to the
  objective. With one, the prox receives it as is (a tensor, a number or a tuple); with several (e.g. the two
  strengths of the elastic net as two separate tensors, so both can be differentiated), it receives them as a
  tuple; with zero it receives ``None``.
* ``kkt_optimality`` follows jaxopt's ``make_kkt_optimality_fun``: ``theta = (objective_params, eq_params,
  ineq_params)`` (trailing ones may be omitted); each slot is passed to its own function after ``x``: ``None``
  passes nothing, a tuple is unpacked, anything else is passed as one argument.

Gradients are taken with :func:`torch.autograd.grad`; when ``z`` or any tensor in ``theta`` requires grad (and grad
mode is on) they are taken with ``create_graph=True``, so the mappings are differentiable in ``z`` and ``theta``:
implicit differentiation takes vector-Jacobian products of them. Inside ``torch.func`` transforms (``vjp``,
``jvp``, ``vmap``, ``jacrev``...) they switch to :func:`torch.func.grad`, so they compose with those too.

Reference:
    M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-López, F. Pedregosa, J.-P. Vert,
    "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183 (section 2.2 and
    appendix on the catalogue of mappings; jaxopt's ``jaxopt._src.optimality`` and ``implicit_diff``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from sciml_protocols import FixedPointCondition, RootCondition, SciMLInputError, check_tensor

__all__ = [
    "FixedPointMapping",
    "KKTCondition",
    "RootMapping",
    "gradient_stationarity",
    "kkt_optimality",
    "mirror_descent_fixed_point",
    "projected_gradient_fixed_point",
    "prox_gradient_fixed_point",
]

StepSize = float | torch.Tensor
Mirror = str | Sequence[Callable[..., torch.Tensor] | None]


class RootMapping(RootCondition):
    r"""A root-form condition :math:`F(z, \theta) = 0` that is also the callable ``F(z, *theta)``.

    Args:
        fn: ``F(z, *theta) -> tensor`` of the shape of ``z``, differentiable in both.
        name: a short description used in ``repr``.

    Example:
        >>> F = RootMapping(lambda z, t: z - t, name="identity")
        >>> F(torch.tensor([1.0]), torch.tensor([1.0])), F.kind
        (tensor([0.]), 'root')
    """

    def __init__(self, fn: Callable[..., torch.Tensor], *, name: str = "root mapping") -> None:
        super().__init__(fn)
        self.name = name

    def __call__(self, z: torch.Tensor, *theta: Any) -> torch.Tensor:
        """``F(z, *theta)``, the same as :meth:`residual`."""
        return self.residual(z, *theta)

    def __repr__(self) -> str:
        return f"RootMapping({self.name})"


class FixedPointMapping(FixedPointCondition):
    r"""A fixed-point condition :math:`z = T(z, \theta)` that is also the callable ``T(z, *theta)``.

    Calling it returns :math:`T` (jaxopt's ``fixed_point_fun``); :meth:`residual` returns :math:`T(z, \theta) - z`.

    Args:
        fn: ``T(z, *theta) -> tensor`` of the shape of ``z``, differentiable in both.
        name: a short description used in ``repr``.

    Example:
        >>> T = FixedPointMapping(lambda z, t: 0.5 * z + t, name="contraction")
        >>> T(torch.tensor([2.0]), torch.tensor([1.0])), T.kind
        (tensor([2.]), 'fixed_point')
    """

    def __init__(self, fn: Callable[..., torch.Tensor], *, name: str = "fixed-point mapping") -> None:
        super().__init__(fn)
        self.name = name

    def __call__(self, z: torch.Tensor, *theta: Any) -> torch.Tensor:
        """``T(z, *theta)``, the same as :meth:`map`."""
        return self.map(z, *theta)

    def __repr__(self) -> str:
        return f"FixedPointMapping({self.name})"


def _check_callable(name: str, fn: object) -> None:
    if not callable(fn):
        raise SciMLInputError(name, f"must be callable, got {type(fn).__name__}")


def _check_step_size(step_size: object) -> StepSize:
    if isinstance(step_size, torch.Tensor):
        return step_size
    if isinstance(step_size, bool) or not isinstance(step_size, int | float):
        raise SciMLInputError("step_size", f"must be a number or a tensor, got {type(step_size).__name__}")
    if not math.isfinite(step_size) or step_size <= 0:
        raise SciMLInputError("step_size", f"must be finite and > 0, got {step_size}")
    return float(step_size)


def _check_count(name: str, count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise SciMLInputError(name, f"must be an integer >= 0, got {count!r}")
    return count


def _any_requires_grad(values: object) -> bool:
    if isinstance(values, torch.Tensor):
        return values.requires_grad
    if isinstance(values, tuple | list):
        return any(_any_requires_grad(v) for v in values)  # pyright: ignore[reportUnknownVariableType]
    return False


def _transforms_active() -> bool:
    """Whether a torch.func transform is on the interpreter stack."""
    return torch._C._functorch.peek_interpreter_stack() is not None  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue]


def _scalar_value(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise SciMLInputError(name, f"must return a scalar tensor, returned {shape}")
    return value.reshape(())


def _gradient(
    objective: Callable[..., torch.Tensor], z: torch.Tensor, args: Sequence[Any], *, outer_grad: bool
) -> torch.Tensor:
    r""":math:`\nabla_z f(z, *args)`, kept in the autograd graph when something upstream needs it."""
    if _transforms_active():
        # Inside torch.func transforms (vjp, jvp, vmap, ...) torch.autograd.grad cannot see the transformed
        # tensors; the functional gradient composes with them instead.
        def value_of(z_arg: torch.Tensor) -> torch.Tensor:
            return _scalar_value("objective", objective(z_arg, *args))

        return torch.func.grad(value_of)(z)
    with torch.enable_grad():
        z_in = z if z.requires_grad else z.detach().requires_grad_(True)
        value = _scalar_value("objective", objective(z_in, *args))
        if not value.requires_grad:
            # The objective does not depend on z (as autograd sees it): its gradient is zero.
            return torch.zeros_like(z)
        keep_graph = outer_grad and (z.requires_grad or _any_requires_grad(args))
        (grad,) = torch.autograd.grad(value, z_in, create_graph=keep_graph, allow_unused=True)
    return torch.zeros_like(z) if grad is None else grad


def _split(name: str, theta: tuple[Any, ...], count: int) -> tuple[Any, tuple[Any, ...]]:
    if len(theta) < count:
        raise SciMLInputError("theta", f"needs at least {count} entries for the {name}, got {len(theta)}")
    head = theta[:count]
    params: Any = None if count == 0 else head[0] if count == 1 else tuple(head)
    return params, theta[count:]


def gradient_stationarity(objective: Callable[..., torch.Tensor]) -> RootMapping:
    r"""Stationarity of an unconstrained inner problem, :math:`F(z, \theta) = \nabla_1 f(z, \theta)`.

    It characterizes :math:`z^\star(\theta) = \arg\min_z f(z, \theta)` for smooth :math:`f`; the gradient-descent
    fixed point :math:`T = z - \eta \nabla_1 f` has the same roots for every :math:`\eta > 0`.

    Args:
        objective: ``f(z, *theta) -> scalar tensor``, differentiable in ``z`` (and in ``theta`` for implicit
            differentiation).

    Returns:
        A :class:`RootMapping`: callable as ``F(z, *theta)`` (same shape as ``z``) and a
        :class:`sciml_protocols.RootCondition`.

    Raises:
        SciMLInputError: if ``objective`` is not callable; when called, if it does not return a scalar tensor.

    Example:
        >>> # ridge: f(w, lam) = 0.5 ||w - 1||^2 + 0.5 lam ||w||^2, so w* = 1 / (1 + lam)
        >>> F = gradient_stationarity(lambda w, lam: 0.5 * ((w - 1) ** 2).sum() + 0.5 * lam * (w**2).sum())
        >>> F(torch.tensor([0.5, 0.5]), torch.tensor(1.0))
        tensor([0., 0.])

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    _check_callable("objective", objective)

    def stationarity(z: torch.Tensor, *theta: Any) -> torch.Tensor:
        check_tensor("z", z)
        return _gradient(objective, z, theta, outer_grad=torch.is_grad_enabled())

    return RootMapping(stationarity, name="gradient stationarity")


def prox_gradient_fixed_point(
    objective: Callable[..., torch.Tensor],
    prox: Callable[..., torch.Tensor],
    step_size: StepSize = 1.0,
    *,
    n_prox_args: int = 1,
) -> FixedPointMapping:
    r"""The proximal-gradient fixed point of :math:`\min_z f(z, \theta) + g(z, \theta)`.

    .. math:: T(z, \theta) = \operatorname{prox}_{\eta g(\cdot, \theta_g)}\big(z - \eta \nabla_1 f(z, \theta_f)\big),

    whose fixed points are the minimizers for every :math:`\eta > 0` (for convex :math:`f, g`). ``T`` is called as
    ``T(z, *theta)`` with ``theta = (*prox_args, *objective_args)``: the first ``n_prox_args`` entries are handed
    to ``prox(v, hyper_params, scaling=step_size)`` (one entry as is, several as a tuple, none as ``None``) and the
    rest to ``objective(z, *objective_args)``.

    Args:
        objective: the smooth part, ``f(z, *objective_args) -> scalar tensor``.
        prox: ``prox(v, hyper_params, scaling) -> tensor`` of the shape of ``v``, e.g. a function of
            :mod:`sciml_bilevel._prox` (jaxopt's signature).
        step_size: :math:`\eta > 0` (a number, or a tensor whose value is not checked).
        n_prox_args: how many leading entries of ``theta`` belong to the proximal operator.

    Returns:
        A :class:`FixedPointMapping`: callable as ``T(z, *theta)`` and a
        :class:`sciml_protocols.FixedPointCondition` (``residual`` is ``T - z``).

    Raises:
        SciMLInputError: if ``objective`` or ``prox`` is not callable, ``step_size`` is not positive or
            ``n_prox_args`` is negative; when called, if ``theta`` has fewer than ``n_prox_args`` entries.

    Example:
        >>> from sciml_bilevel._prox import prox_l1
        >>> # f(z) = 0.5 ||z - a||^2 + lam ||z||_1 has z* = soft_threshold(a, lam)
        >>> T = prox_gradient_fixed_point(lambda z, a: 0.5 * ((z - a) ** 2).sum(), prox_l1)
        >>> a = torch.tensor([3.0, -0.5])
        >>> T(torch.tensor([2.0, 0.0]), 1.0, a)
        tensor([2., 0.])

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    _check_callable("objective", objective)
    _check_callable("prox", prox)
    step = _check_step_size(step_size)
    count = _check_count("n_prox_args", n_prox_args)

    def fixed_point(z: torch.Tensor, *theta: Any) -> torch.Tensor:
        check_tensor("z", z)
        prox_params, objective_args = _split("proximal operator", theta, count)
        outer_grad = torch.is_grad_enabled()
        grad = _gradient(objective, z, objective_args, outer_grad=outer_grad)
        return prox(z - step * grad, prox_params, step)

    return FixedPointMapping(fixed_point, name=f"prox-gradient, prox={getattr(prox, '__name__', prox)!s}")


def projected_gradient_fixed_point(
    objective: Callable[..., torch.Tensor],
    projection: Callable[..., torch.Tensor],
    step_size: StepSize = 1.0,
    *,
    n_projection_args: int = 1,
) -> FixedPointMapping:
    r"""The projected-gradient fixed point of :math:`\min_{z \in C(\theta)} f(z, \theta)`.

    .. math:: T(z, \theta) = \operatorname{proj}_{C(\theta_C)}\big(z - \eta \nabla_1 f(z, \theta_f)\big).

    ``T`` is called as ``T(z, *theta)`` with ``theta = (*projection_args, *objective_args)``: the first
    ``n_projection_args`` entries are handed to ``projection(v, hyper_params)`` (one as is, several as a tuple,
    none as ``None``) and the rest to the objective.

    Args:
        objective: ``f(z, *objective_args) -> scalar tensor``.
        projection: ``projection(v, hyper_params) -> tensor`` of the shape of ``v``, e.g. a function of
            :mod:`sciml_bilevel._projections` (jaxopt's signature).
        step_size: :math:`\eta > 0`.
        n_projection_args: how many leading entries of ``theta`` describe the set.

    Returns:
        A :class:`FixedPointMapping` (callable ``T(z, *theta)``, and a :class:`sciml_protocols.FixedPointCondition`).

    Raises:
        SciMLInputError: if ``objective`` or ``projection`` is not callable, ``step_size`` is not positive or
            ``n_projection_args`` is negative; when called, if ``theta`` is too short.

    Example:
        >>> from sciml_bilevel._projections import project_nonnegative
        >>> # min_{z >= 0} 0.5 ||z - a||^2 has z* = max(a, 0)
        >>> T = projected_gradient_fixed_point(lambda z, a: 0.5 * ((z - a) ** 2).sum(), project_nonnegative)
        >>> T(torch.tensor([1.0, 0.0]), None, torch.tensor([1.0, -2.0]))
        tensor([1., 0.])

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    _check_callable("objective", objective)
    _check_callable("projection", projection)
    step = _check_step_size(step_size)
    count = _check_count("n_projection_args", n_projection_args)

    def fixed_point(z: torch.Tensor, *theta: Any) -> torch.Tensor:
        check_tensor("z", z)
        projection_params, objective_args = _split("projection", theta, count)
        grad = _gradient(objective, z, objective_args, outer_grad=torch.is_grad_enabled())
        return projection(z - step * grad, projection_params)

    name = f"projected gradient, projection={getattr(projection, '__name__', projection)!s}"
    return FixedPointMapping(fixed_point, name=name)


def _entropic_step(z: torch.Tensor, grad: torch.Tensor, step: StepSize) -> torch.Tensor:
    # z * exp(-step * grad), normalized along the last dimension: softmax(log z - step * grad) written without the
    # logarithm, so it stays finite and differentiable where entries of z are zero. The shift by the maximum is a
    # constant per slice, which cancels in the normalization (detached: it changes no derivative).
    logits = -step * grad
    logits = logits - logits.amax(dim=-1, keepdim=True).detach()
    weights = z * torch.exp(logits)
    return weights / weights.sum(dim=-1, keepdim=True)


def _mirror_update(mirror: object, step: StepSize) -> tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The name and the map ``(z, grad) -> next z`` of a mirror-descent step."""
    if isinstance(mirror, str):
        if mirror == "entropy":

            def entropic(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
                return _entropic_step(z, grad, step)

            return "entropy", entropic
        if mirror == "euclidean":

            def euclidean(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
                return z - step * grad

            return "euclidean", euclidean
        raise SciMLInputError("mirror", f"must be 'entropy', 'euclidean' or a tuple of callables, got {mirror!r}")
    if not isinstance(mirror, tuple | list) or len(mirror) not in (2, 3):  # pyright: ignore[reportUnknownArgumentType]
        raise SciMLInputError(
            "mirror", "must be a name or a tuple (grad_phi, grad_phi_conjugate[, bregman_projection])"
        )
    parts: list[Any] = list(mirror)  # pyright: ignore[reportUnknownArgumentType]
    forward, backward = parts[0], parts[1]
    project = parts[2] if len(parts) == 3 else None
    _check_callable("mirror[0] (grad_phi)", forward)
    _check_callable("mirror[1] (grad_phi_conjugate)", backward)
    if project is not None:
        _check_callable("mirror[2] (bregman_projection)", project)

    def custom(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        out = backward(forward(z) - step * grad)
        return out if project is None else project(out)

    return "custom", custom


def mirror_descent_fixed_point(
    objective: Callable[..., torch.Tensor], mirror: Mirror = "entropy", step_size: StepSize = 1.0
) -> FixedPointMapping:
    r"""The mirror-descent fixed point of :math:`\min_{z \in C} f(z, \theta)`.

    .. math::
        T(z, \theta) = \operatorname{proj}^{\varphi}_C\Big(\nabla \varphi^*\big(\nabla\varphi(z)
        - \eta \nabla_1 f(z, \theta)\big)\Big),

    with :math:`\varphi` a mirror map, :math:`\nabla\varphi^*` the inverse of its gradient and
    :math:`\operatorname{proj}^\varphi_C` the Bregman projection onto :math:`C` for the divergence of
    :math:`\varphi`. Built in:

    * ``"entropy"``: negative entropy :math:`\varphi(z) = \sum_i z_i \log z_i` on the probability simplex (along
      the last dimension of ``z``), whose Bregman (KL) projection is a normalization:
      :math:`T(z) = z \odot e^{-\eta \nabla_1 f} / \langle z, e^{-\eta \nabla_1 f}\rangle` (exponentiated
      gradient). Its fixed points in the relative interior of the simplex are the minimizers.
    * ``"euclidean"``: :math:`\varphi = \tfrac12\|z\|^2` without constraint, :math:`T = z - \eta \nabla_1 f`.

    A custom mirror is a tuple ``(grad_phi, grad_phi_conjugate)`` or
    ``(grad_phi, grad_phi_conjugate, bregman_projection)`` of tensor-to-tensor functions (a ``None`` projection
    means no constraint). Every ``theta`` goes to the objective.

    Args:
        objective: ``f(z, *theta) -> scalar tensor``.
        mirror: ``"entropy"``, ``"euclidean"`` or a tuple of callables as above.
        step_size: :math:`\eta > 0`.

    Returns:
        A :class:`FixedPointMapping` (callable ``T(z, *theta)``, and a :class:`sciml_protocols.FixedPointCondition`).

    Raises:
        SciMLInputError: if ``objective`` is not callable, ``mirror`` is an unknown name or not a tuple of two or
            three callables, or ``step_size`` is not positive.

    Example:
        >>> # f(z) = <c, z> + sum z log z on the simplex has z* = softmax(-c)
        >>> c = torch.tensor([0.0, 1.0, 2.0])
        >>> T = mirror_descent_fixed_point(lambda z, c: (c * z).sum() + (z * z.log()).sum())
        >>> z_star = torch.softmax(-c, dim=0)
        >>> bool(torch.allclose(T(z_star, c), z_star))
        True

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183;
        A. Beck, M. Teboulle, "Mirror descent and nonlinear projected subgradient methods for convex
        optimization", Operations Research Letters, 2003.
    """
    _check_callable("objective", objective)
    step = _check_step_size(step_size)
    name, update = _mirror_update(mirror, step)

    def fixed_point(z: torch.Tensor, *theta: Any) -> torch.Tensor:
        check_tensor("z", z)
        grad = _gradient(objective, z, theta, outer_grad=torch.is_grad_enabled())
        return update(z, grad)

    return FixedPointMapping(fixed_point, name=f"mirror descent, mirror={name}")


def _as_args(slot: object) -> tuple[Any, ...]:
    if slot is None:
        return ()
    if isinstance(slot, tuple):
        return slot  # pyright: ignore[reportUnknownVariableType]
    return (slot,)


KKTVariables = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class KKTCondition:
    r"""The KKT residual of :math:`\min_x f(x, \theta)` s.t. :math:`H(x, \theta) = 0`, :math:`G(x, \theta) \le 0`.

    .. math::
        F(z, \theta) = \big(\nabla_1 f(x, \theta) + \partial_1 H(x, \theta)^\top \nu
        + \partial_1 G(x, \theta)^\top \lambda,\ H(x, \theta),\ \lambda \circ G(x, \theta)\big),
        \qquad z = (x, \nu, \lambda).

    Called as ``F(z, objective_params=None, eq_params=None, ineq_params=None)`` with ``z = (x, nu, lam)`` a tuple;
    ``nu`` (``lam``) must be ``None`` when there are no equality (inequality) constraints, and the matching entry
    of the returned tuple is then ``None``. Each params slot goes to its function after ``x``: ``None`` passes
    nothing, a tuple is unpacked, anything else is passed as one argument. ``nu`` and ``lam`` have the shapes of
    :math:`H(x)` and :math:`G(x)`.

    It satisfies the :class:`sciml_protocols.OptimalityCondition` protocol at run time (``kind == "root"``,
    ``residual``), with tuples in place of tensors; :meth:`flatten` gives a tensor-valued :class:`RootMapping` on
    ``cat(x, nu, lam)`` for solvers that need one tensor.

    Args:
        objective: ``f(x, *objective_args) -> scalar tensor``.
        eq_constraints: ``H(x, *eq_args) -> tensor`` or ``None``.
        ineq_constraints: ``G(x, *ineq_args) -> tensor`` or ``None``.

    Example:
        >>> kkt = kkt_optimality(lambda x: (x**2).sum(), eq_constraints=lambda x: x.sum(dim=0, keepdim=True) - 1)
        >>> x, nu = torch.tensor([0.5, 0.5]), torch.tensor([-1.0])  # min ||x||^2 s.t. x1 + x2 = 1
        >>> kkt((x, nu, None))
        (tensor([0., 0.]), tensor([0.]), None)
    """

    kind = "root"

    def __init__(
        self,
        objective: Callable[..., torch.Tensor],
        eq_constraints: Callable[..., torch.Tensor] | None = None,
        ineq_constraints: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        _check_callable("objective", objective)
        if eq_constraints is not None:
            _check_callable("eq_constraints", eq_constraints)
        if ineq_constraints is not None:
            _check_callable("ineq_constraints", ineq_constraints)
        self.objective = objective
        self.eq_constraints = eq_constraints
        self.ineq_constraints = ineq_constraints

    def __repr__(self) -> str:
        parts = ["objective"]
        if self.eq_constraints is not None:
            parts.append("equalities")
        if self.ineq_constraints is not None:
            parts.append("inequalities")
        return f"KKTCondition({', '.join(parts)})"

    def _unpack(self, z: object) -> KKTVariables:
        if not isinstance(z, tuple | list) or len(z) != 3:  # pyright: ignore[reportUnknownArgumentType]
            raise SciMLInputError("z", "must be a tuple (x, nu, lam)")
        x: Any = z[0]  # pyright: ignore[reportUnknownVariableType]
        nu: Any = z[1]  # pyright: ignore[reportUnknownVariableType]
        lam: Any = z[2]  # pyright: ignore[reportUnknownVariableType]
        check_tensor("z[0] (x)", x)
        for label, value, present in (
            ("z[1] (nu)", nu, self.eq_constraints is not None),
            ("z[2] (lam)", lam, self.ineq_constraints is not None),
        ):
            if present:
                check_tensor(label, value)
            elif value is not None:
                raise SciMLInputError(label, "must be None when there are no such constraints")
        return x, nu, lam

    def residual(self, z: KKTVariables, *theta: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``F(z, *theta)`` as the tuple (stationarity, primal feasibility, complementary slackness)."""
        x, nu, lam = self._unpack(z)
        if len(theta) > 3:
            raise SciMLInputError("theta", f"takes at most 3 entries (objective, eq, ineq params), got {len(theta)}")
        slots = tuple(theta) + (None,) * (3 - len(theta))
        objective_args, eq_args, ineq_args = (_as_args(slot) for slot in slots)
        if _transforms_active():
            return self._functional_residual(x, nu, lam, objective_args, eq_args, ineq_args)
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            lagrangian = _scalar_value("objective", self.objective(x_in, *objective_args))
            eq_value: torch.Tensor | None = None
            ineq_value: torch.Tensor | None = None
            if self.eq_constraints is not None and nu is not None:
                eq_value = check_tensor("eq_constraints output", self.eq_constraints(x_in, *eq_args))
                _check_dual("z[1] (nu)", nu, eq_value)
                lagrangian = lagrangian + (nu * eq_value).sum()
            if self.ineq_constraints is not None and lam is not None:
                ineq_value = check_tensor("ineq_constraints output", self.ineq_constraints(x_in, *ineq_args))
                _check_dual("z[2] (lam)", lam, ineq_value)
                lagrangian = lagrangian + (lam * ineq_value).sum()
            keep_graph = outer_grad and _any_requires_grad((x, nu, lam, *theta))
            if not x.requires_grad and keep_graph:
                # The values above depend on the internal leaf x_in; recompute them from x itself so that only
                # their dependence on theta (and the duals) is kept.
                if eq_value is not None and self.eq_constraints is not None:
                    eq_value = self.eq_constraints(x, *eq_args)
                if ineq_value is not None and self.ineq_constraints is not None:
                    ineq_value = self.ineq_constraints(x, *ineq_args)
            elif not keep_graph:
                eq_value = None if eq_value is None else eq_value.detach()
                ineq_value = None if ineq_value is None else ineq_value.detach()
            if lagrangian.requires_grad:
                (stationarity,) = torch.autograd.grad(lagrangian, x_in, create_graph=keep_graph, allow_unused=True)
                if stationarity is None:
                    stationarity = torch.zeros_like(x)
            else:
                stationarity = torch.zeros_like(x)
        complementarity = None if ineq_value is None or lam is None else lam * ineq_value
        return stationarity, eq_value, complementarity

    def _functional_residual(
        self,
        x: torch.Tensor,
        nu: torch.Tensor | None,
        lam: torch.Tensor | None,
        objective_args: tuple[Any, ...],
        eq_args: tuple[Any, ...],
        ineq_args: tuple[Any, ...],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The residual with torch.func.grad, for use inside torch.func transforms."""
        eq_fun, ineq_fun = self.eq_constraints, self.ineq_constraints

        def lagrangian(x_arg: torch.Tensor) -> torch.Tensor:
            value = _scalar_value("objective", self.objective(x_arg, *objective_args))
            if eq_fun is not None and nu is not None:
                value = value + (nu * eq_fun(x_arg, *eq_args)).sum()
            if ineq_fun is not None and lam is not None:
                value = value + (lam * ineq_fun(x_arg, *ineq_args)).sum()
            return value

        stationarity = torch.func.grad(lagrangian)(x)
        eq_value = None if eq_fun is None or nu is None else eq_fun(x, *eq_args)
        ineq_value = None if ineq_fun is None or lam is None else ineq_fun(x, *ineq_args)
        complementarity = None if ineq_value is None or lam is None else lam * ineq_value
        return stationarity, eq_value, complementarity

    def __call__(self, z: KKTVariables, *theta: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``F(z, *theta)``, the same as :meth:`residual`."""
        return self.residual(z, *theta)

    def is_satisfied(self, z: KKTVariables, *theta: Any, tol: float = 1e-6) -> bool:
        """Whether ``||F(z, theta)|| <= tol * max(1, ||z||)`` over all parts, and the duals of inequalities are >= 0.

        Primal feasibility of the inequalities (``G <= 0``) is checked with the same tolerance.
        """
        if not (isinstance(tol, int | float) and tol > 0):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("tol", f"must be > 0, got {tol!r}")
        x, nu, lam = self._unpack(z)
        parts = [p.detach().reshape(-1) for p in self.residual(z, *theta) if p is not None]
        scale = max(1.0, float(torch.cat([v.detach().reshape(-1) for v in (x, nu, lam) if v is not None]).norm()))
        ok = float(torch.cat(parts).norm()) <= tol * scale
        if lam is not None and self.ineq_constraints is not None:
            slots = tuple(theta) + (None,) * (3 - len(theta))
            with torch.no_grad():
                ineq = self.ineq_constraints(x, *_as_args(slots[2]))
            ok = ok and bool((lam >= -tol * scale).all()) and bool((ineq <= tol * scale).all())
        return ok

    def flatten(self, n_primal: int, n_eq: int = 0, n_ineq: int = 0) -> RootMapping:
        r"""The same residual on one vector: ``F_flat(cat(x, nu, lam), *theta) = cat(F(...))``.

        For a 1-D primal ``x`` of ``n_primal`` entries and 1-D constraint values (``n_eq`` equalities, ``n_ineq``
        inequalities); the result is an ordinary :class:`RootMapping`, usable by solvers that take one tensor.

        Args:
            n_primal: the size of ``x``.
            n_eq: the number of equality constraints (0 when there are none).
            n_ineq: the number of inequality constraints (0 when there are none).

        Returns:
            A :class:`RootMapping` on tensors of shape ``(n_primal + n_eq + n_ineq,)``.

        Raises:
            SciMLInputError: if the sizes are negative or disagree with the constraints given.

        Example:
            >>> kkt = kkt_optimality(lambda x: (x**2).sum(), ineq_constraints=lambda x: 1 - x)  # x >= 1
            >>> kkt.flatten(1, n_ineq=1)(torch.tensor([1.0, 2.0]))  # x* = 1, lam* = 2
            tensor([0., 0.])
        """
        sizes = [_check_count(n, v) for n, v in (("n_primal", n_primal), ("n_eq", n_eq), ("n_ineq", n_ineq))]
        if sizes[0] == 0:
            raise SciMLInputError("n_primal", "must be >= 1")
        if (sizes[1] > 0) != (self.eq_constraints is not None):
            raise SciMLInputError("n_eq", "must be > 0 exactly when there are equality constraints")
        if (sizes[2] > 0) != (self.ineq_constraints is not None):
            raise SciMLInputError("n_ineq", "must be > 0 exactly when there are inequality constraints")
        total = sum(sizes)

        def flat(z: torch.Tensor, *theta: Any) -> torch.Tensor:
            check_tensor("z", z)
            if z.shape != (total,):
                raise SciMLInputError("z", f"must have shape ({total},), got {tuple(z.shape)}")
            x, nu, lam = torch.split(z, sizes)
            parts = self.residual((x, nu if sizes[1] else None, lam if sizes[2] else None), *theta)
            return torch.cat([p.reshape(-1) for p in parts if p is not None])

        return RootMapping(flat, name=f"flattened {self!r}")


def _check_dual(name: str, dual: torch.Tensor, constraint: torch.Tensor) -> None:
    if dual.shape != constraint.shape:
        raise SciMLInputError(
            name, f"must have the shape of the constraint values {tuple(constraint.shape)}, got {tuple(dual.shape)}"
        )


def kkt_optimality(
    objective: Callable[..., torch.Tensor],
    eq_constraints: Callable[..., torch.Tensor] | None = None,
    ineq_constraints: Callable[..., torch.Tensor] | None = None,
) -> KKTCondition:
    r"""The KKT conditions of a constrained inner problem (jaxopt's ``make_kkt_optimality_fun``).

    For :math:`\min_x f(x, \theta)` subject to :math:`H(x, \theta) = 0` and :math:`G(x, \theta) \le 0`, with
    :math:`z = (x, \nu, \lambda)`,

    .. math::
        F(z, \theta) = \big(\nabla_1 f + \partial_1 H^\top \nu + \partial_1 G^\top \lambda,\ H,\ \lambda \circ G\big).

    A KKT point with :math:`\lambda \ge 0`, :math:`G \le 0` is a root; under strict complementarity and the
    second-order sufficient condition :math:`\partial_z F` is invertible there, so implicit differentiation applies.
    See :class:`KKTCondition` for the calling convention (``z`` and the result are tuples; ``theta`` is
    ``(objective_params, eq_params, ineq_params)``).

    Args:
        objective: ``f(x, *objective_args) -> scalar tensor``.
        eq_constraints: ``H(x, *eq_args) -> tensor`` of the shape of ``nu``, or ``None``.
        ineq_constraints: ``G(x, *ineq_args) -> tensor`` of the shape of ``lam``, or ``None``.

    Returns:
        A :class:`KKTCondition` (callable ``F(z, *theta)``).

    Raises:
        SciMLInputError: if a function is not callable; when called, if ``z`` is not a matching tuple or the dual
            shapes differ from the constraint values.

    Example:
        >>> # min (x - t)^2 s.t. x <= 0, at t = 1: x* = 0, lam* = 2 t = 2
        >>> kkt = kkt_optimality(lambda x, t: ((x - t) ** 2).sum(), ineq_constraints=lambda x: x)
        >>> kkt((torch.tensor([0.0]), None, torch.tensor([2.0])), torch.tensor(1.0))
        (tensor([0.]), None, tensor([0.]))

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    return KKTCondition(objective, eq_constraints, ineq_constraints)
