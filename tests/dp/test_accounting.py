"""Privacy accounting: the DP-SGD bar, exactness against closed forms and dp_accounting, fallback, JSON, speed."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from fractions import Fraction

import pytest
from dp_accounting import dp_event
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian, get_sigma_gaussian
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from privet.dp import accounting
from privet.dp.accounting import (
    PLD_VALUE_DISCRETIZATION_INTERVAL,
    AccountingError,
    ApproxEvent,
    DiscreteGaussianEvent,
    DiscreteLaplaceEvent,
    GaussianEvent,
    Guarantee,
    LaplaceEvent,
    PureEvent,
    calibrate_gaussian,
    compose_delta,
    compose_epsilon,
    event_from_json,
    event_to_json,
    laplace_scale,
)
from privet.errors import FormatError, PrivetError, UsageError

BAR = GaussianEvent(noise_multiplier=1.1, sample_rate=256 / 60000, steps=14_062)
BAR_DP_EVENT = dp_event.SelfComposedDpEvent(
    dp_event.PoissonSampledDpEvent(256 / 60000, dp_event.GaussianDpEvent(1.1)), 14_062
)
MIXED = [
    GaussianEvent(2.0, 0.01, 1000),
    LaplaceEvent(10.0, 5),
    DiscreteLaplaceEvent(20.0, 2, 5),
    DiscreteGaussianEvent(30.0, 2, 4),
    PureEvent(0.1, 3),
    ApproxEvent(0.2, 1e-8, 2),
]


def exact_pure_epsilon(epsilon: float, k: int, delta: float) -> float:
    """The optimal epsilon of k epsilon-DP mechanisms at delta (Kairouz, Oh, Viswanath), computed independently."""
    flips = stats.binom(k, 1 / (1 + math.exp(epsilon)))
    losses = [(epsilon * (k - 2 * i), flips.pmf(i)) for i in range(k + 1)]

    def gap(e: float) -> float:
        return math.fsum(p * -math.expm1(e - loss) for loss, p in losses if loss > e) - delta

    return 0.0 if gap(0.0) <= 0 else optimize.brentq(gap, 0.0, k * epsilon, xtol=1e-12)


# -- the bar ---------------------------------------------------------------------------------------------------


def test_bar_pld() -> None:
    started = time.perf_counter()
    got = compose_epsilon([BAR], 1e-5)
    elapsed = time.perf_counter() - started
    assert got == Guarantee(got.epsilon, 1e-5, "pld", None)
    assert got.epsilon == pytest.approx(2.38, abs=0.01)
    reference = PLDAccountant(value_discretization_interval=1e-4).compose(BAR_DP_EVENT).get_epsilon(1e-5)
    assert abs(got.epsilon - reference) <= 0.005  # the chosen grid is accurate to the brief's tolerance
    assert got.epsilon >= reference - 1e-3  # pessimistic rounding: never meaningfully below a finer grid
    assert elapsed < 5


def test_bar_rdp() -> None:
    got = compose_epsilon([BAR], 1e-5, accountant="rdp")
    assert (got.accountant, got.fallback_reason) == ("rdp", None)
    assert got.epsilon == pytest.approx(2.60, abs=0.01)
    assert got.epsilon == pytest.approx(RdpAccountant().compose(BAR_DP_EVENT).get_epsilon(1e-5), rel=1e-12)


@pytest.mark.parametrize(
    ("event", "dp"),
    [
        (GaussianEvent(2.0, steps=4), dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(2.0), 4)),
        (
            GaussianEvent(1.5, 0.02, 300),
            dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.02, dp_event.GaussianDpEvent(1.5)), 300),
        ),
        (LaplaceEvent(4.0, 20), dp_event.SelfComposedDpEvent(dp_event.LaplaceDpEvent(4.0), 20)),
    ],
)
def test_pld_matches_dp_accounting_on_shared_events(event, dp) -> None:
    expected = PLDAccountant(value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL).compose(dp)
    assert compose_epsilon([event], 1e-6).epsilon == pytest.approx(expected.get_epsilon(1e-6), abs=1e-9)


# -- exactness and soundness --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("epsilon", "k"), [(0.1, 1), (0.1, 10), (0.5, 10), (1.0, 3), (0.1, 100), (0.0371, 64)])
@pytest.mark.parametrize("delta", [1e-9, 1e-6, 1e-3])
def test_pure_composition_is_exact_and_within_k_epsilon(epsilon: float, k: int, delta: float) -> None:
    exact = exact_pure_epsilon(epsilon, k, delta)
    pld = compose_epsilon([PureEvent(epsilon)] * k, delta)
    rdp = compose_epsilon([PureEvent(epsilon, steps=k)], delta, accountant="rdp")
    assert pld.accountant == "pld" and rdp.accountant == "rdp"
    basic = k * epsilon * (1 + 1e-12)  # float k * epsilon may round below the exact sum that privet reports
    assert exact - 1e-9 <= pld.epsilon <= basic  # sound, and never worse than basic composition
    assert pld.epsilon <= exact + 2 * PLD_VALUE_DISCRETIZATION_INTERVAL  # rounded once, not k times
    assert exact - 1e-9 <= rdp.epsilon <= basic
    advanced = epsilon * math.sqrt(2 * k * math.log(1 / delta)) + k * epsilon * math.expm1(epsilon)
    assert pld.epsilon <= advanced + 1e-9


@pytest.mark.parametrize("noise", [0.7, 2.0, 9.0])
def test_single_gaussian_matches_the_analytic_gaussian_mechanism(noise: float) -> None:
    exact = get_epsilon_gaussian(noise, 1e-5)
    assert exact - 1e-9 <= compose_epsilon([GaussianEvent(noise)], 1e-5).epsilon <= exact + 1e-3
    assert exact - 1e-9 <= compose_epsilon([GaussianEvent(noise)], 1e-5, "rdp").epsilon <= exact * 1.5


def test_approximate_events_spend_their_delta() -> None:
    assert compose_epsilon([ApproxEvent(0.7, 1e-6)], 1e-6).epsilon == 0.7  # exactly the event's own guarantee
    assert compose_epsilon([ApproxEvent(0.7, 1e-6)], 1e-6, accountant="rdp").epsilon == 0.7
    two = compose_epsilon([ApproxEvent(0.5, 1e-7, steps=2)], 1e-5)
    assert two.epsilon <= 1.0 and two.epsilon >= exact_pure_epsilon(0.5, 2, 1e-5 - 2e-7) - 1e-9
    with pytest.raises(UsageError, match="already spend"):
        compose_epsilon([ApproxEvent(0.7, 1e-6), ApproxEvent(0.1, 1e-6)], 1.5e-6)
    spent = compose_delta([ApproxEvent(0.7, 1e-6, steps=3)], 2.1)
    assert -math.expm1(3 * math.log1p(-1e-6)) - 1e-15 <= spent.delta <= 3e-6  # 1 - (1 - delta)**3 is exact


def test_conversions_for_mechanisms_an_accountant_lacks() -> None:
    # Discrete Laplace is (sens/scale)-DP: never above that bound, and below it in the PLD (which is exact).
    dlap = [DiscreteLaplaceEvent(20.0, sensitivity=2, steps=30)]
    pure = [PureEvent(0.1, steps=30)]
    for name in ("pld", "rdp"):
        assert compose_epsilon(dlap, 1e-6, name).epsilon <= compose_epsilon(pure, 1e-6, name).epsilon + 1e-12
    assert compose_epsilon(dlap, 1e-6).epsilon < compose_epsilon(pure, 1e-6).epsilon - 0.01
    # Discrete Gaussian: zCDP in RDP is the continuous Gaussian's curve; the exact PLD is close to it.
    dg = [DiscreteGaussianEvent(30.0, sensitivity=2, steps=4)]
    gauss = [GaussianEvent(15.0, steps=4)]
    assert compose_epsilon(dg, 1e-6, "rdp").epsilon == pytest.approx(compose_epsilon(gauss, 1e-6, "rdp").epsilon)
    assert compose_epsilon(dg, 1e-6).epsilon == pytest.approx(compose_epsilon(gauss, 1e-6).epsilon, rel=0.02)
    # Laplace with scale b is (1/b)-DP; the tight PLD and RDP curves are below the pure bound.
    assert compose_epsilon([LaplaceEvent(10.0, 50)], 1e-6).epsilon < compose_epsilon([PureEvent(0.1, 50)], 1e-6).epsilon


def test_mixed_composition() -> None:
    pld = compose_epsilon(MIXED, 1e-5)
    rdp = compose_epsilon(MIXED, 1e-5, accountant="rdp")
    assert (pld.accountant, rdp.accountant) == ("pld", "rdp")
    assert 0 < pld.epsilon <= rdp.epsilon < sum(compose_epsilon([e], 1e-5 / 6).epsilon for e in MIXED)
    assert pld.epsilon >= max(compose_epsilon([e], 1e-5).epsilon for e in MIXED) - 1e-3
    assert compose_epsilon(list(reversed(MIXED)), 1e-5).epsilon == pytest.approx(pld.epsilon, abs=1e-9)


def test_empty_composition_is_free() -> None:
    assert compose_epsilon([], 1e-5) == Guarantee(0.0, 1e-5, "pld")
    assert compose_delta([], 0.0, "rdp") == Guarantee(0.0, 0.0, "rdp")


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize(
    "events",
    [[GaussianEvent(1.1, 256 / 60000, 2000)], [PureEvent(0.2, 20)], MIXED],
    ids=["dpsgd", "pure", "mixed"],
)
def test_compose_delta_inverts_compose_epsilon(events, accountant: str) -> None:
    delta = 1e-5
    guarantee = compose_epsilon(events, delta, accountant)
    back = compose_delta(events, guarantee.epsilon, accountant)
    assert back.accountant == accountant and back.epsilon == guarantee.epsilon
    assert back.delta <= delta * (1 + 1e-6)
    assert compose_delta(events, guarantee.epsilon * 0.9, accountant).delta > delta


# -- grouping and speed -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [PureEvent(0.01), GaussianEvent(1.1, 256 / 60000), LaplaceEvent(200.0)])
def test_ten_thousand_identical_charges_compose_fast(event) -> None:
    started = time.perf_counter()
    many = compose_epsilon([event] * 10_000, 1e-6)
    assert time.perf_counter() - started < 2
    assert many.accountant == "pld"
    assert many == compose_epsilon([dataclasses.replace(event, steps=10_000)], 1e-6)


def test_merging_ignores_order_and_splits() -> None:
    a, b = GaussianEvent(1.3, 0.01, 100), PureEvent(0.05, 7)
    split = compose_epsilon([a, b, GaussianEvent(1.3, 0.01, 200)], 1e-6)
    assert split == compose_epsilon([GaussianEvent(1.3, 0.01, 300), b], 1e-6)  # merged into the first-seen place
    reordered = compose_epsilon([b, GaussianEvent(1.3, 0.01, 300)], 1e-6)
    assert reordered.epsilon == pytest.approx(split.epsilon, abs=1e-9)  # FFT rounding differs, nothing more


# -- fallback -----------------------------------------------------------------------------------------------------


def test_fallback_when_pld_is_out_of_range() -> None:
    wide = [DiscreteGaussianEvent(1e6, steps=1000)]
    got = compose_epsilon(wide, 1e-9)
    assert got.accountant == "rdp" and got.fallback_reason is not None
    assert got.fallback_reason.startswith("pld out of range") and "discrete Gaussian" in got.fallback_reason
    assert got.epsilon == compose_epsilon(wide, 1e-9, "rdp").epsilon > 0
    # PLD's truncated tails put about 1e-22 on the infinite loss, so it has no finite epsilon at 1e-25.
    tiny = compose_epsilon([GaussianEvent(1.0)], 1e-25)
    assert tiny.accountant == "rdp" and "no finite epsilon" in (tiny.fallback_reason or "")
    assert math.isfinite(tiny.epsilon)


def test_fallback_when_an_accountant_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(groups, value) -> float:
        raise RuntimeError("numerical trouble")

    monkeypatch.setitem(accounting._EPSILON, "pld", boom)
    monkeypatch.setitem(accounting._DELTA, "pld", boom)
    got = compose_epsilon([BAR], 1e-5)
    assert (got.accountant, got.fallback_reason) == ("rdp", "pld failed: RuntimeError: numerical trouble")
    assert got.epsilon == pytest.approx(2.5966, abs=1e-3)
    assert compose_delta([BAR], 2.6).accountant == "rdp"
    assert compose_epsilon([BAR], 1e-5, "rdp").fallback_reason is None  # asking for RDP is not a fallback

    monkeypatch.setitem(accounting._EPSILON, "rdp", lambda groups, delta: math.nan)
    with pytest.raises(AccountingError, match="neither accountant") as caught:
        compose_epsilon([PureEvent(1.0)], 1e-5, "rdp")
    assert isinstance(caught.value, PrivetError)
    assert "rdp out of range" in caught.value.message and "pld failed" in caught.value.message


def test_rdp_falls_back_to_pld(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(accounting._EPSILON, "rdp", lambda groups, delta: math.inf)
    events = [GaussianEvent(3.0, steps=2), PureEvent(0.1, 10)]
    got = compose_epsilon(events, 1e-6, "rdp")
    assert got.accountant == "pld" and (got.fallback_reason or "").startswith("rdp out of range")
    assert got.epsilon == compose_epsilon(events, 1e-6).epsilon


def test_basic_composition_backs_both_accountants(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only pure events, an accountant without a finite answer still yields the sum of epsilons."""
    monkeypatch.setitem(accounting._EPSILON, "rdp", lambda groups, delta: math.inf)
    assert compose_epsilon([PureEvent(0.1, 10)], 1e-6, "rdp") == Guarantee(1.0000000000000002, 1e-6, "rdp")


