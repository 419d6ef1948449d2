r"""Fused AdamP step in Triton: two multi-tensor launches per parameter group.

Why two launches: the projection of a tensor depends on reductions of the *new* moments over each row (channel
view) and over the whole tensor (layer view), so no element can be written before every row of its tensor has been
reduced. Launch 1 updates the moments and writes per-row sums; launch 2 decides per tensor and moves the
parameters.

- Launch 1 (``_moments_kernel``), one program per row: :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
  :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2` in the state dtype, the Adam direction :math:`u`, and the row
  sums :math:`\langle g, w\rangle, \|g\|^2, \|w\|^2, \langle u, w\rangle` into a ``(rows, 4)`` table.
- Launch 2 (``_apply_kernel``), same programs: each program reduces its tensor's rows of the table in a fixed
  order (max row cosine, tensor sums; deterministic, no atomics), takes the channel test then the layer test,
  recomputes :math:`u` from the stored moments and writes
  :math:`w \leftarrow w (1 - \eta\lambda\rho) - s\,(u - c\,w)` with :math:`c = \langle u, w_r\rangle/(\|w_r\|+
  \epsilon)^2` (or the tensor-wide value), :math:`s = \eta/(1-\beta_1^t)`.

Multi-tensor design: all tensors of a launch share a dtype triple (parameter, gradient, state). The kernel gets the
first tensor of each list as a base pointer and an int64 table of element offsets of every tensor from that base
(plain pointer arithmetic, so it also runs under ``TRITON_INTERPRET=1``), an int64 tensor table (numel, row
length, first stats row, rows; rows is 0 for unprojected tensors, ``ndim <= 1``), a table of per-tensor
thresholds :math:`\delta/\sqrt{d}`, and an int64 program table (tensor, first element, length, stats row).
Unprojected tensors are cut into chunks of ``CHUNK`` elements. Cost note: each program of launch 2 re-reduces its
tensor's row table, :math:`O(R^2/\text{BLOCK\_ROWS})` loads for a tensor of :math:`R` rows: negligible for
convolution and linear weights with up to a few thousand rows, noticeable for very tall matrices (embeddings).

Compute happens in the state dtype: float32 for float32/bfloat16/float16 parameters, float64 for float64. No
autotuning (the kernels work in place). Scalars travel in a small tensor of the state dtype so float64 runs are not
rounded through float32 kernel arguments.
"""

# Triton's constexpr parameters and tensor-like values confuse the type checker.
# Inside @triton.jit, if/else blocks on constexpr flags read better than ternaries.
# ruff: noqa: SIM108
# pyright: reportArgumentType=false, reportOperatorIssue=false, reportCallIssue=false, reportGeneralTypeIssues=false

from __future__ import annotations

import math
import os
from typing import Any

import torch
import triton  # noqa: TID253 - this module is imported only when the fused path runs
import triton.language as tl  # noqa: TID253
from sciml_protocols import SciMLInputError

__all__ = ["fused_adamp_step_"]

BLOCK = 1024
BLOCK_ROWS = 256
CHUNK = 8192
# The interpreter runs each program in numpy, op by op: small vectors keep tests fast there.
_INTERPRET_BLOCK = 1024
_INTERPRET_BLOCK_ROWS = 256

# scalar slots
_BETA1, _ONE_M_BETA1, _BETA2, _ONE_M_BETA2, _EPS, _STEP_SIZE, _BIAS2_ROOT, _DECAY_FULL, _DECAY_PROJ = range(9)


