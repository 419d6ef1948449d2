"""Tests of sketch-and-project, AdaSketch-Newton and the constrained test problems.

Oracles: dense solves (``torch.linalg.solve``), the closed-form expected rate of randomized Kaczmarz, the
analytic optima and multipliers of HS6/HS7 (cross-checked against scipy's SLSQP), autograd derivatives of an
augmented Lagrangian written independently here, and the dense KKT solution of the random QPs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import sciml_optim
import torch
from sciml_optim import adasketch_newton, sketch_and_project
from sciml_optim.testing import HS6, HS7, EqualityQP
from sciml_protocols import ConvergenceWarning, FunctionOperator, SciMLInputError, Solution

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(n: int, seed: int) -> torch.Tensor:
    m = torch.randn(n, n, generator=_gen(seed), dtype=F64)
    return m @ m.T / n + torch.eye(n, dtype=F64)


def _kkt_matrix(problem: EqualityQP) -> torch.Tensor:
    n, m = problem.n, problem.m
    k = torch.zeros(n + m, n + m, dtype=F64)
    k[:n, :n] = problem.Q
    k[:n, n:] = problem.A.T
    k[n:, :n] = problem.A
    return k


def _log_slope(history: torch.Tensor) -> float:
    values = np.log(history.numpy())
    return float(np.polyfit(np.arange(values.size), values, 1)[0])


def test_public_names() -> None:
    assert "adasketch_newton" in sciml_optim.__all__
    assert "sketch_and_project" in sciml_optim.__all__
    assert sciml_optim.adasketch_newton is adasketch_newton
    assert {"HS6", "HS7", "EqualityQP"} <= set(sciml_optim.testing.__all__)


# ------------------------------------------------------------------------------------------------------------------
# test problems
# ------------------------------------------------------------------------------------------------------------------


def _stationarity(problem: HS6 | HS7 | EqualityQP, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    point = x.clone().requires_grad_(True)
    lagrangian = problem.objective(point) + lam @ problem.constraints(point)
    (grad,) = torch.autograd.grad(lagrangian, point)
    return grad


@pytest.mark.parametrize("problem", [HS6(), HS7(), EqualityQP(7, 3, seed=2)], ids=["HS6", "HS7", "QP"])
def test_problem_optimality_conditions(problem: HS6 | HS7 | EqualityQP) -> None:
    assert torch.allclose(problem.constraints(problem.x_star), torch.zeros(problem.m, dtype=F64), atol=1e-12)
    assert math.isclose(float(problem.objective(problem.x_star)), problem.f_star, abs_tol=1e-12)
    grad = _stationarity(problem, problem.x_star, problem.lambda_star)
    assert torch.allclose(grad, torch.zeros(problem.n, dtype=F64), atol=1e-12)


def test_hs_lambda_star_closed_forms() -> None:
    assert float(HS6().lambda_star[0]) == 0.0
    assert math.isclose(float(HS7().lambda_star[0]), 1.0 / (2.0 * math.sqrt(3.0)), rel_tol=1e-15)
    assert HS6().x0.tolist() == [-1.2, 1.0]
    assert HS7().x0.tolist() == [2.0, 2.0]


@pytest.mark.parametrize("problem", [HS6(), HS7()], ids=["HS6", "HS7"])
def test_hs_optimum_matches_scipy_slsqp(problem: HS6 | HS7) -> None:
    import scipy.optimize as scipy_optimize

    def fun(v: np.ndarray) -> float:
        return float(problem.objective(torch.as_tensor(v, dtype=F64)))

    def con(v: np.ndarray) -> np.ndarray:
        return problem.constraints(torch.as_tensor(v, dtype=F64)).numpy()

    result = scipy_optimize.minimize(
        fun, problem.x0.numpy(), method="SLSQP", constraints=[{"type": "eq", "fun": con}], tol=1e-12
    )
    assert np.allclose(result.x, problem.x_star.numpy(), atol=1e-5)
    assert abs(result.fun - problem.f_star) < 1e-8


def test_equality_qp_matches_numpy_and_is_seeded() -> None:
    p = EqualityQP(6, 2, seed=5)
    q = EqualityQP(6, 2, seed=5)
    assert torch.equal(p.Q, q.Q)
    assert torch.equal(p.A, q.A)
    kkt = _kkt_matrix(p).numpy()
    rhs = np.concatenate([-p.q.numpy(), p.b.numpy()])
    solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    assert np.allclose(solution[:6], p.x_star.numpy(), atol=1e-12)
    assert np.allclose(solution[6:], p.lambda_star.numpy(), atol=1e-12)
    assert bool((torch.linalg.eigvalsh(p.Q) >= 1.0 - 1e-12).all())
    assert EqualityQP(4, 1, seed=0, dtype=torch.float32).x_star.dtype == torch.float32


def test_problem_bad_input() -> None:
    with pytest.raises(SciMLInputError, match="'m'"):
        EqualityQP(3, 4)
    with pytest.raises(SciMLInputError, match="'n'"):
        EqualityQP(0, 0)
    with pytest.raises(SciMLInputError, match="'dtype'"):
        HS6(dtype=torch.int64)
    with pytest.raises(SciMLInputError, match="'x'"):
        HS7().objective(torch.zeros(3, dtype=F64))


# ------------------------------------------------------------------------------------------------------------------
# sketch-and-project
# ------------------------------------------------------------------------------------------------------------------


def test_sketch_and_project_spd_linear_convergence() -> None:
    a = _spd(20, seed=1)
    b = torch.randn(20, generator=_gen(2), dtype=F64)
    sol = sketch_and_project(a, b, sketch="gaussian", sketch_size=8, tol=1e-11, generator=_gen(3))
    assert sol.converged
    assert sol.stats["reason"] is None
    assert sol.history is not None
    assert sol.history.shape == (sol.n_iter + 1,)
    assert _log_slope(sol.history) < -0.01
    exact = torch.linalg.solve(a, b)
    assert torch.linalg.vector_norm(sol.value - exact) <= 1e-9 * torch.linalg.vector_norm(exact)
    assert sol.residual == pytest.approx(float(torch.linalg.vector_norm(a @ sol.value - b)))


@pytest.mark.parametrize("sketch", ["gaussian", "block_kaczmarz", "kaczmarz"])
def test_sketch_and_project_indefinite_kkt(sketch: str) -> None:
    problem = EqualityQP(8, 3, seed=4)
    k = _kkt_matrix(problem)
    assert float(torch.linalg.eigvalsh(k)[0]) < 0  # indefinite
    rhs = torch.cat([-problem.q, problem.b])
    size = None if sketch == "kaczmarz" else 5
    sol = sketch_and_project(k, rhs, sketch=sketch, sketch_size=size, tol=1e-10, max_iter=50_000, generator=_gen(0))
    assert sol.converged
    assert sol.history is not None
    assert _log_slope(sol.history) < 0
    assert torch.allclose(sol.value, torch.linalg.solve(k, rhs), atol=1e-8)
    assert torch.allclose(sol.value[:8], problem.x_star, atol=1e-8)


def test_kaczmarz_expected_rate_matches_theory() -> None:
    # Randomized Kaczmarz with rows drawn by squared norm: E||x_k - x*||^2 <= (1 - s_min^2 / ||A||_F^2)^k ||x*||^2.
    a = torch.tensor(
        [[3.0, 1.0, 0.0, 0.5], [1.0, -2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 2.0], [0.5, 0.0, 2.0, -1.0]], dtype=F64
    )
    x_star = torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=F64)
    b = a @ x_star
    rate = 1.0 - float(torch.linalg.svdvals(a)[-1]) ** 2 / float((a * a).sum())
    steps, runs = 40, 200
    generator = _gen(11)
    errors = [
        float(((sketch_and_project(a, b, sketch="kaczmarz", max_iter=steps, tol=1e-300, generator=generator,
                                   record_history=False).value - x_star) ** 2).sum())
        for _ in range(runs)
    ]  # fmt: skip
    bound = rate**steps * float((x_star**2).sum())
    assert float(np.mean(errors)) <= 1.5 * bound  # a Monte-Carlo mean of 200 runs, with slack
    assert float(np.mean(errors)) > 0.0


def test_sketch_and_project_matrix_free_matches_dense() -> None:
    a = _spd(9, seed=6) + 0.3 * torch.randn(9, 9, generator=_gen(7), dtype=F64)
    b = torch.randn(9, generator=_gen(8), dtype=F64)
    operator = FunctionOperator(lambda v: v @ a.T, (9, 9), dtype=F64, device="cpu", rmatvec=lambda v: v @ a)
    for sketch in ("gaussian", "block_kaczmarz"):
        dense = sketch_and_project(a, b, sketch=sketch, sketch_size=3, max_iter=40, generator=_gen(1))
        free = sketch_and_project(operator, b, sketch=sketch, sketch_size=3, max_iter=40, generator=_gen(1))
        assert torch.allclose(dense.value, free.value, atol=1e-12)
    # Uniform row sampling (row norms are unknown without the matrix), on a well-conditioned system.
    well = 4.0 * torch.eye(9, dtype=F64) + 0.3 * torch.randn(9, 9, generator=_gen(9), dtype=F64)
    operator = FunctionOperator(lambda v: v @ well.T, (9, 9), dtype=F64, device="cpu", rmatvec=lambda v: v @ well)
    uniform = sketch_and_project(operator, b, sketch="kaczmarz", tol=1e-10, max_iter=5_000, generator=_gen(2))
    assert uniform.converged
    assert torch.allclose(uniform.value, torch.linalg.solve(well, b), atol=1e-8)


def test_sketch_and_project_cap_and_zero_rhs() -> None:
    a = _spd(10, seed=0)
    b = torch.ones(10, dtype=F64)
    sol = sketch_and_project(a, b, sketch_size=1, max_iter=3, generator=_gen(0))
    assert not sol.converged
    assert sol.n_iter == 3
    assert "max_iter" in sol.stats["reason"]
    zero = sketch_and_project(a, torch.zeros(10, dtype=F64))
    assert zero.converged
    assert zero.n_iter == 0
    assert torch.equal(zero.value, torch.zeros(10, dtype=F64))
    start = torch.linalg.solve(a, b)
    warm = sketch_and_project(a, b, start, tol=1e-8)
    assert warm.converged
    assert warm.n_iter == 0


def test_sketch_and_project_bad_input() -> None:
    a = _spd(4, seed=0)
    b = torch.ones(4, dtype=F64)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("'A'", lambda: sketch_and_project(torch.ones(3, 4, dtype=F64), b)),
        ("'A'", lambda: sketch_and_project(FunctionOperator(lambda v: v, (4, 4), dtype=F64, device="cpu"), b)),
        ("'A'", lambda: sketch_and_project(a.clone().fill_(float("nan")), b)),
        ("'b'", lambda: sketch_and_project(a, torch.ones(3, dtype=F64))),
        ("'b'", lambda: sketch_and_project(a, torch.ones(4, dtype=torch.float32))),
        ("'b'", lambda: sketch_and_project(a, torch.tensor([1.0, float("inf"), 0.0, 0.0], dtype=F64))),
        ("'x0'", lambda: sketch_and_project(a, b, torch.ones(5, dtype=F64))),
        ("'sketch'", lambda: sketch_and_project(a, b, sketch="srht")),  # pyright: ignore[reportArgumentType]
        ("'sketch_size'", lambda: sketch_and_project(a, b, sketch_size=5)),
        ("'sketch_size'", lambda: sketch_and_project(a, b, sketch="kaczmarz", sketch_size=2)),
        ("'sketch_size'", lambda: sketch_and_project(a, b, sketch_size=0)),
        ("'tol'", lambda: sketch_and_project(a, b, tol=0.0)),
        ("'max_iter'", lambda: sketch_and_project(a, b, max_iter=0)),
        ("'generator'", lambda: sketch_and_project(a, b, generator=0)),  # pyright: ignore[reportArgumentType]
    ]
    for name, call in cases:
        with pytest.raises(SciMLInputError, match=name):
            call()


# ------------------------------------------------------------------------------------------------------------------
# AdaSketch-Newton
# ------------------------------------------------------------------------------------------------------------------


def _merit(problem: HS6 | HS7 | EqualityQP, x: torch.Tensor, lam: torch.Tensor, mu: float, nu: float) -> torch.Tensor:
    """The exact augmented Lagrangian, written here independently (differentiable in x and lam)."""
    value_c = problem.constraints(x)
    lagrangian = problem.objective(x) + lam @ value_c
    (grad_x,) = torch.autograd.grad(lagrangian, x, create_graph=True)
    return lagrangian + 0.5 * mu * (value_c @ value_c) + 0.5 * nu * (grad_x @ grad_x)


@pytest.fixture(scope="module")
def hs6_run() -> Solution[tuple[torch.Tensor, torch.Tensor]]:
    p = HS6()
    return adasketch_newton(p.objective, p.constraints, p.x0, sketch="gaussian", sketch_size=2, generator=_gen(0))


@pytest.fixture(scope="module")
def hs7_run() -> Solution[tuple[torch.Tensor, torch.Tensor]]:
    p = HS7()
    return adasketch_newton(p.objective, p.constraints, p.x0, sketch="block_kaczmarz", sketch_size=2, generator=_gen(0))


@pytest.mark.parametrize("name", ["hs6_run", "hs7_run"])
def test_adasketch_reaches_known_optimum(name: str, request: pytest.FixtureRequest) -> None:
    problem = HS6() if name == "hs6_run" else HS7()
    sol = request.getfixturevalue(name)
    x, lam = sol.value
    assert sol.converged
    assert sol.stats["reason"] is None
    assert sol.residual <= 1e-8
    assert sol.residual == float(sol.history[-1])
    assert torch.allclose(x, problem.x_star, atol=1e-6)
    assert torch.allclose(lam, problem.lambda_star, atol=1e-6)
    assert abs(float(problem.objective(x)) - problem.f_star) < 1e-8
    assert abs(sol.stats["f"] - problem.f_star) < 1e-8
    assert len(sol.stats["step_sizes"]) == sol.n_iter == len(sol.stats["sketch_iterations"])
    assert sol.stats["total_sketch_iterations"] == sum(sol.stats["sketch_iterations"]) > 0


@pytest.mark.parametrize("name", ["hs6_run", "hs7_run"])
def test_adasketch_local_fast_convergence(name: str, request: pytest.FixtureRequest) -> None:
    sol = request.getfixturevalue(name)
    assert sol.stats["step_sizes"][-3:] == [1.0, 1.0, 1.0]  # unit steps accepted near the solution
    kkt = sol.history.tolist()
    ratios = [kkt[i + 1] / kkt[i] for i in range(len(kkt) - 3, len(kkt) - 1)]
    assert ratios[0] < 0.1
    assert ratios[1] < ratios[0]
    assert ratios[-1] < 1e-3


@pytest.mark.parametrize("name", ["hs6_run", "hs7_run"])
def test_adasketch_merit_decreases_with_armijo(name: str, request: pytest.FixtureRequest) -> None:
    problem = HS6() if name == "hs6_run" else HS7()
    sol = request.getfixturevalue(name)
    xs, lams = sol.stats["x_history"], sol.stats["lam_history"]
    beta = 0.1
    for k in range(sol.n_iter):
        mu, nu, step = sol.stats["mu"][k], sol.stats["nu"][k], sol.stats["step_sizes"][k]
        x = xs[k].clone().requires_grad_(True)
        lam = lams[k].clone().requires_grad_(True)
        before_graph = _merit(problem, x, lam, mu, nu)
        grad_x, grad_lam = torch.autograd.grad(before_graph, (x, lam))
        before = before_graph.detach()
        after = _merit(problem, xs[k + 1].clone().requires_grad_(True), lams[k + 1], mu, nu).detach()
        direction_x = (xs[k + 1] - xs[k]) / step
        direction_lam = (lams[k + 1] - lams[k]) / step
        slope = float(grad_x @ direction_x + grad_lam @ direction_lam)
        assert slope < 0  # a descent direction of the exact augmented Lagrangian
        assert float(after) <= float(before) + step * beta * slope + 1e-12
        assert float(after) < float(before)
        assert sol.stats["merit_before"][k] == pytest.approx(float(before), rel=1e-9, abs=1e-12)


def test_adasketch_penalties_monotone(hs6_run: Solution[tuple[torch.Tensor, torch.Tensor]]) -> None:
    mus, nus = hs6_run.stats["mu"], hs6_run.stats["nu"]
    assert all(b >= a for a, b in itertools.pairwise(mus))
    assert all(b <= a for a, b in itertools.pairwise(nus))


@pytest.mark.parametrize("sketch", ["gaussian", "kaczmarz"])
def test_adasketch_quadratic_program(sketch: str) -> None:
    problem = EqualityQP(10, 4, seed=3)
    assert float(torch.linalg.vector_norm(problem.constraints(problem.x0))) > 0.1  # infeasible start
    sol = adasketch_newton(problem.objective, problem.constraints, problem.x0, sketch=sketch, generator=_gen(1))
    x, lam = sol.value
    assert sol.converged
    assert sol.n_iter <= 3
    assert torch.allclose(x, problem.x_star, atol=1e-8)
    assert torch.allclose(lam, problem.lambda_star, atol=1e-8)
    assert abs(float(problem.objective(x)) - problem.f_star) < 1e-8


def test_adasketch_infeasible_start_and_superlinear() -> None:
    problem = HS7()
    x0 = torch.tensor([-1.5, -0.5], dtype=F64)
    assert abs(float(problem.constraints(x0)[0])) > 1.0
    sol = adasketch_newton(
        problem.objective, problem.constraints, x0, lam0=torch.zeros(1, dtype=F64), superlinear=True,
        sketch_size=3, generator=_gen(5), tol=1e-10,
    )  # fmt: skip
    assert sol.converged
    assert torch.allclose(sol.value[0], problem.x_star, atol=1e-8)
    assert torch.allclose(sol.value[1], problem.lambda_star, atol=1e-8)


def test_adasketch_accepts_list_start_and_float64_default() -> None:
    problem = HS7()
    sol = adasketch_newton(problem.objective, problem.constraints, [2.0, 2.0], sketch_size=3, generator=_gen(0))
    assert sol.value[0].dtype == F64
    assert sol.converged


def test_adasketch_caps_report_honestly() -> None:
    problem = HS6()
    capped = adasketch_newton(problem.objective, problem.constraints, problem.x0, max_iter=2, generator=_gen(0))
    assert not capped.converged
    assert capped.n_iter == 2
    assert "max_iter" in capped.stats["reason"]
    assert capped.residual == float(capped.history[-1]) > 1e-8
    starved = adasketch_newton(
        problem.objective, problem.constraints, problem.x0, sketch="kaczmarz", max_sketch_iter=5, generator=_gen(0)
    )
    assert not starved.converged
    assert starved.n_iter == 0
    assert "max_sketch_iter" in starved.stats["reason"]
    with pytest.warns(ConvergenceWarning):
        capped.check()


def test_adasketch_reports_licq_failure() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    def c(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[0] - 1.0, 2.0 * x[0] - 2.0])

    sol = adasketch_newton(f, c, torch.zeros(3, dtype=F64), lam0=torch.zeros(2, dtype=F64))
    assert not sol.converged
    assert "LICQ" in sol.stats["reason"]


def test_adasketch_progress_bar() -> None:
    import tqdm  # noqa: F401  (a test dependency: fail loudly if missing)

    problem = EqualityQP(4, 2, seed=0)
    sol = adasketch_newton(problem.objective, problem.constraints, problem.x0, progress=True, generator=_gen(0))
    assert sol.converged


def test_adasketch_bad_input() -> None:
    p = HS6()
    x0 = p.x0

    def call(**kwargs: object) -> object:
        args = {"f": p.objective, "c": p.constraints, "x0": x0}
        args.update(kwargs)
        return adasketch_newton(**args)  # pyright: ignore[reportArgumentType]

    cases: list[tuple[str, dict[str, object]]] = [
        ("'f'", {"f": 3}),
        ("'f'", {"f": lambda x: x}),
        ("'f'", {"f": lambda x: x.sum() * float("nan")}),
        ("'c'", {"c": lambda x: x.reshape(1, 2)}),
        ("'c'", {"c": lambda x: torch.cat([x, x])}),
        ("'c'", {"c": lambda x: (x * float("inf"))[:1]}),
        ("'c'", {"c": lambda x: x[:1].float()}),
        ("'x0'", {"x0": torch.tensor([float("nan"), 1.0], dtype=F64)}),
        ("'x0'", {"x0": torch.zeros(1, 2, dtype=F64)}),
        ("'x0'", {"x0": torch.zeros(0, dtype=F64)}),
        ("'x0'", {"x0": "abc"}),
        ("'lam0'", {"lam0": torch.zeros(2, dtype=F64)}),
        ("'lam0'", {"lam0": torch.tensor([float("nan")], dtype=F64)}),
        ("'tol'", {"tol": 0.0}),
        ("'tol'", {"tol": -1.0}),
        ("'max_iter'", {"max_iter": 0}),
        ("'max_sketch_iter'", {"max_sketch_iter": -5}),
        ("'max_backtracks'", {"max_backtracks": 1.5}),
        ("'mu'", {"mu": 0.0}),
        ("'nu'", {"nu": -1.0}),
        ("'beta'", {"beta": 0.6}),
        ("'penalty_growth'", {"penalty_growth": 1.0}),
        ("'delta_min'", {"delta_min": 1.0}),
        ("'hessian'", {"hessian": "bfgs"}),
        ("'sketch'", {"sketch": "count"}),
        ("'sketch_size'", {"sketch_size": 4}),
        ("'generator'", {"generator": 1}),
        ("'progress'", {"progress": 1}),
    ]
    for name, kwargs in cases:
        with pytest.raises(SciMLInputError, match=name):
            call(**kwargs)


@pytest.mark.gpu
def test_cuda_solvers_match_cpu_oracles() -> None:
    problem = HS7(device="cuda")
    sol = adasketch_newton(problem.objective, problem.constraints, problem.x0, sketch_size=3, generator=_gen(0))
    assert sol.converged
    assert sol.value[0].device.type == "cuda"
    assert torch.allclose(sol.value[0].cpu(), HS7().x_star, atol=1e-8)
    qp = EqualityQP(8, 3, seed=4)
    k = _kkt_matrix(qp).to("cuda")
    rhs = torch.cat([-qp.q, qp.b]).to("cuda")
    for sketch in ("gaussian", "block_kaczmarz", "kaczmarz"):
        size = None if sketch == "kaczmarz" else 5
        lin = sketch_and_project(k, rhs, sketch=sketch, sketch_size=size, tol=1e-10, max_iter=50_000, generator=_gen(0))
        assert lin.converged
        assert torch.allclose(lin.value[:8].cpu(), qp.x_star, atol=1e-8)


def test_adasketch_float32() -> None:
    problem = HS7(dtype=torch.float32)
    sol = adasketch_newton(
        problem.objective, problem.constraints, problem.x0, tol=1e-4, sketch_size=2, generator=_gen(0)
    )
    assert sol.converged
    assert sol.value[0].dtype == torch.float32
    assert torch.allclose(sol.value[0], problem.x_star, atol=1e-4)
