"""Noise mechanisms for differential privacy, sampled exactly and safe against floating-point attacks.

Why not ``numpy.random.laplace``: Mironov (2012) showed that Laplace noise sampled as ``-b * log(U)`` in floating
point leaks the input. The set of floats such a sampler can output depends on the value it is added to, so
some outputs can only come from one input. Privet never samples real-valued noise that way. Every mechanism
here draws from a distribution on a discrete set with exactly the intended probabilities
(:mod:`privet.dp.sampling` gives the algorithms and the argument), using only the AES-CTR generator of
:mod:`privet.crypto.prg`:

- :func:`discrete_laplace`, :func:`discrete_gaussian`: integer noise, for integer-valued queries (counts, sums of
  integers).
- :func:`laplace`, :func:`gaussian`: real-valued noise *on a grid*: ``granularity * k`` with ``k`` drawn exactly
  from the discrete Laplace or Gaussian with scale ``scale / granularity``. So the noise is exactly Laplace- or
  Gaussian-shaped on the grid ``granularity * Z``. The granularity is a power of two. By default it is
  :func:`default_granularity`, ``2**(floor(log2 scale) - 40)``, about a trillionth of the scale, so the grid
  is far finer than the noise. (OpenDP uses the same construction, with a default grid of ``2**-1074`` sampled
  in arbitrary precision; privet's coarser default keeps every step in 64-bit integers.) To release
  ``value + noise``, snap the value first: ``snap(value, g) + laplace(scale, n, granularity=g)``. Both terms
  are multiples of ``g``, so the float sum is exact while ``|result| < 2**53 * g``. Beyond that it is the
  correctly rounded exact sum, which is post-processing of an exact mechanism and so just as private.
  Snapping can move a value by up to ``g / 2``, so calibrate with :func:`grid_sensitivity`.
- :func:`exponential`: the exponential mechanism, exact. It uses rejection from uniform proposals, not the
  Gumbel-max trick, whose ``-log(-log U)`` is floating-point noise of exactly the kind above.
- :func:`report_noisy_max`: permute-and-flip (McKenna and Sheldon 2020), which is report-noisy-max with
  exponential noise (Ding et al. 2021), exact.
- :func:`randomized_response`: keeps each bit with probability ``e**eps / (1 + e**eps)``, exactly.

What each mechanism guarantees is available as a value, not only as prose: :func:`laplace_epsilon`,
:func:`laplace_scale`, :func:`gaussian_rho`, :func:`gaussian_sigma`, :func:`grid_sensitivity`. These round in
the safe direction (epsilon and rho up, scale and sigma up). Turning rho into (epsilon, delta) and composing
releases is :mod:`privet.dp.accounting`'s job.

Timing: the work a sampler does depends on the random draws, and for :func:`exponential` on the scores. The
guarantees cover the released values, not how long the call took.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from privet.crypto.prg import Randomness, default_randomness
from privet.dp.sampling import (
    MAX_SCALE,
    MIN_SCALE,
    Interval,
    LazyUniform,
    bernoulli_exp_fast,
    bernoulli_exp_vector,
    bernoulli_exp_word,
    discrete_gaussian_exact,
    discrete_laplace_exact,
    exp_neg_interval,
    threshold_u64,
)
from privet.errors import UsageError

__all__ = [
    "GRID_BITS",
    "default_granularity",
    "discrete_gaussian",
    "discrete_laplace",
    "exponential",
    "gaussian",
    "gaussian_rho",
    "gaussian_sigma",
    "grid_sensitivity",
    "laplace",
    "laplace_epsilon",
    "laplace_scale",
    "randomized_response",
    "report_noisy_max",
    "snap",
]

GRID_BITS = 40  # default grid: 2**-40 of the scale's power of two
_CONTINUOUS_MIN = 1e-300
_CONTINUOUS_MAX = 1e300
_GAMMA_CAP = 2.0**1000  # any gamma this large has exp(-gamma) = 0 in float64; keeps inf out of the fast path


# -- validation ----------------------------------------------------------------------------------------------------


def _real(name: str, value: object, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UsageError(f"{name} must be a number, not {type(value).__name__}", hint)
    number = float(value)
    if not math.isfinite(number):
        raise UsageError(f"{name} must be finite, got {number!r}", hint)
    return number


def _positive(name: str, value: object, hint: str) -> float:
    number = _real(name, value, hint)
    if number <= 0:
        raise UsageError(f"{name} must be > 0, got {number!r}", hint)
    return number


def _in_range(name: str, value: object, low: float, high: float, hint: str) -> float:
    number = _positive(name, value, hint)
    if not low <= number <= high:
        raise UsageError(f"{name} {number!r} is outside the supported range [{low!r}, {high!r}]", hint)
    return number


def _size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
        raise UsageError(
            f"size must be a non-negative int, not {size!r}", "Pass the number of samples, e.g. size=1000."
        )
    return int(size)


def _power_of_two(name: str, value: object) -> float:
    hint = f"Use a power of two for {name}, e.g. 2.0**-20, so that grid values add exactly."
    number = _positive(name, value, hint)
    if math.frexp(number)[0] != 0.5:
        raise UsageError(f"{name} must be a power of two, got {number!r}", hint)
    return number


def _rng(rng: Randomness | None) -> Randomness:
    if rng is None:
        return default_randomness()
    if not isinstance(rng, Randomness):
        raise UsageError(
            f"rng must be a privet Randomness, not {type(rng).__name__}",
            "Leave rng=None for the system CSPRNG; numpy generators are not safe for privacy noise.",
        )
    return rng


def _scores(scores: ArrayLike) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise UsageError(
            f"scores must be a non-empty 1-D array, got shape {array.shape}", "Pass one score per candidate."
        )
    if not np.isfinite(array).all():
        raise UsageError("scores contain NaN or infinite values", "Replace them with finite scores before selecting.")
    return array


_SCALE_HINT = "Pass a finite noise scale > 0, e.g. laplace_scale(epsilon, sensitivity)."
_SIGMA_HINT = "Pass a finite sigma > 0, e.g. gaussian_sigma(rho, sensitivity)."
_EPS_HINT = "Pass a finite epsilon > 0 (the privacy loss; smaller is more private)."
_SENS_HINT = "Pass the query's sensitivity: the most one person can change it, > 0."


# -- integer noise -------------------------------------------------------------------------------------------------


def discrete_laplace(scale: float, size: int, *, rng: Randomness | None = None) -> np.ndarray:
    """``size`` integers (int64) with ``P(x) ∝ exp(-|x| / scale)``, sampled exactly.

    Privacy: added to an integer query of L1 sensitivity ``Δ``, the result is ``Δ / scale``-DP (pure);
    see :func:`laplace_epsilon`. ``scale`` must lie in ``[2**-30, 2**48]``.
    """
    scale = _in_range("scale", scale, MIN_SCALE, MAX_SCALE, _SCALE_HINT)
    return discrete_laplace_exact(scale, _size(size), _rng(rng))


def discrete_gaussian(sigma: float, size: int, *, rng: Randomness | None = None) -> np.ndarray:
    """``size`` integers (int64) with ``P(x) ∝ exp(-x**2 / (2 sigma**2))``, sampled exactly.

    Privacy: added to an integer query of L2 sensitivity ``Δ``, the result is ``Δ**2 / (2 sigma**2)``-zCDP
    (Canonne, Kamath, Steinke 2020); see :func:`gaussian_rho`. ``sigma`` must lie in ``[2**-30, 2**48]``.
    """
    sigma = _in_range("sigma", sigma, MIN_SCALE, MAX_SCALE, _SIGMA_HINT)
    return discrete_gaussian_exact(sigma, _size(size), _rng(rng))


# -- real-valued noise on a grid -----------------------------------------------------------------------------------


def default_granularity(scale: float) -> float:
    """The default grid for noise of this scale: ``2**(floor(log2 scale) - 40)``, a power of two."""
    scale = _positive("scale", scale, _SCALE_HINT)
    return math.ldexp(1.0, math.frexp(scale)[1] - 1 - GRID_BITS)


def _grid(name: str, scale: float, granularity: float | None, hint: str) -> tuple[float, float]:
    scale = _in_range(name, scale, _CONTINUOUS_MIN, _CONTINUOUS_MAX, hint)
    g = default_granularity(scale) if granularity is None else _power_of_two("granularity", granularity)
    ratio = scale / g  # exact: g is a power of two and the ratio stays in range below
    if not MIN_SCALE <= ratio <= MAX_SCALE:
        raise UsageError(
            f"granularity {g!r} is too {'fine' if ratio > MAX_SCALE else 'coarse'} for {name} {scale!r}",
            f"Use a granularity between {name} * 2**-48 and {name} * 2**30, or leave it None for the default.",
        )
    return ratio, g


def laplace(scale: float, size: int, *, granularity: float | None = None, rng: Randomness | None = None) -> np.ndarray:
    """``size`` floats ``granularity * k``, ``k`` exact discrete Laplace, so ``P(x) ∝ exp(-|x| / scale)`` on the grid.

    ``granularity`` is a power of two (default :func:`default_granularity`). Privacy: added to values snapped
    with :func:`snap` to the same grid, the result is ``grid_sensitivity(Δ, granularity) / scale``-DP for a
    scalar query of sensitivity ``Δ`` (for a d-dimensional query snapped per coordinate, use L1 sensitivity
    ``Δ + granularity * d``).
    """
    ratio, g = _grid("scale", scale, granularity, _SCALE_HINT)
    steps = discrete_laplace_exact(ratio, _size(size), _rng(rng))
    return steps.astype(np.float64) * g  # exact: |steps| < 2**53 and g is a power of two


def gaussian(sigma: float, size: int, *, granularity: float | None = None, rng: Randomness | None = None) -> np.ndarray:
    """``size`` floats ``granularity * k``, ``k`` exact discrete Gaussian with ``sigma / granularity``.

    ``P(x) ∝ exp(-x**2 / (2 sigma**2))`` on the grid ``granularity * Z`` (a power of two, default
    :func:`default_granularity`). Privacy: added to a scalar snapped to the same grid, the result is
    ``gaussian_rho(sigma, grid_sensitivity(Δ, granularity))``-zCDP. For a d-dimensional query snapped per
    coordinate, use L2 sensitivity ``Δ + granularity * sqrt(d)`` (each coordinate moves by at most half a step).
    """
    ratio, g = _grid("sigma", sigma, granularity, _SIGMA_HINT)
    steps = discrete_gaussian_exact(ratio, _size(size), _rng(rng))
    return steps.astype(np.float64) * g


def snap(value: ArrayLike, granularity: float) -> np.ndarray:
    """Round to the nearest multiple of ``granularity`` (a power of two), halves up; exact, float64.

    Snapping is what makes ``snap(v) + laplace(..., granularity=g)`` an exact grid mechanism. It changes
    sensitivity: values ``Δ`` apart snap to values at most ``grid_sensitivity(Δ, g)`` apart.
    """
    g = _power_of_two("granularity", granularity)
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise UsageError("cannot snap NaN or infinite values", "Replace or clip them before adding noise.")
    with np.errstate(over="ignore"):
        steps = array / g  # exact (a power of two) unless it overflows, checked next
    if not np.isfinite(steps).all():
        raise UsageError(
            f"values are too large for granularity {g!r}", "Use a coarser granularity or clip the values first."
        )
    # floor(y + 0.5) without rounding y + 0.5: y - floor(y) is exact in float64.
    rounded = np.floor(steps)
    rounded += (steps - rounded) >= 0.5
    return rounded * g


def grid_sensitivity(sensitivity: float, granularity: float) -> float:
    """The sensitivity after :func:`snap`: ``ceil(Δ / g) * g`` (at most ``Δ + g``), exact."""
    delta = _positive("sensitivity", sensitivity, _SENS_HINT)
    g = _power_of_two("granularity", granularity)
    return float(math.ceil(Fraction(delta) / Fraction(g)) * Fraction(g))


# -- privacy as values ---------------------------------------------------------------------------------------------


def _up(value: Fraction) -> float:
    """The smallest float >= value."""
    result = float(value)
    if Fraction(result) < value:
        result = math.nextafter(result, math.inf)
    return result


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """The Laplace scale ``Δ / ε`` (rounded up) that makes a query of L1 sensitivity ``Δ`` ``ε``-DP."""
    eps = _positive("epsilon", epsilon, _EPS_HINT)
    delta = _positive("sensitivity", sensitivity, _SENS_HINT)
    return _up(Fraction(delta) / Fraction(eps))


def laplace_epsilon(scale: float, sensitivity: float) -> float:
    """The pure-DP ``ε = Δ / scale`` (rounded up) of Laplace noise of ``scale`` on a query of L1 sensitivity ``Δ``.

    Holds for :func:`discrete_laplace` on integer queries and for :func:`laplace` on snapped values with
    ``Δ = grid_sensitivity(...)``.
    """
    b = _positive("scale", scale, _SCALE_HINT)
    delta = _positive("sensitivity", sensitivity, _SENS_HINT)
    return _up(Fraction(delta) / Fraction(b))


def gaussian_rho(sigma: float, sensitivity: float) -> float:
    """The zCDP ``ρ = Δ**2 / (2 sigma**2)`` (rounded up) of (discrete) Gaussian noise on L2 sensitivity ``Δ``."""
    s = _positive("sigma", sigma, _SIGMA_HINT)
    delta = _positive("sensitivity", sensitivity, _SENS_HINT)
    return _up(Fraction(delta) ** 2 / (2 * Fraction(s) ** 2))


def gaussian_sigma(rho: float, sensitivity: float) -> float:
    """The smallest float ``sigma`` with ``Δ**2 / (2 sigma**2) <= rho`` exactly (``ρ``-zCDP)."""
    target = Fraction(_positive("rho", rho, "Pass the zCDP budget rho > 0."))
    delta = Fraction(_positive("sensitivity", sensitivity, _SENS_HINT))
    sigma = float(delta) / math.sqrt(2 * float(target))

    def ok(s: float) -> bool:
        return delta**2 / (2 * Fraction(s) ** 2) <= target

    while not ok(sigma):
        sigma = math.nextafter(sigma, math.inf)
    while sigma > 0 and ok(math.nextafter(sigma, 0.0)):
        sigma = math.nextafter(sigma, 0.0)
    return sigma


# -- selection -----------------------------------------------------------------------------------------------------


def _selection_gaps(
    scores: ArrayLike, epsilon: float, sensitivity: float, monotonic: bool
) -> tuple[np.ndarray, Callable[[int], Fraction]]:
    """(float ``gamma_i = ε (max u - u_i) / (kΔ)``, exact ``gamma_i`` on demand) for the selection mechanisms.

    The float gammas carry relative error below 2**-50 (one rounded subtraction, one rounded factor, one
    product); the exact ones are only built for the rare draws the fast Bernoulli test leaves undecided.
    """
    utility = _scores(scores)
    eps = _positive("epsilon", epsilon, _EPS_HINT)
    delta = _positive("sensitivity", sensitivity, _SENS_HINT)
    divisor = 1 if monotonic else 2
    best = float(utility.max())
    with np.errstate(over="ignore"):
        gamma = (best - utility) * (eps / (divisor * delta))
    np.minimum(gamma, _GAMMA_CAP, out=gamma)  # overflowed gaps become the cap: exp(-gamma) is 0 either way

    def exact(i: int) -> Fraction:
        return Fraction(eps) * (Fraction(best) - Fraction(float(utility[i]))) / (divisor * Fraction(delta))

    return gamma, exact


def exponential(
    scores: ArrayLike,
    epsilon: float,
    sensitivity: float,
    *,
    monotonic: bool = False,
    rng: Randomness | None = None,
) -> int:
    """The exponential mechanism: index ``i`` with probability ∝ ``exp(ε u_i / (2Δ))``, exactly.

    ``ε``-DP when one person changes any score by at most ``sensitivity``. With ``monotonic=True`` (every score
    moves in the same direction when a person is added), the weights are ``exp(ε u_i / Δ)`` and it is still
    ``ε``-DP. Sampled by rejection: a uniform candidate ``i`` is accepted with probability
    ``exp(-ε (max u - u_i) / (2Δ))`` (an exact Bernoulli test). Expected proposals: ``n / Σ exp(...)``, at
    most ``n``.
    """
    gamma, exact_gamma = _selection_gaps(scores, epsilon, sensitivity, monotonic)
    random = _rng(rng)
    n = gamma.size
    acceptance = float(np.exp(-gamma).mean())  # >= 1/n: the best candidate has weight 1
    batch = int(min(max(64.0, 2.0 / acceptance), 65536.0))
    while True:
        candidates = random.integers_below(n, batch)
        words = random.uint64(batch)
        accept, undecided = bernoulli_exp_fast(gamma[candidates], words)
        # The first accepted proposal in draw order is the rejection sampler's output.
        for j in np.flatnonzero(accept | undecided).tolist():
            index = int(candidates[j])
            if accept[j] or bernoulli_exp_word(int(words[j]), exact_gamma(index), random):
                return index


def report_noisy_max(
    scores: ArrayLike,
    epsilon: float,
    sensitivity: float,
    *,
    monotonic: bool = False,
    rng: Randomness | None = None,
) -> int:
    """Report-noisy-max with exponential noise, as permute-and-flip: ``ε``-DP, exact.

    Each candidate flips a coin with probability ``exp(-ε (max u - u_i) / (2Δ))`` (``/ Δ`` with
    ``monotonic=True``); the answer is a uniform choice among the candidates whose coin came up (the best one
    always does). This is permute-and-flip (McKenna and Sheldon 2020), which Ding et al. (2021) showed is
    report-noisy-max with Exponential(``2Δ/ε``) noise. It is ``ε``-DP like :func:`exponential` and never has
    lower expected utility. The work is one coin per candidate, whatever the scores.
    """
    gamma, exact_gamma = _selection_gaps(scores, epsilon, sensitivity, monotonic)
    random = _rng(rng)
    coins = bernoulli_exp_vector(gamma, exact_gamma, random)
    winners = np.flatnonzero(coins)
    return int(winners[int(random.integers_below(winners.size, 1)[0])])


# -- randomized response -------------------------------------------------------------------------------------------


def _keep_interval(epsilon: Fraction) -> Interval:
    negative_exp = exp_neg_interval(epsilon)

    def interval(digits: int) -> tuple[Fraction, Fraction]:
        lo, hi = negative_exp(digits)  # encloses exp(-eps); keep = 1 / (1 + exp(-eps))
        return 1 / (1 + hi), 1 / (1 + lo)

    return interval


@lru_cache(maxsize=64)
def _keep_threshold(epsilon: float) -> int:
    return threshold_u64(_keep_interval(Fraction(epsilon)))


def randomized_response(values: ArrayLike, epsilon: float, *, rng: Randomness | None = None) -> np.ndarray:
    """Each boolean kept with probability ``e**ε / (1 + e**ε)``, flipped otherwise: ``ε``-local DP per value.

    Exact: a uniform 64-bit word is compared with ``floor(p * 2**64)`` (computed once in exact arithmetic); a
    tie (probability ``2**-64``) is decided with more random bits.
    """
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise UsageError(
            f"randomized_response needs booleans, got dtype {array.dtype}", "Convert with values.astype(bool) first."
        )
    eps = _positive("epsilon", epsilon, _EPS_HINT)
    random = _rng(rng)
    threshold = _keep_threshold(eps)
    words = random.uint64(array.size)
    keep = words < np.uint64(threshold)
    for i in np.flatnonzero(words == np.uint64(threshold)).tolist():
        keep[i] = LazyUniform(int(words[i]), 64).below(_keep_interval(Fraction(eps)), random)
    return np.where(keep.reshape(array.shape), array, ~array)