@triton.jit
def _moments_kernel(
    p_base,
    g_base,
    m_base,
    v_base,
    offsets_ptr,
    blocks_ptr,
    stats_ptr,
    scalars_ptr,
    n_tensors,
    NESTEROV: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    cdt: tl.constexpr = m_base.dtype.element_ty
    pid = tl.program_id(0)
    tensor = tl.load(blocks_ptr + pid * 4)
    start = tl.load(blocks_ptr + pid * 4 + 1)
    length = tl.load(blocks_ptr + pid * 4 + 2)
    stats_row = tl.load(blocks_ptr + pid * 4 + 3)
    p_ptr = p_base + tl.load(offsets_ptr + tensor) + start
    g_ptr = g_base + tl.load(offsets_ptr + n_tensors + tensor) + start
    m_ptr = m_base + tl.load(offsets_ptr + 2 * n_tensors + tensor) + start
    v_ptr = v_base + tl.load(offsets_ptr + 3 * n_tensors + tensor) + start
    beta1 = tl.load(scalars_ptr + 0)
    one_m_beta1 = tl.load(scalars_ptr + 1)
    beta2 = tl.load(scalars_ptr + 2)
    one_m_beta2 = tl.load(scalars_ptr + 3)
    eps = tl.load(scalars_ptr + 4)
    bias2_root = tl.load(scalars_ptr + 6)
    acc_gp = tl.zeros([BLOCK], dtype=cdt)
    acc_gg = tl.zeros([BLOCK], dtype=cdt)
    acc_pp = tl.zeros([BLOCK], dtype=cdt)
    acc_up = tl.zeros([BLOCK], dtype=cdt)
    for k in range(0, length, BLOCK):
        idx = k + tl.arange(0, BLOCK)
        mask = idx < length
        g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(cdt)
        p = tl.load(p_ptr + idx, mask=mask, other=0.0).to(cdt)
        m = tl.load(m_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=0.0)
        m = m * beta1 + g * one_m_beta1
        v = v * beta2 + (g * g) * one_m_beta2
        tl.store(m_ptr + idx, m, mask=mask)
        tl.store(v_ptr + idx, v, mask=mask)
        if IS_F64:
            denom = tl.sqrt(v) / bias2_root + eps
        else:
            denom = tl.div_rn(tl.sqrt_rn(v), bias2_root) + eps
        if NESTEROV:
            numerator = beta1 * m + one_m_beta1 * g
        else:
            numerator = m
        if IS_F64:
            u = numerator / denom
        else:
            u = tl.div_rn(numerator, denom)
        u = tl.where(mask, u, 0.0)
        acc_gp += g * p
        acc_gg += g * g
        acc_pp += p * p
        acc_up += u * p
    if stats_row >= 0:
        tl.store(stats_ptr + stats_row * 4 + 0, tl.sum(acc_gp, axis=0))
        tl.store(stats_ptr + stats_row * 4 + 1, tl.sum(acc_gg, axis=0))
        tl.store(stats_ptr + stats_row * 4 + 2, tl.sum(acc_pp, axis=0))
        tl.store(stats_ptr + stats_row * 4 + 3, tl.sum(acc_up, axis=0))


@triton.jit
def _apply_kernel(
    p_base,
    g_base,
    m_base,
    v_base,
    offsets_ptr,
    blocks_ptr,
    tensors_ptr,
    thresholds_ptr,
    stats_ptr,
    scalars_ptr,
    n_tensors,
    NESTEROV: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
):
    cdt: tl.constexpr = m_base.dtype.element_ty
    pid = tl.program_id(0)
    tensor = tl.load(blocks_ptr + pid * 4)
    start = tl.load(blocks_ptr + pid * 4 + 1)
    length = tl.load(blocks_ptr + pid * 4 + 2)
    stats_row = tl.load(blocks_ptr + pid * 4 + 3)
    first_row = tl.load(tensors_ptr + tensor * 2)
    n_rows = tl.load(tensors_ptr + tensor * 2 + 1)
    row_threshold = tl.load(thresholds_ptr + tensor * 2)
    layer_threshold = tl.load(thresholds_ptr + tensor * 2 + 1)
    beta1 = tl.load(scalars_ptr + 0)
    one_m_beta1 = tl.load(scalars_ptr + 1)
    eps = tl.load(scalars_ptr + 4)
    step_size = tl.load(scalars_ptr + 5)
    bias2_root = tl.load(scalars_ptr + 6)
    decay_full = tl.load(scalars_ptr + 7)
    decay_proj = tl.load(scalars_ptr + 8)

    # Reduce this tensor's row table in a fixed order (every program of the tensor gets the same answer).
    max_cos = tl.zeros([BLOCK_ROWS], dtype=cdt)
    tot_gp = tl.zeros([BLOCK_ROWS], dtype=cdt)
    tot_gg = tl.zeros([BLOCK_ROWS], dtype=cdt)
    tot_pp = tl.zeros([BLOCK_ROWS], dtype=cdt)
    tot_up = tl.zeros([BLOCK_ROWS], dtype=cdt)
    for r in range(0, n_rows, BLOCK_ROWS):
        rows = r + tl.arange(0, BLOCK_ROWS)
        rmask = rows < n_rows
        base = stats_ptr + (first_row + rows) * 4
        gp = tl.load(base + 0, mask=rmask, other=0.0)
        gg = tl.load(base + 1, mask=rmask, other=0.0)
        pp = tl.load(base + 2, mask=rmask, other=0.0)
        up = tl.load(base + 3, mask=rmask, other=0.0)
        if IS_F64:
            cos = tl.abs(gp) / (tl.maximum(tl.sqrt(gg), eps) * tl.maximum(tl.sqrt(pp), eps))
        else:
            cos = tl.div_rn(tl.abs(gp), tl.maximum(tl.sqrt_rn(gg), eps) * tl.maximum(tl.sqrt_rn(pp), eps))
        # NaN must win the max, as in torch's max.
        max_cos = tl.where(rmask, tl.maximum(max_cos, cos, propagate_nan=tl.PropagateNan.ALL), max_cos)
        tot_gp += gp
        tot_gg += gg
        tot_pp += pp
        tot_up += up
    row_max = tl.max(max_cos, axis=0)
    # A NaN row cosine makes torch's max NaN and the test False: no projection for the tensor.
    has_nan = tl.sum((max_cos != max_cos).to(tl.int32), axis=0) > 0
    t_gp = tl.sum(tot_gp, axis=0)
    t_gg = tl.sum(tot_gg, axis=0)
    t_pp = tl.sum(tot_pp, axis=0)
    t_up = tl.sum(tot_up, axis=0)
    if IS_F64:
        layer_cos = tl.abs(t_gp) / (tl.maximum(tl.sqrt(t_gg), eps) * tl.maximum(tl.sqrt(t_pp), eps))
    else:
        layer_cos = tl.div_rn(tl.abs(t_gp), tl.maximum(tl.sqrt_rn(t_gg), eps) * tl.maximum(tl.sqrt_rn(t_pp), eps))
    channel = (n_rows > 0) & (row_max < row_threshold) & (~has_nan)
    layer = (n_rows > 0) & (~channel) & (layer_cos < layer_threshold)

    own_row = tl.maximum(stats_row, 0)
    own_pp = tl.load(stats_ptr + own_row * 4 + 2)
    own_up = tl.load(stats_ptr + own_row * 4 + 3)
    if IS_F64:
        row_norm = tl.sqrt(own_pp) + eps
        layer_norm = tl.sqrt(t_pp) + eps
        coef_row = own_up / (row_norm * row_norm)
        coef_layer = t_up / (layer_norm * layer_norm)
    else:
        row_norm = tl.sqrt_rn(own_pp) + eps
        layer_norm = tl.sqrt_rn(t_pp) + eps
        coef_row = tl.div_rn(own_up, row_norm * row_norm)
        coef_layer = tl.div_rn(t_up, layer_norm * layer_norm)
    coef = tl.where(channel, coef_row, tl.where(layer, coef_layer, 0.0))
    decay = tl.where(channel | layer, decay_proj, decay_full)

    p_ptr = p_base + tl.load(offsets_ptr + tensor) + start
    g_ptr = g_base + tl.load(offsets_ptr + n_tensors + tensor) + start
    m_ptr = m_base + tl.load(offsets_ptr + 2 * n_tensors + tensor) + start
    v_ptr = v_base + tl.load(offsets_ptr + 3 * n_tensors + tensor) + start
    for k in range(0, length, BLOCK):
        idx = k + tl.arange(0, BLOCK)
        mask = idx < length
        g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(cdt)
        p_raw = tl.load(p_ptr + idx, mask=mask, other=0.0)
        p = p_raw.to(cdt)
        m = tl.load(m_ptr + idx, mask=mask, other=0.0)
        v = tl.load(v_ptr + idx, mask=mask, other=0.0)
        if IS_F64:
            denom = tl.sqrt(v) / bias2_root + eps
        else:
            denom = tl.div_rn(tl.sqrt_rn(v), bias2_root) + eps
        if NESTEROV:
            numerator = beta1 * m + one_m_beta1 * g
        else:
            numerator = m
        if IS_F64:
            u = numerator / denom
        else:
            u = tl.div_rn(numerator, denom)
        u = tl.where(coef != 0.0, u - coef * p, u)
        p_new = p * decay - step_size * u
        tl.store(p_ptr + idx, p_new.to(p_raw.dtype), mask=mask)


def _offsets(tensors: list[torch.Tensor]) -> list[int]:
    base = tensors[0].data_ptr()
    size = tensors[0].element_size()
    out: list[int] = []
    for tensor in tensors:
        delta = tensor.data_ptr() - base
        if delta % size:
            raise SciMLInputError("params", "fused AdamP needs tensors aligned to their element size")
        out.append(delta // size)
    return out


def _local(tensor: torch.Tensor, name: str) -> torch.Tensor:
    placements = getattr(tensor, "placements", None)
    if placements is None:
        return tensor
    from torch.distributed.tensor import Replicate

    if not all(isinstance(placement, Replicate) for placement in placements):
        raise SciMLInputError(
            name,
            "fused AdamP needs whole rows and whole tensors for its projection statistics, but this DTensor is "
            f"sharded ({tuple(placements)}); use fused=False (DTensor ops reduce across shards) or replicate it",
        )
    return tensor.to_local()  # pyright: ignore[reportAttributeAccessIssue]


def _check_devices(params: list[torch.Tensor]) -> None:
    for param in params:
        if param.device.type == "cuda":
            continue
        if param.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
            continue
        raise SciMLInputError(
            "fused",
            f"fused=True needs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got device {param.device}",
        )
    if len({param.device for param in params}) > 1:
        raise SciMLInputError("params", "fused AdamP needs every parameter of a group on one device")


def fused_adamp_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
) -> None:
    r"""One AdamP step for one parameter group, in place, with two Triton launches per dtype and step bucket.

    Same update as :class:`sciml_optim.AdamP` (moments already allocated, ``steps`` already incremented,
    gradients already negated for ``maximize``).

    Args:
        params: parameters, contiguous, any of float32/float64/bfloat16/float16, each of any shape.
        grads: their gradients (same shapes).
        exp_avgs: first moments (float32 for half-precision parameters, else the parameter dtype).
        exp_avg_sqs: second moments (same dtype as ``exp_avgs``).
        steps: the step count of each parameter after this step.
        lr: learning rate.
        beta1: first-moment decay.
        beta2: second-moment decay.
        eps: Adam and norm epsilon.
        weight_decay: decoupled decay.
        delta: cosine threshold.
        wd_ratio: decay ratio for projected tensors.
        nesterov: Nesterov direction.

    Raises:
        SciMLInputError: for tensors off CUDA (unless ``TRITON_INTERPRET=1``), on several devices, non-contiguous,
            or DTensors with a non-``Replicate`` placement.

    Example:
        >>> import os
        >>> import torch
        >>> if os.environ.get("TRITON_INTERPRET") == "1":
        ...     p = torch.ones(3, 4)
        ...     fused_adamp_step_([p], [torch.ones(3, 4)], [torch.zeros(3, 4)], [torch.zeros(3, 4)], [1.0],
        ...         lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
        ...         nesterov=False)
        ...     assert torch.allclose(p, torch.full((3, 4), 0.9))
    """
    params = [_local(p, "params") for p in params]
    grads = [_local(g, "params") for g in grads]
    exp_avgs = [_local(m, "params") for m in exp_avgs]
    exp_avg_sqs = [_local(v, "params") for v in exp_avg_sqs]
    _check_devices(params)
    for exp_avg in exp_avgs:
        if exp_avg.dtype not in (torch.float32, torch.float64):
            raise SciMLInputError(
                "state", f"fused AdamP keeps float32 or float64 moments, got {exp_avg.dtype} (state from fused=False?)"
            )
    for param, exp_avg, exp_avg_sq in zip(params, exp_avgs, exp_avg_sqs, strict=True):
        if not (param.is_contiguous() and exp_avg.is_contiguous() and exp_avg_sq.is_contiguous()):
            raise SciMLInputError("params", "fused AdamP needs contiguous parameters and state")
    grads = [g.contiguous() for g in grads]
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, (param, grad, exp_avg) in enumerate(zip(params, grads, exp_avgs, strict=True)):
        if param.numel() == 0:
            continue
        buckets.setdefault((param.dtype, grad.dtype, exp_avg.dtype, steps[i]), []).append(i)
    for (_, _, state_dtype, step), members in buckets.items():
        _launch(
            [params[i] for i in members],
            [grads[i] for i in members],
            [exp_avgs[i] for i in members],
            [exp_avg_sqs[i] for i in members],
            state_dtype,
            step,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )


def _launch(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    state_dtype: torch.dtype,
    step: float,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
) -> None:
    device = params[0].device
    n_tensors = len(params)
    offsets = [*_offsets(params), *_offsets(grads), *_offsets(exp_avgs), *_offsets(exp_avg_sqs)]
    tensor_rows: list[int] = []
    thresholds: list[float] = []
    blocks: list[int] = []
    n_stats = 0
    for t, param in enumerate(params):
        numel = param.numel()
        if param.dim() > 1:
            rows = param.shape[0]
            row_len = numel // rows
            tensor_rows += [n_stats, rows]
            thresholds += [delta / math.sqrt(row_len), delta / math.sqrt(numel)]
            for r in range(rows):
                blocks += [t, r * row_len, row_len, n_stats + r]
            n_stats += rows
        else:
            tensor_rows += [0, 0]
            thresholds += [0.0, 0.0]
            for start in range(0, numel, CHUNK):
                blocks += [t, start, min(CHUNK, numel - start), -1]
    decay_on = weight_decay > 0
    scalars = [0.0] * 9
    scalars[_BETA1] = beta1
    scalars[_ONE_M_BETA1] = 1.0 - beta1
    scalars[_BETA2] = beta2
    scalars[_ONE_M_BETA2] = 1.0 - beta2
    scalars[_EPS] = eps
    scalars[_STEP_SIZE] = lr / (1.0 - beta1**step)
    scalars[_BIAS2_ROOT] = math.sqrt(1.0 - beta2**step)
    scalars[_DECAY_FULL] = 1.0 - lr * weight_decay if decay_on else 1.0
    scalars[_DECAY_PROJ] = 1.0 - lr * weight_decay * wd_ratio if decay_on else 1.0

    def table(values: list[int] | list[float], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    offsets_t = table(offsets, torch.int64)
    blocks_t = table(blocks, torch.int64)
    tensors_t = table(tensor_rows, torch.int64)
    thresholds_t = table(thresholds, state_dtype)
    scalars_t = table(scalars, state_dtype)
    stats = torch.zeros((max(n_stats, 1), 4), dtype=state_dtype, device=device)
    grid = (len(blocks) // 4,)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    block = _INTERPRET_BLOCK if interpret else BLOCK
    block_rows = _INTERPRET_BLOCK_ROWS if interpret else BLOCK_ROWS
    _moments_kernel[grid](
        params[0],
        grads[0],
        exp_avgs[0],
        exp_avg_sqs[0],
        offsets_t,
        blocks_t,
        stats,
        scalars_t,
        n_tensors,
        NESTEROV=nesterov,
        IS_F64=state_dtype == torch.float64,
        BLOCK=block,
        enable_fp_fusion=True,  # explicit: Triton 3.9 warns when it is unset, and 3.10 flips the default
    )
    _apply_kernel[grid](
        params[0],
        grads[0],
        exp_avgs[0],
        exp_avg_sqs[0],
        offsets_t,
        blocks_t,
        tensors_t,
        thresholds_t,
        stats,
        scalars_t,
        n_tensors,
        NESTEROV=nesterov,
        IS_F64=state_dtype == torch.float64,
        BLOCK=block,
        BLOCK_ROWS=block_rows,
        enable_fp_fusion=True,  # explicit: Triton 3.9 warns when it is unset, and 3.10 flips the default
    )
