"""The federated server: rounds over the clients that are connected, with deadlines, checkpoints and resume.

Clients pull (:mod:`privet.federated.client`): they ask for a task (``Task``, a long poll), train, and send
their update (``Submit``). The server's loop, per round:

1. waits until ``min_available`` clients are connected (a client counts as connected while it polls) or
   ``wait_for_clients`` passes (then the run stops with an error: nothing is aggregated from too few);
2. samples ``clients_per_round`` of them, reproducibly from ``(seed, round)`` and the sorted client ids;
3. waits until every sampled client has answered or ``round_deadline`` passes; clients that dropped or are late
   are left out (a late update is refused), and the round completes if at least ``min_clients`` answered,
   else it is run again with a new sample;
4. aggregates the updates in client-id order with the strategy, evaluates on ``eval_data`` if given, and
   **checkpoints** atomically (global model, strategy state, round) before the next round starts; a metrics
   line goes to ``metrics.jsonl``.

Started again after a crash (even SIGKILL), the server loads the checkpoint and continues with the next round;
with the same seeds and the same clients answering, the final model equals an uninterrupted run's.

With ``privacy`` in the config the run is DP-FedAvg (:class:`~privet.federated.privacy.ClientDP`, server-side
noise): the noise multiplier is calibrated so that all ``rounds`` together are (epsilon, delta)-DP for each
client; each connected client takes part in a round with probability ``q`` (Poisson sampling, what the accountant
assumes), drawn from the OS CSPRNG; the whole plan is checked against the ledger budget before the first round and
each round is charged before its model leaves the server (:mod:`privet.federated.budget`). Every round is
released, however few clients answered: running a round again until enough answer would bias the sample the
accounting assumes. Metrics report the run's epsilon so far and the budget's total. A DP run's noise is not
seeded, so it does not replay bit for bit. With ``privacy`` *and* ``secure_aggregation`` the clients add the noise
instead (:mod:`privet.federated.secagg.noise`): the server, which never sees a noiseless update nor any single
update, charges each round's zCDP, unsampled, for the number of clients whose noisy updates it summed.

Large models: the server holds one copy of the weights. Updates larger than ``spool_over_mb`` arrive, frame by
frame, in unnamed temporary files under ``state/spool`` (never whole in memory); each is checked (finite, its
norm) as it lands, and the round is aggregated block by block of coordinates, the model updated in place. That
needs a strategy that treats coordinates independently (FedAvg, FedProx, median, trimmed mean, with or without
norm bounds); others are refused for such models before the run starts. A 3 GB model thus needs about 3 GB of
server memory, whatever the number of clients.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from privet.dp.accounting import Event, ZCDPEvent
from privet.dp.ledger import Ledger
from privet.errors import FormatError, UsageError
from privet.federated.budget import RoundCharges, run_id
from privet.federated.config import FederationConfig
from privet.federated.local import initial_parameters, load_flat
from privet.federated.privacy import AdaptiveClipping, ClientDP, plan_rounds
from privet.federated.records import load_records
from privet.federated.secagg.runtime import SecureAggregation
from privet.federated.strategies import Strategy, make_strategy
from privet.files import atomic_file
from privet.models.training import accuracy
from privet.net.frames import Message, Spooled
from privet.net.rpc import Identity, Server

__all__ = ["Coordinator", "RoundRecord", "serve"]

log = logging.getLogger(__name__)
_BLOCK_BYTES = 256 << 20  # the rows of one block of coordinates, over all updates, when aggregating from files
POLL_SECONDS = 2.0  # how long a Task call waits for work before telling the client to ask again
_CONNECTED_SECONDS = 3 * POLL_SECONDS  # a client that has not polled for this long is not counted


@dataclass
class _Stage:
    """One exchange of a round: the server offers each of ``peers`` a message and collects one answer each."""

    round: int
    name: str
    peers: frozenset[str]
    offer: Callable[[str], Message]
    accept: Callable[[Message, str], Any]  # checks an answer; raises UsageError to refuse it
    answers: dict[str, Any] = field(default_factory=dict)


def _release(value: object) -> None:
    """Close what an answer keeps on disk (a spooled update), once nobody will use it."""
    for part in value if isinstance(value, tuple) else (value,):
        if isinstance(part, Spooled):
            part.close()
        elif isinstance(part, Message) and isinstance(part.payload, Spooled):
            part.payload.close()


@dataclass(frozen=True)
class RoundRecord:
    round: int
    sampled: list[str]
    answered: list[str]
    accuracy: float | None
    loss: float
    seconds: float
    epsilon: float | None = None  # with privacy: the run's epsilon (at its delta) after this round
    budget_epsilon: float | None = None  # with privacy: what the ledger budget has spent in all, this round included


class Coordinator:
    """The round logic, independent of the transport: :meth:`task` and :meth:`submit` are the RPC handlers."""

    def __init__(self, config: FederationConfig, ledger: Ledger | None = None) -> None:
        self.config = config
        self.spec = config.model.spec()
        settings = {k: v for k, v in config.strategy.items() if k != "name"}
        self.strategy: Strategy = make_strategy(config.strategy["name"], **settings)
        self.charges: RoundCharges | None = None
        if config.privacy is not None and config.secure_aggregation is None:
            self.strategy = self._private(self.strategy)
        torch.manual_seed(config.seed)
        self.flat = initial_parameters(self.spec)
        self.secure: SecureAggregation | None = None
        if config.secure_aggregation is not None:
            self.secure = SecureAggregation(config.secure_aggregation, self.strategy, config, self.flat.numel())
        self.round = 0  # the last completed round
        self.eval = load_records(config.eval_data, image_split="test") if config.eval_data else None
        self._lock = threading.Condition()
        self._seen: dict[str, float] = {}
        self._stage: _Stage | None = None
        self._done = False
        self._payload: memoryview | bytes = b""
        config.state.mkdir(parents=True, exist_ok=True)
        self.spool = config.state / "spool"
        self.spool.mkdir(exist_ok=True)
        if 4 * self.flat.numel() > self.spool_over and not self.strategy.coordinatewise:
            raise UsageError(
                f"a model of {4 * self.flat.numel() / 2**20:.0f} MiB is aggregated block by block from updates kept "
                f"on disk, and {self.strategy.name} needs every whole update in memory",
                "Use fedavg, fedprox, median or trimmed_mean, or raise spool_over_mb if the server has the memory.",
            )
        self._resume()
        if config.privacy is not None:
            if ledger is None:
                raise UsageError("a run with privacy settings needs the ledger to charge", "Pass the workspace's.")
            tenant, dataset = config.privacy.budget
            self.charges = RoundCharges(ledger, tenant, dataset, f"{config.name} ({run_id(config.state)})")
            if self.round < config.rounds:
                self.charges.check_plan(self._round_event(), config.rounds, self.round + 1)

    def _round_event(self, survivors: int | None = None) -> Event:
        """What a round releases: DP-FedAvg's subsampled Gaussian, or the distributed noise's zCDP for
        ``survivors`` clients (the most it can be for any survivor count when ``None``: for planning)."""
        noise = self.secure.noise if self.secure is not None else None
        if noise is not None:
            return ZCDPEvent(noise.planned_rho if survivors is None else noise.rho(survivors))
        assert isinstance(self.strategy, ClientDP)
        return self.strategy.event()

    def _private(self, base: Strategy) -> ClientDP:
        privacy = self.config.privacy
        assert privacy is not None and privacy.population is not None
        rate = self.config.client_rate
        noise, _ = plan_rounds(
            privacy.epsilon, privacy.delta, sample_rate=rate, rounds=self.config.rounds, accountant=privacy.accountant
        )
        adaptive = None if privacy.adaptive is None else AdaptiveClipping(**privacy.adaptive.model_dump())
        return ClientDP(
            noise_multiplier=noise, clip=privacy.clip, clients=privacy.population, sample_rate=rate, base=base,
            adaptive=adaptive,
        )  # fmt: skip

    @property
    def spool_over(self) -> int:
        return int(self.config.spool_over_mb * 2**20)

    # -- checkpoint ---------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.config.state / "checkpoint.pt"

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        try:
            state = torch.load(self.checkpoint_path, weights_only=True)
            flat, completed, strategy = state["model"], int(state["round"]), state["strategy"]
        except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError, EOFError, TypeError):
            raise FormatError(
                f"{self.checkpoint_path} is not a privet checkpoint", "Move it away to start the run afresh."
            ) from None
        if state.get("name") != self.config.name or flat.numel() != self.flat.numel():
            raise UsageError(f"{self.checkpoint_path} belongs to another run", "Use a new state folder.")
        self.flat, self.round = flat, completed
        self.strategy.load_state_dict(strategy)
        log.info("resumed after round %d", completed)

    def _checkpoint(self) -> None:
        state = {
            "name": self.config.name,
            "round": self.round,
            "model": self.flat,
            "strategy": self.strategy.state_dict(),
        }
        with atomic_file(self.checkpoint_path) as handle:
            torch.save(state, handle)  # straight to the file: no second copy of a large model in memory

    # -- RPC handlers -------------------------------------------------------------------------------------------
    def task(self, message: Message, peer: str) -> Message:
        deadline = time.monotonic() + min(float(message.header.get("wait", POLL_SECONDS)), POLL_SECONDS)
        with self._lock:
            self._seen[peer] = time.monotonic()
            self._lock.notify_all()
            while True:
                if self._done:
                    return Message("done", {"round": self.round})
                stage = self._stage
                if stage is not None and peer in stage.peers and peer not in stage.answers:
                    return stage.offer(peer)
                left = deadline - time.monotonic()
                if left <= 0:
                    return Message("wait", {"round": self.round})
                self._lock.wait(left)
                self._seen[peer] = time.monotonic()

    def submit(self, message: Message, peer: str) -> Message:
        header = message.header
        with self._lock:
            stage = self._stage
            if (stage is None or header.get("round") != stage.round or header.get("stage") != stage.name
                    or peer not in stage.peers):  # fmt: skip
                _release(message)
                what = f"round {header.get('round')} ({header.get('stage')})"
                raise UsageError(f"{what} is not open for {peer}: the answer is too late")
            if peer in stage.answers:
                _release(message)
                raise UsageError(f"{peer} already answered round {stage.round} ({stage.name})")
        try:
            value = stage.accept(message, peer)  # outside the lock: a large update is checked while others train
        except BaseException:
            _release(message)
            raise
        with self._lock:
            if self._stage is not stage or peer in stage.answers:
                _release(value)
                raise UsageError(f"round {stage.round} ({stage.name}) closed before the answer of {peer} was checked")
            stage.answers[peer] = value
            self._lock.notify_all()
        return Message("ack", {"round": stage.round, "stage": stage.name})

    def run_stage(
        self,
        round_: int,
        name: str,
        peers: list[str],
        offer: Callable[[str], Message],
        accept: Callable[[Message, str], Any],
        deadline: float,
    ) -> dict[str, Any]:
        """Offer ``peers`` their messages and collect their checked answers until all answered or ``deadline``
        seconds passed; late answers are refused."""
        with self._lock:
            stage = _Stage(round_, name, frozenset(peers), offer, accept)
            self._stage = stage
            self._lock.notify_all()
            end = time.monotonic() + deadline
            while len(stage.answers) < len(stage.peers) and time.monotonic() < end:
                self._lock.wait(min(0.5, max(end - time.monotonic(), 0.01)))
            self._stage = None
            return dict(stage.answers)

    def task_message(self, round_: int, stage: str, extra: dict[str, Any] | None = None) -> Message:
        """The training task of ``round_``: the model (from the server's own memory) and how to train it."""
        header = {
            "round": round_,
            "stage": stage,
            "model": self.spec.to_metadata(),
            "local": self.config.local.model_dump(),
            "config": self.strategy.client_config(),
            "seed": self.config.seed,
            "deadline": self.config.round_deadline,
            **(extra or {}),
        }
        return Message("task", header, self._payload)

    def _accept(self, message: Message, peer: str) -> tuple[Tensor | Spooled, int, float, float]:
        """A plain round's update: the right size, finite, from at least one example; with its norm."""
        header, payload = message.header, message.payload
        size = payload.nbytes if isinstance(payload, Spooled) else len(payload)
        if size != 4 * self.flat.numel():
            raise UsageError(f"the update of {peer} does not fit the model")
        examples = int(header.get("examples", 0))
        if examples < 1:
            raise UsageError(f"the update of {peer} claims no training examples")
        if isinstance(payload, Spooled):
            update: Tensor | Spooled = payload
            finite, norm = _scan(payload)
        else:
            update = torch.frombuffer(payload, dtype=torch.float32)  # decode() gave a fresh bytearray: no copy
            finite, norm = bool(torch.isfinite(update).all()), float(torch.linalg.vector_norm(update))
        if not finite:
            raise UsageError(f"the update of {peer} is not finite")
        return update, examples, float(header.get("loss", 0.0)), norm

    # -- the loop -----------------------------------------------------------------------------------------------
    def _connected(self) -> list[str]:
        now = time.monotonic()
        return sorted(c for c, seen in self._seen.items() if now - seen <= _CONNECTED_SECONDS)

    def _sample(self, round_: int, connected: list[str]) -> list[str]:
        if isinstance(self.strategy, ClientDP):
            return [connected[i] for i in self.strategy.sample(round_, among=len(connected))]
        rng = np.random.default_rng([self.config.seed, round_])
        count = min(self.config.clients_per_round, len(connected))
        return sorted(rng.choice(connected, size=count, replace=False).tolist())

    def run_round(self, round_: int) -> RoundRecord | None:
        """Run ``round_`` once; ``None`` if too few clients answered in time (the caller runs it again)."""
        started = time.monotonic()
        with self._lock:
            limit = started + self.config.wait_for_clients
            while len(self._connected()) < self.config.available:
                if time.monotonic() >= limit:
                    wanted, waited = self.config.available, self.config.wait_for_clients
                    raise UsageError(
                        f"fewer than {wanted} clients connected within {waited:g} s",
                        "Start more clients, or lower min_available.",
                    )
                self._lock.wait(0.2)
            sampled = self._sample(round_, self._connected())
        # The model's own memory, not a copy: ``self.flat`` is replaced, never changed in place, while it is sent.
        self._payload = memoryview(self.flat.numpy()).cast("B")
        if self.secure is not None:
            return self._secure_round(round_, sampled, started)
        updates = self.run_stage(round_, "train", sampled, lambda _peer: self.task_message(round_, "train"),
                                 self._accept, self.config.round_deadline)  # fmt: skip
        answered = sorted(updates)
        if len(answered) < self.config.min_clients and self.charges is None:
            log.warning("round %d: %d of %d answered, fewer than %d: running it again", round_, len(answered),
                        len(sampled), self.config.min_clients)  # fmt: skip
            for update in updates.values():
                if isinstance(update[0], Spooled):
                    update[0].close()
            return None
        weights = torch.tensor([float(updates[c][1]) for c in answered])
        epsilon = budget_epsilon = None
        if self.charges is not None:  # charged before the round's model exists, let alone leaves
            assert isinstance(self.strategy, ClientDP)
            event = self.strategy.event()
            detail = (f"DP-FedAvg, noise multiplier {event.noise_multiplier:.4g}, client rate "
                      f"{event.sample_rate:.4g}, clip {self.strategy.clip:.4g}")  # fmt: skip
            budget_epsilon, epsilon = self._charge(round_, event, detail)
        rows = [updates[c][0] for c in answered]
        if any(isinstance(r, Spooled) for r in rows):
            try:
                self._aggregate_in_blocks(rows, weights, torch.tensor([updates[c][3] for c in answered]))  # type: ignore[arg-type]
            finally:
                for row in rows:
                    row.close()  # type: ignore[union-attr]
        else:
            matrix = torch.stack(rows) if rows else torch.zeros(0, self.flat.numel())  # type: ignore[arg-type]
            self.flat = self.strategy.aggregate(self.flat, matrix, weights).float()
        loss = float(np.average([updates[c][2] for c in answered], weights=weights.numpy())) if answered else 0.0
        return self._complete(RoundRecord(round_, sampled, answered, None, loss, time.monotonic() - started, epsilon,
                                          budget_epsilon))  # fmt: skip

    def _secure_round(self, round_: int, sampled: list[str], started: float) -> RoundRecord | None:
        """A round whose updates the server only ever sees summed (:mod:`privet.federated.secagg.runtime`)."""
        assert self.secure is not None
        outcome = self.secure.run(self, round_, sampled)
        if outcome is None or len(outcome.answered) < self.config.min_clients:
            log.warning("round %d: secure aggregation did not complete: running it again", round_)
            return None
        epsilon = budget_epsilon = None
        if self.charges is not None and self.secure.noise is not None:  # charged before the new model exists
            noise, count = self.secure.noise, len(outcome.answered)
            detail = (f"secure aggregation with distributed discrete Gaussian noise, sigma {noise.sigma:.6g} grid "
                      f"steps of {noise.gamma:.4g} from each of {count} clients, clip {noise.clip:.4g}")  # fmt: skip
            budget_epsilon, epsilon = self._charge(round_, self._round_event(count), detail)
        self.flat = self.strategy.apply(self.flat, outcome.mean).float()
        return self._complete(RoundRecord(round_, sampled, outcome.answered, None, outcome.loss,
                                          time.monotonic() - started, epsilon, budget_epsilon))  # fmt: skip

    def _complete(self, record: RoundRecord) -> RoundRecord:
        """Evaluate, checkpoint and log a round whose new model is in place."""
        self.round = record.round
        record = dataclasses.replace(record, accuracy=self.evaluate())
        self._checkpoint()
        with (self.config.state / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(record.__dict__) + "\n")
        return record

    def _aggregate_in_blocks(self, rows: list[Spooled], weights: Tensor, norms: Tensor) -> None:
        """The round's aggregate from spooled updates, a block of coordinates at a time, into ``self.flat``.

        In place: the round is closed, so nothing sends this model any more, and a copy would double the memory.
        """
        scale = torch.ones(len(rows))
        if self.strategy.norm_bound is not None:
            scale = (self.strategy.norm_bound / norms.clamp_min(1e-12)).clamp(max=1.0)
        step = max(1 << 16, _BLOCK_BYTES // (4 * len(rows)))
        for start in range(0, self.flat.numel(), step):
            stop = min(start + step, self.flat.numel())
            block = torch.stack([
                torch.frombuffer(row.read(4 * start, 4 * (stop - start)), dtype=torch.float32) for row in rows
            ]) * scale[:, None]  # fmt: skip
            current = self.flat[start:stop]
            current.copy_(self.strategy.apply(current, self.strategy.combine(block, weights)))

    def _charge(self, round_: int, event: Event, detail: str) -> tuple[float, float]:
        """Charge ``round_`` to the ledger; the budget's epsilon after it and the run's own so far."""
        assert self.charges is not None and self.config.privacy is not None
        budget = self.charges.charge(round_, event, detail)
        return budget, self.charges.run_epsilon(self.config.privacy.delta, self.config.privacy.accountant)

    def privacy_summary(self) -> dict[str, object] | None:
        """The run's client-level DP so far (``None`` without privacy): its epsilon and the ledger's total."""
        if self.charges is None or self.config.privacy is None:
            return None
        privacy = self.config.privacy
        status = self.charges.ledger.status(self.charges.tenant, self.charges.dataset)
        summary: dict[str, object] = {
            "epsilon": self.charges.run_epsilon(privacy.delta, privacy.accountant),
            "delta": privacy.delta,
            "rounds": self.round,
            "ledger": privacy.ledger,
            "budget_epsilon": status.spent.epsilon if status.spent is not None else 0.0,
        }
        noise = self.secure.noise if self.secure is not None else None
        if noise is not None:
            summary.update(noise="distributed", client_sigma=noise.sigma, grid_step=noise.gamma, clip=noise.clip,
                           min_clients=noise.minimum)  # fmt: skip
        elif isinstance(self.strategy, ClientDP):
            event = self.strategy.event()
            summary.update(noise="server", noise_multiplier=event.noise_multiplier, client_rate=event.sample_rate,
                           clip=self.strategy.clip)  # fmt: skip
        return summary

    def evaluate(self) -> float | None:
        """Test accuracy of the current global model on ``eval_data`` (``None`` without it)."""
        if self.eval is None:
            return None
        model = self.spec.build()  # built when needed: the server keeps one copy of the weights, the flat vector
        load_flat(model, self.flat)
        return accuracy(model, *self.eval)

    def run(self, progress: Callable[[RoundRecord], None] | None = None) -> list[RoundRecord]:
        """Run the remaining rounds; then tell polling clients that training is done."""
        records = []
        try:
            while self.round < self.config.rounds:
                record = self.run_round(self.round + 1)
                if record is not None:
                    records.append(record)
                    if progress is not None:
                        progress(record)
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()
        return records


def serve(
    config: FederationConfig,
    passphrase: bytes,
    *,
    ledger: Ledger | None = None,
    progress: Callable[[RoundRecord], None] | None = None,
    on_listen: Callable[[int], None] | None = None,
) -> tuple[Coordinator, list[RoundRecord]]:
    """Run the federation of ``config`` to its last round over mutual TLS; returns the coordinator and rounds.

    ``ledger`` is charged each round when the config has privacy settings (required then). ``on_listen(port)`` is
    called once the server listens (useful with port 0, where the OS picks).
    """
    coordinator = Coordinator(config, ledger)
    host, _, port = config.listen.rpartition(":")
    identity = Identity.load(config.party, passphrase)
    handlers = {"Task": coordinator.task, "Submit": coordinator.submit}
    server = Server(
        identity, handlers, host=host or "127.0.0.1", port=int(port), spool=coordinator.spool,
        spool_over=coordinator.spool_over,
    )  # fmt: skip
    with server:
        if on_listen is not None:
            on_listen(server.port)
        records = coordinator.run(progress)
        time.sleep(POLL_SECONDS)  # let polling clients hear that training is done
    return coordinator, records


def _scan(payload: Spooled, block: int = 64 << 20) -> tuple[bool, float]:
    """Whether a spooled update is finite, and its L2 norm, reading it back a block at a time."""
    total = 0.0
    for start in range(0, payload.nbytes, block):
        values = torch.frombuffer(payload.read(start, min(block, payload.nbytes - start)), dtype=torch.float32)
        if not torch.isfinite(values).all():
            return False, math.inf
        total += float(torch.linalg.vector_norm(values, dtype=torch.float64)) ** 2
    return True, math.sqrt(total)
