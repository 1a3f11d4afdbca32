"""The referrals table: one row per referred member, moved PENDING -> QUALIFIED -> PAID (or
EXPIRED, REFUSED). The stores take a connection; gateway/referrals.py owns the transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows


@dataclass(frozen=True)
class ReferralRow:
    referral_id: str
    request_id: str
    referrer_user_id: str
    referred_user_id: str
    state: str
    reason: str
    created_at: datetime
    expires_at: datetime
    qualifying_event_id: str
    device_id: str
    ip: str
    payable_at: datetime | None
    paid_at: datetime | None
    referrer_points: int
    referred_points: int


_COLUMNS = """referral_id, request_id, referrer_user_id, referred_user_id, state, reason,
              created_at, expires_at, qualifying_event_id, device_id, ip, payable_at, paid_at,
              referrer_points, referred_points"""


def _row(row: Any) -> ReferralRow:
    return ReferralRow(*row)


async def by_request(conn: AsyncConnection, app: str, request_id: str) -> ReferralRow | None:
    found = (
        await conn.exec_driver_sql(
            f"SELECT {_COLUMNS} FROM referrals WHERE app = %(app)s AND request_id = %(r)s",
            {"app": app, "r": request_id},
        )
    ).one_or_none()
    return _row(found) if found else None


async def is_referred(conn: AsyncConnection, app: str, user_id: str) -> bool:
    found = await conn.exec_driver_sql(
        "SELECT 1 FROM referrals WHERE app = %(app)s AND referred_user_id = %(u)s",
        {"app": app, "u": user_id},
    )
    return found.first() is not None


async def has_earned(conn: AsyncConnection, app: str, user_id: str) -> bool:
    found = await conn.exec_driver_sql(
        "SELECT 1 FROM members WHERE app = %(app)s AND user_id = %(u)s"
        " AND first_earned_at IS NOT NULL",
        {"app": app, "u": user_id},
    )
    return found.first() is not None


async def insert(conn: AsyncConnection, app: str, row: ReferralRow) -> bool:
    """False when the referred member (or the request_id) already has a referral."""
    done = await conn.exec_driver_sql(
        f"""
        INSERT INTO referrals ({_COLUMNS}, app)
        VALUES (%(referral_id)s, %(request_id)s, %(referrer_user_id)s, %(referred_user_id)s,
                %(state)s, %(reason)s, %(created_at)s, %(expires_at)s, %(qualifying_event_id)s,
                %(device_id)s, %(ip)s, %(payable_at)s, %(paid_at)s, %(referrer_points)s,
                %(referred_points)s, %(app)s)
        ON CONFLICT DO NOTHING RETURNING 1
        """,
        {**row.__dict__, "app": app},
    )
    return done.first() is not None


async def page(
    conn: AsyncConnection,
    app: str,
    referrer: str,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[ReferralRow]:
    """A referrer's referrals, newest first, continuing before ``before`` (time, id)."""
    after = "AND (created_at, referral_id) < (%(at)s, %(key)s)" if before else ""
    rows = await conn.exec_driver_sql(
        f"""
        SELECT {_COLUMNS} FROM referrals
        WHERE app = %(app)s AND referrer_user_id = %(u)s {after}
        ORDER BY created_at DESC, referral_id DESC LIMIT %(limit)s
        """,
        {
            "app": app,
            "u": referrer,
            "limit": limit,
            "at": before[0] if before else None,
            "key": before[1] if before else None,
        },
    )
    return [_row(row) for row in rows]


# A referred member's first qualifying purchase within the referral's time qualifies it.
_QUALIFY = """
    UPDATE referrals r SET state = 'QUALIFIED', qualifying_event_id = q.event_id,
                           device_id = q.device_id, ip = q.ip, payable_at = q.payable_at
    FROM json_to_recordset(%(rows)s::json) AS q(user_id text, event_id text, device_id text,
                                                ip text, at timestamptz, payable_at timestamptz)
    WHERE r.app = %(app)s AND r.referred_user_id = q.user_id AND r.state = 'PENDING'
      AND r.expires_at > q.at
"""


