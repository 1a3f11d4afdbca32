"""The mall's use cases: each opens its transaction, calls the pure domain (``domain/sale.py``,
``domain/program.py``) and the stores, and keeps the Redis stock gate in step with what was
committed. ``api.py`` checks the request, calls one of these and maps the answer to protobuf;
the stores take a connection and never open a transaction.

``Reservations`` is the two-phase flow the sagas drive (Reserve, Confirm, Release, and the
expiry of reservations past their TTL); ``Mall`` is the catalog, stock, codes and orders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plumbing.errors import LoyaltyError
from plumbing.programs import ProgramStore, StoredProgram
from services.mall.domain.errors import OutOfStock
from services.mall.domain.program import Catalog, Item, ItemKind
from services.mall.store import catalog as catalog_store
from services.mall.store import gate as gates
from services.mall.store import orders as order_store
from services.mall.store import reservations as rows
from services.mall.store import stats
from services.mall.store.catalog import available_in, item_views
from services.mall.store.orders import OrderView
from services.mall.store.reservations import ReservationView, ReserveInput


class Reservations:
    def __init__(self, engine: AsyncEngine, gate: gates.StockGate) -> None:
        self.engine = engine
        self.gate = gate

    async def reserve_many(
        self, stored: StoredProgram[Catalog], now: datetime, requests: Sequence[ReserveInput]
    ) -> list[ReservationView | LoyaltyError]:
        """Reserves for several sagas (distinct saga ids) in one transaction; each answered as
        it would be alone. Sold-out items are answered from Redis (no database row touched);
        the rest are taken in (sku, user, saga) order, each in a savepoint, so a refused one
        leaves nothing and its neighbours still commit."""
        outcomes: dict[int, ReservationView | LoyaltyError] = {}
        pending: list[rows.Pending] = []
        for n, request in enumerate(requests):
            try:
                item, sale = rows.check_sale(stored, now, request)
            except LoyaltyError as error:
                outcomes[n] = error
                continue
            pending.append(rows.Pending(n, request, item, sale))
        await self._admit(stored, pending, outcomes)
        admitted = [p for p in pending if p.n not in outcomes]
        left: dict[int, int | None] = {}
        try:
            async with self.engine.begin() as conn:
                rest = await rows.reserve_set(conn, stored, now, admitted, outcomes, left)
                await rows.lock_members(conn, stored.app, rest)
                for p in sorted(rest, key=lambda p: (p.item.sku, p.request.user_id, p.n)):
                    try:
                        async with conn.begin_nested():
                            outcomes[p.n], left[p.n] = await rows.reserve_one(
                                conn, stored, now, p.item, p.sale, p.request
                            )
                    except LoyaltyError as error:
                        outcomes[p.n] = error
        except BaseException:
            await self._give_back(stored.app, [p for p in admitted if p.took])
            raise
        # Units the gate let through that were not reserved now (refused, or a replay).
        await self._give_back(stored.app, [p for p in admitted if p.took and left.get(p.n) is None])
        fresh = [p for p in admitted if left.get(p.n) is not None]
        await self.gate.reserved_many(
            stored.app,
            [
                (p.request.saga_id, int(p.request.ttl.total_seconds()))
                for p in fresh
                if not p.item.unlimited
            ],
        )
        for p in fresh:
            if p.admitted == gates.UNKNOWN and not p.item.unlimited:
                await self.gate.seed(stored.app, p.item.sku, p.sale.bucket, left[p.n] or 0)
        return [outcomes[n] for n in range(len(requests))]

    async def _admit(
        self,
        stored: StoredProgram[Catalog],
        pending: list[rows.Pending],
        outcomes: dict[int, ReservationView | LoyaltyError],
    ) -> None:
        """The Redis gate for the batch (one round trip): a sold-out item is refused here."""
        gated = [p for p in pending if not p.item.unlimited]
        marks = await self.gate.admit_many(
            stored.app,
            [(p.item.sku, p.sale.bucket, p.request.saga_id, p.request.quantity) for p in gated],
        )
        for p, admitted in zip(gated, marks, strict=True):
            if admitted == gates.UNKNOWN:
                # No counter yet (or Redis lost it): seed it from Postgres first, so the
                # first wave of a sale is already filtered.
                await self.gate.seed(
                    stored.app,
                    p.item.sku,
                    p.sale.bucket,
                    await self._left(stored.app, p.item, p.sale.bucket),
                )
                admitted = await self.gate.admit(
                    stored.app, p.item.sku, p.sale.bucket, p.request.saga_id, p.request.quantity
                )
            p.admitted = admitted
            if admitted == gates.SOLD_OUT:
                outcomes[p.n] = OutOfStock(f"{p.item.sku!r} is sold out")

    async def _give_back(self, app: str, taken: Sequence[rows.Pending]) -> None:
        await self.gate.give_back_many(
            app, [(p.item.sku, p.sale.bucket, p.request.quantity) for p in taken]
        )

    async def _left(self, app: str, item: Item, bucket: str) -> int:
        async with self.engine.connect() as conn:
            return await available_in(conn, app, item.sku, bucket, item)

    async def reconcile_gate(self, app: str) -> int:
        """Quiet gate counters that disagree with what Postgres says is left are corrected."""
        async with self.engine.connect() as conn:
            left = await catalog_store.stock_left(conn, app)
        return await self.gate.reconcile(app, left)

    async def confirm_many(
        self, stored: StoredProgram[Catalog], now: datetime, saga_ids: Sequence[str]
    ) -> list[OrderView | LoyaltyError]:
        """Turns reservations (distinct saga ids) into orders in one transaction; units of a
        reservation found expired go back to the gate after the commit."""
        async with self.engine.begin() as conn:
            outcomes, expired = await rows.confirm_rows(conn, stored, now, saga_ids)
        await self.gate.give_back_many(
            stored.app, [(row.sku, row.bucket, int(row.quantity)) for row in expired]
        )
        return [outcomes[saga_id] for saga_id in saga_ids]

    async def release_many(
        self, stored: StoredProgram[Catalog], now: datetime, saga_ids: Sequence[str]
    ) -> list[ReservationView | LoyaltyError]:
        """Returns the stock of reservations (distinct saga ids) in one transaction, then the
        units to the gate."""
        async with self.engine.begin() as conn:
            outcomes, released = await rows.release_rows(conn, stored.app, now, saga_ids)
        await self.gate.give_back_many(
            stored.app, [(row.sku, row.bucket, int(row.quantity)) for row in released]
        )
        return [outcomes[saga_id] for saga_id in saga_ids]

    async def expire_due(self, stored: StoredProgram[Catalog], now: datetime, limit: int) -> int:
        """Expires up to ``limit`` reservations past their TTL in one transaction, then their
        units go back to the gate."""
        async with self.engine.begin() as conn:
            due = await rows.expire_rows(conn, stored.app, now, limit)
        for row in due:
            await self.gate.give_back(stored.app, row.sku, row.bucket, int(row.quantity))
        return len(due)


class Mall:
    def __init__(
        self, engine: AsyncEngine, gate: gates.StockGate, programs: ProgramStore[Catalog]
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.programs = programs

    async def store_catalog(self, app: str, section: dict[str, Any], catalog: Catalog) -> int:
        """Items and stock follow the catalog in the transaction that stores it; stock already
        sold refuses a lower `stock` with the item's path, and then nothing is written."""
        now = self.programs.service_now()
        gained: dict[str, int] = {}

        async def sync(conn: AsyncConnection) -> None:
            gained.update(await catalog_store.sync_catalog(conn, app, catalog, now))

        version = await self.programs.store(app, section, before=sync)
        # Committed: units the program added reach the gate at once (a sold-out counter would
        # otherwise keep refusing them until the reconcile job found the bucket quiet).
        for sku, units in gained.items():
            await self.gate.give_back(app, sku, "", units)
        return version

    async def check_catalog(self, app: str, catalog: Catalog) -> None:
        """validate_only: the same sync, rolled back."""
        async with self.engine.begin() as conn:
            await catalog_store.sync_catalog(conn, app, catalog, self.programs.service_now())
            await conn.rollback()

    async def item_views(
        self, stored: StoredProgram[Catalog], items: list[Item], user_id: str | None
    ) -> list[catalog_store.ItemView]:
        """Items as of the app's time: stock left, and the member's own limits when given."""
        now = self.programs.now(stored)
        today = now.astimezone(stored.program.zone).date()
        async with self.engine.connect() as conn:
            return await item_views(conn, stored, items, now, today, today.replace(day=1), user_id)

    async def add_stock(
        self, stored: StoredProgram[Catalog], request_id: str, sku: str, quantity: int
    ) -> None:
        async with self.engine.begin() as conn:
            bucket, added = await catalog_store.add_stock(
                conn, stored, self.programs.now(stored), request_id, sku, quantity
            )
        if added:  # a replay added nothing, so the gate gets nothing
            await self.gate.give_back(stored.app, sku, bucket, quantity)

    async def load_codes(
        self, stored: StoredProgram[Catalog], request_id: str, sku: str, codes: list[str]
    ) -> tuple[int, int]:
        """(codes loaded, duplicates skipped); a replay loads nothing again."""
        async with self.engine.begin() as conn:
            loaded, skipped, replayed = await catalog_store.load_codes(
                conn, stored, self.programs.now(stored), request_id, sku, codes
            )
        if not replayed:
            await self.gate.give_back(stored.app, sku, "", loaded)
        return loaded, skipped

    async def order(self, app: str, order_id: str) -> OrderView:
        async with self.engine.connect() as conn:
            return await order_store.get_order(conn, app, order_id)

    async def orders(
        self, app: str, user_id: str | None, status: str | None, before: int | None, limit: int
    ) -> list[OrderView]:
        async with self.engine.connect() as conn:
            return await order_store.list_orders(conn, app, user_id, status, before, limit)

    async def mark_shipped(
        self,
        stored: StoredProgram[Catalog],
        order_id: str,
        carrier: str,
        tracking: str,
        operator: str,
    ) -> OrderView:
        """A pending physical order shipped, with its carrier and tracking number."""
        return await self._advance(
            stored,
            order_id,
            order_store.SHIPPED,
            operator,
            f"{carrier} {tracking}",
            kinds=(ItemKind.PHYSICAL.value,),
            fields={"carrier": carrier, "tracking_number": tracking},
        )

    async def mark_fulfilled(
        self, stored: StoredProgram[Catalog], order_id: str, operator: str, note: str
    ) -> OrderView:
        """A pending virtual, privilege or coupon order fulfilled."""
        kinds = (ItemKind.VIRTUAL.value, ItemKind.PRIVILEGE.value, ItemKind.COUPON.value)
        return await self._advance(
            stored, order_id, order_store.FULFILLED, operator, note, kinds=kinds
        )

    async def _advance(
        self,
        stored: StoredProgram[Catalog],
        order_id: str,
        to: str,
        operator: str,
        note: str,
        *,
        kinds: tuple[str, ...],
        fields: dict[str, str] | None = None,
    ) -> OrderView:
        async with self.engine.begin() as conn:
            order, _ = await order_store.transition(
                conn,
                stored.app,
                order_id,
                to,
                operator,
                note,
                self.programs.now(stored),
                allowed_from=(order_store.PENDING,),
                kinds=kinds,
                fields=fields,
            )
        return order

    async def cancel_order(
        self, stored: StoredProgram[Catalog], order_id: str, operator: str, reason: str
    ) -> OrderView:
        """Cancels a pending order; its units go back to stock and to the gate."""
        async with self.engine.begin() as conn:
            order, bucket = await order_store.cancel_order(
                conn, stored.app, order_id, operator, reason, self.programs.now(stored)
            )
        if order.status == order_store.CANCELLED:
            await self.gate.give_back(stored.app, order.sku, bucket, order.quantity)
        return order

    async def item_stats(
        self,
        stored: StoredProgram[Catalog],
        sku: str | None,
        first: date,
        last: date,
        since: datetime,
        until: datetime,
    ) -> list[Any]:
        async with self.engine.connect() as conn:
            return await stats.item_days(
                conn, stored.app, stored.program.timezone, sku, first, last, since, until
            )
