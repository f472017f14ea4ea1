"""odpmap.mapping.compiler: every load-time check, with the exact file:line:col it reports.

Each mistake is checked twice: loading a hermetic engine raises it, and ``Engine.lint``
reports it. Expected messages are snapshots of ``str(exc)``; ``...`` at the end of an
expected message means "starts with" (used where the rest lists registered names).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from odpmap import ConfigError, Engine, MappingError
from odpmap.errors import MappingSyntaxError, TemplateSyntaxError, TemplateUndefinedError

ROOT = Path(__file__).resolve().parents[1]
VONAGE = ROOT / "mappings" / "vonage.yaml"
SENDGRID = ROOT / "plugins" / "odpmap-sendgrid" / "src" / "odpmap_sendgrid" / "sendgrid.yaml"

HEAD = "format: 1\nprovider: acme\nchannel: email\n"  # lines 1-3 of most cases
# What every event needs (an identifier, data.ts, data.target_address), for valid mappings.
DEFAULTS = (
    "defaults:\n  identifiers: {email: '{{ item.to }}'}\n"
    "  data: {ts: '{{ item.ts | epoch }}', target_address: '{{ item.to }}'}\n"
)


@pytest.fixture(scope="module")
def linter() -> Engine:
    """One engine for lint-only checks (lint never registers anything)."""
    return Engine(autoload=False)


def matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected[:-3]) if expected.endswith("...") else actual == expected


# (name, mapping text, expected message after "FILE:")
CASES = [
    ("missing-format", "provider: acme\nchannel: email\nrules: []\n", "1:1: format: required field"),
    ("format-2", "format: 2\nprovider: acme\nchannel: email\nrules: []\n", "1:9: format: unallowed value 2"),
    ("unknown-top-level-key", HEAD + "colour: red\nrules: []\n", "4:1: colour: unknown key 'colour'"),
    ("rules-not-a-list", HEAD + "rules:\n  a: 1\n", "5:3: rules: must be of list type"),
    ("no-rules", HEAD, "1:1: a mapping needs rules (or extends a mapping that has them)"),
    ("no-channel", "format: 1\nprovider: acme\nrules: []\n", "1:1: a mapping needs a channel (email, sms, ...)"),
    ("rule-without-id", HEAD + "rules:\n  - when: true\n    skip: x\n", "5:5: rules[0].id: required field"),
    (
        "duplicate-rule-id",
        HEAD + "rules:\n  - id: a\n    when: item.x\n    skip: x\n  - id: a\n    skip: y\n",
        "8:9: rules[1].id: duplicate rule id 'a' (first at line 5)",
    ),
    (
        "neither-emit-nor-skip",
        HEAD + "rules:\n  - id: a\n    when: item.x\n",
        "5:5: rules[0]: rule 'a' needs emit (events) or skip (a reason)",
    ),
    (
        "emit-and-skip",
        HEAD + "rules:\n  - id: a\n    skip: x\n    emit: {action: open}\n",
        "7:11: rules[0].emit: 'skip' must not be present with 'emit'",
    ),
    (
        "after-catch-all-no-when",
        HEAD + "rules:\n  - id: a\n    skip: x\n  - id: b\n    skip: y\n",
        "7:5: rules[1]: rule 'b' can never match: rule 'a' ({file}:5:5) matches every item",
    ),
    (
        "after-catch-all-when-true",
        HEAD + "rules:\n  - id: a\n    when: true\n    skip: x\n  - id: b\n    when: item.x\n    skip: y\n",
        "8:5: rules[1]: rule 'b' can never match: rule 'a' ({file}:5:5) matches every item",
    ),
    (
        "unknown-channel",
        "format: 1\nprovider: acme\nchannel: pigeon\nrules:\n  - id: a\n    skip: x\n",
        "3:10: channel: unknown channel type 'pigeon' (known: ad, api, app_push, ...",
    ),
    (
        "unknown-parser",
        HEAD + "parser: nope\nrules:\n  - id: a\n    skip: x\n",
        "4:9: parser: unknown parser 'nope' (known: auto, csv, ...",
    ),
    (
        "unknown-parser-dict-form",
        HEAD + "parser: {name: nope}\nrules:\n  - id: a\n    skip: x\n",
        "4:9: parser: unknown parser 'nope' (known: auto, csv, ...",
    ),
    (
        "unknown-verifier",
        HEAD + "verify: nope\nrules:\n  - id: a\n    skip: x\n",
        "4:9: verify: unknown verifier 'nope' (known: ...",
    ),
    (
        "template-syntax-error",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        value: \"{{ item.v | }}\"\n",
        "9:16: rules[0].emit.data.value: template syntax error: expected token 'name', got 'end of print statement'",
    ),
    (
        "template-syntax-error-in-text",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        value: \"a {{ item.v }\"\n",
        "9:16: rules[0].emit.data.value: template syntax error: unexpected '}'",
    ),
    (
        "template-syntax-error-in-when",
        HEAD + "rules:\n  - id: a\n    when: item.v ==\n    skip: x\n",
        "6:11: rules[0].when: template syntax error: unexpected 'end of print statement'",
    ),
    (
        "unknown-variable",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        value: \"{{ itme.v }}\"\n",
        "9:16: rules[0].emit.data.value: unknown variable 'itme' (a template can use: channel, headers, index, item, "
        "provider, received_at, report, tables, tracking, vars)",
    ),
    (
        "undeclared-var",
        HEAD + "vars:\n  known: x\nrules:\n  - id: a\n    when: vars.nope == 1\n    skip: x\n",
        "8:11: rules[0].when: vars.nope is not declared under vars: (declared: known)",
    ),
    (
        "undeclared-var-no-vars",
        HEAD + "rules:\n  - id: a\n    when: vars.nope == 1\n    skip: x\n",
        "6:11: rules[0].when: vars.nope is not declared under vars:",
    ),
    (
        "unknown-table",
        HEAD + "tables:\n  codes: {a: b}\nrules:\n  - id: a\n    when: item.x | lookup('nosuchtable')\n    skip: x\n",
        "8:11: rules[0].when: lookup: no table named 'nosuchtable' (declared: codes)",
    ),
    (
        "action-not-in-catalogue",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: deliver\n",
        "7:15: rules[0].emit.action: email/deliver is not in the ODP catalogue (actions for email: click, delivery, ...",
    ),
    (
        "type-not-in-catalogue",
        HEAD + "rules:\n  - id: a\n    emit:\n      type: foo\n      action: open\n",
        "7:13: rules[0].emit.type: event type 'foo' is not in the ODP catalogue (known: ad, api, ...",
    ),
    (
        "action-of-other-type",
        HEAD + "rules:\n  - id: a\n    emit:\n      type: consent\n      action: open\n",
        "8:15: rules[0].emit.action: consent/open is not in the ODP catalogue (actions for consent: opt-out)",
    ),
    (
        "sent-refused",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: sent\n",
        "7:15: rules[0].emit.action: email/sent is generated by ODP itself; skip the provider's event instead "
        '(e.g. skip: "sent: ODP generates it")',
    ),
    (
        "list-unsubscribe-without-list-id",
        HEAD + "rules:\n  - id: a\n    emit:\n      type: list\n      action: unsubscribe\n",
        "7:7: rules[0].emit: list/unsubscribe requires data.list_id",
    ),
    (
        "reachability-type-not-allowed",
        HEAD + "rules:\n  - id: a\n    emit:\n      type: reachability\n      action: unreachable\n"
        "      data:\n        reachability_update_type: soft\n",
        "10:35: rules[0].emit.data.reachability_update_type: data.reachability_update_type must be one of "
        "['hard_bounce', 'spam_report'] for reachability/unreachable, not 'soft'",
    ),
    (
        "unknown-event-key",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      colour: red\n",
        "8:7: rules[0].emit: unknown key 'colour' in an event (an event has type, action, identifiers, data)",
    ),
    (
        "event-without-action",
        HEAD + "rules:\n  - id: a\n    emit:\n      type: email\n",
        "7:7: rules[0].emit: an event needs an action",
    ),
    (
        "first-misspelt",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        ts: {frist: [1]}\n",
        "9:13: rules[0].emit.data.ts: a structured value must be {first: [candidate, ...], default: value} "
        "(unknown key 'frist')",
    ),
    (
        "first-empty",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        ts: {first: []}\n",
        "9:13: rules[0].emit.data.ts: a structured value must be {first: [candidate, ...], default: value}",
    ),
    (
        "first-not-a-list",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        ts: {first: x}\n",
        "9:13: rules[0].emit.data.ts: a structured value must be {first: [candidate, ...], default: value}",
    ),
    (
        "first-candidate-unknown-variable",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n"
        "        ts:\n          first: [\"{{ item.ts }}\", \"{{ nope }}\"]\n",
        "10:36: rules[0].emit.data.ts.first[1]: unknown variable 'nope' ...",
    ),
    (
        "list-as-value",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data:\n        value: [1, 2]\n",
        "9:16: rules[0].emit.data.value: a value must be a template, a literal or {first: [...]}",
    ),
    (
        "data-not-a-mapping",
        HEAD + "rules:\n  - id: a\n    emit:\n      action: open\n      data: x\n",
        "8:13: rules[0].emit.data: data must be a mapping",
    ),
    (
        "bad-default-template",
        HEAD + "defaults:\n  data:\n    value: \"{{ item. }}\"\nrules:\n  - id: a\n    skip: x\n",
        "6:12: defaults.data.value: template syntax error: expected name or number",
    ),
    (
        "bad-items-expression",
        HEAD + "items: report[\nrules:\n  - id: a\n    skip: x\n",
        "4:8: items: template syntax error: unexpected '}', expected ']'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_time_error(
    text: str, expected: str, write_mapping: Callable[[str, str], Path],
    hermetic_engine: Callable[..., Engine], linter: Engine,
) -> None:
    path = write_mapping("acme.yaml", text)
    expected = f"{path}:" + expected.replace("{file}", str(path))

    with pytest.raises(MappingError) as info:
        hermetic_engine()
    assert matches(str(info.value), expected), str(info.value)
    assert info.value.file == str(path)

    assert [matches(str(e), expected) for e in linter.lint([path])] == [True]


def test_structure_error_is_a_syntax_error(write_mapping: Callable[[str, str], Path],
                                            hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", HEAD + "rules: 5\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert (info.value.line, info.value.column, info.value.pointer) == (4, 8, "rules")
    assert isinstance(info.value, ConfigError)


def test_template_errors_have_their_own_classes(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("acme.yaml", HEAD + textwrap.dedent("""\
        rules:
          - id: a
            when: item.v ==
            emit:
              action: open
              data:
                value: "{{ nope }}"
        """))
    syntax, undefined = linter.lint([path])
    assert isinstance(syntax, TemplateSyntaxError) and syntax.template_lineno == 1
    assert isinstance(undefined, TemplateUndefinedError) and undefined.variable == "nope"
    assert (undefined.line, undefined.column, undefined.pointer) == (10, 16, "rules[0].emit.data.value")


def test_template_error_in_multiline_value_names_template_line(
    write_mapping: Callable[[str, str], Path], linter: Engine
) -> None:
    path = write_mapping("acme.yaml", HEAD + textwrap.dedent("""\
        rules:
          - id: a
            emit:
              action: open
              data:
                value: |
                  first line {{ item.a }}
                  second line {{ item.b | }}
        """))
    (error,) = linter.lint([path])
    assert str(error) == (
        f"{path}:9:16: rules[0].emit.data.value: template syntax error: "
        "expected token 'name', got 'end of print statement' (template line 2)"
    )
    assert error.template_lineno == 2


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ item.v | nosuch }}", "no filter named 'nosuch'"),
        ("{{ item.v is nosuch }}", "no test named 'nosuch'"),
    ],
    ids=["filter", "test"],
)
def test_unknown_filter_or_test(template: str, expected: str, write_mapping: Callable[[str, str], Path],
                                hermetic_engine: Callable[..., Engine]) -> None:
    path = write_mapping("acme.yaml", HEAD + textwrap.dedent(f"""\
        rules:
          - id: a
            emit:
              action: open
              data:
                value: "{template}"
        """))
    with pytest.raises(TemplateSyntaxError) as info:
        hermetic_engine()
    assert str(info.value) == f"{path}:9:16: rules[0].emit.data.value: template syntax error: {expected}"


def test_provider_missing_when_loading(write_mapping: Callable[[str, str], Path],
                                       hermetic_engine: Callable[..., Engine]) -> None:
    path = write_mapping("acme.yaml", "format: 1\nchannel: email\nrules: []\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value) == f"{path}:1:1: a mapping needs a provider: name"


def test_mapping_that_is_not_a_mapping(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("acme.yaml", "- a\n- b\n")
    assert [str(e) for e in linter.lint([path])] == [
        f"{path}:1:1: a mapping file must be a YAML mapping (key: value)"
    ]


def test_builtin_filters_and_declared_tables_lint_clean(
    write_mapping: Callable[[str, str], Path], linter: Engine
) -> None:
    # Built-in filters are known: lint finds nothing in a mapping using them.
    path = write_mapping("acme.yaml", HEAD + DEFAULTS + textwrap.dedent("""\
        tables:
          codes: {"1": x}
        rules:
          - id: a
            emit:
              action: open
              data:
                ts: "{{ item.ts | epoch }}"
                value: "{{ item.code | lookup('codes') }}"
                count: "{{ item.n | as_int }}"
        """))
    assert linter.lint([path]) == []


# -- lint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("emit", "message"),
    [
        ("{action: open, data: {ts: 1700000000, target_address: a}}",
         "an event needs at least one identifier (under identifiers: or defaults.identifiers:)"),
        ("{action: open, identifiers: {email: a@b.co}, data: {target_address: a}}",
         "an event needs data.ts (under data: or defaults.data:)"),
        ("{action: open, identifiers: {email: a@b.co}, data: {ts: 1700000000}}",
         "an event needs data.target_address (under data: or defaults.data:)"),
    ],
    ids=["no-identifier", "no-ts", "no-target-address"],
)
def test_event_missing_what_every_event_needs(write_mapping: Callable[[str, str], Path], linter: Engine,
                                              emit: str, message: str) -> None:
    path = write_mapping("acme.yaml", HEAD + f"rules:\n  - id: a\n    emit: {emit}\n")
    assert [str(e) for e in linter.lint([path])] == [f"{path}:6:11: rules[0].emit: {message}"]


def test_defaults_satisfy_what_every_event_needs(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("acme.yaml", HEAD + DEFAULTS + "rules:\n  - id: a\n    emit: {action: open}\n")
    assert linter.lint([path]) == []


def test_lint_reports_every_problem_of_a_file(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("acme.yaml", HEAD + textwrap.dedent("""\
        verify: nope
        rules:
          - id: a
            when: item.a
            emit:
              action: deliver
          - id: b
            when: item.b
            emit:
              action: open
              data:
                value: "{{ itme }}"
          - id: c
            skip: "{{ vars.nope }} is a literal here"
            when: vars.nope
        """))
    errors = linter.lint([path])
    assert [(e.line, e.column, e.pointer) for e in errors] == [
        (4, 9, "verify"),
        (9, 15, "rules[0].emit.action"),
        (15, 16, "rules[1].emit.data.value"),
        (18, 11, "rules[2].when"),
    ]
    assert all(str(e).startswith(f"{path}:{e.line}:{e.column}: ") for e in errors)
    assert [type(e) for e in errors] == [MappingSyntaxError, MappingSyntaxError, TemplateUndefinedError,
                                         TemplateUndefinedError]


def test_rule_with_broken_when_is_not_a_catch_all(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("acme.yaml", HEAD + textwrap.dedent("""\
        rules:
          - id: a
            when: item.v ==
            skip: x
          - id: b
            skip: y
        """))
    assert [e.pointer for e in linter.lint([path])] == ["rules[0].when"]


def test_unknown_parser_does_not_hide_other_problems(write_mapping: Callable[[str, str], Path],
                                                     linter: Engine) -> None:
    path = write_mapping("acme.yaml", HEAD + "parser: nope\nrules:\n  - id: a\n    emit: {action: deliver}\n")
    assert [e.pointer for e in linter.lint([path])] == ["parser", "rules[0].emit.action"]


def test_load_raises_the_first_problem_and_keeps_all(write_mapping: Callable[[str, str], Path],
                                                      hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", HEAD + textwrap.dedent("""\
        verify: nope
        rules:
          - id: a
            when: vars.nope
            emit:
              action: deliver
        """))
    with pytest.raises(MappingError) as info:
        hermetic_engine()
    assert info.value.pointer == "verify"
    assert [e.pointer for e in info.value.all_errors] == ["verify", "rules[0].when", "rules[0].emit.action"]


def test_lint_several_files(write_mapping: Callable[[str, str], Path], linter: Engine, tmp_path: Path) -> None:
    good = write_mapping("good.yaml", HEAD + "rules:\n  - id: a\n    skip: x\n")
    bad_yaml = write_mapping("bad.yaml", HEAD + "rules: [\n")
    missing = tmp_path / "missing.yaml"
    errors = linter.lint([good, bad_yaml, missing])
    assert [e.file for e in errors] == [str(bad_yaml), str(missing)]
    assert str(errors[0]).startswith(f"{bad_yaml}:5:1: YAML syntax error: ")
    assert str(errors[1]) == f"{missing}: cannot read: No such file or directory"


@pytest.mark.parametrize("path", [VONAGE, SENDGRID], ids=["vonage", "sendgrid"])
def test_lint_shipped_mappings_are_clean(path: Path, linter: Engine) -> None:
    assert linter.lint([path]) == []


def test_allow_sent(write_mapping: Callable[[str, str], Path], hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", HEAD + DEFAULTS + "rules:\n  - id: a\n    emit:\n      action: sent\n")
    engine = hermetic_engine(allow_sent=True)
    assert engine.provider("acme").handled_events() == ["email/sent"]


# -- what a compiled mapping says about itself -----------------------------------------


def test_event_table_and_handled_events(hermetic_engine: Callable[..., Engine],
                                        write_mapping: Callable[[str, str], Path]) -> None:
    write_mapping("acme.yaml", HEAD + DEFAULTS + textwrap.dedent("""\
        rules:
          - id: hard
            when: item.kind == "hard"
            emit:
              type: reachability
              action: unreachable
              data:
                reachability_update_type: hard_bounce
          - id: two
            when: item.kind == "two"
            emit:
              - action: open
              - action: click
          - id: rest
            skip: not interesting
        """))
    info = hermetic_engine().provider("acme")
    assert info.event_table() == [
        {"rule": "hard", "when": 'item.kind == "hard"', "outcome": "reachability/unreachable (hard_bounce)"},
        {"rule": "two", "when": 'item.kind == "two"', "outcome": "email/open, email/click"},
        {"rule": "rest", "when": "(always)", "outcome": "skip: not interesting"},
    ]
    assert info.handled_events() == ["reachability/unreachable (hard_bounce)", "email/open", "email/click"]
    assert info.mapping.rules[0].location == f"{info.mapping_file}:8:5"  # after HEAD and DEFAULTS


# -- extends --------------------------------------------------------------------------

BASE = """\
    format: 1
    provider: base
    channel: email
    tables:
      kinds: {a: from-parent, b: parent-b}
    vars:
      kind: "{{ item.kind | lookup('kinds') }}"
    defaults:
      identifiers:
        email: "{{ item.email }}"
      data:
        ts: "{{ item.ts }}"
        target_address: "{{ item.email }}"
        value: parent-default
    rules:
      - id: open
        when: item.event == "open"
        emit: {action: open}
      - id: delivered
        when: item.event == "delivered"
        emit: {action: delivery}
      - id: other
        skip: parent catch-all
    """


def _item(**kw: object) -> dict[str, object]:
    return {"email": "a@example.com", "ts": 1_700_000_000, **kw}


def test_extends_by_provider_name(write_mapping: Callable[[str, str], Path],
                                  hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("base.yaml", BASE)
    child = write_mapping("child.yaml", """\
        provider: child
        extends: base
        tables:
          kinds: {a: from-child}
          extra: {x: y}
        vars:
          extra: "{{ 'x' | lookup('extra') }}"
        defaults:
          data:
            value: "{{ vars.kind }}/{{ vars.extra }}"
        rules:
          - id: delivered
            when: item.event == "delivered"
            emit:
              action: delivery
              data: {value: child-delivered}
          - id: click
            when: item.event == "click"
            emit: {action: click}
        """)
    engine = hermetic_engine()
    mapping = engine.provider("child").mapping
    # new child rules first, then the parent's, the replaced one in its place
    assert [r.id for r in mapping.rules] == ["click", "open", "delivered", "other"]
    assert mapping.rules[2].location == f"{child}:12:5"
    assert mapping.channel == "email" and mapping.extends == (str(child.parent / "base.yaml"),)
    # tables merged by name: the child's table of the same name replaces the parent's
    assert mapping.tables == {"kinds": {"a": "from-child"}, "extra": {"x": "y"}}
    assert set(mapping.vars) == {"kind", "extra"}

    result = engine.map("child", [
        _item(event="open", kind="a"),
        _item(event="delivered", kind="a"),
        _item(event="click", kind="a"),
        _item(event="bounce", kind="a"),
    ])
    assert [(e["action"], e["data"]["value"]) for e in result.events] == [
        ("open", "from-child/y"),  # defaults.data merged key by key, vars from both
        ("delivery", "child-delivered"),
        ("click", "from-child/y"),
    ]
    assert all(e["identifiers"] == {"email": "a@example.com"} for e in result.events)
    assert [s.reason for s in result.skipped] == ["parent catch-all"]
    # the parent itself is unchanged
    assert [r.id for r in engine.provider("base").mapping.rules] == ["open", "delivered", "other"]
    assert engine.map("base", [_item(event="open", kind="b")]).events[0]["data"]["value"] == "parent-default"


def test_extends_by_relative_path(write_mapping: Callable[[str, str], Path],
                                  hermetic_engine: Callable[..., Engine]) -> None:
    # A file in a sub-folder is not a provider of its own (only top-level files are).
    parent = write_mapping("common/base.yaml", BASE.replace("    provider: base\n", ""))
    write_mapping("child.yaml", "provider: child\nextends: common/base.yaml\n")
    engine = hermetic_engine()
    assert list(engine.providers) == ["child", "vonage"]
    mapping = engine.provider("child").mapping
    assert mapping.extends == (str(parent),)
    assert [r.id for r in mapping.rules] == ["open", "delivered", "other"]
    assert mapping.rules[0].location == f"{parent}:15:5"


def test_extends_chain(write_mapping: Callable[[str, str], Path], hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("base.yaml", BASE)
    write_mapping("mid.yaml", """\
        provider: mid
        extends: base
        rules:
          - id: click
            when: item.event == "click"
            emit: {action: click}
        """)
    write_mapping("top.yaml", """\
        provider: top
        extends: mid
        rules:
          - id: open
            when: item.event == "opened"
            emit: {action: open}
          - id: engage
            when: item.event == "engage"
            emit: {action: engage}
        """)
    mapping = hermetic_engine().provider("top").mapping
    assert [r.id for r in mapping.rules] == ["engage", "click", "open", "delivered", "other"]
    assert mapping.rules[2].when_source == 'item.event == "opened"'
    assert len(mapping.extends) == 2


def test_error_in_inherited_rule_points_at_parent_file(write_mapping: Callable[[str, str], Path],
                                                       hermetic_engine: Callable[..., Engine]) -> None:
    parent = write_mapping("common/base.yaml", BASE.replace("emit: {action: delivery}", "emit: {action: deliverd}"))
    write_mapping("child.yaml", "provider: child\nextends: common/base.yaml\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value).startswith(f"{parent}:21:20: rules[1].emit.action: email/deliverd is not in the ODP catalogue")


def test_extends_cycle(write_mapping: Callable[[str, str], Path], hermetic_engine: Callable[..., Engine]) -> None:
    a = write_mapping("a.yaml", "format: 1\nprovider: a\nchannel: email\nextends: b\nrules: [{id: x, skip: y}]\n")
    b = write_mapping("b.yaml", "format: 1\nprovider: b\nchannel: email\nextends: a\nrules: [{id: x, skip: y}]\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value) == f"{b}:4:10: extends cycle: {a} -> {b} -> {a}"


def test_extends_itself(write_mapping: Callable[[str, str], Path], hermetic_engine: Callable[..., Engine]) -> None:
    a = write_mapping("a.yaml", "format: 1\nprovider: a\nchannel: email\nextends: a\nrules: [{id: x, skip: y}]\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value) == f"{a}:4:10: extends cycle: {a} -> {a}"


def test_extends_unknown_parent(write_mapping: Callable[[str, str], Path],
                                hermetic_engine: Callable[..., Engine]) -> None:
    child = write_mapping("child.yaml", "provider: child\nextends: nosuch\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert info.value.file == str(child)
    assert "extends 'nosuch': no provider or file of that name" in str(info.value)


def test_extends_unknown_parent_has_line_and_column(write_mapping: Callable[[str, str], Path],
                                                    hermetic_engine: Callable[..., Engine]) -> None:
    child = write_mapping("child.yaml", "provider: child\nextends: nosuch\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value).startswith(f"{child}:2:10: ")


def test_extends_not_a_string(write_mapping: Callable[[str, str], Path], linter: Engine) -> None:
    path = write_mapping("child.yaml", "provider: child\nextends: [a]\n")
    assert [str(e) for e in linter.lint([path])] == [f"{path}:2:10: extends must be a provider name or a file path"]


def test_child_catch_all_makes_parent_rules_unreachable(write_mapping: Callable[[str, str], Path],
                                                        hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("base.yaml", BASE)
    child = write_mapping("child.yaml", "provider: child\nextends: base\nrules:\n  - id: all\n    skip: everything\n")
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert f"rule 'open' can never match: rule 'all' ({child}:4:5) matches every item" in str(info.value)


def test_duplicate_rule_id_in_child_overriding_parent(write_mapping: Callable[[str, str], Path],
                                                      hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("base.yaml", BASE)
    child = write_mapping("child.yaml", """\
        provider: child
        extends: base
        rules:
          - id: open
            when: item.event == "open"
            skip: first
          - id: open
            when: item.event == "opened"
            skip: second
        """)
    with pytest.raises(MappingSyntaxError) as info:
        hermetic_engine()
    assert str(info.value).startswith(f"{child}:7:9: ") and "duplicate rule id 'open'" in str(info.value)
