"""Member tags as the product backend writes them (gateway/domain/tags.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.tags import MAX_TAGS_A_CALL, checked_tags
from plumbing.errors import InvalidArgument

TAG = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)


@given(st.lists(TAG, max_size=MAX_TAGS_A_CALL))
def test_good_tags_pass_once_each_in_their_order(tags: list[str]) -> None:
    assert checked_tags("add", tags) == list(dict.fromkeys(tags))


@pytest.mark.parametrize("bad", ["", "VIP", "a b", "x" * 65, "vip!", "标签", "vip\n"])
def test_a_bad_tag_is_refused_by_its_place(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        checked_tags("add", ["vip", bad])
    assert refused.value.field == "add[1]"


def test_too_many_in_one_call() -> None:
    with pytest.raises(InvalidArgument) as refused:
        checked_tags("remove", [f"t{n}" for n in range(MAX_TAGS_A_CALL + 1)])
    assert refused.value.field == "remove"
