"""Runs last (files run in name order): the invariant checker over every app that the whole
test run created in every service, faults and all. Nothing may be broken."""

from __future__ import annotations

import asyncio

from devtools.invariants import check_all, report, urls_from
from devtools.suite import Suite


async def test_every_invariant_holds_after_the_whole_run(suite: Suite) -> None:
    # Give drives still running (PENDING answers, recovery) a moment to end.
    await asyncio.sleep(1)
    results = await check_all(urls_from(suite.postgres_url))
    assert report(results), [(c.app, c.name, c.violations[:3]) for c in results if not c.ok]


async def test_the_checker_sees_a_broken_saga(suite: Suite) -> None:
    """A saga left half-done (state STARTED, a live hold nobody will capture) is reported."""
    import psycopg
    from sqlalchemy import make_url

    urls = urls_from(suite.postgres_url)

    def dsn(service: str) -> str:
        return (
            make_url(urls[service])
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )

    async with await psycopg.AsyncConnection.connect(dsn("gateway"), autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO sagas (saga_id, app, kind, request_id, user_id, payload, payload_hash,"
            " state, lease_until, created_at, updated_at) VALUES ('broken-1', 'broken-app',"
            " 'redeem', 'r', 'u', '{}', 'h', 'STARTED', now(), now(), now())"
        )
        try:
            results = await check_all(urls, only_app="broken-app")
        finally:
            await conn.execute("DELETE FROM sagas WHERE saga_id = 'broken-1'")
    failing = [c.name for c in results if not c.ok]
    assert failing == ["gateway: every saga ended or waits for an operator"]
