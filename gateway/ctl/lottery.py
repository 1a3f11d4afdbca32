"""loyaltyctl: `lottery pause|resume|force|stats` and `alerts`."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2

from gateway.ctl.cli import DateOption, JsonFlag, admin, app, call, lottery_app
from gateway.ctl.output import as_dict, show_json, show_table


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
