"""Tests of sciml_equivariant._irreps against e3nn's o3.Irreps and the layout definitions."""

# ruff: noqa: E741  (l is the degree, the standard name)
from __future__ import annotations

import e3nn.o3 as o3
import pytest
import torch
from sciml_equivariant._irreps import Irrep, Irreps, MulIr, gaunt_irreps, ir_mul_to_mul_ir, mul_ir_to_ir_mul
from sciml_equivariant._so3 import rand_rotation, spherical_harmonics
from sciml_protocols import SciMLInputError

F64 = torch.float64

STRINGS = [
    "16x0e+16x1o+8x2e",
    "0e + 1o",
    "1x1o",
    "0x0e+2x1o",
    "1e+1e+0x2o+1e",
    "",
    "3x1o+2x1o",
    " 3x0e +  1x1o ",
    "1o+0e+1o+10x12e",
    "128x0e+128x1o+128x2e+128x3o",
]


@pytest.mark.parametrize("text", STRINGS)
def test_irreps_match_e3nn(text: str) -> None:
    ours, ref = Irreps(text), o3.Irreps(text)
    assert str(ours) == str(ref)
    assert ours.dim == ref.dim
    assert ours.num_irreps == ref.num_irreps
    assert ours.slices() == ref.slices()
    assert ours.ls == ref.ls
    assert str(ours.simplify()) == str(ref.simplify())
    assert [(mul, ir.l, ir.p) for mul, ir in ours] == [(mul, ir.l, ir.p) for mul, ir in ref]
    if len(ref) > 0:
        assert ours.lmax == ref.lmax
    s_ours, s_ref = ours.sort(), ref.sort()
    assert str(s_ours.irreps) == str(s_ref.irreps)
    assert (s_ours.p, s_ours.inv) == (tuple(s_ref.p), tuple(s_ref.inv))
    assert Irreps(str(ours)) == ours  # str round trip


def test_irrep_basics() -> None:
    ir = Irrep("2e")
    assert (ir.l, ir.p, ir.dim, str(ir)) == (2, 1, 5, "2e")
    assert Irrep(1, -1) == Irrep("1o") == Irrep((1, -1)) == (1, -1)
    assert Irrep("0e").is_scalar()
    assert not Irrep("0o").is_scalar()
    assert sorted([Irrep("1e"), Irrep("1o"), Irrep("0e")]) == [Irrep("0e"), Irrep("1o"), Irrep("1e")]
    assert [str(i) for i in Irrep("2e") * Irrep("1o")] == [str(i) for i in o3.Irrep("2e") * o3.Irrep("1o")]
    assert str(MulIr(3, Irrep("1o"))) == "3x1o"
    assert "1o" in Irreps("2x0e+1x1o")
    assert "2e" not in Irreps("2x0e+1x1o")
    assert Irreps("2x0e+1x1o+3x0e").count("0e") == 5


def test_irreps_construction_and_arithmetic() -> None:
    assert str(Irreps([(2, (1, -1)), (1, "0e"), Irrep("2e"), "1o"])) == "2x1o+1x0e+1x2e+1x1o"
    assert str(Irreps("1o") + "0e") == "1x1o+1x0e"
    assert str("0e" + Irreps("1o")) == "1x0e+1x1o"
    assert str(Irreps("1o") * 3) == str(o3.Irreps("1o") * 3)
    assert str(Irreps("1o+2e+3o")[1:]) == "1x2e+1x3o"
    assert Irreps("1o+2e")[0] == (1, (1, -1))
    assert Irreps(Irreps("1o")) == Irreps("1x1o")
    # objects of e3nn convert
    assert str(Irreps(o3.Irreps("2x0e+3x1o"))) == "2x0e+3x1o"
    assert Irrep(o3.Irrep("2o")) == Irrep("2o")


@pytest.mark.parametrize("bad", ["1x", "2z", "-1e", "x1o", "1o+", "0x", "1xx1o", "1.5e", "1e2o"])
def test_irreps_bad_strings(bad: str) -> None:
    with pytest.raises(SciMLInputError, match="irreps"):
        Irreps(bad)


