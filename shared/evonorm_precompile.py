"""Compile, in parallel and ahead of time, every EvoNorm kernel the GPU benchmark scripts will launch.

Usage (repository root; on the GPU machine before the benchmarks, or anywhere to check it)::

    python shared/evonorm_precompile.py [--jobs N] [--quick] [--verify] [--resources OUT.json] [--arch 90]

Triton compiles a kernel specialization on its first launch, in the launching process, one at a time: about a
second each, and the EvoNorm benchmarks (``bench_evonorm_gpu.py`` in NCHW and channels-last, float32 and bfloat16,
both strategies, then ``sweep_evonorm_persistent.py``'s variants of the launch constants) launch a few hundred of
them. On a GPU machine lent for minutes that is time taken from measuring. This script runs the same training steps
(``evonorm_s0`` / ``evonorm_b0`` with the Triton backend, forward and the gradients of x, w, b and v, at the same
shapes, dtypes, layouts, strategies and constants) in ``--jobs`` worker processes on the stand-in CUDA driver of
``triton_compile_check.py``: each launch compiles its kernel for sm_``--arch`` (ptxas included) into Triton's cache
directory (``TRITON_CACHE_DIR``) and returns without running. The benchmarks then find every kernel compiled: the
cache key depends on the source, the specialization, the target and the compiler versions, not on the driver.

``--verify`` then runs every step again in this process, through Triton's real launch path (the stand-in launcher
records the launch) and counts the cache entries that appear: any would be a kernel the precompilation missed
(exit status 1). ``--resources`` writes, for every step, the registers per thread, the stack frame (where ptxas puts
register spills) and the shared memory of each kernel it launched (``cuobjdump --dump-resource-usage`` on the
cubin), and prints them for the default constants: how many programs of a kernel an SM can hold. ``--quick`` takes
one small shape (for the test suite). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "sciml-norm" / "benchmarks"))

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
QUICK_SHAPE = (4, 64, 8, 8)


def tasks(quick: bool) -> list[dict[str, Any]]:
    """The training steps the GPU scripts run: the benchmark's, then the persistent sweep's variants.

    Each is a dict with ``layer`` ("S0" or "B0"), ``strategy`` ("auto", "split" or "persistent"), ``dtype``,
    ``layout``, ``shape`` and ``config`` (launch constants for ``sweep_evonorm_persistent.apply``).
    """
    if quick:
        steps = itertools.product(("S0", "B0"), ("split", "persistent"))
        return [
            dict(layer=layer, strategy=strategy, dtype="float32", layout="nchw", shape=QUICK_SHAPE, config={})
            for layer, strategy in steps
        ]
    import bench_evonorm_gpu as bench
    import sweep_evonorm_persistent as sweep

    out = []
    for text, dtype, layout, strategy, layer in itertools.product(
        bench.DEFAULT_SHAPES, DTYPES, ("nchw", "channels_last"), ("auto", "split"), ("S0", "B0")
    ):
        shape = bench._parse_shape(text)  # the benchmark's contenders (the profile's are among them)
        out.append({"layer": layer, "strategy": strategy, "dtype": dtype, "layout": layout, "shape": shape,
                    "config": {}})  # fmt: skip
    for task in sweep.tasks():
        if task["layer"] != "bn-relu":
            out.append({"layer": task["layer"], "strategy": task["strategy"], "dtype": task["dtype"],
                        "layout": task["layout"], "shape": task["shape"], "config": task["config"]})  # fmt: skip
    unique = {repr(sorted(t.items())): t for t in out}
    return list(unique.values())


def _cuda_plan(x: torch.Tensor) -> Any:
    """The CUDA launch plan of ``x`` although it lives on the CPU."""
    from sciml_norm._kernels import evonorm as kern

    return kern._plan_for(
        x.shape, x.stride(), True, kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C, kern._FINALIZE_TILE
    )


class LaunchNames(list[Any]):
    """A launch log that keeps only each launch's kernel name, not its arguments (the tensors of every step of the
    benchmarks, held to the end, would need about 25 GB)."""

    def append(self, call: Any) -> None:
        super().append(call[0])


def prepare(arch: int, launches: list[Any] | None = None) -> None:
    """Stand-in driver (compile-only without ``launches``), CUDA plans for CPU tensors, Triton for them.

    The public functions are called as the benchmarks call them; only their backend resolution, which refuses
    Triton on CPU tensors outside the interpreter, is told to answer "triton".
    """
    from triton_compile_check import install_fake_driver

    install_fake_driver(arch, launches)
    from sciml_norm import _functional
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern

    kern._plan = _cuda_plan
    _functional._resolve = lambda backend, *tensors: "triton"
    _launch.LAUNCH = "triton"  # compile-only launches must reach JITFunction.run every time


def run_task(task: dict[str, Any]) -> None:
    """One training step of ``task`` with the Triton backend (launches compile, or are recorded)."""
    import sweep_evonorm_persistent as sweep
    from sciml_norm._functional import evonorm_b0, evonorm_s0
    from sciml_norm._kernels import evonorm as kern

    shape, c = task["shape"], task["shape"][1]
    x = torch.empty(shape, dtype=DTYPES[task["dtype"]])
    if task["layout"] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.normal_()
    x.requires_grad_(True)
    w, b, v = (torch.full((c,), f, requires_grad=True) for f in (1.0, 0.1, 1.0))
    running = torch.ones(c)
    base = sweep.defaults()
    kern.STRATEGY = task["strategy"]
    sweep.apply(task["config"], base)
    try:
        if task["layer"] == "S0":
            y = evonorm_s0(x, w, b, v, groups=sweep.GROUPS, backend="triton")
        else:
            y = evonorm_b0(x, w, b, v, running, training=True, backend="triton")
        torch.autograd.grad(y, (x, w, b, v), torch.ones_like(y))
    finally:
        sweep.apply({}, base)
        kern.STRATEGY = "auto"


_COMPILED: list[tuple[str, dict[str, Any], Any]] = []  # (kernel, constexprs and num_warps, CompiledKernel)


def _worker_init(arch: int) -> None:
    from triton.runtime.jit import JITFunction

    torch.set_num_threads(1)
    prepare(arch)
    compile_only = JITFunction.run

    def keep(self: Any, *args: Any, **kwargs: Any) -> Any:
        kernel = compile_only(self, *args, **kwargs)
        meta = {k: v for k, v in kwargs.items() if k.isupper() or k == "num_warps"}
        _COMPILED.append((self.fn.__name__, meta, kernel))
        return kernel

    JITFunction.run = keep  # pyright: ignore[reportAttributeAccessIssue]


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers per thread and local memory (stack frame, which holds register spills) per thread of a cubin."""
    import re
    import subprocess
    import tempfile

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.is_file():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", handle.name], capture_output=True, text=True).stdout
    found = {key: re.search(rf"{key}:(\d+)", text) for key in ("REG", "STACK", "SHARED")}
    return {key.lower(): int(match.group(1)) for key, match in found.items() if match}


