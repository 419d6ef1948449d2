import math

import numpy as np
import pytest
import sciml_protocols as sp
import torch
from scipy.spatial.distance import cdist

DTYPES = [torch.float32, torch.float64]


def points(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_against_scipy_cdist(dtype):
    x, y = points(7, 3, dtype, 0), points(5, 3, dtype, 1)
    k = sp.GaussianKernel(lengthscale=1.7, variance=2.5)
    expected = 2.5 * np.exp(-cdist(x.double().numpy(), y.double().numpy(), "sqeuclidean") / (2 * 1.7**2))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(k(x, y).double().numpy(), expected, rtol=tol, atol=tol)
    assert k(x, y).dtype == dtype


def test_gaussian_ard_lengthscales():
    x, y = points(6, 3, torch.float64, 2), points(4, 3, torch.float64, 3)
    ell = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    expected = np.exp(-0.5 * cdist((x / ell).numpy(), (y / ell).numpy(), "sqeuclidean"))
    np.testing.assert_allclose(sp.GaussianKernel(ell)(x, y).numpy(), expected, rtol=1e-12, atol=1e-14)
    with pytest.raises(sp.SciMLInputError, match="'lengthscale': has 3 entries"):
        sp.GaussianKernel(ell)(points(2, 2, torch.float64), points(2, 2, torch.float64))


@pytest.mark.parametrize(("norm", "metric"), [("l2", "euclidean"), ("l1", "cityblock")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_laplace_against_scipy_cdist(norm, metric, dtype):
    x, y = points(6, 4, dtype, 4), points(8, 4, dtype, 5)
    k = sp.LaplaceKernel(lengthscale=0.8, variance=1.5, norm=norm)
    expected = 1.5 * np.exp(-cdist(x.double().numpy(), y.double().numpy(), metric) / 0.8)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(k(x, y).double().numpy(), expected, rtol=tol, atol=tol)


def test_laplace_l1_matches_sklearn_convention():
    # sklearn.metrics.pairwise.laplacian_kernel: exp(-gamma * ||x - y||_1)
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    gamma = 0.3
    expected = torch.exp(-gamma * torch.tensor([[0.0, 4.0], [4.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(sp.LaplaceKernel(1 / gamma, norm="l1")(x), expected)


@pytest.mark.parametrize("kernel", [sp.GaussianKernel(0.7), sp.LaplaceKernel(0.7), sp.LaplaceKernel(0.7, norm="l1")])
def test_gram_is_symmetric_psd_with_correct_diag(kernel):
    x = points(40, 3, torch.float64, 6)
    gram = kernel(x)
    torch.testing.assert_close(gram, gram.T)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10
    torch.testing.assert_close(kernel.diag(x), torch.diagonal(gram))
    assert isinstance(kernel, sp.Kernel)


def test_batched_inputs():
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    y = torch.randn(2, 4, 3, dtype=torch.float64)
    for kernel in (sp.GaussianKernel(), sp.LaplaceKernel()):
        gram = kernel(x, y)
        assert gram.shape == (2, 5, 4)
        torch.testing.assert_close(gram[1], kernel(x[1], y[1]))
        assert kernel.diag(x).shape == (2, 5)


def test_gradients_in_float64():
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64)
    ell = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, ell: sp.GaussianKernel(ell)(x, y), (x, ell))
    assert torch.autograd.gradcheck(lambda x, ell: sp.LaplaceKernel(ell)(x, y), (x, ell))


@pytest.mark.parametrize(
    "kernel", [sp.GaussianKernel(1.3, 2.0), sp.LaplaceKernel(1.3, 2.0), sp.LaplaceKernel(1.3, 2.0, norm="l1")]
)
def test_random_fourier_features_are_unbiased(kernel):
    # Monte Carlo: the error of a D-frequency estimate is O(sigma^2 / sqrt(D)); 3e4 frequencies -> ~1e-2.
    x = points(6, 3, torch.float64, 7) * 0.5
    phi = kernel.random_features(3, 60_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert phi.num_features == 60_000
    approx = phi(x) @ phi(x).T
    assert (approx - kernel(x)).abs().max() < 0.05
    # A wrong spectral density (twice the lengthscale) must be detected by the same tolerance.
    wrong = (
        type(kernel)(2.6, 2.0) if isinstance(kernel, sp.GaussianKernel) else type(kernel)(2.6, 2.0, norm=kernel.norm)
    )
    assert (approx - wrong(x)).abs().max() > 0.1


def test_bad_input():
    k = sp.GaussianKernel()
    with pytest.raises(sp.SciMLInputError, match="'x'"):
        k(torch.zeros(3))
    with pytest.raises(sp.SciMLInputError, match="'y': has dimension"):
        k(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(sp.SciMLInputError, match="'y': has dtype"):
        k(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(sp.SciMLInputError, match="'x': contains 1 NaN"):
        k(torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(sp.SciMLInputError, match="'x'.*floating"):
        k(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(sp.SciMLInputError, match="'y': is on meta"):
        k(torch.zeros(3, 2), torch.zeros(3, 2, device="meta"))
    with pytest.raises(sp.SciMLInputError, match="'lengthscale'"):
        sp.GaussianKernel(lengthscale=0.0)
    with pytest.raises(sp.SciMLInputError, match="'variance'"):
        sp.LaplaceKernel(variance=-1.0)
    with pytest.raises(sp.SciMLInputError, match="'lengthscale'"):
        sp.GaussianKernel(lengthscale=torch.ones(2, 2))
    with pytest.raises(sp.SciMLInputError, match="'norm'"):
        sp.LaplaceKernel(norm="l3")  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError, match="'num_features'"):
        k.random_features(2, 3)
    with pytest.raises(sp.SciMLInputError, match="'dim'"):
        k.random_features(0, 4)
    phi = k.random_features(2, 4)
    with pytest.raises(sp.SciMLInputError, match="drawn for d=2"):
        phi(torch.zeros(3, 5))
