"""OTEL_TRACES_SAMPLER=loyalty_sagas: every saga's trace kept whatever the ratio for plain
calls, batches kept when they carry a kept caller's item, children with their parent."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import Link, SpanContext, TraceFlags

from plumbing.telemetry import SagaSampler, sampler_from_env


def tracer() -> trace.Tracer:
    # Plain calls at ratio 0: only what the saga rule keeps is sampled.
    provider = TracerProvider(sampler=ParentBased(root=SagaSampler(0.0)))
    return provider.get_tracer("test")


def sampled(span: trace.Span) -> bool:
    return span.get_span_context().trace_flags.sampled


@pytest.mark.parametrize(
    "name",
    [
        "/loyalty.gateway.v1.LoyaltyService/Redeem",
        "/loyalty.gateway.v1.LoyaltyService/Draw",
        "saga.resume redeem",
    ],
)
def test_a_saga_root_is_kept_at_any_ratio(name: str) -> None:
    with tracer().start_as_current_span(name) as root:
        assert sampled(root)
        with tracer().start_as_current_span("saga.step hold") as step:
            assert sampled(step)


def test_a_plain_call_follows_the_ratio() -> None:
    with tracer().start_as_current_span("/loyalty.gateway.v1.LoyaltyService/GetMember") as span:
        assert not sampled(span)


def test_a_batch_is_kept_when_a_caller_in_it_is() -> None:
    kept = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    dropped = SpanContext(3, 4, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    with tracer().start_as_current_span(
        "points HoldBatch",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        links=[Link(dropped), Link(kept)],
    ) as batch:
        assert sampled(batch)
    with tracer().start_as_current_span("points HoldBatch", links=[Link(dropped)]) as batch:
        assert not sampled(batch)


def test_the_setting_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "loyalty_sagas")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    sampler = sampler_from_env()
    assert sampler is not None
    assert "SagaSampler" in sampler.get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    assert sampler_from_env() is None
