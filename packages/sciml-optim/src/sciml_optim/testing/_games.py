r"""Monotone test problems with closed-form solutions: bilinear games and cocoercive linear finite sums.

Both problems are affine operators :math:`F(u) = A u + q` written as finite sums
:math:`F = \frac{1}{n} \sum_{i=1}^n F_i` with :math:`F_i(u) = A_i u + q_i`, so that the monotone-inclusion solvers of
:mod:`sciml_optim` (:func:`~sciml_optim.halpern`, :func:`~sciml_optim.vr_halpern`) can be checked against an exact
solution :math:`u^\star = -A^{-1} q`, an exact resolvent :math:`J_{\eta F} = (I + \eta F)^{-1}` and a computable
residual :math:`\|F(u)\|`.

Both classes expose the finite-sum oracle that :func:`~sciml_optim.vr_halpern` accepts: an attribute ``n`` and a
method ``components(u, idx)`` that returns the mean :math:`\frac{1}{|B|}\sum_{i \in B} F_i(u)` over a batch of
indices :math:`B` (repeats allowed).

Reference:
    X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum Monotone Inclusions",
    ICLR 2024, arXiv:2310.02987 (the problem classes; the instances here are synthetic).
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLError, SciMLInputError, check_dtype, check_finite, check_nonempty, check_tensor

__all__ = ["BilinearGame", "CocoerciveFiniteSum"]


def _check_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    check_tensor("idx", idx)
    if idx.dtype not in (torch.int32, torch.int64) or idx.ndim != 1:
        raise SciMLInputError(
            "idx", f"must be a 1-D integer tensor, got dtype {idx.dtype} and shape {tuple(idx.shape)}"
        )
    check_nonempty("idx", idx)
    if bool((idx < 0).any()) or bool((idx >= n).any()):
        raise SciMLInputError("idx", f"entries must lie in [0, {n}), got range [{int(idx.min())}, {int(idx.max())}]")
    return idx.long()


def _check_point(u: torch.Tensor, dim: int, like: torch.Tensor) -> None:
    check_tensor("u", u)
    if u.shape != (dim,):
        raise SciMLInputError("u", f"expected shape ({dim},), got {tuple(u.shape)}")
    if u.dtype != like.dtype or u.device != like.device:
        raise SciMLInputError("u", f"expected dtype {like.dtype} on {like.device}, got {u.dtype} on {u.device}")


class BilinearGame:
    r"""The (optionally regularized) bilinear saddle-point problem and its monotone operator.

    .. math::

        \min_{x \in \mathbb{R}^m} \max_{y \in \mathbb{R}^p}\;
        x^\top M y + b^\top x - c^\top y + \tfrac{\mu}{2}\|x\|^2 - \tfrac{\mu}{2}\|y\|^2 .

    With :math:`u = (x, y) \in \mathbb{R}^{m+p}` its monotone operator is

    .. math::

        F(u) = \begin{pmatrix} M y + b + \mu x \\ -(M^\top x - c) + \mu y \end{pmatrix}
             = \underbrace{\begin{pmatrix} \mu I & M \\ -M^\top & \mu I \end{pmatrix}}_{A} u
               + \begin{pmatrix} b \\ c \end{pmatrix},

    monotone (skew-symmetric plus :math:`\mu I`), :math:`\|A\|_2 = \sqrt{\mu^2 + \sigma_{\max}(M)^2}`-Lipschitz and,
    for :math:`\mu = 0`, *not* cocoercive, so plain Halpern on :math:`I - \eta F` diverges; use the resolvent
    :meth:`resolvent`. For :math:`\mu = 0` and square invertible :math:`M` the saddle point is
    :math:`x^\star = M^{-\top} c`, :math:`y^\star = -M^{-1} b`; for :math:`\mu > 0` it is
    :math:`u^\star = -A^{-1}(b, c)`.

    Finite sums: pass stacked components ``M`` of shape ``(n, m, p)`` (and optionally ``b`` of shape ``(n, m)``,
    ``c`` of shape ``(n, p)``); the game uses their means, and ``components(u, idx)`` averages
    :math:`F_i(u) = A_i u + (b_i, c_i)` over ``idx``.

    Args:
        M: coupling matrix, shape ``(m, p)``, or ``(n, m, p)`` for ``n`` components.
        b: linear term of ``x``, shape ``(m,)`` or ``(n, m)``.
        c: linear term of ``y``, shape ``(p,)`` or ``(n, p)``.
        regularization: :math:`\mu \ge 0`, makes :math:`F` :math:`\mu`-strongly monotone.

    Raises:
        SciMLInputError: on wrong shapes, dtypes, devices, non-finite entries, or a negative ``regularization``.

    Example:
        >>> game = BilinearGame(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([4.0]))
        >>> game.solution  # x* = c / M = 2, y* = -b / M = -0.5
        tensor([ 2.0000, -0.5000])
        >>> game.residual(game.solution)
        0.0
    """

    def __init__(self, M: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, regularization: float = 0.0) -> None:
        for name, value in (("M", M), ("b", b), ("c", c)):
            check_dtype(name, check_tensor(name, value))
            check_nonempty(name, value)
            check_finite(name, value)
        if M.ndim not in (2, 3):
            raise SciMLInputError("M", f"must have shape (m, p) or (n, m, p), got {tuple(M.shape)}")
        stacked = M if M.ndim == 3 else M.unsqueeze(0)
        n, m, p = stacked.shape
        for name, value, size in (("b", b, m), ("c", c, p)):
            if value.dtype != M.dtype or value.device != M.device:
                raise SciMLInputError(name, f"must match M's dtype {M.dtype} and device {M.device}")
            if value.shape not in ((size,), (n, size)):
                raise SciMLInputError(name, f"expected shape ({size},) or ({n}, {size}), got {tuple(value.shape)}")
        if isinstance(regularization, bool) or not isinstance(regularization, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("regularization", f"must be a real number, got {type(regularization).__name__}")
        if not (math.isfinite(regularization) and regularization >= 0):
            raise SciMLInputError("regularization", f"must be finite and >= 0, got {regularization}")
        self.n: int = n
        self.m: int = m
        self.p: int = p
        self.regularization: float = float(regularization)
        self._M_components = stacked
        self._b_components = b if b.ndim == 2 else b.expand(n, m)
        self._c_components = c if c.ndim == 2 else c.expand(n, p)
        self.M: torch.Tensor = stacked.mean(0)
        self.b: torch.Tensor = self._b_components.mean(0)
        self.c: torch.Tensor = self._c_components.mean(0)

    @classmethod
    def random(
        cls,
        m: int,
        p: int | None = None,
        *,
        n: int = 1,
        regularization: float = 0.0,
        spread: float = 0.5,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> BilinearGame:
        r"""A random game with singular values of :math:`M` in :math:`[0.5, 1]` and ``n`` centered components.

        :math:`M = U \operatorname{diag}(s) V^\top` with Haar-random orthogonal factors and :math:`s` uniform on
        :math:`[0.5, 1]`; :math:`b, c` standard normal; component :math:`i` is
        :math:`M_i = M + \text{spread}\cdot E_i`, :math:`b_i = b + \text{spread}\cdot e_i`, ... with Gaussian
        :math:`E_i, e_i` centered over :math:`i`, so the component means are exactly :math:`M, b, c`.

        Args:
            m: size of ``x``.
            p: size of ``y`` (default ``m``; must equal ``m`` when ``regularization == 0`` so that the saddle point
                is unique).
            n: number of components.
            regularization: :math:`\mu \ge 0`.
            spread: scale of the component perturbations.
            seed: seed of a private generator.
            dtype: floating dtype.

        Returns:
            The game.

        Raises:
            SciMLInputError: on non-positive sizes, ``p != m`` without regularization, or a negative ``spread``.

        Example:
            >>> game = BilinearGame.random(3, n=10, seed=1)
            >>> game.n, tuple(game.solution.shape)
            (10, (6,))
        """
        p = m if p is None else p
        for name, value in (("m", m), ("p", p), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must be a positive int, got {value!r}")
        if regularization == 0 and p != m:
            raise SciMLInputError("p", f"must equal m={m} when regularization is 0 (unique saddle point), got {p}")
        if not (math.isfinite(spread) and spread >= 0):
            raise SciMLInputError("spread", f"must be finite and >= 0, got {spread}")
        gen = torch.Generator().manual_seed(seed)
        left, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=dtype))
        right, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=dtype))
        k = min(m, p)
        singular = 0.5 + 0.5 * torch.rand(k, generator=gen, dtype=dtype)
        M = left[:, :k] @ torch.diag(singular) @ right[:, :k].T
        b = torch.randn(m, generator=gen, dtype=dtype)
        c = torch.randn(p, generator=gen, dtype=dtype)
        if n == 1:
            return cls(M, b, c, regularization=regularization)
        noise_M = torch.randn(n, m, p, generator=gen, dtype=dtype)
        noise_b = torch.randn(n, m, generator=gen, dtype=dtype)
        noise_c = torch.randn(n, p, generator=gen, dtype=dtype)
        Ms = M + spread * (noise_M - noise_M.mean(0))
        bs = b + spread * (noise_b - noise_b.mean(0))
        cs = c + spread * (noise_c - noise_c.mean(0))
        return cls(Ms, bs, cs, regularization=regularization)

    @property
    def dim(self) -> int:
        """Size of :math:`u = (x, y)`, ``m + p``."""
        return self.m + self.p

    @property
    def matrix(self) -> torch.Tensor:
        r"""The matrix :math:`A` of :math:`F(u) = A u + (b, c)`, shape ``(m + p, m + p)``.

        Example:
            >>> BilinearGame(torch.tensor([[2.0]]), torch.zeros(1), torch.zeros(1)).matrix
            tensor([[ 0.,  2.],
                    [-2.,  0.]])
        """
        mu = self.regularization
        top = torch.cat([mu * torch.eye(self.m, dtype=self.M.dtype, device=self.M.device), self.M], dim=1)
        bottom = torch.cat([-self.M.T, mu * torch.eye(self.p, dtype=self.M.dtype, device=self.M.device)], dim=1)
        return torch.cat([top, bottom], dim=0)

    @property
    def lipschitz(self) -> float:
        r""":math:`\|A\|_2 = \sqrt{\mu^2 + \sigma_{\max}(M)^2}`, the Lipschitz constant of :math:`F`.

        Example:
            >>> BilinearGame(torch.tensor([[3.0]]), torch.zeros(1), torch.zeros(1), regularization=4.0).lipschitz
            5.0
        """
        sigma = float(torch.linalg.matrix_norm(self.M, ord=2))
        return math.hypot(self.regularization, sigma)

    @property
    def component_lipschitz(self) -> float:
        r"""The mean-square Lipschitz constant :math:`\sqrt{\frac1n \sum_i \|A_i\|_2^2}` of the components.

        Example:
            >>> game = BilinearGame(torch.tensor([[[1.0]], [[3.0]]]), torch.zeros(1), torch.zeros(1))
            >>> game.component_lipschitz  # sqrt((1 + 9) / 2)
            2.23606797749979
        """
        sigmas = torch.linalg.matrix_norm(self._M_components, ord=2)
        return math.sqrt(float((self.regularization**2 + sigmas**2).mean()))

    @property
    def solution(self) -> torch.Tensor:
        r"""The saddle point :math:`u^\star = (x^\star, y^\star)`, shape ``(m + p,)``.

        Raises:
            SciMLError: when the saddle point is not unique (:math:`\mu = 0` and :math:`M` singular).
        """
        try:
            if self.regularization == 0:
                x = torch.linalg.solve(self.M.T, self.c)
                y = -torch.linalg.solve(self.M, self.b)
                return torch.cat([x, y])
            return -torch.linalg.solve(self.matrix, torch.cat([self.b, self.c]))
        except RuntimeError as error:  # torch raises a plain RuntimeError subclass on singular systems
            raise SciMLError(f"the saddle point is not unique: {error}") from error

    def split(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split :math:`u` into :math:`(x, y)`.

        Example:
            >>> BilinearGame.random(2).split(torch.arange(4.0))
            (tensor([0., 1.]), tensor([2., 3.]))
        """
        return u[: self.m], u[self.m :]

    def operator(self, u: torch.Tensor) -> torch.Tensor:
        r"""The full operator :math:`F(u)`, shape ``(m + p,)``.

        Example:
            >>> game = BilinearGame(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([4.0]))
            >>> game.operator(torch.zeros(2))  # (b, c)
            tensor([1., 4.])
        """
        _check_point(u, self.dim, self.M)
        x, y = self.split(u)
        mu = self.regularization
        return torch.cat([self.M @ y + self.b + mu * x, -(self.M.T @ x) + self.c + mu * y])

    __call__ = operator

    def components(self, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r"""The batch mean :math:`\frac{1}{|B|}\sum_{i \in B} F_i(u)` over the indices ``idx`` (repeats count).

        Args:
            u: point, shape ``(m + p,)``.
            idx: component indices, 1-D integer tensor with entries in ``[0, n)``.

        Returns:
            Shape ``(m + p,)``.

        Example:
            >>> game = BilinearGame.random(2, n=5, seed=0)
            >>> u = torch.randn(4, dtype=torch.float64)
            >>> torch.allclose(game.components(u, torch.arange(5)), game.operator(u))
            True
        """
        _check_point(u, self.dim, self.M)
        idx = _check_index(idx, self.n).to(self.M.device)
        x, y = self.split(u)
        mu = self.regularization
        M = self._M_components[idx]
        top = (M @ y).mean(0) + self._b_components[idx].mean(0) + mu * x
        bottom = -(M.transpose(1, 2) @ x).mean(0) + self._c_components[idx].mean(0) + mu * y
        return torch.cat([top, bottom])

    def resolvent(self, v: torch.Tensor, eta: float) -> torch.Tensor:
        r"""The resolvent :math:`J_{\eta F}(v) = (I + \eta A)^{-1}(v - \eta (b, c))`, firmly nonexpansive.

        Args:
            v: point, shape ``(m + p,)``.
            eta: step :math:`\eta > 0`.

        Returns:
            The unique :math:`w` with :math:`w + \eta F(w) = v`, shape ``(m + p,)``.

        Example:
            >>> game = BilinearGame.random(2, seed=3)
            >>> v = torch.ones(4, dtype=torch.float64)
            >>> w = game.resolvent(v, 0.5)
            >>> torch.allclose(w + 0.5 * game.operator(w), v)
            True
        """
        _check_point(v, self.dim, self.M)
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta > 0):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("eta", f"must be a finite number > 0, got {eta!r}")
        eye = torch.eye(self.dim, dtype=self.M.dtype, device=self.M.device)
        return torch.linalg.solve(eye + eta * self.matrix, v - eta * torch.cat([self.b, self.c]))

    def residual(self, u: torch.Tensor) -> float:
        r"""The operator residual :math:`\|F(u)\|_2`, zero exactly at the saddle point.

        Example:
            >>> game = BilinearGame(torch.tensor([[1.0]]), torch.tensor([3.0]), torch.tensor([4.0]))
            >>> game.residual(torch.zeros(2))
            5.0
        """
        return float(torch.linalg.vector_norm(self.operator(u)))


