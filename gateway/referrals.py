"""Referrals, the use cases: Refer and ListReferrals; a qualified referral paid once its
qualifying purchase is no longer pending (a background job, and AdvanceClock for sandbox apps);
a reversal of the qualifying purchase before then refuses it.

The gateway owns referrals because only it sees both members and the whole event: it records
first sight and earning (ALREADY_ACTIVE), has the purchase's device and ip for the payout's
risk check, and pays through points' idempotent Grant, so a payer that dies midway pays once
when the next one retries.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from loyalty.gateway.v1 import loyalty_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

from gateway.context import Gateway, gateway_of
from gateway.domain.program import GatewayProgram
from gateway.domain.referrals import (
    AlreadyReferred,
    NoReferrals,
    ReferralReason,
    ReferralState,
    check_referral,
    month_bounds,
)
from gateway.participants import ask
from gateway.store import referrals as store
from gateway.store.referrals import ReferralRow
from plumbing.errors import IdempotencyConflict
from plumbing.jobs import every
from plumbing.server import Resources
from plumbing.wire import to_timestamp

log = logging.getLogger("loyalty.gateway.referrals")

# Referrals paid per app in one pass of the job.
PAY_BATCH = 100
RISK_ACTION = "referral"


async def refer(
    gw: Gateway, app: str, request_id: str, referrer: str, referred: str
) -> ReferralRow:
    stored = await gw.programs.get(app)
    terms = stored.program.referrals
    if terms is None:
        raise NoReferrals("the app's program has no referrals section")
    now = gw.programs.now(stored)
    async with gw.resources.engine.begin() as conn:
        known = await store.by_request(conn, app, request_id)
        if known is not None:
            return _replayed(known, referrer, referred)
        check_referral(
            referrer,
            referred,
            referred_before=await store.is_referred(conn, app, referred),
            active=await store.has_earned(conn, app, referred),
        )
        row = ReferralRow(
            referral_id=f"ref_{uuid.uuid4().hex}",
            request_id=request_id,
            referrer_user_id=referrer,
            referred_user_id=referred,
            state=ReferralState.PENDING,
            reason="",
            created_at=now,
            expires_at=now + terms.within,
            qualifying_event_id="",
            device_id="",
            ip="",
            payable_at=None,
            paid_at=None,
            referrer_points=terms.referrer_points,
            referred_points=terms.referred_points,
        )
        made = await store.insert(conn, app, row)
    if made:
        # First sight of both, once the referral is made (a refused one records nothing).
        await gw.members(app, {referrer: None, referred: None})
        return row
    # A concurrent Refer won: the same request_id (answer it) or the same referred member.
    async with gw.resources.engine.connect() as conn:
        known = await store.by_request(conn, app, request_id)
    if known is not None:
        return _replayed(known, referrer, referred)
    raise AlreadyReferred(f"member {referred!r} was already referred")


def _replayed(known: ReferralRow, referrer: str, referred: str) -> ReferralRow:
    if (known.referrer_user_id, known.referred_user_id) != (referrer, referred):
        raise IdempotencyConflict(
            f"request_id {known.request_id!r} was already used for another referral"
        )
    return known


async def list_referrals(
    gw: Gateway, app: str, referrer: str, limit: int, before: tuple[datetime, str] | None
) -> list[ReferralRow]:
    async with gw.resources.engine.connect() as conn:
        return await store.page(conn, app, referrer, limit, before)


async def settle_due(gw: Gateway, app: str) -> int:
    """Expires the referrals past their time and pays the qualified ones now due; answers how
    many were paid or refused. Safe beside another gateway doing the same (SKIP LOCKED)."""
    stored = await gw.programs.get(app)
    now = gw.programs.now(stored)
    async with gw.resources.engine.begin() as conn:
        await store.expire_due(conn, app, now, ReferralReason.NOT_QUALIFIED_IN_TIME)
    settled = 0
    while True:
        async with gw.resources.engine.connect() as conn:
            due = await store.due_ids(conn, app, now, PAY_BATCH)
        for referral_id in due:
            settled += await _settle_one(gw, app, referral_id, now, stored.program)
        if len(due) < PAY_BATCH:
            return settled


async def _settle_one(
    gw: Gateway, app: str, referral_id: str, now: datetime, program: GatewayProgram
) -> int:
    """One referral paid or refused, in one transaction that holds it (and its referrer's
    turn) while risk is asked and the grants are made."""
    async with gw.resources.engine.begin() as conn:
        row = await store.lock_due(conn, app, referral_id, now)
        if row is None:
            return 0  # another payer has it, or a reversal refused it
        await store.lock_referrer(conn, app, row.referrer_user_id)
        terms = program.referrals
        limit = terms.per_referrer_monthly if terms else None
        if limit is not None:
            start, end = month_bounds(now, program.zone)
            if await store.paid_between(conn, app, row.referrer_user_id, start, end) >= limit:
                await store.settle(
                    conn,
                    app,
                    referral_id,
                    ReferralState.REFUSED,
                    ReferralReason.PER_REFERRER_LIMIT,
                    None,
                )
                return 1
        verdict = await _risk(gw, app, row)
        if verdict != risk_pb2.ALLOW:
            reason = (
                ReferralReason.RISK_DENIED
                if verdict == risk_pb2.DENY
                else ReferralReason.RISK_REVIEW
            )
            await store.settle(conn, app, referral_id, ReferralState.REFUSED, reason, None)
            return 1
        await _pay(gw, app, row)
        await store.settle(conn, app, referral_id, ReferralState.PAID, "", now)
        return 1


async def _risk(gw: Gateway, app: str, row: ReferralRow) -> int:
    answer = await ask(
        "risk",
        gw.participants.risk.Evaluate,
        risk_pb2.EvaluateRequest(
            app=app,
            request_id=f"referral:{row.referral_id}",
            action=RISK_ACTION,
            user_id=row.referred_user_id,
            device_id=row.device_id,
            ip=row.ip,
            attributes={"referrer_user_id": row.referrer_user_id},
        ),
        deadline=gw.settings.call_timeout_seconds,
    )
    return int(answer.decision)


async def _pay(gw: Gateway, app: str, row: ReferralRow) -> None:
    """Both grants, idempotent by the referral: a retry after a crash pays each once."""
    for side, user, amount in (
        ("referrer", row.referrer_user_id, row.referrer_points),
        ("referred", row.referred_user_id, row.referred_points),
    ):
        if amount > 0:
            await ask(
                "points",
                gw.participants.points.Grant,
                points_pb2.GrantRequest(
                    app=app,
                    request_id=f"referral:{row.referral_id}:{side}",
                    user_id=user,
                    amount=amount,
                    reason="referral",
                    operator="gateway",
                ),
                deadline=gw.settings.call_timeout_seconds,
            )


async def refuse_reversed(gw: Gateway, app: str, event_id: str) -> None:
    """Before a qualifying purchase is reversed: its referral, if not yet paid, never will be."""
    async with gw.resources.engine.begin() as conn:
        await store.refuse_for_event(conn, app, event_id, ReferralReason.EVENT_REVERSED)


async def settle_every_app(gw: Gateway) -> int:
    """The background job's pass: every app with open referrals."""
    async with gw.resources.engine.connect() as conn:
        apps = await store.apps_with_open(conn)
    settled = 0
    for app in apps:
        try:
            settled += await settle_due(gw, app)
        except Exception:
            log.exception("settling the referrals of app %s failed; the next pass retries", app)
    return settled


def referral_message(row: ReferralRow) -> loyalty_pb2.Referral:
    return loyalty_pb2.Referral(
        referral_id=row.referral_id,
        referrer_user_id=row.referrer_user_id,
        referred_user_id=row.referred_user_id,
        state=row.state,
        reason=row.reason,
        created_at=to_timestamp(row.created_at),
        qualifying_event_id=row.qualifying_event_id,
        payable_at=to_timestamp(row.payable_at),
        paid_at=to_timestamp(row.paid_at),
    )


async def referral_payer(resources: Resources) -> None:
    """The background job: every app's due referrals settled on the app's clock."""
    gw = gateway_of(resources)
    seconds = gw.settings.referral_interval_seconds
    await every(seconds, "referral payouts", lambda: settle_every_app(gw))
