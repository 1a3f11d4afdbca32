"""Apps for gateway tests: a fresh app with its keys (made in the gateway's database as
`loyaltyctl keys create` does), the example program applied, and helpers to call as it."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from loyalty.gateway.v1 import admin_pb2
from sqlalchemy import text

from devtools.bootstrap import AppKeys, create_app_keys
from devtools.suite import Suite
from plumbing.db import create_engine
from tests.integration.app_time import park_app
from tests.programs import EXAMPLE, EXAMPLE_IN_REPO


def example_yaml() -> str:
    """The example program as the operator wrote it (examples/video-app.yaml)."""
    path = EXAMPLE_IN_REPO if EXAMPLE_IN_REPO.exists() else EXAMPLE
    return Path(path).read_text(encoding="utf-8")


@functools.cache
def spendable_yaml() -> str:
    """The example program less its ``pending`` return window: a purchase's points are
    spendable at once. Most tests fund their members with purchases and then spend; the tests
    of pending points (test_pending_points.py, test_referrals.py) apply the whole example."""
    # The section cut out of the text, so the rest reads (and is edited by tests) as written.
    text = re.sub(r"(?ms)^pending:.*?(?=^\S|\Z)", "", example_yaml())
    assert "pending" not in yaml.safe_load(text)
    return text


@asynccontextmanager
async def gateway_engine(suite: Suite) -> AsyncIterator[Any]:
    engine = create_engine(suite.database_url("gateway"), 2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def new_app(
    suite: Suite,
    admin_stub: Any,
    *,
    sandbox: bool = True,
    program_yaml: str | None = None,
    rate_per_second: int = 1000,
    burst: int = 2000,
    park: bool = True,
) -> AppKeys:
    """A fresh app with the program applied (by default the example less its pending
    window: ``spendable_yaml``). A sandbox app is parked at the next local 10:00
    of its own clock (``tests.integration.app_time``), so no test's "today" depends on the
    hour the run started at; ``park=False`` keeps the real time."""
    made = await create_app_keys(
        suite.database_url("gateway"),
        f"t-{uuid.uuid4().hex[:10]}",
        sandbox=sandbox,
        rate_per_second=rate_per_second,
        burst=burst,
    )
    applied = await admin_stub.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=program_yaml or spendable_yaml()),
        metadata=made.admin,
        timeout=30,
    )
    assert applied.applied, applied.errors
    if sandbox and park:
        await park_app(admin_stub, made.admin)
    return made


async def stuck_saga(suite: Suite, app: AppKeys, user: str, saga_id: str, trace_id: str) -> None:
    """A redemption that stopped for an operator before its commit point (NEEDS_ATTENTION,
    RETRIES_EXHAUSTED, as one whose drives ran out does): RetrySaga compensates it. No
    recovery loop takes it first."""
    async with gateway_engine(suite) as engine, engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO sagas (saga_id, app, kind, request_id, user_id, payload,"
                " payload_hash, state, reason, trace_id, span_id, result, drives, lease_until,"
                " created_at, updated_at, app_day) VALUES (:id, :app, 'redeem', :id, :user,"
                " '{}', 'h', 'NEEDS_ATTENTION', 'RETRIES_EXHAUSTED', :trace, :span,"
                " CAST(:result AS jsonb), 1, now(), now(), now(), current_date)"
            ),
            {
                "id": saga_id,
                "app": app.app,
                "user": user,
                "trace": trace_id,
                "span": "cd" * 8,
                "result": json.dumps({"stuck_state": "COMPENSATING"}),
            },
        )
