"""Journeys through the gateway, as an integrator lives them on a sandbox app: move the app's
clock, then sign up new members and carry on with the old ones, across every feature.

Each test makes its own app, so the clock moves of one never touch another.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, time, timedelta
from typing import Any

import grpc
import pytest
from loyalty.common.v1 import common_pb2
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb
from sqlalchemy import text

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from plumbing.grpc_errors import reason_of
from tests.integration.app_time import SHANGHAI
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import example_yaml, gateway_engine, new_app
from tests.integration.test_gateway import available as catalog_stock
from tests.integration.test_gateway import earn_points, redeem, uid
from tests.integration.waiting import wait_for

HOUR = 3600
DAY = 86400


async def record(
    stubs: Stubs, app: AppKeys, user: str, action: str, **attributes: str
) -> pb.RecordEventResponse:
    reply: pb.RecordEventResponse = await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(
            event_id=uid("e"), user_id=user, action=action, attributes=attributes
        ),
        metadata=app.member,
        timeout=20,
    )
    return reply


async def advance(stubs: Stubs, app: AppKeys, seconds: int) -> admin_pb2.AdvanceClockResponse:
    moved: admin_pb2.AdvanceClockResponse = await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=seconds, request_id=uid("clock")),
        metadata=app.admin,
        timeout=60,
    )
    return moved


async def clocks(stubs: Stubs, app: AppKeys) -> admin_pb2.GetClockResponse:
    reply: admin_pb2.GetClockResponse = await stubs.admin.GetClock(
        admin_pb2.GetClockRequest(), metadata=app.admin, timeout=10
    )
    return reply


async def available(stubs: Stubs, app: AppKeys, user: str) -> int:
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    return int(seen.points_available)


async def every_feature(stubs: Stubs, app: AppKeys, user: str, friend: str) -> None:
    """What a member does on a first day: tasks, a purchase, a redemption, a draw, a gift and
    a hold at the app's own checkout. Every call must succeed."""
    assert (await record(stubs, app, user, "register")).points_awarded == 50
    assert (await record(stubs, app, user, "sign_in")).points_awarded == 5
    bought = await earn_points(stubs, app, user, 300_000)  # 3,000 points
    assert (bought.decision, bought.points_awarded) == (pb.ALLOW, 3000)
    before = await available(stubs, app, user)

    redeemed = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (redeemed.status, redeemed.reason) == (pb.Redemption.COMPLETED, "")
    assert redeemed.points_spent == 500

    drawn = await stubs.loyalty.Draw(
        pb.DrawRequest(request_id=uid("d"), user_id=user, pool="lucky-wheel"),
        metadata=app.member,
        timeout=20,
    )
    assert (drawn.status, drawn.reason) == (pb.DrawResult.COMPLETED, "")

    gift = await stubs.loyalty.Gift(
        pb.GiftRequest(request_id=uid("g"), from_user_id=user, to_user_id=friend, points=100),
        metadata=app.member,
        timeout=20,
    )
    assert gift.points == 100

    order = uid("order")
    hold = await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=uid("h"),
            user_id=user,
            order_ref=order,
            points=200,
            order_amount_fen=100_000,
        ),
        metadata=app.member,
        timeout=20,
    )
    assert hold.points == 200
    captured = await stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=app.member
    )
    assert captured.state == "captured"
    # The app's order is partly refunded: half the points come back.
    refunded = await stubs.loyalty.RefundOrder(
        pb.RefundOrderRequest(request_id=uid("r"), order_ref=order, points=100),
        metadata=app.member,
    )
    assert refunded.points_refunded == 100
    after = await available(stubs, app, user)
    assert after == before - 500 - 50 - 100 - 200 + 100 + drawn.points_awarded


