"""Tests of Halpern and variance-reduced Halpern iteration, and of the game test problems.

Oracles: the tight last-iterate bound of Halpern iteration for nonexpansive maps (Lieder 2021), closed-form saddle
points and zeros of affine monotone operators (dense linear solves), least-squares solutions from
``torch.linalg.lstsq``, and component-evaluation counts of the deterministic method (n per iteration).
"""

from __future__ import annotations

import math

import pytest
import torch
from sciml_optim import halpern, vr_halpern
from sciml_optim.testing import BilinearGame
from sciml_optim.testing._games import CocoerciveFiniteSum
from sciml_protocols import SciMLInputError, Solution

DTYPE = torch.float64


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 1e-10, rtol: float = 1e-10) -> None:
    # plain check (torch.testing is slow to import on a loaded CI machine)
    assert actual.shape == expected.shape
    assert bool((actual - expected).abs().le(atol + rtol * expected.abs()).all()), (actual, expected)


def _rotation_blocks(angles: torch.Tensor) -> torch.Tensor:
    """Block-diagonal matrix of 2x2 rotations: an isometry, so nonexpansive."""
    dim = 2 * angles.numel()
    out = torch.zeros(dim, dim, dtype=DTYPE)
    for i, theta in enumerate(angles.tolist()):
        c, s = math.cos(theta), math.sin(theta)
        out[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=DTYPE)
    return out


def _loglog_slope(history: torch.Tensor, start: int) -> float:
    k = torch.arange(history.numel(), dtype=DTYPE)[start:]
    design = torch.stack([torch.log(k), torch.ones_like(k)], dim=1)
    fit = torch.linalg.lstsq(design, torch.log(history[start:])[:, None]).solution
    return float(fit[0, 0])


# --------------------------------------------------------------------------------------------- Halpern: fixed points


