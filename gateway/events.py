"""RecordEvent and RecordEvents: risk first (DENY or REVIEW awards nothing), then points and
growth, then badge reward points — one round trip per service per batch.

Idempotent end to end by event_id: each participant replays by the same key, and the gateway
logs an event only once every part of it is done. So a retry after a participant was down
completes exactly what was missing, and a retry after success answers from the log at once
with ``duplicate`` set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loyalty.gateway.v1 import loyalty_pb2
from loyalty.levels.v1 import levels_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2
from opentelemetry import trace

from gateway.audiences import NO_AUDIENCE, MemberAudience, member_audiences
from gateway.context import Gateway
from gateway.domain.program import GatewayProgram
from gateway.domain.referrals import ReferralTerms
from gateway.participants import ask
from gateway.referrals import settle_due
from gateway.store.events import LoggedEvent, find_logged, log_events
from plumbing.errors import IdempotencyConflict, InvalidArgument, Unavailable
from plumbing.idempotency import payload_hash
from plumbing.telemetry import batch_span
from plumbing.validation import (
    MAX_BATCH,
    check_attributes,
    not_in_future,
    optional_id,
    optional_ip,
    require_id,
    require_non_negative,
)
from plumbing.wire import from_timestamp, to_timestamp

_tracer = trace.get_tracer("loyalty.gateway.events")


@dataclass(frozen=True)
class EventIn:
    event_id: str
    user_id: str
    action: str
    quantity: int
    attributes: dict[str, str]
    occurred_at: datetime | None
    device_id: str
    ip: str
    signed_up_at: datetime | None
    digest: str = field(default="", compare=False)


def parse_event(
    request: loyalty_pb2.RecordEventRequest, now: datetime, prefix: str = ""
) -> EventIn:
    """Every field checked here, against the app's time ``now``: what the participants would
    refuse must be refused under the caller's own field names (never ``requests[0].ip``)."""
    values: dict[str, Any] = {
        "event_id": require_id(f"{prefix}event_id", request.event_id),
        "user_id": require_id(f"{prefix}user_id", request.user_id),
        "action": require_id(f"{prefix}action", request.action),
        "quantity": require_non_negative(f"{prefix}quantity", request.quantity),
        "attributes": check_attributes(f"{prefix}attributes", request.attributes),
        "occurred_at": not_in_future(
            f"{prefix}occurred_at",
            from_timestamp(f"{prefix}occurred_at", request, "occurred_at"),
            now,
        ),
        "device_id": optional_id(f"{prefix}device_id", request.device_id),
        "ip": optional_ip(f"{prefix}ip", request.ip),
        "signed_up_at": not_in_future(
            f"{prefix}signed_up_at",
            from_timestamp(f"{prefix}signed_up_at", request, "signed_up_at"),
            now,
        ),
    }
    digest = payload_hash({k: v for k, v in values.items() if k != "signed_up_at"})
    return EventIn(**values, digest=digest)


def parse_batch(request: loyalty_pb2.RecordEventsRequest, now: datetime) -> list[EventIn]:
    if not request.events:
        raise InvalidArgument("events", "must hold at least one event")
    if len(request.events) > MAX_BATCH:
        raise InvalidArgument("events", f"at most {MAX_BATCH} events per call")
    return [parse_event(event, now, f"events[{i}].") for i, event in enumerate(request.events)]


# Risk's verdicts are the gateway's (same names, same numbers: risk.v1 and gateway.v1 agree).
_DECISIONS = {
    value.number: loyalty_pb2.Decision.Value(value.name)
    for value in risk_pb2.Decision.DESCRIPTOR.values
}


def reply_to_log(reply: loyalty_pb2.RecordEventResponse) -> dict[str, Any]:
    """The answer as the event log keeps it (JSON, proto field names), built by hand: the
    generic json_format walk cost more than the rest of an event's work in the gateway."""
    body: dict[str, Any] = {
        "event_id": reply.event_id,
        "decision": loyalty_pb2.Decision.Name(reply.decision),
        "points_awarded": reply.points_awarded,
        "growth_awarded": reply.growth_awarded,
        "tier": reply.tier,
        "notes": list(reply.notes),
    }
    if reply.points_pending:
        body["points_pending"] = reply.points_pending
    if reply.badges_awarded:
        body["badges_awarded"] = [
            {"code": b.code, "name": b.name, "reward_points": b.reward_points}
            for b in reply.badges_awarded
        ]
    return body


def reply_from_log(body: dict[str, Any]) -> loyalty_pb2.RecordEventResponse:
    """The logged answer again (also the older json_format layout, int64 as strings)."""
    return loyalty_pb2.RecordEventResponse(
        event_id=body.get("event_id", ""),
        decision=loyalty_pb2.Decision.Value(body.get("decision", "DECISION_UNSPECIFIED")),
        points_awarded=int(body.get("points_awarded", 0)),
        growth_awarded=int(body.get("growth_awarded", 0)),
        tier=body.get("tier", ""),
        notes=body.get("notes", []),
        points_pending=int(body.get("points_pending", 0)),
        badges_awarded=[
            loyalty_pb2.BadgeAward(
                code=b.get("code", ""),
                name=b.get("name", ""),
                reward_points=int(b.get("reward_points", 0)),
            )
            for b in body.get("badges_awarded", [])
        ],
    )


