"""Conformance suite for ``torch.optim.Optimizer`` subclasses."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from ._common import max_difference, skip, weights_only_roundtrip
from ._tolerances import assert_close, tolerances

__all__ = ["OptimizerConformance"]

Parameters = list[torch.Tensor]
Trajectory = list[list[torch.Tensor]]
LossFunction = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _initial_parameters(dtype: torch.dtype) -> Parameters:
    generator = torch.Generator().manual_seed(20_240_917)
    return [
        torch.randn(3, 4, generator=generator, dtype=dtype).requires_grad_(True),
        torch.randn(5, generator=generator, dtype=dtype).requires_grad_(True),
    ]


def _smooth_loss(params: Sequence[torch.Tensor]) -> torch.Tensor:
    # Separable (each parameter its own term) so that groups are independent, with per-entry curvatures and a
    # quartic term so that the gradient is not a linear function of the parameters.
    terms: list[torch.Tensor] = []
    for p in params:
        curvature = torch.linspace(0.5, 2.0, p.numel(), dtype=p.dtype).reshape(p.shape)
        offset = p - 0.3
        terms.append((0.5 * curvature * offset**2 + 0.05 * offset**4).sum().to(torch.float64))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def _snapshot(params: Iterable[torch.Tensor]) -> Parameters:
    return [p.detach().clone() for p in params]


class OptimizerConformance:
    r"""Contract every ``torch.optim.Optimizer`` of a sciml package must meet; subclass it in a test module.

    Set :attr:`optimizer_class` and :attr:`optimizer_kwargs` in a subclass whose name starts with ``Test`` and
    pytest runs every ``test_*`` method. Each ``test_*`` method loops over :attr:`dtypes` and calls the matching
    ``check_*`` method, which raises :class:`AssertionError` with a message saying what broke; the checks can be
    called directly too (on a deliberately broken optimizer, say). Checks that do not apply raise
    :class:`unittest.SkipTest`, which pytest reports as a skip. Nothing here imports pytest.

    What is checked, on small deterministic problems (a separable smooth loss on a ``3x4`` and a ``5`` tensor, and
    a 20-dimensional quadratic with condition number 10):

    - param groups: a group given its own hyperparameters (:attr:`frozen_group`, ``lr=0`` by default) keeps them
      and its parameters do not move, while the other group inherits the defaults and moves;
    - state_dict round trip: ``k`` steps, ``state_dict`` through ``torch.save``/``torch.load(weights_only=True)``,
      a fresh optimizer on fresh copies of the parameters loads it and runs ``m`` more steps; the parameters must
      equal, bit for bit, those of a run of ``k + m`` steps never interrupted;
    - closure: ``step(closure)`` calls the closure and returns the loss it returned;
    - convergence: on :math:`f(x) = \tfrac12 \sum_i a_i (x_i - c_i)^2`, :math:`a_i \in [1, 10]`, the loss drops
      by :attr:`expected_decrease` in :attr:`quadratic_steps` steps from :math:`x = 0`;
    - ``zero_grad``: sets gradients to None (default) or to zeros (``set_to_none=False``);
    - parameters whose ``grad`` is None are left alone, and join in later once they get a gradient;
    - ``foreach`` parity: ``foreach=True`` and ``foreach=False`` give the same trajectory (when accepted);
    - ``add_param_group``: the new group gets the defaults, its parameters move, a duplicate parameter raises;
    - dtypes: float32 and float64 parameters keep their dtype, also side by side in one optimizer.

    Attributes:
        optimizer_class: the optimizer under test.
        optimizer_kwargs: constructor keywords (choose a learning rate that converges on the quadratic).
        supports_foreach: whether the constructor takes ``foreach``; None detects it from the signature.
        supports_param_groups: False for single-group optimizers (LBFGS-like); the group checks then skip.
        requires_closure: pass the closure to ``step`` in every check (LBFGS-like optimizers).
        frozen_group: hyperparameters that make a group's parameters stay put.
        dtypes: dtypes the ``test_*`` methods loop over.
        quadratic_steps: steps allowed on the quadratic.
        expected_decrease: factor by which the quadratic's loss must drop.
        roundtrip_steps: ``(k, m)`` steps before and after the state_dict round trip.
        foreach_exact: require bit-identical foreach trajectories (else the dtype's tolerances, scaled by 10).

    Example:
        >>> class SGDConformance(OptimizerConformance):
        ...     optimizer_class = torch.optim.SGD
        ...     optimizer_kwargs = {"lr": 0.05, "momentum": 0.9}
        >>> SGDConformance().check_state_dict_roundtrip(torch.float64)
        >>> SGDConformance().test_convergence()
    """

    optimizer_class: ClassVar[type[torch.optim.Optimizer] | None] = None
    optimizer_kwargs: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    supports_foreach: ClassVar[bool | None] = None
    supports_param_groups: ClassVar[bool] = True
    requires_closure: ClassVar[bool] = False
    frozen_group: ClassVar[Mapping[str, Any]] = MappingProxyType({"lr": 0.0})
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    quadratic_steps: ClassVar[int] = 200
    expected_decrease: ClassVar[float] = 100.0
    roundtrip_steps: ClassVar[tuple[int, int]] = (5, 5)
    foreach_exact: ClassVar[bool] = True

    # ---------------------------------------------------------------- hooks

    def make_optimizer(self, params: Iterable[Any], **overrides: Any) -> torch.optim.Optimizer:
        """Build the optimizer under test; override for optimizers with an unusual constructor.

        Args:
            params: tensors or param-group dicts, as ``torch.optim.Optimizer`` takes them.
            **overrides: keywords that replace entries of :attr:`optimizer_kwargs`.
        """
        if self.optimizer_class is None:
            raise AssertionError(f"{type(self).__name__} must set optimizer_class")
        return self.optimizer_class(params, **{**self.optimizer_kwargs, **overrides})

    # ---------------------------------------------------------------- helpers

    def _step(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], loss: LossFunction) -> None:
        def closure() -> torch.Tensor:
            # Optimizers may call the closure inside their own no_grad step.
            with torch.enable_grad():
                optimizer.zero_grad()
                value = loss(params)
                value.backward()
            return value

        if self.requires_closure:
            # torch annotates the closure as returning float; returning the loss tensor is the documented use.
            optimizer.step(closure)  # pyright: ignore[reportCallIssue, reportArgumentType]
        else:
            closure()
            optimizer.step()

    def _train(
        self,
        optimizer: torch.optim.Optimizer,
        params: Sequence[torch.Tensor],
        steps: int,
        loss: LossFunction = _smooth_loss,
    ) -> Trajectory:
        trajectory: Trajectory = []
        for _ in range(steps):
            self._step(optimizer, params, loss)
            trajectory.append(_snapshot(params))
        return trajectory

    def _name(self) -> str:
        cls = self.optimizer_class
        return cls.__name__ if cls is not None else type(self).__name__

    def _accepts_foreach(self) -> bool:
        if self.supports_foreach is not None:
            return self.supports_foreach
        if self.optimizer_class is None:
            return False
        return "foreach" in inspect.signature(self.optimizer_class).parameters

    # ---------------------------------------------------------------- checks

    def check_param_groups(self, dtype: torch.dtype = torch.float64) -> None:
        """A group with its own hyperparameters (:attr:`frozen_group`) keeps them and stays put; the other moves."""
        if not self.supports_param_groups:
            skip(f"{self._name()} supports a single param group (supports_param_groups is False)")
        free, frozen = _initial_parameters(dtype)
        free_start, frozen_start = _snapshot([free, frozen])
        optimizer = self.make_optimizer([{"params": [free]}, {"params": [frozen], **self.frozen_group}])
        if len(optimizer.param_groups) != 2:
            raise AssertionError(f"{self._name()}: expected 2 param groups, got {len(optimizer.param_groups)}")
        inherited, own = optimizer.param_groups
        for key, value in self.frozen_group.items():
            if key not in own or not _same_value(own[key], value):
                raise AssertionError(
                    f"{self._name()}: param group 1 was given {key}={value!r} but holds {own.get(key)!r}"
                )
        for key, value in optimizer.defaults.items():
            if key not in inherited or not _same_value(inherited[key], value):
                raise AssertionError(
                    f"{self._name()}: param group 0 should inherit the default {key}={value!r}, "
                    f"holds {inherited.get(key)!r}"
                )
        self._train(optimizer, [free, frozen], 5)
        if not torch.equal(frozen, frozen_start):
            raise AssertionError(
                f"{self._name()} ({dtype}): the parameters of the group with {dict(self.frozen_group)} moved by "
                f"{max_difference(frozen, frozen_start):.3g}; per-group hyperparameters are not honoured"
            )
        if torch.equal(free, free_start):
            raise AssertionError(f"{self._name()} ({dtype}): the parameters of the default group did not move")

    def check_state_dict_roundtrip(self, dtype: torch.dtype = torch.float64) -> None:
        """Interrupting training with a state_dict save/load changes nothing, bit for bit."""
        before, after = self.roundtrip_steps
        reference_params = _initial_parameters(dtype)
        reference = self._train(self.make_optimizer(reference_params), reference_params, before + after)

        params = _initial_parameters(dtype)
        first = self.make_optimizer(params)
        self._train(first, params, before)
        saved = weights_only_roundtrip(f"{self._name()}.state_dict()", first.state_dict())

        resumed_params = [p.detach().clone().requires_grad_(True) for p in params]
        resumed = self.make_optimizer(resumed_params)
        resumed.load_state_dict(saved)
        continued = self._train(resumed, resumed_params, after)
        for step, (got, want) in enumerate(zip(continued, reference[before:], strict=True)):
            for index, (g, w) in enumerate(zip(got, want, strict=True)):
                if not torch.equal(g, w):
                    raise AssertionError(
                        f"{self._name()} ({dtype}): after a state_dict round trip at step {before}, parameter "
                        f"{index} differs from the uninterrupted run at step {before + step + 1} by "
                        f"{max_difference(g, w):.3g}; load_state_dict does not restore the optimizer state"
                    )

    def check_closure(self, dtype: torch.dtype = torch.float64) -> None:
        """``step(closure)`` calls the closure and returns the loss it computed."""
        params = _initial_parameters(dtype)
        start = _snapshot(params)
        optimizer = self.make_optimizer(params)
        returned: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            with torch.enable_grad():
                optimizer.zero_grad()
                value = _smooth_loss(params)
                value.backward()
            returned.append(value)
            return value

        result = optimizer.step(closure)  # pyright: ignore[reportCallIssue, reportArgumentType]
        if not returned:
            raise AssertionError(f"{self._name()}: step(closure) never called the closure")
        if not isinstance(result, torch.Tensor) or not any(torch.equal(result, r) for r in returned):
            raise AssertionError(
                f"{self._name()}: step(closure) returned {result!r}, not the loss the closure returned "
                f"({returned[0].item():.6g})"
            )
        if all(torch.equal(p, s) for p, s in zip(params, start, strict=True)):
            raise AssertionError(f"{self._name()}: step(closure) did not move the parameters")

    def check_convergence(self, dtype: torch.dtype = torch.float64) -> None:
        r"""The loss of a strongly convex quadratic drops by :attr:`expected_decrease` in :attr:`quadratic_steps`."""
        size = 20
        curvature = torch.logspace(0.0, 1.0, size, dtype=dtype)
        minimiser = torch.linspace(-1.0, 1.0, size, dtype=dtype) + 0.5
        x = torch.zeros(size, dtype=dtype, requires_grad=True)

        def quadratic(params: Sequence[torch.Tensor]) -> torch.Tensor:
            return 0.5 * (curvature * (params[0] - minimiser) ** 2).sum()

        with torch.no_grad():
            initial = float(quadratic([x]))
        self._train(self.make_optimizer([x]), [x], self.quadratic_steps, quadratic)
        with torch.no_grad():
            final = float(quadratic([x]))
        if not final <= initial / self.expected_decrease:
            raise AssertionError(
                f"{self._name()} ({dtype}): on a quadratic with condition number 10 the loss went from "
                f"{initial:.4g} to {final:.4g} in {self.quadratic_steps} steps, a decrease by "
                f"{initial / final if final > 0 else float('inf'):.3g}, less than expected_decrease="
                f"{self.expected_decrease:g}"
            )
        if x.dtype != dtype:
            raise AssertionError(f"{self._name()}: the parameter changed dtype from {dtype} to {x.dtype}")

    def check_zero_grad(self, dtype: torch.dtype = torch.float64) -> None:
        """``zero_grad()`` sets gradients to None, ``zero_grad(set_to_none=False)`` to zeros."""
        params = _initial_parameters(dtype)
        optimizer = self.make_optimizer(params)
        _smooth_loss(params).backward()
        optimizer.zero_grad(set_to_none=False)
        for index, p in enumerate(params):
            if p.grad is None or bool(p.grad.ne(0).any()):
                raise AssertionError(
                    f"{self._name()}: zero_grad(set_to_none=False) left parameter {index}'s grad as {p.grad!r}"
                )
        _smooth_loss(params).backward()
        optimizer.zero_grad()
        for index, p in enumerate(params):
            if p.grad is not None:
                raise AssertionError(f"{self._name()}: zero_grad() left parameter {index}'s grad set, not None")

    def check_none_grad_skipped(self, dtype: torch.dtype = torch.float64) -> None:
        """A parameter without a gradient does not move, and moves once it has one."""
        used, unused = _initial_parameters(dtype)
        unused_start = unused.detach().clone()
        optimizer = self.make_optimizer([used, unused])
        self._train(optimizer, [used, unused], 3, lambda params: _smooth_loss(params[:1]))
        if unused.grad is not None:
            raise AssertionError(f"{self._name()}: a parameter outside the loss got a gradient")
        if not torch.equal(unused, unused_start):
            raise AssertionError(
                f"{self._name()} ({dtype}): a parameter whose grad is None moved by "
                f"{max_difference(unused, unused_start):.3g}; such parameters must be skipped"
            )
        self._train(optimizer, [used, unused], 3)
        if torch.equal(unused, unused_start) or not bool(torch.isfinite(unused).all()):
            raise AssertionError(
                f"{self._name()} ({dtype}): a parameter that got its first gradient late did not take finite steps"
            )

    def check_foreach_parity(self, dtype: torch.dtype = torch.float64) -> None:
        """``foreach=True`` and ``foreach=False`` give the same trajectory."""
        if not self._accepts_foreach():
            skip(f"{self._name()} does not take a foreach argument")
        trajectories: list[Trajectory] = []
        for foreach in (True, False):
            params = _initial_parameters(dtype)
            trajectories.append(self._train(self.make_optimizer(params, foreach=foreach), params, 10))
        rtol, atol = (0.0, 0.0) if self.foreach_exact else tolerances(dtype, scale=10.0)
        for step, (got, want) in enumerate(zip(*trajectories, strict=True)):
            for index, (g, w) in enumerate(zip(got, want, strict=True)):
                assert_close(
                    g,
                    w,
                    rtol=rtol,
                    atol=atol,
                    msg=f"{self._name()} ({dtype}): foreach=True vs foreach=False, step {step + 1}, parameter {index}",
                )

    def check_add_param_group(self, dtype: torch.dtype = torch.float64) -> None:
        """A group added later gets the defaults and moves; adding a parameter twice raises ValueError."""
        if not self.supports_param_groups:
            skip(f"{self._name()} supports a single param group (supports_param_groups is False)")
        first, second = _initial_parameters(dtype)
        second_start = second.detach().clone()
        optimizer = self.make_optimizer([first])
        optimizer.add_param_group({"params": [second]})
        if len(optimizer.param_groups) != 2:
            raise AssertionError(f"{self._name()}: add_param_group did not add a group")
        added = optimizer.param_groups[1]
        missing = [key for key in optimizer.defaults if key not in added]
        if missing:
            raise AssertionError(f"{self._name()}: the added group lacks the defaults {missing}")
        self._train(optimizer, [first, second], 3)
        if torch.equal(second, second_start):
            raise AssertionError(f"{self._name()} ({dtype}): the parameters of an added group did not move")
        try:
            optimizer.add_param_group({"params": [first]})
        except ValueError:
            pass
        else:
            raise AssertionError(f"{self._name()}: add_param_group accepted a parameter already in a group")

    def check_dtype_preserved(self, dtype: torch.dtype = torch.float64) -> None:
        """Steps keep each parameter's dtype and keep it finite."""
        params = _initial_parameters(dtype)
        self._train(self.make_optimizer(params), params, 3)
        for index, p in enumerate(params):
            if p.dtype != dtype:
                raise AssertionError(f"{self._name()}: parameter {index} changed dtype from {dtype} to {p.dtype}")
            if not bool(torch.isfinite(p).all()):
                raise AssertionError(f"{self._name()} ({dtype}): parameter {index} is not finite after 3 steps")

    def check_mixed_dtypes(self) -> None:
        """A float32 and a float64 parameter in one optimizer each keep their dtype and move."""
        single = _initial_parameters(torch.float32)[0]
        double = _initial_parameters(torch.float64)[1]
        start = _snapshot([single, double])
        self._train(self.make_optimizer([single, double]), [single, double], 3)
        for p, s in zip((single, double), start, strict=True):
            if p.dtype != s.dtype:
                raise AssertionError(f"{self._name()}: with mixed dtypes a {s.dtype} parameter became {p.dtype}")
            if torch.equal(p, s) or not bool(torch.isfinite(p).all()):
                raise AssertionError(f"{self._name()}: with mixed dtypes the {s.dtype} parameter took no finite step")

    # ---------------------------------------------------------------- tests

    def test_param_groups(self) -> None:
        """Run :meth:`check_param_groups` for every dtype."""
        for dtype in self.dtypes:
            self.check_param_groups(dtype)

    def test_state_dict_roundtrip(self) -> None:
        """Run :meth:`check_state_dict_roundtrip` for every dtype."""
        for dtype in self.dtypes:
            self.check_state_dict_roundtrip(dtype)

    def test_closure(self) -> None:
        """Run :meth:`check_closure` for every dtype."""
        for dtype in self.dtypes:
            self.check_closure(dtype)

    def test_convergence(self) -> None:
        """Run :meth:`check_convergence` for every dtype."""
        for dtype in self.dtypes:
            self.check_convergence(dtype)

    def test_zero_grad(self) -> None:
        """Run :meth:`check_zero_grad` for every dtype."""
        for dtype in self.dtypes:
            self.check_zero_grad(dtype)

    def test_none_grad_skipped(self) -> None:
        """Run :meth:`check_none_grad_skipped` for every dtype."""
        for dtype in self.dtypes:
            self.check_none_grad_skipped(dtype)

    def test_foreach_parity(self) -> None:
        """Run :meth:`check_foreach_parity` for every dtype."""
        for dtype in self.dtypes:
            self.check_foreach_parity(dtype)

    def test_add_param_group(self) -> None:
        """Run :meth:`check_add_param_group` for every dtype."""
        for dtype in self.dtypes:
            self.check_add_param_group(dtype)

    def test_dtype_preserved(self) -> None:
        """Run :meth:`check_dtype_preserved` for every dtype, then :meth:`check_mixed_dtypes`."""
        for dtype in self.dtypes:
            self.check_dtype_preserved(dtype)
        self.check_mixed_dtypes()
