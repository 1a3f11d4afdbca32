"""The saga steps' batch calls (HoldBatch, CaptureBatch, ReleaseHoldBatch, ReserveBatch,
ConfirmBatch, ReleaseBatch, CheckTierBatch) against real servers: every item is answered as
its single call would answer it, a refused item leaves nothing behind and does not fail its
neighbours, and concurrent batches on one member and one sku never spend or sell more than
there is."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import grpc
import psycopg
import pytest
from loyalty.levels.v1 import levels_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from sqlalchemy import make_url

from tests.integration.test_mall import configure, section_with
from tests.programs import levels_section_json, points_section_json

PLAIN = {
    "sku": "batch-plain",
    "name": "Batch plain",
    "kind": "virtual",
    "price_points": 10,
    "stock": 10,
}
LIMITED = {
    "sku": "batch-limited",
    "name": "Batch limited",
    "kind": "virtual",
    "price_points": 10,
    "stock": 100,
    "per_user": {"daily": 1},
}


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def query(suite: Any, service: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    url = make_url(suite.database_url(service)).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return conn.execute(sql, params).fetchall()


STOCK = "SELECT sku, available FROM stock WHERE app = %s AND sku LIKE 'batch-%%'"


def outcome(result: Any, answer: str) -> str:
    """'OK' or the item's reason."""
    if result.WhichOneof("outcome") == "error":
        return str(result.error.reason)
    assert result.WhichOneof("outcome") == answer
    return "OK"


async def points_app(points: Any) -> str:
    app = new_id("app-")
    reply = await points.ConfigureRules(
        points_pb2.ConfigureRulesRequest(app=app, section_json=points_section_json())
    )
    assert not reply.errors
    return app


async def grant(points: Any, app: str, user: str, amount: int) -> None:
    await points.Grant(
        points_pb2.GrantRequest(
            app=app, request_id=new_id("g-"), user_id=user, amount=amount, reason="t", operator="o"
        )
    )


def hold(app: str, saga: str, user: str, amount: int) -> points_pb2.HoldRequest:
    return points_pb2.HoldRequest(app=app, saga_id=saga, user_id=user, amount=amount, ref="t")


async def test_a_hold_batch_answers_each_item_as_alone_and_a_refusal_leaves_nothing(stubs, suite):
    points = stubs.points
    app = await points_app(points)
    await grant(points, app, "rich", 100)
    await grant(points, app, "poor", 5)
    await points.Hold(hold(app, "s-replayed", "rich", 10))
    await points.ReleaseHold(points_pb2.ReleaseHoldRequest(app=app, saga_id="s-released"))
    reply = await points.HoldBatch(
        points_pb2.HoldBatchRequest(
            requests=[
                hold(app, "s-1", "rich", 60),
                hold(app, "s-2", "rich", 60),  # 30 left after s-replayed and s-1
                hold(app, "s-3", "poor", 5),
                hold(app, "s-4", "nobody", 1),
                hold(app, "s-replayed", "rich", 10),
                hold(app, "s-replayed", "rich", 11),  # the same saga, another amount
                hold(app, "s-released", "rich", 1),
                hold(app, "", "rich", 1),
                hold(app, "s-5", "rich", 30),
            ]
        )
    )
    assert [outcome(r, "hold") for r in reply.results] == [
        "OK",
        "INSUFFICIENT_POINTS",
        "OK",
        "INSUFFICIENT_POINTS",
        "OK",
        "IDEMPOTENCY_KEY_REUSED",
        "HOLD_RELEASED",
        "INVALID_ARGUMENT",
        "OK",
    ]
    assert reply.results[1].error.metadata["available"] == "30"
    assert reply.results[7].error.field == "saga_id"
    rows = dict(query(suite, "points", "SELECT saga_id, state FROM holds WHERE app = %s", app))
    assert rows == {
        "s-replayed": "HELD",
        "s-released": "RELEASED",
        "s-1": "HELD",
        "s-3": "HELD",
        "s-5": "HELD",
    }
    rich = await points.GetBalance(points_pb2.GetBalanceRequest(app=app, user_id="rich"))
    assert (rich.available, rich.held) == (0, 100)

    captured = await points.CaptureBatch(
        points_pb2.CaptureBatchRequest(
            requests=[
                points_pb2.CaptureRequest(app=app, saga_id=s)
                for s in ("s-1", "s-released", "s-missing", "s-3", "s-1")
            ]
        )
    )
    assert [outcome(r, "hold") for r in captured.results] == [
        "OK",
        "HOLD_RELEASED",
        "HOLD_NOT_FOUND",
        "OK",
        "OK",
    ]
    released = await points.ReleaseHoldBatch(
        points_pb2.ReleaseHoldBatchRequest(
            requests=[
                points_pb2.ReleaseHoldRequest(app=app, saga_id=s)
                for s in ("s-5", "s-1", "s-late", "s-replayed")
            ]
        )
    )
    assert [outcome(r, "hold") for r in released.results] == ["OK", "HOLD_CAPTURED", "OK", "OK"]
    # The release came first: the late hold is refused.
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await points.Hold(hold(app, "s-late", "rich", 1))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    rich = await points.GetBalance(points_pb2.GetBalanceRequest(app=app, user_id="rich"))
    assert (rich.balance, rich.available, rich.held) == (40, 40, 0)


