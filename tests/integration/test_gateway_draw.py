"""The draw saga end to end over real processes, and under faults: the gateway SIGKILLed
around the draw, the lottery SIGKILLed mid-stream. Every draw saga ends with the cost captured
and the prize awarded, or the cost released and no prize."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2, loyalty_pb2_grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from tests.integration.conftest import Stubs, serve_alone
from tests.integration.gateway_apps import new_app
from tests.integration.outcomes import assert_no_wrong_answer, buy_for, outcome_of
from tests.integration.test_gateway import earn_points, member
from tests.integration.test_gateway_faults import settle

POOL = "lucky-wheel"  # cost 50, 3 draws a day per user
COST = 50


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def force(stubs: Stubs, app: AppKeys, user: str, prize: str) -> None:
    await stubs.admin.ForceDrawOutcome(
        admin_pb2.ForceDrawOutcomeRequest(
            pool=POOL, user_id=user, prize=prize, reason="test", request_id=uid("f")
        ),
        metadata=app.admin,
    )


async def draw(
    stubs: Stubs, app: AppKeys, user: str, request_id: str | None = None
) -> pb.DrawResult:
    result: pb.DrawResult = await stubs.loyalty.Draw(
        pb.DrawRequest(request_id=request_id or uid("d"), user_id=user, pool=POOL),
        metadata=app.member,
        timeout=20,
    )
    return result


async def test_draws_cost_points_and_award_prizes(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)  # 1,000 points

    await force(stubs, app, user, "ticket")
    ticket = await draw(stubs, app, user)
    assert ticket.status == pb.DrawResult.COMPLETED, ticket
    assert (ticket.prize_code, ticket.prize_kind) == ("ticket", "item")
    assert ticket.order_id
    assert ticket.coupon_code
    assert (await member(stubs, app, user)).points_available == 950

    await force(stubs, app, user, "points-100")
    points = await draw(stubs, app, user)
    assert (points.prize_kind, points.points_awarded) == ("points", 100)
    assert (await member(stubs, app, user)).points_available == 1000

    await stubs.admin.PausePool(
        admin_pb2.PausePoolRequest(pool=POOL, reason="audit"), metadata=app.admin
    )
    paused = await draw(stubs, app, user)
    assert (paused.status, paused.reason) == (pb.DrawResult.FAILED, "POOL_PAUSED")
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.points_held) == (1000, 0)
    await stubs.admin.ResumePool(admin_pb2.ResumePoolRequest(pool=POOL), metadata=app.admin)

    # Forced too: a free draw wins a ticket one time in fifty (the CSPRNG takes no seed).
    await force(stubs, app, user, "thanks")
    third = await draw(stubs, app, user)
    assert (third.status, third.prize_code) == (pb.DrawResult.COMPLETED, "thanks")
    fourth = await draw(stubs, app, user)
    assert (fourth.status, fourth.reason) == (pb.DrawResult.FAILED, "LIMIT_EXCEEDED")
    assert (await member(stubs, app, user)).points_available == 1000 - COST

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.loyalty.Draw(
            pb.DrawRequest(request_id=uid("d"), user_id=user, pool="no-such-pool"),
            metadata=app.member,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    stats = await stubs.admin.GetPoolStats(
        admin_pb2.GetPoolStatsRequest(pool=POOL), metadata=app.admin
    )
    assert stats.days[-1].draws == 3
    assert dict(stats.days[-1].wins_by_prize) == {"ticket": 1, "points-100": 1}


@pytest.mark.parametrize(
    ("kill_at", "outcome"),
    [
        ("after:hold", "COMPENSATED"),
        ("before:draw", "COMPLETED"),
        ("after:draw", "COMPLETED"),
        ("after:award", "COMPLETED"),
    ],
)
async def test_gateway_killed_around_the_draw(
    suite: Suite, stubs: Stubs, tmp_path: Path, kill_at: str, outcome: str
) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)
    await force(stubs, app, user, "points-100")
    request_id = uid("d")
    async with serve_alone(
        suite, "gateway", tmp_path, fault_kill_at=kill_at, saga_lease_seconds="1"
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await loyalty_pb2_grpc.LoyaltyServiceStub(channel).Draw(
                pb.DrawRequest(request_id=request_id, user_id=user, pool=POOL),
                metadata=app.member,
                timeout=20,
            )
    (saga,) = await settle(stubs, app)
    assert saga.state == outcome, saga
    seen = await member(stubs, app, user)
    assert seen.points_held == 0
    assert seen.points_available == (1050 if outcome == "COMPLETED" else 1000)
    result = await draw(stubs, app, user, request_id)
    if outcome == "COMPENSATED":
        assert not result.draw_id
    else:
        assert (result.prize_code, result.points_awarded) == ("points-100", 100)


async def test_lottery_killed_mid_stream(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    users = [uid() for _ in range(20)]
    await buy_for(stubs, app, users)
    request_ids = {u: uid("d") for u in users}

    async def one(user: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return await outcome_of(
            draw(stubs, app, user, request_ids[user]), pb.DrawResult.Status.Name
        )

    async def fault() -> str:
        await asyncio.sleep(0.3)
        suite.stop_service("lottery", signal.SIGKILL)
        await asyncio.sleep(1.0)
        suite.start_service("lottery")
        await asyncio.to_thread(suite.wait_serving, "lottery", 60)
        return "FAULT"

    answers = await asyncio.gather(*(one(u, 0.05 * i) for i, u in enumerate(users)), fault())
    assert_no_wrong_answer(answers[:-1])
    sagas = await settle(stubs, app)
    assert len(sagas) == len(users)
    for user in users:
        result = await draw(stubs, app, user, request_ids[user])  # the replay: its outcome
        seen = await member(stubs, app, user)
        assert seen.points_held == 0
        if result.status == pb.DrawResult.COMPLETED:
            assert result.draw_id
            assert seen.points_available == 1000 - COST + result.points_awarded
        else:
            assert result.status == pb.DrawResult.FAILED
            assert not result.draw_id
            assert seen.points_available == 1000
