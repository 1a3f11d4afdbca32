"""Domain errors with a machine-readable reason, free of gRPC so domain modules stay pure.

A domain module raises e.g. ``InsufficientPoints`` (a ``FailedPrecondition`` whose reason is
``INSUFFICIENT_POINTS``); the gRPC layer (``plumbing.grpc_errors``) turns the kind into a status
code and the reason into a ``google.rpc.ErrorInfo``. The kind also decides what a saga does:
``Unavailable`` is retried, everything else is a business answer that compensates at once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import ClassVar

ERROR_DOMAIN = "loyalty"


class ErrorKind(enum.Enum):
    """The gRPC status code a domain error maps to (names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    ABORTED = "ABORTED"


class LoyaltyError(Exception):
    """Base of every expected error. Subclasses set ``kind`` and ``reason``."""

    kind: ClassVar[ErrorKind] = ErrorKind.FAILED_PRECONDITION
    reason: ClassVar[str] = "FAILED_PRECONDITION"

    def __init__(self, message: str = "", *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message or self.reason)
        self.message = message or self.reason
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def retryable(self) -> bool:
        return self.kind is ErrorKind.UNAVAILABLE


class InvalidArgument(LoyaltyError):
    """Bad input. Always names the field, e.g. ``InvalidArgument("amount", "must be > 0")``."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{field}: {message}", metadata={"field": field})
        self.field = field
        self.description = message
        # Further (field, description) pairs, when one request has several problems.
        self.violations = [(field, message), *more]


class UnknownApp(InvalidArgument):
    """The app has nothing configured in this service yet. Each service names what is missing
    (``section``: "points program", "mall section", ...)."""

    section = "program"

    def __init__(self, app: str) -> None:
        super().__init__("app", f"unknown app {app!r}: no {self.section} is configured")


class NotFound(LoyaltyError):
    kind = ErrorKind.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(LoyaltyError):
    """Raised for an idempotency key replayed with a different payload."""

    kind = ErrorKind.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class IdempotencyConflict(AlreadyExists):
    """The same idempotency key arrived earlier with a different payload."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class FailedPrecondition(LoyaltyError):
    kind = ErrorKind.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(LoyaltyError):
    kind = ErrorKind.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class PermissionDenied(LoyaltyError):
    kind = ErrorKind.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(LoyaltyError):
    kind = ErrorKind.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class Unavailable(LoyaltyError):
    """A dependency is down; the caller may retry with the same idempotency key."""

    kind = ErrorKind.UNAVAILABLE
    reason = "UNAVAILABLE"
