"""loyaltyctl: `reviews list|decide`: the risk review queue."""

from __future__ import annotations

from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2

from gateway.ctl.cli import JsonFlag, admin, call, reviews_app
from gateway.ctl.output import as_dict, show_json, show_table


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
