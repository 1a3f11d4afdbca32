"""What the gateway knows of members for the campaigns' audiences, read for a batch at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.audiences import MemberSeen

_READ = """
    SELECT m.user_id, m.first_seen_at, m.last_event_at,
           coalesce(array_agg(t.tag ORDER BY t.tag) FILTER (WHERE t.tag IS NOT NULL), '{}')
    FROM members m
    LEFT JOIN member_tags t ON t.app = m.app AND t.user_id = m.user_id
    WHERE m.app = %(app)s AND m.user_id = ANY(%(users)s::text[])
    GROUP BY 1, 2, 3
"""


async def read_members_seen(
    conn: AsyncConnection, app: str, users: Sequence[str]
) -> dict[str, tuple[MemberSeen, list[str]]]:
    """user -> (what the gateway saw of them, their tags), one round trip for a batch."""
    rows: list[Any] = list(
        await conn.exec_driver_sql(_READ, {"app": app, "users": sorted(set(users))})
    )
    return {
        user: (MemberSeen(first_seen, last_event), list(tags))
        for user, first_seen, last_event, tags in rows
    }
