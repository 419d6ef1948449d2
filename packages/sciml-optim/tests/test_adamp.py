"""AdamP and SGDP against the authors' package (adamp 0.3.0), timm, torch's AdamW/SGD and closed-form invariants."""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch
from sciml_optim._adamp import SGDP, AdamP
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import OptimizerConformance, assert_close
from torch import nn

# float32 runs of 100 steps on the CNN below: the Adam moments and direction use the authors' op order (bitwise equal);
# the scale-invariance test and the projection compute the same formulas from per-row sums, so they differ from the
# peers by float rounding only.
F32_RTOL, F32_ATOL = 1e-5, 1e-6
# float64, where our op order differs from torch's (lerp vs mul/add, addcdiv vs add with alpha).
F64_RTOL, F64_ATOL = 1e-10, 1e-12


class TestAdamPConformance(OptimizerConformance):
    optimizer_class = AdamP
    optimizer_kwargs = MappingProxyType({"lr": 0.05, "weight_decay": 1e-3})


class TestAdamPNesterovConformance(OptimizerConformance):
    optimizer_class = AdamP
    optimizer_kwargs = MappingProxyType({"lr": 0.05, "nesterov": True, "delta": 1.0})


class TestSGDPConformance(OptimizerConformance):
    optimizer_class = SGDP
    optimizer_kwargs = MappingProxyType({"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4})


class TestSGDPNesterovConformance(OptimizerConformance):
    optimizer_class = SGDP
    optimizer_kwargs = MappingProxyType({"lr": 0.02, "momentum": 0.9, "nesterov": True, "delta": 1.0})


# ---------------------------------------------------------------------------------------------- a Conv-BN net


def _cnn(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).to(dtype)


def _batches(dtype: torch.dtype, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        yield torch.randn(8, 3, 8, 8, generator=generator, dtype=dtype), torch.randint(0, 5, (8,), generator=generator)


def _train(model: nn.Module, make: Callable[[Any], torch.optim.Optimizer], dtype: torch.dtype, steps: int) -> None:
    optimizer = make(model.parameters())
    for x, y in _batches(dtype, steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _compare(
    make_ours: Callable[[Any], torch.optim.Optimizer],
    make_peer: Callable[[Any], torch.optim.Optimizer],
    dtype: torch.dtype,
    rtol: float,
    atol: float,
    steps: int = 100,
) -> None:
    ours, peer = _cnn(dtype), _cnn(dtype)
    _train(ours, make_ours, dtype, steps)
    _train(peer, make_peer, dtype, steps)
    for a, b in zip(ours.parameters(), peer.parameters(), strict=True):
        assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol)


ADAMP_CASES = [
    {"lr": 1e-2},
    {"lr": 1e-2, "weight_decay": 1e-2, "nesterov": True},
    {"lr": 3e-3, "betas": (0.8, 0.99), "weight_decay": 0.1, "delta": 0.2, "wd_ratio": 0.5},
]


@pytest.mark.parametrize("kwargs", ADAMP_CASES)
@pytest.mark.parametrize("foreach", [False, True])
def test_adamp_matches_authors_package(kwargs: dict[str, Any], foreach: bool) -> None:
    import adamp

    _compare(
        lambda p: AdamP(p, foreach=foreach, **kwargs),
        lambda p: adamp.AdamP(p, **kwargs),
        torch.float32,
        F32_RTOL,
        F32_ATOL,
    )


@pytest.mark.parametrize("kwargs", ADAMP_CASES[1:])
def test_adamp_matches_timm(kwargs: dict[str, Any]) -> None:
    import timm.optim as timm_optim

    _compare(lambda p: AdamP(p, **kwargs), lambda p: timm_optim.AdamP(p, **kwargs), torch.float32, F32_RTOL, F32_ATOL)


SGDP_CASES = [
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"lr": 0.02, "momentum": 0.5, "dampening": 0.3, "weight_decay": 1e-2, "delta": 0.2, "wd_ratio": 0.3},
]


@pytest.mark.parametrize("kwargs", SGDP_CASES)
@pytest.mark.parametrize("foreach", [False, True])
def test_sgdp_matches_authors_package(kwargs: dict[str, Any], foreach: bool) -> None:
    import adamp

    _compare(
        lambda p: SGDP(p, foreach=foreach, **kwargs),
        lambda p: adamp.SGDP(p, **kwargs),
        torch.float32,
        F32_RTOL,
        F32_ATOL,
    )


def test_sgdp_matches_timm_with_nesterov() -> None:
    import timm.optim as timm_optim

    kwargs = SGDP_CASES[1]
    _compare(lambda p: SGDP(p, **kwargs), lambda p: timm_optim.SGDP(p, **kwargs), torch.float32, F32_RTOL, F32_ATOL)


def test_sgdp_without_nesterov_projects_the_buffer_like_the_authors_not_like_timm() -> None:
    # Documented divergence: the authors' SGDP projects the momentum buffer in place, timm projects a copy.
    import timm.optim as timm_optim

    ours, peer = _cnn(torch.float64), _cnn(torch.float64)
    kwargs = {"lr": 0.05, "momentum": 0.9}
    _train(ours, lambda p: SGDP(p, **kwargs), torch.float64, 3)
    _train(peer, lambda p: timm_optim.SGDP(p, **kwargs), torch.float64, 3)
    conv_ours, conv_peer = next(iter(ours.parameters())), next(iter(peer.parameters()))
    assert not torch.allclose(conv_ours, conv_peer, rtol=1e-12, atol=0)


def test_adamp_with_zero_delta_is_adamw() -> None:
    kwargs = {"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-7, "weight_decay": 0.05}
    _compare(
        lambda p: AdamP(p, delta=0.0, **kwargs),
        lambda p: torch.optim.AdamW(p, foreach=False, **kwargs),
        torch.float64,
        F64_RTOL,
        F64_ATOL,
    )


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdp_with_zero_delta_is_sgd(nesterov: bool) -> None:
    # dampening=0: torch seeds the buffer with g, SGDP with 0*mu + g: the same.
    _compare(
        lambda p: SGDP(p, lr=0.05, momentum=0.9, nesterov=nesterov, delta=0.0),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov, foreach=False),
        torch.float64,
        F64_RTOL,
        F64_ATOL,
    )


def test_sgdp_with_dampening_differs_from_sgd_on_step_one() -> None:
    w1 = nn.Parameter(torch.ones(3, dtype=torch.float64))
    w2 = nn.Parameter(torch.ones(3, dtype=torch.float64))
    w1.grad = torch.full((3,), 2.0, dtype=torch.float64)
    w2.grad = w1.grad.clone()
    SGDP([w1], lr=0.1, momentum=0.9, dampening=0.5).step()
    torch.optim.SGD([w2], lr=0.1, momentum=0.9, dampening=0.5).step()
    assert torch.allclose(w1, torch.full((3,), 1.0 - 0.1 * 0.5 * 2.0, dtype=torch.float64))
    assert torch.allclose(w2, torch.full((3,), 1.0 - 0.1 * 2.0, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- invariants


def test_norm_growth_invariant_float64() -> None:
    # Gradients orthogonal to every row of w: the channel view projects; with wd=0 the update is orthogonal to w,
    # so ||w_{t+1}||^2 - ||w_t||^2 = s_t^2 ||u_proj||^2 (Pythagoras), checked against an independent Adam.
    generator = torch.Generator().manual_seed(3)
    w = nn.Parameter(torch.randn(4, 6, dtype=torch.float64, generator=generator))
    lr, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-300
    optimizer = AdamP([w], lr=lr, betas=(beta1, beta2), eps=eps)
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t in range(1, 8):
        w_old = w.detach().clone()
        g = torch.randn(4, 6, dtype=torch.float64, generator=generator)
        g -= w_old * (g * w_old).sum(1, keepdim=True) / (w_old * w_old).sum(1, keepdim=True)
        w.grad = g
        optimizer.step()
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        u = m / ((v / (1 - beta2**t)).sqrt() + eps)
        unit = w_old / w_old.norm(dim=1, keepdim=True)
        u_proj = u - unit * (unit * u).sum(1, keepdim=True)
        step = lr / (1 - beta1**t)
        assert_close(w.detach(), w_old - step * u_proj, rtol=1e-13, atol=1e-15)
        growth = w.detach().pow(2).sum() - w_old.pow(2).sum()
        expected = step**2 * u_proj.pow(2).sum()
        assert abs(float(growth - expected)) <= 1e-12 * float(w_old.pow(2).sum())


def test_scale_invariant_weights_are_projected_and_others_are_not() -> None:
    model = _cnn(torch.float64)
    x, y = next(_batches(torch.float64, 1))
    with_projection, without = copy.deepcopy(model), copy.deepcopy(model)
    for copy_ in (with_projection, without):
        nn.functional.cross_entropy(copy_(x), y).backward()
    AdamP(with_projection.parameters(), lr=0.01, weight_decay=0.1).step()
    AdamP(without.parameters(), lr=0.01, weight_decay=0.1, delta=0.0).step()
    named = dict(model.named_parameters())
    changed = {
        name
        for (name, a), b in zip(with_projection.named_parameters(), without.parameters(), strict=True)
        if not torch.equal(a, b)
    }
    assert changed == {"0.weight", "3.weight"}, changed  # the two convolutions before BatchNorm
    assert named["8.weight"].dim() == 2  # the linear head: not scale invariant, not projected


# ---------------------------------------------------------------------------------------------- behaviour


def test_maximize_equals_negated_gradient() -> None:
    w1 = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    w2 = nn.Parameter(w1.detach().clone())
    o1 = AdamP([w1], lr=0.1, weight_decay=0.1, maximize=True)
    o2 = AdamP([w2], lr=0.1, weight_decay=0.1)
    s1 = SGDP([w1], lr=0.1, momentum=0.5, maximize=True)
    s2 = SGDP([w2], lr=0.1, momentum=0.5)
    for k in range(3):
        g = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        w1.grad, w2.grad = g.clone(), -g
        o1.step()
        o2.step()
        s1.step()
        s2.step()
    assert torch.equal(w1, w2)


@pytest.mark.parametrize("cls", [AdamP, SGDP])
@pytest.mark.parametrize("foreach", [False, True])
def test_nonfinite_gradients_propagate_to_their_parameter_only(cls: type, foreach: bool) -> None:
    bad = nn.Parameter(torch.ones(2, 3))
    good = nn.Parameter(torch.ones(4))
    reference = nn.Parameter(torch.ones(4))
    bad.grad = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 2.0]])
    good.grad = torch.arange(4.0)
    reference.grad = torch.arange(4.0)
    cls([bad, good], lr=0.1, foreach=foreach).step()
    cls([reference], lr=0.1, foreach=foreach).step()
    assert torch.isnan(bad).any()
    assert torch.equal(good, reference)


def test_foreach_is_bitwise_equal_to_for_loop_on_the_cnn() -> None:
    a, b = _cnn(torch.float32), _cnn(torch.float32)
    kwargs = {"lr": 1e-2, "weight_decay": 1e-2, "nesterov": True}
    _train(a, lambda p: AdamP(p, foreach=False, **kwargs), torch.float32, 20)
    _train(b, lambda p: AdamP(p, foreach=True, **kwargs), torch.float32, 20)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)


