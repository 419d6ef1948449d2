r"""Carmon-Duchi-Hinder-Sidford zero-chain functions: the hard instances behind nonconvex lower bounds.

The unscaled chain of length :math:`T` is

.. math::

    \bar f_T(x) = -\Psi(1)\Phi(x_1) + \sum_{i=2}^{T} \bigl[\Psi(-x_{i-1})\Phi(-x_i) - \Psi(x_{i-1})\Phi(x_i)\bigr],

    \Psi(t) = \begin{cases} 0 & t \le \tfrac12 \\ \exp\bigl(1 - (2t-1)^{-2}\bigr) & t > \tfrac12 \end{cases},
    \qquad
    \Phi(t) = \sqrt{e}\int_{-\infty}^{t} e^{-s^2/2}\,ds = \sqrt{2\pi e}\,\operatorname{ndtr}(t).

Its properties (Carmon et al. 2020, Lemmas 2-3) make it a lower-bound instance for every first-order method:

* **zero chain**: with :math:`\operatorname{prog}_{1/2}(x) = k`, every partial derivative
  :math:`\partial_j \bar f_T(x)` with :math:`j > k + 1` is exactly zero, so a method that only moves along the
  gradients it has seen discovers one new coordinate per query;
* **large gradients**: :math:`\|\nabla \bar f_T(x)\| > 1` whenever :math:`|x_T| < 1`;
* **bounded gap**: :math:`\bar f_T(0) - \inf \bar f_T \le 12T`; :math:`|\partial_i \bar f_T| \le 23`; the gradient
  is :math:`\ell_1`-Lipschitz with :math:`\ell_1 \le 152`.

Scaling. For accuracy :math:`\varepsilon` and smoothness :math:`L`,
:math:`f(x) = (L\lambda^2/\ell_1)\bar f_T(x/\lambda)` with :math:`\lambda = \ell_1\varepsilon/L` has an
:math:`L`-Lipschitz gradient, :math:`\nabla f(x) = \varepsilon\nabla\bar f_T(x/\lambda)` (so
:math:`\|\nabla f\| > \varepsilon` until :math:`|x_T| \ge \lambda`) and gap
:math:`f(0) - \inf f \le 12 T \ell_1 \varepsilon^2 / L`; a budget :math:`\Delta` therefore allows
:math:`T = \lfloor \Delta L / (12 \ell_1 \varepsilon^2) \rfloor`.

Numerics. :math:`\Psi(t)` underflows to exactly 0 in float64 once :math:`2t - 1 < 1/30`
(:math:`e^{1-900} < 10^{-390}`), so it is computed as 0 there; that keeps the value and its autograd gradient free of
``0 * inf`` and it is also what makes the zero-chain property hold exactly in floating point.

References:
    - Y. Carmon, J. C. Duchi, O. Hinder, A. Sidford, "Lower bounds for finding stationary points I",
      Mathematical Programming 184, 2020 (arXiv 1710.11606).
    - Y. Arjevani, Y. Carmon, J. C. Duchi, D. J. Foster, N. Srebro, B. Woodworth, "Lower bounds for non-convex
      stochastic optimization", Mathematical Programming 199, 2023 (arXiv 1912.02365).
    - C. Zhang, T. Li, "Quantum Lower Bounds for Finding Stationary Points of Nonconvex Functions", ICML 2023
      (arXiv 2212.03906).
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLInputError, check_dtype, check_finite, check_tensor

__all__ = ["GRADIENT_LIPSCHITZ", "RotatedZeroChain", "StochasticZeroChain", "ZeroChain"]

GRADIENT_LIPSCHITZ: float = 152.0
"""Carmon et al.'s bound :math:`\\ell_1` on the Lipschitz constant of :math:`\\nabla \\bar f_T` (Lemma 3)."""

_SQRT_2PI_E = math.sqrt(2.0 * math.pi * math.e)
_SQRT_E = math.sqrt(math.e)
# Below this value of 2t - 1, exp(1 - (2t - 1)^-2) is under 1e-390: zero in float64 (see the module notes).
_PSI_CUTOFF = 1.0 / 30.0


