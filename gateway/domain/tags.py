"""Member tags, as the product backend sets them: 1 to 64 characters of ``[a-z0-9_-]``, at most
``MAX_TAGS`` a member. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence

from plumbing.errors import InvalidArgument

MAX_TAGS = 50
# Tags named in one call, added and removed together.
MAX_TAGS_A_CALL = 100
_TAG = re.compile(r"[a-z0-9_-]{1,64}")


def checked_tags(field: str, tags: Sequence[str]) -> list[str]:
    """The tags as given, each checked (INVALID_ARGUMENT names ``field[i]``), repeats once."""
    if len(tags) > MAX_TAGS_A_CALL:
        raise InvalidArgument(field, f"at most {MAX_TAGS_A_CALL} tags a call")
    seen: dict[str, None] = {}
    for index, tag in enumerate(tags):
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(
                f"{field}[{index}]", "must be 1 to 64 characters of a-z, 0-9, _ and -"
            )
        seen.setdefault(tag)
    return list(seen)


def too_many(tags: int) -> InvalidArgument:
    return InvalidArgument(
        "add", f"a member holds at most {MAX_TAGS} tags; this change would give them {tags}"
    )
