import math

import pytest
from sciml_protocols import BenchContext, BenchmarkCase, Demo, DemoContext
from sciml_special.bench import cases
from sciml_special.demo import EvolvedExp2Demo, LogBesselDemo, VonMisesFisherFitDemo, _mpmath_log_k, demos


def test_entry_points_give_protocol_objects():
    assert all(isinstance(d, Demo) for d in demos())
    assert all(isinstance(c, BenchmarkCase) for c in cases())


def test_integral_oracle_for_k_matches_closed_forms():
    # K_{1/2}(x) = sqrt(pi / (2x)) e^{-x}, K_{3/2} = K_{1/2} (1 + 1/x): the demo's oracle must reproduce them.
    for x in (0.3, 2.0, 40.0):
        half = 0.5 * math.log(math.pi / (2 * x)) - x
        assert _mpmath_log_k(0.5, x) == pytest.approx(half, rel=1e-13, abs=1e-13)
        assert _mpmath_log_k(1.5, x) == pytest.approx(half + math.log1p(1 / x), rel=1e-13, abs=1e-13)


@pytest.mark.slow
def test_log_bessel_demo_quick(tmp_path):
    result = LogBesselDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.metrics
    assert result.metrics["max_error_vs_mpmath"] <= 1e-12
    assert result.metrics["scipy_no_finite_value"] >= 4
    (figure,) = result.figures
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_vmf_demo_quick(tmp_path):
    result = VonMisesFisherFitDemo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.metrics
    assert result.metrics["d=32768 relative error"] < 0.05
    assert result.figures[0].is_file()


@pytest.mark.slow
def test_evolved_exp2_demo_quick(tmp_path):
    result = EvolvedExp2Demo().run(DemoContext(out_dir=tmp_path, quick=True))
    assert result.passed, result.metrics
    # the short search still builds a front that improves with every operation it spends
    front = [float(part.split(": ")[1]) for part in result.metrics["front (ops: validation max ULP)"].split(", ")]
    assert front == sorted(front, reverse=True)
    assert front[-1] < 1e4
    assert result.metrics["[0, 1) exp2_evolved max ULP"] < 1.0
    assert result.figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_bench_cases_quick(case):
    result = case.run(BenchContext(quick=True, min_run_time=0.01))
    assert result.ours.time_s > 0
    assert result.peer is not None
    if case.name == "exp2_evolved":
        assert result.ours.metrics["max_ulp"] < 1.0
        assert result.peer.metrics["max_ulp"] < 1.0
    elif case.name in ("log_iv", "log_kv"):
        assert result.ours.metrics["finite"]
        assert result.ours.metrics["max_rel_difference_to_scipy"] < 1e-11
    else:
        # Same samples, same likelihood: both fits find the same maximum.
        assert result.ours.metrics["kappa_hat"] == pytest.approx(result.peer.metrics["kappa_hat"], rel=1e-8)
