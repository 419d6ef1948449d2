"""Tests of sciml_equivariant._so3: spherical harmonics, Wigner D, Wigner 3j, random rotations.

Oracles: e3nn 0.6.0 (same conventions, degrees <= 12), scipy (Gauss-Legendre nodes, Legendre polynomials, complex
spherical harmonics), closed forms (addition theorem, Levi-Civita, identity couplings), group properties.
"""

# ruff: noqa: E741  (l is the degree, the standard name)
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import e3nn.o3 as o3
import numpy as np
import pytest
import scipy.special as sps
import torch
from sciml_equivariant._so3 import rand_rotation, spherical_harmonics, wigner_3j, wigner_D
from sciml_protocols import SciMLInputError

F64 = torch.float64


@contextlib.contextmanager
def _default_float64() -> Iterator[None]:
    """e3nn builds its generators in the default dtype; run it in float64 for a float64 oracle."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _vectors(n: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=F64)
    poles = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 2.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -3.0]])
    return torch.cat([v, poles.to(F64)]).to(dtype)


def _sphere_grid(n_theta: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in y (scipy) times uniform phi, exact to degree min(2 n_theta - 1, n_phi - 1)."""
    nodes, w = sps.roots_legendre(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    st = np.sqrt(1 - nodes**2)
    pts = np.stack(
        [np.outer(st, np.sin(phi)).ravel(), np.repeat(nodes, n_phi), np.outer(st, np.cos(phi)).ravel()], axis=-1
    )
    weights = np.repeat(w, n_phi) * 2 * np.pi / n_phi
    return torch.from_numpy(pts), torch.from_numpy(weights)


# ------------------------------------------------------------------------------------------------ spherical harmonics


@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
@pytest.mark.parametrize("normalize", [True, False])
def test_sh_matches_e3nn(normalization: str, normalize: bool) -> None:
    v = _vectors(64)
    ours = spherical_harmonics(12, v, normalize=normalize, normalization=normalization)
    ref = o3.spherical_harmonics(list(range(13)), v, normalize, normalization=normalization)
    assert ours.shape == (v.shape[0], 169)
    scale = ref.abs().amax(dim=0, keepdim=True).clamp_min(1e-300)
    assert float(((ours - ref).abs() / scale).max()) < 1e-10


def test_sh_zero_vector_matches_e3nn() -> None:
    v = torch.zeros(2, 3, dtype=F64)
    for normalize in (True, False):
        ours = spherical_harmonics(4, v, normalize=normalize, normalization="component")
        ref = o3.spherical_harmonics(list(range(5)), v, normalize, normalization="component")
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-15)


def test_sh_float32_close_to_float64() -> None:
    v = _vectors(32)
    ref = spherical_harmonics(20, v)
    got = spherical_harmonics(20, v.float())
    assert got.dtype == torch.float32
    assert float((got.double() - ref).abs().max()) < 1e-5


def test_sh_orthonormal_by_quadrature_l30() -> None:
    lmax = 30
    pts, w = _sphere_grid(lmax + 1, 2 * lmax + 1)  # exact for degree 2 lmax
    y = spherical_harmonics(lmax, pts)
    gram = y.T @ (w[:, None] * y)
    err = (gram - torch.eye((lmax + 1) ** 2, dtype=F64)).abs().max()
    assert float(err) < 1e-12


def test_sh_addition_theorem_l40() -> None:
    lmax = 40
    u, v = _vectors(8, seed=1), _vectors(8, seed=2)
    yu, yv = spherical_harmonics(lmax, u), spherical_harmonics(lmax, v)
    cos = (torch.nn.functional.normalize(u, dim=-1) * torch.nn.functional.normalize(v, dim=-1)).sum(-1)
    for l in range(lmax + 1):
        sl = slice(l * l, (l + 1) ** 2)
        lhs = (yu[:, sl] * yv[:, sl]).sum(-1)
        rhs = (2 * l + 1) / (4 * math.pi) * torch.from_numpy(sps.eval_legendre(l, cos.numpy()))
        assert float((lhs - rhs).abs().max()) < 1e-12 * (2 * l + 1), l


