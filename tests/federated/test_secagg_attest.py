"""Secure aggregation against a malicious server: signed keys, the consistency round, no downgrade.

The server here is the test, relaying the clients' real messages (ClientSession, as the federated client runs
it) and tampering with them the way a lying server would.
"""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest
import torch

from privet.errors import IntegrityError
from privet.federated.provision import Provisioned, provision
from privet.federated.secagg.plan import plan
from privet.federated.secagg.protocol import PublicKeys, Round, Server
from privet.federated.secagg.runtime import ClientSession
from privet.net.frames import Message
from privet.net.rpc import Identity

PARTIES = ["p0", "p1", "p2", "p3", "p4"]
LENGTH = 8


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    return provision(tmp_path_factory.mktemp("attest") / "fed", "attest", PARTIES)


def _sessions(fed: Provisioned, **options: bool) -> list[ClientSession]:
    return [
        ClientSession(Identity.load(fed.directory / "clients" / p, fed.passphrases[p].encode()), **options)
        for p in PARTIES
    ]


def _keys(sessions: list[ClientSession], roster: list[str] | None = PARTIES, **changes: object) -> tuple:
    secure = Round(plan(len(PARTIES), colluding=1, dropout=0.2, malicious=True), LENGTH, 19)
    setup = {"round": 1, "round_id": secure.round_id.hex(), "clients": len(PARTIES), "degree": secure.plan.degree,
             "threshold": secure.plan.threshold, "bits": 16, "clip": 1.0, "modulus_bits": 19, "length": LENGTH,
             "stage": "keys", **({"roster": roster} if roster is not None else {}), **changes}  # fmt: skip
    adverts = {i: s.answer(Message("secagg-keys", {**setup, "index": i})).header for i, s in enumerate(sessions)}
    return secure, adverts


def _relay(adverts: dict[int, dict], secure: Round) -> tuple[Server, dict[int, dict[str, list[str]]]]:
    server = Server(secure)
    keys = {i: PublicKeys(bytes.fromhex(a["sharing"]), bytes.fromhex(a["masking"])) for i, a in adverts.items()}
    routed = server.collect_keys(keys)
    peers = {i: {str(j): [adverts[j]["sharing"], adverts[j]["masking"], adverts[j]["certificate"],
                          adverts[j]["signature"]] for j in routed[i]} for i in routed}  # fmt: skip
    return server, peers


def _through_mask(sessions: list[ClientSession], secure: Round, adverts: dict[int, dict]) -> tuple:
    server, peers = _relay(adverts, secure)
    shares = {i: s.answer(Message("secagg-share", {"round": 1, "stage": "share", "peers": peers[i]})).header
              for i, s in enumerate(sessions)}  # fmt: skip
    sealed = {i: {int(j): base64.b64decode(b) for j, b in h["sealed"].items()} for i, h in shares.items()}
    relayed = server.collect_shares(sealed, {i: bytes.fromhex(h["commitment"]) for i, h in shares.items()})
    masked = {}
    for i, s in enumerate(sessions):
        task = {"round": 1, "stage": "mask", "secagg": {"sealed": {str(j): base64.b64encode(b).decode()
                for j, b in relayed[i].items()}, "shared": sorted(server.shared)}}  # fmt: skip
        message = s.masked_update(task, torch.full((LENGTH,), 0.1 * (i + 1)), 10, 0.5)
        masked[i] = np.frombuffer(bytes(message.payload), dtype=np.uint8)
    return server


def _confirm(sessions: list[ClientSession], survivors: list[int]) -> dict[str, str]:
    return {str(i): sessions[i].answer(Message("secagg-confirm", {"round": 1, "stage": "confirm",
                                                                   "survivors": survivors})).header["signature"]
            for i in survivors}  # fmt: skip


def test_an_honest_round_confirms_and_unmasks(federation: Provisioned) -> None:
    sessions = _sessions(federation, malicious=True)
    secure, adverts = _keys(sessions)
    assert all(a["certificate"] and a["signature"] for a in adverts.values())
    _through_mask(sessions, secure, adverts)
    survivors = [0, 1, 2, 3, 4]
    signatures = _confirm(sessions, survivors)
    unmask = {"round": 1, "stage": "unmask", "survivors": survivors, "dropped": [], "signatures": signatures}
    answers = [s.answer(Message("secagg-unmask", unmask)).header["answers"] for s in sessions]
    assert all(answers)


def test_a_substituted_key_is_refused(federation: Provisioned) -> None:
    sessions = _sessions(federation)
    secure, adverts = _keys(sessions)
    _, peers = _relay(adverts, secure)
    victim, impostor = 0, next(int(j) for j in peers[0])
    forged = os.urandom(32).hex()  # the server's own key in place of the neighbour's
    peers[victim][str(impostor)][1] = forged
    with pytest.raises(IntegrityError, match="not signed by it"):
        sessions[victim].answer(Message("secagg-share", {"round": 1, "stage": "share", "peers": peers[victim]}))
    # A certificate of another party presented for the impostor's index is refused too.
    sessions = _sessions(federation)
    secure, adverts = _keys(sessions)
    _, peers = _relay(adverts, secure)
    other = next(j for j in range(len(PARTIES)) if j not in (victim, impostor))
    peers[victim][str(impostor)][2] = adverts[other]["certificate"]
    with pytest.raises(IntegrityError, match="names another party"):
        sessions[victim].answer(Message("secagg-share", {"round": 1, "stage": "share", "peers": peers[victim]}))


def test_different_survivor_sets_cannot_both_be_confirmed(federation: Provisioned) -> None:
    sessions = _sessions(federation)
    secure, adverts = _keys(sessions)
    _through_mask(sessions, secure, adverts)
    # The server tells client 0 that client 4 dropped (to get its key shares) and the others it survived.
    told_zero = _confirm(sessions, [0, 1, 2, 3])
    told_rest = {**_confirm(sessions, [1, 2, 3, 4])}
    request = {"round": 1, "stage": "unmask", "survivors": [0, 1, 2, 3], "dropped": [4],
               "signatures": {**told_zero, **{k: v for k, v in told_rest.items() if k not in told_zero}}}  # fmt: skip
    with pytest.raises(IntegrityError, match="differ from the set this client confirmed"):
        sessions[1].answer(Message("secagg-unmask", request))
    with pytest.raises(IntegrityError, match="fewer than t"):
        sessions[0].answer(Message("secagg-unmask", {**request, "signatures": {"0": told_zero["0"]}}))


def test_a_guarded_client_refuses_a_downgraded_round(federation: Provisioned) -> None:
    with pytest.raises(IntegrityError, match="without signed keys"):
        _keys(_sessions(federation, malicious=True), roster=None)
    with pytest.raises(IntegrityError, match="t <= k/2"):
        _keys(_sessions(federation, malicious=True), threshold=2)
    with pytest.raises(IntegrityError, match="roster does not put this client"):
        _keys(_sessions(federation), roster=list(reversed(PARTIES)))
