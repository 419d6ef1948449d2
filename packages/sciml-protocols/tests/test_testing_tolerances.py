import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import TOLERANCES, assert_close, tolerances

# The torch.testing.assert_close defaults, written out: the table must not drift from them.
TORCH_TESTING_DEFAULTS = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def test_table_holds_the_torch_testing_defaults():
    assert dict(TOLERANCES) == TORCH_TESTING_DEFAULTS
    for dtype, pair in TORCH_TESTING_DEFAULTS.items():
        assert tolerances(dtype) == pair


def test_table_is_read_only():
    with pytest.raises(TypeError):
        TOLERANCES[torch.float32] = (0.0, 0.0)  # type: ignore[index]


def test_scale_multiplies_both_and_complex_uses_the_real_row():
    assert tolerances(torch.float32, scale=100.0) == pytest.approx((1.3e-4, 1e-3))
    assert tolerances(torch.complex64) == (1.3e-6, 1e-5)
    assert tolerances(torch.complex128) == (1e-7, 1e-7)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float8_e4m3fn])
def test_dtypes_without_a_row_are_refused(dtype):
    with pytest.raises(SciMLInputError, match="no default tolerances"):
        tolerances(dtype)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_non_positive_scale_is_refused(scale):
    with pytest.raises(SciMLInputError, match="scale"):
        tolerances(torch.float32, scale=scale)


def test_the_bound_is_atol_plus_rtol_times_expected():
    expected = torch.tensor([1.0, 100.0], dtype=torch.float64)
    # float64 row: allowed |a - e| is 1e-7 + 1e-7 |e|, i.e. 2e-7 at 1 and 1.01e-5 at 100.
    assert_close(expected + torch.tensor([1.9e-7, 1.0e-5], dtype=torch.float64), expected)
    with pytest.raises(AssertionError):
        assert_close(expected + torch.tensor([2.1e-7, 0.0], dtype=torch.float64), expected)
    with pytest.raises(AssertionError):
        assert_close(expected + torch.tensor([0.0, 1.02e-5], dtype=torch.float64), expected)


def test_the_less_precise_dtype_sets_the_default_tolerances():
    reference = torch.ones(4, dtype=torch.float64)
    shifted = reference + 5e-6
    assert_close(shifted.to(torch.float32), reference)  # float32 row: 1e-5 + 1.3e-6
    assert_close(reference, shifted.to(torch.float32))
    with pytest.raises(AssertionError, match=r"torch\.float64 row"):
        assert_close(shifted, reference)
    assert_close(torch.ones(2, dtype=torch.bfloat16), torch.full((2,), 1.01, dtype=torch.float16))


def test_dtype_argument_overrides_the_row():
    reference = torch.ones(3)
    with pytest.raises(AssertionError, match=r"torch\.float64 row"):
        assert_close(reference + 5e-6, reference, dtype=torch.float64)


def test_one_explicit_tolerance_keeps_the_table_value_of_the_other():
    reference = torch.ones(3, dtype=torch.float64)
    assert_close(reference + 5e-8, reference, rtol=0.0)  # atol 1e-7 still applies
    with pytest.raises(AssertionError, match="rtol=0, atol=1e-07"):
        assert_close(reference + 5e-7, reference, rtol=0.0)


def test_failure_message_reports_both_worst_errors_and_where():
    expected = torch.tensor([[100.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    actual = torch.tensor([[101.0, 1.5], [2.0, 3.0]], dtype=torch.float64)
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, msg="step 7 of the solver")
    message = str(info.value)
    assert message.startswith("step 7 of the solver\n")
    assert "2 / 4 entries (50.0%) mismatch" in message
    # |101 - 100| = 1 is the largest absolute error; |1.5 - 1| / 1 = 0.5 the largest relative one.
    assert "Greatest absolute difference: 1 at index (0, 0) (actual 101, expected 100" in message
    assert "Greatest relative difference: 0.5 at index (0, 1) (actual 1.5, expected 1" in message
    assert "rtol=1e-07, atol=1e-07" in message


def test_shape_and_device_mismatches_fail():
    with pytest.raises(AssertionError, match=r"Shape mismatch: actual \(3,\), expected \(1, 3\)"):
        assert_close(torch.zeros(3), torch.zeros(1, 3))
    with pytest.raises(AssertionError, match="Device mismatch"):
        assert_close(torch.zeros(3), torch.zeros(3, device="meta"))


def test_nan_and_infinity():
    nan = torch.tensor([1.0, math.nan])
    with pytest.raises(AssertionError, match=r"at index \(1,\)"):
        assert_close(nan, nan)
    assert_close(nan, nan, equal_nan=True)
    with pytest.raises(AssertionError, match=r"at index \(1,\)"):
        assert_close(torch.tensor([1.0, 2.0]), nan, equal_nan=True)
    infinite = torch.tensor([math.inf, -math.inf, 0.0])
    assert_close(infinite, infinite.clone())
    with pytest.raises(AssertionError):
        assert_close(infinite, -infinite)


def test_python_numbers_broadcast_and_do_not_choose_the_row():
    assert_close(torch.full((2, 2), 2.0, dtype=torch.float64), 2.0)
    assert_close(torch.tensor([1.0 + 5e-6]), 1.0)  # float32 tensor: float32 row
    with pytest.raises(AssertionError, match=r"torch\.float64 row"):
        assert_close(torch.tensor([1.0 + 5e-6], dtype=torch.float64), 1.0)


def test_numpy_arrays_and_complex_values():
    assert_close(np.array([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64))
    z = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex128)
    assert_close(z, z + 1e-9)
    with pytest.raises(AssertionError):
        assert_close(z, z + 1e-3j)


def test_integer_inputs_compare_exactly():
    assert_close(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]))
    with pytest.raises(AssertionError, match="exact: no floating input"):
        assert_close(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]))


def test_empty_tensors_of_equal_shape_are_close():
    assert_close(torch.zeros(0, 3), torch.ones(0, 3))


@pytest.mark.parametrize(("argument", "value"), [("rtol", -1e-3), ("atol", math.nan)])
def test_invalid_tolerances_are_refused(argument, value):
    with pytest.raises(SciMLInputError, match=argument):
        assert_close(torch.zeros(2), torch.zeros(2), **{argument: value})


def test_unconvertible_input_is_refused():
    with pytest.raises(SciMLInputError, match="actual"):
        assert_close(object(), torch.zeros(2))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    exponent=st.floats(-9.0, -1.0),
    seed=st.integers(0, 2**16),
)
def test_agrees_with_torch_testing_on_same_dtype_inputs(dtype, exponent, seed):
    generator = torch.Generator().manual_seed(seed)
    expected = torch.randn(6, generator=generator, dtype=torch.float64).to(dtype)
    noise = torch.randn(6, generator=generator, dtype=torch.float64) * 10.0**exponent
    actual = (expected.to(torch.float64) + noise).to(dtype)
    # torch.isclose computes in the inputs' dtype, this kit in float64: they may differ within rounding of the bound.
    rtol, atol = TORCH_TESTING_DEFAULTS[dtype]
    a64, e64 = actual.to(torch.float64), expected.to(torch.float64)
    ratio = (a64 - e64).abs() / (atol + rtol * e64.abs())
    assume(not bool(((ratio - 1).abs() < 1e-2).any()))
    try:
        torch.testing.assert_close(actual, expected)
        torch_says_close = True
    except AssertionError:
        torch_says_close = False
    try:
        assert_close(actual, expected)
        kit_says_close = True
    except AssertionError:
        kit_says_close = False
    assert kit_says_close == torch_says_close
