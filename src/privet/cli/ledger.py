"""``privet ledger``: privacy budgets per tenant and data set, and what has been charged to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from privet.cli.common import JsonOption, emit, stdout, workspace
from privet.store import Store

if TYPE_CHECKING:
    from privet.dp.ledger import Ledger, Status

# privet.dp (and dp-accounting, scipy) load only when a ledger command runs: 'privet --help' stays fast.


def _ledger(store: Store) -> Ledger:
    from privet.dp.ledger import Ledger

    return Ledger(store)


app = typer.Typer(help="Privacy budgets: one ledger every release is charged to.", no_args_is_help=True)

Tenant = Annotated[str, typer.Option(help="Tenant (organisation, team) the budget belongs to.", show_default=False)]
Dataset = Annotated[str, typer.Option(help="Data set the budget protects.", show_default=False)]


def _status(status: Status) -> dict[str, object]:
    budget = status.budget
    return {
        "tenant": budget.tenant,
        "dataset": budget.dataset,
        "budget": {"epsilon": budget.epsilon, "delta": budget.delta, "accountant": budget.accountant},
        "spent": None
        if status.spent is None
        else {"epsilon": status.spent.epsilon, "delta": status.spent.delta, "accountant": status.spent.accountant},
        "remaining_epsilon": status.remaining_epsilon,
        "charges": status.charges,
    }


@app.command()
def create(
    tenant: Tenant,
    dataset: Dataset,
    epsilon: Annotated[float, typer.Option(help="Total epsilon this data set may ever spend.", show_default=False)],
    delta: Annotated[float, typer.Option(help="Delta at which epsilon is measured (below 1/rows).")] = 1e-6,
    accountant: Annotated[str, typer.Option(help="pld (default, tight) or rdp.")] = "pld",
    as_json: JsonOption = False,
) -> None:
    """Open a privacy budget for a tenant's data set."""
    with workspace() as ws:
        budget = _ledger(ws.store).create(tenant, dataset, epsilon, delta, accountant)
    result = {
        "tenant": tenant,
        "dataset": dataset,
        "epsilon": budget.epsilon,
        "delta": budget.delta,
        "accountant": budget.accountant,
    }
    emit(result, as_json, lambda: stdout.print(f"budget for {tenant}/{dataset}: epsilon {epsilon} at delta {delta}"))


@app.command()
def show(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this data set.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Budgets, what their charges compose to under their accountant, and what remains."""
    with workspace() as ws:
        ledger = _ledger(ws.store)
        rows = [
            _status(ledger.status(b.tenant, b.dataset))
            for b in ledger.budgets()
            if tenant in (None, b.tenant) and dataset in (None, b.dataset)
        ]

    def render() -> None:
        table = Table(
            "tenant",
            "dataset",
            "budget ε",
            "δ",
            "spent ε",
            "remaining ε",
            "charges",
            "accountant",
            title="privacy ledger",
        )
        for row in rows:
            budget, spent = row["budget"], row["spent"]
            table.add_row(
                str(row["tenant"]),
                str(row["dataset"]),
                f"{budget['epsilon']:.4g}",
                f"{budget['delta']:.3g}",
                "-" if spent is None else f"{spent['epsilon']:.4g}",
                f"{row['remaining_epsilon']:.4g}",
                str(row["charges"]),
                budget["accountant"] if spent is None else spent["accountant"],
            )
        stdout.print(table)

    emit({"budgets": rows}, as_json, render)


@app.command()
def history(tenant: Tenant, dataset: Dataset, as_json: JsonOption = False) -> None:
    """Every charge made to one budget, oldest first."""
    from privet.dp.accounting import event_to_json

    with workspace() as ws:
        charges = _ledger(ws.store).history(tenant, dataset)
    rows = [
        {
            "id": c.id,
            "at": c.created_at.isoformat(timespec="seconds"),
            "description": c.description,
            "events": [event_to_json(e) for e in c.events],
            "epsilon_after": c.epsilon_after,
            "accountant": c.accountant,
        }
        for c in charges
    ]

    def render() -> None:
        table = Table("#", "at", "release", "events", "ε after", title=f"charges to {tenant}/{dataset}")
        for row in rows:
            table.add_row(
                str(row["id"]),
                str(row["at"]),
                str(row["description"]),
                str(len(row["events"])),
                f"{row['epsilon_after']:.4g} ({row['accountant']})",
            )
        stdout.print(table)

    emit({"tenant": tenant, "dataset": dataset, "charges": rows}, as_json, render)
