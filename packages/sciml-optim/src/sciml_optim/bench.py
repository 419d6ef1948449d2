"""``sciml bench sciml-optim``: optimizer step time against torch.optim, lion-pytorch, the ``adamp`` package and timm.

Every case builds the same parameters and gradients for both sides in one process, times ``optimizer.step()``
with :func:`sciml_protocols.measure_time` and reports the median time of one step and the achieved memory
bandwidth (bytes an ideal implementation must move per step, over the step time: Lion reads p, g, m and writes
p, m, 20 bytes per fp32 parameter; AdamW and AdamP read p, g, m, v and write p, m, v, 28 bytes). On CPU ours runs
its ``foreach`` path; on CUDA its fused Triton step, against ``torch.optim.AdamW(fused=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from sciml_protocols import BenchContext, BenchMeasurement, BenchResult, measure_time

__all__ = ["AdamPStepBenchmark", "LionStepBenchmark", "cases"]

_BYTES_PER_PARAM = {"lion": 20, "adamw": 28, "adamp": 28}


def _parameters(total: int, device: torch.device, seed: int, *, conv: bool) -> list[torch.Tensor]:
    """About ``total`` fp32 parameters with gradients, shaped like a network's (a few big tensors, some small)."""
    generator = torch.Generator().manual_seed(seed)
    shapes: list[tuple[int, ...]] = []
    remaining = total
    channels = 64
    while remaining > 0:
        if conv:
            shape: tuple[int, ...] = (channels, channels, 3, 3)
            channels = min(channels * 2, 1024)
        else:
            side = min(4096, max(1, int(remaining**0.5)))
            shape = (side, max(1, min(remaining // side, 4096)))
        shapes.append(shape)
        shapes.append((shape[0],))  # a bias / norm scale next to each weight
        remaining -= int(torch.Size(shape).numel()) + shape[0]
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=generator).to(device).requires_grad_()
        p.grad = torch.randn(shape, generator=generator).to(device) * 1e-2
        params.append(p)
    return params


def _clone(params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def _step_time(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], params: list[torch.Tensor], ctx: Any
) -> float:
    optimizer = make(params)
    optimizer.step()  # state allocation and first-call work are not part of a step
    return measure_time(optimizer.step, device=ctx.device, min_run_time=ctx.min_run_time)


def _measure(label: str, seconds: float, numel: int, kind: str) -> BenchMeasurement:
    bandwidth = _BYTES_PER_PARAM[kind] * numel / seconds / 1e9
    return BenchMeasurement(label, seconds, {"GB/s (ideal traffic)": bandwidth, "params/s": numel / seconds})


def _size(ctx: BenchContext) -> int:
    if ctx.device.type == "cuda":
        return 50_000_000 if ctx.quick else 1_000_000_000
    return 1_000_000 if ctx.quick else 10_000_000


@dataclasses.dataclass(frozen=True)
class LionStepBenchmark:
    """One Lion step: ours against lion-pytorch (same hyperparameters), with ``torch.optim.AdamW`` alongside.

    On CUDA, ours is the fused multi-tensor Triton step and the reference point is ``AdamW(fused=True)``.
    """

    name: str = "lion-step"
    peer: str = "lion_pytorch.Lion"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time one step of each optimizer on identical parameters and gradients."""
        from ._lion import Lion

        total = _size(ctx)
        params = _parameters(total, ctx.device, ctx.seed, conv=False)
        numel = sum(p.numel() for p in params)
        cuda = ctx.device.type == "cuda"
        kwargs: dict[str, Any] = {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.1}
        ours_options: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
        path = "fused Triton" if cuda else "foreach"
        ours = _measure(
            f"sciml_optim.Lion ({path})",
            _step_time(lambda ps: Lion(ps, **kwargs, **ours_options), params, ctx),
            numel,
            "lion",
        )
        del params
        adamw_options: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
        adamw_params = _parameters(total, ctx.device, ctx.seed, conv=False)
        adamw_time = _step_time(
            lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, **adamw_options), adamw_params, ctx
        )
        del adamw_params
        metrics = dict(ours.metrics)
        metrics["torch.optim.AdamW step s"] = adamw_time
        metrics["speedup vs AdamW"] = adamw_time / ours.time_s
        metrics["AdamW GB/s (ideal traffic)"] = _BYTES_PER_PARAM["adamw"] * numel / adamw_time / 1e9
        ours = BenchMeasurement(ours.label, ours.time_s, metrics)
        size = f"{numel:,} fp32 parameters"
        try:
            import lion_pytorch
        except ImportError:
            return BenchResult(self.name, size, ours, None, note="lion-pytorch not installed")
        peer_params = _parameters(total, ctx.device, ctx.seed, conv=False)
        peer_options: dict[str, Any] = {"use_triton": True} if cuda else {}
        try:
            peer_time = _step_time(lambda ps: lion_pytorch.Lion(ps, **kwargs, **peer_options), peer_params, ctx)
            peer_label = "lion_pytorch.Lion" + (" (triton)" if cuda else "")
        except Exception:  # lion-pytorch's Triton path needs its own triton version; fall back to its loop
            peer_time = _step_time(lambda ps: lion_pytorch.Lion(ps, **kwargs), peer_params, ctx)
            peer_label = "lion_pytorch.Lion"
        note = (
            f"AdamW ({'fused' if cuda else 'foreach'}) takes {adamw_time * 1e3:.3g} ms per step on the same "
            "parameters; "
            "GB/s counts the bytes an ideal step must move (Lion 20 B/param, AdamW 28 B/param)"
        )
        return BenchResult(self.name, size, ours, _measure(peer_label, peer_time, numel, "lion"), note=note)


@dataclasses.dataclass(frozen=True)
class AdamPStepBenchmark:
    """One AdamP step on conv-shaped weights: ours against the authors' ``adamp`` package, with timm alongside.

    Every weight is 4-D, so the scale-invariance test and the projection run on each of them, as in a ResNet.
    """

    name: str = "adamp-step"
    peer: str = "adamp.AdamP"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time one step of each optimizer on identical parameters and gradients."""
        from ._adamp import AdamP

        total = _size(ctx) // (10 if ctx.device.type == "cuda" and not ctx.quick else 1)
        params = _parameters(total, ctx.device, ctx.seed, conv=True)
        numel = sum(p.numel() for p in params)
        cuda = ctx.device.type == "cuda"
        kwargs: dict[str, Any] = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "weight_decay": 1e-2,
            "delta": 0.1,
            "wd_ratio": 0.1,
        }
        ours_options: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
        ours_time = _step_time(lambda ps: AdamP(ps, **kwargs, **ours_options), params, ctx)
        ours = _measure(f"sciml_optim.AdamP ({'fused Triton' if cuda else 'foreach'})", ours_time, numel, "adamp")
        metrics = dict(ours.metrics)
        extra = []
        try:
            from timm.optim.adamp import AdamP as TimmAdamP

            timm_time = _step_time(lambda ps: TimmAdamP(ps, **kwargs), _clone(params), ctx)
            metrics["timm.optim.AdamP step s"] = timm_time
            metrics["speedup vs timm"] = timm_time / ours_time
            extra.append(f"timm AdamP {timm_time * 1e3:.3g} ms")
        except ImportError:
            pass
        adamw_options: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
        adamw_time = _step_time(
            lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **adamw_options), _clone(params), ctx
        )
        metrics["torch.optim.AdamW step s"] = adamw_time
        extra.append(f"AdamW ({'fused' if cuda else 'foreach'}, no projection) {adamw_time * 1e3:.3g} ms")
        ours = BenchMeasurement(ours.label, ours.time_s, metrics)
        size = f"{numel:,} fp32 parameters in {len(params)} tensors (conv 3x3 weights and biases)"
        note = "; ".join(extra)
        try:
            import adamp
        except ImportError:
            return BenchResult(self.name, size, ours, None, note="adamp not installed; " + note)
        peer_time = _step_time(lambda ps: adamp.AdamP(ps, **kwargs), _clone(params), ctx)
        return BenchResult(self.name, size, ours, _measure("adamp.AdamP", peer_time, numel, "adamp"), note=note)


def cases() -> list[Any]:
    """The benchmark cases of sciml-optim (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()]
        ['lion-step', 'adamp-step']
    """
    return [LionStepBenchmark(), AdamPStepBenchmark()]
