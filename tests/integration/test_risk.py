"""The risk service on real Redis and Postgres: sliding windows with a fake clock, concurrent
evaluations that never let N+1 through, distinct users counted once, replays counting nothing,
decisions with Redis down, the audit (flushed on a clean shutdown), reviews and alerts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import psycopg
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from loyalty.risk.v1 import risk_pb2 as pb
from loyalty.risk.v1 import risk_pb2_grpc
from sqlalchemy import make_url

from devtools.embedded import free_port
from plumbing.clock import FakeClock
from plumbing.grpc_errors import reason_of, rich_status
from services.risk.domain.decide import Count, Outcome
from services.risk.domain.program import Verdict
from services.risk.store.counters import Counted, Counters, Evaluation
from tests.integration.conftest import serve_alone
from tests.programs import risk_section

if TYPE_CHECKING:
    from loyalty.risk.v1.risk_pb2_grpc import RiskServiceAsyncStub as RiskStub


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def section_with(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    section = risk_section()
    section["risk"]["rules"] = list(rules) or section["risk"]["rules"]
    section["risk"].update(extra)
    return section


async def configure(risk: RiskStub, section: dict[str, Any] | None = None) -> str:
    app = new_id("app-")
    reply = await risk.ConfigureRisk(
        pb.ConfigureRiskRequest(app=app, section_json=json.dumps(section or risk_section()))
    )
    assert reply.version == 1, reply.errors
    return app


async def evaluate(
    risk: RiskStub, app: str, action: str, user: str, request_id: str | None = None, **fields: Any
) -> pb.EvaluateResponse:
    return await risk.Evaluate(
        pb.EvaluateRequest(
            app=app, request_id=request_id or new_id("r-"), action=action, user_id=user, **fields
        )
    )


def query(suite: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    url = make_url(suite.database_url("risk")).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        return conn.execute(sql, params).fetchall()


async def eventually(suite: Any, sql: str, *params: Any, expect: Any) -> None:
    """The audit is written in batches: wait for it (a few flush intervals at most)."""
    for _ in range(50):
        if query(suite, sql, *params) == expect:
            return
        await asyncio.sleep(0.1)
    assert query(suite, sql, *params) == expect


@pytest.fixture
async def risk(stubs):
    return stubs.risk


@pytest.fixture
async def counters(infra) -> AsyncIterator[Counters]:
    client = aioredis.Redis.from_url(infra.redis_url)
    yield Counters(client)
    await client.aclose()


# --- windows with a fake clock, on real Redis -----------------------------------------------


def velocity(request_id: str, max_: int = 3) -> Count:
    return Count("v", "user:u", False, 60_000, max_, request_id, Verdict.DENY)


async def one(
    counters: Counters, app: str, now: datetime, static: Outcome, counts: list[Count]
) -> Counted:
    """One evaluation, as a batch of one."""
    [counted] = await counters.evaluate_many(app, [Evaluation(new_id(), now, static, counts)], {})
    return counted


async def test_a_velocity_window_slides(counters: Counters) -> None:
    app, clock, allow = (
        new_id("w-"),
        FakeClock(datetime(2026, 11, 25, tzinfo=UTC)),
        Outcome(Verdict.ALLOW),
    )

    async def at(seconds: int) -> Verdict:
        clock.set(datetime(2026, 11, 25, tzinfo=UTC) + timedelta(seconds=seconds))
        result = await one(counters, app, clock.now(), allow, [velocity(new_id())])
        return result.verdict

    assert [await at(s) for s in (0, 10, 20)] == [Verdict.ALLOW] * 3
    assert await at(30) is Verdict.DENY  # four in the last minute
    # 61 s after the first: the window is (1 s, 61 s] and holds 10, 20, 30 and 61: still over.
    assert await at(61) is Verdict.DENY
    # A quiet minute later the window is empty again.
    assert await at(200) is Verdict.ALLOW


async def test_a_quiet_user_is_never_caught_by_a_boundary(counters: Counters) -> None:
    """Three a minute, spread out, is always fine: the window slides, no bucket edge to hit."""
    app, base = new_id("w-"), datetime(2026, 11, 25, 0, 0, 50, tzinfo=UTC)
    for second in range(0, 600, 20):
        result = await one(
            counters,
            app,
            base + timedelta(seconds=second),
            Outcome(Verdict.ALLOW),
            [velocity(new_id())],
        )
        assert result.verdict is Verdict.ALLOW, second


async def test_distinct_users_count_each_user_once_and_age_out(counters: Counters) -> None:
    app, base = new_id("w-"), datetime(2026, 11, 25, tzinfo=UTC)

    async def user(name: str, seconds: int) -> Verdict:
        count = Count("d", "device:d1", True, 3_600_000, 3, name, Verdict.REVIEW)
        result = await one(
            counters, app, base + timedelta(seconds=seconds), Outcome(Verdict.ALLOW), [count]
        )
        return result.verdict

    assert [await user(u, s) for u, s in (("a", 0), ("b", 1), ("c", 2), ("a", 3), ("a", 4))] == [
        Verdict.ALLOW
    ] * 5
    assert await user("d", 5) is Verdict.REVIEW
    assert await user("e", 3_700) is Verdict.ALLOW  # an hour on, only d and e are in it


async def test_a_batch_counts_as_its_evaluations_one_after_another(counters: Counters) -> None:
    """Five evaluations in one call see the window as the ones before them left it (three a
    minute: the fourth and fifth are over), and a repeated request id answers as its first."""
    app, now = new_id("w-"), datetime(2026, 11, 25, tzinfo=UTC)
    ids = [new_id() for _ in range(5)]
    batch = [Evaluation(i, now, Outcome(Verdict.ALLOW), [velocity(i)]) for i in ids]
    counted = await counters.evaluate_many(app, [*batch, batch[0]], {})
    assert [c.verdict for c in counted] == [Verdict.ALLOW] * 3 + [Verdict.DENY] * 2 + [
        Verdict.ALLOW
    ]
    assert [c.replayed for c in counted] == [False] * 5 + [True]


# --- through gRPC, concurrently -------------------------------------------------------------

VELOCITY_10 = {
    "code": "v10",
    "action": "redeem",
    "per": "user",
    "max": 10,
    "window": "1m",
    "decision": "deny",
}


async def test_concurrent_evaluations_never_allow_n_plus_1(risk):
    app = await configure(risk, section_with(VELOCITY_10))
    replies = await asyncio.gather(*(evaluate(risk, app, "redeem", "farmer") for _ in range(60)))
    decisions = [r.decision for r in replies]
    assert decisions.count(pb.ALLOW) == 10
    assert decisions.count(pb.DENY) == 50
    assert all(list(r.rules) == ["v10"] for r in replies if r.decision == pb.DENY)


async def test_distinct_users_under_concurrency(risk):
    rule = {
        "code": "shared",
        "action": "register",
        "per": "device",
        "max_distinct_users": 5,
        "window": "1d",
        "decision": "review",
    }
    app = await configure(risk, section_with(rule))
    users = [f"u{i}" for i in range(5)] * 4
    replies = await asyncio.gather(
        *(evaluate(risk, app, "register", u, device_id="phone") for u in users)
    )
    assert {r.decision for r in replies} == {pb.ALLOW}
    sixth = await evaluate(risk, app, "register", "u5", device_id="phone")
    assert (sixth.decision, list(sixth.rules), sixth.score) == (pb.REVIEW, ["shared"], 30)


async def test_a_replayed_request_counts_nothing(risk):
    rule = dict(VELOCITY_10, max=2)
    app = await configure(risk, section_with(rule))
    first = await evaluate(risk, app, "redeem", "u", request_id="same")
    replays = await asyncio.gather(
        *(evaluate(risk, app, "redeem", "u", request_id="same") for _ in range(5))
    )
    assert first.decision == pb.ALLOW
    assert not first.duplicate
    assert all(r.duplicate and r.decision == pb.ALLOW for r in replays)
    # The replays took nothing from the window: one more is still allowed, then denied.
    assert (await evaluate(risk, app, "redeem", "u")).decision == pb.ALLOW
    assert (await evaluate(risk, app, "redeem", "u")).decision == pb.DENY


async def test_lists_and_static_rules_through_the_api(risk):
    section = risk_section()
    section["risk"]["lists"] = {"allow_users": ["vip"], "deny_ips": ["203.0.113.0/24"]}
    app = await configure(risk, section)
    denied = await evaluate(risk, app, "redeem", "vip", ip="203.0.113.9")
    assert (denied.decision, list(denied.rules)) == (pb.DENY, ["deny_list:ip"])
    allowed = await evaluate(risk, app, "redeem", "vip", ip="198.51.100.1")
    assert (allowed.decision, list(allowed.rules)) == (pb.ALLOW, ["allow_list"])
    created = Timestamp()
    created.FromDatetime(datetime.now(UTC) - timedelta(hours=2))
    young = await evaluate(risk, app, "redeem", "new", amount=20_000, account_created_at=created)
    assert (young.decision, list(young.rules)) == (pb.DENY, ["new-account-high-value"])
    batch = await risk.EvaluateBatch(
        pb.EvaluateBatchRequest(
            requests=[
                pb.EvaluateRequest(app=app, request_id=f"b{i}", action="sign_in", user_id="b")
                for i in range(3)
            ]
        )
    )
    assert [r.decision for r in batch.results] == [pb.ALLOW] * 3


# --- audit, reviews, alerts -----------------------------------------------------------------


async def test_every_decision_is_audited_and_reviews_are_decided(risk, suite):
    app = await configure(risk)
    for user in ("a", "b", "c", "d"):
        await evaluate(risk, app, "register", user, request_id=f"reg-{user}", device_id="dev")
    await eventually(
        suite,
        "SELECT decision, count(*) FROM decisions WHERE app = %s GROUP BY 1 ORDER BY 1",
        app,
        expect=[("ALLOW", 3), ("REVIEW", 1)],
    )
    listed = await risk.ListReviews(pb.ListReviewsRequest(app=app))
    [review] = listed.reviews
    assert (review.request_id, review.user_id, list(review.rules)) == (
        "reg-d",
        "d",
        ["shared-device"],
    )
    decided = await risk.DecideReview(
        pb.DecideReviewRequest(app=app, review_id=review.review_id, approve=True, operator="ops")
    )
    assert (decided.state, decided.operator) == ("approved", "ops")
    again = await risk.DecideReview(
        pb.DecideReviewRequest(app=app, review_id=review.review_id, approve=True, operator="ops")
    )
    assert again.state == "approved"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await risk.DecideReview(
            pb.DecideReviewRequest(app=app, review_id=review.review_id, approve=False, operator="o")
        )
    assert reason_of(caught.value) == "REVIEW_ALREADY_DECIDED"
    assert list((await risk.ListReviews(pb.ListReviewsRequest(app=app))).reviews) == []


async def test_alerts_for_a_rule_firing_fast_and_a_run_on_a_prize(risk):
    hot = dict(VELOCITY_10, code="hot", max=1, alert_per_minute=2)
    app = await configure(risk, section_with(hot, run_alert_per_minute=3))
    for _ in range(5):
        await evaluate(risk, app, "redeem", "same-user")
    for i in range(5):
        await evaluate(risk, app, "draw", f"player{i}", attributes={"prize": "iphone"})
    for _ in range(50):
        alerts = (await risk.ListAlerts(pb.ListAlertsRequest(app=app))).alerts
        if len(alerts) >= 2:
            break
        await asyncio.sleep(0.1)
    assert sorted((a.kind, a.subject) for a in alerts) == [
        ("rule_rate", "hot"),
        ("run", "prize:iphone"),
    ]


# --- Redis down ------------------------------------------------------------------------------


async def test_with_redis_down_each_action_gets_its_documented_decision(suite, tmp_path):
    """A risk process whose Redis is gone: value moves (redeem, draw, gift) fail closed,
    earning fails open, and every decision says it was made without counters. On SIGTERM it
    flushes its audit: nothing is lost."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with serve_alone(suite, "risk", tmp_path, redis_url=dead_redis) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        app = await configure(stub)
        redeem = await evaluate(stub, app, "redeem", "u", ip="198.51.100.1")
        assert (redeem.decision, redeem.without_counters) == (pb.DENY, True)
        assert list(redeem.rules) == ["velocity-user", "shared-ip-redeem"]
        gift = await evaluate(stub, app, "gift", "u")
        assert (gift.decision, list(gift.rules)) == (pb.DENY, ["velocity-user", "gift-farming"])
        earn = await evaluate(stub, app, "sign_in", "u")
        assert (earn.decision, earn.without_counters, list(earn.rules)) == (pb.ALLOW, True, [])
    # The process has stopped: its audit was flushed on the way out.
    assert query(
        suite,
        "SELECT action, decision, without_counters FROM decisions WHERE app = %s ORDER BY 1",
        app,
    ) == [("gift", "DENY", True), ("redeem", "DENY", True), ("sign_in", "ALLOW", True)]


