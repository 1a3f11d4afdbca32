"""Alembic, per service, without an alembic.ini per service.

Each service keeps ``migrations/`` (``env.py`` calls ``run_env()``, ``versions/``) and applies
them with ``upgrade()``: at start-up, from its ``migrate`` subcommand, or from a Kubernetes Job.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.exc import ProgrammingError


def alembic_config(script_location: Path, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    # Kept out of the ini options, where '%' in a password would be read as interpolation.
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(script_location: Path, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, database_url), revision)


def current_heads(script_location: Path) -> tuple[str, ...]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(script_location, ""))
    return tuple(script.get_heads())


def missing_heads(script_location: Path, connection: Connection) -> set[str]:
    """The migration heads this code expects that the database has not reached yet (empty:
    the schema is current). A server started with MIGRATE_ON_START=false waits on this."""
    expected = set(current_heads(script_location))
    try:
        applied = {
            row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))
        }
    except ProgrammingError:  # no alembic_version table: nothing applied yet
        connection.rollback()
        return expected
    return expected - applied


def run_env() -> None:
    """The body of every service's ``migrations/env.py`` (online mode only)."""
    from alembic import context

    url: str = context.config.attributes["database_url"]
    engine = create_engine(url, poolclass=pool.NullPool)
    # Replicas (or a Job and a replica) may start migrating at once: one takes the lock,
    # the others wait and then find nothing left to do.
    lock_key = zlib.crc32(f"alembic:{context.config.get_main_option('script_location')}".encode())
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=False)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            context.run_migrations()
    engine.dispose()
