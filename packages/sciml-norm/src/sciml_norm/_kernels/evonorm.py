r"""Fused EvoNorm-S0 and EvoNorm-B0: Triton kernels for forward and backward, registered as ``torch.library`` ops.

For :math:`x \in \mathbb{R}^{N \times C \times H \times W}` and per-channel :math:`w, b, v` (Liu, Brock, Simonyan,
Le, "Evolving Normalization-Activation Layers", NeurIPS 2020, arXiv:2004.02967):

.. math::

    \text{S0:}\quad y = \frac{x\,\sigma(v x)}{\sqrt{s^2_{g}(x) + \varepsilon}}\, w + b, \qquad
    \text{B0:}\quad y = \frac{x}{\max\big(\sqrt{s^2_{c}(x) + \varepsilon},\ v x + \sqrt{s^2_{nc}(x) + \varepsilon}\big)}
    \, w + b,

with :math:`s^2_g` the biased variance over a group of :math:`C/G` channels and :math:`H \times W` of one sample,
:math:`s^2_{nc}` over :math:`H \times W` (instance) and :math:`s^2_c` over :math:`N \times H \times W` (batch; in
evaluation the running variance instead).

Every forward is two passes over :math:`x` with a small step between them:

1. **statistics**: one program per sample and block of channels streams over :math:`H \times W` and accumulates,
   in float32 (float64 for float64 input), the sums of :math:`x - k_{nc}` and :math:`(x - k_{nc})^2` with the
   shift :math:`k_{nc} = x_{nc00}` (shifted sums avoid the cancellation of :math:`E[x^2] - E[x]^2`). It writes the
   per-(n, c) mean and sum of squared deviations;
2. **finalize**: a small kernel over those :math:`N \times C` numbers combines them (Chan's pairwise formula) into
   the group statistics (S0) or the instance and batch statistics (B0; in training it also updates the running
   variance in place on the eager path);
3. **output**: an element-wise pass over tiles of ``BLOCK_C`` channels by ``BLOCK_HW`` positions.

Every backward is also two passes with a finalize step between: one program per sample and block of channels
reduces the per-(n, c) sums that the parameter gradients and the statistics' cotangents need, a small kernel sums
those partials over :math:`n` in a fixed order (no atomics: the results are deterministic) and forms the
coefficients of the statistics' terms, then an element-wise pass writes :math:`\partial L/\partial x`. Only
:math:`x` and the small statistics are saved for backward, never :math:`y` or intermediates.

**Two strategies.** The passes above ("split": six launches per training step, thousands of programs each) suit
large feature maps, where the step is bound by the GPU's memory traffic. For smaller ones (ResNet-50's 28x28,
14x14 and 7x7 stages) a step is bound by the host, by the Python cost of each Triton launch, so there the
"persistent" kernels do each direction in a single launch, with the finalize step inside the program:

* S0: one program per (sample, group) reads the group's :math:`C/G \times H \times W` elements once for the
  statistics (per-channel shifted sums merged across blocks of channels by Chan's formula) and again for the output
  (mostly from L2). Its backward reduces the per-channel partials and the group coefficient, then writes
  :math:`\bar x` in the same program; the partials of the parameter gradients are summed over :math:`n` by one
  PyTorch reduction (fixed order, deterministic).
* B0: one program per block of channels owns the whole batch: pass 1 walks the (n, hw) tiles for the instance
  statistics, merges them into the batch statistics (Chan's formula over blocks of samples) and updates the running
  variance; pass 2 writes :math:`y`. Its backward keeps the sums over :math:`n` (parameter gradients, the batch
  coefficient) in registers between its two passes. The per-(n, c) numbers a pass writes and the next one reads
  back are separated by a barrier of the program's threads. With ``_PERSISTENT_STAGES`` above 1 the loops over
  the batch are flattened with the loops over H x W and software-pipelined by Triton (``tl.range(num_stages=...)``:
  asynchronous copies through shared memory keep that many tiles in flight, where one program per SM would
  otherwise wait for each tile); 1, the default, does not pipeline (plain Triton loops do not pipeline loads that
  feed no matrix product). Both give the same bits.

``STRATEGY`` (module attribute) picks: ``"auto"`` (default) takes the persistent kernels for inputs of at most
:math:`2^{25}` elements that still give at least 64 programs (or at most :math:`2^{20}` elements), else the split
passes; ``"split"`` and ``"persistent"`` force one. Both are deterministic and agree to rounding. Either way a
training step launches nothing but the kernels and allocates nothing but its outputs. The persistent path also
keeps the host work per step small: each forward writes its statistics into one buffer that the eager autograd path
saves whole, the parameter gradients are rows of one buffer, and the S0 backward adds its one reduction over
:math:`n`. The registered operators copy outputs that would share storage (an operator's outputs may not alias).

Launches: after the first launch of a kernel with given arguments, later launches with arguments Triton would
specialize the same way call that compiled kernel's launcher directly instead of going through ``JITFunction.run``
(:mod:`sciml_norm._kernels._launch`; about 10 us less host time per launch). ``_launch.LAUNCH = "triton"`` turns
this off.

Gradients (:math:`g = \partial L/\partial y`; S0 with :math:`s = \sigma(v x)`, :math:`a = x s`, :math:`r` the
group's inverse std, :math:`\mu_g` its mean, :math:`M = (C/G) H W`):

.. math::

    \bar b_c = \sum g, \quad \bar w_c = \sum r g a, \quad \bar v_c = \sum r w g\, x^2 s (1 - s), \quad
    \bar x = r w g\,\big(s + v x s (1 - s)\big) - \frac{r^3}{M}\Big(\sum_{g} w g a\Big)(x - \mu_g).

B0 with :math:`d = \max(\ell_c, \rho)`, :math:`\rho = v x + \varsigma_{nc}`, :math:`t = 1, \tfrac12, 0` as
:math:`\rho >, =, < \ell_c` (``torch.maximum``'s convention for ties) and :math:`\gamma = -g w x / d^2`:

.. math::

    \bar x = \frac{g w}{d} + t \gamma v + \frac{\sum_{hw} t\gamma}{HW \varsigma_{nc}} (x - \mu_{nc})
    + \frac{\sum_{n,hw} (1 - t)\gamma}{N HW \ell_c} (x - \mu_c), \quad
    \bar v_c = \sum t \gamma x, \quad \bar w_c = \sum g x / d,

the last term only in training (in evaluation :math:`\ell_c` comes from the running variance).

Layouts: any :math:`x` whose :math:`H, W` axes flatten to one strided axis (NCHW-contiguous, channels-last, or
expanded gradients) is read in place through its strides; anything else is copied once. Outputs are channels-last
when :math:`x` is, else contiguous. Launch layouts (strides, blocks, grids) are cached per shape and strides. The
kernels also tell Triton how far their rows are aligned (``ALIGN``, from :func:`_stride_align`), which its own
specialization (multiples of 16) misses for NCHW rows of 196 elements: with it, ResNet-50's 14x14 stage is read in
vectors.

The operators ``sciml_norm::evonorm_s0_fwd``/``_bwd`` and ``sciml_norm::evonorm_b0_fwd``/``_bwd`` take a
``backend`` argument: ``"triton"`` launches the kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``),
``"torch"`` runs the same algorithm with PyTorch operations (so ``opcheck`` and ``torch.compile`` work on
machines without a GPU). ``triton`` is imported only when a kernel is first launched. Eager calls bypass the
dispatcher (a plain ``autograd.Function``); code under ``torch.compile`` calls the operators.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any, NamedTuple, cast

import torch
from sciml_protocols import SciMLError
from torch import Tensor

__all__ = [
    "b0_backward",
    "b0_forward",
    "channel_stats",
    "evonorm_b0_fused",
    "evonorm_s0_fused",
    "s0_backward",
    "s0_forward",
]

_TILE = {"cuda": 2048, "interpret": 1024}  # elements per program tile
_MAX_BLOCK_HW = 256
_MAX_BLOCK_C = 64
_FINALIZE_TILE = 2048  # elements per program of the finalize kernels (statistics and partial sums of N x C numbers)

# Strategy of the Triton path (module docstring, "Two strategies"): "auto", "split" or "persistent".
STRATEGY = "auto"
_PERSISTENT_MAX_NUMEL = 1 << 25  # auto: persistent kernels for inputs up to this many elements (host-bound sizes)...
_PERSISTENT_MIN_PROGRAMS = 64  # ... that give at least this many programs ...
_PERSISTENT_SMALL_NUMEL = 1 << 20  # ... or are this small anyway
_PERSISTENT_PROGRAMS = 128  # B0: channel blocks are sized for about this many programs (one wave on an H100)
_PERSISTENT_TILE = {"cuda": 4096, "interpret": 1024}  # B0: elements per BLOCK_N x BLOCK_C x BLOCK_HW tile
_PERSISTENT_WARPS = 8  # B0: warps per program (few programs, each streaming N x HW x BLOCK_C elements twice)
_INT32_OFFSETS = 1 << 31  # B0's persistent kernels form offsets in 32 bits below this (tests lower it)
# B0's persistent kernels walk the batch backwards in their second pass, so that it starts on the blocks the first
# pass read last, the ones most likely still in L2 (the same bits either way: pass 2 is element-wise)
_PERSISTENT_REVERSE = True
# B0: pipeline stages of the persistent kernels' loops (1: not pipelined; 2-3: asynchronous copies keep tiles in
# flight through shared memory; the same bits either way; the launch-constant sweep measures both)
_PERSISTENT_STAGES = 1
# The kernels tell Triton how far their per-(n, c) row offsets are aligned (_stride_align), so that rows whose
# stride is a multiple of 4 but not of 16 elements (NCHW at 14x14: 196) are still read in vectors; False turns the
# hints off (the sweep measures both)
_STRIDE_HINTS = True


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _hw_stride_of(shape: tuple[int, ...], stride: tuple[int, ...]) -> int | None:
    """Stride of the flattened (H, W) axis, or None when H and W do not flatten to one axis."""
    _, _, height, width = shape
    _, _, stride_h, stride_w = stride
    if width == 1:
        return stride_h
    if height == 1 or stride_h == width * stride_w:
        return stride_w
    return None


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _empty_output(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The output buffer: channels-last when ``x`` is, else contiguous (real and fake kernels agree on this)."""
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device, memory_format=fmt)


