"""Reserve and Confirm set-wise, for the common items of a batch: a fixed number of statements
per batch, one stock UPDATE per (sku, bucket).

Reserve takes this path for items without per-user limits and without a code pool (a prize
skips limits); everything else, and any group whose bucket cannot cover the whole group, takes
the per-item path of ``Reservations`` (a savepoint each). Each item still ends as the single
call would: a replay answers as the first time, a reserve after its release is refused.
Confirm takes it for every live reservation: pool codes issued in one statement, generated
codes inserted in one (a collision, one in 2^60, draws again), orders, their history and the
reservations' new state in one.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import json_rows, run_sql
from plumbing.errors import IdempotencyConflict, LoyaltyError
from plumbing.programs import StoredProgram
from services.mall.domain.errors import ReservationReleased
from services.mall.domain.program import Catalog, CodeSource, Item, ItemKind
from services.mall.domain.sale import SaleState, generate_code
from services.mall.store.catalog import ensure_bucket
from services.mall.store.orders import FULFILLED, PENDING, OrderView, Transition

# One reservation's outcome: its view and the units left in its bucket (None: a replay, -1:
# an unlimited item), or its refusal.
Taken = tuple[Any, int | None] | LoyaltyError


@dataclass(frozen=True)
class PlainReserve:
    n: int
    saga_id: str
    user_id: str
    item: Item
    sale: SaleState
    quantity: int
    prize: bool
    digest: str
    address: dict[str, str] | None
    expires_at: datetime


# A reservation row as every reservation statement returns it.
COLUMNS = (
    "saga_id, user_id, sku, bucket, quantity, price_points, prize, state, payload_hash, "
    "expires_at, address"
)
_EXISTING = f"""
    SELECT {COLUMNS} FROM reservations WHERE app = %(app)s AND saga_id = ANY(%(ids)s::text[])
"""
# Stock rows locked in (sku, bucket) order, then each group's units taken at once.
_TAKE_STOCK = """
    WITH want AS (
      SELECT * FROM json_to_recordset(%(groups)s::json)
        AS g(sku text, bucket text, total bigint)),
    locked AS (
      SELECT s.sku, s.bucket FROM stock s JOIN want w USING (sku, bucket)
      WHERE s.app = %(app)s ORDER BY s.sku, s.bucket FOR UPDATE OF s)
    UPDATE stock s SET available = s.available - w.total
    FROM want w JOIN locked l USING (sku, bucket)
    WHERE s.app = %(app)s AND s.sku = w.sku AND s.bucket = w.bucket AND s.available >= w.total
    RETURNING s.sku, s.bucket, s.available
"""
_PUT_BACK = """
    UPDATE stock s SET available = s.available + g.total
    FROM json_to_recordset(%(groups)s::json) AS g(sku text, bucket text, total bigint)
    WHERE s.app = %(app)s AND s.sku = g.sku AND s.bucket = g.bucket
"""
_CLAIM = f"""
    INSERT INTO reservations (app, saga_id, user_id, sku, bucket, quantity, price_points, prize,
                              state, payload_hash, local_day, address, expires_at, created_at)
    SELECT %(app)s, r.saga_id, r.user_id, r.sku, r.bucket, r.quantity, r.price, r.prize,
           'RESERVED', r.hash, %(day)s, r.address, r.expires_at, %(now)s
    FROM json_to_recordset(%(rows)s::json)
      AS r(saga_id text, user_id text, sku text, bucket text, quantity bigint, price bigint,
           prize bool, hash text, address jsonb, expires_at timestamptz)
    ORDER BY r.saga_id
    ON CONFLICT DO NOTHING RETURNING {COLUMNS}
