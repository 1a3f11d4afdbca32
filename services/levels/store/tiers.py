"""Tier reads and ops: GetLevel, CheckTier, GrantTier / RevokeTier, ListTierChanges, and the
set-wise EvaluateTiers that applies downgrades for a whole app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.idempotency import claim_request, finish_request, payload_hash
from plumbing.programs import StoredProgram
from services.levels.domain.periods import local_day, period_start
from services.levels.domain.program import DowngradePolicy, LevelsProgram
from services.levels.domain.tiers import REASON_GRANT, REASON_REVOKE, Standing, evaluate
from services.levels.store.members import (
    MEMBER_COLUMNS,
    Member,
    growth_by_day,
    judge,
    lock_member,
    needs_judging,
    read_member,
    read_members,
)
from services.levels.store.tables import requests

EVALUATE_BATCH = 500


@dataclass(frozen=True)
class LevelView:
    user_id: str
    lifetime_growth: int
    standing: Standing
    badges: list[dict[str, Any]]


async def current_tier(
    engine: AsyncEngine, stored: StoredProgram[LevelsProgram], now: datetime, user_id: str
) -> str:
    """The member's tier for CheckTier: the stored one, judged again first if its period or
    program has moved on since (one read on the common path)."""
    today = local_day(now, stored.program.zone)
    async with engine.connect() as conn:
        member = await read_member(conn, stored.app, user_id)
    if member is None:
        base = evaluate(stored.program, {}, today)
        return base.tier.code if base.tier else ""
    if not needs_judging(member, stored, today):
        return member.tier
    async with engine.begin() as conn:
        member = await lock_member(conn, stored, user_id, now)
        [judgement] = await judge(conn, stored, [member], today, now, ref="check")
    return judgement.after


async def current_tiers(
    engine: AsyncEngine, stored: StoredProgram[LevelsProgram], now: datetime, user_ids: list[str]
) -> dict[str, str]:
    """``current_tier`` for several members: one read for all; those whose period or program
    moved on are judged again one by one (rare: once per member and period)."""
    today = local_day(now, stored.program.zone)
    async with engine.connect() as conn:
        members = await read_members(conn, stored.app, user_ids)
    tiers: dict[str, str] = {}
    for user_id in user_ids:
        member = members.get(user_id)
        if member is None:
            base = evaluate(stored.program, {}, today)
            tiers[user_id] = base.tier.code if base.tier else ""
        elif not needs_judging(member, stored, today):
            tiers[user_id] = member.tier
        else:
            tiers[user_id] = await current_tier(engine, stored, now, user_id)
    return tiers


async def level_view(
    engine: AsyncEngine, stored: StoredProgram[LevelsProgram], now: datetime, user_id: str
) -> LevelView:
    """The member view, judged as of now; a tier that moved (a period ended) is stored."""
    today = local_day(now, stored.program.zone)
    async with engine.connect() as conn:
        member = await read_member(conn, stored.app, user_id)
        if member is None:
            return LevelView(user_id, 0, evaluate(stored.program, {}, today), [])
        growth = await growth_by_day(conn, stored.app, stored.program, [user_id], today)
        badges = [
            dict(row._mapping)
            for row in await conn.execute(
                text(
                    """SELECT code, name, reward_points, earned_at FROM member_badges
                       WHERE app = :app AND user_id = :user_id ORDER BY earned_at, code"""
                ),
                {"app": stored.app, "user_id": user_id},
            )
        ]
    standing = evaluate(stored.program, growth[user_id], today, member.granted_tier)
    tier = standing.tier.code if standing.tier else ""
    if tier != member.tier or needs_judging(member, stored, today):
        async with engine.begin() as conn:
            member = await lock_member(conn, stored, user_id, now)
            [judgement] = await judge(conn, stored, [member], today, now, ref="read")
            standing = judgement.standing
    return LevelView(user_id, member.lifetime_growth, standing, badges)


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


@dataclass(frozen=True)
class Evaluation:
    users_evaluated: int
    tiers_changed: int


async def evaluate_tiers(
    engine: AsyncEngine,
    stored: StoredProgram[LevelsProgram],
    as_of: datetime,
    now: datetime,
    *,
    only_stale: bool = False,
) -> Evaluation:
    """Judges the app's members as of ``as_of`` in batches of ``EVALUATE_BATCH``, each batch
    one transaction: lock the batch (user_id order), load its growth in one query, update the
    members and record the changes in one statement each. Members already judged for a later
    day are left alone (their judgement is newer). ``only_stale`` (the background job) takes
    only members judged under another program version or in an earlier period."""
    today = local_day(as_of, stored.program.zone)
    downgrade = stored.program.downgrade
    stale_filter = ""
    params: dict[str, Any] = {"app": stored.app, "today": today, "version": stored.version}
    if only_stale:
        stale_filter = "AND (program_version <> :version OR evaluated_day IS NULL"
        if downgrade.policy is not DowngradePolicy.NONE:
            params["period"] = period_start(today, downgrade.period)
            stale_filter += " OR evaluated_day < :period"
        stale_filter += ")"
    evaluated = changed = 0
    after = ""
    while True:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"""SELECT {MEMBER_COLUMNS} FROM members
                            WHERE app = :app AND user_id > :after
                              AND (evaluated_day IS NULL OR evaluated_day <= :today)
                              {stale_filter}
                            ORDER BY user_id LIMIT :limit FOR UPDATE"""
                    ),
                    {**params, "after": after, "limit": EVALUATE_BATCH},
                )
            ).all()
            if not rows:
                break
            members = [Member.from_row(row) for row in rows]
            judgements = await judge(conn, stored, members, today, now, ref="evaluate")
        evaluated += len(judgements)
        changed += sum(1 for j in judgements if j.changed)
        after = members[-1].user_id
        if len(rows) < EVALUATE_BATCH:
            break
    return Evaluation(evaluated, changed)


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
