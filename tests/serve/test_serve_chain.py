"""The audit chain: appends, group commit, and verification finding every kind of tampering (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, select, text

from privet.crypto import Keyring, LocalMasterKey, SigningKey, fingerprint
from privet.errors import IntegrityError, StoreError, UsageError
from privet.serve.chain import AsyncAuditWriter, AuditChain, AuditEvent, recent, verify
from privet.store import AuditCheckpoint, AuditHead, AuditRecord, Store

EVERY = 10  # checkpoint cadence in these tests: checkpoints at 10 and 20 of 25 records
RECORDS = 25
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture
def ring(store: Store, master_key: LocalMasterKey) -> Keyring:
    return Keyring.initialize(store, master_key)


@pytest.fixture
def chain(store: Store, ring: Keyring) -> AuditChain:
    return AuditChain(store, ring, checkpoint_every=EVERY)


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        tenant=("acme", "globex")[i % 2],
        principal=f"key{i % 3}",
        route="predict" if i % 4 else "/v1/models/{name}/predict",
        model="credit-risk",
        model_digest=f"{i:064x}",
        decision=("allowed", "denied", "over_budget", "error")[i % 4],
        entities={"PERSON": i % 3, "EMAIL": 1} if i % 2 else {},
        latency_ms=0.25 + i / 7,
        status=(200, 403, 429, 500)[i % 4],
        at=T0 + timedelta(milliseconds=i),
    )


def _filled(chain: AuditChain) -> list[int]:
    return [chain.append(_event(i)) for i in range(RECORDS)]


def _hash(prev: str, row: AuditRecord, seq: int | None = None) -> str:
    """The documented chain formula, written out independently of the implementation."""
    body = {
        "seq": row.seq if seq is None else seq,
        "at": row.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "tenant": row.tenant,
        "principal": row.principal,
        "route": row.route,
        "model": row.model,
        "model_digest": row.model_digest,
        "decision": row.decision,
        "entities": row.entities,
        "latency_ms": float(row.latency_ms),
        "status": row.status,
        "checkpoint_seq": row.checkpoint_seq,
    }
    return hashlib.sha256(
        bytes.fromhex(prev) + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def test_appends_chain_sign_checkpoints_and_verify(store: Store, ring: Keyring, chain: AuditChain) -> None:
    assert chain.checkpoint() is None and verify(store, ring).ok  # nothing to sign yet
    assert _filled(chain) == list(range(1, RECORDS + 1))
    report = verify(store, ring, batch_size=4)
    assert report.ok and (report.records, report.checkpoints, report.head_seq) == (RECORDS, 2, RECORDS)
    assert report.unsigned == 5 and "last 5 records are not yet signed" in report.summary()  # reported, not failed
    assert chain.checkpoint() == RECORDS and chain.checkpoint() == RECORDS  # a second one adds nothing
    report = verify(store, ring)
    assert report.ok and report.checkpoints == 3 and report.unsigned == 0
    with store.transaction() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
    prev = "0" * 64
    for row in rows:  # the stored hashes follow the documented formula
        assert row.prev_hash == prev and row.hash == _hash(prev, row)
        prev = row.hash
    assert [row.checkpoint_seq for row in rows[8:12]] == [0, 0, 10, 10]
    newest = recent(store, tenant="globex", limit=3)
    assert [entry.seq for entry in newest] == [24, 22, 20] and newest[0].event == _event(23)
    assert [entry.seq for entry in chain.recent(limit=2)] == [25, 24]


def _sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def _row(store: Store, seq: int) -> AuditRecord:
    with store.transaction() as session:
        return session.get(AuditRecord, seq)


def _copy(row: AuditRecord, **changes: object) -> AuditRecord:
    columns = {c.key: getattr(row, c.key) for c in AuditRecord.__table__.columns}
    return AuditRecord(**(columns | changes))


def _edit(store: Store) -> None:
    _sql(store, "UPDATE audit_records SET latency_ms = 99.0 WHERE seq = 7")


def _delete(store: Store) -> None:
    _sql(store, "DELETE FROM audit_records WHERE seq = 7")


def _shift_from_7(store: Store) -> None:
    # Two steps, because PostgreSQL checks the primary key row by row.
    _sql(store, "UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 7")
    _sql(store, "UPDATE audit_records SET seq = -seq WHERE seq < 0")
    _sql(store, "UPDATE audit_chain_head SET seq = seq + 1, hash = :h", h=_row(store, RECORDS + 1).hash)


def _insert_forged(store: Store) -> None:
    six = _row(store, 6)
    _shift_from_7(store)
    with store.transaction() as session:
        session.add(_copy(six, seq=7, prev_hash=six.hash, hash="f" * 64))


def _insert_consistent(store: Store) -> None:
    six = _row(store, 6)
    _shift_from_7(store)
    forged = _copy(six, seq=7, prev_hash=six.hash, tenant="evil")
    forged.hash = _hash(six.hash, forged)
    with store.transaction() as session:
        session.add(forged)


def _append_beyond_head(store: Store) -> None:
    last = _row(store, RECORDS)
    forged = _copy(last, seq=RECORDS + 1, prev_hash=last.hash)
    forged.hash = _hash(last.hash, forged)
    with store.transaction() as session:
        session.add(forged)


def _swap_4_and_9(store: Store) -> None:
    columns = [c.key for c in AuditRecord.__table__.columns if c.key != "seq"]
    with store.transaction() as session:
        four, nine = session.get(AuditRecord, 4), session.get(AuditRecord, 9)
        values = {c: getattr(four, c) for c in columns}
        for c in columns:
            setattr(four, c, getattr(nine, c))
            setattr(nine, c, values[c])


def _rewrite_from_3(store: Store) -> None:
    """An attacker who knows the formula rewrites record 3 and re-hashes everything after it, head included."""
    with store.transaction() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        rows[2].tenant = "someone-else"
        prev = rows[1].hash
        for row in rows[2:]:
            row.prev_hash, row.hash = prev, _hash(prev, row)
            prev = row.hash
        session.get(AuditHead, 1).hash = prev


def _flip_signature(store: Store) -> None:
    with store.transaction() as session:
        checkpoint = session.get(AuditCheckpoint, 10)
        checkpoint.signature = bytes([checkpoint.signature[0] ^ 1]) + checkpoint.signature[1:]


def _drop_signature(store: Store) -> None:
    with store.transaction() as session:
        session.get(AuditCheckpoint, 10).signature = b""


def _forge_signature(store: Store) -> None:
    """Re-sign checkpoint 10 over a rewritten chain with the attacker's own key."""
    _rewrite_from_3(store)
    attacker = SigningKey("audit-chain", 1, Ed25519PrivateKey.generate())
    signer = fingerprint(attacker.verify_key.raw)
    with store.transaction() as session:
        checkpoint = session.get(AuditCheckpoint, 10)
        checkpoint.hash, checkpoint.signer = session.get(AuditRecord, 10).hash, signer
        body = {
            "seq": 10,
            "hash": checkpoint.hash,
            "at": checkpoint.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "signer": signer,
        }
        message = b"privet audit checkpoint v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        checkpoint.signature = attacker.sign(message)


