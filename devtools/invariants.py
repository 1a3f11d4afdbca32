"""The invariant checker: reads every service's store and checks, per app, what must always hold
(`make check-invariants`; the tests and the soak call `check_all`).

Per service: the ledger's checks (services/points/store/invariants.py), the mall's
(services/mall/store/invariants.py), the lottery's (stock and budget) and the saga log's
(every saga ended, or waits for an operator). Across services, saga by saga: a completed
redemption has one confirmed order and one captured hold of its price; a compensated one has
neither a live reservation nor a live or captured hold; a completed draw has one draw, its cost
captured and its prize given; a compensated draw has no draw and no hold. Read-only; run it
on a quiet suite (the soak waits for recovery first).

  .venv/bin/python -m devtools.invariants [--postgres-url URL]
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from devtools.suite import REPO
from plumbing.db import create_engine
from plumbing.settings import read_env_file
from services.mall.store.invariants import check_mall
from services.points.store.invariants import check_ledger

SERVICES = ("points", "mall", "lottery", "gateway")

LOTTERY_CHECKS = {
    "prize stock never below zero": """
        SELECT pool, prize, base + added - awarded FROM prize_stock
        WHERE app = :app AND awarded > base + added
    """,
    "draws counted once per day": """
        SELECT p.pool, p.day, p.draws, count(d.*) FROM daily_payout p
        LEFT JOIN draws d ON d.app = p.app AND d.pool = p.pool AND d.day = p.day
        WHERE p.app = :app GROUP BY p.pool, p.day, p.draws HAVING p.draws <> count(d.*)
    """,
    "payout equals the draws' values": """
        SELECT p.pool, p.day, p.payout_points, coalesce(sum(d.value_points), 0) FROM daily_payout p
        LEFT JOIN draws d ON d.app = p.app AND d.pool = p.pool AND d.day = p.day
        WHERE p.app = :app GROUP BY p.pool, p.day, p.payout_points
        HAVING p.payout_points <> coalesce(sum(d.value_points), 0)
    """,
    "awarded stock equals the draws": """
        SELECT s.pool, s.prize, s.awarded, count(d.*) FROM prize_stock s
        LEFT JOIN draws d ON d.app = s.app AND d.pool = s.pool AND d.prize = s.prize
        WHERE s.app = :app GROUP BY s.pool, s.prize, s.awarded HAVING s.awarded <> count(d.*)
    """,
}
GATEWAY_CHECKS = {
    "every saga ended or waits for an operator": """
        SELECT saga_id, kind, state FROM sagas
        WHERE app = :app AND state NOT IN ('COMPLETED', 'COMPENSATED', 'NEEDS_ATTENTION')
    """,
    "a referral's state agrees with its fields": """
        SELECT referral_id, state, reason FROM referrals
        WHERE app = :app AND (
            state NOT IN ('PENDING', 'QUALIFIED', 'PAID', 'EXPIRED', 'REFUSED')
         OR (state = 'PAID') <> (paid_at IS NOT NULL)
         OR (state IN ('QUALIFIED', 'PAID') AND (qualifying_event_id = '' OR payable_at IS NULL))
         OR (state = 'PAID' AND paid_at < payable_at)
         OR (state IN ('EXPIRED', 'REFUSED') AND reason = ''))
    """,
    # At most per_referrer.monthly paid referrals per referrer per local month.
    "referrals paid within the monthly limit": """
        SELECT r.referrer_user_id, date_trunc('month', r.paid_at AT TIME ZONE
                                              (a.program->'program'->>'timezone')), count(*)
        FROM referrals r JOIN apps a ON a.app = r.app
        WHERE r.app = :app AND r.state = 'PAID'
          AND a.program->'program'->'referrals'->'per_referrer' ? 'monthly'
        GROUP BY 1, 2, (a.program->'program'->'referrals'->'per_referrer'->>'monthly')::int
        HAVING count(*) > (a.program->'program'->'referrals'->'per_referrer'->>'monthly')::int
    """,
}


@dataclass
class Check:
    name: str
    app: str
    violations: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


async def _rows(
    conn: AsyncConnection, query: str, params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await conn.execute(text(query), dict(params))]


async def _apps(conn: AsyncConnection, table: str) -> list[str]:
    return [row[0] for row in await conn.execute(text(f"SELECT DISTINCT app FROM {table}"))]


async def check_all(urls: Mapping[str, str], only_app: str | None = None) -> list[Check]:
    engines = {name: create_engine(url, 2) for name, url in urls.items()}
    try:
        return await _check(engines, only_app)
    finally:
        for engine in engines.values():
            await engine.dispose()


async def unfinished_sagas(urls: Mapping[str, str]) -> int:
    """Sagas still being driven (or waiting for the recovery loop), over every app."""
    engine = create_engine(urls["gateway"], 1)
    try:
        async with engine.connect() as conn:
            left = await conn.execute(
                text(
                    "SELECT count(*) FROM sagas"
                    " WHERE state IN ('STARTED', 'CONFIRMING', 'COMPENSATING')"
                )
            )
            return int(left.scalar_one())
    finally:
        await engine.dispose()


async def _check(engines: Mapping[str, AsyncEngine], only_app: str | None) -> list[Check]:
    results: list[Check] = []
    async with (
        engines["points"].connect() as points,
        engines["mall"].connect() as mall,
        engines["lottery"].connect() as lottery,
        engines["gateway"].connect() as gateway,
    ):
        apps = (
            [only_app]
            if only_app
            else sorted(
                set(await _apps(points, "apps"))
                | set(await _apps(mall, "apps"))
                | set(await _apps(lottery, "apps"))
                | set(await _apps(gateway, "sagas"))
            )
        )
        for app in apps:
            params = {"app": app}
            ledger: dict[str, Check] = {}
            for violation in await check_ledger(points, app):
                ledger.setdefault(violation.check, Check(f"points: {violation.check}", app))
                ledger[violation.check].violations.append(violation.row)
            results.extend(ledger.values() or [Check("points: ledger", app)])
            stock: dict[str, Check] = {}
            for found in await check_mall(mall, app):
                stock.setdefault(found.check, Check(f"mall: {found.check}", app))
                stock[found.check].violations.append(found.row)
            results.extend(stock.values() or [Check("mall: stock, orders, codes", app)])
            for name, query in LOTTERY_CHECKS.items():
                results.append(Check(f"lottery: {name}", app, await _rows(lottery, query, params)))
            for name, query in GATEWAY_CHECKS.items():
                results.append(Check(f"gateway: {name}", app, await _rows(gateway, query, params)))
            results.extend(await _sagas(app, points, mall, lottery, gateway))
            results.append(await _referrals(app, points, gateway))
    return results


async def _referrals(app: str, points: AsyncConnection, gateway: AsyncConnection) -> Check:
    """A paid referral granted each side's points once; any other granted nothing."""
    params = {"app": app}
    grants: dict[str, int] = {}
    for ref, n in await _rows(
        points,
        "SELECT ref, count(*) FROM transactions WHERE app = :app AND kind = 'grant'"
        " AND ref LIKE 'referral:%' GROUP BY ref",
        params,
    ):
        grants[ref] = int(n)
    check = Check("referrals: a paid referral paid each side once; others paid nothing", app)
    for referral_id, state, referrer_points, referred_points in await _rows(
        gateway,
        "SELECT referral_id, state, referrer_points, referred_points FROM referrals"
        " WHERE app = :app",
        params,
    ):
        for side, amount in (("referrer", referrer_points), ("referred", referred_points)):
            made = grants.get(f"referral:{referral_id}:{side}", 0)
            # A payer that died between the grants and the PAID mark leaves QUALIFIED with
            # grants made; the next pass marks it PAID without granting again.
            expected = {1} if state == "PAID" and amount > 0 else {0}
            if state == "QUALIFIED":
                expected = {0, 1}
            if made not in expected:
                check.violations.append((referral_id, state, side, made))
    return check


