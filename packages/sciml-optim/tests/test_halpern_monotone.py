"""Tests of the variance-reduced inexact Halpern iteration for monotone Lipschitz finite sums.

Oracles: closed-form saddle points of bilinear games (built from a chosen solution, or dense linear solves), the
operator residual recomputed from the full mean operator, error bounds from (strong) monotonicity, and the
component-evaluation count of a deterministic inexact Halpern iteration whose resolvents are solved by full-operator
extragradient steps (``n`` evaluations per operator call), written here independently of the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from sciml_optim._halpern import vr_halpern_monotone
from sciml_optim.testing import BilinearGame
from sciml_protocols import SciMLInputError, Solution

DTYPE = torch.float64
Components = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ill_conditioned_game(n: int, m: int, *, seed: int, smallest: float = 1e-3) -> tuple[BilinearGame, torch.Tensor]:
    """A finite-sum bilinear game with singular values log-spaced in [smallest, 1] and a chosen saddle point.

    Small singular values keep the problem in the sublinear (merely monotone) regime, where Halpern's O(1/k) is the
    relevant rate; building b, c from a chosen (x*, y*) keeps the solution bounded and known in closed form.
    """
    gen = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=DTYPE))
    right, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=DTYPE))
    M = left @ torch.diag(torch.logspace(0, math.log10(smallest), m, dtype=DTYPE)) @ right.T
    x_star = torch.randn(m, generator=gen, dtype=DTYPE)
    y_star = torch.randn(m, generator=gen, dtype=DTYPE)
    noise = torch.randn(n, m, m, generator=gen, dtype=DTYPE)
    components = M + 0.3 / math.sqrt(m) * (noise - noise.mean(0))
    # grad_x = M y + b = 0 and grad_y = M^T x - c = 0 at (x*, y*)
    game = BilinearGame(components, -(M @ y_star), M.T @ x_star)
    return game, torch.cat([x_star, y_star])


def _lean_components(game: BilinearGame) -> Components:
    """The same batch means as ``game.components`` from dense stacked A_i, without per-call validation (speed)."""
    Ms = game._M_components  # pyright: ignore[reportPrivateUsage]
    n, m, p = Ms.shape
    top = torch.cat([torch.zeros(n, m, m, dtype=Ms.dtype), Ms], dim=2)
    bottom = torch.cat([-Ms.transpose(1, 2), torch.zeros(n, p, p, dtype=Ms.dtype)], dim=2)
    A = torch.cat([top, bottom], dim=1)
    q = torch.cat([game._b_components, game._c_components], dim=1)  # pyright: ignore[reportPrivateUsage]

    def components(u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (A[idx] @ u).mean(0) + q[idx].mean(0)

    return components


def _deterministic_inexact_halpern(game: BilinearGame, u0: torch.Tensor, eta: float, tol: float) -> tuple[int, float]:
    """Inexact Halpern on J_{eta F} with extragradient inner solves on the full operator; returns (calls, residual).

    Same outer scheme and the same certified inner stopping rule as the method under test
    (||w - v + eta F(w)|| <= theta ||v - w|| / (k + 2), theta = 0.1), warm starts, residual ||F(w_k)||; every full
    operator evaluation costs n component evaluations.
    """
    n, theta = game.n, 0.1
    tau = 0.5 / (1 + eta * game.lipschitz)
    w, value = u0, game.operator(u0)
    calls, u, k = n, u0, 0
    while float(torch.linalg.vector_norm(value)) > tol:
        v = u
        b_w = w - v + eta * value
        while float(torch.linalg.vector_norm(b_w)) > theta * float(torch.linalg.vector_norm(v - w)) / (k + 2):
            half = w - tau * b_w
            w = w - tau * (half - v + eta * game.operator(half))
            value = game.operator(w)
            b_w = w - v + eta * value
            calls += 2 * n
        k += 1
        u = u0 / (k + 1) + (1 - 1 / (k + 1)) * w
    return calls, float(torch.linalg.vector_norm(value))


def test_converges_to_closed_form_saddle_point() -> None:
    game = BilinearGame.random(5, n=200, seed=0)
    u_star = game.solution
    u0 = torch.zeros(game.dim, dtype=DTYPE)
    sol = vr_halpern_monotone(_lean_components(game), u0, n=game.n, L=game.component_lipschitz, L_F=game.lipschitz,
                              operator=game.operator, tol=3e-3, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert isinstance(sol, Solution)
    assert sol.converged
    # the reported residual is exact: ||F(u)|| recomputed from the mean operator
    assert sol.residual == pytest.approx(game.residual(sol.value), rel=1e-9)
    assert sol.residual <= 3e-3
    # no regularization: ||F(u)|| = ||A (u - u*)|| >= sigma_min(M) ||u - u*||
    sigma_min = float(torch.linalg.svdvals(game.M).min())
    assert float(torch.linalg.vector_norm(sol.value - u_star)) <= sol.residual / sigma_min * (1 + 1e-9)
    assert sol.stats["inner_capped"] == 0
    # every resolvent was certified to the relative inexactness target
    errors = sol.stats["resolvent_error"]
    assert errors.shape == (sol.n_iter,)
    assert bool((errors >= 0).all())


def test_fewer_component_evaluations_than_deterministic_inexact_halpern() -> None:
    n = 1000
    game, u_star = _ill_conditioned_game(n, 10, seed=0)
    _ = u_star
    u0 = torch.zeros(game.dim, dtype=DTYPE)
    tol = 2e-2 * game.residual(u0)
    estimator_lipschitz = math.sqrt(game.lipschitz**2 + game.component_lipschitz**2 / 16)
    sol = vr_halpern_monotone(_lean_components(game), u0, n=n, L=game.component_lipschitz, L_F=game.lipschitz,
                              operator=game.operator, batch_size=16, eta=2 * math.sqrt(n / 16) / estimator_lipschitz,
                              tol=tol, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert sol.converged
    assert game.residual(sol.value) <= tol * (1 + 1e-9)
    vr_calls = sol.stats["oracle_calls"]
    # the deterministic method at its best resolvent parameter over a grid (its cost varies little with eta)
    det_calls = {}
    for scale in (4.0, 16.0, 64.0):
        calls, residual = _deterministic_inexact_halpern(game, u0, scale / game.lipschitz, tol)
        assert residual <= tol
        det_calls[scale] = calls
    print(f"\nVR-Halpern (monotone): {vr_calls} component evaluations; deterministic EG-Halpern: {det_calls}")
    assert vr_calls < min(det_calls.values()) / 2, (vr_calls, det_calls)
    assert int(sol.stats["oracle_history"][-1]) == vr_calls


def test_residual_decays_like_one_over_k() -> None:
    n = 300
    game, u_star = _ill_conditioned_game(n, 6, seed=1)
    u0 = torch.zeros(game.dim, dtype=DTYPE)
    eta = 2.0
    sol = vr_halpern_monotone(_lean_components(game), u0, n=n, L=game.component_lipschitz, L_F=game.lipschitz,
                              operator=game.operator, eta=eta, batch_size=8, max_iter=60, tol=0.0,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert not sol.converged
    assert sol.n_iter == 60
    assert sol.stats["reason"] == "reached max_iter=60"
    assert sol.history is not None
    assert sol.history.shape == (61,)
    # exact Halpern on the resolvent: ||F(J u_k)|| = ||u_k - J u_k|| / eta <= 2 ||u0 - u*|| / (eta (k + 1));
    # the certified inexactness costs at most a constant factor
    distance0 = float(torch.linalg.vector_norm(u0 - u_star))
    k = torch.arange(1, 61, dtype=DTYPE)
    assert bool((sol.history[1:] <= 3 * 2 * distance0 / (eta * k)).all())
    # and the decay is not faster than a constant times 1/k on this merely monotone instance: log-log slope ~ -1
    design = torch.stack([torch.log(k[9:]), torch.ones(51, dtype=DTYPE)], dim=1)
    slope = float(torch.linalg.lstsq(design, torch.log(sol.history[10:])[:, None]).solution[0, 0])
    assert -1.4 < slope < -0.7, slope
    assert sol.residual == pytest.approx(game.residual(sol.value), rel=1e-9)


def test_with_resolvent_of_a_strongly_monotone_part() -> None:
    # F = finite-sum bilinear game, G = mu I (resolvent v / (1 + s mu)); F + G is the regularized game.
    mu = 0.2
    game = BilinearGame.random(4, n=200, seed=3)
    target = BilinearGame(game.M, game.b, game.c, regularization=mu)
    sol = vr_halpern_monotone(_lean_components(game), torch.ones(8, dtype=DTYPE), n=game.n,
                              L=game.component_lipschitz, L_F=game.lipschitz, operator=game.operator,
                              resolvent=lambda v, s: v / (1 + s * mu), tol=1e-2,
                              generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert sol.converged
    oracle = -torch.linalg.solve(target.matrix, torch.cat([target.b, target.c]))
    # natural residual r with step sigma = 1/L_F and mu-strong monotonicity of F + G:
    # ||u - u*|| <= sigma r + (1 + sigma L_F) r / mu
    sigma = 1.0 / game.lipschitz
    bound = sigma * sol.residual + 2 * sol.residual / mu
    assert float(torch.linalg.vector_norm(sol.value - oracle)) <= bound * (1 + 1e-9)
    # the residual is the natural residual, recomputed independently
    u = sol.value
    natural = float(torch.linalg.vector_norm(u - (u - sigma * game.operator(u)) / (1 + sigma * mu))) / sigma
    assert sol.residual == pytest.approx(natural, rel=1e-9)


def test_caps_and_reproducibility() -> None:
    game = BilinearGame.random(4, n=300, seed=4)
    u0 = torch.zeros(8, dtype=DTYPE)
    kwargs = dict(L=game.component_lipschitz, L_F=game.lipschitz, tol=0.0)
    capped = vr_halpern_monotone(game, u0, max_iter=5, generator=torch.Generator().manual_seed(0), **kwargs)
    assert not capped.converged
    assert capped.n_iter == 5
    assert capped.stats["reason"] == "reached max_iter=5"
    assert capped.residual == pytest.approx(game.residual(capped.value), rel=1e-9)
    assert capped.stats["inner_history"].shape == (5,)
    again = vr_halpern_monotone(game, u0, max_iter=5, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(again.value, capped.value)
    assert again.stats["oracle_calls"] == capped.stats["oracle_calls"]
    budget = 5_000
    limited = vr_halpern_monotone(game, u0, max_oracle_calls=budget, generator=torch.Generator().manual_seed(0),
                                  **kwargs)  # fmt: skip
    assert not limited.converged
    assert limited.stats["oracle_calls"] <= budget
    assert limited.stats["reason"] == f"reached max_oracle_calls={budget}"
    assert limited.residual == pytest.approx(game.residual(limited.value), rel=1e-9)
    inner = vr_halpern_monotone(game, u0, max_iter=3, max_inner_iter=2, generator=torch.Generator().manual_seed(0),
                                record_history=False, **kwargs)  # fmt: skip
    assert inner.stats["inner_capped"] == 3
    assert inner.stats["inner_iterations"] == 6
    assert inner.history is None
    zero = vr_halpern_monotone(game, u0, max_iter=0, **kwargs)
    assert zero.n_iter == 0
    assert torch.equal(zero.value, u0)
    assert zero.stats["oracle_calls"] == 300


def test_non_finite_is_not_converged() -> None:
    sol = vr_halpern_monotone(lambda u, idx: u * float("nan"), torch.ones(3, dtype=DTYPE), n=4, L=1.0, max_iter=3)
    assert not sol.converged
    assert sol.stats["reason"] == "non-finite residual"


def test_bad_input() -> None:
    game = BilinearGame.random(2, n=16, seed=0)
    u0 = torch.zeros(4, dtype=DTYPE)
    cases = [
        (dict(components=game.components, u0=u0, L=1.0), "n"),
        (dict(components=game, u0=u0, L=1.0, n=5), "n"),
        (dict(components=42, u0=u0, L=1.0), "components"),
        (dict(components=game, u0=u0, L=0.0), "L"),
        (dict(components=game, u0=u0, L=1.0, L_F=-1.0), "L_F"),
        (dict(components=game, u0=u0, L=1.0, operator=3), "operator"),
        (dict(components=game, u0=u0, L=1.0, eta=0.0), "eta"),
        (dict(components=game, u0=u0, L=1.0, batch_size=0), "batch_size"),
        (dict(components=game, u0=u0, L=1.0, batch_size=17), "batch_size"),
        (dict(components=game, u0=u0, L=1.0, refresh_prob=0.0), "refresh_prob"),
        (dict(components=game, u0=u0, L=1.0, refresh_prob=1.5), "refresh_prob"),
        (dict(components=game, u0=u0, L=1.0, inner_step=1.0), "inner_step"),
        (dict(components=game, u0=u0, L=1.0, inexactness=0.0), "inexactness"),
        (dict(components=game, u0=u0, L=1.0, max_inner_iter=0), "max_inner_iter"),
        (dict(components=game, u0=u0, L=1.0, resolvent=1), "resolvent"),
        (dict(components=game, u0=u0, L=1.0, max_iter=-1), "max_iter"),
        (dict(components=game, u0=u0, L=1.0, max_oracle_calls=3), "max_oracle_calls"),
        (dict(components=game, u0=u0, L=1.0, tol=float("nan")), "tol"),
        (dict(components=game, u0=u0, L=1.0, generator=0), "generator"),
        (dict(components=game, u0=torch.tensor([0.0, float("inf"), 0.0, 0.0]), L=1.0), "u0"),
        (dict(components=lambda u, idx: u[:1], u0=u0, L=1.0, n=4), "components"),
        (dict(components=game, u0=u0, L=1.0, operator=lambda u: u.float()), "operator"),
        (dict(components=game, u0=u0, L=1.0, resolvent=lambda v, s: v[:2], tol=0.0), "resolvent"),
    ]
    for kwargs, name in cases:
        with pytest.raises(SciMLInputError) as info:
            vr_halpern_monotone(**kwargs)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == name, kwargs
