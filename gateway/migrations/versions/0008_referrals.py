"""Gateway: members' last event and first earning (segments, referrals); the referrals table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("members", sa.Column("last_event_at", TS))
    op.add_column("members", sa.Column("first_earned_at", TS))
    # Members seen before: their last allowed event and first earning, from the event log.
    op.execute(
        """
        UPDATE members m SET last_event_at = e.last_event, first_earned_at = e.first_earned
        FROM (SELECT app, user_id, max(created_at) AS last_event,
                     min(created_at) FILTER (WHERE points > 0) AS first_earned
              FROM event_log WHERE decision = 'ALLOW' GROUP BY app, user_id) e
        WHERE m.app = e.app AND m.user_id = e.user_id
        """
    )
    op.create_table(
        "referrals",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("referral_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("referrer_user_id", sa.Text(), nullable=False),
        sa.Column("referred_user_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("qualifying_event_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("device_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("ip", sa.Text(), nullable=False, server_default=""),
        sa.Column("payable_at", TS),
        sa.Column("paid_at", TS),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("referred_points", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("app", "referral_id"),
        sa.UniqueConstraint("app", "request_id", name="referrals_request_key"),
        sa.UniqueConstraint("app", "referred_user_id", name="referrals_referred_key"),
    )
    op.create_index(
        "referrals_referrer_idx", "referrals", ["app", "referrer_user_id", "created_at"]
    )
    op.create_index(
        "referrals_open_idx",
        "referrals",
        ["app", "state"],
        postgresql_where=sa.text("state IN ('PENDING', 'QUALIFIED')"),
    )


def downgrade() -> None:
    op.drop_table("referrals")
    op.drop_column("members", "first_earned_at")
    op.drop_column("members", "last_event_at")
