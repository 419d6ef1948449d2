"""Tests of the optimality mappings, proximal operators and projections.

Oracles: closed forms, scipy minimizations (SLSQP, L-BFGS-B, nnls), active-set KKT systems solved with numpy,
finite differences and a lasso solver written here (coordinate descent), never values produced by the code under
test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sciml_bilevel._optimality import (
    FixedPointMapping,
    KKTCondition,
    RootMapping,
    gradient_stationarity,
    kkt_optimality,
    mirror_descent_fixed_point,
    projected_gradient_fixed_point,
    prox_gradient_fixed_point,
)
from sciml_bilevel._projections import (
    project_affine,
    project_box,
    project_hyperplane,
    project_l1_ball,
    project_l2_ball,
    project_nonnegative,
    project_simplex,
)
from sciml_bilevel._prox import (
    prox_box,
    prox_elastic_net,
    prox_group_lasso,
    prox_l1,
    prox_l2,
    prox_none,
    prox_nonnegative,
    prox_ridge,
)
from sciml_protocols import FixedPointCondition, OptimalityCondition, RootCondition, SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64

F64 = torch.float64


def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _slsqp(fun: Callable[[np.ndarray], float], x0: np.ndarray, **kw: Any) -> np.ndarray:
    from scipy.optimize import minimize

    res = minimize(fun, x0, method="SLSQP", options={"ftol": 1e-13, "maxiter": 1000}, **kw)
    # status 8 ("positive directional derivative in the line search") is SLSQP stalling at the optimum at this
    # tight ftol; the comparisons that follow check the point itself.
    assert res.success or res.status == 8, res.message
    return res.x


# --------------------------------------------------------------------------------------------------------------
# proximal operators: prox(v) = argmin_x 0.5 ||x - v||^2 + s g(x), solved by scipy on an epigraph reformulation
# --------------------------------------------------------------------------------------------------------------


def _prox_l1_oracle(v: np.ndarray, lam: float, s: float, l2: float = 0.0) -> np.ndarray:
    # variables (x, t) with t >= |x|: a smooth problem with linear constraints
    d = v.size

    def fun(u: np.ndarray) -> float:
        x, t = u[:d], u[d:]
        return 0.5 * np.sum((x - v) ** 2) + s * lam * np.sum(t) + 0.5 * s * l2 * np.sum(x**2)

    def jac(u: np.ndarray) -> np.ndarray:
        x = u[:d]
        return np.concatenate([x - v + s * l2 * x, np.full(d, s * lam)])

    eye = np.eye(d)
    cons = [
        {"type": "ineq", "fun": lambda u: u[d:] - u[:d], "jac": lambda u: np.hstack([-eye, eye])},
        {"type": "ineq", "fun": lambda u: u[d:] + u[:d], "jac": lambda u: np.hstack([eye, eye])},
    ]
    u = _slsqp(fun, np.concatenate([v, np.abs(v) + 1]), jac=jac, constraints=cons)
    return u[:d]


def _prox_norm_oracle(v: np.ndarray, lam: float, s: float) -> np.ndarray:
    # variables (x, t) with t >= ||x||_2, written as t^2 >= ||x||^2, t >= 0
    d = v.size

    def fun(u: np.ndarray) -> float:
        return 0.5 * np.sum((u[:d] - v) ** 2) + s * lam * u[d]

    def jac(u: np.ndarray) -> np.ndarray:
        return np.concatenate([u[:d] - v, [s * lam]])

    cons = [
        {
            "type": "ineq",
            "fun": lambda u: u[d] ** 2 - np.sum(u[:d] ** 2),
            "jac": lambda u: np.concatenate([-2 * u[:d], [2 * u[d]]]),
        }
    ]
    x0 = np.concatenate([v, [np.linalg.norm(v) + 1]])
    u = _slsqp(fun, x0, jac=jac, constraints=cons, bounds=[(None, None)] * d + [(0, None)])
    return u[:d]


def _bounded_oracle(v: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize

    bounds = list(zip(lower, upper, strict=True))
    res = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2),
        np.zeros_like(v),
        jac=lambda x: x - v,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    return res.x


def test_prox_l1_and_elastic_net_match_scipy() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=7) * 2
    for lam, s in [(0.7, 1.0), (0.3, 2.5)]:
        expected = _prox_l1_oracle(v, lam, s)
        assert_close(prox_l1(_t(v), lam, s), expected, atol=1e-6, rtol=0)
        # per-coordinate weights as a tensor
        assert_close(prox_l1(_t(v), torch.full((7,), lam, dtype=F64), s), expected, atol=1e-6, rtol=0)
        expected_en = _prox_l1_oracle(v, lam, s, l2=0.8)
        assert_close(prox_elastic_net(_t(v), (lam, 0.8), s), expected_en, atol=1e-6, rtol=0)
        # the dead zone |v| <= lam * s is exercised, and ours returns exact zeros there
        dead = np.abs(v) <= lam * s
        assert dead.any()
        assert bool((prox_l1(_t(v), lam, s)[torch.from_numpy(dead)] == 0).all())
    assert (prox_l1(_t(v), 0.7) == 0).sum() == np.sum(np.abs(v) <= 0.7)


def test_prox_ridge_none_nonnegative_box_match_scipy() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    v = rng.normal(size=6)
    lam, s = 1.3, 0.6
    res = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2) + 0.5 * s * lam * np.sum(x**2),
        np.zeros(6),
        method="BFGS",
        options={"gtol": 1e-12},
    )
    assert_close(prox_ridge(_t(v), lam, s), res.x, atol=1e-7, rtol=0)
    assert_close(prox_none(_t(v), None, s), v, atol=0, rtol=0)
    inf = np.full(6, np.inf)
    assert_close(prox_nonnegative(_t(v)), _bounded_oracle(v, np.zeros(6), inf), atol=1e-8, rtol=0)
    lower, upper = -0.3 * np.ones(6), np.linspace(0.1, 0.6, 6)
    assert_close(prox_box(_t(v), (_t(lower), _t(upper)), s), _bounded_oracle(v, lower, upper), atol=1e-8, rtol=0)
    assert_close(prox_box(_t(v), (-0.3, 0.4)), _bounded_oracle(v, lower, 0.4 * np.ones(6)), atol=1e-8, rtol=0)


def test_prox_group_lasso_and_l2_match_scipy() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(4, 3)) * np.array([[3.0], [0.2], [1.0], [0.05]])  # two rows get zeroed
    lam, s = 0.8, 0.9
    out = prox_group_lasso(_t(rows), lam, s)
    for i in range(4):
        assert_close(out[i], _prox_norm_oracle(rows[i], lam, s), atol=1e-6, rtol=0)
    assert int((out.abs().sum(dim=1) == 0).sum()) == 2
    # prox_l2 takes one norm over the whole tensor
    flat = prox_l2(_t(rows), lam, s).reshape(-1)
    assert_close(flat, _prox_norm_oracle(rows.reshape(-1), lam, s), atol=1e-6, rtol=0)
    assert_close(prox_l2(_t(rows[1]), 10.0), np.zeros(3), atol=0, rtol=0)


def test_prox_gradients_finite_differences() -> None:
    torch.manual_seed(0)
    v = torch.randn(5, dtype=F64) * 2
    v = torch.where(v.abs() < 0.5, v + 1.0, v)  # stay away from the kinks |v| = lam * s
    gradcheck_float64(prox_l1, v, torch.tensor(0.3, dtype=F64), torch.tensor(0.9, dtype=F64))
    gradcheck_float64(
        lambda x, a, b: prox_elastic_net(x, (a, b), 0.7), v, torch.tensor(0.2, dtype=F64), torch.tensor(0.5, dtype=F64)
    )
    gradcheck_float64(prox_ridge, v, torch.tensor(0.4, dtype=F64))
    rows = torch.randn(3, 4, dtype=F64) * torch.tensor([[2.0], [0.1], [1.5]], dtype=F64)
    gradcheck_float64(prox_group_lasso, rows, torch.tensor(0.5, dtype=F64))
    gradcheck_float64(prox_l2, rows, torch.tensor(0.5, dtype=F64))


# --------------------------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------------------------


def _projection_oracle(x: np.ndarray, **kw: Any) -> np.ndarray:
    return _slsqp(lambda y: 0.5 * np.sum((y - x) ** 2), np.zeros_like(x), jac=lambda y: y - x, **kw)


def test_project_simplex_matches_scipy_and_batches() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 6)) * 1.5
    for c in (1.0, 2.5):
        out = project_simplex(_t(x), c)
        for i in range(5):
            expected = _projection_oracle(
                x[i],
                constraints=[{"type": "eq", "fun": lambda y, c=c: np.sum(y) - c, "jac": lambda y: np.ones_like(y)}],
                bounds=[(0, None)] * 6,
            )
            assert_close(out[i], expected, atol=1e-7, rtol=0)
        assert_close(out.sum(dim=-1), torch.full((5,), c, dtype=F64))
        assert bool((out >= 0).all())
        assert_close(project_simplex(out, c), out, atol=1e-14, rtol=0)  # idempotent
    # a per-row total as a tensor
    totals = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.5], dtype=F64)
    assert_close(project_simplex(_t(x), totals).sum(dim=-1), totals)


def test_project_balls_match_scipy() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 5)) * np.array([[3.0], [0.1], [1.0], [0.3]])  # some rows inside the balls
    r = 1.2
    l1 = project_l1_ball(_t(x), r)
    l2 = project_l2_ball(_t(x), r)
    d = 5
    eye = np.eye(d)
    for i in range(4):
        # l1 ball through an epigraph (y, t), t >= |y|, sum t <= r
        cons = [
            {"type": "ineq", "fun": lambda u: u[d:] - u[:d], "jac": lambda u: np.hstack([-eye, eye])},
            {"type": "ineq", "fun": lambda u: u[d:] + u[:d], "jac": lambda u: np.hstack([eye, eye])},
            {
                "type": "ineq",
                "fun": lambda u: r - np.sum(u[d:]),
                "jac": lambda u: np.concatenate([np.zeros(d), -np.ones(d)]),
            },
        ]
        xi = x[i]
        u = _slsqp(
            lambda u, xi=xi: 0.5 * np.sum((u[:d] - xi) ** 2),
            np.zeros(2 * d),
            jac=lambda u, xi=xi: np.concatenate([u[:d] - xi, np.zeros(d)]),
            constraints=cons,
        )
        assert_close(l1[i], u[:d], atol=1e-7, rtol=0)
        expected_l2 = _projection_oracle(
            x[i], constraints=[{"type": "ineq", "fun": lambda y: r**2 - np.sum(y**2), "jac": lambda y: -2 * y}]
        )
        assert_close(l2[i], expected_l2, atol=1e-7, rtol=0)
    assert_close(project_l1_ball(l1, r), l1, atol=1e-14, rtol=0)
    assert_close(project_l2_ball(l2, r), l2, atol=1e-14, rtol=0)
    assert_close(l1[1], x[1], atol=0, rtol=0)  # inside: unchanged


def test_project_box_nonnegative_hyperplane_affine_match_scipy() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=6)
    lower, upper = -0.5 * np.ones(6), 0.5 * np.ones(6)
    assert_close(project_box(_t(x), (-0.5, 0.5)), _bounded_oracle(x, lower, upper), atol=1e-8, rtol=0)
    assert_close(project_nonnegative(_t(x)), _bounded_oracle(x, np.zeros(6), np.full(6, np.inf)), atol=1e-8, rtol=0)
    a, b = rng.normal(size=6), 0.7
    expected = _projection_oracle(x, constraints=[{"type": "eq", "fun": lambda y: a @ y - b, "jac": lambda y: a}])
    hyper = project_hyperplane(_t(x), (_t(a), b))
    assert_close(hyper, expected, atol=1e-8, rtol=0)
    assert_close(project_hyperplane(hyper, (_t(a), b)), hyper, atol=1e-14, rtol=0)
    matrix, rhs = rng.normal(size=(3, 6)), rng.normal(size=3)
    expected = _projection_oracle(
        x, constraints=[{"type": "eq", "fun": lambda y: matrix @ y - rhs, "jac": lambda y: matrix}]
    )
    affine = project_affine(_t(x), (_t(matrix), _t(rhs)))
    assert_close(affine, expected, atol=1e-8, rtol=0)
    assert_close(project_affine(affine, (_t(matrix), _t(rhs))), affine, atol=1e-13, rtol=0)
    # batched over the leading dimension
    xs = rng.normal(size=(3, 6))
    batched = project_affine(_t(xs), (_t(matrix), _t(rhs)))
    for i in range(3):
        assert_close(batched[i], project_affine(_t(xs[i]), (_t(matrix), _t(rhs))), atol=1e-14, rtol=0)


def test_projection_gradients_finite_differences() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 5, dtype=F64) * 2
    gradcheck_float64(project_simplex, x, torch.tensor(1.3, dtype=F64))
    gradcheck_float64(project_l1_ball, x, torch.tensor(0.8, dtype=F64))
    gradcheck_float64(project_l2_ball, x, torch.tensor(0.8, dtype=F64))
    gradcheck_float64(
        lambda y, a, b: project_hyperplane(y, (a, b)), x, torch.randn(5, dtype=F64), torch.tensor(0.3, dtype=F64)
    )
    gradcheck_float64(
        lambda y, m, b: project_affine(y, (m, b)), x, torch.randn(2, 5, dtype=F64), torch.randn(2, dtype=F64)
    )


# --------------------------------------------------------------------------------------------------------------
# mappings at known solutions
# --------------------------------------------------------------------------------------------------------------


def _lasso_data() -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(6)
    n, d = 40, 8
    X = rng.normal(size=(n, d))
    w_true = np.array([1.5, -2.0, 0, 0, 0.8, 0, 0, 0])
    y = X @ w_true + 0.3 * rng.normal(size=n)
    return X, y, 0.1


def _lasso_solution(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """min_w ||Xw - y||^2 / (2n) + lam ||w||_1 by coordinate descent, polished on the support."""
    n, d = X.shape
    w = np.zeros(d)
    col_sq = np.sum(X**2, axis=0) / n
    residual = y.copy()
    for _ in range(5000):
        previous = w.copy()
        for j in range(d):
            rho = X[:, j] @ residual / n + col_sq[j] * w[j]
            new = np.sign(rho) * max(abs(rho) - lam, 0.0) / col_sq[j]
            residual -= X[:, j] * (new - w[j])
            w[j] = new
        if np.max(np.abs(w - previous)) < 1e-13:
            break
    support = w != 0
    Xs = X[:, support]
    w_polished = np.zeros(d)
    w_polished[support] = np.linalg.solve(Xs.T @ Xs, Xs.T @ y - n * lam * np.sign(w[support]))
    assert np.allclose(w_polished, w, atol=1e-8)
    return w_polished


def _lasso_objective(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((X @ w - y) ** 2).sum() / X.shape[0]


def test_prox_gradient_fixed_point_lasso() -> None:
    X, y, lam = _lasso_data()
    w = _lasso_solution(X, y, lam)
    support = w != 0
    assert 0 < support.sum() < w.size
    step = 1.0 / np.linalg.eigvalsh(X.T @ X / X.shape[0]).max()
    T = prox_gradient_fixed_point(_lasso_objective, prox_l1, step)
    assert isinstance(T, FixedPointCondition)
    assert isinstance(T, OptimalityCondition)
    assert T.kind == "fixed_point"
    args = (torch.tensor(lam, dtype=F64), _t(X), _t(y))
    assert_close(T(_t(w), *args), w, atol=1e-12, rtol=0)
    assert float(T.residual(_t(w), *args).norm()) < 1e-12
    assert T.is_satisfied(_t(w), *args, tol=1e-10)
    assert not T.is_satisfied(_t(w) + 0.1, *args, tol=1e-6)

    # implicit derivative from the mapping's own Jacobians: dw/dlam = (I - d_w T)^{-1} d_lam T
    w_t, lam_t = _t(w), torch.tensor(lam, dtype=F64)
    jac_w, jac_lam = torch.autograd.functional.jacobian(lambda ww, ll: T(ww, ll, _t(X), _t(y)), (w_t, lam_t))
    derivative = torch.linalg.solve(torch.eye(w.size, dtype=F64) - jac_w, jac_lam)
    Xs = X[:, support]
    expected = np.zeros(w.size)
    expected[support] = -X.shape[0] * np.linalg.solve(Xs.T @ Xs, np.sign(w[support]))
    assert_close(derivative, expected, atol=1e-10, rtol=1e-10)
    # and the closed form against finite differences of the coordinate-descent solver (independent check)
    h = 1e-6
    fd = (_lasso_solution(X, y, lam + h) - _lasso_solution(X, y, lam - h)) / (2 * h)
    assert_close(fd, expected, atol=1e-5, rtol=1e-5)


def test_lasso_hypergradient_through_custom_fixed_point() -> None:
    import sciml_bilevel._implicit as implicit

    X, y, lam = _lasso_data()
    step = 1.0 / np.linalg.eigvalsh(X.T @ X / X.shape[0]).max()
    T = prox_gradient_fixed_point(_lasso_objective, prox_l1, step)

    @implicit.custom_fixed_point(T, solve="dense")
    def solver(init: torch.Tensor, l1reg: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _t(_lasso_solution(X.numpy(), y.numpy(), float(l1reg)))

    lam_t = torch.tensor(lam, dtype=F64, requires_grad=True)
    w = solver(torch.zeros(X.shape[1], dtype=F64), lam_t, _t(X), _t(y))
    wn = w.detach().numpy()
    support = wn != 0
    jac = torch.stack([torch.autograd.grad(w[i], lam_t, retain_graph=True)[0] for i in range(w.numel())])
    Xs = X[:, support]
    expected = np.zeros(wn.size)
    expected[support] = -X.shape[0] * np.linalg.solve(Xs.T @ Xs, np.sign(wn[support]))
    assert_close(jac, expected, atol=1e-9, rtol=1e-9)


def test_projected_gradient_fixed_point_nnls() -> None:
    from scipy.optimize import nnls

    rng = np.random.default_rng(7)
    A, b = rng.normal(size=(20, 6)), rng.normal(size=20)
    x, _ = nnls(A, b)
    assert 0 < np.sum(x == 0) < 6
    step = 1.0 / np.linalg.eigvalsh(A.T @ A).max()
    T = projected_gradient_fixed_point(lambda z, A, b: 0.5 * ((A @ z - b) ** 2).sum(), project_nonnegative, step)
    assert_close(T(_t(x), None, _t(A), _t(b)), x, atol=1e-12, rtol=0)
    # the same solution through a box with an inactive upper bound, bounds passed as two separate thetas
    T_box = projected_gradient_fixed_point(
        lambda z, A, b: 0.5 * ((A @ z - b) ** 2).sum(), project_box, step, n_projection_args=2
    )
    assert_close(T_box(_t(x), 0.0, 100.0, _t(A), _t(b)), x, atol=1e-12, rtol=0)


def test_gradient_stationarity_ridge() -> None:
    rng = np.random.default_rng(8)
    X, y, lam = rng.normal(size=(15, 4)), rng.normal(size=15), 0.7
    w = np.linalg.solve(X.T @ X + lam * np.eye(4), X.T @ y)
    F = gradient_stationarity(lambda w, lam, X, y: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * lam * (w**2).sum())
    assert isinstance(F, RootCondition)
    assert isinstance(F, OptimalityCondition)
    assert F.kind == "root"
    lam_t = torch.tensor(lam, dtype=F64, requires_grad=True)
    residual = F(_t(w), lam_t, _t(X), _t(y))
    assert_close(residual, np.zeros(4), atol=1e-12, rtol=0)
    # differentiable in theta: dF/dlam = w
    (g,) = torch.autograd.grad(residual.sum(), lam_t)
    assert_close(g, w.sum(), atol=1e-12, rtol=1e-12)
    # and in z: dF/dz = X^T X + lam I
    jac = torch.autograd.functional.jacobian(lambda z: F(z, lam_t.detach(), _t(X), _t(y)), _t(w))
    assert_close(jac, X.T @ X + lam * np.eye(4), atol=1e-12, rtol=1e-12)


def _qp() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    n = 5
    M = rng.normal(size=(n, n))
    return {
        "Q": M @ M.T + np.eye(n),
        "c": rng.normal(size=n) * 3,
        "A": rng.normal(size=(1, n)),
        "b": np.array([1.0]),
        "G": np.vstack([-np.eye(n), np.ones((1, n))]),  # x >= 0 and sum(x) <= 2
        "h": np.concatenate([np.zeros(n), [2.0]]),
    }


def _qp_solution(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SLSQP for the active set, then the exact KKT point of the equality-constrained QP on that set."""
    Q, c, A, b, G, h = (p[k] for k in ("Q", "c", "A", "b", "G", "h"))
    n = c.size
    x0 = _slsqp(
        lambda x: 0.5 * x @ Q @ x + c @ x,
        np.full(n, 0.2),
        jac=lambda x: Q @ x + c,
        constraints=[
            {"type": "eq", "fun": lambda x: A @ x - b, "jac": lambda x: A},
            {"type": "ineq", "fun": lambda x: h - G @ x, "jac": lambda x: -G},
        ],
    )
    active = np.abs(G @ x0 - h) < 1e-7
    Ga = G[active]
    K = np.block(
        [
            [Q, A.T, Ga.T],
            [A, np.zeros((1, 1)), np.zeros((1, Ga.shape[0]))],
            [Ga, np.zeros((Ga.shape[0], 1)), np.zeros((Ga.shape[0], Ga.shape[0]))],
        ]
    )
    sol = np.linalg.solve(K, np.concatenate([-c, b, h[active]]))
    x, nu = sol[:n], sol[n : n + 1]
    lam = np.zeros(G.shape[0])
    lam[active] = sol[n + 1 :]
    assert np.allclose(x, x0, atol=1e-6)
    assert np.all(lam[active] > 1e-6)
    assert np.all(G[~active] @ x < h[~active] - 1e-6)
    return x, nu, lam, K