async def record_each(
    gw: Gateway, app: str, items: Sequence[tuple[EventIn, trace.Span]]
) -> Sequence[loyalty_pb2.RecordEventResponse | BaseException]:
    """Coalesced single events (each with its caller's span): one batch, and each caller its
    own answer. The batch is traced once, as a span of its own linked to every caller's span;
    each caller's span names the batch's trace (``loyalty.batch.trace_id``).

    When the batch fails for something other than a participant being away (a payload
    conflict, say), each event is tried alone, so one event's failure never fails its
    neighbours; what the batch did is replayed by event_id, never done twice."""
    with batch_span(
        _tracer, "RecordEvent batch", [span for _, span in items], **{"loyalty.app": app}
    ):
        events = [event for event, _ in items]
        try:
            return await record_events(gw, app, events)
        except Exception as error:
            if len(events) == 1 or isinstance(error, Unavailable):
                raise

        async def alone(event: EventIn) -> loyalty_pb2.RecordEventResponse:
            return (await record_events(gw, app, [event]))[0]

        return await asyncio.gather(*(alone(e) for e in events), return_exceptions=True)


async def record_events(
    gw: Gateway, app: str, events: Sequence[EventIn]
) -> list[loyalty_pb2.RecordEventResponse]:
    stored = await gw.program(app)
    # One answer per distinct event_id; a repeat inside the batch is a duplicate of the first.
    unique: dict[str, EventIn] = {}
    for event in events:
        first = unique.setdefault(event.event_id, event)
        if first.digest != event.digest:
            raise IdempotencyConflict(
                f"event_id {event.event_id!r} appears twice with different payloads"
            )
    answers: dict[str, loyalty_pb2.RecordEventResponse] = {}
    for event_id, (digest, response) in (
        await find_logged(gw.resources.engine, app, list(unique))
    ).items():
        if digest != unique[event_id].digest:
            raise IdempotencyConflict(
                f"event_id {event_id!r} was already recorded with another payload"
            )
        answers[event_id] = reply_from_log(response)
        answers[event_id].duplicate = True
    fresh = [event for event_id, event in unique.items() if event_id not in answers]
    if fresh:
        answers.update(await _record_fresh(gw, app, stored.program, fresh))
    replies = []
    seen: set[str] = set()
    for event in events:
        reply = answers[event.event_id]
        if event.event_id in seen:  # a repeat inside the batch: a copy marked duplicate
            again = loyalty_pb2.RecordEventResponse()
            again.CopyFrom(reply)
            again.duplicate = True
            reply = again
        seen.add(event.event_id)
        replies.append(reply)
    return replies


async def _record_fresh(
    gw: Gateway, app: str, program: GatewayProgram, events: list[EventIn]
) -> dict[str, loyalty_pb2.RecordEventResponse]:
    # A batch is one call per service: its deadline grows with it.
    timeout = (
        gw.settings.call_timeout_seconds
        if len(events) == 1
        else gw.settings.batch_call_timeout_seconds
    )
    now = await gw.app_now(app)
    signups: dict[str, datetime | None] = {}
    for event in events:
        if event.signed_up_at is not None or event.user_id not in signups:
            signups[event.user_id] = event.signed_up_at
    created = await gw.members(app, signups)

    decisions, audiences = await asyncio.gather(
        _evaluate(gw, app, events, created, timeout),
        member_audiences(gw, app, program, events, now, timeout),
    )
    replies = {
        e.event_id: loyalty_pb2.RecordEventResponse(
            event_id=e.event_id,
            decision=_DECISIONS[d.decision],
            notes=[f"risk:{rule}" for rule in d.rules],
        )
        for e, d in zip(events, decisions.results, strict=True)
    }
    allowed = [
        e for e, d in zip(events, decisions.results, strict=True) if d.decision == risk_pb2.ALLOW
    ]
    pending_until: dict[str, datetime] = {}
    if allowed:
        pending_until = await _award(gw, app, allowed, replies, audiences, timeout)

    logged = []
    for event in events:
        reply = replies[event.event_id]
        day = (event.occurred_at or now).astimezone(program.zone).date()
        logged.append(
            LoggedEvent(
                event_id=event.event_id,
                user_id=event.user_id,
                action=event.action,
                payload_hash=event.digest,
                decision=loyalty_pb2.Decision.Name(reply.decision),
                points=reply.points_awarded,
                growth=reply.growth_awarded,
                response=reply_to_log(reply),
                day=day,
                occurred_at=event.occurred_at or now,
            )
        )
    qualified = _qualifying(program.referrals, allowed, pending_until, now)
    await log_events(gw.resources.engine, app, logged, now, qualified)
    if any(q["payable_at"] <= now for q in qualified):
        # A purchase with no pending window pays its referral now.
        gw.in_background(settle_due(gw, app), f"referrals-{app}")
    return replies


