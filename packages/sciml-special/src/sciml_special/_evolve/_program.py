r"""Straight-line programs of Add, Mult and FMA over float32: the search space of AutoNumerics-Zero.

A program is a directed acyclic graph stored in topological order. Vertex 0 is the input :math:`x`; every other
vertex is a constant :math:`c` (a float32 value, free to fit) or an operation on earlier vertices:

.. math::

    \operatorname{add}(a, b) = \operatorname{rn}(a + b), \quad
    \operatorname{mult}(a, b) = \operatorname{rn}(a b), \quad
    \operatorname{fma}(a, b, c) = \operatorname{rn}(a b + c),

with :math:`\operatorname{rn}` the float32 rounding to nearest even (one rounding per operation, an FMA included).
One vertex is the output :math:`f`. The cost of a program is its number of operations reachable from the output;
constants and the input are free (Real et al., 2023, section 3).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sciml_protocols import SciMLInputError

from ._float32 import fma_float32, fma_float32_torch

__all__ = ["Op", "Program", "SpecEntry", "Vertex"]


class Op(enum.Enum):
    """Kind of a vertex: the input, a constant, or one of the three float32 operations."""

    INPUT = "x"
    CONSTANT = "const"
    ADD = "add"
    MULT = "mult"
    FMA = "fma"

    @property
    def arity(self) -> int:
        """Number of operands: 0 for the input and constants, 2 for add and mult, 3 for fma."""
        return _ARITY[self]

    @property
    def is_operation(self) -> bool:
        """True for add, mult and fma: the vertices that cost one operation each."""
        return _ARITY[self] > 0


_ARITY = {Op.INPUT: 0, Op.CONSTANT: 0, Op.ADD: 2, Op.MULT: 2, Op.FMA: 3}
OPERATIONS = (Op.ADD, Op.MULT, Op.FMA)

SpecEntry = tuple[Any, ...]
"""One line of a program spec: ``("add", a, b)``, ``("mult", a, b)``, ``("fma", a, b, c)`` or ``("const", v)``."""


@dataclasses.dataclass(frozen=True)
class Vertex:
    """One vertex of a :class:`Program`.

    Attributes:
        op: what the vertex computes.
        inputs: indices of the operand vertices, all smaller than this vertex's own index (``op.arity`` of them).
        value: the constant's float32 value (``op`` is :attr:`Op.CONSTANT`), else 0.
    """

    op: Op
    inputs: tuple[int, ...] = ()
    value: float = 0.0


def _as_float32(value: float) -> float:
    return float(np.float32(value))


@dataclasses.dataclass(frozen=True, repr=False)
class Program:
    r"""A straight-line float32 program :math:`x \mapsto f` of add, mult and fma vertices with constants.

    Programs are immutable values: mutations and constant fits return new programs. Build one from a compact spec
    with :meth:`from_spec` (vertex 0 is ``x``, entry ``k`` of the spec is vertex ``k + 1``; an operand is an ``int``
    for a vertex or a ``float`` for an inline constant).

    Evaluation emulates float32 exactly in numpy (:meth:`evaluate`; an FMA rounds once, see
    :func:`~sciml_special._evolve._float32.fma_float32`), in float64 without intermediate rounding
    (:meth:`evaluate_exact`, the "real number" program), or in torch (:meth:`to_torch`, bit for bit the same as
    :meth:`evaluate`). :meth:`to_triton_source` writes a ``@triton.jit`` device function.

    Attributes:
        vertices: the vertices in topological order; vertex 0 is the input.
        output: index of the output vertex.

    Raises:
        SciMLInputError: when the vertices do not form a valid program (vertex 0 not the input, an operand index
            not smaller than its vertex, a wrong number of operands, a constant that is not finite).

    Example:
        >>> horner = Program.from_spec([("fma", 0, 0.5, 1.0), ("fma", 0, 1, 1.0)])  # 1 + x (1 + x / 2)
        >>> print(horner)
        v1 = fma(x, 0.5, 1.0)
        v2 = fma(x, v1, 1.0)
        return v2
        >>> horner.op_count, horner.evaluate(np.float32([0.0, 1.0, 2.0])).tolist()
        (2, [1.0, 2.5, 5.0])
    """

    vertices: tuple[Vertex, ...]
    output: int

    def __post_init__(self) -> None:
        if isinstance(self.vertices, str) or not isinstance(self.vertices, tuple | list):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("vertices", f"must be a tuple of Vertex, got {type(self.vertices).__name__}")
        object.__setattr__(self, "vertices", tuple(self.vertices))
        vertices = self.vertices
        if isinstance(self.output, bool) or not isinstance(self.output, int | np.integer):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("output", f"must be an int, got {type(self.output).__name__}")
        object.__setattr__(self, "output", int(self.output))
        if len(vertices) == 0 or vertices[0].op is not Op.INPUT:
            raise SciMLInputError("vertices", "vertex 0 must be the input x")
        for index, vertex in enumerate(vertices):
            if not isinstance(vertex, Vertex):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SciMLInputError("vertices", f"entry {index} is a {type(vertex).__name__}, not a Vertex")
            if index > 0 and vertex.op is Op.INPUT:
                raise SciMLInputError("vertices", f"vertex {index} is a second input; a program has one input")
            if len(vertex.inputs) != vertex.op.arity:
                raise SciMLInputError(
                    "vertices",
                    f"vertex {index} ({vertex.op.value}) needs {vertex.op.arity} operands, got {len(vertex.inputs)}",
                )
            for operand in vertex.inputs:
                if not 0 <= operand < index:
                    raise SciMLInputError(
                        "vertices",
                        f"vertex {index} reads vertex {operand}: operands must be earlier vertices (a DAG in order)",
                    )
            if vertex.op is Op.CONSTANT:
                if not math.isfinite(vertex.value):
                    raise SciMLInputError("vertices", f"constant vertex {index} is not finite: {vertex.value}")
                if vertex.value != _as_float32(vertex.value):
                    raise SciMLInputError("vertices", f"constant vertex {index} is not a float32 value")
        if not 0 <= self.output < len(vertices):
            raise SciMLInputError("output", f"must index a vertex in [0, {len(vertices)}), got {self.output}")

    # ---------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_spec(cls, spec: Sequence[SpecEntry], *, output: int | None = None) -> Program:
        """Build a program from a spec: one entry per vertex after ``x`` (vertex 0).

        Entries are ``("add", a, b)``, ``("mult", a, b)``, ``("fma", a, b, c)`` (computes ``a * b + c``) or
        ``("const", value)``. An operand is an ``int`` (a vertex index: 0 is ``x``, ``k`` is entry ``k - 1``) or a
        ``float`` (an inline constant, rounded to float32). The output is the last vertex unless ``output`` is
        given (in spec numbering).

        Example:
            >>> print(Program.from_spec([("mult", 0, 0), ("add", 1, 0.25)]))
            v1 = mult(x, x)
            v2 = add(v1, 0.25)
            return v2
        """
        if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("spec", f"must be a sequence of tuples, got {type(spec).__name__}")
        vertices: list[Vertex] = [Vertex(Op.INPUT)]
        position = [0]  # spec index -> vertex index
        for line, entry in enumerate(spec):
            if not isinstance(entry, tuple | list) or not entry or not isinstance(entry[0], str):
                raise SciMLInputError("spec", f"entry {line} must be a tuple like ('fma', 0, 1.5, 2), got {entry!r}")
            name, operands = entry[0], tuple(entry[1:])
            try:
                op = Op(name)
            except ValueError:
                raise SciMLInputError(
                    "spec", f"entry {line}: unknown operation {name!r}; use 'add', 'mult', 'fma' or 'const'"
                ) from None
            if op is Op.CONSTANT:
                if len(operands) != 1 or not _is_real(operands[0]):
                    raise SciMLInputError("spec", f"entry {line}: ('const', value) needs one real value")
                vertices.append(Vertex(Op.CONSTANT, value=_as_float32(operands[0])))
                position.append(len(vertices) - 1)
                continue
            if op is Op.INPUT or len(operands) != op.arity:
                raise SciMLInputError("spec", f"entry {line}: {name!r} needs {op.arity} operands, got {len(operands)}")
            resolved: list[int] = []
            for operand in operands:
                if isinstance(operand, bool) or not isinstance(operand, int | float | np.floating | np.integer):
                    raise SciMLInputError("spec", f"entry {line}: operand {operand!r} is not an int or a float")
                if isinstance(operand, int | np.integer):
                    if not 0 <= operand < len(position):
                        raise SciMLInputError(
                            "spec", f"entry {line} (vertex {line + 1}) reads vertex {operand}, which is not earlier"
                        )
                    resolved.append(position[int(operand)])
                else:
                    vertices.append(Vertex(Op.CONSTANT, value=_as_float32(float(operand))))
                    resolved.append(len(vertices) - 1)
            vertices.append(Vertex(op, tuple(resolved)))
            position.append(len(vertices) - 1)
        if output is None:
            output = len(position) - 1
        if not 0 <= output < len(position):
            raise SciMLInputError("output", f"must be a vertex of the spec in [0, {len(position)}), got {output}")
        return cls(tuple(vertices), position[output])

    def to_spec(self) -> tuple[SpecEntry, ...]:
        """The reachable part as a spec (constants inline), so ``from_spec(p.to_spec())`` computes what ``p`` does.

        Example:
            >>> p = Program.from_spec([("fma", 0, 0.5, 1.0)])
            >>> p.to_spec()
            (('fma', 0, 0.5, 1.0),)
        """
        program = self.pruned()
        numbering: dict[int, int] = {0: 0}
        spec: list[SpecEntry] = []
        for index, vertex in enumerate(program.vertices):
            if vertex.op.is_operation:
                operands = tuple(
                    program.vertices[i].value if program.vertices[i].op is Op.CONSTANT else numbering[i]
                    for i in vertex.inputs
                )
                spec.append((vertex.op.value, *operands))
                numbering[index] = len(spec)
        output_vertex = program.vertices[program.output]
        if output_vertex.op is Op.CONSTANT:
            spec.append(("const", output_vertex.value))
        return tuple(spec)

    # ---------------------------------------------------------------------------------------------- structure
    def reachable(self) -> npt.NDArray[np.bool_]:
        """Boolean mask of the vertices the output depends on (the output included)."""
        mask = np.zeros(len(self.vertices), dtype=bool)
        mask[self.output] = True
        for index in range(len(self.vertices) - 1, -1, -1):
            if mask[index]:
                for operand in self.vertices[index].inputs:
                    mask[operand] = True
        return mask

    @property
    def op_count(self) -> int:
        """Number of add, mult and fma vertices the output depends on: the cost objective."""
        mask = self.reachable()
        return sum(1 for index, vertex in enumerate(self.vertices) if mask[index] and vertex.op.is_operation)

    @property
    def constant_indices(self) -> tuple[int, ...]:
        """Indices of the reachable constant vertices, in order: the coordinates of :attr:`constants`."""
        mask = self.reachable()
        return tuple(i for i, v in enumerate(self.vertices) if mask[i] and v.op is Op.CONSTANT)

    @property
    def constants(self) -> npt.NDArray[np.float32]:
        """Values of the reachable constants (float32), in vertex order."""
        return np.array([self.vertices[i].value for i in self.constant_indices], dtype=np.float32)

    def with_constants(self, values: npt.ArrayLike) -> Program:
        """A copy with the reachable constants replaced by ``values`` (rounded to float32).

        Example:
            >>> Program.from_spec([("add", 0, 1.0)]).with_constants([2.5]).to_spec()
            (('add', 0, 2.5),)
        """
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        indices = self.constant_indices
        if array.shape[0] != len(indices):
            raise SciMLInputError("values", f"needs {len(indices)} constants, got {array.shape[0]}")
        with np.errstate(over="ignore", invalid="ignore"):
            single = array.astype(np.float32)
        if not np.all(np.isfinite(single)):
            raise SciMLInputError("values", "constants must be finite float32 values")
        vertices = list(self.vertices)
        for index, value in zip(indices, array.tolist(), strict=True):
            vertices[index] = Vertex(Op.CONSTANT, value=_as_float32(value))
        return Program(tuple(vertices), self.output)

    def pruned(self) -> Program:
        """The same function without unreachable vertices, constant sub-expressions folded, renumbered in order.

        A vertex whose operands are all constants becomes a constant holding its (exact float32) value, so the
        operation count never charges for work that a compiler would do once.

        Example:
            >>> p = Program.from_spec([("mult", 0, 0), ("add", 2.0, 3.0), ("add", 0, 2)])  # vertex 1 is dead
            >>> print(p.pruned())
            v1 = add(x, 5.0)
            return v1
        """
        vertices = list(self.vertices)
        for index, vertex in enumerate(vertices):
            if vertex.op.is_operation and all(vertices[i].op is Op.CONSTANT for i in vertex.inputs):
                operands = [np.float32(vertices[i].value) for i in vertex.inputs]
                value = _apply_float32(vertex.op, operands)
                if np.isfinite(value):
                    vertices[index] = Vertex(Op.CONSTANT, value=float(value))
        folded = Program(tuple(vertices), self.output)
        mask = folded.reachable()
        mask[0] = True
        new_index = np.cumsum(mask) - 1
        kept = [
            Vertex(v.op, tuple(int(new_index[i]) for i in v.inputs), v.value)
            for index, v in enumerate(folded.vertices)
            if mask[index]
        ]
        return Program(tuple(kept), int(new_index[folded.output]))

    # ---------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, x: npt.ArrayLike, *, constants: npt.ArrayLike | None = None) -> npt.NDArray[np.float32]:
        """Run the program in emulated float32 arithmetic (one rounding per operation, FMA included).

        Args:
            x: input values, any shape (cast to float32).
            constants: optional replacement constants, shape ``(K,)`` or a batch ``(P, K)`` with ``K`` the number of
                :attr:`constants`; a batch evaluates ``P`` programs at once and prepends ``P`` to the output shape.

        Returns:
            float32 array of shape ``x.shape`` (or ``(P, *x.shape)`` for a batch of constants).

        Example:
            >>> p = Program.from_spec([("fma", 0, 0, -1.0)])  # x^2 - 1
            >>> p.evaluate([0.5, 2.0]).tolist()
            [-0.75, 3.0]
            >>> p.evaluate([2.0], constants=[[-1.0], [1.0]]).tolist()
            [[3.0], [5.0]]
        """
        values = np.asarray(x, dtype=np.float32)
        return self._run(values, constants, exact=False).astype(np.float32, copy=False)

    def evaluate_exact(self, x: npt.ArrayLike, *, constants: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
        """Run the program in float64 without rounding to float32: the real-number function of the constants.

        Same arguments and shapes as :meth:`evaluate`; constants are used as given (not rounded to float32).

        Example:
            >>> Program.from_spec([("mult", 0, 1.0 / 3.0)]).evaluate_exact([3.0]).tolist()  # 1/3 rounded to float32
            [1.0000000298023224]
        """
        values = np.asarray(x, dtype=np.float64)
        return self._run(values, constants, exact=True).astype(np.float64, copy=False)

    def jacobian_exact(
        self, x: npt.ArrayLike, constants: npt.ArrayLike | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Values and derivatives with respect to the constants of the real-number program (forward mode).

        Propagates :math:`(v, \partial v / \partial c)` through the vertices with the product rule
        (:math:`\partial(ab + c) = b\,\partial a + a\,\partial b + \partial c`), in float64.

        Args:
            x: input values, shape ``(N,)``.
            constants: the ``K`` constants (default: the program's own).

        Returns:
            ``(values, jacobian)`` of shapes ``(N,)`` and ``(N, K)``.

        Example:
            >>> values, jac = Program.from_spec([("fma", 0, 2.0, 1.0)]).jacobian_exact([0.0, 3.0])
            >>> values.tolist(), jac.tolist()  # d/da (a x + b) = x, d/db = 1
            ([1.0, 7.0], [[0.0, 1.0], [3.0, 1.0]])
        """
        points = np.asarray(x, dtype=np.float64).reshape(-1)
        indices = self.constant_indices
        table = (
            np.array([self.vertices[i].value for i in indices], dtype=np.float64)
            if constants is None
            else np.asarray(constants, dtype=np.float64).reshape(-1)
        )
        if table.shape[0] != len(indices):
            raise SciMLInputError("constants", f"needs {len(indices)} values, got {table.shape[0]}")
        k = len(indices)
        slot = {vertex: position for position, vertex in enumerate(indices)}
        mask = self.reachable()
        zero = np.zeros((k, 1))
        values: list[np.ndarray | None] = [None] * len(self.vertices)
        grads: list[np.ndarray | None] = [None] * len(self.vertices)
        with np.errstate(all="ignore"):
            for index, vertex in enumerate(self.vertices):
                if not mask[index]:
                    continue
                if vertex.op is Op.INPUT:
                    values[index], grads[index] = points, zero
                elif vertex.op is Op.CONSTANT:
                    unit = np.zeros((k, 1))
                    unit[slot[index], 0] = 1.0
                    values[index], grads[index] = np.full(1, table[slot[index]]), unit
                else:
                    operands = [_present(values[i]) for i in vertex.inputs]
                    derivatives = [_present(grads[i]) for i in vertex.inputs]
                    if vertex.op is Op.ADD:
                        values[index] = operands[0] + operands[1]
                        grads[index] = derivatives[0] + derivatives[1]
                    else:
                        product = operands[0] * operands[1]
                        derivative = derivatives[0] * operands[1] + operands[0] * derivatives[1]
                        if vertex.op is Op.FMA:
                            product, derivative = product + operands[2], derivative + derivatives[2]
                        values[index], grads[index] = product, derivative
        out, grad = _present(values[self.output]), _present(grads[self.output])
        return np.broadcast_to(out, points.shape).copy(), np.broadcast_to(grad, (k, points.shape[0])).T.copy()

    def _run(self, x: np.ndarray, constants: npt.ArrayLike | None, *, exact: bool) -> np.ndarray:
        indices = self.constant_indices
        if constants is None:
            table = np.array([self.vertices[i].value for i in indices], dtype=np.float64)
        else:
            table = np.asarray(constants, dtype=np.float64)
            if table.ndim not in (1, 2) or table.shape[-1] != len(indices):
                raise SciMLInputError(
                    "constants", f"must have shape (K,) or (P, K) with K={len(indices)}, got {table.shape}"
                )
        batched = table.ndim == 2
        if not exact:
            with np.errstate(over="ignore", invalid="ignore"):
                table = table.astype(np.float32)
        constant_slot = {vertex: slot for slot, vertex in enumerate(indices)}
        mask = self.reachable()
        results: list[np.ndarray | None] = [None] * len(self.vertices)
        lift = (slice(None),) + (None,) * x.ndim  # a batch of constants broadcasts over x's shape
        with np.errstate(all="ignore"):
            for index, vertex in enumerate(self.vertices):
                if not mask[index]:
                    continue
                if vertex.op is Op.INPUT:
                    results[index] = x
                elif vertex.op is Op.CONSTANT:
                    column = table[..., constant_slot[index]]
                    results[index] = column[lift] if batched else column
                else:
                    operands = [results[i] for i in vertex.inputs]
                    results[index] = _apply_exact(vertex.op, operands) if exact else _apply_float32(vertex.op, operands)
        output = results[self.output]
        assert output is not None
        shape = ((table.shape[0],) if batched else ()) + x.shape
        return np.broadcast_to(output, shape)

    def to_torch(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A torch function computing the program on float32 tensors, bit for bit like :meth:`evaluate`.

        Add and mult are torch's float32 operations; the FMA is emulated in float64 with round to odd
        (:func:`~sciml_special._evolve._float32.fma_float32_torch`), because torch has no fused multiply-add.

        Example:
            >>> f = Program.from_spec([("fma", 0, 0, -1.0)]).to_torch()
            >>> f(torch.tensor([0.5, 2.0])).tolist()
            [-0.75, 3.0]
        """
        return _TorchProgram(self.pruned())

    def to_triton_source(self, name: str = "evolved_program") -> str:
        """Source of a ``@triton.jit`` device function ``name(x)`` computing the program on float32 values.

        Constants are written as exact decimal literals of their float32 values and FMA as ``tl.fma``. Launch
        kernels that call it with ``enable_fp_fusion=False`` to keep mult and add from being fused into FMAs that
        the program does not have.

        Example:
            >>> print(Program.from_spec([("fma", 0, 0.5, 1.0), ("mult", 1, 1)]).to_triton_source("square_poly"))
            @triton.jit
            def square_poly(x):
                v1 = tl.fma(x, 0.5, 1.0)
                v2 = v1 * v1
                return v2
        """
        if not name.isidentifier():
            raise SciMLInputError("name", f"must be a Python identifier, got {name!r}")
        program = self.pruned()
        lines = ["@triton.jit", f"def {name}(x):"]
        names: dict[int, str] = {0: "x"}
        for index, vertex in enumerate(program.vertices):
            if vertex.op is Op.CONSTANT:
                names[index] = repr(vertex.value)
            elif vertex.op.is_operation:
                operands = [names[i] for i in vertex.inputs]
                if vertex.op is Op.FMA:
                    expression = f"tl.fma({', '.join(operands)})"
                else:
                    expression = f" {'+' if vertex.op is Op.ADD else '*'} ".join(operands)
                names[index] = f"v{len(lines) - 1}"
                lines.append(f"    {names[index]} = {expression}")
        out = program.output
        if program.vertices[out].op is Op.CONSTANT:
            lines.append(f"    return tl.zeros_like(x) + {names[out]}")
        else:
            lines.append(f"    return {names[out]}")
        return "\n".join(lines)

    # ---------------------------------------------------------------------------------------------- printing
    def __str__(self) -> str:
        program = self.pruned()
        names: dict[int, str] = {0: "x"}
        lines: list[str] = []
        for index, vertex in enumerate(program.vertices):
            if vertex.op is Op.CONSTANT:
                names[index] = _short_float(vertex.value)
            elif vertex.op.is_operation:
                names[index] = f"v{len(lines) + 1}"
                lines.append(f"{names[index]} = {vertex.op.value}({', '.join(names[i] for i in vertex.inputs)})")
        lines.append(f"return {names[program.output]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Program.from_spec({list(self.to_spec())!r})"


def _present(value: np.ndarray | None) -> np.ndarray:
    """Narrow an evaluated vertex's value (operands come before their consumers, so it is always set)."""
    if value is None:  # pragma: no cover - impossible for a valid program
        raise AssertionError("operand evaluated before its definition")
    return value


def _short_float(value: float) -> str:
    """Shortest decimal string that reads back as the same float32 value."""
    single = np.float32(value)
    if single == 0 or 1e-4 <= abs(single) < 1e6:
        return np.format_float_positional(single, unique=True, trim="0")
    return np.format_float_scientific(single, unique=True, trim="0")


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.floating | np.integer)


