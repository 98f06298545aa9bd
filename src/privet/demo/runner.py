"""Runs the demo stages in a fresh workspace, with a progress display, and collects their reports."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from privet.config import Settings
from privet.crypto.master import new_env_value
from privet.demo.stage import DemoContext, Stage, StageReport
from privet.errors import PrivetError, UsageError
from privet.workspace import Workspace


@dataclass(frozen=True)
class StageOutcome:
    stage: Stage
    report: StageReport
    seconds: float
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.report.ok


@dataclass(frozen=True)
class DemoResult:
    outcomes: list[StageOutcome]
    workspace: Path | None  # kept for inspection, or None when removed

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


@contextlib.contextmanager
def _directory(path: Path | None, keep: bool) -> Iterator[Path]:
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="privet-demo-"))
    elif path.exists() and any(path.iterdir()):
        raise UsageError(f"{path} is not empty", "The demo needs a fresh workspace; pass a new directory.")
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(
    stages: Sequence[Stage],
    *,
    directory: Path | None = None,
    keep: bool = False,
    console: Console | None = None,
    seed: int = 0,
) -> DemoResult:
    """Run ``stages`` in order in a fresh workspace (master key from a generated environment value).

    A stage that raises stops the demo: later stages build on earlier ones.
    """
    outcomes: list[StageOutcome] = []
    with _directory(directory, keep) as root:
        settings = Settings(home=root / "home", master_source="env")
        progress = (
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if console is not None
            else None
        )
        with (
            Workspace(settings, env={"PRIVET_MASTER_KEY": new_env_value()}) as ws,
            progress or contextlib.nullcontext(),
        ):
            for number, stage in enumerate(stages, 1):
                scratch = root / "scratch" / stage.name
                scratch.mkdir(parents=True)
                if progress is not None:
                    progress.console.print(f"stage {number}/{len(stages)}: {stage.title}")
                report = StageReport()
                started = time.perf_counter()
                error = None
                try:
                    stage.run(DemoContext(ws, scratch, seed, progress), report)
                except PrivetError as exc:
                    error = exc.one_line()
                outcomes.append(StageOutcome(stage, report, time.perf_counter() - started, error))
                if error is not None:
                    break
    return DemoResult(outcomes, root if keep else None)
