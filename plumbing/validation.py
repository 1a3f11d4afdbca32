"""Input checks every API shares. Each raises ``InvalidArgument`` naming the field, so a caller
learns exactly what to fix and nothing is written. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plumbing.errors import InvalidArgument

MAX_ID_LENGTH = 128
# 10^12 points is a hundred billion yuan at 100 points per yuan: far above any real movement,
# far below int64 overflow when amounts are summed.
MAX_AMOUNT = 10**12
MAX_TEXT_LENGTH = 1024
MAX_ATTRIBUTES = 64


def require_id(field: str, value: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """A caller-chosen identifier: non-empty, at most ``max_length`` characters, printable."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def optional_text(field: str, value: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    return value


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
