"""sciml-ot: optimal transport for PyTorch.

Log-domain Sinkhorn on dense costs and on point clouds (costs evaluated tile by tile, never stored; an online Triton
kernel on CUDA), unbalanced transport and the Sinkhorn divergence, Sinkhorn-Newton-Sparse, Wasserstein helpers, and
the Light Schrödinger Bridge.

Submodules load on first use, so ``import sciml_ot`` stays light.

Example:
    >>> import sciml_ot
    >>> sciml_ot.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._costs import DenseCost as DenseCost
    from ._costs import PointCloudCost as PointCloudCost
    from ._lightsb import GaussianBridge as GaussianBridge
    from ._lightsb import LightSB as LightSB
    from ._lightsb import gaussian_bridge as gaussian_bridge
    from ._result import SinkhornResult as SinkhornResult
    from ._result import TransportPlan as TransportPlan
    from ._sinkhorn import sinkhorn as sinkhorn
    from ._sinkhorn import sinkhorn_divergence as sinkhorn_divergence
    from ._sns import SNSResult as SNSResult
    from ._sns import SNSStats as SNSStats
    from ._sns import sinkhorn_newton_sparse as sinkhorn_newton_sparse
    from ._sns import wasserstein as wasserstein

_EXPORTS: dict[str, str] = {
    "DenseCost": "._costs",
    "PointCloudCost": "._costs",
    "SinkhornResult": "._result",
    "TransportPlan": "._result",
    "sinkhorn": "._sinkhorn",
    "sinkhorn_divergence": "._sinkhorn",
    "sinkhorn_newton_sparse": "._sns",
    "wasserstein": "._sns",
    "SNSResult": "._sns",
    "SNSStats": "._sns",
    "LightSB": "._lightsb",
    "GaussianBridge": "._lightsb",
    "gaussian_bridge": "._lightsb",
}

__version__: str = _version("sciml-ot")

__all__ = [
    "__version__",
    "DenseCost",
    "PointCloudCost",
    "SinkhornResult",
    "TransportPlan",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_newton_sparse",
    "wasserstein",
    "SNSResult",
    "SNSStats",
    "LightSB",
    "GaussianBridge",
    "gaussian_bridge",
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
