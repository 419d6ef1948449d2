r"""``sciml demo sciml-equivariant``: Gaunt products against e3nn, equivariance errors, affine invariance.

* ``gaunt-speed``: time of the channel-wise Gaunt product (both exact backends, ``"grid"`` and ``"fft"``) against
  e3nn's ``TensorProduct`` restricted to the same even paths with Gaunt path weights, forward and forward+backward,
  as a function of the degree :math:`L` (log-scale figure), beyond e3nn's cap of :math:`l = 12` for ours; passes
  when ours agrees with e3nn to 1e-5 relative in float32 wherever both run.
* ``gaunt-equivariance``: :math:`\max|f(D x) - D f(x)| / \max|f(x)|` under random rotations for every module and
  backend in float32 and float64; passes below 1e-10 (float64) and 1e-4 (float32).
* ``lie-affine-invariance``: the Lie-group experiment.

Everything runs on data generated here; matplotlib loads inside the figure helpers (no figure without it).

References:
    Luo, Chen and Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
    Products", ICLR 2024 (arXiv:2401.10216). Mironenco and Forré, "Lie Group Decompositions for Equivariant Neural
    Networks", ICLR 2024 (arXiv:2310.11366).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from sciml_protocols import DemoContext, DemoResult

__all__ = ["EQUIVARIANCE_TOLERANCES", "GauntEquivarianceDemo", "GauntSpeedDemo", "demos", "equivariance_table"]

EQUIVARIANCE_TOLERANCES: dict[torch.dtype, float] = {torch.float64: 1e-10, torch.float32: 1e-4}
"""Relative equivariance error allowed per dtype in ``gaunt-equivariance``."""

_PARITY_TOLERANCE = 1e-5


def _backend_agreement(seed: int) -> float:
    """Worst relative difference of the grid and FFT backends from the exact CG sum, float64, L = 1..4."""
    from ._gaunt import gaunt_tensor_product

    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for degree in (1, 2, 3, 4):
        channels = 3
        x = torch.randn(2, channels * (degree + 1) ** 2, generator=generator, dtype=torch.float64)
        y = torch.randn(2, channels * (degree + 1) ** 2, generator=generator, dtype=torch.float64)
        ref = gaunt_tensor_product(x, y, lmax_out=degree, channels=channels, backend="cg")
        scale = float(ref.abs().max())
        for backend in ("grid", "fft"):
            out = gaunt_tensor_product(x, y, lmax_out=degree, channels=channels, backend=backend)
            worst = max(worst, float((out - ref).abs().max()) / scale)
    return worst


# ---------------------------------------------------------------------------------------------------- speed


@dataclasses.dataclass(frozen=True)
class GauntSpeedDemo:
    r"""Gaunt product time against :math:`L` for ours (grid, FFT) and e3nn, with the float32 agreement checked.

    Quick: batch 16, 8 channels, :math:`L \in \{1, 2, 3, 4, 6, 8\}`, e3nn up to :math:`L = 4`. Full: batch 128,
    32 channels, :math:`L = 1 \dots 12, 14, 16, 18, 20`, e3nn up to :math:`L = 8` (its construction, a code
    generation per instance, grows steeply: seconds at :math:`L = 6` on a CPU). ``lmax_out = L`` throughout.

    Example:
        >>> GauntSpeedDemo().name
        'gaunt-speed'
    """

    name: str = "gaunt-speed"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Run the sweep (:func:`sciml_equivariant.bench.gaunt_speed_sweep`), draw time against L, check parity."""
        from .bench import gaunt_speed_sweep

        if ctx.quick:
            degrees, batch, channels, e3nn_max, min_run_time = [1, 2, 3, 4, 6, 8], 16, 8, 4, 0.02
        else:
            degrees = [*range(1, 13), 14, 16, 18, 20]
            batch, channels, e3nn_max, min_run_time = 128, 32, 8, 0.2
        if importlib.util.find_spec("e3nn") is None:
            e3nn_max = -1
        rows = gaunt_speed_sweep(
            degrees,
            batch=batch,
            channels=channels,
            e3nn_max_degree=e3nn_max,
            device=ctx.device,
            dtype=torch.float32,
            min_run_time=min_run_time,
            seed=ctx.seed,
            progress=ctx.progress,
        )
        compared = [row for row in rows if row["e3nn"] is not None]
        worst = max((max(row["relative_diff"].values()) for row in compared), default=math.nan)
        metrics: dict[str, float | int | str | bool] = {
            "batch x channels": f"{batch} x {channels}",
            "degrees": f"{degrees[0]}..{degrees[-1]}",
            "max relative |ours - e3nn| (float32)": worst,
        }
        for row in rows:
            ours = row["ours"]
            text = " / ".join(_ms(ours[b]["forward_backward_s"]) for b in ("grid", "fft"))
            text += " / " + (_ms(row["e3nn"]["forward_backward_s"]) if row["e3nn"] is not None else "-")
            metrics[f"L={row['L']} fwd+bwd ms (grid / fft / e3nn)"] = text
        peer_text = "e3nn is not installed, so nothing was compared"
        if compared:
            last = compared[-1]
            best = min(t for b in ("grid", "fft") if (t := last["ours"][b]["forward_s"]) is not None)
            speedup = last["e3nn"]["forward_s"] / best
            metrics[f"forward speed-up over e3nn at L={last['L']}"] = speedup
            metrics[f"e3nn construction s at L={last['L']}"] = last["e3nn"]["construction_s"]
            peer_text = (
                f"e3nn's Gaunt-weighted TensorProduct (same even paths) up to L = {last['L']}, where the faster of "
                f"ours is {speedup:.1f}x faster forward; both agree to {worst:.1e} relative in float32"
            )
        figure = _draw_speed(ctx, rows)
        # Our own exactness check, independent of whether e3nn is installed: the grid and Fourier backends against the
        # Gaunt-weighted Clebsch-Gordan sum ("cg") in float64.
        backend_gap = _backend_agreement(ctx.seed)
        metrics["max relative |grid, fft - cg| (float64, L = 1..4)"] = backend_gap
        passed = backend_gap < 1e-10 and (not compared or worst < _PARITY_TOLERANCE)
        summary = (
            f"Channel-wise Gaunt product of two degree-L features (batch {batch}, {channels} channels, lmax_out = L) "
            f"on {ctx.device}: ours on the quadrature grid and in the 2-D Fourier basis for L up to {degrees[-1]}, "
            f"against {peer_text}; e3nn cannot go past l = 12. The grid and Fourier backends agree with the exact "
            f"Clebsch-Gordan sum to {backend_gap:.1e} relative in float64."
        )
        return DemoResult(
            title="Gaunt tensor product: time against degree, ours vs e3nn",
            summary=summary,
            metrics=metrics,
            figures=(figure,) if figure is not None else (),
            passed=passed,
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g}"


