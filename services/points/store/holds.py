"""Two-phase spending for sagas: the hold's states, ReleaseHold (cancel), Refund and the TTL
sweep. Hold (try) and Capture (confirm) are set-wise in ``hold_batch``.

The `holds` row is the saga's barrier, written in the same transaction as the movement:
- Hold inserts it first. A row already there is a replay (same payload: answer as the first),
  a conflict (another payload: ALREADY_EXISTS), or a release that came first (HOLD_RELEASED).
- A release that finds no row writes a RELEASED row of amount 0, so the late hold is refused.
- Capture and release lock the row, then answer from its state: repeats are no-ops returning the
  first result; capture after release (or expiry) and release after capture are refused by the
  API layer from the state returned here.
Store functions return the row's state instead of raising for these, so an expiry discovered by
a capture is committed before the caller is told HOLD_EXPIRED.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.points.domain.errors import (
    HoldNotCaptured,
    HoldNotFound,
    HoldReleased,
    RefundExceedsCapture,
)
from services.points.domain.lots import LotSlice
from services.points.store.idempotency import claim_request, finish_request, payload_hash
from services.points.store.ledger import (
    Account,
    Leg,
    apply_to_account,
    lock_existing_account,
    mark_lots_expired,
    put_back_points,
    record_expiry,
    record_transaction,
)
from services.points.store.programs import AppProgram
from services.points.store.tables import hold_allocations, holds, lots

# A row of _HOLD_COLUMNS (saga_id, user_id, amount, state, expires_at, payload_hash, refunded).
HoldRow = Any

HELD, CAPTURED, RELEASED, EXPIRED = "HELD", "CAPTURED", "RELEASED", "EXPIRED"


@dataclass(frozen=True)
class HoldResult:
    saga_id: str
    state: str
    amount: int
    expires_at: datetime | None


def _result(row: HoldRow) -> HoldResult:
    return HoldResult(row.saga_id, row.state, int(row.amount), row.expires_at)


_HOLD_COLUMNS = (
    holds.c.saga_id,
    holds.c.user_id,
    holds.c.amount,
    holds.c.state,
    holds.c.expires_at,
    holds.c.payload_hash,
    holds.c.refunded,
)


async def _lock_hold(conn: AsyncConnection, app: str, saga_id: str) -> HoldRow | None:
    return (
        await conn.execute(
            select(*_HOLD_COLUMNS)
            .where(holds.c.app == app, holds.c.saga_id == saga_id)
            .with_for_update()
        )
    ).one_or_none()


async def release(conn: AsyncConnection, ap: AppProgram, now: datetime, saga_id: str) -> HoldResult:
    """Gives a live hold's points back. A release with no hold records itself (the barrier).
    Returns the state after: RELEASED or EXPIRED (done), CAPTURED (the API refuses it)."""
    row = await _lock_hold(conn, ap.app, saga_id)
    if row is None:
        barrier = (
            await conn.execute(
                pg_insert(holds)
                .values(
                    app=ap.app,
                    saga_id=saga_id,
                    user_id="",
                    amount=0,
                    state=RELEASED,
                    payload_hash="",
                    expires_at=now,
                    created_at=now,
                    finished_at=now,
                )
                .on_conflict_do_nothing()
                .returning(*_HOLD_COLUMNS)
            )
        ).one_or_none()
        if barrier is not None:
            return _result(barrier)
        # A hold for this saga committed in between: release it like any other.
        row = await _lock_hold(conn, ap.app, saga_id)
        assert row is not None
    if row.state != HELD:
        return _result(row)
    return await _give_back(conn, ap, now, row, RELEASED)


async def _give_back(
    conn: AsyncConnection, ap: AppProgram, now: datetime, row: HoldRow, final_state: str
) -> HoldResult:
    """The held points return to the lots they came from; those whose lot expired meanwhile
    expire at once, in a transaction of their own that says so."""
    saga_id: str = row.saga_id
    amount = int(row.amount)
    account = await lock_existing_account(conn, ap.app, row.user_id)
    assert account is not None
    parts = await _allocations(conn, ap.app, saga_id)
    legs, dead = await put_back_points(conn, account, parts, now)
    legs.append(Leg(ap.system["held"], -amount))
    kind = "release" if final_state == RELEASED else "expire_hold"
    await record_transaction(conn, ap.app, kind, saga_id, now, legs)
    await apply_to_account(conn, account, balance=amount, held=-amount)
    await _expire_returned(conn, ap, account, dead, now, saga_id)
    return await _set_state(conn, ap.app, saga_id, final_state, now)


async def _expire_returned(
    conn: AsyncConnection,
    ap: AppProgram,
    account: Account,
    dead: list[LotSlice],
    now: datetime,
    ref: str,
) -> None:
    if dead:
        await mark_lots_expired(conn, dead)
        await record_expiry(
            conn,
            ap.app,
            account,
            ap.system["expired"],
            dead,
            now,
            reason="returned to a lot that had expired",
            ref=ref,
        )


async def _allocations(conn: AsyncConnection, app: str, saga_id: str) -> list[LotSlice]:
    """What the hold took from each lot and has not refunded yet, latest-expiring first."""
    left = hold_allocations.c.amount - hold_allocations.c.refunded
    statement = (
        select(hold_allocations.c.lot_id, lots.c.expires_at, left.label("amount"))
        .join(lots, lots.c.id == hold_allocations.c.lot_id)
        .where(hold_allocations.c.app == app, hold_allocations.c.saga_id == saga_id, left > 0)
        .order_by(lots.c.expires_at.desc().nulls_first(), lots.c.id.desc())
    )
    return [LotSlice(r.lot_id, r.expires_at, int(r.amount)) for r in await conn.execute(statement)]


async def _set_state(
    conn: AsyncConnection, app: str, saga_id: str, state: str, now: datetime
) -> HoldResult:
    row = (
        await conn.execute(
            update(holds)
            .where(holds.c.app == app, holds.c.saga_id == saga_id)
            .values(state=state, finished_at=now)
            .returning(*_HOLD_COLUMNS)
        )
    ).one()
    return _result(row)


async def refund(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    request_id: str,
    saga_id: str,
    amount: int,
    reason: str,
) -> dict[str, Any]:
    """Returns captured points, whole or in part, to the lots they came from (latest-expiring
    first); never more than was captured. Idempotent by request_id."""
    digest = payload_hash({"saga_id": saga_id, "amount": amount, "reason": reason})
    replay = await claim_request(conn, ap.app, request_id, "refund", digest, now)
    if replay is not None:
        return {**replay, "duplicate": True}
    row = await _lock_hold(conn, ap.app, saga_id)
    if row is None:
        raise HoldNotFound(f"no hold for saga {saga_id!r}")
    if row.state == RELEASED:
        raise HoldReleased(f"saga {saga_id!r} was released, nothing was spent")
    if row.state != CAPTURED:
        raise HoldNotCaptured(f"saga {saga_id!r} is {row.state}, not captured")
    refundable = int(row.amount) - int(row.refunded)
    if amount > refundable:
        raise RefundExceedsCapture(
            f"at most {refundable} points of saga {saga_id!r} can still be refunded",
            metadata={"refundable": str(refundable)},
        )
    account = await lock_existing_account(conn, ap.app, row.user_id)
    assert account is not None
    parts, left = [], amount
    for part in await _allocations(conn, ap.app, saga_id):
        take = min(left, part.amount)
        if take:
            parts.append(LotSlice(part.lot_id, part.expires_at, take))
            left -= take
    await conn.execute(
        update(hold_allocations)
        .where(
            hold_allocations.c.app == ap.app,
            hold_allocations.c.saga_id == saga_id,
            hold_allocations.c.lot_id == bindparam("lot"),
        )
        .values(refunded=hold_allocations.c.refunded + bindparam("back")),
        [{"lot": part.lot_id, "back": part.amount} for part in parts],
    )
    legs, dead = await put_back_points(conn, account, parts, now)
    legs.append(Leg(ap.system["spent"], -amount))
    txn_id = await record_transaction(conn, ap.app, "refund", saga_id, now, legs, reason=reason)
    await apply_to_account(conn, account, balance=amount)
    await _expire_returned(conn, ap, account, dead, now, saga_id)
    await conn.execute(
        update(holds)
        .where(holds.c.app == ap.app, holds.c.saga_id == saga_id)
        .values(refunded=holds.c.refunded + amount)
    )
    response = {"transaction_id": str(txn_id), "amount": amount, "balance": account.balance}
    await finish_request(conn, ap.app, request_id, response)
    return {**response, "duplicate": False}


async def due_holds(conn: AsyncConnection, app: str, now: datetime, limit: int) -> list[HoldRow]:
    """Live holds past their TTL, locked; holds another transaction is working on are skipped."""
    statement = (
        select(*_HOLD_COLUMNS)
        .where(holds.c.app == app, holds.c.state == HELD, holds.c.expires_at < now)
        .order_by(holds.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await conn.execute(statement))


async def expire_hold(conn: AsyncConnection, ap: AppProgram, now: datetime, row: HoldRow) -> None:
    await _give_back(conn, ap, now, row, EXPIRED)
