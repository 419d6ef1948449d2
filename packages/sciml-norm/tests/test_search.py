"""Tests of the normalization-activation layer search (sciml_norm.search)."""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import statistics
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sciml_norm.search as search_api
import timm.layers
import torch
from sciml_norm.search import (
    OPS,
    LayerGraph,
    Node,
    ProxyTask,
    RejectionConfig,
    SearchConfig,
    dominates,
    known_layers,
    mutate,
    pareto_front,
    quality_check,
    random_graph,
    search,
    stability_check,
    tournament_select,
)
from sciml_protocols import Demo, DemoContext, SciMLInputError

# A task small enough for whole searches in a few seconds (the numbers are meaningless, the mechanics are not).
TINY_TASK = ProxyTask(train_size=96, val_size=48, train_steps=4, batch_size=8, width=8)
TINY_RULES = RejectionConfig(quality_steps=2, quality_threshold=0.0, stability_steps=2)
TINY_CONFIG = SearchConfig(task=TINY_TASK, rejection=TINY_RULES, num_nodes=(2, 5))


def test_public_names() -> None:
    assert sorted(search_api.__all__) == sorted(set(search_api.__all__))
    for name in search_api.__all__:
        assert getattr(search_api, name) is not None
    assert len(OPS) == 24
    assert sum(p.kind == "aggregation" for p in OPS.values()) == 12


# --------------------------------------------------------------------------- graph evaluation
def _single_op(op: str, *inputs: int, groups: int = 2, eps: float = 1e-5) -> LayerGraph:
    return LayerGraph((Node(op, inputs),), groups=groups, eps=eps)


@pytest.mark.parametrize(
    ("op", "oracle"),
    [
        ("neg", lambda a: -a),
        ("sigmoid", lambda a: 1 / (1 + np.exp(-a))),
        ("tanh", np.tanh),
        ("exp", np.exp),
        ("signed_log", lambda a: np.sign(a) * np.log(np.abs(a))),
        ("abs", np.abs),
        ("square", lambda a: a * a),
        ("signed_sqrt", lambda a: np.sign(a) * np.sqrt(np.abs(a))),
    ],
)
def test_unary_ops_match_closed_forms(op: str, oracle: object) -> None:
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer = _single_op(op, 0).to_module(4, dtype=torch.float64)
    expected = oracle(x.numpy())  # type: ignore[operator]
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_binary_ops_and_initial_nodes() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=generator)
    v0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    v1 = torch.tensor([3.0, 0.25, -2.0], dtype=torch.float64)
    a, c0, c1 = x.numpy(), v0.numpy().reshape(1, 3, 1, 1), v1.numpy().reshape(1, 3, 1, 1)
    cases = {
        ("add", 0, 2): a + c0,
        ("mul", 0, 3): a * c1,
        ("div", 0, 3): a / c1,
        ("div", 2, 0): c0 / a,
        ("max", 0, 2): np.maximum(a, c0),
        ("max", 1, 0): np.maximum(a, 0.0),
        ("add", 1, 3): np.broadcast_to(c1, a.shape),
    }
    for (op, i, j), expected in cases.items():
        layer = _single_op(op, i, j).to_module(3, dtype=torch.float64)
        with torch.no_grad():
            layer.v0.copy_(v0)
            layer.v1.copy_(v1)
        np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, err_msg=op)


def test_safe_division_and_clamped_exp_stay_finite() -> None:
    x = torch.tensor([0.0, 1e-9, -1e-9, 100.0], dtype=torch.float64).view(1, 4, 1, 1)
    divided = _single_op("div", 3, 0).to_module(4, dtype=torch.float64)(x).flatten()
    assert divided.tolist() == pytest.approx([1e6, 1e6, -1e6, 0.01])
    exponent = _single_op("exp", 0).to_module(4, dtype=torch.float64)(x).flatten()
    assert exponent[-1].item() == pytest.approx(math.exp(20.0))
    assert torch.isfinite(_single_op("signed_log", 0).to_module(4, dtype=torch.float64)(x)).all()


def _brute_force(a: np.ndarray, statistic: str, axes: str, groups: int, eps: float) -> np.ndarray:
    """Per-element statistic by explicit loops over the set each element is aggregated with."""
    n, c, _h, _w = a.shape
    out = np.empty_like(a)
    size = c // groups
    for i in range(n):
        for k in range(c):
            if axes == "batch":
                values = a[:, k, :, :]
            elif axes == "layer":
                values = a[i, :, :, :]
            elif axes == "instance":
                values = a[i, k, :, :]
            else:
                g = k // size
                values = a[i, g * size : (g + 1) * size, :, :]
            values = values.ravel()
            if statistic == "mean":
                value = values.mean()
            elif statistic == "std":
                value = math.sqrt(((values - values.mean()) ** 2).mean() + eps)
            else:
                value = (values**2).mean()
            out[i, k] = value
    return out


