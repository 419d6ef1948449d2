"""Lion / Lion-K: conformance, peers (lion-pytorch, timm), closed-form constrained optima, paths and bad inputs.

Oracles: numpy re-implementations of the update, the peer libraries, the closed-form solutions of the constrained
problems Lion-K solves (clipping, ball projection, singular values clipped, from numpy's SVD) and the contraction
factor of the first phase.
"""

import copy
import io
import itertools
import math

import numpy as np
import pytest
import torch
from sciml_optim import Lion
from sciml_optim import _lion as lion_module
from sciml_optim._lion import lion_reference
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import OptimizerConformance, assert_close


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: intra-op threads only add synchronisation (which costs seconds on a loaded 2-core runner)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- conformance


class TestLionConformance(OptimizerConformance):
    optimizer_class = Lion
    optimizer_kwargs = {"lr": 0.02, "weight_decay": 0.01}  # noqa: RUF012


class TestLionL2Conformance(OptimizerConformance):
    optimizer_class = Lion
    optimizer_kwargs = {"lr": 0.05, "kappa": "l2"}  # noqa: RUF012


class TestLionNuclearConformance(OptimizerConformance):
    optimizer_class = Lion
    optimizer_kwargs = {"lr": 0.05, "kappa": "nuclear"}  # noqa: RUF012


class TestLionHuberConformance(OptimizerConformance):
    optimizer_class = Lion
    optimizer_kwargs = {"lr": 0.02, "kappa": "huber", "huber_delta": 0.1, "weight_decay": 0.01}  # noqa: RUF012


# ------------------------------------------------------------------------------------------- numpy oracle


def _numpy_direction(kappa, c, delta):
    if kappa == "sign":
        return np.sign(c)
    if kappa == "huber":
        return np.clip(c / delta, -1.0, 1.0)
    if kappa == "l2" or (kappa == "nuclear" and c.ndim < 2):
        norm = np.linalg.norm(c)
        return c / norm if norm > 0 else np.zeros_like(c)
    matrix = c.reshape(c.shape[0], -1)
    u, _, vh = np.linalg.svd(matrix, full_matrices=False)
    return (u @ vh).reshape(c.shape)


def _gradient(x, target):
    return (x - target) + 0.3 * (x - target) ** 3


SHAPES = [(3, 4), (5,), (2, 3, 2)]


@pytest.mark.parametrize("kappa", ["sign", "l2", "nuclear", "huber"])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_numpy_oracle(kappa, maximize, foreach):
    rng = np.random.default_rng(7)
    start = [rng.normal(size=s) for s in SHAPES]
    targets = [rng.normal(size=s) for s in SHAPES]
    lr, betas, wd, delta = 0.03, (0.8, 0.95), 0.7, 0.4

    params = [torch.tensor(x, requires_grad=True) for x in start]
    opt = Lion(params, lr=lr, betas=betas, weight_decay=wd, kappa=kappa, huber_delta=delta, maximize=maximize)
    opt.param_groups[0]["foreach"] = foreach
    xs = [x.copy() for x in start]
    ms = [np.zeros_like(x) for x in start]
    for _ in range(8):
        for p, t in zip(params, targets, strict=True):
            p.grad = torch.from_numpy(_gradient(p.detach().numpy(), t))
        opt.step()
        for i, t in enumerate(targets):
            g = _gradient(xs[i], t)
            g = -g if maximize else g
            c = betas[0] * ms[i] + (1 - betas[0]) * g
            xs[i] = xs[i] * (1 - lr * wd) - lr * _numpy_direction(kappa, c, delta)
            ms[i] = betas[1] * ms[i] + (1 - betas[1]) * g
    for p, x, m in zip(params, xs, ms, strict=True):
        # float64: a few roundings per step; sign flips would show as errors of 2 lr
        assert_close(p.detach(), torch.from_numpy(x), rtol=1e-12, atol=1e-12)
        assert_close(opt.state[p]["exp_avg"], torch.from_numpy(m), rtol=1e-12, atol=1e-12)
        assert opt.state[p]["step"].dtype == torch.float32
        assert float(opt.state[p]["step"]) == 8.0


