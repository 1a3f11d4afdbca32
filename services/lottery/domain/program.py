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
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, ConfigDict, Field

from plumbing.sections import (
    REQUIRED,
    ProgramInvalid,
    Shape,
    Timezone,
    choice,
    integer,
    listing,
    mapping,
    named,
    problem,
    raise_if_any,
    validated,
)

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


class PerUserShape(Shape):
    daily: Annotated[int | None, integer(minimum=1)] = None
    lifetime: Annotated[int | None, integer(minimum=1)] = None


class PityShape(Shape):
    after: Annotated[int, integer(minimum=1, required="must be an integer")] = REQUIRED
    prize: Annotated[str, BeforeValidator(lambda value: str(value or ""))] = ""


class AlertsShape(Shape):
    low_stock_percent: Annotated[int | None, integer(minimum=1, maximum=100)] = None
    run_rate_per_minute: Annotated[int | None, integer(minimum=1)] = None


def _empty_is_none(value: Any) -> Any:
    # `lottery:`, `per_user:` or `alerts:` left empty in YAML reads as null: nothing set.
    return value or None


class PrizeShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    name: Any = None
    kind: Annotated[PrizeKind, choice(PrizeKind, "must be points, item or nothing")] = REQUIRED
    amount: Annotated[int | None, integer(minimum=1)] = None
    sku: Annotated[str, BeforeValidator(lambda value: str(value or ""))] = ""
    weight: Annotated[int, integer(minimum=0, required="must be an integer")] = REQUIRED
    stock: Annotated[int | None, integer(minimum=0)] = None


class PoolShape(Shape):
    code: Annotated[str, named()] = REQUIRED
    name: Any = None
    cost_points: Annotated[int, integer(minimum=1, required="must be an integer")] = REQUIRED
    per_user: Annotated[
        PerUserShape | None,
        mapping("must be a mapping such as {daily: 3}"),
        BeforeValidator(_empty_is_none),
    ] = None
    daily_budget_points: Annotated[int | None, integer(minimum=0)] = None
    pity: Annotated[PityShape | None, mapping("must be a mapping {after: N, prize: CODE}")] = None
    prizes: Annotated[
        list[Any],
        listing(
            f"must be a list of 1 to {MAX_PRIZES} prizes",
            max_items=MAX_PRIZES,
            min_items=1,
            required=True,
        ),
    ] = REQUIRED
    alerts: Annotated[
        AlertsShape | None, mapping("must be a mapping"), BeforeValidator(_empty_is_none)
    ] = None


def _money_rate(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise problem("must be an integer > 0")
    return value


class LotteryShape(Shape):
    pools: Annotated[
        list[Any],
        listing(f"must be a list of at most {MAX_POOLS} pools", max_items=MAX_POOLS, required=True),
        BeforeValidator(lambda value: value or []),
    ] = Field(default_factory=list)


class SectionShape(Shape):
    """What the lottery is configured with: its section, the zone, the app's money rate and
    the mall's prices (item prizes are valued at them against a pool's daily budget)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    timezone: Timezone = "UTC"
    money_rate: Annotated[int, BeforeValidator(_money_rate)] = 100
    lottery: Annotated[
        LotteryShape | None,
        mapping("must be a mapping with `pools`"),
        BeforeValidator(_empty_is_none),
    ] = None


def parse_lottery(section: Mapping[str, Any]) -> LotteryProgram:
    problems: list[str] = []
    shape = validated(SectionShape, section, "", problems)
    # The rate is the points section's: errors name it there.
    problems = [p.replace("money_rate:", "points.money_rate:", 1) for p in problems]
    prices = _prices(section.get("mall"))
    pools: dict[str, Pool] = {}
    for i, raw_pool in enumerate(shape.lottery.pools if shape and shape.lottery else []):
        pool = _pool(f"lottery.pools[{i}]", raw_pool, prices, problems)
        if pool is None:
            continue
        if pool.code in pools:
            problems.append(f"lottery.pools[{i}].code: {pool.code!r} is used twice")
        pools[pool.code] = pool
    raise_if_any(problems)
    assert shape is not None
    return LotteryProgram(timezone=shape.timezone, money_rate=shape.money_rate, pools=pools)


def _prices(mall: Any) -> dict[str, Any]:
    """Sku -> price of the mall's items (the gateway passes them; the mall validates them)."""
    items = mall.get("items") if isinstance(mall, Mapping) else None
    return {
        item["sku"]: item.get("price_points")
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping) and isinstance(item.get("sku"), str)
    }


def _pool(path: str, raw: Any, prices: Mapping[Any, Any], problems: list[str]) -> Pool | None:
    shape = validated(PoolShape, raw, path, problems, message_for_object="must be a mapping")
    raw_prizes = raw.get("prizes") if isinstance(raw, Mapping) else None
    prizes: list[Prize] = []
    for j, raw_prize in enumerate(raw_prizes if isinstance(raw_prizes, list) else []):
        prize = _prize(f"{path}.prizes[{j}]", raw_prize, prices, problems)
        if prize is None:
            continue
        if any(p.code == prize.code for p in prizes):
            problems.append(f"{path}.prizes[{j}].code: {prize.code!r} is used twice")
        prizes.append(prize)
    if shape is None:
        return None
    found = len(problems)
    if prizes and sum(p.weight for p in prizes) <= 0:
        problems.append(f"{path}.prizes: the weights must add up to more than 0")
    pity = shape.pity
    if pity is not None:
        chosen = next((p for p in prizes if p.code == pity.prize), None)
        if chosen is None or not chosen.wins:
            problems.append(
                f"{path}.pity.prize: must name a prize of this pool that wins something"
            )
    if len(problems) > found:
        return None
    per_user, alerts = shape.per_user or PerUserShape(), shape.alerts or AlertsShape()
    return Pool(
        code=shape.code,
        name=str(shape.name or shape.code),
        cost_points=shape.cost_points,
        prizes=tuple(prizes),
        fallback=next((p.code for p in prizes if p.kind is PrizeKind.NOTHING), NOTHING),
        daily_limit=per_user.daily,
        lifetime_limit=per_user.lifetime,
        daily_budget_points=shape.daily_budget_points,
        pity_after=pity.after if pity else None,
        pity_prize=pity.prize if pity else "",
        low_stock_percent=alerts.low_stock_percent,
        run_rate_per_minute=alerts.run_rate_per_minute,
    )


def _prize(path: str, raw: Any, prices: Mapping[Any, Any], problems: list[str]) -> Prize | None:
    shape = validated(PrizeShape, raw, path, problems, message_for_object="must be a mapping")
    if shape is None:
        return None
    found = len(problems)
    amount, sku, value = 0, "", 0
    if shape.kind is PrizeKind.POINTS:
        if shape.amount is None:
            problems.append(f"{path}.amount: must be an integer")
        amount = value = shape.amount or 0
    elif shape.kind is PrizeKind.ITEM:
        sku = shape.sku
        if not sku:
            problems.append(f"{path}.sku: is required for an item prize")
        elif prices and sku not in prices:
            problems.append(f"{path}.sku: no mall item {sku!r}")
        price = prices.get(sku)
        value = price if isinstance(price, int) and not isinstance(price, bool) else 0
    elif shape.stock is not None:
        problems.append(f"{path}.stock: a `nothing` prize has no stock")
    if len(problems) > found:
        return None
    return Prize(
        code=shape.code,
        kind=shape.kind,
        weight=shape.weight,
        amount=amount,
        sku=sku,
        stock=shape.stock,
        value_points=value,
    )
