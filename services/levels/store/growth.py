"""AddGrowth and ReverseGrowth: one database transaction per event, idempotent by
(app, event_id); SetUserAttributes."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from services.levels.domain.tiers import (
    REASON_REVERSAL,
    change_reason,
    evaluate,
    tier_for_growth,
)
from services.levels.store.members import growth_key, growth_select, judge, lock_member


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


# AddGrowth is the hot path (every RecordEvent): it speaks SQL to the driver (exec_driver_sql:
# no statement compilation, still traced) in three round trips and a commit, whatever the
# program: claim the event and lock the member; read what the rules need; write everything.
_CLAIM_AND_LOCK = """
    WITH claim AS (
      INSERT INTO growth_events (app, event_id, user_id, action, payload_hash, day, created_at)
      VALUES (%(app)s, %(event_id)s, %(user_id)s, %(action)s, %(hash)s, %(day)s, %(now)s)
      ON CONFLICT DO NOTHING RETURNING 1)
    INSERT INTO members (app, user_id, tier, created_at, updated_at)
    SELECT %(app)s, %(user_id)s, %(base)s, %(now)s, %(now)s FROM claim
    ON CONFLICT (app, user_id) DO UPDATE SET updated_at = EXCLUDED.updated_at
    RETURNING attributes, lifetime_growth, tier, granted_tier
"""
_REPLAY = """
    SELECT payload_hash, response FROM growth_events
    WHERE app = %(app)s AND event_id = %(event_id)s
"""
# Read after the member lock is held, so it sees every earlier change to this member.
_KEY = "app = %(app)s AND user_id = %(user_id)s"
_READ_STATE = f"""
    SELECT
      (SELECT counted FROM growth_days WHERE {_KEY} AND day = %(day)s) AS counted,
      (SELECT coalesce(json_agg(json_build_array(g.day, g.amount)), '[]')
         FROM ({{growth}}) g) AS growth,
      (SELECT coalesce(sum(amount), 0) FROM growth_days
         WHERE {_KEY} AND day >= %(week_first)s AND day < %(week_last)s) AS week,
      (SELECT coalesce(sum(amount), 0) FROM growth_days
         WHERE {_KEY} AND day >= %(month_first)s AND day < %(month_last)s) AS month,
      (SELECT coalesce(array_agg(code), '{{{{}}}}') FROM member_badges
         WHERE %(badges)s AND {_KEY}) AS owned,
      (SELECT coalesce(array_agg(day), '{{{{}}}}') FROM action_days
         WHERE %(streak)s AND {_KEY} AND action = %(action)s
           AND day BETWEEN %(streak_first)s AND %(streak_last)s) AS streak_days,
      (SELECT count FROM action_counts
         WHERE %(badges)s AND {_KEY} AND action = %(action)s) AS action_count
"""
_WRITE = """
    WITH days AS (
      INSERT INTO growth_days (app, user_id, day, amount, counted)
      SELECT %(app)s, %(user_id)s, %(day)s, %(awarded)s, %(counted)s
      WHERE %(awarded)s <> 0 OR %(counted)s <> 0
      ON CONFLICT (app, user_id, day) DO UPDATE
      SET amount = growth_days.amount + EXCLUDED.amount,
          counted = growth_days.counted + EXCLUDED.counted),
    streak AS (
      INSERT INTO action_days (app, user_id, action, day)
      SELECT %(app)s, %(user_id)s, %(action)s, %(day)s WHERE %(track_streak)s
      ON CONFLICT DO NOTHING),
    counts AS (
      INSERT INTO action_counts (app, user_id, action, count)
      SELECT %(app)s, %(user_id)s, %(action)s, 1 WHERE %(track_count)s
      ON CONFLICT (app, user_id, action) DO UPDATE SET count = action_counts.count + 1),
    badges AS (
      INSERT INTO member_badges (app, user_id, code, name, reward_points, event_id, earned_at)
      SELECT %(app)s, %(user_id)s, b.code, b.name, b.reward, %(event_id)s, %(now)s
      FROM unnest(%(badge_codes)s::text[], %(badge_names)s::text[], %(badge_rewards)s::bigint[])
           AS b(code, name, reward)),
    member AS (
      UPDATE members SET lifetime_growth = lifetime_growth + %(awarded)s,
        tier = %(tier)s, program_version = %(version)s,
        evaluated_day = %(today)s, updated_at = %(now)s
      WHERE app = %(app)s AND user_id = %(user_id)s),
    change AS (
      INSERT INTO tier_changes (app, user_id, from_tier, to_tier, reason, ref, changed_at)
      SELECT %(app)s, %(user_id)s, %(tier_before)s, %(tier)s, %(reason)s, %(event_id)s, %(now)s
      WHERE %(tier_before)s <> %(tier)s)
    UPDATE growth_events SET amount = %(awarded)s, response = %(reply)s::jsonb
    WHERE app = %(app)s AND event_id = %(event_id)s
