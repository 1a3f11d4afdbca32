"""AddGrowth and ReverseGrowth, idempotent by (app, event_id): a batch of growth events is one
database transaction of set-wise statements; a reversal is one of its own. SetUserAttributes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows
from plumbing.errors import IdempotencyConflict
from plumbing.idempotency import claim_order, first_occurrences, payload_hash
from plumbing.programs import StoredProgram
from services.levels.domain.badges import badges_reached, longest_streak_needed, run_length
from services.levels.domain.errors import EventNotFound
from services.levels.domain.growth import coefficient_for, decide_growth
from services.levels.domain.periods import add_months, local_day, week_start
from services.levels.domain.program import BadgeKind, BadgeRule, LevelsProgram
from services.levels.domain.tiers import (
    REASON_REVERSAL,
    Standing,
    change_reason,
    evaluate,
    tier_for_growth,
)
from services.levels.store.members import (
    Member,
    growth_key,
    growth_select,
    judge,
    lock_member,
)


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


# AddGrowth is the hot path (every RecordEvent), and set-wise: a batch of any size is a handful
# of driver-level round trips and one commit: claim every event, lock the members, read what
# the rules need, write everything.
_CLAIM = """
    INSERT INTO growth_events (app, event_id, user_id, action, payload_hash, day, created_at)
    SELECT %(app)s, e.event_id, e.user_id, e.action, e.hash, e.day, %(now)s
    FROM json_to_recordset(%(events)s::json) AS e(event_id text, user_id text, action text,
                                                    hash text, day date)
    ON CONFLICT DO NOTHING RETURNING event_id
"""
_REPLAY = """
    SELECT event_id, payload_hash, response FROM growth_events
    WHERE app = %(app)s AND event_id = ANY(%(ids)s::text[])
"""
# Members are locked in user_id order, the order of every writer of several members.
_LOCK_MEMBERS = """
    INSERT INTO members (app, user_id, tier, created_at, updated_at)
    SELECT %(app)s, u, %(base)s, %(now)s, %(now)s
    FROM json_array_elements_text(%(users)s::json) AS u
    ON CONFLICT (app, user_id) DO UPDATE SET updated_at = EXCLUDED.updated_at
    RETURNING user_id, attributes, lifetime_growth, tier, granted_tier
"""
# For each (member, day) of the batch: the growth counted toward that day's cap, and the
# growth of its week and of its month (for the boards).
# For each (member, day) of the batch: the growth counted toward that day's cap, and the
# growth of its week and of its month (for the boards). LATERAL: index probes per key,
# whatever the planner believes of the tables' sizes.
_READ_DAYS = """
    SELECT k.u, k.d, g.counted, g.week, g.month
    FROM json_to_recordset(%(keys)s::json) AS k(u text, d date, wf date, wl date, mf date,
                                                 ml date),
    LATERAL (
      SELECT coalesce(sum(counted) FILTER (WHERE day = k.d), 0) AS counted,
             coalesce(sum(amount) FILTER (WHERE day >= k.wf AND day < k.wl), 0) AS week,
             coalesce(sum(amount) FILTER (WHERE day >= k.mf AND day < k.ml), 0) AS month
      FROM growth_days
      WHERE app = %(app)s AND user_id = k.u AND day >= LEAST(k.wf, k.mf)
        AND day < GREATEST(k.wl, k.ml)) g
"""
_READ_BADGES = """
    SELECT user_id, code FROM member_badges
    WHERE app = %(app)s AND user_id = ANY(%(users)s::text[])
"""
_READ_STREAK_DAYS = """
    SELECT a.user_id, a.action, a.day
    FROM json_to_recordset(%(pairs)s::json) AS k(u text, a text),
    LATERAL (SELECT * FROM action_days a
             WHERE a.app = %(app)s AND a.user_id = k.u AND a.action = k.a
               AND a.day BETWEEN %(first)s AND %(last)s) a
