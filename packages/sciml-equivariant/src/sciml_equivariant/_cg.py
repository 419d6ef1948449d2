r"""The Clebsch-Gordan tensor product: the exact general baseline, with every path (odd ones included).

For irreps features :math:`x^{(1)}` and :math:`x^{(2)}` (e3nn ``mul_ir`` layout) and each path
:math:`(i_1, i_2, i_{out})` with :math:`|l_1 - l_2| \le l_{out} \le l_1 + l_2` and :math:`p_1 p_2 = p_{out}`,

.. math:: z^{(i_{out})}_{w k} \mathrel{+}= \alpha_{path} \sum_{u v i j} W_{uvw}\, C^{l_1 l_2 l_{out}}_{ijk}\,
    x^{(i_1)}_{u i}\, x^{(i_2)}_{v j}

with :math:`C` the real-basis Wigner 3j tensor (:func:`~sciml_equivariant._so3.wigner_3j`, e3nn's convention, unit
Frobenius norm) and learnable weights :math:`W` whose shape depends on the connection mode: ``"uvw"``
(:math:`W_{uvw}`, fully connected), ``"uvu"`` (:math:`W_{uv}`, output multiplicity that of the first input) or
``"uuu"`` (:math:`W_u`, channel-wise, all multiplicities equal). The constant :math:`\alpha_{path}` follows e3nn's
``irrep_normalization`` and ``path_normalization`` rules, so with the same flat weight vector the module reproduces
e3nn's ``o3.TensorProduct`` / ``o3.FullyConnectedTensorProduct`` (Geiger & Smidt, "e3nn: Euclidean Neural
Networks", arXiv:2207.09453).

Unlike the Gaunt product (:mod:`sciml_equivariant._gaunt`), which only has the paths with :math:`l_1+l_2+l_{out}`
even, this product also has the antisymmetric paths: :math:`1o \otimes 1o \to 1e` is the cross product. Its cost is
:math:`O(L^6)` for all paths up to degree :math:`L`; it is the reference, not the fast path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from sciml_protocols import SciMLInputError
from torch import nn

from sciml_equivariant._irreps import Irreps
from sciml_equivariant._so3 import wigner_3j

__all__ = ["ClebschGordanTensorProduct"]

_MODES = ("uvw", "uvu", "uuu")
_IRREP_NORMALIZATIONS = ("component", "norm", "none")
_PATH_NORMALIZATIONS = ("element", "path", "none")


def _parse_irreps(name: str, value: object) -> tuple[Irreps, list[tuple[int, int, int]]]:
    """The ``Irreps`` and its (mul, l, p) triples, with errors naming the constructor argument."""
    try:
        irreps = Irreps(value)  # type: ignore[arg-type]
    except SciMLInputError as err:
        raise SciMLInputError(name, err.problem) from err
    return irreps, [(int(mul), int(ir.l), int(ir.p)) for mul, ir in irreps]


class ClebschGordanTensorProduct(nn.Module):
    r"""Weighted Clebsch-Gordan tensor product of two irreps features over all allowed paths (e3nn-compatible).

    .. math:: z^{(i_{out})} = \sum_{(i_1, i_2) \to i_{out}} \alpha_{path}\, \big(W_{path} \cdot
        (x^{(i_1)} \otimes_{CG} x^{(i_2)})\big),
        \qquad (x \otimes_{CG} y)_{uvk} = \sum_{ij} C^{l_1 l_2 l_{out}}_{ijk}\, x_{ui}\, y_{vj}

    Paths are all :math:`(i_1, i_2, i_{out})` (in this loop order, as in e3nn's ``FullyConnectedTensorProduct``)
    with :math:`|l_1 - l_2| \le l_{out} \le l_1 + l_2` and :math:`p_1 p_2 = p_{out}`, odd
    :math:`l_1 + l_2 + l_{out}` included (e.g. the cross product :math:`1o \otimes 1o \to 1e`). With
    ``irrep_normalization="component"`` :math:`\alpha^2 = (2 l_{out} + 1) / n` and
    ``"norm"`` :math:`\alpha^2 = (2 l_1 + 1)(2 l_2 + 1) / n`, where ``path_normalization="element"`` makes
    :math:`n` the number of (u, v) pairs summed into the output irrep over all its paths and ``"path"`` makes it the
    pairs of this path times the number of paths into the output irrep; then :math:`\alpha^2` is multiplied by
    ``path_weights``. The flat weight vector concatenates the paths' weights (shapes ``(mul1, mul2, mul_out)``
    for ``"uvw"``, ``(mul1, mul2)`` for ``"uvu"``, ``(mul,)`` for ``"uuu"``) in path order, which is e3nn's layout:
    a weight vector copied from e3nn gives e3nn's output.

    Reference: Geiger & Smidt, "e3nn: Euclidean Neural Networks", arXiv:2207.09453; Thomas et al., "Tensor field
    networks", arXiv:1802.08219.

    Args:
        irreps_in1: irreps of the first input, a string like ``"8x0e+8x1o"`` or an ``Irreps``.
        irreps_in2: irreps of the second input.
        irreps_out: irreps of the output (irreps that no path reaches stay zero).
        mode: ``"uvw"`` (fully connected, default), ``"uvu"`` or ``"uuu"`` (channel-wise).
        irrep_normalization: ``"component"`` (default), ``"norm"`` or ``"none"``, as in e3nn.
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``, as in e3nn.
        path_weights: optional fixed multipliers of :math:`\alpha^2`, one per path (e3nn's ``path_weight``).
        internal_weights: hold the weights as a parameter ``weight`` (initialized from a standard normal, like
            e3nn); else they are passed to :meth:`forward`.
        shared_weights: one weight vector for the whole batch; with ``False`` :meth:`forward` takes
            ``(..., weight_numel)`` weights (requires ``internal_weights=False``).
        device: device of the parameter and buffers.
        dtype: floating dtype of the parameter and buffers (default: torch's default dtype).

    Attributes:
        paths: list of ``(i1, i2, i_out)`` in weight order.
        weight_numel: length of the flat weight vector.

    Raises:
        SciMLInputError: irreps that do not parse, an unknown mode or normalization, multiplicities that the mode
            does not allow, ``path_weights`` of the wrong length, or ``internal_weights`` with unshared weights.

    Example:
        >>> tp = ClebschGordanTensorProduct("1x1o", "1x1o", "1x1e", mode="uuu", dtype=torch.float64)
        >>> _ = tp.weight.data.fill_(1.0)
        >>> a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        >>> b = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        >>> z = tp(a, b)  # proportional to the cross product a x b = (0, 0, 1)
        >>> torch.allclose(z / z.norm(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        True
    """

    weight: torch.Tensor

    def __init__(
        self,
        irreps_in1: Irreps | str,
        irreps_in2: Irreps | str,
        irreps_out: Irreps | str,
        *,
        mode: str = "uvw",
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        path_weights: Sequence[float] | None = None,
        internal_weights: bool = True,
        shared_weights: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise SciMLInputError("mode", f"must be one of {_MODES}, got {mode!r}")
        if irrep_normalization not in _IRREP_NORMALIZATIONS:
            raise SciMLInputError("irrep_normalization", f"must be one of {_IRREP_NORMALIZATIONS}")
        if path_normalization not in _PATH_NORMALIZATIONS:
            raise SciMLInputError("path_normalization", f"must be one of {_PATH_NORMALIZATIONS}")
        if internal_weights and not shared_weights:
            raise SciMLInputError("shared_weights", "must be True when internal_weights=True")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise SciMLInputError("dtype", f"must be a floating dtype, got {dtype}")
        self.irreps_in1, self.in1 = _parse_irreps("irreps_in1", irreps_in1)
        self.irreps_in2, self.in2 = _parse_irreps("irreps_in2", irreps_in2)
        self.irreps_out, self.out = _parse_irreps("irreps_out", irreps_out)
        self.mode = mode
        self.internal_weights = internal_weights
        self.shared_weights = shared_weights
        self.dim_in1 = sum(m * (2 * ell + 1) for m, ell, _ in self.in1)
        self.dim_in2 = sum(m * (2 * ell + 1) for m, ell, _ in self.in2)
        self.dim_out = sum(m * (2 * ell + 1) for m, ell, _ in self.out)

        self.paths: list[tuple[int, int, int]] = []
        shapes: list[tuple[int, ...]] = []
        for i1, (m1, l1, p1) in enumerate(self.in1):
            for i2, (m2, l2, p2) in enumerate(self.in2):
                for io, (mo, lo, po) in enumerate(self.out):
                    if p1 * p2 != po or not abs(l1 - l2) <= lo <= l1 + l2:
                        continue
                    if mode == "uvw":
                        shape: tuple[int, ...] = (m1, m2, mo)
                    elif mode == "uvu":
                        if mo != m1:
                            raise SciMLInputError("irreps_out", f"mode 'uvu' needs mul_out == mul1, got {mo} != {m1}")
                        shape = (m1, m2)
                    else:
                        if not m1 == m2 == mo:
                            raise SciMLInputError("irreps_in2", f"mode 'uuu' needs equal multiplicities ({m1, m2, mo})")
                        shape = (m1,)
                    self.paths.append((i1, i2, io))
                    shapes.append(shape)
        self.path_shapes = shapes
        if path_weights is None:
            fixed = [1.0] * len(self.paths)
        else:
            fixed = [float(w) for w in path_weights]
            if len(fixed) != len(self.paths):
                raise SciMLInputError(
                    "path_weights", f"needs {len(self.paths)} entries (one per path), got {len(fixed)}"
                )

        def pairs(path: tuple[int, int, int]) -> int:
            m1, m2 = self.in1[path[0]][0], self.in2[path[1]][0]
            return {"uvw": m1 * m2, "uvu": m2, "uuu": 1}[mode]

        self.alphas: list[float] = []
        for (i1, i2, io), extra in zip(self.paths, fixed, strict=True):
            l1, l2, lo = self.in1[i1][1], self.in2[i2][1], self.out[io][1]
            alpha = {"component": 2 * lo + 1, "norm": (2 * l1 + 1) * (2 * l2 + 1), "none": 1}[irrep_normalization]
            into = [p for p in self.paths if p[2] == io]
            if path_normalization == "element":
                n = sum(pairs(p) for p in into)
            elif path_normalization == "path":
                n = pairs((i1, i2, io)) * len(into)
            else:
                n = 1
            if n > 0:
                alpha = alpha / n
            self.alphas.append(math.sqrt(alpha * extra))

        for k, (i1, i2, io) in enumerate(self.paths):
            coupling = wigner_3j(self.in1[i1][1], self.in2[i2][1], self.out[io][1], dtype=torch.float64)
            self.register_buffer(f"_w3j_{k}", coupling.to(device=device, dtype=dtype), persistent=False)
        self.weight_numel = sum(math.prod(s) for s in shapes)
        if internal_weights:
            self.weight = nn.Parameter(torch.randn(self.weight_numel, device=device, dtype=dtype))
        else:
            self.register_buffer("weight", torch.empty(0, device=device, dtype=dtype), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, mode={self.mode!r}, "
            f"paths={len(self.paths)}, weight_numel={self.weight_numel}"
        )

    @staticmethod
    def _offsets(triples: Sequence[tuple[int, int, int]]) -> list[int]:
        offsets = [0]
        for m, ell, _ in triples:
            offsets.append(offsets[-1] + m * (2 * ell + 1))
        return offsets

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor product of ``x`` and ``y``.

        Args:
            x: ``(..., irreps_in1.dim)`` in ``mul_ir`` layout.
            y: ``(..., irreps_in2.dim)``; leading dimensions broadcast with ``x``'s.
            weight: ``(weight_numel,)`` (shared) or ``(..., weight_numel)`` (unshared) when the weights are not
                internal; must be omitted otherwise.

        Returns:
            ``(..., irreps_out.dim)`` in ``mul_ir`` layout.

        Raises:
            SciMLInputError: on wrong feature sizes, dtypes or weight shapes.
        """
        for name, value, dim in (("x", x, self.dim_in1), ("y", y, self.dim_in2)):
            if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
                raise SciMLInputError(name, "must be a floating-point tensor")
            if value.dim() == 0 or value.shape[-1] != dim:
                raise SciMLInputError(name, f"last dimension must be the irreps dimension {dim}, got {value.shape}")
        if self.internal_weights:
            if weight is not None:
                raise SciMLInputError("weight", "must be omitted when internal_weights=True")
            weight = self.weight
        elif weight is None or weight.shape[-1] != self.weight_numel:
            raise SciMLInputError("weight", f"must have last dimension weight_numel={self.weight_numel}")
        if self.shared_weights and weight.dim() != 1:
            raise SciMLInputError("weight", f"must have shape ({self.weight_numel},) with shared weights")
        try:
            batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        except RuntimeError as err:
            raise SciMLInputError("y", "leading dimensions do not broadcast with x's") from err
        if not self.shared_weights:
            batch = torch.broadcast_shapes(batch, weight.shape[:-1])
        off1, off2 = self._offsets(self.in1), self._offsets(self.in2)
        blocks: list[torch.Tensor | None] = [None] * len(self.out)
        start = 0
        for k, ((i1, i2, io), shape) in enumerate(zip(self.paths, self.path_shapes, strict=True)):
            m1, l1, _ = self.in1[i1]
            m2, l2, _ = self.in2[i2]
            mo, lo, _ = self.out[io]
            size = math.prod(shape)
            w = weight[..., start : start + size].reshape(*weight.shape[:-1], *shape)
            start += size
            a = x[..., off1[i1] : off1[i1 + 1]].reshape(*x.shape[:-1], m1, 2 * l1 + 1)
            b = y[..., off2[i2] : off2[i2 + 1]].reshape(*y.shape[:-1], m2, 2 * l2 + 1)
            coupling: torch.Tensor = getattr(self, f"_w3j_{k}")
            left = torch.einsum("...ui,ijk->...ujk", a, coupling)
            if self.mode == "uuu":
                term = torch.einsum("...ujk,...uj->...uk", left, b) * w.unsqueeze(-1)
            else:
                pair = torch.einsum("...ujk,...vj->...uvk", left, b)
                if self.mode == "uvw":
                    term = torch.einsum("...uvk,...uvw->...wk", pair, w)
                else:
                    term = torch.einsum("...uvk,...uv->...uk", pair, w)
            term = self.alphas[k] * term
            previous = blocks[io]
            blocks[io] = term if previous is None else previous + term
        dtype = torch.promote_types(x.dtype, y.dtype)
        pieces = []
        for io, (mo, lo, _) in enumerate(self.out):
            block = blocks[io]
            if block is None:
                pieces.append(x.new_zeros(*batch, mo * (2 * lo + 1), dtype=dtype))
            else:
                pieces.append(block.expand(*batch, mo, 2 * lo + 1).reshape(*batch, mo * (2 * lo + 1)))
        if not pieces:
            return x.new_zeros(*batch, 0, dtype=dtype)
        return torch.cat(pieces, dim=-1)
