"""Tests of implicit differentiation (custom_root, custom_fixed_point, root_vjp, root_jvp).

Oracles: closed forms (ridge regression), unrolled differentiation of a converged inner loop, dense implicit
function theorem with Jacobians from torch.autograd.functional, finite differences (gradcheck).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sciml_bilevel._implicit import (
    _import_jvp_decompositions,  # pyright: ignore[reportPrivateUsage]
    custom_fixed_point,
    custom_root,
    root_jvp,
    root_vjp,
)
from sciml_protocols import (
    ConvergenceWarning,
    FixedPointCondition,
    RootCondition,
    SciMLError,
    SciMLInputError,
    stationarity_condition,
)
from sciml_protocols.testing import gradcheck_float64

F64 = torch.float64
METHODS = ["cg", "normal_cg", "gmres", "bicgstab", "dense"]


@pytest.fixture(autouse=True, scope="module")
def _quiet_forward_mode() -> None:
    # torch.func.jacfwd in the tests themselves (not only in the module) triggers the jvp decompositions import
    _import_jvp_decompositions()


def _data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 5, generator=g, dtype=F64)
    y = torch.randn(30, generator=g, dtype=F64)
    xv = torch.randn(12, 5, generator=g, dtype=F64)
    yv = torch.randn(12, generator=g, dtype=F64)
    return x, y, xv, yv


X, Y, XV, YV = _data()


def ridge_condition(w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return X.T @ (X @ w - Y) + lam * w


def ridge_closed_form(lam: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(X.T @ X + lam * torch.eye(5, dtype=F64), X.T @ Y)


def val_loss(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((XV @ w - YV) ** 2).sum()


def closed_hypergradient(lam: float) -> float:
    # dL/dlam = -(Xv^T r)^T (X^T X + lam I)^{-1} w*, r = Xv w* - yv
    a = X.T @ X + lam * torch.eye(5, dtype=F64)
    w = torch.linalg.solve(a, X.T @ Y)
    r = XV @ w - YV
    return float(-(XV.T @ r) @ torch.linalg.solve(a, w))


def gd_solver(init: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Plain gradient descent until the gradient is tiny (data-dependent stopping, .item(): not vmappable)."""
    step = 1.0 / (torch.linalg.matrix_norm(X, ord=2) ** 2 + lam)
    w = init
    for _ in range(20000):
        grad = ridge_condition(w, lam)
        if grad.norm().item() < 1e-13:
            break
        w = w - step * grad
    return w


@pytest.mark.parametrize("method", METHODS)
def test_ridge_hypergradient_matches_closed_form(method: str) -> None:
    solver = custom_root(ridge_condition, solve=method)(gd_solver)
    lam = torch.tensor(2.5, dtype=F64, requires_grad=True)
    w = solver(torch.zeros(5, dtype=F64), lam)
    (g,) = torch.autograd.grad(val_loss(w), lam)
    assert abs(g.item() - closed_hypergradient(2.5)) < 1e-10
    assert solver.last_backward is not None
    assert solver.last_backward.converged


