"""sciml-equivariant: equivariant operations for PyTorch.

e3nn-compatible irreps and layouts, real spherical harmonics of any degree, Wigner D matrices and 3j symbols, exact
Gaunt tensor products (quadrature-grid and 2-D Fourier backends, channel-wise, fully connected, convolution and
many-body modules), the Clebsch-Gordan tensor product as the general baseline, and Lie-group equivariant layers
(:mod:`sciml_equivariant.lie`).

Submodules load on first use, so ``import sciml_equivariant`` stays light.

Example:
    >>> import sciml_equivariant
    >>> sciml_equivariant.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cg import ClebschGordanTensorProduct as ClebschGordanTensorProduct
    from ._gaunt import GauntPlan as GauntPlan
    from ._gaunt import gaunt_coefficients as gaunt_coefficients
    from ._gaunt import gaunt_path_constant as gaunt_path_constant
    from ._gaunt import gaunt_tensor_product as gaunt_tensor_product
    from ._irreps import Irrep as Irrep
    from ._irreps import Irreps as Irreps
    from ._irreps import MulIr as MulIr
    from ._irreps import gaunt_irreps as gaunt_irreps
    from ._irreps import ir_mul_to_mul_ir as ir_mul_to_mul_ir
    from ._irreps import mul_ir_to_ir_mul as mul_ir_to_ir_mul
    from ._modules import GauntConvolution as GauntConvolution
    from ._modules import GauntManyBody as GauntManyBody
    from ._modules import GauntTensorProduct as GauntTensorProduct
    from ._so3 import rand_rotation as rand_rotation
    from ._so3 import spherical_harmonics as spherical_harmonics
    from ._so3 import wigner_3j as wigner_3j
    from ._so3 import wigner_D as wigner_D

_EXPORTS: dict[str, str] = {
    "Irrep": "._irreps",
    "Irreps": "._irreps",
    "MulIr": "._irreps",
    "gaunt_irreps": "._irreps",
    "mul_ir_to_ir_mul": "._irreps",
    "ir_mul_to_mul_ir": "._irreps",
    "spherical_harmonics": "._so3",
    "wigner_D": "._so3",
    "wigner_3j": "._so3",
    "rand_rotation": "._so3",
    "gaunt_coefficients": "._gaunt",
    "gaunt_path_constant": "._gaunt",
    "gaunt_tensor_product": "._gaunt",
    "GauntPlan": "._gaunt",
    "ClebschGordanTensorProduct": "._cg",
    "GauntTensorProduct": "._modules",
    "GauntConvolution": "._modules",
    "GauntManyBody": "._modules",
}

__version__: str = _version("sciml-equivariant")

__all__ = [
    "__version__",
    "Irrep",
    "Irreps",
    "MulIr",
    "gaunt_irreps",
    "mul_ir_to_ir_mul",
    "ir_mul_to_mul_ir",
    "spherical_harmonics",
    "wigner_D",
    "wigner_3j",
    "rand_rotation",
    "gaunt_coefficients",
    "gaunt_path_constant",
    "gaunt_tensor_product",
    "GauntPlan",
    "ClebschGordanTensorProduct",
    "GauntTensorProduct",
    "GauntConvolution",
    "GauntManyBody",
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
