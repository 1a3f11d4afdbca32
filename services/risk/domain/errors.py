"""The risk service's errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing import errors
from plumbing.errors import FailedPrecondition, NotFound


class UnknownApp(errors.UnknownApp):
    """The app has no risk section yet (ConfigureRisk has not been called for it)."""

    section = "risk section"


class ReviewNotFound(NotFound):
    reason = "REVIEW_NOT_FOUND"


class ReviewAlreadyDecided(FailedPrecondition):
    reason = "REVIEW_ALREADY_DECIDED"
