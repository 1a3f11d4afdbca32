"""Risk's use cases: each reads the app's program, calls the pure domain (``domain/decide.py``)
and the stores (Redis counters, the audit log, reviews), and answers in domain terms. ``api.py``
checks the request, calls one of these and maps the answer to protobuf; the stores never open a
transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from plumbing.programs import ProgramStore, StoredProgram
from plumbing.server import Resources
from services.risk.domain.decide import (
    Event,
    Outcome,
    by_lists,
    combine,
    counts,
    static_rules,
    without_counters,
)
from services.risk.domain.program import RiskProgram, Rule
from services.risk.store import reviews as review_store
from services.risk.store.audit import AuditLog
from services.risk.store.counters import Counted, Counters, CountersUnavailable, Evaluation
from services.risk.store.programs import risk_programs


@dataclass(frozen=True)
class Decision:
    request_id: str
    outcome: Outcome
    # Redis was out of reach: counted rules failed open or closed as configured.
    without_counters: bool
    # The request_id was decided before: this is that decision, counted and audited once.
    duplicate: bool


@dataclass(frozen=True)
class _Prepared:
    listed: Outcome | None
    fired: list[Rule]
    static: Outcome


class RiskControl:
    def __init__(self, resources: Resources) -> None:
        if resources.redis is None:
            raise RuntimeError("the risk service needs Redis for its counters")
        self.engine = resources.engine
        self.programs: ProgramStore[RiskProgram] = risk_programs(resources)
        self.counters = Counters(resources.redis)
        self.audit = AuditLog(resources.engine)
        self.audit.start()
        resources.cleanup.push_async_callback(self.audit.close)

    async def program(self, app: str) -> StoredProgram[RiskProgram]:
        return await self.programs.get(app)

    async def decide(
        self, stored: StoredProgram[RiskProgram], now: datetime, batch: list[tuple[str, Event]]
    ) -> list[Decision]:
        """One app's evaluations (request_id, event), counted in order in one Redis round trip;
        each new decision raises its alerts and is queued for the audit."""
        program = stored.program
        prepared = []
        for _, event in batch:
            listed = by_lists(program, event, now)
            fired = [] if listed else static_rules(program, event, now)
            prepared.append(_Prepared(listed, fired, listed or combine(fired, [])))
        counted = await self._count(stored, now, batch, prepared)
        decisions: list[Decision] = []
        audited = []
        for index, ((request_id, event), ready) in enumerate(zip(batch, prepared, strict=True)):
            if counted is None:
                outcome = ready.listed or combine(
                    [*ready.fired, *without_counters(program, event)], []
                )
                decision = Decision(request_id, outcome, without_counters=True, duplicate=False)
            else:
                found = counted[index]
                outcome = Outcome(found.verdict, found.rules, found.score)
                decision = Decision(request_id, outcome, False, duplicate=found.replayed)
                if not decision.duplicate:
                    self._raise_alerts(stored.app, program, found.alerts, now)
            if not decision.duplicate:
                audited.append(_audit_row(stored.app, event, decision, now))
            decisions.append(decision)
        self.audit.decisions(audited)
        return decisions

    async def _count(
        self,
        stored: StoredProgram[RiskProgram],
        now: datetime,
        batch: list[tuple[str, Event]],
        prepared: list[_Prepared],
    ) -> list[Counted] | None:
        """The counted rules of the batch in Redis; None when Redis is out of reach."""
        program = stored.program
        with contextlib.suppress(CountersUnavailable):
            return await self.counters.evaluate_many(
                stored.app,
                [
                    Evaluation(
                        request_id,
                        now,
                        ready.static,
                        [] if ready.listed else counts(program, event, request_id),
                    )
                    for (request_id, event), ready in zip(batch, prepared, strict=True)
                ],
                program.alert_thresholds,
            )
        return None

    def _raise_alerts(
        self, app: str, program: RiskProgram, alerts: Sequence[str], now: datetime
    ) -> None:
        for alert in alerts:
            kind, _, subject = alert.partition(":")
            self.audit.alert(
                app,
                "rule_rate" if kind == "rule" else "run",
                subject,
                f"{subject} fired above its alert rate"
                if kind == "rule"
                else f"{subject} taken more than {program.run_alert_per_minute} times a minute",
                now,
            )

    async def list_reviews(
        self, app: str, state: str, before: int | None, limit: int
    ) -> list[review_store.ReviewRow]:
        async with self.engine.connect() as conn:
            return await review_store.list_reviews(conn, app, state, before, limit)

    async def decide_review(
        self, app: str, review_id: str, approve: bool, operator: str, note: str
    ) -> review_store.ReviewRow:
        """Approves or rejects an open review (at the app's time), once."""
        stored = await self.programs.get(app)
        async with self.engine.begin() as conn:
            return await review_store.decide_review(
                conn, stored.app, review_id, approve, operator, note, self.programs.now(stored)
            )

    async def list_alerts(
        self, app: str, before: int | None, limit: int
    ) -> list[review_store.AlertRow]:
        async with self.engine.connect() as conn:
            return await review_store.list_alerts(conn, app, before, limit)


def _audit_row(app: str, event: Event, decision: Decision, now: datetime) -> dict[str, Any]:
    outcome = decision.outcome
    return {
        "app": app,
        "request_id": decision.request_id,
        "review_id": f"rv-{decision.request_id}",
        "action": event.action,
        "user_id": event.user_id,
        "device_id": event.device_id,
        "ip": str(event.ip) if event.ip is not None else "",
        "amount": event.amount,
        "attributes": dict(event.attributes),
        "decision": outcome.verdict.name,
        "rules": list(outcome.rules),
        "score": outcome.score,
        "without_counters": decision.without_counters,
        "decided_at": now,
    }
