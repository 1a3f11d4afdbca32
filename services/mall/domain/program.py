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
from typing import Any
from zoneinfo import ZoneInfo

from plumbing.sections import ErrorCollector, ProgramInvalid

__all__ = ["ProgramInvalid", "parse_mall"]

MAX_ITEMS = 1000
MAX_SESSION_MINUTES = 7 * 24 * 60
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


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


_ITEM_KEYS = {
    "sku",
    "name",
    "kind",
    "price_points",
    "stock",
    "min_tier",
    "per_user",
    "sale_window",
    "sessions",
    "coupon_codes",
    "requires_address",
}
_LIMIT_KEYS = {"daily", "monthly", "per_session", "lifetime"}


def parse_mall(section: Mapping[str, Any]) -> Catalog:
    """Validates the section; raises ``ProgramInvalid`` with every error found."""
    c = ErrorCollector()
    if not isinstance(section, Mapping):
        raise ProgramInvalid(["(root): must be an object"])
    timezone = c.timezone("timezone", section.get("timezone", "UTC"))
    tiers = _tier_codes(section.get("levels"))
    mall = section.get("mall")
    items: dict[str, Item] = {}
    if not isinstance(mall, Mapping):
        c.add("mall", "is required and must be an object with items")
    else:
        c.unknown_keys("mall", mall, {"items"})
        raw_items = mall.get("items")
        if not isinstance(raw_items, list) or len(raw_items) > MAX_ITEMS:
            c.add("mall.items", f"must be a list of at most {MAX_ITEMS} items")
            raw_items = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_items):
            item = _parse_item(c, f"mall.items[{index}]", raw, ZoneInfo(timezone), tiers)
            sku = raw.get("sku") if isinstance(raw, Mapping) else None
            if isinstance(sku, str) and sku in seen:
                c.add(f"mall.items[{index}].sku", f"duplicate sku {sku!r}")
                continue
            if isinstance(sku, str):
                seen.add(sku)
            if item is not None:
                items[item.sku] = item
    c.raise_if_any()
    return Catalog(timezone=timezone, items=items, tiers=tiers)


def _tier_codes(levels: Any) -> tuple[str, ...]:
    if not isinstance(levels, Mapping) or not isinstance(levels.get("tiers"), list):
        return ()
    return tuple(
        str(tier["code"])
        for tier in levels["tiers"]
        if isinstance(tier, Mapping) and "code" in tier
    )


def _parse_item(  # noqa: C901 - a section parser: goes with the move to pydantic models
    c: ErrorCollector, path: str, raw: Any, zone: ZoneInfo, tiers: tuple[str, ...]
) -> Item | None:
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object")
        return None
    before = len(c.errors)
    c.unknown_keys(path, raw, _ITEM_KEYS)
    sku = c.name(f"{path}.sku", raw.get("sku"))
    name = raw.get("name", sku)
    if not isinstance(name, str) or len(name) > 256:
        c.add(f"{path}.name", "must be text of at most 256 characters")
    try:
        kind = ItemKind(raw.get("kind"))
    except ValueError:
        c.add(f"{path}.kind", "must be one of coupon, virtual, physical, privilege")
        kind = ItemKind.VIRTUAL
    price = c.integer(f"{path}.price_points", raw.get("price_points"), minimum=1) or 0
    codes = _parse_codes(c, f"{path}.coupon_codes", raw.get("coupon_codes"), kind)
    stock: int | None = None
    raw_stock = raw.get("stock")
    if codes is CodeSource.POOL:
        if raw_stock is not None:
            c.add(f"{path}.stock", "an item with coupon_codes: pool has its loaded codes as stock")
    elif raw_stock is None:
        c.add(f"{path}.stock", "is required: a number of units or unlimited")
    elif raw_stock != "unlimited":
        stock = c.integer(f"{path}.stock", raw_stock, minimum=0)
    min_tier = raw.get("min_tier", "")
    if not isinstance(min_tier, str):
        c.add(f"{path}.min_tier", "must be a tier code")
        min_tier = ""
    elif min_tier and tiers and min_tier not in tiers:
        c.add(f"{path}.min_tier", f"unknown tier {min_tier!r} (tiers: {', '.join(tiers)})")
    limits = _parse_limits(c, f"{path}.per_user", raw.get("per_user"))
    sale_start, sale_end = _parse_window(c, f"{path}.sale_window", raw.get("sale_window"), zone)
    sessions = _parse_sessions(c, f"{path}.sessions", raw.get("sessions"))
    if limits.per_session is not None and not sessions:
        c.add(f"{path}.per_user.per_session", "needs sessions")
    requires_address = c.boolean(f"{path}.requires_address", raw.get("requires_address", False))
    if len(c.errors) > before:
        return None
    return Item(
        sku=sku,
        name=str(name),
        kind=kind,
        price_points=price,
        stock=stock,
        min_tier=min_tier,
        limits=limits,
        sale_start=sale_start,
        sale_end=sale_end,
        sessions=sessions,
        codes=codes,
        requires_address=requires_address,
    )


