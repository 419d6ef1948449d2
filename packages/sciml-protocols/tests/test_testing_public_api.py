import subprocess
import sys

import sciml_protocols.testing as kit

PUBLIC = {
    "TOLERANCES",
    "tolerances",
    "assert_close",
    "gradcheck_float64",
    "finite_difference_gradient",
    "interpreter_enabled",
    "assert_interpreter_parity",
    "OptimizerConformance",
    "DistributionConformance",
    "ModuleConformance",
}


def test_all_lists_exactly_the_public_surface():
    assert len(kit.__all__) == len(set(kit.__all__))
    assert set(kit.__all__) == PUBLIC
    public_attributes = {name for name in vars(kit) if not name.startswith("_")}
    assert public_attributes == PUBLIC


def test_every_public_callable_has_a_docstring_with_an_example():
    for name in PUBLIC - {"TOLERANCES"}:
        doc = getattr(kit, name).__doc__
        assert doc is not None, name
        assert "Example:" in doc, name


def test_kit_imports_with_neither_pytest_nor_triton_loaded():
    code = (
        "import sys, sciml_protocols.testing\n"
        "loaded = [m for m in ('pytest', '_pytest', 'triton', 'hypothesis') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
