r"""Lifting and group convolutions on :math:`\mathbb{R}^2 \rtimes G` with implicit (SIREN) kernels.

Feature maps on the group are tensors ``(B, C, N, H, W)``: channel, group sample, row, column. Pixel positions are
points :math:`p = (\text{column}, \text{row})`, and the :math:`k \times k` kernel offsets :math:`d = y - x` are
scaled by :math:`2/k` (the paper's ``affine_grid`` convention) before entering the kernel network.

Reference:
    M. Mironenco and P. Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
    arXiv:2310.11366 (Sec. 5 and App. C).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from sciml_protocols import SciMLInputError, check_in_choices, check_int, check_tensor
from torch import nn

from ._groups import MatrixLieGroup

__all__ = [
    "AffineEquivariantCNN",
    "GroupConv2d",
    "GroupPooling",
    "LiftingConv2d",
    "SirenKernel",
]


def _check_kernel_size(value: object) -> int:
    size = check_int("kernel_size", value, minimum=1)
    if size % 2 == 0:
        raise SciMLInputError("kernel_size", f"must be odd (a centred stencil), got {size}")
    return size


class SirenKernel(nn.Module):
    r"""Implicit kernel: a SIREN MLP from kernel coordinates to a ``c_out x c_in`` weight matrix.

    .. math::
        h_1 = \sin(\omega_0 (W_1 u + b_1)), \quad h_{l+1} = \sin(\omega_0 (W_{l+1} h_l + b_{l+1})), \quad
        k(u) = W_{L} h_{L-1} + b_L,

    initialised as in Sitzmann et al. (first layer :math:`U(-1/d_{in}, 1/d_{in})`, hidden layers
    :math:`U(\pm\sqrt{6/h}/\omega_0)`).

    Args:
        in_features: length of the coordinate vector ``u``.
        out_features: number of outputs (``c_out * c_in``).
        hidden_features: width (the paper uses 60).
        num_hidden: number of sine layers (the paper uses 2).
        omega0: frequency :math:`\omega_0` (the paper uses 10).
        device: parameter device.
        dtype: parameter dtype.

    Example:
        >>> kernel = SirenKernel(2, 6)
        >>> kernel(torch.zeros(5, 2)).shape
        torch.Size([5, 6])

    Reference:
        V. Sitzmann et al., "Implicit Neural Representations with Periodic Activation Functions", NeurIPS 2020.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden_features: int = 60,
        num_hidden: int = 2,
        omega0: float = 10.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("out_features", out_features, minimum=1)
        check_int("hidden_features", hidden_features, minimum=1)
        check_int("num_hidden", num_hidden, minimum=1)
        if not (isinstance(omega0, int | float) and math.isfinite(omega0) and omega0 > 0):
            raise SciMLInputError("omega0", f"must be a positive finite number, got {omega0!r}")
        factory = {"device": device, "dtype": dtype}
        self.omega0 = float(omega0)
        widths = [in_features] + [hidden_features] * num_hidden
        self.sines = nn.ModuleList(nn.Linear(a, b, **factory) for a, b in itertools.pairwise(widths))
        self.output = nn.Linear(hidden_features, out_features, **factory)
        with torch.no_grad():
            for index, fan_in in enumerate(widths[:-1]):
                bound = 1.0 / fan_in if index == 0 else math.sqrt(6.0 / fan_in) / self.omega0
                linear = self.sines[index]
                assert isinstance(linear, nn.Linear)
                linear.weight.uniform_(-bound, bound)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Evaluate the kernel at ``coordinates`` ``(..., in_features)``; returns ``(..., out_features)``."""
        hidden = coordinates
        for layer in self.sines:
            hidden = torch.sin(self.omega0 * layer(hidden))
        return self.output(hidden)


def _offset_grid(kernel_size: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Offsets ``(k, k, 2)`` indexed [row, column] holding (column offset, row offset) times ``2 / k``."""
    radius = kernel_size // 2
    steps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([cols, rows], dim=-1) * (2.0 / kernel_size)


def _check_samples(name: str, samples: object, n: int, reference: torch.Tensor) -> torch.Tensor:
    samples = check_tensor(name, samples)
    if samples.ndim != 3 or samples.shape[1:] != (n, n) or samples.shape[0] < 1:
        raise SciMLInputError(name, f"must have shape (N, {n}, {n}) with N >= 1, got {tuple(samples.shape)}")
    if samples.dtype != reference.dtype or samples.device != reference.device:
        raise SciMLInputError(
            name,
            f"must match the layer's dtype/device {reference.dtype}/{reference.device}, got "
            f"{samples.dtype}/{samples.device}",
        )
    return samples


