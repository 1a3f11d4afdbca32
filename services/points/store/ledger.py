"""Ledger primitives every movement is built from: lock an account, write a balanced
transaction, put points into lots and take them out, expire an account's due lots.

Why the locking is correct
--------------------------
Every change to a user's balance, lots, holds' allocations or earning counters happens while
the transaction holds that user's `accounts` row lock (taken with FOR UPDATE, or by the upsert
that creates the row). Reads made after taking it see the latest committed state (READ
COMMITTED takes a fresh snapshot per statement), so "check the balance, then debit" cannot
interleave with another debit of the same account: two holds that together exceed the balance
run one after the other, and the second sees the first's debit and fails.

Deadlocks are avoided by one lock order everywhere: idempotency row (events / requests / holds)
→ user accounts in ascending id → lots. Gift locks both accounts in id order; the expiry sweep
locks accounts (SKIP LOCKED, in id order) before touching their lots. System accounts are never
locked: their balances are not stored (see tables.accounts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import run_sql
from services.points.domain.errors import InsufficientPoints
from services.points.domain.lots import LotSlice, allocate, pay_debt_first, split_expired
from services.points.store.tables import accounts, entries, lots, transactions


@dataclass
class Account:
    id: int
    user_id: str
    balance: int
    held: int
    lifetime_earned: int


_ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.user_id,
    accounts.c.balance,
    accounts.c.held,
    accounts.c.lifetime_earned,
)


def _account(row: Any) -> Account:
    return Account(int(row[0]), row[1], int(row[2]), int(row[3]), int(row[4]))


# Driver-level SQL: the account lock is on every write path (Earn included), so it skips
# statement compilation; tracing still sees it.
_LOCK_USER_ACCOUNT = """
    INSERT INTO accounts (app, kind, user_id, balance) VALUES (%(app)s, 'user', %(user_id)s, 0)
    ON CONFLICT ON CONSTRAINT accounts_app_kind_user_key DO UPDATE SET held = accounts.held
    RETURNING id, user_id, balance, held, lifetime_earned
"""


async def lock_user_account(conn: AsyncConnection, app: str, user_id: str) -> Account:
    """Creates the account if needed and returns it locked (the upsert takes the row lock)."""
    params = {"app": app, "user_id": user_id}
    return _account((await conn.exec_driver_sql(_LOCK_USER_ACCOUNT, params)).one())


async def lock_existing_account(conn: AsyncConnection, app: str, user_id: str) -> Account | None:
    statement = (
        select(*_ACCOUNT_COLUMNS)
        .where(accounts.c.app == app, accounts.c.kind == "user", accounts.c.user_id == user_id)
        .with_for_update()
    )
    row = (await conn.execute(statement)).one_or_none()
    return _account(row) if row is not None else None


_CREATE_USER_ACCOUNTS = """
    INSERT INTO accounts (app, kind, user_id, balance)
    SELECT %(app)s, 'user', u, 0 FROM unnest(%(users)s::text[]) AS u
    ON CONFLICT ON CONSTRAINT accounts_app_kind_user_key DO NOTHING
"""
_LOCK_USER_ACCOUNTS = """
    SELECT id, user_id, balance, held, lifetime_earned FROM accounts
    WHERE app = %(app)s AND kind = 'user' AND user_id = ANY(%(users)s::text[])
    ORDER BY id FOR UPDATE
"""


async def lock_user_accounts(
    conn: AsyncConnection, app: str, user_ids: Iterable[str]
) -> dict[str, Account]:
    """Several accounts, created if needed (in user order), locked in ascending id order (the
    one order every writer of several accounts uses: no deadlocks). Two round trips for a
    batch of any size."""
    params = {"app": app, "users": sorted(set(user_ids))}
    await run_sql(conn, _CREATE_USER_ACCOUNTS, params)
    return await lock_existing_accounts(conn, app, params["users"])


async def lock_existing_accounts(
    conn: AsyncConnection, app: str, user_ids: Iterable[str]
) -> dict[str, Account]:
    """The accounts that exist among ``user_ids``, locked in ascending id order; none is
    created (a hold refused for want of points writes nothing)."""
    users = sorted(set(user_ids))
    if not users:
        return {}
    rows = await run_sql(conn, _LOCK_USER_ACCOUNTS, {"app": app, "users": users})
    return {row[1]: _account(row) for row in rows}


async def apply_to_account(
    conn: AsyncConnection, account: Account, *, balance: int = 0, held: int = 0, earned: int = 0
) -> None:
    """Moves the stored balance by what the transaction's legs moved it (same transaction)."""
    if not (balance or held or earned):
        return
    await conn.execute(
        update(accounts)
        .where(accounts.c.id == account.id)
        .values(
            balance=accounts.c.balance + balance,
            held=accounts.c.held + held,
            lifetime_earned=accounts.c.lifetime_earned + earned,
        )
    )
    account.balance += balance
    account.held += held
    account.lifetime_earned += earned


