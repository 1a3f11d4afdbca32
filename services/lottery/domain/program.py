"""The app's prize pools: the `lottery` section of the program YAML, validated. Pure: no I/O.

``parse_lottery`` takes ``{"timezone", "lottery", "money_rate", "mall": {"items": [...]}}`` (the
gateway adds the app's money rate and the mall's prices, which value item prizes against the
daily budget) and returns immutable pools, or raises ``ProgramInvalid`` with every problem and
its path (``lottery.pools[0].prizes[1].weight: must be >= 0``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from plumbing.sections import ErrorCollector, ProgramInvalid

__all__ = ["LotteryProgram", "Pool", "Prize", "PrizeKind", "ProgramInvalid", "parse_lottery"]

MAX_POOLS = 100
MAX_PRIZES = 100
# The fallback when no `nothing` prize is declared.
NOTHING = "nothing"


class PrizeKind(enum.Enum):
    POINTS = "points"
    ITEM = "item"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Prize:
    code: str
    kind: PrizeKind
    weight: int
    # Points paid (points prizes).
    amount: int = 0
    # The mall item given (item prizes).
    sku: str = ""
    # Units in stock; None for unlimited.
    stock: int | None = None
    # What one award costs the app, in points (the budget's unit): the amount of a points
    # prize, the mall price of an item prize, 0 for nothing.
    value_points: int = 0

    @property
    def wins(self) -> bool:
        return self.kind is not PrizeKind.NOTHING


@dataclass(frozen=True)
class Pool:
    code: str
    name: str
    cost_points: int
    prizes: tuple[Prize, ...]
    # The prize the weight of unavailable prizes falls back to.
    fallback: str
    daily_limit: int | None = None
    lifetime_limit: int | None = None
    # Value paid out per local day, in points; None for no budget.
    daily_budget_points: int | None = None
    # The `pity_after`-th losing draw in a row wins `pity_prize`.
    pity_after: int | None = None
    pity_prize: str = ""
    low_stock_percent: int | None = None
    run_rate_per_minute: int | None = None

    def prize(self, code: str) -> Prize | None:
        return next((p for p in self.prizes if p.code == code), None)


@dataclass(frozen=True)
class LotteryProgram:
    timezone: str
    money_rate: int
    pools: Mapping[str, Pool]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_POOL_KEYS = {
    "code",
    "name",
    "cost_points",
    "per_user",
    "daily_budget_points",
    "pity",
    "prizes",
    "alerts",
}
_PRIZE_KEYS = {"code", "kind", "amount", "sku", "weight", "stock", "name"}


def parse_lottery(section: Mapping[str, Any]) -> LotteryProgram:
    c = ErrorCollector()
    timezone = c.timezone("timezone", section.get("timezone", "UTC"))
    money_rate = section.get("money_rate", 100)
    if not isinstance(money_rate, int) or isinstance(money_rate, bool) or money_rate <= 0:
        c.add("points.money_rate", "must be an integer > 0")
        money_rate = 100
    prices = {
        item.get("sku"): item.get("price_points")
        for item in ((section.get("mall") or {}).get("items") or [])
        if isinstance(item, dict)
    }
    raw = section.get("lottery") or {}
    pools: dict[str, Pool] = {}
    if not isinstance(raw, dict):
        c.add("lottery", "must be a mapping with `pools`")
        raw = {}
    c.unknown_keys("lottery", raw, {"pools"})
    raw_pools = raw.get("pools") or []
    if not isinstance(raw_pools, list) or len(raw_pools) > MAX_POOLS:
        c.add("lottery.pools", f"must be a list of at most {MAX_POOLS} pools")
        raw_pools = []
    for i, raw_pool in enumerate(raw_pools):
        pool = _parse_pool(c, f"lottery.pools[{i}]", raw_pool, prices)
        if pool is None:
            continue
        if pool.code in pools:
            c.add(f"lottery.pools[{i}].code", f"{pool.code!r} is used twice")
        pools[pool.code] = pool
    c.raise_if_any()
    return LotteryProgram(timezone=timezone, money_rate=money_rate, pools=pools)


def _optional_int(c: ErrorCollector, path: str, value: Any, minimum: int) -> int | None:
    return None if value is None else c.integer(path, value, minimum=minimum)


def _parse_pool(c: ErrorCollector, path: str, raw: Any, prices: Mapping[Any, Any]) -> Pool | None:  # noqa: C901, PLR0915 - a section parser: goes with the move to pydantic models
    if not isinstance(raw, dict):
        c.add(path, "must be a mapping")
        return None
    before = len(c.errors)
    c.unknown_keys(path, raw, _POOL_KEYS)
    code = c.name(f"{path}.code", raw.get("code"))
    name = str(raw.get("name") or code)
    cost = c.integer(f"{path}.cost_points", raw.get("cost_points"), minimum=1) or 0
    per_user = raw.get("per_user") or {}
    if not isinstance(per_user, dict):
        c.add(f"{path}.per_user", "must be a mapping such as {daily: 3}")
        per_user = {}
    c.unknown_keys(f"{path}.per_user", per_user, {"daily", "lifetime"})
    daily = _optional_int(c, f"{path}.per_user.daily", per_user.get("daily"), 1)
    lifetime = _optional_int(c, f"{path}.per_user.lifetime", per_user.get("lifetime"), 1)
    budget = _optional_int(c, f"{path}.daily_budget_points", raw.get("daily_budget_points"), 0)

    prizes: list[Prize] = []
    raw_prizes = raw.get("prizes")
    if not isinstance(raw_prizes, list) or not raw_prizes or len(raw_prizes) > MAX_PRIZES:
        c.add(f"{path}.prizes", f"must be a list of 1 to {MAX_PRIZES} prizes")
        raw_prizes = []
    for j, raw_prize in enumerate(raw_prizes):
        prize = _parse_prize(c, f"{path}.prizes[{j}]", raw_prize, prices)
        if prize is None:
            continue
        if any(p.code == prize.code for p in prizes):
            c.add(f"{path}.prizes[{j}].code", f"{prize.code!r} is used twice")
        prizes.append(prize)
    if prizes and sum(p.weight for p in prizes) <= 0:
        c.add(f"{path}.prizes", "the weights must add up to more than 0")
    fallback = next((p.code for p in prizes if p.kind is PrizeKind.NOTHING), NOTHING)

    pity_after, pity_prize = None, ""
    pity = raw.get("pity")
    if pity is not None:
        if not isinstance(pity, dict):
            c.add(f"{path}.pity", "must be a mapping {after: N, prize: CODE}")
        else:
            c.unknown_keys(f"{path}.pity", pity, {"after", "prize"})
            pity_after = c.integer(f"{path}.pity.after", pity.get("after"), minimum=1)
            pity_prize = str(pity.get("prize") or "")
            chosen = next((p for p in prizes if p.code == pity_prize), None)
            if chosen is None or not chosen.wins:
                c.add(f"{path}.pity.prize", "must name a prize of this pool that wins something")

    low_stock = run_rate = None
    alerts = raw.get("alerts") or {}
    if not isinstance(alerts, dict):
        c.add(f"{path}.alerts", "must be a mapping")
        alerts = {}
    c.unknown_keys(f"{path}.alerts", alerts, {"low_stock_percent", "run_rate_per_minute"})
    low_stock = _optional_int(
        c, f"{path}.alerts.low_stock_percent", alerts.get("low_stock_percent"), 1
    )
    if low_stock is not None and low_stock > 100:
        c.add(f"{path}.alerts.low_stock_percent", "must be at most 100")
    run_rate = _optional_int(
        c, f"{path}.alerts.run_rate_per_minute", alerts.get("run_rate_per_minute"), 1
    )
    if len(c.errors) > before:
        return None
    return Pool(
        code=code,
        name=name,
        cost_points=cost,
        prizes=tuple(prizes),
        fallback=fallback,
        daily_limit=daily,
        lifetime_limit=lifetime,
        daily_budget_points=budget,
        pity_after=pity_after,
        pity_prize=pity_prize,
        low_stock_percent=low_stock,
        run_rate_per_minute=run_rate,
    )


def _parse_prize(c: ErrorCollector, path: str, raw: Any, prices: Mapping[Any, Any]) -> Prize | None:
    if not isinstance(raw, dict):
        c.add(path, "must be a mapping")
        return None
    before = len(c.errors)
    c.unknown_keys(path, raw, _PRIZE_KEYS)
    code = c.name(f"{path}.code", raw.get("code"))
    try:
        kind = PrizeKind(raw.get("kind"))
    except ValueError:
        c.add(f"{path}.kind", "must be points, item or nothing")
        kind = PrizeKind.NOTHING
    weight = c.integer(f"{path}.weight", raw.get("weight"), minimum=0) or 0
    stock = _optional_int(c, f"{path}.stock", raw.get("stock"), 0)
    amount, sku, value = 0, "", 0
    if kind is PrizeKind.POINTS:
        amount = c.integer(f"{path}.amount", raw.get("amount"), minimum=1) or 0
        value = amount
    elif kind is PrizeKind.ITEM:
        sku = str(raw.get("sku") or "")
        if not sku:
            c.add(f"{path}.sku", "is required for an item prize")
        elif prices and sku not in prices:
            c.add(f"{path}.sku", f"no mall item {sku!r}")
        price = prices.get(sku)
        value = price if isinstance(price, int) and not isinstance(price, bool) else 0
    elif stock is not None:
        c.add(f"{path}.stock", "a `nothing` prize has no stock")
    if len(c.errors) > before:
        return None
    return Prize(
        code=code,
        kind=kind,
        weight=weight,
        amount=amount,
        sku=sku,
        stock=stock,
        value_points=value,
    )
