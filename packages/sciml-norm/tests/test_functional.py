"""Functional EvoNorm-S0/B0 (sciml_norm._functional), eager path: parity with timm, closed forms, gradients, errors.

Oracles: timm's ``EvoNorm2dS0``/``EvoNorm2dB0`` (forward, autograd backward, running variance), hand-computed
statistics (``torch.var``) for the running-variance conventions and the B0 reductions, torch's gradcheck in float64.
"""

import subprocess
import sys

import pytest
import timm.layers.evo_norm as timm_evo
import torch
from sciml_norm._functional import evonorm_b0, evonorm_s0
from sciml_protocols import SciMLError, SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64, interpreter_enabled
from torch.utils._python_dispatch import TorchDispatchMode

F32, F64 = torch.float32, torch.float64


def make_input(shape, dtype=F32, channels_last=False, seed=0, shift=0.3):
    g = torch.Generator().manual_seed(seed)
    x = (1.5 * torch.randn(*shape, generator=g, dtype=F64) + shift).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def randomize(module, seed=1):
    """Non-trivial parameters (and running variance) so every term of the formulas matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            c = p.shape[0]
            if name == "bias" or name == "v":
                p.copy_(torch.randn(c, generator=g))
            else:  # weight, running_var: positive
                p.copy_(torch.rand(c, generator=g) + 0.5)
    return module


def leaves(module, names=("weight", "bias", "v")):
    return [getattr(module, n).detach().clone().requires_grad_() for n in names]


def s0_pair(x, groups, cotangent, eps=1e-5, apply_act=True, dtype=F32):
    """(timm output and grads, ours) for one input."""
    c = x.shape[1]
    module = randomize(timm_evo.EvoNorm2dS0(c, groups=groups, eps=eps, apply_act=apply_act, dtype=dtype))
    xt = x.clone().requires_grad_()
    yt = module(xt)
    yt.backward(cotangent)
    names = ("weight", "bias", "v") if apply_act else ("weight", "bias")
    params = leaves(module, names)
    xo = x.clone().requires_grad_()
    v = params[2] if apply_act else None
    yo = evonorm_s0(xo, params[0], params[1], v, groups=groups, eps=eps, apply_act=apply_act, backend="torch")
    yo.backward(cotangent)
    want = [yt, xt.grad] + [getattr(module, n).grad for n in names]
    got = [yo, xo.grad] + [p.grad for p in params]
    return got, want


# ----------------------------------------------------------------------------------------------- S0 vs timm


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("shape", "groups"), [((3, 8, 5, 7), 4), ((2, 6, 4, 4), 1), ((2, 6, 3, 5), 6)])
def test_s0_matches_timm(channels_last, shape, groups):
    x = make_input(shape, channels_last=channels_last)
    cotangent = make_input(shape, seed=5, shift=0.0)
    got, want = s0_pair(x, groups, cotangent)
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a is not None
        assert b is not None
        assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"output {index}")
    if channels_last:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_s0_apply_act_false_is_affine_like_timm():
    x = make_input((2, 4, 3, 3))
    got, want = s0_pair(x, 2, make_input((2, 4, 3, 3), seed=3), apply_act=False)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, rtol=1e-6, atol=1e-6)
    w, b = torch.rand(4) + 0.5, torch.randn(4)
    assert_close(evonorm_s0(x, w, b, None, groups=2, apply_act=False), x * w[:, None, None] + b[:, None, None])


def test_s0_half_precision_matches_timm():
    x = make_input((2, 8, 4, 4), dtype=torch.bfloat16)
    module = randomize(timm_evo.EvoNorm2dS0(8, groups=2))
    want = module(x)
    got = evonorm_s0(x, module.weight, module.bias, module.v, groups=2)
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def test_s0_independent_of_other_samples():
    x = make_input((4, 6, 3, 5), dtype=F64)
    w, b, v = torch.rand(6, dtype=F64) + 0.5, torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    full = evonorm_s0(x, w, b, v, groups=3)
    for i in range(4):
        assert_close(full[i : i + 1], evonorm_s0(x[i : i + 1], w, b, v, groups=3), rtol=1e-14, atol=1e-14)


def test_s0_closed_form_single_group():
    # one sample, one group: y = x sigmoid(v x) / sqrt(var + eps) w + b with the biased variance of all entries
    x = make_input((1, 3, 2, 4), dtype=F64)
    w, b, v = (
        torch.tensor([0.5, 1.0, 2.0], dtype=F64),
        torch.tensor([0.1, -0.2, 0.3], dtype=F64),
        torch.ones(3, dtype=F64),
    )
    flat = x.flatten()
    var = ((flat - flat.mean()) ** 2).mean()
    want = x * torch.sigmoid(x) / torch.sqrt(var + 1e-5) * w[:, None, None] + b[:, None, None]
    assert_close(evonorm_s0(x, w, b, v, groups=1), want, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------------------------- B0 vs timm


def b0_pair(x, cotangent, training, steps=1, apply_act=True, bessel=True):
    c = x.shape[1]
    module = randomize(timm_evo.EvoNorm2dB0(c, apply_act=apply_act)).train(training)
    names = ("weight", "bias", "v") if apply_act else ("weight", "bias")
    params = leaves(module, names)
    running = module.running_var.clone()
    for step in range(steps):
        xs = x * (1.0 + 0.5 * step)
        xt = xs.clone().requires_grad_()
        yt = module(xt)
        yt.backward(cotangent)
        xo = xs.clone().requires_grad_()
        v = params[2] if apply_act else None
        yo = evonorm_b0(
            xo, params[0], params[1], v, running, training=training, apply_act=apply_act, bessel=bessel, backend="torch"
        )
        yo.backward(cotangent)
    want = [yt, xt.grad] + [getattr(module, n).grad for n in names] + [module.running_var]  # pyright: ignore
    got = [yo, xo.grad] + [p.grad for p in params] + [running]  # pyright: ignore
    return got, want


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_b0_matches_timm(channels_last, training):
    x = make_input((3, 6, 5, 7), channels_last=channels_last)
    got, want = b0_pair(x, make_input((3, 6, 5, 7), seed=7, shift=0.0), training, steps=3)
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a is not None
        assert b is not None
        assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"output {index}")


def test_b0_apply_act_false_is_affine_and_keeps_running_var():
    x = make_input((2, 4, 3, 3))
    got, want = b0_pair(x, make_input((2, 4, 3, 3), seed=2), True, apply_act=False)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, rtol=1e-6, atol=1e-6)
    running = torch.ones(4)
    evonorm_b0(x, torch.ones(4), torch.zeros(4), None, running, training=True, apply_act=False)
    assert torch.equal(running, torch.ones(4))


@pytest.mark.parametrize("bessel", [True, False])
def test_b0_running_var_convention(bessel):
    x = make_input((4, 3, 2, 5), dtype=F64)
    running = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    start = running.clone()
    p = torch.ones(3, dtype=F64)
    evonorm_b0(x, p, 0 * p, p, running, training=True, momentum=0.2, bessel=bessel)
    n = 4 * 2 * 5
    biased = x.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1, unbiased=False)
    sample_var = biased * n / (n - 1) if bessel else biased
    assert_close(running, 0.8 * start + 0.2 * sample_var, rtol=1e-13, atol=1e-14)
    # evaluation reads but never writes it
    evonorm_b0(x, p, 0 * p, p, running, training=False)
    assert_close(running, 0.8 * start + 0.2 * sample_var, rtol=0, atol=0)


def test_b0_eval_with_zero_v_is_max_of_running_and_instance_std():
    x = make_input((2, 3, 4, 4), dtype=F64)
    running = torch.tensor([0.5, 1.0, 4.0], dtype=F64)
    w, b = torch.rand(3, dtype=F64) + 0.5, torch.randn(3, dtype=F64)
    eps = 1e-3
    y = evonorm_b0(x, w, b, torch.zeros(3, dtype=F64), running, training=False, eps=eps)
    instance = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + eps)
    denominator = torch.maximum(torch.sqrt(running + eps)[:, None, None], instance)
    assert_close(y, x / denominator * w[:, None, None] + b[:, None, None], rtol=1e-13, atol=1e-13)


def test_b0_half_precision_matches_timm():
    x = make_input((4, 6, 3, 3), dtype=torch.float16)
    module = randomize(timm_evo.EvoNorm2dB0(6))
    running = module.running_var.clone()
    want = module(x)
    got = evonorm_b0(x, module.weight, module.bias, module.v, running, training=True)
    assert got.dtype == torch.float16
    assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)
    assert_close(running, module.running_var, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_s0(channels_last):
    x = make_input((2, 4, 3, 3), dtype=F64, channels_last=channels_last)
    w, b, v = torch.rand(4, dtype=F64) + 0.5, torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)
    gradcheck_float64(lambda *a: evonorm_s0(*a, groups=2, backend="torch"), x, w, b, v)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_b0(training):
    x = make_input((3, 3, 2, 3), dtype=F64)
    w, b, v = torch.rand(3, dtype=F64) + 0.5, torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    running = torch.rand(3, dtype=F64) + 0.5

    def fn(*a):
        return evonorm_b0(*a, running.clone(), training=training, backend="torch")

    gradcheck_float64(fn, x, w, b, v)


# ----------------------------------------------------------------------------------------------- layout, dispatch


class FullSizeCopies(TorchDispatchMode):
    """Records the copying operators (clone, contiguous, dtype copies) that return a tensor as large as x."""

    def __init__(self, numel):
        super().__init__()
        self.numel = numel
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if any(k in name for k in ("clone", "contiguous", "_to_copy", "copy_")):
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.numel() >= self.numel:
                    self.copies.append(name)
        return out


def test_channels_last_input_is_not_copied():
    x = make_input((2, 8, 5, 5), channels_last=True)
    p = torch.ones(8)
    with FullSizeCopies(x.numel()) as mode:
        y = evonorm_s0(x, p, 0 * p, p, groups=4)
        z = evonorm_b0(x, p, 0 * p, p, torch.ones(8), training=True)
    assert mode.copies == []
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert z.is_contiguous(memory_format=torch.channels_last)


def test_auto_on_cpu_never_takes_triton(monkeypatch):
    from sciml_norm import _functional

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU tensors")

    monkeypatch.setattr(_functional._fused, "evonorm_s0_fused", refuse)
    monkeypatch.setattr(_functional._fused, "evonorm_b0_fused", refuse)
    x = make_input((2, 4, 3, 3))
    p = torch.ones(4)
    evonorm_s0(x, p, 0 * p, p, groups=2, backend="auto")
    evonorm_b0(x, p, 0 * p, p, torch.ones(4), training=True, backend="auto")


@pytest.mark.skipif(interpreter_enabled(), reason="the interpreter allows Triton on CPU tensors")
def test_triton_on_cpu_needs_the_interpreter():
    x = make_input((2, 4, 3, 3))
    p = torch.ones(4)
    # without the interpreter (or without triton installed) an explicit "triton" on CPU tensors is refused
    refused = "TRITON_INTERPRET|cannot be imported"
    with pytest.raises(SciMLError, match=refused):
        evonorm_s0(x, p, p, p, groups=2, backend="triton")
    with pytest.raises(SciMLError, match=refused):
        evonorm_b0(x, p, p, p, torch.ones(4), training=False, backend="triton")


def test_import_loads_neither_triton_nor_dynamo():
    # triton is imported on the first kernel launch only; torch._dynamo (seconds to import) only by torch.compile
    code = "import sys, sciml_norm._functional; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'triton'" not in loaded
    code = "import sys, sciml_norm._functional; print('torch._dynamo' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_s0():
    x = make_input((2, 4, 3, 3))
    p = torch.ones(4)
    cases = [
        ("'x'", lambda: evonorm_s0(x[0], p, p, p, groups=2)),
        ("'x'", lambda: evonorm_s0(x.long(), p, p, p, groups=2)),
        ("'x'", lambda: evonorm_s0(x[:0], p, p, p, groups=2)),
        ("'x'", lambda: evonorm_s0(x.numpy(), p, p, p, groups=2)),  # pyright: ignore[reportArgumentType]
        ("'weight'", lambda: evonorm_s0(x, torch.ones(3), p, p, groups=2)),
        ("'bias'", lambda: evonorm_s0(x, p, torch.ones(4, 1), p, groups=2)),
        ("'v'", lambda: evonorm_s0(x, p, p, torch.ones(5), groups=2)),
        ("'v'", lambda: evonorm_s0(x, p, p, None, groups=2)),
        ("'weight'", lambda: evonorm_s0(x, torch.ones(4, dtype=torch.int64), p, p, groups=2)),
        ("'weight'", lambda: evonorm_s0(x, torch.ones(4, device="meta"), p, p, groups=2)),
        ("'groups'", lambda: evonorm_s0(x, p, p, p, groups=3)),
        ("'groups'", lambda: evonorm_s0(x, p, p, p, groups=0)),
        ("'groups'", lambda: evonorm_s0(x, p, p, p, groups=2.0)),  # pyright: ignore[reportArgumentType]
        ("'eps'", lambda: evonorm_s0(x, p, p, p, groups=2, eps=0.0)),
        ("'eps'", lambda: evonorm_s0(x, p, p, p, groups=2, eps=float("nan"))),
        ("'backend'", lambda: evonorm_s0(x, p, p, p, groups=2, backend="cuda")),
    ]
    for match, call in cases:
        with pytest.raises(SciMLInputError, match=match):
            call()


def test_bad_inputs_b0():
    x = make_input((2, 4, 3, 3))
    p, rv = torch.ones(4), torch.ones(4)
    cases = [
        ("'x'", lambda: evonorm_b0(x[None], p, p, p, rv, training=True)),
        ("'weight'", lambda: evonorm_b0(x, torch.ones(2), p, p, rv, training=True)),
        ("'running_var'", lambda: evonorm_b0(x, p, p, p, torch.ones(3), training=True)),
        ("'running_var'", lambda: evonorm_b0(x, p, p, p, None, training=True)),  # pyright: ignore[reportArgumentType]
        ("'v'", lambda: evonorm_b0(x, p, p, None, rv, training=True)),
        ("'training'", lambda: evonorm_b0(x, p, p, p, rv, training=1)),  # pyright: ignore[reportArgumentType]
        ("'bessel'", lambda: evonorm_b0(x, p, p, p, rv, training=True, bessel=None)),  # pyright: ignore[reportArgumentType]
        ("'momentum'", lambda: evonorm_b0(x, p, p, p, rv, training=True, momentum=1.5)),
        ("'momentum'", lambda: evonorm_b0(x, p, p, p, rv, training=True, momentum=-0.1)),
        ("'eps'", lambda: evonorm_b0(x, p, p, p, rv, training=True, eps=-1e-3)),
        ("'x'", lambda: evonorm_b0(x[:1, :, :1, :1], p, p, p, rv, training=True)),  # one value per channel
    ]
    for match, call in cases:
        with pytest.raises(SciMLInputError, match=match):
            call()
    # one value per channel is fine with the biased convention, and in evaluation
    evonorm_b0(x[:1, :, :1, :1], p, p, p, rv.clone(), training=True, bessel=False)
    evonorm_b0(x[:1, :, :1, :1], p, p, p, rv, training=False)