def test_kkt_optimality_qp() -> None:
    p = _qp()
    x, nu, lam, K = _qp_solution(p)
    assert 0 < np.sum(lam > 0) < lam.size  # some inequalities active, some not
    kkt = kkt_optimality(
        lambda x, Q, c: 0.5 * x @ Q @ x + c @ x,
        eq_constraints=lambda x, A, b: A @ x - b,
        ineq_constraints=lambda x, G, h: G @ x - h,
    )
    assert isinstance(kkt, KKTCondition)
    assert isinstance(kkt, OptimalityCondition)
    assert kkt.kind == "root"
    theta = ((_t(p["Q"]), _t(p["c"])), (_t(p["A"]), _t(p["b"])), (_t(p["G"]), _t(p["h"])))
    z = (_t(x), _t(nu), _t(lam))
    stationarity, feasibility, slackness = kkt(z, *theta)
    assert feasibility is not None
    assert slackness is not None
    for part in (stationarity, feasibility, slackness):
        assert float(part.abs().max()) < 1e-12
    assert kkt.is_satisfied(z, *theta, tol=1e-10)
    assert not kkt.is_satisfied((_t(x), _t(nu), -_t(lam) - 1), *theta)

    # the flattened form, and the implicit derivative dx/dc from its Jacobians against the active-set system
    n, m = x.size, lam.size
    flat = kkt.flatten(n, n_eq=1, n_ineq=m)
    assert isinstance(flat, RootMapping)
    z_flat = torch.cat(z)
    assert float(flat(z_flat, *theta).abs().max()) < 1e-12

    def residual(zf: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat(zf, (_t(p["Q"]), c), theta[1], theta[2])

    jac_z, jac_c = torch.autograd.functional.jacobian(residual, (z_flat, _t(p["c"])))
    dz_dc = -torch.linalg.solve(jac_z, jac_c)
    expected = -np.linalg.inv(K)[:n, :n]  # d/dc of K^{-1} (-c, b, h_active)
    assert_close(dz_dc[:n], expected, atol=1e-10, rtol=1e-10)


def test_kkt_tuple_form_through_custom_root() -> None:
    # min 0.5 ||x - t||^2 s.t. sum(x) = 1, x >= 0 is the simplex projection; its Jacobian on the support S is
    # I - 1 1^T / |S| (zero rows and columns off S)
    import sciml_bilevel._implicit as implicit

    kkt = kkt_optimality(
        lambda x, t: 0.5 * ((x - t) ** 2).sum(),
        eq_constraints=lambda x: x.sum(dim=0, keepdim=True) - 1,
        ineq_constraints=lambda x: -x,
    )

    @implicit.custom_root(kkt, solve="dense")
    def solver(init: Any, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = project_simplex(t)
        support = x > 0
        nu = (t - x)[support][:1]  # stationarity on the support: x - t + nu = 0
        lam = torch.where(support, torch.zeros_like(x), nu - t)  # off the support: -t + nu - lam = 0
        return x, nu, lam

    t = torch.tensor([0.5, 0.3, -0.4, 0.1], dtype=F64, requires_grad=True)
    init = (torch.zeros(4, dtype=F64), torch.zeros(1, dtype=F64), torch.zeros(4, dtype=F64))
    x, nu, lam = solver(init, t)
    assert kkt.is_satisfied((x.detach(), nu.detach(), lam.detach()), t.detach(), tol=1e-12)
    jac = torch.stack([torch.autograd.grad(x[i], t, retain_graph=True)[0] for i in range(4)])
    support = np.array([1.0, 1.0, 0.0, 1.0])
    expected = (np.eye(4) - np.outer(support, support) / support.sum()) * np.outer(support, support)
    assert_close(jac, expected, atol=1e-12, rtol=0)


def _entropy_objective(z: torch.Tensor, c: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return (c * z).sum() + tau * (z * torch.log(z)).sum()


def test_mirror_descent_entropy_on_simplex() -> None:
    rng = np.random.default_rng(10)
    c, tau = rng.normal(size=6), 0.5
    expected = np.exp(-c / tau) / np.exp(-c / tau).sum()  # argmin <c, z> + tau sum z log z over the simplex
    args = (_t(c), torch.tensor(tau, dtype=F64))
    T = mirror_descent_fixed_point(_entropy_objective, "entropy", step_size=0.5)
    assert isinstance(T, FixedPointMapping)
    assert isinstance(T, OptimalityCondition)
    assert_close(T(_t(expected), *args), expected, atol=1e-14, rtol=0)
    # iterating the map from the uniform point converges to the closed form (the fixed point attracts)
    z = torch.full((6,), 1 / 6, dtype=F64)
    for _ in range(200):
        z = T(z, *args)
    assert_close(z, expected, atol=1e-12, rtol=0)
    # a custom mirror with the same geometry: grad phi = log z + 1, its inverse exp(y - 1), KL projection = normalize
    custom = mirror_descent_fixed_point(
        _entropy_objective, (lambda z: torch.log(z) + 1, lambda y: torch.exp(y - 1), lambda z: z / z.sum()), 0.5
    )
    assert_close(custom(_t(expected), *args), expected, atol=1e-14, rtol=0)
    assert float(custom.residual(torch.full((6,), 1 / 6, dtype=F64), *args).norm()) > 1e-3
    # implicit derivative dz*/dc = -(diag z - z z^T) / tau (the softmax Jacobian)
    jac_z, jac_c = torch.autograd.functional.jacobian(lambda zz, cc: T(zz, cc, args[1]), (_t(expected), _t(c)))
    derivative = torch.linalg.solve(torch.eye(6, dtype=F64) - jac_z, jac_c)
    assert_close(derivative, -(np.diag(expected) - np.outer(expected, expected)) / tau, atol=1e-12, rtol=1e-10)


def test_mappings_compose_with_torch_func() -> None:
    # inside torch.func transforms the gradients are taken with torch.func.grad
    rng = np.random.default_rng(11)
    X, y = _t(rng.normal(size=(10, 3))), _t(rng.normal(size=10))
    F = gradient_stationarity(lambda w, lam: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * lam * (w**2).sum())
    w = _t(rng.normal(size=3))
    jac = torch.func.jacrev(lambda ww: F(ww, torch.tensor(0.3, dtype=F64)))(w)
    assert_close(jac, (X.T @ X).numpy() + 0.3 * np.eye(3), atol=1e-12, rtol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------------------


def test_bad_input() -> None:
    objective = lambda z: (z**2).sum()  # noqa: E731
    for make in (
        lambda: gradient_stationarity(3),  # pyright: ignore[reportArgumentType]
        lambda: prox_gradient_fixed_point("f", prox_l1),  # pyright: ignore[reportArgumentType]
        lambda: prox_gradient_fixed_point(objective, None),  # pyright: ignore[reportArgumentType]
        lambda: projected_gradient_fixed_point(objective, project_simplex, step_size=-1.0),
        lambda: prox_gradient_fixed_point(objective, prox_l1, n_prox_args=-1),
        lambda: mirror_descent_fixed_point(None),  # pyright: ignore[reportArgumentType]
        lambda: mirror_descent_fixed_point(objective, "bregman"),
        lambda: mirror_descent_fixed_point(objective, (torch.log,)),
        lambda: mirror_descent_fixed_point(objective, (torch.log, 3)),  # pyright: ignore[reportArgumentType]
        lambda: kkt_optimality(objective, eq_constraints=1),  # pyright: ignore[reportArgumentType]
        lambda: kkt_optimality(objective).flatten(2, n_eq=1),
        lambda: prox_l1(torch.ones(2), -1.0),
        lambda: prox_ridge(torch.ones(2), 1.0, float("nan")),
        lambda: prox_box(torch.ones(2), (1.0, 0.0)),
        lambda: prox_elastic_net(torch.ones(2), 1.0),  # pyright: ignore[reportArgumentType]
        lambda: prox_group_lasso(torch.tensor(1.0), 1.0),
        lambda: project_simplex(torch.ones(3), 0.0),
        lambda: project_l2_ball(torch.ones(0), 1.0),
        lambda: project_affine(torch.ones(3), (torch.ones(2, 4), torch.ones(2))),
        lambda: project_hyperplane(torch.ones(3), (torch.ones(2), 1.0)),
        lambda: gradient_stationarity(lambda z: z)(torch.ones(2)),  # not a scalar
        lambda: prox_gradient_fixed_point(objective, prox_l1)(torch.ones(2)),  # theta lacks the prox parameter
        lambda: kkt_optimality(objective)(torch.ones(2)),  # pyright: ignore[reportArgumentType]
        lambda: kkt_optimality(objective)((torch.ones(2), torch.ones(1), None)),
    ):
        with pytest.raises(SciMLInputError):
            make()
