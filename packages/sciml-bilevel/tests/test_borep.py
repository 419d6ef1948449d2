"""Tests of BO-REP (:func:`sciml_bilevel.bo_rep`) against closed forms on quadratic bilevel problems."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sciml_bilevel import bo_rep
from sciml_bilevel.problems import BilevelProblem
from sciml_protocols import SciMLInputError, Solution
from sciml_protocols.testing import assert_close


class SPDQuadratic:
    r"""A finite-sum quadratic bilevel problem with a general lower-level Hessian and a known answer.

    Sample ``i`` has :math:`f_i = \tfrac12\|y - b_i\|^2 + \tfrac\rho2\|x\|^2` and
    :math:`g_i = \tfrac12 (y - A_i x)^\top H (y - A_i x)`, with :math:`H` symmetric positive definite and the sample
    means :math:`\bar A, \bar b` fixed. So :math:`y^*(x) = \bar A x`, :math:`\nabla^2_{yy} g = H`,
    :math:`\nabla^2_{xy} g\, z = -\bar A^\top H z`, :math:`\nabla\Phi(x) = \bar A^\top(\bar A x - \bar b) + \rho x`
    and :math:`x^* = (\bar A^\top \bar A + \rho I)^{-1}\bar A^\top \bar b`. The minibatch gradients are noisy.
    """

    def __init__(
        self, dim_x: int = 4, dim_y: int = 6, n: int = 16, rho: float = 0.2, noise: float = 0.5, seed: int = 0
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        kw = {"generator": gen, "dtype": torch.float64}
        self.A = torch.randn(dim_y, dim_x, **kw) / math.sqrt(dim_x)
        self.b = torch.randn(dim_y, **kw)
        a_noise = torch.randn(n, dim_y, dim_x, **kw)
        b_noise = torch.randn(n, dim_y, **kw)
        self.A_i = self.A + noise * (a_noise - a_noise.mean(0)) / math.sqrt(dim_x)
        self.b_i = self.b + noise * (b_noise - b_noise.mean(0))
        q = torch.randn(dim_y, dim_y, **kw)
        self.H = q @ q.T / dim_y + 0.5 * torch.eye(dim_y, dtype=torch.float64)
        self.rho = rho
        self.n_upper = self.n_lower = n
        self.dim_x, self.dim_y = dim_x, dim_y
        eye = torch.eye(dim_x, dtype=torch.float64)
        self.x_star = torch.linalg.solve(self.A.T @ self.A + rho * eye, self.A.T @ self.b)

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        b = self.b_i if batch is None else self.b_i[batch]
        return 0.5 * ((y - b) ** 2).sum(1).mean() + 0.5 * self.rho * (x @ x)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        a = self.A_i if batch is None else self.A_i[batch]
        r = y - a @ x
        return 0.5 * ((r @ self.H) * r).sum(1).mean()

    def init_upper(self) -> torch.Tensor:
        return torch.zeros(self.dim_x, dtype=torch.float64)

    def init_lower(self) -> torch.Tensor:
        return torch.zeros(self.dim_y, dtype=torch.float64)

    def hypergradient(self, x: torch.Tensor) -> torch.Tensor:
        return self.A.T @ (self.A @ x - self.b) + self.rho * x

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {
            "distance": float(torch.linalg.vector_norm(x - self.x_star)),
            "lower_distance": float(torch.linalg.vector_norm(y - self.A @ x)),
        }


def _distance(solution: Solution[tuple[torch.Tensor, torch.Tensor]], problem: SPDQuadratic) -> float:
    return float(torch.linalg.vector_norm(solution.value[0] - problem.x_star))


def test_protocol_and_solution_layout() -> None:
    problem = SPDQuadratic()
    assert isinstance(problem, BilevelProblem)
    sol = bo_rep(problem, iterations=7, upper_lr=1e-2, lower_lr=0.2, record_every=3, warm_start_steps=4)
    x, y = sol.value
    assert x.shape == (4,)
    assert y.shape == (6,)
    assert x.dtype == y.dtype == torch.float64
    assert not x.requires_grad
    assert not y.requires_grad
    assert sol.n_iter == 7
    assert not sol.converged
    assert sol.stats["reason"] == "fixed budget"
    assert sol.stats["record_iterations"] == [0, 3, 6, 7]
    assert sol.history is not None
    assert sol.history.shape == (4,)
    assert [len(sol.stats[k]) for k in ("upper_loss", "lower_loss", "evaluations")] == [4, 4, 4]
    for key in ("hypergradient_norms", "momentum_norms", "step_norms", "z_norms"):
        assert sol.stats[key].shape == (7,)
    # the history is the full-batch upper loss at the recorded points
    assert_close(sol.history[-1], problem.upper_loss(x, y).detach())
    assert sol.residual == pytest.approx(float(sol.stats["hypergradient_norms"][-1]))
    assert sol.stats["evaluations"][-1]["distance"] == pytest.approx(_distance(sol, problem))


def test_deterministic_convergence_to_x_star_within_order_eta() -> None:
    problem = SPDQuadratic()
    start = float(torch.linalg.vector_norm(problem.x_star))
    window_max, window_mean = {}, {}
    for eta in (2e-2, 4e-3):
        sol = bo_rep(
            problem, iterations=700, upper_lr=eta, lower_lr=0.2, nu=0.2, update_interval=2, lower_steps=2,
            warm_start_steps=20, record_every=25,
        )  # fmt: skip
        # normalized steps: every step has length eta exactly (never more)
        steps = sol.stats["step_norms"]
        assert float(steps.max()) <= eta * (1 + 1e-12)
        assert_close(steps, torch.full_like(steps, eta))
        # with a constant step length the iterates settle in an O(eta) neighbourhood of x* (the momentum makes them
        # circle there): over the last 200 iterations they stay within 20 eta
        window = [e["distance"] for e in sol.stats["evaluations"][-9:]]
        assert sol.stats["record_iterations"][-9] == 500
        window_max[eta], window_mean[eta] = max(window), sum(window) / len(window)
        assert window_max[eta] < 20 * eta < start / 3
        assert window[-1] == pytest.approx(_distance(sol, problem))
    # the neighbourhood shrinks with the step length
    assert window_mean[4e-3] < window_mean[2e-2] / 2


def test_stochastic_minibatch_convergence_and_reproducibility() -> None:
    problem = SPDQuadratic(noise=0.5)
    start = float(torch.linalg.vector_norm(problem.x_star))
    kwargs = {
        "upper_lr": 5e-3, "lower_lr": 0.1, "nu": 0.1, "update_interval": 2, "lower_steps": 2, "warm_start_steps": 50,
        "batch_size": 4,
    }  # fmt: skip
    sol = bo_rep(problem, iterations=1200, generator=torch.Generator().manual_seed(0), record_every=100, **kwargs)
    assert float(sol.stats["step_norms"].max()) <= 5e-3 * (1 + 1e-12)
    final = [e["distance"] for e in sol.stats["evaluations"][-3:]]
    assert max(final) < 0.15 * start
    # minibatches make the estimates noisy, but a run is reproducible from its generator's seed
    short = {"iterations": 20, **kwargs}
    once = bo_rep(problem, generator=torch.Generator().manual_seed(0), **short)
    again = bo_rep(problem, generator=torch.Generator().manual_seed(0), **short)
    other = bo_rep(problem, generator=torch.Generator().manual_seed(1), **short)
    full = bo_rep(problem, **{**short, "batch_size": None})
    assert torch.equal(once.value[0], again.value[0])
    assert not torch.equal(once.value[0], other.value[0])
    assert not torch.equal(once.value[0], full.value[0])


@pytest.mark.parametrize("nu", [0.3, 0.05])
def test_hypergradient_estimate_matches_closed_form_as_z_steps_accumulate(nu: float) -> None:
    problem = SPDQuadratic()
    x0 = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y0 = problem.A @ x0  # exact lower solution; no lower update happens and x barely moves
    grad_phi = problem.hypergradient(x0)
    z_star = torch.linalg.solve(problem.H, y0 - problem.b)
    contraction = torch.eye(6, dtype=torch.float64) - nu * problem.H
    errors = []
    for k in (1, 3, 10, 40, 160):
        sol = bo_rep(
            problem, x0=x0, y0=y0, iterations=k, upper_lr=1e-13, lower_lr=0.1, nu=nu, warm_start_steps=0,
            update_interval=10**6, record_every=10**6,
        )  # fmt: skip
        # z after k steps from 0: z* - (I - nu H)^k z*, so g_hat = grad Phi - A^T H (I - nu H)^k z*
        expected = grad_phi - problem.A.T @ problem.H @ torch.linalg.matrix_power(contraction, k) @ z_star
        assert_close(sol.stats["hypergradient"], expected, rtol=1e-9, atol=1e-9)
        errors.append(float(torch.linalg.vector_norm(sol.stats["hypergradient"] - grad_phi)))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    if nu == 0.3:
        assert errors[-1] < 1e-8 * float(torch.linalg.vector_norm(grad_phi))


def test_z_projection_radius() -> None:
    problem = SPDQuadratic()
    sol = bo_rep(problem, iterations=30, upper_lr=1e-2, lower_lr=0.2, nu=0.5, z_radius=0.05, warm_start_steps=10)
    assert float(sol.stats["z_norms"].max()) <= 0.05 * (1 + 1e-12)
    assert float(torch.linalg.vector_norm(sol.stats["z"])) <= 0.05 * (1 + 1e-12)


class _Counting(SPDQuadratic):
    """Counts the lower-loss evaluations and logs the x at which each happened."""

    def __init__(self) -> None:
        super().__init__()
        self.lower_calls: list[torch.Tensor] = []

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.lower_calls.append(x.detach().clone())
        return super().lower_loss(x, y, batch)


def test_warm_start_and_periodic_lower_updates_happen_at_the_right_iterations() -> None:
    problem = _Counting()
    x0 = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y0 = torch.zeros(6, dtype=torch.float64)
    ys: list[torch.Tensor] = []
    xs: list[torch.Tensor] = []

    def callback(n: int, x: torch.Tensor, y: torch.Tensor) -> None:
        assert n == len(ys) + 1
        xs.append(x.clone())
        ys.append(y.clone())

    gamma, warm, interval, steps, iterations = 0.1, 5, 3, 2, 10
    sol = bo_rep(
        problem, x0=x0, y0=y0, iterations=iterations, upper_lr=1e-2, lower_lr=gamma, warm_start_steps=warm,
        update_interval=interval, lower_steps=steps, callback=callback,
    )  # fmt: skip
    stats = sol.stats
    assert stats["warm_start_steps"] == warm
    assert stats["lower_update_iterations"] == [3, 6, 9]
    assert stats["lower_sgd_steps"] == warm + 3 * steps
    assert stats["lower_gradient_calls"] == warm + 3 * steps + iterations
    assert stats["upper_gradient_calls"] == iterations
    assert stats["hvp_calls"] == 2 * iterations
    assert len(problem.lower_calls) == stats["lower_gradient_calls"]
    # the warm start runs at x0: with full batches it is plain gradient descent on a quadratic, whose iterate after
    # k steps is y* + (I - gamma H)^k (y0 - y*)
    for x in problem.lower_calls[:warm]:
        assert torch.equal(x, x0)
    contraction = torch.eye(6, dtype=torch.float64) - gamma * problem.H
    y_star = problem.A @ x0
    y_warm = y_star + torch.linalg.matrix_power(contraction, warm) @ (y0 - y_star)
    # y is frozen between refreshes: y_t (seen by the callback after iteration t) changes only at t = 3, 6, 9
    assert_close(ys[0], y_warm, rtol=1e-12, atol=1e-12)
    changed = [t for t in range(1, iterations) if not torch.equal(ys[t], ys[t - 1])]
    assert changed == [3, 6, 9]
    # each refresh is `steps` gradient steps on g(x_t, .) from the previous y, with x_t the iterate at that time
    for t in changed:
        y_star_t = problem.A @ xs[t - 1]
        y_t = y_star_t + torch.linalg.matrix_power(contraction, steps) @ (ys[t - 1] - y_star_t)
        assert_close(ys[t], y_t, rtol=1e-12, atol=1e-12)


def test_tolerance_stop_and_callback_stop() -> None:
    problem = SPDQuadratic()
    grad_norm_0 = float(torch.linalg.vector_norm(problem.hypergradient(problem.init_upper())))
    sol = bo_rep(problem, iterations=2000, upper_lr=1e-2, lower_lr=0.2, nu=0.3, tol=0.2 * grad_norm_0)
    assert sol.converged
    assert sol.n_iter < 2000
    assert sol.residual <= 0.2 * grad_norm_0
    assert sol.stats["record_iterations"][-1] == sol.n_iter
    assert "tol" in sol.stats["reason"]
    assert sol.check() is sol
    stopped = bo_rep(problem, iterations=50, upper_lr=1e-2, lower_lr=0.2, callback=lambda n, x, y: n == 4)
    assert stopped.n_iter == 4
    assert not stopped.converged
    assert stopped.stats["reason"] == "stopped by callback"
    never = bo_rep(problem, iterations=5, upper_lr=1e-2, lower_lr=0.2, tol=1e-12)
    assert not never.converged
    assert "above tol" in never.stats["reason"]


def test_zero_iterations_and_float32() -> None:
    problem = SPDQuadratic()
    sol = bo_rep(problem, iterations=0, upper_lr=1e-2, lower_lr=0.2, warm_start_steps=3)
    assert sol.n_iter == 0
    assert sol.residual == math.inf
    assert sol.stats["record_iterations"] == [0]
    x0 = torch.zeros(4, dtype=torch.float32)
    y0 = torch.zeros(6, dtype=torch.float32)

    class Float32(SPDQuadratic):
        def __init__(self) -> None:
            super().__init__()
            for name in ("A", "b", "A_i", "b_i", "H"):
                setattr(self, name, getattr(self, name).float())

    sol32 = bo_rep(Float32(), x0=x0, y0=y0, iterations=20, upper_lr=1e-2, lower_lr=0.2)
    assert sol32.value[0].dtype == torch.float32
    assert sol32.stats["hypergradient"].dtype == torch.float32


def _library_problems():  # pyright: ignore[reportUnknownParameterType]
    from sciml_bilevel.problems import HyperCleaning, QuadraticBilevel

    return QuadraticBilevel, HyperCleaning


def test_quadratic_bilevel_problem_deterministic_and_stochastic() -> None:
    quadratic_cls, _ = _library_problems()
    problem = quadratic_cls(dim=5, rho=0.1, seed=0, dim_lower=8)
    start = float(torch.linalg.vector_norm(problem.x_star))
    sol = bo_rep(
        problem, iterations=600, upper_lr=1e-2, lower_lr=0.5, nu=0.5, lower_steps=1, warm_start_steps=10,
        record_every=600,
    )  # fmt: skip
    distance = float(torch.linalg.vector_norm(sol.value[0] - problem.x_star))
    assert distance < 10 * 1e-2 < start / 10
    assert sol.stats["evaluations"][-1]["distance_to_x_star"] == pytest.approx(distance)
    noisy = bo_rep(
        problem, iterations=800, upper_lr=1e-2, lower_lr=0.1, nu=0.1, lower_steps=2, warm_start_steps=50,
        batch_size=4, generator=torch.Generator().manual_seed(0), record_every=800,
    )  # fmt: skip
    assert float(noisy.stats["step_norms"].max()) <= 1e-2 * (1 + 1e-12)
    assert float(torch.linalg.vector_norm(noisy.value[0] - problem.x_star)) < 0.2 * start


def test_hyper_cleaning_beats_training_on_the_corrupted_data() -> None:
    _, cleaning_cls = _library_problems()
    problem = cleaning_cls(n_train=100, n_val=100, n_test=500, dim=5, classes=3, seed=0)
    baseline = problem.accuracy_without_cleaning()
    sol = bo_rep(
        problem, iterations=60, upper_lr=0.3, lower_lr=1.0, nu=1.0, update_interval=2, lower_steps=2,
        warm_start_steps=50, record_every=60,
    )  # fmt: skip
    result = sol.stats["evaluations"][-1]
    assert result["test_accuracy"] > baseline + 0.1
    # the learned weights single out the corrupted samples
    assert result["mean_weight_corrupted"] < result["mean_weight_clean"] - 0.3


class _NotAProblem:
    def upper_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.sum()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"upper_lr": 0.0}, "upper_lr"),
        ({"upper_lr": -1e-2}, "upper_lr"),
        ({"upper_lr": math.nan}, "upper_lr"),
        ({"lower_lr": 0.0}, "lower_lr"),
        ({"lower_lr": -0.1}, "lower_lr"),
        ({"nu": 0.0}, "nu"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"z_radius": 0.0}, "z_radius"),
        ({"update_interval": 0}, "update_interval"),
        ({"update_interval": 1.5}, "update_interval"),
        ({"lower_steps": 0}, "lower_steps"),
        ({"warm_start_steps": -1}, "warm_start_steps"),
        ({"iterations": -1}, "iterations"),
        ({"batch_size": 0}, "batch_size"),
        ({"record_every": 0}, "record_every"),
        ({"tol": 0.0}, "tol"),
        ({"generator": 0}, "generator"),
        ({"callback": 3}, "callback"),
        ({"progress": "yes"}, "progress"),
        ({"x0": torch.zeros(2, 2, dtype=torch.float64)}, "x0"),
        ({"x0": torch.zeros(0, dtype=torch.float64)}, "x0"),
        ({"x0": torch.tensor([0.0, math.nan, 0.0, 0.0], dtype=torch.float64)}, "x0"),
        ({"x0": torch.zeros(4, dtype=torch.int64)}, "x0"),
        ({"y0": [0.0] * 6}, "y0"),
        ({"y0": torch.zeros(6, dtype=torch.float32)}, "y0"),
    ],
)
def test_bad_input(kwargs: dict[str, object], argument: str) -> None:
    arguments: dict[str, object] = {"iterations": 3, "upper_lr": 1e-2, "lower_lr": 0.1, **kwargs}
    with pytest.raises(SciMLInputError) as info:
        bo_rep(SPDQuadratic(), **arguments)  # pyright: ignore[reportArgumentType]
    assert info.value.argument == argument


def test_problem_without_the_protocol() -> None:
    with pytest.raises(SciMLInputError) as info:
        bo_rep(_NotAProblem(), iterations=3, upper_lr=1e-2, lower_lr=0.1)  # pyright: ignore[reportArgumentType]
    assert info.value.argument == "problem"


def test_progress_bar_runs() -> None:
    import tqdm  # noqa: F401  (a test dependency: fail loudly if missing)

    sol = bo_rep(SPDQuadratic(), iterations=3, upper_lr=1e-2, lower_lr=0.1, progress=True)
    assert sol.n_iter == 3