async def test_concurrent_hold_batches_on_one_member_spend_exactly_the_balance(stubs):
    points = stubs.points
    app = await points_app(points)
    await grant(points, app, "u", 100)

    async def batch(k: int) -> list[str]:
        reply = await points.HoldBatch(
            points_pb2.HoldBatchRequest(
                requests=[hold(app, f"s-{k}-{i}", "u", 10) for i in range(4)]
                + [hold(app, f"s-{k}-other", f"other-{k}", 1)]
            )
        )
        return [outcome(r, "hold") for r in reply.results[:4]]

    outcomes = Counter(o for k in await asyncio.gather(*(batch(k) for k in range(8))) for o in k)
    assert outcomes == {"OK": 10, "INSUFFICIENT_POINTS": 22}
    view = await points.GetBalance(points_pb2.GetBalanceRequest(app=app, user_id="u"))
    assert (view.balance, view.available, view.held) == (100, 0, 100)


async def test_a_reserve_batch_answers_each_item_as_alone_and_a_refusal_leaves_nothing(
    stubs, suite
):
    mall = stubs.mall
    app = await configure(mall, section_with(dict(PLAIN), dict(LIMITED)))

    def reserve(saga: str, sku: str, user: str, quantity: int = 1) -> mall_pb2.ReserveRequest:
        return mall_pb2.ReserveRequest(
            app=app, saga_id=saga, user_id=user, sku=sku, quantity=quantity, tier="star"
        )

    await mall.Reserve(reserve("s-replayed", "batch-plain", "u0"))
    await mall.Release(mall_pb2.ReleaseRequest(app=app, saga_id="s-released"))
    reply = await mall.ReserveBatch(
        mall_pb2.ReserveBatchRequest(
            requests=[
                reserve("s-1", "batch-plain", "u1", 3),
                reserve("s-2", "batch-limited", "u2"),
                reserve("s-3", "batch-limited", "u2"),  # the daily limit is 1
                reserve("s-4", "batch-plain", "u3", 7),  # 6 left after s-replayed and s-1
                reserve("s-5", "no-such-sku", "u4"),
                reserve("s-replayed", "batch-plain", "u0"),
                reserve("s-released", "batch-plain", "u5"),
                # The gate counts s-released's unit until the batch ends (as it would count a
                # concurrent single call's): 5 of the 6 left.
                reserve("s-6", "batch-plain", "u6", 5),
            ]
        )
    )
    assert [outcome(r, "reservation") for r in reply.results] == [
        "OK",
        "OK",
        "LIMIT_EXCEEDED",
        "OUT_OF_STOCK",
        "UNKNOWN_SKU",
        "OK",
        "RESERVATION_RELEASED",
        "OK",
    ]
    rows = dict(query(suite, "mall", "SELECT saga_id, state FROM reservations WHERE app = %s", app))
    assert rows == {
        "s-replayed": "RESERVED",
        "s-released": "RELEASED",
        "s-1": "RESERVED",
        "s-2": "RESERVED",
        "s-6": "RESERVED",
    }
    stock = dict(query(suite, "mall", STOCK, app))
    assert stock == {"batch-plain": 1, "batch-limited": 99}

    confirmed = await mall.ConfirmBatch(
        mall_pb2.ConfirmBatchRequest(
            requests=[
                mall_pb2.ConfirmRequest(app=app, saga_id=s)
                for s in ("s-1", "s-released", "s-none", "s-2", "s-1")
            ]
        )
    )
    assert [outcome(r, "order") for r in confirmed.results] == [
        "OK",
        "RESERVATION_RELEASED",
        "RESERVATION_NOT_FOUND",
        "OK",
        "OK",
    ]
    assert confirmed.results[0].order.order_id == confirmed.results[4].order.order_id
    again = await mall.Confirm(mall_pb2.ConfirmRequest(app=app, saga_id="s-2"))
    assert again.order_id == confirmed.results[3].order.order_id
    released = await mall.ReleaseBatch(
        mall_pb2.ReleaseBatchRequest(
            requests=[
                mall_pb2.ReleaseRequest(app=app, saga_id=s)
                for s in ("s-6", "s-1", "s-late", "s-replayed")
            ]
        )
    )
    assert [outcome(r, "reservation") for r in released.results] == [
        "OK",
        "RESERVATION_CONFIRMED",
        "OK",
        "OK",
    ]
    stock = dict(query(suite, "mall", STOCK, app))
    assert stock == {"batch-plain": 7, "batch-limited": 99}


