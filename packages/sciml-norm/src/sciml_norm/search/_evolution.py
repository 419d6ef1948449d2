"""Multi-objective evolution of normalization-activation layers (Liu et al., 2020, Sec. 3.4).

A steady-state, aging evolution run in generations: each generation draws ``batch_size`` children (random graphs
while fewer than ``population`` layers have been accepted, then mutations of parents chosen by Pareto tournament
over the per-architecture proxy accuracies), evaluates them through any ``concurrent.futures.Executor``, appends
the accepted ones to the population and retires the oldest. The state is written to a JSON checkpoint after every
generation; a run restarted on the same checkpoint resumes and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from sciml_protocols import SciMLInputError, check_int

from ._graph import GraphLayer, LayerGraph, mutate, random_graph
from ._proxy import ProxyTask, train_proxy
from ._rejection import CandidateEvaluation, EvaluationRequest, RejectionConfig, evaluate_candidate

__all__ = [
    "Candidate",
    "SearchConfig",
    "SearchResult",
    "dominates",
    "evaluate_layers",
    "pareto_front",
    "search",
    "tournament_select",
]

_CHECKPOINT_VERSION = 2


# --------------------------------------------------------------------------- Pareto selection
def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    r"""Pareto dominance for maximization: :math:`a \succ b \iff a_k \ge b_k \;\forall k` and :math:`a \ne b`.

    Args:
        a: scores of the first candidate (one per objective).
        b: scores of the second, same length.

    Returns:
        Whether ``a`` dominates ``b``.

    Raises:
        SciMLInputError: lengths differ or are zero.

    Example:
        >>> dominates((0.5, 0.6), (0.5, 0.4)), dominates((0.5, 0.4), (0.4, 0.5))
        (True, False)
    """
    if len(a) != len(b) or not a:
        raise SciMLInputError("b", f"score vectors must be non-empty and of equal length, got {len(a)} and {len(b)}")
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_front(scores: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the score vectors that no other vector dominates, in input order.

    Example:
        >>> pareto_front([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.4, 0.4)])
        [0, 1, 2]
    """
    return [i for i, s in enumerate(scores) if not any(dominates(t, s) for j, t in enumerate(scores) if j != i)]


def tournament_select(scores: Sequence[Sequence[float]], rng: random.Random, size: int) -> int:
    """Multi-objective tournament: sample ``size`` entrants, return one of their Pareto front uniformly at random.

    Args:
        scores: one score vector per population member.
        rng: the random source (advanced in place).
        size: tournament size, ``1 <= size <= len(scores)``.

    Returns:
        The index (into ``scores``) of the winner.

    Raises:
        SciMLInputError: empty ``scores`` or ``size`` out of range.

    Example:
        >>> tournament_select([(0.1, 0.1), (0.9, 0.8)], random.Random(0), 2)
        1
    """
    if not scores:
        raise SciMLInputError("scores", "must not be empty")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(scores):
        raise SciMLInputError("size", f"must be an integer in [1, {len(scores)}], got {size!r}")
    entrants = rng.sample(range(len(scores)), size)
    front = pareto_front([scores[i] for i in entrants])
    return entrants[rng.choice(front)]


