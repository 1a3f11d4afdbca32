"""Pending points and campaigns: pending_credits, campaign_totals, campaign_members.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pending_credits",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("available_at", TS, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("settled_at", TS),
        sa.PrimaryKeyConstraint("app", "event_id", "reason"),
    )
    op.create_index(
        "pending_credits_due_idx",
        "pending_credits",
        ["app", "available_at"],
        postgresql_where=sa.text("state = 'PENDING'"),
    )
    op.create_index(
        "pending_credits_user_idx",
        "pending_credits",
        ["app", "user_id"],
        postgresql_where=sa.text("state = 'PENDING'"),
    )
    op.create_table(
        "campaign_totals",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("points_awarded", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "code"),
    )
    op.create_table(
        "campaign_members",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("points", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "code", "user_id"),
    )


def downgrade() -> None:
    for table in ("campaign_members", "campaign_totals", "pending_credits"):
        op.drop_table(table)
