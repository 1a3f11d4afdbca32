"""One trace across processes, as a collector receives it: a call made with a W3C
``traceparent`` in its gRPC metadata reaches a real levels process, whose server span, SQL
statements and Redis commands are all exported over OTLP in the caller's trace."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from loyalty.levels.v1 import levels_pb2 as pb
from loyalty.levels.v1 import levels_pb2_grpc

from devtools.suite import Suite
from tests.integration.conftest import serve_alone
from tests.integration.otlp import Receiver, otlp_receiver
from tests.integration.waiting import wait_for
from tests.programs import levels_section


@asynccontextmanager
async def traced_levels(
    suite: Suite, tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Receiver, levels_pb2_grpc.LevelsServiceAsyncStub, str]]:
    """A levels process of its own exporting to an OTLP receiver, and a configured app."""
    async with (
        otlp_receiver() as receiver,
        serve_alone(suite, "levels", tmp_path, env={**receiver.env, **(env or {})}) as channel,
    ):
        levels = levels_pb2_grpc.LevelsServiceStub(channel)
        app = f"tel-{uuid.uuid4().hex[:8]}"
        configured = await levels.ConfigureLevels(
            pb.ConfigureLevelsRequest(app=app, section_json=json.dumps(levels_section()))
        )
        assert not configured.errors
        yield receiver, levels, app


STATEMENTS = {"LOYALTY_LEVELS_TRACE_STATEMENTS": "true"}


async def test_server_sql_and_redis_spans_join_the_callers_trace(
    suite: Suite, tmp_path: Path
) -> None:
    async with traced_levels(suite, tmp_path, STATEMENTS) as (receiver, levels, app):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        await levels.AddGrowth(
            pb.AddGrowthRequest(
                app=app, event_id="e1", user_id="u1", action="purchase", amount=100
            ),
            metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
        )
        spans = await wait_for(
            lambda: receiver.in_trace(trace_id),
            lambda found: {"postgresql", "redis"} <= {s.attributes.get("db.system") for s in found},
        )
    server = [s for s in spans if s.kind == "SPAN_KIND_SERVER"]
    assert [s.parent_id for s in server] == [parent]
    assert "AddGrowth" in server[0].name
    assert any(s.attributes.get("db.system") == "postgresql" for s in spans)
    assert any(s.attributes.get("db.system") == "redis" for s in spans)


async def test_driver_statements_of_hot_paths_are_traced_when_asked(
    suite: Suite, tmp_path: Path
) -> None:
    """The hot paths run their statements on the driver (``plumbing.db.run_sql``), past
    SQLAlchemy's instrumentation: with TRACE_STATEMENTS each still gets its own span."""
    async with traced_levels(suite, tmp_path, STATEMENTS) as (receiver, levels, app):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        await levels.CheckTierBatch(
            pb.CheckTierBatchRequest(requests=[pb.CheckTierRequest(app=app, user_id="u1")]),
            metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
        )
        # Wait for the members read itself: spans are exported in batches, and the program's
        # read may arrive first, alone.
        spans = await wait_for(
            lambda: receiver.in_trace(trace_id),
            lambda found: any(
                "FROM members" in str(s.attributes.get("db.statement")) for s in found
            ),
        )
    statements = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert any("FROM members" in str(s.attributes.get("db.statement")) for s in statements)
    assert all(s.kind == "SPAN_KIND_CLIENT" for s in statements)


async def test_by_default_a_batch_is_one_span_with_its_count(suite: Suite, tmp_path: Path) -> None:
    """Without TRACE_STATEMENTS the hot path costs a span per call, not per statement: a
    batch of three growth events is one server span saying so, and nothing beneath it."""
    async with traced_levels(suite, tmp_path) as (receiver, levels, app):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        await levels.AddGrowthBatch(
            pb.AddGrowthBatchRequest(
                events=[
                    pb.AddGrowthRequest(
                        app=app, event_id=f"e{n}", user_id="u1", action="purchase", amount=10
                    )
                    for n in range(3)
                ]
            ),
            metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
        )
        spans = await wait_for(lambda: receiver.in_trace(trace_id), lambda found: bool(found))
    assert [(s.kind, s.attributes.get("loyalty.events")) for s in spans] == [
        ("SPAN_KIND_SERVER", 3)
    ]


async def test_sampling_follows_the_standard_variables(suite: Suite, tmp_path: Path) -> None:
    """OTEL_TRACES_SAMPLER decides: under parentbased_traceidratio at 0, a call whose caller
    sampled its trace is recorded and one whose caller did not is not, nor is a call with no
    trace of its own."""
    env = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    }
    async with traced_levels(suite, tmp_path, env) as (receiver, levels, app):
        unsampled, sampled = secrets.token_hex(16), secrets.token_hex(16)
        for trace_id, flags in ((unsampled, "00"), (sampled, "01")):
            await levels.GetLevel(
                pb.GetLevelRequest(app=app, user_id="u1"),
                metadata=(("traceparent", f"00-{trace_id}-{'2' * 16}-{flags}"),),
            )
        await wait_for(lambda: receiver.in_trace(sampled), lambda found: bool(found))
    assert await receiver.in_trace(unsampled) == []
    assert {s.trace_id for s in receiver.spans} == {sampled}
