"""AddGrowth and ReverseGrowth: one database transaction per event, idempotent by
(app, event_id); SetUserAttributes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.errors import IdempotencyConflict
from plumbing.idempotency import payload_hash
from plumbing.programs import StoredProgram
from services.levels.domain.badges import badges_reached, longest_streak_needed, run_length
from services.levels.domain.errors import EventNotFound
from services.levels.domain.growth import coefficient_for, decide_growth
from services.levels.domain.periods import add_months, local_day, week_start
from services.levels.domain.program import BadgeKind, LevelsProgram
from services.levels.domain.tiers import REASON_REVERSAL
from services.levels.store.members import judge, lock_member


@dataclass(frozen=True)
class GrowthInput:
    event_id: str
    user_id: str
    action: str
    amount: int
    occurred_at: datetime | None = None
    exempt_from_daily_cap: bool = False

    def digest(self) -> str:
        return payload_hash(
            {
                "user_id": self.user_id,
                "action": self.action,
                "amount": self.amount,
                "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
                "exempt": self.exempt_from_daily_cap,
            }
        )


@dataclass(frozen=True)
class BoardUpdate:
    """What the leaderboards must show for a member after a commit (absolute values)."""

    user_id: str
    day: date
    all_time: int
    week: int
    month: int
    # A reversal lowers scores; growth only raises them.
    lowered: bool = False


@dataclass(frozen=True)
class GrowthResult:
    reply: dict[str, Any]
    duplicate: bool = False
    board: BoardUpdate | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


async def _claim_event(
    conn: AsyncConnection, app: str, event: GrowthInput, day: date, now: datetime
) -> dict[str, Any] | None:
    """None when the event is new; its first reply when it is a replay."""
    params = {
        "app": app,
        "event_id": event.event_id,
        "user_id": event.user_id,
        "action": event.action,
        "hash": event.digest(),
        "day": day,
        "now": now,
    }
    inserted = (
        await conn.execute(
            text(
                """INSERT INTO growth_events
                   (app, event_id, user_id, action, payload_hash, day, created_at)
                   VALUES (:app, :event_id, :user_id, :action, :hash, :day, :now)
                   ON CONFLICT DO NOTHING RETURNING 1"""
            ),
            params,
        )
    ).scalar_one_or_none()
    if inserted is not None:
        return None
    row = (
        await conn.execute(
            text(
                "SELECT payload_hash, response FROM growth_events "
                "WHERE app = :app AND event_id = :event_id"
            ),
            params,
        )
    ).one()
    if row.payload_hash != params["hash"]:
        raise IdempotencyConflict(
            f"event_id {event.event_id!r} was already used for a different growth event"
        )
    reply: dict[str, Any] = row.response
    return reply


async def add_growth(
    conn: AsyncConnection, stored: StoredProgram[LevelsProgram], now: datetime, event: GrowthInput
) -> GrowthResult:
    program = stored.program
    zone = program.zone
    day = local_day(event.occurred_at or now, zone)
    today = max(local_day(now, zone), day)
    replay = await _claim_event(conn, stored.app, event, day, now)
    if replay is not None:
        return GrowthResult(reply=replay, duplicate=True)

    member = await lock_member(conn, stored, event.user_id, now)
    key = {"app": stored.app, "user_id": event.user_id, "day": day}
    counted_today = (
        await conn.execute(
            text(
                "SELECT counted FROM growth_days "
                "WHERE app = :app AND user_id = :user_id AND day = :day"
            ),
            key,
        )
    ).scalar_one_or_none() or 0
    decision = decide_growth(
        event.amount,
        coefficient_for(member.attributes, program.coefficients),
        int(counted_today),
        program.growth_daily_cap,
        event.exempt_from_daily_cap,
    )
    if decision.awarded or decision.counted:
        await conn.execute(
            text(
                """INSERT INTO growth_days (app, user_id, day, amount, counted)
                   VALUES (:app, :user_id, :day, :amount, :counted)
                   ON CONFLICT (app, user_id, day) DO UPDATE
                   SET amount = growth_days.amount + EXCLUDED.amount,
                       counted = growth_days.counted + EXCLUDED.counted"""
            ),
            {**key, "amount": decision.awarded, "counted": decision.counted},
        )
    badges = await _award_badges(conn, stored, event, day, now)
    [judgement] = await judge(
        conn,
        stored,
        [member],
        today,
        now,
        ref=event.event_id,
        lifetime_delta={event.user_id: decision.awarded},
    )
    reply = {
        "event_id": event.event_id,
        "growth_added": decision.awarded,
        "tier_before": judgement.before,
        "tier_after": judgement.after,
        "badges_earned": badges,
        "notes": list(decision.notes),
    }
    await conn.execute(
        text(
            """UPDATE growth_events SET amount = :amount, response = CAST(:reply AS jsonb)
               WHERE app = :app AND event_id = :event_id"""
        ),
        {
            "app": stored.app,
            "event_id": event.event_id,
            "amount": decision.awarded,
            "reply": _json(reply),
        },
    )
    board = None
    if decision.awarded:
        board = await board_scores(
            conn, stored.app, event.user_id, day, member.lifetime_growth + decision.awarded
        )
    return GrowthResult(reply=reply, board=board)


async def _award_badges(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    event: GrowthInput,
    day: date,
    now: datetime,
) -> list[dict[str, Any]]:
    """Counts the action toward its badges and awards those newly reached."""
    badges = [b for b in stored.program.badges if b.action == event.action]
    if not badges:
        return []
    key = {"app": stored.app, "user_id": event.user_id, "action": event.action, "day": day}
    streak = count = 0
    reach = longest_streak_needed(badges, event.action)
    if reach:
        await conn.execute(
            text(
                """INSERT INTO action_days (app, user_id, action, day)
                   VALUES (:app, :user_id, :action, :day) ON CONFLICT DO NOTHING"""
            ),
            key,
        )
        days = (
            await conn.execute(
                text(
                    """SELECT day FROM action_days
                       WHERE app = :app AND user_id = :user_id AND action = :action
                         AND day BETWEEN :first AND :last"""
                ),
                {
                    **key,
                    "first": day - timedelta(days=reach - 1),
                    "last": day + timedelta(days=reach - 1),
                },
            )
        ).scalars()
        streak = run_length(set(days), day)
    if any(b.kind is BadgeKind.COUNT for b in badges):
        count = (
            await conn.execute(
                text(
                    """INSERT INTO action_counts (app, user_id, action, count)
                       VALUES (:app, :user_id, :action, 1)
                       ON CONFLICT (app, user_id, action) DO UPDATE
                       SET count = action_counts.count + 1 RETURNING count"""
                ),
                key,
            )
        ).scalar_one()
    owned = set(
        (
            await conn.execute(
                text("SELECT code FROM member_badges WHERE app = :app AND user_id = :user_id"),
                key,
            )
        ).scalars()
    )
    reached = badges_reached(badges, event.action, streak, int(count), owned)
    if not reached:
        return []
    await conn.execute(
        text(
            """INSERT INTO member_badges
               (app, user_id, code, name, reward_points, event_id, earned_at)
               VALUES (:app, :user_id, :code, :name, :reward, :event_id, :now)"""
        ),
        [
            {
                "app": stored.app,
                "user_id": event.user_id,
                "code": badge.code,
                "name": badge.name,
                "reward": badge.reward_points,
                "event_id": event.event_id,
                "now": now,
            }
            for badge in reached
        ],
    )
    return [
        {
            "code": badge.code,
            "name": badge.name,
            "reward_points": badge.reward_points,
            "earned_at": now.isoformat(),
        }
        for badge in reached
    ]


async def board_scores(
    conn: AsyncConnection, app: str, user_id: str, day: date, all_time: int, lowered: bool = False
) -> BoardUpdate:
    """The member's growth in the week and the month of ``day`` (for the boards)."""
    week_first = week_start(day)
    month_first = day.replace(day=1)
    row = (
        await conn.execute(
            text(
                """SELECT
                     coalesce(sum(amount) FILTER (WHERE day >= :wf AND day < :wl), 0) AS week,
                     coalesce(sum(amount) FILTER (WHERE day >= :mf AND day < :ml), 0) AS month
                   FROM growth_days WHERE app = :app AND user_id = :user_id
                     AND day >= LEAST(CAST(:wf AS date), CAST(:mf AS date))
                     AND day < GREATEST(CAST(:wl AS date), CAST(:ml AS date))"""
            ),
            {
                "app": app,
                "user_id": user_id,
                "wf": week_first,
                "wl": week_first + timedelta(days=7),
                "mf": month_first,
                "ml": add_months(month_first, 1),
            },
        )
    ).one()
    return BoardUpdate(user_id, day, all_time, int(row.week), int(row.month), lowered)


