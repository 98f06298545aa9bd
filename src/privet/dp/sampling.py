"""Exact samplers over the integers: discrete Laplace and discrete Gaussian, vectorised with numpy.

Every random bit comes from :class:`privet.crypto.prg.Randomness` (AES-256-CTR). The samplers are *exact*: each
output has exactly the target probability mass function, assuming the keystream is uniform. No step rounds a
probability. The methods:

Uniform integers
    On ``{0..t-1}`` by rejection: Lemire's multiply-shift with its exact rejection test on 32-bit words when
    ``t <= 2**32``, otherwise ``r mod t`` for ``r`` uniform below the largest multiple of ``t`` that fits in 62
    bits. Both are unbiased, not approximately so.

Geometric with ``P(V >= k) = exp(-k)``
    Inverse CDF on a uniform 64-bit word ``w``: ``U = (w + R) / 2**64`` with ``R`` uniform on [0, 1), and
    ``V >= k`` exactly when ``U < exp(-k)``. The thresholds ``T_k = floor(exp(-k) * 2**64)`` (k = 1..44) are
    computed once with exact interval arithmetic, and ``w < T_k`` (resp. ``w > T_k``) proves ``U < exp(-k)``
    (resp. ``U > exp(-k)``) without rounding. Only ``w == T_k``, or ``V >= 44``, needs more bits of ``U``
    (probability about 2.4e-18 per draw); those go to the exact path below.

Bernoulli(``exp(-gamma)``) for rational ``gamma >= 0``
    A fast path in floating point that never decides wrongly, plus an exact fallback. The fast path takes
    ``u = k * 2**-53`` from 53 random bits (the real uniform ``U`` lies in ``[u, u + 2**-53)``), computes
    ``p = exp(-gamma)`` in float64 and a margin ``err = p * (gamma + 2) * 2**-40 + 2**-52``. It accepts when
    ``u < p - err`` and rejects when ``u >= p + err``. The floating-point error of ``gamma`` here is below
    ``2**-47 * (gamma + 1)`` (a few correctly rounded operations on exact integers, worked out in
    :func:`_gaussian_proposals`), and ``exp`` is accurate to a few ulp, so the margin is at least 2**6 times the
    worst error: outside the margin the float decision equals the exact one. Inside it (probability about
    ``2**-51 + 2**-39 * p * (gamma + 2)`` per draw), the element is decided exactly: ``gamma`` is rebuilt as a
    :class:`fractions.Fraction` from the sample's integers and the exact parameters, ``exp(-gamma)`` is enclosed
    in a rational interval with :mod:`decimal` (its ``exp`` and division are correctly rounded, so the interval
    is proven), and further random bits of the same ``U`` are drawn until ``U`` lies on one side of the
    interval. The result is therefore exact; floating point only decides how often the slow path runs.

Discrete Laplace, ``P(x) ∝ exp(-|x| / scale)``
    For ``scale > 1``, Canonne, Kamath and Steinke (2020), Algorithm 2, with ``1 / scale = t / s`` in lowest terms
    (``s``, ``t`` integers; a float scale is an exact rational): ``U`` uniform on ``{0..s-1}``, kept with
    probability ``exp(-U / s)``; ``V`` geometric as above; ``X = U + s V`` is then geometric with
    ``P(X = x) ∝ exp(-x / s)``, and ``Y = floor(X / t)`` has ``P(Y = y) ∝ exp(-y / scale)``. A random sign, and
    the proposal (negative, 0) is rejected so that 0 is not counted twice. For ``scale <= 1`` the difference
    of two geometrics ``G1 - G2`` with ``P(G >= k) = exp(-k / scale)``, each counted with Bernoulli(``exp(-1 /
    scale)``) trials.

Discrete Gaussian, ``P(x) ∝ exp(-x**2 / (2 sigma**2))``
    Canonne, Kamath and Steinke (2020), Algorithm 3: propose ``Y`` from the discrete Laplace with integer scale
    ``t = floor(sigma) + 1`` and accept with probability ``exp(-(|Y| - sigma**2 / t)**2 / (2 sigma**2))``. The two
    Bernoulli tests (the Laplace step's ``exp(-U / t)`` and this one) are independent, so they are merged into
    one test of ``exp(-(U / t + (|Y| - sigma**2 / t)**2 / (2 sigma**2)))``: one ``exp`` per proposal. About 35%
    of proposals are accepted for ``sigma <= 1`` and 45-48% above (measured).

Batches are drawn in chunks small enough to stay in cache; the loop runs until enough samples are accepted.
Events of probability below ``exp(-1000)`` per draw (a geometric above 1000) raise ``RuntimeError`` rather than
overflow 64-bit integers; the refusal does not depend on any data.

Limits: ``2**-30 <= scale, sigma <= 2**48`` (checked by the callers in :mod:`privet.dp.mechanisms`).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from privet.crypto.prg import Randomness

__all__ = [
    "MAX_SCALE",
    "MIN_SCALE",
    "Interval",
    "LazyUniform",
    "bernoulli_exp",
    "bernoulli_exp_fast",
    "bernoulli_exp_vector",
    "bernoulli_exp_word",
    "discrete_gaussian_exact",
    "discrete_laplace_exact",
    "exp_neg_interval",
    "resolve_bernoulli",
    "threshold_u64",
]

MIN_SCALE = 2.0**-30
MAX_SCALE = 2.0**48

# Proposals per chunk: arrays of 8192 elements (64 KiB) stay in L2 cache and below glibc's mmap threshold, which
# measured 5-10x faster per element than 64k-element chunks on the 2-core development machine.
_CHUNK = 8192
_REL_BAND = 2.0**-40
_ABS_BAND = 2.0**-52
_U53 = 2.0**-53
_SHIFT11 = np.uint64(11)
_SHIFT32 = np.uint64(32)
_SHIFT63 = np.uint64(63)
_LOW32 = np.uint64(0xFFFFFFFF)
_HUGE_GAMMA = 1 << 16  # beyond this exp(-gamma) < 2**-65536: decided by the leading bits of U alone
_GEOMETRIC_LIMIT = 1000

Interval = Callable[[int], tuple[Fraction, Fraction]]


# -- exact arithmetic --------------------------------------------------------------------------------------------


def exp_neg_interval(gamma: Fraction) -> Interval:
    """``interval(digits)`` -> rational ``(lo, hi)`` with ``lo <= exp(-gamma) <= hi``, tighter as digits grow.

    ``decimal`` division and ``exp`` are correctly rounded (half-even) at precision ``P``, so each has relative
    error at most ``d = 0.5 * 10**(1-P)``; with ``P >= 40 + log10(gamma)``, ``exp(-gamma)`` lies within a relative
    ``3 (gamma + 1) d`` of the computed value, and ``(gamma + 1) * 10**(3-P) = 200 (gamma + 1) d`` is used.
    """
    if gamma < 0:
        raise ValueError("gamma must be >= 0")  # internal invariant, never user input

    def interval(digits: int) -> tuple[Fraction, Fraction]:
        if gamma == 0:
            return Fraction(1), Fraction(1)
        if gamma > _HUGE_GAMMA:
            # exp(-gamma) < 2**-(1.44 * 65536) < 2**-65536.
            return Fraction(0), Fraction(1, 1 << _HUGE_GAMMA)
        precision = digits + len(str(gamma.numerator // gamma.denominator))
        context = decimal.Context(prec=precision, rounding=decimal.ROUND_HALF_EVEN, Emin=-999999, Emax=999999)
        quotient = context.divide(decimal.Decimal(gamma.numerator), decimal.Decimal(gamma.denominator))
        value = Fraction(context.exp(context.minus(quotient)))
        margin = (gamma + 1) * Fraction(1, 10 ** (precision - 3))
        return max(Fraction(0), value * (1 - margin)), value * (1 + margin)

    return interval


class LazyUniform:
    """``U = (k + R) / 2**bits`` with ``R`` uniform on [0, 1); further bits are drawn only when a test needs them."""

    __slots__ = ("bits", "k")

    def __init__(self, k: int, bits: int) -> None:
        self.k = k
        self.bits = bits

    def below(self, interval: Interval, rng: Randomness) -> bool:
        """Exactly whether ``U < p`` for the real ``p`` that every ``interval(digits)`` encloses."""
        digits = 40
        lo, hi = interval(digits)
        while True:
            scale = 1 << self.bits
            if Fraction(self.k + 1, scale) <= lo:
                return True
            if Fraction(self.k, scale) >= hi:
                return False
            if Fraction(1, scale) >= hi - lo:
                self.k = (self.k << 64) | int(rng.uint64(1)[0])
                self.bits += 64
            elif digits < 100_000:
                digits *= 2
                lo, hi = interval(digits)
            else:  # only if U's first 65536 bits are all zero, probability 2**-65536
                raise RuntimeError("exact Bernoulli test did not converge")


def bernoulli_exp(gamma: Fraction, rng: Randomness) -> bool:
    """One exact Bernoulli(``exp(-gamma)``) trial (slow path; for tests and rare cases)."""
    return LazyUniform(0, 0).below(exp_neg_interval(gamma), rng)


def threshold_u64(interval: Interval) -> int:
    """``T = floor(p * 2**64)`` exactly, for a ``p`` in [0, 1) enclosed by ``interval``.

    A uniform 64-bit word ``w < T`` proves ``U < p`` and ``w > T`` proves ``U > p`` for ``U = (w + R) / 2**64``;
    only ``w == T`` needs more bits (:class:`LazyUniform`).
    """
    digits = 60
    while True:
        lo, hi = interval(digits)
        # p < 1, so floor(p * 2**64) <= 2**64 - 1 even when the upper end of the interval is 1.
        low = min(math.floor(lo * (1 << 64)), (1 << 64) - 1)
        high = min(math.floor(hi * (1 << 64)), (1 << 64) - 1)
        if low == high:
            return low
        digits *= 2


# Thresholds of the geometric V: _GEO_T[k] = floor(exp(-k) * 2**64) for k = 1..44 (index 0 unused).
_GEO_MAX = 44
_GEO_T = [0] + [threshold_u64(exp_neg_interval(Fraction(k))) for k in range(1, _GEO_MAX + 1)]
_GEO_ASC = np.array(_GEO_T[:0:-1], dtype=np.uint64)  # T_44 .. T_1, ascending
_T1, _T2, _T3 = (np.uint64(_GEO_T[k]) for k in (1, 2, 3))
assert _GEO_T[_GEO_MAX] >= 1 and all(_GEO_T[k] > _GEO_T[k + 1] for k in range(1, _GEO_MAX))


# -- vectorised building blocks ------------------------------------------------------------------------------------


def bernoulli_exp_word(word: int, gamma: Fraction, rng: Randomness) -> bool:
    """Exactly whether ``U < exp(-gamma)`` for ``U`` whose first 53 bits are ``word``'s high bits (the fast path's)."""
    return LazyUniform(int(word) >> 11, 53).below(exp_neg_interval(gamma), rng)


def resolve_bernoulli(
    accept: np.ndarray,
    ambiguous: np.ndarray,
    words: np.ndarray,
    exact_gamma: Callable[[int], Fraction],
    rng: Randomness,
) -> None:
    """Decide the ambiguous elements of a fast Bernoulli(exp(-gamma)) test exactly, in place."""
    for i in np.flatnonzero(ambiguous).tolist():
        accept[i] = bernoulli_exp_word(int(words[i]), exact_gamma(i), rng)


def bernoulli_exp_fast(gamma: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sure accept, undecided) for Bernoulli(``exp(-gamma)``) from 53-bit uniforms in the high bits of ``words``."""
    if np.isnan(gamma).any():  # fail closed: a NaN would compare False and silently reject
        raise RuntimeError("internal error: NaN in a Bernoulli(exp(-gamma)) test")
    u = (words >> _SHIFT11).view(np.int64).astype(np.float64)
    u *= _U53
    p = np.exp(-gamma)
    err = gamma + 2.0
    err *= p
    err *= _REL_BAND
    err += _ABS_BAND
    accept = u < p - err
    undecided = u < p + err
    undecided &= ~accept
    return accept, undecided


