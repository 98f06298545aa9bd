"""Gateway tenants and API keys (keyed digests of the secrets, never the secrets).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_tenants",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "gateway_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("tenant", sa.String(64), sa.ForeignKey("gateway_tenants.name"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("models", sa.JSON, nullable=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate", sa.Float, nullable=True),
        sa.Column("burst", sa.Integer, nullable=True),
        sa.Column("budget_queries", sa.Integer, nullable=True),
        sa.Column("budget_window", sa.Integer, nullable=False),
    )
    op.create_index("ix_gateway_keys_tenant", "gateway_keys", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_gateway_keys_tenant", "gateway_keys")
    op.drop_table("gateway_keys")
    op.drop_table("gateway_tenants")
