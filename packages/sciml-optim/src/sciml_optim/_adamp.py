r"""AdamP and SGDP: momentum optimizers that slow down the norm growth of scale-invariant weights.

A weight followed by a normalisation layer (BatchNorm, LayerNorm, ...) is *scale invariant*: the loss does not
change when the weight is rescaled, so its gradient is orthogonal to it. Momentum then inflates the weight norm,
which shrinks the effective step. AdamP and SGDP detect such weights from the angle between gradient and weight
and remove the radial component of the update (and scale the weight decay down by ``wd_ratio``).

Projection rule, for a parameter :math:`w` with ``ndim > 1``, its gradient :math:`g` and raw update :math:`u`.
The *channel view* reshapes the tensors to rows :math:`w_r` (``w.reshape(w.shape[0], -1)``, row length
:math:`d_r`); the *layer view* is one row (``w.reshape(1, -1)``, length :math:`d` = ``w.numel()``). For the
channel view first, then the layer view,

.. math::

    \text{if}\ \max_r \frac{|\langle g_r, w_r\rangle|}{\max(\|g_r\|, \epsilon)\,\max(\|w_r\|, \epsilon)}
    < \frac{\delta}{\sqrt{d_{\text{view}}}}:\qquad
    u_r \leftarrow u_r - \hat w_r \langle \hat w_r, u_r\rangle,\quad \hat w_r = \frac{w_r}{\|w_r\| + \epsilon},
    \quad \rho = \rho_{\text{wd}},

and the first view that passes is used; otherwise :math:`u` is unchanged and :math:`\rho = 1`. Parameters with
``ndim <= 1`` (biases, norm scales) are never projected.

Non-finite gradients: the policy is **propagate**, as in ``torch.optim``. No check runs (it would cost a host
synchronisation per step); a NaN or inf in a parameter's gradient makes that parameter (and its state) non-finite
and leaves the other parameters untouched. Use gradient clipping or a loss scaler upstream.

Reference: Byeongho Heo, Sanghyuk Chun, Seong Joon Oh, Dongyoon Han, Sangdoo Yun, Gyuwan Kim, Youngjung Uh,
Jung-Woo Ha, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights", ICLR 2021,
arXiv:2006.08217. Semantics follow the authors' package ``adamp`` 0.3.0 (clovaai/AdamP).
"""

# torch._foreach_* are the documented building blocks of torch.optim's foreach paths, but not in torch's __all__.
# pyright: reportPrivateImportUsage=false

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
from sciml_protocols import SciMLInputError
from torch.optim.optimizer import Optimizer, required

__all__ = ["SGDP", "AdamP"]

_Closure = Callable[[], Any] | None


# ---------------------------------------------------------------------------------------------- validation


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SciMLInputError(name, f"must be finite, got {value!r}")
    return value


def _check_common(group: dict[str, Any]) -> None:
    lr = group["lr"]
    if lr is required:
        raise SciMLInputError("lr", "is required")
    if _real("lr", lr) < 0.0:
        raise SciMLInputError("lr", f"must be >= 0, got {lr!r}")
    if _real("eps", group["eps"]) <= 0.0:
        raise SciMLInputError("eps", f"must be > 0, got {group['eps']!r}")
    if _real("weight_decay", group["weight_decay"]) < 0.0:
        raise SciMLInputError("weight_decay", f"must be >= 0, got {group['weight_decay']!r}")
    if _real("delta", group["delta"]) < 0.0:
        raise SciMLInputError("delta", f"must be >= 0, got {group['delta']!r}")
    if not 0.0 <= _real("wd_ratio", group["wd_ratio"]) <= 1.0:
        raise SciMLInputError("wd_ratio", f"must lie in [0, 1], got {group['wd_ratio']!r}")