"""
_READ_COUNTS = """
    SELECT c.user_id, c.action, c.count
    FROM json_to_recordset(%(pairs)s::json) AS k(u text, a text),
    LATERAL (SELECT * FROM action_counts c
             WHERE c.app = %(app)s AND c.user_id = k.u AND c.action = k.a) c
"""
_WRITE = """
    WITH days AS (
      INSERT INTO growth_days (app, user_id, day, amount, counted)
      SELECT %(app)s, d.user_id, d.day, d.amount, d.counted
      FROM json_to_recordset(%(days)s::json)
           AS d(user_id text, day date, amount bigint, counted bigint)
      ON CONFLICT (app, user_id, day) DO UPDATE
      SET amount = growth_days.amount + EXCLUDED.amount,
          counted = growth_days.counted + EXCLUDED.counted),
    streak AS (
      INSERT INTO action_days (app, user_id, action, day)
      SELECT %(app)s, s.user_id, s.action, s.day
      FROM json_to_recordset(%(streaks)s::json) AS s(user_id text, action text, day date)
      ON CONFLICT DO NOTHING),
    counts AS (
      INSERT INTO action_counts (app, user_id, action, count)
      SELECT %(app)s, c.user_id, c.action, c.added
      FROM json_to_recordset(%(counts)s::json) AS c(user_id text, action text, added bigint)
      ON CONFLICT (app, user_id, action) DO UPDATE
      SET count = action_counts.count + EXCLUDED.count),
    badges AS (
      INSERT INTO member_badges (app, user_id, code, name, reward_points, event_id, earned_at)
      SELECT %(app)s, b.user_id, b.code, b.name, b.reward, b.event_id, %(now)s
      FROM json_to_recordset(%(badges)s::json)
           AS b(user_id text, code text, name text, reward bigint, event_id text)),
    member AS (
      UPDATE members m SET lifetime_growth = m.lifetime_growth + u.added, tier = u.tier,
        program_version = %(version)s, evaluated_day = %(today)s, updated_at = %(now)s
      FROM json_to_recordset(%(members)s::json) AS u(user_id text, added bigint, tier text)
      -- The users again as an array: an index probe each, not a hash join over the app.
      WHERE m.app = %(app)s AND m.user_id = u.user_id AND m.user_id = ANY(%(users)s::text[])),
    change AS (
      INSERT INTO tier_changes (app, user_id, from_tier, to_tier, reason, ref, changed_at)
      SELECT %(app)s, t.user_id, t.from_tier, t.to_tier, t.reason, t.ref, %(now)s
      FROM json_to_recordset(%(changes)s::json)
           AS t(n int, user_id text, from_tier text, to_tier text, reason text, ref text)
      ORDER BY t.n)
    UPDATE growth_events e SET amount = a.amount, response = a.reply
    FROM json_to_recordset(%(answers)s::json) AS a(event_id text, amount bigint, reply jsonb)
    WHERE e.app = %(app)s AND e.event_id = a.event_id
