"""The bad-input sweep: every RPC of LoyaltyService and AdminService gets generated malformed and
hostile requests (missing fields, negative and huge numbers, megabyte strings, unknown enum
values, nested garbage). The status is never INTERNAL or UNKNOWN, no process dies, and the
invariant checker stays clean for the app."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2

from devtools.bootstrap import AppKeys
from devtools.invariants import check_all, report, urls_from
from devtools.suite import Suite
from tests.integration.gateway_apps import new_app

NUMBERS = st.sampled_from([0, -1, 1, -(2**31), 2**31 - 1, 2**62, -(2**62), 10**12 + 1])
TEXTS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "x" * 129,
            "x" * 1_000_000,
            "../../etc/passwd",
            "'; DROP TABLE x;--",
            "\x00",
            "😀" * 40,
            "ticket-wolf-warrior-2",
            "lucky-wheel",
        ]
    ),
    st.text(max_size=40),
)
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def message_strategy(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of some of the message's fields with hostile values (fields may be missing)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value: st.SearchStrategy[Any]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                value = st.builds(
                    dict,
                    seconds=st.sampled_from([0, -(2**40), 2**40, 1_800_000_000]),
                    nanos=st.sampled_from([0, 999_999_999]),
                )
            elif field.message_type.GetOptions().map_entry:
                value = st.dictionaries(TEXTS, TEXTS, max_size=3)
            elif depth < 2:
                value = message_strategy(field.message_type, depth + 1)
            else:
                continue
        elif field.type == FieldDescriptor.TYPE_STRING:
            value = TEXTS
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = st.booleans()
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = st.sampled_from([0, 1, 2, 3, 99])
        else:
            value = NUMBERS
        if _repeated(field) and not (
            field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        ):
            value = st.lists(value, max_size=3)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def build(values: dict[str, Any], cls: type[Message]) -> Message:
    message = cls()
    _fill(message, values)
    return message


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _fill(message: Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field: Any = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for k, v in value.items():
                target[k] = v
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _repeated(field):
                for item in value:
                    _fill(target.add(), item)
            else:
                _fill(target, value)
        elif _repeated(field):
            with contextlib.suppress(ValueError, TypeError):
                target.extend(value)
        else:
            # Out of the field's range: the client library cannot even send it.
            with contextlib.suppress(ValueError, TypeError):
                setattr(message, name, value)


SERVICES: list[tuple[Any, Any, str]] = [
    (loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"], loyalty_pb2, "member"),
    (admin_pb2.DESCRIPTOR.services_by_name["AdminService"], admin_pb2, "admin"),
]


def sweep_method(
    channel: grpc.Channel, service: Any, method: Any, cls: type[Message], metadata: Any
) -> tuple[set[str], list[Any]]:
    """Hypothesis examples against one RPC: the outcomes seen, and any forbidden ones."""
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=cls.SerializeToString,
        response_deserializer=lambda data: data,
    )
    seen: set[str] = set()
    bad: list[Any] = []

    @settings(
        max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(message_strategy(method.input_type))
    def examples(values: dict[str, Any]) -> None:
        try:
            call(build(values, cls), metadata=metadata, timeout=30)
            seen.add("OK")
        except grpc.RpcError as error:
            code = error.code()
            seen.add(code.name)
            if code in FORBIDDEN:
                bad.append((method.full_name, error.details(), values))

    examples()
    return seen, bad


def test_every_rpc_survives_hostile_input(suite: Suite) -> None:
    keys = asyncio.run(an_app(suite))
    outcomes: dict[str, set[str]] = {}
    forbidden: list[Any] = []
    with grpc.insecure_channel(suite.address("gateway")) as channel:
        for service, module, scope in SERVICES:
            for method in service.methods:
                cls = getattr(module, method.input_type.name)
                metadata = keys.member if scope == "member" else keys.admin
                seen, bad = sweep_method(channel, service, method, cls, metadata)
                outcomes[method.full_name] = seen
                forbidden.extend(bad)
    print({name: sorted(seen) for name, seen in outcomes.items()})
    assert forbidden == []
    assert len(outcomes) == sum(len(s.methods) for s, _, _ in SERVICES)
    for name, proc in suite.processes.items():
        assert proc.poll() is None, f"{name} died"
    results = asyncio.run(check_all(urls_from(suite.postgres_url), only_app=keys.app))
    assert report(results)


async def an_app(suite: Suite) -> AppKeys:
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        return await new_app(suite, admin_pb2_grpc.AdminServiceStub(channel))
