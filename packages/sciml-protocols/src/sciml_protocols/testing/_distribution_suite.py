"""Conformance suite for ``torch.distributions.Distribution`` subclasses."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator
from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

from ._common import skip
from ._tolerances import assert_close, tolerances

__all__ = ["DistributionConformance"]


@contextlib.contextmanager
def _default_validation(enabled: bool) -> Generator[None, None, None]:
    # Distributions read the class-wide default when constructed; restoring it keeps the suite free of side effects.
    previous = Distribution._validate_args  # pyright: ignore[reportPrivateUsage]
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


@contextlib.contextmanager
def _seeded(seed: int) -> Generator[None, None, None]:
    # torch.distributions samples from the global generator; fork it so that the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _optional_statistic(distribution: Distribution, name: str) -> torch.Tensor | None:
    try:
        value: object = getattr(distribution, name)
        result = value() if callable(value) else value
    except NotImplementedError:
        return None
    if not isinstance(result, torch.Tensor):
        raise AssertionError(f"{type(distribution).__name__}.{name} is a {type(result).__name__}, not a tensor")
    return result


def _support(distribution: Distribution) -> constraints.Constraint:
    support = distribution.support
    if support is None:
        raise AssertionError(f"{type(distribution).__name__} declares no support")
    return support


class DistributionConformance:
    r"""Contract every ``torch.distributions.Distribution`` of a sciml package must meet; subclass it in a test.

    Implement :meth:`make_distribution` in a subclass whose name starts with ``Test`` and pytest runs every
    ``test_*`` method; each loops over :attr:`dtypes` and calls the matching ``check_*`` method, which raises
    :class:`AssertionError` with a message saying what broke (they can be called directly too). Checks that do not
    apply (no ``rsample``, no ``entropy``, a multivariate event for the default normalisation check) raise
    :class:`unittest.SkipTest`, which pytest reports as a skip. Nothing here imports pytest.

    Statistical checks use a fixed seed (:attr:`seed`, on a forked global generator) and tolerances of
    :attr:`sigmas` Monte-Carlo standard errors estimated from the samples themselves, plus a floor from the dtype's
    row of :data:`TOLERANCES`:

    - shapes: ``sample``/``rsample`` give ``sample_shape + batch_shape + event_shape`` in the requested dtype and
      inside ``support``; ``log_prob`` gives ``sample_shape + batch_shape``;
    - reparameterisation: the gradient of :math:`\sum w \odot \bar x` (:math:`\bar x` the mean of ``rsample``
      draws, :math:`w` fixed random weights) with respect to every parameter is finite and non-zero, and matches
      the gradient of :math:`\sum w \odot \mathbb{E}[x]` computed through ``.mean``;
    - moments: the sample mean and variance match ``.mean`` and ``.variance`` (standard errors
      :math:`\sqrt{m_2/n}` and :math:`\sqrt{(m_4 - m_2^2)/n}`);
    - normalisation: :math:`\int p(x)\,dx = 1` within :attr:`normalization_tolerance`, by the trapezoidal rule
      on :attr:`grid_points` points spanning the samples (a sum over the support for discrete distributions);
    - entropy: :math:`-\frac1n \sum \log p(x_i)` matches ``.entropy()``;
    - expand: ``expand((2, *batch_shape))`` has the new batch shape and the broadcast ``log_prob``, ``mean`` and
      ``variance`` of the original;
    - validation: with ``validate_args=True``, ``log_prob`` of :meth:`out_of_support_value` raises ValueError.

    Attributes:
        dtypes: dtypes the ``test_*`` methods loop over.
        sample_shape: sample shape used in the shape checks.
        num_samples: draws for the moment, entropy and normalisation checks.
        gradient_chunks: independent ``rsample`` batches (of ``num_samples // gradient_chunks`` draws) whose
            spread gives the standard error of the pathwise gradient.
        sigmas: tolerance in standard errors.
        grid_points: points of the normalisation grid.
        normalization_tolerance: allowed :math:`|\int p - 1|`; the mass beyond the extreme samples is about
            :math:`2 / n`, far below it.
        seed: seed of every random draw.

    Example:
        >>> class NormalConformance(DistributionConformance):
        ...     def make_distribution(self, dtype):
        ...         loc = torch.tensor([-1.0, 0.5, 2.0], dtype=dtype)
        ...         return torch.distributions.Normal(loc, torch.tensor([0.5, 1.5, 3.0], dtype=dtype))
        >>> NormalConformance().check_moments(torch.float64)
        >>> NormalConformance().test_expand()
    """

    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    sample_shape: ClassVar[tuple[int, ...]] = (4, 2)
    num_samples: ClassVar[int] = 100_000
    gradient_chunks: ClassVar[int] = 20
    sigmas: ClassVar[float] = 5.0
    grid_points: ClassVar[int] = 20_001
    normalization_tolerance: ClassVar[float] = 5e-3
    seed: ClassVar[int] = 0

    # ---------------------------------------------------------------- hooks

    def make_distribution(self, dtype: torch.dtype) -> Distribution:
        """Return the distribution under test, with parameters of ``dtype`` and a non-empty ``batch_shape``.

        Vary the parameters across the batch (a shared value hides broadcasting bugs) and build it without
        ``validate_args`` so that the suite can choose.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_distribution(dtype)")

    def make_differentiable_distribution(self, dtype: torch.dtype) -> tuple[Distribution, dict[str, torch.Tensor]]:
        """Return the distribution rebuilt from parameters that require grad, and those parameters by name.

        The default takes the floating tensors named in ``arg_constraints`` that the instance stores as attributes
        (``loc`` and ``scale`` of a Normal) and calls the class with them as keywords. Override it for
        distributions built otherwise (alternative parametrisations, wrapped distributions).
        """
        base = self._make(dtype)
        stored = vars(base)
        leaves = {
            name: stored[name].detach().clone().requires_grad_(True)
            for name in base.arg_constraints
            if isinstance(stored.get(name), torch.Tensor) and stored[name].dtype.is_floating_point
        }
        if not leaves:
            raise AssertionError(
                f"cannot find the parameters of {type(base).__name__} among its arg_constraints; override "
                "make_differentiable_distribution"
            )
        try:
            rebuilt = type(base)(**leaves, validate_args=False)
        except TypeError as err:
            raise AssertionError(
                f"cannot rebuild {type(base).__name__} from {sorted(leaves)}: {err}; override "
                "make_differentiable_distribution"
            ) from err
        return rebuilt, leaves

    def out_of_support_value(self, distribution: Distribution, dtype: torch.dtype) -> torch.Tensor | None:
        """Return a value outside the support (shape ``batch_shape + event_shape``), or None to skip the check.

        The default tries -1, 2, 0.5 and NaN in turn and returns the first that ``distribution.support`` rejects
        for at least one batch entry (NaN is outside every support, so for real-valued distributions the check
        does run).
        """
        shape = distribution.batch_shape + distribution.event_shape
        for candidate in (-1.0, 2.0, 0.5, math.nan):
            value = torch.full(shape, candidate, dtype=dtype)
            if not bool(_support(distribution).check(value).all()):
                return value
        return None

    # ---------------------------------------------------------------- helpers

    def _make(self, dtype: torch.dtype, *, validate: bool = False) -> Distribution:
        with _default_validation(validate):
            distribution = self.make_distribution(dtype)
        if len(distribution.batch_shape) == 0:
            raise AssertionError(
                f"{type(self).__name__}.make_distribution must return a non-empty batch_shape (e.g. (3,)) so that "
                "the checks exercise broadcasting"
            )
        return distribution

    def _floor(self, dtype: torch.dtype, reference: torch.Tensor) -> torch.Tensor:
        rtol, atol = tolerances(dtype, scale=10.0)
        return atol + rtol * reference.abs()

    # ---------------------------------------------------------------- checks

    def check_sample_shapes(self, dtype: torch.dtype = torch.float64) -> None:
        """``sample``/``rsample`` shapes, dtype and support; ``log_prob`` shape."""
        distribution = self._make(dtype)
        name = type(distribution).__name__
        sample_shape = torch.Size(self.sample_shape)
        expected = sample_shape + distribution.batch_shape + distribution.event_shape
        methods = [("sample", distribution.sample)]
        if distribution.has_rsample:
            methods.append(("rsample", distribution.rsample))
        for method, draw in methods:
            with _seeded(self.seed), torch.no_grad():
                values = draw(sample_shape)
                single = draw()
            if values.shape != expected:
                raise AssertionError(
                    f"{name}.{method}({tuple(sample_shape)}) has shape {tuple(values.shape)}, expected "
                    f"sample_shape + batch_shape + event_shape = {tuple(expected)}"
                )
            if single.shape != distribution.batch_shape + distribution.event_shape:
                raise AssertionError(f"{name}.{method}() has shape {tuple(single.shape)}, expected batch + event")
            if values.dtype.is_floating_point and values.dtype != dtype:
                raise AssertionError(f"{name}.{method} returned {values.dtype} for {dtype} parameters")
            if not bool(_support(distribution).check(values).all()):
                raise AssertionError(f"{name}.{method} returned values outside its support {distribution.support}")
            log_prob = distribution.log_prob(values)
            if log_prob.shape != sample_shape + distribution.batch_shape:
                raise AssertionError(
                    f"{name}.log_prob of {method} draws has shape {tuple(log_prob.shape)}, expected "
                    f"{tuple(sample_shape + distribution.batch_shape)}"
                )

    def check_rsample_gradients(self, dtype: torch.dtype = torch.float64) -> None:
        """Pathwise gradients are finite, non-zero, and match the gradient of ``.mean``."""
        distribution, parameters = self.make_differentiable_distribution(dtype)
        name = type(distribution).__name__
        if not distribution.has_rsample:
            skip(f"{name} has no rsample")
        names, leaves = list(parameters), list(parameters.values())
        generator = torch.Generator().manual_seed(self.seed)
        weights = torch.randn(distribution.batch_shape + distribution.event_shape, generator=generator, dtype=dtype)
        per_chunk = max(self.num_samples // self.gradient_chunks, 1)
        chunks: list[list[torch.Tensor]] = []
        with _seeded(self.seed):
            for _ in range(self.gradient_chunks):
                objective = (weights * distribution.rsample(torch.Size((per_chunk,))).mean(0)).sum()
                if not objective.requires_grad:
                    raise AssertionError(f"{name}.rsample is not differentiable: its draws do not require grad")
                gradients = torch.autograd.grad(objective, leaves, allow_unused=True)
                chunk: list[torch.Tensor] = []
                for parameter, gradient in zip(names, gradients, strict=True):
                    # allow_unused=True does return None for an unused input; torch's annotation omits it.
                    if gradient is None:  # pyright: ignore[reportUnnecessaryComparison]
                        raise AssertionError(f"{name}.rsample does not depend on the parameter {parameter!r}")
                    chunk.append(gradient.to(torch.float64))
                chunks.append(chunk)
        estimates = [torch.stack(per_parameter) for per_parameter in zip(*chunks, strict=True)]
        for parameter, stacked in zip(names, estimates, strict=True):
            if not bool(torch.isfinite(stacked).all()):
                raise AssertionError(f"{name}.rsample gives non-finite gradients for {parameter!r}")
            if not bool(stacked.mean(0).ne(0).any()):
                raise AssertionError(f"{name}.rsample gives zero gradients for {parameter!r}")

        mean = _optional_statistic(distribution, "mean")
        if mean is None or not bool(torch.isfinite(mean).all()):
            return
        exact = torch.autograd.grad((weights * mean).sum(), leaves, allow_unused=True)
        for parameter, stacked, leaf, gradient in zip(names, estimates, leaves, exact, strict=True):
            unused = gradient is None  # pyright: ignore[reportUnnecessaryComparison]
            expected = (torch.zeros_like(leaf) if unused else gradient).to(torch.float64)
            estimate = stacked.mean(0)
            standard_error = stacked.std(0) / math.sqrt(self.gradient_chunks)
            allowed = self.sigmas * standard_error + self._floor(dtype, expected)
            error = (estimate - expected).abs()
            if bool((error > allowed).any()):
                worst = int((error - allowed).reshape(-1).argmax())
                raise AssertionError(
                    f"{name} ({dtype}): the pathwise gradient of the sample mean with respect to {parameter!r} does "
                    f"not match the gradient of .mean: entry {worst} is {estimate.reshape(-1)[worst].item():.6g}, "
                    f"expected {expected.reshape(-1)[worst].item():.6g} "
                    f"(allowed {allowed.reshape(-1)[worst].item():.3g})"
                )

    def check_moments(self, dtype: torch.dtype = torch.float64) -> None:
        """Sample mean and variance match ``.mean`` and ``.variance`` within Monte-Carlo error."""
        distribution = self._make(dtype)
        name = type(distribution).__name__
        mean = _optional_statistic(distribution, "mean")
        variance = _optional_statistic(distribution, "variance")
        if mean is None and variance is None:
            skip(f"{name} implements neither mean nor variance")
        with _seeded(self.seed), torch.no_grad():
            draws = distribution.sample(torch.Size((self.num_samples,))).to(torch.float64)
        sample_mean = draws.mean(0)
        centred = draws - sample_mean
        second = (centred**2).mean(0)
        fourth = (centred**4).mean(0)
        n = self.num_samples
        checks: list[tuple[str, torch.Tensor | None, torch.Tensor, torch.Tensor]] = [
            ("mean", mean, sample_mean, (second / n).sqrt()),
            ("variance", variance, second * n / (n - 1), ((fourth - second**2).clamp_min(0) / n).sqrt()),
        ]
        for statistic, claimed, estimate, standard_error in checks:
            if claimed is None:
                continue
            claimed64 = claimed.detach().to(torch.float64).expand_as(estimate)
            finite = torch.isfinite(claimed64)
            allowed = self.sigmas * standard_error + self._floor(dtype, claimed64)
            bad = finite & ((estimate - claimed64).abs() > allowed)
            if bool(bad.any()):
                index = int(bad.reshape(-1).nonzero()[0])
                raise AssertionError(
                    f"{name} ({dtype}): .{statistic} is {claimed64.reshape(-1)[index].item():.6g} at flat index "
                    f"{index} but {n} samples give {estimate.reshape(-1)[index].item():.6g} (standard error "
                    f"{standard_error.reshape(-1)[index].item():.3g}, allowed {allowed.reshape(-1)[index].item():.3g})"
                )

    def check_normalization(self, dtype: torch.dtype = torch.float64) -> None:
        r"""``exp(log_prob)`` integrates (or sums) to 1 for every batch entry; override for multivariate events."""
        distribution = self._make(dtype)
        name = type(distribution).__name__
        if distribution.event_shape != torch.Size():
            skip(f"{name} has event_shape {tuple(distribution.event_shape)}: override check_normalization")
        with _seeded(self.seed), torch.no_grad():
            draws = distribution.sample(torch.Size((self.num_samples,)))
            if _support(distribution).is_discrete:
                if distribution.has_enumerate_support:
                    values = distribution.enumerate_support(expand=True)
                else:
                    low, high = int(draws.min()), int(draws.max())
                    batch_dims = len(distribution.batch_shape)
                    values = torch.arange(low, high + 1, dtype=dtype).reshape(-1, *([1] * batch_dims))
                    values = values.expand(-1, *distribution.batch_shape)
                mass = distribution.log_prob(values).to(torch.float64).exp().sum(0)
                how = "sum over the support"
            else:
                low, high = draws.min(0).values, draws.max(0).values
                fractions = torch.linspace(0.0, 1.0, self.grid_points, dtype=torch.float64)
                fractions = fractions.reshape(-1, *([1] * low.dim()))
                grid = (low.to(torch.float64) + (high - low).to(torch.float64) * fractions).to(dtype)
                density = distribution.log_prob(grid).to(torch.float64).exp()
                mass = torch.trapezoid(density, grid.to(torch.float64), dim=0)
                how = f"trapezoidal rule on {self.grid_points} points spanning {self.num_samples} samples"
        error = (mass - 1.0).abs()
        if not bool((error <= self.normalization_tolerance).all()):
            raise AssertionError(
                f"{name} ({dtype}): exp(log_prob) integrates to {mass.tolist()} ({how}), not 1 within "
                f"{self.normalization_tolerance:g}; is a normalising constant missing?"
            )

    def check_entropy(self, dtype: torch.dtype = torch.float64) -> None:
        r"""``-mean(log_prob(samples))`` matches ``.entropy()`` within Monte-Carlo error."""
        distribution = self._make(dtype)
        name = type(distribution).__name__
        entropy = _optional_statistic(distribution, "entropy")
        if entropy is None:
            skip(f"{name} does not implement entropy")
        with _seeded(self.seed), torch.no_grad():
            log_prob = distribution.log_prob(distribution.sample(torch.Size((self.num_samples,)))).to(torch.float64)
        estimate = -log_prob.mean(0)
        claimed = entropy.detach().to(torch.float64)
        allowed = self.sigmas * log_prob.std(0) / math.sqrt(self.num_samples) + self._floor(dtype, claimed)
        if bool(((estimate - claimed).abs() > allowed).any()):
            raise AssertionError(
                f"{name} ({dtype}): .entropy() is {claimed.tolist()} but -E[log_prob] over {self.num_samples} "
                f"samples is {estimate.tolist()} (allowed deviation {allowed.tolist()})"
            )

    def check_expand(self, dtype: torch.dtype = torch.float64) -> None:
        """``expand`` gives the new batch shape and the broadcast log_prob, mean and variance."""
        distribution = self._make(dtype)
        name = type(distribution).__name__
        batch = torch.Size((2,)) + distribution.batch_shape
        expanded = distribution.expand(batch)
        if expanded.batch_shape != batch or expanded.event_shape != distribution.event_shape:
            raise AssertionError(
                f"{name}.expand({tuple(batch)}) has batch_shape {tuple(expanded.batch_shape)} and event_shape "
                f"{tuple(expanded.event_shape)}, expected {tuple(batch)} and {tuple(distribution.event_shape)}"
            )
        with _seeded(self.seed), torch.no_grad():
            values = distribution.sample(torch.Size((2,)))
            drawn = expanded.sample(torch.Size((3,)))
        if drawn.shape != torch.Size((3,)) + batch + distribution.event_shape:
            raise AssertionError(f"{name}.expand(...).sample((3,)) has shape {tuple(drawn.shape)}")
        assert_close(
            expanded.log_prob(values),
            distribution.log_prob(values),
            msg=f"{name}.expand({tuple(batch)}).log_prob differs from the original's broadcast log_prob",
        )
        for statistic in ("mean", "variance"):
            original = _optional_statistic(distribution, statistic)
            if original is None:
                continue
            got = _optional_statistic(expanded, statistic)
            if got is None:
                raise AssertionError(f"{name}.expand(...) lost .{statistic}")
            assert_close(
                got,
                original.expand(batch + distribution.event_shape),
                equal_nan=True,
                msg=f"{name}.expand({tuple(batch)}).{statistic} differs from the original's broadcast {statistic}",
            )

    def check_validation(self, dtype: torch.dtype = torch.float64) -> None:
        """With ``validate_args=True``, ``log_prob`` of a value outside the support raises ValueError."""
        distribution = self._make(dtype, validate=True)
        name = type(distribution).__name__
        value = self.out_of_support_value(distribution, dtype)
        if value is None:
            skip(f"no out-of-support value for {name} (out_of_support_value returned None)")
        try:
            distribution.log_prob(value)
        except ValueError:
            return
        raise AssertionError(
            f"{name}.log_prob accepted {value.tolist()}, outside its support {distribution.support}, with "
            "validate_args=True"
        )

    # ---------------------------------------------------------------- tests

    def test_sample_shapes(self) -> None:
        """Run :meth:`check_sample_shapes` for every dtype."""
        for dtype in self.dtypes:
            self.check_sample_shapes(dtype)

    def test_rsample_gradients(self) -> None:
        """Run :meth:`check_rsample_gradients` for every dtype."""
        for dtype in self.dtypes:
            self.check_rsample_gradients(dtype)

    def test_moments(self) -> None:
        """Run :meth:`check_moments` for every dtype."""
        for dtype in self.dtypes:
            self.check_moments(dtype)

    def test_normalization(self) -> None:
        """Run :meth:`check_normalization` for every dtype."""
        for dtype in self.dtypes:
            self.check_normalization(dtype)

    def test_entropy(self) -> None:
        """Run :meth:`check_entropy` for every dtype."""
        for dtype in self.dtypes:
            self.check_entropy(dtype)

    def test_expand(self) -> None:
        """Run :meth:`check_expand` for every dtype."""
        for dtype in self.dtypes:
            self.check_expand(dtype)

    def test_validation(self) -> None:
        """Run :meth:`check_validation` for every dtype."""
        for dtype in self.dtypes:
            self.check_validation(dtype)
