import math
import unittest

import pytest
import torch
from sciml_protocols.testing import DistributionConformance
from torch.distributions import Dirichlet, Gamma, Normal, Poisson, constraints

# --------------------------------------------------------------------------- the suite on real distributions


def normal(dtype, cls=Normal):
    # Distinct parameters per batch entry: a shared value would hide broadcasting mistakes.
    loc = torch.tensor([-1.0, 0.5, 2.0], dtype=dtype)
    scale = torch.tensor([0.5, 1.5, 3.0], dtype=dtype)
    return cls(loc, scale)


class TestNormal(DistributionConformance):
    def make_distribution(self, dtype):
        return normal(dtype)


class TestGamma(DistributionConformance):
    def make_distribution(self, dtype):
        concentration = torch.tensor([1.5, 3.0, 7.0], dtype=dtype)
        rate = torch.tensor([2.0, 1.0, 0.5], dtype=dtype)
        return Gamma(concentration, rate)


class TestPoisson(DistributionConformance):
    # Discrete, no rsample, no entropy: exercises the integer-grid normalisation and the skips.
    def make_distribution(self, dtype):
        return Poisson(torch.tensor([0.5, 3.0, 10.0], dtype=dtype))


class TestDirichlet(DistributionConformance):
    num_samples = 40_000

    def make_distribution(self, dtype):
        return Dirichlet(torch.tensor([[1.5, 2.0, 4.0], [1.2, 3.0, 1.1]], dtype=dtype))

    def check_normalization(self, dtype=torch.float64):
        # Importance sampling from the uniform distribution on the simplex, whose density is 2 with respect to the
        # first two coordinates (the measure torch's Dirichlet.log_prob uses): the integral is E_uniform[p / 2].
        distribution = self.make_distribution(dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            uniform = Dirichlet(torch.ones(3, dtype=torch.float64)).sample((self.num_samples,))
        ratio = distribution.log_prob(uniform.unsqueeze(1).to(dtype)).to(torch.float64).exp() / 2
        integral = ratio.mean(0)
        allowed = self.sigmas * ratio.std(0) / math.sqrt(self.num_samples)
        if bool(((integral - 1).abs() > allowed).any()):
            raise AssertionError(f"Dirichlet density integrates to {integral.tolist()}, not 1")


class ScaledDirichlet(Dirichlet):
    def log_prob(self, value):
        return super().log_prob(value) + 0.5


def test_the_multivariate_normalisation_override_can_fail():
    class Broken(TestDirichlet):
        def make_distribution(self, dtype):
            return ScaledDirichlet(torch.tensor([[1.5, 2.0, 4.0], [1.2, 3.0, 1.1]], dtype=dtype))

    with pytest.raises(AssertionError, match="integrates to"):
        Broken().check_normalization()


def test_the_default_normal_case_checks_validation_with_nan():
    value = TestNormal().out_of_support_value(normal(torch.float64), torch.float64)
    assert value is not None
    assert value.shape == (3,)
    assert bool(value.isnan().all())


def test_out_of_support_value_returning_none_skips():
    class NoValue(TestNormal):
        def out_of_support_value(self, distribution, dtype):
            return None

    with pytest.raises(unittest.SkipTest, match="out_of_support_value returned None"):
        NoValue().test_validation()


def test_multivariate_events_need_their_own_normalisation_check():
    class Plain(DistributionConformance):
        def make_distribution(self, dtype):
            return Dirichlet(torch.ones(2, 3, dtype=dtype))

    with pytest.raises(unittest.SkipTest, match="override check_normalization"):
        Plain().test_normalization()


# --------------------------------------------------------------------------- broken distributions


class UnnormalisedNormal(Normal):
    def log_prob(self, value):
        return -((value - self.loc) ** 2) / (2 * self.scale**2) - self.scale.log()


class StandardDeviationAsVarianceNormal(Normal):
    @property
    def variance(self):
        return self.scale


class BrokenExpandNormal(Normal):
    def expand(self, batch_shape, _instance=None):
        return Normal(self.loc.expand(batch_shape), torch.ones_like(self.loc).expand(batch_shape))


class DetachedRsampleNormal(Normal):
    def rsample(self, sample_shape=torch.Size()):  # noqa: B008
        return super().rsample(sample_shape).detach()


class ScaleBlindRsampleNormal(Normal):
    def rsample(self, sample_shape=torch.Size()):  # noqa: B008
        shape = self._extended_shape(sample_shape)
        return self.loc + self.scale.detach() * torch.randn(shape, dtype=self.loc.dtype)


class ShiftedMeanNormal(Normal):
    @property
    def mean(self):
        return self.loc + self.scale


class ShapelessSampleNormal(Normal):
    def sample(self, sample_shape=torch.Size()):  # noqa: B008
        return super().sample()


class UncheckedGamma(Gamma):
    def log_prob(self, value):
        value = torch.as_tensor(value, dtype=self.rate.dtype)
        return (
            self.concentration * self.rate.log()
            + (self.concentration - 1) * value.abs().log()
            - self.rate * value
            - torch.lgamma(self.concentration)
        )


class OutOfSupportSampleGamma(Gamma):
    def sample(self, sample_shape=torch.Size()):  # noqa: B008
        return -super().sample(sample_shape)


def suite_for(cls, make=normal):
    class Suite(DistributionConformance):
        def make_distribution(self, dtype):
            return make(dtype, cls)

    return Suite()


def gamma(dtype, cls=Gamma):
    return cls(torch.tensor([1.5, 3.0, 7.0], dtype=dtype), torch.tensor([2.0, 1.0, 0.5], dtype=dtype))


def test_normalisation_and_entropy_catch_a_missing_constant():
    broken = suite_for(UnnormalisedNormal)
    # The missing factor is sqrt(2 pi): the density integrates to about 2.5066.
    with pytest.raises(AssertionError, match=r"integrates to \[2\.50"):
        broken.check_normalization(torch.float64)
    with pytest.raises(AssertionError, match=r"\.entropy\(\)"):
        broken.check_entropy(torch.float32)
    broken.check_moments(torch.float64)


def test_moments_catch_a_wrong_variance():
    with pytest.raises(AssertionError, match=r"\.variance is 0\.5 at flat index 0"):
        suite_for(StandardDeviationAsVarianceNormal).check_moments(torch.float64)


def test_expand_check_catches_a_broken_expand():
    with pytest.raises(AssertionError, match="log_prob differs from the original's broadcast log_prob"):
        suite_for(BrokenExpandNormal).check_expand(torch.float64)


def test_rsample_checks_catch_missing_or_wrong_pathwise_gradients():
    with pytest.raises(AssertionError, match="rsample is not differentiable"):
        suite_for(DetachedRsampleNormal).check_rsample_gradients(torch.float64)
    with pytest.raises(AssertionError, match="does not depend on the parameter 'scale'"):
        suite_for(ScaleBlindRsampleNormal).check_rsample_gradients(torch.float64)
    with pytest.raises(AssertionError, match="with respect to 'scale' does not match the gradient of .mean"):
        suite_for(ShiftedMeanNormal).check_rsample_gradients(torch.float64)


def test_shape_check_catches_an_ignored_sample_shape():
    with pytest.raises(AssertionError, match=r"sample\(\(4, 2\)\) has shape \(3,\)"):
        suite_for(ShapelessSampleNormal).check_sample_shapes(torch.float32)


def test_shape_check_catches_samples_outside_the_support():
    with pytest.raises(AssertionError, match="outside its support"):
        suite_for(OutOfSupportSampleGamma, gamma).check_sample_shapes(torch.float64)


def test_validation_check_catches_a_log_prob_that_does_not_validate():
    with pytest.raises(AssertionError, match=r"accepted \[-1\.0, -1\.0, -1\.0\]"):
        suite_for(UncheckedGamma, gamma).check_validation(torch.float64)


def test_validation_check_restores_the_default():
    before = torch.distributions.Distribution._validate_args
    TestGamma().check_validation(torch.float64)
    assert torch.distributions.Distribution._validate_args == before


def test_an_empty_batch_shape_is_refused():
    class Scalar(DistributionConformance):
        def make_distribution(self, dtype):
            return Normal(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype))

    with pytest.raises(AssertionError, match="non-empty batch_shape"):
        Scalar().check_moments()


def test_statistical_checks_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TestNormal().check_moments(torch.float32)
    assert torch.equal(torch.rand(3), expected)


def test_default_parameter_discovery_needs_stored_parameters():
    class Positive(torch.distributions.Distribution):
        arg_constraints = {"rate": constraints.positive}  # noqa: RUF012
        support = constraints.positive
        has_rsample = True

        def __init__(self, rate):
            self._rate_storage = rate
            super().__init__(rate.shape, validate_args=False)

        def rsample(self, sample_shape=torch.Size()):  # noqa: B008
            return torch.rand(self._extended_shape(sample_shape)) / self._rate_storage

    class Suite(DistributionConformance):
        def make_distribution(self, dtype):
            return Positive(torch.ones(2, dtype=dtype))

    with pytest.raises(AssertionError, match="override make_differentiable_distribution"):
        Suite().check_rsample_gradients()
