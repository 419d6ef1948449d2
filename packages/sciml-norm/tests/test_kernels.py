"""Fused EvoNorm-S0/B0 (sciml_norm._kernels.evonorm): closed-form backward, operators, Triton parity.

Oracles: the eager autograd path of sciml_norm._functional (itself checked against timm in test_functional.py),
torch's gradcheck in float64 for the hand-written backward formulas, ``torch.library.opcheck`` for the operators.
Run the interpreter tests with
``TRITON_INTERPRET=1 uv run pytest -m interpret packages/sciml-norm/tests/test_kernels.py`` (the variable must be set
before triton defines the kernels; they are built on first launch, inside the tests).
"""

import contextlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sciml_norm._functional import evonorm_b0, evonorm_s0
from sciml_norm._kernels import evonorm as fused
from sciml_protocols.testing import assert_close, assert_interpreter_parity, gradcheck_float64, interpreter_enabled
from torch.utils._python_dispatch import TorchDispatchMode

F32, F64 = torch.float32, torch.float64
needs_interpreter = pytest.mark.skipif(
    not interpreter_enabled(),
    reason=(
        "Triton interpreter parity runs in the nox interpret session "
        "(TRITON_INTERPRET=1 must be set before triton loads)"
    ),
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run shared/gpu_check.sh on the GPU machine)"
)


STRATEGIES = ("split", "persistent")


@pytest.fixture(params=STRATEGIES)
def strategy(request, monkeypatch):
    """Runs the test under each strategy of the Triton path (split passes or persistent programs)."""
    monkeypatch.setattr(fused, "STRATEGY", request.param)
    return request.param


def make(shape, dtype=F64, channels_last=False, seed=0, device="cpu"):
    """x, cotangent, weight, bias, v, running_var with non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = 1.5 * torch.randn(*shape, generator=g, dtype=F64) + 0.3
    cot = torch.randn(*shape, generator=g, dtype=F64)
    w = torch.rand(c, generator=g, dtype=F64) + 0.5
    b = torch.randn(c, generator=g, dtype=F64)
    v = torch.randn(c, generator=g, dtype=F64)
    rv = torch.rand(c, generator=g, dtype=F64) + 0.5
    out = [t.to(device=device, dtype=dtype) for t in (x, cot, w, b, v, rv)]
    if channels_last:
        out[0] = out[0].contiguous(memory_format=torch.channels_last)
    return out


def s0_run(backend, groups, x, cot, w, b, v):
    """Forward and backward through the public function: (y, dx, dw, db, dv)."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b, v)]
    y = evonorm_s0(*leaves, groups=groups, backend=backend)
    y.backward(cot)
    return (y.detach(), *(t.grad for t in leaves))


def b0_run(backend, training, x, cot, w, b, v, rv):
    """Forward and backward: (y, dx, dw, db, dv, running_var after the step)."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b, v)]
    running = rv.detach().clone()
    y = evonorm_b0(*leaves[:4], running, training=training, backend=backend)
    y.backward(cot)
    return (y.detach(), *(t.grad for t in leaves), running)


def s0_fused_run(groups, x, cot, w, b, v):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b, v)]
    y = fused.evonorm_s0_fused(*leaves, groups, 1e-5, "torch")
    y.backward(cot)
    return (y.detach(), *(t.grad for t in leaves))


def b0_fused_run(training, x, cot, w, b, v, rv):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b, v)]
    running = rv.detach().clone()
    y = fused.evonorm_b0_fused(*leaves, running, training, 0.1, 1e-3, True, "torch")
    y.backward(cot)
    return (y.detach(), *(t.grad for t in leaves), running)


def check_all(got, want, rtol, atol):
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a is not None
        assert b is not None
        assert a.dtype == b.dtype, f"output {index}"
        assert_close(a, b, rtol=rtol, atol=atol, msg=f"output {index}")


# ----------------------------------------------------------------------------------------------- two-pass reference


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_pass_algorithm_matches_eager(channels_last):
    # the fused algorithm (statistics combined from per-channel sums, hand-written backward) in PyTorch operations
    for shape, groups in (((3, 9, 5, 7), 3), ((2, 4, 1, 6), 4), ((2, 6, 3, 1), 1)):
        args = make(shape, channels_last=channels_last)
        got = s0_fused_run(groups, *args[:5])
        check_all(got, s0_run("torch", groups, *args[:5]), 1e-11, 1e-12)
        assert got[0].is_contiguous(memory_format=torch.channels_last) == (channels_last and shape[2] * shape[3] > 1)
        for training in (True, False):
            check_all(b0_fused_run(training, *args), b0_run("torch", training, *args), 1e-11, 1e-12)


def test_gradcheck_hand_written_backward():
    x, _, w, b, v, rv = make((2, 4, 3, 3))
    gradcheck_float64(lambda *a: fused.evonorm_s0_fused(*a, 2, 1e-5, "torch"), x, w, b, v)
    for training in (True, False):
        gradcheck_float64(
            lambda *a, training=training: fused.evonorm_b0_fused(*a, rv.clone(), training, 0.1, 1e-3, True, "torch"),
            x,
            w,
            b,
            v,
        )


def test_half_precision_stats_in_float32():
    x, cot, w, b, v, _rv = make((2, 8, 4, 4), dtype=torch.bfloat16)
    y, mean, rstd = fused.s0_forward(x, w, b, v, 2, 1e-5, "torch")
    assert y.dtype == torch.bfloat16
    assert mean.dtype == rstd.dtype == F32
    want = s0_run("torch", 2, *(t.double() for t in (x, cot, w, b, v)))[0]
    assert_close(y.double(), want, rtol=1e-2, atol=1e-2)


# torch's fake-tensor conversion inside opcheck reads .grad of a non-leaf (a torch-internal warning it means to hide)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_opcheck():
    x, _, w, b, v, rv = make((2, 4, 3, 3))
    params = [t.requires_grad_() for t in (w, b, v)]
    torch.library.opcheck(fused.evonorm_s0_fwd_op, (x.requires_grad_(), *params, 2, 1e-5, "torch"))
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    # the slow AOT-dispatch check once (above); test_compile_fullgraph traces the B0 operator through AOT too
    light = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(fused.evonorm_b0_fwd_op, (xl, *params, rv, True, 1e-3, "torch"), test_utils=light)


@pytest.mark.compile
def test_compile_fullgraph():
    # torch.compile on CPU: the fused operators are opaque graph nodes (their "torch" backend runs here; a Triton
    # kernel cannot be compiled without a GPU); the B0 running-variance update is traced as an in-place copy.
    def step(x, w, b, v, running):
        y = fused.evonorm_s0_fused(x, w, b, v, 2, 1e-5, "torch")
        z = fused.evonorm_b0_fused(y, w, b, v, running, True, 0.1, 1e-3, True, "torch")
        return (z * z).sum()

    x, _, w, b, v, rv = make((2, 4, 3, 3))
    compiled = torch.compile(step, fullgraph=True)
    inputs = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running = rv.clone()
    got = compiled(*inputs, running)
    got_grads = torch.autograd.grad(got, inputs)
    reference = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running_ref = rv.clone()
    z = evonorm_b0(evonorm_s0(*reference, groups=2), *reference[1:], running_ref, training=True)
    want = (z * z).sum()
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(got_grads, torch.autograd.grad(want, reference), strict=True):
        assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert_close(running, running_ref, rtol=1e-14, atol=1e-14)


class Ops(TorchDispatchMode):
    """Records the name of every aten operation dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
