"""Earn and ReverseEvent: one database transaction per event, idempotent by (app, event_id)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.points.domain.earning import (
    DayUsage,
    EarnState,
    Streak,
    decide_earn,
    limit_penalty,
)
from services.points.domain.errors import EventNotFound, IdempotencyConflict
from services.points.domain.expiry import local_day, lot_expires_at
from services.points.domain.lots import LotSlice
from services.points.domain.program import EarningRule
from services.points.store.idempotency import payload_hash
from services.points.store.ledger import (
    Account,
    Leg,
    apply_to_account,
    expire_account_due,
    lock_existing_account,
    lock_user_account,
    place_points,
    record_transaction,
    take_points,
)
from services.points.store.programs import AppProgram
from services.points.store.tables import events

# The earn_counters action that sums points toward the per-user daily cap.
CAP_COUNTER = ""


@dataclass(frozen=True)
class EarnInput:
    event_id: str
    user_id: str
    action: str
    quantity: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None

    def digest(self) -> str:
        return payload_hash(
            {
                "user_id": self.user_id,
                "action": self.action,
                "quantity": self.quantity,
                "attributes": dict(self.attributes),
                "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            }
        )


@dataclass(frozen=True)
class EarnResult:
    event_id: str
    points_awarded: int
    notes: tuple[str, ...] = ()
    streak_days: int = 0
    # Growth the rule grants for this event, and whether it escapes the daily caps.
    growth: int = 0
    exempt_from_daily_cap: bool = False
    duplicate: bool = False


# The hot path speaks SQL to the driver (exec_driver_sql: no statement compilation, still seen
# by tracing): an earn is four round trips and a commit, whatever the rule.
_CLAIM = """
    INSERT INTO events (app, event_id, user_id, payload_hash, points, response, created_at)
    VALUES (%(app)s, %(event_id)s, %(user_id)s, %(hash)s, 0, %(response)s::jsonb, %(now)s)
    ON CONFLICT DO NOTHING RETURNING 1
"""
_KEY = "app = %(app)s AND user_id = %(user_id)s"
_READ_STATE = f"""
    SELECT
      (SELECT quantity FROM earn_counters WHERE {_KEY} AND day = %(day)s AND action = %(action)s),
      (SELECT units FROM earn_counters WHERE {_KEY} AND day = %(day)s AND action = %(action)s),
      (SELECT points FROM earn_counters WHERE {_KEY} AND day = %(day)s AND action = ''),
      (SELECT once_done FROM earn_state WHERE {_KEY} AND action = %(action)s),
      (SELECT streak_last_day FROM earn_state WHERE {_KEY} AND action = %(action)s),
      (SELECT streak_length FROM earn_state WHERE {_KEY} AND action = %(action)s)
