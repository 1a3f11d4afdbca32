"""The member API (``loyalty.gateway.v1.LoyaltyService``): what product backends call.

Every call is authenticated first; the app comes from the key, never from the request. The
sagas are in ``saga/``, events in ``events.py``, points at the app's checkout in
``checkout.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import grpc
from loyalty.gateway.v1 import loyalty_pb2, loyalty_pb2_grpc
from loyalty.levels.v1 import levels_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2
from opentelemetry import trace

from gateway.checkout import Checkout
from gateway.context import Gateway, gateway_of, trace_ids
from gateway.domain.sagas import SagaState
from gateway.domain.tags import checked_tags
from gateway.events import (
    EventIn,
    parse_batch,
    parse_event,
    record_each,
    record_events,
)
from gateway.member_reads import MemberReads
from gateway.participants import ask
from gateway.referrals import list_referrals, refer, referral_message, refuse_reversed
from gateway.risk_gate import risk_refusal
from gateway.saga.engine import count_outcome, discard
from gateway.store.events import find_logged
from gateway.store.sagas import SagaRecord
from gateway.tags import set_member_tags
from plumbing.batching import NaturalBatcher
from plumbing.errors import InvalidArgument, NotFound
from plumbing.idempotency import payload_hash
from plumbing.server import Resources
from plumbing.validation import (
    MAX_BATCH,
    check_address,
    optional_id,
    optional_ip,
    require_id,
    require_positive,
)
from plumbing.wire import decode_cursor, encode_cursor, page_size, to_timestamp

MAX_REDEEM_QUANTITY = 100


class UnknownSku(NotFound):
    reason = "UNKNOWN_SKU"


class UnknownPool(NotFound):
    reason = "UNKNOWN_POOL"


class RedemptionNotFound(NotFound):
    reason = "REDEMPTION_NOT_FOUND"


class EventNotFound(NotFound):
    reason = "EVENT_NOT_FOUND"


def draw_result(saga: SagaRecord) -> loyalty_pb2.DrawResult:
    status = {
        SagaState.COMPLETED: loyalty_pb2.DrawResult.COMPLETED,
        SagaState.COMPENSATED: loyalty_pb2.DrawResult.FAILED,
    }.get(saga.state, loyalty_pb2.DrawResult.PENDING)
    result = saga.result
    return loyalty_pb2.DrawResult(
        draw_id=result.get("draw_id", ""),
        status=status,
        reason=saga.reason,
        prize_code=result.get("prize_code", ""),
        prize_kind=result.get("prize_kind", ""),
        points_awarded=int(result.get("points_awarded", 0)),
        order_id=result.get("order_id", ""),
        coupon_code=result.get("coupon_code", ""),
        trace_id=saga.trace_id,
    )


def redemption(saga: SagaRecord) -> loyalty_pb2.Redemption:
    status = {
        SagaState.COMPLETED: loyalty_pb2.Redemption.COMPLETED,
        SagaState.COMPENSATED: loyalty_pb2.Redemption.FAILED,
    }.get(saga.state, loyalty_pb2.Redemption.PENDING)
    result = saga.result
    completed = saga.state is SagaState.COMPLETED
    return loyalty_pb2.Redemption(
        redemption_id=saga.saga_id,
        status=status,
        reason=saga.reason,
        order_id=result.get("order_id", "") if completed else "",
        points_spent=int(result.get("points_spent", 0)) if completed else 0,
        coupon_code=result.get("coupon_code", "") if completed else "",
        trace_id=saga.trace_id,
    )


def saga_id_of(app: str, kind: str, request_id: str) -> str:
    """A saga's id follows from its request key, so a call sent for it before its row is
    written (``Gateway.early_checks``) carries the same id as the replay of that request."""
    return str(uuid5(NAMESPACE_URL, f"loyalty:{app}/{kind}/{request_id}"))


class LoyaltyServicer(loyalty_pb2_grpc.LoyaltyServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.gw: Gateway = gateway_of(resources)
        self.timeout = self.gw.settings.call_timeout_seconds
        self.checkout = Checkout(self.gw)
        self.reads = MemberReads(self.gw)
        # Concurrent single events of one app travel to the participants as one batch.
        self.single_events: NaturalBatcher[
            str, tuple[EventIn, trace.Span], loyalty_pb2.RecordEventResponse
        ] = NaturalBatcher(
            functools.partial(record_each, self.gw),
            max_batch=MAX_BATCH,
            in_flight=self.gw.settings.event_batches_in_flight,
        )

    async def _app(self, context: Any) -> str:
        return (await self.gw.auth.caller(context, "member")).app

    # --- events ---------------------------------------------------------------------------

    async def RecordEvent(
        self, request: loyalty_pb2.RecordEventRequest, context: Any
    ) -> loyalty_pb2.RecordEventResponse:
        app = await self._app(context)
        event = parse_event(request, await self.gw.app_now(app))
        return await self.single_events.submit(app, (event, trace.get_current_span()))

    async def RecordEvents(
        self, request: loyalty_pb2.RecordEventsRequest, context: Any
    ) -> loyalty_pb2.RecordEventsResponse:
        app = await self._app(context)
        events = parse_batch(request, await self.gw.app_now(app))
        trace.get_current_span().set_attribute("loyalty.events", len(events))
        replies = await record_events(self.gw, app, events)
        return loyalty_pb2.RecordEventsResponse(results=replies)

    async def ReverseEvent(
        self, request: loyalty_pb2.ReverseEventRequest, context: Any
    ) -> loyalty_pb2.ReverseEventResponse:
        app = await self._app(context)
        event_id = require_id("event_id", request.event_id)
        reason = require_id("reason", request.reason, max_length=1024)
        logged = await find_logged(self.gw.resources.engine, app, [event_id])
        if event_id not in logged:
            raise EventNotFound(f"no event {event_id!r} was recorded")
        response = logged[event_id][1]
        if response.get("decision", "ALLOW") != "ALLOW":
            return loyalty_pb2.ReverseEventResponse()
        # First: a refunded purchase never pays the referral it qualified (a retry of a
        # reversal that failed below finds it refused already).
        await refuse_reversed(self.gw, app, event_id)
        p = self.gw.participants
        points, growth = await asyncio.gather(
            ask(
                "points",
                p.points.ReverseEvent,
                points_pb2.ReverseEventRequest(app=app, event_id=event_id, reason=reason),
                deadline=self.timeout,
            ),
            ask(
                "levels",
                p.levels.ReverseGrowth,
                levels_pb2.ReverseGrowthRequest(app=app, event_id=event_id, reason=reason),
                deadline=self.timeout,
            ),
        )
        return loyalty_pb2.ReverseEventResponse(
            points_reversed=points.points_reversed, growth_reversed=growth.growth_reversed
        )

    # --- reads (gateway/member_reads.py; the admin API shows the same) -----------------------

    async def GetMember(
        self, request: loyalty_pb2.GetMemberRequest, context: Any
    ) -> loyalty_pb2.GetMemberResponse:
        return await self.reads.member(await self._app(context), request, sighting=True)

    async def SetMemberTags(
        self, request: loyalty_pb2.SetMemberTagsRequest, context: Any
    ) -> loyalty_pb2.SetMemberTagsResponse:
        app = await self._app(context)
        user_id = require_id("user_id", request.user_id)
        add = checked_tags("add", request.add)
        remove = checked_tags("remove", request.remove)
        tags = await set_member_tags(
            self.gw.resources.engine, app, user_id, add, remove, await self.gw.app_now(app)
        )
        return loyalty_pb2.SetMemberTagsResponse(user_id=user_id, tags=tags)

    async def Refer(self, request: loyalty_pb2.ReferRequest, context: Any) -> loyalty_pb2.Referral:
        app = await self._app(context)
        row = await refer(
            self.gw,
            app,
            require_id("request_id", request.request_id),
            require_id("referrer_user_id", request.referrer_user_id),
            require_id("referred_user_id", request.referred_user_id),
        )
        return referral_message(row)

    async def ListReferrals(
        self, request: loyalty_pb2.ListReferralsRequest, context: Any
    ) -> loyalty_pb2.ListReferralsResponse:
        app = await self._app(context)
        user_id = require_id("user_id", request.user_id)
        size = page_size(request.page_size)
        found = await list_referrals(
            self.gw, app, user_id, size + 1, decode_cursor(request.page_token)
        )
        last = found[size - 1] if len(found) > size else None
        return loyalty_pb2.ListReferralsResponse(
            referrals=[referral_message(row) for row in found[:size]],
            next_page_token=encode_cursor(last.created_at, last.referral_id) if last else "",
        )

    async def ListPointsHistory(
        self, request: loyalty_pb2.ListPointsHistoryRequest, context: Any
    ) -> loyalty_pb2.ListPointsHistoryResponse:
        return await self.reads.points_history(await self._app(context), request)

    async def ListCatalog(
        self, request: loyalty_pb2.ListCatalogRequest, context: Any
    ) -> loyalty_pb2.ListCatalogResponse:
        return await self.reads.catalog(await self._app(context), request, member_required=True)

    async def ListOrders(
        self, request: loyalty_pb2.ListOrdersRequest, context: Any
    ) -> loyalty_pb2.ListOrdersResponse:
        return await self.reads.orders(await self._app(context), request)

    # --- the redemption saga ----------------------------------------------------------------

    async def Redeem(
        self, request: loyalty_pb2.RedeemRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> loyalty_pb2.Redemption:
        app = await self._app(context)
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        sku = require_id("sku", request.sku)
        quantity = require_positive("quantity", request.quantity or 1, maximum=MAX_REDEEM_QUANTITY)
        address = check_address(request)
        device_id = optional_id("device_id", request.device_id)
        ip = optional_ip("ip", request.ip)
        stored = await self.gw.program(app)
        item = stored.program.items.get(sku)
        if item is None:
            raise UnknownSku(f"no item {sku!r} in the app's catalog")
        asked = {
            "user_id": user_id,
            "sku": sku,
            "quantity": quantity,
            "address": address,
            "device_id": device_id,
            "ip": ip,
        }
        created = await self.gw.members(app, {user_id: None})
        payload = {
            **asked,
            "price_points": item.price_points,
            "min_tier": item.min_tier,
            "account_created_at": created[user_id].isoformat(),
        }
        refused = "OUT_OF_STOCK" if self.gw.sold_out.known(app, sku) else ""
        saga = await self._saga(
            context, app, "redeem", request_id, asked, payload, {"sku": sku}, refused=refused
        )
        return redemption(saga)

    async def _saga(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        app: str,
        kind: str,
        request_id: str,
        asked: dict[str, Any],
        payload: dict[str, Any],
        attributes: dict[str, str],
        *,
        refused: str = "",
    ) -> SagaRecord:
        """Starts a saga under the caller's request_id (or finds the one it started before)
        and waits for its end until the caller's deadline; the saga goes on after that. A saga
        ``refused`` at the door (a reason) is recorded as ended, and nothing is driven."""
        gw = self.gw
        saga_id = saga_id_of(app, kind, request_id)
        span = gw.tracer.start_span(
            f"saga {kind}",
            attributes={"saga.id": saga_id, "saga.kind": kind, "app": app, **attributes},
        )
        trace_id, span_id = trace_ids(span)
        trace_kept = span.get_span_context().trace_flags.sampled
        stored = await gw.program(app)
        app_day = gw.programs.now(stored).astimezone(stored.program.zone).date()
        with trace.use_span(span, end_on_exit=False):
            user_id = asked["user_id"]
            early = {} if refused else gw.early_checks(kind, saga_id, app, user_id, payload)
            try:
                saga, new = await gw.sagas.start(
                    saga_id,
                    app,
                    kind,
                    request_id,
                    user_id,
                    payload,
                    payload_hash(asked),
                    trace_id,
                    span_id,
                    app_day,
                    refused=refused,
                    trace_kept=trace_kept,
                )
            except BaseException:
                discard(early)
                span.end()
                raise
        if not new:
            discard(early)
            span.set_attribute("saga.replay_of", saga.saga_id)
            span.end()
            return saga
        if refused:
            span.set_attributes({"saga.outcome": saga.state, "saga.reason": refused})
            span.end()
            count_outcome(saga)
            return saga
        task = gw.launch(saga, span, early)
        remaining = context.time_remaining()
        wait = gw.settings.redeem_wait_seconds
        if remaining is not None and math.isfinite(remaining):
            wait = max(0.0, min(wait, remaining - 0.25))
        # On time-out the answer is PENDING: the drive goes on, and the recovery loop
        # finishes the saga if this process dies first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait)
        return saga

    async def GetRedemption(
        self, request: loyalty_pb2.GetRedemptionRequest, context: Any
    ) -> loyalty_pb2.Redemption:
        app = await self._app(context)
        saga_id = require_id("redemption_id", request.redemption_id)
        saga = await self.gw.sagas.get(app, saga_id)
        if saga is None or saga.kind != "redeem":
            raise RedemptionNotFound(f"no redemption {saga_id!r}")
        return redemption(saga)

    # --- the draw saga ---------------------------------------------------------------------

    async def Draw(
        self, request: loyalty_pb2.DrawRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> loyalty_pb2.DrawResult:
        app = await self._app(context)
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        pool = require_id("pool", request.pool)
        asked = {
            "user_id": user_id,
            "pool": pool,
            "device_id": optional_id("device_id", request.device_id),
            "ip": optional_ip("ip", request.ip),
        }
        stored = await self.gw.program(app)
        cost = stored.program.pool_costs.get(pool)
        if cost is None:
            raise UnknownPool(f"no pool {pool!r} in the app's lottery")
        created = await self.gw.members(app, {user_id: None})
        payload = {
            **asked,
            "cost_points": cost,
            "account_created_at": created[user_id].isoformat(),
        }
        saga = await self._saga(context, app, "draw", request_id, asked, payload, {"pool": pool})
        return draw_result(saga)

    # --- gifts ------------------------------------------------------------------------------

    async def Gift(
        self, request: loyalty_pb2.GiftRequest, context: Any
    ) -> loyalty_pb2.GiftResponse:
        app = await self._app(context)
        request_id = require_id("request_id", request.request_id)
        sender = require_id("from_user_id", request.from_user_id)
        receiver = require_id("to_user_id", request.to_user_id)
        if sender == receiver:
            raise InvalidArgument("to_user_id", "must differ from from_user_id")
        points = require_positive("points", request.points)
        device_id = optional_id("device_id", request.device_id)
        ip = optional_ip("ip", request.ip)
        gw, p = self.gw, self.gw.participants
        created = await gw.members(app, {sender: None, receiver: None})
        decision = await ask(
            "risk",
            p.evaluate,
            risk_pb2.EvaluateRequest(
                app=app,
                request_id=f"gift:{request_id}",
                action="gift",
                user_id=sender,
                device_id=device_id,
                ip=ip,
                amount=points,
                attributes={"to_user_id": receiver},
                account_created_at=to_timestamp(created[sender]),
            ),
            deadline=self.timeout,
        )
        refused = risk_refusal(decision, "gift")
        if refused is not None:
            raise refused
        moved = await ask(
            "points",
            p.points.Gift,
            points_pb2.GiftRequest(
                app=app,
                request_id=request_id,
                from_user_id=sender,
                to_user_id=receiver,
                amount=points,
            ),
            deadline=self.timeout,
        )
        return loyalty_pb2.GiftResponse(
            points=moved.amount, from_points_available=moved.balance, duplicate=moved.duplicate
        )

    # --- points at the app's own checkout (积分抵现) ------------------------------------------

    async def QuoteCheckout(
        self, request: loyalty_pb2.QuoteCheckoutRequest, context: Any
    ) -> loyalty_pb2.QuoteCheckoutResponse:
        return await self.checkout.quote(await self._app(context), request)

    async def HoldForOrder(
        self, request: loyalty_pb2.HoldForOrderRequest, context: Any
    ) -> loyalty_pb2.OrderHold:
        return await self.checkout.hold(await self._app(context), request)

    async def CaptureOrder(
        self, request: loyalty_pb2.CaptureOrderRequest, context: Any
    ) -> loyalty_pb2.OrderHold:
        return await self.checkout.capture(await self._app(context), request)

    async def ReleaseOrder(
        self, request: loyalty_pb2.ReleaseOrderRequest, context: Any
    ) -> loyalty_pb2.OrderHold:
        return await self.checkout.release(await self._app(context), request)

    async def RefundOrder(
        self, request: loyalty_pb2.RefundOrderRequest, context: Any
    ) -> loyalty_pb2.OrderHold:
        return await self.checkout.refund(await self._app(context), request)

    async def ListOrderHolds(
        self, request: loyalty_pb2.ListOrderHoldsRequest, context: Any
    ) -> loyalty_pb2.ListOrderHoldsResponse:
        return await self.checkout.list(await self._app(context), request)