@pytest.mark.parametrize("axes", ["batch", "layer", "instance", "group"])
@pytest.mark.parametrize("statistic", ["mean", "std", "second_moment"])
def test_aggregations_match_brute_force(statistic: str, axes: str) -> None:
    x = torch.randn(3, 6, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.5
    layer = _single_op(f"{statistic}_{axes}", 0, groups=3, eps=1e-3).to_module(6, dtype=torch.float64)
    expected = _brute_force(x.numpy(), statistic, axes, 3, 1e-3)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-10)


def test_bn_relu_graph_matches_torch_batchnorm_relu() -> None:
    generator = torch.Generator().manual_seed(4)
    dtype = torch.float64
    reference = torch.nn.Sequential(torch.nn.BatchNorm2d(5, dtype=dtype), torch.nn.ReLU())
    layer = LayerGraph.bn_relu().to_module(5, dtype=dtype)
    with torch.no_grad():
        reference[0].weight.copy_(torch.rand(5, generator=generator, dtype=dtype) + 0.5)
        reference[0].bias.copy_(torch.randn(5, generator=generator, dtype=dtype))
        layer.v1.copy_(reference[0].weight)
        layer.v0.copy_(reference[0].bias)
    for _ in range(3):  # training mode, running statistics updated on the way
        x = (3 * torch.randn(4, 5, 3, 3, generator=generator, dtype=dtype) + 1).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        upstream = torch.randn(4, 5, 3, 3, generator=generator, dtype=dtype)
        ours, theirs = layer(x), reference(x2)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        (ours * upstream).sum().backward()
        (theirs * upstream).sum().backward()
        assert x.grad is not None
        assert x2.grad is not None
        torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.v1.grad, reference[0].weight.grad)
    torch.testing.assert_close(layer.v0.grad, reference[0].bias.grad)
    layer.eval()
    reference.eval()
    x = torch.randn(2, 5, 3, 3, generator=generator, dtype=dtype)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-12, atol=1e-12)


def test_evonorm_graphs_match_timm_and_formula() -> None:
    generator = torch.Generator().manual_seed(5)
    channels = 8
    x = torch.randn(3, channels, 4, 4, generator=generator) * 2
    weight, bias, v = (torch.randn(channels, generator=generator) for _ in range(3))

    s0 = LayerGraph.evonorm_s0(groups=4).to_module(channels)
    timm_s0 = timm.layers.EvoNorm2dS0(channels, groups=4)
    for module, vector in ((s0, s0.v1), (timm_s0, timm_s0.v)):
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
            vector.copy_(v)
    torch.testing.assert_close(s0(x), timm_s0(x), rtol=1e-5, atol=1e-5)
    grouped = x.view(3, 4, 2, 4, 4)
    std = (grouped.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + 1e-5).sqrt().expand_as(grouped).reshape(x.shape)
    direct = x * torch.sigmoid(v.view(1, -1, 1, 1) * x) / std * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(s0(x), direct, rtol=1e-5, atol=1e-5)

    b0 = LayerGraph.evonorm_b0().to_module(channels)
    timm_b0 = timm.layers.EvoNorm2dB0(channels)
    for module, vector in ((b0, b0.v1), (timm_b0, timm_b0.v)):
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
            vector.copy_(v)
    for _ in range(2):
        torch.testing.assert_close(b0(x), timm_b0(x), rtol=1e-5, atol=1e-5)
    running = next(b for name, b in b0.named_buffers() if name.startswith("running_"))
    torch.testing.assert_close(running, timm_b0.running_var)
    b0.eval()
    timm_b0.eval()
    torch.testing.assert_close(b0(x), timm_b0(x), rtol=1e-5, atol=1e-5)


def test_formulas() -> None:
    assert str(LayerGraph.relu()) == "max(x, 0)"
    assert str(LayerGraph.evonorm_s0()) == "(x·sigmoid(x·v1)) / std_ghw(x)"
    assert str(LayerGraph.bn_relu()) == "max((((x + (-mean_bhw(x))) / std_bhw(x))·v1) + v0, 0)"
    # grouping is explicit: (x / s)·s and x / (s·s) print differently
    left = LayerGraph((Node("std_instance", (0,)), Node("div", (0, 4)), Node("mul", (5, 4))))
    right = LayerGraph((Node("std_instance", (0,)), Node("mul", (4, 4)), Node("div", (0, 5))))
    assert str(left) == "(x / std_hw(x))·std_hw(x)"
    assert str(right) == "x / (std_hw(x)·std_hw(x))"
    assert str(LayerGraph((Node("add", (0, 2)), Node("neg", (4,))))) == "-(x + v0)"
    assert str(LayerGraph((Node("tanh", (0,)), Node("abs", (0,))))) == "|x|"  # dead nodes are not printed


# --------------------------------------------------------------------------- random graphs and mutation
def _assert_valid(graph: LayerGraph) -> None:
    for position, node in enumerate(graph.nodes):
        own = 4 + position
        assert node.op in OPS
        assert len(node.inputs) == OPS[node.op].arity
        assert all(0 <= i < own for i in node.inputs)
    assert graph.depends_on_input()


