"""Every `loyaltyctl` line of docs/runbook.md runs against the local suite, with its
placeholders filled from a real app: a failed redemption, a review, a pool, an order hold."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import uuid

from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.suite import REPO, Suite
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app
from tests.integration.test_gateway import earn_points

RUNBOOK = REPO / "docs" / "runbook.md"
# A command that may end in this refusal still proves the command is real: the state it needs
# (a saga that is not finished yet) cannot be made on purpose here.
ALLOWED_REFUSALS = {"saga retry": "SAGA_FINISHED"}


def runbook_commands() -> list[str]:
    commands = []
    in_block = False
    for line in RUNBOOK.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = not in_block
            continue
        if in_block and stripped.startswith("loyaltyctl "):
            commands.append(stripped)
    return commands


async def test_every_runbook_command_runs(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await earn_points(stubs, app, user, 40_000)
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    failed = await stubs.loyalty.Redeem(
        pb.RedeemRequest(request_id=request_id, user_id=user, sku="ticket-wolf-warrior-2"),
        metadata=app.member,
    )
    assert failed.reason == "INSUFFICIENT_POINTS"
    device = f"dev-{uuid.uuid4().hex[:8]}"
    for n in range(4):  # the fourth register on one device goes to review
        await stubs.loyalty.RecordEvent(
            pb.RecordEventRequest(
                event_id=f"{device}-{n}",
                user_id=f"{device}-u{n}",
                action="register",
                device_id=device,
            ),
            metadata=app.member,
        )
    review_id = ""
    for _ in range(50):
        reviews = await stubs.admin.ListReviews(
            admin_pb2.ListReviewsRequest(state="open"), metadata=app.admin
        )
        if reviews.reviews:
            review_id = reviews.reviews[0].review_id
            break
        await asyncio.sleep(0.1)
    assert review_id
    order_ref = f"o-{uuid.uuid4().hex[:8]}"
    await stubs.loyalty.HoldForOrder(
        pb.HoldForOrderRequest(
            request_id=order_ref,
            user_id=user,
            order_ref=order_ref,
            points=100,
            order_amount_fen=10_000,
        ),
        metadata=app.member,
    )
    values = {
        "request_id": request_id,
        "saga_id": failed.redemption_id,
        "user_id": user,
        "review_id": review_id,
        "pool": "lucky-wheel",
        "order_ref": order_ref,
        "campaign": "double-11",
    }
    env = {
        **os.environ,
        "LOYALTY_GATEWAY": suite.address("gateway"),
        "LOYALTY_ADMIN_KEY": app.admin_key,
    }
    commands = runbook_commands()
    assert len(commands) >= 15
    for command in commands:
        filled = re.sub(r"<(\w+)>", lambda m: values[m.group(1)], command)
        args = shlex.split(filled)[1:]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gateway.ctl", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        allowed = next(
            (
                why
                for prefix, why in ALLOWED_REFUSALS.items()
                if filled.startswith(f"loyaltyctl {prefix}")
            ),
            None,
        )
        if done.returncode != 0 and allowed and allowed in done.stderr:
            continue
        assert done.returncode == 0, (filled, done.stderr)
    seen = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert seen.points_available == 500  # 400, adjusted +100; the order hold was released