def test_sh_matches_scipy_complex_harmonics_high_degree() -> None:
    """Per-component check at degree 25 against scipy's complex Y (sign of every m), beyond e3nn's cap."""
    l = 25
    v = torch.nn.functional.normalize(_vectors(6, seed=3)[:6], dim=-1)
    ours = spherical_harmonics(l, v)[:, l * l :]
    x, y, z = v.numpy().T
    theta, phi = np.arccos(np.clip(y, -1, 1)), np.arctan2(x, z)
    ref = np.zeros((v.shape[0], 2 * l + 1))
    for m in range(l + 1):
        c = sps.sph_harm_y(l, m, theta, phi) * (-1) ** m  # drop the Condon-Shortley phase
        if m == 0:
            ref[:, l] = c.real
        else:
            ref[:, l + m] = math.sqrt(2) * c.real
            ref[:, l - m] = math.sqrt(2) * c.imag
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_sh_rotation_equivariance() -> None:
    lmax = 20
    v = _vectors(16)
    R = rand_rotation(3, generator=torch.Generator().manual_seed(4), dtype=F64)
    y = spherical_harmonics(lmax, v)
    for k in range(3):
        y_rot = spherical_harmonics(lmax, v @ R[k].T)
        for l in (0, 1, 2, 7, 20):
            sl = slice(l * l, (l + 1) ** 2)
            expected = y[:, sl] @ wigner_D(l, R[k]).T
            assert float((y_rot[:, sl] - expected).abs().max()) < 1e-11


@pytest.mark.parametrize("normalize", [True, False])
def test_sh_gradcheck_including_poles(normalize: bool) -> None:
    v = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.3, 0.0], [0.3, -0.4, 0.8], [1e-3, 0.9, -2e-3]], dtype=F64)
    v.requires_grad_(True)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(4, t, normalize=normalize)

    assert torch.autograd.gradcheck(fn, (v,))
    assert torch.autograd.gradgradcheck(fn, (v,))


def test_sh_finite_at_poles_high_degree() -> None:
    v = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=F64, requires_grad=True)
    y = spherical_harmonics(40, v)
    (g,) = torch.autograd.grad(y.square().sum(), v, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), v)
    assert bool(torch.isfinite(y).all() and torch.isfinite(g).all() and torch.isfinite(gg).all())
    # at +-y only m = 0 survives: Y_l0 = sqrt((2l+1)/4pi) (+-1)^l
    for l in (0, 5, 40):
        block = y[:, l * l : (l + 1) ** 2].detach()
        expect = torch.zeros_like(block)
        expect[:, l] = math.sqrt((2 * l + 1) / (4 * math.pi)) * torch.tensor([1.0, (-1.0) ** l], dtype=F64)
        torch.testing.assert_close(block, expect, rtol=0, atol=1e-13)


@pytest.mark.compile
def test_sh_compile_fullgraph() -> None:
    v = _vectors(10, dtype=torch.float32)
    fn = torch.compile(lambda t: spherical_harmonics(8, t, normalize=True), fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(v), spherical_harmonics(8, v))


