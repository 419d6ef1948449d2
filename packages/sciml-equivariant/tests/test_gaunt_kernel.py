"""Fused grid Gaunt product (sciml_equivariant._kernels.gaunt_grid): reference, gradients, operator, Triton parity.

Oracles: a quadrature grid built here from e3nn's spherical harmonics and numpy's Gauss-Legendre nodes, and the
Gaunt tensor obtained by integrating three e3nn harmonics on a finer grid (so the grid product must equal the
explicit sum over (l1 m1, l2 m2) with Gaunt coefficients); finite differences (gradcheck) for the hand-written
backward. Run the interpreter tests with
``TRITON_INTERPRET=1 uv run pytest -m interpret packages/sciml-equivariant/tests/test_gaunt_kernel.py``.
"""

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from sciml_equivariant._kernels import gaunt_grid
from sciml_equivariant._kernels.gaunt_grid import gaunt_grid_op, gaunt_grid_product, gaunt_grid_reference
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, assert_interpreter_parity, gradcheck_float64, interpreter_enabled

needs_interpreter = pytest.mark.skipif(
    not interpreter_enabled(),
    reason=(
        "Triton interpreter parity runs in the nox interpret session "
        "(TRITON_INTERPRET=1 must be set before triton loads)"
    ),
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run shared/gpu_check.sh on the GPU machine)"
)


def e3nn_sh(lmax, points):
    return o3.spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization="integral")


def e3nn_grid(l1, l2, lout):
    """(B_x, B_y, W) of a Gauss-Legendre x uniform-phi grid exact to degree l1 + l2 + lout, e3nn harmonics."""
    degree = l1 + l2 + lout
    n_theta, n_phi = degree // 2 + 1, degree + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    sin = np.sqrt(1 - nodes**2)
    points = np.stack(
        [np.outer(sin, np.sin(phi)).ravel(), np.repeat(nodes, n_phi), np.outer(sin, np.cos(phi)).ravel()], -1
    )
    quad = torch.from_numpy(np.repeat(weights, n_phi) * 2 * np.pi / n_phi)
    sh = e3nn_sh(max(l1, l2, lout), torch.from_numpy(points))
    return sh[:, : (l1 + 1) ** 2], sh[:, : (l2 + 1) ** 2], sh[:, : (lout + 1) ** 2] * quad[:, None]


def gaunt_tensor(l1, l2, lout):
    """G[i, j, k] = int Y_i Y_j Y_k over all coefficient indices, by a (finer than needed) e3nn quadrature."""
    bx, by, w = e3nn_grid(l1 + 1, l2 + 1, lout + 1)
    k1, k2 = (l1 + 1) ** 2, (l2 + 1) ** 2
    return torch.einsum("gi,gj,gk->ijk", bx[:, :k1], by[:, :k2], w[:, : (lout + 1) ** 2])


def random_rows(n, k1, k2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k1, generator=g, dtype=dtype), torch.randn(n, k2, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("l1", "l2", "lout"), [(2, 3, 4), (3, 1, 2), (0, 2, 5)])
def test_grid_product_is_the_gaunt_sum(l1, l2, lout):
    x, y = random_rows(7, (l1 + 1) ** 2, (l2 + 1) ** 2)
    expected = torch.einsum("ni,nj,ijk->nk", x, y, gaunt_tensor(l1, l2, lout))
    got = gaunt_grid_product(x, y, *e3nn_grid(l1, l2, lout))
    assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the selection rule: 1 (x) 1 -> 1 is the cross product, absent from a function product
    if (l1, l2, lout) == (2, 3, 4):
        assert float(gaunt_tensor(1, 1, 1)[1:4, 1:4, 1:4].abs().max()) < 1e-14


def test_float32_and_broadcasting():
    bx, by, w = e3nn_grid(2, 2, 3)
    x, y = random_rows(6, 9, 9)
    x, y = x.reshape(2, 3, 9), y[:3]  # (2, 3, 9) with (3, 9)
    expected = gaunt_grid_reference(x, y.expand(2, 3, 9), bx, by, w)
    got = gaunt_grid_product(x.float(), y.float(), bx.float(), by.float(), w.float())
    assert got.dtype == torch.float32
    assert got.shape == (2, 3, 16)
    assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # half inputs compute in float32 and come back in their dtype
    half = gaunt_grid_product(x.bfloat16(), y.bfloat16(), bx, by, w)
    assert half.dtype == torch.bfloat16
    assert_close(half.double(), expected, rtol=3e-2, atol=3e-2)


def test_backward_formulas_by_finite_differences():
    """The hand-written backward of the operator (all five arguments), and its own derivative."""
    g = torch.Generator().manual_seed(3)
    x, y = random_rows(3, 4, 3)
    bx, by, w = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((6, 4), (6, 3), (6, 5)))

    def fn(a, b, c, d, e):
        return gaunt_grid._Eager.apply(a, b, c, d, e, "torch", False)

    gradcheck_float64(fn, x, y, bx, by, w, gradgrad=True)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # raised inside opcheck
def test_operator_registration():
    bx, by, w = e3nn_grid(1, 1, 2)
    x, y = random_rows(5, 4, 4)
    x.requires_grad_(True)
    torch.library.opcheck(gaunt_grid_op, (x, y, bx, by, w, "torch", False))
    out = gaunt_grid_op(x, y, bx, by, w, "torch", False)
    assert_close(out, torch.einsum("ni,nj,ijk->nk", x.detach(), y, gaunt_tensor(1, 1, 2)), rtol=1e-12, atol=1e-12)