def test_direct_solver_and_symmetric_default() -> None:
    solver = custom_root(ridge_condition, symmetric=True)(lambda init, lam: ridge_closed_form(lam))
    assert solver.options.solve == "cg"
    lam = torch.tensor(0.7, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(val_loss(solver(None, lam)), lam)
    assert abs(g.item() - closed_hypergradient(0.7)) < 1e-10


def test_matches_unrolled_differentiation() -> None:
    lam0 = 1.3
    lam = torch.tensor(lam0, dtype=F64, requires_grad=True)
    step = 1.0 / (torch.linalg.matrix_norm(X, ord=2) ** 2 + lam0)
    w = torch.zeros(5, dtype=F64)
    for _ in range(3000):  # unrolled: the graph of every step is kept
        w = w - step * ridge_condition(w, lam)
    (unrolled,) = torch.autograd.grad(val_loss(w), lam)
    solver = custom_root(ridge_condition)(gd_solver)
    (implicit,) = torch.autograd.grad(val_loss(solver(torch.zeros(5, dtype=F64), lam)), lam)
    assert abs(unrolled.item() - implicit.item()) < 1e-9


def contraction(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([[0.3, -0.2, 0.1], [0.1, 0.4, -0.2], [-0.1, 0.2, 0.3]], dtype=F64)
    return 0.8 * torch.tanh(w @ z + theta[:3]) + theta[3:] ** 2


def iterate(init: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    z = init
    for _ in range(200):
        z = contraction(z, theta)
    return z


@pytest.mark.parametrize("method", ["gmres", "neumann", "dense"])
def test_fixed_point_matches_dense_implicit_function_theorem(method: str) -> None:
    theta = torch.tensor([0.2, -0.5, 1.0, 0.3, 0.7, -0.4], dtype=F64)
    solver = custom_fixed_point(contraction, solve=method)(iterate)
    jac = torch.func.jacrev(lambda t: solver(torch.zeros(3, dtype=F64), t))(theta)
    z = iterate(torch.zeros(3, dtype=F64), theta)
    dz = torch.autograd.functional.jacobian(lambda v: contraction(v, theta), z)
    dtheta = torch.autograd.functional.jacobian(lambda t: contraction(z, t), theta)
    oracle = torch.linalg.solve(torch.eye(3, dtype=F64) - dz, dtheta)
    # the Neumann series stops at a relative residual of tol = 1e-10
    torch.testing.assert_close(jac, oracle, atol=1e-9 if method == "neumann" else 1e-10, rtol=0)


def test_vjp_and_jvp_modes_agree() -> None:
    theta = torch.tensor([0.2, -0.5, 1.0, 0.3, 0.7, -0.4], dtype=F64)
    solver = custom_fixed_point(contraction)(iterate)
    f = lambda t: solver(torch.zeros(3, dtype=F64), t)  # noqa: E731
    rev = torch.func.jacrev(f)(theta)
    fwd = torch.func.jacfwd(f)(theta)
    torch.testing.assert_close(rev, fwd, atol=1e-11, rtol=0)
    z = iterate(torch.zeros(3, dtype=F64), theta)
    residual = lambda z, t: contraction(z, t) - z  # noqa: E731
    tangent = torch.linspace(-1, 1, 6, dtype=F64)
    jvp = root_jvp(residual, z, (theta,), (tangent,))
    torch.testing.assert_close(jvp, rev @ tangent, atol=1e-11, rtol=0)
    cotangent = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    (vjp,) = root_vjp(residual, z, (theta,), cotangent)
    torch.testing.assert_close(vjp, cotangent @ rev, atol=1e-11, rtol=0)
    # forward mode with plain autograd's dual numbers as well
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level():
        out = f(fwad.make_dual(theta, tangent))
        torch.testing.assert_close(fwad.unpack_dual(out).tangent, rev @ tangent, atol=1e-11, rtol=0)


def test_pytree_theta_and_solution() -> None:
    # z = (a, b): (1 + s) a = u, b = s * v ; theta = {"s": s, "u": u, "v": v}, plus a constant scale
    def condition(z: tuple[torch.Tensor, torch.Tensor], theta: dict[str, torch.Tensor], scale: float) -> Any:
        a, b = z
        return (scale * ((1 + theta["s"]) * a - theta["u"]), b - theta["s"] * theta["v"])

    @custom_root(condition)
    def solver(init: Any, theta: dict[str, torch.Tensor], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return theta["u"] / (1 + theta["s"]), theta["s"] * theta["v"]

    def closed(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        a, b = theta["u"] / (1 + theta["s"]), theta["s"] * theta["v"]
        return (a**2).sum() + (a * b).sum()

    theta = {"s": torch.tensor(0.4, dtype=F64), "u": torch.arange(3.0, dtype=F64), "v": torch.ones(3, dtype=F64)}

    def outer(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        a, b = solver(None, theta, 3.0)
        return (a**2).sum() + (a * b).sum()

    got = torch.func.grad(outer)(theta)
    want = torch.func.grad(closed)(theta)
    for key in theta:
        torch.testing.assert_close(got[key], want[key], atol=1e-12, rtol=0)
    # the same with plain autograd
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grads = torch.autograd.grad(outer(leaves), list(leaves.values()))
    for key, g in zip(leaves, grads, strict=True):
        torch.testing.assert_close(g, want[key], atol=1e-12, rtol=0)


def test_vmap_over_hyperparameters_and_grad() -> None:
    # under transforms the linear solver runs max_iter masked steps; CG is exact after n = 5 of them
    solver = custom_root(ridge_condition, symmetric=True, max_iter=8)(gd_solver)
    lams = torch.tensor([0.1, 1.0, 5.0, 20.0], dtype=F64)

    def hyper_objective(lam: torch.Tensor) -> torch.Tensor:
        return val_loss(solver(torch.zeros(5, dtype=F64), lam))

    solutions = torch.func.vmap(lambda lam: solver(torch.zeros(5, dtype=F64), lam))(lams)
    torch.testing.assert_close(solutions, torch.stack([ridge_closed_form(lam) for lam in lams]), atol=1e-12, rtol=0)
    want = torch.tensor([closed_hypergradient(float(lam)) for lam in lams], dtype=F64)
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(hyper_objective))(lams), want, atol=1e-10, rtol=0)
    summed = torch.func.grad(lambda lam: torch.func.vmap(hyper_objective)(lam).sum())(lams)
    torch.testing.assert_close(summed, want, atol=1e-10, rtol=0)
    # vmap over the initial point too (in_dims on init only)
    inits = torch.randn(3, 5, dtype=F64)
    out = torch.func.vmap(solver, in_dims=(0, None))(inits, lams[1])
    torch.testing.assert_close(out, ridge_closed_form(lams[1]).expand(3, 5), atol=1e-12, rtol=0)


def test_hessian_and_double_backward() -> None:
    solver = custom_root(ridge_condition, solve="gmres")(lambda init, lam: ridge_closed_form(lam))
    lam = torch.tensor(1.7, dtype=F64)

    def outer(lam: torch.Tensor) -> torch.Tensor:
        return val_loss(solver(None, lam))

    want = torch.autograd.functional.hessian(lambda lam: val_loss(ridge_closed_form(lam)), lam)
    torch.testing.assert_close(torch.func.jacrev(torch.func.jacrev(outer))(lam), want, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.func.jacfwd(torch.func.jacrev(outer))(lam), want, atol=1e-10, rtol=0)
    lam_leaf = lam.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(outer(lam_leaf), lam_leaf, create_graph=True)
    (h,) = torch.autograd.grad(g, lam_leaf)
    torch.testing.assert_close(h, want, atol=1e-10, rtol=0)


def test_gradcheck_float64() -> None:
    a = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.5]], dtype=F64)

    def condition(z: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return a @ z + c * z**3 - b  # strictly monotone for c > 0

    @custom_root(condition, solve="gmres")
    def newton(init: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z = init
        for _ in range(50):
            jac = a + torch.diag(3 * c * z**2)
            z = z - torch.linalg.solve(jac, condition(z, b, c))
        return z

    b = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    c = torch.tensor(0.4, dtype=F64)
    gradcheck_float64(lambda b, c: newton(torch.zeros(3, dtype=F64), b, c), b, c, gradgrad=True)


def _saved_tensor_count(fn: Any) -> int:
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return count


def test_memory_does_not_grow_with_inner_iterations() -> None:
    lam = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def make(n_steps: int) -> Any:
        def loop(init: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
            w = init
            for _ in range(n_steps):
                w = w - 0.001 * ridge_condition(w, lam)
            return w

        return loop

    counts = []
    for n_steps in (5, 500):
        solver = custom_root(ridge_condition, on_failure="ignore")(make(n_steps))
        counts.append(_saved_tensor_count(lambda: val_loss(solver(torch.zeros(5, dtype=F64), lam))))  # noqa: B023
    unrolled = [_saved_tensor_count(lambda: val_loss(make(n)(torch.zeros(5, dtype=F64), lam))) for n in (5, 500)]  # noqa: B023
    assert counts[0] == counts[1] <= 8
    assert unrolled[1] > 50 * unrolled[0] / 5  # the hook does see the unrolled graph


def test_optimality_conditions_from_protocols() -> None:
    lam = torch.tensor(2.5, dtype=F64, requires_grad=True)
    for condition in (
        RootCondition(ridge_condition),
        stationarity_condition(lambda w, lam: 0.5 * ((X @ w - Y) ** 2).sum() + 0.5 * lam * (w * w).sum()),
    ):
        solver = custom_root(condition, symmetric=True)(lambda init, lam: ridge_closed_form(lam))
        (g,) = torch.autograd.grad(val_loss(solver(None, lam)), lam)
        assert abs(g.item() - closed_hypergradient(2.5)) < 1e-10
    # fixed-point form of gradient descent on the ridge objective, step 1e-2
    fixed = FixedPointCondition(lambda w, lam: w - 1e-2 * ridge_condition(w, lam))
    solver = custom_fixed_point(fixed)(lambda init, lam: ridge_closed_form(lam))
    (g,) = torch.autograd.grad(val_loss(solver(None, lam)), lam)
    assert abs(g.item() - closed_hypergradient(2.5)) < 1e-10


def test_has_aux_and_batched_solution() -> None:
    # a batch of independent scalar problems z_i^2 = a_i, in one tensor (F batched the same way)
    @custom_root(lambda z, a: z * z - a, has_aux=True)
    def sqrt_solver(init: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return a.sqrt(), {"n_iter": 1, "norm": a.norm()}

    a = torch.tensor([1.0, 4.0, 9.0], dtype=F64, requires_grad=True)
    z, aux = sqrt_solver(torch.ones(3, dtype=F64), a)
    assert aux["n_iter"] == 1
    assert not aux["norm"].requires_grad
    (g,) = torch.autograd.grad(z.sum(), a)
    torch.testing.assert_close(g, 0.5 / a.detach().sqrt(), atol=1e-12, rtol=0)


def test_output_structure_mismatch_raises() -> None:
    solver = custom_root(lambda z, a: (z * a).sum())(lambda init, a: a.clone())
    a = torch.ones(3, dtype=F64, requires_grad=True)
    with pytest.raises(SciMLInputError, match=r"optimality_fun.*shape of z \(3,\), returned \(\)"):
        solver(None, a).sum().backward()
    solver = custom_root(lambda z, a: [z - a])(lambda init, a: a.clone())
    with pytest.raises(SciMLInputError, match="optimality_fun.*structure"):
        solver(None, a).sum().backward()


def test_non_tensor_leaves_raise() -> None:
    solver = custom_root(lambda z, theta: z - theta["a"])(lambda init, theta: theta["a"].clone())
    with pytest.raises(SciMLInputError, match=r"theta\[0\]\['b'\] is a float"):
        solver(None, {"a": torch.ones(2), "b": 1.0})
    with pytest.raises(SciMLInputError, match="solution leaf"):
        custom_root(lambda z, a: z)(lambda init, a: [1.0])(None, torch.ones(1))
    with pytest.raises(SciMLInputError, match="solve"):
        custom_root(lambda z, a: z, solve="lu")
    with pytest.raises(SciMLInputError, match="on_failure"):
        custom_root(lambda z, a: z, on_failure="skip")  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="optimality_fun"):
        custom_root(3)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("method", ["gmres", "cg", "dense"])
def test_singular_adjoint_system_is_reported(method: str) -> None:
    # F = (z - a)^2 has the root z = a with dF/dz = 0 there: the adjoint system is singular
    condition = lambda z, a: (z - a) ** 2  # noqa: E731
    solver = custom_root(condition, solve=method, max_iter=20)(lambda init, a: a.clone())
    a = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    with pytest.warns(ConvergenceWarning, match="singular"):
        (g,) = torch.autograd.grad(solver(None, a).sum(), a)
    assert torch.isfinite(g).all()
    assert solver.last_backward is not None
    assert not solver.last_backward.converged
    strict = custom_root(condition, solve=method, max_iter=20, on_failure="raise")(lambda init, a: a.clone())
    with pytest.raises(SciMLError):
        torch.autograd.grad(strict(None, a).sum(), a)


def test_custom_linear_solver_callable() -> None:
    def dense(matvec: Any, b: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(b.numel(), dtype=b.dtype)
        return torch.linalg.solve(torch.stack([matvec(e) for e in eye], dim=1), b)

    solver = custom_root(ridge_condition, solve=dense)(lambda init, lam: ridge_closed_form(lam))
    lam = torch.tensor(0.3, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(val_loss(solver(None, lam)), lam)
    assert abs(g.item() - closed_hypergradient(0.3)) < 1e-10


def test_integer_and_constant_parameters_pass_through() -> None:
    # z* = theta[index] * c: the index tensor and the Python number are constants, only theta gets a gradient
    def condition(z: torch.Tensor, theta: torch.Tensor, index: torch.Tensor, c: float) -> torch.Tensor:
        return z - c * theta[index]

    solver = custom_root(condition, solve="dense")(lambda init, theta, index, c: c * theta[index])
    theta = torch.tensor([1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    index = torch.tensor([2, 0])
    (g,) = torch.autograd.grad(solver(None, theta, index, 2.0).sum(), theta)
    torch.testing.assert_close(g, torch.tensor([2.0, 0.0, 2.0], dtype=F64), atol=1e-14, rtol=0)


def test_fixed_point_condition_with_neumann_series() -> None:
    theta = torch.tensor([0.2, -0.5, 1.0, 0.3, 0.7, -0.4], dtype=F64, requires_grad=True)
    solver = custom_fixed_point(FixedPointCondition(contraction), solve="neumann")(iterate)
    cotangent = torch.tensor([1.0, 0.5, -1.0], dtype=F64)
    (g,) = torch.autograd.grad(solver(torch.zeros(3, dtype=F64), theta), theta, cotangent)
    z = iterate(torch.zeros(3, dtype=F64), theta.detach())
    dz = torch.autograd.functional.jacobian(lambda v: contraction(v, theta.detach()), z)
    dtheta = torch.autograd.functional.jacobian(lambda t: contraction(z, t), theta.detach())
    oracle = cotangent @ torch.linalg.solve(torch.eye(3, dtype=F64) - dz, dtheta)
    torch.testing.assert_close(g, oracle, atol=1e-9, rtol=0)
    assert solver.last_backward is not None
    assert solver.last_backward.converged
