"""What is installed: versions of the sciml distributions and their main dependencies, devices, backends.

Nothing here imports torch at module import; the functions that need it import it when called.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKEND_ENVIRONMENT_VARIABLES",
    "backend_environment",
    "cuda_devices",
    "device_name",
    "distribution_version",
    "normalize_distribution_name",
    "sciml_distributions",
    "triton_importable",
    "versions",
]

BACKEND_ENVIRONMENT_VARIABLES = ("SCIML_DISABLE_TRITON", "TRITON_INTERPRET")


def normalize_distribution_name(name: str) -> str:
    """The canonical form of a distribution name (PEP 503): lower case, runs of ``-_.`` become one ``-``.

    Example:
        >>> normalize_distribution_name("Sciml_Protocols")
        'sciml-protocols'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_version(name: str) -> str | None:
    """Installed version of the distribution ``name``, or None when it is not installed.

    Example:
        >>> distribution_version("sciml")
        '0.1.0'
        >>> distribution_version("surely-not-installed-anywhere") is None
        True
    """
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sciml_distributions() -> dict[str, str]:
    """Installed distributions named ``sciml`` or ``sciml-*``: canonical name -> version, sorted by name.

    Example:
        >>> dists = sciml_distributions()
        >>> dists["sciml"], "sciml-protocols" in dists
        ('0.1.0', True)
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        raw_name = dist.metadata["Name"]
        if not raw_name:
            continue
        name = normalize_distribution_name(raw_name)
        # The first hit wins, as it does for imports: sys.path order.
        if (name == "sciml" or name.startswith("sciml-")) and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items()))


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy and every installed sciml distribution (for reports).

    Example:
        >>> v = versions()
        >>> list(v)[:3], v["sciml"]
        (['python', 'torch', 'numpy'], '0.1.0')
    """
    torch = sys.modules.get("torch")  # once imported, its own version string also names the CUDA build
    found = {
        "python": platform.python_version(),
        "torch": str(getattr(torch, "__version__", None) or distribution_version("torch") or "not installed"),
        "numpy": distribution_version("numpy") or "not installed",
    }
    found.update(sciml_distributions())
    return found


def triton_importable() -> bool:
    """Whether ``import triton`` would find the package; it is looked up, not imported (importing it is slow)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def backend_environment() -> dict[str, str | None]:
    """The environment variables that steer backend choice, None where unset.

    Example:
        >>> sorted(backend_environment())
        ['SCIML_DISABLE_TRITON', 'TRITON_INTERPRET']
    """
    return {name: os.environ.get(name) for name in BACKEND_ENVIRONMENT_VARIABLES}


def cuda_devices() -> list[str]:
    """Names of the visible CUDA devices (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def device_name(device: torch.device) -> str:
    """A readable name for ``device``: the GPU's model for CUDA, the machine's architecture for CPU.

    Example:
        >>> import torch
        >>> device_name(torch.device("cpu")).startswith("CPU")
        True
    """
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_name(index)
    arch = platform.machine() or "unknown architecture"
    return f"CPU ({arch}, {os.cpu_count() or '?'} cores, {torch.get_num_threads()} threads)"
