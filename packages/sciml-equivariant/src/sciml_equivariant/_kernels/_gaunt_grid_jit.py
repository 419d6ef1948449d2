"""The ``@triton.jit`` kernel of :mod:`sciml_equivariant._kernels.gaunt_grid` (the fused quadrature-grid Gaunt product).

This module is imported lazily, when the kernel is first launched, so importing the package never imports
``triton``. The kernel lives at module level, not in a closure, because Triton resolves the names a kernel uses
(``tl``) through the module's globals: Triton 3.2 and 3.3 cannot see a closure's ``tl``.
"""

from __future__ import annotations

import triton  # noqa: TID253 - this module is imported only when the kernel is first launched
import triton.language as tl  # noqa: TID253

__all__ = ["gaunt_grid_kernel"]


@triton.jit
def gaunt_grid_kernel(
    x_ptr,
    y_ptr,
    bx_ptr,
    by_ptr,
    w_ptr,
    out_ptr,
    n_rows,
    k1,
    k2,
    k3,
    n_grid,
    stride_xn,
    stride_xk,
    stride_yn,
    stride_yk,
    stride_bxg,
    stride_bxk,
    stride_byg,
    stride_byk,
    stride_wg,
    stride_wk,
    stride_on,
    stride_ok,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_K1: tl.constexpr,
    BLOCK_K2: tl.constexpr,
    BLOCK_O: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_o = tl.program_id(1)
    compute = w_ptr.dtype.element_ty  # the bases carry the compute dtype (float32 or float64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    outs = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    out_ok = outs < k3
    acc = tl.zeros([BLOCK_N, BLOCK_O], compute)
    for g0 in range(0, n_grid, BLOCK_G):
        grid = g0 + tl.arange(0, BLOCK_G)
        grid_ok = grid < n_grid
        values_x = tl.zeros([BLOCK_N, BLOCK_G], compute)
        for k0 in range(0, k1, BLOCK_K1):
            ks = k0 + tl.arange(0, BLOCK_K1)
            k_ok = ks < k1
            xt = tl.load(
                x_ptr + rows[:, None] * stride_xn + ks[None, :] * stride_xk,
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            ).to(compute)
            bt = tl.load(
                bx_ptr + ks[:, None] * stride_bxk + grid[None, :] * stride_bxg,
                mask=k_ok[:, None] & grid_ok[None, :],
                other=0.0,
            )
            values_x += tl.dot(xt, bt, input_precision=PRECISION)
        values_y = tl.zeros([BLOCK_N, BLOCK_G], compute)
        for k0 in range(0, k2, BLOCK_K2):
            ks = k0 + tl.arange(0, BLOCK_K2)
            k_ok = ks < k2
            yt = tl.load(
                y_ptr + rows[:, None] * stride_yn + ks[None, :] * stride_yk,
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            ).to(compute)
            bt = tl.load(
                by_ptr + ks[:, None] * stride_byk + grid[None, :] * stride_byg,
                mask=k_ok[:, None] & grid_ok[None, :],
                other=0.0,
            )
            values_y += tl.dot(yt, bt, input_precision=PRECISION)
        wt = tl.load(
            w_ptr + grid[:, None] * stride_wg + outs[None, :] * stride_wk,
            mask=grid_ok[:, None] & out_ok[None, :],
            other=0.0,
        )
        # padded grid points have zero weight rows, so they add nothing
        acc += tl.dot(values_x * values_y, wt, input_precision=PRECISION)
    tl.store(
        out_ptr + rows[:, None] * stride_on + outs[None, :] * stride_ok,
        acc.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & out_ok[None, :],
    )