@pytest.mark.parametrize("averaged", [False, True])
def test_halpern_tight_bound_on_rotations(averaged: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    R = _rotation_blocks(torch.tensor([0.05, 0.7, 2.0, math.pi]))
    center = torch.randn(8, generator=gen, dtype=DTYPE)
    T_matrix = 0.5 * (torch.eye(8, dtype=DTYPE) + R) if averaged else R

    def T(u: torch.Tensor) -> torch.Tensor:
        return center + T_matrix @ (u - center)

    u0 = torch.randn(8, generator=gen, dtype=DTYPE)
    sol = halpern(T, u0, max_iter=300, tol=0.0)
    assert sol.history is not None
    assert sol.history.shape == (301,)
    assert not sol.converged
    assert sol.n_iter == 300
    k = torch.arange(301, dtype=DTYPE)
    bound = 2 * float(torch.linalg.vector_norm(u0 - center)) / (k + 1)
    assert bool((sol.history <= bound * (1 + 1e-12)).all())
    # the residual of the returned point is ||u - T(u)|| recomputed independently
    assert sol.residual == pytest.approx(float(torch.linalg.vector_norm(sol.value - T(sol.value))), rel=1e-12)
    assert sol.stats["operator_evals"] == 301


def test_halpern_on_bilinear_game_via_resolvent() -> None:
    game = BilinearGame.random(10, seed=0)
    u_star = game.solution
    u0 = torch.zeros(game.dim, dtype=DTYPE)
    eta = 1.0
    sol = halpern(lambda v: game.resolvent(v, eta), u0, max_iter=2000, tol=0.0)
    assert sol.history is not None
    distance0 = float(torch.linalg.vector_norm(u0 - u_star))
    k = torch.arange(sol.history.numel(), dtype=DTYPE)
    assert bool((sol.history <= 2 * distance0 / (k + 1) * (1 + 1e-12)).all())
    slope = _loglog_slope(sol.history, start=200)
    assert slope == pytest.approx(-1.0, abs=0.05)
    # last iterate approaches the closed-form saddle point, and F there is small
    assert float(torch.linalg.vector_norm(sol.value - u_star)) < 1e-2 * distance0
    # ||u - J(u)|| / eta = ||F(J(u))||, and F is Lipschitz, so ||F(u)|| <= (1 + eta L) r / eta
    assert game.residual(sol.value) <= (1 + eta * game.lipschitz) * sol.residual / eta * (1 + 1e-9)


def test_halpern_reaches_tolerance_on_game() -> None:
    game = BilinearGame.random(6, seed=4)
    sol = halpern(lambda v: game.resolvent(v, 2.0), torch.zeros(12, dtype=DTYPE), max_iter=5000, tol=2e-2)
    assert sol.converged
    assert sol.residual <= 2e-2
    assert sol.history is not None
    assert sol.history.shape == (sol.n_iter + 1,)
    assert float(sol.history[-1]) == sol.residual
    assert bool((sol.history[:-1] > 2e-2).all())


def test_halpern_cocoercive_least_squares() -> None:
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(50, 6, generator=gen, dtype=DTYPE)
    targets = torch.randn(50, generator=gen, dtype=DTYPE)
    problem = CocoerciveFiniteSum.least_squares(features, targets)
    oracle = torch.linalg.lstsq(features, targets[:, None]).solution.ravel()
    lipschitz = float(torch.linalg.eigvalsh(features.T @ features / 50).max())
    u0 = torch.zeros(6, dtype=DTYPE)
    sol = halpern(problem.operator, u0, kind="cocoercive", eta=1.0 / lipschitz, max_iter=20_000, tol=1e-3)
    assert sol.converged
    assert sol.residual == pytest.approx(problem.residual(sol.value), rel=1e-9)  # residual is ||F(u)||
    # strong monotonicity: ||u - u*|| <= ||F(u)|| / lambda_min(A^T A / n)
    strong = float(torch.linalg.eigvalsh(features.T @ features / 50).min())
    assert float(torch.linalg.vector_norm(sol.value - oracle)) <= sol.residual / strong * (1 + 1e-9)
    # Halpern on I - eta F (nonexpansive): ||F(u_k)|| <= 2 ||u0 - u*|| / (eta (k + 1))
    assert sol.history is not None
    k = torch.arange(sol.history.numel(), dtype=DTYPE)
    bound = 2 * float(torch.linalg.vector_norm(u0 - oracle)) * lipschitz / (k + 1)
    assert bool((sol.history <= bound * (1 + 1e-9)).all())


def test_halpern_forward_backward_on_regularized_game() -> None:
    # 0 = mu u + (S u + q): forward step on the cocoercive mu I, resolvent of the bilinear part.
    mu = 0.3
    skew = BilinearGame.random(5, seed=2)
    target = BilinearGame(skew.M, skew.b, skew.c, regularization=mu)
    u0 = torch.ones(10, dtype=DTYPE)
    sol = halpern(
        lambda u: mu * u, u0, kind="cocoercive", eta=1.0 / mu, resolvent=skew.resolvent, max_iter=20_000, tol=1e-2
    )
    assert sol.converged
    assert sol.stats["resolvent_evals"] == sol.stats["operator_evals"] == sol.n_iter + 1
    oracle = -torch.linalg.solve(target.matrix, torch.cat([target.b, target.c]))
    _assert_close(target.solution, oracle, atol=1e-12, rtol=0)
    # (u - Tu)/eta - F(u) + F(Tu) lies in (F + G)(Tu), which is mu-strongly monotone, so with eta = 1/mu, L_F = mu:
    # ||u - u*|| <= eta r + (1 + eta L_F) r / mu = 3 r / mu
    assert float(torch.linalg.vector_norm(sol.value - oracle)) <= 3 * sol.residual / mu * (1 + 1e-9)


def test_halpern_custom_anchor_weights_and_no_history() -> None:
    R = _rotation_blocks(torch.tensor([1.0]))
    sol = halpern(lambda u: R @ u, torch.ones(2, dtype=DTYPE), anchor_weights=lambda k: 1.0 / (k + 3), max_iter=10,
                  tol=0.0, record_history=False)  # fmt: skip
    assert sol.history is None
    assert sol.n_iter == 10
    assert not sol.converged
    assert sol.stats["reason"] == "reached max_iter=10"
    zero = halpern(lambda u: R @ u, torch.ones(2, dtype=DTYPE), max_iter=0)
    assert zero.n_iter == 0
    assert zero.history is not None
    assert zero.history.shape == (1,)


def test_halpern_non_finite_is_not_converged() -> None:
    sol = halpern(lambda u: u * float("nan"), torch.ones(3), max_iter=5)
    assert not sol.converged
    assert sol.stats["reason"] == "non-finite residual"


def test_halpern_bad_input() -> None:
    T = lambda u: u  # noqa: E731
    u0 = torch.ones(3)
    cases = [
        (dict(operator=T, u0=[1.0]), "u0"),
        (dict(operator=T, u0=torch.ones(3, dtype=torch.int64)), "u0"),
        (dict(operator=T, u0=torch.tensor([1.0, float("nan")])), "u0"),
        (dict(operator=T, u0=torch.ones(0)), "u0"),
        (dict(operator=3, u0=u0), "operator"),
        (dict(operator=T, u0=u0, kind="lipschitz"), "kind"),
        (dict(operator=T, u0=u0, eta=0.1), "eta"),
        (dict(operator=T, u0=u0, kind="cocoercive"), "eta"),
        (dict(operator=T, u0=u0, kind="cocoercive", eta=-1.0), "eta"),
        (dict(operator=T, u0=u0, resolvent=T), "resolvent"),
        (dict(operator=T, u0=u0, max_iter=-1), "max_iter"),
        (dict(operator=T, u0=u0, max_iter=2.5), "max_iter"),
        (dict(operator=T, u0=u0, tol=-1e-3), "tol"),
        (dict(operator=T, u0=u0, anchor_weights="1/k"), "anchor_weights"),
        (dict(operator=lambda u: -u, u0=u0, anchor_weights=lambda k: 1.5, tol=0.0), "anchor_weights"),
        (dict(operator=lambda u: u[:2] + 1, u0=u0), "operator"),
        (dict(operator=lambda u: (u + 1).double(), u0=u0), "operator"),
    ]
    for kwargs, name in cases:
        with pytest.raises(SciMLInputError) as info:
            halpern(**kwargs)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == name, kwargs


# --------------------------------------------------------------------------------------------------------- VR-Halpern


def test_vr_halpern_needs_fewer_component_evaluations() -> None:
    n = 2000
    problem = CocoerciveFiniteSum.random(5, n, spread=0.5, seed=0)
    u_star = problem.solution
    u0 = torch.zeros(5, dtype=DTYPE)
    distance0 = float(torch.linalg.vector_norm(u0 - u_star))
    tol = 2e-3 * problem.cocoercivity * distance0
    det = halpern(problem.operator, u0, kind="cocoercive", eta=1.0 / problem.cocoercivity, max_iter=10**5, tol=tol)
    assert det.converged
    det_calls = n * det.stats["operator_evals"]  # every full evaluation touches all n components
    for seed in range(2):
        vr = vr_halpern(problem, u0, L=problem.component_cocoercivity, tol=tol,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert vr.converged
        assert problem.residual(vr.value) <= tol
        assert vr.stats["batch_size"] == math.ceil(math.sqrt(n))
        assert vr.stats["oracle_calls"] < det_calls / 4, (vr.stats["oracle_calls"], det_calls)
        # final history entry is exact and matches the independent residual
        assert vr.history is not None
        assert bool(vr.stats["exact"][-1])
        assert float(vr.history[-1]) == pytest.approx(problem.residual(vr.value), rel=1e-9)
        assert int(vr.stats["oracle_history"][-1]) == vr.stats["oracle_calls"]


def test_vr_halpern_converges_to_solution_and_history_is_consistent() -> None:
    problem = CocoerciveFiniteSum.random(4, 400, seed=3)
    u0 = torch.ones(4, dtype=DTYPE)
    vr = vr_halpern(problem, u0, L=problem.component_cocoercivity, tol=3e-3, generator=torch.Generator().manual_seed(0))
    assert vr.converged
    strong = float(torch.linalg.eigvalsh(problem.A).min())
    assert float(torch.linalg.vector_norm(vr.value - problem.solution)) <= vr.residual / strong * (1 + 1e-9)
    assert vr.history is not None
    assert vr.history.shape == (vr.n_iter + 1,)
    oracle_history = vr.stats["oracle_history"]
    assert oracle_history.shape == vr.history.shape
    assert bool((oracle_history.diff() > 0).all())
    assert int(oracle_history[0]) == 400  # the first estimator is a full pass
    assert bool(vr.stats["exact"][0])
    # O(1/k) decay of the last iterate: the exact residuals stay below a constant over k
    exact = vr.stats["exact"]
    k = torch.arange(vr.history.numel(), dtype=DTYPE)
    scaled = (vr.history * (k + 1))[exact]
    assert float(scaled.max()) < 10 * problem.component_cocoercivity * float(
        torch.linalg.vector_norm(u0 - problem.solution)
    )


def test_vr_halpern_plain_callable_and_resolvent() -> None:
    # F = finite sum of cocoercive A_i u - b_i; G = bilinear skew operator handled by its exact resolvent.
    base = CocoerciveFiniteSum.random(6, 300, seed=5)
    skew = BilinearGame.random(3, seed=6)

    def components(u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return base.components(u, idx)

    vr = vr_halpern(components, torch.zeros(6, dtype=DTYPE), n=300, L=base.component_cocoercivity,
                    resolvent=skew.resolvent, tol=5e-3, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert vr.converged
    oracle = torch.linalg.solve(base.A + skew.matrix, base.b - torch.cat([skew.b, skew.c]))
    # FB residual r bounds the distance through strong monotonicity of F + G (the skew part adds none):
    # ||u - u*|| <= eta r + (1 + eta L_F) r / lambda_min
    eigs = torch.linalg.eigvalsh(base.A)
    eta = vr.stats["eta"]
    bound = eta * vr.residual + (1 + eta * float(eigs.max())) * vr.residual / float(eigs.min())
    assert float(torch.linalg.vector_norm(vr.value - oracle)) <= bound * (1 + 1e-9)


def test_vr_halpern_caps_and_reproducibility() -> None:
    problem = CocoerciveFiniteSum.random(5, 900, seed=7)
    u0 = torch.zeros(5, dtype=DTYPE)
    L = problem.component_cocoercivity
    capped = vr_halpern(problem, u0, L=L, tol=0.0, max_iter=30, generator=torch.Generator().manual_seed(0))
    assert not capped.converged
    assert capped.n_iter == 30
    assert capped.stats["reason"] == "reached max_iter=30"
    assert capped.residual == pytest.approx(problem.residual(capped.value), rel=1e-9)  # certified, exact
    budget = 20_000
    limited = vr_halpern(problem, u0, L=L, tol=0.0, max_oracle_calls=budget, generator=torch.Generator().manual_seed(0))
    assert not limited.converged
    assert limited.stats["oracle_calls"] <= budget
    assert limited.stats["reason"] == f"reached max_oracle_calls={budget}"
    again = vr_halpern(problem, u0, L=L, tol=0.0, max_iter=30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.value, capped.value)
    assert again.stats["oracle_calls"] == capped.stats["oracle_calls"]
    assert isinstance(capped, Solution)


def test_vr_halpern_bad_input() -> None:
    problem = CocoerciveFiniteSum.random(3, 16, seed=0)
    u0 = torch.zeros(3, dtype=DTYPE)
    cases = [
        (dict(components=problem.components, u0=u0, L=1.0), "n"),
        (dict(components=problem, u0=u0, L=1.0, n=5), "n"),
        (dict(components=42, u0=u0, L=1.0), "components"),
        (dict(components=problem, u0=u0, L=0.0), "L"),
        (dict(components=problem, u0=u0, L=1.0, eta=3.0), "eta"),
        (dict(components=problem, u0=u0, L=1.0, batch_size=0), "batch_size"),
        (dict(components=problem, u0=u0, L=1.0, batch_size=17), "batch_size"),
        (dict(components=problem, u0=u0, L=1.0, refresh_prob=0.0), "refresh_prob"),
        (dict(components=problem, u0=u0, L=1.0, refresh_prob=1.5), "refresh_prob"),
        (dict(components=problem, u0=u0, L=1.0, max_oracle_calls=3), "max_oracle_calls"),
        (dict(components=problem, u0=u0, L=1.0, tol=float("nan")), "tol"),
        (dict(components=problem, u0=u0, L=1.0, generator=0), "generator"),
        (dict(components=problem, u0=torch.tensor([0.0, float("inf"), 0.0]), L=1.0), "u0"),
        (dict(components=lambda u, idx: u[:1], u0=u0, L=1.0, n=4), "components"),
    ]
    for kwargs, name in cases:
        with pytest.raises(SciMLInputError) as info:
            vr_halpern(**kwargs)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == name, kwargs


# ----------------------------------------------------------------------------------------------------------- problems


def test_bilinear_game_closed_form_and_operator() -> None:
    game = BilinearGame.random(4, n=7, seed=11, spread=0.3)
    u_star = game.solution
    x, y = game.split(u_star)
    # saddle-point conditions written out directly from the objective: grad_x = M y + b, grad_y = M^T x - c
    _assert_close(game.M @ y + game.b, torch.zeros(4, dtype=DTYPE), atol=1e-12, rtol=0)
    _assert_close(game.M.T @ x - game.c, torch.zeros(4, dtype=DTYPE), atol=1e-12, rtol=0)
    u = torch.randn(8, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    # the finite-sum split averages to F, and single components follow their own definitions
    _assert_close(game.components(u, torch.arange(7)), game.operator(u))
    M2 = game._M_components[2]  # pyright: ignore[reportPrivateUsage]
    b2, c2 = game._b_components[2], game._c_components[2]  # pyright: ignore[reportPrivateUsage]
    xs, ys = game.split(u)
    _assert_close(game.components(u, torch.tensor([2, 2])), torch.cat([M2 @ ys + b2, -(M2.T @ xs) + c2]))
    # Lipschitz constant = spectral norm of the Jacobian, computed by autograd
    jac = torch.autograd.functional.jacobian(game.operator, u)
    assert game.lipschitz == pytest.approx(float(torch.linalg.matrix_norm(jac, ord=2)), rel=1e-10)
    # monotone: the symmetric part of the Jacobian is zero without regularization
    _assert_close(jac + jac.T, torch.zeros_like(jac), atol=1e-12, rtol=0)


def test_regularized_game_and_resolvent() -> None:
    game = BilinearGame.random(3, 5, regularization=0.5, seed=2)
    assert game.residual(game.solution) < 1e-12
    v = torch.randn(8, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    w = game.resolvent(v, 0.7)
    _assert_close(w + 0.7 * game.operator(w), v)
    jac = torch.autograd.functional.jacobian(game.operator, v)
    _assert_close(0.5 * (jac + jac.T), 0.5 * torch.eye(8, dtype=DTYPE))
    assert game.lipschitz == pytest.approx(float(torch.linalg.matrix_norm(jac, ord=2)), rel=1e-10)


def test_cocoercive_problem_constants() -> None:
    problem = CocoerciveFiniteSum.random(4, 50, seed=4)
    u, v = torch.randn(2, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    L = problem.component_cocoercivity
    inner = torch.stack([torch.dot(problem.components(u, torch.tensor([i])) - problem.components(v, torch.tensor([i])),
                                   u - v) for i in range(50)]).mean()  # fmt: skip
    sq = torch.stack([(problem.components(u, torch.tensor([i])) - problem.components(v, torch.tensor([i]))).square()
                      .sum() for i in range(50)]).mean()  # fmt: skip
    assert float(inner) >= float(sq) / L * (1 - 1e-12)
    assert problem.residual(problem.solution) < 1e-12


def test_problem_bad_input() -> None:
    with pytest.raises(SciMLInputError, match="'M'"):
        BilinearGame(torch.ones(2), torch.ones(2), torch.ones(2))
    with pytest.raises(SciMLInputError, match="'b'"):
        BilinearGame(torch.ones(2, 2), torch.ones(3), torch.ones(2))
    with pytest.raises(SciMLInputError, match="'regularization'"):
        BilinearGame(torch.ones(2, 2), torch.ones(2), torch.ones(2), regularization=-1.0)
    with pytest.raises(SciMLInputError, match="'p'"):
        BilinearGame.random(2, 3)
    game = BilinearGame.random(2, n=3)
    with pytest.raises(SciMLInputError, match="'idx'"):
        game.components(torch.zeros(4, dtype=DTYPE), torch.tensor([3]))
    with pytest.raises(SciMLInputError, match="'u'"):
        game.operator(torch.zeros(3, dtype=DTYPE))
    with pytest.raises(SciMLInputError, match="'eta'"):
        game.resolvent(torch.zeros(4, dtype=DTYPE), 0.0)
    with pytest.raises(SciMLInputError, match="'A'"):
        CocoerciveFiniteSum(torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]), torch.zeros(1, 2))
