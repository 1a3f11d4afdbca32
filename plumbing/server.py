"""The one gRPC server bootstrap every service process uses.

A service describes itself with a ``ServiceSpec`` (its gRPC services, settings, migrations and
background jobs); ``serve`` does the rest: database check and migrations, engine and Redis,
telemetry, health (per service name) and reflection, error mapping, and an orderly stop:
on SIGTERM or SIGINT every service turns NOT_SERVING first, then in-flight calls get
``shutdown_grace_seconds`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis.asyncio as aioredis
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from plumbing.clock import Clock, SystemClock
from plumbing.db import create_engine, masked, sessions, wait_for_database
from plumbing.grpc_errors import ErrorMappingInterceptor
from plumbing.migrations import missing_heads, upgrade
from plumbing.redis import create_redis, reachable
from plumbing.settings import ServiceSettings
from plumbing.telemetry import instrument_engine

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    # gRPC core cancels calls queued beyond 1,000 not-yet-handled requests with a bare
    # CANCELLED, which no caller treats as retryable. A flash sale queues thousands of cheap
    # calls for a moment; let them wait for their real answer instead.
    ("grpc.server.max_pending_requests", 10000),
    ("grpc.server.max_pending_requests_hard_limit", 20000),
    # Clients balance per call over the addresses DNS gives them (headless Services and
    # round_robin, deploy/README); closing each connection after a few minutes (with a grace
    # for calls in flight) makes them resolve again and find replicas added since.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


class StartupError(Exception):
    """A start-up failure that deserves one clear line, not a traceback."""


@dataclass
class Resources:
    """What a servicer gets to do its work; closed by the bootstrap on shutdown."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis | None
    clock: Clock
    # Servicers push their own cleanups (channels, flush tasks) here.
    cleanup: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)


@dataclass(frozen=True)
class Registration:
    """One gRPC service a process serves."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    make_servicer: Callable[[Resources], object]

    @property
    def full_name(self) -> str:
        return str(self.descriptor.full_name)


S = TypeVar("S", bound=ServiceSettings)


def settings_as(resources: Resources, kind: type[S]) -> S:
    """The process's settings as its service's own class (``PointsSettings``, ...): typed, so a
    setting's name and default live in one place, not in a ``getattr`` beside each use."""
    if not isinstance(resources.settings, kind):
        raise TypeError(
            f"this process runs with {type(resources.settings).__name__}, not {kind.__name__}"
        )
    return resources.settings


# A job that runs for the life of the process (sweeps, reapers, flushers); cancelled on stop.
BackgroundJob = Callable[[Resources], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    settings_type: type[ServiceSettings]
    registrations: Sequence[Registration]
    migrations: Path | None = None
    needs_redis: bool = False
    background: Sequence[BackgroundJob] = ()


async def prepare_database(
    spec: ServiceSpec, settings: ServiceSettings, migrate: bool = True
) -> None:
    """Check the database answers, then (unless told not to) apply the service's migrations."""
    await wait_for_database(settings.database_url, settings.db_connect_timeout)
    if migrate and spec.migrations is not None:
        await asyncio.to_thread(upgrade, spec.migrations, settings.database_url)


async def serve(spec: ServiceSpec, settings: ServiceSettings, clock: Clock | None = None) -> None:
    if spec.needs_redis and not settings.redis_url:
        prefix = settings.model_config.get("env_prefix", "")
        raise StartupError(f"{prefix}REDIS_URL is required by the {spec.name} service")
    await prepare_database(spec, settings, migrate=settings.migrate_on_start)

    engine = create_engine(settings.database_url, settings.db_pool_size)
    if settings.trace_statements:
        instrument_engine(engine)
    redis_client = create_redis(settings.redis_url) if settings.redis_url else None
    resources = Resources(settings, engine, sessions(engine), redis_client, clock or SystemClock())
    try:
        await _serve_until_signal(spec, settings, resources)
    finally:
        # Closed whatever happened above, a failed bind or servicer included.
        await resources.cleanup.aclose()
        if redis_client is not None:
            await redis_client.aclose()
        await engine.dispose()


SCHEMA_POLL_SECONDS = 2.0


async def _wait_for_schema(
    spec: ServiceSpec, settings: ServiceSettings, engine: AsyncEngine, stop: asyncio.Event
) -> None:
    """Returns once the database holds every migration head of this code (at once when this
    process migrated it itself), or when the process is told to stop."""
    if spec.migrations is None or settings.migrate_on_start:
        return
    script = spec.migrations
    said = False
    while not stop.is_set():
        async with engine.connect() as conn:
            missing = await conn.run_sync(lambda sync: missing_heads(script, sync))
        if not missing:
            if said:
                log.info("the schema is current: serving")
            return
        if not said:
            log.warning(
                "NOT_SERVING until the migrations run (MIGRATE_ON_START=false)",
                extra={"missing_heads": sorted(missing)},
            )
            said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCHEMA_POLL_SECONDS)


async def _serve_until_signal(
    spec: ServiceSpec, settings: ServiceSettings, resources: Resources
) -> None:
    if resources.redis is not None and not await reachable(resources.redis):
        # Redis holds counters and caches, never the truth: start anyway and let each
        # service degrade as documented (risk fails open or closed per rule, ...).
        where = masked(settings.redis_url or "")
        log.warning("redis is not reachable yet", extra={"redis_url": where})

    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()], options=SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    names = []
    for registration in spec.registrations:
        registration.add_to_server(registration.make_servicer(resources), server)
        names.append(registration.full_name)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    try:
        server.add_insecure_port(settings.listen)
    except RuntimeError as error:
        raise StartupError(f"cannot listen on {settings.listen}: {error}") from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await server.start()
    # Probes get answers at once: NOT_SERVING until the schema is this code's (a migration Job
    # still running, MIGRATE_ON_START=false), then SERVING.
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await _wait_for_schema(spec, settings, resources.engine, stop)
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    jobs = [asyncio.create_task(job(resources), name=f"{spec.name}-job") for job in spec.background]
    log.info("serving", extra={"listen": settings.listen, "services": names})
    try:
        await stop.wait()
    finally:
        log.info("stopping: NOT_SERVING, then draining in-flight calls")
        await health_servicer.enter_graceful_shutdown()
        if settings.shutdown_drain_seconds:
            await asyncio.sleep(settings.shutdown_drain_seconds)
        await server.stop(settings.shutdown_grace_seconds)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        log.info("stopped")
