r"""Lion and the Lion-:math:`K` family as a ``torch.optim`` optimizer, with a for-loop, a foreach and a fused path.

The for-loop path (:func:`lion_reference`) is the oracle the two others are tested against: the foreach path runs the
same tensor operations grouped by device and dtype (bit for bit the same trajectory), the fused path is one Triton
launch per bucket (:mod:`sciml_optim._kernels.lion`, imported only when it runs).

References:
    - X. Chen, C. Liang, D. Huang, E. Real, K. Wang, Y. Liu, H. Pham, X. Dong, T. Luong, C.-J. Hsieh, Y. Lu,
      Q. V. Le, "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023 (arXiv 2302.06675).
    - L. Chen, B. Liu, K. Liang, Q. Liu, "Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts",
      ICLR 2024 (arXiv 2310.05898).
"""

# torch._foreach_* are the documented building blocks of torch.optim's foreach paths, but not in torch's __all__.
# pyright: reportPrivateImportUsage=false

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import torch
from sciml_protocols import SciMLInputError
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = ["ELEMENTWISE_KAPPAS", "KAPPAS", "NONFINITE_POLICIES", "Lion", "lion_reference"]

KAPPAS: tuple[str, ...] = ("sign", "l2", "nuclear", "huber")
"""The named choices of :math:`\\nabla K`."""

ELEMENTWISE_KAPPAS: tuple[str, ...] = ("sign", "huber")
"""The choices the fused kernel implements (elementwise, so local shards suffice)."""

NONFINITE_POLICIES: tuple[str, ...] = ("ignore", "raise", "skip")
"""What a step does with a gradient holding NaN or infinity."""

Kappa = Literal["sign", "l2", "nuclear", "huber"] | Callable[[torch.Tensor], torch.Tensor]
NonFinite = Literal["ignore", "raise", "skip"]

_HALF = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------------ helpers


def _dtensor_type() -> type | None:
    # DTensors exist only once torch.distributed.tensor is imported; looking it up here avoids importing it.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None) if module is not None else None


def _is_dtensor(tensor: torch.Tensor, dtensor: type | None) -> bool:
    return dtensor is not None and isinstance(tensor, dtensor)


def _local(tensor: torch.Tensor, dtensor: type | None) -> torch.Tensor:
    """The local shard of a DTensor (aliasing its storage), the tensor itself otherwise."""
    if _is_dtensor(tensor, dtensor):
        return cast(Any, tensor).to_local()
    return tensor


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Momentum dtype: float32 for half-precision parameters, the parameter's dtype otherwise."""
    return torch.float32 if dtype in _HALF else dtype


def _l2_direction(blend: torch.Tensor) -> torch.Tensor:
    r""":math:`c / \|c\|_2` over the whole tensor, 0 where :math:`c = 0` (in place on ``blend``)."""
    dtensor = _dtensor_type()
    if _is_dtensor(blend, dtensor):
        # the global norm: reduce over the mesh, then divide the local shard and wrap it back
        from torch.distributed.tensor import DTensor

        distributed = cast(DTensor, blend)
        norm = cast(DTensor, torch.linalg.vector_norm(distributed)).full_tensor()
        local = distributed.to_local()
        local.div_(norm + (norm == 0).to(norm.dtype))
        return DTensor.from_local(
            local,
            distributed.device_mesh,
            distributed.placements,
            run_check=False,
            shape=blend.shape,
            stride=blend.stride(),
        )
    norm = torch.linalg.vector_norm(blend)
    # dividing by 1 where the norm is 0 gives the 0 direction; elsewhere the norm itself, exactly
    return blend.div_(norm + (norm == 0).to(norm.dtype))


def _polar_dense(blend: torch.Tensor) -> torch.Tensor:
    matrix = blend.reshape(blend.shape[0], -1)
    if matrix.numel() == 0:
        return blend
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    # sign(0) = 0 for singular values: directions with sigma below the numerical-rank threshold (numpy's
    # matrix_rank rule) contribute nothing, so the result is the minimum-norm subgradient of the nuclear norm
    threshold = s.max() * max(matrix.shape) * torch.finfo(s.dtype).eps
    keep = (s > threshold).to(u.dtype)
    return ((u * keep) @ vh).reshape(blend.shape)


