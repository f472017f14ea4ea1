"""The expression fast path gives exactly what Jinja gives, errors included.

Each expression or text template is compiled twice, with and without the fast path, and evaluated over
generated report items (nested mappings, lists, None, numbers, strings): the results,
or the exception types, must be equal.
"""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odpmap import Engine
from odpmap.templating import compile_value

EXPRESSIONS = [
    "{{ item.a }}",
    "{{ item['a'] }}",
    "{{ item.a.b }}",
    "{{ item['a']['b'] }}",
    "{{ item.a | lower }}",
    "{{ item.n | epoch }}",
    "{{ item.a | string }}",
    "{{ item.a | e164 }}",
    "{{ item.a is defined }}",
    "{{ item.a.b is defined }}",
    "{{ item.a is undefined }}",
    "{{ item.a is none }}",
    "{{ item.a == 'x' }}",
    "{{ item.a != 1 }}",
    "{{ item.n > 3 }}",
    "{{ item.a in ('x', 'y') }}",
    "{{ item.a not in ('x', 'y') }}",
    "{{ item.a == 'x' and item.b == 'y' }}",
    "{{ item.a or item.b }}",
    "{{ not item.a }}",
    "{{ item.a if item.b else item.n }}",
    "{{ item.a.b if item.a is defined else 'none' }}",
    "{{ item.items }}",
    "{{ item.get }}",
    "{{ received_at }}",
    "{{ channel }}",
    "{{ item.a | lookup('t') }}",
    "{{ item.a ~ ':' ~ item.b }}",
    "{{ item.a | default('z') }}",
    "{{ item.a | default(item.n, true) }}",
    "{{ item.a | regex_search('x|1') }}",
    "{{ item.a | e164(country_code=44) }}",
    "{{ item.n | default(item.a) }}",
    "{{ item.a | replace('x', 'y') }}",
    "{{ item.n | epoch(format='%y%m%d%H%M') }}",
    "{{ item.a | string | lower | replace(old='x', new='q') }}",
    "{{ (item.a ~ ':' ~ item.n) if item.a is defined else none }}",
    "Reason: {{ item.a }} (code {{ item.n }})",
    "x{{ item.a | lower }}y{{ item.b }}",
    "{{ item.a }}{{ item.b }}",
    "no braces here",
    "{{ item.a in (item.b, 'x') }}",
]

keys = st.sampled_from(["a", "b", "n", "items", "get"])
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 1_800_000_000), st.sampled_from(["x", "y", "X", "", "+14155550100"]),
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=6)
items = st.one_of(st.dictionaries(keys, values, max_size=4), values)

ENGINE = Engine(autoload=False)


def compile_both(source: str) -> tuple:
    fast_env = ENGINE.env
    slow_env = Engine(autoload=False).env
    slow_env.fast_path = False
    slow_env.compiled_cache.clear()
    args = {"location": ("t.yaml", 1, 1), "pointer": "p"}
    return compile_value(fast_env, source, **args), compile_value(slow_env, source, **args)


COMPILED = {source: compile_both(source) for source in EXPRESSIONS}


def outcome(fn, ctx):
    try:
        return ("value", fn(ctx))
    except Exception as exc:  # compare the kind of failure, e.g. UndefinedError vs FilterError
        return ("error", type(exc).__name__)


def context(item) -> dict:
    return {"item": item, "received_at": 1_700_000_000, "channel": "sms", "tables": {"t": {"x": 1, "default": 0}},
            "report": None, "provider": "p", "headers": {}, "index": 0, "vars": {}, "tracking": {}}


@pytest.mark.parametrize("source", EXPRESSIONS)
@settings(max_examples=80, deadline=None)
@given(item=items)
def test_fast_path_equals_jinja(source: str, item) -> None:
    fast, slow = COMPILED[source]
    ctx = context(item)
    assert outcome(fast, ctx) == outcome(slow, ctx)


def test_simple_expressions_take_the_fast_path() -> None:
    fast, slow = COMPILED["{{ item.a.b }}"]
    assert fast.render is not slow.render
    assert fast({"item": {"a": {"b": 7}}}) == 7
    with pytest.raises(jinja2.UndefinedError):  # a miss falls back to Jinja, and its errors
        fast({"item": {"a": {}}})
