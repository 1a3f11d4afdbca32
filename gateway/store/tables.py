"""The gateway database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
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
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The whole program of each app (as applied, YAML included), every version, and the gateway's
# sandbox clock for the app.
apps, program_versions = program_tables(metadata)
requests = requests_table(metadata)

# An app exists before its first program: `loyaltyctl keys create` makes it.
tenants = Table(
    "tenants",
    metadata,
    Column("app", Text, primary_key=True),
    # Sandbox apps accept AdvanceClock; production apps refuse it.
    Column("sandbox", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Only the SHA-256 of a key's secret is kept; the key itself is shown once, at creation.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("app", Text, nullable=False),
    # member | admin (admin keys may call the member API too).
    Column("scope", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False),
    Column("label", Text, nullable=False, server_default=""),
    # Token bucket: sustained calls per second and the burst above it.
    Column("rate_per_second", Integer, nullable=False),
    Column("burst", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("api_keys_app_idx", "app"),
)

# First sight of each member of each app; risk's account-age rules read signed_up_at when the
# product backend gave it, first_seen_at otherwise.
members = Table(
    "members",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("signed_up_at", DateTime(timezone=True)),
    # When their latest allowed event happened (the `inactive_for` segments), and when an
    # event first earned them points (a referral of an active member is refused).
    Column("last_event_at", DateTime(timezone=True)),
    Column("first_earned_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("app", "user_id"),
)

# Referrals (the program's `referrals` section): one per referred member. request_id makes
# Refer idempotent; the qualifying event's id, device and ip are kept for the payout's risk
# check.
referrals = Table(
    "referrals",
    metadata,
    Column("app", Text, nullable=False),
    Column("referral_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("referrer_user_id", Text, nullable=False),
    Column("referred_user_id", Text, nullable=False),
    # PENDING, QUALIFIED, PAID, EXPIRED, REFUSED
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("qualifying_event_id", Text, nullable=False, server_default=""),
    Column("device_id", Text, nullable=False, server_default=""),
    Column("ip", Text, nullable=False, server_default=""),
    Column("payable_at", DateTime(timezone=True)),
    Column("paid_at", DateTime(timezone=True)),
    Column("referrer_points", BigInteger, nullable=False, server_default="0"),
    Column("referred_points", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "referral_id"),
    UniqueConstraint("app", "request_id", name="referrals_request_key"),
    UniqueConstraint("app", "referred_user_id", name="referrals_referred_key"),
    Index("referrals_referrer_idx", "app", "referrer_user_id", "created_at"),
    Index(
        "referrals_open_idx",
        "app",
        "state",
        postgresql_where=text("state IN ('PENDING', 'QUALIFIED')"),
    ),
)

# The product backend's tags of each member (SetMemberTags); campaigns' audiences name them.
member_tags = Table(
    "member_tags",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("tagged_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "user_id", "tag"),
)

# The saga log: one row per saga, written before each step. `steps` is the ordered list of
# {name, state, attempts, started_at, finished_at, error}; `result` what the caller is told.
sagas = Table(
    "sagas",
    metadata,
    Column("saga_id", Text, primary_key=True),
    Column("app", Text, nullable=False),
    # redeem | draw
    Column("kind", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("payload_hash", Text, nullable=False),
    # STARTED, CONFIRMING, COMPENSATING, COMPLETED, COMPENSATED, NEEDS_ATTENTION
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("trace_id", Text, nullable=False, server_default=""),
    Column("span_id", Text, nullable=False, server_default=""),
    Column("steps", JSONB, nullable=False, server_default="[]"),
    Column("result", JSONB, nullable=False, server_default="{}"),
    # How many times a driver (the call, the recovery loop, RetrySaga) took the saga up.
    Column("drives", Integer, nullable=False, server_default="0"),
    # A driver owns the saga until then; the recovery loop takes only expired leases.
    Column("lease_until", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The app's local day when the saga started, on its clock (a sandbox app's moves
    # included): what GetStats counts redemptions by. created_at is the database's time.
    Column("app_day", Date),
    # The token of the driver holding the lease; saves are fenced by it (migration 0005).
    Column("driver", Text, nullable=False, server_default=""),
    # Whether the saga's trace was sampled at its root (migration 0006): `saga get` says so.
    Column("trace_kept", Boolean, nullable=False, server_default=true()),
    UniqueConstraint("app", "kind", "request_id", name="sagas_request_key"),
    Index("sagas_app_created_idx", "app", "created_at"),
    Index("sagas_app_day_idx", "app", "app_day"),
    Index(
        "sagas_unfinished_idx",
        "lease_until",
        postgresql_where=text("state IN ('STARTED', 'CONFIRMING', 'COMPENSATING')"),
    ),
    # Room for HOT rewrites of a saga's row (migration 0005).
    postgresql_with={"fillfactor": 70},
)

# Every event the gateway finished recording, with its answer (replays and the daily stats).
event_log = Table(
    "event_log",
    metadata,
    Column("app", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("growth", BigInteger, nullable=False),
    Column("response", JSONB, nullable=False),
    # The app's local day of the event (stats per local day).
    Column("day", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "event_id"),
    Index("event_log_app_day_idx", "app", "day"),
)

# Every admin call: who (key), what (call and arguments), and how it ended.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("call", Text, nullable=False),
    Column("arguments", JSONB, nullable=False),
    # OK or the status code name, with the reason.
    Column("outcome", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("audit_log_app_idx", "app", "id"),
)

# Points at the app's own checkout: one hold per order_ref, as the gateway last saw it (the
# ledger keeps the truth: its hold `order:<order_ref>` and every movement of it).
order_holds = Table(
    "order_holds",
    metadata,
    Column("app", Text, nullable=False),
    Column("order_ref", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("value_fen", BigInteger, nullable=False),
    # held, captured, released, expired, refunded (a hold past expires_at reads as expired).
    Column("state", Text, nullable=False),
    Column("points_refunded", BigInteger, nullable=False, server_default="0"),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "order_ref"),
    Index("order_holds_app_created_idx", "app", "created_at"),
)
