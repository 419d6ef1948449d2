"""The proxy task of the layer search: synthetic shape/texture images, two tiny CNNs and their training loop.

Everything is generated here from a seed (no downloads) and sized to train a few hundred steps in seconds on one
CPU thread. Training draws every random number from explicit ``torch.Generator`` objects, so a run is a pure
function of its arguments, also when several run at once in threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Iterator

import torch
from sciml_protocols import SciMLInputError, check_int
from torch import nn
from torch.nn import functional as F

from ._graph import LayerGraph

__all__ = [
    "ARCHITECTURES",
    "ProxyTask",
    "TrainOutcome",
    "build_model",
    "make_dataset",
    "single_thread",
    "train_proxy",
]

#: The proxy architectures: a ResNet-like and a MobileNetV2-like CNN.
ARCHITECTURES: tuple[str, ...] = ("resnet", "mobilenet")
#: Number of image classes :func:`make_dataset` can draw.
NUM_CLASSES = 10

_thread_lock = threading.Lock()
_thread_users = 0
_saved_threads = 1


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(1)``; the previous count is restored when the last user leaves.

    Tiny CNNs train faster on one thread, and evaluations running in parallel processes should not oversubscribe
    the cores. The reference count keeps concurrent users (threads of a ``ThreadPoolExecutor``) from restoring the
    count under each other.
    """
    global _thread_users, _saved_threads
    with _thread_lock:
        if _thread_users == 0:
            _saved_threads = torch.get_num_threads()
        # set in every entering thread: OpenMP keeps the thread count per thread
        torch.set_num_threads(1)
        _thread_users += 1
    try:
        yield
    finally:
        with _thread_lock:
            _thread_users -= 1
            if _thread_users == 0:
                torch.set_num_threads(_saved_threads)


