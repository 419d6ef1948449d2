import math
import pickle

import pytest
import sciml_protocols as sp
import torch


def test_input_error_is_value_error_and_names_argument():
    err = sp.SciMLInputError("tol", "must be >= 0, got -1")
    assert isinstance(err, ValueError)
    assert isinstance(err, sp.SciMLError)
    assert err.argument == "tol"
    assert "'tol'" in str(err)
    assert "must be >= 0" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)
    assert again.argument == "tol"


def test_check_tensor():
    x = torch.zeros(2)
    assert sp.check_tensor("x", x) is x
    with pytest.raises(sp.SciMLInputError, match="'x'.*torch.Tensor.*list"):
        sp.check_tensor("x", [1.0])


@pytest.mark.parametrize(
    ("shape", "pattern", "allow_batch", "ok"),
    [
        ((3, 4), (3, 4), False, True),
        ((3, 4), (None, 4), False, True),
        ((3, 4), (None, 5), False, False),
        ((2, 3, 4), (None, 4), False, False),
        ((2, 3, 4), (None, 4), True, True),
        ((4,), (None, 4), True, False),
        ((), (), False, True),
    ],
)
def test_check_shape(shape, pattern, allow_batch, ok):
    tensor = torch.zeros(shape)
    if ok:
        sp.check_shape("x", tensor, pattern, allow_batch=allow_batch)
    else:
        with pytest.raises(sp.SciMLInputError, match="'x': expected shape"):
            sp.check_shape("x", tensor, pattern, allow_batch=allow_batch)


def test_check_dtype():
    sp.check_dtype("x", torch.zeros(1, dtype=torch.float16))
    sp.check_dtype("x", torch.zeros(1, dtype=torch.int32), "real")
    sp.check_dtype("x", torch.zeros(1, dtype=torch.float64), [torch.float32, torch.float64])
    with pytest.raises(sp.SciMLInputError, match="floating"):
        sp.check_dtype("x", torch.zeros(1, dtype=torch.int64))
    with pytest.raises(sp.SciMLInputError, match="real"):
        sp.check_dtype("x", torch.zeros(1, dtype=torch.complex64), "real")
    with pytest.raises(sp.SciMLInputError, match="real"):
        sp.check_dtype("x", torch.zeros(1, dtype=torch.bool), "real")
    with pytest.raises(sp.SciMLInputError, match=r"float32, torch.float64\], got torch.float16"):
        sp.check_dtype("x", torch.zeros(1, dtype=torch.float16), [torch.float32, torch.float64])
    with pytest.raises(sp.SciMLInputError, match="'allowed'"):
        sp.check_dtype("x", torch.zeros(1), "complex")


def test_check_finite_counts_nan_and_inf():
    sp.check_finite("x", torch.tensor([1.0, 2.0]))
    sp.check_finite("x", torch.tensor([1, 2]))  # integers are always finite
    with pytest.raises(sp.SciMLInputError, match="2 NaN and 1 infinite"):
        sp.check_finite("x", torch.tensor([math.nan, math.inf, math.nan, 0.0]))


def test_check_positive():
    sp.check_positive("a", 1)
    sp.check_positive("a", 0.0, strict=False)
    sp.check_positive("a", torch.tensor([0.5, 2.0]))
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(sp.SciMLInputError, match="'a'"):
            sp.check_positive("a", bad)
    with pytest.raises(sp.SciMLInputError, match=">= 0"):
        sp.check_positive("a", -1e-9, strict=False)
    with pytest.raises(sp.SciMLInputError, match="smallest is -1.0"):
        sp.check_positive("a", torch.tensor([1.0, -1.0]))
    with pytest.raises(sp.SciMLInputError, match="NaN"):
        sp.check_positive("a", torch.tensor([1.0, math.nan]))
    with pytest.raises(sp.SciMLInputError, match="real number"):
        sp.check_positive("a", True)
    with pytest.raises(sp.SciMLInputError, match="real number"):
        sp.check_positive("a", "1")  # type: ignore[arg-type]


def test_check_nonempty():
    sp.check_nonempty("x", torch.zeros(1))
    with pytest.raises(sp.SciMLInputError, match="empty"):
        sp.check_nonempty("x", torch.zeros(3, 0))


def test_check_same_device():
    assert sp.check_same_device() is None
    assert sp.check_same_device(a=None) is None
    assert sp.check_same_device(a=torch.zeros(1), b=None, c=torch.ones(2)) == torch.device("cpu")
    with pytest.raises(sp.SciMLInputError, match="'c': is on meta but 'a' is on cpu"):
        sp.check_same_device(a=torch.zeros(1), c=torch.zeros(1, device="meta"))
    with pytest.raises(sp.SciMLInputError, match="'b'"):
        sp.check_same_device(a=torch.zeros(1), b=3.0)  # type: ignore[arg-type]


def test_check_in_choices():
    sp.check_in_choices("mode", "a", ["a", "b"])
    with pytest.raises(sp.SciMLInputError, match="'mode': must be one of 'a', 'b'; got 'c'"):
        sp.check_in_choices("mode", "c", ["a", "b"])


def test_check_int() -> None:
    import numpy as np

    assert sp.check_int("n", 3, minimum=1) == 3
    assert sp.check_int("n", np.int64(4)) == 4
    assert type(sp.check_int("n", np.int64(4))) is int
    for bad in (True, 2.0, "3", None):
        with pytest.raises(sp.SciMLInputError, match="argument 'n': must be an int"):
            sp.check_int("n", bad, minimum=0)
    with pytest.raises(sp.SciMLInputError, match=">= 1, got 0"):
        sp.check_int("n", 0, minimum=1)
