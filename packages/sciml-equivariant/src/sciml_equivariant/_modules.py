r"""Gaunt tensor-product modules: channel-wise product, edge-aligned convolution, many-body (nu-fold) products.

All three are built on one primitive, the Gaunt tensor product of two functions on the sphere
(Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
Products", ICLR 2024, arXiv:2401.10216). Per channel :math:`c`, features with irreps
:math:`C\times 0e + C\times 1o + \dots + C\times L p` are the coefficients of a function
:math:`f_c(\hat r) = \sum_{l \le L} \sum_m x_{c,lm} Y_{lm}(\hat r)` in the orthonormal (``"integral"``) real
spherical-harmonic basis of e3nn (polar axis :math:`y`), and

.. math::

    (x \otimes_G y)_{c,lm} = \int_{S^2} f^x_c(\hat r)\, f^y_c(\hat r)\, Y_{lm}(\hat r)\, d\hat r
    = \sum_{l_1 m_1 l_2 m_2} G^{lm}_{l_1 m_1, l_2 m_2}\, x_{c, l_1 m_1}\, y_{c, l_2 m_2}.

Only paths with :math:`l_1 + l_2 + l` even occur (a product of functions is symmetric: no cross product). The
product is computed on a quadrature grid exact for the product's degree (:mod:`sciml_equivariant._kernels.gaunt_grid`:
three matrix products, one fused Triton kernel on CUDA), whose basis matrices come from
:class:`sciml_equivariant._gaunt.GauntPlan`.

Layouts: inputs and outputs are e3nn ``mul_ir`` features ``(..., C * (L+1)**2)`` (for each degree a contiguous
block of ``C * (2l+1)`` numbers ordered ``[channel, m]``). Internally the modules work on the "coefficient" layout
``(..., C, (L+1)**2)`` (degree index last).

Learnable weights never break equivariance because they act per degree (scalars, or channel-mixing matrices that
commute with rotations):

* :class:`GauntTensorProduct` with ``weights="separable"``: the paper's separable weights
  :math:`w^{(1)}_{c,l_1} w^{(2)}_{c,l_2} w^{(3)}_{c,l}` (rescale each input degree, multiply, rescale each output
  degree), which keeps the function-product structure (a general per-path weight would not);
  ``weights="fully_connected"``: channel-mixing linear maps :math:`W_l \in \mathbb{R}^{C\times C}` per degree
  on both inputs and on the output;
* :class:`GauntConvolution`: the product of the node features with the edge-aligned filter function
  :math:`\phi_e(\hat s) = \sum_l R_{c,l}(|r_e|) \sum_m Y_{lm}(\hat r_e) Y_{lm}(\hat s)
  = \sum_l R_{c,l}(|r_e|) \tfrac{2l+1}{4\pi} P_l(\hat r_e \cdot \hat s)`,
  which is axially symmetric about the edge (only :math:`m = 0` in the edge frame, as in eSCN);
* :class:`GauntManyBody`: per-channel, per-order, per-degree weights on the powers :math:`f^\nu`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sciml_protocols import SciMLInputError, check_int
from torch import Tensor, nn

from ._gaunt import _grid_basis_np, _layout_index_np
from ._irreps import Irreps, gaunt_irreps
from ._kernels.gaunt_grid import gaunt_grid_product
from ._so3 import spherical_harmonics

__all__ = ["GauntConvolution", "GauntManyBody", "GauntTensorProduct"]

_WEIGHTS = ("separable", "fully_connected", None)
_BACKENDS = ("auto", "torch", "triton")


# ----------------------------------------------------------------------------------------------- helpers


def _check_backend(backend: object) -> str:
    if backend not in _BACKENDS:
        raise SciMLInputError("backend", f"must be one of {_BACKENDS}; got {backend!r}")
    return str(backend)


def _factory(device: torch.device | str | None, dtype: torch.dtype | None) -> dict[str, Any]:
    if dtype is not None and not dtype.is_floating_point:
        raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
    return {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}


def _irreps(channels: int, lmax: int) -> Irreps:
    return gaunt_irreps(channels, lmax)


def _degree_of_column(lmax: int) -> Tensor:
    """Degree l of each coefficient column k = l^2 + l + m, shape ((lmax+1)^2,)."""
    return torch.from_numpy(np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1))


def _grid_bases(l1: int, l2: int, lout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 grid matrices (B_x (G, K1), B_y (G, K2), W (G, Kout)) of the Gaunt product (l1, l2) -> lout."""
    # the grid backend of GauntPlan: (B_x^T, B_y^T, W), built in float64 NumPy from closed forms and cached
    basis_x_t, basis_y_t, projection = _grid_basis_np(l1, l2, lout, "integral")
    return basis_x_t.T, basis_y_t.T, projection


