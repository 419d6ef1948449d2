"""sciml-optim: optimizers from recent papers as true ``torch.optim`` optimizers, and the research solvers around them.

Training optimizers (Lion and the Lion-K family, AdamP and SGDP, with fused Triton steps on CUDA), adaptive batch
sizes (AdAdaGrad), target-based surrogates (SSO), optimistic online mirror descent, (variance-reduced) Halpern
iteration for monotone inclusions, the sketched exact augmented Lagrangian Newton method for equality constraints,
and learning-rate/batch-size tools (stochastic Lanczos quadrature, scaling rules). Hard and classic test problems
live in :mod:`sciml_optim.testing`.

Submodules load on first use, so ``import sciml_optim`` stays light.

Example:
    >>> import sciml_optim
    >>> sciml_optim.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import testing as testing
    from ._adadagrad import AdAdaGrad as AdAdaGrad
    from ._adadagrad import AdAdaGradNorm as AdAdaGradNorm
    from ._adadagrad import AdaptiveBatchSampler as AdaptiveBatchSampler
    from ._adadagrad import BatchSizeController as BatchSizeController
    from ._adadagrad import BatchSizeDecision as BatchSizeDecision
    from ._adamp import SGDP as SGDP
    from ._adamp import AdamP as AdamP
    from ._auglag import adasketch_newton as adasketch_newton
    from ._auglag import sketch_and_project as sketch_and_project
    from ._batch_lr import CurvatureLRLearner as CurvatureLRLearner
    from ._batch_lr import SpectrumEstimate as SpectrumEstimate
    from ._batch_lr import hessian_vector_product as hessian_vector_product
    from ._batch_lr import scale_learning_rate as scale_learning_rate
    from ._batch_lr import stochastic_lanczos_quadrature as stochastic_lanczos_quadrature
    from ._halpern import halpern as halpern
    from ._halpern import vr_halpern as vr_halpern
    from ._halpern import vr_halpern_monotone as vr_halpern_monotone
    from ._lion import Lion as Lion
    from ._online import OptimisticOMD as OptimisticOMD
    from ._online import RegretTracker as RegretTracker
    from ._sso import SSO as SSO
    from ._sso import SSOStepResult as SSOStepResult
    from ._sso import surrogate_loss as surrogate_loss

# public name -> private module that defines it
_EXPORTS: dict[str, str] = {
    # training optimizers
    "Lion": "._lion",
    "AdamP": "._adamp",
    "SGDP": "._adamp",
    # adaptive batch sizes
    "AdAdaGrad": "._adadagrad",
    "AdAdaGradNorm": "._adadagrad",
    "BatchSizeController": "._adadagrad",
    "BatchSizeDecision": "._adadagrad",
    "AdaptiveBatchSampler": "._adadagrad",
    # target-based surrogates
    "SSO": "._sso",
    "SSOStepResult": "._sso",
    "surrogate_loss": "._sso",
    # online learning
    "OptimisticOMD": "._online",
    "RegretTracker": "._online",
    # monotone inclusions
    "halpern": "._halpern",
    "vr_halpern": "._halpern",
    "vr_halpern_monotone": "._halpern",
    # equality-constrained optimization
    "adasketch_newton": "._auglag",
    "sketch_and_project": "._auglag",
    # learning rate and batch size
    "stochastic_lanczos_quadrature": "._batch_lr",
    "scale_learning_rate": "._batch_lr",
    "CurvatureLRLearner": "._batch_lr",
    "SpectrumEstimate": "._batch_lr",
    "hessian_vector_product": "._batch_lr",
}

__version__: str = _version("sciml-optim")

__all__ = [
    "__version__",
    "testing",
    "Lion",
    "AdamP",
    "SGDP",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "BatchSizeController",
    "BatchSizeDecision",
    "AdaptiveBatchSampler",
    "SSO",
    "SSOStepResult",
    "surrogate_loss",
    "OptimisticOMD",
    "RegretTracker",
    "halpern",
    "vr_halpern",
    "vr_halpern_monotone",
    "adasketch_newton",
    "sketch_and_project",
    "stochastic_lanczos_quadrature",
    "scale_learning_rate",
    "CurvatureLRLearner",
    "SpectrumEstimate",
    "hessian_vector_product",
]


def __getattr__(name: str) -> Any:
    if name == "testing":
        return importlib.import_module(".testing", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
