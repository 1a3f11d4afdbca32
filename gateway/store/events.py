"""The event log: every event the gateway finished recording, with the answer it gave, so a
replay answers at once and the daily stats count events and risk decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.referrals import qualify
from plumbing.db import json_rows


@dataclass(frozen=True)
class LoggedEvent:
    event_id: str
    user_id: str
    action: str
    payload_hash: str
    decision: str
    points: int
    growth: int
    response: dict[str, Any]
    day: date
    # When it happened (occurred_at, else when it was recorded): the member's last event.
    occurred_at: datetime | None = None


_FIND = """
    SELECT event_id, payload_hash, response FROM event_log
    WHERE app = %(app)s AND event_id = ANY(%(ids)s::text[])
"""
_RECORD = """
    INSERT INTO event_log (app, event_id, user_id, action, payload_hash, decision, points, growth,
                           response, day, created_at)
    SELECT %(app)s, e.event_id, e.user_id, e.action, e.payload_hash, e.decision, e.points,
           e.growth, e.response, e.day, %(now)s
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS e(event_id text, user_id text, action text,
         payload_hash text, decision text, points bigint, growth bigint, response jsonb, day date)
    ON CONFLICT DO NOTHING
"""
# Each member's latest allowed event, and their first earning (segments, referrals).
_SEEN = """
    UPDATE members m
    SET last_event_at = GREATEST(m.last_event_at, s.at),
        first_earned_at = COALESCE(m.first_earned_at, CASE WHEN s.earned THEN %(now)s END)
    FROM json_to_recordset(%(rows)s::json) AS s(user_id text, at timestamptz, earned bool)
    -- The users again as an array: an index probe each, not a hash join over every member.
    WHERE m.app = %(app)s AND m.user_id = s.user_id AND m.user_id = ANY(%(users)s::text[])
"""


async def find_logged(
    engine: AsyncEngine, app: str, event_ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """event_id -> (payload hash, response) for the ids already recorded."""
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(_FIND, {"app": app, "ids": list(event_ids)})
        return {row.event_id: (row.payload_hash, row.response) for row in rows}


async def log_events(
    engine: AsyncEngine,
    app: str,
    events: Sequence[LoggedEvent],
    now: datetime,
    qualified: Sequence[dict[str, Any]] = (),
) -> None:
    """The events' answers, what they tell of their members, and the referrals they qualify,
    in one transaction: a retried event that finds itself logged finds these done too."""
    rows = [
        {
            "event_id": e.event_id,
            "user_id": e.user_id,
            "action": e.action,
            "payload_hash": e.payload_hash,
            "decision": e.decision,
            "points": e.points,
            "growth": e.growth,
            "response": e.response,
            "day": e.day.isoformat(),
        }
        for e in events
    ]
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.decision != "ALLOW":
            continue
        at = e.occurred_at or now
        had = seen.setdefault(e.user_id, {"user_id": e.user_id, "at": at, "earned": False})
        had["at"] = max(had["at"], at)
        had["earned"] = had["earned"] or e.points > 0
    async with engine.begin() as conn:
        await conn.exec_driver_sql(_RECORD, {"app": app, "now": now, "rows": json.dumps(rows)})
        if seen:
            await conn.exec_driver_sql(
                _SEEN,
                {"app": app, "now": now, "rows": json_rows(seen.values()), "users": list(seen)},
            )
        await qualify(conn, app, qualified)


async def daily_counts(
    engine: AsyncEngine, app: str, first: date, last: date
) -> list[tuple[date, str, int]]:
    """(day, decision, events) for the local days in [first, last]."""
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            """
            SELECT day, decision, count(*) AS n FROM event_log
            WHERE app = %(app)s AND day BETWEEN %(first)s AND %(last)s GROUP BY 1, 2
            """,
            {"app": app, "first": first, "last": last},
        )
        return [(row.day, row.decision, int(row.n)) for row in rows]
