"""Levels: apps and program versions, requests, members, growth by day, events, badges, tier
changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("app", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("program", JSONB, nullable=False),
        sa.Column("clock_offset_seconds", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "program_versions",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("program", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "version"),
    )
    op.create_table(
        "requests",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("response", JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "request_id"),
    )
    op.create_table(
        "members",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("attributes", JSONB, nullable=False, server_default="{}"),
        sa.Column("lifetime_growth", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tier", sa.Text, nullable=False, server_default=""),
        sa.Column("granted_tier", sa.Text),
        sa.Column("program_version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("evaluated_day", sa.Date),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id"),
    )
    op.create_table(
        "growth_days",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("counted", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "user_id", "day"),
    )
    op.create_table(
        "growth_events",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("response", JSONB),
        sa.Column("reversed", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("reversal", JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "event_id"),
    )
    op.create_table(
        "action_days",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id", "action", "day"),
    )
    op.create_table(
        "action_counts",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "user_id", "action"),
    )
    op.create_table(
        "member_badges",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("reward_points", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("earned_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id", "code"),
    )
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("from_tier", sa.Text, nullable=False),
        sa.Column("to_tier", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("ref", sa.Text, nullable=False, server_default=""),
        sa.Column("operator", sa.Text, nullable=False, server_default=""),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("changed_at", TS, nullable=False),
    )
    op.create_index("tier_changes_member_idx", "tier_changes", ["app", "user_id", "id"])


def downgrade() -> None:
    for table in (
        "tier_changes",
        "member_badges",
        "action_counts",
        "action_days",
        "growth_events",
        "growth_days",
        "members",
        "requests",
        "program_versions",
        "apps",
    ):
        op.drop_table(table)
