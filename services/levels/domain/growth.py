"""What one event adds to a member's growth: the best coefficient, then the daily cap.

Rounding: growth is a whole number and is rounded down after the coefficient, so a coefficient
never pays a fraction of a point: 10 x 1.5 = 15, 5 x 1.5 = 7.5 -> 7, 3 x 1.2 = 3.6 -> 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

ONE = Decimal(1)
_TRUE = frozenset({"true", "1", "yes", "y", "on"})

NOTE_DAILY_CAP = "daily_cap"
NOTE_COEFFICIENT = "coefficient"


def coefficient_for(attributes: Mapping[str, str], coefficients: Mapping[str, Decimal]) -> Decimal:
    """The highest coefficient whose condition the member's attributes meet; 1 when none does.

    A key ``kol`` matches when attribute ``kol`` is true (true, 1, yes, on); a key
    ``region=cn`` matches when attribute ``region`` equals ``cn``."""
    best = ONE
    matched = False
    for key, value in coefficients.items():
        name, equals, wanted = key.partition("=")
        given = attributes.get(name)
        if given is None:
            continue
        hit = given == wanted if equals else given.strip().lower() in _TRUE
        if hit and (not matched or value > best):
            best, matched = value, True
    return best


@dataclass(frozen=True)
class GrowthDecision:
    # Growth the event adds, after the coefficient and the cap.
    awarded: int
    # What counts toward the day's cap (0 for exempt events).
    counted: int
    notes: tuple[str, ...] = ()


def decide_growth(
    amount: int,
    coefficient: Decimal,
    counted_today: int,
    daily_cap: int | None,
    exempt_from_cap: bool,
) -> GrowthDecision:
    """``amount`` scaled by ``coefficient`` (rounded down), then cut to what is left of the
    member's daily cap unless the event is exempt (purchases)."""
    scaled = int((Decimal(amount) * coefficient).to_integral_value(rounding=ROUND_FLOOR))
    notes = [NOTE_COEFFICIENT] if coefficient != ONE and amount else []
    if exempt_from_cap or daily_cap is None:
        return GrowthDecision(scaled, 0, tuple(notes))
    left = max(0, daily_cap - counted_today)
    awarded = min(scaled, left)
    if awarded < scaled:
        notes.append(NOTE_DAILY_CAP)
    return GrowthDecision(awarded, awarded, tuple(notes))
