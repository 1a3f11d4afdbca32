"""The app's points program: the `points` and `earning` sections of the program YAML, validated.

``parse_program`` turns the JSON object the gateway sends (``timezone``, ``points``, ``earning``)
into immutable rules, or raises ``ProgramInvalid`` listing every problem with its path in the
program (``earning[2].points: must be an integer``), so an operator fixes them all in one go.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, ConfigDict, Field

from plumbing.sections import (
    REQUIRED,
    ProgramInvalid,
    Shape,
    Timezone,
    boolean,
    choice,
    duration,
    integer,
    listing,
    mapping,
    named,
    problem,
    raise_if_any,
    validated,
)
from services.points.domain.campaign_shapes import CampaignShape, campaign_of, campaign_rules
from services.points.domain.campaigns import Campaign

__all__ = ["ProgramInvalid", "parse_program"]


class ExpiryPolicy(enum.Enum):
    ROLLING = "rolling"
    CALENDAR_YEAR_END = "calendar_year_end"
    NEVER = "never"


@dataclass(frozen=True)
class Expiry:
    policy: ExpiryPolicy
    # rolling only: a lot earned on local day D expires at the end of local day D + months.
    months: int = 0


@dataclass(frozen=True)
class Requirement:
    """One `require` entry: attribute ``attribute`` compared with ``value``.

    ``min_length: 20`` reads as attribute ``length`` >= 20; ``max_x`` as <=; any other key must
    equal the attribute as a string (``platform: ios``)."""

    attribute: str
    op: str  # "min" | "max" | "eq"
    value: str

    def holds(self, attributes: Mapping[str, str]) -> bool:
        given = attributes.get(self.attribute)
        if given is None:
            return False
        if self.op == "eq":
            return given == self.value
        try:
            number = float(given)
        except ValueError:
            return False
        limit = float(self.value)
        return number >= limit if self.op == "min" else number <= limit


@dataclass(frozen=True)
class EarningRule:
    action: str
    # Points per unit (negative for a penalty rule).
    points: int
    # Quantity per unit: `watch` with unit 10 pays per 10 minutes (quantity = minutes).
    unit: int = 1
    # Pays `points` per `per_amount` of attribute `amount_fen` (purchases).
    per_amount: int | None = None
    # At most this many units per user per local day.
    daily_limit: int | None = None
    once: bool = False
    # Streak length in consecutive local days -> bonus points on reaching it.
    streak_bonus: tuple[tuple[int, int], ...] = ()
    require: tuple[Requirement, ...] = ()
    counts_toward_daily_cap: bool = True
    # Growth per unit: the levels service's part of the rule. Points counts the units (limits
    # included) and answers with growth = units x this; the gateway passes it on to levels.
    growth: int = 0

    @property
    def is_penalty(self) -> bool:
        return self.points < 0


@dataclass(frozen=True)
class PointsProgram:
    timezone: str
    money_rate: int
    expiry: Expiry
    # Points per user per local day from tasks; None means no cap.
    daily_cap: int | None
    display_name: str = "points"
    rules: Mapping[str, EarningRule] = field(default_factory=dict)
    # In program order: an event matching several is paid by each.
    campaigns: tuple[Campaign, ...] = ()
    # Action -> how long its points wait before they can be spent (the return window).
    pending: Mapping[str, timedelta] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_EXPIRY = "is required (policy: rolling | calendar_year_end | never)"


class ExpiryShape(Shape):
    policy: Annotated[
        ExpiryPolicy, choice(ExpiryPolicy, "must be one of rolling, calendar_year_end, never")
    ] = REQUIRED
    months: Annotated[int | None, integer(minimum=1, maximum=1200)] = None


class PointsShape(Shape):
    display_name: Annotated[str, BeforeValidator(str)] = "points"
    money_rate: Annotated[int, integer(minimum=1, required="is required (points worth 1 CNY)")] = (
        REQUIRED
    )
    expiry: Annotated[ExpiryShape, mapping("must be an object", required=_EXPIRY)] = REQUIRED
    daily_cap: Annotated[int | None, integer(minimum=1)] = None


def _streak_days(key: Any) -> str:
    try:
        days = int(key)
    except (TypeError, ValueError):
        raise problem("the key must be a number of days") from None
    if days < 2:
        raise problem("a streak is at least 2 days")
    return str(days)


def _requirements(raw: Any) -> tuple[Requirement, ...]:
    """``{min_length: 20, platform: ios}``: min_/max_ compare a number, any other key equals."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise problem("must be an object such as {min_length: 20}")
    requirements = []
    for key, value in raw.items():
        key = str(key)
        op = next((op for op in ("min", "max") if key.startswith(f"{op}_") and len(key) > 4), "")
        if op:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise problem("must be a number", at=key)
            requirements.append(Requirement(key[len(op) + 1 :], op, str(value)))
        elif isinstance(value, Mapping | list):
            raise problem("must be a plain value", at=key)
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            requirements.append(Requirement(key, "eq", text))
    return tuple(requirements)