def _check_adamp_group(group: dict[str, Any]) -> None:
    _check_common(group)
    betas = group["betas"]
    if not isinstance(betas, tuple | list) or len(cast(Sequence[object], betas)) != 2:
        raise SciMLInputError("betas", f"must be a pair (beta1, beta2), got {betas!r}")
    for beta in cast(Sequence[object], betas):
        if not 0.0 <= _real("betas", beta) < 1.0:
            raise SciMLInputError("betas", f"each beta must lie in [0, 1), got {betas!r}")


def _check_sgdp_group(group: dict[str, Any]) -> None:
    _check_common(group)
    if not 0.0 <= _real("momentum", group["momentum"]) < 1.0:
        # The decoupled decay is divided by 1 - momentum.
        raise SciMLInputError("momentum", f"must lie in [0, 1), got {group['momentum']!r}")
    if not 0.0 <= _real("dampening", group["dampening"]) <= 1.0:
        raise SciMLInputError("dampening", f"must lie in [0, 1], got {group['dampening']!r}")


def _check_grad(grad: torch.Tensor) -> None:
    if grad.is_sparse:
        raise SciMLInputError("params", "sparse gradients are not supported")


# ---------------------------------------------------------------------------------------------- projection


def _is_true(flag: torch.Tensor) -> bool:
    # A DTensor reduction is itself a DTensor; its global value decides.
    full = getattr(flag, "full_tensor", None)
    if callable(full):
        flag = cast(torch.Tensor, full())
    return bool(flag.item())


def _is_plain(tensor: torch.Tensor) -> bool:
    return type(tensor) is torch.Tensor or type(tensor) is torch.nn.Parameter


class _Scratch:
    """One reusable buffer per (device, dtype) for a step: the per-tensor work runs one tensor at a time.

    Fresh CPU allocations are expensive (first-touch page faults cost more than the arithmetic), so the Adam
    direction, the SGDP Nesterov direction and the row products of the projection test are written into views of
    one buffer sized for the largest tensor instead of new tensors. Tensor subclasses (DTensor) get None and the
    callers fall back to out-of-place ops, which give the same values.
    """

    def __init__(self, params: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype]) -> None:
        self._sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for param, dtype in zip(params, dtypes, strict=True):
            if _is_plain(param):
                key = (param.device, dtype)
                self._sizes[key] = max(self._sizes.get(key, 0), param.numel())
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def view(self, param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        key = (param.device, dtype)
        if not _is_plain(param) or key not in self._sizes:
            return None
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty(self._sizes[key], dtype=dtype, device=param.device)
        return buffer[: param.numel()].view(param.shape)


class _CosineStats:
    """Per-row statistics of the scale-invariance test: ``<g_r, w_r>``, ``||g_r||``, ``||w_r||``."""

    __slots__ = ("dot", "grad_norm", "param_norm")

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, scratch: torch.Tensor | None) -> None:
        rows = param.shape[0]
        param_rows, grad_rows = param.reshape(rows, -1), grad.reshape(rows, -1)
        # Row norms and row dot products: read-only reductions (no normalised copies as in cosine_similarity).
        self.param_norm = torch.linalg.vector_norm(param_rows, dim=1)
        self.grad_norm = torch.linalg.vector_norm(grad_rows, dim=1)
        if scratch is None or grad_rows.dtype != param_rows.dtype:
            self.dot = (grad_rows * param_rows).sum(dim=1)
        else:
            self.dot = torch.mul(grad_rows, param_rows, out=scratch.view(rows, -1)).sum(dim=1)


