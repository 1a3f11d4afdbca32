"""The levels domain rules, pure, with a fake clock: configuration, coefficients and rounding,
the daily cap across local midnight, requalify at the period boundary, decay, badge streaks,
and the tier as a pure function of growth."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumbing.clock import FakeClock
from services.levels.domain.badges import badges_reached, run_length
from services.levels.domain.growth import coefficient_for, decide_growth
from services.levels.domain.periods import (
    Period,
    add_months,
    local_day,
    next_period_start,
    period_start,
    window_start,
)
from services.levels.domain.program import (
    DowngradePolicy,
    LevelsProgram,
    ProgramInvalid,
    Tier,
    parse_levels,
)
from services.levels.domain.tiers import decayed_growth, evaluate, rank
from tests.programs import example_program, levels_section

SHANGHAI = ZoneInfo("Asia/Shanghai")


def program_with(downgrade: dict[str, object] | None = None, **levels: object) -> LevelsProgram:
    section = levels_section()
    if downgrade is not None:
        section["levels"]["downgrade"] = downgrade
    section["levels"].update(levels)
    return parse_levels(section)


@pytest.fixture
def program() -> LevelsProgram:
    return parse_levels(levels_section())


def code(tier: Tier | None) -> str:
    return tier.code if tier is not None else ""


def tier_named(program: LevelsProgram, name: str) -> Tier:
    tier = program.tier(name)
    assert tier is not None
    return tier


def tier_of(program: LevelsProgram, growth: dict[date, int], today: date, grant=None) -> str:
    standing = evaluate(program, growth, today, grant)
    return code(standing.tier) if standing.tier else ""


# --- configuration -------------------------------------------------------------------------


def test_the_example_program_parses(program: LevelsProgram) -> None:
    assert [t.code for t in program.tiers] == ["rookie", "actor", "star", "legend"]
    assert tier_named(program, "legend").invite_only
    assert tier_named(program, "actor").perks == {"dm_per_day": "20", "hd_streams": "true"}
    assert program.growth_daily_cap == 200
    assert program.coefficients == {"kol": Decimal("1.5"), "verified_creator": Decimal("1.2")}
    assert program.downgrade.policy is DowngradePolicy.REQUALIFY
    assert program.downgrade.period is Period.YEARLY
    assert [(b.code, b.kind.value, b.action, b.target) for b in program.badges] == [
        ("streak_7", "streak", "sign_in", 7),
        ("streak_30", "streak", "sign_in", 30),
        ("critic_100", "count", "comment", 100),
    ]


def test_every_error_is_reported_with_its_path() -> None:
    broken = example_program()
    broken["levels"]["tiers"][2]["threshold"] = 500
    broken["levels"]["tiers"][0]["colour"] = "red"
    broken["levels"]["downgrade"] = {"policy": "sometimes"}
    broken["levels"]["growth_coefficients"]["kol"] = -1
    broken["levels"]["growth_daily_cap"] = 0
    broken["badges"][1]["rule"] = {"streak": "sign_in"}
    broken["badges"][2]["rule"] = {"visits": 3}
    with pytest.raises(ProgramInvalid) as caught:
        parse_levels(levels_section(broken))
    assert set(caught.value.errors) == {
        "levels.growth_daily_cap: must be >= 1",
        "levels.downgrade.policy: must be one of none, requalify, decay",
        "levels.tiers[0].colour: unknown key",
        "levels.tiers[2].threshold: must be greater than 1000 (the tier before): tiers go "
        "lowest first",
        "levels.growth_coefficients.kol: must be > 0 and at most 100",
        "badges[1].rule.days: must be an integer",
        "badges[2].rule: must be {streak: ACTION, days: N} or {count: ACTION, at_least: N}",
    }


def test_decay_needs_a_percent_and_none_takes_no_period() -> None:
    with pytest.raises(ProgramInvalid) as caught:
        program_with({"policy": "decay"})
    assert caught.value.errors == ["levels.downgrade.percent: must be an integer"]
    with pytest.raises(ProgramInvalid) as caught:
        program_with({"policy": "none", "period": "yearly"})
    assert caught.value.errors == [
        "levels.downgrade.period: only applies to policy requalify or decay"
    ]
    decay = program_with({"policy": "decay", "percent": 10})
    assert decay.downgrade.period is Period.MONTHLY


def test_only_invite_only_tiers_is_refused() -> None:
    section = levels_section()
    section["levels"]["tiers"] = [{"code": "vip", "threshold": 0, "invite_only": True}]
    with pytest.raises(ProgramInvalid) as caught:
        parse_levels(section)
    assert caught.value.errors == [
        "levels.tiers: at least one tier must be reachable by growth (not invite_only)"
    ]


# --- coefficients and rounding -------------------------------------------------------------


def test_coefficient_one_and_a_half_rounds_down(program: LevelsProgram) -> None:
    kol = coefficient_for({"kol": "true"}, program.coefficients)
    assert kol == Decimal("1.5")
    assert decide_growth(10, kol, 0, 200, False).awarded == 15
    # 5 x 1.5 = 7.5: rounded down, a coefficient never pays a fraction.
    assert decide_growth(5, kol, 0, 200, False).awarded == 7
    assert decide_growth(1, kol, 0, 200, False).awarded == 1
    assert decide_growth(5, kol, 0, 200, False).notes == ("coefficient",)
    # 1.2 is exactly 1.2 (not the float nearest to it): 5 x 1.2 = 6, 3 x 1.2 = 3.6 -> 3.
    creator = coefficient_for({"verified_creator": "yes"}, program.coefficients)
    assert decide_growth(5, creator, 0, None, False).awarded == 6
    assert decide_growth(3, creator, 0, None, False).awarded == 3


def test_the_best_matching_coefficient_applies(program: LevelsProgram) -> None:
    both = {"kol": "1", "verified_creator": "true"}
    assert coefficient_for(both, program.coefficients) == Decimal("1.5")
    assert coefficient_for({"kol": "false"}, program.coefficients) == 1
    assert coefficient_for({}, program.coefficients) == 1
    assert coefficient_for({"region": "cn"}, {"region=cn": Decimal("1.1")}) == Decimal("1.1")
    assert coefficient_for({"region": "us"}, {"region=cn": Decimal("1.1")}) == 1
    # A coefficient below 1 applies when it is the only match.
    assert coefficient_for({"probation": "true"}, {"probation": Decimal("0.5")}) == Decimal("0.5")


def test_daily_cap_resets_at_local_midnight(program: LevelsProgram) -> None:
    """Asia/Shanghai: 23:50 and 00:10 local are the same UTC date but two local days."""
    clock = FakeClock(datetime(2026, 3, 5, 15, 50, tzinfo=UTC))  # 23:50 in Shanghai
    counted: dict[date, int] = {}

    def add(amount: int, exempt: bool = False) -> tuple[int, tuple[str, ...]]:
        day = local_day(clock.now(), program.zone)
        decision = decide_growth(
            amount, Decimal(1), counted.get(day, 0), program.growth_daily_cap, exempt
        )
        counted[day] = counted.get(day, 0) + decision.counted
        return decision.awarded, decision.notes

    assert add(150) == (150, ())
    assert add(100) == (50, ("daily_cap",))
    assert add(30) == (0, ("daily_cap",))
    # Purchases are exempt, and do not use up the cap either.
    assert add(500, exempt=True) == (500, ())
    clock.advance(timedelta(minutes=20))  # 00:10 local, the next day; still 2026-03-05 in UTC
    assert clock.now().date() == date(2026, 3, 5)
    assert add(150) == (150, ())
    assert add(100) == (50, ("daily_cap",))


# --- requalify -----------------------------------------------------------------------------


def test_periods_are_calendar_aligned() -> None:
    assert period_start(date(2026, 5, 17), Period.QUARTERLY) == date(2026, 4, 1)
    assert next_period_start(date(2026, 12, 31), Period.MONTHLY) == date(2027, 1, 1)
    assert next_period_start(date(2026, 11, 30), Period.QUARTERLY) == date(2027, 1, 1)
    assert window_start(date(2027, 3, 5), Period.YEARLY) == date(2026, 3, 6)
    assert window_start(date(2026, 3, 31), Period.MONTHLY) == date(2026, 3, 1)
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2024, 2, 29), -12) == date(2023, 2, 28)


def test_yearly_requalify_downgrades_exactly_at_the_period_boundary(
    program: LevelsProgram,
) -> None:
    """10,000 earned in 2026 keeps star through 2027; 2027 earned 2,000, so at local midnight
    of 2028-01-01 (16:00 UTC on 2027-12-31) the member becomes an actor."""
    growth = {date(2026, 6, 1): 10_000, date(2027, 6, 1): 2_000}
    clock = FakeClock(datetime(2026, 6, 1, 4, 0, tzinfo=UTC))
    assert tier_of(program, growth, local_day(clock.now(), SHANGHAI)) == "star"
    clock.set(datetime(2027, 12, 31, 15, 59, 59, tzinfo=UTC))  # 23:59:59 local
    last_day = local_day(clock.now(), SHANGHAI)
    assert tier_of(program, growth, last_day) == "star"
    standing = evaluate(program, growth, last_day)
    assert standing.period_ends == date(2028, 1, 1)
    assert standing.growth_to_keep_tier == 8_000
    clock.advance(timedelta(seconds=1))  # 00:00:00 local on 2028-01-01
    assert tier_of(program, growth, local_day(clock.now(), SHANGHAI)) == "actor"
    # And at the next boundary, with nothing earned in 2028, down to the base tier.
    assert tier_of(program, growth, date(2028, 12, 31)) == "actor"
    assert tier_of(program, growth, date(2029, 1, 1)) == "rookie"


def test_requalify_rises_mid_period_on_trailing_growth_and_keeps_it(
    program: LevelsProgram,
) -> None:
    # 6,000 late in 2026 and 4,000 early in 2027: the trailing year reaches 10,000 in March.
    growth = {date(2026, 11, 1): 6_000, date(2027, 3, 1): 4_000}
    assert tier_of(program, growth, date(2027, 2, 28)) == "actor"
    standing = evaluate(program, growth, date(2027, 3, 1))
    assert code(standing.tier) == "star"
    assert standing.qualifying_growth == 10_000
    # In November 2027 the 2026 growth has left the trailing year, but the tier holds until
    # the period ends: 2027 earned 4,000, so 2028 starts as an actor.
    later = evaluate(program, growth, date(2027, 11, 15))
    assert code(later.tier) == "star"
    assert later.qualifying_growth == 4_000
    assert later.growth_to_keep_tier == 6_000
    assert tier_of(program, growth, date(2028, 1, 1)) == "actor"


# --- decay ---------------------------------------------------------------------------------


def test_decay_takes_the_percent_for_every_idle_period() -> None:
    program = program_with({"policy": "decay", "percent": 10, "period": "monthly"})
    growth = {date(2026, 1, 10): 1_100}
    assert decayed_growth(growth, Period.MONTHLY, 10, date(2026, 1, 31)) == 1_100
    assert tier_of(program, growth, date(2026, 2, 28)) == "actor"  # February not over yet
    assert decayed_growth(growth, Period.MONTHLY, 10, date(2026, 3, 1)) == 990  # Feb idle
    assert tier_of(program, growth, date(2026, 3, 1)) == "rookie"
    assert decayed_growth(growth, Period.MONTHLY, 10, date(2026, 4, 1)) == 891  # and March
    # Growth in April: no decay for April, and the tier comes back with it.
    growth[date(2026, 4, 2)] = 200
    assert decayed_growth(growth, Period.MONTHLY, 10, date(2026, 5, 1)) == 1_091
    assert tier_of(program, growth, date(2026, 5, 1)) == "actor"
    standing = evaluate(program, growth, date(2026, 5, 1))
    assert code(standing.next_tier) == "star"
    assert standing.growth_to_next_tier == 10_000 - 1_091


# --- grants --------------------------------------------------------------------------------


def test_a_grant_holds_and_says_so(program: LevelsProgram) -> None:
    growth = {date(2026, 6, 1): 1_500}
    standing = evaluate(program, growth, date(2026, 6, 2), "legend")
    assert code(standing.tier) == "legend"
    assert standing.granted
    assert code(standing.growth_tier) == "actor"
    assert standing.next_tier is None
    # A grant below the growth tier does not decide the tier, and says so.
    lower = evaluate(program, growth, date(2026, 6, 2), "rookie")
    assert code(lower.tier) == "actor"
    assert not lower.granted


# --- badges --------------------------------------------------------------------------------


def test_a_badge_streak_broken_by_one_missed_day(program: LevelsProgram) -> None:
    start = date(2026, 3, 1)
    days = {start + timedelta(days=i) for i in range(6)}  # six days in a row
    days |= {start + timedelta(days=7), start + timedelta(days=8)}  # day 7 missed
    today = start + timedelta(days=8)
    assert run_length(days, today) == 2
    assert badges_reached(program.badges, "sign_in", run_length(days, today), 0, set()) == []
    # The missing day arrives late (an event recorded out of order): the run is whole.
    days.add(start + timedelta(days=6))
    assert run_length(days, start + timedelta(days=6)) == 9
    earned = badges_reached(program.badges, "sign_in", 9, 0, set())
    assert [b.code for b in earned] == ["streak_7"]
    assert earned[0].reward_points == 5
    # A badge is earned once.
    assert badges_reached(program.badges, "sign_in", 9, 0, {"streak_7"}) == []


def test_a_count_badge(program: LevelsProgram) -> None:
    assert badges_reached(program.badges, "comment", 0, 99, set()) == []
    assert [b.code for b in badges_reached(program.badges, "comment", 0, 100, set())] == [
        "critic_100"
    ]


# --- the tier is a pure function of (growth, policy, grant, day) ---------------------------

POLICIES: list[dict[str, object]] = [
    {"policy": "none"},
    {"policy": "requalify", "period": "yearly"},
    {"policy": "requalify", "period": "quarterly"},
    {"policy": "requalify", "period": "monthly"},
    {"policy": "decay", "percent": 25, "period": "monthly"},
    {"policy": "decay", "percent": 10, "period": "quarterly"},
]
BASE = date(2026, 1, 1)

entries = st.lists(st.tuples(st.integers(0, 900), st.integers(0, 6_000)), min_size=0, max_size=40)


def by_day(events: list[tuple[int, int]]) -> dict[date, int]:
    growth: dict[date, int] = {}
    for offset, amount in events:
        day = BASE + timedelta(days=offset)
        growth[day] = growth.get(day, 0) + amount
    return growth


def coarse(program: LevelsProgram, growth: dict[date, int], today: date) -> dict[date, int]:
    """What the store passes instead of every day (store/members.py: growth_by_day)."""
    downgrade = program.downgrade
    if downgrade.policy is DowngradePolicy.NONE:
        return {today: sum(a for d, a in growth.items() if d <= today)}
    if downgrade.policy is DowngradePolicy.DECAY:
        periods: dict[date, int] = {}
        for day, amount in growth.items():
            if day <= today:
                start = period_start(day, downgrade.period)
                periods[start] = periods.get(start, 0) + amount
        return periods
    first = add_months(period_start(today, downgrade.period), -downgrade.period.months)
    return {d: a for d, a in growth.items() if first <= d <= today}


@settings(max_examples=300, deadline=None)
@given(
    events=entries,
    policy=st.sampled_from(POLICIES),
    grant=st.sampled_from([None, "rookie", "actor", "legend"]),
    today_offset=st.integers(0, 1_100),
    order=st.randoms(),
)
def test_the_tier_is_a_pure_function_of_growth_policy_grant_and_day(
    events, policy, grant, today_offset, order
) -> None:
    program = program_with(policy)
    today = BASE + timedelta(days=today_offset)
    first = evaluate(program, by_day(events), today, grant)
    shuffled = list(events)
    order.shuffle(shuffled)
    # Any order of events, and evaluating again, gives the same standing.
    assert evaluate(program, by_day(shuffled), today, grant) == first
    assert evaluate(program, by_day(events), today, grant) == first
    # The store's coarser sums give the same standing as every day.
    assert evaluate(program, coarse(program, by_day(events), today), today, grant) == first
    # A grant is a floor that is never silent.
    if grant is not None:
        assert rank(first.tier) >= tier_named(program, grant).rank
        assert first.granted == (rank(program.tier(grant)) >= rank(first.growth_tier))
    # Growth never reaches an invite-only tier.
    assert first.growth_tier is None or not first.growth_tier.invite_only


@settings(max_examples=200, deadline=None)
@given(events=entries, extra=st.tuples(st.integers(0, 900), st.integers(1, 6_000)))
def test_more_growth_never_lowers_the_tier(events, extra) -> None:
    for policy in POLICIES:
        program = program_with(dict(policy))
        today = BASE + timedelta(days=900)
        before = evaluate(program, by_day(events), today)
        after = evaluate(program, by_day([*events, extra]), today)
        assert rank(after.tier) >= rank(before.tier), policy