async def _evaluate(
    gw: Gateway,
    app: str,
    events: list[EventIn],
    created: dict[str, datetime],
    deadline: float,
) -> risk_pb2.EvaluateBatchResponse:
    decisions: risk_pb2.EvaluateBatchResponse = await ask(
        "risk",
        gw.participants.risk.EvaluateBatch,
        risk_pb2.EvaluateBatchRequest(
            requests=[
                risk_pb2.EvaluateRequest(
                    app=app,
                    request_id=f"event:{e.event_id}",
                    action=e.action,
                    user_id=e.user_id,
                    device_id=e.device_id,
                    ip=e.ip,
                    attributes=e.attributes,
                    account_created_at=to_timestamp(created.get(e.user_id)),
                )
                for e in events
            ]
        ),
        deadline=deadline,
    )
    return decisions


def _qualifying(
    terms: ReferralTerms | None,
    allowed: list[EventIn],
    pending_until: dict[str, datetime],
    now: datetime,
) -> list[dict[str, Any]]:
    """The first qualifying purchase of each member in the batch, for their referral: payable
    once its points are no longer pending (at once when the action is not pending)."""
    if terms is None:
        return []
    found: dict[str, dict[str, Any]] = {}
    for event in allowed:
        if event.user_id in found or not terms.qualifies(event.action, event.attributes):
            continue
        found[event.user_id] = {
            "user_id": event.user_id,
            "event_id": event.event_id,
            "device_id": event.device_id,
            "ip": event.ip,
            "at": event.occurred_at or now,
            "payable_at": pending_until.get(event.event_id, now),
        }
    return list(found.values())


async def _award(
    gw: Gateway,
    app: str,
    events: list[EventIn],
    replies: dict[str, loyalty_pb2.RecordEventResponse],
    audiences: dict[str, MemberAudience],
    deadline: float,
) -> dict[str, datetime]:
    """Points, growth and badge rewards of the allowed events; answers when each event's
    pending points (if any) become available."""
    p = gw.participants
    earned = await ask(
        "points",
        p.points.EarnBatch,
        points_pb2.EarnBatchRequest(
            events=[
                points_pb2.EarnRequest(
                    app=app,
                    event_id=e.event_id,
                    user_id=e.user_id,
                    action=e.action,
                    quantity=e.quantity,
                    attributes=e.attributes,
                    occurred_at=to_timestamp(e.occurred_at),
                    **audiences.get(e.user_id, NO_AUDIENCE).as_fields(),
                )
                for e in events
            ]
        ),
        deadline=deadline,
    )
    # Every allowed event goes to levels, growth or not: badges count actions.
    grown = await ask(
        "levels",
        p.levels.AddGrowthBatch,
        levels_pb2.AddGrowthBatchRequest(
            events=[
                levels_pb2.AddGrowthRequest(
                    app=app,
                    event_id=e.event_id,
                    user_id=e.user_id,
                    action=e.action,
                    amount=earn.growth,
                    occurred_at=to_timestamp(e.occurred_at),
                    exempt_from_daily_cap=earn.exempt_from_daily_cap,
                )
                for e, earn in zip(events, earned.results, strict=True)
            ]
        ),
        deadline=deadline,
    )
    grants = []
    pending_until: dict[str, datetime] = {}
    for event, earn, growth in zip(events, earned.results, grown.results, strict=True):
        reply = replies[event.event_id]
        reply.points_awarded = earn.points_awarded
        reply.points_pending = earn.points_pending
        if earn.HasField("pending_until"):
            pending_until[event.event_id] = earn.pending_until.ToDatetime(tzinfo=UTC)
        reply.growth_awarded = growth.growth_added
        reply.tier = growth.tier_after
        reply.notes.extend(earn.notes)
        reply.notes.extend(f"growth:{note}" for note in growth.notes)
        for badge in growth.badges_earned:
            reply.badges_awarded.append(
                loyalty_pb2.BadgeAward(
                    code=badge.code, name=badge.name, reward_points=badge.reward_points
                )
            )
            if badge.reward_points > 0:
                grants.append(
                    ask(
                        "points",
                        p.points.Grant,
                        points_pb2.GrantRequest(
                            app=app,
                            # Once per user and badge, however often the event is replayed.
                            request_id=f"badge:{event.user_id}:{badge.code}",
                            user_id=event.user_id,
                            amount=badge.reward_points,
                            reason=f"badge:{badge.code}",
                            operator="gateway",
                        ),
                        deadline=deadline,
                    )
                )
    if grants:
        await asyncio.gather(*grants)
    return pending_until
