"""The primitive operations of the normalization-activation search space (Liu et al., 2020, Table 1).

Every operation maps tensors that broadcast against the layer input ``x`` of shape ``(N, C, H, W)`` to such a
tensor. Element-wise operations keep their broadcast shape; aggregations first expand their operand to the full
input shape (a view) and reduce with ``keepdim=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

__all__ = [
    "AGGREGATION_AXES",
    "DIVISION_EPS",
    "EXP_CLAMP",
    "INFIX_OPS",
    "LOG_EPS",
    "OPS",
    "SQRT_EPS",
    "Primitive",
    "aggregate",
]

#: Smallest magnitude a denominator is given by the safe division: ``a / (sign(b) max(|b|, DIVISION_EPS))``.
DIVISION_EPS = 1e-6
#: ``exp`` saturates its argument at this value, so ``exp`` never overflows float32.
EXP_CLAMP = 20.0
#: ``sign(x) log|x|`` uses ``log(max(|x|, LOG_EPS))``.
LOG_EPS = 1e-6
#: ``sign(x) sqrt|x|`` uses ``sqrt(|x| + SQRT_EPS)`` (a finite slope at zero).
SQRT_EPS = 1e-12

#: Reduction axes of the four aggregation families. ``group`` is handled by a reshape to ``(N, G, C/G, H, W)``.
AGGREGATION_AXES: dict[str, tuple[int, ...]] = {
    "batch": (0, 2, 3),
    "layer": (1, 2, 3),
    "instance": (2, 3),
    "group": (2, 3, 4),
}


@dataclasses.dataclass(frozen=True)
class Primitive:
    """One operation of the search space.

    Attributes:
        name: identifier used in graphs and JSON (``"add"``, ``"std_group"``, ...).
        arity: number of inputs (1 or 2).
        kind: ``"elementwise"`` or ``"aggregation"``.
        symbol: how the formula printer writes it; ``{0}``/``{1}`` stand for the inputs (the printer puts
            parentheses around an operand of an infix operator, :data:`INFIX_OPS`, that is itself infix).
        function: the element-wise function (None for aggregations).
        statistic: for aggregations, ``"mean"``, ``"std"`` or ``"second_moment"``.
        axes: for aggregations, ``"batch"``, ``"layer"``, ``"instance"`` or ``"group"``.
    """

    name: str
    arity: int
    kind: str
    symbol: str
    function: Callable[..., torch.Tensor] | None = None
    statistic: str | None = None
    axes: str | None = None


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / torch.where(b < 0, b.clamp_max(-DIVISION_EPS), b.clamp_min(DIVISION_EPS))


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # same values as torch.maximum with a much cheaper backward on CPU (at ties the gradient goes to one side)
    if b.dim() == 0:
        return torch.clamp_min(a, b)
    if a.dim() == 0:
        return torch.clamp_min(b, a)
    return torch.where(a >= b, a, b)


def _signed_log(a: torch.Tensor) -> torch.Tensor:
    return torch.sign(a) * torch.log(a.abs().clamp_min(LOG_EPS))


def _signed_sqrt(a: torch.Tensor) -> torch.Tensor:
    return torch.sign(a) * torch.sqrt(a.abs() + SQRT_EPS)


def _clamped_exp(a: torch.Tensor) -> torch.Tensor:
    return torch.exp(a.clamp_max(EXP_CLAMP))


_ELEMENTWISE: tuple[Primitive, ...] = (
    Primitive("add", 2, "elementwise", "{0} + {1}", torch.add),
    Primitive("mul", 2, "elementwise", "{0}·{1}", torch.mul),
    Primitive("div", 2, "elementwise", "{0} / {1}", _safe_div),
    Primitive("max", 2, "elementwise", "max({0}, {1})", _maximum),
    Primitive("neg", 1, "elementwise", "-{0}", torch.neg),
    Primitive("sigmoid", 1, "elementwise", "sigmoid({0})", torch.sigmoid),
    Primitive("tanh", 1, "elementwise", "tanh({0})", torch.tanh),
    Primitive("exp", 1, "elementwise", "exp({0})", _clamped_exp),
    Primitive("signed_log", 1, "elementwise", "slog({0})", _signed_log),
    Primitive("abs", 1, "elementwise", "|{0}|", torch.abs),
    Primitive("square", 1, "elementwise", "({0})²", torch.square),
    Primitive("signed_sqrt", 1, "elementwise", "ssqrt({0})", _signed_sqrt),
)

_AXIS_LABEL = {"batch": "bhw", "layer": "chw", "instance": "hw", "group": "ghw"}
_STAT_LABEL = {"mean": "mean", "std": "std", "second_moment": "sqmean"}
_AGGREGATIONS: tuple[Primitive, ...] = tuple(
    Primitive(
        f"{statistic}_{axes}",
        1,
        "aggregation",
        f"{_STAT_LABEL[statistic]}_{_AXIS_LABEL[axes]}({{0}})",
        statistic=statistic,
        axes=axes,
    )
    for statistic in ("mean", "std", "second_moment")
    for axes in ("batch", "layer", "instance", "group")
)

#: Operations printed as infix or prefix operators: their operands are parenthesized when themselves infix.
INFIX_OPS: frozenset[str] = frozenset({"add", "mul", "div", "neg"})

#: Every primitive by name: 12 element-wise operations and 12 aggregations (3 statistics x 4 axis families).
OPS: dict[str, Primitive] = {p.name: p for p in _ELEMENTWISE + _AGGREGATIONS}


def _variance(full: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Biased variance over ``dims`` (two passes; faster than ``torch.var`` on strided CPU reductions)."""
    centered = full - full.mean(dim=dims, keepdim=True)
    return centered.square().mean(dim=dims, keepdim=True)


def aggregate(
    value: torch.Tensor, statistic: str, axes: str, *, shape: torch.Size, groups: int, eps: float
) -> torch.Tensor:
    r"""A statistic of ``value`` (broadcast to ``shape``) over one axis family, kept broadcastable.

    .. math::
        \mu_I(z) = \operatorname{mean}_I z, \qquad s_I(z) = \sqrt{\operatorname{mean}_I (z - \mu_I z)^2 + \epsilon},
        \qquad \mu^2_I(z) = \operatorname{mean}_I z^2.

    Args:
        value: a tensor broadcastable to ``shape``.
        statistic: ``"mean"``, ``"std"`` or ``"second_moment"``.
        axes: ``"batch"`` ``(N, H, W)``, ``"layer"`` ``(C, H, W)``, ``"instance"`` ``(H, W)`` or ``"group"``
            ``(C/G, H, W)``.
        shape: the layer input's shape ``(N, C, H, W)``.
        groups: the number of channel groups ``G`` (divides ``C``).
        eps: added to the variance of ``std``.

    Returns:
        The statistic, of shape ``(1, C, 1, 1)`` (batch), ``(N, 1, 1, 1)`` (layer), ``(N, C, 1, 1)`` (instance and
        group, the latter repeated over each group's channels).
    """
    full = value.expand(shape)
    if axes == "group":
        n, c, h, w = shape
        full = full.reshape(n, groups, c // groups, h, w)
    dims = AGGREGATION_AXES[axes]
    if statistic == "mean":
        result = full.mean(dim=dims, keepdim=True)
    elif statistic == "std":
        result = (_variance(full, dims) + eps).sqrt()
    else:
        result = full.square().mean(dim=dims, keepdim=True)
    if axes == "group":
        n, c = shape[0], shape[1]
        result = result.expand(n, groups, c // groups, 1, 1).reshape(n, c, 1, 1)
    return result
