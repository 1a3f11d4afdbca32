"""The invariant checker itself: it sees what is broken. (The check of the whole run is the
``suite`` fixture's last act, in conftest.py, whatever order the tests ran in.)"""

from __future__ import annotations

from devtools.invariants import check_all, urls_from
from devtools.suite import Suite


async def test_the_checker_sees_a_broken_saga(suite: Suite) -> None:
    """A saga left half-done (state STARTED) is reported. Its lease runs an hour, so the
    suite's recovery loop leaves it alone while the checker looks."""
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
            " 'redeem', 'r', 'u', '{}', 'h', 'STARTED', now() + interval '1 hour', now(), now())"
        )
        try:
            results = await check_all(urls, only_app="broken-app")
        finally:
            await conn.execute("DELETE FROM sagas WHERE saga_id = 'broken-1'")
    failing = [c.name for c in results if not c.ok]
    assert failing == ["gateway: every saga ended or waits for an operator"]
