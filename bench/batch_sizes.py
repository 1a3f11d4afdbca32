"""The batch sizes the suite's processes saw during a load, from their own metrics.

Every natural batcher records ``loyalty.batch.items`` (items per batch sent, by batcher name)
as an OpenTelemetry histogram. The benchmark runs an OTLP metrics receiver and starts the suite
with ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` pointing at it and a three-second export
interval; each export carries cumulative counts, so two snapshots taken after the load went
quiet bound exactly the batches of that load.

    with batch_sizes() as sizes:          # before the suite starts (it reads the environment)
        ... start the suite, warm up ...
        before = sizes.settled()
        ... the load ...
        per_batcher = sizes.since(before)  # {"gateway mall ReserveBatch": (batches, items)}
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

from devtools.embedded import free_port

METRIC = "loyalty.batch.items"
# The saga steps' latency (seconds, by step and outcome): its mean per step, for the answered
# steps, says which stage a saga waits on.
STEP_METRIC = "loyalty.saga.step.duration"
STEP_PREFIX = "step "
# Each export collects and sends every metric of a process: at one a second (15 times the
# production interval) it was 10-30% of the participants' Python time under redemption load,
# a cost of the measuring, not of the system measured. Three seconds keeps it small.
EXPORT_SECONDS = 3.0


def _attribute(attributes: Any, key: str) -> str:
    for attribute in attributes:
        if attribute.key == key:
            return str(attribute.value.string_value)
    return ""


class BatchSizes(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Keeps the latest cumulative (batches, items) of each process's batchers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, float]] = {}

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource in request.resource_metrics:
                service = _attribute(resource.resource.attributes, "service.name")
                service = service.removeprefix("loyalty-")
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        for point in metric.histogram.data_points:
                            if metric.name == METRIC:
                                name = f"{service} {_attribute(point.attributes, 'batch')}"
                            elif (
                                metric.name == STEP_METRIC
                                and _attribute(point.attributes, "outcome") == "OK"
                            ):
                                name = f"{STEP_PREFIX}{_attribute(point.attributes, 'step')}"
                            else:
                                continue
                            self._latest[name] = (int(point.count), float(point.sum))
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def settled(self) -> dict[str, tuple[int, float]]:
        """The figures once every process has exported after the load went quiet."""
        time.sleep(EXPORT_SECONDS * 2.5)
        with self._lock:
            return dict(self._latest)

    def since(self, before: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
        """(batches, items) per batcher since ``before`` (waits for the exports to settle)."""
        after = self.settled()
        seen: dict[str, tuple[int, float]] = {}
        for name, (count, total) in after.items():
            was_count, was_total = before.get(name, (0, 0.0))
            if count > was_count:
                seen[name] = (count - was_count, total - was_total)
        return seen


def lines(seen: dict[str, tuple[int, float]]) -> list[str]:
    """One line per batcher: batches, items, items per batch (largest batchers first)."""
    return [
        f"  {name:<40} {batches:>7,} batches {items:>9,.0f} items {items / batches:6.2f} a batch"
        for name, (batches, items) in sorted(seen.items(), key=lambda kv: -kv[1][1])
        if not name.startswith(STEP_PREFIX)
    ]


def step_lines(seen: dict[str, tuple[int, float]]) -> list[str]:
    """One line per saga step: how many answered, and their mean latency."""
    return [
        f"  {name.removeprefix(STEP_PREFIX):<12} {count:>7,} answered "
        f"{1000 * total / count:8.1f} ms"
        for name, (count, total) in sorted(seen.items())
        if name.startswith(STEP_PREFIX) and count
    ]


@contextmanager
def batch_sizes() -> Iterator[BatchSizes]:
    """An OTLP metrics receiver, and the environment that points processes started meanwhile
    at it (metrics only: traces stay unexported, as in the rest of the benchmark)."""
    receiver = BatchSizes()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    env = {
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": str(int(EXPORT_SECONDS * 1000)),
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield receiver
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop(grace=None)
