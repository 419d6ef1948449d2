"""torch.library registration of the log-Bessel operators.

Three forward operators, ``sciml_special::log_iv``, ``sciml_special::log_kv`` (both with a ``scaled`` flag for
``log I_v(x) - x`` and ``log K_v(x) + x``) and ``sciml_special::iv_ratio``, each with the PyTorch reference as CPU
kernel, a CUDA kernel that runs Triton (or the reference on CUDA when the backend says so), a fake kernel for
tracing and an autograd formula. Their backward passes are operators too (``*_backward``), so ``torch.compile`` sees
opaque calls in both directions.

The operators take tensors of one shape (the public functions broadcast first) and a resolved backend name
(``"torch"`` or ``"triton"``). The reference computes in float64 and rounds once to the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ._bessel import reference_iv_ratio, reference_log_iv, reference_log_kv

__all__ = ["call", "iv_ratio_op", "log_iv_op", "log_kv_op"]

_F64 = torch.float64


def _reference(kind: str, v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    with torch.no_grad():
        v64, x64 = v.to(_F64), x.to(_F64)
        if kind == "log_iv":
            out = reference_log_iv(v64, x64, scaled=scaled)
        elif kind == "log_kv":
            out = reference_log_kv(v64, x64, scaled=scaled)
        else:
            out = reference_iv_ratio(v64, x64)
    return out.to(v.dtype)


def _forward(kind: str, v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:
    if backend == "triton":
        from ._kernels import bessel as kernels  # lazy: importing sciml_special never imports triton

        return kernels.launch(kind, v, x, scaled)
    return _reference(kind, v, x, scaled)


def _reference_fn(kind: str, scaled: bool) -> Callable[[Tensor, Tensor], Tensor]:
    if kind == "log_iv":
        return lambda v, x: reference_log_iv(v, x, scaled=scaled)
    if kind == "log_kv":
        return lambda v, x: reference_log_kv(v, x, scaled=scaled)
    return reference_iv_ratio


def _dv(kind: str, grad: Tensor, v: Tensor, x: Tensor, scaled: bool) -> Tensor:
    """Vector-Jacobian product in the order ``v``: autograd through the float64 reference (nodes detached).

    ``torch.func.vjp`` rather than ``torch.autograd.grad``: an operator's kernel runs below the autograd dispatch
    key, where the functorch transforms still work.
    """
    fn = _reference_fn(kind, scaled)
    x64 = x.detach().to(_F64)
    result = torch.func.vjp(lambda v_: fn(v_, x64), v.detach().to(_F64))
    out, pullback = result[0], result[1]
    weights = torch.where(torch.isfinite(out), grad.to(_F64), torch.zeros_like(out))
    (gv,) = pullback(weights)
    return gv.to(v.dtype)


def _dx_ratio(grad: Tensor, v: Tensor, x: Tensor) -> Tensor:
    """Vector-Jacobian product of the ratio in ``x``: autograd through the float64 reference.

    The closed form r' = 1 - (2v+1) r / x - r^2 cancels catastrophically for large x, the derivative of the
    region formulas does not.
    """
    v64 = v.detach().to(_F64)
    pullback = torch.func.vjp(lambda x_: reference_iv_ratio(v64, x_), x.detach().to(_F64))[1]
    (gx,) = pullback(grad.to(_F64))
    return gx.to(x.dtype)


def _v_over_x(v: Tensor, x: Tensor) -> Tensor:
    # v / x with 0 / 0 = 0 (the limit of the derivative of log I_0 at x = 0 is 0)
    return torch.where(v == 0, torch.zeros_like(x), v / x)


def _backward_impl(
    kind: str, grad: Tensor, v: Tensor, x: Tensor, scaled: bool, need_v: bool, need_x: bool, backend: str
) -> tuple[Tensor, Tensor]:
    gv = _dv(kind, grad, v, x, scaled) if need_v else torch.zeros_like(v)
    if not need_x:
        return gv, torch.zeros_like(x)
    if kind == "log_iv":
        # d/dx log I_v = I_{v+1}/I_v + v/x
        dx = _forward("iv_ratio", v, x, False, backend) + _v_over_x(v, x)
        if scaled:
            dx = dx - 1.0
    elif kind == "log_kv":
        # d/dx log K_v = -K_{v+1}/K_v + v/x = -K_{v-1}/K_v - v/x (K_{-w} = K_w): two terms of one sign
        lower = _forward("log_kv", (v - 1.0).abs(), x, True, backend)
        here = _forward("log_kv", v, x, True, backend)
        dx = -torch.exp(lower - here) - _v_over_x(v, x)
        if scaled:
            dx = dx + 1.0
    else:
        return gv, _dx_ratio(grad, v, x)
    return gv, grad * dx


def _make(kind: str) -> Any:  # torch.library.CustomOpDef (not exported for type checkers)
    name = f"sciml_special::{kind}"

    @torch.library.custom_op(name, mutates_args=(), device_types="cpu")
    def forward(v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:
        return _forward(kind, v, x, scaled, backend)

    @forward.register_kernel("cuda")
    def _(v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:
        return _forward(kind, v, x, scaled, backend)

    @forward.register_fake
    def _(v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:
        return torch.empty_like(v)

    @torch.library.custom_op(f"{name}_backward", mutates_args=(), device_types="cpu")
    def backward_op(
        grad: Tensor, v: Tensor, x: Tensor, scaled: bool, need_v: bool, need_x: bool, backend: str
    ) -> tuple[Tensor, Tensor]:
        return _backward_impl(kind, grad, v, x, scaled, need_v, need_x, backend)

    @backward_op.register_kernel("cuda")
    def _(
        grad: Tensor, v: Tensor, x: Tensor, scaled: bool, need_v: bool, need_x: bool, backend: str
    ) -> tuple[Tensor, Tensor]:
        return _backward_impl(kind, grad, v, x, scaled, need_v, need_x, backend)

    @backward_op.register_fake
    def _(
        grad: Tensor, v: Tensor, x: Tensor, scaled: bool, need_v: bool, need_x: bool, backend: str
    ) -> tuple[Tensor, Tensor]:
        return torch.empty_like(v), torch.empty_like(x)

    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[object, ...], output: Tensor) -> None:
        v, x, scaled, backend = inputs
        ctx.save_for_backward(cast(Tensor, v), cast(Tensor, x))
        ctx.scaled = scaled  # pyright: ignore[reportAttributeAccessIssue]
        ctx.backend = backend  # pyright: ignore[reportAttributeAccessIssue]

    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        v, x = ctx.saved_tensors  # pyright: ignore[reportAttributeAccessIssue]
        need_v, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # pyright: ignore[reportAttributeAccessIssue]
        gv, gx = backward_op(grad, v, x, ctx.scaled, need_v, need_x, ctx.backend)  # pyright: ignore[reportAttributeAccessIssue]
        return (gv if need_v else None, gx if need_x else None, None, None)

    forward.register_autograd(backward, setup_context=setup_context)
    return forward


log_iv_op = _make("log_iv")
log_kv_op = _make("log_kv")
iv_ratio_op = _make("iv_ratio")


class _Eager(torch.autograd.Function):
    """The same forward and backward as the operators, without the dispatcher, for eager calls.

    torch wraps every ``custom_op`` kernel so that its first call imports ``torch._dynamo``, which costs seconds and
    switches off argument validation of every ``torch.distributions`` object in the process
    (``Distribution.set_default_validate_args(False)`` in dynamo's setup). Eager calls therefore go through this
    Function; code being compiled goes through the registered operators, which ``torch.compile`` needs.
    """

    @staticmethod
    def forward(kind: str, v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _forward(kind, v, x, scaled, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        kind, v, x, scaled, backend = inputs
        ctx.save_for_backward(v, x)
        ctx.kind, ctx.scaled, ctx.backend = kind, scaled, backend

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        v, x = ctx.saved_tensors
        need_v, need_x = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gv, gx = _backward_impl(ctx.kind, grad, v, x, ctx.scaled, need_v, need_x, ctx.backend)
        return (None, gv if need_v else None, gx if need_x else None, None, None)


_OPS = {"log_iv": log_iv_op, "log_kv": log_kv_op, "iv_ratio": iv_ratio_op}


def call(kind: str, v: Tensor, x: Tensor, scaled: bool, backend: str) -> Tensor:
    """Evaluate ``kind`` through the registered operator when compiling, through :class:`_Eager` otherwise."""
    if torch.compiler.is_compiling():
        return _OPS[kind](v, x, scaled, backend)
    return cast(Tensor, _Eager.apply(kind, v, x, scaled, backend))
