"""von Mises-Fisher: normaliser, statistics, KL divergences, concentration MLE and bad inputs.

Oracles: mpmath at 40 digits (literals below were computed twice, by ``mpmath.besseli`` with ``maxterms=10**6`` and
by ``mpmath.quad`` of the polar-angle integral, which agree to 20 digits; a few are recomputed live), closed forms
for d = 3, SciPy's ``vonmises_fisher`` where it works, and Monte Carlo for the KL divergence.
"""

import math

import mpmath
import pytest
import scipy.stats
import torch
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close
from sciml_special import iv_ratio
from sciml_special._vmf import (
    HypersphericalUniform,
    VonMisesFisher,
    _iv_ratio_scalar,
    fit_vmf,
    unit_sphere,
    vmf_kappa_mle,
    vmf_log_normalizer,
)
from torch.distributions import kl_divergence

F64 = torch.float64

# log C_d(kappa), mpmath at 40 digits (both routes agree to >= 20 digits)
LOG_NORMALIZER = {
    (2, 1e-3): -1.8378773164093298586,
    (2, 1.0): -2.0737914249165241323,
    (2, 1e3): -997.46518595627881016,
    (2, 1e6): -999994.0111833792226,
    (3, 1e-3): -2.5310244136359519041,
    (3, 1.0): -2.6924636085404864266,
    (3, 1e3): -994.93012178742720843,
    (3, 1e6): -999988.02236650844507,
    (16, 1e-3): -1.3258249375397323481,
    (16, 1.0): -1.35702087765028362,
    (16, 1e3): -961.95152630531812959,
    (16, 1e6): -999910.16772443832585,
    (2048, 1e-3): 4898.3838626538607967,
    (2048, 1.0): 4898.3836185135090127,
    (2048, 1e3): 4676.8173060001302691,
    (2048, 1e6): -987740.3688568025325,
    (32768, 1e-3): 123847.44700453641571,
    (32768, 1.0): 123847.44698927764191,
    (32768, 1e3): 123832.1953116613596,
    (32768, 1e6): -803630.24328106822874,  # quadrature route only: besseli(16383, 1e6) does not finish
}

# kappa-hat solving A_d(kappa) = R (mpmath root at 40 digits; research notes, part A2)
KAPPA_MLE = {
    (2048, 0.5): 1365.0667417076889,
    (8192, 0.3): 2700.6049081862464,
    (32768, 0.3): 10802.582923790231,
    (100, 0.9): 469.44512849399976,
}

GRID_DIMS = (2, 3, 16, 2048, 32768)
GRID_KAPPAS = (1e-3, 1e-1, 1.0, 10.0, 1e3, 1e6)


def mp_log_normalizer(d, kappa):
    mpmath.mp.dps = 40
    nu = mpmath.mpf(d) / 2 - 1
    kappa = mpmath.mpf(kappa)
    return float(nu * mpmath.log(kappa) - d * mpmath.log(2 * mpmath.pi) / 2 - mpmath.log(mpmath.besseli(nu, kappa)))


def mp_mean_resultant(d, kappa):
    mpmath.mp.dps = 40
    nu = mpmath.mpf(d) / 2 - 1
    return float(mpmath.besseli(nu + 1, kappa) / mpmath.besseli(nu, kappa))


def log_sphere_area(d):
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def e1(d, dtype=F64):
    out = torch.zeros(d, dtype=dtype)
    out[0] = 1.0
    return out


def unit(*values, dtype=F64):
    t = torch.tensor(values, dtype=dtype)
    return t / t.norm()


def random_directions(batch, d, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*batch, d, generator=g, dtype=F64), dim=-1).to(dtype)


# ------------------------------------------------------------------------------------------- normaliser


@pytest.mark.parametrize(("d", "kappa"), list(LOG_NORMALIZER))
def test_log_normalizer_matches_mpmath(d, kappa):
    expected = LOG_NORMALIZER[d, kappa]
    got64 = vmf_log_normalizer(d, torch.tensor([kappa], dtype=F64))
    assert_close(got64, torch.tensor([expected], dtype=F64), rtol=1e-14, atol=1e-14)
    got32 = vmf_log_normalizer(d, torch.tensor([kappa], dtype=torch.float32))
    assert got32.dtype == torch.float32
    assert_close(got32, torch.tensor([expected], dtype=F64), rtol=2e-7, atol=1e-6, dtype=torch.float32)


