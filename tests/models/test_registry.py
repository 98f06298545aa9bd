"""The model registry: immutable versions under a root directory, indexed in the store."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from privet.crypto import Keyring
from privet.errors import KeyDestroyedError, NotFoundError, UsageError
from privet.models import Entry, Registry, read, verify
from privet.models.reference import ModelSpec, load_weights
from privet.store import Store


@pytest.fixture
def registry(registry_store: Store, tmp_path: Path) -> Registry:
    """A registry whose index is on SQLite and on PostgreSQL in turn (the keyring stays on SQLite)."""
    return Registry(registry_store, tmp_path / "home" / "registry")


def _indexed(entry: Entry) -> Entry:
    """``entry`` without its timestamp (see test_add_and_resolve_return_the_same_entry)."""
    return dataclasses.replace(entry, created_at=None)  # type: ignore[arg-type]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except the SQLite store (whose bytes change with each transaction)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {"keys", "index"} & set(p.relative_to(root).parts)
    }


def _add(registry: Registry, source: Path, keys: Keyring, version: str, *, encrypted: bool, name: str = "mlp") -> Entry:
    return registry.add(
        source,
        name=name,
        version=version,
        signer=keys.signing_key(),
        keys=keys if encrypted else None,
        metadata=ModelSpec("mlp", 30, 2, 16).to_metadata(),
    )


def test_add_lists_and_resolves(registry: Registry, model_dir: Path, artifact_keyring: Keyring) -> None:
    encrypted = _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    plain = _add(registry, model_dir, artifact_keyring, "2", encrypted=False)
    fingerprint = artifact_keyring.signing_key().verify_key.fingerprint

    assert encrypted.path == (registry.root / "mlp" / "1.pvm").resolve()
    assert plain.path == (registry.root / "mlp" / "2.pvm").resolve()
    assert (encrypted.encrypted, encrypted.key_name, encrypted.key_version) == (True, "default", 1)
    assert (plain.encrypted, plain.key_name, plain.key_version) == (False, None, None)
    for entry in (encrypted, plain):
        assert entry.signer == fingerprint
        assert entry.sha256 == _sha256(entry.path)
        assert entry.size == entry.path.stat().st_size
    assert [(e.name, e.version) for e in registry.entries()] == [("mlp", "1"), ("mlp", "2")]
    assert registry.entries("mlp") == registry.entries()
    assert registry.entries("other") == []

    assert registry.resolve("mlp").version == "2"  # the newest
    assert registry.resolve("mlp:1") == registry.entries()[0]
    assert _indexed(registry.resolve("mlp:1")) == _indexed(encrypted)
    assert registry.resolve("mlp:2").encrypted is False

    verified = read(encrypted.path, artifact_keyring.verify_key, artifact_keyring)
    assert (verified.key_name, verified.key_version) == ("default", 1)
    model = load_weights(ModelSpec.from_metadata(verified.manifest.metadata), verified.files["model.safetensors"])
    assert not model.training
    assert verify(plain.path, artifact_keyring.verify_key).manifest.version == "2"


def test_newest_is_the_latest_registered(registry: Registry, model_dir: Path, artifact_keyring: Keyring) -> None:
    for version in ("1", "3", "2"):
        _add(registry, model_dir, artifact_keyring, version, encrypted=False)
    _add(registry, model_dir, artifact_keyring, "1", encrypted=False, name="other")
    assert registry.resolve("mlp").version == "2"
    assert registry.resolve("other").version == "1"
    assert [e.version for e in registry.entries("mlp")] == ["1", "3", "2"]


@pytest.mark.parametrize("reference", ["unknown", "unknown:1", "mlp:9", "mlp:1:2"])
def test_unknown_reference_is_not_found(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring, reference: str
) -> None:
    _add(registry, model_dir, artifact_keyring, "1", encrypted=False)
    with pytest.raises(NotFoundError) as refused:
        registry.resolve(reference)
    assert refused.value.one_line().startswith("error: ")


def test_empty_registry_resolves_nothing(registry: Registry) -> None:
    assert registry.entries() == []
    with pytest.raises(NotFoundError):
        registry.resolve("mlp")


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_versions_are_immutable(
    registry: Registry, model_dir: Path, big_model_dir: Path, artifact_keyring: Keyring, encrypted: bool
) -> None:
    first = _add(registry, model_dir, artifact_keyring, "1", encrypted=encrypted)
    before = first.path.read_bytes()

    for plain_or_not in (True, False):
        with pytest.raises(UsageError, match="already registered"):
            _add(registry, big_model_dir, artifact_keyring, "1", encrypted=plain_or_not)

    assert first.path.read_bytes() == before
    assert [_indexed(e) for e in registry.entries()] == [_indexed(first)]
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["1.pvm"]
    verify(first.path, artifact_keyring.verify_key, artifact_keyring)


def test_file_in_the_way_is_not_overwritten(registry: Registry, model_dir: Path, artifact_keyring: Keyring) -> None:
    stray = registry.root / "mlp" / "1.pvm"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not indexed")
    with pytest.raises(UsageError, match="not in the index"):
        _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    assert stray.read_bytes() == b"not indexed"
    assert registry.entries() == []


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("../evil", "1"),
        ("..", "1"),
        ("a/../../evil", "1"),
        ("/tmp/evil", "1"),
        (".hidden", "1"),
        ("", "1"),
        ("mlp", "../../evil"),
        ("mlp", "../1"),
        ("mlp", "a/b"),
        ("mlp", ""),
        ("evil\n", "1"),
        ("mlp", "1\n"),
        ("x" * 129, "1"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring, tmp_path: Path, name: str, version: str
) -> None:
    before = _files(tmp_path)
    with pytest.raises(UsageError) as refused:
        _add(registry, model_dir, artifact_keyring, version, encrypted=True, name=name)
    assert refused.value.one_line().startswith("error: ")
    assert _files(tmp_path) == before
    assert not registry.root.exists()
    assert registry.entries() == []


def test_failed_pack_leaves_no_index_row_and_no_file(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring
) -> None:
    (model_dir / "weights.pt").write_bytes(b"pickle")
    with pytest.raises(UsageError):
        _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    assert registry.entries() == []
    assert not (registry.root / "mlp" / "1.pvm").exists()
    (model_dir / "weights.pt").unlink()
    assert _add(registry, model_dir, artifact_keyring, "1", encrypted=True).version == "1"


def test_rewrap_updates_the_index(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring, registry_store: Store
) -> None:
    encrypted = _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    plain = _add(registry, model_dir, artifact_keyring, "2", encrypted=False)
    plain_bytes = plain.path.read_bytes()
    assert registry.rewrap(artifact_keyring, "default") == []  # nothing to do before a rotation

    artifact_keyring.rotate("default")
    changed = registry.rewrap(artifact_keyring, "default")

    assert [(e.name, e.version, e.key_version) for e in changed] == [("mlp", "1", 2)]
    entry = registry.resolve("mlp:1")
    assert (entry.key_name, entry.key_version) == ("default", 2)
    assert entry.sha256 == _sha256(entry.path) != encrypted.sha256
    assert entry.size == entry.path.stat().st_size
    assert plain.path.read_bytes() == plain_bytes
    assert _indexed(registry.resolve("mlp:2")) == _indexed(plain)
    assert verify(entry.path, artifact_keyring.verify_key, artifact_keyring).key_version == 2

    artifact_keyring.delete("default", 1)
    assert read(entry.path, artifact_keyring.verify_key, artifact_keyring).key_version == 2
    assert registry.rewrap(artifact_keyring, "default") == []
    # A fresh view of the same store sees the same index.
    assert Registry(registry_store, registry.root).resolve("mlp:1").key_version == 2


def test_rewrap_of_another_key_name_changes_nothing(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring
) -> None:
    artifact_keyring.create("models", "aead")
    entry = registry.add(
        model_dir,
        name="mlp",
        version="1",
        signer=artifact_keyring.signing_key(),
        keys=artifact_keyring,
        key_name="models",
    )
    assert (entry.key_name, entry.key_version) == ("models", 1)
    artifact_keyring.rotate("default")
    assert registry.rewrap(artifact_keyring, "default") == []
    artifact_keyring.rotate("models")
    assert [e.key_version for e in registry.rewrap(artifact_keyring, "models")] == [2]


def test_artifact_under_a_deleted_key_stays_listed_but_unreadable(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring
) -> None:
    entry = _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    artifact_keyring.rotate("default")
    artifact_keyring.delete("default", 1)
    assert _indexed(registry.resolve("mlp")) == _indexed(entry)
    with pytest.raises(KeyDestroyedError):
        verify(entry.path, artifact_keyring.verify_key, artifact_keyring)
    assert registry.resolve("mlp").key_version == 1


def test_add_and_resolve_return_the_same_entry(registry: Registry, model_dir: Path, artifact_keyring: Keyring) -> None:
    added = _add(registry, model_dir, artifact_keyring, "1", encrypted=False)
    found = registry.resolve("mlp:1")
    assert found.created_at.tzinfo is not None
    assert abs(found.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert found == added


def test_rewrap_skips_artifacts_under_shredded_versions_and_continues(
    registry: Registry, model_dir: Path, artifact_keyring: Keyring
) -> None:
    old = _add(registry, model_dir, artifact_keyring, "1", encrypted=True)
    artifact_keyring.rotate("default")
    artifact_keyring.delete("default", 1)
    newer = _add(registry, model_dir, artifact_keyring, "2", encrypted=True)
    artifact_keyring.rotate("default")
    changed = registry.rewrap(artifact_keyring, "default")
    assert [(e.version, e.key_version) for e in changed] == [("2", 3)]
    assert registry.resolve("mlp:1").key_version == old.key_version == 1
    assert newer.key_version == 2
    verify(registry.resolve("mlp:2").path, artifact_keyring.verify_key, artifact_keyring)