def test_mutation_keeps_graphs_valid() -> None:
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(6))
    for seed in range(60):
        rng = random.Random(seed)
        graph = random_graph(rng, num_nodes=(1, 7), groups=2)
        _assert_valid(graph)
        for _ in range(5):
            child = mutate(graph, rng)
            _assert_valid(child)
            assert len(child.nodes) == len(graph.nodes)
            assert child.pruned() != graph.pruned()
            changed = [i for i, (a, b) in enumerate(zip(graph.nodes, child.nodes, strict=True)) if a != b]
            assert len(changed) == 1
            graph = child
        assert graph.to_module(4)(x).shape == x.shape


def test_sampling_follows_the_documented_weights() -> None:
    # restricted weights: only the weighted ops ever appear, in proportion to their weights
    weights = {"max": 3.0, "neg": 1.0, "tanh": 0.0}
    rng = random.Random(0)
    ops = [n.op for _ in range(400) for n in random_graph(rng, num_nodes=1, op_weights=weights).nodes]
    assert set(ops) <= {"max", "neg"}
    # a one-node graph is kept only when x is an operand: P(x) = p_x + p_any / 4 per operand, so max (two operands)
    # survives with 1 - (1 - P(x))^2 and the expected share of max is 3 * that / (3 * that + P(x))
    p = search_api.INPUT_PROBABILITIES
    p_x = p["x"] + p["any"] / 4
    p_max = 3 * (1 - (1 - p_x) ** 2)
    assert ops.count("max") / len(ops) == pytest.approx(p_max / (p_max + p_x), abs=0.06)
    # operands: the previous node, x, a constant or any earlier node with INPUT_PROBABILITIES
    from sciml_norm.search._graph import _draw_input

    rng = random.Random(1)
    draws = [_draw_input(rng, 10) for _ in range(20_000)]
    p = search_api.INPUT_PROBABILITIES
    assert draws.count(9) / len(draws) == pytest.approx(p["previous"] + p["any"] / 10, abs=0.015)
    assert draws.count(0) / len(draws) == pytest.approx(p["x"] + p["any"] / 10, abs=0.015)
    assert draws.count(1) / len(draws) == pytest.approx(p["constant"] / 3 + p["any"] / 10, abs=0.015)
    assert all(0 <= d < 10 for d in draws)
    assert sum(p.values()) == pytest.approx(1.0)
    assert set(search_api.OP_WEIGHTS) == set(OPS)
    uniform = random_graph(0, op_weights=dict.fromkeys(OPS, 1.0))
    _assert_valid(uniform)
    with pytest.raises(SciMLInputError, match="op_weights"):
        random_graph(0, op_weights={"add": -1.0})


