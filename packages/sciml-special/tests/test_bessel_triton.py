"""Triton kernels of the log-Bessel functions: parity with the reference under the interpreter, and on CUDA.

Run the interpreter tests with ``TRITON_INTERPRET=1 uv run pytest -m interpret packages/sciml-special/tests``: the
variable must be set before the kernel module is imported, so it is imported inside the tests.
"""

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest
import torch
from sciml_protocols.testing import assert_close, assert_interpreter_parity, interpreter_enabled
from sciml_special import iv_ratio, log_iv, log_ive, log_kv, log_kve
from sciml_special._ops import _reference

needs_interpreter = pytest.mark.skipif(
    not interpreter_enabled(),
    reason=(
        "Triton interpreter parity runs in the nox interpret session "
        "(TRITON_INTERPRET=1 must be set before triton loads)"
    ),
)

CASES = [("log_iv", False), ("log_iv", True), ("log_kv", False), ("log_kv", True), ("iv_ratio", False)]
PUBLIC = {("log_iv", False): log_iv, ("log_iv", True): log_ive, ("log_kv", False): log_kv, ("log_kv", True): log_kve}
PUBLIC[("iv_ratio", False)] = iv_ratio
# error model: |kernel - reference| <= tol * max(1, |reference|) (relative for the ratio)
TOLERANCE = {torch.float64: 1e-13, torch.float32: 1e-5}


def inputs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    v = 10.0 ** rng.uniform(-3, 5, n)
    x = 10.0 ** rng.uniform(-6, 6, n)
    # every region, its seams, special values and tiny arguments
    extra_v = [0.0, 0.0, 1.0, 0.5, 12.6964, 12.7, 40.0, 40.0, 1e3, 0.3, 2.5, 4139.0, 1e5]
    extra_x = [0.0, 1.0, 0.0, 30.0, 5.0, 5.0, 800.0, 800.1, 663.0, 1e-300, 1e-20, 2745.0, 66274.0]
    v = torch.tensor(np.concatenate([v, extra_v]), dtype=torch.float64)
    x = torch.tensor(np.concatenate([x, extra_x]), dtype=torch.float64)
    return v, x