class RuleShape(Shape):
    action: Annotated[str, named(message="is required (a name of at most 128 characters)")] = (
        REQUIRED
    )
    points: Annotated[int | None, integer(allow_zero=False)] = None
    # Growth per unit, reported back for the levels service.
    growth: Annotated[int | None, integer(minimum=0)] = None
    unit: Annotated[int | None, integer(minimum=1)] = None
    per_amount: Annotated[int | None, integer(minimum=1)] = None
    daily_limit: Annotated[int | None, integer(minimum=1)] = None
    once: Annotated[bool, boolean()] = False
    streak_bonus: Annotated[
        dict[Annotated[str, BeforeValidator(_streak_days)], Annotated[int, integer(minimum=1)]]
        | None,
        mapping("must map a streak length in days to bonus points, e.g. {7: 20}", min_items=1),
    ] = None
    require: Annotated[tuple[Requirement, ...], BeforeValidator(_requirements)] = ()
    counts_toward_daily_cap: Annotated[bool, boolean()] = True


MAX_CAMPAIGNS = 200
_YEAR = timedelta(days=366)
_PENDING = "must be a duration such as 7d (at most 366d)"


class SectionShape(Shape):
    """What points is configured with: its two sections and the zone."""

    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True, arbitrary_types_allowed=True
    )
    timezone: Timezone = "UTC"
    points: Annotated[PointsShape, mapping("is required and must be an object", required=True)] = (
        REQUIRED
    )
    earning: Annotated[
        list[Any], listing("must be a list of rules", max_items=1 << 30, required=True)
    ] = Field(default_factory=list)
    campaigns: Annotated[
        list[Any], listing("must be a list of campaigns", max_items=MAX_CAMPAIGNS)
    ] = Field(default_factory=list)
    pending: Annotated[
        dict[Annotated[str, named()], Annotated[timedelta, duration(_PENDING, maximum=_YEAR)]],
        mapping("must map an action to how long its points wait, e.g. {purchase: 7d}"),
    ] = Field(default_factory=dict)
    # For the audiences' names only: the gateway validates segments, levels the tiers.
    segments: Any = None
    levels: Any = None


