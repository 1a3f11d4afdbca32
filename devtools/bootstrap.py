"""The dev app `make run` sets up: the sandbox app ``video`` with the example program applied,
one member key and one admin key (reused from ``.loyalty/dev.env`` while they still work)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc

from devtools.suite import REPO, Suite, SuiteError
from gateway.domain.keys import secret_matches, split_key
from gateway.store.tenancy import create_key, find_key
from plumbing.clock import SystemClock
from plumbing.db import create_engine
from plumbing.settings import read_env_file

DEV_APP = "video"
EXAMPLE_PROGRAMS = (
    REPO / "examples" / "video-app.yaml",
    REPO.parent / "shared" / "examples" / "video-app.yaml",
)


@dataclass(frozen=True)
class AppKeys:
    """An app with a member key and an admin key (what tests, the soak and the benchmarks
    call the gateway as)."""

    app: str
    member_key: str
    admin_key: str

    @property
    def member(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.member_key}"),)

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key}"),)


async def create_app_keys(
    database_url: str,
    app: str,
    *,
    sandbox: bool = True,
    rate_per_second: int = 1000,
    burst: int = 2000,
) -> AppKeys:
    """Makes the app (if new) and one key of each scope, on the gateway's database, as
    `loyaltyctl keys create` does; the member key gets the given token bucket."""
    engine = create_engine(database_url, 1)
    try:
        now = SystemClock().now()
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
    finally:
        await engine.dispose()
    return AppKeys(app, member.key, admin.key)


@dataclass(frozen=True)
class DevApp:
    app: str
    member_key: str
    admin_key: str
    program: Path
    version: int


async def _keys(database_url: str, known: dict[str, str]) -> tuple[str, str]:
    engine = create_engine(database_url, 1)
    try:
        keys = []
        for scope, name in (("member", "LOYALTY_MEMBER_KEY"), ("admin", "LOYALTY_ADMIN_KEY")):
            key = known.get(name, "")
            parts = split_key(key)
            record = await find_key(engine, parts[0]) if parts else None
            if (
                parts is None
                or record is None
                or record.app != DEV_APP
                or record.scope != scope
                or record.revoked_at is not None
                or not secret_matches(parts[1], record.secret_sha256)
            ):
                made, _ = await create_key(
                    engine, DEV_APP, scope, SystemClock().now(), sandbox=True, label="make run"
                )
                key = made.key
            keys.append(key)
        return keys[0], keys[1]
    finally:
        await engine.dispose()


def bootstrap_dev_app(suite: Suite, env_file: Path) -> DevApp:
    member_key, admin_key = asyncio.run(
        _keys(suite.database_url("gateway"), read_env_file(env_file))
    )
    program = next((path for path in EXAMPLE_PROGRAMS if path.is_file()), None)
    if program is None:
        raise SuiteError("the example program (examples/video-app.yaml) is missing")
    with grpc.insecure_channel(suite.address("gateway")) as channel:
        answer = admin_pb2_grpc.AdminServiceStub(channel).ApplyProgram(
            admin_pb2.ApplyProgramRequest(program_yaml=program.read_text(encoding="utf-8")),
            metadata=(("authorization", f"Bearer {admin_key}"),),
            timeout=120,
        )
    if not answer.applied:
        raise SuiteError(f"the example program was refused: {'; '.join(answer.errors)}")
    return DevApp(DEV_APP, member_key, admin_key, program, answer.version)
