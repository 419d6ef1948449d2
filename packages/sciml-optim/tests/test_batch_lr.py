"""Stochastic Lanczos quadrature, Hessian-vector products, batch-size scaling rules and the curvature learner."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from sciml_optim import CurvatureLRLearner, scale_learning_rate, stochastic_lanczos_quadrature
from sciml_optim._batch_lr import hessian_vector_product
from sciml_protocols import SciMLInputError


def _matrix_with_spectrum(eigenvalues: np.ndarray, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    a = (q * eigenvalues) @ q.T
    a = 0.5 * (a + a.T)
    return torch.from_numpy(a), a


def _spiked_spectrum(n: int = 200) -> np.ndarray:
    """A Hessian-like spectrum: a bulk in [0.1, 1] and a few outliers, the largest at 10."""
    return np.concatenate([np.linspace(0.1, 1.0, n - 4), [2.0, 3.0, 5.0, 10.0]])


def test_slq_extremal_eigenvalues_and_trace() -> None:
    eigenvalues = _spiked_spectrum()
    A, a = _matrix_with_spectrum(eigenvalues, seed=0)
    n, probes = a.shape[0], 8
    est = stochastic_lanczos_quadrature(A, num_steps=40, num_probes=probes, generator=torch.Generator().manual_seed(1))
    assert est.dim == n
    assert est.ritz_values.shape == (probes, 40)
    assert est.steps.tolist() == [40] * probes
    assert abs(est.lambda_max - 10.0) / 10.0 < 1e-6
    assert eigenvalues.min() <= est.lambda_min < 0.12  # an upper bound on lambda_min, close after 40 steps
    torch.testing.assert_close(est.ritz_weights.sum(-1), torch.ones(probes, dtype=torch.float64))
    # Hutchinson with Rademacher probes: Var(v^T A v) = 2 sum_{i != j} A_ij^2
    off_diagonal = a - np.diag(np.diag(a))
    standard_error = math.sqrt(2.0 * float((off_diagonal**2).sum()) / probes)
    assert abs(est.trace - float(np.trace(a))) <= 4.0 * standard_error
    assert est.trace_std_error > 0


def test_slq_density_and_moments_match_the_true_spectrum() -> None:
    eigenvalues = _spiked_spectrum()
    A, a = _matrix_with_spectrum(eigenvalues, seed=2)
    n, probes = a.shape[0], 10
    est = stochastic_lanczos_quadrature(A, num_steps=30, num_probes=probes, generator=torch.Generator().manual_seed(3))
    sigma = 0.05
    grid = torch.linspace(-1.0, 11.0, 12001, dtype=torch.float64)
    density = est.density(grid, sigma)
    assert float(density.min()) >= 0
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-8)
    first = float(torch.trapezoid(grid * density, grid))
    second = float(torch.trapezoid(grid**2 * density, grid))
    assert first == pytest.approx(est.moment(1), abs=1e-8)
    assert second == pytest.approx(est.moment(2) + sigma**2, abs=1e-8)

    def band(power: np.ndarray) -> float:  # Hutchinson standard error of tr(M)/n for Rademacher probes
        off = power - np.diag(np.diag(power))
        return math.sqrt(2.0 * float((off**2).sum()) / probes) / n

    a2 = a @ a
    assert abs(est.moment(1) - np.trace(a) / n) <= 4 * band(a)
    assert abs(est.moment(2) - np.trace(a2) / n) <= 4 * band(a2)
    # the quadrature measure is close to the eigenvalue histogram in Wasserstein-1 distance
    atoms = est.ritz_values.flatten().numpy()
    mass = est.ritz_weights.flatten().numpy() / probes
    order = np.argsort(atoms)
    points = np.concatenate([atoms[order], eigenvalues])
    grid_points = np.sort(points)
    cdf_estimate = np.searchsorted(atoms[order], grid_points, side="right")
    cdf_estimate = np.concatenate([[0.0], np.cumsum(mass[order])])[cdf_estimate]
    cdf_true = np.searchsorted(np.sort(eigenvalues), grid_points, side="right") / n
    gaps = np.abs(cdf_estimate - cdf_true)[:-1] * np.diff(grid_points)
    bulk = grid_points[1:] <= 1.5
    # over the bulk the distance is quadrature error plus probe noise; the four outliers of mass 1/200 carry
    # random Hutchinson weights (relative spread sqrt(2 / probes)) over long distances, so they get a wider band
    assert float(gaps[bulk].sum()) < 0.025, float(gaps[bulk].sum())
    assert float(gaps.sum()) < 0.12, float(gaps.sum())


def test_slq_callable_breakdown_and_plain_lanczos() -> None:
    diagonal = torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0], dtype=torch.float64)
    est = stochastic_lanczos_quadrature(
        lambda v: diagonal * v, 5, num_steps=10, num_probes=3, generator=torch.Generator().manual_seed(0)
    )
    assert est.steps.tolist() == [3, 3, 3]  # three distinct eigenvalues: the Krylov space closes after 3 steps
    assert est.lambda_max == pytest.approx(5.0, rel=1e-12)
    assert est.lambda_min == pytest.approx(1.0, rel=1e-12)
    assert est.trace == pytest.approx(11.0, rel=1e-12)  # Rademacher probes are exact on diagonal matrices
    A, _ = _matrix_with_spectrum(_spiked_spectrum(), seed=4)
    plain = stochastic_lanczos_quadrature(
        A, num_steps=40, num_probes=2, full_reorthogonalization=False, generator=torch.Generator().manual_seed(5)
    )
    assert plain.lambda_max == pytest.approx(10.0, rel=1e-6)  # extremal values survive the loss of orthogonality
    gaussian = stochastic_lanczos_quadrature(A.float(), num_steps=30, num_probes=2, probe="gaussian")
    assert gaussian.lambda_max == pytest.approx(10.0, rel=1e-4)


def _mlp_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randn(16, 2, dtype=torch.float64)
    return model, x, y


def _full_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss_of_flat(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        params = {name: piece.reshape(shape) for name, piece, shape in zip(names, pieces, shapes, strict=True)}
        out = torch.func.functional_call(model, params, (x,))
        return 0.5 * ((out - y) ** 2).sum(-1).mean()

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with warnings.catch_warnings():  # torch.func's forward-mode decompositions still call torch.jit.script
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return torch.func.hessian(loss_of_flat)(flat)


def test_hessian_vector_product_matches_torch_func_hessian() -> None:
    model, x, y = _mlp_problem()
    hessian = _full_hessian(model, x, y)
    params = list(model.parameters())

    def loss(batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        inputs, targets = (x, y) if batch is None else batch
        return 0.5 * ((model(inputs) - targets) ** 2).sum(-1).mean()

    hvp = hessian_vector_product(loss, params)
    vectors = torch.randn(hessian.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for column in vectors.T:
        torch.testing.assert_close(hvp(column), hessian @ column, rtol=1e-10, atol=1e-12)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]  # equal batches: the average is the full-data Hessian
    batched = hessian_vector_product(loss, params, batches=batches)
    torch.testing.assert_close(batched(vectors[:, 0]), hessian @ vectors[:, 0], rtol=1e-10, atol=1e-12)
    exact_top = float(torch.linalg.eigvalsh(hessian)[-1])
    est = stochastic_lanczos_quadrature((loss, params), num_steps=hessian.shape[0], num_probes=1)
    assert est.lambda_max == pytest.approx(exact_top, rel=1e-8)


def _least_squares(n: int = 512, d: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w_true = torch.randn(d, generator=generator, dtype=torch.float64)
    return X, X @ w_true  # realizable: SGD's stability threshold is well defined (interpolation regime)


def test_least_squares_hessian_lambda_max_equals_gram_eigenvalue() -> None:
    X, y = _least_squares()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    est = stochastic_lanczos_quadrature(
        (lambda: 0.5 * ((X @ w - y) ** 2).mean(), [w]),
        num_steps=40,
        num_probes=2,
        generator=torch.Generator().manual_seed(0),
    )
    xn = X.numpy()
    oracle = np.linalg.eigvalsh(xn.T @ xn / xn.shape[0])
    assert est.lambda_max == pytest.approx(float(oracle[-1]), rel=1e-8)
    assert est.trace == pytest.approx(float(oracle.sum()), rel=0.2)


def _largest_stable_lr(X: torch.Tensor, y: torch.Tensor, batch_size: int, lrs: torch.Tensor, steps: int) -> float:
    """Run minibatch SGD for every learning rate of a geometric grid at once; the largest lr below the first
    divergent one (loss grown by more than 10x)."""
    n, d = X.shape
    generator = torch.Generator().manual_seed(batch_size)
    W = torch.zeros(lrs.numel(), d, dtype=torch.float64)
    start = 0.5 * float((y**2).mean())
    for _ in range(steps):
        index = torch.randint(0, n, (batch_size,), generator=generator)
        residual = W @ X[index].T - y[index]  # (num_lr, B)
        W = W - lrs.unsqueeze(1) * (residual @ X[index]) / batch_size
        W = torch.nan_to_num(W, nan=1e30, posinf=1e30, neginf=-1e30).clamp(-1e30, 1e30)
    losses = 0.5 * ((W @ X.T - y) ** 2).mean(1)
    diverged = ~(losses < 10 * start)
    first = int(diverged.to(torch.int64).argmax()) if bool(diverged.any()) else lrs.numel()
    assert first > 0, "the grid starts above the divergence threshold"
    return float(lrs[first - 1])


def test_stable_sgd_learning_rate_grows_linearly_with_batch_size() -> None:
    X, y = _least_squares()
    lrs = torch.logspace(math.log10(1e-3), math.log10(3.0), 170, dtype=torch.float64)  # ratio 1.049 per step
    batch_sizes = [1, 2, 4, 8]
    thresholds = [_largest_stable_lr(X, y, b, lrs, steps=300) for b in batch_sizes]
    ratios = [b / a for a, b in itertools.pairwise(thresholds)]
    # small-B regime (B << max||x||^2 / lambda_max(X^T X / n) ~ 35): close to linear, never superlinear
    assert all(1.5 <= r <= 2.3 for r in ratios), (thresholds, ratios)
    assert thresholds[-1] / thresholds[0] >= 5.0, thresholds
    # and far below the curvature limit 2/lambda_max of full-batch gradient descent
    xn = X.numpy()
    lambda_full = float(np.linalg.eigvalsh(xn.T @ xn / xn.shape[0])[-1])
    assert thresholds[-1] < 0.5 * 2.0 / lambda_full

    # The batch Hessian X_B^T X_B / B: its lambda_max decreases with B towards the full Hessian's (numpy oracle).
    rng = np.random.default_rng(0)
    mean_top = []
    for b in (1, 4, 16, 64, 256):
        tops = [
            np.linalg.eigvalsh(xn[idx].T @ xn[idx] / b)[-1]
            for idx in (rng.choice(xn.shape[0], b, replace=False) for _ in range(10))
        ]
        mean_top.append(float(np.mean(tops)))
    assert all(later < earlier for earlier, later in itertools.pairwise(mean_top)), mean_top
    assert mean_top[-1] > lambda_full
    # the stability threshold tracks 2 / lambda_max(H_B) within a factor of 2 for small batches
    for b, threshold in zip((1, 4), (thresholds[0], thresholds[2]), strict=True):
        predicted = 2.0 / mean_top[(1, 4).index(b)]
        assert 0.5 * predicted <= threshold <= 2.0 * predicted, (b, threshold, predicted)


def test_scale_learning_rate_rules() -> None:
    assert scale_learning_rate(0.1, 32, 256, rule="linear") == pytest.approx(0.8)
    assert scale_learning_rate(0.1, 256, 32, rule="linear") == pytest.approx(0.0125)
    assert scale_learning_rate(1e-3, 32, 128, rule="sqrt") == pytest.approx(2e-3)
    assert scale_learning_rate(0.1, 32, 256, optimizer=torch.optim.SGD) == pytest.approx(0.8)
    for adaptive in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad):
        assert scale_learning_rate(1e-3, 32, 128, optimizer=adaptive) == pytest.approx(2e-3)
    w = torch.zeros(2, requires_grad=True)
    assert scale_learning_rate(1e-3, 10, 40, optimizer=torch.optim.Adam([w])) == pytest.approx(2e-3)
    assert scale_learning_rate(0.1, 10, 40, optimizer=torch.optim.SGD([w], lr=0.1)) == pytest.approx(0.4)
    # curvature-limited regime: the linear rule is capped at 2 / lambda_max
    assert scale_learning_rate(0.1, 32, 4096, rule="linear", lambda_max=4.0) == pytest.approx(0.5)
    assert scale_learning_rate(0.1, 32, 64, rule="linear", lambda_max=4.0) == pytest.approx(0.2)
    assert scale_learning_rate(1e-3, 32, 4096, rule="sqrt", lambda_max=4.0) == pytest.approx(1e-3 * math.sqrt(128))


def _quadratic(dim: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    eigenvalues = np.geomspace(0.5, 20.0, dim)
    A, _ = _matrix_with_spectrum(eigenvalues, seed)
    b = torch.randn(dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return A, b, eigenvalues


@pytest.mark.parametrize("lr_rule", ["inverse_max", "heavy_ball"])
def test_curvature_learner_on_a_quadratic(lr_rule) -> None:
    A, b, eigenvalues = _quadratic()
    w = torch.zeros(A.shape[0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1e-4, momentum=0.0)

    def loss() -> torch.Tensor:
        return 0.5 * w @ A @ w - b @ w

    learner = CurvatureLRLearner(
        [w],
        loss,
        optimizer=optimizer,
        every=50,
        num_steps=50,
        num_probes=1,
        lr_rule=lr_rule,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in range(400):
        learner.step()
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    kappa = eigenvalues.max() / eigenvalues.min()
    expected_momentum = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
    group = optimizer.param_groups[0]
    if lr_rule == "inverse_max":
        assert group["lr"] == pytest.approx(1.0 / eigenvalues.max(), rel=1e-6)
    else:
        assert group["lr"] == pytest.approx(4.0 / (math.sqrt(20.0) + math.sqrt(0.5)) ** 2, rel=1e-4)
    assert group["momentum"] == pytest.approx(expected_momentum, rel=1e-4)
    assert len(learner.history) == 8
    assert learner.last_estimate is not None
    solution = torch.linalg.solve(A, b)
    assert float((w.detach() - solution).norm() / solution.norm()) < 1e-8


def test_curvature_learner_writes_adam_betas_and_skips_concave() -> None:
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=1e-3, betas=(0.9, 0.95))
    scales = torch.tensor([1.0, 4.0, 100.0], dtype=torch.float64)
    learner = CurvatureLRLearner([w], lambda: 0.5 * (scales * w**2).sum(), optimizer=optimizer, num_steps=3)
    learner.update()
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.01)
    assert group["betas"][0] == pytest.approx(((10 - 1) / (10 + 1)) ** 2)
    assert group["betas"][1] == 0.95
    concave = CurvatureLRLearner([w], lambda: -(w**2).sum(), optimizer=optimizer, num_steps=3)
    concave.update()
    assert group["lr"] == pytest.approx(0.01)  # unchanged
    assert math.isnan(concave.history[-1]["lr"])
    capped = CurvatureLRLearner([w], lambda: (w**2).sum(), optimizer=optimizer, max_condition=100.0)
    assert capped.rates(1.0, -5.0)[1] == pytest.approx((9 / 11) ** 2)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: stochastic_lanczos_quadrature(torch.ones(3, 4)), "operator"),
        (lambda: stochastic_lanczos_quadrature(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "operator"),
        (lambda: stochastic_lanczos_quadrature(torch.tensor([[float("nan")]])), "operator"),
        (lambda: stochastic_lanczos_quadrature(lambda v: v), "dim"),
        (lambda: stochastic_lanczos_quadrature(lambda v: v[:2], 3), "operator"),
        (lambda: stochastic_lanczos_quadrature(torch.eye(3), num_steps=0), "num_steps"),
        (lambda: stochastic_lanczos_quadrature(torch.eye(3), num_probes=-1), "num_probes"),
        (lambda: stochastic_lanczos_quadrature(torch.eye(3), probe="uniform"), "probe"),  # type: ignore[arg-type]
        (lambda: stochastic_lanczos_quadrature(torch.eye(3), 4), "dim"),
        (lambda: stochastic_lanczos_quadrature("matrix"), "operator"),  # type: ignore[arg-type]
        (lambda: stochastic_lanczos_quadrature(torch.eye(3)).density(torch.zeros(2), 0.0), "sigma"),
        (lambda: hessian_vector_product(lambda: torch.zeros(()), []), "params"),
        (lambda: hessian_vector_product(lambda: torch.zeros(()), [torch.zeros(2)]), "params"),
        (lambda: scale_learning_rate(-0.1, 32, 64, rule="linear"), "base_lr"),
        (lambda: scale_learning_rate(0.1, 0, 64, rule="linear"), "base_batch_size"),
        (lambda: scale_learning_rate(0.1, 32, 64.0, rule="linear"), "new_batch_size"),  # type: ignore[arg-type]
        (lambda: scale_learning_rate(0.1, 32, 64, rule="cubic"), "rule"),  # type: ignore[arg-type]
        (lambda: scale_learning_rate(0.1, 32, 64), "optimizer"),
        (lambda: scale_learning_rate(0.1, 32, 64, optimizer=torch.optim.LBFGS), "optimizer"),
        (lambda: scale_learning_rate(0.1, 32, 64, rule="linear", lambda_max=0.0), "lambda_max"),
    ],
)
def test_bad_input(call, argument) -> None:
    with pytest.raises(SciMLInputError) as info:
        call()
    assert info.value.argument == argument


def test_bad_learner_and_hvp_input() -> None:
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=0.1)
    for kwargs, argument in [
        ({"every": 0}, "every"),
        ({"lr_rule": "newton"}, "lr_rule"),
        ({"lr_scale": -1.0}, "lr_scale"),
        ({"max_condition": 0.5}, "max_condition"),
        ({"optimizer": "sgd"}, "optimizer"),
    ]:
        options = {"optimizer": optimizer, **kwargs}
        with pytest.raises(SciMLInputError) as info:
            CurvatureLRLearner([w], lambda: (w**2).sum(), **options)
        assert info.value.argument == argument
    hvp = hessian_vector_product(lambda: (w**2).sum(), [w])
    with pytest.raises(SciMLInputError):
        hvp(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(SciMLInputError):
        hessian_vector_product(lambda: w**2, [w])
    empty = hessian_vector_product(lambda batch: (w**2).sum(), [w], batches=[])
    with pytest.raises(SciMLInputError):
        empty(torch.zeros(2, dtype=torch.float64))
