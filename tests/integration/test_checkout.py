"""Points at the app's own checkout, end to end over real processes: quote, hold, capture,
release, expiry on the sandbox clock, refunds, the barrier against a late hold, retries, the
rules, and two orders racing for one balance."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from plumbing.grpc_errors import reason_of
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app, spendable_yaml
from tests.integration.test_gateway import earn_points, member


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def app(suite: Suite, stubs: Stubs) -> AppKeys:
    return await new_app(suite, stubs.admin)


async def rich_user(stubs: Stubs, app: AppKeys) -> str:
    user = uid()
    await earn_points(stubs, app, user, 100_000)  # 1,000 points
    return user


async def hold(
    stubs: Stubs,
    app: AppKeys,
    user: str,
    order: str,
    points: int,
    amount: int = 100_000,
    request_id: str | None = None,
) -> pb.OrderHold:
    reply: pb.OrderHold = await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=request_id or uid("h"),
            user_id=user,
            order_ref=order,
            points=points,
            order_amount_fen=amount,
        ),
        metadata=app.member,
    )
    return reply


async def refusal(call: object) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value.code().name, reason_of(refused.value)


async def test_quote_hold_capture(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    quote = await stubs.loyalty.QuoteCheckout(
        pb.QuoteCheckoutRequest(user_id=user, order_amount_fen=30_000), metadata=app.member
    )
    # 50% of 300 CNY is 150 CNY = 15,000 points, but the user has 1,000.
    assert (quote.max_points, quote.max_value_fen, quote.min_points, quote.step) == (
        1000,
        1000,
        100,
        100,
    )
    small = await stubs.loyalty.QuoteCheckout(
        pb.QuoteCheckoutRequest(user_id=user, order_amount_fen=1_234), metadata=app.member
    )
    assert small.max_points == 600  # half of 12.34 CNY is 617 points, down to the step
    tiny = await stubs.loyalty.QuoteCheckout(
        pb.QuoteCheckoutRequest(user_id=user, order_amount_fen=150), metadata=app.member
    )
    assert tiny.max_points == 0  # 75 points: under the minimum
    order = uid("o")
    held = await hold(stubs, app, user, order, 500, 30_000)
    assert (held.state, held.points, held.value_fen, held.hold_id) == (
        "held",
        500,
        500,
        f"order:{order}",
    )
    assert (await member(stubs, app, user)).points_available == 500
    captured = await stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=app.member
    )
    assert captured.state == "captured"
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_held) == (500, 0)
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=user), metadata=app.member
    )
    assert any(e.ref == f"order:{order}" for e in history.entries)


async def test_release_and_a_release_before_the_hold(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    order = uid("o")
    await hold(stubs, app, user, order, 300)
    released = await stubs.loyalty.ReleaseOrder(
        pb.ReleaseOrderRequest(request_id=uid("r"), order_ref=order), metadata=app.member
    )
    assert released.state == "released"
    assert (await member(stubs, app, user)).points_available == 1000

    early = uid("o")
    unknown = await stubs.loyalty.ReleaseOrder(
        pb.ReleaseOrderRequest(request_id=uid("r"), order_ref=early), metadata=app.member
    )
    assert unknown.state == "released"
    assert await refusal(hold(stubs, app, user, early, 300)) == (
        "FAILED_PRECONDITION",
        "HOLD_RELEASED",
    )
    assert (await member(stubs, app, user)).points_available == 1000


async def test_an_expired_hold_cannot_be_captured(suite: Suite, stubs: Stubs) -> None:
    sandbox = await new_app(suite, stubs.admin)
    user = await rich_user(stubs, sandbox)
    order = uid("o")
    await hold(stubs, sandbox, user, order, 400)
    await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=16 * 60, request_id=uid("t")),
        metadata=sandbox.admin,
        timeout=60,
    )
    capture = stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=sandbox.member
    )
    assert await refusal(capture) == ("FAILED_PRECONDITION", "HOLD_EXPIRED")
    seen = await member(stubs, sandbox, user)
    assert (seen.points_available, seen.points_held) == (1000, 0)
    listed = await stubs.loyalty.ListOrderHolds(
        pb.ListOrderHoldsRequest(state="expired"), metadata=sandbox.member
    )
    assert [h.order_ref for h in listed.holds] == [order]


async def test_refunds_never_exceed_the_capture(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    order = uid("o")
    await hold(stubs, app, user, order, 600, 200_000)
    await stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=app.member
    )
    first = await stubs.loyalty.RefundOrder(
        pb.RefundOrderRequest(request_id="refund-1-" + order, order_ref=order, points=200),
        metadata=app.member,
    )
    again = await stubs.loyalty.RefundOrder(
        pb.RefundOrderRequest(request_id="refund-1-" + order, order_ref=order, points=200),
        metadata=app.member,
    )
    assert (first.points_refunded, again.points_refunded, first.state) == (200, 200, "captured")
    second = await stubs.loyalty.RefundOrder(
        pb.RefundOrderRequest(request_id=uid("rf"), order_ref=order, points=400),
        metadata=app.member,
    )
    assert (second.points_refunded, second.state) == (600, "refunded")
    third = stubs.loyalty.RefundOrder(
        pb.RefundOrderRequest(request_id=uid("rf"), order_ref=order, points=1),
        metadata=app.member,
    )
    assert (await refusal(third))[1] == "REFUND_EXCEEDS_CAPTURE"
    assert (await member(stubs, app, user)).points_available == 1000


async def test_retries_act_once(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    order = uid("o")
    one, two = await asyncio.gather(
        hold(stubs, app, user, order, 300, request_id="same-" + order),
        hold(stubs, app, user, order, 300, request_id="same-" + order),
    )
    assert one.hold_id == two.hold_id
    assert (await member(stubs, app, user)).points_available == 700
    capture = pb.CaptureOrderRequest(request_id="cap-" + order, order_ref=order)
    await stubs.loyalty.CaptureOrder(capture, metadata=app.member)
    await stubs.loyalty.CaptureOrder(capture, metadata=app.member)
    assert (await member(stubs, app, user)).points_available == 700
    reused = hold(stubs, app, user, uid("o"), 300, request_id="same-" + order)
    assert (await refusal(reused))[1] == "IDEMPOTENCY_KEY_REUSED"


async def test_the_rules_refuse_what_breaks_them(suite: Suite, stubs: Stubs) -> None:
    program = spendable_yaml().replace("min_points: 100", "min_points: 200")
    strict = await new_app(suite, stubs.admin, program_yaml=program)
    user = await rich_user(stubs, strict)
    cases = [
        (150, 100_000, "NOT_A_STEP_MULTIPLE"),
        (100, 100_000, "BELOW_MIN_POINTS"),
        (600, 1_000, "ABOVE_MAX_PERCENT"),  # half of 10 CNY is 5 CNY: 500 points
    ]
    for points, amount, reason in cases:
        code, why = await refusal(hold(stubs, strict, user, uid("o"), points, amount))
        assert (code, why) == ("INVALID_ARGUMENT", reason)
    assert (await member(stubs, strict, user)).points_available == 1000

    without = (
        spendable_yaml().split("\ncheckout:")[0]
        + "\nlevels:"
        + spendable_yaml().split("\nlevels:", 1)[1]
    )
    closed = await new_app(suite, stubs.admin, program_yaml=without)
    assert await refusal(hold(stubs, closed, user, uid("o"), 200)) == (
        "FAILED_PRECONDITION",
        "CHECKOUT_DISABLED",
    )


async def test_two_orders_racing_for_one_balance(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    outcomes = await asyncio.gather(
        *(hold(stubs, app, user, uid("o"), 600, 200_000) for _ in range(2)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, pb.OrderHold)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert [reason_of(e) for e in lost] == ["INSUFFICIENT_POINTS"]
    assert (await member(stubs, app, user)).points_available == 400
    listed = await stubs.loyalty.ListOrderHolds(
        pb.ListOrderHoldsRequest(state="held", page_size=200), metadata=app.member
    )
    assert won[0].order_ref in {h.order_ref for h in listed.holds}


async def test_concurrent_refunds_both_count(stubs: Stubs, app: AppKeys) -> None:
    user = await rich_user(stubs, app)
    order = uid("o")
    await hold(stubs, app, user, order, 600, 200_000)
    await stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=app.member
    )
    await asyncio.gather(
        *(
            stubs.loyalty.RefundOrder(
                pb.RefundOrderRequest(request_id=uid("rf"), order_ref=order, points=points),
                metadata=app.member,
            )
            for points in (200, 300)
        )
    )
    listed = await stubs.loyalty.ListOrderHolds(
        pb.ListOrderHoldsRequest(state="captured", page_size=200), metadata=app.member
    )
    (held,) = [h for h in listed.holds if h.order_ref == order]
    assert held.points_refunded == 500
    assert (await member(stubs, app, user)).points_available == 900
