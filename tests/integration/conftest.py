"""The integration harness: embedded PostgreSQL and Redis once per test session, each service
as a real subprocess on free ports, typed stubs for the tests, and everything torn down even
when a test fails.

``LOYALTY_TEST_POSTGRES_URL`` / ``LOYALTY_TEST_REDIS_URL`` point the harness at servers that
already run (nothing embedded is started then); the databases it creates are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.gateway.v1 import admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.levels.v1 import levels_pb2_grpc
from loyalty.lottery.v1 import lottery_pb2_grpc
from loyalty.mall.v1 import mall_pb2_grpc
from loyalty.points.v1 import points_pb2_grpc
from loyalty.risk.v1 import risk_pb2_grpc

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from devtools.invariants import check_all, report, unfinished_sagas, urls_from
from devtools.suite import REPO, SERVICES, Suite, module_of
from tests.integration.waiting import wait_for


@dataclass(frozen=True)
class Infra:
    postgres_url: str
    redis_url: str
    root: Path


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    root = Path(tempfile.mkdtemp(prefix="loyalty-test-"))
    postgres = redis = None
    try:
        postgres_url = os.environ.get("LOYALTY_TEST_POSTGRES_URL")
        if not postgres_url:
            postgres = EmbeddedPostgres(root / "postgres", free_port())
            postgres_url = postgres.start()
        redis_url = os.environ.get("LOYALTY_TEST_REDIS_URL")
        if not redis_url:
            redis = EmbeddedRedis(root / "redis", free_port())
            redis_url = redis.start()
        yield Infra(postgres_url, redis_url, root)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


@pytest.fixture(scope="session")
def suite(infra: Infra) -> Iterator[Suite]:
    ports = {service: free_port() for service in SERVICES}
    suite = Suite(infra.postgres_url, infra.redis_url, ports, infra.root / "logs")
    try:
        suite.start(timeout=90)
        yield suite
        # The last act of every run that used the suite, whatever order its tests ran in: the
        # invariant checker over every app the run made in every service, faults and all.
        asyncio.run(assert_invariants_hold(suite))
    finally:
        suite.stop()


async def assert_invariants_hold(suite: Suite) -> None:
    urls = urls_from(suite.postgres_url)
    # Drives still running (PENDING answers, the recovery loop) end first.
    await wait_for(lambda: unfinished_sagas(urls), lambda left: left == 0, within=60)
    results = await check_all(urls)
    assert report(results), [(c.app, c.name, c.violations[:3]) for c in results if not c.ok]


@dataclass(frozen=True)
class Stubs:
    points: points_pb2_grpc.PointsServiceStub
    levels: levels_pb2_grpc.LevelsServiceStub
    mall: mall_pb2_grpc.MallServiceStub
    lottery: lottery_pb2_grpc.LotteryServiceAsyncStub
    risk: risk_pb2_grpc.RiskServiceStub
    loyalty: loyalty_pb2_grpc.LoyaltyServiceAsyncStub
    admin: admin_pb2_grpc.AdminServiceAsyncStub


@pytest.fixture(scope="session")
async def channels(suite: Suite) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {service: grpc.aio.insecure_channel(suite.address(service)) for service in SERVICES}
    yield opened
    for channel in opened.values():
        await channel.close()


@pytest.fixture(scope="session")
def stubs(channels: dict[str, grpc.aio.Channel]) -> Stubs:
    return Stubs(
        points=points_pb2_grpc.PointsServiceStub(channels["points"]),
        levels=levels_pb2_grpc.LevelsServiceStub(channels["levels"]),
        mall=mall_pb2_grpc.MallServiceStub(channels["mall"]),
        lottery=lottery_pb2_grpc.LotteryServiceStub(channels["lottery"]),
        risk=risk_pb2_grpc.RiskServiceStub(channels["risk"]),
        loyalty=loyalty_pb2_grpc.LoyaltyServiceStub(channels["gateway"]),
        admin=admin_pb2_grpc.AdminServiceStub(channels["gateway"]),
    )


@asynccontextmanager
async def serve_alone(
    suite: Suite,
    service: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    *,
    port: int = 0,
    **overrides: str,
) -> AsyncIterator[grpc.aio.Channel]:
    """One more process of ``service`` beside the suite, with settings overridden (a Redis that
    is not there, ...): yields a channel once it is SERVING; on exit, SIGTERM and wait, so its
    clean-shutdown work (audit flush, ...) is done when the block ends. ``port``: where it
    listens (a free one by default)."""
    port = port or free_port()
    prefix = f"LOYALTY_{service.upper()}_"
    environment = {
        **suite.env_for(service),
        f"{prefix}LISTEN": f"127.0.0.1:{port}",
        **{f"{prefix}{key.upper()}": value for key, value in overrides.items()},
        **(env or {}),
    }
    log_path = log_dir / f"{service}-alone.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module_of(service),
            "serve",
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)

                async def status() -> int | None:
                    if proc.returncode is not None:
                        raise AssertionError(
                            f"{service} exited with {proc.returncode} while starting; "
                            f"see {log_path}"
                        )
                    try:
                        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    except grpc.aio.AioRpcError:
                        return None
                    return int(reply.status)

                # A process that never serves fails the test here, not somewhere later.
                await wait_for(status, lambda s: s == health_pb2.HealthCheckResponse.SERVING)
                yield channel
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it may have died (fault tests)
                    proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
