r"""``sciml bench sciml-equivariant``: the Gaunt tensor product against e3nn's ``TensorProduct`` on the same math.

The peer computes exactly the same bilinear map: e3nn's :class:`e3nn.o3.TensorProduct` on the irreps
:math:`C\times 0e + C\times 1o + \dots + C\times Lp` (both inputs and the output), with one ``"uuu"`` (channel-wise,
no learnable weight) instruction per path :math:`(l_1, l_2, l_3)` with :math:`l_1 + l_2 + l_3` even and
:math:`|l_1 - l_2| \le l_3 \le l_1 + l_2`, ``irrep_normalization="none"``, ``path_normalization="none"`` and
``path_weight`` :math:`= c^2`, where

.. math::
    G^{l_3 m_3}_{l_1 m_1, l_2 m_2} = \int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}\, d\Omega
    = c(l_1, l_2, l_3)\, W^{l_1 l_2 l_3}_{m_1 m_2 m_3},\qquad
    c = \sqrt{\tfrac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}}\,\left|\begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0
    \end{pmatrix}\right|

(:math:`W` is e3nn's unit-norm real Wigner 3j tensor; e3nn multiplies each path by :math:`\sqrt{\text{path\_weight}}`,
which the parity metric of every case checks numerically). :math:`c` comes here from the closed form of the 3j symbol
with zero projections, computed in exact integer arithmetic, independently of :mod:`sciml_equivariant._gaunt`.

Cases: forward and forward+backward at :math:`L = 2, 4, 6, 8, 10` (``lmax_out = L``, batch 256, 128 channels,
float32; quick: batch 16, 8 channels and :math:`L \le 4`), and ours alone at :math:`L = 16, 20` (e3nn caps
spherical harmonics at :math:`l = 12`). e3nn's construction time (its code generation) is reported as a metric.
:func:`gaunt_speed_sweep` runs the same comparison over a range of degrees for both of our backends; the demo
``gaunt-speed`` and ``benchmarks/bench_gaunt.py`` use it.

Reference:
    Luo, Chen and Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
    Products", ICLR 2024 (arXiv:2401.10216).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import torch
from sciml_protocols import BenchContext, BenchMeasurement, BenchResult, SciMLInputError, measure_time

__all__ = ["E3NN_MAX_DEGREE", "GauntProductBenchmark", "cases", "e3nn_gaunt_path_weight", "gaunt_speed_sweep"]

E3NN_MAX_DEGREE = 12
"""The highest degree e3nn 0.6 supports (its spherical harmonics and 3j tables stop at ``l = 12``)."""

_PEER = "e3nn.o3.TensorProduct (uuu, even paths, Gaunt path weights)"
_QUICK_MAX_DEGREE = 4


def _three_j_zero_squared(l1: int, l2: int, l3: int) -> Fraction:
    r"""The square of the Wigner 3j symbol with zero projections, exactly.

    For :math:`J = l_1 + l_2 + l_3` even and :math:`g = J / 2` (zero otherwise, and outside the triangle),

    .. math::
        \begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0 \end{pmatrix}^2
        = \frac{(J - 2l_1)!\,(J - 2l_2)!\,(J - 2l_3)!}{(J + 1)!}
          \left(\frac{g!}{(g - l_1)!\,(g - l_2)!\,(g - l_3)!}\right)^2 .
    """
    total = l1 + l2 + l3
    if total % 2 or l3 > l1 + l2 or l3 < abs(l1 - l2):
        return Fraction(0)
    g = total // 2
    f = math.factorial
    ratio = Fraction(f(g), f(g - l1) * f(g - l2) * f(g - l3))
    return Fraction(f(total - 2 * l1) * f(total - 2 * l2) * f(total - 2 * l3), f(total + 1)) * ratio**2


def e3nn_gaunt_path_weight(l1: int, l2: int, l3: int) -> float:
    r"""The ``path_weight`` that turns an e3nn ``"uuu"`` path into the Gaunt product's path: :math:`c^2`.

    .. math::
        c^2 = \frac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}
              \begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0 \end{pmatrix}^2

    (e3nn scales a path by the square root of its weight; :math:`c\,W^{l_1 l_2 l_3}` is the Gaunt tensor).

    Args:
        l1: degree of the first input.
        l2: degree of the second input.
        l3: degree of the output.

    Returns:
        The weight; 0 when :math:`l_1 + l_2 + l_3` is odd or the degrees violate the triangle inequality.

    Example:
        >>> round(e3nn_gaunt_path_weight(0, 0, 0) * 4 * math.pi, 12)
        1.0
        >>> e3nn_gaunt_path_weight(1, 1, 1)
        0.0
    """
    squared = _three_j_zero_squared(l1, l2, l3)
    return float((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) * squared) / (4 * math.pi)


def _even_paths(l1max: int, l2max: int, lout: int) -> list[tuple[int, int, int]]:
    return [
        (a, b, c)
        for a in range(l1max + 1)
        for b in range(l2max + 1)
        for c in range(lout + 1)
        if (a + b + c) % 2 == 0 and abs(a - b) <= c <= a + b
    ]


@functools.lru_cache(maxsize=16)
def _e3nn_peer(degree: int, channels: int, device: str, dtype: torch.dtype) -> tuple[Any, float]:
    """e3nn's Gaunt-weighted channel-wise product for degrees <= ``degree`` and its construction time (cached)."""
    from e3nn import o3  # pyright: ignore[reportMissingTypeStubs]

    irreps = o3.Irreps([(channels, (ell, (-1) ** ell)) for ell in range(degree + 1)])
    instructions = [
        (a, b, c, "uuu", False, e3nn_gaunt_path_weight(a, b, c)) for a, b, c in _even_paths(degree, degree, degree)
    ]
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # e3nn builds its 3j buffers in the default dtype: float64 needs them exact
    try:
        start = time.perf_counter()
        module = o3.TensorProduct(
            irreps, irreps, irreps, instructions, irrep_normalization="none", path_normalization="none"
        )
        module = module.to(device=device, dtype=dtype)
        seconds = time.perf_counter() - start
    finally:
        torch.set_default_dtype(default)
    return module, seconds


