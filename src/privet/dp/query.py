"""A small SQL front end for differentially private aggregates, on sqlglot.

Supported, and nothing else (anything outside it is refused with a :class:`~privet.errors.UsageError` that
names the construct and what to do)::

    SELECT [key, ...] aggregate [AS name], ...
    FROM <one table>
    [WHERE <predicates>]
    [GROUP BY key, ...]
    [ORDER BY key [ASC|DESC], ...]

- aggregates: ``COUNT(*)``, ``COUNT(col)`` (non-missing values), ``SUM(col)``, ``AVG(col)``,
  ``VARIANCE/VAR/VAR_SAMP(col)`` (sample variance), ``STDDEV/STDDEV_SAMP(col)`` (its square root),
  ``MEDIAN(col)``, ``QUANTILE(col, q)``/``APPROX_QUANTILE(col, q)``/``PERCENTILE_CONT(col, q)``, and
  ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)``; arguments are bare columns. Every aggregate except the
  counts needs ``bounds={col: (lower, upper)}``.
- predicates: ``col <op> literal`` (``= != <> < <= > >=``, either side), ``col [NOT] IN (literals)``,
  ``col [NOT] BETWEEN a AND b``, ``col IS [NOT] NULL``, combined with ``AND``/``OR``/``NOT`` and parentheses,
  with SQL's three-valued logic (a comparison with a missing value is not true).
- ``ORDER BY`` only on group keys (ordering released rows by key is post-processing).

The table name in ``FROM`` is only a label: the query runs on the DataFrame passed in. Epsilon is split
evenly over the aggregates, plus one share for partition selection when ``GROUP BY`` keys are not declared
(``keys=``); see :func:`privet.dp.stats.group_by` for the contribution bounds and the selection threshold.
The result carries each output column's guarantee and the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from privet.crypto.prg import Randomness
from privet.dp import stats
from privet.dp.accounting import Event
from privet.dp.stats import Aggregate, Charge, Part, Release
from privet.errors import UsageError

__all__ = [
    "DEFAULT_GROUP_DELTA",
    "ColumnGuarantee",
    "OutputColumn",
    "ParsedQuery",
    "QueryResult",
    "parse_query",
    "run_query",
]

DEFAULT_GROUP_DELTA = 1e-6  # used when GROUP BY keys are not declared and no delta is given
_ALLOWED_CLAUSES = {"expressions", "from_", "where", "group", "order", "kind", "hint"}
_CLAUSE_NAMES = {
    "with_": "WITH (common table expressions)",
    "distinct": "SELECT DISTINCT",
    "joins": "JOIN",
    "laterals": "LATERAL",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "sample": "TABLESAMPLE",
    "into": "SELECT INTO",
    "pivots": "PIVOT",
    "connect": "CONNECT BY",
}
_CLAUSE_HINTS = {
    "joins": "Join the tables in pandas first, then bound each person's rows with unit= and max_rows_per_unit=.",
    "having": "Filter the released table in pandas instead (post-processing), e.g. result.table.query(...).",
    "limit": "Take result.table.head(n) instead (post-processing).",
    "offset": "Slice result.table instead (post-processing).",
    "distinct": "Use GROUP BY on the columns instead (keys are released through partition selection).",
}
_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "==",
    exp.NEQ: "!=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
}
_FLIPPED = {"==": "==", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


@dataclass(frozen=True)
class ColumnGuarantee:
    """What one output column cost: its share of epsilon and delta, mechanism(s) and the bounds used.

    ``kind`` is ``key`` for a GROUP BY column (public when declared, else released by partition selection),
    or the aggregate: ``count``, ``sum``, ``mean``, ``variance``, ``stddev``, ``quantile``.
    """

    name: str
    kind: str
    source: str | None
    epsilon: float
    delta: float
    mechanism: str
    bounds: tuple[float, float] | None = None
    q: float | None = None


@dataclass(frozen=True)
class QueryResult:
    """The released table, per-column guarantees and the query's total (epsilon, delta)."""

    table: pd.DataFrame
    columns: tuple[ColumnGuarantee, ...]
    epsilon: float
    delta: float
    events: tuple[Event, ...]
    release: Release
    notes: tuple[str, ...]


