"""Reviews (REVIEW decisions waiting for ops) and alerts, as ops read and decide them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.risk.domain.errors import ReviewAlreadyDecided, ReviewNotFound

_COLUMNS = (
    "seq, review_id, request_id, action, user_id, rules, state, operator, note, created_at, "
    "decided_at"
)


@dataclass(frozen=True)
class ReviewRow:
    seq: int
    review_id: str
    request_id: str
    action: str
    user_id: str
    rules: list[str]
    state: str
    operator: str
    note: str
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> ReviewRow:
        return cls(**{**row._mapping, "rules": list(row.rules or [])})


async def list_reviews(
    conn: AsyncConnection, app: str, state: str, before: int | None, limit: int
) -> list[ReviewRow]:
    rows = await conn.exec_driver_sql(
        f"""SELECT {_COLUMNS} FROM reviews
            WHERE app = %(app)s AND state = %(state)s AND seq < %(before)s
            ORDER BY seq DESC LIMIT %(limit)s""",
        {"app": app, "state": state, "before": before or 2**63 - 1, "limit": limit},
    )
    return [ReviewRow.of(row) for row in rows]


async def decide_review(
    conn: AsyncConnection,
    app: str,
    review_id: str,
    approve: bool,
    operator: str,
    note: str,
    now: datetime,
) -> ReviewRow:
    """open -> approved | rejected, once. The same decision again answers as it is; the
    other one is REVIEW_ALREADY_DECIDED."""
    state = "approved" if approve else "rejected"
    row = (
        await conn.exec_driver_sql(
            f"SELECT {_COLUMNS} FROM reviews WHERE app = %(app)s AND review_id = %(id)s FOR UPDATE",
            {"app": app, "id": review_id},
        )
    ).one_or_none()
    if row is None:
        raise ReviewNotFound(f"no review {review_id!r} (it may still be on its way: retry)")
    if row.state == state:
        return ReviewRow.of(row)
    if row.state != "open":
        raise ReviewAlreadyDecided(f"review {review_id!r} was already {row.state}")
    updated = (
        await conn.exec_driver_sql(
            f"""UPDATE reviews SET state = %(state)s, operator = %(operator)s, note = %(note)s,
                    decided_at = %(now)s
                WHERE app = %(app)s AND review_id = %(id)s RETURNING {_COLUMNS}""",
            {
                "app": app,
                "id": review_id,
                "state": state,
                "operator": operator,
                "note": note,
                "now": now,
            },
        )
    ).one()
    return ReviewRow.of(updated)


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    subject: str
    message: str
    raised_at: datetime


async def list_alerts(
    conn: AsyncConnection, app: str, before: int | None, limit: int
) -> list[AlertRow]:
    rows = await conn.exec_driver_sql(
        """SELECT id, kind, subject, message, raised_at FROM alerts
           WHERE app = %(app)s AND id < %(before)s ORDER BY id DESC LIMIT %(limit)s""",
        {"app": app, "before": before or 2**63 - 1, "limit": limit},
    )
    return [AlertRow(**row._mapping) for row in rows]
