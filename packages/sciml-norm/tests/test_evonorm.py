"""Tests of the EvoNorm layers and convert_norm_act against timm's layers, closed forms and finite differences."""

from __future__ import annotations

from typing import Any

import pytest
import timm.layers.evo_norm as timm_evo
import torch
from sciml_norm._evonorm import (
    EvoNorm2dB0,
    EvoNorm2dB1,
    EvoNorm2dB2,
    EvoNorm2dS0,
    EvoNorm2dS0a,
    EvoNorm2dS1,
    EvoNorm2dS1a,
    EvoNorm2dS2,
    EvoNorm2dS2a,
    NormActConversion,
    convert_norm_act,
)
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64, interpreter_enabled
from torch import nn

C = 8
# name -> (ours, timm's, constructor kwargs shared by both); group settings exercise groups and group_size.
VARIANTS: dict[str, tuple[type[nn.Module], type[nn.Module], dict[str, Any]]] = {
    "B0": (EvoNorm2dB0, timm_evo.EvoNorm2dB0, {}),
    "B1": (EvoNorm2dB1, timm_evo.EvoNorm2dB1, {}),
    "B2": (EvoNorm2dB2, timm_evo.EvoNorm2dB2, {}),
    "S0": (EvoNorm2dS0, timm_evo.EvoNorm2dS0, {"groups": 2}),
    "S0a": (EvoNorm2dS0a, timm_evo.EvoNorm2dS0a, {"group_size": 2}),
    "S1": (EvoNorm2dS1, timm_evo.EvoNorm2dS1, {"groups": 4}),
    "S1a": (EvoNorm2dS1a, timm_evo.EvoNorm2dS1a, {"group_size": 4}),
    "S2": (EvoNorm2dS2, timm_evo.EvoNorm2dS2, {"groups": 2}),
    "S2a": (EvoNorm2dS2a, timm_evo.EvoNorm2dS2a, {"groups": 8}),
}
S_NAMES = [n for n in VARIANTS if n.startswith("S")]
B_NAMES = [n for n in VARIANTS if n.startswith("B")]
TOL = {"rtol": 2e-5, "atol": 2e-5}


