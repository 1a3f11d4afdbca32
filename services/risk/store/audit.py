"""The audit of every decision, written off Evaluate's path: decisions, reviews and alerts go
into an in-memory buffer that a writer task flushes in batches (every ``FLUSH_SECONDS`` or
``BATCH`` rows, whichever comes first). A clean shutdown flushes what is left before the
process exits; a crash loses at most one flush interval of audit rows, never a decision (the
decision itself was answered, and is remembered in Redis for replays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncEngine

from plumbing.db import json_rows

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
BATCH = 1000


# One statement per flush, whatever its size (rows as one JSON parameter).
_DECISIONS = """
    WITH d AS (
      SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(app text, request_id text, review_id text, action text, user_id text,
             device_id text, ip text, amount bigint, attributes jsonb, decision text,
             rules text[], score int, without_counters bool, decided_at timestamptz)),
    logged AS (
      INSERT INTO decisions (app, request_id, action, user_id, device_id, ip, amount,
                             attributes, decision, rules, score, without_counters, decided_at)
      SELECT app, request_id, action, user_id, device_id, ip, amount, attributes, decision,
             rules, score, without_counters, decided_at FROM d
      ON CONFLICT DO NOTHING)
    INSERT INTO reviews (app, review_id, request_id, action, user_id, rules, state, created_at)
    SELECT app, review_id, request_id, action, user_id, rules, 'open', decided_at FROM d
    WHERE decision = 'REVIEW'
    ON CONFLICT (app, review_id) DO NOTHING
"""
_ALERTS = """
    INSERT INTO alerts (app, kind, subject, message, raised_at)
    VALUES (%(app)s, %(kind)s, %(subject)s, %(message)s, %(raised_at)s)
"""


class AuditLog:
    def __init__(self, engine: AsyncEngine, meter: metrics.Meter | None = None) -> None:
        self._engine = engine
        meter = meter or metrics.get_meter("loyalty.risk")
        self._decided = meter.create_counter("loyalty.risk.decisions", description="decisions")
        self._alerted = meter.create_counter("loyalty.risk.alerts", description="alerts raised")
        self._decisions: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="risk-audit")

    def decisions(self, rows: list[dict[str, Any]]) -> None:
        """Queues decisions (and their reviews, if REVIEW); never waits. Counted once per
        (app, decision) for the lot, not once a row."""
        self._decisions.extend(rows)
        counted: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row["app"], row["decision"])
            counted[key] = counted.get(key, 0) + 1
        for (app, decision), n in counted.items():
            self._decided.add(n, {"app": app, "decision": decision})
        if len(self._decisions) >= BATCH:
            self._wake.set()

    def alert(self, app: str, kind: str, subject: str, message: str, at: datetime) -> None:
        log.warning("risk alert %s %s: %s", kind, subject, message, extra={"app": app})
        self._alerted.add(1, {"app": app, "kind": kind})
        self._alerts.append(
            {"app": app, "kind": kind, "subject": subject, "message": message, "raised_at": at}
        )
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The rows stay buffered and go with the next flush (the database restarts).
                log.exception("audit flush failed; retrying")
                await asyncio.sleep(1)

    async def flush(self) -> int:
        decisions, self._decisions = self._decisions, []
        alerts, self._alerts = self._alerts, []
        if not decisions and not alerts:
            return 0
        try:
            async with self._engine.begin() as conn:
                if decisions:
                    await conn.exec_driver_sql(_DECISIONS, {"rows": json_rows(decisions)})
                if alerts:
                    await conn.exec_driver_sql(_ALERTS, alerts)
        except BaseException:
            self._decisions[:0] = decisions
            self._alerts[:0] = alerts
            raise
        return len(decisions)

    async def close(self) -> None:
        """Stops the writer and flushes what is left (a clean shutdown loses nothing)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