def test_manual_optimizers_match_torch_optim() -> None:
    from sciml_norm.search._proxy import _Optimizer

    generator = torch.Generator().manual_seed(11)
    for kind, weight_decay in (("adam", 0.0), ("adam", 0.1), ("sgd", 0.0), ("sgd", 0.01)):
        ours = [torch.nn.Parameter(torch.randn(3, 4, generator=generator, dtype=torch.float64)) for _ in range(2)]
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        mine = _Optimizer(ours, kind, weight_decay)
        if kind == "adam":
            reference: torch.optim.Optimizer = torch.optim.AdamW(theirs, lr=0.1, weight_decay=weight_decay)
        else:
            reference = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        for step in range(5):
            grads = [torch.randn(3, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
            for a, b, g in zip(ours, theirs, grads, strict=True):
                a.grad, b.grad = g.clone(), g.clone()
            lr = 0.1 / (step + 1)
            for group in reference.param_groups:
                group["lr"] = lr
            mine.step(lr)
            reference.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_dataset_classes_are_balanced_and_bounded() -> None:
    x, y, _, yv = search_api.make_dataset(train_size=40, val_size=20, num_classes=4)
    assert x.shape == (40, 3, 10, 10)
    assert torch.bincount(y).tolist() == [10] * 4
    assert torch.bincount(yv).tolist() == [5] * 4
    with pytest.raises(SciMLInputError, match="num_classes"):
        ProxyTask(num_classes=11)


def test_random_graphs_are_reproducible_and_varied() -> None:
    first = [random_graph(random.Random(s)) for s in range(20)]
    again = [random_graph(random.Random(s)) for s in range(20)]
    assert first == again
    assert len({g.pruned() for g in first}) > 15


def _g(*nodes: tuple[str, tuple[int, ...]]) -> LayerGraph:
    return LayerGraph(tuple(Node(op, inputs) for op, inputs in nodes), groups=1)


def test_normalizer_prior_classifies_known_forms() -> None:
    layers = known_layers(groups=2)
    relu_of_scaled = _g(("std_batch", (0,)), ("div", (0, 4)), ("max", (5, 1)))  # max(x / s, 0)
    scaled = _g(("std_batch", (0,)), ("div", (0, 4)))  # linear between the statistics
    inverse = _g(("std_instance", (0,)), ("div", (4, 0)))  # s / x: singular at 0
    stat_of_relu = _g(("max", (0, 1)), ("std_batch", (4,)), ("div", (0, 5)))  # x / std(relu(x)): still linear in x
    unscaled = _g(("mean_batch", (0,)), ("max", (0, 4)))  # max(x, mean): no division, sees the scale
    # scale-invariant normalization-activation layers (f(3x) = f(x) by their closed forms)
    for graph in (layers["BN-ReLU"], layers["GN-ReLU"], layers["EvoNorm-B0"], relu_of_scaled):
        assert graph.normalizes_input(), str(graph)
        assert graph.activates_input(), str(graph)
        assert graph.is_normalizer(), str(graph)
    assert not layers["ReLU"].normalizes_input()
    assert layers["ReLU"].activates_input()
    assert not layers["ReLU"].is_normalizer()
    assert layers["EvoNorm-S0"].normalizes_input()
    assert not layers["EvoNorm-S0"].is_normalizer()
    assert scaled.normalizes_input()
    assert not scaled.activates_input()
    assert not scaled.is_normalizer()
    assert not stat_of_relu.activates_input()
    assert inverse.activates_input()
    assert not inverse.is_normalizer()
    assert unscaled.normalizes_input()
    assert not unscaled.is_normalizer()


def test_random_normalizers_are_random_not_known_layers() -> None:
    rng = random.Random(0)
    graphs = [random_graph(rng, num_nodes=(3, 6), require_normalizer=True) for _ in range(30)]
    assert all(g.is_normalizer() for g in graphs)
    assert len({g.fingerprint() for g in graphs}) > 20
    known = {g.fingerprint() for g in known_layers().values()}
    assert not known & {g.fingerprint() for g in graphs}
    # without the prior most draws are not normalizers
    plain = [random_graph(random.Random(s), num_nodes=(3, 6)) for s in range(60)]
    assert sum(g.is_normalizer() for g in plain) < 30


def test_search_draws_its_random_graphs_with_the_prior() -> None:
    result = search(population=3, budget=8, batch_size=4, seed=6, config=TINY_CONFIG, progress=False)
    random_ones = [c for c in result.history if c.parent is None]
    assert random_ones
    assert all(c.graph.is_normalizer() for c in random_ones)
    assert SearchConfig.from_dict(TINY_CONFIG.to_dict()) == TINY_CONFIG
    loose = SearchConfig(task=TINY_TASK, rejection=TINY_RULES, num_nodes=(2, 5), require_normalizer=False)
    assert SearchConfig.from_dict(loose.to_dict()) == loose
    centering = SearchConfig(task=TINY_TASK, rejection=TINY_RULES, center_probability=0.3)
    assert SearchConfig.from_dict(centering.to_dict()).center_probability == 0.3
    with pytest.raises(SciMLInputError, match="center_probability"):
        SearchConfig(task=TINY_TASK, rejection=TINY_RULES, center_probability=1.5)


def test_known_layers_are_in_the_search_space() -> None:
    for graph in known_layers().values():
        _assert_valid(graph)


# --------------------------------------------------------------------------- serialization
def test_json_round_trip() -> None:
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(7))
    graphs = list(known_layers(groups=2).values()) + [random_graph(s, groups=2) for s in range(20)]
    for graph in graphs:
        text = graph.to_json()
        json.loads(text)
        back = LayerGraph.from_json(text)
        assert back == graph
        torch.manual_seed(0)
        a = graph.to_module(4)
        b = back.to_module(4)
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x), b(x), equal_nan=True)


