"""Domain errors reach the client as status code + ErrorInfo reason (+ BadRequest field), and
nothing unexpected leaks a stack trace. A real in-process grpc.aio server, no mocks."""

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from plumbing.errors import FailedPrecondition, InvalidArgument, NotFound
from plumbing.grpc_errors import ErrorMappingInterceptor, reason_of, rich_status


class InsufficientPoints(FailedPrecondition):
    reason = "INSUFFICIENT_POINTS"


class UnknownUser(NotFound):
    reason = "UNKNOWN_USER"


class Servicer(points_pb2_grpc.PointsServiceServicer):
    async def GetBalance(self, request, context):
        match request.user_id:
            case "poor":
                raise InsufficientPoints("needs 500, has 20", metadata={"available": "20"})
            case "ghost":
                raise UnknownUser("no such user")
            case "":
                raise InvalidArgument("user_id", "must not be empty")
            case "bug":
                raise ZeroDivisionError("secret internal detail")
        return points_pb2.Balance(user_id=request.user_id, available=7)


@pytest.fixture
async def stub() -> AsyncIterator[points_pb2_grpc.PointsServiceStub]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    points_pb2_grpc.add_PointsServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield points_pb2_grpc.PointsServiceStub(channel)
    await server.stop(0)


async def call(stub, user_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetBalance(points_pb2.GetBalanceRequest(app="video", user_id=user_id))
    return caught.value


async def test_a_domain_error_carries_its_code_and_reason(stub):
    error = await call(stub, "poor")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "INSUFFICIENT_POINTS"
    assert "needs 500" in (error.details() or "")
    status = rich_status(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.domain == "loyalty"
    assert info.metadata["available"] == "20"


async def test_not_found_kind_maps_to_not_found(stub):
    error = await call(stub, "ghost")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(error) == "UNKNOWN_USER"


async def test_bad_input_is_invalid_argument_naming_the_field(stub):
    error = await call(stub, "")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("user_id:")
    status = rich_status(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(bad.DESCRIPTOR))
    assert bad.field_violations[0].field == "user_id"


async def test_an_unexpected_error_is_internal_without_a_stack_trace(stub):
    error = await call(stub, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert "secret internal detail" not in details
    assert "Traceback" not in details
    assert "trace_id=" in details


async def test_an_rpc_not_built_yet_is_unimplemented(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetLiability(points_pb2.GetLiabilityRequest(app="video"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_good_call_passes_through_untouched(stub):
    reply = await stub.GetBalance(points_pb2.GetBalanceRequest(app="video", user_id="u1"))
    assert reply.available == 7
