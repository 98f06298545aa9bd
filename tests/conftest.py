"""Shared fixtures for privet's tests.

Stores
    ``store_url``     a fresh, empty database URL, parametrized over ``sqlite`` and ``postgresql``. The PostgreSQL
                      case gets its own schema in database ``test`` on 127.0.0.1:5432 (dropped afterwards) and is
                      skipped, with the reason shown by ``-ra``, when PostgreSQL is not reachable.
    ``pg_url``        the PostgreSQL URL alone (fresh schema, nothing opened on it yet); skips like above.
    ``store``         ``Store.open(store_url)``: a migrated store on both backends, closed afterwards.
    ``sqlite_store``  a migrated SQLite store, for tests that do not need both backends.

Keys
    ``master_key``    a random ``env``-style master key (``LocalMasterKey``; no scrypt, so it is instant).
    ``keyring``       ``Keyring.initialize(sqlite_store, master_key)``: ``default`` (aead) and ``signing`` keys, v1.
    ``fast_kdf``      scrypt parameters with n=2**14, for passphrase tests (the production default is 2**17).

Torch
    ``one_thread``    torch at one thread for the test (restored after): faster for tiny models on a shared
                      machine, and bit-for-bit repeatable. Modules use it with ``pytest.mark.usefixtures``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import torch

from privet.crypto import Keyring, LocalMasterKey, from_env_value, new_env_value, new_kdf_params
from privet.store import HEAD_REVISION, Store

PG_HOST, PG_PORT, PG_DB, PG_USER = "127.0.0.1", 5432, "test", "postgres"
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} dbname={PG_DB} user={PG_USER}"
FAST_SCRYPT_N = 2**14


@pytest.fixture(scope="session")
def postgres_status() -> str | None:
    """None when PostgreSQL is reachable, else the reason it is not. Checked once per session."""
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to connect means "not available here"
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None


@pytest.fixture
def pg_url(postgres_status: str | None) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema; the schema is dropped (CASCADE) afterwards."""
    if postgres_status is not None:
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {postgres_status}")
    schema = f"privet_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/privet.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on the backend of ``store_url``."""
    opened = Store.open(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; ``sqlite_store`` copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "privet.db"
    Store.open(f"sqlite:///{path}").close()  # closing the last connection checkpoints and removes the WAL
    return path


@pytest.fixture
def sqlite_store(tmp_path, _migrated_sqlite_template: Path) -> Iterator[Store]:
    """A migrated, empty SQLite store in ``tmp_path`` (tests of migration itself use ``store_url``)."""
    path = tmp_path / "privet-sqlite.db"
    shutil.copyfile(_migrated_sqlite_template, path)
    opened = Store.open(f"sqlite:///{path}")
    assert opened.revision() == HEAD_REVISION
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def master_key() -> LocalMasterKey:
    """A fresh random master key of the ``env`` source."""
    return from_env_value(new_env_value())


@pytest.fixture
def keyring(sqlite_store: Store, master_key: LocalMasterKey) -> Keyring:
    """A new keyring on ``sqlite_store`` with ``default`` (aead) and ``signing`` keys at version 1."""
    return Keyring.initialize(sqlite_store, master_key)


@pytest.fixture
def fast_kdf() -> dict:
    """Fresh scrypt parameters cheap enough for tests (n=2**14)."""
    return new_kdf_params(n=FAST_SCRYPT_N)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
