from typing import Any, ClassVar

import pytest
import torch
from sciml_protocols.testing import OptimizerConformance

# --------------------------------------------------------------------------- the suite on real optimizers


class TestSGDMomentum(OptimizerConformance):
    optimizer_class = torch.optim.SGD
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 0.05, "momentum": 0.9}


class TestAdam(OptimizerConformance):
    optimizer_class = torch.optim.Adam
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 0.05}
    quadratic_steps = 300


class TestAdamWWithWeightDecay(OptimizerConformance):
    # Decoupled weight decay touches every parameter: the frozen group and grad-None checks bite here.
    optimizer_class = torch.optim.AdamW
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 0.05, "weight_decay": 0.01}
    quadratic_steps = 300


class TestLBFGS(OptimizerConformance):
    optimizer_class = torch.optim.LBFGS
    optimizer_kwargs: ClassVar[dict[str, Any]] = {"lr": 1.0, "max_iter": 5, "line_search_fn": "strong_wolfe"}
    requires_closure = True
    supports_param_groups = False
    quadratic_steps = 10
    expected_decrease = 1e6


def test_foreach_is_detected_from_the_signature():
    assert TestAdam()._accepts_foreach()
    assert not TestLBFGS()._accepts_foreach()


def test_a_suite_without_an_optimizer_says_so():
    with pytest.raises(AssertionError, match="must set optimizer_class"):
        OptimizerConformance().check_closure()


# --------------------------------------------------------------------------- broken optimizers


class ForgetfulAdam(torch.optim.Adam):
    def load_state_dict(self, state_dict):
        super().load_state_dict({**state_dict, "state": {}})


class GlobalLearningRateSGD(torch.optim.SGD):
    """Uses the constructor's lr for every group."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.defaults["lr"])
        return loss


class ClosureDroppingSGD(torch.optim.SGD):
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        super().step()


class DecayEverythingSGD(torch.optim.SGD):
    """Applies weight decay even to parameters that have no gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * 0.1)
        return super().step(closure)


class InconsistentForeachSGD(torch.optim.SGD):
    """Its foreach path scales the step by 1.001."""

    def __init__(self, params, lr=0.01, foreach=None):
        super().__init__(params, lr=lr * (1.001 if foreach else 1.0), foreach=foreach)


class UpcastingSGD(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.data = p.data.to(torch.float64)
        return loss


class LazyZeroGradSGD(torch.optim.SGD):
    def zero_grad(self, set_to_none=True):
        pass


class OpaqueStateAdam(torch.optim.Adam):
    def state_dict(self):
        state = super().state_dict()
        state["note"] = OpaqueNote()
        return state


class OpaqueNote:
    pass


class GroupWithoutDefaultsSGD(torch.optim.SGD):
    def add_param_group(self, param_group):
        if len(self.param_groups) == 0:
            super().add_param_group(param_group)
        else:
            self.param_groups.append({"params": list(param_group["params"]), "lr": self.defaults["lr"]})


def suite(optimizer, **kwargs):
    class Suite(OptimizerConformance):
        optimizer_class = optimizer
        optimizer_kwargs: ClassVar[dict[str, Any]] = kwargs

    return Suite()


def test_state_dict_roundtrip_catches_a_load_that_drops_state():
    broken = suite(ForgetfulAdam, lr=0.05)
    with pytest.raises(AssertionError, match="load_state_dict does not restore the optimizer state"):
        broken.check_state_dict_roundtrip(torch.float64)
    broken.check_param_groups(torch.float64)  # the other checks still pass: the failure above is specific


def test_state_dict_roundtrip_catches_state_that_weights_only_load_refuses():
    with pytest.raises(AssertionError, match=r"does not load back with torch.load\(weights_only=True\)"):
        suite(OpaqueStateAdam, lr=0.05).check_state_dict_roundtrip(torch.float32)


def test_param_groups_catches_an_optimizer_ignoring_per_group_lr():
    broken = suite(GlobalLearningRateSGD, lr=0.05)
    with pytest.raises(AssertionError, match="per-group hyperparameters are not honoured"):
        broken.check_param_groups(torch.float32)
    broken.check_convergence(torch.float64)


def test_closure_check_catches_a_step_that_drops_the_loss():
    with pytest.raises(AssertionError, match=r"step\(closure\) returned None"):
        suite(ClosureDroppingSGD, lr=0.05).check_closure(torch.float64)


def test_convergence_check_catches_an_optimizer_that_barely_moves():
    with pytest.raises(AssertionError, match="less than expected_decrease=100"):
        suite(torch.optim.SGD, lr=1e-4).check_convergence(torch.float64)


def test_none_grad_check_catches_updates_without_gradient():
    with pytest.raises(AssertionError, match="whose grad is None moved"):
        suite(DecayEverythingSGD, lr=0.05).check_none_grad_skipped(torch.float64)


def test_foreach_check_catches_diverging_implementations():
    broken = suite(InconsistentForeachSGD, lr=0.05)
    with pytest.raises(AssertionError, match="foreach=True vs foreach=False, step 1"):
        broken.check_foreach_parity(torch.float64)


def test_dtype_check_catches_an_optimizer_that_upcasts():
    broken = suite(UpcastingSGD, lr=0.05)
    with pytest.raises(AssertionError, match=r"changed dtype from torch\.float32 to torch\.float64"):
        broken.check_dtype_preserved(torch.float32)
    with pytest.raises(AssertionError, match="with mixed dtypes"):
        broken.check_mixed_dtypes()


def test_zero_grad_check_catches_a_no_op():
    with pytest.raises(AssertionError, match=r"zero_grad\(set_to_none=False\)"):
        suite(LazyZeroGradSGD, lr=0.05).check_zero_grad(torch.float64)


def test_add_param_group_check_catches_missing_defaults():
    broken = suite(GroupWithoutDefaultsSGD, lr=0.05, momentum=0.9)
    with pytest.raises(AssertionError, match="the added group lacks the defaults"):
        broken.check_add_param_group(torch.float64)
