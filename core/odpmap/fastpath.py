"""A fast path for the simple expressions most mapping values are.

``{{ item.email }}``, ``{{ item.timestamp | epoch }}``, ``vars.event == "open"``,
``item.status in ("failed", "rejected")``: Jinja evaluates each with a new template
context, which costs more than the lookup itself. :func:`compile_fast` turns expressions
built only from names, attribute/item lookups with constant keys, constants, tuples,
comparisons, ``and``/``or``/``not``, ``x if c else y``, ``is defined``/``is none`` and
filters that take no context (with arguments built the same way) into plain Python
closures; ``~`` and
text templates made of literal text and such expressions render the same way.

A fast closure handles only the ordinary case, where every lookup finds a key in a
mapping. Anything else (a missing key, a list, a non-mapping object) raises
:class:`Miss`, and the caller evaluates the expression with Jinja, so errors, undefined
values and sandbox rules are exactly Jinja's. Lookups and these operators have no side
effects, so starting over loses nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes

__all__ = ["Miss", "compile_fast", "compile_fast_text", "with_fallback"]

Fast = Callable[[Mapping[str, Any]], Any]


class Miss(Exception):
    """The fast path cannot answer for this context; use Jinja."""


_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


def _filter_ok(func: Any) -> bool:
    # Filters that receive the context, the environment or the eval context behave
    # differently when called directly: leave them to Jinja.
    return callable(func) and getattr(func, "jinja_pass_arg", None) is None


def compile_fast_text(template: nodes.Template, filters: Mapping[str, Any],
                      concat: Callable[[tuple[Any, ...]], str]) -> Fast | None:
    """A closure rendering a text template made of literal text and simple expressions
    (``"Reason: {{ item.reason }}"``) as Jinja does, or ``None``."""
    if len(template.body) != 1 or not isinstance(template.body[0], nodes.Output):
        return None
    parts: list[Fast] = []
    for node in template.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            text = node.data
            parts.append(lambda ctx, text=text: text)  # type: ignore[misc]
            continue
        part = compile_fast(node, filters, concat)
        if part is None:
            return None
        parts.append(part)

    def render(ctx: Mapping[str, Any]) -> str:
        values = [p(ctx) for p in parts]
        if any(hasattr(v, "__html__") for v in values):  # Markup: leave its rendering to Jinja
            raise Miss
        return concat(tuple(values))

    return render


def compile_fast(node: nodes.Node, filters: Mapping[str, Any],
                 concat: Callable[[tuple[Any, ...]], str] | None = None) -> Fast | None:
    """A closure for ``node``, or ``None`` when the expression is not simple enough.

    :param concat: the environment's ``~`` (with its size limit); without it ``~``
        expressions are left to Jinja
    """
    if isinstance(node, nodes.Concat) and concat is not None:
        parts = [compile_fast(n, filters, concat) for n in node.nodes]
        if any(p is None for p in parts):
            return None
        return lambda ctx: concat(tuple(p(ctx) for p in parts))  # type: ignore[misc]
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, nodes.Tuple) and node.ctx == "load":
        parts = [compile_fast(n, filters, concat) for n in node.items]
        if any(p is None for p in parts):
            return None
        return lambda ctx: tuple(p(ctx) for p in parts)  # type: ignore[misc]
    if isinstance(node, nodes.Name) and node.ctx == "load":
        name = node.name

        def load(ctx: Mapping[str, Any]) -> Any:
            try:
                return ctx[name]
            except KeyError:
                raise Miss from None

        return load
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getitem):
            if not isinstance(node.arg, nodes.Const) or not isinstance(node.arg.value, str):
                return None
            key = node.arg.value
        else:
            key = node.attr
        inner = compile_fast(node.node, filters, concat)
        if inner is None:
            return None

        def lookup(ctx: Mapping[str, Any]) -> Any:
            obj = inner(ctx)
            if not isinstance(obj, Mapping):
                raise Miss
            try:
                return obj[key]
            except KeyError:
                raise Miss from None

        return lookup
    if isinstance(node, nodes.Filter):
        func = filters.get(node.name)
        if node.dyn_args or node.dyn_kwargs or node.node is None or not _filter_ok(func):
            return None
        inner = compile_fast(node.node, filters, concat)
        args = [compile_fast(a, filters, concat) for a in node.args]
        kwargs = {k.key: compile_fast(k.value, filters, concat) for k in node.kwargs}
        if inner is None or any(a is None for a in args) or any(v is None for v in kwargs.values()):
            return None
        if not args and not kwargs:
            return lambda ctx: func(inner(ctx))  # type: ignore[misc]
        return lambda ctx: func(inner(ctx), *(a(ctx) for a in args),  # type: ignore[misc]
                                **{k: v(ctx) for k, v in kwargs.items()})  # type: ignore[misc]
    if isinstance(node, nodes.Test) and node.name in ("defined", "undefined", "none") and not node.args:
        inner = compile_fast(node.node, filters, concat)
        if inner is None:
            return None
        if node.name == "none":
            return lambda ctx: inner(ctx) is None
        if node.name == "defined":
            # Found: defined. Not found: Jinja decides (a miss is "undefined" there).
            return lambda ctx: (inner(ctx), True)[1]
        return lambda ctx: (inner(ctx), False)[1]
    if isinstance(node, nodes.Compare) and len(node.ops) == 1 and node.ops[0].op in _COMPARE:
        left, right = compile_fast(node.expr, filters, concat), compile_fast(node.ops[0].expr, filters, concat)
        if left is None or right is None:
            return None
        op = _COMPARE[node.ops[0].op]
        return lambda ctx: op(left(ctx), right(ctx))  # type: ignore[misc]
    if isinstance(node, nodes.And):
        left, right = compile_fast(node.left, filters, concat), compile_fast(node.right, filters, concat)
        if left is None or right is None:
            return None
        return lambda ctx: left(ctx) and right(ctx)  # type: ignore[misc]
    if isinstance(node, nodes.Or):
        left, right = compile_fast(node.left, filters, concat), compile_fast(node.right, filters, concat)
        if left is None or right is None:
            return None
        return lambda ctx: left(ctx) or right(ctx)  # type: ignore[misc]
    if isinstance(node, nodes.Not):
        inner = compile_fast(node.node, filters, concat)
        if inner is None:
            return None
        return lambda ctx: not inner(ctx)  # type: ignore[misc]
    if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
        test, yes, no = (compile_fast(n, filters, concat) for n in (node.test, node.expr1, node.expr2))
        if test is None or yes is None or no is None:
            return None
        return lambda ctx: yes(ctx) if test(ctx) else no(ctx)  # type: ignore[misc]
    return None


def with_fallback(fast: Fast, slow: Fast) -> Fast:
    """``fast(ctx)``, or ``slow(ctx)`` where the fast path misses."""

    def evaluate(ctx: Mapping[str, Any]) -> Any:
        try:
            return fast(ctx)
        except Miss:
            return slow(ctx)

    return evaluate
