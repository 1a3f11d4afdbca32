"""Deciding an event: lists first (the deny list wins over everything; the allow list
short-circuits the rules), then the rules that need no counter (account age, amount), then the
counted ones (velocity, distinct users), whose counts come from Redis.

Counted windows slide: each is the last ``window`` before the event, not a calendar bucket, so
a farmer cannot get 2N through by straddling a bucket boundary. The store keeps each window as
a sorted set of (member, time) capped at max+1 members, so memory stays bounded and a rule that
is over stays over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.risk.domain.program import ListEntry, RiskProgram, Rule, RuleKind, Verdict

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# What a run-rate counter (挤兑) is about, in the event's attributes.
RUN_SUBJECTS = ("sku", "prize", "pool")


@dataclass(frozen=True)
class Event:
    action: str
    user_id: str
    device_id: str = ""
    ip: IpAddress | None = None
    amount: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)
    account_created_at: datetime | None = None


@dataclass(frozen=True)
class Count:
    """One window to count the event in, and what it means if it is over."""

    rule: str
    # The subject's key part, e.g. "user:u1" or "ip:10.0.0.1".
    subject: str
    distinct: bool
    window_ms: int
    max: int
    # What is counted: the request (velocity) or the user (distinct users).
    member: str
    # None for an alert-only counter (run rate).
    verdict: Verdict | None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    rules: tuple[str, ...] = ()
    # 0 allow; 60 per deny rule and 30 per review rule that fired, at most 100.
    score: int = 0


def _score(verdicts: Iterable[Verdict]) -> int:
    weights = {Verdict.DENY: 60, Verdict.REVIEW: 30, Verdict.ALLOW: 0}
    return min(100, sum(weights[v] for v in verdicts))


def _listed(entries: Iterable[ListEntry], value: str, now: datetime) -> bool:
    return bool(value) and any(e.value == value and e.live(now) for e in entries)


def _ip_listed(entries: Iterable[ListEntry], ip: IpAddress | None, now: datetime) -> bool:
    if ip is None:
        return False
    return any(e.live(now) and ip in ipaddress.ip_network(e.value, strict=False) for e in entries)


def by_lists(program: RiskProgram, event: Event, now: datetime) -> Outcome | None:
    """The lists' decision, or None when no list has the event."""
    lists = program.lists
    if _listed(lists.deny_users, event.user_id, now):
        return Outcome(Verdict.DENY, ("deny_list:user",), 100)
    if _listed(lists.deny_devices, event.device_id, now):
        return Outcome(Verdict.DENY, ("deny_list:device",), 100)
    if _ip_listed(lists.deny_ips, event.ip, now):
        return Outcome(Verdict.DENY, ("deny_list:ip",), 100)
    if (
        _listed(lists.allow_users, event.user_id, now)
        or _listed(lists.allow_devices, event.device_id, now)
        or _ip_listed(lists.allow_ips, event.ip, now)
    ):
        return Outcome(Verdict.ALLOW, ("allow_list",), 0)
    return None


def static_rules(program: RiskProgram, event: Event, now: datetime) -> list[Rule]:
    """The rules that need no counter and fire for this event."""
    fired = []
    for rule in program.rules:
        if not rule.applies_to(event.action) or rule.counted:
            continue
        if (rule.kind is RuleKind.AMOUNT and event.amount > rule.amount_over) or (
            rule.kind is RuleKind.ACCOUNT_AGE
            and event.account_created_at is not None
            and now - event.account_created_at < rule.account_age_under
            and event.amount > rule.amount_over
        ):
            fired.append(rule)
    return fired


def counts(program: RiskProgram, event: Event, request_id: str) -> list[Count]:
    """The windows this event is counted in (a rule whose subject the event lacks, such as a
    device rule for an event without a device, does not count it)."""
    subjects = {
        "user": event.user_id,
        "device": event.device_id,
        "ip": str(event.ip) if event.ip is not None else "",
    }
    found = []
    for rule in program.rules:
        if not rule.counted or not rule.applies_to(event.action):
            continue
        subject = subjects.get(rule.per, "")
        if not subject:
            continue
        distinct = rule.kind is RuleKind.DISTINCT_USERS
        found.append(
            Count(
                rule=rule.code,
                subject=f"{rule.per}:{subject}",
                distinct=distinct,
                window_ms=int(rule.window.total_seconds() * 1000),
                max=rule.max,
                member=event.user_id if distinct else request_id,
                verdict=rule.decision,
            )
        )
    if program.run_alert_per_minute is not None:
        for name in RUN_SUBJECTS:
            if event.attributes.get(name):
                found.append(
                    Count(
                        rule=f"run:{name}",
                        subject=f"{name}:{event.attributes[name]}",
                        distinct=False,
                        window_ms=60_000,
                        max=program.run_alert_per_minute,
                        member=request_id,
                        verdict=None,
                    )
                )
    return found


def combine(fired: Sequence[Rule], counted: Sequence[Count]) -> Outcome:
    """The strongest verdict among the rules that fired (alert-only counters do not decide)."""
    verdicts = [rule.decision for rule in fired]
    codes = [rule.code for rule in fired]
    for count in counted:
        if count.verdict is not None:
            verdicts.append(count.verdict)
            codes.append(count.rule)
    return Outcome(max(verdicts, default=Verdict.ALLOW), tuple(codes), _score(verdicts))


def without_counters(program: RiskProgram, event: Event) -> list[Rule]:
    """With Redis down: the counted rules of this action that fail closed (they fire)."""
    return [
        rule
        for rule in program.rules
        if rule.counted and rule.applies_to(event.action) and rule.fails_closed(event.action)
    ]
