"""Pending points through the gateway, on the whole example program (``pending: {purchase:
7d}``): a purchase's points wait out the return window — counted in points_pending, not
spendable, holdable or giftable — then become available when the app's clock passes it, their
expiry counting from then; a reversal before then cancels them and never makes a balance
negative; liability reports them apart."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest
import yaml
from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.suite import Suite
from tests.integration.app_time import SHANGHAI
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import example_yaml, new_app
from tests.integration.test_campaigns import DAY, advance, member, record, uid

pytestmark = pytest.mark.integration


async def test_pending_points_cannot_be_spent_and_a_reversal_cancels_them(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    user, friend = uid(), uid()
    await record(stubs, app, user, "sign_in")  # 5 points, available at once
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "50000"})
    assert (bought.points_awarded, bought.points_pending) == (500, 500)
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (5, 500)

    # Not giftable, not holdable for an order, not redeemable.
    with pytest.raises(grpc.aio.AioRpcError) as gift:
        await stubs.loyalty.Gift(
            pb.GiftRequest(request_id=uid("g"), from_user_id=user, to_user_id=friend, points=100),
            metadata=app.member,
        )
    assert gift.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as hold:
        await stubs.loyalty.HoldForOrder(
            pb.HoldForOrderRequest(
                request_id=uid("h"),
                user_id=user,
                order_ref=uid("o"),
                points=200,
                order_amount_fen=100_000,
            ),
            metadata=app.member,
        )
    assert hold.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    liability = await stubs.admin.GetLiability(admin_pb2.GetLiabilityRequest(), metadata=app.admin)
    assert liability.points_pending == 500
    assert liability.days[-1].pending == 500
    assert liability.days[-1].outstanding == 5  # pending points are not outstanding yet

    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    assert reversed_.points_reversed == 500
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (5, 0)
    # A second reversal answers as the first; nothing becomes available later.
    again = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    assert again.points_reversed == 500
    await advance(stubs, app, 8 * DAY)
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (5, 0)
    liability = await stubs.admin.GetLiability(admin_pb2.GetLiabilityRequest(), metadata=app.admin)
    assert liability.points_pending == 0


async def test_pending_points_become_available_when_the_window_has_passed(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    user = uid()
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "30000"})
    assert bought.points_pending == 300
    await advance(stubs, app, 7 * DAY - 3600)  # an hour short
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (0, 300)

    moved = await advance(stubs, app, 2 * 3600)
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (300, 0)
    history = await stubs.loyalty.ListPointsHistory(
        pb.ListPointsHistoryRequest(user_id=user), metadata=app.member
    )
    [earned] = [e for e in history.entries if e.kind == "earn"]
    assert (earned.amount, earned.ref, earned.reason) == (300, bought.event_id, "purchase")
    # Rolling 12 months from the day the points became available (not the purchase's day).
    available_day = (moved - timedelta(hours=1)).astimezone(SHANGHAI).date()
    expires = earned.expires_at.ToDatetime(tzinfo=UTC).astimezone(SHANGHAI)
    assert (expires.year, expires.month, expires.day) == (
        available_day.year + 1,
        available_day.month,
        available_day.day,
    )
    # Now they spend like any other points.
    gift = await stubs.loyalty.Gift(
        pb.GiftRequest(request_id=uid("g"), from_user_id=user, to_user_id=uid(), points=100),
        metadata=app.member,
    )
    assert gift.from_points_available == 200


async def test_a_reversal_after_the_window_takes_points_back_as_before(
    suite: Suite, stubs: Stubs
) -> None:
    app = await new_app(suite, stubs.admin, program_yaml=example_yaml())
    user = uid()
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "20000"})
    await advance(stubs, app, 7 * DAY + 60)
    assert (await member(stubs, app, user)).points_available == 200
    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="late refund"),
        metadata=app.member,
    )
    assert reversed_.points_reversed == 200
    assert (await member(stubs, app, user)).points_available == 0


async def test_a_pending_purchases_campaign_points_wait_with_it_and_go_with_its_refund(
    suite: Suite, stubs: Stubs
) -> None:
    program = yaml.safe_load(example_yaml())
    program["campaigns"].append(
        {"code": "buy-2x", "actions": ["purchase"], "multiplier": 2, "budget_points": 10_000}
    )
    app = await new_app(
        suite, stubs.admin, program_yaml=yaml.safe_dump(program, allow_unicode=True)
    )
    user = uid()
    await record(stubs, app, user, "sign_in")
    bought = await record(stubs, app, user, "purchase", attributes={"amount_fen": "10000"})
    assert (bought.points_awarded, bought.points_pending) == (200, 200)
    assert "campaign:buy-2x" in bought.notes
    # The member spends what they have (5), then the purchase is refunded while pending.
    await stubs.loyalty.Gift(
        pb.GiftRequest(request_id=uid("g"), from_user_id=user, to_user_id=uid(), points=5),
        metadata=app.member,
    )
    reversed_ = await stubs.loyalty.ReverseEvent(
        pb.ReverseEventRequest(event_id=bought.event_id, reason="refund"), metadata=app.member
    )
    assert reversed_.points_reversed == 200
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_pending) == (0, 0)  # never below zero
    stats = await stubs.admin.GetCampaignStats(
        admin_pb2.GetCampaignStatsRequest(code="buy-2x"), metadata=app.admin
    )
    assert (stats.points_awarded, stats.budget_left) == (100, 9_900)  # no budget back
