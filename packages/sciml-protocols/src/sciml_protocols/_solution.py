"""The result type that every iterative solver of every sciml package returns."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

import torch

from ._errors import ConvergenceWarning, SciMLError, SciMLInputError

__all__ = ["Solution"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Solution(Generic[T]):
    """What an iterative solver found, and how honestly it got there.

    Every solver returns one of these, whatever flags it was called with: a solver never returns a tuple whose
    shape changes with an option. The fields are read-only (the dataclass is frozen and ``stats`` is a read-only
    mapping).

    Attributes:
        value: the solution (a tensor, or a tuple of tensors for solvers with several outputs).
        converged: True when the solver's own stopping test held for every problem in the batch.
        n_iter: iterations performed (the largest over the batch).
        residual: the solver's own stopping measure at the end, a float or a tensor with one entry per batched
            problem.
        history: optional per-iteration residuals, shape ``(n_iter + 1, *batch)``; None when not recorded.
        stats: solver-specific extras (per-system iteration counts, breakdown flags, timings, ...).

    Example:
        >>> sol = Solution(value=torch.ones(3), converged=True, n_iter=4, residual=1e-9)
        >>> sol.converged, sol.n_iter
        (True, 4)
        >>> sol.check()  # returns the solution itself when it converged
        Solution(converged=True, n_iter=4, residual=1e-09, value=Tensor(shape=(3,), dtype=torch.float32))
    """

    value: T
    converged: bool
    n_iter: int
    residual: float | torch.Tensor
    history: torch.Tensor | None = None
    stats: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.converged, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("converged", f"must be a bool, got {type(self.converged).__name__}")
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int) or self.n_iter < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("n_iter", f"must be a non-negative int, got {self.n_iter!r}")
        if not isinstance(self.stats, MappingProxyType):
            object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    def check(self, action: Literal["warn", "raise"] = "warn") -> Solution[T]:
        """Return ``self`` if converged; otherwise warn (:class:`ConvergenceWarning`) or raise (:class:`SciMLError`).

        Args:
            action: ``"warn"`` or ``"raise"``.

        Example:
            >>> bad = Solution(value=torch.zeros(2), converged=False, n_iter=10, residual=0.5)
            >>> bad.check("raise")
            Traceback (most recent call last):
            ...
            sciml_protocols._errors.SciMLError: solver did not converge after 10 iterations (residual 0.5)
        """
        if action not in ("warn", "raise"):
            raise SciMLInputError("action", f"must be 'warn' or 'raise', got {action!r}")
        if self.converged:
            return self
        message = f"solver did not converge after {self.n_iter} iterations (residual {_short(self.residual)})"
        reason = self.stats.get("reason")
        if reason:
            message += f": {reason}"
        if action == "raise":
            raise SciMLError(message)
        warnings.warn(message, ConvergenceWarning, stacklevel=2)
        return self

    def __repr__(self) -> str:
        return (
            f"Solution(converged={self.converged}, n_iter={self.n_iter}, residual={_short(self.residual)}, "
            f"value={_short(self.value)})"
        )


def _short(value: object) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return f"{value.item():.3g}"
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, tuple):
        items: tuple[object, ...] = value  # pyright: ignore[reportUnknownVariableType]
        return "(" + ", ".join(_short(v) for v in items) + ")"
    if isinstance(value, float):
        return f"{value:.3g}"
    return repr(value)
