"""Fused multi-tensor Lion step in Triton (imported lazily: only when ``Lion(..., fused=True)`` steps).

One launch updates every tensor of a bucket (same device, parameter dtype and state dtype) in place. The host
packs one int64 table per launch:

====================  =========  ==========================================================================
slots                 length     content
====================  =========  ==========================================================================
``block_start``       ``T + 1``  first program (block) of each tensor, cumulative; the last entry is the grid
``param``             ``T``      data pointer of each parameter
``grad``              ``T``      data pointer of each gradient
``exp_avg``           ``T``      data pointer of each momentum buffer
``numel``             ``T``      number of elements of each tensor
``hyper``             ``5``      ``lr``, ``1 - lr*weight_decay``, ``1 - beta1``, ``1 - beta2``, ``huber_delta``
                                 as float64 bit patterns
====================  =========  ==========================================================================

A program finds its tensor by a binary search over ``block_start`` (``ceil(log2 T)`` scalar loads), so the
table is ``O(T)`` however large the tensors are, and one launch covers the whole bucket. Integer addresses become
typed pointers through a cast to the pointer type of a *witness* argument (the first tensor of each kind), which
works the same compiled and under the interpreter (``TRITON_INTERPRET=1``, CPU tensors, host addresses).

Arithmetic is in the momentum's dtype (float32 for float32/float16/bfloat16 parameters, float64 for float64), the
parameter is stored back in its own dtype. The two interpolations use ``fma`` in the same shape as
``torch.lerp`` (``m + w (g - m)`` for ``w < 1/2``, else ``g - (1 - w)(g - m)``), and the parameter update is
``fma(-lr, u, decay * p)``, the shape of ``p.mul_(decay).add_(u, alpha=-lr)``.

No ``@triton.autotune`` here: the kernel updates its arguments in place, and an autotuner benchmarks a
configuration by running it, so it would apply the update several times on the first call (lion-pytorch issue
#20, where that corrupted the optimizer state on resume). The block size is fixed instead.
"""

# The Triton DSL is not typeable: constexpr parameters take Python values, pointer casts take tensors.
# pyright: reportArgumentType=false, reportOperatorIssue=false, reportCallIssue=false, reportGeneralTypeIssues=false
# pyright: reportAttributeAccessIssue=false, reportOptionalMemberAccess=false

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import torch
import triton  # noqa: TID253 - this module is imported only when the fused path runs
import triton.language as tl  # noqa: TID253
from sciml_protocols import SciMLInputError

__all__ = ["BLOCK", "KAPPA_CODES", "lion_multi_tensor_step"]

BLOCK = 1024
"""Elements per program; fixed (no autotuning of an in-place kernel)."""

KAPPA_CODES: dict[str, int] = {"sign": 0, "huber": 1}
"""The elementwise :math:`\\nabla K` the kernel implements, and their compile-time codes."""

_HALF = (torch.float16, torch.bfloat16)
_N_HYPER = 5


@triton.jit
def _lerp(start, end, weight):
    # torch.lerp's two-sided formula, each side one fused multiply-add
    diff = end - start
    return tl.where(weight < 0.5, tl.fma(weight, diff, start), tl.fma(-(1.0 - weight), diff, end))