def parse_program(section: Mapping[str, Any]) -> PointsProgram:
    """Validates the sections; raises ``ProgramInvalid`` with every error found."""
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    problems: list[str] = []
    shape = validated(SectionShape, section, "", problems)
    if shape is not None:
        problems.extend(
            f"points.expiry.months: {wrong}" for wrong in _months_rules(shape.points.expiry)
        )
    earning = section.get("earning", [])
    rules: dict[str, EarningRule] = {}
    for index, raw in enumerate(earning if isinstance(earning, list) else []):
        path = f"earning[{index}]"
        rule = validated(RuleShape, raw, path, problems)
        if rule is None:
            continue
        found = [f"{path}.{at}: {message}" for at, message in _rule_rules(rule)]
        if found:
            problems.extend(found)
        elif rule.action in rules:
            problems.append(f"{path}.action: duplicate rule for action {rule.action!r}")
        else:
            rules[rule.action] = _rule(rule)
    # A campaign's or pending action is checked against the rules only when every rule is
    # valid: a broken rule's action is reported once, at the rule.
    earning_valid = isinstance(earning, list) and len(rules) == len(earning)
    campaigns = _campaigns(section, rules if earning_valid else None, problems)
    if shape is not None and earning_valid:
        problems.extend(
            f"pending.{action}: no earning rule for this action"
            for action in shape.pending
            if action not in rules
        )
    raise_if_any(problems)
    assert shape is not None
    points = shape.points
    return PointsProgram(
        timezone=shape.timezone,
        money_rate=points.money_rate,
        expiry=_expiry(points.expiry),
        daily_cap=points.daily_cap,
        display_name=points.display_name,
        rules=rules,
        campaigns=tuple(campaigns),
        pending=dict(shape.pending),
    )


def _codes(raw: Any, key: str) -> frozenset[str] | None:
    """The codes of a list of ``{code: ...}`` (tiers, segments), or None when not given."""
    if isinstance(raw, Mapping):
        raw = raw.get(key)
    if not isinstance(raw, list):
        return None
    return frozenset(str(x["code"]) for x in raw if isinstance(x, Mapping) and "code" in x)


def _campaigns(
    section: Mapping[str, Any], rules: Mapping[str, EarningRule] | None, problems: list[str]
) -> list[Campaign]:
    """Each campaign validated alone (one bad campaign never hides another's errors), then
    against the rest of the program: its actions earn, its tiers and segments exist."""
    raw = section.get("campaigns")
    known = {
        "tiers": _codes(section.get("levels"), "tiers"),
        "segments": _codes(section.get("segments") or [], "segments"),
    }
    campaigns: dict[str, Campaign] = {}
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        path = f"campaigns[{index}]"
        shape = validated(CampaignShape, item, path, problems)
        if shape is None:
            continue
        found = [f"{path}.{at}: {message}" for at, message in campaign_rules(shape, rules, known)]
        if shape.code in campaigns:
            found.append(f"{path}.code: duplicate campaign {shape.code!r}")
        problems.extend(found)
        if not found:
            campaigns[shape.code] = campaign_of(shape)
    return list(campaigns.values())


def _months_rules(expiry: ExpiryShape) -> list[str]:
    """Rolling expiry needs its months; the other policies take none."""
    if expiry.policy is ExpiryPolicy.ROLLING and not expiry.months:
        return ["must be an integer"]
    if expiry.policy is not ExpiryPolicy.ROLLING and expiry.months:
        return [f"only applies to policy rolling, not {expiry.policy.value}"]
    return []


def _expiry(shape: ExpiryShape) -> Expiry:
    if shape.policy is ExpiryPolicy.ROLLING:
        return Expiry(shape.policy, shape.months or 12)
    return Expiry(shape.policy)


def _rule_rules(rule: RuleShape) -> list[tuple[str, str]]:
    """The rules between a rule's fields, as (field, message)."""
    found = []
    if rule.points is None and rule.growth is None:
        found.append(("points", "is required"))
    if rule.per_amount is not None and rule.unit is not None:
        found.append(("unit", "cannot be combined with per_amount"))
    if (rule.points or 0) < 0 and rule.streak_bonus:
        found.append(("streak_bonus", "a penalty rule (negative points) cannot pay a streak bonus"))
    return found


def _rule(rule: RuleShape) -> EarningRule:
    return EarningRule(
        action=rule.action,
        points=rule.points or 0,  # none: a growth-only rule, the levels service uses it
        unit=rule.unit or 1,
        per_amount=rule.per_amount,
        daily_limit=rule.daily_limit,
        once=rule.once,
        streak_bonus=tuple(
            sorted((int(days), bonus) for days, bonus in (rule.streak_bonus or {}).items())
        ),
        require=rule.require,
        counts_toward_daily_cap=rule.counts_toward_daily_cap,
        growth=rule.growth or 0,
    )
