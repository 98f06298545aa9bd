"""The keyring: named, versioned keys wrapped by a master key and kept in the store.

- ``rotate`` adds a version that becomes primary; older versions still decrypt and verify.
- ``delete`` crypto-shreds: the wrapped key bytes are erased, so whatever was encrypted under that
  version can never be decrypted again, and a signing version stops being trusted.
- ``change_master`` re-wraps every live version under a new master key in one transaction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from privet.crypto.master import MasterKey
from privet.crypto.signing import SigningKey, VerifyKey, fingerprint
from privet.errors import (
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyringError,
    MasterKeyError,
    UsageError,
)
from privet.store import KeyRecord, KeyringMeta, Store
from privet.store.schema import utcnow

Purpose = Literal["aead", "signing"]
DEFAULT_AEAD = "default"
DEFAULT_SIGNING = "signing"
_CHECK = b"privet keyring check v1"
_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")


def _context(name: str, version: int, purpose: str) -> bytes:
    return f"privet keyring v1|{name}|{version}|{purpose}".encode()


def validate_key_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"key name {name!r} is not valid", "Use 1-64 characters: lower-case letters, digits and . _ : -"
        )
    return name


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about one key version (never the key itself)."""

    name: str
    version: int
    purpose: str
    primary: bool
    destroyed: bool
    created_at: datetime
    fingerprint: str | None


@dataclass(frozen=True, repr=False)
class DataKey:
    """A 256-bit symmetric key, with its name and version."""

    name: str
    version: int
    material: bytes

    def __repr__(self) -> str:
        return f"DataKey(name={self.name!r}, version={self.version}, material=<secret>)"


