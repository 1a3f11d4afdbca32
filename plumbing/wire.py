"""Protobuf helpers every API shares: timestamps in and out, opaque page tokens, page sizes.
Each input check raises ``InvalidArgument`` naming the field."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from plumbing.errors import InvalidArgument

T = TypeVar("T")

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


def to_timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_timestamp(field: str, message: Any, name: str) -> datetime | None:
    """The timestamp field ``name`` of ``message`` as an aware UTC datetime, None when unset."""
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def parse_date(field: str, value: str) -> date:
    """A required calendar date, YYYY-MM-DD."""
    if not value:
        raise InvalidArgument(field, "is required (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(field, "must be a date YYYY-MM-DD") from None


# A report (liability, stats) covers at most this many local days.
MAX_REPORT_DAYS = 366


def parse_date_range(from_date: str, to_date: str) -> tuple[date, date]:
    """A report's days, both ends included: ``from_date`` and ``to_date`` (YYYY-MM-DD), the
    second not before the first, at most ``MAX_REPORT_DAYS`` days."""
    first = parse_date("from_date", from_date)
    last = parse_date("to_date", to_date)
    if last < first:
        raise InvalidArgument("to_date", "must not be before from_date")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise InvalidArgument("to_date", f"at most {MAX_REPORT_DAYS} days per report")
    return first, last


def page_size(value: int, field: str = "page_size") -> int:
    """0 means the default; at most ``MAX_PAGE_SIZE``."""
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(before_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before_id}).encode()).decode()


def keyset_page(rows: Sequence[T], size: int, key: Callable[[T], int]) -> tuple[list[T], str]:
    """A keyset page from ``size + 1`` rows read newest first: the first ``size`` of them, and
    the token of the next page (continuing before the last row's ``key``), or "" at the end."""
    page = list(rows[:size])
    more = len(rows) > size and bool(page)
    return page, encode_page_token(key(page[-1])) if more else ""


def decode_page_token(token: str, field: str = "page_token") -> int | None:
    """The id a keyset page continues before; None for the first page."""
    if not token:
        return None
    try:
        before = json.loads(base64.urlsafe_b64decode(token.encode()))["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a token this service issued") from None
    if not isinstance(before, int) or isinstance(before, bool) or before <= 0:
        raise InvalidArgument(field, "is not a token this service issued")
    return before


def encode_cursor(at: datetime, key: str) -> str:
    """A keyset page token for lists ordered by (time, key), newest first."""
    raw = json.dumps({"at": at.isoformat(), "key": key})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(token: str, field: str = "page_token") -> tuple[datetime, str] | None:
    """The (time, key) a page continues before; None for the first page."""
    if not token:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(raw["at"]), str(raw["key"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a token this service issued") from None
