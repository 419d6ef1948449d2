"""Triton kernels of the log-Bessel region scheme (imported lazily: only when the Triton path runs).

One elementwise kernel, specialised at compile time on the function (``KIND``: 0 ``log_iv``, 1 ``log_kv``, 2
``iv_ratio``), the exponential scaling and the compute precision: float64 inputs compute in float64, everything else
(float32, float16, bfloat16) in float32. It implements the same regions, thresholds and fixed trip counts as the
PyTorch reference (``sciml_special._bessel``): each element selects its region with ``tl.where``; a block skips the
work of a region none of its elements needs (a uniform branch on a block reduction, so there is still no
data-dependent loop). Every branch runs on substituted harmless inputs outside its region, so nothing overflows or
produces NaN in lanes whose result is discarded.

Only core ``triton.language`` operations are used (``exp``, ``log``, ``sqrt``, ``fma``, bit casts): ``log1p``,
``asinh``, ``hypot`` and ``lgamma`` are written out here, so the same code runs under the interpreter
(``TRITON_INTERPRET=1``), which has no libdevice. The Debye coefficients are read from a small tensor (generated
exactly by ``_bessel_math``) rather than baked into the source.
"""

# The Triton DSL is not typeable: constexpr parameters take Python numbers, block reductions compare with ints.
# pyright: reportArgumentType=false, reportOperatorIssue=false, reportCallIssue=false, reportGeneralTypeIssues=false

from __future__ import annotations

import math

import torch
import triton  # noqa: TID253 - this module is imported only when the Triton path runs
import triton.language as tl  # noqa: TID253
from sciml_special import _bessel as ref
from sciml_special._bessel_math import DEBYE_TERMS, HANKEL_TERMS, SERIES_TERMS, debye_coefficients, laplace_limit

__all__ = ["KINDS", "launch"]

KINDS = {"log_iv": 0, "log_kv": 1, "iv_ratio": 2}

_Z0A, _Z0B, _Z0A32, _Z0B32 = laplace_limit()
Z0A: tl.constexpr = tl.constexpr(_Z0A)
Z0B: tl.constexpr = tl.constexpr(_Z0B)
Z0A32: tl.constexpr = tl.constexpr(_Z0A32)
Z0B32: tl.constexpr = tl.constexpr(_Z0B32)
Z0: tl.constexpr = tl.constexpr(_Z0A + _Z0B)
S0: tl.constexpr = tl.constexpr(math.sqrt(1.0 + (_Z0A + _Z0B) ** 2))
LOG_2PI: tl.constexpr = tl.constexpr(math.log(2.0 * math.pi))
LOG_PI_2: tl.constexpr = tl.constexpr(math.log(math.pi / 2.0))
LN2: tl.constexpr = tl.constexpr(math.log(2.0))
HALF_LOG_2PI: tl.constexpr = tl.constexpr(0.5 * math.log(2.0 * math.pi))
SMALL_X: tl.constexpr = tl.constexpr(ref.SMALL_X)
HANKEL_C: tl.constexpr = tl.constexpr(ref.HANKEL_C)
DEBYE_V: tl.constexpr = tl.constexpr(ref.DEBYE_V)
ANCHOR_LOW: tl.constexpr = tl.constexpr(ref.ANCHOR_LOW)
ANCHOR_HIGH: tl.constexpr = tl.constexpr(ref.ANCHOR_HIGH)
N_DEBYE: tl.constexpr = tl.constexpr(DEBYE_TERMS)
N_HANKEL: tl.constexpr = tl.constexpr(HANKEL_TERMS)
N_SERIES: tl.constexpr = tl.constexpr(SERIES_TERMS)
N_NODES: tl.constexpr = tl.constexpr(ref.INTEGRAL_NODES)
RATIO_DEPTH: tl.constexpr = tl.constexpr(ref.RATIO_DEPTH)
CUT: tl.constexpr = tl.constexpr(ref._CUT)  # pyright: ignore[reportPrivateUsage]
PLATEAU: tl.constexpr = tl.constexpr(ref._PLATEAU)  # pyright: ignore[reportPrivateUsage]
COEF_STRIDE: tl.constexpr = tl.constexpr(DEBYE_TERMS + 1)

_BLOCK = 256
_BLOCK_INTERPRET = 4096


# ----------------------------------------------------------------------------------------------- elementary functions