@pytest.mark.parametrize("seconds", [HOUR, 2 * DAY, 40 * DAY], ids=["1h", "2d", "40d"])
async def test_members_before_and_after_a_clock_move_use_every_feature(
    suite: Suite, stubs: Stubs, seconds: int
) -> None:
    app = await new_app(suite, stubs.admin)
    parked = (await clocks(stubs, app)).offset_seconds
    old, old_friend = uid("old"), uid("old-friend")
    await earn_points(stubs, app, old, 10_000)
    await earn_points(stubs, app, old_friend, 10_000)

    moved = await advance(stubs, app, seconds)
    assert moved.offset_seconds == parked + seconds
    reading = await clocks(stubs, app)
    assert reading.in_step, reading
    assert [c.service for c in reading.services] == [
        "gateway",
        "points",
        "levels",
        "mall",
        "lottery",
        "risk",
    ]
    assert {c.offset_seconds for c in reading.services} == {parked + seconds}
    gateway_now = reading.services[0].now.ToDatetime()
    for service in reading.services:
        # Read one after another: the same time within the few seconds the reads take.
        assert abs((service.now.ToDatetime() - gateway_now).total_seconds()) < 30, service

    new, new_friend = uid("new"), uid("new-friend")
    await every_feature(stubs, app, new, new_friend)
    await every_feature(stubs, app, old, old_friend)


async def test_a_move_that_reached_only_some_services_is_made_good(
    suite: Suite, stubs: Stubs
) -> None:
    """A participant ahead (a move retried under another key reached it twice) or behind (the
    app was moved before it kept a clock) ends on the gateway's time: by the next move, and by
    the next ApplyProgram."""
    app = await new_app(suite, stubs.admin)
    base = (await clocks(stubs, app)).offset_seconds
    await advance(stubs, app, HOUR)
    risk: Any = stubs.risk  # typed as a sync stub; served over grpc.aio
    risk_moved = await risk.AdvanceClock(
        common_pb2.AdvanceClockRequest(
            app=app.app, seconds=HOUR, offset_seconds=base + 2 * HOUR, request_id=uid("direct")
        ),
        timeout=10,
    )
    assert risk_moved.offset_seconds == base + 2 * HOUR
    assert not (await clocks(stubs, app)).in_step
    # The next hour takes every service to the gateway's two hours: risk neither back nor on.
    moved = await advance(stubs, app, HOUR)
    assert moved.offset_seconds == base + 2 * HOUR
    reading = await clocks(stubs, app)
    assert (reading.in_step, reading.offset_seconds) == (True, base + 2 * HOUR), reading

    # The gateway an hour ahead of every participant, as an app moved before this fix is.
    async with gateway_engine(suite) as engine, engine.begin() as conn:
        await conn.execute(
            text("UPDATE apps SET clock_offset_seconds = :o WHERE app = :a"),
            {"o": base + 3 * HOUR, "a": app.app},
        )
    reapplied = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=example_yaml()), metadata=app.admin, timeout=30
    )
    assert reapplied.applied, reapplied.errors
    reading = await wait_for(
        lambda: clocks(stubs, app), lambda r: r.offset_seconds == base + 3 * HOUR
    )
    assert reading.in_step, reading
    newcomer = uid("new")
    assert (await record(stubs, app, newcomer, "register")).points_awarded == 50


async def test_account_age_follows_the_app_clock(suite: Suite, stubs: Stubs) -> None:
    """``new-account-high-value`` denies redemptions over 10,000 points by members younger
    than 24 h, measured in the app's time."""
    app = await new_app(suite, stubs.admin)
    seasoned = uid("seasoned")
    await earn_points(stubs, app, seasoned, 100)  # first seen now
    await advance(stubs, app, 2 * DAY)
    newcomer = uid("newcomer")
    await earn_points(stubs, app, newcomer, 100)  # first seen two app days later

    address = pb.Address(name="A", phone="1", line1="x", city="c", country="CN")
    young = await redeem(stubs, app, newcomer, "phone-flagship", address=address)
    assert (young.status, young.reason) == (pb.Redemption.FAILED, "RISK_DENIED")
    # Two days old in the app's time: past the risk rule, stopped by the tier instead.
    aged = await redeem(stubs, app, seasoned, "phone-flagship", address=address)
    assert (aged.status, aged.reason) == (pb.Redemption.FAILED, "TIER_TOO_LOW")


