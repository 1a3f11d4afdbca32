"""Developer tooling: embedded Postgres and Redis, the six-process suite launcher, `make run`."""
