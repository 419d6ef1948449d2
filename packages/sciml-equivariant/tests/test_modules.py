"""Gaunt modules (sciml_equivariant._modules): products, equivariance, convolution, many-body, gradients, compile.

Oracles, all independent of the code under test:
- the Gaunt tensor G[i, j, k] = int Y_i Y_j Y_k from e3nn's spherical harmonics integrated on a quadrature grid
  finer than needed (numpy Gauss-Legendre x uniform phi), and the products as explicit sums with it;
- Wigner D matrices fitted from e3nn's harmonics by least squares, Y(R v) = D(R) Y(v) at many points (e3nn's own
  ``D_from_matrix`` is only accurate to about 1e-6, too loose for float64 checks);
- the function identity: the many-body output evaluated with e3nn's harmonics equals f + f^2 + ... pointwise;
- a per-edge loop with e3nn harmonics for the convolution; finite differences (gradcheck) for gradients.
"""

import math
import time

import numpy as np
import pytest
import torch
from e3nn import o3
from sciml_equivariant._gaunt import gaunt_tensor_product
from sciml_equivariant._modules import GauntConvolution, GauntManyBody, GauntTensorProduct
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64

F64 = torch.float64
# equivariance tolerances, relative to the largest output entry
EQUIVARIANCE_TOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def e3nn_sh(lmax, points):
    return o3.spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization="integral")


def sphere_grid(degree):
    n_theta, n_phi = degree // 2 + 1, degree + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    sin = np.sqrt(1 - nodes**2)
    points = np.stack(
        [np.outer(sin, np.sin(phi)).ravel(), np.repeat(nodes, n_phi), np.outer(sin, np.cos(phi)).ravel()], -1
    )
    return torch.from_numpy(points), torch.from_numpy(np.repeat(weights, n_phi) * 2 * np.pi / n_phi)


def gaunt_tensor(l1, l2, lout):
    points, weights = sphere_grid(l1 + l2 + lout + 2)
    sh = e3nn_sh(max(l1, l2, lout), points)
    k1, k2, k3 = (l1 + 1) ** 2, (l2 + 1) ** 2, (lout + 1) ** 2
    return torch.einsum("g,gi,gj,gk->ijk", weights, sh[:, :k1], sh[:, :k2], sh[:, :k3])


def to_coeffs(x, channels, lmax):
    """mul_ir (..., C*(L+1)^2) -> (..., C, (L+1)^2), written independently of the module's index buffers."""
    blocks, start = [], 0
    for ell in range(lmax + 1):
        size = channels * (2 * ell + 1)
        blocks.append(x[..., start : start + size].reshape(*x.shape[:-1], channels, 2 * ell + 1))
        start += size
    return torch.cat(blocks, dim=-1)


def to_mul_ir(z, lmax):
    return torch.cat([z[..., ell * ell : (ell + 1) ** 2].flatten(-2) for ell in range(lmax + 1)], dim=-1)


def oracle_product(x, y, channels, l1, l2, lout):
    a, b = to_coeffs(x, channels, l1), to_coeffs(y, channels, l2)
    return to_mul_ir(torch.einsum("...ci,...cj,ijk->...ck", a, b, gaunt_tensor(l1, l2, lout).to(x.dtype)), lout)


def wigner_blocks(lmax, rotation):
    """D_l(R) for l <= lmax, fitted from e3nn harmonics: Y_l(v R^T) = Y_l(v) D_l^T (float64, exact to ~1e-15)."""
    g = torch.Generator().manual_seed(42)
    v = torch.randn(4 * (2 * lmax + 1), 3, generator=g, dtype=F64)
    before, after = e3nn_sh(lmax, v), e3nn_sh(lmax, v @ rotation.T)
    return [
        torch.linalg.lstsq(before[:, ell * ell : (ell + 1) ** 2], after[:, ell * ell : (ell + 1) ** 2]).solution.T
        for ell in range(lmax + 1)
    ]


def rotate(x, channels, lmax, blocks):
    z = to_coeffs(x, channels, lmax)
    parts = [z[..., ell * ell : (ell + 1) ** 2] @ blocks[ell].to(x.dtype).T for ell in range(lmax + 1)]
    return to_mul_ir(torch.cat(parts, dim=-1), lmax)


def rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def features(*shape, dtype=F64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def assert_equivariant(got_rotated, expected_rotated, dtype):
    scale = float(expected_rotated.abs().max())
    tol = EQUIVARIANCE_TOL[dtype] * scale
    assert_close(got_rotated, expected_rotated, rtol=0.0, atol=tol)


# ----------------------------------------------------------------------------------------------- tensor product


def test_plain_product_matches_the_gaunt_sum():
    c, l1, l2, lout = 3, 2, 3, 4
    tp = GauntTensorProduct(c, l1, l2, lout, weights=None, dtype=F64)
    assert str(tp.irreps_in2) == "3x0e+3x1o+3x2e+3x3o"
    assert len(list(tp.parameters())) == 0
    x = features(2, 1, c * 9, seed=1)
    y = features(1, 4, c * 16, seed=2)  # leading dims broadcast
    expected = oracle_product(x.expand(2, 4, -1), y.expand(2, 4, -1), c, l1, l2, lout)
    assert_close(tp(x, y), expected, rtol=1e-12, atol=1e-12)
    assert_close(tp(x, y), gaunt_tensor_product(x.expand(2, 4, -1), y.expand(2, 4, -1), lmax_out=lout))


def test_separable_weights_rescale_the_inputs_and_output():
    c, l1, l2, lout = 2, 2, 1, 3
    tp = GauntTensorProduct(c, l1, l2, lout, dtype=F64)
    w1, w2, w3 = features(c, l1 + 1, seed=3), features(c, l2 + 1, seed=4), features(c, lout + 1, seed=5)
    with torch.no_grad():
        tp.weight_in1.copy_(w1)
        tp.weight_in2.copy_(w2)
        tp.weight_out.copy_(w3)
    x, y = features(5, c * 9, seed=6), features(5, c * 4, seed=7)

    def scale(v, w, lmax):  # multiply degree-l block of channel c by w[c, l], in mul_ir layout
        z = to_coeffs(v, c, lmax)
        degree = torch.tensor([ell for ell in range(lmax + 1) for _ in range(2 * ell + 1)])
        return to_mul_ir(z * w[:, degree], lmax)

    expected = scale(gaunt_tensor_product(scale(x, w1, l1), scale(y, w2, l2), lmax_out=lout), w3, lout)
    assert_close(tp(x, y), expected, rtol=1e-12, atol=1e-12)
    expected_oracle = scale(oracle_product(scale(x, w1, l1), scale(y, w2, l2), c, l1, l2, lout), w3, lout)
    assert_close(tp(x, y), expected_oracle, rtol=1e-12, atol=1e-12)


def test_fully_connected_mixes_channels_per_degree():
    c, l1, l2, lout = 3, 1, 2, 2
    tp = GauntTensorProduct(c, l1, l2, lout, weights="fully_connected", dtype=F64)
    assert tp.weight_in1.shape == (l1 + 1, c, c)
    assert tp.weight_out.shape == (lout + 1, c, c)
    x, y = features(4, c * 4, seed=8), features(4, c * 9, seed=9)

    def mix(v, weight, lmax):  # per degree l: new[d, m] = sum_c W_l[d, c] v[c, m], on mul_ir blocks directly
        blocks, start = [], 0
        for ell in range(lmax + 1):
            size = c * (2 * ell + 1)
            block = v[..., start : start + size].reshape(*v.shape[:-1], c, 2 * ell + 1)
            blocks.append(torch.einsum("dc,...cm->...dm", weight[ell], block).flatten(-2))
            start += size
        return torch.cat(blocks, dim=-1)

    with torch.no_grad():
        expected = mix(
            oracle_product(mix(x, tp.weight_in1, l1), mix(y, tp.weight_in2, l2), c, l1, l2, lout),
            tp.weight_out,
            lout,
        )
        assert_close(tp(x, y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weights", ["separable", "fully_connected"])
def test_tensor_product_equivariance(dtype, weights):
    c, l1, l2, lout = 4, 3, 2, 4
    tp = GauntTensorProduct(c, l1, l2, lout, weights=weights, dtype=dtype)
    if weights == "separable":
        with torch.no_grad():
            for p in tp.parameters():
                p.copy_(features(*p.shape, dtype=dtype, seed=10))
    blocks = wigner_blocks(lout, rotation(0))
    x, y = features(6, c * 16, dtype=dtype, seed=11), features(6, c * 9, dtype=dtype, seed=12)
    with torch.no_grad():
        got = tp(rotate(x, c, l1, blocks), rotate(y, c, l2, blocks))
        expected = rotate(tp(x, y), c, lout, blocks)
    assert got.dtype == dtype
    assert_equivariant(got, expected, dtype)


def test_tensor_product_gradients():
    tp = GauntTensorProduct(2, 1, 1, 2, dtype=F64)
    with torch.no_grad():
        for p in tp.parameters():
            p.copy_(features(*p.shape, seed=13))
    gradcheck_float64(tp, features(1, 8, seed=14), features(1, 8, seed=15), gradgrad=True, fast_mode=True)
    # and with respect to the weights
    x, y = features(2, 8, seed=16), features(2, 8, seed=17)

    def of_weights(w1, w2, w3):
        out = torch.func.functional_call(tp, {"weight_in1": w1, "weight_in2": w2, "weight_out": w3}, (x, y))
        return out

    gradcheck_float64(of_weights, tp.weight_in1, tp.weight_in2, tp.weight_out)


def test_device_dtype_state_and_construction():
    t0 = time.perf_counter()
    tp = GauntTensorProduct(8, 3, 3, 3, dtype=torch.float32, device="cpu")
    elapsed = time.perf_counter() - t0
    print(f"construction {elapsed * 1e3:.1f} ms")  # reported, not asserted
    assert all(p.dtype == torch.float32 for p in tp.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in tp.buffers())
    # the grid matrices are not saved: the state holds the learnable weights only
    assert set(tp.state_dict()) == {"weight_in1", "weight_in2", "weight_out"}
    tp64 = tp.to(F64)
    x, y = features(3, 8 * 16, seed=18), features(3, 8 * 16, seed=19)
    assert_close(tp64(x, y), oracle_product(x, y, 8, 3, 3, 3), rtol=1e-12, atol=1e-12)
    # a second module with the same degrees reuses the cached grid (no rebuild); its buffers are its own copies
    other = GauntTensorProduct(8, 3, 3, 3, dtype=F64)
    assert other.product.basis_x.data_ptr() != tp64.product.basis_x.data_ptr()


def test_tensor_product_bad_input():
    with pytest.raises(SciMLInputError, match="channels"):
        GauntTensorProduct(0, 1, 1, 1)
    with pytest.raises(SciMLInputError, match="lmax_out"):
        GauntTensorProduct(2, 1, 1, -1)
    with pytest.raises(SciMLInputError, match="lmax_in1"):
        GauntTensorProduct(2, 1.5, 1, 1)
    with pytest.raises(SciMLInputError, match="weights"):
        GauntTensorProduct(2, 1, 1, 1, weights="full")
    with pytest.raises(SciMLInputError, match="backend"):
        GauntTensorProduct(2, 1, 1, 1, backend="fast")
    with pytest.raises(SciMLInputError, match="dtype"):
        GauntTensorProduct(2, 1, 1, 1, dtype=torch.int32)
    tp = GauntTensorProduct(2, 1, 1, 1, dtype=F64)
    x = features(3, 8)
    with pytest.raises(SciMLInputError, match="x2"):
        tp(x, features(3, 9))
    with pytest.raises(SciMLInputError, match="x1"):
        tp(x.float(), x)
    with pytest.raises(SciMLInputError, match="x1"):
        tp("x", x)


# ----------------------------------------------------------------------------------------------- convolution


def graph(n_nodes=5, n_edges=9, seed=20):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_nodes, (n_edges,), generator=g)
    dst = torch.randint(0, n_nodes, (n_edges,), generator=g)
    vectors = torch.randn(n_edges, 3, generator=g, dtype=F64) * 1.5
    return src, dst, vectors


def test_convolution_matches_a_per_edge_loop():
    c, lin, lf, lout = 2, 2, 2, 3
    conv = GauntConvolution(c, lin, lf, lout, cutoff=4.0, dtype=F64)
    src, dst, vectors = graph()
    x = features(5, c * 9, seed=21)
    got = conv(x, src, dst, vectors)
    expected = torch.zeros(5, c * (lout + 1) ** 2, dtype=F64)
    with torch.no_grad():
        radial = conv.radial(vectors.norm(dim=-1)).reshape(-1, c, lf + 1)
        for e in range(len(src)):
            sh = e3nn_sh(lf, vectors[e : e + 1])[0]
            degree = torch.tensor([ell for ell in range(lf + 1) for _ in range(2 * ell + 1)])
            filt = radial[e][:, degree] * sh  # (C, Kf)
            expected[dst[e]] += oracle_product(x[src[e]], to_mul_ir(filt, lf), c, lin, lf, lout)
    assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # edges beyond the cutoff carry no message
    far = conv(x, src, dst, vectors / vectors.norm(dim=-1, keepdim=True) * 4.5)
    assert float(far.detach().abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_convolution_equivariance(dtype):
    c, lin, lf, lout = 3, 2, 3, 2
    conv = GauntConvolution(c, lin, lf, lout, dtype=dtype)
    src, dst, vectors = graph(seed=22)
    vectors = vectors.to(dtype)
    rot = rotation(1)
    blocks = wigner_blocks(max(lin, lout), rot)
    x = features(5, c * 9, dtype=dtype, seed=23)
    with torch.no_grad():
        got = conv(rotate(x, c, lin, blocks), src, dst, vectors @ rot.to(dtype).T)
        expected = rotate(conv(x, src, dst, vectors), c, lout, blocks)
    assert_equivariant(got, expected, dtype)


def test_convolution_forces_double_backward():
    """Energy from the l = 0 output, forces = -dE/dr, then a loss on the forces backpropagated to the weights."""
    c = 2
    conv = GauntConvolution(c, 1, 2, 1, dtype=F64)
    src, dst, vectors = graph(n_nodes=3, n_edges=4, seed=24)
    x = features(3, c * 4, seed=25)

    def energy(v):
        return conv(x, src, dst, v)[:, :c].sum()

    v = vectors.clone().requires_grad_(True)
    (forces,) = torch.autograd.grad(-energy(v), v, create_graph=True)
    forces.square().sum().backward()
    grads = [p.grad for p in conv.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads if g is not None)
    # second derivatives with respect to the positions, by finite differences
    gradcheck_float64(energy, vectors, gradgrad=True, fast_mode=True)
    gradcheck_float64(lambda feats: conv(feats, src, dst, vectors), x, gradgrad=True, fast_mode=True)


def test_convolution_bad_input():
    conv = GauntConvolution(2, 1, 1, 1, dtype=F64)
    src, dst, vectors = graph(n_nodes=3, n_edges=4)
    x = features(3, 8)
    with pytest.raises(SciMLInputError, match="edge_src"):
        conv(x, src + 3, dst, vectors)
    with pytest.raises(SciMLInputError, match="edge_dst"):
        conv(x, src, dst[:-1], vectors)
    with pytest.raises(SciMLInputError, match="edge_src"):
        conv(x, src.float(), dst, vectors)
    with pytest.raises(SciMLInputError, match="edge_vectors"):
        conv(x, src, dst, torch.zeros_like(vectors))
    with pytest.raises(SciMLInputError, match="edge_vectors"):
        conv(x, src, dst, vectors[:, :2])
    with pytest.raises(SciMLInputError, match="node_features"):
        conv(x[None], src, dst, vectors)
    with pytest.raises(SciMLInputError, match="cutoff"):
        GauntConvolution(2, 1, 1, 1, cutoff=0.0)
    with pytest.raises(SciMLInputError, match="radial"):
        GauntConvolution(2, 1, 1, 1, radial="mlp")


# ----------------------------------------------------------------------------------------------- many-body


def test_many_body_correlation_two_is_one_gaunt_product():
    c, lmax, lout = 3, 2, 3
    mb = GauntManyBody(c, lmax, 2, lmax_out=lout, dtype=F64)
    with torch.no_grad():
        mb.weight[0].zero_()
    x = features(4, c * 9, seed=26)
    assert_close(mb(x), oracle_product(x, x, c, lmax, lmax, lout), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("correlation", [3, 4])
def test_many_body_is_the_sum_of_powers_pointwise(correlation):
    """With lmax_out = correlation * L nothing is truncated: the output is f + f^2 + ... + f^nu as a function."""
    c, lmax = 2, 1
    lout = correlation * lmax
    mb = GauntManyBody(c, lmax, correlation, lmax_out=lout, dtype=F64)
    x = features(3, c * 4, seed=27)
    points = features(11, 3, seed=28)
    f = torch.einsum("bck,pk->bcp", to_coeffs(x, c, lmax), e3nn_sh(lmax, points))
    expected = sum(f**nu for nu in range(1, correlation + 1))
    with torch.no_grad():
        got = torch.einsum("bck,pk->bcp", to_coeffs(mb(x), c, lout), e3nn_sh(lout, points))
    assert_close(got, expected, rtol=1e-11, atol=1e-11)


def test_many_body_exact_projection_of_high_powers():
    """lmax_out < correlation * L: the output is the projection of f^nu (compared with a fine quadrature)."""
    c, lmax, correlation, lout = 1, 2, 3, 2
    mb = GauntManyBody(c, lmax, correlation, lmax_out=lout, dtype=F64)
    with torch.no_grad():
        mb.weight[:2].zero_()  # keep f^3 only
    x = features(2, c * 9, seed=29)
    points, weights = sphere_grid(correlation * lmax + lout + 2)
    f = torch.einsum("bck,pk->bcp", to_coeffs(x, c, lmax), e3nn_sh(lmax, points))
    expected = torch.einsum("bcp,p,pk->bck", f**3, weights, e3nn_sh(lout, points))
    with torch.no_grad():
        assert_close(to_coeffs(mb(x), c, lout), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_many_body_equivariance(dtype):
    c, lmax = 3, 2
    mb = GauntManyBody(c, lmax, 3, lmax_out=3, lmax_hidden=2, dtype=dtype)  # truncated hidden powers
    with torch.no_grad():
        mb.weight.copy_(features(*mb.weight.shape, dtype=dtype, seed=30))
    blocks = wigner_blocks(3, rotation(2))
    x = features(5, c * 9, dtype=dtype, seed=31) * 0.5
    with torch.no_grad():
        assert_equivariant(mb(rotate(x, c, lmax, blocks)), rotate(mb(x), c, 3, blocks), dtype)


def test_many_body_gradients_and_bad_input():
    mb = GauntManyBody(2, 1, 3, dtype=F64)
    gradcheck_float64(mb, features(2, 8, seed=32), gradgrad=True)
    with pytest.raises(SciMLInputError, match="correlation"):
        GauntManyBody(2, 1, 0)
    with pytest.raises(SciMLInputError, match="lmax_hidden"):
        GauntManyBody(2, 1, 2, lmax_hidden=-1)
    with pytest.raises(SciMLInputError, match="'x'"):
        mb(features(2, 9))


# ----------------------------------------------------------------------------------------------- compile


@pytest.mark.compile
def test_compile_fullgraph():
    torch._dynamo.reset()
    tp = GauntTensorProduct(2, 1, 1, 2, dtype=torch.float32)
    x, y = features(3, 8, dtype=torch.float32, seed=33), features(3, 8, dtype=torch.float32, seed=34)
    compiled = torch.compile(tp, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert_close(compiled(x, y), tp(x, y), rtol=1e-6, atol=1e-6)
    # a sanity value: the l = 0 output of 1 * 1 (f = 1) is sqrt(4 pi) per unit of the constant
    ones = torch.zeros(1, 8)
    ones[0, :2] = math.sqrt(4 * math.pi)
    assert_close(compiled(ones, ones)[0, :2].detach(), torch.full((2,), math.sqrt(4 * math.pi)), rtol=1e-5)
