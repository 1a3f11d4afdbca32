"""Journeys through the gateway, as an integrator lives them on a sandbox app: move the app's
clock, then sign up new members and carry on with the old ones, across every feature.

Each test makes its own app, so the clock moves of one never touch another.
"""

from __future__ import annotations

import uuid
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
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import example_yaml, gateway_engine, new_app
from tests.integration.waiting import wait_for

HOUR = 3600
DAY = 86400


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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


async def purchase(stubs: Stubs, app: AppKeys, user: str, fen: int) -> pb.RecordEventResponse:
    return await record(stubs, app, user, "purchase", amount_fen=str(fen))


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


async def redeem(stubs: Stubs, app: AppKeys, user: str, sku: str, **more: object) -> pb.Redemption:
    reply: pb.Redemption = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id=uid("r"), user_id=user, sku=sku, **more),  # type: ignore[arg-type]
        metadata=app.member,
        timeout=20,
    )
    return reply


async def every_feature(stubs: Stubs, app: AppKeys, user: str, friend: str) -> None:
    """What a member does on a first day: tasks, a purchase, a redemption, a draw, a gift and
    a hold at the app's own checkout. Every call must succeed."""
    assert (await record(stubs, app, user, "register")).points_awarded == 50
    assert (await record(stubs, app, user, "sign_in")).points_awarded == 5
    bought = await purchase(stubs, app, user, 300_000)  # 3,000 points
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

    hold = await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=uid("h"),
            user_id=user,
            order_ref=uid("order"),
            points=200,
            order_amount_fen=100_000,
        ),
        metadata=app.member,
        timeout=20,
    )
    assert hold.points == 200
    after = await available(stubs, app, user)
    assert after == before - 500 - 50 - 100 - 200 + drawn.points_awarded


@pytest.mark.parametrize("seconds", [HOUR, 2 * DAY, 40 * DAY], ids=["1h", "2d", "40d"])
async def test_members_before_and_after_a_clock_move_use_every_feature(
    suite: Suite, stubs: Stubs, seconds: int
) -> None:
    app = await new_app(suite, stubs.admin)
    old, old_friend = uid("old"), uid("old-friend")
    await purchase(stubs, app, old, 10_000)
    await purchase(stubs, app, old_friend, 10_000)

    moved = await advance(stubs, app, seconds)
    assert moved.offset_seconds == seconds
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
    assert {c.offset_seconds for c in reading.services} == {seconds}
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
    await advance(stubs, app, HOUR)
    risk: Any = stubs.risk  # typed as a sync stub; served over grpc.aio
    risk_moved = await risk.AdvanceClock(
        common_pb2.AdvanceClockRequest(
            app=app.app, seconds=HOUR, offset_seconds=2 * HOUR, request_id=uid("direct")
        ),
        timeout=10,
    )
    assert risk_moved.offset_seconds == 2 * HOUR
    assert not (await clocks(stubs, app)).in_step
    # The next hour takes every service to the gateway's two hours: risk neither back nor on.
    moved = await advance(stubs, app, HOUR)
    assert moved.offset_seconds == 2 * HOUR
    reading = await clocks(stubs, app)
    assert (reading.in_step, reading.offset_seconds) == (True, 2 * HOUR), reading

    # The gateway an hour ahead of every participant, as an app moved before this fix is.
    async with gateway_engine(suite) as engine, engine.begin() as conn:
        await conn.execute(
            text("UPDATE apps SET clock_offset_seconds = :o WHERE app = :a"),
            {"o": 3 * HOUR, "a": app.app},
        )
    reapplied = await stubs.admin.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=example_yaml()), metadata=app.admin, timeout=30
    )
    assert reapplied.applied, reapplied.errors
    reading = await wait_for(lambda: clocks(stubs, app), lambda r: r.offset_seconds == 3 * HOUR)
    assert reading.in_step, reading
    newcomer = uid("new")
    assert (await record(stubs, app, newcomer, "register")).points_awarded == 50


async def test_account_age_follows_the_app_clock(suite: Suite, stubs: Stubs) -> None:
    """``new-account-high-value`` denies redemptions over 10,000 points by members younger
    than 24 h, measured in the app's time."""
    app = await new_app(suite, stubs.admin)
    seasoned = uid("seasoned")
    await purchase(stubs, app, seasoned, 100)  # first seen now
    await advance(stubs, app, 2 * DAY)
    newcomer = uid("newcomer")
    await purchase(stubs, app, newcomer, 100)  # first seen two app days later

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

    request = pb.RecordEventRequest(event_id=uid("e"), user_id=uid(), action="sign_in")
    reading = await clocks(stubs, app)
    request.signed_up_at.FromSeconds(reading.now.seconds + 2 * DAY)
    with pytest.raises(grpc.aio.AioRpcError) as future:
        await stubs.loyalty.RecordEvent(request, metadata=app.member)
    assert future.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(future.value.details()).startswith("signed_up_at:"), future.value.details()
    assert reason_of(future.value) == "INVALID_ARGUMENT"
