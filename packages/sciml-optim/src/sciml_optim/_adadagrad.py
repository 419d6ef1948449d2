r"""AdAdaGrad and AdAdaGrad-Norm: AdaGrad-type optimizers with adaptive (growing) batch sizes.

The optimizers :class:`AdAdaGradNorm` (scalar step size, AdaGrad-Norm) and :class:`AdAdaGrad` (per-coordinate
AdaGrad) are ordinary ``torch.optim`` optimizers. What makes the method "Ad-" is the batch size schedule: after
each step a :class:`BatchSizeController` measures the spread of the per-sample gradients of the current batch and
proposes the next batch size with one of the adaptive sampling tests (norm, inner product, augmented inner
product, coordinate-wise). :class:`AdaptiveBatchSampler` feeds a ``DataLoader`` with batches of that size.

Reference:
    Tim Tsz-Kit Lau, Han Liu, Mladen Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
    Methods", arXiv:2402.11215 (2024). The tests themselves come from Byrd, Chin, Nocedal, Wu (2012) (norm test)
    and Bollapragada, Byrd, Nocedal (2018) (inner product and orthogonality tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from sciml_protocols import SciMLInputError, check_in_choices, check_positive
from torch import nn
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

__all__ = [
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaptiveBatchSampler",
    "BatchSizeController",
    "BatchSizeDecision",
]

TestName = Literal["norm", "inner_product", "augmented_inner_product", "coordinate"]
_TESTS: tuple[str, ...] = ("norm", "inner_product", "augmented_inner_product", "coordinate")

# The grouped torch._foreach_* kernels are private names that torch's stubs do not export.
_foreach: Any = torch


# --------------------------------------------------------------------------------------------------- optimizers


def _check_hyperparameter(name: str, value: float) -> float:
    check_positive(name, value, strict=False)
    return float(value)


def _gradients(group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise SciMLInputError("params", "sparse gradients are not supported")
        params.append(p)
        grads.append(p.grad)
    return params, grads


def _use_foreach(foreach: bool | None, params: Sequence[torch.Tensor]) -> bool:
    if foreach is not None:
        return foreach
    return bool(params) and all(p.device.type == "cuda" for p in params)


class AdAdaGradNorm(torch.optim.Optimizer):
    r"""AdaGrad-Norm: one scalar step size per parameter group, adapted to the accumulated squared gradient norm.

    With :math:`g_k` the gradient of all parameters of a group stacked into one vector,

    .. math::

        b_k^2 = b_{k-1}^2 + \|g_k\|_2^2, \qquad x_{k+1} = x_k - \frac{\alpha}{b_k + \epsilon}\, g_k,

    starting from :math:`b_0` (``b0``). The norm runs over every parameter of the group that has a gradient, so a
    group shares one accumulator; every parameter's state holds a copy of it (``state["accumulator"]``
    :math:`= b_k^2`, in the parameter's dtype) so that ``state_dict`` round trips. Pair it with a
    :class:`BatchSizeController` for AdAdaGrad-Norm.

    Args:
        params: parameters or param-group dicts.
        lr: :math:`\alpha \ge 0`.
        b0: initial :math:`b_0 \ge 0`.
        eps: :math:`\epsilon \ge 0` added to :math:`b_k` (guards :math:`b_0 = 0` with a zero first gradient).
        maximize: ascend instead of descend.
        foreach: use the grouped ``torch._foreach_*`` path (None: only when every parameter is on CUDA).

    Raises:
        SciMLInputError: negative ``lr``, ``b0`` or ``eps``; sparse gradients (at ``step``).

    Reference:
        Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        arXiv:2402.11215 (2024); Ward, Wu, Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex
        landscapes", JMLR 21 (2020).

    Example:
        >>> x = torch.tensor([3.0, 4.0], requires_grad=True)
        >>> opt = AdAdaGradNorm([x], lr=1.0, b0=0.0, eps=0.0)
        >>> x.sum().backward()  # g = (1, 1), b_1 = sqrt(2)
        >>> _ = opt.step()
        >>> x.detach().sub(torch.tensor([3.0, 4.0])).mul(2**0.5)
        tensor([-1., -1.])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        b0: float = 1e-2,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": _check_hyperparameter("lr", lr),
            "b0": _check_hyperparameter("b0", b0),
            "eps": _check_hyperparameter("eps", eps),
            "maximize": bool(maximize),
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Take one step; ``closure`` (optional) recomputes the loss with gradients and its value is returned.

        Args:
            closure: a callable that zeroes the gradients, computes the loss, calls ``backward`` and returns it.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = _gradients(group)
            if not params:
                continue
            previous = None
            for p in group["params"]:
                state = self.state[p]
                if "accumulator" in state:
                    previous = state["accumulator"]
                    break
            if previous is None:
                previous_value = torch.tensor(group["b0"] ** 2, dtype=torch.float64, device=params[0].device)
            else:
                previous_value = previous.to(dtype=torch.float64, device=params[0].device)
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["accumulator"] = previous_value.to(dtype=p.dtype, device=p.device)
            foreach = _use_foreach(group["foreach"], params)
            if foreach:
                squares = [n.to(torch.float64, copy=False) ** 2 for n in _foreach._foreach_norm(grads, 2.0)]
            else:
                squares = [torch.linalg.vector_norm(g).to(torch.float64) ** 2 for g in grads]
            total = previous_value + torch.stack([s.to(params[0].device) for s in squares]).sum()
            scale = group["lr"] / (total.sqrt() + group["eps"])
            # Every parameter that already has state keeps the group's accumulator, so a parameter that joins
            # later (its first gradient) starts from the shared value.
            for p in group["params"]:
                state = self.state[p]
                if "accumulator" in state:
                    state["accumulator"].copy_(total)
            for p in params:
                self.state[p]["step"] += 1
            if foreach:
                self._foreach_update(params, grads, scale, group["maximize"])
            else:
                for p, g in zip(params, grads, strict=True):
                    direction = g.neg() if group["maximize"] else g
                    p.sub_(direction * scale.to(dtype=p.dtype, device=p.device))
        return loss

    @staticmethod
    def _foreach_update(
        params: list[torch.Tensor], grads: list[torch.Tensor], scale: torch.Tensor, maximize: bool
    ) -> None:
        grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(cast(Any, [params, grads]))  # pyright: ignore[reportPrivateUsage]
        for (device, dtype), (tensors, _) in grouped.items():
            device_params = cast(list[torch.Tensor], tensors[0])
            device_grads = cast(list[torch.Tensor], tensors[1])
            if maximize:
                device_grads = list(_foreach._foreach_neg(device_grads))
            assert device is not None
            assert dtype is not None
            steps = _foreach._foreach_mul(device_grads, scale.to(dtype=dtype, device=device))
            _foreach._foreach_sub_(device_params, steps)


