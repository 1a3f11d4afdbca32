"""Program sections as services receive them: JSON text in, every error with its path out.

Each service describes the part of the program it owns as pydantic models (``Shape``: unknown
keys refused, nothing coerced, immutable) whose fields carry the program's own messages
(``integer(minimum=1)`` says ``must be >= 1``), and reads their meaning (cross-field and
cross-item rules) in plain functions over the validated models. ``validated`` turns pydantic's
errors into the program's paths (``earning[2].points: must be an integer``) and an operator
sees every problem at once, so a file is fixed in one go. Pure: no I/O.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from plumbing.errors import InvalidArgument
from plumbing.validation import MAX_AMOUNT

MAX_SECTION_BYTES = 1 << 20

S = TypeVar("S", bound="Shape")
E = TypeVar("E", bound=enum.Enum)


class ProgramInvalid(Exception):
    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


class Shape(BaseModel):
    """A part of a section as the operator writes it. ``strict``: `points: "5"` is not 5 and
    `once: 1` is not true; the fields' validators below convert what the program means
    (a weekday name, a local time, an enum value) before the strict check."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# A required field: its validator runs on the missing value too and says what is required.
REQUIRED: Any = Field(default=None, validate_default=True)


def problem(message: str, at: str = "") -> PydanticCustomError:
    """An error with the program's own words; ``at`` continues the field's path (a rule about
    a field's part, such as one entry of a mapping)."""
    return PydanticCustomError("program", "{message}", {"message": message, "at": at})


def _check(check: Callable[[Any], Any]) -> Any:
    return BeforeValidator(check)


def integer(
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_zero: bool = True,
    required: str | None = None,
    too_large: str | None = None,
) -> Any:
    """An integer field; ``required`` is the message when it is missing (optional otherwise)."""

    def check(value: Any) -> int | None:
        if value is None:
            if required is not None:
                raise problem(required)
            return None
        # bool is an int in Python; `points: true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise problem("must be an integer")
        if minimum is not None and value < minimum:
            raise problem(f"must be >= {minimum}")
        if not allow_zero and value == 0:
            raise problem("must not be 0")
        if maximum is not None and value > maximum:
            raise problem(too_large or f"must be at most {maximum}")
        if abs(value) > MAX_AMOUNT:
            raise problem(f"must be at most {MAX_AMOUNT} in absolute value")
        return value

    return _check(check)


def boolean() -> Any:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise problem("must be true or false")
        return value

    return _check(check)


def named(max_length: int = 128, message: str | None = None) -> Any:
    """A required code or name: a non-empty string of at most ``max_length`` characters."""
    said = message or f"is required (text of at most {max_length} characters)"

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise problem(said)
        return value

    return _check(check)


def free_text(max_length: int, message: str | None = None) -> Any:
    """Optional free text (a display name) of at most ``max_length`` characters."""
    said = message or f"must be text of at most {max_length} characters"

    def check(value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or len(value) > max_length):
            raise problem(said)
        return value

    return _check(check)


def choice(kind: type[E], message: str, *, required: bool = True) -> Any:
    """One of an enum's values, written as its value (``policy: rolling``)."""

    def check(value: Any) -> E | None:
        if value is None and not required:
            return None
        try:
            return kind(value)
        except ValueError:
            raise problem(message) from None

    return _check(check)


def mapping(
    message: str,
    *,
    max_items: int | None = None,
    min_items: int = 0,
    required: bool | str = False,
) -> Any:
    """An object field (a nested shape or a mapping) with this message when it is not one.
    ``required``: a missing one is an error too (with its own message, when one is given)."""

    def check(value: Any) -> Any:
        if value is None:
            if isinstance(required, str):
                raise problem(required)
            if not required:
                return value
        if not isinstance(value, Mapping) or not min_items <= len(value) <= (
            max_items or len(value)
        ):
            raise problem(message)
        return value

    return _check(check)


def listing(message: str, *, max_items: int, min_items: int = 0, required: bool = False) -> Any:
    """A list field with this message when it is not a list of an allowed length."""

    def check(value: Any) -> Any:
        if value is None and not required:
            return value
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise problem(message)
        return value

    return _check(check)


