"""The six processes boot, serve health and reflection, and answer every RPC honestly."""

from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from loyalty.points.v1 import points_pb2

from devtools.suite import SERVICES, SPECS
from plumbing.migrations import current_heads

EXPECTED = {
    "points": {"loyalty.points.v1.PointsService"},
    "levels": {"loyalty.levels.v1.LevelsService"},
    "mall": {"loyalty.mall.v1.MallService"},
    "lottery": {"loyalty.lottery.v1.LotteryService"},
    "risk": {"loyalty.risk.v1.RiskService"},
    "gateway": {"loyalty.gateway.v1.LoyaltyService", "loyalty.gateway.v1.AdminService"},
}


@pytest.mark.parametrize("service", SERVICES)
def test_reflection_lists_the_service_and_health_says_serving(suite, service):
    with grpc.insecure_channel(suite.address(service)) as channel:
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert EXPECTED[service] <= listed
        assert "grpc.health.v1.Health" in listed
        health = health_pb2_grpc.HealthStub(channel)
        for name in [*EXPECTED[service], ""]:
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


@pytest.mark.parametrize("service", SERVICES)
def test_every_rpc_answers_without_internal_errors(suite, service):
    """An empty request to every method (found by reflection) gets a deliberate answer:
    never INTERNAL, UNKNOWN or a dead process."""
    with grpc.insecure_channel(suite.address(service)) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        for name in EXPECTED[service]:
            for method in pool.FindServiceByName(name).methods:
                request = message_factory.GetMessageClass(method.input_type)()
                call: grpc.UnaryUnaryMultiCallable[Any, bytes] = channel.unary_unary(
                    f"/{name}/{method.name}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=lambda b: b,
                )
                try:
                    call(request, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                assert code not in (
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.UNAVAILABLE,
                ), f"{name}/{method.name}: {code}"
    assert suite.processes[service].poll() is None


async def test_typed_stubs_reach_the_points_service(stubs):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.points.GetBalance(
            points_pb2.GetBalanceRequest(app="no-program-here", user_id="u1")
        )
    # An app without a points program is unknown to the ledger.
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_owns_a_migrated_database(suite, service):
    url = suite.database_url(service).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None
    (version,) = row
    migrations = SPECS[service].migrations
    assert migrations is not None
    assert version in current_heads(migrations)
