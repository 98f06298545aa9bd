"""SecAgg+ rounds: the unmasked sum equals the survivors' plain sum exactly, whoever drops when; a masked input
looks uniform; keys and masks are fresh each round; a client refuses requests that would unmask someone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from privet.crypto import shamir
from privet.errors import FormatError, IntegrityError, UsageError
from privet.federated.secagg.plan import neighbours, plan
from privet.federated.secagg.protocol import Client, Round, Server, Unmasking
from privet.federated.secagg.runtime import Journal


def run_round(
    round_: Round,
    inputs: dict[int, np.ndarray],
    *,
    before_keys: frozenset[int] = frozenset(),
    before_shares: frozenset[int] = frozenset(),
    before_mask: frozenset[int] = frozenset(),
    before_unmask: frozenset[int] = frozenset(),
) -> tuple[np.ndarray, frozenset[int]]:
    """One round in memory; clients leave at the named stage. Returns the sum and who was counted."""
    graph = round_.graph()
    clients = {i: Client(i, round_, graph) for i in range(round_.plan.clients)}
    server = Server(round_, graph)
    keys = {i: c.advertise() for i, c in clients.items() if i not in before_keys}
    routed = server.collect_keys(keys)
    sealed = {i: clients[i].share(peers) for i, peers in routed.items() if i not in before_shares}
    relayed = server.collect_shares(sealed, {i: clients[i].commitment for i in sealed})
    masked = {i: clients[i].mask(inputs[i], boxes, server.shared) for i, boxes in relayed.items()
              if i not in before_mask}  # fmt: skip
    request = server.collect_masked(masked)
    answers = {i: clients[i].unmask(request) for i in sorted(request.survivors) if i not in before_unmask}
    return server.finish(answers), request.survivors


def _shares(clients: list[Client], routed: dict) -> tuple[dict, dict]:
    sealed = {i: clients[i].share(peers) for i, peers in routed.items()}
    return sealed, {i: clients[i].commitment for i in sealed}


def _inputs(n: int, length: int, bits: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 1 << bits, length, dtype=np.uint32) for i in range(n)}


def _plain_sum(inputs: dict[int, np.ndarray], counted: frozenset[int], bits: int) -> np.ndarray:
    total = sum((inputs[i].astype(np.uint64) for i in counted), np.zeros_like(inputs[0], dtype=np.uint64))
    return (total % (1 << bits)).astype(np.uint32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(5, 16),
    bits=st.integers(8, 32),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
    full=st.booleans(),
)
def test_the_sum_is_exact_for_any_dropout_pattern(
    n: int, bits: int, seed: int, data: st.DataObject, full: bool
) -> None:
    secagg = plan(n, dropout=0.2, colluding=1, correctness=1, full=full)
    round_ = Round(secagg, length=257, bits=bits)
    inputs = _inputs(n, 257, bits, seed)
    stage = st.sampled_from(["stays", "stays", "stays", "keys", "shares", "mask", "unmask"])
    leaves = {i: data.draw(stage) for i in range(n)}
    named = {s: frozenset(i for i, v in leaves.items() if v == s) for s in ("keys", "shares", "mask", "unmask")}
    try:
        total, counted = run_round(round_, inputs, before_keys=named["keys"], before_shares=named["shares"],
                                   before_mask=named["mask"], before_unmask=named["unmask"])  # fmt: skip
    except UsageError as exc:  # too many left: the round is void, and says so
        assert "fewer than t" in exc.message
        return
    assert counted == frozenset(range(n)) - named["keys"] - named["shares"] - named["mask"]
    assert np.array_equal(total, _plain_sum(inputs, counted, bits))


@pytest.mark.parametrize(("n", "dropout"), [(100, 0.1), (100, 0.3)])
def test_rounds_of_a_hundred_complete_at_the_planned_dropout(n: int, dropout: float) -> None:
    round_ = Round(plan(n, dropout=dropout), length=1000, bits=24)
    inputs = _inputs(n, 1000, 24, 1)
    rng = np.random.default_rng(2)
    gone = frozenset(rng.choice(n, int(dropout * n), replace=False).tolist())
    total, counted = run_round(round_, inputs, before_mask=gone)
    assert counted == frozenset(range(n)) - gone
    assert np.array_equal(total, _plain_sum(inputs, counted, 24))


def test_a_masked_input_is_indistinguishable_from_uniform() -> None:
    bits, length = 8, 200_000
    round_ = Round(plan(6, dropout=0.0, colluding=1), length=length, bits=bits)
    graph = round_.graph()
    clients = [Client(i, round_, graph) for i in range(6)]
    server = Server(round_, graph)
    routed = server.collect_keys({i: c.advertise() for i, c in enumerate(clients)})
    relayed = server.collect_shares(*_shares(clients, routed))
    constant = np.full(length, 7, dtype=np.uint32)  # the most structured input there is
    masked = clients[0].mask(constant, relayed[0], server.shared)
    counts = np.bincount(masked, minlength=1 << bits)
    assert chisquare(counts).pvalue > 1e-4
    assert np.mean(masked == 7) < 2 / (1 << bits)


def test_keys_and_masks_are_fresh_every_round() -> None:
    secagg = plan(5, dropout=0.0, colluding=1)
    first, second = Round(secagg, 64, 16), Round(secagg, 64, 16)
    assert first.round_id != second.round_id
    inputs = _inputs(5, 64, 16, 3)

    def masked_of_zero(round_: Round) -> tuple[np.ndarray, bytes]:
        graph = round_.graph()
        clients = [Client(i, round_, graph) for i in range(5)]
        server = Server(round_, graph)
        keys = {i: c.advertise() for i, c in enumerate(clients)}
        relayed = server.collect_shares(*_shares(clients, server.collect_keys(keys)))
        return clients[0].mask(inputs[0], relayed[0], server.shared), keys[0].masking

    (a, key_a), (b, key_b) = masked_of_zero(first), masked_of_zero(second)
    assert key_a != key_b and not np.array_equal(a, b)


def test_a_client_refuses_requests_that_would_unmask_someone() -> None:
    secagg = plan(6, dropout=0.0, colluding=1)
    round_ = Round(secagg, 16, 16)
    graph = round_.graph()
    clients = [Client(i, round_, graph) for i in range(6)]
    server = Server(round_, graph)
    routed = server.collect_keys({i: c.advertise() for i, c in enumerate(clients)})
    relayed = server.collect_shares(*_shares(clients, routed))
    for i, c in enumerate(clients):
        c.mask(np.zeros(16, dtype=np.uint32), relayed[i], server.shared)
    peer = sorted(graph[0])[0]
    with pytest.raises(IntegrityError, match="both survivors and dropped"):
        clients[0].unmask(Unmasking(frozenset({0, peer}), frozenset({peer})))
    with pytest.raises(UsageError, match="stage"):
        clients[0].unmask(Unmasking(frozenset({0}), frozenset()))  # one request per round, whatever happened
    with pytest.raises(UsageError, match="stage"):
        clients[1].share(routed[1])


def test_the_plan_grows_with_dropout_and_graphs_are_fresh() -> None:
    low, high = plan(100, dropout=0.1), plan(100, dropout=0.3)
    assert 2 <= low.threshold <= low.degree < high.degree < 99
    assert plan(100, full=True).degree == 99
    a, b = neighbours(low, b"a" * 16), neighbours(low, b"b" * 16)
    assert a != b and all(len(x) == low.degree for x in a)
    assert all(i in a[j] for i in range(100) for j in a[i])  # symmetric
    with pytest.raises(UsageError, match="dropout"):
        plan(100, dropout=0.6)
    with pytest.raises(UsageError, match="too few"):
        plan(20, corrupt=0.45, security=60)
    small = plan(3, colluding=1)  # no neighbourhood of 2 survives 10 % dropout reliably: all of them, and it says so
    assert small.degree == 2 and small.threshold == 2 and not small.survivable
    assert low.survivable


def test_a_bad_share_is_caught_when_the_secret_is_rebuilt() -> None:
    round_ = Round(plan(6, dropout=0.0, colluding=1), 16, 16)
    graph = round_.graph()
    clients = [Client(i, round_, graph) for i in range(6)]
    server = Server(round_, graph)
    routed = server.collect_keys({i: c.advertise() for i, c in enumerate(clients)})
    relayed = server.collect_shares(*_shares(clients, routed))
    zeros = np.zeros(16, dtype=np.uint32)
    request = server.collect_masked({i: c.mask(zeros, relayed[i], server.shared) for i, c in enumerate(clients)})
    answers = {i: c.unmask(request) for i, c in enumerate(clients)}
    holder = min(graph[0])  # the server rebuilds client 0's seed from its lowest holders' shares first
    kind, share = answers[holder][0]
    values = shamir.shares_from_bytes(share)
    values[0, 0] = (values[0, 0] + 1) % shamir.PRIME  # a small shift, which the field arithmetic alone misses
    tampered = {**answers, holder: {**answers[holder], 0: (kind, shamir.shares_to_bytes(values))}}
    with pytest.raises(IntegrityError, match="wrong"):
        server.finish(tampered)
    # A shift that still decodes is caught by the seed's commitment (here: the commitment is what differs).
    server.commitments[0] = bytes(32)
    with pytest.raises(IntegrityError, match="client 0 reconstructs wrongly"):
        server.finish(answers)


def test_the_journal_retires_every_round_id_it_has_seen(tmp_path: Path) -> None:

    journal = Journal(tmp_path / "secagg.json")
    first, second = os.urandom(16), os.urandom(16)
    journal.enter(1, first, "keys", ["a", "b", "c"])
    journal.enter(1, first, "share", ["a", "b", "c"])
    journal.enter(1, second, "keys", ["a", "b", "c"])  # the round ran again: the first attempt's id is retired
    assert journal.retired == [first.hex()]
    reopened = Journal(tmp_path / "secagg.json")  # a restart mid-round retires the interrupted attempt too
    assert reopened.retired == [first.hex(), second.hex()]
    (tmp_path / "secagg.json").write_text("{not json")
    with pytest.raises(FormatError, match="is damaged"):
        Journal(tmp_path / "secagg.json")
