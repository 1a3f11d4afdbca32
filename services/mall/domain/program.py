"""The app's catalog: the `mall` section of the program YAML, validated.

``parse_mall`` takes ``{"timezone", "mall", "levels"}`` (``levels.tiers`` gives the order of tier
codes, lowest first, so the mall can compare a member's tier with an item's ``min_tier``) and
returns immutable items, or raises ``ProgramInvalid`` listing every problem with its path
(``mall.items[3].price_points: must be >= 1``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, ConfigDict

from plumbing.sections import (
    REQUIRED,
    ProgramInvalid,
    Shape,
    Timezone,
    Weekday,
    boolean,
    choice,
    chosen_by,
    free_text,
    integer,
    listing,
    local_time,
    mapping,
    moment,
    named,
    problem,
    raise_if_any,
    tag,
    validated,
)

__all__ = ["ProgramInvalid", "parse_mall"]

MAX_ITEMS = 1000
MAX_SESSION_MINUTES = 7 * 24 * 60


class ItemKind(enum.Enum):
    COUPON = "coupon"
    VIRTUAL = "virtual"
    PHYSICAL = "physical"
    PRIVILEGE = "privilege"


class CodeSource(enum.Enum):
    # No codes (virtual, physical, privilege goods).
    NONE = "none"
    # A fresh random code per unit at confirm.
    GENERATE = "generate"
    # Codes loaded by ops (LoadCodes); the item's stock is its loaded codes.
    POOL = "pool"


@dataclass(frozen=True)
class Limits:
    """Units a member may buy of one item: per local day, month, flash session, ever."""

    daily: int | None = None
    monthly: int | None = None
    per_session: int | None = None
    lifetime: int | None = None


@dataclass(frozen=True)
class WeeklySession:
    """A flash session every week: ``weekday`` (0 = Monday) at ``start`` local time."""

    weekday: int
    start: time
    minutes: int


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    kind: ItemKind
    price_points: int
    # None: unlimited. For session items, the units of each session.
    stock: int | None
    min_tier: str = ""
    limits: Limits = field(default_factory=Limits)
    sale_start: datetime | None = None
    sale_end: datetime | None = None
    sessions: tuple[WeeklySession, ...] = ()
    codes: CodeSource = CodeSource.NONE
    requires_address: bool = False

    @property
    def unlimited(self) -> bool:
        return self.stock is None and self.codes is not CodeSource.POOL


@dataclass(frozen=True)
class Catalog:
    timezone: str
    items: Mapping[str, Item]
    # Tier codes lowest first (from the program's levels section); empty when not given.
    tiers: tuple[str, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def tier_rank(self, code: str) -> int:
        """-1 for no tier or a tier the ladder does not know."""
        return self.tiers.index(code) if code in self.tiers else -1


_MOMENT = "must be a date and time such as 2026-12-01T10:00 (app's timezone)"


def _stock(value: Any) -> int | str | None:
    if value is None:
        return None
    if value == "unlimited":
        return "unlimited"
    checked: int = integer(minimum=0).func(value)
    return checked


class LimitsShape(Shape):
    daily: Annotated[int | None, integer(minimum=1)] = None
    monthly: Annotated[int | None, integer(minimum=1)] = None
    per_session: Annotated[int | None, integer(minimum=1)] = None
    lifetime: Annotated[int | None, integer(minimum=1)] = None


class WeeklyShape(Shape):
    day: Weekday = REQUIRED
    at: Annotated[time, local_time('must be a local time such as "12:00"')] = REQUIRED
    minutes: Annotated[
        int,
        integer(
            minimum=1,
            maximum=MAX_SESSION_MINUTES,
            required="must be an integer",
            too_large="a session lasts at most a week",
        ),
    ] = REQUIRED


_SESSIONS = 'must be {weekly: {day: wednesday, at: "12:00", minutes: 30}} (or a list)'


def _sessions(value: Any) -> Any:
    """``{weekly: {...}}`` or ``{weekly: [{...}, ...]}``; anything else is wrong as a whole."""
    if value is None:
        return value
    weekly = value.get("weekly") if isinstance(value, Mapping) else None
    if not isinstance(weekly, Mapping | list) or not weekly:
        raise problem(_SESSIONS)
    return value


class SessionsShape(Shape):
    weekly: Annotated[
        Annotated[WeeklyShape, tag("one")] | Annotated[list[WeeklyShape], tag("many")],
        chosen_by(lambda value: "many" if isinstance(value, list) else "one"),
    ]


class WindowShape(Shape):
    start: Annotated[datetime | None, moment(_MOMENT)] = None
    end: Annotated[datetime | None, moment(_MOMENT)] = None


class ItemShape(Shape):
    sku: Annotated[str, named()] = REQUIRED
    name: Annotated[str | None, free_text(256)] = None
    kind: Annotated[
        ItemKind, choice(ItemKind, "must be one of coupon, virtual, physical, privilege")
    ] = REQUIRED
    price_points: Annotated[int, integer(minimum=1, required="must be an integer")] = REQUIRED
    stock: Annotated[int | str | None, BeforeValidator(_stock)] = None
    min_tier: Annotated[str | None, free_text(128, "must be a tier code")] = None
    per_user: Annotated[
        LimitsShape | None, mapping("must be an object such as {daily: 1, lifetime: 10}")
    ] = None
    sale_window: Annotated[WindowShape | None, mapping("must be {start: ..., end: ...}")] = None
    sessions: Annotated[SessionsShape | None, BeforeValidator(_sessions)] = None
    coupon_codes: Annotated[
        CodeSource | None,
        choice(
            CodeSource,
            "must be generate or pool (codes loaded by ops with LoadCodes)",
            required=False,
        ),
    ] = None
    requires_address: Annotated[bool, boolean()] = False


class MallShape(Shape):
    items: Annotated[
        list[Any],
        listing(f"must be a list of at most {MAX_ITEMS} items", max_items=MAX_ITEMS, required=True),
    ] = REQUIRED


class SectionShape(Shape):
    """What the mall is configured with: its section, the zone and the tier ladder."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    timezone: Timezone = "UTC"
    mall: Annotated[
        MallShape, mapping("is required and must be an object with items", required=True)
    ] = REQUIRED
    levels: Any = None


