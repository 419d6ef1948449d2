r"""BO-REP: bilevel optimization under unbounded smoothness (normalized momentum and periodic lower updates).

The bilevel problem is :math:`\min_x \Phi(x) = f(x, y^*(x))` with :math:`y^*(x) = \arg\min_y g(x, y)` and
:math:`g(x, \cdot)` strongly convex. Its hypergradient is

.. math::
    \nabla\Phi(x) = \nabla_x f(x, y^*) - \nabla^2_{xy} g(x, y^*)\, z^*, \qquad
    z^* = \left[\nabla^2_{yy} g(x, y^*)\right]^{-1} \nabla_y f(x, y^*).

BO-REP (Hao, Gong, Liu, ICLR 2024) estimates :math:`z^*` by one projected stochastic gradient step per iteration on
the quadratic :math:`\tfrac12 z^\top \nabla^2_{yy} g\, z - z^\top \nabla_y f`, moves the upper variable by normalized
momentum (so each upper step has length exactly :math:`\eta`, which is what makes the method safe when the upper
loss is only :math:`(L_0, L_1)`-smooth), and refreshes the lower variable only every :math:`I` iterations, after an
initial refinement of :math:`y` at :math:`x_0`. Only gradients and Hessian-vector products (autograd double
backward) are needed; no Hessian is ever formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from sciml_protocols import (
    SciMLError,
    SciMLInputError,
    Solution,
    check_dtype,
    check_finite,
    check_nonempty,
    check_positive,
    check_same_device,
    check_shape,
)

from .problems._base import BilevelProblem

__all__ = ["bo_rep"]

Callback = Callable[[int, torch.Tensor, torch.Tensor], bool | None]


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")
    return value


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    return float(value)


def _check_start(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
    check_shape(name, value, (None,))
    check_nonempty(name, value)
    check_dtype(name, value, "floating")
    check_finite(name, value)
    return value


class _Sampler:
    """Draws minibatches of sample indices (with replacement) for the stochastic oracles; None means full batch."""

    def __init__(
        self, count: int, batch_size: int | None, generator: torch.Generator | None, device: torch.device
    ) -> None:
        self.count = count
        self.size = None if batch_size is None else min(batch_size, count)
        self.generator = generator
        self.device = device

    def draw(self) -> torch.Tensor | None:
        if self.size is None:
            return None
        draw_device = self.generator.device if self.generator is not None else torch.device("cpu")
        index = torch.randint(self.count, (self.size,), generator=self.generator, device=draw_device)
        return index.to(self.device)


def _grad_or_zeros(output: torch.Tensor, inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``d output / d inputs``, or zeros when ``output`` does not depend on ``inputs`` at all."""
    if not output.requires_grad:
        return torch.zeros_like(inputs)
    (grad,) = torch.autograd.grad(output, inputs, allow_unused=True, materialize_grads=True, **kwargs)
    return grad


