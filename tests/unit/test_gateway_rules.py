"""The gateway's pure rules: API keys and the whole-program shape."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.keys import new_key, scope_allows, secret_matches, split_key
from gateway.domain.program import SECTIONS, load_program, service_sections
from plumbing.sections import ProgramInvalid
from tests.programs import EXAMPLE, EXAMPLE_IN_REPO


def test_a_new_key_splits_back_and_matches_only_its_own_secret() -> None:
    made = new_key()
    parts = split_key(made.key)
    assert parts is not None
    assert parts[0] == made.key_id
    assert secret_matches(parts[1], made.secret_sha256)
    assert not secret_matches(parts[1] + "x", made.secret_sha256)
    assert made.secret_sha256 not in made.key


@given(st.text(max_size=200))
def test_any_text_is_a_key_or_cleanly_not(text: str) -> None:
    parts = split_key(text)
    if parts is not None:
        assert text == f"lk_{parts[0]}_{parts[1]}"


def test_scopes() -> None:
    assert scope_allows("admin", "member")
    assert scope_allows("member", "member")
    assert not scope_allows("member", "admin")


def test_the_example_program_splits_into_each_services_section() -> None:
    path = EXAMPLE_IN_REPO if EXAMPLE_IN_REPO.exists() else EXAMPLE
    program = load_program(path.read_text(encoding="utf-8"))
    sections = service_sections(program)
    assert set(sections) == {"points", "levels", "mall", "risk", "lottery"}
    assert sections["lottery"]["lottery"] == program["lottery"]
    prices = {i["sku"]: i["price_points"] for i in sections["lottery"]["mall"]["items"]}
    assert prices["ticket-wolf-warrior-2"] == 500
    # Points owns pending points and campaign entries; it reads the tier ladder and the
    # segments only to check the campaigns' audiences name them.
    assert set(sections["points"]) == {
        "timezone",
        "points",
        "earning",
        "campaigns",
        "pending",
        "levels",
        "segments",
    }
    assert set(sections["levels"]) == {"timezone", "levels", "badges"}
    assert sections["mall"]["levels"]["tiers"] == program["levels"]["tiers"]
    assert all(s["timezone"] == "Asia/Shanghai" for s in sections.values())


@given(
    st.dictionaries(
        # A NUL in a key is a second error of its own (test_program_nul_is_refused_with_its_path).
        st.text(min_size=1, max_size=12).filter(lambda k: k not in SECTIONS and "\x00" not in k),
        st.integers(),
        min_size=1,
        max_size=4,
    )
)
def test_every_unknown_section_is_reported_with_its_path(extra: dict[str, int]) -> None:
    text = yaml.safe_dump(
        {"timezone": "UTC", "points": {}, "earning": [], "levels": {}, "mall": {}, **extra}
    )
    with pytest.raises(ProgramInvalid) as invalid:
        load_program(text)
    assert len(invalid.value.errors) == len(extra)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("timezone: [", "program_yaml: not valid YAML"),
        ("- a list", "program_yaml: must be a mapping"),
        ("timezone: Mars/Base\npoints: {}\nearning: []\nlevels: {}\nmall: {}", "timezone:"),
        ("points: {}\nearning: []\nlevels: {}\nmall: {}", "timezone: is required"),
    ],
)
def test_shape_errors(text: str, error: str) -> None:
    with pytest.raises(ProgramInvalid) as invalid:
        load_program(text)
    assert invalid.value.errors[0].startswith(error)


def test_program_nul_is_refused_with_its_path() -> None:
    text = yaml.safe_dump(
        {"timezone": "UTC", "points": {"display_name": "a\x00b"}, "earning": [], "levels": {}}
        | {"mall": {}}
    )
    with pytest.raises(ProgramInvalid) as invalid:
        load_program(text)
    assert "points.display_name: must not contain U+0000 (NUL)" in invalid.value.errors
