"""Forward+backward time and peak memory of the fused EvoNorm-S0/B0 against timm's layers and BatchNorm2d+ReLU.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH`` or the packages installed)::

    python packages/sciml-norm/benchmarks/bench_evonorm_gpu.py results.json [--dtypes float32 bfloat16]
        [--shapes 64x256x56x56 ...] [--iters 20] [--warmup 5] [--channels-last] [--compile MODE] [--device cpu]
        [--resume]

For every shape and dtype it times one training step of the layer alone, ``y = layer(x)`` then the gradients of
``<y, g>`` for the input and the parameters, with CUDA events (mean over ``--iters`` steps after ``--warmup``), and
records the peak of ``torch.cuda.max_memory_allocated`` during one step above what was allocated before it (inputs,
parameters and the cotangent excluded). Parameters are float32 in every case (the mixed-precision setup: bfloat16
activations, float32 weights), which every contender accepts. Contenders:

* ``ours-S0`` / ``ours-B0``: :func:`sciml_norm.evonorm_s0` / :func:`sciml_norm.evonorm_b0` with ``backend="triton"``
  (B0 in training mode, updating its running variance), the default strategy ("auto": the persistent kernels,
  one launch per pass, up to ResNet-50's 28x28 stage at batch 64; the split passes above);
* ``split-S0`` / ``split-B0``: the same with the split passes forced (``STRATEGY = "split"``: statistics,
  finalize and element-wise kernels, six launches per step) for comparison;
* ``jit-S0`` / ``jit-B0``: ours (default strategy) with every launch through Triton's ``JITFunction.run``
  (``sciml_norm._kernels._launch.LAUNCH = "triton"``) instead of the direct launch of the cached compiled kernel;
* ``timm-S0`` / ``timm-B0``: ``timm.layers.EvoNorm2dS0`` / ``EvoNorm2dB0`` (groups 32, training mode);
* ``bn-relu``: ``torch.nn.BatchNorm2d`` followed by an in-place ``ReLU`` (cuDNN), training mode.

With ``--compile MODE`` every contender is wrapped in ``torch.compile(mode=MODE)`` (e.g. ``reduce-overhead``, which
replays CUDA graphs and so removes the host-side launch cost that dominates small shapes); the warm-up then also
covers compilation.

It prints a table (milliseconds, MiB, and the ratios of ours to timm and to BatchNorm+ReLU) and writes the records as
JSON to the path given first on the command line (rewritten after every measurement, so that a run cut short keeps
what it measured: :class:`Journal`). A measurement that raises is recorded with its error. One that leaves CUDA
broken (a kernel fault) ends the process with exit status 3; ``--resume`` then goes on where it stopped, skipping
that contender from then on (``shared/gpu_norm_equivariant.sh`` reruns it so).

``--device cpu`` runs the same code on the CPU, ours through the PyTorch backend and without memory figures: a
smoke test of the script.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_SHAPES = ("64x256x56x56", "64x512x28x28", "64x1024x14x14", "64x2048x7x7")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GROUPS = 32
MIB = 1024.0 * 1024.0
KEY = ("shape", "dtype", "layout", "compile", "layer")  # the fields that identify a measurement


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a shape is NxCxHxW, got {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


Contender = tuple[Callable[[Tensor], Tensor], list[Tensor], str, str]


def script_device(text: str, script: str) -> tuple[torch.device, str, str]:
    """The device a benchmark script was asked for, the backend of our layers on it, and its name.

    Shared by the scripts of this folder: CUDA takes the Triton kernels; ``cpu`` runs the same code through the
    PyTorch backend, as a smoke test of the script. Exits with a message when CUDA is asked for and missing.
    """
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{script} needs a CUDA device (or --device cpu for a smoke test)")
    if device.type == "cuda":
        return device, "triton", torch.cuda.get_device_name(device)
    return device, "torch", device.type


#: exit status of a script whose CUDA context is lost: ``shared/gpu_norm_equivariant.sh`` reruns it with ``--resume``
RESUME_EXIT = 3


def cuda_alive() -> bool:
    """Whether CUDA still works in this process (a kernel fault, e.g. an illegal address, breaks it for good)."""
    try:
        torch.cuda.synchronize()
        return torch.ones(1, device="cuda").add_(1).item() == 2.0
    except Exception:
        return False


class Journal:
    """The records of a measuring script, in its JSON file as they come, so that a rerun can resume after a crash.

    A measurement that kills its process (a kernel fault on the GPU breaks the CUDA context for good) must not cost
    the rest of the run: :meth:`begin` writes what is about to be measured to ``<json>.running`` and :meth:`add`
    clears it with the record (a record marked ``fatal``, CUDA broken during it, then ends the process with
    :data:`RESUME_EXIT`). A rerun with ``resume=True`` loads the records, turns a leftover ``.running`` stub into a
    record of a fatal failure (``ms`` NaN, ``fatal`` True), and :meth:`skip` tells the script what to skip: the
    measurements it has (:meth:`done`), and the contenders (``group`` fields) that broke CUDA before (:meth:`fatal`;
    such a skip is recorded). Records hold NaN for failures (Python's JSON reads it back).

    Args:
        path: the JSON file; it holds ``{**header, "records": [...]}`` (None: the records stay in memory).
        header: the file's other fields (the script may update them before :meth:`save`).
        key: the record fields that identify a measurement.
        group: the record fields that identify a contender across measurements.
        resume: load what ``path`` holds instead of starting over.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "r.json"
        >>> first = Journal(path, {}, key=("shape", "layer"), group=("layer",))
        >>> first.begin({"shape": [2, 3], "layer": "a"})  # ... and the process dies here
        >>> again = Journal(path, {}, key=("shape", "layer"), group=("layer",), resume=True)
        >>> again.records[0]["error"], again.fatal({"shape": [4, 5], "layer": "a"})
        ('the process died during this measurement', True)
        >>> again.done({"shape": [2, 3], "layer": "a"}), again.done({"shape": (4, 5), "layer": "a"})
        (True, False)
    """

    def __init__(
        self,
        path: Path | None,
        header: dict[str, Any],
        key: Sequence[str],
        group: Sequence[str],
        resume: bool = False,
    ) -> None:
        self.path, self.header, self._key, self._group = path, header, tuple(key), tuple(group)
        self.running = None if path is None else path.with_name(path.name + ".running")
        self.records: list[dict[str, Any]] = []
        if resume and path is not None and path.exists():
            self.records = json.loads(path.read_text())["records"]
        if resume and self.running is not None and self.running.exists():
            stub = json.loads(self.running.read_text())
            died = "the process died during this measurement"
            self.records.append({**stub, "ms": math.nan, "peak_mib": math.nan, "error": died, "fatal": True})
            self.save()
        self._clear()

    def _clear(self) -> None:
        if self.running is not None:
            self.running.unlink(missing_ok=True)

    @staticmethod
    def _of(record: dict[str, Any], fields: tuple[str, ...]) -> str:
        return json.dumps([record.get(f) for f in fields], sort_keys=True)  # tuples and lists alike

    def done(self, stub: dict[str, Any]) -> bool:
        """Whether a record of this measurement (same ``key`` fields) is there already, failed or not."""
        key = self._of(stub, self._key)
        return any(self._of(r, self._key) == key for r in self.records)

    def fatal(self, stub: dict[str, Any]) -> bool:
        """Whether this contender (same ``group`` fields) has killed a process or CUDA context before."""
        group = self._of(stub, self._group)
        return any(r.get("fatal") and self._of(r, self._group) == group for r in self.records)

    def skip(self, stub: dict[str, Any]) -> bool:
        """Whether to skip ``stub``: measured already, or its contender broke CUDA before (that skip is recorded)."""
        if self.done(stub):
            return True
        if self.fatal(stub):
            self.add({**stub, "ms": math.nan, "peak_mib": math.nan, "error": "skipped: it broke CUDA before"})
            return True
        return False

    def begin(self, stub: dict[str, Any]) -> None:
        """Note that the measurement ``stub`` (JSON-able) starts: a process that dies now leaves it behind."""
        if self.running is not None:
            self.running.write_text(json.dumps(stub))

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record`` (the measurement begun last, or one skipped) and rewrite the file.

        A ``fatal`` record (CUDA broke during it) then ends the process with :data:`RESUME_EXIT`.
        """
        self.records.append(record)
        self.save()
        self._clear()
        if record.get("fatal"):
            print(f"CUDA no longer works in this process: rerun with --resume (exit {RESUME_EXIT})", flush=True)
            sys.exit(RESUME_EXIT)

    def save(self) -> None:
        """Rewrite the JSON file with the header and the records."""
        if self.path is not None:
            self.path.write_text(json.dumps({**self.header, "records": self.records}, indent=2))


def failure(error: BaseException, cuda: bool) -> dict[str, Any]:
    """The result fields of a measurement that raised ``error``; ``fatal`` when CUDA no longer works after it."""
    fatal = cuda and not cuda_alive()
    print(f"failed ({'CUDA context lost' if fatal else 'recorded'}): {error!r}"[:400], flush=True)
    return {"ms": math.nan, "peak_mib": math.nan, "error": repr(error)[:300], "fatal": fatal}


def evonorm_inputs(
    shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32, channels_last: bool = False
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """Inputs of one EvoNorm step: x (requires grad), a cotangent like it, [w, b, v] (float32) and a running variance.

    Shared by the benchmark scripts of this folder. ``w, b, v`` are filled with 1, 0.1 and 1.
    """
    c = shape[1]
    x = torch.randn(tuple(shape), device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    params = [torch.full((c,), f, device=device, requires_grad=True) for f in (1.0, 0.1, 1.0)]
    return x, torch.randn_like(x), params, torch.ones(c, device=device)


def contenders(channels: int, device: torch.device, backend: str = "triton") -> dict[str, Contender]:
    """The layers to compare, each as (function of x, its parameters, strategy and launch path of the kernels).

    Parameters are float32. The strategy (``sciml_norm._kernels.evonorm.STRATEGY``) and the launch path
    (``sciml_norm._kernels._launch.LAUNCH``) are set before the contender is measured; they only matter to ours.

    Args:
        channels: C.
        device: a CUDA device.
        backend: of our layers (``"torch"`` only for smoke tests of the scripts on a CPU).

    Returns:
        A dict from the contender's name to (callable, parameters, strategy, launch path).
    """
    import timm.layers.evo_norm as timm_evo
    from sciml_norm._functional import evonorm_b0, evonorm_s0

    def params(*fill: float) -> list[Tensor]:
        return [torch.full((channels,), f, device=device, requires_grad=True) for f in fill]

    s0_params = params(1.0, 0.0, 1.0)
    b0_params = params(1.0, 0.0, 1.0)
    running = torch.ones(channels, device=device)
    timm_s0 = timm_evo.EvoNorm2dS0(channels, groups=GROUPS).to(device).train()
    timm_b0 = timm_evo.EvoNorm2dB0(channels).to(device).train()
    bn_relu = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)).to(device).train()

    def ours_s0(x: Tensor) -> Tensor:
        weight, bias, v = s0_params
        return evonorm_s0(x, weight, bias, v, groups=GROUPS, backend=backend)

    def ours_b0(x: Tensor) -> Tensor:
        weight, bias, v = b0_params
        return evonorm_b0(x, weight, bias, v, running, training=True, backend=backend)

    return {
        "ours-S0": (ours_s0, s0_params, "auto", "direct"),
        "jit-S0": (ours_s0, s0_params, "auto", "triton"),
        "split-S0": (ours_s0, s0_params, "split", "direct"),
        "timm-S0": (timm_s0, list(timm_s0.parameters()), "auto", "direct"),
        "ours-B0": (ours_b0, b0_params, "auto", "direct"),
        "jit-B0": (ours_b0, b0_params, "auto", "triton"),
        "split-B0": (ours_b0, b0_params, "split", "direct"),
        "timm-B0": (timm_b0, list(timm_b0.parameters()), "auto", "direct"),
        "bn-relu": (bn_relu, list(bn_relu.parameters()), "auto", "direct"),
    }


def measure(
    layer: Callable[[Tensor], Tensor], params: Sequence[Tensor], x: Tensor, iters: int, warmup: int
) -> dict[str, float]:
    """Mean forward+backward time (ms) over ``iters`` steps and the peak extra memory (MiB) of one step.

    Args:
        layer: function of ``x``.
        params: the parameters whose gradients the step computes with the input's.
        x: input, requires grad.
        iters: timed steps.
        warmup: untimed steps first (Triton compilation, cuDNN autotuning, allocator warm-up).

    Returns:
        ``{"ms": ..., "peak_mib": ...}``.
    """
    cotangent = torch.randn_like(x)
    inputs = [x, *params]

    def step() -> None:
        y = layer(x)
        torch.autograd.grad(y, inputs, cotangent)

    for _ in range(warmup):
        step()
    if x.device.type != "cuda":  # the smoke test of the script (--device cpu): wall time, no memory figure
        begin = time.perf_counter()
        for _ in range(iters):
            step()
        return {"ms": (time.perf_counter() - begin) * 1e3 / iters, "peak_mib": float("nan")}
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        step()
    stop.record()
    torch.cuda.synchronize()
    return {"ms": start.elapsed_time(stop) / iters, "peak_mib": peak / MIB}


def run(
    shapes: Sequence[tuple[int, int, int, int]],
    dtypes: Sequence[str],
    iters: int,
    warmup: int,
    channels_last: bool,
    compile_mode: str | None = None,
    journal: Journal | None = None,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Measure every contender at every shape and dtype; returns one record per measurement.

    A measurement that raises is recorded with its error (``ms`` NaN) and the run goes on, unless CUDA is broken
    after it: then the run stops with :data:`RESUME_EXIT`, and a rerun with the same ``journal`` resumed skips what
    was measured and, from then on, the contender that broke it.

    Args:
        shapes: (N, C, H, W) sizes.
        dtypes: names from :data:`DTYPES`.
        iters: timed steps per measurement.
        warmup: untimed steps first.
        channels_last: feed channels-last input instead of NCHW.
        compile_mode: wrap every contender in ``torch.compile(mode=compile_mode)`` (None: eager).
        journal: where the records go as they come (a run cut short keeps them); None keeps them in memory.
        device: CUDA by default; a CPU runs our layers through the PyTorch backend (a smoke test of the script).

    Returns:
        Records with the keys shape, dtype, layout, compile, layer, strategy, launch, ms, peak_mib (and error and
        fatal for a failed measurement).
    """
    from sciml_norm._kernels import _launch
    from sciml_norm._kernels import evonorm as kern

    device = torch.device("cuda") if device is None else device
    cuda = device.type == "cuda"
    if journal is None:
        journal = Journal(None, {}, KEY, ("layer", "compile"))
    layout = "channels_last" if channels_last else "nchw"
    for shape in shapes:
        for dtype_name in dtypes:
            layers = contenders(shape[1], device, "triton" if cuda else "torch")
            for name, (layer, params, strategy, launch) in layers.items():
                stub = {"shape": list(shape), "dtype": dtype_name, "layout": layout, "compile": compile_mode,
                        "layer": name, "strategy": strategy, "launch": launch}  # fmt: skip
                if journal.skip(stub):
                    continue
                kern.STRATEGY, _launch.LAUNCH = strategy, launch
                journal.begin(stub)
                x = None
                try:
                    if compile_mode is not None:
                        torch.compiler.reset()
                        layer = torch.compile(layer, mode=compile_mode)
                    x = torch.randn(shape, device=device, dtype=DTYPES[dtype_name])
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    x.requires_grad_(True)
                    result = measure(layer, params, x, iters, warmup)
                except torch.cuda.OutOfMemoryError:
                    result = {"ms": math.nan, "peak_mib": math.nan, "error": "out of memory"}
                except Exception as error:
                    result = failure(error, cuda)
                finally:
                    kern.STRATEGY, _launch.LAUNCH = "auto", "direct"
                    del x
                print(f"{'x'.join(map(str, shape))} {dtype_name} {name}: {result['ms']:.3f} ms", flush=True)
                journal.add({**stub, **result})
                if cuda:
                    torch.cuda.empty_cache()
            del layers
    return journal.records


def table(records: Sequence[dict[str, Any]]) -> str:
    """Format the records: one row per (shape, dtype, layer), with ours/timm and ours/BN ratios on our rows.

    Args:
        records: from :func:`run`.

    Returns:
        The table as text.
    """
    index = {(tuple(r["shape"]), r["dtype"], r["layer"]): r for r in records}
    header = f"{'shape':>16} {'dtype':>9} {'layer':>8} {'ms':>9} {'MiB':>9}"
    lines = [header + f" {'t/timm':>7} {'t/BN':>6} {'m/timm':>7} {'m/BN':>6}"]
    for r in records:
        key = (tuple(r["shape"]), r["dtype"])
        ratios = ""
        kind, _, variant = r["layer"].partition("-")
        if kind in ("ours", "jit", "split"):
            timm_row = index.get((*key, "timm-" + variant))
            bn_row = index.get((*key, "bn-relu"))
            if timm_row is not None and bn_row is not None:
                ratios = (
                    f" {r['ms'] / timm_row['ms']:7.2f} {r['ms'] / bn_row['ms']:6.2f}"
                    f" {r['peak_mib'] / timm_row['peak_mib']:7.2f} {r['peak_mib'] / bn_row['peak_mib']:6.2f}"
                )
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(f"{shape:>16} {r['dtype']:>9} {r['layer']:>8} {r['ms']:9.3f} {r['peak_mib']:9.1f}{ratios}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry: parse the arguments, measure, print the table, write the JSON.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path, help="where to write the records (JSON)")
    parser.add_argument("--shapes", nargs="+", type=_parse_shape, default=[_parse_shape(s) for s in DEFAULT_SHAPES])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", default=None, metavar="MODE", help="torch.compile mode, e.g. reduce-overhead")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the script")
    parser.add_argument("--resume", action="store_true", help="keep the JSON's records and go on (after a crash)")
    args = parser.parse_args(argv)
    device, _, name = script_device(args.device, "bench_evonorm_gpu.py")
    torch.backends.cudnn.benchmark = True
    meta = {"device": name, "torch": torch.__version__, "python": platform.python_version()}
    journal = Journal(args.json, meta, key=KEY, group=("layer", "compile"), resume=args.resume)
    records = run(args.shapes, args.dtypes, args.iters, args.warmup, args.channels_last, args.compile, journal, device)
    journal.save()
    print(f"device: {meta['device']}; torch {meta['torch']}")
    print(table(records))


if __name__ == "__main__":
    main()
