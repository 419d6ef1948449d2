r"""Self-Tuning Networks: online hyperparameter tuning through a structured best-response approximation.

Hyperparameter optimisation is the bilevel problem

.. math::

    \min_\lambda\; L_V\bigl(\lambda, w^\star(\lambda)\bigr), \qquad
    w^\star(\lambda) = \arg\min_w L_T(\lambda, w).

A Self-Tuning Network (STN) replaces :math:`w^\star(\lambda)` by a cheap parametric best response
:math:`\hat w_\phi(\lambda)` built into the network itself: every layer gates a second set of hidden units on the
hyperparameters,

.. math::

    y = W_{\text{elem}} x + b_{\text{elem}} + (V\hat\lambda) \odot (W_{\text{hyper}} x) + (C\hat\lambda) \odot
    b_{\text{hyper}},

where :math:`\hat\lambda` is a normalised representation of the hyperparameters (:class:`STNLinear`,
:class:`STNConv2d`). Training alternates

1. :math:`T_{\text{train}}` steps on the weights :math:`\phi`, minimising
   :math:`\mathbb{E}_{\epsilon \sim \mathcal N(0, \operatorname{softplus}(\sigma)^2)}
   L_T(\lambda + \epsilon, \hat w_\phi(\lambda + \epsilon))` with one perturbation per example, so that
   :math:`\hat w_\phi` fits the best response in a neighbourhood of the current :math:`\lambda`;
2. :math:`T_{\text{val}}` steps on :math:`(\lambda, \sigma)`, minimising
   :math:`\mathbb{E}_\epsilon L_V(\hat w_\phi(\lambda + \epsilon)) - \tau\, H[p(\epsilon \mid \sigma)]`, with the
   regularisers (dropout, augmentation) switched off, so the hyperparameters receive gradient only through the
   best response. This is why STNs can tune dropout rates and discrete hyperparameters, which implicit or unrolled
   hypergradients cannot.

Because :math:`\lambda` moves during training, the result is a hyperparameter *schedule* (:attr:`STNTrainer.history`,
:meth:`STNTrainer.plot_schedule`).

References:
    - M. MacKay, P. Vicol, J. Lorraine, D. Duvenaud, R. Grosse, "Self-Tuning Networks: Bilevel Optimization of
      Hyperparameters using Structured Best-Response Functions", ICLR 2019, arXiv:1903.03088.
    - J. Bae, R. Grosse, "Delta-STN: Efficient Bilevel Optimization for Neural Networks using Structured Response
      Jacobians", NeurIPS 2020 (a later, less biased variant; not implemented here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from sciml_protocols import SciMLInputError
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Hyperparameter",
    "HyperparameterBatch",
    "HyperparameterSpace",
    "STNConv2d",
    "STNLinear",
    "STNTrainer",
    "hyper_dropout",
]

Batch = Any
LossFn = Callable[[nn.Module, Batch, "HyperparameterBatch"], torch.Tensor]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SciMLInputError(name, f"must be an int, got {type(value).__name__}")
    if value < minimum:
        raise SciMLInputError(name, f"must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: object, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise SciMLInputError(name, f"must be finite, got {value}")
    if positive and value <= 0.0:
        raise SciMLInputError(name, f"must be positive, got {value}")
    if nonnegative and value < 0.0:
        raise SciMLInputError(name, f"must be non-negative, got {value}")
    return value


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    # log(exp(y) - 1) = y + log(1 - exp(-y)), stable for large y
    return y + torch.log(-torch.expm1(-y))


def _check_hnet(hnet: torch.Tensor, batch: int, num_hyper: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(hnet, torch.Tensor):
        raise SciMLInputError("hnet_tensor", f"must be a torch.Tensor, got {type(hnet).__name__}")
    if hnet.dim() == 1:
        hnet = hnet.unsqueeze(0).expand(batch, -1)
    if hnet.dim() != 2 or hnet.shape[1] != num_hyper or hnet.shape[0] != batch:
        raise SciMLInputError(
            "hnet_tensor", f"expected shape ({batch}, {num_hyper}) or ({num_hyper},), got {tuple(hnet.shape)}"
        )
    if hnet.device != like.device:
        raise SciMLInputError("hnet_tensor", f"is on {hnet.device}, the input on {like.device}")
    return hnet


# --------------------------------------------------------------------------------------------------------------
# Best-response layers
# --------------------------------------------------------------------------------------------------------------


class STNLinear(nn.Module):
    r"""Linear layer whose output units are gated on the hyperparameters (STN best-response layer).

    .. math::

        y = W_{\text{elem}} x + b_{\text{elem}} + (V\hat\lambda) \odot (W_{\text{hyper}} x)
        + (C\hat\lambda) \odot b_{\text{hyper}},

    where :math:`V, C \in \mathbb{R}^{\text{out} \times H}` are stored together as one bias-free
    ``Linear(num_hyper, 2 * out_features)`` (:attr:`hyper_gate`, rows ``[:out]`` are :math:`V`, rows ``[out:]`` are
    :math:`C`). With :math:`V = C = 0` the layer is an ordinary linear layer with weights
    :math:`(W_{\text{elem}}, b_{\text{elem}})`. The gate starts small (normal, std 0.01) so an STN begins as a plain
    network.

    Args:
        in_features: input size :math:`D`.
        out_features: output size.
        num_hyper: number of hyperparameters :math:`H \ge 1`.
        bias: include :math:`b_{\text{elem}}` and :math:`b_{\text{hyper}}`.
        device: factory device.
        dtype: factory dtype.

    Raises:
        SciMLInputError: if a size is not a positive int.

    Reference:
        MacKay et al., "Self-Tuning Networks", ICLR 2019, arXiv:1903.03088, section 4.2.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> layer = STNLinear(3, 2, num_hyper=1)
        >>> layer(torch.randn(4, 3), torch.zeros(4, 1)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_hyper: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        self.num_hyper = _check_int("num_hyper", num_hyper, 1)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.elem_weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.hyper_weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.elem_bias: nn.Parameter | None = nn.Parameter(torch.empty(out_features, **factory))
            self.hyper_bias: nn.Parameter | None = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("elem_bias", None)
            self.register_parameter("hyper_bias", None)
        self.hyper_gate = nn.Linear(num_hyper, 2 * out_features, bias=False, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Uniform :math:`\pm 1/\sqrt{D}` weights and biases (as ``nn.Linear``), small normal gate."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for p in (self.elem_weight, self.hyper_weight, self.elem_bias, self.hyper_bias):
                if p is not None:
                    p.uniform_(-bound, bound)
            self.hyper_gate.weight.normal_(0.0, 0.01)

    def forward(self, x: torch.Tensor, hnet_tensor: torch.Tensor) -> torch.Tensor:
        """Apply the gated layer.

        Args:
            x: input, shape ``(B, in_features)``.
            hnet_tensor: normalised hyperparameters, shape ``(B, num_hyper)`` (or ``(num_hyper,)``, shared).

        Returns:
            Output of shape ``(B, out_features)``.

        Raises:
            SciMLInputError: if ``x`` or ``hnet_tensor`` has the wrong shape or device.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise SciMLInputError("x", f"expected shape (B, {self.in_features}), got {got}")
        hnet = _check_hnet(hnet_tensor, x.shape[0], self.num_hyper, x)
        gates = self.hyper_gate(hnet)
        out = F.linear(x, self.elem_weight, self.elem_bias)
        out = out + gates[:, : self.out_features] * F.linear(x, self.hyper_weight)
        if self.hyper_bias is not None:
            out = out + gates[:, self.out_features :] * self.hyper_bias
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, num_hyper={self.num_hyper}, "
            f"bias={self.elem_bias is not None}"
        )


class STNConv2d(nn.Module):
    r"""2-D convolution whose output channels are gated on the hyperparameters (STN best-response layer).

    .. math::

        y = W_{\text{elem}} \star x + b_{\text{elem}} + (V\hat\lambda) \odot (W_{\text{hyper}} \star x)
        + (C\hat\lambda) \odot b_{\text{hyper}},

    the gates :math:`V\hat\lambda, C\hat\lambda \in \mathbb{R}^{\text{out}}` broadcast over the spatial
    dimensions; :math:`V, C` form one bias-free ``Linear(num_hyper, 2 * out_channels)`` (:attr:`hyper_gate`).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (int or pair).
        num_hyper: number of hyperparameters :math:`H \ge 1`.
        stride: convolution stride.
        padding: zero padding.
        bias: include the two biases.
        device: factory device.
        dtype: factory dtype.

    Raises:
        SciMLInputError: if a size is not a positive int.

    Reference:
        MacKay et al., "Self-Tuning Networks", ICLR 2019, arXiv:1903.03088, section 4.2.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> conv = STNConv2d(2, 4, 3, num_hyper=2, padding=1)
        >>> conv(torch.randn(5, 2, 8, 8), torch.zeros(5, 2)).shape
        torch.Size([5, 4, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        num_hyper: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.num_hyper = _check_int("num_hyper", num_hyper, 1)
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(ks) != 2:
            raise SciMLInputError("kernel_size", f"must be an int or a pair, got {kernel_size!r}")
        for k in ks:
            _check_int("kernel_size", k, 1)
        self.kernel_size: tuple[int, int] = (int(ks[0]), int(ks[1]))
        self.stride = stride
        self.padding = padding
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        shape = (out_channels, in_channels, *self.kernel_size)
        self.elem_weight = nn.Parameter(torch.empty(shape, **factory))
        self.hyper_weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.elem_bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels, **factory))
            self.hyper_bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("elem_bias", None)
            self.register_parameter("hyper_bias", None)
        self.hyper_gate = nn.Linear(num_hyper, 2 * out_channels, bias=False, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Uniform :math:`\pm 1/\sqrt{\text{fan-in}}` weights and biases, small normal gate."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        with torch.no_grad():
            for p in (self.elem_weight, self.hyper_weight, self.elem_bias, self.hyper_bias):
                if p is not None:
                    p.uniform_(-bound, bound)
            self.hyper_gate.weight.normal_(0.0, 0.01)

    def forward(self, x: torch.Tensor, hnet_tensor: torch.Tensor) -> torch.Tensor:
        """Apply the gated convolution.

        Args:
            x: input, shape ``(B, in_channels, H_in, W_in)``.
            hnet_tensor: normalised hyperparameters, shape ``(B, num_hyper)`` (or ``(num_hyper,)``, shared).

        Returns:
            Output of shape ``(B, out_channels, H_out, W_out)``.

        Raises:
            SciMLInputError: if ``x`` or ``hnet_tensor`` has the wrong shape or device.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise SciMLInputError("x", f"expected shape (B, {self.in_channels}, H, W), got {got}")
        hnet = _check_hnet(hnet_tensor, x.shape[0], self.num_hyper, x)
        gates = self.hyper_gate(hnet)[:, :, None, None]
        out = F.conv2d(x, self.elem_weight, self.elem_bias, stride=self.stride, padding=self.padding)
        hyper = F.conv2d(x, self.hyper_weight, None, stride=self.stride, padding=self.padding)
        out = out + gates[:, : self.out_channels] * hyper
        if self.hyper_bias is not None:
            out = out + gates[:, self.out_channels :] * self.hyper_bias[:, None, None]
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, num_hyper={self.num_hyper}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.elem_bias is not None}"
        )


def hyper_dropout(
    x: torch.Tensor, rate: torch.Tensor, *, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Inverted dropout with one rate per example.

    :math:`y_{i\cdot} = x_{i\cdot} \odot m_{i\cdot} / (1 - p_i)` with :math:`m_{ij} \sim \text{Bernoulli}(1 - p_i)`.

    STN models apply their (per-example perturbed) dropout rates with this. The rate receives no gradient through
    the mask; in an STN it is tuned through the best response.

    Args:
        x: activations, shape ``(B, ...)``.
        rate: dropout rates in ``[0, 1)``, shape ``(B,)`` or a scalar.
        training: if False, return ``x`` unchanged.
        generator: optional random generator for the mask.

    Returns:
        Tensor shaped like ``x``.

    Raises:
        SciMLInputError: if ``rate`` has the wrong shape or leaves ``[0, 1)``.

    Example:
        >>> x = torch.ones(2, 3)
        >>> hyper_dropout(x, torch.tensor([0.0, 0.5]), training=False).sum().item()
        6.0
        >>> hyper_dropout(x, torch.zeros(2)).sum().item()
        6.0
    """
    if not training:
        return x
    rate = torch.as_tensor(rate, dtype=x.dtype, device=x.device).detach()
    if rate.dim() == 0:
        rate = rate.expand(x.shape[0])
    if rate.shape != (x.shape[0],):
        raise SciMLInputError("rate", f"expected shape ({x.shape[0]},), got {tuple(rate.shape)}")
    if bool(((rate < 0) | (rate >= 1)).any()):
        raise SciMLInputError("rate", "dropout rates must lie in [0, 1)")
    keep = (1.0 - rate).reshape(-1, *([1] * (x.dim() - 1)))
    noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
    mask = (noise.to(device=x.device, dtype=x.dtype) < keep).to(x.dtype)
    return x * mask / keep


# --------------------------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyperparameter:
    r"""One tunable hyperparameter, stored unconstrained as :math:`u \in \mathbb{R}` and used as :math:`v = g(u)`.

    The map :math:`g` depends on the range :math:`(\ell, h)`:

    - both finite: stretched sigmoid :math:`g(u) = \ell + (h - \ell)\,\mathrm{sigmoid}(u)` (e.g. a dropout rate in
      ``(0, 1)``, an augmentation strength);
    - only :math:`\ell` finite: :math:`g(u) = \ell + \operatorname{softplus}(u)` (e.g. weight decay in
      :math:`(0, \infty)`; for small values :math:`u \approx \log v`);
    - only :math:`h` finite: :math:`g(u) = h - \operatorname{softplus}(u)`; neither: :math:`g(u) = u`.

    **Discrete** hyperparameters (``discrete=True``, e.g. an integer count) use a straight-through floor: the forward
    value is :math:`\lfloor g(u) \rfloor`, the backward pass treats the floor as the identity, so the gradient is
    that of the continuous :math:`g(u)`. With an integer :math:`\ell` and a finite :math:`h` the values are the
    integers :math:`\ell, \dots, \lceil h \rceil - 1`.

    Args:
        name: identifier (used in :attr:`STNTrainer.history`).
        init: initial value in constrained space, strictly inside the range (for a discrete one: the continuous
            value before the floor, e.g. ``3.5`` for 3).
        low: lower end :math:`\ell` (``-inf`` for none).
        high: upper end :math:`h` (``inf`` for none).
        discrete: floor the value (straight-through).
        per_example: perturb per example during training (False: one perturbation per batch, for hyperparameters
            that cannot vary within a batch).
        scale: initial perturbation scale :math:`\operatorname{softplus}(\sigma)` in unconstrained space; None takes
            the trainer's ``perturb_scale``.

    Raises:
        SciMLInputError: if the range is empty or ``init`` lies outside it.

    Example:
        >>> Hyperparameter("dropout", 0.1, low=0.0, high=1.0)
        Hyperparameter(name='dropout', init=0.1, low=0.0, high=1.0, discrete=False, per_example=True, scale=None)
    """

    name: str
    init: float
    low: float = -math.inf
    high: float = math.inf
    discrete: bool = False
    per_example: bool = True
    scale: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SciMLInputError("name", f"must be a non-empty string, got {self.name!r}")
        if math.isnan(self.low) or math.isnan(self.high) or not self.low < self.high:
            raise SciMLInputError("low", f"need low < high, got low={self.low}, high={self.high}")
        _check_float("init", self.init)
        if not self.low < self.init < self.high:
            raise SciMLInputError("init", f"must lie strictly inside ({self.low}, {self.high}), got {self.init}")
        if self.scale is not None:
            _check_float("scale", self.scale, positive=True)

    @property
    def bounded(self) -> bool:
        """Whether both ends of the range are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def to_constrained(self, u: torch.Tensor, *, relax: bool = True) -> torch.Tensor:
        """Map unconstrained values to the range (and floor discrete ones, straight-through).

        Args:
            u: unconstrained values, any shape.
            relax: for discrete hyperparameters, False returns the continuous value before the floor.

        Returns:
            Constrained values, shaped like ``u``.
        """
        lo, hi = self.low, self.high
        if self.bounded:
            v = lo + (hi - lo) * torch.sigmoid(u)
        elif math.isfinite(lo):
            v = lo + F.softplus(u)
        elif math.isfinite(hi):
            v = hi - F.softplus(u)
        else:
            v = u
        if self.discrete and relax:
            v = v + (torch.floor(v) - v).detach()
        return v

    def to_unconstrained(self, v: torch.Tensor) -> torch.Tensor:
        """Inverse of the continuous map (for discrete hyperparameters, of the map before the floor).

        Args:
            v: values strictly inside the range, any shape.

        Returns:
            Unconstrained values, shaped like ``v``.
        """
        lo, hi = self.low, self.high
        if self.bounded:
            t = (v - lo) / (hi - lo)
            return torch.log(t) - torch.log1p(-t)
        if math.isfinite(lo):
            return _inverse_softplus(v - lo)
        if math.isfinite(hi):
            return _inverse_softplus(hi - v)
        return v

    def normalize(self, u: torch.Tensor) -> torch.Tensor:
        r"""The representation fed to the STN layers.

        :math:`\tanh(u/2) = 2\,\mathrm{sigmoid}(u) - 1 \in (-1, 1)` (the position in the range, centred) for
        bounded hyperparameters, :math:`u` itself otherwise.

        Discrete hyperparameters use the continuous value, so the layers see a smooth input.
        """
        if self.bounded:
            return torch.tanh(0.5 * u)
        return u


class HyperparameterSpace:
    r"""An ordered collection of :class:`Hyperparameter` with vectorised maps over the last dimension.

    Args:
        hyperparameters: the hyperparameters, names unique; at least one.

    Raises:
        SciMLInputError: if empty, if names repeat or an entry is not a :class:`Hyperparameter`.

    Example:
        >>> space = HyperparameterSpace([Hyperparameter("p", 0.5, low=0.0, high=1.0),
        ...                              Hyperparameter("wd", 1e-3, low=0.0)])
        >>> u = space.init_unconstrained()
        >>> [round(v, 6) for v in space.to_constrained(u).tolist()]
        [0.5, 0.001]
    """

    def __init__(self, hyperparameters: Sequence[Hyperparameter]) -> None:
        items = list(hyperparameters)
        if not items:
            raise SciMLInputError("hyperparameters", "must hold at least one Hyperparameter")
        for h in items:
            if not isinstance(h, Hyperparameter):
                raise SciMLInputError("hyperparameters", f"entries must be Hyperparameter, got {type(h).__name__}")
        names = [h.name for h in items]
        if len(set(names)) != len(names):
            raise SciMLInputError("hyperparameters", f"names must be unique, got {names}")
        self.hyperparameters: tuple[Hyperparameter, ...] = tuple(items)
        self.names: tuple[str, ...] = tuple(names)

    def __len__(self) -> int:
        return len(self.hyperparameters)

    def __iter__(self) -> Iterator[Hyperparameter]:
        return iter(self.hyperparameters)

    def __repr__(self) -> str:
        return f"HyperparameterSpace({list(self.hyperparameters)!r})"

    def _columns(self, fn: Callable[[Hyperparameter, torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (len(self),):
            raise SciMLInputError("values", f"last dimension must be {len(self)}, got shape {tuple(x.shape)}")
        return torch.stack([fn(h, x[..., i]) for i, h in enumerate(self.hyperparameters)], dim=-1)

    def to_constrained(self, u: torch.Tensor, *, relax: bool = True) -> torch.Tensor:
        """Apply :meth:`Hyperparameter.to_constrained` column-wise; ``u`` has shape ``(..., H)``."""
        return self._columns(lambda h, c: h.to_constrained(c, relax=relax), u)

    def to_unconstrained(self, v: torch.Tensor) -> torch.Tensor:
        """Apply :meth:`Hyperparameter.to_unconstrained` column-wise; ``v`` has shape ``(..., H)``."""
        return self._columns(lambda h, c: h.to_unconstrained(c), v)

    def normalize(self, u: torch.Tensor) -> torch.Tensor:
        """Apply :meth:`Hyperparameter.normalize` column-wise; ``u`` has shape ``(..., H)``."""
        return self._columns(lambda h, c: h.normalize(c), u)

    def init_unconstrained(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Unconstrained initial values, shape ``(H,)``."""
        init = torch.tensor([h.init for h in self.hyperparameters], device=device, dtype=dtype or torch.float64)
        return self.to_unconstrained(init).to(dtype or torch.get_default_dtype())

    def batch(self, u: torch.Tensor) -> HyperparameterBatch:
        """Build the :class:`HyperparameterBatch` a model receives from unconstrained values ``(B, H)``."""
        return HyperparameterBatch(
            names=self.names, unconstrained=u, values=self.to_constrained(u), hnet=self.normalize(u)
        )


@dataclass(frozen=True)
class HyperparameterBatch:
    r"""Per-example hyperparameters handed to an STN model's ``forward(x, hparams)``.

    Attributes:
        names: hyperparameter names, in column order.
        unconstrained: unconstrained values :math:`\lambda + \epsilon`, shape ``(B, H)``.
        values: constrained values (what the model applies: dropout rates, ...), shape ``(B, H)``.
        hnet: normalised representation for the STN layers, shape ``(B, H)``.

    Example:
        >>> space = HyperparameterSpace([Hyperparameter("p", 0.25, low=0.0, high=1.0)])
        >>> h = space.batch(space.init_unconstrained().expand(3, 1))
        >>> h["p"]
        tensor([0.2500, 0.2500, 0.2500])
    """

    names: tuple[str, ...]
    unconstrained: torch.Tensor
    values: torch.Tensor
    hnet: torch.Tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        """Constrained values of one hyperparameter, shape ``(B,)``."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise SciMLInputError("name", f"unknown hyperparameter {name!r}; known: {list(self.names)}") from None

    def __len__(self) -> int:
        return self.values.shape[0]


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


def _batch_size(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0].shape[0]
    if isinstance(batch, dict) and batch:
        first = next(iter(batch.values()))
        if isinstance(first, torch.Tensor):
            return first.shape[0]
    raise SciMLInputError("batch", "must be a tensor, or a tuple/list/dict whose first entry is a tensor")


class _TensorSampler:
    """Endless minibatches (without replacement within an epoch) from a tuple of equally long tensors."""

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int | None, generator: torch.Generator | None):
        n = tensors[0].shape[0]
        if n == 0:
            raise SciMLInputError("train", "tensors must be non-empty")
        if any(t.shape[0] != n for t in tensors):
            raise SciMLInputError("train", "tensors must have the same length")
        self.tensors = tuple(tensors)
        self.n = n
        self.batch_size = n if batch_size is None else min(batch_size, n)
        self.generator = generator

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            if self.batch_size == self.n:
                yield self.tensors
                continue
            gen_device = self.generator.device if self.generator is not None else "cpu"
            perm = torch.randperm(self.n, generator=self.generator, device=gen_device)
            for start in range(0, self.n, self.batch_size):
                idx = perm[start : start + self.batch_size].to(self.tensors[0].device)
                yield tuple(t[idx] for t in self.tensors)


def _cycle(source: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for batch in source:
            empty = False
            yield batch
        if empty:
            raise SciMLInputError("train", "the data source yielded no batch")


class STNTrainer:
    r"""Train a Self-Tuning Network: alternate best-response fitting on the weights and hyperparameter updates.

    Each round of :meth:`step` does

    1. ``train_steps`` updates of the model weights :math:`\phi` (Adam, ``lr``) on
       :math:`L_T(\lambda + \epsilon, \hat w_\phi(\lambda + \epsilon))`, :math:`\epsilon_i \sim \mathcal
       N(0, \operatorname{diag}\operatorname{softplus}(\sigma)^2)` drawn per example in unconstrained space
       (model in ``train()`` mode: dropout and other regularisers on), :math:`\lambda, \sigma` held fixed;
    2. ``val_steps`` updates of :math:`\lambda` (Adam, ``hyper_lr``) and :math:`\sigma` (Adam, ``scale_lr``;
       0 freezes it) on

       .. math::

           \frac1B \sum_i L_V\bigl(\hat w_\phi(\lambda + \operatorname{softplus}(\sigma) \odot \epsilon_i)\bigr)
           - \tau \sum_j \log\bigl(\operatorname{softplus}(\sigma_j) \sqrt{2\pi e}\bigr)

       with the model in ``eval()`` mode (regularisers off), so :math:`\lambda` gets its gradient only through the
       best response; the weights are not changed. The second term is the entropy :math:`H[p(\epsilon\mid\sigma)]`
       weighted by :math:`\tau` = ``entropy_weight``; it keeps the perturbation scale from collapsing.

    During the first ``warmup_steps`` rounds only step 1 runs (the weights learn a best response around the
    initial hyperparameters).

    The model's ``forward(x, hparams)`` receives a :class:`HyperparameterBatch` and applies the hyperparameters
    itself: ``hparams.hnet`` goes to the :class:`STNLinear` / :class:`STNConv2d` layers, ``hparams["dropout"]`` to
    :func:`hyper_dropout` (active only when ``self.training``). The losses have the signature
    ``loss_fn(model, batch, hparams) -> scalar`` so that they can add hyperparameter-weighted penalties (weight decay
    in ``train_loss_fn``) or augment the batch; ``val_loss_fn`` should be the plain objective.

    Args:
        model: the STN model (its parameters are :math:`\phi`).
        hyperparameters: a :class:`HyperparameterSpace` or a sequence of :class:`Hyperparameter`.
        train_loss_fn: training loss :math:`L_T`, ``(model, batch, hparams) -> scalar``.
        val_loss_fn: validation loss :math:`L_V`, ``(model, batch, hparams) -> scalar``.
        lr: Adam learning rate of the weights.
        hyper_lr: Adam learning rate of :math:`\lambda`.
        scale_lr: Adam learning rate of :math:`\sigma` (0: keep the scales fixed).
        train_steps: weight updates per round, :math:`T_{\text{train}} \ge 1`.
        val_steps: hyperparameter updates per round, :math:`T_{\text{val}} \ge 0`.
        entropy_weight: :math:`\tau \ge 0`.
        perturb_scale: initial :math:`\operatorname{softplus}(\sigma)` (unless a hyperparameter sets ``scale``).
        warmup_steps: rounds without hyperparameter updates.
        device: device of :math:`\lambda, \sigma` (default: the model's); the model is not moved.
        generator: random generator of the perturbations and of minibatch sampling in :meth:`fit`.

    Raises:
        SciMLInputError: on negative or zero rates, step counts out of range, or a model without parameters.

    Reference:
        MacKay et al., "Self-Tuning Networks: Bilevel Optimization of Hyperparameters using Structured
        Best-Response Functions", ICLR 2019, arXiv:1903.03088, Algorithm 1.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.l1, self.l2 = STNLinear(1, 8, 1), STNLinear(8, 1, 1)
        ...     def forward(self, x, h):
        ...         z = hyper_dropout(torch.tanh(self.l1(x, h.hnet)), h["dropout"], training=self.training)
        ...         return self.l2(z, h.hnet)
        >>> mse = lambda m, b, h: F.mse_loss(m(b[0], h), b[1])
        >>> trainer = STNTrainer(Net(), [Hyperparameter("dropout", 0.2, low=0.0, high=1.0)], mse, mse,
        ...                      lr=1e-2, hyper_lr=1e-2, scale_lr=1e-2)
        >>> x = torch.linspace(-1, 1, 16)[:, None]
        >>> history = trainer.fit((x, x**2), (x, x**2), steps=5)
        >>> len(history["dropout"])
        5
        >>> 0.0 < trainer.hyperparameters["dropout"] < 1.0
        True
    """

    def __init__(
        self,
        model: nn.Module,
        hyperparameters: HyperparameterSpace | Sequence[Hyperparameter],
        train_loss_fn: LossFn,
        val_loss_fn: LossFn,
        *,
        lr: float = 1e-3,
        hyper_lr: float = 3e-3,
        scale_lr: float = 3e-3,
        train_steps: int = 2,
        val_steps: int = 1,
        entropy_weight: float = 1e-3,
        perturb_scale: float = 0.5,
        warmup_steps: int = 0,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise SciMLInputError("model", f"must be an nn.Module, got {type(model).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise SciMLInputError("model", "has no trainable parameters")
        if isinstance(hyperparameters, HyperparameterSpace):
            space = hyperparameters
        elif isinstance(hyperparameters, Hyperparameter):
            space = HyperparameterSpace([hyperparameters])
        else:
            space = HyperparameterSpace(list(hyperparameters))
        if not callable(train_loss_fn):
            raise SciMLInputError("train_loss_fn", "must be callable")
        if not callable(val_loss_fn):
            raise SciMLInputError("val_loss_fn", "must be callable")
        self.lr = _check_float("lr", lr, positive=True)
        self.hyper_lr = _check_float("hyper_lr", hyper_lr, positive=True)
        self.scale_lr = _check_float("scale_lr", scale_lr, nonnegative=True)
        self.train_steps = _check_int("train_steps", train_steps, 1)
        self.val_steps = _check_int("val_steps", val_steps, 0)
        self.entropy_weight = _check_float("entropy_weight", entropy_weight, nonnegative=True)
        self.perturb_scale = _check_float("perturb_scale", perturb_scale, positive=True)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise SciMLInputError("generator", f"must be a torch.Generator, got {type(generator).__name__}")

        self.model = model
        self.space = space
        self.train_loss_fn = train_loss_fn
        self.val_loss_fn = val_loss_fn
        self.generator = generator
        self.device = torch.device(device) if device is not None else params[0].device
        dtype = params[0].dtype if params[0].dtype.is_floating_point else torch.get_default_dtype()
        self.hyper = nn.Parameter(space.init_unconstrained(device=self.device, dtype=dtype))
        scales = torch.tensor(
            [h.scale if h.scale is not None else self.perturb_scale for h in space], dtype=torch.float64
        )
        self.scale = nn.Parameter(_inverse_softplus(scales).to(device=self.device, dtype=dtype))
        self._per_example = torch.tensor([h.per_example for h in space], device=self.device)
        self.model_optimizer = torch.optim.Adam(params, lr=self.lr)
        groups: list[dict[str, Any]] = [{"params": [self.hyper], "lr": self.hyper_lr}]
        if self.scale_lr > 0:
            groups.append({"params": [self.scale], "lr": self.scale_lr})
        self.hyper_optimizer = torch.optim.Adam(groups)
        self.rounds = 0
        self.history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_loss": []}
        for name in space.names:
            self.history[name] = []
            self.history[f"{name}_scale"] = []

    # ---------------------------------------------------------------------------------------------------- helpers
    @property
    def hyperparameters(self) -> dict[str, float]:
        r"""Current hyperparameters :math:`g(\lambda)` in constrained space, by name."""
        with torch.no_grad():
            values = self.space.to_constrained(self.hyper.detach())
        return {n: float(v) for n, v in zip(self.space.names, values.tolist(), strict=True)}

    @property
    def scales(self) -> dict[str, float]:
        r"""Current perturbation scales :math:`\operatorname{softplus}(\sigma)` (unconstrained space), by name."""
        return {n: float(v) for n, v in zip(self.space.names, F.softplus(self.scale.detach()).tolist(), strict=True)}

    def entropy(self) -> torch.Tensor:
        r"""Entropy :math:`\sum_j \log(\operatorname{softplus}(\sigma_j)\sqrt{2\pi e})` of the perturbation."""
        return torch.log(F.softplus(self.scale) * math.sqrt(2.0 * math.pi * math.e)).sum()

    def _noise(self, batch_size: int) -> torch.Tensor:
        shape = (batch_size, len(self.space))
        gen_device = self.generator.device if self.generator is not None else self.device
        eps = torch.randn(shape, generator=self.generator, device=gen_device, dtype=self.hyper.dtype)
        eps = eps.to(self.device)
        # hyperparameters that cannot vary within a batch share the first example's perturbation
        return torch.where(self._per_example, eps, eps[:1].expand_as(eps))

    def hparams_for(self, batch_size: int, *, perturb: bool = False) -> HyperparameterBatch:
        r"""The :class:`HyperparameterBatch` at the current :math:`\lambda` (optionally perturbed), detached.

        Args:
            batch_size: number of rows :math:`B`.
            perturb: add per-example perturbations.
        """
        with torch.no_grad():
            u = self.hyper.detach().expand(batch_size, -1)
            if perturb:
                u = u + F.softplus(self.scale.detach()) * self._noise(batch_size)
            return self.space.batch(u.clone())

    def _loss_value(self, name: str, loss: object) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise SciMLInputError(name, "must return a scalar tensor")
        return loss.reshape(())

    # -------------------------------------------------------------------------------------------------- updates
    def train_update(self, batch: Batch) -> float:
        """One weight update on a training batch with perturbed hyperparameters; returns the training loss."""
        self.model.train()
        hparams = self.hparams_for(_batch_size(batch), perturb=True)
        loss = self._loss_value("train_loss_fn", self.train_loss_fn(self.model, batch, hparams))
        self.model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.model_optimizer.step()
        return float(loss.detach())

    def val_update(self, batch: Batch) -> float:
        r"""One update of :math:`\lambda, \sigma` on a validation batch; returns the validation loss."""
        self.model.eval()
        n = _batch_size(batch)
        u = self.hyper.expand(n, -1) + F.softplus(self.scale) * self._noise(n)
        val_loss = self._loss_value("val_loss_fn", self.val_loss_fn(self.model, batch, self.space.batch(u)))
        objective = val_loss - self.entropy_weight * self.entropy()
        leaves = [self.hyper, self.scale] if self.scale_lr > 0 else [self.hyper]
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            leaf.grad = torch.zeros_like(leaf) if grad is None else grad
        self.hyper_optimizer.step()
        self.hyper_optimizer.zero_grad(set_to_none=True)
        self.model.train()
        return float(val_loss.detach())

    def evaluate(self, batch: Batch) -> float:
        """Validation loss at the current (unperturbed) hyperparameters, model in eval mode, no update."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            loss = self.val_loss_fn(self.model, batch, self.hparams_for(_batch_size(batch)))
        self.model.train(was_training)
        return float(self._loss_value("val_loss_fn", loss))

    def _record(self, train_loss: float, val_loss: float) -> None:
        self.history["step"].append(float(self.rounds))
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        for name, value in self.hyperparameters.items():
            self.history[name].append(value)
        for name, value in self.scales.items():
            self.history[f"{name}_scale"].append(value)

    def _round(self, next_train: Callable[[], Batch], next_val: Callable[[], Batch]) -> dict[str, float]:
        train_loss = math.nan
        for _ in range(self.train_steps):
            train_loss = self.train_update(next_train())
        val_loss = math.nan
        if self.rounds >= self.warmup_steps:
            for _ in range(self.val_steps):
                val_loss = self.val_update(next_val())
        self.rounds += 1
        self._record(train_loss, val_loss)
        return {"train_loss": train_loss, "val_loss": val_loss, **self.hyperparameters}

    def step(self, train_batch: Batch, val_batch: Batch) -> dict[str, float]:
        """One round of alternating updates, appended to :attr:`history`.

        ``train_steps`` weight updates on ``train_batch`` (fresh perturbations each), then (after the warm-up)
        ``val_steps`` hyperparameter updates on ``val_batch``.

        Args:
            train_batch: a batch for ``train_loss_fn`` (a tensor, or a tuple/list/dict whose first entry is a tensor
                with the batch dimension first).
            val_batch: a batch for ``val_loss_fn``.

        Returns:
            The last training loss, the last validation loss (NaN during warm-up) and the hyperparameters.
        """
        return self._round(lambda: train_batch, lambda: val_batch)

    def fit(
        self,
        train: Iterable[Batch] | Sequence[torch.Tensor],
        val: Iterable[Batch] | Sequence[torch.Tensor],
        *,
        steps: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> dict[str, list[float]]:
        """Run rounds of :meth:`step`, drawing a fresh batch for every update.

        Args:
            train: a tuple/list of equally long tensors (sampled in minibatches of ``batch_size``; full batch if
                None) or any iterable of batches (a ``DataLoader``; cycled).
            val: the same for the validation data.
            steps: number of rounds.
            epochs: alternatively, rounds enough for this many passes over ``train`` (needs tensors or a sized
                iterable).
            batch_size: minibatch size for tensor inputs.
            progress: show a tqdm progress bar.

        Returns:
            :attr:`history`.

        Raises:
            SciMLInputError: unless exactly one of ``steps`` and ``epochs`` is given, or on empty data.
        """
        if (steps is None) == (epochs is None):
            raise SciMLInputError("steps", "give exactly one of steps and epochs")
        if batch_size is not None:
            _check_int("batch_size", batch_size, 1)
        train_source = self._source("train", train, batch_size)
        val_source = self._source("val", val, batch_size)
        if steps is not None:
            n_rounds = _check_int("steps", steps, 0)
        else:
            n_epochs = _check_int("epochs", epochs, 0)
            if isinstance(train_source, _TensorSampler):
                per_epoch = train_source.batches_per_epoch
            elif hasattr(train_source, "__len__"):
                per_epoch = len(train_source)  # type: ignore[arg-type]
            else:
                raise SciMLInputError("epochs", "needs tensors or a sized iterable; give steps instead")
            n_rounds = math.ceil(n_epochs * per_epoch / self.train_steps)
        train_iter = iter(train_source) if isinstance(train_source, _TensorSampler) else _cycle(train_source)
        val_iter = iter(val_source) if isinstance(val_source, _TensorSampler) else _cycle(val_source)
        rounds: Iterable[int] = range(n_rounds)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(rounds, desc="STN", total=n_rounds)
            rounds = bar
        for _ in rounds:
            info = self._round(lambda: next(train_iter), lambda: next(val_iter))
            if bar is not None:
                bar.set_postfix({k: f"{v:.3g}" for k, v in info.items()})
        return self.history

    def _source(self, name: str, data: object, batch_size: int | None) -> Any:
        if isinstance(data, torch.Tensor):
            return _TensorSampler((data,), batch_size, self.generator)
        if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
            return _TensorSampler(data, batch_size, self.generator)
        if isinstance(data, Iterable):
            return data
        raise SciMLInputError(name, f"must be tensors or an iterable of batches, got {type(data).__name__}")

    def plot_schedule(self) -> Figure:
        """Plot the recorded hyperparameter schedule and the losses.

        One panel per hyperparameter (its perturbation scale on a twin axis) and one for the losses; matplotlib is
        imported here.

        Returns:
            A :class:`matplotlib.figure.Figure`.

        Raises:
            SciMLInputError: if nothing has been recorded yet.
        """
        if not self.history["step"]:
            raise SciMLInputError("history", "is empty; call step or fit first")
        from matplotlib.figure import Figure

        n = len(self.space)
        fig = Figure(figsize=(6.0, 2.2 * (n + 1)), layout="constrained")
        axes = fig.subplots(n + 1, 1, sharex=True, squeeze=False)[:, 0]
        steps = self.history["step"]
        for ax, name in zip(axes[:n], self.space.names, strict=True):
            ax.plot(steps, self.history[name], color="C0", label=name)
            ax.set_ylabel(name)
            twin = ax.twinx()
            twin.plot(steps, self.history[f"{name}_scale"], color="C1", alpha=0.6, label="scale")
            twin.set_ylabel("perturbation scale")
        axes[n].plot(steps, self.history["train_loss"], label="train (perturbed)")
        axes[n].plot(steps, self.history["val_loss"], label="validation")
        axes[n].set_ylabel("loss")
        axes[n].set_xlabel("round")
        axes[n].legend()
        fig.suptitle("STN hyperparameter schedule")
        return fig
