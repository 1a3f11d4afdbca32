"""Hold and Capture for many sagas at once: one transaction and a fixed number of statements
per batch, whatever its size (HoldBatch, CaptureBatch).

Each item ends exactly as a hold or capture alone would: a replay answers as the first time,
a hold whose saga was released first is refused, a refused item leaves nothing behind.
Refusals are decided before anything of that item is written, so no savepoint is needed: the
claimed hold row of a refused item is deleted in the same transaction.

Locks, in the order every writer takes them: hold rows by saga_id (the claim, or FOR UPDATE),
then accounts by id. Rare cases (a capture that finds its hold expired) take the general path
of ``holds`` for that item, inside the same transaction and after the same locks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows, run_sql
from plumbing.errors import LoyaltyError
from services.points.domain.errors import (
    HoldNotFound,
    HoldReleased,
    IdempotencyConflict,
    InsufficientPoints,
)
from services.points.domain.lots import LotSlice, allocate
from services.points.store.holds import (
    CAPTURED,
    EXPIRED,
    HELD,
    HoldResult,
    expire_hold,
    release,
)
from services.points.store.idempotency import payload_hash
from services.points.store.ledger import Account, lock_existing_accounts, record_expiry
from services.points.store.programs import AppProgram

# One item's outcome: its answer, or the refusal the single call would have raised.
Outcome = HoldResult | LoyaltyError


@dataclass(frozen=True)
class HoldInput:
    saga_id: str
    user_id: str
    amount: int
    ttl: timedelta
    ref: str

    def digest(self) -> str:
        return payload_hash({"user_id": self.user_id, "amount": self.amount, "ref": self.ref})


_CLAIM = """
    INSERT INTO holds (app, saga_id, user_id, amount, state, ref, payload_hash, expires_at,
                       created_at)
    SELECT %(app)s, h.saga_id, h.user_id, h.amount, 'HELD', h.ref, h.hash, h.expires_at, %(now)s
    FROM json_to_recordset(%(rows)s::json)
      AS h(saga_id text, user_id text, amount bigint, ref text, hash text, expires_at timestamptz)
    ORDER BY h.saga_id
    ON CONFLICT DO NOTHING
    RETURNING saga_id, expires_at
"""
_LOCK_HOLDS = """
    SELECT saga_id, user_id, amount, state, expires_at, payload_hash, refunded FROM holds
    WHERE app = %(app)s AND saga_id = ANY(%(ids)s::text[])
    ORDER BY saga_id FOR UPDATE
"""
# Due lots of the batch's accounts expire before their balances are read, as take_points does.
_EXPIRE_DUE = """
    UPDATE lots l SET remaining = 0, expired = l.expired + d.remaining
    FROM (SELECT id, remaining FROM lots
          WHERE account_id = ANY(%(accounts)s::bigint[]) AND remaining > 0
            AND expires_at < %(now)s) d
    WHERE l.id = d.id
    RETURNING l.account_id, l.id, l.expires_at, d.remaining
"""
# Per account, the lots in spending order, as many as cover what the batch takes from it.
_SPENDABLE = """
    SELECT account_id, id, expires_at, remaining FROM (
      SELECT l.account_id, l.id, l.expires_at, l.remaining, w.total,
             sum(l.remaining) OVER (PARTITION BY l.account_id
                                    ORDER BY l.expires_at NULLS LAST, l.id) AS running
      FROM json_to_recordset(%(wants)s::json) AS w(account_id bigint, total bigint)
      JOIN lots l ON l.account_id = w.account_id
      WHERE l.account_id = ANY(%(accounts)s::bigint[]) AND l.remaining > 0) s
    WHERE running - remaining < total