@dataclass(frozen=True)
class OutputColumn:
    """One SELECT item: a group key (``kind="key"``) or an aggregate of ``source`` (``q`` for quantiles)."""

    name: str
    kind: str  # "key" or an aggregate kind
    source: str | None
    q: float | None = None


@dataclass(frozen=True)
class ParsedQuery:
    """A query reduced to what the engine runs: outputs in SELECT order, group keys, filter and order."""

    outputs: tuple[OutputColumn, ...]
    group_by: tuple[str, ...]
    where: exp.Expression | None
    order_by: tuple[tuple[str, bool], ...]  # (key column, descending)
    redacted_sql: str


def run_query(
    table: pd.DataFrame,
    sql: str,
    *,
    epsilon: float,
    delta: float | None = None,
    unit: str | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    max_rows_per_unit: int = 1,
    max_groups_per_unit: int = 1,
    keys: Mapping[str, Sequence[Any]] | None = None,
    candidates: Mapping[str, Sequence[float]] | None = None,
    charge: Charge | None = None,
    rng: Randomness | None = None,
) -> QueryResult:
    """Run one SQL aggregate query with differential privacy and return the released table.

    ``delta`` defaults to 0, or to ``DEFAULT_GROUP_DELTA`` when GROUP BY keys are not declared in ``keys``
    (partition selection needs delta > 0). ``candidates`` optionally gives the public candidate grid of a
    column's quantiles (default: see :func:`privet.dp.stats.quantile`). ``charge`` is called once with all the
    query's events before any noise is drawn; with ``charge=None`` the caller accounts ``result.events``.
    """
    parsed = parse_query(sql, table)
    bounds = dict(bounds or {})
    candidates = dict(candidates or {})
    aggregates: dict[str, Aggregate] = {}
    internal: dict[str, str] = {}  # output name -> engine column name
    for index, output in enumerate(parsed.outputs):
        if output.kind == "key":
            continue
        name = f"__agg{index}"
        internal[output.name] = name
        aggregates[name] = _aggregate(output, bounds, candidates)
    if not aggregates:
        raise UsageError(
            "the query selects no aggregate", "Select at least one of COUNT, SUM, AVG, VARIANCE, STDDEV, MEDIAN."
        )
    group_keys = list(parsed.group_by)
    if keys is not None and not group_keys:
        raise UsageError("keys= was given but the query has no GROUP BY", "Drop keys= or add GROUP BY.")
    declared = keys is not None and all(k in keys for k in group_keys)
    if delta is None:
        delta = DEFAULT_GROUP_DELTA if group_keys and not declared else 0.0
    mask = _where_mask(table, parsed.where) if parsed.where is not None else None
    contribution = stats._contribution(
        table, unit, max_rows_per_unit, max_groups_per_unit if group_keys else 1, grouped=bool(group_keys)
    )
    release = stats._release(
        table,
        group_keys,
        aggregates,
        epsilon=epsilon,
        delta=delta,
        keys=keys if group_keys else None,
        contribution=contribution,
        charge=charge,
        rng=rng,
        mask=mask,
        description=f"privet.dp.query: {parsed.redacted_sql}",
        labels={engine: output for output, engine in internal.items()},
    )

    frame: pd.DataFrame = release.value
    out = pd.DataFrame(index=frame.index)
    columns: list[ColumnGuarantee] = []
    selection = next((p for p in release.parts if p.threshold is not None), None)
    first_key = next((o for o in parsed.outputs if o.kind == "key"), None)
    for output in parsed.outputs:
        if output.kind == "key":
            assert output.source is not None
            out[output.name] = frame[output.source]
            columns.append(_key_guarantee(output, first_key, selection, internal))
            continue
        name = internal[output.name]
        values = frame[name]
        out[output.name] = np.sqrt(values) if output.kind == "stddev" else values
        parts = [p for p in release.parts if p.output == name]
        agg = aggregates[name]
        columns.append(
            ColumnGuarantee(
                output.name,
                output.kind,
                output.source,
                math.fsum(p.epsilon for p in parts),
                max((p.delta for p in parts), default=0.0),
                "+".join(dict.fromkeys(p.mechanism for p in parts)),
                None if agg.bounds is None else (float(agg.bounds[0]), float(agg.bounds[1])),
                agg.q if agg.statistic == "quantile" else None,
            )
        )
    if parsed.order_by:
        out = out.sort_values(
            [_key_output(parsed, key) for key, _ in parsed.order_by],
            ascending=[not descending for _, descending in parsed.order_by],
            kind="stable",
        ).reset_index(drop=True)
    return QueryResult(out, tuple(columns), release.epsilon, release.delta, release.events, release, release.notes)