def test_sh_bad_input() -> None:
    v = torch.randn(4, 3)
    with pytest.raises(SciMLInputError, match="lmax"):
        spherical_harmonics(-1, v)
    with pytest.raises(SciMLInputError, match="vectors"):
        spherical_harmonics(2, torch.randn(4, 2))
    with pytest.raises(SciMLInputError, match="vectors"):
        spherical_harmonics(2, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(SciMLInputError, match="normalization"):
        spherical_harmonics(2, v, normalization="unit")


# ------------------------------------------------------------------------------------------------------- Wigner D


def test_wigner_D_matches_e3nn() -> None:
    R = rand_rotation(4, generator=torch.Generator().manual_seed(5), dtype=F64)
    with _default_float64():
        for l in range(9):
            ref = o3.Irrep(l, 1).D_from_matrix(R)
            torch.testing.assert_close(wigner_D(l, R), ref, rtol=0, atol=1e-12)


def test_wigner_D_l1_is_R_and_group_properties_high_degree() -> None:
    g = torch.Generator().manual_seed(6)
    R1, R2 = rand_rotation(2, generator=g, dtype=F64)
    torch.testing.assert_close(wigner_D(1, R1), R1, rtol=0, atol=1e-14)
    d40 = wigner_D(40, R1)
    assert float((d40 @ d40.T - torch.eye(81, dtype=F64)).abs().max()) < 1e-11
    for l in (3, 25):
        d1, d2, d12 = wigner_D(l, R1), wigner_D(l, R2), wigner_D(l, R1 @ R2)
        eye = torch.eye(2 * l + 1, dtype=F64)
        assert float((d12 - d1 @ d2).abs().max()) < 1e-11
        assert float((d1 @ d1.T - eye).abs().max()) < 1e-11
        assert float((wigner_D(l, R1.T) - d1.T).abs().max()) < 1e-11
        assert float((wigner_D(l, torch.eye(3, dtype=F64)) - eye).abs().max()) < 1e-12


def test_wigner_D_batched_float32_and_gradcheck() -> None:
    R = rand_rotation(6, generator=torch.Generator().manual_seed(7), dtype=F64)
    d64 = wigner_D(4, R.reshape(2, 3, 3, 3))
    assert d64.shape == (2, 3, 9, 9)
    d32 = wigner_D(4, R.float())
    assert d32.dtype == torch.float32
    assert float((d32.double() - d64.reshape(6, 9, 9)).abs().max()) < 1e-5
    r = R[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: wigner_D(3, t, validate=False), (r,))


def test_wigner_D_rejects_non_rotations() -> None:
    with pytest.raises(SciMLInputError, match="orthogonal"):
        wigner_D(2, torch.eye(3, dtype=F64) * 1.01)
    with pytest.raises(SciMLInputError, match="det"):
        wigner_D(2, -torch.eye(3, dtype=F64))
    with pytest.raises(SciMLInputError, match="shape"):
        wigner_D(2, torch.eye(2))
    with pytest.raises(SciMLInputError, match="l"):
        wigner_D(-1, torch.eye(3))


def test_rand_rotation_is_haar_like() -> None:
    R = rand_rotation(2000, generator=torch.Generator().manual_seed(8), dtype=F64)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(2000, 3, 3))
    assert bool((torch.linalg.det(R) > 0).all())
    # Haar: E[R] = 0 and E[trace R] = 0 (trace = 1 + 2 cos(angle))
    assert float(R.mean(0).abs().max()) < 0.06
    with pytest.raises(SciMLInputError):
        rand_rotation(-1)


# ------------------------------------------------------------------------------------------------------- Wigner 3j


def test_wigner_3j_matches_e3nn() -> None:
    triples = [(l1, l2, l3) for l1 in range(4) for l2 in range(4) for l3 in range(abs(l1 - l2), l1 + l2 + 1)]
    triples += [(7, 3, 6), (10, 10, 10), (10, 2, 9), (6, 8, 13)]
    for l1, l2, l3 in triples:
        ours = wigner_3j(l1, l2, l3)
        ref = o3.wigner_3j(l1, l2, l3, dtype=F64)
        assert float((ours - ref).abs().max()) < 1e-13, (l1, l2, l3)


def test_wigner_3j_closed_forms() -> None:
    eps = torch.zeros(3, 3, 3, dtype=F64)
    for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        eps[i, j, k], eps[j, i, k] = 1.0, -1.0
    c111 = wigner_3j(1, 1, 1)
    assert float((c111.abs() - eps.abs() / math.sqrt(6)).abs().max()) < 1e-15
    assert abs(abs(float((c111 * eps).sum())) - math.sqrt(6)) < 1e-14  # proportional to Levi-Civita
    for l in (0, 3, 12):
        torch.testing.assert_close(
            wigner_3j(l, l, 0)[..., 0], torch.eye(2 * l + 1, dtype=F64) / math.sqrt(2 * l + 1), rtol=0, atol=1e-15
        )