def test_triton_path_dispatches_only_output_allocations(monkeypatch, channels_last, strategy):
    # the host side of the Triton path with the kernels stubbed out: a training step (forward and backward) is six
    # launches (split) or two (persistent; S0 adds one sum over n of its parameter-gradient partials, both split one
    # buffer of parameter gradients into rows) and the allocation of their outputs, no other PyTorch operation (no
    # host-side statistics math, no copies, no zero-filled cotangents); this keeps small layers from being bound by
    # the host
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets resolve_backend accept "triton" for CPU tensors
    launched = []

    class Stub:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched.append(self.name)

    monkeypatch.setattr(fused, "_kernels", lambda: {name: Stub(name) for name in KERNEL_NAMES})
    x, cot, w, b, v, rv = make((2, 8, 3, 4), dtype=F32, channels_last=channels_last)
    leaves = [t.requires_grad_() for t in (x, w, b, v)]
    empty = "aten.empty.memory_format"
    expected = {
        "split": {
            "s0": (["stats", "s0_group", "s0_forward", "s0_reduce", "s0_grad", "s0_dx"], [empty] * 9),
            "b0": (["stats", "b0_batch", "b0_forward", "b0_reduce", "b0_grad", "b0_dx"], [empty] * 11),
        },
        "persistent": {
            "s0": (
                ["s0_persistent_forward", "s0_persistent_backward"],
                [empty] * 4 + ["aten.sum.dim_IntList", "aten.unbind.int"],
            ),
            # one statistics buffer saved for backward; the three parameter gradients are rows of one buffer
            "b0": (["b0_persistent_forward", "b0_persistent_backward"], [empty] * 5 + ["aten.unbind.int"]),
        },
    }[strategy]
    for name, training in (("s0", None), ("b0", True), ("b0", False)):
        for ops in (None, Ops()):  # the first step fills the caches of launch layouts (meta-tensor operations)
            launched.clear()
            with ops or contextlib.nullcontext():
                if training is None:
                    y = evonorm_s0(*leaves, groups=4, backend="triton")
                else:
                    y = evonorm_b0(*leaves, rv, training=training, backend="triton")
                torch.autograd.grad(y, leaves, cot)
        assert ops is not None
        kernels, operations = expected[name]
        assert launched == kernels
        assert ops.names == operations


def test_launch_key_is_at_least_as_fine_as_tritons_specialization(monkeypatch):
    # the direct launcher reuses a compiled kernel only under a key that separates whatever Triton specializes on:
    # a pointer's dtype and 16-byte alignment, an integer's value (Triton: == 1, divisible by 16, 32/64-bit)
    from sciml_norm._kernels import _launch

    base = torch.zeros(64)
    assert _launch._key_of(base[4:]) == _launch._key_of(base)  # 16 bytes apart: both aligned
    assert _launch._key_of(base[1:]) != _launch._key_of(base)  # 4 bytes off
    assert _launch._key_of(base.double()) != _launch._key_of(base)
    assert _launch._key_of(True) != _launch._key_of(1)  # equal in Python, u1 and the constant 1 in Triton
    assert _launch._key_of(16) != _launch._key_of(32)
    assert _launch._key_of(1.0) != _launch._key_of(1)
    launcher = _launch.Launcher(lambda *args: None)
    assert not launcher._direct  # not a JITFunction: every call goes through it as it is
    import triton

    versions = (("3.2.0", False), ("3.3.1", True), ("3.6.0", True), ("3.9.0", True), ("3.10.0", False), ("4.0", False))
    for version, checked in versions:
        monkeypatch.setattr(triton, "__version__", version)
        assert _launch._checked_triton() == checked, version
    monkeypatch.setattr(_launch, "LAUNCH", "fast")
    with pytest.raises(ValueError, match="LAUNCH"):
        launcher[(1,)](base)


REPO = Path(__file__).resolve().parents[3]


