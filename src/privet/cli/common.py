"""What every command shares: global options, the workspace, output in text or JSON, progress bars."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from privet.config import load_settings
from privet.workspace import Workspace

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
_PROGRESS_FLOOR = 8 << 20  # below this a bar only flickers


@dataclass
class Options:
    debug: bool = False
    quiet: bool = False


OPTIONS = Options()


def _prompt(new: bool) -> str:
    if not sys.stdin.isatty():
        return ""
    value = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=new, default="", show_default=False)
    return str(value)


def workspace() -> Workspace:
    """The privet home the settings point at; passphrases come from PRIVET_PASSPHRASE or a prompt."""
    return Workspace(load_settings(), prompt=_prompt)


def emit(result: dict[str, Any], as_json: bool, render: Callable[[], None]) -> None:
    """Print ``result`` as one JSON object, or call ``render`` for people."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str, sort_keys=True) + "\n")
    else:
        render()


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte-count progress bar on stderr (rate and ETA); silent with --quiet or for small totals."""
    if OPTIONS.quiet or total < _PROGRESS_FLOOR:
        yield lambda _count: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda count: bar.advance(task, count)
