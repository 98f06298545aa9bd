"""Privacy ledger: budgets per tenant and data set, and the charges made against them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("accountant", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "dataset", name="uq_privacy_budgets_tenant_dataset"),
    )
    op.create_table(
        "privacy_charges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("budget_id", sa.Integer, sa.ForeignKey("privacy_budgets.id"), nullable=False, index=True),
        sa.Column("description", sa.String(512), nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("epsilon_after", sa.Float, nullable=False),
        sa.Column("accountant", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("privacy_charges")
    op.drop_table("privacy_budgets")
