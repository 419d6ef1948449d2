r"""Exact Gaunt coefficients and the Gaunt tensor product (quadrature-grid, 2-D Fourier and Clebsch-Gordan backends).

The Gaunt coefficients are the integrals of three real orthonormal spherical harmonics,

.. math::

    G^{l_3 m_3}_{l_1 m_1, l_2 m_2} = \int_{S^2} Y_{l_1}^{m_1} Y_{l_2}^{m_2} Y_{l_3}^{m_3}\, d\Omega
    = \sqrt{\frac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}}\,
      \begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0 \end{pmatrix}\, C^{l_1 l_2 l_3}_{m_1 m_2 m_3},

where :math:`C` is the real-basis Wigner 3j tensor of :func:`sciml_equivariant._so3.wigner_3j` (e3nn's convention,
unit Frobenius norm) and the sign is fixed so that the all-:math:`m = 0` entry is
:math:`\sqrt{\prod(2l_i+1)/4\pi}\,(l_1\,l_2\,l_3;0\,0\,0)^2 \ge 0`. The symbol :math:`(l_1\,l_2\,l_3;0\,0\,0)` vanishes
unless :math:`l_1 + l_2 + l_3` is even, so the **Gaunt product keeps only the paths with** :math:`l_1 + l_2 + l_3`
**even**: it has no antisymmetric path such as :math:`1 \otimes 1 \to 1` (the cross product). Use
:class:`~sciml_equivariant._cg.ClebschGordanTensorProduct` when the odd paths are needed.

The Gaunt tensor product of two spherical functions :math:`f_x = \sum_{lm} x_{lm} Y_l^m` and
:math:`f_y = \sum_{lm} y_{lm} Y_l^m` is the projection of their pointwise product on the degrees
:math:`\le L_{out}`,

.. math:: (x \otimes_G y)_{l_3 m_3} = \int_{S^2} f_x f_y\, Y_{l_3}^{m_3}\, d\Omega
    = \sum_{l_1 m_1 l_2 m_2} G^{l_3 m_3}_{l_1 m_1, l_2 m_2}\, x_{l_1 m_1} y_{l_2 m_2},

taken channel by channel. Three exact backends compute it (Luo, Chen & Krishnapriyan, "Enabling Efficient
Equivariant Operations in the Fourier Basis via Gaunt Tensor Products", ICLR 2024, arXiv:2401.10216; the grid route
is the one of Xie, Daigavane, Kotak & Smidt, "The Price of Freedom", ICML 2025):

* ``"grid"``: evaluate :math:`f_x`, :math:`f_y` on a Gauss-Legendre (in :math:`\cos\theta`) times uniform
  (in :math:`\varphi`) grid of :math:`n_\theta = \lfloor D/2 \rfloor + 1` by :math:`n_\varphi = D + 1` points,
  :math:`D = L_1 + L_2 + L_{out}`, which integrates every polynomial of degree :math:`D` exactly; multiply
  pointwise; project back with the quadrature weights. Three matrix products.
* ``"fft"``: the paper's change of basis. On the torus :math:`(\theta, \varphi) \in [0, 2\pi)^2` with
  :math:`\hat r = (\sin\theta\sin\varphi, \cos\theta, \sin\theta\cos\varphi)` (e3nn's polar axis :math:`y`) a degree
  :math:`l` harmonic is a trigonometric polynomial :math:`\sum_{|u|, |v| \le l} F^{lm}_{uv} e^{i(u\theta + v\varphi)}`
  with :math:`F^{lm}_{uv} = 0` unless :math:`|v| = |m|`. The coefficients :math:`F^{lm}` are the exact 2-D DFT of
  :math:`Y_l^m` sampled on a :math:`(2l+1)^2` torus grid. The two Fourier series are multiplied by a zero-padded
  2-D FFT convolution, and the result is projected back with
  :math:`\int_0^\pi e^{ik\theta}\sin\theta\, d\theta = K(k)`, :math:`K(k) = 2/(1-k^2)` for even :math:`k`,
  :math:`\pm i\pi/2` for :math:`k = \pm 1` and 0 otherwise:
  :math:`(x \otimes_G y)_{lm} = 2\pi \sum_{u v} P_{uv} \sum_{u'} F^{lm}_{u', -v} K(u + u')`.
  The change of basis and the projection use the sparsity in :math:`v` (cost :math:`O(L^3)` per channel).
* ``"cg"``: the Gaunt-weighted Clebsch-Gordan sum over the even paths (slow reference).

All basis matrices are built in float64 from closed forms (no stored tables, no degree cap) and cached.

Normalization of the coefficients (``normalization=``): the inputs and the output are coefficients of functions in
one of e3nn's real bases, :math:`f = \sum_{lm} x_{lm} Y_l^m` with

* ``"integral"`` (default): orthonormal harmonics, :math:`\int Y_l^m Y_{l'}^{m'} = \delta_{ll'}\delta_{mm'}`;
* ``"component"``: :math:`\tilde Y_l = \sqrt{4\pi}\, Y_l` (so :math:`\|\tilde Y_l(\hat r)\|^2 = 2l+1`);
* ``"norm"``: :math:`\tilde Y_l = \sqrt{4\pi/(2l+1)}\, Y_l` (so :math:`\|\tilde Y_l(\hat r)\| = 1`).

The inputs are mapped to orthonormal coefficients (:math:`x_l \mapsto s_l x_l` with :math:`s_l = \sqrt{4\pi}` or
:math:`\sqrt{4\pi/(2l+1)}`), multiplied, and the output is mapped back (:math:`z_l \mapsto z_l / s_l`), so in every
convention the output is the coefficient vector, in the same basis, of the projection of :math:`f_x f_y`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache, lru_cache

import numpy as np
import torch
from sciml_protocols import SciMLInputError, check_int

from sciml_equivariant._kernels.gaunt_grid import gaunt_grid_product
from sciml_equivariant._so3 import _gauss_legendre, _grid_harmonics, wigner_3j

__all__ = ["GauntPlan", "gaunt_coefficients", "gaunt_tensor_product"]

_BACKENDS = ("auto", "grid", "fft", "cg")
_NORMALIZATIONS = ("integral", "component", "norm")
_DTYPES = (torch.float32, torch.float64)


def _threej_zero_squared(l1: int, l2: int, l3: int) -> Fraction:
    r"""Exact :math:`(l_1\, l_2\, l_3; 0\, 0\, 0)^2` as a fraction (zero off the selection rule)."""
    total = l1 + l2 + l3
    if total % 2 or l3 > l1 + l2 or l3 < abs(l1 - l2):
        return Fraction(0)
    g = total // 2
    f = math.factorial
    ratio = Fraction(f(2 * g - 2 * l1) * f(2 * g - 2 * l2) * f(2 * g - 2 * l3), f(2 * g + 1))
    inner = Fraction(f(g), f(g - l1) * f(g - l2) * f(g - l3))
    return ratio * inner * inner


def gaunt_path_constant(l1: int, l2: int, l3: int) -> float:
    r"""The signed constant :math:`c` with :math:`G^{l_1 l_2 l_3} = c\, C^{l_1 l_2 l_3}` (real 3j tensor of ``_so3``).

    :math:`|c| = \sqrt{(2l_1+1)(2l_2+1)(2l_3+1)/4\pi}\;|(l_1\,l_2\,l_3;0\,0\,0)|`, computed from an exact rational
    square (one rounding), with the sign of the 3j tensor's all-:math:`m=0` entry so that the Gaunt coefficient of
    three :math:`m = 0` harmonics is non-negative. Zero unless :math:`l_1 + l_2 + l_3` is even and the triangle
    inequality holds. e3nn's ``path_weight`` for the same path is :math:`c^2`.

    Args:
        l1: first degree.
        l2: second degree.
        l3: output degree.

    Returns:
        The constant as a Python float.

    Example:
        >>> round(gaunt_path_constant(0, 0, 0), 12) == round(1 / math.sqrt(4 * math.pi), 12)
        True
        >>> gaunt_path_constant(1, 1, 1)
        0.0
    """
    l1, l2, l3 = (check_int(n, v, minimum=0) for n, v in (("l1", l1), ("l2", l2), ("l3", l3)))
    return _gaunt_path_constant(l1, l2, l3)


@cache
def _gaunt_path_constant(l1: int, l2: int, l3: int) -> float:
    square = _threej_zero_squared(l1, l2, l3) * (2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1)
    if square == 0:
        return 0.0
    magnitude = math.sqrt(float(square) / (4 * math.pi))
    center = float(wigner_3j(l1, l2, l3)[l1, l2, l3])
    return math.copysign(magnitude, center)


@lru_cache(maxsize=256)
def _gaunt_cached(l1: int, l2: int, l3: int) -> torch.Tensor:
    c = _gaunt_path_constant(l1, l2, l3)
    if c == 0.0:
        return torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    return c * wigner_3j(l1, l2, l3, dtype=torch.float64)


def gaunt_coefficients(l1: int, l2: int, l3: int) -> torch.Tensor:
    r"""Gaunt coefficients :math:`\int_{S^2} Y_{l_1}^{m_1} Y_{l_2}^{m_2} Y_{l_3}^{m_3} d\Omega` of real orthonormal SH.

    .. math:: G^{l_1 l_2 l_3}_{m_1 m_2 m_3} = \sqrt{\frac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}}
        \begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0 \end{pmatrix} C^{l_1 l_2 l_3}_{m_1 m_2 m_3}

    with the real-basis 3j tensor :math:`C` of :func:`~sciml_equivariant._so3.wigner_3j` and the sign that makes the
    all-:math:`m=0` entry non-negative; the :math:`(l_1 l_2 l_3; 000)` symbol is evaluated exactly in integers.
    Exact in float64 for every degree (no table, no cap); zero unless :math:`l_1+l_2+l_3` is even and the triangle
    inequality holds. The harmonics are e3nn's (polar axis :math:`y`, :math:`m = -l..l`). Cached per degrees.

    Reference: Luo, Chen & Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt
    Tensor Products", ICLR 2024, arXiv:2401.10216.

    Args:
        l1: degree of the first harmonic.
        l2: degree of the second harmonic.
        l3: degree of the third harmonic.

    Returns:
        Tensor of shape ``(2*l1+1, 2*l2+1, 2*l3+1)``, float64 (a fresh copy).

    Raises:
        SciMLInputError: if a degree is not a non-negative integer.

    Example:
        >>> g = gaunt_coefficients(1, 1, 0)  # = delta_{m1 m2} / sqrt(4 pi)
        >>> torch.allclose(g[:, :, 0], torch.eye(3, dtype=torch.float64) / math.sqrt(4 * math.pi))
        True
        >>> float(gaunt_coefficients(1, 1, 1).abs().max())
        0.0
    """
    l1, l2, l3 = (check_int(n, v, minimum=0) for n, v in (("l1", l1), ("l2", l2), ("l3", l3)))
    return _gaunt_cached(l1, l2, l3).clone()


# ----------------------------------------------------------------------------------------------------------------
# Layout helpers
# ----------------------------------------------------------------------------------------------------------------


def _degree_scales(lmax: int, normalization: str) -> np.ndarray:
    """Per-coefficient factor s with x_integral = s * x_normalization, length (lmax+1)**2."""
    scales = np.empty((lmax + 1) ** 2)
    for ell in range(lmax + 1):
        if normalization == "integral":
            s = 1.0
        elif normalization == "component":
            s = math.sqrt(4 * math.pi)
        else:
            s = math.sqrt(4 * math.pi / (2 * ell + 1))
        scales[ell * ell : (ell + 1) ** 2] = s
    return scales


def _layout_index_np(channels: int, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gather, scatter)`` int64 index arrays between e3nn's mul_ir layout and the coefficient layout.

    ``coeff.flatten(-2) = mul_ir[..., gather]`` with ``coeff[..., u, l*l + l + m]``, and
    ``mul_ir = coeff.flatten(-2)[..., scatter]``. Fresh arrays (vectorized, microseconds).
    """
    degree = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)  # degree of each column k
    offset = np.arange((lmax + 1) ** 2) - degree * degree  # l + m
    u = np.arange(channels)[:, None]
    gather = (channels * degree * degree + offset + u * (2 * degree + 1)).reshape(-1)
    scatter = np.empty_like(gather)
    scatter[gather] = np.arange(gather.size)
    return gather, scatter


