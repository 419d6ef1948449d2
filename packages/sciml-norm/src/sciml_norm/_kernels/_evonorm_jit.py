"""The ``@triton.jit`` kernels of :mod:`sciml_norm._kernels.evonorm`.

This module is imported lazily, when a kernel is first launched, so importing :mod:`sciml_norm` never imports
``triton``. The math, the two strategies and the launch layouts are documented in
:mod:`sciml_norm._kernels.evonorm`, which builds the launches; this module holds the kernels alone. They live at
module level, not in a closure, because Triton resolves the names a kernel uses (``tl``, and any ``@triton.jit``
helper it calls) through the module's globals: Triton 3.2 and 3.3 cannot see a closure's ``tl`` at all, and no
Triton version can call a helper defined in a closure.
"""

from __future__ import annotations

import triton  # noqa: TID253 - this module is imported only when a kernel is first launched
import triton.language as tl  # noqa: TID253

__all__ = [
    "b0_batch_kernel",
    "b0_dx_kernel",
    "b0_forward_kernel",
    "b0_grad_kernel",
    "b0_persistent_backward_kernel",
    "b0_persistent_forward_kernel",
    "b0_reduce_kernel",
    "s0_dx_kernel",
    "s0_forward_kernel",
    "s0_grad_kernel",
    "s0_group_kernel",
    "s0_persistent_backward_kernel",
    "s0_persistent_forward_kernel",
    "s0_reduce_kernel",
    "stats_kernel",
]


