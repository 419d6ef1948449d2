"""Tests of the hypergradient estimators against closed forms and finite differences."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from sciml_bilevel._hypergrad import hypergradient
from sciml_bilevel.problems import HyperCleaning, LogisticRegularization, QuadraticBilevel, RidgeHyperparameter
from sciml_protocols import SciMLInputError

F64 = torch.float64


def _error(sol: Any, exact: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(sol.value[0] - exact))


@pytest.mark.parametrize("method", ["implicit_cg", "implicit_gmres", "implicit_neumann"])
def test_implicit_matches_quadratic_closed_form(method: str) -> None:
    problem = QuadraticBilevel(dim=6, dim_lower=8, rho=0.1, seed=1)
    x = torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=F64)
    sol = hypergradient(problem, x, problem.y_star(x), method=method, inner_steps=0, tol=1e-13)  # pyright: ignore[reportArgumentType]
    assert sol.converged
    assert _error(sol, problem.hypergradient(x)) < 1e-10
    assert torch.equal(sol.value[1], problem.y_star(x))


@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("method", ["implicit_cg", "implicit_gmres", "implicit_neumann"])
def test_implicit_matches_ridge_closed_form(method: str, per_feature: bool) -> None:
    problem = RidgeHyperparameter(n_train=40, n_val=30, dim=10, seed=3, per_feature=per_feature)
    x = torch.full((problem.dim_upper,), -0.5, dtype=F64)
    exact = problem.hypergradient(x)
    # Neumann needs alpha < 2 / L; L <= ||X||^2 / n + max(lambda)
    lipschitz = float(torch.linalg.matrix_norm(problem.X_train, ord=2) ** 2 / problem.n_lower + torch.exp(x).max())
    sol = hypergradient(
        problem,
        x,
        problem.y_star(x),
        method=method,  # pyright: ignore[reportArgumentType]
        inner_steps=0,
        tol=1e-13,
        neumann_terms=2000,
        neumann_alpha=1.0 / lipschitz,
    )
    assert sol.converged
    assert _error(sol, exact) < 1e-8 * max(1.0, float(exact.norm()))


def test_implicit_with_inner_gradient_descent() -> None:
    problem = RidgeHyperparameter(n_train=40, n_val=30, dim=10, seed=3)
    x = torch.tensor([0.3], dtype=F64)
    sol = hypergradient(problem, x, method="implicit_cg", inner_steps=400, inner_lr=0.2, tol=1e-12)
    assert _error(sol, problem.hypergradient(x)) < 1e-8
    assert sol.stats["inner_grad_norm"] < 1e-9
    assert float(torch.linalg.vector_norm(sol.value[1] - problem.y_star(x))) < 1e-8


def test_unrolled_matches_its_closed_form_and_converges_to_implicit() -> None:
    # With y_0 = 0 and step eta on g = |y - Ax|^2 / 2: y_T = c A x with c = 1 - (1 - eta)^T, so the unrolled
    # hypergradient is c A^T (c A x - b) + rho x exactly.
    problem = QuadraticBilevel(dim=5, rho=0.2, seed=2)
    x = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=F64)
    eta = 0.3
    exact = problem.hypergradient(x)
    errors = []
    for steps in (2, 5, 10, 20, 40, 80):
        c = 1 - (1 - eta) ** steps
        expected = c * problem.A.T @ (c * problem.A @ x - problem.b) + problem.rho * x
        sol = hypergradient(problem, x, method="unrolled", inner_steps=steps, inner_lr=eta)
        torch.testing.assert_close(sol.value[0], expected, rtol=1e-12, atol=1e-12)
        assert sol.n_iter == steps
        errors.append(_error(sol, exact))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-10


def test_truncated_between_unrolled_and_nothing() -> None:
    problem = QuadraticBilevel(dim=5, rho=0.2, seed=2)
    x = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=F64)
    eta, steps = 0.3, 30
    exact = problem.hypergradient(x)
    y_t = (1 - (1 - eta) ** steps) * problem.A @ x
    unrolled = _error(hypergradient(problem, x, method="unrolled", inner_steps=steps, inner_lr=eta), exact)
    errors = []
    for k in (1, 3, 10, 30):
        # Only the last k steps depend on x: y_T = (1 - eta)^k y_{T-k} + c_k A x, c_k = 1 - (1 - eta)^k
        c_k = 1 - (1 - eta) ** k
        expected = c_k * problem.A.T @ (y_t - problem.b) + problem.rho * x
        sol = hypergradient(problem, x, method="truncated", inner_steps=steps, inner_lr=eta, truncate=k)
        torch.testing.assert_close(sol.value[0], expected, rtol=1e-12, atol=1e-12)
        errors.append(_error(sol, exact))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] == pytest.approx(unrolled, rel=1e-9)  # k = T is full unrolling
    assert errors[0] > unrolled


def test_saved_memory_independent_of_inner_steps_for_implicit() -> None:
    problem = RidgeHyperparameter(n_train=30, n_val=20, dim=8, seed=0)
    x = torch.zeros(1, dtype=F64)

    def saved(method: str, steps: int, **kw: Any) -> int:
        sol = hypergradient(problem, x, method=method, inner_steps=steps, inner_lr=0.1, **kw)  # pyright: ignore[reportArgumentType]
        return int(sol.stats["saved_tensor_bytes"])

    implicit = [saved("implicit_cg", s) for s in (10, 40, 160)]
    assert implicit[0] == implicit[1] == implicit[2] > 0
    unrolled = [saved("unrolled", s) for s in (10, 40, 160)]
    assert unrolled[0] < unrolled[1] < unrolled[2]
    assert unrolled[2] > 10 * unrolled[0]  # grows linearly in the number of steps
    assert unrolled[0] > implicit[0]
    truncated = [saved("truncated", s, truncate=5) for s in (10, 40, 160)]
    assert truncated[0] == truncated[1] == truncated[2] < unrolled[0]


class _SquareNoForwardAD(torch.autograd.Function):
    """t -> t^2 with a differentiable backward and no forward-mode rule (no jvp)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(t)
        return t * t

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (t,) = ctx.saved_tensors
        return 2 * t * grad_out


