"""Apps for gateway tests: a fresh app with its keys (made in the gateway's database as
`loyaltyctl keys create` does), the example program applied, and helpers to call as it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalty.gateway.v1 import admin_pb2

from devtools.suite import Suite
from gateway.store.tenancy import create_key
from plumbing.clock import SystemClock
from plumbing.db import create_engine
from tests.programs import EXAMPLE, EXAMPLE_IN_REPO


def example_yaml() -> str:
    path = EXAMPLE_IN_REPO if EXAMPLE_IN_REPO.exists() else EXAMPLE
    return Path(path).read_text(encoding="utf-8")


@dataclass(frozen=True)
class AppKeys:
    app: str
    member_key: str
    admin_key: str

    @property
    def member(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.member_key}"),)

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key}"),)


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
) -> AppKeys:
    app = f"t-{uuid.uuid4().hex[:10]}"
    now = SystemClock().now()
    async with gateway_engine(suite) as engine:
        member, _ = await create_key(
            engine,
            app,
            "member",
            now,
            sandbox=sandbox,
            rate_per_second=rate_per_second,
            burst=burst,
        )
        admin, _ = await create_key(engine, app, "admin", now, sandbox=sandbox)
    made = AppKeys(app, member.key, admin.key)
    applied = await admin_stub.ApplyProgram(
        admin_pb2.ApplyProgramRequest(program_yaml=program_yaml or example_yaml()),
        metadata=made.admin,
        timeout=30,
    )
    assert applied.applied, applied.errors
    return made