def _cosine(dot: torch.Tensor, grad_norm: torch.Tensor, param_norm: torch.Tensor, eps: float) -> torch.Tensor:
    # cosine_similarity's rule: each norm is clamped at eps separately.
    return dot.abs() / (grad_norm.clamp_min(eps) * param_norm.clamp_min(eps))


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(dim=1)`` for 2-D ``a``, ``b`` without a product temporary on plain tensors."""
    if _is_plain(a) and _is_plain(b) and a.dtype == b.dtype:
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])
    return (a * b).sum(dim=1)


def _project_(
    param: torch.Tensor, perturb: torch.Tensor, stats: _CosineStats, delta: float, wd_ratio: float, eps: float
) -> float:
    """Remove the radial part of ``perturb`` in place when ``param`` looks scale invariant; return the decay ratio.

    The channel test uses the row statistics; the layer test derives the tensor's dot product and norms from them
    (sum of row dots, norm of the row norms), so the tensors are read once for both views.
    """
    rows = param.shape[0]
    row_length = param.numel() // rows
    if _is_true(_cosine(stats.dot, stats.grad_norm, stats.param_norm, eps).max() < delta / math.sqrt(row_length)):
        norm = stats.param_norm.add(eps)
        coefficient = _row_dot(param.reshape(rows, -1), perturb.reshape(rows, -1)).div_(norm.mul_(norm))
        perturb.addcmul_(param, coefficient.reshape((-1,) + (1,) * (param.dim() - 1)), value=-1.0)
        return wd_ratio
    param_norm = torch.linalg.vector_norm(stats.param_norm)
    grad_norm = torch.linalg.vector_norm(stats.grad_norm)
    if _is_true(_cosine(stats.dot.sum(), grad_norm, param_norm, eps) < delta / math.sqrt(param.numel())):
        norm = param_norm.add(eps)
        coefficient = _row_dot(param.reshape(1, -1), perturb.reshape(1, -1)).div_(norm.mul_(norm))
        perturb.addcmul_(param, coefficient.reshape((1,) * param.dim()), value=-1.0)
        return wd_ratio
    return 1.0


# ---------------------------------------------------------------------------------------------- AdamP


def _adam_direction(
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    out: torch.Tensor | None,
    *,
    bias2_root: float,
    beta1: float,
    eps: float,
    nesterov: bool,
) -> torch.Tensor:
    """The Adam direction ``m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`` (authors' op order), written into ``out``."""
    denom = torch.sqrt(exp_avg_sq) if out is None else torch.sqrt(exp_avg_sq, out=out)
    denom.div_(bias2_root).add_(eps)
    if nesterov:
        numerator = exp_avg.mul(beta1).add_(grad.mul(1.0 - beta1))
        return torch.div(numerator, denom, out=denom) if out is not None else numerator.div_(denom)
    return torch.div(exp_avg, denom, out=denom) if out is not None else exp_avg / denom


def _cosine_stats(
    param: torch.Tensor, grad: torch.Tensor, scratch: torch.Tensor | None, delta: float
) -> _CosineStats | None:
    # With delta = 0 the test |cos| < 0 never holds: skip the reductions (and the host synchronisation).
    if delta <= 0.0 or param.dim() <= 1 or param.numel() == 0:
        return None
    return _CosineStats(param, grad, scratch)


class AdamP(Optimizer):
    r"""Adam with decoupled weight decay and the AdamP projection for scale-invariant weights.

    For each parameter :math:`w` with gradient :math:`g` (negated when ``maximize``) at step :math:`t`:

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \\
        u &= \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}
            \quad\Big(\text{Nesterov: } u = \frac{\beta_1 m + (1-\beta_1) g}{\sqrt{v}/\sqrt{1-\beta_2^t}
            + \epsilon}\Big), \\
        u, \rho &\leftarrow \operatorname{project}(w, g, u)\ \ (\text{ndim} > 1), \\
        w &\leftarrow w\,(1 - \eta\lambda\rho) - \frac{\eta}{1-\beta_1^t}\, u,

    where the projection (see the module docstring) removes the component of :math:`u` along :math:`w` (per output
    channel, else for the whole tensor) when :math:`g` is almost orthogonal to :math:`w`, and sets the decay ratio
    :math:`\rho` to ``wd_ratio`` (else :math:`\rho = 1`). With ``delta=0`` the projection never fires and AdamP is
    AdamW.

    State per parameter: ``step`` (float32 scalar tensor), ``exp_avg``, ``exp_avg_sq`` (the parameter's dtype;
    float32 for half-precision parameters on the fused path).

    Paths: the for-loop path (``foreach=False``) and the ``torch._foreach_*`` path run the same kernels in the
    same order, so they agree bit for bit on CPU. The fused path (``fused=True``, CUDA) runs two Triton launches
    per parameter group and dtype (see :mod:`sciml_optim._kernels.adamp`): the projection needs row and tensor
    reductions of the *new* moments before any parameter can move. It keeps float32 moments for bfloat16/float16
    parameters and computes in float32 (float64 for float64 parameters). ``fused=True`` on CPU tensors raises
    unless ``TRITON_INTERPRET=1`` (the Triton interpreter, for tests).

    Non-finite gradients propagate to their own parameter (no check, no host sync; see the module docstring).

    Distributed: the projection needs global row and tensor statistics. With DTensor (FSDP2) parameters the
    non-fused paths run DTensor ops, which reduce across shards. The fused path accepts DTensors only when every
    placement is ``Replicate`` (the local tensor is then the whole tensor) and raises otherwise.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        eps: :math:`\epsilon > 0`, in the Adam denominator and in the cosine and projection norms.
        weight_decay: decoupled decay :math:`\lambda \ge 0`.
        delta: cosine threshold :math:`\delta \ge 0` of the scale-invariance test.
        wd_ratio: factor :math:`\rho_{\text{wd}} \in [0, 1]` on the decay of projected parameters.
        nesterov: use the Nesterov-style direction.
        maximize: maximise the objective instead.
        foreach: use the ``torch._foreach_*`` path; None picks it when every parameter is on CUDA.
        fused: use the fused Triton step (CUDA); None means False.

    Raises:
        SciMLInputError: for a negative ``lr`` or ``weight_decay`` or ``delta``, betas outside :math:`[0, 1)`,
            ``eps <= 0``, ``wd_ratio`` outside :math:`[0, 1]`, ``foreach`` and ``fused`` both True; at step time for
            sparse gradients and for ``fused=True`` on tensors it cannot run on.

    Example:
        >>> import torch
        >>> from sciml_optim import AdamP
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
        >>> optimizer = AdamP([w], lr=0.1)
        >>> w.grad = torch.tensor([[-4.0, 3.0]])  # orthogonal to w: w looks scale invariant
        >>> w0 = w.detach().clone()
        >>> optimizer.step()
        >>> abs(float(((w.detach() - w0) * w0).sum())) < 1e-5  # the update has no radial part
        True
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if foreach and fused:
            raise SciMLInputError("fused", "foreach=True and fused=True are exclusive")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "delta": delta,
            "wd_ratio": wd_ratio,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (its hyperparameters are validated); see ``torch.optim.Optimizer``.

        Args:
            param_group: a dict with ``params`` and optional hyperparameters.

        Raises:
            SciMLInputError: for out-of-range hyperparameters.
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_adamp_group(group)
        if group.get("foreach") and group.get("fused"):
            raise SciMLInputError("fused", "foreach=True and fused=True are exclusive")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    def _init_group(
        self, group: dict[str, Any], fused: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[float]]:
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        exp_avg_sqs: list[torch.Tensor] = []
        steps: list[float] = []
        for param in group["params"]:
            if param.grad is None:
                continue
            _check_grad(param.grad)
            state = self.state[param]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state_dtype = torch.float32 if fused and param.dtype in (torch.float16, torch.bfloat16) else None
                state["exp_avg"] = torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, dtype=state_dtype, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(param)
            grads.append(param.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(float(state["step"].item()))
        return params, grads, exp_avgs, exp_avg_sqs, steps

    @torch.no_grad()
    def step(self, closure: _Closure = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Perform one optimisation step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss (run with grad enabled).

        Returns:
            The closure's loss, or None.

        Raises:
            SciMLInputError: for sparse gradients, or ``fused=True`` on unsupported tensors.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            fused = bool(group["fused"])
            params, grads, exp_avgs, exp_avg_sqs, steps = self._init_group(group, fused)
            if not params:
                continue
            if group["maximize"]:
                grads = list(torch._foreach_neg(grads))
            beta1, beta2 = (float(b) for b in group["betas"])
            if fused:
                from ._kernels.adamp import fused_adamp_step_

                fused_adamp_step_(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    steps,
                    lr=float(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]),
                    delta=float(group["delta"]),
                    wd_ratio=float(group["wd_ratio"]),
                    nesterov=bool(group["nesterov"]),
                )
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            _adamp_update(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                delta=float(group["delta"]),
                wd_ratio=float(group["wd_ratio"]),
                nesterov=bool(group["nesterov"]),
                foreach=bool(foreach),
            )
        return loss


def _adamp_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
    foreach: bool,
) -> None:
    # Moments: the same kernels in both paths (foreach batches them); the rest runs one tensor at a time, so the
    # direction, the test and the projection reuse one scratch buffer and the paths agree bit for bit.
    if foreach:
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    else:
        for grad, exp_avg, exp_avg_sq in zip(grads, exp_avgs, exp_avg_sqs, strict=True):
            exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    scratch = _Scratch(params, [m.dtype for m in exp_avgs])
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        buffer = scratch.view(param, exp_avg.dtype)
        stats = _cosine_stats(param, grad, buffer, delta)  # before the direction takes over the buffer
        perturb = _adam_direction(
            grad,
            exp_avg,
            exp_avg_sq,
            buffer,
            bias2_root=math.sqrt(1.0 - beta2**step),
            beta1=beta1,
            eps=eps,
            nesterov=nesterov,
        )
        ratio = 1.0 if stats is None else _project_(param, perturb, stats, delta, wd_ratio, eps)
        if weight_decay > 0:
            param.mul_(1.0 - lr * weight_decay * ratio)
        param.add_(perturb, alpha=-lr / (1.0 - beta1**step))


# ---------------------------------------------------------------------------------------------- SGDP


class SGDP(Optimizer):
    r"""SGD with momentum, decoupled weight decay and the AdamP projection for scale-invariant weights.

    For each parameter :math:`w` with gradient :math:`g` (negated when ``maximize``):

    .. math::

        b &\leftarrow \mu b + (1 - \tau) g, \qquad
        d = \begin{cases} g + \mu b & \text{Nesterov} \\ b & \text{otherwise} \end{cases}, \\
        d, \rho &\leftarrow \operatorname{project}(w, g, d)\ \ (\text{ndim} > 1), \\
        w &\leftarrow w \Big(1 - \frac{\eta \lambda \rho}{1 - \mu}\Big) - \eta\, d,

    with momentum :math:`\mu`, dampening :math:`\tau`, decay :math:`\lambda` and the projection of the module
    docstring. As in the authors' package, the buffer starts at zero (step 1 gives :math:`b = (1-\tau) g`; torch's
    SGD seeds it with :math:`g`, so the two agree when :math:`\tau = 0`), and without Nesterov the projection acts
    on the momentum buffer itself (:math:`d` *is* :math:`b`), so the projected direction is what the buffer
    carries into the next step. ``timm.optim.SGDP`` projects a copy instead; the two differ only for
    ``nesterov=False`` when a projection fires.

    State per parameter: ``step`` (float32 scalar tensor) and ``momentum_buffer``. The for-loop and foreach paths
    agree bit for bit on CPU. Non-finite gradients propagate (see the module docstring). DTensor parameters run
    DTensor ops, whose reductions are global.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\eta \ge 0` (required).
        momentum: :math:`\mu \in [0, 1)` (the decay is divided by :math:`1 - \mu`).
        dampening: :math:`\tau \in [0, 1]`.
        weight_decay: decoupled decay :math:`\lambda \ge 0`.
        nesterov: use Nesterov momentum.
        eps: :math:`\epsilon > 0` in the cosine and projection norms.
        delta: cosine threshold :math:`\delta \ge 0`.
        wd_ratio: decay factor :math:`\rho_{\text{wd}} \in [0, 1]` for projected parameters.
        maximize: maximise the objective instead.
        foreach: use the ``torch._foreach_*`` path; None picks it when every parameter is on CUDA.

    Raises:
        SciMLInputError: for a missing or negative ``lr``, momentum outside :math:`[0, 1)`, dampening outside
            :math:`[0, 1]`, negative ``weight_decay`` or ``delta``, ``eps <= 0``, ``wd_ratio`` outside
            :math:`[0, 1]`; at step time for sparse gradients.

    Example:
        >>> import torch
        >>> from sciml_optim import SGDP
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> optimizer = SGDP([w], lr=0.5, momentum=0.9)
        >>> w.grad = torch.tensor([1.0, 1.0])
        >>> optimizer.step()
        >>> w.detach()
        tensor([0.5000, 1.5000])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = required,  # pyright: ignore[reportArgumentType]
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        if lr is required:
            raise SciMLInputError("lr", "is required")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "eps": eps,
            "delta": delta,
            "wd_ratio": wd_ratio,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (its hyperparameters are validated); see ``torch.optim.Optimizer``.

        Args:
            param_group: a dict with ``params`` and optional hyperparameters.

        Raises:
            SciMLInputError: for out-of-range hyperparameters.
        """
        super().add_param_group(param_group)
        _check_sgdp_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    @torch.no_grad()
    def step(self, closure: _Closure = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Perform one optimisation step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss (run with grad enabled).

        Returns:
            The closure's loss, or None.

        Raises:
            SciMLInputError: for sparse gradients.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            for param in group["params"]:
                if param.grad is None:
                    continue
                _check_grad(param.grad)
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(param)
                grads.append(param.grad)
                buffers.append(state["momentum_buffer"])
            if not params:
                continue
            if group["maximize"]:
                grads = list(torch._foreach_neg(grads))
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            _sgdp_update(
                params,
                grads,
                buffers,
                lr=float(group["lr"]),
                momentum=float(group["momentum"]),
                dampening=float(group["dampening"]),
                weight_decay=float(group["weight_decay"]),
                nesterov=bool(group["nesterov"]),
                eps=float(group["eps"]),
                delta=float(group["delta"]),
                wd_ratio=float(group["wd_ratio"]),
                foreach=bool(foreach),
            )
        return loss


def _sgdp_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    foreach: bool,
) -> None:
    if foreach:
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads, alpha=1.0 - dampening)
    else:
        for grad, buffer in zip(grads, buffers, strict=True):
            buffer.mul_(momentum).add_(grad, alpha=1.0 - dampening)
    scratch = _Scratch(params, [b.dtype for b in buffers])
    for param, grad, buffer in zip(params, grads, buffers, strict=True):
        work = scratch.view(param, buffer.dtype)
        stats = _cosine_stats(param, grad, work, delta)  # before the Nesterov direction takes over the scratch
        if nesterov:
            # g + momentum * b, as the authors (addition commutes, so the rounding is theirs).
            direction = buffer.mul(momentum) if work is None else torch.mul(buffer, momentum, out=work)
            direction.add_(grad)
        else:
            # The authors' code aliases the direction and the buffer: the projection edits the buffer.
            direction = buffer
        ratio = 1.0 if stats is None else _project_(param, direction, stats, delta, wd_ratio, eps)
        if weight_decay > 0:
            param.mul_(1.0 - lr * weight_decay * ratio / (1.0 - momentum))
        param.add_(direction, alpha=-lr)