def _nuclear_direction(blend: torch.Tensor) -> torch.Tensor:
    r"""The polar factor :math:`U V^\top` of :math:`C` (reshaped to ``(shape[0], -1)``); :math:`c/\|c\|_2` below 2-D."""
    if blend.ndim < 2:
        # a vector is a one-column matrix: its nuclear (= spectral) norm is its l2 norm, its polar factor c/|c|
        return _l2_direction(blend)
    dtensor = _dtensor_type()
    if _is_dtensor(blend, dtensor):
        # the SVD needs the whole matrix: gather it, factor it, scatter the result with the same placements
        from torch.distributed.tensor import DTensor, distribute_tensor

        distributed = cast(DTensor, blend)
        polar = _polar_dense(distributed.full_tensor())
        return distribute_tensor(polar, distributed.device_mesh, distributed.placements)
    return _polar_dense(blend)


def _direction(kappa: Kappa, blend: torch.Tensor, huber_delta: float) -> torch.Tensor:
    r""":math:`\nabla K(c)`; may reuse ``blend``'s storage."""
    if kappa == "sign":
        return blend.sign_()
    if kappa == "huber":
        return blend.div_(huber_delta).clamp_min_(-1.0).clamp_max_(1.0)
    if kappa == "l2":
        return _l2_direction(blend)
    if kappa == "nuclear":
        return _nuclear_direction(blend)
    if callable(kappa):
        shape = blend.shape
        direction = kappa(blend)
        if not isinstance(direction, torch.Tensor) or direction.shape != shape:  # pyright: ignore[reportUnnecessaryIsInstance]
            got = tuple(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("kappa", f"the callable must return a tensor of shape {tuple(shape)}, got {got}")
        return direction
    raise SciMLInputError("kappa", f"must be one of {KAPPAS} or a callable, got {kappa!r}")


def _apply_update(
    param: torch.Tensor, direction: torch.Tensor, *, lr: float, weight_decay: float, state_dtype: torch.dtype
) -> None:
    if param.dtype == state_dtype:
        if weight_decay != 0.0:
            param.mul_(1.0 - lr * weight_decay)
        param.add_(direction, alpha=-lr)
        return
    # half precision: compute in float32, round once when storing (what the fused kernel does)
    work = param.to(state_dtype)
    if weight_decay != 0.0:
        work.mul_(1.0 - lr * weight_decay)
    work.add_(direction, alpha=-lr)
    param.copy_(work)


def lion_reference(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float = 0.0,
    kappa: Kappa = "sign",
    huber_delta: float = 1.0,
    maximize: bool = False,
) -> None:
    r"""One Lion-:math:`K` step, tensor by tensor, in place: the for-loop path and the oracle of the other two.

    .. math::
        c = \beta_1 m + (1 - \beta_1) g, \qquad
        x \leftarrow x - \eta\,(\nabla K(c) + \lambda x), \qquad
        m \leftarrow \beta_2 m + (1 - \beta_2) g,

    computed as ``c = torch.lerp(m, g, 1 - beta1)``, ``x.mul_(1 - lr * weight_decay)``,
    ``x.add_(grad_K, alpha=-lr)``, ``m.lerp_(g, 1 - beta2)``; :math:`g` is negated when ``maximize``. Half-precision
    parameters are updated in float32 (their momentum is float32) and rounded once. DTensors are handled by
    DTensor ops (``l2`` reduces the norm over the mesh, ``nuclear`` factors the full matrix).

    Args:
        params: parameters, any shapes; updated in place.
        grads: their gradients (same shapes and dtypes).
        exp_avgs: momentum buffers (same shapes; float32 for float16/bfloat16 params); updated in place.
        lr: learning rate :math:`\eta`.
        beta1: interpolation factor of the update direction :math:`\beta_1`.
        beta2: decay of the momentum :math:`\beta_2`.
        weight_decay: decoupled weight decay :math:`\lambda`.
        kappa: :math:`\nabla K`: ``"sign"``, ``"l2"``, ``"nuclear"``, ``"huber"`` or a callable (see :class:`Lion`).
        huber_delta: :math:`\delta` of ``"huber"``.
        maximize: ascend instead of descend.

    Example:
        >>> x, g, m = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0]), torch.zeros(2)
        >>> lion_reference([x], [g], [m], lr=0.1, beta1=0.9, beta2=0.99)
        >>> x, m
        (tensor([ 0.9000, -1.0000]), tensor([0.0200, 0.0000]))
    """
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        g = grad.to(exp_avg.dtype)
        if maximize:
            g = -g
        blend = torch.lerp(exp_avg, g, 1.0 - beta1)
        direction = _direction(kappa, blend, huber_delta)
        _apply_update(param, direction, lr=lr, weight_decay=weight_decay, state_dtype=exp_avg.dtype)
        exp_avg.lerp_(g, 1.0 - beta2)


def _lion_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    kappa: Kappa,
    huber_delta: float,
    maximize: bool,
) -> None:
    """The same step as :func:`lion_reference` with ``torch._foreach_*`` ops, per (device, dtype) bucket."""
    dtensor = _dtensor_type()
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, param in enumerate(params):
        buckets.setdefault((param.device, param.dtype), []).append(index)
    for (device, dtype), indices in buckets.items():
        for chunk in _chunks(indices, params, device):
            _lion_foreach_bucket(
                [params[i] for i in chunk],
                [grads[i] for i in chunk],
                [exp_avgs[i] for i in chunk],
                dtype=dtype,
                dtensor=dtensor,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                kappa=kappa,
                huber_delta=huber_delta,
                maximize=maximize,
            )