@dataclass(frozen=True)
class Leg:
    account_id: int
    amount: int
    lot_id: int | None = None


async def record_transaction(
    conn: AsyncConnection,
    app: str,
    kind: str,
    ref: str,
    now: datetime,
    legs: Sequence[Leg],
    *,
    reason: str = "",
    operator: str = "",
) -> int:
    """Writes one transaction and its legs. Legs must sum to zero: this is the ledger's law,
    checked here so no caller can break it."""
    legs = [leg for leg in legs if leg.amount != 0]
    if sum(leg.amount for leg in legs) != 0:
        raise AssertionError(f"unbalanced {kind} transaction: {legs}")
    txn_id: int = (
        await conn.execute(
            insert(transactions)
            .values(app=app, kind=kind, ref=ref, reason=reason, operator=operator, created_at=now)
            .returning(transactions.c.id)
        )
    ).scalar_one()
    if legs:
        await conn.execute(
            insert(entries),
            [
                {
                    "txn_id": txn_id,
                    "app": app,
                    "account_id": leg.account_id,
                    "amount": leg.amount,
                    "lot_id": leg.lot_id,
                    "created_at": now,
                }
                for leg in legs
            ],
        )
    return txn_id


async def add_to_lots(
    conn: AsyncConnection, app: str, account_id: int, parts: Sequence[LotSlice], now: datetime
) -> list[LotSlice]:
    """New points into lots: one lot per (account, expiry), created or topped up.
    Returns the parts with the ids of the lots they went to."""
    placed = []
    for part in parts:
        statement = (
            pg_insert(lots)
            .values(
                app=app,
                account_id=account_id,
                expires_at=part.expires_at,
                amount=part.amount,
                remaining=part.amount,
                created_at=now,
            )
            .on_conflict_do_update(
                constraint="lots_account_expiry_key",
                set_={
                    "amount": lots.c.amount + part.amount,
                    "remaining": lots.c.remaining + part.amount,
                },
            )
            .returning(lots.c.id)
        )
        lot_id = (await conn.execute(statement)).scalar_one()
        placed.append(LotSlice(lot_id, part.expires_at, part.amount))
    return placed


async def return_to_lots(conn: AsyncConnection, parts: Sequence[LotSlice]) -> None:
    """Points coming back (release, refund) to the lots they were taken from."""
    if parts:
        await conn.execute(
            update(lots)
            .where(lots.c.id == bindparam("lot"))
            .values(remaining=lots.c.remaining + bindparam("back")),
            [{"lot": part.lot_id, "back": part.amount} for part in parts],
        )


async def spendable_lots(conn: AsyncConnection, account_id: int, amount: int) -> list[LotSlice]:
    """The account's lots in spending order, as many as it takes to cover ``amount``."""
    order = (lots.c.expires_at.asc().nulls_last(), lots.c.id)
    running = func.sum(lots.c.remaining).over(order_by=order)
    inner = (
        select(lots.c.id, lots.c.expires_at, lots.c.remaining, running.label("running"))
        .where(lots.c.account_id == account_id, lots.c.remaining > 0)
        .subquery()
    )
    statement = select(inner.c.id, inner.c.expires_at, inner.c.remaining).where(
        inner.c.running - inner.c.remaining < amount
    )
    rows = await conn.execute(statement.order_by(inner.c.expires_at.asc().nulls_last(), inner.c.id))
    return [LotSlice(row.id, row.expires_at, row.remaining) for row in rows]


async def take_from_lots(conn: AsyncConnection, account_id: int, amount: int) -> list[LotSlice]:
    """Debits ``amount`` from the account's lots, soonest-expiring first. The caller holds the
    account lock, has expired due lots and has checked the balance covers ``amount``."""
    if amount <= 0:
        return []
    taken = allocate(await spendable_lots(conn, account_id, amount), amount)
    await conn.execute(
        update(lots)
        .where(lots.c.id == bindparam("lot"))
        .values(remaining=lots.c.remaining - bindparam("take")),
        [{"lot": part.lot_id, "take": part.amount} for part in taken],
    )
    return taken


