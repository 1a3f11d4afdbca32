"""Members: their row (the lock), their growth as the tier rules need it, and judging their
tier, for one member or set-wise for a batch of them.

Locking: every change to a member's growth, tier or badges happens under that member's row
lock (``lock_member``). Keyed rows (event, request) are claimed before the member row, and the
set-wise job locks members in user_id order, so no two paths wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import run_sql
from plumbing.programs import StoredProgram
from services.levels.domain.periods import Period, add_months, period_start
from services.levels.domain.program import DowngradePolicy, LevelsProgram
from services.levels.domain.tiers import Standing, change_reason, evaluate, tier_for_growth


@dataclass
class Member:
    user_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    lifetime_growth: int = 0
    tier: str = ""
    granted_tier: str | None = None
    program_version: int = 0
    evaluated_day: date | None = None

    @classmethod
    def from_row(cls, row: Any) -> Member:
        return cls(
            user_id=row.user_id,
            attributes=dict(row.attributes or {}),
            lifetime_growth=int(row.lifetime_growth),
            tier=row.tier,
            granted_tier=row.granted_tier,
            program_version=int(row.program_version),
            evaluated_day=row.evaluated_day,
        )


MEMBER_COLUMNS = (
    "user_id, attributes, lifetime_growth, tier, granted_tier, program_version, evaluated_day"
)


async def lock_member(
    conn: AsyncConnection, stored: StoredProgram[LevelsProgram], user_id: str, now: datetime
) -> Member:
    """The member's row, locked until the transaction ends; a new member starts at the tier
    of no growth (the base tier)."""
    base = tier_for_growth(stored.program, 0)
    row = (
        await conn.execute(
            text(
                f"""INSERT INTO members (app, user_id, tier, created_at, updated_at)
                VALUES (:app, :user_id, :base, :now, :now)
                ON CONFLICT (app, user_id) DO UPDATE SET updated_at = EXCLUDED.updated_at
                RETURNING {MEMBER_COLUMNS}"""
            ),
            {
                "app": stored.app,
                "user_id": user_id,
                "base": base.code if base else "",
                "now": now,
            },
        )
    ).one()
    return Member.from_row(row)


async def read_member(conn: AsyncConnection, app: str, user_id: str) -> Member | None:
    # Driver-level: CheckTier (a saga step) is this one read on its common path.
    row = (
        await conn.exec_driver_sql(
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE app = %(app)s AND user_id = %(user_id)s",
            {"app": app, "user_id": user_id},
        )
    ).one_or_none()
    return Member.from_row(row) if row is not None else None


async def read_members(
    conn: AsyncConnection, app: str, user_ids: Sequence[str]
) -> dict[str, Member]:
    """Several members in one read (CheckTierBatch); members not yet known are absent."""
    rows = await run_sql(
        conn,
        f"SELECT {MEMBER_COLUMNS} FROM members WHERE app = %(app)s AND user_id = ANY(%(ids)s)",
        {"app": app, "ids": list(user_ids)},
    )
    return {member.user_id: member for member in map(Member.from_row, rows)}


def needs_judging(member: Member, stored: StoredProgram[LevelsProgram], today: date) -> bool:
    """Whether the stored tier may be out of date: judged under another program version, or
    (requalify, decay) in an earlier period than today's."""
    if member.program_version != stored.version or member.evaluated_day is None:
        return True
    downgrade = stored.program.downgrade
    if downgrade.policy is DowngradePolicy.NONE:
        return False
    return period_start(member.evaluated_day, downgrade.period) < period_start(
        today, downgrade.period
    )


_TRUNC = {Period.MONTHLY: "month", Period.QUARTERLY: "quarter", Period.YEARLY: "year"}


def growth_select(program: LevelsProgram, today: date) -> tuple[str, dict[str, Any]]:
    """SQL (driver style: %(app)s, %(users)s) for the members' net growth by local day, as
    coarse as the policy allows (see ``tiers.evaluate``): one all-time total under none,
    totals per period under decay, the days since the start of the previous period under
    requalify. Columns: user_id, day, amount."""
    downgrade = program.downgrade
    params: dict[str, Any] = {"today": today}
    where = "app = %(app)s AND user_id = ANY(%(users)s) AND day <= %(today)s"
    if downgrade.policy is DowngradePolicy.REQUALIFY:
        # The start of the previous period: its growth decides the tier kept this period.
        period = downgrade.period
        params["first"] = add_months(period_start(today, period), -period.months)
        sql = f"SELECT user_id, day, amount FROM growth_days WHERE {where} AND day >= %(first)s"
    elif downgrade.policy is DowngradePolicy.DECAY:
        unit = _TRUNC[downgrade.period]
        sql = f"""SELECT user_id, date_trunc('{unit}', day)::date AS day, sum(amount) AS amount
                  FROM growth_days WHERE {where} GROUP BY 1, 2"""
    else:
        sql = f"""SELECT user_id, %(today)s::date AS day, sum(amount) AS amount
                  FROM growth_days WHERE {where} GROUP BY 1"""
    return sql, params