_CPU_CHUNK_ELEMENTS = 1 << 20


def _chunks(indices: list[int], params: Sequence[torch.Tensor], device: torch.device) -> list[list[int]]:
    """Split a CPU bucket into runs of about a million elements (CUDA buckets stay whole).

    On CPU the foreach ops loop over the tensors one op at a time; running the whole chain of ops on a few
    megabytes at a time keeps them in cache (about 2x faster at 10M parameters), with the same results.
    """
    if device.type != "cpu":
        return [indices]
    chunks: list[list[int]] = [[]]
    size = 0
    for index in indices:
        if chunks[-1] and size + params[index].numel() > _CPU_CHUNK_ELEMENTS:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += params[index].numel()
    return chunks


def _lion_foreach_bucket(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    dtype: torch.dtype,
    dtensor: type | None,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    kappa: Kappa,
    huber_delta: float,
    maximize: bool,
) -> None:
    """One bucket (one device and dtype) of :func:`_lion_foreach`."""
    state_dtype = _state_dtype(dtype)
    local_params = [_local(p, dtensor) for p in params]
    local_avgs = [_local(m, dtensor) for m in exp_avgs]
    local_grads = [_local(g, dtensor).to(state_dtype) for g in grads]
    if maximize:
        local_grads = list(torch._foreach_neg(local_grads))
    blends = list(torch._foreach_lerp(local_avgs, local_grads, 1.0 - beta1))
    if kappa == "sign":
        torch._foreach_sign_(blends)
    elif kappa == "huber":
        torch._foreach_div_(blends, huber_delta)
        torch._foreach_clamp_min_(blends, -1.0)
        torch._foreach_clamp_max_(blends, 1.0)
    else:
        # the global norms and SVDs need the whole tensor: go through the DTensor (or plain) helper per tensor
        for position, param in enumerate(params):
            if _is_dtensor(param, dtensor):
                from torch.distributed.tensor import DTensor

                whole = DTensor.from_local(
                    blends[position],
                    param.device_mesh,  # pyright: ignore[reportAttributeAccessIssue]
                    param.placements,  # pyright: ignore[reportAttributeAccessIssue]
                    run_check=False,
                    shape=param.shape,
                    stride=param.stride(),
                )
                blends[position] = _local(_direction(kappa, whole, huber_delta), dtensor)
            else:
                blends[position] = _direction(kappa, blends[position], huber_delta)
    if dtype == state_dtype:
        if weight_decay != 0.0:
            torch._foreach_mul_(local_params, 1.0 - lr * weight_decay)
        torch._foreach_add_(local_params, blends, alpha=-lr)
    else:
        work = [p.to(state_dtype) for p in local_params]
        if weight_decay != 0.0:
            torch._foreach_mul_(work, 1.0 - lr * weight_decay)
        torch._foreach_add_(work, blends, alpha=-lr)
        torch._foreach_copy_(local_params, work)
    torch._foreach_lerp_(local_avgs, local_grads, 1.0 - beta2)