def _delete_checkpoint(store: Store) -> None:
    _sql(store, "DELETE FROM audit_checkpoints WHERE seq = 10")


TAMPERING: dict[str, tuple[Callable[[Store], None], str, int]] = {
    "edited field": (_edit, "edited", 7),
    "deleted row": (_delete, "deleted", 7),
    "inserted row": (_insert_forged, "inserted", 7),
    "inserted self-consistent row": (_insert_consistent, "inserted", 7),
    "row appended past the head": (_append_beyond_head, "inserted", 26),
    "swapped rows": (_swap_4_and_9, "reordered", 4),
    "chain rewritten to the head": (_rewrite_from_3, "edited", 10),
    "flipped signature": (_flip_signature, "bad_signature", 10),
    "emptied signature": (_drop_signature, "missing_signature", 10),
    "forged signature": (_forge_signature, "bad_signature", 10),
    "deleted checkpoint": (_delete_checkpoint, "missing_checkpoint", 10),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_finds_tampering(store: Store, ring: Keyring, chain: AuditChain, case: str) -> None:
    tamper, kind, seq = TAMPERING[case]
    _filled(chain)
    tamper(store)
    report = verify(store, ring, batch_size=4)  # small batches: problems straddle batch boundaries
    assert not report.ok, report
    assert (report.problem_kind, report.problem_seq) == (kind, seq), report.problem
    assert str(seq) in report.problem and report.problem in report.summary() and "\n" not in report.summary()


def test_verify_with_a_public_key_and_revocation(store: Store, ring: Keyring, chain: AuditChain) -> None:
    _filled(chain)
    assert verify(store, ring.signing_key("audit-chain").verify_key).ok
    other = verify(store, ring.signing_key("signing").verify_key)  # the artifact key is not the audit key
    assert (other.ok, other.problem_kind, other.problem_seq) == (False, "bad_signature", 10)
    ring.rotate("audit-chain")
    ring.delete("audit-chain", 1)  # revoking the version that signed the checkpoints revokes them
    assert verify(store, ring).problem_kind == "bad_signature"


def test_concurrent_appenders_keep_one_chain(store: Store, ring: Keyring) -> None:
    threads, each = 8, 15
    seqs: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        own = AuditChain(store, ring, checkpoint_every=EVERY)  # as separate processes would have
        start.wait()
        try:
            seqs.extend(own.append(_event(i)) for i in range(each))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert sorted(seqs) == list(range(1, threads * each + 1))
    report = verify(store, ring)
    assert report.ok and report.records == threads * each and report.checkpoints == threads * each // EVERY


def _committed(store: Store, seq: int) -> bool:
    """Whether another connection sees record ``seq``, i.e. whether it is committed (a driver query: no lock)."""
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"SELECT 1 FROM audit_records WHERE seq = {int(seq)}")  # noqa: S608 - a number
        return cursor.fetchone() is not None
    finally:
        raw.close()


