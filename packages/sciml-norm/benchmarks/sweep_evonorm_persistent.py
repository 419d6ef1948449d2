"""Sweep of the persistent EvoNorm kernels' launch constants on a GPU, against the split passes and BatchNorm+ReLU.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH``)::

    python packages/sciml-norm/benchmarks/sweep_evonorm_persistent.py OUT.json [--budget SECONDS]
        [--until UNIX_TIME] [--resume] [--layouts nchw channels_last] [--device cuda]

At ResNet-50's 28x28, 14x14 and 7x7 stage shapes (batch 64; float32, then bfloat16 for NCHW) it times one
training step (forward, then the gradients of the input and the parameters) of

* ``bn-relu``: BatchNorm2d + ReLU (cuDNN), the reference of every ratio;
* EvoNorm-S0 and B0 with the split passes (``STRATEGY = "split"``) and with the persistent kernels at their
  default launch constants (phase 1, every shape and layout: about 30 measurements of kernels already compiled by
  the benchmark run before it);
* then, in order of priority, variants of the persistent kernels' constants (phase 2, NCHW): B0's (elements per
  tile, target number of programs, warps per program), the direction of its second pass over the batch
  (``_PERSISTENT_REVERSE``) and the software pipelining of its loops (``_PERSISTENT_STAGES``), and S0's
  elements per group tile (``_TILE["cuda"]``); for both, the row-alignment hints turned off
  (``_STRIDE_HINTS``, where they change the code); shape by shape from 28x28 (where the step is most likely bound
  by the GPU's memory traffic) down to 7x7;
* then (phase 3) the baselines and the variants again in bfloat16, NCHW only (the target covers both dtypes);
* then (phase 4) the variants for channels-last input, in float32.

Each time is the mean of 30 steps issued back to back between two CUDA events after 2 warm-ups, with the peak
memory of one step: ``bench_evonorm_gpu.measure``, so the ratios are those of the benchmark (the throughput a training
loop sees). One more step of each EvoNorm measurement is compared with the eager PyTorch layer (``err``: y and the
four gradients), so that a configuration taken from the sweep has been checked on the GPU too.
Measurements run in that order until ``--budget`` seconds have passed (or the Unix time ``--until``).
The JSON is rewritten after every measurement (``bench_evonorm_gpu.Journal``), so a run cut short keeps what it
measured; a measurement that raises is recorded with its error, and one that leaves CUDA broken (a kernel fault)
ends the process with exit status 3, after which ``--resume`` goes on where it stopped and skips that
configuration from then on (``shared/gpu_norm_equivariant.sh`` reruns it so, with the same ``--until``).
``shared/evonorm_precompile.py`` compiles every kernel this sweep launches ahead of time, in parallel, so the budget
goes to measuring. At the end it prints, per case, the split, default and best times with the best one's ratio to
BatchNorm+ReLU, and per layer the configuration whose worst ratio over the NCHW shapes is smallest.

``--device cpu`` runs the same code with the PyTorch backend (the constants then change nothing): a smoke test of
the script.
"""

# ruff: noqa: B023  (the closures run inside the loop iteration that defines them)
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from bench_evonorm_gpu import Journal, evonorm_inputs, failure, measure, script_device
from torch import nn

