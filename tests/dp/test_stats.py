"""DP statistics: clamping, per-unit contribution bounds, the charge hook, noise scales, partition selection.

Two ways to look at the noise: ``no_noise`` replaces the samplers with zeros, so a release shows the exact
pre-noise value the pipeline computed (clamped, contribution-bounded); with the real samplers and a fixed test
seed, repeated releases are checked against the variance the declared scale implies.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from privet.crypto.prg import Randomness
from privet.dp import mechanisms, stats
from privet.dp.accounting import compose_epsilon
from privet.dp.stats import Aggregate
from privet.errors import PrivetError, UsageError

SECRET = "Zelda-Secretvalue-4471"


@pytest.fixture
def rng(monkeypatch: pytest.MonkeyPatch) -> Randomness:
    monkeypatch.setenv("PRIVET_TEST_SEEDS", "1")
    return Randomness.for_tests(20240601)


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero noise and an argmax selection: releases then show the exact pre-noise values."""
    monkeypatch.setattr(mechanisms, "discrete_laplace", lambda scale, size, *, rng=None: np.zeros(size, np.int64))
    monkeypatch.setattr(mechanisms, "laplace", lambda scale, size, *, granularity=None, rng=None: np.zeros(size))
    monkeypatch.setattr(
        mechanisms, "report_noisy_max", lambda scores, eps, sens, *, monotonic=False, rng=None: int(np.argmax(scores))
    )


def people(n: int, seed: int = 0) -> pd.DataFrame:
    generator = np.random.default_rng(seed)  # test data only; privet's noise never comes from numpy
    rows = generator.integers(1, 4, size=n)
    return pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), rows),
            "value": generator.uniform(0, 10, size=rows.sum()),
            "city": generator.choice(["a", "b", "c"], size=rows.sum()),
        }
    )


def discrete_laplace_variance(scale: float) -> float:
    p = math.exp(-1 / scale)
    return 2 * p / (1 - p) ** 2


# -- clamping and exact pre-noise values ---------------------------------------------------------------------


def test_values_are_clamped_and_missing_values_skipped(no_noise: None, rng: Randomness) -> None:
    table = pd.DataFrame({"x": [-50.0, 5.0, 7.0, 1000.0, np.nan]})
    assert stats.count(table, epsilon=1, rng=rng).value == 5
    assert stats.count(table, epsilon=1, column="x", rng=rng).value == 4
    assert stats.sum(table, "x", bounds=(0, 10), epsilon=1, rng=rng).value == pytest.approx(22.0, abs=1e-6)
    assert stats.mean(table, "x", bounds=(0, 10), epsilon=1, rng=rng).value == pytest.approx(5.5, abs=1e-6)
    expected_var = float(np.var([0.0, 5.0, 7.0, 10.0], ddof=1))
    assert stats.variance(table, "x", bounds=(0, 10), epsilon=1, rng=rng).value == pytest.approx(expected_var, 1e-6)
    # Negative bounds: the sum's sensitivity is max(|lower|, |upper|), the clamp is the same.
    assert stats.sum(table, "x", bounds=(-20, -1), epsilon=1, rng=rng).value == pytest.approx(-20 - 1 - 1 - 1)


def test_release_carries_its_cost(rng: Randomness) -> None:
    table = people(300)
    release = stats.mean(table, "value", bounds=(0, 10), epsilon=0.8, unit="pid", max_rows_per_unit=2, rng=rng)
    assert release.statistic == "mean" and release.column == "value"
    assert release.epsilon == 0.8 and release.delta == 0.0
    assert release.bounds == (0.0, 10.0)
    assert release.contribution == stats.Contribution("pid", 2, 1)
    assert release.mechanism == "laplace+discrete_laplace"
    assert math.fsum(p.epsilon for p in release.parts) == pytest.approx(0.8)
    centered, count = release.parts
    assert centered.sensitivity == pytest.approx(2 * 5.0)  # k * (upper - lower) / 2
    assert centered.scale == pytest.approx(2 * 5.0 / 0.4, rel=1e-5)
    assert count.sensitivity == 2 and count.scale == pytest.approx(2 / 0.4)
    assert len(release.events) == 2
    assert 0 <= release.value <= 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        release.epsilon = 10  # type: ignore[misc]


