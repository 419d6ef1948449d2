"""Demo and benchmark protocols, their entry-point discovery, and a timer that both CPU and CUDA runs share."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import torch

from ._errors import SciMLError, SciMLInputError
from ._validation import check_positive

__all__ = [
    "BENCHMARK_ENTRY_POINT_GROUP",
    "DEMO_ENTRY_POINT_GROUP",
    "BenchContext",
    "BenchMeasurement",
    "BenchResult",
    "BenchmarkCase",
    "Demo",
    "DemoContext",
    "DemoResult",
    "discover_benchmarks",
    "discover_demos",
    "measure_time",
]

DEMO_ENTRY_POINT_GROUP = "sciml.demos"
BENCHMARK_ENTRY_POINT_GROUP = "sciml.benchmarks"

Metric = float | int | str | bool


def _freeze(mapping: Mapping[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(dict(mapping))


def _no_progress(done: int, total: int, message: str) -> None:
    del done, total, message


@dataclasses.dataclass(frozen=True)
class DemoContext:
    """What the ``sciml demo`` command hands to a demo.

    Attributes:
        out_dir: folder the demo writes its figures into (it exists).
        device: where to compute.
        quick: run the smallest problems that still show the point (CI and first contact use this).
        seed: seed for every random draw of the demo.
        progress: callback ``progress(done, total, message)``; the CLI draws it as a progress bar.

    Example:
        >>> from pathlib import Path
        >>> ctx = DemoContext(out_dir=Path("report"), quick=True)
        >>> ctx.figure_path("residuals")
        PosixPath('report/residuals.png')
    """

    out_dir: Path
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    quick: bool = False
    seed: int = 0
    progress: Callable[[int, int, str], None] = _no_progress

    def figure_path(self, name: str) -> Path:
        """Path for a figure called ``name`` (``.png`` is appended when missing)."""
        if not name or "/" in name or "\\" in name:
            raise SciMLInputError("name", f"must be a plain file name, got {name!r}")
        return self.out_dir / (name if name.endswith(".png") else f"{name}.png")


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What a demo showed.

    Attributes:
        title: one line for the report's heading.
        summary: a few sentences: the problem, what was compared, what came out.
        metrics: named numbers (or short strings) for the results table.
        figures: PNG files written under :attr:`DemoContext.out_dir`.
        passed: whether the demo's own correctness checks held (for example: the solution matches a direct solve).

    Example:
        >>> result = DemoResult(title="CG on Poisson", summary="...", metrics={"iterations": 84})
        >>> result.metrics["iterations"], result.passed
        (84, True)
    """

    title: str
    summary: str
    metrics: Mapping[str, Metric] = dataclasses.field(default_factory=lambda: _freeze({}))
    figures: tuple[Path, ...] = ()
    passed: bool = True

    def __post_init__(self) -> None:
        if not self.title:
            raise SciMLInputError("title", "must be a non-empty string")
        object.__setattr__(self, "metrics", _freeze(self.metrics))
        object.__setattr__(self, "figures", tuple(Path(f) for f in self.figures))


@runtime_checkable
class Demo(Protocol):
    """A package's showcase, run by ``sciml demo``.

    A package exposes its demos through the entry-point group ``sciml.demos``: the entry point is named after the
    distribution and points to a callable returning a sequence of demos, so nothing heavy is imported until the
    CLI asks for it::

        [project.entry-points."sciml.demos"]
        sciml-ot = "sciml_ot.demo:demos"

    Example:
        >>> class Hello:
        ...     name = "hello"
        ...     def run(self, ctx):
        ...         return DemoResult(title="Hello", summary="nothing to see")
        >>> isinstance(Hello(), Demo)
        True
    """

    @property
    def name(self) -> str:
        """Short identifier, unique within the package."""
        ...

    def run(self, ctx: DemoContext) -> DemoResult:
        """Run the demo and return what it showed."""
        ...


@dataclasses.dataclass(frozen=True)
class BenchContext:
    """What ``sciml bench`` hands to a benchmark case.

    Attributes:
        device: where to compute; cases time CUDA work with CUDA events.
        quick: smaller sizes and shorter timing (tests use this).
        seed: seed for the inputs.
        min_run_time: seconds of repeated runs per timing (see :func:`measure_time`).

    Example:
        >>> BenchContext(quick=True).device
        device(type='cpu')
    """

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    quick: bool = False
    seed: int = 0
    min_run_time: float = 0.5


