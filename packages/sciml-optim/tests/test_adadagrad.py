"""Tests of AdAdaGrad / AdAdaGrad-Norm and the adaptive batch size tests, against independent oracles."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from sciml_optim._adadagrad import (
    AdAdaGrad,
    AdAdaGradNorm,
    AdaptiveBatchSampler,
    BatchSizeController,
)
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import OptimizerConformance
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TestAdAdaGradNormConformance(OptimizerConformance):
    optimizer_class = AdAdaGradNorm
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 1.0, "b0": 0.1}


class TestAdAdaGradConformance(OptimizerConformance):
    optimizer_class = AdAdaGrad
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 0.5}


# ----------------------------------------------------------------------------------------------- optimizers


def _problem(seed: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(3, 4, generator=generator, dtype=torch.float64),
        torch.randn(5, generator=generator, dtype=torch.float64),
    ]
    targets = torch.randn(17, generator=generator, dtype=torch.float64)
    weights = torch.rand(17, generator=generator, dtype=torch.float64) + 0.5
    return params, targets, weights


def _loss(params: list[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    flat = torch.cat([p.reshape(-1) for p in params])
    return (weights * (flat - targets) ** 2).sum() + 0.1 * (flat**4).sum()


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_adadagrad_matches_torch_adagrad(maximize: bool, foreach: bool) -> None:
    init, targets, weights = _problem(0)
    ours = [p.clone().requires_grad_(True) for p in init]
    theirs = [p.clone().requires_grad_(True) for p in init]
    kwargs = {"lr": 0.07, "initial_accumulator_value": 0.3, "eps": 1e-8, "maximize": maximize, "foreach": foreach}
    opt_ours = AdAdaGrad(ours, **kwargs)
    opt_theirs = torch.optim.Adagrad(theirs, lr_decay=0.0, weight_decay=0.0, **kwargs)
    for _ in range(12):
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            _loss(params, targets, weights).backward()
            opt.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    for p_ours, p_theirs in zip(ours, theirs, strict=True):
        torch.testing.assert_close(opt_ours.state[p_ours]["sum"], opt_theirs.state[p_theirs]["sum"])


@pytest.mark.parametrize("foreach", [False, True])
def test_adadagrad_norm_matches_numpy_loop(foreach: bool) -> None:
    init, targets, weights = _problem(1)
    params = [p.clone().requires_grad_(True) for p in init]
    lr, b0, eps = 0.3, 0.5, 1e-9
    opt = AdAdaGradNorm(params, lr=lr, b0=b0, eps=eps, foreach=foreach)
    x = np.concatenate([p.detach().numpy().ravel() for p in init])
    t, w = targets.numpy(), weights.numpy()
    b_sq = b0**2
    for _ in range(10):
        opt.zero_grad()
        _loss(params, targets, weights).backward()
        opt.step()
        g = 2.0 * w * (x - t) + 0.4 * x**3
        b_sq += float(g @ g)
        x = x - lr * g / (math.sqrt(b_sq) + eps)
        got = np.concatenate([p.detach().numpy().ravel() for p in params])
        np.testing.assert_allclose(got, x, rtol=1e-12, atol=1e-13)
    for p in params:
        assert math.isclose(float(opt.state[p]["accumulator"]), b_sq, rel_tol=1e-12)


def test_adadagrad_norm_maximize_and_zero_gradient() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = AdAdaGradNorm([x], lr=0.5, b0=0.0, eps=0.0, maximize=True)
    (-(x**2).sum()).backward()  # gradient (-2, -4); maximizing moves against the descent direction
    opt.step()
    expected = torch.tensor([1.0, 2.0], dtype=torch.float64) + 0.5 * torch.tensor([-2.0, -4.0]) / math.sqrt(20.0)
    torch.testing.assert_close(x.detach(), expected)
    y = torch.zeros(2, requires_grad=True)
    opt = AdAdaGradNorm([y], b0=0.0)  # b0 = 0 and a zero gradient: eps keeps the step finite (zero)
    y.grad = torch.zeros(2)
    opt.step()
    assert torch.equal(y.detach(), torch.zeros(2))


def test_optimizer_bad_input() -> None:
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(SciMLInputError, match="lr"):
        AdAdaGradNorm([x], lr=-1.0)
    with pytest.raises(SciMLInputError, match="b0"):
        AdAdaGradNorm([x], b0=float("nan"))
    with pytest.raises(SciMLInputError, match="initial_accumulator_value"):
        AdAdaGrad([x], initial_accumulator_value=-0.1)
    with pytest.raises(SciMLInputError, match="eps"):
        AdAdaGrad([x], eps=-1.0)
    emb = nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    for cls in (AdAdaGrad, AdAdaGradNorm):
        with pytest.raises(SciMLInputError, match="sparse"):
            cls(emb.parameters()).step()


# ------------------------------------------------------------------------------------------ batch size tests


def _least_squares(seed: int, n: int = 24, d: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    w = torch.randn(d, generator=generator, dtype=torch.float64)
    return x, y, w


def _ls_loss(params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x @ params[0] - y) ** 2


def _numpy_statistics(grads: np.ndarray) -> dict[str, float | np.ndarray]:
    n = grads.shape[0]
    mean = grads.mean(0)
    norm_sq = float(mean @ mean)
    variance = grads.var(0, ddof=1)
    inner = grads @ mean
    projected = grads - np.outer(inner / norm_sq, mean)
    return {
        "n": n,
        "mean": mean,
        "norm_sq": norm_sq,
        "trace": float(variance.sum()),
        "inner_var": float(np.var(inner, ddof=1)),
        "orth_var": float(projected.var(0, ddof=1).sum()),
        "coord_ratio": float(np.max(variance / mean**2)),
    }


def test_per_sample_gradients_least_squares_closed_form() -> None:
    x, y, w = _least_squares(2)
    analytic = ((x @ w - y)[:, None] * x).numpy()  # grad of 0.5 (x_i.w - y_i)^2

    controller = BatchSizeController([w], _ls_loss, max_batch_size=100)
    (got,) = controller.per_sample_gradients(x, y)
    np.testing.assert_allclose(got.numpy(), analytic, rtol=1e-13, atol=1e-13)

    model = nn.Linear(5, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w[None])

    def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((output.squeeze(-1) - target) ** 2).sum()

    module_controller = BatchSizeController(model, mse, max_batch_size=100)
    (weight_grads,) = module_controller.per_sample_gradients(x, y)
    np.testing.assert_allclose(weight_grads[:, 0].numpy(), analytic, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("eta", [0.05, 0.3, 2.0])
def test_norm_test_matches_numpy(eta: float) -> None:
    x, y, w = _least_squares(3)
    controller = BatchSizeController([w], _ls_loss, test="norm", eta=eta, initial_batch_size=4, max_batch_size=10**6)
    decision = controller.step(x, y)
    ref = _numpy_statistics(((x @ w - y)[:, None] * x).numpy())
    proposal = ref["trace"] / (eta**2 * ref["norm_sq"])  # pyright: ignore[reportOperatorIssue]
    assert math.isclose(decision.statistics["trace_variance"], ref["trace"], rel_tol=1e-12)  # pyright: ignore[reportArgumentType]
    assert math.isclose(decision.statistics["grad_norm_sq"], ref["norm_sq"], rel_tol=1e-12)  # pyright: ignore[reportArgumentType]
    assert decision.batch_size == max(4, math.ceil(proposal))
    assert decision.num_samples == 24


def test_inner_product_orthogonality_coordinate_statistics_match_numpy() -> None:
    generator = torch.Generator().manual_seed(4)
    shapes = [(3, 2), (4,)]
    grads = [torch.randn(30, *s, generator=generator, dtype=torch.float64) + 0.7 for s in shapes]
    params = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    ref = _numpy_statistics(torch.cat([g.reshape(30, -1) for g in grads], 1).numpy())
    theta, nu, eta = 0.4, 1.5, 0.7
    expected = {
        "inner_product": ref["inner_var"] / (theta**2 * ref["norm_sq"] ** 2),  # pyright: ignore[reportOperatorIssue]
        "augmented_inner_product": max(
            ref["inner_var"] / (theta**2 * ref["norm_sq"] ** 2),  # pyright: ignore[reportOperatorIssue]
            ref["orth_var"] / (nu**2 * ref["norm_sq"]),  # pyright: ignore[reportOperatorIssue]
        ),
        "coordinate": ref["coord_ratio"] / eta**2,  # pyright: ignore[reportOperatorIssue]
        "norm": ref["trace"] / (eta**2 * ref["norm_sq"]),  # pyright: ignore[reportOperatorIssue]
    }
    for test, want in expected.items():
        controller = BatchSizeController(
            params,
            test=test,
            eta=eta,
            theta=theta,
            nu=nu,
            max_batch_size=10**9,  # pyright: ignore[reportArgumentType]
        )
        decision = controller.update(grads)
        assert math.isclose(decision.proposal, want, rel_tol=1e-11), test
        assert decision.batch_size == max(2, math.ceil(want)), test
    stats = decision.statistics  # pyright: ignore[reportPossiblyUnboundVariable]
    assert math.isclose(stats["inner_product_variance"], ref["inner_var"], rel_tol=1e-11)  # pyright: ignore[reportArgumentType]
    assert math.isclose(stats["orthogonal_variance"], ref["orth_var"], rel_tol=1e-11)  # pyright: ignore[reportArgumentType]
    # a single flattened (n, d) matrix gives the same statistics
    flat = torch.cat([g.reshape(30, -1) for g in grads], 1)
    again = BatchSizeController(params, test="coordinate", eta=eta, max_batch_size=10**9).update(flat)
    assert math.isclose(again.proposal, expected["coordinate"], rel_tol=1e-11)


def test_zero_noise_never_grows_and_zero_gradient_hits_cap() -> None:
    x, y, w = _least_squares(5, n=8)
    same_x, same_y = x[:1].expand(8, -1).clone(), y[:1].expand(8).clone()
    for test in ("norm", "inner_product", "augmented_inner_product", "coordinate"):
        controller = BatchSizeController(
            [w], _ls_loss, test=test, eta=1e-3, theta=1e-3, nu=1e-3, initial_batch_size=3, max_batch_size=1000
        )  # pyright: ignore[reportArgumentType]
        for _ in range(3):
            decision = controller.step(same_x, same_y)
            assert decision.batch_size == 3, test
            assert not decision.grew, test
    # noise around a zero mean gradient: no test can certify a descent direction, so the cap is taken
    grads = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    controller = BatchSizeController([torch.zeros(2)], max_batch_size=50)
    decision = controller.update(grads)
    assert decision.batch_size == 50
    assert decision.capped
    assert math.isinf(decision.proposal)


def test_batch_size_monotone_and_capped() -> None:
    generator = torch.Generator().manual_seed(6)
    controller = BatchSizeController([torch.zeros(3)], test="norm", eta=0.5, max_batch_size=40)
    sizes = [controller.batch_size]
    for k in range(30):
        noise = 3.0 * math.sin(k) ** 2 + 0.01  # noise level going up and down
        grads = torch.ones(16, 3) + noise * torch.randn(16, 3, generator=generator)
        decision = controller.update(grads[None].squeeze(0).reshape(16, 3))
        assert decision.batch_size >= decision.previous_batch_size
        assert decision.batch_size <= 40
        sizes.append(controller.batch_size)
    assert sizes == sorted(sizes)
    assert sizes[-1] == 40


def test_set_grad_writes_batch_gradient() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(10, 1, generator=generator, dtype=torch.float64)
    loss_fn = nn.functional.mse_loss
    controller = BatchSizeController(model, loss_fn, max_batch_size=100)
    controller.step(x, y, set_grad=True)
    ours = [p.grad.clone() for p in model.parameters()]  # pyright: ignore[reportOptionalMemberAccess]
    model.zero_grad()
    loss_fn(model(x), y).backward()  # mean over samples of the per-sample losses
    for a, p in zip(ours, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_controller_bad_input() -> None:
    w = torch.zeros(3)
    with pytest.raises(SciMLInputError, match="eta"):
        BatchSizeController([w], eta=0.0, max_batch_size=10)
    with pytest.raises(SciMLInputError, match="theta"):
        BatchSizeController([w], theta=-1.0, max_batch_size=10)
    with pytest.raises(SciMLInputError, match="test"):
        BatchSizeController([w], test="bogus", max_batch_size=10)  # pyright: ignore[reportArgumentType]
    with pytest.raises(SciMLInputError, match="initial_batch_size"):
        BatchSizeController([w], initial_batch_size=1, max_batch_size=10)
    with pytest.raises(SciMLInputError, match="max_batch_size"):
        BatchSizeController([w], initial_batch_size=8, max_batch_size=4)
    with pytest.raises(SciMLInputError, match="model_or_params"):
        BatchSizeController([], max_batch_size=4)
    controller = BatchSizeController([w], max_batch_size=10)
    with pytest.raises(SciMLInputError, match="per_sample_grads"):
        controller.update([torch.zeros(5, 4)])  # wrong parameter shape
    with pytest.raises(SciMLInputError, match="per_sample_grads"):
        controller.update(torch.zeros(5, 2))  # wrong number of columns
    with pytest.raises(SciMLInputError, match="per_sample_grads"):
        controller.update([torch.zeros(1, 3)])  # one sample has no variance
    with pytest.raises(SciMLInputError, match="per_sample_grads"):
        controller.update([torch.full((4, 3), float("nan"))])
    with pytest.raises(SciMLInputError, match="loss_fn"):
        controller.per_sample_gradients(torch.zeros(4, 3))
    with pytest.raises(SciMLInputError, match="batch"):
        BatchSizeController([w], _ls_loss, max_batch_size=10).per_sample_gradients(torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(SciMLInputError, match="distributed"):
        BatchSizeController([w], distributed=True, max_batch_size=10).update([torch.randn(4, 3)])
    with pytest.raises(SciMLInputError, match="num_replicas"):
        AdaptiveBatchSampler(10, controller, num_replicas=0)


# ------------------------------------------------------------------------------------------------ DDP (gloo)

_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from sciml_optim._adadagrad import BatchSizeController

    TESTS = ("norm", "inner_product", "augmented_inner_product", "coordinate")

    def data():
        g = torch.Generator().manual_seed(11)
        a = torch.randn(13, 3, 2, generator=g, dtype=torch.float64) + 0.5
        return a, torch.randn(13, 4, generator=g, dtype=torch.float64)

    def worker(rank, world, port, out):
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        a, b = data()
        cut = 5  # unequal shards: 5 and 8 samples
        sl = slice(0, cut) if rank == 0 else slice(cut, None)
        params = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
        result = {}
        for test in TESTS:
            c = BatchSizeController(params, test=test, eta=0.3, theta=0.3, nu=0.8, max_batch_size=10**9)
            d = c.update([a[sl], b[sl]], set_grad=True)
            result[test] = {"batch_size": d.batch_size, "n": d.num_samples, "stats": d.statistics,
                            "grad": [p.grad.reshape(-1).tolist() for p in params]}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        port, out = int(sys.argv[1]), sys.argv[2]
        # fork where available: the children inherit the imported torch instead of importing it again
        method = "fork" if sys.platform == "linux" else "spawn"
        mp.start_processes(worker, args=(2, port, out), nprocs=2, join=True, start_method=method)
        a, b = data()
        params = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]
        single = {}
        for test in TESTS:
            c = BatchSizeController(params, test=test, eta=0.3, theta=0.3, nu=0.8, max_batch_size=10**9)
            d = c.update([a, b], set_grad=True)
            single[test] = {"batch_size": d.batch_size, "n": d.num_samples, "stats": d.statistics,
                            "grad": [p.grad.reshape(-1).tolist() for p in params]}
        with open(out + ".single", "w") as f:
            json.dump(single, f)
    """
)