def _key_guarantee(
    output: OutputColumn, first_key: OutputColumn | None, selection: Part | None, internal: Mapping[str, str]
) -> ColumnGuarantee:
    """A key column's cost. Selection is charged once, to the first key column, or to nothing when the noisy
    counts of a COUNT(*) column select the groups (that column carries the cost), so that the columns' epsilons
    add up to the query's total when every key is selected."""
    if selection is None:
        return ColumnGuarantee(output.name, "key", output.source, 0.0, 0.0, "declared keys (public)")
    if selection.output is not None:
        owner = next(name for name, engine in internal.items() if engine == selection.output)
        text = f"partition selection by the noisy counts of {owner!r} (cost carried by that column)"
        return ColumnGuarantee(output.name, "key", output.source, 0.0, 0.0, text)
    if output is not first_key:
        assert first_key is not None
        text = f"partition selection (cost carried by key column {first_key.name!r})"
        return ColumnGuarantee(output.name, "key", output.source, 0.0, 0.0, text)
    text = f"{selection.mechanism} (partition selection, threshold {selection.threshold:g})"
    return ColumnGuarantee(output.name, "key", output.source, selection.epsilon, selection.delta, text)


def _key_output(parsed: ParsedQuery, key: str) -> str:
    return next(o.name for o in parsed.outputs if o.kind == "key" and o.source == key)


def _aggregate(
    output: OutputColumn, bounds: Mapping[str, tuple[float, float]], candidates: Mapping[str, Sequence[float]]
) -> Aggregate:
    if output.kind == "count":
        return Aggregate("count", output.source)
    assert output.source is not None
    if output.source not in bounds:
        raise UsageError(
            f"{output.kind.upper()} of column {output.source!r} needs bounds",
            f"Pass bounds={{{output.source!r}: (lower, upper)}} from domain knowledge (never from the data).",
        )
    grid = candidates.get(output.source)
    if output.kind == "quantile":
        assert output.q is not None
        return Aggregate(
            "quantile", output.source, bounds[output.source], output.q, None if grid is None else tuple(grid)
        )
    statistic = "variance" if output.kind == "stddev" else output.kind
    return Aggregate(statistic, output.source, bounds[output.source])  # type: ignore[arg-type]


# -- parsing -------------------------------------------------------------------------------------------------