@triton.jit
def _lion_multi_tensor_kernel(
    table_ptr,
    n_tensors,
    n_search,
    param_witness,
    grad_witness,
    exp_avg_witness,
    KAPPA: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    # largest tensor index whose first block is <= pid (invariant: start[lo] <= pid < start[hi])
    lo = pid * 0
    hi = lo + n_tensors
    for _ in range(n_search):
        mid = (lo + hi) // 2
        go_right = tl.load(table_ptr + mid) <= pid
        lo = tl.where(go_right, mid, lo)
        hi = tl.where(go_right, hi, mid)
    tensor = lo
    first_block = tl.load(table_ptr + tensor)

    base = table_ptr + (n_tensors + 1)
    param_ptr = tl.load(base + tensor).to(param_witness.dtype)
    grad_ptr = tl.load(base + n_tensors + tensor).to(grad_witness.dtype)
    exp_avg_ptr = tl.load(base + 2 * n_tensors + tensor).to(exp_avg_witness.dtype)
    numel = tl.load(base + 3 * n_tensors + tensor)

    compute = exp_avg_witness.dtype.element_ty
    hyper = base + 4 * n_tensors
    lr = tl.load(hyper).to(tl.float64, bitcast=True).to(compute)
    decay = tl.load(hyper + 1).to(tl.float64, bitcast=True).to(compute)
    weight1 = tl.load(hyper + 2).to(tl.float64, bitcast=True).to(compute)
    weight2 = tl.load(hyper + 3).to(tl.float64, bitcast=True).to(compute)
    delta = tl.load(hyper + 4).to(tl.float64, bitcast=True).to(compute)

    offsets = (pid - first_block) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    param = tl.load(param_ptr + offsets, mask=mask, other=0.0).to(compute)
    grad = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(compute)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask, other=0.0)
    if MAXIMIZE:
        grad = -grad

    blend = _lerp(exp_avg, grad, weight1)
    if KAPPA == 0:
        # torch.sign: 0 for 0 and for NaN
        update = (blend > 0).to(compute) - (blend < 0).to(compute)
    else:
        scaled = blend / delta
        # clamp to [-1, 1], NaN propagates (torch.clamp_min/clamp_max)
        update = tl.where(scaled > 1.0, 1.0, tl.where(scaled < -1.0, -1.0, scaled))
    new_param = tl.fma(-lr, update, param * decay)
    new_exp_avg = _lerp(exp_avg, grad, weight2)

    tl.store(param_ptr + offsets, new_param.to(param_witness.dtype.element_ty), mask=mask)
    tl.store(exp_avg_ptr + offsets, new_exp_avg, mask=mask)


def _float_bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _check_bucket(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], exp_avgs: Sequence[torch.Tensor]
) -> None:
    if not (len(params) == len(grads) == len(exp_avgs)):
        raise SciMLInputError(
            "params",
            f"params, grads and exp_avgs must have one entry each, got {len(params)}, {len(grads)}, {len(exp_avgs)}",
        )
    first = params[0]
    state_dtype = torch.float32 if first.dtype in _HALF else first.dtype
    if state_dtype not in (torch.float32, torch.float64):
        raise SciMLInputError("params", f"must be float16, bfloat16, float32 or float64, got {first.dtype}")
    for index, (p, g, m) in enumerate(zip(params, grads, exp_avgs, strict=True)):
        if p.device != first.device or g.device != first.device or m.device != first.device:
            raise SciMLInputError(f"params[{index}]", f"all tensors of one launch must be on {first.device}")
        if p.dtype != first.dtype or g.dtype != first.dtype:
            raise SciMLInputError(
                f"params[{index}]", f"param and grad must both be {first.dtype}, got {p.dtype} and {g.dtype}"
            )
        if m.dtype != state_dtype:
            raise SciMLInputError(
                f"exp_avgs[{index}]", f"must be {state_dtype} for {first.dtype} params, got {m.dtype}"
            )
        if not (p.shape == g.shape == m.shape):
            raise SciMLInputError(
                f"params[{index}]", f"param, grad and exp_avg shapes differ: {p.shape}, {g.shape}, {m.shape}"
            )
        if not (p.is_contiguous() and g.is_contiguous() and m.is_contiguous()):
            raise SciMLInputError(f"params[{index}]", "param, grad and exp_avg must be contiguous")


