"""The SQL front end: the supported subset, WHERE semantics, epsilon split, guarantees, and clear refusals."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privet.crypto.prg import Randomness
from privet.dp import mechanisms
from privet.dp.query import DEFAULT_GROUP_DELTA, parse_query, run_query
from privet.errors import PrivetError, UsageError

SECRET = "Zelda-Secretvalue-4471"
BOUNDS = {"age": (17.0, 90.0), "hours": (0.0, 100.0)}


@pytest.fixture
def rng(monkeypatch: pytest.MonkeyPatch) -> Randomness:
    monkeypatch.setenv("PRIVET_TEST_SEEDS", "1")
    return Randomness.for_tests(7)


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mechanisms, "discrete_laplace", lambda scale, size, *, rng=None: np.zeros(size, np.int64))
    monkeypatch.setattr(mechanisms, "laplace", lambda scale, size, *, granularity=None, rng=None: np.zeros(size))
    monkeypatch.setattr(
        mechanisms, "report_noisy_max", lambda scores, eps, sens, *, monotonic=False, rng=None: int(np.argmax(scores))
    )


@pytest.fixture
def table() -> pd.DataFrame:
    generator = np.random.default_rng(3)  # test data only
    n = 3000
    frame = pd.DataFrame(
        {
            "pid": np.arange(n) // 2,
            "age": generator.integers(17, 91, size=n).astype(float),
            "hours": generator.integers(1, 80, size=n).astype(float),
            "sex": generator.choice(["Male", "Female"], size=n),
            "race": generator.choice(["White", "Black", "Asian"], size=n, p=[0.7, 0.2, 0.1]),
            "name": SECRET,
        }
    )
    frame.loc[::50, "age"] = np.nan
    return frame


def run(table: pd.DataFrame, sql: str, rng: Randomness, **kwargs):
    kwargs.setdefault("epsilon", 1.0)
    kwargs.setdefault("bounds", BOUNDS)
    return run_query(table, sql, rng=rng, **kwargs)


# -- the supported subset --------------------------------------------------------------------------------------


def test_parse_names_kinds_and_levels(table: pd.DataFrame) -> None:
    parsed = parse_query(
        "SELECT sex, COUNT(*), count(age) AS n_age, SUM(age), AVG(age), VARIANCE(age), VAR(hours), STDDEV(age),"
        " MEDIAN(hours), QUANTILE(age, 0.9), PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY hours) AS p25"
        " FROM adult GROUP BY sex",
        table,
    )
    got = [(o.name, o.kind, o.source, o.q) for o in parsed.outputs]
    assert got == [
        ("sex", "key", "sex", None),
        ("count", "count", None, None),
        ("n_age", "count", "age", None),
        ("sum_age", "sum", "age", None),
        ("mean_age", "mean", "age", None),
        ("variance_age", "variance", "age", None),
        ("variance_hours", "variance", "hours", None),
        ("stddev_age", "stddev", "age", None),
        ("median_hours", "quantile", "hours", 0.5),
        ("quantile_0.9_age", "quantile", "age", 0.9),
        ("p25", "quantile", "hours", 0.25),
    ]
    assert parsed.group_by == ("sex",)


def test_identifiers_fold_case_and_quoted_names_work(table: pd.DataFrame, rng: Randomness) -> None:
    frame = table.rename(columns={"hours": "hours-per-week"})
    result = run(
        frame,
        'SELECT SEX, COUNT(*) AS n, AVG("hours-per-week") AS h FROM t AS x WHERE x.Age > 30 GROUP BY Sex',
        rng,
        bounds={"hours-per-week": (0, 100)},
    )
    assert list(result.table.columns) == ["sex", "n", "h"]  # a key column keeps the table's name for it
    assert set(result.table["sex"]) == {"Male", "Female"}


def test_aggregates_without_noise_match_pandas(table: pd.DataFrame, rng: Randomness, no_noise: None) -> None:
    result = run(
        table,
        "SELECT race, COUNT(*) AS n, SUM(age) AS s, AVG(age) AS a, VARIANCE(hours) AS v, STDDEV(hours) AS sd,"
        " MEDIAN(hours) AS med FROM people WHERE sex = 'Female' GROUP BY race ORDER BY race",
        rng,
        keys={"race": ["Asian", "Black", "White"]},
        candidates={"hours": list(range(0, 101))},
    )
    female = table[table["sex"] == "Female"]
    expected = female.groupby("race").agg(
        n=("age", "size"), s=("age", "sum"), a=("age", "mean"), v=("hours", "var"), sd=("hours", "std")
    )
    got = result.table.set_index("race")
    assert list(got.index) == ["Asian", "Black", "White"]
    assert (got["n"] == expected["n"]).all()
    np.testing.assert_allclose(got["s"], expected["s"], rtol=1e-7)
    np.testing.assert_allclose(got["a"], expected["a"], rtol=1e-7)
    np.testing.assert_allclose(got["v"], expected["v"], rtol=1e-6)
    np.testing.assert_allclose(got["sd"], expected["sd"], rtol=1e-6)
    medians = female.groupby("race")["hours"].median()
    assert (abs(got["med"] - medians) <= 1).all()


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("age > 50", lambda t: t["age"] > 50),
        ("50 < age", lambda t: t["age"] > 50),
        ("age >= 30 AND age <= 40", lambda t: t["age"].between(30, 40)),
        ("age BETWEEN 30 AND 40", lambda t: t["age"].between(30, 40)),
        ("NOT age BETWEEN 30 AND 40", lambda t: t["age"].notna() & ~t["age"].between(30, 40)),
        ("race IN ('Black', 'Asian')", lambda t: t["race"].isin(["Black", "Asian"])),
        ("race NOT IN ('White')", lambda t: t["race"] != "White"),
        ("sex = 'Male' OR age < 20", lambda t: (t["sex"] == "Male") | (t["age"] < 20)),
        ("NOT (age > 30)", lambda t: t["age"] <= 30),  # a missing age is neither > 30 nor NOT > 30
        ("age <> 40", lambda t: t["age"].notna() & (t["age"] != 40)),
        ("age IS NULL", lambda t: t["age"].isna()),
        ("age IS NOT NULL AND hours > -1.5", lambda t: t["age"].notna()),
        (
            "(sex = 'Male') AND NOT (race = 'White' OR age > 60)",
            lambda t: (t["sex"] == "Male") & (t["race"] != "White") & (t["age"] <= 60),
        ),
    ],
)
def test_where_follows_sql_semantics(table, rng, no_noise, where: str, expected) -> None:
    result = run(table, f"SELECT COUNT(*) AS n FROM t WHERE {where}", rng)  # noqa: S608 (test SQL, no database)
    assert int(result.table["n"].iloc[0]) == int(expected(table).sum())


def test_epsilon_split_and_guarantees(table: pd.DataFrame, rng: Randomness) -> None:
    result = run(table, "SELECT COUNT(*) AS n, AVG(age) AS a, MEDIAN(hours) AS m FROM t", rng, epsilon=0.9)
    assert result.epsilon == 0.9 and result.delta == 0.0
    by_name = {c.name: c for c in result.columns}
    assert [by_name[n].epsilon for n in ("n", "a", "m")] == pytest.approx([0.3, 0.3, 0.3])
    assert by_name["a"].bounds == (17.0, 90.0) and by_name["m"].q == 0.5
    assert by_name["n"].mechanism == "discrete_laplace"
    assert by_name["a"].mechanism == "laplace+discrete_laplace"
    assert by_name["m"].mechanism == "report_noisy_max"
    assert "split evenly over 3 part(s)" in result.notes[0] and "n (count)" in result.notes[0]
    assert len(result.events) == 4  # count; centred sum and count for the mean; the median


def test_group_by_without_keys_selects_partitions(table: pd.DataFrame, rng: Randomness) -> None:
    result = run(table, "SELECT race, AVG(age) AS a FROM t GROUP BY race", rng)
    assert result.delta == DEFAULT_GROUP_DELTA
    assert set(result.table["race"]) == {"White", "Black", "Asian"}
    key, mean = result.columns
    assert key.kind == "key" and "partition selection" in key.mechanism
    assert key.epsilon == pytest.approx(0.5) and key.delta == DEFAULT_GROUP_DELTA
    assert mean.epsilon == pytest.approx(0.5)
    assert math.fsum(c.epsilon for c in result.columns) == pytest.approx(result.epsilon)
    # COUNT(*) with one row per unit and group: its noisy counts select the groups, no separate share.
    shared = run(table, "SELECT race, COUNT(*) AS n, AVG(age) AS a FROM t GROUP BY race", rng)
    assert [c.epsilon for c in shared.columns] == pytest.approx([0.0, 0.5, 0.5])
    assert "noisy counts of 'n'" in shared.columns[0].mechanism
    # Declared keys: public, no delta, every key reported.
    declared = run(table, "SELECT race, COUNT(*) AS n FROM t GROUP BY race", rng, keys={"race": ["White", "Other"]})
    assert declared.delta == 0.0 and list(declared.table["race"]) == ["White", "Other"]
    assert declared.columns[0].mechanism == "declared keys (public)"


def test_partition_selection_drops_tiny_groups(rng: Randomness) -> None:
    frame = pd.DataFrame({"g": ["big"] * 2000 + [f"solo{i}" for i in range(100)], "x": 1.0})
    result = run(frame, "SELECT g, COUNT(*) FROM t GROUP BY g", rng, bounds={})
    assert list(result.table["g"]) == ["big"]


def test_unit_bounds_apply_to_sql(table: pd.DataFrame, rng: Randomness, no_noise: None) -> None:
    whale = pd.DataFrame({"pid": -1, "age": 90.0, "hours": 1.0, "sex": "Male", "race": "White", "name": "w"}, index=[0])
    both = pd.concat([table, pd.concat([whale] * 5000, ignore_index=True)], ignore_index=True)
    sql = "SELECT SUM(age) AS s FROM t"
    kwargs = dict(unit="pid", max_rows_per_unit=2)
    before = run(table, sql, rng, **kwargs).table["s"].iloc[0]
    after = run(both, sql, rng, **kwargs).table["s"].iloc[0]
    assert after - before == pytest.approx(2 * 90)


def test_order_by_group_key(table: pd.DataFrame, rng: Randomness) -> None:
    result = run(table, "SELECT race AS r, COUNT(*) AS n FROM t GROUP BY race ORDER BY r DESC", rng)
    assert list(result.table["r"]) == ["White", "Black", "Asian"]


def test_charge_gets_all_events_once_before_noise_and_no_literals(
    table: pd.DataFrame, rng: Randomness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = mechanisms.discrete_laplace

    def counting(*args, **kwargs):
        calls.append("noise")
        return original(*args, **kwargs)

    monkeypatch.setattr(mechanisms, "discrete_laplace", counting)
    seen: list[tuple[list, str]] = []

    def charge(events, description: str) -> None:
        calls.append("charge")
        seen.append((list(events), description))

    sql = f"SELECT sex, COUNT(*) FROM t WHERE name <> '{SECRET}' AND age > 41 GROUP BY sex"  # noqa: S608
    result = run(table, sql, rng, charge=charge)
    assert calls[0] == "charge" and calls.count("charge") == 1 and "noise" in calls
    events, description = seen[0]
    assert tuple(events) == result.events
    assert SECRET not in description and "41" not in description and "COUNT(*)" in description

    def refuse(events, description: str) -> None:
        raise PrivetError("budget exceeded", "Nothing was released.")

    calls.clear()
    with pytest.raises(PrivetError, match="budget exceeded"):
        run(table, sql, rng, charge=refuse)
    assert calls == []


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT COUNT(*) FROM t JOIN u ON t.pid = u.pid", "JOIN"),
        ("SELECT COUNT(*) FROM t, u", "JOIN"),
        ("SELECT COUNT(*) FROM (SELECT * FROM t)", "subqueries"),
        ("SELECT COUNT(*) FROM read_csv('x.csv')", "FROM must name one table"),
        ("SELECT COUNT(*) FROM t WHERE age IN (SELECT age FROM u)", "subqueries"),
        ("SELECT sex, COUNT(*) FROM t GROUP BY sex HAVING COUNT(*) > 5", "HAVING"),
        ("SELECT SUM(age) OVER (PARTITION BY sex) FROM t", "window functions"),
        ("SELECT sex, COUNT(*) AS n FROM t GROUP BY sex ORDER BY n", "ORDER BY"),
        ("SELECT sex, COUNT(*) FROM t GROUP BY sex ORDER BY COUNT(*) DESC", "ORDER BY"),
        ("SELECT COUNT(*) FROM t LIMIT 5", "LIMIT"),
        ("SELECT DISTINCT sex FROM t", "DISTINCT"),
        ("SELECT COUNT(*) FROM t UNION SELECT COUNT(*) FROM t", "UNION"),
        ("WITH x AS (SELECT * FROM t) SELECT COUNT(*) FROM x", "WITH"),
        ("SELECT * FROM t", "SELECT *"),
        ("SELECT age FROM t", "not grouped by"),
        ("SELECT MAX(age) FROM t", "MAX"),
        ("SELECT MIN(age) FROM t", "MIN"),
        ("SELECT COUNT(DISTINCT pid) FROM t", "COUNT(DISTINCT"),
        ("SELECT SUM(age + hours) FROM t", "plain column"),
        ("SELECT SUM(age) * 2 FROM t", "not an expression"),
        ("SELECT VAR_POP(age) FROM t", "not supported"),
        ("SELECT STRING_AGG(name, ',') FROM t", "not supported"),
        ("SELECT COUNT(*) FROM t WHERE name LIKE 'Z%'", "LIKE"),
        ("SELECT COUNT(*) FROM t WHERE age > hours", "literals"),
        ("SELECT COUNT(*) FROM t WHERE age = NULL", "IS NULL"),
        ("SELECT COUNT(*) FROM t WHERE age > 'old'", "numeric"),
        ("SELECT COUNT(*) FROM t WHERE sex = 3", "text"),
        ("SELECT COUNT(*) FROM t WHERE UPPER(sex) = 'MALE'", "plain column"),
        ("SELECT COUNT(*) FROM t WHERE nope = 1", "unknown column"),
        ("SELECT SUM(nope) FROM t", "unknown column"),
        ("SELECT SUM(pid) FROM t", "needs bounds"),
        ("SELECT MEDIAN(pid) FROM t", "needs bounds"),
        ("SELECT SUM(name) FROM t", "needs bounds"),
        ("SELECT QUANTILE(age, 2) FROM t", "[0, 1]"),
        ("SELECT sex FROM t GROUP BY sex", "no aggregate"),
        ("SELECT COUNT(*) AS a, SUM(age) AS a FROM t", "more than once"),
        ("SELECT COUNT(*) FROM t GROUP BY 1", "plain column"),
        ("SELECT COUNT(*) FROM t GROUP BY sex, sex", "repeated"),
        ("SELECT COUNT(*) FROM u.t WHERE x.age > 3", "qualifier"),
        ("SELECT COUNT(*)", "no FROM"),
        ("SELECT COUNT(* FROM t", "does not parse"),
        ("SELECT COUNT(*) FROM t; SELECT COUNT(*) FROM t", "one SQL statement"),
        ("DELETE FROM t", "only SELECT"),
        ("", "empty"),
    ],
)
def test_unsupported_sql_is_refused_with_a_clear_message(table, rng, sql: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        run(table, sql, rng)
    line = info.value.one_line()
    assert fragment in line, line
    assert SECRET not in line and "\n" not in line
    assert info.value.hint != UsageError.default_hint


def test_parameter_errors(table: pd.DataFrame, rng: Randomness) -> None:
    with pytest.raises(UsageError, match="greater than 0"):
        run(table, "SELECT COUNT(*) FROM t", rng, epsilon=0)
    with pytest.raises(UsageError, match="delta > 0"):
        run(table, "SELECT sex, COUNT(*) FROM t GROUP BY sex", rng, delta=0.0)
    with pytest.raises(UsageError, match="no GROUP BY"):
        run(table, "SELECT COUNT(*) FROM t", rng, keys={"sex": ["Male"]})
    with pytest.raises(UsageError, match="lower < upper"):
        run(table, "SELECT AVG(age) FROM t", rng, bounds={"age": (90, 17)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(
        alphabet=st.sampled_from(list("SELECTFROMWHEREGROUPBY COUNT(*)SUMAVG,age sex'=<>!;0123456789.-\"")), max_size=80
    )
)
def test_arbitrary_text_only_ever_raises_usage_errors(table: pd.DataFrame, sql: str) -> None:
    with contextlib.suppress(UsageError):  # anything else (a crash, a parser exception) fails the test
        parse_query(sql, table)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    column=st.sampled_from(["age", "hours"]),
    op=st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
    value=st.integers(min_value=0, max_value=100),
    negate=st.booleans(),
)
def test_generated_predicates_match_pandas(table, column: str, op: str, value: int, negate: bool) -> None:
    from privet.dp.query import _where_mask

    where = f"{'NOT ' if negate else ''}{column} {op} {value}"
    parsed = parse_query(f"SELECT COUNT(*) FROM t WHERE {where}", table)  # noqa: S608
    assert parsed.where is not None
    mask = _where_mask(table, parsed.where)
    python_op = {"=": "==", "<>": "!="}.get(op, op)
    series = table[column]
    expected = series.notna() & pd.eval(f"series {python_op} {value}")
    if negate:
        expected = series.notna() & ~expected
    assert np.array_equal(mask, expected.to_numpy())