# -- contribution bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_one_person_with_10000_rows_moves_the_true_sum_by_at_most_k_times_the_bound(
    no_noise: None, rng: Randomness, k: int
) -> None:
    base = people(200)
    whale = pd.DataFrame({"pid": 10_000_000, "value": np.linspace(0, 500, 10_000), "city": "a"})
    both = pd.concat([base, whale], ignore_index=True)
    without = stats.sum(base, "value", bounds=(0, 10), epsilon=1, unit="pid", max_rows_per_unit=k, rng=rng).value
    with_whale = stats.sum(both, "value", bounds=(0, 10), epsilon=1, unit="pid", max_rows_per_unit=k, rng=rng).value
    assert 0 <= with_whale - without <= k * 10 + 1e-6
    counts = [stats.count(t, epsilon=1, unit="pid", max_rows_per_unit=k, rng=rng).value for t in (base, both)]
    assert counts[1] - counts[0] == k
    # Everyone else keeps up to k rows too: the pre-noise count is the sum of min(rows, k).
    assert counts[0] == int(base.groupby("pid").size().clip(upper=k).sum())


def test_a_person_in_many_groups_touches_at_most_m_groups(no_noise: None, rng: Randomness) -> None:
    keys = [f"g{i}" for i in range(300)]
    base = pd.DataFrame({"pid": np.arange(600), "g": np.tile(keys, 2), "value": 1.0})
    whale = pd.DataFrame({"pid": -1, "g": np.repeat(keys, 5), "value": 10.0})
    both = pd.concat([base, whale], ignore_index=True)
    aggs = {"n": Aggregate("count"), "s": Aggregate("sum", "value", (0, 10))}
    for m, k in ((1, 1), (4, 2)):
        kwargs = dict(epsilon=1, keys={"g": keys}, unit="pid", max_rows_per_unit=k, max_groups_per_unit=m, rng=rng)
        before = stats.group_by(base, "g", aggs, **kwargs).value
        after = stats.group_by(both, "g", aggs, **kwargs).value
        assert len(after) == 300  # declared keys: every group is reported
        count_diff = after["n"] - before["n"]
        assert count_diff.sum() == m * k and count_diff.max() == k
        assert (after["s"] - before["s"]).sum() == pytest.approx(m * k * 10)


def test_rows_over_the_limit_are_sampled_at_random_not_the_first(no_noise: None, rng: Randomness) -> None:
    one_person = pd.DataFrame({"pid": 7, "value": np.arange(1000, dtype=float)})
    kept = [stats.sum(one_person, "value", bounds=(0, 1000), epsilon=1, unit="pid", rng=rng).value for _ in range(300)]
    assert len(set(kept)) > 200  # a different row almost every time
    assert abs(np.mean(kept) - 499.5) < 70  # uniform over the rows: mean 499.5, standard error about 17
    assert kept.count(0.0) < 5


