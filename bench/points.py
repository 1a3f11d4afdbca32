"""Points service speed: Earn through gRPC and the expiry sweep, each beside pgbench running a
one-row UPDATE on the same Postgres server in the same run. The ratio is the figure.

  .venv/bin/python bench/points.py [--seconds 10] [--concurrency 64] [--lots 1000000]
                                   [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]

Without --postgres-url it starts an embedded PostgreSQL in a temporary folder (as `make run`
does) and removes it afterwards. It then:
1. runs pgbench (the server's own, or the bundled one): `UPDATE bench_one_row SET n = n + 1
   WHERE id = :random` with 8 clients for --seconds (the ceiling of one-row write transactions);
2. starts the points service, configures app `bench` with the example program, and keeps
   --concurrency Earn calls in flight for --seconds: `purchase` events of random users among
   10,000, each a real credit (event row, lot, transaction, two legs, balance);
3. loads --lots due lots (5 per account) straight into the ledger, calls ExpireDue once and
   times it: lots expired per second against pgbench's row updates per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import closed_loop, pgbench_one_row_update, servers  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import Suite  # noqa: E402
from tests.programs import points_section  # noqa: E402

APP = "bench"
USERS = 10_000


async def earn_load(address: str, seconds: int, concurrency: int) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        configured = await stub.ConfigureRules(
            points_pb2.ConfigureRulesRequest(app=APP, section_json=json.dumps(points_section()))
        )
        assert not configured.errors, configured.errors

        def event() -> points_pb2.EarnRequest:
            return points_pb2.EarnRequest(
                app=APP,
                event_id=uuid.uuid4().hex,
                user_id=f"user-{random.randrange(USERS)}",
                action="purchase",
                attributes={"amount_fen": str(random.randrange(100, 100_000))},
            )

        return await closed_loop(lambda: stub.Earn(event()), seconds, concurrency)


def load_due_lots(database_url: str, lots: int) -> None:
    """`lots` due lots, five per account (five past expiry dates), balances to match."""
    accounts = max(1, lots // 5)
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM accounts").fetchone()
        assert first is not None
        start = int(first[0])
        conn.execute(
            """
            INSERT INTO accounts (id, app, kind, user_id, balance, held, lifetime_earned)
            SELECT g, %(app)s, 'user', 'due-' || g, 500, 0, 500
            FROM generate_series(%(start)s::bigint, %(end)s::bigint) g
            """,
            {"app": APP, "start": start, "end": start + accounts - 1},
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), %(end)s)",
            {"end": start + accounts},
        )
        conn.execute(
            """
            INSERT INTO lots (app, account_id, expires_at, amount, remaining, created_at)
            SELECT %(app)s, a, now() - make_interval(days => d), 100, 100, now() - interval '1 year'
            FROM generate_series(%(start)s::bigint, %(end)s::bigint) a, generate_series(1, 5) d
            LIMIT %(lots)s
            """,
            {"app": APP, "start": start, "end": start + accounts - 1, "lots": lots},
        )
        conn.execute("ANALYZE")


async def sweep(address: str) -> tuple[int, int, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        began = time.perf_counter()
        reply = await stub.ExpireDue(points_pb2.ExpireDueRequest(app=APP), timeout=600)
        return reply.lots_expired, reply.points_expired, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default="")
    args = parser.parse_args()

    # The service's own sweep must not race the timed ExpireDue.
    quiet = {"LOYALTY_POINTS_EXPIRY_SWEEP_SECONDS": "86400"}
    with servers("points", args.postgres_url, "", with_redis=False) as up:
        server_url, redis_url = up.postgres_url, up.redis_url
        suite = Suite(
            server_url, redis_url, {"points": free_port()}, up.workdir / "logs", extra_env=quiet
        )
        try:
            print(f"postgres: {make_url(server_url).render_as_string(hide_password=True)}")
            print(f"pgbench one-row UPDATE, 8 clients, {args.seconds} s ...", flush=True)
            update_tps = pgbench_one_row_update(server_url, args.seconds)
            print(f"  {update_tps:,.0f} tps   (BASELINES.md: 6,643 on PostgreSQL 15)")

            suite.create_databases()
            suite.start_service("points")
            suite.wait_serving("points")
            address = suite.address("points")
            print(
                f"Earn through gRPC, {args.concurrency} in flight, {args.seconds} s ...", flush=True
            )
            rate, p50, p99 = asyncio.run(earn_load(address, args.seconds, args.concurrency))
            print(f"  {rate:,.0f} Earn/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
            print(f"  ratio to the one-row UPDATE: {rate / update_tps:.2f}")

            print(f"loading {args.lots:,} due lots ...", flush=True)
            began = time.perf_counter()
            load_due_lots(suite.database_url("points"), args.lots)
            print(f"  loaded in {time.perf_counter() - began:.1f} s; ExpireDue ...", flush=True)
            expired, points, took = asyncio.run(sweep(address))
            per_second = expired / took if took else 0.0
            print(f"  {expired:,} lots ({points:,} points) expired in {took:.1f} s")
            print(f"  {per_second:,.0f} lots/s")
            print(f"  ratio to the one-row UPDATE: {per_second / update_tps:.2f}")
        finally:
            suite.stop()


if __name__ == "__main__":
    main()