def lion_multi_tensor_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    kappa: str = "sign",
    huber_delta: float = 1.0,
    maximize: bool = False,
    block: int = BLOCK,
) -> None:
    r"""One Lion-:math:`K` step on a list of tensors, in place, in one Triton launch.

    .. math::
        c = \beta_1 m + (1 - \beta_1) g, \qquad
        x \leftarrow (1 - \eta\lambda)\,x - \eta\,\nabla K(c), \qquad
        m \leftarrow \beta_2 m + (1 - \beta_2) g,

    with :math:`\nabla K(c) = \operatorname{sign}(c)` (``"sign"``) or :math:`\operatorname{clip}(c/\delta, -1, 1)`
    (``"huber"``), and :math:`g` negated when ``maximize``. Chen et al., "Symbolic Discovery of Optimization
    Algorithms", NeurIPS 2023 (arXiv 2302.06675); Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained
    Optimization: As Lyapunov Predicts", ICLR 2024 (arXiv 2310.05898).

    Args:
        params: parameters, all on one device, one dtype (float16, bfloat16, float32 or float64), contiguous;
            updated in place.
        grads: gradients, same shapes and dtype as ``params``.
        exp_avgs: momentum buffers, same shapes, float32 (float64 for float64 params); updated in place.
        lr: learning rate :math:`\eta`.
        beta1: interpolation factor of the update direction.
        beta2: decay of the momentum.
        weight_decay: decoupled weight decay :math:`\lambda` (the parameter is scaled by :math:`1 - \eta\lambda`).
        kappa: ``"sign"`` or ``"huber"``.
        huber_delta: :math:`\delta` of the Huber direction.
        maximize: ascend instead of descend.
        block: elements per program (tests use small blocks to cover ragged tails).

    Raises:
        SciMLInputError: for an unknown kappa, tensors on several devices, mixed dtypes, mismatched shapes,
            non-contiguous tensors or a momentum of the wrong dtype.

    Example:
        >>> import os
        >>> if os.environ.get("TRITON_INTERPRET") == "1":  # CPU tensors need the interpreter
        ...     p, g, m = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0]), torch.zeros(2)
        ...     lion_multi_tensor_step([p], [g], [m], lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0)
        ...     print(p.tolist())
        ... else:
        ...     print([0.8999999761581421, -1.0])
        [0.8999999761581421, -1.0]
    """
    if kappa not in KAPPA_CODES:
        raise SciMLInputError("kappa", f"the fused kernel implements {sorted(KAPPA_CODES)}, got {kappa!r}")
    if isinstance(block, bool) or block < 16 or block & (block - 1):
        raise SciMLInputError("block", f"must be a power of two >= 16, got {block!r}")
    keep = [i for i, p in enumerate(params) if p.numel() > 0]
    if not keep:
        return
    params = [params[i] for i in keep]
    grads = [grads[i] for i in keep]
    exp_avgs = [exp_avgs[i] for i in keep]
    _check_bucket(params, grads, exp_avgs)

    n_tensors = len(params)
    numels = [p.numel() for p in params]
    block_start = [0]
    for numel in numels:
        block_start.append(block_start[-1] + triton.cdiv(numel, block))
    n_blocks = block_start[-1]
    hyper = [lr, 1.0 - lr * weight_decay, 1.0 - beta1, 1.0 - beta2, huber_delta]
    table = torch.tensor(
        [
            *block_start,
            *(p.data_ptr() for p in params),
            *(g.data_ptr() for g in grads),
            *(m.data_ptr() for m in exp_avgs),
            *numels,
            *(_float_bits(value) for value in hyper),
        ],
        dtype=torch.int64,
    )
    assert table.numel() == 5 * n_tensors + 1 + _N_HYPER
    device = params[0].device
    if device.type != "cpu":
        table = table.to(device, non_blocking=True)
    n_search = math.ceil(math.log2(n_tensors)) if n_tensors > 1 else 0
    _lion_multi_tensor_kernel[(n_blocks,)](
        table,
        n_tensors,
        n_search,
        params[0],
        grads[0],
        exp_avgs[0],
        KAPPA=KAPPA_CODES[kappa],
        MAXIMIZE=bool(maximize),
        BLOCK=block,
        num_warps=4,
        enable_fp_fusion=True,  # explicit: Triton 3.9 warns when it is unset, and 3.10 flips the default
    )
