"""Calendar periods in the app's local days: months, quarters and years.

Requalify and decay both count in whole local days and turn over at local midnight on the
first day of a period (1 January, 1 April, ...), so every member of an app changes tier at the
same instant and a set-wise job can apply it.
"""

from __future__ import annotations

import enum
import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class Period(enum.Enum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"

    @property
    def months(self) -> int:
        return _MONTHS[self]


_MONTHS = {Period.MONTHLY: 1, Period.QUARTERLY: 3, Period.YEARLY: 12}


# The calendar helpers are pure and called for every event a member's tier is judged on (a
# batch judges hundreds): remembered per distinct day, of which a batch has a handful.
@functools.lru_cache(maxsize=4096)
def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (or earlier), clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


@functools.lru_cache(maxsize=4096)
def period_start(day: date, period: Period) -> date:
    """The first day of the period that contains ``day``."""
    month = (day.month - 1) // period.months * period.months + 1
    return date(day.year, month, 1)


def next_period_start(day: date, period: Period) -> date:
    return add_months(period_start(day, period), period.months)


@functools.lru_cache(maxsize=4096)
def window_start(day: date, period: Period) -> date:
    """The first day of the trailing period that ends with ``day``: for yearly, the growth of
    2026-03-06 .. 2027-03-05 qualifies on 2027-03-05."""
    return add_months(day, -period.months) + timedelta(days=1)


def week_start(day: date) -> date:
    """Monday of the ISO week that contains ``day`` (the weekly leaderboard)."""
    return day - timedelta(days=day.weekday())


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant local ``day`` begins."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