def bernoulli_exp_vector(
    gamma: np.ndarray, exact_gamma: Callable[[int], Fraction], rng: Randomness, words: np.ndarray | None = None
) -> np.ndarray:
    """Exact, vectorised Bernoulli(``exp(-gamma[i])``); ``exact_gamma(i)`` gives element ``i``'s exact rational."""
    if words is None:
        words = rng.uint64(gamma.size)
    accept, undecided = bernoulli_exp_fast(gamma, words)
    if undecided.any():
        resolve_bernoulli(accept, undecided, words, exact_gamma, rng)
    return accept


def _geometric_exact(word: int, rng: Randomness) -> int:
    """``V = #{k >= 1 : U < exp(-k)}`` for ``U = (word + R) / 2**64``, decided exactly with more bits as needed."""
    uniform = LazyUniform(word, 64)
    v = 0
    while uniform.below(exp_neg_interval(Fraction(v + 1)), rng):
        v += 1
        if v > _GEOMETRIC_LIMIT:
            raise RuntimeError("geometric sample above 1000 (probability below exp(-1000)); refusing to overflow")
    return v


def _geometric(words: np.ndarray, rng: Randomness) -> np.ndarray:
    """``V`` with ``P(V >= k) = exp(-k)`` (int64), one uniform 64-bit word each; exact."""
    v = (words < _T1).astype(np.int64)
    v += words < _T2
    deep_mask = words < _T3
    v += deep_mask
    ties = words == _T1
    ties |= words == _T2
    ties |= words == _T3
    special = [np.flatnonzero(ties)]
    deep = np.flatnonzero(deep_mask)  # about 5%: finish these with a binary search over all 44 thresholds
    if deep.size:
        deep_words = words[deep]
        below = np.searchsorted(_GEO_ASC, deep_words, side="right")  # thresholds <= w
        v[deep] = _GEO_MAX - below
        unsure = (below == 0) | (_GEO_ASC[below - 1] == deep_words)  # V >= 44, or a tie with a threshold
        special.append(deep[unsure])
    for i in np.concatenate(special).tolist():
        v[i] = _geometric_exact(int(words[i]), rng)
    return v


