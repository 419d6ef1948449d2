r"""Target-based surrogates and the SSO optimizer (stochastic surrogate optimization).

The loss is written :math:`L(\theta) = h(f(\theta))`, where :math:`f` maps the parameters to *targets*
:math:`z = f(\theta)` (logits, predictions, actions) and :math:`h` is :math:`\beta`-smooth in :math:`z`. Computing
:math:`\nabla_z h` is the expensive part (an environment roll-out, an expert query, a large loss). Target
optimization computes :math:`z_t = f(\theta_t)` and :math:`\nabla h(z_t)` once, then improves :math:`\theta` on the
surrogate

.. math::

    g_t(\theta) = h(z_t) + \langle \nabla h(z_t), f(\theta) - z_t \rangle
        + \frac{1}{2\eta} \lVert f(\theta) - z_t \rVert^2,

which only needs back-propagation through :math:`f`. For :math:`\eta \le 1/\beta`, :math:`g_t \ge L` everywhere
and :math:`g_t(\theta_t) = L(\theta_t)`, so any decrease of :math:`g_t` decreases :math:`L`
(majorization-minimization). With a minibatch :math:`S_t` it is the SSO algorithm; an exact inner solve makes it
projected SGD in target space, :math:`z_{t+1} = \Pi_{\operatorname{range} f}(z_t - \eta \nabla h_{S_t}(z_t))`.

Reference: W. Lavington, S. Vaswani, R. Babanezhad, M. Schmidt, N. Le Roux, "Target-based Surrogates for
Stochastic Optimization", ICML 2023, arXiv:2302.02607.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from sciml_protocols import SciMLInputError, check_positive

__all__ = ["SSO", "SSOStepResult", "surrogate_loss"]

Schedule = Literal["constant", "sqrt", "exponential"]
InnerOptimizerFactory = Callable[[list[Any]], torch.optim.Optimizer]


def surrogate_loss(
    z: torch.Tensor,
    z_t: torch.Tensor,
    grad_h: torch.Tensor,
    eta: float,
    *,
    loss_t: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""The target-space surrogate :math:`g_t` evaluated at targets ``z``.

    .. math::

        g_t(z) = h(z_t) + \langle \nabla h(z_t), z - z_t \rangle + \frac{1}{2\eta} \lVert z - z_t \rVert^2.

    For a :math:`\beta`-smooth :math:`h` and :math:`\eta \le 1/\beta` it is an upper bound on :math:`h(z)` that is
    tight at :math:`z = z_t` (descent lemma). Gradients flow through ``z`` only: ``z_t``, ``grad_h`` and ``loss_t``
    are detached.

    Args:
        z: targets :math:`f(\theta)`, any shape.
        z_t: the anchor targets :math:`z_t = f(\theta_t)`, same shape as ``z``.
        grad_h: :math:`\nabla h(z_t)`, same shape as ``z``.
        eta: the target step size :math:`\eta > 0`.
        loss_t: the constant :math:`h(z_t)`; None (default) leaves it out.

    Returns:
        The scalar surrogate value (0-dimensional tensor, dtype and device of ``z``).

    Raises:
        SciMLInputError: if the shapes differ, ``eta`` is not a positive finite number, or ``z_t``/``grad_h`` are
            not finite.

    Example:
        >>> z_t = torch.tensor([1.0, 2.0])
        >>> grad_h = torch.tensor([0.5, -1.0])
        >>> surrogate_loss(z_t + 1.0, z_t, grad_h, eta=0.5, loss_t=3.0)
        tensor(4.5000)
    """
    check_positive("eta", eta)
    for name, tensor in (("z", z), ("z_t", z_t), ("grad_h", grad_h)):
        if not isinstance(tensor, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(name, f"must be a tensor, got {type(tensor).__name__}")
        if not tensor.dtype.is_floating_point:
            raise SciMLInputError(name, f"must have a floating dtype, got {tensor.dtype}")
    if z_t.shape != z.shape:
        raise SciMLInputError("z_t", f"must have the shape of z {tuple(z.shape)}, got {tuple(z_t.shape)}")
    if grad_h.shape != z.shape:
        raise SciMLInputError("grad_h", f"must have the shape of z {tuple(z.shape)}, got {tuple(grad_h.shape)}")
    if not bool(torch.isfinite(grad_h).all()):
        raise SciMLInputError("grad_h", "contains NaN or infinite values")
    if not bool(torch.isfinite(z_t).all()):
        raise SciMLInputError("z_t", "contains NaN or infinite values")
    delta = z - z_t.detach()
    value = (grad_h.detach() * delta).sum() + delta.pow(2).sum() / (2.0 * eta)
    if loss_t is not None:
        value = value + (loss_t.detach() if isinstance(loss_t, torch.Tensor) else loss_t)
    return value


@dataclasses.dataclass(frozen=True)
class SSOStepResult:
    r"""What one outer step of :class:`SSO` did.

    Attributes:
        loss: :math:`h(z_t) = L(\theta_t)` on the step's minibatch, before the step.
        target_grad_norm: :math:`\lVert \nabla h(z_t) \rVert_2`, the target-space gradient norm.
        surrogate_values: :math:`g_t` at the start of each inner step, then once more after the last one (so
            ``surrogate_values[0] == loss`` and ``surrogate_values[-1]`` bounds the new minibatch loss from above
            when :math:`\eta \le 1/\beta`).
        eta: the target step size :math:`\eta_t` used (after the schedule).
        inner_steps: inner steps taken (fewer than ``inner_steps`` when the line search stalled or the surrogate
            gradient vanished).
        step_sizes: accepted Armijo step sizes, one per inner step (line search only; empty otherwise).

    Example:
        >>> SSOStepResult(1.0, 0.5, (1.0, 0.9), 0.1, 1, ()).inner_steps
        1
    """

    loss: float
    target_grad_norm: float
    surrogate_values: tuple[float, ...]
    eta: float
    inner_steps: int
    step_sizes: tuple[float, ...]


class SSO:
    r"""Stochastic surrogate optimization: one target gradient, then ``inner_steps`` cheap steps on a surrogate.

    Each call of :meth:`step` on the minibatch :math:`S_t`:

    1. computes the targets :math:`z_t = f(\theta_t)` (``targets_fn()``, no graph kept) and, with one backward
       pass through :math:`h` only, :math:`\nabla h(z_t)` (``target_loss``), which is the one expensive
       evaluation per outer step;
    2. sets :math:`\eta_t` from the schedule: ``"constant"`` :math:`\eta_t = \eta`, ``"sqrt"``
       :math:`\eta_t = \eta / \sqrt{t}` (the paper's "stochastic" schedule) or ``"exponential"``
       :math:`\eta_t = \eta\, \alpha^t` with :math:`\alpha = (1/T)^{1/T}`, :math:`T` = ``total_steps``
       (:math:`t = 1, 2, \dots` counts outer steps);
    3. takes ``inner_steps`` steps of the inner optimizer on

       .. math::

           g_t(\theta) = h(z_t) + \langle \nabla h(z_t), f(\theta) - z_t \rangle
               + \frac{1}{2\eta_t} \lVert f(\theta) - z_t \rVert^2,

       each of which re-evaluates ``targets_fn()`` and back-propagates through :math:`f` only.

    For :math:`\eta_t \le 1/\beta` the surrogate majorizes the loss on the minibatch, so with the full batch and a
    monotone inner solver (``line_search=True``) the loss never increases (majorization-minimization). When
    :math:`h` is a mean over :math:`b` samples of a :math:`\beta_1`-smooth per-sample loss, its smoothness in
    :math:`z` is :math:`\beta_1 / b`, so :math:`\eta` may be as large as :math:`b / \beta_1`.

    With :math:`f` the identity and an exact inner solve, :math:`\theta_{t+1} = \theta_t - \eta_t \nabla h(\theta_t)`
    (plain SGD); with a linear model :math:`f(\theta) = X\theta` it is a Gauss-Newton-like step
    :math:`\theta_{t+1} = \theta_t - \eta_t (X^\top X)^{-1} X^\top \nabla h(X\theta_t)`, i.e. projected SGD in
    target space.

    Inner optimizer and its state: ``inner_optimizer`` is a ``torch.optim.Optimizer`` class (built as
    ``cls(params, lr=inner_lr, **inner_kwargs)``, ``lr`` only when ``inner_lr`` is given) or a factory
    ``params -> Optimizer``; None means ``torch.optim.SGD(params, lr=inner_lr)``. It is built once; its
    ``step(closure)`` is called ``inner_steps`` times per outer step with a closure that zeroes the gradients,
    evaluates :math:`g_t` and back-propagates (so LBFGS-like optimizers work too). With ``reset_inner_state=True``
    (default, as in the paper: every surrogate is a new deterministic problem) its per-parameter state (momentum,
    Adam moments) is cleared at the start of every outer step; with False it carries over. Its param groups
    (learning rates) are never touched. ``line_search=True`` replaces it by gradient descent with Armijo
    backtracking on :math:`g_t`: the trial step starts at ``inner_lr`` at every outer step (the reset of the
    paper's code), shrinks by ``backtrack`` until
    :math:`g_t(\theta - s\nabla g_t) \le g_t(\theta) - c\, s \lVert \nabla g_t \rVert^2` and carries over to the
    next inner step; if ``max_backtracks`` shrinks fail, the parameters stay and the inner loop ends.

    ``SSO`` is a wrapper, not a ``torch.optim.Optimizer``: its step needs the two callables instead of a single
    closure. After :meth:`step` the parameters' ``.grad`` are set to None.

    Args:
        params: the parameters :math:`\theta` (tensors, or param-group dicts for the inner optimizer).
        inner_optimizer: optimizer class, factory, or None (SGD; or Armijo descent with ``line_search``).
        eta: target step size :math:`\eta > 0` (at most :math:`1/\beta` for the majorization guarantee).
        inner_steps: number :math:`m \ge 1` of inner steps per outer step.
        schedule: ``"constant"``, ``"sqrt"`` or ``"exponential"``.
        total_steps: :math:`T` for the exponential schedule (required there).
        inner_lr: learning rate of the inner optimizer, or the initial Armijo step (default 1.0 there).
        inner_kwargs: extra keywords for an inner optimizer class (or the default SGD).
        line_search: use Armijo backtracking gradient descent as the inner solver.
        reset_inner_state: clear the inner optimizer's per-parameter state at every outer step.
        armijo_c: sufficient-decrease constant :math:`c \in (0, 1)`.
        backtrack: step shrink factor in :math:`(0, 1)`.
        max_backtracks: cap on shrinks per inner step.

    Raises:
        SciMLInputError: on invalid hyperparameters or parameters (see :meth:`step` for the callables).

    Example:
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
        >>> y = torch.tensor([1.0, -1.0, 1.0])
        >>> w = torch.zeros(2, requires_grad=True)
        >>> sso = SSO([w], eta=1.0, inner_steps=20, line_search=True)
        >>> def target_loss(z):
        ...     return torch.nn.functional.softplus(-y * z).sum()  # logistic loss, beta = 1/4
        >>> losses = [sso.step(lambda: X @ w, target_loss).loss for _ in range(3)]
        >>> losses[0] > losses[1] > losses[2]
        True
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        inner_optimizer: type[torch.optim.Optimizer] | InnerOptimizerFactory | None = None,
        *,
        eta: float,
        inner_steps: int = 10,
        schedule: Schedule = "constant",
        total_steps: int | None = None,
        inner_lr: float | None = None,
        inner_kwargs: Mapping[str, Any] | None = None,
        line_search: bool = False,
        reset_inner_state: bool = True,
        armijo_c: float = 0.5,
        backtrack: float = 0.5,
        max_backtracks: int = 40,
    ) -> None:
        check_positive("eta", eta)
        _check_int("inner_steps", inner_steps, minimum=1)
        if schedule not in ("constant", "sqrt", "exponential"):
            raise SciMLInputError("schedule", f"must be 'constant', 'sqrt' or 'exponential', got {schedule!r}")
        if schedule == "exponential":
            if total_steps is None:
                raise SciMLInputError("total_steps", "is required by the exponential schedule")
            _check_int("total_steps", total_steps, minimum=1)
        elif total_steps is not None:
            _check_int("total_steps", total_steps, minimum=1)
        if inner_lr is not None:
            check_positive("inner_lr", inner_lr)
        if not 0.0 < armijo_c < 1.0:
            raise SciMLInputError("armijo_c", f"must lie in (0, 1), got {armijo_c}")
        if not 0.0 < backtrack < 1.0:
            raise SciMLInputError("backtrack", f"must lie in (0, 1), got {backtrack}")
        _check_int("max_backtracks", max_backtracks, minimum=0)

        param_list: list[Any] = list(params)
        tensors = _flatten_params(param_list)

        self.eta = float(eta)
        self.inner_steps = inner_steps
        self.schedule: Schedule = schedule
        self.total_steps = total_steps
        self.line_search = bool(line_search)
        self.reset_inner_state = bool(reset_inner_state)
        self.armijo_c = float(armijo_c)
        self.backtrack = float(backtrack)
        self.max_backtracks = max_backtracks
        self.params: list[torch.Tensor] = tensors
        self.outer_step = 0
        self.inner_optimizer: torch.optim.Optimizer | None = None

        if self.line_search:
            if inner_optimizer is not None or inner_kwargs is not None:
                raise SciMLInputError(
                    "inner_optimizer", "must be None with line_search=True (the line search is the inner solver)"
                )
            self.inner_lr = 1.0 if inner_lr is None else float(inner_lr)
            return
        self.inner_lr = None if inner_lr is None else float(inner_lr)
        if inner_optimizer is None:
            if inner_lr is None:
                raise SciMLInputError("inner_lr", "is required when the default inner optimizer (SGD) is used")
            built: object = torch.optim.SGD(param_list, lr=inner_lr, **dict(inner_kwargs or {}))
        elif isinstance(inner_optimizer, type) and issubclass(inner_optimizer, torch.optim.Optimizer):
            keywords = dict(inner_kwargs or {})
            if inner_lr is not None:
                keywords["lr"] = inner_lr
            built = inner_optimizer(param_list, **keywords)
        elif callable(inner_optimizer):
            if inner_lr is not None or inner_kwargs is not None:
                raise SciMLInputError(
                    "inner_lr", "inner_lr and inner_kwargs apply to optimizer classes, not to factories"
                )
            built = inner_optimizer(param_list)
        else:
            raise SciMLInputError(
                "inner_optimizer", f"must be an Optimizer class, a factory or None, got {type(inner_optimizer)}"
            )
        if not isinstance(built, torch.optim.Optimizer):
            raise SciMLInputError("inner_optimizer", f"must build a torch.optim.Optimizer, got {type(built)}")
        self.inner_optimizer = built

    # ------------------------------------------------------------------ schedule

    def eta_at(self, t: int) -> float:
        r"""The target step size :math:`\eta_t` of outer step ``t`` (1-based) under the schedule.

        Args:
            t: outer step index, :math:`t \ge 1`.

        Returns:
            :math:`\eta`, :math:`\eta/\sqrt t` or :math:`\eta (1/T)^{t/T}`.

        Example:
            >>> w = torch.zeros(1, requires_grad=True)
            >>> SSO([w], eta=2.0, schedule="sqrt", inner_lr=0.1).eta_at(4)
            1.0
        """
        _check_int("t", t, minimum=1)
        if self.schedule == "sqrt":
            return self.eta / math.sqrt(t)
        if self.schedule == "exponential":
            total = self.total_steps
            assert total is not None  # checked in __init__
            return self.eta * (1.0 / total) ** (t / total)
        return self.eta

    # ------------------------------------------------------------------ step

    def step(
        self,
        targets_fn: Callable[[], torch.Tensor],
        target_loss: Callable[[torch.Tensor], torch.Tensor],
    ) -> SSOStepResult:
        r"""One outer step: one target gradient :math:`\nabla h(z_t)`, then ``inner_steps`` surrogate steps.

        Args:
            targets_fn: recomputes :math:`f(\theta)` on the current minibatch from the current parameters; it is
                called once for :math:`z_t`, then at every surrogate evaluation, so it must be deterministic
                within a step (fixed minibatch, no dropout). Returns a floating tensor of any fixed shape.
            target_loss: :math:`h` on the current minibatch: takes targets of that shape, returns a scalar tensor.
                It is called (and differentiated) once per outer step.

        Returns:
            An :class:`SSOStepResult` (loss before the step, target-gradient norm, surrogate values, ...).

        Raises:
            SciMLInputError: if ``targets_fn`` returns no floating, finite, non-empty tensor (or changes shape),
                if ``target_loss`` returns no finite scalar that depends on its input, or if
                :math:`\nabla h(z_t)` is not finite. These checks run before any parameter moves; the outer step
                counter advances only when a step completes.

        Example:
            >>> w = torch.tensor([3.0], requires_grad=True)
            >>> sso = SSO([w], eta=0.5, inner_steps=1, inner_lr=0.5)  # f = identity, h(z) = z^2
            >>> result = sso.step(lambda: w * 1.0, lambda z: (z**2).sum())
            >>> result.loss, result.target_grad_norm, w.detach()
            (9.0, 6.0, tensor([0.]))
        """
        if not callable(targets_fn):
            raise SciMLInputError("targets_fn", f"must be callable, got {type(targets_fn).__name__}")
        if not callable(target_loss):
            raise SciMLInputError("target_loss", f"must be callable, got {type(target_loss).__name__}")
        with torch.no_grad():
            z_t = _check_targets(targets_fn())
        # Copy: targets_fn may return a view of the parameters (f = identity), which the inner steps overwrite.
        z_t = z_t.detach().clone()
        with torch.enable_grad():
            z_leaf = z_t.clone().requires_grad_(True)
            loss = target_loss(z_leaf)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError("target_loss", "must return a scalar tensor")
            if not loss.requires_grad:
                raise SciMLInputError("target_loss", "must return a tensor that depends on its input z")
            if not bool(torch.isfinite(loss.detach()).all()):
                raise SciMLInputError("target_loss", f"returned a non-finite loss {float(loss.detach())}")
            (grad_h,) = torch.autograd.grad(loss.reshape(()), z_leaf, allow_unused=True, materialize_grads=True)
        if not bool(torch.isfinite(grad_h).all()):
            raise SciMLInputError("target_loss", "its gradient at z_t contains NaN or infinite values")
        loss_t = loss.detach().reshape(())
        grad_h = grad_h.detach()

        eta_t = self.eta_at(self.outer_step + 1)

        def surrogate() -> torch.Tensor:
            z = targets_fn()
            if not isinstance(z, torch.Tensor) or z.shape != z_t.shape:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError("targets_fn", f"must return targets of the fixed shape {tuple(z_t.shape)}")
            return surrogate_loss(z, z_t, grad_h, eta_t, loss_t=loss_t)

        if self.line_search:
            values, step_sizes = self._armijo_inner(surrogate)
        else:
            values, step_sizes = self._optimizer_inner(surrogate), []
        with torch.no_grad():
            values.append(float(surrogate()))
        for p in self.params:
            p.grad = None
        self.outer_step += 1
        return SSOStepResult(
            loss=float(loss_t),
            target_grad_norm=float(torch.linalg.vector_norm(grad_h)),
            surrogate_values=tuple(values),
            eta=eta_t,
            inner_steps=len(values) - 1,
            step_sizes=tuple(step_sizes),
        )

    def _optimizer_inner(self, surrogate: Callable[[], torch.Tensor]) -> list[float]:
        optimizer = self.inner_optimizer
        assert optimizer is not None  # built in __init__ unless line_search
        if self.reset_inner_state:
            optimizer.state.clear()
        values: list[float] = []
        evaluations: list[float] = []

        def closure() -> float:
            optimizer.zero_grad()
            with torch.enable_grad():
                value = surrogate()
                if not value.requires_grad:
                    raise SciMLInputError("targets_fn", "its output does not depend on the parameters")
                value.backward()
            evaluations.append(float(value.detach()))
            return evaluations[-1]

        for _ in range(self.inner_steps):
            evaluations.clear()
            optimizer.step(closure)
            # The value at the start of the step (LBFGS-like optimizers evaluate several times per step).
            values.append(evaluations[0] if evaluations else math.nan)
        return values

    def _armijo_inner(self, surrogate: Callable[[], torch.Tensor]) -> tuple[list[float], list[float]]:
        step_size = self.inner_lr
        assert step_size is not None
        values: list[float] = []
        step_sizes: list[float] = []
        for _ in range(self.inner_steps):
            for p in self.params:
                p.grad = None
            with torch.enable_grad():
                value = surrogate()
                if not value.requires_grad:
                    raise SciMLInputError("targets_fn", "its output does not depend on the parameters")
                value.backward()
            current = float(value.detach())
            values.append(current)
            with torch.no_grad():
                moving = [(p, p.grad) for p in self.params if p.grad is not None]
                grad_sq = math.fsum(float(g.double().pow(2).sum()) for _, g in moving)
                if grad_sq == 0.0:
                    break
                start = [p.detach().clone() for p, _ in moving]
                accepted = False
                for _ in range(self.max_backtracks + 1):
                    for (p, g), p0 in zip(moving, start, strict=True):
                        torch.add(p0, g, alpha=-step_size, out=p)
                    trial = float(surrogate())
                    if trial <= current - self.armijo_c * step_size * grad_sq:
                        accepted = True
                        break
                    step_size *= self.backtrack
                if not accepted:
                    for (p, _), p0 in zip(moving, start, strict=True):
                        p.copy_(p0)
                    break
                step_sizes.append(step_size)
        return values, step_sizes

    # ------------------------------------------------------------------ state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the parameters' gradients (to None by default, else to zeros).

        Example:
            >>> w = torch.ones(2, requires_grad=True)
            >>> w.grad = torch.ones(2)
            >>> SSO([w], eta=1.0, inner_lr=0.1).zero_grad()
            >>> w.grad is None
            True
        """
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """The resumable state: the outer step counter and the inner optimizer's ``state_dict``.

        Example:
            >>> w = torch.ones(2, requires_grad=True)
            >>> SSO([w], eta=1.0, line_search=True).state_dict()
            {'outer_step': 0, 'inner_optimizer': None}
        """
        inner = None if self.inner_optimizer is None else self.inner_optimizer.state_dict()
        return {"outer_step": self.outer_step, "inner_optimizer": inner}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (on an SSO built with the same configuration).

        Args:
            state_dict: the mapping returned by :meth:`state_dict`.

        Raises:
            SciMLInputError: if keys are missing or the inner optimizer's presence differs.

        Example:
            >>> w = torch.ones(2, requires_grad=True)
            >>> sso = SSO([w], eta=1.0, line_search=True)
            >>> sso.load_state_dict({"outer_step": 7, "inner_optimizer": None})
            >>> sso.outer_step
            7
        """
        if "outer_step" not in state_dict or "inner_optimizer" not in state_dict:
            raise SciMLInputError("state_dict", "must hold 'outer_step' and 'inner_optimizer'")
        _check_int("state_dict['outer_step']", state_dict["outer_step"], minimum=0)
        inner = state_dict["inner_optimizer"]
        if (inner is None) != (self.inner_optimizer is None):
            raise SciMLInputError("state_dict", "inner optimizer state does not match this SSO's configuration")
        if self.inner_optimizer is not None:
            self.inner_optimizer.load_state_dict(inner)
        self.outer_step = int(state_dict["outer_step"])

    def __repr__(self) -> str:
        inner = "armijo" if self.line_search else type(self.inner_optimizer).__name__
        return (
            f"SSO(eta={self.eta}, inner_steps={self.inner_steps}, schedule={self.schedule!r}, inner={inner}, "
            f"outer_step={self.outer_step})"
        )


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")


def _flatten_params(param_list: list[Any]) -> list[torch.Tensor]:
    if not param_list:
        raise SciMLInputError("params", "must not be empty")
    tensors: list[torch.Tensor] = []
    for entry in param_list:
        if isinstance(entry, dict):
            group: dict[str, Any] = entry  # pyright: ignore[reportUnknownVariableType]
            raw = group.get("params")
            members: list[Any] = [raw] if isinstance(raw, torch.Tensor) else list(raw or [])
        else:
            members = [entry]
        for p in members:
            if not isinstance(p, torch.Tensor):
                raise SciMLInputError("params", f"must hold tensors, got {type(p).__name__}")
            if not p.dtype.is_floating_point:
                raise SciMLInputError("params", f"must be floating tensors, got {p.dtype}")
            if not p.is_leaf or not p.requires_grad:
                raise SciMLInputError("params", "must be leaf tensors with requires_grad=True")
            if any(p is q for q in tensors):
                raise SciMLInputError("params", "a parameter appears twice")
            tensors.append(p)
    if not tensors:
        raise SciMLInputError("params", "must not be empty")
    return tensors


def _check_targets(z: object) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise SciMLInputError("targets_fn", f"must return a tensor, got {type(z).__name__}")
    if not z.dtype.is_floating_point:
        raise SciMLInputError("targets_fn", f"must return floating targets, got {z.dtype}")
    if z.numel() == 0:
        raise SciMLInputError("targets_fn", f"returned empty targets of shape {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise SciMLInputError("targets_fn", "returned NaN or infinite targets")
    return z
