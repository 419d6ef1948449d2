r"""PyTorch reference of the log-Bessel region scheme (Plesner, Sørensen, Hauberg, ICS 2024).

Every function here takes two float64 tensors of one shape, ``v >= 0`` and ``x >= 0``, and is differentiable in
both through autograd (that is how the derivative in the order ``v`` is obtained). Each element is evaluated by
exactly one region; the elements of a region are gathered, evaluated with a fixed number of terms and scattered
back, so no branch ever sees an element outside its domain (and no NaN can leak into a gradient through an unused
branch; inside a branch, removable singularities use the "double where"). Fixed trip counts everywhere: no loop
depends on the data.

Regions (DLMF 10.40, 10.41, 10.25, 10.32.9), thresholds adapted from the paper (see ``SMALL_X``):

* ``hankel`` (:math:`x > 30`, :math:`v^2 < 2x`): :math:`\log I_v(x) = x - \tfrac12\log(2\pi x) + \log\sum_{k=0}^{20}
  t_k`, :math:`t_k = -t_{k-1}(4v^2 - (2k-1)^2)/(8kx)` (for :math:`K_v` the signs do not alternate and
  :math:`\log K_v = -x + \tfrac12\log(\pi/2x) + \log\sum t_k`).
* ``debye`` (the rest of :math:`x > 30`, and :math:`v > 12.6964`): :math:`\log I_v(x) = -\tfrac12\log(2\pi)
  - \tfrac12\log\sqrt{v^2+x^2} + v\eta + \log(1 + \sum_{k=1}^{13} u_k(t)/v^k)` with :math:`t = v/\sqrt{v^2+x^2}`
  (and the alternating sum and :math:`-v\eta` for :math:`K_v`); :math:`v\eta` is formed relative to the zero of
  :math:`\eta`, without cancellation.
* ``small`` (:math:`v \le 12.6964`, :math:`x \le 30`): for :math:`I_v` the power series with 41 terms, for
  :math:`K_v` the integral :math:`\int_0^\infty e^{-x\cosh t}\cosh(vt)\,dt` by the trapezoidal rule on 160 nodes
  around its maximiser (spectrally accurate for this analytic integrand), for the ratio :math:`I_{v+1}/I_v` the
  continued fraction evaluated by a backward recurrence of fixed depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._bessel_math import (
    DEBYE_TERMS,
    HANKEL_TERMS,
    SERIES_TERMS,
    debye_coefficients,
    laplace_limit,
)

__all__ = [
    "INTEGRAL_NODES",
    "RATIO_DEPTH",
    "reference_iv_ratio",
    "reference_log_iv",
    "reference_log_kv",
    "regions",
]

INTEGRAL_NODES = 160
"""Trapezoidal nodes of the K integral."""
RATIO_DEPTH = 48
"""Depth of the backward recurrence of the continued fraction for I_{v+1}/I_v."""
# Depth (in log units below the integrand's maximum) beyond which the K integrand is dropped: e^-40 ~ 4e-18.
_CUT = 40.0
# On [0, a] with x cosh(t) <= e^-_PLATEAU the factor e^{-x cosh t} is 1 to within e^-_PLATEAU and the integral of
# cosh(vt) there is done in closed form (this keeps the grid short for tiny x).
_PLATEAU = 38.0

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_PI_2 = math.log(math.pi / 2.0)

_Z0_HEAD, _Z0_TAIL, _, _ = laplace_limit()
_Z0 = _Z0_HEAD + _Z0_TAIL
_S0 = math.sqrt(1.0 + _Z0 * _Z0)
# Anchored evaluation of v*eta for x/v in this window around z0 (elsewhere the textbook formula has no cancellation).
ANCHOR_LOW, ANCHOR_HIGH = 0.45, 0.9

# Region thresholds. The paper's Hankel tests (x > 30 and v < 15.39, or 0.5113 ln x + 0.7939 > ln v) admit
# 4v^2/(8x) up to about 3, where 20 Hankel terms leave a relative truncation error of 1e-9 in the sum: harmless for
# log I_v (whose size is x) but not for log I_v - x or for the ratio I_{v+1}/I_v. We use Hankel only for
# v^2 < HANKEL_C x (terms below 1/k!), Debye for the rest of x > 30 and for v > DEBYE_V, and the small-argument
# methods for v <= DEBYE_V, x <= SMALL_X, where the 41-term series, the integral and the continued fraction are all
# accurate to a few ulps.
SMALL_X = 30.0
HANKEL_C = 2.0
DEBYE_V = 12.6964

_HEAD_MASK = ~((1 << 27) - 1)


def regions(v: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Boolean masks ``(hankel, debye, small)`` of the region scheme; exactly one is true per element."""
    with torch.no_grad():
        hankel = (x > SMALL_X) & (v * v < HANKEL_C * x)
        debye = ~hankel & ((x > SMALL_X) | (v > DEBYE_V))
        small = ~(hankel | debye)
    return hankel, debye, small