def _uniform_below(t: int, words: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(``U`` uniform on {0..t-1} as int64, mask of proposals to keep) from the low bits of ``words``.

    Bit 63 of each word is left untouched for the caller's sign.
    """
    if t == 1:
        return np.zeros(words.size, dtype=np.int64), None
    if t <= 1 << 32:
        # Lemire (2019): m = x * t for a 32-bit x; U = m >> 32 is uniform once m's low half < 2**32 mod t is
        # rejected. x * t < 2**64, so uint64 arithmetic is exact.
        product = words & _LOW32
        product *= np.uint64(t)
        keep = (product & _LOW32) >= np.uint64((1 << 32) % t)
        return (product >> _SHIFT32).view(np.int64), keep
    bits = 62
    limit = ((1 << bits) // t) * t
    low = words & np.uint64((1 << bits) - 1)
    keep = low < np.uint64(limit)
    low %= np.uint64(t)
    return low.view(np.int64), keep


def _negative(words: np.ndarray) -> np.ndarray:
    return (words >> _SHIFT63).astype(bool)


def _collect(size: int, proposals: Callable[[int], np.ndarray], acceptance: float) -> np.ndarray:
    """Call ``proposals(n)`` (returns accepted samples) until ``size`` samples exist."""
    out = np.empty(size, dtype=np.int64)
    filled = 0
    seen = kept = 0
    while filled < size:
        rate = (kept + acceptance * 64) / (seen + 64)  # running estimate, starting from the prior
        n = min(_CHUNK, int((size - filled) / rate * 1.1) + 64)
        got = proposals(n)
        seen += n
        kept += got.size
        take = min(got.size, size - filled)
        out[filled : filled + take] = got[:take]
        filled += take
    return out


# -- discrete Gaussian ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GaussianParams:
    sigma2: Fraction  # sigma**2, exact
    t: int  # floor(sigma) + 1
    center: float  # sigma**2 / t, correctly rounded
    inv_2sigma2: float  # 1 / (2 sigma**2), correctly rounded
    inv_t: float  # 1 / t, correctly rounded

    @classmethod
    def of(cls, sigma: float) -> _GaussianParams:
        sigma2 = Fraction(sigma) ** 2
        t = math.floor(sigma) + 1
        return cls(sigma2, t, float(sigma2 / t), float(1 / (2 * sigma2)), 1.0 / t)

    def exact_gamma(self, u: int, y: int) -> Fraction:
        return Fraction(u, self.t) + (y - self.sigma2 / self.t) ** 2 / (2 * self.sigma2)


def _gaussian_proposals(params: _GaussianParams, n: int, rng: Randomness) -> np.ndarray:
    """Run ``n`` proposals of CKS Algorithm 3 (merged Bernoulli test); return the accepted samples.

    Floating-point error of ``gamma = U/t + (Y - c)**2 * k`` (``c = sigma**2/t``, ``k = 1/(2 sigma**2)``, both
    correctly rounded; ``Y`` and ``U`` exact below 2**53, ``Y`` rounded once above): ``U/t`` carries relative
    error <= 2**-52. With ``d = Y - c``, the computed ``d`` is off by at most ``(c + |Y| + |d|) 2**-53 <=
    2 (c + |d|) 2**-52``; squaring and scaling add relative 3 * 2**-53, and since ``c = sigma**2/t < sigma``,
    ``2 |d| k c <= sqrt(2 gamma)``, so the second term's error is below ``2**-50 (gamma + 1)``. Adding: below
    ``2**-47 (gamma + 1)``, against the fast path's margin of ``2**-40 (gamma + 2)``.
    """
    words = rng.uint64(3 * n)
    w_u, w_v, w_a = words[:n], words[n : 2 * n], words[2 * n :]
    u, keep = _uniform_below(params.t, w_u)
    negative = _negative(w_u)
    v = _geometric(w_v, rng)
    y = v * params.t
    y += u
    # (negative, 0) would count zero twice.
    zero_twice = y == 0
    zero_twice &= negative
    keep = ~zero_twice if keep is None else keep & ~zero_twice
    d = y.astype(np.float64)
    d -= params.center
    gamma = d * d
    gamma *= params.inv_2sigma2
    if params.t > 1:
        gamma += u.astype(np.float64) * params.inv_t
    accept, undecided = bernoulli_exp_fast(gamma, w_a)
    accept &= keep
    undecided &= keep
    if undecided.any():
        resolve_bernoulli(accept, undecided, w_a, lambda i: params.exact_gamma(int(u[i]), int(y[i])), rng)
    values = y[accept]
    np.negative(values, out=values, where=negative[accept])
    return values


def discrete_gaussian_exact(sigma: float, size: int, rng: Randomness) -> np.ndarray:
    """``size`` exact samples with ``P(x) ∝ exp(-x**2 / (2 sigma**2))`` on the integers (int64).

    ``sigma`` must already be validated (finite, ``MIN_SCALE <= sigma <= MAX_SCALE``).
    """
    params = _GaussianParams.of(sigma)
    return _collect(size, lambda n: _gaussian_proposals(params, n, rng), 0.45)


# -- discrete Laplace ----------------------------------------------------------------------------------------------


def _laplace_proposals(s: int, t: int, n: int, rng: Randomness) -> np.ndarray:
    """``n`` proposals of CKS Algorithm 2 for ``1/scale = t/s``; return the accepted samples."""
    words = rng.uint64(3 * n)
    w_u, w_v, w_a = words[:n], words[n : 2 * n], words[2 * n :]
    u, keep = _uniform_below(s, w_u)
    negative = _negative(w_u)
    v = _geometric(w_v, rng)
    if v.max(initial=0) > ((1 << 62) - s) // s:  # s * V + U must fit in int64; V > 1000 already raised
        raise RuntimeError("discrete Laplace proposal out of 64-bit range")
    x = v * s
    x += u
    y = x // t if t > 1 else x
    zero_twice = y == 0
    zero_twice &= negative
    keep = ~zero_twice if keep is None else keep & ~zero_twice
    if s > 1:
        # gamma = U / s: U, s < 2**53 are exact floats, one correctly rounded division.
        gamma = u.astype(np.float64) / float(s)
        accept, undecided = bernoulli_exp_fast(gamma, w_a)
        accept &= keep
        undecided &= keep
        if undecided.any():
            resolve_bernoulli(accept, undecided, w_a, lambda i: Fraction(int(u[i]), s), rng)
    else:
        accept = keep  # U = 0 always: exp(-0) = 1
    values = y[accept]
    np.negative(values, out=values, where=negative[accept])
    return values


def _geometric_by_trials(n: int, gamma: Fraction, rng: Randomness) -> np.ndarray:
    """``n`` geometrics with ``P(G >= k) = exp(-k gamma)``: successes of Bernoulli(exp(-gamma)) before a failure."""
    gamma_hat = float(gamma)
    counts = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        trial = bernoulli_exp_vector(np.full(active.size, gamma_hat), lambda _i: gamma, rng)
        active = active[trial]
        counts[active] += 1
    return counts


def discrete_laplace_exact(scale: float, size: int, rng: Randomness) -> np.ndarray:
    """``size`` exact samples with ``P(x) ∝ exp(-|x| / scale)`` on the integers (int64).

    ``scale`` must already be validated (finite, ``MIN_SCALE <= scale <= MAX_SCALE``).
    """
    inverse = 1 / Fraction(scale)
    if scale <= 1:
        both = _geometric_by_trials(2 * size, inverse, rng)
        return both[:size] - both[size:]
    t, s = inverse.numerator, inverse.denominator
    acceptance = (1 - math.exp(-1)) * 0.9
    return _collect(size, lambda n: _laplace_proposals(s, t, n, rng), acceptance)
