"""When a lot expires, from the app's expiry policy and the local day it was earned."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from services.points.domain.program import Expiry, ExpiryPolicy


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's end (Jan 31 + 1 month = Feb 28/29)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def end_of_local_day(day: date, zone: ZoneInfo) -> datetime:
    """The last instant of a local day, in UTC. A lot is still spendable at this instant and is
    due for expiry strictly after it (``is_expired``)."""
    return datetime.combine(day, time.max, tzinfo=zone).astimezone(UTC)


def lot_expires_at(expiry: Expiry, earned_at: datetime, zone: ZoneInfo) -> datetime | None:
    """``rolling`` N months: the end of local day (earned day + N months);
    ``calendar_year_end``: the end of 31 December of the local year earned; ``never``: None."""
    local_day = earned_at.astimezone(zone).date()
    if expiry.policy is ExpiryPolicy.ROLLING:
        return end_of_local_day(add_months(local_day, expiry.months), zone)
    if expiry.policy is ExpiryPolicy.CALENDAR_YEAR_END:
        return end_of_local_day(date(local_day.year, 12, 31), zone)
    return None


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at < now


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()
