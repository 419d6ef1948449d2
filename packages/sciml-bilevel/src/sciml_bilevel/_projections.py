r"""Euclidean projections onto convex sets, for projected-gradient fixed points.

.. math:: \operatorname{proj}_C(x) = \arg\min_{y \in C} \|y - x\|_2^2.

Every projection has the signature ``project(x, hyper_params)`` of jaxopt (``jaxopt.projection``): the second
argument describes the set (a radius, a pair of bounds, a hyperplane) and may hold tensors, so the set itself can
be a hyperparameter that implicit differentiation differentiates. The projections are built from plain torch
operations (sorting, gathering, clamping, a linear solve) and are differentiable almost everywhere with autograd.
Sets defined by a vector (simplex, balls, hyperplane, affine set) act on the last dimension and batch over the
leading ones; box and orthant projections are elementwise.

Values of tensor hyperparameters are not checked (that would synchronize with the device inside solver loops);
Python numbers are.

Reference:
    M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-López, F. Pedregosa, J.-P. Vert,
    "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183 (section 2.2, the projected
    gradient fixed point); J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient Projections onto the
    l1-Ball for Learning in High Dimensions", ICML 2008 (the sort-based simplex projection).
"""

from __future__ import annotations

import math

import torch
from sciml_protocols import SciMLInputError, check_tensor

from ._prox import Scalar, _clamp, _pair

__all__ = [
    "project_affine",
    "project_box",
    "project_hyperplane",
    "project_l1_ball",
    "project_l2_ball",
    "project_nonnegative",
    "project_simplex",
]


