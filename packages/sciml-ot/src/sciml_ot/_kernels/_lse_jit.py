"""The ``@triton.jit`` kernel of :mod:`sciml_ot._kernels.lse` (the online log-sum-exp softmin).

This module is imported lazily, when the kernel is first launched, so importing the package never imports
``triton``. The kernel lives at module level, not in a closure, because Triton resolves the names a kernel uses
(``tl``) through the module's globals: Triton 3.2 and 3.3 cannot see a closure's ``tl``.
"""

from __future__ import annotations

import triton  # noqa: TID253 - this module is imported only when the kernel is first launched
import triton.language as tl  # noqa: TID253

__all__ = ["softmin_kernel"]


@triton.jit
def softmin_kernel(
    x_ptr,
    y_ptr,
    h_ptr,
    eps_ptr,
    out_ptr,
    n,
    m,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    stride_yb,
    stride_ym,
    stride_yd,
    stride_hb,
    stride_hm,
    stride_ob,
    stride_on,
    EUCLIDEAN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)
    batch = tl.program_id(1)
    eps = tl.load(eps_ptr)  # a 1-element tensor in the compute dtype (a float argument would be float32)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    x_rows = x_ptr + batch * stride_xb + rows * stride_xn
    y_base = y_ptr + batch * stride_yb
    h_base = h_ptr + batch * stride_hb
    running_max = tl.full([BLOCK_N], float("-inf"), eps.dtype)
    running_sum = tl.zeros([BLOCK_N], eps.dtype)
    for start in range(0, m, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        col_ok = cols < m
        cost = tl.zeros([BLOCK_N, BLOCK_M], eps.dtype)
        for k in range(0, d):
            xk = tl.load(x_rows + k * stride_xd, mask=row_ok, other=0.0).to(eps.dtype)
            yk = tl.load(y_base + cols * stride_ym + k * stride_yd, mask=col_ok, other=0.0).to(eps.dtype)
            diff = xk[:, None] - yk[None, :]
            cost += diff * diff
        if EUCLIDEAN:
            cost = tl.sqrt(cost)
        hj = tl.load(h_base + cols * stride_hm, mask=col_ok, other=0.0).to(eps.dtype)
        z = (hj[None, :] - cost) / eps
        z = tl.where(col_ok[None, :], z, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(z, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max).to(eps.dtype)
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(z - shift[:, None]), axis=1)
        running_max = new_max
    shift = tl.where(running_max == float("-inf"), 0.0, running_max).to(eps.dtype)
    result = -eps * (shift + tl.log(running_sum))
    tl.store(out_ptr + batch * stride_ob + rows * stride_on, result.to(out_ptr.dtype.element_ty), mask=row_ok)
