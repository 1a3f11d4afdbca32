"""A saga's trace as an SRE's collector receives it: a real gateway process (beside the suite,
on the suite's participants and database) exports its spans over OTLP to a receiver this test
runs; every step is a child of the saga's root span, compensations are events on it, and a saga
taken up again links back to the trace it began in."""

from __future__ import annotations

import asyncio
import functools
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.suite import Suite
from tests.integration.conftest import Stubs, serve_alone
from tests.integration.gateway_apps import new_app, stuck_saga
from tests.integration.otlp import Receiver, Span, otlp_receiver
from tests.integration.test_gateway import earn_points
from tests.integration.waiting import wait_for


@pytest.fixture
async def traced_gateway(
    suite: Suite, tmp_path: Path
) -> AsyncIterator[tuple[grpc.aio.Channel, Receiver]]:
    async with (
        otlp_receiver() as receiver,
        serve_alone(suite, "gateway", tmp_path, env=receiver.env) as channel,
    ):
        yield channel, receiver


async def test_every_step_in_one_trace(
    suite: Suite, stubs: Stubs, traced_gateway: tuple[grpc.aio.Channel, Receiver]
) -> None:
    channel, receiver = traced_gateway
    member = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await earn_points(stubs, app, user, 100_000)

    done = await member.Redeem(
        pb.RedeemRequest(request_id="r1", user_id=user, sku="ticket-wolf-warrior-2"),
        metadata=app.member,
        timeout=20,
    )
    assert done.status == pb.Redemption.COMPLETED
    steps = ["risk", "tier", "reserve", "hold", "confirm", "capture"]
    spans = await wait_for(
        lambda: _spans(receiver, done.trace_id),
        lambda found: {"saga redeem", *(f"saga.step {s}" for s in steps)} <= set(found),
    )
    root = spans["saga redeem"]
    for step in steps:
        assert spans[f"saga.step {step}"].parent_id == root.span_id
    # The risk step travelled in a batch of evaluations: its span names the batch's trace,
    # whose span links back to the step.
    batch_trace = spans["saga.step risk"].attributes["loyalty.batch.trace_id"]
    batch = await wait_for(
        lambda: _spans(receiver, batch_trace), lambda found: "risk EvaluateBatch" in found
    )
    assert done.trace_id in batch["risk EvaluateBatch"].links
    assert root.attributes["saga.id"] == done.redemption_id
    assert (root.attributes["app"], root.attributes["sku"]) == (app.app, "ticket-wolf-warrior-2")
    assert root.attributes["saga.outcome"] == "COMPLETED"
    assert [name for name, _ in root.events] == ["commit"]
    logged = await admin.GetSaga(
        admin_pb2.GetSagaRequest(saga_id=done.redemption_id), metadata=app.admin
    )
    assert logged.trace_id == done.trace_id

    # A refusal: the compensations are events on the saga's root span.
    poor = await member.Redeem(
        pb.RedeemRequest(request_id="r2", user_id=user, sku="mobile-data-1g"),
        metadata=app.member,
        timeout=20,
    )
    assert poor.reason == "INSUFFICIENT_POINTS"
    spans = await wait_for(lambda: _spans(receiver, poor.trace_id), lambda f: "saga redeem" in f)
    root = spans["saga redeem"]
    assert root.attributes["saga.outcome"] == "COMPENSATED"
    assert [(name, attrs["step"]) for name, attrs in root.events] == [
        ("compensate", "hold"),
        ("compensate", "reserve"),
    ]

    # A saga an operator takes up again (RetrySaga) links to the trace it began in. It waits
    # for an operator, so no recovery loop of the suite takes it first.
    saga_id = "resumed-" + uuid.uuid4().hex
    began_in = "ab" * 16
    await stuck_saga(suite, app, user, saga_id, began_in)
    retried = await admin.RetrySaga(
        admin_pb2.RetrySagaRequest(saga_id=saga_id), metadata=app.admin, timeout=30
    )
    assert retried.state == "COMPENSATED"
    resumed = await wait_for(
        lambda: _named(receiver, "saga.resume redeem", saga_id),
        lambda found: found is not None,
    )
    assert resumed is not None
    assert resumed.links == [began_in]
    assert resumed.attributes["saga.outcome"] == "COMPENSATED"


async def _spans(receiver: Receiver, trace_id: str) -> dict[str, Span]:
    return receiver.of_trace(trace_id)


async def _named(receiver: Receiver, name: str, saga_id: str) -> Span | None:
    for span in receiver.spans:
        if span.name == name and span.attributes.get("saga.id") == saga_id:
            return span
    return None


async def test_coalesced_events_are_traced_once_per_batch(
    suite: Suite, stubs: Stubs, traced_gateway: tuple[grpc.aio.Channel, Receiver]
) -> None:
    """Concurrent single RecordEvent calls travel as one batch: the batch has a span of its
    own (with its item count, linked to every caller's span) under which the participant
    calls run; each caller's span names the batch's trace. No span per SQL statement unless
    TRACE_STATEMENTS asks for it."""
    channel, receiver = traced_gateway
    member = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
    app = await new_app(suite, stubs.admin)
    callers = [secrets.token_hex(16) for _ in range(12)]

    async def record(n: int, trace_id: str) -> None:
        await member.RecordEvent(
            pb.RecordEventRequest(event_id=f"t{n}", user_id=f"t{n}", action="register"),
            metadata=(*app.member, ("traceparent", f"00-{trace_id}-{'1' * 16}-01")),
            timeout=20,
        )

    await asyncio.gather(*(record(n, t) for n, t in enumerate(callers)))
    served = await wait_for(
        lambda: _served(receiver, callers),
        lambda found: len(found) == len(callers),
    )
    batches = {span.attributes["loyalty.batch.trace_id"] for span in served}
    batch_spans = await wait_for(
        lambda: _batch_spans(receiver, batches), lambda found: len(found) == len(batches)
    )
    assert sum(span.attributes["loyalty.items"] for span in batch_spans) == len(callers)
    assert sorted(link for span in batch_spans for link in span.links) == sorted(callers)
    for span in batch_spans:
        in_batch = await wait_for(
            functools.partial(receiver.in_trace, span.trace_id),
            lambda found: any("EarnBatch" in s.name for s in found),
        )
        names = {s.name for s in in_batch}
        assert {n for n in names if "Batch" in n} >= {
            "/loyalty.risk.v1.RiskService/EvaluateBatch",
            "/loyalty.points.v1.PointsService/EarnBatch",
        }
        assert not any("db.system" in s.attributes for s in in_batch)


async def _served(receiver: Receiver, callers: list[str]) -> list[Span]:
    return [
        s
        for s in receiver.spans
        if s.trace_id in callers and s.kind == "SPAN_KIND_SERVER" and "RecordEvent" in s.name
    ]


async def _batch_spans(receiver: Receiver, batches: set[str]) -> list[Span]:
    return [s for s in receiver.spans if s.name == "RecordEvent batch" and s.trace_id in batches]
