"""Privacy accounting: the one place privet turns mechanisms into an (epsilon, delta) guarantee.

Every release, ledger charge and DP-SGD run describes what it did as *events* (frozen dataclasses that
serialise to JSON for the ledger) and asks :func:`compose_epsilon` or :func:`compose_delta` what they add up
to. The numbers come from Google's ``dp_accounting`` (pinned at 0.6.0), with the add-or-remove-one
neighbouring relation throughout:

- ``"pld"`` (the default): privacy loss distributions (``dp_accounting.pld``), built and composed as
  ``PLDAccountant`` does for the events it supports (and with the same library for those it lacks),
  pessimistic rounding on a grid of :data:`PLD_VALUE_DISCRETIZATION_INTERVAL`.
  It is close to exact: on the DP-SGD bar (noise 1.1, rate 256/60000, 14,062 steps, delta 1e-5) it reports
  2.3820 against 2.3816 at a 7x finer grid, in about 0.3 s.
- ``"rdp"``: Renyi DP (``dp_accounting.rdp.RdpAccountant``, its default orders). Looser (2.5966 on the bar)
  but cheap and robust; it is the fallback.

If the requested accountant raises, cannot represent the composition at a tractable size, or gives no finite
answer, the other one is tried; the :class:`Guarantee` names the accountant that produced the number and why
it fell back. When neither gives a finite answer, :class:`AccountingError` is raised: an unbounded epsilon is
never returned as if it were a guarantee.

How each event is accounted (``k`` = ``steps``; identical events are merged first, so ``k`` is their total):

============================  ======================================  =========================================
event                         PLD                                     RDP
============================  ======================================  =========================================
GaussianEvent, rate 1         Gaussian, std ``sigma / sqrt(k)``       ``SelfComposed(GaussianDpEvent)``
                              (exact for k-fold Gaussian)
GaussianEvent, rate q < 1     Poisson-subsampled Gaussian, k-fold     ``SelfComposed(PoissonSampled(Gaussian))``
LaplaceEvent                  Laplace, k-fold                         ``SelfComposed(LaplaceDpEvent)`` (tight)
DiscreteLaplaceEvent          discrete Laplace, k-fold (exact)        ``(sens/scale)``-DP as randomized response
DiscreteGaussianEvent         discrete Gaussian, k-fold (exact)       ``ZCDpEvent(sens**2 / (2 sigma**2))``
ZCDPEvent                     none: the composition goes to RDP       ``ZCDpEvent(rho)``
PureEvent                     canonical eps-DP pair, exact k-fold     ``eps``-DP as randomized response
ApproxEvent                   canonical (eps, delta) pair, exact      as PureEvent, plus ``k * delta``
                              k-fold                                  added to delta
============================  ======================================  =========================================

Why these are sound, and where they are loose:

- An ``eps``-DP mechanism's output pair on any two neighbours is a post-processing of binary randomized
  response with ratio ``e**eps`` (Kairouz, Oh, Viswanath 2015); an ``(eps, delta)`` one of the same pair
  with a ``delta`` chance of revealing the input. So their divergences are bounded by those of these
  *canonical pairs*, and composition of dominating pairs dominates adaptive composition (Zhu, Dong, Wang
  2022). PLD composes the canonical pairs exactly (one binomial, rounded once, instead of ``k`` roundings),
  so PureEvent and ApproxEvent are tight for "any eps-DP mechanism". RDP uses the Renyi divergence of binary
  randomized response, computed by ``RdpAccountant`` under ``REPLACE_ONE`` (where a randomized response
  event *is* that pair); this is the tightest RDP curve valid for every eps-DP mechanism, but RDP's
  conversion to (eps, delta) is itself loose.
- ApproxEvent under RDP: by joint convexity of the hockey-stick divergence, the composition is
  ``(eps', delta' + sum of k * delta)``-DP where ``(eps', delta')`` holds with the events replaced by their
  pure parts.
- Discrete Laplace under RDP is bounded as a generic ``sens/scale``-DP mechanism, above its own Renyi
  divergence (``RdpAccountant`` has no discrete Laplace); PLD uses its exact privacy loss.
- Discrete Gaussian: PLD uses ``dp_accounting``'s exact discrete Gaussian loss, truncated where the noise
  mass beyond is below 1e-30 (so delta may be understated by at most ``(1 + e**eps) * 1e-30``). RDP uses
  Canonne, Kamath, Steinke (2020): ``sens**2 / (2 sigma**2)``-zCDP, the same curve as a continuous Gaussian
  with ``sigma / sens``. Very large sigma (over :data:`_MAX_DISCRETE_GAUSSIAN_SIGMA`) is beyond PLD's tractable
  range and goes to RDP, where zCDP is nearly tight anyway.
- zCDP: a zCDP bound fixes the Renyi curve, not a privacy loss distribution, so a composition with a
  :class:`ZCDPEvent` is accounted with RDP (the Guarantee says so in ``fallback_reason``).
- All events pure or approximate: the basic composition theorem (sum of epsilons at the sum of deltas) is
  also valid, and both accountants report the smaller of their bound and it. This keeps a pure composition
  at or below ``k * eps`` despite grid rounding, and gives a finite answer when ``delta`` equals exactly the
  deltas the events spend.

Values that must not be underestimated (an event's epsilon, a zCDP rho, a discrete Laplace rate) are rounded
up to the next float.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, TypeAlias

import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
from scipy import optimize, special, stats

from privet.dp import mechanisms
from privet.errors import FormatError, PrivetError, UsageError

__all__ = [
    "PLD_VALUE_DISCRETIZATION_INTERVAL",
    "Accountant",
    "AccountingError",
    "ApproxEvent",
    "DiscreteGaussianEvent",
    "DiscreteLaplaceEvent",
    "Event",
    "GaussianEvent",
    "Guarantee",
    "LaplaceEvent",
    "PureEvent",
    "ZCDPEvent",
    "calibrate_gaussian",
    "compose_delta",
    "compose_epsilon",
    "event_from_json",
    "event_to_json",
    "laplace_scale",
]

_log = logging.getLogger(__name__)

Accountant: TypeAlias = Literal["pld", "rdp"]

# Grid step of the privacy-loss values. Measured on the DP-SGD bar (noise 1.1, rate 256/60000, 14,062 steps,
# delta 1e-5), against 2.38160 at 3e-5: 1e-4 -> 2.38169 in 0.51 s, 2e-4 -> 2.38195 in 0.31 s, 5e-4 -> 2.3838
# in 0.15 s, 1e-3 -> 2.3905. 2e-4 keeps the error an order of magnitude inside +-0.005 at 60% of the time.
PLD_VALUE_DISCRETIZATION_INTERVAL = 2e-4

_NEIGHBOURS = NeighboringRelation.ADD_OR_REMOVE_ONE
# Building one mechanism's PLD costs time linear in its grid points (about 2.5 s per million for the
# Gaussian); a composed PLD holds one float per grid point in several FFT buffers. Past these, PLD is
# declared out of range and RDP answers.
_MAX_MECHANISM_POINTS = 1_000_000
_MAX_COMPOSED_POINTS = 5_000_000
# The discrete Gaussian's PLD enumerates about 23 * sigma integers.
_MAX_DISCRETE_GAUSSIAN_SIGMA = 3e4
# Composed PLDs drop tails of mass 1e-15; the kept range reaches up to the loss exceeded with probability about
# 1e-16 (bounded via RDP) and down to about -log(2e15) ~ -36 (P[L < -t] <= e**-t for any privacy loss L).
_PLD_TAIL_DELTA = 1e-16
_PLD_LOWER_REACH = 36.0
# A few RDP orders suffice for that estimate and cost a tenth of RdpAccountant's default 156.
_REACH_ORDERS = (1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
# Half-width, in standard deviations of the noise, of the range from_gaussian_mechanism builds (ln mass -50).
_GAUSSIAN_REACH = 10.1
# The canonical-pair binomial is evaluated over mean +- this many standard deviations (plus a margin);
# anything outside is moved to the infinite loss, which only makes the bound larger.
_BINOMIAL_REACH = 12.0

# Counts stay exact in float arithmetic (the accountants multiply by them).
_MAX_COUNT = 2**53

_CALIBRATION_RTOL = 1e-5
_MIN_CALIBRATED_NOISE = 1e-2
_MAX_CALIBRATED_NOISE = 2.0**40


class AccountingError(PrivetError):
    """No accountant could bound the composition: nothing may be released on its strength."""

    default_hint = "Check the events' parameters; a composition this large gives no meaningful guarantee."


@dataclass(frozen=True)
class Guarantee:
    """(epsilon, delta) and the accountant that actually computed it."""

    epsilon: float
    delta: float
    accountant: str  # "pld" or "rdp": the one that produced the number (after any fallback)
    fallback_reason: str | None = None  # set when the requested accountant failed or was out of range


# -- events -----------------------------------------------------------------------------------------------------

_STEPS_HINT = "steps is how many times the mechanism ran: an integer >= 1."


def _number(name: str, value: object, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, not {type(value).__name__}", hint)
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        raise UsageError(f"{name} is too large to be a float", hint) from None
    if not math.isfinite(number):
        raise UsageError(f"{name} must be finite, got {number!r}", hint)
    return number


def _positive(name: str, value: object, hint: str) -> float:
    number = _number(name, value, hint)
    if number <= 0:
        raise UsageError(f"{name} must be > 0, got {number!r}", hint)
    return number


def _non_negative(name: str, value: object, hint: str) -> float:
    number = _number(name, value, hint)
    if number < 0:
        raise UsageError(f"{name} must be >= 0, got {number!r}", hint)
    return number


def _count(name: str, value: object, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer, not {type(value).__name__}", hint)
    number = int(value)
    if not 1 <= number <= _MAX_COUNT:
        shown = str(number) if abs(number) < 10**20 else "a larger number"  # no float formatting: it may overflow
        raise UsageError(f"{name} must be between 1 and 2**53, got {shown}", hint)
    return number


def _set(event: object, name: str, value: object) -> None:
    object.__setattr__(event, name, value)  # normalising a field of a frozen dataclass in __post_init__


@dataclass(frozen=True)
class GaussianEvent:
    """Poisson-subsampled Gaussian mechanism (L2 sensitivity 1, std ``noise_multiplier``), run ``steps`` times.

    DP-SGD's steps: each record is in a batch with probability ``sample_rate``.
    """

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "noise_multiplier is the noise std divided by the L2 sensitivity (clipping norm): a finite number > 0."
        _set(self, "noise_multiplier", _positive("noise_multiplier", self.noise_multiplier, hint))
        rate_hint = "sample_rate is the Poisson sampling probability of a record: 0 < sample_rate <= 1."
        rate = _positive("sample_rate", self.sample_rate, rate_hint)
        if rate > 1:
            raise UsageError(f"sample_rate must be <= 1, got {rate!r}", rate_hint)
        _set(self, "sample_rate", rate)
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class LaplaceEvent:
    """Laplace noise of scale ``noise_multiplier`` times the L1 sensitivity, ``steps`` times (each 1/noise-DP)."""

    noise_multiplier: float
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "noise_multiplier is the Laplace scale divided by the L1 sensitivity: a finite number > 0."
        _set(self, "noise_multiplier", _positive("noise_multiplier", self.noise_multiplier, hint))
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class DiscreteLaplaceEvent:
    """Discrete Laplace noise, ``P(x) ∝ exp(-|x| / scale)``, on an integer query of L1 ``sensitivity``."""

    scale: float
    sensitivity: int = 1
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "scale is the discrete Laplace scale t in P(x) ∝ exp(-|x|/t): a finite number > 0."
        _set(self, "scale", _positive("scale", self.scale, hint))
        sens_hint = "sensitivity is the integer L1 sensitivity of the query: an integer >= 1."
        _set(self, "sensitivity", _count("sensitivity", self.sensitivity, sens_hint))
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class DiscreteGaussianEvent:
    """Discrete Gaussian noise, ``P(x) ∝ exp(-x**2 / (2 sigma**2))``, on an integer query of L2 ``sensitivity``."""

    sigma: float
    sensitivity: int = 1
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "sigma is the discrete Gaussian parameter in P(x) ∝ exp(-x**2/(2 sigma**2)): a finite number > 0."
        _set(self, "sigma", _positive("sigma", self.sigma, hint))
        sens_hint = "sensitivity is the integer L2 sensitivity of the query: an integer >= 1."
        _set(self, "sensitivity", _count("sensitivity", self.sensitivity, sens_hint))
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class ZCDPEvent:
    """Any ``rho``-zCDP release (Bun and Steinke 2016), ``steps`` times: Renyi DP ``alpha * rho`` at every order.

    For mechanisms whose guarantee is a zCDP bound and nothing tighter, such as the sum of clients' discrete
    Gaussian noise under secure aggregation (Kairouz, Liu, Steinke 2021).
    """

    rho: float
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "rho is the release's zCDP parameter: a finite number > 0."
        _set(self, "rho", _positive("rho", self.rho, hint))
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class PureEvent:
    """Any ``epsilon``-DP release (exponential mechanism, randomized response, report-noisy-max), ``steps`` times."""

    epsilon: float
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "epsilon is the release's pure-DP epsilon: a finite number >= 0."
        _set(self, "epsilon", _non_negative("epsilon", self.epsilon, hint))
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


@dataclass(frozen=True)
class ApproxEvent:
    """Any ``(epsilon, delta)``-DP release, ``steps`` times."""

    epsilon: float
    delta: float
    steps: int = 1

    def __post_init__(self) -> None:
        hint = "An (epsilon, delta)-DP release needs a finite epsilon >= 0 and 0 <= delta < 1."
        _set(self, "epsilon", _non_negative("epsilon", self.epsilon, hint))
        delta = _non_negative("delta", self.delta, hint)
        if delta >= 1:
            raise UsageError(f"delta must be < 1, got {delta!r}", hint)
        _set(self, "delta", delta)
        _set(self, "steps", _count("steps", self.steps, _STEPS_HINT))


Event: TypeAlias = (
    GaussianEvent | LaplaceEvent | DiscreteLaplaceEvent | DiscreteGaussianEvent | ZCDPEvent | PureEvent | ApproxEvent
)

_KINDS: dict[str, type[Event]] = {
    "gaussian": GaussianEvent,
    "laplace": LaplaceEvent,
    "discrete_laplace": DiscreteLaplaceEvent,
    "discrete_gaussian": DiscreteGaussianEvent,
    "zcdp": ZCDPEvent,
    "pure": PureEvent,
    "approx": ApproxEvent,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}
_JSON_HINT = (
    "Ledger events are written by privet.dp.accounting.event_to_json; the stored record was altered or corrupted."
)


def event_to_json(event: Event) -> dict[str, object]:
    """The event as a JSON-ready dict: ``{"kind": "gaussian", "noise_multiplier": 1.1, ...}``."""
    kind = _KIND_OF.get(type(event))
    if kind is None:
        raise UsageError(f"not an accounting event: {type(event).__name__}", f"Pass one of {_event_names()}.")
    return {"kind": kind, **dataclasses.asdict(event)}


def event_from_json(data: dict[str, object]) -> Event:
    """Parse :func:`event_to_json`'s output strictly: an unknown kind or field, or a bad value, is a FormatError."""
    if not isinstance(data, dict):
        raise FormatError(f"an accounting event must be a JSON object, not {type(data).__name__}", _JSON_HINT)
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = repr(kind)[:40] if isinstance(kind, str) else type(kind).__name__
        raise FormatError(f"unknown accounting event kind {shown}; known: {', '.join(_KINDS)}", _JSON_HINT)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(repr(key)[:40] for key in data if key != "kind" and key not in fields)
    if unknown:
        raise FormatError(f"unknown field(s) {', '.join(unknown)} in a {kind} event", _JSON_HINT)
    missing = [name for name, field in fields.items() if name not in data and field.default is dataclasses.MISSING]
    if missing:
        raise FormatError(f"a {kind} event lacks field(s) {', '.join(missing)}", _JSON_HINT)
    try:
        return cls(**{name: value for name, value in data.items() if name != "kind"})  # type: ignore[arg-type]
    except UsageError as exc:
        raise FormatError(f"bad {kind} event: {exc.message}", _JSON_HINT) from None


