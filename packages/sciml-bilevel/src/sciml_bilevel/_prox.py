r"""Proximal operators for proximal-gradient fixed points.

The proximal operator of a convex function :math:`g` scaled by :math:`s > 0` is

.. math:: \operatorname{prox}_{s g}(v) = \arg\min_x \tfrac12 \|x - v\|_2^2 + s\, g(x).

Every operator here has the signature ``prox(v, hyper_params, scaling=1.0)`` of jaxopt (``jaxopt.prox``), where
``hyper_params`` holds the regularization strengths of :math:`g` (a Python number or a tensor that broadcasts
against ``v``; a tuple for operators with two of them) and ``scaling`` is the step size of the proximal-gradient
step. The operators are built from plain torch operations, so they are differentiable almost everywhere in ``v``,
in ``hyper_params`` and in ``scaling`` with autograd (the kinks, e.g. :math:`|v_i| = \lambda s` for the
soft-thresholding, have measure zero). Elementwise operators work on tensors of any shape; ``prox_group_lasso``
treats the last dimension as the group; ``prox_l2`` takes the norm of the whole tensor.

Values of tensor hyperparameters are not checked (that would synchronize with the device inside solver loops);
Python numbers are.

Reference:
    M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-López, F. Pedregosa, J.-P. Vert,
    "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183 (section 2.2, the proximal
    gradient fixed point); N. Parikh, S. Boyd, "Proximal Algorithms", Foundations and Trends in Optimization, 2014.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from sciml_protocols import SciMLInputError, check_tensor

__all__ = [
    "prox_box",
    "prox_elastic_net",
    "prox_group_lasso",
    "prox_l1",
    "prox_l2",
    "prox_none",
    "prox_nonnegative",
    "prox_ridge",
]

Scalar = float | torch.Tensor


def _check_strength(name: str, value: object) -> Scalar:
    """A regularization strength: a non-negative finite number or a tensor (values not inspected)."""
    if isinstance(value, torch.Tensor):
        if not (value.dtype.is_floating_point or value.dtype.is_complex):
            raise SciMLInputError(name, f"must be a floating-point tensor, got dtype {value.dtype}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a number or a tensor, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise SciMLInputError(name, f"must be finite and >= 0, got {value}")
    return float(value)


def _check_scaling(scaling: object) -> Scalar:
    if isinstance(scaling, torch.Tensor):
        return scaling
    if isinstance(scaling, bool) or not isinstance(scaling, int | float):
        raise SciMLInputError("scaling", f"must be a number or a tensor, got {type(scaling).__name__}")
    if not math.isfinite(scaling) or scaling < 0:
        raise SciMLInputError("scaling", f"must be finite and >= 0, got {scaling}")
    return float(scaling)


def _pair(name: str, hyper_params: object) -> tuple[Any, Any]:
    if not isinstance(hyper_params, tuple | list) or len(hyper_params) != 2:  # pyright: ignore[reportUnknownArgumentType]
        raise SciMLInputError(name, f"must be a pair (tuple of two), got {type(hyper_params).__name__}")
    first: Any = hyper_params[0]  # pyright: ignore[reportUnknownVariableType]
    second: Any = hyper_params[1]  # pyright: ignore[reportUnknownVariableType]
    return first, second


def _soft_threshold(v: torch.Tensor, threshold: Scalar) -> torch.Tensor:
    return torch.sign(v) * torch.relu(v.abs() - threshold)


def prox_none(v: torch.Tensor, hyper_params: object = None, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Proximal operator of :math:`g = 0`: the identity, :math:`\operatorname{prox}(v) = v`.

    With it the proximal-gradient fixed point reduces to the gradient-descent fixed point.

    Args:
        v: input tensor, any shape.
        hyper_params: ignored.
        scaling: ignored (checked to be a non-negative number or a tensor).

    Returns:
        ``v`` itself.

    Raises:
        SciMLInputError: if ``v`` is not a tensor.

    Example:
        >>> prox_none(torch.tensor([1.0, -2.0]))
        tensor([ 1., -2.])
    """
    check_tensor("v", v)
    _check_scaling(scaling)
    return v


