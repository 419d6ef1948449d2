r"""Rotation-group conventions: real spherical harmonics, Wigner D matrices, Wigner 3j symbols, random rotations.

Everything here follows e3nn's conventions (Geiger & Smidt, "e3nn: Euclidean Neural Networks", arXiv:2207.09453) so
that features computed with this package can be fed to e3nn and back:

* the polar axis of the spherical harmonics is :math:`y`; the degree-1 block is proportional to :math:`(x, y, z)`;
* inside a degree :math:`l` the order is :math:`m = -l, \dots, l`, with :math:`m > 0` the "cosine" harmonics
  :math:`\operatorname{Re}(z + i x)^m` and :math:`m < 0` the "sine" harmonics :math:`\operatorname{Im}(z + i x)^{|m|}`;
* three normalizations: ``"integral"`` (orthonormal on the sphere), ``"component"`` (:math:`\|Y^l\|^2 = 2l+1` on the
  unit sphere) and ``"norm"`` (:math:`\|Y^l\| = 1`).

Unlike e3nn (whose hard-coded polynomials stop at degree 12) the harmonics are computed for any degree with the
normalized three-term recurrence of the associated Legendre functions written as homogeneous polynomials, so they
are stable at high degree, exact polynomials of :math:`(x, y, z)` (smooth at the poles, double-differentiable) and
free of data-dependent control flow (``torch.compile(fullgraph=True)`` traces them).
"""

# ruff: noqa: E741  (l is the degree, the standard name)
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from sciml_protocols import SciMLInputError, check_int

__all__ = [
    "rand_rotation",
    "spherical_harmonics",
    "wigner_3j",
    "wigner_D",
]

_NORMALIZATIONS = ("integral", "component", "norm")


# ----------------------------------------------------------------------------------------------------------------
# Spherical harmonics
# ----------------------------------------------------------------------------------------------------------------


_LegendreCoefficients = tuple[list[float], list[list[float]], list[list[float]]]
# a plain dict, not functools.lru_cache: Dynamo traces dict look-ups silently but warns on lru_cache wrappers
_LEGENDRE_CACHE: dict[int, _LegendreCoefficients] = {}


def _legendre_coefficients(lmax: int) -> _LegendreCoefficients:
    """Cached :func:`_compute_legendre_coefficients`."""
    hit = _LEGENDRE_CACHE.get(lmax)
    if hit is None:
        hit = _compute_legendre_coefficients(lmax)
        _LEGENDRE_CACHE[lmax] = hit
    return hit


def _compute_legendre_coefficients(lmax: int) -> _LegendreCoefficients:
    r"""Coefficients of the normalized associated-Legendre recurrence, as Python floats.

    With :math:`\tilde P_l^m = \sqrt{(l-m)!/(l+m)!}\,P_l^m / \sin^m\theta` written as a homogeneous polynomial of
    degree :math:`l - m` in :math:`(y, r^2)`:

    .. math::
        \tilde P_m^m = c_m,\quad \tilde P_{m+1}^m = \sqrt{2m+1}\,c_m\,y,\quad
        \tilde P_l^m = a_{lm}\,y\,\tilde P_{l-1}^m - b_{lm}\,r^2\,\tilde P_{l-2}^m,

    with :math:`c_m = \prod_{k=1}^m \sqrt{(2k-1)/(2k)}`, :math:`a_{lm} = (2l-1)/\sqrt{(l-m)(l+m)}` and
    :math:`b_{lm} = \sqrt{(l+m-1)(l-m-1)/((l-m)(l+m))}`.

    Returns:
        ``(c, a, b)``: ``c[m]`` for ``m <= lmax``; ``a[l]`` and ``b[l]`` lists over ``m = 0..l-2`` (empty for l < 2).
    """
    c = [1.0]
    for k in range(1, lmax + 1):
        c.append(c[-1] * math.sqrt((2 * k - 1) / (2 * k)))
    a: list[list[float]] = []
    b: list[list[float]] = []
    for l in range(lmax + 1):
        a.append([(2 * l - 1) / math.sqrt((l - m) * (l + m)) for m in range(max(l - 1, 0))])
        b.append([math.sqrt((l + m - 1) * (l - m - 1) / ((l - m) * (l + m))) for m in range(max(l - 1, 0))])
    return c, a, b