def _as_tensor(array: np.ndarray, device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
    """A fresh tensor with the values of a float64 NumPy array (converted in NumPy when it can: no torch threads)."""
    numpy_dtype = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}.get(dtype)
    if numpy_dtype is None:
        return torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)
    return torch.from_numpy(np.array(array, dtype=numpy_dtype)).to(device=device)


class _GridProduct(nn.Module):
    """The channel-wise Gaunt product on the coefficient layout, holding the grid matrices as (unsaved) buffers."""

    basis_x: Tensor
    basis_y: Tensor
    projection: Tensor

    def __init__(self, l1: int, l2: int, lout: int, backend: str, factory: dict[str, Any]) -> None:
        super().__init__()
        self.l1, self.l2, self.lout, self.backend = l1, l2, lout, backend
        basis_x, basis_y, projection = _grid_bases(l1, l2, lout)
        self.register_buffer("basis_x", _as_tensor(basis_x, **factory), persistent=False)
        self.register_buffer("basis_y", _as_tensor(basis_y, **factory), persistent=False)
        self.register_buffer("projection", _as_tensor(projection, **factory), persistent=False)

    def _apply(self, fn: Any, recurse: bool = True) -> _GridProduct:
        # .to() / .double() / .cuda(): take the new dtype and device, but the values from the float64 master
        # copy, so that a float32 module converted to float64 has float64-exact grid matrices
        super()._apply(fn, recurse)
        masters = _grid_bases(self.l1, self.l2, self.lout)
        for name, master in zip(("basis_x", "basis_y", "projection"), masters, strict=True):
            current: Tensor = getattr(self, name)
            if current.dtype.is_floating_point:
                setattr(self, name, _as_tensor(master, current.device, current.dtype))
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """(..., C, K1), (..., C, K2) -> (..., C, Kout)."""
        return gaunt_grid_product(x, y, self.basis_x, self.basis_y, self.projection, backend=self.backend)

    def extra_repr(self) -> str:
        return f"l1={self.l1}, l2={self.l2}, lout={self.lout}, grid_points={self.projection.shape[0]}"


class _Layout(nn.Module):
    """mul_ir <-> coefficient layout for C channels up to degree L (index buffers, unsaved)."""

    gather: Tensor
    scatter: Tensor

    def __init__(self, channels: int, lmax: int, device: torch.device | str | None) -> None:
        super().__init__()
        self.channels, self.lmax = channels, lmax
        self.dim = (lmax + 1) ** 2
        gather, scatter = _layout_index_np(channels, lmax)
        self.register_buffer("gather", torch.from_numpy(gather).to(device), persistent=False)
        self.register_buffer("scatter", torch.from_numpy(scatter).to(device), persistent=False)

    def to_coefficients(self, x: Tensor) -> Tensor:
        return x.index_select(-1, self.gather).unflatten(-1, (self.channels, self.dim))

    def to_mul_ir(self, x: Tensor) -> Tensor:
        return x.flatten(-2).index_select(-1, self.scatter)


