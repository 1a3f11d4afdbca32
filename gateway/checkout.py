"""Points at the app's own checkout (积分抵现): the product backend drives a two-phase payment
of part of its order with points, keyed by its own `order_ref`.

Each order_ref has one hold in the ledger, `order:<order_ref>`, whose barrier gives the rules
the product backend relies on: a retried hold acts once; a release that comes first is recorded
and refuses the late hold; capturing an expired or released hold is HOLD_EXPIRED /
HOLD_RELEASED, never a silent success; refunds never exceed what was captured. Every call is
also idempotent by its `request_id`: a retry with the same id gets the first answer, the same
id with another payload is refused. The gateway keeps `order_holds` for ListOrderHolds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict, ParseDict
from loyalty.gateway.v1 import loyalty_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2
from opentelemetry import trace

from gateway.context import Gateway
from gateway.domain.checkout import CheckoutDisabled, CheckoutRules, OrderState
from gateway.participants import ask
from gateway.risk_gate import risk_refusal
from gateway.store import order_holds
from gateway.store.tables import requests
from plumbing.errors import InvalidArgument, LoyaltyError
from plumbing.idempotency import find_request, finish_request, payload_hash
from plumbing.validation import (
    MAX_AMOUNT,
    optional_id,
    optional_ip,
    require_id,
    require_positive,
)
from plumbing.wire import decode_cursor, encode_cursor, page_size, to_timestamp

STATES = tuple(OrderState)


def hold_id(order_ref: str) -> str:
    return f"order:{order_ref}"


@dataclass(frozen=True)
class Key:
    """A call's idempotency key: its request_id, what it is, and its payload's digest."""

    request_id: str
    kind: str
    digest: str

    @staticmethod
    def of(request_id: str, kind: str, payload: dict[str, Any]) -> Key:
        return Key(request_id, kind, payload_hash(payload))


class Checkout:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.timeout = gw.settings.call_timeout_seconds

    async def _rules(self, app: str) -> CheckoutRules:
        rules = (await self.gw.program(app)).program.checkout
        if rules is None or not rules.enabled:
            raise CheckoutDisabled("points cannot pay for orders in this app's program")
        return rules

    async def _replay(self, app: str, key: Key) -> loyalty_pb2.OrderHold | None:
        """The first answer to this request_id, if there is one (read only: a request that
        is refused leaves nothing behind)."""
        async with self.gw.resources.engine.connect() as conn:
            first = await find_request(conn, requests, app, key.request_id, key.kind, key.digest)
        return ParseDict(first, loyalty_pb2.OrderHold()) if first else None

    async def _record(
        self,
        app: str,
        order_ref: str,
        key: Key | None,
        values: dict[str, Any],
        changes: str = order_holds.STATE,
    ) -> loyalty_pb2.OrderHold:
        """Upserts the order's row (``values`` for a new row; ``changes`` says what an existing
        one takes from them) and, with ``key``, records the answer under its request_id in the
        same transaction. A concurrent call with the same request_id that committed first
        wins: its answer is returned."""
        now = await self.gw.app_now(app)
        claim = (key.request_id, key.kind, key.digest) if key is not None else None
        async with self.gw.resources.engine.begin() as conn:
            row = await order_holds.write_order(conn, app, order_ref, now, changes, values, claim)
            if row is None and key is not None:
                first = await find_request(
                    conn, requests, app, key.request_id, key.kind, key.digest
                )
                if first is None:
                    raise RuntimeError(f"request_id {key.request_id!r} claimed without an answer")
                return ParseDict(first, loyalty_pb2.OrderHold())
            reply = self._message(row, now)
            if key is not None:
                answer = MessageToDict(reply, preserving_proto_field_name=True)
                await finish_request(conn, requests, app, key.request_id, answer)
        return reply

    @staticmethod
    def _message(row: Any, now: datetime) -> loyalty_pb2.OrderHold:
        state = row.state
        if state == OrderState.HELD and row.expires_at is not None and row.expires_at <= now:
            state = OrderState.EXPIRED
        return loyalty_pb2.OrderHold(
            hold_id=hold_id(row.order_ref),
            order_ref=row.order_ref,
            user_id=row.user_id,
            points=row.points,
            value_fen=row.value_fen,
            expires_at=to_timestamp(row.expires_at),
            state=state,
            points_refunded=row.points_refunded,
        )

    # --- the calls --------------------------------------------------------------------------

    async def quote(
        self, app: str, request: loyalty_pb2.QuoteCheckoutRequest
    ) -> loyalty_pb2.QuoteCheckoutResponse:
        user_id = require_id("user_id", request.user_id)
        amount = require_positive("order_amount_fen", request.order_amount_fen)
        rules = await self._rules(app)
        balance = await ask(
            "points",
            self.gw.participants.points.GetBalance,
            points_pb2.GetBalanceRequest(app=app, user_id=user_id),
            deadline=self.timeout,
        )
        most = rules.max_points(amount, balance.available)
        return loyalty_pb2.QuoteCheckoutResponse(
            max_points=most,
            max_value_fen=rules.value_fen(most),
            min_points=rules.min_points,
            step=rules.step,
            points_available=balance.available,
        )

    async def hold(
        self, app: str, request: loyalty_pb2.HoldForOrderRequest
    ) -> loyalty_pb2.OrderHold:
        request_id = require_id("request_id", request.request_id)
        user_id = require_id("user_id", request.user_id)
        order_ref = require_id("order_ref", request.order_ref)
        points = require_positive("points", request.points)
        amount = require_positive("order_amount_fen", request.order_amount_fen)
        device_id = optional_id("device_id", request.device_id)
        ip = optional_ip("ip", request.ip)
        rules = await self._rules(app)
        rules.check_hold(points, amount)
        asked = {"user_id": user_id, "order_ref": order_ref, "points": points, "amount": amount}
        trace.get_current_span().set_attributes({"app": app, "order_ref": order_ref})
        key = Key.of(request_id, "hold_for_order", asked)
        first = await self._replay(app, key)
        if first is not None:
            return first
        p = self.gw.participants
        created = await self.gw.members(app, {user_id: None})
        decision = await ask(
            "risk",
            p.evaluate,
            risk_pb2.EvaluateRequest(
                app=app,
                request_id=f"checkout:{hold_id(order_ref)}",
                action="checkout",
                user_id=user_id,
                device_id=device_id,
                ip=ip,
                amount=points,
                attributes={"order_ref": order_ref, "order_amount_fen": str(amount)},
                account_created_at=to_timestamp(created[user_id]),
            ),
            deadline=self.timeout,
        )
        refused = risk_refusal(decision, "checkout")
        if refused is not None:
            raise refused
        ttl = Duration()
        ttl.FromTimedelta(timedelta(minutes=rules.hold_minutes))
        held = await ask(
            "points",
            p.hold,
            points_pb2.HoldRequest(
                app=app,
                saga_id=hold_id(order_ref),
                user_id=user_id,
                amount=points,
                ttl=ttl,
                ref=hold_id(order_ref),
            ),
            deadline=self.timeout,
        )
        return await self._record(
            app,
            order_ref,
            key,
            {
                "user_id": user_id,
                "points": points,
                "value_fen": rules.value_fen(points),
                "state": OrderState.HELD,
                "expires_at": held.expires_at.ToDatetime(tzinfo=UTC),
            },
            order_holds.HOLD,
        )

    async def capture(
        self, app: str, request: loyalty_pb2.CaptureOrderRequest
    ) -> loyalty_pb2.OrderHold:
        request_id = require_id("request_id", request.request_id)
        order_ref = require_id("order_ref", request.order_ref)
        key = Key.of(request_id, "capture_order", {"order_ref": order_ref})
        first = await self._replay(app, key)
        if first is not None:
            return first
        try:
            await ask(
                "points",
                self.gw.participants.capture,
                points_pb2.CaptureRequest(app=app, saga_id=hold_id(order_ref)),
                deadline=self.timeout,
            )
        except LoyaltyError as refused:
            late = {"HOLD_EXPIRED": OrderState.EXPIRED, "HOLD_RELEASED": OrderState.RELEASED}.get(
                refused.reason
            )
            if late is not None:  # the ledger's verdict, kept for ListOrderHolds
                await self._record(app, order_ref, None, {"state": late})
            raise
        return await self._record(app, order_ref, key, {"state": OrderState.CAPTURED})

    async def release(
        self, app: str, request: loyalty_pb2.ReleaseOrderRequest
    ) -> loyalty_pb2.OrderHold:
        request_id = require_id("request_id", request.request_id)
        order_ref = require_id("order_ref", request.order_ref)
        key = Key.of(request_id, "release_order", {"order_ref": order_ref})
        first = await self._replay(app, key)
        if first is not None:
            return first
        # A release before any hold is recorded by the ledger, which then refuses the late hold.
        released = await ask(
            "points",
            self.gw.participants.release_hold,
            points_pb2.ReleaseHoldRequest(app=app, saga_id=hold_id(order_ref)),
            deadline=self.timeout,
        )
        state = OrderState.EXPIRED if released.state == points_pb2.EXPIRED else OrderState.RELEASED
        return await self._record(app, order_ref, key, {"state": state})

    async def refund(
        self, app: str, request: loyalty_pb2.RefundOrderRequest
    ) -> loyalty_pb2.OrderHold:
        request_id = require_id("request_id", request.request_id)
        order_ref = require_id("order_ref", request.order_ref)
        points = require_positive("points", request.points, maximum=MAX_AMOUNT)
        key = Key.of(request_id, "refund_order", {"order_ref": order_ref, "points": points})
        first = await self._replay(app, key)
        if first is not None:
            return first
        moved = await ask(
            "points",
            self.gw.participants.points.Refund,
            points_pb2.RefundRequest(
                app=app,
                request_id=f"order-refund:{request_id}",
                saga_id=hold_id(order_ref),
                amount=points,
                reason=f"refund of order {order_ref}",
            ),
            deadline=self.timeout,
        )
        # Counted in SQL, so two refunds of one order at once both count; a refund the ledger
        # had already made (a retry under the same request_id) counts once.
        added = 0 if moved.duplicate else points
        return await self._record(
            app,
            order_ref,
            key,
            {"refunded": added, "state": OrderState.CAPTURED},
            order_holds.REFUND,
        )

    async def list(
        self, app: str, request: loyalty_pb2.ListOrderHoldsRequest
    ) -> loyalty_pb2.ListOrderHoldsResponse:
        state = request.state.lower()
        if state and state not in STATES:
            raise InvalidArgument("state", f"must be one of {', '.join(STATES)}")
        size = page_size(request.page_size)
        before = decode_cursor(request.page_token)
        now = await self.gw.app_now(app)
        async with self.gw.resources.engine.connect() as conn:
            rows = await order_holds.list_orders(conn, app, state, now, before, size + 1)
        last = rows[size - 1] if len(rows) > size else None
        token = encode_cursor(last.created_at, last.order_ref) if last is not None else ""
        return loyalty_pb2.ListOrderHoldsResponse(
            holds=[self._message(row, now) for row in rows[:size]], next_page_token=token
        )