@dataclasses.dataclass(frozen=True)
class ProxyTask:
    """The proxy classification task and its training recipe.

    Attributes:
        image_size: side of the square RGB images.
        train_size: number of training images.
        val_size: number of validation images (accuracy is measured on them).
        noise: standard deviation of the pixel noise (harder task as it grows).
        num_classes: number of classes (2 to 10; the first ``num_classes`` of :func:`make_dataset`'s list).
        data_seed: seed of the dataset (fixed across candidates).
        width: channels of the first stage (later stages use 2x and 4x); must be divisible by ``groups`` of the
            graphs trained on it.
        architectures: which proxy CNNs a candidate is trained on (from :data:`ARCHITECTURES`).
        train_steps: SGD steps per training run.
        batch_size: images per step.
        lr: peak learning rate (cosine decay to 0 after a 5% linear warm-up).
            The defaults (4 classes, 10x10 images, 100 steps of SGD at 0.2 from PyTorch's default initialization)
            make normalization matter: BN-ReLU reaches about 0.75 validation accuracy while ReLU alone stays near
            0.6 and saturating layers (tanh) at chance (0.25).
        weight_decay: decoupled weight decay (AdamW) or L2 penalty (SGD) on every parameter.
        optimizer: ``"adam"`` (AdamW) or ``"sgd"`` (Nesterov momentum 0.9).
        he_init: He-normal convolutions (scale-preserving through ReLU) instead of PyTorch's default
            (uniform, variance ``1/(3 fan_in)``), under which the signal shrinks layer by layer unless the layer
            normalizes it.
    """

    image_size: int = 10
    train_size: int = 2048
    val_size: int = 512
    noise: float = 0.2
    num_classes: int = 4
    data_seed: int = 0
    width: int = 8
    architectures: tuple[str, ...] = ARCHITECTURES
    train_steps: int = 100
    batch_size: int = 32
    lr: float = 0.2
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    he_init: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "train_size", "val_size", "width", "train_steps", "batch_size", "num_classes"):
            check_int(name, getattr(self, name), minimum=1)
        if not 2 <= self.num_classes <= NUM_CLASSES:
            raise SciMLInputError("num_classes", f"must be in [2, {NUM_CLASSES}], got {self.num_classes}")
        if self.image_size < 8:
            raise SciMLInputError("image_size", f"must be at least 8, got {self.image_size}")
        object.__setattr__(self, "architectures", tuple(self.architectures))
        if not self.architectures or any(a not in ARCHITECTURES for a in self.architectures):
            raise SciMLInputError("architectures", f"must be a non-empty subset of {ARCHITECTURES}")
        for name in ("noise", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SciMLInputError(name, f"must be a finite non-negative number, got {value!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise SciMLInputError("optimizer", f"must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise SciMLInputError("lr", f"must be a finite positive number, got {self.lr!r}")


@functools.lru_cache(maxsize=4)
def make_dataset(
    image_size: int = 10,
    train_size: int = 2048,
    val_size: int = 512,
    noise: float = 0.2,
    seed: int = 0,
    num_classes: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed-seed dataset of up to 10 classes of shapes and textures on random backgrounds.

    Classes, in order: disk, horizontal stripes, vertical stripes, square outline, ring, filled square, diagonal
    stripes, checkerboard, plus sign, triangle. Each image draws its position, size, stripe period and phase,
    foreground and background colors, then adds Gaussian pixel noise; images are standardized per channel with the
    training set's statistics.

    Args:
        image_size: side of the images.
        train_size: number of training images.
        val_size: number of validation images.
        noise: pixel noise standard deviation.
        seed: the dataset's seed.
        num_classes: how many of the classes (in the order listed above) to use.

    Returns:
        ``(x_train, y_train, x_val, y_val)``: float32 images ``(n, 3, S, S)`` and int64 labels ``(n,)``, each class
        equally frequent (up to the remainder of ``n / num_classes``) in each split.

    Raises:
        SciMLInputError: ``num_classes`` outside ``[2, 10]``.

    Example:
        >>> x, y, xv, yv = make_dataset(train_size=20, val_size=10)
        >>> tuple(x.shape), tuple(yv.shape), int(y.max())
        ((20, 3, 10, 10), (10,), 3)
    """
    if not 2 <= num_classes <= NUM_CLASSES:
        raise SciMLInputError("num_classes", f"must be in [2, {NUM_CLASSES}], got {num_classes}")
    generator = torch.Generator().manual_seed(seed)
    n = train_size + val_size
    size = image_size

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    # balanced classes in both splits, so that a constant prediction scores exactly chance on the validation set
    labels = torch.cat(
        [
            (torch.arange(train_size) % num_classes)[torch.randperm(train_size, generator=generator)],
            (torch.arange(val_size) % num_classes)[torch.randperm(val_size, generator=generator)],
        ]
    )
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)
    cy = uniform(0.3 * size, 0.7 * size, n, 1, 1)
    cx = uniform(0.3 * size, 0.7 * size, n, 1, 1)
    radius = uniform(0.18 * size, 0.32 * size, n, 1, 1)
    period = uniform(3.0, 5.0, n, 1, 1)
    phase = uniform(0.0, 2 * math.pi, n, 1, 1)
    dy, dx = yy - cy, xx - cx
    distance = torch.sqrt(dy**2 + dx**2)
    box = torch.maximum(dy.abs(), dx.abs())
    wave = 2 * math.pi / period
    full = (n, size, size)
    masks = torch.stack(
        [
            m.expand(full)
            for m in (
                distance <= radius,
                torch.sin(wave * yy + phase) > 0,
                torch.sin(wave * xx + phase) > 0,
                (box <= radius) & (box >= 0.6 * radius),
                (distance <= radius) & (distance >= 0.55 * radius),
                box <= radius,
                torch.sin(wave * (xx + yy) / math.sqrt(2) + phase) > 0,
                (torch.sin(wave * yy + phase) > 0) ^ (torch.sin(wave * xx + phase) > 0),
                ((dy.abs() <= 0.3 * radius) | (dx.abs() <= 0.3 * radius)) & (box <= radius),
                (dy <= radius) & (dy >= -radius) & (dx.abs() <= (dy + radius) / 2),
            )
        ],
        dim=1,
    ).float()
    mask = masks[torch.arange(n), labels].unsqueeze(1)  # (n, 1, S, S)
    foreground = uniform(0.0, 1.0, n, 3, 1, 1)
    background = uniform(0.0, 1.0, n, 3, 1, 1)
    # keep at least some contrast between the two colors
    background = torch.where((foreground - background).abs().sum(1, keepdim=True) < 0.6, 1 - foreground, background)
    images = background + mask * (foreground - background) + noise * torch.randn(n, 3, size, size, generator=generator)
    train = images[:train_size]
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True)
    images = (images - mean) / std
    return images[:train_size], labels[:train_size], images[train_size:], labels[train_size:]


def task_dataset(task: ProxyTask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`make_dataset` with ``task``'s settings (cached)."""
    return make_dataset(task.image_size, task.train_size, task.val_size, task.noise, task.data_seed, task.num_classes)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = layer(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = layer(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x + self.conv2(self.norm1(self.conv1(x))))


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        hidden = 2 * inp
        self.expand = nn.Conv2d(inp, hidden, 1, bias=False)
        self.norm1 = layer(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.norm2 = layer(hidden)
        self.project = nn.Conv2d(hidden, out, 1, bias=False)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.norm2(self.depthwise(self.norm1(self.expand(x)))))
        return x + y if self.residual else y


def build_model(
    architecture: str, layer: Callable[[int], nn.Module], *, width: int = 16, num_classes: int = NUM_CLASSES
) -> nn.Module:
    """One of the proxy CNNs with ``layer(channels)`` at every normalization-activation position.

    ``"resnet"``: stem conv, a residual block (post-addition layer), a stride-2 conv to ``2 width`` channels,
    global average pooling, a linear classifier (4 normalization-activation layers). ``"mobilenet"``: stem conv
    and two inverted-residual blocks (expansion 2, depthwise 3x3, linear bottleneck; the first one strided to
    ``2 width`` channels, the second one residual), pooling, linear (5 normalization-activation layers). Both are
    small enough to train a hundred steps in a few seconds on one CPU thread.

    Args:
        architecture: ``"resnet"`` or ``"mobilenet"``.
        layer: builds a normalization-activation module for a channel count.
        width: channels of the first stage.
        num_classes: outputs of the classifier.

    Returns:
        The model (default PyTorch initialization; see :func:`train_proxy` for the seeded one).

    Raises:
        SciMLInputError: unknown architecture.

    Example:
        >>> model = build_model("resnet", lambda c: nn.ReLU())
        >>> model(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """
    if architecture == "resnet":
        body: list[nn.Module] = [
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            layer(width),
            _ResidualBlock(width, layer),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            layer(2 * width),
        ]
        features = 2 * width
    elif architecture == "mobilenet":
        body = [
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            layer(width),
            _InvertedResidual(width, 2 * width, 2, layer),
            _InvertedResidual(2 * width, 2 * width, 1, layer),
        ]
        features = 2 * width
    else:
        raise SciMLInputError("architecture", f"must be one of {ARCHITECTURES}, got {architecture!r}")
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, num_classes))


def _initialize(model: nn.Module, generator: torch.Generator, *, he: bool = True) -> None:
    """He-normal convolutions and PyTorch's default linear layer, drawn from ``generator`` (reproducible).

    He initialization keeps the signal's scale through ReLU-like layers, so layers without normalization can
    still train (and be compared) on the proxy.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and he:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)
        elif isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class _Optimizer:
    """AdamW, SGD with (Nesterov) momentum, written out with plain tensor operations.

    Same updates as ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, decoupled decay) and ``torch.optim.SGD``
    (momentum 0.9, L2 decay); ``torch.optim``'s first step imports ``torch._dynamo``, which costs seconds in every
    fresh worker process, a large share of a search that evaluates each candidate in seconds.
    """

    def __init__(
        self, params: list[nn.Parameter], kind: str, weight_decay: float = 0.0, *, nesterov: bool = True
    ) -> None:
        self.params = params
        self.kind = kind
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.count = 0
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params] if kind == "adam" else []

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.count += 1
        if self.kind == "adam":
            correction1 = 1.0 - 0.9**self.count
            correction2 = math.sqrt(1.0 - 0.999**self.count)
            for p, m, v in zip(self.params, self.first, self.second, strict=True):
                if p.grad is None:
                    continue
                if self.weight_decay:
                    p.mul_(1.0 - lr * self.weight_decay)
                m.lerp_(p.grad, 0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                p.addcdiv_(m, (v.sqrt() / correction2).add_(1e-8), value=-lr / correction1)
            return
        for p, buffer in zip(self.params, self.first, strict=True):
            if p.grad is None:
                continue
            grad = p.grad.add(p, alpha=self.weight_decay) if self.weight_decay else p.grad
            buffer.mul_(0.9).add_(grad)
            p.add_(grad.add(buffer, alpha=0.9) if self.nesterov else buffer, alpha=-lr)


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What one proxy training run produced.

    Attributes:
        accuracy: validation accuracy at the end (0.0 when training diverged).
        steps: SGD steps taken.
        diverged: the loss or a gradient became non-finite.
        stopped_early: training stopped at a checkpoint whose accuracy was below the required minimum.
        checkpoint_accuracy: validation accuracy at the checkpoint step (None without a checkpoint).
        final_loss: the last training loss.
    """

    accuracy: float
    steps: int
    diverged: bool
    stopped_early: bool
    checkpoint_accuracy: float | None
    final_loss: float


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 512):
            logits = model(x[start : start + 512])
            if not torch.isfinite(logits).all():
                model.train()
                return 0.0
            correct += int((logits.argmax(1) == y[start : start + 512]).sum())
    model.train()
    return correct / len(x)


