"""Time and peak memory of entropic OT between point clouds: sciml-ot against POT and GeomLoss, n = 1e3 ... 1e5.

Every (method, n) runs in its own Python process, so the peak resident memory it reports belongs to that solve alone:
the child resets the kernel's high-water mark (``/proc/self/clear_refs``) after imports and data generation and reads
``VmHWM`` after the solve. The problem: two uniform clouds of ``n`` points in the unit square, squared Euclidean cost,
uniform weights, ``eps = 0.05``, float64.

- ours: ``sciml_ot.sinkhorn`` on a ``PointCloudCost`` (cost recomputed tile by tile), marginal tolerance 1e-8;
- POT: ``ot.sinkhorn(method="sinkhorn_log")`` on the dense cost matrix, same tolerance;
- GeomLoss 0.3.1: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps), debias=False, potentials=True)``, tensorized backend
  (KeOps is not installed here), points scaled by sqrt(2) so that its cost |x - y|^2 / 2 equals ours; it anneals eps
  with ``scaling`` and stops after a fixed schedule instead of a tolerance, so its marginal error is reported too.

Sizes whose dense n x n matrices would not fit are skipped for POT and GeomLoss (reported as such). For the largest
sizes ours runs a fixed number of iterations (``--max-iter-large``) and the time per iteration is reported.

Usage::

    uv run python packages/sciml-ot/benchmarks/bench_scaling.py --sizes 1000 10000 100000 --out scaling.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

EPS = 0.05
TOL = 1e-8
DENSE_LIMIT_BYTES = 6e9  # skip the dense peers when a single n x n float64 matrix exceeds a quarter of this


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _marginal_error(x, y, a, f, g):  # pyright: ignore[reportMissingParameterType]
    """L1 row and column marginal errors of P_ij = a_i a_j exp((f_i + g_j - |x_i - y_j|^2)/eps), computed in tiles."""
    import torch

    n = x.shape[0]
    row = torch.zeros(n, dtype=torch.float64)
    col = torch.zeros(n, dtype=torch.float64)
    for i0 in range(0, n, 2048):
        c = torch.cdist(x[i0 : i0 + 2048], y) ** 2
        p = a[i0 : i0 + 2048, None] * a[None, :] * torch.exp((f[i0 : i0 + 2048, None] + g[None, :] - c) / EPS)
        row[i0 : i0 + 2048] = p.sum(1)
        col += p.sum(0)
    return float((row - a).abs().sum() + (col - a).abs().sum())


def child(method: str, n: int, max_iter_large: int, threads: int) -> dict[str, object]:
    """Solve one problem in this process and return its time, peak memory and accuracy."""
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    y = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    out: dict[str, object] = {"method": method, "n": n}
    large = n > 20_000
    if method == "ours":
        from sciml_ot import PointCloudCost, sinkhorn

        cost = PointCloudCost(x, y)
        sinkhorn(a[:10], a[:10], PointCloudCost(x[:10], y[:10]), eps=EPS)  # first-call overheads (lazy imports)
        max_iter = max_iter_large if large else 10_000
        _reset_peak()
        base = _vm("VmRSS")
        t0 = time.perf_counter()
        res = sinkhorn(a, a, cost, eps=EPS, tol=TOL, max_iter=max_iter)
        seconds = time.perf_counter() - t0
        out.update(
            seconds=seconds,
            peak_mib=_vm("VmHWM") - base,
            iterations=int(res.n_iter),
            converged=bool(res.converged),
            marginal_error=float(res.marginal_error),
            objective=float(res.objective),
        )
    elif method == "pot":
        import ot

        M = (torch.cdist(x, y) ** 2).numpy()
        _reset_peak()
        base = _vm("VmRSS") - M.nbytes / 2**20  # count the dense cost matrix POT needs as its memory
        t0 = time.perf_counter()
        # POT stops on the L2 norm of the column-marginal error; TOL / sqrt(n) there guarantees L1 <= TOL as ours.
        P, log = ot.sinkhorn(a.numpy(), a.numpy(), M, EPS, method="sinkhorn_log", numItermax=10_000,
                             stopThr=TOL / math.sqrt(n), log=True)  # fmt: skip
        seconds = time.perf_counter() - t0
        Pt = torch.from_numpy(P)
        kl = float((Pt * (torch.log(Pt.clamp_min(1e-300)) - math.log(1.0 / n**2))).sum())
        out.update(
            seconds=seconds,
            peak_mib=_vm("VmHWM") - base,
            iterations=int(log["niter"]),  # pyright: ignore[reportArgumentType]
            marginal_error=float((Pt.sum(1) - a).abs().sum() + (Pt.sum(0) - a).abs().sum()),
            objective=float((Pt * torch.from_numpy(M)).sum()) + EPS * kl,
        )
    elif method == "geomloss":
        from geomloss import SamplesLoss

        loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(EPS), debias=False, potentials=True, scaling=0.9,
                           backend="tensorized")  # fmt: skip
        s = math.sqrt(2.0)
        _reset_peak()
        base = _vm("VmRSS")
        t0 = time.perf_counter()
        F, G = loss(a, s * x, a, s * y)
        seconds = time.perf_counter() - t0
        peak = _vm("VmHWM") - base
        F, G = F.reshape(-1), G.reshape(-1)
        out.update(
            seconds=seconds,
            peak_mib=peak,
            marginal_error=_marginal_error(x, y, a, F, G),
            objective=float((a * F).sum() + (a * G).sum()),
        )
    else:
        raise ValueError(method)
    return out


def main() -> None:
    """Run every (method, size) in its own process and print one JSON line each."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["ours", "pot", "geomloss"])
    parser.add_argument("--max-iter-large", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        method, size = args.child
        print(json.dumps(child(str(method), int(size), args.max_iter_large, args.threads)))
        return
    rows = []
    for n in args.sizes:
        for method in args.methods:
            if method != "ours" and n * n * 8 > DENSE_LIMIT_BYTES / 4:
                need = f"dense n x n float64 needs {n * n * 8 / 1e9:.0f} GB"
                rows.append({"method": method, "n": n, "skipped": need})
                print(json.dumps(rows[-1]), flush=True)
                continue
            cmd = [sys.executable, __file__, "--child", method, str(n), "--max-iter-large", str(args.max_iter_large),
                   "--threads", str(args.threads)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append({"method": method, "n": n, "failed": proc.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
