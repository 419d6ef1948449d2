r"""Learning rates as a function of batch size: stochastic Lanczos quadrature, scaling rules, a curvature learner.

Granziol, Zohren and Roberts model the batch Hessian :math:`H_B = H + \varepsilon(B)` as the full Hessian plus a
noise matrix whose spectral width shrinks like :math:`1/B`. Its extremal eigenvalues exceed those of :math:`H`, and
while the noise dominates, :math:`\lambda_{\max}(H_B) \propto 1/B`. Because SGD is stable only for
:math:`\eta < 2/\lambda_{\max}`, the largest stable learning rate grows **linearly** in :math:`B` for SGD; for Adam the
preconditioner also rescales with the noise and the rule becomes a **square root** in :math:`B`. Both rules stop
once :math:`B` is large enough that :math:`\lambda_{\max}(H_B)` is close to :math:`\lambda_{\max}(H)`: the learning
rate is then curvature-limited and must not grow further.

This module holds:

* :func:`stochastic_lanczos_quadrature`: the spectral density, extremal eigenvalues and trace of a symmetric
  operator (an explicit matrix, a Hessian-vector product, or a loss and its parameters) from :math:`m` Lanczos steps
  on a few random probes (Ubaru, Chen and Saad 2017; Golub and Meurant);
* :func:`hessian_vector_product`: the Hessian-vector product of a loss by double backward, optionally averaged over
  the batches of a data loader;
* :func:`scale_learning_rate`: the linear / square-root rules, with the stability cap :math:`2/\lambda_{\max}`;
* :class:`CurvatureLRLearner`: the on-the-fly learner that periodically estimates the batch-Hessian spectrum by SLQ
  and writes a learning rate and a momentum into an optimizer's parameter groups.

Reference:
    D. Granziol, S. Zohren, S. Roberts, "Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach
    to Neural Network Training", JMLR 23, 2022 (arXiv 2006.09092).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from sciml_protocols import SciMLInputError, check_finite, check_tensor

__all__ = [
    "CurvatureLRLearner",
    "SpectrumEstimate",
    "hessian_vector_product",
    "scale_learning_rate",
    "stochastic_lanczos_quadrature",
]

HVP = Callable[[torch.Tensor], torch.Tensor]


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SciMLInputError(name, f"must be a positive int, got {value!r}")
    return value


def _check_positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SciMLInputError(name, f"must be a real number, got {type(value).__name__}")
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < 0 or (number == 0 and not allow_zero):
        raise SciMLInputError(name, f"must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class SpectrumEstimate:
    r"""What stochastic Lanczos quadrature learned about the spectrum of a symmetric :math:`n \times n` operator.

    For probe :math:`v_j` (unit norm) and :math:`m` Lanczos steps, the tridiagonal matrix :math:`T_j` has
    eigenpairs :math:`(\theta_{jk}, u_{jk})`; the Gauss quadrature nodes are the Ritz values :math:`\theta_{jk}` and
    the weights :math:`\tau_{jk} = (e_1^\top u_{jk})^2` (they sum to 1). Then :math:`v_j^\top f(A) v_j \approx
    \sum_k \tau_{jk} f(\theta_{jk})`, exact for polynomials of degree :math:`\le 2m - 1`, and

    .. math:: \operatorname{tr} f(A) \approx \frac{n}{s}\sum_{j=1}^{s}\sum_k \tau_{jk} f(\theta_{jk}), \qquad
        \hat\phi(t) = \frac1s\sum_{j,k}\tau_{jk}\,\mathcal N(t;\theta_{jk},\sigma^2).

    Attributes:
        ritz_values: :math:`\theta`, shape ``(num_probes, num_steps)``, float64; a probe whose Krylov space closed
            early (breakdown) is padded with zeros of weight zero.
        ritz_weights: :math:`\tau`, same shape; each row sums to 1.
        steps: Lanczos steps actually taken per probe, int64, shape ``(num_probes,)``.
        dim: :math:`n`.
        lambda_max: largest Ritz value over probes (a lower bound on :math:`\lambda_{\max}`, converging fast).
        lambda_min: smallest Ritz value over probes (an upper bound on :math:`\lambda_{\min}`).
        trace: :math:`n\,\overline{v^\top A v}`, the Hutchinson trace estimate.
        trace_std_error: standard error of ``trace`` across probes (NaN for one probe).

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> est = stochastic_lanczos_quadrature(A, num_steps=3, num_probes=2)
        >>> round(est.lambda_max, 6), round(est.trace, 6)
        (3.0, 6.0)
    """

    ritz_values: torch.Tensor
    ritz_weights: torch.Tensor
    steps: torch.Tensor
    dim: int
    lambda_max: float
    lambda_min: float
    trace: float
    trace_std_error: float

    def moment(self, k: int) -> float:
        r"""The normalised spectral moment :math:`\operatorname{tr}(A^k)/n` estimated by quadrature.

        Args:
            k: the power, an int >= 0.

        Returns:
            :math:`\frac1s\sum_{j,k}\tau_{jk}\theta_{jk}^k`.

        Example:
            >>> A = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
            >>> stochastic_lanczos_quadrature(A, num_steps=2, num_probes=1).moment(2)
            5.0
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise SciMLInputError("k", f"must be an int >= 0, got {k!r}")
        return float((self.ritz_weights * self.ritz_values**k).sum(-1).mean())

    def density(self, grid: torch.Tensor, sigma: float) -> torch.Tensor:
        r"""The Gaussian-broadened spectral density :math:`\hat\phi` on ``grid`` (integrates to 1 over the line).

        Args:
            grid: points :math:`t`, any shape, floating dtype.
            sigma: broadening width :math:`\sigma > 0`.

        Returns:
            :math:`\hat\phi(t)`, the shape of ``grid``, float64.

        Example:
            >>> A = torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))
            >>> est = stochastic_lanczos_quadrature(A, num_steps=2, num_probes=1)
            >>> t = torch.linspace(-2, 3, 2001, dtype=torch.float64)
            >>> round(float(torch.trapezoid(est.density(t, 0.1), t)), 6)
            1.0
        """
        grid = check_tensor("grid", grid)
        if not grid.dtype.is_floating_point:
            raise SciMLInputError("grid", f"expected a floating-point dtype, got {grid.dtype}")
        check_finite("grid", grid)
        width = _check_positive_number("sigma", sigma)
        t = grid.to(torch.float64).unsqueeze(-1).unsqueeze(-1)
        values = self.ritz_values.to(grid.device)
        weights = self.ritz_weights.to(grid.device)
        kernel = torch.exp(-0.5 * ((t - values) / width) ** 2) / (width * math.sqrt(2.0 * math.pi))
        return (kernel * weights).sum(-1).mean(-1)