def parse_query(sql: str, table: pd.DataFrame) -> ParsedQuery:
    """Parse and check ``sql`` against the supported subset and ``table``'s columns (nothing is computed)."""
    if not isinstance(sql, str) or not sql.strip():
        raise UsageError("the SQL query is empty", "Pass e.g. 'SELECT COUNT(*) FROM t'.")
    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except ParseError as exc:
        where = ""
        if exc.errors:
            first = exc.errors[0]
            where = f" at line {first.get('line')}, column {first.get('col')}"
        raise UsageError(f"the SQL query does not parse{where}", "Check the syntax of the supported subset.") from None
    except TokenError:
        raise UsageError("the SQL query does not parse (bad token)", "Check quotes and characters.") from None
    if len(statements) != 1:
        raise UsageError(f"expected one SQL statement, got {len(statements)}", "Run one query at a time.")
    tree = statements[0]
    if isinstance(tree, exp.SetOperation):
        raise UsageError(
            f"{type(tree).__name__.upper()} is not supported", "Run each SELECT separately (each costs epsilon)."
        )
    if not isinstance(tree, exp.Select):
        raise UsageError(f"only SELECT queries are supported, not {tree.key.upper()}", "Write a SELECT ... FROM query.")
    for clause, value in tree.args.items():
        if value in (None, [], False) or clause in _ALLOWED_CLAUSES:
            continue
        construct = _CLAUSE_NAMES.get(clause, clause.rstrip("_").upper())
        raise UsageError(
            f"{construct} is not supported",
            _CLAUSE_HINTS.get(clause, "Use SELECT aggregates FROM one table [WHERE ...] [GROUP BY ...]."),
        )
    if next(tree.find_all(exp.Window), None) is not None:
        raise UsageError("window functions (OVER) are not supported", "Use GROUP BY to aggregate per group.")
    nested = [node for node in tree.find_all(exp.Select, exp.Subquery) if node is not tree]
    if nested:
        raise UsageError(
            "subqueries are not supported", "Compute the inner table in pandas first and query that DataFrame."
        )

    table_names = _from_names(tree)
    resolve = _Resolver(table, table_names)
    group_by = tuple(resolve.column(node, "GROUP BY") for node in _group_nodes(tree))
    if len(set(group_by)) != len(group_by):
        raise UsageError("a GROUP BY column is repeated", "Name each group column once.")
    outputs: list[OutputColumn] = []
    for item in tree.expressions:
        outputs.append(_select_item(item, resolve, group_by))
    names = [o.name for o in outputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"output column name(s) {', '.join(map(repr, duplicates))} appear more than once",
            "Give each selected expression its own alias with AS.",
        )
    where = tree.args.get("where")
    where_node = where.this if where is not None else None
    if where_node is not None:
        _check_predicate(where_node, resolve, table)
    order_by = _order_by(tree, resolve, outputs, group_by)
    redacted = tree.transform(lambda n: exp.Placeholder() if isinstance(n, exp.Literal) else n).sql()
    return ParsedQuery(tuple(outputs), group_by, where_node, order_by, " ".join(redacted.split())[:400])


def _from_names(tree: exp.Select) -> set[str]:
    source = tree.args.get("from_")
    if source is None:
        raise UsageError("the query has no FROM clause", "Write SELECT ... FROM <table>.")
    target = source.this
    if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
        raise UsageError("FROM must name one table", "Query the DataFrame directly: FROM t.")
    names = {target.name.lower()}
    if target.alias:
        names.add(target.alias.lower())
    return names


def _group_nodes(tree: exp.Select) -> list[exp.Expression]:
    group = tree.args.get("group")
    if group is None:
        return []
    extra = [k for k, v in group.args.items() if k != "expressions" and v not in (None, [], False)]
    if extra:
        raise UsageError(f"GROUP BY {extra[0].upper()} is not supported", "Group by plain columns.")
    return list(group.expressions)


class _Resolver:
    """Maps SQL column references to DataFrame columns: exact name first, else a unique case-insensitive match
    for unquoted identifiers (SQL folds their case)."""

    def __init__(self, table: pd.DataFrame, table_names: set[str] | None) -> None:
        self._columns = [str(c) for c in table.columns]
        self._tables = table_names  # None: qualifiers were already checked

    def column(self, node: exp.Expression, where: str) -> str:
        if isinstance(node, exp.Paren):
            return self.column(node.this, where)
        if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
            raise UsageError(
                f"{where} accepts plain column names here, not {_describe(node)}",
                "Compute derived columns in pandas first, then query them.",
            )
        if node.table and self._tables is not None and node.table.lower() not in self._tables:
            raise UsageError(
                f"unknown table qualifier in {where}", "Qualify columns with the FROM table or not at all."
            )
        name = node.this.name
        if name in self._columns:
            return name
        if not node.this.quoted:
            folded = [c for c in self._columns if c.lower() == name.lower()]
            if len(folded) == 1:
                return folded[0]
        raise UsageError(f"unknown column {name!r} in {where}", f"The table's columns are: {', '.join(self._columns)}.")


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Literal):
        return "a literal"
    if isinstance(node, exp.Star):
        return "*"
    if isinstance(node, exp.Func):
        return f"the function {node.sql_name()}"
    return f"an expression ({node.key})"


