"""loyaltyctl: `clock advance|get`: a sandbox app's test clock."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2

from gateway.ctl.cli import JsonFlag, admin, call, clock_app
from gateway.ctl.output import as_dict, show_json, show_table

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