# -- calibration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrate_gaussian_inverts_compose_epsilon(accountant: str) -> None:
    noise = calibrate_gaussian(1.0, 1e-5, sample_rate=0.02, steps=300, accountant=accountant)

    def epsilon(multiplier: float) -> float:
        return compose_epsilon([GaussianEvent(multiplier, 0.02, 300)], 1e-5, accountant).epsilon

    assert epsilon(noise) <= 1.0 < epsilon(noise * (1 - 1e-3))  # meets the target, and is (nearly) the least that does
    assert epsilon(noise) == pytest.approx(1.0, abs=1e-3)


def test_calibrate_gaussian_recovers_the_bar() -> None:
    assert calibrate_gaussian(2.5966, 1e-5, sample_rate=256 / 60000, steps=14_062, accountant="rdp") == (
        pytest.approx(1.1, abs=1e-3)
    )
    # One Gaussian release: the analytic optimum (Balle, Wang 2018), not the classic sqrt(2 ln(1.25/delta)) = 4.84.
    assert 0 <= calibrate_gaussian(1.0, 1e-5) - get_sigma_gaussian(1.0, 1e-5) < 0.01


def test_calibrate_gaussian_refuses_meaningless_targets() -> None:
    with pytest.raises(UsageError, match="every noise multiplier"):
        calibrate_gaussian(1e6, 1e-5, accountant="rdp")
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(UsageError):
            calibrate_gaussian(bad, 1e-5)
    with pytest.raises(UsageError, match="sample_rate"):
        calibrate_gaussian(1.0, 1e-5, sample_rate=1.5)


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianEvent(0.0),
        lambda: GaussianEvent(-1.0),
        lambda: GaussianEvent(math.nan),
        lambda: GaussianEvent(math.inf),
        lambda: GaussianEvent(1.0, sample_rate=0.0),
        lambda: GaussianEvent(1.0, sample_rate=1.01),
        lambda: GaussianEvent(1.0, steps=0),
        lambda: GaussianEvent(1.0, steps=2.0),
        lambda: GaussianEvent(1.0, steps=True),
        lambda: GaussianEvent("1.0"),
        lambda: GaussianEvent(10**400),
        lambda: GaussianEvent(1.0, steps=2**53 + 1),
        lambda: LaplaceEvent(0.0),
        lambda: DiscreteLaplaceEvent(1.0, sensitivity=0),
        lambda: DiscreteLaplaceEvent(1.0, sensitivity=1.5),
        lambda: DiscreteGaussianEvent(-2.0),
        lambda: PureEvent(-0.1),
        lambda: PureEvent(math.inf),
        lambda: ApproxEvent(1.0, 1.0),
        lambda: ApproxEvent(1.0, -1e-9),
    ],
)
def test_events_validate_their_parameters(make) -> None:
    with pytest.raises(UsageError) as caught:
        make()
    assert caught.value.hint != UsageError.default_hint


