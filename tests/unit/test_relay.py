"""What the gateway passes on of a participant's INVALID_ARGUMENT: a field of its caller's own
request as that field; a field the gateway built itself (``requests[0].account_created_at``) as
INTERNAL with the trace id, never as a field the caller never sent. Two real in-process
grpc.aio servers: a participant, and a front that relays through ``gateway.participants.ask``.
"""

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from gateway.participants import ask
from plumbing.errors import InvalidArgument
from plumbing.grpc_errors import ErrorMappingInterceptor


class Participant(points_pb2_grpc.PointsServiceServicer):
    async def GetBalance(self, request: Any, context: Any) -> points_pb2.Balance:
        if request.user_id == "bad-callers-field":
            raise InvalidArgument("user_id", "must be printable")
        if request.user_id == "bad-own-field":
            raise InvalidArgument("requests[0].account_created_at", "is in the future")
        return points_pb2.Balance(user_id=request.user_id)


class Front(points_pb2_grpc.PointsServiceServicer):
    def __init__(self, participant: Any) -> None:
        self.participant = participant

    async def GetBalance(self, request: Any, context: Any) -> points_pb2.Balance:
        answer: points_pb2.Balance = await ask(
            "points", self.participant.GetBalance, request, deadline=5
        )
        return answer


@pytest.fixture
async def front() -> AsyncIterator[points_pb2_grpc.PointsServiceStub]:
    servers = []

    async def start(servicer: Any) -> str:
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        points_pb2_grpc.add_PointsServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    behind = grpc.aio.insecure_channel(await start(Participant()))
    address = await start(Front(points_pb2_grpc.PointsServiceStub(behind)))
    async with grpc.aio.insecure_channel(address) as channel:
        yield points_pb2_grpc.PointsServiceStub(channel)
    await behind.close()
    for server in servers:
        await server.stop(0)


async def refusal(stub: Any, user_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetBalance(points_pb2.GetBalanceRequest(app="a", user_id=user_id))
    return caught.value


async def test_the_callers_own_field_is_passed_on(front: Any) -> None:
    error = await refusal(front, "bad-callers-field")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "user_id: must be printable"


async def test_a_field_the_gateway_built_is_internal(front: Any) -> None:
    error = await refusal(front, "bad-own-field")
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert "account_created_at" not in details
    assert "trace_id=" in details


async def test_nul_is_refused_before_any_handler_naming_the_field(front: Any) -> None:
    error = await refusal(front, "a\x00b")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("user_id:")
