"""Grant, Adjust and Gift: single movements, idempotent by (app, request_id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.points.domain.expiry import lot_expires_at
from services.points.domain.lots import LotSlice
from services.points.store.idempotency import claim_request, finish_request, payload_hash
from services.points.store.ledger import (
    Account,
    Leg,
    apply_to_account,
    lock_user_account,
    lock_user_accounts,
    place_points,
    record_transaction,
    take_points,
)
from services.points.store.programs import AppProgram


def _movement(txn_id: int, amount: int, balance: int) -> dict[str, Any]:
    return {"transaction_id": str(txn_id), "amount": amount, "balance": balance}


async def _credit_new(
    conn: AsyncConnection, ap: AppProgram, account: Account, amount: int, now: datetime
) -> list[Leg]:
    expires_at = lot_expires_at(ap.program.expiry, now, ap.program.zone)
    return await place_points(conn, ap.app, account, [LotSlice(0, expires_at, amount)], now)


async def grant(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    request_id: str,
    user_id: str,
    amount: int,
    reason: str,
    operator: str,
) -> dict[str, Any]:
    """An ops credit: new points from `issued`, with the app's expiry, outside the daily cap."""
    return await _ops_movement(
        conn, ap, now, "grant", request_id, user_id, amount, reason, operator, counter="issued"
    )


async def adjust(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    request_id: str,
    user_id: str,
    delta: int,
    reason: str,
    operator: str,
) -> dict[str, Any]:
    """An ops correction against `adjusted`: up creates a lot; down spends lots soonest-expiring
    first and may not overdraw (INSUFFICIENT_POINTS)."""
    return await _ops_movement(
        conn, ap, now, "adjust", request_id, user_id, delta, reason, operator, counter="adjusted"
    )


async def _ops_movement(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    kind: str,
    request_id: str,
    user_id: str,
    delta: int,
    reason: str,
    operator: str,
    *,
    counter: str,
) -> dict[str, Any]:
    """One audited ops movement (reason and operator on the transaction), idempotent."""
    digest = payload_hash(
        {"user_id": user_id, "delta": delta, "reason": reason, "operator": operator}
    )
    replay = await claim_request(conn, ap.app, request_id, kind, digest, now)
    if replay is not None:
        return {**replay, "duplicate": True}
    account = await lock_user_account(conn, ap.app, user_id)
    if delta > 0:
        legs = await _credit_new(conn, ap, account, delta, now)
    else:
        _, legs = await take_points(conn, ap.app, account, -delta, now, ap.system["expired"])
    legs.append(Leg(ap.system[counter], -delta))
    txn_id = await record_transaction(
        conn, ap.app, kind, request_id, now, legs, reason=reason, operator=operator
    )
    # Grants count as earned (lifetime); corrections do not.
    earned = delta if kind == "grant" else 0
    await apply_to_account(conn, account, balance=delta, earned=earned)
    response = _movement(txn_id, delta, account.balance)
    await finish_request(conn, ap.app, request_id, response)
    return {**response, "duplicate": False}


async def gift(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    request_id: str,
    from_user_id: str,
    to_user_id: str,
    amount: int,
) -> dict[str, Any]:
    """Moves points between two users in one transaction. The receiver gets lots with the
    sender's expiry dates: a gift never extends the life of points (or gifting back and forth
    would make them immortal). The reply's balance is the sender's."""
    digest = payload_hash({"from": from_user_id, "to": to_user_id, "amount": amount})
    replay = await claim_request(conn, ap.app, request_id, "gift", digest, now)
    if replay is not None:
        return {**replay, "duplicate": True}
    locked = await lock_user_accounts(conn, ap.app, [from_user_id, to_user_id])
    sender, receiver = locked[from_user_id], locked[to_user_id]
    taken, legs = await take_points(conn, ap.app, sender, amount, now, ap.system["expired"])
    legs += await place_points(
        conn, ap.app, receiver, [LotSlice(0, part.expires_at, part.amount) for part in taken], now
    )
    txn_id = await record_transaction(
        conn, ap.app, "gift", request_id, now, legs, reason=f"{from_user_id} -> {to_user_id}"
    )
    await apply_to_account(conn, sender, balance=-amount)
    await apply_to_account(conn, receiver, balance=amount)
    response = _movement(txn_id, amount, sender.balance)
    await finish_request(conn, ap.app, request_id, response)
    return {**response, "duplicate": False}