def kernels():
    from sciml_special._kernels import bessel  # after TRITON_INTERPRET is set: triton reads it at @jit time

    return bessel


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize(("kind", "scaled"), CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_interpreter_parity(kind, scaled, dtype):
    bessel = kernels()
    v, x = inputs()
    tol = TOLERANCE[dtype]
    assert_interpreter_parity(
        lambda a, b: bessel.launch(kind, a, b, scaled),
        lambda a, b: _reference(kind, a, b, scaled),
        v,
        x,
        dtypes=(dtype,),
        rtol=tol,
        atol=0.0 if kind == "iv_ratio" else tol,
    )


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_nan_and_special_values():
    bessel = kernels()
    v = torch.tensor([-1.0, 1.0, math.nan, 0.0, 2.0, 0.0], dtype=torch.float64)
    x = torch.tensor([1.0, -1.0, 1.0, 0.0, 0.0, 5.0], dtype=torch.float64)
    for kind, scaled in CASES:
        got = bessel.launch(kind, v, x, scaled)
        want = _reference(kind, v, x, scaled)
        assert torch.isnan(got[:3]).all()
        assert torch.equal(got[3:5], want[3:5])
        assert torch.allclose(got[5:], want[5:], rtol=1e-14)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_public_backend_and_gradients():
    kernels()
    v = torch.tensor([0.5, 3.0, 50.0, 1.5, 100.0], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([100.0, 2e3, 30.0, 2.0, 66.0], dtype=torch.float64, requires_grad=True)
    for fn in (log_iv, log_kv, iv_ratio, log_ive, log_kve):
        got = fn(v, x, backend="triton")
        want = fn(v, x, backend="torch")
        assert_close(got, want, rtol=1e-13, atol=1e-13)
        g_got = torch.autograd.grad(got.sum(), (v, x))
        g_want = torch.autograd.grad(want.sum(), (v, x))
        for a, b in zip(g_got, g_want, strict=True):
            assert_close(a, b, rtol=1e-12, atol=1e-13)
    # half precision computes in float32
    half = log_iv(v.detach().half(), x.detach().half(), backend="triton")
    assert half.dtype == torch.float16


def load_oracle():
    name = "sciml_special_tests_bessel_oracle"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name("bessel_oracle.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_float32_kernel_against_mpmath():
    # the float32 kernel computes in float32 arithmetic (the reference in float64): check it against the oracle
    bessel = kernels()
    oracle = load_oracle()
    rng = np.random.default_rng(5)
    v = (10.0 ** rng.uniform(-3, 5, 40)).astype(np.float32).astype(np.float64)
    x = (10.0 ** rng.uniform(-6, 6, 40)).astype(np.float32).astype(np.float64)
    points = list(zip(v.tolist(), x.tolist(), strict=True))
    vt, xt = torch.tensor(v, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    for name, kind, scaled in [
        ("log_iv", "log_iv", False),
        ("log_kv", "log_kv", False),
        ("iv_ratio", "iv_ratio", False),
    ]:
        ref = torch.tensor(oracle.evaluate(name, points), dtype=torch.float64)
        got = bessel.launch(kind, vt, xt, scaled).double()
        scale = ref.abs() if name == "iv_ratio" else ref.abs().clamp(min=1)
        err = ((got - ref).abs() / scale).max()
        assert err <= 1e-5, (name, float(err))


# ---------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize(("kind", "scaled"), CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_reference(kind, scaled, dtype):
    pytest.importorskip("triton")
    v, x = inputs(n=200_000, seed=1)
    want = _reference(kind, v.to(dtype), x.to(dtype), scaled).double()
    got = (
        PUBLIC[(kind, scaled)](v.to(dtype=dtype, device="cuda"), x.to(dtype=dtype, device="cuda"), backend="triton")
        .double()
        .cpu()
    )
    tol = TOLERANCE[dtype]
    scale = want.abs() if kind == "iv_ratio" else want.abs().clamp(min=1)
    err = torch.where(got == want, torch.zeros_like(want), (got - want).abs() / scale)
    worst = int(err.nan_to_num(nan=1.0).argmax())
    assert float(err.nan_to_num(nan=1.0).max()) <= tol, (kind, scaled, dtype, float(v[worst]), float(x[worst]))


@pytest.mark.gpu
def test_cuda_gradients_and_half_precision():
    pytest.importorskip("triton")
    v = torch.tensor([0.5, 3.0, 50.0, 1.5, 100.0], dtype=torch.float64, device="cuda", requires_grad=True)
    x = torch.tensor([100.0, 2e3, 30.0, 2.0, 66.0], dtype=torch.float64, device="cuda", requires_grad=True)
    for fn in (log_iv, log_kv, iv_ratio):
        got = fn(v, x)  # auto: Triton on CUDA
        want = fn(v.detach().cpu().requires_grad_(), x.detach().cpu().requires_grad_())
        assert_close(got.cpu(), want, rtol=1e-13, atol=1e-13)
        g = torch.autograd.grad(got.sum(), (v, x))
        assert all(torch.isfinite(t).all() for t in g)
    for dtype in (torch.float16, torch.bfloat16):
        out = log_iv(v.detach().to(dtype), x.detach().to(dtype))
        assert out.dtype == dtype
        assert out.device.type == "cuda"


@pytest.mark.gpu
def test_cuda_torch_backend_and_compile():
    v, x = inputs(n=1000, seed=2)
    v, x = v.to("cuda"), x.to("cuda")
    assert_close(log_kv(v, x, backend="torch"), log_kv(v, x, backend="triton"), rtol=1e-13, atol=1e-13)
    compiled = torch.compile(lambda a, b: log_iv(a, b, validate=False).sum(), fullgraph=True)
    assert_close(compiled(v, x), log_iv(v, x).sum(), rtol=1e-12, atol=1e-10)
