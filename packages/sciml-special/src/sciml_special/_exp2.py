r"""``exp2`` in float32 from programs discovered by evolution (AutoNumerics-Zero), on CPU and GPU.

Range reduction. With :math:`n = \lfloor x \rfloor` and :math:`f = x - n \in [0, 1)`,

.. math:: 2^x = 2^n \, 2^f \approx 2^n \, p(f),

where :math:`p` is the evolved straight-line program :data:`EXP2_PROGRAM` (fitted on :math:`[0, 1]`). Details that
keep the error below one float32 ULP over the whole float32 range:

* :math:`f = x - n` is exact for every float32 :math:`x` except those in :math:`(-1/2, 0)`: there :math:`f = 1 + x`
  needs more bits than float32 has, and the rounding of :math:`f` alone costs up to 0.35 ULP, which on top of the
  error of :math:`p` near :math:`f = 1` would break the one-ULP bound (a first-order correction
  :math:`\operatorname{fma}(p, \delta \ln 2, p)` costs a rounding of its own, 0.5 ULP, and does no better). So
  for :math:`x \in (-1/2, 0)` the reduction is :math:`n = 0, f = x` and a second evolved program
  :data:`EXP2_NEGATIVE_PROGRAM`, :math:`q(x) \approx 2^x` on :math:`[-1/2, 0]`, is used instead (the GPU kernel
  evaluates both programs and selects, branch-free).
* :math:`2^n` is applied as two exact powers of two, :math:`2^{\lfloor n/2 \rfloor}` then
  :math:`2^{n - \lfloor n/2 \rfloor}`, built from their exponent bits: the first product is exact and the second
  rounds once, so subnormal results (:math:`-150 < x < -126`) are correctly scaled, with an error of at most
  :math:`1/2 + e_p/2` ULP.
* :math:`x \ge 128` gives ``inf`` (:math:`2^{128}` overflows float32), :math:`x < -150` gives 0 (below half the
  smallest subnormal), ``-inf`` gives 0, ``inf`` gives ``inf`` and NaN propagates.

The programs have the structure and constants the search found (see the provenance notes below): Horner's rule
with 6 FMAs for :math:`p` and 5 for :math:`q`, rediscovered from random one-operation programs.

Accuracy, from ``benchmarks/exhaustive_exp2.py`` against a float64 oracle (worst points re-checked with mpmath):

* every float32 in :math:`[0, 1)` (the reduced domain, 1,065,353,216 values): max 0.885 ULP, at
  :math:`x = 0.96649569`;
* every float32 in :math:`[-1, 0)` (both programs, 1,065,353,216 values): max 0.783 ULP, at :math:`x = -0.48317438`;
* every 61st bit pattern of all :math:`2^{32}` (70,409,300 values, NaNs and infinities included): max 0.877 ULP;
* every float32 in :math:`[-151, -125]` and :math:`[127, 128.5]` (subnormal results and the overflow edge):
  max 0.921 ULP, at :math:`x = -126.02605` (a subnormal result).

About 0.24% of the values are not correctly rounded (error above 0.5 ULP); none is off by a full ULP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sciml_protocols import SciMLInputError, check_tensor, measure_time, resolve_backend

from ._evolve._float32 import ulp_error
from ._evolve._program import Program

__all__ = ["EXP2_NEGATIVE_PROGRAM", "EXP2_PROGRAM", "benchmark_exp2_evolved", "exp2_evolved", "exp2_evolved_numpy"]

# Provenance. Both programs come out of benchmarks/evolve_exp2.py (seed 0, the configurations recorded there), run
# from random one-operation programs: the search rediscovered Horner's rule on its own. Then the constants of the
# chosen front member were polished by fit_constants on 2^15 stratified points plus the 2^15 float32 values nearest
# each end of the domain.
#   --part positive: population 48, 250 generations, <= 10 ops, 2048 training points; 12,048 programs fitted in
#     5,408 s on 2 shared CPU cores. Front (ops: train / validation max ULP): 4: 32.7 / 33.0, 5: 1.50 / 1.88,
#     6: 0.712 / 0.798. Chosen: 6 FMAs, 0.877 ULP on 4.3e6 check points after polishing.
#   --part negative: population 24, 100 generations, <= 8 ops; 2,424 programs fitted in 442 s. Front: 4: 2.13 / 2.14,
#     5: 0.693 / 0.747. Chosen: 5 FMAs, 0.781 ULP on 4.3e6 check points.
_EXP2_SPEC = (
    ("fma", 0.00021870933414902538, 0, 0.0012390364427119493),
    ("fma", 1, 0, 0.00968419760465622),
    ("fma", 2, 0, 0.0554807148873806),
    ("fma", 3, 0, 0.24023039638996124),
    ("fma", 0, 4, 0.6931469440460205),
    ("fma", 0, 5, 1.0),
)

_EXP2_NEGATIVE_SPEC = (
    ("fma", 0, 0.0011224054032936692, 0.009503216482698917),
    ("fma", 0, 1, 0.05547493323683739),
    ("fma", 2, 0, 0.2402232140302658),
    ("fma", 0, 3, 0.6931470632553101),
    ("fma", 0, 4, 1.0),
)

EXP2_PROGRAM: Program = Program.from_spec(_EXP2_SPEC)
"""The evolved program :math:`p(f) \\approx 2^f` on :math:`[0, 1]`: the main part of :func:`exp2_evolved`."""

EXP2_NEGATIVE_PROGRAM: Program = Program.from_spec(_EXP2_NEGATIVE_SPEC)
"""The evolved program :math:`q(x) \\approx 2^x` on :math:`[-1/2, 0]`, used where :math:`x - \\lfloor x \\rfloor` is
inexact."""

_LN2 = float(np.float32(math.log(2.0)))
# Inputs are clamped to [-151, 128 - 2^-17] before the reduction (the largest float32 below 128), so that no
# intermediate overflows (and no NaN reaches the integer conversion); the final selects restore inf, 0 and NaN.
_BELOW_128 = 128.0 - 2.0**-17
_CORE = EXP2_PROGRAM.to_torch()
_CORE_NEGATIVE = EXP2_NEGATIVE_PROGRAM.to_torch()
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)


def exp2_evolved_numpy(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Numpy emulation of :func:`exp2_evolved`, bit for bit (float32 in, float32 out).

    This is what ``benchmarks/exhaustive_exp2.py`` runs over every float32 of the reduced domain; the torch path is
    tested to agree with it bit for bit.

    Example:
        >>> exp2_evolved_numpy([0.0, 1.0, -1.0, 10.0, 128.0, -150.0, np.nan]).tolist()
        [1.0, 2.0, 0.5, 1024.0, inf, 0.0, nan]
    """
    values = np.asarray(x, dtype=np.float32)
    with np.errstate(all="ignore"):
        clamped = np.clip(values, np.float32(-151.0), np.float32(_BELOW_128))
        small_negative = (values > -0.5) & (values < 0)
        n = np.where(small_negative, np.float32(0.0), np.floor(clamped))
        f = clamped - n
        p = np.empty_like(f)
        p[small_negative] = EXP2_NEGATIVE_PROGRAM.evaluate(f[small_negative])
        p[~small_negative] = EXP2_PROGRAM.evaluate(f[~small_negative])
        whole = np.nan_to_num(n).astype(np.int32)
        half = whole >> 1
        scale_1 = ((half + 127) << 23).view(np.float32)
        scale_2 = ((whole - half + 127) << 23).view(np.float32)
        y = (p * scale_1) * scale_2
        y = np.where(values >= 128, np.float32(np.inf), y)
        y = np.where(values < -150, np.float32(0.0), y)
        y = np.where(np.isnan(values), values, y)
    return np.asarray(y, dtype=np.float32)


