"""Tenants and API keys: issued once, stored as keyed digests, checked in constant time, expiring and rotatable.

An API key reads ``pvt_<id>_<secret>``: a 10-character public id (how the key is found and named in audit
records) and a 43-character secret (256 random bits, URL-safe base64). The store keeps only the secret's
HMAC-SHA256 under the keyring key ``gateway-api-keys`` (never the secret), so a copy of the database gives no
usable key; a presented key is looked up by id and its digest compared with :func:`hmac.compare_digest`.

A key carries its tenant, role, the models it may call (or all), an optional expiry, and its limits: a request
rate (per second, with a burst) and a query budget (at most ``budget_queries`` per model in each window of
``budget_window`` seconds), against model extraction and membership inference by volume.

Rotation issues a new key with the same role, models and limits and lets the old one live ``grace`` more
seconds, so clients can switch without an outage. Revocation is immediate in the store; a running gateway
caches a checked key for at most ``cache_seconds`` (default 2 s), which bounds how long a revoked key still
works there.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from privet.crypto import Keyring
from privet.crypto.keyed import keyed_digest
from privet.errors import KeyNotFoundError, NotFoundError, PrivetError, UsageError
from privet.serve.access import Principal, Role
from privet.serve.limits import Limits
from privet.store import ApiKeyRecord, Store, TenantRecord
from privet.store.schema import utcnow

__all__ = ["ApiKeys", "IssuedKey", "KeyInfo", "UnauthenticatedError"]

_KEY_NAME = "gateway-api-keys"
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_LENGTH = 10
_PREFIX = "pvt"


class UnauthenticatedError(PrivetError):
    """No valid credentials (HTTP 401)."""


@dataclass(frozen=True)
class KeyInfo:
    """What an admin may see of a key (never the secret or its digest)."""

    key_id: str
    tenant: str
    role: str
    models: list[str] | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    limits: Limits


@dataclass(frozen=True, repr=False)
class IssuedKey:
    """A new key: ``token`` is shown once and never stored."""

    info: KeyInfo
    token: str

    def __repr__(self) -> str:
        return f"IssuedKey({self.info.key_id!r}, token=<secret>)"


@dataclass(frozen=True)
class _Checked:
    digest: bytes
    principal: Principal
    limits: Limits
    expires_at: float | None  # epoch seconds
    fetched: float


def _info(row: ApiKeyRecord) -> KeyInfo:
    limits = Limits(row.rate, row.burst, row.budget_queries, row.budget_window)
    return KeyInfo(row.key_id, row.tenant, row.role, row.models, row.label, row.created_at, row.expires_at,
                   row.revoked_at, limits)  # fmt: skip


def _check_tenant(name: str) -> str:
    if not (1 <= len(name) <= 64 and name.replace("-", "").replace("_", "").isalnum() and name.isascii()):
        raise UsageError(f"tenant name {name[:64]!r} is not 1-64 letters, digits, - or _")
    return name


class ApiKeys:
    """Tenants and keys in ``store``, digests under ``keyring``'s ``gateway-api-keys`` key."""

    def __init__(self, store: Store, keyring: Keyring, *, cache_seconds: float = 2.0) -> None:
        self._store, self._keyring, self._cache_seconds = store, keyring, cache_seconds
        self._cache: dict[str, _Checked] = {}
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def _digest_key(self) -> bytes:
        if self._key is None:
            try:
                data_key = self._keyring.data_key(_KEY_NAME)
            except KeyNotFoundError:
                self._keyring.create(_KEY_NAME, "aead")
                data_key = self._keyring.data_key(_KEY_NAME)
            self._key = data_key.material
        return self._key

    def _digest(self, secret: str) -> bytes:
        return keyed_digest(self._digest_key(), b"privet api key\0" + secret.encode())

    # -- tenants ------------------------------------------------------------------------------------------------

    def create_tenant(self, name: str) -> None:
        name = _check_tenant(name)
        with self._store.transaction() as session:
            if session.get(TenantRecord, name) is not None:
                raise UsageError(f"tenant {name!r} already exists")
            session.add(TenantRecord(name=name, created_at=utcnow()))

    def tenants(self) -> list[str]:
        with self._store.transaction() as session:
            return list(session.scalars(select(TenantRecord.name).order_by(TenantRecord.name)))

    # -- keys ---------------------------------------------------------------------------------------------------

    def issue(
        self,
        tenant: str,
        role: str,
        *,
        models: Iterable[str] | None = None,
        ttl: timedelta | None = None,
        label: str = "",
        limits: Limits | None = None,
    ) -> IssuedKey:
        """A new key for ``tenant`` (which must exist) with ``role``."""
        limits = limits or Limits()
        try:
            role = Role(role).value
        except ValueError:
            raise UsageError(f"unknown role {role[:32]!r}", f"Roles: {', '.join(r.value for r in Role)}.") from None
        if len(label) > 128:
            raise UsageError("a key label has at most 128 characters")
        for value in (limits.rate, limits.burst, limits.budget_queries):
            if value is not None and not value > 0:
                raise UsageError("rate, burst and budget must be positive")
        if limits.budget_window < 1:
            raise UsageError("the budget window must be at least 1 second")
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        now = utcnow()
        row = ApiKeyRecord(
            key_id=key_id, tenant=tenant, role=role, models=sorted(set(models)) if models is not None else None,
            label=label, digest=self._digest(secret), created_at=now, expires_at=now + ttl if ttl else None,
            revoked_at=None, rate=limits.rate, burst=limits.burst, budget_queries=limits.budget_queries,
            budget_window=limits.budget_window,
        )  # fmt: skip
        with self._store.transaction() as session:
            if session.get(TenantRecord, tenant) is None:
                raise NotFoundError(f"no tenant {tenant!r}", f"Create it: privet admin tenants create {tenant}")
            session.add(row)
        return IssuedKey(_info(row), f"{_PREFIX}_{key_id}_{secret}")

    def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        with self._store.transaction() as session:
            query = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at)
            if tenant is not None:
                query = query.where(ApiKeyRecord.tenant == tenant)
            return [_info(row) for row in session.scalars(query)]

    def _row(self, session: object, key_id: str) -> ApiKeyRecord:
        row = session.get(ApiKeyRecord, key_id)  # type: ignore[attr-defined]
        if row is None:
            raise NotFoundError(f"no API key {key_id[:16]!r}")
        return row  # type: ignore[no-any-return]

    def revoke(self, key_id: str) -> KeyInfo:
        with self._store.transaction() as session:
            row = self._row(session, key_id)
            row.revoked_at = row.revoked_at or utcnow()
            info = _info(row)
        with self._lock:
            self._cache.pop(key_id, None)
        return info

    def rotate(self, key_id: str, *, grace: timedelta = timedelta(hours=1)) -> IssuedKey:
        """A new key like ``key_id``; the old one expires after ``grace`` (sooner if it already would)."""
        with self._store.transaction() as session:
            old = self._row(session, key_id)
            if old.revoked_at is not None:
                raise UsageError(f"key {key_id} is revoked", "Issue a new key instead.")
            ttl = old.expires_at - old.created_at if old.expires_at is not None else None
            spec = (old.tenant, old.role, old.models, old.label, Limits(old.rate, old.burst, old.budget_queries,
                                                                         old.budget_window))  # fmt: skip
            deadline = utcnow() + grace
            old.expires_at = min(old.expires_at, deadline) if old.expires_at is not None else deadline
        with self._lock:
            self._cache.pop(key_id, None)
        tenant, role, models, label, limits = spec
        return self.issue(tenant, role, models=models, ttl=ttl, label=label, limits=limits)

    def authenticate(self, token: str) -> tuple[Principal, Limits]:
        """The principal and limits of a presented key; :class:`UnauthenticatedError` for anything else."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != _ID_LENGTH or not parts[2]:
            raise UnauthenticatedError("the API key is malformed", "Send Authorization: Bearer pvt_<id>_<secret>.")
        key_id, secret = parts[1], parts[2]
        now = time.monotonic()
        with self._lock:
            checked = self._cache.get(key_id)
        if checked is None or now - checked.fetched > self._cache_seconds:
            checked = self._load(key_id, now)
        # Constant time in the secret: the id is public, the digest comparison must not leak how much matched.
        if checked is None or not hmac.compare_digest(checked.digest, self._digest(secret)):
            raise UnauthenticatedError("the API key is not valid", "Check the key, or ask an admin for a new one.")
        if checked.expires_at is not None and time.time() >= checked.expires_at:
            raise UnauthenticatedError("the API key has expired", "Ask an admin to rotate or issue a key.")
        return checked.principal, checked.limits

    def _load(self, key_id: str, now: float) -> _Checked | None:
        with self._store.transaction() as session:
            row = session.get(ApiKeyRecord, key_id)
            if row is None or row.revoked_at is not None:
                checked = None
            else:
                principal = Principal.of(row.tenant, row.role, f"key:{row.key_id}", row.models)
                limits = Limits(row.rate, row.burst, row.budget_queries, row.budget_window)
                expires = row.expires_at.timestamp() if row.expires_at is not None else None
                checked = _Checked(bytes(row.digest), principal, limits, expires, now)
        with self._lock:
            if checked is None:
                self._cache.pop(key_id, None)
            else:
                self._cache[key_id] = checked
        return checked
