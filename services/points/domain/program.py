"""The app's points program: the `points` and `earning` sections of the program YAML, validated.

``parse_program`` turns the JSON object the gateway sends (``timezone``, ``points``, ``earning``)
into immutable rules, or raises ``ProgramInvalid`` listing every problem with its path in the
program (``earning[2].points: must be an integer``), so an operator fixes them all in one go.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from plumbing.sections import ErrorCollector, ProgramInvalid

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

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_POINTS_KEYS = {"display_name", "money_rate", "expiry", "daily_cap"}
_RULE_KEYS = {
    "action",
    "points",
    "growth",  # growth per unit, reported back for the levels service
    "unit",
    "per_amount",
    "daily_limit",
    "once",
    "streak_bonus",
    "require",
    "counts_toward_daily_cap",
}


def parse_program(section: Mapping[str, Any]) -> PointsProgram:
    """Validates the sections; raises ``ProgramInvalid`` with every error found."""
    c = ErrorCollector()
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])

    timezone = c.timezone("timezone", section.get("timezone", "UTC"))

    points = section.get("points")
    money_rate, expiry, daily_cap, display_name = 100, Expiry(ExpiryPolicy.NEVER), None, "points"
    if not isinstance(points, Mapping):
        c.add("points", "is required and must be an object")
    else:
        c.unknown_keys("points", points, _POINTS_KEYS)
        display_name = str(points.get("display_name", display_name))
        if "money_rate" not in points:
            c.add("points.money_rate", "is required (points worth 1 CNY)")
        else:
            money_rate = c.integer("points.money_rate", points["money_rate"], minimum=1) or 100
        expiry = _parse_expiry(c, points.get("expiry"))
        if points.get("daily_cap") is not None:
            daily_cap = c.integer("points.daily_cap", points["daily_cap"], minimum=1)

    rules: dict[str, EarningRule] = {}
    earning = section.get("earning", [])
    if not isinstance(earning, list):
        c.add("earning", "must be a list of rules")
        earning = []
    for index, raw in enumerate(earning):
        rule = _parse_rule(c, f"earning[{index}]", raw)
        if rule is None:
            continue
        if rule.action in rules:
            c.add(f"earning[{index}].action", f"duplicate rule for action {rule.action!r}")
            continue
        rules[rule.action] = rule

    if c.errors:
        raise ProgramInvalid(c.errors)
    return PointsProgram(
        timezone=timezone,
        money_rate=money_rate,
        expiry=expiry,
        daily_cap=daily_cap,
        display_name=display_name,
        rules=rules,
    )


def _parse_expiry(c: ErrorCollector, raw: Any) -> Expiry:
    if raw is None:
        c.add("points.expiry", "is required (policy: rolling | calendar_year_end | never)")
        return Expiry(ExpiryPolicy.NEVER)
    if not isinstance(raw, Mapping):
        c.add("points.expiry", "must be an object")
        return Expiry(ExpiryPolicy.NEVER)
    c.unknown_keys("points.expiry", raw, {"policy", "months"})
    try:
        policy = ExpiryPolicy(raw.get("policy"))
    except ValueError:
        c.add("points.expiry.policy", "must be one of rolling, calendar_year_end, never")
        return Expiry(ExpiryPolicy.NEVER)
    if policy is ExpiryPolicy.ROLLING:
        months = c.integer("points.expiry.months", raw.get("months"), minimum=1)
        if months is not None and months > 1200:
            c.add("points.expiry.months", "must be at most 1200")
        return Expiry(policy, months or 12)
    if "months" in raw:
        c.add("points.expiry.months", f"only applies to policy rolling, not {policy.value}")
    return Expiry(policy)


def _parse_rule(c: ErrorCollector, path: str, raw: Any) -> EarningRule | None:  # noqa: C901 - a section parser: goes with the move to pydantic models
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object")
        return None
    before = len(c.errors)
    c.unknown_keys(path, raw, _RULE_KEYS)
    action = raw.get("action")
    if not isinstance(action, str) or not action or len(action) > 128:
        c.add(f"{path}.action", "is required (a name of at most 128 characters)")
        action = ""
    if "points" not in raw:
        if "growth" not in raw:
            c.add(f"{path}.points", "is required")
        points = 0  # a growth-only rule: no points, the levels service uses it
    else:
        points = c.integer(f"{path}.points", raw["points"], allow_zero=False) or 0
    unit = c.integer(f"{path}.unit", raw.get("unit", 1), minimum=1) or 1
    per_amount = None
    if raw.get("per_amount") is not None:
        per_amount = c.integer(f"{path}.per_amount", raw["per_amount"], minimum=1)
        if "unit" in raw:
            c.add(f"{path}.unit", "cannot be combined with per_amount")
    daily_limit = None
    if raw.get("daily_limit") is not None:
        daily_limit = c.integer(f"{path}.daily_limit", raw["daily_limit"], minimum=1)
    once = c.boolean(f"{path}.once", raw.get("once", False))
    growth = 0
    if raw.get("growth") is not None:
        growth = c.integer(f"{path}.growth", raw["growth"], minimum=0) or 0
    counts = c.boolean(f"{path}.counts_toward_daily_cap", raw.get("counts_toward_daily_cap", True))
    streak = _parse_streak(c, f"{path}.streak_bonus", raw.get("streak_bonus"))
    require = _parse_require(c, f"{path}.require", raw.get("require"))
    if points < 0 and streak:
        c.add(f"{path}.streak_bonus", "a penalty rule (negative points) cannot pay a streak bonus")
    if len(c.errors) > before:
        return None
    return EarningRule(
        action=action,
        points=points,
        unit=unit,
        per_amount=per_amount,
        daily_limit=daily_limit,
        once=once,
        streak_bonus=streak,
        require=require,
        counts_toward_daily_cap=counts,
        growth=growth,
    )


def _parse_streak(c: ErrorCollector, path: str, raw: Any) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        c.add(path, "must map a streak length in days to bonus points, e.g. {7: 20}")
        return ()
    bonuses: list[tuple[int, int]] = []
    for key, value in raw.items():
        try:
            days = int(key)
        except (TypeError, ValueError):
            c.add(f"{path}.{key}", "the key must be a number of days")
            continue
        if days < 2:
            c.add(f"{path}.{key}", "a streak is at least 2 days")
            continue
        bonus = c.integer(f"{path}.{key}", value, minimum=1)
        if bonus is not None:
            bonuses.append((days, bonus))
    return tuple(sorted(bonuses))


def _parse_require(c: ErrorCollector, path: str, raw: Any) -> tuple[Requirement, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object such as {min_length: 20}")
        return ()
    requirements = []
    for key, value in raw.items():
        key = str(key)
        for op in ("min", "max"):
            if key.startswith(f"{op}_") and len(key) > len(op) + 1:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    c.add(f"{path}.{key}", "must be a number")
                    break
                requirements.append(Requirement(key[len(op) + 1 :], op, str(value)))
                break
        else:
            if isinstance(value, Mapping | list):
                c.add(f"{path}.{key}", "must be a plain value")
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            requirements.append(Requirement(key, "eq", text))
    return tuple(requirements)
