r"""``sciml bench sciml-norm``: forward + backward of EvoNorm-S0/B0, ours against timm's, with BatchNorm2d+ReLU.

Every case builds the three layers with the same parameters, feeds them the same input and the same output
gradient, and times one training step of the layer alone: the forward pass and the gradients with respect to the
input and the parameters (``torch.autograd.grad``, so no gradient accumulates between calls). B0 runs in training
mode (batch statistics, running-variance update), like the BatchNorm it is compared with.

Memory is reported two ways:

* ``saved MB`` (every device): the bytes of the distinct tensors autograd keeps for the backward pass, counted with
  :func:`torch.autograd.graph.saved_tensors_hooks` during the forward (the input counts when it is saved). This is
  the activation memory a layer adds to a network's training footprint, and the number that can be compared on a
  CPU, where no allocator statistics exist.
* ``peak MB`` (CUDA only): :func:`torch.cuda.max_memory_allocated` over one forward + backward, minus what was
  allocated before it (the input, the output gradient and the parameters).

Correctness: ``max |ours - timm|`` of the output and of the gradients (input, weight, bias, v) on the same inputs,
and ``parity``: the largest of these differences divided by ``max(1, max |timm|)`` of the same tensor (a
float32 tolerance scale that does not grow with the reductions in the weight gradients).

On a CPU ours runs the eager PyTorch path; on CUDA the fused Triton kernels when Triton is installed.

Reference:
    Hanxiao Liu, Andrew Brock, Karen Simonyan, Quoc V. Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020 (arXiv:2004.02967). Peer: ``timm.layers.EvoNorm2dS0`` / ``EvoNorm2dB0`` (timm >= 1.0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from sciml_protocols import BenchContext, BenchmarkCase, BenchMeasurement, BenchResult, SciMLInputError, measure_time
from torch import nn

__all__ = ["EvoNormBenchmark", "cases"]

# (N, C, H, W): ResNet-50's first and third stages at 224 px; quick mode shrinks them.
_SHAPES: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "stage1": {"quick": (8, 64, 28, 28), "cpu": (32, 256, 56, 56), "cuda": (128, 256, 56, 56)},
    "stage3": {"quick": (8, 256, 7, 7), "cpu": (32, 1024, 14, 14), "cuda": (128, 1024, 14, 14)},
}
_MB = 1e6


def cases() -> list[BenchmarkCase]:
    """The benchmark cases of sciml-norm (entry point ``sciml.benchmarks``).

    Example:
        >>> [(c.name, c.peer) for c in cases()][:2]
        [('evonorm-s0-stage1', 'timm.layers.EvoNorm2dS0'), ('evonorm-s0-stage3', 'timm.layers.EvoNorm2dS0')]
    """
    return [EvoNormBenchmark(layer, stage) for layer in ("S0", "B0") for stage in ("stage1", "stage3")]


@dataclasses.dataclass(frozen=True)
class _Step:
    """One layer's forward + backward on bound inputs, with what the correctness check needs."""

    module: nn.Module
    x: torch.Tensor
    grad_output: torch.Tensor

    def forward(self) -> torch.Tensor:
        return self.module(self.x)

    def gradients(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        inputs = [self.x, *(p for p in self.module.parameters())]
        output = self.forward()
        grads = torch.autograd.grad(output, inputs, self.grad_output)
        return output.detach(), tuple(grads)

    def __call__(self) -> None:
        self.gradients()


def _saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``forward()``."""
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[str(tensor.device), storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    del output
    return sum(storages.values())


def _peak_bytes(step: _Step, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@dataclasses.dataclass(frozen=True)
class EvoNormBenchmark:
    r"""Forward + backward of ``EvoNorm2d{layer}`` against timm's at a ResNet-50-like shape, BN+ReLU for scale.

    Shapes ``(N, C, H, W)``: ``"stage1"`` is (32, 256, 56, 56) on a CPU and (128, 256, 56, 56) on CUDA;
    ``"stage3"`` is (32, 1024, 14, 14) and (128, 1024, 14, 14); quick mode uses (8, 64, 28, 28) and (8, 256, 7, 7).
    S0 uses timm's default 32 groups. All three layers get the same seeded weights (``weight``, ``bias``, ``v``
    drawn around their initial values so that the check exercises them), input and output gradient, in
    ``dtype`` (float32 by default).

    Attributes:
        layer: ``"S0"`` or ``"B0"``.
        stage: ``"stage1"`` or ``"stage3"``.
        dtype: the dtype of input and parameters.

    Example:
        >>> case = EvoNormBenchmark("B0", "stage3")
        >>> case.name, case.peer
        ('evonorm-b0-stage3', 'timm.layers.EvoNorm2dB0')
    """

    layer: str = "S0"
    stage: str = "stage1"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.layer not in ("S0", "B0"):
            raise SciMLInputError("layer", f"must be 'S0' or 'B0', got {self.layer!r}")
        if self.stage not in _SHAPES:
            raise SciMLInputError("stage", f"must be one of {sorted(_SHAPES)}, got {self.stage!r}")
        if not self.dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating-point dtype, got {self.dtype}")

    @property
    def name(self) -> str:
        """``evonorm-<layer>-<stage>``, with a dtype suffix other than float32."""
        suffix = "" if self.dtype == torch.float32 else "-" + str(self.dtype).removeprefix("torch.")
        return f"evonorm-{self.layer.lower()}-{self.stage}{suffix}"

    @property
    def peer(self) -> str:
        """Timm's layer of the same name."""
        return f"timm.layers.EvoNorm2d{self.layer}"

    def shape(self, ctx: BenchContext) -> tuple[int, int, int, int]:
        """The input shape this case uses under ``ctx``."""
        key = "quick" if ctx.quick else ("cuda" if ctx.device.type == "cuda" else "cpu")
        return _SHAPES[self.stage][key]

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time forward + backward of ours, timm's and BN+ReLU; count memory; compare outputs and gradients."""
        from ._evonorm import EvoNorm2dB0, EvoNorm2dS0

        shape = self.shape(ctx)
        channels = shape[1]
        factory: dict[str, Any] = {"device": ctx.device, "dtype": self.dtype}
        generator = torch.Generator().manual_seed(ctx.seed)
        x = torch.randn(shape, generator=generator).to(**factory).requires_grad_(True)
        grad_output = torch.randn(shape, generator=generator).to(**factory)
        weight = 1.0 + 0.1 * torch.randn(channels, generator=generator)
        bias = 0.1 * torch.randn(channels, generator=generator)
        v = 1.0 + 0.1 * torch.randn(channels, generator=generator)

        ours: nn.Module = EvoNorm2dS0(channels, **factory) if self.layer == "S0" else EvoNorm2dB0(channels, **factory)
        _set_parameters(ours, weight, bias, v)
        bn_relu = nn.Sequential(nn.BatchNorm2d(channels, **factory), nn.ReLU()).train()
        sides: dict[str, _Step] = {"ours": _Step(ours.train(), x, grad_output), "bn": _Step(bn_relu, x, grad_output)}
        try:
            from timm.layers.evo_norm import EvoNorm2dB0 as TimmB0
            from timm.layers.evo_norm import EvoNorm2dS0 as TimmS0
        except ImportError:
            peer_module: nn.Module | None = None
        else:
            peer_module = TimmS0(channels, **factory) if self.layer == "S0" else TimmB0(channels, **factory)
            _set_parameters(peer_module, weight, bias, v)
            sides["timm"] = _Step(peer_module.train(), x, grad_output)

        parity: dict[str, float] = {}
        if "timm" in sides:
            parity = _compare(sides["ours"], sides["timm"])
            if self.layer == "B0":
                assert peer_module is not None
                # both layers ran the same number of training steps in _compare
                ours_var, peer_var = ours.get_buffer("running_var"), peer_module.get_buffer("running_var")
                parity["max |ours - timm| (running_var)"] = float((ours_var - peer_var).abs().max())

        results: dict[str, dict[str, Any]] = {}
        for label, step in sides.items():
            seconds = measure_time(step, device=ctx.device, min_run_time=ctx.min_run_time)
            saved = _saved_bytes(step.forward) / _MB
            peak = _peak_bytes(step, ctx.device)
            results[label] = {"time_s": seconds, "saved MB": saved}
            if peak is not None:
                results[label]["peak MB"] = peak / _MB

        bn = results["bn"]
        our_metrics: dict[str, float | int | str | bool] = {
            "saved MB": results["ours"]["saved MB"],
            "BatchNorm2d+ReLU time_s": bn["time_s"],
            "BatchNorm2d+ReLU saved MB": bn["saved MB"],
            "time / BatchNorm2d+ReLU time": results["ours"]["time_s"] / bn["time_s"],
        }
        if "peak MB" in results["ours"]:
            our_metrics["peak MB"] = results["ours"]["peak MB"]
            our_metrics["BatchNorm2d+ReLU peak MB"] = bn["peak MB"]
        our_metrics.update(parity)
        path = "fused Triton kernels" if ctx.device.type == "cuda" and _uses_triton(ours) else "eager PyTorch"
        size = f"x: {tuple(shape)}, {str(self.dtype).removeprefix('torch.')}, forward + backward, train mode"
        ours_measurement = BenchMeasurement(f"sciml_norm.EvoNorm2d{self.layer} ({path})", results["ours"]["time_s"],
                                            our_metrics)  # fmt: skip
        note = (
            f"ours runs the {path} path on {ctx.device.type}; 'saved MB' counts the tensors autograd keeps for "
            "backward; parity = max |ours - timm| / max(1, max |timm|) over the output and all gradients"
        )
        if "timm" not in results:
            return BenchResult(self.name, size, ours_measurement, None, note="timm not installed; " + note)
        peer_metrics: dict[str, float | int | str | bool] = {
            key: value for key, value in results["timm"].items() if key != "time_s"
        }
        peer_measurement = BenchMeasurement(f"timm EvoNorm2d{self.layer}", results["timm"]["time_s"], peer_metrics)
        return BenchResult(self.name, size, ours_measurement, peer_measurement, note=note)


