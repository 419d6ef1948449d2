"""The two rejection protocols of the layer search (Liu et al., 2020, Sec. 3.3) and a candidate's evaluation.

Quality: a layer whose proxy accuracy after a short training is below a threshold is dropped. Stability: a layer
whose gradient norm explodes during a short training at large learning rates is dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence

import torch
from sciml_protocols import SciMLInputError, check_int
from torch.nn import functional as F

from ._graph import LayerGraph
from ._proxy import ProxyTask, _initialize, _Optimizer, build_model, single_thread, task_dataset, train_proxy

__all__ = [
    "CandidateEvaluation",
    "EvaluationRequest",
    "QualityReport",
    "RejectionConfig",
    "StabilityReport",
    "evaluate_candidate",
    "quality_check",
    "stability_check",
]


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
    r"""Settings of the two rejection protocols.

    Attributes:
        quality_steps: training steps (of the normal proxy schedule, on the first architecture) before the quality
            test.
        quality_threshold: minimum validation accuracy after ``quality_steps`` (chance is 0.25 on the default
            4-class proxy; the default 0.3 = chance + 0.05 drops layers that have not started learning, such as
            constant or saturating ones, while every normalizer tried passes; the paper uses 20% on CIFAR-10,
            chance + 0.1, after 100 steps).
        stability_lrs: the large learning rates of the stability test, tried one after the other.
        stability_steps: SGD steps per learning rate.
        max_grad_norm: a layer is unstable when the global gradient norm exceeds this (or is not finite) at any
            step of any of the runs.
    """

    quality_steps: int = 30
    quality_threshold: float = 0.3
    stability_lrs: tuple[float, ...] = (0.5,)
    stability_steps: int = 10
    max_grad_norm: float = 1e5

    def __post_init__(self) -> None:
        object.__setattr__(self, "stability_lrs", tuple(float(lr) for lr in self.stability_lrs))
        for name in ("quality_steps", "stability_steps"):
            check_int(name, getattr(self, name), minimum=1)
        if not 0.0 <= self.quality_threshold <= 1.0:
            raise SciMLInputError("quality_threshold", f"must be in [0, 1], got {self.quality_threshold!r}")
        if not self.stability_lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.stability_lrs):
            raise SciMLInputError("stability_lrs", f"must be finite positive numbers, got {self.stability_lrs!r}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise SciMLInputError("max_grad_norm", f"must be finite and positive, got {self.max_grad_norm!r}")


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Outcome of :func:`quality_check`: ``passed`` and the accuracy it was decided on."""

    passed: bool
    accuracy: float


@dataclasses.dataclass(frozen=True)
class StabilityReport:
    """Outcome of :func:`stability_check`.

    Attributes:
        stable: no gradient norm exceeded the limit and every loss and gradient stayed finite.
        max_grad_norm: the largest global gradient norm seen (``inf`` for a non-finite one).
        failed_lr: the learning rate whose run failed (None when stable).
        failed_step: the step of the failure (None when stable).
    """

    stable: bool
    max_grad_norm: float
    failed_lr: float | None = None
    failed_step: int | None = None


def quality_check(
    graph: LayerGraph,
    task: ProxyTask,
    *,
    steps: int = 100,
    threshold: float = 0.11,
    seed: int = 0,
    architecture: str | None = None,
) -> QualityReport:
    """The quality rejection protocol: train briefly on the proxy and require a minimum validation accuracy.

    The model trains for ``steps`` steps of the proxy's usual schedule (:func:`train_proxy`) on ``architecture``
    (default: the task's first); the layer passes when the validation accuracy is at least ``threshold``. A loss
    that becomes non-finite counts as accuracy 0.

    Args:
        graph: the candidate layer.
        task: the proxy task.
        steps: training steps before measuring.
        threshold: minimum accuracy.
        seed: initialization and minibatch seed.
        architecture: the proxy architecture.

    Returns:
        A :class:`QualityReport`.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, train_steps=2, batch_size=8, width=8)
        >>> quality_check(LayerGraph.bn_relu(), task, steps=1, threshold=0.0).passed
        True
    """
    outcome = train_proxy(graph, task, architecture or task.architectures[0], seed=seed, steps=steps)
    return QualityReport(outcome.accuracy >= threshold, outcome.accuracy)


