"""The points service's business errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing import errors
from plumbing.errors import FailedPrecondition, IdempotencyConflict, NotFound

__all__ = ["IdempotencyConflict"]


class InsufficientPoints(FailedPrecondition):
    reason = "INSUFFICIENT_POINTS"


class UnknownApp(errors.UnknownApp):
    """The app has no points program yet (ConfigureRules has not been called for it)."""

    section = "points program"


class HoldNotFound(NotFound):
    reason = "HOLD_NOT_FOUND"


class HoldReleased(FailedPrecondition):
    """The saga's hold was released (or its release arrived first and barred the hold)."""

    reason = "HOLD_RELEASED"


class HoldCaptured(FailedPrecondition):
    reason = "HOLD_CAPTURED"


class HoldExpired(FailedPrecondition):
    reason = "HOLD_EXPIRED"


class HoldNotCaptured(FailedPrecondition):
    """A refund needs a captured hold."""

    reason = "HOLD_NOT_CAPTURED"


class RefundExceedsCapture(FailedPrecondition):
    reason = "REFUND_EXCEEDS_CAPTURE"


class EventNotFound(NotFound):
    reason = "EVENT_NOT_FOUND"


class CampaignNotFound(NotFound):
    reason = "CAMPAIGN_NOT_FOUND"