# --------------------------------------------------------------------------------------------------------------
# building blocks (1-D float64 tensors of one region)


def _head(v: Tensor) -> Tensor:
    """``v`` with its 27 low mantissa bits cleared: a 26-bit head, so ``head * _Z0_HEAD`` is exact."""
    bits = v.detach().contiguous().view(torch.int64)
    return (bits & _HEAD_MASK).view(torch.float64)


def v_eta(v: Tensor, x: Tensor) -> Tensor:
    r""":math:`v\eta(x/v) = \sqrt{v^2+x^2} - v\operatorname{asinh}(v/x)` for ``v, x > 0``, without cancellation.

    Near the zero :math:`z_0` of :math:`\eta` both terms are about :math:`v` and their difference is small, so the
    textbook formula loses :math:`v\epsilon` in absolute terms. There we write :math:`z = z_0 + e` with
    :math:`v e = x - z_0 v` formed exactly (a 26-bit split of ``v`` and a two-part :math:`z_0`), and
    :math:`\eta(z) = \eta(z) - \eta(z_0)` as a sum of three terms that are each relatively accurate:
    :math:`\sqrt{1+z^2} - \sqrt{1+z_0^2} = e(2z_0+e)/(\sqrt{1+z^2}+\sqrt{1+z_0^2})`, :math:`\log(z/z_0)` and
    :math:`\log((1+\sqrt{1+z^2})/(1+\sqrt{1+z_0^2}))`.
    """
    h = torch.hypot(v, x)
    plain = h - v * torch.asinh(v / x)
    z = x / v
    near = (z > ANCHOR_LOW) & (z < ANCHOR_HIGH)
    v_hi = _head(v)
    delta = ((x - _Z0_HEAD * v_hi) - _Z0_HEAD * (v - v_hi)) - _Z0_TAIL * v
    # the "double where": elements outside the window get a harmless delta so no inf/NaN reaches a gradient
    delta = torch.where(near, delta, torch.zeros_like(delta))
    e = delta / v
    s = h / v
    d1 = (2.0 * _Z0 + e) / (s + _S0)
    anchored = delta * d1 + v * torch.log1p(e / _Z0) - v * torch.log1p(e * d1 / (1.0 + _S0))
    return torch.where(near, anchored, plain)


