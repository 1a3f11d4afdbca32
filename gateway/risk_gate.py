"""The one risk gate of the gateway: what risk's decision means for a redemption, a draw, a
checkout hold or a gift. ALLOW goes on; DENY and REVIEW refuse, with the reason callers branch
on (RISK_DENIED, RISK_REVIEW) and the rules that fired."""

from __future__ import annotations

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
