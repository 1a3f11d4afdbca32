"""The mall's rules, pure, with a fake clock: the catalog, flash sessions on the minute,
sale windows, per-user limits, tiers and coupon codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumbing.clock import FakeClock
from plumbing.sections import WEEKDAYS
from services.mall.domain.program import (
    Catalog,
    CodeSource,
    ItemKind,
    Limits,
    ProgramInvalid,
    parse_mall,
)
from services.mall.domain.sale import (
    SaleStatus,
    Usage,
    generate_code,
    limit_left,
    sale_state,
    tier_allows,
)
from tests.programs import example_program, mall_section

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def catalog() -> Catalog:
    return parse_mall(mall_section())


def test_the_example_catalog_parses(catalog: Catalog) -> None:
    assert list(catalog.items) == [
        "ticket-wolf-warrior-2",
        "vip-1-month",
        "mobile-data-1g",
        "phone-flagship",
        "wednesday-flash",
    ]
    ticket = catalog.items["ticket-wolf-warrior-2"]
    assert (ticket.kind, ticket.price_points, ticket.stock) == (ItemKind.COUPON, 500, 1000)
    assert ticket.codes is CodeSource.GENERATE
    assert ticket.limits == Limits(daily=1)
    assert catalog.items["vip-1-month"].unlimited
    assert catalog.items["phone-flagship"].requires_address
    flash = catalog.items["wednesday-flash"]
    assert flash.limits == Limits(per_session=1)
    assert [(s.weekday, s.start.isoformat(), s.minutes) for s in flash.sessions] == [
        (2, "12:00:00", 30)
    ]
    assert catalog.tiers == ("rookie", "actor", "star", "legend")


def test_every_error_is_reported_with_its_path() -> None:
    broken = example_program()
    items = broken["mall"]["items"]
    items[0]["price_points"] = 0
    items[1]["kind"] = "gift"
    items[2]["stock"] = -5
    items[3]["min_tier"] = "emperor"
    items[4]["sessions"] = {"weekly": {"day": "someday", "at": "12:00", "minutes": 30}}
    items.append({"sku": "ticket-wolf-warrior-2", "kind": "coupon", "price_points": 1, "stock": 1})
    with pytest.raises(ProgramInvalid) as caught:
        parse_mall(mall_section(broken))
    assert caught.value.errors == [
        "mall.items[0].price_points: must be >= 1",
        "mall.items[1].kind: must be one of coupon, virtual, physical, privilege",
        "mall.items[2].stock: must be >= 0",
        "mall.items[3].min_tier: unknown tier 'emperor' (tiers: rookie, actor, star, legend)",
        # A rule between fields waits for the fields themselves to be right: no "needs
        # sessions" beside the broken session.
        "mall.items[4].sessions.weekly.day: must be a weekday such as wednesday",
        "mall.items[5].sku: duplicate sku 'ticket-wolf-warrior-2'",
    ]


def test_pool_items_take_their_stock_from_codes() -> None:
    section = mall_section()
    section["mall"]["items"] = [
        {"sku": "c", "kind": "coupon", "price_points": 5, "coupon_codes": "pool", "stock": 3},
        {"sku": "v", "kind": "virtual", "price_points": 5, "stock": 1, "coupon_codes": "generate"},
    ]
    with pytest.raises(ProgramInvalid) as caught:
        parse_mall(section)
    assert caught.value.errors == [
        "mall.items[0].stock: an item with coupon_codes: pool has its loaded codes as stock",
        "mall.items[1].coupon_codes: only coupon items carry codes",
    ]


def test_the_wednesday_session_opens_and_closes_on_the_minute(catalog: Catalog) -> None:
    flash = catalog.items["wednesday-flash"]
    # Wednesday 2026-11-25, 12:00 in Shanghai is 04:00 UTC.
    clock = FakeClock(datetime(2026, 11, 25, 3, 59, 59, 999_000, tzinfo=UTC))
    before = sale_state(flash, clock.now(), SHANGHAI)
    assert before.status is SaleStatus.UPCOMING
    assert before.next_session_start == datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
    clock.set(datetime(2026, 11, 25, 4, 0, tzinfo=UTC))
    opened = sale_state(flash, clock.now(), SHANGHAI)
    assert opened.status is SaleStatus.ON_SALE
    assert opened.bucket == "2026-11-25T04:00Z"
    clock.set(datetime(2026, 11, 25, 4, 29, 59, 999_999, tzinfo=UTC))
    assert sale_state(flash, clock.now(), SHANGHAI).on_sale
    clock.set(datetime(2026, 11, 25, 4, 30, tzinfo=UTC))
    closed = sale_state(flash, clock.now(), SHANGHAI)
    assert closed.status is SaleStatus.UPCOMING
    assert closed.next_session_start == datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    # Next week's session is another bucket: its stock and its per-session limit are new.
    clock.advance(timedelta(days=7) - timedelta(minutes=20))  # 12:10 the next Wednesday
    assert sale_state(flash, clock.now(), SHANGHAI).bucket == "2026-12-02T04:00Z"


def test_the_per_session_limit_resets_with_the_next_session(catalog: Catalog) -> None:
    flash = catalog.items["wednesday-flash"]
    # The member bought one in this session: the session usage is that bucket's.
    assert limit_left(flash.limits, Usage(today=1, month=1, session=1, lifetime=1)) == 0
    # Next Wednesday the session usage (of the new bucket) is 0 again.
    assert limit_left(flash.limits, Usage(today=0, month=1, session=0, lifetime=1)) == 1


def test_a_sale_window(catalog: Catalog) -> None:
    section = mall_section()
    section["mall"]["items"] = [
        {
            "sku": "xmas",
            "kind": "virtual",
            "price_points": 10,
            "stock": 5,
            "sale_window": {"start": "2026-12-24T00:00", "end": "2026-12-26T00:00"},
        }
    ]
    xmas = parse_mall(section).items["xmas"]
    eve = datetime(2026, 12, 24, tzinfo=SHANGHAI)
    assert sale_state(xmas, eve - timedelta(seconds=1), SHANGHAI).status is SaleStatus.UPCOMING
    assert sale_state(xmas, eve, SHANGHAI).status is SaleStatus.ON_SALE
    assert sale_state(xmas, eve + timedelta(days=2), SHANGHAI).status is SaleStatus.ENDED


def test_limits_take_the_tightest(catalog: Catalog) -> None:
    data = catalog.items["mobile-data-1g"]  # daily 1, lifetime 10
    assert limit_left(data.limits, Usage()) == 1
    assert limit_left(data.limits, Usage(today=0, lifetime=10)) == 0
    assert limit_left(catalog.items["phone-flagship"].limits, Usage(lifetime=1)) == 0
    assert limit_left(Limits(), Usage(lifetime=99)) is None


def test_tiers_compare_on_the_ladder(catalog: Catalog) -> None:
    vip = catalog.items["vip-1-month"]  # min_tier actor
    assert not tier_allows(catalog, vip, "rookie")
    assert tier_allows(catalog, vip, "actor")
    assert tier_allows(catalog, vip, "legend")
    assert not tier_allows(catalog, vip, "")
    # Without a ladder the mall relies on the saga's CheckTier.
    no_ladder = parse_mall({k: v for k, v in mall_section().items() if k != "levels"})
    assert tier_allows(no_ladder, no_ladder.items["vip-1-month"], "")


def test_codes_are_random_and_readable() -> None:
    codes = {generate_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(code) == 14 and code.count("-") == 2 for code in codes)
    assert not any(set(code) & set("ILOU") for code in codes)


# --- sessions as a property ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    weekday=st.integers(0, 6),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    minutes=st.integers(1, 600),
    offset_seconds=st.integers(0, 21 * 86_400),
)
def test_on_sale_exactly_inside_a_session(weekday, hour, minute, minutes, offset_seconds) -> None:
    """Against a brute-force reading of the session: on sale iff some weekly occurrence
    (local time) holds the instant; the bucket is that occurrence's start."""
    section = mall_section()
    day = WEEKDAYS[weekday]
    section["mall"]["items"] = [
        {
            "sku": "s",
            "kind": "coupon",
            "price_points": 1,
            "stock": 1,
            "sessions": {
                "weekly": {"day": day, "at": f"{hour:02d}:{minute:02d}", "minutes": minutes}
            },
        }
    ]
    item = parse_mall(section).items["s"]
    now = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(seconds=offset_seconds)
    state = sale_state(item, now, SHANGHAI)
    local = now.astimezone(SHANGHAI)
    holding = None
    for back in range(0, 9):
        date_ = (local - timedelta(days=back)).date()
        if date_.weekday() != weekday:
            continue
        start = datetime(date_.year, date_.month, date_.day, hour, minute, tzinfo=SHANGHAI)
        if start <= now < start + timedelta(minutes=minutes):
            holding = start
    assert state.on_sale == (holding is not None)
    if holding is not None:
        assert state.bucket == holding.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    else:
        assert state.next_session_start is not None
        assert state.next_session_start > now