def test_bad_graphs_and_modules_raise() -> None:
    with pytest.raises(SciMLInputError, match="unknown op"):
        LayerGraph((Node("relu", (0,)),))
    with pytest.raises(SciMLInputError, match="needs 2 inputs"):
        LayerGraph((Node("add", (0,)),))
    with pytest.raises(SciMLInputError, match="inputs must be in"):
        LayerGraph((Node("neg", (4,)),))
    with pytest.raises(SciMLInputError, match="at least one"):
        LayerGraph(())
    with pytest.raises(SciMLInputError, match="groups"):
        LayerGraph.evonorm_s0(groups=0)
    with pytest.raises(SciMLInputError, match="eps"):
        LayerGraph.evonorm_s0(eps=-1.0)
    with pytest.raises(SciMLInputError, match="not valid JSON"):
        LayerGraph.from_json("{nope")
    with pytest.raises(SciMLInputError, match="version"):
        LayerGraph.from_dict({"version": 99})
    with pytest.raises(SciMLInputError, match="malformed"):
        LayerGraph.from_dict({"version": 1, "nodes": [{"op": "neg"}]})
    with pytest.raises(SciMLInputError, match="divisible"):
        LayerGraph.evonorm_s0(groups=4).to_module(6)
    LayerGraph.bn_relu().to_module(6)  # no group aggregation: any channel count
    with pytest.raises(SciMLInputError, match="num_channels"):
        LayerGraph.relu().to_module(0)
    layer = LayerGraph.evonorm_s0(groups=2).to_module(4)
    with pytest.raises(SciMLInputError, match="4-D"):
        layer(torch.zeros(4, 3, 3))
    with pytest.raises(SciMLInputError, match="channels"):
        layer(torch.zeros(1, 3, 2, 2))
    with pytest.raises(SciMLInputError, match="floating"):
        layer(torch.zeros(1, 4, 2, 2, dtype=torch.int64))
    with pytest.raises(SciMLInputError, match="empty"):
        layer(torch.zeros(0, 4, 2, 2))
    with pytest.raises(SciMLInputError, match="num_nodes"):
        random_graph(0, num_nodes=(3, 1))
    with pytest.raises(SciMLInputError, match="graph"):
        mutate("not a graph", 0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rejection protocols
def test_stability_rejects_known_unstable_graphs() -> None:
    task = ProxyTask()
    over_instance_mean = LayerGraph((Node("mean_instance", (0,)), Node("div", (0, 4))))
    exp_chain = LayerGraph((Node("exp", (0,)), Node("exp", (4,)), Node("exp", (5,))))
    for graph in (over_instance_mean, exp_chain):
        report = stability_check(graph, task)
        assert not report.stable
        assert report.failed_lr == 0.5
    for graph in (LayerGraph.bn_relu(), LayerGraph.evonorm_s0()):
        report = stability_check(graph, task)
        assert report.stable
        assert report.max_grad_norm < 1e3


def test_quality_rejects_constant_graph_and_keeps_bn_relu() -> None:
    task = ProxyTask()
    constant_zero = LayerGraph((Node("mul", (0, 1)),))  # 0·x
    rejected = quality_check(constant_zero, task, steps=30, threshold=0.35)
    assert not rejected.passed
    assert rejected.accuracy == pytest.approx(1 / task.num_classes)  # balanced classes: a constant scores chance
    kept = quality_check(LayerGraph.bn_relu(), task, steps=30, threshold=0.35)
    assert kept.passed
    assert kept.accuracy > 0.4


def test_rejection_config_validation() -> None:
    with pytest.raises(SciMLInputError, match="quality_threshold"):
        RejectionConfig(quality_threshold=1.5)
    with pytest.raises(SciMLInputError, match="stability_lrs"):
        RejectionConfig(stability_lrs=())
    with pytest.raises(SciMLInputError, match="stability_lrs"):
        stability_check(LayerGraph.relu(), TINY_TASK, lrs=(-1.0,))
    with pytest.raises(SciMLInputError, match="architectures"):
        ProxyTask(architectures=("vgg",))
    with pytest.raises(SciMLInputError, match="lr"):
        ProxyTask(lr=0.0)
    with pytest.raises(SciMLInputError, match="groups"):
        SearchConfig(groups=3)


# --------------------------------------------------------------------------- Pareto selection
def test_pareto_dominance_and_front() -> None:
    assert dominates((0.5, 0.5), (0.5, 0.4))
    assert not dominates((0.5, 0.5), (0.5, 0.5))
    assert not dominates((0.6, 0.3), (0.5, 0.4))
    scores = [(0.9, 0.1), (0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.5, 0.2), (0.9, 0.1)]
    assert pareto_front(scores) == [0, 1, 2, 5]  # equal vectors do not dominate each other
    with pytest.raises(SciMLInputError):
        dominates((1.0,), (1.0, 2.0))


def test_tournament_picks_only_from_the_front() -> None:
    scores = [(0.9, 0.1), (0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.05, 0.05)]
    rng = random.Random(0)
    winners = [tournament_select(scores, rng, len(scores)) for _ in range(600)]
    assert set(winners) == {0, 1, 2}
    counts = np.bincount(winners, minlength=5)
    assert counts[:3].min() > 150  # uniform over the front
    singles = {tournament_select(scores, rng, 1) for _ in range(300)}
    assert singles == set(range(5))  # a tournament of one is uniform sampling
    pairs = [tournament_select(scores, rng, 2) for _ in range(2000)]
    assert pairs.count(4) == 0  # the worst one never wins a pair (it is dominated by every other)
    with pytest.raises(SciMLInputError, match="size"):
        tournament_select(scores, rng, 6)
    with pytest.raises(SciMLInputError, match="empty"):
        tournament_select([], rng, 1)


# --------------------------------------------------------------------------- the driver
def _strip(result: search_api.SearchResult) -> list[tuple[object, ...]]:
    return [(c.index, c.generation, c.graph, c.parent, c.evaluation) for c in result.history]


def test_search_runs_with_thread_pool_like_serial() -> None:
    serial = search(population=4, budget=14, batch_size=4, seed=3, config=TINY_CONFIG, progress=False)
    with ThreadPoolExecutor(max_workers=2) as executor:
        threaded = search(
            population=4, budget=14, batch_size=4, seed=3, config=TINY_CONFIG, executor=executor, progress=True
        )
    assert serial == threaded
    assert len(serial.history) == 14
    assert serial.generations == 4
    assert any(c.parent is not None for c in serial.history)  # evolution ran past the random phase
    for candidate in serial.history:
        if candidate.parent is not None:
            assert candidate.parent < candidate.index
            assert serial.history[candidate.parent].accepted
    assert serial.best is not None
    _assert_rescoring_consistent(serial, top=5, seeds=1)
    front = serial.pareto_front()
    assert front
    assert all(not dominates(o.accuracies, f.accuracies) for f in front for o in serial.accepted)
    layer = serial.export(8)
    assert layer(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    with pytest.raises(SciMLInputError, match="rank"):
        serial.export(8, rank=10_000)


def _assert_rescoring_consistent(result: search_api.SearchResult, *, top: int, seeds: int) -> None:
    """The re-scored layers are the best distinct single-seed ones, and ``best`` is the best re-scored one."""
    by_function: dict[str, search_api.Candidate] = {}
    for candidate in sorted(result.accepted, key=lambda c: (-c.mean_accuracy, c.index)):
        by_function.setdefault(candidate.graph.fingerprint(), candidate)
    expected = sorted(by_function.values(), key=lambda c: (-c.mean_accuracy, c.index))[:top]
    rescored = dict(result.rescores)
    assert sorted(rescored) == sorted(c.index for c in expected)
    for index, runs in rescored.items():
        assert len(runs) == seeds
        assert all(len(run) == len(result.config.task.architectures) for run in runs)
        values = [*result.history[index].accuracies * result.eval_seeds, *(a for run in runs for a in run)]
        assert result.score(result.history[index]) == pytest.approx(sum(values) / len(values))
    assert result.best is not None
    assert result.best.index in rescored

    # the best is the re-scored layer with the highest mean minus the spread over its re-scoring seeds
    def lower_bound(index: int) -> float:
        means = [sum(run) / len(run) for run in rescored[index]]
        spread = statistics.stdev(means) if len(means) >= 2 else 0.0
        return result.score(result.history[index]) - spread

    for index in rescored:
        assert result.lower_bound(result.history[index]) == pytest.approx(lower_bound(index))
    assert lower_bound(result.best.index) == pytest.approx(max(lower_bound(i) for i in rescored))


def test_search_deduplicates_keeps_elite_and_rescores() -> None:
    result = search(population=3, budget=20, batch_size=4, seed=2, config=TINY_CONFIG, elite=2, progress=False)
    # one evaluation per function: candidates with the same probe fingerprint share the same evaluation object
    evaluations: dict[str, object] = {}
    for candidate in result.history:
        previous = evaluations.setdefault(candidate.graph.fingerprint(), candidate.evaluation)
        assert previous is candidate.evaluation or previous == candidate.evaluation
    members = [result.history[i] for i in result.population]
    assert len({c.graph.fingerprint() for c in members}) == len(members)
    assert all(c.accepted for c in members)
    # the elite (best distinct layers so far) stays in the population however old it is
    ranked = sorted(result.accepted, key=lambda c: (-c.mean_accuracy, c.index))
    assert ranked[0].index in result.population
    # re-scoring retrains with seed + 1, checked against an independent training run
    _assert_rescoring_consistent(result, top=5, seeds=1)
    index, runs = result.rescores[0]
    graph = result.history[index].graph
    expected = tuple(
        search_api.train_proxy(graph, TINY_TASK, a, seed=result.seed + 1).accuracy for a in TINY_TASK.architectures
    )
    assert runs[0] == expected
    with pytest.raises(SciMLInputError, match="elite"):
        search(elite=-1, progress=False)
    with pytest.raises(SciMLInputError, match="rescore_top"):
        search(rescore_top=-1, progress=False)


def test_search_evaluates_accepted_candidates_on_several_seeds() -> None:
    result = search(
        population=3, budget=6, batch_size=3, seed=4, config=TINY_CONFIG, rescore_top=1, eval_seeds=2, progress=False
    )
    assert result.eval_seeds == 2
    _assert_rescoring_consistent(result, top=1, seeds=1)
    # an accepted candidate's accuracies are the per-architecture means over seeds 4 and 5 (independent runs)
    candidate = result.accepted[0]
    for k, architecture in enumerate(TINY_TASK.architectures):
        runs = [search_api.train_proxy(candidate.graph, TINY_TASK, architecture, seed=s).accuracy for s in (4, 5)]
        assert candidate.accuracies[k] == pytest.approx(sum(runs) / 2)
    # the re-scoring uses the next seed, 6
    index, runs = result.rescores[0]
    graph = result.history[index].graph
    assert runs[0] == tuple(
        search_api.train_proxy(graph, TINY_TASK, a, seed=6).accuracy for a in TINY_TASK.architectures
    )
    # a rejected candidate is not retrained: its evaluation equals the single-seed one
    rejected = [c for c in result.history if not c.accepted]
    for c in rejected[:1]:
        request = search_api.EvaluationRequest(c.graph, TINY_TASK, TINY_CONFIG.rejection, 4)
        assert search_api.evaluate_candidate(request) == c.evaluation
    with pytest.raises(SciMLInputError, match="eval_seeds"):
        search(eval_seeds=0, progress=False)


def test_fingerprint_identifies_functions() -> None:
    base = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4))))
    same = [
        LayerGraph((Node("tanh", (0,)), Node("std_batch", (0,)), Node("div", (0, 5)))),  # a dead node
        LayerGraph((Node("neg", (0,)), Node("std_batch", (4,)), Node("div", (4, 5)), Node("neg", (6,)))),  # -(-x/s)
        LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("max", (5, 5)))),  # max(z, z) = z
    ]
    for graph in same:
        assert graph.fingerprint() == base.fingerprint(), str(graph)
    different = [
        LayerGraph((Node("std_instance", (0,)), Node("div", (0, 4)))),
        LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("mul", (5, 3)))),  # times v1
        LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("add", (5, 2)))),  # plus v0
        LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("max", (5, 1)))),
    ]
    keys = {g.fingerprint() for g in different} | {base.fingerprint()}
    assert len(keys) == len(different) + 1
    # commutative operands
    assert LayerGraph((Node("mul", (0, 3)),)).fingerprint() == LayerGraph((Node("mul", (3, 0)),)).fingerprint()


