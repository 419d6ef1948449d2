"""Errors and warnings shared by every sciml package."""

from __future__ import annotations

__all__ = ["BackendFallbackWarning", "ConvergenceWarning", "SciMLError", "SciMLInputError"]


class SciMLError(Exception):
    """Base class of every error raised on purpose by a sciml package.

    Example:
        >>> issubclass(SciMLInputError, SciMLError)
        True
    """


class SciMLInputError(SciMLError, ValueError):
    """Bad input: the message names the argument and says what was wrong with it.

    It is a :class:`ValueError`, so code written against the peers' conventions (``except ValueError``) keeps
    working.

    Args:
        argument: name of the offending argument, as the caller spelled it.
        problem: what is wrong, in words a user can act on ("must be positive, got -1.0").

    Example:
        >>> err = SciMLInputError("eps", "must be positive, got -1.0")
        >>> str(err)
        "argument 'eps': must be positive, got -1.0"
        >>> isinstance(err, ValueError), err.argument
        (True, 'eps')
    """

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        self.problem = problem
        super().__init__(f"argument {argument!r}: {problem}")

    def __reduce__(self) -> tuple[type[SciMLInputError], tuple[str, str]]:
        return (type(self), (self.argument, self.problem))


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at its iteration cap (or broke down) before meeting its tolerance.

    Solvers report convergence in their :class:`~sciml_protocols.Solution`; this warning is what
    :meth:`~sciml_protocols.Solution.check` emits when asked to warn.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("cap reached", ConvergenceWarning)
        >>> caught[0].category.__name__
        'ConvergenceWarning'
    """


class BackendFallbackWarning(UserWarning):
    """``backend="auto"`` wanted the Triton kernel for CUDA tensors but fell back to the PyTorch reference.

    Emitted once per reason by :func:`~sciml_protocols.resolve_backend` (for example when ``SCIML_DISABLE_TRITON``
    is set); silence it with ``warnings.filterwarnings("ignore", category=BackendFallbackWarning)``.

    Example:
        >>> issubclass(BackendFallbackWarning, UserWarning)
        True
    """