def _check_features(name: str, x: object, size: int, reference: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != size:
        raise SciMLInputError(name, f"must have shape (..., {size}), got {tuple(x.shape)}")
    if x.dtype != reference.dtype:
        raise SciMLInputError(name, f"must have the module's dtype {reference.dtype}, got {x.dtype}")
    if x.device != reference.device:
        raise SciMLInputError(name, f"must be on the module's device {reference.device}, got {x.device}")
    return x


def _linear_per_degree(x: Tensor, weight: Tensor, lmax: int) -> Tensor:
    """Channel mixing per degree on the coefficient layout: (..., C, K) with weight (L+1, C_out, C_in)."""
    blocks = [torch.matmul(weight[ell], x[..., ell * ell : (ell + 1) * (ell + 1)]) for ell in range(lmax + 1)]
    return torch.cat(blocks, dim=-1)


# ----------------------------------------------------------------------------------------------- modules


class GauntTensorProduct(nn.Module):
    r"""Channel-wise Gaunt tensor product with learnable per-degree weights (e3nn ``mul_ir`` layout in and out).

    For features :math:`x` (irreps ``Cx0e+Cx1o+...+CxL1p``) and :math:`y` (up to ``L2``) computes, per channel
    :math:`c` and output degree :math:`l \le L_{\text{out}}`,

    .. math::

        \text{``separable''}: \quad
        z_{c,lm} = w^{(3)}_{c,l} \sum_{l_1 m_1 l_2 m_2} G^{lm}_{l_1 m_1, l_2 m_2}\,
        w^{(1)}_{c,l_1} x_{c,l_1 m_1}\, w^{(2)}_{c,l_2} y_{c,l_2 m_2},

    the paper's separable weights (the product of the rescaled input functions, projected and rescaled per degree;
    initialised to one, so the module starts as the plain product); ``"fully_connected"``: the same with the
    rescalings replaced by channel-mixing matrices per degree,
    :math:`z_l = W^{(3)}_l\, \big[(W^{(1)} x) \otimes_G (W^{(2)} y)\big]_l` with
    :math:`W^{(i)}_l \in \mathbb{R}^{C \times C}` (initialised :math:`\mathcal{N}(0, 1/C)`); ``None``: no weights,
    :math:`z = x \otimes_G y`. :math:`G` are the Gaunt coefficients :math:`\int Y_{l_1 m_1} Y_{l_2 m_2} Y_{lm}` of
    the orthonormal real harmonics, so only paths with :math:`l_1 + l_2 + l` even appear (use
    ``ClebschGordanTensorProduct`` for the odd ones). Cost :math:`O(C\,G\,(K_1 + K_2 + K_{\text{out}}))` per sample
    with :math:`G \approx (L_1 + L_2 + L_{\text{out}})^2/2` grid points, against :math:`O(C L^6)` for a
    Clebsch-Gordan product.

    Reference: Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt
    Tensor Products", ICLR 2024, arXiv:2401.10216.

    Args:
        channels: :math:`C \ge 1`, channels per degree (the same for both inputs and the output).
        lmax_in1: :math:`L_1 \ge 0`.
        lmax_in2: :math:`L_2 \ge 0`.
        lmax_out: :math:`L_{\text{out}} \ge 0` (degrees above :math:`L_1 + L_2` come out zero).
        weights: ``"separable"``, ``"fully_connected"`` or ``None``.
        backend: ``"auto"`` or ``"torch"`` (three matrix products, cuBLAS on CUDA: the fastest on an H100) or
            ``"triton"`` (the fused kernel, which never stores the grid values: less memory, slower).
        device: device of the parameters and buffers.
        dtype: floating dtype of the parameters and buffers (inputs must have it).

    Raises:
        SciMLInputError: non-int or out-of-range degrees or channels, an unknown ``weights`` or ``backend``, a
            non-floating ``dtype``; in ``forward``: inputs of the wrong size, dtype or device.

    Example:
        >>> tp = GauntTensorProduct(2, 1, 1, 2, weights=None, dtype=torch.float64)
        >>> str(tp.irreps_in1), str(tp.irreps_out)
        ('2x0e+2x1o', '2x0e+2x1o+2x2e')
        >>> x = torch.zeros(1, 8, dtype=torch.float64)
        >>> x[0, :2] = math.sqrt(4 * math.pi)  # f = 1 in both channels
        >>> y = torch.arange(8, dtype=torch.float64)[None]
        >>> z = tp(x, y)  # 1 * f_y = f_y
        >>> torch.allclose(z[:, :8], y), float(z[:, 8:].abs().max())
        (True, 0.0)
    """

    degree_in1: Tensor
    degree_in2: Tensor
    degree_out: Tensor

    def __init__(
        self,
        channels: int,
        lmax_in1: int,
        lmax_in2: int,
        lmax_out: int,
        *,
        weights: str | None = "separable",
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.lmax_in1 = check_int("lmax_in1", lmax_in1, minimum=0)
        self.lmax_in2 = check_int("lmax_in2", lmax_in2, minimum=0)
        self.lmax_out = check_int("lmax_out", lmax_out, minimum=0)
        if weights not in _WEIGHTS:
            raise SciMLInputError("weights", f"must be one of {_WEIGHTS}; got {weights!r}")
        self.weights = weights
        self.backend = _check_backend(backend)
        factory = _factory(device, dtype)
        c = self.channels
        self.layout_in1 = _Layout(c, self.lmax_in1, device)
        self.layout_in2 = _Layout(c, self.lmax_in2, device)
        self.layout_out = _Layout(c, self.lmax_out, device)
        self.product = _GridProduct(self.lmax_in1, self.lmax_in2, self.lmax_out, self.backend, factory)
        self.weight_in1: nn.Parameter | None = None
        self.weight_in2: nn.Parameter | None = None
        self.weight_out: nn.Parameter | None = None
        if weights == "separable":
            self.weight_in1 = nn.Parameter(torch.ones(c, self.lmax_in1 + 1, **factory))
            self.weight_in2 = nn.Parameter(torch.ones(c, self.lmax_in2 + 1, **factory))
            self.weight_out = nn.Parameter(torch.ones(c, self.lmax_out + 1, **factory))
        elif weights == "fully_connected":
            scale = 1.0 / math.sqrt(c)
            self.weight_in1 = nn.Parameter(torch.randn(self.lmax_in1 + 1, c, c, **factory) * scale)
            self.weight_in2 = nn.Parameter(torch.randn(self.lmax_in2 + 1, c, c, **factory) * scale)
            self.weight_out = nn.Parameter(torch.randn(self.lmax_out + 1, c, c, **factory) * scale)
        self.register_buffer("degree_in1", _degree_of_column(self.lmax_in1).to(device), persistent=False)
        self.register_buffer("degree_in2", _degree_of_column(self.lmax_in2).to(device), persistent=False)
        self.register_buffer("degree_out", _degree_of_column(self.lmax_out).to(device), persistent=False)

    @property
    def irreps_in1(self) -> Irreps:
        """Irreps of the first input, ``"Cx0e+Cx1o+..."`` up to ``lmax_in1``."""
        return _irreps(self.channels, self.lmax_in1)

    @property
    def irreps_in2(self) -> Irreps:
        """Irreps of the second input."""
        return _irreps(self.channels, self.lmax_in2)

    @property
    def irreps_out(self) -> Irreps:
        """Irreps of the output."""
        return _irreps(self.channels, self.lmax_out)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Product of two feature tensors.

        Args:
            x1: (..., C * (L1+1)**2) in mul_ir layout.
            x2: (..., C * (L2+1)**2), leading dims broadcastable with ``x1``'s.

        Returns:
            (broadcast leading dims..., C * (Lout+1)**2) in mul_ir layout.

        Raises:
            SciMLInputError: wrong last dimension, dtype or device.
        """
        reference = self.product.projection
        _check_features("x1", x1, self.channels * self.layout_in1.dim, reference)
        _check_features("x2", x2, self.channels * self.layout_in2.dim, reference)
        a = self.layout_in1.to_coefficients(x1)
        b = self.layout_in2.to_coefficients(x2)
        if self.weights == "separable":
            assert self.weight_in1 is not None
            assert self.weight_in2 is not None
            a = a * self.weight_in1[:, self.degree_in1]
            b = b * self.weight_in2[:, self.degree_in2]
        elif self.weights == "fully_connected":
            assert self.weight_in1 is not None
            assert self.weight_in2 is not None
            a = _linear_per_degree(a, self.weight_in1, self.lmax_in1)
            b = _linear_per_degree(b, self.weight_in2, self.lmax_in2)
        out = self.product(a, b)
        if self.weights == "separable":
            assert self.weight_out is not None
            out = out * self.weight_out[:, self.degree_out]
        elif self.weights == "fully_connected":
            assert self.weight_out is not None
            out = _linear_per_degree(out, self.weight_out, self.lmax_out)
        return self.layout_out.to_mul_ir(out)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, lmax_in1={self.lmax_in1}, lmax_in2={self.lmax_in2}, "
            f"lmax_out={self.lmax_out}, weights={self.weights!r}, backend={self.backend!r}"
        )


class _RadialMLP(nn.Module):
    """|r| -> per-channel, per-degree filter weights: Bessel basis with a cosine cutoff, then a SiLU MLP."""

    frequencies: Tensor

    def __init__(self, num_basis: int, hidden: int, outputs: int, cutoff: float, factory: dict[str, Any]) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer(
            "frequencies",
            torch.arange(1, num_basis + 1, **factory) * (math.pi / cutoff),
            persistent=False,
        )
        self.hidden = nn.Linear(num_basis, hidden, **factory)
        self.out = nn.Linear(hidden, outputs, **factory)

    def forward(self, lengths: Tensor) -> Tensor:
        r = lengths[..., None]
        # sin(n pi r / rc) / r is smooth in r (its Taylor series is even); the cutoff makes weights vanish at rc
        basis = torch.sinc(self.frequencies * r / math.pi) * self.frequencies
        envelope = torch.where(r < self.cutoff, 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0), 0.0)
        return self.out(nn.functional.silu(self.hidden(basis * envelope))) * envelope


class GauntConvolution(nn.Module):
    r"""Equivariant point convolution with edge-aligned filters and Gaunt products; messages summed at the nodes.

    For nodes with features :math:`x_i` (irreps ``Cx0e+...+CxLin p``, mul_ir) and directed edges
    :math:`e = (s \to d)` with vectors :math:`r_e` (from source to destination, or any convention the caller keeps),

    .. math::

        \text{out}_d = \sum_{e:\, \text{dst}(e) = d} x_{\text{src}(e)} \otimes_G \phi_e, \qquad
        \phi_{e,c}(\hat s) = \sum_{l \le L_f} R_{c,l}(|r_e|) \sum_m Y_{lm}(\hat r_e)\, Y_{lm}(\hat s)
        = \sum_{l \le L_f} R_{c,l}(|r_e|)\, \tfrac{2l+1}{4\pi}\, P_l(\hat r_e\cdot \hat s),

    a filter that is axially symmetric about the edge: in a frame whose polar axis is :math:`\hat r_e` it has only
    :math:`m = 0` components, which is the eSCN / Gaunt-paper edge-aligned convolution (Passaro & Zitnick,
    "Reducing SO(3) Convolutions to SO(2) for Efficient Equivariant GNNs", ICML 2023; Luo et al., ICLR 2024,
    arXiv:2401.10216, section 3.3). Instead of rotating every edge's features into that frame and back, the
    product is taken in the global frame with the filter's coefficients
    :math:`R_{c,l}(|r_e|) Y_{lm}(\hat r_e)`, which is the same function, hence the same result, exactly (no Wigner
    matrices; cost :math:`O(E\,C\,G\,(K_{\text{in}} + K_f + K_{\text{out}}))`). :math:`R` is a small MLP of a
    Bessel radial basis :math:`\sin(n\pi r/r_c)/r` with a cosine cutoff (weights vanish at :math:`r_c`), or any
    module passed as ``radial`` mapping lengths ``(E,)`` to ``(E, C * (Lf+1))``.

    Args:
        channels: :math:`C \ge 1`.
        lmax_in: degree of the node features.
        lmax_filter: :math:`L_f`, degree of the filter.
        lmax_out: degree of the output features.
        radial: optional module for :math:`R` (lengths (E,) -> (E, C * (Lf+1)), degree-major per channel:
            entry ``c * (Lf+1) + l``); default a Bessel-basis MLP.
        num_radial_basis: size of the default Bessel basis.
        radial_hidden: hidden width of the default MLP.
        cutoff: :math:`r_c > 0` of the default radial function.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        device: device of parameters and buffers.
        dtype: floating dtype.

    Raises:
        SciMLInputError: bad hyperparameters; in ``forward``: features of the wrong size, dtype or device, edge
            indices that are not 1-D integer tensors of one length or point outside the nodes, edge vectors not
            (E, 3) or of zero length.

    Example:
        >>> conv = GauntConvolution(2, 1, 1, 1, dtype=torch.float64)
        >>> x = torch.randn(3, 8, dtype=torch.float64)
        >>> src, dst = torch.tensor([0, 1]), torch.tensor([1, 2])
        >>> conv(x, src, dst, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)).shape
        torch.Size([3, 8])
    """

    degree_filter: Tensor

    def __init__(
        self,
        channels: int,
        lmax_in: int,
        lmax_filter: int,
        lmax_out: int,
        *,
        radial: nn.Module | None = None,
        num_radial_basis: int = 8,
        radial_hidden: int = 32,
        cutoff: float = 5.0,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.lmax_in = check_int("lmax_in", lmax_in, minimum=0)
        self.lmax_filter = check_int("lmax_filter", lmax_filter, minimum=0)
        self.lmax_out = check_int("lmax_out", lmax_out, minimum=0)
        num_radial_basis = check_int("num_radial_basis", num_radial_basis, minimum=1)
        radial_hidden = check_int("radial_hidden", radial_hidden, minimum=1)
        if isinstance(cutoff, bool) or not isinstance(cutoff, int | float) or not math.isfinite(cutoff) or cutoff <= 0:
            raise SciMLInputError("cutoff", f"must be a positive finite number, got {cutoff!r}")
        if radial is not None and not isinstance(radial, nn.Module):
            raise SciMLInputError("radial", f"must be an nn.Module or None, got {type(radial).__name__}")
        self.backend = _check_backend(backend)
        factory = _factory(device, dtype)
        c = self.channels
        self.layout_in = _Layout(c, self.lmax_in, device)
        self.layout_out = _Layout(c, self.lmax_out, device)
        self.product = _GridProduct(self.lmax_in, self.lmax_filter, self.lmax_out, self.backend, factory)
        self.radial = (
            radial
            if radial is not None
            else _RadialMLP(num_radial_basis, radial_hidden, c * (self.lmax_filter + 1), float(cutoff), factory)
        )
        self.register_buffer("degree_filter", _degree_of_column(self.lmax_filter).to(device), persistent=False)

    @property
    def irreps_in(self) -> Irreps:
        """Irreps of the node features."""
        return _irreps(self.channels, self.lmax_in)

    @property
    def irreps_out(self) -> Irreps:
        """Irreps of the output."""
        return _irreps(self.channels, self.lmax_out)

    def filter_coefficients(self, edge_vectors: Tensor) -> Tensor:
        r"""Coefficients :math:`R_{c,l}(|r_e|)\, Y_{lm}(\hat r_e)` of each edge's filter, shape (E, C, (Lf+1)**2).

        Args:
            edge_vectors: (E, 3).

        Returns:
            (E, C, (Lf+1)**2) in the coefficient layout (degree index last).
        """
        lengths = torch.linalg.vector_norm(edge_vectors, dim=-1)
        radial = self.radial(lengths).unflatten(-1, (self.channels, self.lmax_filter + 1))
        sh = spherical_harmonics(self.lmax_filter, edge_vectors, normalize=True, normalization="integral")
        return radial[..., self.degree_filter] * sh[:, None, :]

    def forward(self, node_features: Tensor, edge_src: Tensor, edge_dst: Tensor, edge_vectors: Tensor) -> Tensor:
        """Messages along the edges, summed at their destinations.

        Args:
            node_features: (n_nodes, C * (Lin+1)**2) in mul_ir layout.
            edge_src: (E,) integer indices of the source nodes.
            edge_dst: (E,) integer indices of the destination nodes.
            edge_vectors: (E, 3) edge vectors (non-zero), dtype of the module.

        Returns:
            (n_nodes, C * (Lout+1)**2) in mul_ir layout.

        Raises:
            SciMLInputError: as described in the class docstring.
        """
        reference = self.product.projection
        _check_features("node_features", node_features, self.channels * self.layout_in.dim, reference)
        if node_features.dim() != 2:
            raise SciMLInputError(
                "node_features", f"must be 2-D (n_nodes, dim), got shape {tuple(node_features.shape)}"
            )
        _check_features("edge_vectors", edge_vectors, 3, reference)
        n_edges = edge_vectors.shape[0]
        if edge_vectors.dim() != 2:
            raise SciMLInputError("edge_vectors", f"must have shape (E, 3), got {tuple(edge_vectors.shape)}")
        for name, index in (("edge_src", edge_src), ("edge_dst", edge_dst)):
            if not isinstance(index, Tensor) or index.dtype not in (torch.int64, torch.int32):
                raise SciMLInputError(name, "must be an int64 or int32 tensor")
            if index.shape != (n_edges,):
                raise SciMLInputError(name, f"must have shape ({n_edges},) like edge_vectors, got {tuple(index.shape)}")
            if index.device != reference.device:
                raise SciMLInputError(name, f"must be on the module's device {reference.device}, got {index.device}")
        n_nodes = node_features.shape[0]
        if not torch.compiler.is_compiling() and n_edges > 0:
            for name, index in (("edge_src", edge_src), ("edge_dst", edge_dst)):
                if bool((index < 0).any()) or bool((index >= n_nodes).any()):
                    raise SciMLInputError(name, f"must hold node indices in [0, {n_nodes})")
            if bool((torch.linalg.vector_norm(edge_vectors, dim=-1) == 0).any()):
                raise SciMLInputError("edge_vectors", "must be non-zero (the edge direction is undefined)")
        x = self.layout_in.to_coefficients(node_features)
        messages = self.product(x.index_select(0, edge_src), self.filter_coefficients(edge_vectors))
        out = messages.new_zeros((n_nodes, *messages.shape[1:])).index_add(0, edge_dst, messages)
        return self.layout_out.to_mul_ir(out)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, lmax_in={self.lmax_in}, lmax_filter={self.lmax_filter}, "
            f"lmax_out={self.lmax_out}, backend={self.backend!r}"
        )


def _power_schedule(lmax: int, lmax_out: int, correlation: int, lmax_hidden: int | None) -> list[tuple[int, int, int]]:
    """For nu = 2..correlation: (nu // 2, nu - nu // 2, degree kept for f^nu); degree of f^1 is lmax.

    The kept degree is the smallest that makes every projected power exact: f^a (a < correlation) is needed up to
    ``lmax_out + b * lmax`` by each product f^a * f^b it enters, and never above its own degree ``a * lmax``.
    """
    need = {nu: min(lmax_out, nu * lmax) for nu in range(1, correlation + 1)}
    for nu in range(correlation, 1, -1):
        a, b = nu // 2, nu - nu // 2
        need[a] = max(need[a], min(a * lmax, need[nu] + b * lmax))
        need[b] = max(need[b], min(b * lmax, need[nu] + a * lmax))
    schedule = []
    for nu in range(2, correlation + 1):
        degree = need[nu]
        if lmax_hidden is not None and nu < correlation:
            degree = min(degree, max(lmax_hidden, lmax_out))
        schedule.append((nu // 2, nu - nu // 2, degree))
    return schedule


class GauntManyBody(nn.Module):
    r"""Many-body (MACE-style body order) features from powers of a spherical function, by repeated Gaunt products.

    For features :math:`x` (irreps ``Cx0e+...+CxLp``), i.e. functions :math:`f_c = \sum_{lm} x_{c,lm} Y_{lm}`,

    .. math::

        \text{out}_{c,lm} = \sum_{\nu=1}^{\nu_{\max}} w_{\nu,c,l}\, \big\langle f_c^{\,\nu}, Y_{lm}\big\rangle ,
        \qquad f^{\nu} = f^{\lfloor \nu/2 \rfloor} \cdot f^{\nu - \lfloor \nu/2 \rfloor},

    with the powers built by pairing (``fs[nu] = fs[nu // 2] * fs[nu - nu // 2]``, about :math:`\log_2 \nu`
    products deep), each product a Gaunt product on a grid exact for its degrees. By default the intermediate
    powers are kept to the degree that makes every projected power exact (at most :math:`\nu L`);
    ``lmax_hidden`` truncates them instead (cheaper; still equivariant, no longer the exact power). The weights
    :math:`w_{\nu,c,l}` (per order, channel and output degree) start at one. This is the "equivariant many-body
    interaction" of Luo, Chen, Krishnapriyan (ICLR 2024, arXiv:2401.10216), the Gaunt counterpart of MACE's
    symmetric contraction (Batatia et al., NeurIPS 2022, arXiv:2206.07697) restricted to one element.

    Args:
        channels: :math:`C \ge 1`.
        lmax: :math:`L \ge 0`, degree of the input.
        correlation: :math:`\nu_{\max} \ge 1`, the highest power (body order :math:`\nu_{\max} + 1`).
        lmax_out: degree of the output (default ``lmax``).
        lmax_hidden: cap on the degree of intermediate powers (default: exact).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        device: device of parameters and buffers.
        dtype: floating dtype.

    Raises:
        SciMLInputError: bad hyperparameters; in ``forward``: input of the wrong size, dtype or device.

    Example:
        >>> mb = GauntManyBody(1, 0, 3, dtype=torch.float64)  # scalars: f = x0 / sqrt(4 pi)
        >>> x = torch.tensor([[math.sqrt(4 * math.pi) * 2.0]], dtype=torch.float64)  # f = 2
        >>> out = mb(x).detach() / math.sqrt(4 * math.pi)  # f + f^2 + f^3
        >>> round(float(out), 10)
        14.0
    """

    weight: nn.Parameter
    degree_out: Tensor

    def __init__(
        self,
        channels: int,
        lmax: int,
        correlation: int,
        *,
        lmax_out: int | None = None,
        lmax_hidden: int | None = None,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.lmax = check_int("lmax", lmax, minimum=0)
        self.correlation = check_int("correlation", correlation, minimum=1)
        self.lmax_out = self.lmax if lmax_out is None else check_int("lmax_out", lmax_out, minimum=0)
        self.lmax_hidden = None if lmax_hidden is None else check_int("lmax_hidden", lmax_hidden, minimum=0)
        self.backend = _check_backend(backend)
        factory = _factory(device, dtype)
        c = self.channels
        self.layout_in = _Layout(c, self.lmax, device)
        self.layout_out = _Layout(c, self.lmax_out, device)
        self.schedule = _power_schedule(self.lmax, self.lmax_out, self.correlation, self.lmax_hidden)
        self.degrees = [self.lmax] + [degree for _, _, degree in self.schedule]  # degree kept for f^nu, nu = 1..
        self.products = nn.ModuleList(
            _GridProduct(self.degrees[a - 1], self.degrees[b - 1], degree, self.backend, factory)
            for a, b, degree in self.schedule
        )
        self.weight = nn.Parameter(torch.ones(self.correlation, c, self.lmax_out + 1, **factory))
        self.register_buffer("degree_out", _degree_of_column(self.lmax_out).to(device), persistent=False)

    @property
    def irreps_in(self) -> Irreps:
        """Irreps of the input."""
        return _irreps(self.channels, self.lmax)

    @property
    def irreps_out(self) -> Irreps:
        """Irreps of the output."""
        return _irreps(self.channels, self.lmax_out)

    def forward(self, x: Tensor) -> Tensor:
        """Weighted sum of the projected powers.

        Args:
            x: (..., C * (L+1)**2) in mul_ir layout.

        Returns:
            (..., C * (Lout+1)**2) in mul_ir layout.

        Raises:
            SciMLInputError: wrong last dimension, dtype or device.
        """
        _check_features("x", x, self.channels * self.layout_in.dim, self.weight)
        powers = [self.layout_in.to_coefficients(x)]
        for (a, b, _), product in zip(self.schedule, self.products, strict=True):
            powers.append(product(powers[a - 1], powers[b - 1]))
        k_out = self.layout_out.dim
        out = x.new_zeros((*x.shape[:-1], self.channels, k_out))
        for nu, power in enumerate(powers):
            k = min(k_out, power.shape[-1])
            term = power[..., :k] * self.weight[nu][:, self.degree_out[:k]]
            out = term if k == k_out and nu == 0 else _add_leading(out, term, k)
        return self.layout_out.to_mul_ir(out)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, lmax={self.lmax}, correlation={self.correlation}, "
            f"lmax_out={self.lmax_out}, degrees={self.degrees}, backend={self.backend!r}"
        )


def _add_leading(out: Tensor, term: Tensor, k: int) -> Tensor:
    """Return out + term with term zero-padded on the last axis from k to out's size."""
    if k == out.shape[-1]:
        return out + term
    return out + nn.functional.pad(term, (0, out.shape[-1] - k))
