"""loyaltyctl: `checkout holds|release`: points held on the app's own orders."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from loyalty.gateway.v1 import loyalty_pb2

from gateway.ctl.cli import JsonFlag, admin, call, checkout_app
from gateway.ctl.output import as_dict, show_json, show_table


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
