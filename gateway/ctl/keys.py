"""loyaltyctl: `keys create|list|revoke`, on the gateway's database (so the first key needs
no key)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any

import typer

from gateway.ctl.cli import JsonFlag, fail, keys_app, target
from gateway.ctl.output import show_fields, show_json, show_table
from gateway.domain.keys import SCOPES


def _engine() -> Any:
    if not target.database_url:
        raise fail("no database: pass --database-url or set LOYALTY_GATEWAY_DATABASE_URL")
    from plumbing.db import create_engine
    from plumbing.settings import normalize_database_url

    return create_engine(normalize_database_url(target.database_url), 1)


def _on_database(work: Callable[[Any], Any]) -> Any:
    """Runs ``work(engine)`` on the gateway's database, migrated first (a fresh database
    gets its tables, so `keys create` can bootstrap)."""
    from gateway.main import SERVICE
    from plumbing.migrations import upgrade
    from plumbing.settings import normalize_database_url

    assert SERVICE.migrations is not None
    upgrade(SERVICE.migrations, normalize_database_url(target.database_url))

    async def run() -> Any:
        engine = _engine()
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    app_name: Annotated[str, typer.Option("--app", help="The app (created if new).")],
    scope: Annotated[str, typer.Option(help="member or admin.")],
    sandbox: Annotated[bool, typer.Option(help="A new app is a sandbox (test clock).")] = False,
    label: Annotated[str, typer.Option(help="Who the key is for.")] = "",
    rate: Annotated[int, typer.Option(help="Calls per second (token bucket).")] = 1000,
    burst: Annotated[int, typer.Option(help="Burst above the rate.")] = 2000,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key; the key is shown once, only its hash is stored."""
    if scope not in SCOPES:
        raise fail(f"--scope must be one of {', '.join(SCOPES)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", app_name):
        raise fail("--app must be 1-64 letters, digits, '.', '_' or '-'")
    if rate < 1 or burst < 1:
        raise fail("--rate and --burst must be >= 1")
    from gateway.store.tenancy import create_key
    from plumbing.clock import SystemClock

    made, created = _on_database(
        lambda engine: create_key(
            engine,
            app_name,
            scope,
            SystemClock().now(),
            sandbox=sandbox,
            label=label,
            rate_per_second=rate,
            burst=burst,
        )
    )
    answer = {
        "key": made.key,
        "key_id": made.key_id,
        "app": app_name,
        "scope": scope,
        "app_created": created,
    }
    if as_json:
        show_json(answer)
    else:
        show_fields(answer)
        typer.echo("\nKeep the key now: it cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(
    app_name: Annotated[str, typer.Option("--app", help="Only this app.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Keys (never their secrets)."""
    from gateway.store.tenancy import list_keys

    records = _on_database(lambda engine: list_keys(engine, app_name or None))
    rows = [
        {
            "key_id": r.key_id,
            "app": r.app,
            "scope": r.scope,
            "sandbox": r.sandbox,
            "label": r.label,
            "rate": f"{r.rate_per_second}/s burst {r.burst}",
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "revoked_at": r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "",
        }
        for r in records
    ]
    if as_json:
        show_json(rows)
    else:
        show_table(
            rows, ["key_id", "app", "scope", "sandbox", "label", "rate", "created_at", "revoked_at"]
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, as_json: JsonFlag = False) -> None:
    """Revoke a key (every gateway stops accepting it within seconds)."""
    from gateway.store.tenancy import revoke_key
    from plumbing.clock import SystemClock

    revoked = _on_database(lambda engine: revoke_key(engine, key_id, SystemClock().now()))
    if as_json:
        show_json({"key_id": key_id, "revoked": revoked})
    elif revoked:
        typer.echo(f"revoked {key_id}")
    else:
        raise fail(f"no live key {key_id}")
