"""Tests for privet.dp.mechanisms and privet.dp.sampling.

Distributions are checked with goodness-of-fit tests at a fixed significance ``ALPHA`` on seeded streams
(``Randomness.for_tests``, test mode). Each family also has a power check: the same statistic computed
against a 10% wrong scale must reject, which shows the sample sizes are large enough for the tests to mean
something. The exact fallback paths (ties and undecided bands) are driven directly with chosen random words.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness
from privet.dp import (
    default_granularity,
    discrete_gaussian,
    discrete_laplace,
    exponential,
    gaussian,
    gaussian_rho,
    gaussian_sigma,
    grid_sensitivity,
    laplace,
    laplace_epsilon,
    laplace_scale,
    randomized_response,
    report_noisy_max,
    sampling,
    snap,
)
from privet.dp.mechanisms import _keep_threshold
from privet.errors import UsageError

ALPHA = 1e-4
N = 400_000


@pytest.fixture
def rng(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Randomness]:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")
    return Randomness.for_tests


# -- helpers -------------------------------------------------------------------------------------------------------


def dlap_pmf(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    q = math.exp(-1 / scale)
    return lambda x: (1 - q) / (1 + q) * q ** np.abs(x)


def dgauss_pmf(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    width = int(40 * sigma) + 40
    grid = np.arange(-width, width + 1, dtype=np.float64)
    norm = np.exp(-(grid**2) / (2 * sigma**2)).sum()
    return lambda x: np.exp(-(x.astype(np.float64) ** 2) / (2 * sigma**2)) / norm


def chisquare_pvalue(samples: np.ndarray, pmf: Callable[[np.ndarray], np.ndarray], width: int) -> float:
    """Chi-square goodness of fit of integer samples against ``pmf`` on [-width, width].

    Neighbouring values are merged (left to right) until each bin expects at least 20 samples. Mass outside
    [-width, width] is below 1e-12 for every pmf used here, so a sample out there fails the test outright.
    """
    assert np.abs(samples).max() <= width, "a sample fell where the pmf has no mass"
    support = np.arange(-width, width + 1)
    expected = pmf(support) * samples.size
    observed = np.bincount(samples + width, minlength=support.size).astype(np.float64)
    obs_bins, exp_bins, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected, strict=True):
        acc_o += o
        acc_e += e
        if acc_e >= 20:
            obs_bins.append(acc_o)
            exp_bins.append(acc_e)
            acc_o = acc_e = 0.0
    obs_bins[-1] += acc_o
    exp_bins[-1] += acc_e
    assert len(obs_bins) >= 3, "too few bins for a meaningful test"
    exp_arr = np.array(exp_bins) * (samples.size / sum(exp_bins))  # renormalise the truncated pmf
    return float(stats.chisquare(np.array(obs_bins), exp_arr).pvalue)


def exp_neg_decimal(gamma: Fraction, digits: int = 60) -> Fraction:
    with localcontext() as ctx:
        ctx.prec = digits
        return Fraction((-(Decimal(gamma.numerator) / Decimal(gamma.denominator))).exp())


# -- discrete Laplace ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 2.5, 10.0, 10.3, 1000.0])
def test_discrete_laplace_matches_its_pmf(rng, scale: float) -> None:
    samples = discrete_laplace(scale, N, rng=rng(int(scale * 10)))
    assert samples.dtype == np.int64 and samples.shape == (N,)
    width = int(scale * 30) + 10
    assert chisquare_pvalue(samples, dlap_pmf(scale), width) > ALPHA


@pytest.mark.parametrize("scale", [0.5, 10.0, 10.3, 1000.0])
def test_discrete_laplace_test_rejects_a_10_percent_wrong_scale(rng, scale: float) -> None:
    samples = discrete_laplace(scale, N, rng=rng(int(scale * 10)))
    width = int(scale * 40) + 10
    assert chisquare_pvalue(samples, dlap_pmf(scale * 1.1), width) < ALPHA
    assert chisquare_pvalue(samples, dlap_pmf(scale / 1.1), width) < ALPHA


def test_discrete_laplace_is_symmetric_and_counts_zero_once(rng) -> None:
    for scale in (0.05, 1.0, 3.0):  # both the trials path and the CKS path
        samples = discrete_laplace(scale, 100_000, rng=rng(1))
        q = math.exp(-1 / scale)  # a zero reached from both signs would raise P(0) towards 2(1-q)/(1+q)
        assert stats.binomtest(int((samples == 0).sum()), samples.size, (1 - q) / (1 + q)).pvalue > ALPHA
    wide = discrete_laplace(7.0, N, rng=rng(2))
    assert stats.binomtest(int((wide > 0).sum()), int((wide != 0).sum()), 0.5).pvalue > ALPHA


# -- discrete Gaussian ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 3.7, 10.0, 100.0])
def test_discrete_gaussian_matches_its_pmf(rng, sigma: float) -> None:
    samples = discrete_gaussian(sigma, N, rng=rng(int(sigma * 10) + 1))
    assert samples.dtype == np.int64 and samples.shape == (N,)
    assert chisquare_pvalue(samples, dgauss_pmf(sigma), int(8 * sigma) + 10) > ALPHA


@pytest.mark.parametrize("sigma", [0.5, 3.7, 100.0])
def test_discrete_gaussian_test_rejects_a_10_percent_wrong_sigma(rng, sigma: float) -> None:
    samples = discrete_gaussian(sigma, N, rng=rng(int(sigma * 10) + 1))
    width = int(9 * sigma) + 10
    assert chisquare_pvalue(samples, dgauss_pmf(sigma * 1.1), width) < ALPHA
    assert chisquare_pvalue(samples, dgauss_pmf(sigma / 1.1), width) < ALPHA


def test_discrete_gaussian_with_a_huge_sigma_uses_the_wide_path(rng) -> None:
    sigma = 3.0 * 2**33  # t > 2**32: uniform integers by modulo with rejection instead of Lemire
    samples = discrete_gaussian(sigma, 200_000, rng=rng(8)).astype(np.float64)
    assert stats.kstest(samples / sigma, "norm").pvalue > ALPHA
    assert stats.kstest(samples / (sigma * 1.1), "norm").pvalue < ALPHA


# -- exact building blocks -----------------------------------------------------------------------------------------


def test_exp_neg_interval_encloses_and_tightens() -> None:
    for gamma in (Fraction(0), Fraction(1, 3), Fraction(1), Fraction(355, 113), Fraction(700), Fraction(10**5)):
        interval = sampling.exp_neg_interval(gamma)
        lo40, hi40 = interval(40)
        lo80, hi80 = interval(80)
        if gamma <= 1000:
            truth = exp_neg_decimal(gamma, 200)
            assert lo40 <= truth <= hi40 and lo80 <= truth <= hi80
            assert hi80 - lo80 < (hi40 - lo40) / 10**30 or gamma == 0
        else:
            assert lo40 == 0 and 0 < hi40 <= Fraction(1, 2**65536)  # exp(-1e5) is smaller still


def test_geometric_thresholds_are_exact_floors() -> None:
    for k in (1, 2, 10, 44):
        t = sampling._GEO_T[k]
        truth = exp_neg_decimal(Fraction(k), 100) * 2**64
        assert t <= truth < t + 1


def test_fast_bernoulli_is_never_wrong_where_it_decides() -> None:
    gamma = np.linspace(0, 40, 4001)
    p = np.array([float(exp_neg_decimal(Fraction(g), 40)) for g in gamma])
    # Words whose 53-bit uniform sits just below, at, and just above p.
    for offset in (-4, -1, 0, 1, 4):
        k = np.clip(np.floor(p * 2**53) + offset, 0, 2**53 - 1).astype(np.uint64)
        accept, undecided = sampling.bernoulli_exp_fast(gamma, k << np.uint64(11))
        u_low = k.astype(np.float64) * 2.0**-53
        sure = ~undecided
        # Where decided, the whole interval [u, u + 2**-53) is on the decided side of p.
        assert np.all(u_low[sure & accept] + 2.0**-53 <= p[sure & accept])
        assert np.all(u_low[sure & ~accept] >= p[sure & ~accept])
        if offset in (-1, 0, 1):
            assert undecided.all()  # a word this close to p must go to the exact path


def test_undecided_bernoulli_is_resolved_with_more_bits_of_the_same_uniform(rng) -> None:
    gamma = Fraction(7, 10)
    p = exp_neg_decimal(gamma, 80)
    k = math.floor(p * 2**53)  # U = (k + R) / 2**53 straddles p
    for seed in range(40):
        got = sampling.bernoulli_exp_word(k << 11, gamma, rng(seed))
        extra = int(rng(seed).uint64(1)[0])  # the next 64 bits the resolver drew
        expected = Fraction(k * 2**64 + extra + 1, 2**117) <= p  # more bits are needed only with prob 2**-64
        assert got == expected


def test_geometric_ties_and_deep_tail_are_exact(rng) -> None:
    t1 = sampling._GEO_T[1]
    words = np.array([t1 - 1, t1, t1 + 1, sampling._GEO_T[5], 0, 1], dtype=np.uint64)
    v = sampling._geometric(words, rng(3))
    assert v[0] >= 1 and v[2] == 0  # decided by the word alone
    assert v[1] in (0, 1)  # a tie with T_1: decided by further bits, never beyond
    assert v[3] in (4, 5)  # a tie with T_5
    assert v[4] >= 44 and v[5] in (43, 44)  # U < 2**-63: the exact loop past the table


def test_slow_exact_bernoulli_has_the_right_rate(rng) -> None:
    generator = rng(21)
    trials = 4000
    hits = sum(sampling.bernoulli_exp(Fraction(1, 2), generator) for _ in range(trials))
    assert stats.binomtest(hits, trials, math.exp(-0.5)).pvalue > ALPHA


# -- real-valued noise on a grid -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.37, 1234.5])
def test_laplace_is_on_its_grid_and_laplace_distributed(rng, scale: float) -> None:
    noise = laplace(scale, 200_000, rng=rng(5))
    g = default_granularity(scale)
    assert g == 2.0 ** (math.floor(math.log2(scale)) - 40)
    assert np.all(noise / g == np.round(noise / g))  # multiples of the grid, nothing in between
    assert stats.kstest(noise, "laplace", args=(0, scale)).pvalue > ALPHA
    assert stats.kstest(noise, "laplace", args=(0, scale * 1.1)).pvalue < ALPHA


@pytest.mark.parametrize("sigma", [1.0, 0.37, 1234.5])
def test_gaussian_is_on_its_grid_and_normal(rng, sigma: float) -> None:
    noise = gaussian(sigma, 200_000, rng=rng(6))
    g = default_granularity(sigma)
    assert np.all(noise / g == np.round(noise / g))
    assert stats.kstest(noise, "norm", args=(0, sigma)).pvalue > ALPHA
    assert stats.kstest(noise, "norm", args=(0, sigma * 1.1)).pvalue < ALPHA


def test_coarse_granularity_gives_the_discrete_distribution_scaled(rng) -> None:
    noise = laplace(3.0, N, granularity=0.5, rng=rng(9))
    steps = noise / 0.5
    assert np.all(steps == np.round(steps))
    assert chisquare_pvalue(steps.astype(np.int64), dlap_pmf(6.0), 200) > ALPHA
    gauss = gaussian(2.0, N, granularity=0.25, rng=rng(10)) / 0.25
    assert chisquare_pvalue(gauss.astype(np.int64), dgauss_pmf(8.0), 80) > ALPHA


def test_snap_rounds_half_up_exactly() -> None:
    g = 0.25
    values = np.array([0.0, 0.1, 0.125, -0.125, 0.375, -0.375, 1e6 + 0.13, -2.6])
    expected = np.array([0.0, 0.0, 0.25, 0.0, 0.5, -0.25, 1e6 + 0.25, -2.5])
    assert np.array_equal(snap(values, g), expected)
    # The value just below a half step must not be rounded up by float error in y + 0.5.
    below_half = np.nextafter(0.5, 0.0)
    assert snap(below_half, 1.0) == 0.0
    assert snap(2.0**60 + 2048.0, 2.0**-10) == 2.0**60 + 2048.0  # already on the grid
    assert snap([[1.3]], 1.0).shape == (1, 1)


@settings(max_examples=300, deadline=None)
@given(
    a=st.floats(-1e6, 1e6, allow_nan=False),
    gap=st.floats(0, 1e3, allow_nan=False),
    exponent=st.integers(-20, 5),
)
def test_snapped_values_are_at_most_grid_sensitivity_apart(a: float, gap: float, exponent: int) -> None:
    g = 2.0**exponent
    b = a + gap
    actual = math.nextafter(float(Fraction(b) - Fraction(a)), math.inf)  # b - a after rounding, rounded up
    bound = grid_sensitivity(actual, g)
    moved = abs(float(snap(b, g)) - float(snap(a, g)))
    assert moved <= bound
    assert Fraction(bound) < Fraction(actual) + Fraction(g)


def test_grid_values_add_exactly(rng) -> None:
    g = default_granularity(2.0)
    value = float(snap(123.456789, g))
    noise = laplace(2.0, 1000, granularity=g, rng=rng(4))
    total = value + noise
    # Exact: the float sum equals the integer sum of grid steps.
    steps = (np.round(value / g) + np.round(noise / g)).astype(np.int64)
    assert np.array_equal(total / g, steps.astype(np.float64))


# -- selection -----------------------------------------------------------------------------------------------------


def frequencies(draw: Callable[[], int], n: int, k: int) -> np.ndarray:
    return np.bincount([draw() for _ in range(n)], minlength=k)


def test_exponential_mechanism_frequencies(rng) -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 4.5])
    eps, sens = 1.0, 1.0
    generator = rng(31)
    counts = frequencies(lambda: exponential(scores, eps, sens, rng=generator), 20_000, scores.size)
    weights = np.exp(eps * scores / (2 * sens))
    expected = weights / weights.sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > ALPHA
    # Power: the same counts against epsilon 10% off.
    wrong = np.exp(1.1 * eps * scores / (2 * sens))
    assert stats.chisquare(counts, wrong / wrong.sum() * counts.sum()).pvalue < ALPHA


def test_exponential_mechanism_monotonic_uses_eps_over_sensitivity(rng) -> None:
    scores = np.array([0.0, 2.0, 4.0, 6.0])
    generator = rng(32)
    counts = frequencies(lambda: exponential(scores, 0.5, 2.0, monotonic=True, rng=generator), 20_000, scores.size)
    weights = np.exp(0.5 * scores / 2.0)
    assert stats.chisquare(counts, weights / weights.sum() * counts.sum()).pvalue > ALPHA


def test_exponential_mechanism_with_a_dominant_candidate_and_huge_gaps(rng) -> None:
    scores = np.array([-1.5e308, 0.0, 1.5e308])  # gaps overflow float64: capped, and rejected exactly
    generator = rng(33)
    assert {exponential(scores, 1.0, 1.0, rng=generator) for _ in range(50)} == {2}


def permute_and_flip_pmf(scores: np.ndarray, eps: float, sens: float) -> np.ndarray:
    """Exact PF probabilities: candidate i wins if its coin is up and it is first among the up coins."""
    p = np.exp(eps * (scores - scores.max()) / (2 * sens))
    n = scores.size
    out = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for ups in itertools.product([0, 1], repeat=n - 1):
            weight = p[i]
            for j, up in zip(others, ups, strict=True):
                weight *= p[j] if up else 1 - p[j]
            out[i] += weight / (1 + sum(ups))
    return out


def test_report_noisy_max_is_permute_and_flip(rng) -> None:
    scores = np.array([0.0, 1.0, 3.0, 3.5, 2.0])
    generator = rng(34)
    counts = frequencies(lambda: report_noisy_max(scores, 2.0, 1.0, rng=generator), 20_000, scores.size)
    pmf = permute_and_flip_pmf(scores, 2.0, 1.0)
    assert abs(pmf.sum() - 1) < 1e-12
    assert stats.chisquare(counts, pmf * counts.sum()).pvalue > ALPHA
    wrong = permute_and_flip_pmf(scores, 2.2, 1.0)
    assert stats.chisquare(counts, wrong * counts.sum()).pvalue < ALPHA


def test_report_noisy_max_splits_ties_evenly(rng) -> None:
    generator = rng(35)
    counts = frequencies(lambda: report_noisy_max([7.0, 7.0, -100.0], 1.0, 1.0, rng=generator), 4000, 3)
    assert counts[2] == 0
    assert stats.binomtest(int(counts[0]), 4000, 0.5).pvalue > ALPHA


# -- randomized response -------------------------------------------------------------------------------------------


def test_randomized_response_keeps_with_the_exact_rate(rng) -> None:
    eps = 1.0
    values = np.zeros(1_000_000, dtype=bool)
    values[::2] = True
    out = randomized_response(values, eps, rng=rng(40))
    kept = out == values
    keep = math.exp(eps) / (1 + math.exp(eps))
    for part in (kept[values], kept[~values]):  # same rate whatever the true bit
        assert stats.binomtest(int(part.sum()), part.size, keep).pvalue > ALPHA
    wrong = math.exp(1.1 * eps) / (1 + math.exp(1.1 * eps))
    assert stats.binomtest(int(kept.sum()), kept.size, wrong).pvalue < ALPHA


def test_randomized_response_shape_threshold_and_ties(rng) -> None:
    out = randomized_response(np.ones((3, 4), dtype=bool), 2.0, rng=rng(41))
    assert out.shape == (3, 4) and out.dtype == np.bool_
    threshold = _keep_threshold(1.0)
    truth = Fraction(1) / (1 + exp_neg_decimal(Fraction(1), 80))
    assert threshold <= truth * 2**64 < threshold + 1
    with pytest.raises(UsageError):
        randomized_response(np.array([0, 1]), 1.0)
    # A huge epsilon keeps everything (flip probability e**-700), without hanging on the threshold.
    assert randomized_response(np.ones(1000, dtype=bool), 700.0, rng=rng(42)).all()


# -- privacy values ------------------------------------------------------------------------------------------------


def test_calibration_values_round_in_the_safe_direction() -> None:
    assert laplace_scale(1.0, 1.0) == 1.0
    assert Fraction(laplace_scale(3.0, 1.0)) >= Fraction(1, 3)
    assert Fraction(laplace_epsilon(3.0, 1.0)) >= Fraction(1, 3)
    assert laplace_epsilon(2.0, 1.0) == 0.5
    assert gaussian_rho(1.0, 1.0) == 0.5
    for rho in (0.1, 0.5, 1.0, 3.0):
        sigma = gaussian_sigma(rho, 1.0)
        assert Fraction(1) / (2 * Fraction(sigma) ** 2) <= Fraction(rho)  # exact, not up to rounding
        smaller = math.nextafter(sigma, 0.0)
        assert Fraction(1) / (2 * Fraction(smaller) ** 2) > Fraction(rho)  # and the smallest such float
    assert grid_sensitivity(1.0, 0.25) == 1.0
    assert grid_sensitivity(1.1, 0.25) == 1.25


# -- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: discrete_laplace(0.0, 10),
        lambda: discrete_laplace(-1.0, 10),
        lambda: discrete_laplace(float("nan"), 10),
        lambda: discrete_laplace(float("inf"), 10),
        lambda: discrete_laplace(2.0**49, 10),
        lambda: discrete_laplace(1.0, -1),
        lambda: discrete_laplace("1", 10),
        lambda: discrete_gaussian(2.0**-31, 10),
        lambda: discrete_gaussian(1.0, 10, rng=np.random.default_rng(0)),
        lambda: laplace(1.0, 10, granularity=0.3),
        lambda: laplace(1.0, 10, granularity=2.0**-60),
        lambda: gaussian(1.0, 10, granularity=0.0),
        lambda: snap([float("inf")], 1.0),
        lambda: snap([1e300], 2.0**-100),
        lambda: exponential([1.0, 2.0], 0.0, 1.0),
        lambda: exponential([1.0, 2.0], 1.0, -1.0),
        lambda: exponential([], 1.0, 1.0),
        lambda: exponential([1.0, float("nan")], 1.0, 1.0),
        lambda: report_noisy_max([[1.0, 2.0]], 1.0, 1.0),
        lambda: randomized_response(np.array([True]), -0.5),
        lambda: laplace_scale(0.0, 1.0),
        lambda: gaussian_sigma(-1.0, 1.0),
    ],
)
def test_bad_parameters_are_usage_errors_with_hints(call: Callable[[], object]) -> None:
    with pytest.raises(UsageError) as caught:
        call()
    assert caught.value.message and caught.value.hint
    assert caught.value.exit_code == 2


def test_default_randomness_is_used_when_rng_is_omitted() -> None:
    # No seed needed: the process-wide system generator serves these calls.
    assert discrete_gaussian(3.0, 5).shape == (5,)
    assert discrete_laplace(3.0, 0).shape == (0,)
    assert isinstance(exponential([1.0, 2.0], 1.0, 1.0), int)
