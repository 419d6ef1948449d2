r"""Cost objects for entropic optimal transport: a dense matrix, or point clouds evaluated tile by tile.

Every cost exposes the operations the solvers need, all in the log domain (they never form
:math:`\exp(-C/\varepsilon)`, which underflows for small :math:`\varepsilon`):

* ``softmin_rows(g, eps, log_b)``:
  :math:`s_i = -\varepsilon \log \sum_j \exp\big((g_j + \varepsilon \log b_j - C_{ij})/\varepsilon\big)`;
* ``softmin_cols(f, eps, log_a)``: the same over rows, for each column :math:`j`;
* ``matvec_plan(f, g, eps, log_a, log_b, v)``: :math:`P v` (or :math:`P^\top v`) with
  :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`;
* ``inner(f, g, eps, log_a, log_b)``: :math:`\langle P, C\rangle`;
* ``matrix()``: the cost matrix itself (refused above :data:`MATERIALIZE_LIMIT` entries).

Batches: a cost is unbatched (``C`` of shape ``(n, m)``, clouds ``(n, d)``) or batched (``(B, n, m)``,
``(B, n, d)``); potentials and weights have shape ``(n,)`` or ``(B, n)`` and broadcast against the cost's batch.
The result is unbatched only when the cost and every input are unbatched.

Point clouds never store the :math:`n \times m` matrix: a streaming (online) log-sum-exp runs over
``tile x tile`` blocks, so memory is linear in :math:`n + m`, and the backward pass of ``softmin_*`` recomputes the
blocks instead of storing them.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from sciml_protocols import (
    SciMLInputError,
    check_dtype,
    check_finite,
    check_nonempty,
    check_tensor,
    resolve_backend,
)

__all__ = ["MATERIALIZE_LIMIT", "Cost", "DenseCost", "PointCloudCost"]

MATERIALIZE_LIMIT: int = 2**28
"""The largest number of entries (batch included) that ``matrix()`` and ``plan()`` will materialize."""

CostFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _lift(t: torch.Tensor) -> torch.Tensor:
    """``(n,)`` -> ``(1, n)``; ``(B, n)`` unchanged."""
    return t.unsqueeze(0) if t.dim() == 1 else t


def _check_vec(name: str, t: object, size: int, cost: Cost) -> torch.Tensor:
    t = check_tensor(name, t)
    if t.dim() not in (1, 2) or t.shape[-1] != size:
        raise SciMLInputError(name, f"must have shape ({size},) or (B, {size}), got {tuple(t.shape)}")
    if t.dtype != cost.dtype:
        raise SciMLInputError(name, f"must have the cost's dtype {cost.dtype}, got {t.dtype}")
    if t.device != cost.device:
        raise SciMLInputError(name, f"must be on the cost's device {cost.device}, got {t.device}")
    if t.dim() == 2 and cost.batch_size > 1 and t.shape[0] not in (1, cost.batch_size):
        raise SciMLInputError(name, f"batch size {t.shape[0]} does not match the cost's batch {cost.batch_size}")
    return t


def _check_eps(eps: float) -> float:
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1:
            raise SciMLInputError("eps", "must be a scalar")
        eps = float(eps)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("eps", f"must be a finite float > 0, got {eps!r}")
    return float(eps)


class Cost(abc.ABC):
    """Common interface of the cost objects (see the module docstring for the operations and shapes)."""

    _tile_n: int
    _tile_m: int

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(n, m)``, without the batch dimension."""

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """The cost's own batch size (1 when unbatched)."""

    @property
    @abc.abstractmethod
    def batched(self) -> bool:
        """Whether the cost carries a batch dimension."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating dtype of the cost."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device of the cost."""

    @property
    @abc.abstractmethod
    def params(self) -> tuple[torch.Tensor, ...]:
        """The tensors defining the cost: ``(C,)`` or ``(x, y)``."""

    @abc.abstractmethod
    def with_params(self, *params: torch.Tensor) -> Cost:
        """The same kind of cost built on other tensors (same order as :attr:`params`)."""

    @abc.abstractmethod
    def scale(self) -> float:
        """A cheap upper estimate of the cost range (used for epsilon scaling)."""

    @abc.abstractmethod
    def _block(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        """The cost block ``C[..., i0:i1, j0:j1]`` with a leading batch dim (``(Bc, ti, tj)``)."""

    @abc.abstractmethod
    def _softmin(self, h: torch.Tensor, eps: float, transpose: bool) -> torch.Tensor:
        """``-eps LSE_j (h_j - C_ij)/eps`` (rows) or over ``i`` (``transpose``); ``h`` is ``(Bh, m)``."""

    def _out(self, t: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.batched and all(x.dim() == 1 for x in inputs):
            return t.squeeze(0)
        return t

    def _iter_blocks(self, transpose: bool) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
        """Yield ``(o0, o1, i0, i1, block)``; block is ``(Bc, n-block, m-block)`` always (not transposed)."""
        n, m = self.shape
        outer, inner, to, ti = (m, n, self._tile_m, self._tile_n) if transpose else (n, m, self._tile_n, self._tile_m)
        for o0 in range(0, outer, to):
            o1 = min(o0 + to, outer)
            for i0 in range(0, inner, ti):
                i1 = min(i0 + ti, inner)
                blk = self._block(i0, i1, o0, o1) if transpose else self._block(o0, o1, i0, i1)
                yield o0, o1, i0, i1, blk

    # ----------------------------------------------------------------------------------------------- public API
    def softmin_rows(self, g: torch.Tensor, eps: float, log_b: torch.Tensor) -> torch.Tensor:
        r"""Row soft-minimum :math:`s_i = -\varepsilon\log\sum_j e^{(g_j + \varepsilon\log b_j - C_{ij})/\varepsilon}`.

        Args:
            g: column potentials, ``(m,)`` or ``(B, m)``.
            eps: :math:`\varepsilon > 0`.
            log_b: log column weights, ``(m,)`` or ``(B, m)`` (``-inf`` for zero weights).

        Returns:
            ``(n,)`` or ``(B, n)``. Differentiable w.r.t. ``g``, ``log_b`` and the cost's tensors.

        Raises:
            SciMLInputError: wrong shapes, dtypes, devices, or ``eps <= 0``.
        """
        eps = _check_eps(eps)
        m = self.shape[1]
        g = _check_vec("g", g, m, self)
        log_b = _check_vec("log_b", log_b, m, self)
        h = _lift(g) + eps * _lift(log_b)
        return self._out(self._softmin(h, eps, False), g, log_b)

    def softmin_cols(self, f: torch.Tensor, eps: float, log_a: torch.Tensor) -> torch.Tensor:
        r"""Column soft-min :math:`t_j = -\varepsilon\log\sum_i e^{(f_i + \varepsilon\log a_i - C_{ij})/\varepsilon}`.

        Args:
            f: row potentials, ``(n,)`` or ``(B, n)``.
            eps: :math:`\varepsilon > 0`.
            log_a: log row weights, ``(n,)`` or ``(B, n)``.

        Returns:
            ``(m,)`` or ``(B, m)``. Differentiable w.r.t. ``f``, ``log_a`` and the cost's tensors.

        Raises:
            SciMLInputError: wrong shapes, dtypes, devices, or ``eps <= 0``.
        """
        eps = _check_eps(eps)
        n = self.shape[0]
        f = _check_vec("f", f, n, self)
        log_a = _check_vec("log_a", log_a, n, self)
        h = _lift(f) + eps * _lift(log_a)
        return self._out(self._softmin(h, eps, True), f, log_a)

    def _log_plan_parts(
        self, f: torch.Tensor, g: torch.Tensor, eps: float, log_a: torch.Tensor, log_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        eps = _check_eps(eps)
        n, m = self.shape
        f = _check_vec("f", f, n, self)
        g = _check_vec("g", g, m, self)
        log_a = _check_vec("log_a", log_a, n, self)
        log_b = _check_vec("log_b", log_b, m, self)
        return _lift(f) / eps + _lift(log_a), _lift(g) / eps + _lift(log_b), eps

    def matvec_plan(
        self,
        f: torch.Tensor,
        g: torch.Tensor,
        eps: float,
        log_a: torch.Tensor,
        log_b: torch.Tensor,
        v: torch.Tensor,
        *,
        transpose: bool = False,
    ) -> torch.Tensor:
        r"""Apply the plan :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)` tile by tile.

        Args:
            f: ``(n,)`` or ``(B, n)``.
            g: ``(m,)`` or ``(B, m)``.
            eps: :math:`\varepsilon > 0`.
            log_a: ``(n,)`` or ``(B, n)``.
            log_b: ``(m,)`` or ``(B, m)``.
            v: ``(m,)``, ``(m, k)``, ``(B, m)`` or ``(B, m, k)`` (``n`` instead of ``m`` when ``transpose``). A 2-D
                ``v`` is read as ``(B, m)`` when the problem is batched, else as ``(m, k)``.
            transpose: compute :math:`P^\top v` instead.

        Returns:
            ``P @ v`` with the matching shape (``n`` rows; ``m`` when ``transpose``).

        Raises:
            SciMLInputError: wrong shapes, dtypes or devices.
        """
        lf, lg, eps = self._log_plan_parts(f, g, eps, log_a, log_b)
        n, m = self.shape
        size = n if transpose else m
        v = check_tensor("v", v)
        batched = self.batched or f.dim() == 2 or g.dim() == 2
        vector = v.dim() == (2 if batched else 1)
        if v.dim() < 1 or v.dim() > 3 or (v.dim() == 3 and not batched) or v.shape[1 if batched else 0] != size:
            raise SciMLInputError("v", f"has shape {tuple(v.shape)}, expected {size} rows (batched={batched})")
        if v.dtype != self.dtype or v.device != self.device:
            raise SciMLInputError("v", "must have the cost's dtype and device")
        vv = v.unsqueeze(-1) if vector else v
        if not batched:
            vv = vv.unsqueeze(0)
        pieces: list[torch.Tensor] = []
        acc: torch.Tensor | None = None
        current = -1
        for o0, o1, i0, i1, blk in self._iter_blocks(transpose):
            if o0 != current:
                if acc is not None:
                    pieces.append(acc)
                acc, current = None, o0
            if transpose:
                logp = lf[:, i0:i1, None] + lg[:, None, o0:o1] - blk / eps
                part = torch.exp(logp).transpose(-1, -2) @ vv[:, i0:i1]
            else:
                logp = lf[:, o0:o1, None] + lg[:, None, i0:i1] - blk / eps
                part = torch.exp(logp) @ vv[:, i0:i1]
            acc = part if acc is None else acc + part
        assert acc is not None
        pieces.append(acc)
        out = torch.cat(pieces, dim=1)
        if vector:
            out = out.squeeze(-1)
        return out if batched else out.squeeze(0)

    def inner(
        self, f: torch.Tensor, g: torch.Tensor, eps: float, log_a: torch.Tensor, log_b: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\langle P, C\rangle = \sum_{ij} P_{ij} C_{ij}`, tile by tile.

        Args:
            f: ``(n,)`` or ``(B, n)``.
            g: ``(m,)`` or ``(B, m)``.
            eps: :math:`\varepsilon > 0`.
            log_a: ``(n,)`` or ``(B, n)``.
            log_b: ``(m,)`` or ``(B, m)``.

        Returns:
            A scalar tensor, or ``(B,)`` for batches. Differentiable (autograd through the blocks).
        """
        lf, lg, eps = self._log_plan_parts(f, g, eps, log_a, log_b)
        total: torch.Tensor | None = None
        for o0, o1, i0, i1, blk in self._iter_blocks(False):
            logp = lf[:, o0:o1, None] + lg[:, None, i0:i1] - blk / eps
            part = (torch.exp(logp) * blk).sum((-2, -1))
            total = part if total is None else total + part
        assert total is not None
        return self._out(total, f, g, log_a, log_b)

    def plan_matrix(
        self, f: torch.Tensor, g: torch.Tensor, eps: float, log_a: torch.Tensor, log_b: torch.Tensor
    ) -> torch.Tensor:
        """Materialize the plan, ``(n, m)`` or ``(B, n, m)`` (refused above :data:`MATERIALIZE_LIMIT` entries)."""
        lf, lg, eps = self._log_plan_parts(f, g, eps, log_a, log_b)
        self._check_size(max(lf.shape[0], lg.shape[0], self.batch_size))
        c = self._full()
        p = torch.exp(lf[:, :, None] + lg[:, None, :] - c / eps)
        return self._out(p, f, g, log_a, log_b)

    def _check_size(self, batch: int) -> None:
        n, m = self.shape
        if batch * n * m > MATERIALIZE_LIMIT:
            raise SciMLInputError(
                "cost", f"materializing {batch}x{n}x{m} entries exceeds the limit of {MATERIALIZE_LIMIT}"
            )

    def _full(self) -> torch.Tensor:
        n, m = self.shape
        return self._block(0, n, 0, m)

    def matrix(self) -> torch.Tensor:
        """The cost matrix, ``(n, m)`` or ``(B, n, m)``.

        Raises:
            SciMLInputError: above :data:`MATERIALIZE_LIMIT` entries.
        """
        self._check_size(self.batch_size)
        c = self._full()
        return c if self.batched else c.squeeze(0)


class DenseCost(Cost):
    r"""A cost given as a matrix :math:`C`, shape ``(n, m)`` or batched ``(B, n, m)``.

    Args:
        C: finite floating cost matrix.

    Raises:
        SciMLInputError: not a floating tensor of 2 or 3 dims, empty, or non-finite entries.

    Example:
        >>> cost = DenseCost(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        >>> cost.shape
        (2, 2)
        >>> cost.softmin_rows(torch.zeros(2), 1e-3, torch.zeros(2))  # min_j C_ij
        tensor([0., 0.])
    """

    def __init__(self, C: torch.Tensor) -> None:
        C = check_tensor("C", C)
        check_dtype("C", C, "floating")
        if C.dim() not in (2, 3):
            raise SciMLInputError("C", f"must have shape (n, m) or (B, n, m), got {tuple(C.shape)}")
        check_nonempty("C", C)
        check_finite("C", C)
        self.C = C
        self._c3 = C if C.dim() == 3 else C.unsqueeze(0)
        self._tile_n = C.shape[-2]
        self._tile_m = C.shape[-1]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.C.shape[-2]), int(self.C.shape[-1]))

    @property
    def batch_size(self) -> int:
        return int(self._c3.shape[0])

    @property
    def batched(self) -> bool:
        return self.C.dim() == 3

    @property
    def dtype(self) -> torch.dtype:
        return self.C.dtype

    @property
    def device(self) -> torch.device:
        return self.C.device

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        return (self.C,)

    def with_params(self, *params: torch.Tensor) -> DenseCost:
        (c,) = params
        return DenseCost(c)

    def scale(self) -> float:
        c = self.C.detach()
        return float(c.max() - c.min()) or 1.0

    def _block(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        return self._c3[:, i0:i1, j0:j1]

    def _softmin(self, h: torch.Tensor, eps: float, transpose: bool) -> torch.Tensor:
        if transpose:
            z = (h[:, :, None] - self._c3) / eps
            return -eps * torch.logsumexp(z, dim=-2)
        z = (h[:, None, :] - self._c3) / eps
        return -eps * torch.logsumexp(z, dim=-1)

    def __repr__(self) -> str:
        return f"DenseCost(shape={self.shape}, batch={self.batch_size if self.batched else None}, dtype={self.dtype})"


# ------------------------------------------------------------------------------------------------- point clouds
def _sqeuclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x2 = (x * x).sum(-1)
    y2 = (y * y).sum(-1)
    return (x2[..., :, None] + y2[..., None, :] - 2.0 * (x @ y.transpose(-1, -2))).clamp_min(0.0)


def _euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y, p=2.0)


def _lp(p: float, q: float) -> CostFn:
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, y, p=p)
        return d if q == 1 else d**q

    return fn


def _online_softmin_torch(
    h: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, fn: CostFn, tile: int, sqeuclidean: bool = False
) -> torch.Tensor:
    r"""``s_i = -eps LSE_j (h_j - c(x_i, y_j))/eps`` with a streaming log-sum-exp over ``tile x tile`` blocks.

    Each block's log-sum-exp is taken by ``torch.logsumexp`` and merged into the running value with
    ``torch.logaddexp``. For the squared Euclidean cost the block is one batched GEMM: with the points centred (the
    cost is translation invariant), :math:`(h_j - C_{ij})/\varepsilon = (h_j - |y_j|^2 + 2 x_i\cdot y_j)/\varepsilon
    - |x_i|^2/\varepsilon`, and the row term :math:`|x_i|^2` leaves the log-sum-exp.
    """
    n, m = x.shape[1], y.shape[1]
    batch = max(h.shape[0], x.shape[0])
    x2 = hb = yt = h  # placeholders, replaced below when the squared Euclidean fast path is taken
    if sqeuclidean:
        centre = torch.cat([x, y], dim=1).mean(dim=1, keepdim=True)
        x = x - centre
        y = y - centre
        x2 = (x * x).sum(-1)  # (Bc, n)
        hb = (h - (y * y).sum(-1)) / eps  # (B, m)
        yt = y.transpose(-1, -2)
        if hb.shape[0] != batch:
            hb = hb.expand(batch, m)
        if x.shape[0] != batch:
            x, x2, yt = x.expand(batch, -1, -1), x2.expand(batch, -1), yt.expand(batch, -1, -1)
    outs: list[torch.Tensor] = []
    for i0 in range(0, n, tile):
        xi = x[:, i0 : i0 + tile]
        run: torch.Tensor | None = None
        for j0 in range(0, m, tile):
            if sqeuclidean:
                z = torch.baddbmm(hb[:, None, j0 : j0 + tile], xi, yt[:, :, j0 : j0 + tile], alpha=2.0 / eps)
            else:
                z = (h[:, None, j0 : j0 + tile] - fn(xi, y[:, j0 : j0 + tile])) / eps  # (B, ti, tj)
            part = torch.logsumexp(z, dim=-1)
            run = part if run is None else torch.logaddexp(run, part)
        assert run is not None
        out_i = -eps * run
        if sqeuclidean:
            out_i = out_i + x2[:, i0 : i0 + tile]
        outs.append(out_i)
    out = torch.cat(outs, dim=1)
    return out.expand(batch, n) if out.shape[0] != batch else out


def _reduce_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a broadcast gradient back to the batch size of ``like``."""
    if grad.shape[0] != like.shape[0]:
        grad = grad.sum(0, keepdim=True)
    return grad


class _OnlineSoftmin(torch.autograd.Function):
    """Streaming soft-minimum whose backward recomputes the cost blocks (memory linear in n + m)."""

    @staticmethod
    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any,
        h: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        fn: CostFn,
        tile: int,
        kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None,
        sqeuclidean: bool,
    ) -> torch.Tensor:
        with torch.no_grad():
            out = kernel(h, x, y) if kernel is not None else _online_softmin_torch(h, x, y, eps, fn, tile, sqeuclidean)
        ctx.save_for_backward(h, x, y, out)
        ctx.eps, ctx.fn, ctx.tile = eps, fn, tile
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # pyright: ignore[reportIncompatibleMethodOverride]
        h, x, y, out = ctx.saved_tensors
        eps: float = ctx.eps
        fn: CostFn = ctx.fn
        tile: int = ctx.tile
        need_h, need_x, need_y = ctx.needs_input_grad[:3]
        n, m = x.shape[1], y.shape[1]
        gh = torch.zeros_like(h) if need_h else None
        gx = torch.zeros_like(x) if need_x else None
        gy = torch.zeros_like(y) if need_y else None
        for i0 in range(0, n, tile):
            i1 = min(i0 + tile, n)
            for j0 in range(0, m, tile):
                j1 = min(j0 + tile, m)
                with torch.enable_grad():
                    xi = x[:, i0:i1].detach().requires_grad_(need_x)
                    yj = y[:, j0:j1].detach().requires_grad_(need_y)
                    c = fn(xi, yj)
                # weights w_ij = exp((h_j - C_ij + s_i)/eps): the softmax of row i; ds_i/dh_j = -w, ds_i/dC_ij = w.
                w = torch.exp((h[:, None, j0:j1] - c.detach() + out[:, i0:i1, None]) / eps)
                gw = grad_out[:, i0:i1, None] * w  # (B, ti, tj)
                if gh is not None:
                    gh[:, j0:j1] -= _reduce_to(gw.sum(1), h)
                if need_x or need_y:
                    gc = _reduce_to(gw, c)
                    inputs = [t for t, need in ((xi, need_x), (yj, need_y)) if need]
                    grads = torch.autograd.grad(c, inputs, gc)
                    k = 0
                    if gx is not None:
                        gx[:, i0:i1] += grads[k]
                        k += 1
                    if gy is not None:
                        gy[:, j0:j1] += grads[k]
        return gh, gx, gy, None, None, None, None, None


class PointCloudCost(Cost):
    r"""A cost :math:`C_{ij} = c(x_i, y_j)` between point clouds, evaluated tile by tile and never stored.

    Costs: ``"sqeuclidean"`` :math:`\|x - y\|_2^2` (no 1/2, as POT's ``ot.dist``), ``"euclidean"``
    :math:`\|x - y\|_2`, ``("lp", p, q)`` :math:`\|x - y\|_p^q`, or a callable ``c(x_tile, y_tile)`` returning the
    block of costs: for tiles of shape ``(Bc, tn, d)`` and ``(Bc, tm, d)`` (a leading batch dim is always present)
    it must return ``(Bc, tn, tm)`` and be differentiable with torch.autograd.

    ``softmin_rows``/``softmin_cols`` use a streaming log-sum-exp over ``tile x tile`` blocks (memory linear in
    :math:`n + m`); their backward pass recomputes the blocks. ``backend="triton"`` (or ``"auto"`` with CUDA tensors)
    runs the forward soft-minimum of the ``"sqeuclidean"`` and ``"euclidean"`` costs with the online Triton kernel
    :func:`sciml_ot._kernels.lse.online_softmin`; other costs and CPU tensors use the PyTorch reference.

    Args:
        x: source points, ``(n, d)`` or ``(B, n, d)``.
        y: target points, ``(m, d)`` or ``(B, m, d)`` (same batch and dtype as ``x``).
        cost: ``"sqeuclidean"``, ``"euclidean"``, ``("lp", p, q)`` or a callable.
        tile: block size (rows and columns) of the streaming evaluation.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Raises:
        SciMLInputError: wrong shapes, dtypes, devices, non-finite points, unknown cost, bad ``tile``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> y = torch.tensor([[0.0], [2.0], [3.0]])
        >>> cost = PointCloudCost(x, y)
        >>> cost.matrix()
        tensor([[0., 4., 9.],
                [1., 1., 4.]])
        >>> cost.softmin_rows(torch.zeros(3), 1e-3, torch.zeros(3))  # min_j C_ij
        tensor([0., 1.])
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        cost: str | tuple[str, float, float] | CostFn = "sqeuclidean",
        *,
        tile: int = 1024,
        backend: str = "auto",
    ) -> None:
        x = check_tensor("x", x)
        y = check_tensor("y", y)
        check_dtype("x", x, "floating")
        if y.dtype != x.dtype:
            raise SciMLInputError("y", f"must have the dtype of x ({x.dtype}), got {y.dtype}")
        if y.device != x.device:
            raise SciMLInputError("y", f"must be on the device of x ({x.device}), got {y.device}")
        if x.dim() not in (2, 3) or y.dim() != x.dim():
            raise SciMLInputError(
                "x", f"x and y must both be (n, d) or (B, n, d); got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if x.shape[-1] != y.shape[-1]:
            raise SciMLInputError("y", f"dimension {y.shape[-1]} differs from the dimension of x ({x.shape[-1]})")
        if x.dim() == 3 and x.shape[0] != y.shape[0]:
            raise SciMLInputError("y", f"batch {y.shape[0]} differs from the batch of x ({x.shape[0]})")
        check_nonempty("x", x)
        check_nonempty("y", y)
        check_finite("x", x)
        check_finite("y", y)
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise SciMLInputError("tile", f"must be a positive int, got {tile!r}")
        self.cost_name, self.fn = self._resolve_cost(cost)
        self.cost = cost
        self.backend = resolve_backend(backend, x, y)
        self.requested_backend = backend
        self.x, self.y = x, y
        self._x3 = x if x.dim() == 3 else x.unsqueeze(0)
        self._y3 = y if y.dim() == 3 else y.unsqueeze(0)
        self.tile = tile
        self._tile_n = tile
        self._tile_m = tile

    @staticmethod
    def _resolve_cost(cost: object) -> tuple[str, CostFn]:
        if isinstance(cost, str):
            if cost == "sqeuclidean":
                return cost, _sqeuclidean
            if cost == "euclidean":
                return cost, _euclidean
            raise SciMLInputError(
                "cost", f"must be 'sqeuclidean', 'euclidean', ('lp', p, q) or a callable; got {cost!r}"
            )
        if isinstance(cost, tuple):
            parts: tuple[Any, ...] = cost  # pyright: ignore[reportUnknownVariableType]
            if len(parts) == 3 and parts[0] == "lp":
                p, q = parts[1], parts[2]
                ok = all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in (p, q))
                if not ok or p < 1 or q <= 0:
                    raise SciMLInputError("cost", f"('lp', p, q) needs p >= 1 and q > 0, got {cost!r}")
                return "lp", _lp(float(p), float(q))
            raise SciMLInputError("cost", f"a tuple cost must be ('lp', p, q), got {cost!r}")
        if callable(cost):
            return "callable", cost  # pyright: ignore[reportReturnType]
        raise SciMLInputError("cost", f"must be a string, ('lp', p, q) or a callable; got {type(cost).__name__}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._x3.shape[1]), int(self._y3.shape[1]))

    @property
    def batch_size(self) -> int:
        return int(self._x3.shape[0])

    @property
    def batched(self) -> bool:
        return self.x.dim() == 3

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        return (self.x, self.y)

    def with_params(self, *params: torch.Tensor) -> PointCloudCost:
        x, y = params
        return PointCloudCost(x, y, self.cost, tile=self.tile, backend=self.requested_backend)

    def scale(self) -> float:
        pts = torch.cat([self._x3.detach(), self._y3.detach()], dim=1)
        lo = pts.amin(dim=(0, 1))
        hi = pts.amax(dim=(0, 1))
        value = float(self.fn(lo[None, None], hi[None, None]).reshape(()))
        return value if math.isfinite(value) and value > 0 else 1.0

    def _block(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        c = self.fn(self._x3[:, i0:i1], self._y3[:, j0:j1])
        expected = (self.batch_size, i1 - i0, j1 - j0)
        if tuple(c.shape) != expected:
            raise SciMLInputError("cost", f"the cost callable returned shape {tuple(c.shape)}, expected {expected}")
        return c

    def _kernel(self, eps: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        if self.backend != "triton" or self.cost_name not in ("sqeuclidean", "euclidean"):
            return None
        name = self.cost_name
        from ._kernels import lse  # pyright: ignore[reportAttributeAccessIssue]

        def kernel(h: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            batch = max(h.shape[0], x.shape[0])
            x = x.expand(batch, -1, -1).contiguous()
            y = y.expand(batch, -1, -1).contiguous()
            h = h.expand(batch, -1).contiguous()
            return lse.online_softmin(x, y, h, eps, name, backend="triton", check_values=False)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

        return kernel

    def _softmin(self, h: torch.Tensor, eps: float, transpose: bool) -> torch.Tensor:
        kernel = self._kernel(eps)
        sq = self.cost_name == "sqeuclidean"
        if transpose and self.cost_name == "callable":
            fn = self.fn

            def fn_t(yt: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
                return fn(xt, yt).transpose(-1, -2)

            out = _OnlineSoftmin.apply(h, self._y3, self._x3, eps, fn_t, self.tile, kernel, sq)
        elif transpose:  # the named costs are symmetric: c(x, y) = c(y, x)
            out = _OnlineSoftmin.apply(h, self._y3, self._x3, eps, self.fn, self.tile, kernel, sq)
        else:
            out = _OnlineSoftmin.apply(h, self._x3, self._y3, eps, self.fn, self.tile, kernel, sq)
        assert isinstance(out, torch.Tensor)
        return out

    def __repr__(self) -> str:
        return (
            f"PointCloudCost(shape={self.shape}, batch={self.batch_size if self.batched else None}, "
            f"cost={self.cost_name!r}, tile={self.tile}, backend={self.backend!r}, dtype={self.dtype})"
        )
