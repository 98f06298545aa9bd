"""Persistence behind one small interface: SQLite file by default, PostgreSQL by URL.

``Store.open(url)`` connects and brings the schema to the newest migration; ``store.transaction()``
yields a SQLAlchemy session that commits on success and rolls back on error. Tables are in
:mod:`privet.store.schema`.
"""

from privet.store.db import HEAD_REVISION, Store
from privet.store.schema import (
    ApiKeyRecord,
    ArtifactRecord,
    AuditCheckpoint,
    AuditHead,
    AuditRecord,
    Base,
    BudgetRecord,
    ChargeRecord,
    KeyRecord,
    KeyringMeta,
    TenantRecord,
    VaultAccessRecord,
    VaultEntry,
)

__all__ = [
    "HEAD_REVISION",
    "ApiKeyRecord",
    "ArtifactRecord",
    "AuditCheckpoint",
    "AuditHead",
    "AuditRecord",
    "Base",
    "BudgetRecord",
    "ChargeRecord",
    "KeyRecord",
    "KeyringMeta",
    "Store",
    "TenantRecord",
    "VaultAccessRecord",
    "VaultEntry",
]