def _event_names() -> str:
    return ", ".join(cls.__name__ for cls in _KINDS.values())


# -- composition ------------------------------------------------------------------------------------------------


class _OutOfRangeError(Exception):
    """An accountant cannot represent this composition (size, range or support)."""


_Group = tuple[Event, int]  # an event with steps=1, and how many times it ran in all


def _group(events: Sequence[Event]) -> list[_Group]:
    """Merge identical events (whatever their steps) into one event and a total count, in first-seen order."""
    if isinstance(events, str | bytes) or not isinstance(events, Sequence):
        raise UsageError("events must be a sequence of accounting events", f"Pass a list of {_event_names()}.")
    counts: dict[Event, int] = {}
    for event in events:
        if type(event) not in _KIND_OF:
            raise UsageError(f"not an accounting event: {type(event).__name__}", f"Pass a list of {_event_names()}.")
        unit = dataclasses.replace(event, steps=1)
        counts[unit] = counts.get(unit, 0) + event.steps
        if counts[unit] > _MAX_COUNT:
            raise UsageError(
                f"one mechanism ran more than 2**53 times in all ({type(event).__name__})",
                "Check the events' steps; no meaningful guarantee survives that many releases.",
            )
    return list(counts.items())


def _up(value: Fraction) -> float:
    """The smallest float >= value."""
    result = float(value)
    if Fraction(result) < value:
        result = math.nextafter(result, math.inf)
    return result