class AdAdaGrad(torch.optim.Optimizer):
    r"""Per-coordinate AdaGrad, the update rule of AdAdaGrad (pair it with a coordinate-wise batch size test).

    .. math::

        v_k = v_{k-1} + g_k \odot g_k, \qquad x_{k+1} = x_k - \alpha\, \frac{g_k}{\sqrt{v_k} + \epsilon},

    with :math:`v_0` = ``initial_accumulator_value``. This is ``torch.optim.Adagrad`` with ``lr_decay=0`` and
    ``weight_decay=0`` (same state names ``step`` and ``sum``).

    Args:
        params: parameters or param-group dicts.
        lr: :math:`\alpha \ge 0`.
        initial_accumulator_value: :math:`v_0 \ge 0`.
        eps: :math:`\epsilon \ge 0`.
        maximize: ascend instead of descend.
        foreach: use the grouped ``torch._foreach_*`` path (None: only when every parameter is on CUDA).

    Raises:
        SciMLInputError: negative ``lr``, ``initial_accumulator_value`` or ``eps``; sparse gradients.

    Reference:
        Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        arXiv:2402.11215 (2024); Duchi, Hazan, Singer, "Adaptive subgradient methods for online learning and
        stochastic optimization", JMLR 12 (2011).

    Example:
        >>> x = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = AdAdaGrad([x], lr=0.5, eps=0.0)
        >>> (x**2).sum().backward()
        >>> _ = opt.step()  # first step moves every coordinate by lr against its gradient's sign
        >>> x.detach()
        tensor([ 0.5000, -1.5000])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": _check_hyperparameter("lr", lr),
            "initial_accumulator_value": _check_hyperparameter("initial_accumulator_value", initial_accumulator_value),
            "eps": _check_hyperparameter("eps", eps),
            "maximize": bool(maximize),
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Take one step; ``closure`` (optional) recomputes the loss with gradients and its value is returned.

        Args:
            closure: a callable that zeroes the gradients, computes the loss, calls ``backward`` and returns it.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = _gradients(group)
            if not params:
                continue
            sums: list[torch.Tensor] = []
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["sum"] = torch.full_like(
                        p, group["initial_accumulator_value"], memory_format=torch.preserve_format
                    )
                state["step"] += 1
                sums.append(state["sum"])
            lr, eps, maximize = group["lr"], group["eps"], group["maximize"]
            if _use_foreach(group["foreach"], params):
                grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(cast(Any, [params, grads, sums]))  # pyright: ignore[reportPrivateUsage]
                for tensors, _ in grouped.values():
                    device_params, device_grads, device_sums = (cast(list[torch.Tensor], t) for t in tensors)
                    if maximize:
                        device_grads = list(_foreach._foreach_neg(device_grads))
                    _foreach._foreach_addcmul_(device_sums, device_grads, device_grads, value=1.0)
                    std = _foreach._foreach_sqrt(device_sums)
                    _foreach._foreach_add_(std, eps)
                    _foreach._foreach_addcdiv_(device_params, device_grads, std, value=-lr)
            else:
                for p, g, s in zip(params, grads, sums, strict=True):
                    direction = g.neg() if maximize else g
                    s.addcmul_(direction, direction, value=1.0)
                    std = s.sqrt().add_(eps)
                    p.addcdiv_(direction, std, value=-lr)
        return loss


# --------------------------------------------------------------------------------------------- batch size tests


@dataclass(frozen=True)
class BatchSizeDecision:
    r"""What a :class:`BatchSizeController` update measured and decided.

    Attributes:
        batch_size: the next (global) batch size :math:`b_{k+1}`.
        previous_batch_size: the controller's batch size before the update, :math:`b_k`.
        num_samples: number of per-sample gradients the statistics used (summed over ranks under DDP).
        proposal: the active test's raw (unrounded, uncapped) batch size; ``inf`` when the batch gradient is zero
            but the samples disagree.
        grew: whether ``batch_size > previous_batch_size``.
        capped: whether ``max_batch_size`` clipped the proposal.
        statistics: the scalar statistics, as Python floats: ``grad_norm_sq`` :math:`\|g_B\|^2`, ``trace_variance``
            :math:`\sum_j \widehat{\mathrm{Var}}_i(\partial_j f_i)`, ``inner_product_variance``
            :math:`\widehat{\mathrm{Var}}_i\langle\nabla f_i, g_B\rangle`, ``orthogonal_variance``
            :math:`\sum_j \widehat{\mathrm{Var}}_i(\nabla f_i - \mathrm{proj}_{g_B}\nabla f_i)_j`,
            ``coordinate_ratio`` :math:`\max_j \widehat{\mathrm{Var}}_i(\partial_j f_i)/(g_B)_j^2`, and the batch
            size each test proposes: ``norm``, ``inner_product``, ``orthogonality``, ``augmented_inner_product``,
            ``coordinate``.
    """

    batch_size: int
    previous_batch_size: int
    num_samples: int
    proposal: float
    grew: bool
    capped: bool
    statistics: dict[str, float] = field(default_factory=dict)


def _distributed_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class BatchSizeController:
    r"""Adaptive batch sizes from per-sample gradient statistics (norm, inner product and coordinate-wise tests).

    Given the per-sample gradients :math:`\nabla f_i`, :math:`i \in B`, :math:`|B| = n`, and their mean
    :math:`g_B`, with unbiased sample variances :math:`\widehat{\mathrm{Var}}` over :math:`i`, the next batch size
    is :math:`b_{k+1} = \min(b_{\max}, \max(b_k, \lceil p \rceil))` where the proposal :math:`p` is, by ``test``:

    - ``"norm"`` (AdAdaGrad-Norm):
      :math:`p = \sum_j \widehat{\mathrm{Var}}_i(\partial_j f_i) / (\eta^2 \|g_B\|^2)`;
    - ``"inner_product"``: :math:`p = \widehat{\mathrm{Var}}_i(\langle\nabla f_i, g_B\rangle) / (\theta^2 \|g_B\|^4)`;
    - ``"augmented_inner_product"``: the larger of the inner-product proposal and the orthogonality proposal
      :math:`\sum_j \widehat{\mathrm{Var}}_i(\nabla f_i - \tfrac{\langle\nabla f_i, g_B\rangle}{\|g_B\|^2}
      g_B)_j / (\nu^2 \|g_B\|^2)`;
    - ``"coordinate"`` (AdAdaGrad): the norm test applied to every coordinate separately,
      :math:`\widehat{\mathrm{Var}}_i(\partial_j f_i) \le \eta^2 b\, (g_B)_j^2` for all :math:`j`, i.e.
      :math:`p = \max_j \widehat{\mathrm{Var}}_i(\partial_j f_i) / (\eta^2 (g_B)_j^2)`. Coordinates whose
      per-sample derivatives all agree (zero variance) impose nothing; a coordinate with zero mean and nonzero
      variance makes :math:`p = \infty`, so the batch jumps to ``max_batch_size``.

    Under ``torch.distributed`` (initialised, ``distributed`` not False) every rank passes its own samples; the
    count and :math:`\sum_i \nabla f_i` are all-reduced first (giving the global :math:`g_B`), then the sums of
    squared deviations from the global mean, so every statistic equals that of the concatenated global batch
    (law of total variance, exactly, not a mean of per-rank variances). Batch sizes are global.

    Args:
        model_or_params: an ``nn.Module`` (its parameters with ``requires_grad``) or a sequence of tensors.
        loss_fn: with a module, ``loss_fn(output, target)`` on one sample (batch dimension 1) where
            ``output = module(*inputs)`` and the batch is ``(*inputs, target)``; None means the module itself
            returns the loss from the whole sample. With tensors, ``loss_fn(params, *sample)`` takes the tuple of
            parameters and one unbatched sample. Needed by :meth:`step`, not by :meth:`update`.
        test: which test sets the batch size.
        eta: norm-test constant :math:`\eta > 0` (also used by ``"coordinate"``).
        theta: inner-product constant :math:`\theta > 0`.
        nu: orthogonality constant :math:`\nu > 0`.
        initial_batch_size: :math:`b_0 \ge 2` (variances need two samples).
        max_batch_size: :math:`b_{\max} \ge b_0`, e.g. the dataset size.
        distributed: all-reduce across ranks; None means "when ``torch.distributed`` is initialised".
        process_group: the group for the all-reduces (None: the default group).
        compute_dtype: dtype for the statistics (None: the gradients' dtype, at least float32).
        chunk_size: ``torch.func.vmap`` chunk size for per-sample gradients (memory/speed trade-off).

    Raises:
        SciMLInputError: non-positive ``eta``/``theta``/``nu``, unknown ``test``, bad batch sizes, empty
            parameters.

    Reference:
        Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        arXiv:2402.11215 (2024).

    Example:
        >>> w = torch.zeros(2)
        >>> controller = BatchSizeController([w], test="norm", eta=0.5, initial_batch_size=2, max_batch_size=64)
        >>> grads = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0), variance (2, 0)
        >>> decision = controller.update(grads)  # 2 / (0.25 * 4) = 2
        >>> decision.batch_size, decision.statistics["trace_variance"]
        (2, 2.0)
    """

    def __init__(
        self,
        model_or_params: nn.Module | Iterable[torch.Tensor],
        loss_fn: Callable[..., torch.Tensor] | None = None,
        *,
        test: TestName = "norm",
        eta: float = 0.1,
        theta: float = 0.9,
        nu: float = 5.67,
        initial_batch_size: int = 2,
        max_batch_size: int,
        distributed: bool | None = None,
        process_group: Any = None,
        compute_dtype: torch.dtype | None = None,
        chunk_size: int | None = None,
    ) -> None:
        check_in_choices("test", test, _TESTS)
        for name, value in (("eta", eta), ("theta", theta), ("nu", nu)):
            check_positive(name, value)
        for name, value in (("initial_batch_size", initial_batch_size), ("max_batch_size", max_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError(name, f"must be an int, got {type(value).__name__}")
        if initial_batch_size < 2:
            raise SciMLInputError(
                "initial_batch_size", f"must be >= 2 (variances need two samples), got {initial_batch_size}"
            )
        if max_batch_size < initial_batch_size:
            raise SciMLInputError(
                "max_batch_size", f"must be >= initial_batch_size={initial_batch_size}, got {max_batch_size}"
            )
        if chunk_size is not None and chunk_size < 1:
            raise SciMLInputError("chunk_size", f"must be >= 1, got {chunk_size}")
        if isinstance(model_or_params, nn.Module):
            self.module: nn.Module | None = model_or_params
            named = [(n, p) for n, p in model_or_params.named_parameters() if p.requires_grad]
            self._names: list[str] = [n for n, _ in named]
            self.params: list[torch.Tensor] = [p for _, p in named]
        else:
            self.module = None
            self.params = list(model_or_params)
            self._names = [str(i) for i in range(len(self.params))]
            for i, p in enumerate(self.params):
                if not isinstance(p, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
                    raise SciMLInputError("model_or_params", f"entry {i} is a {type(p).__name__}, not a tensor")
        if not self.params:
            raise SciMLInputError("model_or_params", "holds no trainable parameters")
        self.loss_fn = loss_fn
        self.test: str = test
        self.eta, self.theta, self.nu = float(eta), float(theta), float(nu)
        self.max_batch_size = max_batch_size
        self.batch_size = initial_batch_size
        self.num_updates = 0
        self.distributed = distributed
        self.process_group = process_group
        self.compute_dtype = compute_dtype
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------------------------------- gradients

    def per_sample_gradients(self, *batch: torch.Tensor) -> list[torch.Tensor]:
        r"""Per-sample gradients :math:`\nabla f_i` of the loss, with ``torch.func.vmap(grad(...))``.

        Args:
            *batch: tensors with a leading batch dimension :math:`n` (see ``loss_fn`` for their roles).

        Returns:
            One tensor per parameter, shape ``(n, *param.shape)``.

        Raises:
            SciMLInputError: no batch, mismatched leading dimensions, or a missing ``loss_fn`` with tensors.
        """
        from torch.func import functional_call, grad, vmap

        if not batch:
            raise SciMLInputError("batch", "needs at least one tensor")
        n = batch[0].shape[0] if batch[0].dim() > 0 else 0
        for i, t in enumerate(batch):
            if t.dim() == 0 or t.shape[0] != n:
                raise SciMLInputError("batch", f"tensor {i} has shape {tuple(t.shape)}, expected leading dim {n}")
        detached = tuple(p.detach() for p in self.params)
        if self.module is not None:
            module = self.module
            loss_fn = self.loss_fn
            names = self._names
            buffers = {k: v.detach() for k, v in module.named_buffers()}

            def sample_loss(params: tuple[torch.Tensor, ...], *sample: torch.Tensor) -> torch.Tensor:
                batched = tuple(s.unsqueeze(0) for s in sample)
                state = {**dict(zip(names, params, strict=True)), **buffers}
                if loss_fn is None:
                    return functional_call(module, state, batched).reshape(())
                output = functional_call(module, state, batched[:-1])
                return loss_fn(output, batched[-1]).reshape(())
        else:
            if self.loss_fn is None:
                raise SciMLInputError("loss_fn", "is required to compute per-sample gradients from tensors")
            user_loss = self.loss_fn

            def sample_loss(params: tuple[torch.Tensor, ...], *sample: torch.Tensor) -> torch.Tensor:
                return user_loss(params, *sample).reshape(())

        in_dims = (None, *([0] * len(batch)))
        per_sample = vmap(grad(sample_loss), in_dims=in_dims, randomness="different", chunk_size=self.chunk_size)(
            detached, *batch
        )
        return list(per_sample)

    # -------------------------------------------------------------------------------------------- updates

    def step(self, *batch: torch.Tensor, set_grad: bool = False) -> BatchSizeDecision:
        r"""Per-sample gradients of ``batch``, then :meth:`update`.

        Args:
            *batch: the current (local) batch, leading dimension :math:`n \ge 2` (globally).
            set_grad: write the (global) batch gradient :math:`g_B` into each parameter's ``.grad``, so that an
                optimizer can step without another backward pass.

        Returns:
            The :class:`BatchSizeDecision`.
        """
        grads = self.per_sample_gradients(*batch)
        return self.update(grads, set_grad=set_grad)

    def update(
        self, per_sample_grads: torch.Tensor | Sequence[torch.Tensor], *, set_grad: bool = False
    ) -> BatchSizeDecision:
        r"""Statistics of precomputed per-sample gradients and the next batch size (updates ``batch_size``).

        Args:
            per_sample_grads: one tensor per parameter of shape ``(n, *param.shape)``, or a single ``(n, d)``
                matrix of flattened gradients (then ``set_grad`` is unavailable unless there is one parameter).
            set_grad: write the batch gradient into each parameter's ``.grad``.

        Returns:
            The :class:`BatchSizeDecision`; ``self.batch_size`` becomes its ``batch_size``.

        Raises:
            SciMLInputError: fewer than two samples in all, mismatched shapes, non-floating or non-finite values.
        """
        grads = self._check_grads(per_sample_grads, set_grad)
        distributed = self._is_distributed()
        dtype = self.compute_dtype or torch.promote_types(grads[0].dtype, torch.float32)
        device = grads[0].device
        flat = [g.detach().reshape(g.shape[0], -1).to(dtype) for g in grads]
        local_n = flat[0].shape[0]
        sizes = [f.shape[1] for f in flat]

        # Round 1: count and sum of gradients give the global batch gradient.
        first = torch.cat([torch.full((1,), float(local_n), dtype=dtype, device=device)] + [f.sum(0) for f in flat])
        self._all_reduce(first, distributed)
        n = round(float(first[0]))
        if n < 2:
            raise SciMLInputError("per_sample_grads", f"needs at least 2 samples in all, got {n}")
        mean = list((first[1:] / n).split(sizes))
        norm_sq_t = sum((m.square().sum() for m in mean), torch.zeros((), dtype=dtype, device=device))

        # Round 2: squared deviations from the global mean (per coordinate), inner products with g_B and the
        # residual orthogonal to g_B. The residual's mean is exactly zero (mean of <g_i, g_B> is ||g_B||^2).
        centered = [f - m for f, m in zip(flat, mean, strict=True)]
        inner = sum(
            (c @ m for c, m in zip(centered, mean, strict=True)), torch.zeros(local_n, dtype=dtype, device=device)
        )
        safe_norm_sq = torch.where(norm_sq_t > 0, norm_sq_t, torch.ones_like(norm_sq_t))
        coefficient = inner / safe_norm_sq
        orthogonal_sq = sum(
            ((c - coefficient[:, None] * m).square().sum() for c, m in zip(centered, mean, strict=True)),
            torch.zeros((), dtype=dtype, device=device),
        )
        second = torch.cat([torch.stack([inner.square().sum(), orthogonal_sq])] + [c.square().sum(0) for c in centered])
        self._all_reduce(second, distributed)
        squared_deviation = second[2:]
        mean_flat = torch.cat(mean)
        variance = squared_deviation / (n - 1)
        norm_sq = float(norm_sq_t)
        trace_variance = float(variance.sum())
        inner_variance = float(second[0]) / (n - 1)
        orthogonal_variance = float(second[1]) / (n - 1)
        noisy = variance > 0
        ratios = torch.where(noisy, variance / torch.where(noisy, mean_flat.square(), 1.0), 0.0)
        coordinate_ratio = float(ratios.max()) if ratios.numel() else 0.0

        norm = _ratio(trace_variance, self.eta**2 * norm_sq)
        inner_product = _ratio(inner_variance, self.theta**2 * norm_sq**2)
        orthogonality = _ratio(orthogonal_variance, self.nu**2 * norm_sq)
        proposals = {
            "norm": norm,
            "inner_product": inner_product,
            "orthogonality": orthogonality,
            "augmented_inner_product": max(inner_product, orthogonality),
            "coordinate": coordinate_ratio / self.eta**2,
        }
        proposal = proposals[self.test]
        previous = self.batch_size
        wanted = previous if not proposal > previous else (math.inf if math.isinf(proposal) else math.ceil(proposal))
        new = int(min(self.max_batch_size, wanted))
        self.batch_size = new
        self.num_updates += 1
        if set_grad:
            for p, m in zip(self.params, mean, strict=True):
                p.grad = m.reshape(p.shape).to(dtype=p.dtype, device=p.device)
        statistics = {
            "grad_norm_sq": norm_sq,
            "trace_variance": trace_variance,
            "inner_product_variance": inner_variance,
            "orthogonal_variance": orthogonal_variance,
            "coordinate_ratio": coordinate_ratio,
            **proposals,
        }
        return BatchSizeDecision(
            batch_size=new,
            previous_batch_size=previous,
            num_samples=n,
            proposal=proposal,
            grew=new > previous,
            capped=wanted > self.max_batch_size,
            statistics=statistics,
        )

    # ------------------------------------------------------------------------------------------- helpers

    def _check_grads(
        self, per_sample_grads: torch.Tensor | Sequence[torch.Tensor], set_grad: bool
    ) -> list[torch.Tensor]:
        if isinstance(per_sample_grads, torch.Tensor):
            if per_sample_grads.dim() != 2:
                raise SciMLInputError(
                    "per_sample_grads", f"a single tensor must be (n, d), got shape {tuple(per_sample_grads.shape)}"
                )
            total = sum(p.numel() for p in self.params)
            if per_sample_grads.shape[1] != total:
                raise SciMLInputError(
                    "per_sample_grads", f"has {per_sample_grads.shape[1]} columns, the parameters have {total} entries"
                )
            if set_grad:
                sizes = [p.numel() for p in self.params]
                grads = [
                    g.reshape(g.shape[0], *p.shape)
                    for g, p in zip(per_sample_grads.split(sizes, dim=1), self.params, strict=True)
                ]
            else:
                grads = [per_sample_grads]
        else:
            grads = list(per_sample_grads)
            if len(grads) != len(self.params):
                raise SciMLInputError("per_sample_grads", f"has {len(grads)} tensors for {len(self.params)} parameters")
            for i, (g, p) in enumerate(zip(grads, self.params, strict=True)):
                if not isinstance(g, torch.Tensor):  # pyright: ignore[reportUnnecessaryIsInstance]
                    raise SciMLInputError("per_sample_grads", f"entry {i} is not a tensor")
                if g.dim() != p.dim() + 1 or g.shape[1:] != p.shape:
                    raise SciMLInputError(
                        "per_sample_grads",
                        f"entry {i} has shape {tuple(g.shape)}, expected (n, {', '.join(map(str, p.shape))})",
                    )
        n = grads[0].shape[0]
        for i, g in enumerate(grads):
            if g.shape[0] != n:
                raise SciMLInputError("per_sample_grads", f"entry {i} has {g.shape[0]} samples, entry 0 has {n}")
            if not g.is_floating_point():
                raise SciMLInputError("per_sample_grads", f"entry {i} has dtype {g.dtype}, expected floating point")
            if not bool(torch.isfinite(g).all()):
                raise SciMLInputError("per_sample_grads", f"entry {i} contains NaN or infinite values")
        return grads

    def _is_distributed(self) -> bool:
        if self.distributed is None:
            return _distributed_ready()
        if self.distributed and not _distributed_ready():
            raise SciMLInputError("distributed", "is True but torch.distributed is not initialised")
        return self.distributed

    def _all_reduce(self, tensor: torch.Tensor, distributed: bool) -> None:
        if distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM, group=self.process_group)

    def state_dict(self) -> dict[str, Any]:
        """The controller's mutable state (current batch size, number of updates), for checkpoints.

        Returns:
            A dict accepted by :meth:`load_state_dict`.
        """
        return {"batch_size": self.batch_size, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state: the saved dict.

        Raises:
            SciMLInputError: a batch size outside ``[2, max_batch_size]``.
        """
        batch_size = int(state["batch_size"])
        if not 2 <= batch_size <= self.max_batch_size:
            raise SciMLInputError("state", f"batch_size {batch_size} is outside [2, {self.max_batch_size}]")
        self.batch_size = batch_size
        self.num_updates = int(state["num_updates"])


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else 0.0


