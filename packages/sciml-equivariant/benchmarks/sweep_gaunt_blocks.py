"""Block-size sweep of the fused grid Gaunt kernel on a GPU: which launch configuration is fastest per degree.

Run on a CUDA machine from the repository root (sources on ``PYTHONPATH``)::

    python packages/sciml-equivariant/benchmarks/sweep_gaunt_blocks.py OUT.json

For L = 6, 10, 16 (inputs and output of degree L; batch 256 x 128 channels = 32768 rows, float32) it times the
forward kernel (``_kernels.gaunt_grid.launch``, median of CUDA-event timings) for each configuration of
``_CUDA_CONFIG`` (rows per program x grid points per chunk with 4 warps in IEEE float32; then 8 warps and TF32 for
the default), next to the three cuBLAS products of the reference, and checks each result against the float64
reference. Each line is printed as soon as it is measured.
"""

# ruff: noqa: B023  (the closures run inside the loop iteration that defines them)
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
from sciml_protocols import measure_time


def main(out: Path) -> None:
    """Run the sweep, print the summary table and write every record as JSON to ``out``."""
    from sciml_equivariant._gaunt import GauntPlan
    from sciml_equivariant._kernels import gaunt_grid as kern

    device = torch.device("cuda")
    default = dict(kern._CUDA_CONFIG)
    records = []
    for degree in (6, 10, 16):
        plan = GauntPlan(degree, degree, degree, backend="grid", dtype=torch.float64, device=device)
        y1t, y2t, yout = plan._tensors
        bx64, by64, w64 = y1t.T.contiguous(), y2t.T.contiguous(), yout.contiguous()
        bx, by, w = bx64.float(), by64.float(), w64.float()
        rows, k = 256 * 128, (degree + 1) ** 2
        x64 = torch.randn(rows, k, device=device, dtype=torch.float64)
        y64 = torch.randn(rows, k, device=device, dtype=torch.float64)
        ref = ((x64 @ bx64.T) * (y64 @ by64.T)) @ w64
        scale = float(ref.abs().max())
        x, y = x64.float(), y64.float()
        cublas_ms = 1e3 * measure_time(
            lambda: ((x @ bx.T) * (y @ by.T)) @ w, device="cuda", min_run_time=0.05, warmup=3, max_repeats=20
        )
        records.append({"L": degree, "grid": int(w.shape[0]), "variant": "cublas-3-matmul", "ms": cublas_ms})
        print(f"L={degree} grid={int(w.shape[0])} cublas {cublas_ms:.3f} ms", flush=True)
        variants = [(bn, bg, 4, False) for bn, bg in itertools.product((32, 64, 128), (16, 32, 64))]
        variants += [
            (default["block_n"], default["block_g"], 8, False),
            (default["block_n"], default["block_g"], 4, True),
        ]
        for block_n, block_g, warps, tf32 in variants:
            kern._CUDA_CONFIG.update(block_n=block_n, block_g=block_g, num_warps=warps)
            try:
                got = kern.launch(x, y, bx, by, w, allow_tf32=tf32)
                err = float((got.double() - ref).abs().max()) / scale
                ms = 1e3 * measure_time(
                    lambda tf32=tf32: kern.launch(x, y, bx, by, w, allow_tf32=tf32),
                    device="cuda",
                    min_run_time=0.05,
                    warmup=3,
                    max_repeats=20,
                )
            except Exception as error:
                err, ms = float("nan"), float("nan")
                print("failed", degree, block_n, block_g, warps, tf32, repr(error)[:200], flush=True)
            print(
                f"  block_n={block_n} block_g={block_g} warps={warps} tf32={tf32}: {ms:.3f} ms err {err:.1e}",
                flush=True,
            )
            records.append(
                {"L": degree, "grid": int(w.shape[0]), "variant": "triton", "block_n": block_n, "block_g": block_g,
                 "num_warps": warps, "tf32": tf32, "ms": ms, "rel_err": err}
            )  # fmt: skip
        kern._CUDA_CONFIG.clear()
        kern._CUDA_CONFIG.update(default)
    print(f"device: {torch.cuda.get_device_name(0)}; default {default}")
    for degree in (6, 10, 16):
        rows = [r for r in records if r["L"] == degree]
        cub = next(r for r in rows if r["variant"] == "cublas-3-matmul")
        tri = [r for r in rows if r["variant"] == "triton" and r["ms"] == r["ms"]]
        base = next(
            r for r in tri
            if (r["block_n"], r["block_g"], r["num_warps"], r["tf32"])
            == (default["block_n"], default["block_g"], default["num_warps"], False)
        )  # fmt: skip
        print(f"L={degree} grid={cub['grid']}: cublas {cub['ms']:.3f} ms; default triton {base['ms']:.3f} ms "
              f"(err {base['rel_err']:.1e})")  # fmt: skip
        for tf32 in (False, True):
            cands = [r for r in tri if r["tf32"] == tf32]
            if cands:
                best = min(cands, key=lambda r: r["ms"])
                print(f"   best tf32={tf32}: {best['ms']:.3f} ms block_n={best['block_n']} block_g={best['block_g']} "
                      f"warps={best['num_warps']} err {best['rel_err']:.1e}")  # fmt: skip
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "records": records}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gaunt-blocks.json"))
