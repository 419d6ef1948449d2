import json
import subprocess
import sys

import pytest
import sciml_bilevel
from sciml_bilevel import problems
from sciml_bilevel.bench import cases
from sciml_bilevel.demo import HyperCleaningDemo, SelfTuningNetworkDemo, demos
from sciml_protocols import BenchContext, BenchmarkCase, Demo, DemoContext

CODE = """
import json, sys
import torch
before = {m.split('.')[0] for m in sys.modules}
import sciml_bilevel
after = {m.split('.')[0] for m in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_version():
    assert sciml_bilevel.__version__ == "0.1.0"


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    added = set(json.loads(out.strip().splitlines()[-1]))
    assert "sciml_bilevel" in added
    assert not added & {"triton", "matplotlib", "tqdm", "scipy"}


@pytest.mark.parametrize("module", [sciml_bilevel, problems], ids=["sciml_bilevel", "sciml_bilevel.problems"])
def test_every_public_name_resolves_and_is_listed(module):
    listed = set(module.__all__) - {"__version__", "problems", "prox", "projection", "BilevelProblem"}
    assert set(module._EXPORTS) == listed
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        _ = module.NotAThing


def test_entry_points_give_protocol_objects():
    assert all(isinstance(d, Demo) for d in demos())
    assert all(isinstance(c, BenchmarkCase) for c in cases())


def test_hypergradient_bench_quick():
    short, long = (case.run(BenchContext(quick=True, min_run_time=0.01)) for case in cases())
    assert short.peer is not None
    assert long.peer is not None
    # after 10 inner steps the lower level is not solved yet (both hypergradients are off by the inner error);
    # after 100 it is, and the implicit hypergradient is exact
    assert short.ours.metrics["relative error vs closed form"] < 0.1
    assert long.ours.metrics["relative error vs closed form"] < 1e-8
    assert long.peer.metrics["relative error vs closed form"] < 1e-8
    # implicit memory does not depend on the number of inner steps; unrolled memory grows with it
    assert short.ours.metrics["saved tensor MB"] == long.ours.metrics["saved tensor MB"]
    assert long.peer.metrics["saved tensor MB"] > 1.5 * short.peer.metrics["saved tensor MB"]


@pytest.mark.slow
def test_hyper_cleaning_demo_quick(tmp_path):
    result = HyperCleaningDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    for label in ("BO-REP", "penalty (first-order)", "implicit (CG)"):
        assert result.metrics[f"{label}: test accuracy"] > result.metrics["no cleaning: test accuracy"] + 0.1
    assert result.figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stn_demo_quick(tmp_path):
    result = SelfTuningNetworkDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    assert result.metrics["STN: final weight decay"] > 0.1  # moved a decade away from its start
    assert result.figures[0].is_file()
