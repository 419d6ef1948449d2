"""Identities that need no oracle: Wronskian, recurrences, closed forms, region seams, monotonicity, limits."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sciml_special import _bessel, iv_ratio, log_iv, log_ive, log_kv, log_kve

F64 = torch.float64


def t(values):
    return torch.as_tensor(values, dtype=F64)


def grid(n=40):
    v = torch.logspace(-3, 5, n, dtype=F64)
    x = torch.logspace(-6, 6, n, dtype=F64)
    return torch.meshgrid(v, x, indexing="ij")


def test_wronskian():
    # I_v K_{v+1} + I_{v+1} K_v = 1/x, in log space: every term positive
    v, x = grid()
    lhs = torch.logaddexp(log_iv(v, x) + log_kv(v + 1, x), log_iv(v + 1, x) + log_kv(v, x))
    scale = 1.0 + log_iv(v, x).abs() + log_kv(v + 1, x).abs()  # the identity cancels terms of that size
    assert torch.all((lhs + torch.log(x)).abs() <= 1e-15 * scale * 8)


def test_recurrence_i():
    # I_{v-1} = I_{v+1} + (2v/x) I_v (v >= 1: every term positive)
    v, x = grid()
    v = v + 1.0
    lhs = log_iv(v - 1, x)
    rhs = torch.logaddexp(log_iv(v + 1, x), torch.log(2 * v / x) + log_iv(v, x))
    assert torch.all((lhs - rhs).abs() <= 1e-14 * (1 + lhs.abs()))


def test_recurrence_k():
    # K_{v+1} = K_{v-1} + (2v/x) K_v, with K_{-w} = K_w
    v, x = grid()
    lhs = log_kv(v + 1, x)
    rhs = torch.logaddexp(log_kv((v - 1).abs(), x), torch.log(2 * v / x) + log_kv(v, x))
    assert torch.all((lhs - rhs).abs() <= 1e-14 * (1 + lhs.abs()))


def test_ratio_matches_logs():
    v, x = grid(25)
    ratio = iv_ratio(v, x)
    via_logs = torch.exp(log_iv(v + 1, x) - log_iv(v, x))
    # the difference of logs carries eps*|log I| absolute error, the ratio does not
    tol = 1e-15 * (1 + log_iv(v, x).abs() + log_iv(v + 1, x).abs()) * 4
    assert torch.all((ratio / via_logs).log().abs() <= tol)


def test_half_integer_closed_forms():
    x = torch.logspace(-6, 6, 200, dtype=F64)
    log_sinh = x + torch.log(-torch.expm1(-2 * x)) - math.log(2)
    want_i = 0.5 * torch.log(2 / (math.pi * x)) + log_sinh
    want_k = 0.5 * torch.log(math.pi / (2 * x)) - x
    assert torch.allclose(log_iv(0.5, x), want_i, rtol=1e-15, atol=2e-15)
    assert torch.allclose(log_kv(0.5, x), want_k, rtol=1e-15, atol=2e-15)
    assert torch.allclose(log_kv(1.5, x), want_k + torch.log1p(1 / x), rtol=1e-15, atol=2e-15)
    assert torch.allclose(log_kve(0.5, x), 0.5 * torch.log(math.pi / (2 * x)), rtol=1e-15, atol=2e-15)


def test_special_values():
    v = t([0.0, 1.0, 2.5])
    zero = torch.zeros(3, dtype=F64)
    assert torch.equal(log_iv(v, zero), t([0.0, -math.inf, -math.inf]))
    assert torch.equal(log_kv(v, zero), t([math.inf] * 3))
    assert torch.equal(iv_ratio(v, zero), zero)
    assert torch.equal(log_ive(v, zero), t([0.0, -math.inf, -math.inf]))


def test_nan_semantics_without_validation():
    v = t([-1.0, 1.0, math.nan, 1.0])
    x = t([1.0, -1.0, 1.0, math.nan])
    for fn in (log_iv, log_kv, iv_ratio, log_ive, log_kve):
        assert torch.isnan(fn(v, x, validate=False)).all()


def test_limits():
    # small x: log I ~ v log(x/2) - lgamma(v+1); large x: log I ~ x - log(2 pi x)/2, log K ~ -x + log(pi/2x)/2
    v = t([0.0, 0.3, 2.0, 7.5, 40.0, 1e3])
    small = torch.full_like(v, 1e-9)
    want = v * torch.log(small / 2) - torch.lgamma(v + 1)
    assert torch.allclose(log_iv(v, small), want, rtol=1e-15, atol=1e-15)
    big = torch.full_like(v, 1e12)
    assert torch.allclose(log_ive(v, big), -0.5 * torch.log(2 * math.pi * big), rtol=0, atol=1e-6)
    assert torch.allclose(log_kve(v, big), 0.5 * torch.log(math.pi / (2 * big)), rtol=0, atol=1e-6)
    # small x for K (the plateau of the integral): K_0(x) ~ -log(x/2) - gamma, K_v(x) ~ Gamma(v)/2 (2/x)^v
    tiny = t([1e-30, 1e-100, 1e-300])
    k0 = -torch.log(tiny / 2) - 0.5772156649015329
    assert torch.allclose(log_kv(0.0, tiny), torch.log(k0), rtol=1e-14, atol=1e-14)
    kv = torch.lgamma(t(2.5)) - math.log(2) + 2.5 * torch.log(2 / tiny)
    assert torch.allclose(log_kv(2.5, tiny), kv, rtol=1e-14, atol=1e-14)


def test_monotone():
    v = torch.logspace(-3, 5, 400, dtype=F64)
    for x_value in (1e-5, 0.3, 7.0, 29.9, 30.1, 500.0, 1e5):
        x = torch.full_like(v, x_value)
        assert torch.all(log_iv(v, x).diff() <= 1e-13)  # decreasing in v
        assert torch.all(log_kv(v, x).diff() >= -1e-13)  # increasing in v
    x = torch.logspace(-6, 6, 400, dtype=F64)
    for v_value in (0.0, 0.4, 5.0, 12.69, 12.7, 300.0, 9e4):
        v = torch.full_like(x, v_value)
        assert torch.all(log_iv(v, x).diff() >= -1e-13)  # increasing in x
        assert torch.all(log_kv(v, x).diff() <= 1e-13)  # decreasing in x
        r = iv_ratio(v, x)
        assert torch.all((r >= 0) & (r < 1))
        assert torch.all(r.diff() >= -1e-15)


def _around(value, steps=4):
    """float64 neighbours of ``value``: value - steps ulp ... value + steps ulp."""
    out = [t(value)]
    for direction in (math.inf, -math.inf):
        current = t(value)
        for _ in range(steps):
            current = torch.nextafter(current, t(direction))
            out.append(current)
    return torch.stack(out).sort().values


SEAMS = [
    # (description, v values, x values): each row straddles one region threshold
    ("x = 30, small | hankel", lambda: (torch.full((9,), 0.5, dtype=F64), _around(_bessel.SMALL_X))),
    ("x = 30, small | debye", lambda: (torch.full((9,), 10.0, dtype=F64), _around(_bessel.SMALL_X))),
    ("v = 12.6964, small | debye", lambda: (_around(_bessel.DEBYE_V), torch.full((9,), 5.0, dtype=F64))),
    ("v = 12.6964, small | debye, tiny x", lambda: (_around(_bessel.DEBYE_V), torch.full((9,), 1e-5, dtype=F64))),
    ("v^2 = 2x, hankel | debye", lambda: (torch.full((9,), 40.0, dtype=F64), _around(800.0))),
    ("v^2 = 2x, hankel | debye, big", lambda: (torch.full((9,), 3000.0, dtype=F64), _around(4.5e6))),
    ("x = 0.45 v (anchor window)", lambda: (torch.full((9,), 1000.0, dtype=F64), _around(450.0))),
    ("x = 0.9 v (anchor window)", lambda: (torch.full((9,), 1000.0, dtype=F64), _around(900.0))),
]


@pytest.mark.parametrize(("name", "make"), SEAMS, ids=[s[0] for s in SEAMS])
@pytest.mark.parametrize("fn", [log_iv, log_kv, iv_ratio, log_ive, log_kve], ids=lambda f: f.__name__)
def test_continuity_across_region_seams(name, make, fn):
    v, x = make()
    values = fn(v, x)
    spread = float(values.max() - values.min())
    assert spread <= 1e-13 * max(1.0, float(values.abs().max())), f"{fn.__name__} jumps by {spread:.2e} at {name}"


def test_seams_really_switch_region():
    for _, make in SEAMS[:6]:
        v, x = make()
        masks = torch.stack(_bessel.regions(v, x))
        assert masks.any(dim=1).sum() == 2  # both sides of the seam are hit


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1e5, allow_subnormal=False),
    st.floats(min_value=1e-6, max_value=1e6, allow_subnormal=False),
)
def test_property_wronskian_and_ratio_bounds(v, x):
    vt, xt = t(v), t(x)
    lhs = torch.logaddexp(log_iv(vt, xt) + log_kv(vt + 1, xt), log_iv(vt + 1, xt) + log_kv(vt, xt))
    scale = 1.0 + float(log_iv(vt, xt).abs() + log_kv(vt + 1, xt).abs())
    assert abs(float(lhs) + math.log(x)) <= 1e-14 * scale
    # Amos (1974): x / (v + 1/2 + sqrt((v + 3/2)^2 + x^2)) <= I_{v+1}/I_v <= x / (v + 1/2 + sqrt((v + 1/2)^2 + x^2))
    r = float(iv_ratio(vt, xt))
    lower = x / (v + 0.5 + math.sqrt((v + 1.5) ** 2 + x**2))
    upper = x / (v + 0.5 + math.sqrt((v + 0.5) ** 2 + x**2))
    assert lower * (1 - 1e-14) <= r <= upper * (1 + 1e-14)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1e5, allow_subnormal=False),
    st.floats(min_value=1e-6, max_value=1e6, allow_subnormal=False),
)
def test_property_float32_close_to_float64(v, x):
    v32, x32 = torch.tensor(v, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    for fn in (log_iv, log_kv):
        a = float(fn(v32, x32))
        b = float(fn(v32.double(), x32.double()))
        assert abs(a - b) <= 1e-6 * max(1.0, abs(b))
