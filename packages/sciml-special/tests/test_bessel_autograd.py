"""Derivatives: closed forms in x, the order derivative against 40-digit quadratures, gradcheck per region."""

import importlib.util
import pathlib
import sys

import pytest
import torch
from sciml_protocols.testing import gradcheck_float64
from sciml_special import iv_ratio, log_iv, log_ive, log_kv, log_kve


def load_oracle():
    name = "sciml_special_tests_bessel_oracle"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name("bessel_oracle.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


oracle = load_oracle()
F64 = torch.float64

# two points per region, away from the seams: (v, x)
REGION_POINTS = {
    "hankel": [(0.5, 100.0), (3.0, 2e3)],
    "debye": [(50.0, 30.0), (20.0, 5.0)],
    "debye-anchored": [(100.0, 66.0), (300.0, 200.0)],
    "small": [(1.5, 2.0), (0.3, 0.05)],
}


@pytest.mark.parametrize("region", list(REGION_POINTS))
@pytest.mark.parametrize("fn", [log_iv, log_kv, iv_ratio, log_ive, log_kve], ids=lambda f: f.__name__)
def test_gradcheck(region, fn):
    v = torch.tensor([p[0] for p in REGION_POINTS[region]], dtype=F64)
    x = torch.tensor([p[1] for p in REGION_POINTS[region]], dtype=F64)
    gradcheck_float64(fn, v, x, eps=1e-6, atol=1e-6, rtol=1e-6)


def _grads(fn, v_values, x_values):
    v = torch.tensor(v_values, dtype=F64, requires_grad=True)
    x = torch.tensor(x_values, dtype=F64, requires_grad=True)
    gv, gx = torch.autograd.grad(fn(v, x).sum(), (v, x))
    return gv, gx


DV_POINTS = [
    (0.5, 2.0),
    (3.7, 0.01),
    (0.2, 1e-20),  # K plateau
    (12.0, 25.0),
    (0.05, 17.0),
    (7.0, 300.0),
    (50.0, 30.0),
    (4139.0, 2745.0),
    (1023.0, 1.0),
    (2000.0, 3e5),
]


@pytest.mark.slow
def test_order_derivative_against_quadrature():
    v_values = [p[0] for p in DV_POINTS]
    x_values = [p[1] for p in DV_POINTS]
    gi, _ = _grads(log_iv, v_values, x_values)
    gk, _ = _grads(log_kv, v_values, x_values)
    for i, (v, x) in enumerate(DV_POINTS):
        want_i = oracle.dlog_iv_dv(v, x)
        want_k = oracle.dlog_kv_dv(v, x)
        # measured: <= 2e-15 * max(1, |d|) on 60 random points in v in [1e-2, 3e4], x in [1e-5, 1e5]
        assert abs(float(gi[i]) - want_i) <= 1e-13 * max(1.0, abs(want_i)), (v, x, float(gi[i]), want_i)
        assert abs(float(gk[i]) - want_k) <= 1e-13 * max(1.0, abs(want_k)), (v, x, float(gk[i]), want_k)


def test_order_derivative_against_mpmath_diff():
    # the brief's oracle: mpmath.diff of log besseli at 40 digits (only where mpmath is fast)
    points = [(0.5, 2.0), (3.7, 0.01), (12.0, 25.0)]
    gi, _ = _grads(log_iv, [p[0] for p in points], [p[1] for p in points])
    for i, (v, x) in enumerate(points):
        want = oracle.dlog_iv_dv_diff(v, x)
        assert want is not None
        assert abs(float(gi[i]) - want) <= 1e-13 * max(1.0, abs(want))


def test_ratio_order_derivative():
    # d/dv (I_{v+1}/I_v) = r * (d/dv log I_{v+1} - d/dv log I_v), the right side from the quadrature oracle
    points = [(0.5, 2.0), (12.0, 25.0), (50.0, 30.0), (3.0, 400.0)]
    gv, _ = _grads(iv_ratio, [p[0] for p in points], [p[1] for p in points])
    for i, (v, x) in enumerate(points):
        r = oracle.iv_ratio(v, x)
        want = r * (oracle.dlog_iv_dv(v + 1.0, x) - oracle.dlog_iv_dv(v, x))
        assert abs(float(gv[i]) - want) <= 1e-10 * abs(want), (v, x, float(gv[i]), want)


def test_x_derivatives_are_the_closed_forms():
    v = torch.tensor([0.0, 0.5, 2.0, 40.0, 700.0, 3.0], dtype=F64)
    x = torch.tensor([1.0, 3.0, 0.01, 20.0, 500.0, 1e4], dtype=F64)
    _, gx_i = _grads(log_iv, v.tolist(), x.tolist())
    _, gx_k = _grads(log_kv, v.tolist(), x.tolist())
    _, gx_ie = _grads(log_ive, v.tolist(), x.tolist())
    _, gx_ke = _grads(log_kve, v.tolist(), x.tolist())
    ratio_i = torch.tensor([oracle.iv_ratio(a, b) for a, b in zip(v.tolist(), x.tolist(), strict=True)], dtype=F64)
    want_i = ratio_i + v / x
    ratio_k = torch.tensor([oracle.kv_ratio(a, b) for a, b in zip(v.tolist(), x.tolist(), strict=True)], dtype=F64)
    want_k = -ratio_k + v / x
    assert torch.allclose(gx_i, want_i, rtol=1e-13, atol=0)
    assert torch.allclose(gx_k, want_k, rtol=1e-11, atol=0)  # exp of a difference of logs of size |log K|
    assert torch.allclose(gx_ie, want_i - 1, rtol=1e-10, atol=1e-15)
    assert torch.allclose(gx_ke, want_k + 1, rtol=1e-10, atol=1e-15)


def test_ratio_x_derivative_satisfies_riccati():
    # r' = 1 - (2v + 1) r / x - r^2 (moderate x, where the right side does not cancel)
    v = torch.tensor([0.0, 0.5, 3.0, 40.0, 200.0], dtype=F64)
    x = torch.tensor([0.5, 3.0, 10.0, 25.0, 150.0], dtype=F64)
    _, gx = _grads(iv_ratio, v.tolist(), x.tolist())
    r = iv_ratio(v, x)
    assert torch.allclose(gx, 1 - (2 * v + 1) * r / x - r * r, rtol=1e-11, atol=1e-14)


def test_gradients_stay_finite_next_to_special_points():
    # unused branches and special points must not leak NaN into the gradients of their neighbours
    v = torch.tensor([0.0, 1.0, 2.0, 0.0, 30.0], dtype=F64, requires_grad=True)
    x = torch.tensor([0.0, 0.0, 1.0, 1e-300, 40.0], dtype=F64, requires_grad=True)
    for fn in (log_iv, log_kv, iv_ratio):
        gv, gx = torch.autograd.grad(fn(v, x)[2:].sum(), (v, x))
        assert torch.isfinite(gv).all()
        assert torch.isfinite(gx[2:]).all()


def test_float32_gradients():
    v = torch.tensor([0.5, 20.0, 3.0], dtype=torch.float32, requires_grad=True)
    x = torch.tensor([2.0, 15.0, 300.0], dtype=torch.float32, requires_grad=True)
    gv, gx = torch.autograd.grad(log_iv(v, x).sum(), (v, x))
    assert gv.dtype == torch.float32
    gv64, gx64 = _grads(log_iv, v.tolist(), x.tolist())
    assert torch.allclose(gv.double(), gv64, rtol=1e-6)
    assert torch.allclose(gx.double(), gx64, rtol=1e-6)


def test_only_requested_gradients():
    v = torch.tensor([1.5], dtype=F64)
    x = torch.tensor([2.0], dtype=F64, requires_grad=True)
    (gx,) = torch.autograd.grad(log_kv(v, x).sum(), (x,))
    assert torch.isfinite(gx).all()
    v.requires_grad_(True)
    x2 = torch.tensor([2.0], dtype=F64)
    (gv,) = torch.autograd.grad(log_kv(v, x2).sum(), (v,))
    assert torch.isfinite(gv).all()


def test_broadcast_gradients_reduce():
    v = torch.tensor([[0.5], [3.0]], dtype=F64, requires_grad=True)
    x = torch.tensor([1.0, 2.0, 40.0], dtype=F64, requires_grad=True)
    out = log_iv(v, x)
    assert out.shape == (2, 3)
    gv, gx = torch.autograd.grad(out.sum(), (v, x))
    assert gv.shape == v.shape
    assert gx.shape == x.shape