async def test_a_streak_across_app_days_pays_its_bonus_and_badge(
    suite: Suite, stubs: Stubs
) -> None:
    """A member first seen after a move signs in on seven consecutive app days (the clock
    moved a day at a time): one sign-in a day counts, the seventh pays the streak bonus and
    the streak_7 badge with its reward."""
    app = await new_app(suite, stubs.admin)
    await advance(stubs, app, 3 * HOUR)
    user = uid("streak")
    awarded = []
    for day in range(7):
        if day:
            await advance(stubs, app, DAY)
        first = await record(stubs, app, user, "sign_in")
        again = await record(stubs, app, user, "sign_in")
        assert again.points_awarded == 0  # daily_limit 1 per app day
        awarded.append(first)
    assert [a.points_awarded for a in awarded[:6]] == [5] * 6
    seventh = awarded[6]
    assert seventh.points_awarded == 5 + 20, seventh
    assert [b.code for b in seventh.badges_awarded] == ["streak_7"]
    assert await available(stubs, app, user) == 6 * 5 + 25 + 5
    # The badge and its reward come once per member: not on day 8, not on a replayed event.
    await advance(stubs, app, DAY)
    eighth = await record(stubs, app, user, "sign_in")
    assert (eighth.points_awarded, list(eighth.badges_awarded)) == (5, [])
    replayed = await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(event_id=seventh.event_id, user_id=user, action="sign_in"),
        metadata=app.member,
    )
    assert replayed.duplicate
    assert await available(stubs, app, user) == 6 * 5 + 25 + 5 + 5
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert [b.code for b in seen.badges] == ["streak_7"]


