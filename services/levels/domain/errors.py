"""The levels service's business errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing import errors
from plumbing.errors import FailedPrecondition, InvalidArgument, NotFound


class TierTooLow(FailedPrecondition):
    """CheckTier: the member's tier is below the one asked for (metadata carries both)."""

    reason = "TIER_TOO_LOW"

    def __init__(self, user_id: str, tier: str, min_tier: str) -> None:
        super().__init__(
            f"user {user_id!r} is {tier or 'below every tier'}; {min_tier} is required",
            metadata={"tier": tier, "min_tier": min_tier},
        )


class UnknownApp(errors.UnknownApp):
    """The app has no levels program yet (ConfigureLevels has not been called for it)."""

    section = "levels program"


class UnknownTier(InvalidArgument):
    def __init__(self, field: str, code: str) -> None:
        super().__init__(field, f"unknown tier {code!r}")


class EventNotFound(NotFound):
    reason = "EVENT_NOT_FOUND"