def test_grow_mutation_appends_on_the_output() -> None:
    rng = random.Random(4)
    parent = LayerGraph.evonorm_s0(groups=2)
    ops = set()
    for _ in range(200):
        child = mutate(parent, rng, grow=1.0)
        assert child.nodes[:-1] == parent.nodes
        assert parent.output in child.nodes[-1].inputs
        assert OPS[child.nodes[-1].op].kind == "elementwise"
        ops.add(child.nodes[-1].op)
    assert "max" in ops
    relu_on_top = LayerGraph((*parent.nodes, Node("max", (parent.output, 1))), groups=2)
    children = {mutate(parent, rng, grow=1.0).pruned() for _ in range(400)}
    assert relu_on_top in children or LayerGraph((*parent.nodes, Node("max", (1, parent.output))), groups=2) in children
    big = LayerGraph.bn_relu()  # 8 nodes: max_nodes=8 forbids growing
    assert all(len(mutate(big, rng, grow=1.0, max_nodes=8).nodes) == 8 for _ in range(20))
    with pytest.raises(SciMLInputError, match="grow"):
        mutate(parent, rng, grow=1.5)


def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = ((x - mean).square().mean(dim=(0, 2, 3), keepdim=True) + 1e-5).sqrt()
    return mean, std


def test_center_input_closed_form() -> None:
    """``center_input`` computes f(x - mean_A(x)) for every axis family, checked against direct formulas."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64) * 2 + 1.5
    scaled_relu = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("max", (5, 1))), groups=2)
    centered = search_api.center_input(scaled_relu, "batch")
    mean, std = _batch_stats(x)
    layer = centered.to_module(4, dtype=torch.float64)
    # max((x - mean_bhw x) / std_bhw(x - mean_bhw x), 0): BN-ReLU without its affine maps
    torch.testing.assert_close(layer(x), torch.relu((x - mean) / std), rtol=1e-12, atol=1e-12)
    # one occurrence only (counted over nodes, then operands: std's x, max's x, div's x): x / max(x - m, s)
    b0_like = LayerGraph((Node("std_batch", (0,)), Node("max", (0, 4)), Node("div", (0, 5))), groups=2)
    one = search_api.center_input(b0_like, "instance", occurrence=1).to_module(4, dtype=torch.float64)
    m_hw = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(one(x), x / torch.maximum(x - m_hw, std), rtol=1e-12, atol=1e-12)
    # group and layer means
    grouped = x.view(5, 2, 2, 3, 3).mean(dim=(2, 3, 4), keepdim=True).expand(5, 2, 2, 3, 3).reshape(x.shape)
    out = search_api.center_input(b0_like, "group", occurrence=2).to_module(4, dtype=torch.float64)(x)
    torch.testing.assert_close(out, (x - grouped) / torch.maximum(x, std), rtol=1e-12, atol=1e-12)
    m_chw = x.mean(dim=(1, 2, 3), keepdim=True)
    out = search_api.center_input(b0_like, "layer").to_module(4, dtype=torch.float64)(x)
    c = x - m_chw
    _, std_c = _batch_stats(c)
    torch.testing.assert_close(out, c / torch.maximum(c, std_c), rtol=1e-12, atol=1e-12)
    with pytest.raises(SciMLInputError, match="axes"):
        search_api.center_input(b0_like, "channel")
    with pytest.raises(SciMLInputError, match="occurrence"):
        search_api.center_input(b0_like, "batch", occurrence=3)


def test_center_mutation_reaches_centered_normalizers() -> None:
    """From relu(x / std_bhw(x)) one ``center`` mutation often gives BN-ReLU's function (no affine maps)."""
    parent = LayerGraph((Node("std_batch", (0,)), Node("div", (0, 4)), Node("max", (5, 1))), groups=2)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, 3, 3, generator=generator, dtype=torch.float64) + 0.7
    mean, std = _batch_stats(x)
    target = torch.relu((x - mean) / std)
    rng = random.Random(0)
    hits, axes = 0, set()
    for _ in range(200):
        child = mutate(parent, rng, center=1.0)
        assert len(child.nodes) == len(parent.nodes) + 3
        assert child.nodes[1] == Node("neg", (4,))
        assert child.nodes[2] == Node("add", (0, 5))
        axes.add(OPS[child.nodes[0].op].axes)
        with torch.no_grad():
            out = child.to_module(4, dtype=torch.float64)(x)
        hits += bool(torch.allclose(out, target, rtol=1e-10, atol=1e-12))
    # batch means weigh 2 of the 5 units of mean weight; centering the numerator alone or every x both give it
    assert 0.2 * 200 < hits < 0.6 * 200
    assert axes == {"batch", "layer", "instance", "group"}
    # without ``center`` the edit never happens in a single mutation; too large a parent cannot be centered
    assert all(len(mutate(parent, rng).nodes) == len(parent.nodes) for _ in range(50))
    big = LayerGraph.bn_relu()
    assert all(len(mutate(big, rng, center=1.0, max_nodes=10).nodes) == 8 for _ in range(20))
    with pytest.raises(SciMLInputError, match="center"):
        mutate(parent, rng, center=-0.1)


