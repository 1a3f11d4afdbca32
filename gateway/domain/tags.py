"""Member tags, as the product backend sets them: 1 to 64 characters of ``[a-z0-9_-]``, at most
``MAX_TAGS`` a member. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from plumbing.errors import InvalidArgument
from plumbing.validation import MEMBER_TAG

MAX_TAGS = 50
# Tags named in one call, added and removed together.
MAX_TAGS_A_CALL = 100


def checked_tags(field: str, tags: Sequence[str]) -> list[str]:
    """The tags as given, each checked (INVALID_ARGUMENT names ``field[i]``), repeats once."""
    if len(tags) > MAX_TAGS_A_CALL:
        raise InvalidArgument(field, f"at most {MAX_TAGS_A_CALL} tags a call")
    seen: dict[str, None] = {}
    for index, tag in enumerate(tags):
        if not MEMBER_TAG.fullmatch(tag):
            raise InvalidArgument(
                f"{field}[{index}]", "must be 1 to 64 characters of a-z, 0-9, _ and -"
            )
        seen.setdefault(tag)
    return list(seen)


def too_many(tags: int) -> InvalidArgument:
    return InvalidArgument(
        "add", f"a member holds at most {MAX_TAGS} tags; this change would give them {tags}"
    )