def _draw_speed(ctx: DemoContext, rows: Sequence[dict[str, Any]]) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(10.0, 4.2), dpi=120, layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    styles = {"grid": ("tab:blue", "o", "ours (grid)"), "fft": ("tab:orange", "s", "ours (FFT)")}
    for axes, key, title in zip(panels, ("forward_s", "forward_backward_s"), ("forward", "forward + backward"),
                                strict=True):  # fmt: skip
        for backend, (color, marker, label) in styles.items():
            points = [(row["L"], row["ours"][backend][key]) for row in rows if row["ours"][backend][key] is not None]
            if points:
                axes.semilogy(*zip(*points, strict=True), color=color, marker=marker, label=label)
        peer = [(row["L"], row["e3nn"][key]) for row in rows if row["e3nn"] is not None]
        if peer:
            axes.semilogy(*zip(*peer, strict=True), color="tab:gray", marker="^", label="e3nn (Gaunt paths)")
        axes.axvline(12, color="0.6", linestyle=":", linewidth=1)
        axes.set_xlabel("degree L (inputs and output)")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
    panels[0].set_ylabel("seconds per call")
    panels[0].legend()
    path = ctx.figure_path("gaunt-speed")
    figure.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------- equivariance


def _rotate_features(x: torch.Tensor, R: torch.Tensor, channels: int, lmax: int) -> torch.Tensor:
    """Apply :math:`D(R)` to e3nn ``mul_ir`` features of irreps ``Cx0e+Cx1o+...`` up to ``lmax``."""
    return _rotate_irreps(x, R, [(channels, degree) for degree in range(lmax + 1)])