def bo_rep(
    problem: BilevelProblem,
    *,
    x0: torch.Tensor | None = None,
    y0: torch.Tensor | None = None,
    iterations: int,
    upper_lr: float,
    lower_lr: float,
    beta: float = 0.9,
    nu: float = 1e-2,
    z_radius: float | None = None,
    update_interval: int = 2,
    lower_steps: int = 3,
    warm_start_steps: int = 100,
    batch_size: int | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    record_every: int = 1,
    progress: bool = False,
) -> Solution[tuple[torch.Tensor, torch.Tensor]]:
    r"""Solve a bilevel problem by BO-REP (normalized momentum, initialization refinement, periodic lower updates).

    With stochastic upper/lower losses :math:`F, G` (minibatch means of :math:`f, g`), the method runs:

    1. **Initialization refinement**: ``warm_start_steps`` SGD steps :math:`y \leftarrow y - \gamma \nabla_y
       G(x_0, y)` from :math:`y_0`.
    2. For :math:`t = 0, \dots, T-1`:

       - **Periodic lower update**: if :math:`t \ge 1` and :math:`t \bmod I = 0`, run ``lower_steps`` SGD steps on
         :math:`G(x_t, \cdot)` from the current :math:`y`; otherwise :math:`y_t = y_{t-1}` (frozen).
       - **Linear-system step** (one projected SGD step on :math:`\tfrac12 z^\top \nabla^2_{yy}G z - z^\top
         \nabla_y F`):

         .. math:: z_t = \Pi_{\|z\| \le R}\left(z_{t-1} - \nu\left(\nabla^2_{yy} G\, z_{t-1}
                   - \nabla_y F\right)\right), \qquad z_{-1} = 0.

       - **Hypergradient estimate and momentum**:

         .. math:: \hat g_t = \nabla_x F - \nabla^2_{xy} G\, z_t, \qquad m_t = \beta m_{t-1} + (1-\beta)\hat g_t,
                   \quad m_{-1} = 0.

       - **Normalized upper step**: :math:`x_{t+1} = x_t - \eta\, m_t / \|m_t\|` (no move when :math:`m_t = 0`),
         so :math:`\|x_{t+1} - x_t\| = \eta` exactly.

    All derivatives are evaluated at :math:`(x_t, y_t)`; the Hessian-vector products
    :math:`\nabla^2_{yy}G\,z` and :math:`\nabla^2_{xy}G\,z` come from one double backward through
    :math:`\nabla_y G`. In the stochastic setting (``batch_size`` given) each iteration draws one upper minibatch
    (for :math:`\nabla_x F, \nabla_y F`) and one lower minibatch (for both HVPs), and every lower SGD step draws its
    own lower minibatch; indices are drawn uniformly with replacement from ``range(problem.n_upper)`` /
    ``range(problem.n_lower)``.

    Because each step has length :math:`\eta`, the iterates settle in an :math:`O(\eta)` neighbourhood of a
    stationary point rather than on it; decrease ``upper_lr`` for a tighter answer.

    **Stopping.** With ``tol`` set, the loop stops as soon as :math:`\|\hat g_t\| \le` ``tol`` (``converged=True``),
    and that test costs a host synchronization per iteration. Without ``tol`` the method runs the fixed budget of
    ``iterations`` and reports ``converged=False`` with reason ``"fixed budget"``: BO-REP has no stopping test of its
    own. A ``callback`` returning True stops the loop too (``converged=False``, reason ``"stopped by callback"``).

    Args:
        problem: a :class:`~sciml_bilevel.problems.BilevelProblem` (flat 1-D ``x`` and ``y``).
        x0: starting upper variable, shape ``(d_x,)``; default ``problem.init_upper()``.
        y0: starting lower variable, shape ``(d_y,)``; default ``problem.init_lower()``. Same dtype and device as
            ``x0``.
        iterations: number of upper iterations :math:`T` (the cap), >= 0.
        upper_lr: :math:`\eta > 0`, the length of every upper step.
        lower_lr: :math:`\gamma > 0`, the SGD step size of the lower variable.
        beta: momentum :math:`\beta \in [0, 1)`.
        nu: :math:`\nu > 0`, the step size of the linear-system variable :math:`z`.
        z_radius: :math:`R > 0`, radius of the ball :math:`z` is projected on; None for no projection.
        update_interval: :math:`I \ge 1`, iterations between lower updates.
        lower_steps: SGD steps per periodic lower update, >= 1.
        warm_start_steps: SGD steps of the initialization refinement at :math:`x_0`, >= 0.
        batch_size: minibatch size for every stochastic oracle (capped at ``n_upper`` / ``n_lower``); None uses the
            full losses (``batch=None``) and makes the method deterministic.
        tol: optional tolerance on :math:`\|\hat g_t\|` (see Stopping), > 0.
        generator: random source of the minibatch indices (its device is where they are drawn).
        callback: called after every iteration as ``callback(t + 1, x, y)`` with detached tensors; returning True
            stops the loop.
        record_every: record losses and ``problem.evaluate`` after every ``record_every`` iterations (and at the
            start and the end), >= 1.
        progress: show a tqdm progress bar (needs the ``progress`` extra).

    Returns:
        A :class:`~sciml_protocols.Solution` with ``value = (x, y)`` (the final iterates; ``y`` is the lower
        variable the method holds, refreshed last at the latest multiple of :math:`I`), ``n_iter`` iterations run,
        ``residual`` :math:`\|\hat g\|` of the last iteration (``inf`` when no iteration ran), ``history`` the
        full-batch upper loss :math:`f(x_k, y_k)` at the record points, and ``stats``:

        - ``record_iterations``: iteration counts :math:`k` of the records (0, ``record_every``, ..., ``n_iter``);
        - ``upper_loss``, ``lower_loss``: full-batch :math:`f` and :math:`g` at the records (float64 tensors);
        - ``evaluations``: list of ``problem.evaluate(x_k, y_k)`` dicts at the records;
        - ``hypergradient_norms``, ``momentum_norms``, ``step_norms``, ``z_norms``: per iteration, shape
          ``(n_iter,)``;
        - ``hypergradient``, ``momentum``, ``z``: the last :math:`\hat g`, :math:`m`, :math:`z`;
        - ``warm_start_steps``, ``lower_update_iterations`` (iterations :math:`t` at which :math:`y` was refreshed),
          ``lower_sgd_steps`` (all lower SGD steps, warm start included);
        - oracle counts: ``upper_gradient_calls``, ``lower_gradient_calls`` (SGD steps plus the :math:`\nabla_y G`
          graph of each iteration), ``hvp_calls`` (two per iteration);
        - ``reason``: why the loop ended.

    Raises:
        SciMLInputError: ``problem`` without the :class:`BilevelProblem` interface; non-1-D, empty, non-floating,
            non-finite or mismatched starting points; non-positive or non-finite step sizes; ``beta`` outside
            :math:`[0, 1)`; ``update_interval < 1``, ``lower_steps < 1``, negative counts; bad ``batch_size``,
            ``tol``, ``generator``, ``callback``, ``record_every`` or ``progress``.
        SciMLError: a loss or hypergradient becomes NaN or infinite; ``progress=True`` without tqdm.

    Example:
        >>> class Toy:  # f = (y - 1)^2 / 2 + 0.05 x^2,  g = (y - 2 x)^2 / 2,  so x* = 2 / 4.1
        ...     n_upper = n_lower = 1
        ...     def upper_loss(self, x, y, batch=None): return 0.5 * ((y - 1) ** 2).sum() + 0.05 * (x**2).sum()
        ...     def lower_loss(self, x, y, batch=None): return 0.5 * ((y - 2 * x) ** 2).sum()
        ...     def init_upper(self): return torch.zeros(1, dtype=torch.float64)
        ...     def init_lower(self): return torch.zeros(1, dtype=torch.float64)
        ...     def evaluate(self, x, y): return {"x": float(x)}
        >>> sol = bo_rep(Toy(), iterations=800, upper_lr=2e-3, lower_lr=0.5, nu=0.5, update_interval=1, lower_steps=1)
        >>> abs(float(sol.value[0]) - 2 / 4.1) < 0.02, sol.stats["reason"]  # within O(eta) of x*
        (True, 'fixed budget')

    References:
        J. Hao, X. Gong, M. Liu, "Bilevel Optimization under Unbounded Smoothness: A New Algorithm and Convergence
        Analysis", ICLR 2024, arXiv:2401.09587.
    """
    # ---- validation -------------------------------------------------------------------------------------------
    if not isinstance(problem, BilevelProblem):
        raise SciMLInputError(
            "problem",
            "must implement the BilevelProblem interface (upper_loss, lower_loss, init_upper, init_lower, evaluate, "
            f"n_upper, n_lower); got {type(problem).__name__}",
        )
    iterations = _check_int("iterations", iterations, minimum=0)
    eta = _check_real("upper_lr", upper_lr)
    check_positive("upper_lr", eta)
    gamma = _check_real("lower_lr", lower_lr)
    check_positive("lower_lr", gamma)
    nu = _check_real("nu", nu)
    check_positive("nu", nu)
    beta = _check_real("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise SciMLInputError("beta", f"must be in [0, 1), got {beta}")
    radius: float | None = None
    if z_radius is not None:
        radius = _check_real("z_radius", z_radius)
        check_positive("z_radius", radius)
    interval = _check_int("update_interval", update_interval, minimum=1)
    lower_steps = _check_int("lower_steps", lower_steps, minimum=1)
    warm_start_steps = _check_int("warm_start_steps", warm_start_steps, minimum=0)
    record_every = _check_int("record_every", record_every, minimum=1)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        for name in ("n_upper", "n_lower"):
            count = getattr(problem, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise SciMLInputError("problem", f"{name} must be a positive int for minibatching, got {count!r}")
    tolerance: float | None = None
    if tol is not None:
        tolerance = _check_real("tol", tol)
        check_positive("tol", tolerance)
    if generator is not None and not isinstance(generator, torch.Generator):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("generator", f"must be a torch.Generator or None, got {type(generator).__name__}")
    if callback is not None and not callable(callback):
        raise SciMLInputError("callback", f"must be callable or None, got {type(callback).__name__}")
    if not isinstance(progress, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("progress", f"must be a bool, got {type(progress).__name__}")

    x = _check_start("x0", problem.init_upper() if x0 is None else x0).detach().clone()
    y = _check_start("y0", problem.init_lower() if y0 is None else y0).detach().clone()
    device = check_same_device(x0=x, y0=y)
    assert device is not None
    if x.dtype != y.dtype:
        raise SciMLInputError("y0", f"has dtype {y.dtype} but x0 has {x.dtype}")

    bar: Any = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as error:
            raise SciMLError("progress=True needs tqdm: install the 'progress' extra of sciml-bilevel") from error
        bar = tqdm(total=iterations, desc="bo_rep", unit="it")

    upper_sampler = _Sampler(problem.n_upper if batch_size else 0, batch_size, generator, device)
    lower_sampler = _Sampler(problem.n_lower if batch_size else 0, batch_size, generator, device)
    counts = {"upper_gradient_calls": 0, "lower_gradient_calls": 0, "hvp_calls": 0, "lower_sgd_steps": 0}

    def lower_sgd(x_now: torch.Tensor, y_now: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            y_var = y_now.detach().requires_grad_(True)
            loss = problem.lower_loss(x_now, y_var, lower_sampler.draw())
            y_now = (y_var - gamma * _grad_or_zeros(loss, y_var)).detach()
        counts["lower_gradient_calls"] += steps
        counts["lower_sgd_steps"] += steps
        return y_now

    records: list[int] = []
    upper_losses: list[float] = []
    lower_losses: list[float] = []
    evaluations: list[dict[str, float]] = []

    def record(k: int, x_now: torch.Tensor, y_now: torch.Tensor) -> None:
        with torch.no_grad():
            f_value = float(problem.upper_loss(x_now, y_now))
            g_value = float(problem.lower_loss(x_now, y_now))
        if not (math.isfinite(f_value) and math.isfinite(g_value)):
            raise SciMLError(f"bo_rep: non-finite loss at iteration {k} (upper {f_value}, lower {g_value})")
        records.append(k)
        upper_losses.append(f_value)
        lower_losses.append(g_value)
        evaluations.append(dict(problem.evaluate(x_now, y_now)))

    # ---- initialization refinement ------------------------------------------------------------------------------
    y = lower_sgd(x, y, warm_start_steps)
    record(0, x, y)

    z = torch.zeros_like(y)
    momentum = torch.zeros_like(x)
    hypergradient = torch.zeros_like(x)
    lower_update_iterations: list[int] = []
    hypergradient_norms: list[torch.Tensor] = []
    momentum_norms: list[torch.Tensor] = []
    step_norms: list[torch.Tensor] = []
    z_norms: list[torch.Tensor] = []
    tiny = torch.finfo(x.dtype).tiny
    converged = False
    reason = "fixed budget" if tolerance is None else f"hypergradient estimate norm above tol={tolerance:g}"
    n_iter = 0

    try:
        for t in range(iterations):
            # ---- periodic lower update (y frozen in between) ------------------------------------------------------
            if t >= 1 and t % interval == 0:
                y = lower_sgd(x, y, lower_steps)
                lower_update_iterations.append(t)

            x_var = x.detach().requires_grad_(True)
            y_var = y.detach().requires_grad_(True)

            # ---- upper gradients (one minibatch for both blocks) ---------------------------------------------------
            upper = problem.upper_loss(x_var, y_var, upper_sampler.draw())
            if upper.requires_grad:
                grad_x_f, grad_y_f = torch.autograd.grad(
                    upper, (x_var, y_var), allow_unused=True, materialize_grads=True
                )
            else:
                grad_x_f, grad_y_f = torch.zeros_like(x), torch.zeros_like(y)
            counts["upper_gradient_calls"] += 1

            # ---- Hessian-vector products through one graph of grad_y G -------------------------------------------
            lower = problem.lower_loss(x_var, y_var, lower_sampler.draw())
            grad_y_g = _grad_or_zeros(lower, y_var, create_graph=True)
            counts["lower_gradient_calls"] += 1
            # Differentiating the scalar <grad_y G, z> (rather than passing grad_outputs) gives the same HVP and keeps
            # torch.autograd from importing its symbolic-shape machinery (sympy) on the first call.
            hvp_yy = _grad_or_zeros(grad_y_g @ z, y_var, retain_graph=True)
            z = z - nu * (hvp_yy.detach() - grad_y_f.detach())
            z_norm = torch.linalg.vector_norm(z)
            if radius is not None:
                z = z * torch.clamp(radius / torch.clamp(z_norm, min=tiny), max=1.0)
                z_norm = torch.clamp(z_norm, max=radius)
            hvp_xy = _grad_or_zeros(grad_y_g @ z, x_var)
            counts["hvp_calls"] += 2

            # ---- normalized momentum step --------------------------------------------------------------------------
            hypergradient = grad_x_f.detach() - hvp_xy.detach()
            momentum = beta * momentum + (1.0 - beta) * hypergradient
            momentum_norm = torch.linalg.vector_norm(momentum)
            step = (eta / torch.clamp(momentum_norm, min=tiny)) * momentum
            x = (x - step).detach()
            y = y.detach()

            hypergradient_norm = torch.linalg.vector_norm(hypergradient)
            hypergradient_norms.append(hypergradient_norm)
            momentum_norms.append(momentum_norm)
            step_norms.append(torch.linalg.vector_norm(step))
            z_norms.append(z_norm)
            n_iter = t + 1

            if n_iter % record_every == 0 or n_iter == iterations:
                record(n_iter, x, y)
            if bar is not None:
                bar.update(1)
            if tolerance is not None:
                value = float(hypergradient_norm)
                if not math.isfinite(value):
                    raise SciMLError(f"bo_rep: non-finite hypergradient estimate at iteration {t}")
                if value <= tolerance:
                    converged, reason = True, f"hypergradient estimate norm <= tol={tolerance:g}"
            stop = callback(n_iter, x, y) if callback is not None else None
            if converged or stop:
                if not converged:
                    reason = "stopped by callback"
                if records[-1] != n_iter:
                    record(n_iter, x, y)
                break
    finally:
        if bar is not None:
            bar.close()

    def stacked(values: list[torch.Tensor]) -> torch.Tensor:
        if not values:
            return torch.zeros(0, dtype=x.dtype, device=device)
        return torch.stack(values)

    norms = stacked(hypergradient_norms)
    residual = float(norms[-1]) if n_iter > 0 else math.inf
    if n_iter > 0 and not math.isfinite(residual):
        raise SciMLError("bo_rep: non-finite hypergradient estimate")
    return Solution(
        value=(x, y),
        converged=converged,
        n_iter=n_iter,
        residual=residual,
        history=torch.tensor(upper_losses, dtype=torch.float64),
        stats={
            "record_iterations": records,
            "upper_loss": torch.tensor(upper_losses, dtype=torch.float64),
            "lower_loss": torch.tensor(lower_losses, dtype=torch.float64),
            "evaluations": evaluations,
            "hypergradient_norms": norms,
            "momentum_norms": stacked(momentum_norms),
            "step_norms": stacked(step_norms),
            "z_norms": stacked(z_norms),
            "hypergradient": hypergradient,
            "momentum": momentum,
            "z": z,
            "warm_start_steps": warm_start_steps,
            "lower_update_iterations": lower_update_iterations,
            **counts,
            "reason": reason,
        },
    )
