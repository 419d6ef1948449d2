"""Per-dtype tolerances and a tensor comparison whose failure message says how far off and where."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import torch

from sciml_protocols._errors import SciMLInputError
from sciml_protocols._validation import check_positive

__all__ = ["TOLERANCES", "assert_close", "tolerances"]

# Same defaults as torch.testing.assert_close, so a failure here is a failure there too.
TOLERANCES: Mapping[torch.dtype, tuple[float, float]] = MappingProxyType(
    {
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
        torch.float32: (1.3e-6, 1e-5),
        torch.float64: (1e-7, 1e-7),
    }
)
"""Default ``(rtol, atol)`` per floating dtype: the torch.testing defaults. Complex dtypes use their real part's row."""

_PYTHON_SCALARS = (bool, int, float, complex)


def tolerances(dtype: torch.dtype, *, scale: float = 1.0) -> tuple[float, float]:
    r"""Default ``(rtol, atol)`` for comparing tensors of ``dtype``.

    Two values :math:`a` (actual) and :math:`e` (expected) are close when
    :math:`|a - e| \le \mathrm{atol} + \mathrm{rtol}\,|e|`. The table (:data:`TOLERANCES`) holds the torch.testing
    defaults; ``scale`` loosens both for computations that lose more digits than one rounding (long reductions,
    iterative solvers).

    Args:
        dtype: a floating dtype (float16, bfloat16, float32, float64) or a complex one (uses its real part's row).
        scale: positive factor applied to both tolerances.

    Returns:
        ``(rtol, atol)``.

    Raises:
        SciMLInputError: for a dtype without a row (integers, float8) or a non-positive scale.

    Example:
        >>> tolerances(torch.float32)
        (1.3e-06, 1e-05)
        >>> tolerances(torch.complex128, scale=10.0)
        (1e-06, 1e-06)
    """
    check_positive("scale", scale)
    real = dtype.to_real() if dtype.is_complex else dtype
    if real not in TOLERANCES:
        covered = ", ".join(str(d) for d in TOLERANCES)
        raise SciMLInputError(
            "dtype", f"has no default tolerances: {dtype} (the table covers {covered}); pass rtol and atol"
        )
    rtol, atol = TOLERANCES[real]
    return rtol * scale, atol * scale


def _as_tensor(name: str, value: torch.Tensor | npt.ArrayLike) -> tuple[torch.Tensor, bool]:
    """Return the value as a tensor and whether its dtype should count when choosing tolerances."""
    if isinstance(value, torch.Tensor):
        return value, True
    if isinstance(value, _PYTHON_SCALARS):
        # A bare Python number has no precision of its own: it must not drag a float64 comparison down to the
        # float32 row just because torch's default dtype is float32.
        dtype = torch.complex128 if isinstance(value, complex) else torch.float64
        return torch.tensor(value, dtype=dtype), False
    try:
        return torch.as_tensor(np.asarray(value)), True
    except (TypeError, ValueError, RuntimeError) as err:
        raise SciMLInputError(name, f"cannot be converted to a tensor: {err}") from err


def _least_precise(dtypes: list[torch.dtype]) -> torch.dtype | None:
    inexact = [d.to_real() if d.is_complex else d for d in dtypes if d.is_floating_point or d.is_complex]
    if not inexact:
        return None
    return max(inexact, key=lambda d: torch.finfo(d).eps)


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, tuple(shape))) if len(shape) else ()


