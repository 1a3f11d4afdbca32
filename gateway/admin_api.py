"""The ops API (``loyalty.gateway.v1.AdminService``): admin keys only, every call audited with
the key, the call, its arguments and how it ended."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

from google.protobuf.json_format import MessageToDict
from loyalty.common.v1 import common_pb2
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2
from loyalty.levels.v1 import levels_pb2
from loyalty.lottery.v1 import lottery_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

from gateway.auth import Caller
from gateway.clock import advance_app_clock, bring_participants_in_step, read_clocks
from gateway.context import Gateway, gateway_of
from gateway.domain.program import (
    gateway_section_problems,
    load_program,
    money_rate,
    service_sections,
)
from gateway.domain.sagas import ENDED, UNFINISHED, SagaState
from gateway.member_reads import MemberReads
from gateway.participants import ask
from gateway.referrals import settle_due
from gateway.store.events import daily_counts
from gateway.store.sagas import SagaRecord
from gateway.store.tenancy import record_audit
from plumbing.errors import FailedPrecondition, InvalidArgument, LoyaltyError, NotFound
from plumbing.programs import MAX_CLOCK_ADVANCE_SECONDS
from plumbing.sections import ProgramInvalid
from plumbing.server import Resources
from plumbing.validation import (
    optional_id,
    require_id,
    require_nonzero,
    require_positive,
)
from plumbing.wire import (
    decode_cursor,
    encode_cursor,
    page_size,
    parse_date_range,
    to_timestamp,
)

log = logging.getLogger(__name__)

SAGA_STATES = (*UNFINISHED, *ENDED, SagaState.NEEDS_ATTENTION)
# Arguments longer than this are cut in the audit (a program is kept whole in its versions).
AUDIT_TEXT_LIMIT = 2000


class SagaNotFound(NotFound):
    reason = "SAGA_NOT_FOUND"


class NotSandbox(FailedPrecondition):
    reason = "NOT_SANDBOX"


class SagaFinished(FailedPrecondition):
    reason = "SAGA_FINISHED"


R = TypeVar("R")
Handler = Callable[[Any, Any, Any, Caller], Awaitable[R]]


def audited(method: Handler[R]) -> Callable[[Any, Any, Any], Awaitable[R]]:
    """Authenticates the key, then audits the call whatever its outcome: a member key refused
    here (PERMISSION_DENIED) and a rate-limited call are in the audit too."""

    @functools.wraps(method)
    async def call(self: AdminServicer, request: Any, context: Any) -> R:
        caller = await self.gw.auth.identify(context)
        outcome = "OK"
        try:
            await self.gw.auth.admit(caller, "admin")
            return await method(self, request, context, caller)
        except LoyaltyError as error:
            outcome = f"{error.kind.value}:{error.reason}"
            raise
        except BaseException:
            outcome = "INTERNAL"
            raise
        finally:
            arguments = MessageToDict(request, preserving_proto_field_name=True)
            for key, value in arguments.items():
                if isinstance(value, str) and len(value) > AUDIT_TEXT_LIMIT:
                    arguments[key] = value[:AUDIT_TEXT_LIMIT] + f"... ({len(value)} chars)"
            try:
                await record_audit(
                    self.gw.resources.engine,
                    caller.app,
                    caller.key_id,
                    method.__name__,
                    arguments,
                    outcome,
                    self.gw.resources.clock.now(),
                )
            except Exception:
                log.exception("admin audit not written", extra={"call": method.__name__})

    return call


def saga_message(saga: SagaRecord) -> admin_pb2.Saga:
    def stamp(text: str | None) -> Any:
        return to_timestamp(datetime.fromisoformat(text)) if text else None

    return admin_pb2.Saga(
        saga_id=saga.saga_id,
        kind=saga.kind,
        state=saga.state,
        reason=saga.reason,
        trace_id=saga.trace_id,
        trace_kept=saga.trace_kept,
        steps=[
            admin_pb2.SagaStep(
                name=step.name,
                state=step.state,
                attempts=step.attempts,
                started_at=stamp(step.started_at),
                finished_at=stamp(step.finished_at),
                error=step.error,
            )
            for step in saga.steps
        ],
        request_id=saga.request_id,
        user_id=saga.user_id,
        created_at=to_timestamp(saga.created_at),
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.gw: Gateway = gateway_of(resources)
        self.timeout = self.gw.settings.call_timeout_seconds
        self.reads = MemberReads(self.gw)

    # --- the program ----------------------------------------------------------------------

    @audited
    async def ApplyProgram(
        self, request: admin_pb2.ApplyProgramRequest, context: Any, caller: Caller
    ) -> admin_pb2.ApplyProgramResponse:
        if not request.program_yaml.strip():
            raise InvalidArgument("program_yaml", "is required")
        try:
            program = load_program(request.program_yaml)
        except ProgramInvalid as invalid:
            return admin_pb2.ApplyProgramResponse(errors=invalid.errors)
        if program.get("app") not in (None, caller.app):
            # The key decides the app; the file's `app` is the operator's label.
            log.warning(
                "program names app %r, applied to the key's app %r", program["app"], caller.app
            )
        sections = service_sections(program)
        rate = money_rate(program)
        errors = await self._configure(caller.app, sections, rate, validate_only=True)
        errors.extend(gateway_section_problems(program))  # the gateway's own sections
        if errors or request.dry_run:
            return admin_pb2.ApplyProgramResponse(errors=errors)
        # Every section is valid: configure each service (each stores it as a new version;
        # a retry after a failure re-applies the same sections, which changes nothing).
        failures = await self._configure(caller.app, sections, rate, validate_only=False)
        if failures:
            return admin_pb2.ApplyProgramResponse(errors=failures)
        version = await self.gw.programs.store(
            caller.app, {"yaml": request.program_yaml, "program": program}
        )
        self.gw.sold_out.forget(caller.app)
        if caller.sandbox:
            # A sandbox app moved before every service kept its clock, or whose last move
            # reached only some: every service takes up the gateway's time again.
            await bring_participants_in_step(self.gw, caller.app)
        return admin_pb2.ApplyProgramResponse(applied=True, version=version)

    async def _configure(
        self, app: str, sections: dict[str, dict[str, Any]], rate: int, *, validate_only: bool
    ) -> list[str]:
        p = self.gw.participants
        calls: dict[str, tuple[Any, Any]] = {
            "points": (p.points.ConfigureRules, points_pb2.ConfigureRulesRequest),
            "levels": (p.levels.ConfigureLevels, levels_pb2.ConfigureLevelsRequest),
            "mall": (p.mall.UpsertItems, mall_pb2.UpsertItemsRequest),
            "risk": (p.risk.ConfigureRisk, risk_pb2.ConfigureRiskRequest),
            "lottery": (p.lottery.UpsertPools, lottery_pb2.UpsertPoolsRequest),
        }

        async def one(service: str) -> common_pb2.ConfigureResult:
            method, message = calls[service]
            request = message(
                app=app,
                section_json=json.dumps(sections[service]),
                validate_only=validate_only,
            )
            if service == "lottery":
                request.money_rate = rate
            result: common_pb2.ConfigureResult = await ask(
                service, method, request, deadline=max(self.timeout, 10.0)
            )
            return result

        results = await asyncio.gather(*(one(service) for service in calls))
        return [error for result in results for error in result.errors]

    @audited
    async def GetProgram(
        self, request: admin_pb2.GetProgramRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetProgramResponse:
        stored = await self.gw.programs.get(caller.app)
        applied_at = await self.gw.programs.applied_at(caller.app, stored.version)
        return admin_pb2.GetProgramResponse(
            program_yaml=stored.program.yaml,
            version=stored.version,
            applied_at=to_timestamp(applied_at) if applied_at else None,
        )

    # --- sagas ----------------------------------------------------------------------------

    @audited
    async def GetSaga(
        self, request: admin_pb2.GetSagaRequest, context: Any, caller: Caller
    ) -> admin_pb2.Saga:
        saga = await self.gw.sagas.get(caller.app, require_id("saga_id", request.saga_id))
        if saga is None:
            raise SagaNotFound(f"no saga {request.saga_id!r}")
        return saga_message(saga)

    @audited
    async def ListSagas(
        self, request: admin_pb2.ListSagasRequest, context: Any, caller: Caller
    ) -> admin_pb2.ListSagasResponse:
        state = request.state.upper()
        if state and state not in SAGA_STATES:
            raise InvalidArgument("state", f"must be one of {', '.join(SAGA_STATES)}")
        size = page_size(request.page_size)
        found = await self.gw.sagas.page(
            caller.app,
            state,
            size + 1,
            decode_cursor(request.page_token),
            request_id=optional_id("request_id", request.request_id),
            user_id=optional_id("user_id", request.user_id),
        )
        last = found[size - 1] if len(found) > size else None
        token = (
            encode_cursor(last.created_at, last.saga_id)
            if last is not None and last.created_at is not None
            else ""
        )
        return admin_pb2.ListSagasResponse(
            sagas=[saga_message(saga) for saga in found[:size]], next_page_token=token
        )

    @audited
    async def RetrySaga(
        self, request: admin_pb2.RetrySagaRequest, context: Any, caller: Caller
    ) -> admin_pb2.Saga:
        saga_id = require_id("saga_id", request.saga_id)
        known = await self.gw.sagas.get(caller.app, saga_id)
        if known is None:
            raise SagaNotFound(f"no saga {saga_id!r}")
        if known.state in ENDED:
            raise SagaFinished(f"saga {saga_id} already ended {known.state}")
        resume_state = known.result.get("stuck_state", SagaState.COMPENSATING)
        saga = await self.gw.sagas.lease_one(caller.app, saga_id, resume_state)
        if saga is None:
            # A driver holds it right now; show where it is.
            return saga_message(known)
        await self.gw.resume(saga)
        return saga_message(saga)

    # --- points ---------------------------------------------------------------------------

    @audited
    async def AdjustPoints(
        self, request: admin_pb2.AdjustPointsRequest, context: Any, caller: Caller
    ) -> admin_pb2.AdjustPointsResponse:
        moved = await ask(
            "points",
            self.gw.participants.points.Adjust,
            points_pb2.AdjustRequest(
                app=caller.app,
                request_id=require_id("request_id", request.request_id),
                user_id=require_id("user_id", request.user_id),
                delta=require_nonzero("delta", request.delta),
                reason=require_id("reason", request.reason, max_length=1024),
                operator=f"key:{caller.key_id}",
            ),
            deadline=self.timeout,
        )
        return admin_pb2.AdjustPointsResponse(balance=moved.balance, duplicate=moved.duplicate)

    async def _days(self, app: str, from_date: str, to_date: str) -> tuple[date, date]:
        """The report's local days: both given, or the last seven up to today."""
        if not from_date and not to_date:
            stored = await self.gw.programs.get(app)
            today = self.gw.programs.now(stored).astimezone(stored.program.zone).date()
            return today - timedelta(days=6), today
        first, last = parse_date_range(from_date, to_date)
        return first, last

    async def _liability(
        self, app: str, first: date, last: date
    ) -> points_pb2.GetLiabilityResponse:
        answer: points_pb2.GetLiabilityResponse = await ask(
            "points",
            self.gw.participants.points.GetLiability,
            points_pb2.GetLiabilityRequest(
                app=app, from_date=first.isoformat(), to_date=last.isoformat()
            ),
            deadline=max(self.timeout, 10.0),
        )
        return answer

    @audited
    async def GetLiability(
        self, request: admin_pb2.GetLiabilityRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetLiabilityResponse:
        first, last = await self._days(caller.app, request.from_date, request.to_date)
        report = await self._liability(caller.app, first, last)
        return admin_pb2.GetLiabilityResponse(
            days=[
                admin_pb2.LiabilityDay(
                    date=d.date,
                    issued=d.issued,
                    spent=d.spent,
                    expired=d.expired,
                    adjusted=d.adjusted,
                    outstanding=d.outstanding,
                    outstanding_fen=d.outstanding_fen,
                    pending=d.pending,
                )
                for d in report.days
            ],
            points_pending=report.points_pending,
        )

    @audited
    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetStatsResponse:
        app = caller.app
        first, last = await self._days(app, request.from_date, request.to_date)
        liability, events, redemptions = await asyncio.gather(
            self._liability(app, first, last),
            daily_counts(self.gw.resources.engine, app, first, last),
            self.gw.sagas.stats(app, first, last),
        )
        days: dict[str, admin_pb2.DayStats] = {}

        def day(key: date | str) -> admin_pb2.DayStats:
            text = key if isinstance(key, str) else key.isoformat()
            return days.setdefault(text, admin_pb2.DayStats(date=text))

        for d in liability.days:
            stats = day(d.date)
            stats.points_issued, stats.points_spent, stats.points_expired = (
                d.issued,
                d.spent,
                d.expired,
            )
        for when, decision, count in events:
            stats = day(when)
            stats.events += count
            stats.risk_decisions[decision] += count
        for when, sku, state, reason, count in redemptions:
            outcome = {SagaState.COMPLETED: "COMPLETED", SagaState.COMPENSATED: reason}.get(
                state, "PENDING"
            )
            day(when).redemptions[f"{sku}/{outcome}"] += count
        return admin_pb2.GetStatsResponse(days=[days[key] for key in sorted(days)])

    # --- risk reviews ---------------------------------------------------------------------

    @audited
    async def ListReviews(
        self, request: admin_pb2.ListReviewsRequest, context: Any, caller: Caller
    ) -> admin_pb2.ListReviewsResponse:
        page = await ask(
            "risk",
            self.gw.participants.risk.ListReviews,
            risk_pb2.ListReviewsRequest(
                app=caller.app,
                state=request.state,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
            deadline=self.timeout,
        )
        return admin_pb2.ListReviewsResponse(
            reviews=[_review(r) for r in page.reviews], next_page_token=page.next_page_token
        )

    @audited
    async def DecideReview(
        self, request: admin_pb2.DecideReviewRequest, context: Any, caller: Caller
    ) -> admin_pb2.Review:
        review = await ask(
            "risk",
            self.gw.participants.risk.DecideReview,
            risk_pb2.DecideReviewRequest(
                app=caller.app,
                review_id=require_id("review_id", request.review_id),
                approve=request.approve,
                operator=f"key:{caller.key_id}",
                note=request.note,
            ),
            deadline=self.timeout,
        )
        return _review(review)

    # --- sandbox clock --------------------------------------------------------------------

    @audited
    async def AdvanceClock(
        self, request: admin_pb2.AdvanceClockRequest, context: Any, caller: Caller
    ) -> admin_pb2.AdvanceClockResponse:
        if not caller.sandbox:
            raise NotSandbox(f"app {caller.app!r} is not a sandbox; its clock is the real one")
        seconds = require_positive("seconds", request.seconds, maximum=MAX_CLOCK_ADVANCE_SECONDS)
        request_id = request.request_id or str(uuid4())
        require_id("request_id", request_id)
        stored = await self.gw.programs.get(caller.app)  # a program must exist (NO_PROGRAM)
        offset = await advance_app_clock(self.gw, stored.app, request_id, seconds)
        self.gw.sold_out.forget(caller.app)  # reservations that fell due gave their stock back
        # Points released the pending points that fell due: the referrals they qualified pay.
        await settle_due(self.gw, caller.app)
        return admin_pb2.AdvanceClockResponse(
            now=to_timestamp(await self.gw.app_now(caller.app)), offset_seconds=offset
        )

    @audited
    async def GetClock(
        self, request: admin_pb2.GetClockRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetClockResponse:
        clocks = await read_clocks(self.gw, caller.app)
        gateway = clocks[0]
        return admin_pb2.GetClockResponse(
            now=to_timestamp(gateway.now),
            offset_seconds=gateway.offset_seconds,
            sandbox=caller.sandbox,
            services=[
                admin_pb2.ServiceClock(
                    service=c.service, now=to_timestamp(c.now), offset_seconds=c.offset_seconds
                )
                for c in clocks
            ],
            in_step=all(c.offset_seconds == gateway.offset_seconds for c in clocks),
        )

    @audited
    async def GetCaller(
        self, request: admin_pb2.GetCallerRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetCallerResponse:
        return admin_pb2.GetCallerResponse(
            app=caller.app, key_id=caller.key_id, scope=caller.scope, sandbox=caller.sandbox
        )

    # --- members and the catalog, as the member API shows them (gateway/member_reads.py) ----

    @audited
    async def GetMember(
        self, request: loyalty_pb2.GetMemberRequest, context: Any, caller: Caller
    ) -> loyalty_pb2.GetMemberResponse:
        return await self.reads.member(caller.app, request, sighting=False)

    @audited
    async def ListPointsHistory(
        self, request: loyalty_pb2.ListPointsHistoryRequest, context: Any, caller: Caller
    ) -> loyalty_pb2.ListPointsHistoryResponse:
        return await self.reads.points_history(caller.app, request)

    @audited
    async def ListOrders(
        self, request: loyalty_pb2.ListOrdersRequest, context: Any, caller: Caller
    ) -> loyalty_pb2.ListOrdersResponse:
        return await self.reads.orders(caller.app, request)

    @audited
    async def ListCatalog(
        self, request: loyalty_pb2.ListCatalogRequest, context: Any, caller: Caller
    ) -> loyalty_pb2.ListCatalogResponse:
        return await self.reads.catalog(caller.app, request, member_required=False)

    # --- lottery ----------------------------------------------------------------------------

    @audited
    async def PausePool(
        self, request: admin_pb2.PausePoolRequest, context: Any, caller: Caller
    ) -> admin_pb2.PausePoolResponse:
        pool = await ask(
            "lottery",
            self.gw.participants.lottery.PausePool,
            lottery_pb2.PausePoolRequest(
                app=caller.app,
                pool=require_id("pool", request.pool),
                operator=f"key:{caller.key_id}",
                reason=require_id("reason", request.reason, max_length=1024),
            ),
            deadline=self.timeout,
        )
        return admin_pb2.PausePoolResponse(paused=pool.paused)

    @audited
    async def ResumePool(
        self, request: admin_pb2.ResumePoolRequest, context: Any, caller: Caller
    ) -> admin_pb2.ResumePoolResponse:
        pool = await ask(
            "lottery",
            self.gw.participants.lottery.ResumePool,
            lottery_pb2.ResumePoolRequest(
                app=caller.app,
                pool=require_id("pool", request.pool),
                operator=f"key:{caller.key_id}",
            ),
            deadline=self.timeout,
        )
        return admin_pb2.ResumePoolResponse(paused=pool.paused)

    @audited
    async def ForceDrawOutcome(
        self, request: admin_pb2.ForceDrawOutcomeRequest, context: Any, caller: Caller
    ) -> admin_pb2.ForceDrawOutcomeResponse:
        await ask(
            "lottery",
            self.gw.participants.lottery.ForceOutcome,
            lottery_pb2.ForceOutcomeRequest(
                app=caller.app,
                pool=require_id("pool", request.pool),
                user_id=require_id("user_id", request.user_id),
                prize=require_id("prize", request.prize),
                operator=f"key:{caller.key_id}",
                reason=require_id("reason", request.reason, max_length=1024),
                request_id=request.request_id or str(uuid4()),
            ),
            deadline=self.timeout,
        )
        return admin_pb2.ForceDrawOutcomeResponse()

    @audited
    async def GetCampaignStats(
        self, request: admin_pb2.GetCampaignStatsRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetCampaignStatsResponse:
        stats = await ask(
            "points",
            self.gw.participants.points.GetCampaignStats,
            points_pb2.GetCampaignStatsRequest(
                app=caller.app, code=require_id("code", request.code)
            ),
            deadline=self.timeout,
        )
        return admin_pb2.GetCampaignStatsResponse(
            code=stats.code,
            name=stats.name,
            events=stats.events,
            members=stats.members,
            points_awarded=stats.points_awarded,
            budget_points=stats.budget_points,
            budget_left=stats.budget_left,
        )

    @audited
    async def GetPoolStats(
        self, request: admin_pb2.GetPoolStatsRequest, context: Any, caller: Caller
    ) -> admin_pb2.GetPoolStatsResponse:
        first, last = await self._days(caller.app, request.from_date, request.to_date)
        stats = await ask(
            "lottery",
            self.gw.participants.lottery.GetPoolStats,
            lottery_pb2.GetPoolStatsRequest(
                app=caller.app,
                pool=require_id("pool", request.pool),
                from_date=first.isoformat(),
                to_date=last.isoformat(),
            ),
            deadline=self.timeout,
        )
        return admin_pb2.GetPoolStatsResponse(
            days=[
                admin_pb2.PoolDayStats(
                    date=d.date,
                    draws=d.draws,
                    wins_by_prize=dict(d.wins_by_prize),
                    payout_fen=d.payout_fen,
                    budget_fen=d.budget_fen,
                )
                for d in stats.days
            ]
        )

    @audited
    async def ListAlerts(
        self, request: admin_pb2.ListAlertsRequest, context: Any, caller: Caller
    ) -> admin_pb2.ListAlertsResponse:
        size = page_size(request.page_size)
        p = self.gw.participants
        risk, lottery = await asyncio.gather(
            ask(
                "risk",
                p.risk.ListAlerts,
                risk_pb2.ListAlertsRequest(app=caller.app, page_size=size),
                deadline=self.timeout,
            ),
            ask(
                "lottery",
                p.lottery.ListAlerts,
                lottery_pb2.ListAlertsRequest(app=caller.app, page_size=size),
                deadline=self.timeout,
            ),
        )
        alerts = [
            admin_pb2.Alert(
                source=source,
                kind=a.kind,
                subject=a.subject,
                message=a.message,
                raised_at=a.raised_at,
            )
            for source, page in (("risk", risk), ("lottery", lottery))
            for a in page.alerts
        ]
        alerts.sort(key=lambda a: a.raised_at.ToDatetime(), reverse=True)
        return admin_pb2.ListAlertsResponse(alerts=alerts)


def _review(review: risk_pb2.Review) -> admin_pb2.Review:
    return admin_pb2.Review(
        review_id=review.review_id,
        request_id=review.request_id,
        action=review.action,
        user_id=review.user_id,
        rules=list(review.rules),
        state=review.state,
        operator=review.operator,
        note=review.note,
        created_at=review.created_at if review.HasField("created_at") else None,
    )
