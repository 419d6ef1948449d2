"""LightSB and the Gaussian entropic-OT closed form, against independent oracles.

Oracles: the Schrödinger-system characterisation of the Gaussian plan (joint precision cross block = -I/eps),
the 1-D closed form, POT's log-domain Sinkhorn on a grid, torch.distributions for the mixture density, numerical
quadrature for the normaliser and the bridge drift, Monte Carlo for moments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sciml_ot._lightsb import LightSB, gaussian_bridge
from sciml_protocols import SciMLInputError

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # The fits are thousands of tiny ops: intra-op threads only add contention on a shared 2-core runner.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    q = torch.randn(d, d, generator=g, dtype=DT)
    return q @ q.T / d + 0.5 * torch.eye(d, dtype=DT)


def random_model(d: int, k: int, eps: float, diagonal: bool, seed: int) -> LightSB:
    torch.manual_seed(seed)
    sb = LightSB(d, k, eps, is_diagonal=diagonal, dtype=DT)
    with torch.no_grad():
        sb.log_alpha.copy_(torch.randn(k, dtype=DT))
        if diagonal:
            sb.log_s.copy_(0.4 * torch.randn(k, d, dtype=DT))
        else:
            sb.log_chol_diag.copy_(0.3 * torch.randn(k, d, dtype=DT))
            sb.chol_lower.copy_(0.4 * torch.randn(k, d, d, dtype=DT))
    return sb


# ---------------------------------------------------------------- gaussian_bridge


def test_gaussian_bridge_one_dimensional_closed_form():
    a, b, eps = 1.3, 4.0, 0.7
    plan = gaussian_bridge(
        torch.tensor([0.2], dtype=DT),
        torch.tensor([[a]], dtype=DT),
        torch.tensor([-1.0], dtype=DT),
        torch.tensor([[b]], dtype=DT),
        eps,
    )
    c = (math.sqrt(eps**2 + 4 * a * b) - eps) / 2
    assert float(plan.cross_covariance) == pytest.approx(c, rel=1e-12)
    assert float(plan.transport_matrix) == pytest.approx(c / a, rel=1e-12)
    assert float(plan.offset) == pytest.approx(-1.0 - 0.2 * c / a, rel=1e-12)
    assert float(plan.conditional_covariance) == pytest.approx(b - c * c / a, rel=1e-12)


@pytest.mark.parametrize("eps", [0.1, 1.0, 5.0])
def test_gaussian_bridge_solves_the_schroedinger_system(eps):
    # The EOT plan is the unique coupling of the marginals of the form exp((f(x) + g(y) - |x-y|^2/2)/eps): for a
    # Gaussian joint this means the cross block of its precision matrix is -I/eps.
    g = torch.Generator().manual_seed(3)
    d = 5
    cov0, cov1 = random_spd(d, g), random_spd(d, g)
    m0, m1 = torch.randn(d, generator=g, dtype=DT), torch.randn(d, generator=g, dtype=DT)
    plan = gaussian_bridge(m0, cov0, m1, cov1, eps)
    joint = plan.joint_covariance
    torch.testing.assert_close(joint[:d, :d], cov0)
    torch.testing.assert_close(joint[d:, d:], cov1)
    assert float(torch.linalg.eigvalsh(joint).min()) > 0
    precision = torch.linalg.inv(joint)
    torch.testing.assert_close(precision[:d, d:], -torch.eye(d, dtype=DT) / eps, atol=1e-9, rtol=1e-9)
    # Conditional moments from the joint (Schur complement / regression), computed independently.
    a_ref = torch.linalg.solve(cov0, plan.cross_covariance).T
    torch.testing.assert_close(plan.transport_matrix, a_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(plan.offset, m1 - a_ref @ m0, atol=1e-10, rtol=1e-10)
    schur = cov1 - plan.cross_covariance.T @ torch.linalg.solve(cov0, plan.cross_covariance)
    torch.testing.assert_close(plan.conditional_covariance, schur, atol=1e-10, rtol=1e-10)


def test_gaussian_bridge_matches_pot_sinkhorn_on_a_grid():
    import ot

    # 2-D Gaussians discretised on a grid; POT's Sinkhorn with cost |x-y|^2/2 and reg = eps (same plan).
    eps = 0.5
    cov0 = torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=DT)
    cov1 = torch.tensor([[0.8, -0.25], [-0.25, 1.2]], dtype=DT)
    m0 = torch.tensor([0.3, -0.2], dtype=DT)
    m1 = torch.tensor([-0.4, 0.5], dtype=DT)
    axis = np.linspace(-4.5, 4.5, 24)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)

    def weights(mean, cov):
        diff = points - mean.numpy()
        w = np.exp(-0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov.numpy()), diff))
        return w / w.sum()

    a, b = weights(m0, cov0), weights(m1, cov1)
    cost = 0.5 * ot.dist(points, points)
    plan = ot.sinkhorn(a, b, cost, eps, numItermax=3000, stopThr=1e-11)
    mx, my = a @ points, b @ points
    cross = (points - mx).T @ plan @ (points - my)
    closed = gaussian_bridge(m0, cov0, m1, cov1, eps)
    np.testing.assert_allclose(cross, closed.cross_covariance.numpy(), atol=2e-3)


# ---------------------------------------------------------------- closed forms of the mixture


@pytest.mark.parametrize("diagonal", [True, False])
def test_log_potential_matches_torch_distributions(diagonal):
    sb = random_model(3, 4, 0.6, diagonal, seed=0)
    y = torch.randn(50, 3, dtype=DT)
    with torch.no_grad():
        covs = 0.6 * sb.covariance_factors()
        mix = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=sb.log_alpha),
            torch.distributions.MultivariateNormal(sb.r, covariance_matrix=covs),
        )
        expected = mix.log_prob(y) + torch.logsumexp(sb.log_alpha, 0)
        torch.testing.assert_close(sb.log_potential(y), expected)
        # pi(y|x) = exp(<x,y>/eps) v(y) / c(x).
        x = torch.randn(50, 3, dtype=DT)
        direct = (x * y).sum(-1) / 0.6 + sb.log_potential(y) - sb.log_normalizer(x)
        torch.testing.assert_close(sb.log_prob_conditional(y, x), direct)


@pytest.mark.parametrize("diagonal", [True, False])
def test_conditional_integrates_to_one_and_normaliser_by_quadrature(diagonal):
    eps = 0.8
    sb = random_model(2, 3, eps, diagonal, seed=1)
    axis = torch.linspace(-12, 12, 401, dtype=DT)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    cell = float(axis[1] - axis[0]) ** 2
    with torch.no_grad():
        for x in torch.tensor([[0.0, 0.0], [0.7, -0.4], [-1.0, 0.5]], dtype=DT):
            mass = sb.log_prob_conditional(grid, x).exp().sum() * cell
            assert float(mass) == pytest.approx(1.0, abs=1e-6)
            integrand = (grid @ x) / eps + sb.log_potential(grid)
            quad = torch.logsumexp(integrand, 0) + math.log(cell)
            assert float(sb.log_normalizer(x)) == pytest.approx(float(quad), abs=1e-6)


@pytest.mark.parametrize("diagonal", [True, False])
def test_conditional_moments_and_sampling_agree_with_monte_carlo(diagonal):
    sb = random_model(3, 4, 0.5, diagonal, seed=2)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.3, 0.8]], dtype=DT)
    g = torch.Generator().manual_seed(0)
    samples = sb.sample(x, 40000, generator=g)
    with torch.no_grad():
        mean, cov = sb.conditional_moments(x)
        logw, means, covs = sb.conditional_mixture(x)
    assert torch.allclose(logw.exp().sum(-1), torch.ones(2, dtype=DT))
    for i in range(2):
        sample_mean = samples[:, i].mean(0)
        sample_cov = torch.cov(samples[:, i].T)
        scale = float(torch.diagonal(cov[i]).max().sqrt())
        assert float((sample_mean - mean[i]).abs().max()) < 0.03 * scale
        assert float((sample_cov - cov[i]).abs().max()) < 0.05 * scale**2
    # the mixture covariance formula from the components, by a second route (law of total covariance)
    w = logw.exp()
    between = torch.einsum("bk,bki,bkj->bij", w, means - mean[:, None], means - mean[:, None])
    within = torch.einsum("bk,kij->bij", w, covs)
    torch.testing.assert_close(cov, between + within)


# ---------------------------------------------------------------- drift and trajectories


@pytest.mark.parametrize("diagonal", [True, False])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.8])
def test_drift_matches_quadrature_of_h(diagonal, t):
    # g(x, t) = eps d/dx log h(x, t), h(x, t) = int N(y | x, eps (1 - t) I) exp(|y|^2 / (2 eps)) v(y) dy.
    eps = 0.7
    sb = random_model(2, 3, eps, diagonal, seed=4)
    axis = torch.linspace(-10, 10, 501, dtype=DT)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_phi = grid.square().sum(-1) / (2 * eps) + sb.log_potential(grid)

        def log_h(x: torch.Tensor) -> torch.Tensor:
            var = eps * (1 - t)
            log_kernel = -(grid - x).square().sum(-1) / (2 * var) if var > 0 else None
            assert log_kernel is not None
            return torch.logsumexp(log_kernel + log_phi, 0)

        step = 1e-4
        for x in torch.tensor([[0.3, -0.2], [-0.8, 0.6]], dtype=DT):
            grad = torch.stack(
                [(log_h(x + step * e) - log_h(x - step * e)) / (2 * step) for e in torch.eye(2, dtype=DT)]
            )
            assert torch.allclose(sb.drift(x, t), eps * grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("diagonal", [True, False])
def test_trajectory_endpoints_match_direct_samples(diagonal):
    eps = 0.5
    sb = random_model(2, 3, eps, diagonal, seed=5)
    x = torch.tensor([0.4, -0.3], dtype=DT)
    x0 = x.expand(6000, 2).contiguous()
    g = torch.Generator().manual_seed(1)
    path = sb.sample_trajectory(x0, 200, generator=g)
    assert path.shape == (201, 6000, 2)
    assert torch.equal(path[0], x0)
    end = path[-1]
    with torch.no_grad():
        mean, cov = sb.conditional_moments(x)
    scale = float(torch.diagonal(cov).max().sqrt())
    assert float((end.mean(0) - mean).abs().max()) < 0.06 * scale
    assert float((torch.cov(end.T) - cov).abs().max()) < 0.1 * scale**2


@pytest.mark.parametrize("diagonal", [True, False])
def test_per_sample_times_match_the_scalar_drift(diagonal):
    # The scalar-time drift is checked against quadrature above; per-sample times must give the same rows.
    sb = random_model(2, 3, 0.6, diagonal, seed=6)
    x = torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    t = torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=DT) * 0.95
    with torch.no_grad():
        batched = sb.drift(x, t)
        for i in range(5):
            for j in range(4):
                assert torch.allclose(batched[i, j], sb.drift(x[i, j], float(t[i, j])), rtol=1e-12, atol=1e-12)
    with pytest.raises(SciMLInputError, match="t"):
        sb.drift(x, t[:, :2])
    with pytest.raises(SciMLInputError, match="t"):
        sb.drift(x, torch.ones(5, 4, dtype=DT))


@pytest.mark.parametrize("diagonal", [True, False])
def test_bridge_marginal_matches_the_simulated_sde(diagonal):
    # X_t of the fitted bridge two ways: Euler-Maruyama up to t, and endpoint sample + Brownian-bridge marginal.
    eps = 0.5
    sb = random_model(2, 3, eps, diagonal, seed=7)
    x0 = torch.tensor([0.2, -0.5], dtype=DT).expand(8000, 2).contiguous()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        path = sb.sample_trajectory(x0, 200, generator=g)
        simulated = path[120]  # t = 0.6
        x1 = sb.sample(x0, generator=g).reshape(8000, 2)
        direct = sb.sample_bridge_marginal(x0, x1, 0.6, generator=g)
    scale = float(torch.cov(direct.T).diagonal().max().sqrt())
    assert float((simulated.mean(0) - direct.mean(0)).abs().max()) < 0.06 * scale
    assert float((torch.cov(simulated.T) - torch.cov(direct.T)).abs().max()) < 0.1 * scale**2
    assert torch.equal(sb.sample_bridge_marginal(x0, x1, 0.0), x0)
    t = torch.rand(8000, generator=g, dtype=DT)
    xt = sb.sample_bridge_marginal(x0, x1, t, generator=g)
    assert xt.shape == x0.shape
    with pytest.raises(SciMLInputError, match="t"):
        sb.sample_bridge_marginal(x0, x1, 1.5)
    with pytest.raises(SciMLInputError, match="x1"):
        sb.sample_bridge_marginal(x0, x1[:10], 0.5)


# ---------------------------------------------------------------- fitting


@pytest.mark.parametrize(("d", "diagonal", "k"), [(2, False, 1), (5, True, 2)])
def test_fit_gaussian_to_gaussian_matches_closed_form(d, diagonal, k):
    g = torch.Generator().manual_seed(7)
    eps = 0.5
    if diagonal:
        cov0 = torch.diag(torch.rand(d, generator=g, dtype=DT) + 0.5)
        cov1 = torch.diag(torch.rand(d, generator=g, dtype=DT) + 0.5)
    else:
        cov0, cov1 = random_spd(d, g), random_spd(d, g)
    m0, m1 = torch.randn(d, generator=g, dtype=DT), torch.randn(d, generator=g, dtype=DT)
    chol0, chol1 = torch.linalg.cholesky(cov0), torch.linalg.cholesky(cov1)

    def sampler0(n: int) -> torch.Tensor:
        return m0 + torch.randn(n, d, generator=g, dtype=DT) @ chol0.T

    def sampler1(n: int) -> torch.Tensor:
        return m1 + torch.randn(n, d, generator=g, dtype=DT) @ chol1.T

    torch.manual_seed(0)
    sb = LightSB(d, k, eps, is_diagonal=diagonal, dtype=DT)
    sol = sb.fit(sampler0, sampler1, steps=500, batch_size=256, lr=2e-2, generator=g)
    assert sol.converged
    assert sol.n_iter == 500
    assert sol.history is not None
    assert float(sol.history[-50:].mean()) < float(sol.history[:50].mean())
    closed = gaussian_bridge(m0, cov0, m1, cov1, eps)
    x = sampler0(2000)
    with torch.no_grad():
        mean, cov = sb.conditional_moments(x)
    design = torch.cat([x, torch.ones(2000, 1, dtype=DT)], 1)
    coef = torch.linalg.lstsq(design, mean).solution
    a_fit, b_fit = coef[:d].T, coef[d]
    rel_a = float((a_fit - closed.transport_matrix).norm() / closed.transport_matrix.norm())
    rel_cov = float((cov.mean(0) - closed.conditional_covariance).norm() / closed.conditional_covariance.norm())
    err_b = float((b_fit - closed.offset).norm())
    assert rel_a < 0.1, rel_a
    assert rel_cov < 0.1, rel_cov
    assert err_b < 0.15, err_b


def test_fit_mixture_to_moons_moves_the_marginal():
    g = torch.Generator().manual_seed(11)
    n = 2000
    angles = torch.rand(8, generator=g, dtype=DT) * 0 + torch.arange(8, dtype=DT) * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], -1)
    source = centres[torch.randint(0, 8, (n,), generator=g)] + 0.2 * torch.randn(n, 2, generator=g, dtype=DT)
    theta = torch.rand(n, generator=g, dtype=DT) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    moons = torch.where(
        upper[:, None],
        torch.stack([theta.cos(), theta.sin()], -1),
        torch.stack([1 - theta.cos(), 0.5 - theta.sin()], -1),
    )
    target = moons + 0.05 * torch.randn(n, 2, generator=g, dtype=DT)
    torch.manual_seed(0)
    sb = LightSB(2, 16, 0.1, dtype=DT)
    sol = sb.fit(source, target, steps=400, batch_size=256, lr=3e-2, generator=g)
    assert sol.history is not None
    assert float(sol.history[-40:].mean()) < float(sol.history[:40].mean()) - 1.0
    moved = sb.sample(source[:1500], generator=g)[0]
    torch.testing.assert_close(moved.mean(0), target.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(moved.T), torch.cov(target.T), atol=0.12, rtol=0)


# ---------------------------------------------------------------- bad input


def test_bad_input_raises():
    with pytest.raises(SciMLInputError, match="epsilon"):
        LightSB(2, 3, 0.0)
    with pytest.raises(SciMLInputError, match="epsilon"):
        LightSB(2, 3, -1.0)
    with pytest.raises(SciMLInputError, match="n_potentials"):
        LightSB(2, 0, 1.0)
    with pytest.raises(SciMLInputError, match="dim"):
        LightSB(0, 2, 1.0)
    sb = LightSB(2, 3, 1.0, dtype=DT)
    with pytest.raises(SciMLInputError, match="x0"):
        sb.loss(torch.zeros(4, 3, dtype=DT), torch.zeros(4, 2, dtype=DT))
    with pytest.raises(SciMLInputError, match="x1"):
        sb.loss(torch.zeros(4, 2, dtype=DT), torch.full((4, 2), float("nan"), dtype=DT))
    with pytest.raises(SciMLInputError, match="dtype"):
        sb.sample(torch.zeros(4, 2, dtype=torch.float32))
    with pytest.raises(SciMLInputError, match="t"):
        sb.drift(torch.zeros(4, 2, dtype=DT), 1.0)
    with pytest.raises(SciMLInputError, match="lr"):
        sb.fit(torch.zeros(4, 2, dtype=DT), torch.zeros(4, 2, dtype=DT), lr=-1.0)
    with pytest.raises(SciMLInputError, match="sampler1"):
        sb.fit(torch.zeros(4, 2, dtype=DT), torch.zeros(4, 5, dtype=DT))
    with pytest.raises(SciMLInputError, match="n_steps"):
        sb.sample_trajectory(torch.zeros(4, 2, dtype=DT), 0)
    eye = torch.eye(2, dtype=DT)
    zero = torch.zeros(2, dtype=DT)
    with pytest.raises(SciMLInputError, match="epsilon"):
        gaussian_bridge(zero, eye, zero, eye, 0.0)
    with pytest.raises(SciMLInputError, match="cov1"):
        gaussian_bridge(zero, eye, zero, -eye, 1.0)
    with pytest.raises(SciMLInputError, match="mean1"):
        gaussian_bridge(zero, eye, torch.zeros(3, dtype=DT), eye, 1.0)


@pytest.mark.parametrize("diagonal", [True, False])
def test_float32_chunked_sampling_and_shapes(diagonal):
    torch.manual_seed(0)
    sb = LightSB(3, 4, 0.1, is_diagonal=diagonal, sampling_batch_size=7)
    x = torch.randn(20, 3)
    sol = sb.fit(x, x + 2.0, steps=30, batch_size=16)
    assert sol.converged
    assert sol.history is not None
    assert sol.history.shape == (30,)
    samples = sb.sample(x, 3)
    assert samples.shape == (3, 20, 3)
    assert samples.dtype == torch.float32
    assert sb(x).shape == (20, 3)
    path = sb.sample_trajectory(x, 50)
    assert path.shape == (51, 20, 3)
    assert bool(torch.isfinite(path).all())
