r"""Optimistic online mirror descent for the stochastically extended adversarial (SEA) model, and a regret tracker.

In online convex optimization a learner plays :math:`x_t \in \mathcal{X}`, then sees a loss :math:`f_t` and
suffers :math:`f_t(x_t)`; its static regret is :math:`R_T = \sum_{t \le T} f_t(x_t) - \min_{x \in \mathcal{X}}
\sum_{t \le T} f_t(x)`. In the SEA model of Sachs et al. (2022) each :math:`f_t` is drawn from a distribution with
mean :math:`F_t`, which may be chosen adversarially. Two quantities interpolate between the stochastic and the
adversarial settings: the cumulative stochastic variance
:math:`\sigma^2_{1:T} = \sum_t \max_x \mathbb{E}\|\nabla f_t(x) - \nabla F_t(x)\|^2` and the cumulative adversarial
variation :math:`\Sigma^2_{1:T} = \sum_t \mathbb{E}\sup_x \|\nabla F_t(x) - \nabla F_{t-1}(x)\|^2`.

Optimistic online mirror descent (OMD) with a Bregman divergence :math:`B` keeps an auxiliary sequence
:math:`\hat x_t` and plays

.. math::

    x_t = \operatorname*{arg\,min}_{x \in \mathcal{X}} \eta_t \langle M_t, x\rangle + B(x, \hat x_t), \qquad
    \hat x_{t+1} = \operatorname*{arg\,min}_{x \in \mathcal{X}} \eta_t \langle \nabla f_t(x_t), x\rangle
        + B(x, \hat x_t),

with the optimistic hint :math:`M_t = \nabla f_{t-1}(x_{t-1})`. Chen et al. show that it attains
:math:`O(\sqrt{\sigma^2_{1:T}} + \sqrt{\Sigma^2_{1:T}})` regret for convex and smooth expected losses,
:math:`O(\frac{1}{\lambda}(\sigma^2_{\max} + \Sigma^2_{\max}) \log((\sigma^2_{1:T} + \Sigma^2_{1:T}) /
(\sigma^2_{\max} + \Sigma^2_{\max})))` for :math:`\lambda`-strongly convex ones and, as an optimistic online Newton
step, :math:`O(d \log(\sigma^2_{1:T} + \Sigma^2_{1:T}))` for exp-concave ones.

References:
    - S. Chen, Y.-J. Zhang, W.-W. Tu, P. Zhao, L. Zhang, "Optimistic Online Mirror Descent for Bridging Stochastic
      and Adversarial Online Convex Optimization", ICML 2023 / JMLR 2024, arXiv:2302.04552.
    - S. Sachs, H. Hadiji, T. van Erven, C. Guzmán, "Between Stochastic and Adversarial Online Convex
      Optimization: Improved Regret Bounds via Smoothness", NeurIPS 2022.
    - C.-K. Chiang, T. Yang, C.-J. Lee, M. Mahdavi, C.-J. Lu, R. Jin, S. Zhu, "Online Optimization with Gradual
      Variations", COLT 2012.
    - E. Hazan, A. Agarwal, S. Kale, "Logarithmic regret algorithms for online convex optimization", Machine
      Learning 69, 2007.
    - J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient projections onto the l1-ball for learning in
      high dimensions", ICML 2008.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from sciml_protocols import SciMLError, SciMLInputError, check_dtype, check_finite, check_tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["OptimisticOMD", "RegretTracker"]

_DomainKind = Literal["ball", "box", "simplex"]
_LossFn = Callable[[torch.Tensor], torch.Tensor]
_ComparatorSolver = Callable[[Sequence[_LossFn]], torch.Tensor]

_DOMAINS = ("ball", "box", "simplex")
_MIRRORS = ("euclidean", "entropic")
_LOSS_CLASSES = ("convex", "strongly_convex", "exp_concave")


# ------------------------------------------------------------------------------------------------ validation


def _check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise SciMLInputError(name, f"must be a finite number > 0, got {value}")
    return number


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SciMLInputError(name, f"must be one of {list(choices)}, got {value!r}")
    return value


def _check_finite_fast(name: str, tensor: torch.Tensor) -> None:
    # one reduction in the common case; the detailed message only when something is wrong
    if not bool(torch.isfinite(tensor).all()):
        check_finite(name, tensor)


def _tolerance(dtype: torch.dtype, requested: float) -> float:
    return max(requested, 10.0 * torch.finfo(dtype).eps)


# ---------------------------------------------------------------------------------------------------- domain


class _Domain:
    """A convex feasible set: the Euclidean ball ``{‖x‖ <= radius}``, a box, or the probability simplex."""

    def __init__(
        self,
        kind: str,
        dim: int,
        *,
        radius: float,
        lower: float | torch.Tensor | None,
        upper: float | torch.Tensor | None,
        dtype: torch.dtype,
        device: torch.device,
        max_iter: int,
        tol: float,
    ) -> None:
        self.kind = kind
        self.dim = dim
        self.max_iter = max_iter
        self.tol = _tolerance(dtype, tol)
        self.radius = _check_positive_number("radius", radius) if kind == "ball" else math.inf
        self.lower = torch.zeros(0, dtype=dtype, device=device)
        self.upper = torch.zeros(0, dtype=dtype, device=device)
        if kind == "box":
            if lower is None or upper is None:
                raise SciMLInputError("lower", "a box domain needs both 'lower' and 'upper'")
            self.lower = self._bound("lower", lower, dtype, device)
            self.upper = self._bound("upper", upper, dtype, device)
            if bool((self.upper <= self.lower).any()):
                raise SciMLInputError("upper", "must be > 'lower' in every coordinate")
        if kind == "simplex" and dim < 2:
            raise SciMLInputError("dim", f"the simplex needs at least 2 coordinates, got {dim}")

    def _bound(self, name: str, value: float | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            check_finite(name, value)
            if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, self.dim)):
                raise SciMLInputError(
                    name, f"must be a number or a tensor of shape ({self.dim},), got {tuple(value.shape)}"
                )
            bound = value.to(dtype=dtype, device=device)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must be a finite number or a tensor, got {value!r}")
            bound = torch.tensor(float(value), dtype=dtype, device=device)
        return bound.expand(self.dim).clone()

    # ---- geometry

    def diameter(self) -> float:
        if self.kind == "ball":
            return 2.0 * self.radius
        if self.kind == "box":
            return float(torch.linalg.vector_norm(self.upper - self.lower))
        return math.sqrt(2.0)

    def center(self, batch: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        shape = (*batch, self.dim)
        if self.kind == "ball":
            return torch.zeros(shape, dtype=dtype, device=device)
        if self.kind == "box":
            return (0.5 * (self.lower + self.upper)).expand(shape).clone()
        return torch.full(shape, 1.0 / self.dim, dtype=dtype, device=device)

    def contains(self, x: torch.Tensor) -> bool:
        slack = 1e3 * self.tol * (1.0 + float(x.abs().max()))
        if self.kind == "ball":
            return bool((torch.linalg.vector_norm(x, dim=-1) <= self.radius + slack).all())
        if self.kind == "box":
            return bool(((x >= self.lower - slack) & (x <= self.upper + slack)).all())
        return bool(((x >= -slack).all()) & ((x.sum(-1) - 1.0).abs() <= slack).all())

    # ---- Euclidean projection

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of ``y`` (shape (..., d)) onto the set."""
        if self.kind == "ball":
            norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            return y * torch.clamp(self.radius / norm.clamp_min(torch.finfo(y.dtype).tiny), max=1.0)
        if self.kind == "box":
            return torch.maximum(torch.minimum(y, self.upper), self.lower)
        return _project_simplex(y)

    # ---- quadratic minimisation: min_x 1/2 x^T H x + b^T x over the set, H symmetric positive semidefinite

    def minimize_quadratic(
        self, hessian: torch.Tensor, linear: torch.Tensor, eig: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if self.kind == "ball":
            evals, evecs = eig if eig is not None else torch.linalg.eigh(hessian)
            coefficient = -(evecs.mT @ linear.unsqueeze(-1)).squeeze(-1)
            return _trust_region(evals, evecs, coefficient, self.radius, self.max_iter, self.tol)
        largest = torch.linalg.eigvalsh(hessian)[..., -1] if eig is None else eig[0][..., -1]
        if bool((largest <= 0).all()):
            return self.minimize_linear(linear)
        return self._accelerated_projected_gradient(hessian, linear, largest)

    def minimize_linear(self, linear: torch.Tensor) -> torch.Tensor:
        if self.kind == "ball":
            norm = torch.linalg.vector_norm(linear, dim=-1, keepdim=True)
            return -self.radius * linear / norm.clamp_min(torch.finfo(linear.dtype).tiny)
        if self.kind == "box":
            return torch.where(linear > 0, self.lower, self.upper)
        index = linear.argmin(dim=-1, keepdim=True)
        return torch.zeros_like(linear).scatter_(-1, index, 1.0)

    def _accelerated_projected_gradient(
        self, hessian: torch.Tensor, linear: torch.Tensor, largest: torch.Tensor
    ) -> torch.Tensor:
        # FISTA with step 1/lambda_max: the box and simplex constraints have no closed-form metric projection.
        step = (1.0 / largest.clamp_min(torch.finfo(linear.dtype).tiny)).unsqueeze(-1)
        x = self.project(-linear * step)
        y = x
        momentum = 1.0
        for _ in range(self.max_iter):
            gradient = (hessian @ y.unsqueeze(-1)).squeeze(-1) + linear
            x_next = self.project(y - step * gradient)
            momentum_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum**2))
            y = x_next + ((momentum - 1.0) / momentum_next) * (x_next - x)
            change = torch.linalg.vector_norm(x_next - x, dim=-1)
            x, momentum = x_next, momentum_next
            if bool((change <= self.tol * (1.0 + torch.linalg.vector_norm(x, dim=-1))).all()):
                break
        return x

    def project_metric(
        self, y: torch.Tensor, eig: tuple[torch.Tensor, torch.Tensor], matrix: torch.Tensor
    ) -> torch.Tensor:
        r"""Projection in the :math:`A`-norm: :math:`\arg\min_x \tfrac12 x^\top A x - (Ay)^\top x` over the set."""
        if self.kind == "ball":
            inside = torch.linalg.vector_norm(y, dim=-1, keepdim=True) <= self.radius
            if bool(inside.all()):
                return y
            evals, evecs = eig
            coefficient = evals * (evecs.mT @ y.unsqueeze(-1)).squeeze(-1)
            projected = _trust_region(evals, evecs, coefficient, self.radius, self.max_iter, self.tol)
            return torch.where(inside, y, projected)
        return self.minimize_quadratic(matrix, -(matrix @ y.unsqueeze(-1)).squeeze(-1), eig)