_LAYOUT_CACHE: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _layout_indices(channels: int, lmax: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_layout_index_np` as int64 tensors on ``device``, cached (so a CUDA call does no host copy)."""
    key = (channels, lmax, device)
    hit = _LAYOUT_CACHE.get(key)
    if hit is None:
        gather, scatter = _layout_index_np(channels, lmax)
        hit = (torch.from_numpy(gather).to(device), torch.from_numpy(scatter).to(device))
        if len(_LAYOUT_CACHE) >= 256:  # bounded, like the lru caches of the bases
            _LAYOUT_CACHE.clear()
        _LAYOUT_CACHE[key] = hit
    return hit


def _to_coefficients(x: torch.Tensor, channels: int, lmax: int) -> torch.Tensor:
    """mul_ir ``(..., C*(L+1)**2)`` -> coefficient layout ``(..., C, (L+1)**2)`` (one ``index_select`` copy)."""
    if lmax == 0 or channels == 1:  # the two layouts coincide
        return x.unflatten(-1, (channels, (lmax + 1) ** 2))
    gather, _ = _layout_indices(channels, lmax, x.device)
    return x.index_select(-1, gather).unflatten(-1, (channels, (lmax + 1) ** 2))


def _from_coefficients(z: torch.Tensor) -> torch.Tensor:
    """Coefficient layout ``(..., C, (L+1)**2)`` -> mul_ir ``(..., C*(L+1)**2)``."""
    channels, size = z.shape[-2], z.shape[-1]
    lmax = math.isqrt(size) - 1
    if lmax == 0 or channels == 1:
        return z.flatten(-2)
    _, scatter = _layout_indices(channels, lmax, z.device)
    return z.flatten(-2).index_select(-1, scatter)


# ----------------------------------------------------------------------------------------------------------------
# Basis builders (float64 NumPy, closed forms, vectorized over m), cached by degrees and normalization
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid_values(degree: int, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Harmonics up to ``lmax`` on the grid exact to ``degree`` (G, (lmax+1)**2) and the quadrature weights (G,).

    Gauss-Legendre in :math:`\cos\theta` (``degree // 2 + 1`` nodes) times uniform in :math:`\varphi`
    (``degree + 1`` nodes); shared by the products that use the same grid (e.g. the steps of a many-body module).
    """
    n_theta = degree // 2 + 1
    n_phi = degree + 1
    nodes, weights = _gauss_legendre(n_theta)
    sin_theta = np.sqrt(np.clip(1.0 - nodes * nodes, 0.0, None))
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    values = _grid_harmonics(lmax, nodes, sin_theta, phi).reshape(n_theta * n_phi, -1)
    return values, np.repeat(weights * (2 * np.pi / n_phi), n_phi)


@lru_cache(maxsize=32)
def _grid_basis_np(l1: int, l2: int, lout: int, normalization: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 ``(B_1^T (K1, G), B_2^T (K2, G), W (G, Kout))`` on the Gauss-Legendre x uniform grid."""
    values, quad = _grid_values(l1 + l2 + lout, max(l1, l2, lout))  # (G, K), (G,)
    y1t = values[:, : (l1 + 1) ** 2].T * _degree_scales(l1, normalization)[:, None]
    y2t = values[:, : (l2 + 1) ** 2].T * _degree_scales(l2, normalization)[:, None]
    yout = quad[:, None] * values[:, : (lout + 1) ** 2] / _degree_scales(lout, normalization)[None, :]
    return np.ascontiguousarray(y1t), np.ascontiguousarray(y2t), np.ascontiguousarray(yout)


def _grid_basis(l1: int, l2: int, lout: int, normalization: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_grid_basis_np` as float64 CPU tensors (sharing the cached memory: do not modify)."""
    return tuple(torch.from_numpy(a) for a in _grid_basis_np(l1, l2, lout, normalization))  # type: ignore[return-value]


@lru_cache(maxsize=32)
def _torus_coefficients(lmax: int) -> np.ndarray:
    """F[u, v, k]: exact 2-D Fourier coefficients of Y_k on the torus (wrapped indices, size 2*lmax+1)."""
    n = 2 * lmax + 1
    angles = 2 * np.pi * np.arange(n) / n
    values = _grid_harmonics(lmax, np.cos(angles), np.sin(angles), angles)  # (n, n, K)
    coefficients = np.fft.fft2(values, axes=(0, 1)) / (n * n)
    # The change of basis relies on F[u, v] = 0 unless |v| = |m| (true for e3nn's y polar axis): check it.
    degree = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    order = np.abs(np.arange((lmax + 1) ** 2) - degree * degree - degree)  # |m| of each column
    v = np.arange(n)
    allowed = (v[:, None] == order[None, :]) | (v[:, None] == (-order[None, :]) % n)  # (n, K)
    leak = float(np.abs(coefficients).max(axis=0)[~allowed].max(initial=0.0))
    if leak > 1e-9:  # pragma: no cover - guards against a change of convention in _so3
        raise RuntimeError(f"torus Fourier coefficients of the harmonics are not sparse in v (leak {leak:.2e})")
    return coefficients


def _theta_kernel(k: np.ndarray) -> np.ndarray:
    r"""K(k) = \int_0^\pi e^{ik\theta} \sin\theta d\theta for integer k."""
    out = np.zeros(k.shape, dtype=np.complex128)
    even = k % 2 == 0
    out[even] = 2.0 / (1.0 - k[even].astype(np.float64) ** 2)
    out[k == 1] = 0.5j * np.pi
    out[k == -1] = -0.5j * np.pi
    return out


def _fft_sizes(l1: int, l2: int, lout: int) -> tuple[int, int]:
    s = l1 + l2
    size_u = 2 * s + 1
    size_v = max(s + lout + 1, 2 * max(l1, l2, lout) + 1)
    return size_u, size_v


def _half_spectrum_slots(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficient column and use mask of each slot (v, j, ell) of the half spectrum, both (lmax+1, 2, lmax+1).

    The column is k = ell^2 + ell + m with m = v for j = 0 and m = -v for j = 1; a slot is used when ell >= v
    (and there is no j = 1 slot for v = 0).
    """
    v = np.arange(lmax + 1)[:, None, None]
    j = np.arange(2)[None, :, None]
    ell = np.arange(lmax + 1)[None, None, :]
    valid = (ell >= v) & ~((j == 1) & (v == 0))
    k = ell * ell + ell + np.where(j == 0, v, -v)
    return np.where(valid, k, 0), np.broadcast_to(valid, k.shape)


@lru_cache(maxsize=32)
def _fft_input_basis(lmax: int, size_u: int, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Index into the coefficients (v, j, ell) and the matrices H[v, (j, ell), (u, re/im)] to the half spectrum."""
    coefficients = _torus_coefficients(lmax)
    n = 2 * lmax + 1
    scales = _degree_scales(lmax, normalization)
    index, valid = _half_spectrum_slots(lmax)
    u = np.arange(-lmax, lmax + 1)
    v = np.broadcast_to(np.arange(lmax + 1)[:, None, None], index.shape)
    # values[v, j, ell, u] = F[u, v, k(v, j, ell)] * s_k on the used slots
    values = coefficients[(u % n)[None, None, None, :], v[..., None], index[..., None]]
    values = np.asarray(values * (scales[index] * valid)[..., None], dtype=np.complex128)
    basis = np.zeros((lmax + 1, 2, lmax + 1, size_u, 2))
    basis[..., u % size_u, 0] = np.real(values)
    basis[..., u % size_u, 1] = np.imag(values)
    return (
        torch.from_numpy(index.reshape(-1).copy()),
        torch.from_numpy(basis.reshape(lmax + 1, 2 * (lmax + 1), 2 * size_u)),
    )


@lru_cache(maxsize=32)
def _fft_output_basis(lout: int, size_u: int, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection matrices P[v, (u, re/im), (j, ell)] (real part of the pairing) and the gather index to (ell, m)."""
    coefficients = _torus_coefficients(lout)
    n = 2 * lout + 1
    scales = _degree_scales(lout, normalization)
    u_values = np.arange(size_u)
    u_values = np.where(u_values <= size_u // 2, u_values, u_values - size_u)
    u_prime = np.arange(-lout, lout + 1)
    kernel = _theta_kernel(u_values[:, None] + u_prime[None, :])  # (size_u, 2*lout+1)
    v = np.arange(lout + 1)
    weight = np.where(v == 0, 1.0, 2.0)  # the v < 0 half of the spectrum is the complex conjugate
    columns = coefficients[(u_prime % n)[:, None], ((-v) % n)[None, :], :]  # (2*lout+1, v, K)
    pairing = 2 * np.pi * weight[:, None, None] * np.einsum("ua,avk->vuk", kernel, columns)  # (v, size_u, K)
    index, valid = _half_spectrum_slots(lout)
    # selected[v, u, j, ell] = pairing[v, u, k(v, j, ell)] / s_k on the used slots
    selected = pairing[v[:, None, None, None], np.arange(size_u)[None, :, None, None], index[:, None, :, :]]
    selected = selected * (valid / scales[index])[:, None, :, :]
    basis = np.stack([selected.real, -selected.imag], axis=2)  # (v, u, re/im, j, ell)
    slot = (2 * v[:, None, None] + np.arange(2)[None, :, None]) * (lout + 1) + np.arange(lout + 1)[None, None, :]
    gather = np.zeros((lout + 1) ** 2, dtype=np.int64)
    gather[index[valid]] = slot[valid]
    return torch.from_numpy(basis.reshape(lout + 1, 2 * size_u, 2 * (lout + 1))), torch.from_numpy(gather)


@lru_cache(maxsize=32)
def _cg_paths(l1: int, l2: int, lout: int, normalization: str) -> tuple[tuple[int, int, int, torch.Tensor], ...]:
    s1 = _degree_scales(max(l1, l2, lout), normalization)
    paths = []
    for a in range(l1 + 1):
        for b in range(l2 + 1):
            for c in range(abs(a - b), min(a + b, lout) + 1):
                if (a + b + c) % 2:
                    continue
                factor = s1[a * a] * s1[b * b] / s1[c * c]
                paths.append((a, b, c, _gaunt_cached(a, b, c) * factor))
    return tuple(paths)


# ----------------------------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------------------------


def _resolve_backend(backend: str) -> str:
    # Measured on CPU (float32, batch 256, 128 channels, L = 2..20): the dense grid is 3-10x faster than the FFT
    # route, whose many tiny FFTs are slow on CPU. So "auto" means "grid".
    return "grid" if backend == "auto" else backend


class GauntPlan:
    r"""Precomputed bases for the channel-wise Gaunt product of degrees :math:`L_1 \otimes L_2 \to L_{out}`.

    Holds, in ``dtype`` on ``device``, the matrices of one backend (see the module docstring): the quadrature-grid
    evaluation and projection matrices (``"grid"``), the sparse torus change of basis and the closed-form projection
    (``"fft"``), or the list of Gaunt-weighted 3j tensors (``"cg"``). They are built in float64 from closed forms
    and cached by ``(degrees, backend, normalization)``; moving to a dtype/device is a cheap copy. Calling the plan
    computes

    .. math:: z_{c, l_3 m_3} = \sum G^{l_3 m_3}_{l_1 m_1, l_2 m_2}\, x_{c, l_1 m_1}\, y_{c, l_2 m_2}

    on the *coefficient layout* ``(..., C, (L+1)**2)`` (degree-major index :math:`l^2 + l + m` last), which is
    what modules keep between products; :func:`gaunt_tensor_product` converts from and to e3nn's ``mul_ir`` layout.

    Reference: Luo, Chen & Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt
    Tensor Products", ICLR 2024, arXiv:2401.10216.

    Args:
        l1max: degree :math:`L_1` of the first input.
        l2max: degree :math:`L_2` of the second input.
        lout_max: output degree :math:`L_{out}` (any non-negative integer; degrees above :math:`L_1+L_2` are 0).
        backend: ``"grid"``, ``"fft"``, ``"cg"`` or ``"auto"`` (currently ``"grid"``, the fastest measured on CPU).
        dtype: float32 or float64 (default: float32).
        device: device of the matrices (default: CPU).
        normalization: ``"integral"``, ``"component"`` or ``"norm"`` (see the module docstring).

    Raises:
        SciMLInputError: on negative or non-integer degrees, unknown backend/normalization, or another dtype.

    Example:
        >>> plan = GauntPlan(1, 1, 2, backend="grid", dtype=torch.float64)
        >>> x = torch.zeros(1, 4, dtype=torch.float64)
        >>> x[0, 0] = 1.0  # the constant 1 / sqrt(4 pi)
        >>> y = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
        >>> z = plan(x, y)  # (1/sqrt(4 pi)) * f_y
        >>> torch.allclose(z[0, :4], y[0] / math.sqrt(4 * math.pi)), z.shape
        (True, torch.Size([1, 9]))
    """

    def __init__(
        self,
        l1max: int,
        l2max: int,
        lout_max: int,
        *,
        backend: str = "auto",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        normalization: str = "integral",
    ) -> None:
        self.l1max = check_int("l1max", l1max, minimum=0)
        self.l2max = check_int("l2max", l2max, minimum=0)
        self.lout_max = check_int("lout_max", lout_max, minimum=0)
        if backend not in _BACKENDS:
            raise SciMLInputError("backend", f"must be one of {_BACKENDS}, got {backend!r}")
        if normalization not in _NORMALIZATIONS:
            raise SciMLInputError("normalization", f"must be one of {_NORMALIZATIONS}, got {normalization!r}")
        dtype = torch.float32 if dtype is None else dtype
        if dtype not in _DTYPES:
            raise SciMLInputError("dtype", f"must be torch.float32 or torch.float64, got {dtype}")
        self.backend = _resolve_backend(backend)
        self.normalization = normalization
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._tensors = _plan_tensors(
            self.l1max, self.l2max, self.lout_max, self.backend, normalization, dtype, self.device
        )
        self.size_u, self.size_v = _fft_sizes(self.l1max, self.l2max, self.lout_max)

    def __repr__(self) -> str:
        return (
            f"GauntPlan({self.l1max}, {self.l2max}, {self.lout_max}, backend={self.backend!r}, "
            f"dtype={self.dtype}, normalization={self.normalization!r})"
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gaunt product on the coefficient layout.

        Args:
            x: ``(..., C, (L1+1)**2)``, dtype and device of the plan.
            y: ``(..., C, (L2+1)**2)``; leading dimensions broadcast with ``x``'s.

        Returns:
            ``(..., C, (Lout+1)**2)``.
        """
        if self.backend == "grid":
            return self._grid(x, y)
        if self.backend == "fft":
            return self._fft(x, y)
        return self._cg(x, y)

    def _grid(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y1t, y2t, yout = self._tensors
        # three matmuls (cuBLAS on CUDA; gaunt_grid_product("auto") does not take the slower fused kernel)
        return gaunt_grid_product(x, y, y1t.mT, y2t.mT, yout)

    def _fourier(self, x: torch.Tensor, index: torch.Tensor, basis: torch.Tensor, lmax: int) -> torch.Tensor:
        """Values on the (size_u, size_v) torus grid, (N, size_u, size_v), from (N, K) coefficients."""
        gathered = x.index_select(1, index).reshape(x.shape[0], lmax + 1, 2 * (lmax + 1)).transpose(0, 1)
        spectrum = torch.bmm(gathered, basis).reshape(lmax + 1, x.shape[0], self.size_u, 2)
        spectrum = torch.view_as_complex(spectrum).permute(1, 2, 0)  # (N, u, v >= 0)
        return torch.fft.irfft2(spectrum, s=(self.size_u, self.size_v), norm="forward")

    def _fft(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        index1, basis1, index2, basis2, out_basis, gather = self._tensors
        batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        xf = x.expand(*batch, x.shape[-1]).reshape(-1, x.shape[-1])
        yf = y.expand(*batch, y.shape[-1]).reshape(-1, y.shape[-1])
        values = self._fourier(xf, index1, basis1, self.l1max) * self._fourier(yf, index2, basis2, self.l2max)
        spectrum = torch.fft.rfft2(values, norm="forward")[..., : self.lout_max + 1]  # (N, u, v)
        pairs = torch.view_as_real(spectrum).permute(2, 0, 1, 3).reshape(self.lout_max + 1, xf.shape[0], -1)
        projected = torch.bmm(pairs, out_basis)  # (v, N, 2 * (Lout+1))
        flat = projected.transpose(0, 1).reshape(xf.shape[0], -1).index_select(1, gather)
        return flat.reshape(*batch, flat.shape[-1])

    def _cg(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        blocks: list[torch.Tensor | None] = [None] * (self.lout_max + 1)
        for a, b, c, g in self._tensors:
            term = torch.einsum("...i,...j,ijk->...k", x[..., a * a : (a + 1) ** 2], y[..., b * b : (b + 1) ** 2], g)
            previous = blocks[c]
            blocks[c] = term if previous is None else previous + term
        out = [
            block.expand(*batch, 2 * c + 1) if block is not None else x.new_zeros(*batch, 2 * c + 1)
            for c, block in enumerate(blocks)
        ]
        return torch.cat(out, dim=-1)


@lru_cache(maxsize=64)
def _plan_tensors(
    l1: int, l2: int, lout: int, backend: str, normalization: str, dtype: torch.dtype, device: torch.device
) -> tuple:
    def put(t: torch.Tensor | np.ndarray) -> torch.Tensor:
        # dtype conversion in NumPy: small torch copies on a busy machine can cost milliseconds in intra-op threads
        a = t.numpy() if isinstance(t, torch.Tensor) else t
        if a.dtype.kind == "f":
            a = a.astype(np.float32 if dtype == torch.float32 else np.float64, copy=False)
        return torch.from_numpy(a).to(device=device)

    if backend == "grid":
        return tuple(put(a) for a in _grid_basis_np(l1, l2, lout, normalization))
    if backend == "fft":
        size_u, _ = _fft_sizes(l1, l2, lout)
        index1, basis1 = _fft_input_basis(l1, size_u, normalization)
        index2, basis2 = _fft_input_basis(l2, size_u, normalization)
        out_basis, gather = _fft_output_basis(lout, size_u, normalization)
        return tuple(put(t) for t in (index1, basis1, index2, basis2, out_basis, gather))
    return tuple((a, b, c, put(g)) for a, b, c, g in _cg_paths(l1, l2, lout, normalization))


# ----------------------------------------------------------------------------------------------------------------
# Public functional form
# ----------------------------------------------------------------------------------------------------------------


def _square_root(value: int) -> int | None:
    root = math.isqrt(value)
    return root if root * root == value else None


def _infer_layout(d1: int, d2: int, channels: int | None) -> tuple[int, int, int]:
    if channels is not None:
        channels = check_int("channels", channels, minimum=1)
        for name, d in (("x", d1), ("y", d2)):
            if d % channels or _square_root(d // channels) is None:
                raise SciMLInputError(
                    name, f"feature size {d} is not channels * (L+1)**2 for channels={channels} (irreps Cx0e+Cx1o+...)"
                )
        return channels, math.isqrt(d1 // channels) - 1, math.isqrt(d2 // channels) - 1
    # every C = d1 / (L1+1)**2 for a square divisor of d1, kept when d2 / C is a square too (O(sqrt(d1)) steps)
    candidates = sorted(
        d1 // (k * k)
        for k in range(1, math.isqrt(d1) + 1)
        if d1 % (k * k) == 0 and d2 % (d1 // (k * k)) == 0 and _square_root(d2 // (d1 // (k * k))) is not None
    )
    if not candidates:
        raise SciMLInputError(
            "x", f"feature sizes {d1} and {d2} are not C*(L1+1)**2 and C*(L2+1)**2 for a common channel count C"
        )
    if len(candidates) > 1:
        raise SciMLInputError(
            "channels", f"is ambiguous for feature sizes {d1} and {d2} (any of {candidates}); pass channels="
        )
    c = candidates[0]
    return c, math.isqrt(d1 // c) - 1, math.isqrt(d2 // c) - 1


def gaunt_tensor_product(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lmax_out: int,
    channels: int | None = None,
    backend: str = "auto",
    normalization: str = "integral",
) -> torch.Tensor:
    r"""Channel-wise Gaunt tensor product of two e3nn-layout features: the projected product of two functions.

    For each channel :math:`c`, with :math:`f_{x,c} = \sum_{lm} x_{c,lm} Y_l^m` and likewise :math:`f_{y,c}`,

    .. math:: z_{c, l_3 m_3} = \int_{S^2} f_{x,c}\, f_{y,c}\, Y_{l_3}^{m_3}\, d\Omega
        = \sum G^{l_3 m_3}_{l_1 m_1, l_2 m_2}\, x_{c, l_1 m_1}\, y_{c, l_2 m_2},
        \qquad l_3 \le L_{out},

    (:func:`gaunt_coefficients`). Only the paths with :math:`l_1 + l_2 + l_3` **even** contribute: the Gaunt product
    has no antisymmetric path (no cross product, :math:`1 \otimes 1 \to 1` is identically zero); use
    :class:`~sciml_equivariant._cg.ClebschGordanTensorProduct` for those. It equals e3nn's
    ``o3.TensorProduct`` with ``"uuu"`` instructions on the even paths, ``irrep_normalization="none"``,
    ``path_normalization="none"`` and ``path_weight`` :math:`= c^2` (:func:`gaunt_path_constant`). When
    :math:`L_{out} \ge L_1 + L_2` the output is the exact expansion of :math:`f_x f_y`. Differentiable (also twice).

    Reference: Luo, Chen & Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt
    Tensor Products", ICLR 2024, arXiv:2401.10216.

    Args:
        x: ``(..., C*(L1+1)**2)`` in e3nn's ``mul_ir`` layout of irreps ``Cx0e+Cx1o+Cx2e+...+CxL1p``
            (parity :math:`(-1)^l`), float32 or float64.
        y: ``(..., C*(L2+1)**2)``, same layout, channel count, dtype and device; leading dimensions broadcast.
        lmax_out: output degree :math:`L_{out} \ge 0`.
        channels: the channel count :math:`C`; inferred from the two sizes when omitted and unambiguous.
        backend: ``"grid"`` (quadrature grid), ``"fft"`` (2-D Fourier basis), ``"cg"`` (Clebsch-Gordan reference)
            or ``"auto"``. All are exact up to rounding.
        normalization: basis of the coefficients, ``"integral"`` (orthonormal, default), ``"component"`` or
            ``"norm"`` (module docstring: inputs mapped to orthonormal coefficients, output mapped back).

    Returns:
        ``(..., C*(lmax_out+1)**2)``: irreps ``Cx0e+Cx1o+...`` up to ``lmax_out`` in ``mul_ir`` layout.

    Raises:
        SciMLInputError: non-tensor inputs, other dtypes, different dtypes/devices, sizes that are not
            ``C*(L+1)**2``, ambiguous or mismatched channel counts, leading dimensions that do not broadcast,
            ``lmax_out < 0``, unknown backend or normalization.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # f_x = Y_0 = 1/sqrt(4 pi)
        >>> y = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
        >>> z = gaunt_tensor_product(x, y, lmax_out=1, channels=1)
        >>> torch.allclose(z, y / math.sqrt(4 * math.pi))
        True
    """
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype not in _DTYPES:
            raise SciMLInputError(name, f"must be float32 or float64, got {value.dtype}")
        if value.dim() == 0 or value.shape[-1] == 0:
            raise SciMLInputError(name, "must have a non-empty feature dimension")
    if x.dtype != y.dtype:
        raise SciMLInputError("y", f"dtype {y.dtype} differs from x's {x.dtype}")
    if x.device != y.device:
        raise SciMLInputError("y", f"device {y.device} differs from x's {x.device}")
    lout = check_int("lmax_out", lmax_out, minimum=0)
    if backend not in _BACKENDS:
        raise SciMLInputError("backend", f"must be one of {_BACKENDS}, got {backend!r}")
    if normalization not in _NORMALIZATIONS:
        raise SciMLInputError("normalization", f"must be one of {_NORMALIZATIONS}, got {normalization!r}")
    try:
        torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    except RuntimeError as err:
        raise SciMLInputError("y", f"leading shape {tuple(y.shape[:-1])} does not broadcast with x's") from err
    c, l1, l2 = _infer_layout(x.shape[-1], y.shape[-1], channels)
    plan = GauntPlan(l1, l2, lout, backend=backend, dtype=x.dtype, device=x.device, normalization=normalization)
    z = plan(_to_coefficients(x, c, l1), _to_coefficients(y, c, l2))
    return _from_coefficients(z)
