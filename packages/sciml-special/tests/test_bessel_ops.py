"""torch.library registration, torch.compile, input handling and backend dispatch of the log-Bessel functions."""

import math

import pytest
import torch
from sciml_protocols import SciMLInputError
from sciml_special import iv_ratio, log_iv, log_ive, log_kv, log_kve
from sciml_special._ops import iv_ratio_op, log_iv_op, log_kv_op

F64 = torch.float64
PUBLIC = [log_iv, log_kv, iv_ratio, log_ive, log_kve]


def _samples(dtype):
    # one element per region, plus a special point
    v = torch.tensor([0.5, 3.0, 50.0, 100.0, 1.5, 2.0], dtype=dtype)
    x = torch.tensor([100.0, 2e3, 30.0, 66.0, 2.0, 0.0], dtype=dtype)
    return v, x


# torch's fake-tensor conversion inside opcheck reads .grad of a non-leaf (a torch-internal warning it means to hide)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("op", [log_iv_op, log_kv_op, iv_ratio_op], ids=lambda o: o._name)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck(op, dtype):
    v, x = _samples(dtype)
    keep = x > 0  # the gradient at x = 0 is infinite by definition
    v, x = v[keep], x[keep]
    for scaled in (False, True):
        torch.library.opcheck(op, (v, x, scaled, "torch"))
        torch.library.opcheck(op, (v.clone().requires_grad_(), x.clone().requires_grad_(), scaled, "torch"))


@pytest.mark.compile
def test_compile_fullgraph_forward_and_backward():
    # one compile (inductor, CPU): the operators are opaque to the compiler in both directions
    def f(v, x):
        return (log_iv(v, x, validate=False) + log_kv(v, x, validate=False) * iv_ratio(v, x, validate=False)).sum()

    compiled = torch.compile(f, fullgraph=True)
    v = torch.tensor([0.5, 3.0, 50.0, 1.5], dtype=F64, requires_grad=True)
    x = torch.tensor([100.0, 2e3, 30.0, 2.0], dtype=F64, requires_grad=True)
    got = compiled(v, x)
    want = f(v, x)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    for a, b in zip(torch.autograd.grad(got, (v, x)), torch.autograd.grad(want, (v, x)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__name__)
def test_validation_names_the_argument(fn):
    one = torch.ones(3, dtype=F64)
    bad_cases = [
        ("v", -one, one),
        ("x", one, -one),
        ("v", one * math.nan, one),
        ("x", one, one * math.inf),
        ("v", torch.ones(3, dtype=torch.int64), one),
        ("x", one, torch.ones(3, dtype=torch.int64)),
        ("x", one, torch.ones(3, dtype=F64, device="meta")),
        ("v", "1.0", one),
    ]
    for name, v, x in bad_cases:
        with pytest.raises(SciMLInputError) as info:
            fn(v, x)
        assert info.value.argument == name


def test_validation_is_a_value_error():
    with pytest.raises(ValueError, match="argument 'x'"):
        log_iv(1.0, -2.0)


def test_python_numbers_and_broadcasting():
    assert log_iv(0.5, 2.0).dtype == torch.get_default_dtype()
    v = torch.tensor([[0.0], [1.0], [10.0]], dtype=F64)
    x = torch.tensor([0.5, 5.0, 50.0, 500.0], dtype=F64)
    out = log_kv(v, x)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert out[i, j] == log_kv(v[i, 0], x[j])
    assert log_iv(2.0, x).shape == (4,)
    assert log_iv(x, 2.0).dtype == F64


def test_dtypes():
    v, x = _samples(F64)
    want = log_iv(v, x)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        got = log_iv(v.to(dtype), x.to(dtype))
        assert got.dtype == dtype
    # mixed precision promotes
    assert log_iv(v.float(), x).dtype == F64
    assert torch.allclose(log_iv(v.float(), x.float()).double(), want, rtol=1e-6, equal_nan=True)


def test_empty_and_scalar_shapes():
    empty = torch.empty(0, dtype=F64)
    assert log_iv(empty, empty).shape == (0,)
    assert log_kv(torch.tensor(1.0, dtype=F64), torch.tensor(2.0, dtype=F64)).shape == ()


def test_backend_choice():
    v, x = _samples(F64)
    torch.testing.assert_close(log_iv(v, x, backend="torch"), log_iv(v, x))
    with pytest.raises(SciMLInputError) as info:
        log_iv(v, x, backend="gpu")
    assert info.value.argument == "backend"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    v, x = _samples(F64)
    with pytest.raises(SciMLInputError) as info:
        log_iv(v, x, backend="triton")
    assert info.value.argument == "backend"


def test_reference_path_never_loads_the_kernels(monkeypatch):
    # a None entry in sys.modules makes any import of the kernel module fail: the CPU path must not try
    import sys

    monkeypatch.setitem(sys.modules, "sciml_special._kernels.bessel", None)
    v = torch.tensor([0.5, 30.0], requires_grad=True)
    x = torch.tensor([1e-3, 40.0])
    (log_iv(v, x).sum() + log_kv(v, x).sum() + iv_ratio(v, x).sum()).backward()
    assert torch.isfinite(v.grad).all()
