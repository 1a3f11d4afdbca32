"""What the benchmarks share: the pgbench one-row UPDATE baseline and a closed-loop load that
keeps N calls in flight and reports calls/s, p50 and p99."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import uvloop
from sqlalchemy import make_url

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from devtools.suite import Suite

T = TypeVar("T")


def pgbench_binary() -> str:
    bundled = EmbeddedPostgres(Path(tempfile.gettempdir()), 0).bin / "pgbench"
    found = shutil.which("pgbench")
    return str(bundled) if bundled.exists() else (found or "pgbench")


def pgbench_one_row_update(server_url: str, seconds: int) -> float:
    """Transactions per second of a one-row UPDATE, 8 clients (BASELINES.md's `-N` row)."""
    url = make_url(server_url).set(drivername="postgresql", database="loyalty_bench_pgbench")
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS loyalty_bench_pgbench")
        conn.execute("CREATE DATABASE loyalty_bench_pgbench")
    dsn = url.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_one_row (id int PRIMARY KEY, n bigint NOT NULL)")
        conn.execute("INSERT INTO bench_one_row SELECT g, 0 FROM generate_series(1, 100000) g")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(
            "\\set id random(1, 100000)\nUPDATE bench_one_row SET n = n + 1 WHERE id = :id;\n"
        )
    out = subprocess.run(
        [pgbench_binary(), "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", script.name, dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output:\n{out}")


def run_load(load: Coroutine[Any, Any, T]) -> T:
    """Runs a load generator on uvloop, as the services run: the client shares the machine's
    two cores with what it measures, so its own event loop should cost as little as theirs."""
    return uvloop.run(load)


async def closed_loop(
    call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int, warmup: int = 200
) -> tuple[float, float, float]:
    """Keeps ``concurrency`` calls in flight for ``seconds``: (calls/s, p50 ms, p99 ms)."""
    for _ in range(warmup):  # connections, caches, first rows
        await call()
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return (len(latencies) / elapsed, *cuts(latencies))


async def paced_loop(
    call: Callable[[], Awaitable[Any]], rate: float, seconds: float
) -> tuple[float, float, float]:
    """Open loop: starts a call every 1/rate s whatever the answers; (achieved rate, p50 ms,
    p99 ms)."""
    latencies: list[float] = []
    tasks = []

    async def timed() -> None:
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    sent = 0
    while time.perf_counter() - began < seconds:
        delay = began + sent / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed()))
        sent += 1
    await asyncio.gather(*tasks)
    return (len(latencies) / (time.perf_counter() - began), *cuts(latencies))


def cuts(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms."""
    if len(latencies) < 2:
        return (latencies[0] * 1000, latencies[0] * 1000) if latencies else (0.0, 0.0)
    points = statistics.quantiles(latencies, n=100)
    return points[49] * 1000, points[98] * 1000


def redis_get_rate(redis_url: str, seconds: int) -> float | None:
    """redis-benchmark GET, 64 clients (BASELINES.md's Redis row), or None if not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    url = make_url(redis_url)
    requests = 40_000 * seconds
    out = subprocess.run(
        [
            binary,
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 6379),
            "-c",
            "64",
            "-n",
            str(requests),
            "-t",
            "get",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # "GET: 98765.43 requests per second, p50=0.311 msec"
    for part in out.replace("\r", "\n").split("\n"):
        if part.startswith("GET:") and "requests per second" in part:
            return float(part.split()[1])
    return None


@dataclass(frozen=True)
class Servers:
    postgres_url: str
    redis_url: str
    workdir: Path


@contextmanager
def servers(
    name: str, postgres_url: str = "", redis_url: str = "", *, with_redis: bool = True
) -> Iterator[Servers]:
    """The benchmark's PostgreSQL and Redis: the given URLs, or embedded ones in a temporary
    folder (as `make run` starts them), stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    postgres = redis = None
    try:
        if not postgres_url:
            postgres = EmbeddedPostgres(workdir / "postgres", free_port())
            postgres_url = postgres.start()
        if with_redis and not redis_url:
            redis = EmbeddedRedis(workdir / "redis", free_port())
            redis_url = redis.start()
        yield Servers(postgres_url, redis_url, workdir)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def analyze_databases(server_url: str) -> None:
    """ANALYZE every service database once the members are seeded: a system in steady state
    has statistics (autovacuum keeps them), while tables created a minute ago have none and
    lead the planner to scan a whole app where it would probe an index."""
    admin = make_url(server_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'loyalty\\_%'"
            )
        ]
    for name in names:
        url = make_url(server_url).set(drivername="postgresql", database=name)
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute("ANALYZE")


def profile(
    suite: Suite, folder: Path, label: str, seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy on each busy service for the load's duration: collapsed stacks per process
    (view with speedscope or flamegraph.pl), the figures this issue's notes quote."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--format",
                "raw",
                "--nonblocking",
                "-d",
                str(int(seconds)),
                "-o",
                str(folder / f"{name}-{label}.txt"),
                "-p",
                str(suite.processes[name].pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("gateway", "points", "levels", "risk", "mall")
    ]