@triton.jit
def _log1p(y):
    # Kahan: log(u) * y / (u - 1) with u = 1 + y is accurate to a few ulps (and exact-ish where u rounds to 1)
    u = 1.0 + y
    d = u - 1.0
    safe_d = tl.where(d == 0.0, 1.0, d)
    small = tl.where(d == 0.0, y, tl.log(u) * (y / safe_d))
    return tl.where(y > 1e15, tl.log(tl.maximum(y, 1.0)), small)


@triton.jit
def _expm1_neg(y):
    # expm1(y) for y <= 0 (Kahan's form)
    u = tl.exp(y)
    d = u - 1.0
    log_u = tl.log(tl.where(u == 0.0, 1.0, u))
    safe = tl.where(log_u == 0.0, 1.0, log_u)
    out = tl.where(u == 1.0, y, d * y / safe)
    return tl.where(u == 0.0, -1.0, out)


@triton.jit
def _asinh(y):
    # y >= 0
    big = y > 1e8
    ys = tl.where(big, 1.0, y)
    small = _log1p(ys + ys * ys / (1.0 + tl.sqrt(1.0 + ys * ys)))
    return tl.where(big, tl.log(tl.where(big, y, 1.0)) + LN2, small)


@triton.jit
def _hypot(a, b):
    # a, b >= 0
    m = tl.maximum(a, b)
    n = tl.minimum(a, b)
    r = n / tl.where(m == 0.0, 1.0, m)
    return m * tl.sqrt(1.0 + r * r)


@triton.jit
def _log_cosh(y):
    a = tl.abs(y)
    return a + _log1p(tl.exp(-2.0 * a)) - LN2


@triton.jit
def _lgamma_1p(v):
    # log Gamma(v + 1) for 0 <= v <= ~15: shift by 10, Stirling with 7 correction terms
    y = v + 1.0
    prod = y
    for i in tl.static_range(1, 10):
        prod = prod * (y + i)
    w = y + 10.0
    wi = 1.0 / w
    wi2 = wi * wi
    series = wi * (
        1.0 / 12.0
        + wi2
        * (
            -1.0 / 360.0
            + wi2
            * (1.0 / 1260.0 + wi2 * (-1.0 / 1680.0 + wi2 * (1.0 / 1188.0 + wi2 * (-691.0 / 360360.0 + wi2 / 156.0))))
        )
    )
    return (w - 0.5) * tl.log(w) - w + HALF_LOG_2PI + series - tl.log(prod)


# ----------------------------------------------------------------------------------------------- region formulas


@triton.jit
def _hankel_sum(v, x, SIGN: tl.constexpr):
    mu = 4.0 * v * v
    term = tl.full(x.shape, 1.0, x.dtype)
    total = tl.zeros(x.shape, x.dtype)
    for k in tl.static_range(1, N_HANKEL + 1):
        term = term * (SIGN * (mu - (2 * k - 1) * (2 * k - 1)) / (8.0 * k)) / x
        total = total + term
    return total


@triton.jit
def _debye_sum(v, x, coef_ptr, SIGN: tl.constexpr):
    h = _hypot(v, x)
    rho = SIGN / h
    t = v / h
    p = t * t
    total = tl.zeros(x.shape, x.dtype)
    power = tl.full(x.shape, 1.0, x.dtype)
    for k in tl.static_range(1, N_DEBYE + 1):
        power = power * rho
        acc = tl.zeros(x.shape, x.dtype) + tl.load(coef_ptr + (k - 1) * COEF_STRIDE).to(x.dtype)
        for i in tl.static_range(1, k + 1):
            acc = acc * p + tl.load(coef_ptr + (k - 1) * COEF_STRIDE + i).to(x.dtype)
        total = total + power * acc
    return total, h