def _pure_epsilon(event: Event) -> float | None:
    """The event's pure-DP epsilon (rounded up), or None when it has none (Gaussian kinds)."""
    if isinstance(event, LaplaceEvent):
        return _up(1 / Fraction(event.noise_multiplier))
    if isinstance(event, DiscreteLaplaceEvent):
        return _up(Fraction(event.sensitivity) / Fraction(event.scale))
    if isinstance(event, PureEvent | ApproxEvent):
        return event.epsilon
    return None


def _spent_delta(groups: Sequence[_Group]) -> Fraction:
    """The exact sum of the deltas of the approximate-DP events."""
    return sum((count * Fraction(e.delta) for e, count in groups if isinstance(e, ApproxEvent)), Fraction(0))


def _basic(groups: Sequence[_Group]) -> tuple[float, Fraction] | None:
    """Basic composition (sum of epsilons, exact sum of deltas) when every event is pure or approximate DP."""
    total = Fraction(0)
    for event, count in groups:
        epsilon = _pure_epsilon(event)
        if epsilon is None:
            return None
        total += count * Fraction(epsilon)
    return _up(total), _spent_delta(groups)


# PLD ----------------------------------------------------------------------------------------------------------


def _check_points(points: float, what: str) -> None:
    if not points <= _MAX_MECHANISM_POINTS:
        raise _OutOfRangeError(f"{what} needs about {points:.3g} PLD grid points, over {_MAX_MECHANISM_POINTS:.0e}")