def _rotate_irreps(x: torch.Tensor, R: torch.Tensor, blocks: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Apply :math:`D(R)` to ``mul_ir`` features with the given ``(multiplicity, degree)`` blocks (R proper)."""
    from ._so3 import wigner_D

    rotated = []
    start = 0
    for multiplicity, degree in blocks:
        width = multiplicity * (2 * degree + 1)
        block = x[..., start : start + width].unflatten(-1, (multiplicity, 2 * degree + 1))
        rotated.append((block @ wigner_D(degree, R).mT).flatten(-2))
        start += width
    return torch.cat(rotated, dim=-1)


@dataclasses.dataclass(frozen=True)
class _Subject:
    """One row of the equivariance table: how to build inputs and the map, and how rotations act on them."""

    component: str
    backend: str
    build: Callable[[torch.dtype, torch.device, torch.Generator], tuple[Callable[..., torch.Tensor], list[Any]]]
    rotate_inputs: Callable[[list[Any], torch.Tensor], list[Any]]
    rotate_output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _randn(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)


def _gaunt_irreps(channels: int, lmax: int) -> str:
    return "+".join(f"{channels}x{degree}{'e' if degree % 2 == 0 else 'o'}" for degree in range(lmax + 1))


def _randomize(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Random parameters (weights initialised to one would hide a degree-mixing bug)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return module


def _subjects(channels: int, lmax: int, module_backends: Sequence[str]) -> list[_Subject]:
    c, l1, l2, lout = channels, lmax, lmax - 1, lmax + 1
    batch = 5

    def features(x: list[Any], R: torch.Tensor, degrees: Sequence[int]) -> list[Any]:
        return [_rotate_features(t, R, c, d) for t, d in zip(x, degrees, strict=True)]

    subjects: list[_Subject] = []
    for backend in ("grid", "fft", "cg"):

        def build_function(dtype: torch.dtype, device: torch.device, g: torch.Generator, backend: str = backend) -> Any:
            from ._gaunt import gaunt_tensor_product

            def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return gaunt_tensor_product(x, y, lmax_out=lout, channels=c, backend=backend)

            inputs = [_randn((batch, c * (l1 + 1) ** 2), dtype, device, g),
                      _randn((batch, c * (l2 + 1) ** 2), dtype, device, g)]  # fmt: skip
            return f, inputs

        subjects.append(_Subject("gaunt_tensor_product", backend, build_function,
                                 lambda x, R: features(x, R, (l1, l2)),
                                 lambda z, R: _rotate_features(z, R, c, lout)))  # fmt: skip
    # every path, odd ones included (cross products): the output holds both parities of each degree
    both = [(c, degree) for degree in range(lout + 1) for _ in range(2)]
    irreps_out = "+".join(f"{c}x{degree}{p}" for degree in range(lout + 1) for p in "eo")
    for mode in ("uvw", "uuu"):

        def build_cg(dtype: torch.dtype, device: torch.device, g: torch.Generator, mode: str = mode) -> Any:
            from ._cg import ClebschGordanTensorProduct

            module = ClebschGordanTensorProduct(_gaunt_irreps(c, l1), _gaunt_irreps(c, l2), irreps_out, mode=mode,
                                                device=device, dtype=dtype)  # fmt: skip
            _randomize(module, g)
            inputs = [_randn((batch, c * (l1 + 1) ** 2), dtype, device, g),
                      _randn((batch, c * (l2 + 1) ** 2), dtype, device, g)]  # fmt: skip
            return module, inputs

        subjects.append(_Subject(f"ClebschGordanTensorProduct(mode={mode!r})", "torch", build_cg,
                                 lambda x, R: features(x, R, (l1, l2)),
                                 lambda z, R: _rotate_irreps(z, R, both)))  # fmt: skip
    for backend in module_backends:
        for weights in ("separable", "fully_connected", None):

            def build_tp(dtype: torch.dtype, device: torch.device, g: torch.Generator, backend: str = backend,
                         weights: str | None = weights) -> Any:  # fmt: skip
                from ._modules import GauntTensorProduct

                module = GauntTensorProduct(c, l1, l2, lout, weights=weights, backend=backend, device=device,
                                            dtype=dtype)  # fmt: skip
                _randomize(module, g)
                inputs = [_randn((batch, c * (l1 + 1) ** 2), dtype, device, g),
                          _randn((batch, c * (l2 + 1) ** 2), dtype, device, g)]  # fmt: skip
                return module, inputs

            subjects.append(_Subject(f"GauntTensorProduct(weights={weights!r})", backend, build_tp,
                                     lambda x, R: features(x, R, (l1, l2)),
                                     lambda z, R: _rotate_features(z, R, c, lout)))  # fmt: skip

        def build_conv(dtype: torch.dtype, device: torch.device, g: torch.Generator, backend: str = backend) -> Any:
            from ._modules import GauntConvolution

            module = GauntConvolution(c, l1, l2, lout, backend=backend, device=device, dtype=dtype)
            _randomize(module, g)
            nodes, edges = 6, 14
            src = torch.randint(nodes, (edges,), generator=g).to(device)
            dst = torch.randint(nodes, (edges,), generator=g).to(device)
            positions = _randn((nodes, 3), torch.float64, torch.device("cpu"), g) * 1.5
            vectors = (positions[dst.cpu()] - positions[src.cpu()]).to(device, dtype)
            vectors = torch.where(vectors.norm(dim=-1, keepdim=True) > 1e-3, vectors, torch.ones_like(vectors))
            x = _randn((nodes, c * (l1 + 1) ** 2), dtype, device, g)
            return (lambda h, v: module(h, src, dst, v)), [x, vectors]

        subjects.append(_Subject("GauntConvolution", backend, build_conv,
                                 lambda x, R: [_rotate_features(x[0], R, c, l1), x[1] @ R.mT],
                                 lambda z, R: _rotate_features(z, R, c, lout)))  # fmt: skip

        def build_many(dtype: torch.dtype, device: torch.device, g: torch.Generator, backend: str = backend) -> Any:
            from ._modules import GauntManyBody

            module = GauntManyBody(c, l2, 3, lmax_out=lout, backend=backend, device=device, dtype=dtype)
            _randomize(module, g)
            return module, [_randn((batch, c * (l2 + 1) ** 2), dtype, device, g)]

        subjects.append(_Subject("GauntManyBody(correlation=3)", backend, build_many,
                                 lambda x, R: features(x, R, (l2,)),
                                 lambda z, R: _rotate_features(z, R, c, lout)))  # fmt: skip
    return subjects


def equivariance_table(
    *,
    channels: int = 4,
    lmax: int = 3,
    rotations: int = 4,
    dtypes: Sequence[torch.dtype] = (torch.float64, torch.float32),
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    r"""Relative equivariance error of every Gaunt component and backend under random rotations.

    For a map :math:`f` (the function :func:`~sciml_equivariant._gaunt.gaunt_tensor_product` with each backend, and
    the modules ``GauntTensorProduct`` (each weight scheme), ``GauntConvolution`` and ``GauntManyBody`` with each
    compute backend available on ``device``, all with random parameters) and Haar-random rotations :math:`R`,

    .. math:: \varepsilon = \max_R \frac{\max |f(D(R)\,x) - D(R)\,f(x)|}{\max |f(x)|},

    where :math:`D(R)` acts block-wise on the ``mul_ir`` features (and edge vectors rotate as :math:`R v`).
    Degrees: inputs :math:`L` and :math:`L - 1` (many-body: :math:`L - 1`, correlation 3), output :math:`L + 1`.

    Args:
        channels: channels per degree.
        lmax: :math:`L \ge 1`.
        rotations: number of random rotations.
        dtypes: dtypes to test.
        device: where to compute.
        seed: seed of inputs, parameters and rotations.
        progress: optional callback ``progress(done, total, message)``.

    Returns:
        One dict per (component, backend, dtype): ``component``, ``backend``, ``dtype`` (``"float64"``...),
        ``error`` and ``tolerance`` (:data:`EQUIVARIANCE_TOLERANCES`).

    Example:
        >>> rows = equivariance_table(channels=1, lmax=1, rotations=1, dtypes=(torch.float64,))
        >>> all(row["error"] < row["tolerance"] for row in rows)
        True
    """
    from ._so3 import rand_rotation

    device = torch.device(device)
    module_backends = ["torch"]
    if device.type == "cuda":
        from sciml_protocols import triton_available

        if triton_available():
            module_backends.append("triton")
    subjects = _subjects(channels, lmax, module_backends)
    rows: list[dict[str, Any]] = []
    total = len(subjects) * len(dtypes)
    for dtype in dtypes:
        for subject in subjects:
            if progress is not None:
                progress(len(rows), total, f"{subject.component} [{subject.backend}, {dtype}]")
            generator = torch.Generator().manual_seed(seed)
            function, inputs = subject.build(dtype, device, generator)
            matrices = rand_rotation(rotations, generator=generator, dtype=torch.float64).to(device, dtype)
            with torch.no_grad():
                reference = function(*inputs)
                scale = float(reference.abs().max())
                error = 0.0
                for R in matrices:
                    rotated = function(*subject.rotate_inputs(inputs, R))
                    difference = float((rotated - subject.rotate_output(reference, R)).abs().max())
                    error = max(error, difference / scale if scale > 0 else difference)
            rows.append({
                "component": subject.component,
                "backend": subject.backend,
                "dtype": str(dtype).removeprefix("torch."),
                "error": error,
                "tolerance": EQUIVARIANCE_TOLERANCES.get(dtype, 1e-4),
            })  # fmt: skip
    if progress is not None:
        progress(total, total, "done")
    return rows


@dataclasses.dataclass(frozen=True)
class GauntEquivarianceDemo:
    r"""Equivariance-error table of every Gaunt module and backend, float32 and float64, under random rotations.

    Quick: 4 channels, :math:`L = 3`, 3 rotations; full: 8 channels, :math:`L = 6`, 10 rotations. Passes when every
    error is below its tolerance (float64 1e-10, float32 1e-4; :data:`EQUIVARIANCE_TOLERANCES`).

    Example:
        >>> GauntEquivarianceDemo().name
        'gaunt-equivariance'
    """

    name: str = "gaunt-equivariance"

    def run(self, ctx: DemoContext) -> DemoResult:
        """Measure every error, tabulate them, draw them against their tolerances."""
        channels, lmax, rotations = (4, 3, 3) if ctx.quick else (8, 6, 10)
        rows = equivariance_table(
            channels=channels, lmax=lmax, rotations=rotations, device=ctx.device, seed=ctx.seed, progress=ctx.progress
        )
        metrics: dict[str, float | int | str | bool] = {
            f"{row['component']} [{row['backend']}, {row['dtype']}]": row["error"] for row in rows
        }
        failed = [row for row in rows if not row["error"] < row["tolerance"]]
        worst = {
            dtype: max((row["error"] for row in rows if row["dtype"] == dtype), default=math.nan)
            for dtype in ("float64", "float32")
        }
        figure = _draw_equivariance(ctx, rows)
        names = list(dict.fromkeys(f"{row['component']} [{row['backend']}]" for row in rows))
        summary = (
            f"{len(names)} components and backends ({'; '.join(names)}), random parameters, {channels} channels, "
            f"degrees up to {lmax + 1}, {rotations} random rotations: the largest relative equivariance error is "
            f"{worst['float64']:.1e} in float64 (tolerance {EQUIVARIANCE_TOLERANCES[torch.float64]:g}) and "
            f"{worst['float32']:.1e} in float32 (tolerance {EQUIVARIANCE_TOLERANCES[torch.float32]:g})"
            + (f"; {len(failed)} above tolerance." if failed else "; all within tolerance.")
        )
        return DemoResult(
            title="Equivariance errors of the Gaunt modules under random rotations",
            summary=summary,
            metrics=metrics,
            figures=(figure,) if figure is not None else (),
            passed=bool(rows) and not failed,
        )


def _draw_equivariance(ctx: DemoContext, rows: Sequence[dict[str, Any]]) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    labels = sorted({f"{row['component']} [{row['backend']}]" for row in rows})
    figure = Figure(figsize=(9.0, 0.35 * len(labels) + 1.6), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    height = 0.4
    for offset, (dtype, color) in enumerate((("float64", "tab:blue"), ("float32", "tab:orange"))):
        values = {f"{r['component']} [{r['backend']}]": r["error"] for r in rows if r["dtype"] == dtype}
        positions = [i + (offset - 0.5) * height for i, label in enumerate(labels) if label in values]
        errors = [max(values[label], 1e-18) for label in labels if label in values]
        axes.barh(positions, errors, height=height, color=color, label=dtype)
        axes.axvline(EQUIVARIANCE_TOLERANCES[getattr(torch, dtype)], color=color, linestyle="--", linewidth=1)
    axes.set_xscale("log")
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel(r"relative equivariance error $\max|f(Dx) - Df(x)| / \max|f(x)|$ (dashed: tolerances)")
    axes.legend(loc="lower right")
    path = ctx.figure_path("gaunt-equivariance")
    figure.savefig(path)
    return path


def demos() -> list[Any]:
    """The demos of sciml-equivariant (entry point ``sciml.demos``).

    Example:
        >>> [d.name for d in demos()]
        ['gaunt-speed', 'gaunt-equivariance', 'lie-affine-invariance']
    """
    from ._affine_demo import AffineInvarianceDemo

    return [GauntSpeedDemo(), GauntEquivarianceDemo(), AffineInvarianceDemo()]
