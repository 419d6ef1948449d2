"""sciml-norm: normalization-activation layers and weight parametrizations for PyTorch.

The EvoNorm family (timm-compatible names, arguments and state dicts) with fused Triton kernels for S0 and B0 on CUDA,
the EvoNorm layer search (:mod:`sciml_norm.search`), magnitude invariant parametrizations for hypernetworks (MIP) and
Neural Metamorphosis (NeuMeta).

Submodules load on first use, so ``import sciml_norm`` stays light.

Example:
    >>> import sciml_norm
    >>> sciml_norm.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._evonorm import EvoNorm2dB0 as EvoNorm2dB0
    from ._evonorm import EvoNorm2dB1 as EvoNorm2dB1
    from ._evonorm import EvoNorm2dB2 as EvoNorm2dB2
    from ._evonorm import EvoNorm2dS0 as EvoNorm2dS0
    from ._evonorm import EvoNorm2dS0a as EvoNorm2dS0a
    from ._evonorm import EvoNorm2dS1 as EvoNorm2dS1
    from ._evonorm import EvoNorm2dS1a as EvoNorm2dS1a
    from ._evonorm import EvoNorm2dS2 as EvoNorm2dS2
    from ._evonorm import EvoNorm2dS2a as EvoNorm2dS2a
    from ._evonorm import NormActConversion as NormActConversion
    from ._evonorm import convert_norm_act as convert_norm_act
    from ._functional import evonorm_b0 as evonorm_b0
    from ._functional import evonorm_s0 as evonorm_s0
    from ._mip import ENCODINGS as ENCODINGS
    from ._mip import HyperNetwork as HyperNetwork
    from ._mip import InputEncoding as InputEncoding
    from ._mip import encode_cos_sin as encode_cos_sin
    from ._mip import encode_input as encode_input
    from ._mip import encode_z_one_minus_z as encode_z_one_minus_z
    from ._mip import mip_convergence_experiment as mip_convergence_experiment
    from ._neumeta import CNNFamily as CNNFamily
    from ._neumeta import MLPFamily as MLPFamily
    from ._neumeta import NeuMetaINR as NeuMetaINR
    from ._neumeta import neumeta_width_experiment as neumeta_width_experiment
    from ._neumeta import normalize_coordinates as normalize_coordinates
    from ._neumeta import positional_encoding as positional_encoding
    from ._neumeta import recalibrate_batchnorm as recalibrate_batchnorm
    from ._neumeta import train_neumeta as train_neumeta
    from ._neumeta import weight_coordinates as weight_coordinates
    from ._neumeta_permute import apply_permutations as apply_permutations
    from ._neumeta_permute import channel_cities as channel_cities
    from ._neumeta_permute import compute_permutations as compute_permutations
    from ._neumeta_permute import held_karp_path as held_karp_path
    from ._neumeta_permute import nearest_neighbor_path as nearest_neighbor_path
    from ._neumeta_permute import network_total_variation as network_total_variation
    from ._neumeta_permute import path_length as path_length
    from ._neumeta_permute import permute_network as permute_network
    from ._neumeta_permute import shortest_hamiltonian_path as shortest_hamiltonian_path
    from ._neumeta_permute import two_opt_path as two_opt_path

_EXPORTS: dict[str, str] = {
    "EvoNorm2dB0": "._evonorm",
    "EvoNorm2dB1": "._evonorm",
    "EvoNorm2dB2": "._evonorm",
    "EvoNorm2dS0": "._evonorm",
    "EvoNorm2dS0a": "._evonorm",
    "EvoNorm2dS1": "._evonorm",
    "EvoNorm2dS1a": "._evonorm",
    "EvoNorm2dS2": "._evonorm",
    "EvoNorm2dS2a": "._evonorm",
    "convert_norm_act": "._evonorm",
    "NormActConversion": "._evonorm",
    "evonorm_s0": "._functional",
    "evonorm_b0": "._functional",
    "HyperNetwork": "._mip",
    "InputEncoding": "._mip",
    "ENCODINGS": "._mip",
    "encode_cos_sin": "._mip",
    "encode_z_one_minus_z": "._mip",
    "encode_input": "._mip",
    "mip_convergence_experiment": "._mip",
    "NeuMetaINR": "._neumeta",
    "MLPFamily": "._neumeta",
    "CNNFamily": "._neumeta",
    "train_neumeta": "._neumeta",
    "weight_coordinates": "._neumeta",
    "normalize_coordinates": "._neumeta",
    "positional_encoding": "._neumeta",
    "recalibrate_batchnorm": "._neumeta",
    "neumeta_width_experiment": "._neumeta",
    "permute_network": "._neumeta_permute",
    "compute_permutations": "._neumeta_permute",
    "apply_permutations": "._neumeta_permute",
    "network_total_variation": "._neumeta_permute",
    "channel_cities": "._neumeta_permute",
    "shortest_hamiltonian_path": "._neumeta_permute",
    "held_karp_path": "._neumeta_permute",
    "two_opt_path": "._neumeta_permute",
    "nearest_neighbor_path": "._neumeta_permute",
    "path_length": "._neumeta_permute",
}

__version__: str = _version("sciml-norm")

__all__ = [
    "__version__",
    "EvoNorm2dB0",
    "EvoNorm2dB1",
    "EvoNorm2dB2",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "EvoNorm2dS1",
    "EvoNorm2dS1a",
    "EvoNorm2dS2",
    "EvoNorm2dS2a",
    "convert_norm_act",
    "NormActConversion",
    "evonorm_s0",
    "evonorm_b0",
    "HyperNetwork",
    "InputEncoding",
    "ENCODINGS",
    "encode_cos_sin",
    "encode_z_one_minus_z",
    "encode_input",
    "mip_convergence_experiment",
    "NeuMetaINR",
    "MLPFamily",
    "CNNFamily",
    "train_neumeta",
    "weight_coordinates",
    "normalize_coordinates",
    "positional_encoding",
    "recalibrate_batchnorm",
    "neumeta_width_experiment",
    "permute_network",
    "compute_permutations",
    "apply_permutations",
    "network_total_variation",
    "channel_cities",
    "shortest_hamiltonian_path",
    "held_karp_path",
    "two_opt_path",
    "nearest_neighbor_path",
    "path_length",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
