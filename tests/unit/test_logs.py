import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from plumbing.logs import JsonFormatter


def record(msg: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_a_log_line_is_one_json_object_with_the_extras():
    line = JsonFormatter("points").format(record("hello %s", saga_id="s-1"))
    entry = json.loads(line)
    assert entry["msg"] == "hello %s"
    assert entry["service"] == "points"
    assert entry["saga_id"] == "s-1"
    assert "trace_id" not in entry


def test_a_log_line_inside_a_span_carries_trace_and_span_ids():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        entry = json.loads(JsonFormatter("points").format(record("inside")))
    ctx = span.get_span_context()
    assert entry["trace_id"] == format(ctx.trace_id, "032x")
    assert entry["span_id"] == format(ctx.span_id, "016x")
