"""Tile-size sweep of the split-pass EvoNorm-S0/B0 kernels on a GPU: which (tile, block caps) is fastest per layout.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH``)::

    python packages/sciml-norm/benchmarks/sweep_evonorm_tiles.py OUT.json

For each configuration of ``sciml_norm._kernels.evonorm`` (elements per program tile, largest block along
:math:`H W`, largest block along channels) it times one forward+backward step of ``evonorm_s0``/``evonorm_b0``
(``backend="triton"``, median of CUDA-event timings after a warm-up) at the first and last ResNet-50 stage shapes,
float32 and bfloat16, NCHW and channels-last, and prints the best configuration per case next to the default.
The split strategy is forced (``STRATEGY = "split"``); ``sweep_evonorm_persistent.py`` sweeps the persistent kernels.
"""

# ruff: noqa: B023  (the closures run inside the loop iteration that defines them)
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
from bench_evonorm_gpu import evonorm_inputs
from sciml_protocols import measure_time

SHAPES = ((64, 256, 56, 56), (64, 2048, 7, 7))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main(out: Path) -> None:
    """Run the sweep, print the summary table and write every record as JSON to ``out``."""
    from sciml_norm._functional import evonorm_b0, evonorm_s0
    from sciml_norm._kernels import evonorm as kern

    device = torch.device("cuda")
    kern.STRATEGY = "split"
    default = (kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C)
    configs = sorted(set(itertools.product((1024, 2048, 4096, 8192), (256, 1024), (32, 64, 128))) | {default})
    records = []
    for shape, (dname, dtype), layout in itertools.product(SHAPES, DTYPES.items(), ("nchw", "channels_last")):
        x, g, (w, b, v), running = evonorm_inputs(shape, device, dtype, channels_last=layout == "channels_last")
        layers = {
            "S0": lambda: evonorm_s0(x, w, b, v, groups=32, backend="triton"),
            "B0": lambda: evonorm_b0(x, w, b, v, running, training=True, backend="triton"),
        }
        for name, layer in layers.items():

            def step(layer=layer):
                torch.autograd.grad(layer(), (x, w, b, v), g)

            for tile, max_hw, max_c in configs:
                # channels-last tiles depend on (tile, max_c) only, NCHW tiles on (tile, max_hw) only
                if layout == "nchw" and max_c != default[2] and (tile, max_hw, max_c) != default:
                    continue
                if layout == "channels_last" and max_hw != default[1] and (tile, max_hw, max_c) != default:
                    continue
                kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C = tile, max_hw, max_c
                try:
                    ms = 1e3 * measure_time(step, device="cuda", min_run_time=0.05, warmup=3, max_repeats=15)
                except Exception as error:  # a configuration Triton rejects (resources) is recorded, not fatal
                    ms = float("nan")
                    print("failed", shape, dname, layout, name, tile, max_hw, max_c, repr(error)[:200])
                records.append(
                    {"shape": list(shape), "dtype": dname, "layout": layout, "layer": name, "tile": tile,
                     "max_hw": max_hw, "max_c": max_c, "ms": ms, "default": (tile, max_hw, max_c) == default}
                )  # fmt: skip
            kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C = default
    print(f"device: {torch.cuda.get_device_name(0)}; default (tile, max_hw, max_c) = {default}")
    print(f"{'shape':>14} {'dtype':>9} {'layout':>13} {'layer':>5} {'default ms':>10} {'best ms':>8}  best config")
    keys = sorted({(tuple(r["shape"]), r["dtype"], r["layout"], r["layer"]) for r in records})
    for key in keys:
        rows = [r for r in records if (tuple(r["shape"]), r["dtype"], r["layout"], r["layer"]) == key]
        base = next(r for r in rows if r["default"])
        best = min((r for r in rows if r["ms"] == r["ms"]), key=lambda r: r["ms"])
        shape = "x".join(map(str, key[0]))
        print(f"{shape:>14} {key[1]:>9} {key[2]:>13} {key[3]:>5} {base['ms']:10.3f} {best['ms']:8.3f}  "
              f"tile={best['tile']} max_hw={best['max_hw']} max_c={best['max_c']}")  # fmt: skip
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "records": records}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "evonorm-tiles.json"))