async def qualify(conn: AsyncConnection, app: str, purchases: Sequence[dict[str, Any]]) -> None:
    """``purchases``: one per referred member at most ({user_id, event_id, device_id, ip, at,
    payable_at}); a member with no pending referral changes nothing."""
    if purchases:
        await conn.exec_driver_sql(_QUALIFY, {"app": app, "rows": json_rows(purchases)})


async def refuse_for_event(conn: AsyncConnection, app: str, event_id: str, reason: str) -> int:
    """A qualified referral whose qualifying event is reversed before payment is refused."""
    done = await conn.exec_driver_sql(
        "UPDATE referrals SET state = 'REFUSED', reason = %(reason)s"
        " WHERE app = %(app)s AND qualifying_event_id = %(e)s AND state = 'QUALIFIED'",
        {"app": app, "e": event_id, "reason": reason},
    )
    return int(done.rowcount or 0)


async def expire_due(conn: AsyncConnection, app: str, now: datetime, reason: str) -> int:
    done = await conn.exec_driver_sql(
        "UPDATE referrals SET state = 'EXPIRED', reason = %(reason)s"
        " WHERE app = %(app)s AND state = 'PENDING' AND expires_at <= %(now)s",
        {"app": app, "now": now, "reason": reason},
    )
    return int(done.rowcount or 0)


async def due_ids(conn: AsyncConnection, app: str, now: datetime, limit: int) -> list[str]:
    rows = await conn.exec_driver_sql(
        "SELECT referral_id FROM referrals WHERE app = %(app)s AND state = 'QUALIFIED'"
        " AND payable_at <= %(now)s ORDER BY payable_at, referral_id LIMIT %(limit)s",
        {"app": app, "now": now, "limit": limit},
    )
    return [row[0] for row in rows]


async def lock_due(
    conn: AsyncConnection, app: str, referral_id: str, now: datetime
) -> ReferralRow | None:
    """The referral, locked, if it is still qualified and due (another payer skips it)."""
    found = (
        await conn.exec_driver_sql(
            f"""
            SELECT {_COLUMNS} FROM referrals
            WHERE app = %(app)s AND referral_id = %(id)s AND state = 'QUALIFIED'
              AND payable_at <= %(now)s
            FOR UPDATE SKIP LOCKED
            """,
            {"app": app, "id": referral_id, "now": now},
        )
    ).one_or_none()
    return _row(found) if found else None


async def lock_referrer(conn: AsyncConnection, app: str, referrer: str) -> None:
    """Payouts of one referrer take turns, so two cannot both pass the monthly limit."""
    await conn.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 24))",
        {"k": f"referrer:{app}:{referrer}"},
    )


async def paid_between(
    conn: AsyncConnection, app: str, referrer: str, start: datetime, end: datetime
) -> int:
    found = await conn.exec_driver_sql(
        "SELECT count(*) FROM referrals WHERE app = %(app)s AND referrer_user_id = %(u)s"
        " AND state = 'PAID' AND paid_at >= %(start)s AND paid_at < %(end)s",
        {"app": app, "u": referrer, "start": start, "end": end},
    )
    return int(found.scalar_one())


async def settle(
    conn: AsyncConnection,
    app: str,
    referral_id: str,
    state: str,
    reason: str,
    paid_at: datetime | None,
) -> None:
    await conn.exec_driver_sql(
        "UPDATE referrals SET state = %(state)s, reason = %(reason)s, paid_at = %(paid_at)s"
        " WHERE app = %(app)s AND referral_id = %(id)s",
        {"app": app, "id": referral_id, "state": state, "reason": reason, "paid_at": paid_at},
    )


async def apps_with_open(conn: AsyncConnection) -> list[str]:
    rows = await conn.exec_driver_sql(
        "SELECT DISTINCT app FROM referrals WHERE state IN ('PENDING', 'QUALIFIED')"
    )
    return [row[0] for row in rows]
