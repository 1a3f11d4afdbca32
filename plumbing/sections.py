"""Program sections as services receive them: JSON text in, every error with its path out.

Each service validates the part of the program it owns (``earning[2].points: must be an
integer``) and reports every problem at once, so an operator fixes a file in one go. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from plumbing.errors import InvalidArgument
from plumbing.validation import MAX_AMOUNT

MAX_SECTION_BYTES = 1 << 20


class ProgramInvalid(Exception):
    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


class ErrorCollector:
    """Collects ``path: message`` errors while a section is parsed."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ProgramInvalid(self.errors)

    def integer(
        self, path: str, value: Any, *, minimum: int | None = None, allow_zero: bool = True
    ) -> int | None:
        # bool is an int in Python; `points: true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, "must be an integer")
            return None
        if minimum is not None and value < minimum:
            self.add(path, f"must be >= {minimum}")
            return None
        if not allow_zero and value == 0:
            self.add(path, "must not be 0")
            return None
        if abs(value) > MAX_AMOUNT:
            self.add(path, f"must be at most {MAX_AMOUNT} in absolute value")
            return None
        return value

    def boolean(self, path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.add(path, "must be true or false")
            return False
        return value

    def name(self, path: str, value: Any, *, max_length: int = 128) -> str:
        """A required code or name: a non-empty string of at most ``max_length`` characters."""
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            self.add(path, f"is required (text of at most {max_length} characters)")
            return ""
        return value

    def timezone(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            self.add(path, "must be an IANA zone name such as Asia/Shanghai")
            return "UTC"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.add(path, f"unknown time zone {value!r}")
            return "UTC"
        return value

    def unknown_keys(self, path: str, given: Mapping[str, Any], known: set[str]) -> None:
        for key in sorted(set(given) - known, key=str):
            self.add(f"{path}.{key}" if path else str(key), "unknown key")


def load_section(section_json: str) -> dict[str, Any]:
    """The JSON object a Configure* call carries; INVALID_ARGUMENT on ``section_json`` if not."""
    if len(section_json) > MAX_SECTION_BYTES:
        raise InvalidArgument("section_json", "must be at most 1 MiB")
    try:
        section = json.loads(section_json or "{}")
    except json.JSONDecodeError as error:
        raise InvalidArgument("section_json", f"is not valid JSON: {error}") from None
    if not isinstance(section, dict):
        raise InvalidArgument("section_json", "must be a JSON object")
    return section


def invalid_section(invalid: ProgramInvalid) -> InvalidArgument:
    """Every error of a section as one INVALID_ARGUMENT with a violation per error."""
    first, *rest = invalid.errors
    return InvalidArgument("section_json", first, more=[("section_json", e) for e in rest])