"""


def existing_outcome(row: Any, digest: str) -> Taken:
    """A reserve that found its saga's row already there: the barrier of a release that came
    first, another payload under the saga id, or a replay (answered as the first time)."""
    if row.state == "RELEASED" and row.payload_hash == "":
        return ReservationReleased(f"saga {row.saga_id!r} was released before it reserved; refused")
    if row.payload_hash != digest:
        return IdempotencyConflict(f"saga {row.saga_id!r} already reserved something else")
    return (row, None)


async def reserve_plain(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    now: datetime,
    items: Sequence[PlainReserve],
) -> tuple[dict[int, Taken], list[PlainReserve]]:
    """The outcomes decided set-wise (by ``n``), and the items left for the per-item path:
    replays answered from their rows, stock taken with one UPDATE per (sku, bucket), the
    reservations claimed in one INSERT."""
    params: dict[str, Any] = {"app": stored.app, "now": now}
    outcomes: dict[int, Taken] = {}
    found = {
        row.saga_id: row
        for row in await run_sql(conn, _EXISTING, {**params, "ids": [i.saga_id for i in items]})
    }
    fresh = []
    for item in items:
        if item.saga_id in found:
            outcomes[item.n] = existing_outcome(found[item.saga_id], item.digest)
        else:
            fresh.append(item)
    left = await _take_stock(conn, stored.app, params, fresh)
    fallback = [
        i for i in fresh if not i.item.unlimited and (i.item.sku, i.sale.bucket) not in left
    ]
    falling_back = {i.n for i in fallback}
    claiming = [i for i in fresh if i.n not in falling_back]
    if not claiming:
        return outcomes, fallback
    claimed = await _claim(conn, stored, params, claiming)
    # A reservation or release of the same saga committed meanwhile: its units go back, and
    # the per-item path answers it from what is there now.
    lost = [i for i in claiming if i.saga_id not in claimed]
    back: dict[tuple[str, str], int] = defaultdict(int)
    for i in lost:
        if not i.item.unlimited:
            back[(i.item.sku, i.sale.bucket)] += i.quantity
    if back:
        await run_sql(conn, _PUT_BACK, {**params, "groups": _groups(back)})
    for i in claiming:
        if i.saga_id in claimed:
            units = -1 if i.item.unlimited else left[(i.item.sku, i.sale.bucket)]
            outcomes[i.n] = (claimed[i.saga_id], units)
    return outcomes, fallback + lost


async def _take_stock(
    conn: AsyncConnection, app: str, params: dict[str, Any], fresh: Sequence[PlainReserve]
) -> dict[tuple[str, str], int]:
    """Units left per (sku, bucket) after taking every fresh item's quantity, in one UPDATE
    (a bucket without enough is absent: its items take the per-item path)."""
    groups: dict[tuple[str, str], int] = defaultdict(int)
    for item in fresh:
        if not item.item.unlimited:
            groups[(item.item.sku, item.sale.bucket)] += item.quantity
    if not groups:
        return {}
    for item in {(i.item.sku, i.sale.bucket): i for i in fresh}.values():
        if (item.item.sku, item.sale.bucket) in groups:
            await ensure_bucket(conn, app, item.item, item.sale.bucket)
    taken: Any = await run_sql(conn, _TAKE_STOCK, {**params, "groups": _groups(groups)})
    return {(sku, bucket): int(available) for sku, bucket, available in taken}


async def _claim(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    params: dict[str, Any],
    claiming: Sequence[PlainReserve],
) -> dict[str, Any]:
    """The reservation rows inserted, by saga id (one taken meanwhile is absent)."""
    rows = await run_sql(
        conn,
        _CLAIM,
        {
            **params,
            "day": params["now"].astimezone(stored.program.zone).date(),
            "rows": json_rows(
                {
                    "saga_id": i.saga_id,
                    "user_id": i.user_id,
                    "sku": i.item.sku,
                    "bucket": i.sale.bucket,
                    "quantity": i.quantity,
                    "price": 0 if i.prize else i.item.price_points * i.quantity,
                    "prize": i.prize,
                    "hash": i.digest,
                    "address": i.address,
                    "expires_at": i.expires_at.isoformat(),
                }
                for i in claiming
            ),
        },
    )
    return {row.saga_id: row for row in rows}


def _groups(groups: dict[tuple[str, str], int]) -> str:
    return json_rows(
        {"sku": sku, "bucket": bucket, "total": total} for (sku, bucket), total in groups.items()
    )


_ISSUE_POOL = """
    UPDATE codes SET state = 'issued', updated_at = %(now)s
    WHERE app = %(app)s AND saga_id = ANY(%(ids)s::text[]) AND state = 'reserved'
    RETURNING saga_id, code
"""
_INSERT_CODES = """
    INSERT INTO codes (app, code, sku, state, saga_id, updated_at)
    SELECT %(app)s, c.code, c.sku, 'issued', c.saga_id, %(now)s
    FROM json_to_recordset(%(codes)s::json) AS c(code text, sku text, saga_id text)
    ON CONFLICT DO NOTHING RETURNING saga_id, code
"""
_WRITE_ORDERS = """
    WITH o AS (
      SELECT * FROM json_to_recordset(%(orders)s::json)
        AS o(n int, order_id text, saga_id text, user_id text, sku text, name text, kind text,
             quantity bigint, price bigint, status text, codes text[], address jsonb)),
    made AS (
      INSERT INTO orders (app, order_id, saga_id, user_id, sku, item_name, kind, quantity,
                          price_points, status, coupon_codes, address, created_at, updated_at)
      SELECT %(app)s, o.order_id, o.saga_id, o.user_id, o.sku, o.name, o.kind, o.quantity,
             o.price, o.status, o.codes, o.address, %(now)s, %(now)s
      FROM o ORDER BY o.n
      RETURNING order_id, seq),
    history AS (
      INSERT INTO order_transitions (app, order_id, status, actor, note, at)
      SELECT %(app)s, t.order_id, t.status, t.actor, t.note, %(now)s
      FROM json_to_recordset(%(history)s::json)
        AS t(n int, order_id text, status text, actor text, note text)
      ORDER BY t.n),
    confirmed AS (
      UPDATE reservations r SET state = 'CONFIRMED', finished_at = %(now)s, order_id = o.order_id
      FROM o WHERE r.app = %(app)s AND r.saga_id = o.saga_id
        AND r.saga_id = ANY(%(ids)s::text[]))
    SELECT order_id, seq FROM made
