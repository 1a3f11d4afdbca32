"""Gateway: room on each page of the saga log for HOT updates; the lease holder's token.

A saga's row is rewritten at each step; while its state and lease stay as they are, the
rewrite touches no indexed column, and with free room on the page PostgreSQL keeps it a
heap-only (HOT) update: no new entry in any of the table's five indexes.

`driver` is the token of the driver holding a saga's lease (a new one at each lease): a save
by a driver whose lease ran out and was taken by another changes nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE sagas SET (fillfactor = 70)")
    op.add_column("sagas", sa.Column("driver", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("sagas", "driver")
    op.execute("ALTER TABLE sagas RESET (fillfactor)")
