"""The levels database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
tests/integration/test_schemas.py checks the two agree.

Every row carries its `app`; every query filters on it. Growth is kept per member and local
day (`growth_days`), which is all the tier rules need; events keep their replies for replays.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The app's `levels` + `badges` sections (current version, sandbox clock) and every version.
apps, program_versions = program_tables(metadata)

# GrantTier, RevokeTier and AdvanceClock replies by request_id.
requests = requests_table(metadata)

# One per (app, user): attributes that pick coefficients, growth, the tier and where it came
# from. The row is the member's lock: every change to a member's growth takes it first.
members = Table(
    "members",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("attributes", JSONB, nullable=False, server_default="{}"),
    # Net growth ever awarded (awards minus reversals).
    Column("lifetime_growth", BigInteger, nullable=False, server_default="0"),
    # The member's tier ('' below every tier) and an ops grant, if any.
    Column("tier", Text, nullable=False, server_default=""),
    Column("granted_tier", Text),
    # The evaluation the stored tier reflects: the program version and the local day it was
    # judged for. A member judged in an earlier period, or under another version, is judged
    # again before anyone relies on the tier (CheckTier, the tier job).
    Column("program_version", BigInteger, nullable=False, server_default="0"),
    Column("evaluated_day", Date),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "user_id"),
)

# Net growth per member and local day. `counted` is what counts toward growth_daily_cap.
growth_days = Table(
    "growth_days",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("amount", BigInteger, nullable=False, server_default="0"),
    Column("counted", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "user_id", "day"),
)

# One per AddGrowth event: idempotency (event_id), the reply for replays, and what a reversal
# takes back.
growth_events = Table(
    "growth_events",
    metadata,
    Column("app", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("amount", BigInteger, nullable=False, server_default="0"),
    Column("response", JSONB),
    Column("reversed", Boolean, nullable=False, server_default="false"),
    Column("reversal", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "event_id"),
)

# Local days a member did an action that a streak badge watches.
action_days = Table(
    "action_days",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("day", Date, nullable=False),
    PrimaryKeyConstraint("app", "user_id", "action", "day"),
)

# How often a member did an action that a count badge watches.
action_counts = Table(
    "action_counts",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("count", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "user_id", "action"),
)

# Badges earned, kept for good (the reward points were the gateway's to grant).
member_badges = Table(
    "member_badges",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("reward_points", BigInteger, nullable=False, server_default="0"),
    # The event that earned it.
    Column("event_id", Text, nullable=False),
    Column("earned_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "user_id", "code"),
)

# Every tier change with its reason: growth, downgrade, decay, grant, revoke, reversal.
tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("from_tier", Text, nullable=False),
    Column("to_tier", Text, nullable=False),
    Column("reason", Text, nullable=False),
    # The event, request or evaluation behind it.
    Column("ref", Text, nullable=False, server_default=""),
    Column("operator", Text, nullable=False, server_default=""),
    # Why ops granted or revoked a tier, in their words.
    Column("note", Text, nullable=False, server_default=""),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Index("tier_changes_member_idx", "app", "user_id", "id"),
)
