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


def _dsn(suite: Suite, service: str) -> str:
    from sqlalchemy import make_url

    return (
        make_url(urls_from(suite.postgres_url)[service])
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


async def test_the_checker_sees_broken_pending_points_campaigns_and_referrals(
    suite: Suite,
) -> None:
    """A pending credit marked released with no ledger entry, a campaign whose totals are not
    its members' sums, and a referral marked paid that granted nothing: each is reported."""
    import psycopg

    app = "broken-campaigns"
    async with (
        await psycopg.AsyncConnection.connect(_dsn(suite, "points"), autocommit=True) as points,
        await psycopg.AsyncConnection.connect(_dsn(suite, "gateway"), autocommit=True) as gateway,
    ):
        await points.execute(
            "INSERT INTO pending_credits (app, event_id, reason, user_id, points, available_at,"
            " state, created_at, settled_at) VALUES (%s, 'e1', 'purchase', 'u', 100,"
            " now() - interval '1 day', 'RELEASED', now() - interval '8 days', now())",
            (app,),
        )
        await points.execute(
            "INSERT INTO campaign_totals (app, code, points_awarded) VALUES (%s, 'c1', 50)",
            (app,),
        )
        await gateway.execute(
            "INSERT INTO referrals (app, referral_id, request_id, referrer_user_id,"
            " referred_user_id, state, created_at, expires_at, qualifying_event_id, payable_at,"
            " paid_at, referrer_points, referred_points) VALUES (%s, 'r1', 'q1', 'a', 'b',"
            " 'PAID', now(), now(), 'e1', now(), now(), 200, 100)",
            (app,),
        )
        try:
            results = await check_all(urls_from(suite.postgres_url), only_app=app)
        finally:
            await points.execute("DELETE FROM pending_credits WHERE app = %s", (app,))
            await points.execute("DELETE FROM campaign_totals WHERE app = %s", (app,))
            await gateway.execute("DELETE FROM referrals WHERE app = %s", (app,))
    failing = sorted(c.name for c in results if not c.ok)
    assert failing == [
        "points: campaign totals equal their entries",
        "points: campaign totals equal their members",
        "points: pending credits reach the ledger once",
        "referrals: a paid referral paid each side once; others paid nothing",
    ]
