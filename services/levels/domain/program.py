"""The app's levels program: the `levels` and `badges` sections of the program YAML, validated.

``parse_levels`` turns the JSON object the gateway sends (``timezone``, ``levels``, ``badges``)
into immutable rules, or raises ``ProgramInvalid`` listing every problem with its path
(``levels.tiers[2].threshold: must be greater than 1000 (the tier before)``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
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
    chosen_by,
    free_text,
    integer,
    listing,
    mapping,
    named,
    problem,
    raise_if_any,
    tag,
    validated,
)
from services.levels.domain.periods import Period

__all__ = ["ProgramInvalid", "parse_levels"]

MAX_TIERS = 50
MAX_BADGES = 200
MAX_PERKS = 64
MAX_COEFFICIENT = Decimal(100)


class DowngradePolicy(enum.Enum):
    NONE = "none"
    REQUALIFY = "requalify"
    DECAY = "decay"


@dataclass(frozen=True)
class Downgrade:
    policy: DowngradePolicy = DowngradePolicy.NONE
    # requalify: the trailing period whose growth must reach the tier's threshold.
    # decay: the idle period after which lifetime growth loses `percent`.
    period: Period = Period.YEARLY
    # decay only: percent of the qualifying growth lost for every idle period (1..100).
    percent: int = 0


@dataclass(frozen=True)
class Tier:
    code: str
    name: str
    threshold: int
    # Perks as strings (`dm_per_day: 5` becomes "5", `hd_streams: true` becomes "true").
    perks: Mapping[str, str]
    # Reserved tiers only ops grant; growth never reaches them.
    invite_only: bool
    # Position on the ladder, 0 for the lowest tier.
    rank: int


class BadgeKind(enum.Enum):
    # `days` consecutive local days with the action.
    STREAK = "streak"
    # The action at least `at_least` times.
    COUNT = "count"


@dataclass(frozen=True)
class BadgeRule:
    code: str
    name: str
    kind: BadgeKind
    action: str
    # Days for a streak, occurrences for a count.
    target: int
    reward_points: int = 0


@dataclass(frozen=True)
class LevelsProgram:
    timezone: str
    tiers: tuple[Tier, ...]
    # Growth per user per local day; None means no cap.
    growth_daily_cap: int | None = None
    # Multipliers: `kol: 1.5` applies when attribute kol is true; `tier=gold: 2` when
    # attribute tier equals gold. The best matching one applies.
    coefficients: Mapping[str, Decimal] = field(default_factory=dict)
    downgrade: Downgrade = field(default_factory=Downgrade)
    badges: tuple[BadgeRule, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def tier(self, code: str) -> Tier | None:
        for tier in self.tiers:
            if tier.code == code:
                return tier
        return None


_DOWNGRADE = "must be an object such as {policy: requalify, period: yearly}"
_BADGE_RULE = "must be {streak: ACTION, days: N} or {count: ACTION, at_least: N}"


class DowngradeShape(Shape):
    policy: Annotated[
        DowngradePolicy, choice(DowngradePolicy, "must be one of none, requalify, decay")
    ] = DowngradePolicy.NONE
    period: Annotated[
        Period | None,
        choice(Period, "must be one of monthly, quarterly, yearly", required=False),
    ] = None
    percent: Annotated[int | None, integer(minimum=1, maximum=100)] = None


def _perk(value: Any) -> str:
    """Perks travel as text (`dm_per_day: 5` is "5", `hd_streams: true` is "true")."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        text = ""
    if (not text and not isinstance(value, str)) or len(text) > 256:
        raise problem("must be a plain value (text, number, true/false)")
    return text


class TierShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    name: Annotated[str | None, free_text(128)] = None
    threshold: Annotated[int, integer(minimum=0, required="must be an integer")] = REQUIRED
    perks: Annotated[
        dict[str, Annotated[str, BeforeValidator(_perk)]],
        mapping(f"must map at most {MAX_PERKS} perk names to values", max_items=MAX_PERKS),
    ] = Field(default_factory=dict)
    invite_only: Annotated[bool, boolean()] = False