def _canonical_pld(epsilon: float, delta: float, count: int, interval: float) -> pld_lib.PrivacyLossDistribution:
    """Exact ``count``-fold composition of the canonical (epsilon, delta) pair, rounded up onto the grid once.

    The composed loss is ``epsilon * (2j - count)`` with ``j ~ Binomial(count, e**eps / (1 + e**eps))`` with
    probability ``(1 - delta)**count`` and infinite otherwise (Kairouz, Oh, Viswanath 2015).
    """
    keep = math.exp(count * math.log1p(-delta))
    if epsilon == 0:
        return pld_lib.PrivacyLossDistribution.create_from_rounded_probability({0: keep}, 1 - keep, interval)
    p = float(special.expit(epsilon))
    mean, sd = count * p, math.sqrt(count * p * (1 - p))
    low = max(0, math.floor(mean - _BINOMIAL_REACH * sd) - 30)
    high = min(count, math.ceil(mean + _BINOMIAL_REACH * sd) + 30)
    if high - low + 1 > _MAX_MECHANISM_POINTS:
        raise _OutOfRangeError(f"{count} compositions of a pure event spread over {high - low + 1:.3g} outcomes")
    j = np.arange(low, high + 1, dtype=np.float64)
    probs = np.exp(stats.binom.logpmf(j, count, p)) * keep
    points = np.ceil(epsilon * (2 * j - count) / interval).astype(np.int64)
    span = int(points[-1] - points[0]) + 1
    if span > _MAX_COMPOSED_POINTS:
        raise _OutOfRangeError(
            f"{count} compositions of an epsilon={epsilon:.3g} event span {span:.3g} PLD grid points"
        )
    unique, where = np.unique(points, return_inverse=True)
    mass = np.bincount(where, weights=probs)
    # Whatever the kept outcomes miss (tails, float rounding) goes to the infinite loss: pessimistic.
    infinity = max(0.0, 1.0 - math.fsum(mass))
    return pld_lib.PrivacyLossDistribution.create_from_rounded_probability(
        dict(zip(unique.tolist(), mass.tolist(), strict=True)), infinity, interval
    )


