"""The mall's invariants as queries: each returns the rows that break it (none when healthy).

Used by the tests after a flash sale and by the invariant checker (issue #11). Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CHECKS: dict[str, str] = {
    # Every unit ever loaded is exactly one of: available, in a live reservation, or in an
    # order that is not cancelled (released, expired and cancelled units went back).
    "stock accounts for every unit": """
        SELECT s.sku, s.bucket, s.loaded, s.available,
               coalesce(r.held, 0) AS held, coalesce(r.sold, 0) AS sold
        FROM stock s
        LEFT JOIN (
          SELECT sku, bucket,
                 sum(quantity) FILTER (WHERE state = 'RESERVED') AS held,
                 sum(quantity) FILTER (WHERE state = 'CONFIRMED' AND NOT cancelled) AS sold
          FROM reservations WHERE app = :app GROUP BY sku, bucket) r
          ON r.sku = s.sku AND r.bucket = s.bucket
        WHERE s.app = :app
          AND s.loaded <> s.available + coalesce(r.held, 0) + coalesce(r.sold, 0)
    """,
    # Stock never goes below zero (the CHECK constraint says so too).
    "stock never negative": """
        SELECT sku, bucket, available FROM stock WHERE app = :app AND available < 0
    """,
    # A confirmed reservation has exactly one order, and every order a confirmed reservation.
    "orders match confirmed reservations": """
        SELECT coalesce(r.saga_id, o.saga_id), r.state, o.order_id
        FROM (SELECT saga_id, state FROM reservations
              WHERE app = :app AND state = 'CONFIRMED') r
        FULL JOIN (SELECT saga_id, order_id FROM orders WHERE app = :app) o
          ON o.saga_id = r.saga_id
        WHERE r.saga_id IS NULL OR o.saga_id IS NULL
    """,
    # No coupon code was given to two orders.
    "no code issued twice": """
        SELECT code, count(*) FROM orders, unnest(coupon_codes) AS code
        WHERE app = :app GROUP BY code HAVING count(*) > 1
    """,
    # Codes reserved by a saga belong to a live reservation of that saga.
    "reserved codes are held": """
        SELECT c.code, c.saga_id FROM codes c
        LEFT JOIN reservations r ON r.app = c.app AND r.saga_id = c.saga_id
        WHERE c.app = :app AND c.state = 'reserved'
          AND (r.saga_id IS NULL OR r.state <> 'RESERVED')
    """,
}


@dataclass(frozen=True)
class Violation:
    check: str
    row: tuple[object, ...]


async def check_mall(conn: AsyncConnection, app: str) -> list[Violation]:
    found = []
    for name, query in CHECKS.items():
        for row in await conn.execute(text(query), {"app": app}):
            found.append(Violation(name, tuple(row)))
    return found
