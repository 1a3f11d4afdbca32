"""The pure rules of campaigns, audiences, segments, pending windows and referrals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.audiences import MemberSeen, Segment, audience_needs, segments_of
from gateway.domain.referrals import (
    AlreadyActive,
    AlreadyReferred,
    ReferralTerms,
    SelfReferral,
    check_referral,
    month_bounds,
)
from services.points.domain.campaigns import (
    Audience,
    Campaign,
    CampaignBook,
    Member,
    award_notes,
    decide_campaigns,
    pending_until,
)

WED = date(2026, 12, 2)  # a Wednesday
NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def campaign(**kw: object) -> Campaign:
    fields: dict[str, object] = {"code": "c", "name": "c", "actions": frozenset({"buy"})}
    fields.update(kw)
    return Campaign(**fields)  # type: ignore[arg-type]


def test_a_window_is_from_inclusive_to_exclusive_and_a_schedule_picks_weekdays() -> None:
    windowed = campaign(starts_on=WED, ends_before=WED + timedelta(days=1))
    assert windowed.runs_on(WED)
    assert not windowed.runs_on(WED - timedelta(days=1))
    assert not windowed.runs_on(WED + timedelta(days=1))
    wednesdays = campaign(weekdays=frozenset({2}))
    assert wednesdays.runs_on(WED)
    assert wednesdays.runs_on(WED + timedelta(days=7))
    assert not wednesdays.runs_on(WED + timedelta(days=1))


def test_extra_points_are_the_multipliers_share_rounded_down_plus_the_bonus() -> None:
    assert campaign(multiplier=Decimal(2)).extra_for(37) == 37
    assert campaign(multiplier=Decimal("1.5")).extra_for(5) == 2
    assert campaign(bonus_points=50).extra_for(5) == 50
    assert campaign(multiplier=Decimal(3), bonus_points=1).extra_for(10) == 21


def test_an_audience_matches_any_list_given_and_none_means_everyone() -> None:
    everyone = Audience()
    assert everyone.matches(Member())
    mixed = Audience(tiers=frozenset({"star"}), tags=frozenset({"vip"}))
    assert mixed.matches(Member(tier="star"))
    assert mixed.matches(Member(tier="rookie", tags=frozenset({"vip", "x"})))
    assert not mixed.matches(Member(tier="rookie", segments=frozenset({"vip"})))


def test_only_an_event_that_earned_points_of_its_own_matches() -> None:
    book = CampaignBook()
    paying = [campaign(bonus_points=10)]
    assert decide_campaigns(paying, book, "u", "buy", WED, Member(), 0) == []
    assert decide_campaigns(paying, book, "u", "buy", WED, Member(), -5) == []
    assert decide_campaigns(paying, book, "u", "other", WED, Member(), 5) == []
    [award] = decide_campaigns(paying, book, "u", "buy", WED, Member(), 5)
    assert (award.code, award.points, award.budget_cut) == ("c", 10, False)
    assert award_notes([award]) == ("campaign:c",)


def test_per_user_lifetime_counts_the_events_a_member_was_paid_for() -> None:
    once = [campaign(bonus_points=10, per_user_lifetime=1)]
    book = CampaignBook()
    assert decide_campaigns(once, book, "u", "buy", WED, Member(), 5)
    assert decide_campaigns(once, book, "u", "buy", WED, Member(), 5) == []
    assert decide_campaigns(once, book, "v", "buy", WED, Member(), 5)


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(min_value=1, max_value=500),
    already=st.integers(min_value=0, max_value=600),
    events=st.lists(st.integers(min_value=-3, max_value=80), max_size=40),
    bonus=st.integers(min_value=0, max_value=40),
    multiplier=st.sampled_from([Decimal(1), Decimal("1.5"), Decimal(2), Decimal(3)]),
)
def test_a_budget_is_never_exceeded_and_the_event_reaching_it_gets_what_is_left(
    budget: int, already: int, events: list[int], bonus: int, multiplier: Decimal
) -> None:
    if multiplier == 1 and bonus == 0:
        bonus = 1
    spend = [campaign(bonus_points=bonus, multiplier=multiplier, budget_points=budget)]
    book = CampaignBook(awarded={"c": already})
    paid = 0
    for n, own in enumerate(events):
        left = max(0, budget - already - paid)
        awards = decide_campaigns(spend, book, f"u{n}", "buy", WED, Member(), own)
        full = spend[0].extra_for(own) if own > 0 else 0
        got = sum(a.points for a in awards)
        assert got == min(full, left)
        assert any(a.budget_cut for a in awards) == (own > 0 and full > left)
        paid += got
    assert already + paid <= max(budget, already)
    assert book.awarded["c"] == already + paid


def test_pending_waits_from_when_the_event_happened() -> None:
    windows = {"purchase": timedelta(days=7)}
    assert pending_until(windows, "watch", NOW, NOW) is None
    assert pending_until(windows, "purchase", NOW, NOW) == NOW + timedelta(days=7)
    # A purchase reported 8 days late has already waited out its window.
    assert pending_until(windows, "purchase", NOW - timedelta(days=8), NOW) is None


def test_segments_first_seen_within_and_inactive_for() -> None:
    newcomer = Segment("newcomer", first_seen_within=timedelta(days=7))
    lapsed = Segment("lapsed", inactive_for=timedelta(days=30))
    fresh = MemberSeen(first_seen_at=NOW - timedelta(days=6), last_event_at=None)
    assert segments_of([newcomer, lapsed], fresh, NOW) == ["newcomer"]
    old = MemberSeen(first_seen_at=NOW - timedelta(days=90), last_event_at=NOW - timedelta(31))
    assert segments_of([newcomer, lapsed], old, NOW) == ["lapsed"]
    recent = MemberSeen(first_seen_at=NOW - timedelta(days=90), last_event_at=NOW)
    assert segments_of([newcomer, lapsed], recent, NOW) == []
    # Both conditions in one segment: both must hold.
    both = Segment("both", first_seen_within=timedelta(days=60), inactive_for=timedelta(days=30))
    assert not both.holds(old, NOW)


def test_audience_needs_say_what_an_actions_campaigns_judge() -> None:
    needs = audience_needs(
        {
            "campaigns": [
                {"code": "a", "actions": ["buy"], "audience": {"tiers": ["star"]}},
                {"code": "b", "actions": ["buy", "watch"], "audience": {"tags": ["vip"]}},
                {"code": "c", "actions": ["share"]},
            ]
        }
    )
    assert (needs["buy"].tier, needs["buy"].tags, needs["buy"].segments) == (True, True, False)
    assert (needs["watch"].tier, needs["watch"].tags) == (False, True)
    assert not (needs["share"].tier)
    assert not (needs["share"].tags)
    assert not (needs["share"].segments)
    assert "sign_in" not in needs


def test_referral_refusals_in_the_order_a_member_reads_them() -> None:
    with pytest.raises(SelfReferral):
        check_referral("a", "a", referred_before=True, active=True)
    with pytest.raises(AlreadyReferred):
        check_referral("a", "b", referred_before=True, active=True)
    with pytest.raises(AlreadyActive):
        check_referral("a", "b", referred_before=False, active=True)
    check_referral("a", "b", referred_before=False, active=False)


def test_a_qualifying_purchase_is_at_least_min_amount_fen() -> None:
    terms = ReferralTerms(200, 100, "purchase", 1000, timedelta(days=30), 20)
    assert terms.qualifies("purchase", {"amount_fen": "1000"})
    assert not terms.qualifies("purchase", {"amount_fen": "999"})
    assert not terms.qualifies("purchase", {"amount_fen": "lots"})
    assert not terms.qualifies("watch", {"amount_fen": "5000"})


def test_a_local_month_in_the_apps_zone() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    # 2026-11-30 17:00 UTC is already 1 December in Shanghai.
    start, end = month_bounds(datetime(2026, 11, 30, 17, 0, tzinfo=UTC), zone)
    assert (start.month, start.day, end.year, end.month) == (12, 1, 2027, 1)
