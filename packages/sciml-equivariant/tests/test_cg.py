"""Tests of ClebschGordanTensorProduct against e3nn (same flat weights), rotations and the cross product."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3
from sciml_equivariant._cg import ClebschGordanTensorProduct
from sciml_equivariant._so3 import rand_rotation, wigner_D
from sciml_protocols import SciMLInputError
from sciml_protocols.testing import assert_close, gradcheck_float64


def _e3nn_float64(factory: type, *args: object, **kwargs: object) -> torch.nn.Module:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return factory(*args, **kwargs)
    finally:
        torch.set_default_dtype(default)


def _rotation_matrix(irreps: str, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal representation in mul_ir layout, with parity: rotations only, so parity plays no role."""
    blocks = []
    for mul, ir in o3.Irreps(irreps):
        blocks.extend([wigner_D(ir.l, R)] * mul)
    return torch.block_diag(*blocks)


CASES = [
    ("2x0e+3x1o+2x2e", "1x0e+2x1o+1x2e", "3x0e+2x1o+2x1e+2x2e+1x3o"),
    ("1x1o", "1x1o", "1x0e+1x1e+1x2e"),
    ("2x0o+1x1e", "2x1o+1x3o", "2x1e+1x2o+1x4e"),
]


@pytest.mark.parametrize(("irreps1", "irreps2", "irreps_out"), CASES)
@pytest.mark.parametrize("path_normalization", ["element", "path"])
def test_matches_e3nn_fully_connected(irreps1: str, irreps2: str, irreps_out: str, path_normalization: str) -> None:
    generator = torch.Generator().manual_seed(0)
    reference = _e3nn_float64(
        o3.FullyConnectedTensorProduct, irreps1, irreps2, irreps_out, path_normalization=path_normalization
    )
    ours = ClebschGordanTensorProduct(
        irreps1, irreps2, irreps_out, mode="uvw", path_normalization=path_normalization, dtype=torch.float64
    )
    assert ours.weight_numel == reference.weight_numel
    with torch.no_grad():
        ours.weight.copy_(reference.weight)
    x = torch.randn(5, o3.Irreps(irreps1).dim, generator=generator, dtype=torch.float64)
    y = torch.randn(5, o3.Irreps(irreps2).dim, generator=generator, dtype=torch.float64)
    assert_close(ours(x, y), reference(x, y), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["uvu", "uuu"])
@pytest.mark.parametrize("irrep_normalization", ["component", "norm"])
def test_matches_e3nn_tensor_product_modes(mode: str, irrep_normalization: str) -> None:
    generator = torch.Generator().manual_seed(1)
    irreps1, irreps2, irreps_out = "3x0e+3x1o+3x2e", "3x0e+3x1o", "3x0e+3x1o+3x1e+3x2e+3x2o"
    ours = ClebschGordanTensorProduct(
        irreps1, irreps2, irreps_out, mode=mode, irrep_normalization=irrep_normalization, dtype=torch.float64
    )
    instructions = [(i1, i2, io, mode, True) for i1, i2, io in ours.paths]
    reference = _e3nn_float64(
        o3.TensorProduct, irreps1, irreps2, irreps_out, instructions, irrep_normalization=irrep_normalization
    )
    assert ours.weight_numel == reference.weight_numel
    with torch.no_grad():
        ours.weight.copy_(reference.weight)
    x = torch.randn(4, o3.Irreps(irreps1).dim, generator=generator, dtype=torch.float64)
    y = torch.randn(4, o3.Irreps(irreps2).dim, generator=generator, dtype=torch.float64)
    assert_close(ours(x, y), reference(x, y), atol=1e-12, rtol=0)


