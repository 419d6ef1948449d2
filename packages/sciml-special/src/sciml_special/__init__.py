"""sciml-special: special functions that just work in PyTorch.

Log-Bessel functions of any order on CPU and GPU, the von Mises-Fisher distribution, and evolved float32
approximations.

Example:
    >>> import sciml_special
    >>> sciml_special.__version__
    '0.1.0'
"""

from importlib.metadata import version as _version

__version__: str = _version("sciml-special")

__all__ = ["__version__"]
