r"""Irreducible representations of O(3) and feature layouts, compatible with e3nn.

An :class:`Irrep` :math:`(l, p)` is the degree-:math:`l` representation of :math:`SO(3)` (dimension :math:`2l+1`)
with parity :math:`p = \pm 1` under inversion, written ``"1o"`` (:math:`l = 1, p = -1`) or ``"2e"``. An
:class:`Irreps` is a direct sum such as ``"16x0e+16x1o+8x2e"``. Features are tensors ``(..., irreps.dim)``; for each
term ``mul x (l, p)`` there is a contiguous block of ``mul * (2l+1)`` entries ordered ``[u, m]`` (multiplicity
major, e3nn's ``mul_ir`` layout). cuEquivariance's ``ir_mul`` layout orders each block ``[m, u]``;
:func:`mul_ir_to_ir_mul` and :func:`ir_mul_to_mul_ir` convert between the two.

The string syntax, printing, dimensions, slices and ``simplify`` follow e3nn (Geiger & Smidt, "e3nn: Euclidean
Neural Networks", arXiv:2207.09453), including e3nn's ``y`` shorthand for the parity :math:`p = (-1)^l` of the
spherical harmonics (``"2y"`` is ``"2e"``, ``"1y"`` is ``"1o"``); printing always writes ``e`` or ``o``.
"""

# ruff: noqa: E741  (l is the degree, the standard name)
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import torch
from sciml_protocols import SciMLInputError, check_int

from ._so3 import _check_rotation, _wigner_D_blocks

__all__ = [
    "Irrep",
    "Irreps",
    "MulIr",
    "gaunt_irreps",
    "ir_mul_to_mul_ir",
    "mul_ir_to_ir_mul",
]

_IRREP_RE = re.compile(r"^(\d+)([eoy])$")
_TERM_RE = re.compile(r"^(?:(\d+)x)?(\d+)([eoy])$")


def _parity_letter(p: int) -> str:
    return "e" if p == 1 else "o"


