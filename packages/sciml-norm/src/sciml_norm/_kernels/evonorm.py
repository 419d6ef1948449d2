r"""Fused EvoNorm-S0 and EvoNorm-B0: Triton kernels for forward and backward, registered as ``torch.library`` ops.

For :math:`x \in \mathbb{R}^{N \times C \times H \times W}` and per-channel :math:`w, b, v` (Liu, Brock, Simonyan,
Le, "Evolving Normalization-Activation Layers", NeurIPS 2020, arXiv:2004.02967):

.. math::

    \text{S0:}\quad y = \frac{x\,\sigma(v x)}{\sqrt{s^2_{g}(x) + \varepsilon}}\, w + b, \qquad
    \text{B0:}\quad y = \frac{x}{\max\big(\sqrt{s^2_{c}(x) + \varepsilon},\ v x + \sqrt{s^2_{nc}(x) + \varepsilon}\big)}
    \, w + b,

with :math:`s^2_g` the biased variance over a group of :math:`C/G` channels and :math:`H \times W` of one sample,
:math:`s^2_{nc}` over :math:`H \times W` (instance) and :math:`s^2_c` over :math:`N \times H \times W` (batch; in
evaluation the running variance instead).

Every forward is two passes over :math:`x`:

1. **statistics**: one program per sample and block of channels streams over :math:`H \times W` and accumulates,
   in float32 (float64 for float64 input), the sums of :math:`x - k_{nc}` and :math:`(x - k_{nc})^2` with the
   shift :math:`k_{nc} = x_{nc00}` (shifted sums avoid the cancellation of :math:`E[x^2] - E[x]^2`). It writes the
   per-(n, c) mean and sum of squared deviations; PyTorch combines those (:math:`N \times C` numbers, Chan's
   pairwise formula) into group statistics (S0) or batch statistics (B0);
2. **output**: an element-wise pass over tiles of ``BLOCK_C`` channels by ``BLOCK_HW`` positions.

Every backward is also two passes: one program per sample and block of channels reduces the per-(n, c) sums that
the parameter gradients and the statistics' cotangents need (no atomics: PyTorch sums the :math:`N \times C`
partials over :math:`n`), then an element-wise pass writes :math:`\partial L/\partial x`. Only :math:`x` and the
small statistics are saved for backward, never :math:`y` or intermediates.

Gradients (:math:`g = \partial L/\partial y`; S0 with :math:`s = \sigma(v x)`, :math:`a = x s`, :math:`r` the
group's inverse std, :math:`\mu_g` its mean, :math:`M = (C/G) H W`):

.. math::

    \bar b_c = \sum g, \quad \bar w_c = \sum r g a, \quad \bar v_c = \sum r w g\, x^2 s (1 - s), \quad
    \bar x = r w g\,\big(s + v x s (1 - s)\big) - \frac{r^3}{M}\Big(\sum_{g} w g a\Big)(x - \mu_g).

B0 with :math:`d = \max(\ell_c, \rho)`, :math:`\rho = v x + \varsigma_{nc}`, :math:`t = 1, \tfrac12, 0` as
:math:`\rho >, =, < \ell_c` (``torch.maximum``'s convention for ties) and :math:`\gamma = -g w x / d^2`:

.. math::

    \bar x = \frac{g w}{d} + t \gamma v + \frac{\sum_{hw} t\gamma}{HW \varsigma_{nc}} (x - \mu_{nc})
    + \frac{\sum_{n,hw} (1 - t)\gamma}{N HW \ell_c} (x - \mu_c), \quad
    \bar v_c = \sum t \gamma x, \quad \bar w_c = \sum g x / d,

the last term only in training (in evaluation :math:`\ell_c` comes from the running variance).

Layouts: any :math:`x` whose :math:`H, W` axes flatten to one strided axis (NCHW-contiguous, channels-last, or
expanded gradients) is read in place through its strides; anything else is copied once. Outputs are channels-last
when :math:`x` is, else contiguous.

The operators ``sciml_norm::evonorm_s0_fwd``/``_bwd`` and ``sciml_norm::evonorm_b0_fwd``/``_bwd`` take a
``backend`` argument: ``"triton"`` launches the kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``),
``"torch"`` runs the same two-pass algorithm with PyTorch operations (so ``opcheck`` and ``torch.compile`` work on
machines without a GPU). ``triton`` is imported only when a kernel is first launched.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import torch
from torch import Tensor

__all__ = [
    "b0_backward",
    "b0_forward",
    "channel_stats",
    "evonorm_b0_fused",
    "evonorm_s0_fused",
    "s0_backward",
    "s0_forward",
]

_TILE = {"cuda": 2048, "interpret": 1024}  # elements per program tile
_MAX_BLOCK_HW = 256
_MAX_BLOCK_C = 64


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _hw_stride(t: Tensor) -> int | None:
    """Stride of the flattened (H, W) axis of a 4-D tensor, or None when H and W do not flatten to one axis."""
    _, _, height, width = t.shape
    _, _, stride_h, stride_w = t.stride()
    if width == 1:
        return stride_h
    if height == 1 or stride_h == width * stride_w:
        return stride_w
    return None


def _flat(t: Tensor) -> tuple[Tensor, int, int, int]:
    """``t`` (copied only if its H, W do not flatten) and its strides over (n, c, hw)."""
    stride = _hw_stride(t)
    if stride is None:
        t = t.contiguous()
        stride = 1
    return t, t.stride(0), t.stride(1), stride


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _empty_output(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The output buffer: channels-last when ``x`` is, else contiguous (real and fake kernels agree on this)."""
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device).contiguous(memory_format=fmt)