"""


async def add_growth(
    conn: AsyncConnection, stored: StoredProgram[LevelsProgram], now: datetime, event: GrowthInput
) -> GrowthResult:
    program = stored.program
    zone = program.zone
    day = local_day(event.occurred_at or now, zone)
    today = max(local_day(now, zone), day)
    base = tier_for_growth(program, 0)
    params: dict[str, Any] = {
        "app": stored.app,
        "event_id": event.event_id,
        "user_id": event.user_id,
        "action": event.action,
        "hash": event.digest(),
        "day": day,
        "now": now,
        "base": base.code if base else "",
    }
    locked = (await conn.exec_driver_sql(_CLAIM_AND_LOCK, params)).one_or_none()
    if locked is None:
        return GrowthResult(reply=await _replay(conn, params), duplicate=True)

    # What the rules need, read under the member's lock.
    # Badge state is only read for an action some badge watches.
    badges = [b for b in program.badges if b.action == event.action]
    track_streak = any(b.kind is BadgeKind.STREAK for b in badges)
    track_count = any(b.kind is BadgeKind.COUNT for b in badges)
    reach = max(longest_streak_needed(badges, event.action), 1)
    week_first, month_first = week_start(day), day.replace(day=1)
    growth_sql, growth_params = growth_select(program, today)
    state = (
        await conn.exec_driver_sql(
            _READ_STATE.format(growth=growth_sql),
            {
                **params,
                **growth_params,
                "users": [event.user_id],
                "week_first": week_first,
                "week_last": week_first + timedelta(days=7),
                "month_first": month_first,
                "month_last": add_months(month_first, 1),
                "streak_first": day - timedelta(days=reach - 1),
                "streak_last": day + timedelta(days=reach - 1),
                "badges": bool(badges),
                "streak": track_streak,
            },
        )
    ).one()

    # The rules: coefficient and cap, badges, tier.
    decision = decide_growth(
        event.amount,
        coefficient_for(dict(locked.attributes or {}), program.coefficients),
        int(state.counted or 0),
        program.growth_daily_cap,
        event.exempt_from_daily_cap,
    )
    streak = run_length({*state.streak_days, day}, day) if track_streak else 0
    count = int(state.action_count or 0) + 1 if track_count else 0
    earned = badges_reached(badges, event.action, streak, count, set(state.owned))
    growth = {date.fromisoformat(d): int(a) for d, a in state.growth}
    key = growth_key(program, day, today)
    growth[key] = growth.get(key, 0) + decision.awarded
    standing = evaluate(program, growth, today, locked.granted_tier)
    tier_after = standing.tier.code if standing.tier else ""
    reply = {
        "event_id": event.event_id,
        "growth_added": decision.awarded,
        "tier_before": locked.tier,
        "tier_after": tier_after,
        "badges_earned": [
            {
                "code": b.code,
                "name": b.name,
                "reward_points": b.reward_points,
                "earned_at": now.isoformat(),
            }
            for b in earned
        ],
        "notes": list(decision.notes),
    }
    await conn.exec_driver_sql(
        _WRITE,
        {
            **params,
            "awarded": decision.awarded,
            "counted": decision.counted,
            "track_streak": track_streak,
            "track_count": track_count,
            "badge_codes": [b.code for b in earned],
            "badge_names": [b.name for b in earned],
            "badge_rewards": [b.reward_points for b in earned],
            "tier": tier_after,
            "tier_before": locked.tier,
            "reason": change_reason(program.tier(locked.tier), standing.tier, program),
            "version": stored.version,
            "today": today,
            "reply": _json(reply),
        },
    )
    board = None
    if decision.awarded:
        board = BoardUpdate(
            event.user_id,
            day,
            int(locked.lifetime_growth) + decision.awarded,
            int(state.week) + decision.awarded,
            int(state.month) + decision.awarded,
        )
    return GrowthResult(reply=reply, board=board)


async def _replay(conn: AsyncConnection, params: dict[str, Any]) -> dict[str, Any]:
    """The first reply of an event seen before; the same id with another payload is refused."""
    row = (await conn.exec_driver_sql(_REPLAY, params)).one()
    if row.payload_hash != params["hash"]:
        raise IdempotencyConflict(
            f"event_id {params['event_id']!r} was already used for a different growth event"
        )
    reply: dict[str, Any] = row.response
    return reply


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
