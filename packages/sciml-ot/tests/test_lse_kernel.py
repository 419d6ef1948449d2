"""Online soft-minimum (sciml_ot._kernels.lse): reference vs the dense formula, gradients, memory, Triton parity.

Oracles: ``torch.logsumexp`` on the full cost matrix built from ``x[:, None] - y[None]`` and autograd through it.
Run the interpreter tests with
``TRITON_INTERPRET=1 uv run pytest -m interpret packages/sciml-ot/tests/test_lse_kernel.py`` (the variable must be
set before triton defines the kernel, so the kernel is built inside the tests).
"""

import pytest
import torch
from sciml_ot._kernels import lse
from sciml_ot._kernels.lse import online_softmin, online_softmin_op, online_softmin_reference
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, assert_interpreter_parity, gradcheck_float64, interpreter_enabled
from torch.utils._python_dispatch import TorchDispatchMode

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
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def dense_cost(x, y, cost):
    diff = x[..., :, None, :] - y[..., None, :, :]
    sq = (diff * diff).sum(-1)
    return sq if cost == "sqeuclidean" else sq.sqrt()


def dense_softmin(x, y, h, eps, cost="sqeuclidean"):
    """The oracle: the full (n, m) matrix and torch.logsumexp, in float64."""
    x, y, h = x.double(), y.double(), h.double()
    return -eps * torch.logsumexp((h[..., None, :] - dense_cost(x, y, cost)) / eps, dim=-1)


def clouds(n, m, d, dtype=torch.float64, batch=None, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    x = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    y = torch.randn(*lead, m, d, generator=g, dtype=torch.float64) + 0.5
    h = 0.3 * torch.randn(*lead, m, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, y, h))


@pytest.fixture
def small_tiles(monkeypatch):
    # tiles of a few columns, so several tiles and a ragged last one are exercised
    monkeypatch.setattr(lse, "TILE_ELEMENTS", 200)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("d", [3, 20])  # 20 > 16 takes the Gram expansion for sqeuclidean
def test_reference_matches_dense(small_tiles, dtype, cost, d):
    x, y, h = clouds(37, 53, d, dtype)
    for eps in (0.05, 1.0, 10.0):
        s = online_softmin_reference(x, y, h, eps, cost)
        assert s.dtype == dtype
        assert s.shape == (37,)
        want = dense_softmin(x, y, h, eps, cost)
        tol = TOL[dtype] * (1.0 if d < 20 or dtype == torch.float64 else 10.0)
        assert_close(s.double(), want, rtol=tol, atol=tol * (1.0 + want.abs().max().item()))


def test_reference_batched_matches_dense(small_tiles):
    x, y, h = clouds(19, 23, 2, batch=3)
    s = online_softmin(x, y, h, 0.2)
    assert s.shape == (3, 19)
    assert_close(s, dense_softmin(x, y, h, 0.2), rtol=1e-12, atol=1e-12)
    for b in range(3):  # each batch entry is the unbatched problem
        assert_close(s[b], online_softmin(x[b], y[b], h[b], 0.2), rtol=1e-14, atol=1e-14)


def test_half_precision_computes_in_float32():
    x, y, h = clouds(10, 12, 2, torch.float16)
    s = online_softmin(x, y, h, 0.5)
    assert s.dtype == torch.float16
    assert_close(s.double(), dense_softmin(x, y, h, 0.5), rtol=2e-3, atol=2e-3)


