"""More than one pod per service, as Kubernetes runs them: calls spread over every replica behind
one name (round_robin over what the name resolves to, as the gateway dials participants), and a
replica whose schema is behind its code reports NOT_SERVING until the migration has run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc
from psycopg import sql
from sqlalchemy import make_url

from devtools.embedded import free_port
from devtools.suite import REPO, Suite
from gateway.participants import CHANNEL_OPTIONS
from plumbing.migrations import upgrade
from services.levels.main import SERVICE as LEVELS
from tests.integration.conftest import serve_alone
from tests.programs import levels_section_json


def fresh_database(suite: Suite, name: str) -> str:
    """A new, empty database on the suite's server: its SQLAlchemy URL."""
    admin = make_url(suite.postgres_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return (
        make_url(suite.postgres_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


async def test_calls_spread_over_every_replica_behind_one_name(
    suite: Suite, tmp_path: Path
) -> None:
    """Two levels replicas, each on a database of its own so their answers tell them apart: the
    app is configured on the first only. Behind one target that resolves to both (what a
    headless Service gives the gateway), the gateway's channel options send calls to both;
    gRPC's default (pick_first) pins every call to one."""
    app = f"lb-{uuid.uuid4().hex[:8]}"
    first_db = fresh_database(suite, f"loyalty_levels_lb_{uuid.uuid4().hex[:8]}")
    second_db = fresh_database(suite, f"loyalty_levels_lb_{uuid.uuid4().hex[:8]}")
    ports = free_port(), free_port()
    async with (
        serve_alone(suite, "levels", tmp_path, port=ports[0], database_url=first_db) as first,
        serve_alone(suite, "levels", tmp_path, port=ports[1], database_url=second_db),
    ):
        configured = await levels_pb2_grpc.LevelsServiceStub(first).ConfigureLevels(
            levels_pb2.ConfigureLevelsRequest(app=app, section_json=levels_section_json())
        )
        assert not configured.errors
        # A static resolver with both addresses: what DNS answers for a headless Service.
        both = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

        async def answers(options: list[tuple[str, object]]) -> Counter[str]:
            seen: Counter[str] = Counter()
            async with grpc.aio.insecure_channel(both, options=options) as channel:
                stub = levels_pb2_grpc.LevelsServiceStub(channel)
                for n in range(40):
                    try:
                        await stub.CheckTier(
                            levels_pb2.CheckTierRequest(app=app, user_id=f"u{n}"), timeout=5
                        )
                        seen["first"] += 1
                    except grpc.aio.AioRpcError as error:
                        # The second replica has no program for the app: that tells it apart.
                        unknown = error.code() is grpc.StatusCode.INVALID_ARGUMENT and (
                            "unknown app" in (error.details() or "")
                        )
                        seen["second" if unknown else f"other: {error.code().name}"] += 1
            return seen

        balanced = await answers(list(CHANNEL_OPTIONS))
        assert set(balanced) == {"first", "second"}, balanced
        assert min(balanced.values()) >= 10, balanced
        pinned = await answers([])
        assert len(pinned) == 1, pinned


@contextlib.asynccontextmanager
async def levels_process(
    suite: Suite, log: Path, database_url: str, **env: str
) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    port = free_port()
    environment = {
        **suite.env_for("levels"),
        "LOYALTY_LEVELS_LISTEN": f"127.0.0.1:{port}",
        "LOYALTY_LEVELS_DATABASE_URL": database_url,
        **env,
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.levels",
            "serve",
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield health_pb2_grpc.HealthStub(channel)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)


async def status_of(health: health_pb2_grpc.HealthStub) -> int | None:
    try:
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def test_a_replica_on_an_unmigrated_schema_serves_only_once_it_is_migrated(
    suite: Suite, tmp_path: Path
) -> None:
    database = fresh_database(suite, f"loyalty_levels_mig_{uuid.uuid4().hex[:8]}")
    log = tmp_path / "levels-unmigrated.log"
    async with levels_process(
        suite, log, database, LOYALTY_LEVELS_MIGRATE_ON_START="false"
    ) as health:
        seen: list[int | None] = []
        for _ in range(100):  # up to 10 s for the process to start answering
            seen.append(await status_of(health))
            if seen[-1] is not None:
                break
            await asyncio.sleep(0.1)
        assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, seen
        await asyncio.sleep(1)  # still not serving while the schema is behind
        assert await status_of(health) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert LEVELS.migrations is not None
        await asyncio.to_thread(upgrade, LEVELS.migrations, database)  # the migration Job
        for _ in range(100):
            if await status_of(health) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        assert await status_of(health) == health_pb2.HealthCheckResponse.SERVING
    assert "NOT_SERVING until the migrations run" in log.read_text()
