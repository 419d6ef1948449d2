r"""Euclidean projections onto convex sets, for projected-gradient fixed points.

:math:`P_C(x) = \arg\min_{u \in C} \|u - x\|`; vector sets act on the last dimension and batch over the
leading ones; every projection is differentiable almost everywhere with autograd.

Example:
    >>> import torch
    >>> from sciml_bilevel.projection import project_simplex
    >>> project_simplex(torch.tensor([0.5, 0.5, 1.0]))
    tensor([0.1667, 0.1667, 0.6667])
"""

from ._projections import project_affine as project_affine
from ._projections import project_box as project_box
from ._projections import project_hyperplane as project_hyperplane
from ._projections import project_l1_ball as project_l1_ball
from ._projections import project_l2_ball as project_l2_ball
from ._projections import project_nonnegative as project_nonnegative
from ._projections import project_simplex as project_simplex

__all__ = [
    "project_simplex",
    "project_l1_ball",
    "project_l2_ball",
    "project_box",
    "project_nonnegative",
    "project_hyperplane",
    "project_affine",
]
