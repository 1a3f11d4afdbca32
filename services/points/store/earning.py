"""Earn and ReverseEvent: one database transaction per event, idempotent by (app, event_id)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
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
from services.points.store.tables import earn_counters, earn_state, events

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
    duplicate: bool = False


async def earn(
    conn: AsyncConnection, ap: AppProgram, now: datetime, event: EarnInput
) -> EarnResult:
    """Applies the event inside the caller's transaction (the caller commits)."""
    digest = event.digest()
    claimed = (
        await conn.execute(
            pg_insert(events)
            .values(
                app=ap.app,
                event_id=event.event_id,
                user_id=event.user_id,
                payload_hash=digest,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(events.c.event_id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        return await _replay(conn, ap.app, event.event_id, digest)

    program = ap.program
    rule = program.rules.get(event.action)
    day = local_day(event.occurred_at or now, program.zone)
    notes: tuple[str, ...]
    if rule is None or rule.points == 0:
        decision_points, notes, streak_days = 0, (("no_rule",) if rule is None else ()), 0
    else:
        account = await lock_user_account(conn, ap.app, event.user_id)
        before = await _read_state(conn, ap.app, event.user_id, rule, day)
        decision = decide_earn(program, rule, event.quantity, event.attributes, day, before)
        decision_points, notes, streak_days = decision.points, decision.notes, decision.streak_days
        if decision_points < 0:
            # Due lots expire before the penalty reads what the user can afford.
            await expire_account_due(conn, ap.app, account, ap.system["expired"], now)
            decision_points, more = limit_penalty(decision_points, account.balance)
            notes += more
        await _write_state(conn, ap.app, event.user_id, rule, day, before, decision.state)
        await _move(conn, ap, account, decision_points, now, event, rule)

    result = EarnResult(event.event_id, decision_points, tuple(notes), streak_days)
    await conn.execute(
        update(events)
        .where(events.c.app == ap.app, events.c.event_id == event.event_id)
        .values(points=decision_points, response=_to_json(result))
    )
    return result


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


async def _read_state(
    conn: AsyncConnection, app: str, user_id: str, rule: EarningRule, day: date
) -> EarnState:
    counters = {
        row.action: row
        for row in await conn.execute(
            select(
                earn_counters.c.action,
                earn_counters.c.quantity,
                earn_counters.c.units,
                earn_counters.c.points,
            ).where(
                earn_counters.c.app == app,
                earn_counters.c.user_id == user_id,
                earn_counters.c.day == day,
                earn_counters.c.action.in_([rule.action, CAP_COUNTER]),
            )
        )
    }
    usage = DayUsage()
    if (mine := counters.get(rule.action)) is not None:
        usage = DayUsage(int(mine.quantity), int(mine.units))
    cap_row = counters.get(CAP_COUNTER)
    state = EarnState(usage=usage, cap_points_today=int(cap_row.points) if cap_row else 0)
    if rule.once or rule.streak_bonus:
        row = (
            await conn.execute(
                select(
                    earn_state.c.once_done, earn_state.c.streak_last_day, earn_state.c.streak_length
                ).where(
                    earn_state.c.app == app,
                    earn_state.c.user_id == user_id,
                    earn_state.c.action == rule.action,
                )
            )
        ).one_or_none()
        if row is not None:
            state = EarnState(
                usage=usage,
                cap_points_today=state.cap_points_today,
                once_done=bool(row.once_done),
                streak=Streak(row.streak_last_day, int(row.streak_length)),
            )
    return state


async def _write_state(
    conn: AsyncConnection,
    app: str,
    user_id: str,
    rule: EarningRule,
    day: date,
    before: EarnState,
    after: EarnState,
) -> None:
    key = {"app": app, "user_id": user_id, "day": day}
    values: dict[str, object]
    if after.usage != before.usage:
        values = {"quantity": after.usage.quantity, "units": after.usage.units}
        await conn.execute(
            pg_insert(earn_counters)
            .values(**key, action=rule.action, points=0, **values)
            .on_conflict_do_update(index_elements=["app", "user_id", "day", "action"], set_=values)
        )
    if after.cap_points_today != before.cap_points_today:
        values = {"points": after.cap_points_today}
        await conn.execute(
            pg_insert(earn_counters)
            .values(**key, action=CAP_COUNTER, **values)
            .on_conflict_do_update(index_elements=["app", "user_id", "day", "action"], set_=values)
        )
    if after.once_done != before.once_done or after.streak != before.streak:
        values = {
            "once_done": after.once_done,
            "streak_last_day": after.streak.last_day,
            "streak_length": after.streak.length,
        }
        await conn.execute(
            pg_insert(earn_state)
            .values(app=app, user_id=user_id, action=rule.action, **values)
            .on_conflict_do_update(index_elements=["app", "user_id", "action"], set_=values)
        )


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
