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

from plumbing.programs import StoredProgram
from services.levels.domain.periods import Period, add_months, period_start
from services.levels.domain.program import DowngradePolicy, LevelsProgram
from services.levels.domain.tiers import Standing, change_reason, evaluate, tier_for_growth


@dataclass
class Member:
    user_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    lifetime_growth: int = 0
    qualifying_growth: int = 0
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
            qualifying_growth=int(row.qualifying_growth),
            tier=row.tier,
            granted_tier=row.granted_tier,
            program_version=int(row.program_version),
            evaluated_day=row.evaluated_day,
        )


_COLUMNS = (
    "user_id, attributes, lifetime_growth, qualifying_growth, tier, granted_tier, "
    "program_version, evaluated_day"
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
                RETURNING {_COLUMNS}"""
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
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM members WHERE app = :app AND user_id = :user_id"),
            {"app": app, "user_id": user_id},
        )
    ).one_or_none()
    return Member.from_row(row) if row is not None else None


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


async def growth_by_day(
    conn: AsyncConnection, app: str, program: LevelsProgram, users: Sequence[str], today: date
) -> dict[str, dict[date, int]]:
    """Each member's net growth by local day, as coarse as the policy allows (see
    ``tiers.evaluate``): one all-time total under none, totals per period under decay, the
    days since the start of the previous period under requalify."""
    downgrade = program.downgrade
    params: dict[str, Any] = {"app": app, "users": list(users), "today": today}
    if downgrade.policy is DowngradePolicy.REQUALIFY:
        params["first"] = add_months(
            period_start(today, downgrade.period), -downgrade.period.months
        )
        sql = """SELECT user_id, day, amount FROM growth_days
                 WHERE app = :app AND user_id = ANY(:users) AND day BETWEEN :first AND :today"""
    elif downgrade.policy is DowngradePolicy.DECAY:
        unit = _TRUNC[downgrade.period]
        sql = f"""SELECT user_id, date_trunc('{unit}', day)::date AS day, sum(amount) AS amount
                  FROM growth_days WHERE app = :app AND user_id = ANY(:users) AND day <= :today
                  GROUP BY 1, 2"""
    else:
        sql = """SELECT user_id, CAST(:today AS date) AS day, sum(amount) AS amount
                 FROM growth_days WHERE app = :app AND user_id = ANY(:users) AND day <= :today
                 GROUP BY 1"""
    result: dict[str, dict[date, int]] = {user: {} for user in users}
    for row in await conn.execute(text(sql), params):
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
    qualifying growth, the program version and day judged, and a tier change with its reason
    (``reason``, or by direction: growth up, the policy's downgrade or decay down).
    ``lifetime_delta`` adds to lifetime growth in the same statement. The members must be
    locked by the caller."""
    members = list(members)
    if not members:
        return []
    program = stored.program
    growth = await growth_by_day(conn, stored.app, program, [m.user_id for m in members], today)
    judgements = []
    updates = []
    changes = []
    for member in members:
        standing = evaluate(program, growth[member.user_id], today, member.granted_tier)
        judgement = Judgement(member.user_id, member.tier, standing)
        judgements.append(judgement)
        updates.append(
            {
                "app": stored.app,
                "user_id": member.user_id,
                "delta": (lifetime_delta or {}).get(member.user_id, 0),
                "qualifying": standing.qualifying_growth,
                "tier": judgement.after,
                "version": stored.version,
                "day": today,
                "now": now,
            }
        )
        if judgement.changed:
            changes.append(
                {
                    "app": stored.app,
                    "user_id": member.user_id,
                    "from_tier": judgement.before,
                    "to_tier": judgement.after,
                    "reason": reason
                    or change_reason(program.tier(judgement.before), standing.tier, program),
                    "ref": ref,
                    "operator": operator,
                    "note": note,
                    "now": now,
                }
            )
    await conn.execute(
        text(
            """UPDATE members SET lifetime_growth = lifetime_growth + :delta,
                   qualifying_growth = :qualifying, tier = :tier, program_version = :version,
                   evaluated_day = :day, updated_at = :now
               WHERE app = :app AND user_id = :user_id"""
        ),
        updates,
    )
    if changes:
        await conn.execute(
            text(
                """INSERT INTO tier_changes
                   (app, user_id, from_tier, to_tier, reason, ref, operator, note, changed_at)
                   VALUES (:app, :user_id, :from_tier, :to_tier, :reason, :ref, :operator,
                           :note, :now)"""
            ),
            changes,
        )
    return judgements
