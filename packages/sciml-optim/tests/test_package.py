import json
import subprocess
import sys

import pytest
import sciml_optim
import torch
from sciml_optim import testing
from sciml_optim.bench import cases
from sciml_optim.demo import LionKConstraintDemo, ResearchSolversDemo, TrainingComparisonDemo, demos, synthetic_images
from sciml_protocols import BenchContext, BenchmarkCase, Demo, DemoContext

# What importing sciml_optim adds to the modules `import torch` loads.
CODE = """
import json, sys
import torch
before = {m.split('.')[0] for m in sys.modules}
import sciml_optim
after = {m.split('.')[0] for m in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_version():
    assert sciml_optim.__version__ == "0.1.0"


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    added = set(json.loads(out.strip().splitlines()[-1]))
    assert "sciml_optim" in added
    assert not added & {"triton", "matplotlib", "tqdm", "scipy", "timm", "lion_pytorch", "adamp"}


@pytest.mark.parametrize("module", [sciml_optim, testing], ids=["sciml_optim", "sciml_optim.testing"])
def test_every_public_name_resolves_and_is_listed(module):
    exports = set(module._EXPORTS)
    listed = set(module.__all__) - {"__version__", "testing"}
    assert exports == listed
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute"):
        _ = module.NotAThing


def test_entry_points_give_protocol_objects():
    assert all(isinstance(d, Demo) for d in demos())
    assert all(isinstance(c, BenchmarkCase) for c in cases())


def test_synthetic_images_share_templates_across_seeds():
    a, la = synthetic_images(200, seed=0, noise=0.0)
    b, lb = synthetic_images(200, seed=1, noise=0.0)

    # without noise, two images of one class differ only by a roll and a contrast: their normalized
    # power spectra agree, while different classes' do not
    def spectrum(x):
        s = torch.fft.fft2(x[0]).abs()
        return s / s.norm()

    i = int((la == 3).nonzero()[0])
    j = int((lb == 3).nonzero()[0])
    k = int((lb == 4).nonzero()[0])
    assert float((spectrum(a[i]) - spectrum(b[j])).norm()) < 1e-5
    assert float((spectrum(a[i]) - spectrum(b[k])).norm()) > 0.1


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_bench_cases_quick(case):
    result = case.run(BenchContext(quick=True, min_run_time=0.01))
    assert result.ours.time_s > 0
    assert result.peer is not None
    assert result.ours.metrics["GB/s (ideal traffic)"] > 0


def test_lion_k_demo_quick(tmp_path):
    result = LionKConstraintDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.metrics
    assert result.metrics["l2: max |x_end - a / max(1, |a| lambda)|"] < 1e-6
    assert abs(result.metrics["nuclear: spectral norm of X_end"] - 1.0) < 1e-3
    assert result.figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_research_solvers_demo_quick(tmp_path):
    result = ResearchSolversDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    assert abs(result.metrics["Halpern: residual slope in log k (claim -1)"] + 1.0) < 0.1
    assert result.metrics["HS6: |x - x*|_inf"] < 1e-6
    assert result.metrics["HS7: |x - x*|_inf"] < 1e-6


@pytest.mark.slow
def test_training_demo_quick(tmp_path):
    result = TrainingComparisonDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.metrics
    for name in ("AdamW", "Lion", "AdamP", "SGD", "SGDP"):
        assert result.metrics[f"{name} test accuracy"] > 0.5, name
