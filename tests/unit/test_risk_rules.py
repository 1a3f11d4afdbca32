"""The risk rules, pure, with a fake clock: the program, lists (deny wins, allow short-circuits,
entries expire, networks match), account age and amount, what is counted, and how each rule
fails with Redis down."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from plumbing.clock import FakeClock
from services.risk.domain.decide import (
    Event,
    by_lists,
    combine,
    counts,
    static_rules,
    without_counters,
)
from services.risk.domain.program import (
    ProgramInvalid,
    RiskProgram,
    RuleKind,
    Verdict,
    parse_risk,
)
from tests.programs import example_program, risk_section

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def program() -> RiskProgram:
    return parse_risk(risk_section())


def with_lists(**lists: object) -> RiskProgram:
    section = risk_section()
    section["risk"]["lists"] = lists
    return parse_risk(section)


def test_the_example_program_parses(program: RiskProgram) -> None:
    kinds = {rule.code: (rule.kind, rule.decision) for rule in program.rules}
    assert kinds == {
        "velocity-user": (RuleKind.VELOCITY, Verdict.DENY),
        "shared-device": (RuleKind.DISTINCT_USERS, Verdict.REVIEW),
        "shared-ip-redeem": (RuleKind.DISTINCT_USERS, Verdict.REVIEW),
        "new-account-high-value": (RuleKind.ACCOUNT_AGE, Verdict.DENY),
        "gift-farming": (RuleKind.VELOCITY, Verdict.DENY),
        "referral-farming": (RuleKind.DISTINCT_USERS, Verdict.DENY),
    }
    velocity = program.rules[0]
    assert (velocity.max, velocity.window, velocity.action) == (60, timedelta(minutes=1), "*")


def test_every_error_is_reported_with_its_path() -> None:
    broken = example_program()
    rules = broken["risk"]["rules"]
    rules[0]["window"] = "a while"
    rules[1]["per"] = "user"
    rules[2]["decision"] = "allow"
    rules[3]["account_age_under"] = "soon"
    rules[4]["on_redis_down"] = "maybe"
    broken["risk"]["lists"]["deny_ips"] = ["10.0.0.999"]
    with pytest.raises(ProgramInvalid) as caught:
        parse_risk(risk_section(broken))
    assert caught.value.errors == [
        "risk.rules[0].window: must be a duration such as 30s, 1m, 1h or 1d (at most 31d)",
        "risk.rules[1].per: must be one of device, ip",
        "risk.rules[2].decision: must be deny or review",
        "risk.rules[3].account_age_under: must be a duration such as 24h or 7d",
        "risk.rules[4].on_redis_down: must be open or closed",
        "risk.lists.deny_ips[0]: '10.0.0.999' is not an IP address or network",
    ]


def test_the_deny_list_wins_and_the_allow_list_short_circuits() -> None:
    program = with_lists(allow_users=["vip"], deny_devices=["bad-phone"])
    assert by_lists(program, Event("redeem", "vip"), NOW).verdict is Verdict.ALLOW  # type: ignore[union-attr]
    denied = by_lists(program, Event("redeem", "vip", device_id="bad-phone"), NOW)
    assert denied is not None
    assert (denied.verdict, denied.rules, denied.score) == (
        Verdict.DENY,
        ("deny_list:device",),
        100,
    )
    assert by_lists(program, Event("redeem", "someone"), NOW) is None


def test_list_entries_expire_and_networks_match() -> None:
    clock = FakeClock(NOW)
    program = with_lists(
        deny_ips=["10.1.0.0/16", {"value": "192.0.2.7", "until": "2026-11-25T13:00:00Z"}]
    )
    inside = Event("draw", "u", ip=ipaddress.ip_address("10.1.200.3"))
    assert by_lists(program, inside, clock.now()) is not None
    temporary = Event("draw", "u", ip=ipaddress.ip_address("192.0.2.7"))
    assert by_lists(program, temporary, clock.now()) is not None
    clock.advance(timedelta(hours=1))
    assert by_lists(program, temporary, clock.now()) is None


def test_a_new_account_moving_high_value_is_denied(program: RiskProgram) -> None:
    young = Event("redeem", "u", amount=10_001, account_created_at=NOW - timedelta(hours=23))
    assert [r.code for r in static_rules(program, young, NOW)] == ["new-account-high-value"]
    old = Event("redeem", "u", amount=10_001, account_created_at=NOW - timedelta(hours=25))
    assert static_rules(program, old, NOW) == []
    cheap = Event("redeem", "u", amount=10_000, account_created_at=NOW - timedelta(hours=1))
    assert static_rules(program, cheap, NOW) == []
    outcome = combine(static_rules(program, young, NOW), [])
    assert (outcome.verdict, outcome.score) == (Verdict.DENY, 60)


def test_what_is_counted(program: RiskProgram) -> None:
    ip = ipaddress.ip_address("198.51.100.4")
    windows = counts(program, Event("redeem", "u1", device_id="d1", ip=ip), "r1")
    assert [(c.rule, c.subject, c.member) for c in windows] == [
        ("velocity-user", "user:u1", "r1"),
        ("shared-ip-redeem", "ip:198.51.100.4", "u1"),
    ]
    # A device rule does not count an event without a device.
    assert [c.rule for c in counts(program, Event("register", "u1"), "r2")] == ["velocity-user"]


def test_with_redis_down_value_moves_fail_closed_and_earning_fails_open(program) -> None:
    assert [r.code for r in without_counters(program, Event("redeem", "u"))] == [
        "velocity-user",
        "shared-ip-redeem",
    ]
    assert combine(without_counters(program, Event("redeem", "u")), []).verdict is Verdict.DENY
    assert without_counters(program, Event("sign_in", "u")) == []
    section = risk_section()
    section["risk"]["rules"][0]["on_redis_down"] = "closed"
    closed = parse_risk(section)
    assert [r.code for r in without_counters(closed, Event("sign_in", "u"))] == ["velocity-user"]