@pytest.mark.parametrize(("d", "kappa"), [(5, 7.5), (40, 0.3), (101, 250.0), (64, 12.0)])
def test_log_normalizer_live_mpmath(d, kappa):
    got = vmf_log_normalizer(d, torch.tensor(kappa, dtype=F64))
    assert_close(got, torch.tensor(mp_log_normalizer(d, kappa), dtype=F64), rtol=1e-14, atol=1e-14)


def test_log_normalizer_d3_closed_form():
    # log C_3 = log kappa - log(4 pi sinh kappa), with log sinh k = k + log(-expm1(-2k)) - log 2
    kappa = torch.logspace(-3, 6, 97, dtype=F64)
    closed = torch.log(kappa) - math.log(4 * math.pi) - (kappa + torch.log(-torch.expm1(-2 * kappa)) - math.log(2.0))
    assert_close(vmf_log_normalizer(3, kappa), closed, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("d", GRID_DIMS)
def test_log_normalizer_uniform_limit(d):
    # log C_d(kappa) = -log|S^{d-1}| - kappa^2/(2d) + O(kappa^4) as kappa -> 0
    kappa = torch.tensor([0.0, 1e-300, 1e-12, 1e-6, 1e-3], dtype=F64)
    expected = -log_sphere_area(d) - kappa**2 / (2 * d) + kappa**4 / (4 * d * d * (d + 2))
    assert_close(vmf_log_normalizer(d, kappa), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("d", GRID_DIMS)
def test_log_normalizer_derivative_is_minus_mean_resultant(d):
    kappa = torch.tensor([1e-3, 0.7, 2.0 * math.sqrt(d / 2), 3.0 * math.sqrt(d / 2), 50.0, 5e3, 1e6], dtype=F64)
    kappa.requires_grad_(True)
    (grad,) = torch.autograd.grad(vmf_log_normalizer(d, kappa).sum(), kappa)
    mean = VonMisesFisher(e1(d), kappa.detach()).mean_resultant_length
    assert_close(grad, -mean, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("d", [2, 3, 16, 2048])
def test_log_normalizer_both_sides_of_the_series_switch(d):
    # the series of 0F1 is used while kappa^2/4 <= d/2, log_ive beyond: both sides against mpmath
    edge = 2.0 * math.sqrt(d / 2)
    for kappa in (edge * (1 - 1e-9), edge * (1 + 1e-9)):
        got = vmf_log_normalizer(d, torch.tensor(kappa, dtype=F64))
        assert_close(got, torch.tensor(mp_log_normalizer(d, kappa), dtype=F64), rtol=1e-15, atol=1e-15)


# ------------------------------------------------------------------------------------------- statistics vs SciPy


@pytest.mark.parametrize("d", [3, 5, 10])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_log_prob_and_entropy_match_scipy(d, kappa):
    mu = random_directions((), d, seed=d)
    points = random_directions((7,), d, seed=100 + d)
    points = torch.cat([points, mu[None], -mu[None]])
    ours = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64))
    peer = scipy.stats.vonmises_fisher(mu.numpy(), kappa)
    assert_close(ours.log_prob(points), torch.from_numpy(peer.logpdf(points.numpy())), rtol=1e-13, atol=1e-13)
    assert_close(ours.entropy(), torch.tensor(peer.entropy(), dtype=F64), rtol=1e-13, atol=1e-13)


def test_log_prob_d3_closed_form_large_kappa():
    mu = unit(0.0, 0.6, 0.8)
    kappa = torch.tensor([1e4, 1e6], dtype=F64)
    tangent = unit(1.0, 0.0, 0.0)
    theta = 1e-4
    x = math.cos(theta) * mu + math.sin(theta) * tangent
    # log p = log kappa - log 2pi - log(1 - exp(-2 kappa)) - kappa (1 - cos theta)
    expected = torch.log(kappa) - math.log(2 * math.pi) - kappa * (2 * math.sin(theta / 2) ** 2)
    assert_close(VonMisesFisher(mu, kappa).log_prob(x), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("d", [2, 3, 7, 100])
def test_mean_resultant_length_and_variance_match_mpmath(d):
    kappa = torch.tensor([0.01, 1.0, 30.0, 400.0], dtype=F64)
    dist = VonMisesFisher(torch.eye(d, dtype=F64)[-1].expand(4, d), kappa)
    expected = torch.tensor([mp_mean_resultant(d, float(k)) for k in kappa], dtype=F64)
    assert_close(dist.mean_resultant_length, expected, rtol=1e-13, atol=0)
    assert_close(dist.mean[:, -1], expected, rtol=1e-13, atol=0)
    # variance: A/kappa across, 1 - A^2 - (d-1) A / kappa along mu (mpmath)
    along = torch.tensor(
        [1 - a * a - (d - 1) * a / float(k) for a, k in zip(expected.tolist(), kappa.tolist(), strict=True)], dtype=F64
    )
    assert_close(dist.variance[:, -1], along, rtol=1e-9, atol=1e-15)
    if d > 2:
        assert_close(dist.variance[:, 0], expected / kappa, rtol=1e-13, atol=0)


def test_entropy_limits():
    for d in GRID_DIMS:
        # uniform limit: entropy -> log |S^{d-1}|
        small = VonMisesFisher(e1(d), torch.tensor(1e-9, dtype=F64))
        assert_close(small.entropy(), torch.tensor(log_sphere_area(d), dtype=F64), rtol=1e-15, atol=1e-15)
    # d = 3 at kappa = 1e6, where exp(-2 kappa) vanishes: H = 1 - log(kappa / 2 pi). The error model is absolute
    # error ~ eps * kappa: kappa (1 - A) inherits the relative rounding of A = iv_ratio.
    big = VonMisesFisher(unit(1.0, 2.0, 2.0), torch.tensor(1e6, dtype=F64))
    assert_close(big.entropy(), torch.tensor(1.0 - math.log(1e6 / (2 * math.pi)), dtype=F64), rtol=0, atol=4e-10)


# ------------------------------------------------------------------------------------------- never NaN or inf


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("d", GRID_DIMS)
def test_everything_finite_over_the_grid(d, dtype):
    kappa = torch.tensor(GRID_KAPPAS, dtype=dtype, requires_grad=True)
    loc = random_directions((len(GRID_KAPPAS),), d, seed=d, dtype=dtype).requires_grad_(True)
    dist = VonMisesFisher(loc, kappa)
    other = VonMisesFisher(random_directions((len(GRID_KAPPAS),), d, seed=d + 1, dtype=dtype), kappa.detach() * 3)
    uniform = HypersphericalUniform(d, dtype=dtype)
    draws = dist.rsample((3,))
    quantities = {
        "rsample": draws,
        "log_prob(draws)": dist.log_prob(draws),
        "log_prob(mode)": dist.log_prob(dist.mode),
        "log_prob(antipode)": dist.log_prob(-dist.mode),
        "entropy": dist.entropy(),
        "mean": dist.mean,
        "variance": dist.variance,
        "kl(vmf, vmf)": kl_divergence(dist, other),
        "kl(vmf, uniform)": kl_divergence(dist, uniform),
        "kl(uniform, vmf)": kl_divergence(uniform, dist),
    }
    for name, value in quantities.items():
        assert value.dtype == dtype, name
        assert bool(torch.isfinite(value).all()), f"{name} is not finite: {value}"
    total = sum(v.sum() for v in quantities.values())
    grads = torch.autograd.grad(total, [loc, kappa])
    for grad in grads:
        assert bool(torch.isfinite(grad).all())
    assert bool(unit_sphere.check(draws).all())
    kl = kl_divergence(dist, uniform)
    assert bool((kl >= -1e-6 * (1 + dist.entropy().abs())).all())


# ------------------------------------------------------------------------------------------- KL divergences


def test_kl_identical_is_zero():
    for d in GRID_DIMS:
        loc = random_directions((len(GRID_KAPPAS),), d, seed=3)
        p = VonMisesFisher(loc, torch.tensor(GRID_KAPPAS, dtype=F64))
        q = VonMisesFisher(loc.clone(), torch.tensor(GRID_KAPPAS, dtype=F64))
        assert bool((kl_divergence(p, q) == 0).all())


def test_kl_vmf_vmf_matches_monte_carlo():
    torch.manual_seed(1)
    d = 5
    p = VonMisesFisher(random_directions((3,), d, seed=1), torch.tensor([0.5, 4.0, 40.0], dtype=F64))
    q = VonMisesFisher(random_directions((3,), d, seed=2), torch.tensor([2.0, 1.0, 30.0], dtype=F64))
    x = p.sample((200_000,))
    ratio = p.log_prob(x) - q.log_prob(x)
    estimate, standard_error = ratio.mean(0), ratio.std(0) / math.sqrt(x.shape[0])
    exact = kl_divergence(p, q)
    assert bool(((estimate - exact).abs() <= 5 * standard_error).all()), (estimate, exact, standard_error)


def test_kl_vmf_vmf_closed_form_against_mpmath():
    # E_p[log p - log q] = log C(kp) + kp A_p - log C(kq) - kq A_p mu_q.mu_p, every piece from mpmath
    d, kp, kq = 12, 7.0, 3.0
    mu_p, mu_q = unit(*range(1, 13)), unit(*range(12, 0, -1))
    cos = float(mu_p @ mu_q)
    a_p = mp_mean_resultant(d, kp)
    expected = mp_log_normalizer(d, kp) + kp * a_p - mp_log_normalizer(d, kq) - kq * a_p * cos
    got = kl_divergence(VonMisesFisher(mu_p, kp), VonMisesFisher(mu_q, kq))
    assert_close(got, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("d", GRID_DIMS)
def test_kl_to_uniform_is_log_area_minus_entropy(d):
    kappa = torch.tensor(GRID_KAPPAS, dtype=F64)
    p = VonMisesFisher(random_directions((len(GRID_KAPPAS),), d), kappa)
    kl = kl_divergence(p, HypersphericalUniform(d, dtype=F64))
    # absolute error model ~ eps * kappa (kappa up to 1e6 here)
    assert_close(kl, log_sphere_area(d) - p.entropy(), rtol=1e-13, atol=1e-9)
    # near the uniform limit KL ~ kappa^2 / (2 d) with full relative accuracy (no cancellation of log |S|)
    tiny = torch.tensor([1e-8, 1e-5], dtype=F64)
    kl_tiny = kl_divergence(VonMisesFisher(e1(d), tiny), HypersphericalUniform(d, dtype=F64))
    assert_close(kl_tiny, tiny**2 / (2 * d), rtol=1e-4, atol=0)


def test_kl_uniform_to_vmf_matches_monte_carlo():
    torch.manual_seed(2)
    d = 4
    uniform = HypersphericalUniform(d, dtype=F64)
    q = VonMisesFisher(random_directions((2,), d), torch.tensor([0.3, 3.0], dtype=F64))
    x = uniform.sample((200_000,))[:, None]
    ratio = uniform.log_prob(x) - q.log_prob(x)
    estimate, standard_error = ratio.mean(0), ratio.std(0) / math.sqrt(x.shape[0])
    assert bool(((estimate - kl_divergence(uniform, q)).abs() <= 5 * standard_error).all())
    assert float(kl_divergence(uniform, HypersphericalUniform(d, (3,), dtype=F64)).abs().max()) == 0.0


# ------------------------------------------------------------------------------------------- kappa MLE


@pytest.mark.parametrize(("d", "r"), list(KAPPA_MLE))
def test_kappa_mle_matches_mpmath(d, r):
    solution = vmf_kappa_mle(d, torch.tensor(r, dtype=F64))
    assert solution.converged
    assert solution.n_iter <= 8
    assert_close(solution.value, torch.tensor(KAPPA_MLE[d, r], dtype=F64), rtol=1e-9, atol=0)
    # Banerjee's start is within 0.1 % here, as the notes' table says
    assert abs(float(solution.stats["initial"]) / KAPPA_MLE[d, r] - 1) < 1e-3


def test_kappa_mle_batched_and_round_trip():
    d = 64
    kappa = torch.logspace(-4, 7, 45, dtype=F64).reshape(5, 9)
    r = VonMisesFisher(e1(d), kappa).mean_resultant_length
    solution = vmf_kappa_mle(d, r)
    assert solution.value.shape == (5, 9)
    assert solution.converged
    assert solution.stats["iterations"].shape == (5, 9)
    assert_close(solution.value, kappa, rtol=1e-8, atol=0)


def test_kappa_mle_live_mpmath_root():
    # an independent root: mpmath findroot on besseli ratios at 40 digits
    d, r = 7, 0.35
    mpmath.mp.dps = 40
    nu = mpmath.mpf(d) / 2 - 1
    root = mpmath.findroot(lambda k: mpmath.besseli(nu + 1, k) / mpmath.besseli(nu, k) - r, 2.8)
    assert_close(vmf_kappa_mle(d, r).value, torch.tensor(float(root), dtype=F64), rtol=1e-13, atol=0)


def test_kappa_mle_edges():
    d = 10
    r = torch.tensor([0.0, 1e-300, 1e-10, 0.5, 1 - 1e-8, 1 - 1e-14], dtype=F64)
    solution = vmf_kappa_mle(d, r)
    assert solution.converged
    kappa = solution.value
    assert bool(torch.isfinite(kappa).all())
    assert float(kappa[0]) == 0.0
    # small R: A_d(k) ~ k / d
    assert_close(kappa[1:3], d * r[1:3], rtol=1e-9, atol=0)
    # R -> 1: A_d(k) ~ 1 - (d - 1) / (2 k), so k ~ (d - 1) / (2 (1 - R)); the bracket keeps this accurate
    assert_close(kappa[4:], (d - 1) / (2 * (1 - r[4:])), rtol=1e-5, atol=0)
    assert bool((kappa[1:].diff() > 0).all())
    # float32 in, float32 out
    f32 = vmf_kappa_mle(d, torch.tensor([0.2, 0.9], dtype=torch.float32))
    assert f32.value.dtype == torch.float32
    assert f32.converged
    assert_close(f32.value, vmf_kappa_mle(d, torch.tensor([0.2, 0.9], dtype=torch.float32).double()).value)


def test_kappa_mle_iteration_cap_reports_not_converged():
    solution = vmf_kappa_mle(2048, torch.tensor([0.5, 0.9], dtype=F64), max_iter=1, tol=1e-300)
    assert not solution.converged
    assert solution.n_iter == 1
    assert bool(torch.isfinite(solution.value).all())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"dim": 1, "mean_resultant_length": 0.5}, "dim"),
        ({"dim": 3.0, "mean_resultant_length": 0.5}, "dim"),
        ({"dim": 3, "mean_resultant_length": 1.0}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": 1.5}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": -0.1}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": float("nan")}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": torch.tensor([1, 0])}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": "0.5"}, "mean_resultant_length"),
        ({"dim": 3, "mean_resultant_length": 0.5, "tol": -1.0}, "tol"),
        ({"dim": 3, "mean_resultant_length": 0.5, "max_iter": 0}, "max_iter"),
    ],
)
def test_kappa_mle_bad_inputs(kwargs, argument):
    with pytest.raises(SciMLInputError) as info:
        vmf_kappa_mle(**kwargs)
    assert info.value.argument == argument


