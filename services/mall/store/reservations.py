"""Two-phase reservations' rows: Reserve (try), Confirm (into an order), Release (cancel), and
the expiry of reservations past their TTL. Each function takes a connection; the flows that
open the transactions and keep the Redis gate in step are ``services/mall/service.py``.

The reservation row is the saga's barrier, written in the same transaction as the stock
change (as Seata's TCC fence): a Release that finds no row records a RELEASED row of quantity
0, so a late Reserve for that saga is refused; repeats of any call answer as the first did;
Confirm after Release, or after the TTL, fails. A refused Reserve rolls back whole and leaves
no row (its saga may try again).

Locking: reservation row (the claim) -> the member's item lock (per-user limits) -> the stock
bucket row (the guarded UPDATE) -> codes (SKIP LOCKED). The stock row is held from the UPDATE to
the commit, so the Redis gate (``gate.py``) keeps losers of a flash sale away from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows, run_sql
from plumbing.errors import LoyaltyError
from plumbing.idempotency import payload_hash
from plumbing.programs import StoredProgram
from services.mall.domain.errors import (
    AddressRequired,
    LimitExceeded,
    NotOnSale,
    OutOfStock,
    ReservationConfirmed,
    ReservationExpired,
    ReservationNotFound,
    ReservationReleased,
    TierTooLow,
)
from services.mall.domain.program import Catalog, CodeSource, Item
from services.mall.domain.sale import (
    SaleState,
    Usage,
    generate_code,
    sale_state,
    tier_allows,
)
from services.mall.store import gate as gates
from services.mall.store import reservation_sets as sets
from services.mall.store.catalog import ensure_bucket, item_of, usage_by_sku
from services.mall.store.orders import OrderView, order_by_saga

RESERVED, CONFIRMED, RELEASED, EXPIRED = "RESERVED", "CONFIRMED", "RELEASED", "EXPIRED"
ADDRESS_FIELDS = ("name", "phone", "line1")


@dataclass(frozen=True)
class ReserveInput:
    saga_id: str
    user_id: str
    sku: str
    quantity: int
    tier: str
    address: dict[str, str] | None
    ttl: timedelta
    prize: bool = False

    def digest(self) -> str:
        return payload_hash(
            {
                "user_id": self.user_id,
                "sku": self.sku,
                "quantity": self.quantity,
                "prize": self.prize,
            }
        )


@dataclass(frozen=True)
class ReservationView:
    saga_id: str
    sku: str
    quantity: int
    state: str
    price_points: int
    expires_at: datetime | None


def _view(row: Any) -> ReservationView:
    return ReservationView(
        row.saga_id, row.sku, int(row.quantity), row.state, int(row.price_points), row.expires_at
    )


_COLUMNS = sets.COLUMNS
_CLAIM = f"""
    INSERT INTO reservations (app, saga_id, user_id, sku, bucket, quantity, price_points, prize,
                              state, payload_hash, local_day, address, expires_at, created_at)
    VALUES (%(app)s, %(saga_id)s, %(user_id)s, %(sku)s, %(bucket)s, %(quantity)s, %(price)s,
            %(prize)s, 'RESERVED', %(hash)s, %(day)s, %(address)s::jsonb, %(expires_at)s,
            %(now)s)
    ON CONFLICT DO NOTHING RETURNING {_COLUMNS}
"""
_EXISTING = f"SELECT {_COLUMNS} FROM reservations WHERE app = %(app)s AND saga_id = %(saga_id)s"
# A release that finds no reservation records itself, so the late reserve is refused.
_BARRIER = f"""
    INSERT INTO reservations (app, saga_id, user_id, sku, quantity, price_points, state,
                              local_day, expires_at, created_at, finished_at)
    VALUES (%(app)s, %(saga_id)s, '', '', 0, 0, 'RELEASED', %(now)s::date, %(now)s, %(now)s,
            %(now)s)
    ON CONFLICT DO NOTHING RETURNING {_COLUMNS}
