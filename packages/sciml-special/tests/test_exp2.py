"""exp2_evolved: accuracy against float64 oracles, special values, dispatch, autograd, Triton parity."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import sciml_special
import torch
from sciml_protocols import SciMLError, SciMLInputError
from sciml_special import exp2_evolved
from sciml_special._evolve import ulp_error
from sciml_special._exp2 import EXP2_NEGATIVE_PROGRAM, EXP2_PROGRAM, benchmark_exp2_evolved, exp2_evolved_numpy


def _float32_between(low: float, high: float) -> np.ndarray:
    """Every float32 in [low, high] for bounds of one sign (by bit pattern)."""
    a, b = (int(np.float32(v).view(np.uint32)) for v in (low, high))
    return np.arange(min(a, b), max(a, b) + 1, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _max_ulp(x: np.ndarray) -> tuple[float, float]:
    got = exp2_evolved(torch.from_numpy(x)).numpy()
    exact = torch.exp2(torch.from_numpy(x).double()).numpy()  # the float64 oracle
    error = ulp_error(got, exact)
    worst = int(np.argmax(error))
    return float(error[worst]), float(x[worst])


def test_reduced_domain_random_sample_below_one_ulp():
    rng = np.random.default_rng(0)
    x = rng.random(1 << 18).astype(np.float32) % np.float32(1.0)
    top = (np.float32(1.0).view(np.uint32) - np.arange(1, 1 << 13, dtype=np.uint32)).view(np.float32)  # near 1
    error, where = _max_ulp(np.concatenate([x, top]))
    assert error < 1.0, f"{error} ULP at x = {where!r}"


def test_full_range_sample_below_one_ulp():
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.uniform(-150, 128, 1 << 17),
            rng.uniform(-1, 1, 1 << 16),
            -(2.0 ** rng.uniform(-149, -1, 1 << 15)),  # small negative inputs: the second program
            2.0 ** rng.uniform(-149, 0, 1 << 14),
        ]
    ).astype(np.float32)
    x = x[(x > -150) & (x < 128)]
    error, where = _max_ulp(x)
    assert error < 1.0, f"{error} ULP at x = {where!r}"


def test_subnormal_results_every_float32_near_the_edges():
    x = np.concatenate([_float32_between(-127.0, -125.5)[::3], _float32_between(-150.0, -148.5)[::3]])
    error, where = _max_ulp(x)
    assert error < 1.0, f"{error} ULP at x = {where!r}"
    got = exp2_evolved(torch.from_numpy(x)).numpy()
    assert np.all(got[x < -126] < 2.0**-126)  # subnormal results stay subnormal (not flushed, not normalised)
    assert np.count_nonzero((got > 0) & (got < 2.0**-126)) > 0


def test_overflow_edge_every_float32_in_127_128():
    x = np.append(_float32_between(127.0, 128.0)[::7], np.float32(128.0))
    got = exp2_evolved(torch.from_numpy(x)).numpy()
    assert np.all(np.isfinite(got[x < 128]))
    assert got[x == 128].tolist() == [math.inf]
    error, where = _max_ulp(x[x < 128])
    assert error < 1.0, f"{error} ULP at x = {where!r}"


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, 1.0),
        (-0.0, 1.0),
        (1.0, 2.0),
        (-1.0, 0.5),
        (0.5, float(np.float32(math.sqrt(2.0)))),
        (10.0, 1024.0),
        (-126.0, 2.0**-126),
        (-149.0, 2.0**-149),
        (-149.5, 2.0**-149),  # 2^-149.5 = 0.71 * 2^-149 rounds up to the smallest subnormal
        (-150.0, 0.0),  # exactly halfway to 2^-149: ties to even
        (-150.5, 0.0),
        (-1000.0, 0.0),
        (127.0, 2.0**127),
        (128.0, math.inf),
        (1e30, math.inf),
        (-math.inf, 0.0),
        (math.inf, math.inf),
    ],
)
def test_special_values(x, expected):
    assert exp2_evolved(torch.tensor([x])).item() == expected


def test_special_values_near_one_and_nan():
    one_minus = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    x = torch.tensor([one_minus, 127.99, float("nan"), -(2.0**-30), 2.0**-30, 1e-45, -1e-45])
    got = exp2_evolved(x)
    exact = torch.exp2(x.double())
    assert math.isnan(got[2].item())
    keep = [0, 1, 3, 4, 5, 6]
    assert float(ulp_error(got[keep].numpy(), exact[keep].numpy()).max()) < 1.0
    assert got[3].item() == float(np.float32(2.0 ** (-(2.0**-30))))  # 1 - tiny rounds to the float below 1 or 1
    assert got[5].item() == 1.0
    assert got[6].item() == 1.0


def test_torch_path_is_bitwise_equal_to_the_numpy_emulation():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)  # every kind of value
    want = exp2_evolved_numpy(x)
    got = exp2_evolved(torch.from_numpy(x), backend="torch").numpy()
    assert np.array_equal(want.view(np.uint32), got.view(np.uint32))


def test_shape_dtype_device_and_half_precision():
    x = torch.linspace(-20, 20, 24).reshape(2, 3, 4)
    y = exp2_evolved(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    assert y.device == x.device
    for dtype in (torch.float16, torch.bfloat16):
        half = x.to(dtype)
        out = exp2_evolved(half)
        assert out.dtype == dtype
        torch.testing.assert_close(out, torch.exp2(half.float()).to(dtype), rtol=0, atol=0)
    assert exp2_evolved(torch.empty(0)).shape == (0,)
    strided = torch.linspace(-3, 3, 20)[::2]
    assert torch.equal(exp2_evolved(strided), exp2_evolved(strided.contiguous()))


def test_autograd_is_ln2_times_the_value():
    x = torch.linspace(-5, 5, 11, requires_grad=True)
    y = exp2_evolved(x)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, y.detach() * math.log(2.0))


def test_opcheck():
    x = torch.linspace(-20, 20, 16)
    torch.library.opcheck(torch.ops.sciml_special.exp2_evolved.default, (x, False))


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(2, dtype=torch.float64), "float64"),
        (torch.zeros(2, dtype=torch.int64), "float32, float16 or bfloat16"),
        (torch.zeros(2, dtype=torch.complex64), "float32, float16 or bfloat16"),
        ([1.0, 2.0], "torch.Tensor"),
    ],
)
def test_bad_inputs(x, match):
    with pytest.raises(SciMLInputError, match=match):
        exp2_evolved(x)


def test_backend_dispatch_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.linspace(-3, 3, 8)
    assert torch.equal(exp2_evolved(x, backend="auto"), exp2_evolved(x, backend="torch"))
    with pytest.raises(SciMLInputError, match="backend"):
        exp2_evolved(x, backend="cuda")
    # An explicit Triton request on CPU tensors raises (never launches) without the interpreter.
    with pytest.raises((SciMLInputError, SciMLError)):
        exp2_evolved(x, backend="triton")


def test_program_sources_in_the_kernel_file_match_the_shipped_programs():
    kernel_file = pathlib.Path(sciml_special.__file__).parent / "_kernels" / "exp2.py"
    text = kernel_file.read_text()
    assert EXP2_PROGRAM.to_triton_source("_exp2_reduced") in text
    assert EXP2_NEGATIVE_PROGRAM.to_triton_source("_exp2_negative") in text


def test_benchmark_helper_on_cpu():
    rows = benchmark_exp2_evolved(sizes=(512,), min_run_time=0.01)
    assert [row["implementation"] for row in rows] == ["torch.exp2", "exp2_evolved[torch]"]
    assert all(row["seconds"] > 0 and row["max_ulp"] < 1 for row in rows)
    with pytest.raises(SciMLInputError, match="sizes"):
        benchmark_exp2_evolved(sizes=(0,))


# ---------------------------------------------------------------------------------------------- Triton


def _interpreter_inputs() -> torch.Tensor:
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.uniform(-152, 130, 3000),
            rng.uniform(-1, 1, 3000),
            -(2.0 ** rng.uniform(-40, -1, 1000)),
            [0.0, -0.0, 1.0, -0.5, 0.5, 127.99, 128.0, -126.0, -149.0, -150.0, -149.5, math.inf, -math.inf, math.nan],
        ]
    ).astype(np.float32)
    return torch.from_numpy(x)


@pytest.mark.interpret
def test_triton_kernel_parity_under_the_interpreter():
    from sciml_protocols.testing import assert_interpreter_parity
    from sciml_special._kernels.exp2 import exp2_evolved_triton

    x = _interpreter_inputs()
    assert_interpreter_parity(
        exp2_evolved_triton, lambda t: exp2_evolved(t, backend="torch"), x, dtypes=(torch.float32,), equal_nan=True
    )
    # The interpreter rounds tl.fma once, as the GPU does: the results agree bit for bit.
    got = exp2_evolved_triton(x).numpy()
    assert np.array_equal(got.view(np.uint32), exp2_evolved_numpy(x.numpy()).view(np.uint32))


@pytest.mark.interpret
def test_triton_backend_dispatch_under_the_interpreter():
    x = _interpreter_inputs()[:2000].reshape(40, 50)
    got = exp2_evolved(x, backend="triton")
    assert got.shape == x.shape
    assert torch.equal(got, exp2_evolved(x, backend="torch"))


@pytest.mark.gpu
def test_triton_on_cuda_matches_the_reference_bitwise():
    x = torch.from_numpy(
        np.random.default_rng(4).integers(0, 2**32, 1 << 22, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ).to("cuda")
    triton_result = exp2_evolved(x, backend="triton")
    reference = exp2_evolved(x, backend="torch")
    assert torch.equal(triton_result.view(torch.int32), reference.view(torch.int32))


@pytest.mark.gpu
def test_cuda_accuracy_and_special_values():
    x = torch.cat(
        [
            torch.rand(1 << 22, device="cuda") * 278 - 150,
            torch.tensor([0.0, -126.0, -149.0, -150.0, 128.0, -math.inf, math.inf], device="cuda"),
        ]
    )
    for backend in ("auto", "torch"):
        got = exp2_evolved(x, backend=backend).cpu().numpy()
        exact = torch.exp2(x.double()).cpu().numpy()
        assert float(ulp_error(got, exact).max()) < 1.0
    assert exp2_evolved(torch.tensor([float("nan")], device="cuda")).isnan().all()
    half = exp2_evolved(x[:1000].half())
    assert half.dtype == torch.float16
    assert half.device.type == "cuda"


@pytest.mark.gpu
def test_cuda_benchmark_helper_runs_both_backends():
    rows = benchmark_exp2_evolved(device="cuda", sizes=(1 << 20,), min_run_time=0.05)
    names = [row["implementation"] for row in rows]
    assert names[:2] == ["torch.exp2", "exp2_evolved[torch]"]
    assert all(row["max_ulp"] < 1 for row in rows)