# --------------------------------------------------------------------------- configuration and records
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """What the search evaluates and how it mutates.

    Attributes:
        task: the proxy task (data, architectures, training recipe).
        rejection: the quality and stability protocols.
        num_nodes: inclusive range of intermediate-node counts of the random initial graphs.
        groups: channel groups of the group aggregations (must divide the proxy widths).
        tournament_fraction: fraction of the population entering each tournament (at least 2 entrants).
        ops: the primitives to draw from (None: all).
        op_weights: relative sampling weights of the ops in random graphs and mutations (None:
            :data:`sciml_norm.search.OP_WEIGHTS`).
        grow_probability: probability that a mutation appends a node on top of the parent's output (see
            :func:`sciml_norm.search.mutate`'s ``grow``).
        center_probability: probability that a mutation centers the parent's input, ``f(x) -> f(x - mean_A(x))``
            with a random axis family ``A`` (see :func:`sciml_norm.search.center_input`).
        max_nodes: mutations append no node to parents with this many (live) nodes.
        require_normalizer: the random graphs (not the mutations) must be scale-invariant normalization-activation
            layers (:meth:`~sciml_norm.search.LayerGraph.is_normalizer`; a check on a probe input, no training).
            Without it about 78% of the random graphs compute no statistic of ``x`` and most of the others are
            linear in ``x`` or ``statistic / x``; on a budget of a few hundred candidates the ReLU-like survivors
            then fill the population before any normalizer is accepted. Known layers are never inserted.
    """

    task: ProxyTask = dataclasses.field(default_factory=ProxyTask)
    rejection: RejectionConfig = dataclasses.field(default_factory=RejectionConfig)
    num_nodes: tuple[int, int] = (4, 8)
    groups: int = 4
    tournament_fraction: float = 0.25
    ops: tuple[str, ...] | None = None
    op_weights: dict[str, float] | None = None
    grow_probability: float = 0.25
    center_probability: float = 0.1
    max_nodes: int = 12
    require_normalizer: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.task, ProxyTask):
            raise SciMLInputError("task", f"must be a ProxyTask, got {type(self.task).__name__}")
        if not isinstance(self.rejection, RejectionConfig):
            raise SciMLInputError("rejection", f"must be a RejectionConfig, got {type(self.rejection).__name__}")
        low, high = self.num_nodes
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise SciMLInputError("num_nodes", f"must be a range 1 <= low <= high, got {self.num_nodes!r}")
        object.__setattr__(self, "num_nodes", (low, high))
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise SciMLInputError("groups", f"must be a positive integer, got {self.groups!r}")
        if self.task.width % self.groups:
            raise SciMLInputError("groups", f"{self.groups} does not divide the proxy width {self.task.width}")
        if not 0.0 < self.tournament_fraction <= 1.0:
            raise SciMLInputError("tournament_fraction", f"must be in (0, 1], got {self.tournament_fraction!r}")
        if not (isinstance(self.grow_probability, int | float) and 0.0 <= self.grow_probability <= 1.0):
            raise SciMLInputError("grow_probability", f"must be in [0, 1], got {self.grow_probability!r}")
        if not (isinstance(self.center_probability, int | float) and 0.0 <= self.center_probability <= 1.0):
            raise SciMLInputError("center_probability", f"must be in [0, 1], got {self.center_probability!r}")
        if isinstance(self.max_nodes, bool) or not isinstance(self.max_nodes, int) or self.max_nodes < 1:
            raise SciMLInputError("max_nodes", f"must be a positive integer, got {self.max_nodes!r}")
        if self.ops is not None:
            object.__setattr__(self, "ops", tuple(self.ops))
        if self.op_weights is not None:
            object.__setattr__(self, "op_weights", {str(k): float(v) for k, v in dict(self.op_weights).items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dictionary."""
        data = dataclasses.asdict(self)
        data["task"]["architectures"] = list(self.task.architectures)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchConfig:
        """Rebuild from :meth:`to_dict`."""
        task = dict(data["task"])
        task["architectures"] = tuple(task["architectures"])
        rejection = dict(data["rejection"])
        rejection["stability_lrs"] = tuple(rejection["stability_lrs"])
        ops = data.get("ops")
        return cls(
            task=ProxyTask(**task),
            rejection=RejectionConfig(**rejection),
            num_nodes=(int(data["num_nodes"][0]), int(data["num_nodes"][1])),
            groups=int(data["groups"]),
            tournament_fraction=float(data["tournament_fraction"]),
            ops=None if ops is None else tuple(ops),
            op_weights=data.get("op_weights"),
            grow_probability=float(data.get("grow_probability", 0.25)),
            center_probability=float(data.get("center_probability", 0.0)),
            max_nodes=int(data.get("max_nodes", 12)),
            require_normalizer=bool(data.get("require_normalizer", False)),
        )


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One evaluated layer of a search.

    Attributes:
        index: position in the search history.
        generation: the generation that produced it.
        graph: the layer.
        parent: history index of the parent (None for a random graph).
        evaluation: the outcome of :func:`evaluate_candidate`.
    """

    index: int
    generation: int
    graph: LayerGraph
    parent: int | None
    evaluation: CandidateEvaluation

    @property
    def accepted(self) -> bool:
        """Whether it passed both rejection protocols."""
        return self.evaluation.status == "accepted"

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Proxy accuracy per architecture (empty when rejected)."""
        return self.evaluation.accuracies or ()

    @property
    def mean_accuracy(self) -> float:
        """Mean proxy accuracy over the architectures (0 when rejected)."""
        return sum(self.accuracies) / len(self.accuracies) if self.accuracies else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dictionary."""
        e = self.evaluation
        return {
            "index": self.index,
            "generation": self.generation,
            "graph": self.graph.to_dict(),
            "parent": self.parent,
            "status": e.status,
            "accuracies": None if e.accuracies is None else list(e.accuracies),
            "quality_accuracy": e.quality_accuracy,
            "max_grad_norm": e.max_grad_norm,
            "seconds": e.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Rebuild from :meth:`to_dict`."""
        accuracies = data["accuracies"]
        evaluation = CandidateEvaluation(
            str(data["status"]),
            None if accuracies is None else tuple(float(a) for a in accuracies),
            float(data["quality_accuracy"]),
            None if data["max_grad_norm"] is None else float(data["max_grad_norm"]),
            float(data["seconds"]),
        )
        return cls(int(data["index"]), int(data["generation"]), LayerGraph.from_dict(data["graph"]),
                   data["parent"], evaluation)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _function_key(graph: LayerGraph) -> str:
    return graph.fingerprint()


def _distinct_by_score(candidates: Sequence[Candidate], score: Callable[[Candidate], float]) -> list[Candidate]:
    """Best ``score`` first (earliest on ties), one candidate per function (probe fingerprint)."""
    seen: set[str] = set()
    unique = []
    for candidate in sorted(candidates, key=lambda c: (-score(c), c.index)):
        key = _function_key(candidate.graph)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`search`.

    Attributes:
        history: every evaluated candidate, in evaluation order.
        population: history indices of the final population: the ``population`` youngest accepted layers, then
            the elite (the best distinct layers so far) that are not among them.
        generations: generations run.
        config: the search settings.
        seed: the search seed.
        rescores: ``(index, runs)`` pairs for the candidates re-trained at the end of the search: ``runs`` holds one
            tuple of per-architecture accuracies per extra training seed.
        eval_seeds: training seeds each accepted candidate was evaluated on during the search (its
            :attr:`Candidate.accuracies` are means over them).
        wall_seconds: wall time of the run(s) that produced it (not part of equality).
    """

    history: tuple[Candidate, ...]
    population: tuple[int, ...]
    generations: int
    config: SearchConfig
    seed: int
    rescores: tuple[tuple[int, tuple[tuple[float, ...], ...]], ...] = ()
    eval_seeds: int = 1
    wall_seconds: float = dataclasses.field(default=0.0, compare=False)

    @property
    def accepted(self) -> tuple[Candidate, ...]:
        """The candidates that passed both rejection protocols."""
        return tuple(c for c in self.history if c.accepted)

    def score(self, candidate: Candidate) -> float:
        """Mean proxy accuracy over architectures and over the search seeds and every re-scoring seed."""
        runs = [candidate.accuracies] * self.eval_seeds if candidate.accepted else []
        runs += list(dict(self.rescores).get(candidate.index, ()))
        values = [a for run in runs for a in run]
        return sum(values) / len(values) if values else 0.0

    def lower_bound(self, candidate: Candidate) -> float:
        r"""A pessimistic score: :meth:`score` minus the spread of the candidate's single-seed accuracies.

        .. math:: \mathrm{LCB} = \bar a - s, \qquad s = \operatorname{stdev}(a_1, \dots, a_R),

        where :math:`a_r` is the mean accuracy over architectures with the :math:`r`-th re-scoring seed (single
        seeds, so :math:`s` estimates the seed-to-seed spread; 0 with fewer than two re-scoring seeds). Ranking
        re-scored layers by it prefers a layer that trains well on every seed to one that had a lucky seed.
        """
        runs = dict(self.rescores).get(candidate.index, ())
        means = [sum(run) / len(run) for run in runs if run]
        spread = statistics.stdev(means) if len(means) >= 2 else 0.0
        return self.score(candidate) - spread

    def ranked(self) -> list[Candidate]:
        """Accepted candidates with distinct functions, best first.

        The re-scored candidates come first, by :meth:`lower_bound` (the mean over all their seeds minus the spread
        over the re-scoring seeds); the others follow by their search accuracy. Two candidates compute the same
        function when their :meth:`LayerGraph.fingerprint` agree; the best-scoring one is kept.
        """
        rescored = dict(self.rescores)
        first = _distinct_by_score([self.history[i] for i in rescored], self.lower_bound)
        keys = {_function_key(c.graph) for c in first}
        rest = [c for c in _distinct_by_score(self.accepted, lambda c: c.mean_accuracy) if c.index not in rescored]
        return first + [c for c in rest if _function_key(c.graph) not in keys]

    @property
    def best(self) -> Candidate | None:
        """The first of :meth:`ranked` (the best re-scored layer when there was re-scoring), or None."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def pareto_front(self) -> list[Candidate]:
        """The accepted candidates (distinct functions) that no other dominates on the per-architecture accuracies."""
        ranked = _distinct_by_score(self.accepted, lambda c: c.mean_accuracy)
        return [ranked[i] for i in pareto_front([c.accuracies for c in ranked])]

    def export(self, num_channels: int, *, rank: int = 0, device: Any = None, dtype: Any = None) -> GraphLayer:
        """The ``rank``-th best discovered layer (:meth:`ranked`) as a module for ``num_channels`` channels.

        Raises:
            SciMLInputError: no accepted candidate of that rank.
        """
        ranked = self.ranked()
        if not 0 <= rank < len(ranked):
            raise SciMLInputError("rank", f"must be in [0, {len(ranked)}), got {rank}")
        return ranked[rank].graph.to_module(num_channels, device=device, dtype=dtype)


# --------------------------------------------------------------------------- the driver
def _settings(
    population: int,
    batch_size: int,
    seed: int,
    config: SearchConfig,
    elite: int,
    rescore_top: int,
    rescore_seeds: int,
    eval_seeds: int,
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "population": population,
        "batch_size": batch_size,
        "seed": seed,
        "config": config.to_dict(),
        "elite": elite,
        "rescore_top": rescore_top,
        "rescore_seeds": rescore_seeds,
    }
    if eval_seeds != 1:  # checkpoints of single-seed searches keep their settings
        settings["eval_seeds"] = eval_seeds
    return settings


def _write_checkpoint(path: Path, settings: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    payload = {"format": "sciml_norm.search checkpoint", "version": _CHECKPOINT_VERSION, "settings": settings}
    payload.update(state)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def _read_checkpoint(path: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SciMLInputError("checkpoint", f"cannot read {str(path)!r}: {error}") from None
    if not isinstance(payload, dict) or payload.get("version") != _CHECKPOINT_VERSION:
        raise SciMLInputError("checkpoint", f"{str(path)!r} is not a version-{_CHECKPOINT_VERSION} search checkpoint")
    if payload.get("settings") != json.loads(json.dumps(settings)):
        raise SciMLInputError(
            "checkpoint", f"{str(path)!r} was written with other settings (population, batch_size, seed or config)"
        )
    return payload


def _check_count(name: str, value: object, *, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    check_int(name, value, minimum=minimum)


def search(
    *,
    population: int = 16,
    budget: int = 200,
    generations: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    config: SearchConfig | None = None,
    elite: int | None = None,
    rescore_top: int = 5,
    rescore_seeds: int = 1,
    eval_seeds: int = 1,
    executor: Executor | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
    callback: Callable[[int, int, str], None] | None = None,
) -> SearchResult:
    r"""Evolve normalization-activation layers from random graphs (Liu et al., NeurIPS 2020).

    Each generation makes ``batch_size`` children. While the population holds ``m < population`` accepted layers,
    a child is a random graph (:func:`random_graph`) with probability ``1 - m / population`` (always when
    ``m < 2``), so evolution starts as soon as a few layers pass the rejection tests; otherwise, and always once the
    population is full, it is a mutation (:func:`mutate`, appending a node with probability
    ``config.grow_probability``) of a parent chosen by :func:`tournament_select` on the vector of proxy accuracies
    over the architectures of ``config.task`` (Pareto dominance, so a layer that is best on one architecture
    survives). The parents are drawn from the ``population`` youngest accepted layers (aging evolution) plus an
    elite of the ``elite`` best distinct layers found so far, which never retire.

    Candidates are identified by function (:meth:`LayerGraph.fingerprint` on a fixed probe input): a child whose
    function was evaluated before is redrawn up to ten times and otherwise reuses the earlier result (it is
    recorded in the history but does not join the population again). The children are evaluated by
    :func:`evaluate_candidate` (quality test, stability test, training on every architecture), all with the same
    training seeds so that candidates are compared on equal terms; with ``eval_seeds > 1`` an accepted candidate is
    trained with that many seeds and scored by the mean (rejected ones cost no more). When the budget is spent,
    the ``rescore_top`` best distinct layers are re-trained with ``rescore_seeds`` further seeds and
    :attr:`SearchResult.best` is chosen on :meth:`SearchResult.lower_bound`, the mean over all seeds minus the
    spread over the re-scoring seeds (one seed's accuracy is noisy, so the single-seed winner is often lucky).
    Every random draw comes from one ``random.Random(seed)`` in the driver, so the result does not depend on the
    executor.

    Args:
        population: population size :math:`P` (the aging part).
        budget: total number of candidates to evaluate (rejected ones and duplicates included).
        generations: stop after this many generations in total (None: run until the budget is spent; the
            re-scoring runs only then).
        batch_size: children per generation, evaluated concurrently (default: ``population``).
        seed: the search seed (graphs, mutations, selection and the training seeds: every candidate is evaluated
            with ``seed, ..., seed + eval_seeds - 1``, the re-scoring uses the next ``rescore_seeds`` integers).
        config: proxy task, rejection protocols and mutation settings (default :class:`SearchConfig`).
        elite: size of the elite kept besides the aging population (default ``population // 4``; 0 for pure aging
            evolution).
        rescore_top: how many of the best distinct layers are re-trained at the end (0: none).
        rescore_seeds: extra training seeds of the re-scoring.
        eval_seeds: training seeds of each accepted candidate during the search (the quality and stability tests use
            the first only).
        executor: evaluates the candidates (``executor.map``); any ``concurrent.futures.Executor`` works (process
            pools, Ray's or Dask's executors). None: evaluate in this process.
        checkpoint: JSON file written after every generation and after the re-scoring; if it exists, the search
            resumes from it (its settings must match).
        progress: show a tqdm progress bar (when tqdm is installed).
        callback: called after every generation as ``callback(evaluated, budget, message)``.

    Returns:
        A :class:`SearchResult`; ``result.best.graph`` is the best layer found, ``result.export(C)`` builds it.

    Raises:
        SciMLInputError: non-positive ``population``, ``budget``, ``batch_size`` or ``generations``; negative
            ``elite``, ``rescore_top`` or ``rescore_seeds``; ``eval_seeds`` below 1; a checkpoint written with other
            settings or unreadable.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, train_steps=2, batch_size=8, width=8)
        >>> rules = RejectionConfig(quality_steps=1, quality_threshold=0.0, stability_steps=1)
        >>> result = search(population=2, budget=3, config=SearchConfig(task=task, rejection=rules), progress=False)
        >>> len(result.history), result.generations
        (3, 2)

    References:
        Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers", NeurIPS 2020, arXiv:2004.02967;
        Real, Aggarwal, Huang, Le, "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019.
    """
    _check_count("population", population)
    _check_count("budget", budget)
    _check_count("generations", generations, allow_none=True, minimum=0)
    _check_count("batch_size", batch_size, allow_none=True)
    _check_count("elite", elite, allow_none=True, minimum=0)
    _check_count("rescore_top", rescore_top, minimum=0)
    _check_count("rescore_seeds", rescore_seeds, minimum=0)
    _check_count("eval_seeds", eval_seeds)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SciMLInputError("seed", f"must be an integer, got {seed!r}")
    config = SearchConfig() if config is None else config
    if not isinstance(config, SearchConfig):
        raise SciMLInputError("config", f"must be a SearchConfig, got {type(config).__name__}")
    if executor is not None and not isinstance(executor, Executor):
        raise SciMLInputError("executor", f"must be a concurrent.futures.Executor, got {type(executor).__name__}")
    batch = population if batch_size is None else batch_size
    elite_size = population // 4 if elite is None else elite
    settings = _settings(population, batch, seed, config, elite_size, rescore_top, rescore_seeds, eval_seeds)
    extra_eval_seeds = tuple(seed + k for k in range(1, eval_seeds))
    path = None if checkpoint is None else Path(checkpoint)

    start = time.perf_counter()
    rng = random.Random(seed)
    history: list[Candidate] = []
    members: list[int] = []
    rescores: dict[int, tuple[tuple[float, ...], ...]] | None = None
    generation = 0
    previous_seconds = 0.0
    if path is not None and path.exists():
        state = _read_checkpoint(path, settings)
        version, internal, gauss = state["rng_state"]
        rng.setstate((version, tuple(internal), gauss))
        history = [Candidate.from_dict(c) for c in state["history"]]
        members = [int(i) for i in state["population"]]
        generation = int(state["generation"])
        previous_seconds = float(state.get("wall_seconds", 0.0))
        if state.get("rescores") is not None:
            rescores = {int(i): tuple(tuple(float(a) for a in run) for run in runs) for i, runs in state["rescores"]}
    cache: dict[str, CandidateEvaluation] = {_function_key(c.graph): c.evaluation for c in history}

    def elite_of(history: list[Candidate]) -> list[int]:
        if not elite_size:
            return []
        best = _distinct_by_score([c for c in history if c.accepted], lambda c: c.mean_accuracy)
        return [c.index for c in best[:elite_size]]

    def pool_of(members: list[int]) -> list[int]:
        return members + [i for i in elite_of(history) if i not in members]

    def save(elapsed: float) -> None:
        if path is None:
            return
        _write_checkpoint(
            path,
            settings,
            {
                "generation": generation,
                "rng_state": list(rng.getstate()),
                "history": [c.to_dict() for c in history],
                "population": members,
                "rescores": None if rescores is None else [[i, [list(r) for r in rs]] for i, rs in rescores.items()],
                "wall_seconds": elapsed,
            },
        )

    bar: Any = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=budget, initial=min(len(history), budget), desc="layer search", unit="layer")
        except ImportError:  # progress is a nicety: run without it
            bar = None

    task, rules = config.task, config.rejection
    tournament_size = max(2, round(config.tournament_fraction * population))

    def child_of(parent: int) -> LayerGraph:
        return mutate(
            history[parent].graph,
            rng,
            ops=config.ops,
            op_weights=config.op_weights,
            grow=config.grow_probability,
            center=config.center_probability,
            max_nodes=config.max_nodes,
        )

    try:
        while len(history) < budget and (generations is None or generation < generations):
            count = min(batch, budget - len(history))
            children: list[tuple[LayerGraph, int | None]] = []
            pending: set[str] = set()
            pool = pool_of(members)
            for _ in range(count):
                # a random graph while the population is filling up (always below 2 members), else a mutation
                parent: int | None = None
                graph = history[0].graph if history else LayerGraph.relu()  # always replaced below
                for _attempt in range(10):
                    if len(members) < 2 or rng.random() >= len(members) / population:
                        parent = None
                        graph = random_graph(
                            rng,
                            num_nodes=config.num_nodes,
                            groups=config.groups,
                            ops=config.ops,
                            op_weights=config.op_weights,
                            require_normalizer=config.require_normalizer,
                        )
                    else:
                        scores = [history[i].accuracies for i in pool]
                        parent = pool[tournament_select(scores, rng, min(tournament_size, len(pool)))]
                        graph = child_of(parent)
                    key = _function_key(graph)
                    if key not in cache and key not in pending:
                        break
                pending.add(_function_key(graph))
                children.append((graph, parent))
            fresh: dict[str, EvaluationRequest] = {}
            for graph, _ in children:
                key = _function_key(graph)
                if key not in cache and key not in fresh:
                    fresh[key] = EvaluationRequest(graph, task, rules, seed, extra_eval_seeds)
            requests = list(fresh.values())
            if executor is None:
                outcomes = [evaluate_candidate(r) for r in requests]
            else:
                outcomes = list(executor.map(evaluate_candidate, requests))
            for key, outcome in zip(fresh, outcomes, strict=True):
                cache[key] = outcome
            for graph, parent in children:
                key = _function_key(graph)
                candidate = Candidate(len(history), generation, graph, parent, cache[key])
                history.append(candidate)
                if candidate.accepted and key in fresh and fresh[key].graph is graph:
                    members.append(candidate.index)
            members = members[-population:]
            generation += 1
            rescores = None  # a resumed run with a larger budget re-scores its new best layers
            save(previous_seconds + time.perf_counter() - start)
            best = max((history[i].mean_accuracy for i in pool_of(members)), default=math.nan)
            message = f"generation {generation}: {len(members)} in population, best mean accuracy {best:.3f}"
            if bar is not None:
                bar.update(len(children))
                bar.set_postfix_str(f"best {best:.3f}")
            if callback is not None:
                callback(len(history), budget, message)
        if rescores is None and len(history) >= budget:
            top = _distinct_by_score([c for c in history if c.accepted], lambda c: c.mean_accuracy)
            top = top[: rescore_top if rescore_seeds else 0]
            extra = [seed + eval_seeds - 1 + k for k in range(1, rescore_seeds + 1)]
            jobs = [(c.graph, task, a, s) for c in top for s in extra for a in task.architectures]
            accuracies = [_train_one(j) for j in jobs] if executor is None else list(executor.map(_train_one, jobs))
            width, per_candidate = len(task.architectures), len(extra) * len(task.architectures)
            rescores = {}
            for k, candidate in enumerate(top):
                flat = accuracies[k * per_candidate : (k + 1) * per_candidate]
                rescores[candidate.index] = tuple(tuple(flat[i : i + width]) for i in range(0, len(flat), width))
            save(previous_seconds + time.perf_counter() - start)
            if callback is not None and top:
                callback(len(history), budget, f"re-scored the {len(top)} best layers on {len(extra)} more seed(s)")
    finally:
        if bar is not None:
            bar.close()
    return SearchResult(
        tuple(history),
        tuple(pool_of(members)),
        generation,
        config,
        seed,
        tuple(sorted((rescores or {}).items())),
        eval_seeds,
        previous_seconds + time.perf_counter() - start,
    )


def _train_one(job: tuple[LayerGraph, ProxyTask, str, int]) -> float:
    graph, task, architecture, seed = job
    return train_proxy(graph, task, architecture, seed=seed).accuracy


def evaluate_layers(
    graphs: Mapping[str, LayerGraph],
    task: ProxyTask | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    executor: Executor | None = None,
) -> dict[str, list[tuple[float, ...]]]:
    """Train each layer on every proxy architecture with each seed (for comparing discovered and known layers).

    Args:
        graphs: the layers by name.
        task: the proxy task (default :class:`ProxyTask`).
        seeds: training seeds.
        executor: runs the trainings (None: in this process).

    Returns:
        For each name, one tuple of per-architecture accuracies per seed.

    Raises:
        SciMLInputError: empty ``graphs`` or ``seeds``.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, train_steps=2, batch_size=8, width=8)
        >>> out = evaluate_layers({"relu": LayerGraph.relu()}, task, seeds=(0,))
        >>> len(out["relu"]), len(out["relu"][0])
        (1, 2)
    """
    task = ProxyTask() if task is None else task
    if not graphs:
        raise SciMLInputError("graphs", "must not be empty")
    if not seeds:
        raise SciMLInputError("seeds", "must not be empty")
    jobs = [(g, task, a, s) for g in graphs.values() for s in seeds for a in task.architectures]
    accuracies = [_train_one(j) for j in jobs] if executor is None else list(executor.map(_train_one, jobs))
    width = len(task.architectures)
    per_seed = [tuple(accuracies[i : i + width]) for i in range(0, len(accuracies), width)]
    return {name: per_seed[k * len(seeds) : (k + 1) * len(seeds)] for k, name in enumerate(graphs)}
