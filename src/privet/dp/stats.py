"""Differentially private statistics over a pandas DataFrame, with bounded contributions.

Every function returns a :class:`Release`: the noisy value(s) together with what they cost, as values (the
epsilon and delta the noise was calibrated to, the mechanism, the accounting events a ledger composes, the
bounds and contribution limits used). Nothing here derives a bound from the data.

Privacy unit and neighbouring tables
    Two tables are neighbours when one has all the rows of one privacy unit (a person) more than the other
    (add/remove, "unbounded" DP). ``unit=`` names the column that identifies the unit; without it every row
    is its own unit. Each unit's influence is bounded before anything is computed:

    - ``max_rows_per_unit`` (k): rows kept per unit (per group, for grouped releases);
    - ``max_groups_per_unit`` (m): groups a unit may touch in a grouped release (a histogram, ``group_by``).

    Rows over a limit are dropped, chosen uniformly at random with privet's CSPRNG (never "the first k"), and
    rows whose unit is missing are dropped. Values are clamped to the caller's ``bounds``. Sensitivities follow
    from k, m and the bounds alone; noise scales from the sensitivities and epsilon.

Mechanisms
    Counts get discrete Laplace noise (scale ``m*k/eps``). Sums are computed exactly: each clamped value is
    rounded to a fine power-of-two grid and summed as an integer, so float rounding cannot enlarge the
    sensitivity; the sum then gets Laplace noise on a grid (Mironov-safe). Quantiles select a candidate from a
    public grid by report-noisy-max with exponential noise (permute-and-flip; see :func:`quantile`). Groups
    whose keys are not declared are released only if a noisy count of their units passes a threshold (see
    :func:`group_by`). All noise comes from :mod:`privet.dp.mechanisms` (exact samplers on the CSPRNG).

The ``charge`` hook
    ``charge(events, description)`` is called once per release, after the inputs are checked and before
    anything is computed from the data; if it raises (a ledger refusing an over-budget release), nothing is
    released. With ``charge=None`` no budget is tracked here: the caller is responsible for accounting the
    returned ``Release.events``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any, Literal

import numpy as np
import pandas as pd

from privet.crypto.prg import Randomness, default_randomness
from privet.dp import mechanisms
from privet.dp.accounting import ApproxEvent, DiscreteLaplaceEvent, Event, LaplaceEvent, PureEvent
from privet.dp.sampling import MAX_SCALE, MIN_SCALE
from privet.errors import UsageError

__all__ = [
    "DEFAULT_QUANTILE_CANDIDATES",
    "Aggregate",
    "Charge",
    "Contribution",
    "Part",
    "Release",
    "Statistic",
    "count",
    "group_by",
    "histogram",
    "mean",
    "quantile",
    "quantiles",
    "sum",
    "variance",
]

Charge = Callable[[Sequence[Event], str], object]
Statistic = Literal["count", "sum", "mean", "variance", "quantile"]
STATISTICS: tuple[str, ...] = ("count", "sum", "mean", "variance", "quantile")
DEFAULT_QUANTILE_CANDIDATES = 1001  # evenly spaced points over the bounds when no candidates are given
_VALUE_BITS = 30  # per-record values are rounded to 2**-30 of their bound's magnitude before exact summation
_NOISE_BITS = 20  # the output grid is 2**-20 of the sensitivity: far below the noise, costs 2**-19 of epsilon
_MAX_ROWS = 1 << 32  # exact int64 sums hold 2**32 records of at most 2**30 grid steps each


@dataclass(frozen=True)
class Contribution:
    """How much one privacy unit may contribute: the bounds every sensitivity here is computed from."""

    unit: str | None
    max_rows_per_unit: int
    max_groups_per_unit: int


@dataclass(frozen=True)
class Part:
    """One noisy measurement inside a release, with its share of the privacy cost.

    ``sensitivity`` is per group and per unit (a unit touches at most ``max_groups_per_unit`` groups);
    ``scale`` is the noise scale actually used (Laplace/discrete Laplace ``b``; for report-noisy-max the scale
    of its exponential noise, ``2 * sensitivity / epsilon_per_group``). ``threshold`` is set for partition
    selection; ``granularity`` (output grid) and ``value_step`` (per-record rounding) for noisy sums.
    """

    name: str
    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    scale: float
    output: str | None = None
    threshold: float | None = None
    granularity: float | None = None
    value_step: float | None = None


@dataclass(frozen=True)
class Aggregate:
    """One statistic for :func:`group_by`: ``count`` (rows, or non-missing values of ``column``), ``sum``,
    ``mean``, ``variance`` (sample, ddof=1), or ``quantile`` (level ``q``, over ``candidates``)."""

    statistic: Statistic
    column: str | None = None
    bounds: tuple[float, float] | None = None
    q: float = 0.5
    candidates: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Release:
    """A differentially private result and its cost.

    ``value`` is an int (count), a float (sum, mean, variance, quantile), a tuple of floats (quantiles), a
    Series indexed by category (histogram) or a DataFrame with one row per released group (group_by).
    ``epsilon``/``delta`` are what the release costs under basic composition of its ``parts`` (each part's
    noise is calibrated to its share); ``events`` describe the same mechanisms for a ledger's accountant,
    which may compose them more tightly with other releases.
    """

    statistic: str
    value: Any
    epsilon: float
    delta: float
    mechanism: str
    events: tuple[Event, ...]
    bounds: tuple[float, float] | None
    column: str | None
    contribution: Contribution
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = field(default=())


# -- public API ----------------------------------------------------------------------------------------------


def count(
    table: pd.DataFrame,
    *,
    epsilon: float,
    column: str | None = None,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Noisy number of rows (or of non-missing values of ``column``): discrete Laplace, scale ``k/epsilon``.

    Negative noisy counts are reported as 0 (post-processing).
    """
    return _scalar(table, Aggregate("count", column), epsilon, unit, max_rows_per_unit, charge, rng)


