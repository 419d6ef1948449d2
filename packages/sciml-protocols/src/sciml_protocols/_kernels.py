"""Positive-definite kernels: the ``Kernel`` protocol and the Gaussian and Laplace reference kernels."""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import torch

from ._errors import SciMLInputError
from ._validation import check_dtype, check_finite, check_positive, check_tensor

__all__ = ["GaussianKernel", "Kernel", "LaplaceKernel", "RandomFourierFeatures"]


@runtime_checkable
class Kernel(Protocol):
    """A positive-definite kernel k(x, y) on R^d.

    ``kernel(x, y)`` is the Gram matrix ``K[..., i, j] = k(x[..., i, :], y[..., j, :])`` for ``x`` of shape
    ``(..., n, d)`` and ``y`` of shape ``(..., m, d)`` (``y=None`` means ``y = x``); ``kernel.diag(x)`` is
    ``k(x_i, x_i)`` of shape ``(..., n)`` without forming the matrix. Kernels with an explicit (random) feature map
    also offer ``random_features``; see :class:`GaussianKernel`.

    Example:
        >>> isinstance(GaussianKernel(), Kernel), isinstance(LaplaceKernel(), Kernel)
        (True, True)
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Gram matrix, shape ``(..., n, m)``."""
        ...

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """Diagonal ``k(x_i, x_i)``, shape ``(..., n)``."""
        ...


def _as_parameter(name: str, value: float | torch.Tensor) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        check_dtype(name, value)
        if value.dim() > 1:
            raise SciMLInputError(
                name, f"must be a scalar or a vector of per-dimension values, got shape {tuple(value.shape)}"
            )
    check_positive(name, value)
    return value


def _check_points(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x)
    check_dtype("x", x)
    if x.dim() < 2:
        raise SciMLInputError("x", f"expected shape (..., n, d), got {tuple(x.shape)}")
    check_finite("x", x)
    if y is None:
        return x, x
    check_tensor("y", y)
    check_dtype("y", y)
    if y.dim() < 2:
        raise SciMLInputError("y", f"expected shape (..., m, d), got {tuple(y.shape)}")
    if y.shape[-1] != x.shape[-1]:
        raise SciMLInputError("y", f"has dimension d={y.shape[-1]} but x has d={x.shape[-1]}")
    if y.device != x.device:
        raise SciMLInputError("y", f"is on {y.device} but x is on {x.device}")
    if y.dtype != x.dtype:
        raise SciMLInputError("y", f"has dtype {y.dtype} but x has {x.dtype}")
    check_finite("y", y)
    return x, y


def _scaled(x: torch.Tensor, lengthscale: torch.Tensor | float) -> torch.Tensor:
    if isinstance(lengthscale, torch.Tensor):
        if lengthscale.dim() == 1 and lengthscale.shape[0] != x.shape[-1]:
            raise SciMLInputError(
                "lengthscale", f"has {lengthscale.shape[0]} entries but the points have d={x.shape[-1]}"
            )
        lengthscale = lengthscale.to(device=x.device, dtype=x.dtype)
    return x / lengthscale


