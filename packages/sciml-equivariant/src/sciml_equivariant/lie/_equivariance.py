r"""Affine transforms of images and equivariance-error measurements.

An affine map :math:`T = (t, A)` acts on an image by :math:`(Tf)(p) = f(A^{-1}(p - c - t) + c)`, with pixel
positions :math:`p = (\text{column}, \text{row})` and :math:`c` the image centre, the same convention as the
layers of :mod:`sciml_equivariant.lie`. ``mode="exact"`` resamples by index permutation and refuses maps that do not
send the pixel grid to itself (90-degree rotations, integer translations, integer shears, up to the border);
``mode="bilinear"`` uses :func:`torch.nn.functional.grid_sample` for generic maps.

Reference:
    M. Mironenco and P. Forré, "Lie Group Decompositions for Equivariant Neural Networks", ICLR 2024,
    arXiv:2310.11366.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from sciml_protocols import SciMLInputError, check_finite, check_in_choices, check_tensor

__all__ = [
    "affine_transform_images",
    "equivariance_error",
    "invariance_error_vs_samples",
    "lifting_equivariance_error",
]


def _source_points(
    height: int, width: int, matrix: torch.Tensor, translation: torch.Tensor, device: torch.device
) -> torch.Tensor:
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device),
        torch.arange(width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64, device=device)
    points = torch.stack([cols, rows], dim=-1) - centre - translation
    inverse = torch.linalg.inv(matrix)
    return points @ inverse.T + centre  # (H, W, 2) as (column, row)


def affine_transform_images(
    images: torch.Tensor,
    matrix: torch.Tensor,
    translation: torch.Tensor | None = None,
    *,
    mode: str = "bilinear",
) -> torch.Tensor:
    r"""Apply :math:`(Tf)(p) = f(A^{-1}(p - c - t) + c)` to images (zero outside the frame).

    Args:
        images: ``(..., H, W)``, floating.
        matrix: :math:`A`, ``(2, 2)`` invertible, acting on (column, row) coordinates.
        translation: :math:`t`, ``(2,)`` in pixels (column, row); zero when omitted.
        mode: ``"exact"`` (index permutation; the map must send pixel centres to pixel centres up to ``1e-6``),
            ``"bilinear"`` or ``"nearest"``.

    Returns:
        Transformed images, same shape and dtype.

    Raises:
        SciMLInputError: ``images`` has fewer than 2 dimensions or is not floating; ``matrix`` is not ``(2, 2)``,
            singular or not finite; ``translation`` is not ``(2,)``; an ``"exact"`` map leaves the pixel grid.

    Example:
        >>> image = torch.arange(9.0).reshape(3, 3)
        >>> quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> affine_transform_images(image, quarter_turn, mode="exact")
        tensor([[6., 3., 0.],
                [7., 4., 1.],
                [8., 5., 2.]])
    """
    images = check_tensor("images", images)
    if images.ndim < 2 or not images.dtype.is_floating_point:
        raise SciMLInputError("images", f"must be floating (..., H, W), got {images.dtype} {tuple(images.shape)}")
    matrix = check_tensor("matrix", matrix)
    if matrix.shape != (2, 2):
        raise SciMLInputError("matrix", f"must have shape (2, 2), got {tuple(matrix.shape)}")
    check_finite("matrix", matrix)
    matrix = matrix.detach().to(device=images.device, dtype=torch.float64)
    if abs(float(torch.linalg.det(matrix))) < 1e-12:
        raise SciMLInputError("matrix", "must be invertible")
    if translation is None:
        shift = torch.zeros(2, dtype=torch.float64, device=images.device)
    else:
        shift = check_tensor("translation", translation)
        if shift.shape != (2,):
            raise SciMLInputError("translation", f"must have shape (2,), got {tuple(shift.shape)}")
        check_finite("translation", shift)
        shift = shift.detach().to(device=images.device, dtype=torch.float64)
    check_in_choices("mode", mode, ("exact", "bilinear", "nearest"))
    height, width = images.shape[-2:]
    source = _source_points(height, width, matrix, shift, images.device)
    flat = images.reshape(-1, height, width)
    if mode == "exact":
        rounded = torch.round(source)
        if float((source - rounded).abs().max()) > 1e-6:
            raise SciMLInputError("matrix", "does not map the pixel grid onto itself; use mode='bilinear'")
        col, row = rounded[..., 0].long(), rounded[..., 1].long()
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        index = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).reshape(-1)
        out = flat.reshape(flat.shape[0], -1)[:, index].reshape(flat.shape) * inside.to(images.dtype)
        return out.reshape(images.shape)
    normalised = torch.stack(
        [2.0 * source[..., 0] / max(width - 1, 1) - 1.0, 2.0 * source[..., 1] / max(height - 1, 1) - 1.0], dim=-1
    ).to(images.dtype)
    grid = normalised.unsqueeze(0).expand(flat.shape[0], height, width, 2)
    out = F.grid_sample(flat.unsqueeze(1), grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(images.shape)


def _relative(difference: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(difference) / torch.linalg.vector_norm(reference).clamp_min(1e-30))


def equivariance_error(
    function: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    input_transform: Callable[[torch.Tensor], torch.Tensor],
    output_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    r"""Relative equivariance error :math:`\|f(Tx) - T'f(x)\| / \|T'f(x)\|` (invariance when :math:`T'` is omitted).

    Args:
        function: the map :math:`f` (run under :func:`torch.no_grad`).
        inputs: :math:`x`.
        input_transform: :math:`T`.
        output_transform: :math:`T'`; identity when ``None``.

    Returns:
        The relative error (a Python float).

    Example:
        >>> quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> rotate = lambda x: affine_transform_images(x, quarter, mode="exact")
        >>> equivariance_error(torch.tanh, torch.randn(4, 5, 5), rotate, rotate)
        0.0
    """
    with torch.no_grad():
        expected = function(inputs)
        if output_transform is not None:
            expected = output_transform(expected)
        return _relative(function(input_transform(inputs)) - expected, expected)


def lifting_equivariance_error(
    layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sample: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    matrix: torch.Tensor,
    sample_counts: Sequence[int],
    *,
    translation: torch.Tensor | None = None,
    mode: str = "exact",
    repeats: int = 4,
    seed: int = 0,
) -> dict[int, float]:
    r"""Equivariance error of a lifting layer after averaging over the group samples, against the sample count.

    With the same samples :math:`g_j` for :math:`x` and :math:`Tx`, the error of
    :math:`\bar f(x) = \frac1N\sum_j \mathcal{L}f(x, g_j)` is
    :math:`\|\bar{\mathcal L}(Tf) - T\bar{\mathcal L}f\| / \|T\bar{\mathcal L}f\|`; it is a Monte Carlo error (the
    exact lifting satisfies :math:`\mathcal{L}(Tf)(x, g) = \mathcal{L}f(A^{-1}(x - t), A^{-1}g)`, and the samples
    :math:`A^{-1}g_j` differ from :math:`g_j`), so it falls as :math:`N` grows when the sampling law is invariant
    under :math:`A` (rotations with the Haar sampler).

    Args:
        layer: ``layer(images, g_inv) -> (B, C, N, H, W)`` (e.g. :class:`~sciml_equivariant.lie.LiftingConv2d`).
        sample: ``sample(N, generator) -> (g, g_inv)`` (e.g. a bound ``group.sample``).
        images: ``(B, C, H, W)``.
        matrix: :math:`A`, ``(2, 2)``.
        sample_counts: the values of :math:`N`.
        translation: :math:`t`.
        mode: resampling mode of :func:`affine_transform_images`.
        repeats: independent sample sets averaged per :math:`N`.
        seed: seed of the sample sets.

    Returns:
        ``{N: mean relative error}``.

    Raises:
        SciMLInputError: empty ``sample_counts`` or ``repeats < 1``.
    """
    if len(sample_counts) == 0:
        raise SciMLInputError("sample_counts", "must not be empty")
    if repeats < 1:
        raise SciMLInputError("repeats", f"must be >= 1, got {repeats}")

    def transform(x: torch.Tensor) -> torch.Tensor:
        return affine_transform_images(x, matrix, translation, mode=mode)

    errors: dict[int, float] = {}
    for count in sample_counts:
        total = 0.0
        for repeat in range(repeats):
            generator = torch.Generator(device=images.device).manual_seed(seed + 1000 * repeat + count)
            _, g_inv = sample(count, generator)

            def pooled(x: torch.Tensor, g_inv: torch.Tensor = g_inv) -> torch.Tensor:
                return layer(x, g_inv).mean(dim=2)

            total += equivariance_error(pooled, images, transform, transform)
        errors[int(count)] = total / repeats
    return errors


def invariance_error_vs_samples(
    model: torch.nn.Module,
    images: torch.Tensor,
    transforms: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    sample_counts: Sequence[int],
    *,
    mode: str = "bilinear",
    seed: int = 0,
) -> dict[int, float]:
    r"""Invariance error :math:`\|f(Tx) - f(x)\| / \|f(x)\|` of a model's output against its number of group samples.

    ``model`` must have a settable ``num_samples`` and accept ``generator=`` (as
    :class:`~sciml_equivariant.lie.AffineEquivariantCNN`); both passes use equally seeded generators, so the error
    is zero at :math:`T = I` and measures only the lack of invariance. The error is averaged over ``transforms``.

    Args:
        model: the classifier (put in eval mode by the caller).
        images: ``(B, C, H, W)``.
        transforms: pairs ``(A, t)`` (``t`` may be ``None``).
        sample_counts: values of ``num_samples``.
        mode: resampling mode of :func:`affine_transform_images`.
        seed: seed of the group samples.

    Returns:
        ``{N: mean relative error}``; ``model.num_samples`` is restored afterwards.

    Raises:
        SciMLInputError: ``model`` has no ``num_samples``; empty ``transforms`` or ``sample_counts``.
    """
    if not hasattr(model, "num_samples"):
        raise SciMLInputError("model", "must have a settable 'num_samples' attribute")
    if len(transforms) == 0 or len(sample_counts) == 0:
        raise SciMLInputError("transforms", "transforms and sample_counts must not be empty")
    original = model.num_samples
    errors: dict[int, float] = {}
    try:
        for count in sample_counts:
            setattr(model, "num_samples", int(count))  # noqa: B010 (nn.Module typing)
            total = 0.0
            for index, (matrix, translation) in enumerate(transforms):

                def run(x: torch.Tensor, index: int = index, count: int = int(count)) -> torch.Tensor:
                    generator = torch.Generator(device=x.device).manual_seed(seed + 7919 * index + count)
                    return model(x, generator=generator)

                def transform(
                    x: torch.Tensor, matrix: torch.Tensor = matrix, translation: torch.Tensor | None = translation
                ) -> torch.Tensor:
                    return affine_transform_images(x, matrix, translation, mode=mode)

                total += equivariance_error(run, images, transform)
            errors[int(count)] = total / len(transforms)
    finally:
        setattr(model, "num_samples", original)  # noqa: B010
    return errors
