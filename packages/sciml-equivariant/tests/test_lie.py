"""Tests of sciml_equivariant.lie: polar maps, the chart, samplers, layers, equivariance (Mironenco & Forré 2024)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sciml_equivariant.lie as lie
import scipy.linalg
import scipy.stats
import torch
from sciml_equivariant.lie import (
    SL,
    AffineEquivariantCNN,
    AffineGroup,
    GLPlus,
    GroupConv2d,
    GroupPooling,
    LiftingConv2d,
    affine_transform_images,
    chart_coordinates,
    invariant_integration_weights,
    lifting_equivariance_error,
    polar_decomposition,
    sample_rotations,
    sample_spd,
    xi,
    xi_inverse,
)
from sciml_protocols import SciMLInputError

F64 = torch.float64
QUARTER_TURN = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)


def _random_elements(num: int, n: int, *, special: bool, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(num, n, n, generator=generator, dtype=F64)
    det = torch.linalg.det(g)
    g[det < 0, 0] *= -1  # flip a row: det > 0
    if special:
        g = g / torch.linalg.det(g).pow(1.0 / n)[:, None, None]
    return g


def test_public_api() -> None:
    assert sorted(lie.__all__) == sorted(
        name for name in dir(lie) if not name.startswith("_") and name not in {"annotations"}
    )
    for name in lie.__all__:
        assert getattr(lie, name).__doc__


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("special", [False, True])
def test_polar_round_trip_against_scipy(n: int, special: bool) -> None:
    g = _random_elements(20, n, special=special, seed=n + 10 * special)
    p, r = polar_decomposition(g, special=special)
    eye = torch.eye(n, dtype=F64)
    torch.testing.assert_close(p @ r, g, atol=1e-12, rtol=0)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye.expand_as(r), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(20, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(p, p.transpose(-1, -2), atol=1e-12, rtol=0)
    assert bool((torch.linalg.eigvalsh(p) > 0).all())
    if special:
        torch.testing.assert_close(torch.linalg.det(p), torch.ones(20, dtype=F64), atol=1e-10, rtol=0)
    for k in range(3):  # scipy's left polar decomposition g = p u is the oracle
        u_ref, p_ref = scipy.linalg.polar(g[k].numpy(), side="left")
        np.testing.assert_allclose(p[k].numpy(), p_ref, atol=1e-12)
        np.testing.assert_allclose(r[k].numpy(), u_ref, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("group", [GLPlus, SL])
def test_chart_round_trip_and_logs(n: int, group: type[GLPlus] | type[SL]) -> None:
    special = group is SL
    g = _random_elements(10, n, special=special, seed=3 + n)
    x = group(n, rotation_sampler="haar").xi_inverse(g)
    torch.testing.assert_close(xi(x), g, atol=1e-11, rtol=0)
    sym, skew = (x + x.mT) / 2, (x - x.mT) / 2
    if special:
        torch.testing.assert_close(torch.diagonal(sym, dim1=-2, dim2=-1).sum(-1), torch.zeros(10, dtype=F64))
    for k in range(3):  # log P and log R against scipy's logm
        u_ref, p_ref = scipy.linalg.polar(g[k].numpy(), side="left")
        np.testing.assert_allclose(sym[k].numpy(), scipy.linalg.logm(p_ref).real, atol=1e-10)
        np.testing.assert_allclose(skew[k].numpy(), scipy.linalg.logm(u_ref).real, atol=1e-10)
    # the other direction: xi^{-1}(xi(X)) = X for X with rotation angles inside (-pi, pi)
    generator = torch.Generator().manual_seed(1)
    algebra = 0.5 * torch.randn(10, n, n, generator=generator, dtype=F64)
    if special:
        algebra = algebra - torch.diagonal(algebra, dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(n, dtype=F64)
    torch.testing.assert_close(xi_inverse(xi(algebra), special=special), algebra, atol=1e-10, rtol=0)


def test_chart_coordinates_are_orthonormal() -> None:
    # the coordinates are an isometry from the algebra (Frobenius) to R^dim
    x = torch.randn(50, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    coords = chart_coordinates(x)
    assert coords.shape == (50, 9)
    torch.testing.assert_close(coords.norm(dim=-1), torch.linalg.matrix_norm(x))
    traceless = x - torch.diagonal(x, dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(3, dtype=F64)
    coords = chart_coordinates(traceless, special=True)
    assert coords.shape == (50, 8)
    torch.testing.assert_close(coords.norm(dim=-1), torch.linalg.matrix_norm(traceless))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("group", [GLPlus, SL])
def test_sampled_pairs(n: int, group: type[GLPlus] | type[SL]) -> None:
    g, g_inv = group(n, rotation_sampler="haar").sample(64, generator=torch.Generator().manual_seed(0), dtype=F64)
    eye = torch.eye(n, dtype=F64).expand(64, n, n)
    torch.testing.assert_close(g @ g_inv, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_inv @ g, eye, atol=1e-12, rtol=0)
    det = torch.linalg.det(g)
    assert bool((det > 0).all())
    if group is SL:
        torch.testing.assert_close(det, torch.ones(64, dtype=F64), atol=1e-12, rtol=0)
    else:
        assert float(det.std()) > 0.05  # GL+ samples do change volume


def test_rotation_samplers_distribution() -> None:
    # equidistant: the N-point grid of [-pi, pi)
    r, _ = sample_rotations(8, dtype=F64)
    angles = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    torch.testing.assert_close(angles, -math.pi + 2 * math.pi * torch.arange(8, dtype=F64) / 8)
    # haar, n = 2: uniform angles
    r, _ = sample_rotations(2000, method="haar", generator=torch.Generator().manual_seed(0), dtype=F64)
    angles = torch.atan2(r[:, 1, 0], r[:, 0, 0]).numpy()
    assert scipy.stats.kstest((angles + math.pi) / (2 * math.pi), "uniform").pvalue > 1e-3
    # haar, n = 3: the rotation angle has density (1 - cos t) / pi on [0, pi], CDF (t - sin t) / pi
    r, _ = sample_rotations(2000, 3, method="haar", generator=torch.Generator().manual_seed(1), dtype=F64)
    assert bool((torch.linalg.det(r) > 0).all())
    trace = torch.diagonal(r, dim1=-2, dim2=-1).sum(-1).clamp(-1, 3)
    theta = torch.arccos((trace - 1) / 2).numpy()
    assert scipy.stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 1e-3


def test_spd_sampler_log_normal() -> None:
    variance = 0.1
    sigma = math.sqrt(variance)
    p, p_inv = sample_spd(3000, variance=variance, generator=torch.Generator().manual_seed(0), dtype=F64)
    w, v = np.linalg.eigh(p.numpy())  # log P by numpy's eigendecomposition
    log_p = torch.as_tensor((v * np.log(w)[:, None, :]) @ v.transpose(0, 2, 1))
    # diagonal of log P ~ N(0, sigma^2), off-diagonal ~ N(0, sigma^2 / 2)
    assert scipy.stats.kstest(log_p[:, 0, 0].numpy() / sigma, "norm").pvalue > 1e-3
    assert scipy.stats.kstest(log_p[:, 1, 1].numpy() / sigma, "norm").pvalue > 1e-3
    assert scipy.stats.kstest(log_p[:, 0, 1].numpy() / (sigma / math.sqrt(2)), "norm").pvalue > 1e-3
    # traceless (SL): log-eigenvalues +-lam with lam^2 / (sigma^2 / 2) ~ chi^2(2)
    p, p_inv = sample_spd(
        3000, variance=variance, traceless=True, generator=torch.Generator().manual_seed(1), dtype=F64
    )
    eig = torch.linalg.eigvalsh(p)
    torch.testing.assert_close(eig.prod(-1), torch.ones(3000, dtype=F64), atol=1e-12, rtol=0)
    lam = torch.log(eig[:, 1]).numpy()
    assert scipy.stats.kstest(lam**2 / (variance / 2), scipy.stats.chi2(2).cdf).pvalue > 1e-3
    torch.testing.assert_close(p @ p_inv, torch.eye(2, dtype=F64).expand(3000, 2, 2), atol=1e-12, rtol=0)


def test_integration_weights_and_affine_group() -> None:
    g = torch.stack([torch.eye(2, dtype=F64), 3 * torch.eye(2, dtype=F64)])
    torch.testing.assert_close(invariant_integration_weights(g), torch.tensor([0.5, 0.5 / 9], dtype=F64))
    torch.testing.assert_close(invariant_integration_weights(g, affine=False), torch.tensor([0.5, 0.5], dtype=F64))
    group = AffineGroup(GLPlus(2))
    element, inverse = group.sample(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    identity = group.compose(element, inverse)
    torch.testing.assert_close(identity[0], torch.zeros(5, 2, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(identity[1], torch.eye(2, dtype=F64).expand(5, 2, 2), atol=1e-12, rtol=0)
    points = torch.randn(5, 2, dtype=F64)
    back = group.act((inverse[0][0], inverse[1][0]), group.act((element[0][0], element[1][0]), points))
    torch.testing.assert_close(back, points)
    # invariance of the weighted sum: sum_i w(g_i) phi(g_i) with phi(g) = |det g| is N-independent (= 1)
    a, _ = group.linear.sample(7, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert float((group.integration_weights(a) * torch.linalg.det(a)).sum()) == pytest.approx(1.0)


def _lifting(group: GLPlus | SL, **kwargs: object) -> LiftingConv2d:
    torch.manual_seed(0)
    return LiftingConv2d(2, 3, 5, group=group, hidden_features=16, dtype=F64, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("group", [SL(2), GLPlus(2)])
def test_lifting_matches_brute_force_sum(group: GLPlus | SL) -> None:
    layer = _lifting(group, mask="hard")
    x = torch.randn(1, 2, 9, 9, dtype=F64, generator=torch.Generator().manual_seed(1))
    _, g_inv = group.sample(3, generator=torch.Generator().manual_seed(2), dtype=F64)
    out = layer(x, g_inv)
    assert out.shape == (1, 3, 3, 9, 9)
    with torch.no_grad():
        for j in range(3):
            for row, col in [(4, 4), (0, 7), (8, 2)]:
                total = torch.zeros(3, dtype=F64)
                for y_row in range(9):
                    for y_col in range(9):
                        d = torch.tensor([y_col - col, y_row - row], dtype=F64)
                        if d.abs().max() > 2:
                            continue
                        u = g_inv[j] @ d * (2 / 5)
                        if u.norm() > 1:
                            continue
                        k = layer.kernel(u).reshape(3, 2)
                        total += k @ x[0, :, y_row, y_col] * abs(float(torch.linalg.det(g_inv[j]))) / math.sqrt(50)
                assert layer.bias is not None
                torch.testing.assert_close(out[0, :, j, row, col], total + layer.bias, atol=1e-12, rtol=0)


@pytest.mark.parametrize("group", [SL(2), GLPlus(2)])
def test_lifting_and_group_conv_exactly_equivariant(group: GLPlus | SL) -> None:
    lift = _lifting(group)
    conv = GroupConv2d(3, 2, 3, group=group, hidden_features=16, dtype=F64)
    x = torch.randn(2, 2, 13, 13, dtype=F64, generator=torch.Generator().manual_seed(1))
    g, g_inv = group.sample(6, generator=torch.Generator().manual_seed(2), dtype=F64)
    _, h_inv = group.sample(4, generator=torch.Generator().manual_seed(3), dtype=F64)
    a, a_inv = QUARTER_TURN, QUARTER_TURN.T
    for matrix, inverse in ((a, a_inv), (a @ a, a_inv @ a_inv)):

        def rotate(z: torch.Tensor, matrix: torch.Tensor = matrix) -> torch.Tensor:
            return affine_transform_images(z, matrix, mode="exact")

        with torch.no_grad():
            # L(Tf)(x, A g) = L f(A^{-1} x, g)
            lifted = lift(rotate(x), g_inv @ inverse)
            torch.testing.assert_close(lifted, rotate(lift(x, g_inv)), atol=1e-12, rtol=0)
            # group conv with every sample moved by A
            out = conv(lifted, matrix @ g, h_inv @ inverse)
            torch.testing.assert_close(out, rotate(conv(lift(x, g_inv), g, h_inv)), atol=1e-12, rtol=0)
    # integer translation of an image with a zero margin
    y = torch.zeros(1, 2, 20, 20, dtype=F64)
    y[..., 8:12, 7:12] = torch.randn(1, 2, 4, 5, dtype=F64)
    shift = torch.tensor([2.0, -3.0], dtype=F64)
    eye = torch.eye(2, dtype=F64)
    with torch.no_grad():
        moved = lift(affine_transform_images(y, eye, shift, mode="exact"), g_inv)
        torch.testing.assert_close(moved, affine_transform_images(lift(y, g_inv), eye, shift, mode="exact"))


def test_lifting_equivariance_error_decreases_with_samples() -> None:
    group = SL(2, rotation_sampler="haar")
    layer = _lifting(group)
    x = torch.randn(2, 2, 13, 13, dtype=F64, generator=torch.Generator().manual_seed(4))

    def sample(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return group.sample(count, generator=generator, dtype=F64)

    errors = lifting_equivariance_error(layer, sample, x, QUARTER_TURN, [2, 8, 32, 128], repeats=4)
    print("lifting equivariance error (SL(2), 90-degree rotation) vs N:", errors)
    assert errors[128] < errors[8] < errors[2]
    assert errors[128] < 0.4 * errors[2]  # Monte Carlo: about 1/sqrt(N)


def _rotation(angle: float) -> torch.Tensor:
    return torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64)


def test_group_conv_kernel_is_continuous_across_half_turn() -> None:
    # the relative rotation angle enters the kernel as (cos, sin): no jump where the angle wraps from pi to -pi
    conv = GroupConv2d(2, 2, 3, group=SL(2), hidden_features=16, dtype=F64)
    x = torch.randn(1, 2, 1, 7, 7, dtype=F64, generator=torch.Generator().manual_seed(5))
    eye = torch.eye(2, dtype=F64)[None]
    with torch.no_grad():
        below, above, far = (conv(x, _rotation(a)[None], eye) for a in (math.pi - 1e-6, -math.pi + 1e-6, 0.0))
    torch.testing.assert_close(below, above, atol=1e-4, rtol=0)
    assert float((below - far).abs().max()) > 1e-3  # the kernel does depend on the angle


def test_group_conv_replicate_padding_keeps_constant_maps_constant() -> None:
    group = SL(2)
    x = torch.randn(1, 2, 3, 1, 1, dtype=F64, generator=torch.Generator().manual_seed(6)).expand(1, 2, 3, 9, 9)
    g, _ = group.sample(3, generator=torch.Generator().manual_seed(7), dtype=F64)
    _, h_inv = group.sample(2, generator=torch.Generator().manual_seed(8), dtype=F64)
    replicate = GroupConv2d(2, 2, 5, group=group, hidden_features=8, padding_mode="replicate", dtype=F64)
    zeros = GroupConv2d(2, 2, 5, group=group, hidden_features=8, dtype=F64)
    zeros.load_state_dict(replicate.state_dict())
    with torch.no_grad():
        out, reference = replicate(x, g, h_inv), zeros(x, g, h_inv)
    centre = reference[..., 4:5, 4:5]  # the only pixel whose window lies inside the 9 x 9 frame
    torch.testing.assert_close(out, centre.expand_as(out), atol=1e-12, rtol=0)
    assert float((reference - centre).abs().max()) > 1e-6  # zero padding does change the border


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_model_shapes_invariance_and_gradients(norm: str) -> None:
    model = AffineEquivariantCNN(
        SL(2), num_classes=4, width=4, num_samples=4, hidden_features=8, norm=norm, num_draws=3, dtype=F64
    )
    assert all(p.dtype == F64 for p in model.parameters())
    x = torch.randn(3, 1, 16, 16, dtype=F64, generator=torch.Generator().manual_seed(0))
    logits = model(x, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (3, 4)
    assert bool(torch.isfinite(logits).all())
    logits.sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    assert GroupPooling("mean")(torch.ones(1, 2, 3, 4, 4)).shape == (1, 2, 4, 4)
    # evaluation averages the logits of num_draws sample sets drawn one after the other from the generator
    model.eval()
    with torch.no_grad():
        averaged = model(x, generator=torch.Generator().manual_seed(2))
        model.num_draws = 1
        generator = torch.Generator().manual_seed(2)
        singles = [model(x, generator=generator) for _ in range(3)]
    torch.testing.assert_close(averaged, sum(singles) / 3)
    assert float((singles[0] - singles[1]).abs().max()) > 1e-8  # the draws (and their rotation offsets) differ


def test_lifting_gradcheck() -> None:
    layer = LiftingConv2d(1, 2, 3, group=GLPlus(2), hidden_features=4, dtype=F64)
    _, g_inv = GLPlus(2).sample(2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = torch.randn(1, 1, 5, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: layer(z, g_inv), (x,))


def test_affine_transform_images() -> None:
    image = torch.randn(2, 7, 7, dtype=F64)
    rotated = affine_transform_images(image, QUARTER_TURN, mode="exact")
    # the quarter turn in (column, row) coordinates is torch.rot90 over the (row, column) axes, once clockwise
    torch.testing.assert_close(rotated, torch.rot90(image, k=-1, dims=(-2, -1)))
    torch.testing.assert_close(affine_transform_images(image, QUARTER_TURN, mode="bilinear"), rotated)
    shear = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=F64)
    sheared = affine_transform_images(image, shear, mode="exact")
    row, col = 3, 5  # (T f)(p) = f(A^{-1}(p - c) + c): column 5 of row 3 reads column 5 - (3 - 3) = 5
    assert float(sheared[0, row, col]) == float(image[0, row, col])
    assert float(sheared[0, 4, 5]) == float(image[0, 4, 4])
    torch.testing.assert_close(affine_transform_images(image, shear, mode="bilinear"), sheared)


def test_bad_input() -> None:
    with pytest.raises(SciMLInputError, match="square"):
        polar_decomposition(torch.zeros(2, 3))
    with pytest.raises(SciMLInputError, match="det > 0"):
        polar_decomposition(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(SciMLInputError, match="det = 1"):
        polar_decomposition(2 * torch.eye(2), special=True)
    with pytest.raises(SciMLInputError, match="det = 1"):
        SL(2).xi_inverse(torch.diag(torch.tensor([2.0, 1.0])))
    with pytest.raises(SciMLInputError, match="det > 0"):
        GLPlus(2).check(torch.zeros(2, 2))
    with pytest.raises(SciMLInputError, match="NaN"):
        xi_inverse(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))
    with pytest.raises(SciMLInputError, match="2 x 2"):
        GLPlus(2).check(torch.eye(3))
    with pytest.raises(SciMLInputError, match="must be an int >= 1"):
        sample_spd(0)
    with pytest.raises(SciMLInputError, match="variance"):
        sample_spd(3, variance=-1.0)
    with pytest.raises(SciMLInputError, match="n = 2"):
        sample_rotations(3, 3, method="equidistant")
    with pytest.raises(SciMLInputError, match="odd"):
        LiftingConv2d(1, 2, 4, group=SL(2))
    with pytest.raises(SciMLInputError, match="group"):
        LiftingConv2d(1, 2, 3, group=SL(3, rotation_sampler="haar"))
    layer = LiftingConv2d(2, 2, 3, group=SL(2), hidden_features=4)
    _, g_inv = SL(2).sample(2)
    with pytest.raises(SciMLInputError, match="'x'"):
        layer(torch.zeros(1, 3, 5, 5), g_inv)
    with pytest.raises(SciMLInputError, match="'x'"):
        layer(torch.zeros(2, 5, 5), g_inv)
    with pytest.raises(SciMLInputError, match="g_inv"):
        layer(torch.zeros(1, 2, 5, 5), g_inv[0])
    with pytest.raises(SciMLInputError, match="dtype"):
        layer(torch.zeros(1, 2, 5, 5), g_inv.double())
    with pytest.raises(SciMLInputError, match="padding_mode"):
        GroupConv2d(2, 2, 3, group=SL(2), padding_mode="reflect")
    with pytest.raises(SciMLInputError, match="norm"):
        AffineEquivariantCNN(SL(2), norm="group")
    with pytest.raises(SciMLInputError, match="num_draws"):
        AffineEquivariantCNN(SL(2), num_draws=0)
    with pytest.raises(SciMLInputError, match="kernel_size"):
        AffineEquivariantCNN(SL(2), group_kernel_size=4)
    conv = GroupConv2d(2, 2, 3, group=SL(2), hidden_features=4)
    with pytest.raises(SciMLInputError, match="g_in"):
        conv(torch.zeros(1, 2, 3, 5, 5), *SL(2).sample(2))
    with pytest.raises(SciMLInputError, match="pixel grid"):
        affine_transform_images(torch.zeros(5, 5), torch.tensor([[0.9, 0.1], [0.0, 1.0]]), mode="exact")
    with pytest.raises(SciMLInputError, match="invertible"):
        affine_transform_images(torch.zeros(5, 5), torch.zeros(2, 2))
    with pytest.raises(SciMLInputError, match="mode"):
        affine_transform_images(torch.zeros(5, 5), torch.eye(2), mode="cubic")
