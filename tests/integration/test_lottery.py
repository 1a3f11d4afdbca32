"""The lottery over gRPC against real Postgres: stock under 500 concurrent draws, the daily
budget under concurrency, limits, pity, pause, forced outcomes, alerts, stats, and VerifyDraw on
every draw logged by this module."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import grpc
import psycopg
import pytest
from loyalty.lottery.v1 import lottery_pb2 as pb
from sqlalchemy import make_url

from devtools.suite import Suite
from plumbing.grpc_errors import reason_of
from tests.integration.app_time import SHANGHAI, park
from tests.integration.conftest import Stubs

POOLS: dict[str, Any] = {
    "pools": [
        {
            "code": "scarce",
            "cost_points": 10,
            "prizes": [
                {"code": "gold", "kind": "points", "amount": 100, "weight": 99, "stock": 10},
                {"code": "none", "kind": "nothing", "weight": 1},
            ],
            "alerts": {"low_stock_percent": 50},
        },
        {
            "code": "budgeted",
            "cost_points": 10,
            "daily_budget_points": 1000,
            "prizes": [
                {"code": "cash", "kind": "points", "amount": 100, "weight": 1},
                {"code": "none", "kind": "nothing", "weight": 1},
            ],
        },
        {
            "code": "pity",
            "cost_points": 10,
            "per_user": {"daily": 5},
            "pity": {"after": 3, "prize": "win"},
            "prizes": [
                {"code": "win", "kind": "points", "amount": 5, "weight": 0},
                {"code": "lose", "kind": "nothing", "weight": 1},
            ],
            "alerts": {"run_rate_per_minute": 5},
        },
    ]
}


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def new_lottery_app(stubs: Stubs) -> str:
    name = uid("lot")
    reply = await stubs.lottery.UpsertPools(
        pb.UpsertPoolsRequest(
            app=name,
            section_json=json.dumps({"timezone": "Asia/Shanghai", "lottery": POOLS}),
            money_rate=100,
        )
    )
    assert not reply.errors
    return name


@pytest.fixture(scope="module")
async def app(stubs: Stubs) -> str:
    return await new_lottery_app(stubs)


async def draw(stubs: Stubs, app: str, pool: str, user: str | None = None) -> pb.DrawRecord:
    record: pb.DrawRecord = await stubs.lottery.Draw(
        pb.DrawRequest(app=app, saga_id=uid("s"), user_id=user or uid(), pool=pool)
    )
    return record


async def force_win(stubs: Stubs, app: str, user: str) -> None:
    """An operator forces the member's next draw from `pity` to `win`."""
    await stubs.lottery.ForceOutcome(
        pb.ForceOutcomeRequest(
            app=app,
            pool="pity",
            user_id=user,
            prize="win",
            operator="ops",
            reason="compensation for an outage",
            request_id=uid("f"),
        )
    )


async def test_500_concurrent_draws_award_a_stock_of_10_exactly(stubs: Stubs, app: str) -> None:
    records = await asyncio.gather(*(draw(stubs, app, "scarce") for _ in range(500)))
    wins = Counter(r.prize_code for r in records)
    assert wins["gold"] == 10
    assert wins["none"] == 490
    more = await stubs.lottery.AddPrizeStock(
        pb.AddPrizeStockRequest(
            app=app, request_id="add-1", pool="scarce", prize="gold", quantity=3
        )
    )
    again = await stubs.lottery.AddPrizeStock(
        pb.AddPrizeStockRequest(
            app=app, request_id="add-1", pool="scarce", prize="gold", quantity=3
        )
    )
    assert more.stock == again.stock == 3
    alerts = await stubs.lottery.ListAlerts(pb.ListAlertsRequest(app=app))
    assert [(a.kind, a.subject) for a in alerts.alerts] == [("low_stock", "scarce/gold")]


async def test_the_daily_budget_holds_under_concurrency(stubs: Stubs, app: str) -> None:
    # The module's app may have drawn from this pool on an earlier (machine) day: a new app day.
    now = await park(stubs.lottery, app)
    records = await asyncio.gather(*(draw(stubs, app, "budgeted") for _ in range(200)))
    paid = sum(r.points for r in records)
    assert paid == 1000  # ten wins of 100, then only `none` fits
    today = now.astimezone(SHANGHAI).date()
    stats = await stubs.lottery.GetPoolStats(
        pb.GetPoolStatsRequest(
            app=app,
            pool="budgeted",
            from_date=(today - timedelta(days=1)).isoformat(),
            to_date=today.isoformat(),
        )
    )
    (day,) = stats.days
    assert day.date == today.isoformat()
    assert (day.draws, day.wins_by_prize["cash"]) == (200, 10)
    assert (day.payout_fen, day.budget_fen) == (1000, 1000)


async def test_pity_limits_pause_and_a_forced_outcome(stubs: Stubs, app: str) -> None:
    user = uid()
    prizes = [(await draw(stubs, app, "pity", user)) for _ in range(3)]
    assert [p.prize_code for p in prizes] == ["lose", "lose", "win"]
    assert prizes[-1].by_pity

    await force_win(stubs, app, user)
    forced = await draw(stubs, app, "pity", user)
    assert (forced.prize_code, forced.forced) == ("win", True)
    assert (await draw(stubs, app, "pity", user)).prize_code == "lose"
    with pytest.raises(grpc.aio.AioRpcError) as limit:
        await draw(stubs, app, "pity", user)
    assert reason_of(limit.value) == "LIMIT_EXCEEDED"

    paused = await stubs.lottery.PausePool(
        pb.PausePoolRequest(app=app, pool="pity", operator="ops", reason="prize audit")
    )
    assert paused.paused
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await draw(stubs, app, "pity")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value) == "POOL_PAUSED"
    await stubs.lottery.ResumePool(pb.ResumePoolRequest(app=app, pool="pity", operator="ops"))
    await draw(stubs, app, "pity")
    alerts = await stubs.lottery.ListAlerts(pb.ListAlertsRequest(app=app))
    assert "run_rate" in {a.kind for a in alerts.alerts}