async def test_a_participant_refusing_the_gateways_own_field_is_internal(
    suite: Suite, stubs: Stubs
) -> None:
    """Errors never name fields the caller did not send: a bad ``ip`` is the caller's
    (``ip``); a sign-up time in the future is the caller's (``signed_up_at``)."""
    app = await new_app(suite, stubs.admin)
    with pytest.raises(grpc.aio.AioRpcError) as bad_ip:
        await stubs.loyalty.RecordEvent(
            pb.RecordEventRequest(event_id=uid("e"), user_id=uid(), action="sign_in", ip="x"),
            metadata=app.member,
        )
    assert bad_ip.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(bad_ip.value.details()).startswith("ip:"), bad_ip.value.details()

    # The same for every call that passes an ip on to risk (a saga would end INTERNAL).
    user = uid()
    for method, call_request in (
        ("Redeem", pb.RedeemRequest(request_id=uid("r"), user_id=user, sku="vip-1-month", ip="x")),
        ("Draw", pb.DrawRequest(request_id=uid("d"), user_id=user, pool="lucky-wheel", ip="x")),
        (
            "Gift",
            pb.GiftRequest(
                request_id=uid("g"), from_user_id=user, to_user_id=uid(), points=1, ip="x"
            ),
        ),
        (
            "HoldForOrder",
            pb.HoldForOrderRequest(
                request_id=uid("h"),
                user_id=user,
                order_ref=uid("o"),
                points=100,
                order_amount_fen=100_000,
                ip="x",
            ),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stubs.loyalty, method)(call_request, metadata=app.member, timeout=20)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert str(refused.value.details()).startswith("ip:"), (method, refused.value.details())

    request = pb.RecordEventRequest(event_id=uid("e"), user_id=uid(), action="sign_in")
    reading = await clocks(stubs, app)
    request.signed_up_at.FromSeconds(reading.now.seconds + 2 * DAY)
    with pytest.raises(grpc.aio.AioRpcError) as future:
        await stubs.loyalty.RecordEvent(request, metadata=app.member)
    assert future.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(future.value.details()).startswith("signed_up_at:"), future.value.details()
    assert reason_of(future.value) == "INVALID_ARGUMENT"


async def test_a_downgrade_then_a_redemption_is_tier_too_low(suite: Suite, stubs: Stubs) -> None:
    """An actor redeems the actor-only VIP card; two years on, with nothing earned since, the
    yearly requalification has made them a rookie: the same card is TIER_TOO_LOW, and the
    points an operator gave them stay whole."""
    app = await new_app(suite, stubs.admin)
    user = uid("fading")
    await earn_points(stubs, app, user, 400_000)  # 4,000 points and growth: actor
    first = await redeem(stubs, app, user, "vip-1-month")
    assert (first.status, first.reason) == (pb.Redemption.COMPLETED, "")

    await advance(stubs, app, 800 * DAY)
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert (seen.tier, seen.points_available) == ("rookie", 0)  # downgraded; the 1,000 expired
    await stubs.admin.AdjustPoints(
        admin_pb2.AdjustPointsRequest(
            request_id=uid("a"), user_id=user, delta=3000, reason="loyalty gift"
        ),
        metadata=app.admin,
    )
    again = await redeem(stubs, app, user, "vip-1-month")
    assert (again.status, again.reason) == (pb.Redemption.FAILED, "TIER_TOO_LOW")
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert (seen.points_available, seen.points_held) == (3000, 0)


async def test_a_reversal_then_repayment_then_a_redemption(suite: Suite, stubs: Stubs) -> None:
    """A refunded order takes its points back after some were spent: the balance goes below
    zero (only a clawback may do that), a redemption is refused, later earnings repay the debt
    first, and then the member redeems again."""
    app = await new_app(suite, stubs.admin)
    user = uid("refunder")
    order = pb.RecordEventRequest(
        event_id=uid("order"), user_id=user, action="purchase", attributes={"amount_fen": "100000"}
    )
    assert (await stubs.loyalty.RecordEvent(order, metadata=app.member)).points_awarded == 1000
    spent = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert spent.status == pb.Redemption.COMPLETED
    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=order.event_id, reason="order refunded"),
        metadata=app.member,
    )
    assert reversed_.points_reversed == 1000
    assert await available(stubs, app, user) == -500

    refused = await redeem(stubs, app, user, "mobile-data-1g")
    assert (refused.status, refused.reason) == (pb.Redemption.FAILED, "INSUFFICIENT_POINTS")
    assert await available(stubs, app, user) == -500

    await earn_points(stubs, app, user, 150_000)  # 1,500 points: 500 repay the debt
    assert await available(stubs, app, user) == 1000
    bought = await redeem(stubs, app, user, "mobile-data-1g")
    assert (bought.status, bought.reason) == (pb.Redemption.COMPLETED, "")
    assert await available(stubs, app, user) == 0


