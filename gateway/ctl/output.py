"""The one way loyaltyctl prints: a rich table (or aligned fields) for people, JSON with
``--json`` for scripts. Piped output keeps every value whole: a table is as wide as its
values, never cut to a terminal's width."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table


def console() -> Console:
    # Made per call, so tests that capture stdout (and pipes) get what is written now.
    wide = not sys.stdout.isatty()
    return Console(width=100_000 if wide else None, highlight=False, soft_wrap=wide)


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def show_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def show_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column.upper(), overflow="fold")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console().print(table)


def show_fields(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values) if values else 0
    for key, value in values.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
        print(f"{key.ljust(width)}  {text}")


def show_message(message: Message, as_json: bool) -> None:
    """One answer: its fields aligned for people, or JSON."""
    if as_json:
        show_json(as_dict(message))
    else:
        show_fields(as_dict(message))
