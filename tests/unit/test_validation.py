"""The NUL check every server runs on every request, before any handler (pure)."""

from loyalty.gateway.v1 import admin_pb2
from loyalty.gateway.v1 import loyalty_pb2 as pb

from plumbing.validation import nul_in_data, nul_path


def test_nul_is_found_by_its_path_anywhere_in_a_request() -> None:
    assert nul_path(admin_pb2.ListSagasRequest(request_id="\x00")) == "request_id"
    batch = pb.RecordEventsRequest(
        events=[
            pb.RecordEventRequest(event_id="a"),
            pb.RecordEventRequest(attributes={"k": "\x00"}),
        ]
    )
    assert nul_path(batch) == "events[1].attributes.k"
    assert nul_path(pb.RecordEventRequest(attributes={"a\x00b": "v"})) == "attributes.key"
    assert nul_path(pb.RedeemRequest(address=pb.Address(city="x\x00"))) == "address.city"


def test_a_request_without_nul_passes_whatever_else_is_wrong_with_it() -> None:
    """Zero bytes of other fields (an empty sub-message) lead to the walk, which must not
    judge what the handler refuses itself: a Timestamp out of range is its business."""
    request = pb.RecordEventRequest(event_id="e")
    request.occurred_at.seconds = -(2**40)
    request.signed_up_at.SetInParent()
    assert b"\x00" in request.SerializeToString()
    assert nul_path(request) is None


def test_nul_in_program_data_never_puts_the_nul_in_the_path() -> None:
    assert nul_in_data({"points": {"display_name": "a\x00"}}) == "points.display_name"
    assert nul_in_data({"mall": {"items": [{"sku": "x"}, {"s\x00": 1}]}}) == "mall.items[1].key"
    assert nul_in_data({"a": [1, "ok"]}) is None
