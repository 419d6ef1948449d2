"""The ``sciml`` command: ``sciml demo``, ``sciml bench`` and ``sciml info``.

Demos and benchmark cases come from the installed packages through the entry-point groups ``sciml.demos`` and
``sciml.benchmarks`` (see :mod:`sciml_protocols`). torch, tqdm and matplotlib are imported only by the
subcommand that needs them, so ``sciml --help`` answers at once.

Example:
    >>> main(["--version"])
    sciml 0.1.0
    0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import _environment as env
from ._report import (
    format_metrics,
    format_seconds,
    format_speedup,
    json_ready,
    text_table,
    write_demo_report,
)

if TYPE_CHECKING:
    import torch
    from sciml_protocols import BenchmarkCase, Demo

__all__ = ["build_parser", "discover_benchmarks", "discover_demos", "entry_point_names", "main"]

DEMO_GROUP = "sciml.demos"
BENCHMARK_GROUP = "sciml.benchmarks"
DEFAULT_DEMO_DIR = "sciml-demo"
# Cases get this many seconds of repeated calls per side; --quick makes it short enough for CI.
DEFAULT_MIN_RUN_TIME = 0.5
QUICK_MIN_RUN_TIME = 0.05


# What _write prints where the terminal's encoding lacks the symbol: times, micro, middle dot.
_ASCII_FALLBACK = {0xD7: "x", 0xB5: "u", 0xB7: "-"}


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see (unknown package, device not available)."""


# ------------------------------------------------------------------------------------------------- discovery
# The CLI reaches the registry only through these three functions, so tests can replace them.


def discover_demos(packages: Sequence[str] | None = None) -> dict[str, list[Demo]]:
    """The installed demos, by distribution name (:func:`sciml_protocols.discover_demos`)."""
    from sciml_protocols import discover_demos as discover

    return discover(packages)


def discover_benchmarks(packages: Sequence[str] | None = None) -> dict[str, list[BenchmarkCase]]:
    """The installed benchmark cases, by distribution name (:func:`sciml_protocols.discover_benchmarks`)."""
    from sciml_protocols import discover_benchmarks as discover

    return discover(packages)


def entry_point_names(group: str) -> list[str]:
    """Names of the entry points in ``group`` (distribution names by convention), sorted, without loading them.

    Example:
        >>> "sciml-protocols" in entry_point_names("sciml.demos")
        True
    """
    return sorted({entry.name for entry in metadata.entry_points(group=group)})


def _canonical_package(name: str) -> str:
    """``ot``, ``sciml_ot`` and ``SciML-OT`` all name the distribution ``sciml-ot``."""
    canonical = env.normalize_distribution_name(name)
    if canonical != "sciml" and not canonical.startswith("sciml-"):
        canonical = f"sciml-{canonical}"
    return canonical


def _discover_safely(
    discover: Callable[[Sequence[str] | None], Mapping[str, list[Any]]],
    group: str,
    what: str,
    requested: Sequence[str],
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Discover ``group``; a package whose entry point fails to load is returned in the second dict (traceback).

    Raises:
        UsageError: a requested package has no entry point in ``group``.
    """
    from sciml_protocols import SciMLInputError

    packages = list(dict.fromkeys(_canonical_package(p) for p in requested))
    available = entry_point_names(group)
    unknown = [p for p in packages if p not in available]
    if unknown:
        raise UsageError(
            f"no {what} for {', '.join(unknown)}; packages with {what}: {', '.join(available) or 'none'} "
            "(see `sciml info`)"
        )
    try:
        return dict(discover(packages or None)), {}
    except SciMLInputError as err:
        raise UsageError(err.problem) from err
    except Exception:
        pass
    # One broken package must not hide the others: load them one at a time and report the broken ones.
    found: dict[str, list[Any]] = {}
    failed: dict[str, str] = {}
    for name in packages or available:
        try:
            found.update(discover([name]))
        except Exception:
            failed[name] = traceback.format_exc()
    return found, failed


# ------------------------------------------------------------------------------------------------ utilities


def _write(text: str, stream: TextIO | None = None) -> None:
    """Print ``text``, spelling the few non-ASCII symbols we use in ASCII when the terminal cannot encode them."""
    stream = sys.stdout if stream is None else stream
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        print(text.translate(_ASCII_FALLBACK), file=stream)


def _resolve_device(name: str) -> torch.device:
    import torch

    if name == "cuda":
        if not torch.cuda.is_available():
            reason = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else f"no CUDA device is visible to torch {torch.__version__}"
            )
            raise UsageError(f"--device cuda: CUDA is not available ({reason}); use --device cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _command_line(argv: Sequence[str]) -> str:
    return shlex.join(["sciml", *argv])


def _safe_path_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "demo"


def _format_error(error: BaseException) -> str:
    """The traceback of ``error`` without its first frame, which is the CLI's own call into the demo or case."""
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def _last_line(trace: str) -> str:
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


@contextlib.contextmanager
def _capture_warnings() -> Iterator[list[str]]:
    """Record the warnings raised inside, one line each without repeats, for the report."""
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield seen
        finally:
            for w in caught:
                line = f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})"
                if line not in seen:
                    seen.append(line)