@triton.jit
def _v_eta(v, x, h, IS_F64: tl.constexpr):
    # v * eta(x / v) = hypot(v, x) - v asinh(v / x), anchored at the zero z0 of eta near x = z0 v (see _bessel.v_eta)
    plain = h - v * _asinh(v / x)
    z = x / v
    near = (z > ANCHOR_LOW) & (z < ANCHOR_HIGH)
    if IS_F64:
        v_hi = (v.to(tl.int64, bitcast=True) & -134217728).to(tl.float64, bitcast=True)
        delta = ((x - Z0A * v_hi) - Z0A * (v - v_hi)) - Z0B * v
    else:
        v_hi = (v.to(tl.int32, bitcast=True) & -4096).to(tl.float32, bitcast=True)
        delta = ((x - Z0A32 * v_hi) - Z0A32 * (v - v_hi)) - Z0B32 * v
    delta = tl.where(near, delta, 0.0)
    e = delta / v
    s = h / v
    d1 = (2.0 * Z0 + e) / (s + S0)
    anchored = delta * d1 + v * _log1p(e / Z0) - v * _log1p(e * d1 / (1.0 + S0))
    return tl.where(near, anchored, plain), near


@triton.jit
def _debye_exponent(v, x, h, SCALED: tl.constexpr, IS_F64: tl.constexpr):
    value, near = _v_eta(v, x, h, IS_F64)
    if SCALED:
        plain = v * v / (h + x) - v * _asinh(v / x)
        value = tl.where(near, value - x, plain)
    return value


@triton.jit
def _series_log_iv(v, x, SCALED: tl.constexpr, IS_F64: tl.constexpr):
    q = 0.25 * x * x
    term = tl.full(x.shape, 1.0, x.dtype)
    total = tl.full(x.shape, 1.0, x.dtype)
    for m in tl.static_range(1, N_SERIES):
        term = term * q / (m * (v + m))
        total = total + term
    if IS_F64:
        head = v * tl.log(0.5 * x) - _lgamma_1p(v)
    else:
        # v log(x/2) and log Gamma(v+1) are both up to ~40 and cancel: in float32 that alone costs ~1e-5, so this
        # short prologue runs in float64 (a few dozen operations per element of the small region)
        v64 = v.to(tl.float64)
        head = (v64 * tl.log(0.5 * x.to(tl.float64)) - _lgamma_1p(v64)).to(tl.float32)
    out = head + tl.log(total)
    if SCALED:
        out = out - x
    return out


@triton.jit
def _phi(t, v, x):
    e = tl.exp(t)
    return -x * 0.5 * (e + 1.0 / e) + _log_cosh(v * t)


@triton.jit
def _log_sinh_over_tanh(v, a, h):
    # log(sinh(v a) coth(h v / 2) h / 2) for a > 0, continuous as v -> 0
    y = v * a
    w = 0.5 * h * v
    small_y = y < 1e-4
    small_w = w < 1e-4
    ys = tl.where(small_y, 1.0, y)
    ws = tl.where(small_w, 1.0, w)
    log_sinhc = tl.where(small_y, y * y / 6.0, ys + tl.log(-_expm1_neg(-2.0 * ys) / (2.0 * ys)))
    e2 = tl.exp(-2.0 * ws)
    tanh_w = -_expm1_neg(-2.0 * ws) / (1.0 + e2)
    log_tanhc = tl.where(small_w, -w * w / 3.0, tl.log(tanh_w / ws))
    return log_sinhc - log_tanhc + tl.log(a)


