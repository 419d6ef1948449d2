"""The search machinery: float32 emulation, programs, mutations, CMA-ES, NSGA-II and the evolve driver."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sciml_protocols import SciMLInputError
from sciml_special._evolve import (
    Candidate,
    Op,
    Program,
    Vertex,
    cma_es,
    crowding_distance,
    evolve,
    fit_constants,
    fma_float32,
    fma_float32_torch,
    max_ulp_error,
    mutate,
    non_dominated_sort,
    nsga2_order,
    random_program,
    ulp_error,
    ulp_float32,
)
from sciml_special._evolve._search import lawson_refit

# ---------------------------------------------------------------------------------------------- float32 emulation


def _round_to_float32(value: Fraction) -> float:
    """Oracle: the float32 nearest to an exact rational (ties to even), by exhaustive comparison of neighbours."""
    guess = np.float32(float(value))  # within one float32 ulp of the answer
    candidates = [guess, np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))]
    best = min(
        candidates,
        key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c, dtype=np.float32).view(np.uint32)) & 1),
    )
    return float(best)


def test_fma_is_one_rounding_where_float64_double_rounding_fails():
    # (1 + 2^-23) * 2^-24 (1 - 2^-23) + (1 + 2^-23) = 1 + 3 * 2^-24 - 2^-70: just below a float32 halfway point.
    a = np.float32(1 + 2**-23)
    b = np.float32(2**-24 * (1 - 2**-23))
    c = np.float32(1 + 2**-23)
    naive = np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    assert float(naive) == 1 + 2**-22  # rounds to float64 first (the halfway point), then ties to even: wrong
    assert float(fma_float32(a, b, c)) == 1 + 2**-23  # correct
    assert fma_float32_torch(torch.tensor([a]), torch.tensor([b]), torch.tensor([c])).item() == 1 + 2**-23


def test_fma_matches_exact_rational_rounding_on_random_and_cancelling_triples():
    rng = np.random.default_rng(0)
    n = 3000
    a = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    b = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    c = np.where(
        rng.random(n) < 0.5,
        -(a.astype(np.float64) * b).astype(np.float32),  # near-total cancellation
        (rng.standard_normal(n) * 2.0 ** rng.integers(-60, 60, n)).astype(np.float32),
    ).astype(np.float32)
    c[:50] = (c[:50] * np.float32(2.0**-100)).astype(np.float32)  # subnormal range
    got = fma_float32(a, b, c)
    got_torch = fma_float32_torch(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()
    assert np.array_equal(got.view(np.uint32), got_torch.view(np.uint32))
    for i in range(n):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert float(got[i]) == _round_to_float32(exact), (a[i], b[i], c[i])


def test_fma_on_near_halfway_sums():
    # c + a b with a b = +-2^-24 (1 - j^2 2^-46): within 2^-70 of a float32 halfway point next to c in [1, 2), so
    # the float64 sum lands exactly on the halfway point and a second rounding would tie (wrongly, half the time).
    rng = np.random.default_rng(7)
    n = 400
    j = rng.integers(1, 8, n).astype(np.float64)
    a = (1 + j * 2.0**-23).astype(np.float32)
    b = (np.where(rng.random(n) < 0.5, 1.0, -1.0) * 2.0**-24 * (1 - j * 2.0**-23)).astype(np.float32)
    c = rng.uniform(1, 2, n).astype(np.float32)
    got = fma_float32(a, b, c)
    got_torch = fma_float32_torch(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    exact = [
        _round_to_float32(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r)))
        for p, q, r in zip(a, b, c, strict=True)
    ]
    assert got.tolist() == exact
    assert got_torch.tolist() == exact
    assert np.count_nonzero(naive != got) > n // 4  # the cases do defeat double rounding


def test_fma_special_values():
    inf = np.float32(np.inf)
    out = fma_float32([inf, 1.0, np.nan, 2.0], [1.0, 1.0, 1.0, 0.0], [1.0, -inf, 0.0, inf])
    assert out[0] == np.inf
    assert out[1] == -np.inf
    assert np.isnan(out[2])
    assert out[3] == np.inf


def test_ulp_and_ulp_error():
    assert ulp_float32([2.0**-126, 2.0**-130, 3.0]).tolist() == [2.0**-149, 2.0**-149, 2.0**-22]
    assert ulp_error(np.float32(np.nan), 1.0) == np.inf
    assert ulp_error(np.float32(np.inf), 1.0) == np.inf
    assert ulp_error(np.float32(-np.inf), -np.inf) == 0.0
    assert max_ulp_error(np.float32([1.5]), [1.5 + 2**-24]) == 0.5


# ---------------------------------------------------------------------------------------------- programs


def test_evaluate_equals_direct_numpy():
    # v1 = x*x, v2 = v1 + 0.1, v3 = fma(v2, x, -0.7), v4 = fma(v3, v1, v2)
    program = Program.from_spec([("mult", 0, 0), ("add", 1, 0.1), ("fma", 2, 0, -0.7), ("fma", 3, 1, 2)])
    x = np.random.default_rng(1).uniform(-3, 3, 500).astype(np.float32)
    v1 = x * x
    v2 = v1 + np.float32(0.1)
    assert float(np.float32(-0.7)) != -0.7  # the constant is the float32 value, as in the program
    v3 = np.array(
        [
            _round_to_float32(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(np.float32(-0.7))))
            for p, q in zip(v2, x, strict=True)
        ],
        dtype=np.float32,
    )
    v4 = np.array(
        [
            _round_to_float32(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r)))
            for p, q, r in zip(v3, v1, v2, strict=True)
        ],
        dtype=np.float32,
    )
    got = program.evaluate(x)
    assert got.dtype == np.float32
    assert np.array_equal(got, v4)
    exact = program.evaluate_exact(x.astype(np.float64))
    x64 = x.astype(np.float64)
    c1, c2 = float(np.float32(0.1)), float(np.float32(-0.7))
    w2 = x64 * x64 + c1
    assert np.allclose(exact, (w2 * x64 + c2) * x64 * x64 + w2, rtol=1e-14)


def test_batched_constants_match_one_by_one():
    program = Program.from_spec([("fma", 0, 0.5, 1.0), ("fma", 0, 1, 0.25)])
    x = np.linspace(0, 1, 17, dtype=np.float32)
    table = np.array([[0.5, 1.0, 0.25], [2.0, -1.0, 3.0]])
    batched = program.evaluate(x, constants=table)
    assert batched.shape == (2, 17)
    for row, constants in zip(batched, table, strict=True):
        assert np.array_equal(row, program.with_constants(constants).evaluate(x))


def test_to_torch_is_bitwise_equal_to_evaluate():
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 4, 1000).astype(np.float32)
    for _ in range(40):
        program = random_program(rng)
        for _ in range(6):
            program = mutate(program, rng, probe=x[:16], max_ops=10)
        want = program.evaluate(x)
        got = program.to_torch()(torch.from_numpy(x)).numpy()
        assert np.array_equal(want.view(np.uint32), got.view(np.uint32)) or (
            np.array_equal(np.isnan(want), np.isnan(got)) and np.array_equal(want[~np.isnan(want)], got[~np.isnan(got)])
        )


def test_jacobian_matches_finite_differences():
    program = Program.from_spec([("mult", 0, 0.7), ("fma", 1, 1, 0.3), ("fma", 2, 0, -1.5), ("add", 3, 1)])
    x = np.linspace(-1, 1, 9)
    constants = program.constants.astype(np.float64)
    _, jacobian = program.jacobian_exact(x, constants)
    for k in range(constants.size):
        step = np.zeros_like(constants)
        step[k] = 1e-6
        numeric = (
            program.evaluate_exact(x, constants=constants + step)
            - program.evaluate_exact(x, constants=constants - step)
        ) / 2e-6
        assert np.allclose(jacobian[:, k], numeric, atol=1e-8)


def test_pruned_spec_roundtrip_and_text():
    program = Program.from_spec([("mult", 0, 0), ("fma", 0, 2.0, 3.0), ("add", 2, 1.0)])
    assert program.op_count == 2  # vertex 1 (mult) is dead
    again = Program.from_spec(program.to_spec())
    assert again.op_count == 2
    x = np.linspace(-2, 2, 11, dtype=np.float32)
    assert np.array_equal(again.evaluate(x), program.evaluate(x))
    assert str(program).splitlines() == ["v1 = fma(x, 2.0, 3.0)", "v2 = add(v1, 1.0)", "return v2"]
    assert eval(repr(program), {"Program": Program}).to_spec() == program.to_spec()


def test_degenerate_outputs():
    x = np.float32([1.0, 2.0])
    identity = Program((Vertex(Op.INPUT),), 0)
    assert identity.op_count == 0
    assert identity.evaluate(x).tolist() == [1.0, 2.0]
    constant = Program.from_spec([("const", 1.5)])
    assert constant.evaluate(x).tolist() == [1.5, 1.5]
    assert constant.to_torch()(torch.tensor([1.0, 2.0])).tolist() == [1.5, 1.5]
    assert "tl.zeros_like(x) + 1.5" in constant.to_triton_source()
    scaled = Program.from_spec([("fma", 1.5, 2.0, 0)])  # two constant factors: not foldable (fused with x)
    assert scaled.to_torch()(torch.tensor([1.0, 2.0])).tolist() == scaled.evaluate(x).tolist() == [4.0, 5.0]
    assert "tl.fma(1.5, 2.0, x)" in scaled.to_triton_source()


@pytest.mark.parametrize(
    ("vertices", "output", "match"),
    [
        ((), 0, "vertex 0 must be the input"),
        ((Vertex(Op.INPUT), Vertex(Op.ADD, (0, 2)), Vertex(Op.CONSTANT, value=1.0)), 1, "earlier vertices"),
        ((Vertex(Op.INPUT), Vertex(Op.FMA, (0, 0))), 1, "needs 3 operands"),
        ((Vertex(Op.INPUT), Vertex(Op.INPUT)), 1, "second input"),
        ((Vertex(Op.INPUT), Vertex(Op.CONSTANT, value=float("inf"))), 1, "not finite"),
        ((Vertex(Op.INPUT), Vertex(Op.CONSTANT, value=0.1)), 1, "not a float32 value"),
        ((Vertex(Op.INPUT),), 3, "must index a vertex"),
    ],
)
def test_invalid_programs_raise(vertices, output, match):
    with pytest.raises(SciMLInputError, match=match):
        Program(vertices, output)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("fma", "sequence of tuples"),
        ([("pow", 0, 2.0)], "unknown operation"),
        ([("add", 0)], "needs 2 operands"),
        ([("add", 0, 5)], "not earlier"),
        ([("add", 0, "a")], "not an int or a float"),
        ([("const",)], "needs one real value"),
        ([3], "must be a tuple"),
    ],
)
def test_bad_specs_raise(spec, match):
    with pytest.raises(SciMLInputError, match=match):
        Program.from_spec(spec)


def test_bad_arguments_of_program_methods():
    program = Program.from_spec([("add", 0, 1.0)])
    with pytest.raises(SciMLInputError, match="needs 1 constants"):
        program.with_constants([1.0, 2.0])
    with pytest.raises(SciMLInputError, match="finite"):
        program.with_constants([1e39])
    with pytest.raises(SciMLInputError, match="shape"):
        program.evaluate([1.0], constants=np.zeros((2, 2, 1)))
    with pytest.raises(SciMLInputError, match="identifier"):
        program.to_triton_source("not a name")
    with pytest.raises(SciMLInputError, match="float32 tensor"):
        program.to_torch()(torch.zeros(2, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- mutations


def _valid_and_reachable(program: Program) -> None:
    Program(program.vertices, program.output)  # the constructor checks order, arities, constants
    reachable = program.reachable()
    assert reachable[1:].all(), "a pruned program has no dead vertices"
    for index, vertex in enumerate(program.vertices):
        assert all(i < index for i in vertex.inputs)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutations_keep_programs_valid_and_change_the_function(seed):
    rng = np.random.default_rng(seed)
    probe = np.linspace(0, 1, 16, dtype=np.float32)
    program = random_program(rng)
    _valid_and_reachable(program)
    for _ in range(30):
        child = mutate(program, rng, probe=probe, max_ops=8)
        _valid_and_reachable(child)
        assert child.op_count <= 8
        if child is not program:
            assert not np.array_equal(child.evaluate(probe), program.evaluate(probe), equal_nan=True)
        program = child


def test_mutation_is_a_function_of_the_generator_state():
    probe = np.linspace(0, 1, 8, dtype=np.float32)
    start = Program.from_spec([("fma", 0, 0.5, 1.0), ("fma", 0, 1, 1.0)])
    first = [mutate(start, np.random.default_rng(k), probe=probe, max_ops=6).to_spec() for k in range(5)]
    second = [mutate(start, np.random.default_rng(k), probe=probe, max_ops=6).to_spec() for k in range(5)]
    assert first == second
    assert len(set(first)) > 1


# ---------------------------------------------------------------------------------------------- CMA-ES


def test_cma_es_shifted_quadratic():
    shift = np.array([3.0, -1.0, 0.5, 2.0, -4.0])
    scale = np.array([1.0, 10.0, 0.1, 3.0, 1.0])
    result = cma_es(lambda x: (((x - shift) * scale) ** 2).sum(axis=1), np.zeros(5), 1.0, seed=0)
    assert result.converged
    assert np.allclose(result.value, shift, atol=1e-5)
    assert result.history is not None
    assert result.history[-1] <= result.history[0]


def test_cma_es_rosenbrock():
    def rosenbrock(x):
        return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(axis=1)

    result = cma_es(rosenbrock, np.full(4, -1.0), 0.5, max_generations=3000, seed=2)
    assert np.allclose(result.value, np.ones(4), atol=1e-4)
    assert result.residual < 1e-8


def test_cma_es_stop_value_and_generation_cap():
    sphere = lambda x: (x**2).sum(axis=1)  # noqa: E731
    stopped = cma_es(sphere, np.ones(3), 1.0, stop_value=1e-2, seed=0)
    assert stopped.converged
    assert stopped.stats["reason"] == "stop_value"
    assert stopped.residual <= 1e-2
    capped = cma_es(sphere, np.ones(3), 1.0, max_generations=3, seed=0)
    assert not capped.converged
    assert capped.n_iter == 3
    assert capped.stats["reason"] == "max_generations"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": 3}, "callable"),
        ({"x0": []}, "non-empty"),
        ({"sigma0": 0.0}, "sigma0"),
        ({"scales": [1.0, -1.0]}, "scales"),
        ({"population": 1}, "population"),
        ({"max_generations": 0}, "max_generations"),
    ],
)
def test_cma_es_bad_input(kwargs, match):
    arguments = {"objective": lambda x: (x**2).sum(axis=1), "x0": [1.0, 1.0], "sigma0": 1.0, **kwargs}
    objective, x0, sigma0 = arguments.pop("objective"), arguments.pop("x0"), arguments.pop("sigma0")
    with pytest.raises(SciMLInputError, match=match):
        cma_es(objective, x0, sigma0, **arguments)


def test_cma_es_objective_with_wrong_output_shape():
    with pytest.raises(SciMLInputError, match="must return"):
        cma_es(lambda x: np.zeros(1), [1.0, 2.0], 1.0)


# ---------------------------------------------------------------------------------------------- NSGA-II


def _brute_force_fronts(points: np.ndarray) -> list[list[int]]:
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [
            i
            for i in remaining
            if not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in remaining if j != i)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda m: st.lists(st.lists(st.integers(0, 6), min_size=m, max_size=m), min_size=1, max_size=25)
    )
)
def test_non_dominated_sort_matches_brute_force(rows):
    points = np.array(rows, dtype=np.float64)
    fronts = [front.tolist() for front in non_dominated_sort(points)]
    assert fronts == _brute_force_fronts(points)


def test_crowding_distance_hand_computed():
    # Objective 1 spans 0..6, objective 2 spans 0..8; interior points sum neighbour gaps over the spans.
    front = np.array([[0.0, 8.0], [1.0, 6.0], [3.0, 2.0], [6.0, 0.0]])
    expected = [np.inf, (3 - 0) / 6 + (8 - 2) / 8, (6 - 1) / 6 + (6 - 0) / 8, np.inf]
    assert np.allclose(crowding_distance(front), expected)
    assert crowding_distance([[1.0, 1.0]]).tolist() == [np.inf]
    assert np.allclose(crowding_distance([[1.0, 5.0], [1.0, 3.0], [1.0, 1.0]]), [np.inf, 1.0, np.inf])


def test_nsga2_order_prefers_front_then_crowding():
    points = np.array([[0.0, 4.0], [1.0, 3.0], [1.5, 2.9], [3.0, 1.0], [4.0, 0.0], [4.0, 4.0]])
    order, front, crowding = nsga2_order(points)
    assert front.tolist() == [0, 0, 0, 0, 0, 1]
    assert order[-1] == 5
    assert set(order[:2].tolist()) == {0, 4}  # the extremes have infinite crowding distance
    assert crowding[2] < crowding[3]  # (1.5, 2.9) sits in the crowded middle


def test_nsga2_rejects_nan():
    with pytest.raises(SciMLInputError, match="NaN"):
        non_dominated_sort([[np.nan, 1.0]])
    with pytest.raises(SciMLInputError, match="finite"):
        crowding_distance([[np.inf, 1.0], [0.0, 1.0]])
    with pytest.raises(SciMLInputError, match="shape"):
        non_dominated_sort([1.0, 2.0])


# ---------------------------------------------------------------------------------------------- fitting


def test_lawson_refit_recovers_an_exact_polynomial():
    x = np.linspace(-1, 1, 200)
    program = Program.from_spec([("fma", 0, 0.1, 0.1), ("fma", 0, 1, 0.1)])  # (a x + b) x + c
    constants = lawson_refit(program, x, 0.75 * x**2 - 0.5 * x + 2.0)
    assert np.allclose(constants, [0.75, -0.5, 2.0], atol=1e-9)


def test_fit_constants_reaches_the_float32_optimum_of_a_line():
    x = np.linspace(0, 1, 128, dtype=np.float32)
    y = np.exp2(x.astype(np.float64))
    start = Program.from_spec([("fma", 0, 0.1, 0.1)])
    fitted = fit_constants(start, x, y, generations=60, seed=0)
    before, after = max_ulp_error(start.evaluate(x), y), max_ulp_error(fitted.evaluate(x), y)
    assert after < before
    # The minimax line through 2^x on [0, 1] has relative error about 4.3%: around 3.6e5 float32 ULPs.
    assert 3.0e5 < after < 4.5e5


# ---------------------------------------------------------------------------------------------- the search

_TINY = {
    "population": 6,
    "generations": 4,
    "train_points": 64,
    "validation_points": 256,
    "fit_generations": 20,
    "max_ops": 5,
}


def _bad_start() -> Program:
    return Program.from_spec([("mult", 0, 0.5)])  # x / 2: nothing like 2^x


def test_tiny_search_improves_a_bad_start_and_returns_a_pareto_front():
    start = _bad_start()
    result = evolve(np.exp2, (0.0, 1.0), initial=[start], seed=1, **_TINY)
    train = result.stats["train_x"]
    assert train.dtype == np.float32
    assert train.size == 64
    assert train.min() == 0.0
    assert train.max() == 1.0
    start_error = max_ulp_error(start.evaluate(train), np.exp2(train.astype(np.float64)))
    front = result.value
    assert all(isinstance(c, Candidate) for c in front)
    assert min(c.train_ulp for c in front) < start_error / 10
    for a, b in itertools.permutations(front, 2):
        assert not (a.train_ulp <= b.train_ulp and a.ops <= b.ops and (a.train_ulp < b.train_ulp or a.ops < b.ops))
    assert [c.ops for c in front] == sorted(c.ops for c in front)
    assert result.n_iter == 4
    assert result.history is not None
    assert result.history.shape == (5,)
    assert bool((result.history[1:] <= result.history[:-1]).all())  # elitist: the best never gets worse
    assert result.stats["evaluations"] == 6 + 4 * 6
    assert result.residual == min(c.validation_ulp for c in front)
    for candidate in front:  # the reported errors are the programs' real errors
        assert candidate.train_ulp == max_ulp_error(
            candidate.program.evaluate(train), np.exp2(train.astype(np.float64))
        )


def test_search_is_reproducible_and_executor_independent():
    in_process = evolve(np.exp2, (0.0, 1.0), seed=5, **_TINY)
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = evolve(np.exp2, (0.0, 1.0), seed=5, executor=pool, **_TINY)

    def summary(result):
        return [(c.program.to_spec(), c.train_ulp, c.validation_ulp) for c in result.value]

    assert summary(in_process) == summary(threaded)
    assert torch.equal(in_process.history, threaded.history)
    other_seed = evolve(np.exp2, (0.0, 1.0), seed=6, **_TINY)
    assert summary(other_seed) != summary(in_process)


@pytest.mark.slow
def test_local_process_pool_gives_the_in_process_result():
    small = {**_TINY, "generations": 2}
    in_process = evolve(np.exp2, (0.0, 1.0), seed=3, **small)
    pooled = evolve(np.exp2, (0.0, 1.0), seed=3, executor="process", **small)
    assert [(c.program.to_spec(), c.train_ulp) for c in pooled.value] == [
        (c.program.to_spec(), c.train_ulp) for c in in_process.value
    ]


def test_search_with_progress_bar(capsys):
    import tqdm  # noqa: F401  (a test dependency: fail loudly if missing)

    result = evolve(np.exp2, (0.0, 1.0), seed=0, progress=True, **{**_TINY, "generations": 1})
    assert result.n_iter == 1
    assert "evolve" in capsys.readouterr().err


def test_zero_generations_scores_the_initial_population():
    result = evolve(np.exp2, (0.0, 1.0), seed=0, **{**_TINY, "generations": 0})
    assert result.n_iter == 0
    assert result.stats["evaluations"] == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "exp2"}, "callable"),
        ({"domain": (1.0, 0.0)}, "low < high"),
        ({"domain": (0.0, float("inf"))}, "finite"),
        ({"domain": (0.0,)}, "pair"),
        ({"domain": ("a", "b")}, "real numbers"),
        ({"population": 1}, "population"),
        ({"generations": -1}, "generations"),
        ({"seed": -3}, "seed"),
        ({"executor": 4}, "Executor"),
        ({"initial": []}, "non-empty"),
        ({"initial": ["x"]}, "not a Program"),
        ({"target": lambda x: x[:-1]}, "one value per point"),
        ({"target": lambda x: np.where(x > 0.5, np.nan, x)}, "NaN or infinite"),
        ({"target_ulp": 0.0}, "target_ulp"),
        ({"progress": "yes"}, "bool"),
    ],
)
def test_evolve_bad_input(kwargs, match):
    arguments = {"target": np.exp2, "domain": (0.0, 1.0), **_TINY, **kwargs}
    with pytest.raises(SciMLInputError, match=match):
        evolve(arguments.pop("target"), arguments.pop("domain"), **arguments)


def test_evolve_rejects_initial_programs_over_budget():
    big = Program.from_spec([("fma", 0, 0.5, 1.0)] + [("fma", 0, k, 1.0) for k in range(1, 7)])
    with pytest.raises(SciMLInputError, match="max_ops"):
        evolve(np.exp2, (0.0, 1.0), initial=[big], **_TINY)
