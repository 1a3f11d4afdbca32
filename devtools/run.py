"""`make run`: the whole suite on one machine.

With no ``LOYALTY_POSTGRES_URL`` / ``LOYALTY_REDIS_URL`` in the environment it starts embedded
PostgreSQL and Redis (data in ``.loyalty/``, reused across runs); given those URLs it uses them
and starts nothing embedded. Then it creates the six databases, starts the six services, waits
until every health check is SERVING, creates (or reuses) the sandbox app ``video`` with the
example program applied and a member and an admin key, writes them to ``.loyalty/dev.env`` and
prints how to call the gateway; it starts the ops console too (its URL printed and written as
``LOYALTY_CONSOLE_URL``). Ctrl-C or SIGTERM stops
everything: services first, then Redis and PostgreSQL; no process, port or pid file is left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from devtools.bootstrap import bootstrap_dev_app
from devtools.console import ConsoleError, ConsoleProcess
from devtools.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, free_port
from devtools.suite import DEFAULT_PORTS, REPO, SERVICES, Suite, SuiteError

# The console's preferred port (another free one when something holds it).
CONSOLE_PORT = 8080

app = typer.Typer(add_completion=False, help=__doc__)


class Interrupted(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    # One signal is enough; a second Ctrl-C must not cut the orderly stop short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_pidfile(pidfile: Path) -> None:
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise SuiteError(f"the suite already runs here (pid {pid}, {pidfile}); stop it first")
    pidfile.write_text(f"{os.getpid()}\n")


def _say(message: str) -> None:
    print(message, flush=True)


@app.command()
def run(  # noqa: C901, PLR0915 - make run, step by step as it prints them
    data_dir: Annotated[Path, typer.Option(help="Embedded data, logs, pid file.")] = REPO
    / ".loyalty",
    port_base: Annotated[
        int,
        typer.Option(
            envvar="LOYALTY_DEV_PORT_BASE",
            help="The gateway listens here; the five services on the next five ports.",
        ),
    ] = DEFAULT_PORTS["gateway"],
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every service to serve.")
    ] = 90.0,
) -> None:
    """Start the suite and keep it running until Ctrl-C or SIGTERM."""
    started = time.monotonic()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "run.pid"
    ports = {s: port_base + (DEFAULT_PORTS[s] - DEFAULT_PORTS["gateway"]) for s in SERVICES}
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    suite: Suite | None = None
    console: ConsoleProcess | None = None
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    claimed = False
    code = 0
    try:
        _claim_pidfile(pidfile)
        claimed = True
        postgres_url = os.environ.get("LOYALTY_POSTGRES_URL")
        if not postgres_url:
            postgres = EmbeddedPostgres(data_dir / "postgres", free_port(55432))
            _say(f"starting embedded PostgreSQL on 127.0.0.1:{postgres.port} ({postgres.root})")
            postgres_url = postgres.start()
        redis_url = os.environ.get("LOYALTY_REDIS_URL")
        if not redis_url:
            redis = EmbeddedRedis(data_dir / "redis", free_port(56379))
            _say(f"starting embedded Redis on 127.0.0.1:{redis.port}")
            redis_url = redis.start()
        suite = Suite(postgres_url, redis_url, ports, data_dir / "logs")
        _say(f"starting {', '.join(SERVICES)} (logs in {suite.log_dir})")
        suite.start(timeout)
        env_file = data_dir / "dev.env"
        dev = bootstrap_dev_app(suite, env_file)
        gateway = suite.address("gateway")
        console = ConsoleProcess(gateway, free_port(CONSOLE_PORT), suite.log_dir / "console.log")
        console_url = console.start()
        env_file.write_text(
            f"LOYALTY_GATEWAY={gateway}\n"
            f"LOYALTY_MEMBER_KEY={dev.member_key}\n"
            f"LOYALTY_ADMIN_KEY={dev.admin_key}\n"
            f"LOYALTY_GATEWAY_DATABASE_URL={suite.database_url('gateway')}\n"
            f"LOYALTY_POSTGRES_URL={postgres_url}\nLOYALTY_REDIS_URL={redis_url}\n"
            f"LOYALTY_CONSOLE_URL={console_url}\n"
        )
        env_file.chmod(0o600)
        _say(
            f"\nall six services SERVING in {time.monotonic() - started:.1f}s\n"
            f"  gateway   {gateway}  (LoyaltyService, AdminService)\n"
            + "".join(f"  {s:<9} {suite.address(s)}\n" for s in SERVICES[:-1])
            + f"  console   {console_url}  (sign in with the admin key)\n"
            + f"\nsandbox app '{dev.app}': {dev.program.name} applied (version {dev.version})\n"
            f"  member key  {dev.member_key}\n"
            f"  admin key   {dev.admin_key}\n"
            f"  settings    {env_file} (loyaltyctl reads it)\n"
            "\n  try  .venv/bin/loyaltyctl event record alice purchase --attr amount_fen=200000\n"
            "       .venv/bin/loyaltyctl clock advance 8d   # the purchase's return window\n"
            "       .venv/bin/loyaltyctl redeem alice ticket-wolf-warrior-2\n"
            "       .venv/bin/loyaltyctl member get alice\n"
            "Ctrl-C stops everything."
        )
        while True:
            for service, proc in suite.processes.items():
                if proc.poll() is not None:
                    log = suite.log_dir / f"{service}.log"
                    raise SuiteError(f"{service} exited with {proc.returncode}; see {log}")
            if console is not None and console.exited() is not None:
                raise SuiteError(f"the console exited with {console.exited()}; see {console.log}")
            time.sleep(0.5)
    except Interrupted as stop:
        _say(f"\n{stop}: stopping the suite")
    except (SuiteError, EmbeddedError, ConsoleError) as error:
        print(f"loyalty-dev: error: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if console is not None:
            console.stop()
        if suite is not None:
            suite.stop()
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        if claimed:
            pidfile.unlink(missing_ok=True)
        _say("stopped")
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
