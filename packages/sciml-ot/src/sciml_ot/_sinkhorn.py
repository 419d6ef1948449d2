r"""Log-domain Sinkhorn for balanced and unbalanced entropic optimal transport, and the Sinkhorn divergence.

Problem (the convention shared by :mod:`sciml_ot`):

.. math::

    \mathrm{OT}_\varepsilon(a, b) = \min_{P \ge 0} \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \,|\, a\otimes b)
    + \rho\,\mathrm{KL}(P\mathbf 1 \,|\, a) + \rho\,\mathrm{KL}(P^\top\mathbf 1 \,|\, b),

where the balanced problem (``reg_marginals=None``, :math:`\rho = \infty`) constrains the marginals to ``a`` and
``b`` instead. The dual potentials give :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)` and the dual
objective is

.. math::

    D(f, g) = \langle a, \varphi(f)\rangle + \langle b, \varphi(g)\rangle
    - \varepsilon\big(\langle a\otimes b, e^{(f\oplus g - C)/\varepsilon}\rangle - \textstyle\sum a \sum b\big),

with :math:`\varphi(f) = f` (balanced) or :math:`\varphi(f) = \rho(1 - e^{-f/\rho})` (unbalanced). POT's
``ot.sinkhorn`` regularizes with :math:`-\varepsilon H(P)` instead of the KL to :math:`a\otimes b`: the plan and
:math:`\langle P, C\rangle` are the same, and POT's log-scalings relate by
:math:`\varepsilon \log u = f + \varepsilon\log a + c`, :math:`\varepsilon\log v = g + \varepsilon\log b - c`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from sciml_protocols import SciMLInputError, check_finite, check_tensor

from ._costs import Cost, DenseCost, PointCloudCost, _check_eps  # pyright: ignore[reportPrivateUsage]
from ._result import SinkhornResult

__all__ = ["sinkhorn", "sinkhorn_divergence"]


def _as_cost(cost: object) -> Cost:
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, torch.Tensor):
        return DenseCost(cost)
    raise SciMLInputError("cost", f"must be a tensor or a cost object (DenseCost, PointCloudCost), got {type(cost)}")


def _check_weights(name: str, w: object, size: int, cost: Cost) -> torch.Tensor:
    if w is None:
        return torch.full((size,), 1.0 / size, dtype=cost.dtype, device=cost.device)
    w = check_tensor(name, w)
    if w.dim() not in (1, 2) or w.shape[-1] != size:
        raise SciMLInputError(name, f"must have shape ({size},) or (B, {size}) to match the cost, got {tuple(w.shape)}")
    if w.dtype != cost.dtype:
        raise SciMLInputError(name, f"must have the cost's dtype {cost.dtype}, got {w.dtype}")
    if w.device != cost.device:
        raise SciMLInputError(name, f"must be on the cost's device {cost.device}, got {w.device}")
    check_finite(name, w)
    if bool((w < 0).any()):
        raise SciMLInputError(name, "must be non-negative")
    if bool((w.sum(-1) <= 0).any()):
        raise SciMLInputError(name, "must have a positive total mass")
    return w


def _safe_log(w: torch.Tensor) -> torch.Tensor:
    """``log w`` with ``-inf`` at zeros and a finite gradient (zero) there."""
    tiny = torch.finfo(w.dtype).tiny
    return torch.where(w > 0, w.clamp_min(tiny).log(), torch.full_like(w, -math.inf))


def _lift(t: torch.Tensor, batch: int) -> torch.Tensor:
    t = t.unsqueeze(0) if t.dim() == 1 else t
    return t.expand(batch, -1) if t.shape[0] != batch else t


def sinkhorn(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    cost: torch.Tensor | Cost,
    *,
    eps: float,
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    eps_scaling: float | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    reg_marginals: float | None = None,
    progress: bool = False,
) -> SinkhornResult:
    r"""Entropic optimal transport by log-domain Sinkhorn iterations.

    Alternating updates, with :math:`\tau = \rho/(\rho + \varepsilon)` (:math:`\tau = 1` when balanced):

    .. math::

        g_j \leftarrow -\tau\varepsilon\log\sum_i a_i e^{(f_i - C_{ij})/\varepsilon},\qquad
        f_i \leftarrow -\tau\varepsilon\log\sum_j b_j e^{(g_j - C_{ij})/\varepsilon},

    computed with log-sum-exp (the kernel :math:`e^{-C/\varepsilon}` is never formed, so nothing underflows for
    small :math:`\varepsilon`). The stopping measure, checked every ``check_every`` iterations at no extra cost, is
    :math:`\|P\mathbf 1 - a\|_1` (balanced; the column marginal is exact after the ``g`` update) or
    :math:`\|P\mathbf 1 - a e^{-f/\rho}\|_1` (unbalanced, the first-order condition). Batches run together until
    every problem meets ``tol``.

    Gradients (envelope theorem): ``result.objective`` recomputes the dual objective :math:`D(f^*, g^*)` at the
    detached optimal potentials with one differentiable soft-min pass (``f`` rebuilt from ``g^*``), so its gradient
    w.r.t. ``a``, ``b`` and the cost's tensors (``C``, or ``x`` and ``y``) is the exact gradient of
    :math:`\mathrm{OT}_\varepsilon` at convergence: :math:`\partial/\partial C = P`,
    :math:`\partial/\partial a = f`, :math:`\partial/\partial b = g` (balanced, up to the constant that
    vanishes on mass-preserving perturbations). No iteration is differentiated, so memory does not grow with the
    iteration count. ``result.cost`` :math:`= \langle P, C\rangle` is differentiable with the plan held fixed.

    Args:
        a: row weights, ``(n,)`` or ``(B, n)``, non-negative; None for uniform.
        b: column weights, ``(m,)`` or ``(B, m)``; None for uniform. Balanced problems need equal total masses.
        cost: a cost matrix ``(n, m)`` / ``(B, n, m)`` (wrapped as :class:`~sciml_ot.DenseCost`) or a cost object
            such as :class:`~sciml_ot.PointCloudCost`.
        eps: entropic regularization :math:`\varepsilon > 0` (in cost units).
        tol: tolerance on the marginal error (L1); default 1e-9 in float64, 1e-6 in lower precisions.
        max_iter: iteration cap (one iteration updates ``g`` then ``f``); epsilon-scaling levels count.
        check_every: iterations between two convergence checks.
        eps_scaling: None, or a factor in (0, 1): anneal :math:`\varepsilon_k = \max(\varepsilon, s\,q^k)` from the
            cost scale :math:`s` down to ``eps`` with one iteration per level before the converged loop at ``eps``.
        init: warm start ``(f, g)``, shapes ``(n,)``/``(B, n)`` and ``(m,)``/``(B, m)`` (only ``f`` is used by the
            first update, ``g`` is kept for API symmetry).
        reg_marginals: None (balanced), or :math:`\rho > 0`: KL-relaxed marginals (unbalanced transport).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`~sciml_ot.SinkhornResult` (potentials, cost, objective, marginal error, ``converged``, history,
        lazy ``plan``, ``solution`` view and ``optimality_condition()``).

    Raises:
        SciMLInputError: negative or non-finite weights, unequal masses (balanced), mismatched sizes, dtypes or
            devices, ``eps <= 0``, non-finite costs, bad ``tol``/``max_iter``/``check_every``/``eps_scaling``/
            ``reg_marginals``/``init``.

    Example:
        >>> a = torch.tensor([0.5, 0.5], dtype=torch.float64)
        >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> res = sinkhorn(a, a, C, eps=0.1)
        >>> res.converged, round(float(res.cost), 6)
        (True, 4.5e-05)
        >>> res.plan().round(decimals=4)
        tensor([[0.4999, 0.0001],
                [0.0001, 0.4999]], dtype=torch.float64)

    References:
        Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
        Peyré and Cuturi, "Computational Optimal Transport", Foundations and Trends in ML 2019, arXiv:1803.00567.
        Chizat, Peyré, Schmitzer and Vialard, "Scaling algorithms for unbalanced optimal transport problems",
        Math. Comp. 2018, arXiv:1607.05816.
    """
    cost_obj = _as_cost(cost)
    eps = _check_eps(eps)
    n, m = cost_obj.shape
    a = _check_weights("a", a, n, cost_obj)
    b = _check_weights("b", b, m, cost_obj)
    sizes = {t.shape[0] for t in (a, b) if t.dim() == 2} | ({cost_obj.batch_size} if cost_obj.batched else set())
    if len(sizes - {1}) > 1:
        raise SciMLInputError("b", f"batch sizes of a, b and the cost disagree: {sorted(sizes)}")
    batch = max(sizes | {1})
    batched = bool(sizes)
    low_precision = cost_obj.dtype != torch.float64
    if tol is None:
        tol = 1e-6 if low_precision else 1e-9
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("tol", f"must be a float > 0, got {tol!r}")
    for name, val in (("max_iter", max_iter), ("check_every", check_every)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(name, f"must be a positive int, got {val!r}")
    if eps_scaling is not None and (
        isinstance(eps_scaling, bool) or not isinstance(eps_scaling, (int, float)) or not 0 < eps_scaling < 1  # pyright: ignore[reportUnnecessaryIsInstance]
    ):
        raise SciMLInputError("eps_scaling", f"must be None or a factor in (0, 1), got {eps_scaling!r}")
    rho: float | None = None
    if reg_marginals is not None:
        if isinstance(reg_marginals, bool) or not isinstance(reg_marginals, (int, float)) or not reg_marginals > 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("reg_marginals", f"must be None or a float > 0, got {reg_marginals!r}")
        rho = None if math.isinf(reg_marginals) else float(reg_marginals)

    a_d, b_d = a.detach(), b.detach()
    mass_a, mass_b = a_d.sum(-1), b_d.sum(-1)
    if rho is None:
        rel = 100 * torch.finfo(cost_obj.dtype).eps * max(n, m, 10) ** 0.5
        if bool(((mass_a - mass_b).abs() > rel * torch.maximum(mass_a, mass_b)).any()):
            raise SciMLInputError(
                "b", f"total mass {mass_b.tolist()} differs from that of a {mass_a.tolist()} (balanced problem)"
            )
    la = _lift(_safe_log(a_d), batch)
    lb = _lift(_safe_log(b_d), batch)
    aw = _lift(a_d, batch)
    tau = 1.0 if rho is None else rho / (rho + eps)

    if init is not None:
        if not isinstance(init, tuple) or len(init) != 2:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("init", "must be a pair (f, g) of tensors")
        f0 = check_tensor("init[0]", init[0]).detach()
        g0 = check_tensor("init[1]", init[1]).detach()
        for name, t, size in (("init[0]", f0, n), ("init[1]", g0, m)):
            if t.dim() not in (1, 2) or t.shape[-1] != size or (t.dim() == 2 and t.shape[0] not in (1, batch)):
                raise SciMLInputError(name, f"must have shape ({size},) or ({batch}, {size}), got {tuple(t.shape)}")
            if t.dtype != cost_obj.dtype or t.device != cost_obj.device:
                raise SciMLInputError(name, "must have the cost's dtype and device")
            check_finite(name, t)
        f = _lift(f0, batch).clone()
    else:
        f = torch.zeros(batch, n, dtype=cost_obj.dtype, device=cost_obj.device)

    levels: list[float] = []
    if eps_scaling is not None:
        level = cost_obj.scale()
        while level > eps and len(levels) < max_iter - 1:
            levels.append(level)
            level *= eps_scaling

    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="sinkhorn")

    history: list[torch.Tensor] = []
    err = torch.full((batch,), math.inf, dtype=cost_obj.dtype, device=cost_obj.device)
    converged = False
    n_iter = 0
    with torch.no_grad():
        c0 = cost_obj.with_params(*(p.detach() for p in cost_obj.params))
        g = tau * c0.softmin_cols(f, eps, la)
        for level in levels:
            tau_k = 1.0 if rho is None else rho / (rho + level)
            f = tau_k * c0.softmin_rows(g, level, lb)
            g = tau_k * c0.softmin_cols(f, level, la)
            n_iter += 1
            if bar is not None:
                bar.update(1)
        while n_iter < max_iter:
            n_iter += 1
            s = c0.softmin_rows(g, eps, lb)
            if n_iter % check_every == 0 or n_iter == max_iter:
                target = aw if rho is None else aw * torch.exp(-f / rho)
                err = (aw * torch.exp((f - s) / eps) - target).abs().sum(-1)
                history.append(err)
                if bar is not None:
                    bar.set_postfix(err=float(err.max()))
                if bool((err <= tol).all()):
                    converged = True
                    n_iter -= 1  # the state (f, g) that met tol is the previous iteration's output
                    break
            f = tau * s
            g = tau * c0.softmin_cols(f, eps, la)
            if bar is not None:
                bar.update(1)
        if not converged:
            s = c0.softmin_rows(g, eps, lb)
            target = aw if rho is None else aw * torch.exp(-f / rho)
            err = (aw * torch.exp((f - s) / eps) - target).abs().sum(-1)
            converged = bool((err <= tol).all())
        if rho is None:  # gauge: <a, f> = <b, g>
            bw = _lift(b_d, batch)
            delta = ((bw * g).sum(-1, keepdim=True) - (aw * f).sum(-1, keepdim=True)) / (
                aw.sum(-1, keepdim=True) + bw.sum(-1, keepdim=True)
            )
            f, g = f + delta, g - delta
    if bar is not None:
        bar.close()

    # Differentiable objective at the detached optimum (envelope theorem): one soft-min pass through the cost.
    a_l, b_l = _lift(a, batch), _lift(b, batch)
    s = _lift(cost_obj.softmin_rows(g, eps, _lift(_safe_log(b), batch)), batch)
    mass_plan = (a_l * torch.exp((f - s) / eps)).sum(-1)
    if rho is None:
        lin = (a_l * f).sum(-1) + (b_l * g).sum(-1)
    else:
        lin = rho * (a_l * (1 - torch.exp(-f / rho))).sum(-1) + rho * (b_l * (1 - torch.exp(-g / rho))).sum(-1)
    objective = lin - eps * (mass_plan - a_l.sum(-1) * b_l.sum(-1))
    transport = cost_obj.inner(f, g, eps, la, lb).reshape(-1).expand(batch)

    if not batched:
        f, g = f.squeeze(0), g.squeeze(0)
        objective, transport = objective.squeeze(0), transport.squeeze(0)
        hist = torch.stack([h.squeeze(0) for h in history]) if history else err.new_zeros(0)
        marginal_error: float | torch.Tensor = float(err.squeeze(0))
    else:
        hist = torch.stack(history) if history else err.new_zeros(0, batch)
        marginal_error = err
    return SinkhornResult(
        f=f,
        g=g,
        cost=transport,
        objective=objective,
        marginal_error=marginal_error,
        n_iter=n_iter,
        converged=converged,
        history=hist,
        eps=eps,
        a=a,
        b=b,
        cost_object=cost_obj,
        reg_marginals=rho,
    )


def sinkhorn_divergence(
    a: torch.Tensor | None,
    x: torch.Tensor,
    b: torch.Tensor | None,
    y: torch.Tensor,
    *,
    eps: float,
    cost: Any = "sqeuclidean",
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    eps_scaling: float | None = None,
    tile: int = 1024,
    backend: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    r"""Debiased Sinkhorn divergence between weighted point clouds.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta) - \tfrac12 \mathrm{OT}_\varepsilon(\alpha,
        \alpha) - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`\mathrm{OT}_\varepsilon` the entropic value relative to :math:`a\otimes b` (the ``objective`` of
    :func:`sinkhorn`). :math:`S_\varepsilon \ge 0`, it vanishes for identical measures, and it is differentiable
    w.r.t. the weights and the points (envelope gradients of the three problems).

    Args:
        a: weights of ``x``, ``(n,)`` or ``(B, n)``; None for uniform.
        x: points ``(n, d)`` or ``(B, n, d)``.
        b: weights of ``y``, ``(m,)`` or ``(B, m)``; None for uniform.
        y: points ``(m, d)`` or ``(B, m, d)``.
        eps: entropic regularization :math:`\varepsilon > 0`.
        cost: any cost accepted by :class:`~sciml_ot.PointCloudCost`.
        tol: marginal tolerance of each of the three problems (see :func:`sinkhorn`).
        max_iter: iteration cap of each problem.
        check_every: iterations between convergence checks.
        eps_scaling: optional epsilon-scaling factor (see :func:`sinkhorn`).
        tile: tile size of the point-cloud cost.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the point-cloud soft-min.
        progress: show progress bars.

    Returns:
        :math:`S_\varepsilon`, a scalar tensor or ``(B,)``.

    Raises:
        SciMLInputError: as :func:`sinkhorn` and :class:`~sciml_ot.PointCloudCost`.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        >>> float(sinkhorn_divergence(None, x, None, x, eps=0.1)) == 0.0
        True
        >>> float(sinkhorn_divergence(None, x, None, x + 1.0, eps=0.1)) > 0
        True

    Reference:
        Feydy, Séjourné, Vialard, Amari, Trouvé and Peyré, "Interpolating between Optimal Transport and MMD using
        Sinkhorn Divergences", AISTATS 2019, arXiv:1810.08278.
    """
    kw: dict[str, Any] = {
        "eps": eps,
        "tol": tol,
        "max_iter": max_iter,
        "check_every": check_every,
        "eps_scaling": eps_scaling,
        "progress": progress,
    }

    def ot(wa: torch.Tensor | None, p: torch.Tensor, wb: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
        return sinkhorn(wa, wb, PointCloudCost(p, q, cost, tile=tile, backend=backend), **kw).objective

    return ot(a, x, b, y) - 0.5 * ot(a, x, a, x) - 0.5 * ot(b, y, b, y)
