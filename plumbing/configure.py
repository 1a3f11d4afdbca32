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
    check: Callable[[str, P], Awaitable[None]] | None = None,
) -> common_pb2.ConfigureResult:
    """``validate_only`` answers with the errors (or none) and changes nothing; otherwise the
    errors are one INVALID_ARGUMENT on ``section_json``. What only the database can tell
    (stock already sold) raises ``ProgramInvalid`` from ``store``, whose transaction then
    writes nothing, or from ``check``, which a validate_only call runs instead of storing."""
    require_id("app", app)
    section = load_section(section_json)
    try:
        program = parse(section)
        if validate_only:
            if check is not None:
                await check(app, program)
            return common_pb2.ConfigureResult()
        version = await store(app, section, program)
    except ProgramInvalid as invalid:
        if validate_only:
            return common_pb2.ConfigureResult(errors=invalid.errors)
        raise invalid_section(invalid) from None
    return common_pb2.ConfigureResult(version=version)