"""
_LOCK_MEMBER_ITEM = """
    INSERT INTO member_items (app, user_id, sku) VALUES (%(app)s, %(user_id)s, %(sku)s)
    ON CONFLICT (app, user_id, sku) DO UPDATE SET sku = EXCLUDED.sku
"""
_TAKE_STOCK = """
    UPDATE stock SET available = available - %(quantity)s
    WHERE app = %(app)s AND sku = %(sku)s AND bucket = %(bucket)s AND available >= %(quantity)s
    RETURNING available
"""
# The free codes are picked once, in a materialized CTE: as `code IN (SELECT ... LIMIT n FOR
# UPDATE SKIP LOCKED)` the planner may rescan the subquery for each row of a nested-loop
# semi-join, and each rescan (past the rows this statement just took) picks another code, so one
# reservation took every free code of a small pool and the next was refused OUT_OF_STOCK.
_TAKE_CODES = """
    WITH picked AS MATERIALIZED (
      SELECT code FROM codes WHERE app = %(app)s AND sku = %(sku)s AND state = 'free'
      LIMIT %(quantity)s FOR UPDATE SKIP LOCKED)
    UPDATE codes SET state = 'reserved', saga_id = %(saga_id)s, updated_at = %(now)s
    FROM picked WHERE codes.app = %(app)s AND codes.code = picked.code
    RETURNING codes.code
"""


@dataclass
class Pending:
    """A reserve request of a batch that passed the catalog checks."""

    n: int
    request: ReserveInput
    item: Item
    sale: SaleState
    admitted: int = gates.BYPASS

    @property
    def took(self) -> bool:
        """The gate counted its units (they go back if it is not reserved)."""
        return self.admitted >= 0


def check_sale(
    stored: StoredProgram[Catalog], now: datetime, request: ReserveInput
) -> tuple[Item, SaleState]:
    """The catalog's refusals, decided before anything is written."""
    catalog = stored.program
    item = item_of(stored, request.sku)
    sale = sale_state(item, now, catalog.zone)
    if not request.prize:
        if not sale.on_sale:
            raise NotOnSale(
                f"{item.sku!r} is {sale.status.value.replace('_', ' ')}",
                metadata={"sale_status": sale.status.value},
            )
        if not tier_allows(catalog, item, request.tier):
            raise TierTooLow(
                f"{item.sku!r} needs tier {item.min_tier}",
                metadata={"tier": request.tier, "min_tier": item.min_tier},
            )
    if item.requires_address:
        _check_address(request.address)
    return item, sale


async def lock_members(conn: AsyncConnection, app: str, pending: Sequence[Pending]) -> None:
    """The member-item locks of every limited item in the batch, first and in one order, so
    two batches never wait on each other's member locks and stock rows in a cycle."""
    keys = sorted(
        {
            (p.request.user_id, p.item.sku)
            for p in pending
            if not p.request.prize and _has_limits(p.item)
        }
    )
    if keys:
        await run_sql(
            conn,
            """INSERT INTO member_items (app, user_id, sku)
               SELECT %(app)s, k.user_id, k.sku
               FROM json_to_recordset(%(keys)s::json) AS k(user_id text, sku text)
               ORDER BY k.user_id, k.sku
               ON CONFLICT (app, user_id, sku) DO UPDATE SET sku = EXCLUDED.sku""",
            {"app": app, "keys": json_rows({"user_id": u, "sku": k} for u, k in keys)},
        )


def _check_address(address: dict[str, str] | None) -> None:
    for name in ADDRESS_FIELDS:
        if not address or not address.get(name, "").strip():
            raise AddressRequired(f"address.{name}")


