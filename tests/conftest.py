"""Loaded before every other conftest and test module."""

import os

# The harness forks service processes (with a preexec_fn) while this process holds gRPC
# channels. gRPC's fork handlers (on by default since grpcio 1.78) then run in the child
# between fork and exec and can crash it (grpc/grpc#43055). We only ever fork to exec, so the
# handlers are not needed. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