def _psi(t: torch.Tensor) -> torch.Tensor:
    u = 2.0 * t - 1.0
    active = u > _PSI_CUTOFF
    safe = torch.where(active, u, torch.ones_like(u))
    return torch.where(active, torch.exp(1.0 - safe.reciprocal().square()), torch.zeros_like(u))


def _psi_derivative(t: torch.Tensor) -> torch.Tensor:
    # d/dt exp(1 - (2t-1)^-2) = 4 (2t-1)^-3 exp(1 - (2t-1)^-2)
    u = 2.0 * t - 1.0
    active = u > _PSI_CUTOFF
    safe = torch.where(active, u, torch.ones_like(u))
    value = 4.0 * torch.exp(1.0 - safe.reciprocal().square()) / safe**3
    return torch.where(active, value, torch.zeros_like(u))


def _phi(t: torch.Tensor) -> torch.Tensor:
    return _SQRT_2PI_E * torch.special.ndtr(t)


def _phi_derivative(t: torch.Tensor) -> torch.Tensor:
    return _SQRT_E * torch.exp(-0.5 * t.square())


def _check_point(name: str, x: object, dim: int) -> torch.Tensor:
    tensor = check_tensor(name, x)
    check_dtype(name, tensor)
    if tensor.ndim == 0 or tensor.shape[-1] != dim:
        raise SciMLInputError(name, f"expected shape (..., {dim}), got {tuple(tensor.shape)}")
    check_finite(name, tensor)
    return tensor


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")
    return value


def _chain_value(y: torch.Tensor) -> torch.Tensor:
    first = -_phi(y[..., 0])  # Psi(1) = 1
    previous, current = y[..., :-1], y[..., 1:]
    links = _psi(-previous) * _phi(-current) - _psi(previous) * _phi(current)
    return first + links.sum(dim=-1)


def _chain_gradient(y: torch.Tensor) -> torch.Tensor:
    # x_j enters as "x_i" of link j (and of the first term when j = 1) and as "x_{i-1}" of link j + 1.
    grad = torch.zeros_like(y)
    grad[..., 0] = -_phi_derivative(y[..., 0])
    previous, current = y[..., :-1], y[..., 1:]
    grad[..., 1:] += -_psi(-previous) * _phi_derivative(-current) - _psi(previous) * _phi_derivative(current)
    grad[..., :-1] += -_psi_derivative(-previous) * _phi(-current) - _psi_derivative(previous) * _phi(current)
    return grad


def _progress(y: torch.Tensor, threshold: float) -> torch.Tensor:
    above = y.abs() > threshold
    index = torch.arange(1, y.shape[-1] + 1, device=y.device)
    return torch.where(above, index, torch.zeros_like(index)).amax(dim=-1)


