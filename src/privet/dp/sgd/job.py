"""One training job, as ``privet train`` runs it: load the data, build the model, train (DP-SGD or the plain
baseline), evaluate on the test split, and pack the model as a signed artifact whose manifest carries the plan.

The caller (the CLI) opens the workspace and hands in the ledger, tenant and data-set names and the signing key;
this module never opens a workspace itself.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from privet.crypto.signing import SigningKey
from privet.crypto.stream import KeySource
from privet.data.adult import TabularEncoder, load_adult
from privet.data.bundled import Split
from privet.data.images import load_mnist_like
from privet.data.tables import load_table
from privet.dp.ledger import Ledger
from privet.dp.sgd.plan import PrivacyPlan
from privet.dp.sgd.private import EpochRecord, make_private, train_private
from privet.dp.sgd.sampler import ShuffledSampler
from privet.errors import NotFoundError, UsageError
from privet.models import artifact
from privet.models.manifest import Envelope, Scalar
from privet.models.reference import IMAGE_KINDS, ModelSpec, save_weights
from privet.models.training import accuracy

__all__ = ["DATASETS", "JobResult", "PreparedJob", "TrainSpec", "load_split", "pack_model", "prepare_job", "run_job"]

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "adult")
MODELS: tuple[str, ...] = ("cnn", "scatternet", "mlp", "logreg")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
_DEFAULT_HIDDEN = {"cnn": 32, "scatternet": 0, "mlp": 64, "logreg": 0}
_FEATURE_BATCH = 256  # images per scattering call: larger batches only add memory traffic


@dataclass(frozen=True)
class TrainSpec:
    """Everything ``privet train`` was asked, validated by :meth:`check`."""

    data: str
    data_dir: Path | None = None
    model: str | None = None  # default: cnn for images, logreg for tables
    hidden: int | None = None
    private: bool = True
    epsilon: float = 3.0
    delta: float = 1e-5
    epochs: float = 1.0
    batch_size: int = 256
    physical_batch_size: int | None = None
    max_grad_norm: float = 1.0
    lr: float = 0.5
    momentum: float = 0.9
    average: float | None = 0.995  # EMA of the weights (post-processing: no privacy cost); None: last iterate
    schedule: str = "constant"  # learning rate: constant or cosine decay over the planned steps
    optimizer: str = "sgd"
    accountant: str = "pld"
    label: str = "label"
    test_fraction: float = 0.2
    limit: int | None = None
    device: str = "auto"

    def check(self) -> None:
        if self.model is not None and self.model not in MODELS:
            raise UsageError(f"--model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.accountant not in ("pld", "rdp"):
            raise UsageError(f"--accountant {self.accountant!r} is not one of pld, rdp")
        for name, value in (("--epochs", self.epochs), ("--lr", self.lr), ("--max-grad-norm", self.max_grad_norm)):
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a number > 0, got {value!r}")
        if self.private and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise UsageError(f"--epsilon must be a number > 0, got {self.epsilon!r}")
        if self.private and not 0 < self.delta < 1:
            raise UsageError(f"--delta must be in (0, 1), got {self.delta!r}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if self.average is not None and not 0 < self.average < 1:
            raise UsageError(f"--average must be in [0, 1), got {self.average!r}", "0 keeps the last weights.")
        if self.batch_size < 1 or (self.physical_batch_size is not None and self.physical_batch_size < 1):
            raise UsageError("--batch-size and --physical-batch-size must be positive")
        if self.limit is not None and self.limit < 2:
            raise UsageError(f"--limit must be at least 2, got {self.limit}")
        if not 0 < self.test_fraction < 1:
            raise UsageError(f"--test-fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device {self.device!r} is not auto, cpu or cuda[:N]")
        if not self.private and self.epochs != int(self.epochs):
            raise UsageError("--no-dp trains whole epochs: pass an integer --epochs")


@dataclass(frozen=True)
class JobResult:
    model: nn.Module
    model_spec: ModelSpec
    data_name: str
    kind: str  # "image" or "table"
    train_records: int
    test_records: int
    test_accuracy: float
    plan: PrivacyPlan | None  # None for the non-private baseline
    history: tuple[EpochRecord, ...]
    steps: int
    train_seconds: float
    seconds: float


# -- data --------------------------------------------------------------------------------------------------------
def _table_split(path: Path, label: str, test_fraction: float) -> Split:
    frame = load_table(path)
    if label not in frame.columns:
        raise UsageError(f"{path.name} has no column {label!r}", "Name the label column with --label.")
    frame = frame.dropna(subset=[label])
    if len(frame) < 4:
        raise UsageError(f"{path.name} has fewer than 4 labelled rows")
    classes = sorted(frame[label].astype(str).unique())
    if len(classes) < 2:
        raise UsageError(f"column {label!r} of {path.name} has a single class", "A classifier needs two or more.")
    y = frame[label].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    features = frame.drop(columns=[label])
    numeric = [c for c in features.columns if features[c].dtype.kind in "biuf"]
    categorical = [c for c in features.columns if c not in numeric]
    features[numeric] = features[numeric].fillna(0)
    features[categorical] = features[categorical].fillna("?")
    # The train/test split depends on row positions only (a fixed, public permutation), not on the values.
    order = np.random.default_rng(0).permutation(len(frame))
    cut = max(1, min(len(frame) - 1, round(len(frame) * (1 - test_fraction))))
    train_rows, test_rows = order[:cut], order[cut:]
    train = features.iloc[train_rows]
    encoder = TabularEncoder.fit(train, numeric, categorical)
    return Split(
        path.stem,
        encoder.transform(train),
        torch.tensor(y[train_rows]),
        encoder.transform(features.iloc[test_rows]),
        torch.tensor(y[test_rows]),
        encoder.feature_names,
    )


def load_split(spec: TrainSpec) -> tuple[Split, str]:
    """The train/test split ``spec.data`` names, and its kind (``"image"`` or ``"table"``)."""
    if spec.data in DATASETS:
        if spec.data_dir is None:
            raise UsageError(f"--data {spec.data} needs --data-dir", "privet ships no data: pass where the files are.")
        if not spec.data_dir.is_dir():
            raise NotFoundError(f"data directory {spec.data_dir} does not exist", "Pass an existing --data-dir.")
        if spec.data == "adult":
            return load_adult(spec.data_dir), "table"
        return load_mnist_like(spec.data_dir, name=spec.data), "image"
    path = Path(spec.data)
    if path.is_dir():
        return load_mnist_like(path), "image"
    if path.is_file():
        return _table_split(path, spec.label, spec.test_fraction), "table"
    raise NotFoundError(
        f"--data {spec.data!r} is neither {', '.join(DATASETS)} nor an existing file or directory",
        "Pass a data set name with --data-dir, a CSV/Parquet table, or a directory of IDX files.",
    )


def _prepare(split: Split, kind: str, model: str, limit: int | None) -> Split:
    x_train, y_train = split.x_train, split.y_train
    if limit is not None:  # the first records: a data-independent choice
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_test = split.x_test
    if kind == "image" and model not in IMAGE_KINDS:
        x_train, x_test = x_train.flatten(1), x_test.flatten(1)
    if kind == "table" and model in IMAGE_KINDS:
        raise UsageError(f"the {model} takes 28x28 images", "Use --model mlp or logreg for tables.")
    return Split(split.name, x_train, y_train, x_test, split.y_test, split.feature_names)


# -- training ----------------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available", "Use --device cpu.")
    return torch.device(name)


def _optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)


def _train_plain(
    spec: TrainSpec,
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    console: Console | None,
) -> tuple[tuple[EpochRecord, ...], int]:
    x_train, y_train = data
    optimizer = _optimizer(spec, model)
    sampler = ShuffledSampler(len(x_train), spec.batch_size, epochs=int(spec.epochs))
    loss_fn = nn.CrossEntropyLoss()
    history: list[EpochRecord] = []
    per_epoch = sampler.steps_per_epoch
    started = time.perf_counter()
    loss_sum = correct = count = 0.0
    model.train()
    step = 0
    for step, indices in enumerate(sampler, start=1):
        index = torch.as_tensor(indices)
        x, y = x_train[index].to(device), y_train[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += float((out.argmax(1) == y).sum())
        count += len(y)
        if step % per_epoch == 0:
            now = time.perf_counter()
            history.append(
                EpochRecord(step // per_epoch, step, loss_sum / count, correct / count, math.inf, now - started)
            )
            if console is not None:
                console.print(f"epoch {step // per_epoch}: loss {loss_sum / count:.4f} acc {correct / count:.3f}")
            loss_sum = correct = count = 0.0
            started = now
    model.eval()
    return tuple(history), step


@torch.no_grad()
def _featurise(features: nn.Module, x: torch.Tensor, device: torch.device, console: Console | None) -> torch.Tensor:
    """The fixed feature extractor's output for every record, computed once (it has no parameters to train)."""
    chunks = []
    with Progress(
        TextColumn("features"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=True,
    ) as progress:
        task = progress.add_task("features", total=len(x))
        for start in range(0, len(x), _FEATURE_BATCH):
            chunk = x[start : start + _FEATURE_BATCH]
            chunks.append(features(chunk.to(device)).cpu())
            progress.advance(task, len(chunk))
    return torch.cat(chunks)


@dataclass(frozen=True)
class PreparedJob:
    """Data loaded and checked, model built: everything that can fail before a budget is touched."""

    spec: TrainSpec
    split: Split
    kind: str
    model_spec: ModelSpec
    device: torch.device
    started: float


def prepare_job(spec: TrainSpec) -> PreparedJob:
    """Check the options, load the data and build the model; charges nothing."""
    started = time.perf_counter()
    spec.check()
    split, kind = load_split(spec)
    model_kind = spec.model or ("cnn" if kind == "image" else "logreg")
    split = _prepare(split, kind, model_kind, spec.limit)
    if spec.private and spec.delta >= 1 / len(split.x_train):
        raise UsageError(
            f"delta {spec.delta:g} is not below 1/{len(split.x_train)} (one over the number of training records)",
            "A delta that large allows releasing some record in the clear; pass a smaller --delta.",
        )
    in_features = int(np.prod(split.x_train.shape[1:]))
    hidden = spec.hidden if spec.hidden is not None else _DEFAULT_HIDDEN[model_kind]
    classes = max(int(split.y_train.max()), int(split.y_test.max())) + 1
    model_spec = ModelSpec(model_kind, in_features, max(classes, 2), hidden)
    return PreparedJob(spec, split, kind, model_spec, _device(spec.device), started)


def run_job(
    job: TrainSpec | PreparedJob,
    *,
    ledger: Ledger | None,
    tenant: str | None,
    dataset: str | None,
    console: Console | None = None,
) -> JobResult:
    """Train (charging ``ledger`` first when private) and evaluate on the test split."""
    prepared = job if isinstance(job, PreparedJob) else prepare_job(job)
    spec, split, model_spec, device = prepared.spec, prepared.split, prepared.model_spec, prepared.device
    if spec.private and ledger is None:
        raise UsageError("private training needs a ledger to charge", "privet train always passes the workspace's.")
    model = model_spec.build().to(device)
    train_started = time.perf_counter()
    features, trained = model_spec.fixed_features(model)
    x_train = split.x_train if features is None else _featurise(features, split.x_train, device, console)
    plan: PrivacyPlan | None = None
    if spec.private:
        private_model, optimizer, loader, plan = make_private(
            trained,
            _optimizer(spec, trained),
            (x_train, split.y_train),
            target_epsilon=spec.epsilon,
            target_delta=spec.delta,
            epochs=spec.epochs,
            max_grad_norm=spec.max_grad_norm,
            batch_size=spec.batch_size,
            accountant=spec.accountant,
            ledger=ledger,
            tenant=tenant,
            dataset=dataset,
            physical_batch_size=spec.physical_batch_size,
            description=f"privet train {model_spec.kind} on {split.name}",
        )
        result = train_private(
            private_model,
            optimizer,
            loader,
            plan,
            device=device,
            console=console,
            average=spec.average,
            schedule=spec.schedule,
        )
        history, steps = result.history, result.steps
    else:
        history, steps = _train_plain(spec, trained, (x_train, split.y_train), device, console)
    train_seconds = time.perf_counter() - train_started
    test_accuracy = accuracy(model, split.x_test, split.y_test, device=device)
    return JobResult(
        model=model.cpu(),
        model_spec=model_spec,
        data_name=split.name,
        kind=prepared.kind,
        train_records=len(split.x_train),
        test_records=len(split.x_test),
        test_accuracy=test_accuracy,
        plan=plan,
        history=history,
        steps=steps,
        train_seconds=train_seconds,
        seconds=time.perf_counter() - prepared.started,
    )


def pack_model(
    result: JobResult,
    out: Path,
    *,
    name: str,
    version: str,
    signer: SigningKey,
    keys: KeySource | None,
) -> Envelope:
    """Write ``result``'s model as a signed (and with ``keys`` encrypted) artifact; the plan goes in its manifest."""
    metadata: dict[str, Scalar] = {
        **result.model_spec.to_metadata(),
        "model.input": "1x28x28" if result.model_spec.kind in IMAGE_KINDS else f"{result.model_spec.in_features}",
        "data": result.data_name,
        "train_records": result.train_records,
        "test_records": result.test_records,
        "test_accuracy": round(result.test_accuracy, 6),
        "training": "dp-sgd" if result.plan is not None else "non-private baseline (no DP guarantee)",
    }
    with tempfile.TemporaryDirectory(prefix="privet-train-") as scratch:
        weights = Path(scratch) / "model.safetensors"
        save_weights(result.model, weights)
        return artifact.pack(
            weights,
            out,
            name=name,
            version=version,
            signer=signer,
            keys=keys,
            metadata=metadata,
            privacy=None if result.plan is None else result.plan.privacy(),
        )