@triton.jit
def _integral_log_kv(v, x, SCALED: tl.constexpr):
    # maximiser of -x cosh t + log cosh(v t): Newton from asinh(v / x), from the right of the root (monotone)
    t = _asinh(v / x)
    for _ in tl.static_range(12):
        e = tl.exp(t)
        sinh_t = 0.5 * (e - 1.0 / e)
        cosh_t = 0.5 * (e + 1.0 / e)
        e2 = tl.exp(-2.0 * v * t)
        tanh_vt = (1.0 - e2) / (1.0 + e2)
        sech2 = 4.0 * e2 / ((1.0 + e2) * (1.0 + e2))
        g = x * sinh_t - v * tanh_vt
        dg = x * cosh_t - v * v * sech2
        step = tl.where(dg > 0.0, g / tl.where(dg > 0.0, dg, 1.0), 0.0)
        t = tl.maximum(t - tl.maximum(step, 0.0), 0.0)
    t = tl.where(v * v <= x, 0.0, t)
    peak = _phi(t, v, x)
    log_2_over_x = LN2 - tl.log(x)
    rhs = CUT - peak + v * log_2_over_x
    y = tl.maximum(rhs, 1.0)
    for _ in tl.static_range(8):
        y = tl.maximum(rhs + v * tl.log(y), 1.0)
    b = tl.maximum(tl.log(y) + log_2_over_x, t + 1e-3)
    v_safe = tl.where(v > 0.0, v, 1.0)
    a_negligible = tl.where(v > 0.0, (peak - CUT + x) / v_safe, 0.0)
    a_plateau = log_2_over_x - PLATEAU
    a = tl.maximum(tl.maximum(a_negligible, a_plateau), 0.0)
    plateau = (a > 0.0) & (a_plateau >= a_negligible)
    step = (b - a) / (N_NODES - 1)
    total = tl.zeros(x.shape, x.dtype)
    shift = peak + LN2
    for i in tl.static_range(N_NODES):
        node = a + step * i
        weight = 0.5 if (i == 0 or i == N_NODES - 1) else 1.0
        # e^phi = e^{-x cosh t + v t - log 2} (1 + e^{-2 v t}): three exponentials per node, no overflow
        e = tl.exp(node)
        vt = v * node
        main = tl.exp(vt - x * (0.5 * (e + 1.0 / e)) - shift)
        total = total + weight * (main * (1.0 + tl.exp(-2.0 * vt)))
    log_core = tl.log(total) + tl.log(step)
    if SCALED:
        # peak + x = -x (cosh t* - 1) + log cosh(v t*), without the cancellation of adding x afterwards
        eh = tl.exp(0.5 * t)
        sinh_half = 0.5 * (eh - 1.0 / eh)
        log_k = -x * (2.0 * sinh_half * sinh_half) + _log_cosh(v * t) + log_core
    else:
        log_k = peak + log_core
    a_safe = tl.where(plateau, a, 1.0)
    log_plateau = _log_sinh_over_tanh(v, a_safe, step)
    if SCALED:
        log_plateau = log_plateau + x
    hi = tl.maximum(log_k, log_plateau)
    lo = tl.minimum(log_k, log_plateau)
    return tl.where(plateau, hi + _log1p(tl.exp(lo - hi)), log_k)


@triton.jit
def _ratio_cf(v, x):
    w = v + (RATIO_DEPTH + 1)
    r = x / (w + tl.sqrt(w * w + x * x))
    for j in tl.static_range(RATIO_DEPTH, 0, -1):
        r = x / (2.0 * (v + j) + x * r)
    return r


@triton.jit
def _ratio_debye(v, x, coef_ptr):
    h0 = _hypot(v, x)
    h1 = _hypot(v + 1.0, x)
    two_v_1 = 2.0 * v + 1.0
    exponent = (
        two_v_1 / (h1 + h0)
        - _asinh((v + 1.0) / x)
        - v * _asinh(two_v_1 / ((v + 1.0) * h0 + v * h1))
        - 0.25 * _log1p(two_v_1 / (h0 * h0))
    )
    s0, _ = _debye_sum(v, x, coef_ptr, 1.0)
    s1, _ = _debye_sum(v + 1.0, x, coef_ptr, 1.0)
    return tl.exp(exponent + _log1p(s1) - _log1p(s0))


# ----------------------------------------------------------------------------------------------- the kernel


