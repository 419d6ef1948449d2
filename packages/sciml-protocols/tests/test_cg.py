from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sciml_protocols import (
    DenseOperator,
    DiagonalOperator,
    FunctionOperator,
    KroneckerOperator,
    SciMLInputError,
    cg,
    jacobi_preconditioner,
)

DTYPES = [torch.float32, torch.float64]


def spd(n: int, *, condition: float, dtype: torch.dtype, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Q diag(lambda) Q^T with eigenvalues log-spaced in [1, condition]."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(condition), n, dtype=torch.float64)
    matrix = (q * eigenvalues) @ q.mT
    return (0.5 * (matrix + matrix.mT)).to(dtype)


def badly_scaled(n: int = 100) -> torch.Tensor:
    """D^{1/2} B D^{1/2}: B tridiagonal and diagonally dominant, D spanning four decades (so A is too)."""
    generator = torch.Generator().manual_seed(7)
    off = 0.4 * (2 * torch.rand(n - 1, generator=generator, dtype=torch.float64) - 1)
    b = torch.eye(n, dtype=torch.float64) + torch.diag(off, 1) + torch.diag(off, -1)
    scale = torch.logspace(0, 4, n, dtype=torch.float64).sqrt()
    permutation = torch.randperm(n, generator=generator)
    scale = scale[permutation]
    return scale[:, None] * b * scale[None, :]


def rhs(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((torch.linalg.vector_norm(x - reference, dim=-1) / torch.linalg.vector_norm(reference, dim=-1)).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("precondition", [False, True])
def test_matches_direct_solve_on_batched_spd_systems(dtype: torch.dtype, precondition: bool) -> None:
    condition = 100.0
    a = spd(40, condition=condition, dtype=dtype, seed=0, batch=(3,))
    b = rhs(3, 40, dtype=dtype)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    sol = cg(a, b, rtol=rtol, preconditioner=jacobi_preconditioner(a) if precondition else None)
    exact = torch.linalg.solve(a.double(), b.double())
    assert sol.converged
    assert sol.value.shape == (3, 40)
    assert sol.value.dtype == dtype
    # ||x - x*|| / ||x*|| <= kappa ||r|| / ||b||, with room for rounding in float32
    assert relative_error(sol.value.double(), exact) <= 5 * condition * rtol
    true_residual = torch.linalg.vector_norm(b.double() - (a.double() @ sol.value.double()[..., None])[..., 0], dim=-1)
    # the reported residual is recomputed in the working precision, so float32 rounding shows in it
    torch.testing.assert_close(
        sol.residual.double(), true_residual, rtol=0.1 if dtype == torch.float32 else 1e-6, atol=1e-12
    )
    assert torch.all(sol.stats["relative_residual"] <= 10 * rtol)
    assert torch.equal(sol.stats["converged_per_system"], torch.ones(3, dtype=torch.bool))
    assert not bool(sol.stats["breakdown_per_system"].any())
    assert sol.stats["reason"] is None
    assert sol.n_iter == int(sol.stats["n_iter_per_system"].max())
    assert sol.history is not None
    assert sol.history.shape == (sol.n_iter + 1, 3)
    torch.testing.assert_close(sol.history[0], torch.linalg.vector_norm(b, dim=-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_operator_many_right_hand_sides(dtype: torch.dtype) -> None:
    a = spd(30, condition=50.0, dtype=dtype, seed=3)
    b = rhs(2, 4, 30, dtype=dtype)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    sol = cg(DenseOperator(a), b, rtol=rtol)
    assert sol.converged
    assert sol.value.shape == (2, 4, 30)
    assert sol.residual.shape == (2, 4)
    exact = torch.linalg.solve(a.double(), b.double().unsqueeze(-1)).squeeze(-1)
    assert relative_error(sol.value.double(), exact) <= 5 * 50.0 * rtol


def test_jacobi_needs_fewer_iterations_on_a_badly_scaled_system() -> None:
    a = badly_scaled()
    b = rhs(100)
    plain = cg(a, b, rtol=1e-8)
    jacobi = cg(a, b, rtol=1e-8, preconditioner=jacobi_preconditioner(a))
    exact = torch.linalg.solve(a, b)
    assert plain.converged
    assert jacobi.converged
    assert jacobi.n_iter * 3 < plain.n_iter
    assert relative_error(plain.value, exact) < 1e-4
    assert relative_error(jacobi.value, exact) < 1e-4


@pytest.mark.parametrize("precondition", [False, True])
def test_agrees_with_scipy_cg(precondition: bool) -> None:
    import scipy.sparse.linalg as sparse_linalg

    a = spd(80, condition=1e3, dtype=torch.float64, seed=5)
    a = a + torch.diag(torch.logspace(0, 2, 80, dtype=torch.float64))  # uneven diagonal, for Jacobi to matter
    b = rhs(80)
    preconditioner = jacobi_preconditioner(a) if precondition else None
    sol = cg(a, b, rtol=1e-8, preconditioner=preconditioner)

    scipy_iterations = 0

    def count(_: object) -> None:
        nonlocal scipy_iterations
        scipy_iterations += 1

    m = np.diag(1.0 / np.diag(a.numpy())) if precondition else None
    x_scipy, info = sparse_linalg.cg(a.numpy(), b.numpy(), rtol=1e-8, atol=0.0, M=m, maxiter=800, callback=count)
    assert info == 0
    assert sol.converged
    assert abs(sol.n_iter - scipy_iterations) <= 1
    np.testing.assert_allclose(sol.value.numpy(), x_scipy, rtol=1e-6, atol=1e-9)


def test_iteration_cap_is_honoured_and_reported() -> None:
    a = badly_scaled()
    b = rhs(100)
    sol = cg(a, b, rtol=1e-12, max_iter=5)
    assert not sol.converged
    assert sol.n_iter == 5
    assert sol.stats["reason"] == "iteration cap 5 reached"
    assert sol.history is not None
    assert sol.history.shape == (6,)
    assert torch.isfinite(sol.value).all()

    # a batch: two trivial systems (A = 2 I) and two hard ones
    matrices = torch.stack([2 * torch.eye(100, dtype=torch.float64), a, 2 * torch.eye(100, dtype=torch.float64), a])
    batch = cg(matrices, rhs(4, 100), rtol=1e-12, max_iter=5)
    assert not batch.converged
    assert batch.n_iter == 5
    assert batch.stats["reason"] == "iteration cap 5 reached for 2 of 4 systems"
    assert batch.stats["converged_per_system"].tolist() == [True, False, True, False]
    assert batch.stats["n_iter_per_system"].tolist() == [1, 5, 1, 5]


def test_default_iteration_cap_is_ten_n() -> None:
    a = spd(6, condition=10.0, dtype=torch.float64, seed=0)
    sol = cg(a, rhs(6), rtol=0.0, atol=0.0)  # an unreachable tolerance: only the cap (or a breakdown) stops it
    assert not sol.converged
    assert sol.n_iter <= 60
    assert sol.n_iter == 60 or bool(sol.stats["breakdown_per_system"])
    assert torch.isfinite(sol.value).all()


def test_per_system_freezing() -> None:
    n = 60
    easy = 2 * torch.eye(n, dtype=torch.float64)
    hard = spd(n, condition=1e4, dtype=torch.float64, seed=11)
    b = rhs(2, n)
    sol = cg(torch.stack([easy, hard]), b, rtol=1e-10)
    assert sol.converged
    iterations = sol.stats["n_iter_per_system"].tolist()
    assert iterations[0] == 1
    assert iterations[1] > 10
    assert sol.n_iter == iterations[1]
    # the easy system stopped after one step and was not disturbed by the hard one's later iterations
    torch.testing.assert_close(sol.value[0], b[0] / 2, rtol=1e-14, atol=1e-14)
    assert sol.history is not None
    assert torch.all(sol.history[1:, 0] == sol.history[1, 0])
    torch.testing.assert_close(sol.value[1], torch.linalg.solve(hard, b[1]), rtol=1e-5, atol=1e-8)


def test_indefinite_matrix_is_a_breakdown_with_a_finite_value() -> None:
    generator = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=generator, dtype=torch.float64))
    eigenvalues = torch.linspace(-1.0, 3.0, 20, dtype=torch.float64)
    indefinite = (q * eigenvalues) @ q.T
    indefinite = 0.5 * (indefinite + indefinite.T)
    diagonal_indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    for a in (indefinite, diagonal_indefinite):
        sol = cg(a, torch.ones(a.shape[0], dtype=torch.float64), rtol=1e-10)
        assert not sol.converged
        assert bool(sol.stats["breakdown_per_system"])
        assert "not positive definite" in sol.stats["reason"]
        assert torch.isfinite(sol.value).all()
        assert torch.isfinite(sol.residual).all()


def test_singular_direction_is_a_breakdown() -> None:
    # x1 = (2, 2) after one step; the next direction is (0, 2), on which p^T A p = 0.
    a = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))
    sol = cg(a, torch.ones(2, dtype=torch.float64))
    assert not sol.converged
    assert sol.n_iter == 1
    assert sol.stats["reason"] == "breakdown p^T A p <= 0 (operator not positive definite)"
    torch.testing.assert_close(sol.value, torch.tensor([2.0, 2.0], dtype=torch.float64))


def test_indefinite_preconditioner_is_a_breakdown() -> None:
    a = spd(10, condition=10.0, dtype=torch.float64, seed=0)
    sol = cg(a, rhs(10), preconditioner=-torch.eye(10, dtype=torch.float64))
    assert not sol.converged
    assert sol.n_iter == 0
    assert "preconditioner not positive definite" in sol.stats["reason"]
    assert torch.isfinite(sol.value).all()


def test_non_symmetric_matrix_is_detected_without_iterating() -> None:
    a = spd(15, condition=10.0, dtype=torch.float64, seed=0)
    a[0, 1] += 1.0
    x0 = rhs(15, seed=4)
    sol = cg(a, rhs(15), x0=x0)
    assert not sol.converged
    assert sol.n_iter == 0
    assert sol.stats["reason"] == "operator is not symmetric"
    assert torch.equal(sol.value, x0)
    # a batch where only one operator is not symmetric: the other still solves
    symmetric = spd(15, condition=10.0, dtype=torch.float64, seed=1)
    batch = cg(torch.stack([a, symmetric]), rhs(2, 15), rtol=1e-10)
    assert batch.stats["breakdown_per_system"].tolist() == [True, False]
    assert batch.stats["converged_per_system"].tolist() == [False, True]
    assert batch.stats["reason"] == "operator is not symmetric for 1 of 2 systems"
    # the probe can be switched off (CG then runs on the non-symmetric operator, with no guarantee)
    unchecked = cg(a, rhs(15), check_symmetry=False, max_iter=3)
    assert unchecked.n_iter > 0


def test_zero_right_hand_side() -> None:
    a = spd(8, condition=10.0, dtype=torch.float64, seed=0)
    sol = cg(a, torch.zeros(8, dtype=torch.float64))
    assert sol.converged
    assert sol.n_iter == 0
    assert torch.equal(sol.value, torch.zeros(8, dtype=torch.float64))
    assert float(sol.stats["relative_residual"]) == 0.0
    # with a guess and in a batch: the zero system still gets 0, the other is solved
    b = torch.stack([torch.zeros(8, dtype=torch.float64), rhs(8)])
    batch = cg(a, b, x0=torch.ones(8, dtype=torch.float64), rtol=1e-10)
    assert batch.converged
    assert torch.equal(batch.value[0], torch.zeros(8, dtype=torch.float64))
    assert batch.stats["n_iter_per_system"].tolist()[0] == 0
    torch.testing.assert_close(batch.value[1], torch.linalg.solve(a, b[1]))


def test_warm_start() -> None:
    a = spd(50, condition=1e3, dtype=torch.float64, seed=0)
    b = rhs(50)
    exact = torch.linalg.solve(a, b)
    at_solution = cg(a, b, x0=exact, rtol=1e-8)
    assert at_solution.converged
    assert at_solution.n_iter == 0
    cold = cg(a, b, rtol=1e-10)
    near = exact + 1e-6 * rhs(50, seed=9)
    warm = cg(a, b, x0=near, rtol=1e-10)
    assert warm.converged
    assert warm.n_iter < cold.n_iter
    torch.testing.assert_close(warm.value, exact, rtol=1e-6, atol=1e-10)


def test_matrix_free_operators_and_jacobi_from_a_diagonal() -> None:
    # The 2-D Laplacian T x I + I x T as a Kronecker sum, against the dense matrix built with torch.kron.
    k = 6
    t = 2 * torch.eye(k, dtype=torch.float64) - torch.diag(torch.ones(k - 1, dtype=torch.float64), 1)
    t = t - torch.diag(torch.ones(k - 1, dtype=torch.float64), -1)
    identity = torch.eye(k, dtype=torch.float64)
    left, right = KroneckerOperator(t, identity), KroneckerOperator(identity, t)
    dense = torch.kron(t, identity) + torch.kron(identity, t)
    laplacian = FunctionOperator(
        lambda x: left @ x + right @ x,
        (k * k, k * k),
        dtype=torch.float64,
        device="cpu",
        symmetric=True,
        diagonal=left.diagonal() + right.diagonal(),
    )
    b = rhs(2, k * k)
    sol = cg(laplacian, b, rtol=1e-12, preconditioner=jacobi_preconditioner(laplacian))
    assert sol.converged
    torch.testing.assert_close(sol.value, torch.linalg.solve(dense, b.T).T)


def test_jacobi_preconditioner() -> None:
    a = torch.tensor([[4.0, 1.0], [1.0, 100.0]])
    assert torch.equal(jacobi_preconditioner(a).diag, torch.tensor([0.25, 0.01]))
    assert torch.equal(
        jacobi_preconditioner(DiagonalOperator(torch.tensor([2.0, 4.0]))).diag, torch.tensor([0.5, 0.25])
    )
    with pytest.raises(SciMLInputError, match="positive") as info:
        jacobi_preconditioner(torch.diag(torch.tensor([1.0, -1.0])))
    assert info.value.argument == "a"
    with pytest.raises(SciMLInputError, match="diagonal") as info:
        jacobi_preconditioner(FunctionOperator(lambda x: x, (2, 2), dtype=torch.float32, device="cpu"))
    assert info.value.argument == "a"
    with pytest.raises(SciMLInputError, match="square"):
        jacobi_preconditioner(torch.ones(2, 3))


def test_history_can_be_switched_off() -> None:
    a = spd(10, condition=10.0, dtype=torch.float64, seed=0)
    sol = cg(a, rhs(10), record_history=False)
    assert sol.history is None
    assert sol.converged


def test_bad_inputs() -> None:
    a = spd(4, condition=10.0, dtype=torch.float64, seed=0)
    b = rhs(4)

    class WrongBatch:
        shape = (4, 4)
        dtype = torch.float64
        device = torch.device("cpu")

        def matvec(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x, x])

        def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
            return self.matvec(x)

    cases: list[tuple[dict[str, object], str, str]] = [
        ({"b": b.to(torch.int64)}, "b", "floating"),
        ({"b": torch.full((4,), float("nan"), dtype=torch.float64)}, "b", "NaN"),
        ({"b": torch.zeros(0, 4, dtype=torch.float64)}, "b", "empty"),
        ({"b": rhs(5)}, "b", r"\(\.\.\., 4\)"),
        ({"b": torch.tensor(1.0, dtype=torch.float64)}, "b", r"\(\.\.\., 4\)"),
        ({"b": b.float()}, "b", "dtype"),
        ({"b": torch.zeros(4, dtype=torch.float64, device="meta")}, "b", "meta"),
        ({"b": [1.0, 2.0, 3.0, 4.0]}, "b", "torch.Tensor"),
        ({"a": torch.ones(4, 3, dtype=torch.float64)}, "a", "square"),
        ({"a": [[1.0]]}, "a", "LinearOperator"),
        ({"a": torch.ones(4, dtype=torch.float64)}, "a", "matrix"),
        ({"a": WrongBatch()}, "a", "matvec returned"),
        ({"rtol": -1e-3}, "rtol", ">= 0"),
        ({"rtol": float("nan")}, "rtol", ">= 0"),
        ({"atol": -1.0}, "atol", ">= 0"),
        ({"max_iter": 0}, "max_iter", "positive int"),
        ({"max_iter": 2.5}, "max_iter", "positive int"),
        ({"max_iter": True}, "max_iter", "positive int"),
        ({"x0": rhs(3)}, "x0", r"\(\.\.\., 4\)"),
        ({"x0": rhs(3, 4), "b": rhs(2, 4)}, "x0", "broadcast"),
        ({"x0": torch.full((4,), float("inf"), dtype=torch.float64)}, "x0", "infinite"),
        ({"preconditioner": torch.eye(3, dtype=torch.float64)}, "preconditioner", "shape"),
        ({"preconditioner": torch.eye(4)}, "preconditioner", "dtype"),
        ({"preconditioner": "jacobi"}, "preconditioner", "LinearOperator"),
        ({"check_symmetry": 1}, "check_symmetry", "bool"),
        ({"record_history": None}, "record_history", "bool"),
    ]
    for overrides, argument, match in cases:
        kwargs: dict[str, object] = {"a": a, "b": b} | overrides
        with pytest.raises(SciMLInputError, match=match) as info:
            cg(**kwargs)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == argument, overrides


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=16),
    batch=st.integers(min_value=1, max_value=3),
    log_condition=st.floats(min_value=0.0, max_value=4.0),
    seed=st.integers(min_value=0, max_value=2**16),
    precondition=st.booleans(),
)
def test_property_residual_condition_holds_when_converged(
    n: int, batch: int, log_condition: float, seed: int, precondition: bool
) -> None:
    a = spd(n, condition=10.0**log_condition, dtype=torch.float64, seed=seed, batch=(batch,))
    b = rhs(batch, n, seed=seed + 1)
    rtol = 1e-8
    sol = cg(a, b, rtol=rtol, preconditioner=jacobi_preconditioner(a) if precondition else None)
    assert torch.isfinite(sol.value).all()
    # CG on an SPD system of size n converges within 10 n iterations
    assert sol.converged
    assert sol.history is not None
    b_norm = torch.linalg.vector_norm(b, dim=-1)
    per_system = sol.stats["n_iter_per_system"]
    final_recursive = sol.history[per_system, torch.arange(batch)]
    assert torch.all(final_recursive <= rtol * b_norm)
    true_residual = torch.linalg.vector_norm(b - (a @ sol.value[..., None])[..., 0], dim=-1)
    assert torch.all(true_residual <= 10 * rtol * b_norm)
    exact = torch.linalg.solve(a, b)
    assert relative_error(sol.value, exact) <= 10 * 10.0**log_condition * rtol