async def reserve_set(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    now: datetime,
    admitted: list[Pending],
    outcomes: dict[int, ReservationView | LoyaltyError],
    left: dict[int, int | None],
) -> list[Pending]:
    """The batch's common items set-wise (``reservation_sets``); returns the rest."""
    plain = {
        p.n: p
        for p in admitted
        if (p.request.prize or not _has_limits(p.item)) and p.item.codes is not CodeSource.POOL
    }
    if not plain:
        return admitted
    decided, fallback = await sets.reserve_plain(
        conn,
        stored,
        now,
        [
            sets.PlainReserve(
                n=p.n,
                saga_id=p.request.saga_id,
                user_id=p.request.user_id,
                item=p.item,
                sale=p.sale,
                quantity=p.request.quantity,
                prize=p.request.prize,
                digest=p.request.digest(),
                address=p.request.address,
                expires_at=now + p.request.ttl,
            )
            for p in plain.values()
        ],
    )
    for n, outcome in decided.items():
        if isinstance(outcome, LoyaltyError):
            outcomes[n] = outcome
        else:
            outcomes[n], left[n] = _view(outcome[0]), outcome[1]
    again = {item.n for item in fallback}
    return [p for p in admitted if p.n not in plain or p.n in again]


async def reserve_one(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    now: datetime,
    item: Item,
    sale: SaleState,
    request: ReserveInput,
) -> tuple[ReservationView, int | None]:
    """The reservation, and the units left in its bucket (None for a replay)."""
    zone = stored.program.zone
    today = now.astimezone(zone).date()
    params: dict[str, Any] = {
        "app": stored.app,
        "saga_id": request.saga_id,
        "user_id": request.user_id,
        "sku": item.sku,
        "bucket": sale.bucket,
        "quantity": request.quantity,
        "price": 0 if request.prize else item.price_points * request.quantity,
        "prize": request.prize,
        "hash": request.digest(),
        "day": today,
        "address": json.dumps(request.address) if request.address else None,
        "expires_at": now + request.ttl,
        "now": now,
    }
    claimed = (await conn.exec_driver_sql(_CLAIM, params)).one_or_none()
    if claimed is None:
        existing = (await conn.exec_driver_sql(_EXISTING, params)).one()
        answer = sets.existing_outcome(existing, params["hash"])
        if isinstance(answer, LoyaltyError):
            raise answer
        return _view(existing), None
    if not request.prize and _has_limits(item):
        await conn.exec_driver_sql(_LOCK_MEMBER_ITEM, params)
        usage = (
            await usage_by_sku(
                conn,
                stored.app,
                request.user_id,
                [item.sku],
                today,
                today.replace(day=1),
                {item.sku: sale},
                now,
            )
        ).get(item.sku, Usage())
        # The row just claimed is in `usage` already: over a limit means refused.
        if _over(item, usage):
            raise LimitExceeded(
                f"the per-user limit of {item.sku!r} allows no more",
                metadata={"requested": str(request.quantity)},
            )
    remaining = -1
    if not item.unlimited:
        await ensure_bucket(conn, stored.app, item, sale.bucket)
        row = (await conn.exec_driver_sql(_TAKE_STOCK, params)).one_or_none()
        if row is None:
            raise OutOfStock(f"{item.sku!r} has fewer than {request.quantity} left")
        remaining = int(row.available)
    if item.codes is CodeSource.POOL:
        taken = (await conn.exec_driver_sql(_TAKE_CODES, params)).all()
        if len(taken) < request.quantity:
            raise OutOfStock(f"{item.sku!r} has no codes left")
    return _view(claimed), remaining


