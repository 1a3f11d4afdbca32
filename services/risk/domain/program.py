"""The app's risk program: the `risk` section of the program YAML, validated.

``parse_risk`` takes ``{"timezone", "risk"}`` and returns immutable rules and lists, or raises
``ProgramInvalid`` with every problem and its path (``risk.rules[2].window: must be a
duration such as 30s, 1m, 1h or 1d``).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from plumbing.sections import ErrorCollector, ProgramInvalid

__all__ = ["ProgramInvalid", "parse_risk"]

MAX_RULES = 200
MAX_LIST_ENTRIES = 10_000
MAX_WINDOW = timedelta(days=31)
# Actions that move value out: a rule without `on_redis_down` fails closed for them.
VALUE_ACTIONS = frozenset({"redeem", "draw", "gift", "checkout"})


class Verdict(enum.IntEnum):
    """Ordered: the strongest fired rule decides."""

    ALLOW = 0
    REVIEW = 1
    DENY = 2


class RuleKind(enum.Enum):
    # At most `max` events per window per user, device or ip.
    VELOCITY = "velocity"
    # At most `max` distinct users per window per device or ip.
    DISTINCT_USERS = "distinct_users"
    # A new account (younger than `account_age_under`) moving more than `amount_over`.
    ACCOUNT_AGE = "account_age"
    # An amount above `amount_over`.
    AMOUNT = "amount"


@dataclass(frozen=True)
class Rule:
    code: str
    kind: RuleKind
    # "*" for every action.
    action: str
    decision: Verdict
    per: str = "user"  # user | device | ip
    max: int = 0
    window: timedelta = timedelta(0)
    account_age_under: timedelta = timedelta(0)
    amount_over: int = 0
    # Fires per minute above which an alert is raised (None: never).
    alert_per_minute: int | None = None
    # With Redis down a counter rule fails open (does not fire) or closed (fires); None means
    # the default: closed for redeem, draw, gift and checkout, open for earning.
    fail_closed: bool | None = None

    @property
    def counted(self) -> bool:
        return self.kind in (RuleKind.VELOCITY, RuleKind.DISTINCT_USERS)

    def applies_to(self, action: str) -> bool:
        return self.action in ("*", action)

    def fails_closed(self, action: str) -> bool:
        return self.fail_closed if self.fail_closed is not None else action in VALUE_ACTIONS


@dataclass(frozen=True)
class ListEntry:
    value: str
    # None: for good.
    until: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Lists:
    deny_users: tuple[ListEntry, ...] = ()
    deny_devices: tuple[ListEntry, ...] = ()
    deny_ips: tuple[ListEntry, ...] = ()
    allow_users: tuple[ListEntry, ...] = ()
    allow_devices: tuple[ListEntry, ...] = ()
    allow_ips: tuple[ListEntry, ...] = ()


@dataclass(frozen=True)
class RiskProgram:
    rules: tuple[Rule, ...] = ()
    lists: Lists = field(default_factory=Lists)
    # Alert when one sku, prize or pool is taken more often than this per minute (挤兑).
    run_alert_per_minute: int | None = None
    # Rule code -> fires per minute above which it raises an alert (derived from the rules).
    alert_thresholds: Mapping[str, int] = field(default_factory=dict)


_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_RULE_KEYS = {
    "code",
    "action",
    "per",
    "max",
    "max_distinct_users",
    "window",
    "account_age_under",
    "price_points_over",
    "amount_over",
    "decision",
    "alert_per_minute",
    "on_redis_down",
}
_LISTS = ("deny_users", "deny_devices", "deny_ips", "allow_users", "allow_devices", "allow_ips")


def parse_duration(text: Any) -> timedelta | None:
    match = _DURATION.match(str(text)) if isinstance(text, str | int) else None
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_risk(section: Mapping[str, Any]) -> RiskProgram:
    """Validates the section; raises ``ProgramInvalid`` with every error found."""
    c = ErrorCollector()
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    c.timezone("timezone", section.get("timezone", "UTC"))
    risk = section.get("risk")
    if not isinstance(risk, Mapping):
        c.add("risk", "is required and must be an object with rules and lists")
        c.raise_if_any()
        return RiskProgram()
    c.unknown_keys("risk", risk, {"rules", "lists", "run_alert_per_minute"})
    raw_rules = risk.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RULES:
        c.add("risk.rules", f"must be a list of at most {MAX_RULES} rules")
        raw_rules = []
    codes: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _parse_rule(c, f"risk.rules[{index}]", raw)
        if rule is None:
            continue
        if rule.code in codes:
            c.add(f"risk.rules[{index}].code", f"duplicate rule {rule.code!r}")
            continue
        codes.add(rule.code)
        rules.append(rule)
    lists = _parse_lists(c, risk.get("lists"))
    run = None
    if risk.get("run_alert_per_minute") is not None:
        run = c.integer("risk.run_alert_per_minute", risk["run_alert_per_minute"], minimum=1)
    c.raise_if_any()
    thresholds = {r.code: r.alert_per_minute for r in rules if r.alert_per_minute is not None}
    return RiskProgram(tuple(rules), lists, run, thresholds)


def _parse_rule(c: ErrorCollector, path: str, raw: Any) -> Rule | None:  # noqa: C901, PLR0915 - a section parser: goes with the move to pydantic models
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object")
        return None
    before = len(c.errors)
    c.unknown_keys(path, raw, _RULE_KEYS)
    code = c.name(f"{path}.code", raw.get("code"))
    action = c.name(f"{path}.action", raw.get("action", "*"))
    try:
        decision = Verdict[str(raw.get("decision", "")).upper()]
        if decision is Verdict.ALLOW:
            raise KeyError
    except KeyError:
        c.add(f"{path}.decision", "must be deny or review")
        decision = Verdict.DENY
    kind = None
    fields: dict[str, Any] = {}
    if "max" in raw or "max_distinct_users" in raw:
        distinct = "max_distinct_users" in raw
        kind = RuleKind.DISTINCT_USERS if distinct else RuleKind.VELOCITY
        key = "max_distinct_users" if distinct else "max"
        fields["max"] = c.integer(f"{path}.{key}", raw.get(key), minimum=1) or 1
        per = raw.get("per", "user")
        allowed = ("device", "ip") if distinct else ("user", "device", "ip")
        if per not in allowed:
            c.add(f"{path}.per", f"must be one of {', '.join(allowed)}")
        fields["per"] = per
        window = parse_duration(raw.get("window"))
        if window is None or window <= timedelta(0) or window > MAX_WINDOW:
            c.add(f"{path}.window", "must be a duration such as 30s, 1m, 1h or 1d (at most 31d)")
            window = timedelta(minutes=1)
        fields["window"] = window
    elif "account_age_under" in raw:
        kind = RuleKind.ACCOUNT_AGE
        age = parse_duration(raw.get("account_age_under"))
        if age is None or age <= timedelta(0):
            c.add(f"{path}.account_age_under", "must be a duration such as 24h or 7d")
            age = timedelta(days=1)
        fields["account_age_under"] = age
        over = raw.get("price_points_over", raw.get("amount_over", 0))
        fields["amount_over"] = c.integer(f"{path}.price_points_over", over, minimum=0) or 0
    elif "amount_over" in raw:
        kind = RuleKind.AMOUNT
        fields["amount_over"] = c.integer(f"{path}.amount_over", raw["amount_over"], minimum=0) or 0
    else:
        c.add(path, "needs max (velocity), max_distinct_users, account_age_under or amount_over")
    if raw.get("alert_per_minute") is not None:
        fields["alert_per_minute"] = c.integer(
            f"{path}.alert_per_minute", raw["alert_per_minute"], minimum=1
        )
    mode = raw.get("on_redis_down")
    if mode is not None:
        if mode not in ("open", "closed"):
            c.add(f"{path}.on_redis_down", "must be open or closed")
        fields["fail_closed"] = mode == "closed"
    if len(c.errors) > before or kind is None:
        return None
    return Rule(code=code, kind=kind, action=action, decision=decision, **fields)


def _parse_lists(c: ErrorCollector, raw: Any) -> Lists:  # noqa: C901 - a section parser: goes with the move to pydantic models
    if raw is None:
        return Lists()
    if not isinstance(raw, Mapping):
        c.add("risk.lists", "must be an object of deny_* and allow_* lists")
        return Lists()
    c.unknown_keys("risk.lists", raw, set(_LISTS))
    parsed: dict[str, tuple[ListEntry, ...]] = {}
    for name in _LISTS:
        entries = raw.get(name) or []
        path = f"risk.lists.{name}"
        if not isinstance(entries, list) or len(entries) > MAX_LIST_ENTRIES:
            c.add(path, f"must be a list of at most {MAX_LIST_ENTRIES} entries")
            continue
        items = []
        for index, entry in enumerate(entries):
            value, until = entry, None
            if isinstance(entry, Mapping):
                value = entry.get("value")
                if entry.get("until") is not None:
                    try:
                        until = datetime.fromisoformat(str(entry["until"]))
                    except ValueError:
                        c.add(f"{path}[{index}].until", "must be an ISO date and time")
                        continue
                    if until.tzinfo is None:
                        c.add(f"{path}[{index}].until", "must carry a UTC offset (Z or +08:00)")
                        continue
            if not isinstance(value, str) or not value:
                c.add(f"{path}[{index}]", "must be a value or {value, until}")
                continue
            if name.endswith("_ips"):
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    c.add(f"{path}[{index}]", f"{value!r} is not an IP address or network")
                    continue
            items.append(ListEntry(value, until))
        parsed[name] = tuple(items)
    return Lists(**parsed)
