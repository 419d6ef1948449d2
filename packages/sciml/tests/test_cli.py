from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from sciml import _cli
from sciml._cli import build_parser, main

if TYPE_CHECKING:
    from conftest import FakeRegistry  # the fixture's type; conftest is not importable at run time

# ------------------------------------------------------------------------------------------------- parsing


def test_parser_defaults() -> None:
    demo = build_parser().parse_args(["demo"])
    assert (demo.packages, demo.quick, demo.device, demo.out, demo.seed) == ([], False, "cpu", "sciml-demo", 0)
    bench = build_parser().parse_args(["bench", "ot", "sciml-norm", "--json", "b.json", "--min-run-time", "0.2"])
    assert (bench.packages, bench.json, bench.min_run_time, bench.quick, bench.device) == (
        ["ot", "sciml-norm"],
        "b.json",
        0.2,
        False,
        "cpu",
    )
    assert build_parser().parse_args(["bench"]).min_run_time is None


@pytest.mark.parametrize(
    "argv",
    [[], ["demo", "--device", "tpu"], ["bench", "--min-run-time", "0"], ["bench", "--min-run-time", "x"], ["nope"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: sciml" in capsys.readouterr().err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "sciml 0.1.0"


# ---------------------------------------------------------------------------------------------------- demo


def test_demo_writes_figures_json_and_html(
    registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--seed", "7", "--out", str(out)]) == 0
    captured = capsys.readouterr()

    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["sciml_version"] == "0.1.0"
    assert record["device"] == "cpu"
    assert record["quick"] is True
    assert record["seed"] == 7
    assert record["passed"] is True
    assert record["versions"]["torch"] == torch.__version__
    assert {"python", "numpy", "sciml", "sciml-protocols"} <= record["versions"].keys()
    assert record["command"] == f"sciml demo --quick --seed 7 --out {out}"
    assert [(d["package"], d["name"]) for d in record["demos"]] == [
        ("sciml-fake-a", "alpha"),
        ("sciml-fake-a", "beta"),
        ("sciml-fake-b", "gamma"),
    ]
    alpha = record["demos"][0]
    assert alpha["title"] == "Fake demo alpha"
    assert alpha["metrics"] == {"residual": 1.5e-9, "iterations": 42, "converged": True}
    assert alpha["figures"] == ["sciml-fake-a/alpha/alpha-curve.png"]
    assert (alpha["passed"], alpha["status"], alpha["error"], alpha["warnings"]) == (True, "passed", None, [])
    assert alpha["seconds"] > 0

    # The demo got the options, and a folder of its own inside --out.
    ctx = registry.demos["sciml-fake-a"][0].contexts[0]
    assert (ctx.quick, ctx.seed, ctx.device) == (True, 7, torch.device("cpu"))
    assert ctx.out_dir == out / "sciml-fake-a" / "alpha"

    page = (out / "index.html").read_text(encoding="utf-8")
    png = (out / alpha["figures"][0]).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert page.count("data:image/png;base64,") == 3
    assert "Fake demo alpha" in page
    assert "residual" in page
    assert "1.5e-09" in page
    assert "iterations" in page
    assert "sciml <b>0.1.0</b>" in page
    assert "3 / 3 passed" in page
    assert "<img" in page
    assert 'src="sciml-fake' not in page

    table = captured.out
    assert "package" in table
    assert "key metrics" in table
    assert "sciml-fake-b" in table
    assert "gamma" in table
    assert "residual=1.5e-09, iterations=42, converged=yes" in table
    assert "3 of 3 demos passed" in table
    # The progress bars go to stderr, one per demo.
    assert "[1/3] sciml-fake-a/alpha" in captured.err
    assert "[3/3] sciml-fake-b/gamma" in captured.err


def test_demo_selected_packages_by_short_name(registry: FakeRegistry, tmp_path: Path) -> None:
    assert main(["demo", "fake_b", "--out", str(tmp_path)]) == 0
    assert registry.calls == [["sciml-fake-b"]]
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [d["name"] for d in record["demos"]] == ["gamma"]


def test_demo_that_fails_its_check_exits_1(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.demos["sciml-fake-b"] = [registry.demo("gamma", passed=False)]
    assert main(["demo", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert record["passed"] is False
    gamma = record["demos"][2]
    assert (gamma["passed"], gamma["status"], gamma["error"]) == (False, "failed", None)
    assert '<span class="badge badge-failed">failed</span>' in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_demo_that_raises_is_reported_and_the_others_still_run(
    registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.demos["sciml-fake-a"][0] = registry.demo("alpha", error=RuntimeError("matrix is singular"))
    assert main(["demo", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    alpha, beta, gamma = record["demos"]
    assert (alpha["passed"], alpha["status"], alpha["figures"]) == (False, "error", [])
    assert "Traceback (most recent call last)" in alpha["error"]
    assert "RuntimeError: matrix is singular" in alpha["error"]
    assert beta["passed"]
    assert gamma["passed"]
    captured = capsys.readouterr()
    assert "RuntimeError: matrix is singular" in captured.out  # in the table
    assert "sciml-fake-a/alpha raised" in captured.err
    assert "matrix is singular" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_demo_package_that_fails_to_load_does_not_hide_the_others(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.broken.add("sciml-fake-a")
    assert main(["demo", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    broken, gamma = record["demos"]
    assert (broken["package"], broken["status"]) == ("sciml-fake-a", "error")
    assert "ImportError: No module named sciml_fake_a.demo" in broken["error"]
    assert "During handling" not in broken["error"]
    assert (gamma["name"], gamma["passed"]) == ("gamma", True)


def test_demo_warnings_are_recorded(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.demos["sciml-fake-b"] = [registry.demo("gamma", warn="loss of precision")]
    assert main(["demo", "sciml-fake-b", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    [gamma] = record["demos"]
    assert len(gamma["warnings"]) == 1
    assert gamma["warnings"][0].startswith("RuntimeWarning: loss of precision (conftest.py:")


def test_demo_non_finite_metrics_give_strict_json(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.demos["sciml-fake-b"] = [registry.demo("gamma", metrics={"error": float("nan"), "growth": float("inf")})]
    assert main(["demo", "sciml-fake-b", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert record["demos"][0]["metrics"] == {"error": "nan", "growth": "inf"}


def test_demo_unknown_package_exits_2(
    registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "sciml-fake-a", "nonexistent", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "sciml demo: error: no demos for sciml-nonexistent" in err
    assert "sciml-fake-a, sciml-fake-b" in err
    assert registry.calls == []
    assert not (tmp_path / "out").exists()


def test_demo_without_any_demo_exits_1(
    registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.demos.clear()
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert "No demos found" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["demos"] == []


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_cuda_requested_without_cuda_exits_2(
    registry: FakeRegistry,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main([command, "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert registry.calls == []


# --------------------------------------------------------------------------------------------------- bench


def test_bench_table_and_json(registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    header, rule, solve, nopeer = out.splitlines()[:4]
    for column in ["package", "case", "size", "peer", "ours", "peer time", "speedup", "our accuracy", "peer accuracy"]:
        assert column in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert solve.split()[:4] == ["sciml-fake-a", "solve", "n=8", "numpy.linalg.solve"]
    assert "1.00 ms" in solve
    assert "2.00 ms" in solve
    assert "2.00\u00d7" in solve
    assert "rel_error=1e-12" in solve
    assert "rel_error=3e-12" in solve
    assert "missing" in nopeer
    assert "sciml-fake-a/solve-nopeer: peer numpy.linalg.solve missing: numpy is not installed" in out
    assert "Accuracy in full" not in out  # nothing was cut

    ctx = registry.cases["sciml-fake-a"][0].contexts[0]
    assert (ctx.quick, ctx.min_run_time, ctx.device) == (True, _cli.QUICK_MIN_RUN_TIME, torch.device("cpu"))

    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["device"] == "cpu"
    assert report["quick"] is True
    first, second = report["results"]
    assert first["package"] == "sciml-fake-a"
    assert first["case"] == "solve"
    assert first["peer_library"] == "numpy.linalg.solve"
    assert first["speedup"] == pytest.approx(2.0)
    assert first["ours"] == {"label": "sciml", "time_s": 0.001, "metrics": {"rel_error": 1e-12}}
    assert first["peer"]["time_s"] == 0.002
    assert first["error"] is None
    assert (second["peer"], second["speedup"], second["note"]) == (None, None, "numpy is not installed")


def test_bench_long_accuracy_is_printed_in_full(registry: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    long = {"relative_difference_to_peer": 4.5e-16, "operator": "torch sparse CSR", "iterations": 193}
    registry.cases["sciml-fake-a"] = [registry.case("solve", extra_metrics=long)]
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    row = out.splitlines()[2]
    assert "rel_error=1e-12, relative_differ" in row
    assert "operator" not in row  # cut in the table ...
    full = out.split("Accuracy in full:\n")[1]
    assert "ours (sciml)  rel_error=1e-12, relative_difference_to_peer=4.5e-16, operator=torch sparse CSR" in full
    assert "peer (numpy)  rel_error=3e-12" in full  # ... and given in full below it


def test_bench_min_run_time_is_passed_on(registry: FakeRegistry) -> None:
    assert main(["bench", "fake-a", "--min-run-time", "0.125"]) == 0
    assert registry.cases["sciml-fake-a"][0].contexts[0].min_run_time == 0.125


def test_bench_case_that_raises_exits_1(
    registry: FakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.cases["sciml-fake-a"].insert(0, registry.case("explodes", error=ValueError("bad size")))
    path = tmp_path / "bench.json"
    assert main(["bench", "--json", str(path)]) == 1
    captured = capsys.readouterr()
    assert "ERROR" in captured.out
    assert "ValueError: bad size" in captured.out
    assert "sciml-fake-a/explodes raised" in captured.err
    explodes, solve, _ = json.loads(path.read_text(encoding="utf-8"))["results"]
    assert "ValueError: bad size" in explodes["error"]
    assert explodes.keys() == solve.keys()
    assert (explodes["ours"], explodes["peer"], explodes["speedup"]) == (None, None, None)
    assert solve["error"] is None  # the other cases still ran


def test_bench_unknown_package_exits_2(registry: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sciml-fake-b"]) == 2  # it has demos but no benchmark cases
    assert "no benchmark cases for sciml-fake-b; packages with benchmark cases: sciml-fake-a" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- info


def test_info(registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    registry.broken.add("sciml-fake-b")
    monkeypatch.setenv("SCIML_DISABLE_TRITON", "1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sciml 0.1.0\n")
    for name, version in [("torch", torch.__version__), ("sciml", "0.1.0"), ("sciml-protocols", "0.1.0")]:
        assert re.search(rf"^  {re.escape(name)} +{re.escape(version)}$", out, re.MULTILINE), name
    for needle in [
        "python ",
        "numpy ",
        "CUDA available",
        "triton importable",
        "SCIML_DISABLE_TRITON  '1'",
        "TRITON_INTERPRET      (unset)",
        "sciml-fake-a  alpha, beta",
        "sciml-fake-b  could not load: ImportError: No module named sciml_fake_b.demo",
        "sciml-fake-a  solve (vs numpy.linalg.solve), solve-nopeer (vs numpy.linalg.solve)",
    ]:
        assert needle in out, needle
    assert ("CUDA available  yes" in out) == torch.cuda.is_available()


# ----------------------------------------------------------------------------------------- import hygiene


def test_import_is_light() -> None:
    code = (
        "import sys, sciml, sciml._cli, sciml._report, sciml._environment\n"
        "print(sorted(m for m in ('matplotlib', 'tqdm', 'triton', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sciml", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "sciml 0.1.0"


# --------------------------------------------------------------------------------------------- end to end


def test_real_demos_end_to_end(tmp_path: Path) -> None:
    # The installed demos (sciml-protocols' poisson-cg at least), discovered through their entry points.
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert ("sciml-protocols", "poisson-cg") in {(d["package"], d["name"]) for d in record["demos"]}
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    for demo in record["demos"]:
        assert demo["passed"], demo["error"]
        assert demo["warnings"] == []
        assert demo["figures"], demo["name"]
        for figure in demo["figures"]:
            png = (tmp_path / figure).read_bytes()
            assert base64.b64encode(png).decode() in page
