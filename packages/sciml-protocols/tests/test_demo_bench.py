from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sciml_protocols import (
    BenchContext,
    BenchmarkCase,
    Demo,
    DemoContext,
)
from sciml_protocols.bench import PoissonCGBenchmark, _csr_operator, _stencil_operator, cases
from sciml_protocols.demo import PoissonCGDemo, _coefficient, _PoissonProblem, demos

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def second_difference(n: int) -> torch.Tensor:
    return (
        2 * torch.eye(n, dtype=torch.float64)
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    )


def scipy_laplacian(grid: int):
    sparse = pytest.importorskip("scipy.sparse")
    t = sparse.diags([-np.ones(grid - 1), 2 * np.ones(grid), -np.ones(grid - 1)], [-1, 0, 1])
    identity = sparse.identity(grid)
    return ((sparse.kron(t, identity) + sparse.kron(identity, t)) * (grid + 1) ** 2).tocsr()


def test_entry_points_return_protocol_instances() -> None:
    assert [type(d) for d in demos()] == [PoissonCGDemo]
    assert isinstance(demos()[0], Demo)
    assert [type(c) for c in cases()] == [PoissonCGBenchmark]
    assert isinstance(cases()[0], BenchmarkCase)


def test_constant_coefficient_stencil_is_the_kronecker_laplacian() -> None:
    n = 5
    problem = _PoissonProblem(n, lambda x, y: torch.ones_like(x * y), dtype=torch.float64, device=torch.device("cpu"))
    t, identity = second_difference(n), torch.eye(n, dtype=torch.float64)
    expected = (torch.kron(t, identity) + torch.kron(identity, t)) * (n + 1) ** 2
    operator = problem.operator()
    torch.testing.assert_close(operator.to_dense(), expected)
    # with k = 1 and mean coefficient 1 the spectral preconditioner is the exact inverse
    inverse = problem.spectral_preconditioner(1.0).to_dense()
    torch.testing.assert_close(inverse @ expected, torch.eye(n * n, dtype=torch.float64))


def test_variable_coefficient_stencil_matches_its_assembly() -> None:
    problem = _PoissonProblem(7, _coefficient, dtype=torch.float64, device=torch.device("cpu"))
    pytest.importorskip("scipy.sparse")
    dense = problem.operator().to_dense()
    torch.testing.assert_close(dense, dense.T)
    torch.testing.assert_close(dense, torch.from_numpy(problem.assembled().toarray()))
    torch.testing.assert_close(problem.diagonal(), torch.diag(dense))
    assert float(torch.linalg.eigvalsh(dense).min()) > 0


def test_demo_quick(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    ctx = DemoContext(out_dir=tmp_path, quick=True, progress=lambda done, total, msg: calls.append((done, total, msg)))
    result = PoissonCGDemo().run(ctx)
    assert result.passed
    assert len(result.figures) == 2
    for figure in result.figures:
        assert figure.parent == tmp_path
        assert figure.read_bytes()[:8] == PNG_SIGNATURE
    metrics = result.metrics
    assert metrics["unknowns"] == 32 * 32
    for key in ("cg", "jacobi", "spectral"):
        assert isinstance(metrics[f"iterations_{key}"], int)
        assert metrics[f"relative_residual_{key}"] <= 1e-10
        assert metrics[f"error_vs_direct_{key}"] < 1e-6
        assert metrics[f"time_{key}_s"] > 0
    assert metrics["iterations_jacobi"] < metrics["iterations_cg"]
    assert metrics["iterations_spectral"] < metrics["iterations_cg"]
    assert 90 < metrics["coefficient_contrast"] <= 100
    assert metrics["direct_solver"] == "scipy.sparse.linalg.spsolve"
    assert calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert result.summary.count(".") >= 2


def test_demo_falls_back_to_a_dense_solve_without_scipy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)  # makes `import scipy.sparse.linalg` fail
    result = PoissonCGDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed
    assert result.metrics["direct_solver"] == "torch.linalg.solve (dense)"
    assert result.metrics["max_error_vs_direct"] < 1e-6


def test_bench_operators_match_an_independent_assembly() -> None:
    grid = 12
    matrix = scipy_laplacian(grid)
    x = np.random.default_rng(0).standard_normal((3, grid * grid))
    expected = (matrix @ x.T).T
    for operator in (_stencil_operator(grid, torch.device("cpu")), _csr_operator(matrix, torch.device("cpu"))):
        np.testing.assert_allclose(operator.matvec(torch.from_numpy(x)).numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(operator.matvec(torch.from_numpy(x[0])).numpy(), expected[0], rtol=1e-12)


def test_bench_quick() -> None:
    import scipy.sparse.linalg  # noqa: F401  (a test dependency: fail loudly if missing)

    rtol = 1e-8
    result = PoissonCGBenchmark().run(BenchContext(quick=True, min_run_time=0.01))
    assert result.case == "poisson-cg"
    assert "4096" in result.size
    assert result.peer is not None
    assert result.ours.time_s > 0
    assert result.peer.time_s > 0
    for side in (result.ours, result.peer):
        assert side.metrics["converged"] is True
        assert side.metrics["relative_residual"] <= 1.05 * rtol
    # same algorithm, same stopping rule: the iteration counts agree up to rounding, the solutions to kappa * rtol
    assert abs(result.ours.metrics["iterations"] - result.peer.metrics["iterations"]) <= 1
    assert result.ours.metrics["relative_difference_to_peer"] <= 1e-6
    assert result.speedup == pytest.approx(result.peer.time_s / result.ours.time_s)
    assert result.to_dict()["peer"]["label"] == "scipy.sparse.linalg.cg"


def test_bench_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)
    result = PoissonCGBenchmark().run(BenchContext(quick=True, min_run_time=0.01))
    assert result.peer is None
    assert result.note.startswith("scipy not installed")
    assert result.ours.metrics["relative_residual"] <= 1.05e-8
    assert result.ours.metrics["operator"] == "stencil"


def test_importing_the_package_loads_no_optional_dependency() -> None:
    code = (
        "import sys, sciml_protocols, sciml_protocols.demo, sciml_protocols.bench; "
        "print(sorted(m for m in ('matplotlib', 'scipy', 'triton') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