SHAPES = ((64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7))
LAYOUTS = ("nchw", "channels_last")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GROUPS = 32
KEY = ("phase", "shape", "layout", "dtype", "layer", "strategy", "config")  # identify a measurement
# B0: launch constants that differ from the defaults, most promising first. More programs than SMs put several
# programs on an SM, bigger tiles put more loads in flight per program, and pipelined loops ("stages", asynchronous
# copies through shared memory) keep several tiles in flight: each raises the memory traffic one wave can sustain,
# which a GPU-bound step needs (at the defaults an SM runs one program of 8 warps that waits for each tile). How
# many programs an SM holds is set by their registers (65536 per SM) and shared memory: sm_90 builds of the
# backward kernel (shared/evonorm_precompile.py --resources, NCHW float32, 28x28 / 14x14 / 7x7) take 47 / 64 / 128
# registers per thread with (1024, 512, 4), against 117 / 128 / 252 with the defaults (4096, 128, 8; 252 at 14x14
# too without the row-alignment hints); 3 stages
# take 32-64 KB of shared memory with 2048-4096-element tiles (bfloat16 at 7x7 is not pipelined: with a channel
# stride of 49, rows are only 2-byte aligned, and cp.async needs 4 bytes); the big tiles spill at 14x14 and 7x7, so
# they come last. "hints": False turns off the row-alignment hints (_STRIDE_HINTS), measured only where they change
# the code (14x14 NCHW: rows of 196 elements are read in vectors of 4 with them, one element at a time without).
B0_VARIANTS: tuple[dict[str, Any], ...] = (
    {"persistent_tile": 1024, "programs": 512, "warps": 4},
    {"hints": False},
    {"reverse": False},  # the order of the second pass over the batch
    {"stages": 3},
    {"persistent_tile": 1024, "programs": 512, "warps": 4, "stages": 3},
    {"persistent_tile": 2048, "programs": 256, "warps": 8, "stages": 3},
    {"stages": 2},
    {"persistent_tile": 4096, "programs": 256, "warps": 8},
    {"persistent_tile": 2048, "programs": 512, "warps": 4},
    {"persistent_tile": 1024, "programs": 256, "warps": 4},
    {"persistent_tile": 4096, "programs": 512, "warps": 8},
    {"persistent_tile": 2048, "programs": 256, "warps": 8},
    {"persistent_tile": 2048, "programs": 128, "warps": 8},
    {"persistent_tile": 4096, "programs": 128, "warps": 4},
    {"persistent_tile": 8192, "programs": 128, "warps": 8},
    {"persistent_tile": 8192, "programs": 128, "warps": 16},
)
# S0: elements per (channels x H W) tile of one group (at 7x7 NCHW the backward takes 237 registers with the default
# 2048, 149 with 1024, 71 with 512 and 40 with 256), and the row-alignment hints off
S0_VARIANTS: tuple[dict[str, Any], ...] = (
    {"tile": 1024},
    {"hints": False},
    {"tile": 512},
    {"tile": 256},
    {"tile": 4096},
)


#: largest error of a step's outputs (y and the four gradients) against the eager layer's, relative to 1 + the
#: largest reference value, for a measured configuration to count in the summary
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}


def step_outputs(layer: Any, weights: Sequence[torch.Tensor], x: torch.Tensor, cotangent: torch.Tensor) -> list[Any]:
    """One training step's outputs: ``[y, dx, *d weights]`` for the cotangent given."""
    y = layer(x)
    return [y.detach(), *torch.autograd.grad(y, [x, *weights], cotangent)]


def max_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    """The largest of ``max|a - e| / (1 + max|e|)`` over the outputs (float64; NaN anywhere gives NaN)."""
    errors = []
    for a, e in zip(got, want, strict=True):
        a64, e64 = a.double(), e.double()
        errors.append(((a64 - e64).abs().max() / (1.0 + e64.abs().max())).item())
    return max(errors)


def _counts(record: dict[str, Any]) -> bool:
    """A measurement the summary uses: timed, and its outputs within :data:`TOLERANCE` of the eager layer's."""
    err = record.get("err", 0.0)
    return record["ms"] == record["ms"] and err == err and err <= TOLERANCE[_dtype(record)]


def defaults() -> dict[str, int]:
    """The persistent kernels' launch constants as the package sets them."""
    from sciml_norm._kernels import evonorm as kern

    return {
        "tile": kern._TILE["cuda"],
        "persistent_tile": kern._PERSISTENT_TILE["cuda"],
        "programs": kern._PERSISTENT_PROGRAMS,
        "warps": kern._PERSISTENT_WARPS,
        "reverse": kern._PERSISTENT_REVERSE,
        "stages": kern._PERSISTENT_STAGES,
        "hints": kern._STRIDE_HINTS,
    }