class RandomFourierFeatures:
    r"""A fixed draw of random Fourier features: ``phi(x) @ phi(y).T`` approximates ``k(x, y)``.

    With frequencies ``w_1..w_D`` drawn from the kernel's spectral density (Bochner's theorem),

    .. math::
        \phi(x) = \sqrt{\sigma^2 / D}\,[\cos(W x), \sin(W x)] \in \mathbb{R}^{2D},\qquad
        \mathbb{E}[\phi(x)^\top \phi(y)] = k(x, y).

    Attributes:
        frequencies: ``W``, shape ``(D, d)``.
        variance: the kernel's output scale ``sigma^2``.

    Reference:
        Rahimi & Recht, "Random Features for Large-Scale Kernel Machines", NeurIPS 2007.

    Example:
        >>> phi = RandomFourierFeatures(torch.tensor([[1.0, 0.0]]), variance=1.0)
        >>> phi(torch.tensor([[0.0, 5.0]]))  # sqrt(1/1) * [cos(0), sin(0)]
        tensor([[1., 0.]])
    """

    def __init__(self, frequencies: torch.Tensor, variance: torch.Tensor | float) -> None:
        check_tensor("frequencies", frequencies)
        check_dtype("frequencies", frequencies)
        if frequencies.dim() != 2 or frequencies.shape[0] == 0:
            raise SciMLInputError("frequencies", f"expected shape (D, d) with D >= 1, got {tuple(frequencies.shape)}")
        check_finite("frequencies", frequencies)
        self.frequencies = frequencies
        self.variance = _as_parameter("variance", variance)

    @property
    def num_features(self) -> int:
        """Output width ``2D``."""
        return 2 * self.frequencies.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` (shape ``(..., n, d)``), shape ``(..., n, 2D)``."""
        x, _ = _check_points(x, None)
        if x.shape[-1] != self.frequencies.shape[-1]:
            raise SciMLInputError(
                "x", f"has d={x.shape[-1]} but the features were drawn for d={self.frequencies.shape[-1]}"
            )
        projection = x @ self.frequencies.to(dtype=x.dtype, device=x.device).T
        scale = torch.sqrt(torch.as_tensor(self.variance, dtype=x.dtype, device=x.device) / self.frequencies.shape[0])
        return scale * torch.cat([torch.cos(projection), torch.sin(projection)], dim=-1)


def _check_feature_args(dim: int, num_features: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("dim", f"must be a positive int, got {dim!r}")
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 2 or num_features % 2:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise SciMLInputError("num_features", f"must be an even int >= 2 (cos and sin pairs), got {num_features!r}")


class GaussianKernel:
    r"""Gaussian (RBF, squared-exponential) kernel.

    .. math::
        k(x, y) = \sigma^2 \exp\Big(-\tfrac12 \sum_i (x_i - y_i)^2 / \ell_i^2\Big)

    Args:
        lengthscale: ``ell``, a positive number, or a tensor of shape ``(d,)`` for one lengthscale per dimension
            (automatic relevance determination). Tensors may require grad.
        variance: output scale ``sigma^2 > 0``.

    Example:
        >>> k = GaussianKernel(lengthscale=2.0)
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> k(x)
        tensor([[1.0000, 0.6065],
                [0.6065, 1.0000]])
    """

    def __init__(self, lengthscale: float | torch.Tensor = 1.0, variance: float | torch.Tensor = 1.0) -> None:
        self.lengthscale = _as_parameter("lengthscale", lengthscale)
        self.variance = _as_parameter("variance", variance)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Gram matrix, shape ``(..., n, m)``."""
        x, y = _check_points(x, y)
        xs, ys = _scaled(x, self.lengthscale), _scaled(y, self.lengthscale)
        # The expanded form keeps the kernel smooth (and its gradient defined) at x == y, unlike a sqrt-based distance.
        sq = (xs * xs).sum(-1).unsqueeze(-1) + (ys * ys).sum(-1).unsqueeze(-2) - 2.0 * (xs @ ys.transpose(-1, -2))
        return self.variance * torch.exp(-0.5 * sq.clamp_min(0.0))

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """``sigma^2`` for every point, shape ``(..., n)``."""
        x, _ = _check_points(x, None)
        return torch.as_tensor(self.variance, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).clone()

    def random_features(
        self,
        dim: int,
        num_features: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> RandomFourierFeatures:
        """Draw random Fourier features for points in ``R^dim`` (frequencies ``w ~ N(0, diag(1/ell^2))``).

        Args:
            dim: ``d``.
            num_features: output width ``2D`` (even).
            generator: source of randomness for reproducibility.
            dtype: dtype of the frequencies (default: the global default dtype).
            device: device of the frequencies.

        Example:
            >>> k = GaussianKernel(lengthscale=1.0)
            >>> phi = k.random_features(3, 4000, generator=torch.Generator().manual_seed(0))
            >>> x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
            >>> bool(((phi(x) @ phi(x).T - k(x)).abs().max() < 0.1))
            True
        """
        _check_feature_args(dim, num_features)
        omega = torch.randn(num_features // 2, dim, generator=generator, dtype=dtype, device=device)
        return RandomFourierFeatures(_scaled(omega, self.lengthscale), self.variance)


class LaplaceKernel:
    r"""Laplace (exponential) kernel, with the Euclidean or the Manhattan distance.

    .. math::
        k(x, y) = \sigma^2 \exp\big(-\lVert (x - y) / \ell \rVert_p\big), \qquad p \in \{1, 2\}

    ``norm="l2"`` is the Matérn-1/2 kernel used in kernel-machine theory; ``norm="l1"`` matches
    ``sklearn.metrics.pairwise.laplacian_kernel`` (with ``gamma = 1/ell``).

    Args:
        lengthscale: ``ell``, a positive number or a tensor of shape ``(d,)``.
        variance: output scale ``sigma^2 > 0``.
        norm: ``"l2"`` (default) or ``"l1"``.

    Example:
        >>> k = LaplaceKernel(lengthscale=1.0)
        >>> k(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([[0.0067]])
    """

    def __init__(
        self,
        lengthscale: float | torch.Tensor = 1.0,
        variance: float | torch.Tensor = 1.0,
        *,
        norm: Literal["l1", "l2"] = "l2",
    ) -> None:
        if norm not in ("l1", "l2"):
            raise SciMLInputError("norm", f"must be 'l1' or 'l2', got {norm!r}")
        self.lengthscale = _as_parameter("lengthscale", lengthscale)
        self.variance = _as_parameter("variance", variance)
        self.norm = norm

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Gram matrix, shape ``(..., n, m)``."""
        x, y = _check_points(x, y)
        xs, ys = _scaled(x, self.lengthscale), _scaled(y, self.lengthscale)
        p = 1.0 if self.norm == "l1" else 2.0
        # Exact differences, not the matmul expansion: the kernel has a cusp at x == y and is sensitive there.
        distance = torch.cdist(xs, ys, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        return self.variance * torch.exp(-distance)

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """``sigma^2`` for every point, shape ``(..., n)``."""
        x, _ = _check_points(x, None)
        return torch.as_tensor(self.variance, dtype=x.dtype, device=x.device).expand(x.shape[:-1]).clone()

    def random_features(
        self,
        dim: int,
        num_features: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> RandomFourierFeatures:
        """Draw random Fourier features (see :class:`RandomFourierFeatures`).

        The spectral density is a product of Cauchy laws of scale ``1/ell`` for ``norm="l1"`` and a multivariate
        Cauchy law (Student t with one degree of freedom) for ``norm="l2"``: ``w = g / (ell |u|)`` with
        ``g ~ N(0, I_d)`` and ``u ~ N(0, 1)``.

        Example:
            >>> k = LaplaceKernel(lengthscale=2.0, norm="l1")
            >>> phi = k.random_features(2, 20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> x = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
            >>> bool(((phi(x) @ phi(x).T - k(x)).abs().max() < 0.05))
            True
        """
        _check_feature_args(dim, num_features)
        count = num_features // 2
        if self.norm == "l1":
            uniform = torch.rand(count, dim, generator=generator, dtype=dtype, device=device)
            omega = torch.tan(math.pi * (uniform - 0.5))
        else:
            gaussian = torch.randn(count, dim, generator=generator, dtype=dtype, device=device)
            chi = torch.randn(count, 1, generator=generator, dtype=dtype, device=device).abs()
            omega = gaussian / chi
        return RandomFourierFeatures(_scaled(omega, self.lengthscale), self.variance)