@dataclass(frozen=True)
class ReversalResult:
    growth_reversed: int
    tier_after: str
    board: BoardUpdate | None = None


async def reverse_growth(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    event_id: str,
    reason: str,
) -> ReversalResult:
    """Takes back what an event added, on the day it was added (so requalify windows lose
    it too). Badges stay: they record what the member did. A repeat answers as the first."""
    row = (
        await conn.execute(
            text(
                """SELECT user_id, day, amount, reversed, reversal FROM growth_events
                   WHERE app = :app AND event_id = :event_id FOR UPDATE"""
            ),
            {"app": stored.app, "event_id": event_id},
        )
    ).one_or_none()
    if row is None:
        raise EventNotFound(f"no growth event {event_id!r}")
    if row.reversed:
        return ReversalResult(int(row.reversal["growth_reversed"]), row.reversal["tier_after"])
    member = await lock_member(conn, stored, row.user_id, now)
    amount = int(row.amount)
    if amount:
        await conn.execute(
            text(
                """UPDATE growth_days SET amount = amount - :amount
                   WHERE app = :app AND user_id = :user_id AND day = :day"""
            ),
            {"app": stored.app, "user_id": row.user_id, "day": row.day, "amount": amount},
        )
    today = max(local_day(now, stored.program.zone), row.day)
    [judgement] = await judge(
        conn,
        stored,
        [member],
        today,
        now,
        reason=REASON_REVERSAL,
        ref=event_id,
        lifetime_delta={row.user_id: -amount},
    )
    reversal = {"growth_reversed": amount, "tier_after": judgement.after, "reason": reason}
    await conn.execute(
        text(
            """UPDATE growth_events SET reversed = true, reversal = CAST(:reversal AS jsonb)
               WHERE app = :app AND event_id = :event_id"""
        ),
        {"app": stored.app, "event_id": event_id, "reversal": _json(reversal)},
    )
    board = None
    if amount:
        board = await board_scores(
            conn, stored.app, row.user_id, row.day, member.lifetime_growth - amount, lowered=True
        )
    return ReversalResult(amount, judgement.after, board)


async def set_attributes(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    user_id: str,
    attributes: dict[str, str],
) -> dict[str, str]:
    """Sets the given attributes on the member, keeping the others; an empty value removes
    the attribute. They pick growth coefficients from the next event on."""
    member = await lock_member(conn, stored, user_id, now)
    merged = {**member.attributes, **attributes}
    merged = {key: value for key, value in merged.items() if value != ""}
    await conn.execute(
        text(
            """UPDATE members SET attributes = CAST(:attributes AS jsonb), updated_at = :now
               WHERE app = :app AND user_id = :user_id"""
        ),
        {"app": stored.app, "user_id": user_id, "attributes": _json(merged), "now": now},
    )
    return merged


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
