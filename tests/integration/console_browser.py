"""The console's browser tests' setup: Debian's Chromium (installed with apt when missing; no
test downloads a browser build) driven by Playwright, and the console as a process of its own
pointed at the suite's gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.console import ConsoleProcess
from devtools.embedded import free_port

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
# Screenshots of each page, from every run (the README shows two, copied to docs/screenshots).
SCREENSHOTS = Path(os.environ.get("LOYALTY_SCREENSHOTS", REPO / ".loyalty" / "screenshots"))


def ensure_chromium() -> str:
    """Debian's chromium package, installed now if this machine has none."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("the console's browser tests need Debian's chromium package (no apt-get here)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"apt-get install chromium failed:\n{done.stderr[-2000:]}")
    return CHROMIUM


@contextmanager
def console_process(gateway: str, logs: Path) -> Iterator[str]:
    """``python -m console serve`` against ``gateway``: its base URL while it runs."""
    console = ConsoleProcess(
        gateway,
        free_port(),
        logs / "console.log",
        trace_url_template="http://jaeger.example/trace/{trace_id}",
    )
    try:
        yield console.start()
    finally:
        console.stop()
