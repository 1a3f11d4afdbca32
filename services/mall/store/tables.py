"""The mall database, as SQLAlchemy Core tables. Migrations in ../migrations create them;
tests/integration/test_schemas.py checks the two agree. Every row carries its `app`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from plumbing.idempotency import requests_table
from plumbing.programs import program_tables

metadata = MetaData()

# The app's `mall` section (current version, sandbox clock) and every version.
apps, program_versions = program_tables(metadata)

# AddStock and LoadCodes replies by request_id.
requests = requests_table(metadata)

# Every sku the app ever listed. An item the program no longer lists is off shelf; it is never
# deleted, so orders always point at a row.
items = Table(
    "items",
    metadata,
    Column("app", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("on_shelf", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "sku"),
)

# Units of an item: one bucket ('') for a plain item, one per flash session (its start in UTC).
# `available` is what is left to reserve and never goes below zero (the guarded UPDATE and the
# CHECK); `loaded` is every unit ever put in: `from_program` by the program's `stock`, the rest
# by AddStock and LoadCodes.
stock = Table(
    "stock",
    metadata,
    Column("app", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("bucket", Text, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("loaded", BigInteger, nullable=False),
    Column("from_program", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("app", "sku", "bucket"),
    CheckConstraint("available >= 0", name="stock_available_non_negative"),
)

# A saga's reservation, and its barrier: one row per (app, saga_id). A release that finds none
# writes a RELEASED row of quantity 0, so the late reserve finds it and is refused.
reservations = Table(
    "reservations",
    metadata,
    Column("app", Text, nullable=False),
    Column("saga_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("bucket", Text, nullable=False, server_default=""),
    Column("quantity", BigInteger, nullable=False),
    Column("price_points", BigInteger, nullable=False),
    # A lottery prize: zero price, no per-user limits.
    Column("prize", Boolean, nullable=False, server_default="false"),
    # RESERVED, CONFIRMED, RELEASED, EXPIRED
    Column("state", Text, nullable=False),
    Column("payload_hash", Text, nullable=False, server_default=""),
    # The member's local day at reserve time (daily and monthly limits).
    Column("local_day", Date, nullable=False),
    Column("address", JSONB),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("order_id", Text),
    # Its order was cancelled: the units no longer count toward the member's limits.
    Column("cancelled", Boolean, nullable=False, server_default="false"),
    PrimaryKeyConstraint("app", "saga_id"),
    Index("reservations_member_idx", "app", "user_id", "sku"),
    Index("reservations_live_idx", "expires_at", postgresql_where=text("state = 'RESERVED'")),
    Index("reservations_sku_created_idx", "app", "sku", "created_at"),
)

# One row per (app, user, sku): the lock that serialises a member's reserves of an item, so
# two at once cannot both pass a per-user limit.
member_items = Table(
    "member_items",
    metadata,
    Column("app", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    PrimaryKeyConstraint("app", "user_id", "sku"),
)

# Coupon codes: loaded (pool) or generated at confirm. Unique per app, so no code is ever
# issued twice. free -> reserved (by a saga) -> issued; reserved -> free on release; issued ->
# void when its order is cancelled.
codes = Table(
    "codes",
    metadata,
    Column("app", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("saga_id", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("app", "code"),
    Index("codes_free_idx", "app", "sku", postgresql_where=text("state = 'free'")),
    Index("codes_saga_idx", "app", "saga_id"),
)

orders = Table(
    "orders",
    metadata,
    # Keyset paging order.
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("saga_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("item_name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price_points", BigInteger, nullable=False),
    # PENDING, FULFILLED, SHIPPED, CANCELLED, REFUNDED
    Column("status", Text, nullable=False),
    Column("coupon_codes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("address", JSONB),
    Column("carrier", Text, nullable=False, server_default=""),
    Column("tracking_number", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True)),
    UniqueConstraint("app", "order_id", name="orders_app_order_key"),
    UniqueConstraint("app", "saga_id", name="orders_app_saga_key"),
    Index("orders_member_idx", "app", "user_id", "seq"),
    Index("orders_status_idx", "app", "status", "seq"),
)

# Every order's transitions, with who and when.
order_transitions = Table(
    "order_transitions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("order_transitions_order_idx", "app", "order_id", "id"),
)