def _blocks(channels: int, hw: int, channel_stride: int, cuda: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW): the contiguous axis gets the long side of the tile."""
    tile = _TILE["cuda" if cuda else "interpret"]
    if channel_stride == 1 and channels > 1:  # channels-last: channels are contiguous
        block_c = min(_next_pow2(channels), _MAX_BLOCK_C)
        block_hw = min(_next_pow2(hw), max(1, tile // block_c))
    else:
        block_hw = min(_next_pow2(hw), _MAX_BLOCK_HW)
        block_c = min(_next_pow2(channels), max(1, tile // block_hw))
    return block_c, block_hw


def _options(x: Tensor) -> dict[str, Any]:
    # explicit, so Triton 3.9 does not warn that its default changes (a warning is an error under pytest)
    return {"enable_fp_fusion": True} if x.device.type == "cuda" else {}


# ----------------------------------------------------------------------------------------------- Triton kernels


@functools.cache
def _kernels() -> dict[str, Any]:
    """Build the ``@triton.jit`` kernels on first use (``triton`` is imported here and nowhere at module level)."""
    import triton
    import triton.language as tl

    @triton.jit
    def stats_kernel(
        x_ptr,
        mean_ptr,
        m2_ptr,
        C,
        HW,
        sxn,
        sxc,
        sxhw,
        n_cblocks,
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n = (pid // n_cblocks).to(tl.int64)
        cols = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cols < C
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
        tl.store(m2_ptr + out, tl.maximum(t2 - t1 * (t1 / HW), 0.0), mask=c_ok)

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
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rest = pid // n_hwblocks
        n = (rest // n_cblocks).to(tl.int64)
        cols = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = cols < C
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
        ga_ptr,
        gsum_ptr,
        gvs_ptr,
        C,
        HW,
        sgn,
        sgc,
        sghw,
        sxn,
        sxc,
        sxhw,
        n_cblocks,
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n = (pid // n_cblocks).to(tl.int64)
        cols = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cols < C
        hw0 = tl.arange(0, BLOCK_HW)
        acc = ga_ptr.dtype.element_ty
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
        out = n * C + cols
        tl.store(ga_ptr + out, tl.sum(sum_ga, axis=1), mask=c_ok)
        tl.store(gsum_ptr + out, tl.sum(sum_g, axis=1), mask=c_ok)
        tl.store(gvs_ptr + out, tl.sum(sum_gvs, axis=1), mask=c_ok)

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
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rest = pid // n_hwblocks
        n = (rest // n_cblocks).to(tl.int64)
        cols = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = cols < C
        mask = c_ok[:, None] & (hw < HW)[None, :]
        acc = rstd_ptr.dtype.element_ty
        w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
        v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
        group = n * G + cols // CPG
        rstd = tl.load(rstd_ptr + group, mask=c_ok, other=0.0)
        mean = tl.load(mean_ptr + group, mask=c_ok, other=0.0)
        coef = tl.load(coef_ptr + group, mask=c_ok, other=0.0)
        g = tl.load(g_ptr + n * sgn + cols[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
        x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
        vx = v[:, None] * x
        s = 1.0 / (1.0 + tl.exp(-vx))
        dx = g * (rstd * w)[:, None] * (s + vx * s * (1.0 - s)) + coef[:, None] * (x - mean[:, None])
        tl.store(dx_ptr + n * sdn + cols[:, None] * sdc + hw[None, :] * sdhw, dx.to(dx_ptr.dtype.element_ty), mask=mask)

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
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rest = pid // n_hwblocks
        n = (rest // n_cblocks).to(tl.int64)
        cols = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = cols < C
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
        gsum_ptr,
        gxq_ptr,
        tgx_ptr,
        tg_ptr,
        lg_ptr,
        C,
        HW,
        sgn,
        sgc,
        sghw,
        sxn,
        sxc,
        sxhw,
        n_cblocks,
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n = (pid // n_cblocks).to(tl.int64)
        cols = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cols < C
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
            d = tl.maximum(left[:, None], right)
            t = tl.where(right > left[:, None], 1.0, tl.where(right == left[:, None], 0.5, 0.0))
            gxq = g * x / d
            gamma = -gxq * w[:, None] / d  # dL/dd
            sum_g += g
            sum_gxq += gxq
            sum_tgx += t * gamma * x
            sum_tg += t * gamma
            sum_lg += (1.0 - t) * gamma
        out = n * C + cols
        tl.store(gsum_ptr + out, tl.sum(sum_g, axis=1), mask=c_ok)
        tl.store(gxq_ptr + out, tl.sum(sum_gxq, axis=1), mask=c_ok)
        tl.store(tgx_ptr + out, tl.sum(sum_tgx, axis=1), mask=c_ok)
        tl.store(tg_ptr + out, tl.sum(sum_tg, axis=1), mask=c_ok)
        tl.store(lg_ptr + out, tl.sum(sum_lg, axis=1), mask=c_ok)

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
        icoef_ptr,
        bmean_ptr,
        bcoef_ptr,
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
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rest = pid // n_hwblocks
        n = (rest // n_cblocks).to(tl.int64)
        cols = (rest % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = (pid % n_hwblocks) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = cols < C
        mask = c_ok[:, None] & (hw < HW)[None, :]
        acc = istd_ptr.dtype.element_ty
        w = tl.load(w_ptr + cols, mask=c_ok, other=0.0).to(acc)
        v = tl.load(v_ptr + cols, mask=c_ok, other=0.0).to(acc)
        istd = tl.load(istd_ptr + n * C + cols, mask=c_ok, other=1.0)
        imean = tl.load(imean_ptr + n * C + cols, mask=c_ok, other=0.0)
        icoef = tl.load(icoef_ptr + n * C + cols, mask=c_ok, other=0.0)
        left = tl.load(left_ptr + cols, mask=c_ok, other=1.0)
        g = tl.load(g_ptr + n * sgn + cols[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0.0).to(acc)
        x = tl.load(x_ptr + n * sxn + cols[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0.0).to(acc)
        right = v[:, None] * x + istd[:, None]
        d = tl.maximum(left[:, None], right)
        t = tl.where(right > left[:, None], 1.0, tl.where(right == left[:, None], 0.5, 0.0))
        gw = g * w[:, None] / d
        dx = gw - t * gw * x / d * v[:, None] + icoef[:, None] * (x - imean[:, None])
        if TRAINING:
            bmean = tl.load(bmean_ptr + cols, mask=c_ok, other=0.0)
            bcoef = tl.load(bcoef_ptr + cols, mask=c_ok, other=0.0)
            dx += bcoef[:, None] * (x - bmean[:, None])
        tl.store(dx_ptr + n * sdn + cols[:, None] * sdc + hw[None, :] * sdhw, dx.to(dx_ptr.dtype.element_ty), mask=mask)

    return {
        "stats": stats_kernel,
        "s0_forward": s0_forward_kernel,
        "s0_reduce": s0_reduce_kernel,
        "s0_dx": s0_dx_kernel,
        "b0_forward": b0_forward_kernel,
        "b0_reduce": b0_reduce_kernel,
        "b0_dx": b0_dx_kernel,
    }


class _Layout:
    """Sizes, strides, blocks and grids of one launch over a (N, C, H, W) tensor."""

    def __init__(self, x: Tensor) -> None:
        self.x, self.sxn, self.sxc, self.sxhw = _flat(x)
        self.n, self.c, h, w = x.shape
        self.hw = h * w
        self.block_c, self.block_hw = _blocks(self.c, self.hw, self.sxc, x.device.type == "cuda")
        self.n_cblocks = -(-self.c // self.block_c)
        self.n_hwblocks = -(-self.hw // self.block_hw)

    @property
    def reduce_grid(self) -> tuple[int]:
        return (self.n * self.n_cblocks,)

    @property
    def tile_grid(self) -> tuple[int]:
        return (self.n * self.n_cblocks * self.n_hwblocks,)


def _vec(t: Tensor) -> Tensor:
    return t.contiguous()


def _launch_stats(lay: _Layout, work: torch.dtype) -> tuple[Tensor, Tensor]:
    mean = torch.empty((lay.n, lay.c), dtype=work, device=lay.x.device)
    m2 = torch.empty_like(mean)
    _kernels()["stats"][lay.reduce_grid](
        lay.x,
        mean,
        m2,
        lay.c,
        lay.hw,
        lay.sxn,
        lay.sxc,
        lay.sxhw,
        lay.n_cblocks,
        BLOCK_C=lay.block_c,
        BLOCK_HW=lay.block_hw,
        **_options(lay.x),
    )
    return mean, m2


def channel_stats(x: Tensor, backend: str = "torch") -> tuple[Tensor, Tensor]:
    r"""Per-(sample, channel) mean and sum of squared deviations over :math:`H \times W` (the statistics pass).

    .. math::

        \mu_{nc} = \frac{1}{HW}\sum_{hw} x_{nchw}, \qquad m_{nc} = \sum_{hw} (x_{nchw} - \mu_{nc})^2,

    in float32 (float64 for float64 input). The Triton kernel accumulates shifted sums (shift :math:`x_{nc00}`).

    Args:
        x: (N, C, H, W), any floating dtype and memory format.
        backend: ``"torch"`` or ``"triton"`` (already resolved; no validation here).

    Returns:
        ``(mean, m2)``, each (N, C) in the compute dtype.

    Example:
        >>> x = torch.arange(8.0).view(1, 2, 2, 2)
        >>> channel_stats(x)
        (tensor([[1.5000, 5.5000]]), tensor([[5., 5.]]))
    """
    work = _compute_dtype(x.dtype)
    if backend == "triton":
        return _launch_stats(_Layout(x), work)
    xc = x.to(work)
    mean = xc.mean(dim=(2, 3))
    m2 = (xc - mean[:, :, None, None]).square().sum(dim=(2, 3))
    return mean, m2


def _group_stats(mean: Tensor, m2: Tensor, groups: int, hw: int, eps: float) -> tuple[Tensor, Tensor]:
    """Group mean and inverse std (N, G) from per-channel statistics (Chan's pairwise combination)."""
    n, c = mean.shape
    per_group = mean.view(n, groups, c // groups)
    group_mean = per_group.mean(dim=2)
    group_m2 = m2.view(n, groups, c // groups).sum(dim=2) + hw * (per_group - group_mean[:, :, None]).square().sum(2)
    var = group_m2 / (hw * (c // groups))
    return group_mean, torch.rsqrt(var + eps)


def _batch_stats(mean: Tensor, m2: Tensor, hw: int) -> tuple[Tensor, Tensor]:
    """Batch mean and biased variance (C,) from per-(n, c) statistics."""
    n = mean.shape[0]
    batch_mean = mean.mean(dim=0)
    batch_m2 = m2.sum(dim=0) + hw * (mean - batch_mean).square().sum(dim=0)
    return batch_mean, batch_m2 / (n * hw)


# ----------------------------------------------------------------------------------------------- S0


def s0_forward(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str = "torch"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-S0 forward: :math:`y = x\,\sigma(v x)\, r_{ng}\, w + b`, :math:`r = (s^2_{ng} + \epsilon)^{-1/2}`.

    Two passes over ``x``: per-channel statistics (combined into group statistics on the host side), then the
    element-wise output. No validation (:func:`sciml_norm.evonorm_s0` validates).

    Args:
        x: (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) scale :math:`w`.
        bias: (C,) shift :math:`b`.
        v: (C,) slope :math:`v` of the sigmoid gate.
        groups: number of groups :math:`G` (divides C).
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` (the kernels) or ``"torch"`` (the same algorithm in PyTorch operations).

    Returns:
        ``(y, mean, rstd)``: ``y`` like ``x`` (channels-last when ``x`` is), the group means and inverse standard
        deviations, each (N, G) in float32 (float64 for float64 input).

    Example:
        >>> x = torch.tensor([[[[1.0, -1.0]], [[2.0, -2.0]]]])
        >>> ones = torch.ones(2)
        >>> y, mean, rstd = s0_forward(x, ones, torch.zeros(2), ones, groups=1, eps=0.0)
        >>> rstd
        tensor([[0.6325]])
    """
    _n, c, h, w = x.shape
    work = _compute_dtype(x.dtype)
    if backend == "triton":
        lay = _Layout(x)
        ch_mean, ch_m2 = _launch_stats(lay, work)
        mean, rstd = _group_stats(ch_mean, ch_m2, groups, lay.hw, eps)
        y = _empty_output(x)
        _, syn, syc, syhw = _flat(y)
        _kernels()["s0_forward"][lay.tile_grid](
            lay.x,
            y,
            _vec(weight),
            _vec(bias),
            _vec(v),
            rstd,
            c,
            lay.hw,
            groups,
            c // groups,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            syn,
            syc,
            syhw,
            lay.n_cblocks,
            lay.n_hwblocks,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
        return y, mean, rstd
    ch_mean, ch_m2 = channel_stats(x)
    mean, rstd = _group_stats(ch_mean, ch_m2, groups, h * w, eps)
    xc = x.to(work)
    scale = (rstd.repeat_interleave(c // groups, dim=1) * weight.to(work))[:, :, None, None]
    y = _empty_output(x)
    y.copy_(xc * torch.sigmoid(v.to(work)[:, None, None] * xc) * scale + bias.to(work)[:, None, None])
    return y, mean, rstd


def _s0_reduce(grad: Tensor, x: Tensor, v: Tensor, work: torch.dtype, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per-(n, c) sums of g*a, g and g*x^2*s*(1-s) over H, W, each (N, C) in ``work``."""
    n, c, _h, _w = x.shape
    if backend == "triton":
        lay = _Layout(x)
        g_flat, sgn, sgc, sghw = _flat(grad)
        ga, gsum, gvs = (torch.empty((n, c), dtype=work, device=x.device) for _ in range(3))
        _kernels()["s0_reduce"][lay.reduce_grid](
            g_flat,
            lay.x,
            _vec(v),
            ga,
            gsum,
            gvs,
            c,
            lay.hw,
            sgn,
            sgc,
            sghw,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            lay.n_cblocks,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
        return ga, gsum, gvs
    xc, gc = x.to(work), grad.to(work)
    s = torch.sigmoid(v.to(work)[:, None, None] * xc)
    gx = gc * xc
    return (gx * s).sum(dim=(2, 3)), gc.sum(dim=(2, 3)), (gx * xc * s * (1.0 - s)).sum(dim=(2, 3))


def s0_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    mean: Tensor,
    rstd: Tensor,
    groups: int,
    backend: str = "torch",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-S0 backward from the saved group statistics (formulas in the module docstring).

    Pass 1 reduces, per (n, c), :math:`\sum g a`, :math:`\sum g` and :math:`\sum g x^2 s(1-s)`
    (:math:`s = \sigma(vx)`, :math:`a = x s`); PyTorch turns these :math:`N \times C` numbers into
    :math:`\bar w, \bar b, \bar v` and the per-group coefficient :math:`-r^3 \sum_{c \in g} w_c \sum g a / M`;
    pass 2 writes :math:`\bar x`. No validation.

    Args:
        grad: (N, C, H, W) cotangent of ``y``, any strides.
        x: (N, C, H, W) the forward input.
        weight: (C,) :math:`w`.
        v: (C,) :math:`v`.
        mean: (N, G) group means from :func:`s0_forward`.
        rstd: (N, G) group inverse standard deviations from :func:`s0_forward`.
        groups: :math:`G`.
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``(grad_x, grad_weight, grad_bias, grad_v)``: ``grad_x`` like ``x`` (channels-last when ``x`` is), the
        others (C,) in the compute dtype (float32, float64 for float64 input).

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> p = torch.ones(4)
        >>> y, mean, rstd = s0_forward(x, p, p, p, groups=2, eps=1e-5)
        >>> gx, gw, gb, gv = s0_backward(torch.ones_like(y), x, p, p, mean, rstd, groups=2)
        >>> gb
        tensor([18., 18., 18., 18.])
    """
    n, c, h, w = x.shape
    hw = h * w
    work = rstd.dtype
    per_group = c // groups
    ga, gsum, gvs = _s0_reduce(grad, x, v, work, backend)
    w_work = weight.to(work)
    rstd_c = rstd.repeat_interleave(per_group, dim=1)  # (N, C)
    grad_weight = (ga * rstd_c).sum(dim=0)
    grad_bias = gsum.sum(dim=0)
    grad_v = w_work * (gvs * rstd_c).sum(dim=0)
    grad_rstd = (ga * w_work).view(n, groups, per_group).sum(dim=2)
    coef = -grad_rstd * rstd.pow(3) / (per_group * hw)  # (N, G): d var / d x = 2 (x - mean) / M
    dx = _empty_output(x)
    if backend == "triton":
        lay = _Layout(x)
        g_flat, sgn, sgc, sghw = _flat(grad)
        _, sdn, sdc, sdhw = _flat(dx)
        _kernels()["s0_dx"][lay.tile_grid](
            g_flat,
            lay.x,
            dx,
            _vec(weight),
            _vec(v),
            rstd,
            mean,
            coef,
            c,
            hw,
            groups,
            per_group,
            sgn,
            sgc,
            sghw,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            sdn,
            sdc,
            sdhw,
            lay.n_cblocks,
            lay.n_hwblocks,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
    else:
        xc, gc = x.to(work), grad.to(work)
        vx = v.to(work)[:, None, None] * xc
        s = torch.sigmoid(vx)
        scale = (rstd_c * w_work)[:, :, None, None]
        coef_c = coef.repeat_interleave(per_group, dim=1)[:, :, None, None]
        mean_c = mean.repeat_interleave(per_group, dim=1)[:, :, None, None]
        dx.copy_(gc * scale * (s + vx * s * (1.0 - s)) + coef_c * (xc - mean_c))
    return dx, grad_weight, grad_bias, grad_v


# ----------------------------------------------------------------------------------------------- B0


def b0_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str = "torch",
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-B0 forward: :math:`y = x / \max(\ell_c, v x + \varsigma_{nc})\, w + b`.

    :math:`\varsigma_{nc} = \sqrt{s^2_{nc} + \varepsilon}` (instance std over H, W) and
    :math:`\ell_c = \sqrt{s^2_c + \varepsilon}` with the batch variance over (N, H, W) in training, the running
    variance in evaluation. Both variances come from one statistics pass (per-(n, c) sums, combined over n on the
    host side); the running variance is *not* updated here (the caller does it with the returned batch variance).

    Args:
        x: (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        running_var: (C,) used in evaluation only.
        training: batch statistics (True) or the running variance (False).
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``(y, instance_mean, instance_std, batch_mean, left, batch_var)``: ``y`` like ``x``; (N, C) instance
        mean and std; (C,) batch mean (zeros in evaluation), :math:`\ell_c` and the biased batch variance (the
        running variance in evaluation), all statistics in float32 (float64 for float64 input).

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
        >>> p = torch.ones(1)
        >>> y, imean, istd, bmean, left, bvar = b0_forward(x, p, 0 * p, 0 * p, p, True, 0.0)
        >>> bvar, y.flatten()
        (tensor([5.]), tensor([0.4472, 1.3416, 2.2361, 3.1305]))
    """
    _n, c, h, w = x.shape
    hw = h * w
    work = _compute_dtype(x.dtype)
    lay = _Layout(x) if backend == "triton" else None
    imean, im2 = _launch_stats(lay, work) if lay is not None else channel_stats(x)
    istd = torch.sqrt(im2 / hw + eps)
    if training:
        bmean, bvar = _batch_stats(imean, im2, hw)
    else:
        bmean = torch.zeros(c, dtype=work, device=x.device)
        bvar = running_var.to(work, copy=True)
    left = torch.sqrt(bvar + eps)
    y = _empty_output(x)
    if lay is not None:
        _, syn, syc, syhw = _flat(y)
        _kernels()["b0_forward"][lay.tile_grid](
            lay.x,
            y,
            _vec(weight),
            _vec(bias),
            _vec(v),
            istd,
            left,
            c,
            hw,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            syn,
            syc,
            syhw,
            lay.n_cblocks,
            lay.n_hwblocks,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
    else:
        xc = x.to(work)
        d = torch.maximum(left[:, None, None], v.to(work)[:, None, None] * xc + istd[:, :, None, None])
        y.copy_(xc / d * weight.to(work)[:, None, None] + bias.to(work)[:, None, None])
    return y, imean, istd, bmean, left, bvar


def _b0_terms(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, istd: Tensor, left: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """PyTorch version of the element-wise backward terms: g, g x/d, g w/d, the branch weight t, and d."""
    work = istd.dtype
    xc, gc = x.to(work), grad.to(work)
    right = v.to(work)[:, None, None] * xc + istd[:, :, None, None]
    left4 = left[:, None, None]
    d = torch.maximum(left4, right)
    t = torch.where(right > left4, 1.0, torch.where(right == left4, 0.5, 0.0)).to(work)
    return xc, gc, gc * weight.to(work)[:, None, None] / d, t, d


def _b0_reduce(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, istd: Tensor, left: Tensor, backend: str
) -> tuple[Tensor, ...]:
    """Per-(n, c) sums over H, W of g, g x/d, t gamma x, t gamma, (1 - t) gamma (gamma = -g w x / d^2)."""
    n, c, _h, _w = x.shape
    work = istd.dtype
    if backend == "triton":
        lay = _Layout(x)
        g_flat, sgn, sgc, sghw = _flat(grad)
        sums = tuple(torch.empty((n, c), dtype=work, device=x.device) for _ in range(5))
        _kernels()["b0_reduce"][lay.reduce_grid](
            g_flat,
            lay.x,
            _vec(weight),
            _vec(v),
            istd,
            left,
            *sums,
            c,
            lay.hw,
            sgn,
            sgc,
            sghw,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            lay.n_cblocks,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
        return sums
    xc, gc, gw_d, t, d = _b0_terms(grad, x, weight, v, istd, left)
    gamma = -gw_d * xc / d
    dims = (2, 3)
    return (
        gc.sum(dims),
        (gc * xc / d).sum(dims),
        (t * gamma * xc).sum(dims),
        (t * gamma).sum(dims),
        ((1.0 - t) * gamma).sum(dims),
    )


def b0_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str = "torch",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-B0 backward through both branches of the max, the instance and (training) batch variance.

    Pass 1 reduces per (n, c) the sums :math:`\sum g`, :math:`\sum g x/d`, :math:`\sum t\gamma x`,
    :math:`\sum t\gamma`, :math:`\sum (1-t)\gamma` (:math:`\gamma = -g w x/d^2`, :math:`t` the weight of the
    instance branch, 1/2 on ties like ``torch.maximum``); pass 2 writes :math:`\bar x` (module docstring).

    Args:
        grad: (N, C, H, W) cotangent of ``y``, any strides.
        x: (N, C, H, W) the forward input.
        weight: (C,) :math:`w`.
        v: (C,) :math:`v`.
        instance_mean: (N, C) from :func:`b0_forward`.
        instance_std: (N, C) from :func:`b0_forward`.
        batch_mean: (C,) from :func:`b0_forward`.
        left: (C,) :math:`\ell_c` from :func:`b0_forward`.
        training: whether :math:`\ell_c` came from the batch (then it depends on ``x``).
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``(grad_x, grad_weight, grad_bias, grad_v)``: ``grad_x`` like ``x``, the others (C,) in the compute dtype.

    Example:
        >>> x = torch.randn(2, 3, 4, 4)
        >>> p = torch.ones(3)
        >>> y, im, istd, bm, left, _ = b0_forward(x, p, p, p, p, True, 1e-3)
        >>> gx, gw, gb, gv = b0_backward(torch.ones_like(y), x, p, p, im, istd, bm, left, True)
        >>> gb
        tensor([32., 32., 32.])
    """
    n, c, h, w = x.shape
    hw = h * w
    gsum, gxq, tgx, tg, lg = _b0_reduce(grad, x, weight, v, instance_std, left, backend)
    grad_weight = gxq.sum(dim=0)
    grad_bias = gsum.sum(dim=0)
    grad_v = tgx.sum(dim=0)
    icoef = tg / (hw * instance_std)  # d istd = sum t gamma; d ivar = d istd / (2 istd); d ivar/dx = 2 (x - mu)/HW
    bcoef = lg.sum(dim=0) / (n * hw * left) if training else torch.zeros_like(left)
    dx = _empty_output(x)
    if backend == "triton":
        lay = _Layout(x)
        g_flat, sgn, sgc, sghw = _flat(grad)
        _, sdn, sdc, sdhw = _flat(dx)
        _kernels()["b0_dx"][lay.tile_grid](
            g_flat,
            lay.x,
            dx,
            _vec(weight),
            _vec(v),
            instance_std,
            left,
            instance_mean,
            icoef,
            batch_mean,
            bcoef,
            c,
            hw,
            sgn,
            sgc,
            sghw,
            lay.sxn,
            lay.sxc,
            lay.sxhw,
            sdn,
            sdc,
            sdhw,
            lay.n_cblocks,
            lay.n_hwblocks,
            TRAINING=training,
            BLOCK_C=lay.block_c,
            BLOCK_HW=lay.block_hw,
            **_options(x),
        )
    else:
        xc, _gc, gw_d, t, d = _b0_terms(grad, x, weight, v, instance_std, left)
        result = gw_d - t * gw_d * xc / d * v.to(xc.dtype)[:, None, None]
        result = result + icoef[:, :, None, None] * (xc - instance_mean[:, :, None, None])
        if training:
            result = result + bcoef[:, None, None] * (xc - batch_mean[:, None, None])
        dx.copy_(result)
    return dx, grad_weight, grad_bias, grad_v


# ----------------------------------------------------------------------------------------------- operators


@torch.library.custom_op("sciml_norm::evonorm_s0_fwd", mutates_args=())
def evonorm_s0_fwd_op(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The S0 forward operator: :func:`s0_forward` (``backend`` already resolved)."""
    return s0_forward(x, weight, bias, v, groups, eps, backend)


@evonorm_s0_fwd_op.register_fake
def _(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    work = _compute_dtype(x.dtype)
    stats = x.new_empty((x.shape[0], groups), dtype=work)
    return _empty_output(x), stats, torch.empty_like(stats)


@torch.library.custom_op("sciml_norm::evonorm_s0_bwd", mutates_args=())
def evonorm_s0_bwd_op(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, groups: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The S0 backward operator: :func:`s0_backward`."""
    return s0_backward(grad, x, weight, v, mean, rstd, groups, backend)


@evonorm_s0_bwd_op.register_fake
def _(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, groups: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    channel = x.new_empty((x.shape[1],), dtype=rstd.dtype)
    return _empty_output(x), channel, torch.empty_like(channel), torch.empty_like(channel)


@torch.library.custom_op("sciml_norm::evonorm_b0_fwd", mutates_args=())
def evonorm_b0_fwd_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The B0 forward operator: :func:`b0_forward` (the running variance is read, never written)."""
    return b0_forward(x, weight, bias, v, running_var, training, eps, backend)


@evonorm_b0_fwd_op.register_fake
def _(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    work = _compute_dtype(x.dtype)
    n, c = x.shape[:2]
    per_sample = x.new_empty((n, c), dtype=work)
    per_channel = x.new_empty((c,), dtype=work)
    return (
        _empty_output(x),
        per_sample,
        torch.empty_like(per_sample),
        per_channel,
        torch.empty_like(per_channel),
        torch.empty_like(per_channel),
    )


@torch.library.custom_op("sciml_norm::evonorm_b0_bwd", mutates_args=())
def evonorm_b0_bwd_op(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The B0 backward operator: :func:`b0_backward`."""
    return b0_backward(grad, x, weight, v, instance_mean, instance_std, batch_mean, left, training, backend)


@evonorm_b0_bwd_op.register_fake
def _(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    channel = x.new_empty((x.shape[1],), dtype=left.dtype)
    return _empty_output(x), channel, torch.empty_like(channel), torch.empty_like(channel)


def _s0_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, weight, bias, v, groups, _eps, backend = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, v, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)
    ctx.groups, ctx.backend, ctx.dtypes = groups, backend, (weight.dtype, bias.dtype, v.dtype)


def _s0_grads(ctx: Any, grads: tuple[Tensor, ...], use_op: bool) -> tuple[Tensor | None, ...]:
    x, weight, v, mean, rstd = ctx.saved_tensors
    backward = evonorm_s0_bwd_op if use_op else s0_backward
    dx, dw, db, dv = backward(grads[0], x, weight, v, mean, rstd, ctx.groups, ctx.backend)
    need = ctx.needs_input_grad
    dw_dtype, db_dtype, dv_dtype = ctx.dtypes
    return (
        dx if need[0] else None,
        dw.to(dw_dtype) if need[1] else None,
        db.to(db_dtype) if need[2] else None,
        dv.to(dv_dtype) if need[3] else None,
        None,
        None,
        None,
    )


def _b0_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, weight, bias, v, _running_var, training, _eps, backend = inputs
    _, imean, istd, bmean, left, bvar = output
    ctx.save_for_backward(x, weight, v, imean, istd, bmean, left)
    ctx.mark_non_differentiable(imean, istd, bmean, left, bvar)
    ctx.training, ctx.backend, ctx.dtypes = training, backend, (weight.dtype, bias.dtype, v.dtype)


def _b0_grads(ctx: Any, grads: tuple[Tensor, ...], use_op: bool) -> tuple[Tensor | None, ...]:
    x, weight, v, imean, istd, bmean, left = ctx.saved_tensors
    backward = evonorm_b0_bwd_op if use_op else b0_backward
    dx, dw, db, dv = backward(grads[0], x, weight, v, imean, istd, bmean, left, ctx.training, ctx.backend)
    need = ctx.needs_input_grad
    dw_dtype, db_dtype, dv_dtype = ctx.dtypes
    return (
        dx if need[0] else None,
        dw.to(dw_dtype) if need[1] else None,
        db.to(db_dtype) if need[2] else None,
        dv.to(dv_dtype) if need[3] else None,
        None,
        None,
        None,
        None,
    )


evonorm_s0_fwd_op.register_autograd(lambda ctx, *grads: _s0_grads(ctx, grads, True), setup_context=_s0_setup)
evonorm_b0_fwd_op.register_autograd(lambda ctx, *grads: _b0_grads(ctx, grads, True), setup_context=_b0_setup)


class _S0Eager(torch.autograd.Function):
    """The S0 operator's forward and backward without the dispatcher, for eager calls.

    torch wraps every ``custom_op`` kernel so that its first call imports ``torch._dynamo`` (seconds, and it turns
    off argument validation of ``torch.distributions`` process-wide); eager calls take this Function, code being
    compiled takes the registered operator.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        return s0_forward(x, weight, bias, v, groups, eps, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _s0_setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _s0_grads(ctx, grads, False)


class _B0Eager(torch.autograd.Function):
    """The B0 operator's forward and backward without the dispatcher, for eager calls (see :class:`_S0Eager`)."""

    @staticmethod
    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        v: Tensor,
        running_var: Tensor,
        training: bool,
        eps: float,
        backend: str,
    ) -> Any:
        return b0_forward(x, weight, bias, v, running_var, training, eps, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _b0_setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _b0_grads(ctx, grads, False)


# ----------------------------------------------------------------------------------------------- entry points


def evonorm_s0_fused(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str = "triton"
) -> Tensor:
    r"""Differentiable fused EvoNorm-S0, :math:`y = x\,\sigma(v x) (s^2_g(x) + \varepsilon)^{-1/2} w + b`.

    Under ``torch.compile`` this calls the ``sciml_norm::evonorm_s0_fwd`` operator (opaque to the compiler,
    backward ``sciml_norm::evonorm_s0_bwd``), otherwise the same functions through an autograd Function. No
    validation: :func:`sciml_norm.evonorm_s0` validates and resolves ``backend``.

    Args:
        x: (N, C, H, W), any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        groups: :math:`G`, divides C.
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` (kernels) or ``"torch"`` (the same two-pass algorithm in PyTorch).

    Returns:
        ``y``, like ``x``.

    Example:
        >>> x = torch.tensor([[[[1.0, -1.0]]]])
        >>> p = torch.ones(1)
        >>> evonorm_s0_fused(x, p, 0 * p, p, groups=1, eps=0.0, backend="torch")
        tensor([[[[ 0.7311, -0.2689]]]])
    """
    if torch.compiler.is_compiling():
        y, _, _ = evonorm_s0_fwd_op(x, weight, bias, v, groups, eps, backend)
    else:
        y, _, _ = cast(tuple[Tensor, Tensor, Tensor], _S0Eager.apply(x, weight, bias, v, groups, eps, backend))
    return y


def evonorm_b0_fused(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    momentum: float,
    eps: float,
    bessel: bool = True,
    backend: str = "triton",
) -> Tensor:
    r"""Differentiable fused EvoNorm-B0, :math:`y = x / \max(\ell_c, v x + \varsigma_{nc})\, w + b`.

    In training :math:`\ell_c = \sqrt{s^2_c(x) + \varepsilon}` from the batch and ``running_var`` is updated in place,
    :math:`r \leftarrow (1 - m) r + m\, s^2_c \cdot n/(n-1)` with :math:`n = NHW` (the factor only with ``bessel``);
    in evaluation :math:`\ell_c = \sqrt{r_c + \varepsilon}`. Dispatch as in :func:`evonorm_s0_fused`; no validation.

    Args:
        x: (N, C, H, W), any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        running_var: (C,) running variance :math:`r` (updated in place in training).
        training: batch statistics or the running variance.
        momentum: :math:`m`.
        eps: :math:`\varepsilon`.
        bessel: unbiased (timm) or biased (TensorFlow reference) batch variance in the running average.
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``y``, like ``x``.

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
        >>> p, rv = torch.ones(1), torch.ones(1)
        >>> y = evonorm_b0_fused(x, p, 0 * p, 0 * p, rv, True, 0.1, 0.0, backend="torch")
        >>> rv  # 0.9 * 1 + 0.1 * 5 * 4 / 3
        tensor([1.5667])
    """
    if torch.compiler.is_compiling():
        outputs = evonorm_b0_fwd_op(x, weight, bias, v, running_var, training, eps, backend)
    else:
        outputs = cast(tuple[Tensor, ...], _B0Eager.apply(x, weight, bias, v, running_var, training, eps, backend))
    if training:
        count = x.numel() // x.shape[1]
        correction = count / (count - 1) if bessel else 1.0
        with torch.no_grad():
            running_var.copy_(running_var * (1.0 - momentum) + outputs[5] * momentum * correction)
    return outputs[0]
