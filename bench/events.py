"""RecordEvents and RecordEvent through the gateway, beside a bare grpc.aio echo and pgbench's
one-row UPDATE measured in the same run, with the CPU each process spends per event.

  .venv/bin/python bench/events.py [--seconds 10] [--users 5000] [--batch 500]
                                   [--batches-in-flight 4] [--callers 64]
                                   [--postgres-url URL] [--redis-url URL]

Starts the whole suite (six processes) on an embedded PostgreSQL and Redis unless given URLs,
seeds ``--users`` members, then runs two closed loops: RecordEvents in batches of ``--batch``
with ``--batches-in-flight`` calls in flight, and RecordEvent one event a call with
``--callers`` in flight. Each event is a ``watch`` of 10 minutes by a random member (earning
points and growth until the member's daily limit, as a real evening does).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    closed_loop,
    pgbench_one_row_update,
    profile,
    run_load,
    servers,
)
from bench.grpc_overhead import run_mode  # noqa: E402
from bench.redeem import cpu_seconds, every_member, seeded_suite  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import Suite  # noqa: E402

GOAL_BATCHED = 10_000
GOAL_SINGLE = 2_000
# Issue 24: a batch with campaigns within 20% of the same batch without.
CAMPAIGN_SLOWDOWN_LIMIT = 0.20
# A campaign that pays every bench event (a `watch`), judging all three kinds of audience
# (tier: levels is asked; tags and segments: the gateway's own read) and spending a budget
# (its row locked by every batch), beside the example's own campaigns.
BENCH_CAMPAIGN = """  - code: bench-watch
    actions: [watch]
    multiplier: 2
    bonus_points: 1
    audience: { tiers: [rookie, actor, star], tags: [vip], segments: [newcomer] }
    budget_points: 1000000000
"""


async def next_day(
    suite: Suite, keys: tuple[str, str], users: int, campaign: bool, day: int
) -> None:
    """A new local day for the bench app (the loads before used up the members' daily watch
    limit, and a campaign pays only events that earned points of their own), with
    BENCH_CAMPAIGN added to its program when ``campaign``; then every member touched once (a
    comment too short to pay: levels judges each member again after a program change, one by
    one, which is not the cost being measured)."""
    member, admin = keys
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
        md = (("authorization", f"Bearer {admin}"),)
        if campaign:
            current = await admin_stub.GetProgram(admin_pb2.GetProgramRequest(), metadata=md)
            program = current.program_yaml.replace("campaigns:\n", "campaigns:\n" + BENCH_CAMPAIGN)
            applied = await admin_stub.ApplyProgram(
                admin_pb2.ApplyProgramRequest(program_yaml=program), metadata=md, timeout=60
            )
            assert applied.applied, applied.errors
        await admin_stub.AdvanceClock(
            admin_pb2.AdvanceClockRequest(seconds=86_400, request_id=f"bench-day-{day}"),
            metadata=md,
            timeout=60,
        )
        await every_member(
            loyalty_pb2_grpc.LoyaltyServiceStub(channel),
            member,
            users,
            lambda n: loyalty_pb2.RecordEventRequest(
                event_id=f"touch-{day}-{n}",
                user_id=f"user-{n}",
                action="comment",
                attributes={"length": "1"},
            ),
        )


async def measure(
    suite: Suite,
    member: str,
    admin: str,
    users: int,
    seconds: float,
    batch_size: int,
    batches_in_flight: int,
    callers: int,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Both loads, each as (events/s, p50 ms, p99 ms, CPU ms per event by process)."""
    md = (("authorization", f"Bearer {member}"),)
    ids = itertools.count()
    rng = random.Random(19)

    def event() -> loyalty_pb2.RecordEventRequest:
        return loyalty_pb2.RecordEventRequest(
            event_id=f"bench-{next(ids)}",
            user_id=f"user-{rng.randrange(users)}",
            action="watch",
            quantity=10,
        )

    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)

        async def batch() -> None:
            request = loyalty_pb2.RecordEventsRequest(events=[event() for _ in range(batch_size)])
            await stub.RecordEvents(request, metadata=md, timeout=120)

        async def single() -> None:
            await stub.RecordEvent(event(), metadata=md, timeout=30)

        async def run(
            call: Callable[[], Awaitable[None]], per_call: int, concurrency: int, warmup: int
        ) -> tuple[float, float, float, dict[str, float]]:
            for _ in range(warmup):
                await call()
            spies = profile(suite, profile_dir, f"{per_call}", seconds) if profile_dir else []
            before = cpu_seconds(suite)
            work = await asyncio.to_thread(database_work, suite.postgres_url)
            start = next(ids)
            rate, p50, p99 = await closed_loop(call, seconds, concurrency, warmup=0)
            for spy in spies:
                spy.wait(60)
            done = next(ids) - start
            after = cpu_seconds(suite)
            print(f"database work, {'batched' if per_call > 1 else 'single'}:")
            print(
                "\n".join(
                    work_lines(
                        work, await asyncio.to_thread(database_work, suite.postgres_url), done
                    )
                )
            )
            cpu = {
                name: 1000 * (after[name] - before.get(name, 0.0)) / max(done, 1) for name in after
            }
            return rate * per_call, p50, p99, cpu

        out["batched"] = await run(batch, batch_size, batches_in_flight, 2)
        out["single"] = await run(single, 1, callers, 100)
        # The two compared on days of their own, one after the other: same members, same
        # state, one with a campaign paying every event.
        await next_day(suite, (member, admin), users, campaign=False, day=1)
        print("batched again, on a new day, without a campaign:")
        out["batched_fresh_day"] = await run(batch, batch_size, batches_in_flight, 2)
        await next_day(suite, (member, admin), users, campaign=True, day=2)
        print("batched on the next day, with a campaign paying every event:")
        out["batched_campaign"] = await run(batch, batch_size, batches_in_flight, 2)
    return out


