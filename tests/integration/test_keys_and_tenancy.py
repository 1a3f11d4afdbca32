"""What a key may do and see: its own token bucket (RATE_LIMITED with retry_after_ms, other keys
unaffected, no limit at all while Redis is away), and only its own app's sagas, order holds and
risk reviews, whatever ids another app's key guesses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2, loyalty_pb2_grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.bootstrap import AppKeys
from devtools.embedded import free_port
from devtools.suite import Suite
from plumbing.grpc_errors import error_info, reason_of
from tests.integration.conftest import Stubs, serve_alone
from tests.integration.gateway_apps import new_app
from tests.integration.test_gateway import earn_points, uid
from tests.integration.waiting import wait_for


async def get_member(stub: Any, app: AppKeys) -> str:
    """'OK', or the refusal as CODE/REASON (retry_after_ms after a colon when given)."""
    try:
        await stub.GetMember(pb.GetMemberRequest(user_id="u"), metadata=app.member, timeout=10)
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        wait = info.metadata.get("retry_after_ms", "") if info else ""
        return f"{error.code().name}/{reason_of(error)}" + (f":{wait}" if wait else "")
    return "OK"


async def test_each_key_has_its_own_bucket(suite: Suite, stubs: Stubs) -> None:
    """Burst 5, one a second: of 20 calls at once, 5 and at most a few refills pass; each
    refusal says when to come back (at most a second, at one a second); another key is not
    touched; after the wait it names, the key works again."""
    limited = await new_app(suite, stubs.admin, rate_per_second=1, burst=5)
    other = await new_app(suite, stubs.admin, rate_per_second=1, burst=5)
    answers = await asyncio.gather(*(get_member(stubs.loyalty, limited) for _ in range(20)))
    passed = answers.count("OK")
    refused = [a for a in answers if a != "OK"]
    assert 5 <= passed < 10, answers
    waits = []
    for answer in refused:
        kind, _, wait = answer.partition(":")
        assert kind == "RESOURCE_EXHAUSTED/RATE_LIMITED", answer
        waits.append(int(wait))
    assert all(0 < wait <= 1000 for wait in waits), waits
    assert await get_member(stubs.loyalty, other) == "OK"
    await asyncio.sleep(max(waits) / 1000)  # the wait the gateway named, and no guess
    await wait_for(lambda: get_member(stubs.loyalty, limited), lambda a: a == "OK", within=5)


async def test_no_rate_limit_while_redis_is_away(
    suite: Suite, stubs: Stubs, tmp_path: Path
) -> None:
    """Redis holds the buckets, not the truth: a gateway that cannot reach it lets calls
    through (and logs it) rather than refusing every member of every app."""
    app = await new_app(suite, stubs.admin, rate_per_second=1, burst=1)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with serve_alone(suite, "gateway", tmp_path, redis_url=dead_redis) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        answers = [await get_member(stub, app) for _ in range(5)]
    assert answers == ["OK"] * 5


@pytest.fixture
async def two_apps(suite: Suite, stubs: Stubs) -> tuple[AppKeys, AppKeys]:
    return await new_app(suite, stubs.admin), await new_app(suite, stubs.admin)


async def refusal(call: object) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code().name, reason_of(caught.value)


async def test_another_apps_saga_is_not_there(
    stubs: Stubs, two_apps: tuple[AppKeys, AppKeys]
) -> None:
    mine, theirs = two_apps
    user = uid()
    await earn_points(stubs, mine, user, 100_000)
    done = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id="same-id", user_id=user, sku="ticket-wolf-warrior-2"),
        metadata=mine.member,
        timeout=20,
    )
    assert done.status == pb.Redemption.COMPLETED
    saga_id = done.redemption_id
    assert await refusal(
        stubs.admin.GetSaga(admin_pb2.GetSagaRequest(saga_id=saga_id), metadata=theirs.admin)
    ) == ("NOT_FOUND", "SAGA_NOT_FOUND")
    assert await refusal(
        stubs.admin.RetrySaga(admin_pb2.RetrySagaRequest(saga_id=saga_id), metadata=theirs.admin)
    ) == ("NOT_FOUND", "SAGA_NOT_FOUND")
    listed = await stubs.admin.ListSagas(admin_pb2.ListSagasRequest(), metadata=theirs.admin)
    assert saga_id not in {s.saga_id for s in listed.sagas}
    found = await stubs.admin.ListSagas(
        admin_pb2.ListSagasRequest(request_id="same-id"), metadata=theirs.admin
    )
    assert list(found.sagas) == []
    # The same request_id in the other app is a saga of its own, not a replay of this one.
    theirs_too = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id="same-id", user_id=user, sku="ticket-wolf-warrior-2"),
        metadata=theirs.member,
        timeout=20,
    )
    assert theirs_too.redemption_id != saga_id
    assert theirs_too.reason == "INSUFFICIENT_POINTS"


async def test_another_apps_order_hold_is_not_there(
    stubs: Stubs, two_apps: tuple[AppKeys, AppKeys]
) -> None:
    mine, theirs = two_apps
    user = uid()
    await earn_points(stubs, mine, user, 100_000)
    order = uid("order")
    held = await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=uid("h"), user_id=user, order_ref=order, points=200, order_amount_fen=10_000
        ),
        metadata=mine.member,
        timeout=20,
    )
    assert held.state == "held"
    for call in (
        stubs.loyalty.CaptureOrder(
            pb.CaptureOrderRequest(request_id=uid("c"), order_ref=order), metadata=theirs.member
        ),
        stubs.loyalty.RefundOrder(
            pb.RefundOrderRequest(request_id=uid("r"), order_ref=order, points=100),
            metadata=theirs.member,
        ),
    ):
        code, _ = await refusal(call)
        assert code == "NOT_FOUND"
    listed = await stubs.loyalty.ListOrderHolds(pb.ListOrderHoldsRequest(), metadata=theirs.admin)
    assert order not in {h.order_ref for h in listed.holds}
    # Still held in its own app, untouched.
    mine_listed = await stubs.loyalty.ListOrderHolds(
        pb.ListOrderHoldsRequest(state="held"), metadata=mine.admin
    )
    assert [h.order_ref for h in mine_listed.holds] == [order]


async def test_another_apps_review_is_not_there(
    stubs: Stubs, two_apps: tuple[AppKeys, AppKeys]
) -> None:
    mine, theirs = two_apps
    device = uid("dev")
    for _ in range(4):  # shared-device: the fourth user on one device goes to review
        await stubs.loyalty.RecordEvent(
            pb.RecordEventRequest(
                event_id=uid("e"), user_id=uid(), action="register", device_id=device
            ),
            metadata=mine.member,
        )

    async def open_reviews(app: AppKeys) -> list[admin_pb2.Review]:
        reply = await stubs.admin.ListReviews(
            admin_pb2.ListReviewsRequest(state="open"), metadata=app.admin
        )
        return list(reply.reviews)

    (review,) = await wait_for(lambda: open_reviews(mine), lambda found: len(found) == 1)
    assert await open_reviews(theirs) == []
    code, _ = await refusal(
        stubs.admin.DecideReview(
            admin_pb2.DecideReviewRequest(review_id=review.review_id, approve=True),
            metadata=theirs.admin,
        )
    )
    assert code == "NOT_FOUND"
    (still,) = await open_reviews(mine)
    assert still.state == "open"