"""
_DROP_REFUSED = "DELETE FROM holds WHERE app = %(app)s AND saga_id = ANY(%(ids)s::text[])"
_WRITE_HOLDS = """
    WITH taken AS (
      UPDATE lots l SET remaining = l.remaining - t.amount
      FROM json_to_recordset(%(lots)s::json) AS t(lot_id bigint, amount bigint)
      WHERE l.id = t.lot_id AND l.id = ANY(%(lot_ids)s::bigint[])),
    item AS (
      SELECT * FROM json_to_recordset(%(items)s::json)
        AS i(n int, saga_id text, reason text, account_id bigint, amount bigint)),
    slice AS (
      SELECT * FROM json_to_recordset(%(slices)s::json)
        AS s(saga_id text, account_id bigint, lot_id bigint, amount bigint)),
    txn AS (
      INSERT INTO transactions (app, kind, ref, reason, operator, created_at)
      SELECT %(app)s, 'hold', i.saga_id, i.reason, '', %(now)s FROM item i ORDER BY i.n
      RETURNING id, ref),
    legs AS (
      INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
      SELECT txn.id, %(app)s, s.account_id, -s.amount, s.lot_id, %(now)s
      FROM slice s JOIN txn ON txn.ref = s.saga_id
      UNION ALL
      SELECT txn.id, %(app)s, %(held)s, i.amount, NULL::bigint, %(now)s
      FROM item i JOIN txn ON txn.ref = i.saga_id),
    alloc AS (
      INSERT INTO hold_allocations (app, saga_id, lot_id, amount)
      SELECT %(app)s, s.saga_id, s.lot_id, s.amount FROM slice s)
    UPDATE accounts a SET balance = a.balance - w.total, held = a.held + w.total
    FROM json_to_recordset(%(wants)s::json) AS w(account_id bigint, total bigint)
    WHERE a.id = w.account_id AND a.id = ANY(%(accounts)s::bigint[])
"""
_WRITE_CAPTURES = """
    WITH item AS (
      SELECT * FROM json_to_recordset(%(items)s::json)
        AS i(n int, saga_id text, account_id bigint, amount bigint)),
    txn AS (
      INSERT INTO transactions (app, kind, ref, reason, operator, created_at)
      SELECT %(app)s, 'capture', i.saga_id, '', '', %(now)s FROM item i ORDER BY i.n
      RETURNING id, ref),
    legs AS (
      INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
      SELECT txn.id, %(app)s, %(held)s, -i.amount, NULL::bigint, %(now)s
      FROM item i JOIN txn ON txn.ref = i.saga_id
      UNION ALL
      SELECT txn.id, %(app)s, %(spent)s, i.amount, NULL::bigint, %(now)s
      FROM item i JOIN txn ON txn.ref = i.saga_id),
    acct AS (
      UPDATE accounts a SET held = a.held - w.total
      FROM json_to_recordset(%(wants)s::json) AS w(account_id bigint, total bigint)
      WHERE a.id = w.account_id AND a.id = ANY(%(accounts)s::bigint[]))
    UPDATE holds h SET state = 'CAPTURED', finished_at = %(now)s
    WHERE h.app = %(app)s AND h.saga_id = ANY(%(ids)s::text[])
