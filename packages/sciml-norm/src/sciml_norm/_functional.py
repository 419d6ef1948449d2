r"""Functional EvoNorm-S0 and EvoNorm-B0: validation, the eager PyTorch reference, and dispatch to the fused kernels.

Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020 (arXiv:2004.02967). The
conventions (defaults, statistics in float32 for half-precision input, B0's running-variance update with the
unbiased factor :math:`n/(n-1)`, affine-only layers when ``apply_act=False``) are those of timm's
``EvoNorm2dS0``/``EvoNorm2dB0``, so the two agree to rounding.

``backend="torch"`` is the eager reference, differentiable by autograd and the CPU path; it reads any memory format
in place (channels-last input is never copied to NCHW). ``backend="triton"`` runs the fused two-pass kernels of
:mod:`sciml_norm._kernels.evonorm`; ``"auto"`` picks them for CUDA tensors when Triton is installed.
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLInputError, resolve_backend
from torch import Tensor

from ._kernels import evonorm as _fused

__all__ = ["evonorm_b0", "evonorm_s0"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_input(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise SciMLInputError("x", f"must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise SciMLInputError("x", f"must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise SciMLInputError("x", f"must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.numel() == 0:
        raise SciMLInputError("x", f"must not be empty, got shape {tuple(x.shape)}")
    return x


def _check_channel_vector(name: str, value: object, x: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
    channels = x.shape[1]
    if value.dim() != 1 or value.shape[0] != channels:
        raise SciMLInputError(name, f"must have shape ({channels},) (the channels of x), got {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise SciMLInputError(name, f"must have a floating dtype, got {value.dtype}")
    if value.device != x.device:
        raise SciMLInputError(name, f"must be on the device of x ({x.device}), got {value.device}")
    return value


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise SciMLInputError("eps", f"must be a positive finite number, got {eps!r}")
    return float(eps)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SciMLInputError(name, f"must be a bool, got {value!r}")
    return value


def _resolve_constant(backend: str, device_types: tuple[str, ...]) -> str:
    return resolve_backend(backend, *(torch.empty(0, device=device) for device in device_types))


# What torch.compiler.assume_constant_result does, without its `import torch._dynamo` at our import time (seconds,
# and it loads triton): dynamo calls the function while tracing and puts its result in the graph as a constant.
_resolve_constant._dynamo_marked_constant = True  # pyright: ignore[reportFunctionMemberAccess]


def _resolve(backend: str, *tensors: Tensor | None) -> str:
    """:func:`sciml_protocols.resolve_backend`; under ``torch.compile`` evaluated once at trace time, as a constant.

    Dynamo cannot trace the decision itself (it may import triton), so the compiled graph gets its result; it
    depends only on the backend name and the device types, which the graph's guards already fix. The callers pass
    ``x`` alone: the other tensors were already checked to live on its device.
    """
    if torch.compiler.is_compiling():
        device_types = tuple(sorted({t.device.type for t in tensors if t is not None}))
        return _resolve_constant(backend, device_types)
    return resolve_backend(backend, *tensors)


def _affine(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x * weight.to(x.dtype).view(1, -1, 1, 1) + bias.to(x.dtype).view(1, -1, 1, 1)


def _s0_torch(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float) -> Tensor:
    """The eager reference: autograd through PyTorch operations, statistics in float32 (float64 for float64)."""
    batch, channels = x.shape[:2]
    # a view, also of channels-last input (splitting the channel axis keeps its strides)
    grouped = x.to(_compute_dtype(x.dtype)).unflatten(1, (groups, channels // groups))
    var = grouped.var(dim=(2, 3, 4), unbiased=False)  # (N, G)
    std = (var + eps).sqrt().to(x.dtype).repeat_interleave(channels // groups, dim=1).view(batch, channels, 1, 1)
    out = x * (x * v.to(x.dtype).view(1, -1, 1, 1)).sigmoid() / std
    return _affine(out, weight, bias)


def _b0_torch(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    momentum: float,
    eps: float,
    bessel: bool,
) -> Tensor:
    """The eager reference of B0 (updates ``running_var`` in place in training)."""
    stats = x.to(_compute_dtype(x.dtype))
    if training:
        var = stats.var(dim=(0, 2, 3), unbiased=False)
        count = x.numel() // x.shape[1]
        correction = count / (count - 1) if bessel else 1.0
        with torch.no_grad():
            running_var.copy_(running_var * (1.0 - momentum) + var.detach() * momentum * correction)
    else:
        var = running_var
    left = (var + eps).sqrt().to(x.dtype).view(1, -1, 1, 1)
    instance_std = (stats.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt().to(x.dtype)
    right = x * v.to(x.dtype).view(1, -1, 1, 1) + instance_std
    return _affine(x / torch.maximum(left, right), weight, bias)


def evonorm_s0(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor | None,
    *,
    groups: int,
    eps: float = 1e-5,
    apply_act: bool = True,
    backend: str = "auto",
) -> Tensor:
    r"""EvoNorm-S0: a sigmoid-gated input divided by its group standard deviation, then a per-channel affine map.

    .. math::

        y_{nchw} = \frac{x_{nchw}\,\sigma(v_c x_{nchw})}{\sqrt{s^2_{n,g(c)}(x) + \varepsilon}}\, w_c + b_c,

    with :math:`s^2_{n,g}` the biased variance of sample :math:`n` over the :math:`C/G` channels of group :math:`g`
    and all :math:`H \times W` positions (taken from the input, before the gate). The layer does not depend on the
    other samples of the batch. With ``apply_act=False`` it is the affine map :math:`y = x w + b` (timm's
    convention). Statistics are computed in float32 for float16/bfloat16 input (float64 for float64).

    Reference: Hanxiao Liu, Andrew Brock, Karen Simonyan, Quoc V. Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020, arXiv:2004.02967. Matches ``timm.layers.EvoNorm2dS0``.

    Args:
        x: input of shape (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) scale :math:`w` (cast to the dtype of ``x``).
        bias: (C,) shift :math:`b`.
        v: (C,) slope :math:`v` of the gate; may be None when ``apply_act`` is False.
        groups: number of groups :math:`G`; must divide C.
        eps: :math:`\varepsilon > 0` added to the variance.
        apply_act: the normalization-activation (True) or the affine map only (False).
        backend: ``"auto"`` (fused Triton kernels for CUDA tensors when Triton is installed, else ``"torch"``),
            ``"torch"`` (eager reference) or ``"triton"`` (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``).

    Returns:
        ``y`` of the shape and dtype of ``x`` (channels-last when ``x`` is).

    Raises:
        SciMLInputError: ``x`` not a 4-D floating tensor or empty; ``weight``/``bias``/``v`` not of shape (C,) or on
            another device; ``v`` missing with ``apply_act``; ``groups`` not a positive divisor of C; ``eps`` not
            positive and finite; an unknown ``backend`` or ``"triton"`` on CPU tensors without the interpreter.

    Example:
        >>> x = torch.tensor([[[[1.0, -1.0]], [[3.0, -3.0]]]])
        >>> ones, zeros = torch.ones(2), torch.zeros(2)
        >>> evonorm_s0(x, ones, zeros, ones, groups=1, eps=1e-5)  # x sigmoid(x) / sqrt(5)
        tensor([[[[ 0.3269, -0.1203]],
        <BLANKLINE>
                 [[ 1.2780, -0.0636]]]])
    """
    x = _check_input(x)
    weight = _check_channel_vector("weight", weight, x)
    bias = _check_channel_vector("bias", bias, x)
    apply_act = _check_flag("apply_act", apply_act)
    channels = x.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
        raise SciMLInputError("groups", f"must be a positive int dividing the {channels} channels of x, got {groups!r}")
    eps = _check_eps(eps)
    if apply_act:
        if v is None:
            raise SciMLInputError("v", "is required when apply_act=True")
        v = _check_channel_vector("v", v, x)
    resolved = _resolve(backend, x)
    if not apply_act:
        return _affine(x, weight, bias)
    assert v is not None
    if resolved == "triton":
        return _fused.evonorm_s0_fused(x, weight, bias, v, groups, eps, "triton")
    return _s0_torch(x, weight, bias, v, groups, eps)


def evonorm_b0(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor | None,
    running_var: Tensor,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-3,
    apply_act: bool = True,
    bessel: bool = True,
    backend: str = "auto",
) -> Tensor:
    r"""EvoNorm-B0: the input divided by the larger of a batch std and a gated instance std, then an affine map.

    .. math::

        y_{nchw} = \frac{x_{nchw}}{\max\!\big(\sqrt{s^2_c + \varepsilon},\;
        v_c x_{nchw} + \sqrt{s^2_{nc}(x) + \varepsilon}\big)}\, w_c + b_c,

    with :math:`s^2_{nc}` the biased variance over :math:`H \times W` and, in training, :math:`s^2_c` the biased
    variance over :math:`N \times H \times W`; then, like ``F.batch_norm``, ``running_var`` is updated in place,

    .. math::

        r_c \leftarrow (1 - m)\, r_c + m\, s^2_c \cdot \tfrac{n}{n-1}, \qquad n = NHW,

    (the factor :math:`n/(n-1)` only with ``bessel=True``, timm's convention; ``bessel=False`` is the TensorFlow
    reference's biased update). In evaluation :math:`s^2_c = r_c` and nothing is updated. With
    ``apply_act=False`` the layer is :math:`y = x w + b` and the running variance is left alone (as in timm).
    Statistics are computed in float32 for float16/bfloat16 input (float64 for float64).

    Reference: Hanxiao Liu, Andrew Brock, Karen Simonyan, Quoc V. Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020, arXiv:2004.02967. Matches ``timm.layers.EvoNorm2dB0`` (there ``bessel`` is always True).

    Args:
        x: input of shape (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) scale :math:`w`.
        bias: (C,) shift :math:`b`.
        v: (C,) slope :math:`v` of the instance branch; may be None when ``apply_act`` is False.
        running_var: (C,) running variance :math:`r` (a buffer; updated in place in training).
        training: use (and record) batch statistics, or use ``running_var``.
        momentum: :math:`m \in [0, 1]`.
        eps: :math:`\varepsilon > 0`.
        apply_act: the normalization-activation (True) or the affine map only (False).
        bessel: unbiased (True) or biased (False) batch variance in the running average.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (as in :func:`evonorm_s0`).

    Returns:
        ``y`` of the shape and dtype of ``x`` (channels-last when ``x`` is).

    Raises:
        SciMLInputError: bad ``x``, ``weight``, ``bias``, ``v`` or ``running_var`` (shape (C,), floating, device of
            ``x``); ``training``/``apply_act``/``bessel`` not bools; ``momentum`` outside [0, 1]; ``eps`` not
            positive and finite; a single value per channel in training with ``bessel`` (:math:`n = 1`); an
            unknown or unavailable ``backend``.

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
        >>> p, rv = torch.ones(1), torch.ones(1)
        >>> evonorm_b0(x, p, 0 * p, 0 * p, rv, training=True, eps=1e-8)
        tensor([[[[0.4472, 1.3416]]],
        <BLANKLINE>
        <BLANKLINE>
                [[[2.2361, 3.1305]]]])
        >>> rv  # 0.9 * 1 + 0.1 * 5 * 4/3
        tensor([1.5667])
    """
    x = _check_input(x)
    weight = _check_channel_vector("weight", weight, x)
    bias = _check_channel_vector("bias", bias, x)
    running_var = _check_channel_vector("running_var", running_var, x)
    training = _check_flag("training", training)
    apply_act = _check_flag("apply_act", apply_act)
    bessel = _check_flag("bessel", bessel)
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, int | float)
        or not math.isfinite(momentum)
        or not 0 <= momentum <= 1
    ):
        raise SciMLInputError("momentum", f"must be a number in [0, 1], got {momentum!r}")
    momentum = float(momentum)
    eps = _check_eps(eps)
    if apply_act:
        if v is None:
            raise SciMLInputError("v", "is required when apply_act=True")
        v = _check_channel_vector("v", v, x)
        if training and bessel and x.numel() // x.shape[1] < 2:
            raise SciMLInputError(
                "x", f"needs more than one value per channel in training (n/(n-1) correction), got {tuple(x.shape)}"
            )
    resolved = _resolve(backend, x)
    if not apply_act:
        return _affine(x, weight, bias)
    assert v is not None
    if resolved == "triton":
        return _fused.evonorm_b0_fused(x, weight, bias, v, running_var, training, momentum, eps, bessel, "triton")
    return _b0_torch(x, weight, bias, v, running_var, training, momentum, eps, bessel)
