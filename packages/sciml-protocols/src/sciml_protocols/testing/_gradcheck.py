"""Gradient checks: torch's gradcheck in float64 with one call, and a central-difference oracle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

from sciml_protocols._errors import SciMLInputError
from sciml_protocols._validation import check_dtype, check_positive, check_tensor

__all__ = ["finite_difference_gradient", "gradcheck_float64"]


def _to_float64_leaf(value: object) -> object:
    if isinstance(value, torch.Tensor) and (value.dtype.is_floating_point or value.dtype.is_complex):
        target = torch.complex128 if value.dtype.is_complex else torch.float64
        return value.detach().to(target).clone().requires_grad_(True)
    return value


def gradcheck_float64(fn: Callable[..., Any], *inputs: object, gradgrad: bool = False, **kw: Any) -> None:
    r"""Check ``fn``'s backward (and optionally double backward) against finite differences, in float64.

    Every floating (or complex) tensor in ``inputs`` is detached, cast to float64 (complex128) and made a leaf that
    requires grad; other inputs (integers, index tensors, flags) pass through unchanged. Then
    :func:`torch.autograd.gradcheck` compares the analytical Jacobian-vector products with central differences
    :math:`(f(x + \epsilon e_i) - f(x - \epsilon e_i)) / 2\epsilon`, and with ``gradgrad=True``
    :func:`torch.autograd.gradgradcheck` does the same for the backward pass itself. float64 is what makes the
    finite differences trustworthy: in float32 they carry errors of order :math:`10^{-3}`.

    Args:
        fn: function of the inputs returning a tensor or a tuple of tensors.
        *inputs: positional arguments of ``fn``.
        gradgrad: also run :func:`torch.autograd.gradgradcheck`.
        **kw: passed to both checks (``eps``, ``atol``, ``rtol``, ``nondet_tol``, ``fast_mode``, ...).
            ``raise_exception`` is not accepted: this helper always raises.

    Raises:
        AssertionError: when a check fails; the gradcheck report (which Jacobian entries differ) is the message
            and the original :class:`torch.autograd.gradcheck.GradcheckError` is the cause.
        SciMLInputError: when no input is a floating tensor, or ``raise_exception`` is passed.

    Example:
        >>> gradcheck_float64(torch.sin, torch.rand(3), gradgrad=True)
        >>> class WrongSquare(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x**2
        ...
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         (x,) = ctx.saved_tensors
        ...         return grad * x  # should be 2 * x
        >>> gradcheck_float64(WrongSquare.apply, torch.rand(3))
        Traceback (most recent call last):
        ...
        AssertionError: gradcheck failed for WrongSquare.apply: Jacobian mismatch for output 0 with respect to input 0,
        ...
    """
    if "raise_exception" in kw:
        raise SciMLInputError("raise_exception", "is not accepted: gradcheck_float64 always raises on failure")
    # Any: torch annotates inputs as tensors only, but gradcheck passes non-tensor arguments through.
    cast: tuple[Any, ...] = tuple(_to_float64_leaf(value) for value in inputs)
    if not any(isinstance(value, torch.Tensor) and value.requires_grad for value in cast):
        raise SciMLInputError("inputs", "need at least one floating-point tensor to differentiate with respect to")
    name: str = getattr(fn, "__qualname__", None) or repr(fn)
    owner: object = getattr(fn, "__self__", None)
    if isinstance(owner, type) and getattr(fn, "__name__", None) == "apply":
        # autograd.Function.apply is a classmethod defined on the base class: name the subclass instead.
        name = f"{owner.__name__}.apply"
    try:
        torch.autograd.gradcheck(fn, cast, raise_exception=True, **kw)
    except GradcheckError as err:
        raise AssertionError(f"gradcheck failed for {name}: {err}") from err
    if gradgrad:
        try:
            torch.autograd.gradgradcheck(fn, cast, raise_exception=True, **kw)
        except GradcheckError as err:
            raise AssertionError(f"gradgradcheck failed for {name}: {err}") from err


def finite_difference_gradient(
    fn: Callable[[torch.Tensor], torch.Tensor | float], x: torch.Tensor, *, eps: float | None = None
) -> torch.Tensor:
    r"""Gradient of a scalar function by central differences, as an oracle independent of autograd.

    .. math::

        \frac{\partial f}{\partial x_i} \approx \frac{f(x + h_i e_i) - f(x - h_i e_i)}{2 h_i},
        \qquad h_i = \epsilon \max(1, |x_i|).

    The error is :math:`O(h^2 f''')` from truncation plus :math:`O(u |f| / h)` from rounding (:math:`u` the unit
    roundoff); the default :math:`\epsilon = u^{1/3}` balances the two (about :math:`6 \cdot 10^{-6}` in float64,
    hence about 10 correct digits). Evaluate in float64 for an oracle; the cost is ``2 * x.numel()`` calls.

    Args:
        fn: scalar function of one tensor; returns a 0-d (or one-element) tensor or a Python number.
        x: the point, any shape, floating dtype.
        eps: relative step; default ``finfo(x.dtype).eps ** (1/3)``.

    Returns:
        A tensor of ``x``'s shape and dtype holding the approximate gradient.

    Raises:
        SciMLInputError: for a non-floating ``x``, a non-positive ``eps``, or ``fn`` returning several values.

    Example:
        >>> x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        >>> g = finite_difference_gradient(lambda v: (v**3).sum(), x)
        >>> torch.allclose(g, 3 * x**2, rtol=1e-8)
        True
    """
    check_tensor("x", x)
    check_dtype("x", x, "floating")
    relative_step = torch.finfo(x.dtype).eps ** (1.0 / 3.0) if eps is None else eps
    check_positive("eps", relative_step)

    def value_at(point: torch.Tensor) -> torch.Tensor:
        out = fn(point)
        out_tensor = out if isinstance(out, torch.Tensor) else torch.tensor(out, dtype=torch.float64)
        if out_tensor.numel() != 1:
            raise SciMLInputError("fn", f"must return a scalar, got shape {tuple(out_tensor.shape)}")
        return out_tensor.reshape(()).to(torch.float64)

    base = x.detach().clone(memory_format=torch.contiguous_format)
    flat = base.view(-1)
    gradient = torch.empty(flat.shape, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i in range(flat.numel()):
            original = flat[i].item()
            step = relative_step * max(1.0, abs(original))
            flat[i] = original + step
            # The realised step is (x + h) - (x - h) in x's precision, not 2h: dividing by it removes the
            # representation error of the step itself.
            upper_point = flat[i].item()
            forward = value_at(base)
            flat[i] = original - step
            lower_point = flat[i].item()
            backward = value_at(base)
            flat[i] = original
            gradient[i] = (forward - backward) / (upper_point - lower_point)
    return gradient.reshape(x.shape).to(x.dtype)