# ------------------------------------------------------------------------------------------- peers


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.norm(self.conv(x))), 2)
        return self.head(x.flatten(1))


def _train_cnn(make_optimizer, steps=100):
    torch.manual_seed(0)
    model = SmallCNN()
    data = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(2))
    optimizer = make_optimizer(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data), labels).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


CNN_HYPER = {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}


@pytest.fixture(scope="module")
def cnn_ours():
    return _train_cnn(lambda params: Lion(params, foreach=False, **CNN_HYPER))


def test_cnn_parity_lion_pytorch(cnn_ours):
    import lion_pytorch
    from lion_pytorch.foreach import Lion as ForeachLion

    ours = cnn_ours
    # lion-pytorch's default decoupled_weight_decay=False scales the parameter by 1 - lr * weight_decay, as we do.
    # Its foreach version uses torch.lerp like us: the same operations, the same bits.
    same_ops = _train_cnn(lambda params: ForeachLion(params, **CNN_HYPER))
    for got, want in zip(ours, same_ops, strict=True):
        assert torch.equal(got, want)
    # Its plain version forms beta1 * m + (1 - beta1) * g by mul and add, one rounding away from lerp; over 100
    # float32 steps such differences may flip the sign of a near-zero entry of c, moving one weight by 2 lr.
    # Tolerance: float32 rounding (1e-5) plus a few such flips, i.e. at most 2 lr per entry, and almost all equal.
    plain = _train_cnn(lambda params: lion_pytorch.Lion(params, **CNN_HYPER))
    close = 0
    total = 0
    for got, want in zip(ours, plain, strict=True):
        assert float((got - want).abs().max()) <= 2 * CNN_HYPER["lr"] * 3 + 1e-5
        close += int(torch.isclose(got, want, rtol=1.3e-6, atol=1e-5).sum())
        total += got.numel()
    assert close >= 0.99 * total


def test_cnn_parity_timm_and_foreach(cnn_ours):
    import timm.optim as timm_optim

    # timm's for-loop Lion runs the same operations as ours: the same bits
    theirs = _train_cnn(lambda params: timm_optim.Lion(params, foreach=False, **CNN_HYPER))
    grouped = _train_cnn(lambda params: Lion(params, foreach=True, **CNN_HYPER))
    for got, want, other in zip(cnn_ours, theirs, grouped, strict=True):
        assert torch.equal(got, want)
        assert torch.equal(got, other)


@pytest.mark.parametrize("foreach", [False, True])
def test_maximize_matches_timm(foreach):
    import timm.optim as timm_optim

    results = []
    for cls in (Lion, timm_optim.Lion):
        x = torch.linspace(-1.0, 1.0, 7, dtype=torch.float64, requires_grad=True)
        opt = cls([x], lr=0.01, weight_decay=0.3, maximize=True, foreach=foreach)
        for _ in range(20):
            opt.zero_grad()
            (-((x - 0.2) ** 2).sum() + x[0] ** 3).backward()
            opt.step()
        results.append(x.detach())
    assert torch.equal(*results)


def test_maximize_is_minimize_of_negative():
    trajectories = []
    for maximize in (False, True):
        x = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
        opt = Lion([x], lr=0.05, weight_decay=0.2, maximize=maximize)
        for _ in range(10):
            opt.zero_grad()
            loss = ((x - 1.0) ** 2 * torch.tensor([1.0, 2.0, 3.0])).sum()
            (-loss if maximize else loss).backward()
            opt.step()
        trajectories.append(x.detach())
    assert torch.equal(*trajectories)


# ------------------------------------------------------------------------------------------- what Lion-K solves

A_VECTOR = [3.0, -0.2, 0.5, -4.0]


def _matrix_target():
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.normal(size=(4, 3)))
    v, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return u @ np.diag([3.0, 0.3, 1.2]) @ v.T