def local_time(message: str) -> Any:
    def check(value: Any) -> time:
        try:
            return time.fromisoformat(str(value))
        except ValueError:
            raise problem(message) from None

    return _check(check)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def weekday_number(value: Any) -> int:
    """``wednesday`` -> 2 (Monday is 0, as ``date.weekday()``)."""
    day = str(value if value is not None else "").lower()
    if day not in WEEKDAYS:
        raise problem("must be a weekday such as wednesday")
    return WEEKDAYS.index(day)


Weekday = Annotated[int, BeforeValidator(weekday_number)]

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: Any) -> timedelta | None:
    """``30s``, ``15m``, ``24h``, ``7d`` as a timedelta; None when it is not one."""
    match = _DURATION.match(str(text)) if isinstance(text, str | int) else None
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def duration(message: str, *, maximum: timedelta, required: bool = False) -> Any:
    """A positive duration written as ``7d`` (s, m, h or d), at most ``maximum``."""

    def check(value: Any) -> timedelta | None:
        if value is None and not required:
            return None
        length = parse_duration(value)
        if length is None or length <= timedelta(0) or length > maximum:
            raise problem(message)
        return length

    return _check(check)


def moment(message: str) -> Any:
    """A date and time; one written without an offset is in the app's zone (``zone`` in the
    validation context)."""

    def check(value: Any, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            raise problem(message) from None
        zone = (info.context or {}).get("zone")
        return at.replace(tzinfo=zone) if at.tzinfo is None and zone is not None else at

    return BeforeValidator(check)


def timezone_problem(value: Any) -> str | None:
    """What is wrong with a time zone name, or None."""
    if not isinstance(value, str):
        return "must be an IANA zone name such as Asia/Shanghai"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}"
    return None


def timezone() -> Any:
    def check(value: Any) -> str:
        wrong = timezone_problem(value)
        if wrong is not None:
            raise problem(wrong)
        return str(value)

    return _check(check)


Timezone = Annotated[str, timezone()]


def tag(name: str) -> Tag:
    """Names one shape of a field that may take several (see ``chosen_by``)."""
    return Tag(f"~{name}")


def chosen_by(pick: Callable[[Any], str]) -> Discriminator:
    """Which of a field's tagged shapes validates it, ``pick`` naming the tag from the raw
    value (``weekly: {...}`` or ``weekly: [...]``); errors carry the chosen shape's paths only,
    no path part for the choice itself."""
    return Discriminator(lambda value: f"~{pick(value)}")


# What pydantic's own checks say, in the program's words.
_PLAIN = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be text",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
}


def _path(prefix: str, loc: Sequence[int | str], at: str) -> str:
    parts = [prefix] if prefix else []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not part.startswith("~") and part != "[key]":
            parts.append(f".{part}" if parts else part)
    if at:
        parts.append(f".{at}" if parts else at)
    return "".join(parts) or "(root)"


def problems_of(error: ValidationError, prefix: str = "") -> list[str]:
    """Every error as ``path: message``, the path as the operator wrote it."""
    found = []
    for e in error.errors(include_url=False):
        context = e.get("ctx") or {}
        if e["type"] == "program":
            message, at = str(context["message"]), str(context.get("at") or "")
        else:
            message, at = _PLAIN.get(e["type"], e["msg"]), ""
        found.append(f"{_path(prefix, e['loc'], at)}: {message}")
    return found


def validated(
    shape: type[S],
    raw: Any,
    prefix: str,
    problems: list[str],
    context: Mapping[str, Any] | None = None,
    *,
    message_for_object: str = "must be an object",
) -> S | None:
    """``raw`` as ``shape``, or None with its errors added to ``problems`` under ``prefix``."""
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix or '(root)'}: {message_for_object}")
        return None
    try:
        return shape.model_validate(raw, context=dict(context or {}))
    except ValidationError as error:
        problems.extend(problems_of(error, prefix))
        return None


def raise_if_any(problems: Sequence[str]) -> None:
    if problems:
        raise ProgramInvalid(problems)


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