_CPU_CHUNK = 1 << 17  # elements per block on CPU: the float64 temporaries of a block stay in cache


def _exp2_reference(x: torch.Tensor) -> torch.Tensor:
    """The PyTorch reference of :func:`exp2_evolved` for a float32 tensor (any device)."""
    if x.device.type == "cpu" and x.numel() > _CPU_CHUNK:
        flat = x.reshape(-1)
        return torch.cat([_exp2_block(block) for block in flat.split(_CPU_CHUNK)]).reshape(x.shape)
    return _exp2_block(x)


def _exp2_block(x: torch.Tensor) -> torch.Tensor:
    clamped = x.clamp(-151.0, _BELOW_128)
    small_negative = (x > -0.5) & (x < 0)
    n = torch.where(small_negative, 0.0, torch.floor(clamped))
    f = clamped - n
    p = _CORE(f)
    where = small_negative.reshape(-1).nonzero().squeeze(1)
    if where.numel() > 0:  # the second program only where it is used (the GPU kernel selects branch-free)
        shape = p.shape
        p = p.reshape(-1).index_copy(0, where, _CORE_NEGATIVE(f.reshape(-1).index_select(0, where))).reshape(shape)
    whole = n.nan_to_num().to(torch.int32)
    half = torch.div(whole, 2, rounding_mode="floor")
    scale_1 = ((half + 127) << 23).view(torch.float32)
    scale_2 = ((whole - half + 127) << 23).view(torch.float32)
    y = (p * scale_1) * scale_2
    y = torch.where(x >= 128, math.inf, y)
    y = torch.where(x < -150, 0.0, y)
    return torch.where(torch.isnan(x), x, y)


