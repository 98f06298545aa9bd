"""The keyring: lifecycle, rotation, crypto-shredding, master keys, and what may be shown about keys."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from privet.crypto import (
    DEFAULT_AEAD,
    DEFAULT_SIGNING,
    Keyring,
    KmsMasterKey,
    LocalMasterKey,
    from_env_value,
    from_passphrase,
    new_env_value,
)
from privet.errors import (
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyringError,
    MasterKeyError,
    UsageError,
)
from privet.store import KeyRecord, KeyringMeta, Store


class AesKms:
    """A stand-in KMS: AES-256-GCM under a key it never hands out, with the context as associated data."""

    def __init__(self) -> None:
        self._key = AESGCM.generate_key(256)
        self.calls: list[str] = []

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        self.calls.append("wrap")
        nonce = os.urandom(12)
        return nonce + AESGCM(self._key).encrypt(nonce, plaintext, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        self.calls.append("unwrap")
        return AESGCM(self._key).decrypt(blob[:12], blob[12:], context)


class ExplodingKms(AesKms):
    """Wraps fine; unwrapping fails with an exception whose text must not reach the user."""

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        raise RuntimeError("kms-internal-detail arn:aws:kms:eu-1:123456789012:key/abcd token=s3cr3t")


@pytest.fixture
def any_keyring(store: Store, master_key: LocalMasterKey) -> Keyring:
    """A new keyring on both backends (the ``keyring`` fixture is SQLite only)."""
    return Keyring.initialize(store, master_key)


def _row(store: Store, name: str, version: int) -> KeyRecord:
    with store.transaction() as session:
        return session.scalars(select(KeyRecord).where(KeyRecord.name == name, KeyRecord.version == version)).one()


def _versions(keyring: Keyring) -> list[tuple[str, int, bool, bool]]:
    return [(k.name, k.version, k.primary, k.destroyed) for k in keyring.versions()]


# -- lifecycle -------------------------------------------------------------------------------------


def test_initialize_creates_default_and_signing_keys(store: Store, master_key: LocalMasterKey) -> None:
    keyring = Keyring.initialize(store, master_key)
    infos = {k.name: k for k in keyring.versions()}
    assert set(infos) == {DEFAULT_AEAD, DEFAULT_SIGNING}
    assert (infos["default"].purpose, infos["default"].version, infos["default"].primary) == ("aead", 1, True)
    assert (infos["signing"].purpose, infos["signing"].version, infos["signing"].primary) == ("signing", 1, True)
    assert infos["default"].fingerprint is None
    assert infos["signing"].fingerprint is not None
    assert infos["signing"].fingerprint.startswith("ed25519:")
    assert len(keyring.data_key().material) == 32
    meta = Keyring.meta(store)
    assert meta is not None
    assert meta.master_source == "env"


def test_initialize_twice_is_refused(store: Store, master_key: LocalMasterKey) -> None:
    Keyring.initialize(store, master_key)
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.initialize(store, from_env_value(new_env_value()))
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.initialize(store, master_key)
    # The first keyring is untouched.
    assert Keyring.unlock(store, master_key).data_key().version == 1


def test_unlock_reads_the_same_keys(any_keyring: Keyring, store: Store, master_key: LocalMasterKey) -> None:
    material = any_keyring.data_key().material
    reopened = Keyring.unlock(store, master_key)  # a new object: nothing cached
    assert reopened.data_key().material == material
    message = b"hello"
    signature = any_keyring.signing_key().sign(message)
    fingerprint = reopened.signing_key().verify_key.fingerprint
    reopened.verify_key(fingerprint).verify(signature, message)


def test_unlock_without_keyring(sqlite_store: Store, master_key: LocalMasterKey) -> None:
    with pytest.raises(KeyringError, match="no keyring exists") as info:
        Keyring.unlock(sqlite_store, master_key)
    assert type(info.value) is KeyringError


def test_unlock_with_wrong_master_is_refused(any_keyring: Keyring, store: Store) -> None:
    with pytest.raises(MasterKeyError, match="does not open this keyring"):
        Keyring.unlock(store, from_env_value(new_env_value()))


def test_passphrase_master(store: Store, fast_kdf: dict) -> None:
    Keyring.initialize(store, from_passphrase("correct horse battery", fast_kdf), fast_kdf)
    meta = Keyring.meta(store)
    assert meta is not None
    assert meta.master_source == "passphrase"
    assert meta.kdf == fast_kdf  # salt and cost survive the JSON column
    Keyring.unlock(store, from_passphrase("correct horse battery", meta.kdf))
    with pytest.raises(MasterKeyError):
        Keyring.unlock(store, from_passphrase("correct horse battery!", meta.kdf))


# -- rotation and deletion -------------------------------------------------------------------------


def test_rotate(any_keyring: Keyring) -> None:
    v1 = any_keyring.data_key().material
    info = any_keyring.rotate(DEFAULT_AEAD)
    assert (info.name, info.version, info.primary, info.destroyed) == ("default", 2, True, False)
    assert any_keyring.data_key().version == 2
    assert any_keyring.data_key().material != v1
    assert any_keyring.data_key(version=1).material == v1
    assert ("default", 1, False, False) in _versions(any_keyring)
    assert ("default", 2, True, False) in _versions(any_keyring)


def test_rotate_unknown_key(keyring: Keyring) -> None:
    with pytest.raises(KeyNotFoundError):
        keyring.rotate("nope")


def test_delete_primary_alone_is_refused(any_keyring: Keyring, store: Store) -> None:
    with pytest.raises(KeyringError, match="primary version") as info:
        any_keyring.delete(DEFAULT_AEAD, 1)
    assert "rotate" in info.value.hint
    assert _row(store, "default", 1).wrapped is not None
    any_keyring.rotate(DEFAULT_AEAD)
    with pytest.raises(KeyringError, match="primary version"):
        any_keyring.delete(DEFAULT_AEAD, 2)


def test_delete_old_version_shreds_it(any_keyring: Keyring, store: Store, master_key: LocalMasterKey) -> None:
    any_keyring.rotate(DEFAULT_AEAD)
    any_keyring.data_key(version=1)  # cached in this object: deletion must drop it too
    deleted = any_keyring.delete(DEFAULT_AEAD, 1)
    assert [(k.name, k.version, k.destroyed) for k in deleted] == [("default", 1, True)]
    with pytest.raises(KeyDestroyedError, match="v1 was deleted"):
        any_keyring.data_key(version=1)
    with pytest.raises(KeyDestroyedError):
        Keyring.unlock(store, master_key).data_key(version=1)
    row = _row(store, "default", 1)
    assert row.wrapped is None
    assert row.destroyed_at is not None
    assert _row(store, "default", 2).wrapped is not None
    assert any_keyring.data_key().version == 2  # new writes still have a key
    with pytest.raises(KeyDestroyedError, match="already deleted"):
        any_keyring.delete(DEFAULT_AEAD, 1)
    with pytest.raises(KeyNotFoundError):
        any_keyring.delete(DEFAULT_AEAD, 7)


def test_delete_whole_key(any_keyring: Keyring, store: Store) -> None:
    any_keyring.rotate(DEFAULT_AEAD)
    deleted = any_keyring.delete(DEFAULT_AEAD)
    assert sorted(k.version for k in deleted) == [1, 2]
    assert all(k.destroyed and not k.primary for k in deleted)
    for version in (None, 1, 2):
        with pytest.raises(KeyDestroyedError):
            any_keyring.data_key(version=version)
    assert _row(store, "default", 1).wrapped is None
    assert _row(store, "default", 2).wrapped is None
    assert any_keyring.signing_key().version == 1  # other keys are unaffected
    with pytest.raises(KeyNotFoundError):
        any_keyring.delete("nope")


def test_versions_lists_everything(keyring: Keyring) -> None:
    keyring.create("reports", "aead")
    keyring.rotate("reports")
    keyring.rotate("reports")
    keyring.delete("reports", 1)
    assert _versions(keyring) == [
        ("default", 1, True, False),
        ("reports", 1, False, True),
        ("reports", 2, False, False),
        ("reports", 3, True, False),
        ("signing", 1, True, False),
    ]


# -- key names and purposes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "Upper", "-leading-dash", ".dot", "a" * 65, "has space", "naïve", "slash/name", "semi;colon"]
)
def test_invalid_key_names(keyring: Keyring, name: str) -> None:
    with pytest.raises(UsageError, match="is not valid"):
        keyring.create(name, "aead")


def test_key_name_with_trailing_newline_is_invalid(keyring: Keyring) -> None:
    with pytest.raises(UsageError):
        keyring.create("abc\n", "aead")


@pytest.mark.parametrize("name", ["a", "a" * 64, "models.v2", "team:ml_1", "0-x"])
def test_valid_key_names(keyring: Keyring, name: str) -> None:
    assert keyring.create(name, "aead").version == 1
    assert keyring.data_key(name).name == name


def test_create_refusals(keyring: Keyring) -> None:
    with pytest.raises(UsageError, match="purpose"):
        keyring.create("other", "bogus")  # type: ignore[arg-type]
    with pytest.raises(KeyringError, match="already exists"):
        keyring.create(DEFAULT_AEAD, "aead")


def test_key_lookups(keyring: Keyring) -> None:
    with pytest.raises(UsageError, match="is a signing key"):
        keyring.data_key(DEFAULT_SIGNING)
    with pytest.raises(UsageError, match="is a aead key"):
        keyring.signing_key(DEFAULT_AEAD)
    with pytest.raises(KeyNotFoundError):
        keyring.data_key("nope")
    with pytest.raises(KeyNotFoundError, match="no version 9"):
        keyring.data_key(version=9)


# -- secrets stay secret ---------------------------------------------------------------------------


def test_reprs_never_show_key_bytes(keyring: Keyring) -> None:
    data_key = keyring.data_key()
    signing = keyring.signing_key()
    private_raw = signing.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    texts = [repr(data_key), str(data_key), repr(signing), *(repr(k) for k in keyring.versions())]
    for text in texts:
        for secret in (data_key.material, private_raw):
            assert secret.hex() not in text
            assert secret.hex().upper() not in text
            assert repr(secret) not in text
    assert "material=<secret>" in repr(data_key)


# -- master keys -----------------------------------------------------------------------------------


def test_change_master(any_keyring: Keyring, store: Store, master_key: LocalMasterKey, fast_kdf: dict) -> None:
    any_keyring.rotate(DEFAULT_AEAD)
    any_keyring.delete(DEFAULT_AEAD, 1)
    material = any_keyring.data_key().material
    signing_fp = any_keyring.signing_key().verify_key.fingerprint
    new_master = from_passphrase("a new passphrase", fast_kdf)

    assert any_keyring.change_master(new_master, fast_kdf) == 2  # default v2 and signing v1; v1 stays shredded

    with pytest.raises(MasterKeyError):
        Keyring.unlock(store, master_key)
    meta = Keyring.meta(store)
    assert meta is not None
    assert (meta.master_source, meta.kdf) == ("passphrase", fast_kdf)
    reopened = Keyring.unlock(store, from_passphrase("a new passphrase", meta.kdf))
    assert reopened.data_key().material == material
    assert reopened.signing_key().verify_key.fingerprint == signing_fp
    with pytest.raises(KeyDestroyedError):
        reopened.data_key(version=1)
    # The old master cannot unwrap the stored key versions either (they were re-wrapped, not copied).
    with pytest.raises(MasterKeyError):
        Keyring(store, master_key).data_key()
    assert _row(store, "default", 1).wrapped is None


def test_verify_key_of_deleted_signing_version(keyring: Keyring) -> None:
    old = keyring.signing_key()
    signature = old.sign(b"model")
    keyring.rotate(DEFAULT_SIGNING)
    assert keyring.verify_key(old.verify_key.fingerprint).version == 1  # rotated, still trusted
    keyring.delete(DEFAULT_SIGNING, 1)
    with pytest.raises(IntegrityError, match="no longer trusted"):
        keyring.verify_key(old.verify_key.fingerprint)
    with pytest.raises(KeyDestroyedError):
        keyring.signing_key(version=1)
    new = keyring.signing_key()
    assert new.version == 2
    keyring.verify_key(new.verify_key.fingerprint).verify(new.sign(b"model"), b"model")
    with pytest.raises(IntegrityError):
        keyring.verify_key(new.verify_key.fingerprint).verify(signature, b"model")


def test_verify_key_unknown_fingerprint(keyring: Keyring) -> None:
    with pytest.raises(IntegrityError, match="not a trusted key"):
        keyring.verify_key("ed25519:" + "0" * 32)


def test_kms_master(store: Store) -> None:
    kms = AesKms()
    keyring = Keyring.initialize(store, KmsMasterKey(kms))
    keyring.rotate(DEFAULT_AEAD)
    material = keyring.data_key(version=1).material
    assert "wrap" in kms.calls
    meta = Keyring.meta(store)
    assert meta is not None
    assert meta.master_source == "kms"

    reopened = Keyring.unlock(store, KmsMasterKey(kms))
    assert reopened.data_key(version=1).material == material
    assert "unwrap" in kms.calls
    with pytest.raises(MasterKeyError, match="refused to unwrap"):
        Keyring.unlock(store, KmsMasterKey(AesKms()))  # another KMS key


def test_kms_plugin_errors_do_not_leak(sqlite_store: Store) -> None:
    Keyring.initialize(sqlite_store, KmsMasterKey(ExplodingKms()))
    with pytest.raises(MasterKeyError) as info:
        Keyring.unlock(sqlite_store, KmsMasterKey(ExplodingKms()))
    exc = info.value
    text = " ".join([str(exc), exc.message, exc.hint, exc.one_line(), repr(exc)])
    for leaked in ("kms-internal-detail", "arn:aws", "s3cr3t", "123456789012"):
        assert leaked not in text
    assert "RuntimeError" in exc.message  # the kind of failure, not its text
    assert exc.__cause__ is None
    assert exc.__suppress_context__


def test_meta_row_is_single(keyring: Keyring, sqlite_store: Store) -> None:
    with sqlite_store.transaction() as session:
        assert len(session.scalars(select(KeyringMeta)).all()) == 1
