"""The risk service's errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing.errors import FailedPrecondition, InvalidArgument, NotFound


class UnknownApp(InvalidArgument):
    """The app has no risk section yet (ConfigureRisk has not been called for it)."""

    def __init__(self, app: str) -> None:
        super().__init__("app", f"unknown app {app!r}: no risk section is configured")


class ReviewNotFound(NotFound):
    reason = "REVIEW_NOT_FOUND"


class ReviewAlreadyDecided(FailedPrecondition):
    reason = "REVIEW_ALREADY_DECIDED"
