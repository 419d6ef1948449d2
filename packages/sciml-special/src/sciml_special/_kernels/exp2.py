"""Triton kernels for :func:`sciml_special.exp2_evolved` (imported lazily: only when the Triton path runs).

``_exp2_reduced`` and ``_exp2_negative`` are the two evolved programs, as written by
``EXP2_PROGRAM.to_triton_source("_exp2_reduced")`` and ``EXP2_NEGATIVE_PROGRAM.to_triton_source("_exp2_negative")``
(a unit test checks that the text here agrees); ``exp2_evolved_device`` adds the range reduction and can be called
from other kernels; ``exp2_evolved_triton`` launches the elementwise kernel. Launches pass
``enable_fp_fusion=False`` so that the compiler does not fuse a multiply and an add into an FMA the program does not
have (the error analysis and the exhaustive check assume the program's exact operations).
"""

from __future__ import annotations

import torch
import triton  # noqa: TID253 - this module is imported only when the Triton path runs
import triton.language as tl  # noqa: TID253

__all__ = ["exp2_evolved_device", "exp2_evolved_triton"]

_BLOCK = 1024


# fmt: off
# BEGIN GENERATED: EXP2_PROGRAM.to_triton_source("_exp2_reduced")
@triton.jit
def _exp2_reduced(x):
    v1 = tl.fma(0.00021870933414902538, x, 0.0012390364427119493)
    v2 = tl.fma(v1, x, 0.00968419760465622)
    v3 = tl.fma(v2, x, 0.0554807148873806)
    v4 = tl.fma(v3, x, 0.24023039638996124)
    v5 = tl.fma(x, v4, 0.6931469440460205)
    v6 = tl.fma(x, v5, 1.0)
    return v6
# END GENERATED


# BEGIN GENERATED: EXP2_NEGATIVE_PROGRAM.to_triton_source("_exp2_negative")
@triton.jit
def _exp2_negative(x):
    v1 = tl.fma(x, 0.0011224054032936692, 0.009503216482698917)
    v2 = tl.fma(x, v1, 0.05547493323683739)
    v3 = tl.fma(v2, x, 0.2402232140302658)
    v4 = tl.fma(x, v3, 0.6931470632553101)
    v5 = tl.fma(x, v4, 1.0)
    return v5
# END GENERATED
# fmt: on


@triton.jit
def exp2_evolved_device(x):
    """:math:`2^x` for a block of float32 values (same algorithm as the PyTorch reference, see ``_exp2.py``)."""
    clamped = tl.minimum(tl.maximum(x, -151.0), 127.99999237060547)
    small_negative = (x > -0.5) & (x < 0.0)
    n = tl.where(small_negative, 0.0, tl.floor(clamped))
    f = clamped - n
    p = tl.where(small_negative, _exp2_negative(f), _exp2_reduced(f))
    whole = n.to(tl.int32)
    half = whole >> 1
    scale_1 = ((half + 127) << 23).to(tl.float32, bitcast=True)
    scale_2 = ((whole - half + 127) << 23).to(tl.float32, bitcast=True)
    y = (p * scale_1) * scale_2
    y = tl.where(x >= 128.0, float("inf"), y)
    y = tl.where(x < -150.0, 0.0, y)
    return tl.where(x != x, x, y)


@triton.jit
def _exp2_kernel(x_pointer, y_pointer, n_elements, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_pointer + offsets, mask=mask, other=0.0)
    tl.store(y_pointer + offsets, exp2_evolved_device(x), mask=mask)


def exp2_evolved_triton(x: torch.Tensor) -> torch.Tensor:
    """Launch the elementwise kernel on a float32 tensor (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    n_elements = flat.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK),)
        _exp2_kernel[grid](flat, out, n_elements, BLOCK=_BLOCK, enable_fp_fusion=False)  # pyright: ignore[reportCallIssue]
    return out.view(x.shape)
