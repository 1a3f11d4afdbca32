"""gRPC API of the risk service: checks the request (IPs parsed, not trusted), calls a use case
of ``service.py`` and maps its answer to protobuf. Domain errors become statuses in
plumbing.grpc_errors."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc
from opentelemetry import trace

from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument
from plumbing.programs import ServesAppClock
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
    from_timestamp,
    keyset_page,
    page_size,
    to_timestamp,
)
from services.risk.domain.decide import Event
from services.risk.domain.program import Verdict, parse_risk
from services.risk.service import Decision, RiskControl
from services.risk.store import reviews as review_store

REVIEW_STATES = ("open", "approved", "rejected")
_VERDICTS = {
    Verdict.ALLOW: risk_pb2.ALLOW,
    Verdict.REVIEW: risk_pb2.REVIEW,
    Verdict.DENY: risk_pb2.DENY,
}


def _ip(field: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    checked = optional_ip(field, value)
    return ipaddress.ip_address(checked) if checked else None


def _response(decision: Decision) -> risk_pb2.EvaluateResponse:
    outcome = decision.outcome
    return risk_pb2.EvaluateResponse(
        decision=_VERDICTS[outcome.verdict],
        rules=outcome.rules,
        score=outcome.score,
        without_counters=decision.without_counters,
        duplicate=decision.duplicate,
        request_id=decision.request_id,
    )


class RiskServicer(ServesAppClock, risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.risk = RiskControl(resources)
        self.programs = self.risk.programs

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

    async def Evaluate(
        self, request: risk_pb2.EvaluateRequest, context: Any
    ) -> risk_pb2.EvaluateResponse:
        require_id("app", request.app)
        stored = await self.programs.get(request.app)
        now = self.programs.now(stored)
        [decision] = await self.risk.decide(stored, now, [self._event(request, now)])
        return _response(decision)

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
            decided = await self.risk.decide(stored, now, batch)
            replies.update(zip(positions, map(_response, decided), strict=True))
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
        rows = await self.risk.list_reviews(request.app, state, before, size + 1)
        page, token = keyset_page(rows, size, lambda row: row.seq)
        return risk_pb2.ListReviewsResponse(
            reviews=[_review(row) for row in page], next_page_token=token
        )

    async def DecideReview(
        self, request: risk_pb2.DecideReviewRequest, context: Any
    ) -> risk_pb2.Review:
        app = require_id("app", request.app)
        review_id = require_id("review_id", request.review_id)
        operator = require_id("operator", request.operator)
        note = optional_text("note", request.note)
        row = await self.risk.decide_review(app, review_id, request.approve, operator, note)
        return _review(row)

    async def ListAlerts(
        self, request: risk_pb2.ListAlertsRequest, context: Any
    ) -> risk_pb2.ListAlertsResponse:
        require_id("app", request.app)
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        rows = await self.risk.list_alerts(request.app, before, size + 1)
        page, token = keyset_page(rows, size, lambda row: row.id)
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
            next_page_token=token,
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
