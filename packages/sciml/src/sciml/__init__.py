"""sciml: the umbrella distribution. It installs every sciml package and provides the ``sciml`` command.

Example:
    >>> import sciml
    >>> sciml.__version__
    '0.1.0'
"""

from importlib.metadata import version as _version

__version__: str = _version("sciml")

__all__ = ["__version__"]
