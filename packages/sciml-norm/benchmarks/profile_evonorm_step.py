"""Where one fused EvoNorm training step spends its time on a GPU: the host, the GPU, or both.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH``)::

    python packages/sciml-norm/benchmarks/profile_evonorm_step.py OUT.json [--steps 20] [--device cuda]

For ResNet-50's 28x28, 14x14 and 7x7 stage shapes (batch 64, float32, NCHW) and each contender (ours with direct
launches, ours through Triton's ``JITFunction.run``, the split passes, BatchNorm2d+ReLU) it measures one training
step (forward, then the gradients of the input and the parameters) three ways:

* ``host_us``: the time the Python thread takes to issue ``--steps`` steps, without waiting for the GPU (the
  launch queue does not fill at these step counts), per step;
* ``step_us``: the time per step of ``--steps`` steps back to back, from CUDA events (what a training loop sees:
  the larger of the host and the GPU time when they overlap);
* ``gpu_us`` and ``kernels``: the summed duration of the GPU kernels of one step and their number, from
  ``torch.profiler`` (CUPTI) over 5 steps; ``kernel_us``: the time per step of each kernel, by name.

A step is host-bound when ``step_us`` is close to ``host_us`` and well above ``gpu_us``. It prints a table with the
ratios to BatchNorm2d+ReLU and writes the records as JSON (after every measurement, so that a run cut short keeps
them). ``--device cpu`` runs the same code on the CPU (ours
through the PyTorch backend), as a smoke test of the script itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_evonorm_gpu import contenders, evonorm_inputs, script_device
from torch import Tensor

SHAPES = ((64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7))


def gpu_time(step: Callable[[], None], device: torch.device, steps: int = 5) -> tuple[float, float, dict[str, float]]:
    """Summed kernel time per step (microseconds), kernels per step and per-kernel times, from torch.profiler.

    The per-kernel times are microseconds per step by kernel name, longest first.
    """
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    wanted = DeviceType.CUDA if device.type == "cuda" else DeviceType.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    kernels = [e for e in prof.events() or [] if e.device_type == wanted]
    total = sum(e.time_range.end - e.time_range.start for e in kernels)
    by_name: dict[str, float] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + (e.time_range.end - e.time_range.start) / steps
    ranked = dict(sorted(by_name.items(), key=lambda item: -item[1]))
    return total / steps, len(kernels) / steps, ranked


def measure(step: Callable[[], None], device: torch.device, steps: int, rounds: int = 5) -> dict[str, Any]:
    """host_us, step_us (medians over ``rounds``), gpu_us, kernels and kernel_us (per kernel) of one step."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(5):
        step()
    sync()
    host, through = [], []
    for _ in range(rounds):
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        host.append((time.perf_counter() - begin) / steps * 1e6)
        sync()
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            stop.record()
            sync()
            through.append(start.elapsed_time(stop) / steps * 1e3)
        else:
            through.append(host[-1])
    try:
        gpu_us, kernels, by_kernel = gpu_time(step, device)
    except Exception as error:  # the profiler is a diagnostic: keep the timings if it fails
        print(f"  profiler failed: {error!r}")
        gpu_us, kernels, by_kernel = float("nan"), float("nan"), {}
    return {
        "host_us": statistics.median(host),
        "step_us": statistics.median(through),
        "gpu_us": gpu_us,
        "kernels": kernels,
        "kernel_us": by_kernel,
    }


def main(argv: list[str] | None = None) -> None:
    """Measure, print the table, write the JSON."""
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device, backend, device_name = script_device(args.device, "profile_evonorm_step.py")
    shapes = SHAPES if device.type == "cuda" else ((2, 64, 7, 7),)
    records: list[dict[str, Any]] = []
    meta = {"device": device_name, "torch": torch.__version__}
    print(f"{'shape':>16} {'layer':>9} {'host us':>8} {'step us':>8} {'GPU us':>8} {'kernels':>7} {'step/BN':>7}")
    for shape in shapes:
        x, cotangent, _, _ = evonorm_inputs(shape, device)
        rows = []
        layers = contenders(shape[1], device, backend)
        for name, (layer, params, strategy, launch) in layers.items():
            if name.startswith("timm"):  # timm's layers are host-bound far above the rest (bench_evonorm_gpu.py)
                continue
            kern.STRATEGY, _launch.LAUNCH = strategy, launch
            inputs = [x, *params]

            def step(
                layer: Callable[[Tensor], Tensor] = layer,
                inputs: list[Tensor] = inputs,
                x: Tensor = x,
                g: Tensor = cotangent,
            ) -> None:
                torch.autograd.grad(layer(x), inputs, g)

            result = measure(step, device, args.steps)
            rows.append({"shape": list(shape), "layer": name, "strategy": strategy, "launch": launch, **result})
            args.json.write_text(json.dumps({"meta": meta, "records": records + rows}, indent=1))
        kern.STRATEGY, _launch.LAUNCH = "auto", "direct"
        bn = next(r for r in rows if r["layer"] == "bn-relu")
        for r in rows:
            r["step_over_bn"] = r["step_us"] / bn["step_us"]
            print(f"{'x'.join(map(str, shape)):>16} {r['layer']:>9} {r['host_us']:8.1f} {r['step_us']:8.1f} "
                  f"{r['gpu_us']:8.1f} {r['kernels']:7.1f} {r['step_over_bn']:7.2f}")  # fmt: skip
        records.extend(rows)
        args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1))


if __name__ == "__main__":
    main()