@pytest.mark.slow
def test_search_runs_with_process_pool_like_serial() -> None:
    serial = search(population=3, budget=6, seed=1, config=TINY_CONFIG, progress=False)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver")) as executor:
        parallel = search(population=3, budget=6, seed=1, config=TINY_CONFIG, executor=executor, progress=False)
    assert serial == parallel


def test_checkpoint_resume_equals_uninterrupted(tmp_path: Path) -> None:
    kwargs = {"population": 3, "budget": 12, "batch_size": 3, "seed": 5, "config": TINY_CONFIG, "progress": False}
    uninterrupted = search(**kwargs)  # type: ignore[arg-type]
    path = tmp_path / "search.json"
    messages: list[str] = []
    partial = search(**kwargs, generations=2, checkpoint=path, callback=lambda d, t, m: messages.append(m))  # type: ignore[arg-type]
    assert partial.generations == 2
    assert len(partial.history) == 6
    assert len(messages) == 2
    saved = json.loads(path.read_text())
    assert saved["generation"] == 2
    assert len(saved["history"]) == 6
    resumed = search(**kwargs, checkpoint=path)  # type: ignore[arg-type]
    assert resumed == uninterrupted
    assert _strip(resumed)[:6] == _strip(partial)
    again = search(**kwargs, checkpoint=path)  # type: ignore[arg-type]
    assert again == uninterrupted  # a finished checkpoint returns at once
    with pytest.raises(SciMLInputError, match="other settings"):
        search(**{**kwargs, "seed": 6}, checkpoint=path)  # type: ignore[arg-type]
    path.write_text("not json")
    with pytest.raises(SciMLInputError, match="cannot read"):
        search(**kwargs, checkpoint=path)  # type: ignore[arg-type]


