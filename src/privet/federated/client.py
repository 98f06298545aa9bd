"""The federated client: poll the server for a task, train on the party's own records, send the update back.

Only the update travels (with secure aggregation, only its masked form: :mod:`privet.federated.secagg.runtime`);
the records never leave. A connection failure (server restarting, network down) is
retried with exponential backoff from 0.5 s up to 8 s, for at most ``give_up`` seconds in a row; a refused call
(a late update, a revoked certificate) is not retried blindly: a revoked or unknown party stops at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from privet.errors import PrivetError
from privet.federated.local import LocalSettings, train_locally
from privet.federated.secagg.runtime import ClientSession
from privet.models.reference import ModelSpec
from privet.net.frames import Message
from privet.net.rpc import Client, Identity, RemoteError

__all__ = ["ClientReport", "run_client"]

log = logging.getLogger(__name__)
_BACKOFF_START, _BACKOFF_MAX = 0.5, 8.0


@dataclass(frozen=True)
class ClientReport:
    party: str
    rounds: list[int]


def _fatal(error: RemoteError) -> bool:
    return any(code in error.message for code in ("PERMISSION_DENIED", "UNAUTHENTICATED", "UNTRUSTED_SERVER"))


def run_client(
    address: str,
    identity: Identity,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    give_up: float = 120.0,
    malicious_server: bool = False,
) -> ClientReport:
    """Take part in the federation at ``address`` until the server says training is done.

    ``malicious_server``: take part only in secure rounds hardened against a lying server (signed keys and the
    consistency round; :mod:`privet.federated.secagg.attest`).
    """
    party = identity.party
    done: list[int] = []
    backoff, failing_since = _BACKOFF_START, None
    session = ClientSession(identity, malicious=malicious_server)
    with Client(address, identity) as client:
        while True:
            try:
                reply = client.call("Task", Message("poll", {"wait": 2.0}), timeout=30)
                backoff, failing_since = _BACKOFF_START, None
                if reply.kind == "done":
                    return ClientReport(party, done)
                if reply.kind.startswith("secagg-"):  # a secure round's key, share or unmask exchange
                    try:
                        answer = session.answer(reply)
                    except PrivetError as exc:  # restarted mid-round, or refused the server's request: out of it
                        log.warning("%s", exc.message)
                        continue
                    client.call("Submit", answer, timeout=60)
                    continue
                if reply.kind != "task":
                    continue
                header = reply.header
                spec = ModelSpec.from_metadata(header["model"])
                flat = torch.frombuffer(reply.payload, dtype=torch.float32)  # a fresh bytearray: no copy
                result = train_locally(
                    spec, flat, x, y, LocalSettings(**header["local"]), header["config"],
                    seed=int(header["seed"]), round_=int(header["round"]), client=party,
                )  # fmt: skip
                if "secagg" in header:
                    try:
                        update = session.masked_update(header, result.update, result.examples, result.loss)
                    except PrivetError as exc:
                        log.warning("%s", exc.message)
                        continue
                else:
                    update = Message(
                        "update",
                        {"round": header["round"], "stage": header.get("stage", "train"), "examples": result.examples,
                         "loss": result.loss},
                        memoryview(result.update.float().numpy()),  # sent from the tensor's memory, no copy
                    )  # fmt: skip
                client.call("Submit", update, timeout=float(header.get("deadline", 60)) + 30)
                done.append(int(header["round"]))
            except RemoteError as exc:
                if _fatal(exc):
                    raise
                if "ABORTED" in exc.message:  # e.g. too late for the round: ask for the next task
                    log.warning("%s", exc.message)
                    continue
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > give_up:
                    raise RemoteError(
                        f"the server at {address} has not answered for {give_up:g} s (last: {exc.message})",
                        "Check the address, that the server runs, and that this party belongs to its federation.",
                    ) from None
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
