"""Summarize what ``shared/gpu_norm_equivariant.sh`` brought back: tests, benchmark tables, target check, sweep.

Usage (repository root, any machine)::

    uv run python shared/summarize_evonorm_gpu.py RESULTS [--target 1.5]

``RESULTS`` is the ``results.tar.gz`` the GPU script packs, or the folder it unpacks to (the one holding
``work/``, or ``work/`` itself). It prints, as Markdown:

* the machine and the steps (exit status, seconds, kernels each step still compiled);
* the GPU tests: counts and the names of failures (JUnit XML);
* the benchmark (``evonorm-nchw.json``, ``evonorm-cl.json``) as the README's table: ours and timm for S0 and B0,
  BatchNorm2d+ReLU, the ratios to it and the peak memory; then the other launch paths and strategies (jit, split)
  as ratios to BatchNorm2d+ReLU;
* the target check of issue 6: every ``ours`` row at 28x28, 14x14 and 7x7 in NCHW within ``--target`` times
  BatchNorm2d+ReLU (float32 and bfloat16);
* the host / GPU profile and the sweep's summary (``sweep_evonorm_persistent.summary``).

Nothing here is measured: it only reads the JSON the GPU run wrote, so the tables it prints carry that run's
device name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "sciml-norm" / "benchmarks"))

TARGET_SHAPES = ("64x512x28x28", "64x1024x14x14", "64x2048x7x7")


def _work_dir(path: Path, scratch: Path) -> Path:
    if path.is_file():
        with tarfile.open(path) as archive:
            archive.extractall(scratch, filter="data")
        path = scratch
    return path / "work" if (path / "work").is_dir() else path


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def tests(xml_path: Path) -> str:
    """Counts and failures of a JUnit XML report."""
    if not xml_path.is_file():
        return f"{xml_path.name}: missing (the step did not finish)"
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    lines = [f"{xml_path.name}: {counts['tests']} tests, {counts['failures']} failures, {counts['errors']} errors, "
             f"{counts['skipped']} skipped"]  # fmt: skip
    for case in root.iter("testcase"):
        for bad in ("failure", "error"):
            node = case.find(bad)
            if node is not None:
                message = (node.get("message") or "").splitlines()[0][:160] if node.get("message") else ""
                lines.append(f"- {bad}: {case.get('classname')}::{case.get('name')}: {message}")
    return "\n".join(lines)


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {("x".join(map(str, r["shape"])), r["dtype"], r["layer"]): r for r in records}


def bench_table(payload: dict[str, Any]) -> str:
    """The README's table (ms, ratios to BatchNorm+ReLU, peak MiB) and the other contenders' ratios."""
    records = payload["records"]
    index = _index(records)
    layout = records[0]["layout"] if records else "?"
    cases = list(dict.fromkeys(("x".join(map(str, r["shape"])), r["dtype"]) for r in records))

    def ms(shape: str, dtype: str, layer: str) -> float:
        row = index.get((shape, dtype, layer))
        return row["ms"] if row else float("nan")

    def mib(shape: str, dtype: str, layer: str) -> str:
        row = index.get((shape, dtype, layer))
        return f"{row['peak_mib']:.0f}" if row and row["peak_mib"] == row["peak_mib"] else "-"

    lines = [
        f"{payload.get('device', '?')}, torch {payload.get('torch', '?')}, {layout} input (ms per forward+backward)",
        "",
        "| shape | dtype | ours S0 | timm S0 | ours B0 | timm B0 | BN+ReLU | S0 / BN | B0 / BN "
        "| peak MiB ours S0 / timm S0 / BN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, dtype in cases:
        bn = ms(shape, dtype, "bn-relu")
        s0, b0 = ms(shape, dtype, "ours-S0"), ms(shape, dtype, "ours-B0")
        lines.append(
            f"| {shape} | {dtype} | {s0:.2f} | {ms(shape, dtype, 'timm-S0'):.2f} | {b0:.2f} | "
            f"{ms(shape, dtype, 'timm-B0'):.2f} | {bn:.2f} | {s0 / bn:.2f} | {b0 / bn:.2f} | "
            f"{mib(shape, dtype, 'ours-S0')} / {mib(shape, dtype, 'timm-S0')} / {mib(shape, dtype, 'bn-relu')} |"
        )
    lines += [
        "",
        "| shape | dtype | jit S0 / BN | split S0 / BN | jit B0 / BN | split B0 / BN |",
        "|---|---|---|---|---|---|",
    ]
    for shape, dtype in cases:
        bn = ms(shape, dtype, "bn-relu")
        ratios = [ms(shape, dtype, f"{kind}-{layer}") / bn for layer in ("S0", "B0") for kind in ("jit", "split")]
        lines.append(f"| {shape} | {dtype} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(lines)


def target_check(payload: dict[str, Any], target: float) -> tuple[bool, str]:
    """Whether every ours-S0/B0 row at the target shapes is within ``target`` times BatchNorm2d+ReLU."""
    index = _index(payload["records"])
    lines, met, seen = [], True, 0
    for (shape, dtype, layer), row in sorted(index.items()):
        if shape not in TARGET_SHAPES or layer not in ("ours-S0", "ours-B0"):
            continue
        bn = index.get((shape, dtype, "bn-relu"))
        ratio = row["ms"] / bn["ms"] if bn else float("nan")
        ok = ratio <= target
        met &= ok
        seen += 1
        lines.append(f"- {shape} {dtype} {layer}: {ratio:.2f}x BN+ReLU {'(met)' if ok else '(MISSED)'}")
    expected = 2 * len(TARGET_SHAPES) * len({d for _, d, _ in index})
    if seen < expected:
        met = False
        lines.append(f"- {expected - seen} of the {expected} ours rows at the target shapes are missing")
    verdict = f"target {target}x BatchNorm2d+ReLU at 28x28, 14x14, 7x7: {'MET' if met else 'NOT MET'}"
    return met, "\n".join([verdict, *lines])


def failures(payload: dict[str, Any]) -> str:
    """The measurements recorded as failed (an exception, or a kernel fault that broke CUDA), one line each."""
    lines = []
    for r in payload["records"]:
        if r.get("error"):
            what = " ".join(str(r.get(k)) for k in ("layer", "strategy", "config") if r.get(k) not in (None, {}))
            shape = "x".join(map(str, r["shape"]))
            fatal = " (CUDA broke)" if r.get("fatal") else ""
            lines.append(f"- {shape} {r.get('layout', '')} {r.get('dtype', '')} {what}{fatal}: {r['error']}")
    return "\n".join(lines)


def profile_table(payload: dict[str, Any]) -> str:
    """Host / step / GPU time per contender and shape."""
    lines = [
        "| shape | layer | host us | step us | GPU us | kernels | step / BN | longest kernels (us per step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["records"]:
        top = ", ".join(f"{name[:40]} {us:.1f}" for name, us in list(r.get("kernel_us", {}).items())[:3])
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['layer']} | {r['host_us']:.1f} | {r['step_us']:.1f} | "
            f"{r['gpu_us']:.1f} | {r['kernels']:.1f} | {r.get('step_over_bn', float('nan')):.2f} | {top} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary; exit status 0 when the target is met, 1 when not, 2 when the benchmark is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", type=Path)
    parser.add_argument("--target", type=float, default=1.5)
    args = parser.parse_args(argv)
    if not args.results.exists():
        raise SystemExit(f"{args.results}: no such file or folder (the GPU run's results.tar.gz, or its work/)")
    with tempfile.TemporaryDirectory() as scratch:
        work = _work_dir(args.results, Path(scratch))
        for name in ("machine.txt", "steps.txt"):
            if (work / name).is_file():
                print(f"## {name}\n\n```\n{(work / name).read_text().strip()}\n```\n")
        print("## GPU tests\n")
        for xml_name in ("pytest-norm.xml", "pytest-norm-split.xml", "pytest-eq.xml", "pytest-others.xml"):
            if (work / xml_name).is_file() or xml_name == "pytest-norm.xml":
                print(tests(work / xml_name) + "\n")
        status = 2
        for name in ("evonorm-nchw.json", "evonorm-cl.json", "evonorm-compiled.json"):
            payload = _load(work / name)
            if payload is None:
                continue
            print(f"## {name}\n\n{bench_table(payload)}\n")
            if failures(payload):
                print(f"### Failed measurements\n\n{failures(payload)}\n")
            if name == "evonorm-nchw.json":
                met, text = target_check(payload, args.target)
                status = 0 if met else 1
                print(f"### Target\n\n{text}\n")
        profile = _load(work / "profile-step.json")
        if profile is not None:
            print(f"## Host / GPU profile ({profile['meta']['device']})\n\n{profile_table(profile)}\n")
        sweep = _load(work / "sweep-persistent.json")
        if sweep is not None:
            from sweep_evonorm_persistent import summary

            meta = sweep["meta"]
            measured = meta.get("measured", len(sweep["records"]))
            title = f"{meta['device']}; defaults {meta['defaults']}; {measured} of {meta.get('planned', '?')} measured"
            print(f"## Persistent sweep ({title})\n")
            print(f"```\n{summary(sweep['records'])}\n```")
            if failures(sweep):
                print(f"\n### Failed measurements of the sweep\n\n{failures(sweep)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
