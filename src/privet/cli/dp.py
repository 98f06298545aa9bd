"""``privet dp``: privacy accounting and differentially private statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privet.cli.common import JsonOption, emit, stdout, workspace

app = typer.Typer(help="Differential privacy: accounting and DP statistics.", no_args_is_help=True)


@app.command()
def epsilon(
    noise: Annotated[float, typer.Option(help="Noise multiplier (sigma / clipping norm).", show_default=False)],
    sample_rate: Annotated[float, typer.Option(help="Poisson sampling rate per step.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Number of steps composed.")] = 1,
    delta: Annotated[float, typer.Option(help="Target delta.")] = 1e-5,
    accountant: Annotated[str, typer.Option(help="pld (default) or rdp.")] = "pld",
    as_json: JsonOption = False,
) -> None:
    """Epsilon of the (subsampled) Gaussian mechanism composed over steps, as in DP-SGD."""
    from privet.dp.accounting import GaussianEvent, compose_epsilon

    if accountant not in ("pld", "rdp"):
        raise typer.BadParameter(f"{accountant!r} is not one of pld, rdp", param_hint="--accountant")
    event = GaussianEvent(noise_multiplier=noise, sample_rate=sample_rate, steps=steps)
    guarantee = compose_epsilon([event], delta, accountant)  # type: ignore[arg-type]
    result = {
        "epsilon": guarantee.epsilon,
        "delta": guarantee.delta,
        "accountant": guarantee.accountant,
        "fallback_reason": guarantee.fallback_reason,
        "noise_multiplier": noise,
        "sample_rate": sample_rate,
        "steps": steps,
    }
    emit(
        result,
        as_json,
        lambda: stdout.print(f"epsilon = {guarantee.epsilon:.4f} at delta = {delta:g} ({guarantee.accountant})"),
    )


def _bounds(pairs: list[str]) -> dict[str, tuple[float, float]]:
    bounds: dict[str, tuple[float, float]] = {}
    for pair in pairs:
        column, sep, span = pair.partition("=")
        low, sep2, high = span.partition(":")
        try:
            if not (sep and sep2 and column):
                raise ValueError
            bounds[column] = (float(low), float(high))
        except ValueError:
            raise typer.BadParameter(f"{pair!r} is not COLUMN=LOW:HIGH", param_hint="--bounds") from None
    return bounds


@app.command()
def query(
    source: Annotated[Path, typer.Argument(help="CSV or Parquet table.", show_default=False)],
    sql: Annotated[str, typer.Option(help="SELECT ... FROM t [WHERE ...] [GROUP BY ...].", show_default=False)],
    epsilon: Annotated[float, typer.Option(help="Epsilon this query spends.", show_default=False)],
    tenant: Annotated[str, typer.Option(help="Tenant whose budget is charged.", show_default=False)],
    dataset: Annotated[str | None, typer.Option(help="Budget's data set (default: the file's stem).")] = None,
    unit: Annotated[str | None, typer.Option(help="Privacy unit column (one person).")] = None,
    bounds: Annotated[list[str] | None, typer.Option(help="COLUMN=LOW:HIGH clamp bounds (repeatable).")] = None,
    max_rows_per_unit: Annotated[int, typer.Option(help="Rows kept per person.")] = 1,
    delta: Annotated[float | None, typer.Option(help="Delta (default: 0, or a small value for GROUP BY).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a SQL aggregate query with differential privacy, charged to the ledger first."""
    from privet.data.tables import load_table
    from privet.dp.ledger import Ledger
    from privet.dp.query import run_query

    table = load_table(source)
    with workspace() as ws:
        ledger = Ledger(ws.store)
        result = run_query(
            table,
            sql,
            epsilon=epsilon,
            delta=delta,
            unit=unit,
            bounds=_bounds(bounds or []),
            max_rows_per_unit=max_rows_per_unit,
            charge=ledger.charger(tenant, dataset or source.stem),
        )
    payload = {
        "rows": json.loads(result.table.to_json(orient="records")),
        "epsilon": result.epsilon,
        "delta": result.delta,
        "columns": [
            {"name": c.name, "kind": c.kind, "epsilon": c.epsilon, "delta": c.delta, "mechanism": c.mechanism}
            for c in result.columns
        ],
        "notes": list(result.notes),
    }

    def render() -> None:
        table_view = Table(*map(str, result.table.columns), title=f"DP release (epsilon {result.epsilon:g})")
        for row in result.table.itertuples(index=False):
            table_view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        stdout.print(table_view)

    emit(payload, as_json, render)