# ---------------------------------------------------------------------------------------------------- sampler


class AdaptiveBatchSampler(Sampler[list[int]]):
    r"""A batch sampler whose batch size follows a :class:`BatchSizeController` (``DataLoader(batch_sampler=...)``).

    Each batch is drawn from the index stream of ``sampler`` (or of a sequential/random sampler over
    ``range(dataset_len)``) with the controller's batch size read at the moment the batch is requested, i.e. after
    the previous training step updated it. With ``num_workers > 0`` the loader prefetches batches, so the sizes
    lag the controller by the prefetch depth. Under DDP pass each rank's ``DistributedSampler`` and
    ``num_replicas``; every rank then takes :math:`\lceil b / \text{num\_replicas} \rceil` indices.

    Args:
        dataset_len_or_sampler: the dataset size or a sampler of indices.
        controller: the controller whose ``batch_size`` sets the batch size.
        shuffle: with a dataset size, draw indices in random order.
        drop_last: drop the final batch when it is smaller than the requested size.
        num_replicas: number of data-parallel ranks sharing the global batch size.
        generator: random generator for ``shuffle``.

    Raises:
        SciMLInputError: a negative dataset size or ``num_replicas < 1``.

    Example:
        >>> controller = BatchSizeController([torch.zeros(1)], initial_batch_size=2, max_batch_size=8)
        >>> sampler = AdaptiveBatchSampler(5, controller)
        >>> list(sampler)
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        dataset_len_or_sampler: int | Sampler[int] | Iterable[int],
        controller: BatchSizeController,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        num_replicas: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(dataset_len_or_sampler, bool):
            raise SciMLInputError("dataset_len_or_sampler", "must be an int or a sampler, got a bool")
        if isinstance(dataset_len_or_sampler, int):
            if dataset_len_or_sampler < 0:
                raise SciMLInputError("dataset_len_or_sampler", f"must be >= 0, got {dataset_len_or_sampler}")
            indices = range(dataset_len_or_sampler)
            self.sampler: Iterable[int] = (
                RandomSampler(indices, generator=generator) if shuffle else SequentialSampler(indices)
            )
        else:
            self.sampler = dataset_len_or_sampler
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("num_replicas", f"must be an int >= 1, got {num_replicas!r}")
        self.controller = controller
        self.drop_last = drop_last
        self.num_replicas = num_replicas

    def _local_batch_size(self) -> int:
        return max(1, math.ceil(self.controller.batch_size / self.num_replicas))

    def __iter__(self) -> Iterator[list[int]]:
        """Yield lists of indices, each as long as the controller's current (per-replica) batch size."""
        batch: list[int] = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) >= self._local_batch_size():
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        """Number of batches if the batch size stayed at its current value (an estimate: it can only shrink)."""
        total = len(self.sampler)  # pyright: ignore[reportArgumentType]
        size = self._local_batch_size()
        return total // size if self.drop_last else math.ceil(total / size)
