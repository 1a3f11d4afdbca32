"""The app's risk program: the `risk` section of the program YAML, validated.

``parse_risk`` takes ``{"timezone", "risk"}`` and returns immutable rules and lists, or raises
``ProgramInvalid`` with every problem and its path (``risk.rules[2].window: must be a
duration such as 30s, 1m, 1h or 1d``).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field

from plumbing.sections import (
    REQUIRED,
    ProgramInvalid,
    Shape,
    Timezone,
    integer,
    listing,
    mapping,
    named,
    parse_duration,
    problem,
    raise_if_any,
    validated,
)

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


_LISTS = ("deny_users", "deny_devices", "deny_ips", "allow_users", "allow_devices", "allow_ips")


def _decision(value: Any) -> Verdict:
    decision = Verdict.__members__.get(str(value if value is not None else "").upper())
    if decision is None or decision is Verdict.ALLOW:
        raise problem("must be deny or review")
    return decision


def _window(value: Any) -> timedelta | None:
    if value is None:
        return None
    window = parse_duration(value)
    if window is None or window <= timedelta(0) or window > MAX_WINDOW:
        raise problem("must be a duration such as 30s, 1m, 1h or 1d (at most 31d)")
    return window


def _age(value: Any) -> timedelta | None:
    if value is None:
        return None
    age = parse_duration(value)
    if age is None or age <= timedelta(0):
        raise problem("must be a duration such as 24h or 7d")
    return age


def _redis_down(value: Any) -> bool | None:
    if value is None:
        return None
    if value not in ("open", "closed"):
        raise problem("must be open or closed")
    return bool(value == "closed")


class RuleShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    action: Annotated[str, named()] = "*"
    per: Any = None
    max: Annotated[int | None, integer(minimum=1)] = None
    max_distinct_users: Annotated[int | None, integer(minimum=1)] = None
    window: Annotated[timedelta | None, BeforeValidator(_window)] = None
    account_age_under: Annotated[timedelta | None, BeforeValidator(_age)] = None
    price_points_over: Annotated[int | None, integer(minimum=0)] = None
    amount_over: Annotated[int | None, integer(minimum=0)] = None
    decision: Annotated[Verdict, BeforeValidator(_decision)] = REQUIRED
    alert_per_minute: Annotated[int | None, integer(minimum=1)] = None
    on_redis_down: Annotated[bool | None, BeforeValidator(_redis_down)] = None


def _until(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        until = datetime.fromisoformat(str(value))
    except ValueError:
        raise problem("must be an ISO date and time") from None
    if until.tzinfo is None:
        raise problem("must carry a UTC offset (Z or +08:00)")
    return until


class EntryShape(Shape):
    value: Any = None
    until: Annotated[datetime | None, BeforeValidator(_until)] = None


def _entry(ips: bool) -> Any:
    def check(raw: Any) -> ListEntry:
        value, until = raw, None
        if isinstance(raw, Mapping):
            entry = EntryShape.model_validate(raw)
            value, until = entry.value, entry.until
        if not isinstance(value, str) or not value:
            raise problem("must be a value or {value, until}")
        if ips:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise problem(f"{value!r} is not an IP address or network") from None
        return ListEntry(value, until)

    return BeforeValidator(check)


def _no_entries_is_empty(value: Any) -> Any:
    return [] if value is None else value


_LIST = listing(
    f"must be a list of at most {MAX_LIST_ENTRIES} entries",
    max_items=MAX_LIST_ENTRIES,
    required=True,
)
Entries = Annotated[
    list[Annotated[ListEntry, _entry(ips=False)]], _LIST, BeforeValidator(_no_entries_is_empty)
]
IpEntries = Annotated[
    list[Annotated[ListEntry, _entry(ips=True)]], _LIST, BeforeValidator(_no_entries_is_empty)
]


class ListsShape(Shape):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True
    )
    deny_users: Entries = Field(default_factory=list)
    deny_devices: Entries = Field(default_factory=list)
    deny_ips: IpEntries = Field(default_factory=list)
    allow_users: Entries = Field(default_factory=list)
    allow_devices: Entries = Field(default_factory=list)
    allow_ips: IpEntries = Field(default_factory=list)


class RiskShape(Shape):
    rules: Annotated[
        list[Any],
        listing(f"must be a list of at most {MAX_RULES} rules", max_items=MAX_RULES, required=True),
    ] = Field(default_factory=list)
    lists: Annotated[
        ListsShape | None, mapping("must be an object of deny_* and allow_* lists")
    ] = None
    run_alert_per_minute: Annotated[int | None, integer(minimum=1)] = None


class SectionShape(Shape):
    """What risk is configured with: its section and the zone."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    timezone: Timezone = "UTC"
    risk: Annotated[
        RiskShape,
        mapping("is required and must be an object with rules and lists", required=True),
    ] = REQUIRED


