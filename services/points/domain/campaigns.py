"""Campaigns and pending points: which campaigns pay an event, how much, and within which
limits. Pure: the store reads the budgets and the member's use of each campaign, this decides,
the store writes back.

A campaign pays on top of an event's own points, never instead of them: only an event that
earned points of its own (> 0) can match, and what the campaign adds is not limited by the
rule's ``daily_limit`` or the program's ``daily_cap``, only by the campaign's ``per_user`` and
``budget_points``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

# Notes of an event's answer: a campaign that paid, and one whose budget cut what it paid.
CAMPAIGN_NOTE = "campaign:"
BUDGET_NOTE = "campaign_budget:"


@dataclass(frozen=True)
class Member:
    """The member as they were before the event: what an audience is judged on. The gateway
    knows these (tags, segments, tier) and sends them with the event."""

    tier: str = ""
    tags: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Audience:
    """A member matches when they match any list given; an audience of no list is everyone."""

    tiers: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()

    def matches(self, member: Member) -> bool:
        if not (self.tiers or self.tags or self.segments):
            return True
        return (
            member.tier in self.tiers
            or not self.tags.isdisjoint(member.tags)
            or not self.segments.isdisjoint(member.segments)
        )


@dataclass(frozen=True)
class Campaign:
    code: str
    name: str
    actions: frozenset[str]
    multiplier: Decimal = Decimal(1)
    bonus_points: int = 0
    # Local dates: from inclusive, to exclusive; None: open on that side.
    starts_on: date | None = None
    ends_before: date | None = None
    # Weekdays it runs on (Monday is 0); empty: every day (of its window).
    weekdays: frozenset[int] = frozenset()
    audience: Audience = field(default_factory=Audience)
    # Extra points this campaign may ever award; None: no budget.
    budget_points: int | None = None
    # Events a member may be paid for by this campaign, ever; None: no limit.
    per_user_lifetime: int | None = None

    def runs_on(self, day: date) -> bool:
        """Whether local ``day`` is inside the window and on the schedule."""
        if self.starts_on is not None and day < self.starts_on:
            return False
        if self.ends_before is not None and day >= self.ends_before:
            return False
        return not self.weekdays or day.weekday() in self.weekdays

    def extra_for(self, own_points: int) -> int:
        """``(multiplier - 1) x`` the event's own points, rounded down, plus ``bonus_points``."""
        extra = ((self.multiplier - 1) * own_points).to_integral_value(rounding=ROUND_FLOOR)
        return int(extra) + self.bonus_points


@dataclass(frozen=True)
class CampaignAward:
    code: str
    points: int
    # The budget paid less than the campaign's full amount (or nothing).
    budget_cut: bool = False


@dataclass
class CampaignBook:
    """What a batch knows of its campaigns: points each has awarded so far (its budget), and
    how often each member has been paid by each. Moved in memory event by event, so two events
    of one batch see each other, as one by one they would."""

    awarded: dict[str, int] = field(default_factory=dict)
    # (code, user) -> events paid, ever.
    times: dict[tuple[str, str], int] = field(default_factory=dict)
    # (code, user) -> points paid by the events decided since the book was read.
    paid: dict[tuple[str, str], int] = field(default_factory=dict)

    def budget_left(self, campaign: Campaign) -> int | None:
        if campaign.budget_points is None:
            return None
        return max(0, campaign.budget_points - self.awarded.get(campaign.code, 0))


def decide_campaigns(
    campaigns: Sequence[Campaign],
    book: CampaignBook,
    user_id: str,
    action: str,
    day: date,
    member: Member,
    own_points: int,
) -> list[CampaignAward]:
    """The campaigns that pay an event of ``own_points`` (its own, after every earning limit),
    in program order, and the book moved past it. A campaign whose budget is spent pays what is
    left (maybe nothing: then only its ``campaign_budget`` note says it matched)."""
    if own_points <= 0:
        return []
    awards = []
    for campaign in campaigns:
        if action not in campaign.actions or not campaign.runs_on(day):
            continue
        if not campaign.audience.matches(member):
            continue
        times = book.times.get((campaign.code, user_id), 0)
        if campaign.per_user_lifetime is not None and times >= campaign.per_user_lifetime:
            continue
        points = campaign.extra_for(own_points)
        left = book.budget_left(campaign)
        cut = left is not None and points > left
        if left is not None:
            points = min(points, left)
        if points > 0:
            book.awarded[campaign.code] = book.awarded.get(campaign.code, 0) + points
            book.times[(campaign.code, user_id)] = times + 1
            key = (campaign.code, user_id)
            book.paid[key] = book.paid.get(key, 0) + points
        if points > 0 or cut:
            awards.append(CampaignAward(campaign.code, points, cut))
    return awards


def award_notes(awards: Sequence[CampaignAward]) -> tuple[str, ...]:
    notes = [f"{CAMPAIGN_NOTE}{a.code}" for a in awards if a.points > 0]
    notes += [f"{BUDGET_NOTE}{a.code}" for a in awards if a.budget_cut]
    return tuple(notes)


def pending_until(
    windows: Mapping[str, timedelta], action: str, earned_at: datetime, now: datetime
) -> datetime | None:
    """When an event's points become available, or None when they are available at once: an
    action listed under ``pending`` waits out its window from when the event happened."""
    window = windows.get(action)
    if window is None:
        return None
    until = earned_at + window
    return until if until > now else None
