"""How service processes and the run command start and stop."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.embedded import free_port, port_in_use
from devtools.suite import DEFAULT_PORTS, REPO, SERVICES


def serve_once(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m MODULE serve` expecting it to fail at start-up."""
    return subprocess.run(
        [sys.executable, "-m", module, "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_service_that_cannot_reach_its_database_says_so_in_one_line():
    env = {
        **os.environ,
        "LOYALTY_POINTS_DATABASE_URL": "postgresql://loyalty:hunter2@127.0.0.1:1/loyalty_points",
        "LOYALTY_POINTS_DB_CONNECT_TIMEOUT": "1",
        "LOYALTY_POINTS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    done = serve_once("services.points", env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "postgresql+psycopg://loyalty:***@127.0.0.1:1/loyalty_points" in lines[0]
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_bad_settings_are_one_line_naming_the_variable():
    env = {**os.environ, "LOYALTY_RISK_DB_POOL_SIZE": "zero"}
    done = serve_once("services.risk", env)
    assert done.returncode == 2
    assert "LOYALTY_RISK_DB_POOL_SIZE" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_already_taken_is_one_line_and_exit_2(suite):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**suite.env_for("mall"), "LOYALTY_MALL_LISTEN": f"127.0.0.1:{port}"}
        done = serve_once("services.mall", env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("loyalty-mall: error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in done.stderr


def test_sigterm_turns_health_not_serving_before_the_server_stops(suite, infra):
    address = f"127.0.0.1:{free_port()}"
    env = {
        **suite.env_for("lottery"),
        "LOYALTY_LOTTERY_LISTEN": address,
        # Long enough that the check below sees the drain on a loaded machine; it waits for
        # NOT_SERVING by condition, not for a fixed time.
        "LOYALTY_LOTTERY_SHUTDOWN_DRAIN_SECONDS": "5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.lottery", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        name = "loyalty.lottery.v1.LotteryService"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "lottery never became SERVING"
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            while True:
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
                time.sleep(0.05)
            # It said NOT_SERVING while still answering: a load balancer can take it out.
            assert proc.poll() is None, "the server must still answer while draining"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _free_port_base() -> int:
    span = max(DEFAULT_PORTS.values()) - min(DEFAULT_PORTS.values()) + 1
    for _ in range(50):
        base = free_port()
        if base + span < 65000 and not any(port_in_use(base + i) for i in range(span)):
            return base
    raise AssertionError("no free port range")


@pytest.mark.timeout(240)
def test_sigint_to_the_run_command_leaves_no_process_port_or_pid_file(tmp_path: Path):
    """The run command on its own embedded Postgres and Redis, as `make run` starts it."""
    base = _free_port_base()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOYALTY_POSTGRES_URL", "LOYALTY_REDIS_URL")
    }
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.run",
            "--data-dir",
            str(tmp_path),
            "--port-base",
            str(base),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        else:
            raise AssertionError("run ended before serving:\n" + "".join(output))
        # Where each service listens, as printed: the preferred ports, or another free one for
        # a service whose port something else held (those lie in the ephemeral range).
        printed = {
            words[0]: int(words[1].rsplit(":", 1)[1])
            for words in (line.split() for line in output)
            if len(words) >= 2 and words[0] in SERVICES and words[1].startswith("127.0.0.1:")
        }
        assert set(printed) == set(SERVICES), "".join(output)
        assert (tmp_path / "run.pid").read_text().strip() == str(run.pid)
        # The console too: its URL printed and written for loyaltyctl's neighbours, serving.
        settings = dict(
            line.split("=", 1) for line in (tmp_path / "dev.env").read_text().splitlines()
        )
        console = settings["LOYALTY_CONSOLE_URL"]
        assert f"console   {console}" in "".join(output)
        with urllib.request.urlopen(f"{console}/healthz", timeout=5) as answer:
            assert answer.status == 200
        children = psutil.Process(run.pid).children(recursive=True)
        # six services, the console, postgres (and its workers), redis
        assert len(children) >= 9
        ports = [c.laddr.port for p in children for c in _listening(p)]
        assert set(printed.values()) <= set(ports)

        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=90)
        output.append(rest)
        assert run.returncode == 0, "".join(output)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {alive}"
        assert not [p for p in ports if port_in_use(p)]
        assert not (tmp_path / "run.pid").exists()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _listening(proc: psutil.Process) -> list[Any]:
    try:
        return [c for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
