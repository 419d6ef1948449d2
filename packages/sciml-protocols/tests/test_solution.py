import dataclasses
import warnings

import pytest
import sciml_protocols as sp
import torch


def test_solution_is_frozen_and_stats_read_only():
    sol = sp.Solution(value=torch.zeros(2), converged=True, n_iter=3, residual=1e-8, stats={"k": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.converged = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        sol.stats["k"] = 2  # type: ignore[index]
    assert sol.stats["k"] == 1
    assert sol.history is None


def test_solution_fields_validated():
    with pytest.raises(sp.SciMLInputError, match="'converged'"):
        sp.Solution(value=None, converged=torch.tensor(True), n_iter=1, residual=0.0)  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError, match="'n_iter'"):
        sp.Solution(value=None, converged=True, n_iter=-1, residual=0.0)
    with pytest.raises(sp.SciMLInputError, match="'n_iter'"):
        sp.Solution(value=None, converged=True, n_iter=2.0, residual=0.0)  # type: ignore[arg-type]


def test_check_warns_or_raises_only_when_not_converged():
    good = sp.Solution(value=torch.ones(1), converged=True, n_iter=1, residual=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert good.check() is good
        assert good.check("raise") is good
    bad = sp.Solution(value=torch.ones(1), converged=False, n_iter=7, residual=0.25, stats={"reason": "cap reached"})
    with pytest.warns(sp.ConvergenceWarning, match="7 iterations.*0.25.*cap reached"):
        assert bad.check() is bad
    with pytest.raises(sp.SciMLError, match="did not converge"):
        bad.check("raise")
    with pytest.raises(sp.SciMLInputError, match="'action'"):
        bad.check("ignore")  # type: ignore[arg-type]


def test_repr_is_short_for_large_values():
    sol = sp.Solution(value=(torch.zeros(100, 100), torch.zeros(3)), converged=False, n_iter=2, residual=torch.ones(4))
    text = repr(sol)
    assert "shape=(100, 100)" in text
    assert len(text) < 300