def parse_risk(section: Mapping[str, Any]) -> RiskProgram:
    """Validates the section; raises ``ProgramInvalid`` with every error found."""
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    problems: list[str] = []
    risk = section.get("risk")
    raw_rules = risk.get("rules") if isinstance(risk, Mapping) else None
    rules: list[Rule] = []
    codes: set[str] = set()
    # Rules are read one by one, whatever else is wrong.
    for index, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        path = f"risk.rules[{index}]"
        rule = _rule(validated(RuleShape, raw, path, problems), path, problems)
        if rule is None:
            continue
        if rule.code in codes:
            problems.append(f"{path}.code: duplicate rule {rule.code!r}")
            continue
        codes.add(rule.code)
        rules.append(rule)
    shape = validated(SectionShape, section, "", problems)
    raise_if_any(problems)
    assert shape is not None
    lists = shape.risk.lists
    thresholds = {r.code: r.alert_per_minute for r in rules if r.alert_per_minute is not None}
    return RiskProgram(
        tuple(rules),
        Lists(**{name: tuple(getattr(lists, name) or ()) for name in _LISTS}) if lists else Lists(),
        shape.risk.run_alert_per_minute,
        thresholds,
    )


def _rule(shape: RuleShape | None, path: str, problems: list[str]) -> Rule | None:
    """A rule's kind from the keys it has: max, max_distinct_users, account_age_under or
    amount_over (in that order)."""
    if shape is None:
        return None
    common: dict[str, Any] = {
        "code": shape.code,
        "action": shape.action,
        "decision": shape.decision,
        "alert_per_minute": shape.alert_per_minute,
        "fail_closed": shape.on_redis_down,
    }
    if shape.max is not None or shape.max_distinct_users is not None:
        distinct = shape.max_distinct_users is not None
        allowed = ("device", "ip") if distinct else ("user", "device", "ip")
        per = shape.per if shape.per is not None else "user"
        if per not in allowed:
            problems.append(f"{path}.per: must be one of {', '.join(allowed)}")
        if shape.window is None:
            problems.append(
                f"{path}.window: must be a duration such as 30s, 1m, 1h or 1d (at most 31d)"
            )
        if per not in allowed or shape.window is None:
            return None
        return Rule(
            kind=RuleKind.DISTINCT_USERS if distinct else RuleKind.VELOCITY,
            per=per,
            max=(shape.max_distinct_users if distinct else shape.max) or 1,
            window=shape.window,
            **common,
        )
    if shape.account_age_under is not None:
        over = shape.price_points_over if shape.price_points_over is not None else shape.amount_over
        return Rule(
            kind=RuleKind.ACCOUNT_AGE,
            account_age_under=shape.account_age_under,
            amount_over=over or 0,
            **common,
        )
    if shape.amount_over is not None:
        return Rule(kind=RuleKind.AMOUNT, amount_over=shape.amount_over, **common)
    problems.append(
        f"{path}: needs max (velocity), max_distinct_users, account_age_under or amount_over"
    )
    return None
