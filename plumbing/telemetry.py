"""OpenTelemetry: traces for every gRPC call (server and client), with W3C trace context in
gRPC metadata; batch paths add their item count to the call's span. Spans per SQL statement
and Redis command only with ``LOYALTY_<SERVICE>_TRACE_STATEMENTS=true``: on the hot paths they
would cost more than the statements themselves.

Spans go to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Sampling follows the standard
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` variables (default: parent-based, always
on), plus ``loyalty_sagas`` (``SagaSampler``: every saga whole, a ratio of plain calls);
production samples plain calls by ratio (BASELINES.md: tracing every call costs ~40% of an
echo server). ``OTEL_SDK_DISABLED=true`` turns tracing off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import grpc
from grpc.aio import _channel as grpc_aio_channel
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import (
    GrpcAioInstrumentorClient,
    GrpcAioInstrumentorServer,
)
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.db import trace_driver_statements

_state: dict[str, TracerProvider] = {}
_EXEMPLAR_FILTERS: dict[str, Callable[[], ExemplarFilter]] = {
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}
_meters: dict[str, MeterProvider] = {}


# The root spans of sagas: the gateway's calls that start one, and a later drive's own root.
SAGA_ROOTS = frozenset(
    {
        "/loyalty.gateway.v1.LoyaltyService/Redeem",
        "/loyalty.gateway.v1.LoyaltyService/Draw",
    }
)
SAGA_SAMPLER = "loyalty_sagas"


class SagaSampler(Sampler):
    """The root decision of ``OTEL_TRACES_SAMPLER=loyalty_sagas``: every saga's trace whole (a
    call that starts a saga, a recovery drive ``saga.resume ...``), every batch that carries
    a kept caller's item (its links), and ``ratio`` of everything else. Children follow their
    parent (``ParentBased``), so a saga's steps and the participants' spans under it are kept
    with it. A tail-sampling collector would see only what the head kept; this keeps the
    decision where the saga is known."""

    def __init__(self, ratio: float) -> None:
        self._rest = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if (
            name in SAGA_ROOTS
            or name.startswith("saga.")
            or any(link.context.trace_flags.sampled for link in links or ())
        ):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._rest.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SagaSampler{{rest={self._rest.get_description()}}}"


def sampler_from_env() -> Sampler | None:
    """``loyalty_sagas`` (ratio from ``OTEL_TRACES_SAMPLER_ARG``, 0.1 by default); None lets the
    SDK read the standard ``OTEL_TRACES_SAMPLER`` values itself."""
    if os.environ.get("OTEL_TRACES_SAMPLER", "") != SAGA_SAMPLER:
        return None
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG") or 0.1)
    except ValueError:
        ratio = 0.1
    return ParentBased(root=SagaSampler(min(max(ratio, 0.0), 1.0)))


def setup_telemetry(
    service: str, extra_exporter: SpanExporter | None = None, *, trace_statements: bool = False
) -> TracerProvider:
    """Install the tracer provider and the gRPC instrumentation, and the Redis one when
    ``trace_statements`` (once per process)."""
    if "provider" in _state:
        return _state["provider"]
    resource = Resource.create(
        {"service.name": f"loyalty-{service}", "service.namespace": "loyalty"}
    )
    provider = TracerProvider(resource=resource, sampler=sampler_from_env())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Metrics (decisions, alerts, ...) go to the same collector.
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        # Every 15 s unless OTEL_METRIC_EXPORT_INTERVAL (ms, the SDK's variable) says otherwise.
        interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 15_000)
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=interval)
        )
    # Exemplars off unless OTEL_METRICS_EXEMPLAR_FILTER asks for them: the SDK's default
    # (trace_based) offers every measurement taken inside a sampled span to a reservoir, and
    # that was 12-14% of the whole suite's CPU per redemption (bench/redeem.py, back to back).
    exemplars = os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        exemplar_filter=_EXEMPLAR_FILTERS.get(exemplars, AlwaysOffExemplarFilter)(),
    )
    metrics.set_meter_provider(meter_provider)
    _meters["provider"] = meter_provider
    if extra_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    if trace_statements:
        RedisInstrumentor().instrument()
    _state["provider"] = provider
    return provider


def instrument_engine(engine: AsyncEngine) -> None:
    trace_driver_statements()
    # The instrumentation declares sqlalchemy < 2.1 but only hooks engine events, which 2.1
    # keeps; tests/unit/test_telemetry.py proves SQL spans still appear.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, enable_commenter=False, skip_dep_check=True
    )


def shutdown_telemetry() -> None:
    provider = _state.get("provider")
    if provider is not None:
        provider.shutdown()
    meter_provider = _meters.get("provider")
    if meter_provider is not None:
        meter_provider.shutdown()


@contextmanager
def batch_span(
    tracer: trace.Tracer, name: str, callers: Sequence[trace.Span], **attributes: Any
) -> Iterator[trace.Span]:
    """The span of a batch that carries many callers' items: a trace of its own, linked to
    every caller's span, each of which names it in ``loyalty.batch.trace_id`` (so an SRE goes
    from a saga or an event to the batch it travelled in, and back)."""
    links = [trace.Link(s.get_span_context()) for s in callers if s.get_span_context().is_valid]
    with tracer.start_as_current_span(
        name,
        context=Context(),
        links=links,
        attributes={"loyalty.items": len(callers), **attributes},
    ) as span:
        context = span.get_span_context()
        if context.is_valid:
            for caller in callers:
                caller.set_attribute("loyalty.batch.trace_id", f"{context.trace_id:032x}")
        yield span


def batch_channel(target: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel for batch calls, without the OpenTelemetry client interceptor: any client
    interceptor moves every call of a grpc.aio channel off its fast path (measured: the
    intercepted call machinery was 9% of the gateway's CPU under redemption load), and a batch
    already has its own span (``batch_span``). Its callers pass ``trace_metadata()``, so the
    participant's server span is still the batch span's child."""
    # grpc.aio.insecure_channel itself is replaced by the instrumentor with one that adds it.
    return cast(grpc.aio.Channel, grpc_aio_channel.insecure_channel(target, options=list(options)))


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current span's W3C trace context as gRPC metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())
