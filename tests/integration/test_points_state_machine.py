"""Random sequences of earn, grant, hold, capture, release, refund, reverse, expire and gift,
over gRPC against the real points service, with the ledger's invariants checked after every
step straight from its database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)
from loyalty.common.v1 import common_pb2
from loyalty.points.v1 import points_pb2 as pb
from loyalty.points.v1 import points_pb2_grpc
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.suite import Suite
from services.points.store.invariants import check_ledger
from tests.programs import points_section_json

T = TypeVar("T")
USERS = st.sampled_from(["ann", "bob", "cat"])
ACTIONS = st.sampled_from(["sign_in", "share", "watch", "purchase", "malicious_complaint"])
# Business refusals are expected outcomes of random steps; anything else fails the test.
EXPECTED = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}


class LedgerMachine(RuleBasedStateMachine):
    suite: Suite

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.channel, self.engine = self.run(_connect(self.suite))
        self.stub = points_pb2_grpc.PointsServiceStub(self.channel)
        self.app = f"sm-{uuid.uuid4().hex[:10]}"

    holds = Bundle("holds")
    captured = Bundle("captured")
    events = Bundle("events")

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def call(self, work: Awaitable[T]) -> T | None:
        try:
            return self.run(work)
        except grpc.aio.AioRpcError as error:
            if error.code() not in EXPECTED:
                raise
            return None

    def teardown(self) -> None:
        self.run(self.channel.close())
        self.run(self.engine.dispose())
        self.loop.close()

    @initialize()
    def configure(self) -> None:
        self.run(
            self.stub.ConfigureRules(
                pb.ConfigureRulesRequest(app=self.app, section_json=points_section_json())
            )
        )

    @rule(target=events, user=USERS, action=ACTIONS, amount=st.integers(0, 50_000))
    def earn(self, user: str, action: str, amount: int) -> Any:
        event_id = uuid.uuid4().hex
        self.run(
            self.stub.Earn(
                pb.EarnRequest(
                    app=self.app,
                    event_id=event_id,
                    user_id=user,
                    action=action,
                    quantity=amount % 40,
                    attributes={"amount_fen": str(amount)},
                )
            )
        )
        return event_id

    @rule(user=USERS, amount=st.integers(1, 500))
    def grant(self, user: str, amount: int) -> None:
        self.run(
            self.stub.Grant(
                pb.GrantRequest(
                    app=self.app,
                    request_id=uuid.uuid4().hex,
                    user_id=user,
                    amount=amount,
                    reason="sm",
                    operator="sm",
                )
            )
        )

    @rule(target=holds, user=USERS, amount=st.integers(1, 400), ttl_days=st.integers(1, 7))
    def hold(self, user: str, amount: int, ttl_days: int) -> Any:
        saga = uuid.uuid4().hex
        held = self.call(
            self.stub.Hold(
                pb.HoldRequest(
                    app=self.app,
                    saga_id=saga,
                    user_id=user,
                    amount=amount,
                    ttl=Duration(seconds=ttl_days * 86400),
                )
            )
        )
        return saga if held is not None else multiple()

    @rule(target=captured, saga=consumes(holds))
    def capture(self, saga: str) -> Any:
        done = self.call(self.stub.Capture(pb.CaptureRequest(app=self.app, saga_id=saga)))
        return (saga, done.amount) if done is not None else multiple()

    @rule(saga=consumes(holds))
    def release(self, saga: str) -> None:
        self.call(self.stub.ReleaseHold(pb.ReleaseHoldRequest(app=self.app, saga_id=saga)))

    @rule(saga=st.uuids())
    def release_unknown(self, saga: Any) -> None:
        self.call(self.stub.ReleaseHold(pb.ReleaseHoldRequest(app=self.app, saga_id=str(saga))))

    @rule(capture=captured, share=st.integers(1, 100))
    def refund(self, capture: tuple[str, int], share: int) -> None:
        saga, amount = capture
        self.call(
            self.stub.Refund(
                pb.RefundRequest(
                    app=self.app,
                    request_id=uuid.uuid4().hex,
                    saga_id=saga,
                    amount=max(1, amount * share // 100),
                )
            )
        )

    @rule(event=consumes(events))
    def reverse(self, event: str) -> None:
        self.call(
            self.stub.ReverseEvent(pb.ReverseEventRequest(app=self.app, event_id=event, reason="x"))
        )

    @rule(days=st.integers(1, 200))
    def expire(self, days: int) -> None:
        self.run(
            self.stub.AdvanceClock(
                common_pb2.AdvanceClockRequest(
                    app=self.app, seconds=days * 86400, request_id=uuid.uuid4().hex
                )
            )
        )

    @rule(sender=USERS, receiver=USERS, amount=st.integers(1, 300))
    def gift(self, sender: str, receiver: str, amount: int) -> None:
        if sender == receiver:
            return
        self.call(
            self.stub.Gift(
                pb.GiftRequest(
                    app=self.app,
                    request_id=uuid.uuid4().hex,
                    from_user_id=sender,
                    to_user_id=receiver,
                    amount=amount,
                )
            )
        )

    @invariant()
    def ledger_holds(self) -> None:
        async def check() -> list[Any]:
            async with self.engine.connect() as conn:
                return await check_ledger(conn, self.app)

        assert self.run(check()) == []

    @invariant()
    def available_is_balance_minus_held(self) -> None:
        for user in ("ann", "bob", "cat"):
            view = self.call(self.stub.GetBalance(pb.GetBalanceRequest(app=self.app, user_id=user)))
            if view is not None:
                assert view.available == view.balance - view.held


async def _connect(suite: Suite) -> tuple[grpc.aio.Channel, Any]:
    """Channel and engine, made inside the machine's own event loop."""
    channel = grpc.aio.insecure_channel(suite.address("points"))
    return channel, create_async_engine(suite.database_url("points"), pool_size=2)


@pytest.mark.timeout(600)
def test_the_ledger_keeps_its_invariants(suite: Suite) -> None:
    LedgerMachine.suite = suite
    run = LedgerMachine.TestCase
    run.settings = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
