r"""The penalty method for (nonconvex) bilevel optimization: a fully first-order solver.

The bilevel problem :math:`\min_{x \in X} \psi(x) = \min_{y \in S(x)} f(x, y)`,
:math:`S(x) = \arg\min_{y \in Y} g(x, y)`, is replaced by the penalty surrogate

.. math::

    h_\sigma(x, y) = \sigma f(x, y) + g(x, y), \qquad l(x, \sigma) = \min_{y \in Y} h_\sigma(x, y), \qquad
    \psi_\sigma(x) = \frac{l(x, \sigma) - l(x, 0)}{\sigma},

which is :math:`O(\sigma)`-close to :math:`\psi` in value and gradient under a proximal error-bound condition on
the lower level, and whose gradient needs only first derivatives, even when the lower level has several minimizers:

.. math::

    \nabla \psi_\sigma(x) = \nabla_x f(x, y^*_\sigma) + \frac{\nabla_x g(x, y^*_\sigma) - \nabla_x g(x, y^*)}{\sigma},
    \qquad y^*_\sigma \in \arg\min_{y \in Y} h_\sigma(x, y), \quad y^* \in \arg\min_{y \in Y} g(x, y).

Reference: J. Kwon, D. Kwon, S. Wright, R. Nowak, "On Penalty Methods for Nonconvex Bilevel Optimization and
First-Order Stochastic Approximation", ICLR 2024, arXiv:2309.01753.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from sciml_protocols import SciMLInputError, Solution

from .problems._base import BilevelProblem

__all__ = ["penalty_hypergradient", "penalty_method"]

Projection = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def penalty_hypergradient(
    problem: BilevelProblem,
    x: torch.Tensor,
    sigma: float,
    y_sigma: torch.Tensor,
    y_star: torch.Tensor,
    *,
    upper_batch: torch.Tensor | None = None,
    lower_batch: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The gradient of the penalty surrogate :math:`\psi_\sigma` from two lower-level solutions.

    .. math::

        \nabla \psi_\sigma(x) = \nabla_x f(x, y_\sigma) + \frac{\nabla_x g(x, y_\sigma) - \nabla_x g(x, y_*)}{\sigma}

    With :math:`y_\sigma` a minimizer of :math:`\sigma f(x, \cdot) + g(x, \cdot)` and :math:`y_*` a minimizer of
    :math:`g(x, \cdot)` this is exactly :math:`\nabla \psi_\sigma(x)` (the lower level may have several minimizers);
    it is within :math:`O(\sigma)` of the hypergradient :math:`\nabla \psi(x)` of the optimistic bilevel problem.
    Three first-order oracle calls, no second derivatives.

    Args:
        problem: the bilevel problem (see :class:`~sciml_bilevel.problems.BilevelProblem`).
        x: upper-level point, shape ``(n,)``.
        sigma: penalty parameter :math:`\sigma > 0`.
        y_sigma: (approximate) minimizer of :math:`h_\sigma(x, \cdot)`, shape ``(m,)``.
        y_star: (approximate) minimizer of :math:`g(x, \cdot)`, shape ``(m,)``.
        upper_batch: sample indices for :math:`f` (None: all samples).
        lower_batch: sample indices for :math:`g` (None: all samples).

    Returns:
        :math:`\nabla \psi_\sigma(x)`, shape ``(n,)``, detached, same dtype and device as ``x``.

    Raises:
        SciMLInputError: if ``sigma`` is not a finite positive number, or if ``x``, ``y_sigma``, ``y_star`` are not
            finite 1-D floating tensors of matching dtype and device (``y_sigma`` and ``y_star`` of equal shape).

    Example:
        >>> import torch
        >>> class Toy:  # f = (y - 1)^2 / 2, g = (y - x)^2 / 2, so psi(x) = (x - 1)^2 / 2
        ...     n_upper = n_lower = 1
        ...     def upper_loss(self, x, y, batch=None): return 0.5 * ((y - 1.0) ** 2).sum()
        ...     def lower_loss(self, x, y, batch=None): return 0.5 * ((y - x) ** 2).sum()
        >>> x = torch.tensor([3.0], dtype=torch.float64)
        >>> sigma = 0.1
        >>> y_sigma = (sigma * 1.0 + x) / (1 + sigma)  # argmin of sigma f + g
        >>> penalty_hypergradient(Toy(), x, sigma, y_sigma, y_star=x)  # (x - 1) / (1 + sigma)
        tensor([1.8182], dtype=torch.float64)
    """
    sigma = _check_sigma_value("sigma", sigma)
    x = _check_point("x", x)
    y_sigma = _check_point("y_sigma", y_sigma, like=x)
    y_star = _check_point("y_star", y_star, like=x)
    if y_sigma.shape != y_star.shape:
        raise SciMLInputError(
            "y_star", f"must have the shape of y_sigma {tuple(y_sigma.shape)}, got {tuple(y_star.shape)}"
        )
    fx, _ = _grad(problem.upper_loss, x, y_sigma, upper_batch)
    gx_sigma, _ = _grad(problem.lower_loss, x, y_sigma, lower_batch)
    gx_star, _ = _grad(problem.lower_loss, x, y_star, lower_batch)
    return fx + (gx_sigma - gx_star) / sigma


