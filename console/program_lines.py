"""Where an ApplyProgram error points in the YAML an operator wrote: ``mall.items[3].price_points:
must be >= 1`` → the line of that key, so the page shows the error next to it. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_YAML_AT = re.compile(r"at line (\d+)")


@dataclass(frozen=True)
class LineError:
    # 1-based; 0 when the error names no place in the file.
    line: int
    path: str
    message: str


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _PART.findall(path)]


def _line_of(root: yaml.Node | None, parts: list[str | int]) -> int:
    """The line of the deepest node the path reaches (a missing key: its parent's line)."""
    node, line = root, 0
    for part in parts:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next(((k, v) for k, v in node.value if k.value == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def locate(program_yaml: str, errors: list[str]) -> list[LineError]:
    """Each ``path: message`` error with the line it points at."""
    try:
        root = yaml.compose(program_yaml)
    except yaml.YAMLError:
        root = None
    located = []
    for error in errors:
        path, _, message = error.partition(": ")
        if path == "program_yaml":
            at = _YAML_AT.search(message)
            located.append(LineError(int(at.group(1)) if at else 0, path, message))
            continue
        located.append(LineError(_line_of(root, _parts(path)), path, message))
    return located
