"""Loaded before every other conftest and test module."""

import os
import random

import hypothesis
import pytest
from hypothesis import HealthCheck, settings

# The harness forks service processes (with a preexec_fn) while this process holds gRPC
# channels. gRPC's fork handlers (on by default since grpcio 1.78) then run in the child
# between fork and exec and can crash it (grpc/grpc#43055). We only ever fork to exec, so the
# handlers are not needed. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


# Two Hypothesis profiles. `ci` (CI=true, as `.ci/run` sets it): derandomized, so a landing is
# never decided by chance, with no deadline (a loaded 2-core runner is slow). `dev` (local
# runs): random and broader, seed printed in the header so any failure replays with
# `pytest --hypothesis-seed=N`. HYPOTHESIS_PROFILE picks one explicitly. Failures print the
# blob for @reproduce_failure either way.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    print_blob=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def pytest_configure(config: pytest.Config) -> None:
    if PROFILE != "ci" and config.getoption("hypothesis_seed", None) is None:
        # One seed for the whole run, chosen here so the header can print it.
        hypothesis.core.global_force_seed = random.SystemRandom().randrange(2**32)  # type: ignore[assignment]


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", None) or getattr(
        hypothesis.core, "global_force_seed", None
    )
    if PROFILE == "ci":
        return "hypothesis profile: ci (derandomized)"
    return f"hypothesis profile: {PROFILE}, seed {seed} (replay: pytest --hypothesis-seed={seed})"
