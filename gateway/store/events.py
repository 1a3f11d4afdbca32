"""The event log: every event the gateway finished recording, with the answer it gave, so a
replay answers at once and the daily stats count events and risk decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine


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


async def find_logged(
    engine: AsyncEngine, app: str, event_ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """event_id -> (payload hash, response) for the ids already recorded."""
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(_FIND, {"app": app, "ids": list(event_ids)})
        return {row.event_id: (row.payload_hash, row.response) for row in rows}


async def log_events(
    engine: AsyncEngine, app: str, events: Sequence[LoggedEvent], now: datetime
) -> None:
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
    async with engine.begin() as conn:
        await conn.exec_driver_sql(_RECORD, {"app": app, "now": now, "rows": json.dumps(rows)})


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
