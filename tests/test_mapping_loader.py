"""odpmap.mapping.loader: YAML with file:line:col for every key and value."""

from __future__ import annotations

import textwrap

import pytest
from odpmap.errors import MappingError, MappingSyntaxError
from odpmap.mapping.loader import PosDict, PosList, load_yaml, position_of

DOC = textwrap.dedent(
    """\
    provider: acme
    rules:
      - id: first
        emit:
          action: open
          data:
            ts: "{{ item.ts }}"
      - id: second
        when: [a, b]
    """
)


@pytest.fixture
def doc() -> PosDict:
    return load_yaml(DOC, "acme.yaml")


def test_containers_are_plain_dicts_and_lists(doc: PosDict) -> None:
    assert isinstance(doc, PosDict) and isinstance(doc, dict)
    assert isinstance(doc["rules"], PosList) and isinstance(doc["rules"], list)
    assert doc == {
        "provider": "acme",
        "rules": [
            {"id": "first", "emit": {"action": "open", "data": {"ts": "{{ item.ts }}"}}},
            {"id": "second", "when": ["a", "b"]},
        ],
    }


def test_positions_of_top_level_key_and_value(doc: PosDict) -> None:
    assert doc.pos == ("acme.yaml", 1, 1)
    assert doc.key_pos["provider"] == ("acme.yaml", 1, 1)
    assert doc.value_pos["provider"] == ("acme.yaml", 1, 11)


def test_positions_of_nested_values(doc: PosDict) -> None:
    rules = doc["rules"]
    assert rules.pos == ("acme.yaml", 3, 3)
    assert rules.item_pos == [("acme.yaml", 3, 5), ("acme.yaml", 8, 5)]
    data = rules[0]["emit"]["data"]
    assert data.key_pos["ts"] == ("acme.yaml", 7, 9)
    assert data.value_pos["ts"] == ("acme.yaml", 7, 13)
    assert rules[1]["when"].item_pos == [("acme.yaml", 9, 12), ("acme.yaml", 9, 15)]


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        (("rules", 0, "emit", "data", "ts"), False, ("acme.yaml", 7, 13)),
        (("rules", 0, "emit", "data", "ts"), True, ("acme.yaml", 7, 9)),
        (("rules", 1, "when", 1), False, ("acme.yaml", 9, 15)),
        (("rules", 1, "id"), True, ("acme.yaml", 8, 5)),
        ((), False, ("acme.yaml", 1, 1)),
    ],
    ids=["value", "key", "list-element", "key-in-list-item", "root"],
)
def test_position_of(doc: PosDict, path: tuple, key: bool, expected: tuple) -> None:
    assert position_of(doc, path, key=key) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # a missing key: the nearest enclosing container that exists
        (("rules", 0, "emit", "identifiers", "email"), ("acme.yaml", 5, 7)),
        # an index out of range: the list itself
        (("rules", 7, "id"), ("acme.yaml", 3, 3)),
        # a string index into a list, an index into a scalar: stop there
        (("rules", "x"), ("acme.yaml", 3, 3)),
        (("provider", 0), ("acme.yaml", 1, 11)),
        # nothing matches at all: the document
        (("nope",), ("acme.yaml", 1, 1)),
    ],
    ids=["missing-key", "index-out-of-range", "wrong-step-type", "into-scalar", "missing-top-key"],
)
def test_position_of_falls_back_to_nearest_container(doc: PosDict, path: tuple, expected: tuple) -> None:
    assert position_of(doc, path) == expected


def test_position_of_without_positions_is_none() -> None:
    assert position_of({"a": 1}, ("a",)) is None
    assert position_of(None, ()) is None


def test_duplicate_key_names_first_line_at_second_key() -> None:
    text = textwrap.dedent(
        """\
        provider: acme
        rules:
          - id: a
            emit:
              action: open
              action: click
        """
    )
    with pytest.raises(MappingSyntaxError) as info:
        load_yaml(text, "dup.yaml")
    assert str(info.value) == "dup.yaml:6:7: duplicate key 'action' (first defined at line 5)"
    assert (info.value.file, info.value.line, info.value.column) == ("dup.yaml", 6, 7)


def test_duplicate_top_level_key() -> None:
    with pytest.raises(MappingSyntaxError, match=r"^m\.yaml:3:1: duplicate key 'provider' \(first defined at line 1\)$"):
        load_yaml("provider: a\nformat: 1\nprovider: b\n", "m.yaml")


def test_same_key_in_sibling_mappings_is_fine() -> None:
    assert load_yaml("a: {x: 1}\nb: {x: 2}\n", "m.yaml") == {"a": {"x": 1}, "b": {"x": 2}}


def test_merge_key_without_override() -> None:
    doc = load_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  z: 3\n", "m.yaml")
    assert doc["d"] == {"x": 1, "y": 2, "z": 3}


def test_merge_key_can_be_overridden() -> None:
    # YAML merge keys: an explicit key overrides the merged one (PyYAML's SafeLoader agrees).
    doc = load_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n", "m.yaml")
    assert doc["d"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\nb: 3\n", "bad.yaml:2:2: YAML syntax error: expected ',' or ']', but got ':'"),
        ("a: 1\n  b: 2\n", "bad.yaml:2:4: YAML syntax error: mapping values are not allowed here"),
        ("key: @bad\n", "bad.yaml:1:6: YAML syntax error: found character '@' that cannot start any token"),
        ("a:\n\tb: 1\n", "bad.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token"),
        ('a: "x\n', "bad.yaml:2:1: YAML syntax error: found unexpected end of stream"),
    ],
    ids=["unclosed-flow", "bad-indent", "reserved-char", "tab", "unclosed-quote"],
)
def test_yaml_syntax_error_has_file_line_col(text: str, expected: str) -> None:
    with pytest.raises(MappingSyntaxError) as info:
        load_yaml(text, "bad.yaml")
    assert str(info.value) == expected
    assert isinstance(info.value, MappingError)
    assert isinstance(info.value.__cause__, Exception)


def test_unhashable_key() -> None:
    with pytest.raises(MappingSyntaxError, match=r"^k\.yaml:1:3: a mapping key must be a plain value$"):
        load_yaml("? [1]\n: 2\n", "k.yaml")


def test_several_documents_are_an_error() -> None:
    with pytest.raises(MappingSyntaxError, match=r"^m\.yaml:2:1: YAML syntax error: but found another document"):
        load_yaml("--- a\n--- b\n", "m.yaml")


def test_scalars_and_empty_documents() -> None:
    assert load_yaml("", "m.yaml") is None
    assert load_yaml("5", "m.yaml") == 5
    assert load_yaml("[a]", "m.yaml") == ["a"]
