"""Points at the app's own checkout (积分抵现): the program's `checkout` section and its rules.
Pure: no I/O.

    checkout:
      enabled: true
      max_percent_of_order: 50   # points pay at most half of an order
      min_points: 100            # the fewest points an order may use
      step: 100                  # points are used in multiples of this
      hold_minutes: 15           # an unconfirmed hold returns its points after this

A point is worth the app's `money_rate` (points per CNY): value in fen = points × 100 / rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from plumbing.errors import FailedPrecondition, InvalidArgument
from plumbing.sections import Shape, boolean, integer, raise_if_any, validated

MAX_HOLD_MINUTES = 7 * 24 * 60


class OrderState(StrEnum):
    """An order's points as the gateway keeps them (``order_holds.state``, and ListOrders's
    ``state`` filter): lower case, as stored and documented since checkout shipped. EXPIRED is
    also what a HELD row past its expiry reads as, before the reaper releases it."""

    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class CheckoutDisabled(FailedPrecondition):
    reason = "CHECKOUT_DISABLED"


class AboveMaxPercent(InvalidArgument):
    reason = "ABOVE_MAX_PERCENT"


class BelowMinPoints(InvalidArgument):
    reason = "BELOW_MIN_POINTS"


class NotAStepMultiple(InvalidArgument):
    reason = "NOT_A_STEP_MULTIPLE"


@dataclass(frozen=True)
class CheckoutRules:
    enabled: bool
    max_percent_of_order: int
    min_points: int
    step: int
    hold_minutes: int
    money_rate: int

    def value_fen(self, points: int) -> int:
        return points * 100 // self.money_rate

    def max_points(self, order_amount_fen: int, available: int) -> int:
        """The most points this order may use: the percent cap in points (at the money rate),
        no more than the user has, down to a multiple of the step; 0 under the minimum."""
        cap = order_amount_fen * self.max_percent_of_order * self.money_rate // (100 * 100)
        most = min(cap, max(available, 0))
        most -= most % self.step
        return most if most >= self.min_points else 0

    def check_hold(self, points: int, order_amount_fen: int) -> None:
        """Refuses what breaks a rule, naming `points` (the balance is the ledger's to check)."""
        if points % self.step:
            raise NotAStepMultiple("points", f"must be a multiple of {self.step}")
        if points < self.min_points:
            raise BelowMinPoints("points", f"must be at least {self.min_points}")
        cap = order_amount_fen * self.max_percent_of_order * self.money_rate // (100 * 100)
        if points > cap:
            raise AboveMaxPercent(
                "points",
                f"may pay at most {self.max_percent_of_order}% of the order: {cap} points",
            )


class CheckoutShape(Shape):
    enabled: Annotated[bool, boolean()] = False
    max_percent_of_order: Annotated[int, integer(minimum=1, maximum=100)] = 100
    min_points: Annotated[int, integer(minimum=0)] = 0
    step: Annotated[int, integer(minimum=1)] = 1
    hold_minutes: Annotated[
        int,
        integer(
            minimum=1,
            maximum=MAX_HOLD_MINUTES,
            too_large=f"must be at most {MAX_HOLD_MINUTES} (a week)",
        ),
    ] = 15


def parse_checkout(program: Mapping[str, Any], money_rate: int) -> CheckoutRules | None:
    """The section's rules, None when the program has none; every error with its path."""
    raw = program.get("checkout")
    if raw is None:
        return None
    problems: list[str] = []
    shape = validated(
        CheckoutShape, raw, "checkout", problems, message_for_object="must be a mapping"
    )
    raise_if_any(problems)
    assert shape is not None
    return CheckoutRules(money_rate=money_rate, **shape.model_dump())