def test_bad_input():
    bx, by, w = e3nn_grid(1, 1, 1)
    x, y = random_rows(2, 4, 4)
    with pytest.raises(SciMLInputError, match="'y'"):
        gaunt_grid_product(x, y.float(), bx, by, w)
    with pytest.raises(SciMLInputError, match="basis_x"):
        gaunt_grid_product(x, y, bx[:, :3], by, w)
    with pytest.raises(SciMLInputError, match="basis_y"):
        gaunt_grid_product(x, y, bx, by[:-1], w)
    with pytest.raises(SciMLInputError, match="'x'"):
        gaunt_grid_product(x.long(), y, bx, by, w)
    with pytest.raises(SciMLInputError, match="broadcast"):
        gaunt_grid_product(x, torch.cat([y, y]), bx, by, w)
    with pytest.raises(SciMLInputError, match="projection"):
        gaunt_grid_product(x, y, bx, by, w[:, :0])
    with pytest.raises(SciMLInputError, match="backend"):
        gaunt_grid_product(x, y, bx, by, w, backend="cuda")


@pytest.mark.skipif(
    interpreter_enabled(),
    reason="checks the error for Triton on CPU tensors, which TRITON_INTERPRET=1 allows (runs in the plain tests)",
)
def test_triton_on_cpu_needs_the_interpreter():
    bx, by, w = e3nn_grid(1, 1, 1)
    x, y = random_rows(2, 4, 4)
    with pytest.raises(SciMLInputError, match="TRITON_INTERPRET"):
        gaunt_grid_product(x, y, bx, by, w, backend="triton")


# ----------------------------------------------------------------------------------------------- Triton


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_parity_odd_sizes():
    # 19 rows (not a block multiple), K1 = 81 > 64 (two K chunks), K3 = 130 > 128 (two output blocks), G = 70
    g = torch.Generator().manual_seed(1)
    x = torch.randn(19, 81, generator=g, dtype=torch.float64)
    y = torch.randn(19, 5, generator=g, dtype=torch.float64)
    bx = torch.randn(70, 81, generator=g, dtype=torch.float64)
    by = torch.randn(70, 5, generator=g, dtype=torch.float64)
    w = torch.randn(70, 130, generator=g, dtype=torch.float64) / 70
    assert_interpreter_parity(gaunt_grid.launch, gaunt_grid_reference, x, y, bx, by, w, rtol=1e-5, atol=1e-4)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_gaunt_product_and_gradients():
    """The kernel on a real grid against the Gaunt sum, with an expanded (stride-0) y, and autograd through it."""
    bx, by, w = e3nn_grid(3, 2, 4)
    x, y = random_rows(10, 16, 9)
    y = y[:1].expand(10, 9)
    expected = torch.einsum("ni,nj,ijk->nk", x, y, gaunt_tensor(3, 2, 4))
    assert_close(gaunt_grid.launch(x, y, bx, by, w), expected, rtol=1e-12, atol=1e-12)
    got32 = gaunt_grid.launch(x.float(), y.float(), bx.float(), by.float(), w.float())
    assert_close(got32, expected, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    out = gaunt_grid_product(xg, y, bx, by, w, backend="triton")
    (grad,) = torch.autograd.grad((out * out).sum(), xg)
    xr = x.clone().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad((gaunt_grid_reference(xr, y, bx, by, w) ** 2).sum(), xr)
    assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_kernel(dtype):
    cuda = torch.device("cuda")
    bx, by, w = (t.to(cuda) for t in e3nn_grid(6, 6, 6))
    x, y = (t.to(cuda) for t in random_rows(1000, 49, 49))
    expected = gaunt_grid_reference(x, y, bx, by, w)
    got = gaunt_grid_product(x.to(dtype), y.to(dtype), bx, by, w, backend="triton")
    assert got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    scale = float(expected.abs().max())
    assert_close(got.double() / scale, expected / scale, rtol=tol, atol=tol)
    # backward through the op, double backward too
    xg = x.float().requires_grad_(True)
    out = gaunt_grid_product(xg, y.float(), bx.float(), by.float(), w.float(), backend="triton")
    (grad,) = torch.autograd.grad(out.square().sum(), xg, create_graph=True)
    grad.sum().backward()
    assert xg.grad is not None
    assert bool(torch.isfinite(xg.grad).all())
    xr = x.clone().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad(gaunt_grid_reference(xr, y, bx, by, w).square().sum(), xr)
    assert_close(grad.double() / scale, expected_grad / scale, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.compile
@needs_cuda
def test_cuda_compile():
    cuda = torch.device("cuda")
    bx, by, w = (t.to(cuda, torch.float32) for t in e3nn_grid(2, 2, 2))
    x, y = (t.to(cuda, torch.float32) for t in random_rows(64, 9, 9))
    fn = torch.compile(lambda a, b: gaunt_grid_product(a, b, bx, by, w, backend="triton"), fullgraph=True)
    assert_close(fn(x, y), gaunt_grid_reference(x, y, bx, by, w), rtol=1e-5, atol=1e-5)


def test_grid_weights_sum_to_sphere_area():
    """Sanity of the test's own grid: W's l = 0 column integrates Y_00, so it sums to sqrt(4 pi)."""
    _, _, w = e3nn_grid(2, 2, 2)
    assert_close(w[:, 0].sum(), torch.tensor(math.sqrt(4 * math.pi), dtype=torch.float64), rtol=1e-14, atol=1e-14)
