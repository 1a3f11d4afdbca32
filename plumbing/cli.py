"""The command line of every service process: ``serve`` (the default in containers) and
``migrate``. Start-up failures print one line naming what is wrong and exit 2."""

from __future__ import annotations

import gc
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import typer
import uvloop
from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError

from plumbing.db import DatabaseUnreachable
from plumbing.logs import configure_logging
from plumbing.server import ServiceSpec, StartupError, prepare_database, serve
from plumbing.settings import ServiceSettings
from plumbing.telemetry import setup_telemetry, shutdown_telemetry


def _fail(service: str, message: str) -> NoReturn:
    print(f"loyalty-{service}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _settings(spec: ServiceSpec) -> ServiceSettings:
    try:
        return spec.settings_type()
    except ValidationError as error:
        prefix = spec.settings_type.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{prefix}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        )
        _fail(spec.name, f"invalid settings: {problems}")


def tune_gc(thresholds: tuple[int, int, int]) -> None:
    """Freezes what start-up made (modules, settings, the program cache's first rows) out of
    the collector's reach, then sets its thresholds (``ServiceSettings.gc_thresholds``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def _run(spec: ServiceSpec, work: Coroutine[Any, Any, None]) -> None:
    try:
        # uvloop: the loop's own cost per call (callbacks, sockets, timers) is a visible share
        # of a small RPC; bench/events.py measures it.
        uvloop.run(work)
    except (DatabaseUnreachable, StartupError) as error:
        _fail(spec.name, str(error))
    except ArgumentError as error:
        _fail(spec.name, f"invalid database URL: {error}")


def service_cli(spec: ServiceSpec) -> typer.Typer:
    app = typer.Typer(
        help=f"The loyalty {spec.name} service.", add_completion=False, no_args_is_help=True
    )

    @app.command("serve")
    def serve_command() -> None:
        """Apply migrations (unless MIGRATE_ON_START=false) and serve gRPC until SIGTERM."""
        settings = _settings(spec)
        configure_logging(spec.name, settings.log_level)
        setup_telemetry(spec.name, trace_statements=settings.trace_statements)
        tune_gc(settings.gc_thresholds)
        try:
            _run(spec, serve(spec, settings))
        finally:
            shutdown_telemetry()

    @app.command("migrate")
    def migrate_command() -> None:
        """Apply the service's database migrations and exit (a Kubernetes Job runs this)."""
        settings = _settings(spec)
        configure_logging(spec.name, settings.log_level)
        _run(spec, prepare_database(spec, settings))

    return app