def test_irrep_bad_input() -> None:
    with pytest.raises(SciMLInputError):
        Irrep("1z")
    with pytest.raises(SciMLInputError):
        Irrep(-1, 1)
    with pytest.raises(SciMLInputError):
        Irrep(1, 0)
    with pytest.raises(SciMLInputError):
        Irreps([(-1, "1o")])
    with pytest.raises(SciMLInputError):
        Irreps([3.5])
    with pytest.raises(SciMLInputError):
        _ = Irreps("").lmax


def test_D_from_matrix_matches_e3nn_proper_and_improper() -> None:
    text = "2x0e+1x1o+0x2e+3x2e+1x3o+1x1e+2x0o"
    R = rand_rotation(3, generator=torch.Generator().manual_seed(0), dtype=F64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # e3nn builds its generators in the default dtype
    try:
        for mat in (R, -R):
            ref = o3.Irreps(text).D_from_matrix(mat)
            torch.testing.assert_close(Irreps(text).D_from_matrix(mat), ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(Irrep("3o").D_from_matrix(-R), o3.Irrep("3o").D_from_matrix(-R), rtol=0, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


def test_D_from_matrix_acts_on_spherical_harmonics_and_rejects_non_orthogonal() -> None:
    """Irreps 0e+1o+2e+3o carry the SH: Y(R v) = D(R) Y(v), and Y(-v) = D(-I) Y(v) (parity (-1)^l)."""
    irreps = gaunt_irreps(1, 3)
    v = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    R = rand_rotation(1, generator=torch.Generator().manual_seed(2), dtype=F64)[0]
    for mat in (R, -R):
        torch.testing.assert_close(
            spherical_harmonics(3, v @ mat.T), spherical_harmonics(3, v) @ irreps.D_from_matrix(mat).T
        )
    with pytest.raises(SciMLInputError, match="orthogonal"):
        irreps.D_from_matrix(2 * torch.eye(3))


def test_layout_conversion_definition_and_round_trip() -> None:
    irreps = Irreps("3x0e+2x1o+0x2e+4x2e")
    x = torch.randn(2, 5, irreps.dim, dtype=F64, generator=torch.Generator().manual_seed(3))
    y = mul_ir_to_ir_mul(x, irreps)
    # definition: per block, y[..., m * mul + u] = x[..., u * (2l+1) + m]
    for (mul, ir), sl in zip(irreps, irreps.slices(), strict=True):
        for u in range(mul):
            for m in range(ir.dim):
                assert torch.equal(y[..., sl.start + m * mul + u], x[..., sl.start + u * ir.dim + m])
    torch.testing.assert_close(ir_mul_to_mul_ir(y, irreps), x, rtol=0, atol=0)
    torch.testing.assert_close(mul_ir_to_ir_mul(ir_mul_to_mul_ir(x, "3x0e+2x1o+0x2e+4x2e"), irreps), x)
    with pytest.raises(SciMLInputError, match="x"):
        mul_ir_to_ir_mul(torch.zeros(3, irreps.dim + 1), irreps)


def test_gaunt_irreps() -> None:
    irreps = gaunt_irreps(128, 6)
    assert str(irreps) == "128x0e+128x1o+128x2e+128x3o+128x4e+128x5o+128x6e"
    assert irreps.dim == 128 * 49
    assert str(irreps) == str(o3.Irreps([(128, (l, (-1) ** l)) for l in range(7)]))
    with pytest.raises(SciMLInputError, match="channels"):
        gaunt_irreps(0, 2)
    with pytest.raises(SciMLInputError, match="lmax"):
        gaunt_irreps(2, -1)


def test_y_parity_shorthand_matches_e3nn():
    for text in ["2y", "0y+1y+2y", "3x1y+2x4y"]:
        ours = Irreps(text)
        theirs = o3.Irreps(text)
        assert str(ours) == str(theirs)
        assert [(mul, (ir.l, ir.p)) for mul, ir in ours] == [(mul, (ir.l, ir.p)) for mul, ir in theirs]
