"""Choosing between a Triton kernel and its PyTorch reference."""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import torch

from ._errors import BackendFallbackWarning, SciMLError, SciMLInputError

__all__ = ["BACKENDS", "Backend", "resolve_backend", "triton_available"]

Backend = Literal["torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

_warned: set[str] = set()


_TRITON_STATE: dict[str, bool] = {}
# Located (not imported) once at import: the answer code being traced by torch.compile gets when no eager call has
# imported triton yet (an import cannot be traced).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether ``import triton`` succeeds (the result is cached; the import happens at the first call only).

    The cache is a plain module dictionary rather than ``functools.cache``, so that ``torch.compile`` traces this
    function as a constant lookup (Dynamo warns about, and traces through, cache wrappers). Under
    ``torch.compile`` before any eager call, the answer is whether the package can be located.

    Example:
        >>> isinstance(triton_available(), bool)
        True
    """
    if torch.compiler.is_compiling():
        return _TRITON_STATE.get("importable", _TRITON_FOUND)
    state = _TRITON_STATE.get("importable")
    if state is None:
        try:
            importlib.import_module("triton")
            state = True
        except Exception:  # a broken triton install raises more than ImportError
            state = False
        _TRITON_STATE["importable"] = state
    return state


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _decide(
    requested: str, device_types: set[str], *, have_triton: bool, env: Mapping[str, str]
) -> tuple[Backend, str | None]:
    """The pure decision table behind :func:`resolve_backend`: (backend, fallback reason or None)."""
    if requested not in BACKENDS:
        raise SciMLInputError("backend", f"must be one of {', '.join(map(repr, BACKENDS))}; got {requested!r}")
    if len(device_types) > 1:
        raise SciMLInputError("tensors", f"live on several device types {sorted(device_types)}; move them to one")
    interpret = env.get("TRITON_INTERPRET", "") == "1"
    on_cuda = device_types == {"cuda"}
    if requested == "torch":
        return "torch", None
    if requested == "triton":
        if not have_triton:
            raise SciMLError(
                "backend='triton' was requested but triton cannot be imported; install sciml's triton extra"
            )
        if not on_cuda and not interpret:
            where = ", ".join(sorted(device_types)) or "no tensors"
            raise SciMLInputError(
                "backend",
                f"'triton' needs CUDA tensors (got {where}); set TRITON_INTERPRET=1 to run kernels on CPU for testing",
            )
        return "triton", None
    # "auto": Triton only for CUDA tensors; CPU always takes the reference, even under the interpreter.
    if not on_cuda:
        return "torch", None
    if _flag(env, "SCIML_DISABLE_TRITON"):
        return "torch", "SCIML_DISABLE_TRITON is set"
    if not have_triton:
        return "torch", "triton cannot be imported"
    return "triton", None


def resolve_backend(requested: str = "auto", *tensors: torch.Tensor | None) -> Backend:
    """Pick the implementation a kernel call runs on.

    The rules (DESIGN section 5):

    * ``"torch"`` always gives the PyTorch reference.
    * ``"triton"`` gives Triton when it imports and the tensors are on CUDA, or on CPU when ``TRITON_INTERPRET=1``
      (the interpreter, for tests); otherwise it raises, because the caller asked for it explicitly.
    * ``"auto"`` gives Triton for CUDA tensors when Triton imports and ``SCIML_DISABLE_TRITON`` is unset, else the
      reference. Falling back for CUDA tensors warns once (:class:`BackendFallbackWarning`) per reason; CPU tensors
      take the reference silently, since that is the CPU path.

    Tensors on different device types raise :class:`SciMLInputError`.

    Args:
        requested: ``"auto"``, ``"torch"`` or ``"triton"``.
        *tensors: the inputs of the call (``None`` entries are ignored).

    Returns:
        ``"torch"`` or ``"triton"``.

    Example:
        >>> resolve_backend("auto", torch.zeros(3))
        'torch'
        >>> resolve_backend("gpu", torch.zeros(3))
        Traceback (most recent call last):
        ...
        sciml_protocols._errors.SciMLInputError: argument 'backend': must be one of 'auto', 'torch', 'triton'; got 'gpu'
    """
    device_types = _device_types(t for t in tensors if t is not None)
    env = os.environ
    needs_triton = requested == "triton" or (requested == "auto" and device_types == {"cuda"})
    have_triton = triton_available() if needs_triton else False
    backend, reason = _decide(requested, device_types, have_triton=have_triton, env=env)
    if reason is not None and reason not in _warned:
        _warned.add(reason)
        warnings.warn(
            f"backend='auto' falls back to the PyTorch reference for CUDA tensors: {reason}",
            BackendFallbackWarning,
            stacklevel=2,
        )
    return backend


def _device_types(tensors: Iterable[torch.Tensor]) -> set[str]:
    types: set[str] = set()
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError(f"tensors[{i}]", f"must be a torch.Tensor or None, got {type(t).__name__}")
        types.add(t.device.type)
    return types
