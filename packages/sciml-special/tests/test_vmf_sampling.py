"""von Mises-Fisher sampling: Wood's sampler, reparameterisation gradients, conformance, and fits in high dimension.

Oracles: the exact distribution of the polar angle (numerical CDF of e^{kappa cos t} sin^{d-2} t) for
Kolmogorov-Smirnov tests, the closed-form CDF for d = 3, mpmath quadrature for the implicit gradient, closed-form
derivatives of moments (d/dkappa A_d, d/dkappa E[w^2]), SciPy's samples, and Monte-Carlo error bars throughout.
"""

import math
import time
import warnings

import mpmath
import numpy as np
import pytest
import scipy.stats
import torch
from sciml_protocols import SciMLError
from sciml_protocols.testing import DistributionConformance, assert_close
from sciml_special import _vmf
from sciml_special._vmf import HypersphericalUniform, VonMisesFisher, fit_vmf, vmf_kappa_mle

F64 = torch.float64


def e1(d, dtype=F64):
    out = torch.zeros(d, dtype=dtype)
    out[0] = 1.0
    return out


def directions(batch, d, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*batch, d, generator=g, dtype=F64), dim=-1).to(dtype)


def mean_resultant(d, kappa):
    return float(VonMisesFisher(e1(d), torch.tensor(kappa, dtype=F64)).mean_resultant_length)


def log_sphere_area(d):
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def polar_angle_cdf(d, kappa):
    """CDF of theta = arccos(mu.x), from the density e^{kappa cos t} sin^{d-2} t on a fine grid (float64)."""
    grid = np.linspace(0.0, np.pi, 400_001)
    with np.errstate(divide="ignore"):
        log_density = kappa * np.cos(grid) + (d - 2) * np.log(np.sin(grid)) if d > 2 else kappa * np.cos(grid)
    density = np.exp(log_density - log_density.max())
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cumulative /= cumulative[-1]
    return lambda theta: np.interp(theta, grid, cumulative)


# ------------------------------------------------------------------------------------------ conformance


class TestVonMisesFisherConformance(DistributionConformance):
    num_samples = 60_000

    def make_distribution(self, dtype):
        # mu_1 of both signs exercises both branches of the Householder reflection
        loc = torch.tensor([[0.6, 0.0, 0.8, 0.0], [-0.5, 0.5, 0.5, 0.5], [0.0, -0.6, 0.0, 0.8]], dtype=F64)
        return VonMisesFisher(loc.to(dtype), torch.tensor([0.5, 4.0, 30.0], dtype=dtype))

    def check_normalization(self, dtype=torch.float64):
        # integral over S^{d-1} of exp(log_prob): by symmetry about mu, |S^{d-2}| int_0^pi p(x(t)) sin^{d-2} t dt
        # along a meridian x(t) = cos t mu + sin t v (v a unit vector orthogonal to mu); log_prob is the black box.
        distribution = self._make(dtype)
        d = distribution.event_shape[-1]
        mu = distribution.mode.to(F64)
        v = directions(distribution.batch_shape, d, seed=5)
        v = torch.nn.functional.normalize(v - (v * mu).sum(-1, keepdim=True) * mu, dim=-1)
        nodes, weights = np.polynomial.legendre.leggauss(400)
        theta = torch.from_numpy(0.5 * math.pi * (nodes + 1.0))[:, None, None]
        points = torch.cos(theta) * mu + torch.sin(theta) * v
        density = distribution.log_prob(points.to(dtype)).to(F64).exp()
        log_area = math.log(2.0) + 0.5 * (d - 1) * math.log(math.pi) - math.lgamma(0.5 * (d - 1))
        integrand = density * torch.sin(theta[..., 0]) ** (d - 2) * math.exp(log_area)
        mass = (0.5 * math.pi * torch.from_numpy(weights)[:, None] * integrand).sum(0)
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        assert_close(mass, torch.ones_like(mass), rtol=0, atol=tolerance, msg=f"normalisation ({dtype})")


class TestHypersphericalUniformConformance(DistributionConformance):
    num_samples = 60_000

    def make_distribution(self, dtype):
        return HypersphericalUniform(5, (3,), dtype=dtype)

    def test_rsample_gradients(self):
        pytest.skip("HypersphericalUniform has no parameters to differentiate")

    def check_normalization(self, dtype=torch.float64):
        distribution = self._make(dtype)
        mass = distribution.log_prob(e1(5, dtype)).exp() * math.exp(log_sphere_area(5))
        assert_close(mass, torch.ones(3, dtype=dtype))