def test_constrained_optima_closed_form():
    """f = 1/2 |x - a|^2, lambda = 2: sign -> clip(a, +-1/2); l2 -> a scaled into the ball; nuclear -> sigma clipped."""
    # T = 2e4 costs ~5 s of CPU; at T = 5e3 the errors are 2.7e-5 (sign), 4e-16 (l2), 3.9e-5 (nuclear), vs
    # 1.0e-5, 5e-16, 8.9e-6 at T = 2e4: the final error is of the order of the last steps, lr_T ~ 0.05 / T
    lam, horizon = 2.0, 5_000
    a = torch.tensor(A_VECTOR, dtype=torch.float64)
    matrix = torch.from_numpy(_matrix_target())
    targets = [a, a, matrix]
    params = [torch.zeros_like(t, requires_grad=True) for t in targets]
    opt = Lion(
        [
            {"params": [params[0]], "kappa": "sign"},
            {"params": [params[1]], "kappa": "l2"},
            {"params": [params[2]], "kappa": "nuclear"},
        ],
        lr=0.05,
        betas=(0.9, 0.99),
        weight_decay=lam,
    )
    for t in range(horizon):
        for group in opt.param_groups:
            group["lr"] = 0.05 * (1.0 - t / horizon)
        for p, target in zip(params, targets, strict=True):
            p.grad = p.detach() - target
        opt.step()

    radius = 1.0 / lam
    clipped = np.clip(A_VECTOR, -radius, radius)
    ball = np.asarray(A_VECTOR) * min(1.0, radius / np.linalg.norm(A_VECTOR))
    u, s, vh = np.linalg.svd(_matrix_target(), full_matrices=False)
    spectral = u @ np.diag(np.minimum(s, radius)) @ vh
    assert np.abs(params[0].detach().numpy() - clipped).max() < 1e-4
    assert np.abs(params[1].detach().numpy() - ball).max() < 1e-4
    assert np.abs(params[2].detach().numpy() - spectral).max() < 1e-4


@pytest.mark.parametrize("kappa", ["sign", "l2", "nuclear"])
def test_phase_one_contraction(kappa):
    """Outside the ball the distance to it shrinks by 1 - lr*lambda per step, exactly when the gradient points out."""
    lam, lr = 2.0, 0.01
    radius = 1.0 / lam
    start = torch.tensor([[10.0, -4.0, 3.0], [2.0, 1.0, -6.0]], dtype=torch.float64)

    def norm(x):
        if kappa == "sign":
            return float(x.abs().max())
        if kappa == "l2":
            return float(torch.linalg.vector_norm(x))
        return float(torch.linalg.matrix_norm(x, ord=2))

    for outward in (True, False):
        x = start.clone().requires_grad_(True)
        opt = Lion([x], lr=lr, weight_decay=lam, kappa=kappa)
        distances = [norm(x.detach()) - radius]
        while distances[-1] > 0 and len(distances) < 2000:
            # f = -1/2 |x|^2 pushes outward (grad = -x), f = 1/2 |x - b|^2 with b inside pulls inward
            x.grad = -x.detach() if outward else x.detach() - 0.1
            opt.step()
            distances.append(norm(x.detach()) - radius)
        # ratios of distances well above rounding (pushed outward, the distance decays geometrically, never to 0)
        pairs = itertools.pairwise(distances[:-1])
        ratios = [after / before for before, after in pairs if after > 1e-6]
        assert len(ratios) > 50
        if outward:
            # the momentum is a positive multiple of -x throughout, so grad_K(c) = -x / |x| in the matching norm
            assert max(abs(r - (1 - lr * lam)) for r in ratios) < 1e-9
        else:
            assert max(ratios) <= 1 - lr * lam + 1e-12


# ------------------------------------------------------------------------------------------- paths and state


