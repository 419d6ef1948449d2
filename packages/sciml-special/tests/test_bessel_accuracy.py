"""Accuracy of log_iv, log_kv, iv_ratio (and the scaled forms) against 40-digit mpmath oracles, and against SciPy.

Error model (the docstrings): absolute error <= c * max(1, |f|) for the logs, relative error for the ratio.
"""

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest
import sciml_special
import torch
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


def grid(n: int = 220, seed: int = 2024) -> list[tuple[float, float]]:
    """Log-uniform v in [1e-3, 1e5] (plus v = 0 and a few exact orders), x in [1e-6, 1e6], rounded to float32 so the
    same oracle values serve both dtypes."""
    rng = np.random.default_rng(seed)
    v = 10.0 ** rng.uniform(-3, 5, n)
    x = 10.0 ** rng.uniform(-6, 6, n)
    extra_v = [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 12.5, 13.0, 100.0]
    extra_x = [1e-6, 1.0, 1e6, 3.0, 30.0, 20.0, 29.5, 45.0, 1e4]
    v = np.concatenate([v, extra_v]).astype(np.float32).astype(np.float64)
    x = np.concatenate([x, extra_x]).astype(np.float32).astype(np.float64)
    return list(zip(v.tolist(), x.tolist(), strict=True))


POINTS = grid()
FUNCTIONS = {"log_iv": log_iv, "log_kv": log_kv, "iv_ratio": iv_ratio, "log_ive": log_ive, "log_kve": log_kve}


def worst_error(name, dtype, points):
    ref = torch.tensor(oracle.evaluate(name, points), dtype=torch.float64)
    v = torch.tensor([p[0] for p in points], dtype=dtype)
    x = torch.tensor([p[1] for p in points], dtype=dtype)
    got = FUNCTIONS[name](v, x).to(torch.float64)
    scale = ref.abs() if name == "iv_ratio" else ref.abs().clamp(min=1.0)
    err = torch.where(got == ref, torch.zeros_like(ref), (got - ref).abs() / scale)
    worst = int(err.argmax())
    return float(err.max()), points[worst], float(got[worst]), float(ref[worst])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["log_iv", "log_kv", "iv_ratio", "log_ive", "log_kve"])
def test_float64_against_mpmath(name):
    err, point, got, ref = worst_error(name, torch.float64, POINTS)
    # measured: <= 2e-15 for the logs, <= 2e-14 for the ratio (see the package README)
    assert err <= 1e-13, f"{name}: error {err:.2e} at (v, x) = {point}: got {got!r}, want {ref!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["log_iv", "log_kv", "iv_ratio", "log_ive", "log_kve"])
def test_float32_against_mpmath(name):
    err, point, got, ref = worst_error(name, torch.float32, POINTS)
    bound = 2e-7 if name == "iv_ratio" else 1e-6  # rounding once from float64
    assert err <= bound, f"{name}: error {err:.2e} at (v, x) = {point}: got {got!r}, want {ref!r}"


def test_oracle_routes_agree():
    # mpmath.besseli / besselk and the log-space quadratures are independent: they must agree to ~30 digits
    for v, x in [(0.0, 1.0), (2.5, 7.0), (50.0, 30.0), (0.3, 200.0)]:
        assert abs(float(oracle.log_iv_mp(v, x) - oracle.log_iv_quad(v, x))) < 1e-28
    for v, x in [(0.0, 1.0), (0.25, 1.0), (2.5, 7.0), (0.3, 20.0), (1.7, 0.01)]:
        k = oracle.log_kv_besselk(v, x)
        assert k is not None
        assert abs(float(k - oracle.log_kv_mp(v, x))) < 1e-28