def test_rows_without_a_unit_are_dropped(no_noise: None, rng: Randomness) -> None:
    table = pd.DataFrame({"pid": [1, 1, None, None, 2], "value": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert stats.count(table, epsilon=1, unit="pid", max_rows_per_unit=5, rng=rng).value == 3


# -- the charge hook -------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, refuse: bool = False) -> None:
        self.calls: list[str] = []
        self.charges: list[tuple[list, str]] = []
        self.refuse = refuse
        for name in ("discrete_laplace", "laplace", "report_noisy_max"):
            original = getattr(mechanisms, name)

            def wrapped(*args, __original=original, __name=name, **kwargs):
                self.calls.append(__name)
                return __original(*args, **kwargs)

            monkeypatch.setattr(mechanisms, name, wrapped)

    def __call__(self, events, description: str) -> None:
        self.calls.append("charge")
        self.charges.append((list(events), description))
        if self.refuse:
            raise PrivetError("budget exceeded", "Nothing was released.")


@pytest.mark.parametrize(
    "release",
    [
        lambda t, **kw: stats.count(t, **kw),
        lambda t, **kw: stats.mean(t, "value", bounds=(0, 10), **kw),
        lambda t, **kw: stats.variance(t, "value", bounds=(0, 10), **kw),
        lambda t, **kw: stats.quantile(t, "value", 0.5, bounds=(0, 10), **kw),
        lambda t, **kw: stats.histogram(t, "city", delta=1e-6, **kw),
        lambda t, **kw: stats.group_by(
            t, "city", {"s": Aggregate("sum", "value", (0, 10))}, delta=1e-6, unit="pid", max_rows_per_unit=2, **kw
        ),
    ],
    ids=["count", "mean", "variance", "quantile", "histogram", "group_by"],
)
def test_charge_is_called_once_before_any_noise(monkeypatch: pytest.MonkeyPatch, rng: Randomness, release) -> None:
    table = people(100)
    table["name"] = SECRET
    recorder = Recorder(monkeypatch)
    result = release(table, epsilon=1.0, charge=recorder, rng=rng)
    assert recorder.calls[0] == "charge" and recorder.calls.count("charge") == 1
    assert len(recorder.calls) > 1  # noise was drawn, after the charge
    events, description = recorder.charges[0]
    assert tuple(events) == result.events
    assert description.startswith("privet.dp.stats") and SECRET not in description


def test_a_refused_charge_releases_nothing(monkeypatch: pytest.MonkeyPatch, rng: Randomness) -> None:
    table = people(100)
    recorder = Recorder(monkeypatch, refuse=True)
    with pytest.raises(PrivetError, match="budget exceeded"):
        stats.mean(table, "value", bounds=(0, 10), epsilon=1, charge=recorder, rng=rng)
    with pytest.raises(PrivetError, match="budget exceeded"):
        stats.group_by(table, "city", epsilon=1, delta=1e-6, charge=recorder, rng=rng)
    assert recorder.calls == ["charge", "charge"]  # no sampler ran


def test_invalid_requests_are_refused_before_charging(monkeypatch: pytest.MonkeyPatch, rng: Randomness) -> None:
    recorder = Recorder(monkeypatch)
    with pytest.raises(UsageError):
        stats.mean(people(10), "nope", bounds=(0, 1), epsilon=1, charge=recorder, rng=rng)
    assert recorder.calls == []


# -- noise magnitudes ------------------------------------------------------------------------------------------


def test_noisy_counts_have_the_declared_variance(rng: Randomness) -> None:
    categories = list(range(2000))
    table = pd.DataFrame({"c": np.repeat(categories, 50)})
    release = stats.histogram(table, "c", categories=categories, epsilon=0.5, rng=rng)
    noise = release.value.to_numpy() - 50
    scale = release.parts[0].scale
    assert scale == pytest.approx(2.0)  # sensitivity 1 / epsilon 0.5
    assert np.var(noise) == pytest.approx(discrete_laplace_variance(scale), rel=0.12)
    assert abs(np.mean(noise)) < 4 * math.sqrt(discrete_laplace_variance(scale) / noise.size)
    # The same holds for separate scalar releases (fewer repetitions, looser tolerance).
    small = pd.DataFrame({"x": np.zeros(40)})
    singles = np.array([stats.count(small, epsilon=1.0, rng=rng).value for _ in range(400)]) - 40
    assert np.var(singles) == pytest.approx(discrete_laplace_variance(1.0), rel=0.3)


def test_noisy_sums_have_the_declared_scale_and_lie_on_the_grid(rng: Randomness) -> None:
    keys = list(range(2000))
    table = pd.DataFrame({"g": np.repeat(keys, 3), "value": 4.0})
    release = stats.group_by(
        table, "g", {"s": Aggregate("sum", "value", (0, 10))}, keys={"g": keys}, epsilon=0.25, rng=rng
    )
    (part,) = release.parts
    assert part.scale == pytest.approx(10 / 0.25, rel=1e-5)
    noise = release.value["s"].to_numpy() - 12.0
    assert np.var(noise) == pytest.approx(2 * part.scale**2, rel=0.15)
    steps = noise / part.granularity
    assert np.array_equal(steps, np.round(steps))  # every output is on the noise grid (Mironov-safe)


def test_mean_error_matches_its_scale(rng: Randomness) -> None:
    table = pd.DataFrame({"x": np.full(2000, 3.0)})
    errors = np.array([stats.mean(table, "x", bounds=(0, 10), epsilon=1, rng=rng).value - 3.0 for _ in range(300)])
    # Dominated by the centred sum's Laplace(5 / 0.5 = 10) noise over n = 2000: sd about 10 * sqrt(2) / 2000.
    predicted = 10 * math.sqrt(2) / 2000
    assert np.std(errors) == pytest.approx(predicted, rel=0.35)


def test_quantiles(rng: Randomness, no_noise: None) -> None:
    table = pd.DataFrame({"x": np.arange(1, 1000, dtype=float)})
    grid = list(range(0, 1001))
    assert stats.quantile(table, "x", 0.5, bounds=(0, 1000), candidates=grid, epsilon=1, rng=rng).value == 500
    release = stats.quantiles(table, "x", [0.9, 0.1], bounds=(0, 1000), candidates=grid, epsilon=1, rng=rng)
    assert release.value == (899.0, 101.0)  # numpy: 899.2 and 100.8; the score picks the nearest rank
    assert [p.name for p in release.parts] == ["quantile(0.9)", "quantile(0.1)"]


def test_quantile_with_real_noise_is_accurate_and_monotone(rng: Randomness) -> None:
    table = pd.DataFrame({"x": np.arange(1, 1000, dtype=float)})
    release = stats.quantiles(table, "x", [0.75, 0.25, 0.5], bounds=(0, 1000), epsilon=2, rng=rng)
    high, low, mid = release.value
    assert low <= mid <= high
    assert abs(mid - 500) < 30 and abs(low - 250) < 30 and abs(high - 750) < 30
    assert release.mechanism == "report_noisy_max"


# -- partition selection ---------------------------------------------------------------------------------------


def test_partition_selection_drops_tiny_groups(rng: Randomness) -> None:
    big = pd.DataFrame({"g": np.repeat([f"big{i}" for i in range(10)], 400)})
    tiny = pd.DataFrame({"g": [f"solo{i}" for i in range(300)]})
    pairs = pd.DataFrame({"g": np.repeat([f"pair{i}" for i in range(100)], 2)})
    table = pd.concat([big, tiny, pairs], ignore_index=True)
    release = stats.histogram(table, "g", epsilon=1, delta=1e-5, rng=rng)
    assert set(release.value.index) == {f"big{i}" for i in range(10)}
    assert release.delta == 1e-5
    (part,) = release.parts  # count(*) with k = 1: its noisy counts select the groups
    p = math.exp(-1 / part.scale)
    assert part.threshold is not None
    assert p ** (part.threshold - 1) / (1 + p) <= 1e-5  # a one-unit group survives with probability <= delta


def test_selection_with_separate_share_and_many_groups_per_unit(monkeypatch: pytest.MonkeyPatch, rng) -> None:
    # Noise of +1000 makes every candidate group pass: the candidates are then exactly what is released.
    monkeypatch.setattr(mechanisms, "discrete_laplace", lambda scale, size, *, rng=None: np.full(size, 1000))
    base = pd.DataFrame({"pid": np.arange(50), "g": "common", "value": 1.0})
    whale = pd.DataFrame({"pid": -1, "g": [f"mine{i}" for i in range(200)], "value": 1.0})
    table = pd.concat([base, whale], ignore_index=True)
    release = stats.group_by(
        table,
        "g",
        {"s": Aggregate("sum", "value", (0, 1))},
        epsilon=1,
        delta=1e-6,
        unit="pid",
        max_groups_per_unit=3,
        rng=rng,
    )
    # Only groups where the whale's rows survived bounding are candidates: at most m = 3 of its 200.
    assert len(release.value) == 1 + 3
    selection = release.parts[-1]
    assert selection.name == "partition_selection" and selection.epsilon == pytest.approx(0.5)
    assert selection.scale == pytest.approx(3 / 0.5)  # m / eps_sel


def test_selection_keeps_large_groups_with_real_noise(rng: Randomness) -> None:
    table = people(2000)
    release = stats.group_by(
        table,
        "city",
        {"n": Aggregate("count"), "m": Aggregate("mean", "value", (0, 10))},
        epsilon=1,
        delta=1e-6,
        unit="pid",
        max_rows_per_unit=2,
        max_groups_per_unit=2,
        rng=rng,
    )
    assert list(release.value["city"]) == ["a", "b", "c"]
    assert release.value["m"].between(4, 6).all()
    assert [p.name for p in release.parts] == ["count", "centered_sum", "count", "partition_selection"]
    assert "split evenly over 3 part(s)" in release.notes[0]


# -- accounting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda t, rng: stats.count(t, epsilon=0.7, rng=rng),
        lambda t, rng: stats.sum(t, "value", bounds=(0, 10), epsilon=0.7, rng=rng),
        lambda t, rng: stats.mean(t, "value", bounds=(0, 10), epsilon=0.7, unit="pid", max_rows_per_unit=3, rng=rng),
        lambda t, rng: stats.variance(t, "value", bounds=(0, 10), epsilon=0.7, rng=rng),
        lambda t, rng: stats.quantile(t, "value", 0.3, bounds=(0, 10), epsilon=0.7, rng=rng),
        lambda t, rng: stats.group_by(
            t,
            "city",
            {"m": Aggregate("mean", "value", (0, 10)), "q": Aggregate("quantile", "value", (0, 10))},
            epsilon=0.7,
            delta=1e-6,
            unit="pid",
            max_groups_per_unit=2,
            rng=rng,
        ),
    ],
    ids=["count", "sum", "mean", "variance", "quantile", "group_by"],
)
def test_events_compose_to_the_reported_epsilon(rng: Randomness, make) -> None:
    release = make(people(300), rng)
    composed = compose_epsilon(list(release.events), max(release.delta, 1e-12), accountant="pld")
    assert composed.epsilon <= release.epsilon * 1.01 + 1e-9
    assert composed.epsilon >= release.epsilon * 0.5  # the events describe the real mechanisms, not less


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda t: stats.mean(t, "value", bounds=(0, 10), epsilon=0), "greater than 0"),
        (lambda t: stats.mean(t, "value", bounds=(0, 10), epsilon=-1), "greater than 0"),
        (lambda t: stats.mean(t, "value", bounds=(0, 10), epsilon=float("nan")), "finite"),
        (lambda t: stats.count(t, epsilon=float("inf")), "finite"),
        (lambda t: stats.mean(t, "value", bounds=(0, 10), epsilon=1e-12), "outside the range"),
        (lambda t: stats.count(t, epsilon=1e12), "outside the range"),
        (lambda t: stats.mean(t, "value", epsilon=1), "bounds are required"),
        (lambda t: stats.sum(t, "value", bounds=(5, 5), epsilon=1), "lower < upper"),
        (lambda t: stats.sum(t, "value", bounds=(9, 1), epsilon=1), "lower < upper"),
        (lambda t: stats.sum(t, "value", bounds=(0, float("inf")), epsilon=1), "finite"),
        (lambda t: stats.sum(t, "nope", bounds=(0, 1), epsilon=1), "unknown"),
        (lambda t: stats.sum(t, "name", bounds=(0, 1), epsilon=1), "not numeric"),
        (lambda t: stats.count(t, epsilon=1, unit="nobody"), "unknown privacy unit"),
        (lambda t: stats.count(t, epsilon=1, max_rows_per_unit=3), "need a privacy unit"),
        (lambda t: stats.count(t, epsilon=1, unit="pid", max_rows_per_unit=0), "positive integer"),
        (lambda t: stats.histogram(t, "city", epsilon=1), "delta > 0"),
        (lambda t: stats.group_by(t, "city", epsilon=1, delta=1.5), "delta"),
        (lambda t: stats.quantile(t, "value", 1.5, bounds=(0, 10), epsilon=1), "quantile level"),
        (lambda t: stats.quantile(t, "value", 0.5, bounds=(0, 10), candidates=[5, 11], epsilon=1), "candidates"),
        (lambda t: stats.histogram(t, "city", categories=["a", "a"], epsilon=1), "distinct"),
        (lambda t: stats.group_by(t, "city", epsilon=1, keys={"value": [1]}), "not grouped by"),
        (lambda t: stats.group_by(t, "nope", epsilon=1, delta=1e-6), "unknown group-by column"),
        (lambda t: stats.mean(t.to_dict(), "value", bounds=(0, 1), epsilon=1), "DataFrame"),
    ],
)
def test_bad_requests_are_usage_errors_without_data(call, fragment: str) -> None:
    table = people(20)
    table["name"] = SECRET
    with pytest.raises(UsageError) as info:
        call(table)
    line = info.value.one_line()
    assert fragment in line
    assert SECRET not in line and "\n" not in line
    assert info.value.hint != UsageError.default_hint  # every refusal says what to do


