r"""NSGA-II selection: non-dominated sorting and crowding distance (Deb et al., 2002).

All objectives are minimised. A point :math:`a` *dominates* :math:`b` when :math:`a_m \le b_m` for every objective
and :math:`a_m < b_m` for at least one. Front 0 holds the points nothing dominates, front 1 those dominated only by
front 0, and so on. Within a front, the crowding distance of a point is the sum over objectives of the normalised
gap between its two neighbours along that objective,

.. math:: d_i = \sum_m \frac{f_m^{(i+1)} - f_m^{(i-1)}}{f_m^{\max} - f_m^{\min}},

infinite for the extremes, so that selection keeps the front spread out. Survivors are taken front by front, the
last front that does not fit entirely by decreasing crowding distance.

Reference: K. Deb, A. Pratap, S. Agarwal, T. Meyarivan, "A fast and elitist multiobjective genetic algorithm:
NSGA-II", IEEE Transactions on Evolutionary Computation 6(2), 182-197, 2002.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sciml_protocols import SciMLInputError

__all__ = ["crowding_distance", "dominates", "non_dominated_sort", "nsga2_order", "tournament"]


def _objectives(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise SciMLInputError(name, f"must have shape (N, M) with M >= 1 objectives, got {array.shape}")
    if np.isnan(array).any():
        raise SciMLInputError(name, "must not contain NaN (use +inf for a failed evaluation)")
    return array


def dominates(a: npt.ArrayLike, b: npt.ArrayLike) -> bool:
    """Whether objective vector ``a`` Pareto-dominates ``b`` (all <=, at least one <; minimisation).

    Example:
        >>> dominates([1, 2], [1, 3]), dominates([1, 2], [1, 2]), dominates([0, 3], [1, 2])
        (True, False, False)
    """
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(first <= second) and np.any(first < second))


def non_dominated_sort(objectives: npt.ArrayLike) -> list[npt.NDArray[np.intp]]:
    """Split points into Pareto fronts (Deb et al.'s fast non-dominated sort, vectorised).

    Args:
        objectives: shape ``(N, M)``: ``N`` points, ``M`` objectives to minimise (``inf`` allowed, NaN not).

    Returns:
        The fronts, best first, each an increasing array of point indices; together they partition ``range(N)``.

    Example:
        >>> [f.tolist() for f in non_dominated_sort([[1, 5], [2, 2], [3, 3], [5, 1], [4, 4]])]
        [[0, 1, 3], [2], [4]]
    """
    points = _objectives("objectives", objectives)
    n = points.shape[0]
    less_equal = np.all(points[:, None, :] <= points[None, :, :], axis=2)
    less = np.any(points[:, None, :] < points[None, :, :], axis=2)
    dominance = less_equal & less  # dominance[i, j]: i dominates j
    dominated_by = dominance.sum(axis=0)
    remaining = np.ones(n, dtype=bool)
    fronts: list[npt.NDArray[np.intp]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominated_by == 0))
        fronts.append(front)
        remaining[front] = False
        dominated_by = dominated_by - dominance[front].sum(axis=0)
    return fronts


def crowding_distance(objectives: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Crowding distance of each point of one front (Deb et al., 2002, section III-B).

    Args:
        objectives: shape ``(K, M)``, the points of one front; entries must be finite.

    Returns:
        Shape ``(K,)``: ``inf`` for the points with the smallest or largest value of some objective, the summed
        normalised neighbour gaps otherwise. An objective on which all points agree contributes nothing.

    Example:
        >>> crowding_distance([[0, 4], [1, 2], [3, 1], [4, 0]]).tolist()
        [inf, 1.5, 1.25, inf]
    """
    points = _objectives("objectives", objectives)
    if not np.all(np.isfinite(points)):
        raise SciMLInputError("objectives", "must be finite (transform or clip infinite objectives first)")
    k, m = points.shape
    distance = np.zeros(k)
    for objective in range(m):
        column = points[:, objective]
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0 and k > 2:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def nsga2_order(
    objectives: npt.ArrayLike,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Rank every point by (front, decreasing crowding distance), ties by index: the NSGA-II survival order.

    Args:
        objectives: shape ``(N, M)``, minimised, finite (crowding distance needs finite values).

    Returns:
        ``(order, front, crowding)``: ``order`` lists the indices best first (take ``order[:k]`` to keep ``k``
        survivors), ``front[i]`` is the front number of point ``i`` and ``crowding[i]`` its crowding distance within
        its front.

    Example:
        >>> order, front, crowding = nsga2_order([[3, 3], [1, 5], [2, 2], [5, 1], [4, 4]])
        >>> order.tolist(), front.tolist()
        ([1, 3, 2, 0, 4], [1, 0, 0, 0, 2])
    """
    points = _objectives("objectives", objectives)
    n = points.shape[0]
    front = np.zeros(n, dtype=np.intp)
    crowding = np.zeros(n)
    for number, members in enumerate(non_dominated_sort(points)):
        front[members] = number
        crowding[members] = crowding_distance(points[members])
    order = np.lexsort((np.arange(n), -crowding, front))
    return order.astype(np.intp), front, crowding


def tournament(rng: np.random.Generator, front: npt.NDArray[np.intp], crowding: npt.NDArray[np.float64]) -> int:
    """Binary tournament with the crowded-comparison operator: lower front wins, then larger crowding distance.

    Example:
        >>> tournament(np.random.default_rng(0), np.array([0, 0]), np.array([1.0, 1.0])) in (0, 1)
        True
    """
    first, second = (int(i) for i in rng.integers(front.shape[0], size=2))
    if (front[second], -crowding[second]) < (front[first], -crowding[first]):
        return second
    return first
