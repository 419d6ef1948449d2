"""sciml-bilevel: bilevel optimization for PyTorch.

Implicit differentiation of any solver from its optimality condition (``custom_root``, ``custom_fixed_point``;
composable with ``torch.func``), matrix-free adjoint linear solvers, the catalogue of optimality mappings,
hypergradient estimators (implicit, unrolled, truncated), BO-REP, the penalty method and Self-Tuning Networks.
Problems with known answers live in :mod:`sciml_bilevel.problems`.

Submodules load on first use, so ``import sciml_bilevel`` stays light.

Example:
    >>> import sciml_bilevel
    >>> sciml_bilevel.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import problems as problems
    from . import projection as projection
    from . import prox as prox
    from ._borep import bo_rep as bo_rep
    from ._hypergrad import hypergradient as hypergradient
    from ._implicit import ImplicitSolver as ImplicitSolver
    from ._implicit import custom_fixed_point as custom_fixed_point
    from ._implicit import custom_root as custom_root
    from ._implicit import root_jvp as root_jvp
    from ._implicit import root_vjp as root_vjp
    from ._linear_solve import linear_solve as linear_solve
    from ._optimality import FixedPointMapping as FixedPointMapping
    from ._optimality import KKTCondition as KKTCondition
    from ._optimality import RootMapping as RootMapping
    from ._optimality import gradient_stationarity as gradient_stationarity
    from ._optimality import kkt_optimality as kkt_optimality
    from ._optimality import mirror_descent_fixed_point as mirror_descent_fixed_point
    from ._optimality import projected_gradient_fixed_point as projected_gradient_fixed_point
    from ._optimality import prox_gradient_fixed_point as prox_gradient_fixed_point
    from ._penalty import penalty_hypergradient as penalty_hypergradient
    from ._penalty import penalty_method as penalty_method
    from ._stn import Hyperparameter as Hyperparameter
    from ._stn import HyperparameterBatch as HyperparameterBatch
    from ._stn import HyperparameterSpace as HyperparameterSpace
    from ._stn import STNConv2d as STNConv2d
    from ._stn import STNLinear as STNLinear
    from ._stn import STNTrainer as STNTrainer
    from ._stn import hyper_dropout as hyper_dropout

# public name -> private module that defines it
_EXPORTS: dict[str, str] = {
    # implicit differentiation
    "custom_root": "._implicit",
    "custom_fixed_point": "._implicit",
    "root_vjp": "._implicit",
    "root_jvp": "._implicit",
    "ImplicitSolver": "._implicit",
    "linear_solve": "._linear_solve",
    # optimality mappings
    "RootMapping": "._optimality",
    "FixedPointMapping": "._optimality",
    "KKTCondition": "._optimality",
    "gradient_stationarity": "._optimality",
    "prox_gradient_fixed_point": "._optimality",
    "projected_gradient_fixed_point": "._optimality",
    "kkt_optimality": "._optimality",
    "mirror_descent_fixed_point": "._optimality",
    # hypergradients and bilevel solvers
    "hypergradient": "._hypergrad",
    "bo_rep": "._borep",
    "penalty_method": "._penalty",
    "penalty_hypergradient": "._penalty",
    # self-tuning networks
    "STNLinear": "._stn",
    "STNConv2d": "._stn",
    "STNTrainer": "._stn",
    "Hyperparameter": "._stn",
    "HyperparameterSpace": "._stn",
    "HyperparameterBatch": "._stn",
    "hyper_dropout": "._stn",
}

__version__: str = _version("sciml-bilevel")

__all__ = [
    "__version__",
    "problems",
    "prox",
    "projection",
    "custom_root",
    "custom_fixed_point",
    "root_vjp",
    "root_jvp",
    "ImplicitSolver",
    "linear_solve",
    "RootMapping",
    "FixedPointMapping",
    "KKTCondition",
    "gradient_stationarity",
    "prox_gradient_fixed_point",
    "projected_gradient_fixed_point",
    "kkt_optimality",
    "mirror_descent_fixed_point",
    "hypergradient",
    "bo_rep",
    "penalty_method",
    "penalty_hypergradient",
    "STNLinear",
    "STNConv2d",
    "STNTrainer",
    "Hyperparameter",
    "HyperparameterSpace",
    "HyperparameterBatch",
    "hyper_dropout",
]


def __getattr__(name: str) -> Any:
    if name in ("problems", "prox", "projection"):
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