def test_normalization_by_importance_sampling_from_the_uniform():
    # E_U[p(x)] |S^{d-1}| = 1, with x uniform on the sphere: no symmetry argument involved
    torch.manual_seed(0)
    d = 3
    x = HypersphericalUniform(d, dtype=F64).sample((400_000,))[:, None]
    p = VonMisesFisher(directions((3,), d), torch.tensor([0.2, 2.0, 8.0], dtype=F64))
    ratio = p.log_prob(x).exp() * math.exp(log_sphere_area(d))
    estimate, standard_error = ratio.mean(0), ratio.std(0) / math.sqrt(x.shape[0])
    assert bool(((estimate - 1.0).abs() <= 5 * standard_error).all()), (estimate, standard_error)


# ------------------------------------------------------------------------------------------ Wood's sampler


@pytest.mark.parametrize("d", [2, 3, 5, 2048, 32768])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 30.0, 1e4, 1e6])
def test_polar_angle_matches_its_distribution(d, kappa):
    # Kolmogorov-Smirnov on theta = arccos(w) = 2 asin(sqrt((1 - w)/2)) from the sampler's own 1 - w (no rounding
    # of w near 1), against the exact angle distribution.
    torch.manual_seed(int(d + 7 * math.log10(kappa) + 100))
    t, _ = _vmf._wood_one_minus_w(torch.full((20_000,), kappa, dtype=F64), d)
    theta = (2.0 * torch.asin(torch.sqrt(0.5 * t))).numpy()
    result = scipy.stats.kstest(theta, polar_angle_cdf(d, kappa))
    assert result.pvalue > 1e-3, (d, kappa, result)


@pytest.mark.parametrize("kappa", [1e-3, 2.0, 50.0, 1e6])
def test_public_samples_d3_closed_form_cdf(kappa):
    # d = 3: P(1 - w <= s) = (1 - exp(-kappa s)) / (1 - exp(-2 kappa)); also the direction: the mean of x
    torch.manual_seed(11)
    mu = torch.tensor([0.48, -0.6, 0.64], dtype=F64)
    x = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64)).sample((20_000,))
    one_minus_w = 0.5 * ((x - mu) ** 2).sum(-1)
    cdf = lambda s: -np.expm1(-kappa * s) / -np.expm1(-2.0 * kappa)  # noqa: E731
    assert scipy.stats.kstest(one_minus_w.numpy(), cdf).pvalue > 1e-3
    # the tangent part is uniform: its mean is 0 within Monte-Carlo error
    tangent = x - (x @ mu)[:, None] * mu
    standard_error = tangent.std(0) / math.sqrt(x.shape[0])
    assert bool((tangent.mean(0).abs() <= 5 * standard_error + 1e-12).all())


def test_sample_mean_in_high_dimension():
    torch.manual_seed(4)
    d, kappa = 2048, 1500.0
    loc = directions((), d, seed=9)
    x = VonMisesFisher(loc, torch.tensor(kappa, dtype=F64)).sample((2000,))
    w = x @ loc
    a = mean_resultant(d, kappa)
    assert abs(float(w.mean()) - a) <= 5 * float(w.std()) / math.sqrt(2000)
    # the mean vector: A mu along mu, zero across (the across part has norm^2 ~ (1 - E w^2) / n)
    residual = x.mean(0) - a * loc
    across = residual - (residual @ loc) * loc
    expected = (1 - float((w**2).mean())) / 2000
    assert 0.8 * expected < float(across @ across) < 1.2 * expected


@pytest.mark.parametrize("first", [1.0, -1.0, 1 - 1e-16, -(1 - 1e-16), 0.0])
def test_householder_near_the_poles(first):
    d = 4
    loc = torch.tensor([first, math.sqrt(max(0.0, 1 - first * first)), 0.0, 0.0], dtype=F64)
    loc = loc / loc.norm()
    torch.manual_seed(5)
    x = VonMisesFisher(loc, torch.tensor(200.0, dtype=F64)).sample((5000,))
    assert bool(torch.isfinite(x).all())
    assert_close(x.norm(dim=-1), torch.ones(5000, dtype=F64), rtol=0, atol=1e-14)
    assert abs(float((x @ loc).mean()) - mean_resultant(d, 200.0)) < 1e-3


def test_rejection_loop_is_capped():
    dist = VonMisesFisher(e1(3), torch.tensor(float("nan"), dtype=F64), validate_args=False)
    with pytest.raises(SciMLError, match="rejected after 100 rounds"):
        dist.sample((10,))


