"""The suite where the machine around it misbehaves: a port taken by chance when a service
starts, and a PostgreSQL restart under the services' feet. A suite of its own on a PostgreSQL
of its own, so restarting it disturbs no other test."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.embedded import EmbeddedPostgres, free_port
from devtools.suite import SERVICES, Suite
from plumbing.db import IDLE_PING_SECONDS
from tests.integration.conftest import Infra
from tests.integration.gateway_apps import example_yaml, new_app


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port something else listens on, as an outgoing connection's local port would hold
    one of 50051-50056 by chance."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.fixture(scope="module")
def own_postgres(infra: Infra) -> Iterator[EmbeddedPostgres]:
    postgres = EmbeddedPostgres(
        infra.root / f"postgres-restarts-{uuid.uuid4().hex[:6]}", free_port()
    )
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def own_suite(infra: Infra, own_postgres: EmbeddedPostgres, taken_port: int) -> Iterator[Suite]:
    ports = {service: free_port() for service in SERVICES}
    ports["risk"] = taken_port
    suite = Suite(own_postgres.url, infra.redis_url, ports, Path(infra.root) / "logs-restarts")
    try:
        suite.start(timeout=90)
        yield suite
    finally:
        suite.stop()


async def test_a_service_whose_port_is_taken_listens_elsewhere(
    own_suite: Suite, taken_port: int
) -> None:
    assert own_suite.ports["risk"] != taken_port
    # The gateway was started again with risk's new address: an event reaches risk.
    async with grpc.aio.insecure_channel(own_suite.address("gateway")) as channel:
        app = await new_app(own_suite, admin_pb2_grpc.AdminServiceStub(channel))
        reply = await loyalty_pb2_grpc.LoyaltyServiceStub(channel).RecordEvent(
            pb.RecordEventRequest(event_id="e1", user_id="u1", action="register"),
            metadata=app.member,
            timeout=20,
        )
        assert (reply.decision, reply.points_awarded) == (pb.ALLOW, 50)


async def test_the_first_calls_after_a_postgres_restart_succeed(
    own_suite: Suite, own_postgres: EmbeddedPostgres
) -> None:
    async with grpc.aio.insecure_channel(own_suite.address("gateway")) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        member = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        app = await new_app(own_suite, admin)
        # Every process has pooled connections now.
        for n in range(3):
            await member.RecordEvent(
                pb.RecordEventRequest(
                    event_id=f"warm-{n}",
                    user_id="alice",
                    action="purchase",
                    attributes={"amount_fen": "100000"},
                ),
                metadata=app.member,
                timeout=20,
            )

        started = time.monotonic()
        own_postgres.stop()
        own_postgres.start()
        # What the fix relies on: a restart outlasts the idle time after which a pooled
        # connection is checked before it is lent out.
        assert time.monotonic() - started > IDLE_PING_SECONDS

        # The first call of each kind after the restart: every participant, then the gateway.
        applied = await admin.ApplyProgram(
            admin_pb2.ApplyProgramRequest(program_yaml=example_yaml()),
            metadata=app.admin,
            timeout=30,
        )
        assert applied.applied, applied.errors
        seen = await member.GetMember(pb.GetMemberRequest(user_id="alice"), metadata=app.member)
        assert seen.points_available == 3000
        redeemed = await member.Redeem(
            pb.RedeemRequest(request_id="r1", user_id="alice", sku="ticket-wolf-warrior-2"),
            metadata=app.member,
            timeout=20,
        )
        assert (redeemed.status, redeemed.reason) == (pb.Redemption.COMPLETED, "")
