"""Tests for odpmap.templating: the sandboxed environment and template compilation.

Every sandbox restriction has its own test (the Airbyte rule, conventions.md section I).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from odpmap.engine import Engine
from odpmap.errors import MappingError, TemplateSyntaxError, TemplateUndefinedError
from odpmap.templating import (
    CONTEXT_VARIABLES,
    MAX_RESULT_LENGTH,
    REMOVED_GLOBALS,
    CompiledValue,
    Literal,
    OdpmapEnvironment,
    compile_value,
    make_environment,
    single_expression,
)

LOCATION = ("file.yaml", 12, 7)
POINTER = "rules[3].emit.data.ts"

# The restrictions this file tests one by one. If REMOVED_GLOBALS grows, this list must
# grow with it (test_removed_globals_are_all_tested), so no removal goes untested.
EXPECTED_REMOVED = ("range", "lipsum", "cycler", "joiner", "namespace")


@pytest.fixture
def env() -> OdpmapEnvironment:
    """A bare environment: odpmap's sandbox, no filters added by plugins."""
    return make_environment()


@pytest.fixture(scope="module")
def engine_env() -> OdpmapEnvironment:
    """The environment of a hermetic engine: sandbox plus odpmap's built-in filters."""
    return Engine(autoload=False).env


Compile = Callable[..., "Literal | CompiledValue"]


@pytest.fixture
def compile_(env: OdpmapEnvironment) -> Compile:
    def compile_it(value: Any, **kw: Any) -> Literal | CompiledValue:
        return compile_value(env, value, location=LOCATION, pointer=POINTER, **kw)

    return compile_it


def render(env: OdpmapEnvironment, source: Any, ctx: dict[str, Any] | None = None, **kw: Any) -> Any:
    return compile_value(env, source, location=LOCATION, pointer=POINTER, **kw)(ctx or {})


# -- the environment itself ----------------------------------------------------------


def test_environment_is_immutable_sandbox(env: OdpmapEnvironment) -> None:
    assert isinstance(env, ImmutableSandboxedEnvironment)
    assert isinstance(env, OdpmapEnvironment)
    assert env.sandboxed is True


def test_environment_uses_strict_undefined(env: OdpmapEnvironment) -> None:
    assert env.undefined is jinja2.StrictUndefined


def test_environment_has_no_autoescape(env: OdpmapEnvironment) -> None:
    assert env.autoescape is False
    # And in practice: markup in report data is not HTML-escaped.
    assert render(env, "<{{ item.s }}>", {"item": {"s": "a&b<c>"}}) == "<a&b<c>>"


def test_make_environment_runs_prepare_callables_in_order() -> None:
    calls: list[str] = []

    def first(e: jinja2.Environment) -> None:
        calls.append("first")
        e.filters["shout"] = lambda v: str(v).upper()

    def second(e: jinja2.Environment) -> None:
        calls.append("second")
        assert "shout" in e.filters

    env = make_environment([first, second])
    assert calls == ["first", "second"]
    assert render(env, "{{ item.s | shout }}", {"item": {"s": "hi"}}) == "HI"


def test_bare_environment_has_no_odpmap_filters(env: OdpmapEnvironment) -> None:
    # Built-in filters arrive through the hook only, never from the factory itself.
    assert "epoch" not in env.filters
    assert "coalesce" not in env.globals


def test_engine_environment_has_builtin_filters(engine_env: OdpmapEnvironment) -> None:
    for name in ("as_int", "dig", "e164", "epoch", "from_json", "lookup", "nonempty", "regex_replace", "regex_search"):
        assert name in engine_env.filters, name
    assert "email_address" in engine_env.tests
    assert "coalesce" in engine_env.globals


def test_environments_are_independent() -> None:
    one, two = make_environment(), make_environment()
    one.filters["only_here"] = lambda v: v
    one.globals["only_here_too"] = 1
    assert "only_here" not in two.filters
    assert "only_here_too" not in two.globals
    with pytest.raises(TemplateSyntaxError, match="only_here"):
        # Inside {% if %} so jinja defers the check to odpmap (see the xfail below for
        # the top-level case).
        compile_value(two, "{% if item %}{{ item | only_here }}{% endif %}", location=LOCATION, pointer=POINTER)


