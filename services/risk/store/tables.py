"""The risk database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
tests/integration/test_schemas.py checks the two agree. Every row carries its `app`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The app's `risk` section (current version, sandbox clock) and every version.
apps, program_versions = program_tables(metadata)
requests = requests_table(metadata)

# Every decision with its inputs: the audit (written in batches, off Evaluate's path).
decisions = Table(
    "decisions",
    metadata,
    Column("app", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("device_id", Text, nullable=False, server_default=""),
    Column("ip", Text, nullable=False, server_default=""),
    Column("amount", BigInteger, nullable=False, server_default="0"),
    Column("attributes", JSONB, nullable=False, server_default="{}"),
    # ALLOW, REVIEW, DENY
    Column("decision", Text, nullable=False),
    Column("rules", ARRAY(Text), nullable=False, server_default="{}"),
    Column("score", Integer, nullable=False, server_default="0"),
    Column("without_counters", Boolean, nullable=False, server_default="false"),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "request_id"),
    Index("decisions_app_time_idx", "app", "decided_at"),
)

# A REVIEW decision waits here for ops: open -> approved | rejected.
reviews = Table(
    "reviews",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("review_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("rules", ARRAY(Text), nullable=False, server_default="{}"),
    Column("state", Text, nullable=False),
    Column("operator", Text, nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Index("reviews_app_review_key", "app", "review_id", unique=True),
    Index("reviews_app_state_idx", "app", "state", "seq"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    # rule_rate, run
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Index("alerts_app_idx", "app", "id"),
)
