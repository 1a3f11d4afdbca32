"""The console as a process of its own beside the suite (``make run``, the browser tests):
``python -m console serve`` pointed at a gateway, waited for until ``/healthz`` answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class ConsoleError(Exception):
    """The console did not start; the message carries the end of its log."""


class ConsoleProcess:
    def __init__(self, gateway: str, port: int, log: Path, **settings: str) -> None:
        self.gateway = gateway
        self.port = port
        self.log = log
        # Further LOYALTY_CONSOLE_* settings, by their lower-case names.
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Starts it and waits until it answers; its URL."""
        env = {
            **os.environ,
            "LOYALTY_CONSOLE_GATEWAY": self.gateway,
            "LOYALTY_CONSOLE_HOST": "127.0.0.1",
            "LOYALTY_CONSOLE_PORT": str(self.port),
            **{f"LOYALTY_CONSOLE_{k.upper()}": v for k, v in self.settings.items()},
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "console", "serve"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise ConsoleError(f"the console did not start (log {self.log}):\n{tail}")
            time.sleep(0.1)
        return self.url

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