def test_engines_have_independent_environments(engine_env: OdpmapEnvironment) -> None:
    other = Engine(autoload=False).env
    assert other is not engine_env
    other.filters["only_in_other"] = lambda v: v
    assert "only_in_other" not in engine_env.filters


# -- removed globals: one test per entry ----------------------------------------------


def test_removed_globals_are_all_tested() -> None:
    assert set(REMOVED_GLOBALS) == set(EXPECTED_REMOVED)


@pytest.mark.parametrize("name", EXPECTED_REMOVED, ids=EXPECTED_REMOVED)
def test_removed_global_is_gone(name: str, env: OdpmapEnvironment) -> None:
    # Jinja provides it by default, so its absence is odpmap's doing.
    assert name in jinja2.Environment().globals
    assert name not in env.globals


@pytest.mark.parametrize("name", EXPECTED_REMOVED, ids=EXPECTED_REMOVED)
def test_removed_global_is_unknown_at_load_time(name: str, compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError) as info:
        compile_("{{ %s }}" % name)
    assert info.value.variable == name
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", EXPECTED_REMOVED, ids=EXPECTED_REMOVED)
def test_removed_global_is_undefined_even_when_allowed(name: str, compile_: Compile) -> None:
    # Allowing the name does not bring the global back: it is gone from the environment.
    value = compile_("{{ %s }}" % name, allowed=CONTEXT_VARIABLES | {name})
    with pytest.raises(jinja2.UndefinedError):
        value({})


# -- sandbox escapes: one test each ---------------------------------------------------


def test_sandbox_refuses_class_mro(compile_: Compile) -> None:
    value = compile_("{{ ''.__class__.__mro__ }}")
    with pytest.raises(SecurityError, match="__class__"):
        value({})


def test_sandbox_refuses_item_class(compile_: Compile) -> None:
    value = compile_("{{ item.__class__ }}")
    with pytest.raises(SecurityError, match="__class__"):
        value({"item": {"a": 1}})


def test_sandbox_refuses_init_globals(compile_: Compile) -> None:
    value = compile_("{{ item.__init__.__globals__ }}")
    with pytest.raises(SecurityError, match="__init__"):
        value({"item": {"a": 1}})


def test_sandbox_refuses_list_append(compile_: Compile) -> None:
    value = compile_("{{ [].append(1) }}")
    with pytest.raises(SecurityError, match="append"):
        value({})


def test_sandbox_refuses_appending_to_report_list(compile_: Compile) -> None:
    item = {"tags": ["a"]}
    with pytest.raises(SecurityError, match="append"):
        compile_("{{ item.tags.append('b') }}")({"item": item})
    assert item == {"tags": ["a"]}


def test_sandbox_refuses_dict_update(compile_: Compile) -> None:
    item = {"a": 1}
    with pytest.raises(SecurityError, match="update"):
        compile_("{{ item.update({'a': 2}) }}")({"item": item})
    assert item == {"a": 1}


def test_sandbox_refuses_dict_pop(compile_: Compile) -> None:
    item = {"x": 1}
    with pytest.raises(SecurityError, match="pop"):
        compile_("{{ item.pop('x') }}")({"item": item})
    assert item == {"x": 1}


def test_range_is_unknown_at_compile_time(compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError, match="range") as info:
        compile_("{{ range(10**9) | list }}")
    assert info.value.variable == "range"


def test_huge_string_repetition_is_refused(compile_: Compile) -> None:
    value = compile_("{{ 'x' * 10**9 }}")
    with pytest.raises(SecurityError, match="1000000000"):
        value({})


def test_huge_repetition_is_refused_with_operands_swapped(compile_: Compile) -> None:
    with pytest.raises(SecurityError):
        compile_("{{ 10**9 * 'x' }}")({})


def test_huge_list_repetition_is_refused(compile_: Compile) -> None:
    with pytest.raises(SecurityError):
        compile_("{{ [0] * 10**9 }}")({})


def test_huge_repetition_is_refused_in_text_templates(compile_: Compile) -> None:
    value = compile_("prefix {{ 'x' * 10**9 }}")
    assert value.native is False
    with pytest.raises(SecurityError):
        value({})