def _debye_sum(v: Tensor, x: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    r"""``(sum_{k>=1} (sign/v)^k u_k(t), h)``, :math:`h = \sqrt{v^2+x^2}`, using :math:`u_k(t)/v^k = P_k(t^2)/h^k`."""
    h = torch.hypot(v, x)
    rho = sign / h
    p = (v / h) ** 2
    total = torch.zeros_like(h)
    power = torch.ones_like(h)
    for coefficients in debye_coefficients(DEBYE_TERMS):
        power = power * rho
        acc = torch.full_like(h, coefficients[0])
        for c in coefficients[1:]:
            acc = acc * p + c
        total = total + power * acc
    return total, h


def _hankel_sum(v: Tensor, x: Tensor, sign: float) -> Tensor:
    r""":math:`\sum_{k=0}^{20} t_k` with :math:`t_k = \mathrm{sign}\, t_{k-1} (4v^2 - (2k-1)^2)/(8kx)`, minus one."""
    mu = 4.0 * v * v
    term = torch.ones_like(x)
    total = torch.zeros_like(x)
    for k in range(1, HANKEL_TERMS + 1):
        term = term * (sign * (mu - float((2 * k - 1) ** 2)) / (8.0 * k) / x)
        total = total + term
    return total


def _hankel_log_iv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    out = -0.5 * (_LOG_2PI + torch.log(x)) + torch.log1p(_hankel_sum(v, x, -1.0))
    return out if scaled else out + x


def _hankel_log_kv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    out = 0.5 * (_LOG_PI_2 - torch.log(x)) + torch.log1p(_hankel_sum(v, x, 1.0))
    return out if scaled else out - x


def _debye_exponent(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    """``v eta`` or, scaled, ``v eta - x`` (the latter without forming ``hypot(v, x) - x`` by subtraction)."""
    if not scaled:
        return v_eta(v, x)
    z = x / v
    near = (z > ANCHOR_LOW) & (z < ANCHOR_HIGH)
    h = torch.hypot(v, x)
    plain = v * v / (h + x) - v * torch.asinh(v / x)
    return torch.where(near, v_eta(v, x) - x, plain)


def _debye_log_iv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    total, h = _debye_sum(v, x, 1.0)
    return -0.5 * (_LOG_2PI + torch.log(h)) + _debye_exponent(v, x, scaled) + torch.log1p(total)


def _debye_log_kv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    total, h = _debye_sum(v, x, -1.0)
    return 0.5 * (_LOG_PI_2 - torch.log(h)) - _debye_exponent(v, x, scaled) + torch.log1p(total)


def _series_log_iv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    r""":math:`v\log(x/2) - \log\Gamma(v+1) + \log\sum_{m=0}^{40} \prod_{j\le m} (x^2/4)/(j(v+j))` for ``x > 0``."""
    q = 0.25 * x * x
    term = torch.ones_like(x)
    total = torch.ones_like(x)
    for m in range(1, SERIES_TERMS):
        term = term * q / (m * (v + m))
        total = total + term
    out = v * torch.log(0.5 * x) - torch.lgamma(v + 1.0) + torch.log(total)
    return out - x if scaled else out


def _log_cosh(y: Tensor) -> Tensor:
    a = y.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def _phi(t: Tensor, v: Tensor, x: Tensor) -> Tensor:
    """Log of the K integrand, ``-x cosh t + log cosh(v t)``."""
    return -x * torch.cosh(t) + _log_cosh(v * t)


_CHUNK = 2048


def _trapezoid(v: Tensor, x: Tensor, a: Tensor, step: Tensor, shift: Tensor) -> Tensor:
    r"""Trapezoidal sum of :math:`e^{\phi(t) - \mathrm{shift}}` over the nodes :math:`a + i\,\mathrm{step}`.

    Evaluated on (chunk, nodes) matrices with three exponentials per node:
    :math:`e^{\phi} = e^{-x\cosh t + vt - \log 2}(1 + e^{-2vt})`, whose first factor never exceeds :math:`e^{\phi}`.
    """
    nodes = torch.arange(INTEGRAL_NODES, dtype=x.dtype, device=x.device)
    weights = torch.ones(INTEGRAL_NODES, dtype=x.dtype, device=x.device)
    weights[0] = 0.5
    weights[-1] = 0.5
    parts = []
    for start in range(0, x.numel(), _CHUNK):
        sl = slice(start, start + _CHUNK)
        t = a[sl, None] + step[sl, None] * nodes
        e = torch.exp(t)
        vt = v[sl, None] * t
        main = torch.exp(vt - x[sl, None] * (0.5 * (e + 1.0 / e)) - (math.log(2.0) + shift[sl, None]))
        # a row-wise sum (not a matmul, whose blocking depends on the batch): results independent of batch shape
        parts.append((main * (1.0 + torch.exp(-2.0 * vt)) * weights).sum(dim=1))
    return torch.cat(parts) if parts else torch.zeros_like(x)


def _log_sinh_over_tanh(v: Tensor, a: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log(\sinh(va)\coth(hv/2) h/2)`, continuous as :math:`v \to 0` (limit :math:`\log a`), for ``a > 0``."""
    y = v * a
    w = 0.5 * h * v
    small_y = y < 1e-4
    small_w = w < 1e-4
    y_safe = torch.where(small_y, torch.ones_like(y), y)
    w_safe = torch.where(small_w, torch.ones_like(w), w)
    # log(sinh(y) / y) and log(tanh(w) / w), with their Taylor forms near 0
    log_sinhc = torch.where(small_y, y * y / 6.0, y_safe + torch.log(-torch.expm1(-2.0 * y_safe) / (2.0 * y_safe)))
    log_tanhc = torch.where(small_w, -w * w / 3.0, torch.log(torch.tanh(w_safe) / w_safe))
    return log_sinhc - log_tanhc + torch.log(a)


def _integral_log_kv(v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    r"""Log of :math:`K_v(x) = \int_0^\infty e^{-x\cosh t}\cosh(vt)\,dt` for ``x > 0`` (trapezoidal rule).

    The window :math:`[a, b]` holds every node where the integrand is within :math:`e^{-40}` of its maximum; the
    nodes are detached from the graph, so autograd differentiates the quadrature of the integrand, which is the
    quadrature of :math:`\partial_v` of the integrand.
    """
    with torch.no_grad():
        vd, xd = v.detach(), x.detach()
        # maximiser t*: root of x sinh t = v tanh(v t) (t* = 0 when v^2 <= x); Newton from the right, where the
        # function is convex and increasing, converges monotonically.
        t = torch.asinh(vd / xd)
        for _ in range(12):
            g = xd * torch.sinh(t) - vd * torch.tanh(vd * t)
            dg = xd * torch.cosh(t) - vd * vd / torch.cosh(vd * t) ** 2
            step = torch.where(dg > 0, g / dg, torch.zeros_like(g))
            t = torch.clamp(t - torch.clamp(step, min=0.0), min=0.0)
        t = torch.where(vd * vd <= xd, torch.zeros_like(t), t)
        peak = _phi(t, vd, xd)
        # right end: v b - x e^b / 2 <= peak - CUT, i.e. y - v log y >= CUT - peak + v log(2/x) with y = x e^b / 2.
        log_2_over_x = math.log(2.0) - torch.log(xd)
        rhs = _CUT - peak + vd * log_2_over_x
        y = torch.clamp(rhs, min=1.0)
        for _ in range(8):
            y = torch.clamp(rhs + vd * torch.log(y), min=1.0)
        b = torch.maximum(torch.log(y) + log_2_over_x, t + 1e-3)
        # left end: where the integrand is negligible (cosh(vt) <= e^{vt}, cosh t >= 1) or where x cosh t is
        # negligible (the "plateau", integrated in closed form).
        a_negligible = torch.where(vd > 0, (peak - _CUT + xd) / torch.where(vd > 0, vd, torch.ones_like(vd)), 0.0)
        a_plateau = log_2_over_x - _PLATEAU
        a = torch.clamp(torch.maximum(a_negligible, a_plateau), min=0.0)
        plateau = (a > 0) & (a_plateau >= a_negligible)
        step = (b - a) / (INTEGRAL_NODES - 1)
    # log K = peak + log(sum of e^{phi - peak}); the (detached) level carries the size of the result, the sum its
    # derivatives. Scaled, the level is peak + x = -x (cosh t* - 1) + log cosh(v t*), formed without cancellation,
    # and (x - x.detach()) restores the derivative 1 of the added x.
    log_core = torch.log(_trapezoid(v, x, a, step, peak)) + torch.log(step)
    if scaled:
        with torch.no_grad():
            level = -xd * (2.0 * torch.sinh(0.5 * t) ** 2) + _log_cosh(vd * t)
        level = level + (x - x.detach())
    else:
        level = peak
    log_k = level + log_core
    # closed-form plateau: int_0^a cosh(vt) dt plus the Euler-Maclaurin end correction at a, together
    # (h/2) sinh(v a) coth(h v / 2).
    a_safe = torch.where(plateau, a, torch.ones_like(a))
    log_plateau = _log_sinh_over_tanh(v, a_safe, step)
    if scaled:
        log_plateau = log_plateau + x
    return torch.where(plateau, torch.logaddexp(log_k, log_plateau), log_k)


def _ratio_cf(v: Tensor, x: Tensor) -> Tensor:
    r""":math:`I_{v+1}/I_v` by the backward recurrence :math:`r_{w-1} = x/(2w + x r_w)` from depth 48."""
    w = v + (RATIO_DEPTH + 1)
    r = x / (w + torch.sqrt(w * w + x * x))
    for j in range(RATIO_DEPTH, 0, -1):
        r = x / (2.0 * (v + j) + x * r)
    return r


def _ratio_hankel(v: Tensor, x: Tensor) -> Tensor:
    return (1.0 + _hankel_sum(v + 1.0, x, -1.0)) / (1.0 + _hankel_sum(v, x, -1.0))


def _ratio_debye(v: Tensor, x: Tensor) -> Tensor:
    r"""``exp(log I_{v+1} - log I_v)`` with the difference of the Debye forms taken analytically."""
    h0 = torch.hypot(v, x)
    h1 = torch.hypot(v + 1.0, x)
    two_v_1 = 2.0 * v + 1.0
    exponent = (
        two_v_1 / (h1 + h0)
        - torch.asinh((v + 1.0) / x)
        - v * torch.asinh(two_v_1 / ((v + 1.0) * h0 + v * h1))
        - 0.25 * torch.log1p(two_v_1 / (h0 * h0))
    )
    s0, _ = _debye_sum(v, x, 1.0)
    s1, _ = _debye_sum(v + 1.0, x, 1.0)
    return torch.exp(exponent + torch.log1p(s1) - torch.log1p(s0))


# --------------------------------------------------------------------------------------------------------------
# assembly

_Branch = Callable[[Tensor, Tensor], Tensor]


def _evaluate(v: Tensor, x: Tensor, branches: tuple[_Branch, _Branch, _Branch], fill: Tensor) -> Tensor:
    """Evaluate each region's branch on its own elements only; ``fill`` holds the values of special points."""
    hankel, debye, small = regions(v, x)
    special = torch.isnan(fill).logical_not()
    out = fill
    for mask, branch in zip((hankel, debye, small), branches, strict=True):
        mask = mask & ~special
        if bool(mask.any()):
            index = mask.nonzero(as_tuple=True)
            out = out.index_put(index, branch(v[index], x[index]))
    return out


def _special_fill(v: Tensor, x: Tensor, at_zero: Tensor) -> Tensor:
    """NaN everywhere except at special points: ``at_zero`` where ``x == 0``, NaN inputs / negative inputs stay NaN."""
    nan = torch.full_like(x, math.nan)
    return torch.where((x == 0) & (v >= 0), at_zero, nan)


def _prepare(v: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    v, x = v.reshape(-1), x.reshape(-1)
    bad = (v < 0) | (x < 0) | torch.isnan(v) | torch.isnan(x)
    # bad points are evaluated at a harmless place and overwritten with NaN at the end
    one = torch.ones_like(x)
    return torch.where(bad, one, v), torch.where(bad, one, x), bad


def reference_log_iv(v: Tensor, x: Tensor, *, scaled: bool = False) -> Tensor:
    """``log I_v(x)`` (or ``log I_v(x) - x`` when ``scaled``) for float64 tensors of one shape."""
    vs, xs, bad = _prepare(v, x)
    zero_value = torch.where(vs == 0, torch.zeros_like(xs), torch.full_like(xs, -math.inf))
    fill = _special_fill(vs, xs, zero_value)
    fill = torch.where(torch.isinf(xs) | torch.isinf(vs), _inf_log_iv(vs, xs), fill)
    out = _evaluate(
        vs,
        xs,
        (
            lambda a, b: _hankel_log_iv(a, b, scaled),
            lambda a, b: _debye_log_iv(a, b, scaled),
            lambda a, b: _series_log_iv(a, b, scaled),
        ),
        fill,
    )
    return torch.where(bad, torch.full_like(out, math.nan), out).reshape(v.shape)


def _inf_log_iv(v: Tensor, x: Tensor) -> Tensor:
    # x = inf: +inf (scaled: the limit -inf of -log(2 pi x)/2 is not needed by callers); v = inf: -inf
    return torch.where(torch.isinf(v), torch.full_like(x, -math.inf), torch.full_like(x, math.inf))


def reference_log_kv(v: Tensor, x: Tensor, *, scaled: bool = False) -> Tensor:
    """``log K_v(x)`` (or ``log K_v(x) + x`` when ``scaled``) for float64 tensors of one shape."""
    vs, xs, bad = _prepare(v, x)
    fill = _special_fill(vs, xs, torch.full_like(xs, math.inf))
    fill = torch.where(
        torch.isinf(vs) & (xs > 0), torch.full_like(xs, math.inf), torch.where(torch.isinf(xs), -xs, fill)
    )
    out = _evaluate(
        vs,
        xs,
        (
            lambda a, b: _hankel_log_kv(a, b, scaled),
            lambda a, b: _debye_log_kv(a, b, scaled),
            lambda a, b: _integral_log_kv(a, b, scaled),
        ),
        fill,
    )
    return torch.where(bad, torch.full_like(out, math.nan), out).reshape(v.shape)


def reference_iv_ratio(v: Tensor, x: Tensor) -> Tensor:
    """``I_{v+1}(x) / I_v(x)`` for float64 tensors of one shape."""
    vs, xs, bad = _prepare(v, x)
    fill = _special_fill(vs, xs, torch.zeros_like(xs))
    fill = torch.where(torch.isinf(xs) & ~torch.isinf(vs), torch.ones_like(xs), fill)
    fill = torch.where(torch.isinf(vs) & ~torch.isinf(xs), torch.zeros_like(xs), fill)
    out = _evaluate(vs, xs, (_ratio_hankel, _ratio_debye, _ratio_cf), fill)
    return torch.where(bad, torch.full_like(out, math.nan), out).reshape(v.shape)
