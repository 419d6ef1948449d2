"""Pieces shared by the conformance suites."""

from __future__ import annotations

import io
import unittest
from typing import Any, NoReturn

import torch

__all__ = ["max_difference", "skip", "weights_only_roundtrip"]


def skip(reason: str) -> NoReturn:
    """Skip the running test.

    :class:`unittest.SkipTest` is what pytest and unittest both report as a skip, so the suites need not import
    pytest.
    """
    raise unittest.SkipTest(reason)


def weights_only_roundtrip(name: str, obj: Any) -> Any:
    """Return ``obj`` after ``torch.save`` and ``torch.load(weights_only=True)``, or fail saying why it did not load.

    ``weights_only=True`` is the default of :func:`torch.load` and the only safe way to read a checkpoint, so
    anything a checkpoint holds must survive it.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except Exception as err:  # the unpickler raises a bare UnpicklingError or RuntimeError depending on the type
        raise AssertionError(f"{name} does not load back with torch.load(weights_only=True): {err}") from err


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute entrywise difference, computed in float64 (inf on a shape mismatch)."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max())