def sum(  # the statistic's name; this module never uses the builtin
    table: pd.DataFrame,
    column: str,
    *,
    bounds: tuple[float, float] | None = None,
    epsilon: float,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Noisy sum of ``column`` clamped to ``bounds``: Laplace, sensitivity ``k * max(|lower|, |upper|)``.

    Missing values contribute nothing.
    """
    return _scalar(table, Aggregate("sum", column, bounds), epsilon, unit, max_rows_per_unit, charge, rng)


def mean(
    table: pd.DataFrame,
    column: str,
    *,
    bounds: tuple[float, float] | None = None,
    epsilon: float,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Noisy mean of ``column`` clamped to ``bounds``, for an unknown (private) number of rows.

    Estimator: ``midpoint + noisy_centered_sum / max(noisy_count, 1)``, clamped to the bounds, with epsilon
    split evenly between the two. Centering on the midpoint of the bounds makes the sum's sensitivity
    ``k * (upper - lower) / 2`` instead of ``k * max(|lower|, |upper|)`` (for ages in [17, 90]: 36.5 instead of
    90), so the error is that of a known-size mean up to the count's small share. Missing values are excluded
    from both the sum and the count.
    """
    return _scalar(table, Aggregate("mean", column, bounds), epsilon, unit, max_rows_per_unit, charge, rng)


def variance(
    table: pd.DataFrame,
    column: str,
    *,
    bounds: tuple[float, float] | None = None,
    epsilon: float,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Noisy sample variance (ddof=1) of ``column`` clamped to ``bounds``.

    Three noisy sums with epsilon/3 each: the count, and the sums of ``x - c`` and ``(x - c)**2`` with ``c`` the
    midpoint of the bounds (sensitivities ``k``, ``k*r`` and ``k*r**2``, ``r`` the half-width). The estimate is
    clamped to ``[0, r**2 * n/(n-1)]``, the largest variance values within the bounds can have.
    """
    return _scalar(table, Aggregate("variance", column, bounds), epsilon, unit, max_rows_per_unit, charge, rng)


def quantile(
    table: pd.DataFrame,
    column: str,
    q: float,
    *,
    bounds: tuple[float, float] | None = None,
    epsilon: float,
    candidates: Sequence[float] | None = None,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """The ``q``-quantile of ``column`` clamped to ``bounds``: a noisy choice among public candidates.

    Each candidate ``c`` is scored ``-|(1 - q) * #(x < c) - q * #(x > c)|`` (OpenDP's score; sensitivity
    ``k * max(q, 1 - q)``, not monotonic) and one is selected by report-noisy-max with exponential noise of
    scale ``2 * sensitivity / epsilon`` (permute-and-flip: epsilon-DP like the exponential mechanism, and never
    less accurate). ``candidates`` are public values within the bounds; the default is
    ``DEFAULT_QUANTILE_CANDIDATES`` evenly spaced points over the bounds (pass integers for integer data).
    """
    agg = Aggregate("quantile", column, bounds, q, _tuple_or_none(candidates))
    return _scalar(table, agg, epsilon, unit, max_rows_per_unit, charge, rng)


def quantiles(
    table: pd.DataFrame,
    column: str,
    qs: Sequence[float],
    *,
    bounds: tuple[float, float] | None = None,
    epsilon: float,
    candidates: Sequence[float] | None = None,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Several quantiles (see :func:`quantile`), epsilon split evenly; the value is a tuple in the order of
    ``qs``, made monotone in ``q`` by sorting (post-processing)."""
    levels = [float(q) for q in qs]
    if not levels:
        raise UsageError("quantiles needs at least one level", "Pass e.g. qs=[0.25, 0.5, 0.75].")
    aggs = {f"q{i}": Aggregate("quantile", column, bounds, q, _tuple_or_none(candidates)) for i, q in enumerate(levels)}
    contribution = _contribution(table, unit, max_rows_per_unit, 1, grouped=False)
    release = _release(
        table, [], aggs, epsilon=epsilon, delta=0.0, keys=None, contribution=contribution, charge=charge, rng=rng
    )
    values = [float(release.value[name].iloc[0]) for name in aggs]
    order = np.argsort(levels, kind="stable")
    ordered = sorted(values)
    monotone = [0.0] * len(values)
    for rank, index in enumerate(order):
        monotone[int(index)] = ordered[rank]
    checked = _check_bounds(bounds, column)
    return replace(release, statistic="quantiles", value=tuple(monotone), column=column, bounds=checked)


def histogram(
    table: pd.DataFrame,
    column: str,
    *,
    epsilon: float,
    categories: Sequence[Any] | None = None,
    delta: float = 0.0,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    max_groups_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Noisy count per category of ``column``, as a Series indexed by category.

    With ``categories`` (public, declared up front) every category is reported, rows with other values are
    dropped, and the cost is pure epsilon. Without them, categories come from the data and are released only
    through partition selection (see :func:`group_by`), which needs ``delta > 0``.
    """
    keys = None if categories is None else {column: list(categories)}
    release = group_by(
        table,
        column,
        {"count": Aggregate("count")},
        epsilon=epsilon,
        delta=delta,
        keys=keys,
        unit=unit,
        max_rows_per_unit=max_rows_per_unit,
        max_groups_per_unit=max_groups_per_unit,
        charge=charge,
        rng=rng,
    )
    series = release.value.set_index(column)["count"]
    return replace(release, statistic="histogram", value=series, column=column)


def group_by(
    table: pd.DataFrame,
    by: str | Sequence[str],
    aggregates: Mapping[str, Aggregate] | None = None,
    *,
    epsilon: float,
    delta: float = 0.0,
    keys: Mapping[str, Sequence[Any]] | None = None,
    unit: str | None = None,
    max_rows_per_unit: int = 1,
    max_groups_per_unit: int = 1,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> Release:
    """Aggregates per group of ``by``, as a DataFrame (key columns, then one column per aggregate).

    Epsilon is split evenly over the aggregates, plus one share for partition selection when ``keys`` is not
    given. Each unit keeps at most ``max_groups_per_unit`` (m) groups and ``max_rows_per_unit`` (k) rows per
    group, both sampled at random; per-group noise is calibrated to ``m`` groups of sensitivity ``k * ...``.

    Declared keys (``keys={column: values}``; the key set is their cross product) are public: each declared
    group is reported, empty or not, and rows with other keys are dropped. Without them, keys come from the
    data and a group is released only if ``units + Z >= tau``, where ``units`` counts the distinct units in the
    group (after bounding), ``Z`` is discrete Laplace with scale ``b = m / eps_sel``, and
    ``tau = 1 + ceil(b * ln(m / (delta * (1 + exp(-1/b)))))``. A group that exists only because of one unit
    then appears with probability at most ``delta / m``, so selection is ``(eps_sel, delta)``-DP and the
    whole release ``(epsilon, delta)``-DP. When a ``count(*)`` aggregate is requested and k = 1 its noisy
    counts are the selection counts, so selection costs no separate share.
    """
    columns = [by] if isinstance(by, str) else list(by)
    if not columns:
        raise UsageError("group_by needs at least one column to group by", "Pass by='column' or by=[...].")
    aggs = dict(aggregates) if aggregates is not None else {"count": Aggregate("count")}
    contribution = _contribution(table, unit, max_rows_per_unit, max_groups_per_unit, grouped=True)
    return _release(
        table,
        columns,
        aggs,
        epsilon=epsilon,
        delta=delta,
        keys=keys,
        contribution=contribution,
        charge=charge,
        rng=rng,
    )


# -- validation ----------------------------------------------------------------------------------------------


def _tuple_or_none(candidates: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if candidates is None else tuple(float(c) for c in candidates)


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float | np.number) or not math.isfinite(epsilon):
        raise UsageError("epsilon must be a finite number", "Pass e.g. epsilon=1.0.")
    if epsilon <= 0:
        raise UsageError(f"epsilon {epsilon} must be greater than 0", "Pass a positive epsilon, e.g. epsilon=1.0.")
    return float(epsilon)


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, int | float | np.number) or not 0 <= delta < 1:
        raise UsageError(f"delta {delta} must be in [0, 1)", "Use a delta well below 1/rows, e.g. 1e-6.")
    return float(delta)


def _check_column(table: pd.DataFrame, column: str, role: str) -> None:
    if column not in table.columns:
        raise UsageError(
            f"unknown {role} column {column!r}", f"The table's columns are: {', '.join(map(str, table.columns))}."
        )


def _check_bounds(bounds: object, column: str) -> tuple[float, float]:
    if bounds is None:
        raise UsageError(
            f"bounds are required for column {column!r}",
            "Pass bounds=(lower, upper) from domain knowledge; privet never derives bounds from the data.",
        )
    try:
        lower, upper = (float(v) for v in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise UsageError(
            f"bounds for column {column!r} must be a pair of numbers", "Pass bounds=(lower, upper)."
        ) from None
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise UsageError(f"bounds for column {column!r} must be finite", "Pass finite bounds=(lower, upper).")
    if lower >= upper:
        raise UsageError(f"bounds for column {column!r} need lower < upper", "Pass bounds=(lower, upper), lower first.")
    return lower, upper


def _contribution(
    table: pd.DataFrame, unit: str | None, max_rows: int, max_groups: int, *, grouped: bool
) -> Contribution:
    if not isinstance(table, pd.DataFrame):
        raise UsageError(f"expected a pandas DataFrame, not {type(table).__name__}", "Load it with load_table.")
    for name, value in (("max_rows_per_unit", max_rows), ("max_groups_per_unit", max_groups)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UsageError(f"{name} must be a positive integer", f"Pass e.g. {name}=1.")
    if unit is None:
        if max_rows != 1 or max_groups != 1:
            raise UsageError(
                "max_rows_per_unit and max_groups_per_unit need a privacy unit",
                "Pass unit='<column identifying a person>'; without it each row is its own unit.",
            )
    else:
        _check_column(table, unit, "privacy unit")
    return Contribution(unit, int(max_rows), int(max_groups) if grouped else 1)


def _check_aggregate(table: pd.DataFrame, name: str, agg: Aggregate) -> Aggregate:
    if not isinstance(agg, Aggregate) or agg.statistic not in STATISTICS:
        raise UsageError(f"aggregate {name!r} is not a known statistic", f"Use one of: {', '.join(STATISTICS)}.")
    if agg.statistic == "count":
        if agg.column is not None:
            _check_column(table, agg.column, "counted")
        return agg
    if agg.column is None:
        raise UsageError(f"aggregate {name!r} ({agg.statistic}) needs a column", "Pass Aggregate(..., column=...).")
    _check_column(table, agg.column, "measured")
    dtype = table[agg.column].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        raise UsageError(
            f"column {agg.column!r} is not numeric ({dtype})",
            f"A {agg.statistic} needs numbers; convert the column first, e.g. with pandas.to_numeric.",
        )
    bounds = _check_bounds(agg.bounds, agg.column)
    candidates = agg.candidates
    if agg.statistic == "quantile":
        if isinstance(agg.q, bool) or not isinstance(agg.q, int | float | np.number) or not 0 <= agg.q <= 1:
            raise UsageError(f"quantile level {agg.q} must be in [0, 1]", "Use e.g. q=0.5 for the median.")
        if candidates is None:
            candidates = tuple(float(c) for c in np.linspace(bounds[0], bounds[1], DEFAULT_QUANTILE_CANDIDATES))
        grid = np.unique(np.asarray(candidates, dtype=np.float64))
        if grid.size == 0 or not np.isfinite(grid).all() or grid[0] < bounds[0] or grid[-1] > bounds[1]:
            raise UsageError(
                f"quantile candidates for column {agg.column!r} must be finite values within the bounds",
                "Pass a non-empty, public list of candidates between lower and upper.",
            )
        candidates = tuple(float(c) for c in grid)
    return Aggregate(agg.statistic, agg.column, bounds, float(agg.q), candidates)


# -- planning: parts, scales and events, from parameters only ----------------------------------------------


def _grid(magnitude: float, bits: int) -> float:
    """A power of two about ``magnitude * 2**-bits``."""
    return math.ldexp(1.0, math.frexp(magnitude)[1] - bits)


def _plan(name: str, agg: Aggregate, epsilon: float, contribution: Contribution) -> list[Part]:
    k, m = contribution.max_rows_per_unit, contribution.max_groups_per_unit
    if agg.statistic == "count":
        return [_count_part(epsilon, k, m, name)]
    assert agg.bounds is not None
    lower, upper = agg.bounds
    half = (upper - lower) / 2
    if agg.statistic == "quantile":
        sensitivity = k * max(agg.q, 1 - agg.q)
        scale = 2 * sensitivity * m / epsilon  # of the exponential noise report-noisy-max adds, per group
        return [Part(f"quantile({agg.q:g})", "report_noisy_max", epsilon, 0.0, sensitivity, scale, name)]
    if agg.statistic == "sum":
        return [_sum_part("sum", epsilon, lower, upper, k, m, name)]
    if agg.statistic == "mean":
        share = epsilon / 2
        return [_sum_part("centered_sum", share, -half, half, k, m, name), _count_part(share, k, m, name)]
    share = epsilon / 3  # variance
    return [
        _count_part(share, k, m, name),
        _sum_part("centered_sum", share, -half, half, k, m, name),
        _sum_part("centered_sum_of_squares", share, 0.0, half * half, k, m, name),
    ]


def _count_part(epsilon: float, k: int, m: int, output: str) -> Part:
    # m groups per unit, each moved by at most k: L1 sensitivity m*k over the vector of group counts.
    return Part("count", "discrete_laplace", epsilon, 0.0, k, mechanisms.laplace_scale(epsilon, m * k), output)


def _sum_part(label: str, epsilon: float, lower: float, upper: float, k: int, m: int, output: str) -> Part:
    """A Laplace-noised exact sum of per-record values in [lower, upper] (see :func:`_noisy_sum`).

    Records are rounded to ``value_step`` ticks, so one record moves the sum by at most ``ticks * value_step``
    and a unit by ``k`` times that (the reported sensitivity). The float conversion of the exact sum adds less
    than half an output step per side and snapping to the output grid the rest of
    ``grid_sensitivity(sensitivity + granularity, granularity)``, which the noise is calibrated to.
    """
    step = _grid(max(abs(lower), abs(upper)), _VALUE_BITS)
    ticks = max(abs(math.floor(lower / step)), abs(math.ceil(upper / step)))
    sensitivity = k * ticks * step
    granularity = _grid(sensitivity, _NOISE_BITS)
    scale = mechanisms.laplace_scale(epsilon, m * _effective(sensitivity, granularity))
    return Part(label, "laplace", epsilon, 0.0, sensitivity, scale, output, None, granularity, step)


def _effective(sensitivity: float, granularity: float) -> float:
    return mechanisms.grid_sensitivity(sensitivity + granularity, granularity)


def _selection_part(epsilon: float, delta: float, m: int) -> Part:
    scale = mechanisms.laplace_scale(epsilon, m)
    p = math.exp(-1 / scale)
    # m * P(1 + Z >= tau) = m * p**(tau - 1) / (1 + p) <= delta; the 1e-9 keeps float rounding on the safe side.
    steps = max(1, math.ceil(scale * math.log(m / (delta * (1 + p))) * (1 + 1e-9)))
    return Part("partition_selection", "discrete_laplace_threshold", epsilon, delta, 1, scale, None, 1 + steps)


def _check_scales(parts: Sequence[Part]) -> None:
    """Refuse, before anything is charged, noise the samplers would refuse (an absurdly small or large epsilon)."""
    for part in parts:
        if part.mechanism == "report_noisy_max":
            continue
        steps = part.scale / part.granularity if part.granularity is not None else part.scale
        if not MIN_SCALE <= steps <= MAX_SCALE:
            raise UsageError(
                f"epsilon {part.epsilon:g} for the {part.name} is outside the range the noise samplers support",
                "Use an epsilon between about 1e-8 and 1e8.",
            )


def _events(part: Part, m: int) -> list[Event]:
    if part.mechanism == "discrete_laplace":
        return [DiscreteLaplaceEvent(part.scale, sensitivity=int(part.sensitivity), steps=m)]
    if part.mechanism == "laplace":
        assert part.granularity is not None
        return [LaplaceEvent(part.scale / _effective(part.sensitivity, part.granularity), steps=m)]
    if part.mechanism == "report_noisy_max":
        return [PureEvent(_per_group(part.epsilon, m), steps=m)]
    return [ApproxEvent(part.epsilon, part.delta)]  # a partition selection, possibly with its shared count


def _per_group(epsilon: float, m: int) -> float:
    """epsilon / m, rounded down so that m shares never add up to more than epsilon."""
    return epsilon if m == 1 else math.nextafter(epsilon / m, 0.0)


# -- execution ----------------------------------------------------------------------------------------------


def _scalar(
    table: pd.DataFrame,
    agg: Aggregate,
    epsilon: float,
    unit: str | None,
    max_rows: int,
    charge: Charge | None,
    rng: Randomness | None,
) -> Release:
    contribution = _contribution(table, unit, max_rows, 1, grouped=False)
    release = _release(
        table,
        [],
        {"value": agg},
        epsilon=epsilon,
        delta=0.0,
        keys=None,
        contribution=contribution,
        charge=charge,
        rng=rng,
    )
    value = release.value["value"].iloc[0]
    value = int(value) if agg.statistic == "count" else float(value)
    return replace(release, value=value)


def _release(
    table: pd.DataFrame,
    by: list[str],
    aggregates: dict[str, Aggregate],
    *,
    epsilon: float,
    delta: float,
    keys: Mapping[str, Sequence[Any]] | None,
    contribution: Contribution,
    charge: Charge | None,
    rng: Randomness | None,
    mask: np.ndarray | None = None,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Release:
    """The engine behind every public function (and the SQL front end): check, plan, charge, compute, noise.

    ``mask`` (rows to keep, e.g. a WHERE clause) is applied before contributions are bounded; ``labels`` are
    the aggregates' names in the notes (the SQL front end's output columns).
    """
    epsilon = _check_epsilon(epsilon)
    delta = _check_delta(delta)
    if not aggregates:
        raise UsageError("nothing to release: no aggregates were requested", "Ask for at least one statistic.")
    for column in by:
        _check_column(table, column, "group-by")
    checked = {name: _check_aggregate(table, name, agg) for name, agg in aggregates.items()}
    key_frame = _declared_keys(by, keys) if by else None
    if by and keys is not None and key_frame is None:
        raise UsageError("keys must declare values for every group-by column", f"Pass keys for: {', '.join(by)}.")
    selecting = bool(by) and key_frame is None
    k, m = contribution.max_rows_per_unit, contribution.max_groups_per_unit
    shared = next(
        (n for n, a in checked.items() if selecting and k == 1 and a.statistic == "count" and a.column is None), None
    )
    if selecting and delta == 0:
        raise UsageError(
            "releasing groups whose keys are not declared needs delta > 0 (partition selection)",
            "Pass delta (e.g. 1e-6, well below 1/rows) or declare the public keys with keys={column: [values]}.",
        )
    shares = len(checked) + (1 if selecting and shared is None else 0)
    share = epsilon / shares

    parts: list[Part] = []
    for name, agg in checked.items():
        planned = _plan(name, agg, share, contribution)
        if name == shared:
            selection = _selection_part(share, delta, m)
            planned = [
                Part(
                    "count+partition_selection",
                    "discrete_laplace_threshold",
                    share,
                    delta,
                    1,
                    selection.scale,
                    name,
                    selection.threshold,
                )
            ]
        parts.extend(planned)
    if selecting and shared is None:
        parts.append(_selection_part(share, delta, m))
    _check_scales(parts)
    events = tuple(event for part in parts for event in _events(part, m))
    spent_delta = delta if selecting else 0.0

    notes = [_split_note(epsilon, shares, checked, selecting, shared, labels or {})]
    if contribution.unit is not None:
        notes.append(
            f"each unit of {contribution.unit!r} kept at most {k} row(s)"
            + (f" per group in at most {m} group(s)" if by else "")
            + ", sampled at random with the CSPRNG"
        )
    if any(a.statistic in ("mean", "variance") for a in checked.values()):
        notes.append("mean/variance: noisy sums centred on the bounds' midpoint, divided by a noisy count")

    if charge is not None:
        what = description or f"privet.dp.stats {'/'.join(a.statistic for a in checked.values())}"
        charge(list(events), what)

    generator = rng if rng is not None else default_randomness()
    # Only the columns this release reads travel through filtering and bounding (copies stay small).
    used = [*by, *([contribution.unit] if contribution.unit else []), *(a.column for a in checked.values() if a.column)]
    frame = table[list(dict.fromkeys(used))]
    if mask is not None:
        frame = frame.loc[mask]
    codes, groups = _group_codes(frame, by, key_frame)
    kept_rows, unit_codes = _bound(frame, codes, len(groups), contribution, generator)
    rows = frame.iloc[kept_rows]
    codes = codes[kept_rows]
    unit_codes = unit_codes[kept_rows]
    if selecting:
        # Candidate groups are those with rows left after bounding: a group that only a dropped row of some
        # unit had must not be a candidate, or that unit could reveal more than m groups.
        present, codes = np.unique(codes, return_inverse=True)
        codes = codes.astype(np.int64).ravel()
        groups = groups.iloc[present].reset_index(drop=True)

    results: dict[str, np.ndarray] = {}
    for name, agg in checked.items():
        agg_parts = [p for p in parts if p.output == name]
        results[name] = _compute(agg, agg_parts, rows, codes, len(groups), m, generator)

    released = np.ones(len(groups), dtype=bool)
    if selecting:
        selection = next(p for p in parts if p.threshold is not None)
        if shared is not None:
            noisy_units = results[shared]
        else:
            units = _distinct_units(codes, unit_codes, len(groups))
            noisy_units = units + mechanisms.discrete_laplace(selection.scale, len(groups), rng=generator)
        released = noisy_units >= selection.threshold
    for name, agg in checked.items():
        if agg.statistic == "count":
            results[name] = np.maximum(results[name], 0)

    out = groups.loc[released].reset_index(drop=True) if by else pd.DataFrame(index=range(1))
    for name, values in results.items():
        out[name] = values[released]
    only = next(iter(checked.values()))
    return Release(
        statistic="group_by" if by else only.statistic,
        value=out,
        epsilon=epsilon,
        delta=spent_delta,
        mechanism="+".join(dict.fromkeys(p.mechanism for p in parts)),
        events=events,
        bounds=only.bounds if len(checked) == 1 else None,
        column=only.column if len(checked) == 1 else None,
        contribution=contribution,
        parts=tuple(parts),
        notes=tuple(notes),
    )


def _split_note(
    epsilon: float,
    shares: int,
    aggs: Mapping[str, Aggregate],
    selecting: bool,
    shared: str | None,
    labels: Mapping[str, str],
) -> str:
    names = [f"{labels.get(name, name)} ({agg.statistic})" for name, agg in aggs.items()]
    if selecting and shared is None:
        names.append("partition selection")
    text = f"epsilon {epsilon:g} split evenly over {shares} part(s), {epsilon / shares:g} each: {', '.join(names)}"
    if shared is not None:
        text += f"; the noisy counts of {labels.get(shared, shared)!r} also select the groups"
    return text


def _declared_keys(by: list[str], keys: Mapping[str, Sequence[Any]] | None) -> pd.DataFrame | None:
    if keys is None:
        return None
    unknown = [name for name in keys if name not in by]
    if unknown:
        raise UsageError(
            f"keys given for column(s) not grouped by: {', '.join(map(repr, unknown))}", "Declare keys only for by=."
        )
    if any(name not in keys for name in by):
        return None
    values = []
    for name in by:
        declared = list(keys[name])
        if not declared or len(pd.unique(pd.Series(declared, dtype=object))) != len(declared):
            raise UsageError(f"declared keys for {name!r} must be non-empty and distinct", "Pass each value once.")
        values.append(declared)
    return pd.DataFrame(list(product(*values)), columns=by)


def _group_codes(frame: pd.DataFrame, by: list[str], key_frame: pd.DataFrame | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's group index (-1: dropped) and the groups' keys, one row per group in index order."""
    if not by:
        return np.zeros(len(frame), dtype=np.int64), pd.DataFrame(index=range(1))
    if key_frame is not None:
        if len(by) == 1:
            declared = pd.Index(key_frame[by[0]])
            codes = declared.get_indexer(frame[by[0]])
        else:
            declared_multi = pd.MultiIndex.from_frame(key_frame)
            codes = declared_multi.get_indexer(pd.MultiIndex.from_frame(frame[by]))
        return np.asarray(codes, dtype=np.int64), key_frame
    grouped = frame.groupby(by, dropna=True, sort=True)
    codes = grouped.ngroup().fillna(-1).to_numpy(dtype=np.int64)
    groups = grouped.size().index.to_frame(index=False)
    return codes, groups


def _bound(
    frame: pd.DataFrame, codes: np.ndarray, n_groups: int, contribution: Contribution, rng: Randomness
) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept after contribution bounding, and every row's unit code (rows are their own unit if none).

    Each unit keeps at most m of the groups it touches and k of its rows in each, both chosen uniformly at
    random by sorting on CSPRNG keys.
    """
    if len(frame) > _MAX_ROWS:
        raise UsageError(f"tables over {_MAX_ROWS} rows are not supported", "Split the table or sample it first.")
    in_group = codes >= 0
    if contribution.unit is None:
        units = np.arange(len(frame), dtype=np.int64)
        return np.flatnonzero(in_group), units
    units = np.asarray(pd.factorize(frame[contribution.unit])[0], dtype=np.int64)
    candidate = np.flatnonzero(in_group & (units >= 0))
    k, m = contribution.max_rows_per_unit, contribution.max_groups_per_unit
    unit_of, group_of = units[candidate], codes[candidate]
    if m < n_groups:
        pairs, pair_of_row = np.unique(np.stack([unit_of, group_of]), axis=1, return_inverse=True)
        pair_rank = _rank_within(pairs[0], rng.uint64(pairs.shape[1]))
        keep = pair_rank[pair_of_row.ravel()] < m
        candidate, unit_of, group_of = candidate[keep], unit_of[keep], group_of[keep]
    cell = unit_of * max(n_groups, 1) + group_of  # one id per (unit, group); < 2**32 * 2**32 fits int64
    row_rank = _rank_within(cell, rng.uint64(candidate.size))
    return candidate[row_rank < k], units


def _rank_within(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each element's rank among the elements with the same id, ordered by ``keys`` (random: a random rank)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((keys, ids))
    sorted_ids = ids[order]
    positions = np.arange(ids.size)
    starts = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]
    first = np.maximum.accumulate(np.where(starts, positions, 0))
    ranks = np.empty(ids.size, dtype=np.int64)
    ranks[order] = positions - first
    return ranks


def _distinct_units(codes: np.ndarray, units: np.ndarray, n_groups: int) -> np.ndarray:
    if codes.size == 0:
        return np.zeros(n_groups, dtype=np.int64)
    pairs = np.unique(np.stack([units, codes]), axis=1)
    return np.bincount(pairs[1], minlength=n_groups).astype(np.int64)


def _compute(
    agg: Aggregate, parts: list[Part], rows: pd.DataFrame, codes: np.ndarray, n_groups: int, m: int, rng: Randomness
) -> np.ndarray:
    """The noisy per-group values of one aggregate (its parts' noise drawn here, after the charge)."""
    by_name = {p.name: p for p in parts}
    if agg.statistic == "count":
        counted = codes if agg.column is None else codes[rows[agg.column].notna().to_numpy()]
        part = by_name.get("count") or by_name["count+partition_selection"]
        return np.bincount(counted, minlength=n_groups) + mechanisms.discrete_laplace(part.scale, n_groups, rng=rng)
    assert agg.bounds is not None and agg.column is not None
    lower, upper = agg.bounds
    values = pd.to_numeric(rows[agg.column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(values)
    x, groups = np.clip(values[present], lower, upper), codes[present]
    if agg.statistic == "quantile":
        return _quantile_per_group(x, groups, n_groups, agg, by_name[f"quantile({agg.q:g})"], m, rng)
    if agg.statistic == "sum":
        return _noisy_sum(x, groups, n_groups, lower, upper, by_name["sum"], rng)
    middle, half = (lower + upper) / 2, (upper - lower) / 2
    centered = np.clip(x - middle, -half, half)
    noisy_count = np.bincount(groups, minlength=n_groups) + mechanisms.discrete_laplace(
        by_name["count"].scale, n_groups, rng=rng
    )
    denominator = np.maximum(noisy_count, 1).astype(np.float64)
    first = _noisy_sum(centered, groups, n_groups, -half, half, by_name["centered_sum"], rng)
    if agg.statistic == "mean":
        return np.clip(middle + first / denominator, lower, upper)
    second = _noisy_sum(
        centered * centered, groups, n_groups, 0.0, half * half, by_name["centered_sum_of_squares"], rng
    )
    dof = np.maximum(denominator - 1, 1)
    estimate = (second - first * first / denominator) / dof
    return np.clip(estimate, 0.0, half * half * denominator / dof)


def _noisy_sum(
    x: np.ndarray, groups: np.ndarray, n_groups: int, lower: float, upper: float, part: Part, rng: Randomness
) -> np.ndarray:
    """Exact per-group sums of values in [lower, upper], plus Laplace noise on the part's output grid.

    Each value is rounded to the part's ``value_step`` (2**-30 of the bounds' magnitude) and summed as an int64,
    so the sum is exact and a unit moves it by at most its clamped contribution; a float sum could move it by
    more (Casacuberta et al. 2022).
    """
    assert part.granularity is not None and part.value_step is not None
    step = part.value_step
    ticks = np.clip(np.rint(x / step), math.floor(lower / step), math.ceil(upper / step)).astype(np.int64)
    exact = np.zeros(n_groups, dtype=np.int64)
    np.add.at(exact, groups, ticks)
    total = exact.astype(np.float64) * step
    snapped = mechanisms.snap(total, part.granularity)
    return snapped + mechanisms.laplace(part.scale, n_groups, granularity=part.granularity, rng=rng)


def _quantile_per_group(
    x: np.ndarray, groups: np.ndarray, n_groups: int, agg: Aggregate, part: Part, m: int, rng: Randomness
) -> np.ndarray:
    """Per group, the candidate report-noisy-max (permute-and-flip) selects, at epsilon / m per group."""
    assert agg.candidates is not None
    grid = np.asarray(agg.candidates, dtype=np.float64)
    q = agg.q
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    bounds = np.searchsorted(sorted_groups, np.arange(n_groups + 1))
    per_group_epsilon = _per_group(part.epsilon, m)
    out = np.empty(n_groups, dtype=np.float64)
    for j in range(n_groups):
        values = np.sort(x[order[bounds[j] : bounds[j + 1]]])
        below = np.searchsorted(values, grid, side="left")
        above = values.size - np.searchsorted(values, grid, side="right")
        scores = -np.abs((1 - q) * below - q * above)
        index = mechanisms.report_noisy_max(scores, per_group_epsilon, part.sensitivity, rng=rng)
        out[j] = grid[int(index)]
    return out