def test_unshared_external_weights_match_e3nn() -> None:
    generator = torch.Generator().manual_seed(2)
    irreps1, irreps2, irreps_out = "2x0e+2x1o", "1x0e+1x1o", "2x0e+2x1o+1x1e"
    reference = _e3nn_float64(
        o3.FullyConnectedTensorProduct, irreps1, irreps2, irreps_out, internal_weights=False, shared_weights=False
    )
    ours = ClebschGordanTensorProduct(
        irreps1, irreps2, irreps_out, internal_weights=False, shared_weights=False, dtype=torch.float64
    )
    x = torch.randn(3, 8, generator=generator, dtype=torch.float64)
    y = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(3, ours.weight_numel, generator=generator, dtype=torch.float64)
    assert_close(ours(x, y, w), reference(x, y, w), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_equivariance(dtype: torch.dtype, tol: float) -> None:
    generator = torch.Generator().manual_seed(3)
    irreps1, irreps2, irreps_out = CASES[0]
    tp = ClebschGordanTensorProduct(irreps1, irreps2, irreps_out, dtype=dtype)
    R = rand_rotation(1, generator=generator, dtype=torch.float64)[0]
    d1, d2, dout = (_rotation_matrix(s, R) for s in (irreps1, irreps2, irreps_out))
    x = torch.randn(6, d1.shape[0], generator=generator, dtype=torch.float64)
    y = torch.randn(6, d2.shape[0], generator=generator, dtype=torch.float64)
    with torch.no_grad():
        rotated_in = tp((x @ d1.T).to(dtype), (y @ d2.T).to(dtype)).double()
        rotated_out = tp(x.to(dtype), y.to(dtype)).double() @ dout.T
    assert float((rotated_in - rotated_out).abs().max()) <= tol * float(rotated_out.abs().max())


def test_vector_vector_to_pseudovector_is_cross_product() -> None:
    generator = torch.Generator().manual_seed(4)
    tp = ClebschGordanTensorProduct("1x1o", "1x1o", "1x1e", mode="uuu", dtype=torch.float64)
    with torch.no_grad():
        tp.weight.fill_(1.0)
    a = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        z = tp(a, b)
    cross = torch.linalg.cross(a, b)
    ratio = (z * cross).sum() / (cross * cross).sum()  # the single constant, fitted once
    assert abs(float(ratio)) > 0.1
    assert_close(z, ratio * cross, atol=1e-13, rtol=0)


def test_gradcheck_double_backward() -> None:
    generator = torch.Generator().manual_seed(5)
    tp = ClebschGordanTensorProduct("1x0e+1x1o", "1x1o", "1x0e+1x1e+1x1o", dtype=torch.float64)
    x = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    gradcheck_float64(lambda a, b: tp(a, b), x, y, gradgrad=True, fast_mode=True)


def test_bad_input() -> None:
    with pytest.raises(SciMLInputError, match="irreps_in1"):
        ClebschGordanTensorProduct("2x1q", "1x0e", "1x0e")
    with pytest.raises(SciMLInputError, match="mode"):
        ClebschGordanTensorProduct("1x0e", "1x0e", "1x0e", mode="uvx")
    with pytest.raises(SciMLInputError, match="irreps_in2"):
        ClebschGordanTensorProduct("2x0e", "3x0e", "2x0e", mode="uuu")
    with pytest.raises(SciMLInputError, match="path_weights"):
        ClebschGordanTensorProduct("1x0e", "1x0e", "1x0e", path_weights=[1.0, 2.0])
    with pytest.raises(SciMLInputError, match="shared_weights"):
        ClebschGordanTensorProduct("1x0e", "1x0e", "1x0e", shared_weights=False)
    tp = ClebschGordanTensorProduct("1x0e+1x1o", "1x1o", "1x1o")
    with pytest.raises(SciMLInputError, match="x"):
        tp(torch.randn(2, 5), torch.randn(2, 3))
    with pytest.raises(SciMLInputError, match="weight"):
        tp(torch.randn(2, 4), torch.randn(2, 3), torch.randn(tp.weight_numel))


def test_module_dtype_device_and_state_dict() -> None:
    tp = ClebschGordanTensorProduct("2x0e+1x1o", "1x1o", "2x1o", dtype=torch.float64, device="cpu")
    assert tp.weight.dtype == torch.float64
    assert set(tp.state_dict()) == {"weight"}
    tp32 = tp.to(torch.float32)
    out = tp32(torch.randn(3, 5), torch.randn(3, 3))
    assert out.dtype == torch.float32
    assert out.shape == (3, 6)