def test_repetition_of_report_data_is_refused(compile_: Compile) -> None:
    with pytest.raises(SecurityError):
        compile_("{{ item.s * item.n }}")({"item": {"s": "ab", "n": MAX_RESULT_LENGTH}})


def test_repetition_up_to_the_limit_is_allowed(compile_: Compile) -> None:
    assert len(compile_("{{ 'x' * %d }}" % MAX_RESULT_LENGTH)({})) == MAX_RESULT_LENGTH
    with pytest.raises(SecurityError):
        compile_("{{ 'x' * %d }}" % (MAX_RESULT_LENGTH + 1))({})


def test_ordinary_multiplication_still_works(compile_: Compile) -> None:
    assert compile_("{{ item.n * 3 }}")({"item": {"n": 7}}) == 21
    assert compile_("{{ 'ab' * 3 }}")({}) == "ababab"


def test_huge_power_is_refused(compile_: Compile) -> None:
    value = compile_("{{ 10 ** (10 ** 9) }}")
    with pytest.raises(SecurityError, match="exponent"):
        value({})


def test_power_chain_is_left_associative_and_bounded(compile_: Compile) -> None:
    # Jinja's ** is left-associative: 10 ** 10 ** 9 is (10 ** 10) ** 9, small and fast,
    # unlike Python where it would be 10 ** (10 ** 9).
    assert compile_("{{ 10 ** 10 ** 9 }}")({}) == (10**10) ** 9


def test_power_size_limit(compile_: Compile) -> None:
    assert compile_("{{ 2 ** 2000 }}")({}) == 2**2000
    with pytest.raises(SecurityError, match="exponent"):
        compile_("{{ 2 ** 3000 }}")({})


def test_power_chain_cannot_bypass_the_guard(compile_: Compile) -> None:
    # (2 ** 256) ** 256 ** 256 = 2 ** 16_777_216: a 2 MB integer from a 27-char template.
    with pytest.raises(SecurityError):
        compile_("{{ 2 ** 256 ** 256 ** 256 }}")({})


@pytest.mark.parametrize("op", ["~", "+"], ids=["tilde", "plus"])
def test_concatenation_cannot_bypass_the_length_limit(op: str, compile_: Compile) -> None:
    half = MAX_RESULT_LENGTH
    with pytest.raises(SecurityError):
        compile_("{{ ('x' * %d) %s ('x' * %d) }}" % (half, op, half))({})


def test_cycler_is_not_available(compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError, match="cycler"):
        compile_("{{ cycler('a', 'b').next() }}")


def test_lipsum_is_not_available(compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError, match="lipsum"):
        compile_("{{ lipsum(10**6) }}")


# -- native types and literals --------------------------------------------------------


def test_single_expression_keeps_int(compile_: Compile) -> None:
    value = compile_("{{ item.n }}")
    assert isinstance(value, CompiledValue)
    assert value.native is True
    result = value({"item": {"n": 5}})
    assert result == 5 and type(result) is int


def test_single_expression_keeps_numeric_string(compile_: Compile) -> None:
    result = compile_("{{ item.s }}")({"item": {"s": "42"}})
    assert result == "42" and type(result) is str


def test_string_that_looks_like_a_list_stays_a_string(compile_: Compile) -> None:
    result = compile_("{{ item.s }}")({"item": {"s": "[1, 2]"}})
    assert result == "[1, 2]"


@pytest.mark.parametrize(
    "data",
    [{"k": "v"}, [1, 2], None, True, 1.5],
    ids=["dict", "list", "none", "bool", "float"],
)
def test_single_expression_returns_native_object(data: Any, compile_: Compile) -> None:
    result = compile_("{{ item.x }}")({"item": {"x": data}})
    assert result == data and type(result) is type(data)


def test_text_template_renders_to_string(compile_: Compile) -> None:
    value = compile_("x{{ item.n }}")
    assert value.native is False
    assert value({"item": {"n": 5}}) == "x5"


def test_two_expressions_are_a_text_template(compile_: Compile) -> None:
    value = compile_("{{ item.a }}{{ item.b }}")
    assert value.native is False
    assert value({"item": {"a": 1, "b": 2}}) == "12"


def test_statement_template_is_a_text_template(compile_: Compile) -> None:
    value = compile_("{% if item.a %}yes{% else %}no{% endif %}")
    assert value({"item": {"a": 0}}) == "no"