def _set_parameters(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor, v: torch.Tensor) -> None:
    with torch.no_grad():
        for name, value in (("weight", weight), ("bias", bias), ("v", v)):
            getattr(module, name).copy_(value)


def _uses_triton(module: nn.Module) -> bool:
    from sciml_protocols import triton_available

    return getattr(module, "fused", None) is not False and bool(triton_available())


def _compare(ours: _Step, peer: _Step) -> dict[str, float]:
    """Output and gradient differences of one forward + backward on identical inputs."""
    our_output, our_grads = ours.gradients()
    peer_output, peer_grads = peer.gradients()
    names = [name for name, _ in ours.module.named_parameters()]
    if names != [name for name, _ in peer.module.named_parameters()]:
        raise AssertionError(f"parameter names differ from timm's: {names}")
    worst_grad = 0.0
    output_difference = float((our_output - peer_output).abs().max())
    scaled = output_difference / max(1.0, float(peer_output.abs().max()))
    for mine, theirs in zip(our_grads, peer_grads, strict=True):
        difference = float((mine - theirs).abs().max())
        worst_grad = max(worst_grad, difference)
        scaled = max(scaled, difference / max(1.0, float(theirs.abs().max())))
    return {
        "max |ours - timm| (output)": output_difference,
        "max |ours - timm| (grads)": worst_grad,
        "parity": scaled,
    }