def _check_vector_input(x: object) -> torch.Tensor:
    x = check_tensor("x", x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise SciMLInputError("x", f"must have a non-empty last dimension, got shape {tuple(x.shape)}")
    return x


def _check_size(name: str, value: object) -> Scalar:
    """A radius or a simplex total: a positive finite number or a tensor (values not inspected)."""
    if isinstance(value, torch.Tensor):
        if not value.dtype.is_floating_point:
            raise SciMLInputError(name, f"must be a floating-point tensor, got dtype {value.dtype}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a number or a tensor, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise SciMLInputError(name, f"must be finite and > 0, got {value}")
    return float(value)


def _as_last_dim(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """A scalar per vector, shaped ``(..., 1)`` to broadcast against ``(..., d)``."""
    if isinstance(value, torch.Tensor):
        return value.unsqueeze(-1) if value.ndim > 0 else value
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def project_simplex(x: torch.Tensor, value: Scalar = 1.0) -> torch.Tensor:
    r"""Projection onto the scaled simplex :math:`\{y : y \ge 0, \sum_i y_i = c\}`, by sorting.

    With :math:`u` the entries of :math:`x` in decreasing order,
    :math:`\rho = \max\{j : u_j - (\sum_{i \le j} u_i - c)/j > 0\}` and
    :math:`\tau = (\sum_{i \le \rho} u_i - c)/\rho`, the projection is :math:`y = \max(x - \tau, 0)`. Cost
    :math:`O(d \log d)` per vector.

    Args:
        x: tensor of shape ``(..., d)``; each slice along the last dimension is projected.
        value: the total :math:`c > 0`, a number or a tensor of shape ``()`` or ``x.shape[:-1]``.

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        SciMLInputError: if ``x`` is not a tensor with a non-empty last dimension, or ``value`` is not positive.

    Example:
        >>> project_simplex(torch.tensor([0.5, 1.5, -1.0]))
        tensor([0., 1., 0.])
    """
    x = _check_vector_input(x)
    total = _as_last_dim(_check_size("value", value), x)
    sorted_x = torch.sort(x, dim=-1, descending=True).values
    excess = torch.cumsum(sorted_x, dim=-1) - total
    ranks = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    # The condition holds exactly on a prefix, so counting the positives gives rho.
    rho = (sorted_x - excess / ranks > 0).sum(dim=-1, keepdim=True).clamp_min(1)
    tau = torch.gather(excess, -1, rho - 1) / rho.to(x.dtype)
    return torch.relu(x - tau)


def project_l1_ball(x: torch.Tensor, radius: Scalar = 1.0) -> torch.Tensor:
    r"""Projection onto the :math:`\ell_1` ball :math:`\{y : \|y\|_1 \le r\}`.

    Inside the ball the point is kept; outside,
    :math:`y = \operatorname{sign}(x) \odot \operatorname{proj}_{\Delta_r}(|x|)` with :math:`\Delta_r` the simplex of
    total :math:`r` (see :func:`project_simplex`).

    Args:
        x: tensor of shape ``(..., d)``; each slice along the last dimension is projected.
        radius: :math:`r > 0`, a number or a tensor of shape ``()`` or ``x.shape[:-1]``.

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        SciMLInputError: if ``x`` is not a tensor with a non-empty last dimension, or ``radius`` is not positive.

    Example:
        >>> project_l1_ball(torch.tensor([2.0, -1.0]))
        tensor([1., -0.])
    """
    x = _check_vector_input(x)
    r = _check_size("radius", radius)
    outside = project_simplex(x.abs(), r) * torch.sign(x)
    inside = x.abs().sum(dim=-1, keepdim=True) <= _as_last_dim(r, x)
    return torch.where(inside, x, outside)


def project_l2_ball(x: torch.Tensor, radius: Scalar = 1.0) -> torch.Tensor:
    r"""Projection onto the Euclidean ball :math:`\{y : \|y\|_2 \le r\}`: :math:`y = x \min(1, r / \|x\|_2)`.

    Args:
        x: tensor of shape ``(..., d)``; each slice along the last dimension is projected.
        radius: :math:`r > 0`, a number or a tensor of shape ``()`` or ``x.shape[:-1]``.

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        SciMLInputError: if ``x`` is not a tensor with a non-empty last dimension, or ``radius`` is not positive.

    Example:
        >>> project_l2_ball(torch.tensor([3.0, 4.0]), 2.5)
        tensor([1.5000, 2.0000])
    """
    x = _check_vector_input(x)
    r = _as_last_dim(_check_size("radius", radius), x)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    tiny = torch.finfo(norm.dtype).tiny
    return x * torch.clamp(r / norm.clamp_min(tiny), max=1.0)


def project_box(x: torch.Tensor, bounds: tuple[Scalar, Scalar] = (0.0, 1.0)) -> torch.Tensor:
    r"""Projection onto the box :math:`\{y : l \le y \le u\}`: :math:`y = \min(\max(x, l), u)` elementwise.

    Args:
        x: tensor, any shape.
        bounds: the pair ``(lower, upper)`` of numbers or tensors broadcastable to ``x``, with ``lower <= upper``.

    Returns:
        A tensor of the broadcast shape.

    Raises:
        SciMLInputError: if ``x`` is not a tensor, ``bounds`` is not a pair, or numeric bounds are crossed.

    Example:
        >>> project_box(torch.tensor([-1.0, 0.5, 2.0]), (0.0, 1.0))
        tensor([0.0000, 0.5000, 1.0000])
    """
    check_tensor("x", x)
    lower, upper = _pair("bounds", bounds)
    return _clamp(x, lower, upper)


def project_nonnegative(x: torch.Tensor, hyper_params: object = None) -> torch.Tensor:
    r"""Projection onto the non-negative orthant: :math:`y = \max(x, 0)` elementwise.

    Args:
        x: tensor, any shape.
        hyper_params: ignored (present for the common signature).

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        SciMLInputError: if ``x`` is not a tensor.

    Example:
        >>> project_nonnegative(torch.tensor([1.0, -2.0]))
        tensor([1., 0.])
    """
    check_tensor("x", x)
    return torch.relu(x)


def project_hyperplane(x: torch.Tensor, hyperplane: tuple[torch.Tensor, Scalar]) -> torch.Tensor:
    r"""Projection onto the hyperplane :math:`\{y : a^\top y = b\}`: :math:`y = x - \frac{a^\top x - b}{\|a\|^2} a`.

    Args:
        x: tensor of shape ``(..., d)``.
        hyperplane: the pair ``(a, b)``: ``a`` a nonzero tensor of shape ``(d,)`` (or ``(..., d)``, broadcast
            against ``x``), ``b`` a number or a tensor of shape ``()`` or the batch shape.

    Returns:
        A tensor of the broadcast shape of ``x`` and ``a``.

    Raises:
        SciMLInputError: if ``hyperplane`` is not a pair or ``a`` does not match the last dimension of ``x``.

    Example:
        >>> project_hyperplane(torch.tensor([1.0, 1.0]), (torch.tensor([1.0, 0.0]), 3.0))
        tensor([3., 1.])
    """
    x = _check_vector_input(x)
    a, b = _pair("hyperplane", hyperplane)
    a = check_tensor("hyperplane[0]", a)
    if a.ndim == 0 or a.shape[-1] != x.shape[-1]:
        raise SciMLInputError("hyperplane[0]", f"must have last dimension {x.shape[-1]}, got shape {tuple(a.shape)}")
    if isinstance(b, bool) or not isinstance(b, int | float | torch.Tensor):
        raise SciMLInputError("hyperplane[1]", f"must be a number or a tensor, got {type(b).__name__}")
    offset = b.unsqueeze(-1) if isinstance(b, torch.Tensor) and b.ndim > 0 else b
    gap = (a * x).sum(dim=-1, keepdim=True) - offset
    return x - gap / (a * a).sum(dim=-1, keepdim=True) * a


def project_affine(x: torch.Tensor, system: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    r"""Projection onto the affine set :math:`\{y : A y = b\}` for :math:`A` of full row rank.

    .. math:: y = x - A^\top (A A^\top)^{-1} (A x - b).

    Args:
        x: tensor of shape ``(..., n)``.
        system: the pair ``(A, b)``: ``A`` of shape ``(m, n)`` with ``m <= n`` and full row rank, ``b`` of shape
            ``(m,)`` or ``(..., m)``.

    Returns:
        A tensor of the broadcast shape ``(..., n)``.

    Raises:
        SciMLInputError: if ``system`` is not a pair or the shapes do not match.

    Example:
        >>> A = torch.tensor([[1.0, 1.0]])
        >>> project_affine(torch.tensor([0.0, 2.0]), (A, torch.tensor([1.0])))
        tensor([-0.5000,  1.5000])
    """
    x = _check_vector_input(x)
    matrix, rhs = _pair("system", system)
    matrix = check_tensor("system[0]", matrix)
    rhs = check_tensor("system[1]", rhs)
    if matrix.ndim != 2 or matrix.shape[1] != x.shape[-1] or matrix.shape[0] > matrix.shape[1]:
        raise SciMLInputError(
            "system[0]", f"must have shape (m, {x.shape[-1]}) with m <= {x.shape[-1]}, got {tuple(matrix.shape)}"
        )
    if rhs.ndim == 0 or rhs.shape[-1] != matrix.shape[0]:
        raise SciMLInputError("system[1]", f"must have last dimension {matrix.shape[0]}, got {tuple(rhs.shape)}")
    residual = x @ matrix.mT - rhs
    gram = matrix @ matrix.mT
    multipliers = torch.linalg.solve(gram, residual.unsqueeze(-1)).squeeze(-1)
    return x - multipliers @ matrix
