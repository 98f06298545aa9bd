"""The store: connection, migrations, transactions, and errors that say what is wrong without secrets."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy.exc
from sqlalchemy import inspect, select

from privet.errors import StoreError
from privet.store import HEAD_REVISION, KeyRecord, Store

TABLES = {"alembic_version", "keyring_meta", "keys", "artifacts"}


def _record(name: str = "k", version: int = 1) -> KeyRecord:
    return KeyRecord(name=name, version=version, purpose="aead", wrapped=b"\x01" * 60)


def _names(store: Store) -> list[tuple[str, int]]:
    with store.transaction() as session:
        return [(r.name, r.version) for r in session.scalars(select(KeyRecord).order_by(KeyRecord.id))]


# -- migrations ------------------------------------------------------------------------------------


def test_open_migrates_to_head(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        assert store.dialect == store_url.split(":")[0].split("+")[0]
        assert store.revision() == HEAD_REVISION
        assert set(inspect(store.engine).get_table_names()) >= TABLES
    finally:
        store.close()


def test_open_without_migrate_leaves_database_empty(store_url: str) -> None:
    store = Store.open(store_url, migrate=False)
    try:
        assert store.revision() is None
        assert not TABLES & set(inspect(store.engine).get_table_names())
        store.migrate()
        assert store.revision() == HEAD_REVISION
    finally:
        store.close()


def test_opening_again_is_a_no_op(store_url: str) -> None:
    first = Store.open(store_url)
    with first.transaction() as session:
        session.add(_record("survives"))
    first.close()

    second = Store.open(store_url)
    try:
        assert second.revision() == HEAD_REVISION
        assert _names(second) == [("survives", 1)]  # the tables were not re-created
        second.migrate()
        assert second.revision() == HEAD_REVISION
    finally:
        second.close()


# -- transactions ----------------------------------------------------------------------------------


def test_transaction_commits(store: Store) -> None:
    with store.transaction() as session:
        session.add(_record("a"))
        session.add(_record("b"))
    assert _names(store) == [("a", 1), ("b", 1)]


def test_transaction_rolls_back_on_exception(store: Store) -> None:
    with store.transaction() as session:
        session.add(_record("kept"))

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), store.transaction() as session:
        session.add(_record("lost"))
        session.flush()  # the row reached the database inside the transaction
        assert session.scalar(select(KeyRecord).where(KeyRecord.name == "lost")) is not None
        raise BoomError
    assert _names(store) == [("kept", 1)]


def test_unique_name_version(store: Store) -> None:
    with store.transaction() as session:
        session.add(_record("dup", 1))
    with pytest.raises(sqlalchemy.exc.IntegrityError), store.transaction() as session:
        session.add(_record("dup", 1))
    with store.transaction() as session:
        session.add(_record("dup", 2))  # another version of the same name is fine
    assert _names(store) == [("dup", 1), ("dup", 2)]


# -- errors ----------------------------------------------------------------------------------------


def _assert_clean(exc: StoreError, *secrets: str) -> None:
    text = " ".join([str(exc), exc.message, exc.hint, exc.one_line(), repr(exc)])
    for secret in secrets:
        assert secret not in text
    assert exc.__cause__ is None
    assert exc.one_line().startswith("error: ")
    assert "\n" not in exc.one_line()


@pytest.mark.parametrize("url", ["not a url", "://nothing", ""])
def test_unparseable_url(url: str) -> None:
    with pytest.raises(StoreError, match="cannot be parsed") as info:
        Store.open(url)
    _assert_clean(info.value)


def test_url_with_bad_port_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://u:secretpw@127.0.0.1:notaport/x")
    _assert_clean(info.value, "secretpw")


def test_unsupported_backend() -> None:
    with pytest.raises(StoreError, match="'mysql' is not supported") as info:
        Store.open("mysql://u:secretpw@127.0.0.1/x")
    _assert_clean(info.value, "secretpw")


@pytest.mark.parametrize(
    "url", ["postgresql://u:secretpw@127.0.0.1:1/x", "postgresql+psycopg://u:secretpw@127.0.0.1:1/x"]
)
def test_unreachable_postgres_is_a_store_error(url: str) -> None:
    with pytest.raises(StoreError, match="cannot open") as info:
        Store.open(url)
    _assert_clean(info.value, "secretpw")
    assert "127.0.0.1:1" in info.value.message  # says where it tried


def test_sqlite_file_that_is_not_a_database(tmp_path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(StoreError):
        Store.open(f"sqlite:///{path}")


def test_sqlite_path_under_a_file(tmp_path) -> None:
    (tmp_path / "plainfile").write_text("x")
    with pytest.raises(StoreError):
        Store.open(f"sqlite:///{tmp_path}/plainfile/sub/privet.db")


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_open_of_fresh_postgres_schema(pg_url: str) -> None:
    barrier = threading.Barrier(2)
    results: list[object] = []

    def open_store() -> None:
        barrier.wait(timeout=10)
        try:
            store = Store.open(pg_url)
            results.append(store.revision())
            store.close()
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [HEAD_REVISION, HEAD_REVISION]


def test_concurrent_first_open_of_a_sqlite_file_processes_and_threads(tmp_path) -> None:
    """Several processes (and threads) opening one fresh SQLite file at once all get a migrated store."""
    import subprocess
    import sys
    import threading

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    code = f"from privet.store import Store; s = Store.open({url!r}); print(s.revision()); s.close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    errors: list[BaseException] = []

    def open_in_thread() -> None:
        try:
            Store.open(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_in_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    outputs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    for thread in threads:
        thread.join()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    assert outputs == [HEAD_REVISION] * 4
    assert errors == []
