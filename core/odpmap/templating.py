"""The one Jinja environment factory, and template compilation for mappings.

Every template odpmap evaluates comes from :func:`make_environment`:

* :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`: templates cannot reach Python
  internals (``''.__class__``), call unsafe methods or mutate report data;
* :class:`jinja2.StrictUndefined`: a missing variable or field is an error, never ``""``;
* no autoescape: the output is events, not HTML;
* risky globals removed (see :data:`REMOVED_GLOBALS`), each with a test;
* filters and tests added only through the ``odpmap_prepare_jinja_environment`` hook
  (odpmap's own, in :mod:`odpmap.builtins.filters`, go through it too).

Two kinds of template value, decided by the source text, never by the rendered output:

* a string that is **exactly one expression**, ``"{{ item.timestamp }}"``, is evaluated
  as an expression and keeps its native type (an ``int`` stays an ``int``, the string
  ``"42"`` stays a string);
* any other string containing ``{{``/``{%`` is a **text template** and renders to ``str``;
* a string without template syntax, a number, a boolean or ``null`` is a literal.

Templates are compiled once, when a mapping is loaded (:func:`compile_value`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import TemplateSyntaxError, TemplateUndefinedError
from .fastpath import compile_fast, compile_fast_text, with_fallback

__all__ = [
    "CONTEXT_VARIABLES",
    "REMOVED_GLOBALS",
    "CompiledValue",
    "Literal",
    "OdpmapEnvironment",
    "make_environment",
]

#: Names every mapping template may use. See docs/mapping-reference.md, "Template context".
CONTEXT_VARIABLES = frozenset(
    {
        "item",  # the current report item
        "report",  # the whole parsed report
        "index",  # position of the item in the report
        "provider",  # provider name
        "channel",  # the provider's channel type (email, sms, ...)
        "headers",  # request headers, lower-cased names
        "received_at",  # epoch seconds when the report was received
        "tables",  # the mapping's lookup tables
        "tracking",  # campaign tracking remembered for this message, or {}
        "vars",  # the mapping's computed per-item variables
    }
)

#: Globals Jinja provides by default that odpmap removes.
#: ``range``: ``range(10**9)`` would let a mapping build huge lists (Airbyte removes it too).
#: ``lipsum``, ``cycler``, ``joiner``, ``namespace``: no use in events; less surface.
REMOVED_GLOBALS = ("range", "lipsum", "cycler", "joiner", "namespace")

# Longest string or sequence a template may build with ``*``, ``+``, ``~`` or ``join``;
# guards against ``'x' * 10**9`` in a mapping.
MAX_RESULT_LENGTH = 1_000_000
# Largest integer (in bits) a template may compute with ``**``.
MAX_POWER_BITS = 4096


def _size(value: Any) -> int:
    """Characters of a string, or characters/elements of a list (nested strings counted)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(v) for v in value if isinstance(v, str))
    return 0


