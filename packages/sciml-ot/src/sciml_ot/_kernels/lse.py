r"""Online soft-minimum over point clouds: the log-sum-exp of a Sinkhorn half-step without storing the cost matrix.

For point clouds :math:`x \in \mathbb{R}^{n \times d}`, :math:`y \in \mathbb{R}^{m \times d}` and a column vector
:math:`h \in \mathbb{R}^m` (in Sinkhorn, :math:`h_j = g_j + \varepsilon \log b_j`) this module computes

.. math::

    s_i = -\varepsilon \log \sum_{j=1}^{m} \exp\!\big((h_j - C(x_i, y_j)) / \varepsilon\big),
    \qquad C(x, y) = \|x - y\|_2^2 \ \text{(``"sqeuclidean"``)} \ \text{or}\ \|x - y\|_2 \ \text{(``"euclidean"``)},

the "softmin" of the log-domain Sinkhorn update :math:`f_i \leftarrow s_i` (Cuturi, "Sinkhorn Distances: Lightspeed
Computation of Optimal Transport", NeurIPS 2013; the online, never-stored evaluation follows Feydy et al.,
"Interpolating between Optimal Transport and MMD using Sinkhorn Divergences", AISTATS 2019, arXiv:1810.08278, and
the streaming max/sum of Milakov and Gimelshein, "Online normalizer calculation for softmax", arXiv:1805.02867).

Two implementations, the same numbers up to rounding:

* the PyTorch reference (:func:`online_softmin_reference`, the CPU path): chunks over the columns :math:`j` and
  keeps a running maximum and a rescaled running sum per row, so its memory is :math:`O(n + m)` plus one
  :math:`n \times k` tile (:math:`k` chosen so a tile holds about :data:`TILE_ELEMENTS` numbers);
* a Triton kernel (the CUDA path): each program owns ``BLOCK_N`` rows, loops over tiles of ``BLOCK_M`` columns,
  forms :math:`C_{ij}` in registers as :math:`\sum_k (x_{ik} - y_{jk})^2` (a loop over the coordinates, exact,
  no :math:`\|x\|^2 + \|y\|^2 - 2\langle x, y\rangle` cancellation) and updates the online log-sum-exp. It computes
  in float64 for float64 inputs and in float32 otherwise. ``triton`` is imported only when this path runs.

Gradients (with :math:`w_{ij} = \exp((h_j - C_{ij} + s_i)/\varepsilon)`, the row-normalised Gibbs weights,
:math:`\sum_j w_{ij} = 1`, and an output cotangent :math:`\bar s`):

.. math::

    \bar h_j = -\sum_i \bar s_i w_{ij}, \qquad
    \bar x_i = \bar s_i \sum_j w_{ij} \nabla_x C(x_i, y_j), \qquad
    \bar y_j = \sum_i \bar s_i w_{ij} \nabla_y C(x_i, y_j),

with :math:`\nabla_x C = 2(x - y)` (squared Euclidean) or :math:`(x - y)/\|x - y\|` (Euclidean; 0 at
:math:`x = y`). The backward pass re-forms the weights tile by tile from the saved output :math:`s` (no second
log-sum-exp), with the chunked PyTorch code on every device (also on CUDA); it is not itself differentiable
(no double backward).

Everything is registered as the ``torch.library`` operators ``sciml_ot::online_softmin`` and
``sciml_ot::online_softmin_backward`` (reference as CPU kernel, Triton as CUDA kernel, fake kernels for tracing), so
``torch.compile`` sees opaque calls; eager calls bypass the dispatcher (see :class:`_Eager`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, cast

import torch
from sciml_protocols import SciMLInputError, resolve_backend
from torch import Tensor

__all__ = ["COSTS", "TILE_ELEMENTS", "launch", "online_softmin", "online_softmin_op", "online_softmin_reference"]

COSTS: tuple[str, ...] = ("sqeuclidean", "euclidean")
TILE_ELEMENTS: int = 1 << 22
"""About how many numbers one tile of the reference holds (a tile is ``n x k x d`` before the sum over ``d``)."""

_SMALL_D = 16  # up to this dimension the reference forms x_i - y_j exactly; beyond it, the Gram expansion


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _columns_per_tile(n: int, d: int) -> int:
    return max(1, TILE_ELEMENTS // max(1, n * d))


def _cost_tile(x: Tensor, y: Tensor, cost: str) -> Tensor:
    """(B, n, d), (B, k, d) -> (B, n, k) costs of one tile."""
    d = x.shape[-1]
    if cost == "sqeuclidean" and d > _SMALL_D:
        sq = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * torch.bmm(x, y.transpose(1, 2))
        return sq.clamp_min(0.0)
    diff = x[:, :, None, :] - y[:, None, :, :]
    sq = (diff * diff).sum(-1)
    return sq if cost == "sqeuclidean" else sq.sqrt()


def _reference_batched(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str) -> Tensor:
    """Streaming log-sum-exp over column tiles; (B, n, d), (B, m, d), (B, m) -> (B, n) in the input dtype."""
    out_dtype = x.dtype
    work = _compute_dtype(x.dtype)
    x, y, h = x.to(work), y.to(work), h.to(work)
    batch, n, d = x.shape
    m = y.shape[1]
    step = _columns_per_tile(n, d)
    running_max = torch.full((batch, n), -math.inf, dtype=work, device=x.device)
    running_sum = torch.zeros((batch, n), dtype=work, device=x.device)
    for start in range(0, m, step):
        stop = min(start + step, m)
        z = (h[:, None, start:stop] - _cost_tile(x, y[:, start:stop], cost)) / eps
        new_max = torch.maximum(running_max, z.amax(-1))
        # rows whose columns so far all have weight zero (h = -inf) keep a zero sum instead of NaN
        shift = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
        running_sum = running_sum * torch.exp(running_max - shift) + torch.exp(z - shift[..., None]).sum(-1)
        running_max = new_max
    shift = torch.where(torch.isneginf(running_max), torch.zeros_like(running_max), running_max)
    return (-eps * (shift + torch.log(running_sum))).to(out_dtype)


def _backward_batched(
    grad: Tensor, x: Tensor, y: Tensor, h: Tensor, s: Tensor, eps: float, cost: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Cotangents of x, y, h from the saved output ``s``, tile by tile over the columns (see the module docstring)."""
    out_dtype = x.dtype
    work = _compute_dtype(x.dtype)
    grad, x, y, h, s = (t.to(work) for t in (grad, x, y, h, s))
    _, n, d = x.shape
    m = y.shape[1]
    # rows with s = +inf have every h_j = -inf: their weights are 0, not inf - inf
    s = torch.where(torch.isinf(s), torch.zeros_like(s), s)
    grad_x = torch.zeros_like(x)
    grad_y = torch.empty_like(y)
    grad_h = torch.empty_like(h)
    step = _columns_per_tile(n, d)
    for start in range(0, m, step):
        stop = min(start + step, m)
        y_tile = y[:, start:stop]
        weights = torch.exp((h[:, None, start:stop] - _cost_tile(x, y_tile, cost) + s[..., None]) / eps)
        weighted = grad[..., None] * weights  # (B, n, k)
        grad_h[:, start:stop] = -weighted.sum(1)
        if cost == "sqeuclidean":
            # sum_j gw_ij 2 (x_i - y_j) and sum_i gw_ij 2 (y_j - x_i) as matrix products
            grad_x += 2.0 * (x * weighted.sum(-1, keepdim=True) - torch.bmm(weighted, y_tile))
            grad_y[:, start:stop] = 2.0 * (y_tile * weighted.sum(1)[..., None] - torch.bmm(weighted.transpose(1, 2), x))
        else:
            diff = x[:, :, None, :] - y_tile[:, None, :, :]
            norm = diff.norm(dim=-1, keepdim=True)
            unit = torch.where(norm > 0, diff / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
            grad_x += torch.einsum("bnk,bnkd->bnd", weighted, unit)
            grad_y[:, start:stop] = -torch.einsum("bnk,bnkd->bkd", weighted, unit)
    return grad_x.to(out_dtype), grad_y.to(out_dtype), grad_h.to(out_dtype)


# ----------------------------------------------------------------------------------------------- Triton path

_BLOCKS = {"cuda32": (64, 64), "cuda64": (32, 64), "interpret": (64, 64)}


@functools.cache
def _triton_kernel() -> Any:
    """The ``@triton.jit`` kernel, from :mod:`sciml_ot._kernels._lse_jit`.

    That module, and with it ``triton``, is imported here on first use, never at this module's level.
    """
    from sciml_ot._kernels import _lse_jit

    return _lse_jit.softmin_kernel


def _targets_cuda(x: Tensor) -> bool:
    """Whether a launch on ``x`` compiles for CUDA (else the interpreter; shared/triton_compile_check.py swaps it)."""
    return x.device.type == "cuda"


def launch(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str) -> Tensor:
    """Run the Triton kernel on batched inputs (B, n, d), (B, m, d), (B, m); returns (B, n) in the input dtype.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests). No validation: the public
    :func:`online_softmin` validates.
    """
    kernel = _triton_kernel()
    batch, n, d = x.shape
    m = y.shape[1]
    out = torch.empty((batch, n), dtype=x.dtype, device=x.device)
    if n == 0 or batch == 0:
        return out
    work = _compute_dtype(x.dtype)
    eps_tensor = torch.tensor([eps], dtype=work, device=x.device)
    options: dict[str, Any] = {}
    if not _targets_cuda(x):
        block_n, block_m = _BLOCKS["interpret"]
    else:
        block_n, block_m = _BLOCKS["cuda64" if work == torch.float64 else "cuda32"]
        # explicit, so Triton 3.9 does not warn that its default changes (a warning is an error under pytest)
        options["enable_fp_fusion"] = True
    grid = ((n + block_n - 1) // block_n, batch)
    kernel[grid](
        x,
        y,
        h,
        eps_tensor,
        out,
        n,
        m,
        d,
        *x.stride(),
        *y.stride(),
        *h.stride(),
        *out.stride(),
        EUCLIDEAN=cost == "euclidean",
        BLOCK_N=block_n,
        BLOCK_M=block_m,
        **options,
    )
    return out


# ----------------------------------------------------------------------------------------------- operators


def _forward(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, backend: str) -> Tensor:
    if backend == "triton":
        return launch(x, y, h, eps, cost)
    with torch.no_grad():
        return _reference_batched(x, y, h, eps, cost)


def _backward(
    grad: Tensor, x: Tensor, y: Tensor, h: Tensor, s: Tensor, eps: float, cost: str
) -> tuple[Tensor, Tensor, Tensor]:
    with torch.no_grad():
        return _backward_batched(grad, x, y, h, s, eps, cost)


@torch.library.custom_op("sciml_ot::online_softmin", mutates_args=(), device_types="cpu")
def online_softmin_op(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, backend: str) -> Tensor:
    """The operator on batched inputs (B, n, d), (B, m, d), (B, m) -> (B, n); ``backend`` already resolved."""
    return _forward(x, y, h, eps, cost, backend)


@online_softmin_op.register_kernel("cuda")
def _(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, backend: str) -> Tensor:
    return _forward(x, y, h, eps, cost, backend)


@online_softmin_op.register_fake
def _(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, backend: str) -> Tensor:
    return x.new_empty(x.shape[:-1])


@torch.library.custom_op("sciml_ot::online_softmin_backward", mutates_args=())
def online_softmin_backward_op(
    grad: Tensor, x: Tensor, y: Tensor, h: Tensor, s: Tensor, eps: float, cost: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Cotangents of (x, y, h), tile by tile from the saved output ``s`` (the chunked reference on every device)."""
    return _backward(grad, x, y, h, s, eps, cost)


@online_softmin_backward_op.register_fake
def _(grad: Tensor, x: Tensor, y: Tensor, h: Tensor, s: Tensor, eps: float, cost: str) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(h)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, y, h, eps, cost, _backend = inputs
    ctx.save_for_backward(x, y, h, output)
    ctx.eps, ctx.cost = eps, cost


def _op_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, y, h, s = ctx.saved_tensors
    gx, gy, gh = online_softmin_backward_op(grad, x, y, h, s, ctx.eps, ctx.cost)
    need = ctx.needs_input_grad
    return (gx if need[0] else None, gy if need[1] else None, gh if need[2] else None, None, None, None)


online_softmin_op.register_autograd(_op_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The operator's forward and backward without the dispatcher, for eager calls.

    torch wraps every ``custom_op`` kernel so that its first call imports ``torch._dynamo``, which costs seconds and
    switches off argument validation of every ``torch.distributions`` object in the process
    (``Distribution.set_default_validate_args(False)`` in dynamo's setup). Eager calls therefore go through this
    Function; code being compiled goes through the registered operator, which ``torch.compile`` needs.
    """

    @staticmethod
    def forward(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str, backend: str) -> Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _forward(x, y, h, eps, cost, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        x, y, h, s = ctx.saved_tensors
        gx, gy, gh = _backward(grad, x, y, h, s, ctx.eps, ctx.cost)
        need = ctx.needs_input_grad
        return (gx if need[0] else None, gy if need[1] else None, gh if need[2] else None, None, None, None)


# ----------------------------------------------------------------------------------------------- public functions


def _validate(x: object, y: object, h: object, eps: object, cost: object, check_values: bool) -> bool:
    """Check the arguments; returns whether they are batched."""
    for name, value in (("x", x), ("y", y), ("h", h)):
        if not isinstance(value, Tensor):
            raise SciMLInputError(name, f"must be a torch.Tensor, got {type(value).__name__}")
    x, y, h = cast(Tensor, x), cast(Tensor, y), cast(Tensor, h)
    if cost not in COSTS:
        raise SciMLInputError("cost", f"must be one of {', '.join(map(repr, COSTS))}; got {cost!r}")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise SciMLInputError("eps", f"must be a positive finite number, got {eps!r}")
    if x.dim() not in (2, 3):
        raise SciMLInputError("x", f"must have shape (n, d) or (B, n, d), got {tuple(x.shape)}")
    batched = x.dim() == 3
    if y.dim() != x.dim():
        raise SciMLInputError("y", f"must have {x.dim()} dimensions like x, got shape {tuple(y.shape)}")
    if y.shape[-1] != x.shape[-1]:
        raise SciMLInputError("y", f"must have the dimension d={x.shape[-1]} of x, got shape {tuple(y.shape)}")
    if batched and y.shape[0] != x.shape[0]:
        raise SciMLInputError("y", f"must have the batch size {x.shape[0]} of x, got shape {tuple(y.shape)}")
    if tuple(h.shape) != tuple(y.shape[:-1]):
        raise SciMLInputError(
            "h", f"must have shape {tuple(y.shape[:-1])} (y without its last axis), got {tuple(h.shape)}"
        )
    for name, value in (("x", x), ("y", y), ("h", h)):
        if not value.dtype.is_floating_point:
            raise SciMLInputError(name, f"must have a floating dtype, got {value.dtype}")
        if value.dtype != x.dtype:
            raise SciMLInputError(name, f"must have the dtype of x ({x.dtype}), got {value.dtype}")
        if value.device != x.device:
            raise SciMLInputError(name, f"must be on the device of x ({x.device}), got {value.device}")
    if x.shape[-1] == 0 or x.shape[-2] == 0 or y.shape[-2] == 0:
        raise SciMLInputError("x" if y.shape[-2] else "y", "must hold at least one point with d >= 1 coordinates")
    if check_values and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(x).all()):
            raise SciMLInputError("x", "must be finite")
        if not bool(torch.isfinite(y).all()):
            raise SciMLInputError("y", "must be finite")
        if bool((torch.isnan(h) | torch.isposinf(h)).any()):
            raise SciMLInputError("h", "must not hold NaN or +inf (-inf, a zero weight, is allowed)")
    return batched


def online_softmin(
    x: Tensor,
    y: Tensor,
    h: Tensor,
    eps: float,
    cost: str = "sqeuclidean",
    *,
    backend: str = "auto",
    check_values: bool = True,
) -> Tensor:
    r"""Soft-minimum over the columns of a point-cloud cost, evaluated tile by tile (the cost is never stored).

    .. math::

        s_i = -\varepsilon \log \sum_j \exp\!\big((h_j - C(x_i, y_j))/\varepsilon\big),

    with :math:`C(x, y) = \|x - y\|^2` (``"sqeuclidean"``, no factor 1/2) or :math:`\|x - y\|` (``"euclidean"``).
    With :math:`h_j = g_j + \varepsilon \log b_j` this is the log-domain Sinkhorn update of :math:`f` (Cuturi,
    NeurIPS 2013; online evaluation as in Feydy et al., AISTATS 2019, arXiv:1810.08278). Differentiable in ``x``,
    ``y`` and ``h``: :math:`\partial s_i/\partial h_j = -w_{ij}` and :math:`\partial s_i/\partial x_i =
    \sum_j w_{ij} \nabla_x C(x_i, y_j)` with the row-normalised weights
    :math:`w_{ij} = \exp((h_j - C_{ij} + s_i)/\varepsilon)` (first order only).

    Float64 inputs compute in float64, every other floating dtype in float32 (the result has the input dtype).

    Args:
        x: points :math:`x_i`, shape (n, d) or batched (B, n, d).
        y: points :math:`y_j`, shape (m, d) or (B, m, d).
        h: column offsets, shape (m,) or (B, m), same dtype as ``x``; ``-inf`` entries (zero weights) are allowed.
        eps: the temperature :math:`\varepsilon > 0`.
        cost: ``"sqeuclidean"`` or ``"euclidean"``.
        backend: ``"auto"`` (Triton for CUDA tensors, else the PyTorch reference), ``"torch"`` or ``"triton"``
            (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
        check_values: check that ``x``, ``y`` are finite and ``h`` has no NaN/+inf (one device sync; switch off
            inside solver loops whose inputs are already checked).

    Returns:
        ``s`` of shape (n,) or (B, n), dtype of ``x``. A row whose ``h`` is all ``-inf`` gives ``+inf``.

    Raises:
        SciMLInputError: wrong types, shapes, dtypes or devices, empty clouds, ``eps`` not positive and finite,
            an unknown ``cost`` or ``backend``, non-finite values (with ``check_values``), ``backend="triton"`` on
            CPU tensors without the interpreter.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        >>> y = torch.tensor([[0.0]], dtype=torch.float64)
        >>> online_softmin(x, y, torch.zeros(1, dtype=torch.float64), eps=0.5)
        tensor([0., 1.], dtype=torch.float64)
    """
    batched = _validate(x, y, h, eps, cost, check_values)
    resolved = resolve_backend(backend, x, y, h)
    eps = float(eps)
    if not batched:
        x, y, h = x[None], y[None], h[None]
    if torch.compiler.is_compiling():
        s = online_softmin_op(x, y, h, eps, cost, resolved)
    else:
        s = cast(Tensor, _Eager.apply(x, y, h, eps, cost, resolved))
    return s if batched else s[0]


def online_softmin_reference(x: Tensor, y: Tensor, h: Tensor, eps: float, cost: str = "sqeuclidean") -> Tensor:
    r"""The PyTorch reference of :func:`online_softmin` (its CPU path), streaming over column tiles.

    Keeps, for every row, the running maximum :math:`M_i` of :math:`z_{ij} = (h_j - C_{ij})/\varepsilon` over the
    columns seen so far and the rescaled sum :math:`S_i = \sum_j \exp(z_{ij} - M_i)`; a new tile with maximum
    :math:`M'_i` updates :math:`S_i \leftarrow S_i e^{M_i - M'_i} + \sum_{j \in \text{tile}} e^{z_{ij} - M'_i}`
    (Milakov and Gimelshein, arXiv:1805.02867). Memory: :math:`O(n + m)` plus one tile of about
    :data:`TILE_ELEMENTS` numbers; no :math:`n \times m` tensor is formed. Differentiable like
    :func:`online_softmin` (same backward). Arguments are validated as there.

    Args:
        x: (n, d) or (B, n, d).
        y: (m, d) or (B, m, d).
        h: (m,) or (B, m).
        eps: :math:`\varepsilon > 0`.
        cost: ``"sqeuclidean"`` or ``"euclidean"``.

    Returns:
        (n,) or (B, n), dtype of ``x``.

    Raises:
        SciMLInputError: as :func:`online_softmin`.

    Example:
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> y = torch.zeros(2, 2, dtype=torch.float64)
        >>> h = torch.zeros(2, dtype=torch.float64)
        >>> torch.allclose(online_softmin_reference(x, y, h, 1.0), -torch.log(torch.tensor([2.0], dtype=torch.float64)))
        True
    """
    return online_softmin(x, y, h, eps, cost, backend="torch")
