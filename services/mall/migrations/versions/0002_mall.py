"""Mall: catalog items and stock buckets, reservations (the saga barrier), member locks,
coupon codes, orders and their transitions, requests, apps and program versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("program", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("clock_offset_seconds", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app"),
    )
    op.create_table(
        "codes",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("saga_id", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "code"),
    )
    op.create_index(
        "codes_free_idx",
        "codes",
        ["app", "sku"],
        unique=False,
        postgresql_where=sa.text("state = 'free'"),
    )
    op.create_index("codes_saga_idx", "codes", ["app", "saga_id"], unique=False)
    op.create_table(
        "items",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("on_shelf", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "sku"),
    )
    op.create_table(
        "member_items",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("app", "user_id", "sku"),
    )
    op.create_table(
        "order_transitions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "order_transitions_order_idx", "order_transitions", ["app", "order_id", "id"], unique=False
    )
    op.create_table(
        "orders",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("saga_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("item_name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("coupon_codes", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("address", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("carrier", sa.Text(), server_default="", nullable=False),
        sa.Column("tracking_number", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("app", "order_id", name="orders_app_order_key"),
        sa.UniqueConstraint("app", "saga_id", name="orders_app_saga_key"),
    )
    op.create_index("orders_member_idx", "orders", ["app", "user_id", "seq"], unique=False)
    op.create_index("orders_status_idx", "orders", ["app", "status", "seq"], unique=False)
    op.create_table(
        "program_versions",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("program", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "version"),
    )
    op.create_table(
        "requests",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.Text(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app", "request_id"),
    )
    op.create_table(
        "reservations",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("saga_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Text(), server_default="", nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("price_points", sa.BigInteger(), nullable=False),
        sa.Column("prize", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.Text(), server_default="", nullable=False),
        sa.Column("local_day", sa.Date(), nullable=False),
        sa.Column("address", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("cancelled", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("app", "saga_id"),
    )
    op.create_index(
        "reservations_live_idx",
        "reservations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'RESERVED'"),
    )
    op.create_index(
        "reservations_member_idx", "reservations", ["app", "user_id", "sku"], unique=False
    )
    op.create_index(
        "reservations_sku_created_idx", "reservations", ["app", "sku", "created_at"], unique=False
    )
    op.create_table(
        "stock",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("loaded", sa.BigInteger(), nullable=False),
        sa.Column("from_program", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("available >= 0", name="stock_available_non_negative"),
        sa.PrimaryKeyConstraint("app", "sku", "bucket"),
    )


def downgrade() -> None:
    for table in (
        "order_transitions",
        "orders",
        "codes",
        "member_items",
        "reservations",
        "stock",
        "items",
        "requests",
        "program_versions",
        "apps",
    ):
        op.drop_table(table)
