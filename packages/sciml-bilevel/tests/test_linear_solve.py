"""Tests of the matrix-free linear solvers; oracles are torch.linalg.solve, closed forms and scipy.sparse.linalg."""

from __future__ import annotations

import math

import pytest
import torch
from sciml_bilevel._linear_solve import linear_solve
from sciml_protocols import SciMLInputError

ITERATIVE = ("cg", "normal_cg", "gmres", "bicgstab", "neumann")
GENERAL = ("normal_cg", "gmres", "bicgstab", "dense")
ALL = (*ITERATIVE, "dense")


def _spd(n: int, seed: int, dtype: torch.dtype = torch.float64, shift: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (q @ q.T / n + shift * torch.eye(n, dtype=torch.float64)).to(dtype)


def _nonsymmetric(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = 3.0 * torch.eye(n, dtype=torch.float64) + torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    return a.to(dtype)


def _rhs(n: int, seed: int, dtype: torch.dtype = torch.float64, batch: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if batch is None else (batch, n)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _batched_matvec(mats: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (mats * v.unsqueeze(-2)).sum(dim=-1)  # broadcast-and-sum: tiny bmm calls are erratically slow on CPU


def _alpha(a: torch.Tensor) -> float:
    # 1 / ||A||_2 makes I - alpha A a contraction for a positive definite A (and for the shifted nonsymmetric one).
    return 1.0 / float(torch.linalg.matrix_norm(a.double(), ord=2))


def _kwargs(method: str, a: torch.Tensor) -> dict[str, float]:
    return {"neumann_alpha": _alpha(a)} if method == "neumann" else {}


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spd_system_matches_direct_solve(method: str, dtype: torch.dtype) -> None:
    n = 30
    a, b = _spd(n, 0, dtype), _rhs(n, 1, dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    sol = linear_solve(lambda v: a @ v, b, method=method, tol=tol, **_kwargs(method, a))
    expected = torch.linalg.solve(a.double(), b.double())
    assert sol.converged, sol.stats["reason"]
    assert sol.stats["reason"] is None
    assert sol.value.dtype == dtype
    assert sol.value.shape == b.shape
    error = float((sol.value.double() - expected).norm() / expected.norm())
    assert error < (1e-8 if dtype == torch.float64 else 1e-4)
    # residual is the recomputed relative residual, checked independently here
    true_residual = float((b.double() - a.double() @ sol.value.double()).norm() / b.double().norm())
    assert float(sol.residual) == pytest.approx(true_residual, rel=1e-2 if dtype == torch.float32 else 1e-6, abs=1e-7)
    if method != "dense":
        assert float(sol.residual) <= 10 * tol
        assert sol.history is not None
        assert sol.history.shape == (sol.n_iter + 1,)
        assert float(sol.history[0]) == 1.0


@pytest.mark.parametrize("method", GENERAL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nonsymmetric_system_matches_direct_solve(method: str, dtype: torch.dtype) -> None:
    n = 25
    a, b = _nonsymmetric(n, 2, dtype), _rhs(n, 3, dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    sol = linear_solve(lambda v: a @ v, b, method=method, tol=tol, rmatvec=lambda u: a.T @ u)
    expected = torch.linalg.solve(a.double(), b.double())
    assert sol.converged, sol.stats["reason"]
    assert float((sol.value.double() - expected).norm() / expected.norm()) < (1e-8 if dtype == torch.float64 else 1e-4)


def test_normal_cg_builds_the_transpose_by_autograd() -> None:
    a, b = _nonsymmetric(12, 4), _rhs(12, 5)
    sol = linear_solve(lambda v: a @ v, b, method="normal_cg")
    assert sol.converged
    torch.testing.assert_close(sol.value, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_cg_fails_honestly_on_a_nonsymmetric_indefinite_system() -> None:
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # symmetric indefinite: p^T A p = 0 first step
    sol = linear_solve(lambda v: a @ v, torch.tensor([1.0, 0.0], dtype=torch.float64), method="cg")
    assert not sol.converged
    assert sol.stats["reason"] == "breakdown"
    assert torch.isfinite(sol.value).all()


def test_neumann_on_a_contraction_matches_the_closed_form_series() -> None:
    n = 10
    g = torch.Generator().manual_seed(6)
    e = torch.randn(n, n, generator=g, dtype=torch.float64)
    e = 0.5 * e / torch.linalg.matrix_norm(e, ord=2)  # ||I - A|| = 0.5
    a = torch.eye(n, dtype=torch.float64) - e
    b = _rhs(n, 7)
    terms = 8
    sol = linear_solve(lambda v: a @ v, b, method="neumann", max_iter=terms, tol=1e-14)
    series = sum((torch.linalg.matrix_power(e, k) @ b for k in range(terms)), torch.zeros(n, dtype=torch.float64))
    torch.testing.assert_close(sol.value, series, rtol=1e-12, atol=1e-12)
    assert not sol.converged
    assert sol.stats["reason"] == "max_iter"
    assert sol.n_iter == terms
    # the residual after K terms is E^K b, so it is at most 0.5^K ||b||
    assert float(sol.residual) <= 0.5**terms * (1 + 1e-9)
    full = linear_solve(lambda v: a @ v, b, method="neumann", tol=1e-12)
    assert full.converged
    torch.testing.assert_close(full.value, torch.linalg.solve(a, b), rtol=1e-10, atol=1e-10)
    # a scaled step alpha: x = alpha sum (I - alpha A)^k b with A = 4 (I - E)
    scaled = linear_solve(lambda v: 4 * a @ v, b, method="neumann", neumann_alpha=0.25, tol=1e-12)
    torch.testing.assert_close(scaled.value, torch.linalg.solve(4 * a, b), rtol=1e-10, atol=1e-10)


def test_jacobi_preconditioner_reduces_iterations_on_a_badly_scaled_spd_system() -> None:
    n = 60
    scale = torch.logspace(0, 4, n, dtype=torch.float64)
    a = scale.sqrt()[:, None] * _spd(n, 8) * scale.sqrt()[None, :]
    b = _rhs(n, 9)
    inverse_diagonal = 1.0 / torch.diagonal(a)
    plain = linear_solve(lambda v: a @ v, b, method="cg", max_iter=2000)
    jacobi = linear_solve(lambda v: a @ v, b, method="cg", preconditioner=lambda v: inverse_diagonal * v)
    assert plain.converged
    assert jacobi.converged
    assert jacobi.n_iter < plain.n_iter / 2
    torch.testing.assert_close(jacobi.value, torch.linalg.solve(a, b), rtol=1e-7, atol=0.0)
    for method in ("gmres", "bicgstab"):
        pre = linear_solve(lambda v: a @ v, b, method=method, preconditioner=lambda v: inverse_diagonal * v)
        assert pre.converged, (method, pre.stats["reason"])
        torch.testing.assert_close(pre.value, torch.linalg.solve(a, b), rtol=1e-7, atol=0.0)


@pytest.mark.parametrize("method", ITERATIVE)
def test_batched_systems_converge_independently(method: str) -> None:
    n = 20
    # system 0 is the identity (one iteration), system 1 a harder SPD matrix
    mats = torch.stack([torch.eye(n, dtype=torch.float64), _spd(n, 10, shift=0.5 if method == "neumann" else 0.05)])
    b = _rhs(n, 11, batch=2)
    alpha = _alpha(mats[1])
    kwargs = {"neumann_alpha": alpha} if method == "neumann" else {}
    max_iter = 2000 if method == "neumann" else None
    sol = linear_solve(
        lambda v: _batched_matvec(mats, v),
        b,
        method=method,
        rmatvec=lambda u: _batched_matvec(mats.mT, u),
        max_iter=max_iter,
        **kwargs,
    )
    assert sol.converged, sol.stats["reason"]
    torch.testing.assert_close(sol.value, torch.linalg.solve(mats, b), rtol=1e-8, atol=1e-10)
    iters = sol.stats["n_iter_per_system"]
    assert iters.shape == (2,)
    assert sol.residual.shape == (2,)
    assert int(iters[0]) < int(iters[1])
    if method != "neumann":
        assert int(iters[0]) == 1
    assert sol.n_iter == int(iters[1])
    assert sol.history is not None
    assert sol.history.shape[1] == 2


def test_one_failing_system_does_not_spoil_the_others() -> None:
    n = 6
    singular = torch.zeros(n, n, dtype=torch.float64)
    singular[:3, :3] = torch.eye(3, dtype=torch.float64)
    mats = torch.stack([_spd(n, 12), singular])
    b = torch.ones(2, n, dtype=torch.float64)
    sol = linear_solve(lambda v: _batched_matvec(mats, v), b, method="gmres")
    assert not sol.converged
    assert sol.stats["converged_per_system"].tolist() == [True, False]
    assert sol.stats["reason"] == "breakdown"
    torch.testing.assert_close(sol.value[0], torch.linalg.solve(mats[0], b[0]))
    assert torch.isfinite(sol.value).all()
    # GMRES finds the least-squares point of the Krylov space: the first three entries are exact
    torch.testing.assert_close(sol.value[1, :3], torch.ones(3, dtype=torch.float64))


def test_gmres_restart_against_scipy() -> None:
    import numpy as np
    import scipy.sparse.linalg as scipy_linalg

    n = 60
    g = torch.Generator().manual_seed(13)
    # eigenvalues spread over [1, 10] plus a nonnormal part: restarted GMRES needs several cycles
    a = torch.diag(torch.linspace(1, 10, n, dtype=torch.float64)) + 0.5 * torch.randn(
        n, n, generator=g, dtype=torch.float64
    ) / math.sqrt(n)
    b = _rhs(n, 14)
    full = linear_solve(lambda v: a @ v, b, method="gmres", restart=n)
    short = linear_solve(lambda v: a @ v, b, method="gmres", restart=5)
    assert full.converged
    assert short.converged
    assert short.n_iter > full.n_iter  # restarting loses the Krylov space
    expected = torch.linalg.solve(a, b)
    torch.testing.assert_close(short.value, expected, rtol=1e-8, atol=1e-10)
    assert short.stats["restart"] == 5

    counts: list[int] = []
    x, info = scipy_linalg.gmres(
        a.numpy(),
        b.numpy(),
        rtol=1e-10,
        atol=0.0,
        restart=5,
        maxiter=1000,
        callback=lambda _: counts.append(1),
        callback_type="pr_norm",
    )
    assert info == 0
    np.testing.assert_allclose(short.value.numpy(), x, rtol=1e-7, atol=1e-9)
    # the same algorithm: the same number of inner steps up to rounding at the last cycle
    assert abs(short.n_iter - len(counts)) <= 5


def test_bicgstab_and_cg_iterations_against_scipy() -> None:
    import scipy.sparse.linalg as scipy_linalg

    n = 50
    a, b = _spd(n, 15, shift=0.1), _rhs(n, 16)
    for name, method in (("cg", "cg"), ("bicgstab", "bicgstab")):
        counts: list[int] = []

        def count(_: object, counts: list[int] = counts) -> None:
            counts.append(1)

        getattr(scipy_linalg, name)(a.numpy(), b.numpy(), rtol=1e-10, atol=0.0, maxiter=1000, callback=count)
        sol = linear_solve(lambda v: a @ v, b, method=method)
        assert sol.converged
        assert abs(sol.n_iter - len(counts)) <= 2, (method, sol.n_iter, len(counts))


@pytest.mark.parametrize("method", ITERATIVE)
def test_max_iter_cap_is_reported(method: str) -> None:
    n = 40
    a, b = _spd(n, 17, shift=0.01), _rhs(n, 18)
    sol = linear_solve(lambda v: a @ v, b, method=method, max_iter=3, **_kwargs(method, a))
    assert not sol.converged
    assert sol.stats["reason"] == "max_iter"
    assert sol.n_iter == 3
    assert sol.stats["status_per_system"].item() == 1
    assert torch.isfinite(sol.value).all()
    assert float(sol.residual) > 1e-10


def test_singular_dense_system_is_reported_without_nan() -> None:
    a = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    sol = linear_solve(lambda v: a @ v, b, method="dense")
    assert not sol.converged
    assert sol.stats["reason"] == "singular"
    assert torch.isfinite(sol.value).all()
    torch.testing.assert_close(sol.value, torch.linalg.pinv(a) @ b)  # minimum-norm least squares
    consistent = linear_solve(lambda v: a @ v, torch.tensor([1.0, 2.0], dtype=torch.float64), method="dense")
    assert float(consistent.residual) < 1e-12
    assert not consistent.converged


@pytest.mark.parametrize("method", ALL)
def test_ridge_solves_the_shifted_system(method: str) -> None:
    n, ridge = 15, 0.7
    a, b = _spd(n, 19), _rhs(n, 20)
    shifted = a + ridge * torch.eye(n, dtype=torch.float64)
    sol = linear_solve(
        lambda v: a @ v, b, method=method, ridge=ridge, rmatvec=lambda u: a.T @ u, **_kwargs(method, shifted)
    )
    assert sol.converged
    torch.testing.assert_close(sol.value, torch.linalg.solve(shifted, b), rtol=1e-8, atol=1e-10)


def test_x0_and_arbitrary_shapes() -> None:
    a = _spd(12, 21)
    b = _rhs(12, 22)
    expected = torch.linalg.solve(a, b)
    warm = linear_solve(lambda v: a @ v, b, method="cg", x0=expected + 1e-6)
    cold = linear_solve(lambda v: a @ v, b, method="cg")
    assert warm.converged
    assert warm.n_iter < cold.n_iter
    # a batch of two 2 x 3 unknowns with A acting on the flattened 6-vector
    a6 = _spd(6, 23)
    b3 = _rhs(6, 24, batch=2).reshape(2, 2, 3)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        assert v.shape == (2, 2, 3)
        return (v.reshape(2, 6) @ a6.T).reshape(2, 2, 3)

    for method in ALL:
        sol = linear_solve(matvec, b3, method=method, rmatvec=matvec, **_kwargs(method, a6))
        assert sol.value.shape == (2, 2, 3)
        assert sol.residual.shape == (2,)
        torch.testing.assert_close(sol.value.reshape(2, 6), torch.linalg.solve(a6, b3.reshape(2, 6).T).T)
    for method in ALL:  # a 0-d right-hand side is one scalar equation 4 x = 2
        scalar = linear_solve(
            lambda v: 4.0 * v,
            torch.tensor(2.0, dtype=torch.float64),
            method=method,
            rmatvec=lambda u: 4.0 * u,
            neumann_alpha=0.25,
        )
        assert scalar.value.shape == ()
        assert float(scalar.value) == pytest.approx(0.5, rel=1e-12)
    zero = linear_solve(lambda v: a @ v, torch.zeros(12, dtype=torch.float64), method="gmres")
    assert zero.converged
    assert zero.n_iter == 0
    assert float(zero.residual) == 0.0


def test_non_finite_products_are_reported() -> None:
    a = _spd(5, 25)
    calls = [0]

    def exploding(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return a @ v if calls[0] < 3 else torch.full_like(v, math.inf)

    sol = linear_solve(exploding, _rhs(5, 26), method="cg")
    assert not sol.converged
    assert sol.stats["reason"] is not None
    assert "non-finite" in sol.stats["reason"]
    assert torch.isfinite(sol.value).all()


def test_b_requiring_grad_does_not_break() -> None:
    a = _spd(8, 27)
    b = _rhs(8, 28).requires_grad_()
    sol = linear_solve(lambda v: a @ v, b, method="gmres")
    assert sol.converged
    (grad,) = torch.autograd.grad(sol.value.sum(), b)
    # unrolled gradient of a converged solve: A^{-T} 1
    torch.testing.assert_close(grad, torch.linalg.solve(a.T, torch.ones(8, dtype=torch.float64)))


@pytest.mark.parametrize("method", ["cg", "gmres", "bicgstab", "dense"])
def test_composes_with_vmap_and_jacrev(method: str) -> None:
    from torch.func import jacrev, vmap

    n = 6
    a = _spd(n, 29) if method == "cg" else _nonsymmetric(n, 29)
    inverse = torch.linalg.inv(a)
    rhs = _rhs(n, 30, batch=4)

    def solve(v: torch.Tensor) -> torch.Tensor:
        sol = linear_solve(lambda u: a @ u, v, method=method, max_iter=None if method == "dense" else 3 * n)
        assert sol.stats["under_transform"]
        return sol.value

    torch.testing.assert_close(vmap(solve)(rhs), torch.linalg.solve(a, rhs.T).T, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(jacrev(solve)(rhs[0]), inverse, rtol=1e-8, atol=1e-9)
    # and the jacobian of every system of a batch at once
    jac = vmap(jacrev(solve))(rhs[:2])
    assert torch.isfinite(jac).all()
    torch.testing.assert_close(jac, inverse.expand(2, n, n), rtol=1e-8, atol=1e-9)


def test_vmap_reports_unchecked_convergence() -> None:
    from torch.func import vmap

    a = _spd(4, 31)
    seen: list[object] = []

    def solve(v: torch.Tensor) -> torch.Tensor:
        sol = linear_solve(lambda u: a @ u, v, method="cg")
        seen.append((sol.converged, sol.stats["reason"], sol.n_iter))
        return sol.value

    vmap(solve)(_rhs(4, 32, batch=3))
    assert seen == [(False, "unchecked (torch.func transform active)", 40)]


def test_input_validation() -> None:
    a = _spd(3, 33)
    b = _rhs(3, 34)

    def good(v: torch.Tensor) -> torch.Tensor:
        return a @ v

    cases = [
        ("matvec", lambda: linear_solve(a, b)),  # pyright: ignore[reportArgumentType]
        ("matvec", lambda: linear_solve(lambda v: torch.ones(4, dtype=torch.float64), b)),
        ("matvec", lambda: linear_solve(lambda v: (a @ v).float(), b)),
        ("matvec", lambda: linear_solve(lambda v: (a @ v).to("meta"), b)),
        ("b", lambda: linear_solve(good, torch.tensor([1.0, math.nan, 0.0], dtype=torch.float64))),
        ("b", lambda: linear_solve(good, torch.tensor([1, 2, 3]))),
        ("b", lambda: linear_solve(good, torch.zeros(0, dtype=torch.float64))),
        ("method", lambda: linear_solve(good, b, method="lu")),
        ("tol", lambda: linear_solve(good, b, tol=0.0)),
        ("tol", lambda: linear_solve(good, b, tol=-1e-3)),
        ("atol", lambda: linear_solve(good, b, atol=-1.0)),
        ("max_iter", lambda: linear_solve(good, b, max_iter=0)),
        ("restart", lambda: linear_solve(good, b, restart=0)),
        ("neumann_alpha", lambda: linear_solve(good, b, method="neumann", neumann_alpha=0.0)),
        ("ridge", lambda: linear_solve(good, b, ridge=-1.0)),
        ("x0", lambda: linear_solve(good, b, x0=torch.zeros(4, dtype=torch.float64))),
        ("preconditioner", lambda: linear_solve(good, b, preconditioner=3)),  # pyright: ignore[reportArgumentType]
        ("rmatvec", lambda: linear_solve(lambda v: (a @ v).detach(), b, method="normal_cg")),
    ]
    for argument, call in cases:
        with pytest.raises(SciMLInputError) as info:
            call()
        assert info.value.argument == argument, (argument, str(info.value))
