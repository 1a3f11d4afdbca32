"""What the gateway knows of members for the campaigns' audiences, read for a batch at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.audiences import MemberSeen

# Every user asked for: one the gateway never saw has no times (a tag may still be set).
_READ = """
    SELECT u.user_id, m.first_seen_at, m.last_event_at,
           coalesce(array_agg(t.tag ORDER BY t.tag) FILTER (WHERE t.tag IS NOT NULL), '{}')
    FROM unnest(%(users)s::text[]) AS u(user_id)
    LEFT JOIN members m ON m.app = %(app)s AND m.user_id = u.user_id
    LEFT JOIN member_tags t ON t.app = %(app)s AND t.user_id = u.user_id
    GROUP BY 1, 2, 3
"""


async def read_members_seen(
    conn: AsyncConnection, app: str, users: Sequence[str]
) -> dict[str, tuple[MemberSeen, list[str]]]:
    """user -> (what the gateway saw of them, their tags, sorted), every user asked for, one
    round trip for a batch."""
    rows: list[Any] = list(
        await conn.exec_driver_sql(_READ, {"app": app, "users": sorted(set(users))})
    )
    return {
        user: (MemberSeen(first_seen, last_event), list(tags))
        for user, first_seen, last_event, tags in rows
    }
