"""The points database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
tests/integration/test_schemas.py checks the two agree.

Every row carries its `app`; every query filters on it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The app's points program (the `points` and `earning` sections): current version, sandbox
# clock offset, and every version ever stored.
apps, program_versions = program_tables(metadata)

# One per (app, user) and five system accounts per app (user_id ''): issued, spent, expired,
# adjusted, held. A user's `balance` is the sum of its entries and may be negative only after a
# reversal. System accounts keep balance NULL: their balances are the sums of their entries,
# computed when read, because a stored one would make every earn of an app queue on one row.
accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("balance", BigInteger),
    # Points of this user sitting in live holds (they left `balance` for the held account).
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("lifetime_earned", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("app", "kind", "user_id", name="accounts_app_kind_user_key"),
)

# One per movement; its entries (legs) sum to zero. Append-only.
transactions = Table(
    "transactions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    # earn, grant, adjust, gift, hold, release, capture, refund, expire, reverse
    Column("kind", Text, nullable=False),
    # The event id, saga id or request id behind it.
    Column("ref", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("operator", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    # No foreign keys on the legs: the ledger's hottest table, written a million rows at a
    # time by the sweep, and every earn's `issued` leg would share-lock that one account row.
    # The invariant checker (store/invariants.py) proves what the constraints would.
    Column("txn_id", BigInteger, nullable=False),
    Column("app", Text, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # The lot a user leg credited or debited, when there is one (history shows its expiry).
    Column("lot_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("entries_account_id_idx", "account_id", "id"),
    Index("entries_app_created_idx", "app", "created_at"),
)

# Points that expire together: one lot per (account, expiry instant). Credits on the same local
# day share a lot under a rolling policy, so an account has a lot per day it earned, not per
# event. `remaining` is what is left to spend; a hold's share lives in hold_allocations.
lots = Table(
    "lots",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expired", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "account_id",
        "expires_at",
        name="lots_account_expiry_key",
        postgresql_nulls_not_distinct=True,
    ),
    Index(
        "lots_due_idx",
        "app",
        "expires_at",
        "id",
        postgresql_where=text("remaining > 0 AND expires_at IS NOT NULL"),
    ),
)

# Earn idempotency: one row per (app, event_id) with the reply; the reversal's reply too.
events = Table(
    "events",
    metadata,
    Column("app", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("points", BigInteger, nullable=False, server_default="0"),
    Column("response", JSONB),
    Column("reversal", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "event_id"),
)

# Idempotency of Grant, Adjust, Gift, Refund and AdvanceClock: the first reply by request_id.
requests = requests_table(metadata)

# Per user, action and local day: quantity reported and units paid (daily_limit). Action ''
# counts the points toward the per-user daily cap.
earn_counters = Table(
    "earn_counters",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("action", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False, server_default="0"),
    Column("units", BigInteger, nullable=False, server_default="0"),
    Column("points", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "user_id", "day", "action"),
)

# Per user and action: `once` rules already paid, and the streak of consecutive local days.
earn_state = Table(
    "earn_state",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("once_done", Boolean, nullable=False, server_default="false"),
    Column("streak_last_day", Date),
    Column("streak_length", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "user_id", "action"),
)

# A saga's hold, and its barrier: one row per (app, saga_id) written in the same transaction as
# the movement. A release that finds no hold writes a RELEASED row with amount 0, so the late
# hold for that saga finds it and fails; repeats read the row and answer as the first did.
holds = Table(
    "holds",
    metadata,
    Column("app", Text, nullable=False),
    Column("saga_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # HELD, CAPTURED, RELEASED, EXPIRED
    Column("state", Text, nullable=False),
    Column("ref", Text, nullable=False, server_default=""),
    Column("payload_hash", Text, nullable=False, server_default=""),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("app", "saga_id"),
    Index("holds_live_idx", "expires_at", postgresql_where=text("state = 'HELD'")),
)

# Which lots a hold took its points from, so a release or refund puts them back.
hold_allocations = Table(
    "hold_allocations",
    metadata,
    Column("app", Text, nullable=False),
    Column("saga_id", Text, nullable=False),
    Column("lot_id", BigInteger, ForeignKey("lots.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "saga_id", "lot_id"),
)

# Points an event earned that wait out their action's `pending` window (the return window): one
# row per (event, reason) — the action's own points and each campaign's. No ledger entry while
# PENDING: the points are not the member's yet. RELEASED: credited to a lot (expiring from
# `available_at`) by an `earn` transaction of the same ref and reason. CANCELLED: the event was
# reversed first.
pending_credits = Table(
    "pending_credits",
    metadata,
    Column("app", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    # The earning action, or the campaign's code.
    Column("reason", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("available_at", DateTime(timezone=True), nullable=False),
    # PENDING, RELEASED, CANCELLED
    Column("state", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("app", "event_id", "reason"),
    Index(
        "pending_credits_due_idx",
        "app",
        "available_at",
        postgresql_where=text("state = 'PENDING'"),
    ),
    Index(
        "pending_credits_user_idx",
        "app",
        "user_id",
        postgresql_where=text("state = 'PENDING'"),
    ),
)

# What each campaign has awarded: its budget's use. A budgeted campaign's row is locked by every
# batch that may pay from it, so concurrent batches never award past the budget. (Events and
# members paid are counted from campaign_members when asked.)
campaign_totals = Table(
    "campaign_totals",
    metadata,
    Column("app", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("points_awarded", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "code"),
)

# Per campaign and member: events paid (per_user) and points; GetCampaignStats sums them.
campaign_members = Table(
    "campaign_members",
    metadata,
    Column("app", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("events", BigInteger, nullable=False, server_default="0"),
    Column("points", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "code", "user_id"),
)

SYSTEM_ACCOUNTS = ("issued", "spent", "expired", "adjusted", "held")