def _exp2_forward(x: torch.Tensor, use_triton: bool) -> torch.Tensor:
    if use_triton:
        from ._kernels.exp2 import exp2_evolved_triton  # lazy: importing sciml_special never imports triton

        return exp2_evolved_triton(x)
    return _exp2_reference(x)


@torch.library.custom_op("sciml_special::exp2_evolved", mutates_args=())
def _exp2_op(x: torch.Tensor, use_triton: bool) -> torch.Tensor:
    return _exp2_forward(x, use_triton)


@_exp2_op.register_fake
def _exp2_fake(x: torch.Tensor, use_triton: bool) -> torch.Tensor:
    return torch.empty_like(x)


def _exp2_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(output)


def _exp2_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    (output,) = ctx.saved_tensors
    return grad * output * _LN2, None


_exp2_op.register_autograd(_exp2_backward, setup_context=_exp2_setup_context)


def exp2_evolved(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    r"""Base-2 exponential :math:`2^x` in float32 with less than one ULP of error, from an evolved program.

    .. math:: 2^x = 2^{\lfloor x \rfloor} \, p(x - \lfloor x \rfloor),

    with :math:`p` the straight-line program of FMAs found by :func:`~sciml_special.evolve` (AutoNumerics-Zero) and
    exact, subnormal-safe scaling by :math:`2^{\lfloor x \rfloor}`; inputs in :math:`(-1/2, 0)` use a second
    evolved program directly, because :math:`x - \lfloor x \rfloor` is inexact there (see the module notes). The
    maximum error over every float32 of the reduced domain :math:`[0, 1)` (and of :math:`[-1, 0)`) is below one
    float32 ULP against a float64 oracle (checked exhaustively by ``benchmarks/exhaustive_exp2.py``). Special
    values: ``exp2(0) = 1``, ``x >= 128 -> inf``, ``x < -150 -> 0`` (subnormal results in between), ``-inf -> 0``,
    ``inf -> inf``, NaN propagates.

    Differentiable: :math:`\frac{d}{dx} 2^x = 2^x \ln 2` (registered as a ``torch.library`` custom op, so it
    also works under ``torch.compile``).

    Args:
        x: tensor of any shape, float32 (float16 and bfloat16 are computed in float32 and rounded back). float64 is
            refused: this is a float32 approximation, use :func:`torch.exp2` for float64.
        backend: ``"auto"`` (Triton for CUDA tensors when available, else PyTorch), ``"torch"`` or ``"triton"``
            (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``); see
            :func:`sciml_protocols.resolve_backend`.

    Returns:
        :math:`2^x`, same shape, dtype and device as ``x``.

    Raises:
        SciMLInputError: for a non-tensor, a float64 / integer / complex tensor or a bad backend.

    Example:
        >>> exp2_evolved(torch.tensor([0.0, 0.5, 10.0, -149.0, 128.0, float("nan")]))
        tensor([1.0000e+00, 1.4142e+00, 1.0240e+03, 1.4013e-45,        inf,        nan])

    References:
        E. Real et al., "AutoNumerics-Zero: Automated Discovery of State-of-the-Art Mathematical Functions",
        arXiv:2312.08472 (2023).
    """
    check_tensor("x", x)
    if x.dtype == torch.float64:
        raise SciMLInputError(
            "x",
            "is float64, but exp2_evolved is a float32 approximation (< 1 float32 ULP); use torch.exp2 for float64, "
            "or pass x.float() to get float32 results",
        )
    if x.dtype not in _SUPPORTED:
        raise SciMLInputError("x", f"must be float32, float16 or bfloat16, got {x.dtype}")
    chosen = resolve_backend(backend, x)
    single = x if x.dtype == torch.float32 else x.to(torch.float32)
    if single.requires_grad or torch.compiler.is_compiling():
        y = _exp2_op(single, chosen == "triton")
    else:
        # Same kernels without the operator's dispatch: its first call loads torch's tracing machinery (seconds).
        y = _exp2_forward(single, chosen == "triton")
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def benchmark_exp2_evolved(
    *,
    device: str | torch.device = "cpu",
    sizes: tuple[int, ...] = (1 << 16, 1 << 20, 1 << 24),
    min_run_time: float = 0.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time :func:`exp2_evolved` against :func:`torch.exp2` (same float32 inputs, same process) and compare accuracy.

    On CUDA both backends of ``exp2_evolved`` run (the Triton kernel when triton imports, and the PyTorch
    reference); on CPU the PyTorch reference. Inputs are uniform in ``[-100, 100]``; the accuracy of both functions
    is measured in float32 ULPs against ``torch.exp2`` in float64. Times come from
    :func:`sciml_protocols.measure_time` (CUDA events on GPU).

    Args:
        device: where to run.
        sizes: numbers of elements.
        min_run_time: seconds spent timing each case.
        seed: seed of the inputs.

    Returns:
        One record per (size, implementation): ``n``, ``implementation`` (``"torch.exp2"``,
        ``"exp2_evolved[torch]"``, ``"exp2_evolved[triton]"``), ``seconds`` (median), ``elements_per_second``,
        ``speedup_vs_torch_exp2`` and ``max_ulp``.

    Example:
        >>> rows = benchmark_exp2_evolved(sizes=(1000,), min_run_time=0.01)
        >>> [r["implementation"] for r in rows], all(r["max_ulp"] < 1 for r in rows)
        (['torch.exp2', 'exp2_evolved[torch]'], True)
    """
    dev = torch.device(device)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise SciMLInputError("sizes", f"must be positive ints, got {sizes!r}")
    generator = torch.Generator().manual_seed(seed)
    implementations: list[tuple[str, Any]] = [("torch.exp2", torch.exp2)]
    implementations.append(("exp2_evolved[torch]", lambda t: exp2_evolved(t, backend="torch")))
    if dev.type == "cuda" and resolve_backend("auto", torch.empty(0, device=dev)) == "triton":
        implementations.append(("exp2_evolved[triton]", lambda t: exp2_evolved(t, backend="triton")))
    rows: list[dict[str, Any]] = []
    for n in sizes:
        x = (torch.rand(n, generator=generator, dtype=torch.float32) * 200 - 100).to(dev)
        exact = torch.exp2(x.double()).cpu().numpy()
        baseline = None
        for name, function in implementations:
            seconds = measure_time(lambda f=function, x=x: f(x), device=dev, min_run_time=min_run_time)
            baseline = seconds if baseline is None else baseline
            error = ulp_error(function(x).cpu().numpy(), exact)
            rows.append(
                {
                    "n": n,
                    "implementation": name,
                    "device": str(dev),
                    "seconds": seconds,
                    "elements_per_second": n / seconds,
                    "speedup_vs_torch_exp2": baseline / seconds,
                    "max_ulp": float(error.max()),
                }
            )
    return rows