def test_sampler_acceptance_is_high():
    # Wood's envelope accepts more than half the proposals in every regime, so the cap of 100 rounds is never met
    torch.manual_seed(12)
    for d in (2, 3, 50, 32768):
        for kappa in (1e-3, 1.0, float(d), 1e6):
            _, proposals = _vmf._wood_one_minus_w(torch.full((4000,), kappa, dtype=F64), d)
            assert 4000 / proposals > 0.5, (d, kappa, 4000 / proposals)


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("kappa", [0.3, 3.0, 40.0, 2000.0])
def test_implicit_gradient_d3_closed_form(kappa):
    # d = 3: F(w) = (e^{kappa(w+1)} - 1)/(e^{2 kappa} - 1), so with s = 1 - w the implicit derivative is
    # dw/dkappa = -dF/dkappa / p(w) = [2(1 - e^{-kappa(2 - s)})/(1 - e^{-2 kappa}) - (2 - s)] / kappa
    torch.manual_seed(6)
    n = 4000
    mu = torch.tensor([0.0, 0.6, 0.8], dtype=F64)
    concentration = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    x = VonMisesFisher(mu.expand(n, 3), concentration).rsample()
    w = x @ mu
    (grad,) = torch.autograd.grad(w.sum(), concentration)
    s = (0.5 * ((x - mu) ** 2).sum(-1)).detach()
    expected = (2 * -torch.expm1(-kappa * (2 - s)) / -math.expm1(-2 * kappa) - (2 - s)) / kappa
    assert_close(grad, expected, rtol=1e-8, atol=1e-14)


def _mp_angle_gradient(d, kappa, theta):
    """-int_0^theta (cos t - A) e^{psi(t) - psi(theta)} dt, psi = kappa cos t + (d - 2) log sin t (mpmath).

    Evaluated as -int_theta^pi (A - cos t) e^{...} dt when cos theta < A: the same number, without cancellation.
    """
    mpmath.mp.dps = 25
    d, kappa, theta = mpmath.mpf(d), mpmath.mpf(kappa), mpmath.mpf(theta)

    def psi(t):
        return kappa * mpmath.cos(t) + ((d - 2) * mpmath.log(mpmath.sin(t)) if d > 2 else 0)

    mode = mpmath.acos((-(d - 2) + mpmath.sqrt((d - 2) ** 2 + 4 * kappa**2)) / (2 * kappa))
    width = 1 / mpmath.sqrt(kappa * mpmath.cos(mode) + ((d - 2) / mpmath.sin(mode) ** 2 if d > 2 else 0) + 1)
    cuts = sorted(
        {mpmath.mpf(0), mpmath.pi} | {min(max(mode + j * width, 0), mpmath.pi) for j in (-30, -8, -2, 0, 2, 8, 30)}
    )
    top = psi(mode)
    mass = mpmath.quad(lambda t: mpmath.exp(psi(t) - top), cuts)
    mean = mpmath.quad(lambda t: mpmath.cos(t) * mpmath.exp(psi(t) - top), cuts) / mass
    at = psi(theta)
    if mpmath.cos(theta) >= mean:
        below = [c for c in cuts if c < theta] + [theta]
        return float(-mpmath.quad(lambda t: (mpmath.cos(t) - mean) * mpmath.exp(psi(t) - at), below))
    above = [theta] + [c for c in cuts if c > theta]
    return float(-mpmath.quad(lambda t: (mean - mpmath.cos(t)) * mpmath.exp(psi(t) - at), above))


@pytest.mark.parametrize(("d", "kappa"), [(2, 1e6), (5, 0.01), (16, 10.0), (2048, 1e3), (32768, 1e6)])
def test_implicit_gradient_quadrature_matches_mpmath(d, kappa):
    torch.manual_seed(7)
    kappa_t = torch.full((3,), kappa, dtype=F64)
    theta = 2 * torch.asin(torch.sqrt(0.5 * _vmf._wood_one_minus_w(kappa_t, d)[0]))
    mean = _vmf._mean_resultant_length(d, kappa_t)
    got = _vmf._angle_gradient(theta, kappa_t, d, mean)
    expected = torch.tensor([_mp_angle_gradient(d, kappa, float(t)) for t in theta], dtype=F64)
    assert_close(got, expected, rtol=1e-7, atol=0)


@pytest.mark.parametrize(("d", "kappa"), [(2, 2.0), (16, 12.0), (2048, 1500.0)])
def test_pathwise_gradients_of_moments(d, kappa):
    # E[dw/dkappa] = A'(kappa) and E[d(w^2)/dkappa] = d/dkappa (1 - (d - 1) A / kappa), the right sides by autograd
    # through iv_ratio; draws via the public rsample, only w is kept (loc = e1)
    torch.manual_seed(8)
    n = 20_000 if d < 1000 else 3000
    concentration = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    loc = e1(d).expand(n, d)
    w = VonMisesFisher(loc, concentration).rsample()[:, 0]
    grad_w, grad_w2 = (torch.autograd.grad(f.sum(), concentration, retain_graph=True)[0] for f in (w, w * w))
    k = torch.tensor(kappa, dtype=F64, requires_grad=True)
    a = VonMisesFisher(e1(d), k).mean_resultant_length
    (da,) = torch.autograd.grad(a, k, create_graph=True)
    (dw2,) = torch.autograd.grad(1 - (d - 1) * a / k, k)
    for estimate, exact in ((grad_w, da), (grad_w2, dw2)):
        standard_error = float(estimate.std()) / math.sqrt(n)
        exact = float(exact.detach())
        assert abs(float(estimate.mean()) - exact) <= 5 * standard_error, (float(estimate.mean()), exact)