def hessian_vector_product(
    loss_fn: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    batches: Iterable[Any] | None = None,
) -> HVP:
    r"""Build :math:`v \mapsto \nabla^2 L(\theta)\,v` on the flattened parameters, by double backward.

    :math:`\nabla^2 L\,v = \nabla_\theta\bigl(\nabla_\theta L(\theta)^\top v\bigr)`. Without ``batches`` the loss
    ``loss_fn()`` is evaluated once and its gradient graph reused by every product. With ``batches`` (a data loader
    or any re-iterable of batches) the product is the average over batches of the per-batch products,
    ``loss_fn(batch)``: the Hessian of the mean of the batch losses (the full-data Hessian when the batches have
    equal size and the loss is a mean).

    Args:
        loss_fn: ``loss_fn()`` (no ``batches``) or ``loss_fn(batch)``, returning a scalar tensor that depends on
            ``params``.
        params: tensors with ``requires_grad=True``; the vector layout is their flattened concatenation.
        batches: optional re-iterable of batches.

    Returns:
        A function from a vector of shape ``(n,)`` (``n`` the total number of parameters) to a vector of shape
        ``(n,)``, in the parameters' dtype and device.

    Raises:
        SciMLInputError: empty ``params``, parameters that do not require grad, or a non-scalar loss.

    Example:
        >>> w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        >>> hvp = hessian_vector_product(lambda: (w**3).sum(), [w])  # Hessian diag(6 w)
        >>> hvp(torch.tensor([1.0, 1.0], dtype=torch.float64))
        tensor([ 6., 12.], dtype=torch.float64)
    """
    parameters = _check_params(params)
    if batches is not None and not isinstance(batches, Iterable):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("batches", f"must be an iterable of batches, got {type(batches).__name__}")

    def flat_gradient(loss: torch.Tensor) -> torch.Tensor:
        if loss.numel() != 1:
            raise SciMLInputError("loss_fn", f"must return a scalar, got shape {tuple(loss.shape)}")
        grads = torch.autograd.grad(loss.reshape(()), parameters, create_graph=True, allow_unused=True)
        return torch.cat(
            [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, parameters, strict=True)]
        )

    def product(gradient: torch.Tensor, vector: torch.Tensor, retain: bool) -> torch.Tensor:
        if not gradient.requires_grad:  # the loss is linear in the parameters
            return torch.zeros_like(vector)
        rows = torch.autograd.grad(gradient, parameters, vector, retain_graph=retain, allow_unused=True)
        return torch.cat(
            [(torch.zeros_like(p) if r is None else r).reshape(-1) for r, p in zip(rows, parameters, strict=True)]
        )

    dim = sum(p.numel() for p in parameters)

    def check_vector(vector: torch.Tensor) -> torch.Tensor:
        if not isinstance(vector, torch.Tensor) or vector.shape != (dim,):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("vector", f"expected shape ({dim},), got {getattr(vector, 'shape', None)}")
        return vector.to(dtype=parameters[0].dtype, device=parameters[0].device)

    if batches is None:
        with torch.enable_grad():
            gradient = flat_gradient(loss_fn())

        def single(vector: torch.Tensor) -> torch.Tensor:
            return product(gradient, check_vector(vector), retain=True).detach()

        return single

    source = batches

    def averaged(vector: torch.Tensor) -> torch.Tensor:
        vector = check_vector(vector)
        total = torch.zeros_like(vector)
        count = 0
        for batch in source:
            with torch.enable_grad():
                total = total + product(flat_gradient(loss_fn(batch)), vector, retain=False).detach()
            count += 1
        if count == 0:
            raise SciMLInputError("batches", "is empty")
        return total / count

    return averaged


