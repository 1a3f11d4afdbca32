"""Tier rows: grants, badges, tier changes and the members due for judging. Every function takes
a connection; the use cases (``services/levels/service.py``) own the transactions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.idempotency import claim_request, finish_request, payload_hash
from plumbing.programs import StoredProgram
from services.levels.domain.periods import local_day, period_start
from services.levels.domain.program import DowngradePolicy, LevelsProgram
from services.levels.domain.tiers import REASON_GRANT, REASON_REVOKE
from services.levels.store.members import MEMBER_COLUMNS, Member, judge, lock_member
from services.levels.store.tables import requests


async def read_badges(conn: AsyncConnection, app: str, user_id: str) -> list[dict[str, Any]]:
    return [
        dict(row._mapping)
        for row in await conn.execute(
            text(
                """SELECT code, name, reward_points, earned_at FROM member_badges
                   WHERE app = :app AND user_id = :user_id ORDER BY earned_at, code"""
            ),
            {"app": app, "user_id": user_id},
        )
    ]


async def grant_tier(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    request_id: str,
    user_id: str,
    tier: str | None,
    operator: str,
    reason: str,
) -> None:
    """Grants ``tier`` (or revokes the grant when None). A grant holds until revoked; the
    member's tier is the higher of the grant and the growth tier. Idempotent by request_id."""
    kind = "grant_tier" if tier else "revoke_tier"
    digest = payload_hash({"user_id": user_id, "tier": tier, "operator": operator})
    if await claim_request(conn, requests, stored.app, request_id, kind, digest, now) is not None:
        return
    member = await lock_member(conn, stored, user_id, now)
    await conn.execute(
        text(
            """UPDATE members SET granted_tier = :tier
               WHERE app = :app AND user_id = :user_id"""
        ),
        {"app": stored.app, "user_id": user_id, "tier": tier},
    )
    member.granted_tier = tier
    await judge(
        conn,
        stored,
        [member],
        local_day(now, stored.program.zone),
        now,
        reason=REASON_GRANT if tier else REASON_REVOKE,
        ref=request_id,
        operator=operator,
        note=reason,
    )
    await finish_request(conn, requests, stored.app, request_id, {"tier": tier or ""})


async def members_to_judge(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    today: date,
    after: str,
    limit: int,
    *,
    only_stale: bool = False,
) -> list[Member]:
    """The next ``limit`` members after ``after`` (user_id order), locked. Members already
    judged for a later day are left alone (their judgement is newer). ``only_stale``: only
    members judged under another program version or in an earlier period."""
    downgrade = stored.program.downgrade
    stale_filter = ""
    params: dict[str, Any] = {"app": stored.app, "today": today, "version": stored.version}
    if only_stale:
        stale_filter = "AND (program_version <> :version OR evaluated_day IS NULL"
        if downgrade.policy is not DowngradePolicy.NONE:
            params["period"] = period_start(today, downgrade.period)
            stale_filter += " OR evaluated_day < :period"
        stale_filter += ")"
    rows = await conn.execute(
        text(
            f"""SELECT {MEMBER_COLUMNS} FROM members
                WHERE app = :app AND user_id > :after
                  AND (evaluated_day IS NULL OR evaluated_day <= :today)
                  {stale_filter}
                ORDER BY user_id LIMIT :limit FOR UPDATE"""
        ),
        {**params, "after": after, "limit": limit},
    )
    return [Member.from_row(row) for row in rows]


@dataclass(frozen=True)
class TierChangeRow:
    id: int
    from_tier: str
    to_tier: str
    reason: str
    changed_at: datetime
    operator: str
    note: str


async def tier_changes(
    conn: AsyncConnection, app: str, user_id: str, before: int | None, limit: int
) -> list[TierChangeRow]:
    """Newest first, keyset-paged by id."""
    rows = await conn.execute(
        text(
            """SELECT id, from_tier, to_tier, reason, changed_at, operator, note
               FROM tier_changes
               WHERE app = :app AND user_id = :user_id AND id < :before
               ORDER BY id DESC LIMIT :limit"""
        ),
        {"app": app, "user_id": user_id, "before": before or 2**63 - 1, "limit": limit},
    )
    return [TierChangeRow(**row._mapping) for row in rows]