def assert_close(
    actual: torch.Tensor | npt.ArrayLike,
    expected: torch.Tensor | npt.ArrayLike,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | None = None,
    equal_nan: bool = False,
    msg: str = "",
) -> None:
    r"""Raise :class:`AssertionError` unless every entry satisfies :math:`|a - e| \le \mathrm{atol} + \mathrm{rtol}|e|`.

    Unlike :func:`torch.testing.assert_close` the dtypes may differ (comparing a float32 kernel against a float64
    reference is the point); the default tolerances come from the row of :data:`TOLERANCES` of the *less precise*
    of the two dtypes (or of ``dtype`` when given). Equal infinities count as close. Python numbers broadcast to the
    other argument's shape and do not take part in choosing the tolerances.

    The failure message gives the number of mismatched entries, the greatest absolute and relative errors with the
    index where each occurs, the values there, and the tolerances used.

    Args:
        actual: the computed tensor (or array, or number).
        expected: the reference, same shape and device.
        rtol: relative tolerance; taken from the table when None.
        atol: absolute tolerance; taken from the table when None. Passing only one of the two keeps the table value
            of the other.
        dtype: the dtype whose row sets the default tolerances, instead of the less precise input dtype.
        equal_nan: count NaN in both tensors at the same index as close.
        msg: context put at the top of the failure message (which kernel, which dtype, which step).

    Raises:
        AssertionError: on a shape or device mismatch or when some entry is not close.
        SciMLInputError: for negative tolerances or inputs that are not tensors, arrays or numbers.

    Example:
        >>> assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6], dtype=torch.float64))
        >>> assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), msg="toy")
        Traceback (most recent call last):
        ...
        AssertionError: toy
        Tensors are not close: 1 / 2 entries (50.0%) mismatch.
        Greatest absolute difference: 0.5 at index (1,) (actual 2, expected 2.5; atol 1e-05)
        Greatest relative difference: 0.2 at index (1,) (actual 2, expected 2.5; rtol 1.3e-06)
        Tolerances: rtol=1.3e-06, atol=1e-05 (torch.float32 row)
    """
    actual_tensor, actual_counts = _as_tensor("actual", actual)
    expected_tensor, expected_counts = _as_tensor("expected", expected)
    if rtol is not None:
        check_positive("rtol", rtol, strict=False)
    if atol is not None:
        check_positive("atol", atol, strict=False)

    counted = [t.dtype for t, counts in ((actual_tensor, actual_counts), (expected_tensor, expected_counts)) if counts]
    row = dtype if dtype is not None else _least_precise(counted)
    if row is None:
        table_rtol, table_atol = 0.0, 0.0
        row_name = "exact: no floating input"
    else:
        table_rtol, table_atol = tolerances(row)
        row_name = f"{row} row"
    rtol = table_rtol if rtol is None else rtol
    atol = table_atol if atol is None else atol

    prefix = f"{msg}\n" if msg else ""
    if not actual_counts and expected_counts:
        actual_tensor = actual_tensor.to(expected_tensor.device).expand(expected_tensor.shape)
    elif not expected_counts and actual_counts:
        expected_tensor = expected_tensor.to(actual_tensor.device).expand(actual_tensor.shape)
    if actual_tensor.device != expected_tensor.device:
        raise AssertionError(
            f"{prefix}Device mismatch: actual on {actual_tensor.device}, expected on {expected_tensor.device}"
        )
    if actual_tensor.shape != expected_tensor.shape:
        raise AssertionError(
            f"{prefix}Shape mismatch: actual {tuple(actual_tensor.shape)}, expected {tuple(expected_tensor.shape)}"
        )
    if actual_tensor.numel() == 0:
        return

    complex_case = actual_tensor.dtype.is_complex or expected_tensor.dtype.is_complex
    compute = torch.complex128 if complex_case else torch.float64
    a = actual_tensor.detach().to(compute)
    e = expected_tensor.detach().to(compute)
    close = a == e
    if equal_nan:
        close |= torch.isnan(a) & torch.isnan(e)
    abs_err = (a - e).abs()
    abs_expected = e.abs()
    # Against an infinite expected value the bound is infinite too: only exact equality (handled above) may pass.
    close |= (abs_err <= atol + rtol * abs_expected) & torch.isfinite(e)
    if bool(close.all()):
        return

    # Entries that compared equal (matching infinities, NaN under equal_nan) have no error; the rest report NaN as
    # infinitely wrong so that argmax lands on them.
    abs_err = torch.where(close, torch.zeros_like(abs_err), abs_err)
    abs_err = torch.nan_to_num(abs_err, nan=math.inf)
    rel_err = torch.where(
        abs_err == 0, torch.zeros_like(abs_err), abs_err / torch.where(abs_expected == 0, math.inf, abs_expected)
    )
    rel_err = torch.where((abs_expected == 0) & (abs_err > 0), math.inf, rel_err)

    a_flat, e_flat = actual_tensor.detach().reshape(-1), expected_tensor.detach().reshape(-1)
    n_bad = int((~close).sum())
    n_all = close.numel()

    def where(errors: torch.Tensor, label: str, bound: float, name: str) -> str:
        flat = int(errors.reshape(-1).argmax())
        value = float(errors.reshape(-1)[flat])
        return (
            f"Greatest {label} difference: {value:.6g} at index {_index(flat, close.shape)} "
            f"(actual {a_flat[flat].item():.6g}, expected {e_flat[flat].item():.6g}; {name} {bound:.6g})"
        )

    raise AssertionError(
        f"{prefix}Tensors are not close: {n_bad} / {n_all} entries ({100.0 * n_bad / n_all:.1f}%) mismatch.\n"
        f"{where(abs_err, 'absolute', atol, 'atol')}\n"
        f"{where(rel_err, 'relative', rtol, 'rtol')}\n"
        f"Tolerances: rtol={rtol:.6g}, atol={atol:.6g} ({row_name})"
    )