@pytest.mark.parametrize(
    "call",
    [
        lambda: compose_epsilon([BAR], 0.0),
        lambda: compose_epsilon([BAR], 1.0),
        lambda: compose_epsilon([BAR], math.nan),
        lambda: compose_epsilon([BAR], "1e-5"),
        lambda: compose_epsilon([BAR], 1e-5, accountant="moments"),
        lambda: compose_epsilon(BAR, 1e-5),
        lambda: compose_epsilon([{"kind": "pure", "epsilon": 1.0}], 1e-5),
        lambda: compose_epsilon([PureEvent(0.0, steps=2**52)] * 3, 1e-5),
        lambda: compose_delta([BAR], -1.0),
        lambda: compose_delta([BAR], math.inf),
        lambda: laplace_scale(0.0, 1.0),
        lambda: laplace_scale(1.0, -1.0),
    ],
)
def test_composition_validates_its_inputs(call) -> None:
    with pytest.raises(UsageError) as caught:
        call()
    assert caught.value.hint != UsageError.default_hint


def test_events_normalise_numbers() -> None:
    event = GaussianEvent(1, 1, 3)
    assert event == GaussianEvent(1.0, 1.0, 3) and isinstance(event.noise_multiplier, float)
    assert hash(event) == hash(GaussianEvent(1.0, 1.0, 3))