def _fusable(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor) -> bool:
    return param.dtype == grad.dtype and param.is_contiguous() and grad.is_contiguous() and exp_avg.is_contiguous()


def _lion_fused(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    kappa: Kappa,
    huber_delta: float,
    maximize: bool,
) -> None:
    """One Triton launch per (device, dtype) bucket on local shards; non-contiguous tensors take the reference."""
    from ._kernels import lion as kernels

    dtensor = _dtensor_type()
    hyper: dict[str, Any] = {
        "lr": lr,
        "beta1": beta1,
        "beta2": beta2,
        "weight_decay": weight_decay,
        "huber_delta": huber_delta,
        "maximize": maximize,
    }
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = {}
    leftovers: tuple[list[torch.Tensor], ...] = ([], [], [])
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        local = (_local(param, dtensor), _local(grad, dtensor), _local(exp_avg, dtensor))
        target = buckets.setdefault((local[0].device, local[0].dtype), ([], [], [])) if _fusable(*local) else leftovers
        for column, tensor in zip(target, local, strict=True):
            column.append(tensor)
    for bucket_params, bucket_grads, bucket_avgs in buckets.values():
        kernels.lion_multi_tensor_step(bucket_params, bucket_grads, bucket_avgs, kappa=cast(str, kappa), **hyper)
    if leftovers[0]:
        lion_reference(*leftovers, kappa=kappa, **hyper)


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    number = float(value)
    if number != number:
        raise SciMLInputError(name, "must not be NaN")
    return number


def _validate_group(group: dict[str, Any]) -> None:
    lr = _check_real("lr", group["lr"])
    if lr < 0.0 or lr == float("inf"):
        raise SciMLInputError("lr", f"must be finite and >= 0, got {lr}")
    betas = group["betas"]
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise SciMLInputError("betas", f"must be a pair (beta1, beta2), got {betas!r}")
    for position, beta in enumerate(betas):
        value = _check_real(f"betas[{position}]", beta)
        if not 0.0 <= value < 1.0:
            raise SciMLInputError("betas", f"entry {position} must lie in [0, 1), got {value}")
    weight_decay = _check_real("weight_decay", group["weight_decay"])
    if weight_decay < 0.0 or weight_decay == float("inf"):
        raise SciMLInputError("weight_decay", f"must be finite and >= 0, got {weight_decay}")
    kappa = group["kappa"]
    if not callable(kappa) and kappa not in KAPPAS:
        raise SciMLInputError("kappa", f"must be one of {KAPPAS} or a callable, got {kappa!r}")
    delta = _check_real("huber_delta", group["huber_delta"])
    if not 0.0 < delta < float("inf"):
        raise SciMLInputError("huber_delta", f"must be finite and > 0, got {delta}")
    if group["nonfinite"] not in NONFINITE_POLICIES:
        raise SciMLInputError("nonfinite", f"must be one of {NONFINITE_POLICIES}, got {group['nonfinite']!r}")
    for flag in ("maximize", "foreach", "fused"):
        value = group[flag]
        if flag != "maximize" and value is None:
            continue
        if not isinstance(value, bool):
            raise SciMLInputError(flag, f"must be a bool{' or None' if flag != 'maximize' else ''}, got {value!r}")
    if group["fused"] and group["foreach"]:
        raise SciMLInputError("fused", "fused=True and foreach=True are exclusive; choose one")
    if group["fused"] and (callable(kappa) or kappa not in ELEMENTWISE_KAPPAS):
        raise SciMLInputError(
            "fused", f"the fused kernel implements kappa in {ELEMENTWISE_KAPPAS}, got {kappa!r}; use fused=False"
        )


