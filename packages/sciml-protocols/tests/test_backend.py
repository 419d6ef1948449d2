import pytest
import sciml_protocols as sp
import torch
from sciml_protocols import _backend


@pytest.fixture(autouse=True)
def _fresh_warning_memory(monkeypatch):
    monkeypatch.setattr(_backend, "_warned", set())


def decide(requested, devices, *, have_triton=True, **env):
    return _backend._decide(requested, set(devices), have_triton=have_triton, env=env)


def test_rule_torch_is_always_torch():
    assert decide("torch", {"cuda"}) == ("torch", None)
    assert decide("torch", {"cpu"}) == ("torch", None)


def test_rule_auto_picks_triton_for_cuda_when_it_imports():
    assert decide("auto", {"cuda"}) == ("triton", None)


def test_rule_auto_cpu_takes_reference_even_under_interpreter():
    assert decide("auto", {"cpu"}) == ("torch", None)
    assert decide("auto", {"cpu"}, TRITON_INTERPRET="1") == ("torch", None)
    assert decide("auto", set()) == ("torch", None)


def test_rule_auto_respects_disable_flag():
    assert decide("auto", {"cuda"}, SCIML_DISABLE_TRITON="1") == ("torch", "SCIML_DISABLE_TRITON is set")
    assert decide("auto", {"cuda"}, SCIML_DISABLE_TRITON="0") == ("triton", None)
    assert decide("auto", {"cuda"}, SCIML_DISABLE_TRITON="") == ("triton", None)


def test_rule_auto_falls_back_without_triton():
    assert decide("auto", {"cuda"}, have_triton=False) == ("torch", "triton cannot be imported")


def test_rule_explicit_triton_on_cpu_raises_unless_interpreting():
    with pytest.raises(sp.SciMLInputError, match="TRITON_INTERPRET=1"):
        decide("triton", {"cpu"})
    assert decide("triton", {"cpu"}, TRITON_INTERPRET="1") == ("triton", None)
    assert decide("triton", {"cuda"}) == ("triton", None)


def test_rule_explicit_triton_without_triton_raises():
    with pytest.raises(sp.SciMLError, match="cannot be imported"):
        decide("triton", {"cuda"}, have_triton=False)


def test_rule_unknown_backend_and_mixed_devices_raise():
    with pytest.raises(sp.SciMLInputError, match="'backend'"):
        decide("cuda", {"cpu"})
    with pytest.raises(sp.SciMLInputError, match="several device types"):
        decide("auto", {"cpu", "cuda"})


def test_public_resolution_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.zeros(3)
    assert sp.resolve_backend("auto", x, None) == "torch"
    assert sp.resolve_backend("torch", x) == "torch"
    assert sp.resolve_backend() == "torch"
    with pytest.raises(sp.SciMLInputError, match="'tensors\\[0\\]'"):
        sp.resolve_backend("auto", [1.0])  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError):
        sp.resolve_backend("triton", x)


def test_public_resolution_under_interpreter(monkeypatch):
    if not sp.triton_available():
        pytest.fail("triton is a dependency of the PyPI torch build used by this project and must import here")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sp.resolve_backend("triton", torch.zeros(3)) == "triton"
    assert sp.resolve_backend("auto", torch.zeros(3)) == "torch"


def test_auto_fallback_warns_once_per_reason(monkeypatch):
    # Simulate CUDA tensors without a GPU: the device check is the only thing patched.
    monkeypatch.setattr(_backend, "_device_types", lambda tensors: {"cuda"})
    monkeypatch.setenv("SCIML_DISABLE_TRITON", "1")
    with pytest.warns(sp.BackendFallbackWarning, match="SCIML_DISABLE_TRITON"):
        assert sp.resolve_backend("auto", torch.zeros(1)) == "torch"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sp.resolve_backend("auto", torch.zeros(1)) == "torch"


@pytest.mark.gpu
def test_auto_picks_triton_on_real_cuda(monkeypatch):
    monkeypatch.delenv("SCIML_DISABLE_TRITON", raising=False)
    x = torch.zeros(3, device="cuda")
    assert sp.resolve_backend("auto", x) == ("triton" if sp.triton_available() else "torch")
    assert sp.resolve_backend("triton", x) == "triton"
