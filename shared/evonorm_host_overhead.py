"""Host-side cost of one fused EvoNorm training step, per strategy, measured on a machine without a GPU.

Usage (repository root)::

    uv run python shared/evonorm_host_overhead.py [--shape 2x2048x7x7] [--steps 300]

The stand-in CUDA driver of ``triton_compile_check.py`` compiles the kernels once for sm_90 and replaces the C
launcher by a Python callable that does nothing: every launch goes through the whole Python launch path, Triton's
(``JITFunction.run``: argument binding, specialization key, cache lookup) or the direct one of
``sciml_norm._kernels._launch`` (cache key, the compiled kernel's launcher), up to the C launcher. One step is the
layer's forward and ``torch.autograd.grad`` for the input and the three parameters, on CPU tensors (allocations are
host work too). What this leaves out is the C launcher itself and ``cuLaunchKernel`` (a few microseconds a launch),
so it is a lower bound on the host time of a real step; the GPU time is not modelled at all.

For scale, the same process times BatchNorm2d+ReLU's training step on a tiny CPU input (2x64x1x2: its dispatch and
autograd cost, next to nothing computed). The contenders are timed in interleaved rounds; the median is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from triton_compile_check import install_fake_driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shape", default="2x2048x7x7", help="N x C x H x W")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    shape = tuple(int(p) for p in args.shape.split("x"))
    install_fake_driver(90, deque(maxlen=1))
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern

    plan_for = kern._plan_for
    kern._plan = lambda x: plan_for(  # CUDA launch sizes for CPU tensors
        x.shape, x.stride(), True, kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C, kern._FINALIZE_TILE
    )
    x = torch.randn(shape, requires_grad=True)
    c = shape[1]
    params = [torch.full((c,), f, requires_grad=True) for f in (1.0, 0.0, 1.0)]
    running = torch.ones(c)
    cotangent = torch.randn(shape)
    inputs = [x, *params]

    def s0() -> None:
        y = kern.evonorm_s0_fused(x, *params, args.groups, 1e-5, "triton")
        torch.autograd.grad(y, inputs, cotangent)

    def b0() -> None:
        y = kern.evonorm_b0_fused(x, *params, running, True, 0.1, 1e-3, True, "triton")
        torch.autograd.grad(y, inputs, cotangent)

    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(64), torch.nn.ReLU(inplace=True))
    x_bn = torch.randn(2, 64, 1, 2, requires_grad=True)
    g_bn = torch.randn(2, 64, 1, 2)
    bn_inputs = [x_bn, *bn.parameters()]

    def bn_relu() -> None:
        torch.autograd.grad(bn(x_bn), bn_inputs, g_bn)

    contenders = {
        "S0 split, Triton launch": (s0, "split", "triton"),
        "S0 split, direct launch": (s0, "split", "direct"),
        "S0 persistent, Triton launch": (s0, "persistent", "triton"),
        "S0 persistent, direct launch": (s0, "persistent", "direct"),
        "B0 split, Triton launch": (b0, "split", "triton"),
        "B0 split, direct launch": (b0, "split", "direct"),
        "B0 persistent, Triton launch": (b0, "persistent", "triton"),
        "B0 persistent, direct launch": (b0, "persistent", "direct"),
        "BatchNorm2d+ReLU (CPU, 2x64x1x2)": (bn_relu, "auto", "direct"),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for step, strategy, launch in contenders.values():  # compile and warm up
        kern.STRATEGY, _launch.LAUNCH = strategy, launch
        for _ in range(20):
            step()
    for _ in range(args.rounds):
        for name, (step, strategy, launch) in contenders.items():
            kern.STRATEGY, _launch.LAUNCH = strategy, launch
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e6)
    reference = statistics.median(times["BatchNorm2d+ReLU (CPU, 2x64x1x2)"])
    print(f"host time of one training step (forward + backward), {args.shape}, median of {args.rounds} rounds of "
          f"{args.steps} steps")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:>32}: {median:7.1f} us  ({median / reference:4.2f}x BatchNorm2d+ReLU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