async def test_concurrent_reserve_batches_on_one_sku_never_oversell(stubs, suite):
    mall = stubs.mall
    app = await configure(mall, section_with(dict(PLAIN), dict(LIMITED)))

    async def batch(k: int) -> list[str]:
        reply = await mall.ReserveBatch(
            mall_pb2.ReserveBatchRequest(
                requests=[
                    mall_pb2.ReserveRequest(
                        app=app,
                        saga_id=f"s-{k}-{i}",
                        user_id=f"u-{k}-{i % 2}",
                        sku="batch-plain" if i < 4 else "batch-limited",
                        quantity=1,
                        tier="star",
                    )
                    for i in range(6)
                ]
            )
        )
        return [outcome(r, "reservation") for r in reply.results]

    results = await asyncio.gather(*(batch(k) for k in range(8)))
    plain = Counter(o for r in results for o in r[:4])
    limited = Counter(o for r in results for o in r[4:])
    assert plain == {"OK": 10, "OUT_OF_STOCK": 22}
    # Two reserves of the limited item per batch, by two members: both pass.
    assert limited == {"OK": 16}
    stock = dict(query(suite, "mall", STOCK, app))
    assert stock == {"batch-plain": 0, "batch-limited": 84}


async def test_a_check_tier_batch_answers_each_item_as_alone(stubs):
    levels = stubs.levels
    app = new_id("app-")
    reply = await levels.ConfigureLevels(
        levels_pb2.ConfigureLevelsRequest(app=app, section_json=levels_section_json())
    )
    assert not reply.errors
    section = json.loads(levels_section_json())
    tiers = [tier["code"] for tier in section["levels"]["tiers"]]
    answers = await levels.CheckTierBatch(
        levels_pb2.CheckTierBatchRequest(
            requests=[
                levels_pb2.CheckTierRequest(app=app, user_id="new", min_tier=tiers[0]),
                levels_pb2.CheckTierRequest(app=app, user_id="new", min_tier=tiers[-1]),
                levels_pb2.CheckTierRequest(app=app, user_id="new", min_tier="no-such-tier"),
                levels_pb2.CheckTierRequest(app=app, user_id=""),
            ]
        )
    )
    assert [outcome(r, "tier") for r in answers.results] == [
        "OK",
        "TIER_TOO_LOW",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    ]
    assert answers.results[0].tier.tier == tiers[0]
    assert answers.results[2].error.field == "min_tier"
    assert answers.results[3].error.field == "user_id"


async def test_a_driver_whose_lease_was_taken_cannot_write_the_saga(suite):
    """Fencing of the saga log: once another driver leased a saga (the recovery loop, after
    this driver's lease ran out), this driver's saves change nothing and it stops
    (LeaseLost). The takeover is written by hand: the suite's own recovery loop must not race
    the test for the saga."""
    from datetime import date

    from sqlalchemy import text

    from gateway.domain.sagas import SagaState, SagaStep, StepState
    from gateway.store.sagas import LeaseLost, SagaLog
    from tests.integration.gateway_apps import gateway_engine

    async with gateway_engine(suite) as engine:
        log = SagaLog(engine, lease_seconds=3600)
        saga_id = str(uuid.uuid4())
        first, new = await log.start(
            saga_id,
            new_id("app-"),
            "redeem",
            new_id("r-"),
            "u",
            {"sku": "x"},
            "h",
            "",
            "",
            date.today(),
        )
        assert new
        assert first.driver == saga_id
        first.steps.append(SagaStep("risk", StepState.DONE, attempts=1))
        await log.save(first)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE sagas SET driver = 'another', drives = 2 WHERE saga_id = :id"),
                {"id": saga_id},
            )
        first.state = SagaState.CONFIRMING
        with pytest.raises(LeaseLost):
            await log.save(first)
        stored = await log.get(first.app, saga_id)
        assert stored is not None
        assert (stored.state, stored.driver, len(stored.steps)) == ("STARTED", "another", 1)
        async with engine.begin() as conn:  # ended, as the other driver would end it
            await conn.execute(
                text(
                    "UPDATE sagas SET state = 'COMPENSATED', reason = 'INTERRUPTED' "
                    "WHERE saga_id = :id"
                ),
                {"id": saga_id},
            )
