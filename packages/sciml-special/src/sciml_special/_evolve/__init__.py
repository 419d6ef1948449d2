"""Evolutionary discovery of float32 approximations (AutoNumerics-Zero, Real et al., 2023).

Private subpackage: :func:`evolve`, :class:`Program` and :class:`Candidate` are re-exported by ``sciml_special``;
the pieces (CMA-ES, NSGA-II, mutations, float32 emulation) are importable from their modules for tests and
experiments.
"""

from ._cmaes import cma_es as cma_es
from ._float32 import fma_float32 as fma_float32
from ._float32 import fma_float32_torch as fma_float32_torch
from ._float32 import max_ulp_error as max_ulp_error
from ._float32 import ulp_error as ulp_error
from ._float32 import ulp_float32 as ulp_float32
from ._mutations import mutate as mutate
from ._mutations import random_program as random_program
from ._nsga2 import crowding_distance as crowding_distance
from ._nsga2 import non_dominated_sort as non_dominated_sort
from ._nsga2 import nsga2_order as nsga2_order
from ._program import Op as Op
from ._program import Program as Program
from ._program import Vertex as Vertex
from ._search import Candidate as Candidate
from ._search import evolve as evolve
from ._search import fit_constants as fit_constants

__all__ = [
    "Candidate",
    "Op",
    "Program",
    "Vertex",
    "cma_es",
    "crowding_distance",
    "evolve",
    "fit_constants",
    "fma_float32",
    "fma_float32_torch",
    "max_ulp_error",
    "mutate",
    "non_dominated_sort",
    "nsga2_order",
    "random_program",
    "ulp_error",
    "ulp_float32",
]
