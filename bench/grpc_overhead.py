"""What the shared server stack costs per call, measured against a bare grpc.aio server.

Both servers answer grpc.health.v1.Health/Check (no I/O), each in its own process; a client
process keeps N calls in flight for a fixed time and prints RPC/s, p50 and p99:

  bare       grpc.aio server, nothing else (BASELINES.md: ~6,900 RPC/s at 64 in flight)
  plumbing   + ErrorMappingInterceptor + OpenTelemetry server instrumentation, sampler as set
             by OTEL_TRACES_SAMPLER (default: every call traced; spans exported nowhere)

  .venv/bin/python bench/grpc_overhead.py [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import closed_loop  # noqa: E402


async def serve(mode: str, port: int) -> None:
    interceptors = []
    if mode == "plumbing":
        from plumbing.grpc_errors import ErrorMappingInterceptor
        from plumbing.telemetry import setup_telemetry

        setup_telemetry("bench")
        interceptors.append(ErrorMappingInterceptor())
    server = grpc.aio.server(interceptors=interceptors)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def load(port: int, seconds: float, concurrency: int) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        return await closed_loop(lambda: stub.Check(request), seconds, concurrency)


def run_mode(mode: str, port: int, seconds: float, concurrency: int) -> tuple[float, float, float]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        return asyncio.run(load(port, seconds, concurrency))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve", choices=["bare", "plumbing"])
    parser.add_argument("--port", type=int, default=50990)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port))
        return
    print(f"Health/Check, {args.concurrency} in flight, {args.seconds:.0f} s each, one machine")
    print(f"{'server':<10} {'RPC/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    results = {}
    for mode in ("bare", "plumbing"):
        results[mode] = run_mode(mode, args.port, args.seconds, args.concurrency)
        rate, p50, p99 = results[mode]
        print(f"{mode:<10} {rate:>8,.0f} {p50:>8.1f} {p99:>8.1f}", flush=True)
    ratio = results["plumbing"][0] / results["bare"][0]
    print(f"plumbing / bare throughput: {ratio:.2f} (baseline: the bare server, same run)")


if __name__ == "__main__":
    main()
