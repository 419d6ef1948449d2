"""Fake demos and benchmark cases, and a fixture that puts them in place of the installed ones."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from sciml import _cli
from sciml_protocols import (
    BenchContext,
    BenchMeasurement,
    BenchResult,
    DemoContext,
    DemoResult,
    SciMLInputError,
)


@dataclasses.dataclass
class FakeDemo:
    """Draws a small PNG, reports metrics; can fail its own check, raise, or warn."""

    name: str
    passed: bool = True
    error: Exception | None = None
    warn: str | None = None
    metrics: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"residual": 1.5e-9, "iterations": 42, "converged": True}
    )
    contexts: list[DemoContext] = dataclasses.field(default_factory=list)

    def run(self, ctx: DemoContext) -> DemoResult:
        from matplotlib.figure import Figure  # lazy, like the real demos

        self.contexts.append(ctx)
        ctx.progress(0, 2, "setting up")
        if self.error is not None:
            raise self.error
        if self.warn is not None:
            warnings.warn(self.warn, RuntimeWarning, stacklevel=1)
        fig = Figure(figsize=(2.0, 1.5), dpi=40)
        fig.add_subplot().plot([0, 1, 2], [0, 1, 4])
        path = ctx.figure_path(f"{self.name}-curve")
        fig.savefig(path)
        ctx.progress(2, 2, "done")
        return DemoResult(
            title=f"Fake demo {self.name}",
            summary="A fake problem.\n\nIt shows that the CLI works.",
            metrics=self.metrics,
            figures=(path,),
            passed=self.passed,
        )


@dataclasses.dataclass
class FakeCase:
    """A benchmark case with canned numbers; the peer can be missing, the case can raise."""

    name: str
    peer: str = "numpy.linalg.solve"
    peer_installed: bool = True
    error: Exception | None = None
    extra_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    contexts: list[BenchContext] = dataclasses.field(default_factory=list)

    def run(self, ctx: BenchContext) -> BenchResult:
        self.contexts.append(ctx)
        if self.error is not None:
            raise self.error
        ours = BenchMeasurement("sciml", 0.001, {"rel_error": 1e-12, **self.extra_metrics})
        if not self.peer_installed:
            return BenchResult(self.name, "n=8", ours, None, note="numpy is not installed")
        peer = BenchMeasurement("numpy", 0.002, {"rel_error": 3e-12})
        return BenchResult(self.name, "n=8", ours, peer)


@dataclasses.dataclass
class FakeRegistry:
    """What the CLI discovers: distribution name -> items; names in ``broken`` fail to load (ImportError)."""

    demos: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    cases: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    broken: set[str] = dataclasses.field(default_factory=set)
    calls: list[list[str] | None] = dataclasses.field(default_factory=list)

    def _discover(self, items: dict[str, list[Any]], packages: Sequence[str] | None) -> dict[str, list[Any]]:
        # Mirrors sciml_protocols.discover_*: unknown names raise, the first broken entry point aborts discovery.
        self.calls.append(None if packages is None else list(packages))
        wanted = sorted(items) if packages is None else sorted(packages)
        missing = [p for p in wanted if p not in items]
        if missing:
            raise SciMLInputError("packages", f"no entry point for {missing}")
        for name in wanted:
            if name in self.broken:
                raise ImportError(f"No module named {name.replace('-', '_')}.demo")
        return {name: items[name] for name in wanted}

    def demo(self, name: str, **options: Any) -> FakeDemo:
        return FakeDemo(name, **options)

    def case(self, name: str, **options: Any) -> FakeCase:
        return FakeCase(name, **options)

    def discover_demos(self, packages: Sequence[str] | None = None) -> dict[str, list[Any]]:
        return self._discover(self.demos, packages)

    def discover_benchmarks(self, packages: Sequence[str] | None = None) -> dict[str, list[Any]]:
        return self._discover(self.cases, packages)

    def entry_point_names(self, group: str) -> list[str]:
        return sorted(self.demos if group == _cli.DEMO_GROUP else self.cases)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    fake = FakeRegistry(
        demos={"sciml-fake-a": [FakeDemo("alpha"), FakeDemo("beta")], "sciml-fake-b": [FakeDemo("gamma")]},
        cases={"sciml-fake-a": [FakeCase("solve"), FakeCase("solve-nopeer", peer_installed=False)]},
    )
    monkeypatch.setattr(_cli, "discover_demos", fake.discover_demos)
    monkeypatch.setattr(_cli, "discover_benchmarks", fake.discover_benchmarks)
    monkeypatch.setattr(_cli, "entry_point_names", fake.entry_point_names)
    return fake
