"""The ``sciml demo`` and ``sciml bench`` entries of sciml-equivariant, and the benchmark script.

Oracles: sympy's Wigner 3j symbols (the Gaunt path weights), e3nn's ``wigner_3j`` contracted by hand (the peer
module), e3nn's ``Irreps.D_from_matrix`` (the rotation of features used by the equivariance table), and e3nn's
``TensorProduct`` itself for the parity metrics the bench cases report.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from e3nn import o3
from sciml_equivariant import bench, demo
from sciml_protocols import BenchContext, BenchmarkCase, Demo, DemoContext, SciMLInputError
from sympy.physics.wigner import wigner_3j as sympy_wigner_3j

QUICK = BenchContext(quick=True, min_run_time=0.01)
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gaunt.py"


# ------------------------------------------------------------------------------------------------ protocols


def test_cases_implement_the_protocol_with_unique_names() -> None:
    found = bench.cases()
    assert all(isinstance(case, BenchmarkCase) for case in found)
    names = [case.name for case in found]
    assert len(set(names)) == len(names)
    degrees = {case.degree for case in found}
    assert degrees == {2, 4, 6, 8, 10, 16, 20}
    assert {case.backward for case in found} == {False, True}
    assert all("e3nn" in case.peer for case in found)


def test_demos_implement_the_protocol() -> None:
    found = demo.demos()
    assert all(isinstance(d, Demo) for d in found)
    names = [d.name for d in found]
    assert names[:2] == ["gaunt-speed", "gaunt-equivariance"]
    assert len(set(names)) == len(names)
    has_affine = importlib.util.find_spec("sciml_equivariant._affine_demo") is not None
    assert (len(found) == 3) == has_affine


def test_entry_points_resolve_to_these_factories() -> None:
    from importlib import metadata

    groups = {
        "sciml.demos": "sciml_equivariant.demo:demos",
        "sciml.benchmarks": "sciml_equivariant.bench:cases",
    }
    for group, target in groups.items():
        entries = [e for e in metadata.entry_points(group=group) if e.name == "sciml-equivariant"]
        assert [e.value for e in entries] == [target]


def test_bad_case_arguments_raise() -> None:
    with pytest.raises(SciMLInputError, match="degree"):
        bench.GauntProductBenchmark(-1)
    with pytest.raises(SciMLInputError, match="backend"):
        bench.GauntProductBenchmark(2, backend="e3nn")
    with pytest.raises(SciMLInputError, match="degrees"):
        bench.gaunt_speed_sweep([-2], batch=1, channels=1)
    with pytest.raises(SciMLInputError, match="batch"):
        bench.gaunt_speed_sweep([1], batch=0, channels=1)
    with pytest.raises(SciMLInputError, match="backends"):
        bench.gaunt_speed_sweep([1], batch=1, channels=1, backends=("torch",))


# ----------------------------------------------------------------------------------------- the peer's math


@pytest.mark.parametrize("degrees", [(0, 0, 0), (1, 1, 2), (2, 3, 3), (3, 4, 5), (6, 6, 8), (10, 10, 10), (7, 9, 2)])
def test_path_weight_matches_sympy(degrees: tuple[int, int, int]) -> None:
    l1, l2, l3 = degrees
    expected = (
        (2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi) * float(sympy_wigner_3j(l1, l2, l3, 0, 0, 0)) ** 2
    )
    assert bench.e3nn_gaunt_path_weight(l1, l2, l3) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("degrees", [(1, 1, 1), (2, 2, 3), (1, 2, 4), (0, 3, 1)])
def test_path_weight_vanishes_off_the_even_triangle(degrees: tuple[int, int, int]) -> None:
    assert bench.e3nn_gaunt_path_weight(*degrees) == 0.0


def test_peer_module_is_the_gaunt_contraction() -> None:
    """e3nn scales each path by sqrt(path_weight): its output equals sum over even paths of c * W3j(x, y)."""
    degree, channels, batch = 2, 3, 4
    module, seconds = bench._e3nn_peer(degree, channels, "cpu", torch.float32)
    assert seconds > 0
    generator = torch.Generator().manual_seed(1)
    dim = channels * (degree + 1) ** 2
    x = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    y = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    expected = torch.zeros(batch, channels, (degree + 1) ** 2, dtype=torch.float64)

    def block(t: torch.Tensor, ell: int) -> torch.Tensor:
        return t[:, channels * ell * ell : channels * (ell + 1) ** 2].reshape(batch, channels, 2 * ell + 1)

    for l1 in range(degree + 1):
        for l2 in range(degree + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, degree) + 1):
                if (l1 + l2 + l3) % 2:
                    continue
                c = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * abs(
                    float(sympy_wigner_3j(l1, l2, l3, 0, 0, 0))
                )
                w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                expected[..., l3 * l3 : (l3 + 1) ** 2] += c * torch.einsum(
                    "ijk,bui,buj->buk", w3j, block(x, l1), block(y, l2)
                )
    expected_mul_ir = torch.cat(
        [expected[..., ell * ell : (ell + 1) ** 2].reshape(batch, -1) for ell in range(degree + 1)], dim=-1
    )
    with torch.no_grad():
        got = module(x.float(), y.float()).double()
    torch.testing.assert_close(got, expected_mul_ir, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- bench cases


@pytest.mark.parametrize("backward", [False, True])
def test_quick_case_agrees_with_e3nn(backward: bool) -> None:
    result = bench.GauntProductBenchmark(2, backward=backward).run(QUICK)
    assert result.peer is not None
    assert result.peer.time_s > 0
    assert result.ours.time_s > 0
    assert result.peer.metrics["construction s"] > 0
    assert result.ours.metrics["relative max |ours - e3nn|"] < 1e-4
    assert result.ours.metrics["paths"] == 11  # (0,0,0) (0,1,1) (0,2,2) (1,0,1) (1,1,0) (1,1,2) (1,2,1) (2,0,2) ...
    if backward:
        assert result.ours.metrics["relative max |grad ours - grad e3nn|"] < 1e-4
    assert result.speedup is not None


def test_module_case_agrees_with_e3nn() -> None:
    result = bench.GauntProductBenchmark(2, backward=True, backend="module").run(QUICK)
    assert result.case == "gaunt-fwd-bwd-L2-module"
    assert "GauntTensorProduct" in result.ours.label
    assert result.ours.metrics["relative max |ours - e3nn|"] < 1e-4
    assert result.ours.metrics["relative max |grad ours - grad e3nn|"] < 1e-4


def test_quick_case_caps_degree_and_names_the_full_run() -> None:
    result = bench.GauntProductBenchmark(8, backend="fft").run(QUICK)
    assert result.case == "gaunt-fwd-L8-fft"
    assert "L = 4 -> 4" in result.size
    assert "full run L = 8" in result.size
    assert result.ours.metrics["relative max |ours - e3nn|"] < 1e-4


def test_beyond_e3nn_runs_ours_alone() -> None:
    result = bench.GauntProductBenchmark(16).run(QUICK)
    assert result.peer is None
    assert "l = 12" in result.note
    assert "L = 16 -> 16" in result.size
    assert result.ours.time_s > 0


def test_sweep_records_times_and_agreement() -> None:
    rows = bench.gaunt_speed_sweep([1, 3], batch=3, channels=2, e3nn_max_degree=1, min_run_time=0.005)
    assert [row["L"] for row in rows] == [1, 3]
    first, second = rows
    assert first["e3nn"] is not None
    assert second["e3nn"] is None
    assert set(first["relative_diff"]) == {"grid", "fft"}
    assert max(first["relative_diff"].values()) < 1e-5
    for row in rows:
        for backend in ("grid", "fft"):
            assert row["ours"][backend]["forward_s"] > 0
            assert row["ours"][backend]["forward_backward_s"] > 0


def test_sweep_in_float64_agrees_with_e3nn_to_rounding() -> None:
    rows = bench.gaunt_speed_sweep(
        [2], batch=3, channels=2, e3nn_max_degree=2, dtype=torch.float64, min_run_time=0.002, backward=False
    )
    assert max(rows[0]["relative_diff"].values()) < 1e-12
    assert torch.get_default_dtype() == torch.float32


# --------------------------------------------------------------------------------------------- equivariance


def test_feature_rotation_matches_e3nn() -> None:
    channels, lmax = 3, 4
    irreps = o3.Irreps([(channels, (ell, (-1) ** ell)) for ell in range(lmax + 1)])
    R = o3.rand_matrix(2, dtype=torch.float64)
    x = torch.randn(2, irreps.dim, dtype=torch.float64)
    expected = torch.einsum("bij,bj->bi", irreps.D_from_matrix(R), x)
    got = torch.stack([demo._rotate_features(x[k], R[k], channels, lmax) for k in range(2)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # e3nn builds D from float32 tables


def test_equivariance_table_small() -> None:
    rows = demo.equivariance_table(channels=2, lmax=2, rotations=2)
    components = {row["component"] for row in rows}
    assert "gaunt_tensor_product" in components
    assert {row["dtype"] for row in rows} == {"float64", "float32"}
    for row in rows:
        assert row["error"] < row["tolerance"], row


def test_equivariance_error_detects_a_wrong_rotation() -> None:
    """The table's error measure is not vacuous: rotating the output with the transposed D gives a large error."""
    from sciml_equivariant._gaunt import gaunt_tensor_product
    from sciml_equivariant._so3 import rand_rotation

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2 * 9, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 2 * 9, generator=generator, dtype=torch.float64)
    R = rand_rotation(1, generator=generator, dtype=torch.float64)[0]
    out = gaunt_tensor_product(x, y, lmax_out=2, channels=2)
    rotated = gaunt_tensor_product(
        demo._rotate_features(x, R, 2, 2), demo._rotate_features(y, R, 2, 2), lmax_out=2, channels=2
    )
    right = (rotated - demo._rotate_features(out, R, 2, 2)).abs().max() / out.abs().max()
    wrong = (rotated - demo._rotate_features(out, R.mT, 2, 2)).abs().max() / out.abs().max()
    assert right < 1e-12 < 1e-2 < wrong


