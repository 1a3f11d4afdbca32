"""The program's ``campaigns`` section as the operator writes it (shared/examples/campaigns.yaml)
and the rules between its fields. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from plumbing.sections import (
    REQUIRED,
    Shape,
    Weekday,
    free_text,
    integer,
    listing,
    mapping,
    named,
    problem,
)
from plumbing.validation import MEMBER_TAG
from services.points.domain.campaigns import Audience, Campaign

MAX_MULTIPLIER = 100
_DATE = 'must be a local date such as "2026-11-11"'


def _local_date(value: Any) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise problem(_DATE) from None


def _multiplier(value: Any) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise problem("must be a number such as 2 or 1.5")
    number = Decimal(str(value))
    if not 1 <= number <= MAX_MULTIPLIER:
        raise problem(f"must be between 1 and {MAX_MULTIPLIER}")
    return number


def _member_tag(value: Any) -> str:
    if not isinstance(value, str) or not MEMBER_TAG.fullmatch(value):
        raise problem("must be a tag: 1 to 64 characters of a-z, 0-9, _ and -")
    return value


Code = Annotated[str, named()]
_CODES = "must be a list of codes"


class WindowShape(Shape):
    starts_on: Annotated[date | None, BeforeValidator(_local_date)] = Field(
        default=None, alias="from"
    )
    ends_before: Annotated[date | None, BeforeValidator(_local_date)] = Field(
        default=None, alias="to"
    )


class ScheduleShape(Shape):
    weekly: Annotated[
        list[Weekday],
        listing(
            "must be a list of weekdays such as [wednesday]",
            max_items=7,
            min_items=1,
            required=True,
        ),
    ] = REQUIRED


class AudienceShape(Shape):
    tiers: Annotated[list[Code], listing(_CODES, max_items=100)] = Field(default_factory=list)
    tags: Annotated[
        list[Annotated[str, BeforeValidator(_member_tag)]], listing(_CODES, max_items=100)
    ] = Field(default_factory=list)
    segments: Annotated[list[Code], listing(_CODES, max_items=100)] = Field(default_factory=list)


class PerUserShape(Shape):
    lifetime: Annotated[int | None, integer(minimum=1)] = None


class CampaignShape(Shape):
    code: Code = REQUIRED
    name: Annotated[str | None, free_text(256)] = None
    actions: Annotated[
        list[Code],
        listing(
            "must be a list of actions such as [purchase]",
            max_items=100,
            min_items=1,
            required=True,
        ),
    ] = REQUIRED
    window: Annotated[
        WindowShape | None, mapping('must be {from: "2026-11-11", to: "2026-11-12"}')
    ] = None
    schedule: Annotated[ScheduleShape | None, mapping("must be {weekly: [wednesday]}")] = None
    multiplier: Annotated[Decimal | None, BeforeValidator(_multiplier)] = None
    bonus_points: Annotated[int | None, integer(minimum=1)] = None
    audience: Annotated[
        AudienceShape | None, mapping("must be an object such as {tags: [vip]}")
    ] = None
    budget_points: Annotated[int | None, integer(minimum=1)] = None
    per_user: Annotated[PerUserShape | None, mapping("must be an object such as {lifetime: 1}")] = (
        None
    )


def campaign_rules(
    shape: CampaignShape,
    earning: Mapping[str, Any] | None,
    known: Mapping[str, frozenset[str] | None],
) -> list[tuple[str, str]]:
    """The rules between a campaign's fields and the rest of the program, as (field, message).
    ``earning``: the program's rules by action, ``known``: the tier and segment codes it
    defines (None: not checked)."""
    found = []
    if (shape.multiplier or 1) == 1 and not shape.bonus_points:
        found.append(("multiplier", "a campaign needs a multiplier above 1 or bonus_points"))
    window = shape.window
    if (
        window is not None
        and window.starts_on
        and window.ends_before
        and window.ends_before <= window.starts_on
    ):
        found.append(("window.to", "must be after window.from (to is exclusive)"))
    for index, action in enumerate(shape.actions):
        if earning is not None and action not in earning:
            found.append((f"actions[{index}]", f"no earning rule for action {action!r}"))
    audience = shape.audience or AudienceShape()
    for key, codes in (("tiers", audience.tiers), ("segments", audience.segments)):
        defined = known.get(key)
        for index, code in enumerate(codes):
            if defined is not None and code not in defined:
                what = "tier" if key == "tiers" else "segment"
                found.append((f"audience.{key}[{index}]", f"no {what} {code!r} in the program"))
    return found


def campaign_of(shape: CampaignShape) -> Campaign:
    audience = shape.audience or AudienceShape()
    return Campaign(
        code=shape.code,
        name=shape.name or shape.code,
        actions=frozenset(shape.actions),
        multiplier=shape.multiplier or Decimal(1),
        bonus_points=shape.bonus_points or 0,
        starts_on=shape.window.starts_on if shape.window else None,
        ends_before=shape.window.ends_before if shape.window else None,
        weekdays=frozenset(shape.schedule.weekly) if shape.schedule else frozenset(),
        audience=Audience(
            frozenset(audience.tiers), frozenset(audience.tags), frozenset(audience.segments)
        ),
        budget_points=shape.budget_points,
        per_user_lifetime=shape.per_user.lifetime if shape.per_user else None,
    )
