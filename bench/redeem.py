"""Redemption sagas per second through the gateway, beside the same redemption done as ONE
PostgreSQL transaction (shared/bench/monolith-redeem.pgbench) on the same server in the same run.

  .venv/bin/python bench/redeem.py [--seconds 20] [--concurrency 32] [--users 5000]
                                   [--postgres-url URL] [--redis-url URL]

Starts the whole suite (six processes) on an embedded PostgreSQL and Redis unless given URLs.
Prints: the monolith's tps; the saga's closed-loop rate with p50/p99 at ``--concurrency`` callers;
p50/p99 when paced at half that rate; and the CPU seconds each process spent per redemption,
which says what bounds the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.batch_sizes import batch_sizes, lines, step_lines  # noqa: E402
from bench.common import (  # noqa: E402
    Servers,
    analyze_databases,
    closed_loop,
    paced_loop,
    pgbench_binary,
    profile,
    run_load,
    servers,
)
from devtools.bootstrap import create_app_keys  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import SERVICES, Suite  # noqa: E402

MONOLITH = REPO / "bench" / "baselines" / "monolith-redeem"
APP = "bench"
# The saga load spreads over 20 coupon items (the monolith over 1,000 rows): a hot single
# item is the flash-sale figure, not this one.
COUPONS = [f"bench-coupon-{n:02d}" for n in range(1, 21)]
EXTRA_PROGRAM_ITEMS = (
    "".join(
        f"""    - sku: {sku}
      name: Bench coupon {sku[-2:]}
      kind: virtual
      price_points: 10
      stock: 100000000
"""
        for sku in COUPONS
    )
    + """    - sku: bench-flash
      name: Bench flash sale
      kind: coupon
      price_points: 10
      stock: 100
"""
)
EXTRA_POOL = """    - code: bench-wheel
      name: Bench wheel
      cost_points: 10
      prizes:
        - code: points-5
          kind: points
          amount: 5
          weight: 10
        - code: nothing
          kind: nothing
          weight: 90
