r"""Implicit differentiation of any solver from its optimality condition.

A solver returns :math:`z^\star(\theta)` with :math:`F(z^\star(\theta), \theta) = 0`. Where
:math:`A = \partial_z F(z^\star, \theta)` is invertible, the implicit function theorem gives

.. math::
    \partial_\theta z^\star = -A^{-1} B, \qquad B = \partial_\theta F(z^\star, \theta),

so derivatives of :math:`z^\star` need only matrix-free products with the Jacobians of :math:`F`, never the
solver's iterations:

* reverse mode (VJP) for a cotangent :math:`v`: solve :math:`A^\top u = v`, return :math:`-B^\top u`;
* forward mode (JVP) for a tangent :math:`t`: solve :math:`A\,s = -B\,t`, return :math:`s`.

For a fixed point :math:`z = T(z, \theta)` the root form is :math:`F = T - z`, so :math:`A = \partial_z T - I`.

:func:`custom_root` and :func:`custom_fixed_point` decorate a solver ``solver(init, *theta) -> z`` (jaxopt's calling
convention) so that autograd, ``torch.func.grad``, ``jacrev``, ``jacfwd``/``jvp`` and ``vmap`` differentiate it with
the implicit function theorem. The solver runs under :func:`torch.no_grad` on detached inputs, so the memory of a
backward pass does not depend on the number of inner iterations. :func:`root_vjp` and :func:`root_jvp` are the
underlying products, usable on their own.

Reference:
    M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-López, F. Pedregosa, J.-P. Vert,
    "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.utils._pytree as pytree
from sciml_protocols import (
    ConvergenceWarning,
    FixedPointCondition,
    OptimalityCondition,
    SciMLError,
    SciMLInputError,
    Solution,
    check_in_choices,
    check_positive,
)

from ._linear_solve import linear_solve

__all__ = ["custom_fixed_point", "custom_root", "root_jvp", "root_vjp"]

LINEAR_METHODS: tuple[str, ...] = ("cg", "normal_cg", "gmres", "bicgstab", "neumann", "dense")


def _import_jvp_decompositions() -> None:
    # The first forward-mode call of torch.func imports torch._decomp.decompositions_for_jvp, which emits a
    # FutureWarning about torch.jit.script (an error under filterwarnings=error); import it once, quietly.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401  # pyright: ignore[reportUnusedImport]


OnFailure = Literal["warn", "raise", "ignore"]
SolveArg = str | Callable[..., Any]

# A Python number (or string, None, callable, ...) passed as a whole positional argument is a constant of the
# solver; a container (dict, list, tuple) of the parameters must hold only tensors.
_CONTAINERS = (dict, list, tuple)


# --------------------------------------------------------------------------------------------------------------
# pytrees
# --------------------------------------------------------------------------------------------------------------


class _ThetaLayout:
    """How the positional parameters split into tensor leaves (traced) and constants (passed unchanged)."""

    def __init__(self, theta: Sequence[Any], name: str = "theta") -> None:
        self.n_args = len(theta)
        self.constants: dict[int, Any] = {}
        self.specs: dict[int, pytree.TreeSpec] = {}
        self.counts: list[int] = []
        leaves: list[torch.Tensor] = []
        for i, arg in enumerate(theta):
            if isinstance(arg, torch.Tensor):
                leaves.append(arg)
                self.counts.append(1)
            elif isinstance(arg, _CONTAINERS):
                flat, spec = pytree.tree_flatten_with_path(arg)
                for path, leaf in flat:
                    if not isinstance(leaf, torch.Tensor):
                        where = f"{name}[{i}]{pytree.keystr(path)}"
                        raise SciMLInputError(
                            name,
                            f"the leaf at {where} is a {type(leaf).__name__}, not a tensor; pass constants as "
                            "separate positional arguments (Python numbers there are treated as constants) or "
                            "close over them",
                        )
                    leaves.append(leaf)
                self.specs[i] = spec
                self.counts.append(len(flat))
            else:
                self.constants[i] = arg
                self.counts.append(0)
        self.leaves = leaves

    def rebuild(self, leaves: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        out: list[Any] = []
        k = 0
        for i in range(self.n_args):
            if i in self.constants:
                out.append(self.constants[i])
            elif i in self.specs:
                n = self.counts[i]
                out.append(pytree.tree_unflatten(list(leaves[k : k + n]), self.specs[i]))
                k += n
            else:
                out.append(leaves[k])
                k += 1
        return tuple(out)

    def split(self, flat: Sequence[torch.Tensor | None]) -> tuple[Any, ...]:
        """Per-argument pytrees of ``flat`` (one entry per leaf); None for constants."""
        out: list[Any] = []
        k = 0
        for i in range(self.n_args):
            if i in self.constants:
                out.append(None)
            elif i in self.specs:
                n = self.counts[i]
                out.append(pytree.tree_unflatten(list(flat[k : k + n]), self.specs[i]))
                k += n
            else:
                out.append(flat[k])
                k += 1
        return tuple(out)


def _flatten_solution(name: str, z: Any) -> tuple[list[torch.Tensor], pytree.TreeSpec]:
    flat, spec = pytree.tree_flatten_with_path(z)
    leaves: list[torch.Tensor] = []
    for path, leaf in flat:
        if not isinstance(leaf, torch.Tensor) or not leaf.dtype.is_floating_point:
            what = f"a {type(leaf).__name__}" if not isinstance(leaf, torch.Tensor) else f"dtype {leaf.dtype}"
            raise SciMLInputError(
                name, f"the solution leaf z{pytree.keystr(path)} must be a floating tensor, got {what}"
            )
        leaves.append(leaf)
    if not leaves:
        raise SciMLInputError(name, "the solution has no tensor leaves")
    return leaves, spec


def _is_differentiable(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point or t.dtype.is_complex


def _flat_cat(leaves: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(leaves) == 1:
        return leaves[0].reshape(-1)
    return torch.cat([leaf.reshape(-1) for leaf in leaves])


def _flat_split(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    k = 0
    for leaf in like:
        n = leaf.numel()
        out.append(vector[k : k + n].reshape(leaf.shape))
        k += n
    return out


def _transforms_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, ...) is on the interpreter stack."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active is not None and active())


# --------------------------------------------------------------------------------------------------------------
# the problem: F, where it is evaluated, and how to solve its linear systems
# --------------------------------------------------------------------------------------------------------------


def _residual_of(optimality_fun: object, name: str) -> Callable[..., Any]:
    if isinstance(optimality_fun, OptimalityCondition):
        return optimality_fun.residual
    if not callable(optimality_fun):
        raise SciMLInputError(name, f"must be callable or an OptimalityCondition, got {type(optimality_fun).__name__}")
    return optimality_fun


class _Options:
    """Linear-solver options shared by the VJP and JVP systems."""

    def __init__(
        self,
        *,
        solve: SolveArg | None,
        symmetric: bool,
        tol: float,
        max_iter: int | None,
        preconditioner: Callable[[torch.Tensor], torch.Tensor] | None,
        on_failure: str,
    ) -> None:
        if solve is None:
            solve = "cg" if symmetric else "gmres"
        if isinstance(solve, str):
            check_in_choices("solve", solve, LINEAR_METHODS)
        elif not callable(solve):
            raise SciMLInputError("solve", f"must be a method name or a callable, got {type(solve).__name__}")
        check_positive("tol", tol)
        if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("max_iter", f"must be a positive int or None, got {max_iter!r}")
        if preconditioner is not None and not callable(preconditioner):
            raise SciMLInputError("preconditioner", f"must be callable or None, got {type(preconditioner).__name__}")
        check_in_choices("on_failure", on_failure, ("warn", "raise", "ignore"))
        self.solve = solve
        self.tol = float(tol)
        self.max_iter = max_iter
        self.preconditioner = preconditioner
        self.on_failure = on_failure


class _Problem:
    """``F`` at a point ``(z, theta)`` with matrix-free products by its Jacobians, on flattened vectors.

    For first-order derivatives outside torch.func transforms the products use plain autograd on one recorded
    evaluation of ``F`` (the graph is kept between products). Under transforms, or when the products must stay
    differentiable (higher order), they use :mod:`torch.func`, whose partial derivatives treat the other argument
    as a constant at their own level while the enclosing levels still see every dependency.
    """

    def __init__(
        self,
        residual: Callable[..., Any],
        z_leaves: Sequence[torch.Tensor],
        z_spec: pytree.TreeSpec,
        layout: _ThetaLayout,
        theta_leaves: Sequence[torch.Tensor],
    ) -> None:
        self.residual = residual
        self.z_leaves = list(z_leaves)
        self.z_spec = z_spec
        self.layout = layout
        self.theta_leaves = list(theta_leaves)
        transformed = _transforms_active()
        self.create_graph = torch.is_grad_enabled() and (
            transformed
            or any(t.requires_grad for t in self.z_leaves)
            or any(t.requires_grad for t in self.theta_leaves)
        )
        # Differentiable products need torch.func: with plain autograd, a gradient in theta of F(z*(theta), theta)
        # would run through z*(theta)'s own implicit node (the total, not the partial, derivative).
        self.functional = transformed or self.create_graph
        self._graph: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None
        self._vjp_z: Callable[..., Any] | None = None
        self._reverse_cache: dict[str, tuple[list[torch.Tensor], list[torch.Tensor | None]]] = {}

    # F on flat leaves, with the structure check
    def evaluate(self, z_leaves: Sequence[torch.Tensor], theta_leaves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        z = pytree.tree_unflatten(list(z_leaves), self.z_spec)
        out = self.residual(z, *self.layout.rebuild(theta_leaves))
        flat, spec = pytree.tree_flatten(out)
        if spec != self.z_spec or not all(isinstance(o, torch.Tensor) for o in flat):
            raise SciMLInputError(
                "optimality_fun",
                f"must return the structure of z ({self.z_spec}), returned {spec}",
            )
        for o, zl in zip(flat, z_leaves, strict=True):
            if o.shape != zl.shape:
                raise SciMLInputError(
                    "optimality_fun",
                    f"must return the shape of z {tuple(zl.shape)}, returned {tuple(o.shape)}",
                )
        return flat

    def _theta_variables(self) -> list[int]:
        return [i for i, t in enumerate(self.theta_leaves) if _is_differentiable(t)]

    def _recorded(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        if self._graph is None:
            with torch.enable_grad():
                z_var = [z.detach().requires_grad_(True) for z in self.z_leaves]
                theta_var = [t.detach() for t in self.theta_leaves]
                for i in self._theta_variables():
                    theta_var[i] = theta_var[i].requires_grad_(True)
                out = self.evaluate(z_var, theta_var)
            self._graph = (z_var, theta_var, out)
        return self._graph

    def _forward_by_reverse(
        self, key: str, variables: list[torch.Tensor], out: list[torch.Tensor], tangents: list[torch.Tensor]
    ) -> torch.Tensor:
        r"""Forward-mode product :math:`J t` by two reverse passes: :math:`J t = \partial_u (J^\top u)^\top t`.

        Used outside torch.func transforms (where nested forward-mode AD is not available, e.g. under
        ``torch.autograd.forward_ad``); the linearisation :math:`u \mapsto J^\top u` is recorded once per key.
        """
        cached = self._reverse_cache.get(key)
        with torch.enable_grad():
            if cached is None:
                probe = [torch.zeros_like(o, requires_grad=True) for o in out]
                back = torch.autograd.grad(out, variables, probe, create_graph=True, allow_unused=True)
                back_list: list[torch.Tensor | None] = list(back)
                cached = (probe, back_list)
                self._reverse_cache[key] = cached
            probe, back = cached
            pairs = [(b, t) for b, t in zip(back, tangents, strict=True) if b is not None and b.requires_grad]
            if not pairs:
                return _flat_cat([torch.zeros_like(p) for p in probe])
            result = torch.autograd.grad(
                [b for b, _ in pairs], probe, [t for _, t in pairs], retain_graph=True, allow_unused=True
            )
        return _flat_cat([torch.zeros_like(p) if r is None else r for r, p in zip(result, probe, strict=True)])

    def vjp_z(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`A^\top w` with :math:`A = \partial_z F`."""
        w_leaves = _flat_split(w, self.z_leaves)
        if self.functional:
            if self._vjp_z is None:

                def f_z(*zl: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    return tuple(self.evaluate(zl, self.theta_leaves))

                self._vjp_z = torch.func.vjp(f_z, *self.z_leaves)[1]
            return _flat_cat(self._vjp_z(tuple(w_leaves)))
        z_var, _, out = self._recorded()
        with torch.enable_grad():
            grads = torch.autograd.grad(out, z_var, w_leaves, retain_graph=True, allow_unused=True)
        return _flat_cat([torch.zeros_like(z) if g is None else g for g, z in zip(grads, z_var, strict=True)])

    def jvp_z(self, s: torch.Tensor) -> torch.Tensor:
        r""":math:`A s` (forward mode: torch.func.jvp, or two reverse passes outside transforms)."""
        s_leaves = tuple(_flat_split(s, self.z_leaves))
        if not self.functional:
            z_var, _, out = self._recorded()
            return self._forward_by_reverse("z", z_var, out, list(s_leaves))

        def f_z(*zl: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.evaluate(zl, self.theta_leaves))

        _import_jvp_decompositions()
        tangent = torch.func.jvp(f_z, tuple(self.z_leaves), s_leaves)[1]
        return _flat_cat(tangent)

    def vjp_theta(self, u: torch.Tensor) -> list[torch.Tensor | None]:
        r""":math:`B^\top u` with :math:`B = \partial_\theta F`, one entry per theta leaf (None if not floating)."""
        u_leaves = _flat_split(u, self.z_leaves)
        variables = self._theta_variables()
        result: list[torch.Tensor | None] = [None] * len(self.theta_leaves)
        if not variables:
            return result
        if self.functional:

            def f_theta(*tl: torch.Tensor) -> tuple[torch.Tensor, ...]:
                full = list(self.theta_leaves)
                for i, t in zip(variables, tl, strict=True):
                    full[i] = t
                return tuple(self.evaluate(self.z_leaves, full))

            vjp_fn = torch.func.vjp(f_theta, *[self.theta_leaves[i] for i in variables])[1]
            grads = vjp_fn(tuple(u_leaves))
        else:
            _, theta_var, out = self._recorded()
            with torch.enable_grad():
                grads = torch.autograd.grad(
                    out,
                    [theta_var[i] for i in variables],
                    u_leaves,
                    retain_graph=True,
                    allow_unused=True,
                )
        for i, g in zip(variables, grads, strict=True):
            result[i] = torch.zeros_like(self.theta_leaves[i]) if g is None else g
        return result

    def jvp_theta(self, tangents: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
        r""":math:`B t`; None when every tangent is None."""
        variables = [i for i in self._theta_variables() if tangents[i] is not None]
        if not variables:
            return None
        if not self.functional:
            _, theta_var, out = self._recorded()
            chosen = [tangents[i] for i in variables]
            return self._forward_by_reverse("theta", [theta_var[i] for i in variables], out, chosen)  # pyright: ignore[reportArgumentType]

        def f_theta(*tl: torch.Tensor) -> tuple[torch.Tensor, ...]:
            full = list(self.theta_leaves)
            for i, t in zip(variables, tl, strict=True):
                full[i] = t
            return tuple(self.evaluate(self.z_leaves, full))

        primals = tuple(self.theta_leaves[i] for i in variables)
        tangent_in = tuple(tangents[i] for i in variables)
        _import_jvp_decompositions()
        tangent = torch.func.jvp(f_theta, primals, tangent_in)[1]  # pyright: ignore[reportArgumentType]
        return _flat_cat(tangent)


def _solve_system(
    options: _Options,
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    which: str,
) -> Solution[Any]:
    """Solve ``M x = b`` and apply the failure policy; never hand back non-finite values silently."""
    checking = not _transforms_active()
    if callable(options.solve):
        raw = options.solve(matvec, b)
        if isinstance(raw, Solution):
            sol: Solution[Any] = raw
        elif isinstance(raw, torch.Tensor):
            sol = Solution(value=raw, converged=True, n_iter=0, residual=float("nan"), stats={"method": "callable"})
        else:
            raise SciMLInputError("solve", f"must return a tensor or a Solution, returned {type(raw).__name__}")
    else:
        sol = linear_solve(
            matvec,
            b,
            method=options.solve,
            rmatvec=rmatvec if options.solve == "normal_cg" else None,
            tol=options.tol,
            max_iter=options.max_iter,
            preconditioner=options.preconditioner,
        )
    value = sol.value
    if not isinstance(value, torch.Tensor) or value.shape != b.shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise SciMLInputError("solve", f"must return a tensor of shape {tuple(b.shape)}, returned {got}")
    if not checking:
        return sol
    finite = bool(torch.isfinite(value).all())
    if finite and sol.converged:
        return sol
    reason = f"the {which} linear system of implicit differentiation"
    if not finite:
        value = torch.where(torch.isfinite(value), value, torch.zeros_like(value))
        reason += " broke down (non-finite iterate; the non-finite entries were set to 0)"
    else:
        reason += f" did not converge after {sol.n_iter} iterations (residual {sol.residual})"
    reason += "; dF/dz may be singular at the solution, or the solver may need more iterations (max_iter)"
    stats = dict(sol.stats)
    stats["failure"] = reason
    sol = Solution(
        value=value, converged=False, n_iter=sol.n_iter, residual=sol.residual, history=sol.history, stats=stats
    )
    if options.on_failure == "raise":
        raise SciMLError(reason)
    if options.on_failure == "warn":
        warnings.warn(reason, ConvergenceWarning, stacklevel=4)
    return sol


def _vjp_core(
    problem: _Problem, options: _Options, cotangents: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor | None], Solution[Any]]:
    v = _flat_cat(cotangents)
    sol = _solve_system(options, problem.vjp_z, problem.jvp_z, v, "adjoint")
    grads = problem.vjp_theta(-sol.value)
    return grads, sol


def _jvp_core(
    problem: _Problem, options: _Options, tangents: Sequence[torch.Tensor | None]
) -> tuple[list[torch.Tensor], Solution[Any] | None]:
    bt = problem.jvp_theta(tangents)
    if bt is None:
        return [torch.zeros_like(z) for z in problem.z_leaves], None
    sol = _solve_system(options, problem.jvp_z, problem.vjp_z, -bt, "tangent")
    return _flat_split(sol.value, problem.z_leaves), sol


# --------------------------------------------------------------------------------------------------------------
# the autograd.Functions
# --------------------------------------------------------------------------------------------------------------


class _Spec:
    """Static data of one call of a decorated solver (passed to the autograd.Functions as a non-tensor input)."""

    def __init__(
        self,
        owner: ImplicitSolver,
        init_spec: pytree.TreeSpec,
        init_statics: dict[int, Any],
        n_init: int,
        layout: _ThetaLayout,
    ) -> None:
        self.owner = owner
        self.init_spec = init_spec
        self.init_statics = init_statics
        self.n_init = n_init
        self.layout = layout
        self.z_spec: pytree.TreeSpec | None = None
        self.aux_spec: pytree.TreeSpec | None = None
        self.aux_statics: Any = None
        self.n_z = 0

    def rebuild_init(self, tensors: Sequence[torch.Tensor]) -> Any:
        leaves: list[Any] = []
        it = iter(tensors)
        for i in range(self.init_spec.num_leaves):
            leaves.append(self.init_statics[i] if i in self.init_statics else next(it))
        return pytree.tree_unflatten(leaves, self.init_spec)


class _Solve(torch.autograd.Function):
    """Runs the solver on detached inputs, without recording; its outputs are constants for autograd.

    Its vmap rule solves the problems of the batch one after another, so any solver (data-dependent stopping,
    ``.item()``) works under :func:`torch.func.vmap`.
    """

    @staticmethod
    def forward(spec: _Spec, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        init = spec.rebuild_init([t.detach() for t in leaves[: spec.n_init]])
        theta = spec.layout.rebuild([t.detach() for t in leaves[spec.n_init :]])
        owner = spec.owner
        with torch.no_grad():
            out = owner.solver(init, *theta)
        if owner.has_aux:
            if not isinstance(out, tuple) or len(out) != 2:  # pyright: ignore[reportUnknownArgumentType]
                raise SciMLInputError("solver", "with has_aux=True must return a pair (z, aux)")
            z, aux = out  # pyright: ignore[reportUnknownVariableType]
        else:
            z, aux = out, None
        z_leaves, z_spec = _flatten_solution("solver", z)
        aux_flat, aux_spec = pytree.tree_flatten(aux)
        aux_tensors = [a.detach() for a in aux_flat if isinstance(a, torch.Tensor)]
        spec.z_spec = z_spec
        spec.n_z = len(z_leaves)
        spec.aux_spec = aux_spec
        spec.aux_statics = {i: a for i, a in enumerate(aux_flat) if not isinstance(a, torch.Tensor)}
        return tuple(t.detach() for t in z_leaves) + tuple(aux_tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        ctx.mark_non_differentiable(*output)
        ctx.n_inputs = len(inputs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[None, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        return (None,) * ctx.n_inputs

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        return None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], spec: _Spec, *leaves: torch.Tensor) -> tuple[Any, Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        outs: list[tuple[torch.Tensor, ...]] = []
        statics: list[Any] = []
        dims = in_dims[1:]
        for b in range(info.batch_size):
            sliced = [t if d is None else t.select(d, b) for t, d in zip(leaves, dims, strict=True)]
            outs.append(_Solve.apply(spec, *sliced))  # pyright: ignore[reportArgumentType]
            statics.append(spec.aux_statics)
        if spec.aux_statics:
            spec.aux_statics = {k: [s[k] for s in statics] for k in spec.aux_statics}
        stacked = tuple(torch.stack([o[k] for o in outs]) for k in range(len(outs[0])))
        return stacked, (0,) * len(stacked)


class _Implicit(torch.autograd.Function):
    """Identity on the solution whose derivatives come from the implicit function theorem."""

    generate_vmap_rule = True

    @staticmethod
    def forward(spec: _Spec, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        return tuple(t.clone() for t in leaves[: spec.n_z])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        spec: _Spec = inputs[0]
        ctx.spec = spec
        theta = inputs[1 + spec.n_z :]
        # the outputs (not the inputs) are saved: in double backward they carry z*(theta)'s own derivative
        ctx.save_for_backward(*output, *theta)
        ctx.save_for_forward(*inputs[1 : 1 + spec.n_z], *theta)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        spec: _Spec = ctx.spec
        saved = ctx.saved_tensors
        z_leaves, theta_leaves = list(saved[: spec.n_z]), list(saved[spec.n_z :])
        owner = spec.owner
        assert spec.z_spec is not None
        problem = _Problem(owner.residual, z_leaves, spec.z_spec, spec.layout, theta_leaves)
        cotangents = [torch.zeros_like(z) if g is None else g for g, z in zip(grads, z_leaves, strict=True)]
        theta_grads, sol = _vjp_core(problem, owner.options, cotangents)
        owner.last_backward = sol
        return (None,) + (None,) * spec.n_z + tuple(theta_grads)

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        spec: _Spec = ctx.spec
        saved = ctx.saved_tensors
        z_leaves, theta_leaves = list(saved[: spec.n_z]), list(saved[spec.n_z :])
        owner = spec.owner
        assert spec.z_spec is not None
        problem = _Problem(owner.residual, z_leaves, spec.z_spec, spec.layout, theta_leaves)
        # torch.autograd.forward_ad cannot nest torch.func.jvp: outside transforms use reverse passes
        problem.functional = _transforms_active()
        out, sol = _jvp_core(problem, owner.options, list(tangents[1 + spec.n_z :]))
        if sol is not None:
            owner.last_forward = sol
        return tuple(out)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


class ImplicitSolver:
    """A solver whose output is differentiated implicitly (what :func:`custom_root` returns).

    Call it like the wrapped solver: ``decorated(init, *theta)``.

    Attributes:
        solver: the wrapped solver.
        residual: the root-form optimality function ``F(z, *theta)``.
        has_aux: whether the solver returns ``(z, aux)``.
        last_backward: the :class:`~sciml_protocols.Solution` of the most recent adjoint (VJP) linear solve, or
            None. Under torch.func transforms it is recorded but not checked.
        last_forward: the same for the most recent tangent (JVP) linear solve.

    Example:
        >>> solver = custom_root(lambda z, a: z - 2 * a, solve="dense")(lambda init, a: 2 * a)
        >>> a = torch.ones(2, requires_grad=True)
        >>> solver(None, a).sum().backward()
        >>> a.grad, solver.last_backward.converged
        (tensor([2., 2.]), True)
    """

    def __init__(
        self, solver: Callable[..., Any], residual: Callable[..., Any], has_aux: bool, options: _Options
    ) -> None:
        if not callable(solver):
            raise SciMLInputError("solver", f"must be callable, got {type(solver).__name__}")
        self.solver = solver
        self.residual = residual
        self.has_aux = has_aux
        self.options = options
        self.last_backward: Solution[Any] | None = None
        self.last_forward: Solution[Any] | None = None
        functools.update_wrapper(self, solver)

    def __call__(self, init: Any, *theta: Any) -> Any:
        layout = _ThetaLayout(theta)
        init_flat, init_spec = pytree.tree_flatten(init)
        init_statics = {i: v for i, v in enumerate(init_flat) if not isinstance(v, torch.Tensor)}
        init_tensors = [v for v in init_flat if isinstance(v, torch.Tensor)]
        spec = _Spec(self, init_spec, init_statics, len(init_tensors), layout)
        solved = _Solve.apply(spec, *init_tensors, *layout.leaves)  # pyright: ignore[reportArgumentType]
        assert spec.z_spec is not None
        assert spec.aux_spec is not None
        z_leaves = list(solved[: spec.n_z])
        aux_tensors = list(solved[spec.n_z :])
        z_out = _Implicit.apply(spec, *z_leaves, *layout.leaves)  # pyright: ignore[reportArgumentType]
        z = pytree.tree_unflatten(list(z_out), spec.z_spec)
        if not self.has_aux:
            return z
        it = iter(aux_tensors)
        statics = spec.aux_statics or {}
        aux_leaves = [statics[i] if i in statics else next(it) for i in range(spec.aux_spec.num_leaves)]
        return z, pytree.tree_unflatten(aux_leaves, spec.aux_spec)


def custom_root(
    optimality_fun: Callable[..., Any] | OptimalityCondition,
    *,
    solve: SolveArg | None = None,
    has_aux: bool = False,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
    symmetric: bool = False,
    on_failure: OnFailure = "warn",
) -> Callable[[Callable[..., Any]], ImplicitSolver]:
    r"""Decorator: differentiate a solver through its optimality condition :math:`F(z^\star, \theta) = 0`.

    The decorated solver keeps jaxopt's signature ``solver(init, *theta) -> z`` (``(z, aux)`` with
    ``has_aux=True``). Its forward pass runs the solver under :func:`torch.no_grad` on detached inputs (a solver
    that needs autograd internally, e.g. for its inner gradients, opens :func:`torch.enable_grad` itself; nothing
    it records reaches the caller's graph), so memory does not grow with the number of inner iterations; its
    derivatives come from the implicit function theorem (:math:`A = \partial_z F`, :math:`B = \partial_\theta F` at
    the returned :math:`z`):

    .. math::
        \text{VJP: } A^\top u = v,\ \bar\theta = -B^\top u; \qquad \text{JVP: } A\,\dot z = -B\,\dot\theta,

    solved matrix-free by :func:`sciml_bilevel.linear_solve` with products by the Jacobians of ``F`` only. The
    result is exact when the solver is (the Jacobian error is linear in the solver's error, paper theorem 1).

    Composes with ``torch.autograd`` (including ``create_graph=True``), ``torch.func.grad``/``vjp``/``jacrev``,
    ``torch.func.jvp``/``jacfwd`` and ``torch.func.vmap`` (over ``init`` or any tensor in ``theta``; the solver then
    runs once per batch element, while the implicit backward is batched). Under transforms the linear solver runs a
    fixed number of iterations and convergence is not checked.

    Parameters ``theta``: each positional argument after ``init`` is a tensor, a container (dict/list/tuple,
    nested) of tensors, or a constant (a Python number, string, callable, None...) passed unchanged and never
    differentiated. Non-tensor leaves inside containers are rejected. Integer tensors are passed through and get
    no gradient. The solution ``z`` (and ``F``'s output, which must share its structure and shapes) may be a tensor
    or a container of floating tensors; a leading batch dimension is fine when ``F`` is batched the same way.

    Args:
        optimality_fun: ``F(z, *theta)`` returning the structure and shapes of ``z``, differentiable in ``z`` and
            ``theta``, or a :class:`sciml_protocols.OptimalityCondition` (its ``residual`` is used).
        solve: a method of :func:`~sciml_bilevel.linear_solve` (``"cg"``, ``"normal_cg"``, ``"gmres"``,
            ``"bicgstab"``, ``"neumann"``, ``"dense"``) or a callable ``(matvec, b) -> Tensor | Solution`` on flat
            vectors. Default ``"gmres"``, or ``"cg"`` when ``symmetric``.
        has_aux: the solver returns ``(z, aux)``; ``aux`` is returned unchanged and not differentiated (its tensors
            detached; under vmap its non-tensor leaves become lists over the batch).
        tol: relative tolerance of the linear solves.
        max_iter: iteration cap of the linear solves (None: the linear solver's default).
        preconditioner: approximate inverse applied to flat vectors, passed to the linear solver.
        symmetric: ``A`` is symmetric (e.g. ``F`` is a gradient), so CG applies.
        on_failure: what happens when a linear solve fails outside transforms: ``"warn"``
            (:class:`~sciml_protocols.ConvergenceWarning`), ``"raise"`` (:class:`~sciml_protocols.SciMLError`) or
            ``"ignore"``. Non-finite entries of a failed solve are replaced by 0, never returned as NaN.

    Returns:
        A decorator turning ``solver`` into an :class:`ImplicitSolver`, whose ``last_backward`` attribute holds
        the :class:`~sciml_protocols.Solution` of the latest adjoint solve.

    Raises:
        SciMLInputError: bad options; later, when called, non-tensor leaves in ``theta`` containers or in ``z``,
            or an ``optimality_fun`` whose output does not match ``z``.

    Example:
        >>> def F(z, lam):  # optimality of min_z 0.5 (z - 1)^2 + 0.5 lam z^2: z* = 1 / (1 + lam)
        ...     return (z - 1.0) + lam * z
        >>> @custom_root(F, solve="dense")
        ... def solver(init, lam):
        ...     return 1.0 / (1.0 + lam)
        >>> lam = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        >>> z = solver(torch.zeros(1, dtype=torch.float64), lam)
        >>> torch.autograd.grad(z.sum(), lam)[0]  # -1 / (1 + lam)^2
        tensor([-0.2500], dtype=torch.float64)

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    residual = _residual_of(optimality_fun, "optimality_fun")
    options = _Options(
        solve=solve,
        symmetric=symmetric,
        tol=tol,
        max_iter=max_iter,
        preconditioner=preconditioner,
        on_failure=on_failure,
    )

    def decorator(solver: Callable[..., Any]) -> ImplicitSolver:
        return ImplicitSolver(solver, residual, bool(has_aux), options)

    return decorator


def custom_fixed_point(
    fixed_point_fun: Callable[..., Any] | OptimalityCondition,
    *,
    solve: SolveArg | None = None,
    has_aux: bool = False,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
    symmetric: bool = False,
    on_failure: OnFailure = "warn",
) -> Callable[[Callable[..., Any]], ImplicitSolver]:
    r"""Decorator: differentiate a solver whose output is a fixed point :math:`z^\star = T(z^\star, \theta)`.

    Same as :func:`custom_root` with the root form :math:`F(z, \theta) = z - T(z, \theta)` (the sign of
    :math:`F` does not change the derivatives; this one makes :math:`A = I - \partial_z T`, whose Neumann series
    :math:`\sum_k (\partial_z T^\top)^k` converges for a contraction, so ``solve="neumann"`` applies).

    Args:
        fixed_point_fun: ``T(z, *theta)`` with the structure of ``z``, or a
            :class:`sciml_protocols.FixedPointCondition` (its ``map`` is ``T``); any other
            :class:`sciml_protocols.OptimalityCondition` is used through its root form (negated).
        solve: see :func:`custom_root`.
        has_aux: see :func:`custom_root`.
        tol: see :func:`custom_root`.
        max_iter: see :func:`custom_root`.
        preconditioner: see :func:`custom_root`.
        symmetric: see :func:`custom_root`.
        on_failure: see :func:`custom_root`.

    Returns:
        A decorator turning ``solver`` into an :class:`ImplicitSolver`.

    Raises:
        SciMLInputError: as :func:`custom_root`.

    Example:
        >>> T = lambda z, theta: 0.5 * z + theta  # z* = 2 theta
        >>> @custom_fixed_point(T, solve="dense")
        ... def iterate(init, theta):
        ...     z = init
        ...     for _ in range(60):
        ...         z = T(z, theta)
        ...     return z
        >>> theta = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
        >>> z = iterate(torch.zeros(2, dtype=torch.float64), theta)
        >>> torch.autograd.grad(z.sum(), theta)[0]
        tensor([2., 2.], dtype=torch.float64)

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    if isinstance(fixed_point_fun, OptimalityCondition) and not isinstance(fixed_point_fun, FixedPointCondition):
        root_form = fixed_point_fun.residual

        def residual(z: Any, *theta: Any) -> Any:
            return pytree.tree_map(torch.neg, root_form(z, *theta))

    else:
        mapping = fixed_point_fun.map if isinstance(fixed_point_fun, FixedPointCondition) else None
        mapping = mapping or _residual_of(fixed_point_fun, "fixed_point_fun")

        def residual(z: Any, *theta: Any) -> Any:
            return pytree.tree_map(torch.sub, z, mapping(z, *theta))

    return custom_root(
        residual,
        solve=solve,
        has_aux=has_aux,
        tol=tol,
        max_iter=max_iter,
        preconditioner=preconditioner,
        symmetric=symmetric,
        on_failure=on_failure,
    )


def _standalone(
    optimality_fun: Callable[..., Any] | OptimalityCondition, sol: Any, args: Sequence[Any]
) -> tuple[_Problem, _ThetaLayout]:
    residual = _residual_of(optimality_fun, "optimality_fun")
    if not isinstance(args, tuple | list):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("args", f"must be a tuple of the parameters theta, got {type(args).__name__}")
    layout = _ThetaLayout(tuple(args), name="args")
    z_leaves, z_spec = _flatten_solution("sol", sol)
    return _Problem(residual, z_leaves, z_spec, layout, layout.leaves), layout


def root_vjp(
    optimality_fun: Callable[..., Any] | OptimalityCondition,
    sol: Any,
    args: Sequence[Any],
    cotangent: Any,
    *,
    solve: SolveArg | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
    symmetric: bool = False,
    on_failure: OnFailure = "warn",
) -> tuple[Any, ...]:
    r"""Vector-Jacobian product of a root :math:`z^\star(\theta)` of :math:`F`, by the implicit function theorem.

    Solves :math:`(\partial_z F)^\top u = v` and returns :math:`-(\partial_\theta F)^\top u`, the cotangent
    :math:`v^\top \partial_\theta z^\star` for each positional parameter. Differentiable (``create_graph``
    semantics) when the inputs require grad or under torch.func transforms.

    Args:
        optimality_fun: ``F(z, *args)`` or an :class:`~sciml_protocols.OptimalityCondition`.
        sol: the root :math:`z^\star`, a tensor or container of tensors.
        args: the parameters :math:`\theta`, a tuple (layout rules of :func:`custom_root`).
        cotangent: :math:`v`, with the structure and shapes of ``sol``.
        solve: see :func:`custom_root`.
        tol: see :func:`custom_root`.
        max_iter: see :func:`custom_root`.
        preconditioner: see :func:`custom_root`.
        symmetric: see :func:`custom_root`.
        on_failure: see :func:`custom_root`.

    Returns:
        One entry per element of ``args``: a cotangent with its structure, or None for constants (and for
        integer tensors).

    Raises:
        SciMLInputError: structure or shape mismatches, non-tensor leaves.
        SciMLError: when the linear solve fails and ``on_failure="raise"``.

    Example:
        >>> F = lambda z, a: z * z - a  # z* = sqrt(a), dz*/da = 1 / (2 sqrt(a))
        >>> root_vjp(F, torch.tensor([2.0]), (torch.tensor([4.0]),), torch.tensor([1.0]), solve="dense")
        (tensor([0.2500]),)

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    options = _Options(
        solve=solve,
        symmetric=symmetric,
        tol=tol,
        max_iter=max_iter,
        preconditioner=preconditioner,
        on_failure=on_failure,
    )
    problem, layout = _standalone(optimality_fun, sol, args)
    v_flat, v_spec = pytree.tree_flatten(cotangent)
    if v_spec != problem.z_spec or not all(isinstance(v, torch.Tensor) for v in v_flat):
        raise SciMLInputError("cotangent", f"must have the structure of sol ({problem.z_spec}), got {v_spec}")
    for v, z in zip(v_flat, problem.z_leaves, strict=True):
        if v.shape != z.shape:
            raise SciMLInputError("cotangent", f"must have the shape of sol {tuple(z.shape)}, got {tuple(v.shape)}")
    grads, _ = _vjp_core(problem, options, v_flat)
    return layout.split(grads)


def root_jvp(
    optimality_fun: Callable[..., Any] | OptimalityCondition,
    sol: Any,
    args: Sequence[Any],
    tangents: Sequence[Any],
    *,
    solve: SolveArg | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
    symmetric: bool = False,
    on_failure: OnFailure = "warn",
) -> Any:
    r"""Jacobian-vector product of a root :math:`z^\star(\theta)` of :math:`F`, by the implicit function theorem.

    Solves :math:`(\partial_z F)\,\dot z = -(\partial_\theta F)\,\dot\theta` (forward-mode products of ``F`` with
    :func:`torch.func.jvp`, so ``F`` must support forward-mode AD).

    Args:
        optimality_fun: ``F(z, *args)`` or an :class:`~sciml_protocols.OptimalityCondition`.
        sol: the root :math:`z^\star`, a tensor or container of tensors.
        args: the parameters :math:`\theta`, a tuple.
        tangents: one entry per element of ``args``: a tangent with its structure, or None (a zero tangent;
            required for constants).
        solve: see :func:`custom_root`.
        tol: see :func:`custom_root`.
        max_iter: see :func:`custom_root`.
        preconditioner: see :func:`custom_root`.
        symmetric: see :func:`custom_root`.
        on_failure: see :func:`custom_root`.

    Returns:
        :math:`\dot z`, with the structure of ``sol``.

    Raises:
        SciMLInputError: mismatched tangents or bad inputs.
        SciMLError: when the linear solve fails and ``on_failure="raise"``.

    Example:
        >>> F = lambda z, a: z * z - a
        >>> root_jvp(F, torch.tensor([2.0]), (torch.tensor([4.0]),), (torch.tensor([1.0]),), solve="dense")
        tensor([0.2500])

    Reference:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022, arXiv:2105.15183.
    """
    options = _Options(
        solve=solve,
        symmetric=symmetric,
        tol=tol,
        max_iter=max_iter,
        preconditioner=preconditioner,
        on_failure=on_failure,
    )
    problem, layout = _standalone(optimality_fun, sol, args)
    if not isinstance(tangents, tuple | list) or len(tangents) != layout.n_args:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("tangents", f"must be a tuple with one entry per element of args ({layout.n_args})")
    flat: list[torch.Tensor | None] = []
    for i, tangent in enumerate(tangents):
        count = layout.counts[i]
        if tangent is None:
            flat.extend([None] * count)
            continue
        if i in layout.constants:
            raise SciMLInputError("tangents", f"entry {i} must be None: args[{i}] is a constant")
        leaves = pytree.tree_leaves(tangent)
        if len(leaves) != count or not all(isinstance(t, torch.Tensor) for t in leaves):
            raise SciMLInputError("tangents", f"entry {i} must have the structure of args[{i}]")
        flat.extend(leaves)
    for t, p in zip(flat, layout.leaves, strict=True):
        if t is not None and t.shape != p.shape:
            raise SciMLInputError("tangents", f"must match the shapes of args: {tuple(t.shape)} vs {tuple(p.shape)}")
    out, _ = _jvp_core(problem, options, flat)
    return pytree.tree_unflatten(out, problem.z_spec)
