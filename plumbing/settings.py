"""Settings shared by every service process. Each service subclasses ``ServiceSettings`` with
its own env prefix (``LOYALTY_POINTS_``, ``LOYALTY_GATEWAY_``, ...); see the README for the
full list. OpenTelemetry reads its own standard ``OTEL_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore")

    # host:port the gRPC server listens on.
    listen: str = "127.0.0.1:50050"
    # SQLAlchemy URL of the service's own database; postgresql:// is read as psycopg 3.
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty"
    # Connections per process; more concurrent transactions wait for one (see plumbing/db.py).
    db_pool_size: int = Field(default=20, ge=1, le=200)
    # Seconds to wait for the database at start-up before giving up.
    db_connect_timeout: float = Field(default=5.0, gt=0)
    # Redis URL, for services that keep counters, stock or boards in Redis.
    redis_url: str | None = None
    # DEBUG, INFO, WARNING, ERROR.
    log_level: str = "INFO"
    # After SIGTERM: seconds reported NOT_SERVING before the server stops taking calls, so
    # load balancers and readiness probes move traffic away first.
    shutdown_drain_seconds: float = Field(default=0.0, ge=0)
    # Then: seconds in-flight calls get to finish.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)
    # A span for every SQL statement and Redis command, besides the one per gRPC call and per
    # batch: for finding a slow query; off by default, as per-statement spans cost more than
    # the statements on the hot paths.
    trace_statements: bool = False
    # Apply migrations on start (a Kubernetes deployment runs them as a Job and sets false).
    migrate_on_start: bool = True
    # Python's cyclic garbage collector: the generation thresholds (allocations before a
    # young collection; young collections before a middle one; middle before a full one), as
    # JSON, e.g. [700,10,10] for Python's default. Under redemption load the default spent
    # about a third of every process's CPU collecting (bench/redeem.py: 10.9 -> 7.6 ms of CPU
    # per saga, 183 -> 267 sagas/s back to back); objects made at start-up are frozen out of
    # it. Cycles are still collected, only in larger and rarer rounds.
    gc_thresholds: tuple[int, int, int] = (50_000, 50, 100)

    @field_validator("gc_thresholds")
    @classmethod
    def _positive_thresholds(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(n < 1 for n in value):
            raise ValueError("every threshold must be >= 1")
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        return normalize_database_url(url)


def normalize_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (sync and async from one driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a file such as `.loyalty/dev.env` ({} when there is none)."""
    if not path.is_file():
        return {}
    pairs = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            pairs[key.strip()] = value.strip()
    return pairs
