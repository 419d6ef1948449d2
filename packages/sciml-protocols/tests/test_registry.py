import dataclasses
import json
from importlib import metadata

import pytest
import sciml_protocols as sp
import torch
from sciml_protocols import _registry


class FakeDemo:
    name = "fake"

    def run(self, ctx):
        return sp.DemoResult(title="t", summary="s", metrics={"x": 1.0})


class FakeCase:
    name = "case"
    peer = "numpy.sum"

    def run(self, ctx):
        ours = sp.BenchMeasurement("sciml", 1.0)
        return sp.BenchResult(case=self.name, size="n=1", ours=ours)


@dataclasses.dataclass
class FakeEntryPoint:
    name: str
    target: object

    def load(self):
        return self.target


def fake_entry_points(mapping):
    def entry_points(group):
        return [FakeEntryPoint(n, v) for n, v in mapping.get(group, {}).items()]

    return entry_points


@pytest.fixture
def fake_registry(monkeypatch):
    mapping = {
        sp.DEMO_ENTRY_POINT_GROUP: {
            "pkg-b": lambda: [FakeDemo()],
            "pkg-a": [FakeDemo()],  # a plain sequence is accepted as well as a factory
            "pkg-bad": lambda: [object()],
        },
        sp.BENCHMARK_ENTRY_POINT_GROUP: {"pkg-a": lambda: [FakeCase()]},
    }
    monkeypatch.setattr(_registry.metadata, "entry_points", fake_entry_points(mapping))


def test_real_entry_points_are_declared():
    names = {e.name for e in metadata.entry_points(group=sp.DEMO_ENTRY_POINT_GROUP)}
    assert "sciml-protocols" in names
    names = {e.name for e in metadata.entry_points(group=sp.BENCHMARK_ENTRY_POINT_GROUP)}
    assert "sciml-protocols" in names


def test_discovery_sorted_filtered_and_type_checked(fake_registry):
    found = sp.discover_demos(["pkg-b", "pkg-a"])
    assert list(found) == ["pkg-a", "pkg-b"]
    assert isinstance(found["pkg-a"][0], sp.Demo)
    with pytest.raises(sp.SciMLError, match="does not implement Demo"):
        sp.discover_demos()
    with pytest.raises(sp.SciMLInputError, match="'packages': no sciml.demos entry point for \\['nope'\\]"):
        sp.discover_demos(["nope"])
    cases = sp.discover_benchmarks()
    assert [c.peer for c in cases["pkg-a"]] == ["numpy.sum"]
    with pytest.raises(sp.SciMLInputError, match="installed: pkg-a"):
        sp.discover_benchmarks(["pkg-b"])


def test_protocols_reject_incomplete_objects():
    class NoRun:
        name = "x"

    assert not isinstance(NoRun(), sp.Demo)
    assert not isinstance(NoRun(), sp.BenchmarkCase)
    assert isinstance(FakeCase(), sp.BenchmarkCase)


def test_demo_context_and_result(tmp_path):
    ctx = sp.DemoContext(out_dir=tmp_path, quick=True)
    assert ctx.figure_path("conv") == tmp_path / "conv.png"
    assert ctx.figure_path("a.png") == tmp_path / "a.png"
    for bad in ("", "../x", "a/b"):
        with pytest.raises(sp.SciMLInputError, match="'name'"):
            ctx.figure_path(bad)
    ctx.progress(1, 2, "ok")  # the default callback accepts calls
    result = sp.DemoResult(title="t", summary="s", metrics={"a": 1}, figures=[str(tmp_path / "f.png")])
    assert result.figures == (tmp_path / "f.png",)
    with pytest.raises(TypeError):
        result.metrics["a"] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]


def test_bench_result_speedup_and_json():
    ours = sp.BenchMeasurement("sciml", 0.5, {"residual": 1e-6})
    peer = sp.BenchMeasurement("scipy", 2.0, {"residual": 2e-6})
    result = sp.BenchResult(case="cg", size="n=4", ours=ours, peer=peer)
    assert result.speedup == pytest.approx(4.0)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["speedup"] == pytest.approx(4.0)
    assert record["peer"]["metrics"]["residual"] == pytest.approx(2e-6)
    alone = sp.BenchResult(case="cg", size="n=4", ours=ours, note="scipy not installed")
    assert alone.speedup is None
    assert alone.to_dict()["peer"] is None


def test_measure_time_cpu():
    calls = []

    def work():
        calls.append(1)
        return torch.ones(1000).sum()

    seconds = sp.measure_time(work, min_run_time=0.02, warmup=2)
    assert 0 < seconds < 0.1
    assert len(calls) >= 3
    with pytest.raises(sp.SciMLInputError, match="'min_run_time'"):
        sp.measure_time(work, min_run_time=0)


@pytest.mark.gpu
def test_measure_time_cuda():
    x = torch.randn(1024, 1024, device="cuda")
    assert 0 < sp.measure_time(lambda: x @ x, device="cuda", min_run_time=0.05) < 1
