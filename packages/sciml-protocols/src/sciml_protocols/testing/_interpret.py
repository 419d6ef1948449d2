"""Parity of a Triton kernel with its PyTorch reference, run on CPU tensors under the Triton interpreter.

Nothing here imports triton: the kernel's own module does, and the helper only calls it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sciml_protocols._errors import SciMLError, SciMLInputError

from ._tolerances import assert_close

__all__ = ["assert_interpreter_parity", "interpreter_enabled"]


def interpreter_enabled() -> bool:
    """Whether the Triton interpreter is switched on (``TRITON_INTERPRET=1`` in the environment).

    Triton reads the variable when a ``@triton.jit`` function is *defined*, so it must be set before the module
    holding the kernels is imported (in practice: in the shell that starts pytest). Setting ``os.environ`` later
    has no effect on kernels already defined.

    Example:
        >>> import os
        >>> interpreter_enabled() == (os.environ.get("TRITON_INTERPRET") == "1")
        True
    """
    return os.environ.get("TRITON_INTERPRET") == "1"


def _cast(value: object, dtype: torch.dtype) -> object:
    if isinstance(value, torch.Tensor):
        # A fresh copy per call: an in-place kernel must not feed its result to the reference.
        return value.detach().to(dtype).clone() if value.dtype.is_floating_point else value.clone()
    return value


def _outputs(name: str, result: object, arguments: Sequence[object]) -> tuple[torch.Tensor, ...]:
    if result is None:
        # An in-place kernel returns nothing; what it wrote is in its floating arguments.
        return tuple(a for a in arguments if isinstance(a, torch.Tensor) and a.dtype.is_floating_point)
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, tuple | list) and all(isinstance(r, torch.Tensor) for r in result):
        return tuple(result)
    raise AssertionError(f"{name} must return a tensor, a tuple of tensors or None, got {type(result).__name__}")


def assert_interpreter_parity(
    kernel: Callable[..., Any],
    reference: Callable[..., Any],
    *inputs: object,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    max_elements: int = 10_000,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = False,
) -> None:
    """Run a Triton kernel launcher and its PyTorch reference on the same CPU inputs and compare the results.

    For each dtype in ``dtypes``, every floating tensor in ``inputs`` is cast to it (integer tensors and
    non-tensor arguments such as block sizes pass through), ``kernel`` and ``reference`` each get their own copy,
    and their outputs must agree in number, dtype and shape, and in value within :func:`assert_close`'s tolerances
    (the dtype's row of :data:`TOLERANCES` unless ``rtol``/``atol`` are given). A call returning ``None`` is taken
    as in place: its floating arguments are compared instead.

    The inputs are checked before anything runs: the interpreter executes kernels in Python, one program at a time,
    so parity problems must stay small (at most ``max_elements`` elements per tensor, about ``10^4``); it computes
    through numpy, which has no bfloat16 (bfloat16 kernels silently produce garbage there, test them on a GPU); and
    it reads host memory, so tensors must be on the CPU.

    Args:
        kernel: the launcher, a Python function that allocates outputs and launches the ``@triton.jit`` kernel.
        reference: the PyTorch reference with the same signature.
        *inputs: the arguments of both.
        dtypes: floating dtypes to run in; float32 and float64 by default.
        max_elements: largest number of elements allowed in one input tensor.
        rtol: relative tolerance, default from the table per dtype.
        atol: absolute tolerance, default from the table per dtype.
        equal_nan: treat NaN in the same place of both outputs as equal (kernels that propagate NaN input).

    Raises:
        SciMLInputError: for bfloat16 or non-floating entries in ``dtypes``, an input tensor off the CPU or
            larger than ``max_elements``.
        SciMLError: when ``TRITON_INTERPRET`` is not ``"1"``: without the interpreter a Triton launch on CPU
            tensors fails, and the variable must be set before the kernels are defined.
        AssertionError: when the kernel disagrees with the reference.

    Example:
        >>> assert_interpreter_parity(torch.sin, torch.sin, torch.rand(8), dtypes=(torch.bfloat16,))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'dtypes': bfloat16 is broken in the Triton interpreter ...
    """
    if isinstance(dtypes, torch.dtype) or len(dtypes) == 0:
        raise SciMLInputError("dtypes", f"must be a non-empty sequence of floating dtypes, got {dtypes!r}")
    for dtype in dtypes:
        if dtype == torch.bfloat16:
            raise SciMLInputError(
                "dtypes",
                "bfloat16 is broken in the Triton interpreter (it computes through numpy, which has no bfloat16); "
                "check bfloat16 kernels on a GPU",
            )
        if not dtype.is_floating_point:
            raise SciMLInputError("dtypes", f"must hold floating dtypes only, got {dtype}")
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("max_elements", f"must be a positive int, got {max_elements!r}")
    for position, value in enumerate(inputs):
        if not isinstance(value, torch.Tensor):
            continue
        if value.device.type != "cpu":
            raise SciMLInputError(
                f"inputs[{position}]", f"must be a CPU tensor for the Triton interpreter, got device {value.device}"
            )
        if value.numel() > max_elements:
            raise SciMLInputError(
                f"inputs[{position}]",
                f"has {value.numel()} elements, more than max_elements={max_elements}: the interpreter runs "
                "kernels in Python, keep parity problems small",
            )
    if not interpreter_enabled():
        raise SciMLError(
            "the Triton interpreter is off: TRITON_INTERPRET is "
            f"{os.environ.get('TRITON_INTERPRET')!r}, not '1'. Set it in the environment that starts Python, "
            "before triton and the module defining the kernels are imported (triton reads it when a @triton.jit "
            "function is defined), e.g. TRITON_INTERPRET=1 pytest -m interpret"
        )

    for dtype in dtypes:
        kernel_arguments = [_cast(value, dtype) for value in inputs]
        reference_arguments = [_cast(value, dtype) for value in inputs]
        got = _outputs("kernel", kernel(*kernel_arguments), kernel_arguments)
        want = _outputs("reference", reference(*reference_arguments), reference_arguments)
        if len(got) != len(want):
            raise AssertionError(f"dtype {dtype}: kernel gave {len(got)} outputs, the reference {len(want)}")
        for index, (actual, expected) in enumerate(zip(got, want, strict=True)):
            context = f"kernel vs reference, dtype {dtype}, output {index}"
            if actual.dtype != expected.dtype:
                raise AssertionError(f"{context}: kernel returned {actual.dtype}, the reference {expected.dtype}")
            assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan, msg=context)