_EXPIRE_ACCOUNT_DUE = text(
    """
    UPDATE lots l SET remaining = 0, expired = l.expired + d.remaining
    FROM (SELECT id, remaining FROM lots
          WHERE account_id = :account_id AND remaining > 0 AND expires_at < :now) d
    WHERE l.id = d.id
    RETURNING l.id, l.expires_at, d.remaining
    """
)


async def expire_account_due(
    conn: AsyncConnection, app: str, account: Account, expired_account: int, now: datetime
) -> int:
    """Expires the locked account's due lots now, before a debit reads its balance, so a debit
    never spends points the sweep has not reached yet. Returns the points expired."""
    due = [
        LotSlice(row.id, row.expires_at, row.remaining)
        for row in await conn.execute(_EXPIRE_ACCOUNT_DUE, {"account_id": account.id, "now": now})
    ]
    return await record_expiry(conn, app, account, expired_account, due, now, reason="lot expired")


async def record_expiry(
    conn: AsyncConnection,
    app: str,
    account: Account,
    expired_account: int,
    parts: Sequence[LotSlice],
    now: datetime,
    *,
    reason: str,
    ref: str = "",
) -> int:
    total = sum(part.amount for part in parts)
    if total == 0:
        return 0
    legs = [Leg(account.id, -part.amount, part.lot_id) for part in parts]
    legs.append(Leg(expired_account, total))
    await record_transaction(conn, app, "expire", ref, now, legs, reason=reason)
    await apply_to_account(conn, account, balance=-total)
    return total


async def mark_lots_expired(conn: AsyncConnection, parts: Sequence[LotSlice]) -> None:
    """Returned points whose lot expired meanwhile: counted as that lot's expired points."""
    if parts:
        await conn.execute(
            update(lots)
            .where(lots.c.id == bindparam("lot"))
            .values(expired=lots.c.expired + bindparam("gone")),
            [{"lot": part.lot_id, "gone": part.amount} for part in parts],
        )


# Composite steps: each returns the user's legs; the caller adds the counter-leg(s) and records
# one transaction, so every movement stays one balanced transaction.


async def take_points(
    conn: AsyncConnection,
    app: str,
    account: Account,
    amount: int,
    now: datetime,
    expired_account: int,
    *,
    allow_negative: bool = False,
) -> tuple[list[LotSlice], list[Leg]]:
    """Debits ``amount`` from the locked account: due lots expire first, then the balance must
    cover it (or, for a reversal only, the rest becomes a negative balance)."""
    await expire_account_due(conn, app, account, expired_account, now)
    if account.balance < amount and not allow_negative:
        raise InsufficientPoints(
            f"needs {amount} points, {max(account.balance, 0)} available",
            metadata={"available": str(max(account.balance, 0)), "needed": str(amount)},
        )
    from_lots = min(amount, max(account.balance, 0))
    taken = await take_from_lots(conn, account.id, from_lots)
    legs = [Leg(account.id, -part.amount, part.lot_id) for part in taken]
    if amount > from_lots:
        legs.append(Leg(account.id, -(amount - from_lots)))
    return taken, legs


async def place_points(
    conn: AsyncConnection, app: str, account: Account, parts: Sequence[LotSlice], now: datetime
) -> list[Leg]:
    """Credits new points (lot id 0 in ``parts``) to lots by expiry; a negative balance is
    paid first."""
    kept, paid = pay_debt_first(account.balance, parts)
    placed = await add_to_lots(conn, app, account.id, kept, now)
    legs = [Leg(account.id, part.amount, part.lot_id) for part in placed]
    if paid:
        legs.append(Leg(account.id, paid))
    return legs


async def put_back_points(
    conn: AsyncConnection, account: Account, parts: Sequence[LotSlice], now: datetime
) -> tuple[list[Leg], list[LotSlice]]:
    """Points coming back to the lots they came from (release, refund). Returns the user's legs
    and the parts whose lot has expired meanwhile: the caller expires those at once."""
    live, dead = split_expired(parts, now)
    kept, paid = pay_debt_first(account.balance, live)
    await return_to_lots(conn, kept)
    legs = [Leg(account.id, part.amount, part.lot_id) for part in kept]
    legs += [Leg(account.id, part.amount, part.lot_id) for part in dead]
    if paid:
        legs.append(Leg(account.id, paid))
    return legs, dead
