"""Tests of the magnitude invariant parametrizations (MIP) hypernetwork toolkit."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from sciml_norm._mip import (
    HyperNetwork,
    InputEncoding,
    encode_cos_sin,
    encode_input,
    encode_z_one_minus_z,
    mip_convergence_experiment,
)
from sciml_protocols import SciMLError, SciMLInputError
from sciml_protocols.testing import assert_close, finite_difference_gradient
from torch import nn


class Block(nn.Module):
    """A small module tree: conv, batch norm, a nested head and a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 2))

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return scale * self.head(torch.relu(self.norm(self.conv(x))))


def _block(seed: int = 0, dtype: torch.dtype = torch.float64) -> Block:
    torch.manual_seed(seed)
    block = Block().to(dtype)
    with torch.no_grad():  # non-trivial running statistics, then evaluation mode (vmap-safe)
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
    return block.eval()


def _with_params(primary: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """Oracle: a deep copy of the primary with the given values copied into its parameters."""
    clone = copy.deepcopy(primary)
    named = dict(clone.named_parameters())
    with torch.no_grad():
        for name, value in params.items():
            named[name].copy_(value)
    return clone


# ------------------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize("k", [1, 3, 8])
def test_cos_sin_has_constant_l2_norm(k: int) -> None:
    gamma = torch.rand(200, k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    gamma[0] = 0.0
    gamma[1] = 1.0
    encoded = encode_cos_sin(gamma)
    assert encoded.shape == (200, 2 * k)
    norms = torch.linalg.vector_norm(encoded, dim=-1)
    assert_close(norms, torch.full_like(norms, math.sqrt(k)), rtol=1e-12, atol=0.0)
    # endpoints: gamma = 0 -> (cos, sin) = (1, 0); gamma = 1 -> (0, 1)
    assert_close(encoded[0], torch.cat([torch.ones(k), torch.zeros(k)]).double(), atol=1e-15, rtol=0.0)
    assert_close(encoded[1], torch.cat([torch.zeros(k), torch.ones(k)]).double(), atol=1e-15, rtol=0.0)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_z_one_minus_z_has_constant_l1_norm(k: int) -> None:
    gamma = torch.rand(200, k, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + k))
    encoded = encode_z_one_minus_z(gamma)
    assert encoded.shape == (200, 2 * k)
    assert bool((encoded >= 0).all())
    norms = torch.linalg.vector_norm(encoded, ord=1, dim=-1)
    assert_close(norms, torch.full_like(norms, float(k)), rtol=1e-12, atol=0.0)
    assert torch.equal(encoded[:, :k], gamma)


def test_encodings_keep_batch_dimensions_and_module_form() -> None:
    gamma = torch.rand(2, 3, 4)
    for name, fn in (("cos|sin", encode_cos_sin), ("z|1-z", encode_z_one_minus_z)):
        module = InputEncoding(name)
        assert module.multiplier == 2
        assert torch.equal(module(gamma), fn(gamma))
        assert torch.equal(encode_input(gamma, name), fn(gamma))
        assert module(gamma).shape == (2, 3, 8)
    assert InputEncoding(None)(gamma) is gamma


@pytest.mark.parametrize("fn", [encode_cos_sin, encode_z_one_minus_z])
@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_out_of_range_input_error_warn_ignore(fn, bad: float) -> None:
    gamma = torch.tensor([[0.2], [bad]])
    with pytest.raises(SciMLInputError, match="gamma.*\\[0, 1\\]"):
        fn(gamma)
    with pytest.warns(UserWarning, match="\\[0, 1\\]"):
        warned = fn(gamma, out_of_range="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ignored = fn(gamma, out_of_range="ignore")
    assert warned.shape == ignored.shape == (2, 2)
    assert torch.equal(warned[0], ignored[0])


def test_encoding_bad_arguments() -> None:
    with pytest.raises(SciMLInputError, match="encoding"):
        encode_input(torch.rand(3), "sin")  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="out_of_range"):
        encode_cos_sin(torch.rand(3), out_of_range="clip")  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="floating"):
        encode_cos_sin(torch.tensor([0, 1]))
    with pytest.raises(SciMLInputError, match="dimension"):
        encode_z_one_minus_z(torch.tensor(0.5))


# --------------------------------------------------------------------------------------------------- hypernetwork


