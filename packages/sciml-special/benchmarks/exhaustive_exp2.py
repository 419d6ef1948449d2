"""Exhaustive accuracy check of ``sciml_special.exp2_evolved`` (a script, not a unit test).

    uv run python packages/sciml-special/benchmarks/exhaustive_exp2.py               # [0, 1) + full-range sample
    uv run python packages/sciml-special/benchmarks/exhaustive_exp2.py --negative    # also every float32 in [-1, 0)
    uv run python packages/sciml-special/benchmarks/exhaustive_exp2.py --torch       # also the torch path, bitwise

What it checks, all against ``np.exp2`` in float64 (whose own error, below 1e-16 relative, is negligible next to a
float32 ULP of 6e-8 relative; the worst point is re-checked with mpmath at 50 digits when mpmath is installed):

1. every float32 of the reduced domain [0, 1): 1,065,353,216 values, the bit patterns 0x00000000..0x3F7FFFFF,
   evaluated by ``exp2_evolved_numpy`` (the bit-exact numpy emulation of the shipped function; ``--torch`` also
   runs ``exp2_evolved(backend="torch")`` on every value and requires identical bits);
2. a dense sample of the whole float32 range: every ``--stride``-th bit pattern of all 2^32 (NaNs, infinities,
   subnormal inputs included), plus every float32 in [-151, -125] (subnormal results), in [127, 128.5] (overflow
   edge) and, with ``--negative``, in [-1, 0) (where the reduction ``x - floor(x)`` is inexact and corrected).

Numpy only, chunked and vectorised, chunks spread over ``--workers`` processes. On two cores [0, 1) takes a few
minutes. The exit status is 1 when any finite error reaches 1 ULP or a special value is wrong.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.pool
import sys
import time
from collections.abc import Iterator

import numpy as np

CHUNK = 1 << 22
ONE_BITS = 0x3F800000  # float32 1.0: the patterns below it are exactly the float32 values of [0, 1)


def _ranges(start: int, stop: int, step: int = 1) -> Iterator[tuple[int, int, int]]:
    span = CHUNK * step
    for low in range(start, stop, span):
        yield low, min(low + span, stop), step


def _float32_between(low: float, high: float) -> tuple[int, int]:
    """Bit-pattern range [a, b) of the float32 values in [low, high] (same-sign bounds)."""
    a = int(np.float32(low).view(np.uint32))
    b = int(np.float32(high).view(np.uint32))
    return (min(a, b), max(a, b) + 1)


def _check(task: tuple[int, int, int, bool]) -> dict[str, object]:
    low, high, step, with_torch = task
    from sciml_special._evolve._float32 import ulp_error
    from sciml_special._exp2 import exp2_evolved_numpy

    bits = np.arange(low, high, step, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    got = exp2_evolved_numpy(x)
    with np.errstate(over="ignore"):
        exact = np.exp2(x.astype(np.float64))
    finite = np.isfinite(x)
    error = np.where(finite, ulp_error(got, exact), 0.0)
    worst = int(np.argmax(error))
    nan_in = np.isnan(x)
    special_ok = bool(
        np.all(np.isnan(got[nan_in]))
        and np.all(got[x == np.inf] == np.inf)
        and np.all(got[x == -np.inf] == 0.0)
        and not np.any(np.isnan(got[~nan_in]))
    )
    torch_mismatches = 0
    if with_torch:
        import torch
        from sciml_special import exp2_evolved

        torch.set_num_threads(1)
        other = exp2_evolved(torch.from_numpy(x.copy()), backend="torch").numpy()
        torch_mismatches = int(np.count_nonzero(other.view(np.uint32) != got.view(np.uint32)))
    return {
        "count": int(x.size),
        "max_ulp": float(error[worst]),
        "worst_bits": int(bits[worst]),
        "above_half": int(np.count_nonzero(error > 0.5)),
        "special_ok": special_ok,
        "torch_mismatches": torch_mismatches,
    }


def _run(name: str, tasks: list[tuple[int, int, int, bool]], pool: multiprocessing.pool.Pool) -> dict[str, object]:
    began = time.perf_counter()
    total = {"count": 0, "max_ulp": -1.0, "worst_bits": 0, "above_half": 0, "special_ok": True, "torch_mismatches": 0}
    for done, part in enumerate(pool.imap(_check, tasks), start=1):
        total["count"] += part["count"]  # type: ignore[operator]
        total["above_half"] += part["above_half"]  # type: ignore[operator]
        total["torch_mismatches"] += part["torch_mismatches"]  # type: ignore[operator]
        total["special_ok"] = total["special_ok"] and part["special_ok"]
        if part["max_ulp"] > total["max_ulp"]:  # type: ignore[operator]
            total["max_ulp"], total["worst_bits"] = part["max_ulp"], part["worst_bits"]
        if sys.stderr.isatty():
            print(f"\r{name}: {done}/{len(tasks)} chunks, max {total['max_ulp']:.6f} ULP", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    total["seconds"] = time.perf_counter() - began
    worst_x = np.array([total["worst_bits"]], dtype=np.uint32).view(np.float32)[0]
    total["worst_x"] = float(worst_x)
    print(
        f"{name}: {total['count']:,} values in {total['seconds']:.0f} s; max error {total['max_ulp']:.6f} ULP at "
        f"x = {float(worst_x)!r} (0x{total['worst_bits']:08X}); {total['above_half']:,} values above 0.5 ULP "
        f"(not correctly rounded); special values {'ok' if total['special_ok'] else 'WRONG'}"
        + (f"; torch path mismatches: {total['torch_mismatches']}" if tasks and tasks[0][3] else "")
    )
    return total


def _mpmath_check(x: float) -> None:
    try:
        import mpmath
    except ImportError:
        return
    from sciml_special._evolve._float32 import ulp_float32
    from sciml_special._exp2 import exp2_evolved_numpy

    mpmath.mp.dps = 50
    exact = mpmath.power(2, mpmath.mpf(x))
    got = float(exp2_evolved_numpy(np.float32(x)))
    ulp = float(ulp_float32(float(exact)))
    error = float(abs(mpmath.mpf(got) - exact) / ulp)
    print(f"  mpmath (50 digits) at x = {x!r}: exp2_evolved = {got!r}, 2^x = {mpmath.nstr(exact, 20)}, {error:.6f} ULP")


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps and print the results; 0 when every error is below one ULP."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stride", type=int, default=61, help="bit-pattern stride of the full-range sample")
    parser.add_argument("--negative", action="store_true", help="also every float32 in [-1, 0)")
    parser.add_argument("--torch", action="store_true", help="also run the torch path and compare bits")
    parser.add_argument("--skip-reduced", action="store_true", help="skip the [0, 1) sweep (quick runs)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    from sciml_special._exp2 import EXP2_PROGRAM

    print(f"program ({EXP2_PROGRAM.op_count} operations):\n{EXP2_PROGRAM}\n")
    results: dict[str, dict[str, object]] = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool:
        if not args.skip_reduced:
            tasks = [(*r, args.torch) for r in _ranges(0, ONE_BITS)]
            results["reduced [0, 1) exhaustive"] = _run("every float32 in [0, 1)", tasks, pool)
        sample = [(*r, args.torch) for r in _ranges(0, 1 << 32, args.stride)]
        results["full range sample"] = _run(f"one bit pattern in {args.stride}", sample, pool)
        edges = [_float32_between(-125.0, -151.0), _float32_between(127.0, 128.5)]
        edge_tasks = [(*r, args.torch) for a, b in edges for r in _ranges(a, b)]
        results["edges"] = _run("every float32 in [-151, -125] and [127, 128.5]", edge_tasks, pool)
        if args.negative:
            a, b = _float32_between(-0.0, -1.0)
            results["negative [-1, 0) exhaustive"] = _run(
                "every float32 in [-1, 0)", [(*r, args.torch) for r in _ranges(a + 1, b)], pool
            )
    for total in results.values():
        if total["max_ulp"] >= 0.5:  # type: ignore[operator]
            _mpmath_check(total["worst_x"])  # type: ignore[arg-type]
    failed = any(
        t["max_ulp"] >= 1.0 or not t["special_ok"] or t["torch_mismatches"]  # type: ignore[operator]
        for t in results.values()
    )
    print("PASS: every error below 1 ULP" if not failed else "FAIL")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
