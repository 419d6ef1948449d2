"""Zero-chain hard instances: properties proved by Carmon et al. and Arjevani et al., checked against oracles."""

from __future__ import annotations

import math

import pytest
import torch
from sciml_optim.testing import RotatedZeroChain, StochasticZeroChain, ZeroChain
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import finite_difference_gradient, gradcheck_float64

SQRT_2PI_E = math.sqrt(2 * math.pi * math.e)


def _reference_value(x: list[float]) -> float:
    """The chain written out term by term in plain Python (math.erf), as an independent oracle."""

    def psi(t: float) -> float:
        return 0.0 if t <= 0.5 else math.exp(1.0 - 1.0 / (2.0 * t - 1.0) ** 2)

    def phi(t: float) -> float:
        return SQRT_2PI_E * 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))

    total = -psi(1.0) * phi(x[0])
    for i in range(1, len(x)):
        total += psi(-x[i - 1]) * phi(-x[i]) - psi(x[i - 1]) * phi(x[i])
    return total


def _mixed_points(T: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Points with |x_T| < 1 that include the chain's hard regions: partial progress, coordinates near +-1/2, +-1."""
    x = 3.0 * (2.0 * torch.rand(n, T, generator=generator, dtype=torch.float64) - 1.0)
    progress = torch.randint(0, T, (n, 1), generator=generator)
    index = torch.arange(T).expand(n, T)
    near_one = 1.0 + 0.3 * torch.randn(n, T, generator=generator, dtype=torch.float64)
    near_half = 0.5 + 0.1 * torch.randn(n, T, generator=generator, dtype=torch.float64)
    small = 0.5 * torch.randn(n, T, generator=generator, dtype=torch.float64)
    kind = torch.randint(0, 3, (n, 1), generator=generator)
    structured = torch.where(index < progress, near_one, torch.where(index == progress, near_half, small))
    x = torch.where(kind == 0, x, structured)
    x[:, -1] = 2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0  # |x_T| < 1
    return x


def test_value_matches_term_by_term_reference() -> None:
    f = ZeroChain(6)
    generator = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(20, 6, generator=generator, dtype=torch.float64)
    got = f(x)
    for row, value in zip(x.tolist(), got.tolist(), strict=True):
        assert value == pytest.approx(_reference_value(row), rel=1e-13, abs=1e-13)


def test_gradient_is_large_while_last_coordinate_is_small() -> None:
    T = 10
    f = ZeroChain(T)
    generator = torch.Generator().manual_seed(1)
    x = _mixed_points(T, 20_000, generator)
    norms = f.gradient(x).norm(dim=-1)
    sampled_min = float(norms.min())
    assert sampled_min > 1.0

    # Adversarial: minimise the gradient norm with |x_T| < 1 enforced by x_T = tanh(w_T), from the worst samples.
    start = x[norms.argsort()[:8]].clone()
    w = start.clone()
    w[:, -1] = torch.atanh(start[:, -1].clamp(-0.99, 0.99))
    w.requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=0.01)
    for _ in range(100):  # converges to a local minimum of the norm, about 1.3412 (sampled minimum 1.344)
        point = torch.cat([w[:, :-1], torch.tanh(w[:, -1:])], dim=-1)
        loss = torch.autograd.grad(f(point).sum(), point, create_graph=True)[0].square().sum(-1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        point = torch.cat([w[:, :-1], torch.tanh(w[:, -1:])], dim=-1)
        adversarial_min = float(f.gradient(point).norm(dim=-1).min())
    assert adversarial_min > 1.0, (sampled_min, adversarial_min)


def test_gradient_against_finite_differences_and_autograd() -> None:
    f = ZeroChain(7)
    generator = torch.Generator().manual_seed(2)
    for x in _mixed_points(7, 5, generator):
        analytic = f.gradient(x)
        numeric = finite_difference_gradient(f, x)
        torch.testing.assert_close(analytic, numeric, rtol=1e-7, atol=1e-7)
        leaf = x.clone().requires_grad_(True)
        (autograd,) = torch.autograd.grad(f(leaf), leaf)
        torch.testing.assert_close(autograd, analytic, rtol=1e-12, atol=1e-12)
    gradcheck_float64(f, _mixed_points(7, 3, generator))


def test_scaled_instance_gradient_and_constants() -> None:
    eps, L, T = 0.05, 2.0, 5
    f = ZeroChain(T, scale_eps=eps, L=L)
    unscaled = ZeroChain(T)
    radius = 152.0 * eps / L
    assert f.radius == pytest.approx(radius)
    assert f.gap_bound == pytest.approx(12 * T * 152.0 * eps**2 / L)
    generator = torch.Generator().manual_seed(3)
    y = _mixed_points(T, 50, generator)
    torch.testing.assert_close(f.gradient(radius * y), eps * unscaled.gradient(y))
    assert bool((f.gradient(radius * y).norm(dim=-1) > eps).all())
    x = radius * y[0]
    torch.testing.assert_close(f.gradient(x), finite_difference_gradient(f, x), rtol=1e-6, atol=1e-9)


def test_zero_chain_property() -> None:
    T = 12
    f = ZeroChain(T)
    generator = torch.Generator().manual_seed(4)
    for k in range(T):
        x = torch.zeros(200, T, dtype=torch.float64)
        x[:, :k] = 3.0 * torch.randn(200, k, generator=generator, dtype=torch.float64)
        x[:, k:] = 0.5 * (2.0 * torch.rand(200, T - k, generator=generator, dtype=torch.float64) - 1.0)
        progress = f.progress(x)
        grad = f.gradient(x)
        index = torch.arange(1, T + 1)
        beyond = index > progress.unsqueeze(-1) + 1
        assert bool((grad[beyond] == 0).all())


def test_progress_definition() -> None:
    f = ZeroChain(5)
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.6, 0.0, -0.51, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0, 2.0]])
    assert f.progress(x).tolist() == [0, 3, 5]
    assert f.progress(x, threshold=0.05).tolist() == [0, 5, 5]