def _too_big(size: int) -> None:
    if size > MAX_RESULT_LENGTH:
        raise SecurityError(f"refusing to build a value of {size} characters or elements (limit {MAX_RESULT_LENGTH})")


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """Routes ``a ~ b`` through :meth:`OdpmapEnvironment.concat` so its size is checked."""

    def visit_Concat(self, node: nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class OdpmapEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox odpmap renders mappings in. Create it with :func:`make_environment`."""

    code_generator_class = _CodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (native, source) -> (function, variables, ast): the same template text in
        #: several places or mappings is compiled once per environment.
        self.compiled_cache: dict[tuple[bool, str], tuple[Callable[..., Any], frozenset[str], Any]] = {}
        #: Evaluate simple expressions without Jinja (see :mod:`odpmap.fastpath`).
        self.fast_path = True

    def concat(self, parts: tuple[Any, ...]) -> str:
        pieces = [str(p) for p in parts]
        _too_big(sum(len(p) for p in pieces))
        return "".join(pieces)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool):
                    _too_big(_size(seq) * n)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _too_big(_size(left) + _size(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"refusing to compute a power of more than {MAX_POWER_BITS} bits (exponent {right} too large)")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Reports are dicts: make ``item.event`` prefer the key over a dict method of
        # the same name (``item.items`` is the field "items", not dict.items).
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


# ``binop_table`` routing through call_binop needs the intercepted operators listed.
OdpmapEnvironment.intercepted_binops = frozenset({"*", "**", "+"})


def _safe_join(value: Any, d: str = "", attribute: Any = None) -> str:
    items = [str(v) for v in value]
    _too_big(sum(len(i) for i in items) + len(d) * max(len(items) - 1, 0))
    return d.join(items)


def make_environment(prepare: Iterable[Callable[[jinja2.Environment], None]] = ()) -> OdpmapEnvironment:
    """Build a fresh environment. ``prepare`` callables add filters/tests/globals.

    The engine passes its plugin manager's ``odpmap_prepare_jinja_environment`` hook here,
    so each engine has its own environment and two engines never share filters.
    """
    env = OdpmapEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    for name in REMOVED_GLOBALS:
        env.globals.pop(name, None)
    env.filters["join"] = _safe_join
    for fn in prepare:
        fn(env)
    return env


_SINGLE_EXPR = re.compile(r"^\{\{-?(?P<expr>.*?)-?\}\}$", re.DOTALL)
_HAS_SYNTAX = re.compile(r"\{\{|\{%|\{#")


@dataclass(frozen=True)
class Literal:
    """A value with no template syntax: returned as is."""

    value: Any
    location: str

    is_template = False

    def __call__(self, ctx: Mapping[str, Any]) -> Any:
        return self.value

    def variables(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class CompiledValue:
    """A compiled template value. Call it with the render context."""

    source: str
    location: str
    native: bool
    render: Callable[[Mapping[str, Any]], Any]
    names: frozenset[str]
    ast: Any = field(default=None, repr=False, compare=False)

    is_template = True

    def __call__(self, ctx: Mapping[str, Any]) -> Any:
        return self.render(ctx)

    def variables(self) -> frozenset[str]:
        return self.names


def _location_kw(location: tuple[str, int | None, int | None], pointer: str) -> dict[str, Any]:
    file, line, col = location
    return {"file": file, "line": line, "column": col, "pointer": pointer}


def single_expression(source: str) -> str | None:
    """The inner expression if ``source`` is exactly ``{{ expr }}``, else ``None``."""
    m = _SINGLE_EXPR.match(source.strip())
    if not m:
        return None
    inner = m.group("expr")
    if "{{" in inner or "}}" in inner or "{%" in inner:
        return None
    return inner


def compile_value(
    env: OdpmapEnvironment,
    value: Any,
    *,
    location: tuple[str, int | None, int | None],
    pointer: str,
    expression: bool = False,
    allowed: frozenset[str] = CONTEXT_VARIABLES,
) -> Literal | CompiledValue:
    """Compile one mapping value.

    :param value: the YAML value (string, number, bool or None)
    :param location: ``(file, line, column)`` of the value in its mapping file
    :param pointer: where it sits in the mapping, e.g. ``rules[3].emit.data.ts``
    :param expression: ``True`` for fields that are always expressions (``when``); the
        braces are then optional
    :param allowed: the variables the template may use; others fail at load time
    :raises TemplateSyntaxError: the template does not parse
    :raises TemplateUndefinedError: it uses a variable outside ``allowed``
    """
    loc_text = ":".join(str(p) for p in location if p is not None)
    if not isinstance(value, str):
        return Literal(value, loc_text)
    expr_src = single_expression(value)
    if expr_src is None and expression and not _HAS_SYNTAX.search(value):
        expr_src = value
    if expr_src is None and not _HAS_SYNTAX.search(value):
        return Literal(value, loc_text)

    native = expr_src is not None
    cached = env.compiled_cache.get((native, value))
    if cached is not None:
        fn, names, ast = cached
        return CompiledValue(value, loc_text, native, fn, names, ast)

    name = f"{location[0]}#{pointer}"
    # An expression is parsed as `{% set result = ... %}`: one parse serves the
    # checks and the compilation.
    source = "{% set result = " + expr_src + " %}" if native else value
    try:
        ast = env.parse(source, name=name, filename=location[0])
    except jinja2.TemplateSyntaxError as exc:
        if native:  # report the error as the author wrote it, not as wrapped
            try:
                env.parse("{{ " + expr_src + " }}")
            except jinja2.TemplateSyntaxError as plain:
                exc = plain
        raise TemplateSyntaxError(
            f"template syntax error: {exc.message}"
            + (f" (template line {exc.lineno})" if "\n" in value.strip() else ""),
            template_lineno=exc.lineno,
            **_location_kw(location, pointer),
        ) from exc

    _check_filters(env, ast, location, pointer)
    try:
        names = frozenset(meta.find_undeclared_variables(ast))
    except jinja2.TemplateSyntaxError as exc:  # TemplateAssertionError: a check jinja makes itself
        raise TemplateSyntaxError(
            f"template syntax error: {exc.message}", template_lineno=exc.lineno, **_location_kw(location, pointer)
        ) from exc
    unknown = sorted(n for n in names if n not in allowed and n not in env.globals)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise TemplateUndefinedError(
            f"unknown variable {unknown[0]!r} (a template can use: {known})",
            variable=unknown[0],
            **_location_kw(location, pointer),
        )

    template = _compile_template(env, ast, name, location[0])
    fn = _expression_function(template) if native else template.render
    if env.fast_path:
        fast = (compile_fast(ast.body[0].node, env.filters, env.concat) if native
                else compile_fast_text(ast, env.filters, env.concat))
        if fast is not None:
            fn = with_fallback(fast, fn)
    if allowed == CONTEXT_VARIABLES:
        env.compiled_cache[(native, value)] = (fn, names, ast)
    return CompiledValue(value, loc_text, native, fn, names, ast)


def _check_filters(env: OdpmapEnvironment, ast: nodes.Template, location: Any, pointer: str) -> None:
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        registry = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in registry:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateSyntaxError(
                f"template syntax error: no {kind} named {node.name!r}",
                template_lineno=node.lineno,
                **_location_kw(location, pointer),
            )


def _compile_template(env: OdpmapEnvironment, ast: nodes.Template, name: str, filename: str) -> jinja2.Template:
    code = env.compile(ast, name=name, filename=filename)
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _expression_function(template: jinja2.Template) -> Callable[[Mapping[str, Any]], Any]:
    """Evaluate a compiled ``{% set result = ... %}`` and return ``result`` natively
    (the technique of :meth:`jinja2.Environment.compile_expression`)."""
    root = template.root_render_func
    new_context = template.new_context

    def evaluate(ctx: Mapping[str, Any]) -> Any:
        context = new_context(ctx)  # type: ignore[arg-type]
        for _ in root(context):
            pass
        result = context.vars["result"]
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result

    return evaluate
