"""Two-phase reservations: Reserve (try), Confirm (into an order), Release (cancel), and the
reaper that expires reservations past their TTL.

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.errors import IdempotencyConflict
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
from services.mall.store.catalog import available_in, ensure_bucket, item_of, usage_by_sku
from services.mall.store.orders import OrderView, create_order, order_by_saga

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


_COLUMNS = (
    "saga_id, user_id, sku, bucket, quantity, price_points, prize, state, payload_hash, "
    "expires_at, address"
)
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


def _check_address(address: dict[str, str] | None) -> None:
    for name in ADDRESS_FIELDS:
        if not address or not address.get(name, "").strip():
            raise AddressRequired(f"address.{name}")


class Reservations:
    def __init__(self, engine: AsyncEngine, gate: gates.StockGate) -> None:
        self.engine = engine
        self.gate = gate

    async def reserve(
        self, stored: StoredProgram[Catalog], now: datetime, request: ReserveInput
    ) -> ReservationView:
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
        admitted = gates.BYPASS
        if not item.unlimited:
            admitted = await self.gate.admit(
                stored.app, item.sku, sale.bucket, request.saga_id, request.quantity
            )
            if admitted == gates.UNKNOWN:
                # No counter yet (or Redis lost it): seed it from Postgres first, so the
                # first wave of a sale is already filtered.
                await self.gate.seed(
                    stored.app,
                    item.sku,
                    sale.bucket,
                    await self._left(stored.app, item, sale.bucket),
                )
                admitted = await self.gate.admit(
                    stored.app, item.sku, sale.bucket, request.saga_id, request.quantity
                )
            if admitted == gates.SOLD_OUT:
                # The sale is sold out: answered from Redis, no database row touched.
                raise OutOfStock(f"{item.sku!r} is sold out")
        took = admitted >= 0
        try:
            async with self.engine.begin() as conn:
                view, left = await self._reserve(conn, stored, now, item, sale, request)
        except BaseException:
            if took:
                await self.gate.give_back(stored.app, item.sku, sale.bucket, request.quantity)
            raise
        if left is None:  # a replay: nothing was taken this time
            if took:
                await self.gate.give_back(stored.app, item.sku, sale.bucket, request.quantity)
            return view
        if not item.unlimited:
            await self.gate.reserved(stored.app, request.saga_id, int(request.ttl.total_seconds()))
            if admitted == gates.UNKNOWN:
                await self.gate.seed(stored.app, item.sku, sale.bucket, left)
        return view

    async def _left(self, app: str, item: Item, bucket: str) -> int:
        async with self.engine.connect() as conn:
            return await available_in(conn, app, item.sku, bucket, item)

    async def _reserve(
        self,
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
            if existing.state == RELEASED and existing.payload_hash == "":
                raise ReservationReleased(
                    f"saga {request.saga_id!r} was released before it reserved; refused"
                )
            if existing.payload_hash != params["hash"]:
                raise IdempotencyConflict(
                    f"saga {request.saga_id!r} already reserved something else"
                )
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

    async def confirm(
        self, stored: StoredProgram[Catalog], now: datetime, saga_id: str
    ) -> OrderView:
        """Turns the reservation into an order. A repeat returns the same order. Refusals
        that record something (an expiry found here) are raised after the commit."""
        params = {"app": stored.app, "saga_id": saga_id, "now": now}
        expired: ReservationView | None = None
        async with self.engine.begin() as conn:
            row = (await conn.exec_driver_sql(_EXISTING + " FOR UPDATE", params)).one_or_none()
            if row is None:
                raise ReservationNotFound(f"saga {saga_id!r} has no reservation")
            if row.state == CONFIRMED:
                return await order_by_saga(conn, stored.app, saga_id)
            if row.state == RELEASED:
                raise ReservationReleased(f"saga {saga_id!r} was released; it cannot be confirmed")
            if row.state == EXPIRED:
                raise ReservationExpired(f"the reservation of saga {saga_id!r} expired")
            if row.expires_at <= now:
                await _finish(conn, stored.app, row, EXPIRED, now)
                expired = _view(row)
            else:
                item = stored.program.items.get(row.sku)
                order = await create_order(
                    conn, stored, now, row, item, await _codes(conn, stored.app, row, item, now)
                )
                await conn.exec_driver_sql(
                    """UPDATE reservations SET state = 'CONFIRMED', finished_at = %(now)s,
                           order_id = %(order_id)s
                       WHERE app = %(app)s AND saga_id = %(saga_id)s""",
                    {**params, "order_id": order.order_id},
                )
                return order
        await self.gate.give_back(stored.app, expired.sku, row.bucket, expired.quantity)
        raise ReservationExpired(f"the reservation of saga {saga_id!r} expired")

    async def release(
        self, stored: StoredProgram[Catalog], now: datetime, saga_id: str
    ) -> ReservationView:
        """Returns the stock. With no reservation it records the release (the barrier) and
        succeeds; repeats answer the same; a confirmed one is refused (cancel the order)."""
        params = {"app": stored.app, "saga_id": saga_id, "now": now}
        # Twice at most: a Reserve that commits between our read and our barrier insert is
        # found (and released) on the second pass.
        for _ in range(2):
            async with self.engine.begin() as conn:
                row = (await conn.exec_driver_sql(_EXISTING + " FOR UPDATE", params)).one_or_none()
                if row is None:
                    barrier = (await conn.exec_driver_sql(_BARRIER, params)).one_or_none()
                    if barrier is not None:
                        return _view(barrier)
                    continue  # a Reserve committed meanwhile: release that
                if row.state == CONFIRMED:
                    raise ReservationConfirmed(f"saga {saga_id!r} is an order; cancel it instead")
                if row.state != RESERVED:
                    return _view(row)
                await _finish(conn, stored.app, row, RELEASED, now)
                break
        else:
            raise ReservationNotFound(f"saga {saga_id!r}: the reservation moved twice; retry")
        await self.gate.give_back(stored.app, row.sku, row.bucket, int(row.quantity))
        return ReservationView(
            row.saga_id, row.sku, int(row.quantity), RELEASED, int(row.price_points), row.expires_at
        )

    async def expire_due(self, stored: StoredProgram[Catalog], now: datetime, limit: int) -> int:
        """Expires reservations past their TTL (state EXPIRED): their stock and codes return.
        SKIP LOCKED, so replicas and a concurrent Confirm or Release never wait on each other."""
        async with self.engine.begin() as conn:
            due = (
                await conn.exec_driver_sql(
                    f"""SELECT {_COLUMNS} FROM reservations
                        WHERE app = %(app)s AND state = 'RESERVED' AND expires_at <= %(now)s
                        ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED""",
                    {"app": stored.app, "now": now, "limit": limit},
                )
            ).all()
            for row in due:
                await _finish(conn, stored.app, row, EXPIRED, now)
        for row in due:
            await self.gate.give_back(stored.app, row.sku, row.bucket, int(row.quantity))
        return len(due)


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
