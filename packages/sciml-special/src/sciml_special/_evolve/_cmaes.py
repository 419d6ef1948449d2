r"""A small CMA-ES (covariance matrix adaptation evolution strategy) in numpy, after Hansen's tutorial.

One generation samples :math:`\lambda` points :math:`x_k = m + \sigma B D z_k`, :math:`z_k \sim \mathcal N(0, I)`,
ranks them by the objective and moves the mean to the weighted average of the best :math:`\mu`:

.. math::

    m' &= m + \sigma \textstyle\sum_{i \le \mu} w_i y_{i:\lambda}, \qquad y = (x - m) / \sigma, \\
    p_\sigma &\leftarrow (1 - c_\sigma) p_\sigma + \sqrt{c_\sigma (2 - c_\sigma) \mu_w}\, C^{-1/2} \bar y, \\
    p_c &\leftarrow (1 - c_c) p_c + h_\sigma \sqrt{c_c (2 - c_c) \mu_w}\, \bar y, \\
    C &\leftarrow (1 - c_1 - c_\mu) C + c_1 \left(p_c p_c^\top + \delta(h_\sigma) C\right)
        + c_\mu \textstyle\sum_i w_i y_{i:\lambda} y_{i:\lambda}^\top, \\
    \sigma &\leftarrow \sigma \exp\!\left(\frac{c_\sigma}{d_\sigma}
        \left(\frac{\lVert p_\sigma \rVert}{\mathbb E \lVert \mathcal N(0, I) \rVert} - 1\right)\right),

with the default constants of the tutorial (N. Hansen, "The CMA Evolution Strategy: A Tutorial",
arXiv:1604.00772, 2016, table 1). Only positive recombination weights are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from sciml_protocols import SciMLInputError, Solution

__all__ = ["cma_es"]

Objective = Callable[[npt.NDArray[np.float64]], npt.ArrayLike]


def cma_es(
    objective: Objective,
    x0: npt.ArrayLike,
    sigma0: float,
    *,
    scales: npt.ArrayLike | None = None,
    population: int | None = None,
    max_generations: int = 1000,
    tol_fun: float = 1e-12,
    tol_x: float = 1e-12,
    stop_value: float = -math.inf,
    seed: int | np.random.Generator = 0,
) -> Solution[npt.NDArray[np.float64]]:
    r"""Minimise a black-box function with CMA-ES.

    The search runs in scaled coordinates :math:`x = x_0 + s \odot u`, starting from :math:`u = 0` with step size
    ``sigma0`` and :math:`C = I`, so ``scales`` sets the initial spread per coordinate.

    Args:
        objective: vectorised objective: takes an array of shape ``(lambda, n)`` and returns ``lambda`` values
            (NaN counts as ``+inf``).
        x0: starting point, shape ``(n,)``, ``n >= 1``.
        sigma0: initial step size (in units of ``scales``), positive.
        scales: per-coordinate scale, shape ``(n,)``, positive; ones by default.
        population: :math:`\lambda`; default :math:`4 + \lfloor 3 \ln n \rfloor`.
        max_generations: cap on generations.
        tol_fun: stop when the best value changed by less than this over the last
            :math:`10 + \lceil 30 n / \lambda \rceil` generations and the spread of the current generation is
            below it too.
        tol_x: stop when :math:`\sigma \max_i \sqrt{C_{ii}}` (in scaled units) falls below this.
        stop_value: stop as soon as a value at or below this is found.
        seed: integer seed or a numpy generator.

    Returns:
        A :class:`~sciml_protocols.Solution` whose ``value`` is the best point seen, ``residual`` its objective value,
        ``converged`` True when a tolerance or ``stop_value`` stopped the run (False at the generation cap),
        ``history`` the best value after each generation, and ``stats`` with ``reason``, ``evaluations``,
        ``sigma``.

    Raises:
        SciMLInputError: for a non-callable objective, an empty or non-finite ``x0``, bad ``scales``, ``sigma0``,
            ``population`` or ``max_generations``.

    Example:
        >>> shifted = lambda x: ((x - np.array([1.0, -2.0, 0.5])) ** 2).sum(axis=1)
        >>> result = cma_es(shifted, np.zeros(3), 1.0, seed=1)
        >>> result.converged, np.allclose(result.value, [1.0, -2.0, 0.5], atol=1e-5)
        (True, True)

    References:
        N. Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (2016).
    """
    if not callable(objective):
        raise SciMLInputError("objective", f"must be callable, got {type(objective).__name__}")
    start = np.asarray(x0, dtype=np.float64).reshape(-1)
    n = start.shape[0]
    if n == 0 or not np.all(np.isfinite(start)):
        raise SciMLInputError("x0", "must be a non-empty vector of finite numbers")
    scale = np.ones(n) if scales is None else np.asarray(scales, dtype=np.float64).reshape(-1)
    if scale.shape != (n,) or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise SciMLInputError("scales", f"must be {n} positive finite numbers")
    if not (isinstance(sigma0, int | float) and math.isfinite(sigma0) and sigma0 > 0):
        raise SciMLInputError("sigma0", f"must be a positive finite number, got {sigma0!r}")
    lam = 4 + int(3 * math.log(n)) if population is None else population
    if isinstance(lam, bool) or not isinstance(lam, int) or lam < 2:
        raise SciMLInputError("population", f"must be an int >= 2, got {population!r}")
    if isinstance(max_generations, bool) or not isinstance(max_generations, int) or max_generations < 1:
        raise SciMLInputError("max_generations", f"must be a positive int, got {max_generations!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    mu = lam // 2
    raw = math.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
    weights = raw / raw.sum()
    mu_eff = 1.0 / float(np.sum(weights**2))
    c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
    d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
    c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
    c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)
    c_mu = min(1 - c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))

    def evaluate(u: np.ndarray) -> np.ndarray:
        values = np.asarray(objective(start + u * scale), dtype=np.float64).reshape(-1)
        if values.shape[0] != u.shape[0]:
            raise SciMLInputError("objective", f"must return {u.shape[0]} values, got shape {values.shape}")
        return np.where(np.isnan(values), np.inf, values)

    mean = np.zeros(n)
    sigma = float(sigma0)
    cov = np.eye(n)
    basis, axes = np.eye(n), np.ones(n)
    p_sigma, p_c = np.zeros(n), np.zeros(n)
    best_u = mean.copy()
    best_value = float(evaluate(mean[None, :])[0])
    evaluations = 1
    history = [best_value]
    window = 10 + math.ceil(30 * n / lam)
    reason = "max_generations"
    converged = False
    generation = 0
    if best_value <= stop_value:
        reason, converged = "stop_value", True
    while not converged and generation < max_generations:
        generation += 1
        z = rng.standard_normal((lam, n))
        y = (z * axes) @ basis.T
        u = mean + sigma * y
        values = evaluate(u)
        evaluations += lam
        order = np.argsort(values, kind="stable")
        if values[order[0]] < best_value:
            best_value, best_u = float(values[order[0]]), u[order[0]].copy()
        history.append(best_value)
        selected = y[order[:mu]]
        y_w = weights @ selected
        mean = mean + sigma * y_w
        inv_sqrt = (basis / axes) @ basis.T
        p_sigma = (1 - c_sigma) * p_sigma + math.sqrt(c_sigma * (2 - c_sigma) * mu_eff) * (inv_sqrt @ y_w)
        norm_ratio = float(np.linalg.norm(p_sigma)) / math.sqrt(1 - (1 - c_sigma) ** (2 * generation))
        h_sigma = 1.0 if norm_ratio < (1.4 + 2 / (n + 1)) * chi_n else 0.0
        p_c = (1 - c_c) * p_c + h_sigma * math.sqrt(c_c * (2 - c_c) * mu_eff) * y_w
        rank_mu = (selected.T * weights) @ selected
        cov = (
            (1 - c_1 - c_mu) * cov + c_1 * (np.outer(p_c, p_c) + (1 - h_sigma) * c_c * (2 - c_c) * cov) + c_mu * rank_mu
        )
        sigma *= math.exp((c_sigma / d_sigma) * (float(np.linalg.norm(p_sigma)) / chi_n - 1))
        cov = (cov + cov.T) / 2
        eigenvalues, basis = np.linalg.eigh(cov)
        axes = np.sqrt(np.maximum(eigenvalues, 1e-300))
        finite = values[np.isfinite(values)]
        if best_value <= stop_value:
            reason, converged = "stop_value", True
        elif sigma * float(np.sqrt(np.max(np.diag(cov)))) < tol_x:
            reason, converged = "tol_x", True
        elif (
            generation >= window
            and abs(history[-window] - best_value) <= tol_fun
            and finite.size == lam
            and float(np.ptp(finite)) <= tol_fun
        ):
            reason, converged = "tol_fun", True
        elif not np.isfinite(sigma) or sigma == 0 or float(axes.max()) > 1e14 * float(axes.min()):
            reason = "ill_conditioned"
            break
    return Solution(
        value=start + best_u * scale,
        converged=converged,
        n_iter=generation,
        residual=best_value,
        history=torch.tensor(history, dtype=torch.float64),
        stats={"reason": reason, "evaluations": evaluations, "sigma": sigma},
    )
