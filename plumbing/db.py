"""The async SQLAlchemy engine and sessions of a service's own database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from opentelemetry import trace
from psycopg.rows import namedtuple_row
from sqlalchemy import event, exc, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


class DatabaseUnreachable(Exception):
    """The service cannot reach its database; the message names the URL, password masked."""


def masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    # No overflow: a connection opened beyond the pool is closed again when returned, so under
    # load every transaction past the pool paid a new connection (a backend fork, TLS, auth);
    # measured with 32 concurrent redemptions, that churn cost ~15% of the saga rate. Callers
    # past the pool wait for a connection instead, which is cheap.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        # Not on every checkout (a round trip per transaction on hot paths): see ping_idle.
        pool_pre_ping=False,
        # Rolling back on return is what the pool does anyway; no extra reset round trip.
        pool_reset_on_return="rollback",
        # Last in, first out: the few connections a steady load needs stay hot (their
        # prepared statements warm, never idle long enough to be pinged), the rest rest.
        # FIFO rotated every batch through all twenty, each idle past IDLE_PING_SECONDS.
        pool_use_lifo=True,
    )
    ping_idle(engine)
    return engine


# A pooled connection unused for longer than this is pinged before it is lent out.
IDLE_PING_SECONDS = 0.25


def ping_idle(engine: AsyncEngine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Checks a connection that sat idle in the pool before lending it out, and replaces it if
    the server went away meanwhile (a restart, a failover): otherwise the first call on each
    such connection after a restart fails though the database is back. Connections in steady
    use come back within milliseconds and are lent without a ping, so hot paths pay nothing;
    a restart takes longer than ``idle_seconds``, so every connection that lived through one
    is pinged."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _lending(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < idle_seconds:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection is dead: {error}") from error
        if not alive:
            raise exc.DisconnectionError("pooled connection is dead")


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def wait_for_database(url: str, within: float) -> None:
    """Fails fast and clearly when the database is not there (wrong host, port, name or password).

    Tries a plain psycopg connection so the error is the server's own words, not a pool's."""
    sa_url = make_url(url)
    conninfo = sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
    deadline = asyncio.get_running_loop().time() + within
    last = ""
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, connect_timeout=max(1, int(within))
            )
            await conn.close()
            return
        except psycopg.OperationalError as error:
            last = " ".join(str(error).split()) or type(error).__name__
        if asyncio.get_running_loop().time() >= deadline:
            raise DatabaseUnreachable(f"cannot reach database {masked(url)}: {last}")
        await asyncio.sleep(0.25)


def json_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows of a set-wise statement as one JSON parameter, read in SQL with
    ``json_to_recordset(%(rows)s::json) AS r(column type, ...)``. One parameter for a batch of
    any size, encoded in C: psycopg dumps array parameters element by element in Python, which
    was a fifth of a batch's CPU. Dates and times are written as ISO text."""
    return json.dumps(list(rows), default=str, separators=(",", ":"), ensure_ascii=False)


# Whether ``run_sql`` makes a span per statement (TRACE_STATEMENTS; set by instrument_engine).
_statement_spans: dict[str, bool] = {"on": False}
_tracer = trace.get_tracer("loyalty.sql")


def trace_driver_statements(on: bool = True) -> None:
    _statement_spans["on"] = on


async def run_sql(
    conn: AsyncConnection, statement: str, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Runs one statement on the psycopg connection under ``conn``, in its transaction, and
    answers its rows as named tuples (none for a statement without a result).

    The hot paths' statements (the saga log, the batched saga steps) go this way: SQLAlchemy's
    execution context, result wrapping and greenlet hop cost about as much client CPU as
    psycopg's own work for each statement (measured: a 5-statement transaction 1.44 ms of CPU
    through ``exec_driver_sql``, 0.90 ms this way). The transaction, the pool and every cold
    path stay SQLAlchemy's."""
    driver: psycopg.AsyncConnection[Any] = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr,assignment]
    if _statement_spans["on"]:
        with _tracer.start_as_current_span(
            statement.split(None, 1)[0].upper(),
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement},
        ):
            return await _fetch(driver, statement, params)
    return await _fetch(driver, statement, params)


async def _fetch(
    driver: psycopg.AsyncConnection[Any], statement: str, params: Mapping[str, Any] | None
) -> list[Any]:
    cursor = driver.cursor(row_factory=namedtuple_row)
    await cursor.execute(statement, params)
    if cursor.description is None:
        return []
    return await cursor.fetchall()