@pytest.mark.parametrize("d", [2, 3, 64, 2048, 32768])
def test_scalar_ratio_matches_iv_ratio(d):
    # the float path of the small solves against the tensor iv_ratio: dense in kappa, plus the region switches
    v = 0.5 * d - 1.0
    switches = [30.0 * (1 - 1e-12), 30.0, 30.0 * (1 + 1e-12), v * v / 2 * (1 - 1e-12), v * v / 2 * (1 + 1e-12)]
    kappa = torch.cat([torch.logspace(-3, 6, 1501, dtype=F64), torch.tensor(switches, dtype=F64).clamp(1e-3, 1e6)])
    expected = iv_ratio(torch.full_like(kappa, v), kappa)
    got = torch.tensor([_iv_ratio_scalar(v, k) for k in kappa.tolist()], dtype=F64)
    assert_close(got, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("d", [2, 3, 64, 2048, 32768])
def test_kappa_mle_small_solve_matches_batched(d):
    # up to 16 entries are solved in Python floats, larger batches with tensors: same roots, same iteration counts
    r = torch.cat([torch.tensor([0.0, 1e-10, 1 - 1e-8], dtype=F64), torch.linspace(1e-3, 0.999, 61, dtype=F64)])
    batched = vmf_kappa_mle(d, r)
    for chunk in range(0, r.numel(), 16):
        small = vmf_kappa_mle(d, r[chunk : chunk + 16])
        assert small.converged
        assert_close(small.value, batched.value[chunk : chunk + 16], rtol=4e-15, atol=0)
        assert torch.equal(small.stats["iterations"], batched.stats["iterations"][chunk : chunk + 16])
    single = vmf_kappa_mle(d, torch.tensor(0.4, dtype=F64))
    assert single.value.shape == ()
    assert single.stats["iterations"].dtype == torch.int64


def test_kappa_mle_tiny_mean_resultant_length():
    # A_d(k) ~ k / d; the bisection midpoint sqrt(low) sqrt(high) must not underflow (low * high does below 1e-160)
    for d in (64, 2048):
        for r in (torch.tensor([1e-300, 1e-200], dtype=F64), torch.full((20,), 1e-300, dtype=F64)):
            solution = vmf_kappa_mle(d, r)
            assert solution.converged
            assert_close(solution.value, d * r, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------- fit_vmf


def test_fit_weighted_equals_repeated():
    torch.manual_seed(3)
    x = VonMisesFisher(unit(1.0, -1.0, 2.0, 0.5), 6.0).sample((50,))
    counts = torch.randint(1, 4, (50,))
    weighted = fit_vmf(x, counts.to(F64))
    repeated = fit_vmf(x.repeat_interleave(counts, dim=0))
    assert_close(weighted.value[0], repeated.value[0], rtol=1e-13, atol=1e-14)
    assert_close(weighted.value[1], repeated.value[1], rtol=1e-12, atol=0)
    assert weighted.stats["debiased_concentration"] is None


def test_fit_float32_and_batched_weights_match_float64():
    torch.manual_seed(4)
    x = VonMisesFisher(random_directions((3,), 5, seed=4), torch.tensor([2.0, 20.0, 200.0], dtype=F64)).sample((40,))
    x = x.transpose(0, 1)  # (3, 40, 5)
    w = torch.rand(3, 40, dtype=F64)
    fit64 = fit_vmf(x, w)
    fit32 = fit_vmf(x.float(), w.float())
    assert fit32.value[1].dtype == torch.float32
    assert_close(fit32.value[1], fit64.value[1], rtol=1e-5, atol=0, dtype=torch.float32)
    for b in range(3):
        one = fit_vmf(x[b], w[b])
        assert_close(one.value[0], fit64.value[0][b], rtol=1e-14, atol=1e-15)
        assert_close(one.value[1], fit64.value[1][b], rtol=1e-13, atol=0)


def test_fit_batched_and_degenerate():
    x = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.6, 0.8], [0.8, 0.6]]], dtype=F64)
    fit = fit_vmf(x)
    loc, kappa = fit.value
    assert loc.shape == (2, 2)
    assert kappa.shape == (2,)
    # points that cancel: concentration 0, direction e1 by convention
    assert float(kappa[0]) == 0.0
    assert loc[0].tolist() == [1.0, 0.0]
    assert_close(loc[1], unit(1.0, 1.0), rtol=1e-15, atol=1e-15)
    r = float(fit.stats["mean_resultant_length"][1])
    assert_close(kappa[1:], vmf_kappa_mle(2, r).value.reshape(1))


