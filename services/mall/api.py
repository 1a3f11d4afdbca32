"""gRPC API of the mall: checks the request, runs the store, maps the answer to protobuf.
Domain errors become statuses in plumbing.grpc_errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc

from plumbing.batch_calls import answer_batch, answer_by_saga, only, outcome_messages
from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument, LoyaltyError
from plumbing.programs import ServesAppClock, StoredProgram
from plumbing.server import Resources
from plumbing.validation import (
    check_address,
    optional_id,
    optional_text,
    require_id,
    require_positive,
)
from plumbing.wire import (
    decode_page_token,
    encode_page_token,
    keyset_page,
    page_size,
    parse_date_range,
    to_timestamp,
)
from services.mall.domain.program import Catalog, ItemKind, parse_mall
from services.mall.domain.sale import SaleStatus, limit_left, tier_allows
from services.mall.jobs import expire_reservations
from services.mall.service import Mall, Reservations
from services.mall.store import catalog as catalog_store
from services.mall.store.catalog import ItemView
from services.mall.store.gate import StockGate
from services.mall.store.orders import OrderView
from services.mall.store.programs import mall_programs
from services.mall.store.reservations import ReservationView, ReserveInput

DEFAULT_TTL = timedelta(minutes=15)
MAX_TTL = timedelta(days=1)
MAX_QUANTITY = 1000
MAX_CODES = 10_000

_KINDS = {
    ItemKind.COUPON: mall_pb2.COUPON,
    ItemKind.VIRTUAL: mall_pb2.VIRTUAL,
    ItemKind.PHYSICAL: mall_pb2.PHYSICAL,
    ItemKind.PRIVILEGE: mall_pb2.PRIVILEGE,
}
_SALE = {
    SaleStatus.UPCOMING: mall_pb2.UPCOMING,
    SaleStatus.ON_SALE: mall_pb2.ON_SALE,
    SaleStatus.ENDED: mall_pb2.ENDED,
    SaleStatus.SOLD_OUT: mall_pb2.SOLD_OUT,
    SaleStatus.OFF_SHELF: mall_pb2.OFF_SHELF,
}
_STATES = {
    "RESERVED": mall_pb2.RESERVED,
    "CONFIRMED": mall_pb2.CONFIRMED,
    "RELEASED": mall_pb2.RELEASED,
    "EXPIRED": mall_pb2.EXPIRED,
}
_ORDER_STATUS = {
    "PENDING": mall_pb2.PENDING,
    "FULFILLED": mall_pb2.FULFILLED,
    "SHIPPED": mall_pb2.SHIPPED,
    "CANCELLED": mall_pb2.CANCELLED,
    "REFUNDED": mall_pb2.REFUNDED,
}
_ORDER_STATUS_NAMES = {value: name for name, value in _ORDER_STATUS.items()}


def _item(view: ItemView, user_given: bool, tier: str | None, catalog: Catalog) -> mall_pb2.Item:
    item, sale = view.item, view.sale
    status = sale.status
    if status is SaleStatus.ON_SALE and view.available == 0:
        status = SaleStatus.SOLD_OUT
    reply = mall_pb2.Item(
        sku=item.sku,
        name=item.name,
        kind=_KINDS[item.kind],
        price_points=item.price_points,
        unlimited=item.unlimited,
        available=view.available or 0,
        min_tier=item.min_tier,
        sale_status=_SALE[status],
        next_session_start=to_timestamp(sale.next_session_start),
        requires_address=item.requires_address,
        limit_left=-1,
    )
    if user_given or tier is not None:
        left = limit_left(item.limits, view.usage) if view.usage is not None else None
        reply.limit_left = -1 if left is None else left
        reason = ""
        if status is SaleStatus.SOLD_OUT:
            reason = "OUT_OF_STOCK"
        elif status is not SaleStatus.ON_SALE:
            reason = "NOT_ON_SALE"
        elif tier is not None and not tier_allows(catalog, item, tier):
            reason = "TIER_TOO_LOW"
        elif left == 0:
            reason = "LIMIT_EXCEEDED"
        reply.eligible = reason == ""
        reply.ineligible_reason = reason
    return reply


def _reservation(view: ReservationView) -> mall_pb2.Reservation:
    return mall_pb2.Reservation(
        saga_id=view.saga_id,
        sku=view.sku,
        quantity=view.quantity,
        state=_STATES[view.state],
        price_points=view.price_points,
        expires_at=to_timestamp(view.expires_at),
    )


def _order(view: OrderView) -> mall_pb2.Order:
    return mall_pb2.Order(
        order_id=view.order_id,
        saga_id=view.saga_id,
        user_id=view.user_id,
        sku=view.sku,
        quantity=view.quantity,
        price_points=view.price_points,
        status=_ORDER_STATUS[view.status],
        coupon_code=view.coupon_codes[0] if view.coupon_codes else "",
        coupon_codes=view.coupon_codes,
        address=mall_pb2.Address(**view.address) if view.address else None,
        carrier=view.carrier,
        tracking_number=view.tracking_number,
        created_at=to_timestamp(view.created_at),
        history=[
            mall_pb2.OrderTransition(
                status=_ORDER_STATUS[t.status], actor=t.actor, note=t.note, at=to_timestamp(t.at)
            )
            for t in view.history
        ],
    )


def _reservation_outcomes(
    outcomes: Sequence[ReservationView | LoyaltyError],
) -> mall_pb2.ReserveBatchResponse:
    return mall_pb2.ReserveBatchResponse(
        results=outcome_messages(mall_pb2.ReservationOutcome, "reservation", _reservation, outcomes)
    )


class MallServicer(ServesAppClock, mall_pb2_grpc.MallServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.programs = mall_programs(resources)
        self.gate = StockGate(resources.redis)
        self.reservations = Reservations(resources.engine, self.gate)
        self.mall = Mall(resources.engine, self.gate, self.programs)

    async def _program(self, app: str) -> StoredProgram[Catalog]:
        require_id("app", app)
        return await self.programs.get(app)

    # --- catalog -------------------------------------------------------------------------

    async def UpsertItems(
        self, request: mall_pb2.UpsertItemsRequest, context: Any
    ) -> common_pb2.ConfigureResult:
        return await configure_section(
            request.app,
            request.section_json,
            request.validate_only,
            parse_mall,
            self.mall.store_catalog,
            self.mall.check_catalog,
        )

    async def _item_view(self, stored: StoredProgram[Catalog], sku: str) -> mall_pb2.Item:
        [view] = await self.mall.item_views(stored, [catalog_store.item_of(stored, sku)], None)
        return _item(view, False, None, stored.program)

    async def AddStock(self, request: mall_pb2.AddStockRequest, context: Any) -> mall_pb2.Item:
        stored = await self._program(request.app)
        request_id = require_id("request_id", request.request_id)
        sku = require_id("sku", request.sku)
        quantity = require_positive("quantity", request.quantity, maximum=10**9)
        await self.mall.add_stock(stored, request_id, sku, quantity)
        return await self._item_view(stored, sku)

    async def LoadCodes(
        self, request: mall_pb2.LoadCodesRequest, context: Any
    ) -> mall_pb2.LoadCodesResponse:
        stored = await self._program(request.app)
        request_id = require_id("request_id", request.request_id)
        sku = require_id("sku", request.sku)
        if not request.codes:
            raise InvalidArgument("codes", "is required")
        if len(request.codes) > MAX_CODES:
            raise InvalidArgument("codes", f"at most {MAX_CODES} codes per call")
        codes = [require_id(f"codes[{i}]", code) for i, code in enumerate(request.codes)]
        loaded, skipped = await self.mall.load_codes(stored, request_id, sku, codes)
        return mall_pb2.LoadCodesResponse(loaded=loaded, duplicates_skipped=skipped)

    async def ListItems(
        self, request: mall_pb2.ListItemsRequest, context: Any
    ) -> mall_pb2.ListItemsResponse:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id) if request.user_id else None
        tier = optional_id("tier", request.tier) if request.tier else None
        if user_id is not None and tier is None:
            tier = ""
        size = page_size(request.page_size)
        offset = (decode_page_token(request.page_token) or 1) - 1
        listed = list(stored.program.items.values())
        views = await self.mall.item_views(stored, listed[offset : offset + size], user_id)
        more = offset + size < len(listed)
        return mall_pb2.ListItemsResponse(
            items=[_item(v, user_id is not None, tier, stored.program) for v in views],
            next_page_token=encode_page_token(offset + size + 1) if more else "",
        )

    # --- two-phase reservation -----------------------------------------------------------

    @staticmethod
    def _reserve_input(request: mall_pb2.ReserveRequest) -> ReserveInput:
        ttl = DEFAULT_TTL
        if request.HasField("ttl"):
            ttl = request.ttl.ToTimedelta()
            if ttl <= timedelta(0) or ttl > MAX_TTL:
                raise InvalidArgument("ttl", "must be more than 0 and at most a day")
        return ReserveInput(
            saga_id=require_id("saga_id", request.saga_id),
            user_id=require_id("user_id", request.user_id),
            sku=require_id("sku", request.sku),
            quantity=require_positive("quantity", request.quantity, maximum=MAX_QUANTITY),
            tier=optional_id("tier", request.tier),
            address=check_address(request),
            ttl=ttl,
            prize=request.prize,
        )

    async def _reserves(
        self, requests: Sequence[mall_pb2.ReserveRequest]
    ) -> list[ReservationView | LoyaltyError]:
        async def run(app: str, items: list[ReserveInput]) -> list[ReservationView | LoyaltyError]:
            stored = await self._program(app)
            return await self.reservations.reserve_many(stored, self.programs.now(stored), items)

        return await answer_batch(requests, self._reserve_input, lambda r: r.saga_id, run)

    async def _confirms(
        self, requests: Sequence[mall_pb2.ConfirmRequest]
    ) -> list[OrderView | LoyaltyError]:
        async def run(app: str, saga_ids: list[str]) -> list[OrderView | LoyaltyError]:
            stored = await self._program(app)
            return await self.reservations.confirm_many(stored, self.programs.now(stored), saga_ids)

        return await answer_by_saga(requests, run)

    async def _releases(
        self, requests: Sequence[mall_pb2.ReleaseRequest]
    ) -> list[ReservationView | LoyaltyError]:
        async def run(app: str, saga_ids: list[str]) -> list[ReservationView | LoyaltyError]:
            stored = await self._program(app)
            return await self.reservations.release_many(stored, self.programs.now(stored), saga_ids)

        return await answer_by_saga(requests, run)

    async def Reserve(self, request: mall_pb2.ReserveRequest, context: Any) -> mall_pb2.Reservation:
        return _reservation(only(await self._reserves([request])))

    async def Confirm(self, request: mall_pb2.ConfirmRequest, context: Any) -> mall_pb2.Order:
        return _order(only(await self._confirms([request])))

    async def Release(self, request: mall_pb2.ReleaseRequest, context: Any) -> mall_pb2.Reservation:
        return _reservation(only(await self._releases([request])))

    async def ReserveBatch(
        self, request: mall_pb2.ReserveBatchRequest, context: Any
    ) -> mall_pb2.ReserveBatchResponse:
        return _reservation_outcomes(await self._reserves(request.requests))

    async def ReleaseBatch(
        self, request: mall_pb2.ReleaseBatchRequest, context: Any
    ) -> mall_pb2.ReserveBatchResponse:
        return _reservation_outcomes(await self._releases(request.requests))

    async def ConfirmBatch(
        self, request: mall_pb2.ConfirmBatchRequest, context: Any
    ) -> mall_pb2.ConfirmBatchResponse:
        return mall_pb2.ConfirmBatchResponse(
            results=outcome_messages(
                mall_pb2.OrderOutcome, "order", _order, await self._confirms(request.requests)
            )
        )

    # --- orders --------------------------------------------------------------------------

    async def GetOrder(self, request: mall_pb2.GetOrderRequest, context: Any) -> mall_pb2.Order:
        stored = await self._program(request.app)
        order_id = require_id("order_id", request.order_id)
        return _order(await self.mall.order(stored.app, order_id))

    async def ListOrders(
        self, request: mall_pb2.ListOrdersRequest, context: Any
    ) -> mall_pb2.ListOrdersResponse:
        stored = await self._program(request.app)
        user_id = require_id("user_id", request.user_id) if request.user_id else None
        status = None
        if request.status:
            status = _ORDER_STATUS_NAMES.get(request.status)
            if status is None:
                raise InvalidArgument("status", "is not an order status")
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        rows = await self.mall.orders(stored.app, user_id, status, before, size + 1)
        page, token = keyset_page(rows, size, lambda row: row.seq)
        return mall_pb2.ListOrdersResponse(
            orders=[_order(o) for o in page],
            next_page_token=token,
        )

    async def MarkShipped(
        self, request: mall_pb2.MarkShippedRequest, context: Any
    ) -> mall_pb2.Order:
        stored = await self._program(request.app)
        order_id = require_id("order_id", request.order_id)
        carrier = require_id("carrier", request.carrier)
        tracking = require_id("tracking_number", request.tracking_number)
        operator = require_id("operator", request.operator)
        order = await self.mall.mark_shipped(stored, order_id, carrier, tracking, operator)
        return _order(order)

    async def MarkFulfilled(
        self, request: mall_pb2.MarkFulfilledRequest, context: Any
    ) -> mall_pb2.Order:
        stored = await self._program(request.app)
        order_id = require_id("order_id", request.order_id)
        operator = require_id("operator", request.operator)
        note = optional_text("note", request.note)
        order = await self.mall.mark_fulfilled(stored, order_id, operator, note)
        return _order(order)

    async def CancelOrder(
        self, request: mall_pb2.CancelOrderRequest, context: Any
    ) -> mall_pb2.Order:
        stored = await self._program(request.app)
        order_id = require_id("order_id", request.order_id)
        operator = require_id("operator", request.operator)
        reason = require_id("reason", request.reason, max_length=1024)
        return _order(await self.mall.cancel_order(stored, order_id, operator, reason))

    # --- sandbox test clock --------------------------------------------------------------

    async def AdvanceClock(
        self, request: common_pb2.AdvanceClockRequest, context: Any
    ) -> common_pb2.AdvanceClockResponse:
        """Moves the app's clock, then expires the reservations that fell due, so the caller
        sees their stock back as soon as this returns. A retried request_id moves it once."""
        stored = await self.programs.advance_from(request)
        await expire_reservations(self.reservations, self.programs, only=stored.app)
        return self.programs.clock_answer(stored)

    # --- stats ---------------------------------------------------------------------------

    async def GetItemStats(
        self, request: mall_pb2.GetItemStatsRequest, context: Any
    ) -> mall_pb2.GetItemStatsResponse:
        stored = await self._program(request.app)
        sku = require_id("sku", request.sku) if request.sku else None
        first, last = parse_date_range(request.from_date, request.to_date)
        zone = stored.program.zone
        since = datetime.combine(first, datetime.min.time(), tzinfo=zone)
        until = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        days = await self.mall.item_stats(stored, sku, first, last, since, until)
        return mall_pb2.GetItemStatsResponse(
            days=[
                mall_pb2.ItemDayStats(
                    sku=d.sku,
                    date=d.day.isoformat(),
                    reserved=d.reserved,
                    confirmed=d.confirmed,
                    released=d.released,
                    expired=d.expired,
                    cancelled=d.cancelled,
                )
                for d in days
            ]
        )
