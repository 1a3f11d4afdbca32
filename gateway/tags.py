"""SetMemberTags, the use case: the member's tags changed in one transaction, refused whole
when the member would hold more than ``MAX_TAGS``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.tags import MAX_TAGS, too_many
from gateway.store.member_tags import change_tags, read_tags


async def set_member_tags(
    engine: AsyncEngine,
    app: str,
    user_id: str,
    add: Sequence[str],
    remove: Sequence[str],
    now: datetime,
) -> list[str]:
    """The member's tags after the change. Calls for one member take turns (a transaction
    lock on the member), so two of them cannot pass the limit together."""
    async with engine.begin() as conn:
        await conn.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"tags:{app}:{user_id}", 0)))
        )
        held = await change_tags(conn, app, user_id, add, remove, now)
        if held > MAX_TAGS:
            raise too_many(held)  # the transaction rolls back: nothing changed
        return await read_tags(conn, app, user_id)
