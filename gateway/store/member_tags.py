"""Members' tags (``member_tags``): set in one transaction, read per member."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.tables import member_tags


async def change_tags(
    conn: AsyncConnection,
    app: str,
    user_id: str,
    add: Sequence[str],
    remove: Sequence[str],
    now: datetime,
) -> int:
    """Removes, then adds (a tag in both ends up held); the member's tag count after."""
    if remove:
        await conn.execute(
            delete(member_tags).where(
                member_tags.c.app == app,
                member_tags.c.user_id == user_id,
                member_tags.c.tag.in_(list(remove)),
            )
        )
    if add:
        await conn.execute(
            insert(member_tags)
            .values([{"app": app, "user_id": user_id, "tag": t, "tagged_at": now} for t in add])
            .on_conflict_do_nothing()
        )
    held: int = (
        await conn.scalar(
            select(func.count()).where(member_tags.c.app == app, member_tags.c.user_id == user_id)
        )
        or 0
    )
    return held


async def read_tags(conn: AsyncConnection, app: str, user_id: str) -> list[str]:
    rows = await conn.execute(
        select(member_tags.c.tag)
        .where(member_tags.c.app == app, member_tags.c.user_id == user_id)
        .order_by(member_tags.c.tag)
    )
    return [row.tag for row in rows]
