"""loyaltyctl: the ops CLI over the gateway's admin API.

Where to connect and as whom: ``--gateway`` / ``LOYALTY_GATEWAY`` (host:port) and ``--key`` /
``LOYALTY_ADMIN_KEY``; ``keys`` commands work on the gateway's database directly
(``--database-url`` / ``LOYALTY_GATEWAY_DATABASE_URL``), so the first key can be made before
any key exists. Values missing from flags and the environment are read from
``.loyalty/dev.env`` (written by ``make run``) when it is there.

Every command prints a table for people, or JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc

from gateway.domain.keys import SCOPES
from plumbing.grpc_errors import reason_of
from plumbing.settings import read_env_file

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
saga_app = typer.Typer(help="Inspect and retry sagas.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (on the gateway's database).", no_args_is_help=True)
program_app = typer.Typer(help="The app's program.", no_args_is_help=True)
member_app = typer.Typer(help="Members.", no_args_is_help=True)
points_app = typer.Typer(help="Manual point adjustments (audited).", no_args_is_help=True)
reviews_app = typer.Typer(help="Risk reviews.", no_args_is_help=True)
clock_app = typer.Typer(help="The test clock of a sandbox app.", no_args_is_help=True)
lottery_app = typer.Typer(help="Prize pools: pause, resume, force, stats.", no_args_is_help=True)
checkout_app = typer.Typer(
    help="Points holds on the app's own orders (for support staff).", no_args_is_help=True
)
event_app = typer.Typer(
    help="Member events, as a product backend records them.", no_args_is_help=True
)
for sub, name in (
    (event_app, "event"),
    (saga_app, "saga"),
    (keys_app, "keys"),
    (program_app, "program"),
    (member_app, "member"),
    (points_app, "points"),
    (reviews_app, "reviews"),
    (clock_app, "clock"),
    (lottery_app, "lottery"),
    (checkout_app, "checkout"),
):
    app.add_typer(sub, name=name)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DEV_ENV = Path(".loyalty") / "dev.env"


def _dev_env() -> dict[str, str]:
    """KEY=VALUE lines of .loyalty/dev.env, here or at the repository root."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / DEV_ENV).is_file():
            return read_env_file(base / DEV_ENV)
    return {}


def setting(flag: str | None, name: str) -> str:
    return flag or os.environ.get(name) or _dev_env().get(name, "")


@dataclass
class Target:
    gateway: str = ""
    key: str = ""
    database_url: str = ""


target = Target()


@app.callback()
def connect(
    gateway: Annotated[
        str | None, typer.Option(help="Gateway host:port [env LOYALTY_GATEWAY].")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Admin API key [env LOYALTY_ADMIN_KEY].")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Gateway database, for `keys` [env LOYALTY_GATEWAY_DATABASE_URL]."),
    ] = None,
) -> None:
    target.gateway = setting(gateway, "LOYALTY_GATEWAY")
    target.key = setting(key, "LOYALTY_ADMIN_KEY")
    target.database_url = setting(database_url, "LOYALTY_GATEWAY_DATABASE_URL")


def fail(message: str) -> typer.Exit:
    typer.echo(f"loyaltyctl: error: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def admin() -> Iterator[
    tuple[admin_pb2_grpc.AdminServiceStub, loyalty_pb2_grpc.LoyaltyServiceStub]
]:
    if not target.gateway:
        raise fail("no gateway address: pass --gateway or set LOYALTY_GATEWAY")
    if not target.key:
        raise fail("no admin key: pass --key or set LOYALTY_ADMIN_KEY")
    with grpc.insecure_channel(target.gateway) as channel:
        try:
            yield (
                admin_pb2_grpc.AdminServiceStub(channel),
                loyalty_pb2_grpc.LoyaltyServiceStub(channel),
            )
        except grpc.RpcError as error:
            code = error.code().name
            reason = reason_of(error)
            detail = error.details()
            why = f" ({reason})" if reason and reason != code else ""
            raise fail(f"{code}{why}: {detail}") from None


M = TypeVar("M", bound=Message)


