"""Lottery: pools' state, prize stock, per-user counters and streaks, daily payouts, the draw
log, forced outcomes, alerts, requests, apps and program versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("window_key", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app", "kind", "subject", "window_key", name="alerts_once_key"),
    )
    op.create_index("alerts_app_idx", "alerts", ["app", "id"], unique=False)
    op.create_table(
        "apps",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("program", postgresql.JSONB(astext_type=Text()), nullable=False),
        sa.Column("clock_offset_seconds", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app"),
    )
    op.create_table(
        "daily_payout",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("payout_points", sa.BigInteger(), nullable=False),
        sa.Column("draws", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app", "pool", "day"),
    )
    op.create_table(
        "draws",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("saga_id", sa.Text(), nullable=False),
        sa.Column("draw_id", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("pool_version", sa.BigInteger(), nullable=False),
        sa.Column("prize", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("value_points", sa.BigInteger(), nullable=False),
        sa.Column("cost_points", sa.BigInteger(), nullable=False),
        sa.Column("candidates", postgresql.JSONB(astext_type=Text()), nullable=False),
        sa.Column("random_value", sa.BigInteger(), nullable=False),
        sa.Column("losing_streak", sa.Integer(), nullable=False),
        sa.Column("forced_prize", sa.Text(), server_default="", nullable=False),
        sa.Column("stock_left", postgresql.JSONB(astext_type=Text()), nullable=False),
        sa.Column("budget_left", sa.BigInteger(), nullable=True),
        sa.Column("by_pity", sa.Boolean(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "saga_id"),
        sa.UniqueConstraint("app", "draw_id", name="draws_draw_id_key"),
    )
    op.create_index("draws_pool_time_idx", "draws", ["app", "pool", "drawn_at"], unique=False)
    op.create_table(
        "forced_outcomes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("prize", sa.Text(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "forced_outcomes_waiting_idx",
        "forced_outcomes",
        ["app", "pool", "user_id", "id"],
        unique=False,
    )
    op.create_table(
        "pool_state",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("paused_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "pool"),
    )
    op.create_table(
        "prize_stock",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("prize", sa.Text(), nullable=False),
        sa.Column("base", sa.BigInteger(), nullable=False),
        sa.Column("added", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("awarded", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("app", "pool", "prize"),
    )
    op.create_table(
        "program_versions",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("program", postgresql.JSONB(astext_type=Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "version"),
    )
    op.create_table(
        "requests",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.Text(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "request_id"),
    )
    op.create_table(
        "user_draws",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("draws", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app", "pool", "user_id", "day"),
    )
    op.create_table(
        "user_streaks",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("losing_streak", sa.Integer(), nullable=False),
        sa.Column("draws", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app", "pool", "user_id"),
    )


def downgrade() -> None:
    for table in (
        "alerts",
        "forced_outcomes",
        "draws",
        "daily_payout",
        "user_streaks",
        "user_draws",
        "prize_stock",
        "pool_state",
        "requests",
        "program_versions",
        "apps",
    ):
        op.drop_table(table)
