"""Sweep of the persistent EvoNorm kernels' launch constants on a GPU, against the split passes.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH``)::

    python packages/sciml-norm/benchmarks/sweep_evonorm_persistent.py OUT.json [--budget SECONDS]

At ResNet-50's 28x28, 14x14 and 7x7 stage shapes (batch 64, float32, NCHW and channels-last) it times one
forward+backward step (median of CUDA-event timings after a warm-up) of

* EvoNorm-S0 with the persistent kernel (one program per sample and group) for each element count per tile
  (``_TILE["cuda"]``, which sets the group tile's BLOCK_C x BLOCK_HW);
* EvoNorm-B0 with the persistent kernels (one program per block of channels over the whole batch) for each
  (elements per tile, target number of programs, warps per program);
* both with the split passes (``STRATEGY = "split"``), the reference row.

It prints the split time, the default persistent time and the best configuration per case, and writes every
record as JSON. Configurations are tried in order until ``--budget`` seconds have passed (default 150).
"""

# ruff: noqa: B023  (the closures run inside the loop iteration that defines them)
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from bench_evonorm_gpu import evonorm_inputs
from sciml_protocols import measure_time

SHAPES = ((64, 2048, 7, 7), (64, 1024, 14, 14), (64, 512, 28, 28))


def main(argv: list[str] | None = None) -> None:
    """Run the sweep, print the summary and write the records as JSON."""
    from sciml_norm._functional import evonorm_b0, evonorm_s0
    from sciml_norm._kernels import evonorm as kern

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path)
    parser.add_argument("--budget", type=float, default=150.0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("sweep_evonorm_persistent.py needs a CUDA device")
    deadline = time.monotonic() + args.budget
    device = torch.device("cuda")
    defaults = {
        "tile": kern._TILE["cuda"],
        "persistent_tile": kern._PERSISTENT_TILE["cuda"],
        "programs": kern._PERSISTENT_PROGRAMS,
        "warps": kern._PERSISTENT_WARPS,
    }
    s0_configs = [{"tile": t} for t in (defaults["tile"], 1024, 4096)]
    b0_configs = [{"persistent_tile": defaults["persistent_tile"], "programs": defaults["programs"],
                   "warps": defaults["warps"]}] + [
        {"persistent_tile": t, "programs": p, "warps": w}
        for t, p, w in itertools.product((2048, 4096, 8192), (128, 256, 512), (4, 8, 16))
    ]  # fmt: skip

    def apply(config: dict[str, int]) -> None:
        merged = {**defaults, **config}
        kern._TILE["cuda"] = merged["tile"]
        kern._PERSISTENT_TILE["cuda"] = merged["persistent_tile"]
        kern._PERSISTENT_PROGRAMS = merged["programs"]
        kern._PERSISTENT_WARPS = merged["warps"]

    records = []
    for shape, layout in itertools.product(SHAPES, ("nchw", "channels_last")):
        x, g, (w, b, v), running = evonorm_inputs(shape, device, channels_last=layout == "channels_last")
        layers = {
            "S0": (lambda: evonorm_s0(x, w, b, v, groups=32, backend="triton"), s0_configs),
            "B0": (lambda: evonorm_b0(x, w, b, v, running, training=True, backend="triton"), b0_configs),
        }
        for name, (layer, configs) in layers.items():

            def step(layer=layer):
                torch.autograd.grad(layer(), (x, w, b, v), g)

            for strategy, config in [("split", {})] + [("persistent", config) for config in configs]:
                if time.monotonic() > deadline:
                    break
                kern.STRATEGY = strategy
                apply(config)
                try:
                    ms = 1e3 * measure_time(step, device="cuda", min_run_time=0.05, warmup=3, max_repeats=15)
                except Exception as error:  # a configuration Triton rejects (resources) is recorded, not fatal
                    ms = float("nan")
                    print("failed", shape, layout, name, strategy, config, repr(error)[:200])
                records.append({"shape": list(shape), "layout": layout, "layer": name, "strategy": strategy,
                                "config": config, "ms": ms})  # fmt: skip
            apply({})
    kern.STRATEGY = "auto"
    print(f"device: {torch.cuda.get_device_name(0)}; defaults {defaults}")
    print(f"{'shape':>14} {'layout':>13} {'layer':>5} {'split ms':>9} {'default ms':>10} {'best ms':>8}  best config")
    keys = sorted({(tuple(r["shape"]), r["layout"], r["layer"]) for r in records})
    for key in keys:
        rows = [r for r in records if (tuple(r["shape"]), r["layout"], r["layer"]) == key]
        split = next((r["ms"] for r in rows if r["strategy"] == "split"), float("nan"))
        persistent = [r for r in rows if r["strategy"] == "persistent" and r["ms"] == r["ms"]]
        default = persistent[0]["ms"] if persistent else float("nan")
        best = min(persistent, key=lambda r: r["ms"]) if persistent else {"ms": float("nan"), "config": None}
        shape = "x".join(map(str, key[0]))
        print(f"{shape:>14} {key[1]:>13} {key[2]:>5} {split:9.3f} {default:10.3f} {best['ms']:8.3f}  {best['config']}")
    args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "records": records}, indent=1))


if __name__ == "__main__":
    main()