async def _sagas(
    app: str,
    points: AsyncConnection,
    mall: AsyncConnection,
    lottery: AsyncConnection,
    gateway: AsyncConnection,
) -> list[Check]:
    """Each ended saga against what its participants hold."""
    params = {"app": app}
    sagas = await _rows(
        gateway,
        "SELECT saga_id, kind, state FROM sagas WHERE app = :app "
        "AND state IN ('COMPLETED', 'COMPENSATED')",
        params,
    )
    holds = {
        r[0]: r[1:]
        for r in await _rows(
            points, "SELECT saga_id, state, amount, refunded FROM holds WHERE app = :app", params
        )
    }
    reservations = {
        r[0]: r[1:]
        for r in await _rows(
            mall, "SELECT saga_id, state, price_points FROM reservations WHERE app = :app", params
        )
    }
    orders: dict[str, list[tuple[Any, ...]]] = {}
    for r in await _rows(
        mall, "SELECT saga_id, status, price_points FROM orders WHERE app = :app", params
    ):
        orders.setdefault(r[0], []).append(r[1:])
    draws = {
        r[0]: r[1:]
        for r in await _rows(
            lottery, "SELECT saga_id, kind, points FROM draws WHERE app = :app", params
        )
    }
    awards = {
        r[0]
        for r in await _rows(
            points,
            "SELECT ref FROM transactions WHERE app = :app AND kind = 'grant' AND ref LIKE :suffix",
            {**params, "suffix": "%:award"},
        )
    }
    redeem = Check(
        "sagas: a completed redemption has one order and one captured hold of its "
        "price; a compensated one holds nothing",
        app,
    )
    draw = Check(
        "sagas: a completed draw has one draw, its cost captured once and its prize "
        "given once; a compensated one has no draw and holds nothing",
        app,
    )
    for saga_id, kind, state in sagas:
        hold = holds.get(saga_id)
        if kind == "redeem":
            made = [o for o in orders.get(saga_id, []) if o[0].upper() != "CANCELLED"]
            if state == "COMPLETED":
                fine = (
                    len(made) == 1
                    and hold is not None
                    and hold[0] == "CAPTURED"
                    and hold[1] - hold[2] == made[0][1]
                )
            else:
                fine = (
                    not made
                    and (hold is None or hold[0] in ("RELEASED", "EXPIRED") or hold[1] == hold[2])
                    and reservations.get(saga_id, ("RELEASED",))[0] != "RESERVED"
                )
            if not fine:
                redeem.violations.append((saga_id, state, hold, made))
        elif kind == "draw":
            logged = draws.get(saga_id)
            if state == "COMPLETED":
                prize_given = logged is not None and (
                    logged[0] == "nothing"
                    or (logged[0] == "points" and f"{saga_id}:award" in awards)
                    or (logged[0] == "item" and len(orders.get(f"{saga_id}:prize", [])) == 1)
                )
                fine = prize_given and hold is not None and hold[0] == "CAPTURED"
            else:
                fine = logged is None and (hold is None or hold[0] in ("RELEASED", "EXPIRED"))
            if not fine:
                draw.violations.append((saga_id, state, hold, logged))
    return [redeem, draw]


def urls_from(postgres_url: str) -> dict[str, str]:
    base = make_url(postgres_url).set(drivername="postgresql+psycopg")
    return {
        name: base.set(database=f"loyalty_{name}").render_as_string(hide_password=False)
        for name in SERVICES
    }


def report(results: list[Check]) -> bool:
    for check in results:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark} {check.app:<16} {check.name}: {len(check.violations)} violation(s)")
        for row in check.violations[:5]:
            print(f"       {row}")
    broken = sum(1 for c in results if not c.ok)
    print(f"{len(results)} checks, {broken} failing")
    return broken == 0


def main() -> None:
    url = ""
    args = sys.argv[1:]
    if "--postgres-url" in args:
        url = args[args.index("--postgres-url") + 1]
    if not url:
        url = os.environ.get("LOYALTY_POSTGRES_URL", "")
    if not url:
        url = read_env_file(REPO / ".loyalty" / "dev.env").get("LOYALTY_POSTGRES_URL", "")
    if not url:
        print(
            "no PostgreSQL: pass --postgres-url or set LOYALTY_POSTGRES_URL (or make run)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    ok = report(asyncio.run(check_all(urls_from(url))))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
