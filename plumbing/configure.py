"""The flow every Configure* RPC shares: parse the section, report every error (or refuse
with them all), optionally check it against the service's data, then store it as a version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from loyalty.common.v1 import common_pb2

from plumbing.sections import ProgramInvalid, invalid_section, load_section
from plumbing.validation import require_id

P = TypeVar("P")


async def configure_section(
    app: str,
    section_json: str,
    validate_only: bool,
    parse: Callable[[Mapping[str, Any]], P],
    store: Callable[[str, dict[str, Any], P], Awaitable[int]],
    check: Callable[[str, P, bool], Awaitable[None]] | None = None,
) -> common_pb2.ConfigureResult:
    """``validate_only`` answers with the errors (or none) and changes nothing; otherwise the
    errors are one INVALID_ARGUMENT on ``section_json``. ``check`` may raise ``ProgramInvalid``
    for what only the database can tell (stock already sold); it is told whether to keep what
    it does."""
    require_id("app", app)
    section = load_section(section_json)
    try:
        program = parse(section)
        if check is not None:
            await check(app, program, validate_only)
    except ProgramInvalid as invalid:
        if validate_only:
            return common_pb2.ConfigureResult(errors=invalid.errors)
        raise invalid_section(invalid) from None
    if validate_only:
        return common_pb2.ConfigureResult()
    return common_pb2.ConfigureResult(version=await store(app, section, program))
