r"""Channel-permutation smoothing for Neural Metamorphosis: shortest Hamiltonian paths over hidden channels.

Permuting the hidden channels of a network (the rows of one layer together with the columns of the next) leaves its
function unchanged. NeuMeta picks, for every hidden layer, the order that makes neighbouring channels as alike as
possible, so that the weights become a smooth function of the channel index and an implicit neural representation
can fit them. Each channel is a *city* whose vector concatenates every parameter slice coupled to that channel
(incoming weight rows, bias, BatchNorm affine parameters, outgoing weight columns); the distance between two cities is
the :math:`\ell_1` distance of their vectors, and the order is the shortest Hamiltonian path (SHP) through the cities:

.. math::

    \pi^\star = \arg\min_{\pi \in S_n} \sum_{j=1}^{n-1} \lVert c_{\pi(j+1)} - c_{\pi(j)} \rVert_1 .

Because the :math:`\ell_1` difference of two rows does not depend on the order of the columns, the total variation of
the network along its permuted axes splits into one such path length per hidden layer, and the layers can be solved
independently. Small layers are solved exactly (Held-Karp dynamic programming); large ones by nearest-neighbour
construction followed by 2-opt, keeping whichever of that and the identity order is shorter, so the total variation
never increases.

Supported networks: an :class:`torch.nn.Sequential` (nested Sequentials are flattened) made of

* weighted layers :class:`~torch.nn.Linear` and :class:`~torch.nn.Conv2d` (``groups=1``), with or without bias;
* per-channel layers :class:`~torch.nn.BatchNorm1d` / :class:`~torch.nn.BatchNorm2d`;
* element-wise activations and dropout (ReLU, ReLU6, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Tanh, Sigmoid,
  Softplus, Hardtanh, Hardswish, Hardsigmoid, Identity, Dropout, Dropout1d/2d);
* per-channel pooling (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d) and :class:`~torch.nn.Flatten`
  between the last convolution and the first linear layer (each channel then owns a contiguous block of the linear
  layer's input features).

Anything else (residual blocks, grouped convolutions, attention, ...) raises :class:`~sciml_protocols.SciMLInputError`.

Reference: Xingyi Yang and Xinchao Wang, "Neural Metamorphosis", ECCV 2024, arXiv:2410.11878.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from sciml_protocols import SciMLInputError
from torch import Tensor, nn

__all__ = [
    "apply_permutations",
    "channel_cities",
    "compute_permutations",
    "held_karp_path",
    "nearest_neighbor_path",
    "network_total_variation",
    "path_length",
    "permute_network",
    "shortest_hamiltonian_path",
    "two_opt_path",
]

_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)
_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_EXACT_LIMIT = 20  # Held-Karp needs 2^n * n floats: 20 cities is already 160 MB.


# ----------------------------------------------------------------------------------------------------------------
# Shortest Hamiltonian path solvers
# ----------------------------------------------------------------------------------------------------------------


def _check_distances(distances: object) -> Tensor:
    if not isinstance(distances, Tensor):
        raise SciMLInputError("distances", f"must be a torch.Tensor, got {type(distances).__name__}")
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise SciMLInputError("distances", f"must be a square (n, n) matrix, got shape {tuple(distances.shape)}")
    if distances.shape[0] == 0:
        raise SciMLInputError("distances", "must hold at least one city, got an empty matrix")
    if not (distances.is_floating_point() or distances.dtype in (torch.int32, torch.int64)):
        raise SciMLInputError("distances", f"must be a real floating or integer tensor, got {distances.dtype}")
    d = distances.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(d).all()):
        raise SciMLInputError("distances", "must be finite (no NaN or inf)")
    return d


def path_length(distances: Tensor, order: Tensor) -> Tensor:
    r"""Length of the open path that visits the cities in ``order``.

    .. math:: L(\pi) = \sum_{j=1}^{n-1} D_{\pi(j), \pi(j+1)}

    Args:
        distances: (n, n) distance matrix.
        order: (n,) int64 permutation of ``0..n-1``.

    Returns:
        0-d tensor in the dtype of ``distances``.

    Raises:
        SciMLInputError: if ``distances`` is not square or ``order`` is not a permutation.

    Example:
        >>> d = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 2.0], [5.0, 2.0, 0.0]])
        >>> path_length(d, torch.tensor([0, 1, 2])).item(), path_length(d, torch.tensor([1, 0, 2])).item()
        (3.0, 6.0)
    """
    _check_distances(distances)
    _check_order(order, distances.shape[0])
    order = order.to(distances.device)
    return distances[order[:-1], order[1:]].sum()


def _check_order(order: object, n: int) -> None:
    if not isinstance(order, Tensor) or order.dtype != torch.int64 or order.ndim != 1:
        raise SciMLInputError("order", "must be a 1-D int64 tensor")
    if order.numel() != n or not bool((torch.sort(order.cpu()).values == torch.arange(n)).all()):
        raise SciMLInputError("order", f"must be a permutation of 0..{n - 1}")


def _canonical(order: Tensor, d: Tensor) -> Tensor:
    # Under a symmetric matrix a path and its reversal have the same length; report the one that starts at the
    # smaller end index.
    if torch.equal(d, d.T) and int(order[0]) > int(order[-1]):
        return order.flip(0)
    return order


def held_karp_path(distances: Tensor) -> Tensor:
    r"""Exact shortest Hamiltonian path (free start and end) by Held-Karp dynamic programming.

    With :math:`g(S, j)` the length of the shortest path that visits exactly the set :math:`S` and ends at
    :math:`j \in S`,

    .. math::

        g(\{j\}, j) = 0, \qquad g(S, j) = \min_{i \in S \setminus \{j\}} g(S \setminus \{j\}, i) + D_{ij},

    and the optimum is :math:`\min_j g(\{0..n-1\}, j)`. Time :math:`O(2^n n^2)` (vectorised over subsets of equal
    size), memory :math:`O(2^n n)`; meant for ``n <= ~16``.

    Args:
        distances: (n, n) distance matrix (need not be symmetric), ``1 <= n <= 20``.

    Returns:
        (n,) int64 tensor on the CPU: the visiting order (for a symmetric matrix, of the two directions of the
        optimal path the one whose first city has the smaller index).

    Raises:
        SciMLInputError: if the matrix is not square, is empty, holds NaN/inf, or ``n > 20``.

    Example:
        >>> pts = torch.tensor([0.0, 3.0, 1.0, 2.0])
        >>> held_karp_path((pts[:, None] - pts[None, :]).abs()).tolist()
        [0, 2, 3, 1]
    """
    d = _check_distances(distances)
    n = d.shape[0]
    if n > _EXACT_LIMIT:
        raise SciMLInputError("distances", f"Held-Karp is limited to n <= {_EXACT_LIMIT} cities, got {n}")
    if n == 1:
        return torch.zeros(1, dtype=torch.int64)
    full = 1 << n
    best = torch.full((full, n), float("inf"), dtype=torch.float64)
    parent = torch.full((full, n), -1, dtype=torch.int64)
    cities = torch.arange(n)
    best[1 << cities, cities] = 0.0
    masks = torch.arange(full)
    bits = (masks[:, None] >> cities[None, :]) & 1
    size = bits.sum(1)
    for subset_size in range(2, n + 1):
        level = masks[size == subset_size]
        level_bits = bits[level]
        for j in range(n):
            chosen = level[level_bits[:, j] == 1]
            previous = chosen ^ (1 << j)
            # best[previous, i] is inf for i outside `previous` (and for i == j), so the min only sees valid i.
            value, argmin = (best[previous] + d[:, j][None, :]).min(dim=1)
            best[chosen, j] = value
            parent[chosen, j] = argmin
    mask = full - 1
    last = int(best[mask].argmin())
    order: list[int] = []
    while last >= 0:
        order.append(last)
        previous_city = int(parent[mask, last])
        mask ^= 1 << last
        last = previous_city
    order.reverse()
    return _canonical(torch.tensor(order, dtype=torch.int64), d)


def nearest_neighbor_path(distances: Tensor, *, start: int = 0) -> Tensor:
    r"""Greedy path: start at ``start`` and repeatedly move to the nearest unvisited city.

    Args:
        distances: (n, n) distance matrix.
        start: index of the first city, ``0 <= start < n``.

    Returns:
        (n,) int64 tensor on the CPU: the visiting order.

    Raises:
        SciMLInputError: on a bad matrix or ``start`` out of range.

    Example:
        >>> pts = torch.tensor([0.0, 3.0, 1.0, 2.0])
        >>> nearest_neighbor_path((pts[:, None] - pts[None, :]).abs()).tolist()
        [0, 2, 3, 1]
    """
    d = _check_distances(distances)
    n = d.shape[0]
    if not isinstance(start, int) or not 0 <= start < n:
        raise SciMLInputError("start", f"must be an int in [0, {n}), got {start!r}")
    visited = torch.zeros(n, dtype=torch.bool)
    order = [start]
    visited[start] = True
    current = start
    for _ in range(n - 1):
        row = d[current].masked_fill(visited, float("inf"))
        current = int(row.argmin())
        visited[current] = True
        order.append(current)
    return torch.tensor(order, dtype=torch.int64)


def two_opt_path(distances: Tensor, *, init: Tensor | None = None, max_iter: int | None = None) -> Tensor:
    r"""Improve an open path by 2-opt moves (segment reversals) until no move shortens it.

    Reversing the segment :math:`\pi(a..b)` replaces the edges :math:`(\pi(a-1), \pi(a))` and
    :math:`(\pi(b), \pi(b+1))` by :math:`(\pi(a-1), \pi(b))` and :math:`(\pi(a), \pi(b+1))`; a missing end edge (when
    the segment touches an end of the path) costs nothing, which is how an open path differs from a tour. Every
    iteration evaluates all :math:`O(n^2)` moves at once and applies the best one, so the length never increases.
    Assumes a symmetric matrix (as :math:`\ell_1` distances are).

    Args:
        distances: (n, n) symmetric distance matrix.
        init: (n,) int64 starting order; default: the identity order.
        max_iter: cap on the number of moves; default ``100 * n``.

    Returns:
        (n,) int64 tensor on the CPU: a 2-optimal order no longer than ``init``.

    Raises:
        SciMLInputError: on a bad matrix, a bad ``init`` or a non-positive ``max_iter``.

    Example:
        >>> pts = torch.tensor([0.0, 3.0, 1.0, 2.0])
        >>> d = (pts[:, None] - pts[None, :]).abs()
        >>> order = two_opt_path(d)
        >>> path_length(d, order).item()
        3.0
    """
    d = _check_distances(distances)
    n = d.shape[0]
    if init is None:
        path = torch.arange(n)
    else:
        _check_order(init, n)
        path = init.detach().cpu().clone()
    if max_iter is None:
        max_iter = 100 * n
    if not isinstance(max_iter, int) or max_iter < 1:
        raise SciMLInputError("max_iter", f"must be a positive int, got {max_iter!r}")
    if n < 3:
        return path
    # A dummy city at both ends, at distance zero from everything, turns the open path into a closed problem where
    # every reversal has two (possibly free) boundary edges.
    padded = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    padded[:n, :n] = d
    a_idx = torch.arange(1, n + 1)[:, None]
    b_idx = torch.arange(1, n + 1)[None, :]
    valid = b_idx > a_idx
    scale = float(d.abs().max()) if n > 0 else 0.0
    tolerance = 1e-12 * max(scale, 1.0) * n
    for _ in range(max_iter):
        q = torch.cat([torch.tensor([n]), path, torch.tensor([n])])
        m = padded[q][:, q]
        gain = m[a_idx - 1, b_idx] + m[a_idx, b_idx + 1] - m[a_idx - 1, a_idx] - m[b_idx, b_idx + 1]
        gain = gain.masked_fill(~valid, float("inf"))
        flat = int(gain.argmin())
        if float(gain.view(-1)[flat]) >= -tolerance:
            break
        a, b = divmod(flat, n)
        path[a : b + 1] = path[a : b + 1].flip(0)
    return path


def shortest_hamiltonian_path(distances: Tensor, *, method: str = "auto", exact_max: int = 12) -> Tensor:
    r"""Shortest open path through all cities: exact for small ``n``, heuristic for large ``n``.

    ``method="exact"`` runs :func:`held_karp_path`; ``method="heuristic"`` runs :func:`two_opt_path` from the
    nearest-neighbour path (starting at city 0) and from the identity order and keeps the shorter, so the result is
    never longer than the identity order; ``method="auto"`` is exact when ``n <= exact_max``.

    Args:
        distances: (n, n) symmetric distance matrix.
        method: ``"auto"``, ``"exact"`` or ``"heuristic"``.
        exact_max: largest ``n`` solved exactly under ``"auto"`` (at most 20).

    Returns:
        (n,) int64 tensor on the CPU: the visiting order.

    Raises:
        SciMLInputError: on a bad matrix, unknown ``method`` or ``exact_max`` out of ``[1, 20]``.

    Example:
        >>> pts = torch.tensor([5.0, 0.0, 4.0, 1.0])
        >>> d = (pts[:, None] - pts[None, :]).abs()
        >>> path_length(d, shortest_hamiltonian_path(d)).item()
        5.0
    """
    if method not in ("auto", "exact", "heuristic"):
        raise SciMLInputError("method", f"must be 'auto', 'exact' or 'heuristic', got {method!r}")
    if not isinstance(exact_max, int) or not 1 <= exact_max <= _EXACT_LIMIT:
        raise SciMLInputError("exact_max", f"must be an int in [1, {_EXACT_LIMIT}], got {exact_max!r}")
    d = _check_distances(distances)
    n = d.shape[0]
    if method == "exact" or (method == "auto" and n <= exact_max):
        return held_karp_path(d)
    candidates = [two_opt_path(d, init=nearest_neighbor_path(d)), two_opt_path(d)]
    lengths = [float(d[c[:-1], c[1:]].sum()) for c in candidates]
    return _canonical(candidates[0] if lengths[0] <= lengths[1] else candidates[1], d)


# ----------------------------------------------------------------------------------------------------------------
# Network structure: hidden channel groups of a Sequential
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _ChannelGroup:
    """One hidden layer: its producer, the per-channel layers after it and the consumer that reads it."""

    producer: nn.Linear | nn.Conv2d
    consumer: nn.Linear | nn.Conv2d
    channels: int
    block: int  # consumer input features per channel (H*W after a Flatten, else 1)
    norms: list[nn.BatchNorm1d | nn.BatchNorm2d] = field(default_factory=list)


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for child in module:
            out.extend(_leaves(child))
        return out
    return [module]


def _out_channels(layer: nn.Linear | nn.Conv2d) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _in_channels(layer: nn.Linear | nn.Conv2d) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _channel_groups(model: nn.Module) -> list[_ChannelGroup]:
    if not isinstance(model, nn.Sequential):
        raise SciMLInputError("model", f"must be an nn.Sequential, got {type(model).__name__}")
    groups: list[_ChannelGroup] = []
    producer: nn.Linear | nn.Conv2d | None = None
    norms: list[nn.BatchNorm1d | nn.BatchNorm2d] = []
    flattened = False
    for position, layer in enumerate(_leaves(model)):
        where = f"layer {position} ({type(layer).__name__})"
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise SciMLInputError("model", f"{where}: grouped convolutions are not supported")
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            if producer is not None:
                channels = _out_channels(producer)
                if isinstance(layer, nn.Conv2d):
                    if isinstance(producer, nn.Linear) or flattened:
                        raise SciMLInputError("model", f"{where}: a convolution after a linear layer is not supported")
                    block = 1
                elif isinstance(producer, nn.Conv2d):
                    if not flattened:
                        raise SciMLInputError("model", f"{where}: a linear layer after a convolution needs nn.Flatten")
                    if layer.in_features % channels != 0:
                        raise SciMLInputError(
                            "model",
                            f"{where}: in_features={layer.in_features} is not a multiple of the "
                            f"{channels} channels before the Flatten",
                        )
                    block = layer.in_features // channels
                else:
                    block = 1
                if _in_channels(layer) != channels * block:
                    raise SciMLInputError(
                        "model", f"{where}: expects {_in_channels(layer)} inputs, previous layer gives {channels}"
                    )
                groups.append(_ChannelGroup(producer, layer, channels, block, norms))
            producer, norms, flattened = layer, [], False
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if producer is not None:
                if layer.num_features != _out_channels(producer):
                    raise SciMLInputError(
                        "model", f"{where}: num_features={layer.num_features} != {_out_channels(producer)} channels"
                    )
                norms.append(layer)
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise SciMLInputError("model", f"{where}: only nn.Flatten(start_dim=1, end_dim=-1) is supported")
            flattened = True
        elif not isinstance(layer, _ELEMENTWISE + _POOLS):
            raise SciMLInputError(
                "model",
                f"{where} is not supported; expected Linear, Conv2d, BatchNorm1d/2d, Flatten, pooling or an "
                "element-wise activation",
            )
    return groups


def _consumer_slices(group: _ChannelGroup) -> Tensor:
    weight = group.consumer.weight.detach()
    out = weight.shape[0]
    if isinstance(group.consumer, nn.Linear):
        return weight.reshape(out, group.channels, group.block).permute(1, 0, 2).reshape(group.channels, -1)
    return weight.transpose(0, 1).reshape(group.channels, -1)


def _group_cities(group: _ChannelGroup) -> Tensor:
    parts = [group.producer.weight.detach().reshape(group.channels, -1)]
    if group.producer.bias is not None:
        parts.append(group.producer.bias.detach()[:, None])
    for norm in group.norms:
        if norm.weight is not None:
            parts.append(norm.weight.detach()[:, None])
        if norm.bias is not None:
            parts.append(norm.bias.detach()[:, None])
    parts.append(_consumer_slices(group))
    return torch.cat(parts, dim=1)


def channel_cities(model: nn.Module) -> list[Tensor]:
    r"""The city matrix of every hidden layer: one row per channel, every coupled parameter slice concatenated.

    Row :math:`c` of hidden layer :math:`l` is
    :math:`[W_l[c, :],\ b_l[c],\ \gamma_l[c],\ \beta_l[c],\ W_{l+1}[:, c]]` (flattened; BatchNorm affine
    parameters only where present; after a Flatten, :math:`W_{l+1}[:, c]` is the block of columns fed by channel
    :math:`c`).

    Args:
        model: a supported :class:`~torch.nn.Sequential` (see the module docstring).

    Returns:
        One (channels, features) tensor per hidden layer, in network order.

    Raises:
        SciMLInputError: if the model's structure is not supported.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> [tuple(c.shape) for c in channel_cities(net)]
        [(4, 6)]
    """
    return [_group_cities(group) for group in _channel_groups(model)]


def network_total_variation(model: nn.Module) -> Tensor:
    r"""Total variation of a network's weights along its permutable (hidden-channel) axes.

    .. math::

        \mathrm{TV} = \sum_{l} \sum_{c=1}^{n_l - 1} \lVert C_l[c+1] - C_l[c] \rVert_1,

    with :math:`C_l` the city matrix of hidden layer :math:`l` (:func:`channel_cities`), i.e. the sum of
    :math:`|W[i+1] - W[i]|` over the output axis of each producer, its bias and BatchNorm parameters, and over the
    input axis of each consumer. Axes that no permutation touches (network input and output) are left out: they are
    unchanged by any hidden-channel permutation.

    Args:
        model: a supported :class:`~torch.nn.Sequential`.

    Returns:
        0-d tensor (0 when the network has no hidden layer).

    Raises:
        SciMLInputError: if the model's structure is not supported.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[0.0], [2.0], [1.0]]))
        ...     _ = net[2].weight.zero_()
        >>> network_total_variation(net).item()
        3.0
    """
    total = torch.zeros(())
    for cities in channel_cities(model):
        total = total.to(cities.dtype) + (cities[1:] - cities[:-1]).abs().sum()
    return total


def compute_permutations(model: nn.Module, *, method: str = "auto", exact_max: int = 12) -> list[Tensor]:
    r"""The smoothing permutation of every hidden layer: the SHP through its channel cities under :math:`\ell_1`.

    Args:
        model: a supported :class:`~torch.nn.Sequential`.
        method: SHP solver, see :func:`shortest_hamiltonian_path`.
        exact_max: largest layer solved exactly under ``method="auto"``.

    Returns:
        One (channels,) int64 tensor per hidden layer; new channel :math:`j` is old channel ``perm[j]``.

    Raises:
        SciMLInputError: on an unsupported model or bad solver options.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[0.0], [2.0], [1.0]]))
        ...     _ = net[2].weight.zero_()
        >>> [p.tolist() for p in compute_permutations(net)]
        [[0, 2, 1]]
    """
    out = []
    for cities in channel_cities(model):
        distances = torch.cdist(cities.double()[None], cities.double()[None], p=1.0)[0]
        out.append(shortest_hamiltonian_path(distances, method=method, exact_max=exact_max))
    return out


def apply_permutations(model: nn.Module, permutations: list[Tensor], *, inplace: bool = False) -> nn.Module:
    r"""Reorder the hidden channels of ``model``; the function it computes is unchanged.

    For hidden layer :math:`l` with permutation :math:`\pi`:
    :math:`W_l \leftarrow W_l[\pi]`, :math:`b_l \leftarrow b_l[\pi]`, BatchNorm weight, bias, running mean and
    running variance :math:`\leftarrow [\pi]`, and :math:`W_{l+1} \leftarrow W_{l+1}[:, \pi]` (block-wise after a
    Flatten).

    Args:
        model: a supported :class:`~torch.nn.Sequential`.
        permutations: one (channels,) int64 permutation per hidden layer, as from :func:`compute_permutations`.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The permuted model (``model`` itself when ``inplace``).

    Raises:
        SciMLInputError: on an unsupported model, a wrong number of permutations or an invalid permutation.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
        >>> x = torch.randn(4, 3)
        >>> perms = [torch.tensor([4, 2, 0, 1, 3])]
        >>> torch.allclose(apply_permutations(net, perms)(x), net(x), atol=1e-6)
        True
    """
    target = model if inplace else copy.deepcopy(model)
    groups = _channel_groups(target)
    if not isinstance(permutations, (list, tuple)) or len(permutations) != len(groups):
        raise SciMLInputError("permutations", f"must be a list of {len(groups)} permutations (one per hidden layer)")
    for index, (group, perm) in enumerate(zip(groups, permutations, strict=True)):
        try:
            _check_order(perm, group.channels)
        except SciMLInputError as err:
            raise SciMLInputError(f"permutations[{index}]", err.problem) from None
        with torch.no_grad():
            p = perm.to(group.producer.weight.device)
            group.producer.weight.copy_(group.producer.weight[p])
            if group.producer.bias is not None:
                group.producer.bias.copy_(group.producer.bias[p])
            for norm in group.norms:
                for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                    if tensor is not None:
                        tensor.copy_(tensor[p])
            columns = (p[:, None] * group.block + torch.arange(group.block, device=p.device)[None, :]).reshape(-1)
            group.consumer.weight.copy_(group.consumer.weight[:, columns])
    return target


def permute_network(model: nn.Module, *, method: str = "auto", exact_max: int = 12, inplace: bool = False) -> nn.Module:
    r"""NeuMeta's intra-model smoothing: reorder every hidden layer along its shortest Hamiltonian path.

    Composes :func:`compute_permutations` and :func:`apply_permutations`. The returned network computes the same
    function, and its :func:`network_total_variation` is never larger (each layer's path is no longer than the
    identity order, and the total variation is the sum of the per-layer path lengths).

    Args:
        model: a supported :class:`~torch.nn.Sequential` (see the module docstring).
        method: SHP solver: ``"auto"``, ``"exact"`` or ``"heuristic"``.
        exact_max: largest layer solved exactly under ``"auto"``.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The permuted network.

    Raises:
        SciMLInputError: on an unsupported model or bad solver options.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> smooth = permute_network(net)
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(smooth(x), net(x), atol=1e-6)
        True
        >>> bool(network_total_variation(smooth) < network_total_variation(net))
        True
    """
    permutations = compute_permutations(model, method=method, exact_max=exact_max)
    return apply_permutations(model, permutations, inplace=inplace)
