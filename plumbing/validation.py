"""Input checks every API shares. Each raises ``InvalidArgument`` naming the field, so a caller
learns exactly what to fix and nothing is written. Pure: no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from plumbing.errors import InvalidArgument

MAX_ID_LENGTH = 128
# 10^12 points is a hundred billion yuan at 100 points per yuan: far above any real movement,
# far below int64 overflow when amounts are summed.
MAX_AMOUNT = 10**12
# A member tag (SetMemberTags; a campaign audience names them): 1-64 of [a-z0-9_-].
MEMBER_TAG = re.compile(r"[a-z0-9_-]{1,64}")
MAX_TEXT_LENGTH = 1024
# Items of one batch call (RecordEvents, EarnBatch, AddGrowthBatch, EvaluateBatch).
MAX_BATCH = 500
MAX_ATTRIBUTES = 64
# How far ahead of a service's "now" a caller's time may be (clocks of two machines differ).
MAX_CLOCK_SKEW = timedelta(minutes=5)
# Free text may hold tabs and line breaks; no other C0 control character means anything in it.
_TEXT_CONTROLS = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r"}


def require_id(field: str, value: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """A caller-chosen identifier: non-empty, at most ``max_length`` characters, printable."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def positions_by_app(field: str, apps: Sequence[str]) -> dict[str, list[int]]:
    """A batch call's items grouped by app: each app's positions, in the caller's order. The
    batch size is checked (``field``) and each app id (``field[i].app``) before anything is
    applied, so a batch is refused whole or taken whole."""
    if len(apps) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} per batch")
    groups: dict[str, list[int]] = {}
    for index, app in enumerate(apps):
        if app not in groups:
            require_id(f"{field}[{index}].app", app)
            groups[app] = []
        groups[app].append(index)
    return groups


def optional_id(field: str, value: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """An identifier that may be left empty (a filter, a device id): when given, the same
    rules as ``require_id``."""
    return require_id(field, value, max_length=max_length) if value else ""


def optional_text(field: str, value: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Free text (a note, a reason, an address line): tabs and line breaks allowed, no other
    control character (U+0000 above all: PostgreSQL cannot store it)."""
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if not _TEXT_CONTROLS.isdisjoint(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def optional_ip(field: str, value: str) -> str:
    """An IPv4 or IPv6 literal (as given), or empty."""
    if not value:
        return ""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        raise InvalidArgument(field, "is not an IPv4 or IPv6 address") from None


def not_in_future(field: str, moment: datetime | None, now: datetime) -> datetime | None:
    """A caller's timestamp of something that happened: at most ``MAX_CLOCK_SKEW`` ahead of
    ``now`` (the app's time)."""
    if moment is not None and moment > now + MAX_CLOCK_SKEW:
        raise InvalidArgument(field, "is in the future")
    return moment


def nul_path(message: Message) -> str | None:
    """The path of the first text field of ``message`` (nested messages, lists and maps
    included) holding U+0000, or None. Every server checks every request with it before any
    handler runs: PostgreSQL cannot store NUL in text or JSON, and no field means it."""
    if b"\x00" not in message.SerializeToString():
        # The wire form of a NUL in a string is a 0x00 byte: with none, there is none.
        return None
    # Walked field by field, not through MessageToDict: that one refuses (raises on) values a
    # handler must see to refuse them itself, such as a Timestamp out of range.
    return _nul_in_message(message, "")


def _nul_in_message(message: Message, prefix: str) -> str | None:
    for descriptor, value in message.ListFields():
        name = f"{prefix}{descriptor.name}"
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            found = nul_in_data(dict(value), name)
        elif descriptor.is_repeated:
            found = next(
                (f for i, v in enumerate(value) if (f := _nul_in(f"{name}[{i}]", v))), None
            )
        else:
            found = _nul_in(name, value)
        if found:
            return found
    return None


def _nul_in(name: str, value: Any) -> str | None:
    if isinstance(value, str):
        return name if "\x00" in value else None
    if isinstance(value, Message):
        return _nul_in_message(value, f"{name}.")
    return None


def nul_in_data(data: Any, path: str = "") -> str | None:
    """The path of the first string holding U+0000 in parsed JSON or YAML data, or None."""
    if isinstance(data, str):
        return path or "." if "\x00" in data else None
    if isinstance(data, Mapping):
        for key, value in data.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{path}.key" if path else "key"  # never the NUL itself in a path
            where = f"{path}.{key}" if path else str(key)
            found = nul_in_data(value, where)
            if found:
                return found
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            found = nul_in_data(value, f"{path}[{index}]")
            if found:
                return found
    return None


def require_positive(field: str, value: int, *, maximum: int = MAX_AMOUNT) -> int:
    if value <= 0:
        raise InvalidArgument(field, "must be > 0")
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value


def require_nonzero(field: str, value: int, *, maximum: int = MAX_AMOUNT) -> int:
    if value == 0:
        raise InvalidArgument(field, "must not be 0")
    if abs(value) > maximum:
        raise InvalidArgument(field, f"must be between -{maximum} and {maximum}")
    return value


def require_non_negative(field: str, value: int, *, maximum: int = MAX_AMOUNT) -> int:
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value


def check_attributes(field: str, attributes: Mapping[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(field, f"at most {MAX_ATTRIBUTES} entries")
    for key, value in attributes.items():
        require_id(f"{field}.key", key, max_length=MAX_ID_LENGTH)
        optional_text(f"{field}.{key}", value)
    return dict(attributes)


# The fields of a postal address (loyalty.mall.v1.Address and loyalty.gateway.v1.Address).
ADDRESS_FIELDS = ("name", "phone", "line1", "line2", "city", "region", "postal_code", "country")


def check_address(request: Any) -> dict[str, str] | None:
    """The request's ``address`` as a dict of its non-empty fields, None when unset."""
    if not request.HasField("address"):
        return None
    address = {
        name: optional_text(f"address.{name}", getattr(request.address, name), max_length=256)
        for name in ADDRESS_FIELDS
    }
    return {name: value for name, value in address.items() if value}