def test_ddp_statistics_equal_global_batch(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp_check.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(script), str(port), str(out)], check=True, timeout=120, cwd=tmp_path)
    distributed = json.loads(out.read_text())
    single = json.loads(Path(str(out) + ".single").read_text())
    for test, want in single.items():
        got = distributed[test]
        assert got["n"] == want["n"] == 13
        assert got["batch_size"] == want["batch_size"], test
        for key, value in want["stats"].items():
            assert math.isclose(got["stats"][key], value, rel_tol=1e-10, abs_tol=1e-12), (test, key)
        for g, w in zip(got["grad"], want["grad"], strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------ sampler and training


def test_sampler_follows_controller_in_dataloader() -> None:
    dataset = TensorDataset(torch.arange(20.0))
    controller = BatchSizeController([torch.zeros(1)], initial_batch_size=2, max_batch_size=16)
    sampler = AdaptiveBatchSampler(len(dataset), controller)
    assert len(sampler) == 10
    seen: list[int] = []
    sizes: list[int] = []
    for step, (batch,) in enumerate(DataLoader(dataset, batch_sampler=sampler)):
        sizes.append(batch.shape[0])
        seen.extend(int(v) for v in batch)
        controller.batch_size = [3, 5, 5, 8][min(step, 3)]  # what an update would set
    assert sizes == [2, 3, 5, 5, 5]
    assert seen == list(range(20))
    shuffled = AdaptiveBatchSampler(
        20, controller, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    batches = list(shuffled)
    assert [len(b) for b in batches] == [8, 8]
    assert len({i for b in batches for i in b}) == 16
    halves = AdaptiveBatchSampler(range(20), controller, num_replicas=2)
    assert [len(b) for b in halves] == [4] * 5


def test_training_noisy_least_squares_grows_batch_and_decreases_loss() -> None:
    generator = torch.Generator().manual_seed(8)
    n, d = 2048, 4
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w_true = torch.randn(d, generator=generator, dtype=torch.float64)
    y = x @ (3.0 * w_true) + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    optimizer = AdAdaGradNorm([w], lr=0.5, b0=0.1)
    controller = BatchSizeController([w], _ls_loss, test="norm", eta=0.3, initial_batch_size=4, max_batch_size=512)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_sampler=AdaptiveBatchSampler(n, controller, shuffle=True, generator=torch.Generator().manual_seed(1)),
    )

    def full_loss() -> float:
        with torch.no_grad():
            return float(_ls_loss((w,), x, y).mean())

    start = full_loss()
    sizes = [controller.batch_size]
    for _ in range(3):
        for xb, yb in loader:
            if xb.shape[0] < 2:
                continue
            optimizer.zero_grad()
            controller.step(xb, yb, set_grad=True)
            optimizer.step()
            sizes.append(controller.batch_size)
    assert sizes == sorted(sizes)
    assert sizes[-1] >= 8 * sizes[0]
    noise_floor = 0.5 * 0.25  # E[0.5 eps^2] at the true weights
    assert full_loss() < 0.1 * start
    assert full_loss() < 1.2 * noise_floor
