"""Fixtures for the model-artifact tests: keyrings in fresh SQLite stores and small model directories.

Names are specific to this package (``artifact_keyring``, ``model_dir``, ...) so that they cannot clash
with fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import safetensors.torch
import torch
from torch import nn

from privet.crypto import Keyring, from_env_value, new_env_value
from privet.models.reference import ModelSpec, save_weights
from privet.store import Store

REFERENCE_SPEC = ModelSpec("mlp", 30, 2, 16)
POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
BIG_TENSOR_ELEMENTS = 800_000  # 3.2 MB of F32: the payload spans three full 1 MiB chunks and a partial one


def _open_keyring(directory: Path, template: Path) -> tuple[Store, Keyring]:
    """A new keyring (fresh keys, fresh master key) in a copy of the migrated empty database ``template``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "privet.db")
    store = Store.open(f"sqlite:///{directory}/privet.db")
    return store, Keyring.initialize(store, from_env_value(new_env_value()))


def _reference_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return REFERENCE_SPEC.build().eval()


def _write_model_dir(directory: Path, *, big: bool = False, seed: int = 0) -> Path:
    """``model.safetensors`` (the reference MLP) and ``config.json``; with ``big``, a 3.2 MB tensor file."""
    directory.mkdir(parents=True)
    save_weights(_reference_model(seed), directory / "model.safetensors")
    (directory / "config.json").write_text('{"architecture": "mlp", "hidden": 16}\n')
    if big:
        generator = torch.Generator().manual_seed(seed)
        safetensors.torch.save_file(
            {"w": torch.randn(BIG_TENSOR_ELEMENTS, generator=generator)}, directory / "big.safetensors"
        )
    return directory


@pytest.fixture(scope="session")
def migrated_artifact_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store at the newest schema; copying it is much faster than migrating each time."""
    path = tmp_path_factory.mktemp("template") / "privet.db"
    Store.open(f"sqlite:///{path}").close()
    return path


@pytest.fixture(scope="session")
def open_artifact_keyring(migrated_artifact_db: Path) -> Iterator[Callable[[Path], Keyring]]:
    """A factory for keyrings in their own store under a given directory (for module-scoped fixtures)."""
    stores: list[Store] = []

    def make(directory: Path) -> Keyring:
        store, keyring = _open_keyring(directory, migrated_artifact_db)
        stores.append(store)
        return keyring

    yield make
    for store in stores:
        store.close()


@pytest.fixture(scope="session")
def write_model_dir() -> Callable[..., Path]:
    """A factory for model directories: ``write_model_dir(path, big=False, seed=0)``."""
    return _write_model_dir


@pytest.fixture
def artifact_store(tmp_path: Path, migrated_artifact_db: Path) -> Iterator[Store]:
    (tmp_path / "keys").mkdir()
    shutil.copyfile(migrated_artifact_db, tmp_path / "keys" / "privet.db")
    store = Store.open(f"sqlite:///{tmp_path}/keys/privet.db")
    assert store.revision() is not None
    yield store
    store.close()


@pytest.fixture
def artifact_keyring(artifact_store: Store) -> Keyring:
    return Keyring.initialize(artifact_store, from_env_value(new_env_value()))


@pytest.fixture
def other_keyring(tmp_path: Path, migrated_artifact_db: Path) -> Iterator[Keyring]:
    """A second, unrelated keyring with its own keys and master key."""
    store, keyring = _open_keyring(tmp_path / "other-keys", migrated_artifact_db)
    yield keyring
    store.close()


@pytest.fixture
def reference_spec() -> ModelSpec:
    return REFERENCE_SPEC


@pytest.fixture
def reference_model() -> nn.Module:
    """The model whose weights ``model_dir`` holds (same seed)."""
    return _reference_model()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return _write_model_dir(tmp_path / "model")


@pytest.fixture
def big_model_dir(tmp_path: Path) -> Path:
    return _write_model_dir(tmp_path / "big-model", big=True)


@pytest.fixture(scope="session")
def artifact_postgres_missing() -> str | None:
    """None when PostgreSQL answers on 127.0.0.1:5432 (database ``test``), else why not."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to connect means "not available here"
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_store(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_artifact_db: Path, artifact_postgres_missing: str | None
) -> Iterator[Store]:
    """A migrated store for the registry index, once on SQLite and once on PostgreSQL (in a fresh schema)."""
    if request.param == "sqlite":
        (tmp_path / "index").mkdir()
        shutil.copyfile(migrated_artifact_db, tmp_path / "index" / "privet.db")
        store = Store.open(f"sqlite:///{tmp_path}/index/privet.db")
        yield store
        store.close()
        return
    if artifact_postgres_missing is not None:
        pytest.skip(f"PostgreSQL is not reachable, so only the SQLite case ran ({artifact_postgres_missing})")
    schema = f"privet_models_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        store = Store.open(f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}")
        yield store
        store.close()
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
