"""What a demo stage is: a named step of the end-to-end job that records checks and figures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from privet.workspace import Workspace


@dataclass(frozen=True)
class Check:
    """One claim the demo verified, with what it saw (never data values, only counts and outcomes)."""

    name: str
    ok: bool
    detail: str


@dataclass
class StageReport:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, float | int | str] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass
class DemoContext:
    """What a stage works with: a fresh workspace, a scratch directory, and the progress display."""

    workspace: Workspace
    scratch: Path
    seed: int
    progress: Progress | None

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
        """A progress line for one step; the yielded function advances it."""
        if self.progress is None:
            yield lambda _amount: None
            return
        task = self.progress.add_task(description, total=total)
        try:
            yield lambda amount: self.progress.advance(task, amount)  # type: ignore[union-attr]
        finally:
            self.progress.update(task, completed=total if total is not None else 1, total=total or 1)


@dataclass(frozen=True)
class Stage:
    """A demo stage: later capabilities append theirs to ``privet.demo.STAGES``."""

    name: str
    title: str
    run: Callable[[DemoContext, StageReport], None]
