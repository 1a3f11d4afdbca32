"""Badges: a streak of consecutive local days with an action, or a count of an action.

Both are order-independent: a streak is the run of consecutive days around the day an event
falls on (so an event that arrives late can still close a gap), and a count is a count. A badge
is earned once and kept.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, timedelta

from services.levels.domain.program import BadgeKind, BadgeRule


def run_length(active_days: Collection[date], day: date) -> int:
    """The number of consecutive days in ``active_days`` around ``day`` (0 if it is not one)."""
    if day not in active_days:
        return 0
    length = 1
    before = day - timedelta(days=1)
    while before in active_days:
        length += 1
        before -= timedelta(days=1)
    after = day + timedelta(days=1)
    while after in active_days:
        length += 1
        after += timedelta(days=1)
    return length


def longest_streak_needed(badges: Iterable[BadgeRule], action: str) -> int:
    """How far around a day the streak badges of ``action`` look (0 when none does)."""
    return max(
        (b.target for b in badges if b.kind is BadgeKind.STREAK and b.action == action), default=0
    )


def badges_reached(
    badges: Iterable[BadgeRule], action: str, streak: int, count: int, owned: Collection[str]
) -> list[BadgeRule]:
    """The badges of ``action`` that a streak of ``streak`` days and ``count`` occurrences
    reach and the member does not own yet, in program order."""
    reached = []
    for badge in badges:
        if badge.action != action or badge.code in owned:
            continue
        value = streak if badge.kind is BadgeKind.STREAK else count
        if value >= badge.target:
            reached.append(badge)
    return reached
