"""loyaltyctl: members, their points and events, redemptions and draws, and the reports
(liability, stats)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2, loyalty_pb2

from gateway.ctl.cli import (
    DateOption,
    JsonFlag,
    admin,
    app,
    call,
    event_app,
    member_app,
    points_app,
)
from gateway.ctl.output import as_dict, show_json, show_message, show_table


@member_app.command("get")
def member_get(user_id: str, as_json: JsonFlag = False) -> None:
    """A member's points, tier and badges."""
    with admin() as (_, loyalty):
        answer = call(loyalty.GetMember, loyalty_pb2.GetMemberRequest(user_id=user_id))
    show_message(answer, as_json)


@member_app.command("tags")
def member_tags(
    user_id: str,
    add: Annotated[
        list[str] | None, typer.Option("--add", help="A tag to add (repeatable).")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="A tag to remove (repeatable).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """A member's tags (the product backend's labels that campaigns' audiences name): with no
    --add or --remove, shows them."""
    with admin() as (_, loyalty):
        answer = call(
            loyalty.SetMemberTags,
            loyalty_pb2.SetMemberTagsRequest(user_id=user_id, add=add or [], remove=remove or []),
        )
    show_message(answer, as_json)


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
    show_message(answer, as_json)


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
    show_message(answer, as_json)


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
    show_message(answer, as_json)


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
