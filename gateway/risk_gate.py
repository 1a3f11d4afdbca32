"""The one risk gate of the gateway: what risk's decision means for a redemption, a draw, a
checkout hold or a gift. ALLOW goes on; DENY and REVIEW refuse, with the reason callers branch
on (RISK_DENIED, RISK_REVIEW) and the rules that fired."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.risk.v1 import risk_pb2

from gateway.domain.sagas import SagaReason
from plumbing.errors import FailedPrecondition


class RiskDenied(FailedPrecondition):
    reason = SagaReason.RISK_DENIED.value


class RiskReview(FailedPrecondition):
    reason = SagaReason.RISK_REVIEW.value


def risk_refusal(answer: risk_pb2.EvaluateResponse, what: str) -> FailedPrecondition | None:
    """The refusal risk's answer makes of ``what`` ("checkout", "gift", ...), or None."""
    rules = ", ".join(answer.rules)
    if answer.decision == risk_pb2.DENY:
        return RiskDenied(f"{what} refused by risk rules: {rules}")
    if answer.decision == risk_pb2.REVIEW:
        return RiskReview(f"{what} held for review: {rules}")
    return None


def saga_risk_request(
    saga_id: str,
    app: str,
    user_id: str,
    order: dict[str, Any],
    action: str,
    amount: int,
    attributes: dict[str, str],
) -> risk_pb2.EvaluateRequest:
    """A saga's risk step (redeem, draw), keyed by the saga id, from the order it logged."""
    account = None
    if order.get("account_created_at"):
        account = Timestamp()
        account.FromJsonString(order["account_created_at"])
    return risk_pb2.EvaluateRequest(
        app=app,
        request_id=f"{saga_id}:risk",
        action=action,
        user_id=user_id,
        device_id=order.get("device_id", ""),
        ip=order.get("ip", ""),
        amount=amount,
        attributes=attributes,
        account_created_at=account,
    )