def _mixed_params():
    generator = torch.Generator().manual_seed(5)
    return [
        torch.randn(4, 6, generator=generator, dtype=torch.float32),
        torch.randn(7, generator=generator, dtype=torch.float64),
        torch.randn(3, 2, 2, generator=generator).to(torch.bfloat16),
        torch.randn(5, generator=generator).to(torch.float16),
        torch.randn(2, 3, generator=generator, dtype=torch.float32),
    ]


def _run(params, steps, **kwargs):
    params = [p.clone().requires_grad_(True) for p in params]
    opt = Lion(params, **kwargs)
    generator = torch.Generator().manual_seed(11)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize("kappa", ["sign", "l2", "nuclear", "huber", torch.tanh])
@pytest.mark.parametrize("chunk", [1 << 20, 16])
def test_foreach_bitwise(kappa, chunk, monkeypatch):
    # chunk: CPU buckets are split into runs of this many elements; 16 splits them between every tensor
    monkeypatch.setattr(lion_module, "_CPU_CHUNK_ELEMENTS", chunk)
    kwargs = {"lr": 0.01, "weight_decay": 0.5, "kappa": kappa, "maximize": True, "huber_delta": 0.3}
    loop, loop_opt = _run(_mixed_params(), 6, foreach=False, **kwargs)
    grouped, grouped_opt = _run(_mixed_params(), 6, foreach=True, **kwargs)
    for a, b in zip(loop, grouped, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
        assert torch.equal(loop_opt.state[a]["exp_avg"], grouped_opt.state[b]["exp_avg"])


def test_half_precision_state_and_resume():
    params, opt = _run(_mixed_params(), 3, lr=0.01, weight_decay=0.1)
    for p in params:
        want = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
        assert opt.state[p]["exp_avg"].dtype == want
    reference, _ = _run(_mixed_params(), 6, lr=0.01, weight_decay=0.1)
    for foreach in (False, True):
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        resumed_params = [p.detach().clone().requires_grad_(True) for p in params]
        resumed = Lion(resumed_params, lr=0.01, weight_decay=0.1, foreach=foreach)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        for p in resumed_params:
            assert resumed.state[p]["exp_avg"].dtype == (torch.float64 if p.dtype == torch.float64 else torch.float32)
        generator = torch.Generator().manual_seed(11)
        for _ in range(3):  # replay the generator: 3 steps were taken already
            for p in resumed_params:
                torch.randn(p.shape, generator=generator)
        for _ in range(3):
            for p in resumed_params:
                p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
            resumed.step()
        for a, b in zip(resumed_params, reference, strict=True):
            assert torch.equal(a, b)


def test_l2_zero_momentum_gives_zero_direction():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = Lion([x], lr=0.1, weight_decay=0.5, kappa="l2")
    x.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(x.detach(), torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.1 * 0.5))


def test_callable_kappa():
    same = []
    for kappa in ("sign", torch.sign):
        params, _ = _run(_mixed_params()[:2], 4, lr=0.01, kappa=kappa)
        same.append(params)
    for a, b in zip(*same, strict=True):
        assert torch.equal(a, b)
    x = torch.ones(3, requires_grad=True)
    opt = Lion([x], kappa=lambda c: c.sum())
    x.grad = torch.ones(3)
    with pytest.raises(SciMLInputError, match="kappa"):
        opt.step()


def test_reference_function_doc_values():
    x, g, m = torch.tensor([0.5, -0.5]), torch.tensor([-1.0, 4.0]), torch.tensor([2.0, -3.0])
    lion_reference([x], [g], [m], lr=0.1, beta1=0.5, beta2=0.75, weight_decay=1.0)
    # c = [0.5, 0.5] -> sign [1, 1]; x = 0.9 x - 0.1; m = 0.75 m + 0.25 g
    assert_close(x, torch.tensor([0.35, -0.55]))
    assert_close(m, torch.tensor([1.25, -1.25]))