def test_search_bad_arguments() -> None:
    with pytest.raises(SciMLInputError, match="population"):
        search(population=0, progress=False)
    with pytest.raises(SciMLInputError, match="budget"):
        search(budget=-1, progress=False)
    with pytest.raises(SciMLInputError, match="batch_size"):
        search(batch_size=0, progress=False)
    with pytest.raises(SciMLInputError, match="executor"):
        search(executor="pool", progress=False)  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="config"):
        search(config={"task": None}, progress=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the demo
@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    from sciml_norm._search_demo import LayerSearchDemo

    demo = LayerSearchDemo()
    assert isinstance(demo, Demo)
    assert demo.name == "evonorm-search"
    steps: list[tuple[int, int]] = []
    result = demo.run(DemoContext(out_dir=tmp_path, quick=True, progress=lambda d, t, m: steps.append((d, t))))
    assert result.figures
    assert all(Path(f).exists() for f in result.figures)
    assert steps
    assert steps[-1][0] == steps[-1][1]
    for key in ("best found: mean accuracy", "BN-ReLU: mean accuracy", "EvoNorm-S0: mean accuracy"):
        assert 0.0 <= float(result.metrics[key]) <= 1.0
    # BN-ReLU trains far above chance on the proxy; whether the quick search gets close is reported in passed
    assert float(result.metrics["BN-ReLU: mean accuracy"]) > 0.2
