"""DP-SGD made hard to get wrong: :func:`make_private` sets up a run, :func:`train_private` runs it.

:func:`make_private` does, in this order, and nothing trains until it returns:

1. validates the model (BatchNorm and other layers without per-sample gradients are refused), the optimizer
   (it must update exactly the model's trainable parameters) and the data;
2. builds the Poisson sampler and derives the :class:`~privet.dp.sgd.plan.PrivacyPlan` from it: the noise
   multiplier calibrated for exactly that sampler's rate and steps;
3. **charges the ledger** with the plan's event (when a ledger is given); a refusal raises
   :class:`~privet.errors.BudgetExceededError` and the model is left untouched;
4. wraps the model with the clipping engine and the optimizer with the noising :class:`DPOptimizer`, and returns
   the loader that draws the Poisson batches.

Without a ledger the plan says so (``plan.ledger is None``); privet's CLI always passes one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from privet.crypto.prg import Randomness
from privet.dp.ledger import Ledger
from privet.dp.sgd.plan import PrivacyPlan, plan_privacy
from privet.dp.sgd.sampler import PoissonSampler
from privet.errors import UsageError

__all__ = ["EpochRecord", "TensorBatches", "TrainResult", "make_private", "train_private"]


# -- loaders -----------------------------------------------------------------------------------------------------
class TensorBatches:
    """Batches of in-memory tensors drawn by a batch sampler: ``tuple(t[indices] for t in tensors)`` per step.

    An empty batch (Poisson sampling allows them) yields tensors with a leading dimension of 0.
    """

    def __init__(self, tensors: Sequence[Tensor], batch_sampler: Any) -> None:
        self.tensors = tuple(tensors)
        self.batch_sampler = batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        for indices in self.batch_sampler:
            index = torch.as_tensor(indices, dtype=torch.long)
            yield tuple(t[index] for t in self.tensors)


class _EmptyAwareCollate:
    """``default_collate``, except that an empty batch becomes zero-length tensors shaped like a real one."""

    def __init__(self, prototype: Any) -> None:
        self._empty = _empty_like(default_collate([prototype]))

    def __call__(self, batch: list[Any]) -> Any:
        return default_collate(batch) if batch else self._empty


def _empty_like(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch[:0]
    if isinstance(batch, tuple | list):
        return type(batch)(_empty_like(b) for b in batch)
    raise UsageError("Poisson batches can be empty, and this data set's items are not tensors", "Return tensors.")


def _loader(data: Any, sampler: PoissonSampler) -> TensorBatches | DataLoader:
    if isinstance(data, TensorDataset):
        return TensorBatches(data.tensors, sampler)
    if isinstance(data, tuple | list) and data and all(isinstance(t, Tensor) for t in data):
        return TensorBatches(data, sampler)
    return DataLoader(data, batch_sampler=sampler, collate_fn=_EmptyAwareCollate(data[0]))


def _size(data: Any) -> int:
    if isinstance(data, tuple | list) and data and all(isinstance(t, Tensor) for t in data):
        sizes = {len(t) for t in data}
        if len(sizes) != 1:
            raise UsageError("the data tensors differ in length", "Pass features and labels of the same records.")
        return sizes.pop()
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return len(data)  # type: ignore[arg-type]
    raise UsageError("DP-SGD needs a sized data set", "Pass a Dataset with __len__ or a tuple of tensors.")


# -- the engine (written against privet.dp.sgd's public API) -----------------------------------------------------
def _engine_api() -> tuple[Callable[..., Any], Callable[..., Any], Callable[[nn.Module], None]]:
    from privet.dp.sgd.engine import PerSampleClipper
    from privet.dp.sgd.layers import check_supported
    from privet.dp.sgd.optimizer import DPOptimizer

    return PerSampleClipper, DPOptimizer, check_supported


def _check_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not trainable:
        raise UsageError("the model has no trainable parameters", "Unfreeze some parameters.")
    if updated != trainable:
        raise UsageError(
            "the optimizer does not update exactly the model's trainable parameters",
            "Build it as torch.optim.SGD(model.parameters(), ...) after freezing what should stay frozen.",
        )


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    *,
    target_epsilon: float,
    target_delta: float,
    epochs: float,
    max_grad_norm: float,
    batch_size: float,
    accountant: str = "pld",
    ledger: Ledger | None = None,
    tenant: str | None = None,
    dataset: str | None = None,
    physical_batch_size: int | None = None,
    randomness: Randomness | None = None,
    description: str | None = None,
) -> tuple[nn.Module, Any, TensorBatches | DataLoader, PrivacyPlan]:
    """Prepare a DP-SGD run: returns the clipping model, the noising optimizer, the Poisson loader and the plan.

    ``batch_size`` is the *expected* batch size (``sample_rate = batch_size / len(data)``); ``epochs`` sets the
    number of steps (``round(epochs / sample_rate)``). With ``ledger``, the budget of ``tenant``/``dataset`` is
    charged with the whole run's event before this returns; a refusal raises
    :class:`~privet.errors.BudgetExceededError` and leaves ``model`` untouched. ``physical_batch_size`` splits
    each logical batch into chunks of at most that many records (for memory), accumulated before the one
    noisy step. ``randomness`` (sampling and noise) defaults to the OS CSPRNG.
    """
    engine_cls, optimizer_cls, check_supported = _engine_api()
    if getattr(model, "_privet_clipper", None) is not None:
        raise UsageError("this model was already made private", "Build a fresh model for each DP-SGD run.")
    check_supported(model)
    _check_optimizer(model, optimizer)
    if physical_batch_size is not None and (
        isinstance(physical_batch_size, bool) or not isinstance(physical_batch_size, int) or physical_batch_size < 1
    ):
        raise UsageError(f"physical_batch_size must be a positive integer, got {physical_batch_size!r}")
    if ledger is not None and not (tenant and dataset):
        raise UsageError("charging the ledger needs the tenant and the data set", "Pass tenant= and dataset=.")
    records = _size(data)
    randomness = randomness if randomness is not None else Randomness.system()
    sampler = PoissonSampler.from_batch_size(records, batch_size, epochs=epochs, randomness=randomness)
    plan = plan_privacy(
        sampler,
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        max_grad_norm=max_grad_norm,
        accountant=accountant,
        physical_batch_size=physical_batch_size,
    )
    loader = _loader(data, sampler)

    if ledger is not None:
        what = description or f"DP-SGD training of a {type(model).__name__}"
        summary = (
            f"{what}: {plan.steps} steps, sample rate {plan.sample_rate:.4g}, noise {plan.noise_multiplier:.4g}, "
            f"clip {plan.max_grad_norm:g}"
        )
        after = ledger.charge(tenant, dataset, [plan.event()], summary)  # type: ignore[arg-type]
        plan = plan.with_ledger(
            f"{tenant}/{dataset}",
            f"charged before training; the budget has spent epsilon {after.epsilon:.4g} ({after.accountant}) "
            "including this run",
        )

    # The clipper rewires the model in place (its forward passes now record what clipping needs); the model object
    # stays the one the caller passed, and keeps the clipper alive.
    clipper = engine_cls(model, max_grad_norm=plan.max_grad_norm, loss_reduction="sum")
    model._privet_clipper = clipper  # type: ignore[assignment]
    private_optimizer = optimizer_cls(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.expected_batch_size,
        randomness=randomness,
    )
    return model, private_optimizer, loader, plan


# -- training ----------------------------------------------------------------------------------------------------
_REFRESH = 10  # progress-bar updates every this many steps


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's monitoring figures.

    ``train_loss`` and ``train_accuracy`` are computed on the (private) training batches *without noise*: they
    are for watching the run, not DP releases. ``epsilon`` is what the steps so far have spent.
    """

    epoch: int
    steps: int
    train_loss: float
    train_accuracy: float
    epsilon: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    plan: PrivacyPlan
    history: tuple[EpochRecord, ...]
    steps: int
    seconds: float
    epsilon_spent: float
    records_seen: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def _update_average(averaged: list[Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for mean, param in zip(averaged, model.parameters(), strict=True):
            mean.mul_(decay).add_(param.detach(), alpha=1 - decay)


def _chunks(batch: tuple[Tensor, ...], size: int | None) -> list[tuple[Tensor, ...]]:
    total = len(batch[0])
    if size is None or total <= size:
        return [batch]
    return [tuple(t[start : start + size] for t in batch) for start in range(0, total, size)]


def _progress(console: Console | None, total: int) -> Progress | None:
    if console is None:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def train_private(
    model: nn.Module,
    optimizer: Any,
    loader: TensorBatches | DataLoader,
    plan: PrivacyPlan,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    console: Console | None = None,
    epsilon_every: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    average: float | None = None,
    schedule: str = "constant",
) -> TrainResult:
    """Run every step of ``loader`` (one pass: ``plan.steps`` Poisson batches), grouped into epochs.

    ``model``/``optimizer``/``loader``/``plan`` are what :func:`make_private` returned. ``loss_fn`` must sum over
    the batch (default ``CrossEntropyLoss(reduction="sum")``): the engine clips each record's own gradient and the
    optimizer divides the noisy sum by the expected batch size. With ``console`` a progress bar (loss, accuracy,
    epsilon so far) is drawn there. Epsilon so far is recomputed at each epoch end, and every ``epsilon_every``
    steps when given (each costs about 0.1-1 s).

    ``average`` (e.g. 0.995) keeps an exponential moving average of the weights over the steps and leaves it in
    the model at the end: post-processing of the private iterates, so it costs no privacy, and it smooths out the
    noise DP-SGD adds (De et al. 2022). The decay warms up as ``min(average, (1 + t) / (10 + t))``.
    ``schedule`` ``"cosine"`` decays the learning rate to zero over the planned steps (the steps are fixed in advance
    by the privacy plan, so the schedule is too); ``"constant"`` keeps it.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    # Epochs: round(steps * q) of them (at least 1), ending at evenly spread steps.
    epochs = max(1, min(plan.steps, round(plan.epochs)))
    ends = {round(k * plan.steps / epochs): k for k in range(1, epochs + 1)}
    started = time.perf_counter()
    history: list[EpochRecord] = []
    epsilon = 0.0
    seen = 0
    loss_sum = correct = count = 0.0
    epoch_started = started
    bar = _progress(console, plan.steps)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("DP-SGD epoch 1", total=plan.steps, stats="")
    model.train()
    step = 0
    averaged = None if average is None else [p.detach().clone() for p in model.parameters()]
    if schedule not in ("constant", "cosine"):
        raise UsageError(f"learning-rate schedule {schedule!r} is not one of constant, cosine")
    base_rates = [group["lr"] for group in optimizer.param_groups]
    # Running sums stay on the device; they are read (a device sync) only when shown or recorded.
    loss_acc = correct_acc = None
    try:
        for step, batch in enumerate(loader, start=1):
            if device is not None:
                batch = tuple(t.to(device, non_blocking=True) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            if schedule == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * (step - 1) / plan.steps))
                for group, base in zip(optimizer.param_groups, base_rates, strict=True):
                    group["lr"] = base * factor
            if len(batch[0]):  # an empty Poisson batch has a zero clipped sum: the optimizer still noises it
                chunks = _chunks(batch, plan.physical_batch_size)
                for index, (x, y) in enumerate(chunks):
                    out = model(x)
                    loss = loss_fn(out, y)
                    loss.backward()
                    if index < len(chunks) - 1:
                        optimizer.virtual_step()
                    with torch.no_grad():
                        hits = (out.argmax(1) == y).sum()
                        loss_acc = loss.detach() if loss_acc is None else loss_acc + loss.detach()
                        correct_acc = hits if correct_acc is None else correct_acc + hits
                    count += len(y)
            seen += len(batch[0])
            optimizer.step()
            if averaged is not None:
                _update_average(averaged, model, min(average or 0.0, (1 + step) / (10 + step)))
            end_of_epoch = step in ends
            if end_of_epoch or (epsilon_every and step % epsilon_every == 0):
                epsilon = plan.epsilon_after(step)
            show = bar is not None and (end_of_epoch or step % _REFRESH == 0)
            if end_of_epoch or show:
                loss_sum = 0.0 if loss_acc is None else float(loss_acc)
                correct = 0.0 if correct_acc is None else float(correct_acc)
            if show and bar is not None and task is not None:
                epoch = min(epochs, 1 + sum(1 for end in ends if end < step))
                stats = f"loss {loss_sum / max(count, 1):.4f} acc {correct / max(count, 1):.3f} ε {epsilon:.3f}"
                bar.update(task, completed=step, description=f"DP-SGD epoch {epoch}/{epochs}", stats=stats)
            if end_of_epoch:
                now = time.perf_counter()
                record = EpochRecord(
                    epoch=ends[step],
                    steps=step,
                    train_loss=loss_sum / max(count, 1),
                    train_accuracy=correct / max(count, 1),
                    epsilon=epsilon,
                    seconds=now - epoch_started,
                )
                history.append(record)
                if on_epoch:
                    on_epoch(record)
                loss_acc = correct_acc = None
                count = 0.0
                epoch_started = now
    finally:
        if bar is not None:
            bar.stop()
        model.eval()
    if averaged is not None:
        with torch.no_grad():
            for param, mean in zip(model.parameters(), averaged, strict=True):
                param.copy_(mean)
    if step != plan.steps:
        raise UsageError(
            f"the loader ran {step} steps but the plan accounts for {plan.steps}",
            "Use the loader make_private returned, once.",
        )
    return TrainResult(
        plan=plan,
        history=tuple(history),
        steps=step,
        seconds=time.perf_counter() - started,
        epsilon_spent=epsilon,
        records_seen=seen,
    )
