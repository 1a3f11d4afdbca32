"""Orders: made by Confirm, moved by ops (MarkShipped, MarkFulfilled, CancelOrder), each with
its history of transitions (who, when, why). Transitions are guarded by the current status,
so a repeat is a no-op that answers with the order as it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.mall.domain.errors import OrderNotFound, OrderTransitionRefused

PENDING, FULFILLED, SHIPPED, CANCELLED = "PENDING", "FULFILLED", "SHIPPED", "CANCELLED"


@dataclass(frozen=True)
class Transition:
    status: str
    actor: str
    note: str
    at: datetime


@dataclass(frozen=True)
class OrderView:
    order_id: str
    saga_id: str
    user_id: str
    sku: str
    quantity: int
    price_points: int
    status: str
    coupon_codes: list[str]
    address: dict[str, str] | None
    carrier: str
    tracking_number: str
    created_at: datetime
    seq: int = 0
    history: list[Transition] = field(default_factory=list)


_COLUMNS = (
    "seq, order_id, saga_id, user_id, sku, quantity, price_points, status, coupon_codes, "
    "address, carrier, tracking_number, created_at, kind"
)


async def _record(
    conn: AsyncConnection, app: str, order_id: str, status: str, actor: str, note: str, at: datetime
) -> None:
    await conn.exec_driver_sql(
        """INSERT INTO order_transitions (app, order_id, status, actor, note, at)
           VALUES (%(app)s, %(order_id)s, %(status)s, %(actor)s, %(note)s, %(at)s)""",
        {
            "app": app,
            "order_id": order_id,
            "status": status,
            "actor": actor,
            "note": note,
            "at": at,
        },
    )


def _order(row: Any, history: list[Transition]) -> OrderView:
    return OrderView(
        order_id=row.order_id,
        saga_id=row.saga_id,
        user_id=row.user_id,
        sku=row.sku,
        quantity=int(row.quantity),
        price_points=int(row.price_points),
        status=row.status,
        coupon_codes=list(row.coupon_codes or []),
        address=row.address,
        carrier=row.carrier,
        tracking_number=row.tracking_number,
        created_at=row.created_at,
        seq=int(row.seq),
        history=history,
    )


async def _histories(
    conn: AsyncConnection, app: str, order_ids: list[str]
) -> dict[str, list[Transition]]:
    histories: dict[str, list[Transition]] = {order_id: [] for order_id in order_ids}
    rows = await conn.exec_driver_sql(
        """SELECT order_id, status, actor, note, at FROM order_transitions
           WHERE app = %(app)s AND order_id = ANY(%(ids)s) ORDER BY id""",
        {"app": app, "ids": order_ids},
    )
    for row in rows:
        histories[row.order_id].append(Transition(row.status, row.actor, row.note, row.at))
    return histories


async def get_order(
    conn: AsyncConnection, app: str, order_id: str, *, lock: bool = False
) -> OrderView:
    row = (
        await conn.exec_driver_sql(
            f"SELECT {_COLUMNS} FROM orders WHERE app = %(app)s AND order_id = %(order_id)s"
            + (" FOR UPDATE" if lock else ""),
            {"app": app, "order_id": order_id},
        )
    ).one_or_none()
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}")
    return _order(row, (await _histories(conn, app, [order_id]))[order_id])


async def order_by_saga(conn: AsyncConnection, app: str, saga_id: str) -> OrderView:
    order_id = (
        await conn.exec_driver_sql(
            "SELECT order_id FROM orders WHERE app = %(app)s AND saga_id = %(saga_id)s",
            {"app": app, "saga_id": saga_id},
        )
    ).scalar_one()
    return await get_order(conn, app, order_id)


async def list_orders(
    conn: AsyncConnection,
    app: str,
    user_id: str | None,
    status: str | None,
    before: int | None,
    limit: int,
) -> list[OrderView]:
    """Newest first, keyset-paged by seq, by member and/or status."""
    rows = (
        await conn.exec_driver_sql(
            f"""SELECT {_COLUMNS} FROM orders
                WHERE app = %(app)s AND seq < %(before)s
                  AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s)
                  AND (%(status)s::text IS NULL OR status = %(status)s)
                ORDER BY seq DESC LIMIT %(limit)s""",
            {
                "app": app,
                "user_id": user_id,
                "status": status,
                "before": before or 2**63 - 1,
                "limit": limit,
            },
        )
    ).all()
    histories = await _histories(conn, app, [row.order_id for row in rows])
    return [_order(row, histories[row.order_id]) for row in rows]


async def transition(
    conn: AsyncConnection,
    app: str,
    order_id: str,
    to: str,
    actor: str,
    note: str,
    now: datetime,
    *,
    allowed_from: tuple[str, ...],
    kinds: tuple[str, ...] | None = None,
    fields: dict[str, str] | None = None,
) -> tuple[OrderView, bool]:
    """Moves an order to ``to`` from one of ``allowed_from``; (order, moved). Already there:
    the order as it is, not moved. Anything else: INVALID_ORDER_TRANSITION."""
    row = (
        await conn.exec_driver_sql(
            f"SELECT {_COLUMNS} FROM orders WHERE app = %(app)s AND order_id = %(order_id)s "
            "FOR UPDATE",
            {"app": app, "order_id": order_id},
        )
    ).one_or_none()
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}")
    if row.status == to:
        return await get_order(conn, app, order_id), False
    if row.status not in allowed_from or (kinds is not None and row.kind not in kinds):
        raise OrderTransitionRefused(
            f"a {row.kind} order that is {row.status} cannot become {to}",
            metadata={"status": row.status},
        )
    extra = fields or {}
    await conn.exec_driver_sql(
        """UPDATE orders SET status = %(to)s, updated_at = %(now)s,
               carrier = coalesce(%(carrier)s, carrier),
               tracking_number = coalesce(%(tracking)s, tracking_number),
               cancelled_at = CASE WHEN %(to)s = 'CANCELLED' THEN %(now)s ELSE cancelled_at END
           WHERE app = %(app)s AND order_id = %(order_id)s""",
        {
            "app": app,
            "order_id": order_id,
            "to": to,
            "now": now,
            "carrier": extra.get("carrier"),
            "tracking": extra.get("tracking_number"),
        },
    )
    await _record(conn, app, order_id, to, actor, note, now)
    return await get_order(conn, app, order_id), True


async def cancel_order(
    conn: AsyncConnection, app: str, order_id: str, operator: str, reason: str, now: datetime
) -> tuple[OrderView, str]:
    """Cancels a pending or fulfilled order: its units go back to their bucket, its codes are
    void (a code once given out is never given again), and it stops counting toward the
    member's limits. Returns the order and the bucket the units went back to."""
    order, moved = await transition(
        conn, app, order_id, CANCELLED, operator, reason, now, allowed_from=(PENDING, FULFILLED)
    )
    bucket = ""
    if moved:
        reservation = (
            await conn.exec_driver_sql(
                """UPDATE reservations SET cancelled = true
                   WHERE app = %(app)s AND saga_id = %(saga_id)s RETURNING bucket""",
                {"app": app, "saga_id": order.saga_id},
            )
        ).one()
        bucket = reservation.bucket
        await conn.exec_driver_sql(
            """UPDATE stock SET available = available + %(quantity)s
               WHERE app = %(app)s AND sku = %(sku)s AND bucket = %(bucket)s""",
            {"app": app, "sku": order.sku, "bucket": bucket, "quantity": order.quantity},
        )
        await conn.exec_driver_sql(
            """UPDATE codes SET state = 'void', updated_at = %(now)s
               WHERE app = %(app)s AND code = ANY(%(codes)s)""",
            {"app": app, "codes": order.coupon_codes, "now": now},
        )
    return order, bucket if moved else ""
