"""Domain errors → gRPC status with ``google.rpc.ErrorInfo`` (and ``BadRequest`` for bad input).

``ErrorMappingInterceptor`` wraps every unary handler of a server, so servicers simply raise
``LoyaltyError`` subclasses. Text holding U+0000 is refused before any handler runs, naming
the field. Anything unexpected becomes INTERNAL with the trace id and no stack
trace on the wire (the trace is in the JSON log).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from loyalty.common.v1 import common_pb2
from opentelemetry import trace
from sqlalchemy.exc import InterfaceError, OperationalError

from plumbing.errors import ERROR_DOMAIN, InvalidArgument, LoyaltyError
from plumbing.validation import nul_path

log = logging.getLogger(__name__)


def _status(
    code: str,
    reason: str,
    message: str,
    metadata: Mapping[str, str],
    bad: Sequence[tuple[str, str]],
) -> status_pb2.Status:
    """The google.rpc.Status of a refusal: an ErrorInfo, and a BadRequest for bad fields."""
    details = []
    packed = any_pb2.Any()
    packed.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata))
    )
    details.append(packed)
    if bad:
        packed = any_pb2.Any()
        packed.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in bad
                ]
            )
        )
        details.append(packed)
    return status_pb2.Status(code=getattr(code_pb2, code), message=message, details=details)


def to_status(error: LoyaltyError) -> grpc.Status:
    """The rich status for a domain error."""
    bad = error.violations if isinstance(error, InvalidArgument) else []
    return rpc_status.to_status(
        _status(error.kind.value, error.reason, error.message, error.metadata, bad)
    )


# Where grpc_status looks for the rich status in a call's trailers.
_DETAILS_KEY = "grpc-status-details-bin"


def item_failure(error: common_pb2.ItemError) -> grpc.aio.AioRpcError:
    """A batch item's refusal (``plumbing.batch_calls.item_error``) as the error its single
    call would have raised on the client: same code, details and rich status, so callers tell
    a batched answer from a single one by nothing."""
    code = grpc.StatusCode.__members__.get(error.code, grpc.StatusCode.UNKNOWN)
    bad = [(error.field, error.message)] if error.field else []
    status = _status(code.name, error.reason, error.message, error.metadata, bad)
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((_DETAILS_KEY, status.SerializeToString())),
        details=error.message,
    )


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carries in its trailers, if any (client side)."""
    return rpc_status.from_call(error)  # type: ignore[arg-type]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carries, if any (client side)."""
    status = rich_status(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reason_of(error: grpc.RpcError) -> str:
    """The domain reason of a failed call ('' when it carries none)."""
    info = error_info(error)
    return info.reason if info else ""


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


# A generated handler: sync or async, (request, context) -> response.
Handler = Callable[..., Any]

# The request the handler running in this task is answering (tasks it starts inherit it), so a
# server that calls others can tell its caller's fields from its own (gateway.participants).
_CURRENT_REQUEST: ContextVar[Message | None] = ContextVar("current_request", default=None)


def current_request() -> Message | None:
    return _CURRENT_REQUEST.get()


def _guard(behavior: Handler, method: str) -> Handler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            nul = None
            if isinstance(request, Message):
                _CURRENT_REQUEST.set(request)
                nul = nul_path(request)
            if nul is not None:
                raise InvalidArgument(nul, "must not contain U+0000 (NUL)")
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        except grpc.aio.AbortError:
            raise
        except LoyaltyError as error:
            # Answered by setting the status, not by context.abort: abort raises through the
            # OpenTelemetry interceptor, which formats a whole traceback (parsing source for
            # its carets) for every business refusal; measured, half the CPU of a sold-out
            # flash sale. The span still records the code; grpc.aio sends no message with a
            # non-OK status.
            status = to_status(error)
            context.set_code(status.code)
            context.set_details(status.details)
            context.set_trailing_metadata(status.trailing_metadata)
            return None
        except (OperationalError, InterfaceError, ConnectionError, TimeoutError) as error:
            # The database (or another dependency) is unreachable: the caller may retry with
            # the same idempotency key; nothing was committed.
            log.warning("dependency unavailable in %s: %s", method, type(error).__name__)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry")
        except NotImplementedError:
            # The generated base servicer raises this for RPCs not built yet.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
        except Exception:
            log.exception("unhandled error in %s", method)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (trace_id={_trace_id() or 'none'})"
            )

    return guarded


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # A method's handler never changes, so wrap it once, not on every call (hot paths).
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            guarded = self._guarded[method] = grpc.unary_unary_rpc_method_handler(
                _guard(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return guarded
