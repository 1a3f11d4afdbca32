"""gRPC API of the points service: checks the request, calls a use case of ``service.py`` and
maps its answer to protobuf. Domain errors become statuses in plumbing.grpc_errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from loyalty.common.v1 import common_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from opentelemetry import trace

from plumbing.batch_calls import answer_batch, answer_by_saga, only, outcome_messages
from plumbing.configure import configure_section
from plumbing.errors import InvalidArgument, LoyaltyError
from plumbing.programs import ServesAppClock, clock_answer
from plumbing.server import Resources
from plumbing.validation import (
    check_attributes,
    not_in_future,
    optional_text,
    positions_by_app,
    require_id,
    require_non_negative,
    require_nonzero,
    require_positive,
)
from plumbing.wire import (
    decode_page_token,
    from_timestamp,
    keyset_page,
    page_size,
    parse_date_range,
    to_timestamp,
)
from services.points.domain.campaigns import Member
from services.points.domain.program import parse_program
from services.points.service import Points
from services.points.store import earning, hold_batch, holds
from services.points.store.programs import Programs

DEFAULT_HOLD_TTL = timedelta(minutes=15)
MAX_HOLD_TTL = timedelta(days=7)
# Product backends and the gateway stamp events; a little clock skew is fine, the future is not.

_HOLD_STATES = {
    "HELD": points_pb2.HELD,
    "CAPTURED": points_pb2.CAPTURED,
    "RELEASED": points_pb2.RELEASED,
    "EXPIRED": points_pb2.EXPIRED,
}


def _hold_reply(result: holds.HoldResult) -> points_pb2.HoldResponse:
    return points_pb2.HoldResponse(
        saga_id=result.saga_id,
        state=_HOLD_STATES[result.state],
        amount=result.amount,
        expires_at=to_timestamp(result.expires_at),
    )


def _hold_batch_reply(
    outcomes: Sequence[holds.HoldResult | LoyaltyError],
) -> points_pb2.HoldBatchResponse:
    return points_pb2.HoldBatchResponse(
        results=outcome_messages(points_pb2.HoldOutcome, "hold", _hold_reply, outcomes)
    )


class PointsServicer(ServesAppClock, points_pb2_grpc.PointsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.programs = Programs(resources.engine, resources.clock)
        self.points = Points(resources.engine, self.programs)

    # --- configuration -------------------------------------------------------------------

    async def ConfigureRules(
        self, request: points_pb2.ConfigureRulesRequest, context: Any
    ) -> common_pb2.ConfigureResult:
        return await configure_section(
            request.app,
            request.section_json,
            request.validate_only,
            parse_program,
            self.programs.store,
        )

    # --- earning -------------------------------------------------------------------------

    def _earn_input(self, request: points_pb2.EarnRequest, prefix: str = "") -> earning.EarnInput:
        return earning.EarnInput(
            event_id=require_id(f"{prefix}event_id", request.event_id),
            user_id=require_id(f"{prefix}user_id", request.user_id),
            action=require_id(f"{prefix}action", request.action),
            quantity=require_non_negative(f"{prefix}quantity", request.quantity),
            attributes=check_attributes(f"{prefix}attributes", request.attributes),
            occurred_at=from_timestamp(f"{prefix}occurred_at", request, "occurred_at"),
            member=Member(
                tier=request.tier,
                tags=frozenset(request.tags),
                segments=frozenset(request.segments),
            ),
        )

    @staticmethod
    def _earn_reply(result: earning.EarnResult) -> points_pb2.EarnResponse:
        return points_pb2.EarnResponse(
            event_id=result.event_id,
            points_awarded=result.points_awarded,
            notes=list(result.notes),
            duplicate=result.duplicate,
            streak_days=result.streak_days,
            growth=result.growth,
            exempt_from_daily_cap=result.exempt_from_daily_cap,
            campaign_points=result.campaign_points,
            points_pending=result.points_pending,
            pending_until=to_timestamp(result.pending_until),
        )

    async def Earn(self, request: points_pb2.EarnRequest, context: Any) -> points_pb2.EarnResponse:
        require_id("app", request.app)
        event = self._earn_input(request)
        ap = await self.programs.get(request.app)
        now = self.programs.now(ap)
        not_in_future("occurred_at", event.occurred_at, now)
        [result] = await self.points.earn(ap, now, [event])
        return self._earn_reply(result)

    async def EarnBatch(
        self, request: points_pb2.EarnBatchRequest, context: Any
    ) -> points_pb2.EarnBatchResponse:
        """All events are checked before any is applied; then each app's events are one
        transaction, so a retried batch either replays all of it or does all of it."""
        trace.get_current_span().set_attribute("loyalty.events", len(request.events))
        checked = []
        for app, positions in positions_by_app("events", [e.app for e in request.events]).items():
            ap = await self.programs.get(app)
            events = []
            for index in positions:
                prefix = f"events[{index}]."
                event = self._earn_input(request.events[index], prefix)
                not_in_future(f"{prefix}occurred_at", event.occurred_at, self.programs.now(ap))
                events.append(event)
            checked.append((ap, positions, events))
        replies: dict[int, points_pb2.EarnResponse] = {}
        for ap, positions, events in checked:
            results = await self.points.earn(ap, self.programs.now(ap), events)
            for position, result in zip(positions, results, strict=True):
                replies[position] = self._earn_reply(result)
        return points_pb2.EarnBatchResponse(results=[replies[i] for i in sorted(replies)])

    async def ReverseEvent(
        self, request: points_pb2.ReverseEventRequest, context: Any
    ) -> points_pb2.ReverseEventResponse:
        event_id = require_id("event_id", request.event_id)
        reason = optional_text("reason", request.reason)
        result = await self.points.reverse_event(request.app, event_id, reason)
        return points_pb2.ReverseEventResponse(
            points_reversed=result.points_reversed, balance=result.balance
        )

    # --- ops and users -------------------------------------------------------------------

    async def Grant(self, request: points_pb2.GrantRequest, context: Any) -> points_pb2.Movement:
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        amount = require_positive("amount", request.amount)
        reason = require_id("reason", request.reason, max_length=1024)
        operator = require_id("operator", request.operator)
        reply = await self.points.grant(request.app, request_id, user_id, amount, reason, operator)
        return points_pb2.Movement(**reply)

    async def Adjust(self, request: points_pb2.AdjustRequest, context: Any) -> points_pb2.Movement:
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        delta = require_nonzero("delta", request.delta)
        reason = require_id("reason", request.reason, max_length=1024)
        operator = require_id("operator", request.operator)
        reply = await self.points.adjust(request.app, request_id, user_id, delta, reason, operator)
        return points_pb2.Movement(**reply)

    async def Gift(self, request: points_pb2.GiftRequest, context: Any) -> points_pb2.Movement:
        request_id = require_id("request_id", request.request_id)
        sender = require_id("from_user_id", request.from_user_id)
        receiver = require_id("to_user_id", request.to_user_id)
        if sender == receiver:
            raise InvalidArgument("to_user_id", "must differ from from_user_id")
        amount = require_positive("amount", request.amount)
        reply = await self.points.gift(request.app, request_id, sender, receiver, amount)
        return points_pb2.Movement(**reply)

    # --- two-phase spend -------------------------------------------------------------------

    @staticmethod
    def _hold_input(request: points_pb2.HoldRequest) -> hold_batch.HoldInput:
        ttl = DEFAULT_HOLD_TTL
        if request.HasField("ttl"):
            ttl = request.ttl.ToTimedelta()
            if ttl <= timedelta(0) or ttl > MAX_HOLD_TTL:
                raise InvalidArgument("ttl", "must be more than 0 and at most 7 days")
        return hold_batch.HoldInput(
            saga_id=require_id("saga_id", request.saga_id),
            user_id=require_id("user_id", request.user_id),
            amount=require_positive("amount", request.amount),
            ttl=ttl,
            ref=optional_text("ref", request.ref, max_length=256),
        )

    async def _holds(
        self, requests: Sequence[points_pb2.HoldRequest]
    ) -> list[holds.HoldResult | LoyaltyError]:
        return await answer_batch(
            requests, self._hold_input, lambda item: item.saga_id, self.points.hold_many
        )

    async def _captures(
        self, requests: Sequence[points_pb2.CaptureRequest]
    ) -> list[holds.HoldResult | LoyaltyError]:
        return await answer_by_saga(requests, self.points.capture_many)

    async def _releases(
        self, requests: Sequence[points_pb2.ReleaseHoldRequest]
    ) -> list[holds.HoldResult | LoyaltyError]:
        return await answer_by_saga(requests, self.points.release_many)

    async def Hold(self, request: points_pb2.HoldRequest, context: Any) -> points_pb2.HoldResponse:
        return _hold_reply(only(await self._holds([request])))

    async def HoldBatch(
        self, request: points_pb2.HoldBatchRequest, context: Any
    ) -> points_pb2.HoldBatchResponse:
        return _hold_batch_reply(await self._holds(request.requests))

    async def Capture(
        self, request: points_pb2.CaptureRequest, context: Any
    ) -> points_pb2.HoldResponse:
        return _hold_reply(only(await self._captures([request])))

    async def CaptureBatch(
        self, request: points_pb2.CaptureBatchRequest, context: Any
    ) -> points_pb2.HoldBatchResponse:
        return _hold_batch_reply(await self._captures(request.requests))

    async def ReleaseHold(
        self, request: points_pb2.ReleaseHoldRequest, context: Any
    ) -> points_pb2.HoldResponse:
        return _hold_reply(only(await self._releases([request])))

    async def ReleaseHoldBatch(
        self, request: points_pb2.ReleaseHoldBatchRequest, context: Any
    ) -> points_pb2.HoldBatchResponse:
        return _hold_batch_reply(await self._releases(request.requests))

    async def Refund(self, request: points_pb2.RefundRequest, context: Any) -> points_pb2.Movement:
        request_id = require_id("request_id", request.request_id)
        saga_id = require_id("saga_id", request.saga_id)
        amount = require_positive("amount", request.amount)
        reason = optional_text("reason", request.reason)
        reply = await self.points.refund(request.app, request_id, saga_id, amount, reason)
        return points_pb2.Movement(**reply)

    # --- expiry ----------------------------------------------------------------------------

    async def ExpireDue(
        self, request: points_pb2.ExpireDueRequest, context: Any
    ) -> points_pb2.ExpireDueResponse:
        require_id("app", request.app)
        ap = await self.programs.get(request.app)
        now = self.programs.now(ap)
        as_of = from_timestamp("as_of", request, "as_of") or now
        if as_of > now:
            raise InvalidArgument("as_of", "is in the future: points cannot expire early")
        result = await self.points.expire_due(ap, as_of, now)
        return points_pb2.ExpireDueResponse(
            lots_expired=result.lots_expired, points_expired=result.points_expired
        )

    # --- queries ---------------------------------------------------------------------------

    async def GetBalance(
        self, request: points_pb2.GetBalanceRequest, context: Any
    ) -> points_pb2.Balance:
        require_id("app", request.app)
        user_id = require_id("user_id", request.user_id)
        days = request.expiring_within_days or 30
        if days < 0 or days > 3660:
            raise InvalidArgument("expiring_within_days", "must be between 0 and 3660")
        ap = await self.programs.get(request.app)
        view = await self.points.balance(ap, user_id, timedelta(days=days))
        return points_pb2.Balance(
            pending=await self.points.pending_of(ap.app, user_id),
            user_id=user_id,
            available=view.available,
            held=view.held,
            lifetime_earned=view.lifetime_earned,
            balance=view.balance,
            expiring=[
                common_pb2.ExpiringPoints(amount=amount, expires_at=to_timestamp(when))
                for amount, when in view.expiring
            ],
        )

    async def ListHistory(
        self, request: points_pb2.ListHistoryRequest, context: Any
    ) -> points_pb2.ListHistoryResponse:
        require_id("app", request.app)
        user_id = require_id("user_id", request.user_id)
        size = page_size(request.page_size)
        before = decode_page_token(request.page_token)
        ap = await self.programs.get(request.app)
        rows = await self.points.history(ap.app, user_id, before, size + 1)
        page, token = keyset_page(rows, size, lambda row: row.id)
        return points_pb2.ListHistoryResponse(
            entries=[
                points_pb2.HistoryEntry(
                    amount=row.amount,
                    kind=row.kind,
                    reason=row.reason,
                    ref=row.ref,
                    created_at=to_timestamp(row.created_at),
                    expires_at=to_timestamp(row.expires_at),
                )
                for row in page
            ],
            next_page_token=token,
        )

    async def GetLiability(
        self, request: points_pb2.GetLiabilityRequest, context: Any
    ) -> points_pb2.GetLiabilityResponse:
        require_id("app", request.app)
        first, last = parse_date_range(request.from_date, request.to_date)
        ap = await self.programs.get(request.app)
        zone = ap.program.zone
        until = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        rows = await self.points.liability(ap, first, last, until)
        pending = await self.points.pending_liability(ap, first, last)
        rate = ap.program.money_rate
        return points_pb2.GetLiabilityResponse(
            money_rate=rate,
            points_pending=pending.now,
            days=[
                points_pb2.LiabilityDay(
                    date=row.day.isoformat(),
                    issued=row.issued,
                    spent=row.spent,
                    expired=row.expired,
                    adjusted=row.adjusted,
                    outstanding=row.outstanding,
                    # money_rate points are worth 1 CNY = 100 fen.
                    outstanding_fen=row.outstanding * 100 // rate,
                    pending=pending.by_day.get(row.day, 0),
                )
                for row in rows
            ],
        )

    async def GetCampaignStats(
        self, request: points_pb2.GetCampaignStatsRequest, context: Any
    ) -> points_pb2.CampaignStats:
        require_id("app", request.app)
        code = require_id("code", request.code)
        stats = await self.points.campaign_stats(await self.programs.get(request.app), code)
        return points_pb2.CampaignStats(
            code=code,
            name=stats.campaign.name,
            events=stats.events,
            members=stats.members,
            points_awarded=stats.points_awarded,
            budget_points=stats.campaign.budget_points or 0,
            budget_left=stats.budget_left or 0,
        )

    # --- sandbox test clock ----------------------------------------------------------------

    async def AdvanceClock(
        self, request: common_pb2.AdvanceClockRequest, context: Any
    ) -> common_pb2.AdvanceClockResponse:
        """Moves the app's clock, then releases the holds and the pending points and expires
        the lots that fell due,
        so the caller sees their effect as soon as this returns. A retried request_id moves
        the clock once."""
        ap = await self.programs.advance_from(request)
        await self.points.release_expired_holds(ap)
        await self.points.release_pending(ap)
        now = self.programs.now(ap)
        await self.points.expire_due(ap, now, now)
        return clock_answer(self.programs.now(ap), ap.clock_offset)
