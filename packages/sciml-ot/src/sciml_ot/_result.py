r"""Results of the entropic optimal transport solvers: :class:`SinkhornResult` and the lazy :class:`TransportPlan`.

Convention (shared by every solver of :mod:`sciml_ot`): the entropic problem is

.. math::

    \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle P, C\rangle
    + \varepsilon\,\mathrm{KL}(P \,|\, a\otimes b),

with dual potentials :math:`f, g` such that :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`. The plan is
never stored: it is rebuilt tile by tile from the potentials and the cost object.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from sciml_protocols import FixedPointCondition, SciMLInputError, Solution

if TYPE_CHECKING:
    from ._costs import Cost

__all__ = ["SinkhornResult", "TransportPlan"]


class TransportPlan:
    r"""The entropic transport plan :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`, never stored.

    ``plan @ v`` computes :math:`P v` and ``plan.T @ u`` computes :math:`P^\top u` tile by tile (memory linear in
    :math:`n + m` for point-cloud costs); ``plan()`` materializes the matrix (refused above the cost's size limit).

    Args:
        cost: the cost object (:class:`~sciml_ot.DenseCost` or :class:`~sciml_ot.PointCloudCost`).
        f: row potentials, shape ``(n,)`` or ``(B, n)``.
        g: column potentials, shape ``(m,)`` or ``(B, m)``.
        eps: entropic regularization :math:`\varepsilon > 0`.
        log_a: log of the row weights, shape of ``f``.
        log_b: log of the column weights, shape of ``g``.
        transpose: whether this object represents :math:`P^\top`.

    Example:
        >>> from sciml_ot._costs import DenseCost
        >>> cost = DenseCost(torch.zeros(2, 3, dtype=torch.float64))
        >>> la, lb = torch.full((2,), 0.5).log().double(), torch.full((3,), 1 / 3).log().double()
        >>> plan = TransportPlan(cost, torch.zeros(2).double(), torch.zeros(3).double(), 1.0, la, lb)
        >>> plan.shape
        (2, 3)
        >>> plan @ torch.ones(3, dtype=torch.float64)
        tensor([0.5000, 0.5000], dtype=torch.float64)
        >>> plan.T @ torch.ones(2, dtype=torch.float64)
        tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
    """

    def __init__(
        self,
        cost: Cost,
        f: torch.Tensor,
        g: torch.Tensor,
        eps: float,
        log_a: torch.Tensor,
        log_b: torch.Tensor,
        *,
        transpose: bool = False,
    ) -> None:
        self.cost = cost
        self.f = f
        self.g = g
        self.eps = float(eps)
        self.log_a = log_a
        self.log_b = log_b
        self.transpose = transpose

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)`` (``(m, n)`` for the transpose); batch dimensions are not included."""
        n, m = self.cost.shape
        return (m, n) if self.transpose else (n, m)

    @property
    def T(self) -> TransportPlan:
        r"""The transposed plan :math:`P^\top`."""
        return TransportPlan(self.cost, self.f, self.g, self.eps, self.log_a, self.log_b, transpose=not self.transpose)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        """``P @ v`` for ``v`` of shape ``(m,)``, ``(m, k)``, ``(B, m)`` or ``(B, m, k)``."""
        return self.cost.matvec_plan(self.f, self.g, self.eps, self.log_a, self.log_b, v, transpose=self.transpose)

    def __call__(self) -> torch.Tensor:
        """Materialize the plan, shape ``(n, m)`` or ``(B, n, m)`` (transposed for ``plan.T``)."""
        p = self.cost.plan_matrix(self.f, self.g, self.eps, self.log_a, self.log_b)
        return p.transpose(-1, -2) if self.transpose else p

    def __repr__(self) -> str:
        return f"TransportPlan(shape={self.shape}, eps={self.eps:g}, transpose={self.transpose})"


@dataclasses.dataclass(frozen=True)
class SinkhornResult:
    r"""What :func:`~sciml_ot.sinkhorn` found.

    Attributes:
        f: row potentials, shape ``(n,)`` or ``(B, n)`` (detached). For balanced problems they are normalized so
            that :math:`\langle a, f\rangle = \langle b, g\rangle` (potentials are defined up to
            :math:`(f + c, g - c)`).
        g: column potentials, shape ``(m,)`` or ``(B, m)`` (detached).
        cost: the transport cost :math:`\langle P, C\rangle`, a scalar tensor or shape ``(B,)``. Differentiable
            with the plan held fixed (its gradient w.r.t. ``C`` is ``P``; not the gradient of the cost through the
            plan).
        objective: the entropic value :math:`\mathrm{OT}_\varepsilon(a, b)` (the dual objective at the optimal
            potentials), scalar or ``(B,)``; differentiable w.r.t. ``a``, ``b`` and the cost's tensors, with the
            exact gradient at convergence (envelope theorem).
        marginal_error: the final stopping measure, :math:`\|P\mathbf 1 - a\|_1` for balanced problems (a float,
            or a ``(B,)`` tensor for batches).
        n_iter: Sinkhorn iterations performed (one iteration updates both potentials).
        converged: whether ``marginal_error <= tol`` held for every problem of the batch.
        history: the marginal error at every check, shape ``(n_checks,)`` or ``(n_checks, B)``.
        eps: the entropic regularization :math:`\varepsilon`.
        a: row weights as passed, shape ``(n,)`` or ``(B, n)``.
        b: column weights as passed, shape ``(m,)`` or ``(B, m)``.
        cost_object: the cost object the problem was solved with.
        reg_marginals: the KL marginal relaxation :math:`\rho` (None for balanced problems).

    Example:
        >>> import sciml_ot
        >>> res = sciml_ot.sinkhorn(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]),
        ...                         torch.tensor([[0.0, 1.0], [1.0, 0.0]]), eps=0.1)
        >>> res.converged, round(float(res.cost), 4)
        (True, 0.0)
        >>> (res.plan @ torch.ones(2)).round(decimals=4)
        tensor([0.5000, 0.5000])
    """

    f: torch.Tensor
    g: torch.Tensor
    cost: torch.Tensor
    objective: torch.Tensor
    marginal_error: float | torch.Tensor
    n_iter: int
    converged: bool
    history: torch.Tensor
    eps: float
    a: torch.Tensor
    b: torch.Tensor
    cost_object: Cost = dataclasses.field(repr=False)
    reg_marginals: float | None = None

    @property
    def log_a(self) -> torch.Tensor:
        """``log a`` (detached)."""
        return self.a.detach().log()

    @property
    def log_b(self) -> torch.Tensor:
        """``log b`` (detached)."""
        return self.b.detach().log()

    @property
    def plan(self) -> TransportPlan:
        """The lazy transport plan built from the potentials (``plan @ v``, ``plan.T @ u``, ``plan()``)."""
        return TransportPlan(self.cost_object, self.f, self.g, self.eps, self.log_a, self.log_b)

    @property
    def solution(self) -> Solution[tuple[torch.Tensor, torch.Tensor]]:
        """A :class:`sciml_protocols.Solution` view: ``value=(f, g)``, ``residual=marginal_error``."""
        stats: dict[str, Any] = {
            "cost": self.cost.detach(),
            "objective": self.objective.detach(),
            "eps": self.eps,
            "reg_marginals": self.reg_marginals,
        }
        return Solution(
            value=(self.f, self.g),
            converged=self.converged,
            n_iter=self.n_iter,
            residual=self.marginal_error,
            history=self.history,
            stats=stats,
        )

    def condition_arguments(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(z, theta)`` for :meth:`optimality_condition`: ``z = cat([f, g], -1)``, ``theta = (a, b, *params)``.

        ``params`` are the cost's tensors: ``(C,)`` for a dense cost, ``(x, y)`` for a point cloud.
        """
        z = torch.cat([self.f, self.g], dim=-1)
        return z, (self.a, self.b, *self.cost_object.params)

    def optimality_condition(self) -> FixedPointCondition:
        r"""The fixed-point condition that defines the potentials, for implicit differentiation.

        With :math:`z = (f, g)` and :math:`\theta = (a, b, \text{cost tensors})` (see :meth:`condition_arguments`),
        the map is

        .. math::

            T(z, \theta) = \big(\tau\,\mathrm{smin}_r(g) + \delta,\; \tau\,\mathrm{smin}_c(f) - \delta\big),

        where :math:`\mathrm{smin}_r(g)_i = -\varepsilon \log\sum_j b_j e^{(g_j - C_{ij})/\varepsilon}`,
        :math:`\mathrm{smin}_c` likewise over rows, :math:`\tau = \rho/(\rho+\varepsilon)` (1 when balanced), and, for
        balanced problems only, :math:`\delta = (\langle b, g'\rangle - \langle a, f'\rangle)/(\sum a + \sum b)` fixes
        the gauge :math:`(f + c, g - c)` so that :math:`I - \partial T/\partial z` is invertible. The returned
        potentials satisfy it (up to the solver tolerance). The map is differentiable with torch.autograd in ``z``
        and ``theta``; it does not depend on :mod:`sciml_ot` types, so sciml-bilevel can use it directly.

        Returns:
            A :class:`sciml_protocols.FixedPointCondition`; call ``cond.residual(z, *theta)``.

        Example:
            >>> import sciml_ot
            >>> res = sciml_ot.sinkhorn(torch.tensor([0.5, 0.5], dtype=torch.float64),
            ...                         torch.tensor([0.5, 0.5], dtype=torch.float64),
            ...                         torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64), eps=0.5)
            >>> z, theta = res.condition_arguments()
            >>> res.optimality_condition().is_satisfied(z, *theta, tol=1e-8)
            True
        """
        cost0 = self.cost_object
        eps = self.eps
        rho = self.reg_marginals
        tau = 1.0 if rho is None else rho / (rho + eps)
        n = cost0.shape[0]

        def fixed_point_map(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            cost = cost0.with_params(*params)
            f, g = z[..., :n], z[..., n:]
            f_new = tau * cost.softmin_rows(g, eps, b.log())
            g_new = tau * cost.softmin_cols(f, eps, a.log())
            if rho is None:
                mass = a.sum(-1, keepdim=True) + b.sum(-1, keepdim=True)
                delta = ((b * g_new).sum(-1, keepdim=True) - (a * f_new).sum(-1, keepdim=True)) / mass
                f_new, g_new = f_new + delta, g_new - delta
            if f_new.dim() < z.dim():
                f_new, g_new = f_new.expand(*z.shape[:-1], -1), g_new.expand(*z.shape[:-1], -1)
            return torch.cat([f_new, g_new], dim=-1)

        return FixedPointCondition(fixed_point_map)

    def check(self, action: str = "warn") -> SinkhornResult:
        """Warn (or raise with ``action="raise"``) when the solver did not converge; return ``self``."""
        if action not in ("warn", "raise"):
            raise SciMLInputError("action", f"must be 'warn' or 'raise', got {action!r}")
        self.solution.check("raise" if action == "raise" else "warn")
        return self
