"""Risk decisions and alerts are counted as OpenTelemetry metrics (exported over OTLP by
plumbing.telemetry when a collector is configured)."""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.risk.store.audit import AuditLog


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, object], ...], int]:
    found: dict[tuple[tuple[str, object], ...], int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = int(point.value)  # type: ignore[union-attr]
    return found


def test_decisions_and_alerts_are_counted() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    audit = AuditLog(engine=None, meter=meter)  # type: ignore[arg-type]  # nothing is flushed
    now = datetime.now(UTC)
    audit.decisions([{"app": "video", "decision": "ALLOW"}, {"app": "video", "decision": "DENY"}])
    audit.decisions([{"app": "video", "decision": "ALLOW"}])
    audit.alert("video", "run", "prize:iphone", "taken too fast", now)
    assert _points(reader, "loyalty.risk.decisions") == {
        (("app", "video"), ("decision", "ALLOW")): 2,
        (("app", "video"), ("decision", "DENY")): 1,
    }
    assert _points(reader, "loyalty.risk.alerts") == {(("app", "video"), ("kind", "run")): 1}