def test_value_gap_at_most_12T() -> None:
    for T in (1, 5, 20):
        f = ZeroChain(T)
        zero = float(f(torch.zeros(T, dtype=torch.float64)))
        assert zero == pytest.approx(-SQRT_2PI_E / 2)
        # Each link is >= -sup Psi * sup Phi = -e sqrt(2 pi e) and the first term >= -sqrt(2 pi e).
        lower = -SQRT_2PI_E * (1.0 + math.e * (T - 1))
        approach = float(f(torch.full((T,), 40.0, dtype=torch.float64)))  # the infimum is approached along x = M 1
        assert lower <= approach
        assert approach == pytest.approx(lower, rel=1e-3)
        assert zero - lower <= 12 * T
        samples = 5.0 * torch.randn(2000, T, generator=torch.Generator().manual_seed(T), dtype=torch.float64)
        assert float(f(samples).min()) >= lower


def test_rotation_invariance() -> None:
    T, d = 6, 15
    f = RotatedZeroChain(T, d, seed=5)
    U = f.rotation
    torch.testing.assert_close(U.T @ U, torch.eye(T, dtype=torch.float64), rtol=0, atol=1e-13)
    generator = torch.Generator().manual_seed(6)
    y = _mixed_points(T, 40, generator)
    orthogonal = torch.randn(40, d, generator=generator, dtype=torch.float64)
    orthogonal = orthogonal - (orthogonal @ U) @ U.T
    x = y @ U.T + orthogonal
    torch.testing.assert_close(f(x), ZeroChain(T)(y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f.gradient(x), ZeroChain(T).gradient(y) @ U.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f.gradient(x[0]), finite_difference_gradient(f, x[0]), rtol=1e-7, atol=1e-7)
    assert torch.equal(f.progress(x), ZeroChain(T).progress(y))
    assert torch.equal(RotatedZeroChain(T, d, seed=5).rotation, U)
    assert not torch.equal(RotatedZeroChain(T, d, seed=6).rotation, U)


def test_stochastic_oracle_unbiased_with_bounded_variance() -> None:
    T, p, n = 6, 0.3, 20_000
    f = StochasticZeroChain(T, p, seed=7)
    x = torch.tensor([1.2, -0.9, 1.1, 0.3, 0.0, 0.0], dtype=torch.float64)  # prog_1/4 = 4, prog_1/2 = 3
    exact = f.gradient(x)
    draws = f.stochastic_gradient(x.expand(n, T))
    mean = draws.mean(0)
    std = draws.std(0)
    assert bool(((mean - exact).abs() <= 5 * std / math.sqrt(n) + 1e-15).all())
    # only coordinate prog_1/4 + 1 = 5 is random; its variance is (1 - p)/p * grad_5^2
    assert bool((std[:4] == 0).all())
    assert bool((std[5:] == 0).all())
    variance = float(((draws - exact) ** 2).sum(-1).mean())
    predicted = (1 - p) / p * float(exact[4]) ** 2
    assert variance == pytest.approx(predicted, rel=0.08)
    assert variance <= f.variance_bound
    assert set(torch.unique(draws[:, 4]).tolist()) <= {0.0, float(exact[4]) / p}
    exact_oracle = StochasticZeroChain(T, 1.0).stochastic_gradient(x.expand(5, T))
    torch.testing.assert_close(exact_oracle, exact.expand(5, T), rtol=0, atol=0)


def test_gradient_descent_needs_T_steps_to_reach_the_last_coordinate() -> None:
    T = 8
    for f in (ZeroChain(T), ZeroChain(T, scale_eps=0.1, L=1.0)):
        x = torch.zeros(T, dtype=torch.float64)
        step = f.radius / 152.0 * 20.0  # a long step (20 / l1 in unscaled units) still discovers one link per step
        for iteration in range(1, T):
            x = x - step * f.gradient(x)
            assert int((x != 0).nonzero().max()) + 1 <= iteration  # support grows by at most one coordinate
            assert float(x[-1]) == 0.0
        assert float(f.gradient(x).norm()) > f.radius * f.value_scale / f.radius**2  # > eps (= 1 unscaled)
    # the stochastic oracle reveals a new coordinate only with probability p: many more queries are needed
    g = StochasticZeroChain(4, p=0.1, seed=8)
    x = torch.zeros(4, dtype=torch.float64)
    queries = 0
    while float(x[-1]) == 0.0 and queries < 10_000:
        x = x - 0.2 * g.stochastic_gradient(x)
        queries += 1
    assert 4 * 3 <= queries < 10_000


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: ZeroChain(0), "T"),
        (lambda: ZeroChain(3, scale_eps=0.1), "L"),
        (lambda: ZeroChain(3, scale_eps=-1.0, L=1.0), "scale_eps"),
        (lambda: RotatedZeroChain(5, 3), "d"),
        (lambda: RotatedZeroChain(2, 3, seed=-1), "seed"),
        (lambda: StochasticZeroChain(3, p=0.0), "p"),
        (lambda: StochasticZeroChain(3, p=1.5), "p"),
    ],
)
def test_bad_construction(factory, argument) -> None:
    with pytest.raises(SciMLInputError) as info:
        factory()
    assert info.value.argument == argument


def test_bad_points() -> None:
    f = ZeroChain(3)
    with pytest.raises(SciMLInputError):
        f(torch.zeros(4))
    with pytest.raises(SciMLInputError):
        f(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(SciMLInputError):
        f.gradient(torch.tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(SciMLInputError):
        f.progress(torch.zeros(3), threshold=-1.0)
    with pytest.raises(SciMLInputError):
        f([0.0, 0.0, 0.0])  # type: ignore[arg-type]
