r"""Lie-group equivariant networks for :math:`\mathbb{R}^n \rtimes GL^+(n)` and :math:`\mathbb{R}^n \rtimes SL(n)`.

The groups factor through the polar decomposition :math:`g = P R` (:math:`P` symmetric positive definite,
:math:`R` a rotation), which gives a global chart :math:`\xi^{-1}(g) = \log P + \log R`, a Haar measure that
factorises over the two factors, and samplers that return :math:`(g, g^{-1})` pairs built from the factors. On top
of these sit the lifting and group convolution layers with implicit SIREN kernels, group pooling, a small
classifier and equivariance-error utilities.

Example:
    >>> import torch
    >>> from sciml_equivariant.lie import SL, polar_decomposition
    >>> g, g_inv = SL(2).sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> p, r = polar_decomposition(g, special=True)
    >>> torch.allclose(p @ r, g)
    True

Reference:
    M. Mironenco and P. Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
    arXiv:2310.11366.
"""

from __future__ import annotations

from ._equivariance import affine_transform_images as affine_transform_images
from ._equivariance import equivariance_error as equivariance_error
from ._equivariance import invariance_error_vs_samples as invariance_error_vs_samples
from ._equivariance import lifting_equivariance_error as lifting_equivariance_error
from ._groups import SL as SL
from ._groups import AffineGroup as AffineGroup
from ._groups import GLPlus as GLPlus
from ._groups import MatrixLieGroup as MatrixLieGroup
from ._groups import chart_coordinates as chart_coordinates
from ._groups import invariant_integration_weights as invariant_integration_weights
from ._groups import polar_decomposition as polar_decomposition
from ._groups import rotation_exp as rotation_exp
from ._groups import rotation_log as rotation_log
from ._groups import sample_rotations as sample_rotations
from ._groups import sample_spd as sample_spd
from ._groups import spd_exp as spd_exp
from ._groups import spd_log as spd_log
from ._groups import xi as xi
from ._groups import xi_inverse as xi_inverse
from ._layers import AffineEquivariantCNN as AffineEquivariantCNN
from ._layers import GroupConv2d as GroupConv2d
from ._layers import GroupPooling as GroupPooling
from ._layers import LiftingConv2d as LiftingConv2d
from ._layers import SirenKernel as SirenKernel

__all__ = [
    "SL",
    "AffineEquivariantCNN",
    "AffineGroup",
    "GLPlus",
    "GroupConv2d",
    "GroupPooling",
    "LiftingConv2d",
    "MatrixLieGroup",
    "SirenKernel",
    "affine_transform_images",
    "chart_coordinates",
    "equivariance_error",
    "invariance_error_vs_samples",
    "invariant_integration_weights",
    "lifting_equivariance_error",
    "polar_decomposition",
    "rotation_exp",
    "rotation_log",
    "sample_rotations",
    "sample_spd",
    "spd_exp",
    "spd_log",
    "xi",
    "xi_inverse",
]
