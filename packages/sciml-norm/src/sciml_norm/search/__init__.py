"""The normalization-activation layer search of "Evolving Normalization-Activation Layers".

Layers are computation graphs (:class:`LayerGraph`) over element-wise primitives and mean / std / second-moment
aggregations over batch, layer, instance and group axes (:data:`OPS`); :func:`search` evolves them from random
graphs with the paper's two rejection protocols (:func:`quality_check`, :func:`stability_check`) and Pareto
tournament selection over several proxy architectures, on a synthetic image task made here (:func:`make_dataset`),
through any ``concurrent.futures.Executor``, with JSON checkpoints.

Names load on first use, so ``import sciml_norm.search`` stays light.

Example:
    >>> from sciml_norm.search import LayerGraph
    >>> print(LayerGraph.evonorm_b0())
    x / max(std_bhw(x), (x·v1) + std_hw(x))

References:
    Hanxiao Liu, Andrew Brock, Karen Simonyan, Quoc V. Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
    arXiv:2004.02967.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._evolution import Candidate as Candidate
    from ._evolution import SearchConfig as SearchConfig
    from ._evolution import SearchResult as SearchResult
    from ._evolution import dominates as dominates
    from ._evolution import evaluate_layers as evaluate_layers
    from ._evolution import pareto_front as pareto_front
    from ._evolution import search as search
    from ._evolution import tournament_select as tournament_select
    from ._graph import APPEND_PROBABILITIES as APPEND_PROBABILITIES
    from ._graph import INITIAL_NODES as INITIAL_NODES
    from ._graph import INPUT_PROBABILITIES as INPUT_PROBABILITIES
    from ._graph import OP_WEIGHTS as OP_WEIGHTS
    from ._graph import GraphLayer as GraphLayer
    from ._graph import LayerGraph as LayerGraph
    from ._graph import Node as Node
    from ._graph import center_input as center_input
    from ._graph import known_layers as known_layers
    from ._graph import mutate as mutate
    from ._graph import random_graph as random_graph
    from ._primitives import OPS as OPS
    from ._primitives import Primitive as Primitive
    from ._proxy import ARCHITECTURES as ARCHITECTURES
    from ._proxy import ProxyTask as ProxyTask
    from ._proxy import TrainOutcome as TrainOutcome
    from ._proxy import build_model as build_model
    from ._proxy import make_dataset as make_dataset
    from ._proxy import train_proxy as train_proxy
    from ._rejection import CandidateEvaluation as CandidateEvaluation
    from ._rejection import EvaluationRequest as EvaluationRequest
    from ._rejection import QualityReport as QualityReport
    from ._rejection import RejectionConfig as RejectionConfig
    from ._rejection import StabilityReport as StabilityReport
    from ._rejection import evaluate_candidate as evaluate_candidate
    from ._rejection import quality_check as quality_check
    from ._rejection import stability_check as stability_check

_EXPORTS: dict[str, str] = {
    "Candidate": "._evolution",
    "SearchConfig": "._evolution",
    "SearchResult": "._evolution",
    "dominates": "._evolution",
    "evaluate_layers": "._evolution",
    "pareto_front": "._evolution",
    "search": "._evolution",
    "tournament_select": "._evolution",
    "APPEND_PROBABILITIES": "._graph",
    "INITIAL_NODES": "._graph",
    "INPUT_PROBABILITIES": "._graph",
    "OP_WEIGHTS": "._graph",
    "GraphLayer": "._graph",
    "LayerGraph": "._graph",
    "Node": "._graph",
    "center_input": "._graph",
    "known_layers": "._graph",
    "mutate": "._graph",
    "random_graph": "._graph",
    "OPS": "._primitives",
    "Primitive": "._primitives",
    "ARCHITECTURES": "._proxy",
    "ProxyTask": "._proxy",
    "TrainOutcome": "._proxy",
    "build_model": "._proxy",
    "make_dataset": "._proxy",
    "train_proxy": "._proxy",
    "CandidateEvaluation": "._rejection",
    "EvaluationRequest": "._rejection",
    "QualityReport": "._rejection",
    "RejectionConfig": "._rejection",
    "StabilityReport": "._rejection",
    "evaluate_candidate": "._rejection",
    "quality_check": "._rejection",
    "stability_check": "._rejection",
}

__all__ = [
    "APPEND_PROBABILITIES",
    "ARCHITECTURES",
    "Candidate",
    "CandidateEvaluation",
    "EvaluationRequest",
    "GraphLayer",
    "INITIAL_NODES",
    "INPUT_PROBABILITIES",
    "LayerGraph",
    "Node",
    "OPS",
    "OP_WEIGHTS",
    "Primitive",
    "ProxyTask",
    "QualityReport",
    "RejectionConfig",
    "SearchConfig",
    "SearchResult",
    "StabilityReport",
    "TrainOutcome",
    "build_model",
    "center_input",
    "dominates",
    "evaluate_candidate",
    "evaluate_layers",
    "known_layers",
    "make_dataset",
    "mutate",
    "pareto_front",
    "quality_check",
    "random_graph",
    "search",
    "stability_check",
    "tournament_select",
    "train_proxy",
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
