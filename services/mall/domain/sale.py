"""When an item is on sale, which flash session it is in, what a member may still buy.

Weekly sessions are in the app's timezone and open and close on the minute: a Wednesday 12:00
session of 30 minutes is open from 12:00:00.000 to 12:29:59.999 local time. Each session is
its own stock bucket (the item's ``stock`` is per session) and its own per-session limit.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.mall.domain.program import Catalog, Item, Limits


class SaleStatus(enum.Enum):
    UPCOMING = "upcoming"
    ON_SALE = "on_sale"
    ENDED = "ended"
    SOLD_OUT = "sold_out"
    OFF_SHELF = "off_shelf"


@dataclass(frozen=True)
class Session:
    start: datetime
    end: datetime

    @property
    def bucket(self) -> str:
        """The session's stock bucket: its start in UTC."""
        return self.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class SaleState:
    status: SaleStatus
    # The stock bucket a reservation now would take from ('' for items without sessions).
    bucket: str = ""
    # The session now open, or the next one.
    next_session_start: datetime | None = None

    @property
    def on_sale(self) -> bool:
        return self.status is SaleStatus.ON_SALE


def _sessions_around(item: Item, now: datetime, zone: ZoneInfo) -> Iterator[Session]:
    """Every session of the item starting from a week before ``now`` to two weeks after."""
    today = now.astimezone(zone).date()
    for offset in range(-8, 16):
        day: date = today + timedelta(days=offset)
        for weekly in item.sessions:
            if day.weekday() == weekly.weekday:
                start = datetime.combine(day, weekly.start, tzinfo=zone).astimezone(UTC)
                yield Session(start, start + timedelta(minutes=weekly.minutes))


def current_session(item: Item, now: datetime, zone: ZoneInfo) -> Session | None:
    for session in _sessions_around(item, now, zone):
        if session.start <= now < session.end:
            return session
    return None


def next_session(item: Item, now: datetime, zone: ZoneInfo) -> Session | None:
    upcoming = [s for s in _sessions_around(item, now, zone) if s.start > now]
    return min(upcoming, key=lambda s: s.start) if upcoming else None


def sale_state(item: Item, now: datetime, zone: ZoneInfo) -> SaleState:
    """On sale, upcoming or ended, by the sale window and the flash sessions (stock aside)."""
    if item.sale_end is not None and now >= item.sale_end:
        return SaleState(SaleStatus.ENDED)
    if not item.sessions:
        if item.sale_start is not None and now < item.sale_start:
            return SaleState(SaleStatus.UPCOMING, next_session_start=item.sale_start)
        return SaleState(SaleStatus.ON_SALE)
    session = current_session(item, now, zone)
    window_open = item.sale_start is None or now >= item.sale_start
    if session is not None and window_open:
        return SaleState(SaleStatus.ON_SALE, session.bucket, session.start)
    following = next_session(item, max(now, item.sale_start or now), zone)
    if following is None or (item.sale_end is not None and following.start >= item.sale_end):
        return SaleState(SaleStatus.ENDED)
    return SaleState(SaleStatus.UPCOMING, following.bucket, following.start)


@dataclass(frozen=True)
class Usage:
    """Units a member holds of an item (live reservations and orders not cancelled)."""

    today: int = 0
    month: int = 0
    session: int = 0
    lifetime: int = 0


def limit_left(limits: Limits, usage: Usage) -> int | None:
    """Units the member may still buy under the tightest limit; None when there is none."""
    lefts = [
        limit - used
        for limit, used in (
            (limits.daily, usage.today),
            (limits.monthly, usage.month),
            (limits.per_session, usage.session),
            (limits.lifetime, usage.lifetime),
        )
        if limit is not None
    ]
    return max(0, min(lefts)) if lefts else None


def tier_allows(catalog: Catalog, item: Item, tier: str) -> bool:
    """Whether a member of ``tier`` may buy ``item``. Without a tier ladder in the program the
    mall cannot order tiers and relies on the saga's CheckTier (levels owns the ladder)."""
    if not item.min_tier or not catalog.tiers:
        return True
    return catalog.tier_rank(tier) >= catalog.tier_rank(item.min_tier)


# Crockford-style alphabet: no I, L, O, U, so a code read aloud or retyped stays right.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def generate_code() -> str:
    """A coupon code from the CSPRNG: 60 bits as XXXX-XXXX-XXXX (collisions are refused by
    the database's unique index and drawn again)."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
