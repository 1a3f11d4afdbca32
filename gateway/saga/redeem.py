"""The redemption saga, as the business tells it (DESIGN.md, "The redemption saga"):

    risk and tier checks → reserve the item and hold the points → COMMIT POINT →
    confirm the order → capture the points → COMPLETED

Before the commit point any business refusal compensates at once (release the hold, release
the reservation) and the saga ends COMPENSATED with the refusal as its reason. After it the saga
only goes forward; if a participant still says no there (the reservation or the hold ran out
while the gateway was down), what was done is undone the same way (cancel the order, give the
points back) and the reason says why. Every call is keyed by the saga id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from loyalty.levels.v1 import levels_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

from gateway.domain.sagas import SagaReason, SagaState, StepState
from gateway.participants import Participants
from gateway.risk_gate import risk_refusal, saga_risk_request
from gateway.saga.engine import Drive, SagaPlan, StepFailed, run_plan


@dataclass(frozen=True)
class RedeemTerms:
    reservation_ttl: timedelta
    hold_ttl: timedelta


def _duration(delta: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(delta)
    return duration


async def run_redeem(drive: Drive, p: Participants, terms: RedeemTerms, *, fresh: bool) -> None:
    plan = SagaPlan(
        attempt=lambda: _try(drive, p, terms),
        go_forward=lambda: _confirm(drive, p),
        # Only the drive that ran the steps knows for sure which ones it sent (they are
        # written with the commit point, not before each step); any later drive undoes both.
        undo=lambda reason: _compensate(drive, p, reason, certain=fresh),
    )
    await run_plan(drive, plan, fresh=fresh)


async def _try(drive: Drive, p: Participants, terms: RedeemTerms) -> None:
    tier = await _check(drive, p)
    await _reserve_and_hold(drive, p, terms, tier)


def _risk_request(
    saga_id: str, app: str, user_id: str, order: dict[str, Any]
) -> risk_pb2.EvaluateRequest:
    amount = order["price_points"] * order["quantity"]
    attributes = {"sku": order["sku"], "quantity": str(order["quantity"])}
    return saga_risk_request(saga_id, app, user_id, order, "redeem", amount, attributes)


def _tier_request(app: str, user_id: str, order: dict[str, Any]) -> levels_pb2.CheckTierRequest:
    return levels_pb2.CheckTierRequest(app=app, user_id=user_id, min_tier=order["min_tier"])


def check_requests(saga_id: str, app: str, user_id: str, order: dict[str, Any]) -> dict[str, Any]:
    """The checks (risk, tier) sent before the saga's row is committed, by step
    (``Gateway.early_checks``); no tier check for an item without a tier gate."""
    checks: dict[str, Any] = {"risk": _risk_request(saga_id, app, user_id, order)}
    if order["min_tier"]:
        checks["tier"] = _tier_request(app, user_id, order)
    return checks


async def _member_tier(drive: Drive, p: Participants) -> str:
    """The member's tier for an item with a ``min_tier`` (levels judges it; TIER_TOO_LOW is
    levels' refusal). An item without one has no tier gate: nothing to ask, the step is
    answered at once (``tier: DONE`` with no attempt), and the reservation carries no tier."""
    saga = drive.saga
    if not saga.payload["min_tier"]:
        drive.answered("tier", "no tier gate")
        return ""
    tier: levels_pb2.CheckTierResponse = await drive.step(
        "tier",
        lambda t: p.check_tier(_tier_request(saga.app, saga.user_id, saga.payload), timeout=t),
        log_first=False,
    )
    return tier.tier


async def _check(drive: Drive, p: Participants) -> str:
    """Risk and tier: they change nothing a compensation must undo, so they run together and
    are logged together (with the commit point). Risk's refusal comes first, then the tier's;
    a participant that did not answer leaves the saga to the recovery loop. The member's tier."""
    saga = drive.saga
    app, user, order = saga.app, saga.user_id, saga.payload
    # Built only when the step itself sends (a retry, a later drive): the first attempt's
    # request already left with the saga's start (``check_requests``).
    risk_task = asyncio.create_task(
        drive.step(
            "risk",
            lambda t: p.evaluate(_risk_request(saga.saga_id, app, user, order), timeout=t),
            log_first=False,
        )
    )
    tier_task = asyncio.create_task(_member_tier(drive, p))
    await asyncio.wait([risk_task, tier_task])
    risk: risk_pb2.EvaluateResponse = risk_task.result()
    saga.result["risk_decision"] = risk_pb2.Decision.Name(risk.decision)
    refused = risk_refusal(risk, "redemption")
    if refused is not None:
        raise StepFailed("risk", refused.reason, ", ".join(risk.rules))
    return tier_task.result()


