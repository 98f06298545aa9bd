"""``privet fl``: provision a federation, run its server and its clients (separate processes or hosts)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from privet.cli.common import OPTIONS, JsonOption, emit, stderr, stdout, workspace
from privet.errors import UsageError

if TYPE_CHECKING:
    from privet.federated.server import RoundRecord

app = typer.Typer(
    help="Federated learning: data stays with its owners, only model updates travel.", no_args_is_help=True
)

PASSPHRASE_ENV = "PRIVET_FL_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)


def _passphrase() -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise UsageError(
            f"this party's key passphrase is not set ({PASSPHRASE_ENV})",
            f"Set {PASSPHRASE_ENV} to the passphrase `privet fl provision` printed for this party.",
        )
    return value.encode()


@app.command()
def provision(
    out: Annotated[Path, typer.Option(help="New directory for the federation.", show_default=False)],
    clients: Annotated[str, typer.Option(help="Client ids, comma-separated.", show_default=False)],
    name: Annotated[str, typer.Option(help="Federation name.")] = "federation",
    server_host: Annotated[
        list[str] | None, typer.Option(help="Host name or address clients dial (repeatable).", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a private CA, the server's and each client's certificate and encrypted key, and a revocation list.

    Each party's key passphrase is printed once: hand every party its folder and its passphrase.
    """
    from privet.federated.provision import provision as run

    ids = [c.strip() for c in clients.split(",") if c.strip()]
    done = run(out, name, ids, server_hosts=server_host or ["localhost", "127.0.0.1"])
    result = {"directory": str(done.directory), "passphrases": done.passphrases}

    def render() -> None:
        stdout.print(f"federation {name!r} written to {done.directory}")
        for party, secret in done.passphrases.items():
            stdout.print(f"  {party}: passphrase {secret}")
        stdout.print(f"Give each party its folder and passphrase (as {PASSPHRASE_ENV}); keep ca/ with you.")

    emit(result, as_json, render)


