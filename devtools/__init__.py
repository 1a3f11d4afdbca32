"""Developer tooling: embedded Postgres and Redis, the six-process suite launcher, `make run`."""

import os

# This package forks service processes from a process that may hold gRPC channels; gRPC's fork
# handlers (on by default since grpcio 1.78) can crash the child between fork and exec
# (grpc/grpc#43055). We only fork to exec, so they are not needed. Set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
