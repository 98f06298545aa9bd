"""Connection, migrations and transactions."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from privet.errors import StoreError
from privet.log import get_logger

HEAD_REVISION = "0005"
_MIGRATIONS = Path(__file__).with_name("migrations")
_log = get_logger(__name__)
_THREAD_LOCK = threading.Lock()  # alembic's command API is not safe to run from two threads at once


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers run beside one writer; busy_timeout makes writers queue instead of failing;
    # secure_delete overwrites freed pages so a deleted key's wrapped bytes do not linger in the file.
    for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "secure_delete=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
    # privet issues BEGIN itself (see _sqlite_begin_immediate); the driver must not open transactions.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]


def _sqlite_begin_immediate(conn: Connection) -> None:
    # Take the write lock when a transaction starts, not at its first write: a read-check-write (a budget
    # charge, a key rotation) is then atomic across threads and processes, and never fails to upgrade
    # a read lock midway (SQLITE_BUSY without waiting).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Store:
    """A database holding privet's state. Open it with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``) and migrate to head."""
        try:
            parsed = make_url(url)
            backend = parsed.get_backend_name()
        except (ArgumentError, ValueError):
            raise StoreError(
                "the database URL cannot be parsed", "Use sqlite:///PATH or postgresql+psycopg://HOST/DB."
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"database backend {backend!r} is not supported",
                "Use sqlite:///PATH or postgresql+psycopg://HOST/DB.",
            )
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the directory of the SQLite file ({exc.strerror})", "Choose a writable path."
                ) from None
        if backend == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def revision(self) -> str | None:
        """The schema revision the database is at, or None for an empty database."""
        try:
            with self.engine.connect() as conn:
                if not self.engine.dialect.has_table(conn, "alembic_version"):
                    return None
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError as exc:
            raise StoreError(
                f"cannot open {_safe_url(str(self.engine.url))} ({type(exc.orig).__name__})",
                "Check that the URL names a reachable database (a SQLite path must be a SQLite file).",
            ) from None

    def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when it is there already."""
        if self.revision() == HEAD_REVISION:
            return
        with self._migration_lock():
            if self.revision() != HEAD_REVISION:
                self._upgrade()
        _log.info("store migrated to revision %s", HEAD_REVISION)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Serialise migrations of a SQLite file across threads and processes (PostgreSQL locks in-database)."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or database in (None, "", ":memory:"):
            with _THREAD_LOCK:
                yield
            return
        with _THREAD_LOCK, Path(f"{database}.migrate-lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Two processes opening a fresh database at once must not both create the tables.
                    conn.execute(text("SELECT pg_advisory_xact_lock(7262163)"))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"migrating the database failed ({type(exc).__name__})") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back if it raises."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise StoreError(f"the database refused the operation ({type(exc.orig).__name__})") from None
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()
