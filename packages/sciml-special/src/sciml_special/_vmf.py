r"""The von Mises-Fisher distribution on the unit sphere, its uniform limit, and maximum-likelihood fitting.

The von Mises-Fisher (vMF) distribution on :math:`S^{d-1} = \{x \in \mathbb{R}^d : \|x\| = 1\}` has the density

.. math::

    p(x; \mu, \kappa) = C_d(\kappa)\, e^{\kappa \mu^\top x}, \qquad
    \log C_d(\kappa) = (d/2 - 1) \log \kappa - (d/2) \log 2\pi - \log I_{d/2-1}(\kappa)

with respect to the surface measure, and mean resultant length :math:`A_d(\kappa) = \mathbb{E}[\mu^\top x] =
I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`. Everything here is built on the log-space Bessel functions of
:mod:`sciml_special` (:func:`~sciml_special.log_iv` and :func:`~sciml_special.iv_ratio`), so it works in the
dimensions where the usual ``scipy.special.ive`` route under- or overflows (:math:`d` in the thousands, as for the
2048-, 8192- and 32768-dimensional fits of Plesner et al. 2024), and it is differentiable in :math:`\kappa`.

References:
    - A. T. A. Wood, "Simulation of the von Mises Fisher distribution", Communications in Statistics - Simulation
      and Computation 23(1), 1994.
    - A. Banerjee, I. S. Dhillon, J. Ghosh, S. Sra, "Clustering on the unit hypersphere using von Mises-Fisher
      distributions", JMLR 6, 2005.
    - S. Sra, "A short note on parameter approximation for von Mises-Fisher distributions", Computational
      Statistics 27, 2012.
    - T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak, "Hyperspherical Variational Auto-Encoders",
      UAI 2018.
    - M. Figurnov, S. Mohamed, A. Mnih, "Implicit Reparameterization Gradients", NeurIPS 2018.
    - A. Plesner, H. H. Sørensen, S. Hauberg, "Accurate Computation of the Logarithm of Modified Bessel Functions
      on GPUs", ICS 2024.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, cast

import numpy as np
import torch
from sciml_protocols import SciMLError, SciMLInputError, Solution, check_dtype, check_same_device, check_tensor
from torch.distributions import Distribution, constraints
from torch.distributions.kl import register_kl

from ._bessel import DEBYE_V, HANKEL_C, RATIO_DEPTH, SMALL_X
from ._bessel_api import iv_ratio, log_ive
from ._bessel_math import DEBYE_TERMS, HANKEL_TERMS, debye_coefficients

__all__ = [
    "HypersphericalUniform",
    "VonMisesFisher",
    "fit_vmf",
    "vmf_kappa_mle",
    "vmf_log_normalizer",
]

_LOG_2PI = math.log(2.0 * math.pi)
_Shape = torch.Size | list[int] | tuple[int, ...]
_NO_SAMPLE_SHAPE = torch.Size()
# Terms of the series log 0F1(; d/2; kappa^2/4) used while kappa^2/4 <= d/2: each term is at most 1/m! there.
_SERIES_TERMS = 25
# Rejection rounds of Wood's sampler: a round accepts a proposal with probability well above 1/2 for every (d, kappa),
# so a draw still unaccepted after this many rounds means broken inputs (NaN) rather than bad luck.
_MAX_REJECTION_ROUNDS = 100
# Implicit-gradient quadrature: Gauss-Legendre panels whose widths double away from the sampled angle.
_PANELS = 10
_NODES_PER_PANEL = 8
# draws per quadrature chunk: small enough to stay in cache on CPU, large enough to amortise launches on GPU
_GRADIENT_CHUNK = {"cpu": 2048}
_GRADIENT_CHUNK_DEFAULT = 65536
# Concentration solves with at most this many entries run as plain Python float loops (see _kappa_mle_scalar): below
# it the per-call overhead of the batched tensor iteration dominates.
_SCALAR_SOLVE_MAX = 16


# ----------------------------------------------------------------------------------------------------- helpers


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    # Per-batch scalars (normalisers, the w-sampler, the implicit gradient) are cheap: do them in float64 where
    # the device has it, so that float32 parameters get float64-accurate normalisers.
    if device.type == "mps":
        return torch.float32
    return torch.float64


def _log_sphere_area(dim: int) -> float:
    r""":math:`\log |S^{d-1}| = \log 2 + (d/2) \log \pi - \log\Gamma(d/2)`."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _log_normalizer_parts(dim: int, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Return :math:`\log C_d(\kappa)`, :math:`h = -\log C_d(\kappa) - \log|S^{d-1}|` and :math:`\log C_d + \kappa`.

    :math:`h(\kappa) = \log {}_0F_1(; d/2; \kappa^2/4) = \log I_\nu(\kappa) - \nu \log(\kappa/2) + \log\Gamma(\nu+1)`
    is how far the density is from uniform. Near the uniform limit (:math:`\kappa^2/4 \le \nu + 1`) it comes from its
    positive series, so that :math:`h \approx \kappa^2 / (2d)` keeps full relative accuracy as :math:`\kappa \to 0`
    (subtracting two logarithms of size :math:`\nu |\log \kappa|` would not); elsewhere from the exponentially scaled
    :func:`log_ive`, which gives :math:`\log C_d + \kappa` without the cancellation of two terms of size
    :math:`\kappa`.
    """
    nu = 0.5 * dim - 1.0
    log_area = _log_sphere_area(dim)
    y = 0.25 * kappa * kappa
    series = y <= nu + 1.0
    y_series = torch.where(series, y, torch.zeros_like(y))
    term = torch.ones_like(y_series)
    total = torch.zeros_like(y_series)
    for m in range(1, _SERIES_TERMS + 1):
        term = term * y_series / (m * (nu + m))
        total = total + term
    h_series = torch.log1p(total)
    # The Bessel branch sees a harmless stand-in where the series is used, so neither branch feeds NaN gradients.
    stand_in = 2.0 * math.sqrt(nu + 1.0) + 1.0
    kappa_bessel = torch.where(series, torch.full_like(kappa, stand_in), kappa)
    order = torch.full_like(kappa_bessel, nu)
    shifted_bessel = nu * torch.log(kappa_bessel) - 0.5 * dim * _LOG_2PI - log_ive(order, kappa_bessel, validate=False)
    log_c_series = -log_area - h_series
    log_c = torch.where(series, log_c_series, shifted_bessel - kappa_bessel)
    excess = torch.where(series, h_series, kappa_bessel - shifted_bessel - log_area)
    shifted = torch.where(series, log_c_series + kappa, shifted_bessel)
    return log_c, excess, shifted


def _mean_resultant_length(dim: int, kappa: torch.Tensor) -> torch.Tensor:
    r""":math:`A_d(\kappa) = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`, with :math:`A_d(0) = 0`."""
    positive = kappa > 0
    safe = torch.where(positive, kappa, torch.ones_like(kappa))
    ratio = iv_ratio(torch.full_like(safe, 0.5 * dim - 1.0), safe, validate=False)
    return torch.where(positive, ratio, torch.zeros_like(ratio))


def _hankel_sum_scalar(v: float, x: float) -> float:
    r"""Scalar twin of the Hankel sum of ``_bessel``, :math:`\sum_{k=1}^{20} t_k` for :math:`I_v`.

    :math:`t_k = -t_{k-1}(4v^2 - (2k-1)^2)/(8kx)`, :math:`t_0 = 1`.
    """
    mu = 4.0 * v * v
    term = 1.0
    total = 0.0
    for k in range(1, HANKEL_TERMS + 1):
        term = term * (-(mu - float((2 * k - 1) ** 2)) / (8.0 * k) / x)
        total = total + term
    return total


def _debye_sum_scalar(v: float, x: float) -> float:
    r"""Scalar twin of the Debye sum of ``_bessel``: :math:`\sum_{k\ge1} u_k(t)/v^k = \sum_k P_k(t^2)/h^k`."""
    h = math.hypot(v, x)
    rho = 1.0 / h
    p = (v / h) ** 2
    total = 0.0
    power = 1.0
    for coefficients in debye_coefficients(DEBYE_TERMS):
        power = power * rho
        acc = coefficients[0]
        for c in coefficients[1:]:
            acc = acc * p + c
        total = total + power * acc
    return total


def _iv_ratio_scalar(v: float, x: float) -> float:
    r""":math:`I_{v+1}(x)/I_v(x)` for Python floats :math:`v \ge 0`, :math:`x > 0`.

    The region scheme of :func:`~sciml_special.iv_ratio` (Hankel quotient, analytic Debye difference, fixed-depth
    continued fraction) written with :mod:`math`, the same operations in the same order, so the two agree to an ulp
    or so. It serves the scalar concentration solve, where the tensor route's per-call overhead is about a hundred
    times its arithmetic.
    """
    if x > SMALL_X and v * v < HANKEL_C * x:
        return (1.0 + _hankel_sum_scalar(v + 1.0, x)) / (1.0 + _hankel_sum_scalar(v, x))
    if x > SMALL_X or v > DEBYE_V:
        h0 = math.hypot(v, x)
        h1 = math.hypot(v + 1.0, x)
        two_v_1 = 2.0 * v + 1.0
        exponent = (
            two_v_1 / (h1 + h0)
            - math.asinh((v + 1.0) / x)
            - v * math.asinh(two_v_1 / ((v + 1.0) * h0 + v * h1))
            - 0.25 * math.log1p(two_v_1 / (h0 * h0))
        )
        return math.exp(exponent + math.log1p(_debye_sum_scalar(v + 1.0, x)) - math.log1p(_debye_sum_scalar(v, x)))
    w = v + (RATIO_DEPTH + 1)
    r = x / (w + math.sqrt(w * w + x * x))
    for j in range(RATIO_DEPTH, 0, -1):
        r = x / (2.0 * (v + j) + x * r)
    return r


def _mean_resultant_length_scalar(dim: int, kappa: float) -> float:
    r""":math:`A_d(\kappa)` for a Python float, with :math:`A_d(0) = 0`."""
    return _iv_ratio_scalar(0.5 * dim - 1.0, kappa) if kappa > 0 else 0.0


def _check_dim(name: str, dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
        raise SciMLInputError(name, f"must be an int (the ambient dimension d of the sphere S^(d-1)), got {dim!r}")
    if int(dim) < 2:
        raise SciMLInputError(name, f"must be >= 2 (the sphere S^(d-1) in R^d), got {dim}")
    return int(dim)


def _sphere_tolerance(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-6


class _UnitSphere(constraints.Constraint):
    r"""Vectors of unit Euclidean norm along the last dimension, up to :math:`\sqrt{\epsilon}` of the dtype."""

    is_discrete = False
    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        """Return a boolean tensor of shape ``value.shape[:-1]``: True where ``value`` lies on the sphere."""
        floating = value if value.dtype.is_floating_point else value.to(torch.get_default_dtype())
        norm = torch.linalg.vector_norm(floating, dim=-1)
        return (norm - 1.0).abs() <= _sphere_tolerance(floating.dtype)

    def __repr__(self) -> str:
        return "unit_sphere()"


unit_sphere = _UnitSphere()
"""Constraint: unit vectors along the last dimension (``event_dim=1``); the support of both distributions here."""


def _householder_rotate(direction: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    r"""Map points given around :math:`e_1` to the same points around ``direction`` by an orthogonal map.

    The map is :math:`s H` with :math:`H = I - 2uu^\top/u^\top u` and :math:`u = e_1 - s\mu`, which sends :math:`e_1`
    to :math:`\mu`; the sign :math:`s = -\operatorname{sign}(\mu_1)` keeps :math:`u^\top u = 2(1 + |\mu_1|) \ge 2`,
    so the reflection never divides by a small number.
    """
    first = direction[..., :1]
    sign = torch.where(first > 0, -torch.ones_like(first), torch.ones_like(first))
    u = torch.cat([1.0 - sign * first, -sign * direction[..., 1:]], dim=-1)
    uu = (u * u).sum(-1, keepdim=True)
    return sign * (points - (2.0 * (u * points).sum(-1, keepdim=True) / uu) * u)


# ------------------------------------------------------------------------------------------ Wood's sampler


def _wood_one_minus_w(kappa: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    r"""Draw :math:`t = 1 - w` for :math:`w = \mu^\top x`, :math:`x \sim \mathrm{vMF}(\mu, \kappa)`, by Wood's method.

    Wood (1994) proposes :math:`w = (1 - (1+b)z) / (1 - (1-b)z)` with :math:`z \sim \mathrm{Beta}((d-1)/2, (d-1)/2)`
    and accepts when :math:`\kappa w + (d-1)\log(1 - x_0 w) - c \ge \log u`. Every quantity is rewritten without
    cancellation: :math:`b = (d-1) / (2\kappa + \sqrt{4\kappa^2 + (d-1)^2})`, :math:`t = 2bz / (1 - (1-b)z)` (so
    :math:`w` near 1 keeps its relative accuracy), and the acceptance exponent becomes
    :math:`\kappa(2b/(1+b) - t) + (d-1)[\log((1+b)/2) + \operatorname{log1p}(t(1-b)/(2b))]`, which is the log of a
    ratio at most 1. ``kappa`` is a flat float64 tensor; proposals are vectorised over the entries still waiting.
    Returns the draws and the number of proposals made.
    """
    m1 = float(dim - 1)
    root = torch.sqrt(4.0 * kappa * kappa + m1 * m1)
    denominator = 2.0 * kappa + root
    b = m1 / denominator
    one_minus_b = (2.0 * kappa + 4.0 * kappa * kappa / (root + m1)) / denominator
    half_m1 = torch.full_like(kappa, 0.5 * m1)

    result = torch.zeros_like(kappa)
    pending = torch.arange(kappa.numel(), device=kappa.device)
    proposals = 0
    for _ in range(_MAX_REJECTION_ROUNDS):
        if pending.numel() == 0:
            break
        proposals += pending.numel()
        # Beta(a, a) as X / (X + Y) with X, Y ~ Gamma(a): two gamma draws cost less than torch's Dirichlet path.
        shape_parameter = half_m1[pending]
        gamma = torch.distributions.Gamma(shape_parameter, torch.ones_like(shape_parameter), validate_args=False)
        first, second = gamma.sample(), gamma.sample()
        both = first + second
        z = torch.where(both > 0, first / both.clamp_min(torch.finfo(both.dtype).tiny), 0.5)
        bb, omb, kk = b[pending], one_minus_b[pending], kappa[pending]
        t = 2.0 * bb * z / (1.0 - omb * z)
        log_ratio = kk * (2.0 * bb / (1.0 + bb) - t) + m1 * (
            torch.log(0.5 * (1.0 + bb)) + torch.log1p(t * omb / (2.0 * bb))
        )
        accept = torch.log(torch.rand_like(t)) <= log_ratio
        result[pending[accept]] = t[accept]
        pending = pending[~accept]
    if pending.numel() > 0:
        worst = kappa[pending[:3]].tolist()
        raise SciMLError(
            f"VonMisesFisher sampler: {pending.numel()} draws were still rejected after {_MAX_REJECTION_ROUNDS} "
            f"rounds of Wood's method (d={dim}, concentration e.g. {worst}); are the parameters finite?"
        )
    return result, proposals


@cache
def _gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    return x, w


def _angle_gradient(theta: torch.Tensor, kappa: torch.Tensor, dim: int, mean_cos: torch.Tensor) -> torch.Tensor:
    r"""Implicit reparameterisation gradient :math:`\partial\theta/\partial\kappa` of the polar angle of a vMF draw.

    The polar angle :math:`\theta = \arccos(\mu^\top x)` has density :math:`p_\Theta(\vartheta) \propto
    e^{\psi(\vartheta)}`, :math:`\psi = \kappa\cos\vartheta + (d-2)\log\sin\vartheta`, and
    :math:`\partial_\kappa \log p_\Theta = \cos\vartheta - A_d(\kappa)`. With the CDF :math:`F(\theta;\kappa)`,
    Figurnov et al. (2018) give :math:`d\theta/d\kappa = -\partial_\kappa F / p_\Theta(\theta)`, that is

    .. math::

        \frac{d\theta}{d\kappa} = -\int_0^\theta (\cos\vartheta - A)\, e^{\psi(\vartheta) - \psi(\theta)}\,d\vartheta
        = -\int_\theta^\pi (A - \cos\vartheta)\, e^{\psi(\vartheta) - \psi(\theta)}\,d\vartheta .

    No normalising constant appears. The two forms are equal; the one whose integrand keeps one sign is used
    (the first when :math:`\cos\theta \ge A`), so nothing cancels. :math:`\cos\vartheta - A = (1 - A) -
    2\sin^2(\vartheta/2)` and :math:`\cos\vartheta - \cos\theta = -2\sin(\frac{\vartheta+\theta}2)
    \sin(\frac{\vartheta-\theta}2)` keep small angles accurate. The integral is a composite Gauss-Legendre rule on
    panels whose widths double away from :math:`\theta`, starting at the integrand's local scale
    :math:`1/(|\psi'(\theta)| + |\psi''(\theta)|^{1/2})`. All inputs are flat float64 tensors.
    """
    m2 = float(dim - 2)
    nodes_np, weights_np = _gauss_legendre(_NODES_PER_PANEL)
    nodes = torch.as_tensor(nodes_np, dtype=theta.dtype, device=theta.device)
    weights = torch.as_tensor(weights_np, dtype=theta.dtype, device=theta.device)
    powers = torch.pow(2.0, torch.arange(_PANELS + 1, dtype=theta.dtype, device=theta.device)) - 1.0
    out = torch.empty_like(theta)
    chunk = _GRADIENT_CHUNK.get(theta.device.type, _GRADIENT_CHUNK_DEFAULT)
    for start in range(0, theta.numel(), chunk):
        piece = slice(start, start + chunk)
        th = theta[piece].clamp(1e-300, math.pi - 1e-15)
        k, a = kappa[piece], mean_cos[piece]
        sin_th, cos_th = torch.sin(th), torch.cos(th)
        sin_half_th, cos_half_th = torch.sin(0.5 * th), torch.cos(0.5 * th)
        upper = cos_th >= a  # integrate over [0, theta]; else over [theta, pi]
        direction = torch.where(upper, -1.0, 1.0)
        length = torch.where(upper, th, math.pi - th)
        slope = -k * sin_th + m2 * cos_th / sin_th
        curvature = k * cos_th + m2 / (sin_th * sin_th)
        scale = 1.0 / (slope.abs() + curvature.abs().sqrt())
        scale = torch.minimum(torch.nan_to_num(scale, nan=math.pi, posinf=math.pi), length)
        edges = torch.minimum(scale[:, None] * powers, length[:, None])  # (n, panels + 1)
        low, high = edges[:, :-1, None], edges[:, 1:, None]
        # half the signed offset of each node from theta, (n, panels, nodes); phi = theta + 2 * half
        half = (0.5 * direction)[:, None, None] * (low + 0.5 * (high - low) * (nodes + 1.0))
        rule = 0.5 * (high - low) * weights
        s, c = torch.sin(half), torch.cos(half)
        sin_th3, cos_th3 = sin_th[:, None, None], cos_th[:, None, None]
        # angle-addition forms: only sin and cos of the offset are evaluated per node
        cos_gap = -2.0 * (sin_th3 * c + cos_th3 * s) * s  # cos(phi) - cos(theta)
        sin_half_phi = sin_half_th[:, None, None] * c + cos_half_th[:, None, None] * s
        exponent = k[:, None, None] * cos_gap
        if m2 > 0:
            sin_phi = (sin_th3 * (c * c - s * s) + 2.0 * cos_th3 * s * c).clamp_min(0.0)
            exponent = exponent + m2 * (torch.log(sin_phi) - torch.log(sin_th)[:, None, None])
        exponent = exponent.clamp(max=700.0)
        distance = (1.0 - a)[:, None, None] - 2.0 * sin_half_phi * sin_half_phi  # cos(phi) - A
        distance = (distance * torch.where(upper, 1.0, -1.0)[:, None, None]).clamp_min(0.0)
        integral = (rule * distance * torch.exp(exponent)).sum(dim=(1, 2))
        out[piece] = -integral
    return out


class _ImplicitAngle(torch.autograd.Function):
    """theta sampled outside autograd; its gradient with respect to kappa is the implicit one (first order only)."""

    @staticmethod
    def forward(ctx: Any, kappa: torch.Tensor, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return theta.clone()

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (gradient,) = ctx.saved_tensors
        return grad_outputs[0] * gradient, None, None


def _sample_polar_angle(kappa: torch.Tensor, leading: torch.Size, dim: int) -> torch.Tensor:
    """Polar angles of vMF draws, shape ``leading``, for concentrations of a shape that broadcasts to it.

    ``kappa`` is in the compute dtype; the result is differentiable in ``kappa`` (implicit reparameterisation).
    """
    with torch.no_grad():
        kappa_value = kappa.detach()
        flat = kappa_value.expand(leading).reshape(-1)
        t, _ = _wood_one_minus_w(flat, dim)
        theta = (2.0 * torch.asin(torch.sqrt(0.5 * t).clamp(0.0, 1.0))).reshape(leading)
    if not (torch.is_grad_enabled() and kappa.requires_grad):
        return theta
    with torch.no_grad():
        # A_d(kappa) once per batch entry, not once per draw
        mean_cos = _mean_resultant_length(dim, kappa_value).expand(leading).reshape(-1)
        gradient = _angle_gradient(theta.reshape(-1), flat, dim, mean_cos).reshape(leading)
    return _ImplicitAngle.apply(kappa.expand(leading), theta, gradient)  # pyright: ignore[reportReturnType]


# --------------------------------------------------------------------------------------------- distributions


def _as_parameter(name: str, value: object, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    tensor = check_tensor(name, value)
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise SciMLInputError(name, f"must be real, got {tensor.dtype}")
    return tensor


class VonMisesFisher(Distribution):
    r"""The von Mises-Fisher distribution on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math::

        p(x) = C_d(\kappa)\, e^{\kappa \mu^\top x}, \qquad
        \log C_d(\kappa) = (d/2-1)\log\kappa - (d/2)\log 2\pi - \log I_{d/2-1}(\kappa),

    with mean :math:`A_d(\kappa)\mu`, :math:`A_d = I_{d/2}/I_{d/2-1}`, and entropy
    :math:`-\kappa A_d(\kappa) - \log C_d(\kappa)`. The normaliser is computed in log space (from
    :func:`~sciml_special.log_ive`, and from the series of :math:`{}_0F_1` near the uniform limit) in float64, so it
    is finite for any :math:`d` (tested to 32768) and :math:`\kappa` (tested from :math:`10^{-3}` to :math:`10^6`),
    and tends to :math:`-\log|S^{d-1}|` as :math:`\kappa \to 0`.

    Sampling uses Wood's (1994) rejection sampler for :math:`w = \mu^\top x` (rewritten without cancellation and
    run in float64, at most 100 vectorised rounds), a uniform direction orthogonal to :math:`e_1`, and a Householder
    reflection taking :math:`e_1` to :math:`\mu`. ``rsample`` is reparameterised: gradients reach ``loc`` through the
    reflection and ``concentration`` through the implicit reparameterisation (Figurnov et al. 2018) of the polar angle
    :math:`\theta = \arccos \mu^\top x`, whose density is :math:`\propto e^{\psi(\theta)}`,
    :math:`\psi = \kappa\cos\theta + (d-2)\log\sin\theta`:

    .. math::

        \frac{d\theta}{d\kappa} = -\frac{\partial_\kappa F(\theta;\kappa)}{p(\theta;\kappa)}
        = -\int_0^\theta (\cos\vartheta - A_d(\kappa))\, e^{\psi(\vartheta) - \psi(\theta)}\,d\vartheta,

    evaluated per draw by Gauss-Legendre quadrature on panels that double in width away from :math:`\theta` (80
    nodes; relative error below 1e-8 against mpmath over :math:`d \le 32768`, :math:`10^{-3} \le \kappa \le
    10^6`), over whichever tail keeps the integrand of one sign. The gradient is unbiased (dropping the rejection step
    would not be) and needs no score-function correction (Davidson et al. 2018 use one). Second derivatives through
    ``rsample`` with respect to ``concentration`` are not supported.

    ``loc`` is divided by its norm internally (a no-op on unit vectors), so gradients with respect to ``loc`` are
    tangent to the sphere; with ``validate_args`` on (torch's default) a ``loc`` that is not a unit vector within
    :math:`\sqrt{\epsilon}` raises ``ValueError``. Note that a ``concentration`` of shape ``(..., 1)`` broadcasts
    against ``loc.shape[:-1]`` like any batch dimension; pass shape ``loc.shape[:-1]``.

    Args:
        loc: mean direction, shape ``(*batch, d)`` with ``d >= 2``, unit vectors, floating dtype.
        concentration: :math:`\kappa > 0`, shape broadcastable with ``loc.shape[:-1]``; a Python number is allowed.
        validate_args: as for every ``torch.distributions.Distribution`` (None follows torch's global default).

    Raises:
        SciMLInputError: (a ``ValueError``) for arguments that are not real tensors, a ``loc`` with fewer than two
            coordinates, shapes that do not broadcast, or tensors on different devices.
        ValueError: with ``validate_args``, for a ``loc`` off the sphere or a ``concentration`` that is not positive.

    Example:
        >>> loc = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        >>> vmf = VonMisesFisher(loc, torch.tensor(2.0, dtype=torch.float64))
        >>> x = vmf.rsample((5,))
        >>> x.shape, bool(torch.allclose(x.norm(dim=-1), torch.ones(5, dtype=torch.float64)))
        (torch.Size([5, 3]), True)
        >>> # d = 3 has a closed form: log C_3 = log(kappa) - log(4 pi sinh(kappa))
        >>> float(vmf.log_prob(loc)), math.log(2.0) - math.log(4 * math.pi * math.sinh(2.0)) + 2.0
        (-1.1262..., -1.1262...)
        >>> vmf.mean  # A_3(2) = coth(2) - 1/2
        tensor([0.0000, 0.0000, 0.5373], dtype=torch.float64)

    References:
        Wood, "Simulation of the von Mises Fisher distribution", Commun. Stat. Simul. Comput. 23(1), 1994;
        Figurnov, Mohamed, Mnih, "Implicit Reparameterization Gradients", NeurIPS 2018; Davidson et al.,
        "Hyperspherical Variational Auto-Encoders", UAI 2018; Plesner, Sørensen, Hauberg, "Accurate Computation of
        the Logarithm of Modified Bessel Functions on GPUs", ICS 2024.
    """

    arg_constraints = {"loc": unit_sphere, "concentration": constraints.positive}  # noqa: RUF012  # pyright: ignore[reportIncompatibleMethodOverride, reportAssignmentType]
    support = unit_sphere  # pyright: ignore[reportIncompatibleMethodOverride, reportAssignmentType]
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor | float, validate_args: bool | None = None):
        loc = check_tensor("loc", loc)
        check_dtype("loc", loc, "floating")
        concentration = _as_parameter("concentration", concentration, loc)
        check_same_device(loc=loc, concentration=concentration)
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise SciMLInputError(
                "loc", f"must have shape (..., d) with d >= 2 (a point of R^d), got shape {tuple(loc.shape)}"
            )
        dtype = torch.promote_types(loc.dtype, concentration.dtype)
        if not dtype.is_floating_point:
            dtype = loc.dtype
        loc, concentration = loc.to(dtype), concentration.to(dtype)
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError as err:
            raise SciMLInputError(
                "concentration",
                f"shape {tuple(concentration.shape)} does not broadcast with loc.shape[:-1] = {tuple(loc.shape[:-1])}",
            ) from err
        self._dim = int(loc.shape[-1])
        self.loc = loc.expand((*batch_shape, self._dim))
        self.concentration = concentration.expand(batch_shape)
        super().__init__(batch_shape, torch.Size((self._dim,)), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance: Any = None) -> VonMisesFisher:
        """Return the distribution with its parameters broadcast to ``batch_shape`` (no copy)."""
        new = cast(VonMisesFisher, self._get_checked_instance(VonMisesFisher, _instance))
        batch_shape = torch.Size(batch_shape)
        new._dim = self._dim
        new.loc = self.loc.expand((*batch_shape, self._dim))
        new.concentration = self.concentration.expand(batch_shape)
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # ------------------------------------------------------------------ scalars of kappa (compute dtype)

    @property
    def _direction(self) -> torch.Tensor:
        # Recomputed on each use (not cached at construction) so that every rsample has its own graph: repeated
        # torch.autograd.grad calls on draws of one distribution need no retain_graph.
        norm = torch.linalg.vector_norm(self.loc, dim=-1, keepdim=True)
        return self.loc / norm.clamp_min(torch.finfo(self.loc.dtype).tiny)

    def _wide_concentration(self) -> torch.Tensor:
        return self.concentration.to(_compute_dtype(self.concentration.dtype, self.concentration.device))

    @property
    def dim(self) -> int:
        """The ambient dimension :math:`d` (the sphere is :math:`S^{d-1}`)."""
        return self._dim

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        r""":math:`A_d(\kappa) = \mathbb{E}[\mu^\top x] = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`, shape ``batch_shape``.

        Relative accuracy about 1e-15 in float64 (that of :func:`~sciml_special.iv_ratio`).
        """
        return _mean_resultant_length(self._dim, self._wide_concentration()).to(self.concentration.dtype)

    def log_normalizer(self) -> torch.Tensor:
        r""":math:`\log C_d(\kappa)`, shape ``batch_shape``; see :func:`vmf_log_normalizer`."""
        log_c, _, _ = _log_normalizer_parts(self._dim, self._wide_concentration())
        return log_c.to(self.concentration.dtype)

    # ------------------------------------------------------------------ statistics

    @property
    def mean(self) -> torch.Tensor:
        r""":math:`A_d(\kappa)\,\mu`, shape ``batch_shape + (d,)``."""
        return self.mean_resultant_length[..., None] * self._direction

    @property
    def mode(self) -> torch.Tensor:
        r"""The mean direction :math:`\mu`."""
        return self._direction

    @property
    def variance(self) -> torch.Tensor:
        r"""Diagonal of the covariance, :math:`\frac{A}{\kappa}(1 - \mu_i^2) + A'(\kappa)\,\mu_i^2`.

        The covariance is :math:`\frac{A}{\kappa}(I - \mu\mu^\top) + A'\mu\mu^\top` with
        :math:`A' = \operatorname{Var}(\mu^\top x) = 1 - A^2 - (d-1)A/\kappa`. That difference cancels for
        :math:`\kappa \gg d`: the component along :math:`\mu` has relative error about
        :math:`\epsilon_{64}\kappa^2/d` (1e-4 at :math:`d = 3`, :math:`\kappa = 10^6`); the rest is accurate.
        """
        kappa = self._wide_concentration()
        a = _mean_resultant_length(self._dim, kappa)
        # A / kappa -> 1/d as kappa -> 0 (the uniform's variance)
        across = torch.where(kappa > 0, a / torch.where(kappa > 0, kappa, 1.0), 1.0 / self._dim)
        along = (1.0 - a * a - (self._dim - 1) * across).clamp_min(0.0)
        mu2 = self._direction.to(kappa.dtype) ** 2
        return (across[..., None] * (1.0 - mu2) + along[..., None] * mu2).to(self.concentration.dtype)

    def entropy(self) -> torch.Tensor:
        r""":math:`H = -\kappa A_d(\kappa) - \log C_d(\kappa)`, shape ``batch_shape``.

        Evaluated as :math:`\kappa(1 - A) - (\log C + \kappa)` so that the two terms of size :math:`\kappa` cancel
        exactly, not in floating point.
        """
        kappa = self._wide_concentration()
        _, _, shifted = _log_normalizer_parts(self._dim, kappa)
        a = _mean_resultant_length(self._dim, kappa)
        return (kappa * (1.0 - a) - shifted).to(self.concentration.dtype)

    # ------------------------------------------------------------------ densities and draws

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\log C_d(\kappa) + \kappa\mu^\top x`, shape ``broadcast(value.shape[:-1], batch_shape)``.

        Evaluated as :math:`(\log C_d + \kappa) - \kappa\|x - \mu\|^2/2` (equal on the sphere), which keeps its
        accuracy near the mode when :math:`\kappa` is large.
        """
        value = check_tensor("value", value)
        check_same_device(loc=self.loc, value=value)
        if value.dim() < 1 or value.shape[-1] != self._dim:
            raise SciMLInputError("value", f"must have shape (..., {self._dim}), got {tuple(value.shape)}")
        if self._validate_args:
            self._validate_sample(value)
        kappa = self._wide_concentration()
        _, _, shifted_wide = _log_normalizer_parts(self._dim, kappa)
        shifted = shifted_wide.to(self.concentration.dtype)
        gap = value.to(self.loc.dtype) - self._direction
        return shifted - 0.5 * self.concentration * (gap * gap).sum(-1)

    def rsample(self, sample_shape: _Shape = _NO_SAMPLE_SHAPE) -> torch.Tensor:
        """Reparameterised draws of shape ``sample_shape + batch_shape + (d,)``.

        Raises:
            SciMLError: if some proposals are still rejected after 100 rounds (only for non-finite parameters).
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        leading = shape[:-1]
        dtype, device = self.loc.dtype, self.loc.device
        theta = _sample_polar_angle(self._wide_concentration(), leading, self._dim)[..., None]
        tangent = torch.randn((*leading, self._dim - 1), dtype=dtype, device=device)
        tangent = tangent / torch.linalg.vector_norm(tangent, dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        around_e1 = torch.cat([torch.cos(theta).to(dtype), torch.sin(theta).to(dtype) * tangent], dim=-1)
        return _householder_rotate(self._direction.expand(shape), around_e1)

    def sample(self, sample_shape: _Shape = _NO_SAMPLE_SHAPE) -> torch.Tensor:
        """Draws of shape ``sample_shape + batch_shape + (d,)``, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def __repr__(self) -> str:
        return f"VonMisesFisher(dim: {self._dim}, batch_shape: {tuple(self.batch_shape)})"


class HypersphericalUniform(Distribution):
    r"""The uniform distribution on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    Its density with respect to the surface measure is the constant
    :math:`1/|S^{d-1}|`, :math:`\log|S^{d-1}| = \log 2 + (d/2)\log\pi - \log\Gamma(d/2)`; it is the
    :math:`\kappa \to 0` limit of :class:`VonMisesFisher`. ``dim`` is the ambient dimension :math:`d`, the length of
    the vectors (so it matches ``loc.shape[-1]`` of a :class:`VonMisesFisher`; the code of Davidson et al. 2018 counts
    the sphere's own dimension :math:`d - 1` instead).

    Args:
        dim: ambient dimension :math:`d \ge 2`.
        batch_shape: batch shape (default ``()``).
        dtype: dtype of draws and densities (default: torch's default dtype).
        device: device of draws and densities (default: torch's default device).
        validate_args: as for every ``torch.distributions.Distribution``.

    Example:
        >>> uniform = HypersphericalUniform(3, dtype=torch.float64)
        >>> float(uniform.log_prob(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)))  # -log(4 pi)
        -2.5310...
        >>> uniform.sample((4,)).shape
        torch.Size([4, 3])
    """

    arg_constraints = {}  # noqa: RUF012  # pyright: ignore[reportIncompatibleMethodOverride, reportAssignmentType]
    support = unit_sphere  # pyright: ignore[reportIncompatibleMethodOverride, reportAssignmentType]
    has_rsample = True

    def __init__(
        self,
        dim: int,
        batch_shape: _Shape = _NO_SAMPLE_SHAPE,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ):
        self._dim = _check_dim("dim", dim)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating torch.dtype, got {dtype!r}")
        self._dtype = dtype
        self._device = torch.empty(0, device=device).device
        super().__init__(torch.Size(batch_shape), torch.Size((self._dim,)), validate_args=validate_args)

    def expand(self, batch_shape: _Shape, _instance: Any = None) -> HypersphericalUniform:
        """Return the distribution with batch shape ``batch_shape``."""
        new = cast(HypersphericalUniform, self._get_checked_instance(HypersphericalUniform, _instance))
        new._dim, new._dtype, new._device = self._dim, self._dtype, self._device
        super(HypersphericalUniform, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def dim(self) -> int:
        """The ambient dimension :math:`d`."""
        return self._dim

    @property
    def log_surface_area(self) -> float:
        r""":math:`\log|S^{d-1}|`."""
        return _log_sphere_area(self._dim)

    @property
    def mean(self) -> torch.Tensor:
        """Zero, shape ``batch_shape + (d,)``."""
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self._dtype, device=self._device)

    @property
    def variance(self) -> torch.Tensor:
        """:math:`1/d` in every coordinate."""
        return torch.full(self.batch_shape + self.event_shape, 1.0 / self._dim, dtype=self._dtype, device=self._device)

    def entropy(self) -> torch.Tensor:
        r""":math:`\log|S^{d-1}|`, shape ``batch_shape``."""
        return torch.full(self.batch_shape, self.log_surface_area, dtype=self._dtype, device=self._device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`-\log|S^{d-1}|`, shape ``broadcast(value.shape[:-1], batch_shape)``."""
        value = check_tensor("value", value)
        if value.dim() < 1 or value.shape[-1] != self._dim:
            raise SciMLInputError("value", f"must have shape (..., {self._dim}), got {tuple(value.shape)}")
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -self.log_surface_area, dtype=self._dtype, device=value.device)

    def rsample(self, sample_shape: _Shape = _NO_SAMPLE_SHAPE) -> torch.Tensor:
        """Normalised standard normal vectors, shape ``sample_shape + batch_shape + (d,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        draws = torch.randn(shape, dtype=self._dtype, device=self._device)
        return draws / torch.linalg.vector_norm(draws, dim=-1, keepdim=True).clamp_min(torch.finfo(self._dtype).tiny)

    def sample(self, sample_shape: _Shape = _NO_SAMPLE_SHAPE) -> torch.Tensor:
        """Same as :meth:`rsample` (nothing to differentiate)."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def __repr__(self) -> str:
        return f"HypersphericalUniform(dim: {self._dim}, batch_shape: {tuple(self.batch_shape)})"


# ------------------------------------------------------------------------------------------ KL divergences


def _check_same_dim(p: Distribution, q: Distribution) -> int:
    dim_p, dim_q = p.event_shape[-1], q.event_shape[-1]
    if dim_p != dim_q:
        raise SciMLInputError("q", f"lives on the sphere in R^{dim_q} but p lives in R^{dim_p}")
    return int(dim_p)


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p: VonMisesFisher, q: VonMisesFisher) -> torch.Tensor:
    r""":math:`KL(p\|q) = L_p - L_q + (\kappa_q - \kappa_p)(1 - A_p) + \kappa_q A_p \|\mu_p - \mu_q\|^2/2`.

    This is :math:`\mathbb{E}_p[\log p - \log q] = \log C(\kappa_p) + \kappa_p A_p - \log C(\kappa_q) - \kappa_q A_p
    \mu_q^\top\mu_p` rearranged with :math:`L = \log C + \kappa`, so it is exactly 0 for identical arguments.
    """
    dim = _check_same_dim(p, q)
    check_same_device(p=p.loc, q=q.loc)
    kappa_p, kappa_q = p._wide_concentration(), q._wide_concentration()  # pyright: ignore[reportPrivateUsage]
    _, _, shifted_p = _log_normalizer_parts(dim, kappa_p)
    _, _, shifted_q = _log_normalizer_parts(dim, kappa_q)
    a_p = _mean_resultant_length(dim, kappa_p)
    mu_p = p._direction.to(kappa_p.dtype)  # pyright: ignore[reportPrivateUsage]
    mu_q = q._direction.to(kappa_p.dtype)  # pyright: ignore[reportPrivateUsage]
    half_gap = 0.5 * ((mu_p - mu_q) ** 2).sum(-1)
    kl = shifted_p - shifted_q + (kappa_q - kappa_p) * (1.0 - a_p) + kappa_q * a_p * half_gap
    return kl.to(torch.promote_types(p.loc.dtype, q.loc.dtype))


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> torch.Tensor:
    r""":math:`KL(p\|U) = \kappa A_d(\kappa) - h(\kappa)` with :math:`h = -\log C_d - \log|S^{d-1}|`.

    This equals :math:`-H(p) + \log|S^{d-1}|`, and stays accurate down to :math:`\kappa \to 0`, where it behaves as
    :math:`\kappa^2/(2d)`.
    """
    dim = _check_same_dim(p, q)
    kappa = p._wide_concentration()  # pyright: ignore[reportPrivateUsage]
    _, excess, _ = _log_normalizer_parts(dim, kappa)
    kl = kappa * _mean_resultant_length(dim, kappa) - excess
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return kl.to(p.loc.dtype).expand(shape)


@register_kl(HypersphericalUniform, VonMisesFisher)
def _kl_uniform_vmf(p: HypersphericalUniform, q: VonMisesFisher) -> torch.Tensor:
    r""":math:`KL(U\|q) = -\log|S^{d-1}| - \log C_d(\kappa) = h(\kappa)` (the uniform mean is zero)."""
    dim = _check_same_dim(p, q)
    _, excess, _ = _log_normalizer_parts(dim, q._wide_concentration())  # pyright: ignore[reportPrivateUsage]
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return excess.to(q.loc.dtype).expand(shape)


@register_kl(HypersphericalUniform, HypersphericalUniform)
def _kl_uniform_uniform(p: HypersphericalUniform, q: HypersphericalUniform) -> torch.Tensor:
    _check_same_dim(p, q)
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return torch.zeros(shape, dtype=p._dtype, device=p._device)  # pyright: ignore[reportPrivateUsage]


# ------------------------------------------------------------------------------------------ functions


def vmf_log_normalizer(dim: int, concentration: torch.Tensor) -> torch.Tensor:
    r"""Log normalising constant :math:`\log C_d(\kappa)` of the von Mises-Fisher density on :math:`S^{d-1}`.

    .. math::

        \log C_d(\kappa) = (d/2 - 1)\log\kappa - (d/2)\log 2\pi - \log I_{d/2-1}(\kappa)
        = -\log|S^{d-1}| - \log {}_0F_1(; d/2; \kappa^2/4).

    Computed in float64 (returned in the input's dtype) from :func:`~sciml_special.log_iv`, and from the positive
    series of :math:`{}_0F_1` while :math:`\kappa^2/4 \le d/2`, so it is finite and accurate from the uniform limit
    :math:`\kappa \to 0` (where it tends to :math:`-\log|S^{d-1}|`) to :math:`\kappa = 10^6` and beyond, for any
    :math:`d`. Differentiable: :math:`\partial_\kappa \log C_d(\kappa) = -A_d(\kappa)`.

    Args:
        dim: ambient dimension :math:`d \ge 2`.
        concentration: :math:`\kappa \ge 0`, any shape, floating dtype.

    Returns:
        :math:`\log C_d(\kappa)`, same shape and dtype as ``concentration``.

    Example:
        >>> kappa = torch.tensor([1e-3, 1.0, 1e6], dtype=torch.float64)
        >>> vmf_log_normalizer(3, kappa)  # log(kappa / (4 pi sinh kappa))
        tensor([-2.5310e+00, -2.6925e+00, -9.9999e+05], dtype=torch.float64)
        >>> vmf_log_normalizer(32768, torch.tensor([1e6], dtype=torch.float64)).isfinite().item()
        True

    References:
        Plesner, Sørensen, Hauberg, "Accurate Computation of the Logarithm of Modified Bessel Functions on GPUs",
        ICS 2024; DLMF 10.25.2 (the series of :math:`I_\nu`).
    """
    dim = _check_dim("dim", dim)
    concentration = check_tensor("concentration", concentration)
    check_dtype("concentration", concentration, "floating")
    wide = concentration.to(_compute_dtype(concentration.dtype, concentration.device))
    log_c, _, _ = _log_normalizer_parts(dim, wide)
    return log_c.to(concentration.dtype)


def _default_tol(dtype: torch.dtype) -> float:
    return 64.0 * torch.finfo(dtype).eps


def _kappa_mle_scalar(dim: int, r: float, tol: float, max_iter: int) -> tuple[float, bool, int, float, float, float]:
    r"""One concentration solve of :func:`vmf_kappa_mle` in Python floats (the batched iteration, entry by entry).

    Same start, bracket, Halley/bisection steps and stopping rule as the tensor loop, with :math:`A_d` from
    :func:`_iv_ratio_scalar`. Returns ``(kappa, converged, iterations, step, initial, equation_residual)``.
    """
    if r == 0.0:
        return 0.0, True, 0, 0.0, 0.0, 0.0
    m1 = float(dim - 1)
    one_minus_r2 = (1.0 - r) * (1.0 + r)
    initial = r * (dim - r * r) / one_minus_r2
    low = r * m1 / one_minus_r2
    high = r * (m1 + math.sqrt(r * r * m1 * m1 + one_minus_r2 * (dim + 1.0) ** 2)) / (2.0 * one_minus_r2)
    # Defensive widening of the published bracket, as in the batched loop.
    for _ in range(64):
        bad_low = _mean_resultant_length_scalar(dim, low) - r > 0
        bad_high = _mean_resultant_length_scalar(dim, high) - r < 0
        if not (bad_low or bad_high):
            break
        low = 0.5 * low if bad_low else low
        high = 2.0 * high if bad_high else high
    kappa = min(max(initial, low), high)
    done = False
    iterations = 0
    step_size = 0.0
    for _ in range(max_iter):
        iterations += 1
        a = _mean_resultant_length_scalar(dim, kappa)
        f = a - r
        if f < 0:
            low = kappa
        elif f > 0:
            high = kappa
        da = 1.0 - a * a - m1 * a / kappa
        proposal = math.nan
        if da > 0:
            square = kappa * kappa  # underflows to 0 for kappa below 1e-154: then A'' is +inf, as in the tensors
            d2a = -2.0 * a * da - m1 * da / kappa + (m1 * a / square if square > 0 else math.inf)
            newton = f / da
            denominator = 1.0 - 0.5 * newton * d2a / da
            if denominator != 0:
                proposal = kappa - newton / denominator
        if not (math.isfinite(proposal) and low < proposal < high):
            proposal = math.sqrt(low) * math.sqrt(high) if low > 0 else 0.5 * (low + high)
        if f == 0:
            proposal = kappa
        relative_step = abs(proposal - kappa) / kappa
        width = (high - low) / kappa
        step_size = min(relative_step, width)
        kappa = proposal
        if relative_step <= tol or width <= tol or f == 0:
            done = True
            break
    residual = abs(_mean_resultant_length_scalar(dim, max(kappa, 1e-300)) - r)
    return kappa, done, iterations, step_size, initial, residual


def vmf_kappa_mle(
    dim: int,
    mean_resultant_length: torch.Tensor | float,
    *,
    tol: float | None = None,
    max_iter: int = 100,
) -> Solution[torch.Tensor]:
    r"""Maximum-likelihood concentration: solve :math:`A_d(\kappa) = \bar R` for :math:`\kappa`, batched.

    :math:`A_d = I_{d/2}/I_{d/2-1}` (from :func:`~sciml_special.iv_ratio`) is increasing and concave, so Newton's
    method on :math:`f(\kappa) = A_d(\kappa) - \bar R` converges from the Banerjee et al. (2005) start
    :math:`\kappa_0 = \bar R (d - \bar R^2)/(1 - \bar R^2)`. Each step is Halley's (Sra 2012 uses Newton's), with

    .. math::

        A' = 1 - A^2 - \frac{d-1}{\kappa}A, \qquad
        A'' = -2AA' - \frac{d-1}{\kappa}A' + \frac{d-1}{\kappa^2}A,

    kept inside the bracket from Amos's (1974) bounds on the Bessel ratio,

    .. math::

        \frac{\bar R (d-1)}{1 - \bar R^2} \le \kappa \le
        \frac{\bar R\,[(d-1) + \sqrt{\bar R^2 (d-1)^2 + (1 - \bar R^2)(d+1)^2}]}{2(1 - \bar R^2)},

    (checked numerically and widened if ever violated), and replaced by a bisection step whenever it would leave
    the bracket or :math:`A'` is not positive (the bracket's relative width shrinks like :math:`1 - \bar R^2`, which
    pins :math:`\kappa` even where :math:`A'` cancels, :math:`\bar R \to 1`). :math:`\bar R = 0` gives
    :math:`\kappa = 0` (uniform). The computation runs in float64 and returns the input's dtype (float64 for a Python
    number).

    Args:
        dim: ambient dimension :math:`d \ge 2`.
        mean_resultant_length: :math:`\bar R \in [0, 1)`, a number or a tensor of any shape.
        tol: stop when the relative Newton step (or the relative bracket width) is at most ``tol``; default
            :math:`64\epsilon` of float64.
        max_iter: iteration cap.

    Returns:
        A :class:`~sciml_protocols.Solution` with ``value`` :math:`\hat\kappa` (shape of :math:`\bar R`),
        ``converged`` (every entry), ``n_iter``, ``residual`` (per-entry relative size of the last step) and
        ``stats``: ``"equation_residual"`` :math:`|A_d(\hat\kappa) - \bar R|`, ``"initial"`` (Banerjee's
        :math:`\kappa_0`), ``"iterations"`` (per entry).

    Raises:
        SciMLInputError: for a ``dim`` below 2, an :math:`\bar R` outside :math:`[0, 1)` or not finite, ``tol`` not
            positive or ``max_iter`` below 1.

    Example:
        >>> sol = vmf_kappa_mle(2048, torch.tensor([0.5], dtype=torch.float64))
        >>> sol.converged, round(sol.value.item(), 10)  # mpmath: 1365.0667417076889
        (True, 1365.0667417077)

    References:
        Banerjee, Dhillon, Ghosh, Sra, "Clustering on the unit hypersphere using von Mises-Fisher distributions",
        JMLR 6, 2005; Sra, "A short note on parameter approximation for von Mises-Fisher distributions", Comput.
        Stat. 27, 2012; Amos, "Computation of modified Bessel functions and their ratios", Math. Comp. 28, 1974.
    """
    dim = _check_dim("dim", dim)
    if isinstance(mean_resultant_length, int | float) and not isinstance(mean_resultant_length, bool):
        r_in = torch.tensor(float(mean_resultant_length), dtype=torch.float64)
    else:
        r_in = check_tensor("mean_resultant_length", mean_resultant_length)
        check_dtype("mean_resultant_length", r_in, "floating")
    if not bool(torch.isfinite(r_in).all()):
        raise SciMLInputError("mean_resultant_length", "must be finite, got NaN or infinity")
    if bool((r_in < 0).any()) or bool((r_in >= 1).any()):
        raise SciMLInputError(
            "mean_resultant_length",
            f"must lie in [0, 1), got values in [{float(r_in.min())}, {float(r_in.max())}]; a mean resultant length "
            "of 1 means coinciding points, whose maximum-likelihood concentration is infinite",
        )
    if tol is None:
        tol = _default_tol(torch.float64)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
        raise SciMLInputError("tol", f"must be a positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise SciMLInputError("max_iter", f"must be an int >= 1, got {max_iter!r}")

    wide = _compute_dtype(r_in.dtype, r_in.device)
    if wide == torch.float64 and r_in.numel() <= _SCALAR_SOLVE_MAX and not r_in.requires_grad:
        return _kappa_mle_small(dim, r_in, tol, max_iter)
    r = r_in.to(wide)
    m1 = float(dim - 1)
    one_minus_r2 = (1.0 - r) * (1.0 + r)
    initial = r * (dim - r * r) / one_minus_r2
    low = r * m1 / one_minus_r2
    high = r * (m1 + torch.sqrt(r * r * m1 * m1 + one_minus_r2 * (dim + 1.0) ** 2)) / (2.0 * one_minus_r2)
    zero = r == 0

    def residual_of(kappa: torch.Tensor) -> torch.Tensor:
        return _mean_resultant_length(dim, kappa) - r

    # Defensive: the bracket comes from published inequalities; widen it if rounding (or a bad bound) broke it.
    for _ in range(64):
        bad_low = (residual_of(low) > 0) & ~zero
        bad_high = (residual_of(high) < 0) & ~zero
        if not bool(bad_low.any() or bad_high.any()):
            break
        low = torch.where(bad_low, 0.5 * low, low)
        high = torch.where(bad_high, 2.0 * high, high)

    kappa = torch.minimum(torch.maximum(initial, low), high)
    done = zero.clone()
    iterations = torch.zeros_like(r, dtype=torch.int64)
    step_size = torch.zeros_like(r)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        active = ~done
        iterations = iterations + active.to(torch.int64)
        safe = torch.where(zero, torch.ones_like(kappa), kappa)
        a = _mean_resultant_length(dim, safe)
        f = a - r
        low = torch.where(active & (f < 0), safe, low)
        high = torch.where(active & (f > 0), safe, high)
        da = 1.0 - a * a - m1 * a / safe
        d2a = -2.0 * a * da - m1 * da / safe + m1 * a / (safe * safe)
        newton = f / da
        halley = newton / (1.0 - 0.5 * newton * d2a / da)
        proposal = safe - halley
        inside = torch.isfinite(proposal) & (da > 0) & (proposal > low) & (proposal < high)
        # sqrt(low) * sqrt(high): low * high underflows to 0 for R below about 1e-160
        midpoint = torch.where(low > 0, torch.sqrt(low) * torch.sqrt(high), 0.5 * (low + high))
        proposal = torch.where(inside, proposal, midpoint)
        proposal = torch.where(f == 0, safe, proposal)
        relative_step = (proposal - safe).abs() / safe
        width = (high - low) / safe
        step_size = torch.where(active, torch.minimum(relative_step, width), step_size)
        kappa = torch.where(active, proposal, kappa)
        done = done | (active & ((relative_step <= tol) | (width <= tol) | (f == 0)))
        if bool(done.all()):
            break
    kappa = torch.where(zero, torch.zeros_like(kappa), kappa)
    equation_residual = torch.where(zero, torch.zeros_like(r), residual_of(kappa.clamp_min(1e-300)).abs())
    return Solution(
        value=kappa.to(r_in.dtype),
        converged=bool(done.all()),
        n_iter=n_iter,
        residual=step_size.to(r_in.dtype),
        stats={
            "equation_residual": equation_residual.to(r_in.dtype),
            "initial": torch.where(zero, torch.zeros_like(initial), initial).to(r_in.dtype),
            "iterations": iterations,
        },
    )


def _kappa_mle_small(dim: int, r_in: torch.Tensor, tol: float, max_iter: int) -> Solution[torch.Tensor]:
    """:func:`vmf_kappa_mle` for a few entries: one :func:`_kappa_mle_scalar` solve each, packed like the batch."""
    solves = [_kappa_mle_scalar(dim, r, tol, max_iter) for r in r_in.detach().to(torch.float64).reshape(-1).tolist()]
    kappa, done, iterations, step, initial, residual = (list(column) for column in zip(*solves, strict=True))

    def pack(values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).reshape(r_in.shape).to(r_in.device)

    return Solution(
        value=pack(kappa, r_in.dtype),
        converged=all(done),
        n_iter=max([1, *iterations]),
        residual=pack(step, r_in.dtype),
        stats={
            "equation_residual": pack(residual, r_in.dtype),
            "initial": pack(initial, r_in.dtype),
            "iterations": pack(iterations, torch.int64),
        },
    )


def fit_vmf(
    x: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    tol: float | None = None,
    max_iter: int = 100,
) -> Solution[tuple[torch.Tensor, torch.Tensor]]:
    r"""Maximum-likelihood von Mises-Fisher fit: mean direction and concentration of points on the sphere.

    With (optional, non-negative) weights :math:`w_i`, :math:`s = \sum_i w_i x_i`,

    .. math::

        \hat\mu = s / \|s\|, \qquad \bar R = \|s\| / \textstyle\sum_i w_i, \qquad
        A_d(\hat\kappa) = \bar R \quad \text{(solved by :func:`vmf_kappa_mle`)}.

    Unlike ``scipy.stats.vonmises_fisher.fit``, which returns :math:`\kappa = 10^{-8}` for :math:`d \gtrsim 80`
    because ``ive`` underflows at the end of its bracket, this works in any dimension (tested to :math:`d = 32768`).
    Where all points cancel (:math:`\bar R = 0`) the concentration is 0 and the direction is :math:`e_1`.

    In high dimension with few points the MLE is biased upwards, because :math:`\mathbb{E}\bar R^2 = A^2 + (1 -
    A^2)/n`; ``stats["debiased_concentration"]`` solves :math:`A_d(\kappa) = \sqrt{(n\bar R^2 - 1)/(n - 1)}` instead
    (unweighted fits only; 0 where that is negative).

    Args:
        x: points, shape ``(*batch, n, d)``, rows of unit norm (within :math:`\sqrt{\epsilon}`; normalise with
            ``torch.nn.functional.normalize(x, dim=-1)`` first).
        weights: optional non-negative weights, shape ``(*batch, n)`` (broadcastable), not all zero.
        tol: passed to :func:`vmf_kappa_mle`.
        max_iter: passed to :func:`vmf_kappa_mle`.

    Returns:
        A :class:`~sciml_protocols.Solution` whose ``value`` is ``(loc, concentration)`` of shapes ``(*batch, d)``
        and ``batch``; ``converged``, ``n_iter`` and ``residual`` are those of the concentration solve;
        ``stats`` holds ``"mean_resultant_length"``, ``"debiased_concentration"`` (or None with weights) and the
        solve's ``"equation_residual"``.

    Raises:
        SciMLInputError: for bad shapes or dtypes, rows that are not unit vectors, negative or all-zero weights,
            or points that all coincide (:math:`\bar R = 1`, infinite concentration).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> truth = VonMisesFisher(torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64), 50.0)
        >>> fit = fit_vmf(truth.sample((20000,)))
        >>> loc, kappa = fit.value
        >>> fit.converged, bool((loc - truth.loc).norm() < 0.01), bool(abs(kappa.item() - 50.0) < 2.0)
        (True, True, True)

    References:
        Banerjee, Dhillon, Ghosh, Sra, JMLR 6, 2005 (the MLE on the sphere); Plesner, Sørensen, Hauberg, ICS 2024
        (vMF fits in 2048 to 32768 dimensions).
    """
    x = check_tensor("x", x)
    check_dtype("x", x, "floating")
    if x.dim() < 2 or x.shape[-1] < 2 or x.shape[-2] < 1:
        raise SciMLInputError("x", f"must have shape (..., n, d) with n >= 1 and d >= 2, got {tuple(x.shape)}")
    norms = torch.linalg.vector_norm(x, dim=-1)
    if not bool(torch.isfinite(norms).all()):
        raise SciMLInputError("x", "contains NaN or infinite values")
    off = (norms - 1.0).abs()
    if bool((off > _sphere_tolerance(x.dtype)).any()):
        raise SciMLInputError(
            "x",
            f"rows must be unit vectors (largest | ||x_i|| - 1 | is {float(off.max()):.3g}); normalise with "
            "torch.nn.functional.normalize(x, dim=-1)",
        )
    dim, n = int(x.shape[-1]), int(x.shape[-2])
    wide = _compute_dtype(x.dtype, x.device)
    if weights is None:
        if x.dtype == wide:  # one matrix-vector product: much faster than a reduction over the point axis
            total = (torch.ones(n, dtype=wide, device=x.device) @ x).reshape(*x.shape[:-2], dim)
        else:
            total = x.sum(-2, dtype=wide)  # accumulate in float64 without a float64 copy of x
        mass = torch.full(total.shape[:-1], float(n), dtype=wide, device=x.device)
    else:
        weights = check_tensor("weights", weights)
        check_dtype("weights", weights, "real")
        check_same_device(x=x, weights=weights)
        try:
            w = torch.broadcast_to(weights.to(wide), x.shape[:-1])
        except RuntimeError as err:
            raise SciMLInputError(
                "weights", f"shape {tuple(weights.shape)} does not broadcast to x.shape[:-1] = {tuple(x.shape[:-1])}"
            ) from err
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise SciMLInputError("weights", "must be finite and non-negative")
        mass = w.sum(-1)
        if bool((mass <= 0).any()):
            raise SciMLInputError("weights", "must not be all zero (for some batch entry they sum to 0)")
        if x.dtype == wide:
            total = (w[..., None, :] @ x)[..., 0, :]
        else:
            total = (w.to(x.dtype)[..., None] * x).sum(-2, dtype=wide)
    length = torch.linalg.vector_norm(total, dim=-1)
    r = length / mass
    if bool((r >= 1).any()):
        raise SciMLInputError(
            "x",
            "the points coincide (mean resultant length 1 up to rounding): the maximum-likelihood concentration is "
            "infinite",
        )
    e1 = torch.zeros_like(total)
    e1[..., 0] = 1.0
    positive = (length > 0)[..., None]
    loc = torch.where(positive, total / torch.where(positive, length[..., None], torch.ones_like(total)), e1)
    solve = vmf_kappa_mle(dim, r, tol=tol, max_iter=max_iter)
    debiased: torch.Tensor | None = None
    if weights is None and n > 1:
        a2 = ((n * r * r - 1.0) / (n - 1.0)).clamp(0.0, 1.0 - torch.finfo(wide).eps)
        debiased = vmf_kappa_mle(dim, a2.sqrt(), tol=tol, max_iter=max_iter).value.to(x.dtype)
    return Solution(
        value=(loc.to(x.dtype), solve.value.to(x.dtype)),
        converged=solve.converged,
        n_iter=solve.n_iter,
        residual=solve.residual,
        stats={
            "mean_resultant_length": r.to(x.dtype),
            "debiased_concentration": debiased,
            "equation_residual": solve.stats["equation_residual"],
        },
    )
