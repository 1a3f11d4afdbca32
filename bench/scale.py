"""Scale with data: GetMember, ListPointsHistory and Redeem latency on an empty app, then again
after loading 1,000,000 members and 10,000,000 ledger entries into the same app (points'
database: accounts, lots, transactions and their legs, consistent with the ledger's
invariants).

  .venv/bin/python bench/scale.py [--seconds 10] [--members 1000000] [--transactions 5]

Each member gets `--transactions` earn transactions of two legs each (the member's and the
issued account's), so the default is 10,000,000 entries. Target: every figure within 1.5× of
the empty-database figure. The ledger reads by account (`entries_account_id_idx` on
(account_id, id), accounts by (app, kind, user_id)), so a member's reads cost the same however
many other members there are: indexes, not partitioning (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
from loyalty.gateway.v1 import loyalty_pb2, loyalty_pb2_grpc
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import closed_loop, servers  # noqa: E402
from bench.redeem import COUPONS, make_app, prepare  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import SERVICES, Suite  # noqa: E402

SEED = """
INSERT INTO accounts (app, kind, user_id, balance, held, lifetime_earned)
SELECT 'bench', 'user', 'filler-' || g, 10 * %(per)s, 0, 10 * %(per)s
FROM generate_series(1, %(members)s) g;

INSERT INTO lots (app, account_id, expires_at, amount, remaining, created_at)
SELECT 'bench', id, now() + interval '300 days', 10 * %(per)s, 10 * %(per)s, now()
FROM accounts WHERE app = 'bench' AND kind = 'user' AND user_id LIKE 'filler-%%';

CREATE TEMP TABLE filler AS
SELECT a.id AS account_id, l.id AS lot_id FROM accounts a JOIN lots l ON l.account_id = a.id
WHERE a.app = 'bench' AND a.kind = 'user' AND a.user_id LIKE 'filler-%%';

CREATE TEMP TABLE filler_txn AS
SELECT nextval(pg_get_serial_sequence('transactions', 'id')) AS txn_id, f.account_id, f.lot_id, k
FROM filler f, generate_series(1, %(per)s) k;

INSERT INTO transactions (id, app, kind, ref, reason, created_at)
SELECT txn_id, 'bench', 'earn', 'filler-' || txn_id, 'watch', now() - k * interval '1 hour'
FROM filler_txn;

INSERT INTO entries (txn_id, app, account_id, amount, lot_id, created_at)
SELECT txn_id, 'bench', account_id, 10, lot_id, now() FROM filler_txn
UNION ALL
SELECT txn_id, 'bench', (SELECT id FROM accounts WHERE app = 'bench' AND kind = 'issued'),
       -10, NULL, now()
FROM filler_txn;

ANALYZE accounts; ANALYZE lots; ANALYZE transactions; ANALYZE entries;
"""


def say(message: str) -> None:
    print(message, flush=True)


async def measure(
    address: str, member: str, users: int, seconds: float
) -> dict[str, tuple[float, float, float]]:
    md = (("authorization", f"Bearer {member}"),)
    out = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)

        def user() -> str:
            return f"user-{random.randrange(users)}"

        async def get_member() -> None:
            await stub.GetMember(
                loyalty_pb2.GetMemberRequest(user_id=user()), metadata=md, timeout=30
            )

        async def history() -> None:
            await stub.ListPointsHistory(
                loyalty_pb2.ListPointsHistoryRequest(user_id=user(), page_size=20),
                metadata=md,
                timeout=30,
            )

        async def redeem() -> None:
            await stub.Redeem(
                loyalty_pb2.RedeemRequest(
                    request_id=uuid.uuid4().hex, user_id=user(), sku=random.choice(COUPONS)
                ),
                metadata=md,
                timeout=60,
            )

        for name, call in (
            ("GetMember", get_member),
            ("ListPointsHistory", history),
            ("Redeem", redeem),
        ):
            out[name] = await closed_loop(call, seconds, 8, warmup=20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=5)
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    with servers("scale", with_redis=True) as up:
        suite = Suite(
            up.postgres_url, up.redis_url, {s: free_port() for s in SERVICES}, up.workdir / "logs"
        )
        try:
            suite.start(timeout=90)
            member, admin = asyncio.run(make_app(suite))
            asyncio.run(prepare(suite.address("gateway"), member, admin, args.users))
            say("empty app (a few thousand members) ...")
            empty = asyncio.run(measure(suite.address("gateway"), member, args.users, args.seconds))
            entries = args.members * args.transactions * 2
            say(f"loading {args.members:,} members and {entries:,} ledger entries ...")
            began = time.monotonic()
            dsn = make_url(suite.database_url("points")).set(drivername="postgresql")
            with psycopg.connect(
                dsn.render_as_string(hide_password=False), autocommit=True
            ) as conn:
                for statement in SEED.split(";\n"):
                    if statement.strip():
                        conn.execute(
                            statement.encode(),
                            {"members": args.members, "per": args.transactions},
                        )
                count = conn.execute("SELECT count(*) FROM entries").fetchone()
            say(
                f"  loaded in {time.monotonic() - began:.0f} s; entries now {count[0]:,}"
                if count
                else ""
            )
            say("loaded app ...")
            loaded = asyncio.run(
                measure(suite.address("gateway"), member, args.users, args.seconds)
            )
        finally:
            suite.stop()
    say(f"{'call':<18} {'empty p50':>10} {'p99':>8} {'loaded p50':>11} {'p99':>8} {'p99 ratio':>9}")
    for name in empty:
        e, lo = empty[name], loaded[name]
        say(
            f"{name:<18} {e[1]:>9.1f}ms {e[2]:>6.1f}ms {lo[1]:>10.1f}ms {lo[2]:>6.1f}ms "
            f"{lo[2] / e[2]:>9.2f}"
        )


if __name__ == "__main__":
    main()
