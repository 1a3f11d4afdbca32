"""The lottery database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
tests/integration/test_schemas.py checks the two agree. Every row carries its `app`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The app's `lottery` section (current version, sandbox clock) and every version.
apps, program_versions = program_tables(metadata)
requests = requests_table(metadata)

# One row per pool: paused or not, and the row every draw of the pool locks, so stock, budget
# and streaks are read and written by one draw at a time.
pool_state = Table(
    "pool_state",
    metadata,
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("paused", Boolean, nullable=False, server_default="false"),
    Column("paused_reason", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "pool"),
)

# Prize stock: `base` from the program, `added` by ops (AddPrizeStock), `awarded` by draws.
prize_stock = Table(
    "prize_stock",
    metadata,
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("prize", Text, nullable=False),
    Column("base", BigInteger, nullable=False),
    Column("added", BigInteger, nullable=False, server_default="0"),
    Column("awarded", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "pool", "prize"),
)

# Per user and pool: draws per local day (the daily limit) and in all (the lifetime limit).
user_draws = Table(
    "user_draws",
    metadata,
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("draws", Integer, nullable=False),
    PrimaryKeyConstraint("app", "pool", "user_id", "day"),
)

# Per user and pool: losing draws in a row (pity) and draws in all.
user_streaks = Table(
    "user_streaks",
    metadata,
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("losing_streak", Integer, nullable=False),
    Column("draws", BigInteger, nullable=False),
    PrimaryKeyConstraint("app", "pool", "user_id"),
)

# Value paid out per pool and local day, in points (the budget), and the day's draws.
daily_payout = Table(
    "daily_payout",
    metadata,
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("payout_points", BigInteger, nullable=False),
    Column("draws", BigInteger, nullable=False),
    PrimaryKeyConstraint("app", "pool", "day"),
)

# The draw log: everything needed to recompute each outcome (VerifyDraw).
draws = Table(
    "draws",
    metadata,
    Column("app", Text, nullable=False),
    Column("saga_id", Text, nullable=False),
    Column("draw_id", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("pool_version", BigInteger, nullable=False),
    Column("prize", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("sku", Text, nullable=False),
    Column("value_points", BigInteger, nullable=False),
    Column("cost_points", BigInteger, nullable=False),
    # The candidates with their weights at that moment, and the CSPRNG value in [0, total).
    Column("candidates", JSONB, nullable=False),
    Column("random_value", BigInteger, nullable=False),
    Column("losing_streak", Integer, nullable=False),
    Column("forced_prize", Text, nullable=False, server_default=""),
    Column("stock_left", JSONB, nullable=False),
    Column("budget_left", BigInteger),
    Column("by_pity", Boolean, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("day", Date, nullable=False),
    Column("drawn_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "saga_id"),
    UniqueConstraint("app", "draw_id", name="draws_draw_id_key"),
    Index("draws_pool_time_idx", "app", "pool", "drawn_at"),
)

# Outcomes forced by ops for a user's next draw (audited: operator and reason).
forced_outcomes = Table(
    "forced_outcomes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("prize", Text, nullable=False),
    Column("operator", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The draw that used it; NULL while it waits.
    Column("used_by", Text),
    Index("forced_outcomes_waiting_idx", "app", "pool", "user_id", "id"),
)

# Low prize stock (奖品空仓提醒) and draw runs (挤兑提醒).
alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("message", Text, nullable=False),
    # One alert per kind and subject per window (a day for stock, a minute for runs).
    Column("window_key", Text, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("app", "kind", "subject", "window_key", name="alerts_once_key"),
    Index("alerts_app_idx", "app", "id"),
)
