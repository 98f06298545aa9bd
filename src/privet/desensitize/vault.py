"""The pseudonym vault: reversible tokens, their values encrypted in the store under a per-tenant key.

A token looks like ``<<PERSON_7K3M9Q2B>>``: the entity type and eight Crockford base32 characters (40 random
bits, unique per tenant, drawn again on a collision). It is plain ASCII, contains no character that Markdown,
JSON or a language model tends to rewrite, and is unlikely to occur in ordinary text; :data:`TOKEN_PATTERN`
finds tokens in free text.

Storage (table ``vault_entries``)
    Each tenant has its own keyring key ``vault-<tenant>`` (AEAD, created on first use). Two sub-keys are
    derived from it with HKDF-SHA256: one encrypts the value (AES-256-GCM, random 96-bit nonce, associated data
    binding tenant, token id, entity and key version, so a ciphertext cannot be moved to another row), the other
    computes the lookup hash, an HMAC-SHA256 of (entity, value). A unique constraint on (tenant, lookup hash)
    gives the same value of the same entity in the same tenant the same token across documents, runs and
    threads, without the value ever being stored in clear. After a key rotation, lookups try every live key
    version, so earlier tokens stay consistent; new entries are written under the primary version.

Expiry
    ``tokenize(..., ttl=...)`` sets an expiry; tokenizing a value that already has a live token returns that
    token and keeps it alive as long as the longer of the two lifetimes (no ttl: no expiry). An expired entry is
    never restored; tokenizing its value again issues a fresh token. :meth:`Vault.purge_expired` deletes expired
    entries.

Restoring
    Restoration is gated by an explicit :class:`RestoreGrant` (principal, purpose, and ``allowed``, the decision
    of the caller's role system); without ``allowed=True`` it raises :class:`RestoreDeniedError`. Every attempt,
    granted or not, is written to ``vault_access`` (tenant, principal, purpose, operation, outcome, token
    counts; never a value or a token) before any value is returned. Replacement is a single pass over the
    token matches of the original text, so values containing regex syntax, backslashes or tokens are inserted
    verbatim and never re-scanned.

    Tokens that cannot be restored (unknown, of another tenant, expired, or whose entity prefix was altered)
    are left in place and counted when ``strict=False`` (the default, for free text where a token-like string
    may be a coincidence); with ``strict=True`` (request paths) the call raises :class:`UnknownTokenError` and
    releases nothing. A token under a deleted key is never "left in place": it raises
    :class:`~privet.errors.KeyDestroyedError`, as does any restore on a forgotten tenant.

Forgetting
    :meth:`Vault.forget_tenant` crypto-shreds the tenant key (every version) through the keyring and deletes the
    tenant's entries; nothing of it can be restored afterwards, even from a backup of the database.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from privet.crypto import DataKey, Keyring
from privet.crypto.keyed import Aead, derive_key, keyed_digest
from privet.errors import (
    IntegrityError,
    KeyDestroyedError,
    KeyNotFoundError,
    KeyringError,
    PrivetError,
    StoreError,
    UsageError,
)
from privet.store import KeyRecord, Store, VaultAccessRecord, VaultEntry
from privet.store.schema import utcnow

if TYPE_CHECKING:
    from privet.desensitize.operators import OperatorContext

__all__ = [
    "TOKEN_PATTERN",
    "RestoreDeniedError",
    "RestoreGrant",
    "RestoreResult",
    "UnknownTokenError",
    "Vault",
    "VaultError",
    "VaultOperator",
    "format_token",
]

# Crockford base32: no I, L, O, U, so a token survives being read aloud or retyped.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_LENGTH = 8
TOKEN_PATTERN = re.compile(r"<<(?P<entity>[A-Z][A-Z0-9_]{0,31})_(?P<id>[0-9A-HJKMNP-TV-Z]{8})>>")
_ENTITY = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
_ENTITY_MAX = 32
_TENANT = re.compile(r"[a-z0-9][a-z0-9._:-]{0,57}")  # "vault-" + tenant is a valid keyring key name
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_PURPOSE_MAX = 256
_KEY_PREFIX = "vault-"
_ATTEMPTS = 16  # token-id collisions and lost insert races are retried this many times
_IN_CHUNK = 500  # token ids per IN (...) query
_UTF8 = "surrogatepass"  # any Python str round-trips exactly
_ENC_INFO = b"privet vault v1 encryption"
_LOOKUP_INFO = b"privet vault v1 lookup"


class VaultError(PrivetError):
    """A vault operation was refused."""

    default_hint = "See 'privet keys list' for the tenant's vault key, and the vault access log."


class RestoreDeniedError(VaultError):
    """Restoring tokens was refused: the caller has no grant."""

    default_hint = "Pass RestoreGrant(principal, purpose, allowed=True) once the caller's role allows restoring."


class UnknownTokenError(VaultError):
    """A strict restore met tokens that are unknown, expired or of another tenant; nothing was released."""

    default_hint = "Nothing was restored. The tokens may have expired, or come from another tenant or vault."


@dataclass(frozen=True)
class RestoreGrant:
    """Permission to restore, decided by the caller's role system; recorded with every restore.

    ``principal`` names who restores (a user or service id, not personal data), ``purpose`` says why, in words
    fit for an audit log. ``allowed`` must be exactly ``True``; anything else is a refusal.
    """

    principal: str
    purpose: str
    allowed: bool

    def __post_init__(self) -> None:
        if not isinstance(self.principal, str) or not _PRINCIPAL.fullmatch(self.principal):
            raise UsageError("the restore principal is not valid", "Use 1-128 letters, digits and . _ : / @ + -")
        if not isinstance(self.purpose, str) or not self.purpose.strip() or len(self.purpose) > _PURPOSE_MAX:
            raise UsageError("the restore purpose must be 1-256 characters", "Say why the values are restored.")


@dataclass(frozen=True)
class RestoreResult:
    """A restored text and how many token occurrences were replaced or left in place."""

    text: str
    restored: int
    unresolved: int

    def __repr__(self) -> str:
        return f"RestoreResult(text=<{len(self.text)} chars>, restored={self.restored}, unresolved={self.unresolved})"


def format_token(entity: str, token_id: str) -> str:
    return f"<<{entity}_{token_id}>>"


def _new_token_id() -> str:
    bits = int.from_bytes(secrets.token_bytes(5), "big")  # 40 bits, 5 per character
    return "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(_ID_LENGTH - 1, -1, -1))


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise UsageError(
            f"vault tenant name {tenant!r} is not valid", "Use 1-58 characters: lower-case letters, digits and . _ : -"
        )
    return tenant


def _check_entity(entity: str) -> str:
    if not isinstance(entity, str) or len(entity) > _ENTITY_MAX or not _ENTITY.fullmatch(entity):
        raise UsageError(
            "the entity type is not valid", "Use an upper-case name of up to 32 letters, digits and single _"
        )
    return entity


def _subkey(key: DataKey, info: bytes) -> bytes:
    return derive_key(key.material, info)


def _aad(tenant: str, token_id: str, entity: str, version: int) -> bytes:
    return f"privet vault v1|{tenant}|{token_id}|{entity}|{version}".encode()


def _lookup_hash(key: DataKey, entity: str, value: str) -> bytes:
    message = entity.encode() + b"\x00" + value.encode("utf-8", _UTF8)
    return keyed_digest(_subkey(key, _LOOKUP_INFO), message)


def _later(current: datetime | None, requested: datetime | None) -> datetime | None:
    if current is None or requested is None:
        return None
    return max(current, requested)


def _live(row: VaultEntry, now: datetime) -> bool:
    return row.expires_at is None or row.expires_at > now


class Vault:
    """The pseudonym vault of one tenant, in ``store``, with keys from ``keyring``."""

    def __init__(self, store: Store, keyring: Keyring, tenant: str) -> None:
        self._store = store
        self._keyring = keyring
        self.tenant = _check_tenant(tenant)
        self.key_name = _KEY_PREFIX + tenant

    def __repr__(self) -> str:
        return f"Vault(tenant={self.tenant!r})"

    # -- tokenizing ----------------------------------------------------------------------------------
    def tokenize(self, value: str, entity: str, *, ttl: timedelta | None = None) -> str:
        """The token of ``value`` as ``entity``: the existing live one, or a new one stored encrypted."""
        if not isinstance(value, str) or not value:
            raise UsageError("the value to tokenize must be a non-empty string")
        _check_entity(entity)
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl <= timedelta(0)):
            raise UsageError("the token ttl must be a positive timedelta", "Pass ttl=None for no expiry.")
        keys = self._live_keys()
        primary = keys[-1]
        hashes_ = [_lookup_hash(key, entity, value) for key in keys]
        for _ in range(_ATTEMPTS):
            try:
                return self._tokenize_once(value, entity, ttl, primary, hashes_)
            except DbIntegrityError:
                continue  # another writer took the token id or inserted this value first: look again
        raise StoreError(f"could not store a token in vault {self.tenant!r} after {_ATTEMPTS} attempts")

    def _tokenize_once(
        self, value: str, entity: str, ttl: timedelta | None, primary: DataKey, hashes_: Sequence[bytes]
    ) -> str:
        with self._store.transaction() as session:
            now = utcnow()
            expires = None if ttl is None else now + ttl
            rows = session.scalars(
                select(VaultEntry)
                .where(VaultEntry.tenant == self.tenant, VaultEntry.lookup_hash.in_(hashes_))
                .order_by(VaultEntry.key_version.desc())
            ).all()
            for row in rows:
                if _live(row, now):
                    later = _later(row.expires_at, expires)
                    if later != row.expires_at:
                        session.execute(update(VaultEntry).where(VaultEntry.id == row.id).values(expires_at=later))
                    return format_token(row.entity, row.token_id)
            if rows:  # only expired entries: they are never restored again, so this value gets a new token
                session.execute(delete(VaultEntry).where(VaultEntry.id.in_([r.id for r in rows])))
            token_id = _new_token_id()
            sealed = Aead(_subkey(primary, _ENC_INFO)).seal(
                value.encode("utf-8", _UTF8), _aad(self.tenant, token_id, entity, primary.version)
            )
            session.add(
                VaultEntry(
                    tenant=self.tenant,
                    token_id=token_id,
                    entity=entity,
                    ciphertext=sealed,
                    key_version=primary.version,
                    lookup_hash=hashes_[-1],
                    created_at=now,
                    expires_at=expires,
                )
            )
            session.flush()
        return format_token(entity, token_id)

    # -- restoring -----------------------------------------------------------------------------------
    def restore(self, text: str, *, grant: RestoreGrant, strict: bool = False) -> str:
        """``text`` with every token of this tenant replaced by its value (see :meth:`restore_detailed`)."""
        return self.restore_detailed(text, grant=grant, strict=strict).text

    def restore_detailed(self, text: str, *, grant: RestoreGrant, strict: bool = False) -> RestoreResult:
        """Restore ``text``, and say how many tokens were replaced and how many were left in place.

        Raises :class:`RestoreDeniedError` without a grant, :class:`UnknownTokenError` when ``strict`` and a token
        cannot be restored, :class:`~privet.errors.KeyDestroyedError` for tokens under a deleted key.
        """
        if not isinstance(text, str):
            raise UsageError("the text to restore must be a string")
        self._authorize(grant, "restore")
        matches = list(TOKEN_PATTERN.finditer(text))
        values = self._resolve(grant, "restore", [(m["entity"], m["id"]) for m in matches], len(matches))
        pieces: list[str] = []
        position = restored = 0
        for match in matches:
            pieces.append(text[position : match.start()])
            value = values.get((match["entity"], match["id"]))
            if value is None:
                pieces.append(match.group(0))
            else:
                pieces.append(value)
                restored += 1
            position = match.end()
        pieces.append(text[position:])
        unresolved = len(matches) - restored
        self._finish(grant, "restore", strict, len(matches), restored, unresolved)
        return RestoreResult("".join(pieces), restored, unresolved)

    def restore_values(self, tokens: Iterable[str], *, grant: RestoreGrant, strict: bool = False) -> dict[str, str]:
        """The value of each restorable token, fetched in one query; unrestorable ones are absent (or raise)."""
        self._authorize(grant, "restore_values")
        wanted = list(dict.fromkeys(tokens))
        parsed: list[tuple[str, str]] = []
        for token in wanted:
            match = TOKEN_PATTERN.fullmatch(token) if isinstance(token, str) else None
            if match is None:
                raise UsageError("restore_values was given a string that is not a vault token")
            parsed.append((match["entity"], match["id"]))
        values = self._resolve(grant, "restore_values", parsed, len(parsed))
        result = {token: values[key] for token, key in zip(wanted, parsed, strict=True) if key in values}
        self._finish(grant, "restore_values", strict, len(wanted), len(result), len(wanted) - len(result))
        return result

    def _authorize(self, grant: RestoreGrant, operation: str) -> None:
        if isinstance(grant, RestoreGrant) and grant.allowed is True:
            return
        if isinstance(grant, RestoreGrant):
            self._record(grant.principal, grant.purpose, operation, "denied", 0, 0)
            raise RestoreDeniedError(f"principal {grant.principal!r} may not restore tokens of {self.tenant!r}")
        self._record("-", "-", operation, "denied", 0, 0)
        raise RestoreDeniedError(f"restoring tokens of {self.tenant!r} needs a RestoreGrant")

    def _resolve(
        self, grant: RestoreGrant, operation: str, keys: Sequence[tuple[str, str]], found: int
    ) -> dict[tuple[str, str], str]:
        """Decrypt the live entries of ``keys`` ((entity, token id) pairs) of this tenant."""
        if not keys:
            return {}
        try:
            return self._decrypt_entries(keys)
        except (KeyDestroyedError, IntegrityError):
            self._record(grant.principal, grant.purpose, operation, "failed", found, 0)
            raise

    def _decrypt_entries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not self._live_versions(create=False):
            return {}  # this tenant never tokenized anything (a forgotten tenant raised KeyDestroyedError)
        ids = sorted({token_id for _, token_id in keys})
        with self._store.transaction() as session:
            rows = [
                row
                for start in range(0, len(ids), _IN_CHUNK)
                for row in session.scalars(
                    select(VaultEntry).where(
                        VaultEntry.tenant == self.tenant, VaultEntry.token_id.in_(ids[start : start + _IN_CHUNK])
                    )
                )
            ]
        now = utcnow()
        wanted = set(keys)
        ciphers: dict[int, Aead] = {}
        values: dict[tuple[str, str], str] = {}
        for row in rows:
            if (row.entity, row.token_id) not in wanted or not _live(row, now):
                continue
            if row.key_version not in ciphers:
                data_key = self._keyring.data_key(self.key_name, row.key_version)
                ciphers[row.key_version] = Aead(_subkey(data_key, _ENC_INFO))
            try:
                plain = ciphers[row.key_version].open(
                    row.ciphertext, _aad(self.tenant, row.token_id, row.entity, row.key_version)
                )
            except IntegrityError:
                raise IntegrityError(
                    f"a vault entry of tenant {self.tenant!r} failed verification",
                    "The entry was modified or moved in the database; nothing was restored.",
                ) from None
            values[(row.entity, row.token_id)] = plain.decode("utf-8", _UTF8)
        return values

    def _finish(self, grant: RestoreGrant, operation: str, strict: bool, found: int, restored: int, left: int) -> None:
        """Record the restore; refuse it (recorded as such) when strict and tokens were left unresolved."""
        if strict and left:
            self._record(grant.principal, grant.purpose, operation, "refused", found, 0)
            raise UnknownTokenError(
                f"{left} of {found} tokens are unknown, expired or of another tenant than {self.tenant!r}"
            )
        self._record(grant.principal, grant.purpose, operation, "restored", found, restored)

    def _record(self, principal: str, purpose: str, operation: str, outcome: str, found: int, restored: int) -> None:
        with self._store.transaction() as session:
            session.add(
                VaultAccessRecord(
                    tenant=self.tenant,
                    principal=principal,
                    purpose=" ".join(purpose.split())[:_PURPOSE_MAX],
                    operation=operation,
                    outcome=outcome,
                    tokens_found=found,
                    tokens_restored=restored,
                    created_at=utcnow(),
                )
            )

    # -- housekeeping --------------------------------------------------------------------------------
    def purge_expired(self) -> int:
        """Delete this tenant's expired entries; returns how many were deleted."""
        with self._store.transaction() as session:
            result = session.execute(
                delete(VaultEntry).where(
                    VaultEntry.tenant == self.tenant,
                    VaultEntry.expires_at.is_not(None),
                    VaultEntry.expires_at <= utcnow(),
                )
            )
            return result.rowcount

    def forget_tenant(self) -> int:
        """Crypto-shred the tenant key (every version) and delete the tenant's entries; returns the entry count.

        Irreversible: no token of this tenant can be restored afterwards, and the tenant name cannot tokenize
        again (its key name stays taken by the deleted key).
        """
        with contextlib.suppress(KeyNotFoundError):  # the tenant never tokenized anything
            self._keyring.delete(self.key_name)
        with self._store.transaction() as session:
            return session.execute(delete(VaultEntry).where(VaultEntry.tenant == self.tenant)).rowcount

    # -- keys ----------------------------------------------------------------------------------------
    def _versions(self) -> list[tuple[int, bool]]:
        """(version, destroyed) of the tenant key, oldest first."""
        with self._store.transaction() as session:
            rows = session.execute(
                select(KeyRecord.version, KeyRecord.wrapped.is_(None))
                .where(KeyRecord.name == self.key_name)
                .order_by(KeyRecord.version)
            ).all()
        return [(version, bool(destroyed)) for version, destroyed in rows]

    def _live_versions(self, *, create: bool) -> list[int]:
        """The live versions of the tenant key, primary last; [] when it does not exist and ``create`` is false."""
        versions = self._versions()
        if not versions:
            if not create:
                return []
            with contextlib.suppress(KeyringError):  # created concurrently by another writer
                self._keyring.create(self.key_name, "aead")
            versions = self._versions()
        live = [version for version, destroyed in versions if not destroyed]
        if not live:
            raise KeyDestroyedError(
                f"the vault key of tenant {self.tenant!r} was deleted",
                "The tenant was forgotten: its tokens can never be restored, and it cannot tokenize again.",
            )
        return live

    def _live_keys(self) -> list[DataKey]:
        """The live versions of the tenant key (created on first use), primary last."""
        return [self._keyring.data_key(self.key_name, version) for version in self._live_versions(create=True)]


class VaultOperator:
    """The vault as a desensitization operator: replaces a value with its reversible token."""

    name = "vault"

    def __init__(self, vault: Vault, *, ttl: timedelta | None = None) -> None:
        self.vault = vault
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"VaultOperator(tenant={self.vault.tenant!r}, ttl={self.ttl!r})"

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        return self.vault.tokenize(value, entity, ttl=self.ttl)