async def confirm_rows(
    conn: AsyncConnection, stored: StoredProgram[Catalog], now: datetime, saga_ids: Sequence[str]
) -> tuple[dict[str, OrderView | LoyaltyError], list[Any]]:
    """Turns reservations (distinct saga ids) into orders, the rows locked in saga order first.
    A repeat returns the same order. Every refusal is decided before that item writes
    anything, except an expiry found here, which is written (and returned, for the gate) and
    then refused."""
    app = stored.app
    outcomes: dict[str, OrderView | LoyaltyError] = {}
    expired: list[Any] = []
    live: list[Any] = []
    rows = await _lock_reservations(conn, app, saga_ids)
    for saga_id in saga_ids:
        outcome = await _confirm_refusal(conn, app, now, rows.get(saga_id), saga_id)
        if isinstance(outcome, str):  # EXPIRED just now: committed, then refused
            expired.append(rows[saga_id])
            outcome = ReservationExpired(f"the reservation of saga {saga_id!r} expired")
        if outcome is not None:
            outcomes[saga_id] = outcome
        else:
            live.append(rows[saga_id])
    if live:
        outcomes.update(await sets.confirm_set(conn, stored, now, live))
    return outcomes, expired


async def release_rows(
    conn: AsyncConnection, app: str, now: datetime, saga_ids: Sequence[str]
) -> tuple[dict[str, ReservationView | LoyaltyError], list[Any]]:
    """Returns the stock of reservations (distinct saga ids); the rows released (for the
    gate). With no reservation it records the release (the barrier) and succeeds; repeats
    answer the same; a confirmed one is refused (cancel the order)."""
    outcomes: dict[str, ReservationView | LoyaltyError] = {}
    released: list[Any] = []
    rows = await _lock_reservations(conn, app, saga_ids)
    for saga_id in saga_ids:
        if saga_id in rows:
            continue
        params = {"app": app, "saga_id": saga_id, "now": now}
        barrier = (await conn.exec_driver_sql(_BARRIER, params)).one_or_none()
        if barrier is not None:
            outcomes[saga_id] = _view(barrier)
            continue
        # A Reserve committed meanwhile (the insert waited for it): release that.
        row = (await conn.exec_driver_sql(_EXISTING + " FOR UPDATE", params)).one()
        rows[saga_id] = row
    # Stock rows in one order (sku, bucket) across batches.
    for saga_id, row in sorted(rows.items(), key=lambda kv: (kv[1].sku, kv[1].bucket, kv[0])):
        if row.state == CONFIRMED:
            outcomes[saga_id] = ReservationConfirmed(
                f"saga {saga_id!r} is an order; cancel it instead"
            )
        elif row.state != RESERVED:
            outcomes[saga_id] = _view(row)
        else:
            await _finish(conn, app, row, RELEASED, now)
            released.append(row)
            outcomes[saga_id] = ReservationView(
                row.saga_id,
                row.sku,
                int(row.quantity),
                RELEASED,
                int(row.price_points),
                row.expires_at,
            )
    return outcomes, released


async def expire_rows(conn: AsyncConnection, app: str, now: datetime, limit: int) -> list[Any]:
    """Expires up to ``limit`` reservations past their TTL (state EXPIRED): their stock and
    codes return; the rows expired (for the gate). SKIP LOCKED, so replicas and a concurrent
    Confirm or Release never wait on each other."""
    due = (
        await conn.exec_driver_sql(
            f"""SELECT {_COLUMNS} FROM reservations
                WHERE app = %(app)s AND state = 'RESERVED' AND expires_at <= %(now)s
                ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED""",
            {"app": app, "now": now, "limit": limit},
        )
    ).all()
    for row in due:
        await _finish(conn, app, row, EXPIRED, now)
    return list(due)


async def _lock_reservations(
    conn: AsyncConnection, app: str, saga_ids: Sequence[str]
) -> dict[str, Any]:
    rows = await run_sql(
        conn,
        f"""SELECT {_COLUMNS} FROM reservations
            WHERE app = %(app)s AND saga_id = ANY(%(ids)s::text[])
            ORDER BY saga_id FOR UPDATE""",
        {"app": app, "ids": sorted(saga_ids)},
    )
    return {row.saga_id: row for row in rows}


