r"""Gaunt tensor product against e3nn across degrees: time of forward and forward+backward, L = 2 ... 20.

For each degree L (inputs and output of degree L, ``lmax_out = L``) the same float32 inputs of shape
``(batch, C (L+1)^2)`` (e3nn ``mul_ir`` layout, irreps ``Cx0e+Cx1o+...``) go to ``gaunt_tensor_product`` with the
``grid`` and ``fft`` backends and to e3nn's ``o3.TensorProduct`` restricted to the even paths with Gaunt path
weights (the same bilinear map; see ``sciml_equivariant.bench``), which runs up to ``--e3nn-max`` (at most 12, its
cap on spherical harmonics). Timings: median of repeated calls, ``torch.utils.benchmark`` on the CPU and CUDA
events on a GPU (``sciml_protocols.measure_time``). The agreement with e3nn (max |ours - e3nn| / max |e3nn|) is
recorded for every degree where both run, and the run fails (exit status 1) when it exceeds ``--tolerance``.

Writes a JSON record and a figure of time against L (log scale; matplotlib optional).

Usage::

    uv run python packages/sciml-equivariant/benchmarks/bench_gaunt.py --device cpu --out gaunt.json
    python packages/sciml-equivariant/benchmarks/bench_gaunt.py --device cuda --out $OUT/gaunt-cuda.json
    uv run python packages/sciml-equivariant/benchmarks/bench_gaunt.py --quick   # seconds: small sizes, L <= 6

On the GPU machine (no network; PYTHONPATH over the workspace sources)::

    PYTHONPATH=$(ls -d packages/*/src | paste -sd:) python packages/sciml-equivariant/benchmarks/bench_gaunt.py \
        --device cuda --out $OUT/gaunt-cuda.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any


def _parse_degrees(text: str) -> list[int]:
    """``"2-20"`` or ``"2,4,6"`` (or a mix: ``"2-10,16,20"``)."""
    degrees: list[int] = []
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-")
            degrees.extend(range(int(low), int(high) + 1))
        elif part:
            degrees.append(int(part))
    return degrees


def _draw(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(10.0, 4.2), dpi=120, layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    styles = {
        "grid": ("tab:blue", "o"),
        "fft": ("tab:orange", "s"),
        "module": ("tab:green", "d"),
        "cg": ("tab:red", "v"),
    }
    for axes, key, name in zip(panels, ("forward_s", "forward_backward_s"), ("forward", "forward + backward"),
                               strict=True):  # fmt: skip
        backends = sorted({b for row in rows for b in row["ours"]})
        for backend in backends:
            color, marker = styles.get(backend, ("tab:purple", "x"))
            points = [(row["L"], row["ours"][backend][key]) for row in rows if row["ours"][backend][key] is not None]
            if points:
                axes.semilogy(*zip(*points, strict=True), color=color, marker=marker, label=f"ours ({backend})")
        peer = [(row["L"], row["e3nn"][key]) for row in rows if row["e3nn"] is not None and row["e3nn"][key]]
        if peer:
            axes.semilogy(*zip(*peer, strict=True), color="tab:gray", marker="^", label="e3nn (Gaunt paths)")
        axes.axvline(12, color="0.6", linestyle=":", linewidth=1)
        axes.set_xlabel("degree L (inputs and output)")
        axes.set_title(name)
        axes.grid(True, which="both", alpha=0.3)
    panels[0].set_ylabel("seconds per call")
    panels[0].legend()
    figure.suptitle(title, fontsize=10)
    figure.savefig(path)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, print a table, write the JSON record and the figure; 1 if the agreement check fails."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--degrees", default="2-20", help="degrees L, e.g. '2-20' or '2,4,6,8,10,16,20'")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--backends", default="grid,fft", help="comma-separated: grid, fft, cg, auto, module")
    parser.add_argument("--e3nn-max", type=int, default=10, help="highest L for e3nn (at most 12; -1: no e3nn)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds of repeated calls per timing")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max relative |ours - e3nn| allowed")
    parser.add_argument("--quick", action="store_true", help="batch 16, 8 channels, L = 2..6, short timings")
    parser.add_argument("--out", default="gaunt-bench.json", help="JSON file (the figure goes next to it, .png)")
    args = parser.parse_args(argv)

    import torch
    from sciml_equivariant.bench import gaunt_speed_sweep

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    if args.quick:
        args.batch, args.channels, args.min_run_time = 16, 8, 0.05
        args.degrees, args.e3nn_max = "2-6", min(args.e3nn_max, 4)
    degrees = _parse_degrees(args.degrees)
    backends = [b for b in args.backends.split(",") if b]
    dtype = getattr(torch, args.dtype)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    rows = gaunt_speed_sweep(
        degrees,
        batch=args.batch,
        channels=args.channels,
        backends=backends,
        e3nn_max_degree=args.e3nn_max,
        device=device,
        dtype=dtype,
        min_run_time=args.min_run_time,
        backward=not args.no_backward,
        progress=progress,
    )
    elapsed = time.perf_counter() - start

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1e3 * value:9.3f}"

    header = f"{'L':>3} {'paths':>6} " + " ".join(f"{b + ' fwd':>10} {b + ' f+b':>10}" for b in backends)
    header += f" {'e3nn fwd':>10} {'e3nn f+b':>10} {'e3nn build':>10} {'speed-up':>8} {'rel diff':>9}"
    print(header)
    worst = 0.0
    for row in rows:
        line = f"{row['L']:>3} {row['paths']:>6} "
        line += " ".join(f"{ms(row['ours'][b]['forward_s']):>10} {ms(row['ours'][b]['forward_backward_s']):>10}"
                         for b in backends)  # fmt: skip
        peer = row["e3nn"]
        if peer is None:
            line += f" {'-':>10} {'-':>10} {'-':>10} {'-':>8} {'-':>9}"
        else:
            best = min((t for b in backends if (t := row["ours"][b]["forward_s"]) is not None), default=math.nan)
            diff = max(row["relative_diff"].values(), default=0.0)
            worst = max(worst, diff)
            line += f" {ms(peer['forward_s']):>10} {ms(peer['forward_backward_s']):>10}"
            line += f" {peer['construction_s']:>9.2f}s {peer['forward_s'] / best:>7.1f}x {diff:>9.1e}"
        print(line)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"times in ms; device {device} ({device_name}); {args.batch} x {args.channels} channels, {args.dtype}; "
          f"{elapsed:.0f} s in all")  # fmt: skip

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "batch": args.batch,
        "channels": args.channels,
        "dtype": args.dtype,
        "min_run_time": args.min_run_time,
        "backends": backends,
        "max_relative_diff_vs_e3nn": worst,
        "rows": rows,
    }
    out.write_text(json.dumps(record, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v)
                                else str(v)) + "\n", encoding="utf-8")  # fmt: skip
    print(f"wrote {out}")
    figure = out.with_suffix(".png")
    title = f"Gaunt product vs e3nn, {device_name}, batch {args.batch}, {args.channels} channels, {args.dtype}"
    if _draw(rows, figure, title):
        print(f"wrote {figure}")
    if worst > args.tolerance:
        print(f"FAIL: ours and e3nn differ by {worst:.2e} relative (> {args.tolerance:g})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
