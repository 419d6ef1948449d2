from __future__ import annotations

import pytest
import torch
from sciml_protocols import (
    AbstractLinearOperator,
    DenseOperator,
    DiagonalOperator,
    FunctionOperator,
    KroneckerOperator,
    LinearOperator,
    SciMLError,
    SciMLInputError,
    aslinearoperator,
)

DTYPES = [torch.float32, torch.float64]


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


def random(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_operator_matches_matrix_on_batched_vectors(dtype: torch.dtype) -> None:
    matrix = random(5, 3, dtype=dtype)
    op = DenseOperator(matrix)
    x = random(2, 4, 3, dtype=dtype, seed=1)
    y = random(2, 4, 5, dtype=dtype, seed=2)
    expected = torch.einsum("nm,abm->abn", matrix, x)
    assert op.shape == (5, 3)
    assert op.dtype == dtype
    assert op.device == torch.device("cpu")
    assert isinstance(op, LinearOperator)
    torch.testing.assert_close(op.matvec(x), expected, **tolerance(dtype))
    torch.testing.assert_close(op @ x, expected, **tolerance(dtype))
    torch.testing.assert_close(op.rmatvec(y), torch.einsum("nm,abn->abm", matrix, y), **tolerance(dtype))
    torch.testing.assert_close(op.T @ y, torch.einsum("mn,abn->abm", matrix.T, y), **tolerance(dtype))
    assert op.T.shape == (3, 5)
    assert torch.equal(op.to_dense(), matrix)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_dense_operator_broadcasts_against_vectors(dtype: torch.dtype) -> None:
    matrices = random(3, 4, 4, dtype=dtype)
    op = DenseOperator(matrices)
    assert op.batch_shape == torch.Size([3])
    x = random(3, 4, dtype=dtype, seed=1)
    for k in range(3):
        torch.testing.assert_close(op.matvec(x)[k], matrices[k] @ x[k], **tolerance(dtype))
        torch.testing.assert_close(op.rmatvec(x)[k], matrices[k].T @ x[k], **tolerance(dtype))
    single = random(4, dtype=dtype, seed=2)
    torch.testing.assert_close(op @ single, matrices @ single, **tolerance(dtype))
    torch.testing.assert_close(op.diagonal(), torch.stack([torch.diag(m) for m in matrices]))
    # the generic to_dense (identity columns) on a batch, through the adjoint wrapper
    torch.testing.assert_close(op.T.to_dense(), matrices.mT, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_function_operator_matches_its_matrix(dtype: torch.dtype) -> None:
    matrix = random(4, 6, dtype=dtype)
    op = FunctionOperator(lambda x: x @ matrix.T, (4, 6), dtype=dtype, device="cpu", rmatvec=lambda y: y @ matrix)
    x = random(7, 6, dtype=dtype, seed=1)
    torch.testing.assert_close(op @ x, x @ matrix.T, **tolerance(dtype))
    torch.testing.assert_close(op.to_dense(), matrix, **tolerance(dtype))
    torch.testing.assert_close(op.T.to_dense(), matrix.T, **tolerance(dtype))
    assert op.has_rmatvec


def test_function_operator_symmetric_and_diagonal() -> None:
    base = random(5, 5, dtype=torch.float64)
    spd = base @ base.T + torch.eye(5, dtype=torch.float64)
    op = FunctionOperator(
        lambda x: x @ spd, (5, 5), dtype=torch.float64, device="cpu", symmetric=True, diagonal=torch.diag(spd)
    )
    y = random(5, dtype=torch.float64, seed=3)
    torch.testing.assert_close(op.rmatvec(y), spd.T @ y)
    assert torch.equal(op.diagonal(), torch.diag(spd))


def test_function_operator_without_adjoint_or_diagonal() -> None:
    op = FunctionOperator(lambda x: 2 * x, (3, 3), dtype=torch.float32, device="cpu")
    assert not op.has_rmatvec
    with pytest.raises(SciMLError, match="rmatvec"):
        _ = op.T
    with pytest.raises(SciMLError, match="diagonal"):
        op.diagonal()
    with pytest.raises(SciMLError, match="rmatvec"):
        op.rmatvec(torch.ones(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_diagonal_operator_matches_torch_diag(dtype: torch.dtype) -> None:
    d = random(6, dtype=dtype)
    op = DiagonalOperator(d)
    x = random(2, 6, dtype=dtype, seed=1)
    torch.testing.assert_close(op @ x, x @ torch.diag(d).T, **tolerance(dtype))
    torch.testing.assert_close(op.rmatvec(x), x @ torch.diag(d), **tolerance(dtype))
    assert torch.equal(op.to_dense(), torch.diag(d))
    assert torch.equal(op.diagonal(), d)

    batched = DiagonalOperator(random(3, 6, dtype=dtype, seed=2))
    assert batched.batch_shape == torch.Size([3])
    dense = torch.stack([torch.diag(row) for row in batched.diag])
    torch.testing.assert_close(batched @ x[0], dense @ x[0], **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kronecker_operator_matches_torch_kron(dtype: torch.dtype) -> None:
    a = random(3, 2, dtype=dtype)
    b = random(4, 5, dtype=dtype, seed=1)
    op = KroneckerOperator(a, b)
    full = torch.kron(a, b)
    assert op.shape == full.shape == (12, 10)
    x = random(2, 3, 10, dtype=dtype, seed=2)
    y = random(2, 3, 12, dtype=dtype, seed=3)
    torch.testing.assert_close(op @ x, x @ full.T, **tolerance(dtype))
    torch.testing.assert_close(op @ x[0, 0], full @ x[0, 0], **tolerance(dtype))
    torch.testing.assert_close(op.rmatvec(y), y @ full, **tolerance(dtype))
    torch.testing.assert_close(op.T @ y, y @ full, **tolerance(dtype))
    torch.testing.assert_close(op.to_dense(), full, **tolerance(dtype))


def test_kronecker_of_mixed_and_nested_factors() -> None:
    dtype = torch.float64
    a, b, c = random(2, 2, dtype=dtype), random(3, 3, dtype=dtype, seed=1), random(2, 2, dtype=dtype, seed=2)
    nested = KroneckerOperator(KroneckerOperator(a, DiagonalOperator(torch.diag(b))), c)
    expected = torch.kron(torch.kron(a, torch.diag(torch.diag(b))), c)
    torch.testing.assert_close(nested.to_dense(), expected)
    torch.testing.assert_close(nested.diagonal(), torch.diag(expected))

    without_adjoint = FunctionOperator(lambda x: x @ b.T, (3, 3), dtype=dtype, device="cpu")
    op = KroneckerOperator(a, without_adjoint)
    assert not op.has_rmatvec
    torch.testing.assert_close(op.to_dense(), torch.kron(a, b))
    with pytest.raises(SciMLError, match="rmatvec"):
        _ = op.T


def test_aslinearoperator() -> None:
    matrix = torch.eye(3)
    wrapped = aslinearoperator(matrix)
    assert isinstance(wrapped, DenseOperator)
    assert aslinearoperator(wrapped) is wrapped

    class Minimal:
        shape = (2, 2)
        dtype = torch.float32
        device = torch.device("cpu")

        def matvec(self, x: torch.Tensor) -> torch.Tensor:
            return 3 * x

        def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
            return self.matvec(x)

    minimal = Minimal()
    assert aslinearoperator(minimal) is minimal
    assert not isinstance(minimal, AbstractLinearOperator)
    with pytest.raises(SciMLInputError, match="'obj'.*got list"):
        aslinearoperator([[1.0]])  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="'a'.*matrix"):
        aslinearoperator(torch.ones(3), name="a")
    with pytest.raises(SciMLInputError, match="'a'.*floating"):
        aslinearoperator(torch.eye(2, dtype=torch.int64), name="a")


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (torch.eye(2, dtype=torch.int32), "floating"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), "infinite"),
        (torch.ones(3), r"\(\.\.\., n, m\)"),
        (torch.ones(0, 3), "empty"),
    ],
)
def test_dense_operator_rejects_bad_matrices(matrix: torch.Tensor, match: str) -> None:
    with pytest.raises(SciMLInputError, match=match) as info:
        DenseOperator(matrix)
    assert info.value.argument == "matrix"


@pytest.mark.parametrize(
    ("diag", "match"),
    [
        (torch.tensor([1.0, float("inf")]), "infinite"),
        (torch.tensor([1, 2]), "floating"),
        (torch.tensor(1.0), r"\(\.\.\., n\)"),
        (torch.ones(2, 0), "empty"),
    ],
)
def test_diagonal_operator_rejects_bad_diagonals(diag: torch.Tensor, match: str) -> None:
    with pytest.raises(SciMLInputError, match=match) as info:
        DiagonalOperator(diag)
    assert info.value.argument == "diag"


def test_matvec_rejects_wrong_length_and_non_tensors() -> None:
    op = DenseOperator(torch.ones(2, 3))
    with pytest.raises(SciMLInputError, match=r"'x'.*\(\.\.\., 3\)"):
        op.matvec(torch.ones(2))
    with pytest.raises(SciMLInputError, match=r"'x'.*\(\.\.\., 2\)"):
        op.rmatvec(torch.ones(3))
    with pytest.raises(TypeError):
        _ = op @ [1.0, 2.0, 3.0]  # pyright: ignore[reportOperatorIssue]
    with pytest.raises(SciMLError, match="not square"):
        op.diagonal()


def test_function_operator_rejects_bad_arguments() -> None:
    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    cases: list[tuple[dict[str, object], str]] = [
        ({"shape": (3,)}, "shape"),
        ({"shape": (0, 3)}, "shape"),
        ({"shape": (2.0, 2)}, "shape"),
        ({"shape": (True, 2)}, "shape"),
        ({"dtype": torch.int64}, "dtype"),
        ({"matvec": 3}, "matvec"),
        ({"rmatvec": 3}, "rmatvec"),
        ({"shape": (2, 3), "symmetric": True}, "symmetric"),
        ({"symmetric": True, "rmatvec": identity}, "rmatvec"),
        ({"diagonal": torch.ones(3)}, "diagonal"),
        ({"diagonal": torch.ones(2, dtype=torch.float64)}, "diagonal"),
        ({"diagonal": torch.tensor([1.0, float("nan")])}, "diagonal"),
        ({"diagonal": torch.ones(2), "device": "meta"}, "diagonal"),
    ]
    for overrides, argument in cases:
        kwargs: dict[str, object] = {
            "matvec": identity,
            "shape": (2, 2),
            "dtype": torch.float32,
            "device": "cpu",
        } | overrides
        with pytest.raises(SciMLInputError) as info:
            FunctionOperator(**kwargs)  # pyright: ignore[reportArgumentType]
        assert info.value.argument == argument, overrides


def test_function_operator_checks_what_the_callable_returns() -> None:
    op = FunctionOperator(lambda x: x[..., :1], (2, 2), dtype=torch.float32, device="cpu")
    with pytest.raises(SciMLInputError, match=r"'matvec'.*expected \(\.\.\., 2\)"):
        op.matvec(torch.ones(2))


def test_kronecker_rejects_mismatched_factors() -> None:
    a = torch.eye(2)
    with pytest.raises(SciMLInputError, match="dtype") as info:
        KroneckerOperator(a, torch.eye(2, dtype=torch.float64))
    assert info.value.argument == "b"
    on_meta = FunctionOperator(lambda x: x, (2, 2), dtype=torch.float32, device="meta")
    with pytest.raises(SciMLInputError, match="meta") as info:
        KroneckerOperator(a, on_meta)
    assert info.value.argument == "b"
    with pytest.raises(SciMLInputError, match="batched") as info:
        KroneckerOperator(torch.ones(3, 2, 2), a)
    assert info.value.argument == "a"
    with pytest.raises(SciMLInputError) as info:
        KroneckerOperator(a, "b")  # pyright: ignore[reportArgumentType]
    assert info.value.argument == "b"