# --- bad input -------------------------------------------------------------------------------


async def test_bad_input_names_the_field(risk):
    app = await configure(risk)
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    cases = [
        (
            pb.EvaluateRequest(
                app=app, request_id="r", action="redeem", user_id="u", ip="999.1.1.1"
            ),
            "ip",
        ),
        (
            pb.EvaluateRequest(
                app=app, request_id="r", action="redeem", user_id="u", ip="1.2.3.4; DROP"
            ),
            "ip",
        ),
        (pb.EvaluateRequest(app=app, request_id="r", action="redeem"), "user_id"),
        (pb.EvaluateRequest(app=app, action="redeem", user_id="u"), "request_id"),
        (pb.EvaluateRequest(app=app, request_id="r", user_id="u"), "action"),
        (pb.EvaluateRequest(app=app, request_id="r", action="a", user_id="u", amount=-1), "amount"),
        (
            pb.EvaluateRequest(
                app=app, request_id="r", action="a", user_id="u", account_created_at=future
            ),
            "account_created_at",
        ),
        (pb.EvaluateRequest(request_id="r", action="a", user_id="u"), "app"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await risk.Evaluate(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rich_status(caught.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        [detail] = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        detail.Unpack(bad)
        assert bad.field_violations[0].field == field
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await risk.EvaluateBatch(
            pb.EvaluateBatchRequest(
                requests=[
                    pb.EvaluateRequest(app=app, request_id="x", action="a", user_id="u"),
                    pb.EvaluateRequest(app=app, request_id="y", action="a", user_id=""),
                ]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await risk.ListReviews(pb.ListReviewsRequest(app=app, state="maybe"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
