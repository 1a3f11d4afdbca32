"""The event log's JSON answer: written by hand on the hot path, read back exactly, and the
older json_format layout (int64 as strings, defaults left out) still reads the same."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from loyalty.gateway.v1 import loyalty_pb2

from gateway.events import reply_from_log, reply_to_log

TEXT = st.text(max_size=12)
BADGE = st.builds(loyalty_pb2.BadgeAward, code=TEXT, name=TEXT, reward_points=st.integers(0, 10**6))
REPLY = st.builds(
    loyalty_pb2.RecordEventResponse,
    event_id=TEXT,
    decision=st.sampled_from([loyalty_pb2.ALLOW, loyalty_pb2.REVIEW, loyalty_pb2.DENY]),
    points_awarded=st.integers(-(10**12), 10**12),
    growth_awarded=st.integers(0, 10**12),
    tier=TEXT,
    notes=st.lists(TEXT, max_size=3),
    badges_awarded=st.lists(BADGE, max_size=2),
)


@given(REPLY)
def test_the_logged_answer_reads_back_as_it_was(reply: loyalty_pb2.RecordEventResponse) -> None:
    assert reply_from_log(reply_to_log(reply)) == reply


@given(REPLY)
def test_answers_logged_by_json_format_read_the_same(
    reply: loyalty_pb2.RecordEventResponse,
) -> None:
    old = MessageToDict(reply, preserving_proto_field_name=True)
    assert reply_from_log(old) == reply
