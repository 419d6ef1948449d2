"""The MIP and NeuMeta demos: registration, and the MIP demo's quick run (the NeuMeta quick run is marked slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sciml_norm._hyper_demo import MIPHypernetworkDemo, NeuMetaWidthsDemo, _mip_invariants
from sciml_norm.demo import demos
from sciml_protocols import Demo, DemoContext


def test_demos_are_registered() -> None:
    names = [d.name for d in demos()]
    assert "mip-hypernetwork" in names
    assert "neumeta-widths" in names
    assert all(isinstance(d, Demo) for d in demos())


def test_mip_invariant_checks_hold() -> None:
    checks = _mip_invariants()
    assert checks
    assert all(checks.values()), checks


def test_mip_demo_quick(tmp_path: Path) -> None:
    result = MIPHypernetworkDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    assert result.metrics["seeds where MIP ends lower"] >= 3
    assert all(f.exists() for f in result.figures)


@pytest.mark.slow
def test_neumeta_demo_quick(tmp_path: Path) -> None:
    result = NeuMetaWidthsDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.summary
    assert result.metrics["check: permutation preserves the function (1e-5)"] is True