def _check_params(params: object) -> list[torch.Tensor]:
    parameters: list[torch.Tensor]
    if isinstance(params, torch.nn.Module):
        parameters = [p for p in params.parameters() if p.requires_grad]
    elif isinstance(params, torch.Tensor):
        parameters = [params]
    elif isinstance(params, Iterable):
        parameters = list(params)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise SciMLInputError("params", f"must be a module, a tensor or a sequence of tensors, got {type(params)}")
    if not parameters:
        raise SciMLInputError("params", "is empty")
    for p in parameters:
        if not isinstance(p, torch.Tensor) or not p.dtype.is_floating_point:
            raise SciMLInputError("params", "must hold floating-point tensors")
        if not p.requires_grad:
            raise SciMLInputError("params", "every tensor must have requires_grad=True")
    return parameters


def _as_operator(
    operator: object, dim: int | None, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[HVP, int, torch.dtype, torch.device]:
    if isinstance(operator, torch.Tensor):
        if operator.ndim != 2 or operator.shape[0] != operator.shape[1] or operator.shape[0] == 0:
            raise SciMLInputError("operator", f"a matrix must be square and non-empty, got {tuple(operator.shape)}")
        if not operator.dtype.is_floating_point:
            raise SciMLInputError("operator", f"expected a floating-point dtype, got {operator.dtype}")
        check_finite("operator", operator)
        if not torch.allclose(operator, operator.mT, rtol=1e-6, atol=1e-12 * float(operator.abs().max())):
            raise SciMLInputError("operator", "the matrix must be symmetric")
        matrix = operator.detach()
        if dim is not None and dim != matrix.shape[0]:
            raise SciMLInputError("dim", f"is {dim} but the matrix is {matrix.shape[0]} x {matrix.shape[0]}")
        return (lambda v: matrix @ v), matrix.shape[0], matrix.dtype, matrix.device
    if isinstance(operator, tuple):
        if len(operator) != 2 or not callable(operator[0]):  # pyright: ignore[reportUnknownArgumentType]
            raise SciMLInputError("operator", "a tuple must be (loss_fn, params)")
        loss_fn: Callable[..., torch.Tensor] = operator[0]  # pyright: ignore[reportUnknownVariableType, reportAssignmentType]
        parameters = _check_params(operator[1])
        n = sum(p.numel() for p in parameters)
        if dim is not None and dim != n:
            raise SciMLInputError("dim", f"is {dim} but the parameters hold {n} entries")
        return hessian_vector_product(loss_fn, parameters), n, parameters[0].dtype, parameters[0].device
    if callable(operator):
        if dim is None:
            raise SciMLInputError("dim", "is required when the operator is a Hessian-vector product callable")
        n = _check_positive_int("dim", dim)
        resolved_device = torch.device("cpu") if device is None else torch.device(device)
        hvp: HVP = operator  # pyright: ignore[reportAssignmentType]
        return hvp, n, dtype or torch.float64, resolved_device
    raise SciMLInputError("operator", f"must be a matrix, a callable or (loss_fn, params), got {type(operator)}")


def stochastic_lanczos_quadrature(
    operator: torch.Tensor | HVP | tuple[Callable[..., torch.Tensor], Sequence[torch.Tensor]],
    dim: int | None = None,
    *,
    num_steps: int = 30,
    num_probes: int = 4,
    generator: torch.Generator | None = None,
    full_reorthogonalization: bool = True,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SpectrumEstimate:
    r"""Estimate the spectrum of a symmetric operator by stochastic Lanczos quadrature (SLQ).

    For each probe :math:`v` (Rademacher or Gaussian, normalised), :math:`m` Lanczos steps build an orthonormal
    basis :math:`Q` of the Krylov space :math:`\mathcal K_m(A, v)` and the tridiagonal :math:`T = Q^\top A Q`:

    .. math:: \beta_{k} q_{k+1} = A q_k - \alpha_k q_k - \beta_{k-1} q_{k-1}, \qquad \alpha_k = q_k^\top A q_k.

    With ``full_reorthogonalization`` (the default) each new vector is re-orthogonalised twice against the whole
    basis, which removes the spurious copies of converged Ritz values that plain Lanczos produces in floating point.
    The eigen-decomposition of :math:`T` gives the Gauss quadrature nodes and weights; see
    :class:`SpectrumEstimate` for what is estimated from them. The largest Ritz value converges to
    :math:`\lambda_{\max}` geometrically at a rate set by the gap to the rest of the spectrum (Kaniel-Paige); a
    Krylov space that becomes invariant stops the probe early, and then its Ritz values are exact eigenvalues.

    Args:
        operator: the symmetric operator: a square tensor; a callable ``hvp(v)`` for vectors of shape ``(dim,)``;
            or a pair ``(loss_fn, params)`` whose Hessian is used (see :func:`hessian_vector_product`).
        dim: :math:`n`, required for a callable.
        num_steps: Lanczos steps :math:`m` per probe (capped at :math:`n`).
        num_probes: number of random probes :math:`s`.
        generator: torch generator for the probes (on the probes' device); None uses the global generator.
        full_reorthogonalization: re-orthogonalise against every previous Lanczos vector.
        probe: ``"rademacher"`` (the lower-variance Hutchinson probe) or ``"gaussian"``.
        dtype: dtype of the probes for a callable operator (float64 by default); otherwise the operator's dtype.
        device: device of the probes for a callable operator (CPU by default).

    Returns:
        A :class:`SpectrumEstimate`.

    Raises:
        SciMLInputError: non-square, non-symmetric or non-finite matrix, missing ``dim``, bad counts or probe kind,
            an operator output of the wrong shape or with NaN/inf.

    Example:
        >>> Q, _ = torch.linalg.qr(torch.randn(50, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
        >>> A = Q @ torch.diag(torch.linspace(1, 10, 50, dtype=torch.float64)) @ Q.T
        >>> est = stochastic_lanczos_quadrature(A, num_steps=50, num_probes=1)
        >>> round(est.lambda_max, 8), round(est.lambda_min, 8)
        (10.0, 1.0)

    Reference:
        S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix
        Anal. Appl. 38(4), 2017; used for batch Hessians in Granziol, Zohren, Roberts, JMLR 2022 (arXiv 2006.09092).
    """
    steps_requested = _check_positive_int("num_steps", num_steps)
    probes = _check_positive_int("num_probes", num_probes)
    if probe not in ("rademacher", "gaussian"):
        raise SciMLInputError("probe", f"must be 'rademacher' or 'gaussian', got {probe!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
    hvp, n, work_dtype, work_device = _as_operator(operator, dim, dtype, device)
    m = min(steps_requested, n)

    def apply(vector: torch.Tensor) -> torch.Tensor:
        out = hvp(vector)
        if not isinstance(out, torch.Tensor) or out.shape != (n,):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("operator", f"must map shape ({n},) to ({n},), got {getattr(out, 'shape', None)}")
        check_finite("operator", out)
        return out.detach().to(work_dtype)

    values = torch.zeros(probes, m, dtype=torch.float64)
    weights = torch.zeros(probes, m, dtype=torch.float64)
    steps = torch.zeros(probes, dtype=torch.int64)
    quadratic_forms = torch.zeros(probes, dtype=torch.float64)
    eps = torch.finfo(work_dtype).eps
    for j in range(probes):
        if probe == "rademacher":
            v = torch.randint(0, 2, (n,), generator=generator, device=work_device).to(work_dtype) * 2 - 1
        else:
            v = torch.randn(n, generator=generator, device=work_device, dtype=work_dtype)
        v = v / torch.linalg.vector_norm(v)
        basis = torch.empty(m, n, dtype=work_dtype, device=work_device)
        alphas: list[float] = []
        betas: list[float] = []
        basis[0] = v
        scale = 0.0
        for k in range(m):
            w = apply(basis[k])
            alpha = torch.dot(basis[k], w)
            w = w - alpha * basis[k]
            if k > 0:
                w = w - betas[-1] * basis[k - 1]
            if full_reorthogonalization:
                for _ in range(2):  # twice is enough (Kahan-Parlett)
                    w = w - basis[: k + 1].mT @ (basis[: k + 1] @ w)
            alphas.append(float(alpha))
            if k == m - 1:
                break
            beta = float(torch.linalg.vector_norm(w))
            scale = max(scale, abs(alphas[-1]) + beta + (betas[-1] if betas else 0.0))
            if beta <= 10.0 * n * eps * max(scale, 1e-300):
                break  # the Krylov space is invariant: its Ritz values are exact eigenvalues
            betas.append(beta)
            basis[k + 1] = w / beta
        size = len(alphas)
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if size > 1:
            off = torch.tensor(betas[: size - 1], dtype=torch.float64)
            tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
        theta, vectors = torch.linalg.eigh(tridiagonal)
        values[j, :size] = theta
        weights[j, :size] = vectors[0] ** 2
        steps[j] = size
        quadratic_forms[j] = alphas[0]

    valid = torch.arange(m).unsqueeze(0) < steps.unsqueeze(1)
    lambda_max = float(values.masked_fill(~valid, -math.inf).max())
    lambda_min = float(values.masked_fill(~valid, math.inf).min())
    trace = n * float(quadratic_forms.mean())
    trace_std_error = n * float(quadratic_forms.std()) / math.sqrt(probes) if probes > 1 else math.nan
    return SpectrumEstimate(
        ritz_values=values,
        ritz_weights=weights,
        steps=steps,
        dim=n,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        trace=trace,
        trace_std_error=trace_std_error,
    )


# Optimizer families whose largest stable learning rate scales like sqrt(B) (adaptive, second-moment
# preconditioned); plain SGD-type methods scale linearly.
_ADAPTIVE_NAMES = ("adam", "adagrad", "rmsprop", "adadelta", "adafactor", "lamb", "adan", "adopt", "nadam", "radam")


def _is_adaptive(optimizer: object) -> bool | None:
    cls: type = optimizer if isinstance(optimizer, type) else type(optimizer)
    if issubclass(cls, torch.optim.SGD):
        return False
    adaptive_classes = (
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.Adamax,
        torch.optim.NAdam,
        torch.optim.RAdam,
        torch.optim.Adagrad,
        torch.optim.RMSprop,
        torch.optim.Adadelta,
    )
    if issubclass(cls, adaptive_classes):
        return True
    name = cls.__name__.lower()
    if any(key in name for key in _ADAPTIVE_NAMES):
        return True
    if name in ("sgd", "sgdp", "sgdw"):
        return False
    return None


def scale_learning_rate(
    base_lr: float,
    base_batch_size: int,
    new_batch_size: int,
    *,
    rule: Literal["linear", "sqrt", "auto"] = "auto",
    optimizer: torch.optim.Optimizer | type[torch.optim.Optimizer] | None = None,
    lambda_max: float | None = None,
) -> float:
    r"""Transfer a tuned learning rate to another batch size: linear for SGD, square root for Adam-type methods.

    .. math:: \eta(B') = \eta(B)\,\frac{B'}{B} \;\;(\text{SGD}), \qquad
        \eta(B') = \eta(B)\,\sqrt{\frac{B'}{B}} \;\;(\text{Adam}),
        \qquad \eta(B') \leftarrow \min\Bigl(\eta(B'), \frac{2}{\lambda_{\max}}\Bigr) \;\;(\text{SGD, if given}).

    Caveat (Granziol et al.): the rules hold while the batch-noise part of the batch Hessian dominates
    its extremal eigenvalues, i.e. for batch sizes well below the dataset size and the "critical" batch size. For
    larger :math:`B`, :math:`\lambda_{\max}(H_B)` approaches :math:`\lambda_{\max}(H)` and the learning rate is
    limited by curvature, not noise; pass ``lambda_max`` (the full or large-batch Hessian's, e.g. from
    :func:`stochastic_lanczos_quadrature`) to cap SGD at the gradient-descent stability limit :math:`2/\lambda_{\max}`.
    Adam's stability limit depends on its preconditioner, so no cap is applied for the square-root rule.

    Args:
        base_lr: the learning rate tuned at ``base_batch_size``, > 0.
        base_batch_size: :math:`B`, a positive int.
        new_batch_size: :math:`B'`, a positive int.
        rule: ``"linear"``, ``"sqrt"`` or ``"auto"`` (linear for SGD-type optimizers, square root for Adam-type ones,
            decided from ``optimizer``'s class).
        optimizer: an optimizer instance or class, used by ``rule="auto"``.
        lambda_max: optional largest Hessian eigenvalue, > 0; caps the linear rule at :math:`2/\lambda_{\max}`.

    Returns:
        The scaled learning rate.

    Raises:
        SciMLInputError: non-positive inputs, an unknown rule, or ``rule="auto"`` without a recognisable optimizer.

    Example:
        >>> scale_learning_rate(0.1, 128, 512, rule="linear")
        0.4
        >>> scale_learning_rate(1e-3, 128, 512, optimizer=torch.optim.Adam)
        0.002
        >>> scale_learning_rate(0.1, 128, 4096, optimizer=torch.optim.SGD, lambda_max=1.0)  # capped at 2/lambda
        2.0
    """
    lr = _check_positive_number("base_lr", base_lr)
    b0 = _check_positive_int("base_batch_size", base_batch_size)
    b1 = _check_positive_int("new_batch_size", new_batch_size)
    if rule not in ("linear", "sqrt", "auto"):
        raise SciMLInputError("rule", f"must be 'linear', 'sqrt' or 'auto', got {rule!r}")
    cap = None if lambda_max is None else 2.0 / _check_positive_number("lambda_max", lambda_max)
    resolved = rule
    if rule == "auto":
        if optimizer is None:
            raise SciMLInputError("optimizer", "is required by rule='auto'")
        adaptive = _is_adaptive(optimizer)
        if adaptive is None:
            name = (optimizer if isinstance(optimizer, type) else type(optimizer)).__name__
            raise SciMLInputError("optimizer", f"cannot tell whether {name} is SGD- or Adam-type; pass rule=")
        resolved = "sqrt" if adaptive else "linear"
    if resolved == "linear":
        scaled = lr * b1 / b0
        return scaled if cap is None else min(scaled, cap)
    return lr * math.sqrt(b1 / b0)


class CurvatureLRLearner:
    r"""On-the-fly learning-rate and momentum learner from the batch-Hessian spectrum (Granziol et al.).

    Every ``every`` calls of :meth:`step`, the Hessian of the current batch loss is probed by
    :func:`stochastic_lanczos_quadrature` (``num_steps`` Lanczos steps, ``num_probes`` probes) and the optimizer's
    parameter groups receive

    .. math:: \eta = \frac{c}{\lambda_{\max}} \;\;(\text{``lr_rule="inverse_max"``}), \qquad
        \eta = \frac{4c}{(\sqrt{\lambda_{\max}} + \sqrt{\lambda_{\text{eff}}})^2} \;\;(\text{``lr_rule="heavy_ball"``}),

    .. math:: \rho = \Bigl(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\Bigr)^2, \qquad
        \kappa = \frac{\lambda_{\max}}{\lambda_{\text{eff}}}, \qquad
        \lambda_{\text{eff}} = \max\Bigl(\lambda_{\min}^{\text{Ritz}}, \frac{\lambda_{\max}}{\kappa_{\max}}\Bigr),

    where :math:`c` is ``lr_scale``. These are the optimal parameters of gradient descent (:math:`1/\lambda_{\max}`,
    half the stability limit) and of Polyak's heavy ball on a quadratic with spectrum in
    :math:`[\lambda_{\text{eff}}, \lambda_{\max}]`. Neural-network Hessians have many eigenvalues near zero and some
    negative ones, so the smallest Ritz value is not a usable :math:`\lambda_{\min}`: the effective smallest
    curvature is floored at :math:`\lambda_{\max}/\kappa_{\max}` (``max_condition``), which caps the momentum at
    :math:`((\sqrt{\kappa_{\max}} - 1)/(\sqrt{\kappa_{\max}} + 1))^2`. The paper describes its learner only at the
    level "learning rate from the largest eigenvalue, momentum from the spectrum, heavy-ball style"; the rules above
    are this implementation's reading of it, and the floor is our addition.

    The momentum goes to the group's ``"momentum"`` key (SGD's heavy ball: ``buf = rho buf + g``,
    ``p -= lr buf``) or to ``betas[0]`` for Adam-type groups; groups with neither are left alone. With
    ``set_momentum=False`` only the learning rate is written. A non-positive :math:`\lambda_{\max}` (a locally
    concave batch loss) leaves the groups unchanged.

    Args:
        params: the module or the parameters whose Hessian is probed (usually those the optimizer updates).
        loss_fn: ``loss_fn(*args)`` returns the scalar batch loss for the arguments given to :meth:`step`.
        optimizer: a ``torch.optim.Optimizer`` whose groups are updated.
        every: probe every ``every`` calls of :meth:`step` (the first call probes).
        num_steps: Lanczos steps.
        num_probes: SLQ probes.
        lr_rule: ``"inverse_max"`` or ``"heavy_ball"``.
        lr_scale: :math:`c > 0`.
        set_momentum: write :math:`\rho` into the groups.
        max_condition: :math:`\kappa_{\max} \ge 1`.
        generator: torch generator for the probes.

    Attributes:
        history: one dict per probe: ``{"step", "lambda_max", "lambda_min", "lr", "momentum"}``.
        last_estimate: the latest :class:`SpectrumEstimate` (None before the first probe).

    Raises:
        SciMLInputError: bad parameters, optimizer, counts or rules.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> w = torch.ones(2, dtype=torch.float64, requires_grad=True)
        >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.0)
        >>> learner = CurvatureLRLearner([w], lambda: 0.5 * w @ A @ w, optimizer=opt, num_steps=2, num_probes=1)
        >>> _ = learner.step()
        >>> opt.param_groups[0]["lr"], round(opt.param_groups[0]["momentum"], 6)  # 1/4, ((2-1)/(2+1))^2
        (0.25, 0.111111)

    Reference:
        D. Granziol, S. Zohren, S. Roberts, "Learning Rates as a Function of Batch Size: A Random Matrix Theory
        Approach to Neural Network Training", JMLR 23, 2022 (arXiv 2006.09092).
    """

    def __init__(
        self,
        params: torch.nn.Module | Iterable[torch.Tensor],
        loss_fn: Callable[..., torch.Tensor],
        *,
        optimizer: torch.optim.Optimizer,
        every: int = 100,
        num_steps: int = 20,
        num_probes: int = 1,
        lr_rule: Literal["inverse_max", "heavy_ball"] = "inverse_max",
        lr_scale: float = 1.0,
        set_momentum: bool = True,
        max_condition: float = 1e4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.params = _check_params(params)
        if not callable(loss_fn):
            raise SciMLInputError("loss_fn", "must be callable")
        if not isinstance(optimizer, torch.optim.Optimizer):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("optimizer", f"must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if lr_rule not in ("inverse_max", "heavy_ball"):
            raise SciMLInputError("lr_rule", f"must be 'inverse_max' or 'heavy_ball', got {lr_rule!r}")
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.every = _check_positive_int("every", every)
        self.num_steps = _check_positive_int("num_steps", num_steps)
        self.num_probes = _check_positive_int("num_probes", num_probes)
        self.lr_rule = lr_rule
        self.lr_scale = _check_positive_number("lr_scale", lr_scale)
        self.set_momentum = bool(set_momentum)
        self.max_condition = _check_positive_number("max_condition", max_condition)
        if self.max_condition < 1:
            raise SciMLInputError("max_condition", f"must be >= 1, got {max_condition!r}")
        self.generator = generator
        self.history: list[dict[str, float]] = []
        self.last_estimate: SpectrumEstimate | None = None
        self._calls = 0

    def rates(self, lambda_max: float, lambda_min: float) -> tuple[float, float]:
        r"""The learning rate and momentum the rules give for a spectrum in ``[lambda_min, lambda_max]``.

        Args:
            lambda_max: largest eigenvalue, > 0.
            lambda_min: smallest eigenvalue estimate (floored at ``lambda_max / max_condition``).

        Returns:
            ``(lr, momentum)``.

        Example:
            >>> w = torch.zeros(1, requires_grad=True)
            >>> learner = CurvatureLRLearner([w], lambda: w.sum(), optimizer=torch.optim.SGD([w], lr=1.0))
            >>> learner.rates(9.0, 1.0)
            (0.1111111111111111, 0.25)
        """
        top = _check_positive_number("lambda_max", lambda_max)
        effective = max(float(lambda_min), top / self.max_condition)
        root_kappa = math.sqrt(top / effective)
        momentum = ((root_kappa - 1.0) / (root_kappa + 1.0)) ** 2
        if self.lr_rule == "inverse_max":
            lr = self.lr_scale / top
        else:
            lr = 4.0 * self.lr_scale / (math.sqrt(top) + math.sqrt(effective)) ** 2
        return lr, momentum

    def update(self, *args: Any) -> SpectrumEstimate:
        """Probe the Hessian of ``loss_fn(*args)`` now and write the rates into the optimizer.

        Args:
            *args: passed to ``loss_fn``.

        Returns:
            The spectrum estimate.

        Example:
            >>> w = torch.ones(3, dtype=torch.float64, requires_grad=True)
            >>> opt = torch.optim.Adam([w])
            >>> learner = CurvatureLRLearner([w], lambda: (w**2).sum(), optimizer=opt, num_steps=3)
            >>> round(learner.update().lambda_max, 6), opt.param_groups[0]["lr"]
            (2.0, 0.5)
        """
        params = self.params
        estimate = stochastic_lanczos_quadrature(
            (lambda: self.loss_fn(*args), params),
            num_steps=self.num_steps,
            num_probes=self.num_probes,
            generator=self.generator,
        )
        self.last_estimate = estimate
        lr = momentum = math.nan
        if estimate.lambda_max > 0:
            lr, momentum = self.rates(estimate.lambda_max, estimate.lambda_min)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                if not self.set_momentum:
                    continue
                if "momentum" in group:
                    group["momentum"] = momentum
                elif "betas" in group:
                    group["betas"] = (momentum, *tuple(group["betas"])[1:])
        self.history.append(
            {
                "step": float(self._calls),
                "lambda_max": estimate.lambda_max,
                "lambda_min": estimate.lambda_min,
                "lr": lr,
                "momentum": momentum,
            }
        )
        return estimate

    def step(self, *args: Any) -> SpectrumEstimate | None:
        """Count one training step; probe and update on the first call and then every ``every`` calls.

        Call it before ``optimizer.step()`` with the arguments of the batch loss.

        Args:
            *args: passed to ``loss_fn``.

        Returns:
            The estimate when a probe ran, else None.

        Example:
            >>> w = torch.ones(2, requires_grad=True)
            >>> learner = CurvatureLRLearner([w], lambda: (w**2).sum(), optimizer=torch.optim.SGD([w]), every=2)
            >>> [learner.step() is not None for _ in range(4)]
            [True, False, True, False]
        """
        due = self._calls % self.every == 0
        self._calls += 1
        return self.update(*args) if due else None
