"""The interface every bilevel problem of :mod:`sciml_bilevel.problems` implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["BilevelProblem"]


@runtime_checkable
class BilevelProblem(Protocol):
    r"""A bilevel problem :math:`\min_x f(x, y^*(x))` subject to :math:`y^*(x) \in \arg\min_y g(x, y)`.

    ``x`` (the upper-level variable: hyperparameters, sample weights, a representation) and ``y`` (the lower-level
    variable: model weights) are flat 1-D tensors, so every solver can treat any problem alike; a problem reshapes
    them internally. The losses are means over samples; ``batch`` (a 1-D int64 tensor of sample indices, or None for
    the full data) selects a minibatch for stochastic solvers, from ``range(n_upper)`` for :meth:`upper_loss` and
    ``range(n_lower)`` for :meth:`lower_loss`.

    Attributes:
        n_upper: number of samples of the upper (validation) loss.
        n_lower: number of samples of the lower (training) loss.

    Example:
        >>> from sciml_bilevel.problems import QuadraticBilevel
        >>> isinstance(QuadraticBilevel(dim=3), BilevelProblem)
        True
    """

    n_upper: int
    n_lower: int

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """f(x, y): the upper-level (outer, validation) loss, a scalar."""
        ...

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """g(x, y): the lower-level (inner, training) loss, a scalar."""
        ...

    def init_upper(self) -> torch.Tensor:
        """Starting point of x (1-D)."""
        ...

    def init_lower(self) -> torch.Tensor:
        """Starting point of y (1-D)."""
        ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Problem-specific quality measures of a solution (test accuracy, distance to the known optimum, ...)."""
        ...