@pytest.mark.parametrize("degrees", [(2, 3, 4), (5, 5, 6), (12, 9, 15), (20, 20, 30)])
def test_wigner_3j_invariant_and_unit_norm(degrees: tuple[int, int, int]) -> None:
    l1, l2, l3 = degrees
    c = wigner_3j(l1, l2, l3)
    assert abs(float(c.norm()) - 1) < 1e-13
    R = rand_rotation(2, generator=torch.Generator().manual_seed(9), dtype=F64)
    for k in range(2):
        d1, d2, d3 = wigner_D(l1, R[k]), wigner_D(l2, R[k]), wigner_D(l3, R[k])
        rotated = torch.einsum("ia,jb,kc,abc->ijk", d1, d2, d3, c)
        assert float((rotated - c).abs().max()) < 1e-12


def test_wigner_3j_triangle_dtype_and_errors() -> None:
    assert float(wigner_3j(1, 1, 3).abs().max()) == 0.0
    assert wigner_3j(1, 1, 3).shape == (3, 3, 7)
    c = wigner_3j(2, 2, 2, dtype=torch.float32)
    assert c.dtype == torch.float32
    c.zero_()  # a copy: the cache must not change
    assert float(wigner_3j(2, 2, 2).abs().max()) > 0
    with pytest.raises(SciMLInputError, match="l2"):
        wigner_3j(1, -1, 1)
    with pytest.raises(SciMLInputError, match="dtype"):
        wigner_3j(1, 1, 1, dtype=torch.int64)


# ------------------------------------------------------------------------------------------------ construction helpers


def test_gauss_legendre_matches_scipy() -> None:
    from sciml_equivariant._so3 import _gauss_legendre

    for n in (1, 2, 3, 8, 21, 41, 64):
        nodes, weights = _gauss_legendre(n)
        ref_nodes, ref_weights = sps.roots_legendre(n)
        np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-14)
        np.testing.assert_allclose(weights, ref_weights, rtol=1e-11, atol=0)
        assert abs(weights.sum() - 2.0) < 1e-13
        # exact for x^(2n-2): int_{-1}^{1} x^(2n-2) dx = 2 / (2n - 1)
        assert abs(float(weights @ nodes ** (2 * n - 2)) - 2.0 / (2 * n - 1)) < 1e-13


@pytest.mark.parametrize("lmax", [0, 3, 12])
def test_grid_harmonics_match_e3nn_on_product_grids(lmax: int) -> None:
    from sciml_equivariant._so3 import _grid_harmonics

    theta = np.array([0.0, 0.3, 1.1, np.pi / 2, 2.5, np.pi, 4.0, 5.9])  # theta > pi: negative sin (torus grids)
    phi = np.array([0.0, 0.7, 2.0, 3.5, 6.1])
    got = _grid_harmonics(lmax, np.cos(theta), np.sin(theta), phi)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    points = torch.from_numpy(np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], axis=-1))
    with _default_float64():
        expected = o3.spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization="integral")
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-12)


def test_wigner_D_recursion_high_degree_against_quadrature() -> None:
    # D^l_{mm'}(R) = int Y_l^m(R r) Y_l^m'(r) dr, by an exact Gauss-Legendre x uniform rule (scipy nodes)
    l = 30
    R = rand_rotation(2, generator=torch.Generator().manual_seed(23), dtype=F64)
    points, weights = _sphere_grid(l + 1, 2 * l + 1)
    start = l * l
    sh = spherical_harmonics(l, points)[:, start:]
    rotated = spherical_harmonics(l, points @ R.transpose(-1, -2))[..., start:]
    expected = rotated.transpose(-1, -2) @ (sh * weights[:, None])
    assert float((wigner_D(l, R) - expected).abs().max()) < 1e-11