@triton.jit
def _bessel_kernel(
    v_ptr,
    x_ptr,
    out_ptr,
    coef_ptr,
    n_elements,
    KIND: tl.constexpr,
    SCALED: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    in_range = offsets < n_elements
    if IS_F64:
        v = tl.load(v_ptr + offsets, mask=in_range, other=1.0).to(tl.float64)
        x = tl.load(x_ptr + offsets, mask=in_range, other=1.0).to(tl.float64)
    else:
        v = tl.load(v_ptr + offsets, mask=in_range, other=1.0).to(tl.float32)
        x = tl.load(x_ptr + offsets, mask=in_range, other=1.0).to(tl.float32)

    bad = (v < 0.0) | (x < 0.0) | (v != v) | (x != x)
    v_inf = v == float("inf")
    x_inf = x == float("inf")
    special = bad | v_inf | x_inf | (x == 0.0)
    # regions (same tests as the reference), on finite, positive, non-special elements only
    hankel = (x > SMALL_X) & (v * v < HANKEL_C * x) & ~special
    debye = ~hankel & ((x > SMALL_X) | (v > DEBYE_V)) & ~special
    small = ~hankel & ~debye & ~special

    # special values
    if KIND == 0:
        result = tl.where(v == 0.0, 0.0, float("-inf")) + tl.zeros(x.shape, x.dtype)
        result = tl.where(x_inf, float("inf"), result)
        result = tl.where(v_inf, float("-inf"), result)
    elif KIND == 1:
        result = tl.full(x.shape, float("inf"), x.dtype)
        result = tl.where(x_inf, float("-inf"), result)
    else:
        result = tl.zeros(x.shape, x.dtype)
        result = tl.where(x_inf & ~v_inf, 1.0, result)

    if tl.sum(hankel.to(tl.int32), axis=0) > 0:
        vh = tl.where(hankel, v, 1.0)
        xh = tl.where(hankel, x, 100.0)
        if KIND == 0:
            value = -0.5 * (LOG_2PI + tl.log(xh)) + _log1p(_hankel_sum(vh, xh, -1.0))
            if not SCALED:
                value = value + xh
        elif KIND == 1:
            value = 0.5 * (LOG_PI_2 - tl.log(xh)) + _log1p(_hankel_sum(vh, xh, 1.0))
            if not SCALED:
                value = value - xh
        else:
            value = (1.0 + _hankel_sum(vh + 1.0, xh, -1.0)) / (1.0 + _hankel_sum(vh, xh, -1.0))
        result = tl.where(hankel, value, result)

    if tl.sum(debye.to(tl.int32), axis=0) > 0:
        vd = tl.where(debye, v, 20.0)
        xd = tl.where(debye, x, 20.0)
        if KIND == 0:
            total, h = _debye_sum(vd, xd, coef_ptr, 1.0)
            value = -0.5 * (LOG_2PI + tl.log(h)) + _debye_exponent(vd, xd, h, SCALED, IS_F64) + _log1p(total)
        elif KIND == 1:
            total, h = _debye_sum(vd, xd, coef_ptr, -1.0)
            value = 0.5 * (LOG_PI_2 - tl.log(h)) - _debye_exponent(vd, xd, h, SCALED, IS_F64) + _log1p(total)
        else:
            value = _ratio_debye(vd, xd, coef_ptr)
        result = tl.where(debye, value, result)

    if tl.sum(small.to(tl.int32), axis=0) > 0:
        vs = tl.where(small, v, 1.0)
        xs = tl.where(small, x, 1.0)
        if KIND == 0:
            value = _series_log_iv(vs, xs, SCALED, IS_F64)
        elif KIND == 1:
            value = _integral_log_kv(vs, xs, SCALED)
        else:
            value = _ratio_cf(vs, xs)
        result = tl.where(small, value, result)

    result = tl.where(bad, float("nan"), result)
    tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=in_range)


# ----------------------------------------------------------------------------------------------- launcher

_coefficients: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _coefficient_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (device, dtype)
    if key not in _coefficients:
        table = torch.zeros(DEBYE_TERMS, DEBYE_TERMS + 1, dtype=torch.float64)
        for k, row in enumerate(debye_coefficients(DEBYE_TERMS)):
            table[k, : len(row)] = torch.tensor(row, dtype=torch.float64)
        _coefficients[key] = table.to(device=device, dtype=dtype).contiguous()
    return _coefficients[key]


def launch(kind: str, v: torch.Tensor, x: torch.Tensor, scaled: bool) -> torch.Tensor:
    """Run the kernel for ``kind`` (``"log_iv"``, ``"log_kv"``, ``"iv_ratio"``) on same-shape tensors.

    The output has the input's dtype; float64 computes in float64, every other floating dtype in float32.
    """
    import os

    v_flat = v.contiguous().reshape(-1)
    x_flat = x.to(v.dtype).contiguous().reshape(-1)
    out = torch.empty_like(v_flat)
    n = v_flat.numel()
    if n == 0:
        return out.reshape(v.shape)
    is_f64 = v.dtype == torch.float64
    table = _coefficient_table(v.device, torch.float64 if is_f64 else torch.float32)
    block = _BLOCK_INTERPRET if os.environ.get("TRITON_INTERPRET") == "1" else _BLOCK
    grid = (triton.cdiv(n, block),)
    _bessel_kernel[grid](
        v_flat,
        x_flat,
        out,
        table,
        n,
        KIND=KINDS[kind],
        SCALED=bool(scaled),
        IS_F64=is_f64,
        BLOCK=block,
        enable_fp_fusion=True,  # explicit: Triton 3.9 warns when it is unset, and 3.10 flips the default
    )
    return out.reshape(v.shape)