def _group_pld(event: Event, count: int, interval: float) -> pld_lib.PrivacyLossDistribution:
    if isinstance(event, GaussianEvent):
        if event.sample_rate == 1.0:
            # k Gaussians with std s compose exactly to one with std s / sqrt(k), as in PLDAccountant.
            std = event.noise_multiplier / math.sqrt(count)
            _check_points(2 * _GAUSSIAN_REACH / (std * interval), f"a Gaussian with std {std:.3g}")
            return pld_lib.from_gaussian_mechanism(
                std, value_discretization_interval=interval, neighboring_relation=_NEIGHBOURS
            )
        std = event.noise_multiplier
        # Two PLDs (add and remove), each costlier per point than the plain Gaussian's: count it twice.
        _check_points(4 * _GAUSSIAN_REACH / (std * interval), f"a subsampled Gaussian with std {std:.3g}")
        return pld_lib.from_gaussian_mechanism(
            std,
            value_discretization_interval=interval,
            sampling_prob=event.sample_rate,
            neighboring_relation=_NEIGHBOURS,
        ).self_compose(count)
    if isinstance(event, LaplaceEvent):
        _check_points(2 / (event.noise_multiplier * interval), f"Laplace noise {event.noise_multiplier:.3g}")
        return pld_lib.from_laplace_mechanism(
            event.noise_multiplier, value_discretization_interval=interval
        ).self_compose(count)
    if isinstance(event, DiscreteLaplaceEvent):
        rate = _up(1 / Fraction(event.scale))  # dp_accounting's parameter a in exp(-a|x|); larger is pessimistic
        _check_points(2 * rate * event.sensitivity / interval, f"discrete Laplace scale {event.scale:.3g}")
        # Connect-the-dots is also pessimistic and, unlike the default privacy buckets, does not add up to
        # one grid step of error per composition.
        return pld_lib.from_discrete_laplace_mechanism(
            rate, sensitivity=event.sensitivity, value_discretization_interval=interval, use_connect_dots=True
        ).self_compose(count)
    if isinstance(event, DiscreteGaussianEvent):
        if event.sigma > _MAX_DISCRETE_GAUSSIAN_SIGMA:
            raise _OutOfRangeError(
                f"a discrete Gaussian with sigma {event.sigma:.3g} > {_MAX_DISCRETE_GAUSSIAN_SIGMA:.0e} is too "
                "wide to enumerate"
            )
        reach = math.ceil(11.6 * event.sigma)  # dp_accounting's truncation bound
        _check_points(
            2 * reach * event.sensitivity / (event.sigma**2 * interval), f"discrete Gaussian sigma {event.sigma:.3g}"
        )
        return pld_lib.from_discrete_gaussian_mechanism(
            event.sigma, sensitivity=event.sensitivity, value_discretization_interval=interval, use_connect_dots=True
        ).self_compose(count)
    if isinstance(event, ZCDPEvent):
        raise _OutOfRangeError("a zCDP bound has no privacy loss distribution")
    if isinstance(event, PureEvent):
        return _canonical_pld(event.epsilon, 0.0, count, interval)
    if isinstance(event, ApproxEvent):
        return _canonical_pld(event.epsilon, event.delta, count, interval)
    raise TypeError(type(event).__name__)  # unreachable: _group admits only events