class Irrep(tuple):
    r"""An irreducible representation :math:`(l, p)` of :math:`O(3)`: degree :math:`l \ge 0`, parity :math:`p = \pm1`.

    Built from ``Irrep(l, p)``, a string ``"1o"`` / ``"2e"``, a tuple ``(l, p)`` or another ``Irrep``. It is a
    tuple ``(l, p)``, so irreps compare and sort as ``(l, p)`` (``0e < 1o < 1e``) and hash like the tuple, as in
    e3nn (Geiger & Smidt, arXiv:2207.09453). Under :math:`g \in O(3)` it acts by
    :math:`p^{[\det g < 0]}\,D^l(\det(g)\,g)`.

    Args:
        l: degree, a non-negative int, or a string / tuple / ``Irrep`` (then ``p`` must be omitted).
        p: parity, ``1`` (even, ``"e"``) or ``-1`` (odd, ``"o"``).

    Raises:
        SciMLInputError: an unparsable string, a negative degree or a parity other than :math:`\pm1`.

    Example:
        >>> ir = Irrep("1o")
        >>> ir.l, ir.p, ir.dim, str(ir), ir == Irrep(1, -1)
        (1, -1, 3, '1o', True)
        >>> sorted([Irrep("1e"), Irrep("1o"), Irrep("0e")])
        [0e, 1o, 1e]
    """

    def __new__(cls, l: int | str | tuple[int, int] | Irrep, p: int | None = None) -> Irrep:
        if isinstance(l, Irrep) and p is None:
            return l
        if isinstance(l, str) and p is None:
            match = _IRREP_RE.match(re.sub(r"\s+", "", l))
            if match is None:
                raise SciMLInputError("ir", f"cannot parse {l!r} as an irrep: expected '<l><e|o>' such as '1o'")
            l = int(match.group(1))
            p = {"e": 1, "o": -1, "y": (-1) ** l}[match.group(2)]
        elif isinstance(l, tuple) and p is None:
            try:  # unpack by iteration: e3nn's Irrep (a tuple) refuses len()
                l, p = tuple(iter(l))
            except ValueError as err:
                raise SciMLInputError("ir", f"expected a pair (l, p), got {l!r}") from err
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise SciMLInputError("l", f"must be a non-negative int, got {l!r}")
        if p not in (1, -1) or isinstance(p, bool):
            raise SciMLInputError("p", f"must be 1 (even) or -1 (odd), got {p!r}")
        return super().__new__(cls, (l, p))

    @property
    def l(self) -> int:  # noqa: E743
        """The degree :math:`l`."""
        return self[0]

    @property
    def p(self) -> int:
        """The parity, :math:`+1` (even) or :math:`-1` (odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """Dimension :math:`2l + 1`."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """True for ``0e``."""
        return self[0] == 0 and self[1] == 1

    def __str__(self) -> str:
        return f"{self[0]}{_parity_letter(self[1])}"

    def __repr__(self) -> str:
        return str(self)

    def __mul__(self, other: object) -> Iterator[Irrep]:  # type: ignore[override]
        """Irreps in the tensor product: :math:`l = |l_1-l_2|..l_1+l_2` with parity :math:`p_1 p_2`."""
        o = Irrep(other)  # type: ignore[arg-type]
        p = self.p * o.p
        return iter([Irrep(l, p) for l in range(abs(self.l - o.l), self.l + o.l + 1)])

    def __rmul__(self, other: object) -> Any:
        raise TypeError("use Irreps for repetitions: Irreps([(mul, ir)])")

    def __add__(self, other: object) -> Any:
        return Irreps([self]) + Irreps(other)  # type: ignore[arg-type]

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Representation matrix of :math:`R \in O(3)`: :math:`p^{[\det R < 0]}\,D^l(\det(R)\,R)`.

        Args:
            R: ``(..., 3, 3)`` orthogonal matrices (rotations or rotoreflections).

        Returns:
            ``(..., 2l+1, 2l+1)`` tensor.

        Raises:
            SciMLInputError: ``R`` not ``(..., 3, 3)`` floating or not orthogonal.

        Example:
            >>> import torch
            >>> Irrep("1o").D_from_matrix(-torch.eye(3)).diagonal().tolist()
            [-1.0, -1.0, -1.0]
        """
        return Irreps([(1, self)]).D_from_matrix(R)


class MulIr(NamedTuple):
    """A term ``mul x ir`` of an :class:`Irreps`: multiplicity and irrep.

    Example:
        >>> term = MulIr(2, Irrep("1o"))
        >>> str(term), term.dim
        ('2x1o', 6)
    """

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        """``mul * (2l + 1)``."""
        return self.mul * self.ir.dim

    def __str__(self) -> str:
        return f"{self.mul}x{self.ir}"

    def __repr__(self) -> str:
        return str(self)


class _Sorted(NamedTuple):
    irreps: Irreps
    p: tuple[int, ...]
    inv: tuple[int, ...]


def _to_mul_ir(item: object) -> MulIr:
    if isinstance(item, MulIr):
        return MulIr(item.mul, Irrep(item.ir))
    if isinstance(item, Irrep | str):
        return MulIr(1, Irrep(item))
    if isinstance(item, tuple) and len(item) == 2:
        first, second = item
        if isinstance(first, int) and not isinstance(first, bool) and isinstance(second, Irrep | str | tuple):
            if first < 0:
                raise SciMLInputError("irreps", f"multiplicity must be non-negative, got {first}")
            return MulIr(first, Irrep(second))  # type: ignore[arg-type]
        if isinstance(first, int) and isinstance(second, int):
            return MulIr(1, Irrep(first, second))
    raise SciMLInputError("irreps", f"cannot read {item!r} as (mul, irrep), an Irrep or a string")


