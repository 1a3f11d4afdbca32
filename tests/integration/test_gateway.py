"""The gateway end to end over real processes: events to a tier, redemptions and their
refusals, replays, gifts, reversals, the admin API, keys and tenancy."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb
from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from gateway.domain.program import load_program, service_sections
from gateway.store.tenancy import read_audit, revoke_key
from plumbing.clock import SystemClock
from plumbing.grpc_errors import reason_of
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import example_yaml, gateway_engine, new_app, spendable_yaml


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def earn_points(
    stubs: Stubs, app: AppKeys, user: str, fen: int, signed_up_days_ago: int = 0
) -> pb.RecordEventResponse:
    """A purchase of ``fen`` fen: 1 point and 1 growth per 100 fen, exempt from the caps."""
    request = pb.RecordEventRequest(
        event_id=uid("e"), user_id=user, action="purchase", attributes={"amount_fen": str(fen)}
    )
    if signed_up_days_ago:
        request.signed_up_at.FromDatetime(datetime.now(UTC) - timedelta(days=signed_up_days_ago))
    reply: pb.RecordEventResponse = await stubs.loyalty.RecordEvent(request, metadata=app.member)
    return reply


async def member(stubs: Stubs, app: AppKeys, user: str) -> pb.GetMemberResponse:
    reply: pb.GetMemberResponse = await stubs.loyalty.GetMember(
        pb.GetMemberRequest(user_id=user), metadata=app.member
    )
    return reply


async def redeem(
    stubs: Stubs, app: AppKeys, user: str, sku: str, request_id: str | None = None, **more: Any
) -> pb.Redemption:
    reply: pb.Redemption = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id=request_id or uid("r"), user_id=user, sku=sku, **more),
        metadata=app.member,
        timeout=20,
    )
    return reply


async def available(stubs: Stubs, app: AppKeys, sku: str) -> int:
    catalog = await stubs.loyalty.ListCatalog(
        pb.ListCatalogRequest(user_id="stock-reader", page_size=50), metadata=app.member
    )
    return next(item.available for item in catalog.items if item.sku == sku)


@pytest.fixture(scope="module")
async def app(suite: Suite, stubs: Stubs) -> AppKeys:
    return await new_app(suite, stubs.admin)


async def test_earn_to_a_tier_then_redeem_and_see_the_order(stubs: Stubs, app: AppKeys) -> None:
    user = uid()
    first = await earn_points(stubs, app, user, 150_000)  # 1,500 points and growth
    assert first.decision == pb.ALLOW
    assert (first.points_awarded, first.growth_awarded, first.tier) == (1500, 1500, "actor")
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.growth, seen.tier, seen.next_tier) == (
        1500,
        1500,
        "actor",
        "star",
    )
    before = await available(stubs, app, "ticket-wolf-warrior-2")
    done = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert done.status == pb.Redemption.COMPLETED, done
    assert done.points_spent == 500
    assert done.order_id
    assert done.coupon_code
    assert len(done.trace_id) == 32
    assert (await member(stubs, app, user)).points_available == 1000
    assert await available(stubs, app, "ticket-wolf-warrior-2") == before - 1
    orders = await stubs.loyalty.ListOrders(pb.ListOrdersRequest(user_id=user), metadata=app.member)
    assert [(o.order_id, o.coupon_code, o.points_spent) for o in orders.orders] == [
        (done.order_id, done.coupon_code, 500)
    ]
    again = await stubs.loyalty.GetRedemption(
        pb.GetRedemptionRequest(redemption_id=done.redemption_id), metadata=app.member
    )
    assert again == done
    saga = await stubs.admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=done.redemption_id), metadata=app.admin
    )
    assert saga.state == "COMPLETED"
    assert saga.trace_id == done.trace_id
    assert saga.trace_kept  # the suite samples every trace
    assert [s.name for s in saga.steps] == ["risk", "tier", "reserve", "hold", "confirm", "capture"]
    assert all(s.state == "DONE" and s.attempts == 1 for s in saga.steps)
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=user), metadata=app.member
    )
    assert [(e.kind, e.amount) for e in history.entries] == [("spend", -500), ("earn", 1500)]


async def test_refusals_leave_points_and_stock_as_they_were(stubs: Stubs, app: AppKeys) -> None:
    user = uid()
    await earn_points(stubs, app, user, 40_000)  # 400 points, tier rookie
    stock = await available(stubs, app, "ticket-wolf-warrior-2")
    poor = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (poor.status, poor.reason) == (pb.Redemption.FAILED, "INSUFFICIENT_POINTS")
    assert not poor.order_id
    assert poor.points_spent == 0
    assert await available(stubs, app, "ticket-wolf-warrior-2") == stock
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_held) == (400, 0)
    saga = await stubs.admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=poor.redemption_id), metadata=app.admin
    )
    assert saga.state == "COMPENSATED"
    assert {s.name: s.state for s in saga.steps}["release_reservation"] == "DONE"

    low = await redeem(stubs, app, user, "vip-1-month")  # needs actor
    assert (low.status, low.reason) == (pb.Redemption.FAILED, "TIER_TOO_LOW")

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await redeem(stubs, app, user, "no-such-sku")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(unknown.value) == "UNKNOWN_SKU"
    assert (await member(stubs, app, user)).points_available == 400


async def test_a_price_the_mall_changed_compensates_both_halves(suite: Suite, stubs: Stubs) -> None:
    """Reserve and hold run as one stage, the hold at the gateway's catalogue price. When the
    mall prices the item otherwise (a program reached it first), the saga is undone: no
    reservation, no hold, reason PRICE_CHANGED; once both agree again it completes."""
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)  # 1,000 points
    stock = await available(stubs, app, "ticket-wolf-warrior-2")
    sections = service_sections(load_program(example_yaml()))
    repriced = json.loads(json.dumps(sections["mall"]))
    for item in repriced["mall"]["items"]:
        if item["sku"] == "ticket-wolf-warrior-2":
            item["price_points"] = 600  # the gateway's copy still says 500
    mall = cast("mall_pb2_grpc.MallServiceAsyncStub", stubs.mall)
    configured = await mall.UpsertItems(
        mall_pb2.UpsertItemsRequest(app=app.app, section_json=json.dumps(repriced))
    )
    assert not configured.errors, configured
    changed = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (changed.status, changed.reason) == (pb.Redemption.FAILED, "PRICE_CHANGED")
    assert (changed.points_spent, changed.order_id) == (0, "")
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_held) == (1000, 0)
    assert await available(stubs, app, "ticket-wolf-warrior-2") == stock
    saga = await stubs.admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=changed.redemption_id), metadata=app.admin
    )
    steps = {s.name: s.state for s in saga.steps}
    assert (saga.state, steps["release_hold"], steps["release_reservation"]) == (
        "COMPENSATED",
        "DONE",
        "DONE",
    )
    applied = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=spendable_yaml()), metadata=app.admin
    )
    assert applied.applied, applied.errors
    done = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (done.status, done.points_spent) == (pb.Redemption.COMPLETED, 500)
    assert (await member(stubs, app, user)).points_available == 500


async def test_sold_out(suite: Suite, stubs: Stubs) -> None:
    program = spendable_yaml().replace("stock: 5\n", "stock: 1\n")
    app = await new_app(suite, stubs.admin, program_yaml=program)
    buyers = [uid() for _ in range(3)]
    # A new account may not redeem more than 10,000 points (new-account-high-value): the
    # product backend tells the real sign-up time, which risk then uses.
    fresh = uid()
    await earn_points(stubs, app, fresh, 60_000_000)
    denied = await redeem(stubs, app, fresh, "phone-flagship", address=pb.Address(name="A"))
    assert denied.reason == "RISK_DENIED"
    for buyer in buyers:
        await earn_points(stubs, app, buyer, 60_000_000, signed_up_days_ago=30)  # 600,000: star
    results = await asyncio.gather(
        *(
            redeem(
                stubs,
                app,
                b,
                "phone-flagship",
                address=pb.Address(name="A", phone="1", line1="x", city="c"),
            )
            for b in buyers
        )
    )
    assert sorted(r.reason for r in results) == ["", "OUT_OF_STOCK", "OUT_OF_STOCK"]
    for buyer, result in zip(buyers, results, strict=True):
        expected = 600_000 - (500_000 if result.status == pb.Redemption.COMPLETED else 0)
        assert (await member(stubs, app, buyer)).points_available == expected


async def test_replays_act_once(stubs: Stubs, app: AppKeys) -> None:
    user = uid()
    event = pb.RecordEventRequest(
        event_id=uid("e"), user_id=user, action="purchase", attributes={"amount_fen": "100000"}
    )
    first = await stubs.loyalty.RecordEvent(event, metadata=app.member)
    second = await stubs.loyalty.RecordEvent(event, metadata=app.member)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.points_awarded == first.points_awarded == 1000
    assert (await member(stubs, app, user)).points_available == 1000
    changed = pb.RecordEventRequest()
    changed.CopyFrom(event)
    changed.attributes["amount_fen"] = "1"
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stubs.loyalty.RecordEvent(changed, metadata=app.member)
    assert reason_of(conflict.value) == "IDEMPOTENCY_KEY_REUSED"

    request_id = uid("r")
    one, two = await asyncio.gather(
        redeem(stubs, app, user, "ticket-wolf-warrior-2", request_id=request_id),
        redeem(stubs, app, user, "ticket-wolf-warrior-2", request_id=request_id),
    )
    three = await redeem(stubs, app, user, "ticket-wolf-warrior-2", request_id=request_id)
    assert one.redemption_id == two.redemption_id == three.redemption_id
    assert three.status == pb.Redemption.COMPLETED
    assert (await member(stubs, app, user)).points_available == 500
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await redeem(stubs, app, user, "mobile-data-1g", request_id=request_id)
    assert reason_of(reused.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_one_request_id_sent_twice_at_once_with_two_payloads_acts_once(
    stubs: Stubs, app: AppKeys
) -> None:
    """Both starts travel in one batch of the saga log and name one saga (its id follows from
    the request_id): the first starts it with its own payload, the second is refused."""
    user = uid()
    await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(
            event_id=uid("e"), user_id=user, action="purchase", attributes={"amount_fen": "300000"}
        ),
        metadata=app.member,
    )
    request_id = uid("r")
    # Two payloads either of which completes alone (each item's daily limit is one), so the
    # outcome does not depend on which of the two arrives first.
    prices = {"ticket-wolf-warrior-2": 500, "mobile-data-1g": 1000}
    outcomes = await asyncio.gather(
        *(redeem(stubs, app, user, sku, request_id=request_id) for sku in prices),
        return_exceptions=True,
    )
    done = [o for o in outcomes if isinstance(o, pb.Redemption)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(done) == len(refused) == 1
    assert reason_of(refused[0]) == "IDEMPOTENCY_KEY_REUSED"
    price = list(prices.values())[outcomes.index(done[0])]
    assert done[0].status == pb.Redemption.COMPLETED
    assert done[0].points_spent == price
    assert (await member(stubs, app, user)).points_available == 3000 - price


async def test_batch_of_events_one_result_each(stubs: Stubs, app: AppKeys) -> None:
    users = [uid() for _ in range(5)]
    events = [
        pb.RecordEventRequest(event_id=uid("e"), user_id=u, action=action, quantity=quantity)
        for u in users
        for action, quantity in (("register", 0), ("watch", 35), ("sign_in", 0))
    ]
    events.append(events[0])  # a repeat inside the batch
    reply = await stubs.loyalty.RecordEvents(
        pb.RecordEventsRequest(events=events), metadata=app.member
    )
    assert len(reply.results) == len(events)
    # register 50; watch 35 min = 3 units = 3 points, 6 growth; sign_in 5 points, 10 growth
    assert [r.points_awarded for r in reply.results[:3]] == [50, 3, 5]
    assert [r.growth_awarded for r in reply.results[:3]] == [0, 6, 10]
    assert reply.results[-1].duplicate
    assert reply.results[-1].points_awarded == 50
    for user in users:
        seen = await member(stubs, app, user)
        assert (seen.points_available, seen.growth) == (58, 16)
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await stubs.loyalty.RecordEvents(
            pb.RecordEventsRequest(events=[events[0]] * 501), metadata=app.member
        )
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_gift_and_reverse_event(stubs: Stubs, app: AppKeys) -> None:
    giver, taker = uid(), uid()
    purchase = await earn_points(stubs, app, giver, 100_000)
    gift = await stubs.loyalty.Gift(
        pb.GiftRequest(request_id=uid("g"), from_user_id=giver, to_user_id=taker, points=300),
        metadata=app.member,
    )
    assert (gift.points, gift.from_points_available) == (300, 700)
    assert (await member(stubs, app, taker)).points_available == 300
    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=purchase.event_id, reason="refunded"), metadata=app.member
    )
    assert (reversed_.points_reversed, reversed_.growth_reversed) == (1000, 1000)
    seen = await member(stubs, app, giver)
    assert (seen.points_available, seen.growth) == (-300, 0)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stubs.loyalty.Gift(
            pb.GiftRequest(request_id=uid("g"), from_user_id=giver, to_user_id=giver, points=1),
            metadata=app.member,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to_user_id" in (bad.value.details() or "")


async def test_risk_deny_awards_nothing_and_fails_the_redemption(
    suite: Suite, stubs: Stubs
) -> None:
    user = uid()
    program = spendable_yaml().replace("deny_users: []", f"deny_users: [{user}]")
    app = await new_app(suite, stubs.admin, program_yaml=program)
    denied = await earn_points(stubs, app, user, 100_000)
    assert (denied.decision, denied.points_awarded) == (pb.DENY, 0)
    assert (await member(stubs, app, user)).points_available == 0
    result = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (result.status, result.reason) == (pb.Redemption.FAILED, "RISK_DENIED")


async def test_keys_scopes_and_tenancy(suite: Suite, stubs: Stubs, app: AppKeys) -> None:
    request = pb.GetMemberRequest(user_id="someone")
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer nonsense"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Bearer {app.member_key}x"),), grpc.StatusCode.UNAUTHENTICATED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.loyalty.GetMember(request, metadata=metadata)
        assert refused.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as wrong_scope:
        await stubs.admin.GetProgram(admin_pb2.GetProgramRequest(), metadata=app.member)
    assert wrong_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # The same user id in two apps: two members who never see each other.
    other = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 10_000)
    assert (await member(stubs, app, user)).points_available == 100
    assert (await member(stubs, other, user)).points_available == 0
    done = await redeem(stubs, other, user, "ticket-wolf-warrior-2")
    assert done.reason == "INSUFFICIENT_POINTS"
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stubs.loyalty.GetRedemption(
            pb.GetRedemptionRequest(redemption_id=done.redemption_id), metadata=app.member
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

    # Revoked keys stop working (within the cache time).
    async with gateway_engine(suite) as engine:
        key_id = other.member_key.split("_")[1]
        assert await revoke_key(engine, key_id, SystemClock().now())
    codes = []
    for _ in range(80):
        try:
            await member(stubs, other, user)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
            break
        await asyncio.sleep(0.1)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED], "a revoked key still works after 8 s"

    # Every admin call is audited, refused ones included.
    async with gateway_engine(suite) as engine:
        audit = await read_audit(engine, app.app)
    assert {"ApplyProgram", "GetSaga"} <= {row["call"] for row in audit}
    assert ("GetProgram", "PERMISSION_DENIED:PERMISSION_DENIED") in {
        (row["call"], row["outcome"]) for row in audit
    }


async def test_rate_limit(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin, rate_per_second=1, burst=5)
    outcomes = []
    for _ in range(8):
        try:
            await member(stubs, app, "u")
            outcomes.append("OK")
        except grpc.aio.AioRpcError as error:
            outcomes.append(f"{error.code().name}/{reason_of(error)}")
    assert outcomes[:5] == ["OK"] * 5
    assert "RESOURCE_EXHAUSTED/RATE_LIMITED" in outcomes[5:]


async def test_apply_program_reports_every_error_with_its_path(stubs: Stubs, app: AppKeys) -> None:
    broken = (
        spendable_yaml()
        .replace("price_points: 1000", "price_points: 0")
        .replace("daily_cap: 100 ", "daily_cap: -5 ")
    )
    answer = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=broken), metadata=app.admin
    )
    assert not answer.applied
    assert any(e.startswith("mall.items[2].price_points") for e in answer.errors), answer.errors
    assert any(e.startswith("points.daily_cap") for e in answer.errors), answer.errors
    current = await stubs.admin.GetProgram(admin_pb2.GetProgramRequest(), metadata=app.admin)
    assert current.program_yaml == spendable_yaml()
    garbage = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml="timezone: [unclosed"), metadata=app.admin
    )
    assert garbage.errors
    assert garbage.errors[0].startswith("program_yaml:")


async def test_sandbox_clock_and_production_refusal(suite: Suite, stubs: Stubs) -> None:
    sandbox = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, sandbox, user, 10_000)
    assert (await member(stubs, sandbox, user)).points_available == 100
    before = await stubs.admin.GetClock(admin_pb2.GetClockRequest(), metadata=sandbox.admin)
    moved = await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=400 * 86400, request_id=uid("c")),
        metadata=sandbox.admin,
        timeout=60,
    )
    assert moved.offset_seconds == before.offset_seconds + 400 * 86400
    ahead = moved.now.ToDatetime() - before.now.ToDatetime()
    # 400 days on, plus the few seconds the move itself took.
    assert timedelta(days=400) <= ahead < timedelta(days=400, minutes=5)
    assert (await member(stubs, sandbox, user)).points_available == 0  # expired

    production = await new_app(suite, stubs.admin, sandbox=False)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.admin.AdvanceClock(
            admin_pb2.AdvanceClockRequest(seconds=60), metadata=production.admin
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value) == "NOT_SANDBOX"


async def test_admin_reports(suite: Suite, stubs: Stubs) -> None:
    """An app of its own, parked at a quiet local hour: every figure of its day is exact."""
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 200_000)
    for sku in ("ticket-wolf-warrior-2", "mobile-data-1g"):
        assert (await redeem(stubs, app, user, sku)).status == pb.Redemption.COMPLETED
    stats = await stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=app.admin)
    today = stats.days[-1]
    assert (today.events, today.points_issued) == (1, 2000)
    assert dict(today.redemptions) == {
        "ticket-wolf-warrior-2/COMPLETED": 1,
        "mobile-data-1g/COMPLETED": 1,
    }
    assert dict(today.risk_decisions) == {"ALLOW": 1}
    liability = await stubs.admin.GetLiability(admin_pb2.GetLiabilityRequest(), metadata=app.admin)
    assert liability.days[-1].outstanding == 500
    adjusted = await stubs.admin.AdjustPoints(
        admin_pb2.AdjustPointsRequest(
            request_id=uid("a"), user_id=user, delta=-100, reason="goodwill correction"
        ),
        metadata=app.admin,
    )
    assert adjusted.balance == 400
    listed = await stubs.admin.ListSagas(
        admin_pb2.ListSagasRequest(state="COMPLETED", page_size=1), metadata=app.admin
    )
    assert len(listed.sagas) == 1
    rest = await stubs.admin.ListSagas(
        admin_pb2.ListSagasRequest(
            state="COMPLETED", page_size=5, page_token=listed.next_page_token
        ),
        metadata=app.admin,
    )
    assert (len(rest.sagas), rest.next_page_token) == (1, "")
    assert {s.saga_id for s in [*listed.sagas, *rest.sagas]} == {
        s.saga_id
        for s in (
            await stubs.admin.ListSagas(admin_pb2.ListSagasRequest(), metadata=app.admin)
        ).sagas
    }


BAD_INPUT = [
    ("RecordEvent", pb.RecordEventRequest(user_id="u", action="watch"), "event_id"),
    ("RecordEvent", pb.RecordEventRequest(event_id="e", action="watch"), "user_id"),
    ("RecordEvent", pb.RecordEventRequest(event_id="e", user_id="u", action="x" * 200), "action"),
    (
        "RecordEvent",
        pb.RecordEventRequest(event_id="e", user_id="u", action="w", quantity=-1),
        "quantity",
    ),
    ("RecordEvents", pb.RecordEventsRequest(), "events"),
    (
        "RecordEvents",
        pb.RecordEventsRequest(events=[pb.RecordEventRequest(event_id="e")]),
        "events[0].user_id",
    ),
    ("Redeem", pb.RedeemRequest(user_id="u", sku="s"), "request_id"),
    ("Redeem", pb.RedeemRequest(request_id="r", user_id="u", sku="s", quantity=1000), "quantity"),
    ("Redeem", pb.RedeemRequest(request_id="r", user_id="u", sku="s", quantity=-2), "quantity"),
    ("Gift", pb.GiftRequest(request_id="g", from_user_id="a", to_user_id="b", points=0), "points"),
    ("GetMember", pb.GetMemberRequest(), "user_id"),
    ("ListPointsHistory", pb.ListPointsHistoryRequest(user_id="u", page_size=-1), "page_size"),
    ("ReverseEvent", pb.ReverseEventRequest(event_id="e"), "reason"),
    ("GetRedemption", pb.GetRedemptionRequest(), "redemption_id"),
]


@pytest.mark.parametrize(("method", "request_", "field"), BAD_INPUT)
async def test_bad_input_names_the_field_and_changes_nothing(
    stubs: Stubs, app: AppKeys, method: str, request_: Any, field: str
) -> None:
    before = await stubs.admin.ListSagas(admin_pb2.ListSagasRequest(), metadata=app.admin)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await getattr(stubs.loyalty, method)(request_, metadata=app.member)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith(f"{field}:"), bad.value.details()
    after = await stubs.admin.ListSagas(admin_pb2.ListSagasRequest(), metadata=app.admin)
    assert len(after.sagas) == len(before.sagas)


async def test_review_queue_through_the_admin_api(stubs: Stubs, app: AppKeys) -> None:
    """shared-device: a fourth user registering from one device goes to review and earns
    nothing; ops see the review and decide it."""
    device = uid("dev")
    replies = []
    for _ in range(4):
        replies.append(
            await stubs.loyalty.RecordEvent(
                pb.RecordEventRequest(
                    event_id=uid("e"), user_id=uid(), action="register", device_id=device
                ),
                metadata=app.member,
            )
        )
    assert [r.decision for r in replies] == [pb.ALLOW] * 3 + [pb.REVIEW]
    assert replies[-1].points_awarded == 0
    assert "risk:shared-device" in replies[-1].notes
    reviews: list[admin_pb2.Review] = []
    for _ in range(50):  # risk writes its audit in batches
        reviews = list(
            (
                await stubs.admin.ListReviews(
                    admin_pb2.ListReviewsRequest(state="open"), metadata=app.admin
                )
            ).reviews
        )
        if reviews:
            break
        await asyncio.sleep(0.1)
    (review,) = reviews
    assert review.rules == ["shared-device"]
    decided = await stubs.admin.DecideReview(
        admin_pb2.DecideReviewRequest(review_id=review.review_id, approve=True, note="same family"),
        metadata=app.admin,
    )
    assert decided.state == "approved"
    assert decided.operator.startswith("key:")


async def test_a_sold_out_item_is_refused_at_the_door_and_recorded(
    suite: Suite, stubs: Stubs
) -> None:
    """Once a redemption of an item ended OUT_OF_STOCK, the next ones are answered at once:
    recorded (GetRedemption finds them, a replay answers the same), nothing held, the stock
    never oversold; a new program (more stock) makes the item redeemable again at once."""
    program = spendable_yaml().replace("stock: 5\n", "stock: 1\n")
    app = await new_app(suite, stubs.admin, program_yaml=program)
    buyers = [uid() for _ in range(4)]
    for buyer in buyers:
        await earn_points(stubs, app, buyer, 60_000_000, signed_up_days_ago=30)
    address = pb.Address(name="A", phone="1", line1="x", city="c")
    first = await redeem(stubs, app, buyers[0], "phone-flagship", address=address)
    assert first.status == pb.Redemption.COMPLETED
    second = await redeem(stubs, app, buyers[1], "phone-flagship", address=address)
    assert second.reason == "OUT_OF_STOCK"  # the mall said so: a saga ran
    third = await stubs.loyalty.Redeem(
        pb.RedeemRequest(
            request_id="door", user_id=buyers[2], sku="phone-flagship", address=address
        ),
        metadata=app.member,
        timeout=20,
    )
    assert (third.status, third.reason) == (pb.Redemption.FAILED, "OUT_OF_STOCK")
    found = await stubs.loyalty.GetRedemption(
        pb.GetRedemptionRequest(redemption_id=third.redemption_id), metadata=app.member
    )
    assert (found.status, found.reason) == (pb.Redemption.FAILED, "OUT_OF_STOCK")
    again = await stubs.loyalty.Redeem(
        pb.RedeemRequest(
            request_id="door", user_id=buyers[2], sku="phone-flagship", address=address
        ),
        metadata=app.member,
        timeout=20,
    )
    assert again.redemption_id == third.redemption_id
    saga = await stubs.admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=third.redemption_id), metadata=app.admin
    )
    assert (saga.state, saga.reason, list(saga.steps)) == ("COMPENSATED", "OUT_OF_STOCK", [])
    assert (await member(stubs, app, buyers[2])).points_available == 600_000
    assert (await member(stubs, app, buyers[2])).points_held == 0
    assert await available(stubs, app, "phone-flagship") == 0

    more = spendable_yaml().replace("stock: 5\n", "stock: 2\n")
    applied = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=more), metadata=app.admin, timeout=30
    )
    assert applied.applied, applied.errors
    fourth = await redeem(stubs, app, buyers[3], "phone-flagship", address=address)
    assert fourth.status == pb.Redemption.COMPLETED