def parse_mall(section: Mapping[str, Any]) -> Catalog:
    """Validates the section; raises ``ProgramInvalid`` with every error found."""
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    problems: list[str] = []
    shape = validated(SectionShape, section, "", problems)
    zone = ZoneInfo(shape.timezone if shape else "UTC")
    tiers = _tier_codes(section.get("levels"))
    items: dict[str, Item] = {}
    seen: set[str] = set()
    # Items are read one by one, whatever else is wrong.
    for index, raw in enumerate(_raw_items(section.get("mall"))):
        path = f"mall.items[{index}]"
        item = validated(ItemShape, raw, path, problems, {"zone": zone})
        if item is not None:
            problems.extend(f"{path}.{at}: {message}" for at, message in _item_rules(item, tiers))
        sku = raw.get("sku") if isinstance(raw, Mapping) else None
        if isinstance(sku, str) and sku in seen:
            problems.append(f"{path}.sku: duplicate sku {sku!r}")
            continue
        if isinstance(sku, str):
            seen.add(sku)
        if item is not None and not problems:
            items[item.sku] = _item(item)
    raise_if_any(problems)
    assert shape is not None
    return Catalog(timezone=shape.timezone, items=items, tiers=tiers)


def _raw_items(mall: Any) -> list[Any]:
    items = mall.get("items") if isinstance(mall, Mapping) else None
    return items if isinstance(items, list) and len(items) <= MAX_ITEMS else []


def _tier_codes(levels: Any) -> tuple[str, ...]:
    if not isinstance(levels, Mapping) or not isinstance(levels.get("tiers"), list):
        return ()
    return tuple(
        str(tier["code"])
        for tier in levels["tiers"]
        if isinstance(tier, Mapping) and "code" in tier
    )


def _item_rules(item: ItemShape, tiers: tuple[str, ...]) -> list[tuple[str, str]]:
    """The rules between an item's fields (and the tier ladder), as (field, message)."""
    found = []
    codes = item.coupon_codes or CodeSource.NONE
    if codes is not CodeSource.NONE and item.kind is not ItemKind.COUPON:
        found.append(("coupon_codes", "only coupon items carry codes"))
    if codes is CodeSource.POOL and item.stock is not None:
        found.append(("stock", "an item with coupon_codes: pool has its loaded codes as stock"))
    elif codes is not CodeSource.POOL and item.stock is None:
        found.append(("stock", "is required: a number of units or unlimited"))
    if item.min_tier and tiers and item.min_tier not in tiers:
        found.append(("min_tier", f"unknown tier {item.min_tier!r} (tiers: {', '.join(tiers)})"))
    window = item.sale_window
    if window and window.start and window.end and window.end <= window.start:
        found.append(("sale_window.end", "must be after start"))
    if item.per_user and item.per_user.per_session is not None and not item.sessions:
        found.append(("per_user.per_session", "needs sessions"))
    return found


def _item(item: ItemShape) -> Item:
    weekly = item.sessions.weekly if item.sessions else []
    window = item.sale_window
    return Item(
        sku=item.sku,
        name=item.sku if item.name is None else item.name,
        kind=item.kind,
        price_points=item.price_points,
        stock=item.stock if isinstance(item.stock, int) else None,
        min_tier=item.min_tier or "",
        limits=Limits(**item.per_user.model_dump()) if item.per_user else Limits(),
        sale_start=window.start if window else None,
        sale_end=window.end if window else None,
        sessions=tuple(
            WeeklySession(s.day, s.at, s.minutes)
            for s in (weekly if isinstance(weekly, list) else [weekly])
        ),
        codes=item.coupon_codes or CodeSource.NONE,
        requires_address=item.requires_address,
    )
