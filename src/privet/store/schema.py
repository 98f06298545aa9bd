"""Tables of the store. Change them only together with a migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use privet.store.schema.utcnow()")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class KeyringMeta(Base):
    """One row: how the keyring's master key is obtained, and a value that proves it is the right one."""

    __tablename__ = "keyring_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    master_source: Mapped[str] = mapped_column(String(16))
    kdf: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    check: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class KeyRecord(Base):
    """One version of a named key; ``wrapped`` is None once the version is deleted (crypto-shredded)."""

    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_keys_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    public: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ArtifactRecord(Base):
    """The registry index: where a packed model lives and what it claims, for listing without opening it."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_artifacts_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    encrypted: Mapped[bool] = mapped_column()
    key_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signer: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BudgetRecord(Base):
    """A privacy budget (epsilon, delta) for one tenant and data set, under a named accountant."""

    __tablename__ = "privacy_budgets"
    __table_args__ = (UniqueConstraint("tenant", "dataset", name="uq_privacy_budgets_tenant_dataset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[str] = mapped_column(String(256))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    accountant: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChargeRecord(Base):
    """One release charged to a budget: its accounting events and the composed epsilon after it."""

    __tablename__ = "privacy_charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("privacy_budgets.id"), index=True)
    description: Mapped[str] = mapped_column(String(512))
    events: Mapped[list] = mapped_column(JSON)
    epsilon_after: Mapped[float] = mapped_column(Float)
    accountant: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VaultEntry(Base):
    """One pseudonym of the vault: a token and its value, encrypted under the tenant's key.

    ``ciphertext`` is nonce || AES-GCM(value) under the tenant key at ``key_version``, its associated data binding
    tenant, token, entity and key version. ``lookup_hash`` is an HMAC of (entity, value) under a key derived from
    the same tenant key version, so the same value gets the same token without the value being stored in clear.
    """

    __tablename__ = "vault_entries"
    __table_args__ = (
        UniqueConstraint("tenant", "token_id", name="uq_vault_entries_tenant_token"),
        UniqueConstraint("tenant", "lookup_hash", name="uq_vault_entries_tenant_lookup"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str] = mapped_column(String(16))
    entity: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer)
    lookup_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)


class VaultAccessRecord(Base):
    """One restore attempt on the vault: who, why, how many tokens; never a value or a token."""

    __tablename__ = "vault_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    principal: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(256))
    operation: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    tokens_found: Mapped[int] = mapped_column(Integer)
    tokens_restored: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditRecord(Base):
    """One served request in the hash-chained audit log: who, what, the decision; never personal data.

    ``hash`` is SHA-256(``prev_hash`` || canonical JSON of the record with its ``seq``), so editing, deleting,
    inserting or reordering rows breaks the chain. ``checkpoint_seq`` names the newest checkpoint written before
    the record, so deleting a checkpoint is detected by the records after it.
    """

    __tablename__ = "audit_records"
    __table_args__ = (Index("ix_audit_records_tenant_seq", "tenant", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True)
    route: Mapped[str] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision: Mapped[str] = mapped_column(String(16))
    entities: Mapped[dict] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement that the audit chain had head ``hash`` at ``seq``: Ed25519 by the key ``signer``."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    signer: Mapped[str] = mapped_column(String(48))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class AuditHead(Base):
    """One row (id 1): the newest record's sequence number and hash, and the newest checkpoint's sequence number.

    Appenders lock this row, so concurrent writers (threads or processes) extend the chain one after another.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger)


class TenantRecord(Base):
    """A tenant of the gateway: an organisation whose keys, sessions and records are isolated from others'."""

    __tablename__ = "gateway_tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKeyRecord(Base):
    """An API key: its public id, tenant, role, scopes and limits, and the keyed digest of its secret."""

    __tablename__ = "gateway_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("gateway_tenants.name"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)
    label: Mapped[str] = mapped_column(String(128))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_queries: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_window: Mapped[int] = mapped_column(Integer)