def _perturb(layer: nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and the running variance away from their initial values."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            if name == "v":  # keep some entries near zero and some negative: both branches of B0's max occur
                p.mul_(1.5)
        if hasattr(layer, "running_var"):
            rv = layer.running_var
            rv.copy_(0.3 + 2.0 * torch.rand(rv.shape, generator=gen, dtype=rv.dtype))


def _pair(name: str, apply_act: bool, seed: int = 0, **extra: Any) -> tuple[nn.Module, nn.Module]:
    ours_cls, timm_cls, kwargs = VARIANTS[name]
    ref = timm_cls(C, apply_act=apply_act, **kwargs)
    _perturb(ref, torch.Generator().manual_seed(seed))
    ours = ours_cls(C, apply_act=apply_act, **kwargs, **extra)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _input(seed: int = 1, shape: tuple[int, ...] = (4, C, 5, 5), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (1.5 * torch.randn(shape, generator=gen, dtype=torch.float64) + 0.3).to(dtype)


def _forward_backward(layer: nn.Module, x: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = layer(x)
    (out * probe).sum().backward()
    grads = tuple(p.grad if p.grad is not None else torch.zeros_like(p) for _, p in sorted(layer.named_parameters()))
    assert x.grad is not None
    return (out.detach(), x.grad, *grads)


# ------------------------------------------------------------------------------------------- parity with timm


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("apply_act", [True, False], ids=["act", "noact"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_with_timm(name: str, apply_act: bool, training: bool) -> None:
    ours, ref = _pair(name, apply_act)
    ours.train(training)
    ref.train(training)
    x = _input()
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    got = _forward_backward(ours, x, probe)
    want = _forward_backward(ref, x, probe)
    labels = ["output", "x.grad"] + [f"{n}.grad" for n, _ in sorted(ref.named_parameters())]
    assert len(got) == len(want)
    for label, a, e in zip(labels, got, want, strict=True):
        assert_close(a, e, **TOL, msg=f"{name} apply_act={apply_act} training={training}: {label}")
    if name.startswith("B"):
        assert_close(ours.running_var, ref.running_var, msg="running_var")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", B_NAMES)
def test_running_var_timm_convention(name: str) -> None:
    ours, ref = _pair(name, True)
    ours.train()
    ref.train()
    for step in range(4):
        x = _input(seed=10 + step, shape=(3, C, 4, 5))
        with torch.no_grad():
            ours(x)
            ref(x)
    assert_close(ours.running_var, ref.running_var)  # type: ignore[arg-type]


@pytest.mark.parametrize("bessel", [True, False])
@pytest.mark.parametrize("name", B_NAMES)
def test_running_var_closed_form(name: str, bessel: bool) -> None:
    ours_cls, _, _ = VARIANTS[name]
    momentum = 0.2
    layer = ours_cls(C, momentum=momentum, bessel=bessel).train()
    expected = torch.ones(C, dtype=torch.float64)
    for step in range(3):
        x = _input(seed=20 + step, shape=(2, C, 3, 4))
        with torch.no_grad():
            layer(x)
        n = 2 * 3 * 4
        biased = x.double().var(dim=(0, 2, 3), unbiased=False)
        correction = n / (n - 1) if bessel else 1.0
        expected = (1 - momentum) * expected + momentum * correction * biased
    assert_close(layer.running_var, expected)  # type: ignore[arg-type]


def test_no_running_update_in_eval_or_without_act() -> None:
    x = _input()
    for layer in (EvoNorm2dB0(C).eval(), EvoNorm2dB1(C, apply_act=False).train()):
        with torch.no_grad():
            layer(x)
        assert torch.equal(layer.running_var, torch.ones(C))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_channels_last(name: str) -> None:
    ours, _ = _pair(name, True)
    ours.train()
    x = _input()
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    dense = _forward_backward(ours, x, probe)
    ours.load_state_dict(state)
    x_cl = x.to(memory_format=torch.channels_last)
    x_leaf = x_cl.detach().clone().requires_grad_(True)
    out = ours(x_leaf)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ours.load_state_dict(state)
    last = _forward_backward(ours, x_cl, probe)
    for a, e in zip(last, dense, strict=True):
        assert_close(a, e, **TOL)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bfloat16_input_like_timm(name: str) -> None:
    ours, ref = _pair(name, True)
    x = _input(dtype=torch.bfloat16)
    got, want = ours(x), ref(x)
    assert got.dtype == torch.bfloat16
    assert_close(got, want, rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("apply_act", [True, False])
@pytest.mark.parametrize("name", S_NAMES)
def test_s_layers_batch_independent(name: str, apply_act: bool) -> None:
    layer, _ = _pair(name, apply_act)
    x = _input(shape=(5, C, 4, 4))
    full = layer(x)
    for i in range(x.shape[0]):
        assert_close(full[i : i + 1], layer(x[i : i + 1]))


def _group_stat_oracle(x: torch.Tensor, groups: int, eps: float, centered: bool) -> torch.Tensor:
    n = x.shape[0]
    flat = x.double().reshape(n, groups, -1)
    stat = flat.var(dim=-1, unbiased=False) if centered else flat.pow(2).mean(dim=-1)
    return (stat + eps).sqrt().repeat_interleave(x.shape[1] // groups, dim=1).view(n, -1, 1, 1)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_apply_act_false_is_documented_map(name: str) -> None:
    layer, _ = _pair(name, False)
    layer.train()
    x = _input()
    w = layer.weight.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    b = layer.bias.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    z = x.double()
    if name in ("S0a", "S1a"):
        z = z / _group_stat_oracle(x, layer.groups, layer.eps, centered=True)  # type: ignore[arg-type]
    elif name == "S2a":
        z = z / _group_stat_oracle(x, layer.groups, layer.eps, centered=False)  # type: ignore[arg-type]
    assert getattr(layer, "v", None) is None
    assert_close(layer(x), z * w + b)


def test_s0_formula_by_hand() -> None:
    layer, _ = _pair("S0", True)
    x = _input()
    v = layer.v.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    w = layer.weight.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    b = layer.bias.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    xd = x.double()
    z = xd * torch.sigmoid(v * xd) / _group_stat_oracle(x, 2, 1e-5, centered=True)
    assert_close(layer(x), z * w + b)


def test_b0_eval_with_v_zero() -> None:
    layer, _ = _pair("B0", True)
    with torch.no_grad():
        layer.v.zero_()  # type: ignore[union-attr]
    layer.eval()
    x = _input()
    xd = x.double()
    eps = 1e-3
    rv = layer.running_var.double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    instance = (xd.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt()
    z = xd / torch.maximum((rv + eps).sqrt(), instance)
    w = layer.weight.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    b = layer.bias.detach().double().view(1, -1, 1, 1)  # type: ignore[union-attr]
    assert_close(layer(x), z * w + b)


@pytest.mark.parametrize("alpha", [0.05, 3.0, 40.0])
def test_s2_scale_invariance(alpha: float) -> None:
    layer = EvoNorm2dS2(C, groups=4, act_layer=nn.ReLU, eps=0.0, dtype=torch.float64)
    x = _input(dtype=torch.float64)
    assert_close(layer(alpha * x), layer(x))
    # SiLU is not positively homogeneous: the default S2 is not scale invariant.
    silu = EvoNorm2dS2(C, groups=4, eps=0.0, dtype=torch.float64)
    assert not torch.allclose(silu(alpha * x), silu(x))


@pytest.mark.parametrize(
    ("name", "training"), [("B0", True), ("B0", False), ("S0", True), ("B2", True), ("S1a", True), ("S2", True)]
)
def test_gradcheck_float64(name: str, training: bool) -> None:
    ours_cls, _, kwargs = VARIANTS[name]
    layer = ours_cls(C, **kwargs, dtype=torch.float64).train(training)
    _perturb(layer, torch.Generator().manual_seed(5))
    params = [p for _, p in sorted(layer.named_parameters())]
    names = [n for n, _ in sorted(layer.named_parameters())]
    x = _input(shape=(2, C, 3, 3), dtype=torch.float64)
    buffers = {k: v.clone() for k, v in layer.named_buffers()}

    def fn(x_: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        state = dict(zip(names, ps, strict=True)) | {k: v.clone() for k, v in buffers.items()}
        return torch.func.functional_call(layer, state, (x_,))

    gradcheck_float64(fn, x, *params)


# ------------------------------------------------------------------------------------------ state dicts, init


@pytest.mark.parametrize("apply_act", [True, False])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_round_trip_with_timm(name: str, apply_act: bool) -> None:
    ours_cls, timm_cls, kwargs = VARIANTS[name]
    ours = ours_cls(C, apply_act=apply_act, **kwargs)
    ref = timm_cls(C, apply_act=apply_act, **kwargs)
    assert set(ours.state_dict()) == set(ref.state_dict())
    _perturb(ours, torch.Generator().manual_seed(7))
    ref.load_state_dict(ours.state_dict(), strict=True)
    back = ours_cls(C, apply_act=apply_act, **kwargs)
    back.load_state_dict(ref.state_dict(), strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_defaults_and_reset_match_timm(name: str) -> None:
    ours_cls, timm_cls, _ = VARIANTS[name]
    ours, ref = ours_cls(32), timm_cls(32)
    for attr in ("eps", "apply_act", "momentum", "groups"):
        assert getattr(ours, attr, None) == getattr(ref, attr, None), attr
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    _perturb(ours, torch.Generator().manual_seed(8))
    ours.reset_parameters()  # type: ignore[operator]
    for key, value in ref.named_parameters():
        assert torch.equal(dict(ours.named_parameters())[key], value), key


def test_factory_kwargs() -> None:
    layer = EvoNorm2dB0(4, dtype=torch.float64, device="cpu")
    assert all(t.dtype == torch.float64 for t in layer.state_dict().values())
    meta = EvoNorm2dS1(4, groups=2, device="meta")
    assert meta.weight.is_meta
    out = EvoNorm2dS0(4, groups=2, dtype=torch.float64)(_input(shape=(1, 4, 2, 2), dtype=torch.float64))
    assert out.dtype == torch.float64


def test_groups_mode_decrement_matches_tensorflow_rule() -> None:
    # TensorFlow reference: lower the group count until it divides C.
    assert EvoNorm2dS0(24, groups=32, groups_mode="decrement").groups == 24
    assert EvoNorm2dS0(20, groups=8, groups_mode="decrement").groups == 5
    assert EvoNorm2dS1(7, groups=4, groups_mode="decrement").groups == 1
    assert EvoNorm2dS2(12, group_size=5, groups_mode="decrement").groups == 2
    layer = EvoNorm2dS0a(20, groups=8, groups_mode="decrement", apply_act=False, eps=0.0)
    x = _input(shape=(2, 20, 3, 3))
    assert_close(layer(x), x.double() / _group_stat_oracle(x, 5, 0.0, centered=True))


def test_act_layer_options() -> None:
    x = _input()
    relu_cls = EvoNorm2dS1(C, groups=4, act_layer=nn.ReLU)
    relu_name = EvoNorm2dS1(C, groups=4, act_layer="relu")
    assert isinstance(relu_cls.act, nn.ReLU)
    assert isinstance(relu_name.act, nn.ReLU)
    assert_close(relu_cls(x), relu_name(x))
    ref = timm_evo.EvoNorm2dS1(C, groups=4, act_layer=nn.ReLU)
    assert_close(relu_cls(x), ref(x))
    assert isinstance(EvoNorm2dS2(C, groups=4, apply_act=False, act_layer=nn.ReLU).act, nn.Identity)


# ----------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: EvoNorm2dS0(10, groups=4), "groups"),
        (lambda: EvoNorm2dS1(10, group_size=4), "group_size"),
        (lambda: EvoNorm2dS0(8, groups=0), "groups"),
        (lambda: EvoNorm2dS2(8, groups=2, groups_mode="round"), "groups_mode"),  # type: ignore[arg-type]
        (lambda: EvoNorm2dB0(8, eps=-1.0), "eps"),
        (lambda: EvoNorm2dB0(8, eps=0.0), "eps"),  # S0/B0 (and their kernels) need eps > 0
        (lambda: EvoNorm2dS0(8, groups=2, eps=0.0), "eps"),
        (lambda: EvoNorm2dS0a(8, groups=2, eps=float("nan")), "eps"),
        (lambda: EvoNorm2dB1(8, momentum=1.5), "momentum"),
        (lambda: EvoNorm2dB2(8, momentum=-0.1), "momentum"),
        (lambda: EvoNorm2dB0(0), "num_features"),
        (lambda: EvoNorm2dB0(8, fused="yes"), "fused"),  # type: ignore[arg-type]
        (lambda: EvoNorm2dS1(8, groups=2, act_layer="nope"), "act_layer"),
        (lambda: EvoNorm2dB1(8, bessel=1), "bessel"),  # type: ignore[arg-type]
    ],
)
def test_bad_constructor_arguments(build: Any, argument: str) -> None:
    with pytest.raises(SciMLInputError) as info:
        build()
    assert info.value.argument == argument


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bad_forward_inputs(name: str) -> None:
    layer, _ = _pair(name, True)
    bad = [
        torch.randn(2, C, 3),  # 3-D
        torch.randn(2, C, 3, 3, 1),  # 5-D
        torch.randn(2, C + 1, 3, 3),  # channels
        torch.randn(0, C, 3, 3),  # empty
        torch.ones(2, C, 3, 3, dtype=torch.int64),  # dtype
    ]
    for x in bad:
        with pytest.raises(SciMLInputError, match="argument 'x'"):
            layer(x)
    if name.startswith("B"):
        with pytest.raises(SciMLInputError, match="more than one value per channel"):
            layer.train()(torch.randn(1, C, 1, 1))
        layer.bessel = False  # type: ignore[assignment]  # the biased update is defined for n = 1
        assert torch.isfinite(layer.train()(torch.randn(1, C, 1, 1))).all()


# ---------------------------------------------------------------------------------------------- convert_norm_act


class SeparateActBlock(nn.Module):
    """timm-style residual block: one activation module per use."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + x)


class SharedReluBlock(nn.Module):
    """torchvision BasicBlock style: one ReLU module applied after bn1 and after the residual sum."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class FunctionalReluBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu(self.bn(self.conv(x))) + x


class UntraceableBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn, self.relu = nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 1e9:  # data-dependent control flow: torch.fx cannot trace it
            return x
        return self.relu(self.bn(x))


def _net(head_norm: str = "gn") -> nn.Sequential:
    head_norm_layer = nn.GroupNorm(2, 8) if head_norm == "gn" else nn.BatchNorm2d(8)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(SeparateActBlock(8), SharedReluBlock(8), FunctionalReluBlock(8)),
        nn.Sequential(nn.Conv2d(8, 8, 3), head_norm_layer, nn.ReLU(), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    with torch.no_grad():  # non-trivial affine parameters, so that copying them is visible
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


class BatchNormReLU(nn.Module):
    """Test layer with EvoNorm's constructor shape that computes BatchNorm (+ ReLU): conversion must be exact."""

    def __init__(self, num_features: int, apply_act: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.ones(num_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, 1e-5)
        return torch.relu(y) if self.apply_act else y


def _relu_calls(module: nn.Module) -> int:
    graph = getattr(module, "graph", None)
    assert graph is not None
    count = 0
    for node in graph.nodes:
        relu_module = node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.ReLU)
        relu_function = node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu)
        count += int(relu_module or relu_function)
    return count


def test_convert_norm_act_preserves_function_with_batchnorm_relu_layer() -> None:
    # Converting every BN(+ReLU) into a layer that computes BN(+ReLU) must not change the model's function: this
    # checks which ReLUs were absorbed (and that the post-residual ReLUs were kept) and that weights were copied.
    torch.manual_seed(0)
    net = _net(head_norm="bn").train()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    report: list[NormActConversion] = []
    convert_norm_act(net, BatchNormReLU, report=report)
    assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert len(report) == 8
    absorbed = {r.path: r.how for r in report if r.apply_act}
    assert absorbed == {
        "0.1": "sequential",
        "1.0.bn1": "traced",
        "1.1.bn1": "traced-graph",
        "1.2.bn": "traced-graph",
        "2.1": "sequential",
    }


def test_convert_norm_act_evonorm_s0() -> None:
    torch.manual_seed(0)
    net = _net(head_norm="gn")
    originals = {
        name: (m.weight.detach().clone(), m.bias.detach().clone())
        for name, m in net.named_modules()
        if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)
    }
    report: list[NormActConversion] = []
    out = convert_norm_act(net, "S0", groups=2, report=report)
    assert out is net
    evos = {name: m for name, m in net.named_modules() if isinstance(m, EvoNorm2dS0)}
    assert len(evos) == 8
    assert len(report) == 8
    assert sum(m.apply_act for m in evos.values()) == 5
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in net.modules())
    for name, (weight, bias) in originals.items():
        assert torch.equal(evos[name].weight, weight), name
        assert torch.equal(evos[name].bias, bias), name
    # the GN+ReLU and BN+ReLU pairs in the Sequentials are gone, replaced by EvoNorm(act) + Identity
    for seq in (net[0], net[2]):
        kinds = [type(m) for m in seq]  # type: ignore[union-attr]
        assert nn.ReLU not in kinds
        assert kinds.count(nn.Identity) == 1
    # separate-activation block: act1 absorbed, act2 (after the residual sum) kept
    block = net[1][0]  # type: ignore[index]
    assert isinstance(block.act1, nn.Identity)
    assert isinstance(block.act2, nn.ReLU)
    # shared ReLU: the block became a GraphModule with one ReLU call left (after the sum); same state-dict keys
    shared, functional = net[1][1], net[1][2]  # type: ignore[index]
    assert isinstance(shared, torch.fx.GraphModule)
    assert _relu_calls(shared) == 1
    assert isinstance(functional, torch.fx.GraphModule)
    assert _relu_calls(functional) == 0
    assert {"conv1.weight", "bn1.weight", "bn1.v", "conv2.bias", "bn2.bias"} <= set(shared.state_dict())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3)
    y.sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("layer", ["B0", EvoNorm2dB0])
def test_convert_to_b0_copies_running_var(layer: Any) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
    net.train()(torch.randn(4, 3, 5, 5))  # gives the BN a non-trivial running variance
    running = net[1].running_var.clone()  # type: ignore[union-attr]
    convert_norm_act(net, layer, bessel=False)
    evo = net[1]
    assert isinstance(evo, EvoNorm2dB0)
    assert evo.apply_act
    assert not evo.bessel
    assert torch.equal(evo.running_var, running)


def test_convert_groupnorm_keeps_groups_and_skips_what_it_cannot_handle() -> None:
    net = nn.Sequential(nn.Conv2d(3, 12, 1), nn.GroupNorm(3, 12), nn.ReLU(), UntraceableBlock(12))
    report: list[NormActConversion] = []
    convert_norm_act(net, "S2a", report=report)
    assert isinstance(net[1], EvoNorm2dS2a)
    assert net[1].groups == 3
    assert isinstance(net[3].bn, nn.BatchNorm2d)  # type: ignore[union-attr]
    skipped = [r for r in report if r.replacement is None]
    assert [r.path for r in skipped] == ["3.bn"]
    assert "cannot be traced" in skipped[0].how
    # the root block's shared ReLU would need a graph rewrite of the root itself: that pair is skipped
    root = SharedReluBlock(8)
    report = []
    convert_norm_act(root, "S1", groups=4, report=report)
    assert isinstance(root.bn1, nn.BatchNorm2d)
    assert isinstance(root.bn2, EvoNorm2dS1)
    assert not root.bn2.apply_act
    assert [r.how.split(":")[0] for r in report] == ["skipped", "traced"]


def test_convert_norm_act_bad_arguments() -> None:
    net = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU())
    with pytest.raises(SciMLInputError, match="argument 'layer'"):
        convert_norm_act(net, "S3")
    with pytest.raises(SciMLInputError, match="argument 'model'"):
        convert_norm_act("net", "S0")  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="argument 'groups'"):
        convert_norm_act(net, "S0")  # 32 groups do not divide 6 channels
    convert_norm_act(net, "S0", groups_mode="decrement")
    assert net[0].groups == 6  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------- fused path of the modules


@pytest.mark.interpret
@pytest.mark.skipif(
    not interpreter_enabled(),
    reason=(
        "Triton interpreter parity runs in the nox interpret session "
        "(TRITON_INTERPRET=1 must be set before triton loads)"
    ),
)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", ["S0", "B0"])
def test_fused_modules_match_timm_under_interpreter(name: str, training: bool) -> None:
    ours, ref = _pair(name, True, fused=True)
    ours.train(training)
    ref.train(training)
    x = _input(shape=(2, C, 3, 4))
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    for a, e in zip(_forward_backward(ours, x, probe), _forward_backward(ref, x, probe), strict=True):
        assert_close(a, e, **TOL)
    if name == "B0":
        assert_close(ours.running_var, ref.running_var)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", ["S0", "B0"])
def test_fused_modules_match_timm_on_cuda(name: str, channels_last: bool) -> None:
    ours, ref = _pair(name, True)
    cuda = torch.device("cuda")
    ours, ref = ours.to(cuda).train(), ref.to(cuda).train()
    x = _input(shape=(4, C, 9, 7)).to(cuda)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(x.device)
    for a, e in zip(_forward_backward(ours, x, probe), _forward_backward(ref, x, probe), strict=True):
        assert_close(a, e, rtol=1e-4, atol=1e-4)