def test_noise_never_comes_from_numpy(monkeypatch: pytest.MonkeyPatch, rng: Randomness) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("numpy's RNG was used for privacy noise")

    for name in ("default_rng", "laplace", "normal", "random", "uniform", "choice", "permutation", "integers"):
        monkeypatch.setattr(np.random, name, forbidden, raising=False)
    table = pd.DataFrame({"pid": np.arange(300) % 90, "value": np.linspace(0, 10, 300), "city": "x"})
    stats.mean(table, "value", bounds=(0, 10), epsilon=1, unit="pid", max_rows_per_unit=2, rng=rng)
    stats.quantile(table, "value", 0.5, bounds=(0, 10), epsilon=1, rng=rng)
    stats.histogram(table, "city", epsilon=1, delta=1e-6, unit="pid", max_rows_per_unit=2, rng=rng)
    # Without rng= the process-wide CSPRNG is used.
    assert stats.count(table, epsilon=1).mechanism == "discrete_laplace"


def test_histogram_with_declared_categories(no_noise: None, rng: Randomness) -> None:
    table = pd.DataFrame({"c": ["x", "x", "y", "undeclared"]})
    release = stats.histogram(table, "c", categories=["x", "y", "z"], epsilon=1, rng=rng)
    assert release.value.to_dict() == {"x": 2, "y": 1, "z": 0}
    assert release.delta == 0.0 and release.statistic == "histogram"


def test_with_the_real_ledger_an_over_budget_release_is_refused(
    sqlite_store, monkeypatch: pytest.MonkeyPatch, rng: Randomness
) -> None:
    from privet.dp.ledger import Ledger
    from privet.errors import BudgetExceededError

    ledger = Ledger(sqlite_store)
    ledger.create("clinic", "visits", epsilon=1.0, delta=1e-6)
    charge = ledger.charger("clinic", "visits")
    table = people(200)
    first = stats.mean(
        table, "value", bounds=(0, 10), epsilon=0.6, unit="pid", max_rows_per_unit=3, charge=charge, rng=rng
    )
    assert 0 <= first.value <= 10
    recorder = Recorder(monkeypatch)  # counts sampler calls from here on
    with pytest.raises(BudgetExceededError):
        stats.mean(table, "value", bounds=(0, 10), epsilon=0.6, charge=charge, rng=rng)
    assert recorder.calls == []  # refused before any noise was drawn
    [recorded] = ledger.history("clinic", "visits")
    assert recorded.events == first.events
    assert ledger.status("clinic", "visits").spent.epsilon == pytest.approx(0.6, rel=1e-3)