async def test_across_local_midnight_on_the_sandbox_clock(suite: Suite, stubs: Stubs) -> None:
    """Ten seconds before local midnight a member signs in and spins the wheel to its daily
    limit; twenty seconds later it is a new local day: sign-in pays again (a two-day streak),
    the wheel turns again, and each day's figures stand on their own."""
    app = await new_app(suite, stubs.admin)  # parked at 10:00 local
    start = (await clocks(stubs, app)).now.ToDatetime()
    local = start.replace(tzinfo=UTC).astimezone(SHANGHAI)
    to_late_evening = (23 * 3600 + 59 * 60 + 50) - (local.hour * 3600 + local.minute * 60)
    await advance(stubs, app, to_late_evening - local.second)
    user = uid("owl")
    await earn_points(stubs, app, user, 100_000)
    assert (await record(stubs, app, user, "sign_in")).points_awarded == 5
    assert (await record(stubs, app, user, "sign_in")).points_awarded == 0
    spins = [await draw(stubs, app, user) for _ in range(4)]
    assert [s.reason for s in spins[:3]] == ["", "", ""]
    assert (spins[3].status, spins[3].reason) == (pb.DrawResult.FAILED, "LIMIT_EXCEEDED")

    moved = await advance(stubs, app, 20)
    after = moved.now.ToDatetime().replace(tzinfo=UTC).astimezone(SHANGHAI)
    assert after.date() == local.date() + timedelta(days=1)
    assert after.time() < time(0, 1)
    assert (await record(stubs, app, user, "sign_in")).points_awarded == 5
    assert (await draw(stubs, app, user)).status == pb.DrawResult.COMPLETED

    stats = await stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=app.admin)
    by_day = {d.date: d for d in stats.days}
    evening, morning = by_day[local.date().isoformat()], by_day[after.date().isoformat()]
    assert (evening.events, morning.events) == (3, 1)


async def draw(stubs: Stubs, app: AppKeys, user: str) -> pb.DrawResult:
    result: pb.DrawResult = await stubs.loyalty.Draw(
        pb.DrawRequest(request_id=uid("d"), user_id=user, pool="lucky-wheel"),
        metadata=app.member,
        timeout=20,
    )
    return result


async def expiring(stubs: Stubs, app: AppKeys, user: str) -> list[tuple[int, Any]]:
    """What GetMember says expires soon (within 30 days): (points, when)."""
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    return [(int(e.amount), e.expires_at.ToDatetime(tzinfo=UTC)) for e in seen.points_expiring]


async def lot_expiries(stubs: Stubs, app: AppKeys, user: str) -> list[Any]:
    """When each earning's lot expires, oldest earning first (from the points history)."""
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=user, page_size=50), metadata=app.member
    )
    earned = [e for e in history.entries if e.amount > 0 and e.HasField("expires_at")]
    return [e.expires_at.ToDatetime(tzinfo=UTC) for e in reversed(earned)]


async def app_now(stubs: Stubs, app: AppKeys) -> Any:
    return (await clocks(stubs, app)).now.ToDatetime(tzinfo=UTC)


async def advance_to(stubs: Stubs, app: AppKeys, moment: Any) -> None:
    await advance(stubs, app, int((moment - await app_now(stubs, app)).total_seconds()))


async def gift(stubs: Stubs, app: AppKeys, sender: str, points: int) -> pb.GiftResponse:
    reply: pb.GiftResponse = await stubs.loyalty.Gift(
        pb.GiftRequest(
            request_id=uid("g"), from_user_id=sender, to_user_id=uid("friend"), points=points
        ),
        metadata=app.member,
        timeout=20,
    )
    return reply


async def test_spending_takes_the_soonest_expiring_lot_first(suite: Suite, stubs: Stubs) -> None:
    """Two lots a hundred days apart: a spend of 150 empties the older and takes 50 of the
    newer; when the older's day comes nothing expires, and the newer's 150 expire on theirs."""
    app = await new_app(suite, stubs.admin)
    user = uid("saver")
    await earn_points(stubs, app, user, 10_000)  # lot A: 100
    await advance(stubs, app, 100 * DAY)
    await earn_points(stubs, app, user, 20_000)  # lot B: 200
    a_expires, b_expires = await lot_expiries(stubs, app, user)
    assert b_expires - a_expires >= timedelta(days=99)

    assert (await gift(stubs, app, user, 150)).from_points_available == 150
    await advance_to(stubs, app, a_expires - timedelta(days=10))
    assert await expiring(stubs, app, user) == []  # lot A is empty: nothing due within 30 days
    await advance_to(stubs, app, a_expires + timedelta(minutes=1))
    assert await available(stubs, app, user) == 150
    await advance_to(stubs, app, b_expires - timedelta(days=10))
    assert await expiring(stubs, app, user) == [(150, b_expires)]
    await advance_to(stubs, app, b_expires + timedelta(minutes=1))
    assert await available(stubs, app, user) == 0