def _degree_scale(l: int, normalization: str) -> list[float]:
    """Per-component factors of degree ``l``: the normalization constant times sqrt(2) off m = 0."""
    if normalization == "integral":
        base = math.sqrt((2 * l + 1) / (4 * math.pi))
    elif normalization == "component":
        base = math.sqrt(2 * l + 1)
    else:
        base = 1.0
    off = base * math.sqrt(2.0)
    return [off] * l + [base] + [off] * l


_CONSTANT_CACHE: dict[tuple[object, ...], torch.Tensor] = {}


def _constant(key: tuple[object, ...], values: list[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, cached per (key, dtype, device) in eager mode and inlined when compiling."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    full = (*key, dtype, device)
    hit = _CONSTANT_CACHE.get(full)
    if hit is None:
        hit = torch.tensor(values, dtype=dtype, device=device)
        _CONSTANT_CACHE[full] = hit
    return hit


def _harmonics(
    lmax: int, vectors: torch.Tensor, normalization: str, degrees: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Solid harmonics |v|^l Y_l(v/|v|) of ``vectors`` (..., 3), degrees ``degrees`` (default all), concatenated."""
    x, y, z = vectors.unbind(-1)
    r2 = x * x + y * y + z * z
    c, a, b = _legendre_coefficients(lmax)
    wanted = set(range(lmax + 1)) if degrees is None else set(degrees)

    # (z + i x)^m for m = 0..lmax: cos-like part ``re`` and sin-like part ``im``
    re_list = [torch.ones_like(x)]
    im_list = [torch.zeros_like(x)]
    for _ in range(lmax):
        re_prev, im_prev = re_list[-1], im_list[-1]
        re_list.append(z * re_prev - x * im_prev)
        im_list.append(x * re_prev + z * im_prev)
    re = torch.stack(re_list, dim=-1)  # (..., lmax+1)
    im = torch.stack(im_list, dim=-1)

    ones = torch.ones_like(x)[..., None]
    y1 = y[..., None]
    r21 = r2[..., None]
    blocks: dict[int, torch.Tensor] = {}
    q_prev2: torch.Tensor | None = None  # P~_{l-2}^m for m = 0..l-2
    q_prev: torch.Tensor | None = None  # P~_{l-1}^m for m = 0..l-1
    for l in range(lmax + 1):
        if l == 0:
            q = ones * c[0]
        elif l == 1:
            q = torch.cat([y1 * c[0], ones * c[1]], dim=-1)
        else:
            assert q_prev is not None
            assert q_prev2 is not None
            coef_a = _constant(("a", l), a[l], vectors.dtype, vectors.device)
            coef_b = _constant(("b", l), b[l], vectors.dtype, vectors.device)
            low = coef_a * y1 * q_prev[..., : l - 1] - coef_b * r21 * q_prev2[..., : l - 1]
            q = torch.cat([low, y1 * (math.sqrt(2 * l - 1) * c[l - 1]), ones * c[l]], dim=-1)
        if l in wanted:
            scale = _constant(
                ("scale", l, normalization), _degree_scale(l, normalization), vectors.dtype, vectors.device
            )
            pos = q[..., 1:] * re[..., 1 : l + 1]
            neg = (q[..., 1:] * im[..., 1 : l + 1]).flip(-1)
            blocks[l] = torch.cat([neg, q[..., :1], pos], dim=-1) * scale
        q_prev2, q_prev = q_prev, q
    order = range(lmax + 1) if degrees is None else degrees
    return torch.cat([blocks[l] for l in order], dim=-1)


def spherical_harmonics(
    lmax: int,
    vectors: torch.Tensor,
    *,
    normalize: bool = True,
    normalization: str = "integral",
) -> torch.Tensor:
    r"""Real spherical harmonics of all degrees :math:`0..L`, in e3nn's convention, for any degree.

    For a unit vector :math:`\hat r = (x, y, z)` with :math:`y = \cos\theta` (polar axis :math:`y`) and
    :math:`z + i x = \sin\theta\, e^{i\varphi}`,

    .. math::
        Y_l^{m}(\hat r) = N_l \sqrt{2 - \delta_{m0}}\;\tilde P_l^{|m|}(\cos\theta)\,
        \begin{cases} \operatorname{Re}(z + i x)^m & m \ge 0 \\ \operatorname{Im}(z + i x)^{|m|} & m < 0 \end{cases}

    where :math:`\tilde P_l^m = \sqrt{(l-m)!/(l+m)!}\,P_l^m/\sin^m\theta` is evaluated by the normalized three-term
    recurrence in :math:`\cos\theta` (no factorials, no division by :math:`\sin\theta`) and :math:`N_l` is
    :math:`\sqrt{(2l+1)/4\pi}` (``"integral"``: :math:`\int_{S^2} Y_l^m Y_{l'}^{m'} = \delta_{ll'}\delta_{mm'}`),
    :math:`\sqrt{2l+1}` (``"component"``: :math:`\|Y^l\|^2 = 2l+1`) or :math:`1` (``"norm"``: :math:`\|Y^l\| = 1`).
    The values equal e3nn's ``o3.spherical_harmonics(range(lmax + 1), vectors, normalize, normalization)``
    (Geiger & Smidt, arXiv:2207.09453) up to rounding, with no cap on the degree.

    With ``normalize=False`` the harmonics are the homogeneous polynomials (solid harmonics)
    :math:`|v|^l\,Y_l(v/|v|)`, as in e3nn; with ``normalize=True`` the input is first scaled to unit length (a zero
    vector gives :math:`Y_0` and zeros, as in e3nn). Both are smooth everywhere (twice differentiable for forces)
    and ``torch.compile(fullgraph=True)`` friendly (loops run over degrees only). Inputs are not checked for NaN.

    Args:
        lmax: the largest degree :math:`L \ge 0`.
        vectors: ``(..., 3)`` floating tensor of Cartesian vectors :math:`(x, y, z)`.
        normalize: scale the vectors to unit length first.
        normalization: ``"integral"``, ``"component"`` or ``"norm"``.

    Returns:
        ``(..., (L+1)**2)`` tensor, degrees :math:`0..L` concatenated, :math:`m = -l..l` inside each degree; same
        dtype and device as ``vectors``.

    Raises:
        SciMLInputError: ``lmax`` negative or not an int, ``vectors`` not a floating tensor with last dimension 3,
            unknown ``normalization``.

    Example:
        >>> import torch
        >>> sh = spherical_harmonics(2, torch.tensor([[0.0, 1.0, 0.0]]), normalization="component")
        >>> sh.shape, [round(v, 4) for v in sh[0].tolist()]
        (torch.Size([1, 9]), [1.0, 0.0, 1.7321, 0.0, 0.0, 0.0, 2.2361, 0.0, 0.0])
    """
    lmax = check_int("lmax", lmax, minimum=0)
    _check_vectors("vectors", vectors)
    if normalization not in _NORMALIZATIONS:
        raise SciMLInputError("normalization", f"must be one of {_NORMALIZATIONS}; got {normalization!r}")
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return _harmonics(lmax, vectors, normalization)


def _check_vectors(name: str, vectors: object) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(vectors).__name__}")
    if vectors.ndim < 1 or vectors.shape[-1] != 3:
        raise SciMLInputError(name, f"expected shape (..., 3), got {tuple(vectors.shape)}")
    if not vectors.dtype.is_floating_point:
        raise SciMLInputError(name, f"expected a floating-point dtype, got {vectors.dtype}")
    return vectors


# ----------------------------------------------------------------------------------------------------------------
# Wigner D matrices
# ----------------------------------------------------------------------------------------------------------------


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes (ascending) and weights of the :math:`n`-point Gauss-Legendre rule on :math:`[-1, 1]`, float64.

    Newton's method on :math:`P_n` (three-term recurrence, vectorized over the roots) from the asymptotic guesses
    :math:`\cos(\pi (k - 1/4) / (n + 1/2))`; weights :math:`2 / ((1 - x^2) P_n'(x)^2)`. Symmetrized, so the rule
    is exact in both halves. Avoids importing ``numpy.polynomial`` (tens of milliseconds on a cold start).

    Args:
        n: number of nodes, :math:`n \ge 1`.

    Returns:
        ``(nodes, weights)``, each of shape ``(n,)``; exact for polynomials of degree :math:`2n - 1`.
    """
    x = np.cos(np.pi * (np.arange(1, n + 1) - 0.25) / (n + 0.5))
    derivative = np.ones(n)
    for _ in range(100):
        p_prev, p = np.ones(n), x.copy()
        for j in range(2, n + 1):
            p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
        derivative = n * (p_prev - x * p) / (1.0 - x * x)
        step = p / derivative
        x = x - step
        if float(np.abs(step).max()) < 1e-15:
            break
    # one last evaluation of P_n' at the converged nodes for the weights
    p_prev, p = np.ones(n), x.copy()
    for j in range(2, n + 1):
        p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
    derivative = n * (p_prev - x * p) / (1.0 - x * x)
    weights = 2.0 / ((1.0 - x * x) * derivative * derivative)
    x, weights = x[::-1], weights[::-1]
    x = 0.5 * (x - x[::-1])
    weights = 0.5 * (weights + weights[::-1])
    return np.ascontiguousarray(x), np.ascontiguousarray(weights)


def _grid_harmonics(lmax: int, cos_theta: np.ndarray, sin_theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    r"""Orthonormal real harmonics on a product grid, in NumPy float64: ``(n_theta, n_phi, (lmax+1)**2)``.

    On the unit sphere :math:`\operatorname{Re}/\operatorname{Im}(z + i x)^m = \sin^m\theta\,\cos/\sin(m\varphi)`,
    so :math:`Y_l^m(\theta_i, \varphi_j) = A_{i,lm}\,T_{j,lm}` with :math:`A` the normalized associated Legendre
    factor (the recurrence of :func:`_compute_legendre_coefficients` with :math:`r = 1`, times
    :math:`\sin^{|m|}\theta`) and :math:`T` the trigonometric factor. Costs :math:`O(L)` vectorized steps (no
    loop over :math:`m`, no torch ops: construction is not slowed by intra-op threads). ``sin_theta`` may be
    negative (torus grids with :math:`\theta \in [0, 2\pi)`). Same values as :func:`spherical_harmonics` at the
    points :math:`(\sin\theta\sin\varphi, \cos\theta, \sin\theta\cos\varphi)` up to rounding.
    """
    c, a, b = _legendre_coefficients(lmax)
    n_t = cos_theta.shape[0]
    size = (lmax + 1) ** 2
    orders = np.arange(lmax + 1)
    sin_power = sin_theta[:, None] ** orders  # (n_t, lmax+1)
    angles = np.multiply.outer(phi, orders)
    cos_m, sin_m = np.cos(angles), np.sin(angles)  # (n_phi, lmax+1)
    legendre = np.empty((n_t, size))
    trig = np.empty((phi.shape[0], size))
    y = cos_theta[:, None]
    q_prev2 = q_prev = np.empty((n_t, 0))
    for l in range(lmax + 1):
        q = np.empty((n_t, l + 1))
        q[:, l] = c[l]
        if l >= 1:
            q[:, l - 1] = cos_theta * (math.sqrt(2 * l - 1) * c[l - 1])
        if l >= 2:
            q[:, : l - 1] = np.asarray(a[l]) * y * q_prev[:, : l - 1] - np.asarray(b[l]) * q_prev2[:, : l - 1]
        base = math.sqrt((2 * l + 1) / (4 * math.pi))
        factor = np.full(l + 1, base * math.sqrt(2.0))
        factor[0] = base
        block = q * sin_power[:, : l + 1] * factor  # m = 0..l
        start = l * l + l
        legendre[:, start : start + l + 1] = block
        legendre[:, start - l : start] = block[:, :0:-1]
        trig[:, start] = 1.0
        trig[:, start + 1 : start + l + 1] = cos_m[:, 1 : l + 1]
        trig[:, start - l : start] = sin_m[:, l:0:-1]
        q_prev2, q_prev = q_prev, q
    return legendre[:, None, :] * trig[None, :, :]


def _check_rotation(name: str, R: object, *, allow_improper: bool = False) -> torch.Tensor:
    if not isinstance(R, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(R).__name__}")
    if R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise SciMLInputError(name, f"expected shape (..., 3, 3), got {tuple(R.shape)}")
    if not R.dtype.is_floating_point:
        raise SciMLInputError(name, f"expected a floating-point dtype, got {R.dtype}")
    with torch.no_grad():
        tol = 1e-6 if R.dtype == torch.float64 else 1e-4
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        err = (R.transpose(-1, -2) @ R - eye).abs()
        if R.numel() > 0 and not bool(torch.isfinite(R).all()):
            raise SciMLInputError(name, "contains NaN or infinity")
        if R.numel() > 0 and float(err.max()) > tol:
            raise SciMLInputError(name, f"is not orthogonal: max |R^T R - I| = {float(err.max()):.3g} exceeds {tol:g}")
        if not allow_improper and R.numel() > 0 and bool((torch.linalg.det(R) <= 0).any()):
            raise SciMLInputError(name, "is not a rotation: det(R) = -1 (improper); pass a matrix of SO(3)")
    return R


_WignerStep = tuple[list[list[int]], list[list[int]], list[list[int]], list[list[float]]]
# plain dicts, not functools caches: Dynamo traces dict look-ups silently
_WIGNER_STEP_CACHE: dict[int, _WignerStep] = {}


def _wigner_step(l: int) -> _WignerStep:
    r"""Sparse form of :math:`\hat C = \sqrt{2l+1}\,C^{(l-1)\,1\,l}` reshaped to ``(3(2l-1), 2l+1)``.

    For each output column :math:`n` the (at most five) non-zero rows :math:`(a, b)` of the real 3j tensor, padded
    with zero coefficients: ``(a, b, a * 3 + b, coefficient)``, each a list over :math:`n` of equal-length lists.
    """
    hit = _WIGNER_STEP_CACHE.get(l)
    if hit is None:
        c = _wigner_3j_float64(l - 1, 1, l).numpy().reshape(3 * (2 * l - 1), 2 * l + 1) * math.sqrt(2 * l + 1)
        rows = [np.flatnonzero(np.abs(c[:, n]) > 1e-14) for n in range(2 * l + 1)]
        width = max(len(r) for r in rows)
        flat = [r.tolist() + [0] * (width - len(r)) for r in rows]
        coef = [c[r, n].tolist() + [0.0] * (width - len(r)) for n, r in enumerate(rows)]
        hit = ([[i // 3 for i in f] for f in flat], [[i % 3 for i in f] for f in flat], flat, coef)
        _WIGNER_STEP_CACHE[l] = hit
    return hit


def _index(key: tuple[object, ...], values: list[list[int]], device: torch.device) -> torch.Tensor:
    """A small flat int64 constant tensor, cached per (key, device) in eager mode and inlined when compiling."""
    return _constant(key, [i for row in values for i in row], torch.int64, device)


def _wigner_D_blocks(degrees: tuple[int, ...], R: torch.Tensor) -> list[torch.Tensor]:
    """Wigner D blocks for several degrees from one run of the coupling recursion (no input validation)."""
    lmax = max(degrees)
    chain = [torch.ones_like(R[..., :1, :1])]
    if lmax >= 1:
        chain.append(R)
    for l in range(2, lmax + 1):
        rows_a, rows_b, rows_flat, coef = _wigner_step(l)
        a = _index(("wd_a", l), rows_a, R.device)  # (q * K,), row-major over (n, k)
        b = _index(("wd_b", l), rows_b, R.device)
        flat = _index(("wd_flat", l), rows_flat, R.device)
        c = _constant(("wd_c", l), coef, R.dtype, R.device)
        previous = chain[-1]  # D^{l-1}, (..., p, p)
        shape = (2 * l + 1, c.shape[1])  # (q, K)
        # X[..., a', b', n] = sum_k c[n, k] D^{l-1}[a', a_nk] R[b', b_nk]: (P (x) R) C^, O(l^2) per rotation
        gathered_p = previous.index_select(-1, a).unflatten(-1, shape)  # (..., p, q, K)
        gathered_r = R.index_select(-1, b).unflatten(-1, shape)  # (..., 3, q, K)
        x = (gathered_p.unsqueeze(-3) * (gathered_r * c).unsqueeze(-4)).sum(-1)  # (..., p, 3, q)
        # D^l[..., m, n] = sum_k c[m, k] X[..., flat_mk, n]
        rows = x.flatten(-3, -2).index_select(-2, flat).unflatten(-2, shape)  # (..., q, K, q)
        chain.append((rows * c.unsqueeze(-1)).sum(-2))
    return [R.clone() if l == 1 else chain[l] for l in degrees]


def wigner_D(l: int, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    r"""Wigner D matrix of degree :math:`l` of a rotation matrix, in the basis of :func:`spherical_harmonics`.

    :math:`D^l(R)` is the unique orthogonal matrix with :math:`Y^l(R v) = D^l(R)\,Y^l(v)` for all :math:`v`. With
    :math:`D^0 = 1` and :math:`D^1(R) = R` (the degree-1 harmonics are proportional to :math:`(x, y, z)`), the
    higher degrees follow from coupling :math:`l-1` with :math:`1`: the invariance of the real 3j tensor
    :math:`C = C^{(l-1)\,1\,l}` of :func:`wigner_3j` (unit norm, so :math:`C^\top C = I/(2l+1)`) gives

    .. math:: D^l(R) = (2l+1)\; C^\top \big(D^{l-1}(R) \otimes R\big)\, C,

    evaluated with the sparsity of :math:`C` (at most five non-zero rows per column): :math:`O(l^2)` work per
    degree and :math:`O(l^3)` in all per rotation, a polynomial of degree :math:`l` in the entries of :math:`R`, so
    exact up to rounding (which grows about linearly in :math:`l`), differentiable in :math:`R` (twice, any order)
    and free of Euler-angle singularities. It equals e3nn's ``o3.Irrep(l, 1).D_from_matrix(R)`` (Geiger & Smidt,
    arXiv:2207.09453), so :math:`D(R_1 R_2) = D(R_1) D(R_2)` and :math:`D(R^\top) = D(R)^\top`.

    Args:
        l: the degree, :math:`l \ge 0`.
        R: ``(..., 3, 3)`` rotation matrices (orthogonal, determinant :math:`+1`).
        validate: check that ``R`` is a rotation (a host sync; pass ``False`` inside compiled code).

    Returns:
        ``(..., 2l+1, 2l+1)`` tensor, same dtype and device as ``R``.

    Raises:
        SciMLInputError: ``l`` negative; ``R`` not ``(..., 3, 3)`` floating, not orthogonal (max
            :math:`|R^\top R - I|` above 1e-6 in float64, 1e-4 otherwise), or with determinant :math:`-1`.

    Example:
        >>> import torch
        >>> R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        >>> wigner_D(1, R).round(decimals=6)  # the l=1 block acts on (x, y, z) like R itself
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]], dtype=torch.float64)
    """
    l = check_int("l", l, minimum=0)
    if validate:
        _check_rotation("R", R)
    return _wigner_D_blocks((l,), R)[0]


def rand_rotation(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Haar-uniform random rotation matrices.

    A standard normal 4-vector normalized to unit length is a uniform unit quaternion :math:`q = (w, x, y, z)`
    (Shoemake, "Uniform random rotations", Graphics Gems III, 1992); its rotation matrix is Haar distributed on
    :math:`SO(3)`.

    Args:
        n: number of rotations, :math:`n \ge 0`.
        generator: random generator (on ``device``) for reproducibility.
        dtype: floating dtype (default: the default dtype).
        device: device of the result.

    Returns:
        ``(n, 3, 3)`` rotation matrices.

    Raises:
        SciMLInputError: ``n`` negative or ``dtype`` not floating.

    Example:
        >>> import torch
        >>> R = rand_rotation(2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> R.shape, torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
        (torch.Size([2, 3, 3]), True)
        >>> torch.linalg.det(R).round(decimals=6).tolist()
        [1.0, 1.0]
    """
    n = check_int("n", n, minimum=0)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=device)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(n, 3, 3)
    return R.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# Wigner 3j symbols
# ----------------------------------------------------------------------------------------------------------------


def _clebsch_gordan_row(l1: int, l2: int, l3: int, m1: int, f: list[int]) -> list[tuple[int, float]]:
    r"""Complex-basis Clebsch-Gordan :math:`\langle l_1 m_1 l_2 m_2 | l_3\, m_1{+}m_2\rangle` for all valid m2.

    Racah's closed form (Condon-Shortley phase) with exact integer arithmetic: the alternating sum is brought to
    a common denominator, and the squared coefficient, a ratio of integers, is rounded once (Python's correctly
    rounded int division) before the square root.

    Args:
        l1: first degree.
        l2: second degree.
        l3: coupled degree.
        m1: order of the first factor.
        f: factorials ``f[n] = n!`` for ``n <= l1 + l2 + l3 + 1``.

    Returns:
        ``(m2, value)`` pairs.
    """
    out = []
    tri_num = (2 * l3 + 1) * f[l3 + l1 - l2] * f[l3 - l1 + l2] * f[l1 + l2 - l3]
    tri_den = f[l1 + l2 + l3 + 1]
    for m2 in range(max(-l2, -l3 - m1), min(l2, l3 - m1) + 1):
        m3 = m1 + m2
        kmin = max(0, l2 - l3 - m1, l1 - l3 + m2)
        kmax = min(l1 + l2 - l3, l1 - m1, l2 + m2)
        dens = [
            f[k] * f[l1 + l2 - l3 - k] * f[l1 - m1 - k] * f[l2 + m2 - k] * f[l3 - l2 + m1 + k] * f[l3 - l1 - m2 + k]
            for k in range(kmin, kmax + 1)
        ]
        if not dens:
            continue
        common = math.lcm(*dens)
        total = sum((-1 if k % 2 else 1) * (common // d) for k, d in zip(range(kmin, kmax + 1), dens, strict=True))
        if total == 0:
            continue
        num = tri_num * f[l3 + m3] * f[l3 - m3] * f[l1 - m1] * f[l1 + m1] * f[l2 - m2] * f[l2 + m2] * total * total
        value = math.sqrt(num / (tri_den * common * common))
        out.append((m2, value if total > 0 else -value))
    return out


@functools.cache
def _complex_clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """Complex-basis CG tensor C[m1, m2, m3] (indices shifted by l), float64, correctly rounded squares."""
    f = [math.factorial(n) for n in range(l1 + l2 + l3 + 2)]
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2, value in _clebsch_gordan_row(l1, l2, l3, m1, f):
            out[l1 + m1, l2 + m2, l3 + m1 + m2] = value
    return out


def _real_to_complex(l: int) -> np.ndarray:
    r"""Unitary change of basis between e3nn's real harmonics (columns) and complex ones (rows), phases included.

    Real :math:`m < 0` mixes complex :math:`\pm|m|` as :math:`(1, -i)/\sqrt2`, real :math:`m > 0` as
    :math:`(-1)^m (1, i)/\sqrt2`, all times the global phase :math:`(-i)^l` that makes the coupling tensor real.
    """
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s = 1.0 / math.sqrt(2.0)
    q[l, l] = 1.0
    for m in range(1, l + 1):
        q[l - m, l + m] = s
        q[l - m, l - m] = -1j * s
        q[l + m, l + m] = (-1) ** m * s
        q[l + m, l - m] = 1j * (-1) ** m * s
    return q * (-1j) ** l


@functools.cache
def _wigner_3j_float64(l1: int, l2: int, l3: int) -> torch.Tensor:
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    cg = _complex_clebsch_gordan(l1, l2, l3)
    q1, q2, q3 = _real_to_complex(l1), _real_to_complex(l2), _real_to_complex(l3)
    # W_abc = sum_ijk Q1_ia Q2_jb conj(Q3_kc) C_ijk, one axis at a time (each result axis moves to the end);
    # column a of Q has non-zeros only in rows a and 2l - a, so each step is two gathers
    w = cg.astype(np.complex128)
    for q in (q1, q2, q3.conj()):
        n = q.shape[0]
        cols = np.arange(n)
        mirror = n - 1 - cols
        c_same = q[cols, cols]
        c_mirror = np.where(mirror != cols, q[mirror, cols], 0.0)
        w = np.moveaxis(w[cols] * c_same[:, None, None] + w[mirror] * c_mirror[:, None, None], 0, -1)
    real = np.ascontiguousarray(w.real)
    # the complex CG tensor has squared norm 2 l3 + 1 and the changes of basis are unitary
    real /= math.sqrt(2 * l3 + 1)
    return torch.from_numpy(real)


def wigner_3j(
    l1: int, l2: int, l3: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Wigner 3j coupling tensor in the real basis of :func:`spherical_harmonics`, equal to e3nn's ``o3.wigner_3j``.

    The unique (up to sign) tensor :math:`C` with

    .. math:: C_{abc} = \sum_{a'b'c'} D^{l_1}_{aa'}(R)\,D^{l_2}_{bb'}(R)\,D^{l_3}_{cc'}(R)\,C_{a'b'c'}
        \quad \forall R \in SO(3), \qquad \sum_{abc} C_{abc}^2 = 1,

    built from the complex-basis Clebsch-Gordan coefficients (Racah's closed form evaluated with exact integer
    arithmetic, one rounding per entry) transformed to the real basis with e3nn's phase convention, so the sign
    matches e3nn (Geiger & Smidt, arXiv:2207.09453) for all degrees. Zero when :math:`(l_1, l_2, l_3)` violates the
    triangle inequality. Cached per degrees (float64 master copy); no degree cap.

    Args:
        l1: first degree.
        l2: second degree.
        l3: third degree.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``(2l1+1, 2l2+1, 2l3+1)`` tensor (a fresh copy).

    Raises:
        SciMLInputError: a negative or non-int degree, or a non-floating ``dtype``.

    Example:
        >>> C = wigner_3j(1, 1, 0)
        >>> (C * 3**0.5).squeeze(-1)  # the invariant dot product of two vectors
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]], dtype=torch.float64)
    """
    for name, value in (("l1", l1), ("l2", l2), ("l3", l3)):
        check_int(name, value, minimum=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
    return _wigner_3j_float64(l1, l2, l3).to(dtype=dtype, device=device, copy=True)