def test_laplace_scale_rounds_up() -> None:
    assert laplace_scale(0.5, 2.0) == 4.0
    for epsilon in (0.3, 0.7, 3.0, 1 / 3):
        assert Fraction(laplace_scale(epsilon, 1.0)) * Fraction(epsilon) >= 1


# -- JSON ---------------------------------------------------------------------------------------------------------

positive = st.floats(min_value=0.0, max_value=1e6, exclude_min=True, allow_nan=False)
non_negative = st.floats(min_value=0.0, max_value=1e3, allow_nan=False)
steps = st.integers(min_value=1, max_value=2**53)
events = st.one_of(
    st.builds(GaussianEvent, positive, st.floats(min_value=0.0, max_value=1.0, exclude_min=True), steps),
    st.builds(LaplaceEvent, positive, steps),
    st.builds(DiscreteLaplaceEvent, positive, st.integers(1, 10**6), steps),
    st.builds(DiscreteGaussianEvent, positive, st.integers(1, 10**6), steps),
    st.builds(PureEvent, non_negative, steps),
    st.builds(ApproxEvent, non_negative, st.floats(min_value=0.0, max_value=1.0, exclude_max=True), steps),
)


@given(events)
def test_json_round_trip(event) -> None:
    data = event_to_json(event)
    assert event_from_json(data) == event
    assert event_from_json(json.loads(json.dumps(data))) == event  # through real JSON text, floats included
    assert data["kind"] in {"gaussian", "laplace", "discrete_laplace", "discrete_gaussian", "pure", "approx"}