def _select_item(item: exp.Expression, resolve: _Resolver, group_by: tuple[str, ...]) -> OutputColumn:
    alias = item.alias if isinstance(item, exp.Alias) else None
    node = item.this if isinstance(item, exp.Alias) else item
    if isinstance(node, exp.Star):
        raise UsageError("SELECT * is not supported: it would release rows", "Select aggregates such as COUNT(*).")
    if isinstance(node, exp.Column):
        source = resolve.column(node, "SELECT")
        if source not in group_by:
            raise UsageError(
                f"column {source!r} is selected but not grouped by",
                "Add it to GROUP BY, or aggregate it (only aggregates of rows are released).",
            )
        return OutputColumn(alias or source, "key", source)
    kind, source, q = _aggregate_of(node, resolve)
    if alias:
        name = alias
    elif kind == "count":
        name = "count" if source is None else f"count_{source}"
    elif isinstance(node, exp.Median):
        name = f"median_{source}"
    elif kind == "quantile":
        name = f"quantile_{q:g}_{source}"
    else:
        name = f"{kind}_{source}"
    return OutputColumn(name, kind, source, q)


def _aggregate_of(node: exp.Expression, resolve: _Resolver) -> tuple[str, str | None, float | None]:
    """(kind, source column, quantile level) of one supported aggregate call, or a UsageError."""
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Distinct):
            raise UsageError(
                "COUNT(DISTINCT ...) is not supported",
                "Count rows with COUNT(*), or GROUP BY the column to release its values.",
            )
        if isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string):
            return "count", None, None
        return "count", resolve.column(arg, "COUNT"), None
    simple: dict[type[exp.Expression], str] = {
        exp.Sum: "sum",
        exp.Avg: "mean",
        exp.Variance: "variance",
        exp.Stddev: "stddev",
        exp.StddevSamp: "stddev",
    }
    for cls, kind in simple.items():
        if type(node) is cls:
            return kind, resolve.column(node.this, kind.upper()), None
    if isinstance(node, exp.Anonymous) and node.name.upper() == "VAR" and len(node.expressions) == 1:
        return "variance", resolve.column(node.expressions[0], "VAR"), None
    if isinstance(node, exp.Median):
        return "quantile", resolve.column(node.this, "MEDIAN"), 0.5
    if isinstance(node, exp.Quantile | exp.ApproxQuantile):
        return "quantile", resolve.column(node.this, "QUANTILE"), _level(node.args.get("quantile"))
    if isinstance(node, exp.PercentileCont | exp.PercentileDisc) and node.args.get("expression") is not None:
        return "quantile", resolve.column(node.this, "PERCENTILE"), _level(node.args.get("expression"))
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont | exp.PercentileDisc):
        order = node.expression
        ordered = order.expressions if isinstance(order, exp.Order) else []
        if len(ordered) != 1 or not isinstance(ordered[0], exp.Ordered) or ordered[0].args.get("desc"):
            raise UsageError("PERCENTILE ... WITHIN GROUP needs ORDER BY one column, ascending", "Write ORDER BY col.")
        return "quantile", resolve.column(ordered[0].this, "PERCENTILE"), _level(node.this.this)
    if isinstance(node, exp.VariancePop | exp.StddevPop):
        raise UsageError(
            f"{node.sql_name()} is not supported", "Use VARIANCE or STDDEV (sample); for large n they agree."
        )
    if isinstance(node, exp.Min | exp.Max):
        raise UsageError(
            f"{node.sql_name()} is not supported: one row decides it",
            "Use a quantile near the end instead, e.g. QUANTILE(col, 0.99) or PERCENTILE_CONT(col, 0.01).",
        )
    if isinstance(node, exp.AggFunc | exp.Anonymous):
        raise UsageError(
            f"aggregate {node.sql_name()} is not supported",
            "Use COUNT, SUM, AVG, VARIANCE, STDDEV, MEDIAN, QUANTILE or PERCENTILE_CONT.",
        )
    raise UsageError(
        f"SELECT accepts group columns and aggregates of bare columns, not {_describe(node)}",
        "Compute expressions in pandas first (or on the released table, which is post-processing).",
    )


