"""Conformance suite for ``torch.nn.Module`` subclasses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ._common import max_difference, skip, weights_only_roundtrip
from ._tolerances import assert_close, tolerances

__all__ = ["ModuleConformance"]

ModuleInput = torch.Tensor | tuple[torch.Tensor, ...]


def _as_tuple(value: ModuleInput) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _outputs(module_name: str, result: object) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, tuple | list) and all(isinstance(r, torch.Tensor) for r in result):
        return tuple(result)
    raise AssertionError(f"{module_name}.forward must return a tensor or a tuple of tensors, got {type(result)}")


def _state(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


class ModuleConformance:
    """Contract every ``torch.nn.Module`` of a sciml package must meet; subclass it in a test module.

    Implement :meth:`make_module` and :meth:`make_input` in a subclass whose name starts with ``Test`` and pytest
    runs every ``test_*`` method; each loops over :attr:`dtypes` and calls the matching ``check_*`` method, which
    raises :class:`AssertionError` with a message saying what broke (they can be called directly too). Checks that
    do not apply raise :class:`unittest.SkipTest`, reported by pytest as a skip. Nothing here imports pytest.

    - factory kwargs: ``make_module(device="cpu", dtype=dtype)`` gives floating parameters, buffers and outputs of
      that dtype on that device; with :attr:`supports_meta`, ``device="meta"`` builds without allocating and the
      forward on meta inputs gives meta outputs of the right shapes;
    - state_dict: a fresh module loading a perturbed module's state_dict (through ``torch.save``/``torch.load``
      with ``weights_only=True``) reproduces its outputs exactly;
    - determinism: two forward passes in eval mode agree exactly;
    - gradients: a random linear functional of the outputs sends a finite, non-zero gradient to every parameter
      (except those named in :attr:`parameters_without_gradient`);
    - finiteness: outputs are finite;
    - ``torch.compile(fullgraph=True)``: opt in with :attr:`run_compile` (a first compile costs about a minute on
      two cores). The compiled module must agree with eager within the dtype's tolerances scaled by 10. When a
      subclass sets ``run_compile = True`` under pytest, its ``test_torch_compile`` carries the ``compile`` marker
      (register it when running with ``--strict-markers``), so ``-m "not compile"`` leaves it out.

    Attributes:
        dtypes: dtypes the ``test_*`` methods loop over.
        supports_meta: whether ``device="meta"`` is expected to work.
        run_compile: run :meth:`check_torch_compile` in ``test_torch_compile`` (skipped otherwise).
        compile_backend: backend given to ``torch.compile``; ``"inductor"`` is the real thing, ``"aot_eager"``
            traces forward and backward graphs without generating code (seconds instead of a minute).
        compile_dtypes: dtypes of the compile test.
        parameters_without_gradient: names of parameters allowed a zero gradient.
        seed: seed of inputs, perturbations and weights.

    Example:
        >>> class LinearConformance(ModuleConformance):
        ...     def make_module(self, device=None, dtype=None):
        ...         return torch.nn.Linear(4, 3, device=device, dtype=dtype)
        ...
        ...     def make_input(self, dtype):
        ...         return torch.randn(2, 4, dtype=dtype)
        >>> LinearConformance().check_factory_kwargs(torch.float64)
        >>> LinearConformance().test_state_dict_roundtrip()
    """

    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    supports_meta: ClassVar[bool] = True
    run_compile: ClassVar[bool] = False
    compile_backend: ClassVar[str] = "inductor"
    compile_dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    parameters_without_gradient: ClassVar[tuple[str, ...]] = ()
    seed: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        pytest = sys.modules.get("pytest")
        # Only when pytest is already running: the kit itself must import without it.
        if cls.run_compile and pytest is not None and "test_torch_compile" not in vars(cls):

            def test_torch_compile(self: ModuleConformance) -> None:
                ModuleConformance.test_torch_compile(self)

            test_torch_compile.__doc__ = ModuleConformance.test_torch_compile.__doc__
            cls.test_torch_compile = pytest.mark.compile(test_torch_compile)

    # ---------------------------------------------------------------- hooks

    def make_module(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
        """Return the module under test, built with the factory kwargs ``device`` and ``dtype``."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_module(device=None, dtype=None)")

    def make_input(self, dtype: torch.dtype) -> ModuleInput:
        """Return a small input (a tensor or a tuple of positional arguments) of ``dtype`` on the CPU."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_input(dtype)")

    # ---------------------------------------------------------------- helpers

    def _module(self, dtype: torch.dtype, device: torch.device | str | None = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.make_module(device=device, dtype=dtype)

    def _input(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            return _as_tuple(self.make_input(dtype))

    def _forward(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return _outputs(type(module).__name__, module(*inputs))

    # ---------------------------------------------------------------- checks

    def check_factory_kwargs(self, dtype: torch.dtype = torch.float64) -> None:
        """``dtype`` and ``device`` given to :meth:`make_module` reach every parameter, buffer and output."""
        module = self._module(dtype, device="cpu")
        name = type(module).__name__
        for tensor_name, tensor in _state(module):
            if tensor.dtype.is_floating_point and tensor.dtype != dtype:
                raise AssertionError(
                    f"{name}: {tensor_name!r} is {tensor.dtype} but the module was built with dtype={dtype}; the "
                    "dtype factory kwarg is ignored"
                )
            if tensor.device.type != "cpu":
                raise AssertionError(f"{name}: {tensor_name!r} is on {tensor.device}, built with device='cpu'")
        with torch.no_grad():
            outputs = self._forward(module, self._input(dtype))
        for index, output in enumerate(outputs):
            if output.dtype.is_floating_point and output.dtype != dtype:
                raise AssertionError(f"{name}: output {index} is {output.dtype} for a {dtype} module and input")

    def check_meta_device(self, dtype: torch.dtype = torch.float64) -> None:
        """``device="meta"`` builds without storage and the forward pass propagates shapes."""
        if not self.supports_meta:
            skip(f"{type(self).__name__}.supports_meta is False")
        module = self._module(dtype, device="meta")
        name = type(module).__name__
        for tensor_name, tensor in _state(module):
            if tensor.device.type != "meta":
                raise AssertionError(f"{name}: {tensor_name!r} is on {tensor.device}, built with device='meta'")
        inputs = self._input(dtype)
        with torch.no_grad():
            expected = self._forward(self._module(dtype), inputs)
            got = self._forward(module, tuple(x.to("meta") for x in inputs))
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            if g.device.type != "meta" or g.shape != e.shape or g.dtype != e.dtype:
                raise AssertionError(
                    f"{name}: on meta, output {index} is {g.dtype} {tuple(g.shape)} on {g.device}, expected "
                    f"{e.dtype} {tuple(e.shape)} on meta"
                )

    def check_state_dict_roundtrip(self, dtype: torch.dtype = torch.float64) -> None:
        """A fresh module loading a perturbed module's state_dict gives identical outputs."""
        source = self._module(dtype)
        name = type(source).__name__
        generator = torch.Generator().manual_seed(self.seed + 2)
        with torch.no_grad():
            # Perturbed so that a load that silently does nothing cannot pass on a deterministic initialisation.
            for _, tensor in _state(source):
                if tensor.dtype.is_floating_point:
                    tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
        state = weights_only_roundtrip(f"{name}.state_dict()", source.state_dict())
        target = self._module(dtype)
        if set(state) != set(target.state_dict()):
            raise AssertionError(
                f"{name}: state_dict keys differ between two instances: {sorted(set(state) ^ set(target.state_dict()))}"
            )
        target.load_state_dict(state)
        source.eval()
        target.eval()
        inputs = self._input(dtype)
        with torch.no_grad():
            pairs = zip(self._forward(target, inputs), self._forward(source, inputs), strict=True)
        for index, (got, want) in enumerate(pairs):
            if not torch.equal(got, want):
                raise AssertionError(
                    f"{name} ({dtype}): after load_state_dict, output {index} differs from the saved module's by "
                    f"{max_difference(got, want):.3g}"
                )

    def check_eval_deterministic(self, dtype: torch.dtype = torch.float64) -> None:
        """Two forward passes in eval mode give identical outputs."""
        module = self._module(dtype).eval()
        inputs = self._input(dtype)
        with torch.no_grad():
            first = self._forward(module, inputs)
            second = self._forward(module, inputs)
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            if not torch.equal(a, b):
                raise AssertionError(
                    f"{type(module).__name__} ({dtype}): two eval-mode forward passes differ in output {index} by "
                    f"{max_difference(a, b):.3g}"
                )

    def check_gradients(self, dtype: torch.dtype = torch.float64) -> None:
        """Every parameter gets a finite, non-zero gradient from a random linear functional of the outputs."""
        module = self._module(dtype).train()
        name = type(module).__name__
        outputs = self._forward(module, self._input(dtype))
        generator = torch.Generator().manual_seed(self.seed + 3)
        # Random weights rather than a plain sum: a sum can cancel exactly (normalisation layers, softmax).
        loss = torch.zeros((), dtype=torch.float64)
        for output in outputs:
            if output.dtype.is_floating_point and output.requires_grad:
                weights = torch.randn(output.shape, generator=generator, dtype=output.dtype)
                loss = loss + (weights * output).sum().to(torch.float64)
        if not loss.requires_grad:
            raise AssertionError(f"{name}: no output depends differentiably on the parameters")
        loss.backward()
        for parameter_name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            if parameter.grad is None:
                raise AssertionError(f"{name}: no gradient reached the parameter {parameter_name!r}")
            if not bool(torch.isfinite(parameter.grad).all()):
                raise AssertionError(f"{name}: the gradient of {parameter_name!r} is not finite")
            if parameter_name not in self.parameters_without_gradient and not bool(parameter.grad.ne(0).any()):
                raise AssertionError(
                    f"{name}: the gradient of {parameter_name!r} is zero; list it in parameters_without_gradient "
                    "if that is intended"
                )

    def check_output_finite(self, dtype: torch.dtype = torch.float64) -> None:
        """Outputs on the sample input are finite."""
        module = self._module(dtype).eval()
        with torch.no_grad():
            outputs = self._forward(module, self._input(dtype))
        for index, output in enumerate(outputs):
            if (output.dtype.is_floating_point or output.dtype.is_complex) and not bool(torch.isfinite(output).all()):
                raise AssertionError(f"{type(module).__name__} ({dtype}): output {index} is not finite")

    def check_torch_compile(self, dtype: torch.dtype = torch.float32) -> None:
        """``torch.compile(fullgraph=True)`` compiles the module and agrees with eager mode."""
        module = self._module(dtype).eval()
        name = type(module).__name__
        inputs = self._input(dtype)
        # Dynamo caches per code object and stops recompiling after a few variants (dtypes, instances, suites of
        # one class): start from a clean cache so that each check compiles for real.
        torch.compiler.reset()
        with torch.no_grad():
            expected = self._forward(module, inputs)
            compiled = torch.compile(module, fullgraph=True, backend=self.compile_backend)
            try:
                got = _outputs(name, compiled(*inputs))
            except Exception as err:  # dynamo reports graph breaks and unsupported code with its own exception types
                raise AssertionError(
                    f"{name}: torch.compile(fullgraph=True, backend={self.compile_backend!r}) failed: {err}"
                ) from err
        rtol, atol = tolerances(dtype, scale=10.0)
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_close(g, e, rtol=rtol, atol=atol, msg=f"{name} ({dtype}): compiled vs eager, output {index}")

    # ---------------------------------------------------------------- tests

    def test_factory_kwargs(self) -> None:
        """Run :meth:`check_factory_kwargs` for every dtype."""
        for dtype in self.dtypes:
            self.check_factory_kwargs(dtype)

    def test_meta_device(self) -> None:
        """Run :meth:`check_meta_device` for every dtype."""
        for dtype in self.dtypes:
            self.check_meta_device(dtype)

    def test_state_dict_roundtrip(self) -> None:
        """Run :meth:`check_state_dict_roundtrip` for every dtype."""
        for dtype in self.dtypes:
            self.check_state_dict_roundtrip(dtype)

    def test_eval_deterministic(self) -> None:
        """Run :meth:`check_eval_deterministic` for every dtype."""
        for dtype in self.dtypes:
            self.check_eval_deterministic(dtype)

    def test_gradients(self) -> None:
        """Run :meth:`check_gradients` for every dtype."""
        for dtype in self.dtypes:
            self.check_gradients(dtype)

    def test_output_finite(self) -> None:
        """Run :meth:`check_output_finite` for every dtype."""
        for dtype in self.dtypes:
            self.check_output_finite(dtype)

    def test_torch_compile(self) -> None:
        """Run :meth:`check_torch_compile` for every dtype in :attr:`compile_dtypes` when :attr:`run_compile`."""
        if not self.run_compile:
            skip(f"{type(self).__name__}.run_compile is False (torch.compile costs about a minute per module)")
        for dtype in self.compile_dtypes:
            self.check_torch_compile(dtype)
