"""Optimality conditions: how a solution z*(theta) is defined, so other packages can differentiate through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import torch

from ._errors import SciMLInputError
from ._validation import check_positive, check_tensor

__all__ = [
    "FixedPointCondition",
    "OptimalityCondition",
    "RootCondition",
    "fixed_point_condition",
    "root_condition",
    "stationarity_condition",
]

ConditionKind = Literal["root", "fixed_point"]


@runtime_checkable
class OptimalityCondition(Protocol):
    """A condition that defines the output of a solver implicitly.

    A solution ``z*(theta)`` satisfies ``F(z*, theta) = 0``. Conditions come in two forms:

    * root form: ``F(z, theta) = 0`` given directly (e.g. the gradient of an inner objective);
    * fixed-point form: ``z = T(z, theta)``, whose root form is ``F(z, theta) = T(z, theta) - z``.

    By the implicit function theorem, where ``dF/dz`` is invertible,
    ``dz*/dtheta = -(dF/dz)^{-1} dF/dtheta``, so a package that knows only the condition (not the solver that
    produced ``z*``) can differentiate the solution. ``residual`` always returns the root form ``F``; for the
    fixed-point form ``map`` also exposes ``T``.

    Attributes:
        kind: ``"root"`` or ``"fixed_point"``.

    Example:
        >>> cond = FixedPointCondition(lambda z, theta: 0.5 * z + theta)
        >>> isinstance(cond, OptimalityCondition), cond.kind
        (True, 'fixed_point')
    """

    @property
    def kind(self) -> ConditionKind:
        """``"root"`` or ``"fixed_point"``."""
        ...

    def residual(self, z: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        """``F(z, theta)``, the same shape as ``z``."""
        ...


def _checked_output(name: str, out: object, z: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise SciMLInputError(name, f"must return a tensor, returned {type(out).__name__}")
    if out.shape != z.shape:
        raise SciMLInputError(name, f"must return the shape of z {tuple(z.shape)}, returned {tuple(out.shape)}")
    return out


class RootCondition:
    """Root form ``F(z, theta) = 0``.

    Args:
        fn: ``F(z, *theta) -> tensor`` of the shape of ``z``; it must be differentiable with torch.autograd in both
            arguments for implicit differentiation.

    Example:
        >>> cond = RootCondition(lambda z, theta: z**2 - theta)  # z* = sqrt(theta)
        >>> cond.residual(torch.tensor([2.0]), torch.tensor([4.0]))
        tensor([0.])
        >>> cond.is_satisfied(torch.tensor([2.0]), torch.tensor([4.0]))
        True
    """

    kind: ConditionKind = "root"

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        if not callable(fn):
            raise SciMLInputError("fn", f"must be callable, got {type(fn).__name__}")
        self.fn = fn

    def residual(self, z: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        """``F(z, theta)``."""
        check_tensor("z", z)
        return _checked_output("fn", self.fn(z, *theta), z)

    def is_satisfied(self, z: torch.Tensor, *theta: torch.Tensor, tol: float = 1e-6) -> bool:
        """Whether ``||F(z, theta)|| <= tol * max(1, ||z||)`` (Euclidean norms over all entries)."""
        return _satisfied(self.residual(z, *theta), z, tol)


class FixedPointCondition:
    """Fixed-point form ``z = T(z, theta)``; its root form is ``F(z, theta) = T(z, theta) - z``.

    Args:
        fn: ``T(z, *theta) -> tensor`` of the shape of ``z``.

    Example:
        >>> cond = FixedPointCondition(lambda z, theta: 0.5 * z + theta)  # z* = 2 theta
        >>> cond.residual(torch.tensor([2.0]), torch.tensor([1.0]))
        tensor([0.])
        >>> cond.map(torch.tensor([0.0]), torch.tensor([1.0]))
        tensor([1.])
    """

    kind: ConditionKind = "fixed_point"

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        if not callable(fn):
            raise SciMLInputError("fn", f"must be callable, got {type(fn).__name__}")
        self.fn = fn

    def map(self, z: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        """``T(z, theta)``."""
        check_tensor("z", z)
        return _checked_output("fn", self.fn(z, *theta), z)

    def residual(self, z: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        """``T(z, theta) - z``."""
        return self.map(z, *theta) - z

    def is_satisfied(self, z: torch.Tensor, *theta: torch.Tensor, tol: float = 1e-6) -> bool:
        """Whether ``||T(z, theta) - z|| <= tol * max(1, ||z||)``."""
        return _satisfied(self.residual(z, *theta), z, tol)


def _satisfied(residual: torch.Tensor, z: torch.Tensor, tol: float) -> bool:
    check_positive("tol", tol)
    scale = max(1.0, float(z.detach().norm()))
    return bool(residual.detach().norm() <= tol * scale)


def root_condition(fn: Callable[..., torch.Tensor]) -> RootCondition:
    """Wrap ``F(z, *theta)`` as a root-form condition (usable as a decorator).

    Example:
        >>> @root_condition
        ... def lasso_free(z, theta):
        ...     return z - theta
        >>> lasso_free.kind
        'root'
    """
    return RootCondition(fn)


def fixed_point_condition(fn: Callable[..., torch.Tensor]) -> FixedPointCondition:
    """Wrap ``T(z, *theta)`` as a fixed-point condition (usable as a decorator).

    Example:
        >>> fixed_point_condition(lambda z, theta: torch.tanh(z) + theta).kind
        'fixed_point'
    """
    return FixedPointCondition(fn)


def stationarity_condition(objective: Callable[..., torch.Tensor]) -> RootCondition:
    """The first-order condition of ``z*(theta) = argmin_z f(z, theta)``: ``F(z, theta) = grad_z f(z, theta)``.

    When ``z`` or any ``theta`` requires grad, the gradient is taken with ``create_graph=True`` so the residual is
    itself differentiable in ``z`` and ``theta`` (implicit differentiation needs ``dF/dz`` and ``dF/dtheta``).

    Args:
        objective: ``f(z, *theta) -> scalar tensor``.

    Example:
        >>> # f(z, theta) = 0.5 * ||z||^2 - theta . z has its minimum at z* = theta.
        >>> cond = stationarity_condition(lambda z, theta: 0.5 * (z * z).sum() - (theta * z).sum())
        >>> cond.residual(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
        tensor([0., 0.])

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """
    if not callable(objective):
        raise SciMLInputError("objective", f"must be callable, got {type(objective).__name__}")

    def gradient(z: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z_in = z if z.requires_grad else z.detach().requires_grad_(True)
            value = objective(z_in, *theta)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:  # pyright: ignore[reportUnnecessaryIsInstance]
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError("objective", f"must return a scalar tensor, returned {shape}")
            keep_graph = z.requires_grad or any(isinstance(t, torch.Tensor) and t.requires_grad for t in theta)  # pyright: ignore[reportUnnecessaryIsInstance]
            (grad,) = torch.autograd.grad(value, z_in, create_graph=keep_graph)
        return grad

    return RootCondition(gradient)