def test_group_commit_resolves_callers_after_commit(store: Store, ring: Keyring, chain: AuditChain) -> None:
    batches: list[int] = []
    extend = chain._extend

    def recording(head: tuple[int, str, int], events: list[AuditEvent]) -> tuple:
        batches.append(len(events))
        return extend(head, events)

    chain._extend = recording  # type: ignore[method-assign]
    fresh = Store.open(store.engine.url.render_as_string(hide_password=False), migrate=False)

    async def one(writer: AsyncAuditWriter, i: int) -> int:
        seq = await writer.append(_event(i))
        assert _committed(fresh, seq)  # resolved only once its transaction committed
        return seq

    async def main() -> list[int]:
        writer = AsyncAuditWriter(chain)
        await writer.start()
        seqs = await asyncio.gather(*(one(writer, i) for i in range(300)))
        await writer.stop()
        with pytest.raises(StoreError):
            await writer.append(_event(0))
        return seqs

    try:
        assert sorted(asyncio.run(main())) == list(range(1, 301))
        assert len(batches) < 300 and max(batches) > 1  # grouped
        assert verify(fresh, ring).records == 300  # durable, seen through a new connection
    finally:
        fresh.close()


def _lose_connection(store: Store, writer: AsyncAuditWriter) -> None:
    """Cut the writer's own connection: PostgreSQL ends its backend, as a restart or a proxy would; SQLite closes it."""
    dbapi_connection = writer._conn._conn.dbapi_connection  # type: ignore[union-attr]
    if store.dialect == "postgresql":
        _sql(store, "SELECT pg_terminate_backend(:pid)", pid=dbapi_connection.info.backend_pid)
    else:
        dbapi_connection.close()


