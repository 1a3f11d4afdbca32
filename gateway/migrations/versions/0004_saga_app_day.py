"""Gateway: the app's local day of each saga (GetStats counts by the app's clock).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sagas", sa.Column("app_day", sa.Date(), nullable=True))
    # Sagas from before: their day in the app's timezone at the database's time (the clock
    # offset they started under is not known; for production apps it is the same).
    op.execute(
        """
        UPDATE sagas s SET app_day = (s.created_at AT TIME ZONE
            COALESCE(a.program->'program'->>'timezone', 'UTC'))::date
        FROM apps a WHERE a.app = s.app
        """
    )
    op.execute(
        "UPDATE sagas SET app_day = (created_at AT TIME ZONE 'UTC')::date WHERE app_day IS NULL"
    )
    op.create_index("sagas_app_day_idx", "sagas", ["app", "app_day"])


def downgrade() -> None:
    op.drop_index("sagas_app_day_idx", table_name="sagas")
    op.drop_column("sagas", "app_day")
