"""The tables each service's code uses are exactly the tables its migrations create."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from devtools.suite import Suite

SERVICES_WITH_TABLES = ("points", "levels", "mall", "risk", "lottery", "gateway")
TABLES_MODULE = {"gateway": "gateway.store.tables"}


@pytest.mark.parametrize("service", SERVICES_WITH_TABLES)
def test_migrations_create_the_tables_the_code_uses(suite: Suite, service: str) -> None:
    module = TABLES_MODULE.get(service, f"services.{service}.store.tables")
    metadata: MetaData = importlib.import_module(module).metadata
    engine = create_engine(suite.database_url(service))
    try:
        with engine.connect() as conn:
            differences = [
                diff
                for diff in compare_metadata(MigrationContext.configure(conn), metadata)
                # alembic's own bookkeeping table is not ours to declare.
                if not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
            ]
    finally:
        engine.dispose()
    assert differences == []