"""


async def add_growth_batch(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    batch: Sequence[GrowthInput],
) -> list[GrowthResult]:
    """Applies a batch of one app's growth events inside the caller's transaction (the caller
    commits), with exactly the results that applying them one by one, in order, would give:
    each event sees the earlier events' growth, caps, streak days, counts, badges and tier.

    A repeated event_id answers as its first occurrence (``duplicate``); one already recorded
    answers as it was recorded; the same id with another payload refuses the whole batch."""
    zone = stored.program.zone
    digests = [event.digest() for event in batch]
    days = [local_day(event.occurred_at or now, zone) for event in batch]
    first = first_occurrences([event.event_id for event in batch], digests)
    fresh = claim_order(first)
    claimed = {
        row[0]
        for row in await conn.exec_driver_sql(
            _CLAIM,
            {
                "app": stored.app,
                "now": now,
                "events": json_rows(
                    {
                        "event_id": batch[i].event_id,
                        "user_id": batch[i].user_id,
                        "action": batch[i].action,
                        "hash": digests[i],
                        "day": days[i],
                    }
                    for i in fresh
                ),
            },
        )
    }
    results: dict[str, GrowthResult] = {}
    replayed = [batch[i].event_id for i in fresh if batch[i].event_id not in claimed]
    if replayed:
        rows: list[Any] = list(
            await conn.exec_driver_sql(_REPLAY, {"app": stored.app, "ids": replayed})
        )
        for event_id, digest, response in rows:
            if digest != digests[first[event_id]]:
                raise IdempotencyConflict(
                    f"event_id {event_id!r} was already used for a different growth event"
                )
            results[event_id] = GrowthResult(reply=response, duplicate=True)
    todo = [i for i in sorted(fresh) if batch[i].event_id in claimed]
    if todo:
        decided = await _decide_and_write(
            conn, stored, now, [batch[i] for i in todo], [days[i] for i in todo]
        )
        results.update(decided)
    out = []
    for index, event in enumerate(batch):
        result = results[event.event_id]
        if first[event.event_id] != index:
            result = GrowthResult(reply=result.reply, duplicate=True)
        out.append(result)
    return out


@dataclass
class _BatchChanges:
    """What the batch changed so far, event by event, written in one statement at its end."""

    # By member and day: [growth added, of it counted toward the day's cap].
    added: dict[str, dict[date, list[int]]] = field(default_factory=dict)
    streak_days: set[tuple[str, str, date]] = field(default_factory=set)
    counted_actions: dict[tuple[str, str], int] = field(default_factory=dict)
    badges: list[tuple[str, BadgeRule, str]] = field(default_factory=list)
    # (user, from tier, to tier, reason, event id), in the order they happened.
    tier_changes: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    judged: dict[str, Standing] = field(default_factory=dict)
    results: dict[str, GrowthResult] = field(default_factory=dict)


async def _decide_and_write(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    events: list[GrowthInput],
    days: list[date],
) -> dict[str, GrowthResult]:
    program = stored.program
    today = max(local_day(now, program.zone), *days)
    base = tier_for_growth(program, 0)
    users = sorted({e.user_id for e in events})
    locked: list[Any] = list(
        await conn.exec_driver_sql(
            _LOCK_MEMBERS,
            {
                "app": stored.app,
                "users": json.dumps(users),
                "now": now,
                "base": base.code if base else "",
            },
        )
    )
    members = {
        row[0]: Member(row[0], dict(row[1] or {}), int(row[2]), row[3], row[4]) for row in locked
    }
    state = await _read_state(conn, stored, today, events, days, users)
    changes = _BatchChanges()
    for event, day in zip(events, days, strict=True):
        _apply_event(program, now, today, state, members[event.user_id], changes, event, day)
    await _write(conn, stored, now, today, members, changes)
    return changes.results


def _apply_event(
    program: LevelsProgram,
    now: datetime,
    today: date,
    state: _BatchState,
    member: Member,
    changes: _BatchChanges,
    event: GrowthInput,
    day: date,
) -> None:
    """One event, as it would be alone after the batch's earlier events: its growth (cap and
    coefficient), badges, tier and board standing."""
    key = (event.user_id, day)
    mine = changes.added.setdefault(event.user_id, {})
    delta = mine.setdefault(day, [0, 0])
    decision = decide_growth(
        event.amount,
        coefficient_for(member.attributes, program.coefficients),
        state.counted.get(key, 0) + delta[1],
        program.growth_daily_cap,
        event.exempt_from_daily_cap,
    )
    delta[0] += decision.awarded
    delta[1] += decision.counted
    earned = _badges_earned(program, state, changes, event, day)
    growth = state.growth.setdefault(event.user_id, {})
    spot = growth_key(program, day, today)
    growth[spot] = growth.get(spot, 0) + decision.awarded
    standing = changes.judged.get(event.user_id)
    if standing is None or decision.awarded:
        # Unchanged growth, day and grant judge the same: a member is judged again only
        # when an event of the batch moved their growth.
        standing = evaluate(program, growth, today, member.granted_tier)
        changes.judged[event.user_id] = standing
    tier_before = member.tier
    tier_after = standing.tier.code if standing.tier else ""
    if tier_after != tier_before:
        reason = change_reason(program.tier(tier_before), standing.tier, program)
        changes.tier_changes.append(
            (event.user_id, tier_before, tier_after, reason, event.event_id)
        )
    member.tier = tier_after
    member.lifetime_growth += decision.awarded
    reply = {
        "event_id": event.event_id,
        "growth_added": decision.awarded,
        "tier_before": tier_before,
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
    board = _board(state, member, mine, event, day) if decision.awarded else None
    changes.results[event.event_id] = GrowthResult(reply=reply, board=board)


def _badges_earned(
    program: LevelsProgram,
    state: _BatchState,
    changes: _BatchChanges,
    event: GrowthInput,
    day: date,
) -> list[BadgeRule]:
    """The badges this event earns: its action's streak (consecutive local days) and count
    badges the member does not own yet."""
    badges = [b for b in program.badges if b.action == event.action]
    streak = count = 0
    pair = (event.user_id, event.action)
    if any(b.kind is BadgeKind.STREAK for b in badges):
        active = state.streak_days.setdefault(pair, set())
        active.add(day)
        changes.streak_days.add((event.user_id, event.action, day))
        streak = run_length(active, day)
    if any(b.kind is BadgeKind.COUNT for b in badges):
        state.counts[pair] = state.counts.get(pair, 0) + 1
        changes.counted_actions[pair] = changes.counted_actions.get(pair, 0) + 1
        count = state.counts[pair]
    owned = state.owned.setdefault(event.user_id, set())
    earned = badges_reached(badges, event.action, streak, count, owned)
    owned.update(b.code for b in earned)
    changes.badges += [(event.user_id, b, event.event_id) for b in earned]
    return earned


def _board(
    state: _BatchState,
    member: Member,
    mine: dict[date, list[int]],
    event: GrowthInput,
    day: date,
) -> BoardUpdate:
    """The member's standing on the boards after this event: lifetime, this week, this month
    (what was stored before the batch plus what the batch added in that week and month)."""
    week, month = state.periods[(event.user_id, day)]
    week_first, month_first = week_start(day), day.replace(day=1)
    for other, (amount, _) in mine.items():
        week += amount if week_start(other) == week_first else 0
        month += amount if other.replace(day=1) == month_first else 0
    return BoardUpdate(event.user_id, day, member.lifetime_growth, week, month)


async def _write(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    now: datetime,
    today: date,
    members: dict[str, Member],
    changes: _BatchChanges,
) -> None:
    """Everything the batch changed, in one statement."""
    grown = {user: sum(v[0] for v in by_day.values()) for user, by_day in changes.added.items()}
    day_rows = [
        (user, day, v)
        for user, by_day in changes.added.items()
        for day, v in by_day.items()
        if any(v)
    ]
    await conn.exec_driver_sql(
        _WRITE,
        {
            "app": stored.app,
            "now": now,
            "today": today,
            "version": stored.version,
            "days": json_rows(
                {"user_id": user, "day": day, "amount": v[0], "counted": v[1]}
                for user, day, v in day_rows
            ),
            "streaks": json_rows(
                {"user_id": u, "action": a, "day": d} for u, a, d in sorted(changes.streak_days)
            ),
            "counts": json_rows(
                {"user_id": k[0], "action": k[1], "added": v}
                for k, v in sorted(changes.counted_actions.items())
            ),
            "badges": json_rows(
                {
                    "user_id": user,
                    "code": badge.code,
                    "name": badge.name,
                    "reward": badge.reward_points,
                    "event_id": event_id,
                }
                for user, badge, event_id in changes.badges
            ),
            "users": list(grown),
            "members": json_rows(
                {"user_id": u, "added": added, "tier": members[u].tier}
                for u, added in grown.items()
            ),
            "changes": json_rows(
                {
                    "n": n,
                    "user_id": c[0],
                    "from_tier": c[1],
                    "to_tier": c[2],
                    "reason": c[3],
                    "ref": c[4],
                }
                for n, c in enumerate(changes.tier_changes)
            ),
            "answers": json_rows(
                {"event_id": event_id, "amount": r.reply["growth_added"], "reply": r.reply}
                for event_id, r in changes.results.items()
            ),
        },
    )


@dataclass
class _BatchState:
    """What the rules need of the batch's members, read once under their locks and then kept
    current event by event."""

    counted: dict[tuple[str, date], int]
    periods: dict[tuple[str, date], tuple[int, int]]
    growth: dict[str, dict[date, int]]
    owned: dict[str, set[str]]
    streak_days: dict[tuple[str, str], set[date]]
    counts: dict[tuple[str, str], int]


async def _read_state(
    conn: AsyncConnection,
    stored: StoredProgram[LevelsProgram],
    today: date,
    events: list[GrowthInput],
    days: list[date],
    users: list[str],
) -> _BatchState:
    """What the rules need of the batch's members: each (member, day)'s counted growth and
    its week and month, the growth the tier is judged on, and for badge actions the badges
    owned, the streak days around the batch's days and the action counts."""
    program, app = stored.program, stored.app
    keys = sorted({(e.user_id, d) for e, d in zip(events, days, strict=True)})
    state = _BatchState({}, {}, {}, {}, {}, {})
    rows: list[Any] = list(
        await conn.exec_driver_sql(
            _READ_DAYS,
            {
                "app": app,
                "keys": json_rows(
                    {
                        "u": user,
                        "d": day,
                        "wf": week_start(day),
                        "wl": week_start(day) + timedelta(days=7),
                        "mf": day.replace(day=1),
                        "ml": add_months(day.replace(day=1), 1),
                    }
                    for user, day in keys
                ),
            },
        )
    )
    for user, day, counted, week, month in rows:
        state.counted[(user, day)] = int(counted)
        state.periods[(user, day)] = (int(week), int(month))
    growth_sql, growth_params = growth_select(program, today)
    rows = list(
        await conn.exec_driver_sql(growth_sql, {**growth_params, "app": app, "users": users})
    )
    for user, day, amount in rows:
        state.growth.setdefault(user, {})[day] = int(amount)
    watched = {b.action: b for b in program.badges}
    if any(e.action in watched for e in events):
        await _read_badge_state(conn, program, app, events, days, users, state)
    return state


