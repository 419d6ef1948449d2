"""sciml-special: special functions that just work in PyTorch.

Log-Bessel functions of any order on CPU and GPU, the von Mises-Fisher distribution, and evolved float32
approximations.

Example:
    >>> import sciml_special
    >>> sciml_special.__version__
    '0.1.0'
"""

from importlib.metadata import version as _version

from ._bessel_api import iv_ratio as iv_ratio
from ._bessel_api import log_iv as log_iv
from ._bessel_api import log_ive as log_ive
from ._bessel_api import log_kv as log_kv
from ._bessel_api import log_kve as log_kve
from ._evolve import Candidate as Candidate
from ._evolve import Program as Program
from ._evolve import evolve as evolve
from ._exp2 import exp2_evolved as exp2_evolved
from ._vmf import HypersphericalUniform as HypersphericalUniform
from ._vmf import VonMisesFisher as VonMisesFisher
from ._vmf import fit_vmf as fit_vmf
from ._vmf import vmf_kappa_mle as vmf_kappa_mle
from ._vmf import vmf_log_normalizer as vmf_log_normalizer

__version__: str = _version("sciml-special")

__all__ = [
    "__version__",
    # log-Bessel functions
    "log_iv",
    "log_ive",
    "log_kv",
    "log_kve",
    "iv_ratio",
    # von Mises-Fisher distribution and fitting
    "VonMisesFisher",
    "HypersphericalUniform",
    "vmf_log_normalizer",
    "vmf_kappa_mle",
    "fit_vmf",
    # evolved float32 approximations (AutoNumerics-Zero)
    "exp2_evolved",
    "evolve",
    "Program",
    "Candidate",
]
