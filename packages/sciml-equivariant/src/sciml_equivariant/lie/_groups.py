r"""The groups :math:`GL^+(n, \mathbb{R})`, :math:`SL(n, \mathbb{R})` and their affine extensions.

Everything here follows the decomposition of Mironenco and Forré: every :math:`g` with :math:`\det g > 0` factors
uniquely as :math:`g = P R` with :math:`P = (g g^\top)^{1/2}` symmetric positive definite and :math:`R = P^{-1} g`
a rotation, so that :math:`GL^+(n) \cong SPD(n) \times SO(n)` and :math:`SL(n) \cong SSPD(n) \times SO(n)`
(:math:`\det P = 1`). The chart :math:`\xi^{-1}(g) = \log P + \log R` (a symmetric plus a skew-symmetric matrix)
is a global parametrisation that replaces the group logarithm (which does not exist for every element of these
groups), with inverse :math:`\xi(X) = \exp(\operatorname{sym} X)\exp(\operatorname{skew} X)`.

Reference:
    M. Mironenco and P. Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
    arXiv:2310.11366.
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLInputError, check_finite, check_in_choices, check_int, check_tensor

__all__ = [
    "AffineGroup",
    "GLPlus",
    "MatrixLieGroup",
    "SL",
    "chart_coordinates",
    "invariant_integration_weights",
    "polar_decomposition",
    "rotation_exp",
    "rotation_log",
    "sample_rotations",
    "sample_spd",
    "spd_exp",
    "spd_log",
    "xi",
    "xi_inverse",
]

ROTATION_SAMPLERS = ("equidistant", "haar")


def _det_tolerance(dtype: torch.dtype) -> float:
    return max(1e-6, 1000.0 * torch.finfo(dtype).eps)


def _check_square(name: str, g: object) -> torch.Tensor:
    g = check_tensor(name, g)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2]:
        raise SciMLInputError(name, f"must be a (batch of) square matrices (..., n, n), got shape {tuple(g.shape)}")
    if not g.dtype.is_floating_point:
        raise SciMLInputError(name, f"must have a floating dtype, got {g.dtype}")
    if g.numel() == 0:
        raise SciMLInputError(name, f"must not be empty, got shape {tuple(g.shape)}")
    check_finite(name, g)
    return g


def _check_group_element(name: str, g: object, *, special: bool) -> torch.Tensor:
    g = _check_square(name, g)
    det = torch.linalg.det(g)
    if bool((det <= 0).any()):
        raise SciMLInputError(name, f"must have det > 0 (GL+(n)), smallest det is {float(det.min()):.3g}")
    if special:
        worst = float((det - 1).abs().max())
        if worst > _det_tolerance(g.dtype):
            raise SciMLInputError(name, f"must have det = 1 (SL(n)), largest |det - 1| is {worst:.3g}")
    return g


def _symmetric(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x + x.transpose(-1, -2))


def _skew(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x - x.transpose(-1, -2))


def _spectral(s: torch.Tensor, function: str) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh(_symmetric(s))
    mapped = torch.exp(eigenvalues) if function == "exp" else torch.log(eigenvalues)
    return (vectors * mapped.unsqueeze(-2)) @ vectors.transpose(-1, -2)


def polar_decomposition(g: torch.Tensor, *, special: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Left polar decomposition :math:`g = P R` of matrices with positive determinant.

    .. math::
        g g^\top = V \Lambda V^\top, \qquad P = V \Lambda^{1/2} V^\top \in SPD(n), \qquad
        R = P^{-1} g = V \Lambda^{-1/2} V^\top g \in SO(n).

    :math:`P^{-1}` comes from the same eigendecomposition (no matrix inverse). For :math:`g \in SL(n)`,
    :math:`\det P = \det g = 1`.

    Args:
        g: matrices ``(..., n, n)`` with ``det g > 0`` (and ``det g = 1`` when ``special``).
        special: check that ``g`` lies in :math:`SL(n)` (``|det g - 1|`` below ``max(1e-6, 1000 eps)``).

    Returns:
        ``(P, R)``, both ``(..., n, n)``: ``P`` symmetric positive definite, ``R`` a rotation, ``P @ R = g``.

    Raises:
        SciMLInputError: ``g`` is not a batch of square finite floating matrices, has ``det <= 0``, or (when
            ``special``) ``det != 1``.

    Example:
        >>> g = torch.tensor([[2.0, 1.0], [0.0, 0.5]], dtype=torch.float64)
        >>> p, r = polar_decomposition(g, special=True)
        >>> torch.allclose(p @ r, g), torch.allclose(r @ r.T, torch.eye(2, dtype=torch.float64))
        (True, True)
        >>> round(float(torch.linalg.det(p)), 12)
        1.0

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366, Sec. 4 and App. B.7.
    """
    g = _check_group_element("g", g, special=special)
    eigenvalues, vectors = torch.linalg.eigh(g @ g.transpose(-1, -2))
    half_log = 0.5 * torch.log(eigenvalues)
    p = (vectors * torch.exp(half_log).unsqueeze(-2)) @ vectors.transpose(-1, -2)
    p_inv = (vectors * torch.exp(-half_log).unsqueeze(-2)) @ vectors.transpose(-1, -2)
    return p, p_inv @ g


