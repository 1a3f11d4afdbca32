"""The mall over gRPC against real Postgres and Redis: catalog, reservations and their
barriers, the reaper, the flash sale (2,000 buyers, 100 units; Redis flushed mid-sale), orders,
limits, tiers, addresses, codes, stats and bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from loyalty.common.v1 import common_pb2
from loyalty.mall.v1 import mall_pb2 as pb
from sqlalchemy import make_url

from plumbing.db import create_engine
from plumbing.grpc_errors import reason_of, rich_status
from services.mall.store.gate import StockGate, stock_key
from services.mall.store.invariants import check_mall
from tests.integration.app_time import local_day, park
from tests.integration.waiting import wait_for
from tests.programs import mall_section

if TYPE_CHECKING:
    from loyalty.mall.v1.mall_pb2_grpc import MallServiceAsyncStub as MallStub

SHANGHAI = ZoneInfo("Asia/Shanghai")
ADDRESS = pb.Address(name="Li Lei", phone="13800000000", line1="1 Road", city="Shanghai")


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def open_session_now() -> dict[str, Any]:
    """A weekly session that opened two minutes ago (local), for tests that need one open."""
    start = datetime.now(SHANGHAI) - timedelta(minutes=2)
    day = start.strftime("%A").lower()
    return {"weekly": {"day": day, "at": start.strftime("%H:%M"), "minutes": 60}}


def section_with(*extra: dict[str, Any]) -> dict[str, Any]:
    section = mall_section()
    section["mall"]["items"].extend(extra)
    return section


async def configure(mall: MallStub, section: dict[str, Any] | None = None) -> str:
    app = new_id("app-")
    reply = await mall.UpsertItems(
        pb.UpsertItemsRequest(app=app, section_json=json.dumps(section or mall_section()))
    )
    assert reply.version == 1, reply.errors
    return app


@pytest.fixture
async def mall(stubs):
    return stubs.mall


@pytest.fixture
async def app(mall) -> str:
    return await configure(mall)


async def reserve(
    mall: MallStub,
    app: str,
    sku: str,
    *,
    user: str | None = None,
    saga: str | None = None,
    quantity: int = 1,
    tier: str = "star",
    address: pb.Address | None = None,
    ttl: int | None = None,
) -> pb.Reservation:
    return await mall.Reserve(
        pb.ReserveRequest(
            app=app,
            saga_id=saga or new_id("saga-"),
            user_id=user or new_id("u-"),
            sku=sku,
            quantity=quantity,
            tier=tier,
            address=address,
            ttl=Duration(seconds=ttl) if ttl else None,
        )
    )


async def refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), reason_of(caught.value)


async def field_of(call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    status = rich_status(caught.value)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    return ""


def query(suite: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    url = make_url(suite.database_url("mall")).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return conn.execute(sql, params).fetchall()


async def assert_invariants(suite: Any, app: str) -> None:
    engine = create_engine(suite.database_url("mall"), pool_size=1)
    try:
        async with engine.connect() as conn:
            assert await check_mall(conn, app) == []
    finally:
        await engine.dispose()


def stock_of(suite: Any, app: str, sku: str) -> tuple[int, int]:
    [(available, loaded)] = query(
        suite, "SELECT sum(available), sum(loaded) FROM stock WHERE app = %s AND sku = %s", app, sku
    )
    return int(available), int(loaded)


# --- catalog -------------------------------------------------------------------------------


async def test_the_example_catalog_is_listed_with_sale_status(mall, app):
    listed = await mall.ListItems(pb.ListItemsRequest(app=app, page_size=3))
    assert [i.sku for i in listed.items] == [
        "ticket-wolf-warrior-2",
        "vip-1-month",
        "mobile-data-1g",
    ]
    ticket = listed.items[0]
    assert (ticket.kind, ticket.price_points, ticket.available) == (pb.COUPON, 500, 1000)
    assert ticket.sale_status == pb.ON_SALE
    assert listed.items[1].unlimited
    rest = await mall.ListItems(pb.ListItemsRequest(app=app, page_token=listed.next_page_token))
    assert [i.sku for i in rest.items] == ["phone-flagship", "wednesday-flash"]
    assert rest.next_page_token == ""
    flash = rest.items[1]
    assert flash.sale_status in (pb.UPCOMING, pb.ON_SALE)
    assert (
        flash.next_session_start.ToDatetime(tzinfo=UTC).astimezone(SHANGHAI).strftime("%A %H:%M")
        == "Wednesday 12:00"
    )
    again = await mall.UpsertItems(
        pb.UpsertItemsRequest(app=app, section_json=json.dumps(mall_section()))
    )
    assert again.version == 1


async def test_for_a_member_each_item_says_whether_and_why_not(mall, app):
    await reserve(mall, app, "mobile-data-1g", user="m1", tier="rookie")
    listed = await mall.ListItems(pb.ListItemsRequest(app=app, user_id="m1", tier="rookie"))
    by_sku = {i.sku: i for i in listed.items}
    assert (
        by_sku["ticket-wolf-warrior-2"].eligible,
        by_sku["ticket-wolf-warrior-2"].limit_left,
    ) == (
        True,
        1,
    )
    assert by_sku["vip-1-month"].ineligible_reason == "TIER_TOO_LOW"
    assert (by_sku["mobile-data-1g"].ineligible_reason, by_sku["mobile-data-1g"].limit_left) == (
        "LIMIT_EXCEEDED",
        0,
    )
    assert by_sku["phone-flagship"].ineligible_reason == "TIER_TOO_LOW"
    assert by_sku["ticket-wolf-warrior-2"].available == 1000
    assert by_sku["mobile-data-1g"].available == 4999


async def test_stock_follows_the_program_but_never_below_what_is_sold(mall, app, suite):
    for _ in range(3):
        await reserve(mall, app, "phone-flagship", address=ADDRESS)
    raised = mall_section()
    raised["mall"]["items"][3]["stock"] = 8
    assert (
        await mall.UpsertItems(pb.UpsertItemsRequest(app=app, section_json=json.dumps(raised)))
    ).version == 2
    assert stock_of(suite, app, "phone-flagship") == (5, 8)
    lowered = mall_section()
    lowered["mall"]["items"][3]["stock"] = 2
    reply = await mall.UpsertItems(
        pb.UpsertItemsRequest(app=app, section_json=json.dumps(lowered), validate_only=True)
    )
    assert list(reply.errors) == [
        "mall.items[3].stock: cannot go below the 3 units already sold or reserved"
    ]
    assert stock_of(suite, app, "phone-flagship") == (5, 8)
    # Refused for real: nothing of it is written, not even another item's raise.
    lowered["mall"]["items"][2]["stock"] = 6000
    assert (
        await field_of(
            mall.UpsertItems(pb.UpsertItemsRequest(app=app, section_json=json.dumps(lowered)))
        )
        == "section_json"
    )
    assert stock_of(suite, app, "phone-flagship") == (5, 8)
    assert stock_of(suite, app, "mobile-data-1g") == (5000, 5000)
    assert query(suite, "SELECT version FROM apps WHERE app = %s", app) == [(2,)]
    # Off shelf: the item leaves the catalog, its row (and its orders) stay.
    gone = mall_section()
    gone["mall"]["items"] = gone["mall"]["items"][:3]
    await mall.UpsertItems(pb.UpsertItemsRequest(app=app, section_json=json.dumps(gone)))
    assert await refused(reserve(mall, app, "phone-flagship", address=ADDRESS)) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_SKU",
    )
    assert query(
        suite, "SELECT on_shelf FROM items WHERE app = %s AND sku = %s", app, "phone-flagship"
    ) == [(False,)]


async def test_add_stock_once_per_request(mall, app, suite):
    add = pb.AddStockRequest(app=app, request_id="r1", sku="phone-flagship", quantity=10)
    assert (await mall.AddStock(add)).available == 15
    assert (await mall.AddStock(add)).available == 15
    assert (
        await field_of(
            mall.AddStock(
                pb.AddStockRequest(app=app, request_id="r2", sku="vip-1-month", quantity=1)
            )
        )
        == "sku"
    )


# --- the barrier ---------------------------------------------------------------------------


async def test_reserve_confirm_issues_a_code_once(mall, app, suite):
    held = await reserve(mall, app, "ticket-wolf-warrior-2", saga="s1", user="u1", ttl=600)
    assert (held.state, held.price_points) == (pb.RESERVED, 500)
    order = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="s1"))
    assert order.status == pb.FULFILLED
    assert len(order.coupon_code) == 14
    assert [h.status for h in order.history] == [pb.PENDING, pb.FULFILLED]
    again = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="s1"))
    assert (again.order_id, again.coupon_code) == (order.order_id, order.coupon_code)
    # Replays of the reserve answer as the first did; another payload is refused.
    replay = await reserve(mall, app, "ticket-wolf-warrior-2", saga="s1", user="u1")
    assert replay.saga_id == "s1"
    assert await refused(reserve(mall, app, "mobile-data-1g", saga="s1", user="u1")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await refused(mall.Release(pb.ReleaseRequest(app=app, saga_id="s1"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_CONFIRMED",
    )
    assert stock_of(suite, app, "ticket-wolf-warrior-2") == (999, 1000)


async def test_a_release_before_its_reserve_bars_the_reserve(mall, app, suite):
    early = await mall.Release(pb.ReleaseRequest(app=app, saga_id="s-late"))
    assert (early.state, early.quantity) == (pb.RELEASED, 0)
    assert (await mall.Release(pb.ReleaseRequest(app=app, saga_id="s-late"))).state == pb.RELEASED
    assert await refused(reserve(mall, app, "phone-flagship", saga="s-late", address=ADDRESS)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_RELEASED",
    )
    assert stock_of(suite, app, "phone-flagship") == (5, 5)


async def test_reserve_and_release_racing_leave_nothing_held(mall, app, suite):
    """Whichever arrives first, a saga whose Release races its Reserve ends released: no unit
    stays held, and the accounting is exact."""

    async def race(saga: str) -> None:
        await asyncio.gather(
            reserve(mall, app, "mobile-data-1g", saga=saga, user=saga),
            mall.Release(pb.ReleaseRequest(app=app, saga_id=saga)),
            return_exceptions=True,
        )
        # The saga's compensation is retried until it sticks, as the gateway does.
        assert (await mall.Release(pb.ReleaseRequest(app=app, saga_id=saga))).state in (
            pb.RELEASED,
            pb.EXPIRED,
        )

    await asyncio.gather(*(race(f"race-{i}") for i in range(40)))
    assert stock_of(suite, app, "mobile-data-1g") == (5000, 5000)
    assert query(
        suite,
        "SELECT count(*) FROM reservations WHERE app = %s AND state = 'RESERVED'",
        app,
    ) == [(0,)]
    await assert_invariants(suite, app)


async def test_release_returns_stock_once_and_confirm_after_release_fails(mall, app, suite):
    await reserve(mall, app, "phone-flagship", saga="s2", address=ADDRESS, quantity=1)
    assert stock_of(suite, app, "phone-flagship") == (4, 5)
    first = await mall.Release(pb.ReleaseRequest(app=app, saga_id="s2"))
    second = await mall.Release(pb.ReleaseRequest(app=app, saga_id="s2"))
    assert first.state == second.state == pb.RELEASED
    assert stock_of(suite, app, "phone-flagship") == (5, 5)
    assert await refused(mall.Confirm(pb.ConfirmRequest(app=app, saga_id="s2"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_RELEASED",
    )
    assert await refused(mall.Confirm(pb.ConfirmRequest(app=app, saga_id="nope"))) == (
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
    )


async def test_the_reaper_expires_a_reservation_and_credits_the_gate(mall, app, suite):
    """The mall's own reaper (a background job of the real process, every second) expires a
    reservation past its TTL: the stock comes back in Postgres and in the Redis gate, so every
    unit sells again, and the saga can no longer confirm."""
    await reserve(mall, app, "phone-flagship", saga="s3", address=ADDRESS, ttl=1)
    assert stock_of(suite, app, "phone-flagship") == (4, 5)

    async def state() -> int:
        return int((await mall.Release(pb.ReleaseRequest(app=app, saga_id="s3"))).state)

    # Release answers what the reservation is now, changing nothing once it has ended; before
    # it ends, a release would end it itself, so wait on the stock first.
    await wait_for(lambda: _stock(suite, app), lambda stock: stock == (5, 5))
    assert await state() == pb.EXPIRED
    assert await refused(mall.Confirm(pb.ConfirmRequest(app=app, saga_id="s3"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_EXPIRED",
    )
    # The gate was credited: all five units reserve again, the sixth is refused.
    for n in range(5):
        await reserve(mall, app, "phone-flagship", saga=f"again-{n}", address=ADDRESS)
    assert await refused(reserve(mall, app, "phone-flagship", address=ADDRESS)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUT_OF_STOCK",
    )


async def _stock(suite: Any, app: str) -> tuple[int, int]:
    return stock_of(suite, app, "phone-flagship")


async def test_a_sandbox_clock_expires_reservations(mall, app, suite):
    await reserve(mall, app, "phone-flagship", saga="s4", address=ADDRESS, ttl=600)
    await mall.AdvanceClock(common_pb2.AdvanceClockRequest(app=app, seconds=601, request_id="c"))
    assert stock_of(suite, app, "phone-flagship") == (5, 5)
    assert await refused(mall.Confirm(pb.ConfirmRequest(app=app, saga_id="s4"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_EXPIRED",
    )


# --- rules at reserve time -----------------------------------------------------------------


async def test_tier_address_limit_and_sale_are_checked(mall, suite):
    app = await configure(
        mall,
        section_with(
            {
                "sku": "flash-now",
                "kind": "coupon",
                "price_points": 100,
                "stock": 3,
                "per_user": {"per_session": 1},
                "coupon_codes": "generate",
                "sessions": open_session_now(),
            },
            {
                "sku": "later",
                "kind": "virtual",
                "price_points": 1,
                "stock": 3,
                "sale_window": {"start": "2099-01-01T00:00"},
            },
        ),
    )
    assert await refused(reserve(mall, app, "vip-1-month", tier="rookie")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TIER_TOO_LOW",
    )
    assert (await reserve(mall, app, "vip-1-month", tier="actor")).state == pb.RESERVED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reserve(mall, app, "phone-flagship", tier="star")
    assert (caught.value.code(), reason_of(caught.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ADDRESS_REQUIRED",
    )
    assert await refused(reserve(mall, app, "later")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_ON_SALE",
    )
    assert await refused(reserve(mall, app, "ghost")) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_SKU")
    # Per session: one each; a release gives the member their unit back.
    first = await reserve(mall, app, "flash-now", user="fan", saga="f1")
    assert first.state == pb.RESERVED
    assert await refused(reserve(mall, app, "flash-now", user="fan")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LIMIT_EXCEEDED",
    )
    await mall.Release(pb.ReleaseRequest(app=app, saga_id="f1"))
    assert (await reserve(mall, app, "flash-now", user="fan")).state == pb.RESERVED
    # Ten concurrent reserves by one member of a daily-1 item: exactly one.
    results = await asyncio.gather(
        *(reserve(mall, app, "ticket-wolf-warrior-2", user="greedy") for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, pb.Reservation) for r in results) == 1
    assert all(
        reason_of(r) == "LIMIT_EXCEEDED" for r in results if isinstance(r, grpc.aio.AioRpcError)
    )


# --- the flash sale ------------------------------------------------------------------------

HOT = {
    "sku": "hot",
    "kind": "coupon",
    "price_points": 100,
    "stock": 100,
    "coupon_codes": "generate",
}


async def sale(
    mall: MallStub, app: str, buyers: int, prefix: str = "hot"
) -> tuple[list[str], Counter[str]]:
    sagas = [f"{prefix}-{i}" for i in range(buyers)]

    async def buy(saga: str) -> str:
        try:
            await reserve(mall, app, "hot", saga=saga, user=f"buyer-{saga}", ttl=600)
            return "RESERVED"
        except grpc.aio.AioRpcError as error:
            return reason_of(error) or error.code().name

    outcomes = await asyncio.gather(*(buy(saga) for saga in sagas))
    won = [saga for saga, outcome in zip(sagas, outcomes, strict=True) if outcome == "RESERVED"]
    return won, Counter(outcomes)


async def test_a_flash_sale_of_100_units_to_2000_buyers_sells_exactly_100(mall, suite):
    app = await configure(mall, section_with(dict(HOT)))
    won, outcomes = await sale(mall, app, 2_000)
    assert outcomes == Counter({"RESERVED": 100, "OUT_OF_STOCK": 1_900})
    assert stock_of(suite, app, "hot") == (0, 100)
    live = query(
        suite, "SELECT count(*) FROM reservations WHERE app = %s AND state = 'RESERVED'", app
    )
    assert live == [(100,)]
    # Confirm half, release half: the accounting is exact and no code is issued twice.
    orders = await asyncio.gather(
        *(mall.Confirm(pb.ConfirmRequest(app=app, saga_id=s)) for s in won[:50])
    )
    await asyncio.gather(*(mall.Release(pb.ReleaseRequest(app=app, saga_id=s)) for s in won[50:]))
    assert len({o.coupon_code for o in orders}) == 50
    assert stock_of(suite, app, "hot") == (50, 100)
    [(confirmed, released)] = query(
        suite,
        """SELECT sum(quantity) FILTER (WHERE state = 'CONFIRMED'),
                  sum(quantity) FILTER (WHERE state = 'RELEASED')
           FROM reservations WHERE app = %s AND sku = 'hot'""",
        app,
    )
    assert (confirmed, released) == (50, 50)
    assert query(
        suite,
        "SELECT count(*), count(DISTINCT code) FROM codes WHERE app = %s AND state = 'issued'",
        app,
    ) == [(50, 50)]
    # The units released are on sale again.
    _, outcomes = await sale(mall, app, 120, prefix="second")
    assert outcomes["RESERVED"] == 50
    await assert_invariants(suite, app)


async def test_flushing_redis_mid_sale_oversells_nothing(mall, suite, infra):
    app = await configure(mall, section_with(dict(HOT)))
    client = aioredis.Redis.from_url(infra.redis_url)
    try:

        async def flush_soon() -> None:
            await asyncio.sleep(0.05)
            await client.flushdb()

        (_, outcomes), _ = await asyncio.gather(sale(mall, app, 1_000), flush_soon())
    finally:
        await client.aclose()
    assert outcomes["RESERVED"] == 100
    assert stock_of(suite, app, "hot") == (0, 100)
    assert query(
        suite,
        "SELECT sum(quantity) FROM reservations WHERE app = %s AND state = 'RESERVED'",
        app,
    ) == [(100,)]
    await assert_invariants(suite, app)


async def test_the_gate_corrects_only_quiet_buckets(infra):
    """A counter off from Postgres is corrected once it has been seen the same, with the same
    figure, two rounds running; a bucket in use between rounds is left alone, so a release
    crediting the counter mid-round is never overwritten by an older figure."""
    client = aioredis.Redis.from_url(infra.redis_url)
    gate, app = StockGate(client), new_id("gate-")
    key = stock_key(app, "hot", "")

    async def counter() -> int:
        value = await client.get(key)
        assert value is not None
        return int(value)

    try:
        await client.set(key, 7)  # three admissions leaked by a killed process
        assert await gate.reconcile(app, [("hot", "", 10)]) == 0  # first look
        assert await gate.reconcile(app, [("hot", "", 10)]) == 1  # quiet: corrected
        assert await counter() == 10
        # In use: a release credits the counter between the database read and the next round.
        assert await gate.reconcile(app, [("hot", "", 9)]) == 0
        await client.incrby(key, 1)
        assert await gate.reconcile(app, [("hot", "", 9)]) == 0
        assert await counter() == 11
    finally:
        await client.delete(key)
        await client.aclose()


# --- orders --------------------------------------------------------------------------------


async def test_orders_move_with_their_history(mall, app, suite):
    now = await park(mall, app)
    await reserve(mall, app, "phone-flagship", saga="p1", user="buyer", address=ADDRESS)
    phone = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="p1"))
    assert (phone.status, phone.address.city) == (pb.PENDING, "Shanghai")
    shipped = await mall.MarkShipped(
        pb.MarkShippedRequest(
            app=app, order_id=phone.order_id, carrier="SF", tracking_number="SF1", operator="ops"
        )
    )
    assert (shipped.status, shipped.carrier, shipped.tracking_number) == (pb.SHIPPED, "SF", "SF1")
    assert [(h.status, h.actor) for h in shipped.history] == [
        (pb.PENDING, "saga"),
        (pb.SHIPPED, "ops"),
    ]
    assert await refused(
        mall.CancelOrder(
            pb.CancelOrderRequest(app=app, order_id=phone.order_id, operator="ops", reason="x")
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_ORDER_TRANSITION")

    await reserve(mall, app, "mobile-data-1g", saga="d1", user="buyer")
    data = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="d1"))
    assert data.status == pb.PENDING
    done = await mall.MarkFulfilled(
        pb.MarkFulfilledRequest(app=app, order_id=data.order_id, operator="ops", note="topped up")
    )
    assert done.status == pb.FULFILLED
    cancelled = await mall.CancelOrder(
        pb.CancelOrderRequest(app=app, order_id=data.order_id, operator="ops", reason="refund")
    )
    assert cancelled.status == pb.CANCELLED
    assert [h.note for h in cancelled.history][-1] == "refund"
    assert stock_of(suite, app, "mobile-data-1g") == (5000, 5000)
    # Cancelled units no longer count toward the member's daily limit.
    assert (await reserve(mall, app, "mobile-data-1g", user="buyer")).state == pb.RESERVED

    mine = await mall.ListOrders(pb.ListOrdersRequest(app=app, user_id="buyer", page_size=1))
    assert [o.order_id for o in mine.orders] == [data.order_id]
    rest = await mall.ListOrders(
        pb.ListOrdersRequest(app=app, user_id="buyer", page_token=mine.next_page_token)
    )
    assert [o.order_id for o in rest.orders] == [phone.order_id]
    shipped_only = await mall.ListOrders(pb.ListOrdersRequest(app=app, status=pb.SHIPPED))
    assert [o.order_id for o in shipped_only.orders] == [phone.order_id]
    got = await mall.GetOrder(pb.GetOrderRequest(app=app, order_id=phone.order_id))
    assert got.status == pb.SHIPPED

    today = local_day(now)
    stats = await mall.GetItemStats(
        pb.GetItemStatsRequest(app=app, sku="mobile-data-1g", from_date=today, to_date=today)
    )
    [day] = stats.days
    assert (day.reserved, day.confirmed, day.cancelled) == (2, 1, 1)
    await assert_invariants(suite, app)


async def test_pool_codes_are_loaded_reserved_and_issued_once(mall, suite):
    app = await configure(
        mall,
        section_with({"sku": "gift", "kind": "coupon", "price_points": 9, "coupon_codes": "pool"}),
    )
    loaded = await mall.LoadCodes(
        pb.LoadCodesRequest(app=app, request_id="l1", sku="gift", codes=["A1", "A2", "A2"])
    )
    assert (loaded.loaded, loaded.duplicates_skipped) == (2, 1)
    again = await mall.LoadCodes(
        pb.LoadCodesRequest(app=app, request_id="l1", sku="gift", codes=["A1", "A2", "A2"])
    )
    assert again.loaded == 2
    await reserve(mall, app, "gift", saga="g1")
    await reserve(mall, app, "gift", saga="g2")
    assert await refused(reserve(mall, app, "gift")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUT_OF_STOCK",
    )
    await mall.Release(pb.ReleaseRequest(app=app, saga_id="g2"))
    first = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="g1"))
    await reserve(mall, app, "gift", saga="g3")
    second = await mall.Confirm(pb.ConfirmRequest(app=app, saga_id="g3"))
    assert sorted([first.coupon_code, second.coupon_code]) == ["A1", "A2"]
    await assert_invariants(suite, app)


# --- bad input -----------------------------------------------------------------------------


async def test_bad_input_names_the_field_and_writes_nothing(mall, app, suite):
    cases = [
        (pb.ReserveRequest(saga_id="s", user_id="u", sku="hot", quantity=1), "app"),
        (pb.ReserveRequest(app=app, user_id="u", sku="vip-1-month", quantity=1), "saga_id"),
        (pb.ReserveRequest(app=app, saga_id="s", sku="vip-1-month", quantity=1), "user_id"),
        (pb.ReserveRequest(app=app, saga_id="s", user_id="u", quantity=1), "sku"),
        (pb.ReserveRequest(app=app, saga_id="s", user_id="u", sku="vip-1-month"), "quantity"),
        (
            pb.ReserveRequest(app=app, saga_id="s", user_id="u", sku="vip-1-month", quantity=10**6),
            "quantity",
        ),
        (
            pb.ReserveRequest(
                app=app,
                saga_id="s",
                user_id="u",
                sku="vip-1-month",
                quantity=1,
                ttl=Duration(seconds=-1),
            ),
            "ttl",
        ),
        (
            pb.ReserveRequest(
                app=app,
                saga_id="s",
                user_id="u",
                sku="phone-flagship",
                quantity=1,
                tier="star",
                address=pb.Address(name="x"),
            ),
            "address.phone",
        ),
    ]
    for request, field in cases:
        assert await field_of(mall.Reserve(request)) == field, field
    assert query(suite, "SELECT count(*) FROM reservations WHERE app = %s", app) == [(0,)]
    assert await field_of(mall.ListOrders(pb.ListOrdersRequest(app=app, page_token="x"))) == (
        "page_token"
    )
    assert (
        await field_of(
            mall.GetItemStats(pb.GetItemStatsRequest(app=app, from_date="2026-01-01", to_date="x"))
        )
        == "to_date"
    )
    assert (
        await field_of(mall.UpsertItems(pb.UpsertItemsRequest(app=app, section_json="{not json")))
        == "section_json"
    )
    assert await field_of(mall.GetOrder(pb.GetOrderRequest(app=app))) == "order_id"