async def _confirm_refusal(
    conn: AsyncConnection, app: str, now: datetime, row: Any, saga_id: str
) -> OrderView | LoyaltyError | str | None:
    """Why a reservation cannot be confirmed (its order, for a repeat), or None when it is
    live. "EXPIRED" when its TTL ran out and it was ended here (the caller refuses it after the
    commit and gives its units back to the gate)."""
    if row is None:
        return ReservationNotFound(f"saga {saga_id!r} has no reservation")
    if row.state == CONFIRMED:
        return await order_by_saga(conn, app, saga_id)
    if row.state == RELEASED:
        return ReservationReleased(f"saga {saga_id!r} was released; it cannot be confirmed")
    if row.state == EXPIRED:
        return ReservationExpired(f"the reservation of saga {saga_id!r} expired")
    if row.expires_at <= now:
        await _finish(conn, app, row, EXPIRED, now)
        return EXPIRED
    return None


def _has_limits(item: Item) -> bool:
    limits = item.limits
    return any(
        value is not None
        for value in (limits.daily, limits.monthly, limits.per_session, limits.lifetime)
    )


def _over(item: Item, usage: Usage) -> bool:
    """Whether what the member holds (this reservation included) passes a limit."""
    limits = item.limits
    return any(
        limit is not None and used > limit
        for limit, used in (
            (limits.daily, usage.today),
            (limits.monthly, usage.month),
            (limits.per_session, usage.session),
            (limits.lifetime, usage.lifetime),
        )
    )


async def _finish(conn: AsyncConnection, app: str, row: Any, state: str, now: datetime) -> None:
    """Ends a live reservation as RELEASED or EXPIRED: its units and codes go back."""
    params = {
        "app": app,
        "saga_id": row.saga_id,
        "sku": row.sku,
        "bucket": row.bucket,
        "quantity": row.quantity,
        "state": state,
        "now": now,
    }
    await conn.exec_driver_sql(
        """UPDATE reservations SET state = %(state)s, finished_at = %(now)s
           WHERE app = %(app)s AND saga_id = %(saga_id)s""",
        params,
    )
    await conn.exec_driver_sql(
        """UPDATE stock SET available = available + %(quantity)s
           WHERE app = %(app)s AND sku = %(sku)s AND bucket = %(bucket)s""",
        params,
    )
    await conn.exec_driver_sql(
        """UPDATE codes SET state = 'free', saga_id = NULL, updated_at = %(now)s
           WHERE app = %(app)s AND saga_id = %(saga_id)s AND state = 'reserved'""",
        params,
    )


async def _codes(
    conn: AsyncConnection, app: str, row: Any, item: Item | None, now: datetime
) -> list[str]:
    """The reservation's codes, issued: its reserved pool codes, or fresh ones. An item gone
    off shelf since may still hold pool codes for this saga."""
    params = {"app": app, "saga_id": row.saga_id, "sku": row.sku, "now": now}
    codes: list[str] = []
    if item is None or item.codes is CodeSource.POOL:
        issued = await conn.exec_driver_sql(
            """UPDATE codes SET state = 'issued', updated_at = %(now)s
               WHERE app = %(app)s AND saga_id = %(saga_id)s AND state = 'reserved'
               RETURNING code""",
            params,
        )
        codes = sorted(issued.scalars().all())
    if item is not None and item.codes is CodeSource.GENERATE:
        while len(codes) < int(row.quantity):
            fresh = generate_code()
            inserted = (
                await conn.exec_driver_sql(
                    """INSERT INTO codes (app, code, sku, state, saga_id, updated_at)
                       VALUES (%(app)s, %(code)s, %(sku)s, 'issued', %(saga_id)s, %(now)s)
                       ON CONFLICT DO NOTHING RETURNING code""",
                    {**params, "code": fresh},
                )
            ).scalar_one_or_none()
            if inserted is not None:  # a collision (one in 2^60) draws again
                codes.append(inserted)
    return codes
