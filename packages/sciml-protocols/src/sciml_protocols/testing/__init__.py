"""Testing kit shared by the sciml packages.

- tolerances per dtype (:data:`TOLERANCES`, :func:`tolerances`) and :func:`assert_close`, whose failure message
  says how large the worst errors are and where;
- gradient checks: :func:`gradcheck_float64` (torch's gradcheck, in float64, raising) and
  :func:`finite_difference_gradient` (a central-difference oracle);
- Triton kernels against their PyTorch reference under the interpreter: :func:`interpreter_enabled`,
  :func:`assert_interpreter_parity`;
- conformance suites to subclass in a test module: :class:`OptimizerConformance`,
  :class:`DistributionConformance`, :class:`ModuleConformance`.

It needs only torch and numpy: pytest and triton are never imported here (the suites skip through
:class:`unittest.SkipTest`, which pytest honours).

Example:
    >>> import torch
    >>> from sciml_protocols.testing import assert_close, tolerances
    >>> rtol, atol = tolerances(torch.float32)
    >>> assert_close(torch.ones(3), torch.ones(3, dtype=torch.float64) + 1e-7)
"""

from ._distribution_suite import DistributionConformance as DistributionConformance
from ._gradcheck import finite_difference_gradient as finite_difference_gradient
from ._gradcheck import gradcheck_float64 as gradcheck_float64
from ._interpret import assert_interpreter_parity as assert_interpreter_parity
from ._interpret import interpreter_enabled as interpreter_enabled
from ._module_suite import ModuleConformance as ModuleConformance
from ._optimizer_suite import OptimizerConformance as OptimizerConformance
from ._tolerances import TOLERANCES as TOLERANCES
from ._tolerances import assert_close as assert_close
from ._tolerances import tolerances as tolerances

__all__ = [
    # comparisons
    "TOLERANCES",
    "tolerances",
    "assert_close",
    # gradients
    "gradcheck_float64",
    "finite_difference_gradient",
    # Triton under the interpreter
    "interpreter_enabled",
    "assert_interpreter_parity",
    # conformance suites
    "OptimizerConformance",
    "DistributionConformance",
    "ModuleConformance",
]
