r"""Constants of the log-Bessel region scheme, generated exactly at import (no copied tables).

* The Debye polynomials :math:`u_k(t)` of DLMF 10.41.10, from the recurrence
  :math:`u_{k+1}(t) = \tfrac12 t^2 (1 - t^2) u_k'(t) + \tfrac18 \int_0^t (1 - 5 s^2) u_k(s)\,ds`, in exact rational
  arithmetic (:mod:`fractions`), rounded once to float64.
* The zero :math:`z_0` of :math:`\eta(z) = \sqrt{1+z^2} - \operatorname{asinh}(1/z)` (the Laplace limit constant,
  0.66274...), to 40 digits with :mod:`decimal`, split into a 26-bit head and a tail, so that
  :math:`x - z_0 v` can be formed without rounding error. The Debye exponent :math:`v\eta(x/v)` is evaluated relative
  to this zero; that removes the :math:`v \epsilon` cancellation of the textbook formula near :math:`\eta = 0`.
"""

from __future__ import annotations

import decimal
import struct
from fractions import Fraction
from functools import cache

__all__ = [
    "DEBYE_TERMS",
    "HANKEL_TERMS",
    "SERIES_TERMS",
    "debye_coefficients",
    "laplace_limit",
    "split_bits",
]

DEBYE_TERMS = 13
"""Number of Debye correction terms :math:`u_1 .. u_{13}` (the paper's largest count)."""
HANKEL_TERMS = 20
"""Number of Hankel correction terms (the paper's largest count)."""
SERIES_TERMS = 41
"""Terms of the power series :math:`m = 0 .. 40` (the paper's count)."""


@cache
def debye_polynomials(n: int = DEBYE_TERMS) -> tuple[tuple[Fraction, ...], ...]:
    """Exact coefficients of :math:`u_0 .. u_n` in powers of :math:`t` (index = power)."""
    polys: list[list[Fraction]] = [[Fraction(1)]]
    for _ in range(n):
        u = polys[-1]
        # 1/2 t^2 (1 - t^2) u'(t)
        deriv = [Fraction(i) * c for i, c in enumerate(u)][1:]
        out = [Fraction(0)] * (len(u) + 3)
        for i, c in enumerate(deriv):
            out[i + 2] += c / 2
            out[i + 4] -= c / 2
        # 1/8 int_0^t (1 - 5 s^2) u(s) ds
        for i, c in enumerate(u):
            out[i + 1] += c / (8 * (i + 1))
            out[i + 3] -= 5 * c / (8 * (i + 3))
        while out and out[-1] == 0:
            out.pop()
        polys.append(out)
    return tuple(tuple(p) for p in polys)


@cache
def debye_coefficients(n: int = DEBYE_TERMS) -> tuple[tuple[float, ...], ...]:
    r"""Float64 coefficients of :math:`P_k(p)` with :math:`u_k(t) = t^k P_k(t^2)`, for :math:`k = 1..n`.

    Each tuple lists the coefficients of :math:`P_k` from the highest power of :math:`p` down (Horner order).

    Example:
        >>> debye_coefficients(2)[0]  # u_1(t) = (3 t - 5 t^3) / 24
        (-0.20833333333333334, 0.125)
    """
    out: list[tuple[float, ...]] = []
    for k, poly in enumerate(debye_polynomials(n)):
        if k == 0:
            continue
        # u_k has only the powers t^k, t^(k+2), ..., t^(3k).
        coefficients = [float(poly[k + 2 * i]) if k + 2 * i < len(poly) else 0.0 for i in range(k + 1)]
        out.append(tuple(reversed(coefficients)))
    return tuple(out)


def _float_bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def split_bits(value: float, low_bits: int = 27) -> float:
    """``value`` with its lowest ``low_bits`` mantissa bits cleared (a head with 53 - low_bits significant bits)."""
    return _bits_float(_float_bits(value) & ~((1 << low_bits) - 1))


@cache
def laplace_limit() -> tuple[float, float, float, float]:
    r"""The zero :math:`z_0` of :math:`\eta(z)`, as ``(head26, tail, head_float32_12bits, tail_float32)``.

    ``head26`` carries 26 significant bits so that ``head26 * v_head`` is exact in float64 for a 26-bit ``v_head``;
    the float32 pair does the same with 12-bit heads.

    Example:
        >>> head, tail, _, _ = laplace_limit()
        >>> abs(head + tail - 0.6627434193491816) < 1e-16
        True
    """
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        one = decimal.Decimal(1)

        def eta(z: decimal.Decimal) -> decimal.Decimal:
            s = (one + z * z).sqrt()
            return s + (z / (one + s)).ln()

        z = decimal.Decimal("0.66")
        for _ in range(60):
            # eta'(z) = sqrt(1 + z^2) / z
            z = z - eta(z) * z / (one + z * z).sqrt()
        head = split_bits(float(z), 27)
        tail = float(z - decimal.Decimal(head))
        head32 = split_bits(float(z), 29 + 12)  # 12 significant bits
        tail32 = float(z - decimal.Decimal(head32))
    return head, tail, head32, tail32