def _parse_codes(c: ErrorCollector, path: str, raw: Any, kind: ItemKind) -> CodeSource:
    if raw is None:
        return CodeSource.NONE
    try:
        source = CodeSource(raw)
    except ValueError:
        c.add(path, "must be generate or pool (codes loaded by ops with LoadCodes)")
        return CodeSource.NONE
    if source is not CodeSource.NONE and kind is not ItemKind.COUPON:
        c.add(path, "only coupon items carry codes")
    return source


def _parse_limits(c: ErrorCollector, path: str, raw: Any) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, Mapping):
        c.add(path, "must be an object such as {daily: 1, lifetime: 10}")
        return Limits()
    c.unknown_keys(path, raw, _LIMIT_KEYS)
    values = {
        key: c.integer(f"{path}.{key}", raw[key], minimum=1) for key in _LIMIT_KEYS if key in raw
    }
    return Limits(**values)


def _moment(c: ErrorCollector, path: str, raw: Any, zone: ZoneInfo) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError:
        c.add(path, "must be a date and time such as 2026-12-01T10:00 (app's timezone)")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _parse_window(
    c: ErrorCollector, path: str, raw: Any, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping):
        c.add(path, "must be {start: ..., end: ...}")
        return None, None
    c.unknown_keys(path, raw, {"start", "end"})
    start = _moment(c, f"{path}.start", raw.get("start"), zone)
    end = _moment(c, f"{path}.end", raw.get("end"), zone)
    if start and end and end <= start:
        c.add(f"{path}.end", "must be after start")
    return start, end


def _parse_sessions(c: ErrorCollector, path: str, raw: Any) -> tuple[WeeklySession, ...]:  # noqa: C901 - a section parser: goes with the move to pydantic models
    if raw is None:
        return ()
    entries = raw.get("weekly") if isinstance(raw, Mapping) else None
    if isinstance(raw, Mapping):
        c.unknown_keys(path, raw, {"weekly"})
    if isinstance(entries, Mapping):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        c.add(path, 'must be {weekly: {day: wednesday, at: "12:00", minutes: 30}} (or a list)')
        return ()
    sessions = []
    for index, entry in enumerate(entries):
        where = f"{path}.weekly" if len(entries) == 1 else f"{path}.weekly[{index}]"
        if not isinstance(entry, Mapping):
            c.add(where, "must be an object")
            continue
        c.unknown_keys(where, entry, {"day", "at", "minutes"})
        day = str(entry.get("day", "")).lower()
        if day not in WEEKDAYS:
            c.add(f"{where}.day", "must be a weekday such as wednesday")
            continue
        try:
            at = time.fromisoformat(str(entry.get("at")))
        except ValueError:
            c.add(f"{where}.at", 'must be a local time such as "12:00"')
            continue
        minutes = c.integer(f"{where}.minutes", entry.get("minutes"), minimum=1)
        if minutes is None:
            continue
        if minutes > MAX_SESSION_MINUTES:
            c.add(f"{where}.minutes", "a session lasts at most a week")
            continue
        sessions.append(WeeklySession(WEEKDAYS.index(day), at, minutes))
    return tuple(sessions)