class _ProgressBar:
    """A tqdm bar on stderr driven by a demo's ``progress(done, total, message)`` callback."""

    def __init__(self, description: str) -> None:
        from tqdm import tqdm  # lazy

        self._bar = tqdm(desc=description, total=None, unit="step", file=sys.stderr, leave=True, dynamic_ncols=True)

    def __call__(self, done: int, total: int, message: str) -> None:
        if total > 0 and self._bar.total != total:
            self._bar.total = total
        done = max(0, min(done, total) if total > 0 else done)
        self._bar.set_postfix_str(message, refresh=False)
        # update() redraws at most every tqdm.mininterval seconds, so a chatty demo does not flood the terminal.
        self._bar.update(done - self._bar.n)

    def close(self, status: str) -> None:
        if status == "passed" and self._bar.total:
            self._bar.n = self._bar.total
        self._bar.set_postfix_str(status, refresh=False)
        self._bar.close()


def _use_agg_backend() -> None:
    """Draw off-screen: demos write PNG files, and a GUI backend would open windows or fail without a display."""
    import os

    if not os.environ.get("MPLBACKEND"):
        import matplotlib  # lazy

        matplotlib.use("Agg")


def _close_figures() -> None:
    # A demo that forgets plt.close must not leak figures into the next one (matplotlib warns past twenty).
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


# ------------------------------------------------------------------------------------------------------ demo


def _run_demo(
    package: str, demo: Demo, *, position: str, out_dir: Path, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    import torch
    from sciml_protocols import DemoContext, DemoResult

    name = str(demo.name)
    demo_dir = out_dir / _safe_path_part(package) / _safe_path_part(name)
    demo_dir.mkdir(parents=True, exist_ok=True)
    bar = _ProgressBar(f"{position} {package}/{name}")
    ctx = DemoContext(out_dir=demo_dir, device=device, quick=args.quick, seed=args.seed, progress=bar)
    result: DemoResult | None = None
    error: str | None = None
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with _capture_warnings() as caught:
        try:
            result = demo.run(ctx)
            if not isinstance(result, DemoResult):
                raise TypeError(f"demo {name!r} returned {type(result).__name__}, not a DemoResult")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:
            result = None
            error = _format_error(exc)
    seconds = time.perf_counter() - start
    _close_figures()
    status = "error" if result is None else ("passed" if result.passed else "failed")
    bar.close(status)
    for line in caught:
        _write(f"  warning: {line}", sys.stderr)
    figures: list[str] = []
    if result is not None:
        root = out_dir.resolve()
        for figure in result.figures:
            path = figure if figure.is_absolute() else demo_dir / figure
            try:
                figures.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                figures.append(path.resolve().as_posix())
    return {
        "package": package,
        "name": name,
        "title": result.title if result is not None else name,
        "summary": result.summary if result is not None else "",
        "metrics": dict(result.metrics) if result is not None else {},
        "figures": figures,
        "passed": status == "passed",
        "status": status,
        "seconds": seconds,
        "error": error,
        "warnings": caught,
    }


def _load_failure(package: str, trace: str, what: str) -> dict[str, Any]:
    return {
        "package": package,
        "name": "(load)",
        "title": f"{package}: its {what} could not be loaded",
        "summary": _last_line(trace),
        "metrics": {},
        "figures": [],
        "passed": False,
        "status": "error",
        "seconds": None,
        "error": trace,
        "warnings": [],
    }


def _demo_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            r["package"],
            r["name"],
            {"passed": "yes", "failed": "NO", "error": "ERROR"}[r["status"]],
            format_metrics(r["metrics"], limit=3, width=70) if r["status"] != "error" else _last_line(r["error"])[:70],
            format_seconds(r["seconds"]),
        ]
        for r in records
    ]
    return text_table(["package", "demo", "passed", "key metrics", "time"], rows, right=[4])


