"""``privet fl simulate``: load a data set, run :func:`privet.federated.simulation.simulate`, write what it did.

Outputs: a result dict (the CLI prints it as JSON), per-round metrics as JSON lines (``--metrics``), and a plot of
test accuracy and training loss per round (``--plot``, PNG, or HTML with the PNG inlined).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from privet.data.bundled import digits
from privet.data.images import load_mnist_like, scaled
from privet.errors import UsageError
from privet.federated.local import LocalSettings
from privet.federated.simulation import SimulationRound, simulate
from privet.federated.strategies import make_strategy
from privet.files import atomic_file
from privet.models.reference import IMAGE_KINDS, ModelSpec

__all__ = ["SimulationSpec", "run_simulation", "write_plot"]

_DEFAULT_HIDDEN = {"cnn": 32, "scatternet": 0, "mlp": 200, "logreg": 0}


@dataclass(frozen=True)
class SimulationSpec:
    dataset: str = "digits"
    data_dir: Path | None = None
    model: str | None = None
    hidden: int | None = None
    clients: int = 100
    per_round: int = 10
    rounds: int = 10
    partition: str = "iid"
    strategy: str = "fedavg"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    seed: int = 0
    executor: str = "ray"
    address: str | None = None


def _data(spec: SimulationSpec) -> tuple[Any, Any, Any, Any, bool]:
    if spec.dataset == "digits":
        split = digits(seed=spec.seed)
        return split.x_train, split.y_train, split.x_test, split.y_test, False
    if spec.dataset in ("mnist", "fashion-mnist"):
        if spec.data_dir is None:
            raise UsageError(f"--dataset {spec.dataset} needs --data-dir", "privet ships no data: pass the IDX folder.")
        folder = spec.data_dir
    else:
        folder = Path(spec.dataset)
        if not folder.is_dir():
            raise UsageError(f"--dataset {spec.dataset!r} is not digits, mnist, fashion-mnist or an IDX folder")
    # Training images stay 8-bit (simulated clients scale their own rows), a quarter of the memory in every copy.
    split = load_mnist_like(folder, name=spec.dataset, pixels=True)
    return split.x_train, split.y_train, scaled(split.x_test.numpy()), split.y_test, True


def run_simulation(
    spec: SimulationSpec, *, metrics: Path | None = None, plot: Path | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run the simulation ``spec`` describes; returns the figures the CLI prints."""
    launched = time.perf_counter()
    x, y, x_test, y_test, images = _data(spec)
    kind = spec.model or ("cnn" if images else "mlp")
    if not images and kind in IMAGE_KINDS:
        raise UsageError(f"the {kind} takes 28x28 images", "Use --model mlp or logreg for this data set.")
    if images and kind not in IMAGE_KINDS:
        x, x_test = x.flatten(1), x_test.flatten(1)
    hidden = spec.hidden if spec.hidden is not None else _DEFAULT_HIDDEN.get(kind, 0)
    classes = int(max(int(y.max()), int(y_test.max()))) + 1
    model = ModelSpec(kind, int(x[0].numel()), classes, hidden)
    strategy = make_strategy(spec.strategy)
    settings = LocalSettings(spec.local_epochs, spec.batch_size, spec.lr, spec.momentum)
    records: list[SimulationRound] = []
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text("")
    columns = (TextColumn("round"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, disable=console is None, transient=True) as progress:
        task = progress.add_task("rounds", total=spec.rounds, status="")

        def on_round(record: SimulationRound) -> None:
            records.append(record)
            if metrics is not None:
                with metrics.open("a") as handle:
                    handle.write(json.dumps(asdict(record)) + "\n")
            progress.update(task, advance=1, status=f"accuracy {record.accuracy:.4f} loss {record.loss:.4f}")

        result = simulate(
            model, x, y, strategy, clients=spec.clients, per_round=spec.per_round, rounds=spec.rounds,
            scheme=spec.partition, settings=settings, seed=spec.seed, test=(x_test, y_test),
            executor=spec.executor, address=spec.address, progress=on_round,
        )  # fmt: skip
    if plot is not None:
        write_plot(records, plot, title=f"{spec.dataset}: {kind}, {spec.strategy}, {spec.partition}")
    per_round = sorted(r.seconds for r in records[1:]) or [records[0].seconds]
    return {
        "dataset": spec.dataset,
        "model": kind,
        "clients": spec.clients,
        "per_round": spec.per_round,
        "rounds": spec.rounds,
        "partition": spec.partition,
        "strategy": spec.strategy,
        "executor": spec.executor,
        "accuracy": result.accuracy,
        "first_round_seconds": records[0].seconds,
        "median_round_seconds": per_round[len(per_round) // 2],
        "startup_seconds": result.startup_seconds,
        "seconds": time.perf_counter() - launched,
    }


class _RoundFigures(Protocol):
    round: int
    accuracy: float | None
    loss: float


def write_plot(records: Sequence[_RoundFigures], path: Path, *, title: str) -> None:
    """Test accuracy and training loss per round (of a simulation or a server's run), as a PNG (``.png``) or an
    HTML page with it inlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    rounds = [r.round for r in records]
    top.plot(rounds, [r.accuracy for r in records], marker=".")
    top.set_ylabel("test accuracy")
    top.set_title(title)
    bottom.plot(rounds, [r.loss for r in records], marker=".", color="tab:orange")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("round")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    data = buffer.getvalue()
    if path.suffix.lower() in (".html", ".htm"):
        inline = base64.b64encode(data).decode()
        data = (
            f"<!doctype html><title>{title}</title><h1>{title}</h1><img src='data:image/png;base64,{inline}'>".encode()
        )
    with atomic_file(path, mode=0o644) as handle:
        handle.write(data)
