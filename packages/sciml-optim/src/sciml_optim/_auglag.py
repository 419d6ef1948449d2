r"""Equality-constrained optimization by an adaptive inexact Newton method on the exact augmented Lagrangian.

Two solvers:

* :func:`sketch_and_project`: the randomized iterative sketch-and-project method of Gower and Richtárik for a square
  (possibly indefinite) linear system, with Gaussian, block-Kaczmarz and Kaczmarz sketches;
* :func:`adasketch_newton`: AdaSketch-Newton (Hong, Na, Mahoney, Kolar, ICML 2023) for
  :math:`\min f(x)` s.t. :math:`c(x) = 0`: the Lagrangian Newton (KKT) system is solved inexactly by
  sketch-and-project, stopped by an adaptive accuracy condition; the step size comes from an Armijo line search on
  the exact augmented Lagrangian, whose penalty parameters grow until the inexact direction is a descent direction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from sciml_protocols import (
    LinearOperator,
    SciMLInputError,
    Solution,
    aslinearoperator,
    check_dtype,
    check_finite,
    check_in_choices,
    check_nonempty,
    check_positive,
    check_tensor,
)

__all__ = ["adasketch_newton", "sketch_and_project"]

SketchKind = Literal["gaussian", "block_kaczmarz", "kaczmarz"]
_SKETCHES: tuple[str, ...] = ("gaussian", "block_kaczmarz", "kaczmarz")


# --------------------------------------------------------------------------------------------------------------------
# sketch-and-project
# --------------------------------------------------------------------------------------------------------------------


class _Sketcher:
    """One system ``A x = b`` and the random sketches drawn for it (dense matrix or matrix-free operator)."""

    def __init__(
        self,
        operator: LinearOperator,
        matrix: torch.Tensor | None,
        sketch: str,
        sketch_size: int,
        generator: torch.Generator | None,
    ) -> None:
        self.operator = operator
        self.matrix = matrix
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.generator = generator
        self.size = operator.shape[0]
        self.dtype = operator.dtype
        self.device = operator.device
        # Random numbers are drawn where the generator lives, then moved to the operator's device.
        self.draw_device = generator.device if generator is not None else self.device
        self.row_probabilities: torch.Tensor | None = None
        if sketch == "kaczmarz" and matrix is not None:
            # Strohmer-Vershynin sampling: row i with probability ||a_i||^2 / ||A||_F^2.
            row_norms = (matrix * matrix).sum(dim=1)
            self.row_probabilities = (row_norms / row_norms.sum()).to(self.draw_device)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return self.matrix @ x
        return self.operator.matvec(x)

    def _rows(self, selector: torch.Tensor) -> torch.Tensor:
        """``S^T A`` for the sketch whose columns are the rows of ``selector`` (shape ``(s, N)``)."""
        if self.matrix is not None:
            return selector @ self.matrix
        rmatvec: Callable[[torch.Tensor], torch.Tensor] = getattr(self.operator, "rmatvec")  # noqa: B009
        return rmatvec(selector)

    def step(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        r"""One projection :math:`x - A^\top S (S^\top A A^\top S)^\dagger S^\top (A x - b)` (``residual = Ax - b``)."""
        if self.sketch == "gaussian":
            sketch = torch.randn(
                self.sketch_size, self.size, generator=self.generator, device=self.draw_device, dtype=self.dtype
            ).to(self.device)
            sketched_rows = self._rows(sketch)
            sketched_residual = sketch @ residual
        else:
            if self.sketch == "kaczmarz":
                if self.row_probabilities is not None:
                    index = torch.multinomial(self.row_probabilities, 1, generator=self.generator)
                else:
                    index = torch.randint(self.size, (1,), generator=self.generator, device=self.draw_device)
            else:
                index = torch.randperm(self.size, generator=self.generator, device=self.draw_device)
                index = index[: self.sketch_size]
            index = index.to(self.device)
            if self.matrix is not None:
                sketched_rows = self.matrix[index]
            else:
                selector = torch.zeros(index.numel(), self.size, dtype=self.dtype, device=self.device)
                selector[torch.arange(index.numel(), device=self.device), index] = 1.0
                sketched_rows = self._rows(selector)
            sketched_residual = residual[index]
        gram = sketched_rows @ sketched_rows.T
        if gram.shape[0] == 1:
            # A zero row (possible under uniform sampling) gives the pseudo-inverse 0: no move.
            scale = gram[0, 0]
            coefficients = torch.where(scale > 0, sketched_residual / torch.where(scale > 0, scale, 1.0), 0.0)
        else:
            # Pseudo-inverse through the symmetric eigendecomposition: exact projections even for a rank-deficient
            # sketch, and much cheaper than torch.linalg.cholesky on tiny CPU matrices.
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)
            cutoff = eigenvalues[-1] * (gram.shape[0] * torch.finfo(gram.dtype).eps)
            inverse = torch.where(eigenvalues > cutoff, 1.0 / torch.where(eigenvalues > cutoff, eigenvalues, 1.0), 0.0)
            coefficients = eigenvectors @ (inverse * (eigenvectors.T @ sketched_residual))
        return x - sketched_rows.T @ coefficients


def _sketch_loop(
    sketcher: _Sketcher,
    rhs: torch.Tensor,
    x: torch.Tensor,
    threshold: float,
    max_iter: int,
    history: list[float] | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Project until ``||A x - b|| <= threshold`` or ``max_iter`` projections; returns ``(x, A x - b, count)``."""
    residual = sketcher.apply(x) - rhs
    norm = float(torch.linalg.vector_norm(residual))
    count = 0
    while norm > threshold and count < max_iter:
        x = sketcher.step(x, residual)
        residual = sketcher.apply(x) - rhs
        norm = float(torch.linalg.vector_norm(residual))
        count += 1
        if history is not None:
            history.append(norm)
    return x, residual, count


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SciMLInputError(name, f"must be a positive int, got {value!r}")
    return value


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SciMLInputError("generator", f"must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _resolve_sketch_size(sketch: str, sketch_size: int | None, size: int) -> int:
    if sketch == "kaczmarz":
        if sketch_size not in (None, 1):
            raise SciMLInputError("sketch_size", f"the Kaczmarz sketch samples one row; got {sketch_size!r}")
        return 1
    if sketch_size is None:
        return max(1, min(size, math.ceil(math.sqrt(size))))
    _check_positive_int("sketch_size", sketch_size)
    if sketch_size > size:
        raise SciMLInputError("sketch_size", f"must be <= the system size {size}, got {sketch_size}")
    return sketch_size


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SciMLInputError(name, f"must be a bool, got {type(value).__name__}")
    return value


def sketch_and_project(
    A: LinearOperator | torch.Tensor,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    sketch: SketchKind = "gaussian",
    sketch_size: int | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
    record_history: bool = True,
) -> Solution[torch.Tensor]:
    r"""Solve a square linear system :math:`A x = b` by randomized iterative sketch-and-project.

    Each iteration draws a random sketch :math:`S \in \mathbb{R}^{N \times s}` and projects the iterate, in the
    Euclidean norm, onto the sketched solution set :math:`\{x : S^\top A x = S^\top b\}`:

    .. math::
        x_{j+1} = x_j - A^\top S \,(S^\top A A^\top S)^\dagger\, S^\top (A x_j - b).

    This is the Gower-Richtárik method with weight matrix :math:`B = I` (the "row action" variant), which needs no
    symmetry or definiteness of :math:`A`, only nonsingularity, so it applies to indefinite KKT systems. Its error
    contracts in expectation: :math:`\mathbb{E}\|x_j - x^\star\|^2 \le \rho^j \|x_0 - x^\star\|^2` with
    :math:`\rho = 1 - \lambda_{\min}(\mathbb{E}[A^\top S (S^\top A A^\top S)^\dagger S^\top A]) < 1`. Sketches:

    * ``"gaussian"``: :math:`S` has i.i.d. standard normal entries, ``sketch_size`` columns;
    * ``"block_kaczmarz"``: :math:`S` picks ``sketch_size`` distinct rows of :math:`A` uniformly at random;
    * ``"kaczmarz"``: :math:`S = e_i`, one row, with probability :math:`\|a_i\|^2 / \|A\|_F^2` for a matrix
      (randomized Kaczmarz, :math:`\rho = 1 - \sigma_{\min}^2(A)/\|A\|_F^2`) and uniformly for a matrix-free
      operator (whose row norms are unknown).

    The true residual :math:`A x_j - b` is recomputed every iteration (one product with :math:`A`); the method stops
    when :math:`\|A x_j - b\| \le \mathrm{tol} \cdot \|b\|`.

    Args:
        A: the ``(N, N)`` system matrix, or a :class:`~sciml_protocols.LinearOperator` that also has ``rmatvec``
            (:math:`A^\top y`), which the projections need. Real floating dtype.
        b: right-hand side, shape ``(N,)``, same dtype and device as ``A``, finite.
        x0: starting point, shape ``(N,)``; zeros when None.
        sketch: ``"gaussian"``, ``"block_kaczmarz"`` or ``"kaczmarz"``.
        sketch_size: number of sketch columns ``s`` (``1 <= s <= N``); default :math:`\lceil\sqrt N\,\rceil`; must
            be None or 1 for ``"kaczmarz"``.
        max_iter: cap on the number of projections, ``>= 1``.
        tol: relative residual tolerance, ``> 0``.
        generator: source of the random sketches (its device is where they are drawn); the global RNG when None.
        record_history: keep :math:`\|A x_j - b\|` of every iterate.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` the iterate ``(N,)``; ``converged`` whether
        :math:`\|Ax - b\| \le \mathrm{tol}\|b\|`; ``n_iter`` the number of projections; ``residual`` the final
        :math:`\|Ax - b\|` (float); ``history`` the residual norms ``(n_iter + 1,)`` (or None); ``stats`` with
        ``relative_residual``, ``sketch``, ``sketch_size`` and ``reason`` (None when converged).

    Raises:
        SciMLInputError: a non-square, non-floating or adjoint-less operator; ``b`` or ``x0`` of the wrong shape,
            dtype or device, or not finite; an unknown sketch; a bad ``sketch_size``, ``max_iter`` or ``tol``.

    Example:
        >>> A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, -3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        >>> sol = sketch_and_project(A, b, sketch="kaczmarz", tol=1e-10, generator=torch.Generator().manual_seed(0))
        >>> sol.converged, bool(torch.allclose(sol.value, torch.linalg.solve(A, b)))
        (True, True)

    References:
        Gower and Richtárik, "Randomized Iterative Methods for Linear Systems", SIAM J. Matrix Anal. Appl. 36(4)
        (2015), arXiv:1506.03296. Strohmer and Vershynin, "A randomized Kaczmarz algorithm with exponential
        convergence", J. Fourier Anal. Appl. 15 (2009).
    """
    sketcher, rhs, x = _prepare_system(A, b, x0, sketch, sketch_size, generator)
    _check_positive_int("max_iter", max_iter)
    check_positive("tol", tol)
    _check_flag("record_history", record_history)
    b_norm = float(torch.linalg.vector_norm(rhs))
    threshold = tol * b_norm
    history: list[float] | None = [] if record_history else None
    if history is not None:
        history.append(float(torch.linalg.vector_norm(sketcher.apply(x) - rhs)))
    x, residual, count = _sketch_loop(sketcher, rhs, x, threshold, max_iter, history)
    final = float(torch.linalg.vector_norm(residual))
    converged = final <= threshold
    stats: dict[str, Any] = {
        "relative_residual": final / b_norm if b_norm > 0 else final,
        "sketch": sketch,
        "sketch_size": sketcher.sketch_size,
        "reason": None if converged else f"reached max_iter={max_iter} with residual {final:.3g} > {threshold:.3g}",
    }
    return Solution(
        value=x,
        converged=converged,
        n_iter=count,
        residual=final,
        history=torch.tensor(history, dtype=torch.float64) if history is not None else None,
        stats=stats,
    )


def _prepare_system(
    A: LinearOperator | torch.Tensor,
    b: torch.Tensor,
    x0: torch.Tensor | None,
    sketch: str,
    sketch_size: int | None,
    generator: torch.Generator | None,
) -> tuple[_Sketcher, torch.Tensor, torch.Tensor]:
    operator = aslinearoperator(A, name="A")
    size, columns = operator.shape
    if size != columns:
        raise SciMLInputError("A", f"must be square, got shape {operator.shape}")
    if not operator.dtype.is_floating_point:
        raise SciMLInputError("A", f"must have a real floating dtype, got {operator.dtype}")
    if tuple(getattr(operator, "batch_shape", ())):
        raise SciMLInputError("A", "must be a single (N, N) system, not a batch")
    matrix: torch.Tensor | None = None
    if isinstance(A, torch.Tensor):
        matrix = A
    else:
        dense = getattr(operator, "matrix", None)
        if isinstance(dense, torch.Tensor) and dense.ndim == 2:
            matrix = dense
    if matrix is not None:
        check_finite("A", matrix)
    elif not callable(getattr(operator, "rmatvec", None)) or not getattr(operator, "has_rmatvec", True):
        raise SciMLInputError("A", "a matrix-free operator needs rmatvec (the adjoint) for sketch-and-project")
    check_in_choices("sketch", sketch, _SKETCHES)
    for name, vector in (("b", b), ("x0", x0)):
        if vector is None:
            continue
        check_tensor(name, vector)
        check_dtype(name, vector)
        check_nonempty(name, vector)
        if vector.shape != (size,):
            raise SciMLInputError(name, f"expected shape ({size},), got {tuple(vector.shape)}")
        if vector.dtype != operator.dtype:
            raise SciMLInputError(name, f"has dtype {vector.dtype} but 'A' has {operator.dtype}")
        if vector.device != torch.device(operator.device):
            raise SciMLInputError(name, f"is on {vector.device} but 'A' is on {operator.device}")
        check_finite(name, vector)
    resolved = _resolve_sketch_size(sketch, sketch_size, size)
    sketcher = _Sketcher(operator, matrix, sketch, resolved, _check_generator(generator))
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    return sketcher, b, x


# --------------------------------------------------------------------------------------------------------------------
# AdaSketch-Newton
# --------------------------------------------------------------------------------------------------------------------


def _scalar(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: f(x).reshape(())


def _check_unit_open(name: str, value: float, low: float, high: float) -> None:
    check_positive(name, value)
    if not low < value < high:
        raise SciMLInputError(name, f"must lie in ({low}, {high}), got {value}")


def adasketch_newton(
    f: Callable[[torch.Tensor], torch.Tensor],
    c: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor | Sequence[float],
    *,
    lam0: torch.Tensor | None = None,
    hessian: Literal["exact"] = "exact",
    mu: float = 1.0,
    nu: float = 0.1,
    delta: float = 0.1,
    delta_min: float = 1e-6,
    xi_b: float = 0.1,
    beta: float = 0.1,
    penalty_growth: float = 1.5,
    superlinear: bool = False,
    sketch: SketchKind = "gaussian",
    sketch_size: int | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
    max_sketch_iter: int = 100_000,
    max_backtracks: int = 60,
    mu_max: float = 1e12,
    nu_min: float = 1e-12,
    generator: torch.Generator | None = None,
    record_history: bool = True,
    progress: bool = False,
) -> Solution[tuple[torch.Tensor, torch.Tensor]]:
    r"""Minimize :math:`f(x)` subject to :math:`c(x) = 0` by AdaSketch-Newton (sketched inexact Newton-KKT steps).

    With the Lagrangian :math:`\mathcal{L}(x, \lambda) = f(x) + \lambda^\top c(x)`, its gradient
    :math:`\nabla_x \mathcal{L} = \nabla f + G^\top \lambda` (:math:`G = \nabla c(x)^\top \in \mathbb{R}^{m\times n}`,
    the constraint Jacobian) and the KKT vector :math:`\nabla\mathcal{L} = (\nabla_x\mathcal{L}, c)`, iteration
    :math:`k` does:

    1. **Newton-KKT system.** :math:`K_k z = -\nabla\mathcal{L}_k` with
       :math:`K_k = \begin{bmatrix} B_k & G_k^\top \\ G_k & 0 \end{bmatrix}`, :math:`z = (\Delta x, \Delta\lambda)`.
       :math:`B_k = \nabla_x^2 \mathcal{L}_k` (exact, by reverse-mode autograd), shifted to
       :math:`B_k + (\xi_B + \|\nabla^2_x\mathcal{L}_k\|) I` when the reduced Hessian :math:`Z^\top B_k Z`
       (:math:`Z` an orthonormal null-space basis of :math:`G_k`) has an eigenvalue below :math:`\xi_B`.
    2. **Adaptive accuracy.** Sketch-and-project (:func:`sketch_and_project`, warm-started) runs until its
       residual :math:`r = K_k z + \nabla\mathcal{L}_k` satisfies

       .. math:: \|K_k\|\, \Psi_k \,\|r\| \le \theta_k \delta_k \|\nabla\mathcal{L}_k\|,\qquad
           \Psi_k = \frac{20 \max(\|B_k\|^2, 1)}{\min(\lambda_{\min}(G_k G_k^\top), 1)\,
           \min(\lambda_{\min}(Z^\top B_k Z), 1)},

       where :math:`\delta_k = \max\{\min\{\delta_{k-1}, \tfrac{(1/2 - \beta)\nu}{(1 + \mu + \nu)\Upsilon_k^2
       \Psi_k^2}\}, \delta_{\min}\}`, :math:`\Upsilon_k = \max(\|G_k\|, \|\nabla_x^2\mathcal{L}_k\|, 1)` (spectral
       norms) and :math:`\theta_k = 1`, or :math:`\theta_k = \min(1, \|\nabla\mathcal{L}_k\|)` with
       ``superlinear=True`` (the sharpened condition of the paper's superlinear result).
    3. **Descent test and penalty update.** On the exact augmented Lagrangian

       .. math::
           \mathcal{L}_{\mu,\nu}(x, \lambda) = f(x) + \lambda^\top c(x) + \frac{\mu}{2}\|c(x)\|^2
               + \frac{\nu}{2}\|\nabla_x \mathcal{L}(x, \lambda)\|^2,

       with gradient :math:`\nabla_x\mathcal{L}_{\mu,\nu} = (I + \nu\nabla^2_x\mathcal{L})\nabla_x\mathcal{L}
       + \mu G^\top c` and :math:`\nabla_\lambda\mathcal{L}_{\mu,\nu} = c + \nu G\nabla_x\mathcal{L}`, the direction
       is accepted when :math:`\nabla\mathcal{L}_{\mu,\nu}^\top z \le -\tfrac{\nu}{2}\|\nabla\mathcal{L}_k\|^2`.
       Otherwise :math:`\mu \leftarrow \rho^2\mu`, :math:`\nu \leftarrow \nu/\rho`,
       :math:`\delta \leftarrow \max\{\min\{\delta/\rho^4, \delta_{\mathrm{trial}}\}, \delta_{\min}\}`
       (:math:`\rho` = ``penalty_growth``) and the sketch solver resumes from the current :math:`z`.
    4. **Armijo line search.** The largest :math:`\alpha \in \{1, 1/2, 1/4, \dots\}` with
       :math:`\mathcal{L}_{\mu,\nu}(x + \alpha\Delta x, \lambda + \alpha\Delta\lambda) \le \mathcal{L}_{\mu,\nu}(x,
       \lambda) + \alpha\beta\nabla\mathcal{L}_{\mu,\nu}^\top z`; a trial point where :math:`f`, :math:`c` or
       :math:`\nabla_x\mathcal{L}` is not finite is rejected.

    The method stops, converged, when :math:`\|\nabla\mathcal{L}_k\| \le \mathrm{tol}`. It stops unconverged (with
    ``stats["reason"]``) at ``max_iter``, when the sketch solver needs more than ``max_sketch_iter`` projections for
    one Newton step, when ``max_backtracks`` halvings fail, when :math:`\mu >` ``mu_max`` or :math:`\nu <`
    ``nu_min``, or when :math:`G_k` loses full row rank (LICQ fails). The accuracy threshold with the theoretical
    constants is strict (:math:`\delta_k` usually sits at ``delta_min``), so the inner solves are accurate; the
    descent test, not the threshold, is what drives the penalty updates in practice. The threshold is never set below
    :math:`100\,\epsilon\,\|\nabla\mathcal{L}_k\|` (:math:`\epsilon` the machine epsilon of ``x0``'s dtype),
    which only matters in single precision.

    Args:
        f: objective, a torch function of ``x`` ``(n,)`` returning a scalar (0-dim or one element), differentiable
            twice by autograd.
        c: equality constraints, ``x`` ``(n,)`` to ``(m,)`` with ``1 <= m <= n``, differentiable twice.
        x0: starting point ``(n,)``; a floating tensor (its dtype and device are used), or a sequence of numbers
            (made float64).
        lam0: starting multipliers ``(m,)``; default the least-squares estimate
            :math:`\lambda_0 = -(G_0 G_0^\top)^{-1} G_0 \nabla f(x_0)`.
        hessian: ``"exact"`` (the only option: :math:`\nabla^2_x\mathcal{L}` by autograd, one backward pass per row).
        mu: initial penalty :math:`\mu > 0` on :math:`\|c\|^2`.
        nu: initial penalty :math:`\nu > 0` on :math:`\|\nabla_x\mathcal{L}\|^2`.
        delta: initial accuracy parameter :math:`\delta_0 > 0`.
        delta_min: floor on :math:`\delta_k`, ``0 < delta_min <= delta``.
        xi_b: reduced-Hessian curvature floor :math:`\xi_B > 0`.
        beta: Armijo parameter :math:`\beta \in (0, 1/2)`.
        penalty_growth: :math:`\rho > 1`, the factor of the penalty updates.
        superlinear: use :math:`\theta_k = \min(1, \|\nabla\mathcal{L}_k\|)` instead of 1.
        sketch: sketch of the inner solver (see :func:`sketch_and_project`).
        sketch_size: its size (default :math:`\lceil\sqrt{n+m}\,\rceil`; 1 for Kaczmarz).
        max_iter: cap on Newton iterations, ``>= 1``.
        tol: tolerance on the KKT residual :math:`\|(\nabla_x\mathcal{L}, c)\|`, ``> 0``.
        max_sketch_iter: cap on the projections of one Newton step, ``>= 1``.
        max_backtracks: cap on the step-size halvings of one line search, ``>= 1``.
        mu_max: largest admissible :math:`\mu`.
        nu_min: smallest admissible :math:`\nu`.
        generator: source of the random sketches (the global RNG when None).
        record_history: also keep the iterates ``x`` and ``lambda`` of every iteration in ``stats``.
        progress: show a tqdm progress bar over the Newton iterations.

    Returns:
        :class:`~sciml_protocols.Solution` with ``value`` the pair ``(x, lam)``; ``converged`` whether the KKT
        residual met ``tol``; ``n_iter`` the Newton iterations done; ``residual`` the final KKT residual (float);
        ``history`` the KKT residual of every iterate ``(n_iter + 1,)`` (float64, always kept); ``stats`` with
        per-iteration lists ``sketch_iterations``, ``step_sizes``, ``mu``, ``nu``, ``delta``, ``merit_before``,
        ``merit_after`` (the merit at the step's penalties), ``hessian_shifted``; the totals
        ``total_sketch_iterations`` and ``penalty_increases``; ``f`` (the final objective), ``reason`` (None when
        converged) and, with ``record_history``, ``x_history`` ``(n_iter + 1, n)`` and ``lam_history``
        ``(n_iter + 1, m)``.

    Raises:
        SciMLInputError: ``x0`` not a finite non-empty floating vector; ``f(x0)`` not a finite scalar; ``c(x0)``
            not a finite vector of length ``1..n`` or of another dtype/device; a bad ``lam0``; a parameter out of
            range (non-positive penalties, tolerances or caps, ``beta`` outside ``(0, 1/2)``,
            ``penalty_growth <= 1``, ``delta_min > delta``); an unknown ``hessian`` or ``sketch``.

    Example:
        >>> from sciml_optim.testing import HS7
        >>> p = HS7()
        >>> sol = adasketch_newton(p.objective, p.constraints, p.x0, sketch_size=3,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> sol.converged, bool(torch.allclose(sol.value[0], p.x_star, atol=1e-8))
        (True, True)

    Reference:
        Hong, Na, Mahoney and Kolar, "Constrained Optimization via Exact Augmented Lagrangian and Randomized
        Iterative Sketching", ICML 2023, arXiv:2305.18379 (Algorithm 1, AdaSketch-Newton).
    """
    x, objective, constraints, lam = _validate_problem(f, c, x0, lam0)
    check_in_choices("hessian", hessian, ("exact",))
    check_in_choices("sketch", sketch, _SKETCHES)
    for name, value in (("mu", mu), ("nu", nu), ("delta", delta), ("delta_min", delta_min), ("xi_b", xi_b)):
        check_positive(name, value)
    check_positive("tol", tol)
    check_positive("mu_max", mu_max)
    check_positive("nu_min", nu_min)
    if delta_min > delta:
        raise SciMLInputError("delta_min", f"must be <= delta = {delta}, got {delta_min}")
    _check_unit_open("beta", beta, 0.0, 0.5)
    check_positive("penalty_growth", penalty_growth)
    if penalty_growth <= 1.0:
        raise SciMLInputError("penalty_growth", f"must be > 1, got {penalty_growth}")
    for name, value in (
        ("max_iter", max_iter),
        ("max_sketch_iter", max_sketch_iter),
        ("max_backtracks", max_backtracks),
    ):
        _check_positive_int(name, value)
    for name, value in (("superlinear", superlinear), ("record_history", record_history), ("progress", progress)):
        _check_flag(name, value)
    generator = _check_generator(generator)
    n, m = x.shape[0], lam.shape[0]
    resolved_size = _resolve_sketch_size(sketch, sketch_size, n + m)

    def merit(point: torch.Tensor, multipliers: torch.Tensor, mu_: float, nu_: float) -> float:
        value_f, value_c, grad_l, _, _ = _derivatives(objective, constraints, point, multipliers, order=1)
        total = float(value_f + multipliers @ value_c + 0.5 * mu_ * (value_c @ value_c) + 0.5 * nu_ * (grad_l @ grad_l))
        return total if math.isfinite(total) else math.inf

    stats_lists: dict[str, list[Any]] = {
        key: []
        for key in (
            "sketch_iterations",
            "step_sizes",
            "mu",
            "nu",
            "delta",
            "merit_before",
            "merit_after",
            "hessian_shifted",
        )
    }
    kkt_history: list[float] = []
    x_history: list[torch.Tensor] = [x.clone()]
    lam_history: list[torch.Tensor] = [lam.clone()]
    penalty_increases = 0
    reason: str | None = None
    converged = False
    iterations = 0
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="adasketch_newton")

    while True:
        _, value_c, grad_l, g, h = _derivatives(objective, constraints, x, lam, order=2)
        kkt_vector = torch.cat([grad_l, value_c])
        kkt = float(torch.linalg.vector_norm(kkt_vector))
        kkt_history.append(kkt)
        if not math.isfinite(kkt):
            reason = "the KKT residual is not finite"
            break
        if kkt <= tol:
            converged = True
            break
        if iterations >= max_iter:
            reason = f"reached max_iter={max_iter} with KKT residual {kkt:.3g} > tol={tol:.3g}"
            break
        gram_eigenvalues = torch.linalg.eigvalsh(g @ g.T)
        xi_g = float(gram_eigenvalues[0])
        if xi_g <= 100.0 * torch.finfo(x.dtype).eps * max(1.0, float(gram_eigenvalues[-1])):
            reason = "the constraint Jacobian lost full row rank (LICQ fails)"
            break
        b_matrix, reduced_min, shifted = _modified_hessian(h, g, xi_b)
        norm_b = float(torch.linalg.matrix_norm(b_matrix, ord=2))
        norm_h = float(torch.linalg.matrix_norm(h, ord=2))
        norm_g = float(torch.linalg.matrix_norm(g, ord=2))
        psi = 20.0 * max(norm_b**2, 1.0) / (min(xi_g, 1.0) * min(reduced_min, 1.0))
        upsilon = max(norm_g, norm_h, 1.0)

        def delta_trial(mu_: float, nu_: float, psi_: float = psi, upsilon_: float = upsilon) -> float:
            return (0.5 - beta) * nu_ / ((1.0 + mu_ + nu_) * upsilon_**2 * psi_**2)

        delta = max(min(delta, delta_trial(mu, nu)), delta_min)
        kkt_matrix = torch.zeros(n + m, n + m, dtype=x.dtype, device=x.device)
        kkt_matrix[:n, :n] = b_matrix
        kkt_matrix[:n, n:] = g.T
        kkt_matrix[n:, :n] = g
        norm_k = float(torch.linalg.matrix_norm(kkt_matrix, ord=2))
        theta = min(1.0, kkt) if superlinear else 1.0
        sketcher = _Sketcher(aslinearoperator(kkt_matrix), kkt_matrix, sketch, resolved_size, generator)
        rhs = -kkt_vector
        direction = torch.zeros_like(rhs)
        sketch_count = 0
        descent_found = False
        while True:
            # Below a few hundred ulps of the right-hand side the residual is rounding noise (this only binds in
            # low precision: in float64 the theoretical threshold is far above it).
            threshold = max(theta * delta * kkt / (norm_k * psi), 100.0 * torch.finfo(x.dtype).eps * kkt)
            direction, _, used = _sketch_loop(sketcher, rhs, direction, threshold, max_sketch_iter - sketch_count, None)
            sketch_count += used
            residual_norm = float(torch.linalg.vector_norm(kkt_matrix @ direction - rhs))
            if residual_norm > threshold:
                reason = (
                    f"the sketch solver reached max_sketch_iter={max_sketch_iter} before the accuracy condition "
                    f"(residual {residual_norm:.3g} > {threshold:.3g})"
                )
                break
            merit_gradient = _merit_gradient(grad_l, value_c, g, h, mu, nu)
            slope = float(merit_gradient @ direction)
            if slope <= -0.5 * nu * kkt**2:
                descent_found = True
                break
            mu *= penalty_growth**2
            nu /= penalty_growth
            penalty_increases += 1
            if mu > mu_max or nu < nu_min:
                reason = f"penalty parameters left their range (mu={mu:.3g}, nu={nu:.3g})"
                break
            delta = max(min(delta / penalty_growth**4, delta_trial(mu, nu)), delta_min)
        if not descent_found:
            break
        merit_gradient = _merit_gradient(grad_l, value_c, g, h, mu, nu)
        slope = float(merit_gradient @ direction)
        merit_now = merit(x, lam, mu, nu)
        step = 1.0
        accepted = False
        trial_merit = math.inf
        for _ in range(max_backtracks + 1):
            trial_x = x + step * direction[:n]
            trial_lam = lam + step * direction[n:]
            trial_merit = merit(trial_x, trial_lam, mu, nu)
            if trial_merit <= merit_now + step * beta * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            reason = f"the line search failed after {max_backtracks} halvings"
            break
        x = x + step * direction[:n]
        lam = lam + step * direction[n:]
        iterations += 1
        for key, value in (
            ("sketch_iterations", sketch_count),
            ("step_sizes", step),
            ("mu", mu),
            ("nu", nu),
            ("delta", delta),
            ("merit_before", merit_now),
            ("merit_after", trial_merit),
            ("hessian_shifted", shifted),
        ):
            stats_lists[key].append(value)
        if record_history:
            x_history.append(x.clone())
            lam_history.append(lam.clone())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(kkt=f"{kkt:.2e}")
    if bar is not None:
        bar.close()

    with torch.no_grad():
        final_f = float(objective(x))
    stats: dict[str, Any] = dict(stats_lists)
    stats.update(
        total_sketch_iterations=sum(stats_lists["sketch_iterations"]),
        penalty_increases=penalty_increases,
        f=final_f,
        reason=reason,
    )
    if record_history:
        stats["x_history"] = torch.stack(x_history)
        stats["lam_history"] = torch.stack(lam_history)
    return Solution(
        value=(x, lam),
        converged=converged,
        n_iter=iterations,
        residual=kkt_history[-1],
        history=torch.tensor(kkt_history, dtype=torch.float64),
        stats=stats,
    )


def _derivatives(
    objective: Callable[[torch.Tensor], torch.Tensor],
    constraints: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    lam: torch.Tensor,
    *,
    order: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``f``, ``c``, :math:`\nabla_x\mathcal{L}`; for ``order=2`` also the Jacobian ``G`` and the Hessian.

    Plain reverse-mode autograd, one backward pass per row: ``torch.func`` would be shorter but its first call
    imports ``torch._dynamo``, which costs seconds.
    """
    n = x.shape[0]
    with torch.enable_grad():
        point = x.detach().requires_grad_(True)
        value_f = objective(point)
        value_c = constraints(point)
        lagrangian = value_f + lam @ value_c
        if not lagrangian.requires_grad:
            grad_l = torch.zeros_like(point)
        else:
            (grad_l,) = torch.autograd.grad(
                lagrangian, point, create_graph=order == 2, allow_unused=True, materialize_grads=True
            )
        if order == 2:
            g = _rows_of_jacobian(value_c, point)
            h = (
                _rows_of_jacobian(grad_l, point)
                if grad_l.requires_grad
                else torch.zeros(n, n, dtype=x.dtype, device=x.device)
            )
        else:
            g = h = value_f.new_zeros(0)
    detach = lambda t: t.detach()  # noqa: E731
    return detach(value_f), detach(value_c), detach(grad_l), detach(g), detach(h)


def _rows_of_jacobian(output: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    rows: list[torch.Tensor] = []
    for i in range(output.shape[0]):
        if not output.requires_grad:
            rows.append(torch.zeros_like(point))
            continue
        (row,) = torch.autograd.grad(output[i], point, retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append(row)
    return torch.stack(rows)


def _merit_gradient(
    grad_l: torch.Tensor, value_c: torch.Tensor, g: torch.Tensor, h: torch.Tensor, mu: float, nu: float
) -> torch.Tensor:
    r"""Gradient of :math:`\mathcal{L}_{\mu,\nu}` in :math:`(x, \lambda)` from the first and second derivatives."""
    grad_x = grad_l + nu * (h @ grad_l) + mu * (g.T @ value_c)
    grad_lam = value_c + nu * (g @ grad_l)
    return torch.cat([grad_x, grad_lam])


def _modified_hessian(h: torch.Tensor, g: torch.Tensor, xi_b: float) -> tuple[torch.Tensor, float, bool]:
    """``B`` (the Hessian, shifted when its reduced curvature is below ``xi_b``) and ``lambda_min(Z^T B Z)``."""
    n, m = h.shape[0], g.shape[0]
    h = 0.5 * (h + h.T)
    if m == n:
        # No null space: any B gives a nonsingular KKT matrix when G is invertible.
        return h, 1.0, False
    q, _ = torch.linalg.qr(g.T, mode="complete")
    basis = q[:, m:]
    reduced = float(torch.linalg.eigvalsh(basis.T @ h @ basis)[0])
    if reduced >= xi_b:
        return h, reduced, False
    shift = xi_b + float(torch.linalg.matrix_norm(h, ord=2))
    return h + shift * torch.eye(n, dtype=h.dtype, device=h.device), reduced + shift, True


def _validate_problem(
    f: Callable[[torch.Tensor], torch.Tensor],
    c: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor | Sequence[float],
    lam0: torch.Tensor | None,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    if not callable(f):
        raise SciMLInputError("f", f"must be callable, got {type(f).__name__}")
    if not callable(c):
        raise SciMLInputError("c", f"must be callable, got {type(c).__name__}")
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise SciMLInputError("x0", f"must be a tensor or a sequence of numbers, got {type(x0).__name__}") from None
    check_dtype("x0", x0)
    check_nonempty("x0", x0)
    if x0.ndim != 1:
        raise SciMLInputError("x0", f"must be a vector (n,), got shape {tuple(x0.shape)}")
    check_finite("x0", x0)
    x = x0.detach().clone()
    n = x.shape[0]
    with torch.no_grad():
        value_f = f(x)
        value_c = c(x)
    if not isinstance(value_f, torch.Tensor) or value_f.numel() != 1:
        shape = tuple(value_f.shape) if isinstance(value_f, torch.Tensor) else type(value_f).__name__
        raise SciMLInputError("f", f"must return a scalar tensor, got {shape}")
    if not bool(torch.isfinite(value_f).all()):
        raise SciMLInputError("f", f"is not finite at x0 (f(x0) = {float(value_f)})")
    if not isinstance(value_c, torch.Tensor) or value_c.ndim != 1:
        shape = tuple(value_c.shape) if isinstance(value_c, torch.Tensor) else type(value_c).__name__
        raise SciMLInputError("c", f"must return a vector (m,), got {shape}")
    m = value_c.shape[0]
    if not 1 <= m <= n:
        raise SciMLInputError("c", f"must return 1 <= m <= n = {n} constraints, got m = {m}")
    if value_c.dtype != x.dtype or value_c.device != x.device:
        raise SciMLInputError("c", f"returned {value_c.dtype} on {value_c.device}, expected {x.dtype} on {x.device}")
    if not bool(torch.isfinite(value_c).all()):
        raise SciMLInputError("c", "is not finite at x0")
    objective = _scalar(f)
    if lam0 is None:
        _, _, grad_f, g, _ = _derivatives(objective, c, x, torch.zeros(m, dtype=x.dtype, device=x.device), order=2)
        # Least-squares multipliers: argmin ||grad f + G^T lam||.
        lam = -torch.linalg.lstsq(g.T, grad_f.unsqueeze(-1)).solution.squeeze(-1)
        if not bool(torch.isfinite(lam).all()):
            lam = torch.zeros(m, dtype=x.dtype, device=x.device)
    else:
        check_tensor("lam0", lam0)
        check_dtype("lam0", lam0)
        if lam0.shape != (m,):
            raise SciMLInputError("lam0", f"expected shape ({m},) to match c(x0), got {tuple(lam0.shape)}")
        if lam0.dtype != x.dtype or lam0.device != x.device:
            raise SciMLInputError("lam0", f"must be {x.dtype} on {x.device}, got {lam0.dtype} on {lam0.device}")
        check_finite("lam0", lam0)
        lam = lam0.detach().clone()
    return x, objective, c, lam
