r"""Bilevel test problems, generated locally from a seed, with known answers where they exist.

Every problem implements :class:`~sciml_bilevel.problems.BilevelProblem`: the upper variable ``x`` and the lower
variable ``y`` are flat 1-D tensors of the problem's dtype and device, and both losses are means over samples (a
``batch`` of sample indices gives an unbiased minibatch estimate). Data is drawn on the CPU in float64 from
``torch.Generator().manual_seed(seed)`` and then cast, so a seed gives the same problem on every device.

Besides the protocol, every problem has ``dim_upper`` and ``dim_lower`` (the sizes of ``x`` and ``y``) and
:meth:`solve_lower` (the lower-level solution :math:`y^*(x)`, in closed form or by damped Newton on the strongly
convex lower level). :class:`QuadraticBilevel` and :class:`RidgeHyperparameter` also give :math:`y^*(x)`,
:math:`\Phi(x) = f(x, y^*(x))` and :math:`\nabla\Phi(x)` in closed form.

References:
    Franceschi, Donini, Frasconi, Pontil, "Forward and Reverse Gradient-Based Hyperparameter Optimization",
    ICML 2017, arXiv:1703.01785 (data hyper-cleaning). Franceschi, Frasconi, Salzo, Grazzi, Pontil, "Bilevel
    Programming for Hyperparameter Optimization and Meta-Learning", ICML 2018, arXiv:1806.04910
    (hyper-representation). Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016,
    arXiv:1602.02355 (ridge and logistic regularization). Hao, Gong, Liu, "Bilevel Optimization under Unbounded
    Smoothness", ICLR 2024, arXiv:2401.09587 (the test-problem suite of BO-REP).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from sciml_protocols import SciMLInputError, Solution, check_finite, check_tensor

__all__ = [
    "HyperCleaning",
    "HyperRepresentation",
    "LogisticRegularization",
    "QuadraticBilevel",
    "RidgeHyperparameter",
]


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SciMLInputError(name, f"must be an int, got {type(value).__name__}")
    if value < minimum:
        raise SciMLInputError(name, f"must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: object, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    v = float(value)
    bad_low = v <= low if low_open else v < low
    if math.isnan(v) or bad_low or v > high or math.isinf(v):
        bracket = "(" if low_open else "["
        raise SciMLInputError(name, f"must lie in {bracket}{low}, {high}], got {value}")
    return v


def _check_dtype_arg(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SciMLInputError("dtype", f"must be a real floating torch.dtype, got {dtype!r}")
    return dtype


def _generator(seed: object) -> torch.Generator:
    _check_int("seed", seed, minimum=0)
    assert isinstance(seed, int)
    return torch.Generator().manual_seed(seed)


class _Problem(abc.ABC):
    """Validation and the generic lower-level solver shared by every problem."""

    n_upper: int
    n_lower: int
    dim_upper: int
    dim_lower: int
    mu: float

    def __init__(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        self._dtype = _check_dtype_arg(dtype)
        try:
            self._device = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError):
            raise SciMLInputError("device", f"is not a device, got {device!r}") from None

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the data, ``x`` and ``y``."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device of the data, ``x`` and ``y``."""
        return self._device

    def _put(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=self._dtype, device=self._device)

    def _check_point(self, name: str, t: object, size: int) -> torch.Tensor:
        t = check_tensor(name, t)
        if t.ndim != 1 or t.shape[0] != size:
            raise SciMLInputError(name, f"expected a 1-D tensor of size {size}, got shape {tuple(t.shape)}")
        if t.dtype != self._dtype:
            raise SciMLInputError(name, f"expected dtype {self._dtype} (the problem's), got {t.dtype}")
        if t.device.type != self._device.type or (
            self._device.index is not None and t.device.index not in (None, self._device.index)
        ):
            raise SciMLInputError(name, f"is on {t.device} but the problem is on {self._device}")
        return t

    def _check_xy(self, x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self._check_point("x", x, self.dim_upper), self._check_point("y", y, self.dim_lower)

    def _check_batch(self, batch: object, n: int) -> torch.Tensor | None:
        if batch is None:
            return None
        b = check_tensor("batch", batch)
        if b.dtype != torch.int64 or b.ndim != 1 or b.numel() == 0:
            raise SciMLInputError(
                "batch", f"must be a non-empty 1-D int64 tensor of indices, got {b.dtype} shape {tuple(b.shape)}"
            )
        if bool(((b < 0) | (b >= n)).any()):
            raise SciMLInputError("batch", f"indices must lie in [0, {n})")
        return b.to(self._device)

    @abc.abstractmethod
    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor: ...

    @abc.abstractmethod
    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor: ...

    @abc.abstractmethod
    def init_lower(self) -> torch.Tensor: ...

    def solve_lower(
        self, x: torch.Tensor, *, y0: torch.Tensor | None = None, tol: float = 1e-10, max_iter: int = 50
    ) -> Solution[torch.Tensor]:
        r"""Minimize the (strongly convex) lower level :math:`g(x, \cdot)` to high accuracy.

        Damped Newton with an Armijo backtracking line search and the dense Hessian (built from Hessian-vector
        products), stopped when :math:`\|\nabla_y g\| \le \mathrm{tol}`. Meant for the small problems of this
        module (a few hundred lower variables at most).

        Args:
            x: upper variable ``(dim_upper,)``.
            y0: starting point ``(dim_lower,)``; :meth:`init_lower` when None.
            tol: gradient-norm tolerance, ``> 0``.
            max_iter: Newton iteration cap, ``>= 1``.

        Returns:
            :class:`~sciml_protocols.Solution` with ``value`` :math:`y^*(x)` (detached), ``residual`` the final
            gradient norm.

        Raises:
            SciMLInputError: wrong shape, dtype or device of ``x`` or ``y0``; a bad ``tol`` or ``max_iter``.
        """
        x = self._check_point("x", x, self.dim_upper).detach()
        y = self.init_lower() if y0 is None else self._check_point("y0", y0, self.dim_lower).detach().clone()
        _check_float("tol", tol, low=0.0, low_open=True)
        _check_int("max_iter", max_iter)
        hessian_fn = self._lower_hessian_fn(x)
        return _newton(lambda v: self.lower_loss(x, v), y, tol=tol, max_iter=max_iter, hessian_fn=hessian_fn)

    def _lower_hessian_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        r"""A closed-form :math:`\nabla^2_{yy} g(x, \cdot)`, or None to build it from Hessian-vector products."""
        del x
        return None


def _newton(
    fun: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    hessian_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Solution[torch.Tensor]:
    n = y.numel()
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    history: list[float] = []
    grad_norm = math.inf
    n_iter = 0
    for n_iter in range(max_iter + 1):
        with torch.enable_grad():
            v = y.detach().requires_grad_(True)
            value = fun(v)
            (grad,) = torch.autograd.grad(value, v, create_graph=hessian_fn is None)
            grad_norm = float(torch.linalg.vector_norm(grad.detach()))
            history.append(grad_norm)
            if grad_norm <= tol or n_iter == max_iter:
                break
            if hessian_fn is None:
                rows = [torch.autograd.grad(grad, v, eye[i], retain_graph=True)[0] for i in range(n)]
                hessian = torch.stack(rows)
            else:
                hessian = hessian_fn(y.detach())
        hessian = 0.5 * (hessian + hessian.T)
        grad = grad.detach()
        step = torch.linalg.solve(hessian, grad)
        slope = float(grad @ step)
        t, f0 = 1.0, float(value.detach())
        with torch.no_grad():
            while t > 1e-12 and float(fun(y - t * step)) > f0 - 1e-4 * t * slope:
                t *= 0.5
            y = y - t * step
    return Solution(
        value=y.detach(),
        converged=grad_norm <= tol,
        n_iter=n_iter,
        residual=grad_norm,
        history=torch.tensor(history, dtype=torch.float64),
    )


def _mean_over(per_sample: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
    return per_sample.mean() if batch is None else per_sample.index_select(0, batch).mean()


def _f1(predicted: torch.Tensor, actual: torch.Tensor) -> tuple[float, float, float]:
    true_positive = float((predicted & actual).sum())
    n_predicted, n_actual = float(predicted.sum()), float(actual.sum())
    precision = true_positive / n_predicted if n_predicted > 0 else 0.0
    recall = true_positive / n_actual if n_actual > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _softmax_hessian(features: torch.Tensor, probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""Hessian of :math:`\sum_i w_i \mathrm{CE}(V \tilde a_i, \ell_i)` in ``V`` ``(k, h)`` flattened row-major.

    Per sample it is :math:`(\mathrm{diag}(p_i) - p_i p_i^\top) \otimes \tilde a_i \tilde a_i^\top`.
    """
    k, h = probs.shape[1], features.shape[1]
    weighted = probs * weights[:, None]
    diag_part = torch.einsum("ic,ij,il->cjl", weighted, features, features)
    outer_part = torch.einsum("ic,id,ij,il->cjdl", weighted, probs, features, features)
    hessian = -outer_part
    idx = torch.arange(k, device=probs.device)
    hessian[idx, :, idx, :] += diag_part
    return hessian.reshape(k * h, k * h)


# ---------------------------------------------------------------------------------------------------------------
# QuadraticBilevel
# ---------------------------------------------------------------------------------------------------------------


class QuadraticBilevel(_Problem):
    r"""A quadratic bilevel problem with a known solution.

    .. math::
        f(x, y) = \tfrac12\|y - b\|^2 + \tfrac\rho2\|x\|^2, \qquad
        g(x, y) = \tfrac12\|y - A x\|^2,

    so :math:`y^*(x) = A x`, :math:`\Phi(x) = \tfrac12\|A x - b\|^2 + \tfrac\rho2\|x\|^2`,
    :math:`\nabla\Phi(x) = A^\top(A x - b) + \rho x` and :math:`x^* = (A^\top A + \rho I)^{-1} A^\top b`. The lower
    level is 1-strongly convex (:math:`\mu = 1`) and 1-smooth in ``y``.

    ``A`` ``(dim_lower, dim)`` and ``b`` have i.i.d. :math:`\mathcal N(0, 1/\mathrm{dim})` and
    :math:`\mathcal N(0, 1)` entries. The "samples" are the coordinates of ``y``
    (``n_upper = n_lower = dim_lower``): sample ``i`` of ``f`` is
    :math:`\tfrac{m}{2}(y_i - b_i)^2 + \tfrac\rho2\|x\|^2` and of ``g`` is :math:`\tfrac{m}{2}(y_i - (Ax)_i)^2`
    (:math:`m` = ``dim_lower``), whose means over all samples are ``f`` and ``g`` above, and over a minibatch
    unbiased estimates of them.

    Args:
        dim: size of ``x``, ``>= 1``.
        rho: upper-level ridge :math:`\rho`, ``> 0`` (makes :math:`x^*` unique).
        seed: seed of ``A`` and ``b``, ``>= 0``.
        dim_lower: size of ``y`` (``dim`` when None).
        dtype: floating dtype of everything (float64 by default).
        device: device of everything (CPU when None).

    Raises:
        SciMLInputError: a non-positive size or ``rho``, a negative seed, a non-floating dtype.

    Example:
        >>> problem = QuadraticBilevel(dim=3, rho=0.1, seed=0)
        >>> x = problem.x_star
        >>> float(problem.hypergradient(x).norm()) < 1e-12
        True
        >>> y = problem.y_star(x)
        >>> torch.allclose(problem.upper_loss(x, y), problem.phi(x))
        True
        >>> problem.evaluate(x, y)["distance_to_x_star"]
        0.0
    """

    def __init__(
        self,
        dim: int = 5,
        rho: float = 0.1,
        seed: int = 0,
        *,
        dim_lower: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device)
        n = _check_int("dim", dim)
        m = n if dim_lower is None else _check_int("dim_lower", dim_lower)
        self.rho = _check_float("rho", rho, low=0.0, low_open=True)
        gen = _generator(seed)
        a = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        b = torch.randn(m, generator=gen, dtype=torch.float64)
        x_star = torch.linalg.solve(a.T @ a + self.rho * torch.eye(n, dtype=torch.float64), a.T @ b)
        self.A = self._put(a)
        self.b = self._put(b)
        self.x_star = self._put(x_star)
        self.dim_upper, self.dim_lower = n, m
        self.n_upper = self.n_lower = m
        self.mu = 1.0

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`f(x, y) = \tfrac12\|y - b\|^2 + \tfrac\rho2\|x\|^2` (a minibatch mean over coordinates of ``y``).

        Example:
            >>> p = QuadraticBilevel(dim=2)
            >>> float(p.upper_loss(torch.zeros(2, dtype=torch.float64), p.b))
            0.0
        """
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_upper)
        per_sample = 0.5 * self.dim_lower * (y - self.b) ** 2
        return _mean_over(per_sample, batch) + 0.5 * self.rho * (x @ x)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`g(x, y) = \tfrac12\|y - A x\|^2` (a minibatch mean over coordinates of ``y``).

        Example:
            >>> p = QuadraticBilevel(dim=2)
            >>> x = torch.ones(2, dtype=torch.float64)
            >>> float(p.lower_loss(x, p.A @ x))
            0.0
        """
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_lower)
        per_sample = 0.5 * self.dim_lower * (y - self.A @ x) ** 2
        return _mean_over(per_sample, batch)

    def init_upper(self) -> torch.Tensor:
        """Zeros ``(dim,)``."""
        return torch.zeros(self.dim_upper, dtype=self._dtype, device=self._device)

    def init_lower(self) -> torch.Tensor:
        """Zeros ``(dim_lower,)``."""
        return torch.zeros(self.dim_lower, dtype=self._dtype, device=self._device)

    def y_star(self, x: torch.Tensor) -> torch.Tensor:
        r"""The lower-level solution :math:`y^*(x) = A x` ``(dim_lower,)``, differentiable in ``x``."""
        return self.A @ self._check_point("x", x, self.dim_upper)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\Phi(x) = \tfrac12\|A x - b\|^2 + \tfrac\rho2\|x\|^2`, a scalar differentiable in ``x``."""
        x = self._check_point("x", x, self.dim_upper)
        r = self.A @ x - self.b
        return 0.5 * (r @ r) + 0.5 * self.rho * (x @ x)

    def hypergradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""The exact hypergradient :math:`\nabla\Phi(x) = A^\top(A x - b) + \rho x` ``(dim,)``."""
        x = self._check_point("x", x, self.dim_upper)
        return self.A.T @ (self.A @ x - self.b) + self.rho * x

    def solve_lower(
        self, x: torch.Tensor, *, y0: torch.Tensor | None = None, tol: float = 1e-10, max_iter: int = 50
    ) -> Solution[torch.Tensor]:
        """The closed form :math:`y^*(x) = A x` as a converged :class:`~sciml_protocols.Solution` (0 iterations)."""
        del y0, tol, max_iter
        return Solution(value=self.y_star(x).detach(), converged=True, n_iter=0, residual=0.0)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        r"""Losses and distances to the known solution.

        Returns:
            ``upper_loss``, ``lower_loss``, ``phi`` (:math:`\Phi(x)`), ``phi_gap`` (:math:`\Phi(x) - \Phi(x^*)`),
            ``distance_to_x_star`` (:math:`\|x - x^*\|`), ``relative_distance`` (divided by :math:`\|x^*\|`),
            ``lower_distance`` (:math:`\|y - A x\|`) and ``hypergradient_norm``.
        """
        x, y = self._check_xy(x, y)
        check_finite("x", x)
        check_finite("y", y)
        with torch.no_grad():
            distance = float(torch.linalg.vector_norm(x - self.x_star))
            return {
                "upper_loss": float(self.upper_loss(x, y)),
                "lower_loss": float(self.lower_loss(x, y)),
                "phi": float(self.phi(x)),
                "phi_gap": float(self.phi(x) - self.phi(self.x_star)),
                "distance_to_x_star": distance,
                "relative_distance": distance / max(float(torch.linalg.vector_norm(self.x_star)), 1e-300),
                "lower_distance": float(torch.linalg.vector_norm(y - self.A @ x)),
                "hypergradient_norm": float(torch.linalg.vector_norm(self.hypergradient(x))),
            }


# ---------------------------------------------------------------------------------------------------------------
# RidgeHyperparameter
# ---------------------------------------------------------------------------------------------------------------


class RidgeHyperparameter(_Problem):
    r"""Tuning the ridge penalty of a linear regression on validation data (closed form).

    With training data :math:`X \in \mathbb R^{n\times d}, t`, validation data :math:`X_v, t_v` and
    :math:`\lambda = e^x` (one shared value, or one per feature with ``per_feature=True``):

    .. math::
        g(x, w) = \frac{1}{2n}\|X w - t\|^2 + \tfrac12 \sum_j \lambda_j w_j^2, \qquad
        f(x, w) = \frac{1}{2n_v}\|X_v w - t_v\|^2.

    With :math:`H = X^\top X / n + \mathrm{diag}(\lambda)`: :math:`w^*(x) = H^{-1} X^\top t / n`, and with
    :math:`v = H^{-1}\nabla_w f(w^*)` the hypergradient is
    :math:`\partial\Phi/\partial x_j = -\lambda_j v_j w^*_j` per feature, or
    :math:`d\Phi/dx = -\lambda\, v^\top w^*` for a shared :math:`\lambda`. The lower level is
    :math:`\min_j\lambda_j`-strongly convex. The best shared :math:`\log\lambda` is found by a grid on
    :math:`[-14, 10]` refined by golden-section search, using the eigendecomposition of :math:`X^\top X / n`.

    Data: :math:`X, X_v` i.i.d. :math:`\mathcal N(0, 1)`, :math:`t = X w_{\mathrm{true}} + \mathrm{noise}\cdot
    \varepsilon` with :math:`w_{\mathrm{true}} \sim \mathcal N(0, I/d)`.

    Args:
        n_train: training samples ``n`` (``n_lower``).
        n_val: validation samples ``n_v`` (``n_upper``).
        dim: features ``d`` (the size of ``y = w``).
        noise: label-noise standard deviation, ``>= 0``.
        seed: data seed.
        per_feature: one :math:`\log\lambda_j` per feature (``x`` of size ``d``) instead of one (size 1).
        init_log_lambda: the starting value of every entry of ``x``.
        dtype: floating dtype (float64 by default).
        device: device (CPU when None).

    Raises:
        SciMLInputError: non-positive sizes, negative noise or seed, non-floating dtype, non-finite
            ``init_log_lambda``.

    Example:
        >>> problem = RidgeHyperparameter(n_train=20, n_val=20, dim=5, seed=0)
        >>> x = problem.init_upper()
        >>> w = problem.y_star(x)
        >>> x.shape, w.shape
        (torch.Size([1]), torch.Size([5]))
        >>> g = problem.hypergradient(problem.best_log_lambda.reshape(1))
        >>> abs(float(g)) < 1e-8
        True
    """

    def __init__(
        self,
        n_train: int = 40,
        n_val: int = 40,
        dim: int = 20,
        noise: float = 1.0,
        seed: int = 0,
        *,
        per_feature: bool = False,
        init_log_lambda: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device)
        n = _check_int("n_train", n_train)
        nv = _check_int("n_val", n_val)
        d = _check_int("dim", dim)
        self.noise = _check_float("noise", noise, low=0.0)
        if not isinstance(per_feature, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("per_feature", f"must be a bool, got {type(per_feature).__name__}")
        self.per_feature = per_feature
        self.init_log_lambda = _check_float("init_log_lambda", init_log_lambda, low=-math.inf)
        gen = _generator(seed)
        w_true = torch.randn(d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        x_train = torch.randn(n, d, generator=gen, dtype=torch.float64)
        x_val = torch.randn(nv, d, generator=gen, dtype=torch.float64)
        t_train = x_train @ w_true + self.noise * torch.randn(n, generator=gen, dtype=torch.float64)
        t_val = x_val @ w_true + self.noise * torch.randn(nv, generator=gen, dtype=torch.float64)
        self._data64 = (x_train, t_train, x_val, t_val)
        self.X_train, self.t_train = self._put(x_train), self._put(t_train)
        self.X_val, self.t_val = self._put(x_val), self._put(t_val)
        self.w_true = self._put(w_true)
        self.n_lower, self.n_upper = n, nv
        self.dim_upper, self.dim_lower = (d if per_feature else 1), d
        self.mu = math.exp(self.init_log_lambda)
        self._best: tuple[float, float] | None = None

    def _lambdas(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x).expand(self.dim_lower)

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`f = \frac{1}{2 n_v}\|X_v w - t_v\|^2` (mean over the validation samples of ``batch``)."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_upper)
        return _mean_over(0.5 * (self.X_val @ y - self.t_val) ** 2, batch)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`g = \frac{1}{2n}\|X w - t\|^2 + \tfrac12\sum_j e^{x_j} w_j^2` (data term over ``batch``)."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_lower)
        data = _mean_over(0.5 * (self.X_train @ y - self.t_train) ** 2, batch)
        return data + 0.5 * (self._lambdas(x) * y * y).sum()

    def init_upper(self) -> torch.Tensor:
        """``init_log_lambda`` in every entry, ``(1,)`` or ``(dim,)``."""
        return torch.full((self.dim_upper,), self.init_log_lambda, dtype=self._dtype, device=self._device)

    def init_lower(self) -> torch.Tensor:
        """Zeros ``(dim,)``."""
        return torch.zeros(self.dim_lower, dtype=self._dtype, device=self._device)

    def _hessian(self, x: torch.Tensor) -> torch.Tensor:
        gram = self.X_train.T @ self.X_train / self.n_lower
        return gram + torch.diag(self._lambdas(x))

    def y_star(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`w^*(x) = (X^\top X/n + \mathrm{diag}(e^x))^{-1} X^\top t / n` ``(dim,)``, differentiable."""
        x = self._check_point("x", x, self.dim_upper)
        return torch.linalg.solve(self._hessian(x), self.X_train.T @ self.t_train / self.n_lower)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\Phi(x) = f(x, w^*(x))`, differentiable in ``x``."""
        return self.upper_loss(x, self.y_star(x))

    def hypergradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""The exact hypergradient :math:`\nabla\Phi(x)` (shape of ``x``), see the class docstring."""
        x = self._check_point("x", x, self.dim_upper).detach()
        w = self.y_star(x)
        grad_f = self.X_val.T @ (self.X_val @ w - self.t_val) / self.n_upper
        v = torch.linalg.solve(self._hessian(x), grad_f)
        per_feature = -self._lambdas(x) * v * w
        return per_feature if self.per_feature else per_feature.sum().reshape(1)

    def solve_lower(
        self, x: torch.Tensor, *, y0: torch.Tensor | None = None, tol: float = 1e-10, max_iter: int = 50
    ) -> Solution[torch.Tensor]:
        """The closed form :math:`w^*(x)` as a converged :class:`~sciml_protocols.Solution` (0 iterations)."""
        del y0, tol, max_iter
        return Solution(value=self.y_star(x).detach(), converged=True, n_iter=0, residual=0.0)

    def _search_best(self) -> tuple[float, float]:
        x_train, t_train, x_val, t_val = self._data64
        n = x_train.shape[0]
        s, vecs = torch.linalg.eigh(x_train.T @ x_train / n)
        c = vecs.T @ (x_train.T @ t_train / n)
        z = x_val @ vecs

        def loss(log_lams: torch.Tensor) -> torch.Tensor:
            coef = c / (s + torch.exp(log_lams)[:, None])
            return 0.5 * ((coef @ z.T - t_val) ** 2).mean(dim=1)

        grid = torch.linspace(-14.0, 10.0, 2401, dtype=torch.float64)
        k = int(torch.argmin(loss(grid)))
        lo, hi = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, grid.numel() - 1)])
        ratio = (math.sqrt(5.0) - 1.0) / 2.0
        for _ in range(80):
            a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            fa, fb = loss(torch.tensor([a, b], dtype=torch.float64)).tolist()
            if fa < fb:
                hi = b
            else:
                lo = a
        best = 0.5 * (lo + hi)
        return best, float(loss(torch.tensor([best], dtype=torch.float64)))

    @property
    def best_log_lambda(self) -> torch.Tensor:
        r"""The best shared :math:`\log\lambda` (0-dim tensor), by a 1-D search on the closed-form :math:`\Phi`."""
        if self._best is None:
            self._best = self._search_best()
        return torch.tensor(self._best[0], dtype=self._dtype, device=self._device)

    @property
    def best_upper_loss(self) -> float:
        r"""The validation loss :math:`\Phi` at :attr:`best_log_lambda`."""
        if self._best is None:
            self._best = self._search_best()
        return self._best[1]

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        r"""Validation losses and the distance to the best shared :math:`\log\lambda`.

        Returns:
            ``upper_loss`` (:math:`f(x, y)`), ``val_mse`` (:math:`\|X_v y - t_v\|^2 / n_v`), ``lower_loss``,
            ``phi`` (:math:`\Phi(x)`), ``phi_gap`` (:math:`\Phi(x)` minus the best shared-:math:`\lambda` loss;
            it can be negative with ``per_feature``), ``lower_distance`` (:math:`\|y - w^*(x)\|`) and, for a
            shared :math:`\lambda`, ``log_lambda_distance`` (:math:`|x - \log\lambda^*|`).
        """
        x, y = self._check_xy(x, y)
        check_finite("x", x)
        check_finite("y", y)
        with torch.no_grad():
            phi = float(self.phi(x))
            out = {
                "upper_loss": float(self.upper_loss(x, y)),
                "val_mse": float(((self.X_val @ y - self.t_val) ** 2).mean()),
                "lower_loss": float(self.lower_loss(x, y)),
                "phi": phi,
                "phi_gap": phi - self.best_upper_loss,
                "lower_distance": float(torch.linalg.vector_norm(y - self.y_star(x))),
            }
            if not self.per_feature:
                out["log_lambda_distance"] = abs(float(x[0]) - float(self.best_log_lambda))
        return out


# ---------------------------------------------------------------------------------------------------------------
# HyperCleaning
# ---------------------------------------------------------------------------------------------------------------


def _gaussian_mixture(gen: torch.Generator, means: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    classes, dim = means.shape
    labels = torch.randint(classes, (n,), generator=gen)
    features = means[labels] + torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return features, labels


class HyperCleaning(_Problem):
    r"""Data hyper-cleaning: learn per-sample weights that switch off corrupted training labels.

    A synthetic Gaussian mixture (class means :math:`m_c \sim \mathcal N(0, \frac{s^2}{2d} I)`, so two means are
    :math:`s` = ``separation`` apart on average; unit-variance features) gives training, validation and test
    sets. A fraction ``corruption`` of the training labels (exactly ``round(corruption * n_train)`` samples) is
    replaced by a label drawn uniformly from the *other* classes (:attr:`corrupted_mask`). With a linear softmax
    classifier :math:`y = (W, c)` (``W`` ``(classes, dim)`` then ``c`` ``(classes,)``, flattened) and per-sample
    weight logits :math:`x \in \mathbb R^{n}`:

    .. math::
        g(x, y) = \frac1n\sum_{i=1}^n \sigma(x_i)\,\mathrm{CE}(W a_i + c, \ell_i) + \frac\mu2\|y\|^2, \qquad
        f(x, y) = \frac1{n_v}\sum_{j=1}^{n_v}\mathrm{CE}(W a^v_j + c, \ell^v_j).

    The lower level is :math:`\mu`-strongly convex. :meth:`evaluate` reports test accuracy and the F1 score of
    flagging the samples with :math:`\sigma(x_i) < 1/2` as corrupted.

    Args:
        n_train: training samples (``n_lower`` and the size of ``x``).
        n_val: clean validation samples (``n_upper``).
        n_test: clean test samples.
        dim: feature dimension ``d``.
        classes: number of classes, ``>= 2``.
        corruption: fraction of corrupted training labels, in ``[0, 1)``.
        separation: expected distance between class means.
        mu: ridge on ``y`` (strong convexity), ``> 0``.
        seed: data seed.
        dtype: floating dtype (float64 by default).
        device: device (CPU when None).

    Raises:
        SciMLInputError: bad sizes, ``classes < 2``, ``corruption`` outside ``[0, 1)``, ``mu <= 0``.

    Example:
        >>> problem = HyperCleaning(n_train=60, n_val=60, n_test=200, dim=5, classes=3, seed=0)
        >>> x, y = problem.init_upper(), problem.init_lower()
        >>> x.shape, y.shape
        (torch.Size([60]), torch.Size([18]))
        >>> int(problem.corrupted_mask.sum())
        30
        >>> round(problem.evaluate(x, y)["test_accuracy"], 3)  # y = 0 predicts class 0 everywhere
        0.295
    """

    def __init__(
        self,
        n_train: int = 300,
        n_val: int = 300,
        n_test: int = 1000,
        dim: int = 10,
        classes: int = 3,
        corruption: float = 0.5,
        seed: int = 0,
        *,
        separation: float = 3.0,
        mu: float = 1e-2,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device)
        n = _check_int("n_train", n_train)
        nv = _check_int("n_val", n_val)
        nt = _check_int("n_test", n_test)
        d = _check_int("dim", dim)
        k = _check_int("classes", classes, minimum=2)
        self.corruption = _check_float("corruption", corruption, low=0.0, high=1.0)
        if self.corruption >= 1.0:
            raise SciMLInputError("corruption", f"must lie in [0, 1), got {corruption}")
        self.separation = _check_float("separation", separation, low=0.0)
        self.mu = _check_float("mu", mu, low=0.0, low_open=True)
        gen = _generator(seed)
        means = torch.randn(k, d, generator=gen, dtype=torch.float64) * (self.separation / math.sqrt(2 * d))
        a_train, clean_train = _gaussian_mixture(gen, means, n)
        a_val, l_val = _gaussian_mixture(gen, means, nv)
        a_test, l_test = _gaussian_mixture(gen, means, nt)
        n_bad = round(self.corruption * n)
        corrupted = torch.zeros(n, dtype=torch.bool)
        corrupted[torch.randperm(n, generator=gen)[:n_bad]] = True
        shift = torch.randint(1, k, (n,), generator=gen)
        l_train = torch.where(corrupted, (clean_train + shift) % k, clean_train)
        self.classes, self.dim = k, d
        self.A_train, self.A_val, self.A_test = self._put(a_train), self._put(a_val), self._put(a_test)
        self.labels_train = l_train.to(self._device)
        self.clean_labels_train = clean_train.to(self._device)
        self.labels_val, self.labels_test = l_val.to(self._device), l_test.to(self._device)
        self.corrupted_mask = corrupted.to(self._device)
        self.n_lower, self.n_upper, self.n_test = n, nv, nt
        self.dim_upper, self.dim_lower = n, k * (d + 1)

    def _logits(self, y: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        k, d = self.classes, self.dim
        return features @ y[: k * d].reshape(k, d).T + y[k * d :]

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Validation cross-entropy (mean over the validation samples of ``batch``)."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_upper)
        features, labels = self.A_val, self.labels_val
        if batch is not None:
            features, labels = features[batch], labels[batch]
        return F.cross_entropy(self._logits(y, features), labels)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r"""Weighted training cross-entropy :math:`\frac1n\sum\sigma(x_i)\mathrm{CE}_i + \frac\mu2\|y\|^2`."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_lower)
        features, labels, weights = self.A_train, self.labels_train, torch.sigmoid(x)
        if batch is not None:
            features, labels, weights = features[batch], labels[batch], weights[batch]
        losses = F.cross_entropy(self._logits(y, features), labels, reduction="none")
        return (weights * losses).mean() + 0.5 * self.mu * (y @ y)

    def init_upper(self) -> torch.Tensor:
        r"""Zeros ``(n_train,)``: every weight :math:`\sigma(0) = 1/2`."""
        return torch.zeros(self.dim_upper, dtype=self._dtype, device=self._device)

    def init_lower(self) -> torch.Tensor:
        """Zeros ``(classes * (dim + 1),)``."""
        return torch.zeros(self.dim_lower, dtype=self._dtype, device=self._device)

    def _accuracy(self, y: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self._logits(y, features).argmax(dim=1) == labels).to(torch.float64).mean())

    def _weighted_hessian_fn(self, weights: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        k, d = self.classes, self.dim
        features = torch.cat([self.A_train, torch.ones_like(self.A_train[:, :1])], dim=1)
        # y stores W (k, d) row-major then c (k,); the helper works in the (k, d + 1) layout [W | c]
        layout = torch.cat(
            [torch.arange(k * d).reshape(k, d), torch.arange(k * d, k * (d + 1)).reshape(k, 1)], dim=1
        ).reshape(-1)
        order = torch.argsort(layout).to(self._device)
        eye = torch.eye(self.dim_lower, dtype=self._dtype, device=self._device)

        def hessian(y: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(self._logits(y, self.A_train), dim=1)
            h = _softmax_hessian(features, probs, weights / self.n_lower)
            return h[order][:, order] + self.mu * eye

        return hessian

    def _lower_hessian_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self._weighted_hessian_fn(torch.sigmoid(x))

    def _fit_with_weights(self, weights: torch.Tensor) -> torch.Tensor:
        def loss(y: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(self._logits(y, self.A_train), self.labels_train, reduction="none")
            return (weights * ce).mean() + 0.5 * self.mu * (y @ y)

        hessian_fn = self._weighted_hessian_fn(weights)
        return _newton(loss, self.init_lower(), tol=1e-10, max_iter=100, hessian_fn=hessian_fn).value

    def accuracy_without_cleaning(self) -> float:
        r"""Test accuracy of the classifier trained on every training sample with weight 1 (the baseline).

        Example:
            >>> problem = HyperCleaning(n_train=60, n_val=60, n_test=200, dim=5, seed=0)
            >>> 0.5 < problem.accuracy_without_cleaning() <= 1.0
            True
        """
        y = self._fit_with_weights(torch.ones(self.n_lower, dtype=self._dtype, device=self._device))
        return self._accuracy(y, self.A_test, self.labels_test)

    def accuracy_with_oracle_cleaning(self) -> float:
        """Test accuracy of the classifier trained on the clean training samples only (a reference ceiling)."""
        weights = (~self.corrupted_mask).to(self._dtype)
        y = self._fit_with_weights(weights)
        return self._accuracy(y, self.A_test, self.labels_test)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        r"""Test accuracy and how well the weights find the corrupted samples.

        Returns:
            ``upper_loss``, ``lower_loss``, ``val_accuracy``, ``test_accuracy``, and ``precision``, ``recall``,
            ``f1`` of flagging :math:`\sigma(x_i) < 1/2` as corrupted against :attr:`corrupted_mask`, plus
            ``mean_weight_clean`` and ``mean_weight_corrupted`` (means of :math:`\sigma(x_i)`).
        """
        x, y = self._check_xy(x, y)
        check_finite("x", x)
        check_finite("y", y)
        with torch.no_grad():
            weights = torch.sigmoid(x)
            precision, recall, f1 = _f1(weights < 0.5, self.corrupted_mask)
            clean = ~self.corrupted_mask
            return {
                "upper_loss": float(self.upper_loss(x, y)),
                "lower_loss": float(self.lower_loss(x, y)),
                "val_accuracy": self._accuracy(y, self.A_val, self.labels_val),
                "test_accuracy": self._accuracy(y, self.A_test, self.labels_test),
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "mean_weight_clean": float(weights[clean].mean()) if bool(clean.any()) else math.nan,
                "mean_weight_corrupted": (
                    float(weights[self.corrupted_mask].mean()) if bool(self.corrupted_mask.any()) else math.nan
                ),
            }


# ---------------------------------------------------------------------------------------------------------------
# HyperRepresentation
# ---------------------------------------------------------------------------------------------------------------


class HyperRepresentation(_Problem):
    r"""Learning a representation shared by many tasks, each with its own linear head (meta-learning style).

    Tasks :math:`t = 1..T` share a ground-truth linear map :math:`B \in \mathbb R^{h \times d}`; task ``t`` labels
    its inputs :math:`a \sim \mathcal N(0, I_d)` by :math:`\arg\max_c (U_t B a + \xi)_c` with its own
    :math:`U_t` and Gumbel noise :math:`\xi` scaled by ``label_noise``. The upper variable is the representation
    :math:`P \in \mathbb R^{h \times d}` (flattened), giving features :math:`\phi(a) = P a` (``activation="linear"``)
    or :math:`\tanh(P a)`; the lower variable is every task's head :math:`(W_t, c_t)`, ``W_t`` ``(classes, h)``,
    ``c_t`` ``(classes,)``, flattened task by task. With :math:`\mathcal D^{tr}_t, \mathcal D^{val}_t` of equal
    sizes per task:

    .. math::
        g(P, y) = \frac1T\sum_t \frac1{|\mathcal D^{tr}_t|}\sum_{(a,\ell)\in\mathcal D^{tr}_t}
            \mathrm{CE}(W_t\phi(a) + c_t, \ell) + \frac\mu2\|y\|^2, \qquad
        f(P, y) = \frac1T\sum_t \frac1{|\mathcal D^{val}_t|}\sum_{(a,\ell)\in\mathcal D^{val}_t}
            \mathrm{CE}(W_t\phi(a) + c_t, \ell).

    Samples are numbered task-major (``n_lower = T * n_train``, ``n_upper = T * n_val``); the lower level is
    :math:`\mu`-strongly convex in ``y``.

    Args:
        n_tasks: number of tasks ``T``.
        n_train: training samples per task.
        n_val: validation samples per task.
        n_test: test samples per task.
        dim: input dimension ``d``.
        hidden: representation size ``h``.
        classes: classes per task, ``>= 2``.
        activation: ``"linear"`` or ``"tanh"``.
        label_noise: scale of the Gumbel noise on the true logits, ``>= 0``.
        mu: ridge on the heads, ``> 0``.
        seed: data seed.
        dtype: floating dtype (float64 by default).
        device: device (CPU when None).

    Raises:
        SciMLInputError: bad sizes, an unknown activation, negative noise, ``mu <= 0``.

    Example:
        >>> problem = HyperRepresentation(n_tasks=3, n_train=10, n_val=10, dim=6, hidden=2, seed=0)
        >>> problem.init_upper().shape, problem.init_lower().shape, problem.n_lower
        (torch.Size([12]), torch.Size([18]), 30)
        >>> 0.0 <= problem.evaluate(problem.init_upper(), problem.init_lower())["val_accuracy"] <= 1.0
        True
    """

    def __init__(
        self,
        n_tasks: int = 5,
        n_train: int = 20,
        n_val: int = 20,
        n_test: int = 100,
        dim: int = 10,
        hidden: int = 3,
        classes: int = 2,
        seed: int = 0,
        *,
        activation: Literal["linear", "tanh"] = "linear",
        label_noise: float = 0.3,
        mu: float = 1e-2,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device)
        t = _check_int("n_tasks", n_tasks)
        n = _check_int("n_train", n_train)
        nv = _check_int("n_val", n_val)
        nt = _check_int("n_test", n_test)
        d = _check_int("dim", dim)
        h = _check_int("hidden", hidden)
        k = _check_int("classes", classes, minimum=2)
        if activation not in ("linear", "tanh"):
            raise SciMLInputError("activation", f"must be 'linear' or 'tanh', got {activation!r}")
        self.activation = activation
        self.label_noise = _check_float("label_noise", label_noise, low=0.0)
        self.mu = _check_float("mu", mu, low=0.0, low_open=True)
        gen = _generator(seed)
        b_true = torch.randn(h, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        heads = torch.randn(t, k, h, generator=gen, dtype=torch.float64) * 2.0

        def draw(per_task: int) -> tuple[torch.Tensor, torch.Tensor]:
            a = torch.randn(t, per_task, d, generator=gen, dtype=torch.float64)
            logits = torch.einsum("tkh,hd,tnd->tnk", heads, b_true, a)
            u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_min(1e-300)
            labels = (logits - self.label_noise * torch.log(-torch.log(u))).argmax(dim=-1)
            return a.reshape(t * per_task, d), labels.reshape(t * per_task)

        a_train, l_train = draw(n)
        a_val, l_val = draw(nv)
        a_test, l_test = draw(nt)
        self.n_tasks, self.dim, self.hidden, self.classes = t, d, h, k
        self.A_train, self.A_val, self.A_test = self._put(a_train), self._put(a_val), self._put(a_test)
        self.labels_train, self.labels_val = l_train.to(self._device), l_val.to(self._device)
        self.labels_test = l_test.to(self._device)
        self.task_train = torch.arange(t).repeat_interleave(n).to(self._device)
        self.task_val = torch.arange(t).repeat_interleave(nv).to(self._device)
        self.task_test = torch.arange(t).repeat_interleave(nt).to(self._device)
        self.B_true = self._put(b_true)
        self._init_x = self._put(torch.randn(h, d, generator=gen, dtype=torch.float64) / math.sqrt(d)).reshape(-1)
        self.n_lower, self.n_upper, self.n_test = t * n, t * nv, t * nt
        self.dim_upper, self.dim_lower = h * d, t * k * (h + 1)

    def _task_logits(
        self, x: torch.Tensor, y: torch.Tensor, features: torch.Tensor, tasks: torch.Tensor
    ) -> torch.Tensor:
        t, k, h = self.n_tasks, self.classes, self.hidden
        rep = features @ x.reshape(h, self.dim).T
        if self.activation == "tanh":
            rep = torch.tanh(rep)
        heads = y.reshape(t, k, h + 1)
        w, c = heads[tasks, :, :h], heads[tasks, :, h]
        return torch.einsum("nkh,nh->nk", w, rep) + c

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Mean validation cross-entropy over the tasks' validation samples (of ``batch``)."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_upper)
        a, labels, tasks = self.A_val, self.labels_val, self.task_val
        if batch is not None:
            a, labels, tasks = a[batch], labels[batch], tasks[batch]
        return F.cross_entropy(self._task_logits(x, y, a, tasks), labels)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r"""Mean training cross-entropy over the tasks' samples (of ``batch``) plus :math:`\frac\mu2\|y\|^2`."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_lower)
        a, labels, tasks = self.A_train, self.labels_train, self.task_train
        if batch is not None:
            a, labels, tasks = a[batch], labels[batch], tasks[batch]
        return F.cross_entropy(self._task_logits(x, y, a, tasks), labels) + 0.5 * self.mu * (y @ y)

    def _lower_hessian_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        t, h = self.n_tasks, self.hidden
        rep = self.A_train @ x.reshape(h, self.dim).T
        if self.activation == "tanh":
            rep = torch.tanh(rep)
        features = torch.cat([rep, torch.ones_like(rep[:, :1])], dim=1)
        eye = torch.eye(self.dim_lower, dtype=self._dtype, device=self._device)
        weights = torch.full((self.n_lower,), 1.0 / self.n_lower, dtype=self._dtype, device=self._device)

        def hessian(y: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(self._task_logits(x, y, self.A_train, self.task_train), dim=1)
            blocks = [
                _softmax_hessian(
                    features[self.task_train == task], probs[self.task_train == task], weights[self.task_train == task]
                )
                for task in range(t)
            ]
            return torch.block_diag(*blocks) + self.mu * eye

        return hessian

    def init_upper(self) -> torch.Tensor:
        r"""A random representation :math:`P_0` with :math:`\mathcal N(0, 1/d)` entries (from the seed), flattened."""
        return self._init_x.clone()

    def init_lower(self) -> torch.Tensor:
        """Zero heads ``(n_tasks * classes * (hidden + 1),)``."""
        return torch.zeros(self.dim_lower, dtype=self._dtype, device=self._device)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Losses and accuracies.

        Returns:
            ``upper_loss`` (validation cross-entropy), ``lower_loss``, ``val_accuracy``, ``test_loss`` and
            ``test_accuracy`` (averaged over tasks).
        """
        x, y = self._check_xy(x, y)
        check_finite("x", x)
        check_finite("y", y)
        with torch.no_grad():
            val_logits = self._task_logits(x, y, self.A_val, self.task_val)
            test_logits = self._task_logits(x, y, self.A_test, self.task_test)
            return {
                "upper_loss": float(F.cross_entropy(val_logits, self.labels_val)),
                "lower_loss": float(self.lower_loss(x, y)),
                "val_accuracy": float((val_logits.argmax(1) == self.labels_val).to(torch.float64).mean()),
                "test_loss": float(F.cross_entropy(test_logits, self.labels_test)),
                "test_accuracy": float((test_logits.argmax(1) == self.labels_test).to(torch.float64).mean()),
            }


# ---------------------------------------------------------------------------------------------------------------
# LogisticRegularization
# ---------------------------------------------------------------------------------------------------------------


class LogisticRegularization(_Problem):
    r"""Per-feature :math:`\ell_2` penalties of a binary logistic regression, tuned on validation data.

    Labels :math:`t_i \in \{-1, +1\}` come from :math:`\mathrm{sign}(a_i^\top w_{\mathrm{true}} + 0.5\,\varepsilon)`
    with a sparse :math:`w_{\mathrm{true}}` (the first ``informative`` features); :math:`a_i \sim \mathcal N(0, I)`.
    With :math:`x \in \mathbb R^d` the log penalties:

    .. math::
        g(x, w) = \frac1n\sum_i \log\bigl(1 + e^{-t_i a_i^\top w}\bigr) + \frac12\sum_j e^{x_j} w_j^2, \qquad
        f(x, w) = \frac1{n_v}\sum_j \log\bigl(1 + e^{-t^v_j (a^v_j)^\top w}\bigr).

    The lower level is :math:`\min_j e^{x_j}`-strongly convex; there is no closed form (check hypergradients
    against finite differences of :math:`\Phi` computed with :meth:`solve_lower`).

    Args:
        n_train: training samples (``n_lower``).
        n_val: validation samples (``n_upper``).
        dim: features ``d`` (the size of both ``x`` and ``y``).
        seed: data seed.
        n_test: test samples.
        informative: number of features with a non-zero true weight (``min(5, dim)`` when None).
        init_log_penalty: the starting value of every entry of ``x``.
        dtype: floating dtype (float64 by default).
        device: device (CPU when None).

    Raises:
        SciMLInputError: bad sizes, ``informative`` outside ``[1, dim]``, a non-finite ``init_log_penalty``.

    Example:
        >>> problem = LogisticRegularization(n_train=40, n_val=40, dim=4, seed=0)
        >>> x = problem.init_upper()
        >>> sol = problem.solve_lower(x)
        >>> sol.converged, sol.value.shape
        (True, torch.Size([4]))
    """

    def __init__(
        self,
        n_train: int = 100,
        n_val: int = 100,
        dim: int = 10,
        seed: int = 0,
        *,
        n_test: int = 500,
        informative: int | None = None,
        init_log_penalty: float = -2.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device)
        n = _check_int("n_train", n_train)
        nv = _check_int("n_val", n_val)
        nt = _check_int("n_test", n_test)
        d = _check_int("dim", dim)
        k = min(5, d) if informative is None else _check_int("informative", informative)
        if k > d:
            raise SciMLInputError("informative", f"must be <= dim = {d}, got {k}")
        self.init_log_penalty = _check_float("init_log_penalty", init_log_penalty, low=-math.inf)
        gen = _generator(seed)
        w_true = torch.zeros(d, dtype=torch.float64)
        w_true[:k] = torch.randn(k, generator=gen, dtype=torch.float64) * 2.0 / math.sqrt(k)

        def draw(m: int) -> tuple[torch.Tensor, torch.Tensor]:
            a = torch.randn(m, d, generator=gen, dtype=torch.float64)
            score = a @ w_true + 0.5 * torch.randn(m, generator=gen, dtype=torch.float64)
            return a, torch.where(score >= 0, 1.0, -1.0).to(torch.float64)

        (a_tr, t_tr), (a_v, t_v), (a_te, t_te) = draw(n), draw(nv), draw(nt)
        self.A_train, self.t_train = self._put(a_tr), self._put(t_tr)
        self.A_val, self.t_val = self._put(a_v), self._put(t_v)
        self.A_test, self.t_test = self._put(a_te), self._put(t_te)
        self.w_true = self._put(w_true)
        self.n_lower, self.n_upper, self.n_test = n, nv, nt
        self.dim_upper = self.dim_lower = d
        self.mu = math.exp(self.init_log_penalty)

    def upper_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Mean validation logistic loss (over the samples of ``batch``)."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_upper)
        return _mean_over(F.softplus(-self.t_val * (self.A_val @ y)), batch)

    def lower_loss(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        r"""Mean training logistic loss (over ``batch``) plus :math:`\frac12\sum_j e^{x_j} w_j^2`."""
        x, y = self._check_xy(x, y)
        batch = self._check_batch(batch, self.n_lower)
        data = _mean_over(F.softplus(-self.t_train * (self.A_train @ y)), batch)
        return data + 0.5 * (torch.exp(x) * y * y).sum()

    def _lower_hessian_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        penalties = torch.diag(torch.exp(x))

        def hessian(y: torch.Tensor) -> torch.Tensor:
            s = torch.sigmoid(self.t_train * (self.A_train @ y))
            curvature = s * (1 - s) / self.n_lower
            return (self.A_train.T * curvature) @ self.A_train + penalties

        return hessian

    def init_upper(self) -> torch.Tensor:
        """``init_log_penalty`` in every entry ``(dim,)``."""
        return torch.full((self.dim_upper,), self.init_log_penalty, dtype=self._dtype, device=self._device)

    def init_lower(self) -> torch.Tensor:
        """Zeros ``(dim,)``."""
        return torch.zeros(self.dim_lower, dtype=self._dtype, device=self._device)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Losses and accuracies.

        Returns:
            ``upper_loss`` (validation logistic loss), ``lower_loss``, ``val_accuracy``, ``test_loss`` and
            ``test_accuracy``.
        """
        x, y = self._check_xy(x, y)
        check_finite("x", x)
        check_finite("y", y)
        with torch.no_grad():
            val_margin = self.t_val * (self.A_val @ y)
            test_margin = self.t_test * (self.A_test @ y)
            return {
                "upper_loss": float(F.softplus(-val_margin).mean()),
                "lower_loss": float(self.lower_loss(x, y)),
                "val_accuracy": float((val_margin > 0).to(torch.float64).mean()),
                "test_loss": float(F.softplus(-test_margin).mean()),
                "test_accuracy": float((test_margin > 0).to(torch.float64).mean()),
            }
