r"""Light Schrödinger Bridge: a Gaussian-mixture Schrödinger bridge fitted without simulation.

Convention (shared by sciml-ot): the entropic OT problem between :math:`p_0` and :math:`p_1` is

.. math::
    \min_{\pi \in \Pi(p_0, p_1)} \int \tfrac12 \|x - y\|^2 \, d\pi(x, y)
    + \varepsilon\, \mathrm{KL}(\pi \,\|\, p_0 \otimes p_1),

whose solution is the static Schrödinger bridge with a Wiener reference process of variance :math:`\varepsilon`.
Its conditional plan is :math:`\pi^*(y \mid x) \propto \exp(\langle x, y\rangle / \varepsilon)\, v^*(y)` for an
"adjusted Schrödinger potential" :math:`v^*`. LightSB models :math:`v^*` by a Gaussian mixture, for which the
normaliser, the conditional plan and the bridge drift all have closed forms.

Reference:
    A. Korotin, N. Gushchin, E. Burnaev, "Light Schrödinger Bridge", ICLR 2024, arXiv:2310.01174.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from sciml_protocols import SciMLInputError, Solution, check_int
from sciml_protocols import check_finite as _check_finite
from sciml_protocols import check_nonempty as _check_nonempty
from sciml_protocols import check_positive as _check_positive
from torch import nn

__all__ = ["GaussianBridge", "LightSB", "gaussian_bridge"]

Sampler = Callable[[int], torch.Tensor]


def _check_epsilon(epsilon: object) -> float:
    if isinstance(epsilon, torch.Tensor):
        if epsilon.numel() != 1:
            raise SciMLInputError("epsilon", f"must be a scalar, got shape {tuple(epsilon.shape)}")
        epsilon = float(epsilon)
    _check_positive("epsilon", epsilon)  # pyright: ignore[reportArgumentType]
    return float(epsilon)  # pyright: ignore[reportArgumentType]


class LightSB(nn.Module):
    r"""Light Schrödinger Bridge: the entropic OT plan and Schrödinger bridge with a Gaussian-mixture potential.

    The adjusted Schrödinger potential is the (unnormalised) mixture

    .. math::
        v_\theta(y) = \sum_{k=1}^K \alpha_k\, \mathcal N(y \mid r_k, \varepsilon S_k),

    with free log-weights :math:`\log\alpha_k`, means :math:`r_k` and covariances :math:`S_k` (diagonal,
    :math:`S_k = \mathrm{diag}(e^{s_k})`, or full, :math:`S_k = L_k L_k^\top` with a Cholesky factor whose diagonal
    is positive). For the cost :math:`\tfrac12\|x-y\|^2` the conditional plan
    :math:`\pi_\theta(y\mid x) = \exp(\langle x,y\rangle/\varepsilon)\, v_\theta(y) / c_\theta(x)` is again a mixture,

    .. math::
        c_\theta(x) = \sum_k \alpha_k \exp\Big(\frac{x^\top S_k x + 2 r_k^\top x}{2\varepsilon}\Big), \qquad
        \pi_\theta(y \mid x) = \sum_k w_k(x)\, \mathcal N(y \mid r_k + S_k x, \varepsilon S_k),

    with :math:`w_k(x) \propto \alpha_k \exp((x^\top S_k x + 2 r_k^\top x)/(2\varepsilon))`. The simulation-free
    objective :math:`L(\theta) = \mathbb E_{p_0}\log c_\theta(x) - \mathbb E_{p_1}\log v_\theta(y)` equals
    :math:`\mathrm{KL}(\pi^* \| \pi_\theta)` up to a constant (the paper's Proposition), so minimising it by minibatch
    Adam fits the plan from samples of both marginals only.

    The Schrödinger bridge is :math:`dX_t = g_\theta(X_t, t)\,dt + \sqrt{\varepsilon}\, dW_t`, with drift
    :math:`g_\theta = \varepsilon \nabla_x \log h_\theta(x, t)`,
    :math:`h_\theta(x,t) = \int \mathcal N(y \mid x, \varepsilon(1-t) I)\, e^{\|y\|^2/(2\varepsilon)} v_\theta(y)\,dy`;
    in closed form :math:`g_\theta(x, t) = (\mathbb E_\theta[X_1 \mid X_t = x] - x)/(1-t)` (see :meth:`drift`).

    Reference:
        A. Korotin, N. Gushchin, E. Burnaev, "Light Schrödinger Bridge", ICLR 2024, arXiv:2310.01174.

    Args:
        dim: dimension :math:`D` of the samples.
        n_potentials: number :math:`K \ge 1` of mixture components.
        epsilon: entropic weight :math:`\varepsilon > 0` (variance of the reference Wiener process).
        is_diagonal: diagonal :math:`S_k` (default, :math:`O(KD)` parameters) or full Cholesky-parametrised
            :math:`S_k` (:math:`O(KD^2)`).
        sampling_batch_size: if given, :meth:`sample` processes the conditioning points in chunks of this size.
        init_scale: initial value :math:`S_k = \text{init\_scale}\cdot I`.
        device: device of the parameters.
        dtype: floating dtype of the parameters (default: torch's default dtype).

    Raises:
        SciMLInputError: non-positive ``dim``, ``n_potentials`` < 1, non-positive ``epsilon`` or ``init_scale``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> sb = LightSB(2, 3, 0.5, dtype=torch.float64)
        >>> x = torch.zeros(4, 2, dtype=torch.float64)
        >>> sb.sample(x, n_samples=5).shape
        torch.Size([5, 4, 2])
        >>> sb.loss(x, torch.ones(4, 2, dtype=torch.float64)).shape
        torch.Size([])
    """

    def __init__(
        self,
        dim: int,
        n_potentials: int,
        epsilon: float,
        *,
        is_diagonal: bool = True,
        sampling_batch_size: int | None = None,
        init_scale: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.n_potentials = check_int("n_potentials", n_potentials, minimum=1)
        self.epsilon = _check_epsilon(epsilon)
        if not isinstance(is_diagonal, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("is_diagonal", f"must be a bool, got {type(is_diagonal).__name__}")
        self.is_diagonal = is_diagonal
        if sampling_batch_size is not None:
            check_int("sampling_batch_size", sampling_batch_size, minimum=1)
        self.sampling_batch_size = sampling_batch_size
        _check_positive("init_scale", init_scale)
        if dtype is not None and not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
        factory = {"device": device, "dtype": dtype}
        k, d = self.n_potentials, self.dim
        self.log_alpha = nn.Parameter(torch.zeros(k, **factory))
        self.r = nn.Parameter(torch.randn(k, d, **factory))
        half_log_scale = 0.5 * math.log(init_scale)
        if is_diagonal:
            self.log_s = nn.Parameter(torch.full((k, d), 2.0 * half_log_scale, **factory))
        else:
            self.log_chol_diag = nn.Parameter(torch.full((k, d), half_log_scale, **factory))
            self.chol_lower = nn.Parameter(torch.zeros(k, d, d, **factory))

    # ------------------------------------------------------------------ parameters

    def _chol(self) -> torch.Tensor:
        """Cholesky factors ``L_k`` of ``S_k`` (full case), shape ``(K, D, D)``."""
        return torch.tril(self.chol_lower, diagonal=-1) + torch.diag_embed(self.log_chol_diag.exp())

    def covariance_factors(self) -> torch.Tensor:
        r"""The matrices :math:`S_k` (the mixture covariances are :math:`\varepsilon S_k`).

        Returns:
            Shape ``(K, D, D)``, symmetric positive definite.

        Example:
            >>> LightSB(2, 1, 1.0, dtype=torch.float64).covariance_factors().detach()
            tensor([[[1., 0.],
                     [0., 1.]]], dtype=torch.float64)
        """
        if self.is_diagonal:
            return torch.diag_embed(self.log_s.exp())
        chol = self._chol()
        return chol @ chol.transpose(-1, -2)

    def _apply_s(self, z: torch.Tensor) -> torch.Tensor:
        """``S_k z`` for ``z`` of shape ``(..., K, D)``."""
        if self.is_diagonal:
            return z * self.log_s.exp()
        return torch.einsum("kij,...kj->...ki", self.covariance_factors(), z)

    def _logdet_s(self) -> torch.Tensor:
        if self.is_diagonal:
            return self.log_s.sum(-1)
        return 2.0 * self.log_chol_diag.sum(-1)

    def _whiten(self, z: torch.Tensor) -> torch.Tensor:
        """``S_k^{-1/2} z`` (``L_k^{-1} z`` in the full case) for ``z`` of shape ``(..., K, D)``."""
        if self.is_diagonal:
            return z * torch.exp(-0.5 * self.log_s)
        chol = self._chol()
        shape = z.shape
        flat = z.reshape(-1, self.n_potentials, self.dim).transpose(0, 1).unsqueeze(-1)  # (K, N, D, 1)
        solved = torch.linalg.solve_triangular(chol.unsqueeze(1), flat, upper=False).squeeze(-1)
        return solved.transpose(0, 1).reshape(shape)

    def _component_log_normal(self, y: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        r"""``log N(y | means_k, eps S_k)`` with ``y`` of shape ``(..., D)`` and ``means`` ``(..., K, D)``."""
        z = self._whiten(y.unsqueeze(-2) - means) / math.sqrt(self.epsilon)
        const = self.dim * math.log(2.0 * math.pi * self.epsilon)
        return -0.5 * (z.square().sum(-1) + self._logdet_s() + const)

    # ------------------------------------------------------------------ checks

    def _check_points(self, name: str, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise SciMLInputError(name, f"must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise SciMLInputError(name, f"expected shape (..., {self.dim}), got {tuple(x.shape)}")
        _check_nonempty(name, x)
        if x.dtype != self.log_alpha.dtype:
            raise SciMLInputError(name, f"dtype {x.dtype} does not match the model's {self.log_alpha.dtype}")
        if x.device != self.log_alpha.device:
            raise SciMLInputError(name, f"is on {x.device} but the model is on {self.log_alpha.device}")
        return x

    # ------------------------------------------------------------------ closed forms

    def log_potential(self, y: torch.Tensor) -> torch.Tensor:
        r"""Log of the adjusted Schrödinger potential.

        :math:`\log v_\theta(y) = \log\sum_k \alpha_k \mathcal N(y\mid r_k, \varepsilon S_k)`.

        Args:
            y: points, shape ``(..., D)``.

        Returns:
            Shape ``(...)``.

        Raises:
            SciMLInputError: wrong trailing size, dtype or device.

        Example:
            >>> sb = LightSB(1, 1, 1.0, dtype=torch.float64)
            >>> with torch.no_grad():
            ...     _ = sb.r.zero_()
            >>> round(float(sb.log_potential(torch.zeros(1, dtype=torch.float64)).detach()), 6)  # log N(0 | 0, 1)
            -0.918939
        """
        y = self._check_points("y", y)
        return torch.logsumexp(self.log_alpha + self._component_log_normal(y, self.r), dim=-1)

    def _conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``log w_k(x)``, shape ``(..., K)``."""
        xk = x.unsqueeze(-2).expand(*x.shape[:-1], self.n_potentials, self.dim)
        quad = (xk * self._apply_s(xk)).sum(-1)
        return self.log_alpha + (0.5 * quad + (self.r * xk).sum(-1)) / self.epsilon

    def log_normalizer(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log c_\theta(x) = \log \sum_k \alpha_k \exp\big((x^\top S_k x + 2 r_k^\top x)/(2\varepsilon)\big)`.

        Args:
            x: points, shape ``(..., D)``.

        Returns:
            Shape ``(...)``.

        Raises:
            SciMLInputError: wrong trailing size, dtype or device.

        Example:
            >>> sb = LightSB(1, 1, 2.0, dtype=torch.float64)
            >>> with torch.no_grad():
            ...     _ = sb.r.fill_(1.0)
            >>> float(sb.log_normalizer(torch.tensor([2.0], dtype=torch.float64)).detach())  # (4 + 4) / 4
            2.0
        """
        x = self._check_points("x", x)
        return torch.logsumexp(self._conditional_logits(x), dim=-1)

    def conditional_mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Parameters of :math:`\pi_\theta(\cdot\mid x) = \sum_k w_k(x)\,\mathcal N(r_k + S_k x, \varepsilon S_k)`.

        Args:
            x: conditioning points, shape ``(..., D)``.

        Returns:
            ``(log_weights, means, covariances)`` of shapes ``(..., K)`` (normalised), ``(..., K, D)`` and
            ``(K, D, D)`` (the latter is :math:`\varepsilon S_k`, independent of :math:`x`).

        Raises:
            SciMLInputError: wrong trailing size, dtype or device.

        Example:
            >>> sb = LightSB(2, 3, 1.0, dtype=torch.float64)
            >>> logw, means, covs = sb.conditional_mixture(torch.zeros(5, 2, dtype=torch.float64))
            >>> logw.shape, means.shape, covs.shape
            (torch.Size([5, 3]), torch.Size([5, 3, 2]), torch.Size([3, 2, 2]))
        """
        x = self._check_points("x", x)
        log_w = torch.log_softmax(self._conditional_logits(x), dim=-1)
        xk = x.unsqueeze(-2).expand(*x.shape[:-1], self.n_potentials, self.dim)
        means = self.r + self._apply_s(xk)
        return log_w, means, self.epsilon * self.covariance_factors()

    def conditional_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean and covariance of :math:`\pi_\theta(\cdot \mid x)`.

        .. math::
            m(x) = \sum_k w_k \mu_k, \qquad
            \Sigma(x) = \sum_k w_k (\varepsilon S_k + \mu_k \mu_k^\top) - m m^\top, \qquad \mu_k = r_k + S_k x.

        Args:
            x: conditioning points, shape ``(..., D)``.

        Returns:
            ``(mean, covariance)`` of shapes ``(..., D)`` and ``(..., D, D)``.

        Raises:
            SciMLInputError: wrong trailing size, dtype or device.

        Example:
            >>> sb = LightSB(2, 1, 0.5, dtype=torch.float64)
            >>> mean, cov = sb.conditional_moments(torch.zeros(2, dtype=torch.float64))
            >>> cov.detach()
            tensor([[0.5000, 0.0000],
                    [0.0000, 0.5000]], dtype=torch.float64)
        """
        log_w, means, covs = self.conditional_mixture(x)
        w = log_w.exp()
        mean = (w.unsqueeze(-1) * means).sum(-2)
        second = torch.einsum("...k,kij->...ij", w, covs) + torch.einsum("...k,...ki,...kj->...ij", w, means, means)
        return mean, second - mean.unsqueeze(-1) * mean.unsqueeze(-2)

    def log_prob_conditional(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r"""Log-density :math:`\log \pi_\theta(y \mid x)` of the conditional plan.

        Args:
            y: endpoints, shape ``(..., D)``.
            x: conditioning points, shape broadcastable with ``y``.

        Returns:
            Shape: the broadcast batch shape.

        Raises:
            SciMLInputError: wrong trailing size, dtype or device, or shapes that do not broadcast.

        Example:
            >>> sb = LightSB(1, 1, 1.0, dtype=torch.float64)
            >>> with torch.no_grad():
            ...     _ = sb.r.zero_()
            >>> x = torch.tensor([0.5], dtype=torch.float64)
            >>> round(float(sb.log_prob_conditional(x, x).detach()), 6)  # N(0.5 | 0.5, 1)
            -0.918939
        """
        y = self._check_points("y", y)
        x = self._check_points("x", x)
        try:
            y, x = torch.broadcast_tensors(y, x)
        except RuntimeError as err:
            raise SciMLInputError("x", f"shape {tuple(x.shape)} does not broadcast with y {tuple(y.shape)}") from err
        log_w, means, _ = self.conditional_mixture(x)
        return torch.logsumexp(log_w + self._component_log_normal(y, means), dim=-1)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        r"""The simulation-free LightSB objective on minibatches.

        .. math::
            \hat L(\theta) = \frac1{n_0}\sum_i \log c_\theta(x_0^{(i)}) - \frac1{n_1}\sum_j \log v_\theta(x_1^{(j)}).

        Args:
            x0: samples of :math:`p_0`, shape ``(n0, D)``.
            x1: samples of :math:`p_1`, shape ``(n1, D)``.

        Returns:
            A scalar tensor (differentiable in the parameters).

        Raises:
            SciMLInputError: wrong shapes, dtype, device, or non-finite samples.

        Example:
            >>> sb = LightSB(2, 2, 1.0, dtype=torch.float64)
            >>> sb.loss(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(5, 2, dtype=torch.float64)).ndim
            0
        """
        for name, value in (("x0", x0), ("x1", x1)):
            self._check_points(name, value)
            if value.ndim != 2:
                raise SciMLInputError(name, f"expected shape (n, {self.dim}), got {tuple(value.shape)}")
            _check_finite(name, value)
        return self.log_normalizer(x0).mean() - self.log_potential(x1).mean()

    # ------------------------------------------------------------------ training

    def _as_sampler(self, name: str, source: Sampler | torch.Tensor, generator: torch.Generator | None) -> Sampler:
        if isinstance(source, torch.Tensor):
            data = self._check_points(name, source)
            if data.ndim != 2:
                raise SciMLInputError(name, f"expected shape (n, {self.dim}), got {tuple(data.shape)}")
            _check_finite(name, data)

            def draw(n: int) -> torch.Tensor:
                index = torch.randint(
                    0,
                    data.shape[0],
                    (n,),
                    generator=generator,
                    device=generator.device if generator is not None else None,
                )
                return data[index.to(data.device)]

            return draw
        if not callable(source):
            raise SciMLInputError(
                name, f"must be a tensor of samples or a callable n -> (n, D), got {type(source).__name__}"
            )

        def call(n: int) -> torch.Tensor:
            batch = source(n)
            self._check_points(name, batch)
            if batch.ndim != 2:
                raise SciMLInputError(name, f"sampler returned shape {tuple(batch.shape)}, expected (n, {self.dim})")
            return batch

        return call

    def fit(
        self,
        sampler0: Sampler | torch.Tensor,
        sampler1: Sampler | torch.Tensor,
        *,
        steps: int = 1000,
        batch_size: int = 128,
        lr: float = 1e-2,
        init_means: bool = True,
        progress: bool = False,
        generator: torch.Generator | None = None,
    ) -> Solution[torch.Tensor]:
        r"""Fit the potential by minibatch Adam on :meth:`loss` (a fixed budget of ``steps``).

        Args:
            sampler0: samples of :math:`p_0` as a tensor ``(n, D)`` (minibatches are drawn with replacement) or a
                callable ``n -> (n, D)``.
            sampler1: the same for :math:`p_1`.
            steps: number of Adam steps.
            batch_size: minibatch size for both marginals.
            lr: Adam learning rate (the paper uses 1e-3 at :math:`\varepsilon=0.1` and larger for larger
                :math:`\varepsilon`).
            init_means: set the means :math:`r_k` to :math:`K` target samples before training (the paper's
                initialisation); pass False to continue a previous fit.
            progress: show a tqdm progress bar.
            generator: random generator for the minibatch indices of tensor inputs.

        Returns:
            A :class:`~sciml_protocols.Solution` with ``value`` the last minibatch loss, ``history`` the loss of each
            step (shape ``(steps,)``), ``n_iter = steps``, ``residual`` the mean loss over the last tenth of the
            steps, ``converged`` True when every loss was finite (there is no stopping test; the budget is fixed),
            and ``stats['time_s']``.

        Raises:
            SciMLInputError: bad samples or samplers, non-positive ``steps``/``batch_size``/``lr``.

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> x0 = torch.randn(256, 1, generator=g, dtype=torch.float64)
            >>> sb = LightSB(1, 2, 1.0, dtype=torch.float64)
            >>> sol = sb.fit(x0, x0 + 3.0, steps=20, batch_size=64, generator=g)
            >>> sol.n_iter, sol.history.shape, sol.converged
            (20, torch.Size([20]), True)
        """
        check_int("steps", steps, minimum=1)
        check_int("batch_size", batch_size, minimum=1)
        _check_positive("lr", lr)
        draw0 = self._as_sampler("sampler0", sampler0, generator)
        draw1 = self._as_sampler("sampler1", sampler1, generator)
        if init_means:
            with torch.no_grad():
                self.r.copy_(draw1(self.n_potentials))
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        losses = torch.empty(steps, dtype=self.log_alpha.dtype)
        iterator: range | object = range(steps)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(range(steps), desc="LightSB")
        start = time.perf_counter()
        for step in iterator:  # pyright: ignore[reportGeneralTypeIssues]
            optimizer.zero_grad(set_to_none=True)
            value = self.loss(draw0(batch_size), draw1(batch_size))
            value.backward()
            optimizer.step()
            losses[step] = value.detach().cpu()
        elapsed = time.perf_counter() - start
        tail = losses[-max(1, steps // 10) :]
        return Solution(
            value=losses[-1].clone(),
            converged=bool(torch.isfinite(losses).all()),
            n_iter=steps,
            residual=float(tail.mean()),
            history=losses,
            stats={"time_s": elapsed, "lr": lr, "batch_size": batch_size},
        )

    # ------------------------------------------------------------------ sampling

    def sample(self, x: torch.Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Exact samples of the conditional plan :math:`y \sim \pi_\theta(\cdot\mid x)` (one step, no SDE).

        Args:
            x: conditioning points, shape ``(B, D)``.
            n_samples: samples per point.
            generator: random generator.

        Returns:
            Shape ``(n_samples, B, D)``.

        Raises:
            SciMLInputError: wrong shape, dtype or device; ``n_samples`` < 1.

        Example:
            >>> sb = LightSB(3, 2, 0.1, dtype=torch.float64)
            >>> sb.sample(torch.zeros(4, 3, dtype=torch.float64), 2).shape
            torch.Size([2, 4, 3])
        """
        x = self._check_points("x", x)
        if x.ndim != 2:
            raise SciMLInputError("x", f"expected shape (B, {self.dim}), got {tuple(x.shape)}")
        check_int("n_samples", n_samples, minimum=1)
        chunk = self.sampling_batch_size or x.shape[0]
        with torch.no_grad():
            parts = [self._sample_chunk(x[i : i + chunk], n_samples, generator) for i in range(0, x.shape[0], chunk)]
        return torch.cat(parts, dim=1)

    def _sample_chunk(self, x: torch.Tensor, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
        log_w, means, _ = self.conditional_mixture(x)
        batch = x.shape[0]
        component = torch.multinomial(log_w.exp(), n_samples, replacement=True, generator=generator).T  # (n, B)
        chosen = means[torch.arange(batch, device=x.device), component]  # (n, B, D)
        noise = torch.randn(n_samples, batch, self.dim, generator=generator, dtype=x.dtype, device=x.device)
        if self.is_diagonal:
            noise = noise * torch.exp(0.5 * self.log_s[component])
        else:
            noise = torch.einsum("nbij,nbj->nbi", self._chol()[component], noise)
        return chosen + math.sqrt(self.epsilon) * noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One conditional sample per point, shape ``(B, D)`` (see :meth:`sample`).

        Example:
            >>> LightSB(2, 2, 1.0)(torch.zeros(3, 2)).shape
            torch.Size([3, 2])
        """
        return self.sample(x, 1)[0]

    def drift(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        r"""Closed-form drift of the fitted Schrödinger bridge at time :math:`t \in [0, 1)`.

        With :math:`\tau = t/(\varepsilon(1-t))`, :math:`u = x/(\varepsilon(1-t))` and
        :math:`M_k = I + \tau\varepsilon S_k`, the posterior of :math:`X_1` given :math:`X_t = x` is the mixture of
        Gaussians with means :math:`\mu_k = M_k^{-1}(\varepsilon S_k u + r_k)` and log-weights (up to a constant)

        .. math::
            \ell_k = \log\alpha_k - \tfrac12\log|M_k| + \tfrac12 u^\top \mu_k + \tfrac12 u^\top M_k^{-1} r_k
                - \tfrac{\tau}{2} r_k^\top M_k^{-1} r_k,

        and :math:`g(x, t) = \varepsilon\nabla_x\log h(x,t) = (\sum_k \mathrm{softmax}(\ell)_k \mu_k - x)/(1-t)`.
        (The same as the paper's formula with :math:`A_k = \tau I + (\varepsilon S_k)^{-1}`, rearranged so that no
        inverse of :math:`S_k` is formed.) At :math:`t = 0` the weights and means are those of
        :meth:`conditional_mixture`.

        Args:
            x: states, shape ``(..., D)``.
            t: a time in ``[0, 1)``, or per-sample times of shape ``x.shape[:-1]``.

        Returns:
            Shape ``(..., D)``.

        Raises:
            SciMLInputError: bad ``x`` or ``t`` outside ``[0, 1)``.

        Example:
            >>> sb = LightSB(1, 1, 1.0, dtype=torch.float64)
            >>> with torch.no_grad():
            ...     _ = sb.r.zero_()
            >>> sb.drift(torch.tensor([2.0], dtype=torch.float64), 0.0).detach()  # S = 1: E[y|x] = x
            tensor([0.], dtype=torch.float64)
        """
        x = self._check_points("x", x)
        batch_shape = x.shape[:-1]
        if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("t", f"must be a float or a tensor of times, got {type(t).__name__}")
        if isinstance(t, torch.Tensor) and t.numel() != 1:
            if t.shape != batch_shape:
                raise SciMLInputError(
                    "t", f"per-sample times must have shape {tuple(batch_shape)}, got {tuple(t.shape)}"
                )
            if not bool(((t >= 0) & (t < 1)).all()):
                raise SciMLInputError("t", "every time must lie in [0, 1)")
            tt = t.to(dtype=x.dtype, device=x.device)
        else:
            t_value = float(t)
            if not 0.0 <= t_value < 1.0:
                raise SciMLInputError("t", f"must lie in [0, 1), got {t_value}")
            tt = torch.full(batch_shape, t_value, dtype=x.dtype, device=x.device)
        eps = self.epsilon
        one_minus = (1.0 - tt).unsqueeze(-1)  # (..., 1)
        tau = (tt / (eps * (1.0 - tt)))[..., None, None]  # (..., 1, 1)
        u = x / (eps * one_minus)
        uk = u.unsqueeze(-2).expand(*u.shape[:-1], self.n_potentials, self.dim)
        rhs = eps * self._apply_s(uk) + self.r  # (..., K, D)
        if self.is_diagonal:
            m_diag = 1.0 + tau * eps * self.log_s.exp()  # (..., K, D)
            means = rhs / m_diag
            q = self.r / m_diag
            half_logdet = 0.5 * m_diag.log().sum(-1)
        else:
            eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
            m_chol = torch.linalg.cholesky(eye + tau[..., None] * eps * self.covariance_factors())  # (..., K, D, D)
            means = torch.cholesky_solve(rhs.unsqueeze(-1), m_chol).squeeze(-1)
            q = torch.cholesky_solve(self.r.expand_as(rhs).unsqueeze(-1), m_chol).squeeze(-1)
            half_logdet = torch.diagonal(m_chol, dim1=-2, dim2=-1).log().sum(-1)
        logits = (
            self.log_alpha
            - half_logdet
            + 0.5 * (uk * means).sum(-1)
            + 0.5 * (uk * q).sum(-1)
            - 0.5 * tau[..., 0] * (self.r * q).sum(-1)
        )
        weights = torch.softmax(logits, dim=-1)
        posterior_mean = (weights.unsqueeze(-1) * means).sum(-2)
        return (posterior_mean - x) / one_minus

    def sample_bridge_marginal(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        t: float | torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Sample :math:`X_t` of the Brownian bridge (diffusion :math:`\varepsilon`) pinned at ``x0`` and ``x1``.

        The Schrödinger bridge is a mixture of such bridges over its endpoint coupling, so with ``x1`` drawn by
        :meth:`sample` this samples the bridge's time-:math:`t` marginal without simulating an SDE:

        .. math:: X_t = (1 - t)\,x_0 + t\,x_1 + \sqrt{\varepsilon\,t(1 - t)}\;\xi,\qquad \xi\sim N(0, I).

        Args:
            x0: start points, ``(..., D)``.
            x1: end points, same shape as ``x0``.
            t: a time in ``[0, 1]``, or per-sample times of shape ``x0.shape[:-1]``.
            generator: random generator.

        Returns:
            Shape ``(..., D)``.

        Raises:
            SciMLInputError: mismatched shapes, times outside ``[0, 1]``.

        Example:
            >>> sb = LightSB(2, 1, 0.1, dtype=torch.float64)
            >>> x0, x1 = torch.zeros(4, 2, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)
            >>> sb.sample_bridge_marginal(x0, x1, 1.0)  # the end point, exactly
            tensor([[1., 1.],
                    [1., 1.],
                    [1., 1.],
                    [1., 1.]], dtype=torch.float64)
        """
        x0 = self._check_points("x0", x0)
        x1 = self._check_points("x1", x1)
        if x0.shape != x1.shape:
            raise SciMLInputError("x1", f"must have the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
        if isinstance(t, torch.Tensor) and t.numel() != 1:
            if t.shape != x0.shape[:-1]:
                raise SciMLInputError(
                    "t", f"per-sample times must have shape {tuple(x0.shape[:-1])}, got {tuple(t.shape)}"
                )
            tt = t.to(dtype=x0.dtype, device=x0.device).unsqueeze(-1)
        else:
            tt = torch.tensor(float(t), dtype=x0.dtype, device=x0.device)
        if not bool(((tt >= 0) & (tt <= 1)).all()):
            raise SciMLInputError("t", "times must lie in [0, 1]")
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return (1.0 - tt) * x0 + tt * x1 + torch.sqrt(self.epsilon * tt * (1.0 - tt)) * noise

    def sample_trajectory(
        self, x0: torch.Tensor, n_steps: int = 100, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r"""Simulate the bridge :math:`dX_t = g_\theta(X_t,t)\,dt + \sqrt{\varepsilon}\,dW_t` by Euler-Maruyama.

        Uses the uniform grid :math:`t_i = i/n`,
        :math:`X_{i+1} = X_i + g_\theta(X_i, t_i)/n + \sqrt{\varepsilon/n}\,\xi_i`.

        Args:
            x0: starting points, shape ``(B, D)``.
            n_steps: number of steps :math:`n \ge 1`.
            generator: random generator.

        Returns:
            The path, shape ``(n_steps + 1, B, D)``; index 0 is ``x0``.

        Raises:
            SciMLInputError: bad ``x0`` or ``n_steps``.

        Example:
            >>> sb = LightSB(2, 2, 0.5, dtype=torch.float64)
            >>> sb.sample_trajectory(torch.zeros(3, 2, dtype=torch.float64), 10).shape
            torch.Size([11, 3, 2])
        """
        x0 = self._check_points("x0", x0)
        if x0.ndim != 2:
            raise SciMLInputError("x0", f"expected shape (B, {self.dim}), got {tuple(x0.shape)}")
        check_int("n_steps", n_steps, minimum=1)
        dt = 1.0 / n_steps
        path = [x0]
        x = x0
        with torch.no_grad():
            for i in range(n_steps):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = x + self.drift(x, i * dt) * dt + math.sqrt(self.epsilon * dt) * noise
                path.append(x)
        return torch.stack(path)


class GaussianBridge(NamedTuple):
    r"""The entropic OT plan between two Gaussians (see :func:`gaussian_bridge`).

    Attributes:
        transport_matrix: :math:`A = C^\top \Sigma_0^{-1}` (symmetric), shape ``(D, D)``.
        offset: :math:`b = m_1 - A m_0`, shape ``(D,)``; the conditional mean is :math:`A x + b`.
        conditional_covariance: :math:`\Sigma_1 - C^\top\Sigma_0^{-1}C = \varepsilon A`, shape ``(D, D)``.
        cross_covariance: :math:`C = \mathrm{Cov}(X_0, X_1)`, shape ``(D, D)``.
        joint_covariance: covariance of :math:`(X_0, X_1)`, shape ``(2D, 2D)``.
    """

    transport_matrix: torch.Tensor
    offset: torch.Tensor
    conditional_covariance: torch.Tensor
    cross_covariance: torch.Tensor
    joint_covariance: torch.Tensor


def _sym_sqrt(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)
    root = values.clamp_min(0.0).sqrt()
    sqrt = (vectors * root) @ vectors.T
    inv_sqrt = (vectors / root) @ vectors.T
    return sqrt, inv_sqrt


def gaussian_bridge(
    mean0: torch.Tensor, cov0: torch.Tensor, mean1: torch.Tensor, cov1: torch.Tensor, epsilon: float
) -> GaussianBridge:
    r"""Closed-form entropic OT plan (static Schrödinger bridge) between two Gaussians.

    The marginals are :math:`\mathcal N(m_0,\Sigma_0)` and :math:`\mathcal N(m_1,\Sigma_1)`.

    For the cost :math:`\tfrac12\|x-y\|^2` and weight :math:`\varepsilon` (sciml-ot's convention), the optimal plan
    is Gaussian with cross-covariance

    .. math::
        C = \tfrac12\big(\Sigma_0^{1/2} D\, \Sigma_0^{-1/2} - \varepsilon I\big), \qquad
        D = \big(4\,\Sigma_0^{1/2}\Sigma_1\Sigma_0^{1/2} + \varepsilon^2 I\big)^{1/2},

    so :math:`X_1 \mid X_0 = x \sim \mathcal N(A x + b, \varepsilon A)` with :math:`A = C^\top\Sigma_0^{-1}`,
    :math:`b = m_1 - A m_0`.
    (In one dimension :math:`C = (\sqrt{\varepsilon^2 + 4\sigma_0^2\sigma_1^2}-\varepsilon)/2`.)
    This is the exact LightSB solution with :math:`K = 1`: :math:`S = A`, :math:`r = b`.

    References:
        H. Janati, B. Muzellec, G. Peyré, M. Cuturi, "Entropic optimal transport between unbalanced Gaussian
        measures has a closed form", NeurIPS 2020; A. Mallasto, A. Gerolin, H. Q. Minh, "Entropy-regularized
        2-Wasserstein distance between Gaussian measures", Information Geometry 2022.

    Args:
        mean0: shape ``(D,)``.
        cov0: symmetric positive definite, shape ``(D, D)``.
        mean1: shape ``(D,)``.
        cov1: symmetric positive definite, shape ``(D, D)``.
        epsilon: entropic weight, > 0.

    Returns:
        A :class:`GaussianBridge`.

    Raises:
        SciMLInputError: wrong shapes, non-finite values, non-positive-definite covariances, ``epsilon <= 0``.

    Example:
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> zero = torch.zeros(1, dtype=torch.float64)
        >>> plan = gaussian_bridge(zero, one, zero, 4 * one, 1.0)
        >>> round(float(plan.cross_covariance), 6)  # (sqrt(1 + 16) - 1) / 2
        1.561553
    """
    eps = _check_epsilon(epsilon)
    tensors = {"mean0": mean0, "cov0": cov0, "mean1": mean1, "cov1": cov1}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise SciMLInputError(name, f"must be floating point, got {value.dtype}")
        _check_nonempty(name, value)
        _check_finite(name, value)
    dim = mean0.shape[-1] if mean0.ndim == 1 else -1
    if mean0.ndim != 1:
        raise SciMLInputError("mean0", f"expected shape (D,), got {tuple(mean0.shape)}")
    if tuple(mean1.shape) != (dim,):
        raise SciMLInputError("mean1", f"expected shape ({dim},), got {tuple(mean1.shape)}")
    for name, cov in (("cov0", cov0), ("cov1", cov1)):
        if tuple(cov.shape) != (dim, dim):
            raise SciMLInputError(name, f"expected shape ({dim}, {dim}), got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.T, rtol=1e-6, atol=1e-8 * float(cov.abs().max())):
            raise SciMLInputError(name, "must be symmetric")
        if float(torch.linalg.eigvalsh(cov).min()) <= 0.0:
            raise SciMLInputError(name, "must be positive definite")
    cov0 = 0.5 * (cov0 + cov0.T)
    cov1 = 0.5 * (cov1 + cov1.T)
    eye = torch.eye(dim, dtype=cov0.dtype, device=cov0.device)
    root0, inv_root0 = _sym_sqrt(cov0)
    inner = 4.0 * root0 @ cov1 @ root0
    d_matrix, _ = _sym_sqrt(0.5 * (inner + inner.T) + eps**2 * eye)
    cross = 0.5 * (root0 @ d_matrix @ inv_root0 - eps * eye)
    # A = C^T Sigma0^{-1} = (Sigma0^{-1/2} D Sigma0^{-1/2} - eps Sigma0^{-1}) / 2, symmetric by construction.
    inv0 = inv_root0 @ inv_root0
    transport = 0.5 * (inv_root0 @ d_matrix @ inv_root0 - eps * inv0)
    transport = 0.5 * (transport + transport.T)
    offset = mean1 - transport @ mean0
    conditional = eps * transport
    joint = torch.cat([torch.cat([cov0, cross], dim=1), torch.cat([cross.T, cov1], dim=1)], dim=0)
    return GaussianBridge(transport, offset, conditional, cross, joint)