FIELD_NAMES = ["kind", "noise_multiplier", "sample_rate", "steps", "scale", "sensitivity", "sigma", "epsilon", "delta"]
KINDS = ["gaussian", "laplace", "discrete_laplace", "discrete_gaussian", "pure", "approx"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(KINDS)
    | st.just(10**400),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=6)
near_valid = st.builds(
    lambda kind, extra: {"kind": kind, **extra},
    st.sampled_from(KINDS),
    st.dictionaries(st.sampled_from(FIELD_NAMES[1:]), json_values | positive | steps, max_size=4),
)


@settings(max_examples=300)
@given(st.one_of(json_objects, near_valid, json_values))
def test_arbitrary_json_parses_or_raises_format_error(data) -> None:
    try:
        event = event_from_json(data)
    except FormatError as exc:
        assert exc.message and exc.hint
    else:
        assert event_from_json(event_to_json(event)) == event


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"kind": "moments", "epsilon": 1.0}, "unknown accounting event kind"),
        ({"epsilon": 1.0}, "unknown accounting event kind"),
        ({"kind": "pure", "epsilon": 1.0, "delta": 0.0}, "unknown field"),
        ({"kind": "approx", "epsilon": 1.0}, "lacks field"),
        ({"kind": "pure", "epsilon": "1.0"}, "must be a number"),
        ({"kind": "pure", "epsilon": True}, "must be a number"),
        ({"kind": "pure", "epsilon": 1.0, "steps": 2.0}, "must be an integer"),
        ({"kind": "gaussian", "noise_multiplier": 1.0, "sample_rate": 2}, "sample_rate must be <= 1"),
        ({"kind": "gaussian", "noise_multiplier": 10**400}, "too large"),
        ({"kind": "gaussian", "noise_multiplier": 1.0, "steps": 10**400}, "between 1 and 2"),
        ({"kind": "pure", "epsilon": 1.0, "steps": -(10**400)}, "between 1 and 2"),
        ([], "JSON object"),
    ],
)
def test_event_from_json_is_strict(data, fragment: str) -> None:
    with pytest.raises(FormatError, match=fragment):
        event_from_json(data)


def test_defaults_may_be_omitted() -> None:
    assert event_from_json({"kind": "gaussian", "noise_multiplier": 2}) == GaussianEvent(2.0)
    assert event_to_json(DiscreteGaussianEvent(3.0)) == {
        "kind": "discrete_gaussian",
        "sigma": 3.0,
        "sensitivity": 1,
        "steps": 1,
    }