def run_script(script, *args, **env_extra):
    """Run a repository script in a fresh interpreter, without the Triton interpreter; its stdout (exit status 0)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
def test_direct_launches_hand_the_launcher_what_triton_does(tmp_path):
    # shared/triton_launch_check.py --quick: both strategies, NCHW / channels-last / a misaligned input, on a
    # stand-in CUDA driver (kernels compiled for sm_90 by ptxas, the C launcher replaced by a recorder); the direct
    # launches must pass the same compiled binary and the same arguments as JITFunction.run, and the repeat of a
    # step must not go through JITFunction.run at all. Mutations that drop the alignment from the key or reorder
    # the constexprs fail it.
    # (the Triton cache in tmp_path: compiled from scratch, in a place that is writable)
    out = run_script("shared/triton_launch_check.py", "--quick", TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    assert "; 0 failed" in out


@pytest.mark.slow
def test_precompilation_leaves_nothing_for_the_real_launch_path_to_compile(tmp_path):
    # shared/evonorm_precompile.py --quick --verify: worker processes compile the steps' kernels on the stand-in
    # driver; a second pass through Triton's own launch path must then find every kernel in the cache (a mutation
    # that leaves one step out of the pool fails with "2 kernels compiled anew").
    cache = str(tmp_path / "triton-cache")
    out = run_script("shared/evonorm_precompile.py", "--quick", "--verify", "--jobs", "2", TRITON_CACHE_DIR=cache)
    assert "0 failed" in out, out
    assert "0 kernels compiled anew" in out, out


def _load_script(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precompilation_covers_every_step_of_the_gpu_benchmarks(monkeypatch):
    root = REPO
    monkeypatch.syspath_prepend(str(root / "packages" / "sciml-norm" / "benchmarks"))
    precompile = _load_script(root / "shared" / "evonorm_precompile.py")
    sweep = _load_script(root / "packages" / "sciml-norm" / "benchmarks" / "sweep_evonorm_persistent.py")
    planned = precompile.tasks(quick=False)
    keys = {(t["layer"], t["strategy"], t["dtype"], t["layout"], tuple(t["shape"]), repr(t["config"])) for t in planned}
    assert len(keys) == len(planned)
    for task in sweep.tasks():
        if task["layer"] != "bn-relu":
            shape = tuple(task["shape"])
            assert (task["layer"], task["strategy"], task["dtype"], task["layout"], shape, repr(task["config"])) in keys
    for shape in ((64, 256, 56, 56), (64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7)):
        for dtype, layout, layer in itertools.product(("float32", "bfloat16"), ("nchw", "channels_last"), ("S0", "B0")):
            for strategy in ("auto", "split"):  # ours, jit and split contenders of bench_evonorm_gpu.py
                assert (layer, strategy, dtype, layout, shape, "{}") in keys
    # the sweep measures its baselines first everywhere, then the variants from 28x28 down: NCHW (the target's
    # layout) in float32, the same in bfloat16, then channels-last
    phases = [t["phase"] for t in sweep.tasks()]
    assert phases == sorted(phases)
    variants = [t for t in sweep.tasks() if t["phase"] == 2]
    assert tuple(variants[0]["shape"]) == (64, 512, 28, 28)
    assert variants[0]["layer"] == "B0"
    assert {(t["dtype"], t["layout"]) for t in variants} == {("float32", "nchw")}
    assert {t["dtype"] for t in sweep.tasks() if t["phase"] != 3} == {"float32"}
    bf16 = [t for t in sweep.tasks() if t["phase"] == 3]
    assert {(t["dtype"], t["layout"]) for t in bf16} == {("bfloat16", "nchw")}
    assert len(bf16) == len([t for t in sweep.tasks() if t["phase"] < 3 and t["layout"] == "nchw"])
    last = [t for t in sweep.tasks() if t["phase"] == 4]
    assert {t["layout"] for t in last} == {"channels_last"}
    assert len(last) == len([t for t in variants if "hints" not in t["config"]])
    assert any(t["config"].get("stages", 1) > 1 for t in variants)  # the pipelined variants are measured
    # the row-alignment hints off: only where they change the kernels (NCHW at 14x14), for both layers and dtypes
    unhinted = [t for t in sweep.tasks() if "hints" in t["config"]]
    assert {(tuple(t["shape"]), t["layout"]) for t in unhinted} == {((64, 1024, 14, 14), "nchw")}
    assert sorted((t["layer"], t["dtype"]) for t in unhinted) == sorted(
        itertools.product(("B0", "S0"), ("float32", "bfloat16"))
    )


def test_gpu_results_summary_checks_the_target_on_every_row(tmp_path, monkeypatch, capsys):
    # shared/summarize_evonorm_gpu.py on a made-up work/ folder: the README table, and the verdict of issue 6's
    # target (every ours row at 28x28, 14x14 and 7x7 within 1.5x BatchNorm2d+ReLU; a missing row is not met)
    root = REPO
    monkeypatch.syspath_prepend(str(root / "packages" / "sciml-norm" / "benchmarks"))
    summarize = _load_script(root / "shared" / "summarize_evonorm_gpu.py")
    work = tmp_path / "work"
    work.mkdir()

    def write(ratio_b0_7x7, drop=None):
        records = []
        for shape in ((64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7)):
            for dtype in ("float32", "bfloat16"):
                times = {"bn-relu": 0.4, "ours-S0": 0.5, "ours-B0": 0.5, "timm-S0": 2.0, "timm-B0": 2.0}
                if shape[2] == 7:
                    times["ours-B0"] = 0.4 * ratio_b0_7x7
                for layer, ms in times.items():
                    if (shape[2], dtype, layer) != drop:
                        records.append({"shape": list(shape), "dtype": dtype, "layout": "nchw", "layer": layer,
                                        "ms": ms, "peak_mib": 10.0})  # fmt: skip
        (work / "evonorm-nchw.json").write_text(json.dumps({"device": "test GPU", "torch": "x", "records": records}))

    write(1.4)
    profile = {"shape": [64, 2048, 7, 7], "layer": "ours-B0", "host_us": 90.0, "step_us": 150.0, "gpu_us": 140.0,
               "kernels": 2.0, "step_over_bn": 0.5,
               "kernel_us": {"b0_persistent_backward_kernel": 90.0, "b0_persistent_forward_kernel": 50.0}}  # fmt: skip
    (work / "profile-step.json").write_text(json.dumps({"meta": {"device": "test GPU"}, "records": [profile]}))
    assert summarize.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 64x2048x7x7 | ours-B0 | 90.0 | 150.0 | 140.0 | 2.0 | 0.50 | b0_persistent_backward_kernel 90.0, " in out
    assert "| 64x2048x7x7 | float32 | 0.50 | 2.00 | 0.56 | 2.00 | 0.40 | 1.25 | 1.40 | 10 / 10 / 10 |" in out
    assert ": MET" in out
    write(1.6)
    assert summarize.main([str(work)]) == 1
    assert "64x2048x7x7 bfloat16 ours-B0: 1.60x BN+ReLU (MISSED)" in capsys.readouterr().out
    write(1.0, drop=(14, "bfloat16", "ours-S0"))
    assert summarize.main([str(tmp_path)]) == 1
    assert "1 of the 12 ours rows at the target shapes are missing" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_benchmark_scripts_run_on_cpu(tmp_path):
    # the benchmark, the sweep and the profile run on the GPU machine once per session with minutes to spare: their
    # CPU mode (PyTorch backend) checks the scripts themselves here
    bench = REPO / "packages" / "sciml-norm" / "benchmarks"
    path = os.pathsep.join([str(bench), os.environ.get("PYTHONPATH", "")])
    scripts = (
        ("bench_evonorm_gpu.py", ["--shapes", "2x64x7x7", "--dtypes", "float32", "--iters", "2", "--warmup", "1"]),
        ("sweep_evonorm_persistent.py", ["--budget", "3"]),
        ("profile_evonorm_step.py", []),
    )
    for script, extra in scripts:
        out = tmp_path / (script + ".json")
        run_script(bench / script, out, "--device", "cpu", *extra, PYTHONPATH=path)
        records = json.loads(out.read_text())["records"]
        assert records
        assert all(r["layer"] for r in records)


def _bench_module(name, monkeypatch):
    folder = REPO / "packages" / "sciml-norm" / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    return _load_script(folder / name)


def test_journal_of_the_gpu_scripts_resumes_after_a_crash(tmp_path, monkeypatch):
    import doctest

    bench = _bench_module("bench_evonorm_gpu.py", monkeypatch)
    assert doctest.testmod(bench).failed == 0  # the Journal's example: a process that dies mid-measurement
    journal = bench.Journal(tmp_path / "r.json", {"device": "x"}, key=("shape", "layer"), group=("layer",))
    journal.begin({"shape": [1], "layer": "a"})
    journal.add({"shape": [1], "layer": "a", "ms": 1.0})
    assert not journal.running.exists()
    again = bench.Journal(tmp_path / "r.json", {"device": "x"}, ("shape", "layer"), ("layer",), resume=True)
    assert again.records == [{"shape": [1], "layer": "a", "ms": 1.0}]
    assert not again.fatal({"shape": [2], "layer": "a"})
    fresh = bench.Journal(tmp_path / "r.json", {"device": "x"}, ("shape", "layer"), ("layer",))
    assert fresh.records == []  # without resume it starts over


def test_gpu_benchmark_goes_on_after_a_kernel_fault(tmp_path, monkeypatch):
    # a kernel fault breaks CUDA for the process: the benchmark records it and exits 3; rerun with --resume, it skips
    # what it measured and the faulty contender; a process killed mid-measurement leaves a stub that the next run
    # records as fatal. Simulated on the CPU: a fake measure() that faults (and "breaks CUDA") on chosen contenders.
    bench = _bench_module("bench_evonorm_gpu.py", monkeypatch)
    out = tmp_path / "bench.json"
    running = out.with_name(out.name + ".running")
    calls = []
    faults = {}

    def fake_measure(layer, params, x, iters, warmup):
        stub = json.loads(running.read_text())
        calls.append((tuple(stub["shape"]), stub["layer"]))
        fault = faults.get((tuple(stub["shape"]), stub["layer"]))
        if fault is not None:
            raise fault
        return {"ms": 1.0, "peak_mib": 2.0}

    real_failure = bench.failure
    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "failure", lambda error, cuda: real_failure(error, True))
    monkeypatch.setattr(bench, "cuda_alive", lambda: False)
    argv = [str(out), "--device", "cpu", "--shapes", "2x64x5x5", "2x64x3x3", "--dtypes", "float32"]
    first, second = (2, 64, 5, 5), (2, 64, 3, 3)
    layers = list(bench.contenders(64, torch.device("cpu"), "torch"))

    faults[(first, "ours-B0")] = RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(SystemExit) as stop:
        bench.main(argv)
    assert stop.value.code == bench.RESUME_EXIT == 3
    assert calls == [(first, name) for name in layers[: layers.index("ours-B0") + 1]]
    faults[(second, "split-S0")] = KeyboardInterrupt()  # not an Exception: the process "dies" mid-measurement
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        bench.main([*argv, "--resume"])
    assert running.exists()
    assert calls[0] == (first, layers[layers.index("ours-B0") + 1])
    calls.clear()
    bench.main([*argv, "--resume"])
    assert not running.exists()
    after_split = layers[layers.index("split-S0") + 1 :]
    assert calls == [(second, name) for name in after_split if name != "ours-B0"]
    records = json.loads(out.read_text())["records"]
    by_key = {(tuple(r["shape"]), r["layer"]): r for r in records}
    assert len(by_key) == len(records) == 2 * len(layers)  # every measurement once
    assert by_key[(first, "ours-B0")]["fatal"]
    assert "illegal memory access" in by_key[(first, "ours-B0")]["error"]
    assert by_key[(second, "ours-B0")]["error"] == "skipped: it broke CUDA before"
    assert by_key[(second, "split-S0")]["error"] == "the process died during this measurement"
    assert all(r["ms"] == 1.0 for r in records if "error" not in r)
    assert sum("error" not in r for r in records) == 2 * len(layers) - 3


def test_persistent_sweep_goes_on_after_a_kernel_fault(tmp_path, monkeypatch):
    # the same journal in the sweep: a configuration that breaks CUDA is recorded, skipped at the later shapes on
    # --resume, and the other measurements are made once each
    sweep = _bench_module("sweep_evonorm_persistent.py", monkeypatch)
    out = tmp_path / "sweep.json"
    bad = {"persistent_tile": 1024, "programs": 512, "warps": 4}
    calls = []

    def fake_measure(layer, params, x, iters, warmup):
        task = json.loads(out.with_name(out.name + ".running").read_text())
        calls.append(task)
        if task["config"] == bad:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"ms": 1.0, "peak_mib": 2.0}

    real_failure = sweep.failure
    monkeypatch.setattr(sweep, "measure", fake_measure)
    monkeypatch.setattr(sweep, "failure", lambda error, cuda: real_failure(error, True))
    monkeypatch.setattr(sys.modules["bench_evonorm_gpu"], "cuda_alive", lambda: False)
    argv = [str(out), "--device", "cpu", "--layouts", "nchw", "--budget", "600"]
    with pytest.raises(SystemExit) as stop:
        sweep.main(argv)
    assert stop.value.code == 3
    assert calls[-1]["config"] == bad
    sweep.main([*argv, "--resume"])
    records = json.loads(out.read_text())["records"]
    planned = sweep.tasks(["nchw"])
    assert len(records) == len(planned)
    assert len(calls) == len(planned) - 5  # the faulty configuration: at 3 shapes in float32 and 3 in bfloat16
    faulty = [r for r in records if r["config"] == bad]
    assert [r.get("fatal", False) for r in faulty] == [True] + [False] * 5
    assert all(r["error"] == "skipped: it broke CUDA before" for r in faulty[1:])


def test_persistent_sweep_summary_picks_only_correct_configurations_measured_everywhere(monkeypatch):
    # the configuration to adopt: smallest worst ratio to BN+ReLU over the NCHW shapes, among those measured at every
    # shape whose outputs matched the eager layer; a faster one with wrong outputs is left out and listed
    sweep = _bench_module("sweep_evonorm_persistent.py", monkeypatch)
    fast_wrong, good, partial = {"stages": 3}, {"stages": 2}, {"persistent_tile": 1024}
    records = []
    for shape in sweep.SHAPES:
        row = {"phase": 1, "shape": list(shape), "layout": "nchw", "dtype": "float32", "peak_mib": 1.0}
        records.append({**row, "layer": "bn-relu", "strategy": None, "config": {}, "ms": 1.0})
        records.append({**row, "layer": "B0", "strategy": "persistent", "config": {}, "ms": 2.0, "err": 1e-6})
        records.append({**row, "layer": "B0", "strategy": "persistent", "config": good, "ms": 1.3, "err": 1e-6})
        records.append({**row, "layer": "B0", "strategy": "persistent", "config": fast_wrong, "ms": 0.5, "err": 0.3})
        if shape[2] == 28:
            records.append({**row, "layer": "B0", "strategy": "persistent", "config": partial, "ms": 0.4, "err": 0.0})
    text = sweep.summary(records)
    assert 'NCHW shapes in float32: 1.30 with {"stages": 2} (default 2.00)' in text
    assert text.count("WRONG (left out)") == 3
    assert "B0 persistent {'stages': 3}: error 0.3" in text
    # the per-case best is the fastest correct one (the partial configuration at 28x28)
    assert "  0.400    0.40  {'persistent_tile': 1024}" in text
    assert sweep.max_error([torch.ones(3)], [torch.ones(3) * 2]) == pytest.approx(1 / 3)
    assert sweep.max_error([torch.tensor([float("nan")])], [torch.ones(1)]) != 0.0  # NaN is never within tolerance


def test_b0_persistent_kernels_take_64_bit_offsets_only_where_32_bits_overflow(monkeypatch):
    # offsets (n, c, hw padded to whole blocks) times the strides of x, of y / dx and of the cotangent, and the
    # (N, C) statistics: 32-bit arithmetic up to 2^31 - 1, 64-bit from there
    monkeypatch.setattr(fused, "STRATEGY", "persistent")

    def wide(shape, channels_last=False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        stride = torch.empty(shape, device="meta", memory_format=fmt).stride()
        return fused._b0_persistent(fused._plan_for(shape, stride, True, *fused_args())).wide

    for shape in ((64, 256, 56, 56), (64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7), (256, 64, 112, 112)):
        assert not wide(shape)
        assert not wide(shape, channels_last=True)
    assert wide((1024, 64, 256, 256))  # 2^32 elements
    assert wide((8, 64, 2048, 2048))  # exactly 2^31 elements: the last offset fits, the padded blocks' do not
    plan = fused._plan_for((2, 4, 3, 3), (36, 9, 3, 1), True, *fused_args())
    pp = fused._b0_persistent(plan)
    assert not fused._grad_needs_wide(plan, pp, (36, 9, 1))
    assert fused._grad_needs_wide(plan, pp, (2**31, 9, 1))  # a cotangent with a huge batch stride
    # the (N, C) statistics count too: with zero strides the largest offset is (4 + 1) * 3 + (3 + 1) = 19
    assert fused._wide_offsets((4, 3, 5), (1, 1, 1), 19, (0, 0, 0))
    assert not fused._wide_offsets((4, 3, 5), (1, 1, 1), 20, (0, 0, 0))


def test_row_alignment_hints_divide_hw_and_every_row_stride(monkeypatch):
    # ALIGN, the kernels' hint to Triton: a power of two up to 16 that divides H*W and the sample and channel
    # strides of every tensor a launch indexes (zero strides do not count); 1 means no hint
    def align(x):
        return fused._plan(x).align

    assert align(torch.empty(2, 8, 14, 14)) == 4  # ResNet-50's 14x14 stage: rows of 196 = 4 x 49 elements
    assert align(torch.empty(2, 8, 28, 28)) == 16
    assert align(torch.empty(2, 8, 7, 7)) == 1
    assert align(torch.empty(2, 8, 14, 14).contiguous(memory_format=torch.channels_last)) == 1
    assert align(torch.empty(2, 16, 2, 6)[:, ::2]) == 4  # every other channel: strides 24 and 192, H*W = 12
    # every other channel of 3x5 maps: strides 30 and 240 are even but H*W = 15 is odd, so no hint (the kernels
    # round H*W down to a multiple of ALIGN to tell Triton about it: only exact when ALIGN divides it)
    assert align(torch.empty(2, 16, 3, 5)[:, ::2]) == 1
    assert fused._stride_align(15, (240, 30, 1)) == 1  # (the outputs' dense strides alone would give this too)
    assert fused._stride_align(16, (0, 0, 0)) == 16  # zero strides constrain nothing
    plan = fused._plan(torch.empty(2, 8, 14, 14))
    assert fused._grad_align(plan, (8 * 196, 196, 1)) == 4  # a cotangent laid out like x
    assert fused._grad_align(plan, (0, 0, 0)) == 4  # an expanded one
    assert fused._grad_align(plan, (16 * 98, 98, 1)) == 2
    assert fused._grad_align(plan, (8 * 196, 1, 8)) == 1  # channels-last
    # 16 is what Triton's own specialization knows already: no hint (the rounding would only cost registers)
    assert [fused._hint(a) for a in (1, 2, 4, 8, 16)] == [1, 2, 4, 8, 1]
    plan28 = fused._plan(torch.empty(2, 8, 28, 28))
    assert fused._grad_align(plan28, (8 * 784, 784, 1)) == 1
    assert fused._grad_align(plan28, (16 * 392, 392, 1)) == 8
    monkeypatch.setattr(fused, "_STRIDE_HINTS", False)
    assert fused._grad_align(plan, (0, 0, 0)) == 1


@pytest.mark.slow
def test_row_alignment_hints_give_vector_loads_at_14x14():
    # shared/triton_compile_check.py --row-vectors: the kernels of both strategies, compiled for sm_90 (stand-in
    # driver) at 64x1024x14x14 NCHW, read rows in vectors (4 float32, or 4 bfloat16) with the hints, and issue fewer
    # global memory instructions than without them; turning the hints off in the kernels' launches fails it
    # (and blocks of one channel compile with the hints: tl.multiple_of on such offsets crashed Triton's compiler)
    out = run_script("shared/triton_compile_check.py", "--row-vectors")
    assert out.count("ok ") == 24, out  # 4 persistent and 7 split kernels, 2 dtypes; one-channel blocks, 2 dtypes


def test_auto_strategy_takes_persistent_kernels_where_launches_dominate(monkeypatch):
    # "auto": one launch per pass for the host-bound sizes (ResNet-50's 28x28, 14x14 and 7x7 stages at batch 64),
    # the split passes where the GPU's memory traffic dominates (56x56) or where the persistent grid would be too
    # small to fill the GPU (one image with few groups or channels)
    monkeypatch.setattr(fused, "STRATEGY", "auto")

    def decide(shape, groups, channels_last=False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        stride = torch.empty(shape, device="meta", memory_format=fmt).stride()
        plan = fused._plan_for(shape, stride, True, *fused_args())
        return fused._s0_persistent(plan, groups).use, fused._b0_persistent(plan).use

    for layout in (False, True):
        assert decide((64, 2048, 7, 7), 32, layout) == (True, True)
        assert decide((64, 1024, 14, 14), 32, layout) == (True, True)
        assert decide((64, 512, 28, 28), 32, layout) == (True, True)
        assert decide((64, 256, 56, 56), 32, layout) == (False, False)
    assert decide((1, 16, 512, 512), 1) == (False, False)
    assert decide((2, 16, 8, 8), 1) == (True, True)  # small enough that anything fills the GPU's need
    # B0 at 7x7: 128 programs of 16 channels, each walking the batch in 4 x 16 x 64 tiles
    plan = fused._plan_for((64, 2048, 7, 7), (100352, 49, 7, 1), True, *fused_args())
    assert fused._b0_persistent(plan)[1:4] == (4, 16, 64)
    assert fused._b0_persistent(plan).grid == (128,)
    monkeypatch.setattr(fused, "STRATEGY", "fastest")
    with pytest.raises(ValueError, match="STRATEGY"):
        fused._b0_persistent(plan)


def test_b0_persistent_kernels_need_a_triton_whose_loops_flatten(monkeypatch):
    # Triton 3.2 (PyTorch 2.6's) has no tl.range(flatten=...), which B0's persistent kernels pass: "auto" gives B0
    # the split passes there (S0 keeps its persistent kernels), and "persistent" says why it cannot
    import triton
    from sciml_protocols import SciMLError

    version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    assert fused._loops_flatten() == (version >= (3, 3))

    def range_3_2(arg1, arg2=None, step=None, num_stages=None, loop_unroll_factor=None): ...

    def interpreter_range(arg1, arg2=None, step=None, **kwargs): ...  # the 3.2/3.3 interpreters' (ignores kwargs)

    for stand_in, flattens in ((range_3_2, False), (interpreter_range, True)):
        monkeypatch.setattr(triton.language, "range", stand_in)
        fused._loops_flatten.cache_clear()
        assert fused._loops_flatten() == flattens
    monkeypatch.undo()
    fused._loops_flatten.cache_clear()
    plan = fused._plan_for((64, 2048, 7, 7), (100352, 49, 7, 1), True, *fused_args())
    monkeypatch.setattr(fused, "_loops_flatten", lambda: False)
    fused._b0_persistent_plan.cache_clear()
    try:
        monkeypatch.setattr(fused, "STRATEGY", "auto")
        assert not fused._b0_persistent(plan).use
        assert fused._s0_persistent(plan, 32).use
        monkeypatch.setattr(fused, "STRATEGY", "split")
        assert not fused._b0_persistent(plan).use
        monkeypatch.setattr(fused, "STRATEGY", "persistent")
        with pytest.raises(SciMLError, match=r"STRATEGY = 'persistent' needs Triton 3\.3 or later for EvoNorm-B0"):
            fused._b0_persistent(plan)
        # the interpreter's launch sizes: its loops are Python ranges, so any Triton's interpreter runs them
        interpreted = fused._plan_for((2, 8, 3, 4), (96, 12, 4, 1), False, *fused_args())
        assert fused._b0_persistent(interpreted).use
    finally:
        fused._b0_persistent_plan.cache_clear()


def fused_args():
    return fused._TILE["cuda"], fused._MAX_BLOCK_HW, fused._MAX_BLOCK_C, fused._FINALIZE_TILE


KERNEL_NAMES = fused._KERNEL_NAMES


def test_every_kernel_of_the_kernel_module_has_a_launcher():
    # the kernels live at module level in _evonorm_jit (Triton 3.2/3.3 resolve a kernel's names through its
    # module's globals); _kernels() wraps each one by name, importing that module (and triton) on first use only
    from sciml_norm._kernels import _evonorm_jit

    assert sorted(f"{name}_kernel" for name in KERNEL_NAMES) == sorted(_evonorm_jit.__all__)
    assert all(
        isinstance(getattr(_evonorm_jit, name), type(_evonorm_jit.stats_kernel)) for name in _evonorm_jit.__all__
    )
    assert set(fused._kernels()) == set(KERNEL_NAMES)


# ----------------------------------------------------------------------------------------------- Triton interpreter

# (shape, groups): ragged H*W (35) and C/G (3); H*W = 300 > one 256-wide tile; C = 80 > one 64-channel tile;
# H = 1 and W = 1 (the flattened H, W stride is the other axis's).
CASES = [((2, 9, 5, 7), 3), ((2, 3, 15, 20), 1), ((1, 80, 3, 5), 16), ((2, 6, 1, 7), 2), ((3, 4, 5, 1), 4)]


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("shape", "groups"), CASES)
def test_interpreter_parity_s0(shape, groups, channels_last, strategy):
    args = make(shape, channels_last=channels_last)[:5]
    assert_interpreter_parity(
        lambda *a: s0_run("triton", groups, *a),
        lambda *a: s0_run("torch", groups, *a),
        *args,
        rtol=1e-5,
        atol=1e-5,
    )
    assert_interpreter_parity(  # float64 at its own tolerance
        lambda *a: s0_run("triton", groups, *a),
        lambda *a: s0_run("torch", groups, *a),
        *args,
        dtypes=(F64,),
        rtol=1e-11,
        atol=1e-12,
    )


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [case[0] for case in CASES[:3]])
def test_interpreter_parity_b0(shape, channels_last, training, strategy):
    args = make(shape, channels_last=channels_last)
    for dtypes, tol in (((F32,), 1e-5), ((F64,), 1e-11)):
        assert_interpreter_parity(
            lambda *a: b0_run("triton", training, *a),
            lambda *a: b0_run("torch", training, *a),
            *args,
            dtypes=dtypes,
            rtol=tol,
            atol=tol,
        )


# float16 outputs are checked element by element against the eager path in float64 on the same float16 values
# (inputs and parameters): within half a float16 unit in the last place of the exact result (2^-11 of it), plus
# F16_NOISE of the output's scale (1 + its largest magnitude) for the float32 arithmetic. That is the error of a
# correctly rounded result: the kernels compute in float32 and round once, on the store. Rounding one intermediate
# to float16 (the sigmoid gate, say) breaks it. The eager path in float16 (timm's arithmetic: statistics in float32,
# the rest in float16) is off by up to 9e-4 of the scale on these inputs, and by 6.5e-2 in B0's dx in evaluation,
# where float16 rounding makes the two sides of B0's maximum equal at one element, so its gradient is split.
F16_NOISE = 1e-6


def assert_float16_steps(run, args, noise=F16_NOISE):
    """``run(backend, *args)`` in float16 through the Triton path, against the eager path in float64 on the same
    float16 values: float16 outputs, each element correctly rounded up to ``noise`` of its output's scale."""
    half = [a.half() for a in args]
    got = run("triton", *half)
    want = run("torch", *(a.double() for a in half))
    assert [a.dtype for a in got] == [torch.float16] * len(got)
    for index, (a, e) in enumerate(zip(got, want, strict=True)):
        scale = 1.0 + e.abs().max().item()
        assert_close(a.double(), e, rtol=2.0**-11, atol=noise * scale, msg=f"output {index}")


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("shape", "groups"), [CASES[0], CASES[2]])
def test_interpreter_float16(shape, groups, channels_last, strategy):
    # float16 input (the kernels read and write float16 and compute in float32), S0 and B0 in both modes
    args = make(shape, channels_last=channels_last)
    assert_float16_steps(lambda backend, *a: s0_run(backend, groups, *a), args[:5])
    for training in (True, False):
        assert_float16_steps(lambda backend, *a, t=training: b0_run(backend, t, *a), args)