"""


async def _expire_due(
    conn: AsyncConnection, ap: AppProgram, now: datetime, accounts: dict[str, Account]
) -> None:
    """Due lots of the locked accounts expire first: one statement, and an expiry transaction
    for each account that had any (the same transaction take_points writes)."""
    by_id = {account.id: account for account in accounts.values()}
    rows = await run_sql(conn, _EXPIRE_DUE, {"accounts": sorted(by_id), "now": now})
    due: dict[int, list[LotSlice]] = defaultdict(list)
    for account_id, lot_id, expires_at, remaining in rows:
        due[int(account_id)].append(LotSlice(int(lot_id), expires_at, int(remaining)))
    for account_id, parts in sorted(due.items()):
        await record_expiry(
            conn, ap.app, by_id[account_id], ap.system["expired"], parts, now, reason="lot expired"
        )


async def hold_batch(
    conn: AsyncConnection, ap: AppProgram, now: datetime, items: Sequence[HoldInput]
) -> list[Outcome]:
    """``items`` have distinct saga ids (the caller answers repeats). One outcome per item."""
    params: dict[str, Any] = {"app": ap.app, "now": now}
    claim: list[dict[str, Any]] = [
        {
            "saga_id": item.saga_id,
            "user_id": item.user_id,
            "amount": item.amount,
            "ref": item.ref,
            "hash": item.digest(),
            "expires_at": (now + item.ttl).isoformat(),
        }
        for item in items
    ]
    claimed: dict[str, datetime] = dict(
        await run_sql(conn, _CLAIM, {**params, "rows": json_rows(claim)})
    )
    outcomes: dict[str, Outcome] = {}
    others = [item.saga_id for item in items if item.saga_id not in claimed]
    if others:
        digests: dict[str, str] = {row["saga_id"]: row["hash"] for row in claim}
        for row in await run_sql(conn, _LOCK_HOLDS, {**params, "ids": sorted(others)}):
            outcomes[row.saga_id] = _answer_existing(row, digests[row.saga_id])

    new = [item for item in items if item.saga_id in claimed]
    accounts = await lock_existing_accounts(conn, ap.app, {item.user_id for item in new})
    if accounts:
        await _expire_due(conn, ap, now, accounts)
    available = {user: account.balance for user, account in accounts.items()}
    accepted: list[HoldInput] = []
    for item in new:
        left = available.get(item.user_id, 0)
        if left < item.amount:
            outcomes[item.saga_id] = InsufficientPoints(
                f"needs {item.amount} points, {max(left, 0)} available",
                metadata={"available": str(max(left, 0)), "needed": str(item.amount)},
            )
            continue
        available[item.user_id] = left - item.amount
        accepted.append(item)
        outcomes[item.saga_id] = HoldResult(item.saga_id, HELD, item.amount, claimed[item.saga_id])
    taken = {item.saga_id for item in accepted}
    refused = [item.saga_id for item in new if item.saga_id not in taken]
    if refused:
        await run_sql(conn, _DROP_REFUSED, {**params, "ids": refused})
    if accepted:
        await _write_holds(conn, ap, now, accepted, accounts)
    return [outcomes[item.saga_id] for item in items]


def _answer_existing(row: Any, digest: str) -> Outcome:
    if row.payload_hash == "":
        return HoldReleased(f"saga {row.saga_id!r} was released before its hold arrived")
    if row.payload_hash != digest:
        return IdempotencyConflict(f"saga {row.saga_id!r} already holds a different amount or user")
    return HoldResult(row.saga_id, row.state, int(row.amount), row.expires_at)


async def _write_holds(
    conn: AsyncConnection,
    ap: AppProgram,
    now: datetime,
    accepted: Sequence[HoldInput],
    accounts: dict[str, Account],
) -> None:
    """Takes each accepted hold's points from its account's lots, soonest-expiring first, in
    the batch's order; writes lots, transactions, legs, allocations and balances at once."""
    totals: dict[int, int] = defaultdict(int)
    for item in accepted:
        totals[accounts[item.user_id].id] += item.amount
    wants = json_rows({"account_id": k, "total": v} for k, v in totals.items())
    account_ids = sorted(totals)
    lots: dict[int, list[LotSlice]] = defaultdict(list)
    spendable = await run_sql(conn, _SPENDABLE, {"wants": wants, "accounts": account_ids})
    for account_id, lot_id, expires_at, remaining in spendable:
        lots[int(account_id)].append(LotSlice(int(lot_id), expires_at, int(remaining)))
    slices: list[dict[str, Any]] = []
    taken_from: dict[int, int] = defaultdict(int)
    for item in accepted:
        account_id = accounts[item.user_id].id
        parts = allocate(lots[account_id], item.amount)
        left = {part.lot_id: part.amount for part in parts}
        lots[account_id] = [
            LotSlice(lot.lot_id, lot.expires_at, lot.amount - left.get(lot.lot_id, 0))
            for lot in lots[account_id]
        ]
        for part in parts:
            taken_from[part.lot_id] += part.amount
            slices.append(
                {
                    "saga_id": item.saga_id,
                    "account_id": account_id,
                    "lot_id": part.lot_id,
                    "amount": part.amount,
                }
            )
    await run_sql(
        conn,
        _WRITE_HOLDS,
        {
            "app": ap.app,
            "now": now,
            "held": ap.system["held"],
            "lots": json_rows({"lot_id": k, "amount": v} for k, v in taken_from.items()),
            "lot_ids": sorted(taken_from),
            "items": json_rows(
                {
                    "n": n,
                    "saga_id": item.saga_id,
                    "reason": item.ref,
                    "account_id": accounts[item.user_id].id,
                    "amount": item.amount,
                }
                for n, item in enumerate(accepted)
            ),
            "slices": json_rows(slices),
            "wants": wants,
            "accounts": account_ids,
        },
    )


