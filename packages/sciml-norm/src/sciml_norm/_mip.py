r"""Magnitude invariant parametrizations (MIP) for hypernetworks.

A hypernetwork :math:`h_\phi` maps a low-dimensional conditioning input :math:`\gamma` (a regularization weight, a
data-mixing weight, a task code, ...) to the parameters :math:`\theta = h_\phi(\gamma)` of a *primary* network
:math:`f_\theta`. When :math:`h_\phi` is a bias-free MLP with a positively homogeneous activation (ReLU, LeakyReLU),
:math:`h_\phi(a \gamma) = a\, h_\phi(\gamma)` for every :math:`a > 0`: the magnitude of the primary weights, and
with it that of its activations and gradients, is proportional to :math:`\|\gamma\|`. Gonzalez Ortiz et al. show
that this proportionality destabilizes and slows training, and fix it with two changes:

1. a **constant-norm input encoding** of :math:`\gamma \in [0, 1]^k`
   (:func:`encode_cos_sin`: :math:`[\cos(\pi\gamma/2), \sin(\pi\gamma/2)]`, constant L2 norm :math:`\sqrt{k}`;
   :func:`encode_z_one_minus_z`: :math:`[\gamma, 1 - \gamma]`, constant L1 norm :math:`k`);
2. a **residual parametrization** :math:`\theta = \theta_0 + \Delta\theta_\phi(\gamma)` in which
   :math:`\theta_0` is learned independently of :math:`\gamma`.

:class:`HyperNetwork` turns any existing ``nn.Module`` into the primary network of such a hypernetwork, without
module surgery: the predicted parameters are handed to :func:`torch.func.functional_call`, and the parameters that
are not predicted stay the primary's own learnable parameters. :meth:`HyperNetwork.baseline` builds the plain
(proportional) hypernetwork for comparison, and :func:`mip_convergence_experiment` compares the two on a small
data-mixing task.

Reference:
    Jose Javier Gonzalez Ortiz, John Guttag, Adrian V. Dalca, "Magnitude Invariant Parametrizations Improve
    Hypernetwork Learning", ICLR 2024, arXiv:2304.07645. Their library HyperLight (JJGO/hyperlight) fixes the
    conventions followed here (encoding layout, :math:`\theta_0` as the output layer's bias, fan-out Kaiming
    initialization).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import torch
from sciml_protocols import SciMLError, SciMLInputError, check_in_choices, check_int
from torch import nn
from torch.func import functional_call, vmap

__all__ = [
    "ENCODINGS",
    "HyperNetwork",
    "InputEncoding",
    "encode_cos_sin",
    "encode_input",
    "encode_z_one_minus_z",
    "mip_convergence_experiment",
]

Encoding = Literal["cos|sin", "z|1-z"]
OutOfRange = Literal["error", "warn", "ignore"]
Activation = Literal["leaky_relu", "relu", "tanh", "silu", "gelu"]
PredictedSpec = str | type[nn.Module] | Sequence[str | type[nn.Module]] | Callable[[str, nn.Parameter], bool] | None

#: Names of the constant-norm encodings, each with the factor by which it widens the input.
ENCODINGS: dict[str, int] = {"cos|sin": 2, "z|1-z": 2}

_OUT_OF_RANGE: tuple[str, ...] = ("error", "warn", "ignore")
_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    # (layer factory, Kaiming gain); SiLU and GELU have no gain of their own in torch: use ReLU's, as HyperLight
    # does with LeakyReLU's.
    "leaky_relu": (nn.LeakyReLU, nn.init.calculate_gain("leaky_relu", 0.01)),
    "relu": (nn.ReLU, nn.init.calculate_gain("relu")),
    "tanh": (nn.Tanh, nn.init.calculate_gain("tanh")),
    "silu": (nn.SiLU, nn.init.calculate_gain("relu")),
    "gelu": (nn.GELU, nn.init.calculate_gain("relu")),
}


# ------------------------------------------------------------------------------------------------------ encodings


def _check_unit_interval(gamma: torch.Tensor, out_of_range: str) -> None:
    check_in_choices("out_of_range", out_of_range, _OUT_OF_RANGE)
    if out_of_range == "ignore":
        return
    # NaN fails both comparisons, so it counts as out of range too.
    inside = bool(((gamma >= 0) & (gamma <= 1)).all())
    if inside:
        return
    outside = gamma[~((gamma >= 0) & (gamma <= 1))]
    message = (
        f"must lie in [0, 1] (the encodings have constant norm only there); got values such as {outside[:3].tolist()}"
    )
    if out_of_range == "error":
        raise SciMLInputError("gamma", message)
    warnings.warn(f"argument 'gamma': {message}", UserWarning, stacklevel=3)


def _check_gamma_tensor(gamma: object) -> torch.Tensor:
    if not isinstance(gamma, torch.Tensor):
        raise SciMLInputError("gamma", f"must be a torch.Tensor, got {type(gamma).__name__}")
    if not gamma.dtype.is_floating_point:
        raise SciMLInputError("gamma", f"must have a floating dtype, got {gamma.dtype}")
    if gamma.ndim == 0:
        raise SciMLInputError("gamma", "must have at least one dimension (..., k)")
    return gamma


def encode_cos_sin(gamma: torch.Tensor, *, out_of_range: OutOfRange = "error") -> torch.Tensor:
    r"""The constant L2-norm encoding :math:`E(\gamma) = [\cos(\pi\gamma/2), \sin(\pi\gamma/2)]`.

    For :math:`\gamma \in [0, 1]^k` every pair :math:`(\cos(\pi\gamma_i/2), \sin(\pi\gamma_i/2))` lies on the unit
    circle, so :math:`\|E(\gamma)\|_2 = \sqrt{k}` whatever :math:`\gamma`; the map is injective on :math:`[0,1]`.
    The cosines of all :math:`k` inputs come first, then the sines (HyperLight's layout).

    Args:
        gamma: (..., k) floating tensor with entries in [0, 1].
        out_of_range: what to do when an entry lies outside [0, 1] (or is NaN): ``"error"`` raises
            :class:`~sciml_protocols.SciMLInputError`, ``"warn"`` emits a :class:`UserWarning` and encodes anyway,
            ``"ignore"`` skips the check (it costs a device synchronization, and cannot run under
            :func:`torch.func.vmap` or ``torch.compile(fullgraph=True)``).

    Returns:
        (..., 2k) tensor of ``gamma``'s dtype and device.

    Raises:
        SciMLInputError: ``gamma`` not a floating tensor with at least one dimension, or out of range under
            ``out_of_range="error"``.

    Example:
        >>> e = encode_cos_sin(torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
        >>> e.shape, torch.linalg.vector_norm(e, dim=-1)
        (torch.Size([2, 4]), tensor([1.4142, 1.4142]))
    """
    gamma = _check_gamma_tensor(gamma)
    _check_unit_interval(gamma, out_of_range)
    angle = (math.pi / 2) * gamma
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


def encode_z_one_minus_z(gamma: torch.Tensor, *, out_of_range: OutOfRange = "error") -> torch.Tensor:
    r"""The constant L1-norm encoding :math:`E(\gamma) = [\gamma, 1 - \gamma]`.

    For :math:`\gamma \in [0, 1]^k` both halves are non-negative and sum to one per input, so
    :math:`\|E(\gamma)\|_1 = k`. The :math:`k` values :math:`\gamma` come first, then :math:`1 - \gamma`.

    Args:
        gamma: (..., k) floating tensor with entries in [0, 1].
        out_of_range: ``"error"`` (default), ``"warn"`` or ``"ignore"``, as in :func:`encode_cos_sin`.

    Returns:
        (..., 2k) tensor of ``gamma``'s dtype and device.

    Raises:
        SciMLInputError: ``gamma`` not a floating tensor with at least one dimension, or out of range under
            ``out_of_range="error"``.

    Example:
        >>> encode_z_one_minus_z(torch.tensor([0.25, 1.0]))
        tensor([0.2500, 1.0000, 0.7500, 0.0000])
        >>> encode_z_one_minus_z(torch.tensor([1.5]))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'gamma': must lie in [0, 1] ...
    """
    gamma = _check_gamma_tensor(gamma)
    _check_unit_interval(gamma, out_of_range)
    return torch.cat([gamma, 1 - gamma], dim=-1)


def encode_input(
    gamma: torch.Tensor, encoding: Encoding | None = "cos|sin", *, out_of_range: OutOfRange = "error"
) -> torch.Tensor:
    r"""Apply the encoding named ``encoding`` (see :data:`ENCODINGS`); ``None`` returns ``gamma`` unchanged.

    Args:
        gamma: (..., k) floating tensor.
        encoding: ``"cos|sin"`` (:func:`encode_cos_sin`), ``"z|1-z"`` (:func:`encode_z_one_minus_z`) or ``None``
            (no encoding and no range check: the plain hypernetwork's input).
        out_of_range: ``"error"``, ``"warn"`` or ``"ignore"``, as in :func:`encode_cos_sin`.

    Returns:
        (..., 2k) tensor, or ``gamma`` itself for ``encoding=None``.

    Raises:
        SciMLInputError: unknown ``encoding``, or as the chosen encoding raises.

    Example:
        >>> encode_input(torch.tensor([1.0]), "cos|sin").round(decimals=6)
        tensor([0., 1.])
    """
    check_in_choices("encoding", encoding, (*ENCODINGS, None))
    if encoding is None:
        return _check_gamma_tensor(gamma)
    if encoding == "cos|sin":
        return encode_cos_sin(gamma, out_of_range=out_of_range)
    return encode_z_one_minus_z(gamma, out_of_range=out_of_range)


class InputEncoding(nn.Module):
    r"""Module form of :func:`encode_input`: a constant-norm encoding of :math:`\gamma \in [0, 1]^k`.

    Args:
        encoding: ``"cos|sin"`` (constant L2 norm :math:`\sqrt{k}`), ``"z|1-z"`` (constant L1 norm :math:`k`) or
            ``None`` (identity).
        out_of_range: ``"error"`` (default), ``"warn"`` or ``"ignore"``; see :func:`encode_cos_sin`.

    Attributes:
        multiplier: output width divided by input width (2 for the encodings, 1 for ``None``).

    Raises:
        SciMLInputError: unknown ``encoding`` or ``out_of_range``.

    Example:
        >>> enc = InputEncoding("cos|sin")
        >>> enc.multiplier, enc(torch.tensor([0.0])).tolist()
        (2, [1.0, 0.0])
    """

    def __init__(self, encoding: Encoding | None = "cos|sin", *, out_of_range: OutOfRange = "error") -> None:
        super().__init__()
        check_in_choices("encoding", encoding, (*ENCODINGS, None))
        check_in_choices("out_of_range", out_of_range, _OUT_OF_RANGE)
        self.encoding: Encoding | None = encoding
        self.out_of_range: OutOfRange = out_of_range
        self.multiplier: int = 1 if encoding is None else ENCODINGS[encoding]

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        """Encode ``gamma`` of shape (..., k) into (..., multiplier * k).

        Args:
            gamma: (..., k) floating tensor.

        Returns:
            The encoded tensor.
        """
        return encode_input(gamma, self.encoding, out_of_range=self.out_of_range)

    def extra_repr(self) -> str:
        return f"encoding={self.encoding!r}, out_of_range={self.out_of_range!r}"


# --------------------------------------------------------------------------------------------------- hypernetwork


def _select_parameters(primary: nn.Module, predicted: PredictedSpec) -> list[str]:
    named = dict(primary.named_parameters())
    if predicted is None:
        chosen = set(named)
    elif callable(predicted) and not isinstance(predicted, type):
        chosen = {name for name, p in named.items() if predicted(name, p)}
    else:
        items: Sequence[object] = (
            [predicted] if isinstance(predicted, (str, type)) else list(cast(Iterable[object], predicted))
        )
        modules = dict(primary.named_modules())
        chosen = set()
        for item in items:
            if isinstance(item, str):
                if item in named:
                    chosen.add(item)
                elif item in modules and item != "":
                    prefix = f"{item}."
                    found = {n for n in named if n.startswith(prefix)}
                    if not found:
                        raise SciMLInputError("predicted", f"module {item!r} of the primary has no parameters")
                    chosen |= found
                else:
                    raise SciMLInputError(
                        "predicted", f"{item!r} is neither a parameter nor a submodule name of the primary"
                    )
            elif isinstance(item, type) and issubclass(item, nn.Module):
                for module_name, module in modules.items():
                    if isinstance(module, item):
                        for pname, _ in module.named_parameters(recurse=False):
                            full = f"{module_name}.{pname}" if module_name else pname
                            # A parameter shared with an earlier module is listed under its first name only.
                            if full in named:
                                chosen.add(full)
            else:
                raise SciMLInputError(
                    "predicted", f"items must be parameter/module names or nn.Module subclasses, got {item!r}"
                )
    if not chosen:
        raise SciMLInputError("predicted", "selects no parameter of the primary network")
    # Keep the primary's own parameter order, whatever order the selection came in.
    return [name for name in named if name in chosen]


class HyperNetwork(nn.Module):
    r"""A hypernetwork predicting (some of) the parameters of an existing primary network, MIP by default.

    With the predicted parameters flattened into :math:`\theta \in \mathbb{R}^P`, the input encoded by
    :math:`E` (:func:`encode_input`) and an MLP body :math:`g_\phi` with hidden widths ``hidden_sizes``,

    .. math::

        \theta(\gamma) = \underbrace{b}_{\theta_0} + W\, g_\phi(E(\gamma))
        \quad (\texttt{residual=True}), \qquad
        \theta(\gamma) = W\, g_\phi(E(\gamma)) \quad (\texttt{residual=False}),

    so with ``residual=True`` the output layer's bias *is* the independent parameter vector :math:`\theta_0`
    (HyperLight's convention) and :math:`W g_\phi(E(\gamma))` is :math:`\Delta\theta(\gamma)`. The primary runs
    with these parameters through :func:`torch.func.functional_call`; its other parameters and its buffers are its
    own.

    **Initialization.** Hidden layers: Kaiming normal in fan-out mode with the activation's gain, zero biases
    (with fan-out scaling the norm of the hidden activations stays near that of the input). Output weight
    :math:`W`: Kaiming normal in fan-out mode with linear gain, i.e. :math:`W_{ij} \sim \mathcal{N}(0, 1/P)`, so
    :math:`\|\Delta\theta\|_2 \approx \|g_\phi\|_2` and each entry of :math:`\Delta\theta` is of order
    :math:`\|E(\gamma)\|/\sqrt{P}`, small next to a usual weight init. :math:`\theta_0` (``residual=True``) starts
    as a copy of the primary's current values of the predicted parameters, i.e. its usual initialization (call
    :meth:`set_theta0` to start elsewhere).

    **The primary's predicted parameters** are replaced at every call; they are frozen here
    (``requires_grad_(False)``) and serve only as the initial :math:`\theta_0`. The primary is a submodule, so
    ``hypernet.parameters()`` holds the hypernetwork's parameters *and* the primary's non-predicted ones, which
    train with it.

    **The plain baseline** (:meth:`baseline`): no encoding, no residual, bias-free hidden layers and LeakyReLU:
    :math:`\theta(a\gamma) = a\,\theta(\gamma)` for :math:`a > 0` (positively homogeneous), the proportionality
    MIP removes.

    Args:
        primary: the primary network, any ``nn.Module`` tree.
        input_dim: :math:`k`, the width of :math:`\gamma`.
        predicted: which of the primary's parameters to predict: ``None`` (all), a parameter name, a submodule name
            (all its parameters), an ``nn.Module`` subclass (the direct parameters of every instance), a sequence of
            such names/classes, or a predicate ``(name, parameter) -> bool``. Names are those of
            ``primary.named_parameters()`` (tied parameters under their first name).
        hidden_sizes: widths of the hidden layers (may be empty: an affine hypernetwork).
        encoding: ``"cos|sin"``, ``"z|1-z"`` or ``None``; with an encoding :math:`\gamma` must lie in
            :math:`[0, 1]^k`.
        residual: predict :math:`\theta_0 + \Delta\theta(\gamma)` (output layer with bias :math:`\theta_0`) instead of
            :math:`\theta(\gamma)` (bias-free output layer).
        activation: ``"leaky_relu"`` (slope 0.01), ``"relu"``, ``"tanh"``, ``"silu"`` or ``"gelu"``.
        bias: whether the hidden layers have biases.
        out_of_range: ``"error"`` (default), ``"warn"`` or ``"ignore"`` for :math:`\gamma \notin [0,1]^k`; see
            :func:`encode_cos_sin`. Without an encoding only non-finite :math:`\gamma` is checked (also
            skipped by ``"ignore"``).
        device: device of the hypernetwork's parameters; default: that of the predicted parameters.
        dtype: floating dtype of the hypernetwork's parameters; default: that of the predicted parameters.

    Raises:
        SciMLInputError: ``primary`` not a module, ``input_dim`` or a hidden size not a positive integer, unknown
            ``encoding``/``activation``/``out_of_range``, a ``predicted`` selection that is empty or names
            something the primary lacks, predicted parameters of mixed or non-floating dtypes/devices with no
            ``dtype``/``device`` given.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> primary = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> hyper = HyperNetwork(primary, 1, predicted=[nn.Linear], hidden_sizes=(4, 16))
        >>> {name: tuple(p.shape) for name, p in hyper(torch.tensor([0.3])).items()}
        {'0.weight': (8, 3), '0.bias': (8,), '2.weight': (1, 8), '2.bias': (1,)}
        >>> hyper.primary_forward(torch.tensor([[0.0], [0.5], [1.0]]), torch.randn(5, 3)).shape
        torch.Size([3, 5, 1])
        >>> base = HyperNetwork.baseline(primary, 1, hidden_sizes=(4, 16))
        >>> g = torch.tensor([0.2])
        >>> torch.allclose(base(3 * g)["0.weight"], 3 * base(g)["0.weight"])
        True
    """

    def __init__(
        self,
        primary: nn.Module,
        input_dim: int,
        *,
        predicted: PredictedSpec = None,
        hidden_sizes: Sequence[int] = (16, 128),
        encoding: Encoding | None = "cos|sin",
        residual: bool = True,
        activation: Activation = "leaky_relu",
        bias: bool = True,
        out_of_range: OutOfRange = "error",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(primary, nn.Module):
            raise SciMLInputError("primary", f"must be an nn.Module, got {type(primary).__name__}")
        input_dim = check_int("input_dim", input_dim, minimum=1)
        hidden = tuple(hidden_sizes)
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise SciMLInputError("hidden_sizes", f"must hold positive integers, got {hidden!r}")
        check_in_choices("encoding", encoding, (*ENCODINGS, None))
        check_in_choices("activation", activation, tuple(_ACTIVATIONS))
        check_in_choices("out_of_range", out_of_range, _OUT_OF_RANGE)

        names = _select_parameters(primary, predicted)
        params = dict(primary.named_parameters())
        chosen = [params[name] for name in names]
        if dtype is None:
            dtypes = {p.dtype for p in chosen}
            if len(dtypes) != 1:
                raise SciMLInputError("dtype", f"predicted parameters have mixed dtypes {dtypes}; pass dtype=")
            dtype = dtypes.pop()
        if not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
        if device is None:
            devices = {p.device for p in chosen}
            if len(devices) != 1:
                raise SciMLInputError("device", f"predicted parameters live on several devices {devices}; pass device=")
            device = devices.pop()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}

        self.input_dim: int = input_dim
        self.hidden_sizes: tuple[int, ...] = hidden
        self.residual: bool = bool(residual)
        self.activation: str = activation
        self.out_of_range: OutOfRange = out_of_range
        self.predicted_names: tuple[str, ...] = tuple(names)
        self.predicted_shapes: dict[str, torch.Size] = {name: params[name].shape for name in names}
        self._numels: list[int] = [params[name].numel() for name in names]
        self.num_predicted: int = sum(self._numels)

        self.primary = primary
        for p in chosen:
            p.requires_grad_(False)
        self.encoder = InputEncoding(encoding, out_of_range=out_of_range)
        make_activation, gain = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        width = input_dim * self.encoder.multiplier
        for out_width in hidden:
            linear = nn.Linear(width, out_width, bias=bias, **factory)
            nn.init.normal_(linear.weight, std=gain / math.sqrt(out_width))
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
            layers += [linear, make_activation()]
            width = out_width
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(width, self.num_predicted, bias=self.residual, **factory)
        nn.init.normal_(self.output.weight, std=1.0 / math.sqrt(self.num_predicted))
        if self.output.bias is not None:
            with torch.no_grad():
                self.output.bias.copy_(torch.cat([p.detach().reshape(-1) for p in chosen]))

    @classmethod
    def baseline(
        cls,
        primary: nn.Module,
        input_dim: int,
        *,
        predicted: PredictedSpec = None,
        hidden_sizes: Sequence[int] = (16, 128),
        activation: Activation = "leaky_relu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> HyperNetwork:
        r"""The plain hypernetwork: no encoding, no residual, bias-free MLP (positively homogeneous for ReLU-type).

        :math:`\theta(\gamma) = W\, g_\phi(\gamma)` with bias-free layers; for LeakyReLU or ReLU,
        :math:`\theta(a\gamma) = a\,\theta(\gamma)` for every :math:`a > 0`, and :math:`\theta(0) = 0`. Same
        initialization of the hidden and output weights as the MIP hypernetwork. The input is only checked to be
        finite.

        Args:
            primary: the primary network.
            input_dim: width of :math:`\gamma`.
            predicted: as in :class:`HyperNetwork`.
            hidden_sizes: hidden widths.
            activation: as in :class:`HyperNetwork` (``"leaky_relu"`` or ``"relu"`` for homogeneity).
            device: as in :class:`HyperNetwork`.
            dtype: as in :class:`HyperNetwork`.

        Returns:
            A :class:`HyperNetwork` with ``encoding=None, residual=False, bias=False``.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> base = HyperNetwork.baseline(nn.Linear(2, 2), 1, hidden_sizes=(8,))
            >>> bool(base(torch.zeros(1))["weight"].eq(0).all())
            True
        """
        return cls(
            primary,
            input_dim,
            predicted=predicted,
            hidden_sizes=hidden_sizes,
            encoding=None,
            residual=False,
            activation=activation,
            bias=False,
            device=device,
            dtype=dtype,
        )

    @property
    def encoding(self) -> Encoding | None:
        """The input encoding's name (``None`` for the plain hypernetwork)."""
        return self.encoder.encoding

    def _prepare(self, gamma: torch.Tensor | float | Sequence[float]) -> tuple[torch.Tensor, bool]:
        weight = self.output.weight
        if not isinstance(gamma, torch.Tensor):
            gamma = torch.as_tensor(gamma, dtype=weight.dtype, device=weight.device)
        if not gamma.dtype.is_floating_point:
            raise SciMLInputError("gamma", f"must have a floating dtype, got {gamma.dtype}")
        if gamma.device != weight.device:
            raise SciMLInputError("gamma", f"is on {gamma.device}, the hypernetwork on {weight.device}")
        if gamma.ndim == 0 and self.input_dim == 1:
            gamma = gamma.reshape(1)
        if gamma.ndim not in (1, 2) or gamma.shape[-1] != self.input_dim:
            raise SciMLInputError(
                "gamma", f"expected shape ({self.input_dim},) or (B, {self.input_dim}), got {tuple(gamma.shape)}"
            )
        if gamma.numel() == 0:
            raise SciMLInputError("gamma", "must not be empty")
        if self.encoder.encoding is None and self.out_of_range != "ignore" and not bool(gamma.isfinite().all()):
            raise SciMLInputError("gamma", "must be finite")
        # gamma is a low-dimensional conditioning input: bring it to the hypernetwork's precision.
        return gamma.to(weight.dtype), gamma.ndim == 2

    def forward(self, gamma: torch.Tensor | float | Sequence[float]) -> dict[str, torch.Tensor]:
        r"""Predict the primary network's parameters :math:`\theta(\gamma)`.

        Args:
            gamma: (k,) or (B, k) conditioning input (a float or 0-d tensor when k = 1); converted to the
                hypernetwork's dtype. With an encoding its entries must lie in [0, 1] (see ``out_of_range``).

        Returns:
            Dict from parameter name to tensor of the parameter's shape, with a leading (B,) for batched ``gamma``.
            The tensors are views into one flat output and carry gradients to the hypernetwork.

        Raises:
            SciMLInputError: wrong shape, dtype or device, empty, out of range (with an encoding and
                ``out_of_range="error"``), or non-finite.
        """
        g, batched = self._prepare(gamma)
        flat = self.output(self.body(self.encoder(g)))
        batch = flat.shape[:-1] if batched else ()
        flat = flat if batched else flat.reshape(-1)
        chunks = torch.split(flat, self._numels, dim=-1)
        return {
            name: chunk.reshape(*batch, *self.predicted_shapes[name])
            for name, chunk in zip(self.predicted_names, chunks, strict=True)
        }

    def functional(self, gamma: torch.Tensor | float | Sequence[float]) -> Callable[..., Any]:
        r"""The primary network as a function, with the parameters predicted for ``gamma``.

        For a single :math:`\gamma` (shape (k,)) the returned callable is
        ``functional_call(primary, theta, args, kwargs)``. For a batch (B, k) it maps the primary over the B
        parameter sets with :func:`torch.func.vmap`, every member seeing the *same* inputs, and stacks the
        outputs along a new leading dimension. Batched calls need a vmap-compatible primary: modules that update
        buffers in place in training mode (BatchNorm) must be called one :math:`\gamma` at a time.

        Args:
            gamma: (k,) or (B, k) conditioning input.

        Returns:
            A callable taking the primary's positional and keyword arguments.

        Raises:
            SciMLInputError: as :meth:`forward`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> hyper = HyperNetwork(nn.Linear(2, 3), 1, hidden_sizes=(4,))
            >>> hyper.functional(0.5)(torch.ones(2)).shape
            torch.Size([3])
        """
        params = self.forward(gamma)
        batched = next(iter(params.values())).ndim > len(self.predicted_shapes[self.predicted_names[0]])

        def call(*args: Any, **kwargs: Any) -> Any:
            if not batched:
                return functional_call(self.primary, params, args, kwargs)

            def one(member: dict[str, torch.Tensor]) -> Any:
                return functional_call(self.primary, member, args, kwargs)

            return vmap(one)(params)

        return call

    def primary_forward(self, gamma: torch.Tensor | float | Sequence[float], *args: Any, **kwargs: Any) -> Any:
        r"""Run the primary network on ``args``/``kwargs`` with the parameters predicted for ``gamma``.

        Shorthand for ``self.functional(gamma)(*args, **kwargs)``; a (B, k) ``gamma`` gives outputs with a
        leading (B,) dimension, all members sharing the same inputs.

        Args:
            gamma: (k,) or (B, k) conditioning input.
            *args: the primary's positional arguments.
            **kwargs: the primary's keyword arguments.

        Returns:
            The primary's output.

        Raises:
            SciMLInputError: as :meth:`forward`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> hyper = HyperNetwork(nn.Linear(2, 3), 2, encoding="z|1-z", hidden_sizes=(4,))
            >>> hyper.primary_forward(torch.rand(6, 2), torch.ones(5, 2)).shape
            torch.Size([6, 5, 3])
        """
        return self.functional(gamma)(*args, **kwargs)

    def theta0(self) -> dict[str, torch.Tensor]:
        r"""The independent parameters :math:`\theta_0` (the output layer's bias), as detached copies.

        Returns:
            Dict from predicted parameter name to a tensor of its shape.

        Raises:
            SciMLError: for ``residual=False`` (there is no :math:`\theta_0`).

        Example:
            >>> primary = nn.Linear(2, 1)
            >>> hyper = HyperNetwork(primary, 1, hidden_sizes=(4,))
            >>> torch.equal(hyper.theta0()["weight"], primary.weight)
            True
        """
        bias = self.output.bias
        if bias is None:
            raise SciMLError("theta0: this hypernetwork has residual=False and no independent parameters")
        chunks = torch.split(bias.detach().clone(), self._numels)
        return {
            name: chunk.reshape(self.predicted_shapes[name])
            for name, chunk in zip(self.predicted_names, chunks, strict=True)
        }

    def set_theta0(self, values: Mapping[str, torch.Tensor]) -> None:
        r"""Overwrite (some of) :math:`\theta_0` in place, e.g. with a pretrained primary's parameters.

        Args:
            values: dict from predicted parameter name to a tensor of that parameter's shape; names left out keep
                their current :math:`\theta_0`.

        Raises:
            SciMLError: for ``residual=False``.
            SciMLInputError: an unknown name or a wrong shape.

        Example:
            >>> hyper = HyperNetwork(nn.Linear(2, 1), 1, hidden_sizes=(4,))
            >>> hyper.set_theta0({"bias": torch.tensor([2.0])})
            >>> hyper.theta0()["bias"]
            tensor([2.])
        """
        bias = self.output.bias
        if bias is None:
            raise SciMLError("set_theta0: this hypernetwork has residual=False and no independent parameters")
        offsets: dict[str, int] = {}
        start = 0
        for name, numel in zip(self.predicted_names, self._numels, strict=True):
            offsets[name] = start
            start += numel
        for name, value in values.items():
            if name not in self.predicted_shapes:
                raise SciMLInputError("values", f"{name!r} is not a predicted parameter")
            if not isinstance(value, torch.Tensor) or value.shape != self.predicted_shapes[name]:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise SciMLInputError(
                    "values", f"{name!r} must be a tensor of shape {tuple(self.predicted_shapes[name])}, got {got}"
                )
        with torch.no_grad():
            for name, value in values.items():
                numel = value.numel()
                bias[offsets[name] : offsets[name] + numel].copy_(value.reshape(-1))

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, encoding={self.encoding!r}, residual={self.residual}, "
            f"predicted={len(self.predicted_names)} tensors / {self.num_predicted} values"
        )


# ------------------------------------------------------------------------------------------------------ experiment


def _mixing_target(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    # (B, 1) gammas and (N, 1) points -> (B, N, 1): a phase- and shape-shifting blend of two curves.
    g = gamma[:, None, :]
    return (1 - g) * torch.sin(3 * x) + g * (torch.abs(2 * x) - 0.5 + 0.3 * torch.cos(5 * x))


def _train_one(
    seed: int, steps: int, *, mip: bool, gammas_per_step: int, lr: float, hidden_sizes: Sequence[int], eval_every: int
) -> tuple[list[float], list[float]]:
    torch.manual_seed(seed)
    primary = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    if mip:
        hyper = HyperNetwork(primary, 1, hidden_sizes=hidden_sizes)
    else:
        hyper = HyperNetwork.baseline(primary, 1, hidden_sizes=hidden_sizes)
    x = torch.linspace(-1, 1, 64).unsqueeze(-1)
    eval_gamma = (torch.arange(10, dtype=torch.float32) + 0.5).div(10).unsqueeze(-1)
    eval_target = _mixing_target(x, eval_gamma)
    sampler = torch.Generator().manual_seed(10_000 + seed)
    optimizer = torch.optim.Adam(hyper.parameters(), lr=lr)
    train_curve: list[float] = []
    eval_curve: list[float] = []
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                eval_curve.append(float(((hyper.primary_forward(eval_gamma, x) - eval_target) ** 2).mean()))
        if step == steps:
            break
        gamma = torch.rand(gammas_per_step, 1, generator=sampler)
        loss = ((hyper.primary_forward(gamma, x) - _mixing_target(x, gamma)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_curve.append(loss.item())
    return train_curve, eval_curve


def mip_convergence_experiment(
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    steps: int = 200,
    *,
    gammas_per_step: int = 8,
    lr: float = 3e-3,
    hidden_sizes: Sequence[int] = (16, 128),
    eval_every: int = 10,
    threshold: float = 0.02,
    progress: bool = False,
) -> dict[str, Any]:
    r"""MIP against the plain hypernetwork on a small data-mixing task, several seeds (deterministic, CPU).

    The primary is a 1-16-16-1 tanh MLP fitted on 64 points :math:`x \in [-1, 1]` to the blend
    :math:`y(x; \gamma) = (1-\gamma)\sin 3x + \gamma\,(|2x| - \tfrac12 + 0.3\cos 5x)`, :math:`\gamma \in [0, 1]`;
    all of its parameters come from a hypernetwork of input width 1. Each Adam step draws ``gammas_per_step``
    values :math:`\gamma \sim U[0,1]` and minimizes the mean squared error over all of them (batched
    :meth:`HyperNetwork.primary_forward`). Both hypernetworks share the seed, primary, data, optimizer, learning
    rate and hidden widths; they differ only in MIP's encoding (``"cos|sin"``), residual :math:`\theta_0` (from the
    primary's init) and hidden biases. Every ``eval_every`` steps the loss on the 10 midpoints
    :math:`\gamma = 0.05, 0.15, \dots, 0.95` is recorded (leaving out :math:`\gamma = 0`, where the plain
    hypernetwork predicts :math:`\theta = 0` whatever it learns). Runs use one CPU thread (restored afterwards)
    and take about half a second each.

    Args:
        seeds: the seeds; each seeds the primary, the hypernetwork and the :math:`\gamma` sampler.
        steps: Adam steps per run.
        gammas_per_step: :math:`\gamma` values per step.
        lr: Adam's learning rate.
        hidden_sizes: hidden widths of both hypernetworks.
        eval_every: evaluation period in steps.
        threshold: loss level for ``steps_to_threshold``.
        progress: show a tqdm progress bar over the runs.

    Returns:
        Dict with ``"eval_steps"`` (list of steps at which the evaluation loss was taken), and for each of
        ``"mip"`` and ``"baseline"`` a dict with ``"eval"`` (per-seed lists of evaluation losses), ``"train"``
        (per-seed lists of training losses, one per step), ``"final"`` (per-seed final evaluation loss),
        ``"auc"`` (per-seed mean evaluation loss over the curve) and ``"steps_to_threshold"`` (per-seed first
        evaluation step with loss at or below ``threshold``, ``None`` if never); plus ``"seeds"``, ``"threshold"``
        and ``"mip_wins"`` (number of seeds where MIP's final loss is lower).

    Raises:
        SciMLInputError: empty ``seeds`` or non-positive ``steps``/``gammas_per_step``/``eval_every``/``lr``.

    Example:
        >>> result = mip_convergence_experiment(seeds=(0,), steps=20)
        >>> result["eval_steps"][:3], len(result["mip"]["eval"][0])
        ([0, 10, 20], 3)
    """
    if len(seeds) == 0:
        raise SciMLInputError("seeds", "must not be empty")
    for name, value in (("steps", steps), ("gammas_per_step", gammas_per_step), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SciMLInputError(name, f"must be a positive integer, got {value!r}")
    if not lr > 0:
        raise SciMLInputError("lr", f"must be positive, got {lr!r}")

    eval_steps = [s for s in range(0, steps + 1) if s % eval_every == 0 or s == steps]
    runs = [(seed, mip) for seed in seeds for mip in (True, False)]
    iterator: Iterable[tuple[int, bool]] = runs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(runs, desc="MIP vs baseline")
    result: dict[str, Any] = {"seeds": list(seeds), "eval_steps": eval_steps, "threshold": threshold}
    for key in ("mip", "baseline"):
        result[key] = {"eval": [], "train": [], "final": [], "auc": [], "steps_to_threshold": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed, mip in iterator:
            train, evaluation = _train_one(
                seed,
                steps,
                mip=mip,
                gammas_per_step=gammas_per_step,
                lr=lr,
                hidden_sizes=hidden_sizes,
                eval_every=eval_every,
            )
            record = result["mip" if mip else "baseline"]
            record["eval"].append(evaluation)
            record["train"].append(train)
            record["final"].append(evaluation[-1])
            record["auc"].append(sum(evaluation) / len(evaluation))
            reached = [s for s, loss in zip(eval_steps, evaluation, strict=True) if loss <= threshold]
            record["steps_to_threshold"].append(reached[0] if reached else None)
    finally:
        torch.set_num_threads(threads)
    result["mip_wins"] = sum(m < b for m, b in zip(result["mip"]["final"], result["baseline"]["final"], strict=True))
    return result
