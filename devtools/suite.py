"""The six service processes as one suite: databases created, processes started on given ports,
each health check waited for, everything stopped in order. Used by `make run` and by the
integration tests, so both run the suite exactly the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from sqlalchemy import make_url

from devtools.embedded import free_port, spawn, stop_process, tail, wait_or_kill
from gateway.main import SERVICE as GATEWAY
from plumbing.server import ServiceSpec
from services.levels.main import SERVICE as LEVELS
from services.lottery.main import SERVICE as LOTTERY
from services.mall.main import SERVICE as MALL
from services.points.main import SERVICE as POINTS
from services.risk.main import SERVICE as RISK

REPO = Path(__file__).resolve().parent.parent
SPECS: dict[str, ServiceSpec] = {
    spec.name: spec for spec in (POINTS, LEVELS, MALL, LOTTERY, RISK, GATEWAY)
}
# Start order does not matter (no service calls another at start-up); stop the door first.
SERVICES = ("points", "levels", "mall", "lottery", "risk", "gateway")
DEFAULT_PORTS = {
    "gateway": 50051,
    "points": 50052,
    "levels": 50053,
    "mall": 50054,
    "lottery": 50055,
    "risk": 50056,
}


# Tries at binding a service before giving up (each on another free port).
PORT_ATTEMPTS = 5


class SuiteError(Exception):
    pass


def module_of(service: str) -> str:
    return "gateway" if service == "gateway" else f"services.{service}"


def env_prefix(service: str) -> str:
    return f"LOYALTY_{service.upper()}_"


@dataclass
class Suite:
    postgres_url: str  # a server-level URL; each service gets its own database on it
    redis_url: str
    # Preferred ports; a service that finds its port taken moves to a free one (``start``),
    # and ``address`` tells where each one listens.
    ports: dict[str, int]
    log_dir: Path
    host: str = "127.0.0.1"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def database_url(self, service: str) -> str:
        url = make_url(self.postgres_url).set(
            drivername="postgresql+psycopg", database=f"loyalty_{service}"
        )
        return url.render_as_string(hide_password=False)

    def create_databases(self) -> None:
        admin = make_url(self.postgres_url).set(drivername="postgresql")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
            for service in SERVICES:
                if f"loyalty_{service}" not in existing:
                    conn.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"loyalty_{service}"))
                    )

    def env_for(self, service: str) -> dict[str, str]:
        prefix = env_prefix(service)
        env = {
            **os.environ,
            f"{prefix}LISTEN": self.address(service),
            f"{prefix}DATABASE_URL": self.database_url(service),
            f"{prefix}REDIS_URL": self.redis_url,
            "PYTHONUNBUFFERED": "1",
        }
        if service == "gateway":
            for participant in SERVICES[:-1]:
                env[f"{prefix}{participant.upper()}_ADDR"] = self.address(participant)
        env.update(self.extra_env)
        return env

    def start_service(self, service: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc = spawn(
            [sys.executable, "-m", module_of(service), "serve"],
            self.log_dir / f"{service}.log",
            cwd=REPO,
            env=self.env_for(service),
        )
        self.processes[service] = proc
        return proc

    def start(self, timeout: float = 60.0) -> None:
        """Starts the six at once. A port can be taken between choosing it and binding it
        (any outgoing connection may get it as its local port: 50051-50056 lie in Linux's
        ephemeral range), so a service that cannot listen is started again on a free port;
        the gateway then restarts to learn the new address."""
        self.ports = dict(self.ports)
        self.create_databases()
        for service in SERVICES:
            self.start_service(service)
        moved = False
        for service in SERVICES[:-1]:
            moved |= self._serving_somewhere(service, timeout)
        if moved:
            self.stop_service("gateway")
            self.start_service("gateway")
        self._serving_somewhere("gateway", timeout)

    def _serving_somewhere(self, service: str, timeout: float) -> bool:
        """Waits until ``service`` serves, moving it to a free port while its port is taken;
        True when it moved."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self.wait_serving(service, timeout)
                return attempt > 0
            except SuiteError as error:
                if "cannot listen on" not in str(error) or attempt == PORT_ATTEMPTS - 1:
                    raise
                taken = self.ports[service]
                self.ports[service] = free_port()
                print(
                    f"{service}: port {taken} is taken; listening on {self.ports[service]}",
                    file=sys.stderr,
                    flush=True,
                )
                self.processes.pop(service, None)
                self.start_service(service)
        raise AssertionError("unreachable")

    def wait_serving(self, service: str, timeout: float = 60.0) -> None:
        def exited() -> None:
            proc = self.processes.get(service)
            if proc is not None and proc.poll() is not None:
                raise SuiteError(
                    f"{service} exited with {proc.returncode} while starting; "
                    f"its log ({self.log_dir / (service + '.log')}) ends:\n"
                    f"{tail(self.log_dir / f'{service}.log')}"
                )

        names = [r.full_name for r in SPECS[service].registrations]
        wait_healthy(self.address(service), names, timeout, exited, label=service)

    def stop_service(self, service: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.processes.pop(service, None)
        if proc is not None:
            stop_process(proc, sig, timeout)

    def stop(self) -> None:
        # SIGTERM to all at once (each turns NOT_SERVING, then drains), then wait for each.
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for service in reversed(SERVICES):
            stopping = self.processes.pop(service, None)
            if stopping is not None:
                wait_or_kill(stopping, 20)


def wait_healthy(
    address: str,
    names: list[str],
    timeout: float,
    check_alive: Callable[[], None],
    *,
    label: str,
) -> None:
    """Waits until the server at ``address`` answers SERVING for each of ``names`` (its gRPC
    services); ``check_alive`` raises if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        pending = list(names)
        while pending:
            check_alive()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=pending[0]), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    pending.pop(0)
                    continue
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SuiteError(f"{label} not SERVING after {timeout:.0f}s")
            time.sleep(0.1)
