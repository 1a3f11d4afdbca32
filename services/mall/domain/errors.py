"""The mall's business errors, each with the reason code callers branch on."""

from __future__ import annotations

from plumbing import errors
from plumbing.errors import FailedPrecondition, InvalidArgument, NotFound


class UnknownApp(errors.UnknownApp):
    """The app has no catalog yet (UpsertItems has not been called for it)."""

    section = "mall section"


class UnknownSku(NotFound):
    reason = "UNKNOWN_SKU"


class OutOfStock(FailedPrecondition):
    reason = "OUT_OF_STOCK"


class NotOnSale(FailedPrecondition):
    reason = "NOT_ON_SALE"


class TierTooLow(FailedPrecondition):
    reason = "TIER_TOO_LOW"


class LimitExceeded(FailedPrecondition):
    reason = "LIMIT_EXCEEDED"


class AddressRequired(InvalidArgument):
    """A physical item needs a delivery address: name, phone and line1 at least."""

    reason = "ADDRESS_REQUIRED"

    def __init__(self, missing: str) -> None:
        super().__init__(missing, "is required: this item is delivered to an address")


class ReservationNotFound(NotFound):
    reason = "RESERVATION_NOT_FOUND"


class ReservationReleased(FailedPrecondition):
    """The saga's reservation was released (or its release came first and bars the reserve)."""

    reason = "RESERVATION_RELEASED"


class ReservationExpired(FailedPrecondition):
    reason = "RESERVATION_EXPIRED"


class ReservationConfirmed(FailedPrecondition):
    """A confirmed reservation is an order: cancel the order instead."""

    reason = "RESERVATION_CONFIRMED"


class OrderNotFound(NotFound):
    reason = "ORDER_NOT_FOUND"


class OrderTransitionRefused(FailedPrecondition):
    """The order is not in a state this transition starts from."""

    reason = "INVALID_ORDER_TRANSITION"