def penalty_method(
    problem: BilevelProblem,
    *,
    x0: torch.Tensor | None = None,
    y0: torch.Tensor | None = None,
    sigma: float | Callable[[int], float] = 1e-2,
    variant: Literal["double_loop", "single_loop"] = "double_loop",
    iterations: int = 1000,
    upper_lr: float = 1e-2,
    lower_lr: float = 1e-1,
    inner_steps: int = 10,
    momentum: float = 0.9,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    upper_projection: Projection | None = None,
    lower_projection: Projection | None = None,
    tol: float = 1e-6,
    progress: bool = False,
    record_every: int | None = None,
) -> Solution[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    r"""Solve a bilevel problem with the first-order penalty method of Kwon, Kwon, Wright and Nowak.

    Two lower-level iterates are kept: :math:`y` tracks :math:`y^*_\sigma(x) = \arg\min_y \sigma f + g` and
    :math:`z` tracks :math:`y^*(x) = \arg\min_y g`. With :math:`\beta` = ``lower_lr``, :math:`\alpha` =
    ``upper_lr``, projections :math:`P_X`, :math:`P_Y` and (stochastic) gradients:

    .. math::

        y &\leftarrow P_Y\bigl(y - \beta\, \nabla_y (\sigma f + g)(x, y)\bigr), \qquad
        z \leftarrow P_Y\bigl(z - \beta\, \nabla_y g(x, z)\bigr), \\
        x &\leftarrow P_X\Bigl(x - \alpha \Bigl[\nabla_x f(x, y)
            + \frac{\nabla_x g(x, y) - \nabla_x g(x, z)}{\sigma}\Bigr]\Bigr).

    ``variant="double_loop"`` (the paper's Algorithm 1) runs ``inner_steps`` steps on :math:`y` and :math:`z` before
    each step on :math:`x`. ``variant="single_loop"`` (the paper's momentum-assisted single-loop method) updates
    :math:`x, y, z` together once per iteration from one minibatch; with ``batch_size`` set, each oracle
    :math:`v \in \{\nabla f(x, y), \nabla g(x, y), \nabla g(x, z)\}` is replaced by the recursive momentum
    (STORM-type) estimate

    .. math::

        d_k = v(w_k; \xi_k) + m\,\bigl(d_{k-1} - v(w_{k-1}; \xi_k)\bigr), \qquad m = \texttt{momentum} \in [0, 1),

    which evaluates the same minibatch :math:`\xi_k` at the previous point :math:`w_{k-1}` (two oracle calls per
    estimate). In full batch the correction term is exactly zero, so it is skipped.

    Only first-order oracles are used: every gradient comes from ``torch.autograd.grad`` without ``create_graph``;
    no Hessian or Hessian-vector product is ever formed (``stats["hessian_vector_products"] == 0``).

    **Stopping test.** With :math:`\lambda = 1/\sigma`, the method is gradient descent on
    :math:`\mathcal L_\lambda(x, y, z) = f(x, y) + \lambda\,(g(x, y) - g(x, z))` (ascent in :math:`z`). Its
    residual is the norm of the projected-gradient mapping of all three blocks,

    .. math::

        r = \bigl\|\bigl(\tfrac{x - P_X(x - \alpha G_x)}{\alpha},\
            \tfrac{y - P_Y(y - \beta\sigma G_y)}{\beta\sigma},\
            \tfrac{z - P_Y(z - \beta\sigma G_z)}{\beta\sigma}\bigr)\bigr\|,

    :math:`G_x` the bracket above, :math:`G_y = \nabla_y f(x, y) + \nabla_y g(x, y)/\sigma`,
    :math:`G_z = \nabla_y g(x, z)/\sigma` (without projections, :math:`r = \|(G_x, G_y, G_z)\|`). It is measured
    before each upper step (after the inner steps in the double loop); the solver stops when :math:`r \le`
    ``tol``. A minibatch residual below ``tol`` is only a candidate: it is confirmed with full-batch gradients before
    ``converged`` is set, so ``converged=True`` always means the full-batch residual at the returned point is at
    most ``tol``. Note that :math:`r` measures stationarity of the penalty problem, which is :math:`O(\sigma)` away
    from the bilevel problem.

    Args:
        problem: the bilevel problem (:class:`~sciml_bilevel.problems.BilevelProblem`; ``x``, ``y`` flat 1-D).
        x0: starting upper-level point, shape ``(n,)`` (default ``problem.init_upper()``).
        y0: starting lower-level point, shape ``(m,)``, used for both :math:`y` and :math:`z` (default
            ``problem.init_lower()``).
        sigma: penalty parameter :math:`\sigma > 0` (small: the bias is :math:`O(\sigma)`, the conditioning
            :math:`O(1/\sigma)`), or a schedule ``k -> sigma_k`` called with the upper iteration index ``k``
            (``0, 1, ...``); a decreasing schedule is the F2SA-style continuation.
        variant: ``"double_loop"`` or ``"single_loop"``.
        iterations: cap on the number of upper (``x``) steps, ``>= 0``.
        upper_lr: step size :math:`\alpha > 0` for ``x``.
        lower_lr: step size :math:`\beta > 0` for ``y`` (on :math:`h_\sigma = \sigma f + g`) and ``z`` (on
            :math:`g`); about ``1 / L`` with ``L`` the smoothness constant of ``g`` in ``y``.
        inner_steps: lower-level steps per upper step in the double loop, ``>= 1`` (ignored by the single loop).
        momentum: :math:`m \in [0, 1)` of the single-loop stochastic estimator (0: plain SGD).
        batch_size: minibatch size (clamped to ``problem.n_upper`` / ``problem.n_lower``); None: full batch.
            Batches are drawn without replacement, a fresh one for every step.
        generator: random generator for the minibatches (reproducibility).
        upper_projection: :math:`P_X`, a map from ``(n,)`` to ``(n,)`` (None: :math:`X = \mathbb R^n`).
        lower_projection: :math:`P_Y`, a map from ``(m,)`` to ``(m,)`` (None: :math:`Y = \mathbb R^m`).
        tol: tolerance of the stopping test, ``>= 0`` (0: run all ``iterations``).
        progress: show a tqdm progress bar.
        record_every: if set, every ``record_every`` upper iterations (and at the end) record the full-batch upper
            loss :math:`f(x, y)` and ``problem.evaluate(x, y)`` into ``stats["records"]``.

    Returns:
        A :class:`~sciml_protocols.Solution` with ``value = (x, y, z)`` (detached), ``n_iter`` the number of upper
        steps taken, ``residual`` the last residual :math:`r` (full-batch when converged), ``history`` the residual
        measured at each check, shape ``(n_iter + 1,)`` (minibatch estimates when ``batch_size`` is set), and
        ``stats``: ``"upper_grad_calls"``, ``"lower_grad_calls"`` (first-order oracle calls, including full-batch
        confirmations), ``"upper_samples"``, ``"lower_samples"`` (samples those calls touched),
        ``"hessian_vector_products"`` (always 0), ``"variant"``, ``"sigma"`` (the last one used),
        ``"upper_loss"`` (full-batch :math:`f(x, y)` at the end), ``"evaluation"`` (``problem.evaluate(x, y)``),
        ``"evaluation_lower"`` (``problem.evaluate(x, z)``: the pure lower-level solution), ``"records"`` (list of
        dicts with ``"iteration"``, ``"upper_loss"``, ``"residual"`` and the evaluation keys) and ``"reason"`` when not
        converged.

    Raises:
        SciMLInputError: for a non-positive or non-finite ``sigma`` (also from a schedule), ``upper_lr`` or
            ``lower_lr``; an unknown ``variant``; negative ``iterations`` or ``tol``; ``inner_steps < 1``;
            ``momentum`` outside ``[0, 1)``; ``batch_size < 1``; ``record_every < 1``; non-callable projections or
            projections that change the shape; starting points that are not finite 1-D floating tensors of one
            dtype and device.

    Example:
        >>> import torch
        >>> class Toy:  # f = (y - 1)^2 / 2 + x^2 / 2, g = (y - x)^2 / 2; bilevel solution x* = 1/2
        ...     n_upper = n_lower = 1
        ...     def upper_loss(self, x, y, batch=None): return 0.5 * ((y - 1.0) ** 2 + x**2).sum()
        ...     def lower_loss(self, x, y, batch=None): return 0.5 * ((y - x) ** 2).sum()
        ...     def init_upper(self): return torch.zeros(1, dtype=torch.float64)
        ...     def init_lower(self): return torch.zeros(1, dtype=torch.float64)
        ...     def evaluate(self, x, y): return {"error": abs(x.item() - 0.5)}
        >>> sol = penalty_method(Toy(), sigma=1e-3, iterations=500, upper_lr=0.5, lower_lr=0.9, inner_steps=5)
        >>> sol.converged, round(sol.value[0].item(), 3)  # x_sigma* = 1 / (2 + sigma)
        (True, 0.5)
    """
    # ---- validation -------------------------------------------------------------------------------------------
    if variant not in ("double_loop", "single_loop"):
        raise SciMLInputError("variant", f"must be 'double_loop' or 'single_loop', got {variant!r}")
    sigma_at = _sigma_schedule(sigma)
    upper_lr = _check_positive_float("upper_lr", upper_lr)
    lower_lr = _check_positive_float("lower_lr", lower_lr)
    iterations = _check_int("iterations", iterations, minimum=0)
    inner_steps = _check_int("inner_steps", inner_steps, minimum=1)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise SciMLInputError("momentum", f"must be a number in [0, 1), got {momentum!r}")
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, minimum=1)
    if record_every is not None:
        record_every = _check_int("record_every", record_every, minimum=1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise SciMLInputError("tol", f"must be a finite number >= 0, got {tol!r}")
    if generator is not None and not isinstance(generator, torch.Generator):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("generator", f"must be a torch.Generator or None, got {type(generator).__name__}")
    for name, proj in (("upper_projection", upper_projection), ("lower_projection", lower_projection)):
        if proj is not None and not callable(proj):
            raise SciMLInputError(name, f"must be callable or None, got {type(proj).__name__}")

    x = _check_point("x0", problem.init_upper() if x0 is None else x0)
    y = _check_point("y0", problem.init_lower() if y0 is None else y0, like=x)
    project_x = _projector("upper_projection", upper_projection, x)
    project_y = _projector("lower_projection", lower_projection, y)
    x, y = project_x(x), project_y(y)
    z = y.clone()

    oracle = _Oracle(problem, batch_size, generator, x.device)
    stochastic = oracle.stochastic
    use_momentum = variant == "single_loop" and stochastic and momentum > 0.0

    # ---- main loop --------------------------------------------------------------------------------------------
    history: list[float] = []
    records: list[dict[str, Any]] = []
    converged = False
    reason = ""
    residual = math.inf
    sigma_k = sigma_at(0)
    n_iter = 0
    previous: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    estimates: _Grads | None = None

    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc=f"penalty ({variant})")

    for k in range(iterations + 1):
        sigma_k = sigma_at(k)
        if variant == "double_loop":
            for _ in range(inner_steps):
                ub, lb = oracle.batches()
                _, fy = oracle.upper(x, y, ub)
                _, gy = oracle.lower(x, y, lb)
                _, gz = oracle.lower(x, z, lb)
                y = project_y(y - lower_lr * (sigma_k * fy + gy))
                z = project_y(z - lower_lr * gz)
            grads = oracle.all(x, y, z, *oracle.batches())
        else:
            batches = oracle.batches()
            grads = oracle.all(x, y, z, *batches)
            if use_momentum and previous is not None and estimates is not None:
                old = oracle.all(*previous, *batches)
                grads = grads.plus(estimates.minus(old), scale=momentum)
            estimates = grads
            previous = (x, y, z)

        steps = _Steps(grads, sigma_k, x, y, z, upper_lr, lower_lr, project_x, project_y)
        residual = steps.residual
        if not math.isfinite(residual):  # every gradient enters the residual, so this catches NaN and inf
            reason = "non-finite gradient: the iteration diverged (reduce upper_lr / lower_lr)"
            break
        history.append(residual)
        if residual <= tol and stochastic:
            # a minibatch residual is noisy: confirm with full-batch gradients before claiming convergence
            residual = _Steps(
                oracle.all(x, y, z, None, None), sigma_k, x, y, z, upper_lr, lower_lr, project_x, project_y
            ).residual
        if record_every is not None and (k % record_every == 0 or residual <= tol or k == iterations):
            records.append(_record(problem, x, y, k, residual))
        if residual <= tol:
            converged = True
            break
        if k == iterations:
            break
        if variant == "double_loop":
            x = steps.x_new
        else:
            x, y, z = steps.x_new, steps.y_new, steps.z_new
        n_iter += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    if not converged and not reason:
        reason = f"iteration cap ({iterations}) reached with residual {residual:.3g} > tol {tol:.3g}"
    stats: dict[str, Any] = {
        "variant": variant,
        "sigma": sigma_k,
        "upper_grad_calls": oracle.upper_calls,
        "lower_grad_calls": oracle.lower_calls,
        "upper_samples": oracle.upper_samples,
        "lower_samples": oracle.lower_samples,
        "hessian_vector_products": 0,
        "upper_loss": _full_upper_loss(problem, x, y),
        "evaluation": dict(problem.evaluate(x, y)),
        "evaluation_lower": dict(problem.evaluate(x, z)),
        "records": records,
    }
    if not converged:
        stats["reason"] = reason
    return Solution(
        value=(x, y, z),
        converged=converged,
        n_iter=n_iter,
        residual=residual,
        history=torch.tensor(history, dtype=torch.float64),
        stats=stats,
    )


