r"""Equality-constrained test problems with known solutions: Hock-Schittkowski HS6 and HS7, and random convex QPs.

Every problem is posed as :math:`\min_x f(x)` subject to :math:`c(x) = 0` with the Lagrangian
:math:`\mathcal{L}(x, \lambda) = f(x) + \lambda^\top c(x)`, so the multiplier :math:`\lambda^\star` satisfies
:math:`\nabla f(x^\star) + \nabla c(x^\star)^\top \lambda^\star = 0`.

References:
    Hock and Schittkowski, "Test Examples for Nonlinear Programming Codes", Lecture Notes in Economics and
    Mathematical Systems 187, Springer (1981), problems 6 and 7.
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLInputError

__all__ = ["HS6", "HS7", "EqualityQP"]


def _check_float_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("dtype", f"must be a real floating torch.dtype, got {dtype!r}")


def _check_point(x: torch.Tensor, n: int) -> None:
    if not isinstance(x, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("x", f"must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != (n,):
        raise SciMLInputError("x", f"expected shape ({n},), got {tuple(x.shape)}")


class HS6:
    r"""Hock-Schittkowski problem 6: a parabola constraint with a flat objective direction.

    .. math::
        \min_{x \in \mathbb{R}^2} (1 - x_1)^2 \quad \text{s.t.} \quad 10 (x_2 - x_1^2) = 0.

    Solution :math:`x^\star = (1, 1)`, :math:`f^\star = 0`. At :math:`x^\star` the objective gradient vanishes, so
    stationarity :math:`\nabla f + \lambda \nabla c = 0` with :math:`\nabla c(x^\star) = (-20, 10) \ne 0` gives
    :math:`\lambda^\star = 0`. Standard start :math:`x_0 = (-1.2, 1)` (infeasible: :math:`c(x_0) = -4.4`).

    Args:
        dtype: floating dtype of every tensor the problem returns.
        device: device of those tensors.

    Example:
        >>> p = HS6()
        >>> float(p.objective(p.x_star)), float(p.constraints(p.x_star)[0])
        (0.0, 0.0)
        >>> p.x0
        tensor([-1.2000,  1.0000], dtype=torch.float64)
    """

    n: int = 2
    m: int = 1

    def __init__(self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        _check_float_dtype(dtype)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        like = {"dtype": dtype, "device": self.device}
        self.x0 = torch.tensor([-1.2, 1.0], **like)
        self.x_star = torch.tensor([1.0, 1.0], **like)
        self.f_star = 0.0
        self.lambda_star = torch.tensor([0.0], **like)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`f(x) = (1 - x_1)^2`.

        Args:
            x: the point, shape ``(2,)``.

        Returns:
            A 0-dim tensor.
        """
        _check_point(x, self.n)
        return (1.0 - x[0]) ** 2

    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`c(x) = 10 (x_2 - x_1^2)`.

        Args:
            x: the point, shape ``(2,)``.

        Returns:
            Shape ``(1,)``.
        """
        _check_point(x, self.n)
        return (10.0 * (x[1] - x[0] ** 2)).reshape(1)


class HS7:
    r"""Hock-Schittkowski problem 7: a logarithmic objective on a quartic curve.

    .. math::
        \min_{x \in \mathbb{R}^2} \ln(1 + x_1^2) - x_2 \quad \text{s.t.} \quad (1 + x_1^2)^2 + x_2^2 - 4 = 0.

    Solution :math:`x^\star = (0, \sqrt 3)`, :math:`f^\star = -\sqrt 3`. There :math:`\nabla f = (0, -1)` and
    :math:`\nabla c = (4 x_1 (1 + x_1^2), 2 x_2) = (0, 2\sqrt 3)`, so :math:`-1 + 2\sqrt 3 \lambda^\star = 0`:
    :math:`\lambda^\star = 1 / (2\sqrt 3) = \sqrt 3 / 6`. Standard start :math:`x_0 = (2, 2)`.

    Args:
        dtype: floating dtype of every tensor the problem returns.
        device: device of those tensors.

    Example:
        >>> p = HS7()
        >>> round(float(p.objective(p.x_star)), 6), round(float(p.constraints(p.x_star)[0]), 12)
        (-1.732051, 0.0)
    """

    n: int = 2
    m: int = 1

    def __init__(self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        _check_float_dtype(dtype)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        like = {"dtype": dtype, "device": self.device}
        self.x0 = torch.tensor([2.0, 2.0], **like)
        self.x_star = torch.tensor([0.0, math.sqrt(3.0)], **like)
        self.f_star = -math.sqrt(3.0)
        self.lambda_star = torch.tensor([math.sqrt(3.0) / 6.0], **like)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`f(x) = \ln(1 + x_1^2) - x_2`.

        Args:
            x: the point, shape ``(2,)``.

        Returns:
            A 0-dim tensor.
        """
        _check_point(x, self.n)
        return torch.log1p(x[0] ** 2) - x[1]

    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`c(x) = (1 + x_1^2)^2 + x_2^2 - 4`.

        Args:
            x: the point, shape ``(2,)``.

        Returns:
            Shape ``(1,)``.
        """
        _check_point(x, self.n)
        return ((1.0 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0).reshape(1)


class EqualityQP:
    r"""A random strictly convex quadratic program with linear equality constraints and its exact solution.

    .. math::
        \min_{x \in \mathbb{R}^n} \tfrac12 x^\top Q x + q^\top x \quad \text{s.t.} \quad A x = b,

    with :math:`Q = M^\top M / n + I` (symmetric positive definite), and :math:`M, q, A, b` standard Gaussian
    (``A`` of shape ``(m, n)`` has full row rank with probability one). With :math:`c(x) = A x - b` the KKT point
    solves the dense system

    .. math::
        \begin{bmatrix} Q & A^\top \\ A & 0 \end{bmatrix}
        \begin{bmatrix} x^\star \\ \lambda^\star \end{bmatrix} = \begin{bmatrix} -q \\ b \end{bmatrix},

    computed by ``torch.linalg.solve`` in float64. The start is :math:`x_0 = 0` (infeasible unless ``b = 0``).

    Args:
        n: number of variables, ``>= 1``.
        m: number of constraints, ``1 <= m <= n``.
        seed: seed of the random data (a private ``torch.Generator``; the global RNG is untouched).
        dtype: floating dtype of the returned tensors (the data and the solution are made in float64 first).
        device: device of those tensors.

    Attributes:
        Q: ``(n, n)``; q: ``(n,)``; A: ``(m, n)``; b: ``(m,)``; x0, x_star: ``(n,)``; lambda_star: ``(m,)``;
        f_star: float.

    Example:
        >>> p = EqualityQP(5, 2, seed=0)
        >>> bool(torch.allclose(p.A @ p.x_star, p.b))
        True
        >>> bool(torch.allclose(p.Q @ p.x_star + p.q + p.A.T @ p.lambda_star, torch.zeros(5, dtype=torch.float64)))
        True
    """

    def __init__(
        self,
        n: int,
        m: int,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        for name, value in (("n", n), ("m", m), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must be an int, got {type(value).__name__}")
        if n < 1:
            raise SciMLInputError("n", f"must be >= 1, got {n}")
        if not 1 <= m <= n:
            raise SciMLInputError("m", f"must satisfy 1 <= m <= n = {n}, got {m}")
        _check_float_dtype(dtype)
        self.n, self.m = n, m
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        f64 = torch.float64
        mixing = torch.randn(n, n, generator=generator, dtype=f64)
        q_matrix = mixing.T @ mixing / n + torch.eye(n, dtype=f64)
        q_vector = torch.randn(n, generator=generator, dtype=f64)
        a_matrix = torch.randn(m, n, generator=generator, dtype=f64)
        b_vector = torch.randn(m, generator=generator, dtype=f64)
        kkt = torch.zeros(n + m, n + m, dtype=f64)
        kkt[:n, :n] = q_matrix
        kkt[:n, n:] = a_matrix.T
        kkt[n:, :n] = a_matrix
        solution = torch.linalg.solve(kkt, torch.cat([-q_vector, b_vector]))
        x_star = solution[:n]
        like = {"dtype": dtype, "device": self.device}
        self.Q = q_matrix.to(**like)
        self.q = q_vector.to(**like)
        self.A = a_matrix.to(**like)
        self.b = b_vector.to(**like)
        self.x0 = torch.zeros(n, **like)
        self.x_star = x_star.to(**like)
        self.lambda_star = solution[n:].to(**like)
        self.f_star = float(0.5 * x_star @ q_matrix @ x_star + q_vector @ x_star)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`f(x) = \tfrac12 x^\top Q x + q^\top x`.

        Args:
            x: the point, shape ``(n,)``.

        Returns:
            A 0-dim tensor.
        """
        _check_point(x, self.n)
        return 0.5 * x @ (self.Q @ x) + self.q @ x

    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`c(x) = A x - b`.

        Args:
            x: the point, shape ``(n,)``.

        Returns:
            Shape ``(m,)``.
        """
        _check_point(x, self.n)
        return self.A @ x - self.b
