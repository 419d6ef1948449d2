"""``sciml bench sciml-bilevel``: implicit hypergradients against unrolled differentiation, time and memory.

Unrolled differentiation (reverse mode through every inner step, what ``higher`` and hand-written unrolls do) is
the peer; ours is the implicit hypergradient (conjugate gradient on the lower-level Hessian, matrix-free). Both
start from the same lower-level point and run the same inner gradient-descent steps; the hypergradient is checked
against the closed form of ridge regression, and memory is the size of the tensors autograd saves for the backward
pass (measured through ``torch.autograd.graph.saved_tensors_hooks``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from sciml_protocols import BenchContext, BenchMeasurement, BenchResult, measure_time

__all__ = ["HypergradientCostBenchmark", "cases"]


@dataclasses.dataclass(frozen=True)
class HypergradientCostBenchmark:
    """Hypergradient of a ridge regression's validation loss in its log-regularization, after ``inner_steps`` steps.

    The lower level (ridge regression, 400 training samples, 200 features, float64) is solved by gradient descent
    with step ``1 / L`` from zero; the implicit method differentiates the optimality condition at the last iterate,
    the unrolled one differentiates through every step. As the number of steps grows, the implicit method's memory
    stays constant while the unrolled one's grows linearly.
    """

    inner_steps: int = 200

    @property
    def name(self) -> str:
        """``hypergradient-T<steps>``."""
        return f"hypergradient-T{self.inner_steps}"

    @property
    def peer(self) -> str:
        """Unrolled reverse-mode differentiation."""
        return "unrolled differentiation"

    def run(self, ctx: BenchContext) -> BenchResult:
        """Time both methods and compare their memory and their error against the closed form."""
        from ._hypergrad import hypergradient
        from .problems import RidgeHyperparameter

        problem = RidgeHyperparameter(
            n_train=400, n_val=200, dim=200, noise=1.0, seed=ctx.seed, device=ctx.device, init_log_lambda=0.0
        )
        x = problem.init_upper()
        y0 = problem.init_lower()
        exact = problem.hypergradient(x)
        lipschitz = _lower_lipschitz(problem, x)
        steps = self.inner_steps if not ctx.quick else max(1, self.inner_steps // 10)
        options: dict[str, Any] = {"inner_steps": steps, "inner_lr": 1.0 / lipschitz}
        measured = {}
        for method in ("implicit_cg", "unrolled"):
            result = hypergradient(problem, x, y0, method=method, **options)
            grad = result.value[0]
            error = float((grad - exact).norm() / exact.norm().clamp_min(1e-300))
            seconds = measure_time(
                lambda m=method: hypergradient(problem, x, y0, method=m, **options),
                device=ctx.device,
                min_run_time=ctx.min_run_time,
            )
            measured[method] = (
                seconds,
                {
                    "saved tensor MB": result.stats["saved_tensor_bytes"] / 1e6,
                    "relative error vs closed form": error,
                },
            )
        ours = BenchMeasurement("sciml_bilevel.hypergradient(implicit_cg)", *measured["implicit_cg"])
        peer = BenchMeasurement("unrolled reverse mode", *measured["unrolled"])
        ratio = measured["unrolled"][1]["saved tensor MB"] / max(measured["implicit_cg"][1]["saved tensor MB"], 1e-12)
        return BenchResult(
            self.name,
            f"ridge regression, 400 x 200, float64, {steps} inner gradient steps",
            ours,
            peer,
            note=f"unrolling saves {ratio:.0f}x more tensors for the backward pass",
        )


def _lower_lipschitz(problem: Any, x: torch.Tensor) -> float:
    """Largest eigenvalue of the lower-level Hessian at ``x`` (power iteration on Hessian-vector products)."""
    y = problem.init_lower().requires_grad_()
    (gradient,) = torch.autograd.grad(problem.lower_loss(x, y), y, create_graph=True)
    vector = torch.ones_like(y) / y.numel() ** 0.5
    value = 1.0
    for _ in range(50):
        (hv,) = torch.autograd.grad(gradient, y, vector, retain_graph=True)
        value = float(hv.norm())
        vector = hv / max(value, 1e-300)
    return value


def cases() -> list[Any]:
    """The benchmark cases of sciml-bilevel (entry point ``sciml.benchmarks``).

    Example:
        >>> [c.name for c in cases()]
        ['hypergradient-T100', 'hypergradient-T1000']
    """
    return [HypergradientCostBenchmark(100), HypergradientCostBenchmark(1000)]
