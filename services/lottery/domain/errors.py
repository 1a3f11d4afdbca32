"""The lottery's business errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing import errors
from plumbing.errors import FailedPrecondition, NotFound


class UnknownApp(errors.UnknownApp):
    """The app has no lottery section yet (UpsertPools has not been called for it)."""

    section = "lottery section"


class UnknownPool(NotFound):
    reason = "UNKNOWN_POOL"


class UnknownPrize(NotFound):
    reason = "UNKNOWN_PRIZE"


class DrawNotFound(NotFound):
    reason = "DRAW_NOT_FOUND"


class PoolPaused(FailedPrecondition):
    reason = "POOL_PAUSED"


class LimitExceeded(FailedPrecondition):
    reason = "LIMIT_EXCEEDED"