def _inputs(
    batch: int, channels: int, degree: int, *, seed: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    dim = channels * (degree + 1) ** 2
    x, y, cotangent = (torch.randn(batch, dim, generator=generator, dtype=torch.float64) for _ in range(3))
    return x.to(device, dtype), y.to(device, dtype), cotangent.to(device, dtype)


def _timed_call(
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cotangent: torch.Tensor,
    *,
    backward: bool,
) -> Callable[[], object]:
    if not backward:

        def forward() -> object:
            with torch.no_grad():
                return product(x, y)

        return forward
    xg, yg = x.detach().requires_grad_(True), y.detach().requires_grad_(True)

    def forward_backward() -> object:
        out = product(xg, yg)
        return torch.autograd.grad(out, (xg, yg), cotangent)

    return forward_backward


def _relative(difference: float, scale: float) -> float:
    return difference / scale if scale > 0 else difference


def _parity(
    ours: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    peer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cotangent: torch.Tensor,
    *,
    backward: bool,
) -> dict[str, float]:
    """Max |ours - e3nn| (forward, and the input gradients with ``backward``), absolute and relative to max |e3nn|."""
    xs = [x.detach().requires_grad_(backward) for _ in range(2)]
    ys = [y.detach().requires_grad_(backward) for _ in range(2)]
    ours_out, peer_out = ours(xs[0], ys[0]), peer(xs[1], ys[1])
    diff = float((ours_out - peer_out).detach().abs().max())
    scale = float(peer_out.detach().abs().max())
    result = {"max |ours - e3nn|": diff, "relative max |ours - e3nn|": _relative(diff, scale)}
    if backward:
        ours_grads = torch.autograd.grad(ours_out, (xs[0], ys[0]), cotangent)
        peer_grads = torch.autograd.grad(peer_out, (xs[1], ys[1]), cotangent)
        grad_diff = max(float((a - b).abs().max()) for a, b in zip(ours_grads, peer_grads, strict=True))
        grad_scale = max(float(b.abs().max()) for b in peer_grads)
        result["max |grad ours - grad e3nn|"] = grad_diff
        result["relative max |grad ours - grad e3nn|"] = _relative(grad_diff, grad_scale)
    return result


_BACKENDS = ("auto", "grid", "fft", "cg", "module")


def _ours(
    degree: int,
    channels: int,
    backend: str,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Our product for ``lmax_out = degree``: the function with a backend, or (``"module"``) the module.

    ``"module"`` is ``GauntTensorProduct(weights=None, backend="auto")``, which runs the fused Triton grid kernel on
    CUDA tensors and the PyTorch grid product elsewhere.
    """
    if backend == "module":
        from ._modules import GauntTensorProduct

        return GauntTensorProduct(channels, degree, degree, degree, weights=None, device=device, dtype=dtype)

    from ._gaunt import gaunt_tensor_product

    def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaunt_tensor_product(x, y, lmax_out=degree, channels=channels, backend=backend)

    return product


@dataclasses.dataclass(frozen=True)
class GauntProductBenchmark:
    r"""Channel-wise Gaunt product of degree-:math:`L` features, ours against e3nn's Gaunt-weighted ``TensorProduct``.

    Both sides take the same float32 inputs of shape ``(batch, C (L+1)^2)`` in e3nn's ``mul_ir`` layout for the
    irreps :math:`C\times 0e + C\times 1o + \dots`, and return the ``lmax_out = L`` part of the product. With
    ``backward=True`` a call is the forward pass plus the gradients with respect to both inputs for a fixed random
    cotangent. Full size: batch 256, :math:`C = 128`; quick: batch 16, :math:`C = 8`, and degrees above 4 run at
    :math:`L = 4` (degrees above e3nn's cap keep their degree: ours alone is cheap). Above :math:`L = 12` there is
    no peer.

    Metrics: max :math:`|\text{ours} - \text{e3nn}|` (absolute and relative to max :math:`|\text{e3nn}|`, and the
    same for the input gradients with ``backward``), the number of paths, and e3nn's construction time (the first
    build in the process; later cases at the same size reuse the module).

    Args:
        degree: :math:`L`, the degree of both inputs and of the output.
        backward: time forward + backward instead of the forward pass alone.
        backend: our backend: ``"auto"``, ``"grid"``, ``"fft"`` or ``"cg"`` for
            :func:`~sciml_equivariant._gaunt.gaunt_tensor_product`, or ``"module"`` for ``GauntTensorProduct``
            without weights (the fused Triton grid kernel on CUDA).

    Example:
        >>> case = GauntProductBenchmark(6, backward=True)
        >>> case.name, case.peer
        ('gaunt-fwd-bwd-L6', 'e3nn.o3.TensorProduct (uuu, even paths, Gaunt path weights)')
    """

    degree: int
    backward: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.degree, int) or isinstance(self.degree, bool) or self.degree < 0:
            raise SciMLInputError("degree", f"must be a non-negative int, got {self.degree!r}")
        if self.backend not in _BACKENDS:
            raise SciMLInputError("backend", f"must be one of {_BACKENDS}, got {self.backend!r}")

    @property
    def name(self) -> str:
        """``gaunt-fwd-L<L>`` or ``gaunt-fwd-bwd-L<L>`` (with ``-<backend>`` unless the backend is ``"auto"``)."""
        suffix = "" if self.backend == "auto" else f"-{self.backend}"
        return f"gaunt-{'fwd-bwd' if self.backward else 'fwd'}-L{self.degree}{suffix}"

    @property
    def peer(self) -> str:
        """e3nn's ``TensorProduct`` restricted to the even paths with Gaunt path weights."""
        return _PEER

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time both sides on the same inputs and compare their outputs (and gradients)."""
        degree = self.degree
        if ctx.quick and degree <= E3NN_MAX_DEGREE:
            degree = min(degree, _QUICK_MAX_DEGREE)
        batch, channels = (16, 8) if ctx.quick else (256, 128)
        dtype = torch.float32
        x, y, cotangent = _inputs(batch, channels, degree, seed=ctx.seed, device=ctx.device, dtype=dtype)
        ours = _ours(degree, channels, self.backend, ctx.device, dtype)
        seconds = measure_time(
            _timed_call(ours, x, y, cotangent, backward=self.backward), device=ctx.device, min_run_time=ctx.min_run_time
        )
        paths = len(_even_paths(degree, degree, degree))
        size = f"L = {degree} -> {degree}, batch {batch}, {channels} channels, {paths} paths, float32"
        if degree != self.degree:
            size += f" (quick; full run L = {self.degree})"
        if self.backend == "module":
            label = "sciml_equivariant.GauntTensorProduct (weights=None)"
        else:
            label = f"sciml_equivariant.gaunt_tensor_product ({self.backend})"
        our_metrics: dict[str, float | int | str | bool] = {"paths": paths}
        fused = None
        if ctx.device.type == "cuda" and self.backend == "auto":
            # the module path dispatches to the fused Triton grid kernel on CUDA: report it alongside
            fused = _ours(degree, channels, "module", ctx.device, dtype)
            our_metrics["GauntTensorProduct (fused kernel) s"] = measure_time(
                _timed_call(fused, x, y, cotangent, backward=self.backward),
                device=ctx.device,
                min_run_time=ctx.min_run_time,
            )
        if degree > E3NN_MAX_DEGREE:
            return BenchResult(
                self.name,
                size,
                BenchMeasurement(label, seconds, our_metrics),
                None,
                note=f"e3nn caps spherical harmonics at l = {E3NN_MAX_DEGREE}",
            )
        try:
            module, construction = _e3nn_peer(degree, channels, str(ctx.device), dtype)
        except ImportError:
            return BenchResult(self.name, size, BenchMeasurement(label, seconds, our_metrics), None,
                               note="e3nn not installed")  # fmt: skip
        our_metrics.update(_parity(ours, module, x, y, cotangent, backward=self.backward))
        if fused is not None:
            fused_parity = _parity(fused, module, x, y, cotangent, backward=False)
            our_metrics["GauntTensorProduct: relative max |ours - e3nn|"] = fused_parity["relative max |ours - e3nn|"]
        peer_seconds = measure_time(
            _timed_call(module, x, y, cotangent, backward=self.backward),
            device=ctx.device,
            min_run_time=ctx.min_run_time,
        )
        peer_metrics: dict[str, float | int | str | bool] = {"construction s": construction}
        note = "e3nn with its default TorchScript code generation; construction s: its first build in the process"
        return BenchResult(
            self.name,
            size,
            BenchMeasurement(label, seconds, our_metrics),
            BenchMeasurement("e3nn TensorProduct (Gaunt paths)", peer_seconds, peer_metrics),
            note=note,
        )


def cases() -> list[Any]:
    """The benchmark cases of sciml-equivariant (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()][:4]
        ['gaunt-fwd-L2', 'gaunt-fwd-bwd-L2', 'gaunt-fwd-L4', 'gaunt-fwd-bwd-L4']
        >>> len(cases())
        14
    """
    return [
        GauntProductBenchmark(degree, backward=backward)
        for degree in (2, 4, 6, 8, 10, 16, 20)
        for backward in (False, True)
    ]


def gaunt_speed_sweep(
    degrees: Sequence[int],
    *,
    batch: int,
    channels: int,
    backends: Sequence[str] = ("grid", "fft"),
    e3nn_max_degree: int = 10,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.1,
    backward: bool = True,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    r"""Time the Gaunt product (``lmax_out = L``) for each degree and backend, and e3nn's up to ``e3nn_max_degree``.

    For every :math:`L` the same inputs (``(batch, channels (L+1)^2)``, standard normal) go to each of our
    backends and to e3nn's Gaunt-weighted ``TensorProduct`` (see the module docstring), forward and, with
    ``backward``, forward + backward with respect to both inputs. Where e3nn runs, the max absolute difference of the
    outputs and its ratio to max :math:`|\text{e3nn}|` are recorded for each backend.

    Args:
        degrees: the degrees :math:`L` to run (each >= 0).
        batch: the leading batch size.
        channels: :math:`C`, the channels per degree.
        backends: our backends to time (``"module"``: ``GauntTensorProduct`` without weights, see
            :class:`GauntProductBenchmark`).
        e3nn_max_degree: run e3nn for :math:`L` up to this (at most 12; its construction time grows quickly).
        device: where to compute (CUDA timings use CUDA events).
        dtype: floating dtype of the inputs.
        min_run_time: seconds of repeated calls per timing.
        backward: also time forward + backward.
        seed: seed of the inputs.
        progress: optional callback ``progress(done, total, message)``.

    Returns:
        One dict per degree: ``L``, ``paths``, ``ours`` (backend -> ``{"forward_s", "forward_backward_s"}``; the
        times are None, with an ``"error"`` message, when the backend ran out of memory), ``e3nn``
        (``{"forward_s", "forward_backward_s", "construction_s"}``, or None above ``e3nn_max_degree`` or without
        e3nn installed), ``max_abs_diff`` and ``relative_diff`` (backend -> float, empty without e3nn).

    Raises:
        SciMLInputError: on negative degrees, non-positive sizes or an unknown backend.

    Example:
        >>> rows = gaunt_speed_sweep([1], batch=2, channels=2, e3nn_max_degree=-1, min_run_time=0.001,
        ...                          backward=False)
        >>> rows[0]["L"], sorted(rows[0]["ours"]), rows[0]["e3nn"]
        (1, ['fft', 'grid'], None)
    """
    if any(not isinstance(d, int) or d < 0 for d in degrees):
        raise SciMLInputError("degrees", f"must be non-negative ints, got {list(degrees)!r}")
    if batch < 1 or channels < 1:
        raise SciMLInputError("batch", f"batch and channels must be positive, got {batch} and {channels}")
    for backend in backends:
        if backend not in _BACKENDS:
            raise SciMLInputError("backends", f"unknown backend {backend!r}; choose from {_BACKENDS}")
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    for index, degree in enumerate(degrees):
        if progress is not None:
            progress(index, len(degrees), f"L = {degree}")
        x, y, cotangent = _inputs(batch, channels, degree, seed=seed, device=device, dtype=dtype)
        row: dict[str, Any] = {
            "L": degree,
            "paths": len(_even_paths(degree, degree, degree)),
            "ours": {},
            "e3nn": None,
            "max_abs_diff": {},
            "relative_diff": {},
        }
        products = {backend: _ours(degree, channels, backend, device, dtype) for backend in backends}
        for backend, product in list(products.items()):
            try:
                row["ours"][backend] = _time_both(product, x, y, cotangent, device, min_run_time, backward)
            except (RuntimeError, MemoryError) as error:  # out of memory at large sizes: record it, go on
                row["ours"][backend] = {"forward_s": None, "forward_backward_s": None, "error": str(error)[:200]}
                del products[backend]
                _empty_cache(device)
        peer: tuple[Any, float] | None = None
        if degree <= min(e3nn_max_degree, E3NN_MAX_DEGREE):
            try:
                peer = _e3nn_peer(degree, channels, str(device), dtype)
            except ImportError:
                peer = None
        if peer is not None:
            module, construction = peer
            row["e3nn"] = _time_both(module, x, y, cotangent, device, min_run_time, backward)
            row["e3nn"]["construction_s"] = construction
            with torch.no_grad():
                reference = module(x, y)
                scale = float(reference.abs().max())
                for backend, product in products.items():
                    diff = float((product(x, y) - reference).abs().max())
                    row["max_abs_diff"][backend] = diff
                    row["relative_diff"][backend] = _relative(diff, scale)
        rows.append(row)
    if progress is not None:
        progress(len(degrees), len(degrees), "done")
    return rows


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _time_both(
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cotangent: torch.Tensor,
    device: torch.device,
    min_run_time: float,
    backward: bool,
) -> dict[str, float | None]:
    times: dict[str, float | None] = {}
    for key, with_backward in (("forward_s", False), ("forward_backward_s", True)):
        if with_backward and not backward:
            times[key] = None
            continue
        call = _timed_call(product, x, y, cotangent, backward=with_backward)
        times[key] = measure_time(call, device=device, min_run_time=min_run_time)
    return times