"""
_CREDIT_CTES = [
    """lot AS (
      INSERT INTO lots (app, account_id, expires_at, amount, remaining, created_at)
      VALUES (%(app)s, %(account_id)s, %(expires_at)s, %(points)s, %(points)s, %(now)s)
      ON CONFLICT ON CONSTRAINT lots_account_expiry_key DO UPDATE
      SET amount = lots.amount + EXCLUDED.amount, remaining = lots.remaining + EXCLUDED.remaining
      RETURNING id)""",
    """txn AS (
      INSERT INTO transactions (app, kind, ref, reason, operator, created_at)
      VALUES (%(app)s, 'earn', %(event_id)s, %(action)s, '', %(now)s) RETURNING id)""",
    """legs AS (
      INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
      SELECT txn.id, %(app)s, %(account_id)s, %(points)s, lot.id, %(now)s FROM txn, lot
      UNION ALL
      SELECT txn.id, %(app)s, %(issued)s, %(issued_leg)s, NULL, %(now)s FROM txn)""",
    """acct AS (
      UPDATE accounts SET balance = balance + %(points)s,
                          lifetime_earned = lifetime_earned + %(points)s
      WHERE id = %(account_id)s)""",
]
_USAGE_CTE = """usage AS (
      INSERT INTO earn_counters (app, user_id, day, action, quantity, units, points)
      VALUES (%(app)s, %(user_id)s, %(day)s, %(action)s, %(quantity)s, %(units)s, 0)
      ON CONFLICT (app, user_id, day, action) DO UPDATE
      SET quantity = EXCLUDED.quantity, units = EXCLUDED.units)"""
_CAP_CTE = """cap AS (
      INSERT INTO earn_counters (app, user_id, day, action, quantity, units, points)
      VALUES (%(app)s, %(user_id)s, %(day)s, '', 0, 0, %(cap_points)s)
      ON CONFLICT (app, user_id, day, action) DO UPDATE SET points = EXCLUDED.points)"""
_STATE_CTE = """state AS (
      INSERT INTO earn_state (app, user_id, action, once_done, streak_last_day, streak_length)
      VALUES (%(app)s, %(user_id)s, %(action)s, %(once_done)s, %(streak_day)s, %(streak_length)s)
      ON CONFLICT (app, user_id, action) DO UPDATE
      SET once_done = EXCLUDED.once_done, streak_last_day = EXCLUDED.streak_last_day,
          streak_length = EXCLUDED.streak_length)"""
_ANSWER_CTE = """answer AS (
      UPDATE events SET points = %(points_awarded)s, response = %(response)s::jsonb
      WHERE app = %(app)s AND event_id = %(event_id)s)"""


async def earn(
    conn: AsyncConnection, ap: AppProgram, now: datetime, event: EarnInput
) -> EarnResult:
    """Applies the event inside the caller's transaction (the caller commits)."""
    digest = event.digest()
    program = ap.program
    rule = program.rules.get(event.action)
    params: dict[str, Any] = {
        "app": ap.app,
        "event_id": event.event_id,
        "user_id": event.user_id,
        "action": event.action,
        "hash": digest,
        "now": now,
        "response": None,
    }
    if rule is None or (rule.points == 0 and rule.growth == 0):
        # Nothing to pay: the answer is known before anything is locked.
        result = EarnResult(event.event_id, 0, ("no_rule",) if rule is None else ())
        params["response"] = json.dumps(_to_json(result))
    claimed = (await conn.exec_driver_sql(_CLAIM, params)).scalar_one_or_none()
    if claimed is None:
        return await _replay(conn, ap.app, event.event_id, digest)
    if rule is None or (rule.points == 0 and rule.growth == 0):
        return result

    account = await lock_user_account(conn, ap.app, event.user_id)
    day = local_day(event.occurred_at or now, program.zone)
    params["day"] = day
    before = _state((await conn.exec_driver_sql(_READ_STATE, params)).one())
    decision = decide_earn(program, rule, event.quantity, event.attributes, day, before)
    points, notes = decision.points, decision.notes
    if points < 0:
        # Due lots expire before the penalty reads what the user can afford.
        await expire_account_due(conn, ap.app, account, ap.system["expired"], now)
        points, more = limit_penalty(points, account.balance)
        notes += more
    # The common case (a credit to an account without debt) is written in the one statement
    # below; penalties and debts take the general ledger path first.
    credit_here = points > 0 and account.balance >= 0
    if points != 0 and not credit_here:
        await _move(conn, ap, account, points, now, event, rule)

    result = EarnResult(
        event.event_id,
        points,
        tuple(notes),
        decision.streak_days,
        growth=decision.growth,
        exempt_from_daily_cap=not rule.counts_toward_daily_cap,
    )
    after = decision.state
    ctes = []
    if credit_here:
        ctes += _CREDIT_CTES
        params.update(
            account_id=account.id,
            points=points,
            expires_at=lot_expires_at(program.expiry, now, program.zone),
            issued=ap.system["issued"],
            issued_leg=-points,
        )
    if after.usage != before.usage:
        ctes.append(_USAGE_CTE)
        params.update(quantity=after.usage.quantity, units=after.usage.units)
    if after.cap_points_today != before.cap_points_today:
        ctes.append(_CAP_CTE)
        params["cap_points"] = after.cap_points_today
    if after.once_done != before.once_done or after.streak != before.streak:
        ctes.append(_STATE_CTE)
        params.update(
            once_done=after.once_done,
            streak_day=after.streak.last_day,
            streak_length=after.streak.length,
        )
    ctes.append(_ANSWER_CTE)
    params.update(points_awarded=points, response=json.dumps(_to_json(result)))
    await conn.exec_driver_sql("WITH " + ",\n".join(ctes) + "\nSELECT 1", params)
    return result