def call(method: Callable[..., M], request: Message, timeout: float = 30) -> M:
    return method(request, metadata=(("authorization", f"Bearer {target.key}"),), timeout=timeout)


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def show_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def show_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def show_fields(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values) if values else 0
    for key, value in values.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
        typer.echo(f"{key.ljust(width)}  {text}")


# --- program -------------------------------------------------------------------------------


@app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Program YAML.", exists=True)],
    dry_run: Annotated[bool, typer.Option(help="Only validate.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate the whole program, then configure every service with it."""
    with admin() as (stub, _):
        answer = call(
            stub.ApplyProgram,
            admin_pb2.ApplyProgramRequest(
                program_yaml=file.read_text(encoding="utf-8"), dry_run=dry_run
            ),
            timeout=120,
        )
    if as_json:
        show_json(as_dict(answer))
    elif answer.errors:
        typer.echo(f"{len(answer.errors)} error(s); nothing was changed:", err=True)
        for error in answer.errors:
            typer.echo(f"  {error}", err=True)
    elif answer.applied:
        typer.echo(f"applied: version {answer.version}")
    else:
        typer.echo("valid (dry run): nothing was changed")
    if answer.errors:
        raise typer.Exit(1)


@program_app.command("get")
def program_get(as_json: JsonFlag = False) -> None:
    """Print the applied program."""
    with admin() as (stub, _):
        answer = call(stub.GetProgram, admin_pb2.GetProgramRequest())
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"# version {answer.version}")
        typer.echo(answer.program_yaml, nl=False)


# --- sagas ---------------------------------------------------------------------------------


def _saga_rows(sagas: Sequence[admin_pb2.Saga]) -> list[dict[str, Any]]:
    return [
        {
            "saga_id": s.saga_id,
            "kind": s.kind,
            "state": s.state,
            "reason": s.reason,
            "user_id": s.user_id,
            "request_id": s.request_id,
            "created_at": s.created_at.ToDatetime().isoformat(timespec="seconds"),
        }
        for s in sagas
    ]


def _show_saga(saga: admin_pb2.Saga, as_json: bool) -> None:
    if as_json:
        show_json(as_dict(saga))
        return
    show_fields(
        {
            "saga": saga.saga_id,
            "kind": saga.kind,
            "state": saga.state,
            "reason": saga.reason or "-",
            "user": saga.user_id,
            "request": saga.request_id,
            "trace": f"{saga.trace_id} ({'kept' if saga.trace_kept else 'not sampled'})"
            if saga.trace_id
            else "-",
        }
    )
    typer.echo("")
    show_table(
        [
            {
                "step": s.name,
                "state": s.state,
                "attempts": s.attempts,
                "started": s.started_at.ToDatetime().isoformat(timespec="milliseconds")
                if s.HasField("started_at")
                else "",
                "error": s.error,
            }
            for s in saga.steps
        ],
        ["step", "state", "attempts", "started", "error"],
    )


@saga_app.command("get")
def saga_get(saga_id: str, as_json: JsonFlag = False) -> None:
    """A saga with its steps and its trace id."""
    with admin() as (stub, _):
        saga = call(stub.GetSaga, admin_pb2.GetSagaRequest(saga_id=saga_id))
    _show_saga(saga, as_json)


@saga_app.command("list")
def saga_list(
    state: Annotated[
        str,
        typer.Option(
            help="STARTED, CONFIRMING, COMPENSATING, COMPLETED, COMPENSATED or NEEDS_ATTENTION."
        ),
    ] = "",
    request_id: Annotated[
        str, typer.Option(help="The request_id the product backend sent (Redeem, Draw).")
    ] = "",
    user: Annotated[str, typer.Option(help="Only this member's sagas.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Sagas, newest first (all pages up to --limit)."""
    sagas: list[admin_pb2.Saga] = []
    token = ""
    with admin() as (stub, _):
        while len(sagas) < limit:
            page = call(
                stub.ListSagas,
                admin_pb2.ListSagasRequest(
                    state=state,
                    page_size=min(200, limit - len(sagas)),
                    page_token=token,
                    request_id=request_id,
                    user_id=user,
                ),
            )
            sagas.extend(page.sagas)
            token = page.next_page_token
            if not token:
                break
    if as_json:
        show_json([as_dict(s) for s in sagas])
    else:
        show_table(
            _saga_rows(sagas),
            ["saga_id", "kind", "state", "reason", "user_id", "request_id", "created_at"],
        )


@saga_app.command("retry")
def saga_retry(saga_id: str, as_json: JsonFlag = False) -> None:
    """Drive an unfinished or attention-needing saga again, now."""
    with admin() as (stub, _):
        saga = call(stub.RetrySaga, admin_pb2.RetrySagaRequest(saga_id=saga_id), timeout=60)
    _show_saga(saga, as_json)


# --- keys (database) -----------------------------------------------------------------------


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


# --- members and points --------------------------------------------------------------------


@member_app.command("get")
def member_get(user_id: str, as_json: JsonFlag = False) -> None:
    """A member's points, tier and badges."""
    with admin() as (_, loyalty):
        answer = call(loyalty.GetMember, loyalty_pb2.GetMemberRequest(user_id=user_id))
    if as_json:
        show_json(as_dict(answer))
    else:
        show_fields(as_dict(answer))


@event_app.command("record")
def event_record(
    user_id: str,
    action: Annotated[str, typer.Argument(help="An action of the program: sign_in, purchase, ...")],
    attribute: Annotated[
        list[str] | None,
        typer.Option("--attr", help="An attribute as key=value (repeatable): amount_fen=200000."),
    ] = None,
    quantity: Annotated[int, typer.Option(help="Units (minutes watched, ...); 0 for none.")] = 0,
    event_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Record one event for a member (RecordEvent): the points, growth and tier it gave."""
    attributes = {}
    for pair in attribute or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: use key=value", param_hint="--attr")
        attributes[key] = value
    with admin() as (_, loyalty):
        answer = call(
            loyalty.RecordEvent,
            loyalty_pb2.RecordEventRequest(
                event_id=event_id or f"ctl-{uuid.uuid4()}",
                user_id=user_id,
                action=action,
                quantity=quantity,
                attributes=attributes,
            ),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        show_fields(as_dict(answer))


@app.command()
def redeem(
    user_id: str,
    sku: str,
    quantity: Annotated[int, typer.Option(help="Units to redeem.")] = 1,
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Redeem a mall item for a member (the redemption saga); prints its outcome."""
    with admin() as (_, loyalty):
        answer = call(
            loyalty.Redeem,
            loyalty_pb2.RedeemRequest(
                request_id=request_id or f"ctl-{uuid.uuid4()}",
                user_id=user_id,
                sku=sku,
                quantity=quantity,
            ),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        show_fields(as_dict(answer))


@app.command()
def draw(
    user_id: str,
    pool: str,
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Draw once from a lottery pool for a member (the draw saga); prints the prize."""
    with admin() as (_, loyalty):
        answer = call(
            loyalty.Draw,
            loyalty_pb2.DrawRequest(
                request_id=request_id or f"ctl-{uuid.uuid4()}", user_id=user_id, pool=pool
            ),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        show_fields(as_dict(answer))


@points_app.command("adjust")
def points_adjust(
    user_id: str,
    delta: Annotated[int, typer.Argument(help="Points to add (negative to take).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the history and the audit).")],
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Adjust a member's points, with a reason."""
    with admin() as (stub, _):
        answer = call(
            stub.AdjustPoints,
            admin_pb2.AdjustPointsRequest(
                request_id=request_id or f"ctl-{uuid.uuid4()}",
                user_id=user_id,
                delta=delta,
                reason=reason,
            ),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"balance {answer.balance}{' (replay)' if answer.duplicate else ''}")


DateOption = Annotated[str, typer.Option(help="YYYY-MM-DD (default: the last 7 days).")]


@app.command()
def liability(
    from_date: DateOption = "", to_date: DateOption = "", as_json: JsonFlag = False
) -> None:
    """Points issued, spent, expired and outstanding per local day."""
    with admin() as (stub, _):
        answer = call(
            stub.GetLiability, admin_pb2.GetLiabilityRequest(from_date=from_date, to_date=to_date)
        )
    rows = [as_dict(day) for day in answer.days]
    if as_json:
        show_json(rows)
    else:
        show_table(
            rows,
            ["date", "issued", "spent", "expired", "adjusted", "outstanding", "outstanding_fen"],
        )


@app.command()
def stats(from_date: DateOption = "", to_date: DateOption = "", as_json: JsonFlag = False) -> None:
    """Events, points, redemptions and risk decisions per local day."""
    with admin() as (stub, _):
        answer = call(
            stub.GetStats, admin_pb2.GetStatsRequest(from_date=from_date, to_date=to_date)
        )
    rows = [as_dict(day) for day in answer.days]
    if as_json:
        show_json(rows)
    else:
        show_table(
            [
                {
                    **row,
                    "redemptions": ", ".join(
                        f"{k}={v}" for k, v in sorted(row["redemptions"].items())
                    ),
                    "risk_decisions": ", ".join(
                        f"{k}={v}" for k, v in sorted(row["risk_decisions"].items())
                    ),
                }
                for row in rows
            ],
            [
                "date",
                "events",
                "points_issued",
                "points_spent",
                "points_expired",
                "redemptions",
                "risk_decisions",
            ],
        )


# --- risk reviews --------------------------------------------------------------------------


@reviews_app.command("list")
def reviews_list(
    state: Annotated[str, typer.Option(help="open, approved or rejected.")] = "open",
    as_json: JsonFlag = False,
) -> None:
    """REVIEW decisions waiting for (or given) a decision."""
    with admin() as (stub, _):
        answer = call(stub.ListReviews, admin_pb2.ListReviewsRequest(state=state, page_size=200))
    rows = [as_dict(r) for r in answer.reviews]
    if as_json:
        show_json(rows)
    else:
        show_table(
            [{**r, "rules": ",".join(r["rules"])} for r in rows],
            ["review_id", "action", "user_id", "rules", "state", "operator", "created_at"],
        )


@reviews_app.command("decide")
def reviews_decide(
    review_id: str,
    approve: Annotated[bool, typer.Option("--approve/--reject", help="The decision.")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Approve or reject a review."""
    with admin() as (stub, _):
        answer = call(
            stub.DecideReview,
            admin_pb2.DecideReviewRequest(review_id=review_id, approve=approve, note=note),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"{answer.review_id}: {answer.state}")


# --- lottery and alerts -------------------------------------------------------------------


@lottery_app.command("pause")
def lottery_pause(
    pool: str,
    reason: Annotated[str, typer.Option(help="Why (audited).")],
    as_json: JsonFlag = False,
) -> None:
    """Stop draws in a pool (draw sagas then fail with POOL_PAUSED, points given back)."""
    with admin() as (stub, _):
        answer = call(stub.PausePool, admin_pb2.PausePoolRequest(pool=pool, reason=reason))
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"{pool}: paused")


@lottery_app.command("resume")
def lottery_resume(pool: str, as_json: JsonFlag = False) -> None:
    """Allow draws in a pool again."""
    with admin() as (stub, _):
        answer = call(stub.ResumePool, admin_pb2.ResumePoolRequest(pool=pool))
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"{pool}: {'paused' if answer.paused else 'open'}")


@lottery_app.command("force")
def lottery_force(
    pool: str,
    user_id: str,
    prize: str,
    reason: Annotated[str, typer.Option(help="Why (audited with your key).")],
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Force the prize of a user's next draw in a pool."""
    with admin() as (stub, _):
        call(
            stub.ForceDrawOutcome,
            admin_pb2.ForceDrawOutcomeRequest(
                pool=pool,
                user_id=user_id,
                prize=prize,
                reason=reason,
                request_id=request_id or f"ctl-{uuid.uuid4()}",
            ),
        )
    if as_json:
        show_json({"pool": pool, "user_id": user_id, "prize": prize})
    else:
        typer.echo(f"{user_id}'s next draw in {pool} wins {prize}")


@lottery_app.command("stats")
def lottery_stats(
    pool: str, from_date: DateOption = "", to_date: DateOption = "", as_json: JsonFlag = False
) -> None:
    """Draws, wins by prize, and payout against budget per local day."""
    with admin() as (stub, _):
        answer = call(
            stub.GetPoolStats,
            admin_pb2.GetPoolStatsRequest(pool=pool, from_date=from_date, to_date=to_date),
        )
    rows = [as_dict(day) for day in answer.days]
    if as_json:
        show_json(rows)
    else:
        show_table(
            [
                {
                    **row,
                    "wins_by_prize": ", ".join(
                        f"{k}={v}" for k, v in sorted(row["wins_by_prize"].items())
                    ),
                }
                for row in rows
            ],
            ["date", "draws", "wins_by_prize", "payout_fen", "budget_fen"],
        )


@app.command()
def alerts(
    limit: Annotated[int, typer.Option(help="At most this many from each source.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Risk and lottery alerts, newest first."""
    with admin() as (stub, _):
        answer = call(stub.ListAlerts, admin_pb2.ListAlertsRequest(page_size=limit))
    rows = [as_dict(a) for a in answer.alerts]
    if as_json:
        show_json(rows)
    else:
        show_table(rows, ["raised_at", "source", "kind", "subject", "message"])


# --- checkout holds -------------------------------------------------------------------------


@checkout_app.command("holds")
def checkout_holds(
    state: Annotated[
        str, typer.Option(help="held, captured, released, expired or refunded (all if empty).")
    ] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Order holds, newest first (all pages up to --limit)."""
    holds: list[loyalty_pb2.OrderHold] = []
    token = ""
    with admin() as (_, loyalty):
        while len(holds) < limit:
            page = call(
                loyalty.ListOrderHolds,
                loyalty_pb2.ListOrderHoldsRequest(
                    state=state, page_size=min(200, limit - len(holds)), page_token=token
                ),
            )
            holds.extend(page.holds)
            token = page.next_page_token
            if not token:
                break
    rows = [as_dict(h) for h in holds]
    if as_json:
        show_json(rows)
    else:
        show_table(
            rows,
            [
                "order_ref",
                "user_id",
                "points",
                "value_fen",
                "state",
                "points_refunded",
                "expires_at",
            ],
        )


@checkout_app.command("release")
def checkout_release(
    order_ref: str,
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Give an order's held points back (a later hold for the order is then refused)."""
    with admin() as (_, loyalty):
        answer = call(
            loyalty.ReleaseOrder,
            loyalty_pb2.ReleaseOrderRequest(
                request_id=request_id or f"ctl-{uuid.uuid4()}", order_ref=order_ref
            ),
        )
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"{order_ref}: {answer.state}")


# --- sandbox clock -------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from '90', '90s', '15m', '2h' or '30d'."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise typer.BadParameter("use a number of seconds, or 15m, 2h, 30d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


@clock_app.command("advance")
def clock_advance(
    by: Annotated[str, typer.Argument(help="How far: seconds, or 15m, 2h, 30d.")],
    request_id: Annotated[str, typer.Option(help="Idempotency key (default: a new one).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Move a sandbox app's clock forward; returns once every service ran what fell due."""
    seconds = parse_duration(by)
    with admin() as (stub, _):
        answer = call(
            stub.AdvanceClock,
            admin_pb2.AdvanceClockRequest(
                seconds=seconds, request_id=request_id or f"ctl-{uuid.uuid4()}"
            ),
            timeout=300,
        )
    now = answer.now.ToDatetime().isoformat()
    if as_json:
        show_json({"now": now, "offset_seconds": answer.offset_seconds})
    else:
        typer.echo(f"the app's time is now {now} UTC ({answer.offset_seconds}s ahead)")


@clock_app.command("get")
def clock_get(as_json: JsonFlag = False) -> None:
    """The app's time as the gateway and every service hold it; they must agree."""
    with admin() as (stub, _):
        answer = call(stub.GetClock, admin_pb2.GetClockRequest())
    if as_json:
        show_json(as_dict(answer))
        return
    show_table(
        [
            {
                "service": c.service,
                "now": c.now.ToDatetime().isoformat(),
                "offset": c.offset_seconds,
            }
            for c in answer.services
        ],
        ["service", "now", "offset"],
    )
    if not answer.in_step:
        typer.echo("services disagree: `loyaltyctl apply -f` the program again to realign them")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
