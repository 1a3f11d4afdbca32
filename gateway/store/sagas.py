"""The saga log: one row per saga, rewritten at each step boundary, leased to one driver.

A driver (the Redeem call, the recovery loop or RetrySaga) owns a saga while its lease runs;
the recovery loop takes only sagas whose lease has run out, with ``FOR UPDATE SKIP LOCKED`` so
several gateway replicas never take the same one. Lease times are the database's clock, so
replicas with skewed clocks still agree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.sagas import SagaState, SagaStep, StepState
from gateway.store.tables import sagas
from plumbing.batching import NaturalBatcher
from plumbing.db import json_rows, run_sql
from plumbing.errors import IdempotencyConflict


class LeaseLost(Exception):
    """Another driver leased the saga (this driver's lease ran out): this one stops."""


@dataclass
class SagaRecord:
    saga_id: str
    app: str
    kind: str
    request_id: str
    user_id: str
    payload: dict[str, Any]
    state: SagaState
    reason: str = ""
    trace_id: str = ""
    span_id: str = ""
    steps: list[SagaStep] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    drives: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Not stored. The request's digest (replays compare it); when this driver last renewed
    # its lease (time.monotonic(); 0: at once on the next save).
    payload_hash: str = ""
    lease_renewed: float = 0.0
    # The token of the driver that holds the lease (each lease takes a new one).
    driver: str = ""
    # The saga's trace was sampled at its root (kept by the tracing backend).
    trace_kept: bool = True

    def step(self, name: str) -> SagaStep:
        for step in self.steps:
            if step.name == name:
                return step
        fresh = SagaStep(name)
        self.steps.append(fresh)
        return fresh

    def done(self, name: str) -> bool:
        return any(s.name == name and s.state is StepState.DONE for s in self.steps)

    def touched(self, name: str) -> bool:
        """The step was tried at least once (so it may have acted)."""
        return any(s.name == name and s.attempts > 0 for s in self.steps)


_COLUMNS = (
    "saga_id, app, kind, request_id, user_id, payload, state, reason, trace_id, span_id, "
    "steps, result, drives, created_at, updated_at, driver, trace_kept"
)

# Group commit of new sagas: concurrent Redeem/Draw calls' rows in one statement, in request
# key order (two batches holding the same keys wait instead of deadlocking).
_START = f"""
    INSERT INTO sagas (saga_id, app, kind, request_id, user_id, payload, payload_hash, state,
                       reason, trace_id, span_id, steps, result, drives, lease_until, created_at,
                       updated_at, app_day, driver, trace_kept)
    SELECT r.saga_id, r.app, r.kind, r.request_id, r.user_id, r.payload, r.hash, r.state,
           r.reason, r.trace_id, r.span_id, '[]'::jsonb, '{{}}'::jsonb, 1,
           now() + make_interval(secs => r.lease), now(), now(), r.app_day, r.saga_id,
           r.trace_kept
    FROM json_to_recordset(%(rows)s::json)
      AS r(saga_id text, app text, kind text, request_id text, user_id text, payload jsonb,
           hash text, state text, reason text, trace_id text, span_id text, lease float8,
           app_day date, trace_kept boolean)
    ORDER BY r.app, r.kind, r.request_id
    -- Any key: a saga id follows from its request key, so both name the same saga.
    ON CONFLICT DO NOTHING
    RETURNING {_COLUMNS}
"""
_BY_REQUESTS = f"""
    SELECT {_COLUMNS}, payload_hash FROM sagas s
    JOIN json_to_recordset(%(keys)s::json) AS k(app text, kind text, request_id text)
      USING (app, kind, request_id)
"""
# Group commit: the saves of concurrent sagas in one statement and one commit. The rows are
# locked in saga_id order first, so two batches can never wait on each other in a cycle. A
# save is fenced by its driver's token: once another driver has leased the saga (this one's
# lease ran out), this one's writes change nothing and it stops (LeaseLost).
_SAVE = """
    WITH row AS (
      SELECT * FROM json_to_recordset(%(rows)s::json)
        AS r(saga_id text, driver text, state text, reason text, steps jsonb, result jsonb,
             lease float8)),
    locked AS (
      SELECT saga_id FROM sagas WHERE saga_id = ANY(%(ids)s::text[])
      ORDER BY saga_id FOR UPDATE)
    UPDATE sagas s SET state = row.state, reason = row.reason, steps = row.steps,
                       result = row.result, updated_at = now(),
                       -- Renewed only when due: an indexed column left alone keeps the
                       -- update HOT (no new index entries) while the state does not change.
                       lease_until = CASE WHEN row.lease IS NULL THEN s.lease_until
                                          ELSE now() + make_interval(secs => row.lease) END
    FROM row JOIN locked USING (saga_id)
    WHERE s.saga_id = row.saga_id AND s.driver = row.driver
    RETURNING s.saga_id
"""
_LEASE_DUE = f"""
    WITH due AS (
      SELECT saga_id FROM sagas
      WHERE state IN ('STARTED', 'CONFIRMING', 'COMPENSATING') AND lease_until < now()
      ORDER BY lease_until LIMIT %(limit)s
      FOR UPDATE SKIP LOCKED)
    UPDATE sagas SET lease_until = now() + make_interval(secs => %(lease)s),
                     drives = sagas.drives + 1, driver = gen_random_uuid()::text
    FROM due WHERE sagas.saga_id = due.saga_id
    RETURNING {", ".join("sagas." + c.strip() for c in _COLUMNS.split(","))}
"""
_LEASE_ONE = f"""
    UPDATE sagas SET lease_until = now() + make_interval(secs => %(lease)s),
                     drives = CASE WHEN %(reset)s THEN 1 ELSE drives + 1 END,
                     driver = gen_random_uuid()::text,
                     state = CASE WHEN state = 'NEEDS_ATTENTION' THEN %(resume_state)s
                                  ELSE state END
    WHERE saga_id = %(saga_id)s AND app = %(app)s
      AND (state = 'NEEDS_ATTENTION' OR (state IN ('STARTED', 'CONFIRMING', 'COMPENSATING')
           AND lease_until < now()))
    RETURNING {_COLUMNS}
"""


def _record(row: Any) -> SagaRecord:
    return SagaRecord(
        saga_id=row[0],
        app=row[1],
        kind=row[2],
        request_id=row[3],
        user_id=row[4],
        payload=row[5],
        state=SagaState(row[6]),
        reason=row[7],
        trace_id=row[8],
        span_id=row[9],
        steps=[SagaStep.from_json(step) for step in row[10]],
        result=dict(row[11]),
        drives=row[12],
        created_at=row[13],
        updated_at=row[14],
        driver=row[15],
        trace_kept=bool(row[16]),
    )


class SagaLog:
    def __init__(self, engine: AsyncEngine, lease_seconds: float, *, in_flight: int = 1) -> None:
        self._engine = engine
        self.lease_seconds = lease_seconds
        # Starts and saves of concurrent sagas share one transaction and one commit (group
        # commit): a batch holds whatever queued while the previous one was being written.
        self._writes: NaturalBatcher[str, tuple[str, dict[str, Any]], Any] = NaturalBatcher(
            self._write_batch, max_batch=1000, in_flight=in_flight, name="SagaLog writes"
        )

    async def start(
        self,
        saga_id: str,
        app: str,
        kind: str,
        request_id: str,
        user_id: str,
        payload: dict[str, Any],
        payload_hash: str,
        trace_id: str,
        span_id: str,
        app_day: date,
        refused: str = "",
        *,
        trace_kept: bool = True,
    ) -> tuple[SagaRecord, bool]:
        """The new saga (leased to the caller), or the one this request_id started before
        (False). The same request_id with another payload is refused. With ``refused`` (a
        reason), the new saga is written already COMPENSATED for that reason: refused at the
        door, with nothing to undo. Concurrent starts share one statement and one commit."""
        row = {
            "saga_id": saga_id,
            "app": app,
            "kind": kind,
            "request_id": request_id,
            "user_id": user_id,
            "payload": payload,
            "hash": payload_hash,
            "trace_id": trace_id,
            "span_id": span_id,
            "lease": self.lease_seconds,
            "app_day": app_day.isoformat(),
            "trace_kept": trace_kept,
            "state": SagaState.COMPENSATED if refused else SagaState.STARTED,
            "reason": refused,
        }
        found, new = await self._writes.submit("log", ("start", row))
        if found.payload_hash != payload_hash:
            raise IdempotencyConflict(
                f"request_id {request_id!r} was already used for a different {kind} request"
            )
        if new:
            found.lease_renewed = time.monotonic()
        return found, new

    async def _write_batch(self, _: str, writes: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        """One transaction for a batch of saves and starts: the saves first (rows locked in
        saga_id order), then the starts (request keys in order)."""
        saves = [row for kind, row in writes if kind == "save"]
        starts = [row for kind, row in writes if kind == "start"]
        async with self._engine.begin() as conn:
            saved = iter(await self._save_rows(conn, saves) if saves else [])
            started = iter(await self._start_rows(conn, starts) if starts else [])
        return [next(saved) if kind == "save" else next(started) for kind, _ in writes]

    async def _start_rows(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> list[tuple[SagaRecord, bool]]:
        # The same request twice in one batch: the first starts it, the second replays it.
        firsts: dict[str, dict[str, Any]] = {}
        for row in rows:
            firsts.setdefault(row["saga_id"], row)
        inserted = {
            record.saga_id: record
            for record in map(
                _record, await run_sql(conn, _START, {"rows": json_rows(firsts.values())})
            )
        }

        def started(row: dict[str, Any]) -> bool:
            return row["saga_id"] in inserted and firsts[row["saga_id"]] is row

        others = [row for row in rows if not started(row)]
        existing: dict[tuple[str, str, str], SagaRecord] = {}
        if others:
            keys = [
                {"app": r["app"], "kind": r["kind"], "request_id": r["request_id"]} for r in others
            ]
            for found in await run_sql(conn, _BY_REQUESTS, {"keys": json_rows(keys)}):
                record = _record(found)
                record.payload_hash = found[-1]
                existing[(record.app, record.kind, record.request_id)] = record
        answers: list[tuple[SagaRecord, bool]] = []
        for row in rows:
            if started(row):
                record = inserted[row["saga_id"]]
                record.payload_hash = row["hash"]
                answers.append((record, True))
            else:
                answers.append((existing[(row["app"], row["kind"], row["request_id"])], False))
        return answers

    def renewal_due(self, saga: SagaRecord, horizon: float = 0.0) -> bool:
        """Whether the driver's lease should be renewed now: half of it has run, or less than
        ``horizon`` seconds (what the driver's next call may take) would be left."""
        elapsed = time.monotonic() - saga.lease_renewed
        return elapsed > min(self.lease_seconds / 2, self.lease_seconds - horizon)

    async def save(
        self, saga: SagaRecord, lease_seconds: float | None = None, *, horizon: float = 0.0
    ) -> None:
        """Writes the saga's state, steps and result; renews the driver's lease when due
        (``renewal_due``), or sets it to ``lease_seconds`` from now (0 hands the saga to the
        recovery loop at once). Returns once it is committed: concurrent sagas' saves share one
        statement and one commit (natural batching), each as durable as if written alone.
        LeaseLost when another driver has taken the saga."""
        lease: float | None = lease_seconds
        if lease is None and self.renewal_due(saga, horizon):
            lease = self.lease_seconds
        if lease is not None:
            saga.lease_renewed = time.monotonic()
        await self._writes.submit(
            "log",
            (
                "save",
                {
                    "saga_id": saga.saga_id,
                    "driver": saga.driver,
                    "state": saga.state,
                    "reason": saga.reason,
                    "steps": [step.as_json() for step in saga.steps],
                    "result": saga.result,
                    "lease": lease,
                },
            ),
        )

    async def _save_rows(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> list[LeaseLost | None]:
        latest = {row["saga_id"]: row for row in rows}  # one driver per saga: the last wins
        saved = await run_sql(
            conn, _SAVE, {"rows": json_rows(latest.values()), "ids": sorted(latest)}
        )
        written = {row[0] for row in saved}
        return [
            None
            if row["saga_id"] in written
            else LeaseLost(f"saga {row['saga_id']} was leased by another driver")
            for row in rows
        ]

    async def lease_due(self, limit: int) -> list[SagaRecord]:
        """Unfinished sagas whose driver is gone, now leased to the caller."""
        async with self._engine.begin() as conn:
            rows = await run_sql(conn, _LEASE_DUE, {"limit": limit, "lease": self.lease_seconds})
            leased = [_record(row) for row in rows]
        for record in leased:
            record.lease_renewed = time.monotonic()
        return leased

    async def lease_one(self, app: str, saga_id: str, resume_state: str) -> SagaRecord | None:
        """Takes one saga for RetrySaga: one needing attention (back to ``resume_state``, its
        drive count reset) or an unfinished one nobody drives."""
        async with self._engine.begin() as conn:
            row = (
                await conn.exec_driver_sql(
                    _LEASE_ONE,
                    {
                        "saga_id": saga_id,
                        "app": app,
                        "lease": self.lease_seconds,
                        "reset": True,
                        "resume_state": resume_state,
                    },
                )
            ).one_or_none()
        if row is None:
            return None
        record = _record(row)
        record.lease_renewed = time.monotonic()
        return record

    async def get(self, app: str, saga_id: str) -> SagaRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM sagas WHERE saga_id = %(id)s AND app = %(app)s",
                    {"id": saga_id, "app": app},
                )
            ).one_or_none()
        return _record(row) if row is not None else None

    async def page(
        self,
        app: str,
        state: str,
        limit: int,
        before: tuple[datetime, str] | None,
        *,
        request_id: str = "",
        user_id: str = "",
    ) -> list[SagaRecord]:
        query = select(*[sagas.c[c.strip()] for c in _COLUMNS.split(",")]).where(sagas.c.app == app)
        if state:
            query = query.where(sagas.c.state == state)
        if request_id:
            query = query.where(sagas.c.request_id == request_id)
        if user_id:
            query = query.where(sagas.c.user_id == user_id)
        if before is not None:
            query = query.where(
                (sagas.c.created_at < before[0])
                | ((sagas.c.created_at == before[0]) & (sagas.c.saga_id < before[1]))
            )
        query = query.order_by(sagas.c.created_at.desc(), sagas.c.saga_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def stats(
        self, app: str, first: date, last: date
    ) -> list[tuple[Any, str, str, str, int]]:
        """(app's local day, sku, state, reason, count) of redemption sagas started on the
        app's days [first, last]."""
        async with self._engine.connect() as conn:
            rows = await conn.exec_driver_sql(
                """
                SELECT app_day AS day, payload->>'sku' AS sku, state, reason, count(*) AS n
                FROM sagas WHERE app = %(app)s AND kind = 'redeem'
                  AND app_day BETWEEN %(first)s AND %(last)s
                GROUP BY 1, 2, 3, 4
                """,
                {"app": app, "first": first, "last": last},
            )
            return [(row.day, row.sku, row.state, row.reason, int(row.n)) for row in rows]