def _coefficient(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise problem("must be a number")
    try:
        # Through str: 1.2 stays exactly 1.2, not the float nearest to it.
        number = Decimal(str(value))
    except InvalidOperation:
        raise problem("must be a number") from None
    if not number.is_finite() or number <= 0 or number > MAX_COEFFICIENT:
        raise problem(f"must be > 0 and at most {MAX_COEFFICIENT}")
    return number


_TIERS = "is required: a list of tiers, lowest first"


def _tiers_given(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem(_TIERS)
    if len(value) > MAX_TIERS:
        raise problem(f"at most {MAX_TIERS} tiers")
    return value


class LevelsShape(Shape):
    growth_daily_cap: Annotated[int | None, integer(minimum=1)] = None
    downgrade: Annotated[DowngradeShape | None, mapping(_DOWNGRADE)] = None
    tiers: Annotated[list[Any], BeforeValidator(_tiers_given)] = REQUIRED
    growth_coefficients: Annotated[
        dict[str, Annotated[Decimal, BeforeValidator(_coefficient)]] | None,
        mapping("must map a user attribute to a multiplier, e.g. {kol: 1.5}"),
    ] = None


class StreakShape(Shape):
    streak: Annotated[str, named()] = REQUIRED
    days: Annotated[int, integer(minimum=1, maximum=3660, required="must be an integer")] = REQUIRED


class CountShape(Shape):
    count: Annotated[str, named()] = REQUIRED
    at_least: Annotated[int, integer(minimum=1, required="must be an integer")] = REQUIRED


def _badge_rule(value: Any) -> Any:
    if not isinstance(value, Mapping) or not ("streak" in value or "count" in value):
        raise problem(_BADGE_RULE)
    return value


class BadgeShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    name: Annotated[str | None, free_text(128)] = None
    rule: Annotated[
        Annotated[StreakShape, tag("streak")] | Annotated[CountShape, tag("count")],
        chosen_by(lambda raw: "streak" if "streak" in raw else "count"),
        BeforeValidator(_badge_rule),
    ] = REQUIRED
    reward_points: Annotated[int, integer(minimum=0)] = 0


class SectionShape(Shape):
    """What levels is configured with: its two sections and the zone."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    timezone: Timezone = "UTC"
    levels: Annotated[LevelsShape, mapping("is required and must be an object", required=True)] = (
        REQUIRED
    )
    badges: Annotated[
        list[Any] | None,
        listing(f"must be a list of at most {MAX_BADGES} badges", max_items=MAX_BADGES),
    ] = None


def parse_levels(section: Mapping[str, Any]) -> LevelsProgram:
    """Validates the sections; raises ``ProgramInvalid`` with every error found."""
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    problems: list[str] = []
    shape = validated(SectionShape, section, "", problems)
    # The ladder and the badges are read item by item, whatever else is wrong.
    levels = section.get("levels")
    tiers = _tiers(_listed(levels.get("tiers") if isinstance(levels, Mapping) else None), problems)
    downgrade = _downgrade(shape.levels.downgrade if shape else None, problems)
    badges = _badges(_listed(section.get("badges")), problems)
    raise_if_any(problems)
    assert shape is not None
    return LevelsProgram(
        timezone=shape.timezone,
        tiers=tiers,
        growth_daily_cap=shape.levels.growth_daily_cap,
        coefficients=dict(shape.levels.growth_coefficients or {}),
        downgrade=downgrade,
        badges=badges,
    )


def _listed(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else []


def _downgrade(shape: DowngradeShape | None, problems: list[str]) -> Downgrade:
    path = "levels.downgrade"
    if shape is None:
        return Downgrade()
    if shape.policy is DowngradePolicy.NONE:
        for key in ("period", "percent"):
            if getattr(shape, key) is not None:
                problems.append(f"{path}.{key}: only applies to policy requalify or decay")
        return Downgrade()
    if shape.policy is DowngradePolicy.DECAY and shape.percent is None:
        problems.append(f"{path}.percent: must be an integer")
    if shape.policy is DowngradePolicy.REQUALIFY and shape.percent is not None:
        problems.append(f"{path}.percent: only applies to policy decay")
    default = Period.YEARLY if shape.policy is DowngradePolicy.REQUALIFY else Period.MONTHLY
    return Downgrade(shape.policy, shape.period or default, shape.percent or 0)


def _tiers(raw: list[Any], problems: list[str]) -> tuple[Tier, ...]:
    """The ladder, lowest first: codes unique, thresholds rising."""
    tiers: list[Tier] = []
    seen: set[str] = set()
    previous: int | None = None
    for index, item in enumerate(raw):
        path = f"levels.tiers[{index}]"
        tier = validated(TierShape, item, path, problems)
        if tier is None:
            continue
        if tier.code in seen:
            problems.append(f"{path}.code: duplicate tier {tier.code!r}")
        seen.add(tier.code)
        if previous is not None and tier.threshold <= previous:
            problems.append(
                f"{path}.threshold: must be greater than {previous} (the tier before): "
                "tiers go lowest first"
            )
        previous = tier.threshold
        name = tier.code if tier.name is None else tier.name
        tiers.append(Tier(tier.code, name, tier.threshold, tier.perks, tier.invite_only, index))
    if tiers and all(tier.invite_only for tier in tiers):
        problems.append(
            "levels.tiers: at least one tier must be reachable by growth (not invite_only)"
        )
    return tuple(tiers)


def _badges(raw: list[Any], problems: list[str]) -> tuple[BadgeRule, ...]:
    badges: list[BadgeRule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"badges[{index}]"
        badge = validated(BadgeShape, item, path, problems)
        if badge is None:
            continue
        if badge.code in seen:
            problems.append(f"{path}.code: duplicate badge {badge.code!r}")
            continue
        seen.add(badge.code)
        rule = badge.rule
        kind, action, target = (
            (BadgeKind.STREAK, rule.streak, rule.days)
            if isinstance(rule, StreakShape)
            else (BadgeKind.COUNT, rule.count, rule.at_least)
        )
        name = badge.code if badge.name is None else badge.name
        badges.append(BadgeRule(badge.code, name, kind, action, target, badge.reward_points))
    return tuple(badges)