async def test_a_replayed_saga_draws_once(stubs: Stubs, app: str) -> None:
    request = pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="budgeted")
    first, second = await asyncio.gather(stubs.lottery.Draw(request), stubs.lottery.Draw(request))
    assert first.draw_id == second.draw_id


async def test_bad_input(stubs: Stubs, app: str) -> None:
    for request, field in (
        (pb.DrawRequest(app=app, user_id="u", pool="pity"), "saga_id"),
        (pb.DrawRequest(app=app, saga_id="s", pool="pity"), "user_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stubs.lottery.Draw(request)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad.value.details() or "").startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.lottery.Draw(pb.DrawRequest(app=app, saga_id="s", user_id="u", pool="nope"))
    assert reason_of(unknown.value) == "UNKNOWN_POOL"
    broken = {"pools": [{"code": "x", "cost_points": 0, "prizes": []}]}
    reply = await stubs.lottery.UpsertPools(
        pb.UpsertPoolsRequest(
            app=app,
            section_json=json.dumps({"timezone": "UTC", "lottery": broken}),
            validate_only=True,
        )
    )
    assert sorted(reply.errors) == [
        "lottery.pools[0].cost_points: must be >= 1",
        "lottery.pools[0].prizes: must be a list of 1 to 100 prizes",
    ]


def _outcome(result: pb.DrawOutcome) -> str:
    if result.WhichOneof("outcome") == "error":
        error = result.error
        return f"field:{error.field}" if error.field else error.reason
    return result.draw.prize_code


async def test_a_draw_batch_answers_each_item_as_alone(stubs: Stubs) -> None:
    """Concurrent sagas' draws in one DrawBatch (one transaction, pools locked in code order):
    a paused pool, an unknown pool, a bad field, a replay and another payload under one saga id
    are each refused or answered as the single Draw would, beside good draws; and concurrent
    batches on one pool never award more than its stock."""
    app = await new_lottery_app(stubs)
    await stubs.lottery.PausePool(
        pb.PausePoolRequest(app=app, pool="pity", operator="ops", reason="audit")
    )
    replayed = pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="budgeted")
    first = await stubs.lottery.Draw(replayed)
    batch = [
        pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="scarce"),
        pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="pity"),
        pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="nope"),
        pb.DrawRequest(app=app, saga_id="", user_id=uid(), pool="scarce"),
        replayed,
        pb.DrawRequest(app=app, saga_id=replayed.saga_id, user_id=uid(), pool="budgeted"),
        pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="budgeted"),
    ]
    answers = await stubs.lottery.DrawBatch(pb.DrawBatchRequest(requests=batch))
    outcomes = [_outcome(r) for r in answers.results]
    assert outcomes[0] in ("gold", "none")
    assert outcomes[1:4] == ["POOL_PAUSED", "UNKNOWN_POOL", "field:saga_id"]
    assert answers.results[4].draw.draw_id == first.draw_id
    assert outcomes[5] == "IDEMPOTENCY_KEY_REUSED"
    assert outcomes[6] in ("cash", "none")

    batches = [
        pb.DrawBatchRequest(
            requests=[
                pb.DrawRequest(app=app, saga_id=uid("s"), user_id=uid(), pool="scarce")
                for _ in range(25)
            ]
        )
        for _ in range(8)
    ]
    replies = await asyncio.gather(*(stubs.lottery.DrawBatch(b) for b in batches))
    wins = Counter(_outcome(r) for reply in replies for r in reply.results)
    assert wins["gold"] + (outcomes[0] == "gold") == 10
    assert sum(wins.values()) == 200


async def test_every_logged_draw_verifies(suite: Suite, stubs: Stubs) -> None:
    """VerifyDraw recomputes each draw of an app of its own from the log: weighted wins and
    losses, a sold-out prize, the budget's fallback, pity and a forced outcome."""
    app = await new_lottery_app(stubs)
    pity_user = uid()
    await force_win(stubs, app, pity_user)
    await asyncio.gather(
        *(draw(stubs, app, "scarce") for _ in range(40)),
        *(draw(stubs, app, "budgeted") for _ in range(40)),
    )
    for _ in range(5):
        await draw(stubs, app, "pity", pity_user)

    url = make_url(suite.database_url("lottery")).set(drivername="postgresql")
    async with await psycopg.AsyncConnection.connect(
        url.render_as_string(hide_password=False)
    ) as conn:
        rows = await (
            await conn.execute("SELECT draw_id FROM draws WHERE app = %s", (app,))
        ).fetchall()
    assert len(rows) == 85
    answers = await asyncio.gather(
        *(stubs.lottery.VerifyDraw(pb.VerifyDrawRequest(app=app, draw_id=r[0])) for r in rows)
    )
    assert all(a.matches for a in answers), [a for a in answers if not a.matches][:3]
