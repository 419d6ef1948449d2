r"""Proximal operators for proximal-gradient fixed points, with jaxopt's signature ``prox(v, hyper_params, scaling)``.

:math:`\operatorname{prox}_{s g}(v) = \arg\min_x \tfrac12\|x - v\|^2 + s\, g(x)`; every operator here is
differentiable almost everywhere with autograd, in ``v`` and in its hyperparameters.

Example:
    >>> import torch
    >>> from sciml_bilevel.prox import prox_l1
    >>> prox_l1(torch.tensor([3.0, -0.5, 1.5]), 1.0)
    tensor([2.0000, -0.0000, 0.5000])
"""

from ._prox import prox_box as prox_box
from ._prox import prox_elastic_net as prox_elastic_net
from ._prox import prox_group_lasso as prox_group_lasso
from ._prox import prox_l1 as prox_l1
from ._prox import prox_l2 as prox_l2
from ._prox import prox_none as prox_none
from ._prox import prox_nonnegative as prox_nonnegative
from ._prox import prox_ridge as prox_ridge

__all__ = [
    "prox_none",
    "prox_l1",
    "prox_ridge",
    "prox_l2",
    "prox_elastic_net",
    "prox_group_lasso",
    "prox_nonnegative",
    "prox_box",
]
