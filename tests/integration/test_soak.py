"""The short chaos soak (`make soak` runs the long one): about 25 s of load on its own suite
while services, the gateway and Redis are killed or paused, then every saga must end and the
invariant checker must be clean."""

from __future__ import annotations

import subprocess
import sys

from devtools.suite import REPO


def test_a_short_soak_ends_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.soak", "--seconds", "25", "--seed", "20261125"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "soak: clean" in done.stdout
    assert "faults injected: 0" not in done.stdout