# ------------------------------------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_policies(bad):
    def setup(policy):
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = torch.tensor([3.0], requires_grad=True)
        opt = Lion([{"params": [x]}, {"params": [y], "nonfinite": "ignore"}], lr=0.1, nonfinite=policy)
        x.grad = torch.tensor([bad, 1.0])
        y.grad = torch.tensor([1.0])
        return x, y, opt

    x, y, opt = setup("raise")
    with pytest.raises(SciMLInputError, match="NaN or infinity"):
        opt.step()
    assert torch.equal(x.detach(), torch.tensor([1.0, 2.0]))
    assert torch.equal(y.detach(), torch.tensor([3.0]))  # nothing moved, not even the other group
    assert len(opt.state) == 2
    assert all(float(s["step"]) == 0 for s in opt.state.values())

    x, y, opt = setup("skip")
    opt.step()
    assert torch.equal(x.detach(), torch.tensor([1.0, 2.0]))
    assert float(opt.state[x]["step"]) == 0
    assert torch.equal(opt.state[x]["exp_avg"], torch.zeros(2))
    assert float(y.detach()) == pytest.approx(2.9)  # the other group still steps
    x.grad = torch.tensor([1.0, 1.0])
    opt.step()
    assert float(opt.state[x]["step"]) == 1
    assert torch.allclose(x.detach(), torch.tensor([0.9, 1.9]))

    x, _, opt = setup("ignore")
    opt.step()
    # documented propagation: the momentum holds the bad value
    assert not bool(torch.isfinite(opt.state[x]["exp_avg"][0]))
    x.grad = torch.tensor([1.0, 1.0])
    opt.step()
    if math.isnan(bad):
        # sign(NaN) = 0 in torch: the entry is frozen
        assert float(x.detach()[0]) == 1.0
    assert not bool(torch.isfinite(opt.state[x]["exp_avg"][0]))


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"betas": (1.0, 0.99)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"kappa": "l1"}, "kappa"),
        ({"huber_delta": 0.0}, "huber_delta"),
        ({"nonfinite": "warn"}, "nonfinite"),
        ({"foreach": True, "fused": True}, "fused"),
        ({"fused": True, "kappa": "l2"}, "fused"),
        ({"fused": True, "kappa": torch.sign}, "fused"),
        ({"maximize": 1}, "maximize"),
    ],
)
def test_bad_hyperparameters(kwargs, argument):
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(SciMLInputError) as info:
        Lion([x], **kwargs)
    assert info.value.argument == argument
    opt = Lion([x])
    with pytest.raises(SciMLInputError):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **kwargs})


def test_sparse_gradient_raises():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = Lion(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(SciMLInputError, match="sparse"):
        opt.step()


# ------------------------------------------------------------------------------------------- DTensor


@pytest.fixture
def cpu_mesh(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kappa", ["sign", "l2", "nuclear", "huber"])
def test_dtensor_matches_plain(cpu_mesh, kappa):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    start = _mixed_params()
    kwargs = {"lr": 0.01, "weight_decay": 0.3, "kappa": kappa, "nonfinite": "raise"}
    plain, _ = _run(start, 5, **kwargs)
    for foreach in (False, True):
        params = [torch.nn.Parameter(distribute_tensor(copy.deepcopy(p), cpu_mesh, [Shard(0)])) for p in start]
        opt = Lion(params, foreach=foreach, **kwargs)
        generator = torch.Generator().manual_seed(11)
        for _ in range(5):
            for p in params:
                full = torch.randn(p.shape, generator=generator).to(p.dtype)
                p.grad = distribute_tensor(full, cpu_mesh, [Shard(0)])
            opt.step()
        for p, want in zip(params, plain, strict=True):
            assert isinstance(p.data, DTensor)
            assert isinstance(opt.state[p]["exp_avg"], DTensor)
            assert torch.equal(p.data.full_tensor(), want.detach())
    params[0].grad = distribute_tensor(torch.full(params[0].shape, float("nan")), cpu_mesh, [Shard(0)])
    with pytest.raises(SciMLInputError, match="NaN"):
        opt.step()