def test_zero_weights_and_extremes(small_tiles):
    x, y, h = clouds(8, 30, 2)
    h[::3] = -torch.inf  # b_j = 0: these columns drop out
    keep = torch.isfinite(h)
    s = online_softmin(x, y, h, 0.1)
    assert_close(s, dense_softmin(x, y[keep], h[keep], 0.1), rtol=1e-12, atol=1e-12)
    # every column with zero weight: the soft minimum is +inf, no NaN
    assert torch.isposinf(online_softmin(x, y, torch.full_like(h, -torch.inf), 0.1)).all()
    # a tiny eps: the soft minimum tends to min_j (C_ij - h_j) without overflow
    h = torch.zeros_like(h)
    s = online_softmin(x, y, h, 1e-6)
    assert_close(s, dense_cost(x, y, "sqeuclidean").amin(-1), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("batch", [None, 2])
def test_gradients_match_dense_autograd(small_tiles, cost, batch):
    x, y, h = clouds(11, 17, 3, batch=batch)
    lead = () if batch is None else (batch,)
    cotangent = torch.randn(*lead, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = [t.clone().requires_grad_() for t in (x, y, h)]
    want = [t.clone().requires_grad_() for t in (x, y, h)]
    (online_softmin(*got, 0.3, cost) * cotangent).sum().backward()
    (dense_softmin(*want, 0.3, cost) * cotangent).sum().backward()
    for a, b in zip(got, want, strict=True):
        assert a.grad is not None
        assert b.grad is not None
        assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_gradcheck_reference(small_tiles, cost):
    x, y, h = clouds(5, 7, 2, batch=2)
    gradcheck_float64(lambda a, b, c: online_softmin(a, b, c, 0.4, cost, backend="torch"), x, y, h)


def test_gradient_in_h_is_minus_the_row_weights():
    x, y, h = clouds(6, 9, 2)
    h.requires_grad_()
    s = online_softmin(x, y, h, 0.5)
    (jac,) = torch.autograd.grad(s[2], h)
    weights = torch.softmax((h.detach() - dense_cost(x, y, "sqeuclidean")[2]) / 0.5, dim=0)
    assert_close(jac, -weights, rtol=1e-12, atol=1e-14)


# torch's fake-tensor conversion inside opcheck reads .grad of a non-leaf (a torch-internal warning it means to hide)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_opcheck(cost):
    x, y, h = clouds(6, 5, 2, batch=2)
    args = (x.requires_grad_(), y.requires_grad_(), h.requires_grad_(), 0.5, cost, "torch")
    torch.library.opcheck(online_softmin_op, args)


# ----------------------------------------------------------------------------------------------- memory


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_reference_never_forms_the_full_matrix():
    n, m = 20_000, 700  # tiles of 2**22 numbers hold ~100 columns: the (n, m) matrix would be 3x larger
    x, y, h = clouds(n, m, 2, torch.float32)
    x.requires_grad_()
    with LargestTensor() as mode:
        s = online_softmin(x, y, h, 0.1)
        s.sum().backward()
    assert mode.largest <= lse.TILE_ELEMENTS + n
    assert mode.largest < n * m / 3
    rows = torch.arange(0, n, 997)
    assert_close(s[rows].detach().double(), dense_softmin(x[rows].detach(), y, h, 0.1), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_inputs():
    x, y, h = clouds(4, 5, 2)
    with pytest.raises(SciMLInputError, match="eps"):
        online_softmin(x, y, h, 0.0)
    with pytest.raises(SciMLInputError, match="eps"):
        online_softmin(x, y, h, float("nan"))
    with pytest.raises(SciMLInputError, match="cost"):
        online_softmin(x, y, h, 1.0, "cosine")
    with pytest.raises(SciMLInputError, match="'y'"):
        online_softmin(x, y[:, :1], h, 1.0)
    with pytest.raises(SciMLInputError, match="'h'"):
        online_softmin(x, y, h[:4], 1.0)
    with pytest.raises(SciMLInputError, match="'y'"):
        online_softmin(x, y.float(), h, 1.0)
    with pytest.raises(SciMLInputError, match="'x'"):
        online_softmin(x[0], y, h, 1.0)
    with pytest.raises(SciMLInputError, match="'y'"):
        online_softmin(x, y[:0], h[:0], 1.0)
    with pytest.raises(SciMLInputError, match="'x'"):
        online_softmin(x.long(), y.long(), h.long(), 1.0)
    with pytest.raises(SciMLInputError, match="'x'"):
        online_softmin(torch.full_like(x, torch.nan), y, h, 1.0)
    with pytest.raises(SciMLInputError, match="'h'"):
        online_softmin(x, y, torch.full_like(h, torch.inf), 1.0)
    with pytest.raises(SciMLInputError, match="backend"):
        online_softmin(x, y, h, 1.0, backend="gpu")
    xb, yb, hb = clouds(4, 5, 2, batch=2)
    with pytest.raises(SciMLInputError, match="'y'"):
        online_softmin(xb, yb[:1], hb[:1], 1.0)


@pytest.mark.skipif(interpreter_enabled(), reason="the interpreter allows Triton on CPU tensors")
def test_triton_on_cpu_needs_the_interpreter():
    x, y, h = clouds(4, 5, 2)
    with pytest.raises(SciMLInputError, match="TRITON_INTERPRET"):
        online_softmin(x, y, h, 1.0, backend="triton")
    # auto on CPU is the reference, never a launch
    assert_close(online_softmin(x, y, h, 1.0, backend="auto"), dense_softmin(x, y, h, 1.0), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- Triton


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("batch", [None, 2])
def test_interpreter_parity(cost, batch):
    x, y, h = clouds(70, 45, 3, batch=batch)  # neither a multiple of the 64 x 64 tile
    if batch is None:
        x, y, h = x[None], y[None], h[None]
    h[..., 5] = -torch.inf
    for eps in (0.05, 1.0):
        assert_interpreter_parity(
            lambda a, b, c, eps=eps: lse.launch(a, b, c, eps, cost),
            lambda a, b, c, eps=eps: lse._reference_batched(a, b, c, eps, cost),
            x,
            y,
            h,
            rtol=1e-5,
            atol=1e-5,
        )
        got = lse.launch(x, y, h, eps, cost)
        assert_close(got, dense_softmin(x, y, h, eps, cost), rtol=1e-12, atol=1e-12)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_public_backend_and_gradients():
    x, y, h = clouds(20, 30, 2, torch.float64)
    x_t, y_t, h_t = (t.clone().requires_grad_() for t in (x, y, h))
    s = online_softmin(x_t, y_t, h_t, 0.3, backend="triton")
    assert_close(s, dense_softmin(x, y, h, 0.3), rtol=1e-12, atol=1e-12)
    s.sum().backward()
    x_d, y_d, h_d = (t.clone().requires_grad_() for t in (x, y, h))
    dense_softmin(x_d, y_d, h_d, 0.3).sum().backward()
    for a, b in ((x_t, x_d), (y_t, y_d), (h_t, h_d)):
        assert a.grad is not None
        assert b.grad is not None
        assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
def test_cuda_matches_reference(dtype, cost):
    n = m = 10_000
    x, y, h = clouds(n, m, 3, dtype, device="cuda")
    for eps in (0.01, 1.0):
        got = online_softmin(x, y, h, eps, cost, backend="triton")
        want = online_softmin(x.double(), y.double(), h.double(), eps, cost, backend="torch")
        tol = TOL[dtype] * 10
        assert_close(got.double(), want, rtol=tol, atol=tol * (1 + want.abs().max().item()))
    # batched, ragged sizes, and auto picks Triton for CUDA tensors
    xb, yb, hb = clouds(1001, 777, 5, dtype, batch=3, device="cuda")
    got = online_softmin(xb, yb, hb, 0.1, cost)
    want = online_softmin(xb, yb, hb, 0.1, cost, backend="torch")
    assert_close(got, want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.gpu
@needs_cuda
def test_cuda_gradients_match_reference():
    x, y, h = clouds(3000, 2000, 3, torch.float64, device="cuda")
    grads = []
    for backend in ("triton", "torch"):
        leaves = [t.clone().requires_grad_() for t in (x, y, h)]
        online_softmin(*leaves, 0.2, backend=backend).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads, strict=True):
        assert_close(a, b, rtol=1e-10, atol=1e-12)