@pytest.mark.parametrize(
    ("x", "weights", "argument"),
    [
        (torch.ones(5, 3, dtype=F64), None, "x"),  # not unit
        (torch.eye(3, dtype=F64)[0].expand(4, 3), None, "x"),  # coinciding points: infinite concentration
        (torch.eye(3, dtype=F64), -torch.ones(3, dtype=F64), "weights"),
        (torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), "weights"),
        (torch.eye(3, dtype=F64), torch.ones(4, dtype=F64), "weights"),
        (torch.eye(3, dtype=F64)[0], None, "x"),  # no sample axis
        (torch.eye(3, dtype=torch.int64), None, "x"),
        (torch.full((2, 3), float("nan"), dtype=F64), None, "x"),
        ([[1.0, 0.0]], None, "x"),
    ],
)
def test_fit_bad_inputs(x, weights, argument):
    with pytest.raises(SciMLInputError) as info:
        fit_vmf(x, weights)
    assert info.value.argument == argument


# ------------------------------------------------------------------------------------------- bad inputs


def test_validation_follows_torch():
    loc = unit(1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(loc, torch.tensor(-1.0, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(loc, torch.tensor(float("nan"), dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="loc"):
        VonMisesFisher(2 * loc, 1.0, validate_args=True)
    dist = VonMisesFisher(loc, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        dist.log_prob(torch.ones(3, dtype=F64))
    # without validation a non-unit loc is treated as its direction
    lax = VonMisesFisher(2 * loc, 1.0, validate_args=False)
    assert_close(lax.log_prob(loc), dist.log_prob(loc))


@pytest.mark.parametrize(
    ("loc", "concentration", "argument"),
    [
        ([0.0, 1.0], 1.0, "loc"),
        (torch.tensor(1.0, dtype=F64), 1.0, "loc"),
        (torch.tensor([1.0], dtype=F64), 1.0, "loc"),
        (torch.tensor([1, 0]), 1.0, "loc"),
        (torch.eye(3, dtype=F64), torch.ones(2, dtype=F64), "concentration"),
        (torch.eye(3, dtype=F64), torch.ones(3, dtype=torch.complex128), "concentration"),
        (torch.eye(3, dtype=F64), "1", "concentration"),
        (torch.eye(3, dtype=F64), torch.ones(3, dtype=F64, device="meta"), "concentration"),
    ],
)
def test_constructor_bad_inputs(loc, concentration, argument):
    with pytest.raises(SciMLInputError) as info:
        VonMisesFisher(loc, concentration)
    assert info.value.argument == argument


def test_method_bad_inputs():
    dist = VonMisesFisher(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64))
    with pytest.raises(SciMLInputError, match=r"\(\.\.\., 3\)"):
        dist.log_prob(torch.ones(4, dtype=F64) / 2)
    with pytest.raises(SciMLInputError, match="meta"):
        dist.log_prob(torch.ones(3, dtype=F64, device="meta"))
    with pytest.raises(SciMLInputError, match="R\\^4"):
        kl_divergence(dist, VonMisesFisher(e1(4), 1.0))
    with pytest.raises(SciMLInputError, match="R\\^4"):
        kl_divergence(dist, HypersphericalUniform(4))
    for bad in (1, 0, 2.5, True):
        with pytest.raises(SciMLInputError) as info:
            HypersphericalUniform(bad)
        assert info.value.argument == "dim"
    with pytest.raises(SciMLInputError, match="dtype"):
        HypersphericalUniform(3, dtype=torch.int32)
    with pytest.raises(SciMLInputError) as info:
        vmf_log_normalizer(3, torch.tensor([1, 2]))
    assert info.value.argument == "concentration"


def test_shapes_and_broadcasting():
    loc = random_directions((4, 1), 6)
    kappa = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    dist = VonMisesFisher(loc, kappa)
    assert dist.batch_shape == (4, 3)
    assert dist.event_shape == (6,)
    assert dist.sample((2,)).shape == (2, 4, 3, 6)
    assert dist.log_prob(loc).shape == (4, 3)
    assert dist.log_prob(loc[None]).shape == (1, 4, 3)
    assert dist.entropy().shape == (4, 3)
    assert dist.mean.shape == (4, 3, 6)
    assert kl_divergence(dist, HypersphericalUniform(6, (4, 3), dtype=F64)).shape == (4, 3)
    expanded = dist.expand((5, 4, 3))
    assert expanded.sample().shape == (5, 4, 3, 6)
    assert VonMisesFisher(loc[0, 0], 2).concentration.dtype == F64
    assert "VonMisesFisher(dim: 6" in repr(dist)
    assert "HypersphericalUniform(dim: 6" in repr(HypersphericalUniform(6))


def test_public_names():
    import sciml_special

    for name in ("VonMisesFisher", "HypersphericalUniform", "vmf_log_normalizer", "vmf_kappa_mle", "fit_vmf"):
        assert name in sciml_special.__all__
        assert getattr(sciml_special, name) is getattr(sciml_special._vmf, name)