class CocoerciveFiniteSum:
    r"""A cocoercive linear finite sum :math:`F(u) = \frac1n \sum_i (A_i u - b_i)` with symmetric PSD :math:`A_i`.

    Each :math:`F_i` is :math:`1/\lambda_{\max}(A_i)`-cocoercive, so the sum is cocoercive "on average" in the sense
    of Cai, Alacaoglu and Diakonikolas (2024) with
    :math:`L = \max_i \lambda_{\max}(A_i)` (:attr:`component_cocoercivity`):

    .. math::

        \tfrac1n \textstyle\sum_i \langle F_i u - F_i v, u - v\rangle
        \ge \tfrac1L \tfrac1n \sum_i \|F_i u - F_i v\|^2 ,

    while the full operator is :math:`1/\lambda_{\max}(\bar A)`-cocoercive (:attr:`cocoercivity`). With
    :math:`\bar A = \frac1n\sum_i A_i` positive definite the unique zero is :math:`u^\star = \bar A^{-1} \bar b`.

    Args:
        A: stacked symmetric positive semidefinite matrices, shape ``(n, d, d)``.
        b: stacked offsets, shape ``(n, d)``.

    Raises:
        SciMLInputError: on wrong shapes, dtypes, devices, non-finite entries, or non-symmetric ``A``.

    Example:
        >>> A = torch.stack([torch.eye(2), 3.0 * torch.eye(2)])
        >>> problem = CocoerciveFiniteSum(A, torch.ones(2, 2))
        >>> problem.solution  # (2 I)^{-1} (1, 1)
        tensor([0.5000, 0.5000])
        >>> problem.cocoercivity, problem.component_cocoercivity
        (2.0, 3.0)
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        for name, value in (("A", A), ("b", b)):
            check_dtype(name, check_tensor(name, value))
            check_nonempty(name, value)
            check_finite(name, value)
        if A.ndim != 3 or A.shape[1] != A.shape[2]:
            raise SciMLInputError("A", f"must have shape (n, d, d), got {tuple(A.shape)}")
        n, d, _ = A.shape
        if b.shape != (n, d) or b.dtype != A.dtype or b.device != A.device:
            raise SciMLInputError("b", f"expected shape ({n}, {d}) with A's dtype and device, got {tuple(b.shape)}")
        if not torch.allclose(A, A.transpose(1, 2)):
            raise SciMLInputError("A", "every component must be symmetric")
        self.n: int = n
        self.dim: int = d
        self._A_components = A
        self._b_components = b
        self.A: torch.Tensor = A.mean(0)
        self.b: torch.Tensor = b.mean(0)

    @classmethod
    def random(
        cls, dim: int, n: int, *, spread: float = 0.5, condition: float = 10.0, seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> CocoerciveFiniteSum:  # fmt: skip
        r"""A random problem whose components stay positive semidefinite.

        Components :math:`A_i = \bar A + \text{spread}\cdot\lambda_{\min}(\bar A)\, E_i` with centered
        symmetric :math:`E_i`, :math:`\|E_i\|_2 \le 1`, so each :math:`A_i` stays PSD.

        :math:`\bar A` has eigenvalues spread log-uniformly in :math:`[1/\text{condition}, 1]`; :math:`b_i` are
        Gaussian.

        Args:
            dim: dimension ``d``.
            n: number of components.
            spread: relative size of the component perturbations, in ``[0, 1]``.
            condition: condition number of :math:`\bar A`, ``>= 1``.
            seed: seed of a private generator.
            dtype: floating dtype.

        Returns:
            The problem.

        Raises:
            SciMLInputError: on non-positive sizes or out-of-range ``spread``/``condition``.

        Example:
            >>> problem = CocoerciveFiniteSum.random(3, 8, seed=0)
            >>> bool(torch.linalg.eigvalsh(problem._A_components).min() >= 0)
            True
        """
        for name, value in (("dim", dim), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must be a positive int, got {value!r}")
        if not 0 <= spread <= 1:
            raise SciMLInputError("spread", f"must lie in [0, 1], got {spread}")
        if not (math.isfinite(condition) and condition >= 1):
            raise SciMLInputError("condition", f"must be finite and >= 1, got {condition}")
        gen = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=dtype))
        eigs = torch.logspace(0.0, -math.log10(condition), dim, dtype=dtype)
        mean = basis @ torch.diag(eigs) @ basis.T
        noise = torch.randn(n, dim, dim, generator=gen, dtype=dtype)
        noise = noise + noise.transpose(1, 2)
        noise = noise - noise.mean(0)
        # Centering can raise a norm above 1; scale by the largest so every perturbation is at most spread * lmin.
        scale = torch.linalg.matrix_norm(noise, ord=2).max().clamp_min(torch.finfo(dtype).tiny)
        A = mean + (spread * float(eigs.min()) / scale) * noise
        A = 0.5 * (A + A.transpose(1, 2))
        b = torch.randn(n, dim, generator=gen, dtype=dtype)
        return cls(A, b)

    @classmethod
    def least_squares(cls, features: torch.Tensor, targets: torch.Tensor) -> CocoerciveFiniteSum:
        r"""The least-squares gradient :math:`\nabla \frac{1}{2n}\sum_i (a_i^\top u - y_i)^2` as a finite sum.

        Components :math:`A_i = a_i a_i^\top`, :math:`b_i = y_i a_i`.

        Args:
            features: rows :math:`a_i`, shape ``(n, d)`` with ``n >= d`` and full column rank.
            targets: :math:`y_i`, shape ``(n,)``.

        Returns:
            The problem; its :attr:`solution` is the least-squares solution.

        Raises:
            SciMLInputError: on wrong shapes.

        Example:
            >>> problem = CocoerciveFiniteSum.least_squares(torch.eye(2), torch.tensor([1.0, 2.0]))
            >>> problem.solution
            tensor([1., 2.])
        """
        check_tensor("features", features)
        check_tensor("targets", targets)
        if features.ndim != 2 or targets.shape != features.shape[:1]:
            raise SciMLInputError(
                "targets", f"expected features (n, d) and targets (n,), got {tuple(features.shape)}, "
                f"{tuple(targets.shape)}"
            )  # fmt: skip
        return cls(features[:, :, None] * features[:, None, :], targets[:, None] * features)

    @property
    def cocoercivity(self) -> float:
        r""":math:`\lambda_{\max}(\bar A)`: the full :math:`F` is :math:`1/\lambda_{\max}`-cocoercive, and Lipschitz."""
        return float(torch.linalg.eigvalsh(self.A).max())

    @property
    def component_cocoercivity(self) -> float:
        r""":math:`L = \max_i \lambda_{\max}(A_i)`, the "on average" cocoercivity constant of the components."""
        return float(torch.linalg.eigvalsh(self._A_components).max())

    @property
    def solution(self) -> torch.Tensor:
        r"""The zero :math:`u^\star = \bar A^{-1} \bar b`, shape ``(d,)``.

        Raises:
            SciMLError: when :math:`\bar A` is singular.
        """
        try:
            return torch.linalg.solve(self.A, self.b)
        except RuntimeError as error:
            raise SciMLError(f"the zero is not unique: {error}") from error

    def operator(self, u: torch.Tensor) -> torch.Tensor:
        r"""The full operator :math:`F(u) = \bar A u - \bar b`, shape ``(d,)``.

        Example:
            >>> CocoerciveFiniteSum(torch.eye(2)[None], torch.ones(1, 2)).operator(torch.zeros(2))
            tensor([-1., -1.])
        """
        _check_point(u, self.dim, self.A)
        return self.A @ u - self.b

    __call__ = operator

    def components(self, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r"""The batch mean :math:`\frac{1}{|B|}\sum_{i\in B} (A_i u - b_i)` over ``idx`` (repeats count).

        Args:
            u: point, shape ``(d,)``.
            idx: component indices, 1-D integer tensor with entries in ``[0, n)``.

        Returns:
            Shape ``(d,)``.

        Example:
            >>> problem = CocoerciveFiniteSum.random(2, 4, seed=0)
            >>> u = torch.ones(2, dtype=torch.float64)
            >>> torch.allclose(problem.components(u, torch.arange(4)), problem.operator(u))
            True
        """
        _check_point(u, self.dim, self.A)
        idx = _check_index(idx, self.n).to(self.A.device)
        return (self._A_components[idx] @ u).mean(0) - self._b_components[idx].mean(0)

    def residual(self, u: torch.Tensor) -> float:
        r"""The operator residual :math:`\|F(u)\|_2`.

        Example:
            >>> CocoerciveFiniteSum(torch.eye(2)[None], torch.ones(1, 2)).residual(torch.ones(2))
            0.0
        """
        return float(torch.linalg.vector_norm(self.operator(u)))
