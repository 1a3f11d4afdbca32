"""The ledger: apps, accounts, transactions and entries, lots, events, requests, counters, holds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
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
        "accounts",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("balance", sa.BigInteger),
        sa.Column("held", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lifetime_earned", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("app", "kind", "user_id", name="accounts_app_kind_user_key"),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("operator", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("txn_id", sa.BigInteger, nullable=False),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("account_id", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("lot_id", sa.BigInteger),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("entries_account_id_idx", "entries", ["account_id", "id"])
    op.create_index("entries_app_created_idx", "entries", ["app", "created_at"])
    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("account_id", sa.BigInteger, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("expired", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint(
            "account_id",
            "expires_at",
            name="lots_account_expiry_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(
        "lots_due_idx",
        "lots",
        ["app", "expires_at", "id"],
        postgresql_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
    )
    op.create_table(
        "events",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("response", JSONB),
        sa.Column("reversal", JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app", "event_id"),
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
        "earn_counters",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("units", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("points", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "user_id", "day", "action"),
    )
    op.create_table(
        "earn_state",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("once_done", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("streak_last_day", sa.Date),
        sa.Column("streak_length", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "user_id", "action"),
    )
    op.create_table(
        "holds",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("saga_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("ref", sa.Text, nullable=False, server_default=""),
        sa.Column("payload_hash", sa.Text, nullable=False, server_default=""),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("app", "saga_id"),
    )
    op.create_index(
        "holds_live_idx", "holds", ["expires_at"], postgresql_where=sa.text("state = 'HELD'")
    )
    op.create_table(
        "hold_allocations",
        sa.Column("app", sa.Text, nullable=False),
        sa.Column("saga_id", sa.Text, nullable=False),
        sa.Column("lot_id", sa.BigInteger, sa.ForeignKey("lots.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "saga_id", "lot_id"),
    )


def downgrade() -> None:
    for table in (
        "hold_allocations",
        "holds",
        "earn_state",
        "earn_counters",
        "requests",
        "events",
        "lots",
        "entries",
        "transactions",
        "accounts",
        "program_versions",
        "apps",
    ):
        op.drop_table(table)