"""


def monolith_tps(server_url: str, seconds: int, clients: int) -> float:
    """shared/bench/monolith-redeem.pgbench: schema from the .sql file's comments, then pgbench."""
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS loyalty_bench_monolith")
        conn.execute("CREATE DATABASE loyalty_bench_monolith")
    dsn = admin.set(database="loyalty_bench_monolith").render_as_string(hide_password=False)
    schema = [
        line.removeprefix("-- ").strip()
        for line in MONOLITH.with_suffix(".sql").read_text().splitlines()
        if line.startswith("-- create table") or line.startswith("-- insert into")
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in schema:
            conn.execute(statement.encode())
    out = subprocess.run(
        [
            pgbench_binary(),
            "-n",
            "-f",
            str(MONOLITH.with_suffix(".pgbench")),
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output:\n{out}")


async def make_app(suite: Suite) -> tuple[str, str]:
    """The bench app's member key (no rate limit to speak of) and admin key."""
    keys = await create_app_keys(
        suite.database_url("gateway"), APP, rate_per_second=1_000_000, burst=1_000_000
    )
    return keys.member_key, keys.admin_key


async def prepare(address: str, member: str, admin: str, users: int) -> None:
    program = (REPO / "examples" / "video-app.yaml").read_text(encoding="utf-8")
    program = program.replace("mall:\n  items:\n", "mall:\n  items:\n" + EXTRA_PROGRAM_ITEMS)
    program = program.replace("lottery:\n  pools:\n", "lottery:\n  pools:\n" + EXTRA_POOL)
    async with grpc.aio.insecure_channel(address) as channel:
        applied = await admin_pb2_grpc.AdminServiceStub(channel).ApplyProgram(
            admin_pb2.ApplyProgramRequest(program_yaml=program),
            metadata=(("authorization", f"Bearer {admin}"),),
            timeout=60,
        )
        assert applied.applied, applied.errors
        await every_member(
            loyalty_pb2_grpc.LoyaltyServiceStub(channel),
            member,
            users,
            lambda n: loyalty_pb2.RecordEventRequest(
                event_id=f"seed-{n}",
                user_id=f"user-{n}",
                action="purchase",
                attributes={"amount_fen": "100000000"},
                # Old accounts: risk's new-account rule stays out of the way; old purchases:
                # past the example's 7-day pending window.
                signed_up_at=_long_ago(),
                occurred_at=_long_ago(),
            ),
        )


async def every_member(
    stub: Any,
    member: str,
    users: int,
    event: Callable[[int], loyalty_pb2.RecordEventRequest],
) -> None:
    """One event for each member ``user-0`` .. ``user-{users-1}``, in RecordEvents of 500."""
    for start in range(0, users, 500):
        await stub.RecordEvents(
            loyalty_pb2.RecordEventsRequest(
                events=[event(n) for n in range(start, min(users, start + 500))]
            ),
            metadata=(("authorization", f"Bearer {member}"),),
            timeout=120,
        )


@contextmanager
def seeded_suite(up: Servers, users: int) -> Iterator[tuple[Suite, str, str]]:
    """The whole suite on the benchmark's servers, the bench app's program applied and
    ``users`` members seeded, its databases analyzed: (suite, member key, admin key)."""
    suite = Suite(
        up.postgres_url, up.redis_url, {s: free_port() for s in SERVICES}, up.workdir / "logs"
    )
    try:
        suite.start(timeout=90)
        member, admin = asyncio.run(make_app(suite))
        print(f"seeding {users:,} members ...", flush=True)
        asyncio.run(prepare(suite.address("gateway"), member, admin, users))
        analyze_databases(suite.postgres_url)
        yield suite, member, admin
    finally:
        suite.stop()


def _long_ago() -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(1_600_000_000)
    return stamp


async def load(
    address: str,
    member_key: str,
    users: int,
    seconds: float,
    concurrency: int,
    *,
    rate: float = 0.0,
) -> tuple[tuple[float, float, float], dict[str, int]]:
    """Redemptions over the 20 coupon items: ``concurrency`` callers in a closed loop, or with
    ``rate``, paced at that many a second. ((calls/s, p50 ms, p99 ms), outcomes)."""
    outcomes: dict[str, int] = {}
    metadata = (("authorization", f"Bearer {member_key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)

        async def redeem() -> None:
            reply = await stub.Redeem(
                loyalty_pb2.RedeemRequest(
                    request_id=uuid.uuid4().hex,
                    user_id=f"user-{random.randrange(users)}",
                    sku=random.choice(COUPONS),
                ),
                metadata=metadata,
                timeout=30,
            )
            key = loyalty_pb2.Redemption.Status.Name(reply.status) + (
                f"/{reply.reason}" if reply.reason else ""
            )
            outcomes[key] = outcomes.get(key, 0) + 1

        if rate:
            return await paced_loop(redeem, rate, seconds), outcomes
        return await closed_loop(redeem, seconds, concurrency, warmup=100), outcomes


def cpu_seconds(suite: Suite) -> dict[str, float]:
    """CPU seconds so far of each service process, of all PostgreSQL and Redis processes, and
    of this process (``client``: the load generator shares the two cores too)."""
    mine = psutil.Process().cpu_times()
    spent: dict[str, float] = {"client": mine.user + mine.system}
    for service, proc in suite.processes.items():
        times = psutil.Process(proc.pid).cpu_times()
        spent[service] = times.user + times.system
    for other in psutil.process_iter(["name", "cpu_times"]):
        name = (other.info["name"] or "").lower()
        group = "postgres" if "postgres" in name else "redis" if "redis" in name else None
        if group and other.info["cpu_times"] is not None:
            t = other.info["cpu_times"]
            spent[group] = spent.get(group, 0.0) + t.user + t.system
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of each service here")
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()

    with (
        servers("redeem", args.postgres_url, args.redis_url, with_redis=True) as up,
        batch_sizes() as sizes,
    ):
        print(
            f"monolith redemption (ONE transaction), pgbench {args.concurrency} clients, "
            f"{args.seconds} s ...",
            flush=True,
        )
        mono = monolith_tps(up.postgres_url, args.seconds, args.concurrency)
        print(f"  {mono:,.0f} tps", flush=True)
        with seeded_suite(up, args.users) as (suite, member_key, _):
            print(
                f"redemption saga through the gateway, {args.concurrency} callers, "
                f"{args.seconds} s, then paced at half that rate ...",
                flush=True,
            )
            address = suite.address("gateway")
            spies = profile(suite, args.profile, "redeem", args.seconds) if args.profile else []
            quiet = sizes.settled()
            before = cpu_seconds(suite)
            began = time.perf_counter()
            peak, outcomes = run_load(
                load(address, member_key, args.users, args.seconds, args.concurrency)
            )
            wall = time.perf_counter() - began
            after = cpu_seconds(suite)
            seen = sizes.since(quiet)
            for spy in spies:
                spy.wait(60)
            paced, _ = run_load(
                load(address, member_key, args.users, args.seconds, 0, rate=peak[0] / 2)
            )
            rate, p50, p99 = peak
            print(f"  closed loop: {rate:,.0f} sagas/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
            print(f"  outcomes: {outcomes}")
            print(f"  paced at {paced[0]:,.0f}/s: p50 {paced[1]:.1f} ms  p99 {paced[2]:.1f} ms")
            print(f"  ratio to the monolith transaction: {rate / mono:.3f}")
            total = sum(outcomes.values())
            print(
                f"CPU per redemption in the closed loop ({total:,} sagas in {wall:.0f} s, "
                f"2 cores = {2 * wall:.0f} CPU s available):"
            )
            for name in sorted(after, key=lambda n: -(after[n] - before.get(n, 0.0))):
                used = after[name] - before.get(name, 0.0)
                print(f"  {name:<9} {used:6.1f} CPU s  {1000 * used / max(total, 1):5.2f} ms/saga")
            spent = sum(after.values()) - sum(before.values())
            print(f"  {'all':<9} {spent:6.1f} CPU s  {1000 * spent / max(total, 1):5.2f} ms/saga")
            print("batch sizes in the closed loop (the processes' loyalty.batch.items):")
            print("\n".join(lines(seen)) or "  none reported")
            print("saga steps in the closed loop (mean latency of the answered ones):")
            print("\n".join(step_lines(seen)) or "  none reported")


if __name__ == "__main__":
    main()