def _cmd_demo(args: argparse.Namespace) -> int:
    device = _resolve_device(args.device)
    found, failed = _discover_safely(discover_demos, DEMO_GROUP, "demos", args.packages)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _use_agg_backend()

    total = sum(len(demos) for demos in found.values())
    records: list[dict[str, Any]] = []
    index = 0
    for package in sorted(found.keys() | failed.keys()):
        if package in failed:
            records.append(_load_failure(package, failed[package], "demos"))
            _write(f"{package}: demos could not be loaded: {_last_line(failed[package])}", sys.stderr)
            continue
        for demo in found[package]:
            index += 1
            records.append(
                _run_demo(package, demo, position=f"[{index}/{total}]", out_dir=out_dir, args=args, device=device)
            )

    record = {
        "sciml_version": env.distribution_version("sciml"),
        "created": _timestamp(),
        "command": _command_line(args.argv),
        "device": str(device),
        "device_name": env.device_name(device),
        "quick": args.quick,
        "seed": args.seed,
        "platform": platform.platform(),
        "versions": env.versions(),
        "passed": bool(records) and all(r["passed"] for r in records),
        "demos": records,
    }
    json_path, html_path = write_demo_report(record, out_dir)

    if not records:
        _write("No demos found: is any sciml package with demos installed? (see `sciml info`)", sys.stderr)
        _write(f"Wrote {json_path} and {html_path}")
        return 1
    _write(_demo_table(records))
    n_passed = sum(r["passed"] for r in records)
    _write(f"\n{n_passed} of {len(records)} demos passed. Report: {html_path}  (data: {json_path})")
    for r in records:
        if r["status"] == "error":
            _write(f"\n{r['package']}/{r['name']} raised:\n{r['error']}", sys.stderr)
    return 0 if record["passed"] else 1