class Keyring:
    """Open with :meth:`unlock` (existing) or :meth:`initialize` (new)."""

    def __init__(self, store: Store, master: MasterKey) -> None:
        self._store = store
        self._master = master
        self._cache: dict[tuple[str, int], bytes] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    @staticmethod
    def meta(store: Store) -> KeyringMeta | None:
        with store.transaction() as session:
            return session.get(KeyringMeta, 1)

    @classmethod
    def initialize(cls, store: Store, master: MasterKey, kdf: dict | None = None) -> Keyring:
        """Create the keyring with a ``default`` AEAD key and a ``signing`` key, version 1 each."""
        try:
            with store.transaction() as session:
                if session.get(KeyringMeta, 1) is not None:
                    raise KeyringError(
                        "a keyring already exists in this store",
                        "Use it, or point PRIVET_HOME at a new directory.",
                    )
                session.add(
                    KeyringMeta(id=1, master_source=master.source, kdf=kdf, check=master.wrap(_CHECK, b"check"))
                )
        except DbIntegrityError:
            raise KeyringError("a keyring was created concurrently in this store", "Use the existing one.") from None
        keyring = cls(store, master)
        keyring.create(DEFAULT_AEAD, "aead")
        keyring.create(DEFAULT_SIGNING, "signing")
        return keyring

    @classmethod
    def unlock(cls, store: Store, master: MasterKey) -> Keyring:
        """Open an existing keyring, refusing a master key that is not the one it was created with."""
        meta = cls.meta(store)
        if meta is None:
            raise KeyringError("no keyring exists yet", "Run 'privet keys init' first.")
        if master.unwrap(meta.check, b"check") != _CHECK:
            raise MasterKeyError("the master key does not open this keyring")
        return cls(store, master)

    def change_master(self, new_master: MasterKey, kdf: dict | None = None) -> int:
        """Re-wrap every live key version under ``new_master``; returns how many were re-wrapped."""
        with self._store.transaction() as session:
            rows = session.scalars(select(KeyRecord).where(KeyRecord.wrapped.is_not(None))).all()
            for row in rows:
                context = _context(row.name, row.version, row.purpose)
                row.wrapped = new_master.wrap(self._master.unwrap(row.wrapped, context), context)
            meta = session.get(KeyringMeta, 1)
            meta.master_source = new_master.source
            meta.kdf = kdf
            meta.check = new_master.wrap(_CHECK, b"check")
        self._master = new_master
        return len(rows)

    # -- key management ----------------------------------------------------------------------------
    def create(self, name: str, purpose: Purpose) -> KeyInfo:
        """Add a new named key at version 1."""
        validate_key_name(name)
        if purpose not in ("aead", "signing"):
            raise UsageError(f"key purpose {purpose!r} is not one of aead, signing")
        if self._records(name):
            raise KeyringError(f"key {name!r} already exists", f"Rotate it with 'privet keys rotate {name}'.")
        return self._add_version(name, 1, purpose)

    def rotate(self, name: str) -> KeyInfo:
        """Add a version to ``name``; it becomes the primary (used for new writes)."""
        records = self._records(name)
        if not records:
            raise KeyNotFoundError(f"key {name!r} does not exist")
        return self._add_version(name, records[-1].version + 1, records[-1].purpose)

    def delete(self, name: str, version: int | None = None) -> list[KeyInfo]:
        """Crypto-shred one version, or every version when ``version`` is None.

        Deleting the primary version alone is refused: rotate first so that new writes have a key.
        """
        with self._store.transaction() as session:
            rows = session.scalars(select(KeyRecord).where(KeyRecord.name == name).order_by(KeyRecord.version)).all()
            if not rows:
                raise KeyNotFoundError(f"key {name!r} does not exist")
            if version is not None:
                targets = [r for r in rows if r.version == version]
                if not targets:
                    raise KeyNotFoundError(f"key {name!r} has no version {version}")
                if targets[0].wrapped is None:
                    raise KeyDestroyedError(f"key {name} v{version} was already deleted", "Nothing to do.")
                if targets[0] is rows[-1]:
                    raise KeyringError(
                        f"v{version} is the primary version of key {name!r}",
                        f"Run 'privet keys rotate {name}' first, or delete the whole key.",
                    )
            else:
                targets = [r for r in rows if r.wrapped is not None]
            now = utcnow()
            for row in targets:
                row.wrapped = None
                row.destroyed_at = now
                self._cache.pop((name, row.version), None)
        return [self._info(r, r is rows[-1]) for r in targets]

    def versions(self) -> list[KeyInfo]:
        """Every version of every key, by name then version."""
        with self._store.transaction() as session:
            rows = session.scalars(select(KeyRecord).order_by(KeyRecord.name, KeyRecord.version)).all()
        last = {r.name: r.version for r in rows}
        return [self._info(r, r.version == last[r.name]) for r in rows]

    # -- using keys --------------------------------------------------------------------------------
    def data_key(self, name: str = DEFAULT_AEAD, version: int | None = None) -> DataKey:
        """The AEAD key ``name`` at ``version`` (the primary when None)."""
        record = self._record(name, version, "aead")
        return DataKey(record.name, record.version, self._material(record))

    def signing_key(self, name: str = DEFAULT_SIGNING, version: int | None = None) -> SigningKey:
        record = self._record(name, version, "signing")
        private = Ed25519PrivateKey.from_private_bytes(self._material(record))
        return SigningKey(record.name, record.version, private)

    def verify_key(self, key_fingerprint: str) -> VerifyKey:
        """The trusted public key with this fingerprint; deleted (revoked) versions are not trusted."""
        with self._store.transaction() as session:
            rows = session.scalars(select(KeyRecord).where(KeyRecord.purpose == "signing")).all()
        for row in rows:
            if row.public is not None and fingerprint(row.public) == key_fingerprint:
                if row.wrapped is None:
                    raise IntegrityError(
                        f"the signer {row.name} v{row.version} was deleted from the keyring and is no longer trusted",
                        "Re-sign the artifact with a live signing key.",
                    )
                return VerifyKey(row.name, row.version, Ed25519PublicKey.from_public_bytes(row.public))
        raise IntegrityError(
            f"the signer {key_fingerprint} is not a trusted key of this keyring",
            "Pass the signer's public key with --trust if you trust it.",
        )

    # -- internals ---------------------------------------------------------------------------------
    def _records(self, name: str) -> list[KeyRecord]:
        with self._store.transaction() as session:
            return list(
                session.scalars(select(KeyRecord).where(KeyRecord.name == name).order_by(KeyRecord.version)).all()
            )

    def _record(self, name: str, version: int | None, purpose: str) -> KeyRecord:
        records = self._records(name)
        if not records:
            raise KeyNotFoundError(f"key {name!r} does not exist")
        if records[0].purpose != purpose:
            raise UsageError(f"key {name!r} is a {records[0].purpose} key, not a {purpose} key")
        record = records[-1] if version is None else next((r for r in records if r.version == version), None)
        if record is None:
            raise KeyNotFoundError(f"key {name!r} has no version {version}", "The data may come from another keyring.")
        if record.wrapped is None:
            raise KeyDestroyedError(f"key {name} v{record.version} was deleted")
        return record

    def _material(self, record: KeyRecord) -> bytes:
        cache_key = (record.name, record.version)
        if cache_key not in self._cache:
            context = _context(record.name, record.version, record.purpose)
            self._cache[cache_key] = self._master.unwrap(record.wrapped, context)
        return self._cache[cache_key]

    def _add_version(self, name: str, version: int, purpose: str) -> KeyInfo:
        public = None
        if purpose == "signing":
            private = Ed25519PrivateKey.generate()
            material = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            material = os.urandom(32)
        record = KeyRecord(
            name=name,
            version=version,
            purpose=purpose,
            wrapped=self._master.wrap(material, _context(name, version, purpose)),
            public=public,
            created_at=utcnow(),
        )
        try:
            with self._store.transaction() as session:
                session.add(record)
        except DbIntegrityError:
            raise KeyringError(f"key {name!r} was changed concurrently", "Run the command again.") from None
        self._cache[(name, version)] = material
        return self._info(record, True)

    @staticmethod
    def _info(record: KeyRecord, primary: bool) -> KeyInfo:
        return KeyInfo(
            name=record.name,
            version=record.version,
            purpose=record.purpose,
            primary=primary and record.wrapped is not None,
            destroyed=record.wrapped is None,
            created_at=record.created_at,
            fingerprint=fingerprint(record.public) if record.public is not None else None,
        )
