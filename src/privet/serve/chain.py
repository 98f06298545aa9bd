"""The audit chain of the model service: one tamper-evident record per request, never personal data.

Records are hash-chained: ``hash_i = SHA-256(hash_{i-1} || canonical JSON of record i)``, the JSON holding the
record's sequence number, time and the sequence number of the newest checkpoint before it. Every
``checkpoint_every`` records (in the same transaction) and on demand, a checkpoint signs (sequence number, hash,
time) with an Ed25519 key of the keyring. :func:`verify` recomputes the chain and checks every signature, so an
edited, deleted, inserted or reordered record and a forged or deleted checkpoint are found. Records after the
newest checkpoint are only as safe as the database: whoever can write it can rewrite that unsigned tail
consistently, which is why the report says how long the tail is.

Appends lock the chain's head row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` holds
the database write lock), so writers in several threads and processes extend one chain and never fork it.
:class:`AsyncAuditWriter` gathers the appends of concurrent requests into one transaction (group commit), written
on one connection of its own with statements compiled once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Dialect, Executable, Row, func, insert, select, update
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection

from privet.crypto.keyring import Keyring
from privet.crypto.signing import SigningKey, VerifyKey
from privet.errors import IntegrityError, KeyNotFoundError, KeyringError, PrivetError, StoreError, UsageError
from privet.store import AuditCheckpoint, AuditHead, AuditRecord, Store
from privet.store.schema import utcnow

__all__ = [
    "DEFAULT_SIGNER",
    "AsyncAuditWriter",
    "AuditChain",
    "AuditEntry",
    "AuditEvent",
    "ChainReport",
    "Decision",
    "ProblemKind",
    "recent",
    "verify",
]

Decision = Literal["allowed", "denied", "over_budget", "error"]
ProblemKind = Literal[
    "edited", "deleted", "inserted", "reordered", "bad_signature", "missing_signature", "missing_checkpoint"
]

DEFAULT_SIGNER = "audit-chain"
GENESIS = "0" * 64  # the previous hash of record 1 (also seeded into the head row by migration 0004)
_CHECKPOINT_CONTEXT = b"privet audit checkpoint v1\n"  # a checkpoint signature can mean nothing else
_HEAD_ID = 1

# Identifiers only: no spaces, no free text, bounded by the column widths.
_TENANT = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}")
_PRINCIPAL = re.compile(r"[A-Za-z0-9_.:/@+|=-]{1,128}")
_MODEL = re.compile(r"[A-Za-z0-9_.:/@+-]{1,128}")
_ROUTE = re.compile(r"[A-Za-z0-9/][A-Za-z0-9_.:/{}-]{0,127}")  # a route's name or template, not a request path
_DIGEST = re.compile(r"[0-9a-f]{64}")
_ENTITY = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_MAX_ENTITY_TYPES = 64


def _invalid(what: str, hint: str) -> UsageError:
    # The offending value is left out on purpose: a malformed field may hold exactly the data audit must not keep.
    return UsageError(f"the audit event's {what} is not valid", hint)


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """What one request did: identifiers, counts and times only, never a key, a prompt or a value.

    ``route`` names the route (``predict``) or its template (``/v1/models/{name}``), never the requested path,
    whose parameters may be personal data. ``tenant`` and ``principal`` (a key id or token subject, never the
    key) are None when the caller was not authenticated. ``entities`` counts the masked entities per type.
    """

    route: str
    decision: Decision
    status: int
    latency_ms: float
    tenant: str | None = None
    principal: str | None = None
    model: str | None = None
    model_digest: str | None = None
    entities: dict[str, int] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not isinstance(self.route, str) or not _ROUTE.fullmatch(self.route):
            raise _invalid("route", "Pass the route's name or template (1-128 of A-Z a-z 0-9 _ . : / { } -).")
        if self.decision not in get_args(Decision):
            raise _invalid("decision", f"Use one of {', '.join(get_args(Decision))}.")
        if type(self.status) is not int or not 100 <= self.status <= 599:
            raise _invalid("status", "Pass the HTTP status code, 100-599.")
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
            raise _invalid("latency", "Pass the latency in milliseconds as a number.")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise _invalid("latency", "Pass a finite, non-negative latency in milliseconds.")
        for name, value, pattern in (
            ("tenant", self.tenant, _TENANT),
            ("principal", self.principal, _PRINCIPAL),
            ("model", self.model, _MODEL),
            ("model digest", self.model_digest, _DIGEST),
        ):
            if value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
                raise _invalid(name, "Pass an identifier (a digest as 64 lower-case hex digits), or None.")
        if not isinstance(self.entities, Mapping) or len(self.entities) > _MAX_ENTITY_TYPES:
            raise _invalid("entity counts", f"Pass a dict of at most {_MAX_ENTITY_TYPES} entity types.")
        for entity, count in self.entities.items():
            if not isinstance(entity, str) or not _ENTITY.fullmatch(entity) or type(count) is not int or count < 0:
                raise _invalid("entity counts", "Map entity types (PERSON, EMAIL, ...) to non-negative counts.")
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            raise _invalid("time", "Pass a timezone-aware datetime (privet.store.schema.utcnow()).")
        # Normalised forms, so that the record hashes the same before it is stored and after it is read back.
        object.__setattr__(self, "entities", dict(sorted(self.entities.items())))
        object.__setattr__(self, "latency_ms", round(float(self.latency_ms), 3))
        object.__setattr__(self, "at", self.at.astimezone(UTC))


@dataclass(frozen=True)
class AuditEntry:
    """A stored record: its sequence number in the chain, what it records, and its chain hash."""

    seq: int
    event: AuditEvent
    hash: str


# -- hashing and signing ---------------------------------------------------------------------------------------


def _values(event: AuditEvent) -> dict[str, Any]:
    """The event's columns of ``audit_records``."""
    return {
        "at": event.at,
        "tenant": event.tenant,
        "principal": event.principal,
        "route": event.route,
        "model": event.model,
        "model_digest": event.model_digest,
        "decision": event.decision,
        "entities": event.entities,
        "latency_ms": event.latency_ms,
        "status": event.status,
    }


