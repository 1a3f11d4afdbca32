"""A saga's trace, read from an in-memory span exporter: the gateway's saga code runs in this
process (against the suite's real participants and database) with its tracer pointed at the
exporter; every step is a child of the saga's root span, compensations are events on it, and a
resumed saga links back to the trace it began in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from loyalty.gateway.v1 import loyalty_pb2 as pb
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.suite import Suite
from gateway.context import Gateway, gateway_of
from gateway.member_api import LoyaltyServicer
from gateway.settings import GatewaySettings
from plumbing.clock import SystemClock
from plumbing.db import create_engine, sessions
from plumbing.server import Resources
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app
from tests.integration.test_gateway import earn_points


class CallContext:
    """What the servicer reads of a gRPC call: its metadata and its deadline."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None


@pytest.fixture
async def traced(suite: Suite) -> AsyncIterator[tuple[Gateway, InMemorySpanExporter]]:
    settings = GatewaySettings(
        database_url=suite.database_url("gateway"),
        points_addr=suite.address("points"),
        levels_addr=suite.address("levels"),
        mall_addr=suite.address("mall"),
        lottery_addr=suite.address("lottery"),
        risk_addr=suite.address("risk"),
    )
    engine = create_engine(settings.database_url, 4)
    resources = Resources(settings, engine, sessions(engine), None, SystemClock())
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    gw = gateway_of(resources)
    gw.tracer = provider.get_tracer("test")
    try:
        yield gw, memory
    finally:
        await resources.cleanup.aclose()
        await engine.dispose()


def _by_name(spans: Any, trace_id: int) -> dict[str, Any]:
    return {s.name: s for s in spans if s.context.trace_id == trace_id}


async def test_every_step_in_one_trace(
    suite: Suite, stubs: Stubs, traced: tuple[Gateway, InMemorySpanExporter]
) -> None:
    gw, memory = traced
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await earn_points(stubs, app, user, 100_000)
    servicer = LoyaltyServicer(gw.resources)
    context: Any = CallContext(app.member)

    done = await servicer.Redeem(
        pb.RedeemRequest(request_id="r1", user_id=user, sku="ticket-wolf-warrior-2"), context
    )
    assert done.status == pb.Redemption.COMPLETED
    trace_id = int(done.trace_id, 16)
    spans = _by_name(memory.get_finished_spans(), trace_id)
    root = spans["saga redeem"]
    steps = ["risk", "tier", "reserve", "hold", "confirm", "capture"]
    for step in steps:
        span = spans[f"saga.step {step}"]
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id
    assert root.attributes["saga.id"] == done.redemption_id
    assert (root.attributes["app"], root.attributes["sku"]) == (app.app, "ticket-wolf-warrior-2")
    assert root.attributes["saga.outcome"] == "COMPLETED"
    assert [e.name for e in root.events] == ["commit"]

    # A refusal: the compensations are events on the saga's root span.
    poor = await servicer.Redeem(
        pb.RedeemRequest(request_id="r2", user_id=user, sku="mobile-data-1g"), context
    )
    assert poor.reason == "INSUFFICIENT_POINTS"
    root = _by_name(memory.get_finished_spans(), int(poor.trace_id, 16))["saga redeem"]
    assert root.attributes["saga.outcome"] == "COMPENSATED"
    assert [(e.name, e.attributes["step"]) for e in root.events] == [
        ("compensate", "hold"),
        ("compensate", "reserve"),
    ]

    # A saga the recovery loop resumes links to the trace it began in.
    saga, _ = await gw.sagas.start(
        "resumed-" + uuid.uuid4().hex, app.app, "redeem", "r3", user, {}, "h", "ab" * 16, "cd" * 8
    )
    memory.clear()
    await gw.resume(saga)
    (resumed,) = [s for s in memory.get_finished_spans() if s.name == "saga.resume redeem"]
    assert resumed.links[0].context.trace_id == int("ab" * 16, 16)
    assert dict(resumed.attributes or {})["saga.outcome"] == "COMPENSATED"
    assert (await gw.sagas.get(app.app, saga.saga_id)).state == "COMPENSATED"  # type: ignore[union-attr]