def _blocks(channels: int, hw: int, channel_stride: int, cuda: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW): the contiguous axis gets the long side of the tile."""
    tile = _TILE["cuda" if cuda else "interpret"]
    if channel_stride == 1 and channels > 1:  # channels-last: channels are contiguous
        block_c = min(_next_pow2(channels), _MAX_BLOCK_C)
        block_hw = min(_next_pow2(hw), max(1, tile // block_c))
    else:
        block_hw = min(_next_pow2(hw), _MAX_BLOCK_HW)
        block_c = min(_next_pow2(channels), max(1, tile // block_hw))
    return block_c, block_hw


def _finalize_blocks(rows: int, cols: int, tile: int) -> tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_COLS) of a finalize kernel that reduces ``rows`` numbers for each of ``cols`` outputs."""
    block_cols = min(_next_pow2(cols), 32, tile)
    return min(_next_pow2(rows), max(1, tile // block_cols)), block_cols


@functools.cache
def _split(value: float) -> tuple[float, float]:
    """``value`` as ``hi + lo`` with ``hi`` representable in float32.

    Triton passes Python floats to compiled kernels as float32 scalars; float64 kernels add both parts, which keeps
    a float64 ``eps`` or momentum exact to float64 rounding (float32 kernels lose nothing: ``lo`` is below half an
    ulp of ``hi``).
    """
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, value - hi


# ----------------------------------------------------------------------------------------------- Triton kernels


_KERNEL_NAMES = (
    "stats",
    "s0_group",
    "s0_forward",
    "s0_reduce",
    "s0_grad",
    "s0_dx",
    "b0_batch",
    "b0_forward",
    "b0_reduce",
    "b0_grad",
    "b0_dx",
    "s0_persistent_forward",
    "s0_persistent_backward",
    "b0_persistent_forward",
    "b0_persistent_backward",
)


@functools.cache
def _kernels() -> dict[str, Any]:
    """The ``@triton.jit`` kernels by name, each wrapped in a :class:`~sciml_norm._kernels._launch.Launcher`.

    ``triton`` is imported here, on first use, with the kernels' module :mod:`sciml_norm._kernels._evonorm_jit`,
    and nowhere at this module's level.
    """
    from sciml_norm._kernels import _evonorm_jit
    from sciml_norm._kernels._launch import Launcher

    return {name: Launcher(getattr(_evonorm_jit, f"{name}_kernel")) for name in _KERNEL_NAMES}


class _Plan(NamedTuple):
    """Sizes, strides, blocks and grids of the launches over one (N, C, H, W) layout (cached per shape/strides)."""

    n: int
    c: int
    hw: int
    copy: bool  # H, W do not flatten: the kernels read a contiguous copy
    sxn: int
    sxc: int
    sxhw: int
    syn: int  # strides of the outputs (y, dx), which take memory format `fmt`
    syc: int
    syhw: int
    fmt: torch.memory_format
    block_c: int
    block_hw: int
    n_cblocks: int
    n_hwblocks: int
    reduce_grid: tuple[int]
    tile_grid: tuple[int]
    batch_block_n: int  # B0's finalize kernels: (N, C) partials reduced over n in BLOCK_N x BLOCK_C tiles
    batch_block_c: int
    batch_grid: tuple[int]
    options: dict[str, Any]
    cuda: bool  # CUDA launch sizes (else the interpreter's)
    align: int = 1  # _stride_align of H*W and the strides of x and of the outputs


@functools.lru_cache(maxsize=512)
def _flat_strides(shape: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, int, int] | None:
    """Strides over (n, c, flattened hw) of a tensor, or None when H and W do not flatten (copy it)."""
    hw_stride = _hw_stride_of(shape, stride)
    return None if hw_stride is None else (stride[0], stride[1], hw_stride)


@functools.lru_cache(maxsize=512)
def _plan_for(
    shape: tuple[int, ...], stride: tuple[int, ...], cuda: bool, tile: int, max_hw: int, max_c: int, finalize: int
) -> _Plan:
    del tile, max_hw, max_c  # part of the key only: benchmarks/sweep_evonorm_tiles.py changes the module constants
    n, c, h, w = shape
    meta = torch.empty_strided(shape, stride, device="meta")
    flat = _flat_strides(shape, stride)
    copy = flat is None
    if flat is None:
        flat = _flat_strides(shape, torch.empty(shape, device="meta").stride())
        assert flat is not None
    fmt = torch.channels_last if _channels_last(meta) else torch.contiguous_format
    out = _flat_strides(shape, torch.empty(shape, device="meta", memory_format=fmt).stride())
    assert out is not None
    block_c, block_hw = _blocks(c, h * w, flat[1], cuda)
    n_cblocks, n_hwblocks = -(-c // block_c), -(-(h * w) // block_hw)
    batch_n, batch_c = _finalize_blocks(n, c, finalize)
    return _Plan(
        n,
        c,
        h * w,
        copy,
        *flat,
        *out,
        fmt,
        block_c,
        block_hw,
        n_cblocks,
        n_hwblocks,
        (n * n_cblocks,),
        (n * n_cblocks * n_hwblocks,),
        batch_n,
        batch_c,
        (-(-c // batch_c),),
        # explicit, so Triton 3.9 does not warn that its default changes (a warning is an error under pytest)
        {"enable_fp_fusion": True} if cuda else {},
        cuda,
        _stride_align(h * w, flat, out),
    )


def _plan(x: Tensor) -> _Plan:
    cuda = x.is_cuda
    tile = _TILE["cuda" if cuda else "interpret"]
    return _plan_for(x.shape, x.stride(), cuda, tile, _MAX_BLOCK_HW, _MAX_BLOCK_C, _FINALIZE_TILE)


def _strided(t: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """``t`` (a contiguous copy only when its H, W do not flatten) and its strides over (n, c, hw)."""
    flat = _flat_strides(t.shape, t.stride())
    if flat is None:
        t = t.contiguous()
        flat = _flat_strides(t.shape, t.stride())
        assert flat is not None
    return t, flat


class _GroupPlan(NamedTuple):
    """Blocks and grids of S0's finalize kernels for (N, C, G)."""

    block_r: int
    block_k: int
    group_grid: tuple[int]
    n_cprogs: int
    grad_grid: tuple[int]


@functools.lru_cache(maxsize=512)
def _group_plan(n: int, c: int, groups: int, tile: int) -> _GroupPlan:
    per_group = c // groups
    block_k = min(_next_pow2(per_group), 64, tile)
    block_r = min(_next_pow2(n * groups), max(1, tile // block_k))
    row_progs = -(-(n * groups) // block_r)
    _, batch_c = _finalize_blocks(n, c, tile)
    n_cprogs = -(-c // batch_c)
    return _GroupPlan(block_r, block_k, (row_progs,), n_cprogs, (n_cprogs + row_progs,))


class _PersistentPlan(NamedTuple):
    """Whether the persistent kernels run, and their blocks and grid (S0: BLOCK_C is the channels of a group)."""

    use: bool
    block_n: int
    block_c: int
    block_hw: int
    grid: tuple[int]
    options: dict[str, Any]
    wide: bool = False  # B0: 64-bit offsets for the input and output layouts (see _wide_offsets)
    checked: tuple[tuple[int, ...], ...] = ()  # B0: the (n, c, hw) strides `wide` covers


def _prev_pow2(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def _strategy() -> str:
    if STRATEGY not in ("auto", "split", "persistent"):
        raise ValueError(
            f"sciml_norm._kernels.evonorm.STRATEGY must be 'auto', 'split' or 'persistent', got {STRATEGY!r}"
        )
    return STRATEGY


@functools.cache
def _loops_flatten() -> bool:
    """Whether this Triton's ``tl.range`` takes ``flatten`` (3.3 and later), which B0's persistent kernels pass.

    With Triton 3.2 (PyTorch 2.6's) EvoNorm-B0 takes the split passes; S0's persistent kernels need nothing newer.
    The interpreters of Triton 3.2 and 3.3 replace ``tl.range`` by a function taking ``**kwargs`` (and ignoring
    them), which counts as taking ``flatten``.
    """
    import inspect

    import triton.language as tl

    parameters = inspect.signature(tl.range).parameters.values()
    return any(p.name == "flatten" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _use_persistent(strategy: str, numel: int, programs: int) -> bool:
    if strategy != "auto":
        return strategy == "persistent"
    small = numel <= _PERSISTENT_SMALL_NUMEL
    return numel <= _PERSISTENT_MAX_NUMEL and (programs >= _PERSISTENT_MIN_PROGRAMS or small)


@functools.lru_cache(maxsize=512)
def _s0_persistent_plan(
    plan: tuple[int, int, int, int], groups: int, cuda: bool, strategy: str, limits: tuple[int, ...]
) -> _PersistentPlan:
    del limits  # part of the key only (tests and sweeps change the module constants)
    n, c, hw, channel_stride = plan
    per_group = c // groups
    block_k, block_hw = _blocks(per_group, hw, channel_stride, cuda)
    use = _use_persistent(strategy, n * c * hw, n * groups)
    options: dict[str, Any] = {"enable_fp_fusion": True} if cuda else {}
    return _PersistentPlan(use, 1, block_k, block_hw, (n * groups,), options)


@functools.lru_cache(maxsize=512)
def _b0_persistent_plan(plan: tuple[int, ...], cuda: bool, strategy: str, limits: tuple[int, ...]) -> _PersistentPlan:
    del limits
    n, c, hw = plan[:3]
    tile = _PERSISTENT_TILE["cuda" if cuda else "interpret"]
    block_c = min(_next_pow2(c), _prev_pow2(c // _PERSISTENT_PROGRAMS), tile)
    block_hw = min(_next_pow2(hw), max(1, tile // block_c))
    block_n = min(_next_pow2(n), max(1, tile // (block_c * block_hw)))
    programs = -(-c // block_c)
    use = _use_persistent(strategy, n * c * hw, programs)
    if use and cuda and not _loops_flatten():  # (the interpreter runs the loops as Python ranges: any Triton)
        if strategy == "persistent":
            import triton

            raise SciMLError(
                "sciml_norm._kernels.evonorm.STRATEGY = 'persistent' needs Triton 3.3 or later for EvoNorm-B0 (its "
                f"kernels pass tl.range(flatten=...)); this is Triton {triton.__version__}: use 'auto' or 'split'"
            )
        use = False  # "auto": the split passes
    options: dict[str, Any] = {"enable_fp_fusion": True, "num_warps": _PERSISTENT_WARPS} if cuda else {}
    strides = (plan[3:6], plan[6:9])  # x, then y / dx (the layout the kernels write)
    wide = _wide_offsets((n, c, hw), (block_n, block_c, block_hw), _INT32_OFFSETS, *strides)
    return _PersistentPlan(use, block_n, block_c, block_hw, (programs,), options, wide, strides)


@functools.lru_cache(maxsize=512)
def _stride_align(hw: int, *strides: tuple[int, ...]) -> int:
    """The largest power of two, at most 16, dividing ``hw`` and the sample and channel strides given (elements).

    ``strides`` are (n, c, hw) stride triples; zero strides (expanded tensors) do not count.

    Triton's own specialization only tells whether an integer argument is a multiple of 16, so an NCHW input at
    14x14 (channel stride and H*W both 196 = 4 x 49) would be read one element at a time. The kernels take this
    value as ``ALIGN`` (through :func:`_hint`) and round ``HW`` and their row strides down to multiples of it, which
    changes no value. From that, Triton's analysis proves the per-(n, c) row offsets aligned and the masks of a
    row's last lanes whole vectors, so rows are read in vectors of 4 elements (16 bytes in float32, 8 in bfloat16)
    wherever the base address is aligned too (Triton checks that itself). ``tl.multiple_of`` on the offsets, the
    other way to say it, crashes Triton 3.9's coalescing pass when a block dimension is 1. A result of 1 (a unit
    stride, as in channels-last, or an odd one, as at 7x7) adds no hint.

    Example:
        >>> _stride_align(196, (1024 * 196, 196, 1), (0, 0, 0)), _stride_align(784, (512 * 784, 784, 1))
        (4, 16)
        >>> _stride_align(49, (2048 * 49, 49, 1)), _stride_align(196, (98 * 196, 1, 98)), _stride_align(4, (8, 8, 1))
        (1, 1, 4)
    """
    align = math.gcd(16, hw)
    for stride in strides:
        for step in stride[:2]:
            align = math.gcd(align, step)  # gcd(a, 0) = a: a zero stride adds nothing
    return align


def _hint(align: int) -> int:
    """The ``ALIGN`` a launch passes for a :func:`_stride_align` result (1: no hint).

    1 when ``_STRIDE_HINTS`` is off, and when the result is 16, which Triton's own specialization of integer
    arguments already knows (there the hints would only cost registers: 162 instead of 117 in B0's backward at
    28x28).
    """
    return align if _STRIDE_HINTS and align < 16 else 1


def _grad_align(plan: _Plan, strides: tuple[int, int, int]) -> int:
    """The ``ALIGN`` of a backward launch: the plan's, lowered for a cotangent whose strides differ (1: no hints)."""
    return _hint(_stride_align(plan.align, strides))


def _limits() -> tuple[int, ...]:
    return (
        _PERSISTENT_MAX_NUMEL,
        _PERSISTENT_MIN_PROGRAMS,
        _PERSISTENT_SMALL_NUMEL,
        _PERSISTENT_PROGRAMS,
        _PERSISTENT_TILE["cuda"],
        _PERSISTENT_TILE["interpret"],
        _PERSISTENT_WARPS,
        _TILE["cuda"],
        _TILE["interpret"],
        _INT32_OFFSETS,
    )


@functools.lru_cache(maxsize=512)
def _wide_offsets(
    sizes: tuple[int, int, int], blocks: tuple[int, int, int], limit: int, *strides: tuple[int, ...]
) -> bool:
    """Whether a persistent B0 kernel needs 64-bit offsets.

    True when the largest offset it forms reaches ``limit`` (``_INT32_OFFSETS``): over the (n, c, hw) strides of
    each tensor given and over the (N, C) statistics, with the padding lanes of the last blocks included (their
    loads are masked, but their offsets are computed).
    """
    extents = tuple(size + block for size, block in zip(sizes, blocks, strict=True))
    span = max(sum(e * abs(st) for e, st in zip(extents, stride, strict=True)) for stride in strides)
    return max(span, extents[0] * sizes[1] + extents[1]) >= limit


def _grad_needs_wide(plan: _Plan, pp: _PersistentPlan, strides: tuple[int, int, int]) -> bool:
    """:func:`_wide_offsets` for a cotangent whose strides differ from the input's and the output's."""
    return _wide_offsets((plan.n, plan.c, plan.hw), (pp.block_n, pp.block_c, pp.block_hw), _INT32_OFFSETS, strides)


def _s0_persistent(plan: _Plan, groups: int) -> _PersistentPlan:
    return _s0_persistent_plan((plan.n, plan.c, plan.hw, plan.sxc), groups, plan.cuda, _strategy(), _limits())


def _b0_persistent(plan: _Plan) -> _PersistentPlan:
    key = (plan.n, plan.c, plan.hw, plan.sxn, plan.sxc, plan.sxhw, plan.syn, plan.syc, plan.syhw)
    return _b0_persistent_plan(key, plan.cuda, _strategy(), _limits())


def _vec(t: Tensor) -> Tensor:
    return t.contiguous()


def _x_of(x: Tensor, plan: _Plan) -> Tensor:
    return x.contiguous() if plan.copy else x


def _launch_stats(x: Tensor, plan: _Plan, mean: Tensor, m2: Tensor, m2_offset: int) -> None:
    _kernels()["stats"][plan.reduce_grid](
        x,
        mean,
        m2,
        m2_offset,
        plan.c,
        plan.hw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.n_cblocks,
        ALIGN=_hint(plan.align),
        BLOCK_C=plan.block_c,
        BLOCK_HW=plan.block_hw,
        **plan.options,
    )


def channel_stats(x: Tensor, backend: str = "torch") -> tuple[Tensor, Tensor]:
    r"""Per-(sample, channel) mean and sum of squared deviations over :math:`H \times W` (the statistics pass).

    .. math::

        \mu_{nc} = \frac{1}{HW}\sum_{hw} x_{nchw}, \qquad m_{nc} = \sum_{hw} (x_{nchw} - \mu_{nc})^2,

    in float32 (float64 for float64 input). The Triton kernel accumulates shifted sums (shift :math:`x_{nc00}`).

    Args:
        x: (N, C, H, W), any floating dtype and memory format.
        backend: ``"torch"`` or ``"triton"`` (already resolved; no validation here).

    Returns:
        ``(mean, m2)``, each (N, C) in the compute dtype.

    Example:
        >>> x = torch.arange(8.0).view(1, 2, 2, 2)
        >>> channel_stats(x)
        (tensor([[1.5000, 5.5000]]), tensor([[5., 5.]]))
    """
    work = _compute_dtype(x.dtype)
    if backend == "triton":
        plan = _plan(x)
        mean = torch.empty((plan.n, plan.c), dtype=work, device=x.device)
        m2 = torch.empty_like(mean)
        _launch_stats(_x_of(x, plan), plan, mean, m2, 0)
        return mean, m2
    xc = x.to(work)
    mean = xc.mean(dim=(2, 3))
    m2 = (xc - mean[:, :, None, None]).square().sum(dim=(2, 3))
    return mean, m2


def _group_stats(mean: Tensor, m2: Tensor, groups: int, hw: int, eps: float) -> tuple[Tensor, Tensor]:
    """Group mean and inverse std (N, G) from per-channel statistics (Chan's pairwise combination)."""
    n, c = mean.shape
    per_group = mean.view(n, groups, c // groups)
    group_mean = per_group.mean(dim=2)
    group_m2 = m2.view(n, groups, c // groups).sum(dim=2) + hw * (per_group - group_mean[:, :, None]).square().sum(2)
    var = group_m2 / (hw * (c // groups))
    return group_mean, torch.rsqrt(var + eps)


def _batch_stats(mean: Tensor, m2: Tensor, hw: int) -> tuple[Tensor, Tensor]:
    """Batch mean and biased variance (C,) from per-(n, c) statistics."""
    n = mean.shape[0]
    batch_mean = mean.mean(dim=0)
    batch_m2 = m2.sum(dim=0) + hw * (mean - batch_mean).square().sum(dim=0)
    return batch_mean, batch_m2 / (n * hw)


# ----------------------------------------------------------------------------------------------- S0


def s0_forward(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str = "torch"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-S0 forward: :math:`y = x\,\sigma(v x)\, r_{ng}\, w + b`, :math:`r = (s^2_{ng} + \epsilon)^{-1/2}`.

    Per-channel statistics, their combination into group statistics, then the element-wise output: three kernels
    (split strategy) or one program per (n, g) doing all three (persistent; module docstring). No validation
    (:func:`sciml_norm.evonorm_s0` validates).

    Args:
        x: (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) scale :math:`w`.
        bias: (C,) shift :math:`b`.
        v: (C,) slope :math:`v` of the sigmoid gate.
        groups: number of groups :math:`G` (divides C).
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` (the kernels) or ``"torch"`` (the same algorithm in PyTorch operations).

    Returns:
        ``(y, mean, rstd)``: ``y`` like ``x`` (channels-last when ``x`` is), the group means and inverse standard
        deviations, each (N, G) in float32 (float64 for float64 input).

    Example:
        >>> x = torch.tensor([[[[1.0, -1.0]], [[2.0, -2.0]]]])
        >>> ones = torch.ones(2)
        >>> y, mean, rstd = s0_forward(x, ones, torch.zeros(2), ones, groups=1, eps=0.0)
        >>> rstd
        tensor([[0.6325]])
    """
    n, c, h, w = x.shape
    work = _compute_dtype(x.dtype)
    if backend == "triton":
        plan = _plan(x)
        xk = _x_of(x, plan)
        persistent = _s0_persistent(plan, groups)
        if persistent.use:
            y, stats = _s0_forward_persistent_packed(xk, weight, bias, v, groups, eps, plan, persistent)
            mean, rstd = stats.unbind(0)
            return y, mean, rstd
        gplan = _group_plan(n, c, groups, _FINALIZE_TILE)
        kernels = _kernels()
        device = x.device
        stats = torch.empty((2, n, c), dtype=work, device=device)
        mean = torch.empty((n, groups), dtype=work, device=device)
        rstd = torch.empty((n, groups), dtype=work, device=device)
        y = torch.empty(x.shape, dtype=x.dtype, device=device, memory_format=plan.fmt)
        _launch_stats(xk, plan, stats, stats, n * c)
        eps_hi, eps_lo = _split(eps)
        kernels["s0_group"][gplan.group_grid](
            stats,
            mean,
            rstd,
            n * c,
            n * groups,
            c // groups,
            plan.hw,
            eps_hi,
            eps_lo,
            BLOCK_R=gplan.block_r,
            BLOCK_K=gplan.block_k,
            F64=work == torch.float64,
            **plan.options,
        )
        kernels["s0_forward"][plan.tile_grid](
            xk,
            y,
            _vec(weight),
            _vec(bias),
            _vec(v),
            rstd,
            c,
            plan.hw,
            groups,
            c // groups,
            plan.sxn,
            plan.sxc,
            plan.sxhw,
            plan.syn,
            plan.syc,
            plan.syhw,
            plan.n_cblocks,
            plan.n_hwblocks,
            ALIGN=_hint(plan.align),
            BLOCK_C=plan.block_c,
            BLOCK_HW=plan.block_hw,
            **plan.options,
        )
        return y, mean, rstd
    ch_mean, ch_m2 = channel_stats(x)
    mean, rstd = _group_stats(ch_mean, ch_m2, groups, h * w, eps)
    xc = x.to(work)
    scale = (rstd.repeat_interleave(c // groups, dim=1) * weight.to(work))[:, :, None, None]
    y = _empty_output(x)
    y.copy_(xc * torch.sigmoid(v.to(work)[:, None, None] * xc) * scale + bias.to(work)[:, None, None])
    return y, mean, rstd


def _s0_forward_persistent_packed(
    xk: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, plan: _Plan, pp: _PersistentPlan
) -> tuple[Tensor, Tensor]:
    """S0 forward in one launch: a program per (n, g) computes the group's statistics, then its output.

    Returns ``y`` and the statistics as one (2, N, G) buffer: group means, then inverse standard deviations.
    """
    work, device = _compute_dtype(xk.dtype), xk.device
    stats = torch.empty((2, plan.n, groups), dtype=work, device=device)
    y = torch.empty(xk.shape, dtype=xk.dtype, device=device, memory_format=plan.fmt)
    eps_hi, eps_lo = _split(eps)
    _kernels()["s0_persistent_forward"][pp.grid](
        xk,
        y,
        _vec(weight),
        _vec(bias),
        _vec(v),
        stats,
        plan.hw,
        groups,
        plan.c // groups,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        eps_hi,
        eps_lo,
        F64=work == torch.float64,
        ALIGN=_hint(plan.align),
        BLOCK_K=pp.block_c,
        BLOCK_HW=pp.block_hw,
        **pp.options,
    )
    return y, stats


def _s0_backward_persistent(
    gk: Tensor,
    grad_strides: tuple[int, int, int],
    xk: Tensor,
    weight: Tensor,
    v: Tensor,
    mean: Tensor,
    rstd: Tensor,
    groups: int,
    plan: _Plan,
    pp: _PersistentPlan,
    offsets: tuple[int, int] = (0, 0),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """S0 backward in one launch (a program per (n, g)) and one sum over n of the parameter-gradient partials.

    ``mean`` and ``rstd`` are read at ``offsets`` (elements) from their pointers (both the forward's buffer, or
    separate tensors at offset 0).
    """
    n, c = plan.n, plan.c
    partials = torch.empty((3, n, c), dtype=rstd.dtype, device=xk.device)
    dx = torch.empty(xk.shape, dtype=xk.dtype, device=xk.device, memory_format=plan.fmt)
    sgn, sgc, sghw = grad_strides
    _kernels()["s0_persistent_backward"][pp.grid](
        gk,
        xk,
        dx,
        _vec(weight),
        _vec(v),
        mean,
        rstd,
        *offsets,
        partials,
        n * c,
        c,
        plan.hw,
        groups,
        c // groups,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        ALIGN=_grad_align(plan, grad_strides),
        BLOCK_K=pp.block_c,
        BLOCK_HW=pp.block_hw,
        **pp.options,
    )
    grad_weight, grad_bias, grad_v = partials.sum(dim=1).unbind(0)  # a fixed-order sum over n (deterministic)
    return dx, grad_weight, grad_bias, grad_v


def _s0_backward_packed(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, stats: Tensor, groups: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The persistent backward reading the statistics from the persistent forward's (2, N, G) buffer."""
    plan = _plan(x)
    gk, strides = _strided(grad)
    offsets = (0, plan.n * groups)
    persistent = _s0_persistent(plan, groups)
    return _s0_backward_persistent(
        gk, strides, _x_of(x, plan), weight, v, stats, stats, groups, plan, persistent, offsets
    )


def _s0_backward_triton(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, groups: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, c = x.shape[:2]
    plan = _plan(x)
    xk = _x_of(x, plan)
    gk, (sgn, sgc, sghw) = _strided(grad)
    persistent = _s0_persistent(plan, groups)
    if persistent.use:
        return _s0_backward_persistent(gk, (sgn, sgc, sghw), xk, weight, v, mean, rstd, groups, plan, persistent)
    gplan = _group_plan(n, c, groups, _FINALIZE_TILE)
    kernels = _kernels()
    work, device = rstd.dtype, x.device
    per_group = c // groups
    weight, v = _vec(weight), _vec(v)
    # per (n, c): sum g a, sum g, sum g x^2 s (1 - s); then the (N, G) coefficients of (x - mean)
    sums = torch.empty((3 * n * c + n * groups,), dtype=work, device=device)
    grad_weight = torch.empty((c,), dtype=work, device=device)
    grad_bias = torch.empty((c,), dtype=work, device=device)
    grad_v = torch.empty((c,), dtype=work, device=device)
    dx = torch.empty(x.shape, dtype=x.dtype, device=device, memory_format=plan.fmt)
    kernels["s0_reduce"][plan.reduce_grid](
        gk,
        xk,
        v,
        sums,
        n * c,
        c,
        plan.hw,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.n_cblocks,
        ALIGN=_grad_align(plan, (sgn, sgc, sghw)),
        BLOCK_C=plan.block_c,
        BLOCK_HW=plan.block_hw,
        **plan.options,
    )
    kernels["s0_grad"][gplan.grad_grid](
        sums,
        weight,
        rstd,
        grad_weight,
        grad_bias,
        grad_v,
        sums,
        3 * n * c,
        n,
        c,
        n * c,
        groups,
        per_group,
        plan.hw,
        gplan.n_cprogs,
        BLOCK_N=plan.batch_block_n,
        BLOCK_C=plan.batch_block_c,
        BLOCK_R=gplan.block_r,
        BLOCK_K=gplan.block_k,
        **plan.options,
    )
    kernels["s0_dx"][plan.tile_grid](
        gk,
        xk,
        dx,
        weight,
        v,
        rstd,
        mean,
        sums,
        3 * n * c,
        c,
        plan.hw,
        groups,
        per_group,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        plan.n_cblocks,
        plan.n_hwblocks,
        ALIGN=_grad_align(plan, (sgn, sgc, sghw)),
        BLOCK_C=plan.block_c,
        BLOCK_HW=plan.block_hw,
        **plan.options,
    )
    return dx, grad_weight, grad_bias, grad_v


def s0_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    mean: Tensor,
    rstd: Tensor,
    groups: int,
    backend: str = "torch",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-S0 backward from the saved group statistics (formulas in the module docstring).

    Pass 1 reduces, per (n, c), :math:`\sum g a`, :math:`\sum g` and :math:`\sum g x^2 s(1-s)`
    (:math:`s = \sigma(vx)`, :math:`a = x s`); a finalize step turns these :math:`N \times C` numbers into
    :math:`\bar w, \bar b, \bar v` and the per-group coefficient :math:`-r^3 \sum_{c \in g} w_c \sum g a / M`;
    pass 2 writes :math:`\bar x` (the persistent strategy does all of it per (n, g) in one program, then sums the
    parameter partials over :math:`n`). No validation.

    Args:
        grad: (N, C, H, W) cotangent of ``y``, any strides.
        x: (N, C, H, W) the forward input.
        weight: (C,) :math:`w`.
        v: (C,) :math:`v`.
        mean: (N, G) group means from :func:`s0_forward`.
        rstd: (N, G) group inverse standard deviations from :func:`s0_forward`.
        groups: :math:`G`.
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``(grad_x, grad_weight, grad_bias, grad_v)``: ``grad_x`` like ``x`` (channels-last when ``x`` is), the
        others (C,) in the compute dtype (float32, float64 for float64 input).

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> p = torch.ones(4)
        >>> y, mean, rstd = s0_forward(x, p, p, p, groups=2, eps=1e-5)
        >>> gx, gw, gb, gv = s0_backward(torch.ones_like(y), x, p, p, mean, rstd, groups=2)
        >>> gb
        tensor([18., 18., 18., 18.])
    """
    if backend == "triton":
        return _s0_backward_triton(grad, x, weight, v, mean, rstd, groups)
    n, c, h, w = x.shape
    hw = h * w
    work = rstd.dtype
    per_group = c // groups
    xc, gc = x.to(work), grad.to(work)
    vx = v.to(work)[:, None, None] * xc
    s = torch.sigmoid(vx)
    gx = gc * xc
    ga, gsum, gvs = (gx * s).sum(dim=(2, 3)), gc.sum(dim=(2, 3)), (gx * xc * s * (1.0 - s)).sum(dim=(2, 3))
    w_work = weight.to(work)
    rstd_c = rstd.repeat_interleave(per_group, dim=1)  # (N, C)
    grad_weight = (ga * rstd_c).sum(dim=0)
    grad_bias = gsum.sum(dim=0)
    grad_v = w_work * (gvs * rstd_c).sum(dim=0)
    grad_rstd = (ga * w_work).view(n, groups, per_group).sum(dim=2)
    coef = -grad_rstd * rstd.pow(3) / (per_group * hw)  # (N, G): d var / d x = 2 (x - mean) / M
    scale = (rstd_c * w_work)[:, :, None, None]
    coef_c = coef.repeat_interleave(per_group, dim=1)[:, :, None, None]
    mean_c = mean.repeat_interleave(per_group, dim=1)[:, :, None, None]
    dx = _empty_output(x)
    dx.copy_(gc * scale * (s + vx * s * (1.0 - s)) + coef_c * (xc - mean_c))
    return dx, grad_weight, grad_bias, grad_v


# ----------------------------------------------------------------------------------------------- B0


def b0_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str = "torch",
    *,
    momentum: float | None = None,
    correction: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-B0 forward: :math:`y = x / \max(\ell_c, v x + \varsigma_{nc})\, w + b`.

    :math:`\varsigma_{nc} = \sqrt{s^2_{nc} + \varepsilon}` (instance std over H, W) and
    :math:`\ell_c = \sqrt{s^2_c + \varepsilon}` with the batch variance over (N, H, W) in training, the running
    variance in evaluation. Both variances come from one statistics pass (per-(n, c) sums, combined over n by a
    finalize step). The running variance is updated in place only when ``momentum`` is given (in training):
    :math:`r \leftarrow (1 - m) r + m \cdot \text{correction} \cdot s^2_c` (the Triton path does it in the kernel
    that finalizes the batch statistics); the operators leave it alone and the caller updates it from the returned
    batch variance. The persistent strategy does it all in one launch, a program per block of channels.

    Args:
        x: (N, C, H, W), float16/bfloat16/float32/float64, any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        running_var: (C,) used in evaluation, updated in training when ``momentum`` is given.
        training: batch statistics (True) or the running variance (False).
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` or ``"torch"``.
        momentum: :math:`m` of the in-place update, or None for none.
        correction: the factor of the batch variance in the update (:math:`n/(n-1)` for the unbiased estimate).

    Returns:
        ``(y, instance_mean, instance_std, batch_mean, left, batch_var)``: ``y`` like ``x``; (N, C) instance
        mean and std; (C,) batch mean (zeros in evaluation), :math:`\ell_c` and the biased batch variance (the
        running variance in evaluation), all statistics in float32 (float64 for float64 input).

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
        >>> p = torch.ones(1)
        >>> y, imean, istd, bmean, left, bvar = b0_forward(x, p, 0 * p, 0 * p, p, True, 0.0)
        >>> bvar, y.flatten()
        (tensor([5.]), tensor([0.4472, 1.3416, 2.2361, 3.1305]))
    """
    n, c, h, w = x.shape
    hw = h * w
    work = _compute_dtype(x.dtype)
    update = training and momentum is not None
    if backend == "triton":
        plan = _plan(x)
        xk = _x_of(x, plan)
        persistent = _b0_persistent(plan)
        if persistent.use:
            y, stats = _b0_forward_persistent_packed(
                xk, weight, bias, v, running_var, training, eps, momentum, correction, plan, persistent
            )
            return (y, *_b0_stats_views(stats, n, c))
        kernels = _kernels()
        device = x.device
        imean = torch.empty((n, c), dtype=work, device=device)
        istd = torch.empty((n, c), dtype=work, device=device)  # sums of squared deviations, then the std
        bmean = torch.empty((c,), dtype=work, device=device)
        left = torch.empty((c,), dtype=work, device=device)
        bvar = torch.empty((c,), dtype=work, device=device)
        y = torch.empty(x.shape, dtype=x.dtype, device=device, memory_format=plan.fmt)
        _launch_stats(xk, plan, imean, istd, 0)
        eps_hi, eps_lo = _split(eps)
        keep_hi, keep_lo = _split(1.0 - momentum) if momentum is not None else (1.0, 0.0)
        add_hi, add_lo = _split(momentum * correction) if momentum is not None else (0.0, 0.0)
        kernels["b0_batch"][plan.batch_grid](
            imean,
            istd,
            running_var,
            bmean,
            left,
            bvar,
            n,
            c,
            hw,
            eps_hi,
            eps_lo,
            keep_hi,
            keep_lo,
            add_hi,
            add_lo,
            TRAINING=training,
            UPDATE=update,
            UPDATE_F64=work == torch.float64 or running_var.dtype == torch.float64,
            F64=work == torch.float64,
            BLOCK_N=plan.batch_block_n,
            BLOCK_C=plan.batch_block_c,
            **plan.options,
        )
        kernels["b0_forward"][plan.tile_grid](
            xk,
            y,
            _vec(weight),
            _vec(bias),
            _vec(v),
            istd,
            left,
            c,
            hw,
            plan.sxn,
            plan.sxc,
            plan.sxhw,
            plan.syn,
            plan.syc,
            plan.syhw,
            plan.n_cblocks,
            plan.n_hwblocks,
            ALIGN=_hint(plan.align),
            BLOCK_C=plan.block_c,
            BLOCK_HW=plan.block_hw,
            **plan.options,
        )
        return y, imean, istd, bmean, left, bvar
    imean, im2 = channel_stats(x)
    istd = torch.sqrt(im2 / hw + eps)
    if training:
        bmean, bvar = _batch_stats(imean, im2, hw)
        if update:
            assert momentum is not None
            running_var.copy_(running_var * (1.0 - momentum) + bvar * momentum * correction)
    else:
        bmean = torch.zeros(c, dtype=work, device=x.device)
        bvar = running_var.to(work, copy=True)
    left = torch.sqrt(bvar + eps)
    xc = x.to(work)
    d = torch.maximum(left[:, None, None], v.to(work)[:, None, None] * xc + istd[:, :, None, None])
    y = _empty_output(x)
    y.copy_(xc / d * weight.to(work)[:, None, None] + bias.to(work)[:, None, None])
    return y, imean, istd, bmean, left, bvar


def _b0_forward_persistent_packed(
    xk: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    momentum: float | None,
    correction: float,
    plan: _Plan,
    pp: _PersistentPlan,
) -> tuple[Tensor, Tensor]:
    """B0 forward in one launch: a program per block of channels, over the whole batch (statistics, then y).

    Returns ``y`` and one buffer with the instance mean and std (N, C), the batch mean, left and the batch variance
    (C,), in that order (:func:`_b0_stats_views` splits it).
    """
    n, c = plan.n, plan.c
    work, device = _compute_dtype(xk.dtype), xk.device
    stats = torch.empty((2 * n * c + 3 * c,), dtype=work, device=device)
    y = torch.empty(xk.shape, dtype=xk.dtype, device=device, memory_format=plan.fmt)
    eps_hi, eps_lo = _split(eps)
    keep_hi, keep_lo = _split(1.0 - momentum) if momentum is not None else (1.0, 0.0)
    add_hi, add_lo = _split(momentum * correction) if momentum is not None else (0.0, 0.0)
    _kernels()["b0_persistent_forward"][pp.grid](
        xk,
        y,
        _vec(weight),
        _vec(bias),
        _vec(v),
        running_var,
        stats,
        n,
        c,
        plan.hw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        eps_hi,
        eps_lo,
        keep_hi,
        keep_lo,
        add_hi,
        add_lo,
        TRAINING=training,
        UPDATE=training and momentum is not None,
        UPDATE_F64=work == torch.float64 or running_var.dtype == torch.float64,
        F64=work == torch.float64,
        WIDE=pp.wide,
        ALIGN=_hint(plan.align),
        REVERSE=_PERSISTENT_REVERSE,
        STAGES=_PERSISTENT_STAGES,
        BLOCK_N=pp.block_n,
        BLOCK_C=pp.block_c,
        BLOCK_HW=pp.block_hw,
        **pp.options,
    )
    return y, stats


def _b0_stats_views(stats: Tensor, n: int, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(instance mean, instance std, batch mean, left, batch variance) as views of the persistent forward's buffer."""
    imean, istd, bmean, left, bvar = stats.split_with_sizes([n * c, n * c, c, c, c])
    return imean.view(n, c), istd.view(n, c), bmean, left, bvar


def _b0_backward_persistent(
    gk: Tensor,
    grad_strides: tuple[int, int, int],
    xk: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    plan: _Plan,
    pp: _PersistentPlan,
    offsets: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """B0 backward in one launch: a program per block of channels reduces over the batch, then writes dx.

    The four statistics are read at ``offsets`` (elements) from their pointers: zeros for separate tensors, the
    layout of :func:`_b0_forward_persistent_packed` when all four are its one buffer.
    """
    n, c = plan.n, plan.c
    work, device = left.dtype, xk.device
    tg = torch.empty((n, c), dtype=work, device=device)  # per (n, c): sum of t gamma, read back by pass 2
    grads = torch.empty((3, c), dtype=work, device=device)
    dx = torch.empty(xk.shape, dtype=xk.dtype, device=device, memory_format=plan.fmt)
    sgn, sgc, sghw = grad_strides
    _kernels()["b0_persistent_backward"][pp.grid](
        gk,
        xk,
        dx,
        _vec(weight),
        _vec(v),
        instance_mean,
        instance_std,
        batch_mean,
        left,
        *offsets,
        tg,
        grads,
        n,
        c,
        plan.hw,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        TRAINING=training,
        WIDE=pp.wide or (grad_strides not in pp.checked and _grad_needs_wide(plan, pp, grad_strides)),
        ALIGN=_grad_align(plan, grad_strides),
        REVERSE=_PERSISTENT_REVERSE,
        STAGES=_PERSISTENT_STAGES,
        BLOCK_N=pp.block_n,
        BLOCK_C=pp.block_c,
        BLOCK_HW=pp.block_hw,
        **pp.options,
    )
    grad_weight, grad_bias, grad_v = grads.unbind(0)
    return dx, grad_weight, grad_bias, grad_v


def _b0_backward_packed(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, stats: Tensor, training: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The persistent backward reading the statistics straight from the persistent forward's buffer."""
    plan = _plan(x)
    gk, strides = _strided(grad)
    nc, c = plan.n * plan.c, plan.c
    offsets = (0, nc, 2 * nc, 2 * nc + c)
    return _b0_backward_persistent(
        gk,
        strides,
        _x_of(x, plan),
        weight,
        v,
        stats,
        stats,
        stats,
        stats,
        training,
        plan,
        _b0_persistent(plan),
        offsets,
    )


def _b0_backward_triton(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, c = x.shape[:2]
    plan = _plan(x)
    xk = _x_of(x, plan)
    gk, (sgn, sgc, sghw) = _strided(grad)
    persistent = _b0_persistent(plan)
    if persistent.use:
        return _b0_backward_persistent(
            gk,
            (sgn, sgc, sghw),
            xk,
            weight,
            v,
            instance_mean,
            instance_std,
            batch_mean,
            left,
            training,
            plan,
            persistent,
        )
    kernels = _kernels()
    work, device = left.dtype, x.device
    weight, v = _vec(weight), _vec(v)
    # per (n, c): sum g, sum g x/d, sum t gamma x, sum t gamma, sum (1 - t) gamma; then the (C,) batch coefficients
    sums = torch.empty((5 * n * c + c,), dtype=work, device=device)
    grad_weight = torch.empty((c,), dtype=work, device=device)
    grad_bias = torch.empty((c,), dtype=work, device=device)
    grad_v = torch.empty((c,), dtype=work, device=device)
    dx = torch.empty(x.shape, dtype=x.dtype, device=device, memory_format=plan.fmt)
    kernels["b0_reduce"][plan.reduce_grid](
        gk,
        xk,
        weight,
        v,
        instance_std,
        left,
        sums,
        n * c,
        c,
        plan.hw,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.n_cblocks,
        ALIGN=_grad_align(plan, (sgn, sgc, sghw)),
        BLOCK_C=plan.block_c,
        BLOCK_HW=plan.block_hw,
        **plan.options,
    )
    kernels["b0_grad"][plan.batch_grid](
        sums,
        left,
        grad_weight,
        grad_bias,
        grad_v,
        sums,
        5 * n * c,
        n,
        c,
        n * c,
        plan.hw,
        TRAINING=training,
        BLOCK_N=plan.batch_block_n,
        BLOCK_C=plan.batch_block_c,
        **plan.options,
    )
    kernels["b0_dx"][plan.tile_grid](
        gk,
        xk,
        dx,
        weight,
        v,
        instance_std,
        left,
        instance_mean,
        sums,
        3 * n * c,
        batch_mean,
        sums,
        5 * n * c,
        c,
        plan.hw,
        sgn,
        sgc,
        sghw,
        plan.sxn,
        plan.sxc,
        plan.sxhw,
        plan.syn,
        plan.syc,
        plan.syhw,
        plan.n_cblocks,
        plan.n_hwblocks,
        TRAINING=training,
        ALIGN=_grad_align(plan, (sgn, sgc, sghw)),
        BLOCK_C=plan.block_c,
        BLOCK_HW=plan.block_hw,
        **plan.options,
    )
    return dx, grad_weight, grad_bias, grad_v


def _b0_terms(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, istd: Tensor, left: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """PyTorch version of the element-wise backward terms: g, g x/d, g w/d, the branch weight t, and d."""
    work = istd.dtype
    xc, gc = x.to(work), grad.to(work)
    right = v.to(work)[:, None, None] * xc + istd[:, :, None, None]
    left4 = left[:, None, None]
    d = torch.maximum(left4, right)
    t = torch.where(right > left4, 1.0, torch.where(right == left4, 0.5, 0.0)).to(work)
    return xc, gc, gc * weight.to(work)[:, None, None] / d, t, d


def b0_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str = "torch",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Fused EvoNorm-B0 backward through both branches of the max, the instance and (training) batch variance.

    Pass 1 reduces per (n, c) the sums :math:`\sum g`, :math:`\sum g x/d`, :math:`\sum t\gamma x`,
    :math:`\sum t\gamma`, :math:`\sum (1-t)\gamma` (:math:`\gamma = -g w x/d^2`, :math:`t` the weight of the
    instance branch, 1/2 on ties like ``torch.maximum``); a finalize step sums them over :math:`n`; pass 2 writes
    :math:`\bar x` (module docstring).

    Args:
        grad: (N, C, H, W) cotangent of ``y``, any strides.
        x: (N, C, H, W) the forward input.
        weight: (C,) :math:`w`.
        v: (C,) :math:`v`.
        instance_mean: (N, C) from :func:`b0_forward`.
        instance_std: (N, C) from :func:`b0_forward`.
        batch_mean: (C,) from :func:`b0_forward`.
        left: (C,) :math:`\ell_c` from :func:`b0_forward`.
        training: whether :math:`\ell_c` came from the batch (then it depends on ``x``).
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``(grad_x, grad_weight, grad_bias, grad_v)``: ``grad_x`` like ``x``, the others (C,) in the compute dtype.

    Example:
        >>> x = torch.randn(2, 3, 4, 4)
        >>> p = torch.ones(3)
        >>> y, im, istd, bm, left, _ = b0_forward(x, p, p, p, p, True, 1e-3)
        >>> gx, gw, gb, gv = b0_backward(torch.ones_like(y), x, p, p, im, istd, bm, left, True)
        >>> gb
        tensor([32., 32., 32.])
    """
    if backend == "triton":
        return _b0_backward_triton(grad, x, weight, v, instance_mean, instance_std, batch_mean, left, training)
    n, _, h, w = x.shape
    hw = h * w
    xc, gc, gw_d, t, d = _b0_terms(grad, x, weight, v, instance_std, left)
    gamma = -gw_d * xc / d
    dims = (2, 3)
    gsum, gxq, tgx, tg, lg = (
        gc.sum(dims),
        (gc * xc / d).sum(dims),
        (t * gamma * xc).sum(dims),
        (t * gamma).sum(dims),
        ((1.0 - t) * gamma).sum(dims),
    )
    grad_weight = gxq.sum(dim=0)
    grad_bias = gsum.sum(dim=0)
    grad_v = tgx.sum(dim=0)
    icoef = tg / (hw * instance_std)  # d istd = sum t gamma; d ivar = d istd / (2 istd); d ivar/dx = 2 (x - mu)/HW
    result = gw_d - t * gw_d * xc / d * v.to(xc.dtype)[:, None, None]
    result = result + icoef[:, :, None, None] * (xc - instance_mean[:, :, None, None])
    if training:
        bcoef = lg.sum(dim=0) / (n * hw * left)
        result = result + bcoef[:, None, None] * (xc - batch_mean[:, None, None])
    dx = _empty_output(x)
    dx.copy_(result)
    return dx, grad_weight, grad_bias, grad_v


# ----------------------------------------------------------------------------------------------- operators


def _distinct(*tensors: Tensor) -> list[Tensor]:
    """The tensors, each one that shares storage with an earlier one replaced by a copy.

    An operator's outputs may not alias each other; the persistent kernels return statistics and parameter
    gradients as views of one buffer (inside an operator's implementation views carry no ``_base``, hence the
    storage test). The eager path keeps the views.
    """
    seen: set[int] = set()
    out = []
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        out.append(t.clone() if key in seen else t)
        seen.add(key)
    return out


@torch.library.custom_op("sciml_norm::evonorm_s0_fwd", mutates_args=())
def evonorm_s0_fwd_op(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The S0 forward operator: :func:`s0_forward` (``backend`` resolved; aliases copied, :func:`_distinct`)."""
    y, mean, rstd = _distinct(*s0_forward(x, weight, bias, v, groups, eps, backend))
    return y, mean, rstd


@evonorm_s0_fwd_op.register_fake
def _(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    work = _compute_dtype(x.dtype)
    stats = x.new_empty((x.shape[0], groups), dtype=work)
    return _empty_output(x), stats, torch.empty_like(stats)


@torch.library.custom_op("sciml_norm::evonorm_s0_bwd", mutates_args=())
def evonorm_s0_bwd_op(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, groups: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The S0 backward operator: :func:`s0_backward` (outputs that share storage are copied, :func:`_distinct`)."""
    dx, grad_weight, grad_bias, grad_v = _distinct(*s0_backward(grad, x, weight, v, mean, rstd, groups, backend))
    return dx, grad_weight, grad_bias, grad_v


@evonorm_s0_bwd_op.register_fake
def _(
    grad: Tensor, x: Tensor, weight: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, groups: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    channel = x.new_empty((x.shape[1],), dtype=rstd.dtype)
    return _empty_output(x), channel, torch.empty_like(channel), torch.empty_like(channel)


@torch.library.custom_op("sciml_norm::evonorm_b0_fwd", mutates_args=())
def evonorm_b0_fwd_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The B0 forward operator: :func:`b0_forward` (running variance read, never written; aliases copied).

    Outputs that share storage are copied (:func:`_distinct`).
    """
    y, imean, istd, bmean, left, bvar = _distinct(*b0_forward(x, weight, bias, v, running_var, training, eps, backend))
    return y, imean, istd, bmean, left, bvar


@evonorm_b0_fwd_op.register_fake
def _(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    work = _compute_dtype(x.dtype)
    n, c = x.shape[:2]
    per_sample = x.new_empty((n, c), dtype=work)
    per_channel = x.new_empty((c,), dtype=work)
    return (
        _empty_output(x),
        per_sample,
        torch.empty_like(per_sample),
        per_channel,
        torch.empty_like(per_channel),
        torch.empty_like(per_channel),
    )


@torch.library.custom_op("sciml_norm::evonorm_b0_bwd", mutates_args=())
def evonorm_b0_bwd_op(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The B0 backward operator: :func:`b0_backward` (outputs that share storage are copied, :func:`_distinct`)."""
    outputs = b0_backward(grad, x, weight, v, instance_mean, instance_std, batch_mean, left, training, backend)
    dx, grad_weight, grad_bias, grad_v = _distinct(*outputs)
    return dx, grad_weight, grad_bias, grad_v


@evonorm_b0_bwd_op.register_fake
def _(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    instance_mean: Tensor,
    instance_std: Tensor,
    batch_mean: Tensor,
    left: Tensor,
    training: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    channel = x.new_empty((x.shape[1],), dtype=left.dtype)
    return _empty_output(x), channel, torch.empty_like(channel), torch.empty_like(channel)


def _s0_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, weight, bias, v, groups, _eps, backend = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, v, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)
    ctx.groups, ctx.backend, ctx.dtypes = groups, backend, (weight.dtype, bias.dtype, v.dtype)


def _s0_grads(ctx: Any, grads: tuple[Tensor, ...], use_op: bool) -> tuple[Tensor | None, ...]:
    x, weight, v, mean, rstd = ctx.saved_tensors
    backward = evonorm_s0_bwd_op if use_op else s0_backward
    dx, dw, db, dv = backward(grads[0], x, weight, v, mean, rstd, ctx.groups, ctx.backend)
    return (*_grads_out(ctx, dx, dw, db, dv), None, None, None)


def _b0_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, weight, bias, v, _running_var, training, _eps, backend = inputs
    _, imean, istd, bmean, left, bvar = output
    ctx.save_for_backward(x, weight, v, imean, istd, bmean, left)
    ctx.mark_non_differentiable(imean, istd, bmean, left, bvar)
    ctx.training, ctx.backend, ctx.dtypes = training, backend, (weight.dtype, bias.dtype, v.dtype)


def _b0_grads(ctx: Any, grads: tuple[Tensor, ...], use_op: bool) -> tuple[Tensor | None, ...]:
    x, weight, v, imean, istd, bmean, left = ctx.saved_tensors
    backward = evonorm_b0_bwd_op if use_op else b0_backward
    dx, dw, db, dv = backward(grads[0], x, weight, v, imean, istd, bmean, left, ctx.training, ctx.backend)
    return (*_grads_out(ctx, dx, dw, db, dv), None, None, None, None)


def _grads_out(ctx: Any, dx: Tensor, dw: Tensor, db: Tensor, dv: Tensor) -> tuple[Tensor | None, ...]:
    """The input and parameter gradients that are needed, the latter in the parameters' dtypes."""
    need = ctx.needs_input_grad
    dw_dtype, db_dtype, dv_dtype = ctx.dtypes
    return (
        dx if need[0] else None,
        (dw if dw.dtype == dw_dtype else dw.to(dw_dtype)) if need[1] else None,  # (a no-op .to still costs ~1 us)
        (db if db.dtype == db_dtype else db.to(db_dtype)) if need[2] else None,
        (dv if dv.dtype == dv_dtype else dv.to(dv_dtype)) if need[3] else None,
    )


evonorm_s0_fwd_op.register_autograd(lambda ctx, *grads: _s0_grads(ctx, grads, True), setup_context=_s0_setup)
evonorm_b0_fwd_op.register_autograd(lambda ctx, *grads: _b0_grads(ctx, grads, True), setup_context=_b0_setup)


class _S0Eager(torch.autograd.Function):
    """The S0 operator's forward and backward without the dispatcher, for eager calls.

    torch wraps every ``custom_op`` kernel so that its first call imports ``torch._dynamo`` (seconds, and it turns
    off argument validation of ``torch.distributions`` process-wide); eager calls take this Function, code being
    compiled takes the registered operator. The old-style ``forward(ctx, ...)`` (no ``setup_context``) spares
    ``Function.apply`` its per-call ``inspect.signature`` binding, and the statistics are saved without being
    outputs (no zero cotangents are materialized for them).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str
    ) -> Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx.groups, ctx.backend, ctx.dtypes = groups, backend, (weight.dtype, bias.dtype, v.dtype)
        if backend == "triton":
            plan = _plan(x)
            persistent = _s0_persistent(plan, groups)
            if persistent.use:  # save the one statistics buffer (host time of small layers)
                y, stats = _s0_forward_persistent_packed(_x_of(x, plan), weight, bias, v, groups, eps, plan, persistent)
                ctx.save_for_backward(x, weight, v, stats)
                ctx.packed = True
                return y
        y, mean, rstd = s0_forward(x, weight, bias, v, groups, eps, backend)
        ctx.save_for_backward(x, weight, v, mean, rstd)
        ctx.packed = False
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        if not ctx.packed:
            return _s0_grads(ctx, (grad,), False)
        x, weight, v, stats = ctx.saved_tensors
        dx, dw, db, dv = _s0_backward_packed(grad, x, weight, v, stats, ctx.groups)
        return (*_grads_out(ctx, dx, dw, db, dv), None, None, None)


class _B0Eager(torch.autograd.Function):
    """The B0 operator's forward and backward without the dispatcher, for eager calls (see :class:`_S0Eager`).

    In training it also updates ``running_var`` in place (inside the statistics' finalize kernel on the Triton
    path); ``running_var`` is a buffer that never requires grad and is not saved for backward.
    """

    @staticmethod
    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        v: Tensor,
        running_var: Tensor,
        training: bool,
        eps: float,
        backend: str,
        momentum: float,
        correction: float,
    ) -> Tensor:
        ctx.training, ctx.backend, ctx.dtypes = training, backend, (weight.dtype, bias.dtype, v.dtype)
        if backend == "triton":
            plan = _plan(x)
            persistent = _b0_persistent(plan)
            if persistent.use:  # save the one statistics buffer, not five views of it (host time of small layers)
                y, stats = _b0_forward_persistent_packed(
                    _x_of(x, plan), weight, bias, v, running_var, training, eps, momentum, correction, plan, persistent
                )
                ctx.save_for_backward(x, weight, v, stats)
                ctx.packed = True
                return y
        y, imean, istd, bmean, left, _ = b0_forward(
            x, weight, bias, v, running_var, training, eps, backend, momentum=momentum, correction=correction
        )
        ctx.save_for_backward(x, weight, v, imean, istd, bmean, left)
        ctx.packed = False
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        if not ctx.packed:
            return (*_b0_grads(ctx, (grad,), False), None, None)
        x, weight, v, stats = ctx.saved_tensors
        dx, dw, db, dv = _b0_backward_packed(grad, x, weight, v, stats, ctx.training)
        return (*_grads_out(ctx, dx, dw, db, dv), None, None, None, None, None, None)


# ----------------------------------------------------------------------------------------------- entry points


def evonorm_s0_fused(
    x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float, backend: str = "triton"
) -> Tensor:
    r"""Differentiable fused EvoNorm-S0, :math:`y = x\,\sigma(v x) (s^2_g(x) + \varepsilon)^{-1/2} w + b`.

    Under ``torch.compile`` this calls the ``sciml_norm::evonorm_s0_fwd`` operator (opaque to the compiler,
    backward ``sciml_norm::evonorm_s0_bwd``), otherwise the same functions through an autograd Function. No
    validation: :func:`sciml_norm.evonorm_s0` validates and resolves ``backend``.

    Args:
        x: (N, C, H, W), any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        groups: :math:`G`, divides C.
        eps: :math:`\varepsilon`.
        backend: ``"triton"`` (kernels) or ``"torch"`` (the same two-pass algorithm in PyTorch).

    Returns:
        ``y``, like ``x``.

    Example:
        >>> x = torch.tensor([[[[1.0, -1.0]]]])
        >>> p = torch.ones(1)
        >>> evonorm_s0_fused(x, p, 0 * p, p, groups=1, eps=0.0, backend="torch")
        tensor([[[[ 0.7311, -0.2689]]]])
    """
    if torch.compiler.is_compiling():
        y, _, _ = evonorm_s0_fwd_op(x, weight, bias, v, groups, eps, backend)
        return y
    return cast(Tensor, _S0Eager.apply(x, weight, bias, v, groups, eps, backend))


def evonorm_b0_fused(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    v: Tensor,
    running_var: Tensor,
    training: bool,
    momentum: float,
    eps: float,
    bessel: bool = True,
    backend: str = "triton",
) -> Tensor:
    r"""Differentiable fused EvoNorm-B0, :math:`y = x / \max(\ell_c, v x + \varsigma_{nc})\, w + b`.

    In training :math:`\ell_c = \sqrt{s^2_c(x) + \varepsilon}` from the batch and ``running_var`` is updated in place,
    :math:`r \leftarrow (1 - m) r + m\, s^2_c \cdot n/(n-1)` with :math:`n = NHW` (the factor only with ``bessel``);
    in evaluation :math:`\ell_c = \sqrt{r_c + \varepsilon}`. Dispatch as in :func:`evonorm_s0_fused`; no validation.

    Args:
        x: (N, C, H, W), any memory format.
        weight: (C,) :math:`w`.
        bias: (C,) :math:`b`.
        v: (C,) :math:`v`.
        running_var: (C,) running variance :math:`r` (updated in place in training).
        training: batch statistics or the running variance.
        momentum: :math:`m`.
        eps: :math:`\varepsilon`.
        bessel: unbiased (timm) or biased (TensorFlow reference) batch variance in the running average.
        backend: ``"triton"`` or ``"torch"``.

    Returns:
        ``y``, like ``x``.

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
        >>> p, rv = torch.ones(1), torch.ones(1)
        >>> y = evonorm_b0_fused(x, p, 0 * p, 0 * p, rv, True, 0.1, 0.0, backend="torch")
        >>> rv  # 0.9 * 1 + 0.1 * 5 * 4 / 3
        tensor([1.5667])
    """
    count = x.numel() // x.shape[1]
    correction = count / (count - 1) if bessel and training else 1.0
    if not torch.compiler.is_compiling():
        return cast(
            Tensor,
            _B0Eager.apply(x, weight, bias, v, running_var, training, eps, backend, momentum, correction),
        )
    outputs = evonorm_b0_fwd_op(x, weight, bias, v, running_var, training, eps, backend)
    if training:
        with torch.no_grad():
            running_var.copy_(running_var * (1.0 - momentum) + outputs[5] * momentum * correction)
    return outputs[0]