def _padded_conv(x: torch.Tensor, weight: torch.Tensor, mode: str) -> torch.Tensor:
    """``conv2d`` keeping the size, with zero or replicate padding."""
    pad = weight.shape[-1] // 2
    if mode == "zeros":
        return F.conv2d(x, weight, padding=pad)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), weight)


def _periodic_coordinates(group: MatrixLieGroup, g: torch.Tensor) -> torch.Tensor:
    r"""Kernel-network input: chart coordinates with the rotation angle as :math:`(\cos\theta, \sin\theta)`.

    The output has shape ``(..., dim + 1)``.

    For ``n = 2`` the last chart coordinate is :math:`\sqrt2\,\theta` with :math:`\theta \in (-\pi, \pi]`; a
    kernel of :math:`\theta` itself jumps at :math:`\pm\pi`, one of :math:`(\cos\theta, \sin\theta)` is
    continuous on :math:`SO(2)`.
    """
    coordinates = group.coordinates(g)
    angle = coordinates[..., -1] / math.sqrt(2.0)
    return torch.cat([coordinates[..., :-1], torch.cos(angle)[..., None], torch.sin(angle)[..., None]], dim=-1)


class _KernelMask(nn.Module):
    """Soft (sigmoid) or hard circular window on the transformed kernel coordinates."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        check_in_choices("mask", mode, ("smooth", "hard", "none"))
        self.mode = mode

    def forward(self, spatial: torch.Tensor) -> torch.Tensor:
        radius = torch.linalg.vector_norm(spatial, dim=-1)
        if self.mode == "smooth":
            return torch.sigmoid(2.0 * (1.0 - radius))
        if self.mode == "hard":
            return (radius <= 1.0).to(spatial.dtype)
        return torch.ones_like(radius)


class _ImplicitConv2d(nn.Module):
    """What the lifting and group convolutions share: sizes, group, SIREN kernel, mask and bias (validated).

    The kernel network reads the 2-D offset, and for ``relative_inputs`` also the relative group element's
    periodic coordinates (``1 + group.dim`` numbers).
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    padding_mode: str
    group: MatrixLieGroup
    kernel: SirenKernel
    mask: _KernelMask
    bias: nn.Parameter | None
    _fan_in: int

    def __init__(
        self,
        in_channels: object,
        out_channels: object,
        kernel_size: object,
        *,
        group: object,
        relative_inputs: bool,
        hidden_features: int,
        num_hidden: int,
        omega0: float,
        mask: str,
        bias: bool,
        padding_mode: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        check_in_choices("padding_mode", padding_mode, ("zeros", "replicate"))
        self.padding_mode = padding_mode
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.kernel_size = _check_kernel_size(kernel_size)
        if not isinstance(group, MatrixLieGroup) or group.n != 2:
            raise SciMLInputError("group", f"must be GLPlus(2) or SL(2), got {group!r}")
        self.group = group
        self.kernel = SirenKernel(
            2 + (1 + group.dim if relative_inputs else 0),
            self.out_channels * self.in_channels,
            hidden_features=hidden_features,
            num_hidden=num_hidden,
            omega0=omega0,
            device=device,
            dtype=dtype,
        )
        self.mask = _KernelMask(mask)
        self.bias = nn.Parameter(torch.zeros(self.out_channels, device=device, dtype=dtype)) if bias else None
        self._fan_in = self.in_channels * self.kernel_size * self.kernel_size


class LiftingConv2d(_ImplicitConv2d):
    r"""Lifting convolution from images to functions on :math:`\mathbb{R}^2 \rtimes G`.

    .. math::
        f^{out}(x, g_j) = \sum_{y} k\big(g_j^{-1}(y - x)\big)\, f^{in}(y)\, |\det g_j^{-1}| \; (+\, b),

    with :math:`y - x` over the :math:`k \times k` window. The window is transformed by each :math:`g_j^{-1}`, the
    kernel network is evaluated once on all transformed grids, and one ``conv2d`` runs over the ``C_out * N`` stacked
    kernels. For an affine map :math:`T = (t, A)` and :math:`(Tf)(y) = f(A^{-1}(y - t))`,
    :math:`\mathcal{L}(Tf)(x, g) = \mathcal{L}f(A^{-1}(x - t), A^{-1} g)`; it holds exactly on the pixel grid when
    :math:`A` maps the window onto itself (90-degree rotations, integer translations).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: odd window size ``k``.
        group: the group :math:`G` (:class:`~sciml_equivariant.lie.GLPlus` or :class:`~sciml_equivariant.lie.SL`,
            ``n = 2``).
        hidden_features: width of the SIREN kernel network.
        num_hidden: sine layers of the kernel network.
        omega0: SIREN frequency.
        mask: window on the transformed offsets, ``"smooth"`` (:math:`\sigma(2(1 - |u|))`), ``"hard"``
            (:math:`|u| \le 1`) or ``"none"``.
        bias: add a learnt per-channel bias.
        padding_mode: ``"zeros"`` or ``"replicate"`` (a constant background stays constant up to the border, so
            the border adds no features of its own).
        device: parameter device.
        dtype: parameter dtype.

    Example:
        >>> from sciml_equivariant.lie import SL
        >>> layer = LiftingConv2d(1, 4, 5, group=SL(2), hidden_features=16)
        >>> g, g_inv = SL(2).sample(3, generator=torch.Generator().manual_seed(0))
        >>> layer(torch.randn(2, 1, 12, 12), g_inv).shape
        torch.Size([2, 4, 3, 12, 12])

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        group: MatrixLieGroup,
        hidden_features: int = 60,
        num_hidden: int = 2,
        omega0: float = 10.0,
        mask: str = "smooth",
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            group=group,
            relative_inputs=False,
            hidden_features=hidden_features,
            num_hidden=num_hidden,
            omega0=omega0,
            mask=mask,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )

    def _weight(self, g_inv: torch.Tensor) -> torch.Tensor:
        grid = _offset_grid(self.kernel_size, dtype=g_inv.dtype, device=g_inv.device)
        spatial = torch.einsum("nab,hwb->nhwa", g_inv, grid)  # (N, k, k, 2)
        values = self.kernel(spatial) * self.mask(spatial).unsqueeze(-1)
        values = values * (torch.linalg.det(g_inv).abs() / math.sqrt(self._fan_in))[:, None, None, None]
        num, k = g_inv.shape[0], self.kernel_size
        weight = values.reshape(num, k, k, self.out_channels, self.in_channels).permute(3, 0, 4, 1, 2)
        return weight.reshape(self.out_channels * num, self.in_channels, k, k)

    def forward(self, x: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Lift images ``x`` ``(B, C_in, H, W)`` with output samples given by their inverses ``g_inv`` ``(N, 2, 2)``.

        Returns:
            ``(B, C_out, N, H, W)`` (zero padding keeps the size).

        Raises:
            SciMLInputError: wrong rank or channel count of ``x``; ``g_inv`` of the wrong shape, dtype or device.
        """
        x = check_tensor("x", x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SciMLInputError("x", f"must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        reference = self.kernel.output.weight
        if x.dtype != reference.dtype or x.device != reference.device:
            raise SciMLInputError("x", f"must be {reference.dtype} on {reference.device}, got {x.dtype} on {x.device}")
        g_inv = _check_samples("g_inv", g_inv, 2, reference)
        weight = self._weight(g_inv)
        out = _padded_conv(x, weight, self.padding_mode)
        out = out.reshape(x.shape[0], self.out_channels, g_inv.shape[0], *out.shape[-2:])
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out


class GroupConv2d(_ImplicitConv2d):
    r"""Group convolution on :math:`\mathbb{R}^2 \rtimes G`, a Monte Carlo integral over the input samples.

    .. math::
        f^{out}(x, g_j) = \frac{1}{N_{in}} \sum_{i=1}^{N_{in}} \sum_{y}
        k\big(g_j^{-1}(y - x),\ \xi^{-1}(g_j^{-1}\tilde g_i)\big)\, f^{in}(y, \tilde g_i)\, |\det \tilde g_i|^{-1}
        \; (+\, b),

    the discretisation of :math:`\int f(y, h)\, k((x, g)^{-1}(y, h))\, |\det h|^{-1} dy\, d\mu_G(h)` over the
    samples :math:`\tilde g_i` at which the input is known
    (:func:`~sciml_equivariant.lie.invariant_integration_weights`).
    The kernel network sees the transformed offset (2 numbers) and the chart coordinates of
    :math:`g_j^{-1}\tilde g_i` with the rotation angle :math:`\theta` of its polar factor entered as
    :math:`(\cos\theta, \sin\theta)`, continuous on :math:`SO(2)` (``group.dim + 1`` numbers); input
    channels are packed as ``C_in * N_in`` and a single
    ``conv2d`` evaluates the sum. Transforming all samples by :math:`A` (:math:`\tilde g_i \to A\tilde g_i`,
    :math:`g_j \to A g_j`) leaves the group arguments unchanged, so the layer is exactly equivariant on the pixel grid
    for window-preserving :math:`A` when the samples are transformed accordingly.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: odd window size ``k``.
        group: the group :math:`G` (``n = 2``).
        hidden_features: width of the SIREN kernel network.
        num_hidden: sine layers of the kernel network.
        omega0: SIREN frequency.
        mask: ``"smooth"``, ``"hard"`` or ``"none"`` (see :class:`LiftingConv2d`).
        bias: add a learnt per-channel bias.
        padding_mode: ``"zeros"`` or ``"replicate"`` (a constant background stays constant up to the border, so
            the border adds no features of its own).
        device: parameter device.
        dtype: parameter dtype.

    Example:
        >>> from sciml_equivariant.lie import GLPlus
        >>> group = GLPlus(2)
        >>> layer = GroupConv2d(3, 4, 3, group=group, hidden_features=16)
        >>> g_in, _ = group.sample(2, generator=torch.Generator().manual_seed(0))
        >>> _, g_out_inv = group.sample(5, generator=torch.Generator().manual_seed(1))
        >>> layer(torch.randn(1, 3, 2, 8, 8), g_in, g_out_inv).shape
        torch.Size([1, 4, 5, 8, 8])

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        group: MatrixLieGroup,
        hidden_features: int = 60,
        num_hidden: int = 2,
        omega0: float = 10.0,
        mask: str = "smooth",
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            group=group,
            relative_inputs=True,
            hidden_features=hidden_features,
            num_hidden=num_hidden,
            omega0=omega0,
            mask=mask,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )

    def _weight(self, g_in: torch.Tensor, g_out_inv: torch.Tensor) -> torch.Tensor:
        k, n_in, n_out = self.kernel_size, g_in.shape[0], g_out_inv.shape[0]
        grid = _offset_grid(k, dtype=g_in.dtype, device=g_in.device)
        spatial = torch.einsum("nab,hwb->nhwa", g_out_inv, grid)  # (N_out, k, k, 2)
        relative = _periodic_coordinates(self.group, g_out_inv[:, None] @ g_in[None, :])  # (N_out, N_in, dim + 1)
        inputs = torch.cat(
            [
                spatial[:, None].expand(n_out, n_in, k, k, 2),
                relative[:, :, None, None].expand(n_out, n_in, k, k, relative.shape[-1]),
            ],
            dim=-1,
        )
        values = self.kernel(inputs) * self.mask(spatial)[:, None, :, :, None]
        volume = 1.0 / (torch.linalg.det(g_in).abs() * n_in * math.sqrt(self._fan_in))
        values = values * volume[None, :, None, None, None]
        weight = values.reshape(n_out, n_in, k, k, self.out_channels, self.in_channels).permute(4, 0, 5, 1, 2, 3)
        return weight.reshape(self.out_channels * n_out, self.in_channels * n_in, k, k)

    def forward(self, x: torch.Tensor, g_in: torch.Tensor, g_out_inv: torch.Tensor) -> torch.Tensor:
        r"""Convolve ``x`` ``(B, C_in, N_in, H, W)``, known at samples ``g_in`` ``(N_in, 2, 2)``.

        Args:
            x: features on the input samples.
            g_in: the input samples :math:`\tilde g_i`.
            g_out_inv: inverses of the output samples, ``(N_out, 2, 2)``.

        Returns:
            ``(B, C_out, N_out, H, W)``.

        Raises:
            SciMLInputError: wrong rank, channel count or sample count of ``x``; samples of the wrong shape, dtype
                or device.
        """
        x = check_tensor("x", x)
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise SciMLInputError("x", f"must have shape (B, {self.in_channels}, N, H, W), got {tuple(x.shape)}")
        reference = self.kernel.output.weight
        if x.dtype != reference.dtype or x.device != reference.device:
            raise SciMLInputError("x", f"must be {reference.dtype} on {reference.device}, got {x.dtype} on {x.device}")
        g_in = _check_samples("g_in", g_in, 2, reference)
        g_out_inv = _check_samples("g_out_inv", g_out_inv, 2, reference)
        if g_in.shape[0] != x.shape[2]:
            raise SciMLInputError("g_in", f"has {g_in.shape[0]} samples but x has {x.shape[2]} on its group axis")
        weight = self._weight(g_in, g_out_inv)
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        out = _padded_conv(x.reshape(batch, -1, height, width), weight, self.padding_mode)
        out = out.reshape(batch, self.out_channels, g_out_inv.shape[0], *out.shape[-2:])
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out


class GroupPooling(nn.Module):
    r"""Pooling over the group axis: :math:`\max_j f(x, g_j)` or :math:`\frac1N\sum_j f(x, g_j)`.

    Args:
        reduction: ``"max"`` or ``"mean"``.

    Example:
        >>> GroupPooling("mean")(torch.ones(2, 3, 4, 5, 5)).shape
        torch.Size([2, 3, 5, 5])
    """

    def __init__(self, reduction: str = "max") -> None:
        super().__init__()
        check_in_choices("reduction", reduction, ("max", "mean"))
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""Pool ``(B, C, N, H, W)`` to ``(B, C, H, W)``."""
        x = check_tensor("x", x)
        if x.ndim != 5:
            raise SciMLInputError("x", f"must have shape (B, C, N, H, W), got {tuple(x.shape)}")
        return x.amax(dim=2) if self.reduction == "max" else x.mean(dim=2)


class _ChannelNorm(nn.Module):
    """Normalisation of group feature maps ``(B, C, N, H, W)`` with a per-channel affine map.

    ``"layer"``: statistics of each example over (channel, group sample, pixel); ``"batch"``: batch norm of each
    channel over (example, group sample, pixel), with running statistics for evaluation. Both are sums over the
    whole group/space grid, so they do not change when a transform permutes samples or pixels: the layer stays
    equivariant. (A norm over channels alone at every pixel blows the empty background up to unit scale and makes
    global max pooling uninformative.)
    """

    def __init__(
        self, channels: int, mode: str, *, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> None:
        super().__init__()
        check_in_choices("norm", mode, ("layer", "batch"))
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))
        self.batch = (
            nn.BatchNorm3d(channels, affine=False, momentum=0.05, device=device, dtype=dtype)
            if mode == "batch"
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.batch is not None:
            normalised = self.batch(x)
        else:
            dims = tuple(range(1, x.ndim))
            centred = x - x.mean(dim=dims, keepdim=True)
            var = (centred * centred).mean(dim=dims, keepdim=True)
            normalised = centred * torch.rsqrt(var + 1e-5)
        return normalised * self.weight.view(shape) + self.bias.view(shape)


def _rotate_samples(
    g: torch.Tensor, g_inv: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Right-multiply all samples by one random rotation :math:`R_0`: :math:`(g R_0, R_0^\top g^{-1})`.

    The Haar measure is right-invariant, so the law of i.i.d. Haar samples is unchanged, and an equidistant grid
    of rotation angles becomes a randomly offset (stratified) grid: every angle is visited over many passes.
    """
    angle = 2.0 * math.pi * torch.rand((), generator=generator, dtype=g.dtype, device=g.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
    return g @ rotation, rotation.T @ g_inv


class AffineEquivariantCNN(nn.Module):
    r"""A small :math:`\mathbb{R}^2 \rtimes G` classifier: lifting block, group-conv block, projection, pooling.

    ``lift -> [2x2 average pool] -> norm -> GELU -> group conv -> norm -> GELU -> group pooling (projection to the
    plane) -> global max pool over pixels -> layer norm -> linear``; the norms normalise over (sample, pixel) and
    commute with permutations of samples and pixels. Each forward pass draws fresh group samples for both blocks
    (from ``generator`` when given, so two passes with equally seeded generators use the same samples), and with
    ``rotation_offset`` turns each sample set by one random rotation, so an equidistant rotation grid sweeps all
    angles during training. In evaluation mode the logits are averaged over ``num_draws`` independent sample
    sets, a Monte Carlo average that lowers the sampling noise. Group pooling over the samples and global spatial
    pooling make the output approximately invariant to affine maps in :math:`\mathbb{R}^2 \rtimes G`; the Monte
    Carlo error falls as ``num_samples`` (and ``num_draws``) grows.

    Args:
        group: :class:`~sciml_equivariant.lie.GLPlus` or :class:`~sciml_equivariant.lie.SL` with ``n = 2``.
        in_channels: image channels.
        num_classes: classifier outputs.
        width: channels of both blocks.
        kernel_size: odd window size of the lifting convolution (and of the group convolution by default).
        group_kernel_size: odd window size of the group convolution (after the optional downsampling); defaults to
            ``kernel_size``.
        num_samples: group samples per layer (settable attribute).
        hidden_features: width of the kernel networks.
        omega0: SIREN frequency.
        downsample: 2x2 average pooling after the lifting convolution.
        group_pooling: projection to the plane, ``"mean"`` (averages the Monte Carlo noise of the samples) or
            ``"max"``.
        norm: ``"batch"`` (per channel over batch, samples and pixels) or ``"layer"`` (per example).
        rotation_offset: turn every sample set by a random rotation.
        num_draws: sample sets averaged in evaluation mode (settable attribute).
        device: parameter device.
        dtype: parameter dtype.

    Raises:
        SciMLInputError: non-positive ``num_samples``, ``num_classes``, ``width`` or ``num_draws``; unknown
            ``norm`` or ``group_pooling``.

    Example:
        >>> from sciml_equivariant.lie import SL
        >>> model = AffineEquivariantCNN(SL(2), num_classes=3, width=4, num_samples=2, hidden_features=8)
        >>> model(torch.randn(2, 1, 16, 16), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366.
    """

    def __init__(
        self,
        group: MatrixLieGroup,
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        width: int = 16,
        kernel_size: int = 5,
        group_kernel_size: int | None = None,
        num_samples: int = 8,
        hidden_features: int = 32,
        omega0: float = 10.0,
        downsample: bool = True,
        group_pooling: str = "mean",
        norm: str = "batch",
        rotation_offset: bool = True,
        num_draws: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.group = group
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        self.num_draws = check_int("num_draws", num_draws, minimum=1)
        check_int("num_classes", num_classes, minimum=1)
        check_int("width", width, minimum=1)
        self.lift = LiftingConv2d(
            in_channels, width, kernel_size, group=group, hidden_features=hidden_features, omega0=omega0, **factory
        )
        self.norm1 = _ChannelNorm(width, norm, **factory)
        self.conv = GroupConv2d(
            width,
            width,
            kernel_size if group_kernel_size is None else _check_kernel_size(group_kernel_size),
            group=group,
            hidden_features=hidden_features,
            omega0=omega0,
            padding_mode="replicate",
            **factory,
        )
        self.norm2 = _ChannelNorm(width, norm, **factory)
        self.project = GroupPooling(group_pooling)
        self.downsample = downsample
        self.rotation_offset = bool(rotation_offset)
        self.head_norm = nn.LayerNorm(width, **factory)
        self.classifier = nn.Linear(width, num_classes, **factory)

    def _logits(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        reference = self.classifier.weight
        factory = {"dtype": reference.dtype, "device": reference.device, "generator": generator}
        g1, g1_inv = self.group.sample(self.num_samples, **factory)
        g2, g2_inv = self.group.sample(self.num_samples, **factory)
        if self.rotation_offset:
            g1, g1_inv = _rotate_samples(g1, g1_inv, generator)
            g2, g2_inv = _rotate_samples(g2, g2_inv, generator)
        h = self.lift(x, g1_inv)
        if self.downsample:
            b, c, n, height, width = h.shape
            h = F.avg_pool2d(h.reshape(b, c * n, height, width), 2).reshape(b, c, n, height // 2, width // 2)
        h = F.gelu(self.norm1(h))
        h = F.gelu(self.norm2(self.conv(h, g1, g2_inv)))
        h = self.project(h)
        return self.classifier(self.head_norm(h.amax(dim=(-2, -1))))

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)``.

        Args:
            x: images.
            generator: source of the group samples (global RNG when ``None``).

        Returns:
            The logits; in evaluation mode, their mean over ``num_draws`` sample sets.
        """
        draws = 1 if self.training else self.num_draws
        logits = self._logits(x, generator)
        for _ in range(draws - 1):
            logits = logits + self._logits(x, generator)
        return logits / draws
