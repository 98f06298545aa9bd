"""Foundation: keyring, key versions, model registry index.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyring_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("master_source", sa.String(16), nullable=False),
        sa.Column("kdf", sa.JSON, nullable=True),
        sa.Column("check", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=True),
        sa.Column("public", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", "version", name="uq_keys_name_version"),
    )
    op.create_index("ix_keys_name", "keys", ["name"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.Column("key_name", sa.String(64), nullable=True),
        sa.Column("key_version", sa.Integer, nullable=True),
        sa.Column("signer", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
    )
    op.create_index("ix_artifacts_name", "artifacts", ["name"])


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_index("ix_keys_name", table_name="keys")
    op.drop_table("keys")
    op.drop_table("keyring_meta")