@dataclasses.dataclass(frozen=True)
class BenchMeasurement:
    """One side of a comparison: who ran, how long one call took (median seconds) and how accurate it was.

    Example:
        >>> BenchMeasurement("scipy", 0.25, {"relative_residual": 1e-9}).time_s
        0.25
    """

    label: str
    time_s: float
    metrics: Mapping[str, Metric] = dataclasses.field(default_factory=lambda: _freeze({}))

    def __post_init__(self) -> None:
        if not self.label:
            raise SciMLInputError("label", "must be a non-empty string")
        check_positive("time_s", self.time_s, strict=False)
        object.__setattr__(self, "metrics", _freeze(self.metrics))


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """A side-by-side result: ours against the named peer on the same inputs in the same process.

    Attributes:
        case: the case's name.
        size: the problem size in words ("n=16384, batch=1").
        ours: our measurement.
        peer: the peer's measurement, or None when the peer is not installed or does not support the device.
        note: why the peer is missing, or anything a reader must know to read the numbers.

    Example:
        >>> r = BenchResult("cg", "n=4096", BenchMeasurement("sciml", 0.5), BenchMeasurement("scipy", 1.0))
        >>> r.speedup
        2.0
    """

    case: str
    size: str
    ours: BenchMeasurement
    peer: BenchMeasurement | None = None
    note: str = ""

    @property
    def speedup(self) -> float | None:
        """Peer time over our time (> 1 means we are faster); None without a peer."""
        if self.peer is None or self.ours.time_s <= 0:
            return None
        return self.peer.time_s / self.ours.time_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""

        def side(m: BenchMeasurement | None) -> dict[str, Any] | None:
            if m is None:
                return None
            return {"label": m.label, "time_s": m.time_s, "metrics": dict(m.metrics)}

        return {
            "case": self.case,
            "size": self.size,
            "ours": side(self.ours),
            "peer": side(self.peer),
            "speedup": self.speedup,
            "note": self.note,
        }


@runtime_checkable
class BenchmarkCase(Protocol):
    """One side-by-side comparison against a named peer, run by ``sciml bench``.

    Exposed through the entry-point group ``sciml.benchmarks`` exactly as demos are (see :class:`Demo`).

    Example:
        >>> class Sum:
        ...     name, peer = "sum", "numpy.sum"
        ...     def run(self, ctx):
        ...         return BenchResult("sum", "n=1", BenchMeasurement("sciml", 1e-6))
        >>> isinstance(Sum(), BenchmarkCase)
        True
    """

    @property
    def name(self) -> str:
        """Short identifier, unique within the package."""
        ...

    @property
    def peer(self) -> str:
        """The peer library (and function) compared against, e.g. ``"scipy.sparse.linalg.cg"``."""
        ...

    def run(self, ctx: BenchContext) -> BenchResult:
        """Run both sides on the same inputs and return the comparison."""
        ...


def _discover(group: str, packages: Sequence[str] | None, kind: type) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    wanted = None if packages is None else set(packages)
    for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        if wanted is not None and entry.name not in wanted:
            continue
        factory: Any = entry.load()
        produced: Any = factory() if callable(factory) else factory
        items: list[Any] = list(produced)
        for item in items:
            if not isinstance(item, kind):
                raise SciMLError(
                    f"entry point {entry.name!r} in group {group!r} gave {type(item).__name__}, "
                    f"which does not implement {kind.__name__}"
                )
        found[entry.name] = items
    if wanted is not None:
        missing = sorted(wanted - found.keys())
        if missing:
            available = ", ".join(sorted(e.name for e in metadata.entry_points(group=group))) or "none"
            raise SciMLInputError("packages", f"no {group} entry point for {missing}; installed: {available}")
    return found


def discover_demos(packages: Sequence[str] | None = None) -> dict[str, list[Demo]]:
    """Find the demos of the installed sciml packages.

    Args:
        packages: distribution names to keep (all when None); a name without demos raises.

    Returns:
        Distribution name -> its demos, sorted by distribution name.

    Example:
        >>> demos = discover_demos(["sciml-protocols"])
        >>> [d.name for d in demos["sciml-protocols"]]
        ['poisson-cg']
    """
    return _discover(DEMO_ENTRY_POINT_GROUP, packages, Demo)


def discover_benchmarks(packages: Sequence[str] | None = None) -> dict[str, list[BenchmarkCase]]:
    """Find the benchmark cases of the installed sciml packages (see :func:`discover_demos`).

    Example:
        >>> cases = discover_benchmarks(["sciml-protocols"])
        >>> [c.peer for c in cases["sciml-protocols"]]
        ['scipy.sparse.linalg.cg']
    """
    return _discover(BENCHMARK_ENTRY_POINT_GROUP, packages, BenchmarkCase)


def measure_time(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    min_run_time: float = 0.5,
    warmup: int = 1,
    max_repeats: int = 1000,
) -> float:
    """Median wall time of one call of ``fn``, in seconds.

    On CPU the median comes from :class:`torch.utils.benchmark.Timer` (``blocked_autorange``); on CUDA each call is
    timed with CUDA events after a synchronisation, so asynchronous launches are counted in full, and calls repeat
    until ``min_run_time`` seconds have passed (at least three, at most ``max_repeats``).

    Args:
        fn: the work, with its inputs already bound.
        device: the device the work runs on.
        min_run_time: seconds of repeated calls to spend.
        warmup: untimed calls first (compilation, caches, allocator).
        max_repeats: cap on timed calls (CUDA).

    Example:
        >>> t = measure_time(lambda: torch.ones(100).sum(), min_run_time=0.01)
        >>> 0 < t < 1
        True
    """
    if not callable(fn):
        raise SciMLInputError("fn", f"must be callable, got {type(fn).__name__}")
    check_positive("min_run_time", min_run_time)
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start_all = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - start_all < min_run_time):
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
    else:
        from torch.utils import benchmark  # the CPU timer the project's benchmark rules name

        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
        return float(timer.blocked_autorange(min_run_time=min_run_time).median)
    return statistics.median(times)