def prox_l1(v: torch.Tensor, hyper_params: Scalar = 1.0, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Soft thresholding, the proximal operator of :math:`g(x) = \lambda \|x\|_1` (lasso).

    .. math:: \operatorname{prox}_{s g}(v)_i = \operatorname{sign}(v_i)\, \max(|v_i| - \lambda s, 0).

    Args:
        v: input tensor, any shape.
        hyper_params: :math:`\lambda \ge 0`, a number or a tensor broadcastable to ``v`` (per-coordinate weights).
        scaling: :math:`s \ge 0`, usually the step size.

    Returns:
        A tensor of the broadcast shape of ``v`` and ``hyper_params``.

    Raises:
        SciMLInputError: if ``v`` is not a tensor or a number is negative or not finite.

    Example:
        >>> prox_l1(torch.tensor([3.0, -0.5, -2.0]), 1.0)
        tensor([ 2.,  0., -1.])
    """
    check_tensor("v", v)
    strength = _check_strength("hyper_params", hyper_params)
    return _soft_threshold(v, strength * _check_scaling(scaling))


def prox_ridge(v: torch.Tensor, hyper_params: Scalar = 1.0, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Proximal operator of the squared norm :math:`g(x) = \tfrac{\lambda}{2} \|x\|_2^2`.

    .. math:: \operatorname{prox}_{s g}(v) = \frac{v}{1 + \lambda s}.

    Args:
        v: input tensor, any shape.
        hyper_params: :math:`\lambda \ge 0`, a number or a broadcastable tensor.
        scaling: :math:`s \ge 0`.

    Returns:
        A tensor of the broadcast shape.

    Raises:
        SciMLInputError: if ``v`` is not a tensor or a number is negative or not finite.

    Example:
        >>> prox_ridge(torch.tensor([3.0, -6.0]), 2.0)
        tensor([ 1., -2.])
    """
    check_tensor("v", v)
    strength = _check_strength("hyper_params", hyper_params)
    return v / (1 + strength * _check_scaling(scaling))


def prox_elastic_net(
    v: torch.Tensor, hyper_params: tuple[Scalar, Scalar] = (1.0, 1.0), scaling: Scalar = 1.0
) -> torch.Tensor:
    r"""Proximal operator of the elastic net :math:`g(x) = \lambda_1 \|x\|_1 + \tfrac{\lambda_2}{2} \|x\|_2^2`.

    .. math::
        \operatorname{prox}_{s g}(v)_i = \frac{\operatorname{sign}(v_i) \max(|v_i| - \lambda_1 s, 0)}{1 + \lambda_2 s}.

    (jaxopt parametrizes the same function as :math:`\lambda(\|x\|_1 + \tfrac{\gamma}{2}\|x\|_2^2)`; here the two
    strengths are separate.)

    Args:
        v: input tensor, any shape.
        hyper_params: the pair :math:`(\lambda_1, \lambda_2)`, each a non-negative number or a broadcastable tensor.
        scaling: :math:`s \ge 0`.

    Returns:
        A tensor of the broadcast shape.

    Raises:
        SciMLInputError: if ``hyper_params`` is not a pair, or ``v`` is not a tensor, or a number is negative.

    Example:
        >>> prox_elastic_net(torch.tensor([3.0, -0.5]), (1.0, 1.0))
        tensor([1., 0.])
    """
    check_tensor("v", v)
    l1, l2 = _pair("hyper_params", hyper_params)
    l1 = _check_strength("hyper_params[0]", l1)
    l2 = _check_strength("hyper_params[1]", l2)
    s = _check_scaling(scaling)
    return _soft_threshold(v, l1 * s) / (1 + l2 * s)


def _block_shrink(v: torch.Tensor, norm: torch.Tensor, threshold: Scalar) -> torch.Tensor:
    # Clamping keeps the division finite at v = 0, where the factor is 0 anyway (relu of a negative number).
    tiny = torch.finfo(norm.dtype).tiny if norm.dtype.is_floating_point else 1e-300
    return v * torch.relu(1 - threshold / norm.clamp_min(tiny))


def prox_group_lasso(v: torch.Tensor, hyper_params: Scalar = 1.0, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Block soft thresholding, the proximal operator of the group lasso :math:`g(X) = \lambda \sum_i \|X_i\|_2`.

    Each group is a slice along the last dimension (a row of a matrix; for a vector, the whole vector):

    .. math:: \operatorname{prox}_{s g}(X)_i = \max\Big(1 - \frac{\lambda s}{\|X_i\|_2}, 0\Big) X_i.

    Args:
        v: tensor of shape ``(..., d)``; every slice ``v[..., :]`` is one group.
        hyper_params: :math:`\lambda \ge 0`, a number or a tensor broadcastable to ``v.shape[:-1] + (1,)``.
        scaling: :math:`s \ge 0`.

    Returns:
        A tensor of the shape of ``v``.

    Raises:
        SciMLInputError: if ``v`` is not a tensor of at least one dimension, or a number is negative.

    Example:
        >>> prox_group_lasso(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
        tensor([[2.4000, 3.2000],
                [0.0000, 0.0000]])
    """
    check_tensor("v", v)
    if v.ndim == 0:
        raise SciMLInputError("v", "must have at least one dimension (the group dimension is the last)")
    strength = _check_strength("hyper_params", hyper_params)
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return _block_shrink(v, norm, strength * _check_scaling(scaling))


def prox_l2(v: torch.Tensor, hyper_params: Scalar = 1.0, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Proximal operator of the (non-squared) Euclidean norm :math:`g(x) = \lambda \|x\|_2` of the whole tensor.

    .. math:: \operatorname{prox}_{s g}(v) = \max\Big(1 - \frac{\lambda s}{\|v\|_2}, 0\Big) v,

    with :math:`\|v\|_2` taken over all entries (use :func:`prox_group_lasso` for one norm per row).

    Args:
        v: input tensor, any shape.
        hyper_params: :math:`\lambda \ge 0`, a number or a one-element tensor.
        scaling: :math:`s \ge 0`.

    Returns:
        A tensor of the shape of ``v``.

    Raises:
        SciMLInputError: if ``v`` is not a tensor or a number is negative or not finite.

    Example:
        >>> prox_l2(torch.tensor([3.0, 4.0]), 2.5)
        tensor([1.5000, 2.0000])
    """
    check_tensor("v", v)
    strength = _check_strength("hyper_params", hyper_params)
    return _block_shrink(v, torch.linalg.vector_norm(v), strength * _check_scaling(scaling))


def prox_nonnegative(v: torch.Tensor, hyper_params: object = None, scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Proximal operator of the indicator of the non-negative orthant: :math:`\max(v, 0)` elementwise.

    Args:
        v: input tensor, any shape.
        hyper_params: ignored.
        scaling: ignored (an indicator is invariant to scaling).

    Returns:
        A tensor of the shape of ``v``.

    Raises:
        SciMLInputError: if ``v`` is not a tensor.

    Example:
        >>> prox_nonnegative(torch.tensor([1.0, -2.0]))
        tensor([1., 0.])
    """
    check_tensor("v", v)
    _check_scaling(scaling)
    return torch.relu(v)


def prox_box(v: torch.Tensor, hyper_params: tuple[Scalar, Scalar] = (0.0, 1.0), scaling: Scalar = 1.0) -> torch.Tensor:
    r"""Proximal operator of the indicator of the box :math:`[l, u]`: :math:`\min(\max(v, l), u)` elementwise.

    Args:
        v: input tensor, any shape.
        hyper_params: the pair ``(lower, upper)``, numbers or tensors broadcastable to ``v`` with
            ``lower <= upper``.
        scaling: ignored (an indicator is invariant to scaling).

    Returns:
        A tensor of the broadcast shape.

    Raises:
        SciMLInputError: if ``hyper_params`` is not a pair or numeric bounds are crossed.

    Example:
        >>> prox_box(torch.tensor([-1.0, 0.5, 2.0]), (0.0, 1.0))
        tensor([0.0000, 0.5000, 1.0000])
    """
    check_tensor("v", v)
    _check_scaling(scaling)
    lower, upper = _pair("hyper_params", hyper_params)
    return _clamp(v, lower, upper)


def _clamp(v: torch.Tensor, lower: object, upper: object) -> torch.Tensor:
    """``min(max(v, lower), upper)`` for numbers or tensors, differentiable in all three."""
    for name, bound in (("lower", lower), ("upper", upper)):
        if isinstance(bound, bool) or not isinstance(bound, int | float | torch.Tensor):
            raise SciMLInputError(name, f"must be a number or a tensor, got {type(bound).__name__}")
    if isinstance(lower, int | float) and isinstance(upper, int | float) and lower > upper:
        raise SciMLInputError("hyper_params", f"lower bound {lower} exceeds upper bound {upper}")
    low = lower if isinstance(lower, torch.Tensor) else torch.tensor(lower, dtype=v.dtype, device=v.device)
    high = upper if isinstance(upper, torch.Tensor) else torch.tensor(upper, dtype=v.dtype, device=v.device)
    return torch.minimum(torch.maximum(v, low), high)