def assert_steps_match_torch(x, cot, w, b, v, rv, backward_rtol, mixed_tol):
    """Each Triton step (S0/B0 forward and backward) against the same step in PyTorch operations, every output
    separately: statistics, running variance (training updates it, evaluation leaves it alone), gradients."""
    for groups in (1, 3, 12):
        got = fused.s0_forward(x, w, b, v, groups, 1e-5, "triton")
        want = fused.s0_forward(x, w, b, v, groups, 1e-5, "torch")
        check_all(got, want, 1e-11, 1e-12)
        stats = want[1:]
        got = fused.s0_backward(cot, x, w, v, *stats, groups, "triton")
        check_all(got, fused.s0_backward(cot, x, w, v, *stats, groups, "torch"), backward_rtol, 1e-12)
    for training in (True, False):
        running_got, running_want = rv.clone(), rv.clone()
        update = {"momentum": 0.3, "correction": 30 / 29}
        got = fused.b0_forward(x, w, b, v, running_got, training, 1e-3, "triton", **update)
        want = fused.b0_forward(x, w, b, v, running_want, training, 1e-3, "torch", **update)
        check_all(got, want, 1e-11, 1e-12)
        assert_close(running_got, running_want, rtol=1e-14, atol=1e-14)
        assert training or torch.equal(running_got, rv)  # evaluation leaves it alone
        stats = (want[1], want[2], want[3], want[4], training)
        got = fused.b0_backward(cot, x, w, v, *stats, "triton")
        check_all(got, fused.b0_backward(cot, x, w, v, *stats, "torch"), backward_rtol, 1e-12)
    # float32 input with a float64 running variance: the update is done in float64 (the float32 batch variance
    # times the momentum rounds once in the reference)
    running_got, running_want = rv.clone(), rv.clone()
    fused.b0_forward(x.float(), w, b, v, running_got, True, 1e-3, "triton", momentum=0.1, correction=1.0)
    fused.b0_forward(x.float(), w, b, v, running_want, True, 1e-3, "torch", momentum=0.1, correction=1.0)
    assert running_got.dtype == F64
    assert_close(running_got, running_want, rtol=mixed_tol, atol=mixed_tol)


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("tile", [2048, 4])
def test_interpreter_finalize_kernels(monkeypatch, tile):
    # the split strategy's finalize kernels (group / batch statistics, the running-variance update, the sums over n
    # of the backward partials and the coefficients of the statistics' terms); tile=4 forces several programs and
    # the loops over n and over the channels of a group
    monkeypatch.setattr(fused, "STRATEGY", "split")
    monkeypatch.setattr(fused, "_FINALIZE_TILE", tile)
    x, cot, w, b, v, rv = make((5, 12, 3, 2))
    assert_steps_match_torch(x, cot, w, b, v, rv, backward_rtol=1e-11, mixed_tol=1e-7)


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("tile", "programs"), [(8, 1), (1024, 1), (1024, 128)])
def test_interpreter_persistent_kernels(monkeypatch, tile, programs, channels_last, wide):
    # the persistent kernels; small tiles force the loops over blocks of a group's channels (merged by Chan's
    # formula), over blocks of samples (B0's batch statistics merged likewise), over H*W, and masked channel blocks;
    # channel means 40 apart make a single shift for the whole group lose precision (hence the per-channel shifts);
    # wide: B0's 64-bit offsets (taken from 2^31 on), forced by lowering the threshold
    monkeypatch.setattr(fused, "STRATEGY", "persistent")
    if wide:
        monkeypatch.setattr(fused, "_INT32_OFFSETS", 1)
    monkeypatch.setitem(fused._PERSISTENT_TILE, "interpret", tile)
    monkeypatch.setitem(fused._TILE, "interpret", tile // 2)
    monkeypatch.setattr(fused, "_PERSISTENT_PROGRAMS", programs)
    x, cot, w, b, v, rv = make((5, 12, 3, 2), channels_last=channels_last)
    x = x + torch.arange(12, dtype=F64).view(1, 12, 1, 1) * 40.0
    assert_steps_match_torch(x, cot, w, b, v, rv, backward_rtol=1e-10, mixed_tol=1e-6)


@pytest.mark.interpret
@needs_interpreter
@pytest.mark.parametrize("channels_last", [False, True])
def test_interpreter_b0_pass_order_and_pipelining_change_no_bit(monkeypatch, channels_last):
    # B0's persistent kernels walk the batch backwards in their second pass (for L2 reuse); that pass is
    # element-wise, so either direction gives the same bits (small tiles: several blocks of samples). Pipelining
    # their loops (_PERSISTENT_STAGES > 1: flattened, software-pipelined tl.range loops) changes when tiles are
    # loaded, not what is computed; the interpreter ignores num_stages, so here this checks the loop form runs
    # (test_cuda_b0_pipelined_matches_eager checks the pipelined builds on a GPU)
    monkeypatch.setattr(fused, "STRATEGY", "persistent")
    monkeypatch.setitem(fused._PERSISTENT_TILE, "interpret", 8)
    monkeypatch.setattr(fused, "_PERSISTENT_PROGRAMS", 1)
    args = make((7, 6, 3, 2), dtype=F32, channels_last=channels_last)
    runs = []
    for reverse, stages in ((True, 1), (False, 1), (True, 3), (False, 2)):
        monkeypatch.setattr(fused, "_PERSISTENT_REVERSE", reverse)
        monkeypatch.setattr(fused, "_PERSISTENT_STAGES", stages)
        runs.append([b0_run("triton", training, *args) for training in (True, False)])
    for run in runs[1:]:
        for got, want in zip(run, runs[0], strict=True):
            for a, e in zip(got, want, strict=True):
                assert torch.equal(a, e)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_row_alignment_hints(monkeypatch, strategy):
    # the kernels with ALIGN 4 (H*W = 12, and every other channel of such maps), 2 (H*W = 6) and 1
    # (every other channel of 3x5 maps: even strides, odd H*W), against the same steps in PyTorch operations; the
    # hints tell the compiler about alignment and change no bit (the interpreter does run the rounding of H*W
    # they imply, which would be wrong for a misjudged ALIGN)
    inputs = []
    for shape, aligned in (((3, 12, 2, 6), 4), ((3, 24, 2, 6), 4), ((3, 12, 2, 3), 2), ((3, 24, 3, 5), 1)):
        x, cot, w, b, v, rv = make(shape)
        if shape[1] == 24:  # a view of every other channel (and a cotangent laid out the same way)
            x, cot, w, b, v, rv = x[:, ::2], cot[:, ::2], w[:12], b[:12], v[:12], rv[:12]
        assert fused._plan(x).align == aligned
        assert_steps_match_torch(x, cot, w, b, v, rv, backward_rtol=1e-10, mixed_tol=1e-6)
        inputs.append((x.float(), cot.float(), w, b, v, rv))
    runs = []
    for hints in (True, False):
        monkeypatch.setattr(fused, "_STRIDE_HINTS", hints)
        runs.append([(s0_run("triton", 2, *a[:5]), b0_run("triton", True, *a)) for a in inputs])
    for got, want in zip(*runs, strict=True):
        for a, e in zip(itertools.chain(*got), itertools.chain(*want), strict=True):
            assert torch.equal(a, e)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_strided_inputs(strategy):
    x, cot, w, b, v, rv = make((2, 6, 4, 5))
    # H and W swapped in memory: they do not flatten, the kernels read a copy
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    check_all(s0_run("triton", 3, xt, cot, w, b, v), s0_run("torch", 3, x, cot, w, b, v), 1e-11, 1e-12)
    check_all(b0_run("triton", True, xt, cot, w, b, v, rv), b0_run("torch", True, x, cot, w, b, v, rv), 1e-11, 1e-12)
    # an expanded cotangent (stride 0 everywhere), as from y.sum().backward()
    ones = torch.ones(1, 1, 1, 1, dtype=F64).expand_as(x)
    check_all(s0_run("triton", 3, x, ones, w, b, v), s0_run("torch", 3, x, ones, w, b, v), 1e-11, 1e-12)
    check_all(b0_run("triton", False, x, ones, w, b, v, rv), b0_run("torch", False, x, ones, w, b, v, rv), 1e-11, 1e-12)
    # parameters in another dtype than x (mixed precision): gradients come back in the parameters' dtype
    got = s0_run("triton", 3, x.float(), cot.float(), w, b, v)
    want = s0_run("torch", 3, x.float(), cot.float(), w, b, v)
    check_all(got, want, 1e-5, 1e-5)


@pytest.mark.interpret
@needs_interpreter
def test_interpreter_gradcheck_and_operator(strategy):
    x, cot, w, b, v, rv = make((2, 4, 3, 3))
    gradcheck_float64(lambda *a: evonorm_s0(*a, groups=2, backend="triton"), x, w, b, v, fast_mode=True)
    gradcheck_float64(
        lambda *a: evonorm_b0(*a, rv.clone(), training=True, backend="triton"), x, w, b, v, fast_mode=True
    )
    # the registered operator's CPU kernel launches the same kernels
    y, mean, rstd = fused.evonorm_s0_fwd_op(x, w, b, v, 2, 1e-5, "triton")
    assert_close(y, s0_run("torch", 2, x, cot, w, b, v)[0], rtol=1e-12, atol=1e-12)
    grads = fused.evonorm_s0_bwd_op(cot, x, w, v, mean, rstd, 2, "triton")
    for a, e in zip(grads, s0_run("torch", 2, x, cot, w, b, v)[1:], strict=True):
        assert_close(a, e, rtol=1e-11, atol=1e-12)


@pytest.mark.interpret
@pytest.mark.compile
@needs_interpreter
def test_interpreter_compile_public_functions():
    # torch.compile(fullgraph=True) of the public functions with backend="triton": the graph holds the operators,
    # whose CPU kernels launch the Triton kernels under the interpreter, forward and backward
    def step(x, w, b, v, running):
        y = evonorm_s0(x, w, b, v, groups=2, backend="triton")
        return evonorm_b0(y, w, b, v, running, training=True, backend="triton").square().sum()

    x, _, w, b, v, rv = make((2, 4, 3, 3))
    inputs = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running = rv.clone()
    got = torch.compile(step, fullgraph=True)(*inputs, running)
    got_grads = torch.autograd.grad(got, inputs)
    reference = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running_ref = rv.clone()
    z = evonorm_b0(evonorm_s0(*reference, groups=2), *reference[1:], running_ref, training=True, backend="torch")
    want = z.square().sum()
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(got_grads, torch.autograd.grad(want, reference), strict=True):
        assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert_close(running, running_ref, rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------------------------- CUDA


def reference64(run, *args):
    """The eager path in float64 on the same values: the common oracle of the float32 and bfloat16 kernels."""
    return run("torch", *(a.double() for a in args))


def assert_matches(got, want, tol):
    for index, (a, e) in enumerate(zip(got, want, strict=True)):
        assert a is not None
        assert_close(a.double(), e, rtol=tol, atol=tol * (1.0 + e.abs().max().item()), msg=f"output {index}")


def assert_direct_repeat(run, got):
    """Runs ``run()`` again, when every launch must take the direct path, and checks it gives ``got`` bit for bit.

    The first run filled the launcher caches through ``JITFunction.run``; the second calls the cached compiled
    kernels' launchers (``sciml_norm._kernels._launch``) with the same arguments: the same kernels on the same
    data, so the same bits.
    """
    from triton.runtime.jit import JITFunction

    calls = []
    original = JITFunction.run

    def counted(self, *args, **kwargs):
        calls.append(self.fn.__name__)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JITFunction, "run", counted)
        again = run()
    assert calls == [], f"launches through JITFunction.run on the repeat: {calls}"
    for index, (a, e) in enumerate(zip(again, got, strict=True)):
        assert torch.equal(a, e), f"output {index} differs between the Triton and the direct launch"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "tol"), [(F32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("shape", "groups"), [((8, 64, 28, 28), 32), ((4, 96, 7, 7), 8), ((3, 40, 33, 17), 5)])
def test_cuda_s0_matches_eager(dtype, tol, channels_last, shape, groups, strategy):
    args = make(shape, dtype=dtype, channels_last=channels_last, device="cuda")[:5]
    got = s0_run("triton", groups, *args)
    assert got[0].dtype == dtype
    assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert_matches(got, reference64(lambda backend, *a: s0_run(backend, groups, *a), *args), tol)
    assert_direct_repeat(lambda: s0_run("triton", groups, *args), got)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("dtype", "tol"), [(F32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(8, 64, 28, 28), (16, 96, 7, 7), (3, 40, 33, 17), (64, 256, 7, 7)])
def test_cuda_b0_matches_eager(dtype, tol, channels_last, training, shape, strategy):
    args = make(shape, dtype=dtype, channels_last=channels_last, device="cuda")
    got = b0_run("triton", training, *args)
    assert got[0].dtype == dtype
    assert_matches(got, reference64(lambda backend, *a: b0_run(backend, training, *a), *args), tol)
    assert_direct_repeat(lambda: b0_run("triton", training, *args), got)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("shape", "channels_last"), [((16, 96, 7, 7), False), ((8, 64, 28, 28), True)])