def _state(row: Any) -> EarnState:
    quantity, units, cap_points, once_done, streak_day, streak_length = row
    return EarnState(
        usage=DayUsage(int(quantity or 0), int(units or 0)),
        cap_points_today=int(cap_points or 0),
        once_done=bool(once_done),
        streak=Streak(streak_day, int(streak_length or 0)),
    )


async def _move(
    conn: AsyncConnection,
    ap: AppProgram,
    account: Account,
    points: int,
    now: datetime,
    event: EarnInput,
    rule: EarningRule,
) -> None:
    if points > 0:
        expires_at = lot_expires_at(ap.program.expiry, now, ap.program.zone)
        legs = await place_points(conn, ap.app, account, [LotSlice(0, expires_at, points)], now)
        legs.append(Leg(ap.system["issued"], -points))
        await record_transaction(
            conn, ap.app, "earn", event.event_id, now, legs, reason=rule.action
        )
        await apply_to_account(conn, account, balance=points, earned=points)
    elif points < 0:
        # A penalty rule: an adjustment the user can afford (limit_penalty capped it).
        _, legs = await take_points(conn, ap.app, account, -points, now, ap.system["expired"])
        legs.append(Leg(ap.system["adjusted"], -points))
        await record_transaction(
            conn, ap.app, "earn", event.event_id, now, legs, reason=rule.action
        )
        await apply_to_account(conn, account, balance=points)


async def _replay(conn: AsyncConnection, app: str, event_id: str, digest: str) -> EarnResult:
    row = (
        await conn.execute(
            select(events.c.payload_hash, events.c.response).where(
                events.c.app == app, events.c.event_id == event_id
            )
        )
    ).one()
    if row.payload_hash != digest:
        raise IdempotencyConflict(
            f"event_id {event_id!r} was already recorded with another payload"
        )
    return EarnResult(**{**_from_json(row.response), "duplicate": True})


def _to_json(result: EarnResult) -> dict[str, Any]:
    body = asdict(result)
    body["notes"] = list(result.notes)
    body.pop("duplicate")
    return body


def _from_json(body: Mapping[str, Any]) -> dict[str, Any]:
    return {**body, "notes": tuple(body.get("notes", ()))}


@dataclass(frozen=True)
class ReverseResult:
    points_reversed: int
    balance: int


async def reverse_event(
    conn: AsyncConnection, ap: AppProgram, now: datetime, event_id: str, reason: str
) -> ReverseResult:
    """Takes back what an event earned. The points come out of the user's lots soonest-expiring
    first; what the user has already spent becomes a negative balance, paid by later credits.
    A reversed penalty gives its points back. A second reversal answers as the first."""
    row = (
        await conn.execute(
            select(events.c.user_id, events.c.points, events.c.reversal)
            .where(events.c.app == ap.app, events.c.event_id == event_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise EventNotFound(f"no event {event_id!r} in app {ap.app!r}")
    if row.reversal is not None:
        return ReverseResult(**row.reversal)
    points = int(row.points)
    if points == 0:
        account = await lock_existing_account(conn, ap.app, row.user_id)
        result = ReverseResult(0, account.balance if account else 0)
    else:
        account = await lock_user_account(conn, ap.app, row.user_id)
        adjusted = ap.system["adjusted"]
        if points > 0:
            _, legs = await take_points(
                conn, ap.app, account, points, now, ap.system["expired"], allow_negative=True
            )
        else:
            expires_at = lot_expires_at(ap.program.expiry, now, ap.program.zone)
            legs = await place_points(
                conn, ap.app, account, [LotSlice(0, expires_at, -points)], now
            )
        legs.append(Leg(adjusted, points))
        await record_transaction(conn, ap.app, "reverse", event_id, now, legs, reason=reason)
        await apply_to_account(conn, account, balance=-points)
        result = ReverseResult(points, account.balance)
    await conn.execute(
        update(events)
        .where(events.c.app == ap.app, events.c.event_id == event_id)
        .values(reversal=asdict(result))
    )
    return result