async def test_a_spend_never_takes_points_whose_day_has_come(suite: Suite, stubs: Stubs) -> None:
    """A lot past its expiry that the sweep (every minute) has not reached yet is not
    spendable: a gift that would need it is refused, one within the rest goes through."""
    app = await new_app(suite, stubs.admin)
    user = uid("late")
    await earn_points(stubs, app, user, 10_000)  # lot A: 100, due first
    await advance(stubs, app, 100 * DAY)
    await earn_points(stubs, app, user, 20_000)  # lot B: 200
    a_expires, _ = await lot_expiries(stubs, app, user)
    # Two seconds before lot A's day ends; then real time carries the app past it.
    await advance_to(stubs, app, a_expires - timedelta(seconds=2))
    await wait_for(lambda: app_now(stubs, app), lambda now: now > a_expires + timedelta(seconds=1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gift(stubs, app, user, 250)
    assert reason_of(refused.value) == "INSUFFICIENT_POINTS"
    assert (await gift(stubs, app, user, 200)).from_points_available == 0


async def test_a_members_day_in_one_batch_then_a_redemption_and_a_refund(
    suite: Suite, stubs: Stubs
) -> None:
    """After a clock move, a new member's day arrives as one RecordEvents batch (sign-up, a
    sign-in, more watching than the daily limit pays, a purchase that lifts them to actor, and
    the sign-up sent again), while a friend's shares arrive as concurrent single calls. The
    member redeems the actor-only VIP month; the purchase is refunded, which takes back its
    points (into debt) and its growth (back to rookie); the next day's sign-in pays the debt
    first, and a redemption is refused until the debt is gone."""
    app = await new_app(suite, stubs.admin)
    await advance(stubs, app, 3 * DAY)
    user, friend = uid("day"), uid("friend")
    order = pb.RecordEventRequest(
        event_id=uid("order"), user_id=user, action="purchase", attributes={"amount_fen": "300000"}
    )
    signup = pb.RecordEventRequest(event_id=uid("signup"), user_id=user, action="register")
    day = [
        signup,
        pb.RecordEventRequest(event_id=uid("in"), user_id=user, action="sign_in"),
        pb.RecordEventRequest(event_id=uid("watch"), user_id=user, action="watch", quantity=200),
        order,
        signup,
    ]

    async def share() -> pb.RecordEventResponse:
        return await record(stubs, app, friend, "share")

    async def whole_day() -> pb.RecordEventsResponse:
        reply: pb.RecordEventsResponse = await stubs.loyalty.RecordEvents(
            pb.RecordEventsRequest(events=day), metadata=app.member
        )
        return reply

    batch, shares = await asyncio.gather(whole_day(), asyncio.gather(*(share() for _ in range(5))))
    answers = [(r.points_awarded, r.duplicate, list(r.notes)) for r in batch.results]
    assert answers == [
        (50, False, []),
        (5, False, []),
        (12, False, ["daily_limit"]),  # 200 minutes: 12 units of 10 are paid
        (3000, False, []),
        (50, True, []),
    ]
    assert batch.results[3].tier == "actor"  # 10 + 24 + 3,000 growth
    assert sorted(r.points_awarded for r in shares) == [0, 0, 20, 20, 20]
    assert await available(stubs, app, user) == 3067

    vip = await redeem(stubs, app, user, "vip-1-month")
    assert (vip.status, vip.points_spent) == (pb.Redemption.COMPLETED, 3000)
    refunded = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=order.event_id, reason="order refunded"),
        metadata=app.member,
    )
    assert (refunded.points_reversed, refunded.growth_reversed) == (3000, 3000)
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert (seen.points_available, seen.tier) == (67 - 3000, "rookie")

    await advance(stubs, app, DAY)
    next_day = await record(stubs, app, user, "sign_in")
    assert next_day.points_awarded == 5  # it pays the debt
    assert await available(stubs, app, user) == 67 - 3000 + 5
    refused = await redeem(stubs, app, user, "ticket-wolf-warrior-2")
    assert (refused.status, refused.reason) == (pb.Redemption.FAILED, "INSUFFICIENT_POINTS")


