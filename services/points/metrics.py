"""Points counters for dashboards and the liability alert (OTLP → collector → Prometheus as
`loyalty_points_issued_total`, `_spent_total`, `_expired_total`, by app). The ledger is the
truth; these are for watching it move (a retried Capture may count twice)."""

from __future__ import annotations

from opentelemetry import metrics

_meter = metrics.get_meter("loyalty.points")
ISSUED = _meter.create_counter("loyalty.points.issued", description="Points credited")
SPENT = _meter.create_counter("loyalty.points.spent", description="Held points captured")
EXPIRED = _meter.create_counter("loyalty.points.expired", description="Points expired")


def count(counter: metrics.Counter, app: str, points: int) -> None:
    if points > 0:
        counter.add(points, {"app": app})