def test_jvp_free_and_pair_of_callables() -> None:
    # f = |y - b|^2 / 2, g = sum((y - x)^2) / 2 + |y|^2 / 2 written with a Function that has no jvp: y* = x / 2
    b = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def upper(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - b) ** 2).sum()

    def lower(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * _SquareNoForwardAD.apply(y - x).sum() + 0.5 * (y @ y)  # pyright: ignore[reportOptionalOperand]

    x = torch.tensor([0.2, 0.4, -1.0], dtype=F64)
    exact = 0.5 * (x / 2 - b)  # d/dx |x/2 - b|^2 / 2
    for method in ("implicit_cg", "implicit_gmres", "unrolled"):
        sol = hypergradient((upper, lower), x, torch.zeros(3, dtype=F64), method=method, inner_steps=60, inner_lr=0.5)  # pyright: ignore[reportArgumentType]
        torch.testing.assert_close(sol.value[0], exact, rtol=1e-12, atol=1e-12)


def test_logistic_implicit_vs_finite_differences() -> None:
    problem = LogisticRegularization(n_train=60, n_val=40, dim=4, seed=1)
    x = torch.tensor([-2.0, -1.0, -3.0, 0.0], dtype=F64)

    def phi(z: torch.Tensor) -> float:
        y = problem.solve_lower(z, tol=1e-13).value
        return float(problem.upper_loss(z, y))

    y_star = problem.solve_lower(x, tol=1e-13).value
    sol = hypergradient(problem, x, y_star, method="implicit_cg", inner_steps=0, tol=1e-13)
    h = 1e-5
    fd = torch.tensor([(phi(x + h * e) - phi(x - h * e)) / (2 * h) for e in torch.eye(4, dtype=F64)], dtype=F64)
    torch.testing.assert_close(sol.value[0], fd, rtol=1e-6, atol=1e-9)


def test_hyper_cleaning_hypergradient_favours_clean_samples() -> None:
    problem = HyperCleaning(n_train=120, n_val=120, n_test=50, dim=5, classes=3, corruption=0.5, seed=0)
    x = problem.init_upper()
    y = problem.solve_lower(x).value
    sol = hypergradient(problem, x, y, method="implicit_cg", inner_steps=0, tol=1e-12)
    grad = sol.value[0]
    mask = problem.corrupted_mask
    # a descent step raises the weights of clean samples and lowers those of corrupted ones, on average
    assert float(-grad[~mask].mean()) > 0 > float(-grad[mask].mean())
    # check the step against finite differences of Phi along the hypergradient
    h = 1e-4
    direction = grad / grad.norm()

    def phi(z: torch.Tensor) -> float:
        return float(problem.upper_loss(z, problem.solve_lower(z).value))

    fd = (phi(x + h * direction) - phi(x - h * direction)) / (2 * h)
    assert fd == pytest.approx(float(grad @ direction), rel=1e-6)


def test_stats_and_solution_fields() -> None:
    problem = QuadraticBilevel(dim=3)
    x = torch.ones(3, dtype=F64)
    sol = hypergradient(problem, x, method="implicit_cg", inner_steps=50, inner_lr=0.5, return_y=False)
    assert sol.value[1] is None
    assert sol.converged
    for key in ("inner_loss", "inner_grad_norm", "upper_loss", "saved_tensor_bytes", "linear_solve", "n_matvec"):
        assert key in sol.stats
    unrolled = hypergradient(problem, x, method="unrolled", inner_steps=7, inner_lr=0.5)
    assert unrolled.history is not None
    assert unrolled.history.shape == (8,)
    assert unrolled.converged


def test_bad_input() -> None:
    problem = QuadraticBilevel(dim=3)
    x = torch.ones(3, dtype=F64)
    with pytest.raises(SciMLInputError, match="method"):
        hypergradient(problem, x, method="bogus")  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="truncate"):
        hypergradient(problem, x, method="truncated", inner_steps=5)
    with pytest.raises(SciMLInputError, match="truncate"):
        hypergradient(problem, x, method="truncated", inner_steps=5, truncate=6)
    with pytest.raises(SciMLInputError, match="inner_lr"):
        hypergradient(problem, x, inner_lr=-0.1)
    with pytest.raises(SciMLInputError, match="inner_steps"):
        hypergradient(problem, x, method="unrolled", inner_steps=0)
    with pytest.raises(SciMLInputError, match="tol"):
        hypergradient(problem, x, tol=0.0)
    with pytest.raises(SciMLInputError, match="neumann_alpha"):
        hypergradient(problem, x, method="implicit_neumann", neumann_alpha=float("nan"))
    with pytest.raises(SciMLInputError, match="'x'"):
        hypergradient(problem, torch.tensor([1.0, float("nan"), 0.0], dtype=F64))
    with pytest.raises(SciMLInputError, match="'y'"):
        hypergradient(problem, x, torch.zeros(3, dtype=torch.float32))
    with pytest.raises(SciMLInputError, match="'y'"):
        hypergradient((problem.upper_loss, problem.lower_loss), x)
    with pytest.raises(SciMLInputError, match="problem"):
        hypergradient(object(), x)  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="upper_loss"):
        hypergradient((lambda a, b: a + b.sum(), problem.lower_loss), x, torch.zeros(3, dtype=F64))