def test_whitespace_control_single_expression_is_native(compile_: Compile) -> None:
    assert compile_("{{- item.n -}}")({"item": {"n": 5}}) == 5


def test_literal_without_braces_returns_itself(compile_: Compile) -> None:
    value = compile_("delivered")
    assert isinstance(value, Literal)
    assert value.is_template is False
    assert value({"item": {}}) == "delivered"
    assert value.variables() == frozenset()
    assert value.location == "file.yaml:12:7"


@pytest.mark.parametrize("raw", [0, 42, 1.5, True, False, None], ids=["zero", "int", "float", "true", "false", "none"])
def test_non_string_yaml_values_are_literals(raw: Any, compile_: Compile) -> None:
    value = compile_(raw)
    assert isinstance(value, Literal)
    result = value({})
    assert result is raw or (result == raw and type(result) is type(raw))


def test_literal_location_without_line(env: OdpmapEnvironment) -> None:
    value = compile_value(env, 5, location=("m.yaml", None, None), pointer="x")
    assert value.location == "m.yaml"


def test_compiled_value_records_location_and_variables(compile_: Compile) -> None:
    value = compile_("{{ item.a ~ tables.t.x ~ provider }}")
    assert value.is_template is True
    assert value.location == "file.yaml:12:7"
    assert value.variables() == frozenset({"item", "tables", "provider"})
    assert value.source == "{{ item.a ~ tables.t.x ~ provider }}"


def test_expression_mode_accepts_bare_expression(compile_: Compile) -> None:
    value = compile_("item.a == 1", expression=True)
    assert isinstance(value, CompiledValue) and value.native is True
    assert value({"item": {"a": 1}}) is True
    assert value({"item": {"a": 2}}) is False


def test_expression_mode_accepts_braces_too(compile_: Compile) -> None:
    assert compile_("{{ item.a == 1 }}", expression=True)({"item": {"a": 1}}) is True


def test_bare_expression_without_expression_mode_is_a_literal(compile_: Compile) -> None:
    value = compile_("item.a == 1")
    assert isinstance(value, Literal)
    assert value({"item": {"a": 1}}) == "item.a == 1"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ x }}", " x "),
        ("  {{ x }}  ", " x "),
        ("{{- x -}}", " x "),
        ("{{ x }}{{ y }}", None),
        ("a {{ x }}", None),
        ("{{ x }} b", None),
        ("no braces", None),
    ],
    ids=["plain", "padded", "trimmed", "two", "prefix", "suffix", "literal"],
)
def test_single_expression_detection(source: str, expected: str | None) -> None:
    assert single_expression(source) == expected


# -- strict undefined ---------------------------------------------------------------


def test_missing_top_level_variable_raises(compile_: Compile) -> None:
    value = compile_("{{ report }}")
    with pytest.raises(jinja2.UndefinedError, match="report"):
        value({})


def test_missing_top_level_variable_raises_in_text_template(compile_: Compile) -> None:
    value = compile_("x{{ report }}")
    with pytest.raises(jinja2.UndefinedError, match="report"):
        value({})


def test_missing_dict_key_raises(compile_: Compile) -> None:
    value = compile_("{{ item.nokey }}")
    with pytest.raises(jinja2.UndefinedError, match="nokey"):
        value({"item": {"other": 1}})


def test_missing_dict_key_raises_in_text_template(compile_: Compile) -> None:
    value = compile_("x{{ item.nokey }}")
    with pytest.raises(jinja2.UndefinedError, match="nokey"):
        value({"item": {}})


def test_missing_nested_key_raises(compile_: Compile) -> None:
    with pytest.raises(jinja2.UndefinedError, match="b"):
        compile_("{{ item.a.b }}")({"item": {"a": {}}})


def test_missing_key_with_subscript_raises(compile_: Compile) -> None:
    with pytest.raises(jinja2.UndefinedError, match="zz"):
        compile_("{{ item['zz'] }}")({"item": {}})


def test_default_filter_still_handles_missing_keys(compile_: Compile) -> None:
    assert compile_("{{ item.nokey | default('d') }}")({"item": {}}) == "d"


# -- load-time errors -----------------------------------------------------------------