# ---- internals ------------------------------------------------------------------------------------------------


class _Grads:
    """First-order oracles at (x, y, z): grad f(x, y), grad g(x, y), grad g(x, z), each split into (x, y) parts."""

    __slots__ = ("fx", "fy", "gx_y", "gx_z", "gy_y", "gy_z")

    def __init__(self, *parts: torch.Tensor) -> None:
        self.fx, self.fy, self.gx_y, self.gy_y, self.gx_z, self.gy_z = parts

    def _parts(self) -> tuple[torch.Tensor, ...]:
        return (self.fx, self.fy, self.gx_y, self.gy_y, self.gx_z, self.gy_z)

    def plus(self, other: _Grads, scale: float) -> _Grads:
        return _Grads(*(a + scale * b for a, b in zip(self._parts(), other._parts(), strict=True)))

    def minus(self, other: _Grads) -> _Grads:
        return _Grads(*(a - b for a, b in zip(self._parts(), other._parts(), strict=True)))


class _Steps:
    """The projected steps of one iteration and the residual (norm of the projected-gradient mapping)."""

    def __init__(
        self,
        grads: _Grads,
        sigma: float,
        x: torch.Tensor,
        y: torch.Tensor,
        z: torch.Tensor,
        upper_lr: float,
        lower_lr: float,
        project_x: Projection,
        project_y: Projection,
    ) -> None:
        g_x = grads.fx + (grads.gx_y - grads.gx_z) / sigma
        self.x_new = project_x(x - upper_lr * g_x)
        self.y_new = project_y(y - lower_lr * (sigma * grads.fy + grads.gy_y))
        self.z_new = project_y(z - lower_lr * grads.gy_z)
        lower_scale = lower_lr * sigma
        squares = (
            ((x - self.x_new) / upper_lr).square().sum()
            + ((y - self.y_new) / lower_scale).square().sum()
            + ((z - self.z_new) / lower_scale).square().sum()
        )
        self.residual = math.sqrt(float(squares))