async def capture_batch(
    conn: AsyncConnection, ap: AppProgram, now: datetime, saga_ids: Sequence[str]
) -> list[Outcome]:
    """``saga_ids`` distinct. The state after each capture: CAPTURED (now or before), or
    RELEASED or EXPIRED when it is too late (the API refuses those; an expiry found here is
    committed first)."""
    params: dict[str, Any] = {"app": ap.app, "now": now}
    rows = {
        row.saga_id: row
        for row in await run_sql(conn, _LOCK_HOLDS, {**params, "ids": sorted(saga_ids)})
    }
    live = [rows[s] for s in saga_ids if s in rows and rows[s].state == HELD]
    accounts = await lock_existing_accounts(conn, ap.app, {row.user_id for row in live})
    outcomes: dict[str, Outcome] = {}
    capturing = []
    for saga_id in saga_ids:
        row = rows.get(saga_id)
        if row is None:
            outcomes[saga_id] = HoldNotFound(f"no hold for saga {saga_id!r}")
        elif row.state != HELD:
            outcomes[saga_id] = HoldResult(saga_id, row.state, int(row.amount), row.expires_at)
        elif row.expires_at < now:
            await expire_hold(conn, ap, now, row)
            outcomes[saga_id] = HoldResult(saga_id, EXPIRED, int(row.amount), row.expires_at)
        else:
            capturing.append(row)
            outcomes[saga_id] = HoldResult(saga_id, CAPTURED, int(row.amount), row.expires_at)
    if capturing:
        totals: dict[int, int] = defaultdict(int)
        for row in capturing:
            totals[accounts[row.user_id].id] += int(row.amount)
        await run_sql(
            conn,
            _WRITE_CAPTURES,
            {
                **params,
                "held": ap.system["held"],
                "spent": ap.system["spent"],
                "items": json_rows(
                    {
                        "n": n,
                        "saga_id": row.saga_id,
                        "account_id": accounts[row.user_id].id,
                        "amount": int(row.amount),
                    }
                    for n, row in enumerate(capturing)
                ),
                "wants": json_rows({"account_id": k, "total": v} for k, v in totals.items()),
                "accounts": sorted(totals),
                "ids": [row.saga_id for row in capturing],
            },
        )
    return [outcomes[saga_id] for saga_id in saga_ids]


async def release_batch(
    conn: AsyncConnection, ap: AppProgram, now: datetime, saga_ids: Sequence[str]
) -> list[HoldResult]:
    """``saga_ids`` distinct. Releases are compensations (rare next to holds): each takes the
    general path of ``holds.release``, after the batch's holds and accounts are locked in the
    one order, so two release batches never wait on each other in a cycle."""
    rows = await run_sql(conn, _LOCK_HOLDS, {"app": ap.app, "ids": sorted(saga_ids)})
    await lock_existing_accounts(conn, ap.app, {row.user_id for row in rows if row.state == HELD})
    return [await release(conn, ap, now, saga_id) for saga_id in saga_ids]
