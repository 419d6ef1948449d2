"""Tests of the bilevel test problems: closed forms against independent oracles (numpy/scipy, finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sciml_bilevel.problems import (
    BilevelProblem,
    HyperCleaning,
    HyperRepresentation,
    LogisticRegularization,
    QuadraticBilevel,
    RidgeHyperparameter,
)
from sciml_protocols import SciMLInputError

F64 = torch.float64


def _small_problems() -> list[BilevelProblem]:
    return [
        QuadraticBilevel(dim=4, dim_lower=6),
        RidgeHyperparameter(n_train=15, n_val=12, dim=5),
        RidgeHyperparameter(n_train=15, n_val=12, dim=5, per_feature=True),
        HyperCleaning(n_train=30, n_val=20, n_test=20, dim=4, classes=3),
        HyperRepresentation(n_tasks=3, n_train=6, n_val=5, n_test=5, dim=4, hidden=2, classes=3),
        HyperRepresentation(n_tasks=2, n_train=6, n_val=5, n_test=5, dim=4, hidden=2, activation="tanh"),
        LogisticRegularization(n_train=20, n_val=15, dim=4, n_test=10),
    ]


@pytest.mark.parametrize("problem", _small_problems(), ids=lambda p: type(p).__name__)
def test_protocol_shapes_and_minibatch_means(problem: BilevelProblem) -> None:
    assert isinstance(problem, BilevelProblem)
    x, y = problem.init_upper(), problem.init_lower()
    assert x.ndim == 1
    assert y.ndim == 1
    assert x.dtype == F64
    assert y.dtype == F64
    gen = torch.Generator().manual_seed(1)
    y = y + 0.3 * torch.randn(y.shape, generator=gen, dtype=F64)
    x = x + 0.1 * torch.randn(x.shape, generator=gen, dtype=F64)
    for loss, n in ((problem.upper_loss, problem.n_upper), (problem.lower_loss, problem.n_lower)):
        full = loss(x, y)
        assert full.shape == ()
        # the mean over one-sample batches is the full loss: batches give unbiased estimates
        singles = torch.stack([loss(x, y, torch.tensor([i])) for i in range(n)])
        torch.testing.assert_close(singles.mean(), full, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(loss(x, y, torch.arange(n)), full, rtol=1e-12, atol=1e-12)
    metrics = problem.evaluate(x, y)
    assert metrics
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("problem", _small_problems(), ids=lambda p: type(p).__name__)
def test_solve_lower_is_stationary(problem: BilevelProblem) -> None:
    x = problem.init_upper() + 0.2
    sol = problem.solve_lower(x)  # pyright: ignore[reportAttributeAccessIssue]
    assert sol.converged
    y = sol.value.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.lower_loss(x, y), y)
    assert float(grad.norm()) < 1e-9


def test_quadratic_closed_forms() -> None:
    problem = QuadraticBilevel(dim=5, rho=0.1, seed=3, dim_lower=7)
    a, b = problem.A.numpy(), problem.b.numpy()
    # x* by least squares on the stacked system [A; sqrt(rho) I] x = [b; 0]
    stacked = np.vstack([a, np.sqrt(0.1) * np.eye(5)])
    x_star, *_ = np.linalg.lstsq(stacked, np.concatenate([b, np.zeros(5)]), rcond=None)
    np.testing.assert_allclose(problem.x_star.numpy(), x_star, rtol=1e-10, atol=1e-12)
    x = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    # y*(x) minimizes g: its gradient in y vanishes
    y = problem.y_star(x).requires_grad_(True)
    (grad_y,) = torch.autograd.grad(problem.lower_loss(x, y), y)
    assert float(grad_y.norm()) < 1e-14
    # Phi(x) = f(x, y*(x)) and its closed-form gradient vs central differences of Phi
    torch.testing.assert_close(problem.phi(x), problem.upper_loss(x, problem.y_star(x)))
    h = 1e-6
    fd = torch.stack([(problem.phi(x + h * e) - problem.phi(x - h * e)) / (2 * h) for e in torch.eye(5, dtype=F64)])
    torch.testing.assert_close(problem.hypergradient(x), fd, rtol=1e-8, atol=1e-8)
    assert float(problem.hypergradient(problem.x_star).norm()) < 1e-12
    metrics = problem.evaluate(problem.x_star, problem.y_star(problem.x_star))
    assert metrics["distance_to_x_star"] == 0.0
    assert abs(metrics["phi_gap"]) < 1e-15


def _ridge_numpy(problem: RidgeHyperparameter, log_lam: np.ndarray) -> tuple[np.ndarray, float]:
    x_tr, t_tr = problem.X_train.numpy(), problem.t_train.numpy()
    x_v, t_v = problem.X_val.numpy(), problem.t_val.numpy()
    n, d = x_tr.shape
    lam = np.broadcast_to(np.exp(log_lam), (d,))
    # ridge by least squares on the augmented system [X / sqrt(n); diag(sqrt(lam))] w = [t / sqrt(n); 0]
    stacked = np.vstack([x_tr / np.sqrt(n), np.diag(np.sqrt(lam))])
    w, *_ = np.linalg.lstsq(stacked, np.concatenate([t_tr / np.sqrt(n), np.zeros(d)]), rcond=None)
    return w, 0.5 * float(np.mean((x_v @ w - t_v) ** 2))


@pytest.mark.parametrize("per_feature", [False, True])
def test_ridge_closed_forms(per_feature: bool) -> None:
    problem = RidgeHyperparameter(n_train=30, n_val=25, dim=8, noise=1.0, seed=2, per_feature=per_feature)
    gen = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(problem.dim_upper, generator=gen, dtype=F64) - 0.5
    w_np, phi_np = _ridge_numpy(problem, x.numpy())
    np.testing.assert_allclose(problem.y_star(x).numpy(), w_np, rtol=1e-9, atol=1e-12)
    assert abs(float(problem.phi(x)) - phi_np) < 1e-12
    h = 1e-5
    fd = np.array(
        [
            (_ridge_numpy(problem, x.numpy() + h * e)[1] - _ridge_numpy(problem, x.numpy() - h * e)[1]) / (2 * h)
            for e in np.eye(problem.dim_upper)
        ]
    )
    np.testing.assert_allclose(problem.hypergradient(x).numpy(), fd, rtol=1e-6, atol=1e-10)


def test_ridge_best_lambda_matches_scipy() -> None:
    from scipy.optimize import minimize_scalar

    problem = RidgeHyperparameter(n_train=30, n_val=30, dim=15, noise=1.0, seed=0)
    res = minimize_scalar(
        lambda t: _ridge_numpy(problem, np.array([t]))[1], bounds=(-8, 8), method="bounded", options={"xatol": 1e-10}
    )
    assert abs(float(problem.best_log_lambda) - res.x) < 1e-5
    assert abs(problem.best_upper_loss - res.fun) < 1e-12
    # first-order optimality through the closed-form hypergradient
    assert abs(float(problem.hypergradient(problem.best_log_lambda.reshape(1)))) < 1e-6
    metrics = problem.evaluate(problem.best_log_lambda.reshape(1), problem.y_star(problem.best_log_lambda.reshape(1)))
    assert metrics["log_lambda_distance"] == 0.0
    assert abs(metrics["phi_gap"]) < 1e-12


def test_hyper_cleaning_data_and_baselines() -> None:
    problem = HyperCleaning(n_train=100, n_val=50, n_test=400, dim=6, classes=4, corruption=0.4, seed=1)
    mask = problem.corrupted_mask
    assert int(mask.sum()) == 40
    # corrupted labels always differ from the true ones, clean ones never do
    assert bool((problem.labels_train[mask] != problem.clean_labels_train[mask]).all())
    assert bool((problem.labels_train[~mask] == problem.clean_labels_train[~mask]).all())
    baseline = problem.accuracy_without_cleaning()
    oracle = problem.accuracy_with_oracle_cleaning()
    assert 1 / 4 < baseline < oracle <= 1.0
    # weights that switch off exactly the corrupted samples detect them perfectly
    x = torch.where(mask, -5.0, 5.0).to(F64)
    metrics = problem.evaluate(x, problem.solve_lower(x).value)
    assert metrics["f1"] == 1.0
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == 1.0
    assert abs(metrics["test_accuracy"] - oracle) < 0.03
    assert metrics["mean_weight_corrupted"] < 0.01 < 0.99 < metrics["mean_weight_clean"]


def test_hyper_cleaning_lower_solution_matches_scipy() -> None:
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    problem = HyperCleaning(n_train=40, n_val=10, n_test=10, dim=3, classes=3, seed=0)
    x = torch.linspace(-2, 2, 40, dtype=F64)
    a, labels = problem.A_train.numpy(), problem.labels_train.numpy()
    weights = 1 / (1 + np.exp(-x.numpy()))
    k, d = 3, 3

    def objective(v: np.ndarray) -> float:
        logits = a @ v[: k * d].reshape(k, d).T + v[k * d :]
        ce = logsumexp(logits, axis=1) - logits[np.arange(40), labels]
        return float(np.mean(weights * ce) + 0.5 * problem.mu * v @ v)

    res = minimize(objective, np.zeros(k * (d + 1)), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(problem.solve_lower(x).value.numpy(), res.x, atol=1e-5)


def test_hyper_representation_true_representation_helps() -> None:
    problem = HyperRepresentation(n_tasks=4, n_train=30, n_val=30, n_test=200, dim=8, hidden=2, seed=0)
    random_x = problem.init_upper()
    true_x = problem.B_true.reshape(-1)
    acc_random = problem.evaluate(random_x, problem.solve_lower(random_x).value)["test_accuracy"]
    acc_true = problem.evaluate(true_x, problem.solve_lower(true_x).value)["test_accuracy"]
    assert acc_true > acc_random
    assert acc_true > 0.75


def test_logistic_lower_solution_matches_scipy() -> None:
    from scipy.optimize import minimize

    problem = LogisticRegularization(n_train=50, n_val=20, dim=5, seed=4)
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, -2.0], dtype=F64)
    a, t, lam = problem.A_train.numpy(), problem.t_train.numpy(), np.exp(x.numpy())

    def objective(w: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -t * (a @ w))) + 0.5 * np.sum(lam * w * w))

    res = minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-11})
    np.testing.assert_allclose(problem.solve_lower(x).value.numpy(), res.x, atol=1e-6)


def test_seed_determinism() -> None:
    a, b, c = (HyperCleaning(n_train=20, n_val=5, n_test=5, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.A_train, b.A_train)
    assert torch.equal(a.corrupted_mask, b.corrupted_mask)
    assert not torch.equal(a.A_train, c.A_train)
    q32 = QuadraticBilevel(dim=3, seed=1, dtype=torch.float32)
    assert q32.A.dtype == torch.float32
    torch.testing.assert_close(q32.A.double(), QuadraticBilevel(dim=3, seed=1).A, rtol=1e-6, atol=1e-7)


def test_bad_input() -> None:
    problem = QuadraticBilevel(dim=3)
    x, y = problem.init_upper(), problem.init_lower()
    with pytest.raises(SciMLInputError, match="'x'"):
        problem.upper_loss(torch.zeros(4, dtype=F64), y)
    with pytest.raises(SciMLInputError, match="dtype"):
        problem.lower_loss(x.float(), y)
    with pytest.raises(SciMLInputError, match="'y'"):
        problem.lower_loss(x, y.reshape(1, 3))
    with pytest.raises(SciMLInputError, match="meta"):
        problem.lower_loss(x, torch.zeros(3, dtype=F64, device="meta"))
    with pytest.raises(SciMLInputError, match="batch"):
        problem.upper_loss(x, y, torch.tensor([0, 3]))
    with pytest.raises(SciMLInputError, match="batch"):
        problem.upper_loss(x, y, torch.tensor([0.0]))
    with pytest.raises(SciMLInputError, match="'y'"):
        problem.evaluate(x, torch.full((3,), float("nan"), dtype=F64))
    with pytest.raises(SciMLInputError, match="dim"):
        QuadraticBilevel(dim=0)
    with pytest.raises(SciMLInputError, match="rho"):
        QuadraticBilevel(rho=-1.0)
    with pytest.raises(SciMLInputError, match="dtype"):
        QuadraticBilevel(dtype=torch.int64)
    with pytest.raises(SciMLInputError, match="seed"):
        RidgeHyperparameter(seed=-1)
    with pytest.raises(SciMLInputError, match="corruption"):
        HyperCleaning(corruption=1.0)
    with pytest.raises(SciMLInputError, match="classes"):
        HyperCleaning(classes=1)
    with pytest.raises(SciMLInputError, match="activation"):
        HyperRepresentation(activation="relu")  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="informative"):
        LogisticRegularization(dim=3, informative=4)
    with pytest.raises(SciMLInputError, match="tol"):
        LogisticRegularization(dim=3).solve_lower(torch.zeros(3, dtype=F64), tol=0.0)
