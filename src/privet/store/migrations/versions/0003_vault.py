"""Pseudonym vault: encrypted token entries per tenant, and the log of restore attempts.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("lookup_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("tenant", "token_id", name="uq_vault_entries_tenant_token"),
        sa.UniqueConstraint("tenant", "lookup_hash", name="uq_vault_entries_tenant_lookup"),
    )
    op.create_index("ix_vault_entries_expires_at", "vault_entries", ["expires_at"])
    op.create_table(
        "vault_access",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(256), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("tokens_found", sa.Integer, nullable=False),
        sa.Column("tokens_restored", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_vault_access_tenant", "vault_access", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_vault_access_tenant", table_name="vault_access")
    op.drop_table("vault_access")
    op.drop_index("ix_vault_entries_expires_at", table_name="vault_entries")
    op.drop_table("vault_entries")
