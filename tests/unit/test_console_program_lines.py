"""The console puts each ApplyProgram error next to the line it names."""

from __future__ import annotations

from console.program_lines import LineError, locate

PROGRAM = """\
app: video
timezone: Asia/Shanghai
mall:
  items:
    - sku: a
      price_points: 10
    - sku: b
      price_points: 0
"""


def test_an_error_points_at_its_key() -> None:
    [found] = locate(PROGRAM, ["mall.items[1].price_points: must be >= 1"])
    assert found == LineError(8, "mall.items[1].price_points", "must be >= 1")


def test_a_missing_key_points_at_its_parent_and_a_section_at_its_line() -> None:
    found = locate(PROGRAM, ["mall.items[0].stock: is required", "points: is required"])
    assert [f.line for f in found] == [5, 0]


def test_a_yaml_error_keeps_the_line_it_names() -> None:
    [found] = locate("a: [", ["program_yaml: not valid YAML at line 1, column 5"])
    assert (found.line, found.path) == (1, "program_yaml")
