"""The points domain rules, pure, with a fake clock: earning, streaks, caps, expiry, lots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumbing.clock import FakeClock
from plumbing.errors import InvalidArgument
from services.points.domain.earning import EarnState, Streak, decide_earn, limit_penalty
from services.points.domain.expiry import add_months, is_expired, local_day, lot_expires_at
from services.points.domain.lots import LotSlice, allocate, pay_debt_first, split_expired
from services.points.domain.program import (
    Expiry,
    ExpiryPolicy,
    PointsProgram,
    ProgramInvalid,
    parse_program,
)
from tests.programs import example_program, points_section

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def program() -> PointsProgram:
    return parse_program(points_section())


def earn_once(
    program: PointsProgram,
    action: str,
    clock: FakeClock,
    state: EarnState,
    quantity: int = 0,
    **attributes: str,
) -> tuple[int, tuple[str, ...], EarnState, int]:
    day = local_day(clock.now(), program.zone)
    decision = decide_earn(program, program.rules.get(action), quantity, attributes, day, state)
    return decision.points, decision.notes, decision.state, decision.streak_days


def test_the_example_program_parses(program: PointsProgram) -> None:
    assert program.money_rate == 100
    assert program.expiry == Expiry(ExpiryPolicy.ROLLING, 12)
    assert program.daily_cap == 100
    assert program.rules["sign_in"].streak_bonus == ((7, 20), (30, 100))
    assert program.rules["purchase"].counts_toward_daily_cap is False
    assert program.rules["malicious_complaint"].is_penalty


def test_every_error_is_reported_with_its_path() -> None:
    broken = example_program()
    broken["timezone"] = "Mars/Olympus"
    broken["points"]["expiry"] = {"policy": "sometimes"}
    broken["earning"][0]["once"] = "yes"
    broken["earning"][4] = {"action": "share", "points": 1}
    with pytest.raises(ProgramInvalid) as caught:
        parse_program(points_section(broken))
    assert caught.value.errors == [
        "timezone: unknown time zone 'Mars/Olympus'",
        "points.expiry.policy: must be one of rolling, calendar_year_end, never",
        "earning[0].once: must be true or false",
    ]


def test_a_streak_crosses_local_midnight_in_shanghai(program: PointsProgram) -> None:
    # 23:50 on 1 March in Shanghai is 15:50 UTC; twenty minutes later it is 2 March locally
    # while the UTC date is still 1 March. The streak counts local days.
    clock = FakeClock(datetime(2026, 3, 1, 15, 50, tzinfo=UTC))
    points, _, state, streak = earn_once(program, "sign_in", clock, EarnState())
    assert (points, streak) == (5, 1)
    clock.advance(timedelta(minutes=20))
    assert clock.now().date().isoformat() == "2026-03-01"
    points, _, state, streak = earn_once(program, "sign_in", clock, EarnState(streak=state.streak))
    assert (points, streak) == (5, 2)  # a new local day: sign_in's daily limit starts again
    for day in range(3, 8):
        clock.advance(timedelta(days=1))
        points, _, state, streak = earn_once(
            program, "sign_in", clock, EarnState(streak=state.streak)
        )
        # Days 3-6 pay 5; the seventh pays 5 + the 7-day bonus of 20.
        assert (points, streak) == ((25 if day == 7 else 5), day)
    # Twice on one local day: the daily limit, and no second bonus.
    points, notes, _, streak = earn_once(program, "sign_in", clock, state)
    assert (points, notes, streak) == (0, ("daily_limit",), 7)


def test_a_missed_local_day_starts_the_streak_again(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    _, _, state, streak = earn_once(program, "sign_in", clock, EarnState())
    clock.advance(timedelta(days=2))
    _, _, state, streak = earn_once(program, "sign_in", clock, EarnState(streak=state.streak))
    assert streak == 1


def test_the_same_local_day_does_not_lengthen_the_streak() -> None:
    streak = Streak().advance(datetime(2026, 1, 1).date())
    assert streak.advance(datetime(2026, 1, 1).date()) == streak
    assert streak.advance(datetime(2025, 12, 31).date()) == streak  # a late event


def test_the_daily_cap_pays_up_to_its_boundary_exactly(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    points, notes, state, _ = earn_once(program, "share", clock, EarnState(cap_points_today=80))
    assert (points, notes) == (20, ())  # 80 + 20 = 100: at the cap, not over it
    points, notes, state, _ = earn_once(program, "share", clock, state)
    assert (points, notes) == (0, ("daily_cap",))
    points, notes, _, _ = earn_once(program, "share", clock, EarnState(cap_points_today=81))
    assert (points, notes) == (19, ("daily_cap",))


def test_purchases_are_exempt_from_the_daily_cap(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    state = EarnState(cap_points_today=100)
    points, notes, after, _ = earn_once(program, "purchase", clock, state, amount_fen="99999")
    assert (points, notes, after.cap_points_today) == (999, (), 100)


def test_once_pays_once(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    points, _, state, _ = earn_once(program, "register", clock, EarnState())
    assert points == 50
    clock.advance(timedelta(days=400))
    assert earn_once(program, "register", clock, state)[:2] == (0, ("once",))


def test_negative_rules_take_points_but_never_below_zero(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    points, notes, _, _ = earn_once(program, "malicious_complaint", clock, EarnState())
    assert (points, notes) == (-50, ())
    assert limit_penalty(-50, 80) == (-50, ())
    assert limit_penalty(-50, 30) == (-30, ("insufficient_balance",))
    assert limit_penalty(-50, -10) == (0, ("insufficient_balance",))


def test_requirements_and_units(program: PointsProgram) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    assert earn_once(program, "comment", clock, EarnState(), length="19")[:2] == (
        0,
        ("requirement",),
    )
    assert earn_once(program, "comment", clock, EarnState(), length="20")[0] == 5
    points, notes, _state, _ = earn_once(program, "watch", clock, EarnState(), quantity=500)
    assert (points, notes) == (12, ("daily_limit",))
    with pytest.raises(InvalidArgument) as caught:
        earn_once(program, "purchase", clock, EarnState(), amount_fen="lots")
    assert caught.value.field == "attributes.amount_fen"


def test_rolling_expiry_ends_with_the_local_day_n_months_later() -> None:
    # Earned at 00:30 on 5 March in Shanghai (16:30 UTC on 4 March).
    earned = datetime(2026, 3, 4, 16, 30, tzinfo=UTC)
    expires = lot_expires_at(Expiry(ExpiryPolicy.ROLLING, 12), earned, SHANGHAI)
    assert expires is not None
    local = expires.astimezone(SHANGHAI)
    assert (local.date().isoformat(), local.hour, local.minute) == ("2027-03-05", 23, 59)
    assert not is_expired(expires, expires)
    assert is_expired(expires, expires + timedelta(microseconds=1))
    assert add_months(datetime(2026, 1, 31).date(), 1).isoformat() == "2026-02-28"


def test_calendar_year_end_and_never() -> None:
    earned = datetime(2026, 12, 31, 17, 0, tzinfo=UTC)  # 1 January 2027, 01:00 in Shanghai
    expires = lot_expires_at(Expiry(ExpiryPolicy.CALENDAR_YEAR_END), earned, SHANGHAI)
    assert expires is not None
    assert expires.astimezone(SHANGHAI).date().isoformat() == "2027-12-31"
    assert lot_expires_at(Expiry(ExpiryPolicy.NEVER), earned, SHANGHAI) is None


def test_debits_consume_the_soonest_expiring_lot_first() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    lots = [
        LotSlice(1, None, 100),
        LotSlice(2, now + timedelta(days=300), 50),
        LotSlice(3, now + timedelta(days=10), 30),
    ]
    taken = allocate(lots, 60)
    assert [(part.lot_id, part.amount) for part in taken] == [(3, 30), (2, 30)]
    with pytest.raises(ValueError, match="asked"):
        allocate(lots, 181)


def test_credits_pay_a_debt_first_and_dead_lots_are_split_off() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    parts = [LotSlice(1, now + timedelta(days=1), 40), LotSlice(2, now - timedelta(days=1), 10)]
    kept, paid = pay_debt_first(-30, parts[:1])
    assert (paid, [p.amount for p in kept]) == (30, [10])
    live, dead = split_expired(parts, now)
    assert ([p.lot_id for p in live], [p.lot_id for p in dead]) == ([1], [2])


@given(
    st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=20),
    st.data(),
)
def test_allocation_takes_exactly_the_amount_soonest_first(
    amounts: list[int], data: st.DataObject
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    lots = [
        LotSlice(i, base + timedelta(days=data.draw(st.integers(0, 100))), amount)
        for i, amount in enumerate(amounts)
    ]
    wanted = data.draw(st.integers(min_value=1, max_value=sum(amounts)))
    taken = allocate(lots, wanted)
    assert sum(part.amount for part in taken) == wanted
    by_id = {lot.lot_id: lot for lot in lots}
    assert all(part.amount <= by_id[part.lot_id].amount for part in taken)
    # Every lot expiring strictly before the last one touched was emptied.
    last = max(by_id[p.lot_id].expires_at or base for p in taken)
    for lot in lots:
        if lot.expires_at is not None and lot.expires_at < last:
            assert any(p.lot_id == lot.lot_id and p.amount == lot.amount for p in taken)


@given(st.integers(min_value=-500, max_value=500), st.integers(min_value=0, max_value=500))
def test_debt_is_paid_before_lots_get_anything(balance: int, credit: int) -> None:
    parts = [LotSlice(1, None, credit)] if credit else []
    kept, paid = pay_debt_first(balance, parts)
    assert paid + sum(p.amount for p in kept) == credit
    assert paid == min(credit, max(0, -balance))
