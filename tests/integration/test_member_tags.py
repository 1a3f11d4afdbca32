"""SetMemberTags through the gateway: tags added and removed, shown by GetMember, checked
(the bad one named, nothing changed), at most 50 a member even when calls race, and kept
apart per app."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from loyalty.gateway.v1 import loyalty_pb2 as pb

from devtools.suite import Suite
from tests.integration.conftest import Stubs
from tests.integration.gateway_apps import new_app

pytestmark = pytest.mark.integration


def uid() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_tags_are_added_removed_and_shown_by_get_member(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    first = await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=user, add=["vip", "beta", "vip"]), metadata=app.member
    )
    assert list(first.tags) == ["beta", "vip"]
    second = await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=user, add=["cn-north"], remove=["beta", "never-had"]),
        metadata=app.member,
    )
    assert list(second.tags) == ["cn-north", "vip"]
    member = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    # The backend's tags, then the program's segments the member is in (just seen: newcomer).
    assert list(member.tags) == ["cn-north", "vip", "newcomer"]
    # Another app's member of the same id has none of them.
    other = await new_app(suite, stubs.admin)
    theirs = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=other.member)
    assert list(theirs.tags) == ["newcomer"]


async def test_a_bad_tag_is_named_and_changes_nothing(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=user, add=["vip"]), metadata=app.member
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stubs.loyalty.SetMemberTags(
            pb.SetMemberTagsRequest(user_id=user, add=["ok", "Not OK"], remove=["vip"]),
            metadata=app.member,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith("add[1]:")
    member = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert list(member.tags) == ["vip", "newcomer"]


async def test_at_most_fifty_tags_even_when_calls_race(suite: Suite, stubs: Stubs) -> None:
    app = await new_app(suite, stubs.admin)
    user = uid()
    await stubs.loyalty.SetMemberTags(
        pb.SetMemberTagsRequest(user_id=user, add=[f"t{n:02d}" for n in range(45)]),
        metadata=app.member,
    )

    async def add_five(batch: int) -> str:
        try:
            await stubs.loyalty.SetMemberTags(
                pb.SetMemberTagsRequest(user_id=user, add=[f"r{batch}-{n}" for n in range(5)]),
                metadata=app.member,
            )
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error.code().name

    outcomes = await asyncio.gather(*(add_five(b) for b in range(4)))
    assert sorted(outcomes) == ["INVALID_ARGUMENT"] * 3 + ["OK"]
    member = await stubs.loyalty.GetMember(pb.GetMemberRequest(user_id=user), metadata=app.member)
    assert len([t for t in member.tags if t != "newcomer"]) == 50