# -------------------------------------------------------------------------------------------------- script


def test_benchmark_script_writes_json_and_figure(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_gaunt_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gaunt.json"
    args = ["--degrees", "1,2", "--batch", "2", "--channels", "2", "--e3nn-max", "1", "--min-run-time", "0.005",
            "--out", str(out)]  # fmt: skip
    assert module.main(args) == 0
    record = json.loads(out.read_text())
    assert [row["L"] for row in record["rows"]] == [1, 2]
    assert record["max_relative_diff_vs_e3nn"] < 1e-5
    assert out.with_suffix(".png").stat().st_size > 0
    assert module._parse_degrees("2-4,8") == [2, 3, 4, 8]


# --------------------------------------------------------------------------------------------------- demos


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2], ids=["gaunt-speed", "gaunt-equivariance", "affine"])
def test_quick_demo_passes(index: int, tmp_path: Path) -> None:
    found = demo.demos()
    assert [d.name for d in found] == ["gaunt-speed", "gaunt-equivariance", "lie-affine-invariance"]
    result = found[index].run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    assert result.metrics
    for figure in result.figures:
        assert figure.exists()
        assert figure.parent == tmp_path


# ---------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("backward", [False, True])
def test_case_on_cuda_agrees_with_e3nn(backward: bool) -> None:
    context = BenchContext(device=torch.device("cuda"), quick=True, min_run_time=0.01)
    result = bench.GauntProductBenchmark(4, backward=backward).run(context)
    assert result.peer is not None
    assert result.ours.metrics["relative max |ours - e3nn|"] < 1e-4