def test_state_layout() -> None:
    w = nn.Parameter(torch.randn(3, 2))
    w.grad = torch.randn(3, 2)
    optimizer = AdamP([w])
    optimizer.step()
    state = optimizer.state[w]
    assert state["step"].dtype == torch.float32
    assert float(state["step"]) == 1.0
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    sgdp = SGDP([w], lr=0.1)
    sgdp.step()
    assert set(sgdp.state[w]) == {"step", "momentum_buffer"}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"eps": 0.0}, "eps"),
        ({"delta": -0.1}, "delta"),
        ({"wd_ratio": 1.5}, "wd_ratio"),
        ({"wd_ratio": -0.1}, "wd_ratio"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": float("nan")}, "lr"),
        ({"foreach": True, "fused": True}, "fused"),
    ],
)
def test_adamp_bad_inputs(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(SciMLInputError) as info:
        AdamP([nn.Parameter(torch.ones(2))], **kwargs)
    assert info.value.argument == argument


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "dampening": 2.0}, "dampening"),
        ({"lr": 0.1, "eps": -1.0}, "eps"),
        ({"lr": 0.1, "delta": -1.0}, "delta"),
        ({"lr": 0.1, "wd_ratio": 2.0}, "wd_ratio"),
        ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_sgdp_bad_inputs(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(SciMLInputError) as info:
        SGDP([nn.Parameter(torch.ones(2))], **kwargs)
    assert info.value.argument == argument


def test_bad_param_group_is_rejected() -> None:
    optimizer = AdamP([nn.Parameter(torch.ones(2))])
    with pytest.raises(SciMLInputError):
        optimizer.add_param_group({"params": [nn.Parameter(torch.ones(2))], "lr": -1.0})


@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_sparse_gradients_are_rejected(cls: type) -> None:
    w = nn.Parameter(torch.ones(4, 2))
    w.grad = torch.eye(4, 2).to_sparse()
    with pytest.raises(SciMLInputError):
        cls([w], lr=0.1).step()


def test_fused_on_cpu_raises_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w = nn.Parameter(torch.ones(3, 2))
    w.grad = torch.ones(3, 2)
    with pytest.raises(SciMLInputError, match="CUDA"):
        AdamP([w], fused=True).step()


# ---------------------------------------------------------------------------------------------- DTensor


@pytest.fixture(scope="module")
def cpu_mesh() -> Iterator[Any]:
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from torch.distributed.device_mesh import init_device_mesh

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'store'}", rank=0, world_size=1)
        try:
            yield init_device_mesh("cpu", (1,))
        finally:
            dist.destroy_process_group()