def _level(node: exp.Expression | None) -> float:
    if not isinstance(node, exp.Literal) or node.is_string:
        raise UsageError("a quantile level must be a number literal", "Write e.g. QUANTILE(col, 0.9).")
    level = float(node.this)
    if not 0 <= level <= 1:
        raise UsageError("a quantile level must be in [0, 1]", "Write e.g. QUANTILE(col, 0.9).")
    return level


def _order_by(
    tree: exp.Select, resolve: _Resolver, outputs: list[OutputColumn], group_by: tuple[str, ...]
) -> tuple[tuple[str, bool], ...]:
    order = tree.args.get("order")
    if order is None:
        return ()
    result: list[tuple[str, bool]] = []
    aliases = {o.name: o for o in outputs}
    for ordered in order.expressions:
        node = ordered.this
        if isinstance(node, exp.Column) and not node.table and node.name in aliases:
            target = aliases[node.name]
            key = target.source if target.kind == "key" else None
        elif isinstance(node, exp.Column):
            source = resolve.column(node, "ORDER BY")
            key = source if source in group_by else None
        else:
            key = None
        if key is None or not any(o.kind == "key" and o.source == key for o in outputs):
            raise UsageError(
                "ORDER BY is supported only on selected GROUP BY columns, not on noisy values",
                "Sort result.table in pandas instead (post-processing), e.g. result.table.sort_values(...).",
            )
        result.append((key, bool(ordered.args.get("desc"))))
    return tuple(result)


# -- WHERE ---------------------------------------------------------------------------------------------------


def _check_predicate(node: exp.Expression, resolve: _Resolver, table: pd.DataFrame) -> None:
    """Refuse anything but simple predicates on columns; resolve columns and check literal types (by dtype)."""
    _Predicate(resolve, table).check(node)


def _where_mask(table: pd.DataFrame, node: exp.Expression) -> np.ndarray:
    truth, _known = _Predicate(_Resolver(table, None), table).evaluate(node)
    return truth


