"""Test problems for optimizers and solvers, with known answers.

- Carmon-Duchi-Hinder-Sidford zero-chain hard instances (deterministic, randomly rotated, stochastic oracle);
- Hock-Schittkowski HS6 and HS7 and equality-constrained quadratic programs (known optima);
- bilinear games and cocoercive finite sums (monotone operators with closed-form solutions).

Example:
    >>> from sciml_optim import testing
    >>> "ZeroChain" in testing.__all__
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._constrained import HS6 as HS6
    from ._constrained import HS7 as HS7
    from ._constrained import EqualityQP as EqualityQP
    from ._games import BilinearGame as BilinearGame
    from ._games import CocoerciveFiniteSum as CocoerciveFiniteSum
    from ._zero_chain import RotatedZeroChain as RotatedZeroChain
    from ._zero_chain import StochasticZeroChain as StochasticZeroChain
    from ._zero_chain import ZeroChain as ZeroChain

_EXPORTS: dict[str, str] = {
    "ZeroChain": "._zero_chain",
    "RotatedZeroChain": "._zero_chain",
    "StochasticZeroChain": "._zero_chain",
    "HS6": "._constrained",
    "HS7": "._constrained",
    "EqualityQP": "._constrained",
    "BilinearGame": "._games",
    "CocoerciveFiniteSum": "._games",
}

__all__ = [
    "ZeroChain",
    "RotatedZeroChain",
    "StochasticZeroChain",
    "HS6",
    "HS7",
    "EqualityQP",
    "BilinearGame",
    "CocoerciveFiniteSum",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