def stability_check(
    graph: LayerGraph,
    task: ProxyTask,
    *,
    lrs: Sequence[float] = (0.5,),
    steps: int = 20,
    max_grad_norm: float = 1e5,
    seed: int = 0,
    architectures: Sequence[str] | None = None,
) -> StabilityReport:
    r"""The stability rejection protocol: gradient norms during a short training at large learning rates.

    For each proxy architecture and each learning rate :math:`\eta` in ``lrs`` a freshly initialized model (seed
    ``seed``) trains ``steps``
    steps of SGD with momentum 0.9 at the constant rate :math:`\eta` (no weight decay, no clipping) on proxy
    minibatches. After each backward pass the global gradient norm :math:`\|\nabla_\theta L\|_2` over all
    parameters is measured; the layer is unstable if it exceeds ``max_grad_norm`` or if a loss or gradient is not
    finite, at any step of any run. Well-behaved normalization layers keep the gradients of scale-invariant
    weights shrinking as those weights grow, so they pass; layers that divide by near-zero statistics or chain
    exponentials do not.

    Args:
        graph: the candidate layer.
        task: the proxy task (data, width, batch size).
        lrs: the adversarially large learning rates (2.5x the default proxy's 0.2).
        steps: steps per learning rate.
        max_grad_norm: the explosion threshold.
        seed: initialization and minibatch seed.
        architectures: the proxy architectures to test (default: all of the task's).

    Returns:
        A :class:`StabilityReport`.

    Raises:
        SciMLInputError: empty or non-positive ``lrs``, non-positive ``steps`` or ``max_grad_norm``.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, batch_size=8, width=8)
        >>> stability_check(LayerGraph.bn_relu(), task, steps=2).stable
        True
    """
    config = RejectionConfig(stability_lrs=tuple(lrs), stability_steps=steps, max_grad_norm=max_grad_norm)
    x_train, y_train, _, _ = task_dataset(task)
    largest = 0.0
    with single_thread():
        for architecture, lr in itertools.product(architectures or task.architectures, config.stability_lrs):
            generator = torch.Generator().manual_seed(seed)
            model = build_model(
                architecture, lambda c: graph.to_module(c), width=task.width, num_classes=task.num_classes
            )
            _initialize(model, generator, he=task.he_init)
            model.train()
            optimizer = _Optimizer(list(model.parameters()), "sgd", nesterov=False)
            for step in range(config.stability_steps):
                index = torch.randint(len(x_train), (task.batch_size,), generator=generator)
                loss = F.cross_entropy(model(x_train[index]), y_train[index])
                if not torch.isfinite(loss):
                    return StabilityReport(False, math.inf, lr, step)
                optimizer.zero_grad()
                loss.backward()
                squares = [p.grad.detach().square().sum() for p in model.parameters() if p.grad is not None]
                norm = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
                if not math.isfinite(norm):
                    return StabilityReport(False, math.inf, lr, step)
                largest = max(largest, norm)
                if norm > config.max_grad_norm:
                    return StabilityReport(False, largest, lr, step)
                optimizer.step(lr)
    return StabilityReport(True, largest)


@dataclasses.dataclass(frozen=True)
class EvaluationRequest:
    """Everything a worker needs to evaluate one candidate (picklable, so any Executor can ship it).

    Attributes:
        graph: the candidate layer.
        task: the proxy task.
        rejection: the rejection protocols' settings.
        seed: initialization and minibatch seed of the rejection tests and of the first training run.
        extra_seeds: further training seeds of an accepted candidate; its accuracy on each architecture is the mean
            over ``seed`` and these (rejections cost no more).
    """

    graph: LayerGraph
    task: ProxyTask
    rejection: RejectionConfig
    seed: int
    extra_seeds: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class CandidateEvaluation:
    """A candidate's evaluation.

    Attributes:
        status: ``"accepted"``, ``"rejected-quality"`` or ``"rejected-stability"``.
        accuracies: validation accuracy on each proxy architecture, the mean over the request's seeds (None when
            rejected).
        quality_accuracy: accuracy at the quality test.
        max_grad_norm: the largest gradient norm of the stability test (None when it did not run).
        seconds: wall time of the evaluation (not part of equality).
    """

    status: str
    accuracies: tuple[float, ...] | None
    quality_accuracy: float
    max_grad_norm: float | None
    seconds: float = dataclasses.field(default=0.0, compare=False)


def evaluate_candidate(request: EvaluationRequest) -> CandidateEvaluation:
    """Evaluate one candidate: quality test, stability test, then training on every proxy architecture.

    An accepted candidate is also trained with each of ``request.extra_seeds`` on every architecture, and its
    accuracies are the per-architecture means over all its seeds (less selection noise for the accepted ones only).

    The quality test is the first ``quality_steps`` steps of the training run on the first architecture (the run
    goes on when the layer passes), so it costs nothing extra for accepted layers. This is a top-level function so
    that process-based executors can pickle it; it sets ``torch.set_num_threads(1)`` while it runs.

    Args:
        request: the candidate and the settings.

    Returns:
        A :class:`CandidateEvaluation`.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, train_steps=3, batch_size=8, width=8)
        >>> rules = RejectionConfig(quality_steps=1, quality_threshold=0.0, stability_steps=1)
        >>> evaluate_candidate(EvaluationRequest(LayerGraph.bn_relu(), task, rules, seed=0)).status
        'accepted'
    """
    start = time.perf_counter()
    task, rules = request.task, request.rejection
    first, *others = task.architectures
    quality_steps = min(rules.quality_steps, task.train_steps)
    outcome = train_proxy(
        request.graph, task, first, seed=request.seed, checkpoint=(quality_steps, rules.quality_threshold)
    )
    quality = outcome.checkpoint_accuracy if outcome.checkpoint_accuracy is not None else outcome.accuracy
    if outcome.stopped_early or (outcome.diverged and quality < rules.quality_threshold):
        return CandidateEvaluation("rejected-quality", None, quality, None, time.perf_counter() - start)
    stability = stability_check(
        request.graph,
        task,
        lrs=rules.stability_lrs,
        steps=rules.stability_steps,
        max_grad_norm=rules.max_grad_norm,
        seed=request.seed,
    )
    if not stability.stable:
        return CandidateEvaluation(
            "rejected-stability", None, quality, stability.max_grad_norm, time.perf_counter() - start
        )
    accuracies = [outcome.accuracy]
    for architecture in others:
        accuracies.append(train_proxy(request.graph, task, architecture, seed=request.seed).accuracy)
    extra = tuple(request.extra_seeds)
    if extra:
        for k, architecture in enumerate(task.architectures):
            runs = [train_proxy(request.graph, task, architecture, seed=s).accuracy for s in extra]
            accuracies[k] = (accuracies[k] + sum(runs)) / (1 + len(runs))
    return CandidateEvaluation(
        "accepted", tuple(accuracies), quality, stability.max_grad_norm, time.perf_counter() - start
    )