class _Predicate:
    """SQL three-valued logic over a DataFrame: each predicate evaluates to (true, known) boolean arrays."""

    def __init__(self, resolve: _Resolver, table: pd.DataFrame | None) -> None:
        self._resolve = resolve
        self._table = table

    def check(self, node: exp.Expression) -> None:
        self._walk(node, evaluate=False)  # types are checked from dtypes; no value is read

    def evaluate(self, node: exp.Expression) -> tuple[np.ndarray, np.ndarray]:
        result = self._walk(node, evaluate=True)
        assert result is not None
        return result

    def _column(self, node: exp.Expression) -> str:
        return self._resolve.column(node, "WHERE")

    def _walk(self, node: exp.Expression, *, evaluate: bool) -> tuple[np.ndarray, np.ndarray] | None:
        if isinstance(node, exp.Paren):
            return self._walk(node.this, evaluate=evaluate)
        if isinstance(node, exp.And | exp.Or):
            left = self._walk(node.this, evaluate=evaluate)
            right = self._walk(node.expression, evaluate=evaluate)
            if left is None or right is None:
                return None
            (lt, lk), (rt, rk) = left, right
            if isinstance(node, exp.And):
                return lt & rt, (lk & rk) | (lk & ~lt) | (rk & ~rt)
            return lt | rt, (lk & rk) | lt | rt
        if isinstance(node, exp.Not):
            inner = self._walk(node.this, evaluate=evaluate)
            if inner is None:
                return None
            truth, known = inner
            return known & ~truth, known
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise UsageError("IS supports only IS [NOT] NULL", "Compare with = instead.")
            column = self._column(node.this)
            if not evaluate:
                return None
            missing = self._series(column).isna().to_numpy()
            return missing, np.ones_like(missing)
        if type(node) in _COMPARISONS:
            op = _COMPARISONS[type(node)]
            left, right = node.this, node.expression
            if _is_literal(left) and not _is_literal(right):
                left, right, op = right, left, _FLIPPED[op]
            column = self._column(left)
            value = _literal(right)
            self._check_types(column, [value])
            if not evaluate:
                return None
            return self._compare(column, op, value)
        if isinstance(node, exp.In):
            if node.args.get("query") is not None:
                raise UsageError("subqueries are not supported", "Use IN with a list of literals.")
            column = self._column(node.this)
            values = [_literal(v) for v in node.expressions]
            self._check_types(column, values)
            if not evaluate:
                return None
            series = self._series(column)
            known = series.notna().to_numpy()
            return series.isin(values).to_numpy() & known, known
        if isinstance(node, exp.Between):
            column = self._column(node.this)
            low, high = _literal(node.args["low"]), _literal(node.args["high"])
            self._check_types(column, [low, high])
            if not evaluate:
                return None
            lower_truth, known = self._compare(column, ">=", low)
            upper_truth, _ = self._compare(column, "<=", high)
            return lower_truth & upper_truth, known
        if isinstance(node, exp.Like | exp.ILike):
            raise UsageError("LIKE is not supported", "Filter with =, IN, comparisons, or prepare a column in pandas.")
        raise UsageError(
            f"WHERE supports comparisons of a column with literals, not {_describe(node)}",
            "Use col <op> literal, IN, BETWEEN, IS NULL with AND/OR/NOT; derive other columns in pandas first.",
        )

    def _series(self, column: str) -> pd.Series:
        assert self._table is not None
        return self._table[column]

    def _check_types(self, column: str, values: list[object]) -> None:
        if self._table is None:
            return
        dtype = self._table[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype)
        for value in values:
            if value is None:
                raise UsageError("comparing with NULL is never true", "Use IS NULL or IS NOT NULL.")
            if numeric and isinstance(value, str):
                raise UsageError(
                    f"column {column!r} is numeric but is compared with a string", "Compare with a number."
                )
            textual = pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
            if textual and isinstance(value, int | float) and not isinstance(value, bool):
                raise UsageError(
                    f"column {column!r} holds text but is compared with a number", "Quote the value: 'text'."
                )

    def _compare(self, column: str, op: str, value: object) -> tuple[np.ndarray, np.ndarray]:
        series = self._series(column)
        known = series.notna().to_numpy()
        try:
            result = {
                "==": series.__eq__,
                "!=": series.__ne__,
                ">": series.__gt__,
                ">=": series.__ge__,
                "<": series.__lt__,
                "<=": series.__le__,
            }[op](value)
        except TypeError:
            raise UsageError(
                f"column {column!r} cannot be compared with {op} to a value of this type", "Compare like with like."
            ) from None
        truth = np.asarray(result.fillna(False).to_numpy(dtype=bool)) & known
        return truth, known


def _is_literal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal | exp.Boolean | exp.Null) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
    )


def _literal(node: exp.Expression) -> object:
    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _literal(node.this)
        assert isinstance(value, int | float)
        return -value
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            return int(text)
        except ValueError:
            return float(text)
    raise UsageError(
        f"WHERE compares a column with literals only, not with {_describe(node)}",
        "Compare a column with a number, a 'string', TRUE/FALSE, or use IS NULL.",
    )
