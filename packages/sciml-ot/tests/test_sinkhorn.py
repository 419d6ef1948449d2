"""Tests of log-domain Sinkhorn, the cost objects and the Sinkhorn divergence against independent oracles (POT)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sciml_ot._costs import MATERIALIZE_LIMIT, DenseCost, PointCloudCost
from sciml_ot._sinkhorn import sinkhorn, sinkhorn_divergence
from sciml_protocols import FixedPointCondition, SciMLInputError, Solution
from sciml_protocols.testing import interpreter_enabled

F64 = torch.float64


def _problem(n: int = 12, m: int = 9, d: int = 2, seed: int = 0, shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(m, d, generator=g, dtype=F64) + shift
    a = torch.rand(n, generator=g, dtype=F64) + 0.1
    b = torch.rand(m, generator=g, dtype=F64) + 0.1
    return a / a.sum(), x, b / b.sum(), y


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


# ------------------------------------------------------------------------------------------------ vs POT
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_plan_cost_potentials_match_pot(eps: float) -> None:
    import ot

    a, x, b, y = _problem()
    C = _sqdist(x, y)
    res = sinkhorn(a, b, C, eps=eps, tol=1e-12, max_iter=20000)
    assert res.converged
    P_pot, log = ot.sinkhorn(
        a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", stopThr=1e-13, numItermax=20000, log=True
    )
    np.testing.assert_allclose(res.plan().numpy(), P_pot, rtol=1e-8, atol=1e-13)
    cost_pot = ot.sinkhorn2(
        a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", stopThr=1e-13, numItermax=20000
    )
    assert float(res.cost) == pytest.approx(float(cost_pot), rel=1e-9)
    # potentials: eps log u = f + eps log a + c, eps log v = g + eps log b - c
    fu = eps * log["log_u"] - (res.f + eps * a.log()).numpy()
    gv = eps * log["log_v"] - (res.g + eps * b.log()).numpy()
    assert np.ptp(fu) < 1e-8
    assert np.ptp(gv) < 1e-8
    assert fu.mean() == pytest.approx(-gv.mean(), abs=1e-8)
    # the objective is the primal value <P, C> + eps KL(P | a x b), evaluated independently from POT's plan
    kl = (P_pot * np.log(P_pot / np.outer(a.numpy(), b.numpy()))).sum()
    assert float(res.objective) == pytest.approx(float((P_pot * C.numpy()).sum() + eps * kl), rel=1e-9)


def test_unbalanced_matches_pot() -> None:
    import ot

    a, x, b, y = _problem(10, 8, seed=3)
    b = 2.0 * b  # different masses
    C = _sqdist(x, y)
    eps, rho = 0.1, 0.7
    res = sinkhorn(a, b, C, eps=eps, reg_marginals=rho, tol=1e-13, max_iter=20000)
    assert res.converged
    P_pot = ot.unbalanced.sinkhorn_unbalanced(
        a.numpy(), b.numpy(), C.numpy(), eps, rho, reg_type="kl", stopThr=1e-15, numItermax=100000
    )
    np.testing.assert_allclose(res.plan().numpy(), P_pot, rtol=1e-7, atol=1e-13)

    # objective = primal value <P,C> + eps KL(P|ab) + rho KL(P1|a) + rho KL(P^T 1|b) (generalized KL)
    def gkl(p: np.ndarray, q: np.ndarray) -> float:
        return float((p * np.log(p / q) - p + q).sum())

    an, bn = a.numpy(), b.numpy()
    primal = (P_pot * C.numpy()).sum() + eps * gkl(P_pot, np.outer(an, bn))
    primal += rho * gkl(P_pot.sum(1), an) + rho * gkl(P_pot.sum(0), bn)
    assert float(res.objective) == pytest.approx(primal, rel=1e-8)


# ------------------------------------------------------------------------------------------------ cost paths
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", ("lp", 1, 1), ("lp", 3, 1.5), "callable"])
def test_dense_and_point_cloud_agree(cost: object) -> None:
    a, x, b, y = _problem(13, 11, d=3, seed=1)
    if cost == "callable":
        cost = lambda u, v: torch.cdist(u, v, p=1.0).sqrt()  # noqa: E731
        ref = torch.cdist(x, y, p=1.0).sqrt()
    elif cost == "sqeuclidean":
        ref = _sqdist(x, y)
    elif cost == "euclidean":
        ref = _sqdist(x, y).sqrt()
    else:
        _, p, q = cost  # type: ignore[misc]
        ref = ((x[:, None] - y[None]).abs() ** p).sum(-1) ** (q / p)
    pc = PointCloudCost(x, y, cost, tile=6)  # several tiles in both directions
    np.testing.assert_allclose(pc.matrix().numpy(), ref.numpy(), rtol=1e-10, atol=1e-10)
    eps = 0.5 * float(ref.mean())
    r1 = sinkhorn(a, b, ref, eps=eps, tol=1e-11)
    r2 = sinkhorn(a, b, pc, eps=eps, tol=1e-11)
    assert r1.converged
    assert r2.converged
    np.testing.assert_allclose(r1.f.numpy(), r2.f.numpy(), atol=1e-9)
    np.testing.assert_allclose(r1.g.numpy(), r2.g.numpy(), atol=1e-9)
    assert float(r1.cost) == pytest.approx(float(r2.cost), rel=1e-10)
    v = torch.randn(11, 2, dtype=F64)
    u = torch.randn(13, dtype=F64)
    np.testing.assert_allclose((r2.plan @ v).numpy(), (r1.plan() @ v).numpy(), atol=1e-12)
    np.testing.assert_allclose((r2.plan.T @ u).numpy(), (r1.plan().T @ u).numpy(), atol=1e-12)
    assert r2.plan.shape == (13, 11)
    assert r2.plan.T.shape == (11, 13)


def test_online_softmin_is_streaming_logsumexp() -> None:
    """The tiled soft-min equals a direct torch.logsumexp (an independent computation) at tiny eps."""
    _, x, _, y = _problem(17, 23, d=2, seed=4)
    g = torch.randn(23, dtype=F64)
    lb = torch.rand(23, dtype=F64).log()
    eps = 1e-3
    ref = -eps * torch.logsumexp((g + eps * lb - _sqdist(x, y)) / eps, dim=1)
    out = PointCloudCost(x, y, tile=5).softmin_rows(g, eps, lb)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ small eps
def test_tiny_eps_does_not_underflow() -> None:
    import ot

    a, x, b, y = _problem(10, 10, seed=5)
    x, y = 0.1 * x, 0.1 * y + 1.0  # well separated clouds: every cost is far above 708 * eps
    C = _sqdist(x, y)
    scale = float(C.max())
    eps = 1e-4 * scale
    assert bool((torch.exp(-C / eps) == 0).all())  # the naive kernel is all zeros
    res = sinkhorn(a, b, C, eps=eps, eps_scaling=0.7, tol=1e-9, max_iter=20000)
    assert res.converged
    assert torch.isfinite(res.f).all()
    assert torch.isfinite(res.g).all()
    P = res.plan()
    np.testing.assert_allclose(P.sum(1).numpy(), a.numpy(), atol=1e-9)
    np.testing.assert_allclose(P.sum(0).numpy(), b.numpy(), atol=1e-9)
    exact = float(ot.emd2(a.numpy(), b.numpy(), C.numpy()))
    assert float(res.cost) == pytest.approx(exact, rel=1e-3)


def test_float32_converges() -> None:
    a, x, b, y = _problem()
    C = _sqdist(x, y)
    r64 = sinkhorn(a, b, C, eps=0.1)
    r32 = sinkhorn(a.float(), b.float(), C.float(), eps=0.1, tol=1e-5)
    assert r32.converged
    assert r32.f.dtype == torch.float32
    assert float(r32.cost) == pytest.approx(float(r64.cost), rel=1e-4)


# ------------------------------------------------------------------------------------------------ batches
def test_batches_equal_loops() -> None:
    probs = [_problem(8, 6, seed=s) for s in range(3)]
    a = torch.stack([p[0] for p in probs])
    b = torch.stack([p[2] for p in probs])
    C = torch.stack([_sqdist(p[1], p[3]) for p in probs])
    x = torch.stack([p[1] for p in probs])
    y = torch.stack([p[3] for p in probs])
    rd = sinkhorn(a, b, C, eps=0.2, tol=1e-11)
    rp = sinkhorn(a, b, PointCloudCost(x, y, tile=5), eps=0.2, tol=1e-11)
    assert rd.f.shape == (3, 8)
    assert rd.cost.shape == (3,)
    assert isinstance(rd.marginal_error, torch.Tensor)
    for k in range(3):
        single = sinkhorn(a[k], b[k], C[k], eps=0.2, tol=1e-11)
        np.testing.assert_allclose(rd.f[k].numpy(), single.f.numpy(), atol=1e-9)
        np.testing.assert_allclose(rp.g[k].numpy(), single.g.numpy(), atol=1e-9)
        assert float(rd.objective[k]) == pytest.approx(float(single.objective), rel=1e-10)
        np.testing.assert_allclose(rd.plan()[k].numpy(), single.plan().numpy(), atol=1e-12)
    # shared cost, batched weights
    rs = sinkhorn(a, b[0].expand(3, -1), C[0], eps=0.2, tol=1e-11)
    single = sinkhorn(a[1], b[0], C[0], eps=0.2, tol=1e-11)
    assert float(rs.cost[1]) == pytest.approx(float(single.cost), rel=1e-10)


# ------------------------------------------------------------------------------------------------ divergence
def test_sinkhorn_divergence() -> None:
    a, x, b, y = _problem(9, 7, seed=6)
    eps = 0.5
    assert abs(float(sinkhorn_divergence(a, x, a, x, eps=eps))) < 1e-12
    s = sinkhorn_divergence(a, x, b, y, eps=eps, tol=1e-11)
    assert float(s) > 1e-3
    ab = sinkhorn(a, b, _sqdist(x, y), eps=eps, tol=1e-11).objective
    aa = sinkhorn(a, a, _sqdist(x, x), eps=eps, tol=1e-11).objective
    bb = sinkhorn(b, b, _sqdist(y, y), eps=eps, tol=1e-11).objective
    assert float(s) == pytest.approx(float(ab - 0.5 * aa - 0.5 * bb), rel=1e-9)


def test_divergence_matches_geomloss() -> None:
    geomloss = pytest.importorskip("geomloss")
    _, x, _, y = _problem(30, 25, seed=7)
    x, y = x.float(), y.float()
    blur = 0.5
    # GeomLoss uses the half squared distance and eps = blur**p; scaling close to 1 for a converged value
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.99, backend="tensorized")
    ref = float(loss(x, y))
    ours = float(
        sinkhorn_divergence(None, x, None, y, eps=blur**2, cost=lambda u, v: 0.5 * torch.cdist(u, v) ** 2, tol=1e-6)
    )
    assert ours == pytest.approx(ref, rel=2e-3)


# ------------------------------------------------------------------------------------------------ gradients
def test_gradcheck_x_and_weights() -> None:
    _a, x, b, y = _problem(5, 4, seed=8)
    theta = torch.randn(5, dtype=F64, requires_grad=True)
    xr = x.clone().requires_grad_(True)

    def value(th: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(th, 0)
        return sinkhorn(w, b, _sqdist(xx, y), eps=0.5, tol=1e-14, max_iter=5000).objective

    assert torch.autograd.gradcheck(value, (theta, xr), eps=1e-6, atol=1e-7, fast_mode=True)


def test_gradient_wrt_cost_is_plan_and_finite_differences() -> None:
    a, x, b, y = _problem(6, 5, seed=9)
    C = _sqdist(x, y).requires_grad_(True)
    res = sinkhorn(a, b, C, eps=0.2, tol=1e-13)
    (grad,) = torch.autograd.grad(res.objective, C)
    np.testing.assert_allclose(grad.numpy(), res.plan().detach().numpy(), atol=1e-11)
    # central finite differences of OT_eps on a random direction
    d = torch.randn_like(C)
    h = 1e-5
    with torch.no_grad():
        fp = sinkhorn(a, b, C + h * d, eps=0.2, tol=1e-14).objective
        fm = sinkhorn(a, b, C - h * d, eps=0.2, tol=1e-14).objective
    assert float((grad * d).sum()) == pytest.approx(float((fp - fm) / (2 * h)), rel=1e-6)


def test_gradient_wrt_points_matches_pot_autodiff() -> None:
    import ot

    a, x, b, y = _problem(7, 6, seed=10)
    xr = x.clone().requires_grad_(True)
    sinkhorn(a, b, PointCloudCost(xr, y), eps=0.3, tol=1e-13).objective.backward()
    # oracle: POT's objective differentiated by autograd through its iterations (torch backend)
    x2 = x.clone().requires_grad_(True)
    M = ot.dist(x2, y)
    P = ot.sinkhorn(a, b, M, 0.3, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
    obj = (P * M).sum() + 0.3 * (P * torch.log(P / torch.outer(a, b))).sum()
    obj.backward()
    assert xr.grad is not None
    assert x2.grad is not None
    np.testing.assert_allclose(xr.grad.numpy(), x2.grad.numpy(), atol=1e-8)


# ------------------------------------------------------------------------------------------------ API
def test_result_views_and_optimality_condition() -> None:
    a, x, b, y = _problem(6, 5, seed=11)
    res = sinkhorn(a, b, PointCloudCost(x, y), eps=0.3, tol=1e-12)
    sol = res.solution
    assert isinstance(sol, Solution)
    assert sol.converged
    assert sol.n_iter == res.n_iter
    assert res.history.ndim == 1
    assert res.history.numel() >= 1
    cond = res.optimality_condition()
    assert isinstance(cond, FixedPointCondition)
    z, theta = res.condition_arguments()
    assert cond.is_satisfied(z, *theta, tol=1e-9)
    assert not cond.is_satisfied(z + torch.randn_like(z), *theta, tol=1e-3)
    # warm start from the solution converges at the first check
    again = sinkhorn(a, b, PointCloudCost(x, y), eps=0.3, tol=1e-10, init=(res.f, res.g), check_every=1)
    assert again.converged
    assert again.n_iter <= 1
    # unconverged run reports it
    short = sinkhorn(a, b, PointCloudCost(x, y), eps=0.01, tol=1e-14, max_iter=3)
    assert not short.converged
    assert short.n_iter == 3


def test_zero_weights_are_allowed() -> None:
    import ot

    a, x, b, y = _problem(6, 5, seed=12)
    a = a.clone()
    a[2] = 0.0
    a = a / a.sum()
    C = _sqdist(x, y)
    res = sinkhorn(a, b, C, eps=0.2, tol=1e-12)
    keep = [0, 1, 3, 4, 5]  # oracle: POT on the problem without the empty row
    P = ot.sinkhorn(
        a[keep].numpy(), b.numpy(), C[keep].numpy(), 0.2, method="sinkhorn_log", stopThr=1e-14, numItermax=10**5
    )
    plan = res.plan().numpy()
    np.testing.assert_allclose(plan[keep], P, atol=1e-12)
    assert np.all(plan[2] == 0)


def test_bad_inputs() -> None:
    a, x, b, y = _problem(4, 3)
    C = _sqdist(x, y)
    with pytest.raises(SciMLInputError, match="'a'"):
        sinkhorn(torch.tensor([-0.1, 0.5, 0.3, 0.3], dtype=F64), b, C, eps=0.1)
    with pytest.raises(SciMLInputError, match="'b'"):
        sinkhorn(a, 2 * b, C, eps=0.1)
    with pytest.raises(SciMLInputError, match="'b'"):
        sinkhorn(a, torch.ones(5, dtype=F64) / 5, C, eps=0.1)
    with pytest.raises(SciMLInputError, match="'eps'"):
        sinkhorn(a, b, C, eps=0.0)
    with pytest.raises(SciMLInputError, match="'eps'"):
        sinkhorn(a, b, C, eps=-1.0)
    C_bad = C.clone()
    C_bad[0, 0] = math.inf
    with pytest.raises(SciMLInputError, match="'C'"):
        sinkhorn(a, b, C_bad, eps=0.1)
    with pytest.raises(SciMLInputError, match="'a'"):
        sinkhorn(a.float(), b, C, eps=0.1)
    with pytest.raises(SciMLInputError, match="'y'"):
        PointCloudCost(x, torch.randn(3, 5, dtype=F64))
    with pytest.raises(SciMLInputError, match="'cost'"):
        PointCloudCost(x, y, "cosine")
    with pytest.raises(SciMLInputError, match="'reg_marginals'"):
        sinkhorn(a, b, C, eps=0.1, reg_marginals=-1.0)
    with pytest.raises(SciMLInputError, match="'eps_scaling'"):
        sinkhorn(a, b, C, eps=0.1, eps_scaling=1.5)
    with pytest.raises(SciMLInputError, match="'cost'"):
        sinkhorn(a, b, "sqeuclidean", eps=0.1)  # type: ignore[arg-type]
    big = PointCloudCost(torch.zeros(MATERIALIZE_LIMIT // 4 + 1, 1), torch.zeros(8, 1), tile=64)
    with pytest.raises(SciMLInputError, match="limit"):
        big.matrix()
    assert DenseCost(C).shape == (4, 3)


@pytest.mark.interpret
@pytest.mark.skipif(not interpreter_enabled(), reason="needs TRITON_INTERPRET=1 in the shell that starts pytest")
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_triton_backend_parity_interpreted(cost: str) -> None:
    pytest.importorskip("triton")
    a, x, b, y = _problem(10, 7, seed=13)
    ref = sinkhorn(a, b, PointCloudCost(x, y, cost, backend="torch"), eps=0.5, tol=1e-10)
    tri = sinkhorn(a, b, PointCloudCost(x, y, cost, backend="triton"), eps=0.5, tol=1e-10)
    np.testing.assert_allclose(tri.f.numpy(), ref.f.numpy(), atol=1e-9)
    assert float(tri.objective) == pytest.approx(float(ref.objective), rel=1e-10)


@pytest.mark.gpu
def test_cuda_point_cloud_matches_cpu() -> None:
    a, x, b, y = _problem(300, 200, d=3, seed=14)
    ref = sinkhorn(a, b, PointCloudCost(x, y), eps=0.1, tol=1e-9)
    dev = "cuda"
    res = sinkhorn(a.to(dev), b.to(dev), PointCloudCost(x.to(dev), y.to(dev), tile=128), eps=0.1, tol=1e-9)
    assert res.converged
    np.testing.assert_allclose(res.f.cpu().numpy(), ref.f.numpy(), atol=1e-7)
    assert float(res.cost) == pytest.approx(float(ref.cost), rel=1e-9)
