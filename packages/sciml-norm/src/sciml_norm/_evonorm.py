r"""EvoNorm normalization-activation layers (timm-compatible) and a converter for existing models.

Notation (the paper's): :math:`x \in \mathbb R^{N\times C\times H\times W}`; :math:`s^2_I(x)` is the biased variance
and :math:`\mu^2_I(x)` the mean of :math:`x^2` over the axes :math:`I`, which are the batch axes :math:`(N, H, W)`,
the instance axes :math:`(H, W)` or the group axes :math:`(H, W, C/G)`; :math:`\gamma, \beta, v` are per-channel
vectors broadcast over :math:`N, H, W`. Every layer ends with the affine map :math:`y = \gamma\odot z + \beta`.

========  ==============================================================================================
layer     :math:`z` (with ``apply_act=True``)
========  ==============================================================================================
B0        :math:`x / \max\big(\sqrt{s^2_{N,H,W}+\epsilon},\; v\odot x + \sqrt{s^2_{H,W}+\epsilon}\big)`
B1        :math:`x / \max\big(\sqrt{s^2_{N,H,W}+\epsilon},\; (x + 1)\odot\sqrt{\mu^2_{H,W}+\epsilon}\big)`
B2        :math:`x / \max\big(\sqrt{s^2_{N,H,W}+\epsilon},\; \sqrt{\mu^2_{H,W}+\epsilon} - x\big)`
S0, S0a   :math:`x\,\sigma(v\odot x) / \sqrt{s^2_{H,W,C/G}+\epsilon}`
S1, S1a   :math:`\mathrm{act}(x) / \sqrt{s^2_{H,W,C/G}+\epsilon}` (act = SiLU by default)
S2, S2a   :math:`\mathrm{act}(x) / \sqrt{\mu^2_{H,W,C/G}+\epsilon}`
========  ==============================================================================================

With ``apply_act=False`` the plain layers are affine only (:math:`z = x`), as in the paper and timm, while the
"a" variants keep the division: S0a and S1a give :math:`z = x/\sqrt{s^2_{H,W,C/G}+\epsilon}`, S2a gives
:math:`z = x/\sqrt{\mu^2_{H,W,C/G}+\epsilon}`.

The B-series keep a running variance for evaluation, updated in training as
:math:`r \leftarrow (1-m)\,r + m\,c\,s^2_{N,H,W}` with :math:`c = n/(n-1)`, :math:`n = NHW` (``bessel=True``,
timm's convention) or :math:`c = 1` (``bessel=False``, the TensorFlow reference's biased variance).

Statistics are computed in float32 for float16/bfloat16 input (float64 input keeps float64, where timm would drop to
float32) and cast back to the input's dtype, like timm.

Reference:
    H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
    arXiv:2004.02967.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from sciml_protocols import SciMLInputError, check_int
from torch import nn

from ._functional import evonorm_b0, evonorm_s0

__all__ = [
    "EvoNorm2dB0",
    "EvoNorm2dB1",
    "EvoNorm2dB2",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "EvoNorm2dS1",
    "EvoNorm2dS1a",
    "EvoNorm2dS2",
    "EvoNorm2dS2a",
    "NormActConversion",
    "convert_norm_act",
]

GroupsMode = Literal["strict", "decrement"]
ActLayer = type[nn.Module] | Callable[[], nn.Module] | nn.Module | str | None

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "mish": nn.Mish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "hard_swish": nn.Hardswish,
    "hardswish": nn.Hardswish,
    "identity": nn.Identity,
}


# ----------------------------------------------------------------------------------------------------------------
# validation helpers


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        raise SciMLInputError("eps", f"must be a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise SciMLInputError("eps", f"must be finite and >= 0, got {eps}")
    return float(eps)


def _check_momentum(momentum: object) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, int | float):
        raise SciMLInputError("momentum", f"must be a real number in [0, 1], got {type(momentum).__name__}")
    if not (0.0 <= momentum <= 1.0):
        raise SciMLInputError("momentum", f"must be in [0, 1], got {momentum}")
    return float(momentum)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SciMLInputError(name, f"must be a bool, got {type(value).__name__}")
    return value


def _check_positive_eps(eps: float) -> None:
    # evonorm_s0 / evonorm_b0 (and their kernels) need eps > 0: fail at construction rather than in the forward.
    if eps <= 0:
        raise SciMLInputError(
            "eps", f"must be > 0 for EvoNorm S0/B0 (their kernels divide by sqrt(var + eps)), got {eps}"
        )


def _check_fused(fused: object) -> bool | None:
    if fused is not None and not isinstance(fused, bool):
        raise SciMLInputError("fused", f"must be None, True or False, got {fused!r}")
    return fused


def _resolve_groups(num_features: int, groups: object, group_size: object, groups_mode: object) -> int:
    """The group count of an S-layer: ``num_features // group_size`` if given, else ``groups``."""
    if groups_mode not in ("strict", "decrement"):
        raise SciMLInputError("groups_mode", f"must be 'strict' or 'decrement', got {groups_mode!r}")
    if group_size is not None:
        size = check_int("group_size", group_size, minimum=1)
        if num_features % size == 0:
            return num_features // size
        if groups_mode == "strict":
            raise SciMLInputError(
                "group_size",
                f"must divide num_features={num_features}, got {size} "
                "(groups_mode='decrement' picks the nearest group count that divides it)",
            )
        count = max(1, num_features // size)
    else:
        count = check_int("groups", groups, minimum=1)
        if num_features % count == 0:
            return count
        if groups_mode == "strict":
            raise SciMLInputError(
                "groups",
                f"must divide num_features={num_features}, got {count} "
                "(pass group_size=, or groups_mode='decrement' for the TensorFlow reference's rule)",
            )
    # TensorFlow reference: lower the group count until it divides the channel count.
    while count > 1 and num_features % count != 0:
        count -= 1
    return count


def _check_input(x: object, num_features: int, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise SciMLInputError("x", f"must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise SciMLInputError("x", f"must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != num_features:
        raise SciMLInputError(
            "x", f"expected {num_features} channels (dim 1), got {x.shape[1]} in shape {tuple(x.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise SciMLInputError("x", f"must have a floating-point dtype, got {x.dtype}")
    if x.numel() == 0:
        raise SciMLInputError("x", f"must not be empty, got shape {tuple(x.shape)}")
    if x.device != device:
        raise SciMLInputError("x", f"is on {x.device} but the layer's parameters are on {device}")
    return x


def _make_act(act_layer: ActLayer) -> nn.Module:
    if act_layer is None:
        return nn.SiLU()
    if isinstance(act_layer, nn.Module):
        return act_layer
    if isinstance(act_layer, str):
        key = act_layer.lower()
        if key not in _ACTIVATIONS:
            raise SciMLInputError(
                "act_layer", f"unknown activation name {act_layer!r}; use one of {sorted(_ACTIVATIONS)}"
            )
        return _ACTIVATIONS[key]()
    if callable(act_layer):
        module = act_layer()
        if not isinstance(module, nn.Module):
            raise SciMLInputError("act_layer", f"must build an nn.Module, got {type(module).__name__}")
        return module
    raise SciMLInputError("act_layer", f"must be a module class, a module, a name or None, got {act_layer!r}")


# ----------------------------------------------------------------------------------------------------------------
# statistics (float32 for half inputs, cast back to the input dtype)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _channel(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).view(1, -1, 1, 1)


def _group_stat(x: torch.Tensor, groups: int, eps: float, *, centered: bool) -> torch.Tensor:
    r"""Per-(sample, group) :math:`\sqrt{s^2+\epsilon}` (``centered``) or :math:`\sqrt{\mu^2+\epsilon}`: (N, C, 1, 1).

    Splitting the channel axis with ``unflatten`` is a view for every memory format, so channels-last input is
    reduced in place, without the copy a ``reshape`` would make.
    """
    n, c = x.shape[0], x.shape[1]
    grouped = x.to(_stat_dtype(x)).unflatten(1, (groups, c // groups))
    if centered:
        stat = grouped.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
    else:
        stat = grouped.square().mean(dim=(2, 3, 4), keepdim=True)
    std = stat.add(eps).sqrt().to(x.dtype)
    return std.expand(n, groups, c // groups, 1, 1).reshape(n, c, 1, 1)


def _instance_std(x: torch.Tensor, eps: float) -> torch.Tensor:
    var = x.to(_stat_dtype(x)).var(dim=(2, 3), unbiased=False, keepdim=True)
    return var.add(eps).sqrt().to(x.dtype)


def _instance_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    second = x.to(_stat_dtype(x)).square().mean(dim=(2, 3), keepdim=True)
    return second.add(eps).sqrt().to(x.dtype)


def _batch_std(
    x: torch.Tensor, running_var: torch.Tensor, *, training: bool, momentum: float, eps: float, bessel: bool
) -> torch.Tensor:
    r""":math:`\\sqrt{s^2_{N,H,W}+\\epsilon}` as (1, C, 1, 1) in x's dtype; updates ``running_var`` in training."""
    if training:
        var = x.to(_stat_dtype(x)).var(dim=(0, 2, 3), unbiased=False)
        n = x.numel() // x.shape[1]
        correction = n / (n - 1) if bessel else 1.0
        with torch.no_grad():
            updated = running_var * (1.0 - momentum) + var.detach().to(running_var.dtype) * (momentum * correction)
            running_var.copy_(updated)
    else:
        var = running_var.to(_stat_dtype(x))
    return var.add(eps).sqrt().to(x.dtype).view(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# layers


class _EvoNorm2dBase(nn.Module):
    """Shared parameters (``weight``, ``bias``, optional ``v``), the final affine map and input validation."""

    num_features: int
    apply_act: bool
    eps: float

    def __init__(
        self,
        num_features: int,
        apply_act: bool,
        eps: float,
        *,
        with_v: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.apply_act = _check_bool("apply_act", apply_act)
        self.eps = _check_eps(eps)
        if dtype is not None and not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating-point dtype, got {dtype}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_features, **factory))
        self.bias = nn.Parameter(torch.empty(num_features, **factory))
        if with_v and apply_act:
            self.v = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("v", None)

    def reset_parameters(self) -> None:
        """Reset ``weight`` to ones, ``bias`` to zeros and ``v`` (if any) to ones, as timm and the paper do."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return _check_input(x, self.num_features, self.weight.device)

    def _affine(self, z: torch.Tensor) -> torch.Tensor:
        return z * _channel(self.weight, z.dtype) + _channel(self.bias, z.dtype)


class _EvoNorm2dBatch(_EvoNorm2dBase):
    """B-series: ``running_var`` buffer, ``momentum`` and the ``bessel`` running-variance convention."""

    momentum: float
    bessel: bool
    running_var: torch.Tensor

    def __init__(
        self,
        num_features: int,
        apply_act: bool,
        momentum: float,
        eps: float,
        *,
        with_v: bool,
        bessel: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__(num_features, apply_act, eps, with_v=with_v, device=device, dtype=dtype)
        self.momentum = _check_momentum(momentum)
        self.bessel = _check_bool("bessel", bessel)
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Reset ``running_var`` to ones (its initial value; timm's ``reset_parameters`` leaves it alone)."""
        nn.init.ones_(self.running_var)

    def _check_batch(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        if self.training and self.apply_act and self.bessel and x.numel() // x.shape[1] < 2:
            raise SciMLInputError(
                "x",
                f"needs more than one value per channel (N*H*W > 1) in training mode for the n/(n-1) running-variance "
                f"correction (bessel=True), got shape {tuple(x.shape)}",
            )
        return x

    def _batch_std(self, x: torch.Tensor) -> torch.Tensor:
        return _batch_std(
            x, self.running_var, training=self.training, momentum=self.momentum, eps=self.eps, bessel=self.bessel
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, apply_act={self.apply_act}, momentum={self.momentum}, eps={self.eps}, "
            f"bessel={self.bessel}"
        )


class EvoNorm2dB0(_EvoNorm2dBatch):
    r"""EvoNorm-B0: batch-dependent normalization-activation with a learnable instance branch.

    .. math::
        y = \gamma\odot\frac{x}{\max\big(\sqrt{s^2_{N,H,W}(x)+\epsilon},\; v\odot x + \sqrt{s^2_{H,W}(x)+\epsilon}\big)}
            + \beta,

    with the batch variance :math:`s^2_{N,H,W}` in training and ``running_var`` in evaluation. The running variance
    is updated in training as :math:`r \leftarrow (1-m)\,r + m\,c\,s^2_{N,H,W}`, :math:`c = n/(n-1)` and
    :math:`n = NHW` when ``bessel`` (timm) or :math:`c = 1` (TensorFlow reference). With ``apply_act=False`` the
    layer is affine only, :math:`y = \gamma\odot x + \beta`, has no ``v`` and never touches ``running_var``
    (timm's behaviour and the paper's ``nonlinearity=False``).

    Parameters ``weight`` (:math:`\gamma`, ones), ``bias`` (:math:`\beta`, zeros), ``v`` (ones), buffer
    ``running_var`` (ones): timm's names and initial values, so state dicts load either way. The forward calls
    :func:`sciml_norm.evonorm_b0` (a fused Triton kernel on CUDA, the PyTorch reference elsewhere).

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        apply_act: use the normalization-activation; False gives the affine map only.
        momentum: running-variance momentum :math:`m \in [0, 1]` (PyTorch convention; TensorFlow's decay is
            :math:`1-m`).
        eps: :math:`\epsilon > 0` (timm's default 1e-3 for B0).
        device: device of parameters and buffer.
        dtype: floating dtype of parameters and buffer.
        bessel: unbiased (:math:`n/(n-1)`, timm) or biased (TensorFlow) batch variance in the running update.
        fused: None uses the Triton kernel for CUDA input when Triton is available, True requires it, False always
            runs the eager PyTorch reference.

    Raises:
        SciMLInputError: bad ``num_features``, ``eps``, ``momentum``, ``fused``; in the forward, input that is not
            4-D, has the wrong channel count, is empty, not floating point or on another device.

    Example:
        >>> layer = EvoNorm2dB0(4).eval()
        >>> x = torch.ones(2, 4, 3, 3)
        >>> layer(x).shape
        torch.Size([2, 4, 3, 3])
        >>> round(layer(x)[0, 0, 0, 0].item(), 4)  # 1 / max(sqrt(1 + 1e-3), 1 * 1 + sqrt(0 + 1e-3))
        0.9694
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bessel: bool = True,
        fused: bool | None = None,
    ) -> None:
        super().__init__(num_features, apply_act, momentum, eps, with_v=True, bessel=bessel, device=device, dtype=dtype)
        _check_positive_eps(self.eps)
        self.fused = _check_fused(fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Args:
            x: input of shape (N, C, H, W), any memory format (channels-last stays channels-last).

        Returns:
            Tensor of x's shape and dtype.
        """
        x = self._check_batch(x)
        return evonorm_b0(
            x,
            self.weight,
            self.bias,
            self.v,
            self.running_var,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
            apply_act=self.apply_act,
            bessel=self.bessel,
            backend=_backend(self.fused),
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fused={self.fused}"


class EvoNorm2dB1(_EvoNorm2dBatch):
    r"""EvoNorm-B1: batch variance against an instance second moment scaled by :math:`x + 1`.

    .. math::
        y = \gamma\odot\frac{x}
            {\max\big(\sqrt{s^2_{N,H,W}(x)+\epsilon},\; (x+1)\odot\sqrt{\mu^2_{H,W}(x)+\epsilon}\big)} + \beta

    (no ``v``). Running variance and evaluation as in :class:`EvoNorm2dB0`; ``apply_act=False`` is affine only.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        apply_act: use the normalization-activation; False gives the affine map only.
        momentum: running-variance momentum in [0, 1].
        eps: :math:`\epsilon \ge 0` (default 1e-5).
        device: device of parameters and buffer.
        dtype: floating dtype of parameters and buffer.
        bessel: unbiased (timm) or biased (TensorFlow) batch variance in the running update.

    Raises:
        SciMLInputError: as :class:`EvoNorm2dB0`.

    Example:
        >>> layer = EvoNorm2dB1(4).eval()
        >>> layer(torch.zeros(1, 4, 2, 2)).abs().max().item()
        0.0
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bessel: bool = True,
    ) -> None:
        super().__init__(
            num_features, apply_act, momentum, eps, with_v=False, bessel=bessel, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check_batch(x)
        if self.apply_act:
            x = x / torch.maximum(self._batch_std(x), (x + 1) * _instance_rms(x, self.eps))
        return self._affine(x)


class EvoNorm2dB2(_EvoNorm2dBatch):
    r"""EvoNorm-B2: batch variance against instance RMS minus :math:`x`.

    .. math::
        y = \gamma\odot\frac{x}{\max\big(\sqrt{s^2_{N,H,W}(x)+\epsilon},\; \sqrt{\mu^2_{H,W}(x)+\epsilon} - x\big)}
            + \beta

    (no ``v``). Running variance and evaluation as in :class:`EvoNorm2dB0`; ``apply_act=False`` is affine only.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        apply_act: use the normalization-activation; False gives the affine map only.
        momentum: running-variance momentum in [0, 1].
        eps: :math:`\epsilon \ge 0` (default 1e-5).
        device: device of parameters and buffer.
        dtype: floating dtype of parameters and buffer.
        bessel: unbiased (timm) or biased (TensorFlow) batch variance in the running update.

    Raises:
        SciMLInputError: as :class:`EvoNorm2dB0`.

    Example:
        >>> layer = EvoNorm2dB2(4)
        >>> layer(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bessel: bool = True,
    ) -> None:
        super().__init__(
            num_features, apply_act, momentum, eps, with_v=False, bessel=bessel, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check_batch(x)
        if self.apply_act:
            x = x / torch.maximum(self._batch_std(x), _instance_rms(x, self.eps) - x)
        return self._affine(x)


class _EvoNorm2dGroup(_EvoNorm2dBase):
    """S-series: the group count (``groups`` or ``group_size``, timm's rule, or TensorFlow's with 'decrement')."""

    groups: int

    def __init__(
        self,
        num_features: int,
        groups: int,
        group_size: int | None,
        apply_act: bool,
        eps: float,
        *,
        with_v: bool,
        groups_mode: GroupsMode,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__(num_features, apply_act, eps, with_v=with_v, device=device, dtype=dtype)
        self.groups = _resolve_groups(self.num_features, groups, group_size, groups_mode)

    def _group_std(self, x: torch.Tensor) -> torch.Tensor:
        return _group_stat(x, self.groups, self.eps, centered=True)

    def _group_rms(self, x: torch.Tensor) -> torch.Tensor:
        return _group_stat(x, self.groups, self.eps, centered=False)

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, apply_act={self.apply_act}, eps={self.eps}"


class EvoNorm2dS0(_EvoNorm2dGroup):
    r"""EvoNorm-S0: a SiLU with learnable slope divided by the group standard deviation (batch independent).

    .. math::
        y = \gamma\odot\frac{x\,\sigma(v\odot x)}{\sqrt{s^2_{H,W,C/G}(x)+\epsilon}} + \beta,

    with the group variance taken from the input (before the activation). ``apply_act=False`` is affine only,
    :math:`y = \gamma\odot x + \beta`, and has no ``v``. The group count is ``num_features // group_size`` when
    ``group_size`` is given, else ``groups``; it must divide ``num_features`` (timm asserts it; here it raises
    :class:`~sciml_protocols.SciMLInputError`), or, with ``groups_mode="decrement"``, is lowered until it does, as the
    TensorFlow reference does. The forward calls :func:`sciml_norm.evonorm_s0`.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: use the normalization-activation; False gives the affine map only.
        eps: :math:`\epsilon > 0` (default 1e-5).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` (the group count must divide ``num_features``) or ``"decrement"``.
        fused: None uses the Triton kernel for CUDA input when Triton is available, True requires it, False always
            runs the eager PyTorch reference.

    Raises:
        SciMLInputError: bad ``num_features``, ``groups``, ``group_size``, ``eps``, ``groups_mode``, ``fused``; in
            the forward, input that is not 4-D, has the wrong channel count, is empty, not floating point or on
            another device.

    Example:
        >>> layer = EvoNorm2dS0(8, groups=2)
        >>> layer(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
        >>> EvoNorm2dS0(48, group_size=16).groups, EvoNorm2dS0(48, groups_mode="decrement").groups
        (3, 24)
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            num_features,
            groups,
            group_size,
            apply_act,
            eps,
            with_v=True,
            groups_mode=groups_mode,
            device=device,
            dtype=dtype,
        )
        if type(self) is EvoNorm2dS0:
            _check_positive_eps(self.eps)
        self.fused = _check_fused(fused)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Args:
            x: input of shape (N, C, H, W), any memory format (channels-last stays channels-last).

        Returns:
            Tensor of x's shape and dtype.
        """
        x = self._check(x)
        return evonorm_s0(
            x,
            self.weight,
            self.bias,
            self.v,
            groups=self.groups,
            eps=self.eps,
            apply_act=self.apply_act,
            backend=_backend(self.fused),
        )


class EvoNorm2dS0a(EvoNorm2dS0):
    r"""EvoNorm-S0a: EvoNorm-S0 whose group-std division stays when the activation is off.

    .. math::
        y = \gamma\odot\frac{x\,\sigma(v\odot x)}{\sqrt{s^2_{H,W,C/G}(x)+\epsilon}} + \beta
        \quad\text{(apply\_act)}, \qquad
        y = \gamma\odot\frac{x}{\sqrt{s^2_{H,W,C/G}(x)+\epsilon}} + \beta \quad\text{(otherwise)},

    the latter being group normalization without centring. Default ``eps`` is 1e-3 (timm). Always eager.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: include :math:`\sigma(v\odot x)`.
        eps: :math:`\epsilon \ge 0` (default 1e-3).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` or ``"decrement"`` (see :class:`EvoNorm2dS0`).

    Raises:
        SciMLInputError: as :class:`EvoNorm2dS0`.

    Example:
        >>> layer = EvoNorm2dS0a(4, groups=1, apply_act=False, eps=0.0)
        >>> layer(torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1, 1)).flatten().tolist()
        [1.0, -1.0, 1.0, -1.0]
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
    ) -> None:
        super().__init__(
            num_features,
            groups=groups,
            group_size=group_size,
            apply_act=apply_act,
            eps=eps,
            device=device,
            dtype=dtype,
            groups_mode=groups_mode,
            fused=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check(x)
        std = self._group_std(x)
        if self.v is not None:
            x = x * torch.sigmoid(x * _channel(self.v, x.dtype))
        return self._affine(x / std)

    def extra_repr(self) -> str:
        return _EvoNorm2dGroup.extra_repr(self)


class EvoNorm2dS1(_EvoNorm2dGroup):
    r"""EvoNorm-S1: an activation (SiLU by default) divided by the group standard deviation.

    .. math::
        y = \gamma\odot\frac{\mathrm{act}(x)}{\sqrt{s^2_{H,W,C/G}(x)+\epsilon}} + \beta,
        \qquad \mathrm{act}(x) = x\,\sigma(x),

    and :math:`y = \gamma\odot x + \beta` with ``apply_act=False``. Submodule ``act`` holds the activation
    (``nn.Identity`` when ``apply_act=False``), as in timm.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: use the normalization-activation; False gives the affine map only.
        act_layer: activation: a module class (called with no argument), a factory, a module instance, a name
            (``"silu"``, ``"relu"``, ``"gelu"``, ...) or None for ``nn.SiLU``.
        eps: :math:`\epsilon \ge 0` (default 1e-5).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` or ``"decrement"`` (see :class:`EvoNorm2dS0`).

    Raises:
        SciMLInputError: as :class:`EvoNorm2dS0`, and an unusable ``act_layer``.

    Example:
        >>> EvoNorm2dS1(8, groups=4)(torch.randn(1, 8, 2, 2)).shape
        torch.Size([1, 8, 2, 2])
    """

    pre_act_norm: bool

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        act_layer: ActLayer = None,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
    ) -> None:
        super().__init__(
            num_features,
            groups,
            group_size,
            apply_act,
            eps,
            with_v=False,
            groups_mode=groups_mode,
            device=device,
            dtype=dtype,
        )
        self.act = _make_act(act_layer) if self.apply_act else nn.Identity()
        self.pre_act_norm = False
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check(x)
        if self.apply_act:
            x = self.act(x) / self._group_std(x)
        return self._affine(x)


class EvoNorm2dS1a(EvoNorm2dS1):
    r"""EvoNorm-S1a: EvoNorm-S1 that divides by the group standard deviation even without activation.

    .. math::
        y = \gamma\odot\frac{\mathrm{act}(x)}{\sqrt{s^2_{H,W,C/G}(x)+\epsilon}} + \beta,

    with :math:`\mathrm{act}` the identity when ``apply_act=False``. Default ``eps`` is 1e-3.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: apply ``act``; the division by the group std happens either way.
        act_layer: activation (see :class:`EvoNorm2dS1`).
        eps: :math:`\epsilon \ge 0` (default 1e-3).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` or ``"decrement"`` (see :class:`EvoNorm2dS0`).

    Raises:
        SciMLInputError: as :class:`EvoNorm2dS1`.

    Example:
        >>> EvoNorm2dS1a(8, group_size=4)(torch.randn(1, 8, 2, 2)).shape
        torch.Size([1, 8, 2, 2])
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        act_layer: ActLayer = None,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
    ) -> None:
        super().__init__(
            num_features,
            groups=groups,
            group_size=group_size,
            apply_act=apply_act,
            act_layer=act_layer,
            eps=eps,
            device=device,
            dtype=dtype,
            groups_mode=groups_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check(x)
        return self._affine(self.act(x) / self._group_std(x))


class EvoNorm2dS2(_EvoNorm2dGroup):
    r"""EvoNorm-S2: an activation (SiLU by default) divided by the group root mean square.

    .. math::
        y = \gamma\odot\frac{\mathrm{act}(x)}{\sqrt{\mu^2_{H,W,C/G}(x)+\epsilon}} + \beta,

    and :math:`y = \gamma\odot x + \beta` with ``apply_act=False``. With :math:`\epsilon = 0` and a positively
    homogeneous activation the normalized part is invariant to scaling :math:`x \to \alpha x`, :math:`\alpha > 0`.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: use the normalization-activation; False gives the affine map only.
        act_layer: activation (see :class:`EvoNorm2dS1`).
        eps: :math:`\epsilon \ge 0` (default 1e-5).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` or ``"decrement"`` (see :class:`EvoNorm2dS0`).

    Raises:
        SciMLInputError: as :class:`EvoNorm2dS1`.

    Example:
        >>> layer = EvoNorm2dS2(2, groups=1, act_layer="relu", eps=0.0)
        >>> layer(torch.tensor([3.0, -4.0]).view(1, 2, 1, 1)).flatten().tolist()  # relu(x) / sqrt((9 + 16) / 2)
        [0.848528..., 0.0]
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        act_layer: ActLayer = None,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
    ) -> None:
        super().__init__(
            num_features,
            groups,
            group_size,
            apply_act,
            eps,
            with_v=False,
            groups_mode=groups_mode,
            device=device,
            dtype=dtype,
        )
        self.act = _make_act(act_layer) if self.apply_act else nn.Identity()
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check(x)
        if self.apply_act:
            x = self.act(x) / self._group_rms(x)
        return self._affine(x)


class EvoNorm2dS2a(EvoNorm2dS2):
    r"""EvoNorm-S2a: EvoNorm-S2 that divides by the group RMS even without activation.

    .. math::
        y = \gamma\odot\frac{\mathrm{act}(x)}{\sqrt{\mu^2_{H,W,C/G}(x)+\epsilon}} + \beta,

    with :math:`\mathrm{act}` the identity when ``apply_act=False``. Default ``eps`` is 1e-3.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        num_features: channel count :math:`C`.
        groups: group count :math:`G` (default 32).
        group_size: channels per group; overrides ``groups`` when given.
        apply_act: apply ``act``; the division by the group RMS happens either way.
        act_layer: activation (see :class:`EvoNorm2dS1`).
        eps: :math:`\epsilon \ge 0` (default 1e-3).
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        groups_mode: ``"strict"`` or ``"decrement"`` (see :class:`EvoNorm2dS0`).

    Raises:
        SciMLInputError: as :class:`EvoNorm2dS1`.

    Example:
        >>> EvoNorm2dS2a(8, groups=8, apply_act=False)(torch.randn(1, 8, 2, 2)).shape
        torch.Size([1, 8, 2, 2])
    """

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        act_layer: ActLayer = None,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        groups_mode: GroupsMode = "strict",
    ) -> None:
        super().__init__(
            num_features,
            groups=groups,
            group_size=group_size,
            apply_act=apply_act,
            act_layer=act_layer,
            eps=eps,
            device=device,
            dtype=dtype,
            groups_mode=groups_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (N, C, H, W); returns a tensor of the same shape and dtype."""
        x = self._check(x)
        return self._affine(self.act(x) / self._group_rms(x))


def _backend(fused: bool | None) -> str:
    return "auto" if fused is None else ("triton" if fused else "torch")


# ----------------------------------------------------------------------------------------------------------------
# converting BatchNorm/GroupNorm (+ ReLU) in existing models

_LAYERS: dict[str, type[nn.Module]] = {
    "B0": EvoNorm2dB0,
    "B1": EvoNorm2dB1,
    "B2": EvoNorm2dB2,
    "S0": EvoNorm2dS0,
    "S0a": EvoNorm2dS0a,
    "S1": EvoNorm2dS1,
    "S1a": EvoNorm2dS1a,
    "S2": EvoNorm2dS2,
    "S2a": EvoNorm2dS2a,
}

_NormLayer = nn.BatchNorm2d | nn.GroupNorm


@dataclass(frozen=True)
class NormActConversion:
    """One normalization layer seen by :func:`convert_norm_act`.

    Attributes:
        path: qualified name of the normalization layer in the model (``"layer1.0.bn1"``).
        original: class name of the layer found (``"BatchNorm2d"`` or ``"GroupNorm"``).
        replacement: class name of the EvoNorm put in its place, or None when it was left alone.
        apply_act: whether the EvoNorm was built with ``apply_act=True`` (a following ReLU was absorbed).
        activation: qualified name of the ``nn.ReLU`` replaced by ``nn.Identity``, ``"<functional relu>"`` for a
            removed ``F.relu``/``torch.relu`` call, or None.
        how: ``"sequential"`` (consecutive children of an ``nn.Sequential``), ``"traced"`` (found with torch.fx in
            the parent's forward; modules replaced in place), ``"traced-graph"`` (the parent was replaced by a
            ``torch.fx.GraphModule`` without the ReLU call, because the ReLU is shared or functional), or
            ``"skipped: <reason>"``.
    """

    path: str
    original: str
    replacement: str | None
    apply_act: bool
    activation: str | None
    how: str


def _resolve_layer(layer: object) -> type[nn.Module]:
    if isinstance(layer, str):
        if layer not in _LAYERS:
            raise SciMLInputError("layer", f"must be one of {', '.join(map(repr, _LAYERS))} or a class, got {layer!r}")
        return _LAYERS[layer]
    if isinstance(layer, type) and issubclass(layer, nn.Module):
        return layer
    raise SciMLInputError("layer", f"must be a layer name or an nn.Module subclass, got {layer!r}")


def _build_evonorm(layer_cls: type[nn.Module], norm: _NormLayer, apply_act: bool, kwargs: dict[str, Any]) -> nn.Module:
    kw = dict(kwargs)
    if isinstance(norm, nn.GroupNorm):
        channels = norm.num_channels
        group_layer = isinstance(layer_cls, type) and issubclass(layer_cls, _EvoNorm2dGroup)
        if group_layer and "groups" not in kw and "group_size" not in kw:
            kw["groups"] = norm.num_groups  # keep the GroupNorm's grouping unless told otherwise
    else:
        channels = norm.num_features
    reference = norm.weight if norm.weight is not None else getattr(norm, "running_var", None)
    if isinstance(reference, torch.Tensor):
        kw.setdefault("device", reference.device)
        kw.setdefault("dtype", reference.dtype)
    new = layer_cls(channels, apply_act=apply_act, **kw)
    with torch.no_grad():
        weight, bias = getattr(new, "weight", None), getattr(new, "bias", None)
        if norm.weight is not None and isinstance(weight, torch.Tensor):
            weight.copy_(norm.weight)
        if norm.bias is not None and isinstance(bias, torch.Tensor):
            bias.copy_(norm.bias)
        running = getattr(new, "running_var", None)
        norm_running = getattr(norm, "running_var", None)
        if isinstance(running, torch.Tensor) and isinstance(norm_running, torch.Tensor):
            running.copy_(norm_running)
    new.train(norm.training)
    return new


def _is_relu_call(node: Any, module: nn.Module) -> str | None:
    """'module:<name>' / 'functional' when the fx node applies a ReLU, else None."""
    import torch.nn.functional as F

    if node.op == "call_module":
        target = module.get_submodule(node.target)
        return f"module:{node.target}" if isinstance(target, nn.ReLU) else None
    if node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_, F.relu_):
        return "functional"
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "functional"
    return None


def _trace_shallow(module: nn.Module) -> Any:
    """torch.fx graph of ``module.forward`` with every submodule kept as a leaf call (None if untraceable)."""
    import warnings

    import torch.fx

    class _ShallowTracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
            return True

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _ShallowTracer().trace(module)
    except Exception:
        return None


def _convert_children(
    module: nn.Module,
    prefix: str,
    parent: nn.Module | None,
    attr: str,
    layer_cls: type[nn.Module],
    kwargs: dict[str, Any],
    records: list[NormActConversion],
) -> None:
    names = [n for n, m in module.named_children() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)]
    if names and isinstance(module, nn.Sequential):
        _convert_sequential(module, prefix, layer_cls, kwargs, records)
    elif names:
        module = _convert_traced(module, names, prefix, parent, attr, layer_cls, kwargs, records)
    for name, child in list(module.named_children()):
        _convert_children(child, f"{prefix}{name}.", module, name, layer_cls, kwargs, records)


def _convert_sequential(
    module: nn.Sequential,
    prefix: str,
    layer_cls: type[nn.Module],
    kwargs: dict[str, Any],
    records: list[NormActConversion],
) -> None:
    names = list(module._modules)
    i = 0
    while i < len(names):
        child = module._modules[names[i]]
        if isinstance(child, nn.BatchNorm2d | nn.GroupNorm):
            nxt = module._modules[names[i + 1]] if i + 1 < len(names) else None
            with_act = isinstance(nxt, nn.ReLU)
            new = _build_evonorm(layer_cls, child, with_act, kwargs)
            module._modules[names[i]] = new
            activation = None
            if with_act:
                module._modules[names[i + 1]] = nn.Identity()
                activation = prefix + names[i + 1]
                i += 1
            records.append(
                NormActConversion(
                    prefix + names[i - with_act],
                    type(child).__name__,
                    type(new).__name__,
                    with_act,
                    activation,
                    "sequential",
                )
            )
        i += 1


def _convert_traced(
    module: nn.Module,
    names: list[str],
    prefix: str,
    parent: nn.Module | None,
    attr: str,
    layer_cls: type[nn.Module],
    kwargs: dict[str, Any],
    records: list[NormActConversion],
) -> nn.Module:
    graph = _trace_shallow(module)

    def skip(name: str, reason: str) -> None:
        norm = module.get_submodule(name)
        records.append(NormActConversion(prefix + name, type(norm).__name__, None, False, None, f"skipped: {reason}"))

    if graph is None:
        for name in names:
            skip(name, f"the forward of {type(module).__name__} cannot be traced by torch.fx")
        return module
    calls: dict[str, list[Any]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    plan: list[tuple[str, bool, Any]] = []  # (norm name, absorb activation, activation node or None)
    for name in names:
        nodes = calls.get(name, [])
        if len(nodes) != 1:
            skip(name, "not called in forward" if not nodes else "called more than once in forward")
            continue
        users = list(nodes[0].users)
        kind = _is_relu_call(users[0], module) if len(users) == 1 else None
        plan.append((name, kind is not None, users[0] if kind is not None else None))

    needs_graph = False
    for _, absorb, act_node in plan:
        if absorb and act_node.op == "call_module" and len(calls[act_node.target]) == 1:
            continue
        needs_graph = needs_graph or absorb
    if needs_graph and parent is None:
        # The root cannot be swapped for a GraphModule in place: convert only what needs no graph change.
        kept: list[tuple[str, bool, Any]] = []
        for name, absorb, act_node in plan:
            if absorb and not (act_node.op == "call_module" and len(calls[act_node.target]) == 1):
                skip(name, "its ReLU is shared or functional in the root module's forward")
            else:
                kept.append((name, absorb, act_node))
        plan, needs_graph = kept, False

    target = module
    if needs_graph:
        import torch.fx

        for _, absorb, act_node in plan:
            if absorb and not (act_node.op == "call_module" and len(calls[act_node.target]) == 1):
                act_node.replace_all_uses_with(act_node.args[0])
                graph.erase_node(act_node)
        graph_module = torch.fx.GraphModule(module, graph, class_name=type(module).__name__)
        # GraphModule keeps only what the graph uses; keep every child, parameter and buffer so state dicts match.
        for child_name, child in module.named_children():
            if not hasattr(graph_module, child_name):
                graph_module.add_module(child_name, child)
        for p_name, param in module.named_parameters(recurse=False):
            if p_name not in graph_module._parameters:
                graph_module.register_parameter(p_name, param)
        for b_name, buffer in module.named_buffers(recurse=False):
            if b_name not in graph_module._buffers:
                graph_module.register_buffer(b_name, buffer)
        graph_module.train(module.training)
        assert parent is not None
        setattr(parent, attr, graph_module)
        target = graph_module

    for name, absorb, act_node in plan:
        norm = cast(_NormLayer, module.get_submodule(name))
        new = _build_evonorm(layer_cls, norm, absorb, kwargs)
        setattr(target, name, new)
        activation: str | None = None
        how = "traced"
        if absorb and act_node.op == "call_module" and len(calls[act_node.target]) == 1:
            setattr(target, act_node.target, nn.Identity())
            activation = prefix + act_node.target
        elif absorb:
            how = "traced-graph"
            activation = prefix + act_node.target if act_node.op == "call_module" else "<functional relu>"
        records.append(
            NormActConversion(prefix + name, type(norm).__name__, type(new).__name__, absorb, activation, how)
        )
    return target


def convert_norm_act(
    model: nn.Module,
    layer: str | type[nn.Module] = "S0",
    *,
    report: list[NormActConversion] | None = None,
    **kwargs: Any,
) -> nn.Module:
    r"""Replace BatchNorm2d/GroupNorm (+ ReLU) in an existing model by an EvoNorm, in place.

    What is detected, in every module of the tree:

    * in an ``nn.Sequential``, a ``BatchNorm2d`` or ``GroupNorm`` child immediately followed by an ``nn.ReLU``
      child: the norm becomes the EvoNorm with ``apply_act=True`` and the ReLU becomes ``nn.Identity`` (indices and
      state-dict keys of the other children stay as they were); a norm child not followed by an ``nn.ReLU`` becomes
      the EvoNorm with ``apply_act=False``;
    * in any other module with norm children, its own ``forward`` is traced with ``torch.fx`` (submodules as
      leaves). A norm called exactly once whose output has a single user that is a ReLU (an ``nn.ReLU`` child,
      ``F.relu``, ``torch.relu`` or ``.relu()``) is absorbed: if that ``nn.ReLU`` child is called only there it is
      replaced by ``nn.Identity`` in place ("traced"); if the ReLU is shared with other calls (torchvision's
      ``BasicBlock.relu``) or functional, the module is replaced in its parent by a ``torch.fx.GraphModule`` of the
      same class name, submodules and state-dict keys without that one ReLU call ("traced-graph"). Any other norm
      call gets ``apply_act=False``. Norms of a forward that fx cannot trace, norms called zero or several times,
      and pairs that would need a graph change in the root module itself are left alone and reported as skipped.

    The EvoNorm gets the norm's channel count, device and dtype, a copy of its affine ``weight``/``bias`` (when it
    has them) and, for the B-series, of a BatchNorm's ``running_var``; a GroupNorm converted to an S-layer keeps its
    ``num_groups`` unless ``groups``/``group_size`` is passed. ``GroupNorm`` is assumed to act on (N, C, H, W)
    maps; ``BatchNorm1d/3d``, ``SyncBatchNorm`` and other activations are not touched.

    Reference:
        H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967.

    Args:
        model: any module tree; modified in place.
        layer: ``"B0"``, ``"B1"``, ``"B2"``, ``"S0"``, ``"S0a"``, ``"S1"``, ``"S1a"``, ``"S2"``, ``"S2a"`` or a class
            taking ``(num_features, apply_act=..., **kwargs)``.
        report: if given, a list that receives one :class:`NormActConversion` per normalization layer found.
        **kwargs: further constructor arguments of the EvoNorm (``groups``, ``group_size``, ``eps``,
            ``groups_mode``, ``fused``, ...).

    Returns:
        ``model`` itself.

    Raises:
        SciMLInputError: ``model`` is not an ``nn.Module`` or ``layer`` is unknown; the EvoNorm constructor's
            errors (e.g. ``groups`` not dividing a layer's channels) propagate; layers converted before such an
            error stay converted.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
        >>> changes = []
        >>> net = convert_norm_act(net, "S0", groups=4, report=changes)
        >>> [type(m).__name__ for m in net]
        ['Conv2d', 'EvoNorm2dS0', 'Identity', 'Conv2d', 'EvoNorm2dS0']
        >>> [(c.path, c.apply_act) for c in changes]
        [('1', True), ('4', False)]
    """
    if not isinstance(model, nn.Module):
        raise SciMLInputError("model", f"must be an nn.Module, got {type(model).__name__}")
    layer_cls = _resolve_layer(layer)
    records: list[NormActConversion] = []
    _convert_children(model, "", None, "", layer_cls, kwargs, records)
    if report is not None:
        report.extend(records)
    return model
