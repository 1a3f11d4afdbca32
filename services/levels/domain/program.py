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
from typing import Any
from zoneinfo import ZoneInfo

from plumbing.sections import ErrorCollector, ProgramInvalid
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


_LEVELS_KEYS = {"growth_daily_cap", "downgrade", "tiers", "growth_coefficients"}
_TIER_KEYS = {"code", "name", "threshold", "perks", "invite_only"}
_BADGE_KEYS = {"code", "name", "rule", "reward_points"}


def parse_levels(section: Mapping[str, Any]) -> LevelsProgram:
    """Validates the sections; raises ``ProgramInvalid`` with every error found."""
    c = ErrorCollector()
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    timezone = c.timezone("timezone", section.get("timezone", "UTC"))
    levels = section.get("levels")
    tiers: tuple[Tier, ...] = ()
    cap = None
    coefficients: dict[str, Decimal] = {}
    downgrade = Downgrade()
    if not isinstance(levels, Mapping):
        c.add("levels", "is required and must be an object")
    else:
        c.unknown_keys("levels", levels, _LEVELS_KEYS)
        if levels.get("growth_daily_cap") is not None:
            cap = c.integer("levels.growth_daily_cap", levels["growth_daily_cap"], minimum=1)
        downgrade = _parse_downgrade(c, levels.get("downgrade"))
        tiers = _parse_tiers(c, levels.get("tiers"))
        coefficients = _parse_coefficients(c, levels.get("growth_coefficients"))
    badges = _parse_badges(c, section.get("badges"))
    c.raise_if_any()
    return LevelsProgram(
        timezone=timezone,
        tiers=tiers,
        growth_daily_cap=cap,
        coefficients=coefficients,
        downgrade=downgrade,
        badges=badges,
    )


def _parse_downgrade(c: ErrorCollector, raw: Any) -> Downgrade:  # noqa: C901 - a section parser: goes with the move to pydantic models
    path = "levels.downgrade"
    if raw is None:
        return Downgrade()
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object such as {policy: requalify, period: yearly}")
        return Downgrade()
    c.unknown_keys(path, raw, {"policy", "period", "percent"})
    try:
        policy = DowngradePolicy(raw.get("policy", "none"))
    except ValueError:
        c.add(f"{path}.policy", "must be one of none, requalify, decay")
        return Downgrade()
    if policy is DowngradePolicy.NONE:
        for key in ("period", "percent"):
            if key in raw:
                c.add(f"{path}.{key}", "only applies to policy requalify or decay")
        return Downgrade()
    default_period = "yearly" if policy is DowngradePolicy.REQUALIFY else "monthly"
    try:
        period = Period(raw.get("period", default_period))
    except ValueError:
        c.add(f"{path}.period", "must be one of monthly, quarterly, yearly")
        period = Period.YEARLY
    percent = 0
    if policy is DowngradePolicy.DECAY:
        given = c.integer(f"{path}.percent", raw.get("percent"), minimum=1)
        if given is not None and given > 100:
            c.add(f"{path}.percent", "must be at most 100")
        percent = given or 0
    elif "percent" in raw:
        c.add(f"{path}.percent", "only applies to policy decay")
    return Downgrade(policy, period, percent)