class _Oracle:
    """Counts first-order oracle calls and draws minibatches."""

    def __init__(
        self, problem: BilevelProblem, batch_size: int | None, generator: torch.Generator | None, device: torch.device
    ) -> None:
        self.problem = problem
        self.generator = generator
        self.device = device
        self.upper_calls = self.lower_calls = 0
        self.upper_samples = self.lower_samples = 0
        n_upper, n_lower = int(problem.n_upper), int(problem.n_lower)
        if n_upper < 1 or n_lower < 1:
            raise SciMLInputError("problem", f"needs n_upper, n_lower >= 1, got {n_upper}, {n_lower}")
        self.n_upper, self.n_lower = n_upper, n_lower
        self.stochastic = batch_size is not None and (batch_size < n_upper or batch_size < n_lower)
        self.upper_size = n_upper if batch_size is None else min(batch_size, n_upper)
        self.lower_size = n_lower if batch_size is None else min(batch_size, n_lower)

    def _draw(self, n: int, size: int) -> torch.Tensor | None:
        if size >= n:
            return None
        return torch.randperm(n, generator=self.generator)[:size].to(self.device)

    def batches(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.stochastic:
            return None, None
        return self._draw(self.n_upper, self.upper_size), self._draw(self.n_lower, self.lower_size)

    def upper(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        self.upper_calls += 1
        self.upper_samples += self.n_upper if batch is None else batch.numel()
        return _grad(self.problem.upper_loss, x, y, batch)

    def lower(self, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        self.lower_calls += 1
        self.lower_samples += self.n_lower if batch is None else batch.numel()
        return _grad(self.problem.lower_loss, x, y, batch)

    def all(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        z: torch.Tensor,
        upper_batch: torch.Tensor | None,
        lower_batch: torch.Tensor | None,
    ) -> _Grads:
        return _Grads(*self.upper(x, y, upper_batch), *self.lower(x, y, lower_batch), *self.lower(x, z, lower_batch))


def _grad(
    loss: LossFn, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / dx, d loss / dy) at (x, y): one first-order oracle call, no graph kept for higher derivatives."""
    xr = x.detach().requires_grad_(True)
    yr = y.detach().requires_grad_(True)
    with torch.enable_grad():
        value = loss(xr, yr, batch)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("problem", "upper_loss / lower_loss must return a scalar tensor")
        if not value.requires_grad:  # a loss that depends on neither variable
            return torch.zeros_like(x), torch.zeros_like(y)
        gx, gy = torch.autograd.grad(value.reshape(()), (xr, yr), allow_unused=True)
    return (
        torch.zeros_like(x) if gx is None else gx.detach(),
        torch.zeros_like(y) if gy is None else gy.detach(),
    )


def _full_upper_loss(problem: BilevelProblem, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(problem.upper_loss(x, y, None))


def _record(problem: BilevelProblem, x: torch.Tensor, y: torch.Tensor, k: int, residual: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"iteration": k, "upper_loss": _full_upper_loss(problem, x, y), "residual": residual}
    entry.update(problem.evaluate(x, y))
    return entry


def _check_sigma_value(name: str, value: object) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SciMLInputError(name, f"must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise SciMLInputError(name, f"must be finite and > 0, got {value!r}")
    return value


def _sigma_schedule(sigma: float | Callable[[int], float]) -> Callable[[int], float]:
    if callable(sigma):
        schedule = sigma

        def at(k: int) -> float:
            try:
                return _check_sigma_value("sigma", schedule(k))
            except SciMLInputError as err:
                raise SciMLInputError("sigma", f"schedule at iteration {k}: {err.problem}") from None

        at(0)
        return at
    value = _check_sigma_value("sigma", sigma)
    return lambda k: value


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SciMLInputError(name, f"must be a finite number > 0, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")
    return value


def _check_point(name: str, value: object, like: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 1 or value.numel() == 0:
        raise SciMLInputError(name, f"must be a non-empty 1-D tensor, got shape {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise SciMLInputError(name, f"must have a floating-point dtype, got {value.dtype}")
    if like is not None and (value.dtype != like.dtype or value.device != like.device):
        raise SciMLInputError(
            name, f"must match x's dtype and device ({like.dtype}, {like.device}), got ({value.dtype}, {value.device})"
        )
    if not bool(torch.isfinite(value).all()):
        raise SciMLInputError(name, "contains NaN or infinite values")
    return value.detach().clone()


def _projector(name: str, projection: Projection | None, example: torch.Tensor) -> Projection:
    if projection is None:
        return lambda v: v
    proj = projection

    def apply(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = proj(v)
        if not isinstance(out, torch.Tensor) or out.shape != v.shape:  # pyright: ignore[reportUnnecessaryIsInstance]
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(name, f"must map shape {tuple(v.shape)} to the same shape, got {got}")
        return out.detach()

    apply(example)
    return apply