@app.command()
def revoke(
    federation: Annotated[Path, typer.Option(help="The federation directory.", show_default=False)],
    party: Annotated[str, typer.Option(help="Client id to revoke.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Revoke a client's certificate (the CA passphrase comes from PRIVET_FL_PASSPHRASE); restart the server."""
    from privet.federated.provision import revoke as run

    run(federation, party, _passphrase())
    emit({"revoked": party}, as_json, lambda: stdout.print(f"{party} revoked; the server refuses it once restarted"))


@app.command()
def server(
    config: Annotated[Path, typer.Option(help="The run's fl.yaml.", show_default=False)],
    plot: Annotated[Path | None, typer.Option(help="Write an accuracy/loss plot of the rounds (.png, .html).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the federation's server until its last round (resuming from its checkpoint if there is one).

    With privacy settings in fl.yaml every round is charged to the workspace's ledger before its model is released.
    """
    from privet.dp.ledger import Ledger
    from privet.federated.config import load_config
    from privet.federated.server import serve

    settings = load_config(config)
    columns = (TextColumn("round"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with workspace() as ws, Progress(*columns, console=stderr, disable=OPTIONS.quiet) as bar:
        task = bar.add_task("rounds", total=settings.rounds, status="waiting for clients")
        ledger = Ledger(ws.store) if settings.privacy is not None else None

        def on_round(record: RoundRecord) -> None:
            accuracy = "" if record.accuracy is None else f", test accuracy {record.accuracy:.4f}"
            privacy = "" if record.epsilon is None else f", epsilon {record.epsilon:.3g}"
            status = f"{len(record.answered)}/{len(record.sampled)} answered, loss {record.loss:.4f}{accuracy}{privacy}"
            bar.update(task, completed=record.round, status=status)

        coordinator, records = serve(settings, _passphrase(), ledger=ledger, progress=on_round)
    if plot is not None:  # every round of the run, those before a restart included
        from types import SimpleNamespace

        from privet.federated.simulate_job import write_plot

        lines = (settings.state / "metrics.jsonl").read_text().splitlines()
        write_plot([SimpleNamespace(**json.loads(line)) for line in lines if line.strip()], plot, title=settings.name)
    result = {
        "rounds": coordinator.round,
        "ran": [r.round for r in records],
        "accuracy": coordinator.evaluate(),
        "checkpoint": str(coordinator.checkpoint_path),
        "privacy": coordinator.privacy_summary(),
    }

    def render() -> None:
        stdout.print(f"finished after round {coordinator.round}")
        summary = result["privacy"]
        if summary is not None:
            stdout.print(
                f"client-level DP: epsilon {summary['epsilon']:.4g} at delta {summary['delta']:g} over "
                f"{summary['rounds']} rounds; ledger {summary['ledger']} has spent {summary['budget_epsilon']:.4g}"
            )

    emit(result, as_json, render)


@app.command()
def client(
    server_address: Annotated[str, typer.Option("--server", help="HOST:PORT of the server.", show_default=False)],
    party: Annotated[Path, typer.Option(help="This client's folder from provisioning.", show_default=False)],
    data: Annotated[Path, typer.Option(help="Local records: IDX image folder or CSV/Parquet.", show_default=False)],
    give_up: Annotated[float, typer.Option(help="Seconds without a server before giving up.")] = 120.0,
    threads: Annotated[int, typer.Option(help="CPU threads for local training (small models: 1 is fastest).")] = 1,
    malicious_server: Annotated[
        bool, typer.Option(help="Refuse secure rounds that are not hardened against a lying server.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Take part in federated training with local records; only model updates leave this machine."""
    import torch

    from privet.federated.client import run_client
    from privet.federated.records import load_records
    from privet.net.rpc import Identity

    torch.set_num_threads(max(1, threads))
    x, y = load_records(data)
    identity = Identity.load(party, _passphrase())
    report = run_client(server_address, identity, x, y, give_up=give_up, malicious_server=malicious_server)
    result = {"party": report.party, "rounds": report.rounds, "records": len(x)}
    emit(result, as_json, lambda: stdout.print(f"{report.party} trained in rounds {report.rounds}"))


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(help="digits (bundled), mnist, fashion-mnist, or an IDX folder.")] = "digits",
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the mnist / fashion-mnist IDX files.")] = None,
    model: Annotated[str | None, typer.Option(help="cnn, scatternet, mlp or logreg (default: cnn for images).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden width (mlp: 200, cnn: 32).")] = None,
    clients: Annotated[int, typer.Option(help="Simulated clients.")] = 100,
    per_round: Annotated[int, typer.Option(help="Clients sampled per round.")] = 10,
    rounds: Annotated[int, typer.Option(help="Rounds.")] = 10,
    partition: Annotated[str, typer.Option(help="iid, dirichlet:ALPHA or shards:K.")] = "iid",
    strategy: Annotated[
        str, typer.Option(help="Strategy name (fedavg, fedprox, fedadam, median, krum, ...).")
    ] = "fedavg",
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Local batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Local learning rate.")] = 0.05,
    momentum: Annotated[float, typer.Option(help="Local SGD momentum.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the partition, the sampling and local shuffling.")] = 0,
    executor: Annotated[str, typer.Option(help="ray (default) or serial.")] = "ray",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray://host:port); default: local.")] = None,
    metrics: Annotated[Path | None, typer.Option(help="Write per-round metrics as JSON lines here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an accuracy/loss plot here (.png or .html).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Simulate a federation on one machine or a Ray cluster, running the real client code per sampled client."""
    from privet.federated.simulate_job import SimulationSpec, run_simulation

    spec = SimulationSpec(
        dataset=dataset, data_dir=data_dir, model=model, hidden=hidden, clients=clients, per_round=per_round,
        rounds=rounds, partition=partition, strategy=strategy, local_epochs=local_epochs, batch_size=batch_size,
        lr=lr, momentum=momentum, seed=seed, executor=executor, address=address,
    )  # fmt: skip
    result = run_simulation(spec, metrics=metrics, plot=plot, console=None if OPTIONS.quiet else stderr)
    emit(result, as_json, lambda: stdout.print(f"test accuracy {result['accuracy']:.4f} after {rounds} rounds"))
