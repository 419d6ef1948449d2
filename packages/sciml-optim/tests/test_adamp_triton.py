"""Fused AdamP (two Triton launches per group): parity under the interpreter, and on CUDA.

Run the interpreter tests with ``TRITON_INTERPRET=1 uv run pytest -m interpret packages/sciml-optim/tests``; the
variable must be set before the kernel module is imported (the optimizer imports it lazily on the first fused step).
The interpreter runs every program in numpy (about 0.1 s each), so the problems are tiny.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from sciml_optim._adamp import AdamP
from sciml_protocols.testing import assert_close, interpreter_enabled
from torch import nn

needs_interpreter = pytest.mark.skipif(
    not interpreter_enabled(),
    reason=(
        "Triton interpreter parity runs in the nox interpret session "
        "(TRITON_INTERPRET=1 must be set before triton loads)"
    ),
)
TOLERANCE = {torch.float64: (1e-12, 1e-14), torch.float32: (2e-6, 1e-7)}


def _parameters(dtype: torch.dtype, device: str = "cpu") -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (3, 70), (37,), (2, 5)]  # conv, linear (row not a multiple of the block), bias, small
    return [nn.Parameter(torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).to(device)) for s in shapes]


def _gradients(params: list[nn.Parameter], step: int) -> list[torch.Tensor]:
    """Gradient pattern that exercises the three outcomes: channel projection, layer projection, none."""
    generator = torch.Generator().manual_seed(100 + step)
    grads = []
    for i, p in enumerate(params):
        w = p.detach().to("cpu", torch.float64)
        g = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if i == 0:  # orthogonal to every output channel: the channel view projects
            rows = w.reshape(w.shape[0], -1)
            grows = g.reshape(w.shape[0], -1)
            grows -= rows * (grows * rows).sum(1, keepdim=True) / (rows * rows).sum(1, keepdim=True)
        elif i == 1:  # orthogonal to the whole tensor only: the channel view fails, the layer view projects
            g -= w * (g * w).sum() / (w * w).sum()
            g[0] += 0.5 * w[0]
            g -= w * (g * w).sum() / (w * w).sum()
        grads.append(g.to(p.dtype).to(p.device))
    return grads


def _run(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, steps: range) -> list[nn.Parameter]:
    for step in steps:
        for p, g in zip(params, _gradients(params, step), strict=True):
            p.grad = g
        optimizer.step()
    return params


def _outcomes(params: list[nn.Parameter]) -> list[str]:
    """Which view projects each tensor, decided by the authors' rule on the step-0 gradients (an oracle)."""
    out = []
    for p, g in zip(params, _gradients(params, 0), strict=True):
        if p.dim() <= 1:
            out.append("none")
            continue
        w = p.detach().double()
        g = g.double()
        for view, name in ((w.shape[0], "channel"), (1, "layer")):
            cos = nn.functional.cosine_similarity(g.reshape(view, -1), w.reshape(view, -1), dim=1, eps=1e-8)
            if cos.abs().max() < 0.1 / (w.numel() // view) ** 0.5:
                out.append(name)
                break
        else:
            out.append("none")
    return out


def test_gradient_pattern_covers_every_outcome() -> None:
    assert _outcomes(_parameters(torch.float64)) == ["channel", "layer", "none", "none"]


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize(
    ("dtype", "kwargs"),
    [(torch.float64, {"weight_decay": 0.1}), (torch.float32, {"weight_decay": 0.05, "nesterov": True})],
)
def test_interpreter_parity_with_reference_and_authors(dtype: torch.dtype, kwargs: dict[str, Any]) -> None:
    import adamp

    params_fused = _parameters(dtype)
    params_loop = _parameters(dtype)
    params_authors = _parameters(dtype)
    _run(params_fused, AdamP(params_fused, lr=0.05, fused=True, **kwargs), range(3))
    _run(params_loop, AdamP(params_loop, lr=0.05, foreach=False, **kwargs), range(3))
    _run(params_authors, adamp.AdamP(params_authors, lr=0.05, **kwargs), range(3))
    rtol, atol = TOLERANCE[dtype]
    for a, b, c in zip(params_fused, params_loop, params_authors, strict=True):
        assert a.dtype == dtype
        assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol)
        assert_close(a.detach(), c.detach(), rtol=rtol, atol=atol)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_resume_is_bitwise() -> None:
    params = _parameters(torch.float32)[:2]
    straight = copy.deepcopy(params)
    optimizer = AdamP(straight, lr=0.05, weight_decay=0.1, fused=True)
    _run(straight, optimizer, range(2))

    first = copy.deepcopy(params)
    optimizer = AdamP(first, lr=0.05, weight_decay=0.1, fused=True)
    _run(first, optimizer, range(1))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    resumed = [nn.Parameter(p.detach().clone()) for p in first]
    optimizer = AdamP(resumed, lr=0.05, weight_decay=0.1, fused=True)
    optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    _run(resumed, optimizer, range(1, 2))
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_nonfinite_gradient_matches_reference() -> None:
    # Propagate policy: a NaN in one row poisons that row; the other rows follow the unprojected update.
    fused_params = _parameters(torch.float64)[1:3]
    loop_params = _parameters(torch.float64)[1:3]
    for params in (fused_params, loop_params):
        grads = _gradients(_parameters(torch.float64), 0)[1:3]
        grads[0][1, 3] = float("nan")
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    AdamP(fused_params, lr=0.05, weight_decay=0.1, fused=True).step()
    AdamP(loop_params, lr=0.05, weight_decay=0.1).step()
    assert torch.isnan(fused_params[0][1, 3])
    for a, b in zip(fused_params, loop_params, strict=True):
        assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14, equal_nan=True)


# ---------------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_fused_low_precision_parameters(dtype: torch.dtype) -> None:
    device = "cuda"
    params = _parameters(dtype, device)
    master = [nn.Parameter(p.detach().float()) for p in params]
    optimizer = AdamP(params, lr=0.01, weight_decay=0.1, fused=True)
    reference = AdamP(master, lr=0.01, weight_decay=0.1, foreach=False)
    for p, m, g in zip(params, master, _gradients(master, 0), strict=True):
        p.grad = g.to(dtype)
        m.grad = g.to(dtype).float()
    optimizer.step()
    reference.step()
    for p in params:
        assert p.dtype == dtype
        assert optimizer.state[p]["exp_avg"].dtype == torch.float32
        assert optimizer.state[p]["exp_avg_sq"].dtype == torch.float32
    for p, m in zip(params, master, strict=True):
        # one rounding to the parameter dtype apart (plus float32 reduction-order noise)
        tol = max(2 * torch.finfo(dtype).eps, 1e-6)
        assert_close(p.detach().float(), m.detach(), rtol=tol, atol=tol)


@pytest.mark.gpu
def test_cuda_fused_matches_foreach_over_steps() -> None:
    device = "cuda"
    fused_params = _parameters(torch.float32, device)
    foreach_params = _parameters(torch.float32, device)
    _run(fused_params, AdamP(fused_params, lr=0.05, weight_decay=0.1, fused=True), range(5))
    _run(foreach_params, AdamP(foreach_params, lr=0.05, weight_decay=0.1, foreach=True), range(5))
    for a, b in zip(fused_params, foreach_params, strict=True):
        assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
