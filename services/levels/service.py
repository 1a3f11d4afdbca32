"""The levels service's use cases: each opens its transactions, calls the pure domain
(``domain/tiers.py``, ``domain/growth.py``) and the stores, and answers in domain terms.
``api.py`` checks the request, calls one of these and maps the answer to protobuf; the stores
take a connection and never open a transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.programs import StoredProgram
from services.levels.domain.periods import local_day
from services.levels.domain.program import LevelsProgram
from services.levels.domain.tiers import Standing, evaluate
from services.levels.store import growth, tiers
from services.levels.store.boards import Leaderboards
from services.levels.store.members import (
    growth_by_day,
    judge,
    lock_member,
    needs_judging,
    read_member,
    read_members,
)

# Members judged in one transaction by EvaluateTiers and the background judge.
EVALUATE_BATCH = 500


@dataclass(frozen=True)
class LevelView:
    user_id: str
    lifetime_growth: int
    standing: Standing
    badges: list[dict[str, Any]]


@dataclass(frozen=True)
class Evaluation:
    users_evaluated: int
    tiers_changed: int


class Levels:
    def __init__(self, engine: AsyncEngine, boards: Leaderboards) -> None:
        self.engine = engine
        self.boards = boards

    async def set_attributes(
        self,
        stored: StoredProgram[LevelsProgram],
        now: datetime,
        user_id: str,
        attributes: dict[str, str],
    ) -> dict[str, str]:
        async with self.engine.begin() as conn:
            return await growth.set_attributes(conn, stored, now, user_id, attributes)

    async def add_growth(
        self,
        stored: StoredProgram[LevelsProgram],
        now: datetime,
        events: list[growth.GrowthInput],
    ) -> list[growth.GrowthResult]:
        """One app's events in one transaction (a retried batch replays all of it or does
        all of it), then the committed growth on the boards in one Redis round trip."""
        async with self.engine.begin() as conn:
            results = await growth.add_growth_batch(conn, stored, now, events)
        updates = [r.board for r in results if r.board is not None]
        if updates:
            await self.boards.record_many(stored.app, updates)
        return results

    async def reverse_growth(
        self, stored: StoredProgram[LevelsProgram], now: datetime, event_id: str, reason: str
    ) -> growth.ReversalResult:
        async with self.engine.begin() as conn:
            result = await growth.reverse_growth(conn, stored, now, event_id, reason)
        if result.board is not None:
            await self.boards.record(stored.app, result.board)
        return result

    async def current_tiers(
        self, stored: StoredProgram[LevelsProgram], now: datetime, user_ids: list[str]
    ) -> dict[str, str]:
        """Each member's tier for CheckTier: one read for all; those whose period or program
        moved on since they were judged are judged again first, one by one (rare: once per
        member and period)."""
        today = local_day(now, stored.program.zone)
        async with self.engine.connect() as conn:
            members = await read_members(conn, stored.app, user_ids)
        found: dict[str, str] = {}
        for user_id in user_ids:
            member = members.get(user_id)
            if member is None:
                base = evaluate(stored.program, {}, today)
                found[user_id] = base.tier.code if base.tier else ""
            elif not needs_judging(member, stored, today):
                found[user_id] = member.tier
            else:
                async with self.engine.begin() as conn:
                    member = await lock_member(conn, stored, user_id, now)
                    [judgement] = await judge(conn, stored, [member], today, now, ref="check")
                found[user_id] = judgement.after
        return found

    async def level(
        self, stored: StoredProgram[LevelsProgram], now: datetime, user_id: str
    ) -> LevelView:
        """The member view, judged as of now; a tier that moved (a period ended) is stored."""
        today = local_day(now, stored.program.zone)
        async with self.engine.connect() as conn:
            member = await read_member(conn, stored.app, user_id)
            if member is None:
                return LevelView(user_id, 0, evaluate(stored.program, {}, today), [])
            by_day = await growth_by_day(conn, stored.app, stored.program, [user_id], today)
            badges = await tiers.read_badges(conn, stored.app, user_id)
        standing = evaluate(stored.program, by_day[user_id], today, member.granted_tier)
        tier = standing.tier.code if standing.tier else ""
        if tier != member.tier or needs_judging(member, stored, today):
            async with self.engine.begin() as conn:
                member = await lock_member(conn, stored, user_id, now)
                [judgement] = await judge(conn, stored, [member], today, now, ref="read")
                standing = judgement.standing
        return LevelView(user_id, member.lifetime_growth, standing, badges)

    async def grant_tier(
        self,
        stored: StoredProgram[LevelsProgram],
        now: datetime,
        request_id: str,
        user_id: str,
        tier: str | None,
        operator: str,
        reason: str,
    ) -> LevelView:
        """Grants ``tier`` (None revokes the grant), once per request_id; the member's view
        after it."""
        async with self.engine.begin() as conn:
            await tiers.grant_tier(conn, stored, now, request_id, user_id, tier, operator, reason)
        return await self.level(stored, now, user_id)

    async def tier_changes(
        self, app: str, user_id: str, before: int | None, limit: int
    ) -> list[tiers.TierChangeRow]:
        async with self.engine.connect() as conn:
            return await tiers.tier_changes(conn, app, user_id, before, limit)


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
    members and record the changes in one statement each. ``only_stale`` (the background job)
    takes only members judged under another program version or in an earlier period."""
    today = local_day(as_of, stored.program.zone)
    evaluated = changed = 0
    after = ""
    while True:
        async with engine.begin() as conn:
            members = await tiers.members_to_judge(
                conn, stored, today, after, EVALUATE_BATCH, only_stale=only_stale
            )
            if not members:
                break
            judgements = await judge(conn, stored, members, today, now, ref="evaluate")
        evaluated += len(judgements)
        changed += sum(1 for j in judgements if j.changed)
        after = members[-1].user_id
        if len(members) < EVALUATE_BATCH:
            break
    return Evaluation(evaluated, changed)
