"""Risk speed: Evaluate with 64 concurrent callers (the example program's rules: velocity per
user, distinct users per device and ip, account age), and Evaluate paced at 1,000 a second
(the target: p99 under 5 ms there), beside `redis-benchmark` GET on the same Redis and a bare
grpc.aio server, in the same run.

  .venv/bin/python bench/risk.py [--seconds 10] [--concurrency 64] [--rates 250,500,1000]
                                 [--postgres-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import uuid
from pathlib import Path

import grpc
from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import closed_loop, paced_loop, redis_get_rate, servers  # noqa: E402
from bench.grpc_overhead import run_mode  # noqa: E402
from devtools.embedded import free_port  # noqa: E402
from devtools.suite import Suite  # noqa: E402
from tests.programs import risk_section  # noqa: E402

APP = "bench"


def request() -> risk_pb2.EvaluateRequest:
    user = random.randrange(50_000)
    return risk_pb2.EvaluateRequest(
        app=APP,
        request_id=uuid.uuid4().hex,
        action=random.choice(("sign_in", "watch", "redeem", "register")),
        user_id=f"user-{user}",
        device_id=f"device-{user % 20_000}",
        ip=f"10.{user % 250}.{user % 200}.{user % 100}",
        amount=random.randrange(0, 20_000),
    )


async def load(
    address: str, seconds: int, concurrency: int, rates: list[int]
) -> dict[str, tuple[float, ...]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        configured = await stub.ConfigureRisk(
            risk_pb2.ConfigureRiskRequest(app=APP, section_json=json.dumps(risk_section()))
        )
        assert not configured.errors, configured.errors
        result: dict[str, tuple[float, ...]] = {
            "closed": await closed_loop(lambda: stub.Evaluate(request()), seconds, concurrency)
        }
        for rate in rates:
            result[f"paced {rate}"] = await paced_loop(
                lambda: stub.Evaluate(request()), rate, seconds
            )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rates", default="250,500,1000", help="paced rates, comma-separated")
    parser.add_argument("--postgres-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    with servers("risk", args.postgres_url, args.redis_url) as up:
        suite = Suite(up.postgres_url, up.redis_url, {"risk": free_port()}, up.workdir / "logs")
        try:
            echo, _, _ = run_mode("bare", free_port(), args.seconds, args.concurrency)
            print(f"bare grpc.aio Health/Check, {args.concurrency} in flight: {echo:,.0f} RPC/s")
            get_rate = redis_get_rate(up.redis_url, args.seconds)
            if get_rate is not None:
                print(f"redis-benchmark GET, 64 clients, same Redis: {get_rate:,.0f} requests/s")
            suite.create_databases()
            suite.start_service("risk")
            suite.wait_serving("risk")
            result = asyncio.run(load(suite.address("risk"), args.seconds, args.concurrency, rates))
            rate, p50, p99 = result["closed"]
            print(f"Evaluate, {args.concurrency} in flight: {rate:,.0f}/s", end="  ")
            print(f"p50 {p50:.1f} ms  p99 {p99:.1f} ms")
            print(f"  ratio to the bare gRPC call: {rate / echo:.2f}", end="")
            if get_rate is not None:
                print(f"; to redis-benchmark GET: {rate / get_rate:.3f}", end="")
            print()
            for offered in rates:
                rate, p50, p99 = result[f"paced {offered}"]
                print(f"Evaluate paced at {offered}/s: {rate:,.0f}/s", end="  ")
                print(f"p50 {p50:.1f} ms  p99 {p99:.1f} ms")
        finally:
            suite.stop()


if __name__ == "__main__":
    main()