"""


async def confirm_set(
    conn: AsyncConnection, stored: StoredProgram[Catalog], now: datetime, rows: Sequence[Any]
) -> dict[str, OrderView]:
    """Orders for live, locked reservations (``rows``), by saga id: their codes issued, then
    the orders and their first history written in one statement."""
    params: dict[str, Any] = {"app": stored.app, "now": now}
    items = {row.saga_id: stored.program.items.get(row.sku) for row in rows}
    codes = await _issue_codes(conn, params, items, rows)
    orders: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    views: dict[str, OrderView] = {}
    for n, row in enumerate(rows):
        item = items[row.saga_id]
        view = _new_order(row, item, sorted(codes[row.saga_id]), now)
        orders.append(
            {
                "n": n,
                "order_id": view.order_id,
                "saga_id": row.saga_id,
                "user_id": row.user_id,
                "sku": row.sku,
                "name": item.name if item is not None else row.sku,
                "kind": (item.kind if item is not None else ItemKind.VIRTUAL).value,
                "quantity": view.quantity,
                "price": view.price_points,
                "status": view.status,
                "codes": view.coupon_codes,
                "address": row.address,
            }
        )
        history += [
            {
                "n": len(history) + k,
                "order_id": view.order_id,
                "status": t.status,
                "actor": t.actor,
                "note": t.note,
            }
            for k, t in enumerate(view.history)
        ]
        views[row.saga_id] = view
    made: Any = await run_sql(
        conn,
        _WRITE_ORDERS,
        {
            **params,
            "orders": json_rows(orders),
            "history": json_rows(history),
            "ids": [row.saga_id for row in rows],
        },
    )
    seqs = {order_id: int(seq) for order_id, seq in made}
    return {saga_id: replace(view, seq=seqs[view.order_id]) for saga_id, view in views.items()}


async def _issue_codes(
    conn: AsyncConnection,
    params: dict[str, Any],
    items: dict[str, Item | None],
    rows: Sequence[Any],
) -> dict[str, list[str]]:
    """Each saga's coupon codes: taken from the item's pool, or generated (a code that
    collides with one issued before is drawn again)."""
    codes: dict[str, list[str]] = defaultdict(list)
    # An item gone off shelf since may still hold pool codes for its saga.
    source = {s: item.codes if item is not None else CodeSource.POOL for s, item in items.items()}
    pooled = [s for s, codes_from in source.items() if codes_from is CodeSource.POOL]
    if pooled:
        issued_now: Any = await run_sql(conn, _ISSUE_POOL, {**params, "ids": pooled})
        for saga_id, code in issued_now:
            codes[saga_id].append(code)
    wanted = {r.saga_id: int(r.quantity) for r in rows if source[r.saga_id] is CodeSource.GENERATE}
    sku_of = {r.saga_id: r.sku for r in rows}
    while any(len(codes[s]) < n for s, n in wanted.items()):
        fresh = [
            {"code": generate_code(), "sku": sku_of[s], "saga_id": s}
            for s, n in wanted.items()
            for _ in range(n - len(codes[s]))
        ]
        inserted: Any = await run_sql(conn, _INSERT_CODES, {**params, "codes": json_rows(fresh)})
        for saga_id, code in inserted:
            codes[saga_id].append(code)
    return codes


def _new_order(row: Any, item: Item | None, issued: list[str], now: datetime) -> OrderView:
    """A confirmed reservation's order: coupons and privileges are fulfilled at once (the code
    or the grant is the goods), other kinds wait for ops."""
    kind = item.kind if item is not None else ItemKind.VIRTUAL
    immediate = kind in (ItemKind.COUPON, ItemKind.PRIVILEGE)
    steps = [Transition(PENDING, "saga", f"saga {row.saga_id}", now)]
    if immediate:
        steps.append(Transition(FULFILLED, "mall", "code issued" if issued else "granted", now))
    return OrderView(
        order_id=f"ord_{uuid.uuid4().hex}",
        saga_id=row.saga_id,
        user_id=row.user_id,
        sku=row.sku,
        quantity=int(row.quantity),
        price_points=int(row.price_points),
        status=FULFILLED if immediate else PENDING,
        coupon_codes=issued,
        address=row.address,
        carrier="",
        tracking_number="",
        created_at=now,
        history=steps,
    )
