"""Check that sciml-norm's direct kernel launches hand the C launcher exactly what Triton's own launch path does.

Usage (repository root; no GPU needed)::

    uv run python shared/triton_launch_check.py [--quick]

``sciml_norm._kernels._launch.Launcher`` reuses, after the first call with a given key, the launcher of the
compiled kernel Triton returned for that call. This script runs the fused EvoNorm training and evaluation steps
on the stand-in CUDA driver of ``triton_compile_check.py`` (kernels compiled for sm_90 by ptxas; the C launcher
replaced by one that records its arguments), three times per case:

1. through ``JITFunction.run`` on every launch (``LAUNCH = "triton"``);
2. with ``LAUNCH = "direct"``, the launcher caches holding the entries of the cases before (the same shapes
   aligned, other layouts): the launches this case adds miss, go through ``JITFunction.run`` and fill the cache;
3. the same again (every launch must now be direct: ``JITFunction.run`` is not called at all).

The recorded launches of the three runs must agree one by one: the kernel, the grid, the stream, the compiled
binary (so the specialization Triton would choose), the launch metadata and hooks, and every argument (tensors by
dtype, shape, strides and address modulo 16; other values exactly). The cases cover both strategies, NCHW and
channels-last, float32 and bfloat16, and an input whose address is not 16-byte aligned after an aligned one (that
input must reach a different specialization, as it does through Triton). Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from triton_compile_check import install_fake_driver


def summarize(call: tuple[Any, ...]) -> tuple[Any, ...]:
    """One recorded launch with each tensor replaced by what the launch depends on."""

    def one(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", value.dtype, tuple(value.shape), value.stride(), value.data_ptr() % 16)
        if type(value).__name__ == "LazyDict":  # launch metadata for the hooks, a new object on every launch
            return ("LazyDict", tuple(sorted(value.data.items())), len(value.extras))
        return (type(value).__name__, value)

    return tuple(one(value) for value in call)


def make_case(kern: Any, op: str, strategy: str, dtype: torch.dtype, layout: str, shape: tuple[int, ...]) -> Any:
    """A closure running one training (and, for B0, evaluation) step; ``layout`` "misaligned" offsets x by 1."""
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n * c * h * w + 1, generator=gen).to(dtype)
    if layout == "misaligned":
        x = base[1:].view(shape)
    else:
        x = base[:-1].view(shape)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach().requires_grad_()
    params = [torch.full((c,), f, requires_grad=True) for f in (1.0, 0.1, 0.5)]
    running = torch.ones(c)
    cotangent = torch.randn(shape, generator=gen).to(dtype)

    def step() -> None:
        kern.STRATEGY = strategy
        if op == "S0":
            y = kern.evonorm_s0_fused(x, *params, 8, 1e-5, "triton")
            torch.autograd.grad(y, [x, *params], cotangent)
        else:
            for training in (True, False):
                y = kern.evonorm_b0_fused(x, *params, running, training, 0.1, 1e-3, True, "triton")
                torch.autograd.grad(y, [x, *params], cotangent)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="float32 only, one shape")
    args = parser.parse_args(argv)
    launches: list[tuple[Any, ...]] = []
    install_fake_driver(90, launches)
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern
    from triton.runtime.jit import JITFunction

    if not _launch._checked_triton():
        import triton

        print(
            f"Triton {triton.__version__} is outside sciml_norm._kernels._launch.CHECKED_TRITON, so every launch goes"
            " through JITFunction.run; to check this version, widen CHECKED_TRITON and run this again"
        )
        return 1
    plan_for = kern._plan_for
    kern._plan = lambda x: plan_for(  # CUDA launch sizes for CPU tensors
        x.shape, x.stride(), True, kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C, kern._FINALIZE_TILE
    )
    jit_calls = [0]
    run = JITFunction.run

    def counted(self: Any, *a: Any, **k: Any) -> Any:
        jit_calls[0] += 1
        return run(self, *a, **k)

    JITFunction.run = counted  # pyright: ignore[reportAttributeAccessIssue]

    dtypes = (torch.float32,) if args.quick else (torch.float32, torch.bfloat16)
    shapes = [(4, 64, 8, 8)] if args.quick else [(4, 64, 8, 8), (4, 64, 5, 7), (16, 256, 7, 7)]
    cases: list[tuple[str, Callable[[], None]]] = []
    for op, strategy, dtype, layout, shape in itertools.product(
        ("S0", "B0"), ("split", "persistent"), dtypes, ("nchw", "channels_last", "misaligned"), shapes
    ):
        name = f"{op} {strategy} {str(dtype).removeprefix('torch.')} {layout} {'x'.join(map(str, shape))}"
        cases.append((name, make_case(kern, op, strategy, dtype, layout, shape)))

    def record(step: Callable[[], None]) -> tuple[list[tuple[Any, ...]], int]:
        launches.clear()
        before = jit_calls[0]
        step()
        return [summarize(call) for call in launches], jit_calls[0] - before

    failures = 0
    total = 0
    binaries: dict[str, set[Any]] = {}  # the compiled binaries each case launched, by case name
    for name, step in cases:
        _launch.LAUNCH = "triton"
        through_triton, _ = record(step)
        _launch.LAUNCH = "direct"  # the caches keep the entries of the cases before (aligned inputs, other layouts)
        filling, _ = record(step)
        direct, slow = record(step)
        problems = []
        if not through_triton:
            problems.append("no launch recorded")
        if filling != through_triton:
            problems.append("the cache-filling run differs from Triton's launches")
        if direct != through_triton:
            problems.append("the direct launches differ from Triton's")
        if slow:
            problems.append(f"{slow} launches still went through JITFunction.run")
        total += len(direct)
        binaries[name] = {call[5] for call in direct}
        if problems:
            failures += 1
            print(f"FAILED {name}: {'; '.join(problems)}")
            for a, b in itertools.zip_longest(through_triton, direct):
                if a != b:
                    print(f"  triton: {a}\n  direct: {b}")
                    break
    # The misaligned input must reach binaries of its own somewhere (else the alignment part of the key went untested).
    own = sum(
        bool(binaries[name] - binaries[name.replace("misaligned", "nchw")]) for name in binaries if "misaligned" in name
    )
    if not own:
        failures += 1
        print("FAILED: no misaligned case launched a binary its aligned case did not (the check would not notice)")
    print(f"{len(cases)} cases, {total} direct launches compared with Triton's ({own} misaligned cases with binaries "
          f"of their own); {failures} failed")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
