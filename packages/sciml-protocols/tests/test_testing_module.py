import unittest

import pytest
import torch
from sciml_protocols.testing import ModuleConformance
from torch import nn

# --------------------------------------------------------------------------- the suite on real modules


class TestLinear(ModuleConformance):
    run_compile = True  # the one inductor compile of this file; carries the `compile` marker

    def make_module(self, device=None, dtype=None):
        return nn.Linear(4, 3, device=device, dtype=dtype)

    def make_input(self, dtype):
        return torch.randn(5, 4, dtype=dtype)


class TestLayerNorm(ModuleConformance):
    def make_module(self, device=None, dtype=None):
        return nn.LayerNorm(6, device=device, dtype=dtype)

    def make_input(self, dtype):
        return torch.randn(2, 3, 6, dtype=dtype)


class TestMultiheadAttentionTraced(ModuleConformance):
    # A module with several inputs and outputs; compiled with aot_eager, which traces without generating code.
    run_compile = True
    compile_backend = "aot_eager"
    compile_dtypes = (torch.float32, torch.float64)

    def make_module(self, device=None, dtype=None):
        return nn.MultiheadAttention(8, 2, batch_first=True, device=device, dtype=dtype)

    def make_input(self, dtype):
        query = torch.randn(2, 5, 8, dtype=dtype)
        return query, query, query


def test_run_compile_marks_only_the_compile_test():
    marks = [mark.name for mark in getattr(TestLinear.test_torch_compile, "pytestmark", [])]
    assert marks == ["compile"]
    assert not hasattr(TestLinear.test_gradients, "pytestmark")
    assert not hasattr(TestLayerNorm.test_torch_compile, "pytestmark")


def test_compile_is_skipped_unless_asked_for():
    with pytest.raises(unittest.SkipTest, match="run_compile is False"):
        TestLayerNorm().test_torch_compile()


# --------------------------------------------------------------------------- broken modules


class IgnoresDtype(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device)

    def forward(self, x):
        return self.linear(x.to(self.linear.weight.dtype))


class IgnoresDevice(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4, dtype=dtype))

    def forward(self, x):
        return x @ self.weight.t()


class DropoutAlwaysOn(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)

    def forward(self, x):
        return nn.functional.dropout(self.linear(x), p=0.5, training=True)


class UnusedParameter(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)
        self.forgotten = nn.Parameter(torch.ones(3, device=device, dtype=dtype))

    def forward(self, x):
        return self.linear(x)


class ZeroGradientParameter(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)
        self.gate = nn.Parameter(torch.zeros(3, device=device, dtype=dtype))

    def forward(self, x):
        # relu'(0) = 0: the gate never learns.
        return self.linear(x) + torch.relu(self.gate)


class NonPersistentState(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)
        self.register_buffer("shift", torch.zeros(3, device=device, dtype=dtype), persistent=False)

    def forward(self, x):
        return self.linear(x) + self.shift


class LogOfNegative(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)

    def forward(self, x):
        return torch.log(self.linear(x))


class DataDependentBranch(nn.Module):
    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.linear = nn.Linear(4, 3, device=device, dtype=dtype)

    def forward(self, x):
        y = self.linear(x)
        if y.sum() > 0:  # a graph break: fullgraph=True must refuse it
            return y
        return -y


def suite_for(module_class, **attributes):
    class Suite(ModuleConformance):
        def make_module(self, device=None, dtype=None):
            return module_class(device=device, dtype=dtype)

        def make_input(self, dtype):
            return torch.randn(5, 4, dtype=dtype)

    for name, value in attributes.items():
        setattr(Suite, name, value)
    return Suite()


def test_factory_kwargs_check_catches_an_ignored_dtype():
    broken = suite_for(IgnoresDtype)
    broken.check_factory_kwargs(torch.float32)  # the default dtype hides the bug...
    with pytest.raises(AssertionError, match=r"'linear\.weight' is torch\.float32 .* dtype factory kwarg is ignored"):
        broken.check_factory_kwargs(torch.float64)  # ...which float64 reveals
    with pytest.raises(AssertionError, match=r"'linear\.weight' is torch\.float32"):
        broken.test_factory_kwargs()


def test_meta_check_catches_an_ignored_device():
    with pytest.raises(AssertionError, match="'weight' is on cpu, built with device='meta'"):
        suite_for(IgnoresDevice).check_meta_device(torch.float32)
    with pytest.raises(unittest.SkipTest, match="supports_meta is False"):
        suite_for(IgnoresDevice, supports_meta=False).check_meta_device(torch.float32)


def test_determinism_check_catches_dropout_in_eval_mode():
    with pytest.raises(AssertionError, match="two eval-mode forward passes differ"):
        suite_for(DropoutAlwaysOn).check_eval_deterministic(torch.float64)


def test_gradient_check_catches_unused_and_dead_parameters():
    with pytest.raises(AssertionError, match="no gradient reached the parameter 'forgotten'"):
        suite_for(UnusedParameter).check_gradients(torch.float64)
    with pytest.raises(AssertionError, match="the gradient of 'gate' is zero"):
        suite_for(ZeroGradientParameter).check_gradients(torch.float64)
    suite_for(ZeroGradientParameter, parameters_without_gradient=("gate",)).check_gradients(torch.float64)


def test_state_dict_check_catches_state_left_out_of_the_state_dict():
    with pytest.raises(AssertionError, match="after load_state_dict, output 0 differs"):
        suite_for(NonPersistentState).check_state_dict_roundtrip(torch.float64)


def test_finiteness_check_catches_nan_outputs():
    with pytest.raises(AssertionError, match="output 0 is not finite"):
        suite_for(LogOfNegative).check_output_finite(torch.float64)


def test_compile_check_catches_a_graph_break():
    broken = suite_for(DataDependentBranch, compile_backend="eager")
    with pytest.raises(AssertionError, match=r"torch\.compile\(fullgraph=True, backend='eager'\) failed"):
        broken.check_torch_compile(torch.float32)