@triton.jit
def _aligned(value, ALIGN: tl.constexpr):
    """``value`` (H*W or a row stride, in elements) rounded down to a multiple of ``ALIGN``.

    ``ALIGN`` divides it (:func:`sciml_norm._kernels.evonorm._stride_align`), so no value changes, but from it
    Triton's analysis proves the per-(n, c) rows aligned and their masks whole vectors, and reads them in vectors.
    ``ALIGN`` 1 adds nothing.
    """
    if ALIGN > 1:
        value = (value // ALIGN) * ALIGN
    return value


@triton.jit
def _sample_channels(index, n_cblocks, C, BLOCK_C: tl.constexpr):
    """The split kernels' tile ``index``: its sample ``n`` (64-bit), its channels ``cols`` and their mask.

    A sample's tiles are ``n_cblocks`` blocks of ``BLOCK_C`` channels.
    """
    n = (index // n_cblocks).to(tl.int64)
    cols = (index % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, cols, cols < C


@triton.jit
def _element_tile(n_cblocks, n_hwblocks, C, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """An element-wise split kernel's tile: sample ``n`` (64-bit), channels ``cols``, positions ``hw``, channel mask.

    A sample's tiles are ``n_cblocks`` blocks of ``BLOCK_C`` channels, each in ``n_hwblocks`` blocks of ``BLOCK_HW``
    positions.
    """
    pid = tl.program_id(0)
    rest = pid // n_hwblocks
    n = (rest // n_cblocks).to(tl.int64)
    cols = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    return n, cols, hw, cols < C


@triton.jit
def _sqrt(value, F64: tl.constexpr):
    """The square root, correctly rounded: ``tl.sqrt`` is the fast approximation in float32, not in float64."""
    if F64:  # noqa: SIM108 (a statement-level constexpr branch for Triton)
        root = tl.sqrt(value)
    else:
        root = tl.sqrt_rn(value)
    return root


@triton.jit
def _merge(mean, m2, count, block_mean, block_m2, block_count, HW):
    """Chan et al.'s pairwise update of a mean and a sum of squared deviations; returns mean, m2 and count.

    ``mean`` and ``m2`` describe ``count`` rows of ``HW`` values, ``block_mean`` and ``block_m2`` a block of
    ``block_count`` more rows.
    """
    delta = block_mean - mean
    total = count + block_count
    mean += delta * (block_count / total)
    m2 += block_m2 + delta * delta * (HW * count * block_count / total)
    count += block_count
    return mean, m2, count


@triton.jit
def _b0_max(left, right):
    """B0's denominator ``d = max(left, right)`` and the share ``t`` of its gradient that goes to ``right``.

    ``t`` is 1, 0, or 1/2 at a tie, as in the backward of ``torch.maximum``.
    """
    d = tl.maximum(left, right)
    t = tl.where(right > left, 1.0, tl.where(right == left, 0.5, 0.0))
    return d, t


@triton.jit
def _update_running(rv_ptr, cols, c_ok, bvar, keep_hi, keep_lo, add_hi, add_lo, UPDATE_F64: tl.constexpr):
    """B0's running-variance update ``r <- (1 - m) r + m n/(n-1) var``, stored in place.

    The factors come split in two floats each; the update is done in float64 when either side is float64.
    """
    if UPDATE_F64:
        rv = tl.load(rv_ptr + cols, mask=c_ok, other=0.0).to(tl.float64)
        bv = bvar.to(tl.float64)
        new = rv * keep_hi + rv * keep_lo + (bv * add_hi + bv * add_lo)
    else:
        rv = tl.load(rv_ptr + cols, mask=c_ok, other=0.0).to(tl.float32)
        new = rv * keep_hi + bvar * add_hi
    tl.store(rv_ptr + cols, new.to(rv_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def stats_kernel(
    x_ptr,
    mean_ptr,
    m2_ptr,
    m2_offset,
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    n_cblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    pid = tl.program_id(0)
    n, cols, c_ok = _sample_channels(pid, n_cblocks, C, BLOCK_C)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = mean_ptr.dtype.element_ty
    row = x_ptr + n * sxn + cols * sxc
    shift = tl.load(row, mask=c_ok, other=0.0).to(acc)
    s1 = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    s2 = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    for start in range(0, HW, BLOCK_HW):
        hw = start + hw0
        mask = c_ok[:, None] & (hw < HW)[None, :]
        xv = tl.load(row[:, None] + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
        dev = tl.where(mask, xv - shift[:, None], 0.0)
        s1 += dev
        s2 += dev * dev
    t1 = tl.sum(s1, axis=1)
    t2 = tl.sum(s2, axis=1)
    out = n * C + cols
    tl.store(mean_ptr + out, shift + t1 / HW, mask=c_ok)
    tl.store(m2_ptr + m2_offset + out, tl.maximum(t2 - t1 * (t1 / HW), 0.0), mask=c_ok)


@triton.jit
def s0_group_kernel(
    stats_ptr,
    mean_ptr,
    rstd_ptr,
    NC,
    NG,
    CPG,
    HW,
    eps_hi,
    eps_lo,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    F64: tl.constexpr,
):
    # rows are the (n, g) pairs; the channels of row r are r * CPG + k, k < CPG (N x C is row-major)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < NG
    base = rows.to(tl.int64) * CPG
    k0 = tl.arange(0, BLOCK_K)
    acc = mean_ptr.dtype.element_ty
    s = tl.zeros([BLOCK_R, BLOCK_K], acc)
    for start in range(0, CPG, BLOCK_K):
        k = start + k0
        mask = r_ok[:, None] & (k < CPG)[None, :]
        s += tl.load(stats_ptr + base[:, None] + k[None, :], mask=mask, other=0.0)
    mean = tl.sum(s, axis=1) / CPG
    m2 = tl.zeros([BLOCK_R, BLOCK_K], acc)
    dev2 = tl.zeros([BLOCK_R, BLOCK_K], acc)
    for start in range(0, CPG, BLOCK_K):
        k = start + k0
        mask = r_ok[:, None] & (k < CPG)[None, :]
        index = base[:, None] + k[None, :]
        dev = tl.where(mask, tl.load(stats_ptr + index, mask=mask, other=0.0) - mean[:, None], 0.0)
        m2 += tl.load(stats_ptr + NC + index, mask=mask, other=0.0)
        dev2 += dev * dev
    var = (tl.sum(m2, axis=1) + HW * tl.sum(dev2, axis=1)) / (HW * CPG)
    rstd = 1.0 / _sqrt(var + eps_hi + eps_lo, F64)
    tl.store(mean_ptr + rows, mean, mask=r_ok)
    tl.store(rstd_ptr + rows, rstd, mask=r_ok)


@triton.jit
def s0_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    v_ptr,
    rstd_ptr,
    C,
    HW,
    G,
    CPG,
    sxn,
    sxc,
    sxhw,
    syn,
    syc,
    syhw,
    n_cblocks,
    n_hwblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    syn, syc = _aligned(syn, ALIGN), _aligned(syc, ALIGN)
    n, cols, hw, c_ok = _element_tile(n_cblocks, n_hwblocks, C, BLOCK_C, BLOCK_HW)
    mask = c_ok[:, None] & (hw < HW)[None, :]
    acc = rstd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    b = tl.load(b_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    rstd = tl.load(rstd_ptr + n * G + cols // CPG, mask=c_ok, other=0.0)
    x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
    y = x * 1.0 / (1.0 + tl.exp(-v[:, None] * x)) * (rstd * w)[:, None] + b[:, None]
    tl.store(y_ptr + n * syn + cols[:, None] * syc + hw[None, :] * syhw, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def s0_reduce_kernel(
    g_ptr,
    x_ptr,
    v_ptr,
    sums_ptr,
    NC,
    C,
    HW,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    n_cblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    pid = tl.program_id(0)
    n, cols, c_ok = _sample_channels(pid, n_cblocks, C, BLOCK_C)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = sums_ptr.dtype.element_ty
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    g_row = g_ptr + n * sgn + cols * sgc
    x_row = x_ptr + n * sxn + cols * sxc
    sum_ga = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_g = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_gvs = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    for start in range(0, HW, BLOCK_HW):
        hw = start + hw0
        mask = c_ok[:, None] & (hw < HW)[None, :]
        g = tl.load(g_row[:, None] + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
        x = tl.load(x_row[:, None] + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
        s = 1.0 / (1.0 + tl.exp(-v[:, None] * x))
        gx = g * x
        sum_ga += gx * s
        sum_g += g
        sum_gvs += gx * x * s * (1.0 - s)
    out = sums_ptr + n * C + cols
    tl.store(out, tl.sum(sum_ga, axis=1), mask=c_ok)
    tl.store(out + NC, tl.sum(sum_g, axis=1), mask=c_ok)
    tl.store(out + 2 * NC, tl.sum(sum_gvs, axis=1), mask=c_ok)


@triton.jit
def s0_grad_kernel(
    sums_ptr,
    w_ptr,
    rstd_ptr,
    dw_ptr,
    db_ptr,
    dv_ptr,
    coef_ptr,
    coef_offset,
    N,
    C,
    NC,
    G,
    CPG,
    HW,
    n_cprogs,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # programs [0, n_cprogs) sum the partials of blocks of channels over n (parameter gradients); the others
    # form the coefficient -r^3 sum_{c in g} w_c sum(g a) / M of blocks of (n, g) rows
    pid = tl.program_id(0)
    acc = dw_ptr.dtype.element_ty
    if pid < n_cprogs:
        cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cols < C
        n0 = tl.arange(0, BLOCK_N)
        sum_w = tl.zeros([BLOCK_N, BLOCK_C], acc)
        sum_b = tl.zeros([BLOCK_N, BLOCK_C], acc)
        sum_v = tl.zeros([BLOCK_N, BLOCK_C], acc)
        for start in range(0, N, BLOCK_N):
            rows = (start + n0).to(tl.int64)
            mask = (rows < N)[:, None] & c_ok[None, :]
            index = rows[:, None] * C + cols[None, :]
            rstd = tl.load(rstd_ptr + rows[:, None] * G + (cols // CPG)[None, :], mask=mask, other=0.0)
            sum_w += tl.load(sums_ptr + index, mask=mask, other=0.0) * rstd
            sum_b += tl.load(sums_ptr + NC + index, mask=mask, other=0.0)
            sum_v += tl.load(sums_ptr + 2 * NC + index, mask=mask, other=0.0) * rstd
        w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
        tl.store(dw_ptr + cols, tl.sum(sum_w, axis=0), mask=c_ok)
        tl.store(db_ptr + cols, tl.sum(sum_b, axis=0), mask=c_ok)
        tl.store(dv_ptr + cols, w * tl.sum(sum_v, axis=0), mask=c_ok)
    else:
        rows = (pid - n_cprogs) * BLOCK_R + tl.arange(0, BLOCK_R)
        r_ok = rows < N * G
        base = rows.to(tl.int64) * CPG
        first = (rows % G) * CPG  # the group's first channel
        k0 = tl.arange(0, BLOCK_K)
        s = tl.zeros([BLOCK_R, BLOCK_K], acc)
        for start in range(0, CPG, BLOCK_K):
            k = start + k0
            mask = r_ok[:, None] & (k < CPG)[None, :]
            ga = tl.load(sums_ptr + base[:, None] + k[None, :], mask=mask, other=0.0)
            w = tl.load(w_ptr + first[:, None] + k[None, :], mask=mask, other=0.0).to(acc)
            s += ga * w
        rstd = tl.load(rstd_ptr + rows, mask=r_ok, other=0.0)
        coef = -tl.sum(s, axis=1) * (rstd * rstd * rstd) / (CPG * HW)  # pyright: ignore[reportOperatorIssue]
        tl.store(coef_ptr + coef_offset + rows, coef, mask=r_ok)


@triton.jit
def s0_dx_kernel(
    g_ptr,
    x_ptr,
    dx_ptr,
    w_ptr,
    v_ptr,
    rstd_ptr,
    mean_ptr,
    coef_ptr,
    coef_offset,
    C,
    HW,
    G,
    CPG,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    n_cblocks,
    n_hwblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    sdn, sdc = _aligned(sdn, ALIGN), _aligned(sdc, ALIGN)
    n, cols, hw, c_ok = _element_tile(n_cblocks, n_hwblocks, C, BLOCK_C, BLOCK_HW)
    mask = c_ok[:, None] & (hw < HW)[None, :]
    acc = rstd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    group = n * G + cols // CPG
    rstd = tl.load(rstd_ptr + group, mask=c_ok, other=0.0)
    mean = tl.load(mean_ptr + group, mask=c_ok, other=0.0)
    coef = tl.load(coef_ptr + coef_offset + group, mask=c_ok, other=0.0)
    g = tl.load(g_ptr + n * sgn + cols[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
    x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
    vx = v[:, None] * x
    s = 1.0 / (1.0 + tl.exp(-vx))
    dx = g * (rstd * w)[:, None] * (s + vx * s * (1.0 - s)) + coef[:, None] * (x - mean[:, None])
    tl.store(dx_ptr + n * sdn + cols[:, None] * sdc + hw[None, :] * sdhw, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def b0_batch_kernel(
    imean_ptr,
    istd_ptr,
    rv_ptr,
    bmean_ptr,
    left_ptr,
    bvar_ptr,
    N,
    C,
    HW,
    eps_hi,
    eps_lo,
    keep_hi,
    keep_lo,
    add_hi,
    add_lo,
    TRAINING: tl.constexpr,
    UPDATE: tl.constexpr,
    UPDATE_F64: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # istd_ptr holds the per-(n, c) sums of squared deviations on entry and the instance std on exit
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    n0 = tl.arange(0, BLOCK_N)
    acc = bmean_ptr.dtype.element_ty
    if TRAINING:
        s = tl.zeros([BLOCK_N, BLOCK_C], acc)
        for start in range(0, N, BLOCK_N):
            rows = (start + n0).to(tl.int64)
            mask = (rows < N)[:, None] & c_ok[None, :]
            s += tl.load(imean_ptr + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
        bmean = tl.sum(s, axis=0) / N
        m2 = tl.zeros([BLOCK_N, BLOCK_C], acc)
        dev2 = tl.zeros([BLOCK_N, BLOCK_C], acc)
        for start in range(0, N, BLOCK_N):
            rows = (start + n0).to(tl.int64)
            mask = (rows < N)[:, None] & c_ok[None, :]
            index = rows[:, None] * C + cols[None, :]
            dev = tl.where(mask, tl.load(imean_ptr + index, mask=mask, other=0.0) - bmean[None, :], 0.0)
            q = tl.load(istd_ptr + index, mask=mask, other=0.0)
            m2 += q
            dev2 += dev * dev
            tl.store(istd_ptr + index, _sqrt(q / HW + eps_hi + eps_lo, F64), mask=mask)
        bvar = (tl.sum(m2, axis=0) + HW * tl.sum(dev2, axis=0)) / (N * HW)
        if UPDATE:
            _update_running(rv_ptr, cols, c_ok, bvar, keep_hi, keep_lo, add_hi, add_lo, UPDATE_F64)
    else:
        for start in range(0, N, BLOCK_N):
            rows = (start + n0).to(tl.int64)
            mask = (rows < N)[:, None] & c_ok[None, :]
            index = rows[:, None] * C + cols[None, :]
            q = tl.load(istd_ptr + index, mask=mask, other=0.0)
            tl.store(istd_ptr + index, _sqrt(q / HW + eps_hi + eps_lo, F64), mask=mask)
        bmean = tl.zeros([BLOCK_C], acc)
        bvar = tl.load(rv_ptr + cols, mask=c_ok, other=1.0).to(acc)
    tl.store(bmean_ptr + cols, bmean, mask=c_ok)
    tl.store(left_ptr + cols, _sqrt(bvar + eps_hi + eps_lo, F64), mask=c_ok)
    tl.store(bvar_ptr + cols, bvar, mask=c_ok)


@triton.jit
def b0_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    v_ptr,
    istd_ptr,
    left_ptr,
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    syn,
    syc,
    syhw,
    n_cblocks,
    n_hwblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    syn, syc = _aligned(syn, ALIGN), _aligned(syc, ALIGN)
    n, cols, hw, c_ok = _element_tile(n_cblocks, n_hwblocks, C, BLOCK_C, BLOCK_HW)
    mask = c_ok[:, None] & (hw < HW)[None, :]
    acc = istd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    b = tl.load(b_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    istd = tl.load(istd_ptr + n * C + cols, mask=c_ok, other=1.0)
    left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
    x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
    d = tl.maximum(left[:, None], v[:, None] * x + istd[:, None])
    y = x / d * w[:, None] + b[:, None]
    tl.store(y_ptr + n * syn + cols[:, None] * syc + hw[None, :] * syhw, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def b0_reduce_kernel(
    g_ptr,
    x_ptr,
    w_ptr,
    v_ptr,
    istd_ptr,
    left_ptr,
    sums_ptr,
    NC,
    C,
    HW,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    n_cblocks,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    pid = tl.program_id(0)
    n, cols, c_ok = _sample_channels(pid, n_cblocks, C, BLOCK_C)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = istd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    istd = tl.load(istd_ptr + n * C + cols, mask=c_ok, other=1.0)
    left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
    g_row = g_ptr + n * sgn + cols * sgc
    x_row = x_ptr + n * sxn + cols * sxc
    sum_g = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_gxq = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_tgx = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_tg = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    sum_lg = tl.zeros([BLOCK_C, BLOCK_HW], acc)
    for start in range(0, HW, BLOCK_HW):
        hw = start + hw0
        mask = c_ok[:, None] & (hw < HW)[None, :]
        g = tl.load(g_row[:, None] + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
        x = tl.load(x_row[:, None] + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
        right = v[:, None] * x + istd[:, None]
        d, t = _b0_max(left[:, None], right)
        gxq = g * x / d
        gamma = -gxq * w[:, None] / d  # dL/dd
        sum_g += g
        sum_gxq += gxq
        sum_tgx += t * gamma * x
        sum_tg += t * gamma
        sum_lg += (1.0 - t) * gamma
    out = sums_ptr + n * C + cols
    tl.store(out, tl.sum(sum_g, axis=1), mask=c_ok)
    tl.store(out + NC, tl.sum(sum_gxq, axis=1), mask=c_ok)
    tl.store(out + 2 * NC, tl.sum(sum_tgx, axis=1), mask=c_ok)
    tl.store(out + 3 * NC, tl.sum(sum_tg, axis=1), mask=c_ok)
    tl.store(out + 4 * NC, tl.sum(sum_lg, axis=1), mask=c_ok)


@triton.jit
def b0_grad_kernel(
    sums_ptr,
    left_ptr,
    dw_ptr,
    db_ptr,
    dv_ptr,
    bcoef_ptr,
    bcoef_offset,
    N,
    C,
    NC,
    HW,
    TRAINING: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # the parameter gradients and the batch-variance coefficient: the partials of pass 1 summed over n
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    n0 = tl.arange(0, BLOCK_N)
    acc = dw_ptr.dtype.element_ty
    sum_b = tl.zeros([BLOCK_N, BLOCK_C], acc)
    sum_w = tl.zeros([BLOCK_N, BLOCK_C], acc)
    sum_v = tl.zeros([BLOCK_N, BLOCK_C], acc)
    sum_l = tl.zeros([BLOCK_N, BLOCK_C], acc)
    for start in range(0, N, BLOCK_N):
        rows = (start + n0).to(tl.int64)
        mask = (rows < N)[:, None] & c_ok[None, :]
        index = rows[:, None] * C + cols[None, :]
        sum_b += tl.load(sums_ptr + index, mask=mask, other=0.0)
        sum_w += tl.load(sums_ptr + NC + index, mask=mask, other=0.0)
        sum_v += tl.load(sums_ptr + 2 * NC + index, mask=mask, other=0.0)
        if TRAINING:
            sum_l += tl.load(sums_ptr + 4 * NC + index, mask=mask, other=0.0)
    tl.store(dw_ptr + cols, tl.sum(sum_w, axis=0), mask=c_ok)
    tl.store(db_ptr + cols, tl.sum(sum_b, axis=0), mask=c_ok)
    tl.store(dv_ptr + cols, tl.sum(sum_v, axis=0), mask=c_ok)
    if TRAINING:
        left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
        tl.store(bcoef_ptr + bcoef_offset + cols, tl.sum(sum_l, axis=0) / (N * HW * left), mask=c_ok)


@triton.jit
def b0_dx_kernel(
    g_ptr,
    x_ptr,
    dx_ptr,
    w_ptr,
    v_ptr,
    istd_ptr,
    left_ptr,
    imean_ptr,
    tg_ptr,
    tg_offset,
    bmean_ptr,
    bcoef_ptr,
    bcoef_offset,
    C,
    HW,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    n_cblocks,
    n_hwblocks,
    TRAINING: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    sdn, sdc = _aligned(sdn, ALIGN), _aligned(sdc, ALIGN)
    n, cols, hw, c_ok = _element_tile(n_cblocks, n_hwblocks, C, BLOCK_C, BLOCK_HW)
    mask = c_ok[:, None] & (hw < HW)[None, :]
    acc = istd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    istd = tl.load(istd_ptr + n * C + cols, mask=c_ok, other=1.0)
    imean = tl.load(imean_ptr + n * C + cols, mask=c_ok, other=0.0)
    icoef = tl.load(tg_ptr + tg_offset + n * C + cols, mask=c_ok, other=0.0) / (HW * istd)  # d istd = sum t gamma
    left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
    g = tl.load(g_ptr + n * sgn + cols[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
    x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
    right = v[:, None] * x + istd[:, None]
    d, t = _b0_max(left[:, None], right)
    gw = g * w[:, None] / d
    dx = gw - t * gw * x / d * v[:, None] + icoef[:, None] * (x - imean[:, None])
    if TRAINING:
        bmean = tl.load(bmean_ptr + cols, mask=c_ok, other=0.0)
        bcoef = tl.load(bcoef_ptr + bcoef_offset + cols, mask=c_ok, other=0.0)
        dx += bcoef[:, None] * (x - bmean[:, None])
    tl.store(dx_ptr + n * sdn + cols[:, None] * sdc + hw[None, :] * sdhw, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------- persistent kernels (one launch per pass)


@triton.jit
def s0_persistent_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    v_ptr,
    stats_ptr,
    HW,
    G,
    CPG,
    sxn,
    sxc,
    sxhw,
    syn,
    syc,
    syhw,
    eps_hi,
    eps_lo,
    F64: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # one program per (n, g): the group's statistics (per-channel shifted sums, merged over blocks of channels
    # by Chan's formula), then the output of the same C/G x HW elements (read again, mostly from L2).
    # stats_ptr: the (N, G) means, then the (N, G) inverse standard deviations
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    syn, syc = _aligned(syn, ALIGN), _aligned(syc, ALIGN)
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    first = (pid % G) * CPG
    k0 = tl.arange(0, BLOCK_K)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = stats_ptr.dtype.element_ty
    x_row = x_ptr + n * sxn
    gmean = tl.sum(tl.zeros([BLOCK_K], acc), axis=0)
    gm2 = tl.sum(tl.zeros([BLOCK_K], acc), axis=0)
    done = tl.sum(tl.zeros([BLOCK_K], acc), axis=0)  # channels merged so far
    for kstart in range(0, CPG, BLOCK_K):
        k_ok = kstart + k0 < CPG
        chans = first + kstart + k0
        shift = tl.load(x_row + chans * sxc, mask=k_ok, other=0.0).to(acc)
        s1 = tl.zeros([BLOCK_K], acc)
        s2 = tl.zeros([BLOCK_K], acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = k_ok[:, None] & (hw < HW)[None, :]
            xv = tl.load(x_row + chans[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
            dev = tl.where(mask, xv - shift[:, None], 0.0)
            s1 += tl.sum(dev, axis=1)
            s2 += tl.sum(dev * dev, axis=1)
        cmean = shift + s1 / HW
        cm2 = tl.maximum(s2 - s1 * (s1 / HW), 0.0)
        count = tl.minimum(CPG - kstart, BLOCK_K).to(acc)
        bmean = tl.sum(tl.where(k_ok, cmean, 0.0), axis=0) / count
        bdev = tl.where(k_ok, cmean - bmean, 0.0)
        bm2 = tl.sum(tl.where(k_ok, cm2, 0.0), axis=0) + HW * tl.sum(bdev * bdev, axis=0)
        gmean, gm2, done = _merge(gmean, gm2, done, bmean, bm2, count, HW)
    var = gm2 / (CPG * HW)
    rstd = 1.0 / _sqrt(var + eps_hi + eps_lo, F64)
    tl.store(stats_ptr + pid, gmean)
    tl.store(stats_ptr + tl.num_programs(0) + pid, rstd)
    y_row = y_ptr + n * syn
    for kstart in range(0, CPG, BLOCK_K):
        k_ok = kstart + k0 < CPG
        chans = first + kstart + k0
        scale = tl.load(w_ptr + chans, mask=k_ok, other=0.0).to(acc) * rstd
        b = tl.load(b_ptr + chans, mask=k_ok, other=0.0).to(acc)
        v = tl.load(v_ptr + chans, mask=k_ok, other=0.0).to(acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = k_ok[:, None] & (hw < HW)[None, :]
            xv = tl.load(x_row + chans[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
            y = xv * 1.0 / (1.0 + tl.exp(-v[:, None] * xv)) * scale[:, None] + b[:, None]
            out = y_row + chans[:, None] * syc + hw[None, :] * syhw
            tl.store(out, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def s0_persistent_backward_kernel(
    g_ptr,
    x_ptr,
    dx_ptr,
    w_ptr,
    v_ptr,
    mean_ptr,
    rstd_ptr,
    mean_offset,
    rstd_offset,
    part_ptr,
    NC,
    C,
    HW,
    G,
    CPG,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    ALIGN: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # one program per (n, g): the per-channel partials of the parameter gradients (summed over n afterwards)
    # and the group's coefficient, kept in registers for the second pass that writes dx
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    sdn, sdc = _aligned(sdn, ALIGN), _aligned(sdc, ALIGN)
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    first = (pid % G) * CPG
    k0 = tl.arange(0, BLOCK_K)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = rstd_ptr.dtype.element_ty
    rstd = tl.load(rstd_ptr + rstd_offset + pid)
    mean = tl.load(mean_ptr + mean_offset + pid)
    g_row = g_ptr + n * sgn
    x_row = x_ptr + n * sxn
    total = tl.sum(tl.zeros([BLOCK_K], acc), axis=0)  # sum over the group of w sum(g a)
    for kstart in range(0, CPG, BLOCK_K):
        k_ok = kstart + k0 < CPG
        chans = first + kstart + k0
        w = tl.load(w_ptr + chans, mask=k_ok, other=0.0).to(acc)
        v = tl.load(v_ptr + chans, mask=k_ok, other=0.0).to(acc)
        sum_ga = tl.zeros([BLOCK_K], acc)
        sum_g = tl.zeros([BLOCK_K], acc)
        sum_gvs = tl.zeros([BLOCK_K], acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = k_ok[:, None] & (hw < HW)[None, :]
            g = tl.load(g_row + chans[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
            x = tl.load(x_row + chans[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
            s = 1.0 / (1.0 + tl.exp(-v[:, None] * x))
            gx = g * x
            sum_ga += tl.sum(gx * s, axis=1)
            sum_g += tl.sum(g, axis=1)
            sum_gvs += tl.sum(gx * x * s * (1.0 - s), axis=1)
        out = part_ptr + n * C + chans
        tl.store(out, sum_ga * rstd, mask=k_ok)
        tl.store(out + NC, sum_g, mask=k_ok)
        tl.store(out + 2 * NC, w * sum_gvs * rstd, mask=k_ok)
        total += tl.sum(sum_ga * w, axis=0)
    coef = -total * (rstd * rstd * rstd) / (CPG * HW)  # pyright: ignore[reportOperatorIssue]
    dx_row = dx_ptr + n * sdn
    for kstart in range(0, CPG, BLOCK_K):
        k_ok = kstart + k0 < CPG
        chans = first + kstart + k0
        scale = tl.load(w_ptr + chans, mask=k_ok, other=0.0).to(acc) * rstd
        v = tl.load(v_ptr + chans, mask=k_ok, other=0.0).to(acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = k_ok[:, None] & (hw < HW)[None, :]
            g = tl.load(g_row + chans[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
            x = tl.load(x_row + chans[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
            vx = v[:, None] * x
            s = 1.0 / (1.0 + tl.exp(-vx))
            dx = g * scale[:, None] * (s + vx * s * (1.0 - s)) + coef * (x - mean)
            out = dx_row + chans[:, None] * sdc + hw[None, :] * sdhw
            tl.store(out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _block_start(step, n_blocks, REVERSE: tl.constexpr, BLOCK_N: tl.constexpr):
    """B0's persistent kernels, second pass: the first sample of block ``step`` of ``n_blocks`` blocks of ``BLOCK_N``.

    With ``REVERSE`` the last block comes first: pass 1 has just read it, so it may still be in L2.
    """
    if REVERSE:  # noqa: SIM108 (a statement-level constexpr branch for Triton)
        nstart = (n_blocks - 1 - step) * BLOCK_N
    else:
        nstart = step * BLOCK_N
    return nstart


@triton.jit
def _sample_rows(nstart, n0, N, c_ok, WIDE: tl.constexpr):
    """B0's persistent kernels: the samples ``nstart + n0`` of a tile and its (sample, channel) mask.

    The sample indices are 64-bit when ``WIDE`` (some offset reaches 2^31), else 32-bit.
    """
    rows = nstart + n0
    if WIDE:
        rows = rows.to(tl.int64)
    return rows, (rows < N)[:, None] & c_ok[None, :]


@triton.jit
def b0_persistent_forward_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    b_ptr,
    v_ptr,
    rv_ptr,
    stats_ptr,
    N,
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    syn,
    syc,
    syhw,
    eps_hi,
    eps_lo,
    keep_hi,
    keep_lo,
    add_hi,
    add_lo,
    TRAINING: tl.constexpr,
    UPDATE: tl.constexpr,
    UPDATE_F64: tl.constexpr,
    F64: tl.constexpr,
    WIDE: tl.constexpr,
    ALIGN: tl.constexpr,
    REVERSE: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # one program per block of channels owns the whole batch: pass 1 walks (n, hw) in BLOCK_N x BLOCK_C x
    # BLOCK_HW tiles for the instance statistics (written out) and merges them into the batch statistics
    # (Chan's formula over blocks of samples); pass 2 reads the instance std back and writes y. stats_ptr
    # holds, one after the other: instance mean (N, C), instance std (N, C), batch mean, left, batch var (C,).
    # Offsets are 32-bit unless WIDE (some offset, padding lanes included, reaches 2^31): the per-(n, c)
    # pointers of a tile are most of its registers
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    syn, syc = _aligned(syn, ALIGN), _aligned(syc, ALIGN)
    imean_ptr = stats_ptr
    istd_ptr = stats_ptr + N * C
    bmean_ptr = stats_ptr + 2 * N * C
    left_ptr = bmean_ptr + C
    bvar_ptr = bmean_ptr + 2 * C
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    n0 = tl.arange(0, BLOCK_N)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = stats_ptr.dtype.element_ty
    bmean = tl.zeros([BLOCK_C], acc)
    bm2 = tl.zeros([BLOCK_C], acc)
    done = tl.sum(tl.zeros([BLOCK_C], acc), axis=0)  # samples merged so far
    for nstart in tl.range(0, N, BLOCK_N, num_stages=STAGES, flatten=STAGES > 1):  # pyright: ignore[reportGeneralTypeIssues, reportArgumentType]
        rows, ok = _sample_rows(nstart, n0, N, c_ok, WIDE)
        base = x_ptr + rows[:, None] * sxn + cols[None, :] * sxc
        shift = tl.load(base, mask=ok, other=0.0).to(acc)
        s1 = tl.zeros([BLOCK_N, BLOCK_C], acc)
        s2 = tl.zeros([BLOCK_N, BLOCK_C], acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = ok[:, :, None] & (hw < HW)[None, None, :]
            xv = tl.load(base[:, :, None] + hw[None, None, :] * sxhw, mask=mask, other=0.0).to(acc)
            dev = tl.where(mask, xv - shift[:, :, None], 0.0)
            s1 += tl.sum(dev, axis=2)
            s2 += tl.sum(dev * dev, axis=2)
        imean = shift + s1 / HW
        im2 = tl.maximum(s2 - s1 * (s1 / HW), 0.0)
        index = rows[:, None] * C + cols[None, :]
        tl.store(imean_ptr + index, imean, mask=ok)
        tl.store(istd_ptr + index, _sqrt(im2 / HW + eps_hi + eps_lo, F64), mask=ok)
        if TRAINING:
            count = tl.minimum(N - nstart, BLOCK_N).to(acc)
            block_mean = tl.sum(tl.where(ok, imean, 0.0), axis=0) / count
            bdev = tl.where(ok, imean - block_mean[None, :], 0.0)
            block_m2 = tl.sum(tl.where(ok, im2, 0.0), axis=0) + HW * tl.sum(bdev * bdev, axis=0)
            bmean, bm2, done = _merge(bmean, bm2, done, block_mean, block_m2, count, HW)
    if TRAINING:
        bvar = bm2 / (N * HW)
        if UPDATE:
            _update_running(rv_ptr, cols, c_ok, bvar, keep_hi, keep_lo, add_hi, add_lo, UPDATE_F64)
    else:
        bvar = tl.load(rv_ptr + cols, mask=c_ok, other=1.0).to(acc)
    left = _sqrt(bvar + eps_hi + eps_lo, F64)
    tl.store(bmean_ptr + cols, bmean, mask=c_ok)
    tl.store(left_ptr + cols, left, mask=c_ok)
    tl.store(bvar_ptr + cols, bvar, mask=c_ok)
    tl.debug_barrier()  # the instance std written above, by other threads of this program, is read below
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    b = tl.load(b_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    n_blocks = tl.cdiv(N, BLOCK_N)
    for step in tl.range(0, n_blocks, num_stages=STAGES, flatten=STAGES > 1):  # pyright: ignore[reportGeneralTypeIssues, reportArgumentType]
        nstart = _block_start(step, n_blocks, REVERSE, BLOCK_N)
        rows, ok = _sample_rows(nstart, n0, N, c_ok, WIDE)
        istd = tl.load(istd_ptr + rows[:, None] * C + cols[None, :], mask=ok, other=1.0)
        base = x_ptr + rows[:, None] * sxn + cols[None, :] * sxc
        y_base = y_ptr + rows[:, None] * syn + cols[None, :] * syc
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = ok[:, :, None] & (hw < HW)[None, None, :]
            xv = tl.load(base[:, :, None] + hw[None, None, :] * sxhw, mask=mask, other=0.0).to(acc)
            d = tl.maximum(left[None, :, None], v[None, :, None] * xv + istd[:, :, None])
            y = xv / d * w[None, :, None] + b[None, :, None]
            tl.store(y_base[:, :, None] + hw[None, None, :] * syhw, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def b0_persistent_backward_kernel(
    g_ptr,
    x_ptr,
    dx_ptr,
    w_ptr,
    v_ptr,
    imean_ptr,
    istd_ptr,
    bmean_ptr,
    left_ptr,
    imean_offset,
    istd_offset,
    bmean_offset,
    left_offset,
    tg_ptr,
    grads_ptr,
    N,
    C,
    HW,
    sgn,
    sgc,
    sghw,
    sxn,
    sxc,
    sxhw,
    sdn,
    sdc,
    sdhw,
    TRAINING: tl.constexpr,
    WIDE: tl.constexpr,
    ALIGN: tl.constexpr,
    REVERSE: tl.constexpr,
    STAGES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # one program per block of channels: pass 1 reduces the per-(n, c) sums, keeps their sums over n (the
    # parameter gradients and the batch coefficient) in registers and writes sum(t gamma) per (n, c); pass 2
    # reads that back and writes dx. The statistics may live in one buffer (the forward's), at the offsets
    # given; grads_ptr takes the weight, bias and v gradients one after the other
    HW = _aligned(HW, ALIGN)  # H*W and the row strides: multiples of ALIGN, for vector loads
    sgn, sgc = _aligned(sgn, ALIGN), _aligned(sgc, ALIGN)
    sxn, sxc = _aligned(sxn, ALIGN), _aligned(sxc, ALIGN)
    sdn, sdc = _aligned(sdn, ALIGN), _aligned(sdc, ALIGN)
    imean_ptr += imean_offset
    istd_ptr += istd_offset
    bmean_ptr += bmean_offset
    left_ptr += left_offset
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    n0 = tl.arange(0, BLOCK_N)
    hw0 = tl.arange(0, BLOCK_HW)
    acc = istd_ptr.dtype.element_ty
    w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
    v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
    left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
    sum_b = tl.zeros([BLOCK_C], acc)
    sum_w = tl.zeros([BLOCK_C], acc)
    sum_v = tl.zeros([BLOCK_C], acc)
    sum_l = tl.zeros([BLOCK_C], acc)
    for nstart in tl.range(0, N, BLOCK_N, num_stages=STAGES, flatten=STAGES > 1):  # pyright: ignore[reportGeneralTypeIssues, reportArgumentType]
        rows, ok = _sample_rows(nstart, n0, N, c_ok, WIDE)
        index = rows[:, None] * C + cols[None, :]
        istd = tl.load(istd_ptr + index, mask=ok, other=1.0)
        g_base = g_ptr + rows[:, None] * sgn + cols[None, :] * sgc
        x_base = x_ptr + rows[:, None] * sxn + cols[None, :] * sxc
        tg = tl.zeros([BLOCK_N, BLOCK_C], acc)
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = ok[:, :, None] & (hw < HW)[None, None, :]
            g = tl.load(g_base[:, :, None] + hw[None, None, :] * sghw, mask=mask, other=0.0).to(acc)
            x = tl.load(x_base[:, :, None] + hw[None, None, :] * sxhw, mask=mask, other=0.0).to(acc)
            right = v[None, :, None] * x + istd[:, :, None]
            d, t = _b0_max(left[None, :, None], right)
            gxq = g * x / d
            gamma = -gxq * w[None, :, None] / d  # dL/dd
            sum_b += tl.sum(tl.sum(g, axis=2), axis=0)
            sum_w += tl.sum(tl.sum(gxq, axis=2), axis=0)
            sum_v += tl.sum(tl.sum(t * gamma * x, axis=2), axis=0)
            sum_l += tl.sum(tl.sum((1.0 - t) * gamma, axis=2), axis=0)
            tg += tl.sum(t * gamma, axis=2)
        tl.store(tg_ptr + index, tg, mask=ok)
    tl.store(grads_ptr + cols, sum_w, mask=c_ok)
    tl.store(grads_ptr + C + cols, sum_b, mask=c_ok)
    tl.store(grads_ptr + 2 * C + cols, sum_v, mask=c_ok)
    bcoef = sum_l / (N * HW * left)
    bmean = tl.load(bmean_ptr + cols, mask=c_ok, other=0.0)
    tl.debug_barrier()  # sum(t gamma) written above, by other threads of this program, is read below
    n_blocks = tl.cdiv(N, BLOCK_N)
    for step in tl.range(0, n_blocks, num_stages=STAGES, flatten=STAGES > 1):  # pyright: ignore[reportGeneralTypeIssues, reportArgumentType]
        nstart = _block_start(step, n_blocks, REVERSE, BLOCK_N)
        rows, ok = _sample_rows(nstart, n0, N, c_ok, WIDE)
        index = rows[:, None] * C + cols[None, :]
        istd = tl.load(istd_ptr + index, mask=ok, other=1.0)
        imean = tl.load(imean_ptr + index, mask=ok, other=0.0)
        icoef = tl.load(tg_ptr + index, mask=ok, other=0.0) / (HW * istd)  # d istd = sum t gamma
        g_base = g_ptr + rows[:, None] * sgn + cols[None, :] * sgc
        x_base = x_ptr + rows[:, None] * sxn + cols[None, :] * sxc
        dx_base = dx_ptr + rows[:, None] * sdn + cols[None, :] * sdc
        for start in range(0, HW, BLOCK_HW):
            hw = start + hw0
            mask = ok[:, :, None] & (hw < HW)[None, None, :]
            g = tl.load(g_base[:, :, None] + hw[None, None, :] * sghw, mask=mask, other=0.0).to(acc)
            x = tl.load(x_base[:, :, None] + hw[None, None, :] * sxhw, mask=mask, other=0.0).to(acc)
            right = v[None, :, None] * x + istd[:, :, None]
            d, t = _b0_max(left[None, :, None], right)
            gw = g * w[None, :, None] / d
            dx = gw - t * gw * x / d * v[None, :, None] + icoef[:, :, None] * (x - imean[:, :, None])
            if TRAINING:
                dx += bcoef[None, :, None] * (x - bmean[None, :, None])
            out = dx_base[:, :, None] + hw[None, None, :] * sdhw
            tl.store(out, dx.to(dx_ptr.dtype.element_ty), mask=mask)
