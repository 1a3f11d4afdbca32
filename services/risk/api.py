"""gRPC API of the risk service: checks the request (IPs parsed, not trusted), decides, and
queues the audit. Domain errors become statuses in plumbing.grpc_errors."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc
from opentelemetry import trace

from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument
from plumbing.programs import ServesAppClock, StoredProgram
from plumbing.server import Resources
from plumbing.validation import (
    check_attributes,
    not_in_future,
    optional_id,
    optional_ip,
    optional_text,
    positions_by_app,
    require_id,
    require_non_negative,
)
from plumbing.wire import (
    decode_page_token,
    encode_page_token,
    from_timestamp,
    page_size,
    to_timestamp,
)
from services.risk.domain.decide import (
    Event,
    Outcome,
    by_lists,
    combine,
    counts,
    static_rules,
    without_counters,
)
from services.risk.domain.program import RiskProgram, Verdict, parse_risk
from services.risk.store import reviews as review_store
from services.risk.store.audit import AuditLog
from services.risk.store.counters import Counted, Counters, CountersUnavailable, Evaluation
from services.risk.store.programs import risk_programs

REVIEW_STATES = ("open", "approved", "rejected")
_VERDICTS = {
    Verdict.ALLOW: risk_pb2.ALLOW,
    Verdict.REVIEW: risk_pb2.REVIEW,
    Verdict.DENY: risk_pb2.DENY,
}


def _ip(field: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    checked = optional_ip(field, value)
    return ipaddress.ip_address(checked) if checked else None


class RiskServicer(ServesAppClock, risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, resources: Resources) -> None:
        if resources.redis is None:
            raise RuntimeError("the risk service needs Redis for its counters")
        self.engine = resources.engine
        self.programs = risk_programs(resources)
        self.counters = Counters(resources.redis)
        self.audit = AuditLog(resources.engine)
        self.audit.start()
        resources.cleanup.push_async_callback(self.audit.close)

    async def ConfigureRisk(
        self, request: risk_pb2.ConfigureRiskRequest, context: Any
    ) -> common_pb2.ConfigureResult:
        return await configure_section(
            request.app,
            request.section_json,
            request.validate_only,
            parse_risk,
            lambda app, section, _program: self.programs.store(app, section),
        )

    def _event(
        self, request: risk_pb2.EvaluateRequest, now: datetime, prefix: str = ""
    ) -> tuple[str, Event]:
        created = from_timestamp(f"{prefix}account_created_at", request, "account_created_at")
        not_in_future(f"{prefix}account_created_at", created, now)
        request_id = require_id(f"{prefix}request_id", request.request_id)
        return request_id, Event(
            action=require_id(f"{prefix}action", request.action),
            user_id=require_id(f"{prefix}user_id", request.user_id),
            device_id=optional_id(f"{prefix}device_id", request.device_id),
            ip=_ip(f"{prefix}ip", request.ip),
            amount=require_non_negative(f"{prefix}amount", request.amount),
            attributes=check_attributes(f"{prefix}attributes", request.attributes),
            account_created_at=created,
        )

    async def _decide(
        self, stored: StoredProgram[RiskProgram], now: datetime, batch: list[tuple[str, Event]]
    ) -> list[risk_pb2.EvaluateResponse]:
        """One app's evaluations, counted in order in one Redis round trip."""
        program = stored.program
        prepared = []
        for _, event in batch:
            listed = by_lists(program, event, now)
            fired = [] if listed else static_rules(program, event, now)
            prepared.append((listed, fired, listed or combine(fired, [])))
        counted: list[Counted] | None = None
        # Redis down: counted rules fail open or closed as configured (counted stays None).
        with contextlib.suppress(CountersUnavailable):
            counted = await self.counters.evaluate_many(
                stored.app,
                [
                    Evaluation(
                        request_id,
                        now,
                        static,
                        [] if listed else counts(program, event, request_id),
                    )
                    for (request_id, event), (listed, _, static) in zip(
                        batch, prepared, strict=True
                    )
                ],
                program.alert_thresholds,
            )
        replies = []
        audited = []
        for index, ((request_id, event), (listed, fired, _)) in enumerate(
            zip(batch, prepared, strict=True)
        ):
            blind = counted is None
            duplicate = False
            if counted is None:
                outcome = listed or combine([*fired, *without_counters(program, event)], [])
            else:
                found = counted[index]
                outcome = Outcome(found.verdict, found.rules, found.score)
                duplicate = found.replayed
                if not duplicate:
                    self._raise_alerts(stored.app, program, found.alerts, now)
            if not duplicate:
                audited.append(self._audit_row(stored.app, request_id, event, outcome, blind, now))
            replies.append(
                risk_pb2.EvaluateResponse(
                    decision=_VERDICTS[outcome.verdict],
                    rules=outcome.rules,
                    score=outcome.score,
                    without_counters=blind,
                    duplicate=duplicate,
                    request_id=request_id,
                )
            )
        self.audit.decisions(audited)
        return replies

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

    @staticmethod
    def _audit_row(
        app: str, request_id: str, event: Event, outcome: Outcome, blind: bool, now: datetime
    ) -> dict[str, Any]:
        return {
            "app": app,
            "request_id": request_id,
            "review_id": f"rv-{request_id}",
            "action": event.action,
            "user_id": event.user_id,
            "device_id": event.device_id,
            "ip": str(event.ip) if event.ip is not None else "",
            "amount": event.amount,
            "attributes": dict(event.attributes),
            "decision": outcome.verdict.name,
            "rules": list(outcome.rules),
            "score": outcome.score,
            "without_counters": blind,
            "decided_at": now,
        }

    async def Evaluate(
        self, request: risk_pb2.EvaluateRequest, context: Any
    ) -> risk_pb2.EvaluateResponse:
        require_id("app", request.app)
        stored = await self.programs.get(request.app)
        now = self.programs.now(stored)
        [reply] = await self._decide(stored, now, [self._event(request, now)])
        return reply

    async def EvaluateBatch(
        self, request: risk_pb2.EvaluateBatchRequest, context: Any
    ) -> risk_pb2.EvaluateBatchResponse:
        """Every request is checked before any is counted; then each app's requests are
        counted in order in one Redis round trip."""
        trace.get_current_span().set_attribute("loyalty.events", len(request.requests))
        checked = []
        for app, positions in positions_by_app(
            "requests", [r.app for r in request.requests]
        ).items():
            stored = await self.programs.get(app)
            now = self.programs.now(stored)
            batch = [self._event(request.requests[i], now, f"requests[{i}].") for i in positions]
            checked.append((stored, now, positions, batch))
        replies: dict[int, risk_pb2.EvaluateResponse] = {}
        for stored, now, positions, batch in checked:
            replies.update(zip(positions, await self._decide(stored, now, batch), strict=True))
        return risk_pb2.EvaluateBatchResponse(results=[replies[i] for i in sorted(replies)])

    async def ListReviews(
        self, request: risk_pb2.ListReviewsRequest, context: Any
    ) -> risk_pb2.ListReviewsResponse:
        require_id("app", request.app)
        state = request.state or "open"
        if state not in REVIEW_STATES:
            raise InvalidArgument("state", "must be open, approved or rejected")
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        async with self.engine.connect() as conn:
            rows = await review_store.list_reviews(conn, request.app, state, before, size + 1)
        page, more = rows[:size], len(rows) > size
        return risk_pb2.ListReviewsResponse(
            reviews=[_review(row) for row in page],
            next_page_token=encode_page_token(page[-1].seq) if more and page else "",
        )

    async def DecideReview(
        self, request: risk_pb2.DecideReviewRequest, context: Any
    ) -> risk_pb2.Review:
        require_id("app", request.app)
        stored = await self.programs.get(request.app)
        review_id = require_id("review_id", request.review_id)
        operator = require_id("operator", request.operator)
        note = optional_text("note", request.note)
        async with self.engine.begin() as conn:
            row = await review_store.decide_review(
                conn,
                stored.app,
                review_id,
                request.approve,
                operator,
                note,
                self.programs.now(stored),
            )
        return _review(row)

    async def ListAlerts(
        self, request: risk_pb2.ListAlertsRequest, context: Any
    ) -> risk_pb2.ListAlertsResponse:
        require_id("app", request.app)
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        async with self.engine.connect() as conn:
            rows = await review_store.list_alerts(conn, request.app, before, size + 1)
        page, more = rows[:size], len(rows) > size
        return risk_pb2.ListAlertsResponse(
            alerts=[
                risk_pb2.Alert(
                    kind=row.kind,
                    subject=row.subject,
                    message=row.message,
                    raised_at=to_timestamp(row.raised_at),
                )
                for row in page
            ],
            next_page_token=encode_page_token(page[-1].id) if more and page else "",
        )

    # --- sandbox clock ----------------------------------------------------------------------

    async def AdvanceClock(
        self, request: common_pb2.AdvanceClockRequest, context: Any
    ) -> common_pb2.AdvanceClockResponse:
        """Account ages, counting windows and review times follow the app's clock; nothing
        else falls due."""
        stored = await self.programs.advance_from(request)
        return self.programs.clock_answer(stored)


def _review(row: review_store.ReviewRow) -> risk_pb2.Review:
    return risk_pb2.Review(
        review_id=row.review_id,
        request_id=row.request_id,
        action=row.action,
        user_id=row.user_id,
        rules=row.rules,
        state=row.state,
        operator=row.operator,
        note=row.note,
        created_at=to_timestamp(row.created_at),
        decided_at=to_timestamp(row.decided_at),
    )
