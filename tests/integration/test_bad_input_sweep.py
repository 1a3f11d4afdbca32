"""The bad-input sweep: every RPC of LoyaltyService and AdminService gets generated malformed and
hostile requests (missing fields, negative and huge numbers, megabyte strings, unknown enum
values, nested garbage). The status is never INTERNAL or UNKNOWN, no process dies, and the
invariant checker stays clean for the app."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc
from loyalty.levels.v1 import levels_pb2
from loyalty.lottery.v1 import lottery_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2
from loyalty.risk.v1 import risk_pb2

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
            "a\x00b",
            "\x01",
            "\x1f\x7f",
            "tab\tand\nnewline",
            "😀" * 40,
            "ticket-wolf-warrior-2",
            "lucky-wheel",
        ]
    ),
    st.text(max_size=40),
    # Any code point, C0 controls and NUL included.
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
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


def answer(call: Any, request: Message, metadata: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and details of one call (OK and '' when it succeeded)."""
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        return error.code(), str(error.details())
    return grpc.StatusCode.OK, ""


# The sagas: an accepted call's answer says how its saga ended.
SAGA_ANSWERS: dict[str, Any] = {"Redeem": loyalty_pb2.Redemption, "Draw": loyalty_pb2.DrawResult}


# Answers that show a call never got past the door.
AT_THE_DOOR = {"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"}


def sweep_method(
    channel: grpc.Channel, service: Any, method: Any, cls: type[Message], metadata: Any
) -> set[str]:
    """Hypothesis examples against one RPC; a forbidden answer fails the example, so
    Hypothesis shrinks it to the smallest request that shows it. Answers the outcomes seen."""
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=cls.SerializeToString,
        response_deserializer=lambda data: data,
    )
    seen: set[str] = set()

    saga_answer = SAGA_ANSWERS.get(method.name)

    @settings(max_examples=12, suppress_health_check=list(HealthCheck))
    @given(message_strategy(method.input_type))
    def examples(values: dict[str, Any]) -> None:
        request = build(values, cls)
        code, details = answer(call, request, metadata)
        seen.add(code.name)
        assert code not in FORBIDDEN, (method.full_name, code.name, details)
        if code == grpc.StatusCode.OK and saga_answer is not None:
            # A saga the gateway accepted never fails for input it should have refused.
            reply = saga_answer.FromString(call(request, metadata=metadata, timeout=30))
            assert reply.reason not in ("INVALID_ARGUMENT", "INTERNAL"), (method.name, reply)

    examples()
    return seen


def test_every_rpc_survives_hostile_input(suite: Suite) -> None:
    keys = asyncio.run(an_app(suite))
    outcomes: dict[str, set[str]] = {}
    with grpc.insecure_channel(suite.address("gateway")) as channel:
        for service, _module, scope in SERVICES:
            for method in service.methods:
                # By full name: an admin RPC may take a LoyaltyService message (GetMember).
                cls = symbol_database.Default().GetSymbol(method.input_type.full_name)
                metadata = keys.member if scope == "member" else keys.admin
                outcomes[method.full_name] = sweep_method(channel, service, method, cls, metadata)
    assert len(outcomes) == sum(len(s.methods) for s, _, _ in SERVICES)
    never_in = [name for name, seen in outcomes.items() if not seen - AT_THE_DOOR]
    assert never_in == [], f"never reached past authentication: {never_in}"
    for name, proc in suite.processes.items():
        assert proc.poll() is None, f"{name} died"
    results = asyncio.run(check_all(urls_from(suite.postgres_url), only_app=keys.app))
    assert report(results)


async def an_app(suite: Suite) -> AppKeys:
    async with grpc.aio.insecure_channel(suite.address("gateway")) as channel:
        return await new_app(suite, admin_pb2_grpc.AdminServiceStub(channel))


def text_fields(descriptor: Any, depth: int = 0) -> list[tuple[str, Any]]:
    """Every text field of a message (nested messages, lists and maps included) as (the path
    an error must name, the values that put a NUL there alone)."""
    found: list[tuple[str, Any]] = []
    for field in descriptor.fields:
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if _repeated(field):
                found.append((f"{name}[0]", {name: [NUL_TEXT]}))
            else:
                found.append((name, {name: NUL_TEXT}))
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        elif field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                found.append((f"{name}.k", {name: {"k": NUL_TEXT}}))
                found.append((f"{name}.key", {name: {NUL_TEXT: "v"}}))
        elif field.message_type.full_name.startswith("google.protobuf.") or depth >= 2:
            continue
        else:
            for path, values in text_fields(field.message_type, depth + 1):
                if _repeated(field):
                    found.append((f"{name}[0].{path}", {name: [values]}))
                else:
                    found.append((f"{name}.{path}", {name: values}))
    return found


NUL_TEXT = "a\x00b"
PARTICIPANTS: list[tuple[str, Any, Any]] = [
    ("points", points_pb2.DESCRIPTOR.services_by_name["PointsService"], points_pb2),
    ("levels", levels_pb2.DESCRIPTOR.services_by_name["LevelsService"], levels_pb2),
    ("mall", mall_pb2.DESCRIPTOR.services_by_name["MallService"], mall_pb2),
    ("lottery", lottery_pb2.DESCRIPTOR.services_by_name["LotteryService"], lottery_pb2),
    ("risk", risk_pb2.DESCRIPTOR.services_by_name["RiskService"], risk_pb2),
]


