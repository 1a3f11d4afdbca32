"""Per item and local day: units reserved, confirmed, released, expired and cancelled.

Read from the reservations and orders themselves (grouped by the app's local day), so a flash
sale writes no shared counter row that every buyer would queue on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class ItemDay:
    sku: str
    day: date
    reserved: int
    confirmed: int
    released: int
    expired: int
    cancelled: int


_STATS = """
    WITH moves AS (
      SELECT sku, (created_at AT TIME ZONE %(tz)s)::date AS day, quantity AS reserved,
             0 AS confirmed, 0 AS released, 0 AS expired, 0 AS cancelled
      FROM reservations
      WHERE app = %(app)s AND quantity > 0 AND created_at >= %(since)s AND created_at < %(until)s
      UNION ALL
      SELECT sku, (finished_at AT TIME ZONE %(tz)s)::date, 0,
             CASE WHEN state = 'CONFIRMED' THEN quantity ELSE 0 END,
             CASE WHEN state = 'RELEASED' THEN quantity ELSE 0 END,
             CASE WHEN state = 'EXPIRED' THEN quantity ELSE 0 END, 0
      FROM reservations
      WHERE app = %(app)s AND quantity > 0 AND finished_at >= %(since)s
        AND finished_at < %(until)s
      UNION ALL
      SELECT sku, (cancelled_at AT TIME ZONE %(tz)s)::date, 0, 0, 0, 0, quantity
      FROM orders
      WHERE app = %(app)s AND cancelled_at >= %(since)s AND cancelled_at < %(until)s)
    SELECT sku, day, sum(reserved) AS reserved, sum(confirmed) AS confirmed,
           sum(released) AS released, sum(expired) AS expired, sum(cancelled) AS cancelled
    FROM moves WHERE %(sku)s::text IS NULL OR sku = %(sku)s
    GROUP BY sku, day ORDER BY sku, day
"""


async def item_days(
    conn: AsyncConnection,
    app: str,
    timezone: str,
    sku: str | None,
    first: date,
    last: date,
    since: object,
    until: object,
) -> list[ItemDay]:
    rows = await conn.exec_driver_sql(
        _STATS,
        {"app": app, "tz": timezone, "sku": sku, "since": since, "until": until},
    )
    return [
        ItemDay(
            row.sku,
            row.day,
            int(row.reserved),
            int(row.confirmed),
            int(row.released),
            int(row.expired),
            int(row.cancelled),
        )
        for row in rows
        if first <= row.day <= last
    ]