def test_zeroed_output_weight_gives_theta0_exactly() -> None:
    primary = _block(1)
    original = {name: p.detach().clone() for name, p in primary.named_parameters()}
    hyper = HyperNetwork(primary, 3, hidden_sizes=(8, 32))
    theta0 = hyper.theta0()
    for name, value in original.items():  # theta_0 starts as the primary's own parameters
        assert torch.equal(theta0[name], value)
    with torch.no_grad():
        hyper.output.weight.zero_()
    gammas = torch.rand(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    batched = hyper(gammas)
    for i in range(16):
        single = hyper(gammas[i])
        for name, value in original.items():
            assert torch.equal(single[name], value)
            assert torch.equal(batched[name][i], value)


def test_theta0_round_trip_and_errors() -> None:
    primary = nn.Linear(3, 2)
    hyper = HyperNetwork(primary, 1, hidden_sizes=(4,))
    new_weight = torch.arange(6.0).reshape(2, 3)
    hyper.set_theta0({"weight": new_weight})
    assert torch.equal(hyper.theta0()["weight"], new_weight)
    assert torch.equal(hyper.theta0()["bias"], primary.bias.detach())
    with pytest.raises(SciMLInputError, match="values"):
        hyper.set_theta0({"weight": torch.zeros(3, 2)})
    with pytest.raises(SciMLInputError, match="values"):
        hyper.set_theta0({"nope": torch.zeros(1)})
    base = HyperNetwork.baseline(primary, 1, hidden_sizes=(4,))
    with pytest.raises(SciMLError):
        base.theta0()
    with pytest.raises(SciMLError):
        base.set_theta0({})


@pytest.mark.parametrize("activation", ["leaky_relu", "relu"])
def test_baseline_is_positively_homogeneous_and_mip_is_not(activation: str) -> None:
    torch.manual_seed(0)
    primary = _block(2)
    base = HyperNetwork.baseline(primary, 4, hidden_sizes=(16, 64), activation=activation)  # type: ignore[arg-type]
    mip = HyperNetwork(primary, 4, hidden_sizes=(16, 64), activation=activation)  # type: ignore[arg-type]
    # the plain hypernetwork has no bias anywhere
    assert all(
        not name.endswith("bias") for name, _ in base.named_parameters(prefix="", recurse=True) if "primary" not in name
    )
    gamma = torch.rand(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.5
    for a in (0.1, 0.5, 1.7, 2.0):
        scaled = base(a * gamma)
        plain = base(gamma)
        for name in base.predicted_names:
            assert_close(scaled[name], a * plain[name], rtol=1e-6, atol=1e-12)
        # MIP: inputs a * gamma stay in [0, 1] (gamma <= 0.5, a <= 2), yet outputs are far from proportional
        scaled_mip = torch.cat([v.flatten(1) for v in mip(a * gamma).values()], dim=1)
        plain_mip = torch.cat([v.flatten(1) for v in mip(gamma).values()], dim=1)
        relative = torch.linalg.vector_norm(scaled_mip - a * plain_mip) / torch.linalg.vector_norm(a * plain_mip)
        assert relative > 0.05 * abs(1 - a)
    # homogeneity of degree one forces theta(0) = 0
    assert all(bool((v == 0).all()) for v in base(torch.zeros(4, dtype=torch.float64)).values())
    # the encoding alone (bias-free, no residual) already breaks the proportionality
    encoded_only = HyperNetwork(
        primary,
        4,
        hidden_sizes=(16, 64),
        activation=activation,
        residual=False,
        bias=False,  # type: ignore[arg-type]
    )
    theta = torch.cat([v.flatten(1) for v in encoded_only(gamma).values()], dim=1)
    theta_half = torch.cat([v.flatten(1) for v in encoded_only(0.5 * gamma).values()], dim=1)
    assert torch.linalg.vector_norm(theta_half - 0.5 * theta) > 0.1 * torch.linalg.vector_norm(0.5 * theta)


def test_predicted_selection_and_shapes() -> None:
    primary = _block(3)
    shapes = {name: p.shape for name, p in primary.named_parameters()}
    by_type = HyperNetwork(primary, 2, predicted=nn.Linear, hidden_sizes=(4,))
    assert by_type.predicted_names == ("head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias")
    by_names = HyperNetwork(_block(3), 2, predicted=["norm.weight", "conv"], hidden_sizes=(4,))
    assert by_names.predicted_names == ("conv.weight", "conv.bias", "norm.weight")
    by_predicate = HyperNetwork(_block(3), 2, predicted=lambda name, p: p.ndim > 1, hidden_sizes=(4,))
    assert by_predicate.predicted_names == ("conv.weight", "head.1.weight", "head.3.weight")
    everything = HyperNetwork(_block(3), 2, hidden_sizes=(4,))
    assert everything.predicted_names == tuple(shapes)
    assert everything.num_predicted == sum(p.numel() for p in primary.parameters())
    gamma = torch.rand(5, 2, dtype=torch.float64)
    for hyper in (by_type, by_names, by_predicate, everything):
        single = hyper(gamma[0])
        batched = hyper(gamma)
        assert tuple(single) == hyper.predicted_names
        for name in hyper.predicted_names:
            assert single[name].shape == shapes[name]
            assert batched[name].shape == (5, *shapes[name])
            assert single[name].dtype == torch.float64


def test_predicted_frozen_others_learnable() -> None:
    primary = _block(4)
    hyper = HyperNetwork(primary, 1, predicted=[nn.Conv2d, nn.Linear], hidden_sizes=(4, 8))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    hyper.primary_forward(torch.tensor([0.3]), x).square().sum().backward()
    named = dict(primary.named_parameters())
    for name in hyper.predicted_names:
        assert not named[name].requires_grad
        assert named[name].grad is None
    for name in ("norm.weight", "norm.bias"):  # not predicted: the primary's own learnable parameters
        assert named[name].requires_grad
        assert named[name].grad is not None
        assert bool(named[name].grad.abs().sum() > 0)
    for name, p in hyper.named_parameters():
        if not name.startswith("primary."):
            assert p.grad is not None, name


def test_functional_forward_matches_loaded_copy() -> None:
    primary = _block(5)
    hyper = HyperNetwork(primary, 2, predicted=["conv", nn.Linear], hidden_sizes=(8, 16), encoding="z|1-z")
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    gammas = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batched = hyper.primary_forward(gammas, x, scale=0.7)
        assert batched.shape == (4, 3, 2)
        for i in range(4):
            params = hyper(gammas[i])
            oracle = _with_params(primary, params)(x, scale=0.7)
            assert_close(hyper.primary_forward(gammas[i], x, scale=0.7), oracle, rtol=1e-12, atol=1e-12)
            assert_close(hyper.functional(gammas[i])(x, scale=0.7), oracle, rtol=1e-12, atol=1e-12)
            assert_close(batched[i], oracle, rtol=1e-12, atol=1e-12)
    # the primary itself is left untouched (no module surgery)
    assert isinstance(primary.conv.weight, nn.Parameter)


def test_gradients_match_finite_differences() -> None:
    torch.manual_seed(6)
    primary = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    hyper = HyperNetwork(primary, 1, predicted=["0"], hidden_sizes=(3,), activation="tanh")
    x = torch.randn(4, 2, dtype=torch.float64)
    gammas = torch.tensor([[0.2], [0.7]], dtype=torch.float64)

    def loss() -> torch.Tensor:
        return hyper.primary_forward(gammas, x).sin().sum()

    hyper.zero_grad()
    loss().backward()
    for name, param in hyper.named_parameters():
        if not param.requires_grad:
            continue
        original = param.detach().clone()

        def at(value: torch.Tensor, param: torch.Tensor = param) -> torch.Tensor:
            with torch.no_grad():
                param.copy_(value)
                return loss()

        numeric = finite_difference_gradient(at, original)
        with torch.no_grad():
            param.copy_(original)
        assert param.grad is not None, name
        assert_close(param.grad, numeric, rtol=1e-6, atol=1e-8)
    # and with respect to gamma itself, through the encoding
    gamma = torch.tensor([0.4, 0.65], dtype=torch.float64, requires_grad=True)

    def of_gamma(g: torch.Tensor) -> torch.Tensor:
        return hyper.primary_forward(g.unsqueeze(-1), x).sin().sum()

    (analytic,) = torch.autograd.grad(of_gamma(gamma), gamma)
    assert_close(analytic, finite_difference_gradient(of_gamma, gamma.detach()), rtol=1e-6, atol=1e-8)


def test_scalar_gamma_and_dtype_follow_primary() -> None:
    primary = nn.Linear(2, 2)
    hyper = HyperNetwork(primary, 1, hidden_sizes=(4,))
    assert hyper.output.weight.dtype == torch.float32
    assert torch.equal(hyper(0.25)["weight"], hyper(torch.tensor([0.25]))["weight"])
    assert torch.equal(hyper(torch.tensor(0.25))["weight"], hyper(torch.tensor([0.25], dtype=torch.float64))["weight"])
    double = HyperNetwork(nn.Linear(2, 2).double(), 1, hidden_sizes=(4,))
    assert double.output.weight.dtype == torch.float64
    assert double(0.5)["bias"].dtype == torch.float64


def test_hypernetwork_bad_input() -> None:
    primary = nn.Linear(2, 2)
    hyper = HyperNetwork(primary, 2, hidden_sizes=(4,))
    with pytest.raises(SciMLInputError, match="gamma"):
        hyper(torch.rand(3))
    with pytest.raises(SciMLInputError, match="gamma"):
        hyper(torch.rand(2, 2, 2))
    with pytest.raises(SciMLInputError, match="gamma"):
        hyper(torch.rand(0, 2))
    with pytest.raises(SciMLInputError, match="gamma"):
        hyper(torch.tensor([0, 1]))
    with pytest.raises(SciMLInputError, match="\\[0, 1\\]"):
        hyper(torch.tensor([0.5, 1.2]))
    warn = HyperNetwork(nn.Linear(2, 2), 2, hidden_sizes=(4,), out_of_range="warn")
    with pytest.warns(UserWarning, match="\\[0, 1\\]"):
        warn(torch.tensor([0.5, 1.2]))
    base = HyperNetwork.baseline(nn.Linear(2, 2), 2, hidden_sizes=(4,))
    base(torch.tensor([3.0, -2.0]))  # no range for the plain hypernetwork ...
    with pytest.raises(SciMLInputError, match="finite"):
        base(torch.tensor([float("inf"), 0.0]))  # ... but it must be finite
    with pytest.raises(SciMLInputError, match="predicted"):
        HyperNetwork(nn.Linear(2, 2), 1, predicted=["missing"])
    with pytest.raises(SciMLInputError, match="predicted"):
        HyperNetwork(nn.Linear(2, 2), 1, predicted=nn.Conv2d)
    with pytest.raises(SciMLInputError, match="predicted"):
        HyperNetwork(nn.Linear(2, 2), 1, predicted=[3])  # type: ignore[list-item]
    with pytest.raises(SciMLInputError, match="input_dim"):
        HyperNetwork(nn.Linear(2, 2), 0)
    with pytest.raises(SciMLInputError, match="hidden_sizes"):
        HyperNetwork(nn.Linear(2, 2), 1, hidden_sizes=(4, 0))
    with pytest.raises(SciMLInputError, match="encoding"):
        HyperNetwork(nn.Linear(2, 2), 1, encoding="sin")  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="activation"):
        HyperNetwork(nn.Linear(2, 2), 1, activation="swish")  # type: ignore[arg-type]
    with pytest.raises(SciMLInputError, match="primary"):
        HyperNetwork(lambda x: x, 1)  # type: ignore[arg-type]
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
    with pytest.raises(SciMLInputError, match="dtype"):
        HyperNetwork(mixed, 1)


def test_initial_delta_is_small_next_to_theta0() -> None:
    torch.manual_seed(7)
    primary = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))
    hyper = HyperNetwork(primary, 2)
    theta0 = torch.cat([v.flatten() for v in hyper.theta0().values()])
    with torch.no_grad():
        theta = torch.cat([v.flatten() for v in hyper(torch.tensor([0.3, 0.9])).values()])
    # documented scale: ||delta||_2 of the order of ||E(gamma)||_2 = sqrt(2), entries ~ 1 / sqrt(P)
    delta = torch.linalg.vector_norm(theta - theta0)
    assert math.sqrt(2) / 2 < float(delta) < 2 * math.sqrt(2)
    assert float(delta / torch.linalg.vector_norm(theta0)) < 0.5