class ZeroChain:
    r"""The zero-chain function :math:`\bar f_T` of Carmon et al., optionally scaled to accuracy and smoothness.

    Unscaled (``scale_eps=None, L=None``), the value is :math:`\bar f_T(x)` (module docstring). Scaled, it is

    .. math:: f(x) = \frac{L\lambda^2}{\ell_1}\bar f_T(x/\lambda), \qquad \lambda = \frac{\ell_1\varepsilon}{L},
        \qquad \ell_1 = 152,

    whose gradient is :math:`L`-Lipschitz and larger than :math:`\varepsilon` in norm while :math:`|x_T| < \lambda`.

    Args:
        T: chain length (the dimension), an int >= 1.
        scale_eps: target accuracy :math:`\varepsilon > 0` of the scaled instance; give it together with ``L``.
        L: gradient Lipschitz constant :math:`L > 0` of the scaled instance.

    Attributes:
        dim: the dimension, ``T``.
        radius: the coordinate scale :math:`\lambda` (1 when unscaled).
        value_scale: the factor :math:`L\lambda^2/\ell_1` (1 when unscaled).
        gap_bound: :math:`12T` times ``value_scale``, an upper bound on :math:`f(0) - \inf f`.

    Raises:
        SciMLInputError: ``T`` is not a positive int, or only one of ``scale_eps`` and ``L`` is given, or one of
            them is not positive.

    Example:
        >>> import torch
        >>> f = ZeroChain(3)
        >>> x = torch.zeros(3, dtype=torch.float64)
        >>> round(float(f(x)), 6)  # -Phi(0) = -sqrt(2 pi e) / 2
        -2.066366
        >>> f.gradient(x)  # only the first coordinate is reachable from 0
        tensor([-1.6487,  0.0000,  0.0000], dtype=torch.float64)

    Reference:
        Y. Carmon, J. C. Duchi, O. Hinder, A. Sidford, "Lower bounds for finding stationary points I",
        Mathematical Programming 2020 (arXiv 1710.11606); used as the hard instance of C. Zhang, T. Li,
        "Quantum Lower Bounds for Finding Stationary Points of Nonconvex Functions", ICML 2023.
    """

    def __init__(self, T: int, *, scale_eps: float | None = None, L: float | None = None) -> None:
        self.dim = _check_int("T", T, 1)
        if (scale_eps is None) != (L is None):
            raise SciMLInputError("scale_eps" if scale_eps is None else "L", "give both scale_eps and L, or neither")
        if scale_eps is None or L is None:
            self.radius = 1.0
            self.value_scale = 1.0
        else:
            for name, value in (("scale_eps", scale_eps), ("L", L)):
                if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):  # pyright: ignore[reportUnnecessaryIsInstance]
                    raise SciMLInputError(name, f"must be a positive finite number, got {value!r}")
            self.radius = GRADIENT_LIPSCHITZ * float(scale_eps) / float(L)
            self.value_scale = float(L) * self.radius**2 / GRADIENT_LIPSCHITZ
        self.gap_bound = 12.0 * self.dim * self.value_scale

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.dim}, radius={self.radius:.4g}, value_scale={self.value_scale:.4g})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The value; same as :meth:`value`."""
        return self.value(x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        r"""The value :math:`f(x)`, differentiable by autograd.

        Args:
            x: points, shape ``(..., T)``, a floating dtype.

        Returns:
            Values, shape ``(...)``.

        Raises:
            SciMLInputError: wrong shape or dtype, or NaN/inf entries.

        Example:
            >>> f = ZeroChain(2)
            >>> x = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
            >>> f.value(x).backward()
            >>> torch.allclose(x.grad, f.gradient(x.detach()))
            True
        """
        x = _check_point("x", x, self.dim)
        return self.value_scale * _chain_value(x / self.radius)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        r"""The analytic gradient :math:`\nabla f(x)` (no autograd graph).

        With :math:`\Psi'(t) = 4(2t-1)^{-3}\Psi(t)` and :math:`\Phi'(t) = \sqrt{e}\,e^{-t^2/2}`,

        .. math:: \partial_j \bar f_T = -\Psi(-x_{j-1})\Phi'(-x_j) - \Psi(x_{j-1})\Phi'(x_j)
            - \Psi'(-x_j)\Phi(-x_{j+1}) - \Psi'(x_j)\Phi(x_{j+1}),

        with :math:`\Psi(\pm x_0)` read as :math:`\Psi(1) = 1, \Psi(-1) = 0` and the last two terms absent for
        :math:`j = T`.

        Args:
            x: points, shape ``(..., T)``.

        Returns:
            Gradients, shape ``(..., T)``.

        Example:
            >>> ZeroChain(2).gradient(torch.tensor([0.0, 0.0], dtype=torch.float64))
            tensor([-1.6487,  0.0000], dtype=torch.float64)
        """
        x = _check_point("x", x, self.dim).detach()
        return (self.value_scale / self.radius) * _chain_gradient(x / self.radius)

    def progress(self, x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        r"""Carmon et al.'s progress :math:`\operatorname{prog}_\alpha(x) = \max\{i \ge 0 : |x_i| > \alpha\lambda\}`.

        With the convention :math:`x_0 = 1` it is 0 when no coordinate exceeds the threshold. The zero-chain
        property is stated with :math:`\alpha = 1/2`; Arjevani et al.'s stochastic oracle uses :math:`\alpha = 1/4`.
        Coordinates are compared in unscaled units (:math:`x/\lambda`).

        Args:
            x: points, shape ``(..., T)``.
            threshold: :math:`\alpha \ge 0`.

        Returns:
            int64 tensor of shape ``(...)`` with values in ``0..T``.

        Example:
            >>> ZeroChain(4).progress(torch.tensor([0.9, -0.7, 0.2, 0.0]))
            tensor(2)
        """
        x = _check_point("x", x, self.dim)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (0 <= threshold < math.inf):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("threshold", f"must be a finite number >= 0, got {threshold!r}")
        return _progress(x.detach() / self.radius, float(threshold))


class RotatedZeroChain(ZeroChain):
    r"""The zero chain seen through a random orthonormal frame: :math:`\tilde f(x) = \bar f_T(U^\top x)`.

    :math:`U \in \mathbb{R}^{d\times T}` has orthonormal columns drawn uniformly (QR of a Gaussian matrix with sign
    correction). The rotation hides the chain's coordinates, so coordinate-wise tricks cannot skip links; the value
    is unchanged along directions orthogonal to the columns of :math:`U`. The gradient is :math:`U\nabla\bar
    f_T(U^\top x)`, progress is measured on :math:`U^\top x`.

    Args:
        T: chain length, an int >= 1.
        d: ambient dimension, an int >= ``T``.
        seed: seed of the rotation.
        dtype: dtype of :math:`U` (float64 by default); inputs are cast to it.
        scale_eps: as in :class:`ZeroChain`.
        L: as in :class:`ZeroChain`.

    Attributes:
        rotation: :math:`U`, shape ``(d, T)``.
        dim: the ambient dimension ``d``.
        chain_length: ``T``.

    Raises:
        SciMLInputError: ``d < T`` or bad ``T``, ``seed``, ``scale_eps``, ``L``.

    Example:
        >>> f = RotatedZeroChain(3, 10, seed=0)
        >>> y = torch.tensor([0.7, -0.2, 0.1], dtype=torch.float64)
        >>> bool(torch.isclose(f(f.rotation @ y), ZeroChain(3)(y)))
        True

    Reference:
        Y. Carmon, J. C. Duchi, O. Hinder, A. Sidford, "Lower bounds for finding stationary points I",
        Mathematical Programming 2020 (arXiv 1710.11606), Section 3.
    """

    def __init__(
        self,
        T: int,
        d: int,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float64,
        scale_eps: float | None = None,
        L: float | None = None,
    ) -> None:
        super().__init__(T, scale_eps=scale_eps, L=L)
        self.chain_length = self.dim
        _check_int("d", d, self.chain_length)
        _check_int("seed", seed, 0)
        if not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(d, self.chain_length, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        signs = torch.sign(torch.diagonal(r))
        signs[signs == 0] = 1.0
        self.rotation = (q * signs).to(dtype)
        self.dim = d

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_point("x", x, self.dim)
        rotation = self.rotation.to(device=x.device)
        return x.to(rotation.dtype) @ rotation

    def value(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\tilde f(x) = f(U^\top x)`, differentiable by autograd; ``x`` has shape ``(..., d)``.

        Example:
            >>> f = RotatedZeroChain(2, 4, seed=1)
            >>> round(float(f(torch.zeros(4, dtype=torch.float64))), 6)
            -2.066366
        """
        return self.value_scale * _chain_value(self._project(x) / self.radius)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`U\nabla f(U^\top x)`, shape ``(..., d)``.

        Example:
            >>> f = RotatedZeroChain(2, 4, seed=1)
            >>> g = f.gradient(torch.zeros(4, dtype=torch.float64))
            >>> round(float(g.norm()), 4)  # sqrt(e): only the first link is active at 0
            1.6487
        """
        y = self._project(x).detach()
        rotation = self.rotation.to(device=y.device)
        return ((self.value_scale / self.radius) * _chain_gradient(y / self.radius)) @ rotation.T

    def progress(self, x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        r"""Progress of :math:`U^\top x` (see :meth:`ZeroChain.progress`).

        Example:
            >>> f = RotatedZeroChain(3, 5, seed=2)
            >>> int(f.progress(f.rotation @ torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)))
            2
        """
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (0 <= threshold < math.inf):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("threshold", f"must be a finite number >= 0, got {threshold!r}")
        return _progress(self._project(x).detach() / self.radius, float(threshold))


class StochasticZeroChain(ZeroChain):
    r"""The zero chain with Arjevani et al.'s probability-:math:`p` zero-respecting stochastic gradient oracle.

    With :math:`z \sim \mathrm{Bernoulli}(p)` and :math:`k = \operatorname{prog}_{1/4}(x)`,

    .. math:: g_i(x; z) = \nabla_i \bar f_T(x)\,\Bigl(1 + \mathbb{1}\{i > k\}\bigl(\tfrac{z}{p} - 1\bigr)\Bigr).

    Because :math:`\nabla_i \bar f_T = 0` for :math:`i > \operatorname{prog}_{1/2}(x) + 1` and
    :math:`\operatorname{prog}_{1/2} \le k`, only coordinate :math:`k + 1` can be affected: it is revealed
    (multiplied by :math:`1/p`) with probability :math:`p` and hidden otherwise. So
    :math:`\mathbb{E}[g] = \nabla \bar f_T` and :math:`\mathbb{E}\|g - \nabla\bar f_T\|^2 =
    \frac{1-p}{p}(\nabla_{k+1}\bar f_T)^2 \le \frac{1-p}{p}\,23^2`; each new coordinate costs about :math:`1/p`
    queries, which gives the :math:`\varepsilon^{-4}` lower bound with :math:`p \propto \varepsilon^2`.

    Args:
        T: chain length, an int >= 1.
        p: reveal probability in ``(0, 1]``.
        seed: seed of the oracle's own generator (used when :meth:`stochastic_gradient` gets none).
        scale_eps: as in :class:`ZeroChain`.
        L: as in :class:`ZeroChain`.

    Attributes:
        p: the reveal probability.
        variance_bound: :math:`(1-p)/p \cdot 23^2`, times the squared gradient scale when scaled.

    Raises:
        SciMLInputError: ``p`` outside ``(0, 1]`` or bad ``T``, ``seed``, ``scale_eps``, ``L``.

    Example:
        >>> f = StochasticZeroChain(3, p=0.5, seed=0)
        >>> x = torch.zeros(3, dtype=torch.float64)
        >>> g = f.stochastic_gradient(x)
        >>> g[0].item() in (0.0, -2 * 1.6487212707001282)  # hidden, or revealed with weight 1/p
        True

    Reference:
        Y. Arjevani, Y. Carmon, J. C. Duchi, D. J. Foster, N. Srebro, B. Woodworth, "Lower bounds for non-convex
        stochastic optimization", Mathematical Programming 2023 (arXiv 1912.02365), Section 3.
    """

    def __init__(
        self, T: int, p: float, seed: int = 0, *, scale_eps: float | None = None, L: float | None = None
    ) -> None:
        super().__init__(T, scale_eps=scale_eps, L=L)
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0 < p <= 1):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("p", f"must be in (0, 1], got {p!r}")
        _check_int("seed", seed, 0)
        self.p = float(p)
        self.generator = torch.Generator().manual_seed(seed)
        gradient_scale = self.value_scale / self.radius
        self.variance_bound = (1.0 - self.p) / self.p * (23.0 * gradient_scale) ** 2

    def stochastic_gradient(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""One draw of the oracle per point of ``x``.

        Args:
            x: points, shape ``(..., T)``; each point gets its own independent :math:`z`.
            generator: CPU generator for :math:`z`; the oracle's own seeded generator when None.

        Returns:
            Stochastic gradients, shape ``(..., T)``, unbiased for :meth:`gradient`.

        Example:
            >>> f = StochasticZeroChain(2, p=1.0)
            >>> x = torch.tensor([0.9, 0.3], dtype=torch.float64)
            >>> torch.equal(f.stochastic_gradient(x), f.gradient(x))  # p = 1 is the exact gradient
            True
        """
        gradient = self.gradient(x)
        generator = self.generator if generator is None else generator
        z = torch.rand(gradient.shape[:-1], generator=generator, dtype=torch.float64) < self.p
        factor = (z.to(gradient.dtype) / self.p).to(gradient.device).unsqueeze(-1)
        k = self.progress(x, 0.25).unsqueeze(-1)
        index = torch.arange(1, self.dim + 1, device=gradient.device)
        return torch.where(index > k, gradient * factor, gradient)
