import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import sciml_equivariant

CODE = """
import json, sys
import torch
before = {m.split('.')[0] for m in sys.modules}
import sciml_equivariant
import sciml_equivariant.lie
after = {m.split('.')[0] for m in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_version():
    assert sciml_equivariant.__version__ == "0.1.0"


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    added = set(json.loads(out.strip().splitlines()[-1]))
    assert "sciml_equivariant" in added
    assert not added & {"triton", "matplotlib", "tqdm", "scipy", "e3nn", "sympy"}


def test_every_public_name_resolves_and_is_listed():
    assert set(sciml_equivariant._EXPORTS) == set(sciml_equivariant.__all__) - {"__version__"}
    for name in sciml_equivariant.__all__:
        assert getattr(sciml_equivariant, name) is not None, name
    assert set(dir(sciml_equivariant)) >= set(sciml_equivariant.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        _ = sciml_equivariant.NotAThing


def test_entry_points_are_declared():
    demos = {ep.name: ep.value for ep in entry_points(group="sciml.demos")}
    benches = {ep.name: ep.value for ep in entry_points(group="sciml.benchmarks")}
    assert demos["sciml-equivariant"] == "sciml_equivariant.demo:demos"
    assert benches["sciml-equivariant"] == "sciml_equivariant.bench:cases"
