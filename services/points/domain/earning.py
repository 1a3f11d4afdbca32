"""How many points one event earns: the rule for its action, the user's usage today, the streak
and the daily cap. Pure: the store reads the counters, this decides, the store writes back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta

from plumbing.errors import InvalidArgument
from services.points.domain.program import EarningRule, PointsProgram

# Why an event earned less than its rule's full amount (EarnResponse.notes).
NO_RULE = "no_rule"
REQUIREMENT = "requirement"
ONCE = "once"
DAILY_LIMIT = "daily_limit"
DAILY_CAP = "daily_cap"
INSUFFICIENT_BALANCE = "insufficient_balance"

AMOUNT_ATTRIBUTE = "amount_fen"


@dataclass(frozen=True)
class DayUsage:
    """One user's use of one action on one local day."""

    # Quantity reported (minutes watched, ...); units are counted from the running total so
    # two 5-minute views make one 10-minute unit.
    quantity: int = 0
    # Units paid; `daily_limit` caps these.
    units: int = 0


@dataclass(frozen=True)
class Streak:
    last_day: date | None = None
    length: int = 0

    def advance(self, day: date) -> Streak:
        """The streak after an event on local ``day``. Same day: unchanged. The next day: one
        longer. A gap: starts again at 1. A late event for a day already counted: unchanged."""
        if self.last_day is not None and day <= self.last_day:
            return self
        if self.last_day is not None and day == self.last_day + timedelta(days=1):
            return Streak(day, self.length + 1)
        return Streak(day, 1)


@dataclass(frozen=True)
class EarnState:
    """What the store knows of the user before the event."""

    usage: DayUsage = DayUsage()
    # Points counted toward the per-user daily cap today.
    cap_points_today: int = 0
    once_done: bool = False
    streak: Streak = Streak()


@dataclass(frozen=True)
class EarnDecision:
    points: int
    notes: tuple[str, ...]
    # The state to write back (unchanged fields are equal to the input's).
    state: EarnState
    streak_days: int = 0
    # The rule's growth for the units counted (limits applied; the points cap does not apply).
    growth: int = 0


def decide_earn(
    program: PointsProgram,
    rule: EarningRule | None,
    quantity: int,
    attributes: Mapping[str, str],
    day: date,
    state: EarnState,
) -> EarnDecision:
    """Points for one event of ``quantity`` units (0 means 1) on local ``day``.

    Order: the rule exists → its `require` checks → `once` → units (per `unit` or
    `per_amount`) → `daily_limit` → streak bonus → the per-user `daily_cap` (tasks only).
    A penalty rule (negative points) is not capped here; the store limits it to the balance."""
    if rule is None:
        return EarnDecision(0, (NO_RULE,), state)
    if not all(requirement.holds(attributes) for requirement in rule.require):
        return EarnDecision(0, (REQUIREMENT,), state)
    if rule.once and state.once_done:
        return EarnDecision(0, (ONCE,), state)

    notes: list[str] = []
    quantity = quantity or 1
    usage = state.usage
    units = _units(rule, quantity, attributes, usage, notes)
    points = units * rule.points

    streak, streak_days = state.streak, 0
    if rule.streak_bonus:
        streak = state.streak.advance(day)
        streak_days = streak.length
        if streak != state.streak:
            points += sum(bonus for days, bonus in rule.streak_bonus if days == streak.length)

    cap_points = state.cap_points_today
    if points > 0 and rule.counts_toward_daily_cap:
        points = _within_daily_cap(program.daily_cap, cap_points, points, notes)
        cap_points += points

    new_state = replace(
        state,
        usage=DayUsage(usage.quantity + quantity, usage.units + units),
        cap_points_today=cap_points,
        once_done=state.once_done or rule.once,
        streak=streak,
    )
    return EarnDecision(points, tuple(notes), new_state, streak_days, units * rule.growth)


def _units(
    rule: EarningRule,
    quantity: int,
    attributes: Mapping[str, str],
    usage: DayUsage,
    notes: list[str],
) -> int:
    """Units this event pays for: per ``per_amount`` of its amount, or whole ``unit``s of the
    day's quantity so far (10-minute units of watching), within the rule's ``daily_limit``."""
    if rule.per_amount is not None:
        units = _amount(attributes) // rule.per_amount
    else:
        total = usage.quantity + quantity
        units = total // rule.unit - usage.quantity // rule.unit
    if rule.daily_limit is not None:
        room = max(0, rule.daily_limit - usage.units)
        if units > room:
            notes.append(DAILY_LIMIT)
            return room
    return units


def _within_daily_cap(cap: int | None, so_far: int, points: int, notes: list[str]) -> int:
    """Task points past the program's per-user ``daily_cap`` are not paid."""
    if cap is None:
        return points
    room = max(0, cap - so_far)
    if points > room:
        notes.append(DAILY_CAP)
        return room
    return points


def limit_penalty(points: int, available: int) -> tuple[int, tuple[str, ...]]:
    """A penalty takes at most what the user has: only a reversal may make a balance negative."""
    if points >= 0:
        return points, ()
    if -points <= max(available, 0):
        return points, ()
    return -max(available, 0), (INSUFFICIENT_BALANCE,)


def _amount(attributes: Mapping[str, str]) -> int:
    raw = attributes.get(AMOUNT_ATTRIBUTE)
    field = f"attributes.{AMOUNT_ATTRIBUTE}"
    if raw is None:
        raise InvalidArgument(field, "is required by this action's per_amount rule")
    try:
        amount = int(raw)
    except ValueError:
        raise InvalidArgument(field, "must be an integer number of fen") from None
    if amount < 0 or amount > 10**15:
        raise InvalidArgument(field, "must be between 0 and 10^15")
    return amount