@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_dtensor_shard0_matches_plain_tensors(cpu_mesh: Any, cls: type) -> None:
    from torch.distributed.tensor import Shard, distribute_tensor

    generator = torch.Generator().manual_seed(5)
    start = torch.randn(6, 5, dtype=torch.float64, generator=generator)
    plain = nn.Parameter(start.clone())
    sharded = nn.Parameter(distribute_tensor(start.clone(), cpu_mesh, [Shard(0)]))
    kwargs: dict[str, Any] = {"lr": 0.1, "weight_decay": 0.1}
    if cls is SGDP:
        kwargs["momentum"] = 0.9
    o_plain, o_sharded = cls([plain], **kwargs), cls([sharded], **kwargs)
    for _ in range(3):
        g = torch.randn(6, 5, dtype=torch.float64, generator=generator)
        g -= start * (g * start).sum(1, keepdim=True) / (start * start).sum(1, keepdim=True)  # projection fires
        plain.grad = g.clone()
        sharded.grad = distribute_tensor(g.clone(), cpu_mesh, [Shard(0)])
        o_plain.step()
        o_sharded.step()
    assert_close(sharded.full_tensor(), plain.detach(), rtol=1e-13, atol=1e-15)  # pyright: ignore[reportAttributeAccessIssue]


def test_fused_rejects_sharded_dtensor(cpu_mesh: Any) -> None:
    from torch.distributed.tensor import Shard, distribute_tensor

    w = nn.Parameter(distribute_tensor(torch.ones(4, 3), cpu_mesh, [Shard(0)]))
    w.grad = distribute_tensor(torch.ones(4, 3), cpu_mesh, [Shard(0)])
    with pytest.raises(SciMLInputError, match="sharded"):
        AdamP([w], fused=True).step()


def test_step_count_is_per_parameter() -> None:
    # A parameter that joins late starts its own bias correction, as in torch.optim.Adam.
    a = nn.Parameter(torch.ones(2, 2))
    b = nn.Parameter(torch.ones(3))
    optimizer = AdamP([a, b], lr=0.1)
    a.grad = torch.ones(2, 2)
    optimizer.step()
    b.grad = torch.ones(3)
    optimizer.step()
    assert float(optimizer.state[a]["step"]) == 2.0
    assert float(optimizer.state[b]["step"]) == 1.0
    # first Adam step on b moves each entry by exactly lr (u = g/|g| up to eps)
    assert torch.allclose(b, torch.full((3,), 0.9), atol=1e-6)
    assert math.isfinite(float(a.detach().sum()))