def _check_fused_devices(params: Iterable[torch.Tensor]) -> None:
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    for index, param in enumerate(params):
        if param.device.type == "cuda" or (param.device.type == "cpu" and interpret):
            continue
        raise SciMLInputError(
            "fused",
            f"fused=True runs a Triton kernel, which needs CUDA tensors; parameter {index} is on {param.device} "
            "(TRITON_INTERPRET=1 lets it run on CPU tensors, for testing). Use fused=False there.",
        )


def _any_nonfinite(grads: Sequence[torch.Tensor], dtensor: type | None) -> bool:
    """Whether a gradient holds NaN or infinity; one host synchronisation per device."""
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for grad in grads:
        if _is_dtensor(grad, dtensor):
            # count over the whole mesh, so that every rank takes the same decision
            count = cast(Any, torch.logical_not(torch.isfinite(grad)).sum()).full_tensor()
            flag = count > 0
        else:
            flag = torch.logical_not(torch.isfinite(grad).all())
        flags.setdefault(flag.device, []).append(flag)
    return any(bool(torch.stack(group).any()) for group in flags.values())


# ------------------------------------------------------------------------------------------------ optimizer


class Lion(Optimizer):
    r"""Lion and Lion-:math:`K`: sign (or :math:`\nabla K`) of an interpolated momentum, with decoupled weight decay.

    For each parameter :math:`x` with gradient :math:`g` and momentum :math:`m` (zero at start):

    .. math::
        c_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \\
        x_t &= x_{t-1} - \eta_t \big(\nabla K(c_t) + \lambda\, x_{t-1}\big), \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2)\, g_t,

    applied as ``x.mul_(1 - lr * weight_decay)`` then ``x.add_(grad_K, alpha=-lr)``, the decoupled decay of the
    paper, of ``timm.optim.Lion`` and of ``lion_pytorch.Lion`` (with its default ``decoupled_weight_decay=False``,
    where the decay is ``lr * weight_decay`` too). With :math:`K = \|\cdot\|_1` this is Lion (Chen et al. 2023).
    Chen, Liu, Liang and Liu (2023) show that for a convex :math:`K` the iteration minimises
    :math:`f(x) + K^*(\lambda x)/\lambda`-type objectives, i.e. solves :math:`\min f(x)` subject to :math:`\lambda x \in
    \operatorname{dom} K^*` for norms: the weight decay fixes the radius :math:`1/\lambda` of the dual-norm ball.
    Started outside the ball the iterate first enters it (its distance shrinks by at least the factor
    :math:`1 - \eta\lambda` per step), then descends :math:`f` inside.

    =============  ==============================================  ==================================================
    ``kappa``      :math:`\nabla K(c)`                             constraint enforced
    =============  ==============================================  ==================================================
    ``"sign"``     :math:`\operatorname{sign}(c)`, Lion            :math:`\|x\|_\infty \le 1/\lambda`
    ``"l2"``       :math:`c/\|c\|_2` (0 at :math:`c = 0`)          :math:`\|x\|_2 \le 1/\lambda`
    ``"nuclear"``  polar factor :math:`UV^\top` of :math:`C`       spectral norm :math:`\|X\|_2 \le 1/\lambda`
    ``"huber"``    :math:`\operatorname{clip}(c/\delta, -1, 1)`    :math:`\|x\|_\infty \le 1/\lambda`, plus
                                                                   :math:`\tfrac{\delta\lambda}{2}\|x\|_2^2` inside
    callable       ``kappa(c)``, same shape as ``c``               that of your :math:`K`
    =============  ==============================================  ==================================================

    :math:`C` is ``c.reshape(c.shape[0], -1)``: conv weights are output channels by the rest.

    Choices of note:

    - ``"nuclear"`` treats a parameter as the matrix ``(out_features, -1)`` (conv weights: output channels by the
      rest). Singular values below numpy's numerical-rank threshold count as 0 (the convention
      :math:`\operatorname{sign}(0) = 0`), so the direction is the minimum-norm subgradient. Vectors and scalars
      (biases, norm weights) are one-column matrices, whose nuclear and spectral norms are the :math:`\ell_2`
      norm: they get the ``"l2"`` direction, and the same radius :math:`1/\lambda` in the :math:`\ell_2` norm. One
      SVD per matrix per step: use it for small and medium matrices.
    - Momentum ``exp_avg`` is float32 for float16/bfloat16 parameters (every path computes in float32 and rounds
      the parameter once) and has the parameter's dtype otherwise. The state layout is the same on every path, so
      a state_dict saved by one path resumes on another; ``load_state_dict`` keeps the float32 momentum of
      half-precision parameters.
    - ``nonfinite`` decides what a gradient holding NaN or infinity does. ``"ignore"`` (default, no check, no host
      synchronisation) lets it propagate: with ``"sign"`` a NaN makes the momentum NaN and, as
      :math:`\operatorname{sign}(\mathrm{NaN}) = 0` in torch, silently freezes the parameter (apart from the
      decay) from then on; an infinite gradient makes the momentum infinite, and later NaN. ``"raise"`` raises
      :class:`~sciml_protocols.SciMLInputError` before anything is updated; ``"skip"`` leaves that group's
      parameters, momenta and step counts untouched for this step (like a mixed-precision grad scaler).
    - Paths: ``foreach=None`` uses the foreach path when every parameter of the group is on CUDA, the for-loop
      path otherwise (torch.optim's rule; on CPU the foreach path, which works through a million elements at a
      time, is often the faster one: ask for it with ``foreach=True``). ``fused=True`` (``"sign"`` and
      ``"huber"`` only) runs one Triton launch per (device, dtype) bucket of a group (non-contiguous tensors
      take the reference); it needs CUDA tensors and raises on CPU tensors at ``step``, unless
      ``TRITON_INTERPRET=1`` is set (the Triton interpreter, for tests). ``fused=None`` means False: Triton is
      launched only when asked for.
    - DTensor (FSDP2) parameters: the foreach and fused paths update the local shards (``to_local()``), which is
      exact for the elementwise choices. ``"l2"`` reduces the norm over the mesh, ``"nuclear"`` gathers the full
      matrix (``full_tensor``), factors it on every rank and keeps the local shard of the result; a callable
      receives the DTensor. The non-finite check counts over the whole mesh, so every rank decides the same.

    Args:
        params: parameters or param-group dicts; every hyperparameter below can be set per group.
        lr: learning rate :math:`\eta \ge 0` (3-10x smaller than AdamW's, per the Lion paper).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`; the constraint radius is :math:`1/\lambda`.
        kappa: :math:`\nabla K`: ``"sign"``, ``"l2"``, ``"nuclear"``, ``"huber"`` or a callable ``c -> tensor``.
        huber_delta: :math:`\delta > 0` of ``"huber"``.
        maximize: ascend the objective instead of descending it.
        foreach: use the grouped ``torch._foreach_*`` path; None chooses (see above).
        fused: use the Triton kernel; None means False.
        nonfinite: ``"ignore"``, ``"raise"`` or ``"skip"`` (see above).

    Raises:
        SciMLInputError: for a negative or non-finite ``lr`` or ``weight_decay``, betas outside :math:`[0, 1)`, an
            unknown ``kappa``, a non-positive ``huber_delta``, an unknown ``nonfinite``, ``foreach`` and ``fused``
            both True, ``fused`` with a non-elementwise ``kappa``; at ``step``: sparse gradients, ``fused`` on
            non-CUDA tensors, non-finite gradients under ``nonfinite="raise"``.

    Example:
        >>> x = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = Lion([x], lr=0.1, weight_decay=0.5)
        >>> (x**2).sum().backward()
        >>> _ = opt.step()
        >>> x.detach()  # (1 - 0.1 * 0.5) x - 0.1 sign(0.1 g)
        tensor([ 0.8500, -1.8000])
        >>> opt.state[x]["step"], opt.state[x]["exp_avg"]
        (tensor(1.), tensor([ 0.0200, -0.0400]))
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        kappa: Kappa = "sign",
        huber_delta: float = 1.0,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite: NonFinite = "ignore",
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "kappa": kappa,
            "huber_delta": huber_delta,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "nonfinite": nonfinite,
        }
        _validate_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its hyperparameters (own or inherited from the defaults) are validated first.

        Args:
            param_group: ``{"params": ..., **hyperparameters}``.

        Raises:
            SciMLInputError: for an invalid hyperparameter (see :class:`Lion`).
        """
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        _validate_group(merged)
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("kappa", "sign")
            group.setdefault("huber_delta", 1.0)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("nonfinite", "ignore")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state; the momentum of float16/bfloat16 parameters stays float32 (torch would cast it down).

        Args:
            state_dict: as returned by :meth:`state_dict`.
        """
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved_state = state_dict["state"]
        momenta: list[tuple[int, torch.Tensor]] = []
        if len(saved_ids) == sum(len(group["params"]) for group in self.param_groups):
            for position, saved_id in enumerate(saved_ids):
                entry = saved_state.get(saved_id)
                if isinstance(entry, dict) and isinstance(entry.get("exp_avg"), torch.Tensor):
                    momenta.append((position, entry["exp_avg"]))
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for position, momentum in momenta:
            param = params[position]
            wanted = _state_dtype(param.dtype)
            if param.dtype != wanted:
                self.state[param]["exp_avg"] = momentum.to(device=param.device, dtype=wanted, copy=True)

    def _gather(
        self, group: dict[str, Any]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse or grad.layout != torch.strided:
                raise SciMLInputError("params", "Lion does not support sparse gradients")
            state = self.state[param]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(
                    param, dtype=_state_dtype(param.dtype), memory_format=torch.preserve_format
                )
            params.append(param)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            steps.append(state["step"])
        return params, grads, exp_avgs, steps

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Take one step on every param group.

        Args:
            closure: re-evaluates the model and returns the loss; called with gradients enabled.

        Returns:
            The closure's loss, or None without a closure.

        Raises:
            SciMLInputError: for sparse gradients, ``fused=True`` on non-CUDA tensors, or non-finite gradients under
                ``nonfinite="raise"``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        dtensor = _dtensor_type()
        gathered = [self._gather(group) for group in self.param_groups]
        # every check before any update, so that a raise leaves the optimizer as it was
        active: list[bool] = []
        for index, (group, (params, grads, _, _)) in enumerate(zip(self.param_groups, gathered, strict=True)):
            if group["fused"] and params:
                _check_fused_devices(params)
            policy = group["nonfinite"]
            if policy == "ignore" or not grads:
                active.append(bool(params))
                continue
            bad = _any_nonfinite(grads, dtensor)
            if bad and policy == "raise":
                raise SciMLInputError(
                    "params", f"a gradient of param group {index} holds NaN or infinity (nonfinite='raise')"
                )
            active.append(not bad)

        for group, (params, grads, exp_avgs, steps), run in zip(self.param_groups, gathered, active, strict=True):
            if not run:
                continue
            beta1, beta2 = group["betas"]
            hyper: dict[str, Any] = {
                "lr": float(group["lr"]),
                "beta1": float(beta1),
                "beta2": float(beta2),
                "weight_decay": float(group["weight_decay"]),
                "kappa": group["kappa"],
                "huber_delta": float(group["huber_delta"]),
                "maximize": group["maximize"],
            }
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            if group["fused"]:
                _lion_fused(params, grads, exp_avgs, **hyper)
            elif foreach:
                _lion_foreach(params, grads, exp_avgs, **hyper)
            else:
                lion_reference(params, grads, exp_avgs, **hyper)
            for step in steps:
                step += 1
        return loss
