"""Levels service speed: AddGrowth and CheckTier through gRPC, the set-wise EvaluateTiers and
a leaderboard rebuild, each beside its baseline measured in the same run.

  .venv/bin/python bench/levels.py [--seconds 10] [--concurrency 64] [--members 100000]
                                   [--postgres-url URL] [--redis-url URL]

Without URLs it starts an embedded PostgreSQL and Redis in a temporary folder (as `make run`
does) and removes them afterwards. It then:
1. runs pgbench's one-row UPDATE (8 clients) and a bare grpc.aio Health/Check server (the
   ceilings of a one-row write and of a Python gRPC call on this machine);
2. starts the levels service, configures app `bench` with the example program (requalify
   yearly, daily cap 200, badges) and keeps --concurrency AddGrowth calls (`sign_in`, 10 growth,
   random users among 10,000) in flight for --seconds; then CheckTier(min_tier rookie) the same;
3. loads --members members with two days of growth each (last year and this year) straight
   into the tables and times EvaluateTiers over all of them (a yearly boundary's work);
4. deletes the app's boards from Redis and times the rebuild the next GetRank triggers.
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
import redis
from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import closed_loop, pgbench_one_row_update, servers  # noqa: E402
from bench.grpc_overhead import run_mode  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import Suite  # noqa: E402
from tests.programs import levels_section  # noqa: E402

APP = "bench"
USERS = 10_000


async def online_load(
    address: str, seconds: int, concurrency: int
) -> dict[str, tuple[float, float, float]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = levels_pb2_grpc.LevelsServiceStub(channel)
        configured = await stub.ConfigureLevels(
            levels_pb2.ConfigureLevelsRequest(app=APP, section_json=json.dumps(levels_section()))
        )
        assert not configured.errors, configured.errors

        def growth() -> levels_pb2.AddGrowthRequest:
            return levels_pb2.AddGrowthRequest(
                app=APP,
                event_id=uuid.uuid4().hex,
                user_id=f"user-{random.randrange(USERS)}",
                action="sign_in",
                amount=10,
            )

        def check() -> levels_pb2.CheckTierRequest:
            return levels_pb2.CheckTierRequest(
                app=APP, user_id=f"user-{random.randrange(USERS)}", min_tier="rookie"
            )

        return {
            "AddGrowth": await closed_loop(lambda: stub.AddGrowth(growth()), seconds, concurrency),
            "CheckTier": await closed_loop(lambda: stub.CheckTier(check()), seconds, concurrency),
        }


def load_members(database_url: str, members: int) -> None:
    """Members judged last year, with growth on a day last year and a day this year: at the
    yearly boundary some keep their tier and some fall."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO members (app, user_id, tier, program_version, evaluated_day,
                                 lifetime_growth, created_at, updated_at)
            SELECT %(app)s, 'loaded-' || g, 'actor', 1, current_date - 400, 3000, now(), now()
            FROM generate_series(1, %(n)s) g
            """,
            {"app": APP, "n": members},
        )
        conn.execute(
            """
            INSERT INTO growth_days (app, user_id, day, amount, counted)
            SELECT %(app)s, 'loaded-' || g, d.day, 500 + (g %% 7) * d.scale, 0
            FROM generate_series(1, %(n)s) g,
                 (VALUES (date_trunc('year', current_date)::date - 100, 2000),
                         (current_date - 1, 300)) AS d(day, scale)
            """,
            {"app": APP, "n": members},
        )
        conn.execute("ANALYZE")


async def evaluate_all(address: str) -> tuple[int, int, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = levels_pb2_grpc.LevelsServiceStub(channel)
        began = time.perf_counter()
        reply = await stub.EvaluateTiers(levels_pb2.EvaluateTiersRequest(app=APP), timeout=900)
        return reply.users_evaluated, reply.tiers_changed, time.perf_counter() - began


async def rebuild_boards(address: str, redis_url: str) -> float:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"loyalty:levels:{{{APP}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = levels_pb2_grpc.LevelsServiceStub(channel)
        began = time.perf_counter()
        await stub.GetRank(
            levels_pb2.GetRankRequest(app=APP, user_id="user-1", board=levels_pb2.ALL_TIME),
            timeout=900,
        )
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()

    # The tier job must not race the timed EvaluateTiers.
    quiet = {"LOYALTY_LEVELS_TIER_SWEEP_SECONDS": "86400"}
    with servers("levels", args.postgres_url, args.redis_url, with_redis=True) as up:
        server_url, redis_url = up.postgres_url, up.redis_url
        suite = Suite(
            server_url, redis_url, {"levels": free_port()}, up.workdir / "logs", extra_env=quiet
        )
        try:
            print(f"postgres: {make_url(server_url).render_as_string(hide_password=True)}")
            print(f"pgbench one-row UPDATE, 8 clients, {args.seconds} s ...", flush=True)
            update_tps = pgbench_one_row_update(server_url, args.seconds)
            print(f"  {update_tps:,.0f} tps   (BASELINES.md: 6,643 on PostgreSQL 15)")
            print(f"bare grpc.aio Health/Check, {args.concurrency} in flight ...", flush=True)
            echo, _, _ = run_mode("bare", free_port(), args.seconds, args.concurrency)
            print(f"  {echo:,.0f} RPC/s   (BASELINES.md: ~6,900)")

            suite.create_databases()
            suite.start_service("levels")
            suite.wait_serving("levels")
            address = suite.address("levels")
            print(
                f"AddGrowth and CheckTier, {args.concurrency} in flight, {args.seconds} s each ..."
            )
            online = asyncio.run(online_load(address, args.seconds, args.concurrency))
            for name, baseline, label in (
                ("AddGrowth", update_tps, "the one-row UPDATE"),
                ("CheckTier", echo, "the bare gRPC call"),
            ):
                rate, p50, p99 = online[name]
                print(f"  {name}: {rate:,.0f}/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
                print(f"    ratio to {label}: {rate / baseline:.2f}")

            print(f"loading {args.members:,} members ...", flush=True)
            load_members(suite.database_url("levels"), args.members)
            evaluated, changed, took = asyncio.run(evaluate_all(address))
            rate = evaluated / took if took else 0.0
            print(f"  EvaluateTiers: {evaluated:,} members ({changed:,} changed) in {took:.1f} s")
            print(f"  {rate:,.0f} members/s; ratio to the one-row UPDATE: {rate / update_tps:.2f}")

            took = asyncio.run(rebuild_boards(address, redis_url))
            print(f"  board rebuild (all time, week, month) on the next read: {took:.2f} s")
        finally:
            suite.stop()


if __name__ == "__main__":
    main()
