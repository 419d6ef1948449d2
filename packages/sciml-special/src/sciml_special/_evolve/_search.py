r"""The search driver: evolve straight-line float32 programs that approximate a function (AutoNumerics-Zero).

Each generation, parents chosen by binary tournament (crowded comparison) are mutated once
(:mod:`~sciml_special._evolve._mutations`); every child's constants are fitted with CMA-ES
(:mod:`~sciml_special._evolve._cmaes`) and the child is scored by two objectives, both minimised:

* the maximum error in float32 ULPs against a float64 oracle on a fixed training set (1024 points by default),
  computed with exactly emulated float32 arithmetic;
* the number of operations (add, mult, fma).

Parents and children together are ranked by NSGA-II (:mod:`~sciml_special._evolve._nsga2`) and the best
``population`` survive. Constants are fitted in three phases (:func:`fit_constants`): a damped Gauss-Newton refit
towards the minimax constants of the real-number program (:func:`lawson_refit`, cheap and derivative based, a warm
start that plain CMA-ES on a maximum reaches only slowly), CMA-ES on the real-number maximum error, then CMA-ES on
the float32 maximum error itself (the paper's fitness) with steps of a few float32 ULPs; the best of the parent's
constants and the three phases is kept (constants are inherited, so fits accumulate over generations).

Children are fitted through any :class:`concurrent.futures.Executor` (one task per child, submitted and collected in
order, each with its own seed drawn from the run's generator), so the result depends only on ``seed``, never on the
executor or the number of workers.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from sciml_protocols import SciMLError, SciMLInputError, Solution

from ._cmaes import cma_es
from ._float32 import max_ulp_error, ulp_float32
from ._mutations import mutate, random_program
from ._nsga2 import non_dominated_sort, nsga2_order, tournament
from ._program import Program

__all__ = ["Candidate", "evolve", "fit_constants", "lawson_refit"]

_REAL_ERROR_GOAL = 0.01  # ULPs: below this the real-number phase stops; float32 rounding dominates from there


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A scored program of the search.

    Attributes:
        program: the program with its fitted constants.
        train_ulp: maximum float32 ULP error on the training points (the error objective).
        validation_ulp: maximum float32 ULP error on the validation points (held out, reported only).
        ops: number of operations (the cost objective).
    """

    program: Program
    train_ulp: float
    validation_ulp: float

    @property
    def ops(self) -> int:
        """Number of add, mult and fma operations of :attr:`program`."""
        return self.program.op_count

    def __repr__(self) -> str:
        return f"Candidate(ops={self.ops}, train_ulp={self.train_ulp:.4g}, validation_ulp={self.validation_ulp:.4g})"


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What a fitting task needs (picklable: arrays, not the user's target callable)."""

    train_x: npt.NDArray[np.float32]
    train_y: npt.NDArray[np.float64]
    validation_x: npt.NDArray[np.float32]
    validation_y: npt.NDArray[np.float64]
    fit_generations: int


def lawson_refit(
    program: Program,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    powers: Sequence[float] = (2, 4, 8, 16, 32, 64, 128),
    iterations: int = 8,
) -> npt.NDArray[np.float64]:
    r"""Near-minimax constants of the real-number program by damped Gauss-Newton on growing :math:`L^p` norms.

    With residuals :math:`r_i(c) = (\hat f_c(x_i) - y_i) / \operatorname{ulp}(y_i)`, each stage minimises
    :math:`\lVert r \rVert_p` by iteratively reweighted least squares (weights :math:`|r_i|^{p-2}`, a
    Levenberg-Marquardt step on the linearisation from :meth:`Program.jacobian_exact`, accepted only when the norm
    decreases); :math:`p` doubles from 2 (least squares) towards the maximum norm. It is the cheap warm start of
    :func:`fit_constants`: a few dozen Jacobians instead of thousands of CMA-ES samples.

    Args:
        program: the program; its constants are the starting point.
        x: the points, shape ``(N,)``.
        y: exact values, shape ``(N,)``.
        powers: the sequence of norms.
        iterations: Gauss-Newton steps per norm.

    Returns:
        The constants, shape ``(K,)`` (float64, not yet rounded to float32).

    Example:
        >>> x = np.linspace(0.0, 1.0, 256)
        >>> c = lawson_refit(Program.from_spec([("fma", 0, 0.1, 0.1)]), x, np.exp2(x))
        >>> np.round(c, 3).tolist()  # the minimax line through 2^x on [0, 1], in relative terms
        [1.0, 0.957]
    """
    points = np.asarray(x, dtype=np.float64).reshape(-1)
    exact = np.asarray(y, dtype=np.float64).reshape(-1)
    constants = program.constants.astype(np.float64)
    k = constants.size
    if k == 0:
        return constants
    ulp = ulp_float32(exact)

    def norm(residual: np.ndarray, power: float) -> float:
        largest = float(np.max(np.abs(residual)))
        if not math.isfinite(largest):
            return math.inf
        if largest == 0:
            return 0.0
        return largest * float(np.mean((np.abs(residual) / largest) ** power)) ** (1 / power)

    def residual_of(candidate: np.ndarray) -> np.ndarray:
        values, _ = program.jacobian_exact(points, candidate)
        return (values - exact) / ulp

    with np.errstate(all="ignore"):
        for power in powers:
            damping = 1e-3
            for _ in range(iterations):
                values, jacobian = program.jacobian_exact(points, constants)
                residual = (values - exact) / ulp
                current = norm(residual, power)
                if not math.isfinite(current) or not np.all(np.isfinite(jacobian)) or current == 0:
                    break
                magnitude = np.abs(residual)
                weight = np.sqrt((magnitude / magnitude.max()) ** (power - 2))
                design = jacobian / ulp[:, None] * weight[:, None]
                column = np.sqrt(np.sum(design**2, axis=0)) + 1e-300
                improved = False
                for _ in range(12):
                    system = np.vstack([design / column, math.sqrt(damping) * np.eye(k)])
                    right = np.concatenate([-residual * weight, np.zeros(k)])
                    try:
                        step = np.linalg.lstsq(system, right, rcond=None)[0] / column
                    except np.linalg.LinAlgError:
                        break
                    trial = constants + step
                    if np.all(np.isfinite(trial)) and norm(residual_of(trial), power) < current:
                        constants, damping, improved = trial, max(damping / 10, 1e-12), True
                        break
                    damping *= 10
                if not improved:
                    break
    return constants


def fit_constants(
    program: Program,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    generations: int = 150,
    seed: int | np.random.Generator = 0,
) -> Program:
    """Fit a program's constants to minimise its maximum float32 ULP error on the points ``(x, y)``.

    Three phases, each starting from the previous one's result:

    1. :func:`lawson_refit`: near-minimax constants of the real-number program (cheap, derivative based);
    2. CMA-ES on the maximum error of the real-number program (float64 evaluation), relative steps of 1%;
    3. CMA-ES on the maximum error of the float32 program (the paper's fitness), steps of a few float32 ULPs of
       each constant.

    The best of the current constants and the three phases, by float32 error, is returned, so a fit never makes a
    program worse on these points.

    Args:
        program: the program; its constants are the starting point.
        x: the points (cast to float32).
        y: the exact values (float64), same shape as ``x``.
        generations: CMA-ES generations of phase 2 (phase 3 gets as many).
        seed: integer seed or numpy generator.

    Returns:
        The program with fitted constants.

    Example:
        >>> x = np.linspace(0, 1, 64, dtype=np.float32)
        >>> start = Program.from_spec([("fma", 0, 0.5, 0.5)])
        >>> fitted = fit_constants(start, x, 3.0 * x.astype(np.float64) + 1.0, seed=0)
        >>> fitted.constants.tolist()
        [3.0, 1.0]
    """
    points = np.asarray(x, dtype=np.float32).reshape(-1)
    exact = np.asarray(y, dtype=np.float64).reshape(-1)
    if exact.shape != points.shape:
        raise SciMLInputError("y", f"must have the shape of x {points.shape}, got {exact.shape}")
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise SciMLInputError("generations", f"must be a positive int, got {generations!r}")
    start = program.constants.astype(np.float64)
    if start.size == 0:
        return program
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ulp = ulp_float32(exact)

    def real_error(constants: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            error = np.abs(program.evaluate_exact(points, constants=constants) - exact) / ulp
        return np.where(np.isnan(error), np.inf, error).max(axis=-1)

    def float32_error(constants: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            error = np.abs(program.evaluate(points, constants=constants).astype(np.float64) - exact) / ulp
        return np.where(np.isnan(error), np.inf, error).max(axis=-1)

    def finite_float32(values: np.ndarray) -> np.ndarray:
        return np.clip(np.nan_to_num(values, nan=0.0), -3e38, 3e38)

    options = [start]
    refit = finite_float32(lawson_refit(program, points, exact))
    options.append(refit)
    real = cma_es(
        real_error,
        refit,
        0.01,
        scales=np.maximum(np.abs(refit), 2.0**-12),
        max_generations=generations,
        stop_value=_REAL_ERROR_GOAL,
        seed=rng,
    )
    warm = finite_float32(real.value)
    options.append(warm)
    rounded = cma_es(
        float32_error,
        warm,
        2.0,
        scales=np.maximum(np.abs(warm), 2.0**-40) * 2.0**-23,
        max_generations=generations,
        seed=rng,
    )
    options.append(finite_float32(rounded.value))
    errors = [float(float32_error(option[None, :])[0]) for option in options]
    return program.with_constants(options[int(np.argmin(errors))])


def _fit_and_score(program: Program, seed: int, problem: _Problem) -> Candidate:
    """One task: fit the constants of a child and score it (module level, so process pools can pickle it)."""
    fitted = fit_constants(
        program, problem.train_x, problem.train_y, generations=problem.fit_generations, seed=np.random.default_rng(seed)
    )
    return Candidate(
        program=fitted,
        train_ulp=max_ulp_error(fitted.evaluate(problem.train_x), problem.train_y),
        validation_ulp=max_ulp_error(fitted.evaluate(problem.validation_x), problem.validation_y),
    )


def _objectives(candidates: Sequence[Candidate]) -> np.ndarray:
    # log2 keeps crowding distances meaningful across error scales; clipping makes failed (inf) programs finite.
    error = np.log2(np.clip([c.train_ulp for c in candidates], 2.0**-30, 2.0**100))
    return np.column_stack([error, [c.ops for c in candidates]]).astype(np.float64)


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise SciMLInputError(name, f"must be an int >= {minimum}, got {value!r}")
    return int(value)


def _target_values(target: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    try:
        values = np.asarray(target(x.astype(np.float64)), dtype=np.float64)
    except Exception as error:
        raise SciMLInputError("target", f"failed on float64 points of the domain: {error!r}") from error
    if values.shape != x.shape:
        raise SciMLInputError("target", f"must return one value per point, shape {x.shape}; got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise SciMLInputError("target", "returned NaN or infinite values on the domain")
    return values


class _InProcess:
    """Runs tasks immediately in the calling thread (the default when no executor is given)."""

    def map_in_order(self, tasks: list[tuple[Program, int]], problem: _Problem) -> list[Candidate]:
        return [_fit_and_score(program, seed, problem) for program, seed in tasks]


class _Through:
    """Submits every task to an executor and collects the results in submission order."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def map_in_order(self, tasks: list[tuple[Program, int]], problem: _Problem) -> list[Candidate]:
        futures = [self.executor.submit(_fit_and_score, program, seed, problem) for program, seed in tasks]
        return [future.result() for future in futures]


def evolve(
    target: Callable[[np.ndarray], Any],
    domain: tuple[float, float],
    *,
    population: int = 32,
    generations: int = 50,
    offspring: int | None = None,
    executor: Executor | Literal["process"] | None = None,
    seed: int = 0,
    progress: bool = False,
    max_ops: int = 12,
    train_points: int = 1024,
    validation_points: int = 10_000,
    fit_generations: int = 150,
    initial: Sequence[Program] | None = None,
    target_ulp: float = 1.0,
) -> Solution[tuple[Candidate, ...]]:
    r"""Evolve float32 straight-line programs approximating ``target`` on ``domain`` (AutoNumerics-Zero).

    Multi-objective evolution over (maximum float32 ULP error, operation count) with NSGA-II survival, one mutation
    per child (insert / remove a vertex, switch an edge, re-randomize a constant; retried until the function
    changes) and CMA-ES constant fitting. The error of a program :math:`\hat f` is

    .. math:: E(\hat f) = \max_{x \in X} \frac{|\hat f(x) - f(x)|}{\operatorname{ulp}_{32}(f(x))}

    over the training set :math:`X` (``train_points`` float32 points: both ends of the closed domain and one
    uniformly random point in each cell of an even grid), with
    :math:`f` the float64 oracle and :math:`\hat f` evaluated in exactly emulated float32 arithmetic.

    Args:
        target: the oracle, a numpy function of a float64 array returning float64 values of the same shape (for
            example ``np.exp2``). It is evaluated once, in the calling process, on the training and validation
            points.
        domain: ``(low, high)``, finite, ``low < high``.
        population: survivors per generation (NSGA-II's :math:`\mu`), at least 2.
        generations: number of generations (0 only scores the initial population).
        offspring: children per generation (:math:`\lambda`); default ``population``.
        executor: where children are fitted: ``None`` runs them in this process; any
            :class:`concurrent.futures.Executor` (thread or process pool, or a Ray or Dask executor) runs one task
            per child; ``"process"`` starts a local :class:`~concurrent.futures.ProcessPoolExecutor` (spawned
            workers) for the duration of the call. The result does not depend on this choice.
        seed: seed of everything random (initial programs, mutations, fits, validation points).
        progress: show a tqdm progress bar (needs ``tqdm``, the ``progress`` extra).
        max_ops: largest operation count a program may reach.
        train_points: size of the training set (the paper uses 1024).
        validation_points: number of uniformly random float32 validation points (reported, not selected on).
        fit_generations: CMA-ES generations of each of the two CMA-ES phases of a fit (:func:`fit_constants`).
        initial: starting programs (the population is filled up with their mutations); default: random
            one-operation programs ("from empty code", as in the paper).
        target_ulp: the accuracy goal: ``converged`` tells whether a program of the final front reaches a
            validation error below it.

    Returns:
        A :class:`~sciml_protocols.Solution` whose ``value`` is the Pareto front of the final population (tuple of
        :class:`Candidate`, mutually non-dominated in (train error, ops), by increasing operation count);
        ``converged``: some front member has ``validation_ulp < target_ulp``; ``residual``: the smallest validation
        error on the front; ``n_iter``: generations run; ``history``: the best training error after each
        generation (shape ``(generations + 1,)``); ``stats``: ``population`` (all survivors), ``evaluations``,
        ``elapsed_s``, the configuration and the points (``train_x``, ``validation_x``).

    Raises:
        SciMLInputError: for a bad domain, counts, executor, initial programs or a target that fails or returns
            non-finite values.

    Example:
        >>> result = evolve(np.exp2, (0.0, 1.0), population=6, generations=3, fit_generations=20,
        ...                 train_points=64, validation_points=256, seed=0)
        >>> front = result.value
        >>> all(a.ops < b.ops and a.train_ulp > b.train_ulp for a, b in zip(front, front[1:]))
        True

    References:
        E. Real, Y. Chen, M. Rossini, C. de Souza, M. Garg, A. Verghese, M. Firsching, Q. V. Le, E. D. Cubuk,
        D. H. Park, "AutoNumerics-Zero: Automated Discovery of State-of-the-Art Mathematical Functions",
        arXiv:2312.08472 (2023). K. Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II",
        IEEE TEVC 6(2), 2002. N. Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (2016).
    """
    if not callable(target):
        raise SciMLInputError("target", f"must be callable, got {type(target).__name__}")
    if not isinstance(domain, tuple | list) or len(domain) != 2:
        raise SciMLInputError("domain", f"must be a pair (low, high), got {domain!r}")
    try:
        low, high = float(domain[0]), float(domain[1])
    except (TypeError, ValueError):
        raise SciMLInputError("domain", f"must hold two real numbers, got {domain!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise SciMLInputError("domain", f"must be finite with low < high, got {domain!r}")
    if float(np.float32(low)) == float(np.float32(high)):
        raise SciMLInputError("domain", "holds a single float32 value")
    population = _positive_int("population", population, minimum=2)
    generations = _positive_int("generations", generations, minimum=0)
    offspring = population if offspring is None else _positive_int("offspring", offspring)
    max_ops = _positive_int("max_ops", max_ops)
    train_points = _positive_int("train_points", train_points, minimum=2)
    validation_points = _positive_int("validation_points", validation_points)
    fit_generations = _positive_int("fit_generations", fit_generations)
    seed = _positive_int("seed", seed, minimum=0)
    if not isinstance(progress, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("progress", f"must be a bool, got {progress!r}")
    if isinstance(target_ulp, bool) or not isinstance(target_ulp, int | float) or not target_ulp > 0:
        raise SciMLInputError("target_ulp", f"must be a positive number, got {target_ulp!r}")
    if executor is not None and executor != "process" and not isinstance(executor, Executor):
        raise SciMLInputError(
            "executor", f"must be None, 'process' or a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    starts: list[Program] = []
    if initial is not None:
        if isinstance(initial, Program) or not isinstance(initial, Sequence) or len(initial) == 0:
            raise SciMLInputError("initial", "must be a non-empty sequence of Program")
        for index, program in enumerate(initial):
            if not isinstance(program, Program):
                raise SciMLInputError("initial", f"entry {index} is a {type(program).__name__}, not a Program")
            if program.op_count > max_ops:
                raise SciMLInputError("initial", f"entry {index} has {program.op_count} operations > max_ops")
            starts.append(program.pruned())
    bar_factory: Callable[..., Any] | None = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as error:
            raise SciMLError("progress=True needs tqdm: install the 'progress' extra of sciml-special") from error
        bar_factory = tqdm

    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Stratified random training points (one per cell of an even grid) plus both ends: evenly spaced points sample
    # the float32 rounding pattern too regularly, and fitted constants learn that pattern (overfitting the max).
    cells = (np.arange(train_points - 2) + np.random.default_rng([seed, 0]).random(train_points - 2)) / (
        train_points - 2
    )
    train_x = np.unique(np.concatenate([[low, high], low + (high - low) * cells]).astype(np.float32))
    validation_x = np.random.default_rng([seed, 1]).uniform(low, high, validation_points).astype(np.float32)
    problem = _Problem(
        train_x=train_x,
        train_y=_target_values(target, train_x),
        validation_x=validation_x,
        validation_y=_target_values(target, validation_x),
        fit_generations=fit_generations,
    )
    probe = train_x[np.linspace(0, train_x.size - 1, 32).astype(np.intp)]

    programs = list(starts)
    while len(programs) < population:
        if starts:
            parent = starts[int(rng.integers(len(starts)))]
            programs.append(mutate(parent, rng, probe=probe, max_ops=max_ops))
        else:
            programs.append(random_program(rng))

    owned_pool: ProcessPoolExecutor | None = None
    if executor == "process":
        owned_pool = ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn"))
        runner: _InProcess | _Through = _Through(owned_pool)
    elif isinstance(executor, Executor):
        runner = _Through(executor)
    else:
        runner = _InProcess()

    def seeds(count: int) -> list[int]:
        return [int(s) for s in rng.integers(0, 2**63 - 1, size=count)]

    bar = bar_factory(total=generations, desc="evolve", unit="gen") if bar_factory is not None else None
    try:
        survivors = runner.map_in_order(list(zip(programs, seeds(len(programs)), strict=True)), problem)
        evaluations = len(survivors)
        history = [min(c.train_ulp for c in survivors)]
        for _ in range(generations):
            _, front, crowding = nsga2_order(_objectives(survivors))
            children = [
                mutate(survivors[tournament(rng, front, crowding)].program, rng, probe=probe, max_ops=max_ops)
                for _ in range(offspring)
            ]
            scored = runner.map_in_order(list(zip(children, seeds(offspring), strict=True)), problem)
            evaluations += len(scored)
            pool = _unique([*survivors, *scored])
            order, _, _ = nsga2_order(_objectives(pool))
            survivors = [pool[i] for i in order[:population]]
            history.append(min(c.train_ulp for c in survivors))
            if bar is not None:
                best = min(survivors, key=lambda c: (c.train_ulp, c.ops))
                bar.set_postfix(best_ulp=f"{best.train_ulp:.3g}", ops=best.ops)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if owned_pool is not None:
            owned_pool.shutdown()

    first = non_dominated_sort(_objectives(survivors))[0]
    front_members = _unique([survivors[i] for i in first], key=lambda c: (c.ops, c.train_ulp))
    pareto = tuple(sorted(front_members, key=lambda c: (c.ops, c.train_ulp)))
    best_validation = min(c.validation_ulp for c in pareto)
    return Solution(
        value=pareto,
        converged=bool(best_validation < target_ulp),
        n_iter=generations,
        residual=best_validation,
        history=torch.tensor(history, dtype=torch.float64),
        stats={
            "population": tuple(survivors),
            "evaluations": evaluations,
            "elapsed_s": time.perf_counter() - began,
            "seed": seed,
            "domain": (low, high),
            "population_size": population,
            "offspring": offspring,
            "max_ops": max_ops,
            "train_points": int(train_x.size),
            "train_x": train_x,
            "validation_x": validation_x,
            "validation_points": validation_points,
            "fit_generations": fit_generations,
        },
    )


def _unique(candidates: Sequence[Candidate], key: Callable[[Candidate], Any] | None = None) -> list[Candidate]:
    """Drop repeats (same program by default), keeping the first: duplicates would crowd out diversity."""
    seen: set[Any] = set()
    kept: list[Candidate] = []
    for candidate in candidates:
        identity = candidate.program.to_spec() if key is None else key(candidate)
        if identity not in seen:
            seen.add(identity)
            kept.append(candidate)
    return kept
