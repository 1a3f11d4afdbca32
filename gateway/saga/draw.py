"""The draw saga, as the business tells it (DESIGN.md: "the lottery draw is the same pattern"):

    risk check → hold the cost → COMMIT POINT: draw → capture the cost ∥ award the prize
    → COMPLETED

The draw is the point of no return: the log says CONFIRMING before the draw is sent, so a
saga found unfinished after that replays the draw (idempotent by saga id: it answers the draw
that happened, or draws now) and goes forward. Only a refusal of the draw itself (pool paused,
limit reached) undoes the hold. A prize that cannot be delivered after the draw (the mall has
no unit left for an item prize) is owed: the saga waits for an operator (NEEDS_ATTENTION).
Every call is keyed by the saga id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.duration_pb2 import Duration
from loyalty.lottery.v1 import lottery_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

from gateway.domain.sagas import SagaState, StepState
from gateway.participants import Participants
from gateway.risk_gate import risk_refusal, saga_risk_request
from gateway.saga.engine import Drive, SagaPlan, StepFailed, run_plan
from gateway.saga.redeem import RedeemTerms

KINDS = {lottery_pb2.POINTS: "points", lottery_pb2.ITEM: "item", lottery_pb2.NOTHING: "nothing"}


async def run_draw(drive: Drive, p: Participants, terms: RedeemTerms, *, fresh: bool) -> None:
    plan = SagaPlan(
        attempt=lambda: _try(drive, p, terms),
        go_forward=lambda: _draw_and_award(drive, p),
        undo=lambda reason: _release(drive, p, reason),
        # After the draw the prize is owed and the cost is due: never undone by the saga.
        undoable=frozenset({"risk", "hold", "draw"}),
    )
    await run_plan(drive, plan, fresh=fresh)


def _risk_request(
    saga_id: str, app: str, user_id: str, order: dict[str, Any]
) -> risk_pb2.EvaluateRequest:
    return saga_risk_request(
        saga_id, app, user_id, order, "draw", order["cost_points"], {"pool": order["pool"]}
    )


def check_requests(saga_id: str, app: str, user_id: str, order: dict[str, Any]) -> dict[str, Any]:
    """The check (risk) sent before the saga's row is committed (``Gateway.early_checks``)."""
    return {"risk": _risk_request(saga_id, app, user_id, order)}


async def _try(drive: Drive, p: Participants, terms: RedeemTerms) -> None:
    saga = drive.saga
    order: dict[str, Any] = saga.payload
    app, saga_id, user = saga.app, saga.saga_id, saga.user_id
    # Built only when the step itself sends: the first attempt's left with the saga's start.
    risk = await drive.step(
        "risk",
        lambda t: p.evaluate(_risk_request(saga_id, app, user, order), timeout=t),
        log_first=False,
    )
    saga.result["risk_decision"] = risk_pb2.Decision.Name(risk.decision)
    refused = risk_refusal(risk, "draw")
    if refused is not None:
        raise StepFailed("risk", refused.reason, ", ".join(risk.rules))
    ttl = Duration()
    ttl.FromTimedelta(terms.hold_ttl)
    await drive.step(
        "hold",
        lambda timeout: p.hold(
            points_pb2.HoldRequest(
                app=app,
                saga_id=saga_id,
                user_id=user,
                amount=order["cost_points"],
                ttl=ttl,
                ref=f"draw:{order['pool']}",
            ),
            timeout=timeout,
        ),
    )


async def _draw_and_award(drive: Drive, p: Participants) -> None:
    saga = drive.saga
    app, saga_id, user = saga.app, saga.saga_id, saga.user_id
    if not saga.done("draw"):
        drive.event("commit")
        record = await drive.step(
            "draw",
            lambda timeout: p.draw(
                lottery_pb2.DrawRequest(
                    app=app, saga_id=saga_id, user_id=user, pool=saga.payload["pool"]
                ),
                timeout=timeout,
            ),
        )
        saga.result.update(
            draw_id=record.draw_id,
            prize_code=record.prize_code,
            prize_kind=KINDS.get(record.prize_kind, "nothing"),
            prize_points=record.points,
            prize_sku=record.sku,
        )
    result = saga.result
    pending = []
    if not saga.done("capture"):
        saga.step("capture").state = StepState.RUNNING
        pending.append(_capture(drive, p))
    if result.get("prize_kind") in ("points", "item") and not saga.done("award"):
        saga.step("award").state = StepState.RUNNING
        pending.append(_award(drive, p))
    await drive.save()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    for kind in (StepFailed, BaseException):
        for outcome in outcomes:
            if isinstance(outcome, kind):
                raise outcome
    await drive.finish(SagaState.COMPLETED)


async def _capture(drive: Drive, p: Participants) -> None:
    saga = drive.saga
    await drive.step(
        "capture",
        lambda timeout: p.capture(
            points_pb2.CaptureRequest(app=saga.app, saga_id=saga.saga_id),
            timeout=timeout,
        ),
        log_first=False,
    )


async def _award(drive: Drive, p: Participants) -> None:
    saga = drive.saga
    app, saga_id, user, result = saga.app, saga.saga_id, saga.user_id, saga.result
    if result["prize_kind"] == "points":
        await drive.step(
            "award",
            lambda timeout: p.points.Grant(
                points_pb2.GrantRequest(
                    app=app,
                    request_id=f"{saga_id}:award",
                    user_id=user,
                    amount=result["prize_points"],
                    reason=f"lottery:{saga.payload['pool']}:{result['prize_code']}",
                    operator="lottery",
                ),
                timeout=timeout,
            ),
            log_first=False,
        )
        result["points_awarded"] = result["prize_points"]
        return
    # An item: a zero-price order of one unit, under its own saga id in the mall.
    prize_saga = f"{saga_id}:prize"

    async def reserve_and_confirm(deadline: float) -> Any:
        await p.reserve(
            mall_pb2.ReserveRequest(
                app=app,
                saga_id=prize_saga,
                user_id=user,
                sku=result["prize_sku"],
                quantity=1,
                prize=True,
            ),
            timeout=deadline,
        )
        return await p.confirm(
            mall_pb2.ConfirmRequest(app=app, saga_id=prize_saga),
            timeout=deadline,
        )

    order = await drive.step("award", reserve_and_confirm, log_first=False)
    result.update(order_id=order.order_id, coupon_code=order.coupon_code)


async def _release(drive: Drive, p: Participants, reason: str) -> None:
    """Before the draw: give the cost back (a release before the hold is recorded by points and
    refuses the late hold, so this is safe whether or not the hold arrived)."""
    saga = drive.saga
    if saga.state is not SagaState.COMPENSATING:
        saga.state = SagaState.COMPENSATING
        saga.reason = reason
    if saga.touched("hold") and not saga.done("release_hold"):
        drive.event("compensate", step="hold", reason=reason)
        await drive.step(
            "release_hold",
            lambda timeout: p.release_hold(
                points_pb2.ReleaseHoldRequest(app=saga.app, saga_id=saga.saga_id),
                timeout=timeout,
            ),
        )
    await drive.finish(SagaState.COMPENSATED, reason)