def raise_first_failure(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """After a stage's steps all ended: a refusal is answered first (in the steps' order, as
    they would have come one after another), then a participant that did not answer."""
    failures = [task.exception() for task in tasks]
    for failure in failures:
        if isinstance(failure, StepFailed):
            raise failure
    for failure in failures:
        if failure is not None:
            raise failure


async def _reserve_and_hold(drive: Drive, p: Participants, terms: RedeemTerms, tier: str) -> None:
    """Reserve and hold run together, as one stage: the hold takes the price the catalogue
    states (the same program the mall prices by), so it waits for nothing the reserve says.
    One stage fewer per saga is a shorter saga and, at the same number of callers, larger
    batches for every participant. Neither is logged one by one before it is sent: the saga's
    row, written before any step, already says they may happen, and any drive but this one
    undoes both (``_compensate``). Their outcomes are written with the commit point."""
    saga = drive.saga
    order = saga.payload
    address = order.get("address")
    amount = order["price_points"] * order["quantity"]
    reserve_request = mall_pb2.ReserveRequest(
        app=saga.app,
        saga_id=saga.saga_id,
        user_id=saga.user_id,
        sku=order["sku"],
        quantity=order["quantity"],
        tier=tier,
        address=mall_pb2.Address(**address) if address else None,
        ttl=_duration(terms.reservation_ttl),
    )
    hold_request = points_pb2.HoldRequest(
        app=saga.app,
        saga_id=saga.saga_id,
        user_id=saga.user_id,
        amount=amount,
        ttl=_duration(terms.hold_ttl),
        ref=f"redeem:{order['sku']}",
    )
    reserve_task = asyncio.create_task(
        drive.step("reserve", lambda t: p.reserve(reserve_request, timeout=t), log_first=False)
    )
    hold_task = asyncio.create_task(
        drive.step("hold", lambda t: p.hold(hold_request, timeout=t), log_first=False)
    )
    await asyncio.wait([reserve_task, hold_task])
    raise_first_failure([reserve_task, hold_task])
    reservation: mall_pb2.Reservation = reserve_task.result()
    if reservation.price_points != amount:
        # The mall priced it otherwise: a program being applied reached the mall first.
        raise StepFailed(
            "reserve",
            SagaReason.PRICE_CHANGED,
            f"the mall prices it at {reservation.price_points} points, not {amount}",
        )
    saga.result["points_spent"] = amount


async def _confirm(drive: Drive, p: Participants) -> None:
    """After the commit point: only forward. Confirm and capture depend on nothing but the saga
    id, so they run together, logged together."""
    saga = drive.saga
    app, saga_id = saga.app, saga.saga_id
    drive.event("commit")
    pending = [name for name in ("confirm", "capture") if not saga.done(name)]
    for name in pending:
        saga.step(name).state = StepState.RUNNING
    await drive.save()

    async def confirm() -> None:
        order = await drive.step(
            "confirm",
            lambda timeout: p.confirm(
                mall_pb2.ConfirmRequest(app=app, saga_id=saga_id),
                timeout=timeout,
            ),
            log_first=False,
        )
        saga.result.update(order_id=order.order_id, coupon_code=order.coupon_code)

    async def capture() -> None:
        captured = await drive.step(
            "capture",
            lambda timeout: p.capture(
                points_pb2.CaptureRequest(app=app, saga_id=saga_id),
                timeout=timeout,
            ),
            log_first=False,
        )
        saga.result["points_spent"] = captured.amount

    runs = {"confirm": confirm, "capture": capture}
    outcomes = await asyncio.gather(*(runs[name]() for name in pending), return_exceptions=True)
    # A refusal here means the reservation or the hold ran out: undo the half that happened.
    for outcome in outcomes:
        if isinstance(outcome, StepFailed):
            raise outcome
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    await drive.finish(SagaState.COMPLETED)


async def _compensate(drive: Drive, p: Participants, reason: str, *, certain: bool) -> None:
    """Undoes what may have happened; each undo is idempotent and a release that arrives before
    its reserve is recorded by the participant (and refuses the late reserve), so undoing a
    step that never acted is safe. ``certain``: the steps in hand are all that was sent (the
    drive that sent them); otherwise the reservation and the hold are released whatever the
    log says, since reserve and hold are not logged one by one before they are sent."""
    saga = drive.saga
    app, saga_id = saga.app, saga.saga_id
    if saga.state is not SagaState.COMPENSATING:
        saga.state = SagaState.COMPENSATING
        saga.reason = reason
    undo: list[tuple[str, str, Callable[[float], Awaitable[Any]]]] = []
    if saga.done("confirm") and not saga.done("capture"):
        order_id = saga.result.get("order_id", "")
        undo.append(
            (
                "cancel_order",
                "confirm",
                lambda timeout: p.mall.CancelOrder(
                    mall_pb2.CancelOrderRequest(
                        app=app, order_id=order_id, operator="saga", reason=reason
                    ),
                    timeout=timeout,
                ),
            )
        )
    if saga.done("capture") and not saga.done("confirm"):
        spent = int(saga.result.get("points_spent", 0))
        undo.append(
            (
                "refund",
                "capture",
                lambda timeout: p.points.Refund(
                    points_pb2.RefundRequest(
                        app=app,
                        request_id=f"{saga_id}:refund",
                        saga_id=saga_id,
                        amount=spent,
                        reason=reason,
                    ),
                    timeout=timeout,
                ),
            )
        )
    if (saga.touched("hold") or not certain) and not saga.done("capture"):
        undo.append(
            (
                "release_hold",
                "hold",
                lambda timeout: p.release_hold(
                    points_pb2.ReleaseHoldRequest(app=app, saga_id=saga_id),
                    timeout=timeout,
                ),
            )
        )
    if (saga.touched("reserve") or not certain) and not saga.done("confirm"):
        undo.append(
            (
                "release_reservation",
                "reserve",
                lambda timeout: p.release(
                    mall_pb2.ReleaseRequest(app=app, saga_id=saga_id),
                    timeout=timeout,
                ),
            )
        )
    for name, undoes, call in undo:
        if not saga.done(name):
            drive.event("compensate", step=undoes, reason=reason)
            await drive.step(name, call)
    saga.result["points_spent"] = 0
    await drive.finish(SagaState.COMPENSATED, reason)
