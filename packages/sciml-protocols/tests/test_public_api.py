"""The public surface of sciml_protocols, and a bad call for every public function and class."""

import inspect
import math
from pathlib import Path

import pytest
import sciml_protocols as sp
import torch
from sciml_protocols import testing

EXPECTED = [
    "__version__",
    "Solution",
    "SciMLError",
    "SciMLInputError",
    "ConvergenceWarning",
    "BackendFallbackWarning",
    "check_tensor",
    "check_shape",
    "check_dtype",
    "check_finite",
    "check_positive",
    "check_nonempty",
    "check_same_device",
    "check_in_choices",
    "check_int",
    "LinearOperator",
    "AbstractLinearOperator",
    "DenseOperator",
    "FunctionOperator",
    "DiagonalOperator",
    "KroneckerOperator",
    "aslinearoperator",
    "cg",
    "jacobi_preconditioner",
    "OptimalityCondition",
    "RootCondition",
    "FixedPointCondition",
    "root_condition",
    "fixed_point_condition",
    "stationarity_condition",
    "Kernel",
    "GaussianKernel",
    "LaplaceKernel",
    "RandomFourierFeatures",
    "BACKENDS",
    "resolve_backend",
    "triton_available",
    "DEMO_ENTRY_POINT_GROUP",
    "BENCHMARK_ENTRY_POINT_GROUP",
    "Demo",
    "DemoContext",
    "DemoResult",
    "BenchmarkCase",
    "BenchContext",
    "BenchMeasurement",
    "BenchResult",
    "discover_demos",
    "discover_benchmarks",
    "measure_time",
]


def test_all_is_exactly_the_public_surface():
    assert sp.__all__ == EXPECTED
    public = sorted(n for n in dir(sp) if not n.startswith("_") and not inspect.ismodule(getattr(sp, n)))
    assert public == sorted(n for n in EXPECTED if n != "__version__")
    assert sp.__version__ == "0.1.0"


@pytest.mark.parametrize("name", [n for n in EXPECTED if callable(getattr(sp, n, None))])
def test_every_public_callable_documents_an_example(name):
    doc = inspect.getdoc(getattr(sp, name)) or ""
    assert "Example" in doc
    assert ">>>" in doc


SPD = torch.eye(3, dtype=torch.float64) * 2
NAN = torch.tensor([1.0, math.nan, 0.0], dtype=torch.float64)

# (label, call, the argument the message must name). Every public function and class of sciml_protocols appears
# at least once; validators are covered in test_errors_validation.py.
BAD_CALLS = [
    ("Solution", lambda: sp.Solution(value=None, converged=1, n_iter=0, residual=0.0), "converged"),
    ("SciMLInputError", lambda: sp.check_positive("eps", -1.0), "eps"),
    ("DenseOperator", lambda: sp.DenseOperator(torch.tensor([[math.nan]])), "matrix"),
    ("FunctionOperator", lambda: sp.FunctionOperator(3, (2, 2), dtype=torch.float64, device="cpu"), "matvec"),
    ("DiagonalOperator", lambda: sp.DiagonalOperator(torch.zeros(2, dtype=torch.int64)), "diag"),
    ("KroneckerOperator", lambda: sp.KroneckerOperator(SPD, "b"), "b"),
    ("aslinearoperator", lambda: sp.aslinearoperator("matrix"), "obj"),
    ("cg: rhs with NaN", lambda: sp.cg(SPD, NAN), "b"),
    ("cg: wrong length", lambda: sp.cg(SPD, torch.ones(4, dtype=torch.float64)), "b"),
    ("cg: empty", lambda: sp.cg(SPD, torch.ones(0, 3, dtype=torch.float64)), "b"),
    ("cg: dtype mismatch", lambda: sp.cg(SPD, torch.ones(3)), "b"),
    ("cg: negative rtol", lambda: sp.cg(SPD, torch.ones(3, dtype=torch.float64), rtol=-1.0), "rtol"),
    ("cg: max_iter", lambda: sp.cg(SPD, torch.ones(3, dtype=torch.float64), max_iter=0), "max_iter"),
    ("jacobi_preconditioner", lambda: sp.jacobi_preconditioner(torch.zeros(3, 3, dtype=torch.float64)), "a"),
    ("RootCondition", lambda: sp.RootCondition(None), "fn"),
    ("FixedPointCondition", lambda: sp.FixedPointCondition(None), "fn"),
    ("root_condition", lambda: sp.root_condition(lambda z: z[:1]).residual(torch.zeros(2)), "fn"),
    ("fixed_point_condition", lambda: sp.fixed_point_condition(1.0), "fn"),
    ("stationarity_condition", lambda: sp.stationarity_condition(1.0), "objective"),
    ("GaussianKernel", lambda: sp.GaussianKernel(lengthscale=math.nan), "lengthscale"),
    ("LaplaceKernel", lambda: sp.LaplaceKernel()(torch.zeros(2, 2), torch.zeros(2, 3)), "y"),
    ("RandomFourierFeatures", lambda: sp.RandomFourierFeatures(torch.zeros(3), 1.0), "frequencies"),
    ("RandomFourierFeatures variance", lambda: sp.RandomFourierFeatures(torch.zeros(2, 3), 0.0), "variance"),
    ("resolve_backend", lambda: sp.resolve_backend("cuda"), "backend"),
    ("discover_demos", lambda: sp.discover_demos(["sciml-no-such-package"]), "packages"),
    ("discover_benchmarks", lambda: sp.discover_benchmarks(["sciml-no-such-package"]), "packages"),
    ("measure_time: fn", lambda: sp.measure_time(42), "fn"),
    ("measure_time: min_run_time", lambda: sp.measure_time(lambda: None, min_run_time=-1.0), "min_run_time"),
    ("DemoContext", lambda: sp.DemoContext(out_dir=Path(".")).figure_path("../escape"), "name"),
    ("DemoResult", lambda: sp.DemoResult(title="", summary="s"), "title"),
    ("BenchMeasurement", lambda: sp.BenchMeasurement("sciml", -1.0), "time_s"),
    ("BenchMeasurement label", lambda: sp.BenchMeasurement("", 1.0), "label"),
    ("Solution.check", lambda: sp.Solution(None, False, 1, 1.0).check("ignore"), "action"),
    ("testing.tolerances", lambda: testing.tolerances(torch.int64), "dtype"),
]


@pytest.mark.parametrize(("label", "call", "argument"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_sciml_input_error_naming_the_argument(label, call, argument):
    with pytest.raises(sp.SciMLInputError) as info:
        call()
    assert info.value.argument == argument, f"{label}: named {info.value.argument!r}"
    assert isinstance(info.value, ValueError)


def test_bad_operators_give_an_honest_unconverged_solution_never_nan():
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    sol = sp.cg(indefinite, torch.ones(3, dtype=torch.float64))
    assert not sol.converged
    assert torch.isfinite(sol.value).all()
    assert sol.stats["reason"]
    skew = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sol = sp.cg(skew, torch.ones(3, dtype=torch.float64))
    assert not sol.converged
    assert "symmetric" in sol.stats["reason"]
    assert torch.isfinite(sol.value).all()