def _project_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex by sorting (Duchi et al. 2008)."""
    dim = y.shape[-1]
    ordered, _ = torch.sort(y, dim=-1, descending=True)
    cumulative = ordered.cumsum(-1) - 1.0
    ranks = torch.arange(1, dim + 1, dtype=y.dtype, device=y.device)
    support = (ordered - cumulative / ranks) > 0
    count = support.sum(-1, keepdim=True).clamp_min(1)
    threshold = cumulative.gather(-1, count - 1) / count.to(y.dtype)
    return torch.clamp(y - threshold, min=0.0)


def _trust_region(
    evals: torch.Tensor, evecs: torch.Tensor, coefficient: torch.Tensor, radius: float, max_iter: int, tol: float
) -> torch.Tensor:
    r"""Solve :math:`\min_{\|x\| \le R} \tfrac12 x^\top H x - c^\top Q^\top x`, :math:`H = Q \Lambda Q^\top \succeq 0`.

    In the eigenbasis the KKT point is :math:`\tilde x_i(\mu) = c_i / (\lambda_i + \mu)`, with :math:`\mu = 0` when
    that point is inside the ball and otherwise the root of the secular equation
    :math:`\phi(\mu) = 1/R - 1/\|\tilde x(\mu)\| = 0`, found by Newton's method safeguarded by the bracket
    :math:`[0, \|c\|/R]` (bisection whenever a Newton step leaves it). Components with :math:`\lambda_i = c_i = 0`
    are set to zero (pseudo-inverse), which is optimal because the objective is flat along them.
    """
    tiny = torch.finfo(coefficient.dtype).tiny

    def candidate(mu: torch.Tensor) -> torch.Tensor:
        denominator = evals + mu.unsqueeze(-1)
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        ratio = coefficient / safe
        infinite = torch.full_like(ratio, math.inf)
        return torch.where(denominator > 0, ratio, torch.where(coefficient == 0, torch.zeros_like(ratio), infinite))

    zero = torch.zeros(coefficient.shape[:-1], dtype=coefficient.dtype, device=coefficient.device)
    unconstrained = candidate(zero)
    norm0 = torch.linalg.vector_norm(unconstrained, dim=-1)
    boundary = ~(norm0 <= radius)
    if not bool(boundary.any()):
        return (evecs @ unconstrained.unsqueeze(-1)).squeeze(-1)
    low = zero.clone()
    high = torch.linalg.vector_norm(coefficient, dim=-1) / radius
    mu = 0.5 * high
    for _ in range(max_iter):
        point = candidate(mu)
        norm = torch.linalg.vector_norm(point, dim=-1)
        gap = 1.0 / radius - 1.0 / norm.clamp_min(tiny)
        low = torch.where(gap > 0, mu, low)
        high = torch.where(gap <= 0, mu, high)
        if bool(((norm - radius).abs() <= tol * radius)[boundary].all()) or bool(((high - low) <= tol * high).all()):
            break
        derivative = (
            -(coefficient**2 / (evals + mu.unsqueeze(-1)).clamp_min(tiny) ** 3).sum(-1) / norm.clamp_min(tiny) ** 3
        )
        newton = mu - gap / torch.where(derivative < 0, derivative, -torch.ones_like(derivative))
        valid = torch.isfinite(newton) & (newton > low) & (newton < high)
        mu = torch.where(valid, newton, 0.5 * (low + high))
    point = candidate(mu)
    point = point * (radius / torch.linalg.vector_norm(point, dim=-1, keepdim=True).clamp_min(tiny))
    solution = torch.where(boundary.unsqueeze(-1), point, unconstrained)
    return (evecs @ solution.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------------------------------- the learner


class OptimisticOMD:
    r"""Optimistic online mirror descent (OMD) for the SEA model, with the step sizes of Chen et al.

    Each round the learner plays (:meth:`predict`), then receives the gradient of the loss at its play
    (:meth:`update`):

    .. math::

        x_t = \operatorname*{arg\,min}_{x \in \mathcal{X}} \eta_t \langle M_t, x\rangle + B(x, \hat x_t),
        \qquad
        \hat x_{t+1} = \operatorname*{arg\,min}_{x \in \mathcal{X}} \eta_t \langle g_t, x\rangle + B(x, \hat x_t),
        \qquad g_t = \nabla f_t(x_t),

    with the hint :math:`M_t = g_{t-1}` (:math:`M_1 = 0`) unless the caller passes one. Mirror maps:

    * ``"euclidean"``: :math:`B(x, y) = \tfrac12\|x - y\|_2^2`, so both steps are projected gradient steps; domains
      ``"ball"`` (:math:`\|x\|_2 \le R`, centred at the origin), ``"box"`` (:math:`l \le x \le u`) and ``"simplex"``.
    * ``"entropic"``: :math:`B` is the Kullback-Leibler divergence on the simplex, and the steps are the closed-form
      multiplicative updates :math:`x_t \propto \hat x_t \odot e^{-\eta_t M_t}`,
      :math:`\hat x_{t+1} \propto \hat x_t \odot e^{-\eta_t g_t}` (kept in log space).

    Step sizes (``lr`` overrides them with a constant):

    * ``"convex"`` (Chen et al., convex and smooth case):
      :math:`\eta_t = \min\{D / \sqrt{\delta + \sum_{s<t} \|g_s - M_s\|_*^2},\ 1/(4L)\}`, where
      :math:`\|\cdot\|_*` is the dual norm (:math:`\ell_2` for the Euclidean map, :math:`\ell_\infty` for the
      entropic one) and the cap is dropped when ``L`` is not given (linear losses). For the entropic map
      :math:`D` defaults to :math:`\sqrt{2 \log d}`, so that :math:`\mathrm{KL}(u \| \text{uniform}) \le D^2/2`
      as :math:`\tfrac12\|u - v\|^2 \le D^2/2` in the Euclidean case.
    * ``"strongly_convex"`` (:math:`\lambda` = ``lam``): :math:`\eta_t = 2/(\lambda t)`, capped at
      :math:`1/(4L)` when ``L`` is given (which only changes the first :math:`8L/\lambda` rounds).
    * ``"exp_concave"`` (optimistic online Newton step, Euclidean map only): with
      :math:`\gamma = \tfrac12\min\{1/(4GD), \alpha\}` and :math:`A_t = \varepsilon I + \sum_{s \le t} g_s g_s^\top`
      (:math:`\varepsilon = 1/(\gamma D)^2` by default),
      :math:`x_t = \Pi^{A_{t-1}}_{\mathcal{X}}(\hat x_t - \gamma^{-1} A_{t-1}^{-1} M_t)` and
      :math:`\hat x_{t+1} = \Pi^{A_t}_{\mathcal{X}}(\hat x_t - \gamma^{-1} A_t^{-1} g_t)`, i.e. OMD with
      :math:`B(x, y) = \tfrac{\gamma}{2}\|x - y\|_A^2` (Chiang et al. 2012 order: the play uses the matrix before
      the current gradient). The projection :math:`\Pi^A` in the :math:`A`-norm onto the ball solves
      :math:`x = (A + \mu I)^{-1} A y` with the multiplier :math:`\mu \ge 0` found by safeguarded Newton
      iterations on the secular equation :math:`1/R - 1/\|x(\mu)\| = 0` in the eigenbasis of :math:`A`; onto a
      box or the simplex it runs accelerated projected gradient (FISTA) on the quadratic, at most
      ``max_proj_iter`` iterations to relative accuracy ``proj_tol``.

    The constants :math:`1/(4L)`, :math:`2/(\lambda t)` and :math:`\gamma` follow our reading of the paper's
    theorems; all step sizes scale with the user's ``D``, ``L``, ``lam``, ``alpha``, ``G``.

    Batching: ``x0`` of shape ``(..., d)`` runs independent learners over the leading dimensions (one step size
    per learner); gradients and hints then have the same shape.

    Args:
        x0: starting point :math:`\hat x_1`, a tensor of shape ``(..., d)`` inside the domain, or the dimension
            ``d`` (then the centre of the domain: the origin, the box midpoint, the uniform distribution).
        domain: ``"ball"``, ``"box"`` or ``"simplex"``; default ``"ball"`` for the Euclidean map and
            ``"simplex"`` for the entropic one.
        radius: radius :math:`R` of the ball.
        lower: lower corner of the box (number or tensor of shape ``(d,)``).
        upper: upper corner of the box.
        mirror: ``"euclidean"`` or ``"entropic"``.
        loss_class: ``"convex"``, ``"strongly_convex"`` or ``"exp_concave"``.
        D: diameter of the domain (default: computed from it; see above for the entropic map).
        L: smoothness constant of the expected losses (optional cap on the step).
        lam: strong-convexity modulus :math:`\lambda` (required for ``"strongly_convex"``).
        alpha: exp-concavity :math:`\alpha` (required for ``"exp_concave"``).
        G: bound on gradient norms (required for ``"exp_concave"``).
        delta: :math:`\delta > 0` in the adaptive step size (units of squared gradients).
        eps: :math:`\varepsilon` of the Newton matrix (default :math:`1/(\gamma D)^2`).
        lr: constant step size :math:`\eta` replacing the adaptive rules (not for ``"exp_concave"``).
        optimism: if False, the default hint is :math:`M_t = 0` (plain OMD).
        dtype: dtype when ``x0`` is an int (default: ``torch.get_default_dtype()``).
        device: device when ``x0`` is an int.
        max_proj_iter: iteration cap of the iterative projections.
        proj_tol: relative tolerance of the iterative projections.

    Raises:
        SciMLInputError: unknown options, non-positive constants, missing ``lam``/``alpha``/``G``, ``x0`` outside
            the domain or not a floating tensor, an entropic map on a non-simplex domain, ``lr`` with
            ``"exp_concave"``.

    Example:
        >>> import torch
        >>> omd = OptimisticOMD(torch.zeros(2, dtype=torch.float64), radius=1.0, L=1.0)
        >>> target = torch.tensor([0.5, -0.25], dtype=torch.float64)
        >>> for _ in range(200):
        ...     x = omd.predict()
        ...     omd.update(x - target)  # gradient of 1/2 ||x - target||^2
        >>> torch.allclose(omd.predict(), target, atol=1e-6)
        True
    """

    def __init__(
        self,
        x0: torch.Tensor | int,
        *,
        domain: str | None = None,
        radius: float = 1.0,
        lower: float | torch.Tensor | None = None,
        upper: float | torch.Tensor | None = None,
        mirror: str = "euclidean",
        loss_class: str = "convex",
        D: float | None = None,
        L: float | None = None,
        lam: float | None = None,
        alpha: float | None = None,
        G: float | None = None,
        delta: float = 1.0,
        eps: float | None = None,
        lr: float | None = None,
        optimism: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_proj_iter: int = 100,
        proj_tol: float = 1e-12,
    ) -> None:
        self.mirror = _check_choice("mirror", mirror, _MIRRORS)
        self.loss_class = _check_choice("loss_class", loss_class, _LOSS_CLASSES)
        if domain is None:
            domain = "simplex" if self.mirror == "entropic" else "ball"
        kind = _check_choice("domain", domain, _DOMAINS)
        if self.mirror == "entropic" and kind != "simplex":
            raise SciMLInputError("domain", f"the entropic mirror map lives on the simplex, got {kind!r}")
        if self.mirror == "entropic" and self.loss_class == "exp_concave":
            raise SciMLInputError("mirror", "the online Newton step ('exp_concave') uses the Euclidean mirror map")
        if isinstance(max_proj_iter, bool) or not isinstance(max_proj_iter, int) or max_proj_iter < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("max_proj_iter", f"must be a positive int, got {max_proj_iter!r}")
        proj_tol = _check_positive_number("proj_tol", proj_tol)

        if isinstance(x0, torch.Tensor):
            check_dtype("x0", x0)
            check_finite("x0", x0)
            if x0.dim() == 0 or x0.shape[-1] == 0:
                raise SciMLInputError("x0", f"must have shape (..., d) with d >= 1, got {tuple(x0.shape)}")
            start = x0.detach().clone()
        elif isinstance(x0, int) and not isinstance(x0, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            if x0 < 1:
                raise SciMLInputError("x0", f"a dimension must be >= 1, got {x0}")
            start = None
        else:
            raise SciMLInputError("x0", f"must be a tensor or an int dimension, got {type(x0).__name__}")
        self.dim = start.shape[-1] if start is not None else int(x0)
        self.dtype = start.dtype if start is not None else (dtype or torch.get_default_dtype())
        self.device = start.device if start is not None else torch.device(device or "cpu")
        if not self.dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating dtype, got {self.dtype}")
        self.domain = _Domain(
            kind,
            self.dim,
            radius=radius,
            lower=lower,
            upper=upper,
            dtype=self.dtype,
            device=self.device,
            max_iter=max_proj_iter,
            tol=proj_tol,
        )
        if start is None:
            start = self.domain.center(torch.Size(), self.dtype, self.device)
        if not self.domain.contains(start):
            raise SciMLInputError("x0", f"must lie in the {kind} domain")
        if self.mirror == "entropic" and bool((start <= 0).any()):
            raise SciMLInputError("x0", "the entropic map needs a starting point with positive entries")
        self.batch_shape = start.shape[:-1]

        self.delta = _check_positive_number("delta", delta)
        self.L = None if L is None else _check_positive_number("L", L)
        self.lam = None if lam is None else _check_positive_number("lam", lam)
        self.alpha = None if alpha is None else _check_positive_number("alpha", alpha)
        self.G = None if G is None else _check_positive_number("G", G)
        self.lr = None if lr is None else _check_positive_number("lr", lr)
        if D is None:
            D = math.sqrt(2.0 * math.log(self.dim)) if self.mirror == "entropic" else self.domain.diameter()
        self.D = _check_positive_number("D", D)
        self.optimism = bool(optimism)
        if self.loss_class == "strongly_convex" and self.lam is None and self.lr is None:
            raise SciMLInputError("lam", "the strongly convex step size needs the modulus 'lam' > 0")
        self.gamma = math.nan
        if self.loss_class == "exp_concave":
            if self.lr is not None:
                raise SciMLInputError("lr", "the online Newton step has no scalar step size")
            if self.alpha is None:
                raise SciMLInputError("alpha", "the online Newton step needs the exp-concavity 'alpha' > 0")
            if self.G is None:
                raise SciMLInputError("G", "the online Newton step needs the gradient bound 'G' > 0")
            self.gamma = 0.5 * min(1.0 / (4.0 * self.G * self.D), self.alpha)
            self.eps = _check_positive_number("eps", eps) if eps is not None else 1.0 / (self.gamma * self.D) ** 2
        else:
            self.eps = math.nan if eps is None else _check_positive_number("eps", eps)

        # state
        self.t = 0  # completed rounds
        self._x_hat = start.to(self.dtype)
        self._log_x_hat = torch.log(self._x_hat) if self.mirror == "entropic" else self._x_hat
        self._last_grad = torch.zeros_like(self._x_hat)
        self._variation = torch.zeros(self.batch_shape, dtype=self.dtype, device=self.device)
        self._eta = torch.zeros(self.batch_shape, dtype=self.dtype, device=self.device)
        self._hint: torch.Tensor | None = None
        self._play: torch.Tensor | None = None
        if self.loss_class == "exp_concave":
            eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
            self._matrix = (self.eps * eye).expand(*self.batch_shape, self.dim, self.dim).clone()
            self._eig = torch.linalg.eigh(self._matrix)

    # ---- properties

    @property
    def x_hat(self) -> torch.Tensor:
        r"""The auxiliary iterate :math:`\hat x_{t+1}` (shape ``(..., d)``)."""
        return self._x_hat.clone()

    @property
    def variation(self) -> torch.Tensor:
        r"""The observed variation :math:`\sum_{s \le t} \|g_s - M_s\|_*^2` (shape ``(...)``)."""
        return self._variation.clone()

    @property
    def step_size(self) -> torch.Tensor:
        r"""The step size :math:`\eta_t` of the current (or last) round (shape ``(...)``; NaN for Newton steps)."""
        return self._eta.clone()

    # ---- the two steps

    def _dual_norm_sq(self, v: torch.Tensor) -> torch.Tensor:
        if self.mirror == "entropic":
            return v.abs().amax(-1) ** 2
        return (v * v).sum(-1)

    def _step_size(self, round_index: int) -> torch.Tensor:
        if self.lr is not None:
            return torch.full_like(self._variation, self.lr)
        if self.loss_class == "exp_concave":
            return torch.full_like(self._variation, math.nan)
        if self.loss_class == "strongly_convex":
            assert self.lam is not None
            eta = torch.full_like(self._variation, 2.0 / (self.lam * round_index))
        else:
            eta = self.D / torch.sqrt(self.delta + self._variation)
        if self.L is not None:
            eta = eta.clamp(max=1.0 / (4.0 * self.L))
        return eta

    def _mirror_step(self, direction: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """Return argmin_X <direction, x> * eta + B(x, x_hat) (log-weights for the entropic map)."""
        if self.mirror == "entropic":
            logits = self._log_x_hat - eta.unsqueeze(-1) * direction
            return logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        if self.loss_class == "exp_concave":
            evals, evecs = self._eig
            newton = evecs @ ((evecs.mT @ direction.unsqueeze(-1)).squeeze(-1) / evals).unsqueeze(-1)
            return self.domain.project_metric(self._x_hat - newton.squeeze(-1) / self.gamma, self._eig, self._matrix)
        return self.domain.project(self._x_hat - eta.unsqueeze(-1) * direction)

    def _check_vector(self, name: str, value: object) -> torch.Tensor:
        tensor = check_tensor(name, value)
        check_dtype(name, tensor)
        expected = (*self.batch_shape, self.dim)
        if tuple(tensor.shape) != expected:
            raise SciMLInputError(name, f"expected shape {expected}, got {tuple(tensor.shape)}")
        if tensor.device != self.device:
            raise SciMLInputError(name, f"is on {tensor.device} but the learner is on {self.device}")
        _check_finite_fast(name, tensor)
        return tensor.detach().to(self.dtype)

    def predict(self, hint: torch.Tensor | None = None) -> torch.Tensor:
        r"""Play :math:`x_t = \arg\min_{\mathcal{X}} \eta_t\langle M_t, x\rangle + B(x, \hat x_t)`.

        Calling it again before :meth:`update` recomputes the play (the last hint wins).

        Args:
            hint: optimistic hint :math:`M_t` of shape ``(..., d)``; default the last gradient
                :math:`g_{t-1}` (zero at the first round, or always zero with ``optimism=False``).

        Returns:
            The play :math:`x_t`, shape ``(..., d)``.

        Raises:
            SciMLInputError: the hint has the wrong shape, dtype or device, or is not finite.

        Example:
            >>> import torch
            >>> omd = OptimisticOMD(3, mirror="entropic", lr=1.0, dtype=torch.float64)
            >>> omd.predict(hint=torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
            tensor([0.4223, 0.4223, 0.1554], dtype=torch.float64)
        """
        if hint is None:
            m = self._last_grad if self.optimism else torch.zeros_like(self._last_grad)
        else:
            m = self._check_vector("hint", hint)
        self._hint = m
        self._eta = self._step_size(self.t + 1)
        step = self._mirror_step(m, self._eta)
        self._play = step.exp() if self.mirror == "entropic" else step
        return self._play.clone()

    def update(self, grad: torch.Tensor) -> None:
        r"""Feed :math:`g_t = \nabla f_t(x_t)` and move :math:`\hat x_t \to \hat x_{t+1}`.

        Args:
            grad: gradient of the round's loss at the play, shape ``(..., d)``.

        Raises:
            SciMLInputError: :meth:`predict` was not called this round, or ``grad`` has the wrong shape, dtype or
                device, or holds NaN/inf.

        Example:
            >>> import torch
            >>> omd = OptimisticOMD(torch.zeros(2, dtype=torch.float64), lr=0.5, radius=10.0)
            >>> _ = omd.predict()
            >>> omd.update(torch.tensor([1.0, -2.0], dtype=torch.float64))
            >>> omd.x_hat
            tensor([-0.5000,  1.0000], dtype=torch.float64)
        """
        if self._hint is None:
            raise SciMLInputError("grad", "call predict() before update() in every round")
        g = self._check_vector("grad", grad)
        self._variation = self._variation + self._dual_norm_sq(g - self._hint)
        if self.loss_class == "exp_concave":
            self._matrix = self._matrix + g.unsqueeze(-1) * g.unsqueeze(-2)
            self._eig = torch.linalg.eigh(self._matrix)
        step = self._mirror_step(g, self._eta)
        if self.mirror == "entropic":
            self._log_x_hat = step
            self._x_hat = step.exp()
        else:
            self._x_hat = step
        self._last_grad = g
        self._hint = None
        self.t += 1


# ------------------------------------------------------------------------------------------------ the tracker


class RegretTracker:
    r"""Cumulative losses of a learner and of the best fixed point in hindsight, and the regret history.

    The static regret after :math:`T` rounds is

    .. math::

        R_T = \sum_{t=1}^T f_t(x_t) - \min_{u \in \mathcal{X}} \sum_{t=1}^T f_t(u).

    The comparator is computed in one of three ways:

    * exactly (``comparator=None``), for losses fed through :meth:`observe_linear` (:math:`f_t = \langle c_t,
      x\rangle`) or :meth:`observe_quadratic` (:math:`f_t = \tfrac12 x^\top H_t x + b_t^\top x + c_t`, convex):
      the tracker keeps :math:`\sum H_t, \sum b_t, \sum c_t` and minimises the sum over the domain — in closed form
      for linear losses (ball, box, simplex vertex), by the trust-region secular equation on the ball, by
      accelerated projected gradient on the box and simplex (to ``tol``), by a linear solve when unconstrained;
    * against a fixed comparator tensor :math:`u` (``comparator=u``);
    * by a user solver (``comparator=fn``) that receives the list of the loss functions seen so far and returns
      the minimiser, called at each checkpoint.

    Regrets are recorded at the checkpoints: every round (``"all"``), at powers of two (``"pow2"``), or at the
    listed rounds. All of it batches over leading dimensions of the plays (e.g. independent seeds).

    Args:
        comparator: None (exact), a fixed comparator tensor of shape ``(..., d)``, or a solver
            ``fn(loss_fns) -> u``.
        domain: ``"ball"``, ``"box"``, ``"simplex"`` or None (unconstrained; exact mode then needs a positive
            definite :math:`\sum H_t`).
        radius: ball radius.
        lower: box lower corner.
        upper: box upper corner.
        checkpoints: ``"all"``, ``"pow2"`` or a sequence of positive rounds.
        max_iter: iteration cap of the iterative comparator solvers.
        tol: their relative tolerance.

    Raises:
        SciMLInputError: bad options or checkpoints.

    Example:
        >>> import torch
        >>> tracker = RegretTracker(domain="simplex")
        >>> tracker.observe_linear(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
        >>> tracker.observe_linear(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
        >>> float(tracker.regret())  # learner paid 0.5 + 0, the best vertex e_2 paid 0
        0.5
    """

    def __init__(
        self,
        comparator: torch.Tensor | _ComparatorSolver | None = None,
        *,
        domain: str | None = "ball",
        radius: float = 1.0,
        lower: float | torch.Tensor | None = None,
        upper: float | torch.Tensor | None = None,
        checkpoints: str | Sequence[int] = "all",
        max_iter: int = 2000,
        tol: float = 1e-12,
    ) -> None:
        if comparator is not None and not isinstance(comparator, torch.Tensor) and not callable(comparator):
            raise SciMLInputError(
                "comparator", f"must be None, a tensor or a callable, got {type(comparator).__name__}"
            )
        if isinstance(comparator, torch.Tensor):
            check_dtype("comparator", comparator)
            check_finite("comparator", comparator)
        self._comparator = comparator
        self._domain_kind = None if domain is None else _check_choice("domain", domain, _DOMAINS)
        self._domain_options: dict[str, Any] = {"radius": radius, "lower": lower, "upper": upper}
        if self._domain_kind == "ball":
            _check_positive_number("radius", radius)
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("max_iter", f"must be a positive int, got {max_iter!r}")
        self._max_iter = max_iter
        self._tol = _check_positive_number("tol", tol)
        if isinstance(checkpoints, str):
            self._checkpoint_mode = _check_choice("checkpoints", checkpoints, ("all", "pow2"))
            self._checkpoint_set: frozenset[int] = frozenset()
        else:
            rounds = list(checkpoints)
            if not rounds or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rounds):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError("checkpoints", "must be 'all', 'pow2' or a non-empty list of positive ints")
            self._checkpoint_mode = "list"
            self._checkpoint_set = frozenset(rounds)
        self.t = 0
        self._domain: _Domain | None = None
        self._learner_loss: torch.Tensor | None = None
        self._fixed_loss: torch.Tensor | None = None
        self._hessian: torch.Tensor | None = None
        self._linear: torch.Tensor | None = None
        self._constant: torch.Tensor | None = None
        self._exact = True
        self._loss_fns: list[_LossFn] = []
        self._steps: list[int] = []
        self._regrets: list[torch.Tensor] = []

    # ---- recording

    def _setup(self, x: torch.Tensor) -> None:
        if self._learner_loss is not None:
            if x.shape[-1] != self._dim:
                raise SciMLInputError("x", f"expected {self._dim} coordinates, got {x.shape[-1]}")
            return
        if x.dim() == 0 or x.shape[-1] == 0:
            raise SciMLInputError("x", f"must have shape (..., d) with d >= 1, got {tuple(x.shape)}")
        self._dim = x.shape[-1]
        if self._domain_kind is not None:
            self._domain = _Domain(
                self._domain_kind,
                self._dim,
                **self._domain_options,
                dtype=x.dtype,
                device=x.device,
                max_iter=self._max_iter,
                tol=self._tol,
            )
        batch = x.shape[:-1]
        self._learner_loss = torch.zeros(batch, dtype=x.dtype, device=x.device)
        self._fixed_loss = torch.zeros(batch, dtype=x.dtype, device=x.device)

    def _is_checkpoint(self, t: int) -> bool:
        if self._checkpoint_mode == "all":
            return True
        if self._checkpoint_mode == "pow2":
            return t & (t - 1) == 0
        return t in self._checkpoint_set

    def _finish_round(self, loss_fn: _LossFn, learner_loss: torch.Tensor) -> None:
        assert self._learner_loss is not None
        assert self._fixed_loss is not None
        self._learner_loss = self._learner_loss + learner_loss.detach()
        if isinstance(self._comparator, torch.Tensor):
            self._fixed_loss = self._fixed_loss + loss_fn(self._comparator).detach()
        elif self._comparator is not None:
            self._loss_fns.append(loss_fn)
        self.t += 1
        if self._is_checkpoint(self.t):
            self._steps.append(self.t)
            self._regrets.append(self.regret())

    def observe(self, x: torch.Tensor, loss_fn: _LossFn) -> None:
        """Record a round with a general loss; needs a fixed comparator or a comparator solver.

        Args:
            x: the learner's play, shape ``(..., d)``.
            loss_fn: the round's loss, mapping a ``(..., d)`` tensor to its losses of shape ``(...)``.

        Raises:
            SciMLInputError: no comparator was given, or the loss is not finite.

        Example:
            >>> import torch
            >>> tracker = RegretTracker(torch.zeros(1))
            >>> tracker.observe(torch.ones(1), lambda x: (x**2).sum(-1))
            >>> float(tracker.regret())
            1.0
        """
        check_tensor("x", x)
        if self._comparator is None:
            raise SciMLInputError(
                "comparator", "general losses need a fixed comparator or a solver; use observe_linear/quadratic"
            )
        self._setup(x)
        self._exact = False
        loss = loss_fn(x.detach())
        check_finite("loss_fn", loss)
        self._finish_round(loss_fn, loss)

    def observe_linear(self, x: torch.Tensor, c: torch.Tensor) -> None:
        r"""Record a round with the linear loss :math:`f_t(x) = \langle c_t, x\rangle`.

        Args:
            x: the play, shape ``(..., d)``.
            c: the loss vector, shape ``(..., d)`` or ``(d,)``.

        Raises:
            SciMLInputError: bad shapes or non-finite values.
        """
        check_tensor("c", c)
        self.observe_quadratic(x, None, c)

    def observe_quadratic(
        self, x: torch.Tensor, H: torch.Tensor | None, b: torch.Tensor, c: float | torch.Tensor = 0.0
    ) -> None:
        r"""Record a round with :math:`f_t(x) = \tfrac12 x^\top H_t x + b_t^\top x + c_t` (:math:`H_t \succeq 0`).

        Args:
            x: the play, shape ``(..., d)``.
            H: symmetric positive semidefinite, shape ``(..., d, d)`` or ``(d, d)``; None for a linear loss.
            b: linear term, shape ``(..., d)`` or ``(d,)``.
            c: constant term, a number or shape ``(...)``.

        Raises:
            SciMLInputError: bad shapes or non-finite values.

        Example:
            >>> import torch
            >>> tracker = RegretTracker(domain=None)
            >>> eye = torch.eye(2, dtype=torch.float64)
            >>> tracker.observe_quadratic(torch.zeros(2, dtype=torch.float64), eye, -torch.ones(2, dtype=torch.float64))
            >>> float(tracker.regret())  # 0 - min(1/2 |x|^2 - 1^T x) = 1
            1.0
        """
        check_tensor("x", x)
        check_dtype("x", x)
        _check_finite_fast("x", x)
        self._setup(x)
        d = self._dim
        check_tensor("b", b)
        _check_finite_fast("b", b)
        if b.shape[-1:] != (d,):
            raise SciMLInputError("b", f"expected shape (..., {d}), got {tuple(b.shape)}")
        x = x.detach()
        b = b.detach().to(x.dtype)
        loss = (b * x).sum(-1) + (c if not isinstance(c, torch.Tensor) else c.detach().to(x.dtype))
        hessian = None
        if H is not None:
            check_tensor("H", H)
            _check_finite_fast("H", H)
            if H.shape[-2:] != (d, d):
                raise SciMLInputError("H", f"expected shape (..., {d}, {d}), got {tuple(H.shape)}")
            hessian = H.detach().to(x.dtype)
            loss = loss + 0.5 * (x.unsqueeze(-2) @ hessian @ x.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        batch = x.shape[:-1]
        if self._linear is None:
            self._linear = torch.zeros((*batch, d), dtype=x.dtype, device=x.device)
            self._constant = torch.zeros(batch, dtype=x.dtype, device=x.device)
        assert self._constant is not None
        self._linear = self._linear + b
        self._constant = self._constant + c
        if hessian is not None:
            self._hessian = hessian if self._hessian is None else self._hessian + hessian

        def loss_fn(u: torch.Tensor, h: torch.Tensor | None = hessian, lin: torch.Tensor = b) -> torch.Tensor:
            value = (lin * u).sum(-1) + c
            if h is not None:
                value = value + 0.5 * (u.unsqueeze(-2) @ h @ u.unsqueeze(-1)).squeeze(-1).squeeze(-1)
            return value

        self._finish_round(loss_fn, loss)

    # ---- results

    def best_loss(self) -> torch.Tensor:
        """Cumulative loss of the comparator (best fixed point in hindsight, or the given one), shape ``(...)``.

        Raises:
            SciMLError: nothing observed yet, or an exact unconstrained problem that is unbounded below.
        """
        if self._learner_loss is None or self._fixed_loss is None:
            raise SciMLError("no round has been observed yet")
        if isinstance(self._comparator, torch.Tensor):
            return self._fixed_loss.clone()
        if self._comparator is not None:
            u = self._comparator(list(self._loss_fns))
            total = torch.zeros_like(self._learner_loss)
            for loss_fn in self._loss_fns:
                total = total + loss_fn(u).detach()
            return total
        if not self._exact or self._linear is None or self._constant is None:
            raise SciMLError("exact comparators need every round fed through observe_linear/observe_quadratic")
        linear = self._linear
        hessian = self._hessian
        if self._domain is None:
            if hessian is None:
                raise SciMLError("linear losses are unbounded below on an unconstrained domain")
            solution = torch.linalg.solve_ex(hessian, -linear.unsqueeze(-1))
            if bool((solution.info != 0).any()):
                raise SciMLError("the summed Hessian is singular; the unconstrained minimum may not exist")
            u = solution.result.squeeze(-1)
        elif hessian is None:
            u = self._domain.minimize_linear(linear)
        else:
            u = self._domain.minimize_quadratic(hessian, linear)
        value = (linear * u).sum(-1) + self._constant
        if hessian is not None:
            value = value + 0.5 * (u.unsqueeze(-2) @ hessian @ u.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return value

    def regret(self) -> torch.Tensor:
        """The regret after the rounds observed so far, shape ``(...)``.

        Raises:
            SciMLError: nothing observed yet.
        """
        if self._learner_loss is None:
            raise SciMLError("no round has been observed yet")
        return self._learner_loss - self.best_loss()

    @property
    def learner_loss(self) -> torch.Tensor:
        """Cumulative loss of the learner, shape ``(...)``."""
        if self._learner_loss is None:
            raise SciMLError("no round has been observed yet")
        return self._learner_loss.clone()

    @property
    def steps(self) -> torch.Tensor:
        """The checkpoint rounds recorded so far, int64 of shape ``(K,)``."""
        return torch.tensor(self._steps, dtype=torch.int64)

    @property
    def regrets(self) -> torch.Tensor:
        """Regret at each checkpoint, shape ``(K, ...)``."""
        if not self._regrets:
            return torch.zeros(0)
        return torch.stack(self._regrets)

    def slope(self, t_min: int = 1, t_max: int | None = None) -> float:
        r"""Least-squares slope of :math:`\log \bar R_T` against :math:`\log T` over checkpoints in ``[t_min, t_max]``.

        :math:`\bar R_T` is the regret averaged over the batch dimensions. A slope of 1/2 means
        :math:`\sqrt{T}` regret, 0 bounded regret.

        Args:
            t_min: first round of the fit.
            t_max: last round (default: the last checkpoint).

        Returns:
            The fitted exponent.

        Raises:
            SciMLInputError: fewer than two checkpoints in the window, or a non-positive mean regret in it.

        Example:
            >>> import torch
            >>> tracker = RegretTracker(torch.zeros(1), checkpoints="pow2")
            >>> for t in range(1, 65):  # the losses telescope to a regret of sqrt(T)
            ...     tracker.observe(torch.ones(1), lambda x, t=t: x.sum(-1) * (t**0.5 - (t - 1) ** 0.5))
            >>> round(tracker.slope(), 6)
            0.5
        """
        steps = self.steps
        regrets = self.regrets
        if regrets.numel() == 0:
            raise SciMLInputError("t_min", "no checkpoint recorded yet")
        mean = regrets.reshape(len(self._steps), -1).mean(-1).to(torch.float64)
        t_max = self._steps[-1] if t_max is None else t_max
        keep = (steps >= t_min) & (steps <= t_max)
        if int(keep.sum()) < 2:
            raise SciMLInputError("t_min", f"need at least two checkpoints in [{t_min}, {t_max}]")
        values = mean[keep]
        if bool((values <= 0).any()):
            raise SciMLInputError(
                "t_min", "the mean regret is not positive in the window; a log-log slope is undefined"
            )
        log_t = torch.log(steps[keep].to(torch.float64))
        log_r = torch.log(values)
        centred = log_t - log_t.mean()
        return float((centred * (log_r - log_r.mean())).sum() / (centred**2).sum())

    def plot(self, ax: Axes | None = None, *, label: str | None = None) -> Figure:
        """Log-log plot of the regret history (batch mean, and each run faintly).

        Args:
            ax: matplotlib axes to draw in (default: a new figure).
            label: legend label of the mean curve.

        Returns:
            The matplotlib figure.

        Raises:
            SciMLError: nothing recorded yet.
        """
        import matplotlib.pyplot as plt

        if not self._regrets:
            raise SciMLError("no checkpoint recorded yet")
        if ax is None:
            figure, ax = plt.subplots(figsize=(5, 3.5))
        else:
            figure = ax.get_figure()
        steps = self.steps.numpy()
        regrets = self.regrets.reshape(len(self._steps), -1).to(torch.float64).cpu()
        if regrets.shape[1] > 1:
            ax.plot(steps, regrets.numpy(), color="0.7", linewidth=0.5)
        ax.plot(steps, regrets.mean(1).numpy(), color="C0", label=label or "regret")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel("round T")
        ax.set_ylabel("regret")
        if label is not None:
            ax.legend()
        assert figure is not None
        return figure  # pyright: ignore[reportReturnType]
