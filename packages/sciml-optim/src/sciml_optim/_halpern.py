r"""Halpern iteration and variance-reduced Halpern iteration for (finite-sum) monotone inclusions.

The problem is to find :math:`u` with :math:`0 \in F(u) + G(u)`, or a fixed point :math:`u = T(u)` of a nonexpansive
map. Halpern's iteration anchors every step to the starting point,

.. math::

    u_{k+1} = \lambda_k u_0 + (1 - \lambda_k)\, T(u_k), \qquad \lambda_k = \frac{1}{k + 2},

and for nonexpansive :math:`T` its *last iterate* satisfies the tight bound
:math:`\|u_k - T(u_k)\| \le 2\|u_0 - u^\star\| / (k + 1)` (Lieder 2021; Diakonikolas 2020), a computable certificate.
With :math:`F` :math:`1/L`-cocoercive and :math:`G` maximal monotone, :math:`T = J_{\eta G}(I - \eta F)` is
nonexpansive for :math:`\eta \le 2/L`, and the fixed-point residual divided by :math:`\eta` is the
forward-backward residual, :math:`\|F(u)\|` when :math:`G = 0`.

For finite sums :math:`F = \frac1n\sum_i F_i`, :func:`vr_halpern` replaces :math:`F(u_k)` by a recursive
(PAGE / loopless-SARAH type) estimator, so that an iteration costs :math:`O(\sqrt n)` component evaluations on
average instead of :math:`n`, for an oracle complexity :math:`\widetilde O(n + \sqrt n L \|u_0 - u^\star\| /
\varepsilon)` instead of :math:`O(n L \|u_0 - u^\star\|/\varepsilon)`.

References:
    - B. Halpern, "Fixed points of nonexpanding maps", Bull. AMS 73, 1967.
    - F. Lieder, "On the convergence rate of the Halpern-iteration", Optimization Letters 15, 2021.
    - J. Diakonikolas, "Halpern Iteration for Near-Optimal and Parameter-Free Monotone Inclusion and Strong
      Solutions to Variational Inequalities", COLT 2020.
    - X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum Monotone
      Inclusions", ICLR 2024, arXiv:2310.02987.
    - Z. Li, H. Bao, X. Zhang, P. Richtárik, "PAGE: A Simple and Optimal Probabilistic Gradient Estimator for
      Nonconvex Optimization", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from sciml_protocols import SciMLInputError, Solution, check_dtype, check_finite, check_nonempty, check_tensor

__all__ = ["halpern", "vr_halpern", "vr_halpern_monotone"]

Map = Callable[[torch.Tensor], torch.Tensor]
Resolvent = Callable[[torch.Tensor, float], torch.Tensor]
ComponentMean = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class FiniteSumOperator(Protocol):
    r"""A finite sum :math:`F = \frac1n\sum_i F_i`: ``n`` components and their batch mean ``components(u, idx)``."""

    n: int

    def components(self, u: torch.Tensor, idx: torch.Tensor) -> torch.Tensor: ...


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")
    return value


def _check_real(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (number <= 0 if positive else number < 0):
        raise SciMLInputError(name, f"must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return number


def _check_start(u0: object) -> torch.Tensor:
    u0 = check_tensor("u0", u0)
    check_dtype("u0", u0)
    check_nonempty("u0", u0)
    check_finite("u0", u0)
    return u0


def _anchor_rule(anchor_weights: str | Callable[[int], float]) -> Callable[[int], float]:
    if isinstance(anchor_weights, str):
        if anchor_weights != "1/(k+2)":
            raise SciMLInputError(
                "anchor_weights", f"must be '1/(k+2)' or a callable k -> lambda_k, got {anchor_weights!r}"
            )
        return lambda k: 1.0 / (k + 2)
    if not callable(anchor_weights):
        raise SciMLInputError("anchor_weights", f"must be '1/(k+2)' or a callable, got {type(anchor_weights).__name__}")

    def checked(k: int) -> float:
        weight = anchor_weights(k)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("anchor_weights", f"lambda_{k} must be a number in [0, 1], got {weight!r}")
        return float(weight)

    return checked


def _checked_output(name: str, value: object, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise SciMLInputError(name, f"must return a tensor of shape {tuple(like.shape)}, got {got}")
    if value.dtype != like.dtype or value.device != like.device:
        raise SciMLInputError(name, f"must return {like.dtype} on {like.device}, got {value.dtype} on {value.device}")
    return value


def _progress_bar(enabled: bool, total: int | None, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)


def halpern(
    operator: Map,
    u0: torch.Tensor,
    *,
    kind: Literal["nonexpansive", "cocoercive"] = "nonexpansive",
    eta: float | None = None,
    resolvent: Resolvent | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    anchor_weights: str | Callable[[int], float] = "1/(k+2)",
    record_history: bool = True,
    progress: bool = False,
) -> Solution[torch.Tensor]:
    r"""Halpern's anchored fixed-point iteration, on a nonexpansive map or a (forward-backward) cocoercive operator.

    .. math::

        u_{k+1} = \lambda_k u_0 + (1 - \lambda_k)\, T(u_k), \qquad \lambda_k = \frac{1}{k+2},

    with

    - ``kind="nonexpansive"``: :math:`T` = ``operator`` (any nonexpansive map, e.g. a resolvent
      :math:`J_{\eta F} = (I + \eta F)^{-1}` of a monotone :math:`F`, which handles bilinear games);
    - ``kind="cocoercive"``: ``operator`` is :math:`F`, :math:`1/L`-cocoercive, and
      :math:`T = J_{\eta G}(I - \eta F)` with :math:`J_{\eta G}` = ``resolvent(v, eta)`` (identity when ``None``),
      nonexpansive for :math:`0 < \eta \le 2/L`.

    Residual (the stopping measure, recorded in ``history``): :math:`r_k = \|u_k - T(u_k)\|_2` for
    ``"nonexpansive"``, and :math:`r_k = \|u_k - T(u_k)\|_2 / \eta` for ``"cocoercive"`` (the forward-backward
    residual, equal to the operator residual :math:`\|F(u_k)\|_2` when there is no ``resolvent``). For nonexpansive
    :math:`T` and the default weights, :math:`\|u_k - T(u_k)\| \le 2\|u_0 - u^\star\|/(k+1)` for every :math:`k`. Each
    iteration evaluates :math:`T` once; the residual of the returned point comes for free.

    Args:
        operator: :math:`T` or :math:`F`, a map from tensors of ``u0``'s shape to the same shape, dtype and device.
        u0: starting point and anchor, any shape (norms are over all entries), floating dtype, finite.
        kind: ``"nonexpansive"`` or ``"cocoercive"`` (see above).
        eta: step :math:`\eta > 0`; required for ``"cocoercive"``, not allowed for ``"nonexpansive"``.
        resolvent: :math:`(v, \eta) \mapsto J_{\eta G}(v)`; only with ``"cocoercive"``.
        max_iter: iteration cap (``>= 0``).
        tol: absolute tolerance on the residual (``>= 0``).
        anchor_weights: ``"1/(k+2)"`` or a callable :math:`k \mapsto \lambda_k \in [0, 1]`.
        record_history: keep the residuals :math:`r_0, \dots, r_{n_\mathrm{iter}}`.
        progress: show a tqdm progress bar.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` :math:`u_{n_\mathrm{iter}}`, ``converged`` true iff its
        residual is ``<= tol``, ``residual`` that residual, ``history`` of shape ``(n_iter + 1,)`` (or None), and
        ``stats`` with ``operator_evals`` (calls of ``operator``), ``resolvent_evals`` and ``residual_measure``.

    Raises:
        SciMLInputError: on bad arguments, or when ``operator``/``resolvent`` returns a tensor of the wrong shape,
            dtype or device.

    Example:
        >>> rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # nonexpansive, fixed point 0
        >>> sol = halpern(lambda u: rotation @ u, torch.tensor([1.0, 0.0]), max_iter=200, tol=1e-2)
        >>> sol.converged, bool(sol.residual <= 2 * 1.0 / (sol.n_iter + 1))
        (True, True)

    References:
        B. Halpern, Bull. AMS 73, 1967; F. Lieder, Optim. Lett. 15, 2021; X. Cai, A. Alacaoglu, J. Diakonikolas,
        "Variance Reduced Halpern Iteration for Finite-Sum Monotone Inclusions", ICLR 2024, arXiv:2310.02987.
    """
    u0 = _check_start(u0)
    if not callable(operator):
        raise SciMLInputError("operator", f"must be callable, got {type(operator).__name__}")
    if kind not in ("nonexpansive", "cocoercive"):
        raise SciMLInputError("kind", f"must be 'nonexpansive' or 'cocoercive', got {kind!r}")
    if kind == "nonexpansive":
        if eta is not None:
            raise SciMLInputError("eta", "is only used with kind='cocoercive' (pass T itself for 'nonexpansive')")
        if resolvent is not None:
            raise SciMLInputError("resolvent", "is only used with kind='cocoercive'; compose it into T instead")
        step = 1.0
    else:
        if eta is None:
            raise SciMLInputError("eta", "is required with kind='cocoercive' (0 < eta <= 2/L)")
        step = _check_real("eta", eta, positive=True)
        if resolvent is not None and not callable(resolvent):
            raise SciMLInputError("resolvent", f"must be callable or None, got {type(resolvent).__name__}")
    max_iter = _check_int("max_iter", max_iter, 0)
    tol = _check_real("tol", tol, positive=False)
    weight = _anchor_rule(anchor_weights)

    counts = {"operator": 0, "resolvent": 0}

    def fixed_point_map(u: torch.Tensor) -> torch.Tensor:
        counts["operator"] += 1
        value = _checked_output("operator", operator(u), u0)
        if kind == "nonexpansive":
            return value
        forward = u - step * value
        if resolvent is None:
            return forward
        counts["resolvent"] += 1
        return _checked_output("resolvent", resolvent(forward, step), u0)

    history: list[float] = []
    bar = _progress_bar(progress, max_iter, "halpern")
    u = u0
    k = 0
    reason = ""
    with torch.no_grad():
        while True:
            image = fixed_point_map(u)
            residual = float(torch.linalg.vector_norm(u - image)) / step
            if record_history:
                history.append(residual)
            if not math.isfinite(residual):
                reason = "non-finite residual"
                break
            if residual <= tol:
                break
            if k == max_iter:
                reason = f"reached max_iter={max_iter}"
                break
            lam = weight(k)
            u = lam * u0 + (1.0 - lam) * image
            k += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    measure = "||u - T(u)||" if kind == "nonexpansive" else "||u - T(u)|| / eta"
    stats: dict[str, object] = {
        "operator_evals": counts["operator"],
        "resolvent_evals": counts["resolvent"],
        "residual_measure": measure,
    }
    if reason:
        stats["reason"] = reason
    converged = math.isfinite(residual) and residual <= tol
    hist = torch.tensor(history, dtype=torch.float64) if record_history else None
    return Solution(value=u, converged=converged, n_iter=k, residual=residual, history=hist, stats=stats)


def vr_halpern(
    components: ComponentMean | FiniteSumOperator,
    u0: torch.Tensor,
    *,
    L: float,
    n: int | None = None,
    eta: float | None = None,
    batch_size: int | None = None,
    refresh_prob: float | None = None,
    warmup: bool = True,
    resolvent: Resolvent | None = None,
    max_iter: int = 100_000,
    max_oracle_calls: int | None = None,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    record_history: bool = True,
    progress: bool = False,
) -> Solution[torch.Tensor]:
    r"""Variance-reduced Halpern iteration for finite sums that are cocoercive on average (Cai et al., ICLR 2024).

    Solves :math:`0 \in F(u) + G(u)` with :math:`F = \frac1n\sum_{i=1}^n F_i` cocoercive on average,
    :math:`\frac1n\sum_i\langle F_i u - F_i v, u - v\rangle \ge \frac1L\frac1n\sum_i\|F_i u - F_i v\|^2`, by Halpern
    steps on :math:`T = J_{\eta G}(I - \eta\widetilde F)`:

    .. math::

        u_{k+1} = \lambda_k u_0 + (1-\lambda_k)\, J_{\eta G}\big(u_k - \eta \widetilde F_k\big),
        \qquad \lambda_k = \frac{1}{k+2},

    with the recursive (PAGE / loopless-SARAH) estimator of :math:`F(u_k)`

    .. math::

        \widetilde F_k = \begin{cases} F(u_k) & \text{with probability } p_k \text{ (and at } k = 0),\\
        \widetilde F_{k-1} + \frac1b \sum_{i \in B_k} \big(F_i(u_k) - F_i(u_{k-1})\big) & \text{otherwise,}
        \end{cases}

    :math:`B_k` drawn uniformly with replacement, :math:`|B_k| = b`. Defaults: :math:`b = \lceil\sqrt n\rceil`,
    :math:`p = 1/\sqrt n`, :math:`\eta = 1/L`, so an iteration costs :math:`p n + 2(1-p) b \approx 3\sqrt n`
    component evaluations on average. With ``warmup`` the refresh probability is :math:`p_k = \max(p, 2/(k+2))`:
    early Halpern steps are long, and frequent refreshes keep the estimator error below the shrinking residual
    (an :math:`O(n \log n)` overhead, the :math:`\widetilde O` of the paper's :math:`\widetilde O(n + \sqrt n
    L/\varepsilon)` bound). The exact probability schedule, batch size and step constants of the paper's
    Algorithm 1 were not available while writing this and are reconstructed from the PAGE analysis; they may differ
    from the paper by constant factors.

    Residual and stopping (honest): ``history`` holds the residual the method can compute,
    :math:`r_k = \|u_k - J_{\eta G}(u_k - \eta\widetilde F_k)\|/\eta` (:math:`=\|\widetilde F_k\|` without
    :math:`G`), which is *exact* at refresh iterations (``stats["exact"]`` marks them). When an estimated
    :math:`r_k \le` ``tol``, the iteration refreshes with a full pass (counted as oracle calls) and stops only if the
    exact residual is ``<= tol``. At a cap, the returned residual is made exact by one extra full pass, counted
    separately in ``stats["certify_calls"]``.

    For finite sums that are only monotone and Lipschitz (e.g. bilinear games), use :func:`vr_halpern_monotone`.

    Args:
        components: either a callable ``components(u, idx)`` returning the batch mean
            :math:`\frac{1}{|B|}\sum_{i\in B}F_i(u)` (shape of ``u``) for a 1-D int64 index tensor ``idx``
            (repeats allowed), or an object with an int attribute ``n`` and such a ``components`` method (e.g.
            :class:`sciml_optim.testing.BilinearGame`).
        u0: starting point and anchor, any shape, floating dtype, finite.
        L: average cocoercivity constant :math:`L > 0`.
        n: number of components; required for a plain callable, must match ``components.n`` otherwise.
        eta: step, default :math:`1/L`; must satisfy :math:`0 < \eta \le 2/L`.
        batch_size: :math:`b`, default :math:`\lceil\sqrt n\rceil`, in ``[1, n]``.
        refresh_prob: :math:`p \in (0, 1]`, default :math:`\min(1, 1/\sqrt n)`.
        warmup: use :math:`p_k = \max(p, 2/(k+2))` instead of the constant :math:`p`.
        resolvent: :math:`(v, \eta) \mapsto J_{\eta G}(v)`, or None for :math:`G = 0`.
        max_iter: iteration cap (``>= 0``).
        max_oracle_calls: cap on component evaluations (``>= n``); the iteration stops before a step that could
            exceed it.
        tol: absolute tolerance on the (exact) residual, ``>= 0``.
        generator: torch generator for the refresh coin flips and the batches (on CPU).
        record_history: keep the per-iteration residuals and the cumulative oracle calls.
        progress: show a tqdm progress bar.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` :math:`u_{n_\mathrm{iter}}`, ``converged`` true iff its exact
        residual is ``<= tol``, ``residual`` that exact residual, ``history`` of shape ``(n_iter + 1,)`` (or None),
        and ``stats``: ``oracle_calls`` (component evaluations spent by the method, the paper's complexity measure),
        ``oracle_history`` (cumulative calls at each history entry, int64), ``exact`` (bool, history entries that
        are exact), ``refreshes``, ``certify_calls``, ``batch_size``, ``refresh_prob``, ``eta``.

    Raises:
        SciMLInputError: on bad arguments or when ``components``/``resolvent`` return a wrongly shaped tensor.

    Example:
        >>> from sciml_optim.testing._games import CocoerciveFiniteSum
        >>> problem = CocoerciveFiniteSum.random(3, 100, seed=0)
        >>> sol = vr_halpern(problem, torch.zeros(3, dtype=torch.float64), L=problem.component_cocoercivity,
        ...                  tol=1e-3, generator=torch.Generator().manual_seed(0))
        >>> sol.converged, problem.residual(sol.value) <= 1e-3
        (True, True)

    References:
        X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum Monotone
        Inclusions", ICLR 2024, arXiv:2310.02987; Z. Li et al., "PAGE", ICML 2021.
    """
    u0 = _check_start(u0)
    if isinstance(components, FiniteSumOperator) and not isinstance(components, type):
        count = _check_int("components.n", components.n, 1)
        if n is not None and n != count:
            raise SciMLInputError("n", f"must match components.n={count}, got {n!r}")
        n = count
        batch_mean: ComponentMean = components.components
    elif callable(components):
        if n is None:
            raise SciMLInputError("n", "is required when components is a plain callable")
        n = _check_int("n", n, 1)
        batch_mean = components
    else:
        raise SciMLInputError(
            "components", f"must be callable or have 'n' and 'components', got {type(components).__name__}"
        )
    L = _check_real("L", L, positive=True)
    step = 1.0 / L if eta is None else _check_real("eta", eta, positive=True)
    if step > 2.0 / L * (1 + 1e-12):
        raise SciMLInputError("eta", f"must be <= 2/L = {2.0 / L:.6g} for I - eta F to be nonexpansive, got {step}")
    b = math.ceil(math.sqrt(n)) if batch_size is None else _check_int("batch_size", batch_size, 1)
    if b > n:
        raise SciMLInputError("batch_size", f"must be <= n={n}, got {b}")
    p = (
        min(1.0, 1.0 / math.sqrt(n))
        if refresh_prob is None
        else _check_real("refresh_prob", refresh_prob, positive=True)
    )
    if p > 1:
        raise SciMLInputError("refresh_prob", f"must lie in (0, 1], got {p}")
    if resolvent is not None and not callable(resolvent):
        raise SciMLInputError("resolvent", f"must be callable or None, got {type(resolvent).__name__}")
    max_iter = _check_int("max_iter", max_iter, 0)
    if max_oracle_calls is not None:
        max_oracle_calls = _check_int("max_oracle_calls", max_oracle_calls, n)
    tol = _check_real("tol", tol, positive=False)
    if generator is not None and not isinstance(generator, torch.Generator):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("generator", f"must be a torch.Generator or None, got {type(generator).__name__}")

    every = torch.arange(n, device=u0.device)
    calls = 0

    def full(u: torch.Tensor) -> torch.Tensor:
        return _checked_output("components", batch_mean(u, every), u0)

    def fb_residual(u: torch.Tensor, estimate: torch.Tensor) -> tuple[float, torch.Tensor]:
        image = u - step * estimate
        if resolvent is not None:
            image = _checked_output("resolvent", resolvent(image, step), u0)
        return float(torch.linalg.vector_norm(u - image)) / step, image

    residuals: list[float] = []
    oracle_history: list[int] = []
    exact_flags: list[bool] = []
    refreshes = 0
    certify_calls = 0
    reason = ""
    bar = _progress_bar(progress, max_iter, "vr_halpern")
    with torch.no_grad():
        u_prev = u0
        u = u0
        estimate = full(u0)
        calls += n
        refreshes += 1
        exact = True
        k = 0
        while True:
            residual, image = fb_residual(u, estimate)
            if not exact and math.isfinite(residual) and residual <= tol:
                # A candidate: certify it with a full pass, which also serves as a refresh of the estimator.
                estimate = full(u)
                calls += n
                refreshes += 1
                exact = True
                residual, image = fb_residual(u, estimate)
            if record_history:
                residuals.append(residual)
                oracle_history.append(calls)
                exact_flags.append(exact)
            if not math.isfinite(residual):
                reason = "non-finite residual"
                break
            if exact and residual <= tol:
                break
            if k == max_iter:
                reason = f"reached max_iter={max_iter}"
                break
            # Worst case of the next step: a full refresh now plus a certification pass.
            if max_oracle_calls is not None and calls + 2 * n > max_oracle_calls:
                reason = f"reached max_oracle_calls={max_oracle_calls}"
                break
            lam = 1.0 / (k + 2)
            u_prev, u = u, lam * u0 + (1.0 - lam) * image
            k += 1
            p_k = max(p, 2.0 / (k + 2)) if warmup else p
            if float(torch.rand((), generator=generator)) < p_k:
                estimate = full(u)
                calls += n
                refreshes += 1
                exact = True
            else:
                idx = torch.randint(n, (b,), generator=generator).to(u0.device)
                new = _checked_output("components", batch_mean(u, idx), u0)
                old = _checked_output("components", batch_mean(u_prev, idx), u0)
                estimate = estimate + (new - old)
                calls += 2 * b
                exact = False
            if bar is not None:
                bar.update(1)
        if not exact and math.isfinite(residual):
            estimate = full(u)
            certify_calls += n
            residual, _ = fb_residual(u, estimate)
            if record_history:
                residuals[-1] = residual
                exact_flags[-1] = True
    if bar is not None:
        bar.close()
    converged = math.isfinite(residual) and residual <= tol
    stats: dict[str, object] = {
        "oracle_calls": calls,
        "certify_calls": certify_calls,
        "refreshes": refreshes,
        "batch_size": b,
        "refresh_prob": p,
        "eta": step,
        "n": n,
        "residual_measure": "||u - J(u - eta F(u))|| / eta" if resolvent is not None else "||F(u)||",
    }
    if record_history:
        stats["oracle_history"] = torch.tensor(oracle_history, dtype=torch.int64)
        stats["exact"] = torch.tensor(exact_flags, dtype=torch.bool)
    if reason and not converged:
        stats["reason"] = reason
    hist = torch.tensor(residuals, dtype=torch.float64) if record_history else None
    return Solution(value=u, converged=converged, n_iter=k, residual=residual, history=hist, stats=stats)


def _finite_sum(
    components: ComponentMean | FiniteSumOperator, n: int | None
) -> tuple[ComponentMean, int]:  # fmt: skip
    if isinstance(components, FiniteSumOperator) and not isinstance(components, type):
        count = _check_int("components.n", components.n, 1)
        if n is not None and n != count:
            raise SciMLInputError("n", f"must match components.n={count}, got {n!r}")
        return components.components, count
    if callable(components):
        if n is None:
            raise SciMLInputError("n", "is required when components is a plain callable")
        return components, _check_int("n", n, 1)
    raise SciMLInputError(
        "components", f"must be callable or have 'n' and 'components', got {type(components).__name__}"
    )


def vr_halpern_monotone(
    components: ComponentMean | FiniteSumOperator,
    u0: torch.Tensor,
    *,
    L: float,
    L_F: float | None = None,
    n: int | None = None,
    operator: Map | None = None,
    eta: float | None = None,
    batch_size: int | None = None,
    refresh_prob: float | None = None,
    inner_step: float = 0.9,
    inexactness: float = 0.1,
    max_inner_iter: int = 100_000,
    resolvent: Resolvent | None = None,
    max_iter: int = 10_000,
    max_oracle_calls: int | None = None,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    record_history: bool = True,
    progress: bool = False,
) -> Solution[torch.Tensor]:
    r"""Inexact Halpern iteration with variance-reduced resolvents, for monotone Lipschitz finite sums.

    Solves :math:`0 \in F(u) + G(u)` with :math:`F = \frac1n\sum_{i=1}^n F_i` monotone and Lipschitz on average,
    :math:`\frac1n\sum_i\|F_i u - F_i v\|^2 \le L^2\|u - v\|^2` (no cocoercivity: bilinear games qualify), and
    :math:`G` maximal monotone with a computable resolvent. Halpern's iteration runs on the firmly nonexpansive
    resolvent :math:`J = J_{\eta(F+G)} = (I + \eta(F + G))^{-1}`, which is not available in closed form and is
    replaced by a certified approximation :math:`w_k \approx J(u_k)` (Cai, Alacaoglu, Diakonikolas 2024, the
    monotone Lipschitz case):

    .. math::

        u_{k+1} = \lambda_k u_0 + (1 - \lambda_k)\, w_k, \qquad \lambda_k = \frac{1}{k+2}, \qquad
        \|w_k - J(u_k)\| \le \varepsilon_k = \frac{\theta\, \|u_k - w_k\|}{k + 2}.

    **Inner solver.** :math:`J(v)` is the zero of the 1-strongly monotone inclusion
    :math:`0 \in B(w) + \eta G(w)` with :math:`B(w) = w - v + \eta F(w)`, solved by the loopless variance-reduced
    extragradient method (Alacaoglu and Malitsky 2022) warm-started at :math:`w = z = v`: with snapshot :math:`z`
    and its exact :math:`B(z)`,

    .. math::

        \bar w = (1 - p) w + p z, \quad
        w_{1/2} = J_{\tau\eta G}\big(\bar w - \tau B(z)\big), \quad
        w^+ = J_{\tau\eta G}\Big(\bar w - \tau\big[B(z) + w_{1/2} - z
            + \eta\,\tfrac1b\textstyle\sum_{i\in S}(F_i(w_{1/2}) - F_i(z))\big]\Big),

    :math:`S` a uniform batch of size :math:`b` (with replacement), and the snapshot moves to :math:`w^+` with
    probability :math:`p` (a full pass). The step is :math:`\tau = \gamma\sqrt p / (1 + \eta\hat L)` with
    :math:`\hat L = \sqrt{L_F^2 + L^2/b}`, the mean-square Lipschitz constant of the batch estimator.
    Every snapshot carries an exact error bound, by 1-strong monotonicity: :math:`\|z - J(v)\| \le \|B(z)\|`
    without :math:`G`, and :math:`\|z^+ - J(v)\| \le 2(1 + \eta L_F)\|z - z^+\|` for the forward-backward point
    :math:`z^+ = J_{s\eta G}(z - s B(z))`, :math:`s = 1/(1 + \eta L_F)`, with :math:`G`. The inner loop stops at
    the first snapshot whose bound is :math:`\le \varepsilon_k` and returns it, so the inexactness is certified, not
    assumed. A resolvent costs :math:`O((n + \sqrt{n}\,\eta L)\log k)` component evaluations instead of the
    :math:`O(n\,\eta L\log k)` of a deterministic inner solver; with :math:`\eta \approx \sqrt{n/b}/\hat L` the outer
    loop needs :math:`O(\|u_0 - u^\star\|/(\eta\varepsilon))` iterations, for the paper's
    :math:`\widetilde O(n + \sqrt n L/\varepsilon)` total.

    The defaults (:math:`b = \lceil n^{1/4}\rceil`, :math:`p = b/n`, :math:`\eta = \sqrt{n/b}/\hat L`,
    :math:`\gamma = 0.9`, :math:`\theta = 1/10`, relative inexactness :math:`\varepsilon_k`) are reconstructed from
    the structure of the paper's Algorithm 2 and the loopless VR analysis, not copied from the paper, whose
    constants were not available while writing this; they may differ from it by constant and logarithmic factors.
    The paper's reference experiment uses a variance-reduced forward-reflected-backward inner loop run for a fixed
    :math:`O(n \log k)` steps; the extragradient variant with a certified stopping rule is used here instead.

    **Residual (exact) and returned point.** The iterate reported is the resolvent output :math:`w_k` (the
    certified snapshot, whose :math:`F(w_k)` came from a full pass), since
    :math:`\|F(J u_k)\| = \|u_k - J u_k\|/\eta \le 2\|u_0 - u^\star\|/(\eta(k+1))`; ``history`` holds exact values
    of the natural residual :math:`r = \|w - J_{\sigma G}(w - \sigma F(w))\| / \sigma`, :math:`\sigma = 1/L_F`
    (:math:`\|F(w)\|` without :math:`G`), at :math:`w_0 = u_0` and at each :math:`w_k`. The next resolvent is
    warm-started at :math:`w_k`, so no full pass is spent on :math:`u_k` itself.

    Args:
        components: either a callable ``components(u, idx)`` returning the batch mean
            :math:`\frac{1}{|B|}\sum_{i\in B}F_i(u)` (shape of ``u``) for a 1-D int64 index tensor ``idx``
            (repeats allowed), or an object with an int attribute ``n`` and such a ``components`` method (e.g.
            :class:`sciml_optim.testing.BilinearGame`).
        u0: starting point and anchor, any shape, floating dtype, finite.
        L: mean-square Lipschitz constant of the components, :math:`L > 0`.
        L_F: Lipschitz constant of the full :math:`F`, default ``L`` (always a valid bound, by Jensen).
        n: number of components; required for a plain callable, must match ``components.n`` otherwise.
        operator: optional full map :math:`u \mapsto F(u)` used for full passes when cheaper than
            ``components(u, arange(n))``; each call still counts as ``n`` component evaluations.
        eta: resolvent parameter :math:`\eta > 0`, default :math:`\sqrt{n/b}/\hat L`.
        batch_size: :math:`b \in [1, n]`, default :math:`\lceil n^{1/4}\rceil`.
        refresh_prob: snapshot probability :math:`p \in (0, 1]`, default :math:`b/n`.
        inner_step: :math:`\gamma \in (0, 1)`, the inner step in units of :math:`\sqrt p/(1 + \eta\hat L)`.
        inexactness: :math:`\theta > 0` of the inner tolerance :math:`\varepsilon_k`.
        max_inner_iter: cap on the inner steps of one resolvent (``>= 1``); a capped resolvent returns its last
            snapshot (counted in ``stats["inner_capped"]``).
        resolvent: :math:`(v, s) \mapsto J_{sG}(v)`, or None for :math:`G = 0`.
        max_iter: cap on outer iterations (``>= 0``).
        max_oracle_calls: cap on component evaluations (``>= n``); the iteration stops before an inner step that
            could exceed it, and returns the latest snapshot with its exact residual (replacing the last history
            entry).
        tol: absolute tolerance on the exact residual, ``>= 0``.
        generator: torch generator for the snapshot coin flips and the batches (on CPU).
        record_history: keep the per-outer-iteration residuals, oracle counts and inner statistics.
        progress: show a tqdm progress bar over outer iterations.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` :math:`w_{n_\mathrm{iter}}` (``u0`` when ``n_iter == 0``),
        ``converged`` true iff its exact residual is ``<= tol``, ``residual`` that residual, ``history`` of shape
        ``(n_iter + 1,)`` (or None), and ``stats``: ``oracle_calls`` (component evaluations, full passes counted as
        ``n``), ``inner_iterations``
        (total inner steps), ``inner_refreshes`` (inner full passes), ``inner_capped``, ``eta``, ``batch_size``,
        ``refresh_prob``, ``inner_step`` (:math:`\tau`), ``n``, ``residual_measure``, and with ``record_history``:
        ``oracle_history`` (cumulative calls at each history entry, int64), ``inner_history`` (inner steps of each
        resolvent, int64, length ``n_iter``) and ``resolvent_error`` (the certified bounds
        :math:`\|w_k - J(u_k)\|`, float64, length ``n_iter``).

    Raises:
        SciMLInputError: on bad arguments or when ``components``/``operator``/``resolvent`` return a wrongly shaped
            tensor.

    Example:
        >>> from sciml_optim.testing import BilinearGame
        >>> game = BilinearGame.random(2, n=50, seed=0)
        >>> sol = vr_halpern_monotone(game, torch.zeros(4, dtype=torch.float64), L=game.component_lipschitz,
        ...                           L_F=game.lipschitz, tol=1e-2, generator=torch.Generator().manual_seed(0))
        >>> sol.converged, game.residual(sol.value) <= 1e-2
        (True, True)

    References:
        X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum Monotone
        Inclusions", ICLR 2024, arXiv:2310.02987; A. Alacaoglu, Y. Malitsky, "Stochastic Variance Reduction for
        Variational Inequality Methods", COLT 2022.
    """
    u0 = _check_start(u0)
    batch_mean, n = _finite_sum(components, n)
    L = _check_real("L", L, positive=True)
    lipschitz = L if L_F is None else _check_real("L_F", L_F, positive=True)
    if operator is not None and not callable(operator):
        raise SciMLInputError("operator", f"must be callable or None, got {type(operator).__name__}")
    b = math.ceil(n**0.25) if batch_size is None else _check_int("batch_size", batch_size, 1)
    if b > n:
        raise SciMLInputError("batch_size", f"must be <= n={n}, got {b}")
    p = b / n if refresh_prob is None else _check_real("refresh_prob", refresh_prob, positive=True)
    if p > 1:
        raise SciMLInputError("refresh_prob", f"must lie in (0, 1], got {p}")
    estimator_lipschitz = math.sqrt(lipschitz**2 + L**2 / b)
    step = math.sqrt(n / b) / estimator_lipschitz if eta is None else _check_real("eta", eta, positive=True)
    gamma = _check_real("inner_step", inner_step, positive=True)
    if gamma >= 1:
        raise SciMLInputError("inner_step", f"must lie in (0, 1), got {gamma}")
    theta = _check_real("inexactness", inexactness, positive=True)
    max_inner_iter = _check_int("max_inner_iter", max_inner_iter, 1)
    if resolvent is not None and not callable(resolvent):
        raise SciMLInputError("resolvent", f"must be callable or None, got {type(resolvent).__name__}")
    max_iter = _check_int("max_iter", max_iter, 0)
    if max_oracle_calls is not None:
        max_oracle_calls = _check_int("max_oracle_calls", max_oracle_calls, n)
    tol = _check_real("tol", tol, positive=False)
    if generator is not None and not isinstance(generator, torch.Generator):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("generator", f"must be a torch.Generator or None, got {type(generator).__name__}")

    every = torch.arange(n, device=u0.device)
    lipschitz_b = 1.0 + step * lipschitz  # Lipschitz constant of B = I - v + eta F
    tau = gamma * math.sqrt(p) / (1.0 + step * estimator_lipschitz)
    sigma = 1.0 / lipschitz
    calls = 0

    def full(u: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += n
        if operator is not None:
            return _checked_output("operator", operator(u), u0)
        return _checked_output("components", batch_mean(u, every), u0)

    def prox(v: torch.Tensor, scale: float) -> torch.Tensor:
        if resolvent is None:
            return v
        return _checked_output("resolvent", resolvent(v, scale), u0)

    def natural_residual(u: torch.Tensor, value: torch.Tensor) -> float:
        if resolvent is None:
            return float(torch.linalg.vector_norm(value))
        return float(torch.linalg.vector_norm(u - prox(u - sigma * value, sigma))) / sigma

    def certified_error(z: torch.Tensor, b_z: torch.Tensor) -> float:
        # A bound on ||z - J(v)|| from the exact B(z), by 1-strong monotonicity of B + eta G.
        if resolvent is None:
            return float(torch.linalg.vector_norm(b_z))
        s = 1.0 / lipschitz_b
        gap = float(torch.linalg.vector_norm(z - prox(z - s * b_z, s * step)))
        return (1.0 + 2.0 * lipschitz_b) * gap

    residuals: list[float] = []
    oracle_history: list[int] = []
    inner_history: list[int] = []
    errors: list[float] = []
    inner_total = 0
    inner_refreshes = 0
    inner_capped = 0
    reason = ""
    bar = _progress_bar(progress, max_iter, "vr_halpern_monotone")
    with torch.no_grad():
        u = u0
        # The snapshot z and its exact F(z): the point returned, and the warm start of the next resolvent.
        z = u0
        value = full(u0)
        residual = natural_residual(z, value)
        if record_history:
            residuals.append(residual)
            oracle_history.append(calls)
        k = 0
        while True:
            if not math.isfinite(residual):
                reason = "non-finite residual"
                break
            if residual <= tol:
                break
            if k == max_iter:
                reason = f"reached max_iter={max_iter}"
                break
            # Inner solve of J(u_k), warm-started at the previous output z, whose F(z) is known.
            v = u
            w = z
            b_z = z - v + step * value
            error = certified_error(z, b_z)
            target = theta * float(torch.linalg.vector_norm(v - z)) / (k + 2)
            steps = 0
            out_of_budget = False
            while error > target:
                if steps == max_inner_iter:
                    inner_capped += 1
                    break
                if max_oracle_calls is not None and calls + 2 * b + n > max_oracle_calls:
                    out_of_budget = True
                    break
                w_bar = (1.0 - p) * w + p * z
                half = prox(w_bar - tau * b_z, tau * step)
                idx = torch.randint(n, (b,), generator=generator).to(u0.device)
                difference = _checked_output("components", batch_mean(half, idx), u0) - _checked_output(
                    "components", batch_mean(z, idx), u0
                )
                calls += 2 * b
                w = prox(w_bar - tau * (b_z + (half - z) + step * difference), tau * step)
                steps += 1
                if float(torch.rand((), generator=generator)) < p:
                    new_value = full(w)
                    inner_refreshes += 1
                    if not math.isfinite(float(torch.linalg.vector_norm(new_value))):
                        z, value = w, new_value
                        error = math.nan
                        break
                    z, value = w, new_value
                    b_z = z - v + step * value
                    error = certified_error(z, b_z)
                    target = theta * float(torch.linalg.vector_norm(v - z)) / (k + 2)
            inner_total += steps
            if out_of_budget:
                # Return the latest snapshot (its F is exact), which the last history entry now describes.
                reason = f"reached max_oracle_calls={max_oracle_calls}"
                residual = natural_residual(z, value)
                if record_history:
                    residuals[-1] = residual
                    oracle_history[-1] = calls
                break
            k += 1
            residual = natural_residual(z, value)
            if record_history:
                residuals.append(residual)
                oracle_history.append(calls)
                inner_history.append(steps)
                errors.append(error)
            lam = 1.0 / (k + 1)
            u = lam * u0 + (1.0 - lam) * z
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    converged = math.isfinite(residual) and residual <= tol
    stats: dict[str, object] = {
        "oracle_calls": calls,
        "inner_iterations": inner_total,
        "inner_refreshes": inner_refreshes,
        "inner_capped": inner_capped,
        "eta": step,
        "batch_size": b,
        "refresh_prob": p,
        "inner_step": tau,
        "n": n,
        "residual_measure": "||u - J_{G/L_F}(u - F(u)/L_F)|| * L_F" if resolvent is not None else "||F(u)||",
    }
    if record_history:
        stats["oracle_history"] = torch.tensor(oracle_history, dtype=torch.int64)
        stats["inner_history"] = torch.tensor(inner_history, dtype=torch.int64)
        stats["resolvent_error"] = torch.tensor(errors, dtype=torch.float64)
    if reason and not converged:
        stats["reason"] = reason
    hist = torch.tensor(residuals, dtype=torch.float64) if record_history else None
    return Solution(value=z, converged=converged, n_iter=k, residual=residual, history=hist, stats=stats)
