"""``privet demo``: the end-to-end job on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from privet.cli.common import OPTIONS, JsonOption, emit, stderr, stdout

if TYPE_CHECKING:
    from privet.demo import DemoResult


def _result(result: DemoResult, seconds: float) -> dict[str, object]:
    return {
        "ok": result.ok,
        "seconds": round(seconds, 2),
        "workspace": None if result.workspace is None else str(result.workspace),
        "stages": [
            {
                "name": o.stage.name,
                "ok": o.ok,
                "seconds": round(o.seconds, 2),
                "error": o.error,
                "figures": o.report.figures,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in o.report.checks],
            }
            for o in result.outcomes
        ],
    }


def _render(result: DemoResult, seconds: float) -> None:
    table = Table(title="privet demo", show_lines=False)
    for column in ("stage", "check", "result", "detail"):
        table.add_column(column)
    for outcome in result.outcomes:
        for check in outcome.report.checks:
            mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
            table.add_row(outcome.stage.name, check.name, mark, check.detail)
        if outcome.error:
            table.add_row(outcome.stage.name, "stage", "[red]ERROR[/red]", outcome.error)
        figures = ", ".join(f"{k}={v}" for k, v in outcome.report.figures.items())
        if figures:
            table.add_row(outcome.stage.name, "figures", "", figures)
    stdout.print(table)
    verdict = "[green]all checks passed[/green]" if result.ok else "[red]some checks failed[/red]"
    stdout.print(f"{verdict} in {seconds:.1f} s")
    if result.workspace is not None:
        stdout.print(f"workspace kept at {result.workspace}")


def demo(
    workspace: Annotated[
        Path | None, typer.Option(help="Run in this new (or empty) directory instead of a temporary one.")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the workspace afterwards for inspection.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for data splits and training.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Run the end-to-end job: every stage in a fresh workspace, then a summary."""
    import time

    from privet.demo import STAGES, run_demo  # imports torch: only when the demo runs

    started = time.perf_counter()
    console = None if OPTIONS.quiet else stderr
    result = run_demo(STAGES, directory=workspace, keep=keep, console=console, seed=seed)
    seconds = time.perf_counter() - started
    emit(_result(result, seconds), as_json, lambda: _render(result, seconds))
    if not result.ok:
        raise typer.Exit(1)