def _worker(task: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    _COMPILED.clear()
    try:
        run_task(task)
    except Exception:
        return f"{task}\n{traceback.format_exc(limit=4)}", []
    kernels = []
    for name, meta, kernel in _COMPILED:
        asm = getattr(kernel, "asm", {})
        usage = resource_usage(asm["cubin"]) if "cubin" in asm else {}
        kernels.append({"kernel": name.removesuffix("_kernel"), **meta, **usage})
    return None, kernels


def report(todo: list[dict[str, Any]], usage: list[list[dict[str, Any]]]) -> str:
    """Registers and stack of the kernels the default constants launch at the persistent sizes; spill count."""
    lines = []
    for task, kernels in zip(todo, usage, strict=True):
        if task["config"] or task["strategy"] != "auto":
            continue
        for k in kernels:
            if "persistent" in k["kernel"]:
                blocks = " ".join(f"{key}={value}" for key, value in k.items() if key.startswith("BLOCK"))
                lines.append(f"  {task['layer']} {'x'.join(map(str, task['shape']))} {task['dtype']} {task['layout']}"
                             f" {k['kernel']}: {k.get('reg', '?')} registers, {k.get('stack', '?')} B stack"
                             f" ({blocks}, {k.get('num_warps', 4)} warps)")  # fmt: skip
    stacked = sum(1 for kernels in usage for k in kernels if k.get("stack", 0) > 8)
    total = sum(len(kernels) for kernels in usage)
    lines.append(f"{stacked} of {total} launches use more than 8 bytes of stack (register spills)")
    return "\n".join(lines)


def cache_entries() -> set[str]:
    """The entries of Triton's cache directory (one per compiled kernel, launcher or utility)."""
    try:
        from triton import knobs

        root = Path(knobs.cache.dir)
    except (ImportError, AttributeError):  # Triton before 3.4: the environment variable or the default
        root = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def main(argv: list[str] | None = None) -> int:
    """Compile every task in parallel, optionally verify that the real launch path finds them all; exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--resources", type=Path, default=None, help="write registers and stack per kernel (JSON)")
    args = parser.parse_args(argv)
    todo = tasks(args.quick)
    begin = time.perf_counter()
    before = cache_entries()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: the stand-in driver is theirs alone
    failures = []
    usage: list[list[dict[str, Any]]] = []
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, args.jobs), mp_context=context, initializer=_worker_init, initargs=(args.arch,)
    ) as pool:
        for error, kernels in pool.map(_worker, todo):
            usage.append(kernels)
            if error is not None:
                failures.append(error)
                print(f"FAILED {error}")
    if args.resources is not None:
        import json

        records = [{**task, "kernels": kernels} for task, kernels in zip(todo, usage, strict=True)]
        args.resources.write_text(json.dumps(records, indent=1))
        print(report(todo, usage))
    added = len(cache_entries() - before)
    print(f"{len(todo)} training steps compiled for sm_{args.arch} with {args.jobs} processes in "
          f"{time.perf_counter() - begin:.1f} s: {added} new cache entries; {len(failures)} failed")  # fmt: skip
    if args.verify and not failures:
        launches = LaunchNames()
        prepare(args.arch, launches)
        before = cache_entries()
        for task in todo:
            run_task(task)
        missed = cache_entries() - before
        print(f"verify: {len(todo)} steps through Triton's launch path, {len(launches)} launches, "
              f"{len(missed)} kernels compiled anew (0 expected)")  # fmt: skip
        if missed:
            failures.append("missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