async def test_redemptions_in_one_batch_after_a_clock_move_expire_due_points_first(
    suite: Suite, stubs: Stubs
) -> None:
    """Move the clock until an old member's only lot is due (the sweep has not run yet); then
    that member, a member who signed up after the move and one who never earned redeem at the
    same moment, so their holds travel together when they meet in a batch. A due lot expires
    before any balance is read: the old member is refused and holds nothing, the
    one without points is refused, the new member's redemption completes; then the old member
    earns again and redeems."""
    app = await new_app(suite, stubs.admin)
    old, new, empty = uid("old"), uid("new"), uid("empty")
    sku, price = "ticket-wolf-warrior-2", 500
    await earn_points(stubs, app, old, 60_000)  # 600 points in one lot
    (due,) = await lot_expiries(stubs, app, old)
    await advance_to(stubs, app, due - timedelta(seconds=2))
    await earn_points(stubs, app, new, 60_000)
    await wait_for(lambda: app_now(stubs, app), lambda now: now > due + timedelta(seconds=1))

    answers = await asyncio.gather(*(redeem(stubs, app, user, sku) for user in (old, new, empty)))
    outcomes = [(pb.Redemption.Status.Name(a.status), a.reason) for a in answers]
    assert outcomes == [
        ("FAILED", "INSUFFICIENT_POINTS"),
        ("COMPLETED", ""),
        ("FAILED", "INSUFFICIENT_POINTS"),
    ]
    for user, left in ((old, 0), (new, 600 - price), (empty, 0)):
        seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
        assert (seen.points_available, seen.points_held) == (left, 0), user
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=old, page_size=50), metadata=app.member
    )
    assert [e.amount for e in history.entries if e.amount < 0] == [-600]  # expired, not held

    await earn_points(stubs, app, old, 50_000)
    again = await redeem(stubs, app, old, sku)
    assert (pb.Redemption.Status.Name(again.status), again.reason) == ("COMPLETED", "")
    assert await available(stubs, app, old) == 0


async def test_after_a_clock_move_a_new_member_is_refused_then_redeems_draws_and_is_refunded(
    suite: Suite, stubs: Stubs
) -> None:
    """The steps this round made concurrent or set-wise, in the order a member lives them on a
    moved clock: a redemption refused for want of points (its reservation, made in the same
    stage as the refused hold, is released), the same member earning and redeeming, two
    members' draws that travel in one DrawBatch, then an order paid partly in points, refunded
    in full, and listed as refunded; a replayed refund answers as the first."""
    app = await new_app(suite, stubs.admin)
    await advance(stubs, app, 3 * DAY)
    member, other = uid("new"), uid("other")
    stock = await catalog_stock(stubs, app, "ticket-wolf-warrior-2")

    await earn_points(stubs, app, member, 40_000)  # 400 points: short of 500
    poor = await redeem(stubs, app, member, "ticket-wolf-warrior-2")
    assert (poor.status, poor.reason) == (pb.Redemption.FAILED, "INSUFFICIENT_POINTS")
    assert await catalog_stock(stubs, app, "ticket-wolf-warrior-2") == stock
    assert await available(stubs, app, member) == 400

    await earn_points(stubs, app, member, 60_000)  # now 1,000
    done = await redeem(stubs, app, member, "ticket-wolf-warrior-2")
    assert (done.status, done.points_spent) == (pb.Redemption.COMPLETED, 500)
    assert await catalog_stock(stubs, app, "ticket-wolf-warrior-2") == stock - 1

    await earn_points(stubs, app, other, 10_000)
    draws = await asyncio.gather(draw(stubs, app, member), draw(stubs, app, other))
    assert [d.status for d in draws] == [pb.DrawResult.COMPLETED] * 2
    left = await available(stubs, app, member)
    assert left == 500 - 50 + draws[0].points_awarded

    order = uid("order")
    await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=uid("h"),
            user_id=member,
            order_ref=order,
            points=200,
            order_amount_fen=100_000,
        ),
        metadata=app.member,
    )
    await stubs.loyalty.CaptureOrder(
        pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=app.member
    )
    refund = pb.RefundOrderRequest(request_id=uid("r"), order_ref=order, points=200)
    first = await stubs.loyalty.RefundOrder(refund, metadata=app.member)
    again = await stubs.loyalty.RefundOrder(refund, metadata=app.member)
    assert (first.state, first.points_refunded) == ("refunded", 200)
    assert again == first
    assert await available(stubs, app, member) == left
    listed = await stubs.loyalty.ListOrderHolds(
        pb.ListOrderHoldsRequest(state="refunded"), metadata=app.member
    )
    assert [h.order_ref for h in listed.holds] == [order]


