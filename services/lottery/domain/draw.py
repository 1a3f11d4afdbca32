"""How a draw is decided. Pure: no I/O, no randomness of its own — the store passes a random
value drawn from a CSPRNG (``secrets.randbelow``), and the log keeps everything ``decide`` was
given, so ``decide`` run again on a logged draw must give the logged prize (VerifyDraw).

The order:
1. a forced outcome set by ops wins, when that prize is available;
2. pity: the `pity_after`-th losing draw in a row wins the pity prize, when available;
3. otherwise a weighted pick over the candidates: every prize with stock left whose value fits
   what is left of today's budget keeps its weight; the weight of the others falls back to the
   pool's `nothing` prize, so an empty or unaffordable prize never raises the odds of another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.lottery.domain.program import Pool, Prize


@dataclass(frozen=True)
class Candidate:
    code: str
    weight: int


@dataclass(frozen=True)
class Decision:
    prize: str
    by_pity: bool
    forced: bool


def available(prize: Prize, stock_left: Mapping[str, int], budget_left: int | None) -> bool:
    """Has stock (or is unlimited) and fits today's remaining budget."""
    if prize.stock is not None and stock_left.get(prize.code, 0) <= 0:
        return False
    return budget_left is None or prize.value_points <= budget_left


def candidates(
    pool: Pool, stock_left: Mapping[str, int], budget_left: int | None
) -> list[Candidate]:
    """The weighted prizes of a draw at this moment (the fallback takes the weight of the
    unavailable ones)."""
    kept: dict[str, int] = {}
    fallen = 0
    for prize in pool.prizes:
        if available(prize, stock_left, budget_left):
            kept[prize.code] = kept.get(prize.code, 0) + prize.weight
        else:
            fallen += prize.weight
    if fallen or pool.fallback not in kept:
        kept[pool.fallback] = kept.get(pool.fallback, 0) + fallen
    return [Candidate(code, weight) for code, weight in kept.items() if weight > 0] or [
        Candidate(pool.fallback, 1)
    ]


def total_weight(cands: Sequence[Candidate]) -> int:
    return sum(c.weight for c in cands)


def pick(cands: Sequence[Candidate], value: int) -> str:
    """The candidate at ``value`` in [0, total weight) along the cumulative weights."""
    if not 0 <= value < total_weight(cands):
        raise ValueError(f"random value {value} outside [0, {total_weight(cands)})")
    for cand in cands:
        if value < cand.weight:
            return cand.code
        value -= cand.weight
    raise AssertionError("unreachable")


def decide(
    pool: Pool,
    cands: Sequence[Candidate],
    value: int,
    losing_streak: int,
    forced: str,
    stock_left: Mapping[str, int],
    budget_left: int | None,
) -> Decision:
    """The prize of one draw; ``losing_streak`` counts the user's losing draws in a row before
    this one, ``forced`` is an ops-forced prize code ('' for none)."""
    if forced:
        prize = pool.prize(forced)
        if prize is not None and available(prize, stock_left, budget_left):
            return Decision(forced, by_pity=False, forced=True)
    if pool.pity_after is not None and losing_streak + 1 >= pool.pity_after:
        prize = pool.prize(pool.pity_prize)
        if prize is not None and available(prize, stock_left, budget_left):
            return Decision(prize.code, by_pity=True, forced=False)
    return Decision(pick(cands, value), by_pity=False, forced=False)


def next_streak(pool: Pool, prize_code: str, losing_streak: int) -> int:
    """The losing streak after a draw: a win resets it."""
    prize = pool.prize(prize_code)
    return 0 if prize is not None and prize.wins else losing_streak + 1
