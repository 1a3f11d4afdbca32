"""Points at the app's checkout through the gateway: HoldForOrder then CaptureOrder, N orders in
flight, with the CPU each process spends per order and the batch sizes seen.

  .venv/bin/python bench/checkout.py [--seconds 10] [--concurrency 64] [--users 5000]
                                     [--profile DIR]

Starts the whole suite on an embedded PostgreSQL and Redis (as bench/redeem.py does).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path

import grpc
from loyalty.gateway.v1 import loyalty_pb2, loyalty_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.batch_sizes import batch_sizes, lines  # noqa: E402
from bench.common import closed_loop, profile, run_load, servers  # noqa: E402
from bench.redeem import cpu_seconds, seeded_suite  # noqa: E402


async def orders(
    address: str, member_key: str, users: int, seconds: float, concurrency: int
) -> tuple[tuple[float, float, float], dict[str, int]]:
    """Closed loop of HoldForOrder then CaptureOrder: ((orders/s, p50 ms, p99 ms), refusals)."""
    refused: dict[str, int] = {}
    metadata = (("authorization", f"Bearer {member_key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)

        async def order() -> None:
            ref = uuid.uuid4().hex
            try:
                await stub.HoldForOrder(
                    loyalty_pb2.HoldForOrderRequest(
                        request_id=ref,
                        user_id=f"user-{random.randrange(users)}",
                        order_ref=ref,
                        points=100,
                        order_amount_fen=100_000,
                    ),
                    metadata=metadata,
                    timeout=60,
                )
                await stub.CaptureOrder(
                    loyalty_pb2.CaptureOrderRequest(request_id=f"{ref}:capture", order_ref=ref),
                    metadata=metadata,
                    timeout=60,
                )
            except grpc.aio.AioRpcError as error:
                refused[error.code().name] = refused.get(error.code().name, 0) + 1

        return await closed_loop(order, seconds, concurrency, warmup=20), refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of each service here")
    args = parser.parse_args()
    with (
        servers("checkout", with_redis=True) as up,
        batch_sizes() as sizes,
        seeded_suite(up, args.users) as (suite, member_key, _),
    ):
        print(f"checkout: HoldForOrder then CaptureOrder, {args.concurrency} in flight ...")
        spies = profile(suite, args.profile, "checkout", args.seconds) if args.profile else []
        quiet = sizes.settled()
        before = cpu_seconds(suite)
        began = time.perf_counter()
        (rate, p50, p99), refused = run_load(
            orders(
                suite.address("gateway"),
                member_key,
                args.users,
                args.seconds,
                args.concurrency,
            )
        )
        wall = time.perf_counter() - began
        after = cpu_seconds(suite)
        seen = sizes.since(quiet)
        for spy in spies:
            spy.wait(60)
        done = rate * args.seconds
        print(f"  {rate:,.0f} orders/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms (goal ≥ 1,000/s)")
        print(f"  refusals: {refused or 'none'}")
        print(f"CPU per order ({done:,.0f} orders in {wall:.0f} s):")
        for name in sorted(after, key=lambda n: -(after[n] - before.get(n, 0.0))):
            used = after[name] - before.get(name, 0.0)
            print(f"  {name:<9} {used:6.1f} CPU s  {1000 * used / max(done, 1):5.2f} ms/order")
        print("batch sizes (the processes' loyalty.batch.items):")
        print("\n".join(lines(seen)) or "  none reported")


if __name__ == "__main__":
    main()
