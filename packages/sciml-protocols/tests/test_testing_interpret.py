"""Triton kernels under the interpreter: run with TRITON_INTERPRET=1 pytest -m interpret."""

import functools

import pytest
import torch
from sciml_protocols.testing import assert_interpreter_parity, interpreter_enabled

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.skipif(not interpreter_enabled(), reason="needs TRITON_INTERPRET=1 set before pytest starts"),
]


@functools.cache
def _kernels():
    # Imported and defined only here: triton decides at definition time whether a kernel is interpreted.
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def axpy_kernel(x_ptr, y_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask)
        y = tl.load(y_ptr + offsets, mask=mask)
        tl.store(out_ptr + offsets, alpha * x + y, mask=mask)

    @triton.jit
    def axpy_unmasked_tail_kernel(x_ptr, y_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
        # Deliberately wrong: the last block's tail is never written, leaving whatever empty_like held.
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < (n // BLOCK) * BLOCK
        x = tl.load(x_ptr + offsets, mask=mask)
        y = tl.load(y_ptr + offsets, mask=mask)
        tl.store(out_ptr + offsets, alpha * x + y, mask=mask)

    def launcher(kernel):
        def axpy(alpha, x, y):
            out = torch.full_like(x, float("nan"))
            n = x.numel()
            block = 64
            kernel[(triton.cdiv(n, block),)](x, y, out, alpha, n, BLOCK=block)
            return out

        return axpy

    return launcher(axpy_kernel), launcher(axpy_unmasked_tail_kernel)


def axpy_reference(alpha, x, y):
    return alpha * x + y


def test_masked_axpy_matches_the_reference():
    axpy, _ = _kernels()
    generator = torch.Generator().manual_seed(0)
    # 1000 is not a multiple of the block size: the mask matters.
    x = torch.randn(1000, generator=generator, dtype=torch.float64)
    y = torch.randn(1000, generator=generator, dtype=torch.float64)
    assert_interpreter_parity(axpy, axpy_reference, 0.75, x, y)


def test_the_helper_catches_a_kernel_that_drops_the_tail():
    _, wrong = _kernels()
    x = torch.linspace(-1.0, 1.0, 100)
    with pytest.raises(AssertionError, match=r"Tensors are not close: 36 / 100 entries"):
        assert_interpreter_parity(wrong, axpy_reference, 2.0, x, x)
