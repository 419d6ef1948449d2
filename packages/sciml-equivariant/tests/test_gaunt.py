"""Tests of the Gaunt coefficients and the Gaunt tensor product against independent oracles.

Oracles: direct quadrature of three e3nn spherical harmonics (Gauss-Legendre from scipy times a uniform azimuth
grid), e3nn's ``o3.TensorProduct`` restricted to the even paths, the pointwise product of the two input functions
evaluated with e3nn's harmonics, rotations (Wigner D), closed forms and gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
from e3nn import o3
from sciml_equivariant._gaunt import (
    GauntPlan,
    gaunt_coefficients,
    gaunt_path_constant,
    gaunt_tensor_product,
)
from sciml_equivariant._so3 import rand_rotation, spherical_harmonics, wigner_D
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64

BACKENDS = ["grid", "fft", "cg"]


def _e3nn_sh(lmax: int, points: torch.Tensor, normalization: str = "integral") -> torch.Tensor:
    return o3.spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization=normalization)


def _irreps(channels: int, lmax: int) -> str:
    return "+".join(f"{channels}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(lmax + 1))


def _coefficient_view(x: torch.Tensor, channels: int, lmax: int) -> torch.Tensor:
    """mul_ir (..., C*(L+1)^2) -> (..., C, (L+1)^2), written independently of the code under test."""
    blocks = []
    offset = 0
    for ell in range(lmax + 1):
        size = channels * (2 * ell + 1)
        blocks.append(x[..., offset : offset + size].reshape(*x.shape[:-1], channels, 2 * ell + 1))
        offset += size
    return torch.cat(blocks, dim=-1)


def _random_features(
    generator: torch.Generator, batch: tuple[int, ...], channels: int, lmax: int, dtype: torch.dtype
) -> torch.Tensor:
    return torch.randn(*batch, channels * (lmax + 1) ** 2, generator=generator, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Gaunt coefficients
# ---------------------------------------------------------------------------------------------------------------


def test_gaunt_coefficients_match_quadrature_all_degrees_up_to_10() -> None:
    lmax = 10
    degree = 3 * lmax
    nodes, weights = scipy.special.roots_legendre(degree // 2 + 1)
    n_phi = degree + 1
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    cos_theta = np.repeat(nodes, n_phi)
    sin_theta = np.sqrt(1 - cos_theta**2)
    azimuth = np.tile(phi, len(nodes))
    points = torch.from_numpy(np.stack([sin_theta * np.sin(azimuth), cos_theta, sin_theta * np.cos(azimuth)], -1))
    quad = torch.from_numpy(np.repeat(weights, n_phi) * 2 * np.pi / n_phi)
    harmonics = _e3nn_sh(lmax, points)  # (P, 121) float64
    size = harmonics.shape[1]
    pairs = (quad[:, None, None] * harmonics[:, :, None] * harmonics[:, None, :]).reshape(len(quad), -1)
    integrals = (pairs.T @ harmonics).reshape(size, size, size)  # all triple integrals at once
    worst = 0.0
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(lmax + 1):
                expected = integrals[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2]
                actual = gaunt_coefficients(l1, l2, l3)
                assert actual.dtype == torch.float64
                assert actual.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
                worst = max(worst, float((actual - expected).abs().max()))
                if (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
                    assert float(actual.abs().max()) == 0.0
    assert worst < 1e-12, worst


def test_gaunt_path_constant_closed_form_against_sympy() -> None:
    from sympy.physics.wigner import wigner_3j as sympy_3j

    for l1, l2, l3 in [(1, 1, 2), (2, 3, 5), (4, 4, 4), (7, 5, 4), (10, 10, 20), (15, 12, 9)]:
        three_j = float(sympy_3j(l1, l2, l3, 0, 0, 0))
        expected = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * abs(three_j)
        assert abs(gaunt_path_constant(l1, l2, l3) - expected) < 1e-14 * max(1.0, expected)


def test_gaunt_coefficients_high_degree_fundamental_identity() -> None:
    # Y_0 = 1/sqrt(4 pi): G(ell, ell, 0) = delta / sqrt(4 pi) for any degree, also beyond e3nn's cap of 12.
    for ell in (13, 20):
        g = gaunt_coefficients(ell, ell, 0)[:, :, 0]
        assert_close(g, torch.eye(2 * ell + 1, dtype=torch.float64) / math.sqrt(4 * math.pi), atol=1e-14, rtol=0)


def test_gaunt_coefficients_bad_degree() -> None:
    with pytest.raises(SciMLInputError, match="l2"):
        gaunt_coefficients(1, -1, 1)
    with pytest.raises(SciMLInputError, match="l1"):
        gaunt_coefficients(1.5, 1, 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Gaunt tensor product
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_product_with_constant_is_scaled_identity(backend: str) -> None:
    generator = torch.Generator().manual_seed(0)
    channels, lmax = 3, 4
    x = _random_features(generator, (2,), channels, lmax, torch.float64)
    one = torch.ones(channels, dtype=torch.float64)  # e_0 in every channel (irreps Cx0e)
    z = gaunt_tensor_product(x, one, lmax_out=lmax, channels=channels, backend=backend)
    assert_close(z, x / math.sqrt(4 * math.pi), atol=1e-13, rtol=0)


@pytest.mark.parametrize(("l1", "l2", "lout"), [(2, 3, 5), (3, 3, 1), (4, 1, 7), (0, 2, 2), (1, 4, 0), (5, 5, 8)])
def test_backends_agree_float64(l1: int, l2: int, lout: int) -> None:
    generator = torch.Generator().manual_seed(1)
    channels = 3
    x = _random_features(generator, (2, 1), channels, l1, torch.float64)
    y = _random_features(generator, (3,), channels, l2, torch.float64)  # broadcast (2, 1) with (3,)
    outs = [gaunt_tensor_product(x, y, lmax_out=lout, channels=channels, backend=b) for b in BACKENDS]
    assert outs[0].shape == (2, 3, channels * (lout + 1) ** 2)
    for out in outs[1:]:
        assert_close(out, outs[0], atol=1e-12, rtol=0)


def test_backends_agree_beyond_degree_12() -> None:
    generator = torch.Generator().manual_seed(2)
    channels = 2
    x = _random_features(generator, (2,), channels, 8, torch.float64)
    y = _random_features(generator, (2,), channels, 9, torch.float64)
    grid = gaunt_tensor_product(x, y, lmax_out=16, channels=channels, backend="grid")
    fft = gaunt_tensor_product(x, y, lmax_out=16, channels=channels, backend="fft")
    assert_close(fft, grid, atol=1e-11, rtol=0)
    # Function identity at degree 17 with the package's harmonics (e3nn stops at 12).
    exact = gaunt_tensor_product(x, y, lmax_out=17, channels=channels, backend="fft")
    points = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    harmonics = spherical_harmonics(17, points)
    fx = _coefficient_view(x, channels, 8) @ harmonics[:, :81].T
    fy = _coefficient_view(y, channels, 9) @ harmonics[:, :100].T
    fz = _coefficient_view(exact, channels, 17) @ harmonics.T
    assert_close(fz, fx * fy, atol=1e-11, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_e3nn_even_path_tensor_product(backend: str) -> None:
    generator = torch.Generator().manual_seed(3)
    channels, l1, l2, lout = 4, 3, 2, 4
    irreps1, irreps2, irreps_out = (o3.Irreps(_irreps(channels, ell)) for ell in (l1, l2, lout))
    instructions = [
        (a, b, c, "uuu", False, gaunt_path_constant(a, b, c) ** 2)
        for a in range(l1 + 1)
        for b in range(l2 + 1)
        for c in range(lout + 1)
        if (a + b + c) % 2 == 0 and abs(a - b) <= c <= a + b
    ]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tp = o3.TensorProduct(
            irreps1, irreps2, irreps_out, instructions, irrep_normalization="none", path_normalization="none"
        )
    finally:
        torch.set_default_dtype(default)
    x = _random_features(generator, (5,), channels, l1, torch.float64)
    y = _random_features(generator, (5,), channels, l2, torch.float64)
    expected = tp(x, y)
    actual = gaunt_tensor_product(x, y, lmax_out=lout, channels=channels, backend=backend)
    assert_close(actual, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
def test_function_identity(backend: str, normalization: str) -> None:
    generator = torch.Generator().manual_seed(4)
    channels, l1, l2 = 2, 3, 4
    x = _random_features(generator, (3,), channels, l1, torch.float64)
    y = _random_features(generator, (3,), channels, l2, torch.float64)
    z = gaunt_tensor_product(x, y, lmax_out=l1 + l2, channels=channels, backend=backend, normalization=normalization)
    points = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    harmonics = _e3nn_sh(l1 + l2, points, normalization)  # (7, K)
    fx = _coefficient_view(x, channels, l1) @ harmonics[:, : (l1 + 1) ** 2].T  # (3, C, 7)
    fy = _coefficient_view(y, channels, l2) @ harmonics[:, : (l2 + 1) ** 2].T
    fz = _coefficient_view(z, channels, l1 + l2) @ harmonics.T
    assert_close(fz, fx * fy, atol=1e-12, rtol=0)


def _block_rotation(R: torch.Tensor, channels: int, lmax: int) -> torch.Tensor:
    """Wigner D of irreps Cx0e+Cx1o+... in mul_ir layout (parity does not matter for rotations)."""
    blocks = []
    for ell in range(lmax + 1):
        d = wigner_D(ell, R)
        blocks.extend([d] * channels)
    return torch.block_diag(*blocks)


@pytest.mark.parametrize("backend", ["grid", "fft"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_equivariance(backend: str, dtype: torch.dtype, tol: float) -> None:
    generator = torch.Generator().manual_seed(5)
    channels, l1, l2, lout = 3, 3, 2, 4
    R = rand_rotation(1, generator=generator, dtype=torch.float64)[0]
    x = _random_features(generator, (4,), channels, l1, torch.float64)
    y = _random_features(generator, (4,), channels, l2, torch.float64)
    d1, d2, dout = (_block_rotation(R, channels, ell) for ell in (l1, l2, lout))
    rotated_in = gaunt_tensor_product(
        (x @ d1.T).to(dtype), (y @ d2.T).to(dtype), lmax_out=lout, channels=channels, backend=backend
    )
    rotated_out = gaunt_tensor_product(x.to(dtype), y.to(dtype), lmax_out=lout, channels=channels, backend=backend)
    rotated_out = rotated_out.double() @ dout.T
    assert rotated_in.dtype == dtype
    scale = float(rotated_out.abs().max())
    assert float((rotated_in.double() - rotated_out).abs().max()) <= tol * scale


@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_times_vector_has_no_degree_one_part(backend: str) -> None:
    generator = torch.Generator().manual_seed(6)
    channels = 3
    x = _random_features(generator, (4,), channels, 1, torch.float64)
    y = _random_features(generator, (4,), channels, 1, torch.float64)
    x[..., :channels] = 0.0  # keep only the 1o part
    y[..., :channels] = 0.0
    z = gaunt_tensor_product(x, y, lmax_out=2, channels=channels, backend=backend)
    degree_one = z[..., channels : 4 * channels]
    assert float(degree_one.abs().max()) < 1e-15
    assert float(z[..., 4 * channels :].abs().max()) > 1e-3  # the 0e and 2e parts are there


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_double_backward(backend: str) -> None:
    generator = torch.Generator().manual_seed(7)
    x = _random_features(generator, (2,), 1, 2, torch.float64)
    y = _random_features(generator, (1,), 1, 1, torch.float64)

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gaunt_tensor_product(a, b, lmax_out=2, channels=1, backend=backend)

    gradcheck_float64(product, x, y, gradgrad=True, fast_mode=True)


def test_float32_matches_float64() -> None:
    generator = torch.Generator().manual_seed(8)
    x = _random_features(generator, (3,), 4, 4, torch.float64)
    y = _random_features(generator, (3,), 4, 4, torch.float64)
    reference = gaunt_tensor_product(x, y, lmax_out=4, channels=4, backend="cg")
    for backend in ("grid", "fft"):
        single = gaunt_tensor_product(x.float(), y.float(), lmax_out=4, channels=4, backend=backend)
        assert single.dtype == torch.float32
        assert_close(single, reference, atol=2e-5, rtol=2e-5)


def test_channel_inference_and_plan_layout() -> None:
    generator = torch.Generator().manual_seed(9)
    x = _random_features(generator, (2,), 3, 2, torch.float64)  # 27 = 3 * 9, unambiguous with 12 = 3 * 4
    y = _random_features(generator, (2,), 3, 1, torch.float64)
    inferred = gaunt_tensor_product(x, y, lmax_out=3)
    explicit = gaunt_tensor_product(x, y, lmax_out=3, channels=3)
    assert_close(inferred, explicit, atol=0, rtol=0)
    plan = GauntPlan(2, 1, 3, backend="fft", dtype=torch.float64)
    z = plan(_coefficient_view(x, 3, 2), _coefficient_view(y, 3, 1))
    assert_close(z, _coefficient_view(explicit, 3, 3), atol=1e-13, rtol=0)


def test_bad_input() -> None:
    x = torch.randn(2, 3 * 9)
    y = torch.randn(2, 3 * 4)
    with pytest.raises(SciMLInputError, match="x"):
        gaunt_tensor_product(torch.randn(2, 3 * 9 + 1), y, lmax_out=2, channels=3)
    with pytest.raises(SciMLInputError, match="y"):
        gaunt_tensor_product(x, torch.randn(2, 2 * 4), lmax_out=2, channels=3)
    with pytest.raises(SciMLInputError, match="lmax_out"):
        gaunt_tensor_product(x, y, lmax_out=-1, channels=3)
    with pytest.raises(SciMLInputError, match="channels"):
        gaunt_tensor_product(torch.randn(2, 16), torch.randn(2, 16), lmax_out=1)  # C = 1, 4 or 16
    with pytest.raises(SciMLInputError, match="y"):
        gaunt_tensor_product(x, y.double(), lmax_out=2, channels=3)
    with pytest.raises(SciMLInputError, match="y"):
        gaunt_tensor_product(x, torch.randn(5, 3 * 4), lmax_out=2, channels=3)
    with pytest.raises(SciMLInputError, match="x"):
        gaunt_tensor_product(x.half(), y.half(), lmax_out=2, channels=3)
    with pytest.raises(SciMLInputError, match="backend"):
        gaunt_tensor_product(x, y, lmax_out=2, channels=3, backend="magic")
    with pytest.raises(SciMLInputError, match="normalization"):
        gaunt_tensor_product(x, y, lmax_out=2, channels=3, normalization="unit")
    with pytest.raises(SciMLInputError, match="dtype"):
        GauntPlan(1, 1, 1, dtype=torch.float16)


# ---------------------------------------------------------------------------------------------------------------
# Function against module, layouts, channel inference
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_function_equals_module(backend: str, dtype: torch.dtype) -> None:
    # gaunt_tensor_product (mul_ir in and out, any backend) and GauntTensorProduct(weights=None): one bilinear map,
    # values and gradients, with broadcast leading dimensions
    from sciml_equivariant._modules import GauntTensorProduct

    generator = torch.Generator().manual_seed(21)
    c, l1, l2, lout = 3, 3, 2, 4
    x = _random_features(generator, (2, 1), c, l1, dtype).requires_grad_(True)
    y = _random_features(generator, (1, 3), c, l2, dtype).requires_grad_(True)
    module = GauntTensorProduct(c, l1, l2, lout, weights=None, dtype=dtype)
    got = gaunt_tensor_product(x, y, lmax_out=lout, channels=c, backend=backend)
    expected = module(x, y)
    assert got.shape == expected.shape == (2, 3, c * (lout + 1) ** 2)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert_close(got, expected, atol=tol, rtol=tol)
    cotangent = torch.randn(got.shape, generator=generator, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(got, (x, y), cotangent)
    expected_grads = torch.autograd.grad(expected, (x, y), cotangent)
    for g, e in zip(grads, expected_grads, strict=True):
        assert_close(g, e, atol=tol, rtol=tol)


def test_layout_conversion_round_trip() -> None:
    from sciml_equivariant._gaunt import _from_coefficients, _to_coefficients

    generator = torch.Generator().manual_seed(22)
    for channels, lmax in [(1, 3), (4, 0), (3, 4), (5, 2)]:
        x = _random_features(generator, (2, 3), channels, lmax, torch.float64)
        coefficients = _to_coefficients(x, channels, lmax)
        assert_close(coefficients, _coefficient_view(x, channels, lmax), atol=0, rtol=0)
        assert_close(_from_coefficients(coefficients), x, atol=0, rtol=0)


def test_channel_inference_matches_brute_force() -> None:
    from sciml_equivariant._gaunt import _infer_layout

    def brute(d1: int, d2: int) -> list[int]:  # every common C with square quotients, by exhaustion
        square = lambda n: math.isqrt(n) ** 2 == n  # noqa: E731
        return [
            c for c in range(1, min(d1, d2) + 1) if d1 % c == 0 and d2 % c == 0 and square(d1 // c) and square(d2 // c)
        ]

    for d1, d2 in [(27, 12), (16, 16), (9 * 7, 4 * 7), (128 * 121, 128 * 121), (50, 8), (36, 100), (5, 7), (12, 27)]:
        candidates = brute(d1, d2)
        if len(candidates) == 1:
            c = candidates[0]
            assert _infer_layout(d1, d2, None) == (c, math.isqrt(d1 // c) - 1, math.isqrt(d2 // c) - 1)
        else:
            with pytest.raises(SciMLInputError, match="channels" if candidates else "x"):
                _infer_layout(d1, d2, None)
