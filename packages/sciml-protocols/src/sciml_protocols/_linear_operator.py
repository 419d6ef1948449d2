"""Linear operators: the protocol every Krylov solver of the project accepts, and adapters onto it.

An operator ``A`` of shape ``(n, m)`` maps vectors of length ``m`` to vectors of length ``n``. It acts on the last
dimension of its argument; any leading dimensions are a batch of independent vectors, so ``A.matvec(x)`` with
``x`` of shape ``(..., m)`` returns ``(..., n)``. Adapters may themselves carry a batch of operators
(``batch_shape``), which broadcasts against the batch of the vectors.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from ._errors import SciMLError, SciMLInputError
from ._validation import check_dtype, check_finite, check_nonempty, check_tensor

__all__ = [
    "AbstractLinearOperator",
    "DenseOperator",
    "DiagonalOperator",
    "FunctionOperator",
    "KroneckerOperator",
    "LinearOperator",
    "aslinearoperator",
]


@runtime_checkable
class LinearOperator(Protocol):
    """A linear map ``x -> A x`` known only through its action on vectors.

    ``matvec`` acts on the last dimension: ``x`` of shape ``(..., m)`` gives ``(..., n)``, the leading dimensions
    being independent vectors. ``A @ x`` means ``A.matvec(x)``. Implementations may add ``rmatvec(y) = A^T y``
    (shape ``(..., n) -> (..., m)``); solvers that need the adjoint look for it with ``getattr``. Only real
    floating dtypes are meant: the adjoint is the transpose.

    Any object with these members satisfies the protocol (it is ``runtime_checkable``); subclassing
    :class:`AbstractLinearOperator` gives ``@``, ``.T``, ``to_dense`` and input checks for free.

    Example:
        >>> op = DenseOperator(torch.eye(3))
        >>> isinstance(op, LinearOperator), op.shape
        (True, (3, 3))

    Reference:
        The interface follows ``scipy.sparse.linalg.LinearOperator`` (``shape``, ``dtype``, ``matvec``,
        ``rmatvec``), with ``device`` added and batching on the leading dimensions.
    """

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: output length and input length."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the operator computes in."""
        ...

    @property
    def device(self) -> torch.device:
        """The device the operator computes on."""
        ...

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(..., m)``; returns ``(..., n)``."""
        ...

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor: ...


class AbstractLinearOperator(abc.ABC):
    """Base class of the adapters: subclasses implement ``_matvec`` (and ``_rmatvec`` when the adjoint is cheap).

    It checks the last dimension of every argument and supplies ``A @ x``, the adjoint ``A.T`` (when ``_rmatvec``
    is implemented), ``to_dense()`` and ``diagonal()`` (subclasses override the latter when it is cheap).

    Args:
        shape: ``(n, m)``.
        dtype: real floating dtype of the operator.
        device: device of the operator.
        batch_shape: leading dimensions of a batch of operators (empty for a single operator).

    Example:
        >>> class Twice(AbstractLinearOperator):
        ...     def _matvec(self, x):
        ...         return 2 * x
        >>> op = Twice((2, 2), dtype=torch.float32, device="cpu")
        >>> op @ torch.ones(2)
        tensor([2., 2.])
        >>> op.to_dense()
        tensor([[2., 0.],
                [0., 2.]])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        batch_shape: Sequence[int] = (),
    ) -> None:
        self._shape = _check_operator_shape("shape", shape)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("dtype", f"must be a real floating torch.dtype, got {dtype!r}")
        self._dtype = dtype
        self._device = torch.device(device)
        self._batch_shape = torch.Size(batch_shape)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``: output length and input length."""
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the operator computes in."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device the operator computes on."""
        return self._device

    @property
    def batch_shape(self) -> torch.Size:
        """Leading dimensions of a batch of operators; ``torch.Size([])`` for a single operator."""
        return self._batch_shape

    @property
    def has_rmatvec(self) -> bool:
        """Whether the adjoint ``rmatvec`` is available."""
        return type(self)._rmatvec is not AbstractLinearOperator._rmatvec

    @abc.abstractmethod
    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` whose last dimension has already been checked."""

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T x``; subclasses with a cheap adjoint override this."""
        raise SciMLError(f"{type(self).__name__} has no rmatvec (adjoint)")

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``.

        Args:
            x: shape ``(..., m)``.

        Returns:
            Shape ``(..., n)`` (leading dimensions broadcast with :attr:`batch_shape`).
        """
        _check_vector("x", x, self._shape[1])
        return self._matvec(x)

    def rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T x`` (the adjoint of a real operator).

        Args:
            x: shape ``(..., n)``.

        Returns:
            Shape ``(..., m)``.

        Raises:
            SciMLError: the operator has no adjoint (see :attr:`has_rmatvec`).
        """
        _check_vector("x", x, self._shape[0])
        return self._rmatvec(x)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
            return NotImplemented
        return self.matvec(x)

    @property
    def T(self) -> AbstractLinearOperator:
        """The adjoint (transpose) operator, shape ``(m, n)``; needs :attr:`has_rmatvec`."""
        return self.adjoint()

    def adjoint(self) -> AbstractLinearOperator:
        """The adjoint (transpose) operator, shape ``(m, n)``.

        Raises:
            SciMLError: the operator has no ``rmatvec``.
        """
        if not self.has_rmatvec:
            raise SciMLError(f"{type(self).__name__} has no rmatvec, so its adjoint is not available")
        return _AdjointOperator(self)

    def to_dense(self) -> torch.Tensor:
        """The matrix, by applying the operator to the columns of the identity.

        Returns:
            Shape ``(*batch_shape, n, m)``. Costs ``m`` matvecs' worth of work: meant for small operators and tests.
        """
        m = self._shape[1]
        eye = torch.eye(m, dtype=self._dtype, device=self._device)
        columns = self.matvec(eye.reshape(m, *([1] * len(self._batch_shape)), m))  # (m, *batch, n)
        return columns.movedim(0, -1)

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``(*batch_shape, n)`` of a square operator, where it is cheap.

        Raises:
            SciMLError: this operator has no cheap diagonal (``to_dense().diagonal(dim1=-2, dim2=-1)`` would work
                for small ones).
        """
        raise SciMLError(f"{type(self).__name__} has no cheap diagonal")

    def __repr__(self) -> str:
        batch = f", batch_shape={tuple(self._batch_shape)}" if self._batch_shape else ""
        return f"{type(self).__name__}(shape={self._shape}, dtype={self._dtype}, device={self._device}{batch})"


class _AdjointOperator(AbstractLinearOperator):
    def __init__(self, parent: AbstractLinearOperator) -> None:
        n, m = parent.shape
        super().__init__((m, n), dtype=parent.dtype, device=parent.device, batch_shape=parent.batch_shape)
        self._parent = parent

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._parent.rmatvec(x)

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._parent.matvec(x)

    def diagonal(self) -> torch.Tensor:
        return self._parent.diagonal()

    def adjoint(self) -> AbstractLinearOperator:
        return self._parent


class DenseOperator(AbstractLinearOperator):
    """A (batch of) dense matrices as an operator: ``matvec(x) = M x``, ``rmatvec(y) = M^T y``.

    Args:
        matrix: shape ``(..., n, m)``, real floating, finite; leading dimensions are a batch of matrices that
            broadcasts against the batch of the vectors.

    Example:
        >>> op = DenseOperator(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        >>> op.shape
        (3, 2)
        >>> op @ torch.tensor([1.0, 1.0])
        tensor([ 3.,  7., 11.])
        >>> op.T @ torch.tensor([1.0, 0.0, 0.0])
        tensor([1., 2.])
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        check_tensor("matrix", matrix)
        if matrix.ndim < 2:
            raise SciMLInputError("matrix", f"expected shape (..., n, m), got {tuple(matrix.shape)}")
        check_nonempty("matrix", matrix)
        check_dtype("matrix", matrix)
        check_finite("matrix", matrix)
        super().__init__(
            (matrix.shape[-2], matrix.shape[-1]),
            dtype=matrix.dtype,
            device=matrix.device,
            batch_shape=matrix.shape[:-2],
        )
        self.matrix = matrix

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix.ndim == 2:
            return x @ self.matrix.mT  # one GEMM over the whole batch of vectors
        return (self.matrix @ x.unsqueeze(-1)).squeeze(-1)

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix.ndim == 2:
            return x @ self.matrix
        return (self.matrix.mT @ x.unsqueeze(-1)).squeeze(-1)

    def to_dense(self) -> torch.Tensor:
        """The matrix itself, ``(..., n, m)``."""
        return self.matrix

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``(..., n)`` of a square matrix."""
        _require_square(self)
        return self.matrix.diagonal(dim1=-2, dim2=-1)


class FunctionOperator(AbstractLinearOperator):
    """A callable with a declared shape as an operator (a stencil, an FFT solve, a matrix-free Jacobian product).

    Args:
        matvec: ``x (..., m) -> A x (..., n)``, acting on the last dimension.
        shape: ``(n, m)``.
        dtype: real floating dtype the callable computes in.
        device: device the callable computes on.
        rmatvec: optional ``y (..., n) -> A^T y (..., m)``.
        symmetric: declare ``A = A^T`` (square only): ``rmatvec`` is then ``matvec``.
        diagonal: optional diagonal ``(n,)`` of a square operator, for Jacobi preconditioning.

    Example:
        >>> cumulative_sum = FunctionOperator(
        ...     lambda x: x.cumsum(-1), (3, 3), dtype=torch.float32, device="cpu",
        ...     rmatvec=lambda y: y.flip(-1).cumsum(-1).flip(-1))
        >>> cumulative_sum.to_dense()
        tensor([[1., 0., 0.],
                [1., 1., 0.],
                [1., 1., 1.]])
        >>> cumulative_sum.T @ torch.tensor([1.0, 2.0, 3.0])
        tensor([6., 5., 3.])
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        shape: Sequence[int],
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        rmatvec: Callable[[torch.Tensor], torch.Tensor] | None = None,
        symmetric: bool = False,
        diagonal: torch.Tensor | None = None,
    ) -> None:
        if not callable(matvec):
            raise SciMLInputError("matvec", f"must be callable, got {type(matvec).__name__}")
        if rmatvec is not None and not callable(rmatvec):
            raise SciMLInputError("rmatvec", f"must be callable or None, got {type(rmatvec).__name__}")
        super().__init__(shape, dtype=dtype, device=device)
        if symmetric:
            if self.shape[0] != self.shape[1]:
                raise SciMLInputError("symmetric", f"a symmetric operator must be square, shape is {self.shape}")
            if rmatvec is not None:
                raise SciMLInputError("rmatvec", "give either rmatvec or symmetric=True, not both")
            rmatvec = matvec
        if diagonal is not None:
            _require_square(self)
            check_tensor("diagonal", diagonal)
            if tuple(diagonal.shape) != (self.shape[0],):
                raise SciMLInputError("diagonal", f"expected shape ({self.shape[0]},), got {tuple(diagonal.shape)}")
            if diagonal.dtype != self.dtype:
                raise SciMLInputError("diagonal", f"has dtype {diagonal.dtype} but the operator has {self.dtype}")
            if diagonal.device != self.device:
                raise SciMLInputError("diagonal", f"is on {diagonal.device} but the operator is on {self.device}")
            check_finite("diagonal", diagonal)
        self._function = matvec
        self._adjoint_function = rmatvec
        self._diagonal = diagonal
        self.symmetric = symmetric

    @property
    def has_rmatvec(self) -> bool:
        """Whether an adjoint was given (or ``symmetric=True``)."""
        return self._adjoint_function is not None

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return _checked_output("matvec", self._function(x), x, self.shape[0])

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        if self._adjoint_function is None:
            raise SciMLError("FunctionOperator was built without rmatvec (or symmetric=True)")
        return _checked_output("rmatvec", self._adjoint_function(x), x, self.shape[1])

    def diagonal(self) -> torch.Tensor:
        """The diagonal given at construction."""
        if self._diagonal is None:
            raise SciMLError("FunctionOperator was built without a diagonal")
        return self._diagonal


class DiagonalOperator(AbstractLinearOperator):
    """``A = diag(d)``: ``matvec(x) = d * x`` elementwise; symmetric.

    Args:
        diag: shape ``(..., n)``, real floating, finite; leading dimensions are a batch of diagonal operators.

    Example:
        >>> op = DiagonalOperator(torch.tensor([1.0, 2.0, 4.0]))
        >>> op @ torch.ones(2, 3)
        tensor([[1., 2., 4.],
                [1., 2., 4.]])
    """

    def __init__(self, diag: torch.Tensor) -> None:
        check_tensor("diag", diag)
        if diag.ndim < 1:
            raise SciMLInputError("diag", f"expected shape (..., n), got {tuple(diag.shape)}")
        check_nonempty("diag", diag)
        check_dtype("diag", diag)
        check_finite("diag", diag)
        n = diag.shape[-1]
        super().__init__((n, n), dtype=diag.dtype, device=diag.device, batch_shape=diag.shape[:-1])
        self.diag = diag

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.diag * x

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.diag * x

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``(..., n)``."""
        return self.diag

    def to_dense(self) -> torch.Tensor:
        """``torch.diag_embed(diag)``, shape ``(..., n, n)``."""
        return torch.diag_embed(self.diag)


class KroneckerOperator(AbstractLinearOperator):
    r"""The Kronecker product :math:`A \otimes B` of two operators, never formed.

    With ``A`` of shape ``(p, q)``, ``B`` of shape ``(r, s)`` and the row-major vectorisation
    :math:`\mathrm{vec}(X)_{i s + j} = X_{ij}` of ``X`` of shape ``(q, s)``,

    .. math::
        (A \otimes B)\,\mathrm{vec}(X) = \mathrm{vec}(A X B^\top),

    computed as ``B`` applied to the rows of ``X`` then ``A`` to the columns: a ``pq x rs`` product costs one
    ``B`` application on ``q`` vectors and one ``A`` application on ``r`` vectors. The adjoint
    :math:`A^\top \otimes B^\top` exists when both factors have ``rmatvec``. This matches ``torch.kron(A, B)``.

    Args:
        a: left factor ``(p, q)``: an operator or a matrix (see :func:`aslinearoperator`); not batched.
        b: right factor ``(r, s)``, same dtype and device as ``a``; not batched.

    Example:
        >>> a = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
        >>> b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> op = KroneckerOperator(a, b)
        >>> torch.equal(op.to_dense(), torch.kron(a, b))
        True

    Reference:
        Van Loan, "The ubiquitous Kronecker product", J. Comput. Appl. Math. 123 (2000).
    """

    def __init__(self, a: LinearOperator | torch.Tensor, b: LinearOperator | torch.Tensor) -> None:
        left = aslinearoperator(a, name="a")
        right = aslinearoperator(b, name="b")
        for name, factor in (("a", left), ("b", right)):
            if tuple(getattr(factor, "batch_shape", ())):
                raise SciMLInputError(name, "Kronecker factors must not be batched")
        if left.dtype != right.dtype:
            raise SciMLInputError("b", f"has dtype {right.dtype} but 'a' has {left.dtype}")
        if left.device != right.device:
            raise SciMLInputError("b", f"is on {right.device} but 'a' is on {left.device}")
        (p, q), (r, s) = left.shape, right.shape
        super().__init__((p * r, q * s), dtype=left.dtype, device=left.device)
        self.a = left
        self.b = right

    @property
    def has_rmatvec(self) -> bool:
        """Whether both factors have ``rmatvec``."""
        return _has_rmatvec(self.a) and _has_rmatvec(self.b)

    def _apply(
        self,
        x: torch.Tensor,
        left: Callable[[torch.Tensor], torch.Tensor],
        right: Callable[[torch.Tensor], torch.Tensor],
        in_shape: tuple[int, int],
    ) -> torch.Tensor:
        rows = x.reshape(*x.shape[:-1], *in_shape)  # X, (..., q, s)
        right_applied = right(rows)  # X B^T, (..., q, r)
        both = left(right_applied.mT)  # (A X B^T)^T, (..., r, p)
        return both.mT.reshape(*x.shape[:-1], -1)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.a.matvec, self.b.matvec, (self.a.shape[1], self.b.shape[1]))

    def _rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_rmatvec:
            raise SciMLError("KroneckerOperator needs rmatvec on both factors for its adjoint")
        left_adjoint: Callable[[torch.Tensor], torch.Tensor] = getattr(self.a, "rmatvec")  # noqa: B009
        right_adjoint: Callable[[torch.Tensor], torch.Tensor] = getattr(self.b, "rmatvec")  # noqa: B009
        return self._apply(x, left_adjoint, right_adjoint, (self.a.shape[0], self.b.shape[0]))

    def diagonal(self) -> torch.Tensor:
        r""":math:`\mathrm{diag}(A) \otimes \mathrm{diag}(B)` when both factors are square and have a diagonal."""
        _require_square(self)
        left, right = operator_diagonal(self.a, "a"), operator_diagonal(self.b, "b")
        return torch.kron(left, right)


def aslinearoperator(obj: LinearOperator | torch.Tensor, *, name: str = "obj") -> LinearOperator:
    """View ``obj`` as a :class:`LinearOperator`.

    Args:
        obj: a matrix ``(..., n, m)`` (wrapped in :class:`DenseOperator`) or an object satisfying the protocol
            (returned unchanged).
        name: the argument's name for error messages.

    Returns:
        The operator.

    Raises:
        SciMLInputError: ``obj`` is neither.

    Example:
        >>> aslinearoperator(torch.eye(2))
        DenseOperator(shape=(2, 2), dtype=torch.float32, device=cpu)
        >>> aslinearoperator([[1.0]])
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'obj': expected a matrix tensor or a LinearOperator, got list
    """
    if isinstance(obj, torch.Tensor):
        if obj.ndim < 2:
            raise SciMLInputError(name, f"a tensor operator must be a matrix (..., n, m), got {tuple(obj.shape)}")
        try:
            return DenseOperator(obj)
        except SciMLInputError as err:
            raise SciMLInputError(name, err.problem) from None
    if isinstance(obj, LinearOperator):  # pyright: ignore[reportUnnecessaryIsInstance]
        return obj
    raise SciMLInputError(name, f"expected a matrix tensor or a LinearOperator, got {type(obj).__name__}")


def _check_operator_shape(name: str, shape: Sequence[int]) -> tuple[int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise SciMLInputError(name, f"must be a pair (n, m) of positive ints, got {shape!r}") from None
    if len(dims) != 2 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0  # pyright: ignore[reportUnnecessaryIsInstance]
        for d in dims
    ):
        raise SciMLInputError(name, f"must be a pair (n, m) of positive ints, got {shape!r}")
    return dims[0], dims[1]


def _check_vector(name: str, x: torch.Tensor, length: int) -> None:
    if not isinstance(x, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != length:
        raise SciMLInputError(name, f"expected shape (..., {length}), got {tuple(x.shape)}")


def _checked_output(name: str, out: object, x: torch.Tensor, length: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[-1] != length:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SciMLInputError(name, f"returned {got} for an input of shape {tuple(x.shape)}; expected (..., {length})")
    return out


def _require_square(op: AbstractLinearOperator) -> None:
    n, m = op.shape
    if n != m:
        raise SciMLError(f"{type(op).__name__} of shape {op.shape} is not square, so it has no diagonal")


def _has_rmatvec(op: LinearOperator) -> bool:
    if isinstance(op, AbstractLinearOperator):
        return op.has_rmatvec
    return callable(getattr(op, "rmatvec", None))


def operator_diagonal(op: LinearOperator, name: str) -> torch.Tensor:
    method = getattr(op, "diagonal", None)
    if not callable(method):
        raise SciMLInputError(name, f"{type(op).__name__} has no diagonal() method")
    diagonal = method()
    if not isinstance(diagonal, torch.Tensor):
        raise SciMLInputError(name, f"diagonal() returned {type(diagonal).__name__}, expected a tensor")
    return diagonal