def test_group_commit_keeps_one_connection_and_reconnects_once(
    store: Store, ring: Keyring, chain: AuditChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkouts: list[str] = []  # by the writer's thread (the test's own SQL checks connections out too)

    def checkout(*_: object) -> None:
        if threading.current_thread().name.startswith("privet-audit-writer"):
            checkouts.append("writer")

    event.listen(store.engine, "checkout", checkout)

    async def main() -> None:
        writer = AsyncAuditWriter(chain)
        await writer.start()
        opened = len(checkouts)
        for i in range(20):
            assert await writer.append(_event(i)) == i + 1
        await asyncio.gather(*(writer.append(_event(i)) for i in range(40)))
        assert len(checkouts) == opened  # no batch checked a connection out of the pool

        _lose_connection(store, writer)
        assert await writer.append(_event(0)) == 61  # re-opened, and the batch written once
        assert len(checkouts) == opened + 1

        _lose_connection(store, writer)
        refused = StoreError("the database is down")
        with monkeypatch.context() as patched:
            patched.setattr(store.engine, "raw_connection", lambda: (_ for _ in ()).throw(refused))
            results = await asyncio.gather(*(writer.append(_event(i)) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results  # failed closed, none left waiting
        assert await writer.append(_event(1)) == 62  # connects again once the database is back
        await writer.stop()

    asyncio.run(main())
    report = verify(store, ring)
    assert report.ok and report.records == 62


def test_the_writer_connects_when_it_starts(store: Store, chain: AuditChain, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        writer = AsyncAuditWriter(chain)
        with monkeypatch.context() as patched:
            patched.setattr(store.engine, "raw_connection", lambda: (_ for _ in ()).throw(StoreError("down")))
            with pytest.raises(StoreError):
                await writer.start()  # a gateway that cannot audit does not start
        with pytest.raises(StoreError, match="not running"):
            await writer.append(_event(0))
        await writer.start()
        assert await writer.append(_event(0)) == 1
        await writer.stop()

    asyncio.run(main())


class _LostAtCommit:
    """A driver connection that is lost just as it commits: the batch may or may not be in, the writer cannot tell."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def commit(self) -> None:
        self._real.close()
        self._real.commit()  # raises the driver's own error for a closed connection


def test_a_connection_lost_at_commit_fails_the_batch_without_writing_it_twice(
    store: Store, ring: Keyring, chain: AuditChain
) -> None:
    async def main() -> None:
        writer = AsyncAuditWriter(chain)
        await writer.start()
        assert await writer.append(_event(0)) == 1
        pooled = writer._conn._conn  # type: ignore[union-attr]
        pooled.dbapi_connection = _LostAtCommit(pooled.dbapi_connection)
        results = await asyncio.gather(*(writer.append(_event(i)) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results  # refused, not retried
        assert await writer.append(_event(1)) == 2  # on a new connection; the lost batch was rolled back
        await writer.stop()

    asyncio.run(main())
    report = verify(store, ring)
    assert report.ok and report.records == 2


def test_an_idle_writer_adds_no_delay(store: Store, chain: AuditChain) -> None:
    """A lone request waits for its own commit and nothing more: no timer holds a batch open to fill it."""
    rounds = 40

    def median(times: list[float]) -> float:
        return sorted(times)[len(times) // 2]

    direct = []
    for i in range(rounds):
        started = time.perf_counter()
        chain.append(_event(i))
        direct.append(time.perf_counter() - started)

    async def main() -> list[float]:
        writer = AsyncAuditWriter(chain)
        await writer.start()
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            await writer.append(_event(i))
            times.append(time.perf_counter() - started)
        await writer.stop()
        return times

    queued = asyncio.run(main())
    # Generous against a busy machine, yet a linger of a few milliseconds per batch would exceed it.
    assert median(queued) < 2 * median(direct) + 0.002, (median(queued), median(direct))


def test_the_writer_stores_records_as_the_session_path_does(store: Store, ring: Keyring) -> None:
    every_record = AuditChain(store, ring, checkpoint_every=1)  # so that both paths also write a checkpoint
    every_record.append(_event(5))

    async def main() -> None:
        writer = AsyncAuditWriter(every_record)
        await writer.start()
        assert await writer.append(_event(5)) == 2
        await writer.stop()

    asyncio.run(main())
    with store.engine.connect() as conn:  # the stored values themselves, before any type conversion reads them
        records = conn.exec_driver_sql("SELECT * FROM audit_records ORDER BY seq").all()
        checkpoints = conn.exec_driver_sql("SELECT * FROM audit_checkpoints ORDER BY seq").all()
    columns = [
        c.key for c in AuditRecord.__table__.columns if c.key not in ("seq", "checkpoint_seq", "prev_hash", "hash")
    ]
    session_path, writer = (dict(row._mapping) for row in records)
    assert {c: session_path[c] for c in columns} == {c: writer[c] for c in columns}
    assert [type(v) for v in checkpoints[0]] == [type(v) for v in checkpoints[1]]
    assert len(str(checkpoints[0].at)) == len(str(checkpoints[1].at))  # one time format (SQLite keeps text)
    assert verify(store, ring).ok and verify(store, ring).checkpoints == 2


def test_group_commit_fails_every_waiting_caller(store: Store, ring: Keyring, chain: AuditChain) -> None:
    chain.append(_event(0))

    async def main() -> None:
        writer = AsyncAuditWriter(chain)
        await writer.start()
        _sql(store, "UPDATE audit_chain_head SET seq = 0")  # the next append collides with record 1
        results = await asyncio.gather(*(writer.append(_event(i)) for i in range(20)), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        _sql(store, "UPDATE audit_chain_head SET seq = 1")
        assert await writer.append(_event(1)) == 2  # the writer carries on once the database does
        await writer.stop()

    asyncio.run(main())
    assert verify(store, ring).ok


def test_a_failed_write_rolls_back_the_whole_batch(store: Store, ring: Keyring, chain: AuditChain) -> None:
    _filled(chain)
    _sql(store, "UPDATE audit_chain_head SET seq = 23")
    with pytest.raises(StoreError):
        chain.append_many([_event(i) for i in range(3)])  # 24 and 25 exist: nothing of the batch stays
    _sql(store, "UPDATE audit_chain_head SET seq = 25")
    assert chain.append(_event(0)) == RECORDS + 1 and verify(store, ring).ok


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("route", "/v1/users/jane.doe@example.com"),
        ("route", "summarise: Jane Doe, born 1970"),
        ("tenant", "Jane Doe"),
        ("principal", "pvt_abc_secret with spaces"),
        ("model_digest", "NOT-A-DIGEST"),
        ("entities", {"jane@example.com": 1}),
        ("entities", {"PERSON": -1}),
        ("entities", {"PERSON": True}),
        ("decision", "maybe"),
        ("status", 42),
        ("status", True),
        ("latency_ms", float("nan")),
        ("at", datetime(2024, 1, 1)),  # naive: refused
    ],
)
def test_events_refuse_free_text_and_bad_values(field: str, value: object) -> None:
    fields = {"route": "predict", "decision": "allowed", "status": 200, "latency_ms": 1.0} | {field: value}
    with pytest.raises(UsageError) as refused:
        AuditEvent(**fields)
    assert "jane" not in refused.value.one_line().lower() and "secret" not in refused.value.one_line()


def test_recent_refuses_a_tampered_row_rather_than_showing_it(store: Store, chain: AuditChain) -> None:
    chain.append(_event(1))
    _sql(store, "UPDATE audit_records SET route = 'Jane Doe' WHERE seq = 1")
    with pytest.raises(IntegrityError, match="record 1"):
        recent(store)


def test_a_missing_head_row_stops_appends_and_fails_verification(
    store: Store, ring: Keyring, chain: AuditChain
) -> None:
    chain.append(_event(1))
    _sql(store, "DELETE FROM audit_chain_head")
    with pytest.raises(IntegrityError, match="head row"):
        chain.append(_event(2))
    report = verify(store, ring)
    assert not report.ok and "head row" in report.problem