class Irreps(tuple):
    r"""A direct sum of irreps with multiplicities, e.g. ``"16x0e+16x1o+8x2e"``, laid out like e3nn.

    Built from a string (terms ``[<mul>x]<l><e|o>`` joined by ``+``, whitespace ignored, ``"0e"`` meaning
    ``"1x0e"``, multiplicity 0 allowed), another ``Irreps``, or a list of ``(mul, ir)`` pairs / ``Irrep`` / strings.
    It is a tuple of :class:`MulIr` (iterate ``for mul, ir in irreps``). ``str()`` prints ``"16x0e+16x1o+8x2e"``
    exactly as e3nn does (Geiger & Smidt, arXiv:2207.09453). A feature vector has ``dim`` entries,
    :math:`\sum \text{mul}\,(2l+1)`, with one contiguous ``[u, m]`` block per term.

    Args:
        irreps: the description (default: empty).

    Raises:
        SciMLInputError: a string that does not parse (``"1x"``, ``"2z"``, ``"-1e"``, ``"x1o"``, ``"1o+"``) or a
            negative multiplicity.

    Example:
        >>> irreps = Irreps("16x0e + 16x1o+8x2e")
        >>> str(irreps), irreps.dim, irreps.lmax, irreps.num_irreps
        ('16x0e+16x1o+8x2e', 104, 2, 40)
        >>> irreps.slices()
        [slice(0, 16, None), slice(16, 64, None), slice(64, 104, None)]
        >>> str(Irreps("1e+1e+0x2o+1e").simplify())
        '3x1e'
    """

    def __new__(cls, irreps: str | Iterable[object] | Irreps | None = None) -> Irreps:
        if isinstance(irreps, Irreps):
            return irreps
        items: list[MulIr] = []
        if irreps is None:
            pass
        elif isinstance(irreps, str):
            text = re.sub(r"\s+", "", irreps)
            if text:
                for term in text.split("+"):
                    match = _TERM_RE.match(term)
                    if match is None:
                        raise SciMLInputError(
                            "irreps",
                            f"cannot parse {irreps!r}: term {term!r} is not of the form '[<mul>x]<l><e|o>' "
                            "(e.g. '16x0e+8x1o')",
                        )
                    mul = 1 if match.group(1) is None else int(match.group(1))
                    items.append(MulIr(mul, Irrep(match.group(2) + match.group(3))))
        elif isinstance(irreps, Irrep):
            items.append(MulIr(1, irreps))
        else:
            try:
                seq = list(irreps)
            except TypeError as err:
                raise SciMLInputError("irreps", f"expected a string or a list, got {type(irreps).__name__}") from err
            items = [_to_mul_ir(item) for item in seq]
        return super().__new__(cls, items)

    @property
    def dim(self) -> int:
        r"""Feature size :math:`\sum \text{mul}\,(2l+1)`."""
        return sum(mul * ir.dim for mul, ir in self)

    @property
    def num_irreps(self) -> int:
        r"""Total multiplicity :math:`\sum \text{mul}`."""
        return sum(mul for mul, _ in self)

    @property
    def ls(self) -> list[int]:
        """Degrees repeated by multiplicity, as in e3nn."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """Largest degree among the terms of positive multiplicity (as e3nn).

        Raises:
            SciMLInputError: no term of positive multiplicity.
        """
        ls = [ir.l for mul, ir in self if mul > 0]
        if not ls:
            raise SciMLInputError("irreps", f"has no irrep of positive multiplicity ({self!s}): no lmax")
        return max(ls)

    def slices(self) -> list[slice]:
        """Slices of the feature vector, one per term (empty slices for multiplicity 0)."""
        out = []
        start = 0
        for mul, ir in self:
            out.append(slice(start, start + mul * ir.dim))
            start += mul * ir.dim
        return out

    def simplify(self) -> Irreps:
        """Drop multiplicity-0 terms and merge consecutive equal irreps (e3nn's ``simplify``; no reordering)."""
        out: list[tuple[int, Irrep]] = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            else:
                out.append((mul, ir))
        return Irreps(out)

    def remove_zero_multiplicities(self) -> Irreps:
        """The same terms without those of multiplicity 0."""
        return Irreps([(mul, ir) for mul, ir in self if mul > 0])

    def sort(self) -> _Sorted:
        """Terms sorted by irrep (stable): ``(irreps, p, inv)`` with ``p`` the permutation and ``inv`` its inverse."""
        order = sorted(range(len(self)), key=lambda i: self[i].ir)
        inv = [0] * len(order)
        for new, old in enumerate(order):
            inv[old] = new
        return _Sorted(Irreps([self[i] for i in order]), tuple(inv), tuple(order))

    def count(self, ir: object) -> int:  # type: ignore[override]
        """Total multiplicity of ``ir``."""
        target = Irrep(ir)  # type: ignore[arg-type]
        return sum(mul for mul, i in self if i == target)

    def __contains__(self, ir: object) -> bool:
        target = Irrep(ir)  # type: ignore[arg-type]
        return any(i == target for _, i in self)

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return Irreps(item) if isinstance(index, slice) else item

    def __add__(self, other: object) -> Irreps:  # type: ignore[override]
        return Irreps(tuple(self) + tuple(Irreps(other)))  # type: ignore[arg-type]

    def __radd__(self, other: object) -> Irreps:
        return Irreps(tuple(Irreps(other)) + tuple(self))  # type: ignore[arg-type]

    def __mul__(self, other: object) -> Irreps:  # type: ignore[override]
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return Irreps(tuple(self) * other)

    def __rmul__(self, other: object) -> Irreps:  # type: ignore[override]
        return self.__mul__(other)

    def __str__(self) -> str:
        return "+".join(str(term) for term in self)

    def __repr__(self) -> str:
        return str(self)

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Block-diagonal representation matrix of :math:`R \in O(3)` on features of these irreps.

        Each term contributes ``mul`` copies of :math:`p^{[\det R<0]}\,D^l(\det(R)\,R)`, where :math:`D^l` is
        :func:`~sciml_equivariant._so3.wigner_D`; proper and improper orthogonal matrices are accepted, as in e3nn.
        Acting on a ``mul_ir`` feature: ``x @ D.T``.

        Args:
            R: ``(..., 3, 3)`` orthogonal matrices.

        Returns:
            ``(..., dim, dim)`` tensor, dtype and device of ``R``.

        Raises:
            SciMLInputError: ``R`` not ``(..., 3, 3)`` floating, or not orthogonal.

        Example:
            >>> import torch
            >>> D = Irreps("2x0e+1x1o").D_from_matrix(-torch.eye(3, dtype=torch.float64))
            >>> D.diagonal().tolist()
            [1.0, 1.0, -1.0, -1.0, -1.0]
        """
        _check_rotation("R", R, allow_improper=True)
        batch = R.shape[:-2]
        det_sign = torch.where(torch.linalg.det(R) < 0, -1.0, 1.0).to(R.dtype)
        proper = R * det_sign[..., None, None]
        degrees = sorted({ir.l for mul, ir in self if mul > 0})
        blocks = dict(zip(degrees, _wigner_D_blocks(tuple(degrees), proper), strict=True)) if degrees else {}
        out = R.new_zeros((*batch, self.dim, self.dim))
        start = 0
        for mul, ir in self:
            d = blocks.get(ir.l)
            if mul == 0 or d is None:
                continue
            if ir.p == -1:
                d = d * det_sign[..., None, None]
            for _ in range(mul):
                out[..., start : start + ir.dim, start : start + ir.dim] = d
                start += ir.dim
        return out


def _check_features(x: object, irreps: Irreps) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise SciMLInputError("x", f"must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != irreps.dim:
        raise SciMLInputError(
            "x", f"last dimension must be irreps.dim = {irreps.dim} for {irreps}, got {tuple(x.shape)}"
        )
    return x


def _relayout(x: torch.Tensor, irreps: Irreps, to_ir_mul: bool) -> torch.Tensor:
    parts = []
    start = 0
    lead = x.shape[:-1]
    for mul, ir in irreps:
        block = x[..., start : start + mul * ir.dim]
        start += mul * ir.dim
        shape = (*lead, mul, ir.dim) if to_ir_mul else (*lead, ir.dim, mul)
        parts.append(block.reshape(shape).transpose(-1, -2).reshape(*lead, mul * ir.dim))
    if not parts:
        return x.clone()
    return torch.cat(parts, dim=-1)


def mul_ir_to_ir_mul(x: torch.Tensor, irreps: Irreps | str) -> torch.Tensor:
    r"""Convert features from e3nn's ``mul_ir`` layout (``[u, m]`` per block) to cuEquivariance's ``ir_mul``.

    For each term ``mul x (l, p)`` the block of ``mul * (2l+1)`` entries is transposed:
    :math:`y[m \cdot \text{mul} + u] = x[u \cdot (2l+1) + m]`. Inverse of :func:`ir_mul_to_mul_ir`.

    Args:
        x: ``(..., irreps.dim)`` features.
        irreps: their irreps.

    Returns:
        ``(..., irreps.dim)`` tensor (a new tensor).

    Raises:
        SciMLInputError: ``x`` not a tensor or with a last dimension other than ``irreps.dim``.

    Example:
        >>> import torch
        >>> mul_ir_to_ir_mul(torch.arange(7.0), "1x0e+2x1o").tolist()  # block 2x1o: [u0m0,u0m1,u0m2,u1m0,...]
        [0.0, 1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    """
    irreps = Irreps(irreps)
    return _relayout(_check_features(x, irreps), irreps, to_ir_mul=True)


def ir_mul_to_mul_ir(x: torch.Tensor, irreps: Irreps | str) -> torch.Tensor:
    r"""Convert features from cuEquivariance's ``ir_mul`` layout (``[m, u]`` per block) to e3nn's ``mul_ir``.

    Inverse of :func:`mul_ir_to_ir_mul`: :math:`x[u \cdot (2l+1) + m] = y[m \cdot \text{mul} + u]`.

    Args:
        x: ``(..., irreps.dim)`` features in ``ir_mul`` layout.
        irreps: their irreps.

    Returns:
        ``(..., irreps.dim)`` tensor in ``mul_ir`` layout.

    Raises:
        SciMLInputError: ``x`` not a tensor or with a last dimension other than ``irreps.dim``.

    Example:
        >>> import torch
        >>> ir_mul_to_mul_ir(torch.tensor([0.0, 1.0, 4.0, 2.0, 5.0, 3.0, 6.0]), "1x0e+2x1o").tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    """
    irreps = Irreps(irreps)
    return _relayout(_check_features(x, irreps), irreps, to_ir_mul=False)


def gaunt_irreps(channels: int, lmax: int) -> Irreps:
    r"""Irreps ``Cx0e+Cx1o+Cx2e+...+CxLp`` of band-limited functions on the sphere with ``C`` channels.

    Degree :math:`l` has the parity :math:`(-1)^l` of the spherical harmonics, as in the Gaunt tensor product
    (Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
    Products", ICLR 2024, arXiv:2401.10216).

    Args:
        channels: multiplicity ``C >= 1`` of every degree.
        lmax: the largest degree ``L >= 0``.

    Returns:
        The :class:`Irreps`, of dimension :math:`C (L+1)^2`.

    Raises:
        SciMLInputError: ``channels < 1`` or ``lmax < 0``.

    Example:
        >>> str(gaunt_irreps(4, 3)), gaunt_irreps(4, 3).dim
        ('4x0e+4x1o+4x2e+4x3o', 64)
    """
    channels = check_int("channels", channels, minimum=1)
    lmax = check_int("lmax", lmax, minimum=0)
    return Irreps([(channels, Irrep(l, (-1) ** l)) for l in range(lmax + 1)])