def apply(config: dict[str, int], base: dict[str, int]) -> None:
    """Set the module constants to ``base`` updated by ``config``."""
    from sciml_norm._kernels import evonorm as kern

    merged = {**base, **config}
    kern._TILE["cuda"] = merged["tile"]
    kern._PERSISTENT_TILE["cuda"] = merged["persistent_tile"]
    kern._PERSISTENT_PROGRAMS = merged["programs"]
    kern._PERSISTENT_WARPS = merged["warps"]
    kern._PERSISTENT_REVERSE = merged["reverse"]
    kern._PERSISTENT_STAGES = merged["stages"]
    kern._STRIDE_HINTS = merged["hints"]


def hints_matter(shape: tuple[int, ...], layout: str) -> bool:
    """Whether the row-alignment hints change the kernels: NCHW rows aligned to 2-8 elements (14x14: 4)."""
    from sciml_norm._kernels import evonorm as kern

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    stride = torch.empty(shape, device="meta", memory_format=fmt).stride()
    flat = kern._flat_strides(tuple(shape), stride)
    assert flat is not None  # (both layouts flatten H and W)
    return 1 < kern._stride_align(shape[2] * shape[3], flat) < 16


def tasks(layouts: Sequence[str] = LAYOUTS) -> list[dict[str, Any]]:
    """The measurements in order: float32 baselines everywhere, NCHW variants (float32, then bfloat16), channels-last.

    Phase 1 is BN+ReLU, the split passes and the default constants at every shape and layout; phase 2 the variants
    by priority, float32 NCHW; phase 3 the same baselines and variants in bfloat16 for NCHW input (issue 6's target
    covers NCHW input in both dtypes); phase 4 the float32 variants for channels-last input. Each task is a dict
    with ``phase``, ``shape``, ``layout``, ``dtype``, ``layer`` ("bn-relu", "S0" or "B0"), ``strategy`` ("split" or
    "persistent"; None for BN+ReLU) and ``config`` (constants that differ from the defaults).
    ``shared/evonorm_precompile.py`` compiles the kernels of the same list.
    """
    base = defaults()

    def baselines(phase: int, layout: str, dtype: str) -> list[dict[str, Any]]:
        out = []
        for shape in SHAPES:
            out.append({"phase": phase, "shape": shape, "layout": layout, "dtype": dtype, "layer": "bn-relu",
                        "strategy": None, "config": {}})  # fmt: skip
            for layer in ("B0", "S0"):
                for strategy in ("split", "persistent"):
                    out.append({"phase": phase, "shape": shape, "layout": layout, "dtype": dtype, "layer": layer,
                                "strategy": strategy, "config": {}})  # fmt: skip
        return out

    def variants(phase: int, layout: str, dtype: str) -> list[dict[str, Any]]:
        out = []
        for shape in SHAPES:
            for layer, configs in (("B0", B0_VARIANTS), ("S0", S0_VARIANTS)):
                for config in configs:
                    if {k: base[k] for k in config} == config:
                        continue  # the defaults
                    if "hints" in config and not hints_matter(shape, layout):
                        continue  # the same kernels as the defaults
                    out.append({"phase": phase, "shape": shape, "layout": layout, "dtype": dtype, "layer": layer,
                                "strategy": "persistent", "config": config})  # fmt: skip
        return out

    out: list[dict[str, Any]] = []
    for layout in layouts:
        out += baselines(1, layout, "float32")
    if "nchw" in layouts:  # issue 6's target: NCHW input, float32 and bfloat16
        out += variants(2, "nchw", "float32")
        out += baselines(3, "nchw", "bfloat16") + variants(3, "nchw", "bfloat16")
    if "channels_last" in layouts:
        out += variants(4, "channels_last", "float32")
    return out


