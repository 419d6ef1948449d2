import pytest
import torch
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import finite_difference_gradient, gradcheck_float64
from torch.autograd.gradcheck import GradcheckError


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2


class CubeWrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x**2


class CubeDetachedBackward(torch.autograd.Function):
    """First derivative right, but computed off the graph, so the second derivative is lost."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x.detach() ** 2


def test_correct_function_passes_first_and_second_order():
    gradcheck_float64(Cube.apply, torch.rand(4), gradgrad=True)


def test_wrong_backward_fails_with_the_gradcheck_report():
    with pytest.raises(
        AssertionError, match=r"gradcheck failed for CubeWrongBackward\.apply: Jacobian mismatch"
    ) as info:
        gradcheck_float64(CubeWrongBackward.apply, torch.rand(4))
    assert isinstance(info.value.__cause__, GradcheckError)


def test_lost_second_derivative_fails_only_with_gradgrad():
    x = torch.rand(3) + 0.5
    gradcheck_float64(CubeDetachedBackward.apply, x)
    with pytest.raises(AssertionError, match="gradgradcheck failed"):
        gradcheck_float64(CubeDetachedBackward.apply, x, gradgrad=True)


def test_floating_inputs_become_float64_leaves_and_others_pass_through():
    seen = {}

    def take(x, index, scale):
        seen["x"] = (x.dtype, x.requires_grad, x.is_leaf)
        seen["index"] = index.dtype
        seen["scale"] = scale
        return x[index] * scale

    original = torch.rand(5, dtype=torch.float32)
    gradcheck_float64(take, original, torch.tensor([0, 3]), 2.0)
    assert seen == {"x": (torch.float64, True, True), "index": torch.int64, "scale": 2.0}
    assert original.dtype == torch.float32
    assert not original.requires_grad


def test_keywords_reach_gradcheck():
    # A tolerance this loose lets the wrong backward through: proof that atol/rtol are forwarded.
    gradcheck_float64(CubeWrongBackward.apply, torch.rand(3) * 0.1, atol=1.0, rtol=1.0)


def test_refusals():
    with pytest.raises(SciMLInputError, match="inputs"):
        gradcheck_float64(lambda n: torch.ones(n), 3)
    with pytest.raises(SciMLInputError, match="raise_exception"):
        gradcheck_float64(torch.sin, torch.rand(2), raise_exception=False)


def test_finite_differences_match_a_closed_form():
    x = torch.tensor([[0.3, -1.2, 2.5], [0.0, 4.0, -0.7]], dtype=torch.float64)

    def f(v):
        return (torch.sin(v) * v**2).sum() + v[0, 0] * v[1, 2]

    expected = torch.cos(x) * x**2 + 2 * x * torch.sin(x)
    expected[0, 0] += x[1, 2]
    expected[1, 2] += x[0, 0]
    gradient = finite_difference_gradient(f, x)
    assert gradient.shape == x.shape
    assert gradient.dtype == torch.float64
    torch.testing.assert_close(gradient, expected, rtol=1e-8, atol=1e-9)


def test_finite_differences_on_a_non_contiguous_point():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).t()
    weights = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    gradient = finite_difference_gradient(lambda v: (weights * v).sum(), x)
    torch.testing.assert_close(gradient, weights, rtol=1e-9, atol=1e-9)


def test_step_is_relative_and_error_is_second_order():
    # For x**3 the central difference is exactly 3 x**2 + h**2, with h = eps * max(1, |x|).
    x = torch.tensor([0.5, -3.0], dtype=torch.float64)
    gradient = finite_difference_gradient(lambda v: (v**3).sum(), x, eps=0.1)
    torch.testing.assert_close(gradient, torch.tensor([0.75 + 0.01, 27.0 + 0.09], dtype=torch.float64))


def test_finite_differences_accept_python_numbers_and_keep_the_dtype():
    x = torch.tensor([2.0], dtype=torch.float32)
    gradient = finite_difference_gradient(lambda v: float(v[0]) ** 2, x)
    assert gradient.dtype == torch.float32
    torch.testing.assert_close(gradient, torch.tensor([4.0]), rtol=1e-3, atol=0.0)


def test_finite_difference_refusals():
    with pytest.raises(SciMLInputError, match="must return a scalar"):
        finite_difference_gradient(lambda v: v * 2, torch.ones(2, dtype=torch.float64))
    with pytest.raises(SciMLInputError, match="floating"):
        finite_difference_gradient(lambda v: v.sum(), torch.ones(2, dtype=torch.int64))
    with pytest.raises(SciMLInputError, match="eps"):
        finite_difference_gradient(lambda v: v.sum(), torch.ones(2), eps=0.0)