def test_cuda_float16_matches_eager(channels_last, shape, strategy):
    # float16 input on CUDA, two cases per strategy (each dtype compiles its own kernels within the GPU run's time);
    # the float32 arithmetic's share is given the float32 tests' tolerance (sums over up to 6272 elements here)
    args = make(shape, channels_last=channels_last, device="cuda")
    assert_float16_steps(lambda backend, *a: s0_run(backend, 8, *a), args[:5], noise=1e-5)
    for training in (True, False):
        assert_float16_steps(lambda backend, *a, t=training: b0_run(backend, t, *a), args, noise=1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_b0_wide_offsets_match_eager(monkeypatch, channels_last):
    # B0's persistent kernels with 64-bit offsets (taken only from 2^31 on; forced here by lowering the threshold)
    monkeypatch.setattr(fused, "STRATEGY", "persistent")
    monkeypatch.setattr(fused, "_INT32_OFFSETS", 1)
    args = make((8, 64, 28, 28), dtype=F32, channels_last=channels_last, device="cuda")
    assert fused._b0_persistent(fused._plan(args[0])).wide
    got = b0_run("triton", True, *args)
    assert_matches(got, reference64(lambda backend, *a: b0_run(backend, True, *a), *args), 1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    ("shape", "dtype", "training"),
    [
        *itertools.product([(8, 64, 28, 28), (16, 128, 7, 7)], [F32, torch.bfloat16], [True, False]),
        ((3, 40, 33, 17), F32, True),  # several H x W blocks per sample, masked channel blocks
    ],
)
def test_cuda_b0_pipelined_matches_eager(monkeypatch, training, shape, dtype):
    # B0's persistent kernels with their loops software-pipelined (3 stages of asynchronous copies through shared
    # memory, the sweep's variant); a few cases, as each compiles its own kernels within the GPU run's time
    monkeypatch.setattr(fused, "STRATEGY", "persistent")
    monkeypatch.setattr(fused, "_PERSISTENT_STAGES", 3)
    args = make(shape, dtype=dtype, device="cuda")
    got = b0_run("triton", training, *args)
    tol = 1e-5 if dtype == F32 else 1e-2
    assert_matches(got, reference64(lambda backend, *a: b0_run(backend, training, *a), *args), tol)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    ("case", "dtype"),
    [("nchw", F32), ("nchw", torch.bfloat16), ("misaligned", F32), ("channel-view", torch.bfloat16),
     ("pipelined", torch.bfloat16), ("split", F32), ("split", torch.bfloat16)],
)  # fmt: skip
def test_cuda_row_alignment_hints_match_eager(monkeypatch, case, dtype):
    # the persistent kernels at 14x14 NCHW, where the row-alignment hints give vector loads (ALIGN 4): plain; with
    # x at an odd element offset (Triton then does not vectorize the loads of x: its base address is not aligned);
    # a view of every other channel of odd 3x5 maps (no hint); B0 with pipelined loops (bfloat16 rows are then
    # copied 8 bytes at a time); the split kernels. S0 too where its kernels differ from the other tests'. Few
    # cases: each compiles its own kernels within the GPU run's time
    monkeypatch.setattr(fused, "STRATEGY", "split" if case == "split" else "persistent")
    shape = (8, 64, 14, 14)
    args = make(shape, dtype=dtype, device="cuda")
    if case == "misaligned":
        buffer = torch.empty(args[0].numel() + 1, dtype=dtype, device="cuda")
        args[0] = buffer[1:].view(shape).copy_(args[0])
    elif case == "channel-view":
        args = make((8, 128, 3, 5), dtype=dtype, device="cuda")
        args = [args[0][:, ::2], args[1][:, ::2], *(t[:64] for t in args[2:])]
    elif case == "pipelined":
        monkeypatch.setattr(fused, "_PERSISTENT_STAGES", 3)
    tol = 1e-5 if dtype == F32 else 1e-2
    assert fused._plan(args[0]).align == (1 if case == "channel-view" else 4)
    got = b0_run("triton", True, *args)
    assert_matches(got, reference64(lambda backend, *a: b0_run(backend, True, *a), *args), tol)
    if case in ("nchw", "misaligned", "split"):
        got = s0_run("triton", 8, *args[:5])
        assert_matches(got, reference64(lambda backend, *a: s0_run(backend, 8, *a), *args[:5]), tol)