# ------------------------------------------------------------------------------------------------------ experiment


def test_mip_converges_faster_than_baseline_over_seeds() -> None:
    result = mip_convergence_experiment(seeds=(0, 1, 2, 3, 4), steps=100)
    mip, base = result["mip"], result["baseline"]
    final_wins = sum(m < b for m, b in zip(mip["final"], base["final"], strict=True))
    auc_wins = sum(m < b for m, b in zip(mip["auc"], base["auc"], strict=True))
    assert final_wins >= 4, (mip["final"], base["final"])
    assert auc_wins >= 4, (mip["auc"], base["auc"])
    assert result["mip_wins"] == final_wins
    assert result["eval_steps"][0] == 0
    assert result["eval_steps"][-1] == 100
    assert all(len(curve) == 100 for curve in mip["train"] + base["train"])
    # both start from comparable, untrained losses: the gap is made by training, not by the first evaluation
    assert all(curve[0] > 0.05 for curve in mip["eval"] + base["eval"])


def test_experiment_is_deterministic_and_validates() -> None:
    first = mip_convergence_experiment(seeds=(3,), steps=6, eval_every=3)
    second = mip_convergence_experiment(seeds=(3,), steps=6, eval_every=3)
    assert first["mip"]["eval"] == second["mip"]["eval"]
    assert first["baseline"]["train"] == second["baseline"]["train"]
    assert first["eval_steps"] == [0, 3, 6]
    with pytest.raises(SciMLInputError, match="seeds"):
        mip_convergence_experiment(seeds=())
    with pytest.raises(SciMLInputError, match="steps"):
        mip_convergence_experiment(steps=0)
