"""Audit chain: hash-chained request records, signed checkpoints, and the chain head row.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GENESIS = "0" * 64  # the "previous hash" of record 1


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("model_digest", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("entities", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_records_tenant_seq", "audit_records", ["tenant", "seq"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signer", sa.String(48), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
    )
    # The one row appenders lock; seeded here so that the first appends never race to create it.
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS, "checkpoint_seq": 0}])


def downgrade() -> None:
    op.drop_table("audit_chain_head")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_records_tenant_seq", table_name="audit_records")
    op.drop_table("audit_records")
