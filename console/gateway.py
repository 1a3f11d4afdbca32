"""The console's one door: the gateway's AdminService over gRPC, called with the operator's
admin key. Errors become what a page can say (``GatewayDown``, ``SignedOut``, ``Refused``)."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loyalty.gateway.v1 import admin_pb2_grpc


class GatewayDown(Exception):
    """The gateway did not answer (down, restarting, unreachable)."""


class SignedOut(Exception):
    """The key is unknown or not an admin key: the operator signs in again."""


class Refused(Exception):
    """The gateway refused the request; ``message`` says why, ``details`` each field's error."""

    def __init__(self, message: str, details: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def _details(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return found


class AdminGateway:
    """One channel to the gateway, opened on the server's event loop (``open``, at start-up):
    a grpc.aio channel belongs to the loop it was made on."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self.stub: admin_pb2_grpc.AdminServiceStub

    def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)
        self.stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    async def call(self, key: str, method: Any, request: Any) -> Any:
        """``method(request)`` (a stub method of ``self.stub``) with the operator's key."""
        try:
            return await method(
                request, metadata=(("authorization", f"Bearer {key}"),), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise GatewayDown(error.details() or code.name) from None
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise SignedOut(error.details() or code.name) from None
            raise Refused(error.details() or code.name, _details(error)) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
