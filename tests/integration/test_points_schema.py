"""The points tables the code uses are exactly the tables the migrations create."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from devtools.suite import Suite
from services.points.store.tables import metadata


def test_migrations_create_the_tables_the_code_uses(suite: Suite) -> None:
    engine = create_engine(suite.database_url("points"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            differences = [
                diff
                for diff in compare_metadata(context, metadata)
                # alembic's own bookkeeping table is not ours to declare.
                if not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
            ]
    finally:
        engine.dispose()
    assert differences == []