def database_work(postgres_url: str) -> dict[str, tuple[int, ...]]:
    """Per database: commits, rows returned, fetched, inserted, updated (pg_stat_database)."""
    url = make_url(postgres_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname, xact_commit + xact_rollback, tup_returned, tup_fetched,"
            " tup_inserted, tup_updated FROM pg_stat_database WHERE datname LIKE 'loyalty%%'"
        ).fetchall()
    return {row[0]: tuple(int(v) for v in row[1:]) for row in rows}


def work_lines(
    before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]], events: int
) -> list[str]:
    lines = [
        f"    {'per 100 events':<18} "
        + " ".join(f"{h:>8}" for h in ("xacts", "returned", "fetched", "inserted", "updated"))
    ]
    for name in sorted(after):
        delta = [
            (a - b) * 100 / max(events, 1)
            for a, b in zip(after[name], before.get(name, after[name]), strict=True)
        ]
        lines.append(f"    {name:<18} " + " ".join(f"{d:>8.1f}" for d in delta))
    return lines


def cpu_lines(cpu: dict[str, float]) -> list[str]:
    total = sum(cpu.values())
    ceiling = 2000 / max(total, 1e-9)
    lines = [
        f"    {name:<9} {ms:6.3f} ms CPU/event"
        for name, ms in sorted(cpu.items(), key=lambda x: -x[1])
    ]
    return [
        *lines,
        f"    {'all':<9} {total:6.3f} ms CPU/event (2 cores: ceiling {ceiling:,.0f} events/s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batches-in-flight", type=int, default=4)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of each service here")
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    with servers("events", args.postgres_url, args.redis_url, with_redis=True) as up:
        print("baselines ...", flush=True)
        update = pgbench_one_row_update(up.postgres_url, int(args.seconds))
        echo, _, _ = run_mode("bare", free_port(), args.seconds, 64)
        print(f"  pgbench one-row UPDATE (8 clients): {update:,.0f} tps")
        print(f"  bare grpc.aio echo (64 in flight):  {echo:,.0f} calls/s")
        with seeded_suite(up, args.users) as (suite, member, admin):
            print("loads ...", flush=True)
            out = run_load(
                measure(
                    suite,
                    member,
                    admin,
                    args.users,
                    args.seconds,
                    args.batch,
                    args.batches_in_flight,
                    args.callers,
                    args.profile,
                )
            )
    rate, p50, p99, cpu = out["batched"]
    print(
        f"RecordEvents, batches of {args.batch}, {args.batches_in_flight} in flight: "
        f"{rate:,.0f} events/s (p50 {p50:.0f} ms, p99 {p99:.0f} ms per call); goal "
        f"{GOAL_BATCHED:,}: {'met' if rate >= GOAL_BATCHED else 'NOT met'}; "
        f"{rate / update:.2f}x the one-row UPDATE"
    )
    print("\n".join(cpu_lines(cpu)))
    rate, p50, p99, cpu = out["single"]
    print(
        f"RecordEvent, one event a call, {args.callers} in flight: {rate:,.0f} events/s "
        f"(p50 {p50:.1f} ms, p99 {p99:.1f} ms); goal {GOAL_SINGLE:,}: "
        f"{'met' if rate >= GOAL_SINGLE else 'NOT met'}; {rate / echo:.2f}x the bare echo"
    )
    print("\n".join(cpu_lines(cpu)))
    plain, _, _, plain_cpu = out["batched_fresh_day"]
    print(f"RecordEvents again on a new day, without a campaign: {plain:,.0f} events/s")
    print("\n".join(cpu_lines(plain_cpu)))
    rate, p50, p99, cpu = out["batched_campaign"]
    slower = 1 - rate / plain
    print(
        f"RecordEvents with a campaign paying every event: {rate:,.0f} events/s (p50 {p50:.0f} "
        f"ms, p99 {p99:.0f} ms per call); {-slower:+.0%} against the day without ({plain:,.0f}); "
        f"limit {CAMPAIGN_SLOWDOWN_LIMIT:.0%}: "
        f"{'met' if slower <= CAMPAIGN_SLOWDOWN_LIMIT else 'NOT met'}"
    )
    print("\n".join(cpu_lines(cpu)))


if __name__ == "__main__":
    main()