# the values of the research notes (mpmath, 40 digits), where SciPy returns -inf / inf / NaN
PEER_FAILURES = [
    ("log_iv", 1023.0, 1.0, -6780.369734516678),
    ("log_iv", 16383.0, 2e4, 13600.339159426480),
    ("log_iv", 1e5, 1e5, 53277.148847441684),
    ("log_kv", 1000.0, 10.0, 4295.0643388832388),
    ("log_kv", 16383.0, 1.0, 153948.82769865512),
]


@pytest.mark.parametrize(("name", "v", "x", "want"), PEER_FAILURES)
def test_where_scipy_fails(name, v, x, want):
    special = pytest.importorskip("scipy.special")
    got = float(FUNCTIONS[name](torch.tensor(v, dtype=torch.float64), torch.tensor(x, dtype=torch.float64)))
    assert math.isfinite(got)
    assert abs(got - want) <= 1e-14 * abs(want)
    with np.errstate(all="ignore"):
        scipy_value = np.log(special.ive(v, x)) + x if name == "log_iv" else np.log(special.kve(v, x)) - x
    assert not np.isfinite(scipy_value)  # the point of the comparison: SciPy cannot represent these


def test_against_scipy_where_finite():
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(7)
    v = 10.0 ** rng.uniform(-3, 3, 4000)
    x = 10.0 ** rng.uniform(-4, 4, 4000)
    with np.errstate(all="ignore"):
        ive = special.ive(v, x)
        kve = special.kve(v, x)
    ok_i = (ive > 1e-290) & np.isfinite(ive)
    ok_k = (kve > 1e-290) & np.isfinite(kve)
    vt, xt = torch.from_numpy(v), torch.from_numpy(x)
    ours_i = log_ive(vt, xt).numpy()
    ours_k = log_kve(vt, xt).numpy()
    with np.errstate(all="ignore"):
        scipy_i, scipy_k = np.log(ive), np.log(kve)
    err_i = np.abs(ours_i - scipy_i)[ok_i] / np.maximum(1.0, np.abs(ours_i[ok_i]))
    err_k = np.abs(ours_k - scipy_k)[ok_k] / np.maximum(1.0, np.abs(ours_k[ok_k]))
    assert ok_i.mean() > 0.8
    assert ok_k.mean() > 0.8
    # SciPy (AMOS) itself is accurate to about 1e-14 here
    worst_i, worst_k = int(np.argmax(err_i)), int(np.argmax(err_k))
    assert err_i.max() < 1e-12, (err_i.max(), v[ok_i][worst_i], x[ok_i][worst_i])
    assert err_k.max() < 1e-12, (err_k.max(), v[ok_k][worst_k], x[ok_k][worst_k])


@pytest.mark.parametrize("v", [4139.0, 1e4, 1e5])
def test_no_v_eps_cancellation_near_eta_zero(v):
    # near x = z0 v the Debye exponent v*eta crosses zero; the textbook formula loses v*eps (2e-11 at v = 1e5)
    z0 = 0.6627434193491816
    points = [(v, v * z0 * f) for f in (0.9999, 1.0, 1.0002, 1.0005, 1.001)]
    for name in ("log_iv", "log_kv"):
        err, point, got, ref = worst_error(name, torch.float64, points)
        assert err <= 5e-15, f"{name}: error {err:.2e} at {point}: got {got!r}, want {ref!r}"


def test_tiny_arguments():
    # the K integral switches to its closed-form plateau for x below about 1e-17
    points = [(v, x) for v in (0.0, 0.3, 2.5, 12.0) for x in (1e-10, 1e-16, 1e-17, 1e-18, 1e-30, 1e-100, 1e-300)]
    for name in ("log_iv", "log_kv", "iv_ratio"):
        err, point, got, ref = worst_error(name, torch.float64, points)
        assert err <= 1e-14, f"{name}: error {err:.2e} at {point}: got {got!r}, want {ref!r}"


def test_public_names():
    for name in ("log_iv", "log_kv", "iv_ratio", "log_ive", "log_kve"):
        assert name in sciml_special.__all__
        assert callable(getattr(sciml_special, name))