def test_syntax_error_is_located(compile_: Compile) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_("{{ item.a + }}")
    exc = info.value
    text = str(exc)
    assert text.startswith("file.yaml:12:7:")
    assert POINTER in text
    assert "template syntax error" in text
    assert (exc.file, exc.line, exc.column, exc.pointer) == ("file.yaml", 12, 7, POINTER)
    assert exc.template_lineno == 1
    assert isinstance(exc, MappingError)
    assert isinstance(exc.__cause__, jinja2.TemplateSyntaxError)


def test_syntax_error_in_multiline_template_names_template_line(compile_: Compile) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_("{% if item.a %}\n{{ item.a + }}\n{% endif %}")
    assert info.value.template_lineno == 2
    assert "(template line 2)" in str(info.value)


def test_syntax_error_in_bare_expression(compile_: Compile) -> None:
    with pytest.raises(TemplateSyntaxError, match=r"^file\.yaml:12:7: "):
        compile_("item.a ==", expression=True)


def test_unclosed_block_is_a_syntax_error(compile_: Compile) -> None:
    with pytest.raises(TemplateSyntaxError):
        compile_("{% if item.a %}x")


def test_unknown_variable_is_named(compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError) as info:
        compile_("{{ itme.status }}")
    exc = info.value
    assert exc.variable == "itme"
    assert "'itme'" in str(exc)
    assert str(exc).startswith("file.yaml:12:7: " + POINTER)
    # The message helps: it lists what a template can use.
    assert "item" in exc.message


def test_allowed_restricts_variables(compile_: Compile) -> None:
    with pytest.raises(TemplateUndefinedError) as info:
        compile_("{{ vars.x }}", allowed=frozenset({"item"}))
    assert info.value.variable == "vars"


def test_locally_set_variables_are_not_unknown(compile_: Compile) -> None:
    assert compile_("{% set n = item.a %}{{ n }}")({"item": {"a": 3}}) == "3"


@pytest.mark.parametrize("kind", ["filter", "test"])
def test_unknown_filter_inside_block_is_named(kind: str, compile_: Compile) -> None:
    use = "item | no_such_thing" if kind == "filter" else "item is no_such_thing"
    with pytest.raises(TemplateSyntaxError) as info:
        compile_("{% if item %}{{ " + use + " }}{% endif %}")
    assert f"no {kind} named 'no_such_thing'" in str(info.value)
    assert str(info.value).startswith("file.yaml:12:7:")


@pytest.mark.parametrize(
    ("kind", "source"),
    [("filter", "{{ item.a | no_such_thing }}"), ("test", "{{ item.a is no_such_thing }}")],
    ids=["filter", "test"],
)
def test_unknown_filter_is_a_located_syntax_error(kind: str, source: str, compile_: Compile) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_(source)
    assert f"no {kind} named 'no_such_thing'" in str(info.value)
    assert str(info.value).startswith("file.yaml:12:7:")


# -- dict keys shadowing dict methods -----------------------------------------------


@pytest.mark.parametrize("key", ["items", "keys", "values", "get", "copy"])
def test_item_key_shadows_dict_method(key: str, compile_: Compile) -> None:
    assert compile_("{{ item.%s }}" % key)({"item": {key: ["the", "field"]}}) == ["the", "field"]


def test_item_key_shadows_dict_method_in_text_template(compile_: Compile) -> None:
    assert compile_("n={{ item.items | length }}")({"item": {"items": [1, 2, 3]}}) == "n=3"


def test_dict_method_still_reachable_without_key(compile_: Compile) -> None:
    assert compile_("{{ item.items() | list }}")({"item": {"a": 1}}) == [("a", 1)]


def test_attribute_access_on_non_mapping_is_unchanged(compile_: Compile) -> None:
    assert compile_("{{ item.s.upper() }}")({"item": {"s": "abc"}}) == "ABC"


def test_join_cannot_bypass_the_length_limit(compile_: Compile) -> None:
    # Two elements of 900,000 characters: within every other limit, 1.8 M once joined.
    with pytest.raises(SecurityError):
        compile_("{% set a = 'x' * 900000 %}{{ [a, a] | join }}")({})
    assert compile_("{{ ['a', 'b'] | join('-') }}")({}) == "a-b"