def _learning_rate(task: ProxyTask, step: int) -> float:
    warmup = max(1, task.train_steps // 20)
    if step < warmup:
        return task.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, task.train_steps - warmup)
    return 0.5 * task.lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_proxy(
    graph: LayerGraph,
    task: ProxyTask,
    architecture: str,
    *,
    seed: int,
    steps: int | None = None,
    checkpoint: tuple[int, float] | None = None,
) -> TrainOutcome:
    """Train ``architecture`` with ``graph`` at every normalization-activation position and measure accuracy.

    The schedule always spans ``task.train_steps`` (so a run cut at ``steps`` is the prefix of the full run); the
    initialization and the minibatch order depend only on ``seed``. Runs on one CPU thread.

    Args:
        graph: the layer.
        task: the proxy task.
        architecture: one of :data:`ARCHITECTURES`.
        seed: initialization and minibatch seed.
        steps: stop after this many steps (default ``task.train_steps``).
        checkpoint: ``(step, minimum)``: measure validation accuracy after ``step`` steps and stop early when it is
            below ``minimum`` (the quality rejection test).

    Returns:
        A :class:`TrainOutcome`.

    Example:
        >>> task = ProxyTask(train_size=64, val_size=32, train_steps=2, batch_size=8, width=8)
        >>> train_proxy(LayerGraph.relu(), task, "resnet", seed=0).steps
        2
    """
    total = task.train_steps if steps is None else steps
    total = check_int("steps", total, minimum=0)
    x_train, y_train, x_val, y_val = task_dataset(task)
    with single_thread():
        generator = torch.Generator().manual_seed(seed)
        model = build_model(architecture, lambda c: graph.to_module(c), width=task.width, num_classes=task.num_classes)
        _initialize(model, generator, he=task.he_init)
        optimizer = _Optimizer(list(model.parameters()), task.optimizer, task.weight_decay)
        model.train()
        loss_value = math.nan
        checkpoint_accuracy: float | None = None
        for step in range(total):
            index = torch.randint(len(x_train), (task.batch_size,), generator=generator)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                return TrainOutcome(0.0, step + 1, True, False, checkpoint_accuracy, loss_value)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(_learning_rate(task, step))
            if checkpoint is not None and step + 1 == checkpoint[0]:
                checkpoint_accuracy = _accuracy(model, x_val, y_val)
                if checkpoint_accuracy < checkpoint[1]:
                    return TrainOutcome(checkpoint_accuracy, step + 1, False, True, checkpoint_accuracy, loss_value)
        accuracy = _accuracy(model, x_val, y_val)
    return TrainOutcome(accuracy, total, False, False, checkpoint_accuracy, loss_value)
