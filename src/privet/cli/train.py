"""``privet train``: train a classifier with DP-SGD (or the plain baseline) and pack it as a signed artifact."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from privet.cli.common import OPTIONS, JsonOption, emit, stderr, stdout, workspace
from privet.crypto.keyring import DEFAULT_AEAD, DEFAULT_SIGNING
from privet.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from privet.dp.sgd.job import JobResult

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _default_dataset_name(data: str) -> str:
    name = data if data in ("mnist", "fashion-mnist", "adult") else Path(data).stem or Path(data).name
    return "".join(c if c in _NAME_CHARS else "-" for c in name).strip("-._") or "data"


def _result(result: JobResult, spec_private: bool, ledger_status: Any, artifact: dict | None) -> dict[str, Any]:
    plan = result.plan
    payload: dict[str, Any] = {
        "data": result.data_name,
        "model": result.model_spec.kind,
        "private": spec_private,
        "train_records": result.train_records,
        "test_records": result.test_records,
        "test_accuracy": result.test_accuracy,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 3),
        "history": [
            {
                "epoch": h.epoch,
                "steps": h.steps,
                "train_loss": h.train_loss,
                "train_accuracy": h.train_accuracy,
                "epsilon": None if plan is None else h.epsilon,
            }
            for h in result.history
        ],
        "history_note": "train loss and accuracy are unnoised monitoring figures, not DP releases",
        "artifact": artifact,
    }
    if plan is None:
        payload["privacy"] = None
        payload["note"] = "non-private baseline: no differential-privacy guarantee; nothing was charged to the ledger"
    else:
        payload["privacy"] = {
            "epsilon": plan.guarantee.epsilon,
            "delta": plan.guarantee.delta,
            "accountant": plan.guarantee.accountant,
            "fallback_reason": plan.guarantee.fallback_reason,
            "target_epsilon": plan.target_epsilon,
            "sampler": plan.sampler,
            "sample_rate": plan.sample_rate,
            "steps": plan.steps,
            "epochs": plan.epochs,
            "expected_batch_size": plan.expected_batch_size,
            "noise_multiplier": plan.noise_multiplier,
            "max_grad_norm": plan.max_grad_norm,
            "clipping": plan.clipping,
        }
    if ledger_status is not None:
        budget = ledger_status.budget
        payload["ledger"] = {
            "tenant": budget.tenant,
            "dataset": budget.dataset,
            "budget_epsilon": budget.epsilon,
            "budget_delta": budget.delta,
            "spent_epsilon": None if ledger_status.spent is None else ledger_status.spent.epsilon,
            "remaining_epsilon": ledger_status.remaining_epsilon,
            "charges": ledger_status.charges,
        }
    else:
        payload["ledger"] = None
    return payload


def train(
    data: Annotated[
        str,
        typer.Option(help="mnist, fashion-mnist, adult (with --data-dir), a CSV/Parquet table or an IDX directory."),
    ],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory holding the named data set's official files.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="cnn, scatternet, mlp or logreg (default: cnn for images, logreg for tables).")
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden width (mlp: 64, cnn: 32).")] = None,
    epsilon: Annotated[float, typer.Option(help="Epsilon this training may spend.")] = 3.0,
    delta: Annotated[float, typer.Option(help="Delta, below 1/records.")] = 1e-5,
    epochs: Annotated[float, typer.Option(help="Expected passes over the data.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Expected (Poisson) batch size.")] = 256,
    physical_batch_size: Annotated[
        int | None, typer.Option("--physical-batch-size", help="Split batches into chunks of this size (memory).")
    ] = None,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Per-sample clipping norm C.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.5,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    average: Annotated[
        float,
        typer.Option(help="Decay of the moving average of the weights that is kept (0: the last step's weights)."),
    ] = 0.995,
    schedule: Annotated[str, typer.Option(help="Learning rate over the steps: constant or cosine.")] = "constant",
    optimizer: Annotated[str, typer.Option(help="sgd or adam.")] = "sgd",
    accountant: Annotated[str, typer.Option(help="pld (default, tight) or rdp.")] = "pld",
    tenant: Annotated[str | None, typer.Option(help="Tenant whose privacy budget is charged.")] = None,
    dataset_name: Annotated[
        str | None, typer.Option("--dataset-name", help="Budget's data set (default: the data's name).")
    ] = None,
    budget_epsilon: Annotated[
        float | None,
        typer.Option("--budget-epsilon", help="Create the budget (this epsilon, at --delta) if none exists."),
    ] = None,
    no_dp: Annotated[
        bool, typer.Option("--no-dp", help="Non-private baseline: no guarantee, no ledger charge.")
    ] = False,
    label: Annotated[str, typer.Option(help="Label column of a table.")] = "label",
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share of a table.")] = 0.2,
    limit: Annotated[int | None, typer.Option(help="Train on the first N training records only.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for PyTorch (1 is fastest for small models on a busy host).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the model as a signed artifact (.pvm) here.")] = None,
    name: Annotated[str | None, typer.Option(help="Artifact model name (default: MODEL-DATA).")] = None,
    version: Annotated[str, typer.Option(help="Artifact model version.")] = "1",
    plain: Annotated[bool, typer.Option("--plain", help="Sign the artifact only; do not encrypt it.")] = False,
    key: Annotated[str, typer.Option(help="Keyring key that encrypts the artifact.")] = DEFAULT_AEAD,
    signer: Annotated[str, typer.Option(help="Keyring signing key.")] = DEFAULT_SIGNING,
    as_json: JsonOption = False,
) -> None:
    """Train a classifier with differential privacy (DP-SGD), charged to the ledger before the first step."""
    from privet.dp.ledger import Ledger
    from privet.dp.sgd.job import TrainSpec, pack_model, prepare_job, run_job
    from privet.models.manifest import check_identity

    started = time.perf_counter()
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's notes on skipped RDP orders
    spec = TrainSpec(
        data=data,
        data_dir=data_dir,
        model=model,
        hidden=hidden,
        private=not no_dp,
        epsilon=epsilon,
        delta=delta,
        epochs=epochs,
        batch_size=batch_size,
        physical_batch_size=physical_batch_size,
        max_grad_norm=max_grad_norm,
        lr=lr,
        momentum=momentum,
        average=average or None,
        schedule=schedule,
        optimizer=optimizer,
        accountant=accountant,
        label=label,
        test_fraction=test_fraction,
        limit=limit,
        device=device,
    )
    if no_dp and (tenant or budget_epsilon is not None):
        raise UsageError("--no-dp trains without a guarantee and charges no budget", "Drop --tenant/--budget-epsilon.")
    if not no_dp and not tenant:
        raise UsageError("private training charges a tenant's privacy budget", "Pass --tenant (or --no-dp).")
    dataset = dataset_name or _default_dataset_name(data)
    if out is not None:
        check_identity(name or f"model-{_default_dataset_name(data)}", version)
        if out.exists():
            raise UsageError(f"{out} already exists", "Pick a new --out path; artifacts are never overwritten.")
        if not out.parent.is_dir():
            raise NotFoundError(f"directory {out.parent} does not exist", "Create it or pick another --out.")
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    console = None if OPTIONS.quiet else stderr
    prepared = prepare_job(spec)  # options, data and model checked before any budget is opened or charged

    with workspace() as ws:
        # Everything that could fail after training is checked first, so a budget is never spent for nothing.
        signing_key = ws.keyring.signing_key(signer) if out is not None else None
        keys = ws.keyring if out is not None and not plain else None
        ledger = None
        if not no_dp:
            ledger = Ledger(ws.store)
            try:
                existing = ledger.status(tenant, dataset)  # type: ignore[arg-type]
            except NotFoundError:
                if budget_epsilon is None:
                    raise NotFoundError(
                        f"no privacy budget exists for {tenant}/{dataset}",
                        "Create one with 'privet ledger create' or pass --budget-epsilon; nothing was trained.",
                    ) from None
                ledger.create(tenant, dataset, budget_epsilon, delta, accountant)  # type: ignore[arg-type]
            else:
                if budget_epsilon is not None and budget_epsilon != existing.budget.epsilon:
                    raise UsageError(
                        f"the budget of {tenant}/{dataset} exists with epsilon {existing.budget.epsilon:g}",
                        "Budgets are never replaced: drop --budget-epsilon.",
                    )
        result = run_job(prepared, ledger=ledger, tenant=tenant, dataset=dataset, console=console)
        artifact_info = None
        if out is not None and signing_key is not None:
            artifact_name = name or f"{result.model_spec.kind}-{_default_dataset_name(data)}"
            envelope = pack_model(result, out, name=artifact_name, version=version, signer=signing_key, keys=keys)
            artifact_info = {
                "path": str(out),
                "name": envelope.name,
                "version": envelope.version,
                "encrypted": envelope.encrypted,
                "signer": envelope.signer.fingerprint,
            }
        status = ledger.status(tenant, dataset) if ledger is not None else None  # type: ignore[arg-type]
    payload = _result(result, not no_dp, status, artifact_info)
    payload["seconds"] = round(time.perf_counter() - started, 3)

    def render() -> None:
        kind = "DP-SGD" if result.plan is not None else "non-private baseline"
        stdout.print(
            f"{kind}: {result.model_spec.kind} on {result.data_name}, {result.train_records} records, "
            f"{result.steps} steps in {result.train_seconds:.1f} s"
        )
        stdout.print(f"test accuracy {result.test_accuracy:.4f} on {result.test_records} records")
        if result.plan is not None:
            g = result.plan.guarantee
            stdout.print(
                f"epsilon spent {g.epsilon:.4f} at delta {g.delta:g} ({g.accountant}); noise multiplier "
                f"{result.plan.noise_multiplier:.4f}, sample rate {result.plan.sample_rate:.4g}, "
                f"clip {result.plan.max_grad_norm:g}"
            )
            ledger_view = payload["ledger"]
            stdout.print(
                f"ledger {ledger_view['tenant']}/{ledger_view['dataset']}: spent {ledger_view['spent_epsilon']:.4f} "
                f"of {ledger_view['budget_epsilon']:g}"
            )
        else:
            stdout.print("[bold]no differential-privacy guarantee[/bold]; nothing was charged to the ledger")
        if artifact_info is not None:
            stdout.print(f"model written to {artifact_info['path']} (signed by {artifact_info['signer']})")
        stdout.print(f"wall time {payload['seconds']:.1f} s")

    emit(payload, as_json, render)
