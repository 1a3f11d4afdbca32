"""Mall speed during a flash sale: 100 units against 64 concurrent buyers (how fast the units
go, and how fast the losers hear OUT_OF_STOCK), then a sustained reserve rate on a deep item,
each beside its baselines measured in the same run.

  .venv/bin/python bench/mall.py [--seconds 10] [--concurrency 64]
                                 [--postgres-url URL] [--redis-url URL]

Without URLs it starts an embedded PostgreSQL and Redis in a temporary folder and removes them
afterwards. Baselines: a bare grpc.aio Health/Check server (the ceiling of a Python gRPC call
here), `redis-benchmark` GET (if installed) and pgbench's one-row UPDATE (a reservation is one
guarded UPDATE of the stock row plus its own rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    closed_loop,
    cuts,
    pgbench_one_row_update,
    redis_get_rate,
    servers,
)
from bench.grpc_overhead import run_mode  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import Suite  # noqa: E402
from plumbing.grpc_errors import reason_of  # noqa: E402
from tests.programs import mall_section  # noqa: E402

APP = "bench"


@dataclass
class SaleResult:
    reserved: int
    others: dict[str, int]
    reserve_cuts: tuple[float, float]
    sold_in: float
    rejected: int
    reject_rate: float
    reject_cuts: tuple[float, float]
    deep: tuple[float, float, float]


async def flash_sale(address: str, seconds: int, concurrency: int) -> SaleResult:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = mall_pb2_grpc.MallServiceStub(channel)
        section = mall_section()
        section["mall"]["items"] += [
            {
                "sku": "flash",
                "kind": "coupon",
                "price_points": 100,
                "stock": 100,
                "coupon_codes": "generate",
            },
            {"sku": "deep", "kind": "virtual", "price_points": 1, "stock": 10_000_000},
        ]
        await stub.UpsertItems(
            mall_pb2.UpsertItemsRequest(app=APP, section_json=json.dumps(section))
        )

        def reserve(sku: str) -> mall_pb2.ReserveRequest:
            buyer = uuid.uuid4().hex
            return mall_pb2.ReserveRequest(
                app=APP, saga_id=buyer, user_id=buyer, sku=sku, quantity=1
            )

        for _ in range(100):  # warm up connections and caches on the deep item
            await stub.Reserve(reserve("deep"))
        latencies: dict[str, list[float]] = defaultdict(list)
        sold_out_at: list[float] = []
        began = time.perf_counter()
        end = began + seconds

        async def buyer() -> None:
            while time.perf_counter() < end:
                start = time.perf_counter()
                try:
                    await stub.Reserve(reserve("flash"))
                    outcome = "RESERVED"
                except grpc.aio.AioRpcError as error:
                    outcome = reason_of(error) or error.code().name
                    if outcome == "OUT_OF_STOCK" and not sold_out_at:
                        sold_out_at.append(time.perf_counter() - began)
                latencies[outcome].append(time.perf_counter() - start)

        await asyncio.gather(*(buyer() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        sold_in = sold_out_at[0] if sold_out_at else elapsed
        deep = await closed_loop(lambda: stub.Reserve(reserve("deep")), seconds, concurrency, 0)
    rejected = latencies.get("OUT_OF_STOCK", [])
    return SaleResult(
        reserved=len(latencies.get("RESERVED", [])),
        others={k: len(v) for k, v in latencies.items() if k not in ("RESERVED", "OUT_OF_STOCK")},
        reserve_cuts=cuts(latencies.get("RESERVED", [])),
        sold_in=sold_in,
        rejected=len(rejected),
        reject_rate=len(rejected) / max(elapsed - sold_in, 1e-9),
        reject_cuts=cuts(rejected),
        deep=deep,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()

    with servers("mall", args.postgres_url, args.redis_url, with_redis=True) as up:
        server_url, redis_url = up.postgres_url, up.redis_url
        suite = Suite(server_url, redis_url, {"mall": free_port()}, up.workdir / "logs")
        try:
            print(f"bare grpc.aio Health/Check, {args.concurrency} in flight, {args.seconds} s ...")
            echo, echo_p50, echo_p99 = run_mode("bare", free_port(), args.seconds, args.concurrency)
            print(f"  {echo:,.0f} RPC/s  p50 {echo_p50:.1f} ms  p99 {echo_p99:.1f} ms")
            get_rate = redis_get_rate(redis_url, args.seconds)
            if get_rate is not None:
                print(f"redis-benchmark GET, 64 clients: {get_rate:,.0f} requests/s")
            update_tps = pgbench_one_row_update(server_url, args.seconds)
            print(f"pgbench one-row UPDATE, 8 clients: {update_tps:,.0f} tps")

            suite.create_databases()
            suite.start_service("mall")
            suite.wait_serving("mall")
            print(
                f"flash sale: 100 units, {args.concurrency} buyers, {args.seconds} s ...",
                flush=True,
            )
            result = asyncio.run(flash_sale(suite.address("mall"), args.seconds, args.concurrency))
            r50, r99 = result.reserve_cuts
            j50, j99 = result.reject_cuts
            print(f"  reserved {result.reserved} (other outcomes: {result.others or 'none'})")
            print(
                f"  sold out in {result.sold_in:.2f} s; reserve p50 {r50:.1f} ms  p99 {r99:.1f} ms"
            )
            print(
                f"  then {result.rejected:,} OUT_OF_STOCK at {result.reject_rate:,.0f}/s  "
                f"p50 {j50:.1f} ms  p99 {j99:.1f} ms"
            )
            print(f"    ratio to the bare gRPC call: {result.reject_rate / echo:.2f}")
            rate, p50, p99 = result.deep
            print(f"sustained Reserve on a deep item: {rate:,.0f}/s", end="  ")
            print(f"p50 {p50:.1f} ms  p99 {p99:.1f} ms")
            print(f"  ratio to the one-row UPDATE: {rate / update_tps:.2f}")
        finally:
            suite.stop()


if __name__ == "__main__":
    main()