def spd_log(p: torch.Tensor) -> torch.Tensor:
    r"""Matrix logarithm of symmetric positive definite matrices, :math:`V \log\Lambda\, V^\top`.

    Args:
        p: SPD matrices ``(..., n, n)`` (symmetrised before the eigendecomposition).

    Returns:
        Symmetric matrices ``(..., n, n)``.

    Raises:
        SciMLInputError: ``p`` is not square, not finite, or not positive definite.

    Example:
        >>> spd_log(torch.diag(torch.tensor([1.0, math.e])))
        tensor([[0., 0.],
                [0., 1.]])
    """
    p = _check_square("p", p)
    eigenvalues, vectors = torch.linalg.eigh(_symmetric(p))
    if bool((eigenvalues <= 0).any()):
        raise SciMLInputError("p", f"must be positive definite, smallest eigenvalue is {float(eigenvalues.min()):.3g}")
    return (vectors * torch.log(eigenvalues).unsqueeze(-2)) @ vectors.transpose(-1, -2)


def spd_exp(s: torch.Tensor) -> torch.Tensor:
    r"""Matrix exponential of symmetric matrices, :math:`V \exp\Lambda\, V^\top` (an SPD matrix).

    Args:
        s: symmetric matrices ``(..., n, n)`` (only the symmetric part is used).

    Returns:
        SPD matrices ``(..., n, n)``.

    Example:
        >>> spd_exp(torch.zeros(2, 2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    s = _check_square("s", s)
    return _spectral(s, "exp")


def rotation_log(r: torch.Tensor) -> torch.Tensor:
    r"""Principal logarithm of rotations, a skew-symmetric matrix.

    For :math:`n = 2`, :math:`\log R = \theta J` with :math:`\theta = \operatorname{atan2}(R_{10}, R_{00}) \in
    (-\pi, \pi]` and :math:`J = \begin{psmallmatrix}0 & -1\\ 1 & 0\end{psmallmatrix}`. For :math:`n \ge 3` it is
    computed from the (complex) eigendecomposition, :math:`\log R = \operatorname{skew}\,\Re(V \log\Lambda V^{-1})`;
    rotations by exactly :math:`\pi` have no unique logarithm.

    Args:
        r: rotation matrices ``(..., n, n)`` (not checked beyond shape and finiteness).

    Returns:
        Skew-symmetric matrices ``(..., n, n)``.

    Example:
        >>> r = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> round(rotation_log(r)[1, 0].item(), 6)
        1.570796
    """
    r = _check_square("r", r)
    n = r.shape[-1]
    if n == 1:
        return torch.zeros_like(r)
    if n == 2:
        angle = torch.atan2(r[..., 1, 0] - r[..., 0, 1], r[..., 0, 0] + r[..., 1, 1])
        zero = torch.zeros_like(angle)
        return torch.stack([torch.stack([zero, -angle], -1), torch.stack([angle, zero], -1)], -2)
    eigenvalues, vectors = torch.linalg.eig(r)
    logarithm = torch.linalg.solve(vectors, vectors * torch.log(eigenvalues).unsqueeze(-2), left=False)
    return _skew(logarithm.real.to(r.dtype))


def rotation_exp(a: torch.Tensor) -> torch.Tensor:
    r"""Exponential of skew-symmetric matrices, a rotation (closed form for :math:`n = 2`).

    Args:
        a: matrices ``(..., n, n)``; only the skew-symmetric part is used.

    Returns:
        Rotations ``(..., n, n)``.

    Example:
        >>> rotation_exp(torch.tensor([[0.0, -math.pi / 2], [math.pi / 2, 0.0]])).round().abs()
        tensor([[0., 1.],
                [1., 0.]])
    """
    a = _check_square("a", a)
    a = _skew(a)
    if a.shape[-1] == 2:
        angle = a[..., 1, 0]
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return torch.linalg.matrix_exp(a)


def xi_inverse(g: torch.Tensor, *, special: bool = False) -> torch.Tensor:
    r"""The global chart :math:`\xi^{-1}(g) = \log P + \log R` of :math:`GL^+(n)` (or :math:`SL(n)`).

    With the polar decomposition :math:`g = P R` (:func:`polar_decomposition`), the symmetric part of the result
    is :math:`\log P` (traceless for :math:`SL(n)`) and the skew-symmetric part is :math:`\log R`.

    Args:
        g: matrices ``(..., n, n)`` with positive determinant (``det = 1`` when ``special``).
        special: check membership of :math:`SL(n)`.

    Returns:
        ``X`` of shape ``(..., n, n)`` with ``xi(X) == g``.

    Raises:
        SciMLInputError: as :func:`polar_decomposition`.

    Example:
        >>> g = torch.tensor([[1.0, 2.0], [-0.5, 3.0]], dtype=torch.float64)
        >>> torch.allclose(xi(xi_inverse(g)), g)
        True

    Reference:
        Mironenco and Forré, ICLR 2024, arXiv:2310.11366, Sec. 4.2.
    """
    p, r = polar_decomposition(g, special=special)
    return _spectral(p, "log") + rotation_log(r)


def xi(x: torch.Tensor) -> torch.Tensor:
    r"""Inverse of the chart: :math:`\xi(X) = \exp(\operatorname{sym} X)\,\exp(\operatorname{skew} X)`.

    Args:
        x: matrices ``(..., n, n)``.

    Returns:
        Group elements ``(..., n, n)`` with positive determinant :math:`e^{\operatorname{tr} X}`.

    Example:
        >>> xi(torch.zeros(2, 2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    x = _check_square("x", x)
    return _spectral(_symmetric(x), "exp") @ rotation_exp(x)


def _traceless_basis(n: int, *, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    """Orthonormal basis of the traceless diagonals (Helmert contrasts), shape ``(n - 1, n)``."""
    basis = torch.zeros(n - 1, n, dtype=dtype, device=device)
    for k in range(1, n):
        basis[k - 1, :k] = 1.0
        basis[k - 1, k] = -float(k)
        basis[k - 1] /= math.sqrt(k * (k + 1))
    return basis


def chart_coordinates(x: torch.Tensor, *, special: bool = False) -> torch.Tensor:
    r"""Coordinates of a Lie-algebra matrix in a Frobenius-orthonormal basis (the kernel network's input).

    A matrix :math:`X = S + A` (:math:`S` symmetric, :math:`A` skew) maps to :math:`(d, \sqrt2\, S_{i<j},
    \sqrt2\, A_{i>j})` where :math:`d` is the diagonal of :math:`S` (for :math:`SL(n)`, its :math:`n - 1`
    coordinates in an orthonormal basis of the traceless diagonals), so that the Euclidean norm of the coordinates
    equals :math:`\|X\|_F` on the group's algebra. The length is the group dimension: :math:`n^2` for
    :math:`GL^+(n)`, :math:`n^2 - 1` for :math:`SL(n)`.

    Args:
        x: matrices ``(..., n, n)``, typically :func:`xi_inverse` of group elements.
        special: drop the trace direction (:math:`SL(n)`).

    Returns:
        ``(..., dim)``.

    Example:
        >>> chart_coordinates(torch.tensor([[1.0, 0.0], [0.0, -1.0]]), special=True)
        tensor([1.4142, 0.0000, 0.0000])
    """
    x = _check_square("x", x)
    n = x.shape[-1]
    s, a = _symmetric(x), _skew(x)
    diagonal = torch.diagonal(s, dim1=-2, dim2=-1)
    if special:
        diagonal = diagonal @ _traceless_basis(n, dtype=x.dtype, device=x.device).T
    rows, cols = torch.triu_indices(n, n, offset=1, device=x.device)
    off_diagonal = math.sqrt(2.0) * s[..., rows, cols]
    rotation = math.sqrt(2.0) * a[..., cols, rows]
    return torch.cat([diagonal, off_diagonal, rotation], dim=-1)


def sample_rotations(
    num: int,
    n: int = 2,
    *,
    method: str = "equidistant",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotations and their inverses, :math:`(R_k, R_k^\top)`.

    ``"equidistant"`` (``n = 2`` only, the paper's default): angles :math:`\theta_k = -\pi + 2\pi k / N`,
    :math:`k = 0..N-1` (the endpoint :math:`\pi` is left out so no angle repeats), a deterministic quadrature of the
    Haar measure of :math:`SO(2)`. ``"haar"``: independent Haar-uniform draws (uniform angles for ``n = 2``; for
    ``n >= 3`` the QR factor of a Gaussian matrix with the signs of ``diag(R)`` fixed, then one column flipped where
    the determinant is negative, which keeps the Haar measure).

    Args:
        num: number of samples ``N >= 1``.
        n: matrix size.
        method: ``"equidistant"`` or ``"haar"``.
        generator: random generator (``"haar"`` only).
        dtype: floating dtype (default: torch's default).
        device: device.

    Returns:
        ``(R, R_inv)``, both ``(N, n, n)``, with ``R_inv`` the transpose (exact inverse).

    Raises:
        SciMLInputError: ``num < 1``, ``n < 1``, unknown ``method``, or ``"equidistant"`` with ``n != 2``.

    Example:
        >>> r, r_inv = sample_rotations(4, dtype=torch.float64)
        >>> [round(math.degrees(math.atan2(float(m[1, 0]), float(m[0, 0])))) for m in r]
        [-180, -90, 0, 90]
        >>> torch.allclose(r @ r_inv, torch.eye(2, dtype=torch.float64).expand(4, 2, 2))
        True
    """
    check_int("num", num, minimum=1)
    check_int("n", n, minimum=1)
    check_in_choices("method", method, ROTATION_SAMPLERS)
    dtype = dtype or torch.get_default_dtype()
    if n == 2:
        if method == "equidistant":
            angle = -math.pi + 2.0 * math.pi * torch.arange(num, dtype=dtype, device=device) / num
        else:
            angle = math.pi * (2.0 * torch.rand(num, generator=generator, dtype=dtype, device=device) - 1.0)
        zero = torch.zeros_like(angle)
        skew = torch.stack([torch.stack([zero, -angle], -1), torch.stack([angle, zero], -1)], -2)
        r = rotation_exp(skew)
        return r, r.transpose(-1, -2)
    if method == "equidistant":
        raise SciMLInputError("method", f"'equidistant' is defined for n = 2 only, got n = {n}; use 'haar'")
    gaussian = torch.randn(num, n, n, generator=generator, dtype=dtype, device=device)
    q, upper = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(upper, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.where(torch.linalg.det(q) < 0, -1.0, 1.0).to(dtype)
    q = torch.cat([q[..., :1] * flip[:, None, None], q[..., 1:]], dim=-1)
    return q, q.transpose(-1, -2)


def sample_spd(
    num: int,
    n: int = 2,
    *,
    variance: float = 0.1,
    traceless: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-normal SPD matrices and their inverses, :math:`(e^{S}, e^{-S})`.

    :math:`S = \sigma (G + G^\top)/2` with :math:`G` a standard Gaussian matrix and :math:`\sigma^2` =
    ``variance``: the diagonal of :math:`S` has variance :math:`\sigma^2` and the off-diagonal entries
    :math:`\sigma^2/2`, i.e. the isotropic Gaussian of covariance :math:`\sigma^2 I` in a Frobenius-orthonormal
    basis of the symmetric matrices. Its law is invariant under :math:`S \mapsto Q S Q^\top`, so the law of
    :math:`P = e^S` is invariant under rotation conjugation. For :math:`SL(n)` (``traceless``) :math:`S` is replaced
    by its traceless part, so :math:`\det P = 1`. The inverse uses the same eigenvectors, no matrix inverse.

    Args:
        num: number of samples ``N >= 1``.
        n: matrix size.
        variance: :math:`\sigma^2 > 0` (the paper's default is 0.1).
        traceless: sample :math:`SSPD(n)` (determinant one).
        generator: random generator.
        dtype: floating dtype.
        device: device.

    Returns:
        ``(P, P_inv)``, both ``(N, n, n)``.

    Raises:
        SciMLInputError: ``num < 1``, ``n < 1`` or ``variance <= 0``.

    Example:
        >>> p, p_inv = sample_spd(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> torch.allclose(p @ p_inv, torch.eye(2, dtype=torch.float64).expand(3, 2, 2))
        True
    """
    check_int("num", num, minimum=1)
    check_int("n", n, minimum=1)
    if not (isinstance(variance, int | float) and math.isfinite(variance) and variance > 0):
        raise SciMLInputError("variance", f"must be a positive finite number, got {variance!r}")
    dtype = dtype or torch.get_default_dtype()
    gaussian = torch.randn(num, n, n, generator=generator, dtype=dtype, device=device)
    s = math.sqrt(variance) * _symmetric(gaussian)
    if traceless:
        trace = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)
        s = s - (trace / n)[:, None, None] * torch.eye(n, dtype=dtype, device=device)
    eigenvalues, vectors = torch.linalg.eigh(s)
    p = (vectors * torch.exp(eigenvalues).unsqueeze(-2)) @ vectors.transpose(-1, -2)
    p_inv = (vectors * torch.exp(-eigenvalues).unsqueeze(-2)) @ vectors.transpose(-1, -2)
    return p, p_inv


def invariant_integration_weights(g: torch.Tensor, *, affine: bool = True) -> torch.Tensor:
    r"""Monte Carlo weights of group samples for the invariant integral over :math:`\mathbb{R}^n \rtimes G`.

    The left Haar measure of :math:`G = GL^+(n)` (or :math:`SL(n)`) factorises over the polar decomposition,
    :math:`d\mu_G(PR) = d\mu_{SPD}(P)\, d\mu_{SO(n)}(R)` with :math:`d\mu_{SPD}(P) = \det(P)^{-(n+1)/2} dP` the
    :math:`GL(n)`-invariant measure of :math:`P \mapsto A P A^\top`, and the left Haar measure of the affine group is
    :math:`d\mu(x, g) = |\det g|^{-1}\, dx\, d\mu_G(g)`. The samplers of this module draw :math:`R` from Haar (or an
    equidistant quadrature of it) and :math:`P` log-normally (a localised probability density with respect to
    :math:`d\mu_{SPD}`, as in the paper), so a sample average approximates the integral against that density; the
    affine part contributes the weight :math:`|\det g_i|^{-1}`:

    .. math:: w_i = \frac{1}{N}\,|\det g_i|^{-1} \quad(\text{affine}), \qquad w_i = \frac1N \quad(\text{otherwise}).

    Args:
        g: group samples ``(N, n, n)``.
        affine: include the :math:`|\det g|^{-1}` factor of the affine group.

    Returns:
        Weights ``(N,)``.

    Raises:
        SciMLInputError: ``g`` is not a batch of square matrices with positive determinant.

    Example:
        >>> invariant_integration_weights(torch.stack([torch.eye(2), 2 * torch.eye(2)]))
        tensor([0.5000, 0.1250])
    """
    g = _check_group_element("g", g, special=False)
    if g.ndim != 3:
        raise SciMLInputError("g", f"must have shape (N, n, n), got {tuple(g.shape)}")
    weights = torch.full(g.shape[:1], 1.0 / g.shape[0], dtype=g.dtype, device=g.device)
    if affine:
        weights = weights / torch.linalg.det(g).abs()
    return weights


class MatrixLieGroup:
    r"""Common interface of :class:`GLPlus` and :class:`SL`: membership, polar maps, the chart, paired sampling.

    Args:
        n: matrix size (``n = 2`` is the paper's case; every method works for any ``n``, except the equidistant
            rotation sampler which needs ``n = 2``).
        spd_variance: variance :math:`\sigma^2` of the log-normal SPD sampler (:func:`sample_spd`).
        rotation_sampler: ``"equidistant"`` (``n = 2``) or ``"haar"`` (:func:`sample_rotations`).
    """

    special: bool = False
    name: str = "matrix group"

    def __init__(self, n: int = 2, *, spd_variance: float = 0.1, rotation_sampler: str | None = None) -> None:
        check_int("n", n, minimum=1)
        if rotation_sampler is None:
            rotation_sampler = "equidistant" if n == 2 else "haar"
        check_in_choices("rotation_sampler", rotation_sampler, ROTATION_SAMPLERS)
        if rotation_sampler == "equidistant" and n != 2:
            raise SciMLInputError("rotation_sampler", f"'equidistant' needs n = 2, got n = {n}")
        if not (isinstance(spd_variance, int | float) and math.isfinite(spd_variance) and spd_variance > 0):
            raise SciMLInputError("spd_variance", f"must be a positive finite number, got {spd_variance!r}")
        self.n = n
        self.spd_variance = float(spd_variance)
        self.rotation_sampler = rotation_sampler

    @property
    def dim(self) -> int:
        """Dimension of the group (length of :meth:`coordinates`)."""
        return self.n * self.n - int(self.special)

    @property
    def volume_preserving(self) -> bool:
        """Whether every element has determinant one."""
        return self.special

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, spd_variance={self.spd_variance}, "
            f"rotation_sampler={self.rotation_sampler!r})"
        )

    def check(self, g: torch.Tensor, name: str = "g") -> torch.Tensor:
        """Raise :class:`~sciml_protocols.SciMLInputError` unless ``g`` is a batch of ``(n, n)`` group elements."""
        g = _check_group_element(name, g, special=self.special)
        if g.shape[-1] != self.n:
            raise SciMLInputError(name, f"must be {self.n} x {self.n} matrices, got {tuple(g.shape[-2:])}")
        return g

    def polar(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Polar factors ``(P, R)`` of group elements (:func:`polar_decomposition`)."""
        self.check(g)
        return polar_decomposition(g, special=self.special)

    def xi_inverse(self, g: torch.Tensor) -> torch.Tensor:
        r"""The chart :math:`\xi^{-1}(g) = \log P + \log R` (:func:`xi_inverse`)."""
        self.check(g)
        return xi_inverse(g, special=self.special)

    def xi(self, x: torch.Tensor) -> torch.Tensor:
        r"""The inverse chart :math:`\xi(X)`; for :math:`SL(n)` the trace of ``X`` is removed first."""
        x = _check_square("x", x)
        if self.special:
            trace = torch.diagonal(x, dim1=-2, dim2=-1).sum(-1)
            x = x - (trace / self.n)[..., None, None] * torch.eye(self.n, dtype=x.dtype, device=x.device)
        return xi(x)

    def coordinates(self, g: torch.Tensor) -> torch.Tensor:
        r"""Chart coordinates :func:`chart_coordinates` of :math:`\xi^{-1}(g)`, shape ``(..., dim)``.

        Not validated (used inside layers on products of sampled elements, which belong to the group).
        """
        x = _spectral(g @ g.transpose(-1, -2), "log") * 0.5  # log P
        p_inv = _spectral(-x, "exp")
        return chart_coordinates(x + rotation_log(p_inv @ g), special=self.special)

    def sample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Draw ``num`` elements and their inverses from the factors: :math:`g = P R`, :math:`g^{-1} = R^\top P^{-1}`.

        Args:
            num: number of samples ``N >= 1``.
            generator: random generator.
            dtype: floating dtype.
            device: device.

        Returns:
            ``(g, g_inv)``, both ``(N, n, n)``.

        Example:
            >>> g, g_inv = SL(2).sample(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> torch.allclose(g @ g_inv, torch.eye(2, dtype=torch.float64).expand(5, 2, 2))
            True
        """
        p, p_inv = sample_spd(
            num,
            self.n,
            variance=self.spd_variance,
            traceless=self.special,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        r, r_inv = sample_rotations(
            num, self.n, method=self.rotation_sampler, generator=generator, dtype=dtype, device=device
        )
        return p @ r, r_inv @ p_inv


class GLPlus(MatrixLieGroup):
    r""":math:`GL^+(n, \mathbb{R})`: invertible matrices with positive determinant, :math:`\cong SPD(n) \times SO(n)`.

    Args:
        n: matrix size.
        spd_variance: variance of the log-normal SPD sampler.
        rotation_sampler: ``"equidistant"`` or ``"haar"``.

    Example:
        >>> group = GLPlus(2)
        >>> group.dim, group.volume_preserving
        (4, False)

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366.
    """

    special = False
    name = "GL+"


class SL(MatrixLieGroup):
    r""":math:`SL(n, \mathbb{R})`: matrices with determinant one, :math:`\cong SSPD(n) \times SO(n)`.

    Args:
        n: matrix size.
        spd_variance: variance of the log-normal sampler (before removing the trace).
        rotation_sampler: ``"equidistant"`` or ``"haar"``.

    Example:
        >>> group = SL(2)
        >>> group.dim, group.volume_preserving
        (3, True)

    Reference:
        Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
        arXiv:2310.11366.
    """

    special = True
    name = "SL"


class AffineGroup:
    r"""The affine extension :math:`\mathbb{R}^n \rtimes G` of :class:`GLPlus` or :class:`SL`.

    Elements are pairs :math:`(t, A)` acting on points by :math:`x \mapsto A x + t`, composed as
    :math:`(t_1, A_1)(t_2, A_2) = (t_1 + A_1 t_2, A_1 A_2)`, with inverse :math:`(-A^{-1} t, A^{-1})`. The left
    Haar measure is :math:`|\det A|^{-1} dt\, d\mu_G(A)`.

    Args:
        linear: the linear part :math:`G`.

    Example:
        >>> group = AffineGroup(SL(2))
        >>> t, a = torch.tensor([1.0, 0.0]), torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> group.act((t, a), torch.tensor([[1.0, 0.0]]))
        tensor([[1., 1.]])
    """

    def __init__(self, linear: MatrixLieGroup) -> None:
        if not isinstance(linear, MatrixLieGroup):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("linear", f"must be a GLPlus or SL group, got {type(linear).__name__}")
        self.linear = linear

    @property
    def n(self) -> int:
        """Dimension of the space acted on."""
        return self.linear.n

    @property
    def dim(self) -> int:
        """Dimension of the group, ``n + linear.dim``."""
        return self.linear.n + self.linear.dim

    def __repr__(self) -> str:
        return f"AffineGroup({self.linear!r})"

    def act(self, element: tuple[torch.Tensor, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        r"""Apply :math:`x \mapsto A x + t` to points ``(..., n)`` (element ``(t (n,), A (n, n))``)."""
        t, a = element
        return points @ a.transpose(-1, -2) + t

    def compose(
        self, first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The product ``first * second`` (apply ``second``, then ``first``)."""
        t1, a1 = first
        t2, a2 = second
        return t1 + (a1 @ t2.unsqueeze(-1)).squeeze(-1), a1 @ a2

    def inverse(
        self, element: tuple[torch.Tensor, torch.Tensor], linear_inverse: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse element; pass ``linear_inverse`` (from a sampler) to avoid a matrix inverse."""
        t, a = element
        a_inv = torch.linalg.inv(a) if linear_inverse is None else linear_inverse
        return -(a_inv @ t.unsqueeze(-1)).squeeze(-1), a_inv

    def sample(
        self,
        num: int,
        *,
        translation_scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Draw ``((t, A), (t_inv, A_inv))`` pairs: ``A`` from the linear part, ``t`` Gaussian of that scale."""
        a, a_inv = self.linear.sample(num, generator=generator, dtype=dtype, device=device)
        t = translation_scale * torch.randn(num, self.n, generator=generator, dtype=a.dtype, device=a.device)
        return (t, a), self.inverse((t, a), a_inv)

    def integration_weights(self, a: torch.Tensor) -> torch.Tensor:
        r"""Monte Carlo weights :math:`|\det A_i|^{-1} / N` (:func:`invariant_integration_weights`)."""
        return invariant_integration_weights(self.linear.check(a, "a"), affine=True)