def growth_key(program: LevelsProgram, day: date, today: date) -> date:
    """Where growth on ``day`` lands in ``growth_select``'s coarse sums."""
    downgrade = program.downgrade
    if downgrade.policy is DowngradePolicy.DECAY:
        return period_start(day, downgrade.period)
    if downgrade.policy is DowngradePolicy.NONE:
        return today
    return day


async def growth_by_day(
    conn: AsyncConnection, app: str, program: LevelsProgram, users: Sequence[str], today: date
) -> dict[str, dict[date, int]]:
    """Each member's net growth by local day, as ``growth_select`` gives it."""
    sql, params = growth_select(program, today)
    result: dict[str, dict[date, int]] = {user: {} for user in users}
    rows = await conn.exec_driver_sql(sql, {**params, "app": app, "users": list(users)})
    for row in rows:
        result[row.user_id][row.day] = int(row.amount)
    return result


@dataclass(frozen=True)
class Judgement:
    user_id: str
    before: str
    standing: Standing

    @property
    def after(self) -> str:
        return self.standing.tier.code if self.standing.tier else ""

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def judge(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    members: Iterable[Member],
    today: date,
    now: datetime,
    *,
    reason: str | None = None,
    ref: str = "",
    operator: str = "",
    note: str = "",
    lifetime_delta: Mapping[str, int] | None = None,
) -> list[Judgement]:
    """Judges the members' tiers as of local day ``today`` and stores the result: tier,
    the program version and day judged, and a tier change with its reason
    (``reason``, or by direction: growth up, the policy's downgrade or decay down).
    ``lifetime_delta`` adds to lifetime growth in the same statement. The members must be
    locked by the caller."""
    members = list(members)
    if not members:
        return []
    program = stored.program
    growth = await growth_by_day(conn, stored.app, program, [m.user_id for m in members], today)
    judgements = []
    changed = []
    for member in members:
        standing = evaluate(program, growth[member.user_id], today, member.granted_tier)
        judgement = Judgement(member.user_id, member.tier, standing)
        judgements.append(judgement)
        if judgement.changed:
            changed.append(judgement)
    deltas = lifetime_delta or {}
    # One statement for the whole batch (arrays unnested), however many members it holds.
    await conn.exec_driver_sql(
        """UPDATE members m SET lifetime_growth = m.lifetime_growth + u.delta,
               tier = u.tier, program_version = %(version)s,
               evaluated_day = %(day)s, updated_at = %(now)s
           FROM unnest(%(users)s::text[], %(deltas)s::bigint[], %(tiers)s::text[])
                AS u(user_id, delta, tier)
           WHERE m.app = %(app)s AND m.user_id = u.user_id""",
        {
            "app": stored.app,
            "version": stored.version,
            "day": today,
            "now": now,
            "users": [j.user_id for j in judgements],
            "deltas": [deltas.get(j.user_id, 0) for j in judgements],
            "tiers": [j.after for j in judgements],
        },
    )
    if changed:
        await conn.exec_driver_sql(
            """INSERT INTO tier_changes
               (app, user_id, from_tier, to_tier, reason, ref, operator, note, changed_at)
               SELECT %(app)s, c.user_id, c.from_tier, c.to_tier, c.reason, %(ref)s,
                      %(operator)s, %(note)s, %(now)s
               FROM unnest(%(users)s::text[], %(froms)s::text[], %(tos)s::text[],
                           %(reasons)s::text[]) AS c(user_id, from_tier, to_tier, reason)""",
            {
                "app": stored.app,
                "ref": ref,
                "operator": operator,
                "note": note,
                "now": now,
                "users": [j.user_id for j in changed],
                "froms": [j.before for j in changed],
                "tos": [j.after for j in changed],
                "reasons": [
                    reason or change_reason(program.tier(j.before), j.standing.tier, program)
                    for j in changed
                ],
            },
        )
    return judgements