def _perk_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _parse_tiers(c: ErrorCollector, raw: Any) -> tuple[Tier, ...]:  # noqa: C901 - a section parser: goes with the move to pydantic models
    if not isinstance(raw, list) or not raw:
        c.add("levels.tiers", "is required: a list of tiers, lowest first")
        return ()
    if len(raw) > MAX_TIERS:
        c.add("levels.tiers", f"at most {MAX_TIERS} tiers")
        return ()
    tiers: list[Tier] = []
    seen: set[str] = set()
    previous: int | None = None
    for index, item in enumerate(raw):
        path = f"levels.tiers[{index}]"
        if not isinstance(item, Mapping):
            c.add(path, "must be an object")
            continue
        c.unknown_keys(path, item, _TIER_KEYS)
        code = c.name(f"{path}.code", item.get("code"))
        if code in seen:
            c.add(f"{path}.code", f"duplicate tier {code!r}")
        seen.add(code)
        name = item.get("name", code)
        if not isinstance(name, str) or len(name) > 128:
            c.add(f"{path}.name", "must be text of at most 128 characters")
            name = code
        threshold = c.integer(f"{path}.threshold", item.get("threshold"), minimum=0)
        if threshold is not None and previous is not None and threshold <= previous:
            c.add(
                f"{path}.threshold",
                f"must be greater than {previous} (the tier before): tiers go lowest first",
            )
        previous = threshold if threshold is not None else previous
        invite_only = c.boolean(f"{path}.invite_only", item.get("invite_only", False))
        perks: dict[str, str] = {}
        raw_perks = item.get("perks", {})
        if not isinstance(raw_perks, Mapping) or len(raw_perks) > MAX_PERKS:
            c.add(f"{path}.perks", f"must map at most {MAX_PERKS} perk names to values")
        else:
            for key, value in raw_perks.items():
                text = _perk_text(value)
                if text is None or len(text) > 256:
                    c.add(f"{path}.perks.{key}", "must be a plain value (text, number, true/false)")
                else:
                    perks[str(key)] = text
        tiers.append(Tier(code, name, threshold or 0, perks, invite_only, index))
    if tiers and all(tier.invite_only for tier in tiers):
        c.add("levels.tiers", "at least one tier must be reachable by growth (not invite_only)")
    return tuple(tiers)


def _parse_coefficients(c: ErrorCollector, raw: Any) -> dict[str, Decimal]:
    path = "levels.growth_coefficients"
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        c.add(path, "must map a user attribute to a multiplier, e.g. {kol: 1.5}")
        return {}
    coefficients: dict[str, Decimal] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            c.add(f"{path}.{key}", "must be a number")
            continue
        try:
            # Through str: 1.2 stays exactly 1.2, not the float nearest to it.
            number = Decimal(str(value))
        except InvalidOperation:
            c.add(f"{path}.{key}", "must be a number")
            continue
        if not number.is_finite() or number <= 0 or number > MAX_COEFFICIENT:
            c.add(f"{path}.{key}", f"must be > 0 and at most {MAX_COEFFICIENT}")
            continue
        coefficients[str(key)] = number
    return coefficients


def _parse_badges(c: ErrorCollector, raw: Any) -> tuple[BadgeRule, ...]:  # noqa: C901 - a section parser: goes with the move to pydantic models
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_BADGES:
        c.add("badges", f"must be a list of at most {MAX_BADGES} badges")
        return ()
    badges: list[BadgeRule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"badges[{index}]"
        if not isinstance(item, Mapping):
            c.add(path, "must be an object")
            continue
        before = len(c.errors)
        c.unknown_keys(path, item, _BADGE_KEYS)
        code = c.name(f"{path}.code", item.get("code"))
        if code in seen:
            c.add(f"{path}.code", f"duplicate badge {code!r}")
        seen.add(code)
        name = item.get("name", code)
        if not isinstance(name, str) or len(name) > 128:
            c.add(f"{path}.name", "must be text of at most 128 characters")
        reward = c.integer(f"{path}.reward_points", item.get("reward_points", 0), minimum=0) or 0
        rule = item.get("rule")
        kind, action, target = BadgeKind.COUNT, "", 0
        if not isinstance(rule, Mapping):
            c.add(
                f"{path}.rule", "must be {streak: ACTION, days: N} or {count: ACTION, at_least: N}"
            )
        elif "streak" in rule:
            c.unknown_keys(f"{path}.rule", rule, {"streak", "days"})
            kind = BadgeKind.STREAK
            action = c.name(f"{path}.rule.streak", rule.get("streak"))
            target = c.integer(f"{path}.rule.days", rule.get("days"), minimum=1) or 0
            if target > 3660:
                c.add(f"{path}.rule.days", "must be at most 3660")
        elif "count" in rule:
            c.unknown_keys(f"{path}.rule", rule, {"count", "at_least"})
            action = c.name(f"{path}.rule.count", rule.get("count"))
            target = c.integer(f"{path}.rule.at_least", rule.get("at_least"), minimum=1) or 0
        else:
            c.add(
                f"{path}.rule", "must be {streak: ACTION, days: N} or {count: ACTION, at_least: N}"
            )
        if len(c.errors) == before:
            badges.append(BadgeRule(code, str(name), kind, action, target, reward))
    return tuple(badges)
