"""Small validators that turn bad input into :class:`SciMLInputError` with the argument's name."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ._errors import SciMLInputError

__all__ = [
    "check_dtype",
    "check_finite",
    "check_in_choices",
    "check_int",
    "check_nonempty",
    "check_positive",
    "check_same_device",
    "check_shape",
    "check_tensor",
]

Dim = int | None


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a tensor, else raise.

    Args:
        name: the argument's name, used in the message.
        value: anything.

    Returns:
        The same object, typed as a tensor.

    Example:
        >>> check_tensor("x", [1, 2])
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'x': must be a torch.Tensor, got list
    """
    if not isinstance(value, torch.Tensor):
        raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_shape(name: str, tensor: torch.Tensor, shape: Sequence[Dim], *, allow_batch: bool = False) -> None:
    """Check a tensor's shape against a pattern in which ``None`` matches any size.

    Args:
        name: the argument's name.
        tensor: the tensor to check.
        shape: expected trailing sizes; ``None`` is a wildcard.
        allow_batch: if True, any number of leading batch dimensions may precede ``shape``.

    Example:
        >>> check_shape("x", torch.zeros(4, 3), (None, 3))
        >>> check_shape("x", torch.zeros(2, 4, 3), (None, 3), allow_batch=True)
        >>> check_shape("x", torch.zeros(4, 2), (None, 3))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'x': expected shape (*, 3), got (4, 2)
    """
    check_tensor(name, tensor)
    pattern = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    if allow_batch:
        pattern = "(..., " + pattern[1:] if shape else "(...)"
    got = tuple(tensor.shape)
    if (not allow_batch and len(got) != len(shape)) or len(got) < len(shape):
        raise SciMLInputError(name, f"expected shape {pattern}, got {got}")
    tail = got[len(got) - len(shape) :]
    for expected, actual in zip(shape, tail, strict=True):
        if expected is not None and expected != actual:
            raise SciMLInputError(name, f"expected shape {pattern}, got {got}")


def check_dtype(name: str, tensor: torch.Tensor, allowed: Sequence[torch.dtype] | str = "floating") -> None:
    """Check a tensor's dtype.

    Args:
        name: the argument's name.
        tensor: the tensor to check.
        allowed: a list of dtypes, or ``"floating"`` (any real floating dtype) or ``"real"`` (floating or integer,
            no complex, no bool).

    Example:
        >>> check_dtype("x", torch.zeros(2, dtype=torch.float64))
        >>> check_dtype("x", torch.zeros(2, dtype=torch.int64))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'x': expected a floating-point dtype, got torch.int64
    """
    check_tensor(name, tensor)
    if allowed == "floating":
        if not tensor.dtype.is_floating_point:
            raise SciMLInputError(name, f"expected a floating-point dtype, got {tensor.dtype}")
    elif allowed == "real":
        if tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise SciMLInputError(name, f"expected a real dtype, got {tensor.dtype}")
    elif isinstance(allowed, str):
        raise SciMLInputError("allowed", f"must be 'floating', 'real' or a list of dtypes, got {allowed!r}")
    elif tensor.dtype not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise SciMLInputError(name, f"expected dtype in [{names}], got {tensor.dtype}")


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if a tensor holds NaN or infinity.

    Example:
        >>> check_finite("b", torch.tensor([1.0, float("nan")]))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'b': contains 1 NaN and 0 infinite values
    """
    check_tensor(name, tensor)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(tensor).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise SciMLInputError(name, f"contains {n_nan} NaN and {n_inf} infinite values")


def check_positive(name: str, value: float | torch.Tensor, *, strict: bool = True) -> None:
    """Raise unless ``value`` (a number or every entry of a tensor) is positive (or non-negative).

    Args:
        name: the argument's name.
        value: a Python number or a tensor.
        strict: if True require ``> 0``, else ``>= 0``.

    Example:
        >>> check_positive("eps", 0.1)
        >>> check_positive("eps", 0.0)
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'eps': must be > 0, got 0.0
    """
    word = "> 0" if strict else ">= 0"
    if isinstance(value, torch.Tensor):
        check_finite(name, value)
        bad = (value <= 0) if strict else (value < 0)
        if bool(bad.any()):
            worst = float(value.min())
            raise SciMLInputError(name, f"every entry must be {word}, smallest is {worst}")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    if math.isnan(value) or (value <= 0 if strict else value < 0) or math.isinf(value):
        raise SciMLInputError(name, f"must be {word}, got {value}")


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``, raising unless it is an integer (not a bool) and at least ``minimum``.

    NumPy integers are accepted and converted; floats such as ``2.0`` are not.

    Args:
        name: the argument's name.
        value: the value to check.
        minimum: the smallest allowed value, or None for no bound.

    Returns:
        ``int(value)``.

    Example:
        >>> check_int("max_iter", 10, minimum=1)
        10
        >>> check_int("max_iter", 0, minimum=1)
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'max_iter': must be an int >= 1, got 0
    """
    bound = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SciMLInputError(name, f"must be an int{bound}, got {value!r}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise SciMLInputError(name, f"must be an int{bound}, got {result}")
    return result


def check_nonempty(name: str, tensor: torch.Tensor) -> None:
    """Raise if a tensor has no elements.

    Example:
        >>> check_nonempty("x", torch.zeros(0, 3))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'x': must not be empty, got shape (0, 3)
    """
    check_tensor(name, tensor)
    if tensor.numel() == 0:
        raise SciMLInputError(name, f"must not be empty, got shape {tuple(tensor.shape)}")


def check_same_device(**tensors: torch.Tensor | None) -> torch.device | None:
    """Check that every given tensor lives on one device and return it (None when no tensor is given).

    Args:
        **tensors: the arguments by name; ``None`` values are ignored.

    Example:
        >>> check_same_device(a=torch.zeros(2), b=torch.zeros(3))
        device(type='cpu')
        >>> check_same_device(a=torch.zeros(2), b=torch.zeros(3, device="meta"))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'b': is on meta but 'a' is on cpu
    """
    first_name: str | None = None
    device: torch.device | None = None
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        check_tensor(name, tensor)
        if device is None:
            first_name, device = name, tensor.device
        elif tensor.device != device:
            raise SciMLInputError(name, f"is on {tensor.device} but {first_name!r} is on {device}")
    return device


def check_in_choices(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise unless ``value`` is one of ``choices``.

    Example:
        >>> check_in_choices("norm", "l3", ["l1", "l2"])
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'norm': must be one of 'l1', 'l2'; got 'l3'
    """
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise SciMLInputError(name, f"must be one of {listed}; got {value!r}")