def _badge_pairs(
    program: LevelsProgram, events: list[GrowthInput], kind: BadgeKind
) -> list[tuple[str, str]]:
    """The (member, action) pairs of the batch that a badge of ``kind`` watches."""
    watched = {b.action for b in program.badges if b.kind is kind}
    return sorted({(e.user_id, e.action) for e in events if e.action in watched})


async def _read_badge_state(
    conn: AsyncConnection,
    program: LevelsProgram,
    app: str,
    events: list[GrowthInput],
    days: list[date],
    users: list[str],
    state: _BatchState,
) -> None:
    rows: list[Any] = list(await conn.exec_driver_sql(_READ_BADGES, {"app": app, "users": users}))
    for user, code in rows:
        state.owned.setdefault(user, set()).add(code)
    streaks = _badge_pairs(program, events, BadgeKind.STREAK)
    if streaks:
        reach = max(longest_streak_needed(program.badges, a) for _, a in streaks)
        rows = list(
            await conn.exec_driver_sql(
                _READ_STREAK_DAYS,
                {
                    "app": app,
                    "pairs": json_rows({"u": u, "a": a} for u, a in streaks),
                    "first": min(days) - timedelta(days=reach - 1),
                    "last": max(days) + timedelta(days=reach - 1),
                },
            )
        )
        for user, action, day in rows:
            state.streak_days.setdefault((user, action), set()).add(day)
    counted = _badge_pairs(program, events, BadgeKind.COUNT)
    if counted:
        rows = list(
            await conn.exec_driver_sql(
                _READ_COUNTS,
                {"app": app, "pairs": json_rows({"u": u, "a": a} for u, a in counted)},
            )
        )
        for user, action, number in rows:
            state.counts[(user, action)] = int(number)


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
