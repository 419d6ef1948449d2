r"""Bilevel problems generated locally, with known answers where they exist.

- :class:`QuadraticBilevel`: :math:`f = \tfrac12\|y - b\|^2 + \tfrac\rho2\|x\|^2`, :math:`g = \tfrac12\|y - Ax\|^2`,
  known :math:`x^*`;
- :class:`RidgeHyperparameter`: ridge regularization strength, closed-form hypergradient;
- :class:`HyperCleaning`: per-sample weights against corrupted labels (linear softmax classifier);
- :class:`HyperRepresentation`: a shared representation (upper) under per-task linear heads (lower);
- :class:`LogisticRegularization`: per-feature l2 regularization of a logistic regression.

Example:
    >>> from sciml_bilevel import problems
    >>> "HyperCleaning" in problems.__all__
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import BilevelProblem as BilevelProblem

if TYPE_CHECKING:
    from ._problems import HyperCleaning as HyperCleaning
    from ._problems import HyperRepresentation as HyperRepresentation
    from ._problems import LogisticRegularization as LogisticRegularization
    from ._problems import QuadraticBilevel as QuadraticBilevel
    from ._problems import RidgeHyperparameter as RidgeHyperparameter

_EXPORTS: dict[str, str] = {
    "QuadraticBilevel": "._problems",
    "RidgeHyperparameter": "._problems",
    "HyperCleaning": "._problems",
    "HyperRepresentation": "._problems",
    "LogisticRegularization": "._problems",
}

__all__ = [
    "BilevelProblem",
    "QuadraticBilevel",
    "RidgeHyperparameter",
    "HyperCleaning",
    "HyperRepresentation",
    "LogisticRegularization",
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
