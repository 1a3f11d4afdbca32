"""The lottery's pure rules: the pools as the example program declares them, candidates under
stock and budget, the weighted pick, pity and forced outcomes."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.lottery.domain.draw import (
    Candidate,
    candidates,
    decide,
    next_streak,
    pick,
    total_weight,
)
from services.lottery.domain.program import PrizeKind, ProgramInvalid, parse_lottery
from tests.programs import example_program


def section(program: dict[str, Any] | None = None) -> dict[str, Any]:
    program = program or example_program()
    return {
        "timezone": program["timezone"],
        "lottery": program["lottery"],
        "money_rate": program["points"]["money_rate"],
        "mall": {"items": program["mall"]["items"]},
    }


def wheel() -> Any:
    return parse_lottery(section()).pools["lucky-wheel"]


def test_the_example_pool() -> None:
    pool = wheel()
    assert (pool.cost_points, pool.daily_limit, pool.daily_budget_points) == (50, 3, 100_000)
    assert (pool.pity_after, pool.pity_prize, pool.fallback) == (10, "points-100", "thanks")
    prizes = {p.code: p for p in pool.prizes}
    assert prizes["points-100"].value_points == 100
    assert prizes["ticket"].kind is PrizeKind.ITEM
    assert prizes["ticket"].value_points == 500  # the mall price of ticket-wolf-warrior-2
    assert prizes["thanks"].stock is None
    assert (pool.low_stock_percent, pool.run_rate_per_minute) == (10, 600)


def test_every_error_has_its_path() -> None:
    program = example_program()
    prizes = program["lottery"]["pools"][0]["prizes"]
    prizes[0]["weight"] = -1
    prizes[1]["sku"] = "no-such-sku"
    program["lottery"]["pools"][0]["pity"]["prize"] = "thanks"
    with pytest.raises(ProgramInvalid) as invalid:
        parse_lottery(section(program))
    assert sorted(invalid.value.errors) == [
        "lottery.pools[0].pity.prize: must name a prize of this pool that wins something",
        "lottery.pools[0].prizes[0].weight: must be >= 0",
        "lottery.pools[0].prizes[1].sku: no mall item 'no-such-sku'",
    ]


def test_unavailable_prizes_fall_back_to_nothing() -> None:
    pool = wheel()
    full = {"points-100": 10_000, "ticket": 50}
    assert candidates(pool, full, 100_000) == [
        Candidate("points-100", 10),
        Candidate("ticket", 2),
        Candidate("thanks", 88),
    ]
    assert candidates(pool, {**full, "ticket": 0}, None) == [
        Candidate("points-100", 10),
        Candidate("thanks", 90),
    ]
    # 99 points left today: neither the 100 points nor the 500-point ticket fits.
    assert candidates(pool, full, 99) == [Candidate("thanks", 100)]


@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6))
def test_each_candidate_owns_exactly_its_weight_of_values(weights: list[int]) -> None:
    cands = [Candidate(f"p{i}", w) for i, w in enumerate(weights) if w > 0]
    if not cands:
        return
    owned = Counter(pick(cands, value) for value in range(total_weight(cands)))
    assert owned == {c.code: c.weight for c in cands}
    with pytest.raises(ValueError, match="outside"):
        pick(cands, total_weight(cands))


def test_twenty_thousand_draws_match_the_weights() -> None:
    """Chi-square goodness of fit at p > 0.001 (seeded here only; the service uses secrets)."""
    pool = wheel()
    stock = {"points-100": 10**9, "ticket": 10**9}
    cands = candidates(pool, stock, None)
    rng = random.Random(20261125)
    n = 20_000
    seen = Counter(
        decide(pool, cands, rng.randrange(total_weight(cands)), 0, "", stock, None).prize
        for _ in range(n)
    )
    total = total_weight(cands)
    chi2 = sum((seen[c.code] - n * c.weight / total) ** 2 / (n * c.weight / total) for c in cands)
    # Three outcomes: two degrees of freedom, whose survival function is exp(-x / 2).
    assert math.exp(-chi2 / 2) > 0.001, (chi2, seen)


def test_pity_wins_the_tenth_losing_draw_in_a_row() -> None:
    pool = wheel()
    stock = {"points-100": 5, "ticket": 5}
    cands = candidates(pool, stock, None)
    losing = total_weight(cands) - 1  # the last value falls on `thanks`
    assert decide(pool, cands, losing, 8, "", stock, None).prize == "thanks"
    tenth = decide(pool, cands, losing, 9, "", stock, None)
    assert (tenth.prize, tenth.by_pity) == ("points-100", True)
    # Pity cannot give what is not there.
    assert decide(pool, cands, losing, 9, "", {**stock, "points-100": 0}, None).prize == "thanks"
    assert next_streak(pool, "thanks", 9) == 10
    assert next_streak(pool, "points-100", 9) == 0


def test_a_forced_outcome_wins_when_available() -> None:
    pool = wheel()
    stock = {"points-100": 5, "ticket": 5}
    cands = candidates(pool, stock, None)
    forced = decide(pool, cands, 0, 0, "ticket", stock, None)
    assert (forced.prize, forced.forced) == ("ticket", True)
    assert not decide(pool, cands, 0, 0, "ticket", {**stock, "ticket": 0}, None).forced
