"""Compile the Triton kernels of sciml-norm, sciml-equivariant and sciml-ot for a CUDA GPU on a machine that has none.

Usage (repository root; any machine, no GPU or driver needed: Triton's wheel carries ptxas)::

    uv run python shared/triton_compile_check.py [--arch 90] [--quick]
    uv run python shared/triton_compile_check.py --ptx-digest after.json [--against before.json] [--quick]
    uv run python shared/triton_compile_check.py --row-vectors


A stand-in Triton driver reports a CUDA target of the given compute capability (default 90, H100/H200), and every
kernel launch made by the packages' real code paths becomes ``JITFunction.run(..., warmup=True)``: Triton compiles
the kernel all the way (TTIR, TTGIR, LLVM IR, PTX, then a cubin through ptxas) and returns without launching.
The outputs are never computed, so this checks what the Triton interpreter cannot: that each specialization
(dtype, memory layout, block sizes chosen for CUDA) is accepted by the CUDA compiler (types of scalars and
intrinsics, shared-memory and register limits). Numerics stay the job of the interpreter parity tests and of the
GPU tests. Exit status 1 when any compilation fails.

``--ptx-digest OUT.json`` also writes, for every launch of the cases in order, the case, the kernel and a digest
of its PTX without debug information (``.loc``/``.file`` lines, the DWARF sections, and the ``$L__tmp`` labels that
inlining a ``@triton.jit`` helper adds). ``--against OLD.json`` compares the digests with an earlier run's, launch by
launch, and exits with status 1 on any difference: run it before and after a change to the kernels' source that
should not change their code (moving code into a helper, say) with the same Triton version.

``--row-vectors`` instead compiles the EvoNorm kernels of both strategies for NCHW input at ResNet-50's 14x14 stage
(64x1024x14x14, float32 and bfloat16) with the row-alignment hints (``_STRIDE_HINTS``) on and off, and counts the
global loads and stores in their PTX by width. Exit status 1 unless, with the hints, every tile kernel reads in vectors
(``ld.global.v4.b32`` in float32, ``ld.global.v2.b32`` in bfloat16) and issues fewer global memory instructions
than without them, and unless blocks of one channel compile with the hints too.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Callable, MutableSequence
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)

import torch


def install_fake_driver(arch: int, launches: MutableSequence[tuple[Any, ...]] | None = None) -> list[tuple[str, int]]:
    """Point Triton at a stand-in CUDA driver; returns the log of compilations (kernel name, shared memory).

    Without ``launches`` every launch becomes a compilation (``JITFunction.run(..., warmup=True)``). With a list,
    launches go all the way to a stand-in C launcher that appends to it, for each call, what the real one would receive:
    the kernel's name, the grid, the stream, the handle of the compiled binary (one per distinct cubin), the launch
    metadata and hooks, and the kernel arguments (``triton_launch_check.py`` compares these between launch paths).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    target = GPUTarget("cuda", arch, 32)
    old_binary_api = tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 4)
    log: list[tuple[str, int]] = []

    class StandInLauncher:
        def __init__(self, src: Any, metadata: Any) -> None:
            self.name = getattr(metadata, "name", "?")

        def __call__(self, *call: Any) -> None:
            if launches is not None:
                launches.append((self.name, *call))

    class StandInUtils:
        def load_binary(self, name: str, kernel: bytes, shared: int, device: int) -> tuple[Any, ...]:
            if launches is not None:  # (compile-only launches log in compile_only)
                log.append((name, int(shared)))
            handle = f"{name}:{hashlib.sha256(kernel).hexdigest()[:16]}"
            if old_binary_api:  # Triton 3.2 and 3.3: module, function, registers, spills
                return object(), handle, 0, 0
            return object(), handle, 0, 0, 1024  # (3.4 on) module, function, registers, spills, max threads

        def unload_module(self, module: Any) -> None:
            pass

        def get_device_properties(self, device: int) -> dict[str, int]:
            return {"max_shared_mem": 232448, "multiprocessor_count": 132}

    class StandInDriver:
        launcher_cls = StandInLauncher
        utils = StandInUtils()

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_current_target(self) -> Any:
            return target

        def get_active_torch_device(self) -> torch.device:
            return torch.device("cpu")

        def get_device_interface(self) -> Any:
            return torch.cuda

        def is_active(self) -> bool:
            return True

    driver.set_active(StandInDriver())  # pyright: ignore[reportArgumentType]
    if launches is not None:
        return log
    run = JITFunction.run

    def compile_only(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        log.append((self.fn.__name__, int(getattr(kernel.metadata, "shared", 0))))
        return kernel

    JITFunction.run = compile_only  # pyright: ignore[reportAttributeAccessIssue]
    return log


def evonorm_cases(quick: bool) -> list[tuple[str, Callable[[], object]]]:
    """Forward and backward of the fused S0/B0 (training and evaluation): both strategies (the persistent one also
    with B0's loops pipelined), every dtype and layout."""
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern

    _launch.LAUNCH = "triton"  # every launch through JITFunction.run, so that each one is logged as compiled

    def cuda_plan(x: torch.Tensor) -> Any:  # the CUDA tile sizes, although the tensors live on the CPU
        return kern._plan_for(
            x.shape, x.stride(), True, kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C, kern._FINALIZE_TILE
        )

    def case(strategy: str, dtype: torch.dtype, channels_last: bool, shape: tuple[int, ...]) -> None:
        # "pipelined": the persistent kernels with B0's loops software-pipelined (3 stages)
        kern.STRATEGY = "persistent" if strategy == "pipelined" else strategy
        kern._PERSISTENT_STAGES = 3 if strategy == "pipelined" else 1
        x = torch.randn(shape).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        c = shape[1]
        groups = 8 if c % 8 == 0 else 1
        w, b, v = (torch.full((c,), f) for f in (1.0, 0.1, 1.0))
        running = torch.ones(c)
        g = torch.randn_like(x)
        _, mean, rstd = kern.s0_forward(x, w, b, v, groups, 1e-5, backend="triton")
        kern.s0_backward(g, x, w, v, mean, rstd, groups, backend="triton")
        if kern.STRATEGY == "persistent" and not kern._loops_flatten():
            kern.STRATEGY = "auto"  # Triton 3.2: B0's persistent kernels need tl.range(flatten=...); auto splits
        for training in (True, False):
            momentum = 0.1 if training else None
            _, im, istd, bm, left, _ = kern.b0_forward(x, w, b, v, running, training, 1e-3, "triton", momentum=momentum)
            kern.b0_backward(g, x, w, v, im, istd, bm, left, training, backend="triton")

    kern._plan = cuda_plan
    shapes = [(4, 64, 7, 7)] if quick else [(4, 64, 7, 7), (64, 256, 56, 56), (8, 96, 5, 3), (64, 2048, 7, 7)]
    dtypes = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
    return [
        (
            f"evonorm {strategy} {dtype} {'channels_last' if cl else 'nchw'} {shape}",
            functools.partial(case, strategy, dtype, cl, shape),
        )
        for strategy, dtype, cl, shape in itertools.product(
            ("split", "persistent", "pipelined"), dtypes, (False, True), shapes
        )
    ]


def gaunt_cases(quick: bool) -> list[tuple[str, Callable[[], object]]]:
    """The fused grid Gaunt kernel at several degrees, float32 (IEEE and TF32) and half precisions."""
    from sciml_equivariant._gaunt import GauntPlan
    from sciml_equivariant._kernels import gaunt_grid

    gaunt_grid._targets_cuda = lambda x: True  # the CUDA launch configuration, although the tensors live on the CPU
    cases = []
    for degree in (2, 6) if quick else (1, 2, 4, 6, 8, 10):
        for dtype, tf32 in (
            (torch.float32, False),
            (torch.float32, True),
            (torch.bfloat16, False),
            (torch.float16, False),
        ):

            def case(degree: int = degree, dtype: torch.dtype = dtype, tf32: bool = tf32) -> None:
                plan = GauntPlan(degree, degree, degree, backend="grid", dtype=torch.float32)
                y1t, y2t, yout = plan._tensors
                k = (degree + 1) ** 2
                x, y = torch.randn(1024, k).to(dtype), torch.randn(1024, k).to(dtype)
                gaunt_grid.launch(x, y, y1t.T.contiguous(), y2t.T.contiguous(), yout.contiguous(), allow_tf32=tf32)

            cases.append((f"gaunt L={degree} {dtype} tf32={tf32}", case))
    return cases


def ot_cases(quick: bool) -> list[tuple[str, Callable[[], object]]]:
    """The online log-sum-exp softmin of sciml-ot (both costs, every floating dtype)."""
    from sciml_ot._kernels import lse

    lse._targets_cuda = lambda x: True  # the CUDA launch configuration, although the tensors live on the CPU
    cases = []
    dtypes = (torch.float32, torch.float64) if quick else (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    for dtype, cost in itertools.product(dtypes, ("sqeuclidean", "euclidean")):

        def case(dtype: torch.dtype = dtype, cost: str = cost) -> None:
            x, y, h = torch.randn(2, 100, 3).to(dtype), torch.randn(2, 70, 3).to(dtype), torch.randn(2, 70).to(dtype)
            lse.launch(x, y, h, 0.1, cost)

        cases.append((f"ot softmin {dtype} {cost}", case))
    return cases


def global_accesses(ptx: str) -> Counter[str]:
    """Global loads and stores in ``ptx`` by instruction form (``ld.global.v4.b32``, ``st.global.b16``, ...)."""
    return Counter(re.findall(r"\b(?:ld|st)\.global(?:\.[a-z0-9]+)*", ptx))


def ptx_digest(ptx: str) -> str:
    """SHA-256 of ``ptx``'s code: without debug information (``.loc`` and ``.file`` lines, comments, the DWARF
    sections) and without the ``$L__tmp`` labels that inlining a ``@triton.jit`` helper adds and the debug
    information refers to; the instructions, registers, labels of branches and directives stay."""
    code = re.split(r"^\s*\.section\s+\.debug", ptx, maxsplit=1, flags=re.MULTILINE)[0]
    lines = []
    for line in code.splitlines():
        text = line.strip()
        if not text or text.startswith((".loc", ".file", "//")) or re.fullmatch(r"\$L__tmp\d+:", text):
            continue
        lines.append(text)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def compare_digests(new: dict[str, Any], old: dict[str, Any]) -> int:
    """Prints how two ``--ptx-digest`` runs differ, launch by launch; returns the number of differences."""
    if (new["triton"], new["arch"]) != (old["triton"], old["arch"]):
        print(f"note: Triton {old['triton']} sm_{old['arch']} before, {new['triton']} sm_{new['arch']} now")
    before, after = old["launches"], new["launches"]
    differences = [(i, a, b) for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    for index, a, b in differences[:20]:
        what = f"{a[0]} / {a[1]}" if a[:2] == b[:2] else f"{a[0]} / {a[1]} before, {b[0]} / {b[1]} now"
        print(f"DIFFERS launch {index}: {what}")
    if len(before) != len(after):
        print(f"DIFFERS: {len(before)} launches before, {len(after)} now")
    count = len(differences) + (len(before) != len(after))
    print(f"{min(len(before), len(after))} launches compared: {len(differences)} with other PTX")
    return count


FINALIZE_KERNELS = ("s0_group_kernel", "s0_grad_kernel", "b0_batch_kernel", "b0_grad_kernel")


def row_vectors(arch: int) -> int:
    """The ``--row-vectors`` check (module doc); prints a line per kernel and returns the exit status."""
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern
    from triton.runtime.jit import JITFunction

    install_fake_driver(arch)
    compile_only = JITFunction.run
    compiled: list[tuple[str, Any]] = []

    def keep(self: Any, *args: Any, **kwargs: Any) -> Any:
        kernel = compile_only(self, *args, **kwargs)
        compiled.append((self.fn.__name__, kernel))
        return kernel

    JITFunction.run = keep  # pyright: ignore[reportAttributeAccessIssue]
    _launch.LAUNCH = "triton"
    shape = (64, 1024, 14, 14)
    kern._plan = lambda x: kern._plan_for(  # the CUDA tile sizes, although the tensors live on the CPU
        x.shape, x.stride(), True, kern._TILE["cuda"], kern._MAX_BLOCK_HW, kern._MAX_BLOCK_C, kern._FINALIZE_TILE
    )

    def b0_strategy(strategy: str) -> str:  # Triton 3.2: B0's persistent kernels need tl.range(flatten=...)
        return "auto" if strategy == "persistent" and not kern._loops_flatten() else strategy

    failures = 0
    for strategy, dtype in itertools.product(("persistent", "split"), (torch.float32, torch.bfloat16)):
        kern.STRATEGY = strategy
        vector = "ld.global.v4.b32" if dtype == torch.float32 else "ld.global.v2.b32"
        counts: dict[bool, dict[str, Counter[str]]] = {}
        for hints in (True, False):
            kern._STRIDE_HINTS = hints
            compiled.clear()
            x = torch.randn(shape).to(dtype)
            c = shape[1]
            w, b, v = (torch.full((c,), f) for f in (1.0, 0.1, 1.0))
            g = torch.randn_like(x)
            _, mean, rstd = kern.s0_forward(x, w, b, v, 32, 1e-5, backend="triton")
            kern.s0_backward(g, x, w, v, mean, rstd, 32, backend="triton")
            kern.STRATEGY = b0_strategy(strategy)
            _, im, istd, bm, left, _ = kern.b0_forward(x, w, b, v, torch.ones(c), True, 1e-3, "triton", momentum=0.1)
            kern.b0_backward(g, x, w, v, im, istd, bm, left, True, backend="triton")
            kern.STRATEGY = strategy
            counts[hints] = {name: global_accesses(kernel.asm["ptx"]) for name, kernel in compiled}
        for name, on in counts[True].items():
            if name in FINALIZE_KERNELS:
                continue  # they read (N, C) statistics, not the tiles
            off = counts[False][name]
            ok = on[vector] > 0 and sum(on.values()) < sum(off.values())
            failures += not ok
            print(f"{'ok' if ok else 'FAILED'} {strategy} {name} {dtype} {'x'.join(map(str, shape))} NCHW: "
                  f"global memory instructions {sum(on.values())} with the hints, {sum(off.values())} without; with: "
                  f"{dict(sorted(on.items()))}; without: {dict(sorted(off.items()))}")  # fmt: skip
    # blocks of one channel (B0 with 1024 programs of 1024 elements; S0 with 256-element group tiles), with the
    # hints: tl.multiple_of on such offsets crashed Triton 3.9's coalescing pass, rounding the strides does not
    kern._STRIDE_HINTS = True
    kern._PERSISTENT_TILE["cuda"], kern._PERSISTENT_PROGRAMS, kern._PERSISTENT_WARPS = 1024, 1024, 4
    kern._TILE["cuda"] = 256
    c = shape[1]
    for dtype in (torch.float32, torch.bfloat16):
        try:
            kern.STRATEGY = "persistent"
            x = torch.randn(shape).to(dtype)
            w, b, v = (torch.full((c,), f) for f in (1.0, 0.1, 1.0))
            _, mean, rstd = kern.s0_forward(x, w, b, v, 32, 1e-5, backend="triton")
            kern.s0_backward(x, x, w, v, mean, rstd, 32, backend="triton")
            kern.STRATEGY = b0_strategy("persistent")
            assert kern._b0_persistent(kern._plan(x)).block_c == kern._s0_persistent(kern._plan(x), 32).block_c == 1
            _, im, istd, bm, left, _ = kern.b0_forward(x, w, b, v, torch.ones(c), True, 1e-3, "triton", momentum=0.1)
            kern.b0_backward(x, x, w, v, im, istd, bm, left, True, backend="triton")
            print(f"ok one-channel blocks {dtype} {'x'.join(map(str, shape))} NCHW compile with the hints")
        except Exception:
            failures += 1
            print(f"FAILED one-channel blocks {dtype} NCHW\n{traceback.format_exc(limit=3)}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Compile every case; print one line per failure and a summary; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and degrees")
    parser.add_argument("--row-vectors", action="store_true", help="check the row-alignment hints' vector loads")
    parser.add_argument("--ptx-digest", type=Path, default=None, help="write a digest of every launch's PTX (JSON)")
    parser.add_argument("--against", type=Path, default=None, help="with --ptx-digest: compare with an earlier one")
    args = parser.parse_args(argv)
    if args.row_vectors:
        return row_vectors(args.arch)
    if args.against is not None and args.ptx_digest is None:
        parser.error("--against needs --ptx-digest")
    log = install_fake_driver(args.arch)
    digests: list[tuple[str, str, str]] = []
    differences = 0  # launches whose PTX differs from --against's
    current = [""]
    if args.ptx_digest is not None:
        from triton.runtime.jit import JITFunction

        compile_only = JITFunction.run

        def keep(self: Any, *a: Any, **kw: Any) -> Any:
            kernel = compile_only(self, *a, **kw)
            digests.append((current[0], self.fn.__name__, ptx_digest(kernel.asm["ptx"])))
            return kernel

        JITFunction.run = keep  # pyright: ignore[reportAttributeAccessIssue]
    failures = 0
    cases = evonorm_cases(args.quick) + gaunt_cases(args.quick) + ot_cases(args.quick)
    for name, case in cases:
        current[0] = name
        try:
            case()
        except Exception:
            failures += 1
            print(f"FAILED {name}\n{traceback.format_exc(limit=3)}")
    if args.ptx_digest is not None:
        import json

        import triton

        record = {"triton": triton.__version__, "arch": args.arch, "launches": [list(d) for d in digests]}
        args.ptx_digest.write_text(json.dumps(record, indent=0))
        if args.against is not None:
            differences = compare_digests(record, json.loads(args.against.read_text()))
    kernels = sorted({name for name, _ in log})
    print(f"{len(cases)} cases, {len(log)} launches compiled for sm_{args.arch} ({len(kernels)} kernels: "
          f"{', '.join(kernels)}); largest shared memory {max((s for _, s in log), default=0)} bytes; "
          f"{failures} failed")  # fmt: skip
    return 1 if failures or differences else 0


if __name__ == "__main__":
    sys.exit(main())