# ----------------------------------------------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch
    from sciml_protocols import BenchContext, BenchResult
    from tqdm import tqdm  # lazy

    device = _resolve_device(args.device)
    found, failed = _discover_safely(discover_benchmarks, BENCHMARK_GROUP, "benchmark cases", args.packages)
    min_run_time = args.min_run_time
    if min_run_time is None:
        min_run_time = QUICK_MIN_RUN_TIME if args.quick else DEFAULT_MIN_RUN_TIME
    ctx = BenchContext(device=device, quick=args.quick, seed=0, min_run_time=min_run_time)

    entries: list[dict[str, Any]] = []
    n_cases = sum(len(cases) for cases in found.values())
    with tqdm(total=n_cases, desc="bench", unit="case", file=sys.stderr, dynamic_ncols=True) as bar:
        for package in sorted(found.keys() | failed.keys()):
            if package in failed:
                entries.append(_bench_entry(package, "(load)", "", error=failed[package]))
                continue
            for case in found[package]:
                bar.set_postfix_str(f"{package}/{case.name}")
                entry = _bench_entry(package, case.name, case.peer)
                torch.manual_seed(ctx.seed)
                with _capture_warnings() as caught:
                    try:
                        result = case.run(ctx)
                        if not isinstance(result, BenchResult):
                            raise TypeError(f"case {case.name!r} returned {type(result).__name__}, not a BenchResult")
                        entry.update(result.to_dict(), case=case.name)
                    except Exception as exc:
                        entry["error"] = _format_error(exc)
                entry["warnings"] = caught
                entries.append(entry)
                bar.update(1)

    if not entries:
        _write(
            "No benchmark cases found: is any sciml package with benchmarks installed? (see `sciml info`)", sys.stderr
        )
        return 1
    _write(_bench_table(entries))
    accuracy = _bench_accuracy(entries)
    if accuracy:
        _write("\nAccuracy in full:\n" + "\n".join(accuracy))
    notes = _bench_notes(entries)
    if notes:
        _write("\nNotes:\n" + "\n".join(notes))
    _write(f"\ndevice {device}: {env.device_name(device)}; min run time {min_run_time:g} s per timing")
    if args.json is not None:
        report = {
            "sciml_version": env.distribution_version("sciml"),
            "created": _timestamp(),
            "command": _command_line(args.argv),
            "device": str(device),
            "device_name": env.device_name(device),
            "quick": args.quick,
            "min_run_time": min_run_time,
            "platform": platform.platform(),
            "versions": env.versions(),
            "results": entries,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_ready(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _write(f"Wrote {path}")
    errors = [e for e in entries if e.get("error")]
    for e in errors:
        _write(f"\n{e['package']}/{e['case']} raised:\n{e['error']}", sys.stderr)
    return 1 if errors else 0


def _bench_entry(package: str, case: str, peer_library: str, error: str | None = None) -> dict[str, Any]:
    # Every entry has every key (a case that raised has no measurements), so readers of the JSON need no guards.
    return {
        "package": package,
        "case": case,
        "peer_library": peer_library,
        "size": None,
        "ours": None,
        "peer": None,
        "speedup": None,
        "note": "",
        "error": error,
        "warnings": [],
    }


_ACCURACY_WIDTH = 48


def _bench_accuracy(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """In full, the accuracy metrics that the table had to cut."""
    lines: list[str] = []
    for e in entries:
        if e.get("error"):
            continue
        sides = [("ours", e["ours"]), ("peer", e["peer"])] if e["peer"] else [("ours", e["ours"])]
        texts = [(f"{who} ({side['label']})", format_metrics(side["metrics"])) for who, side in sides]
        if any(len(text) > _ACCURACY_WIDTH for _, text in texts):
            width = max(len(who) for who, _ in texts)
            lines.append(f"  {e['package']}/{e['case']}")
            lines.extend(f"    {who.ljust(width)}  {text}" for who, text in texts)
    return lines


def _bench_table(entries: Sequence[Mapping[str, Any]]) -> str:
    rows: list[list[str]] = []
    for e in entries:
        if e.get("error"):
            rows.append(
                [e["package"], e["case"], "-", e["peer_library"], "ERROR", "-", "-", _last_line(e["error"])[:60], ""]
            )
            continue
        ours, peer = e["ours"], e["peer"]
        rows.append(
            [
                e["package"],
                e["case"],
                e["size"],
                e["peer_library"],
                format_seconds(ours["time_s"]),
                format_seconds(peer["time_s"]) if peer else "missing",
                format_speedup(e["speedup"]),
                format_metrics(ours["metrics"], width=_ACCURACY_WIDTH),
                format_metrics(peer["metrics"], width=_ACCURACY_WIDTH) if peer else "-",
            ]
        )
    headers = ["package", "case", "size", "peer", "ours", "peer time", "speedup", "our accuracy", "peer accuracy"]
    return text_table(headers, rows, right=[4, 5, 6])


def _bench_notes(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    notes: list[str] = []
    for e in entries:
        where = f"{e['package']}/{e['case']}"
        if not e.get("error") and e.get("peer") is None:
            reason = e.get("note") or "not installed or not available on this device"
            notes.append(f"  {where}: peer {e['peer_library']} missing: {reason}")
        elif e.get("note"):
            notes.append(f"  {where}: {e['note']}")
        notes.extend(f"  {where}: {w}" for w in e.get("warnings") or [])
    return notes


# ------------------------------------------------------------------------------------------------------ info


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    del args
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    versions = env.versions()
    versions["python"] = f"{versions['python']} ({platform.python_implementation()}, {platform.platform()})"
    sections.append(("Versions", list(versions.items())))

    cuda_devices = env.cuda_devices()
    if cuda_devices:
        cuda = f"yes ({len(cuda_devices)} device{'s' if len(cuda_devices) > 1 else ''}, CUDA {torch.version.cuda})"
    elif torch.version.cuda is None:
        cuda = "no (this torch build has no CUDA support)"
    else:
        cuda = f"no (torch built with CUDA {torch.version.cuda}, no device visible)"
    devices = [("CUDA available", cuda)] + [(f"cuda:{i}", n) for i, n in enumerate(cuda_devices)]
    devices.append(("cpu", env.device_name(torch.device("cpu"))))
    sections.append(("Devices", devices))

    backends = [("triton importable", "yes" if env.triton_importable() else "no")]
    backends += [(k, "(unset)" if v is None else repr(v)) for k, v in env.backend_environment().items()]
    sections.append(("Backends", backends))

    def describe(items: Sequence[Any], with_peer: bool) -> str:
        return ", ".join(f"{i.name} (vs {i.peer})" if with_peer else str(i.name) for i in items) or "(none)"

    for title, discover, group, what, with_peer in (
        ("Demos", discover_demos, DEMO_GROUP, "demos", False),
        ("Benchmarks", discover_benchmarks, BENCHMARK_GROUP, "benchmark cases", True),
    ):
        found, failed = _discover_safely(discover, group, what, [])
        rows = [(p, describe(items, with_peer)) for p, items in found.items()]
        rows += [(p, f"could not load: {_last_line(trace)}") for p, trace in failed.items()]
        sections.append((f"{title} ({group})", sorted(rows) or [("(none)", "")]))

    _write(f"sciml {env.distribution_version('sciml')}")
    for title, rows in sections:
        width = max(len(k) for k, _ in rows)
        _write(f"\n{title}")
        for key, value in rows:
            _write(f"  {key.ljust(width)}  {value}".rstrip())
    return 0


# ---------------------------------------------------------------------------------------------------- parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sciml`` command.

    Example:
        >>> args = build_parser().parse_args(["demo", "ot", "--quick"])
        >>> args.command, args.packages, args.quick, args.out, args.device, args.seed
        ('demo', ['ot'], True, 'sciml-demo', 'cpu', 0)
    """
    parser = argparse.ArgumentParser(
        prog="sciml",
        description="Demos, side-by-side benchmarks and environment report of the installed sciml packages.",
    )
    parser.add_argument("--version", action="version", version=f"sciml {env.distribution_version('sciml')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    packages_help = "distributions to include, e.g. sciml-ot or just ot (default: every installed one)"
    devices = ["cpu", "cuda"]

    demo = commands.add_parser(
        "demo",
        help="run each package's showcase and write figures, results.json and index.html",
        description="Run the demos of the installed sciml packages; write their figures, results.json and a "
        "self-contained index.html report into the output folder. Exit status 0 when every demo passed.",
    )
    demo.add_argument("packages", nargs="*", metavar="PACKAGE", help=packages_help)
    demo.add_argument("--quick", action="store_true", help="smallest problems that still show the point")
    demo.add_argument("--device", choices=devices, default="cpu", help="where to compute (default: cpu)")
    demo.add_argument("--out", default=DEFAULT_DEMO_DIR, metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: %(default)s)")
    demo.set_defaults(handler=_cmd_demo)

    bench = commands.add_parser(
        "bench",
        help="time each package against its peers on the same inputs",
        description="Run the benchmark cases of the installed sciml packages: ours and the peer on the same "
        "inputs in the same process; print times, speedup (peer time / our time) and accuracy.",
    )
    bench.add_argument("packages", nargs="*", metavar="PACKAGE", help=packages_help)
    bench.add_argument("--device", choices=devices, default="cpu", help="where to compute (default: cpu)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bench.add_argument("--quick", action="store_true", help="small sizes and short timings")
    bench.add_argument(
        "--min-run-time",
        type=_positive_seconds,
        metavar="S",
        help=f"seconds of repeated calls per timing side (default: {DEFAULT_MIN_RUN_TIME}, "
        f"{QUICK_MIN_RUN_TIME} with --quick)",
    )
    bench.set_defaults(handler=_cmd_bench)

    info = commands.add_parser(
        "info",
        help="versions, devices, backends, and the demos and benchmarks installed",
        description="Show versions, devices, backends, and the demos and benchmark cases installed.",
    )
    info.set_defaults(handler=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sciml`` command.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0 on success, 1 when a demo failed or a benchmark case raised, 2 for a usage error
        (unknown option or package, CUDA asked for but not available).

    Example:
        >>> main(["demo", "--device", "tpu"])  # argparse explains on stderr
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    try:
        return args.handler(args)
    except UsageError as err:
        _write(f"sciml {args.command}: error: {err}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        _write("interrupted", sys.stderr)
        return 130