def _row_values(row: AuditRecord | Row[Any]) -> dict[str, Any]:
    """The hashed columns of a stored row, taken as they are (a tampered row need not be a valid event)."""
    return {
        "seq": row.seq,
        "at": row.at,
        "tenant": row.tenant,
        "principal": row.principal,
        "route": row.route,
        "model": row.model,
        "model_digest": row.model_digest,
        "decision": row.decision,
        "entities": row.entities,
        "latency_ms": row.latency_ms,
        "status": row.status,
        "checkpoint_seq": row.checkpoint_seq,
    }


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(values: Mapping[str, Any]) -> bytes:
    """The bytes record ``values`` hashes to: sorted keys, no spaces, times in UTC to the microsecond."""
    body = dict(values)
    body["at"] = _time(body["at"])
    # Both backends store double precision, so the float reads back as the same shortest repr.
    body["latency_ms"] = float(body["latency_ms"])
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _link(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def _row_hash(row: AuditRecord | Row[Any], seq: int | None = None) -> str | None:
    """The hash ``row`` should have (placed at ``seq``, by default its own); None if its previous hash is garbled."""
    if not isinstance(row.prev_hash, str) or not _DIGEST.fullmatch(row.prev_hash):
        return None
    values = _row_values(row)
    if seq is not None:
        values["seq"] = seq
    return _link(row.prev_hash, _canonical(values))


def _checkpoint_message(seq: int, digest: str, at: datetime, signer: str) -> bytes:
    body = {"seq": seq, "hash": digest, "at": _time(at), "signer": signer}
    return _CHECKPOINT_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _signing_key(keyring: Keyring, name: str) -> SigningKey:
    """The primary version of signing key ``name``, created on first use."""
    try:
        return keyring.signing_key(name)
    except KeyNotFoundError:
        pass
    with contextlib.suppress(KeyringError):  # another writer created it first: read theirs below
        keyring.create(name, "signing")
    return keyring.signing_key(name)


# Built once: the write path runs them on the Core connection, which costs a fraction of ORM statement execution.
_READ_HEAD = select(AuditHead.seq, AuditHead.hash, AuditHead.checkpoint_seq).where(AuditHead.id == _HEAD_ID)
_LOCK_HEAD = _READ_HEAD.with_for_update()  # PostgreSQL row lock; SQLite holds the database write lock already
_MOVE_HEAD = update(AuditHead.__table__).where(AuditHead.__table__.c.id == _HEAD_ID)
_RECORDS, _CHECKPOINTS = AuditRecord.__table__, AuditCheckpoint.__table__
_INSERT_RECORDS = insert(_RECORDS)
_INSERT_CHECKPOINTS = insert(_CHECKPOINTS)


@contextlib.contextmanager
def _writing(store: Store) -> Iterator[Connection]:
    """A write transaction whose database errors surface as :class:`StoreError` (the gateway then fails closed)."""
    try:
        with store.transaction() as session:
            yield session.connection()
    except SQLAlchemyError as exc:
        raise StoreError(f"writing the audit chain failed ({type(exc).__name__})") from None


def _head(conn: Connection | Session, *, lock: bool) -> tuple[int, str, int]:
    """(sequence number, hash, newest checkpoint's sequence number) of the chain's head row."""
    return _checked_head(conn.execute(_LOCK_HEAD if lock else _READ_HEAD).one_or_none())


def _checked_head(row: Sequence[Any] | None) -> tuple[int, str, int]:
    """The head row (seq, hash, checkpoint_seq) as read, refused if it is missing or its hash is garbled."""
    if row is None or not isinstance(row[1], str) or not _DIGEST.fullmatch(row[1]):
        raise IntegrityError(
            "the audit chain's head row is missing or garbled",
            "The audit tables were tampered with; run 'privet audit verify'.",
        )
    return row[0], row[1], row[2]


# -- writing ---------------------------------------------------------------------------------------------------


class AuditChain:
    """The audit log in ``store``; checkpoints are signed with the keyring's key ``signer_key_name``.

    The signing key's primary version is read once, here (created if missing): restart the writer after rotating
    it. Deleting a version from the keyring revokes it, and the checkpoints it signed then fail verification.
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        *,
        signer_key_name: str = DEFAULT_SIGNER,
        checkpoint_every: int = 1000,
    ) -> None:
        if type(checkpoint_every) is not int or checkpoint_every < 1:
            raise UsageError("checkpoint_every must be a positive whole number of records")
        self._store = store
        self._every = checkpoint_every
        # Read outside any append: on SQLite a keyring read inside the append transaction would wait on itself.
        self._signer = _signing_key(keyring, signer_key_name)
        self._fingerprint = self._signer.verify_key.fingerprint

    def append(self, event: AuditEvent) -> int:
        """Append one record and commit; its sequence number."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append ``events`` in order in one transaction; their sequence numbers, once committed."""
        if not events:
            return []
        with _writing(self._store) as conn:
            rows, checkpoints, head = self._extend(_head(conn, lock=True), events)
            conn.execute(_INSERT_RECORDS, rows)
            if checkpoints:
                conn.execute(_INSERT_CHECKPOINTS, checkpoints)
            conn.execute(_MOVE_HEAD, head)
        return [row["seq"] for row in rows]

    def _extend(
        self, head: tuple[int, str, int], events: Iterable[AuditEvent]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """The rows appending ``events`` after ``head``, the checkpoints falling due among them, and the new head.

        The one place records are hashed and checkpoints signed, for both write paths (ORM session and the
        :class:`AsyncAuditWriter`'s own connection), so the two cannot drift apart.
        """
        seq, digest, checkpoint_seq = head
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        for event in events:
            values = _values(event) | {"seq": seq + 1, "checkpoint_seq": checkpoint_seq}
            prev, seq = digest, seq + 1
            digest = _link(prev, _canonical(values))
            rows.append(values | {"prev_hash": prev, "hash": digest})
            if seq - checkpoint_seq >= self._every:
                checkpoints.append(self._sign(seq, digest))
                checkpoint_seq = seq
        return rows, checkpoints, {"seq": seq, "hash": digest, "checkpoint_seq": checkpoint_seq}

    def checkpoint(self) -> int | None:
        """Sign the current head now (at shutdown, before an export); its sequence number, None while empty."""
        with _writing(self._store) as conn:
            seq, digest, checkpoint_seq = _head(conn, lock=True)
            if seq == 0:
                return None
            if checkpoint_seq != seq:
                conn.execute(_INSERT_CHECKPOINTS, [self._sign(seq, digest)])
                conn.execute(_MOVE_HEAD, {"seq": seq, "hash": digest, "checkpoint_seq": seq})
        return seq

    def recent(self, tenant: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """The newest records, newest first (of ``tenant`` only, when given)."""
        return recent(self._store, tenant, limit)

    def _sign(self, seq: int, digest: str) -> dict[str, Any]:
        at = utcnow()
        message = _checkpoint_message(seq, digest, at, self._fingerprint)
        return {
            "seq": seq,
            "hash": digest,
            "at": at,
            "signer": self._fingerprint,
            "signature": self._signer.sign(message),
        }


class _Prepared:
    """A statement compiled once for one dialect, and its driver parameters made with SQLAlchemy's own conversions.

    Executing through the driver skips what a Core execution redoes every time (cache lookup, execution context,
    result set-up), which costs more than the statement itself for the writer's one-record batches.
    """

    def __init__(self, statement: Executable, dialect: Dialect, keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        names = compiled.positiontup if dialect.positional else list(binds)
        assert names is not None
        self.sql = compiled.string
        self._positional = dialect.positional
        self._fixed = {name: binds[name].value for name in names if not binds[name].required}  # e.g. the head's id
        self._plan = [(name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for one row of ``values`` (keyed by column)."""
        if self._fixed:
            values = self._fixed | dict(values)
        if self._positional:
            return tuple([values[n] if convert is None else convert(values[n]) for n, convert in self._plan])
        return {n: values[n] if convert is None else convert(values[n]) for n, convert in self._plan}


class _WriterConnection:
    """The :class:`AsyncAuditWriter`'s own database connection, held from start to stop.

    A batch then costs its statements and the commit, not a new ORM session and a pooled connection checked out
    (and pinged) each time. Not thread-safe: the writer calls it from its one thread only.
    """

    def __init__(self, chain: AuditChain) -> None:
        self._chain = chain
        self._engine = chain._store.engine
        dialect = self._dialect = self._engine.dialect
        # The SQLite driver opens no transactions itself (see privet.store.db): take the write lock up front as
        # every other privet write does. psycopg begins one at the first statement, where FOR UPDATE locks the head.
        self._begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        self._lock_head = _Prepared(_LOCK_HEAD, dialect)
        self._insert_records = _Prepared(_INSERT_RECORDS, dialect)
        self._insert_checkpoints = _Prepared(_INSERT_CHECKPOINTS, dialect)
        self._move_head = _Prepared(_MOVE_HEAD, dialect, ("seq", "hash", "checkpoint_seq"))
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        self._conn: PoolProxiedConnection | None = None

    def open(self) -> None:
        """Connect, unless connected already."""
        if self._conn is not None:
            return
        try:
            self._conn = self._engine.raw_connection()
        except (SQLAlchemyError, self._driver_error) as exc:
            raise StoreError(f"connecting to the audit chain's database failed ({type(exc).__name__})") from None

    def close(self) -> None:
        """Give the connection back (it rolls back anything open)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, self._driver_error):
                conn.close()

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append ``events`` in one transaction; their sequence numbers once committed.

        A connection found lost before the commit is replaced once and the batch written again: the server rolled
        the transaction back, so nothing is written twice. A failure at the commit is not retried (the records may
        be in), and a second failure is not either: the callers get :class:`StoreError` and refuse their requests.
        """
        for retry in (False, True):
            self.open()
            assert self._conn is not None and self._conn.dbapi_connection is not None
            dbapi_conn = self._conn.dbapi_connection
            try:
                rows = self._statements(dbapi_conn.cursor(), events)
            except self._driver_error as exc:
                if self._abandon(exc) and not retry:
                    continue
                raise _write_failed(exc) from None
            except BaseException:
                self._abandon(None)
                raise
            try:
                dbapi_conn.commit()
            except self._driver_error as exc:
                self._abandon(exc)
                raise _write_failed(exc) from None
            return [row["seq"] for row in rows]
        raise AssertionError("unreachable")  # pragma: no cover - the second pass returns or raises

    def _statements(self, cursor: DBAPICursor, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
        """Everything of the batch's transaction but the commit; the rows written."""
        try:
            if self._begin is not None:
                cursor.execute(self._begin)
            cursor.execute(self._lock_head.sql, self._lock_head.params({}))
            rows, checkpoints, head = self._chain._extend(_checked_head(cursor.fetchone()), events)
            cursor.executemany(self._insert_records.sql, [self._insert_records.params(row) for row in rows])
            if checkpoints:
                cursor.executemany(
                    self._insert_checkpoints.sql, [self._insert_checkpoints.params(row) for row in checkpoints]
                )
            cursor.execute(self._move_head.sql, self._move_head.params(head))
        finally:
            with contextlib.suppress(self._driver_error):
                cursor.close()
        return rows

    def _abandon(self, exc: Exception | None) -> bool:
        """Roll back after a failed batch; True, with the connection dropped, if ``exc`` means it was lost."""
        assert self._conn is not None
        dbapi_conn = self._conn.dbapi_connection
        lost = dbapi_conn is None or (exc is not None and self._dialect.is_disconnect(exc, dbapi_conn, None))
        if dbapi_conn is not None and not lost:
            try:
                dbapi_conn.rollback()
            except self._driver_error:
                lost = True  # a connection that cannot roll back is no use for the next batch either
        if lost:
            conn, self._conn = self._conn, None
            with contextlib.suppress(SQLAlchemyError, self._driver_error):
                conn.invalidate()  # closed and never handed out by the pool again
        return lost


def _write_failed(exc: Exception) -> StoreError:
    # The driver's message may quote the rejected parameters, so only the error's type is kept.
    return StoreError(f"writing the audit chain failed ({type(exc).__name__})")


class AsyncAuditWriter:
    """Group commit for the event loop: concurrent ``await append(event)`` calls share one transaction.

    One task takes everything queued (up to ``max_batch`` records) and hands it to the writer's own thread, which
    appends it on the writer's own connection; only once that commit returned is each caller resolved with its
    sequence number. If the write fails, every caller of that batch gets the error, so a request whose record was
    not committed can be refused. While one batch is written the next one queues, so batches grow with the load;
    a quiet service waits for nothing but its own commit (no timer holds a batch open to fill it). Start and stop
    it in the app's lifespan; ``start`` connects (and fails if it cannot), ``stop`` writes what is queued.
    """

    def __init__(self, chain: AuditChain, *, max_batch: int = 1000, max_queue: int = 50_000) -> None:
        if max_batch < 1 or max_queue < 1:
            raise UsageError("max_batch and max_queue must be positive")
        self._chain = chain
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: asyncio.Queue[tuple[AuditEvent, asyncio.Future[int]] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # One thread, so that the connection is only ever used from the thread that opened it.
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: _WriterConnection | None = None

    async def start(self) -> None:
        """Connect on the writer's thread and start the writing task on the running event loop."""
        if self._task is not None or self._thread is not None:
            raise UsageError("the audit writer is already running")
        conn = _WriterConnection(self._chain)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="privet-audit-writer")
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.open)
        except BaseException:
            self._thread.submit(conn.close)  # after an open that a cancellation did not stop
            self._thread.shutdown(wait=False)
            self._thread = None
            raise
        self._conn = conn
        self._stopping = False
        self._queue = asyncio.Queue(self._max_queue)
        self._task = asyncio.create_task(self._run(), name="privet-audit-writer")

    async def stop(self) -> None:
        """Write everything queued so far, close the connection, then stop; appends made after this are refused."""
        if self._task is None or self._queue is None:
            return
        self._stopping = True
        await self._queue.put(None)
        await self._task
        self._task = None
        while not self._queue.empty():  # appends that slipped in behind the stop marker
            item = self._queue.get_nowait()
            if item is not None and not item[1].done():
                item[1].set_exception(StoreError("the audit writer stopped before writing the record"))
        thread, conn, self._thread, self._conn = self._thread, self._conn, None, None
        if thread is not None and conn is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        if thread is not None:
            thread.shutdown(wait=False)  # idle by now: its thread ends at once

    async def append(self, event: AuditEvent) -> int:
        """Queue ``event``; its sequence number once committed. Raises :class:`StoreError` if it was not written."""
        if self._task is None or self._queue is None or self._stopping:
            raise StoreError("the audit writer is not running", "Start it in the app's lifespan before serving.")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, future))  # waits while the queue is full: back-pressure, not loss
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            # No waiting for more: a batch is whatever queued while the previous one was being committed.
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            items = [item for item in batch if item is not None]
            if items:
                await self._write(items)
            if len(items) < len(batch):  # the stop marker; appends are refused from then on
                return

    async def _write(self, items: list[tuple[AuditEvent, asyncio.Future[int]]]) -> None:
        assert self._thread is not None and self._conn is not None
        events = [event for event, _ in items]
        try:
            seqs = await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.append, events)
        except Exception as exc:  # every waiting caller must learn that its record was not written
            error = (
                exc
                if isinstance(exc, PrivetError)
                else StoreError(f"writing the audit chain failed ({type(exc).__name__})")
            )
            for _, future in items:
                if not future.done():  # a caller that gave up (cancelled) has no one to tell
                    future.set_exception(error)
            return
        for (_, future), seq in zip(items, seqs, strict=True):
            if not future.done():
                future.set_result(seq)


# -- reading ---------------------------------------------------------------------------------------------------


def recent(store: Store, tenant: str | None = None, limit: int = 50) -> list[AuditEntry]:
    """The newest ``limit`` (1-1000) records, newest first; only ``tenant``'s when given."""
    if type(limit) is not int or not 1 <= limit <= 1000:
        raise UsageError("the number of audit records must be 1-1000")
    if tenant is not None and (not isinstance(tenant, str) or not _TENANT.fullmatch(tenant)):
        raise UsageError("the tenant name is not valid", "Use 1-64 letters, digits and _ . : @ + -")
    query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
    if tenant is not None:
        query = query.where(AuditRecord.tenant == tenant)
    with store.transaction() as session:
        rows = session.scalars(query).all()
    entries = []
    for row in rows:
        values = _row_values(row)
        del values["seq"], values["checkpoint_seq"]
        try:
            event = AuditEvent(**values)
        except (UsageError, TypeError):
            raise IntegrityError(
                f"audit record {row.seq} is not a valid record", "It was altered; run 'privet audit verify'."
            ) from None
        entries.append(AuditEntry(row.seq, event, row.hash))
    return entries


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found.

    ``checkpoint_seq`` is the newest checkpoint that verified; the ``unsigned`` records after it are chained but
    not yet signed, which is normal between checkpoints and not a failure. On a failure, ``problem`` is one line
    naming the first problem found and ``problem_seq`` its sequence number.
    """

    ok: bool
    records: int
    checkpoints: int
    head_seq: int
    checkpoint_seq: int
    problem: str | None = None
    problem_kind: ProblemKind | None = None
    problem_seq: int | None = None

    @property
    def unsigned(self) -> int:
        return self.head_seq - self.checkpoint_seq

    def summary(self) -> str:
        """One line for people."""
        counts = f"{self.records} records, {self.checkpoints} checkpoints checked"
        if not self.ok:
            return f"audit chain BROKEN: {self.problem} ({counts})"
        tail = f"; the last {self.unsigned} records are not yet signed by a checkpoint" if self.unsigned else ""
        return f"audit chain intact: {counts}{tail}"


# -- verifying -------------------------------------------------------------------------------------------------


class _Problem(Exception):  # noqa: N818 - a finding that ends the scan, not an error of the verifier
    """The first problem found; raised inside verify to stop the scan."""

    def __init__(self, kind: ProblemKind, seq: int | None, line: str) -> None:
        super().__init__(line)
        self.kind, self.seq, self.line = kind, seq, line


def _span(first: int, last: int) -> str:
    return f"record {first} was" if first == last else f"records {first}-{last} were"


def _resolver(trusted: Keyring | VerifyKey, signer_key_name: str) -> Callable[[str], VerifyKey | None]:
    """A lookup of trusted checkpoint keys by fingerprint (None: not trusted)."""
    if isinstance(trusted, VerifyKey):
        return lambda fingerprint: trusted if fingerprint == trusted.fingerprint else None
    cache: dict[str, VerifyKey | None] = {}

    def resolve(fingerprint: str) -> VerifyKey | None:
        if fingerprint not in cache:
            try:
                key: VerifyKey | None = trusted.verify_key(fingerprint)  # refuses deleted (revoked) versions
            except IntegrityError:
                key = None
            cache[fingerprint] = key if key is not None and key.name == signer_key_name else None
        return cache[fingerprint]

    return resolve


class _Scan:
    """The state of one verification: where the chain is, what it has checked."""

    def __init__(self, store: Store, resolve: Callable[[str], VerifyKey | None]) -> None:
        self.store = store
        self.resolve = resolve
        self.next_seq = 1
        self.prev_hash = GENESIS
        self.checkpoint_seq = 0
        self.records = 0
        self.checkpoints = 0

    def record(self, row: Row[Any]) -> None:
        if row.seq != self.next_seq:
            raise _Problem("deleted", self.next_seq, f"{_span(self.next_seq, row.seq - 1)} deleted")
        if row.prev_hash != self.prev_hash or _row_hash(row) != row.hash:
            raise self._diagnose(row)
        if row.checkpoint_seq > self.checkpoint_seq:
            seq = row.checkpoint_seq
            raise _Problem("missing_checkpoint", seq, f"checkpoint {seq} was deleted (record {row.seq} names it)")
        if row.checkpoint_seq < self.checkpoint_seq:
            line = f"record {row.seq} does not name checkpoint {self.checkpoint_seq} before it (chain head edited)"
            raise _Problem("edited", row.seq, line)
        self.next_seq, self.prev_hash = row.seq + 1, row.hash
        self.records += 1

    def checkpoint(self, row: Row[Any]) -> None:
        seq = row.seq
        if not row.signature:
            raise _Problem("missing_signature", seq, f"checkpoint {seq} has no signature")
        key = self.resolve(row.signer) if isinstance(row.signer, str) else None
        if key is None:
            raise _Problem("bad_signature", seq, f"checkpoint {seq} is signed by a key that is not trusted")
        try:
            key.verify(bytes(row.signature), _checkpoint_message(seq, row.hash, row.at, row.signer))
        except IntegrityError:
            raise _Problem("bad_signature", seq, f"checkpoint {seq} has a bad signature") from None
        if row.hash != self.prev_hash:
            line = f"checkpoint {seq} signs a different chain: records up to {seq} were rewritten"
            raise _Problem("edited", seq, line)
        self.checkpoint_seq = seq
        self.checkpoints += 1

    def _diagnose(self, row: Row[Any]) -> _Problem:
        """Name the likeliest cause of a break at ``row``: the row is some other position's record, or edited."""
        p = row.seq
        if _row_hash(row) == row.hash:  # consistent in itself but not linked: its predecessor was rewritten
            if p == 1:
                return _Problem("edited", 1, "record 1 does not start the chain: it was rewritten")
            return _Problem("edited", p - 1, f"record {p} does not follow record {p - 1}: one was rewritten")
        # Where would this row's content verify? Next to the rows that link to it, or after the row it links to.
        with self.store.transaction() as session:
            after = session.scalars(select(AuditRecord.seq).where(AuditRecord.prev_hash == row.hash).limit(4)).all()
            before = session.scalars(select(AuditRecord.seq).where(AuditRecord.hash == row.prev_hash).limit(4)).all()
            head_seq, head_hash, _ = _head(session, lock=False)
            following = session.execute(
                select(_RECORDS).where(_RECORDS.c.seq > p).order_by(_RECORDS.c.seq).limit(1)
            ).first()
        candidates = {s - 1 for s in after} | {s + 1 for s in before}
        if head_hash == row.hash:
            candidates.add(head_seq)
        if row.prev_hash == GENESIS:
            candidates.add(1)
        for s in sorted(candidates - {p}):
            if _row_hash(row, s) == row.hash:
                if s > p:
                    return _Problem("reordered", p, f"record {p} holds record {s}: records were reordered")
                return _Problem("inserted", s, f"{_span(s, p - 1)} inserted: record {p} is the original record {s}")
        if (
            following is not None
            and following.prev_hash == self.prev_hash
            and _row_hash(following, p) == following.hash
        ):
            return _Problem(
                "inserted", p, f"record {p} was inserted: record {following.seq} is the original record {p}"
            )
        return _Problem("edited", p, f"record {p} was edited: its content does not match its hash")


def verify(
    store: Store,
    trusted: Keyring | VerifyKey,
    *,
    signer_key_name: str = DEFAULT_SIGNER,
    batch_size: int = 1000,
) -> ChainReport:
    """Recompute the audit chain in sequence order, ``batch_size`` records at a time, and check every checkpoint.

    ``trusted`` is the keyring (checkpoints must be signed by a live version of ``signer_key_name``) or the one
    public key to trust. Appends may go on meanwhile: the chain is checked up to the head found at the start.
    """
    if batch_size < 1:
        raise UsageError("batch_size must be positive")
    scan = _Scan(store, _resolver(trusted, signer_key_name))
    head_seq = 0
    try:
        with store.transaction() as session:
            try:
                head_seq, head_hash, _ = _head(session, lock=False)
            except IntegrityError:
                raise _Problem("edited", None, "the chain head row is missing or garbled") from None
        done = 0
        while done < head_seq:
            with store.transaction() as session:
                # Core rows, not ORM objects: loading is most of the cost of a verification.
                records = session.execute(
                    select(_RECORDS)
                    .where(_RECORDS.c.seq > done, _RECORDS.c.seq <= head_seq)
                    .order_by(_RECORDS.c.seq)
                    .limit(batch_size)
                ).all()
                upper = records[-1].seq if records else head_seq
                checkpoints = session.execute(
                    select(_CHECKPOINTS)
                    .where(_CHECKPOINTS.c.seq > done, _CHECKPOINTS.c.seq <= upper)
                    .order_by(_CHECKPOINTS.c.seq)
                ).all()
            if not records:
                break
            # Checked outside the transaction: a diagnosis or a keyring lookup opens its own.
            pending = iter(checkpoints)
            checkpoint = next(pending, None)
            for row in records:
                scan.record(row)
                if checkpoint is not None and checkpoint.seq == row.seq:
                    scan.checkpoint(checkpoint)
                    checkpoint = next(pending, None)
            done = upper
        if scan.next_seq <= head_seq:
            raise _Problem("deleted", scan.next_seq, f"{_span(scan.next_seq, head_seq)} deleted")
        if scan.prev_hash != head_hash:
            raise _Problem("edited", head_seq, f"the chain head does not match record {head_seq}")
        _check_beyond_head(store, scan.checkpoint_seq, head_seq)
    except _Problem as problem:
        return ChainReport(
            False,
            scan.records,
            scan.checkpoints,
            head_seq,
            scan.checkpoint_seq,
            problem.line,
            problem.kind,
            problem.seq,
        )
    return ChainReport(True, scan.records, scan.checkpoints, head_seq, scan.checkpoint_seq)


def _check_beyond_head(store: Store, checkpoint_seq: int, head_seq: int) -> None:
    """Find rows past the head and a deleted newest checkpoint, against the head as it is now (appends go on)."""
    newer_record = select(func.min(AuditRecord.seq)).where(AuditRecord.seq > AuditHead.seq).scalar_subquery()
    newer_checkpoint = (
        select(func.min(AuditCheckpoint.seq)).where(AuditCheckpoint.seq > AuditHead.seq).scalar_subquery()
    )
    # One statement, so that it sees one snapshot even under PostgreSQL's READ COMMITTED.
    query = select(AuditHead.seq, AuditHead.checkpoint_seq, newer_record, newer_checkpoint).where(
        AuditHead.id == _HEAD_ID
    )
    with store.transaction() as session:
        row = session.execute(query).one_or_none()
    if row is None:
        raise _Problem("deleted", None, "the chain head row was deleted")
    now_seq, now_checkpoint, record_beyond, checkpoint_beyond = row
    if record_beyond is not None:
        raise _Problem("inserted", record_beyond, f"record {record_beyond} is beyond the chain head {now_seq}")
    if checkpoint_beyond is not None:
        line = f"checkpoint {checkpoint_beyond} signs a record beyond the chain head {now_seq}: records were deleted"
        raise _Problem("deleted", now_seq + 1, line)
    if checkpoint_seq < now_checkpoint <= head_seq:
        raise _Problem("missing_checkpoint", now_checkpoint, f"checkpoint {now_checkpoint} was deleted")
