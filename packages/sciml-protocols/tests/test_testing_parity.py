import pytest
import torch
from sciml_protocols import SciMLError, SciMLInputError
from sciml_protocols.testing import assert_interpreter_parity, interpreter_enabled


def axpy_reference(alpha, x, y):
    return alpha * x + y


def axpy_other_route(alpha, x, y):
    return torch.addcmul(y, torch.full_like(x, alpha), x)


def never_called(*args):
    raise AssertionError("the kernel must not run when the inputs are refused")


@pytest.fixture
def interpreter_on(monkeypatch):
    # Only the environment check is under test here; no triton kernel runs in this file.
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.parametrize(("value", "enabled"), [("1", True), ("0", False), ("true", False), (None, False)])
def test_interpreter_enabled_reads_the_environment(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreter_enabled() is enabled


def test_bfloat16_is_refused(interpreter_on):
    with pytest.raises(SciMLInputError, match="bfloat16 is broken in the Triton interpreter"):
        assert_interpreter_parity(
            never_called, axpy_reference, 2.0, torch.ones(4), torch.ones(4), dtypes=(torch.float32, torch.bfloat16)
        )


def test_non_floating_or_empty_dtypes_are_refused(interpreter_on):
    with pytest.raises(SciMLInputError, match="floating dtypes only"):
        assert_interpreter_parity(never_called, axpy_reference, torch.ones(2), dtypes=(torch.int32,))
    with pytest.raises(SciMLInputError, match="non-empty"):
        assert_interpreter_parity(never_called, axpy_reference, torch.ones(2), dtypes=())


def test_large_inputs_are_refused(interpreter_on):
    with pytest.raises(SciMLInputError, match=r"inputs\[2\].*10001 elements, more than max_elements=10000"):
        assert_interpreter_parity(never_called, axpy_reference, 2.0, torch.ones(10), torch.ones(10_001))
    with pytest.raises(SciMLInputError, match="max_elements=8"):
        assert_interpreter_parity(never_called, axpy_reference, 2.0, torch.ones(9), torch.ones(9), max_elements=8)
    assert_interpreter_parity(axpy_other_route, axpy_reference, 2.0, torch.ones(8), torch.ones(8), max_elements=8)


def test_tensors_off_the_cpu_are_refused(interpreter_on):
    with pytest.raises(SciMLInputError, match=r"'inputs\[1\]': must be a CPU tensor"):
        assert_interpreter_parity(never_called, axpy_reference, 2.0, torch.ones(4, device="meta"), torch.ones(4))


def test_interpreter_off_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SciMLError, match="TRITON_INTERPRET") as info:
        assert_interpreter_parity(never_called, axpy_reference, 2.0, torch.ones(4), torch.ones(4))
    assert "before triton and the module defining the kernels are imported" in str(info.value)
    assert not isinstance(info.value, SciMLInputError)


def test_each_dtype_runs_on_its_own_copies(interpreter_on):
    seen = []

    def kernel(alpha, x, y, index):
        seen.append((x.dtype, y.dtype, index.dtype))
        y.mul_(0.0)  # scribbling on its inputs must not reach the reference
        return axpy_other_route(alpha, x, y) + alpha * x + y

    def reference(alpha, x, y, index):
        return 2 * alpha * x

    x = torch.linspace(-1.0, 1.0, 7)
    index = torch.arange(3)
    assert_interpreter_parity(kernel, reference, 1.5, x, torch.ones(7), index)
    assert seen == [(torch.float32, torch.float32, torch.int64), (torch.float64, torch.float64, torch.int64)]


def test_a_wrong_kernel_fails_naming_the_dtype(interpreter_on):
    def off_by_a_little(alpha, x, y):
        return alpha * x + y + 1e-4

    with pytest.raises(AssertionError, match=r"kernel vs reference, dtype torch\.float32, output 0"):
        assert_interpreter_parity(off_by_a_little, axpy_reference, 2.0, torch.ones(5), torch.ones(5))


def test_float64_catches_what_float32_tolerances_hide(interpreter_on):
    def square_minus_100_in_float32(x):
        return (x.float() ** 2 - 100.0).to(x.dtype)

    def square_minus_100(x):
        return x**2 - 100.0

    # Cancellation turns float32's rounding of x near 10 into a relative error of about 1e-5 in the result: far
    # beyond float64 tolerances, while in float32 the kernel is the reference.
    x = 10.0 + torch.linspace(0.01, 0.02, 50, dtype=torch.float64)
    assert_interpreter_parity(square_minus_100_in_float32, square_minus_100, x, dtypes=(torch.float32,))
    with pytest.raises(AssertionError, match=r"dtype torch\.float64"):
        assert_interpreter_parity(square_minus_100_in_float32, square_minus_100, x)


def test_explicit_tolerances_are_used(interpreter_on):
    def off(alpha, x, y):
        return alpha * x + y + 1e-4

    assert_interpreter_parity(off, axpy_reference, 2.0, torch.ones(5), torch.ones(5), rtol=0.0, atol=2e-4)


def test_output_dtype_and_count_must_match(interpreter_on):
    def always_float32(alpha, x, y):
        return (alpha * x + y).float()

    with pytest.raises(AssertionError, match=r"kernel returned torch\.float32, the reference torch\.float64"):
        assert_interpreter_parity(always_float32, axpy_reference, 2.0, torch.ones(3), torch.ones(3))

    def two_outputs(alpha, x, y):
        return alpha * x + y, x

    with pytest.raises(AssertionError, match="kernel gave 2 outputs, the reference 1"):
        assert_interpreter_parity(two_outputs, axpy_reference, 2.0, torch.ones(3), torch.ones(3))

    with pytest.raises(AssertionError, match="kernel must return a tensor"):
        assert_interpreter_parity(lambda *a: 1.0, axpy_reference, 2.0, torch.ones(3), torch.ones(3))


def test_in_place_kernels_are_compared_through_their_arguments(interpreter_on):
    def axpy_in_place(alpha, x, y):
        y.add_(x, alpha=alpha)

    def axpy_in_place_reference(alpha, x, y):
        y.copy_(alpha * x + y)

    def wrong_in_place(alpha, x, y):
        y.add_(x)

    x, y = torch.linspace(0.0, 1.0, 6), torch.ones(6)
    assert_interpreter_parity(axpy_in_place, axpy_in_place_reference, 3.0, x, y)
    with pytest.raises(AssertionError, match="output 1"):
        assert_interpreter_parity(wrong_in_place, axpy_in_place_reference, 3.0, x, y)