def _pld(groups: Sequence[_Group]) -> pld_lib.PrivacyLossDistribution:
    interval = PLD_VALUE_DISCRETIZATION_INTERVAL
    try:
        reach = float(rdp_lib.compute_epsilon(*_rdp_curve(groups, _REACH_ORDERS), _PLD_TAIL_DELTA)[0])
    except Exception:  # no estimate: the per-mechanism limits below still apply
        reach = 0.0
    points = (reach + _PLD_LOWER_REACH) / interval
    if not points <= _MAX_COMPOSED_POINTS:
        raise _OutOfRangeError(
            f"the composed privacy loss reaches about {reach:.4g}, over {_MAX_COMPOSED_POINTS:.0e} PLD grid points"
        )
    composed: pld_lib.PrivacyLossDistribution | None = None
    for event, count in groups:
        part = _group_pld(event, count, interval)
        composed = part if composed is None else composed.compose(part)
    return composed if composed is not None else pld_lib.identity(interval)


def _pld_epsilon(groups: Sequence[_Group], delta: float) -> float:
    return float(_pld(groups).get_epsilon_for_delta(delta))


def _pld_delta(groups: Sequence[_Group], epsilon: float) -> float:
    return float(_pld(groups).get_delta_for_epsilon(epsilon))


# RDP ----------------------------------------------------------------------------------------------------------


def _randomized_response(epsilon: float) -> dp_event.RandomizedResponseDpEvent:
    """Binary randomized response with likelihood ratio ``e**epsilon``: the canonical epsilon-DP pair."""
    flip = 2 * float(special.expit(-epsilon))  # 2 / (1 + e**eps), without overflow
    # A smaller flip probability is a larger ratio: round that way so epsilon is never understated.
    return dp_event.RandomizedResponseDpEvent(noise_parameter=math.nextafter(flip, 0.0), num_buckets=2)