def test_loc_gradient_is_tangent():
    torch.manual_seed(9)
    loc = directions((), 6, seed=2).requires_grad_(True)
    x = VonMisesFisher(loc, torch.tensor(5.0, dtype=F64)).rsample((100,))
    (grad,) = torch.autograd.grad((x * torch.randn(100, 6, dtype=F64)).sum(), loc)
    assert abs(float(grad @ loc.detach())) < 1e-12 * float(grad.norm())


# ------------------------------------------------------------------------------------------ fitting in high dimension


@pytest.mark.parametrize(
    ("d", "kappa", "n", "dtype"),
    [
        (2048, 1365.0667417076889, 2000, F64),
        (8192, 2700.6049081862464, 2000, torch.float32),
        (32768, 10802.582923790231, 1000, torch.float32),
    ],
)
def test_fit_recovers_concentration_in_high_dimension(d, kappa, n, dtype):
    # Samples from our rsample; kappa at the notes' reference points (A = 0.5, 0.3, 0.3). The MLE is biased up in
    # high dimension (E R^2 = A^2 + (1 - A^2)/n), so: the debiased estimate must match kappa, and the plain MLE the
    # biased centre, each within 5 Monte-Carlo standard errors, 1 / sqrt(n A'(kappa)) (delta method).
    torch.manual_seed(d)
    loc = directions((), d, seed=d).to(dtype)
    start = time.perf_counter()
    x = torch.cat([VonMisesFisher(loc, torch.tensor(kappa, dtype=dtype)).sample((n // 4,)) for _ in range(4)])
    fit = fit_vmf(x)
    elapsed = time.perf_counter() - start
    loc_hat, kappa_hat = fit.value
    assert fit.converged
    a = mean_resultant(d, kappa)
    slope = 1 - a * a - (d - 1) * a / kappa  # A'(kappa), accurate at these moderate kappa / d
    standard_error = 1 / math.sqrt(n * slope)
    biased_centre = float(vmf_kappa_mle(d, math.sqrt(a * a + (1 - a * a) / n)).value)
    debiased = float(fit.stats["debiased_concentration"])
    print(
        f"d={d} n={n} kappa={kappa:.4f} mle={float(kappa_hat):.4f} (centre {biased_centre:.4f}) "
        f"debiased={debiased:.4f} se={standard_error:.3f} time={elapsed:.2f}s"
    )
    assert abs(debiased - kappa) <= 5 * standard_error
    assert abs(float(kappa_hat) - biased_centre) <= 5 * standard_error
    # direction: the squared angle to mu is about (1 - A^2) / (n A^2)
    sin2 = 1 - float(loc_hat.double() @ loc.double()) ** 2
    expected = (1 - a * a) / (n * a * a)
    assert 0.7 * expected < sin2 < 1.3 * expected


def test_scipy_fit_fails_in_dimension_80_and_above_where_ours_works():
    # Peer failure (research notes A2): scipy.stats.vonmises_fisher.fit runs brentq on ive(d/2, k)/ive(d/2 - 1, k)
    # over (1e-8, 1e9); ive underflows at k = 1e-8 and the bracket evaluates to NaN, so it returns kappa = 1e-8 for
    # d >= 80. If this assertion starts failing, SciPy fixed it: update the docs that cite the failure.
    d, kappa, n = 96, 20.0, 5000
    mu = np.zeros(d)
    mu[0] = 1.0
    samples = scipy.stats.vonmises_fisher(mu, kappa).rvs(n, random_state=np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peer warns about its invalid bracket values; not our concern
        _, kappa_scipy = scipy.stats.vonmises_fisher.fit(samples)
    assert kappa_scipy <= 1e-6
    fit = fit_vmf(torch.from_numpy(samples))
    a = mean_resultant(d, kappa)
    standard_error = 1 / math.sqrt(n * (1 - a * a - (d - 1) * a / kappa))
    assert abs(float(fit.stats["debiased_concentration"]) - kappa) <= 5 * standard_error
    assert abs(float(fit.value[1]) - kappa) <= 0.05 * kappa
