"""Federated simulation: many clients on one machine (or a Ray cluster), running the production client code.

Each round samples ``per_round`` of ``clients`` clients (reproducibly from the seed and the round), trains each
with :func:`privet.federated.local.train_locally` (exactly what a real client runs) on its share of the data
(:mod:`privet.data.partition`), and aggregates with a strategy (:mod:`privet.federated.strategies`, client-level
DP included). Clients are created for the round they take part in and dropped after it, so memory does not grow
with the population: a client is its index into the partition, nothing more. Images may be passed as 8-bit
pixels (``uint8``, e.g. ``load_mnist_like(..., pixels=True)``): each client turns its own rows into floats in
[0, 1], and the copy every client reads from is four times smaller.

Executors:

- ``serial``: in this process, one client after another (small runs, tests, debugging);
- ``ray``: a round's sampled clients are split into one Ray task per CPU of the local Ray instance or the
  cluster (``ray://host:port``), each training its clients in turn; the data set goes into Ray's object store
  once and tasks read their clients' rows from it by index.

``attack`` makes some clients adversarial (for measuring robust aggregation): ``sign_flip`` sends ``-scale``
times the honest update, ``scale`` sends ``scale`` times it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from privet.data.images import scaled
from privet.data.partition import partition
from privet.errors import UsageError
from privet.federated import aggregate
from privet.federated.local import LocalResult, LocalSettings, flat_parameters, load_flat, train_locally
from privet.federated.strategies import Strategy
from privet.models.reference import ModelSpec
from privet.models.training import accuracy as test_accuracy

__all__ = ["Attack", "SimulationResult", "SimulationRound", "simulate"]


@dataclass(frozen=True)
class Attack:
    """Clients ``malicious`` (indices) replace their update by ``-scale`` (sign_flip) or ``scale`` times it."""

    kind: str
    malicious: frozenset[int]
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("sign_flip", "scale"):
            raise UsageError(f"attack {self.kind!r} is not sign_flip or scale")

    def apply(self, client: int, update: Tensor) -> Tensor:
        if client not in self.malicious:
            return update
        return update * (-self.scale if self.kind == "sign_flip" else self.scale)


@dataclass(frozen=True)
class SimulationRound:
    round: int
    clients: list[int]
    accuracy: float | None
    loss: float
    seconds: float


@dataclass
class SimulationResult:
    model: Tensor
    rounds: list[SimulationRound] = field(default_factory=list)
    startup_seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.rounds[-1].accuracy if self.rounds else None


def _train_share(
    spec: ModelSpec,
    flat: Tensor,
    data: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    settings: LocalSettings,
    config: dict[str, Any],
    seed: int,
    round_: int,
    client: int,
) -> LocalResult:
    """Train client ``client`` on its rows of ``data`` (copied out: the shared arrays stay untouched)."""
    x, y = data[0][rows], torch.from_numpy(data[1][rows])
    x = scaled(x) if x.dtype == np.uint8 else torch.from_numpy(x)
    return train_locally(spec, flat, x, y, settings, config, seed=seed, round_=round_, client=str(client))


@dataclass(frozen=True)
class Summing:
    """Clients' updates are summed where they are trained (weighted by examples, each norm-bounded first)."""

    norm_bound: float | None


@dataclass
class _Outcomes:
    """A round's (or a task's) results: row ``i`` of ``updates`` for its ``i``-th client or, when the strategy
    only averages, the one row ``sum_i examples_i * update_i``."""

    updates: np.ndarray  # [clients or 1, parameters], float32
    examples: list[int]
    losses: list[float]

    def add(self, other: _Outcomes, row: int) -> None:
        if len(self.updates) == 1:
            self.updates += other.updates
        else:
            self.updates[row : row + len(other.examples)] = other.updates
        self.examples += other.examples
        self.losses += other.losses


def _train_rows(
    spec: ModelSpec,
    flat: Tensor,
    data: tuple[np.ndarray, np.ndarray],
    batch: list[tuple[int, np.ndarray]],
    settings: LocalSettings,
    config: dict[str, Any],
    seed: int,
    round_: int,
    summed: Summing | None = None,
) -> _Outcomes:
    """The clients of ``batch`` (client, rows) one after another: each update a row of one matrix or, with
    ``summed``, norm-bounded and added into one weighted sum (what an averaging strategy's combine needs)."""
    rows_out = 1 if summed is not None else len(batch)
    outcomes = _Outcomes(np.zeros((rows_out, flat.numel()), dtype=np.float32), [], [])
    for i, (client, rows) in enumerate(batch):
        result = _train_share(spec, flat, data, rows, settings, config, seed, round_, client)
        if summed is None:
            outcomes.updates[i] = result.update.numpy()
        else:
            update = result.update
            if summed.norm_bound is not None:
                update = aggregate.clip_norms(update[None], summed.norm_bound)[0]
            outcomes.updates[0] += result.examples * update.numpy()
        outcomes.examples.append(result.examples)
        outcomes.losses.append(result.loss)
    return outcomes


def _train_on_worker(*args: Any) -> _Outcomes:
    # One task per CPU: more torch threads would only compete with the other tasks.
    # Ray resolves the object references passed as arguments before the task runs.
    torch.set_num_threads(1)
    return _train_rows(*args)


