"""The catalog in the database: items on and off shelf, stock from the program and from ops
(AddStock, LoadCodes), and what ListItems shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from plumbing.db import run_sql
from plumbing.errors import InvalidArgument
from plumbing.idempotency import claim_request, finish_request, payload_hash
from plumbing.programs import StoredProgram
from plumbing.sections import ProgramInvalid
from services.mall.domain.errors import UnknownSku
from services.mall.domain.program import Catalog, CodeSource, Item
from services.mall.domain.sale import SaleState, Usage, sale_state
from services.mall.store.tables import requests

PLAIN = ""  # the stock bucket of an item without flash sessions


async def sync_catalog(
    conn: AsyncConnection, app: str, catalog: Catalog, now: datetime
) -> dict[str, int]:
    """Brings items and stock in line with a new catalog, before it is stored. An item's
    program `stock` is the units the program has loaded: raising it adds the difference,
    lowering it takes the difference back, but never below what is sold or reserved (that is
    refused with the item's path). Items the catalog no longer lists go off shelf. Returns the
    units each sku gained (for the flash-sale gate, once committed)."""
    loaded = {
        row.sku: row
        for row in await conn.execute(
            text(
                """SELECT sku, available, loaded, from_program FROM stock
                   WHERE app = :app AND bucket = '' FOR UPDATE"""
            ),
            {"app": app},
        )
    }
    errors = []
    changes = []
    gained: dict[str, int] = {}
    for index, item in enumerate(catalog.items.values()):
        if item.stock is None or item.sessions:
            continue  # unlimited, code pools (LoadCodes) and per-session stock
        row = loaded.get(item.sku)
        delta = item.stock - (row.from_program if row else 0)
        if row is not None and row.available + delta < 0:
            taken = row.loaded - row.available
            errors.append(
                f"mall.items[{index}].stock: cannot go below the {taken} units already sold "
                "or reserved"
            )
        changes.append({"app": app, "sku": item.sku, "delta": delta, "stock": item.stock})
        if delta > 0:
            gained[item.sku] = delta
    if errors:
        raise ProgramInvalid(errors)
    if changes:
        await conn.execute(
            text(
                """INSERT INTO stock (app, sku, bucket, available, loaded, from_program)
                   VALUES (:app, :sku, '', :stock, :stock, :stock)
                   ON CONFLICT (app, sku, bucket) DO UPDATE
                   SET available = stock.available + :delta, loaded = stock.loaded + :delta,
                       from_program = :stock"""
            ),
            changes,
        )
    await conn.execute(
        text("UPDATE items SET on_shelf = false, updated_at = :now WHERE app = :app"),
        {"app": app, "now": now},
    )
    if catalog.items:
        await conn.execute(
            text(
                """INSERT INTO items (app, sku, name, kind, on_shelf, updated_at)
                   VALUES (:app, :sku, :name, :kind, true, :now)
                   ON CONFLICT (app, sku) DO UPDATE
                   SET name = EXCLUDED.name, kind = EXCLUDED.kind, on_shelf = true,
                       updated_at = EXCLUDED.updated_at"""
            ),
            [
                {"app": app, "sku": i.sku, "name": i.name, "kind": i.kind.value, "now": now}
                for i in catalog.items.values()
            ],
        )
    return gained


def item_of(stored: StoredProgram[Catalog], sku: str) -> Item:
    item = stored.program.items.get(sku)
    if item is None:
        raise UnknownSku(f"no item {sku!r} is on sale in this app")
    return item


async def ensure_bucket(conn: AsyncConnection, app: str, item: Item, bucket: str) -> None:
    """A flash session's bucket starts with the item's per-session stock."""
    if bucket != PLAIN and item.stock is not None:
        await run_sql(
            conn,
            """INSERT INTO stock (app, sku, bucket, available, loaded, from_program)
               VALUES (%(app)s, %(sku)s, %(bucket)s, %(stock)s, %(stock)s, %(stock)s)
               ON CONFLICT DO NOTHING""",
            {"app": app, "sku": item.sku, "bucket": bucket, "stock": item.stock},
        )


async def add_stock(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    now: datetime,
    request_id: str,
    sku: str,
    quantity: int,
) -> tuple[str, bool]:
    """Adds units to the item's current (or next) bucket, once per request_id; returns the
    bucket and whether this call added them (False for a replay)."""
    item = item_of(stored, sku)
    if item.unlimited:
        raise InvalidArgument("sku", f"{sku!r} has unlimited stock")
    if item.codes is CodeSource.POOL:
        raise InvalidArgument("sku", f"{sku!r} takes its stock from its codes: use LoadCodes")
    bucket = sale_state(item, now, stored.program.zone).bucket
    digest = payload_hash({"sku": sku, "quantity": quantity})
    replay = await claim_request(conn, requests, stored.app, request_id, "add_stock", digest, now)
    if replay is not None:
        return str(replay["bucket"]), False
    await ensure_bucket(conn, stored.app, item, bucket)
    await conn.execute(
        text(
            """INSERT INTO stock (app, sku, bucket, available, loaded)
               VALUES (:app, :sku, :bucket, :quantity, :quantity)
               ON CONFLICT (app, sku, bucket) DO UPDATE
               SET available = stock.available + :quantity, loaded = stock.loaded + :quantity"""
        ),
        {"app": stored.app, "sku": sku, "bucket": bucket, "quantity": quantity},
    )
    await finish_request(conn, requests, stored.app, request_id, {"bucket": bucket})
    return bucket, True


async def load_codes(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    now: datetime,
    request_id: str,
    sku: str,
    codes: Sequence[str],
) -> tuple[int, int, bool]:
    """Loads ops' codes into a pool item (each becomes a unit of stock); a code the app already
    has (in any item) is skipped. Once per request_id. Returns (loaded, skipped, replayed)."""
    item = item_of(stored, sku)
    if item.codes is not CodeSource.POOL:
        raise InvalidArgument("sku", f"{sku!r} does not take loaded codes (coupon_codes: pool)")
    digest = payload_hash({"sku": sku, "codes": sorted(codes)})
    replay = await claim_request(conn, requests, stored.app, request_id, "load_codes", digest, now)
    if replay is not None:
        return int(replay["loaded"]), int(replay["skipped"]), True
    inserted = (
        await conn.exec_driver_sql(
            """INSERT INTO codes (app, code, sku, state, updated_at)
               SELECT %(app)s, c, %(sku)s, 'free', %(now)s FROM unnest(%(codes)s::text[]) c
               ON CONFLICT DO NOTHING RETURNING 1""",
            {"app": stored.app, "sku": sku, "now": now, "codes": list(codes)},
        )
    ).all()
    loaded = len(inserted)
    if loaded:
        await conn.execute(
            text(
                """INSERT INTO stock (app, sku, bucket, available, loaded)
                   VALUES (:app, :sku, '', :n, :n)
                   ON CONFLICT (app, sku, bucket) DO UPDATE
                   SET available = stock.available + :n, loaded = stock.loaded + :n"""
            ),
            {"app": stored.app, "sku": sku, "n": loaded},
        )
    skipped = len(codes) - loaded
    await finish_request(
        conn, requests, stored.app, request_id, {"loaded": loaded, "skipped": skipped}
    )
    return loaded, skipped, False


async def available_in(conn: AsyncConnection, app: str, sku: str, bucket: str, item: Item) -> int:
    row = (
        await conn.execute(
            text("SELECT available FROM stock WHERE app = :app AND sku = :sku AND bucket = :b"),
            {"app": app, "sku": sku, "b": bucket},
        )
    ).one_or_none()
    if row is not None:
        return int(row.available)
    # A session bucket nobody has reserved from yet holds the item's per-session stock.
    return item.stock if bucket != PLAIN and item.stock is not None else 0


@dataclass(frozen=True)
class ItemView:
    item: Item
    sale: SaleState
    # None: unlimited.
    available: int | None
    usage: Usage | None


async def item_views(
    conn: AsyncConnection,
    stored: StoredProgram[Catalog],
    page: Sequence[Item],
    now: datetime,
    today: date,
    month_first: date,
    user_id: str | None,
) -> list[ItemView]:
    """Stock and sale status of ``page``, and the member's usage of each (two queries)."""
    zone = stored.program.zone
    sales = {item.sku: sale_state(item, now, zone) for item in page}
    finite = [item for item in page if not item.unlimited]
    left: dict[tuple[str, str], int] = {}
    if finite:
        rows = await conn.exec_driver_sql(
            """SELECT s.sku, s.bucket, s.available FROM stock s
               JOIN unnest(%(skus)s::text[], %(buckets)s::text[]) AS w(sku, bucket)
                 ON s.sku = w.sku AND s.bucket = w.bucket
               WHERE s.app = %(app)s""",
            {
                "app": stored.app,
                "skus": [i.sku for i in finite],
                "buckets": [sales[i.sku].bucket for i in finite],
            },
        )
        left = {(row.sku, row.bucket): int(row.available) for row in rows}
    usages: dict[str, Usage] = {}
    if user_id is not None:
        usages = await usage_by_sku(
            conn, stored.app, user_id, [i.sku for i in page], today, month_first, sales, now
        )
    views = []
    for item in page:
        sale = sales[item.sku]
        available: int | None = None
        if not item.unlimited:
            fallback = item.stock if sale.bucket != PLAIN and item.stock is not None else 0
            available = left.get((item.sku, sale.bucket), fallback)
        views.append(
            ItemView(item, sale, available, usages.get(item.sku, Usage()) if user_id else None)
        )
    return views


_USAGE = """
    SELECT r.sku,
      coalesce(sum(r.quantity) FILTER (WHERE r.local_day = %(today)s), 0) AS today,
      coalesce(sum(r.quantity) FILTER (WHERE r.local_day >= %(month_first)s), 0) AS month,
      coalesce(sum(r.quantity) FILTER (WHERE r.bucket <> '' AND r.bucket = w.bucket), 0)
        AS session,
      coalesce(sum(r.quantity), 0) AS lifetime
    FROM reservations r
    JOIN unnest(%(skus)s::text[], %(buckets)s::text[]) AS w(sku, bucket) ON r.sku = w.sku
    WHERE r.app = %(app)s AND r.user_id = %(user_id)s
      AND NOT r.prize AND NOT r.cancelled
      AND (r.state = 'CONFIRMED' OR (r.state = 'RESERVED' AND r.expires_at > %(now)s))
    GROUP BY r.sku
"""


async def usage_by_sku(
    conn: AsyncConnection,
    app: str,
    user_id: str,
    skus: Sequence[str],
    today: date,
    month_first: date,
    sales: Mapping[str, SaleState],
    now: datetime,
) -> dict[str, Usage]:
    """What the member holds of each item: live reservations and orders not cancelled."""
    rows = await conn.exec_driver_sql(
        _USAGE,
        {
            "app": app,
            "user_id": user_id,
            "skus": list(skus),
            "buckets": [sales[s].bucket if s in sales else "" for s in skus],
            "today": today,
            "month_first": month_first,
            "now": now,
        },
    )
    return {
        row.sku: Usage(int(row.today), int(row.month), int(row.session), int(row.lifetime))
        for row in rows
    }


async def stock_left(conn: AsyncConnection, app: str) -> list[tuple[str, str, int]]:
    """(sku, bucket, units left) of every stock bucket of the app's items on shelf."""
    rows = await conn.execute(
        text(
            """SELECT s.sku, s.bucket, s.available FROM stock s
               JOIN items i ON i.app = s.app AND i.sku = s.sku AND i.on_shelf
               WHERE s.app = :app"""
        ),
        {"app": app},
    )
    return [(row.sku, row.bucket, int(row.available)) for row in rows]