def _apply_float32(op: Op, operands: Sequence[Any]) -> Any:
    if op is Op.ADD:
        return np.add(operands[0], operands[1], dtype=np.float32)
    if op is Op.MULT:
        return np.multiply(operands[0], operands[1], dtype=np.float32)
    return fma_float32(operands[0], operands[1], operands[2])


def _apply_exact(op: Op, operands: Sequence[Any]) -> Any:
    if op is Op.ADD:
        return operands[0] + operands[1]
    if op is Op.MULT:
        return operands[0] * operands[1]
    return operands[0] * operands[1] + operands[2]


class _TorchProgram:
    """Picklable torch evaluator of a pruned program (see :meth:`Program.to_torch`)."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("x", f"must be a float32 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        values: list[torch.Tensor | float] = []
        for vertex in self.program.vertices:
            if vertex.op is Op.INPUT:
                values.append(x)
            elif vertex.op is Op.CONSTANT:
                values.append(vertex.value)
            else:
                operands = [values[i] for i in vertex.inputs]
                values.append(_apply_torch(vertex.op, operands))
        out = values[self.program.output]
        if not isinstance(out, torch.Tensor):
            return torch.full_like(x, out)
        result: torch.Tensor = out.clone() if out is x else out
        return result

    def __repr__(self) -> str:
        return f"<torch function of {self.program!r}>"


def _apply_torch(op: Op, operands: Sequence[torch.Tensor | float]) -> torch.Tensor:
    # Pruning folds all-constant operations, so at least one operand is a tensor.
    if op is Op.FMA:
        a, b, c = operands
        return fma_float32_torch(a, b, c)
    a, b = operands
    if not isinstance(a, torch.Tensor):
        a, b = b, a
    if not isinstance(a, torch.Tensor):  # pragma: no cover - excluded by pruning
        raise AssertionError("an operation of constants only should have been folded")
    return a + b if op is Op.ADD else a * b