Executor = Callable[[list[int], Tensor, int, dict[str, Any], Summing | None], _Outcomes]


def _serial(
    spec: ModelSpec,
    data: tuple[np.ndarray, np.ndarray],
    shares: Sequence[np.ndarray],
    settings: LocalSettings,
    seed: int,
) -> Executor:
    def run(clients: list[int], flat: Tensor, round_: int, config: dict[str, Any], summed: Summing | None) -> _Outcomes:
        batch = [(c, shares[c]) for c in clients]
        return _train_rows(spec, flat, data, batch, settings, config, seed, round_, summed)

    return run


def _ray(
    spec: ModelSpec,
    data: tuple[np.ndarray, np.ndarray],
    shares: Sequence[np.ndarray],
    settings: LocalSettings,
    seed: int,
    address: str | None,
) -> Executor:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray", "pip install 'privet[sim]', or use --executor serial.") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # Once, as numpy arrays: every task maps the same copy in the object store without deserialising it
    # (torch tensors would be copied whole into every task) and copies out only its client's rows.
    stored = ray.put(data)
    remote = ray.remote(num_cpus=1)(_train_on_worker)
    # A round's clients go out as one task per CPU, each training its share of them in turn: a task per client
    # would pay Ray's scheduling and the model's transfer a hundred times a round for a few milliseconds of work.
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(clients: list[int], flat: Tensor, round_: int, config: dict[str, Any], summed: Summing | None) -> _Outcomes:
        model = ray.put(flat)
        parts = [part for part in np.array_split(np.asarray(clients), slots) if len(part)]
        futures = [
            remote.remote(
                spec, model, stored, [(int(c), shares[c]) for c in part], settings, config, seed, round_, summed
            )
            for part in parts
        ]
        # Each task's result is read in place from the object store and added into the round's, then released.
        rows_out = 1 if summed is not None else len(clients)
        outcomes, row = _Outcomes(np.zeros((rows_out, flat.numel()), dtype=np.float32), [], []), 0
        while futures:
            part = ray.get(futures.pop(0))
            outcomes.add(part, row)
            row += len(part.examples)
        return outcomes

    return run


def simulate(
    spec: ModelSpec,
    x: Tensor,
    y: Tensor,
    strategy: Strategy,
    *,
    clients: int,
    per_round: int,
    rounds: int,
    scheme: str = "iid",
    settings: LocalSettings | None = None,
    seed: int = 0,
    test: tuple[Tensor, Tensor] | None = None,
    executor: str = "serial",
    address: str | None = None,
    attack: Attack | None = None,
    progress: Callable[[SimulationRound], None] | None = None,
) -> SimulationResult:
    """Run ``rounds`` rounds of ``per_round`` sampled clients out of ``clients``; see the module docstring."""
    if not 1 <= per_round <= clients:
        raise UsageError(f"per_round must be between 1 and clients ({clients}), got {per_round}")
    started = time.perf_counter()
    settings = settings or LocalSettings()
    shares = partition(y.numpy(), clients, scheme, seed=seed)
    torch.manual_seed(seed)
    model = spec.build()
    flat = flat_parameters(model)
    data = (x.numpy(), y.numpy())  # views, no copy
    if executor == "serial":
        run = _serial(spec, data, shares, settings, seed)
    elif executor == "ray":
        run = _ray(spec, data, shares, settings, seed, address)
    else:
        raise UsageError(f"executor {executor!r} is not serial or ray")
    # A strategy that only averages (FedAvg's combine: FedAvg, FedProx, FedAvgM, FedAdam, ...) needs the weighted
    # sum of the updates, not the updates: executors add them up where they train them, and a round moves one
    # vector per task instead of one per client. Attacks replace single updates, so they keep every row.
    averages = type(strategy).combine is Strategy.combine and attack is None
    summed = Summing(strategy.norm_bound) if averages else None
    result = SimulationResult(flat, startup_seconds=time.perf_counter() - started)
    for round_ in range(1, rounds + 1):
        began = time.perf_counter()
        sampled = sorted(np.random.default_rng([seed, round_]).choice(clients, per_round, replace=False).tolist())
        outcomes = run(sampled, flat, round_, strategy.client_config(), summed)
        weights = torch.tensor([float(e) for e in outcomes.examples])
        if summed is not None:  # the weighted mean from the executors' weighted sums: FedAvg's combine
            flat = strategy.apply(flat, torch.from_numpy(outcomes.updates[0]) / weights.sum()).float()
        else:
            updates = torch.from_numpy(outcomes.updates)
            if attack is not None:
                for i, client in enumerate(sampled):
                    updates[i] = attack.apply(client, updates[i])
            flat = strategy.aggregate(flat, updates, weights).float()
        accuracy = None
        if test is not None:
            load_flat(model, flat)
            accuracy = test_accuracy(model, *test)
        loss = float(np.average(outcomes.losses, weights=weights.numpy()))
        record = SimulationRound(round_, sampled, accuracy, loss, time.perf_counter() - began)
        result.rounds.append(record)
        result.model = flat
        if progress is not None:
            progress(record)
    return result
