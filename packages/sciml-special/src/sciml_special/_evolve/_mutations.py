"""Random programs and the mutations of the search (Real et al., 2023, section 3 and appendix).

Four kinds of mutation, drawn with the weights of :data:`MUTATION_WEIGHTS`:

* **insert**: put a new operation on an edge (the old operand becomes one of its operands, the other operands are
  the input, a new constant or an earlier vertex), or connect an operation's operand to a new constant;
* **remove**: delete an operation, its consumers reading one of its operands instead;
* **switch an edge**: point one operand (or the output) at another earlier vertex;
* **re-randomize**: draw a constant afresh (its value is then refitted, so this moves the fit's starting point).

A mutation is retried until the function actually changes on a set of probe points (the paper's
``retry_until_functional_change``), and the result is pruned (dead vertices dropped, constant sub-expressions
folded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from ._program import OPERATIONS, Op, Program, Vertex

__all__ = ["MUTATION_WEIGHTS", "mutate", "random_constant", "random_program"]

MUTATION_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"insert_operation": 2.0, "insert_constant": 1.0, "remove": 2.0, "switch_edge": 3.0, "randomize_constant": 2.0}
)
"""Relative frequency of each mutation kind."""

_OPERATION_WEIGHTS = np.array([0.2, 0.2, 0.6])  # add, mult, fma: the paper inserts FMA (it subsumes the other two)


def random_constant(rng: np.random.Generator) -> float:
    """A random float32 constant: a simple value (0, 1/2, 1, 2, -1) a quarter of the time, else log-uniform.

    The magnitude is log-uniform in :math:`[2^{-12}, 2^2]` with a random sign; the fit moves it afterwards.
    """
    if rng.random() < 0.25:
        return float(rng.choice([0.0, 0.5, 1.0, 2.0, -1.0]))
    magnitude = 2.0 ** rng.uniform(-12.0, 2.0)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    return float(np.float32(sign * magnitude))


def random_program(rng: np.random.Generator) -> Program:
    """A random program with one operation, from the input and new constants ("from empty code")."""
    op = OPERATIONS[int(rng.choice(3, p=_OPERATION_WEIGHTS))]
    vertices = [Vertex(Op.INPUT)]
    operands: list[int] = []
    for position in range(op.arity):
        if position == 0 or rng.random() < 0.5:
            operands.append(0)
        else:
            vertices.append(Vertex(Op.CONSTANT, value=random_constant(rng)))
            operands.append(len(vertices) - 1)
    vertices.append(Vertex(op, tuple(operands)))
    return Program(tuple(vertices), len(vertices) - 1).pruned()


# A slot is (consumer vertex, operand position); the output is the slot (len(vertices), 0).
def _slots(program: Program, *, with_output: bool) -> list[tuple[int, int]]:
    mask = program.reachable()
    slots = [
        (index, position)
        for index, vertex in enumerate(program.vertices)
        if mask[index] and vertex.op.is_operation
        for position in range(vertex.op.arity)
    ]
    if with_output:
        slots.append((len(program.vertices), 0))
    return slots


def _source(program: Program, slot: tuple[int, int]) -> int:
    consumer, position = slot
    return program.output if consumer == len(program.vertices) else program.vertices[consumer].inputs[position]


def _rewire(program: Program, slot: tuple[int, int], source: int) -> Program:
    consumer, position = slot
    if consumer == len(program.vertices):
        return Program(program.vertices, source)
    vertices = list(program.vertices)
    inputs = list(vertices[consumer].inputs)
    inputs[position] = source
    vertices[consumer] = Vertex(vertices[consumer].op, tuple(inputs))
    return Program(tuple(vertices), program.output)


def _insert_before(program: Program, position: int, new: list[Vertex]) -> Program:
    """Insert ``new`` (whose operands index the old numbering, or -k-1 for new[k]) before vertex ``position``."""
    shift = len(new)

    def moved(index: int) -> int:
        return index + shift if index >= position else index

    vertices = [Vertex(v.op, tuple(moved(i) for i in v.inputs), v.value) for v in program.vertices]
    placed = [Vertex(v.op, tuple(position + (-i - 1) if i < 0 else moved(i) for i in v.inputs), v.value) for v in new]
    vertices[position:position] = placed
    return Program(tuple(vertices), moved(program.output))


def _insert_operation(program: Program, rng: np.random.Generator) -> Program | None:
    slots = _slots(program, with_output=True)
    slot = slots[int(rng.integers(len(slots)))]
    consumer = slot[0]
    source = _source(program, slot)
    op = OPERATIONS[int(rng.choice(3, p=_OPERATION_WEIGHTS))]
    keep_at = int(rng.integers(op.arity))
    new: list[Vertex] = []
    operands: list[int] = []
    for position in range(op.arity):
        if position == keep_at:
            operands.append(source)
            continue
        draw = rng.random()
        if draw < 1 / 3:
            operands.append(0)
        elif draw < 2 / 3:
            new.append(Vertex(Op.CONSTANT, value=random_constant(rng)))
            operands.append(-len(new))  # -k means new[k - 1]
        else:
            operands.append(int(rng.integers(consumer)))
    new.append(Vertex(op, tuple(operands)))
    grown = _insert_before(program, consumer, new)
    inserted = consumer + len(new) - 1
    shifted_slot = (consumer + len(new), slot[1])
    return _rewire(grown, shifted_slot, inserted)


def _insert_constant(program: Program, rng: np.random.Generator) -> Program | None:
    slots = _slots(program, with_output=False)
    if not slots:
        return None
    consumer, position = slots[int(rng.integers(len(slots)))]
    grown = _insert_before(program, consumer, [Vertex(Op.CONSTANT, value=random_constant(rng))])
    return _rewire(grown, (consumer + 1, position), consumer)


def _remove(program: Program, rng: np.random.Generator) -> Program | None:
    mask = program.reachable()
    candidates = [i for i, v in enumerate(program.vertices) if mask[i] and v.op.is_operation]
    if not candidates:
        return None
    removed = candidates[int(rng.integers(len(candidates)))]
    operands = program.vertices[removed].inputs
    replacement = operands[int(rng.integers(len(operands)))]
    vertices = [
        Vertex(v.op, tuple(replacement if i == removed else i for i in v.inputs), v.value) for v in program.vertices
    ]
    output = replacement if program.output == removed else program.output
    return Program(tuple(vertices), output)


def _switch_edge(program: Program, rng: np.random.Generator) -> Program | None:
    slots = [s for s in _slots(program, with_output=True) if s[0] > 1]
    if not slots:
        return None
    slot = slots[int(rng.integers(len(slots)))]
    current = _source(program, slot)
    choices = [i for i in range(slot[0]) if i != current]
    return _rewire(program, slot, choices[int(rng.integers(len(choices)))])


def _randomize_constant(program: Program, rng: np.random.Generator) -> Program | None:
    indices = program.constant_indices
    if not indices:
        return None
    values = program.constants.astype(np.float64)
    values[int(rng.integers(len(indices)))] = random_constant(rng)
    return program.with_constants(values)


_MUTATIONS: Mapping[str, Callable[[Program, np.random.Generator], Program | None]] = MappingProxyType(
    {
        "insert_operation": _insert_operation,
        "insert_constant": _insert_constant,
        "remove": _remove,
        "switch_edge": _switch_edge,
        "randomize_constant": _randomize_constant,
    }
)


def mutate(
    program: Program,
    rng: np.random.Generator,
    *,
    probe: npt.ArrayLike,
    max_ops: int,
    max_attempts: int = 100,
) -> Program:
    """Apply one random mutation, retried until the function changes on ``probe`` and the cost is within budget.

    Args:
        program: the parent.
        rng: the source of randomness (the only one: the result is a function of the generator's state).
        probe: float32 points on which "the function changed" is decided (bitwise, NaN equal to NaN).
        max_ops: the largest operation count a child may have.
        max_attempts: tries before giving up; the parent is returned unchanged then.

    Returns:
        The mutated program, pruned.
    """
    points = np.asarray(probe, dtype=np.float32)
    before = program.evaluate(points)
    names = list(_MUTATIONS)
    weights = np.array([MUTATION_WEIGHTS[n] for n in names])
    weights = weights / weights.sum()
    for _ in range(max_attempts):
        kind = names[int(rng.choice(len(names), p=weights))]
        child = _MUTATIONS[kind](program, rng)
        if child is None:
            continue
        child = child.pruned()
        if child.op_count > max_ops:
            continue
        if not np.array_equal(child.evaluate(points), before, equal_nan=True):
            return child
    return program
