"""One trace across a gRPC client, a gRPC server, its SQL statements and its Redis commands,
with the W3C context carried in gRPC metadata."""

import grpc
import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from devtools.suite import Suite
from plumbing.db import create_engine
from plumbing.grpc_errors import ErrorMappingInterceptor
from plumbing.redis import create_redis
from plumbing.telemetry import instrument_engine, setup_telemetry


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    setup_telemetry("test", extra_exporter=memory)
    return memory


async def test_client_server_sql_and_redis_spans_share_one_trace(exporter, suite: Suite):
    engine = create_engine(suite.database_url("points"), pool_size=2)
    instrument_engine(engine)
    redis = create_redis(suite.redis_url)
    seen_traceparent: list[str] = []

    class Servicer(points_pb2_grpc.PointsServiceServicer):
        async def GetBalance(self, request, context):
            metadata = dict(context.invocation_metadata())
            seen_traceparent.append(metadata.get("traceparent", ""))
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            await redis.get("loyalty:test:nothing")
            return points_pb2.Balance(user_id=request.user_id)

    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    points_pb2_grpc.add_PointsServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    exporter.clear()
    try:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("caller") as root:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await points_pb2_grpc.PointsServiceStub(channel).GetBalance(
                    points_pb2.GetBalanceRequest(app="video", user_id="u1")
                )
    finally:
        await server.stop(0)
        await engine.dispose()
        await redis.aclose()

    trace_id = root.get_span_context().trace_id
    assert seen_traceparent[0].startswith(f"00-{trace_id:032x}-")
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    kinds = {s.kind for s in spans}
    assert trace.SpanKind.CLIENT in kinds
    assert trace.SpanKind.SERVER in kinds
    names = [s.name for s in spans]
    assert any("GetBalance" in n for n in names), names
    assert any(s.attributes.get("db.system") == "postgresql" for s in spans), names
    assert any(s.attributes.get("db.system") == "redis" for s in spans), names
