"""A member's tier: a pure function of their growth by local day, the policy, a grant and the day.

- ``none``: qualifying growth is all growth; the tier follows it up and down (a reversal).
- ``requalify`` (period P, calendar-aligned in the app's timezone): qualifying growth is the
  growth of the trailing period ending today. The tier rises as soon as trailing growth reaches
  a threshold and never falls inside a period; on the first day of each period it is re-set to
  what the period just ended earned. So with yearly periods, a member who earned 10,000 in 2026
  is a star through 2027-12-31 unless 2027 earns less, and at 2028-01-01 00:00 local time the
  tier follows 2027's growth.
- ``decay`` (period P, percent): qualifying growth is lifetime growth, except that it loses
  ``percent`` (rounded down) at the end of every period in which the member earned nothing.

A grant (ops, e.g. an invite-only tier) holds until revoked: the member's tier is the higher of
the grant and the growth tier, and ``granted`` says when the grant is what decides it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from services.levels.domain.periods import (
    Period,
    next_period_start,
    period_start,
    window_start,
)
from services.levels.domain.program import DowngradePolicy, LevelsProgram, Tier

# Why a tier changed (TierChange.reason).
REASON_GROWTH = "growth"
REASON_DOWNGRADE = "downgrade"
REASON_DECAY = "decay"
REASON_GRANT = "grant"
REASON_REVOKE = "revoke"
REASON_REVERSAL = "reversal"


@dataclass(frozen=True)
class Standing:
    # The member's tier (None only when no tier's threshold is 0 and growth is below them all).
    tier: Tier | None
    # The tier growth alone gives.
    growth_tier: Tier | None
    # True when an ops grant decides the tier.
    granted: bool
    qualifying_growth: int
    # The next tier growth can reach, and what it still takes.
    next_tier: Tier | None
    growth_to_next_tier: int
    # requalify: the first day of the next period, and the growth still needed by then to
    # keep the growth tier.
    period_ends: date | None = None
    growth_to_keep_tier: int = 0


def rank(tier: Tier | None) -> int:
    return -1 if tier is None else tier.rank


def tier_for_growth(program: LevelsProgram, growth: int) -> Tier | None:
    """The highest tier growth reaches, invite-only tiers left out."""
    best = None
    for tier in program.tiers:
        if not tier.invite_only and tier.threshold <= growth:
            best = tier
    return best


def _higher(a: Tier | None, b: Tier | None) -> Tier | None:
    return a if rank(a) >= rank(b) else b


class _Sums:
    """Growth summed over ranges of days, in O(log n) a range."""

    def __init__(self, growth_by_day: Mapping[date, int], today: date) -> None:
        self.days = sorted(d for d in growth_by_day if d <= today)
        self.prefix = [0]
        for day in self.days:
            self.prefix.append(self.prefix[-1] + growth_by_day[day])

    def between(self, first: date, last: date) -> int:
        lo = bisect.bisect_left(self.days, first)
        hi = bisect.bisect_right(self.days, last)
        return self.prefix[hi] - self.prefix[lo] if hi > lo else 0


def evaluate(
    program: LevelsProgram,
    growth_by_day: Mapping[date, int],
    today: date,
    granted_tier: str | None = None,
) -> Standing:
    """The member's standing on local day ``today``.

    ``growth_by_day`` is the member's net growth (awards minus reversals) per local day; days
    after ``today`` are ignored. A caller may pass coarser sums where the policy does not look
    closer: the all-time total on one day under ``none``, a total per period under ``decay``,
    and under ``requalify`` only the days since the start of the previous period."""
    downgrade = program.downgrade
    sums = _Sums(growth_by_day, today)
    period_ends: date | None = None
    keep = 0
    if downgrade.policy is DowngradePolicy.REQUALIFY:
        period = downgrade.period
        started = period_start(today, period)
        last_of_previous = started - timedelta(days=1)
        earned_previous = sums.between(window_start(last_of_previous, period), last_of_previous)
        growth_tier = tier_for_growth(program, earned_previous)
        # Inside a period the tier only rises: the best trailing growth of any day this period
        # (trailing growth only grows on days with growth, so those are the days to look at).
        for day in sums.days:
            if day >= started:
                trailing = sums.between(window_start(day, period), day)
                growth_tier = _higher(growth_tier, tier_for_growth(program, trailing))
        qualifying = sums.between(window_start(today, period), today)
        period_ends = next_period_start(today, period)
        if growth_tier is not None:
            last_day = period_ends - timedelta(days=1)
            already = sums.between(window_start(last_day, period), today)
            keep = max(0, growth_tier.threshold - already)
    elif downgrade.policy is DowngradePolicy.DECAY:
        qualifying = decayed_growth(growth_by_day, downgrade.period, downgrade.percent, today)
        growth_tier = tier_for_growth(program, qualifying)
    else:
        qualifying = sums.between(date.min, today)
        growth_tier = tier_for_growth(program, qualifying)

    grant = program.tier(granted_tier) if granted_tier else None
    tier = _higher(growth_tier, grant) if grant is not None else growth_tier
    next_tier = next((t for t in program.tiers if t.rank > rank(tier) and not t.invite_only), None)
    return Standing(
        tier=tier,
        growth_tier=growth_tier,
        granted=grant is not None and rank(grant) >= rank(growth_tier),
        qualifying_growth=qualifying,
        next_tier=next_tier,
        growth_to_next_tier=max(0, next_tier.threshold - qualifying) if next_tier else 0,
        period_ends=period_ends,
        growth_to_keep_tier=keep,
    )


def decayed_growth(
    growth_by_day: Mapping[date, int], period: Period, percent: int, today: date
) -> int:
    """Lifetime growth, less ``percent`` (rounded down) for every complete period with none."""
    by_period: dict[date, int] = {}
    for day, amount in growth_by_day.items():
        if day <= today:
            start = period_start(day, period)
            by_period[start] = by_period.get(start, 0) + amount
    if not by_period:
        return 0
    current = period_start(today, period)
    start = min(by_period)
    balance = 0
    while start <= current:
        earned = by_period.get(start, 0)
        balance = max(0, balance + earned)
        following = next_period_start(start, period)
        if earned <= 0 and following <= today:
            balance = balance * (100 - percent) // 100
        start = following
    return balance


def change_reason(before: Tier | None, after: Tier | None, program: LevelsProgram) -> str:
    """Why a tier moved when growth was added or time passed: up is growth; down is the
    policy's doing (requalify's downgrade or decay)."""
    if rank(after) > rank(before):
        return REASON_GROWTH
    if program.downgrade.policy is DowngradePolicy.DECAY:
        return REASON_DECAY
    return REASON_DOWNGRADE