@pytest.mark.gpu
@needs_cuda
def test_cuda_auto_takes_the_kernels(monkeypatch):
    calls = []
    original = fused.evonorm_s0_fused

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "evonorm_s0_fused", spy)
    x, _, w, b, v, _ = make((2, 8, 4, 4), dtype=F32, device="cuda")
    evonorm_s0(x, w, b, v, groups=2)
    assert calls == ["triton"]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.compile
def test_cuda_compile_fullgraph(strategy):
    def step(x, w, b, v, running):
        y = evonorm_s0(x, w, b, v, groups=4, backend="triton")
        return evonorm_b0(y, w, b, v, running, training=True, backend="triton").square().sum()

    x, _, w, b, v, rv = make((4, 16, 9, 9), dtype=F32, device="cuda")
    inputs = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running = rv.clone()
    got = torch.compile(step, fullgraph=True)(*inputs, running)
    got_grads = torch.autograd.grad(got, inputs)
    reference = [t.clone().requires_grad_() for t in (x, w, b, v)]
    running_ref = rv.clone()
    want = step(*reference, running_ref)
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, e in zip(got_grads, torch.autograd.grad(want, reference), strict=True):
        assert_close(a, e, rtol=1e-5, atol=1e-5)
    assert_close(running, running_ref, rtol=1e-6, atol=1e-6)
