"""Sinkhorn-Newton-Sparse and the Wasserstein helpers, against POT, scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sciml_ot._sns import SNSResult, sinkhorn_newton_sparse, wasserstein
from sciml_protocols import SciMLInputError

DT = torch.float64


def _clouds(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=gen, dtype=DT)
    y = torch.rand(n, 2, generator=gen, dtype=DT)
    return torch.cdist(x, y).square(), torch.full((n,), 1.0 / n, dtype=DT), x


def _pot_sinkhorn(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float, thr: float) -> tuple:
    import ot

    plan, log = ot.sinkhorn(
        a.numpy(), b.numpy(), cost.numpy(), eps, method="sinkhorn_log", stopThr=thr, numItermax=100_000, log=True
    )
    return plan, int(log["niter"])


@pytest.mark.parametrize(("n", "relative_eps"), [(200, 0.01), (300, 0.02)])
def test_matches_pot_plan_and_cost(n: int, relative_eps: float) -> None:
    cost, w, _ = _clouds(n, seed=n)
    eps = relative_eps * float(cost.max())
    result = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-10)
    assert isinstance(result, SNSResult)
    assert result.converged
    assert result.marginal_error <= 1e-10
    plan = result.plan().numpy()
    pot_plan, _ = _pot_sinkhorn(w, w, cost, eps, 1e-13)
    assert np.abs(plan - pot_plan).max() < 1e-12
    assert abs(float(result.cost) - float((pot_plan * cost.numpy()).sum())) < 1e-11
    # marginals of the returned plan, checked independently of the solver's own error measure
    assert np.abs(plan.sum(1) - 1.0 / n).sum() + np.abs(plan.sum(0) - 1.0 / n).sum() <= 1e-10
    stats = result.stats
    assert stats is not None
    assert result.n_iter == stats.warmup_iters + stats.newton_iters + stats.fallback_iters
    assert not stats.fallback_used
    assert result.history.numel() == result.n_iter


def test_iteration_count_far_below_sinkhorn() -> None:
    cost, w, _ = _clouds(200, seed=7)
    eps = 0.005 * float(cost.max())
    result = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-10)
    _, pot_iters = _pot_sinkhorn(w, w, cost, eps, 1e-10)
    assert result.converged
    # POT tests a 2-norm of the column residual (weaker than our l1 of both): its count is a lower bound.
    assert 10 * result.n_iter <= pot_iters, (result.n_iter, pot_iters)


def test_dual_increases_and_objective_matches_primal() -> None:
    cost, w, _ = _clouds(150, seed=3)
    eps = 0.02 * float(cost.max())
    result = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-11)
    plan = result.plan()
    # primal value <P, C> + eps KL(P | a x b), computed from the plan alone
    kl = float((plan * (plan / (w[:, None] * w[None, :])).log()).sum())
    assert abs(float(result.objective) - (float(result.cost) + eps * kl)) < 1e-10


def test_fallback_to_sinkhorn() -> None:
    cost, w, _ = _clouds(100, seed=5)
    eps = 0.02 * float(cost.max())
    result = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-10, max_newton_iter=0)
    assert result.converged
    assert result.stats is not None
    assert result.stats.fallback_used
    assert result.stats.newton_iters == 0
    assert result.stats.fallback_iters > 0
    off = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-10, max_newton_iter=0, fallback_to_sinkhorn=False)
    assert not off.converged
    assert off.n_iter == 20
    pot_plan, _ = _pot_sinkhorn(w, w, cost, eps, 1e-13)
    assert np.abs(result.plan().numpy() - pot_plan).max() < 1e-12


def test_fixed_sparsity_budget_and_threshold() -> None:
    cost, w, _ = _clouds(120, seed=9)
    eps = 0.002 * float(cost.max())
    pot_plan, _ = _pot_sinkhorn(w, w, cost, eps, 1e-13)
    for sparsity in (8, 1e-12):
        result = sinkhorn_newton_sparse(w, w, cost, eps=eps, tol=1e-10, sparsity=sparsity)
        assert result.converged
        assert np.abs(result.plan().numpy() - pot_plan).max() < 1e-10  # entries up to 1/120; eps is small


def test_w2_gaussians_on_grid() -> None:
    grid = torch.linspace(-8.0, 9.0, 160, dtype=DT)
    m1, s1, m2, s2 = 0.0, 1.0, 1.0, 1.5
    da = torch.exp(-0.5 * ((grid - m1) / s1) ** 2)
    db = torch.exp(-0.5 * ((grid - m2) / s2) ** 2)
    eps = 0.05
    value = float(wasserstein(da, db, p=2, grid=grid, eps=eps)) ** 2
    exact = (m1 - m2) ** 2 + (s1 - s2) ** 2
    # entropic plan's cost for Gaussians: cross-covariance c solves 2c^2 + eps c - 2 s1^2 s2^2 = 0
    c = (math.sqrt(eps**2 + 16 * s1**2 * s2**2) - eps) / 4
    entropic = (m1 - m2) ** 2 + s1**2 + s2**2 - 2 * c
    assert abs(value - entropic) < 2e-3  # discretization of the grid (h = 0.107, h^2/12 ~ 1e-3)
    assert exact < value < exact + eps  # entropic bias ~ eps / 2


def test_w1_one_dimensional_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(120, generator=gen, dtype=DT)
    y = torch.randn(150, generator=gen, dtype=DT) * 1.3 + 0.4
    exact = stats.wasserstein_distance(x.numpy(), y.numpy())
    value = float(wasserstein(x, y, p=1, eps=3e-3, warmup_iters=200))
    assert exact <= value + 1e-9
    assert value - exact < 1e-3


@pytest.mark.parametrize("p", [1, 2])
def test_point_clouds_against_emd(p: int) -> None:
    import ot

    gen = torch.Generator().manual_seed(2)
    x = torch.rand(100, 2, generator=gen, dtype=DT)
    y = torch.rand(100, 2, generator=gen, dtype=DT) + 0.2
    w = np.full(100, 0.01)
    exact = ot.emd2(w, w, (torch.cdist(x, y) ** p).numpy())
    value = float(wasserstein(x, y, p=p, eps=2e-3)) ** p
    assert exact - 1e-9 <= value < exact + 2e-2


def test_two_dimensional_grid_matches_emd() -> None:
    import ot

    axis = torch.linspace(0.0, 1.0, 12, dtype=DT)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    da = torch.exp(-((xx - 0.3) ** 2 + (yy - 0.4) ** 2) / 0.02)
    db = torch.exp(-((xx - 0.6) ** 2 + (yy - 0.7) ** 2) / 0.05)
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    cost = torch.cdist(points, points).square()
    exact = ot.emd2((da / da.sum()).reshape(-1).numpy(), (db / db.sum()).reshape(-1).numpy(), cost.numpy())
    value = float(wasserstein(da, db, p=2, grid=(axis, axis), eps=1e-3)) ** 2
    assert exact - 1e-9 <= value < exact + 5e-3


def test_bad_input() -> None:
    cost, w, x = _clouds(10, seed=0)
    with pytest.raises(SciMLInputError, match="eps"):
        sinkhorn_newton_sparse(w, w, cost, eps=-1.0)
    with pytest.raises(SciMLInputError, match="'a'"):
        sinkhorn_newton_sparse(torch.zeros(10, dtype=DT), w, cost, eps=0.1)
    with pytest.raises(SciMLInputError, match="cost"):
        sinkhorn_newton_sparse(w, w, cost[:5], eps=0.1)
    with pytest.raises(SciMLInputError, match="'b'"):
        sinkhorn_newton_sparse(w, w.float(), cost, eps=0.1)
    with pytest.raises(SciMLInputError, match="sparsity"):
        sinkhorn_newton_sparse(w, w, cost, eps=0.1, sparsity=0)
    with pytest.raises(SciMLInputError, match="NaN"):
        sinkhorn_newton_sparse(w, w, torch.full((10, 10), math.nan, dtype=DT), eps=0.1)
    with pytest.raises(SciMLInputError, match="'a'"):
        sinkhorn_newton_sparse(torch.empty(0, dtype=DT), w, cost, eps=0.1)
    with pytest.raises(SciMLInputError, match="'p'"):
        wasserstein(x, x, p=3)
    with pytest.raises(SciMLInputError, match="x_or_a"):
        wasserstein(-torch.ones(4, dtype=DT), torch.ones(4, dtype=DT), grid=torch.arange(4.0, dtype=DT))
    with pytest.raises(SciMLInputError, match="y_or_b"):
        wasserstein(x, torch.rand(5, 3, dtype=DT))
