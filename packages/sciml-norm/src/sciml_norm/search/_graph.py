"""Normalization-activation layers as computation graphs, their module form, random graphs and mutation.

Reference: Hanxiao Liu, Andrew Brock, Karen Simonyan, Quoc V. Le, "Evolving Normalization-Activation Layers",
NeurIPS 2020 (arXiv:2004.02967), Section 3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from sciml_protocols import SciMLInputError, check_int
from torch import nn

from ._primitives import INFIX_OPS, OPS, _variance, aggregate

__all__ = [
    "APPEND_PROBABILITIES",
    "INITIAL_NODES",
    "INPUT_PROBABILITIES",
    "OP_WEIGHTS",
    "GraphLayer",
    "LayerGraph",
    "Node",
    "known_layers",
    "center_input",
    "mutate",
    "random_graph",
]

#: Names of the four initial nodes, in index order: the input, a constant zero and two per-channel vectors.
INITIAL_NODES: tuple[str, ...] = ("x", "0", "v0", "v1")
_FORMAT_VERSION = 1

#: Default relative sampling weights of the primitives in :func:`random_graph` and :func:`mutate`. Division,
#: multiplication, max and the ``std`` aggregations (the ingredients of every normalizer) are favored; the
#: saturating or exploding functions are rare. The batch statistics (over ``(N, H, W)``) weigh more than the other
#: three axis families: on the small proxy, instance and group statistics are found first and crowd out the
#: batch-statistic layers that train best. In total 53% of the mass is on aggregations (22% on batch statistics,
#: 32% on ``std``), 16% on ``div``.
OP_WEIGHTS: dict[str, float] = {
    "add": 2.0,
    "mul": 2.0,
    "div": 6.0,
    "max": 3.0,
    "neg": 1.5,
    "sigmoid": 1.0,
    "tanh": 0.5,
    "exp": 0.25,
    "signed_log": 0.25,
    "abs": 0.5,
    "square": 0.5,
    "signed_sqrt": 0.5,
    **{f"std_{axes}": 2.5 for axes in ("batch", "layer", "instance", "group")},
    **{f"mean_{axes}": 1.0 for axes in ("batch", "layer", "instance", "group")},
    **{f"second_moment_{axes}": 0.5 for axes in ("batch", "layer", "instance", "group")},
    "std_batch": 5.0,
    "mean_batch": 2.0,
    "second_moment_batch": 1.5,
}

#: How a node's operand is drawn among the earlier nodes (:func:`random_graph`, and the new operands of
#: :func:`mutate`): the previous node (so graphs tend to be chains that transform ``x`` step by step), the input
#: ``x``, one of the constants ``0, v0, v1`` (uniformly), or any earlier node (uniformly).
INPUT_PROBABILITIES: dict[str, float] = {"previous": 0.5, "x": 0.3, "constant": 0.1, "any": 0.1}


@dataclasses.dataclass(frozen=True)
class Node:
    """An intermediate node: a primitive applied to earlier nodes.

    Attributes:
        op: a primitive's name (a key of :data:`sciml_norm.search.OPS`).
        inputs: indices of the operands; 0-3 are the initial nodes ``x, 0, v0, v1``, ``4 + i`` is intermediate
            node ``i``. Every index is smaller than the node's own index, so the graph is a DAG.

    Example:
        >>> Node("add", (0, 3))
        Node(op='add', inputs=(0, 3))
    """

    op: str
    inputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LayerGraph:
    r"""A normalization-activation layer as a DAG over the primitives of Liu et al. (2020).

    Node ``4 + i`` applies ``nodes[i].op`` to earlier nodes; the last node is the layer's output ``z`` and every
    layer ends with a per-channel affine map :math:`y = \gamma \odot z + \beta`. The initial nodes are the input
    :math:`x \in \mathbb{R}^{N \times C \times H \times W}`, the constant 0 and trainable per-channel vectors
    :math:`v_0` (initialized to 0) and :math:`v_1` (initialized to 1). Batch aggregations keep running estimates
    (momentum ``momentum``) used in evaluation mode, like batch normalization.

    Attributes:
        nodes: the intermediate nodes, in topological order.
        groups: number of channel groups of the ``*_group`` aggregations.
        eps: added to variances by the ``std_*`` aggregations.
        momentum: running-statistics momentum of the batch aggregations.

    Raises:
        SciMLInputError: unknown op, wrong number of inputs, an input that is not an earlier node, no nodes,
            non-positive ``groups`` or ``eps``, ``momentum`` outside ``[0, 1]``.

    Example:
        >>> graph = LayerGraph.evonorm_s0(groups=2)
        >>> print(graph)
        (x·sigmoid(x·v1)) / std_ghw(x)
        >>> layer = graph.to_module(4)
        >>> layer(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])

    References:
        Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020, arXiv:2004.02967.
    """

    nodes: tuple[Node, ...]
    groups: int = 4
    eps: float = 1e-5
    momentum: float = 0.1

    def __post_init__(self) -> None:
        nodes = tuple(
            n if isinstance(n, Node) else Node(str(n[0]), tuple(int(i) for i in n[1]))  # type: ignore[index]
            for n in self.nodes
        )
        object.__setattr__(self, "nodes", nodes)
        if not nodes:
            raise SciMLInputError("nodes", "a graph needs at least one intermediate node")
        for position, node in enumerate(nodes):
            own = len(INITIAL_NODES) + position
            if node.op not in OPS:
                raise SciMLInputError("nodes", f"node {own} has unknown op {node.op!r}; known: {sorted(OPS)}")
            if len(node.inputs) != OPS[node.op].arity:
                raise SciMLInputError(
                    "nodes", f"node {own} ({node.op}) needs {OPS[node.op].arity} inputs, got {len(node.inputs)}"
                )
            for i in node.inputs:
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < own:
                    raise SciMLInputError("nodes", f"node {own} has input {i!r}; inputs must be in [0, {own})")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise SciMLInputError("groups", f"must be a positive integer, got {self.groups!r}")
        if not (isinstance(self.eps, int | float) and self.eps > 0):
            raise SciMLInputError("eps", f"must be a positive number, got {self.eps!r}")
        if not (isinstance(self.momentum, int | float) and 0.0 <= self.momentum <= 1.0):
            raise SciMLInputError("momentum", f"must be in [0, 1], got {self.momentum!r}")

    # ----------------------------------------------------------------- structure
    @property
    def output(self) -> int:
        """Index of the output node (the last one)."""
        return len(INITIAL_NODES) + len(self.nodes) - 1

    def node(self, index: int) -> Node:
        """The intermediate node with graph index ``index`` (``>= 4``)."""
        return self.nodes[index - len(INITIAL_NODES)]

    def live(self) -> frozenset[int]:
        """Indices (initial and intermediate) that the output depends on, the output included."""
        seen: set[int] = set()
        stack = [self.output]
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            if index >= len(INITIAL_NODES):
                stack.extend(self.node(index).inputs)
        return frozenset(seen)

    def depends_on_input(self) -> bool:
        """Whether the output is a function of ``x`` (a graph that ignores its input cannot normalize it)."""
        return 0 in self.live()

    def is_pointwise_in_input(self) -> bool:
        """Whether a chain of element-wise operations links ``x`` to the output.

        Aggregations reduce over the spatial axes, so a graph whose every path from ``x`` crosses one outputs
        per-channel constants and discards the feature map: such graphs cannot work as a layer and are never
        generated by :func:`random_graph` or :func:`mutate`.
        """
        pointwise = {0}
        for position, node in enumerate(self.nodes):
            if OPS[node.op].kind == "elementwise" and any(i in pointwise for i in node.inputs):
                pointwise.add(len(INITIAL_NODES) + position)
        return self.output in pointwise

    def normalizes_input(self) -> bool:
        """Whether the output depends on a statistic (an aggregation) of a node that depends on ``x``.

        Graphs without one are pure activation functions (such as ReLU) or use statistics of the constants only
        (per-channel constants); :func:`random_graph` can be asked for normalizing graphs only.

        Example:
            >>> LayerGraph.relu().normalizes_input(), LayerGraph.evonorm_s0().normalizes_input()
            (False, True)
        """
        dependent = {0}
        for position, node in enumerate(self.nodes):
            if any(i in dependent for i in node.inputs):
                dependent.add(len(INITIAL_NODES) + position)
        live = self.live()
        return any(
            OPS[self.node(i).op].kind == "aggregation" and self.node(i).inputs[0] in dependent
            for i in live
            if i >= len(INITIAL_NODES)
        )

    def activates_input(self) -> bool:
        """Whether the output is a non-linear function of ``x`` when the statistics are held fixed.

        Statistics (aggregations) count as constants; a live element-wise node is non-linear in ``x`` when it
        applies ``max``, ``sigmoid``, ``tanh``, ``exp``, ``slog``, ``abs``, square or ``ssqrt`` to a node that
        depends on ``x`` element-wise, multiplies two such nodes, or divides by one. A graph without one (such as
        ``x / std_bhw(x)``) makes the network linear between its batch statistics, and it trains to chance.

        Example:
            >>> scaled = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4))))  # x / std_bhw(x)
            >>> LayerGraph.relu().activates_input(), scaled.activates_input()
            (True, False)
        """
        pointwise = {0}
        for position, node in enumerate(self.nodes):
            if OPS[node.op].kind == "elementwise" and any(i in pointwise for i in node.inputs):
                pointwise.add(len(INITIAL_NODES) + position)
        # the nodes linked to the output by element-wise operations only (not through a statistic)
        on_path: set[int] = set()
        stack = [self.output]
        while stack:
            index = stack.pop()
            if index in on_path or index < len(INITIAL_NODES) or OPS[self.node(index).op].kind != "elementwise":
                continue
            on_path.add(index)
            stack.extend(self.node(index).inputs)
        nonlinear = False
        for index in sorted(on_path & pointwise):
            node = self.node(index)
            hits = [i in pointwise for i in node.inputs]
            if (
                (node.op not in ("add", "neg", "mul", "div"))
                or (node.op == "mul" and all(hits))
                or (node.op == "div" and hits[1])
            ):
                nonlinear = True
        return nonlinear

    def uses_groups(self) -> bool:
        """Whether a live node aggregates over channel groups."""
        return any(OPS[self.node(i).op].axes == "group" for i in self.live() if i >= len(INITIAL_NODES))

    def pruned(self) -> LayerGraph:
        """The same function with the dead nodes removed and the rest renumbered (a canonical key for caching).

        Example:
            >>> g = LayerGraph((Node("tanh", (0,)), Node("abs", (0,))))
            >>> g.pruned().nodes
            (Node(op='abs', inputs=(0,)),)
        """
        live = sorted(i for i in self.live() if i >= len(INITIAL_NODES))
        renumber = {i: i for i in range(len(INITIAL_NODES))}
        nodes = []
        for new, old in enumerate(live):
            renumber[old] = len(INITIAL_NODES) + new
            node = self.node(old)
            nodes.append(Node(node.op, tuple(renumber[i] for i in node.inputs)))
        return dataclasses.replace(self, nodes=tuple(nodes))

    def fingerprint(self, *, digits: int = 5) -> str:
        r"""A key equal for graphs that compute the same function (with high probability), for de-duplication.

        The layer (training mode, so batch statistics are live) is evaluated in float64 on a fixed pseudo-random
        probe input :math:`x \in \mathbb{R}^{4 \times 8 \times 5 \times 5}` with fixed pseudo-random ``v0``, ``v1``
        (so ``x`` and ``x·v1``, or ``x`` and ``x + v0``, differ), and the outputs, rounded to ``digits`` significant
        digits, are hashed. Graphs that differ only in dead nodes, in the order of commutative operands or in
        algebraically equal rewrites (``x - (-y)`` and ``x + y``) get the same key; different functions collide
        only if they agree on every probe entry. Graphs with group aggregations are probed with their own
        ``groups`` when it divides 8, else with one group.

        Args:
            digits: significant digits kept before hashing.

        Returns:
            A hexadecimal digest.

        Example:
            >>> a = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4))))
            >>> b = LayerGraph((Node("neg", (0,)), Node("std_batch", (0,)), Node("div", (4, 5)), Node("neg", (6,))))
            >>> a.fingerprint() == b.fingerprint(), a.fingerprint() == LayerGraph.relu().fingerprint()
            (True, False)
        """
        import hashlib

        graph = self if not self.uses_groups() or 8 % self.groups == 0 else dataclasses.replace(self, groups=1)
        generator = torch.Generator().manual_seed(20200406)
        probe = torch.randn(4, 8, 5, 5, generator=generator, dtype=torch.float64) * 1.5 + 0.3
        layer = graph.to_module(8, dtype=torch.float64)
        with torch.no_grad():
            layer.v0.copy_(torch.randn(8, generator=generator, dtype=torch.float64))
            layer.v1.copy_(torch.rand(8, generator=generator, dtype=torch.float64) + 0.5)
            out = layer(probe).flatten().tolist()
        text = ",".join(f"{value + 0.0:.{digits - 1}e}" if math.isfinite(value) else str(value) for value in out)
        return hashlib.sha1(text.encode()).hexdigest()

    def is_normalizer(self, *, factor: float = 3.0, rtol: float = 1e-3, peak: float = 20.0) -> bool:
        r"""Whether the graph is a scale-invariant normalization-activation layer on a probe.

        True when it :meth:`normalizes_input`, :meth:`activates_input`, and, in training mode on the fixed probe of
        :meth:`fingerprint` (with its pseudo-random ``v0``, ``v1``), its output is finite, not constant, without
        spikes (largest magnitude at most ``peak`` times the root mean square: this rules out singular layers such
        as ``std_hw(x) / x``, which diverge at once in training), and unchanged when the input is multiplied by
        ``factor``: :math:`\|f(a x) - f(x)\|_\infty \le
        \mathrm{rtol}\,\|f(x)\|_\infty`. Scale invariance is what normalizing buys (the next convolution's
        weight scale no longer matters); BN-ReLU, GN-ReLU, EvoNorm-B0 and ``max(x / std_bhw(x), 0)`` have it,
        ReLU and EvoNorm-S0 (whose ``sigmoid(v1 x)`` sees the scale) do not.

        Args:
            factor: the input scale tried.
            rtol: tolerance relative to the largest output.
            peak: largest allowed ratio of the output's maximum magnitude to its root mean square.

        Returns:
            Whether the graph passes.

        Example:
            >>> LayerGraph.bn_relu().is_normalizer(), LayerGraph.relu().is_normalizer()
            (True, False)
        """
        if not (self.normalizes_input() and self.activates_input()):
            return False
        graph = self if not self.uses_groups() or 8 % self.groups == 0 else dataclasses.replace(self, groups=1)
        generator = torch.Generator().manual_seed(20200406)
        probe = torch.randn(4, 8, 5, 5, generator=generator, dtype=torch.float64) * 1.5 + 0.3
        layer = graph.to_module(8, dtype=torch.float64)
        with torch.no_grad():
            layer.v0.copy_(torch.randn(8, generator=generator, dtype=torch.float64))
            layer.v1.copy_(torch.rand(8, generator=generator, dtype=torch.float64) + 0.5)
            out = layer(probe)
            scaled = layer(probe * factor)
        if not (torch.isfinite(out).all() and torch.isfinite(scaled).all()):
            return False
        size = float(out.abs().max())
        if size == 0.0 or float(out.std()) <= 1e-6 * size or size > peak * float(out.square().mean().sqrt()):
            return False
        return float((scaled - out).abs().max()) <= rtol * size

    # ----------------------------------------------------------------- printing
    def formula(self) -> str:
        """The output as a formula over ``x, 0, v0, v1`` (shared sub-expressions are written out each time).

        Every operand of ``+``, ``·``, ``/`` and unary ``-`` that is itself such an operation is put in parentheses,
        so the grouping is explicit (``(x / s)·s`` and ``x / (s·s)`` print differently); function arguments and the
        whole formula are not.

        Example:
            >>> LayerGraph.bn_relu().formula()
            'max((((x + (-mean_bhw(x))) / std_bhw(x))·v1) + v0, 0)'
        """
        text: dict[int, str] = dict(enumerate(INITIAL_NODES))
        infix: dict[int, bool] = dict.fromkeys(range(len(INITIAL_NODES)), False)
        for index in sorted(self.live()):
            if index < len(INITIAL_NODES):
                continue
            node = self.node(index)
            wrap = node.op in INFIX_OPS
            operands = (f"({text[i]})" if wrap and infix[i] else text[i] for i in node.inputs)
            text[index] = OPS[node.op].symbol.format(*operands)
            infix[index] = wrap
        return text[self.output]

    def __str__(self) -> str:
        return self.formula()

    # ----------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dictionary (see :meth:`from_dict`)."""
        return {
            "format": "sciml_norm.LayerGraph",
            "version": _FORMAT_VERSION,
            "nodes": [{"op": n.op, "inputs": list(n.inputs)} for n in self.nodes],
            "groups": self.groups,
            "eps": self.eps,
            "momentum": self.momentum,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerGraph:
        """Rebuild a graph from :meth:`to_dict`'s output.

        Raises:
            SciMLInputError: not a mapping, a missing key, a malformed node, an unsupported format version.
        """
        if not isinstance(data, Mapping):
            raise SciMLInputError("data", f"must be a mapping, got {type(data).__name__}")
        if data.get("version") != _FORMAT_VERSION:
            raise SciMLInputError("data", f"unsupported format version {data.get('version')!r}")
        try:
            nodes = tuple(Node(str(n["op"]), tuple(n["inputs"])) for n in data["nodes"])
            return cls(nodes, groups=data["groups"], eps=float(data["eps"]), momentum=float(data["momentum"]))
        except (KeyError, TypeError) as error:
            raise SciMLInputError("data", f"malformed graph: {error!r}") from None

    def to_json(self) -> str:
        """The graph as a JSON string.

        Example:
            >>> g = LayerGraph.evonorm_b0()
            >>> LayerGraph.from_json(g.to_json()) == g
            True
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> LayerGraph:
        """Rebuild a graph from :meth:`to_json`'s output.

        Raises:
            SciMLInputError: invalid JSON or a malformed graph.
        """
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise SciMLInputError("text", f"not valid JSON: {error}") from None
        return cls.from_dict(data)

    # ----------------------------------------------------------------- modules
    def to_module(
        self, num_channels: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GraphLayer:
        """The layer as an ``nn.Module`` for ``(N, num_channels, H, W)`` inputs (see :class:`GraphLayer`)."""
        return GraphLayer(self, num_channels, device=device, dtype=dtype)

    # ----------------------------------------------------------------- known layers
    @classmethod
    def bn_relu(cls, *, eps: float = 1e-5, momentum: float = 0.1) -> LayerGraph:
        r"""BatchNorm followed by ReLU: :math:`\max(v_1 (x - \mu_{b,h,w}) / s_{b,h,w} + v_0, 0)`.

        ``v1``/``v0`` play BatchNorm's weight and bias; the final affine map starts as the identity.
        """
        return cls(
            (
                Node("mean_batch", (0,)),  # 4
                Node("neg", (4,)),  # 5
                Node("add", (0, 5)),  # 6
                Node("std_batch", (0,)),  # 7
                Node("div", (6, 7)),  # 8
                Node("mul", (8, 3)),  # 9
                Node("add", (9, 2)),  # 10
                Node("max", (10, 1)),  # 11
            ),
            groups=1,
            eps=eps,
            momentum=momentum,
        )

    @classmethod
    def gn_relu(cls, *, groups: int = 4, eps: float = 1e-5) -> LayerGraph:
        r"""GroupNorm followed by ReLU: :math:`\max(v_1 (x - \mu_{g,h,w}) / s_{g,h,w} + v_0, 0)`."""
        return cls(
            (
                Node("mean_group", (0,)),
                Node("neg", (4,)),
                Node("add", (0, 5)),
                Node("std_group", (0,)),
                Node("div", (6, 7)),
                Node("mul", (8, 3)),
                Node("add", (9, 2)),
                Node("max", (10, 1)),
            ),
            groups=groups,
            eps=eps,
        )

    @classmethod
    def relu(cls) -> LayerGraph:
        r"""ReLU alone (no normalization): :math:`\max(x, 0)`."""
        return cls((Node("max", (0, 1)),), groups=1)

    @classmethod
    def evonorm_s0(cls, *, groups: int = 4, eps: float = 1e-5) -> LayerGraph:
        r"""EvoNorm-S0: :math:`x \sigma(v_1 x) / s_{g,h,w}(x)` (``v1`` is timm's ``v``, initialized to 1)."""
        return cls(
            (
                Node("mul", (0, 3)),
                Node("sigmoid", (4,)),
                Node("mul", (0, 5)),
                Node("std_group", (0,)),
                Node("div", (6, 7)),
            ),
            groups=groups,
            eps=eps,
        )

    @classmethod
    def evonorm_b0(cls, *, eps: float = 1e-3, momentum: float = 0.1) -> LayerGraph:
        r"""EvoNorm-B0: :math:`x / \max(s_{b,h,w}(x), v_1 x + s_{h,w}(x))` (``v1`` is timm's ``v``)."""
        return cls(
            (
                Node("std_batch", (0,)),
                Node("mul", (0, 3)),
                Node("std_instance", (0,)),
                Node("add", (5, 6)),
                Node("max", (4, 7)),
                Node("div", (0, 8)),
            ),
            groups=1,
            eps=eps,
            momentum=momentum,
        )


def known_layers(*, groups: int = 4) -> dict[str, LayerGraph]:
    """The hand-designed and discovered layers the search space contains, by name.

    Example:
        >>> sorted(known_layers())
        ['BN-ReLU', 'EvoNorm-B0', 'EvoNorm-S0', 'GN-ReLU', 'ReLU']
    """
    return {
        "BN-ReLU": LayerGraph.bn_relu(),
        "GN-ReLU": LayerGraph.gn_relu(groups=groups),
        "EvoNorm-S0": LayerGraph.evonorm_s0(groups=groups),
        "EvoNorm-B0": LayerGraph.evonorm_b0(),
        "ReLU": LayerGraph.relu(),
    }


class GraphLayer(nn.Module):
    r"""A :class:`LayerGraph` evaluated as a module: :math:`y = \gamma \odot \mathrm{graph}(x) + \beta`.

    Parameters: ``v0`` (zeros), ``v1`` (ones), ``weight`` (:math:`\gamma`, ones), ``bias`` (:math:`\beta`, zeros), all
    of shape ``(C,)``. Buffers: ``running_<index>`` for each live batch aggregation (a running mean, a running
    variance with Bessel's correction :math:`n/(n-1)` as in BatchNorm, or a running second moment), used in
    evaluation mode.

    Args:
        graph: the layer's graph.
        num_channels: ``C``.
        device: factory keyword for the parameters.
        dtype: factory keyword for the parameters.

    Raises:
        SciMLInputError: ``num_channels`` not a positive integer, or a live group aggregation whose ``groups`` does
            not divide it; in ``forward``, an input that is not a 4-D floating tensor with ``C`` channels.

    Example:
        >>> layer = LayerGraph.relu().to_module(3)
        >>> layer(torch.tensor([-1.0, 2.0, -3.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0.0, 2.0, 0.0]
    """

    def __init__(
        self,
        graph: LayerGraph,
        num_channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(graph, LayerGraph):
            raise SciMLInputError("graph", f"must be a LayerGraph, got {type(graph).__name__}")
        num_channels = check_int("num_channels", num_channels, minimum=1)
        if graph.uses_groups() and num_channels % graph.groups:
            raise SciMLInputError("num_channels", f"{num_channels} is not divisible by groups={graph.groups}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.graph = graph
        self.num_channels = num_channels
        self.v0 = nn.Parameter(torch.zeros(num_channels, **factory))
        self.v1 = nn.Parameter(torch.ones(num_channels, **factory))
        self.weight = nn.Parameter(torch.ones(num_channels, **factory))
        self.bias = nn.Parameter(torch.zeros(num_channels, **factory))
        self._order = tuple(sorted(i for i in graph.live() if i >= len(INITIAL_NODES)))
        for index in self._order:
            primitive = OPS[graph.node(index).op]
            if primitive.axes == "batch":
                initial = torch.zeros if primitive.statistic == "mean" else torch.ones
                self.register_buffer(f"running_{index}", initial(num_channels, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the graph on ``x`` of shape ``(N, C, H, W)``; returns the same shape."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise SciMLInputError("x", f"must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
        if x.shape[1] != self.num_channels:
            raise SciMLInputError("x", f"has {x.shape[1]} channels, the layer was built for {self.num_channels}")
        if not x.is_floating_point():
            raise SciMLInputError("x", f"must be floating point, got {x.dtype}")
        if x.numel() == 0:
            raise SciMLInputError("x", "must not be empty")
        graph = self.graph
        shape = x.shape
        values: dict[int, torch.Tensor] = {
            0: x,
            1: x.new_zeros(()),
            2: self.v0.to(x.dtype).view(1, -1, 1, 1),
            3: self.v1.to(x.dtype).view(1, -1, 1, 1),
        }
        for index in self._order:
            node = graph.node(index)
            primitive = OPS[node.op]
            operands = [values[i] for i in node.inputs]
            if primitive.function is not None:
                values[index] = primitive.function(*operands)
                continue
            assert primitive.statistic is not None
            assert primitive.axes is not None
            if primitive.axes == "batch":
                values[index] = self._batch_statistic(index, operands[0], primitive.statistic, shape)
            else:
                values[index] = aggregate(
                    operands[0], primitive.statistic, primitive.axes, shape=shape, groups=graph.groups, eps=graph.eps
                )
        out = values[graph.output]
        out = self.weight.to(x.dtype).view(1, -1, 1, 1) * out + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return out if out.shape == shape else out.expand(shape).contiguous()

    def _batch_statistic(self, index: int, value: torch.Tensor, statistic: str, shape: torch.Size) -> torch.Tensor:
        running: torch.Tensor = getattr(self, f"running_{index}")
        eps = self.graph.eps
        if not self.training:
            stored = running.to(value.dtype).view(1, -1, 1, 1)
            return (stored + eps).sqrt() if statistic == "std" else stored
        full = value.expand(shape)
        dims = (0, 2, 3)
        momentum = self.graph.momentum
        if statistic == "std":
            variance = _variance(full, dims)
            count = shape[0] * shape[2] * shape[3]
            correction = count / (count - 1) if count > 1 else 1.0
            update = variance.detach().flatten() * correction
            result = (variance + eps).sqrt()
        else:
            result = full.mean(dim=dims, keepdim=True) if statistic == "mean" else full.square().mean(dims, True)
            update = result.detach().flatten()
        with torch.no_grad():
            running.mul_(1.0 - momentum).add_(update.to(running.dtype), alpha=momentum)
        return result

    def extra_repr(self) -> str:
        return f"{self.num_channels}, formula={self.graph.formula()!r}"


def _as_rng(rng: random.Random | int) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise SciMLInputError("rng", f"must be a random.Random or an int seed, got {type(rng).__name__}")
    return random.Random(rng)


def _draw_input(rng: random.Random, index: int) -> int:
    """An operand for node ``index`` drawn with :data:`INPUT_PROBABILITIES`."""
    u = rng.random()
    p = INPUT_PROBABILITIES
    if u < p["previous"]:
        return index - 1
    u -= p["previous"]
    if u < p["x"]:
        return 0
    u -= p["x"]
    if u < p["constant"]:
        return rng.randrange(1, len(INITIAL_NODES))
    return rng.randrange(index)


def _weights(ops: Sequence[str] | None, op_weights: Mapping[str, float] | None) -> tuple[tuple[str, ...], list[float]]:
    choices = tuple(sorted(OPS)) if ops is None else tuple(ops)
    unknown = [op for op in choices if op not in OPS]
    if unknown or not choices:
        raise SciMLInputError("ops", f"unknown or empty ops {unknown or choices!r}")
    table = OP_WEIGHTS if op_weights is None else op_weights
    weights = [float(table.get(op, 0.0)) for op in choices]
    if any(not (w >= 0.0) or w == float("inf") for w in weights) or sum(weights) <= 0:
        raise SciMLInputError("op_weights", f"must be finite, non-negative and not all zero, got {weights!r}")
    return choices, weights


def _random_node(rng: random.Random, index: int, ops: Sequence[str], weights: Sequence[float]) -> Node:
    op = rng.choices(ops, weights)[0]
    return Node(op, tuple(_draw_input(rng, index) for _ in range(OPS[op].arity)))


def random_graph(
    rng: random.Random | int,
    *,
    num_nodes: int | tuple[int, int] = (4, 8),
    groups: int = 4,
    eps: float = 1e-5,
    ops: Sequence[str] | None = None,
    op_weights: Mapping[str, float] | None = None,
    require_normalizer: bool = False,
    max_tries: int | None = None,
) -> LayerGraph:
    """A random layer graph whose output depends on ``x`` through element-wise operations.

    Each intermediate node draws its op from ``ops`` with probabilities proportional to ``op_weights`` (default
    :data:`OP_WEIGHTS`; pass ``dict.fromkeys(OPS, 1.0)`` for uniform draws) and each operand among the earlier
    nodes with :data:`INPUT_PROBABILITIES` (the previous node 0.5, ``x`` 0.3, a constant 0.1, any earlier node
    0.1); graphs failing :meth:`LayerGraph.is_pointwise_in_input` are redrawn.

    Args:
        rng: a ``random.Random`` (advanced in place) or an integer seed.
        num_nodes: number of intermediate nodes, or an inclusive range ``(low, high)`` to draw it from.
        groups: channel groups of the group aggregations.
        eps: the variance epsilon of the ``std`` aggregations.
        ops: the primitives to draw from (default: all of :data:`OPS`).
        op_weights: relative sampling weight of each op (default :data:`OP_WEIGHTS`; missing ops weigh 0).
        require_normalizer: also redraw graphs that fail :meth:`LayerGraph.is_normalizer`: pure activation
            functions, statistics of constants only, layers linear in ``x`` given their statistics (such as
            ``x / std_bhw(x)``) and layers whose output changes with the input's scale.
        max_tries: redraws allowed before giving up (default 1000, or 100000 with ``require_normalizer``: about
            0.5% of the draws with the default weights and 3 to 6 nodes are normalizers, and a draw takes about
            0.3 ms).

    Returns:
        A valid graph.

    Raises:
        SciMLInputError: a bad ``num_nodes``, an unknown op, bad weights, or no valid graph after ``max_tries``
            draws.

    Example:
        >>> g = random_graph(0, num_nodes=5)
        >>> len(g.nodes), g.depends_on_input()
        (5, True)
    """
    rng = _as_rng(rng)
    low, high = (num_nodes, num_nodes) if isinstance(num_nodes, int) else tuple(num_nodes)
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        raise SciMLInputError("num_nodes", f"must be a positive int or a range (low, high), got {num_nodes!r}")
    choices, weights = _weights(ops, op_weights)
    if max_tries is None:
        max_tries = 100_000 if require_normalizer else 1000
    for _ in range(max_tries):
        count = rng.randint(low, high)
        nodes: list[Node] = []
        for position in range(count):
            nodes.append(_random_node(rng, len(INITIAL_NODES) + position, choices, weights))
        graph = LayerGraph(tuple(nodes), groups=groups, eps=eps)
        if graph.is_pointwise_in_input() and (not require_normalizer or graph.is_normalizer()):
            return graph
    raise SciMLInputError("max_tries", f"no valid graph found in {max_tries} draws")


#: How the second operand of a node appended by :func:`mutate` (``grow``) is drawn: one of the constants
#: ``0, v0, v1`` (uniformly; so ``max(z, 0)``, ``z·v1`` and ``z + v0`` are likely), the input ``x``, or any earlier
#: node (uniformly).
APPEND_PROBABILITIES: dict[str, float] = {"constant": 0.5, "x": 0.25, "any": 0.25}


def _draw_appended_operand(rng: random.Random, index: int) -> int:
    u = rng.random()
    p = APPEND_PROBABILITIES
    if u < p["constant"]:
        return rng.randrange(1, len(INITIAL_NODES))
    if u < p["constant"] + p["x"]:
        return 0
    return rng.randrange(index)


def center_input(graph: LayerGraph, axes: str, *, occurrence: int | None = None) -> LayerGraph:
    r"""The graph with its input ``x`` replaced by ``x - mean_A(x)``: :math:`f(x) \mapsto f(x - \mu_A(x))`.

    Three nodes are put in front of the pruned graph, ``m = mean_A(x)``, ``-m`` and ``x + (-m)``, and the live
    nodes' operands that are ``x`` are pointed at the last of them: every such operand, or only the
    ``occurrence``-th one (counted over the nodes in order, then over each node's operands). This is the compound
    edit :func:`mutate` makes with its ``center`` probability; it is built from the search-space primitives
    ``mean_*``, ``neg`` and ``add`` and works on any graph.

    Args:
        graph: the graph to edit.
        axes: the mean's axis family: ``"batch"``, ``"layer"``, ``"instance"`` or ``"group"``.
        occurrence: which ``x`` operand to replace (None: all of them).

    Returns:
        The edited graph (pruned, three nodes longer than the pruned ``graph``).

    Raises:
        SciMLInputError: ``graph`` not a LayerGraph, an unknown ``axes``, or ``occurrence`` out of range.

    Example:
        >>> relu_scaled = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("max", (5, 1))))
        >>> print(center_input(relu_scaled, "batch"))
        max((x + (-mean_bhw(x))) / std_bhw(x + (-mean_bhw(x))), 0)

    Reference:
        The search space and mutations of Liu, Brock, Simonyan and Le, "Evolving Normalization-Activation Layers",
        NeurIPS 2020, arXiv:2004.02967; this compound centring edit is this package's addition (the paper's
        single-node mutations reach it only through several intermediate graphs).
    """
    if not isinstance(graph, LayerGraph):
        raise SciMLInputError("graph", f"must be a LayerGraph, got {type(graph).__name__}")
    if f"mean_{axes}" not in OPS:
        raise SciMLInputError("axes", f"must be 'batch', 'layer', 'instance' or 'group', got {axes!r}")
    base = graph.pruned()
    first = len(INITIAL_NODES)
    slots = [(k, j) for k, node in enumerate(base.nodes) for j, i in enumerate(node.inputs) if i == 0]
    if occurrence is not None and not (
        isinstance(occurrence, int) and not isinstance(occurrence, bool) and 0 <= occurrence < len(slots)
    ):
        raise SciMLInputError("occurrence", f"must be in [0, {len(slots)}), got {occurrence!r}")
    chosen = set(slots) if occurrence is None else {slots[occurrence]}
    centered = first + 2
    nodes = [Node(f"mean_{axes}", (0,)), Node("neg", (first,)), Node("add", (0, first + 1))]
    for k, node in enumerate(base.nodes):
        inputs = tuple(
            centered if (k, j) in chosen else (i + 3 if i >= first else i) for j, i in enumerate(node.inputs)
        )
        nodes.append(Node(node.op, inputs))
    return dataclasses.replace(base, nodes=tuple(nodes))


def mutate(
    graph: LayerGraph,
    rng: random.Random | int,
    *,
    ops: Sequence[str] | None = None,
    op_weights: Mapping[str, float] | None = None,
    grow: float = 0.0,
    center: float = 0.0,
    max_nodes: int = 12,
    max_tries: int = 1000,
) -> LayerGraph:
    """A child of ``graph``: one live node gets a new op or a new input, or (``grow``) a node is appended.

    With probability ``grow`` (when the pruned parent has fewer than ``max_nodes`` nodes) the child is the pruned
    parent with one element-wise node appended on top of its output ``z``: ``op(z)`` or ``op(z, u)``, the op drawn
    with ``op_weights`` among the element-wise primitives and ``u`` with :data:`APPEND_PROBABILITIES` (so the
    normalize-then-activate shape ``max(z, 0)`` of BN-ReLU is one step away from any normalizer ``z``).
    With probability ``center`` (when the pruned parent has at most ``max_nodes - 3`` nodes) the child is the
    parent applied to a centered input, :func:`center_input`: every ``x`` operand (half of the time) or one drawn
    uniformly becomes ``x - mean_A(x)``, the axis family ``A`` drawn with the ``op_weights`` of the ``mean_*``
    primitives (so a normalizer that only rescales, such as ``max(x / std_bhw(x), 0)``, is one edit away from its
    centered form).
    Otherwise (Liu et al., Sec. 3.2) a node is drawn uniformly among those the output depends on; with
    probability 1/2 its op is replaced by a different one drawn with ``op_weights`` (half of the time among the
    primitives of the same kind, element-wise or aggregation, so that ``std_hw`` can become ``std_bhw``; an added
    operand, when the arity grows, is drawn with :data:`INPUT_PROBABILITIES`; when it shrinks one operand is
    kept), otherwise one of its inputs is replaced by an earlier node drawn with :data:`INPUT_PROBABILITIES`.
    Inputs always point to earlier nodes, so the child is a DAG; children failing
    :meth:`LayerGraph.is_pointwise_in_input` or that compute the same function as the parent (same pruned graph)
    are redrawn.

    Args:
        graph: the parent.
        rng: a ``random.Random`` (advanced in place) or an integer seed.
        ops: the primitives to draw from (default: all).
        op_weights: relative sampling weight of each op (default :data:`OP_WEIGHTS`).
        grow: probability of appending a node instead of editing one.
        center: probability of centering the input (:func:`center_input`) instead of editing a node.
        max_nodes: no node is appended to a pruned parent of this many nodes.
        max_tries: redraws allowed before giving up.

    Returns:
        A valid graph with as many nodes as the parent (or, when a node was appended, as the pruned parent plus
        one).

    Raises:
        SciMLInputError: ``graph`` not a LayerGraph, unknown ops, ``grow`` outside ``[0, 1]``, or no valid child
            in ``max_tries`` draws.

    Example:
        >>> child = mutate(LayerGraph.evonorm_s0(), 0)
        >>> child.depends_on_input(), child.pruned() != LayerGraph.evonorm_s0().pruned()
        (True, True)
        >>> len(mutate(LayerGraph.evonorm_s0(), 0, grow=1.0).nodes)
        6
    """
    if not isinstance(graph, LayerGraph):
        raise SciMLInputError("graph", f"must be a LayerGraph, got {type(graph).__name__}")
    if not (isinstance(grow, int | float) and 0.0 <= grow <= 1.0):
        raise SciMLInputError("grow", f"must be in [0, 1], got {grow!r}")
    if not (isinstance(center, int | float) and 0.0 <= center <= 1.0):
        raise SciMLInputError("center", f"must be in [0, 1], got {center!r}")
    rng = _as_rng(rng)
    choices, weights = _weights(ops, op_weights)
    parent_key = graph.pruned()
    candidates = sorted(i for i in graph.live() if i >= len(INITIAL_NODES))
    elementwise = [(op, w) for op, w in zip(choices, weights, strict=True) if OPS[op].kind == "elementwise" and w > 0]
    means = [(op, w) for op, w in zip(choices, weights, strict=True) if OPS[op].statistic == "mean" and w > 0]
    occurrences = sum(i == 0 for node in parent_key.nodes for i in node.inputs)
    for _ in range(max_tries):
        if center and means and occurrences and len(parent_key.nodes) + 3 <= max_nodes and rng.random() < center:
            op = rng.choices([o for o, _ in means], [w for _, w in means])[0]
            which = None if rng.random() < 0.5 else rng.randrange(occurrences)
            child = center_input(parent_key, str(OPS[op].axes), occurrence=which)
            if child.is_pointwise_in_input() and child.pruned() != parent_key:
                return child
            continue
        if grow and elementwise and len(parent_key.nodes) < max_nodes and rng.random() < grow:
            op = rng.choices([o for o, _ in elementwise], [w for _, w in elementwise])[0]
            top = parent_key.output
            inputs = (top,) if OPS[op].arity == 1 else (top, _draw_appended_operand(rng, top + 1))
            if rng.random() < 0.5:
                inputs = inputs[::-1]
            child = dataclasses.replace(parent_key, nodes=(*parent_key.nodes, Node(op, inputs)))
            if child.is_pointwise_in_input() and child.pruned() != parent_key:
                return child
            continue
        index = rng.choice(candidates)
        node = graph.node(index)
        if rng.random() < 0.5:
            others = [(op, w) for op, w in zip(choices, weights, strict=True) if op != node.op and w > 0]
            if rng.random() < 0.5:
                same = [(op, w) for op, w in others if OPS[op].kind == OPS[node.op].kind]
                others = same or others
            if not others:
                continue
            op = rng.choices([o for o, _ in others], [w for _, w in others])[0]
            arity = OPS[op].arity
            if arity == len(node.inputs):
                inputs = node.inputs
            elif arity > len(node.inputs):
                inputs = node.inputs + tuple(_draw_input(rng, index) for _ in range(arity - len(node.inputs)))
            else:
                inputs = (rng.choice(node.inputs),)
            new = Node(op, inputs)
        else:
            slot = rng.randrange(len(node.inputs))
            inputs = list(node.inputs)
            inputs[slot] = _draw_input(rng, index)
            new = Node(node.op, tuple(inputs))
        nodes = list(graph.nodes)
        nodes[index - len(INITIAL_NODES)] = new
        child = dataclasses.replace(graph, nodes=tuple(nodes))
        if child.is_pointwise_in_input() and child.pruned() != parent_key:
            return child
    raise SciMLInputError("max_tries", f"no valid child found in {max_tries} draws")