def _rdp_curve(groups: Sequence[_Group], orders: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RDP orders and the composed RDP of every event's pure or Renyi part (approximate deltas excluded)."""
    main = rdp_lib.RdpAccountant(orders, neighboring_relation=_NEIGHBOURS)
    # Randomized response here is only a calculator for the canonical pair's Renyi divergence, which bounds
    # every epsilon-DP mechanism under any neighbouring relation; RdpAccountant computes it under REPLACE_ONE.
    pairs = rdp_lib.RdpAccountant(orders, neighboring_relation=NeighboringRelation.REPLACE_ONE)
    for event, count in groups:
        if isinstance(event, GaussianEvent):
            gaussian = dp_event.GaussianDpEvent(event.noise_multiplier)
            if event.sample_rate < 1:
                main.compose(dp_event.PoissonSampledDpEvent(event.sample_rate, gaussian), count)
            else:
                main.compose(gaussian, count)
        elif isinstance(event, LaplaceEvent):
            main.compose(dp_event.LaplaceDpEvent(event.noise_multiplier), count)
        elif isinstance(event, DiscreteGaussianEvent):
            rho = _up(Fraction(event.sensitivity) ** 2 / (2 * Fraction(event.sigma) ** 2))
            main.compose(dp_event.ZCDpEvent(rho), count)
        elif isinstance(event, ZCDPEvent):
            main.compose(dp_event.ZCDpEvent(event.rho), count)
        else:
            epsilon = _pure_epsilon(event)
            assert epsilon is not None  # the remaining kinds are pure or approximate DP
            pairs.compose(_randomized_response(epsilon), count)
    return main.orders, main.rdp + pairs.rdp


def _rdp_epsilon(groups: Sequence[_Group], delta: float) -> float:
    orders, rdp = _rdp_curve(groups)
    remaining = Fraction(delta) - _spent_delta(groups)
    if remaining <= 0:
        return math.inf
    # Round the remaining delta down so that the approximate events' share is never shortchanged.
    rest = float(remaining)
    if Fraction(rest) > remaining:
        rest = math.nextafter(rest, 0.0)
    return float(rdp_lib.compute_epsilon(orders, rdp, rest)[0])


def _rdp_delta(groups: Sequence[_Group], epsilon: float) -> float:
    orders, rdp = _rdp_curve(groups)
    delta = float(rdp_lib.compute_delta(orders, rdp, epsilon)[0])
    return _up(Fraction(delta) + _spent_delta(groups))


# dispatch -----------------------------------------------------------------------------------------------------

_EPSILON: dict[str, Callable[[Sequence[_Group], float], float]] = {"pld": _pld_epsilon, "rdp": _rdp_epsilon}
_DELTA: dict[str, Callable[[Sequence[_Group], float], float]] = {"pld": _pld_delta, "rdp": _rdp_delta}


def _check_accountant(accountant: object) -> str:
    if accountant not in ("pld", "rdp"):
        shown = repr(accountant)[:40]
        raise UsageError(f"unknown accountant {shown}", "Use 'pld' (default, tight) or 'rdp'.")
    return str(accountant)


def _check_delta(name: str, delta: object) -> float:
    hint = f"{name} is the failure probability of the guarantee: 0 < {name} < 1, typically below 1/records."
    value = _positive(name, delta, hint)
    if value >= 1:
        raise UsageError(f"{name} must be < 1, got {value!r}", hint)
    return value


def _reason(accountant: str, exc: BaseException) -> str:
    if isinstance(exc, _OutOfRangeError):
        return f"{accountant} out of range: {exc}"
    return f"{accountant} failed: {type(exc).__name__}: {str(exc)[:200]}"


def _run(accountant: str, compute: Callable[[str], float], *, what: str, hint: str) -> tuple[float, str, str | None]:
    """Compute with ``accountant``, else with the other one; return (value, accountant used, fallback reason)."""
    reasons: list[str] = []
    for name in (accountant, "rdp" if accountant == "pld" else "pld"):
        try:
            value = compute(name)
            if not math.isfinite(value) or value < 0:
                raise _OutOfRangeError(f"no finite {what} (got {value!r})")
        except Exception as exc:  # any failure of one accountant is a reason to try the other
            reasons.append(_reason(name, exc))
            continue
        reason = "; ".join(reasons) or None
        if reason is not None:
            _log.info("accounting fell back to %s: %s", name, reason)
        return value, name, reason
    raise AccountingError(f"neither accountant could bound the {what}: {'; '.join(reasons)}", hint)


def compose_epsilon(events: Sequence[Event], delta: float, accountant: Accountant = "pld") -> Guarantee:
    """The smallest epsilon such that ``events``, composed (adaptively, in any order), are (epsilon, delta)-DP."""
    requested = _check_accountant(accountant)
    delta = _check_delta("delta", delta)
    groups = _group(events)
    spent = _spent_delta(groups)
    if Fraction(delta) < spent:
        raise UsageError(
            f"delta {delta:.3g} is below the {float(spent):.3g} the approximate-DP events already spend",
            "Ask for a delta at least the sum of the events' deltas.",
        )
    basic = _basic(groups)

    def compute(name: str) -> float:
        value = _EPSILON[name](groups, delta)
        if math.isnan(value):
            return value
        if basic is not None:  # delta >= the events' deltas (checked above), so basic composition holds too
            value = min(value, basic[0])
        return value

    epsilon, used, reason = _run(
        requested,
        compute,
        what=f"epsilon at delta {delta:.3g}",
        hint="Use fewer or less frequent events, more noise, or a larger delta.",
    )
    return Guarantee(epsilon, delta, used, reason)


def compose_delta(events: Sequence[Event], epsilon: float, accountant: Accountant = "pld") -> Guarantee:
    """The smallest delta such that ``events``, composed, are (epsilon, delta)-DP (at most 1)."""
    requested = _check_accountant(accountant)
    epsilon = _non_negative("epsilon", epsilon, "epsilon is the target privacy loss: a finite number >= 0.")
    groups = _group(events)
    basic = _basic(groups)

    def compute(name: str) -> float:
        value = _DELTA[name](groups, epsilon)
        if math.isnan(value):
            return value
        if basic is not None and epsilon >= basic[0]:
            value = min(value, _up(basic[1]))
        return min(value, 1.0)

    delta, used, reason = _run(
        requested, compute, what=f"delta at epsilon {epsilon:.3g}", hint="Check the events' parameters."
    )
    return Guarantee(epsilon, delta, used, reason)


# -- calibration ------------------------------------------------------------------------------------------------


def calibrate_gaussian(
    target_epsilon: float,
    delta: float,
    *,
    sample_rate: float = 1.0,
    steps: int = 1,
    accountant: Accountant = "pld",
) -> float:
    """The smallest noise multiplier (within a relative 1e-5) whose GaussianEvent meets ``target_epsilon``.

    Meeting means ``compose_epsilon([GaussianEvent(result, sample_rate, steps)], delta, accountant).epsilon <=
    target_epsilon``, fallback included, so the returned noise passes the very check a ledger makes. The
    search brackets the root and then runs Brent's method (``scipy.optimize.brentq``) on :func:`compose_epsilon`
    itself. For PLD the bracket starts from the (cheap) RDP answer, which needs a little more noise, so that
    PLD is rarely evaluated at small noise, where building its distribution is slow.
    ``dp_accounting.mechanism_calibration`` is not used because it drives a bare ``PrivacyAccountant``, which
    would bypass privet's grouping, size limits and fallback, and its default bracket starts at noise 0 (an
    infinite epsilon).
    """
    requested: Accountant = "rdp" if _check_accountant(accountant) == "rdp" else "pld"
    target = _positive("target_epsilon", target_epsilon, "target_epsilon is the privacy budget: a finite number > 0.")
    delta = _check_delta("delta", delta)
    GaussianEvent(1.0, sample_rate, steps)  # validates sample_rate and steps with their hints

    start, shrink = 1.0, 2.0
    if requested == "pld":
        try:
            start = calibrate_gaussian(target, delta, sample_rate=sample_rate, steps=steps, accountant="rdp")
            shrink = 1.25  # PLD typically needs 5-15% less noise than RDP
        except AccountingError:  # RDP meets the target at no noise: PLD, tighter, may; search from scratch
            pass

    gaps: dict[float, float] = {}

    def gap(noise: float) -> float:
        if noise not in gaps:
            event = GaussianEvent(noise, sample_rate, steps)
            gaps[noise] = compose_epsilon([event], delta, requested).epsilon - target
        return gaps[noise]

    low = high = start  # invariant once bracketed: gap(low) > 0 >= gap(high)
    if gap(high) > 0:
        while gap(high) > 0:
            low, high = high, high * 2
            if high > _MAX_CALIBRATED_NOISE:
                raise AccountingError(
                    f"no noise multiplier up to {_MAX_CALIBRATED_NOISE:.3g} meets epsilon {target:.3g}",
                    "Ask for a larger epsilon, or fewer steps or a smaller sample rate.",
                )
    else:
        while gap(low) <= 0:
            low, high = low / shrink, low
            if low < _MIN_CALIBRATED_NOISE:
                raise UsageError(
                    f"epsilon {target:.3g} is met by every noise multiplier down to {_MIN_CALIBRATED_NOISE}",
                    "Ask for a smaller target_epsilon: this one gives no meaningful protection.",
                )
    tol = _CALIBRATION_RTOL * low
    root = float(optimize.brentq(gap, low, high, xtol=tol))
    # brentq stops within tol of the sign change, on either side of it: step onto the side that meets the target.
    for candidate in (root, root + tol, root + 2 * tol):
        if low < candidate < high and gap(candidate) <= 0:
            return candidate
    return high


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """The Laplace scale ``sensitivity / epsilon``, rounded up, that makes a query ``epsilon``-DP.

    The same function as :func:`privet.dp.mechanisms.laplace_scale`, so the two can never disagree.
    """
    return mechanisms.laplace_scale(epsilon, sensitivity)