def _message_class(method: Any) -> type[Message]:
    cls: type[Message] = symbol_database.Default().GetSymbol(method.input_type.full_name)
    return cls


def test_nul_and_control_characters_in_every_text_field(suite: Suite) -> None:
    """Every text field of every RPC, gateway and participants: U+0000 alone in it is
    INVALID_ARGUMENT naming that very field (before any database sees it); U+0001 is never
    INTERNAL or UNKNOWN."""
    keys = asyncio.run(an_app(suite))
    targets = [("gateway", service, scope) for service, _, scope in SERVICES] + [
        (name, service, "") for name, service, _ in PARTICIPANTS
    ]
    checked = 0
    wrong: list[tuple[str, str, str, str]] = []
    for process, service, scope in targets:
        metadata = {"member": keys.member, "admin": keys.admin}.get(scope)
        with grpc.insecure_channel(suite.address(process)) as channel:
            for method in service.methods:
                cls = _message_class(method)
                call = channel.unary_unary(
                    f"/{service.full_name}/{method.name}",
                    request_serializer=cls.SerializeToString,
                    response_deserializer=lambda data: data,
                )
                for path, values in text_fields(method.input_type):
                    code, details = answer(call, build(values, cls), metadata)
                    if code != grpc.StatusCode.INVALID_ARGUMENT or not details.startswith(
                        f"{path}:"
                    ):
                        wrong.append((method.full_name, path, code.name, details))
                    control = build(_replace_text(values, "a\x01b"), cls)
                    code, details = answer(call, control, metadata)
                    if code in FORBIDDEN:
                        wrong.append((method.full_name, f"{path} (U+0001)", code.name, details))
                    checked += 1
    assert checked > 100
    assert wrong == []
    for name, proc in suite.processes.items():
        assert proc.poll() is None, f"{name} died"


def _replace_text(values: Any, text: str) -> Any:
    if isinstance(values, str):
        return text if values == NUL_TEXT else values
    if isinstance(values, dict):
        return {_replace_text(k, text): _replace_text(v, text) for k, v in values.items()}
    if isinstance(values, list):
        return [_replace_text(v, text) for v in values]
    return values


MOVES = st.sampled_from([60, 3600, 86400, 2 * 86400, 40 * 86400])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), MOVES),
        st.tuples(
            st.sampled_from(["register", "sign_in", "purchase", "redeem", "draw", "checkout"]),
            st.integers(min_value=0, max_value=3),  # which member; each example has its own
        ),
    ),
    min_size=2,
    max_size=8,
)


def test_clock_moves_between_calls_and_new_members(suite: Suite) -> None:
    """On a sandbox app, any order of clock moves and member calls, members first seen before
    and after each move: a well-formed call never answers INVALID_ARGUMENT, INTERNAL or
    UNKNOWN, and a saga never fails for INVALID_ARGUMENT or INTERNAL."""
    keys = asyncio.run(an_app(suite))
    examples = iter(range(10**6))
    with grpc.insecure_channel(suite.address("gateway")) as channel:
        member = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)

        @settings(max_examples=8, suppress_health_check=list(HealthCheck))
        @given(STEPS)
        def journey(steps: list[tuple[str, int]]) -> None:
            example = next(examples)
            for n, (what, arg) in enumerate(steps):
                user = f"m{example}-{arg}"
                rid = f"x{example}-{n}"
                refused = _journey_step(member, admin, keys, what, arg, user, rid)
                assert refused is None or refused[0] not in REFUSED_BY_MISTAKE, (what, refused)

        journey()


REFUSED_BY_MISTAKE = {*FORBIDDEN, grpc.StatusCode.INVALID_ARGUMENT}


def _journey_step(
    member: Any, admin: Any, keys: AppKeys, what: str, arg: int, user: str, rid: str
) -> tuple[grpc.StatusCode, str] | None:
    """One step; the code and details of a refusal, None when it was answered."""
    try:
        _take_step(member, admin, keys, what, arg, user, rid)
    except grpc.RpcError as error:
        return error.code(), str(error.details())
    return None


def _take_step(
    member: Any, admin: Any, keys: AppKeys, what: str, arg: int, user: str, rid: str
) -> None:
    if what == "advance":
        admin.AdvanceClock(
            admin_pb2.AdvanceClockRequest(seconds=arg, request_id=rid),
            metadata=keys.admin,
            timeout=60,
        )
    elif what in ("register", "sign_in", "purchase"):
        member.RecordEvent(
            loyalty_pb2.RecordEventRequest(
                event_id=rid, user_id=user, action=what, attributes={"amount_fen": "100000"}
            ),
            metadata=keys.member,
            timeout=30,
        )
    elif what == "redeem":
        done = member.Redeem(
            loyalty_pb2.RedeemRequest(request_id=rid, user_id=user, sku="ticket-wolf-warrior-2"),
            metadata=keys.member,
            timeout=30,
        )
        assert done.reason not in ("INVALID_ARGUMENT", "INTERNAL"), done
    elif what == "draw":
        drawn = member.Draw(
            loyalty_pb2.DrawRequest(request_id=rid, user_id=user, pool="lucky-wheel"),
            metadata=keys.member,
            timeout=30,
        )
        assert drawn.reason not in ("INVALID_ARGUMENT", "INTERNAL"), drawn
    else:
        member.QuoteCheckout(
            loyalty_pb2.QuoteCheckoutRequest(user_id=user, order_amount_fen=100_000),
            metadata=keys.member,
            timeout=30,
        )
