"""Redemption sagas under faults, over real processes: a gateway SIGKILLed between each pair of
steps, and each participant SIGKILLed and restarted under a stream of redemptions. Every saga
must end COMPLETED or COMPENSATED, no point or unit of stock lost or made, nothing left held."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2, loyalty_pb2_grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb
from sqlalchemy import text

from devtools.bootstrap import AppKeys
from devtools.suite import Suite
from tests.integration.conftest import Stubs, serve_alone
from tests.integration.gateway_apps import gateway_engine, new_app
from tests.integration.outcomes import assert_no_wrong_answer, buy_for, outcome_of
from tests.integration.test_gateway import available, earn_points, member

SKU = "ticket-wolf-warrior-2"  # 500 points, daily limit 1 per user
PRICE = 500


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def settle(stubs: Stubs, app: AppKeys, within: float = 60) -> list[admin_pb2.Saga]:
    """Waits until no saga of the app is unfinished; answers them all."""
    deadline = time.monotonic() + within
    while True:
        sagas = (
            await stubs.admin.ListSagas(
                admin_pb2.ListSagasRequest(page_size=200), metadata=app.admin
            )
        ).sagas
        if all(s.state in ("COMPLETED", "COMPENSATED") for s in sagas):
            return list(sagas)
        if time.monotonic() > deadline:
            pytest.fail(f"unfinished sagas: {[(s.saga_id, s.state) for s in sagas]}")
        await asyncio.sleep(0.25)


async def assert_exact(
    stubs: Stubs, app: AppKeys, users: dict[str, int], stock_before: int
) -> list[admin_pb2.Saga]:
    sagas = await settle(stubs, app)
    completed = [s for s in sagas if s.state == "COMPLETED"]
    by_user: dict[str, int] = {}
    for saga in completed:
        by_user[saga.user_id] = by_user.get(saga.user_id, 0) + 1
    for user, start in users.items():
        seen = await member(stubs, app, user)
        assert seen.points_held == 0, user
        assert seen.points_available == start - PRICE * by_user.get(user, 0), user
    assert await available(stubs, app, SKU) == stock_before - len(completed)
    return sagas


KILL_POINTS = [
    ("after:risk", "COMPENSATED"),
    ("before:reserve", "COMPENSATED"),
    ("after:reserve", "COMPENSATED"),
    ("before:hold", "COMPENSATED"),
    ("after:hold", "COMPENSATED"),
    ("before:confirm", "COMPLETED"),
    ("after:confirm", "COMPLETED"),
    ("before:capture", "COMPLETED"),
    ("after:capture", "COMPLETED"),
]


@pytest.mark.parametrize(("kill_at", "outcome"), KILL_POINTS)
async def test_gateway_killed_between_steps(
    suite: Suite, stubs: Stubs, tmp_path: Path, kill_at: str, outcome: str
) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)
    stock = await available(stubs, app, SKU)
    request_id = uid("r")
    async with serve_alone(
        suite, "gateway", tmp_path, fault_kill_at=kill_at, saga_lease_seconds="1"
    ) as channel:
        doomed = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as died:
            await doomed.Redeem(
                pb.RedeemRequest(request_id=request_id, user_id=user, sku=SKU),
                metadata=app.member,
                timeout=20,
            )
        assert died.value.code() == grpc.StatusCode.UNAVAILABLE
    # The suite's gateway finds the saga once the dead one's lease has run out.
    (saga,) = await assert_exact(stubs, app, {user: 1000}, stock)
    assert saga.state == outcome, saga
    if outcome == "COMPENSATED":
        assert saga.reason == "INTERRUPTED"
    # The caller's retry with the same request_id gets the saga's outcome.
    retried = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id=request_id, user_id=user, sku=SKU), metadata=app.member
    )
    assert retried.redemption_id == saga.saga_id
    expected = pb.Redemption.COMPLETED if outcome == "COMPLETED" else pb.Redemption.FAILED
    assert retried.status == expected


@pytest.mark.parametrize("victim", ["risk", "levels", "mall", "points"])
async def test_participant_killed_and_restarted(suite: Suite, stubs: Stubs, victim: str) -> None:
    app = await new_app(suite, stubs.admin)
    users = {uid(): 1000 for _ in range(30)}
    await buy_for(stubs, app, users)
    stock = await available(stubs, app, SKU)

    async def one(user: str, delay: float) -> str:
        await asyncio.sleep(delay)
        call = stubs.loyalty.Redeem(
            pb.RedeemRequest(request_id=uid("r"), user_id=user, sku=SKU),
            metadata=app.member,
            timeout=10,
        )
        return await outcome_of(call, pb.Redemption.Status.Name)

    async def fault() -> str:
        # A steady stream of redemptions; the victim dies in the middle of it.
        await asyncio.sleep(0.4)
        suite.stop_service(victim, signal.SIGKILL)
        await asyncio.sleep(1.0)
        suite.start_service(victim)
        await asyncio.to_thread(suite.wait_serving, victim, 60)
        return "FAULT"

    answers = await asyncio.gather(fault(), *(one(user, 0.03 * i) for i, user in enumerate(users)))
    sagas = await assert_exact(stubs, app, users, stock)
    assert len(sagas) == len(users)
    assert_no_wrong_answer(answers[1:])
    # Calls wait (up to their deadline) for a participant that is restarting, so most ride the
    # fault out; those that run out of attempts are undone, never left half-done.
    assert any(s.state == "COMPLETED" for s in sagas)
    for saga in sagas:
        if saga.state == "COMPENSATED":
            assert saga.reason.endswith("_UNAVAILABLE") or saga.reason == "INTERRUPTED", saga


async def test_two_gateways_share_the_saga_log_and_the_survivor_finishes_the_dead_ones_sagas(
    suite: Suite, stubs: Stubs, tmp_path: Path
) -> None:
    """As the prod overlay runs them: two gateway replicas over one saga log, both taking
    redemptions (batched), one SIGKILLed with sagas of its own in flight. The survivor's
    recovery loop finishes them once their leases run out; a caller's retry on the survivor
    gets the outcome; no saga is driven twice to different ends (the exact balances and
    stock, and the invariant checker at the end of the session)."""
    app = await new_app(suite, stubs.admin)
    users = {uid(): 1000 for _ in range(40)}
    await buy_for(stubs, app, users)
    stock = await available(stubs, app, SKU)
    async with serve_alone(
        suite, "gateway", tmp_path, fault_kill_at="after:hold", saga_lease_seconds="1"
    ) as channel:
        doomed = loyalty_pb2_grpc.LoyaltyServiceStub(channel)

        async def one(i: int, user: str) -> str:
            request = pb.RedeemRequest(request_id=f"r-{user}", user_id=user, sku=SKU)
            await asyncio.sleep(0.01 * (i // 2))
            stub = doomed if i % 2 else stubs.loyalty
            answer = await outcome_of(
                stub.Redeem(request, metadata=app.member, timeout=20), pb.Redemption.Status.Name
            )
            if answer.startswith("error"):
                # Its gateway died: the caller retries on the other one with the same id.
                answer = await outcome_of(
                    stubs.loyalty.Redeem(request, metadata=app.member, timeout=20),
                    pb.Redemption.Status.Name,
                )
            return answer

        answers = await asyncio.gather(*(one(i, user) for i, user in enumerate(users)))
    sagas = await assert_exact(stubs, app, users, stock)
    assert len(sagas) == len(users)
    # A retry that reaches the survivor after it undid the dead gateway's saga hears that.
    assert_no_wrong_answer([a for a in answers if a != "FAILED INTERRUPTED"])
    assert {s.state for s in sagas} <= {"COMPLETED", "COMPENSATED"}
    # Both replicas drove sagas to the end, and the dead one's were finished for it.
    assert sum(s.state == "COMPLETED" for s in sagas) >= len(users) // 2
    assert any(s.reason == "INTERRUPTED" for s in sagas)


async def test_reservation_ran_out_while_the_gateway_was_down(
    suite: Suite, stubs: Stubs, tmp_path: Path
) -> None:
    """Past the commit point the saga only goes forward, unless a participant refuses: the
    gateway dies before confirming, the app's clock passes the reservation's TTL (10 min) but
    not the hold's (15 min). The resumed saga's confirm is refused; its capture went through,
    so the points are refunded and the saga ends COMPENSATED, points and stock exact."""
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)
    stock = await available(stubs, app, SKU)
    # The dead gateway's lease outlives the test, so no recovery loop takes the saga before
    # the clock has moved; then the test ends the lease itself (no race with a timer).
    async with serve_alone(
        suite, "gateway", tmp_path, fault_kill_at="before:confirm", saga_lease_seconds="3600"
    ) as channel:
        doomed = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await doomed.Redeem(
                pb.RedeemRequest(request_id=uid("r"), user_id=user, sku=SKU),
                metadata=app.member,
                timeout=20,
            )
    await stubs.admin.AdvanceClock(
        admin_pb2.AdvanceClockRequest(seconds=11 * 60, request_id=uid("c")),
        metadata=app.admin,
        timeout=60,
    )
    async with gateway_engine(suite) as engine, engine.begin() as conn:
        ended = await conn.execute(
            text("UPDATE sagas SET lease_until = now() WHERE app = :app AND state = 'CONFIRMING'"),
            {"app": app.app},
        )
        assert ended.rowcount == 1
    (saga,) = await assert_exact(stubs, app, {user: 1000}, stock)
    assert (saga.state, saga.reason) == ("COMPENSATED", "RESERVATION_EXPIRED")
    steps = {s.name: s.state for s in saga.steps}
    assert steps["confirm"] == "FAILED"
    assert steps.get("refund", "DONE") == "DONE"


async def test_needs_attention_then_retry(suite: Suite, stubs: Stubs, tmp_path: Path) -> None:
    """A saga that cannot finish within its drives waits for an operator (NEEDS_ATTENTION), and
    RetrySaga finishes it once the participant is back."""
    app = await new_app(suite, stubs.admin)
    user = uid()
    await earn_points(stubs, app, user, 100_000)
    stock = await available(stubs, app, SKU)
    suite.stop_service("mall", signal.SIGKILL)
    try:
        async with serve_alone(
            suite, "gateway", tmp_path, saga_max_drives="1", call_timeout_seconds="0.3"
        ) as channel:
            lonely = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
            pending = await lonely.Redeem(
                pb.RedeemRequest(request_id=uid("r"), user_id=user, sku=SKU),
                metadata=app.member,
                timeout=20,
            )
    finally:
        suite.start_service("mall")
        await asyncio.to_thread(suite.wait_serving, "mall", 60)
    assert pending.status == pb.Redemption.PENDING
    saga = await stubs.admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=pending.redemption_id), metadata=app.admin
    )
    assert (saga.state, saga.reason) == ("NEEDS_ATTENTION", "MALL_UNAVAILABLE")
    retried = await stubs.admin.RetrySaga(
        admin_pb2.RetrySagaRequest(saga_id=saga.saga_id), metadata=app.admin, timeout=60
    )
    assert (retried.state, retried.reason) == ("COMPENSATED", "MALL_UNAVAILABLE")
    await assert_exact(stubs, app, {user: 1000}, stock)
    with pytest.raises(grpc.aio.AioRpcError) as finished:
        await stubs.admin.RetrySaga(
            admin_pb2.RetrySagaRequest(saga_id=saga.saga_id), metadata=app.admin
        )
    assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_event_retry_completes_what_was_missing(suite: Suite, stubs: Stubs) -> None:
    """Levels is down: the event's points are in, its growth is not, and the caller is told
    UNAVAILABLE. The retry with the same event_id adds the growth and not the points again."""
    app = await new_app(suite, stubs.admin)
    user = uid()
    event = pb.RecordEventRequest(
        event_id=uid("e"), user_id=user, action="purchase", attributes={"amount_fen": "150000"}
    )
    suite.stop_service("levels", signal.SIGKILL)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stubs.loyalty.RecordEvent(event, metadata=app.member, timeout=20)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "levels" in (down.value.details() or "")
    finally:
        suite.start_service("levels")
        await asyncio.to_thread(suite.wait_serving, "levels", 60)
    retried = await stubs.loyalty.RecordEvent(event, metadata=app.member, timeout=20)
    assert (retried.points_awarded, retried.growth_awarded, retried.tier) == (1500, 1500, "actor")
    assert not retried.duplicate
    seen = await member(stubs, app, user)
    assert (seen.points_available, seen.growth) == (1500, 1500)
    again = await stubs.loyalty.RecordEvent(event, metadata=app.member)
    assert again.duplicate
    assert (again.points_awarded, again.growth_awarded) == (1500, 1500)
