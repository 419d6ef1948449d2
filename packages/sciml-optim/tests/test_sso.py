"""Tests of SSO (target-based surrogates): upper bound, MM monotonicity, closed forms, SGD equivalence, counts."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from sciml_optim._sso import SSO, SSOStepResult, surrogate_loss
from sciml_protocols import SciMLInputError

DTYPE = torch.float64


def _logistic_sum(y: torch.Tensor):
    # h(z) = sum_i log(1 + exp(-y_i z_i)): separable, each term 1/4-smooth, so h is 1/4-smooth in z.
    return lambda z: torch.nn.functional.softplus(-y * z).sum()


def _mlp(gen: torch.Generator, d_in: int, hidden: int) -> list[torch.Tensor]:
    w1 = (torch.randn(d_in, hidden, generator=gen, dtype=DTYPE) / math.sqrt(d_in)).requires_grad_(True)
    w2 = (torch.randn(hidden, generator=gen, dtype=DTYPE) / math.sqrt(hidden)).requires_grad_(True)
    return [w1, w2]


def _mlp_forward(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.tanh(x @ params[0]) @ params[1]


# ---------------------------------------------------------------- (1) upper bound


def test_surrogate_is_exact_for_squared_loss_at_eta_one_over_beta() -> None:
    # h(z) = 1/2 |z - y|^2 has beta = 1: the surrogate with eta = 1 is h itself (a second-order Taylor expansion).
    gen = torch.Generator().manual_seed(0)
    y, z_t = torch.randn(2, 7, generator=gen, dtype=DTYPE)
    loss_t = 0.5 * (z_t - y).pow(2).sum()
    grad_h = z_t - y
    for _ in range(20):
        z = 3.0 * torch.randn(7, generator=gen, dtype=DTYPE)
        h = 0.5 * (z - y).pow(2).sum()
        torch.testing.assert_close(surrogate_loss(z, z_t, grad_h, 1.0, loss_t=loss_t), h, rtol=1e-13, atol=1e-13)
        assert surrogate_loss(z, z_t, grad_h, 0.5, loss_t=loss_t) >= h  # eta < 1/beta: an upper bound
        assert surrogate_loss(z, z_t, grad_h, 2.0, loss_t=loss_t) < h  # eta > 1/beta: not an upper bound


def test_surrogate_upper_bounds_logistic_loss_through_nonlinear_model() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=gen, dtype=DTYPE)
    y = torch.where(torch.rand(30, generator=gen, dtype=DTYPE) < 0.5, 1.0, -1.0)
    h = _logistic_sum(y)
    params_t = _mlp(gen, 4, 8)
    with torch.no_grad():
        z_t = _mlp_forward(x, params_t)
    z_leaf = z_t.clone().requires_grad_(True)
    (grad_h,) = torch.autograd.grad(h(z_leaf), z_leaf)
    loss_t = h(z_t)
    beta = 0.25
    # tight at theta_t
    torch.testing.assert_close(surrogate_loss(z_t, z_t, grad_h, 1 / beta, loss_t=loss_t), loss_t)
    with torch.no_grad():
        for scale in (0.1, 1.0, 5.0):
            for _ in range(30):
                theta = [p + scale * torch.randn(p.shape, generator=gen, dtype=DTYPE) for p in params_t]
                z = _mlp_forward(x, theta)
                assert surrogate_loss(z, z_t, grad_h, 1 / beta, loss_t=loss_t) >= h(z) - 1e-12
    # The bound is sharp: at z_t = 0 (maximal curvature 1/4) an eta ten times too large breaks it.
    zero = torch.zeros(30, dtype=DTYPE)
    grad0 = -0.5 * y
    z = 0.1 * torch.randn(30, generator=gen, dtype=DTYPE)
    assert surrogate_loss(z, zero, grad0, 10 / beta, loss_t=h(zero)) < h(z)


# ---------------------------------------------------------------- (2) full-batch MM


def test_full_batch_majorization_minimization_is_monotone() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 3, generator=gen, dtype=DTYPE)
    y = torch.where(torch.sin(3 * x[:, 0]) + x[:, 1] > 0, 1.0, -1.0)
    params = _mlp(gen, 3, 10)
    h = _logistic_sum(y)
    sso = SSO(params, eta=4.0, inner_steps=5, line_search=True, inner_lr=1.0)
    results: list[SSOStepResult] = [sso.step(lambda: _mlp_forward(x, params), h) for _ in range(40)]
    losses = [r.loss for r in results]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.7 * losses[0]
    for r, r_next in itertools.pairwise(results):
        assert r.surrogate_values[0] == pytest.approx(r.loss, rel=1e-14)
        # Armijo steps decrease the surrogate, whose final value bounds the next loss from above.
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(r.surrogate_values))
        assert r.surrogate_values[-1] >= r_next.loss - 1e-12
        assert r.eta == 4.0


# ---------------------------------------------------------------- (3) linear model, exact inner solve


@pytest.mark.parametrize("schedule", ["constant", "sqrt"])
def test_linear_model_exact_inner_solve_matches_gauss_newton_closed_form(schedule: str) -> None:
    gen = torch.Generator().manual_seed(3)
    n, d, eta = 40, 5, 3.0
    x = torch.randn(n, d, generator=gen, dtype=DTYPE) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=DTYPE)
    y = torch.where(torch.rand(n, generator=gen, dtype=DTYPE) < 0.5, 1.0, -1.0)
    w = torch.zeros(d, dtype=DTYPE, requires_grad=True)
    sso = SSO(
        [w],
        torch.optim.LBFGS,
        eta=eta,
        inner_steps=1,
        schedule=schedule,  # pyright: ignore[reportArgumentType]
        inner_lr=1.0,
        inner_kwargs={
            "max_iter": 500,
            "tolerance_grad": 1e-13,
            "tolerance_change": 0.0,
            "line_search_fn": "strong_wolfe",
        },
    )
    x_np, y_np, w_np = x.numpy(), y.numpy(), np.zeros(d)
    for t in range(1, 4):
        sso.step(lambda: x @ w, lambda z: torch.nn.functional.softplus(-y * z).mean())
        margin = y_np * (x_np @ w_np)
        grad_h = -y_np / (1.0 + np.exp(margin)) / n  # d/dz of mean log(1 + exp(-y z))
        eta_t = eta if schedule == "constant" else eta / math.sqrt(t)
        w_np = w_np - eta_t * np.linalg.lstsq(x_np, grad_h, rcond=None)[0]
        np.testing.assert_allclose(w.detach().numpy(), w_np, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- (4) f = identity is SGD


def test_identity_targets_reduce_to_sgd() -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(6, generator=gen, dtype=DTYPE) + 0.5
    c = torch.randn(6, generator=gen, dtype=DTYPE)

    def h(z: torch.Tensor) -> torch.Tensor:
        return (a * (z - c).pow(2)).sum() + torch.cos(z).sum()

    start = torch.randn(6, generator=gen, dtype=DTYPE)
    # One inner SGD step with any inner lr = one SGD step on L with that lr.
    w = start.clone().requires_grad_(True)
    ref = start.clone().requires_grad_(True)
    sso = SSO([w], eta=0.7, inner_steps=1, inner_lr=0.05)
    sgd = torch.optim.SGD([ref], lr=0.05)
    for _ in range(5):
        sso.step(lambda: w, h)
        sgd.zero_grad()
        h(ref).backward()
        sgd.step()
        torch.testing.assert_close(w, ref, rtol=1e-14, atol=1e-14)
    # Inner SGD with lr = eta solves the identity surrogate (Hessian I / eta) in one step: SGD with lr eta.
    w = start.clone().requires_grad_(True)
    ref = start.clone().requires_grad_(True)
    sso = SSO([w], eta=0.1, inner_steps=1, inner_lr=0.1)
    sgd = torch.optim.SGD([ref], lr=0.1)
    for _ in range(5):
        sso.step(lambda: w, h)
        sgd.zero_grad()
        h(ref).backward()
        sgd.step()
        torch.testing.assert_close(w, ref, rtol=1e-14, atol=1e-14)
    # An exact inner solve (many Armijo steps) under the sqrt schedule: SGD with lr eta_t = eta / sqrt(t).
    w = start.clone().requires_grad_(True)
    ref = start.clone().requires_grad_(True)
    sso = SSO([w], eta=0.2, inner_steps=40, schedule="sqrt", line_search=True, inner_lr=1.0)
    sgd = torch.optim.SGD([ref], lr=0.2)
    for t in range(1, 6):
        result = sso.step(lambda: w, h)
        assert result.eta == pytest.approx(0.2 / math.sqrt(t), rel=1e-15)
        sgd.param_groups[0]["lr"] = 0.2 / math.sqrt(t)
        sgd.zero_grad()
        h(ref).backward()
        sgd.step()
        # Armijo tests on function values stop once decreases drop below rounding (about sqrt(eps) accuracy).
        torch.testing.assert_close(w, ref, rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------- (5) stochastic logistic regression


def _logistic_problem() -> tuple[torch.Tensor, torch.Tensor, float]:
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    n, d = 1000, 20
    scales = torch.logspace(0, 1, d, dtype=DTYPE)
    x = torch.randn(n, d, generator=gen, dtype=DTYPE) * scales
    w_true = torch.randn(d, generator=gen, dtype=DTYPE) / scales
    y = torch.where(torch.rand(n, generator=gen, dtype=DTYPE) < torch.sigmoid(x @ w_true), 1.0, -1.0)
    x_np, y_np = x.numpy(), y.numpy()

    def value_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        margin = -y_np * (x_np @ w)
        return float(np.logaddexp(0.0, margin).mean()), x_np.T @ (-y_np / (1.0 + np.exp(-margin))) / n

    opt = minimize(value_and_grad, np.zeros(d), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    return x, y, float(opt.fun)


def _batches(n: int, b: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, b):
            yield perm[i : i + b]


def test_stochastic_sso_reaches_optimum_with_fewer_target_gradients_than_sgd() -> None:
    x, y, loss_star = _logistic_problem()
    n, d, b = *x.shape, 100

    def full_loss(w: torch.Tensor) -> float:
        return float(torch.nn.functional.softplus(-y * (x @ w.detach())).mean())

    gap0 = full_loss(torch.zeros(d, dtype=DTYPE)) - loss_star
    tol = 0.05 * gap0
    smoothness = float(torch.linalg.eigvalsh(x.T @ x / n).max()) / 4

    def sgd_count(lr: float, cap: int = 400) -> int:
        w = torch.zeros(d, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.SGD([w], lr=lr)
        batches = _batches(n, b, seed=1)
        for k in range(1, cap + 1):
            idx = next(batches)
            opt.zero_grad()
            torch.nn.functional.softplus(-y[idx] * (x[idx] @ w)).mean().backward()
            opt.step()
            if full_loss(w) - loss_star <= tol:
                return k
        return cap + 1

    # SGD at its best step size from a grid around 1/smoothness (16/smoothness is past the stable range).
    sgd_best = min(sgd_count(c / smoothness) for c in (2.0, 4.0, 8.0, 16.0))

    w = torch.zeros(d, dtype=DTYPE, requires_grad=True)
    # h is a mean over b logistic terms: 1/(4b)-smooth in z, so eta = 4b keeps the majorization.
    sso = SSO([w], eta=4.0 * b, inner_steps=20, line_search=True)
    batches = _batches(n, b, seed=1)
    sso_count = None
    for k in range(1, 101):
        idx = next(batches)
        xb, yb = x[idx], y[idx]
        sso.step(lambda xb=xb: xb @ w, lambda z, yb=yb: torch.nn.functional.softplus(-yb * z).mean())
        if sso_count is None and full_loss(w) - loss_star <= tol:
            sso_count = k
    final_gap = (full_loss(w) - loss_star) / gap0
    print(f"target-gradient evaluations to 5% gap: SSO {sso_count}, best SGD {sgd_best}; final gap {final_gap:.4f}")
    assert sso_count is not None
    assert sso_count < sgd_best
    assert final_gap < 0.05  # measured about 0.018 after 100 outer steps (constant eta: a noise floor remains)


# ---------------------------------------------------------------- inner state, schedules, resume


def test_reset_inner_state_restarts_adam_every_outer_step() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(12, 3, generator=gen, dtype=DTYPE)
    y = torch.where(torch.rand(12, generator=gen, dtype=DTYPE) < 0.5, 1.0, -1.0)
    h = _logistic_sum(y)
    eta = 2.0
    w = torch.zeros(3, dtype=DTYPE, requires_grad=True)
    sso = SSO([w], torch.optim.Adam, eta=eta, inner_steps=4, inner_lr=0.1)
    ref = torch.zeros(3, dtype=DTYPE, requires_grad=True)
    for _ in range(3):
        sso.step(lambda: x @ w, h)
        # Oracle: a fresh Adam on the hand-written surrogate.
        z_t = (x @ ref).detach().requires_grad_(True)
        (grad_h,) = torch.autograd.grad(h(z_t), z_t)
        adam = torch.optim.Adam([ref], lr=0.1)
        for _ in range(4):
            adam.zero_grad()
            delta = x @ ref - z_t.detach()
            ((grad_h * delta).sum() + delta.pow(2).sum() / (2 * eta)).backward()
            adam.step()
        torch.testing.assert_close(w, ref, rtol=1e-13, atol=1e-13)


def test_schedules() -> None:
    w = torch.zeros(1, requires_grad=True)
    assert SSO([w], eta=3.0, inner_lr=0.1).eta_at(9) == 3.0
    assert SSO([w], eta=3.0, inner_lr=0.1, schedule="sqrt").eta_at(9) == pytest.approx(1.0)
    sso = SSO([w], eta=3.0, inner_lr=0.1, schedule="exponential", total_steps=50)
    assert sso.eta_at(50) == pytest.approx(3.0 / 50)
    assert sso.eta_at(25) == pytest.approx(3.0 / math.sqrt(50))


def _resume_problem() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(16, 3, generator=gen, dtype=DTYPE)
    y = torch.where(torch.rand(16, generator=gen, dtype=DTYPE) < 0.5, 1.0, -1.0)
    return x, y, _mlp(gen, 3, 5)


def test_state_dict_round_trip_is_bitwise() -> None:
    x, y, params = _resume_problem()
    h = _logistic_sum(y)

    def make(ps: list[torch.Tensor]) -> SSO:
        return SSO(
            ps, torch.optim.Adam, eta=2.0, inner_steps=3, inner_lr=0.05, schedule="sqrt", reset_inner_state=False
        )

    straight = [p.detach().clone().requires_grad_(True) for p in params]
    sso = make(straight)
    for _ in range(6):
        sso.step(lambda: _mlp_forward(x, straight), h)

    first = [p.detach().clone().requires_grad_(True) for p in params]
    sso = make(first)
    for _ in range(3):
        sso.step(lambda: _mlp_forward(x, first), h)
    buffer = io.BytesIO()
    torch.save(sso.state_dict(), buffer)
    buffer.seek(0)
    resumed = [p.detach().clone().requires_grad_(True) for p in first]
    sso2 = make(resumed)
    sso2.load_state_dict(torch.load(buffer, weights_only=True))
    assert sso2.outer_step == 3
    for _ in range(3):
        sso2.step(lambda: _mlp_forward(x, resumed), h)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_param_groups_and_float32() -> None:
    x = torch.randn(10, 2)
    y = torch.where(torch.rand(10) < 0.5, 1.0, -1.0)
    w, bias = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    sso = SSO([{"params": [w]}, {"params": [bias], "lr": 0.0}], eta=4.0, inner_steps=3, inner_lr=0.1)
    result = sso.step(lambda: x @ w + bias, _logistic_sum(y))
    assert bias.item() == 0.0
    assert bool((w != 0).any())
    assert w.dtype == torch.float32
    assert len(result.surrogate_values) == 4
    assert result.inner_steps == 3
    assert w.grad is None


# ---------------------------------------------------------------- (6) bad input


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"eta": -1.0, "inner_lr": 0.1}, "eta"),
        ({"eta": float("nan"), "inner_lr": 0.1}, "eta"),
        ({"eta": 1.0, "inner_lr": 0.1, "inner_steps": 0}, "inner_steps"),
        ({"eta": 1.0, "inner_lr": 0.1, "inner_steps": 2.0}, "inner_steps"),
        ({"eta": 1.0, "inner_lr": 0.1, "schedule": "linear"}, "schedule"),
        ({"eta": 1.0, "inner_lr": 0.1, "schedule": "exponential"}, "total_steps"),
        ({"eta": 1.0}, "inner_lr"),
        ({"eta": 1.0, "inner_lr": -0.1}, "inner_lr"),
        ({"eta": 1.0, "line_search": True, "armijo_c": 1.5}, "armijo_c"),
        ({"eta": 1.0, "line_search": True, "backtrack": 1.0}, "backtrack"),
        ({"eta": 1.0, "line_search": True, "inner_optimizer": torch.optim.SGD}, "inner_optimizer"),
        ({"eta": 1.0, "inner_optimizer": lambda ps: "not an optimizer"}, "inner_optimizer"),  # pyright: ignore[reportUnknownLambdaType]
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], argument: str) -> None:
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(SciMLInputError) as info:
        SSO([w], **kwargs)  # pyright: ignore[reportArgumentType]
    assert info.value.argument == argument


def test_bad_params() -> None:
    with pytest.raises(SciMLInputError, match="params"):
        SSO([], eta=1.0, inner_lr=0.1)
    with pytest.raises(SciMLInputError, match="params"):
        SSO([torch.zeros(2)], eta=1.0, inner_lr=0.1)  # no requires_grad
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(SciMLInputError, match="params"):
        SSO([w, w], eta=1.0, inner_lr=0.1)


def test_surrogate_loss_rejects_bad_input() -> None:
    z = torch.zeros(3)
    with pytest.raises(SciMLInputError, match="grad_h"):
        surrogate_loss(z, z, torch.zeros(4), 1.0)
    with pytest.raises(SciMLInputError, match="z_t"):
        surrogate_loss(z, torch.zeros(3, 1), z, 1.0)
    with pytest.raises(SciMLInputError, match="eta"):
        surrogate_loss(z, z, z, 0.0)
    with pytest.raises(SciMLInputError, match="grad_h"):
        surrogate_loss(z, z, torch.tensor([0.0, float("inf"), 0.0]), 1.0)


def test_bad_step_inputs_leave_parameters_and_counter_alone() -> None:
    w = torch.ones(3, requires_grad=True)
    sso = SSO([w], eta=1.0, inner_lr=0.1)
    bad_cases = [
        (lambda: w, lambda z: torch.sqrt(z - 2.0).sum(), "target_loss"),  # NaN loss
        (lambda: w, lambda z: (z / (z - 1.0)).sum(), "target_loss"),  # infinite loss
        (lambda: w, lambda z: torch.sqrt((z - 1.0).pow(2).sum()), "target_loss"),  # finite loss, NaN gradient
        (lambda: w, lambda z: z, "target_loss"),  # not a scalar
        (lambda: w, lambda z: torch.tensor(1.0), "target_loss"),  # does not depend on z
        (lambda: w.detach().numpy(), lambda z: z.sum(), "targets_fn"),
        (lambda: w * float("nan"), lambda z: z.sum(), "targets_fn"),
        (lambda: torch.zeros(0), lambda z: z.sum(), "targets_fn"),
    ]
    for targets_fn, target_loss, argument in bad_cases:
        with pytest.raises(SciMLInputError) as info:
            sso.step(targets_fn, target_loss)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == argument
        assert torch.equal(w, torch.ones(3))
        assert sso.outer_step == 0
    with pytest.raises(SciMLInputError, match="depend on the parameters"):
        sso.step(lambda: torch.ones(3), lambda z: z.pow(2).sum())
    assert sso.outer_step == 0