async def test_after_a_clock_move_a_referred_newcomer_buys_waits_redeems_and_is_refunded(
    suite: Suite, stubs: Stubs
) -> None:
    """The whole example program (pending purchases, referrals, campaigns): the clock moves,
    a member refers a newcomer, whose purchase is pending (a redemption is refused and holds
    nothing), the window passes (both paid), the newcomer redeems, then the purchase is
    refunded: the reversal takes its points back, past what is left, and the ledger stays
    whole (the suite's invariant check at the end)."""
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    await advance(stubs, app, 3 * 86_400)
    alice, bob = uid("alice"), uid("bob")
    await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(event_id=uid("e"), user_id=alice, action="sign_in"),
        metadata=app.member,
    )
    made = await stubs.loyalty.Refer(
        pb.ReferRequest(request_id=uid("r"), referrer_user_id=alice, referred_user_id=bob),
        metadata=app.member,
    )
    bought = await stubs.loyalty.RecordEvent(
        pb.RecordEventRequest(
            event_id=uid("e"), user_id=bob, action="purchase", attributes={"amount_fen": "200000"}
        ),
        metadata=app.member,
    )
    assert (bought.points_awarded, bought.points_pending) == (2000, 2000)
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=bob), metadata=app.member)
    assert "newcomer" in seen.tags  # first seen after the clock moved: new by the app's clock
    early = await redeem(stubs, app, bob, "ticket-wolf-warrior-2")
    assert (early.status, early.reason) == (pb.Redemption.FAILED, "INSUFFICIENT_POINTS")
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=bob), metadata=app.member)
    assert (seen.points_available, seen.points_held, seen.points_pending) == (0, 0, 2000)

    await advance(stubs, app, 8 * 86_400)
    referrals = await stubs.loyalty.ListReferrals(
        pb.ListReferralsRequest(user_id=alice), metadata=app.member
    )
    assert [(r.referral_id, r.state) for r in referrals.referrals] == [(made.referral_id, "PAID")]
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=bob), metadata=app.member)
    assert (seen.points_available, seen.points_pending) == (2100, 0)
    done = await redeem(stubs, app, bob, "ticket-wolf-warrior-2")
    assert (done.status, done.points_spent) == (pb.Redemption.COMPLETED, 500)

    refunded = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    assert refunded.points_reversed == 2000
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=bob), metadata=app.member)
    assert seen.points_available == 2100 - 500 - 2000  # a debt only a reversal may leave
    # Paid before the refund, the referral stays paid; alice keeps her 200 (+5 sign-in).
    alice_now = await stubs.loyalty.GetMember(
        pb.GetMemberRequest(user_id=alice), metadata=app.member
    )
    assert alice_now.points_available == 205
