"""Referrals: the program's ``referrals`` section, and the rules of a referral's life. Pure: no
I/O.

PENDING (waiting for the referred member's qualifying purchase) -> QUALIFIED (its points are
pending) -> PAID; or EXPIRED (no qualifying purchase within ``within`` of the referral) or
REFUSED (the per-referrer monthly limit, risk, or the purchase reversed before payment).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from plumbing.errors import FailedPrecondition
from plumbing.sections import REQUIRED, Shape, duration, integer, mapping, named, validated

AMOUNT_ATTRIBUTE = "amount_fen"
_LONGEST = timedelta(days=366)


class ReferralState(enum.StrEnum):
    PENDING = "PENDING"
    QUALIFIED = "QUALIFIED"
    PAID = "PAID"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"


class ReferralReason(enum.StrEnum):
    PER_REFERRER_LIMIT = "PER_REFERRER_LIMIT"
    RISK_DENIED = "RISK_DENIED"
    RISK_REVIEW = "RISK_REVIEW"
    EVENT_REVERSED = "EVENT_REVERSED"
    NOT_QUALIFIED_IN_TIME = "NOT_QUALIFIED_IN_TIME"


class SelfReferral(FailedPrecondition):
    reason = "SELF_REFERRAL"


class AlreadyReferred(FailedPrecondition):
    reason = "ALREADY_REFERRED"


class AlreadyActive(FailedPrecondition):
    reason = "ALREADY_ACTIVE"


class NoReferrals(FailedPrecondition):
    reason = "NO_REFERRALS"


@dataclass(frozen=True)
class ReferralTerms:
    referrer_points: int
    referred_points: int
    qualifying_action: str
    min_amount_fen: int
    within: timedelta
    # Paid referrals per referrer per local month; None: no limit.
    per_referrer_monthly: int | None = None

    def qualifies(self, action: str, attributes: Mapping[str, str]) -> bool:
        """Whether an event is a qualifying purchase (its amount at least ``min_amount_fen``)."""
        if action != self.qualifying_action:
            return False
        if self.min_amount_fen == 0:
            return True
        try:
            return int(attributes.get(AMOUNT_ATTRIBUTE, "0")) >= self.min_amount_fen
        except ValueError:
            return False


def month_bounds(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local month holding ``at``: its first instant and the next month's."""
    local = at.astimezone(zone)
    first = datetime(local.year, local.month, 1, tzinfo=zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return first, datetime(year, month, 1, tzinfo=zone)


def check_referral(referrer: str, referred: str, *, referred_before: bool, active: bool) -> None:
    """Raises why a referral cannot be made, in the order a member reads them."""
    if referrer == referred:
        raise SelfReferral("a member cannot refer themselves")
    if referred_before:
        raise AlreadyReferred(f"member {referred!r} was already referred")
    if active:
        raise AlreadyActive(f"member {referred!r} already has an earning event")


class PerReferrerShape(Shape):
    monthly: Annotated[int | None, integer(minimum=1)] = None


class ReferralsShape(Shape):
    referrer_points: Annotated[int, integer(minimum=0, required="is required")] = REQUIRED
    referred_points: Annotated[int, integer(minimum=0, required="is required")] = REQUIRED
    qualifying_action: Annotated[str, named()] = REQUIRED
    min_amount_fen: Annotated[int | None, integer(minimum=0)] = None
    within: Annotated[
        timedelta,
        duration("must be a duration such as 30d (at most 366d)", maximum=_LONGEST, required=True),
    ] = REQUIRED
    per_referrer: Annotated[
        PerReferrerShape | None, mapping("must be an object such as {monthly: 20}")
    ] = None


def parse_referrals(program: Mapping[str, Any], problems: list[str]) -> ReferralTerms | None:
    """The ``referrals`` section (None when the program has none), each problem added to
    ``problems`` with its path."""
    raw = program.get("referrals")
    if raw is None:
        return None
    shape = validated(ReferralsShape, raw, "referrals", problems)
    if shape is None:
        return None
    found = []
    actions = {
        rule.get("action") for rule in program.get("earning") or [] if isinstance(rule, Mapping)
    }
    if shape.qualifying_action not in actions:
        found.append(
            f"referrals.qualifying_action: no earning rule for action {shape.qualifying_action!r}"
        )
    if shape.referrer_points == 0 and shape.referred_points == 0:
        found.append("referrals.referrer_points: a referral must pay someone (both are 0)")
    problems.extend(found)
    if found:
        return None
    return ReferralTerms(
        referrer_points=shape.referrer_points,
        referred_points=shape.referred_points,
        qualifying_action=shape.qualifying_action,
        min_amount_fen=shape.min_amount_fen or 0,
        within=shape.within,
        per_referrer_monthly=shape.per_referrer.monthly if shape.per_referrer else None,
    )
