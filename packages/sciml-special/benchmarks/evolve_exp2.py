r"""The search runs that produced the two programs of ``sciml_special.exp2_evolved`` (a script, not a unit test).

    uv run python packages/sciml-special/benchmarks/evolve_exp2.py --part positive   # p(f) ~ 2^f on [0, 1]
    uv run python packages/sciml-special/benchmarks/evolve_exp2.py --part negative   # q(x) ~ 2^x on [-1/2, 0]
    uv run python packages/sciml-special/benchmarks/evolve_exp2.py --part positive --generations 20   # a quick look

``exp2_evolved`` computes :math:`2^{\lfloor x \rfloor} p(x - \lfloor x \rfloor)` with the main program ``p`` on
[0, 1); for x in (-1/2, 0), where ``x - floor(x) = 1 + x`` is not exact in float32, it uses ``q(x)`` directly
(see ``_exp2.py``). Each part:

1. ``evolve(np.exp2, domain, ...)``: AutoNumerics-Zero from random one-operation programs ("from empty code"):
   NSGA-II over (max float32 ULP error on the training points, operation count), one mutation per child, constants
   fitted by a least-squares/minimax refit plus CMA-ES, children fitted in a local process pool. Nothing about
   polynomials or Horner's rule is given to it.
2. Polish: the constants of each front member are refitted by ``fit_constants`` on a larger set of points
   (``--polish-points`` stratified random points of the domain plus the ``--polish-points`` float32 values nearest
   each end), because the maximum over a 2048-point training set underestimates the maximum over every float32.
3. Choose: the member with the fewest operations whose maximum error over ``--check-points`` random float32 values
   of the domain plus the 65536 float32 values nearest each end is below ``--margin`` ULP. Print it as a spec for
   ``_exp2.py`` and as Triton source for ``_kernels/exp2.py``.

The exhaustive check over every float32 of the domains is ``benchmarks/exhaustive_exp2.py``.

Recorded runs (2 CPU cores shared with other jobs; the shipped constants in ``_exp2.py`` are their output):

* ``--part positive``: 250 generations, 12,048 programs fitted in 5,408 s. Final front (ops: training / validation
  max ULP): 0: 4.19e6, 1: 3.61e5, 2: 2.07e4, 3: 897, 4: 32.7 / 33.0, 5: 1.50 / 1.88, 6: 0.712 / 0.798 -- the
  members are Horner polynomials of rising degree, found without being told. The front was saved with ``--json``
  and the polish/choose steps re-run with ``--front-from`` (20 s; the run itself used an earlier revision of this
  script whose search step is the same): 6 FMAs, 0.877 ULP on the check points.
* ``--part negative``: 100 generations, 2,424 programs fitted in 442 s. Front: 3: 69.0, 4: 2.13 / 2.14,
  5: 0.693 / 0.747. Chosen after polishing: 5 FMAs, 0.781 ULP on the check points.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from sciml_special._evolve import Program, evolve, fit_constants, max_ulp_error

# The configurations of the recorded runs (whose results are shipped in _exp2.py).
RECORDED = {
    "positive": {
        "low": 0.0,
        "high": 1.0,
        "seed": 0,
        "population": 48,
        "generations": 250,
        "max_ops": 10,
    },
    "negative": {
        "low": -0.5,
        "high": 0.0,
        "seed": 0,
        "population": 24,
        "generations": 100,
        "max_ops": 8,
        "workers": 1,
    },
}
COMMON = {
    "train_points": 2048,
    "validation_points": 10_000,
    "fit_generations": 100,
    "workers": 2,
    "polish_points": 1 << 15,
    "polish_generations": 300,
    "check_points": 1 << 22,
    "margin": 0.95,
}


def _ends(low: float, high: float, count: int) -> np.ndarray:
    """The ``count`` float32 values of [low, high) nearest each end (where rounding errors tend to peak)."""
    up = _walk(np.float32(low), count, towards=np.float32(high))
    down = _walk(np.float32(high), count + 1, towards=np.float32(low))[1:]  # the domain is half-open at high
    return np.concatenate([up, down])


def _walk(start: np.float32, count: int, towards: np.float32) -> np.ndarray:
    values = np.empty(count, dtype=np.float32)
    value = start
    for index in range(count):
        values[index] = value
        value = np.nextafter(value, towards)
    return values


def main(argv: list[str] | None = None) -> int:
    """Run one part (search, polish, choose) and print the chosen program; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=sorted(RECORDED), required=True)
    for name, value in {**COMMON, **RECORDED["positive"]}.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None)
    parser.add_argument("--json", help="write the front and the choice to this file")
    parser.add_argument("--front-from", help="skip the search: polish and choose from the front of a --json file")
    args = parser.parse_args(argv)
    config = {**COMMON, **RECORDED[args.part]}
    config.update({k: v for k, v in vars(args).items() if k in config and v is not None})
    low, high = config["low"], config["high"]
    print(f"part {args.part}: {config}")

    began = time.perf_counter()
    history: list[float] = []
    if args.front_from:
        with open(args.front_from) as handle:
            recorded = json.load(handle)
        front = [Program.from_spec([tuple(entry) for entry in c["spec"]]) for c in recorded["front"]]
        validation = [c["validation_ulp"] for c in recorded["front"]]
        search_seconds = recorded["search_seconds"]
        print(f"front read from {args.front_from} (search took {search_seconds:.0f} s)")
    else:
        with ProcessPoolExecutor(config["workers"], mp_context=multiprocessing.get_context("spawn")) as pool:
            result = evolve(
                np.exp2,
                (low, high),
                population=config["population"],
                generations=config["generations"],
                executor=pool,
                seed=config["seed"],
                progress=sys.stderr.isatty(),
                max_ops=config["max_ops"],
                train_points=config["train_points"],
                validation_points=config["validation_points"],
                fit_generations=config["fit_generations"],
            )
        search_seconds = time.perf_counter() - began
        print(f"search: {search_seconds:.0f} s, {result.stats['evaluations']} programs fitted")
        print(f"{'ops':>4} {'train ULP':>10} {'valid ULP':>10}")
        for candidate in result.value:
            print(f"{candidate.ops:>4} {candidate.train_ulp:>10.4f} {candidate.validation_ulp:>10.4f}")
        history = result.history.tolist() if result.history is not None else []
        print("best training error every 10 generations:", [round(v, 4) for v in history[::10]])
        front = [c.program for c in result.value]
        validation = [c.validation_ulp for c in result.value]
        recorded = {
            "front": [
                {
                    "ops": c.ops,
                    "train_ulp": c.train_ulp,
                    "validation_ulp": c.validation_ulp,
                    "spec": c.program.to_spec(),
                }
                for c in result.value
            ]
        }

    rng = np.random.default_rng([config["seed"], 2])
    points = config["polish_points"]
    cells = low + (high - low) * (np.arange(points) + rng.random(points)) / points
    polish_x = np.unique(np.concatenate([cells.astype(np.float32), _ends(low, high, points)]))
    polish_x = polish_x[(polish_x >= low) & (polish_x <= high)]
    polish_y = np.exp2(polish_x.astype(np.float64))
    check_x = np.concatenate(
        [(low + (high - low) * rng.random(config["check_points"])).astype(np.float32), _ends(low, high, 1 << 16)]
    )
    check_x = check_x[(check_x >= low) & (check_x < high)]
    check_y = np.exp2(check_x.astype(np.float64))
    polished = []
    for program, validation_ulp in zip(front, validation, strict=True):
        if validation_ulp > 4:
            continue
        program = fit_constants(
            program, polish_x, polish_y, generations=config["polish_generations"], seed=config["seed"]
        )
        check = max_ulp_error(program.evaluate(check_x), check_y)
        polished.append((program.op_count, check, program))
        print(f"polished {program.op_count} ops: {check:.4f} ULP on {check_x.size} check points")
    good = [entry for entry in polished if entry[1] < config["margin"]]
    if not good:
        print(f"no program below {config['margin']} ULP; run longer (--generations) or with a larger population")
        return 1
    ops, check, program = min(good, key=lambda entry: (entry[0], entry[1]))
    total = time.perf_counter() - began
    print(f"\nchosen: {ops} ops, {check:.4f} ULP on the check points; total {total:.0f} s\n")
    print(program)
    print("\nspec = (")
    for entry in program.to_spec():
        print(f"    {entry!r},")
    print(")\n")
    print(program.to_triton_source())
    if args.json:
        record = {
            "part": args.part,
            "config": config,
            "search_seconds": search_seconds,
            "total_seconds": total,
            "history": history,
            "front": recorded["front"],
            "chosen": {"ops": ops, "check_ulp": check, "spec": program.to_spec()},
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
