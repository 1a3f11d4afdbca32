"""Pending points: credits that wait out their action's window before they are the member's.

A pending credit has no ledger entry: it is not in any balance, so it cannot be spent, held
or gifted. When its window has passed it is released — an ``earn`` transaction of the same
ref and reason, into a lot whose expiry counts from ``available_at`` — and a reversal before
then cancels it, which never touches a balance."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows
from services.points.store.earning import move_points
from services.points.store.ledger import lock_user_accounts
from services.points.store.programs import AppProgram

_DUE = """
    SELECT event_id, reason, user_id, points, available_at FROM pending_credits
    WHERE app = %(app)s AND state = 'PENDING' AND available_at <= %(now)s
    ORDER BY available_at, event_id, reason
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
"""
_SETTLE = """
    UPDATE pending_credits p SET state = %(state)s, settled_at = %(now)s
    FROM json_to_recordset(%(rows)s::json) AS r(event_id text, reason text)
    WHERE p.app = %(app)s AND p.event_id = r.event_id AND p.reason = r.reason
"""
_OF_USER = """
    SELECT coalesce(sum(points), 0) FROM pending_credits
    WHERE app = %(app)s AND user_id = %(user_id)s AND state = 'PENDING'
"""
# Pending at the end of each local day: created by then and not settled by then.
_BY_DAY = """
    SELECT d::date AS day, coalesce(sum(p.points), 0) AS pending
    FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') AS d
    LEFT JOIN pending_credits p
      ON p.app = %(app)s
     AND p.created_at < ((d + interval '1 day')::timestamp AT TIME ZONE %(tz)s)
     AND (p.settled_at IS NULL
          OR p.settled_at >= ((d + interval '1 day')::timestamp AT TIME ZONE %(tz)s))
    GROUP BY 1
"""
_ALL = """
    SELECT coalesce(sum(points), 0) FROM pending_credits
    WHERE app = %(app)s AND state = 'PENDING'
"""


async def release_due(
    conn: AsyncConnection, ap: AppProgram, now: datetime, limit: int
) -> tuple[int, int]:
    """Releases up to ``limit`` credits whose window has passed (the caller commits); answers
    how many, and their points. Safe beside another releaser (SKIP LOCKED) and beside a
    reversal (which waits for this transaction, then finds the credit released and takes it
    back from the lots)."""
    rows: list[Any] = list(
        await conn.exec_driver_sql(_DUE, {"app": ap.app, "now": now, "limit": limit})
    )
    if not rows:
        return 0, 0
    accounts = await lock_user_accounts(conn, ap.app, [row.user_id for row in rows])
    for row in rows:
        await move_points(
            conn,
            ap,
            accounts[row.user_id],
            int(row.points),
            now,
            row.event_id,
            row.reason,
            earned_at=row.available_at,
        )
    await conn.exec_driver_sql(
        _SETTLE,
        {
            "app": ap.app,
            "now": now,
            "state": "RELEASED",
            "rows": json_rows({"event_id": r.event_id, "reason": r.reason} for r in rows),
        },
    )
    return len(rows), sum(int(row.points) for row in rows)


async def pending_of(conn: AsyncConnection, app: str, user_id: str) -> int:
    found = await conn.exec_driver_sql(_OF_USER, {"app": app, "user_id": user_id})
    return int(found.scalar_one())


async def pending_now(conn: AsyncConnection, app: str) -> int:
    return int((await conn.exec_driver_sql(_ALL, {"app": app})).scalar_one())


async def pending_by_day(
    conn: AsyncConnection, app: str, zone: str, first: date, last: date
) -> dict[date, int]:
    rows = await conn.exec_driver_sql(
        _BY_DAY, {"app": app, "tz": zone, "first": first, "last": last}
    )
    return {row.day: int(row.pending) for row in rows}
