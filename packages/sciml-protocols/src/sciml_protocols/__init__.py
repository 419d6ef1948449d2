"""sciml-protocols: the contracts shared by every sciml package.

Results (:class:`Solution`), linear operators and a batched preconditioned conjugate gradient, optimality
conditions, kernels, backend resolution, errors and validators, demo and benchmark protocols. The testing kit lives
in :mod:`sciml_protocols.testing`.

Example:
    >>> import sciml_protocols as sp
    >>> sp.__version__
    '0.1.0'
"""

from importlib.metadata import version as _version

from ._backend import BACKENDS as BACKENDS
from ._backend import resolve_backend as resolve_backend
from ._backend import triton_available as triton_available
from ._cg import cg as cg
from ._cg import jacobi_preconditioner as jacobi_preconditioner
from ._errors import BackendFallbackWarning as BackendFallbackWarning
from ._errors import ConvergenceWarning as ConvergenceWarning
from ._errors import SciMLError as SciMLError
from ._errors import SciMLInputError as SciMLInputError
from ._kernels import GaussianKernel as GaussianKernel
from ._kernels import Kernel as Kernel
from ._kernels import LaplaceKernel as LaplaceKernel
from ._kernels import RandomFourierFeatures as RandomFourierFeatures
from ._linear_operator import AbstractLinearOperator as AbstractLinearOperator
from ._linear_operator import DenseOperator as DenseOperator
from ._linear_operator import DiagonalOperator as DiagonalOperator
from ._linear_operator import FunctionOperator as FunctionOperator
from ._linear_operator import KroneckerOperator as KroneckerOperator
from ._linear_operator import LinearOperator as LinearOperator
from ._linear_operator import aslinearoperator as aslinearoperator
from ._optimality import FixedPointCondition as FixedPointCondition
from ._optimality import OptimalityCondition as OptimalityCondition
from ._optimality import RootCondition as RootCondition
from ._optimality import fixed_point_condition as fixed_point_condition
from ._optimality import root_condition as root_condition
from ._optimality import stationarity_condition as stationarity_condition
from ._registry import BENCHMARK_ENTRY_POINT_GROUP as BENCHMARK_ENTRY_POINT_GROUP
from ._registry import DEMO_ENTRY_POINT_GROUP as DEMO_ENTRY_POINT_GROUP
from ._registry import BenchContext as BenchContext
from ._registry import BenchmarkCase as BenchmarkCase
from ._registry import BenchMeasurement as BenchMeasurement
from ._registry import BenchResult as BenchResult
from ._registry import Demo as Demo
from ._registry import DemoContext as DemoContext
from ._registry import DemoResult as DemoResult
from ._registry import discover_benchmarks as discover_benchmarks
from ._registry import discover_demos as discover_demos
from ._registry import measure_time as measure_time
from ._solution import Solution as Solution
from ._validation import check_dtype as check_dtype
from ._validation import check_finite as check_finite
from ._validation import check_in_choices as check_in_choices
from ._validation import check_int as check_int
from ._validation import check_nonempty as check_nonempty
from ._validation import check_positive as check_positive
from ._validation import check_same_device as check_same_device
from ._validation import check_shape as check_shape
from ._validation import check_tensor as check_tensor

__version__: str = _version("sciml-protocols")

__all__ = [
    "__version__",
    # results and errors
    "Solution",
    "SciMLError",
    "SciMLInputError",
    "ConvergenceWarning",
    "BackendFallbackWarning",
    # validators
    "check_tensor",
    "check_shape",
    "check_dtype",
    "check_finite",
    "check_positive",
    "check_nonempty",
    "check_same_device",
    "check_in_choices",
    "check_int",
    # linear operators and conjugate gradient
    "LinearOperator",
    "AbstractLinearOperator",
    "DenseOperator",
    "FunctionOperator",
    "DiagonalOperator",
    "KroneckerOperator",
    "aslinearoperator",
    "cg",
    "jacobi_preconditioner",
    # optimality conditions
    "OptimalityCondition",
    "RootCondition",
    "FixedPointCondition",
    "root_condition",
    "fixed_point_condition",
    "stationarity_condition",
    # kernels
    "Kernel",
    "GaussianKernel",
    "LaplaceKernel",
    "RandomFourierFeatures",
    # backends
    "BACKENDS",
    "resolve_backend",
    "triton_available",
    # demos and benchmarks
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