def _dtype(record: dict[str, Any]) -> str:
    return record.get("dtype", "float32")


def summary(records: Sequence[dict[str, Any]]) -> str:
    """Per case: BN+ReLU, split, default and best persistent times, best/BN; per layer the most robust config.

    The most robust configuration of a layer is the one whose worst ratio to BN+ReLU over the NCHW shapes is
    smallest, among the configurations measured at all of them: over float32 alone, then over every dtype measured.
    Only measurements whose outputs matched the eager layer's (:data:`TOLERANCE`) count; the others are listed.
    """
    lines = [f"{'shape':>14} {'layout':>13} {'dtype':>8} {'layer':>5} {'BN ms':>7} {'split':>7} {'default':>7} "
             f"{'best':>7} {'best/BN':>7}  best config"]  # fmt: skip
    cases = list(dict.fromkeys((tuple(r["shape"]), r["layout"], _dtype(r)) for r in records))
    for shape, layout, dtype in cases:
        rows = [r for r in records if (tuple(r["shape"]), r["layout"], _dtype(r)) == (shape, layout, dtype)]
        bn = next((r["ms"] for r in rows if r["layer"] == "bn-relu"), float("nan"))
        for layer in ("B0", "S0"):
            mine = [r for r in rows if r["layer"] == layer and _counts(r)]
            split = next((r["ms"] for r in mine if r["strategy"] == "split"), float("nan"))
            persistent = [r for r in mine if r["strategy"] == "persistent"]
            default = next((r["ms"] for r in persistent if not r["config"]), float("nan"))
            best = min(persistent, key=lambda r: r["ms"], default={"ms": float("nan"), "config": None})
            lines.append(f"{'x'.join(map(str, shape)):>14} {layout:>13} {dtype:>8} {layer:>5} {bn:7.3f} "
                         f"{split:7.3f} {default:7.3f} {best['ms']:7.3f} {best['ms'] / bn:7.2f}  "
                         f"{best['config']}")  # fmt: skip
    measured = sorted({_dtype(r) for r in records if r["layout"] == "nchw"})
    for dtypes in dict.fromkeys([("float32",), tuple(measured)]):
        combos = [(shape, dtype) for shape in SHAPES for dtype in dtypes]
        for layer in ("B0", "S0"):
            ratios: dict[str, dict[tuple[Any, ...], float]] = {}
            for shape, dtype in combos:
                rows = [r for r in records if tuple(r["shape"]) == shape and r["layout"] == "nchw"
                        and _dtype(r) == dtype]  # fmt: skip
                bn = next((r["ms"] for r in rows if r["layer"] == "bn-relu"), float("nan"))
                for r in rows:
                    if r["layer"] == layer and r["strategy"] == "persistent" and _counts(r):
                        key = json.dumps(r["config"], sort_keys=True)
                        ratios.setdefault(key, {})[(shape, dtype)] = r["ms"] / bn
            worst = {key: max(v.values()) for key, v in ratios.items() if len(v) == len(combos)}
            if worst:
                key = min(worst, key=lambda k: worst[k])
                lines.append(f"{layer}: smallest worst ratio to BN+ReLU over the NCHW shapes in {'/'.join(dtypes)}: "
                             f"{worst[key]:.2f} with {key} (default {worst.get('{}', float('nan')):.2f})")  # fmt: skip
    wrong = [r for r in records if r["ms"] == r["ms"] and not _counts(r)]
    for r in wrong:
        lines.append(f"WRONG (left out): {'x'.join(map(str, r['shape']))} {r['layout']} {_dtype(r)} {r['layer']} "
                     f"{r['strategy']} {r['config']}: error {r.get('err')} against the eager layer")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the sweep, print the summary and write the records as JSON (after every measurement)."""
    from sciml_norm._functional import evonorm_b0, evonorm_s0
    from sciml_norm._kernels import evonorm as kern

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path)
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of measuring")
    parser.add_argument("--until", type=float, default=None, help="stop at this Unix time instead (reruns share it)")
    parser.add_argument("--resume", action="store_true", help="keep the JSON's records and go on (after a crash)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device, backend, name = script_device(args.device, "sweep_evonorm_persistent.py")
    torch.backends.cudnn.benchmark = True
    until = time.time() + args.budget if args.until is None else args.until
    base = defaults()
    meta = {"device": name, "torch": torch.__version__, "defaults": base, "until": until}
    journal = Journal(args.json, {"meta": meta}, key=KEY, group=("layer", "strategy", "config"), resume=args.resume)
    inputs: dict[tuple[Any, ...], Any] = {}
    todo = tasks(args.layouts)
    for task in todo:
        if time.time() > until:
            break
        stub = {**task, "shape": list(task["shape"])}
        if journal.skip(stub):  # measured, or a configuration that broke CUDA at another shape
            continue
        shape, layout, dtype = task["shape"], task["layout"], task["dtype"]
        key = (shape, layout, dtype)
        if key not in inputs:
            inputs.clear()  # one shape's tensors at a time
            if device.type == "cuda":
                torch.cuda.empty_cache()
            sized = shape if device.type == "cuda" else (2, shape[1] // 8, shape[2], shape[3])
            x, cotangent, params, running = evonorm_inputs(
                sized, device, DTYPES[dtype], channels_last=layout == "channels_last"
            )
            bn = nn.Sequential(nn.BatchNorm2d(sized[1]), nn.ReLU(inplace=True)).to(device).train()
            inputs[key] = (x, cotangent, params, running, bn, {})
        x, cotangent, params, running, bn, references = inputs[key]
        w, b, v = params
        if task["layer"] == "bn-relu":
            layer, weights = bn, list(bn.parameters())
        elif task["layer"] == "S0":
            layer, weights = (lambda t: evonorm_s0(t, w, b, v, groups=GROUPS, backend=backend)), params
        else:
            layer, weights = (lambda t: evonorm_b0(t, w, b, v, running, training=True, backend=backend)), params

        kern.STRATEGY = task["strategy"] or "auto"
        apply(task["config"], base)
        journal.begin(stub)
        try:
            if task["layer"] in ("S0", "B0") and task["layer"] not in references:  # the eager layer's outputs
                eager = {
                    "S0": lambda t: evonorm_s0(t, w, b, v, groups=GROUPS, backend="torch"),
                    "B0": lambda t: evonorm_b0(t, w, b, v, running.clone(), training=True, backend="torch"),
                }[task["layer"]]
                references[task["layer"]] = step_outputs(eager, params, x, cotangent)
            result = measure(layer, weights, x, iters=30, warmup=2)
            if task["layer"] in references:
                result["err"] = max_error(step_outputs(layer, weights, x, cotangent), references[task["layer"]])
        except Exception as error:  # e.g. a configuration Triton rejects (resources): recorded, the sweep goes on
            result = failure(error, device.type == "cuda")
        finally:
            apply({}, base)
            kern.STRATEGY = "auto"
        print(f"phase {task['phase']} {'x'.join(map(str, shape))} {layout} {dtype} {task['layer']} {task['strategy']} "
              f"{task['config']}: {result['ms']:.3f} ms, error {result.get('err', 0.0):.1e}", flush=True)  # fmt: skip
        journal.add({**stub, **result})  # exits (status 3) when CUDA broke during it
    records = journal.records
    meta["measured"], meta["planned"] = len(records), len(todo)
    journal.save()
    print(f"device: {name}; defaults {base}; {len(records)} of {len(todo)} measurements in the budget")
    print(summary(records))


if __name__ == "__main__":
    main()
