r"""Float32 arithmetic emulated exactly in numpy and torch, and errors measured in float32 ULPs.

Add and Mult are the float32 operations themselves (IEEE 754, round to nearest even). A fused multiply-add rounds
once: :math:`\operatorname{fma}(a, b, c) = \operatorname{rn}_{32}(ab + c)`. Emulating it in float64 is almost, but
not quite, a single rounding: :math:`ab` is exact in float64 (24 + 24 significant bits <= 53) but the sum
:math:`ab + c` is rounded to float64 first and then to float32, and that double rounding is wrong when the float64
sum lands on a float32 halfway point. The emulation here removes the double rounding with *round to odd*
(Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
IEEE Trans. Computers 57(4), 2008): the float64 sum is computed with its exact error (TwoSum, Knuth), nudged to the
neighbour with an odd last bit when it is inexact, and only then rounded to float32. Rounding to odd at 53 bits
followed by rounding to nearest at 24 <= 53 - 2 bits equals one rounding to nearest, so the result is the correctly
rounded float32 FMA, subnormals included. Since double rounding can only fail when the float64 sum is a float32
halfway point (or a float32 subnormal), only those rare entries take the round-to-odd path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from sciml_protocols import SciMLInputError

__all__ = [
    "FLOAT32_MIN_SUBNORMAL_EXPONENT",
    "fma_float32",
    "fma_float32_torch",
    "max_ulp_error",
    "ulp_error",
    "ulp_float32",
]

# A float64 whose low 29 significand bits are 1000...0 lies halfway between two normal float32 values.
_LOW_29_BITS = (1 << 29) - 1
_HALFWAY = 1 << 28
_SMALLEST_NORMAL = 2.0**-126

FLOAT32_MIN_SUBNORMAL_EXPONENT = -149
"""The smallest positive float32 is :math:`2^{-149}`; it is also the spacing of the subnormals."""

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


def fma_float32(a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike) -> Float32Array:
    r"""Correctly rounded float32 fused multiply-add :math:`\operatorname{rn}_{32}(ab + c)`, elementwise.

    Args:
        a: float32 values (anything that numpy casts to float32 exactly), broadcastable with ``b`` and ``c``.
        b: float32 values.
        c: float32 values.

    Returns:
        float32 array with the broadcast shape.

    Example:
        >>> a = np.float32(1 + 2**-12); c = np.float32(-(1 + 2**-11))
        >>> float(fma_float32(a, a, c)) == 2.0**-24  # (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 exactly
        True
        >>> float(a * a + c)  # two roundings lose it
        0.0
    """
    a64 = np.asarray(a, dtype=np.float32).astype(np.float64)
    b64 = np.asarray(b, dtype=np.float32).astype(np.float64)
    c64 = np.asarray(c, dtype=np.float32).astype(np.float64)
    with np.errstate(all="ignore"):
        total = np.asarray(a64 * b64 + c64)  # the product is exact: 48 significant bits, no float64 over/underflow
        result = total.astype(np.float32)
        # Rounding twice can only go wrong when the float64 sum sits on a float32 halfway point (or in the float32
        # subnormal range, where halfway points are coarser); redo those rare entries with round to odd.
        suspects = ((total.view(np.int64) & _LOW_29_BITS) == _HALFWAY) | (np.abs(total) < _SMALLEST_NORMAL)
        if np.any(suspects):
            shape = result.shape
            a64, b64, c64 = (np.broadcast_to(v, shape)[suspects] for v in (a64, b64, c64))
            result[suspects] = _round_to_odd_fma(a64, b64, c64)
        return result


def _round_to_odd_fma(a64: np.ndarray, b64: np.ndarray, c64: np.ndarray) -> np.ndarray:
    """The float32 FMA by round to odd (see the module notes), for float64 copies of float32 operands."""
    product = a64 * b64
    total = np.asarray(product + c64)
    # TwoSum: the exact rounding error of the float64 sum.
    virtual_c = total - product
    error = (product - (total - virtual_c)) + (c64 - virtual_c)
    bits = total.view(np.int64)
    inexact_even = (error != 0) & np.isfinite(error) & ((bits & 1) == 0)
    # One float64 ulp towards the exact value: away from zero when the error has the sum's sign.
    step = np.where((error > 0) == (total > 0), 1, -1).astype(np.int64)
    return np.where(inexact_even, bits + step, bits).view(np.float64).astype(np.float32)


def fma_float32_torch(a: torch.Tensor | float, b: torch.Tensor | float, c: torch.Tensor | float) -> torch.Tensor:
    r"""Torch twin of :func:`fma_float32`: :math:`\operatorname{rn}_{32}(ab + c)` for float32 tensors, bit for bit.

    Args:
        a: float32 tensor or a Python float that is exactly a float32 value.
        b: likewise.
        c: likewise; at least one of the three must be a tensor.

    Returns:
        float32 tensor with the broadcast shape, on the tensors' device.

    Example:
        >>> a = torch.tensor([1 + 2**-12], dtype=torch.float32)
        >>> fma_float32_torch(a, a, -(1 + 2**-11)).item() == 2.0**-24
        True
    """
    tensors = [t for t in (a, b, c) if isinstance(t, torch.Tensor)]
    if not tensors:
        raise SciMLInputError("a", "at least one of a, b, c must be a tensor")
    device = tensors[0].device

    def wide(value: torch.Tensor | float) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(torch.float64)
        return torch.tensor(value, dtype=torch.float64, device=device)

    a64, b64, c64 = wide(a), wide(b), wide(c)
    total = a64 * b64 + c64
    result = total.to(torch.float32)
    suspects = ((total.view(torch.int64) & _LOW_29_BITS) == _HALFWAY) | (total.abs() < _SMALLEST_NORMAL)
    where = suspects.reshape(-1).nonzero().squeeze(1)
    if where.numel() > 0:
        shape = result.shape
        a64, b64, c64 = (v.expand(shape).reshape(-1).index_select(0, where) for v in (a64, b64, c64))
        product = a64 * b64
        total = product + c64
        virtual_c = total - product
        error = (product - (total - virtual_c)) + (c64 - virtual_c)
        bits = total.view(torch.int64)
        inexact_even = (error != 0) & torch.isfinite(error) & ((bits & 1) == 0)
        step = torch.where((error > 0) == (total > 0), 1, -1)
        fixed = torch.where(inexact_even, bits + step, bits).view(torch.float64).to(torch.float32)
        result = result.reshape(-1).index_copy(0, where, fixed).reshape(shape)
    return result


def ulp_float32(y: npt.ArrayLike) -> Float64Array:
    r"""The float32 unit in the last place at the (real, float64) value ``y``.

    .. math:: \operatorname{ulp}(y) = 2^{\max(\lfloor \log_2 |y| \rfloor,\, -126) - 23},

    so the subnormals have the constant spacing :math:`2^{-149}` and ``ulp(0)`` is :math:`2^{-149}`. A correctly
    rounded float32 result is within 0.5 of these units of the exact value.

    Example:
        >>> ulp_float32([1.0, 1.5, 0.75, 0.0]).tolist() == [2.0**-23, 2.0**-23, 2.0**-24, 2.0**-149]
        True
    """
    magnitude = np.abs(np.asarray(y, dtype=np.float64))
    _, exponent = np.frexp(magnitude)  # magnitude = m 2^e with m in [0.5, 1): floor(log2) = e - 1
    exponent = np.where(magnitude > 0, exponent - 1, -126)
    return np.ldexp(1.0, np.maximum(exponent, -126) - 23)


def ulp_error(approximation: npt.ArrayLike, exact: npt.ArrayLike) -> Float64Array:
    r"""Elementwise error of float32 values in float32 ULPs of the exact (float64) values.

    .. math:: e = \frac{|\hat y - y|}{\operatorname{ulp}(y)}

    with :func:`ulp_float32`. An infinity counts as exact (0) when it is what rounding ``y`` to float32 gives (``y``
    infinite, or beyond the float32 range: overflow); any other infinity, and any NaN, counts as ``inf``.

    Example:
        >>> ulp_error(np.float32(1.0) + np.float32(2**-23), 1.0).tolist()
        1.0
        >>> ulp_error(np.float32([np.inf, np.inf]), [2.0**128, 2.0**127]).tolist()
        [0.0, inf]
    """
    approx64 = np.asarray(approximation, dtype=np.float64)
    exact64 = np.asarray(exact, dtype=np.float64)
    with np.errstate(all="ignore"):
        error = np.abs(approx64 - exact64) / ulp_float32(exact64)
        rounded = exact64.astype(np.float32).astype(np.float64)
    overflow_agrees = np.isinf(approx64) & (approx64 == rounded)
    error = np.where(overflow_agrees, 0.0, error)
    return np.where(np.isnan(error), np.inf, error)


def max_ulp_error(approximation: npt.ArrayLike, exact: npt.ArrayLike) -> float:
    """Largest :func:`ulp_error` over all entries (``inf`` when any entry is NaN or wrongly infinite).

    Example:
        >>> max_ulp_error(np.float32([1.0, 2.0]), [1.0, 2.0 + 2**-23])
        0.5
    """
    return float(np.max(ulp_error(approximation, exact)))
