"""Compile a YAML mapping into a rule model that runs cheaply per report item.

Everything that can be checked without a report is checked here, once, when an engine
loads its mappings: the file's structure (a cerberus schema, ``schema.yaml``), duplicate
keys and rule ids, ``extends`` chains, template syntax, unknown variables, filters and
tables, (type, action) pairs against the ODP catalogue, required data fields, unknown
parsers and verifiers, and rules placed after a catch-all that can never match.
Each problem is a :class:`~odpmap.errors.MappingError` carrying ``file:line:col``.

The result, :class:`CompiledMapping`, holds compiled templates only: mapping an item
evaluates pre-built callables and never parses or compiles anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import cerberus
import jinja2
import yaml
from jinja2 import nodes

from ..builtins.filters import MissingValueError
from ..catalogue import CHANNEL, Catalogue
from ..errors import MappingError, MappingSyntaxError, TemplateUndefinedError
from ..templating import CompiledValue, Literal, OdpmapEnvironment, compile_value, single_expression
from .loader import Pos, PosDict, PosList, position_of

__all__ = ["CompiledEvent", "CompiledMapping", "CompiledRule", "FirstOf", "MappingCompiler", "Value"]

FORMAT_VERSION = 1
EVENT_KEYS = ("type", "action", "identifiers", "data")


@dataclass(frozen=True)
class FirstOf:
    """``{first: [a, b, ...], default: d}``: the first candidate that is defined and not
    ``None``/``""``; a candidate failing on a missing field, or on a null value given to
    a filter such as ``epoch``, is passed over."""

    candidates: tuple[Literal | CompiledValue, ...]
    default: Literal | CompiledValue | None
    location: str

    is_template = True

    def __call__(self, ctx: Mapping[str, Any]) -> Any:
        for candidate in self.candidates:
            try:
                value = candidate(ctx)
            except (jinja2.UndefinedError, MissingValueError):
                continue
            if value is None or value == "" or isinstance(value, jinja2.Undefined):
                continue
            return value
        return self.default(ctx) if self.default is not None else None

    def variables(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for c in self.candidates:
            out |= c.variables()
        return out | (self.default.variables() if self.default else frozenset())


Value = Literal | CompiledValue | FirstOf


@dataclass(frozen=True)
class CompiledEvent:
    """One event a rule emits, defaults already merged in."""

    pointer: str
    location: str
    type: Value
    action: Value
    identifiers: tuple[tuple[str, Value], ...]
    data: tuple[tuple[str, Value], ...]

    def describe(self) -> str:
        t = self.type.value if isinstance(self.type, Literal) else "{type}"
        a = self.action.value if isinstance(self.action, Literal) else "{action}"
        extra = ""
        for key, value in self.data:
            if key in ("reachability_update_type",) and isinstance(value, Literal):
                extra = f" ({value.value})"
        return f"{t}/{a}{extra}"


@dataclass(frozen=True)
class CompiledRule:
    id: str
    location: str
    when: Value | None
    when_source: str | None
    skip: str | None
    events: tuple[CompiledEvent, ...]
    description: str | None = None

    @property
    def catch_all(self) -> bool:
        return self.when is None or (isinstance(self.when, Literal) and self.when.value is True)

    def outcome(self) -> str:
        if self.skip is not None:
            return f"skip: {self.skip}"
        return ", ".join(e.describe() for e in self.events)


@dataclass(frozen=True)
class ParserSpec:
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CompiledMapping:
    """A mapping ready to run. Built by :class:`MappingCompiler`."""

    provider: str
    channel: str
    file: str
    description: str
    parser: ParserSpec
    verify: str | None
    samples: str | None
    items: Value | None
    item_id: Value | None
    message_id: Value | None
    tracking: Value | None
    tables: dict[str, dict[Any, Any]]
    vars: dict[str, Value]
    rules: tuple[CompiledRule, ...]
    extends: tuple[str, ...] = ()
    verify_options: Mapping[str, Any] = field(default_factory=dict)

    def event_table(self) -> list[dict[str, str]]:
        """The rules as a table: id, condition, outcome (what ``odpmap providers --events`` prints)."""
        return [
            {"rule": r.id, "when": r.when_source or "(always)", "outcome": r.outcome()} for r in self.rules
        ]

    def handled_events(self) -> list[str]:
        """The distinct ``type/action`` outcomes of the rules."""
        out: dict[str, None] = {}
        for r in self.rules:
            for e in r.events:
                out[e.describe()] = None
        return list(out)


_MAPPING_SCHEMA: dict[str, Any] | None = None


def _mapping_schema() -> dict[str, Any]:
    global _MAPPING_SCHEMA  # a constant loaded lazily; never mutated
    if _MAPPING_SCHEMA is None:
        text = (files("odpmap") / "mapping" / "schema.yaml").read_text(encoding="utf-8")
        _MAPPING_SCHEMA = yaml.safe_load(text)
    return _MAPPING_SCHEMA


class _Errors:
    """Collects mapping errors so ``lint`` can report all of them at once."""

    def __init__(self) -> None:
        self.items: list[MappingError] = []

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except MappingError as exc:
            self.items.append(exc)


class MappingCompiler:
    """Compiles raw mapping documents for one engine.

    :param env: the engine's Jinja environment (filters from plugins included)
    :param catalogue: the engine's ODP catalogue
    :param parsers: names of registered parsers
    :param verifiers: names of registered verifiers
    :param resolve: ``resolve(name_or_path, from_file) -> (doc, file)`` for ``extends``
    """

    def __init__(
        self,
        env: OdpmapEnvironment,
        catalogue: Catalogue,
        *,
        parsers: set[str],
        verifiers: set[str],
        resolve: Callable[[str, str], tuple[PosDict, str]] | None = None,
        allow_sent: bool = False,
    ) -> None:
        self.env = env
        self.catalogue = catalogue
        self.parsers = parsers
        self.verifiers = verifiers
        self.resolve = resolve
        self.allow_sent = allow_sent
        self._validator = cerberus.Validator(_mapping_schema())

    # -- entry points -----------------------------------------------------------------

    def compile(self, doc: Any, file: str) -> CompiledMapping:
        """Compile a document; raise the first :class:`MappingError` found."""
        mapping, errors = self.check(doc, file)
        if errors:
            first = errors[0]
            first.all_errors = errors  # type: ignore[attr-defined]
            raise first
        assert mapping is not None
        return mapping

    def check(self, doc: Any, file: str) -> tuple[CompiledMapping | None, list[MappingError]]:
        """Compile a document, collecting every error instead of stopping at the first."""
        errors = _Errors()
        with errors.guard():
            doc, chain = self._apply_extends(doc, file, ())
            self._check_structure(doc, file)
            return self._compile(doc, file, chain, errors), errors.items
        return None, errors.items

    # -- extends and structure ------------------------------------------------------

    def _apply_extends(self, doc: Any, file: str, seen: tuple[str, ...]) -> tuple[PosDict, tuple[str, ...]]:
        if not isinstance(doc, PosDict):
            raise MappingSyntaxError("a mapping file must be a YAML mapping (key: value)", file=file, line=1, column=1)
        parent_ref = doc.get("extends")
        if parent_ref is None:
            return doc, ()
        pos = position_of(doc, ("extends",))
        if not isinstance(parent_ref, str):
            raise MappingSyntaxError("extends must be a provider name or a file path", **_kw(pos))
        if self.resolve is None:
            raise MappingSyntaxError(f"cannot resolve extends {parent_ref!r} here", **_kw(pos))
        try:
            parent_doc, parent_file = self.resolve(parent_ref, file)
        except MappingError as exc:
            if exc.line is None:  # name the `extends` line, not just the file
                raise MappingSyntaxError(exc.message, **_kw(pos), pointer="extends") from exc
            raise
        if parent_file in seen or parent_file == file:
            raise MappingSyntaxError(f"extends cycle: {' -> '.join((*seen, file, parent_file))}", **_kw(pos))
        parent_doc, chain = self._apply_extends(parent_doc, parent_file, (*seen, file))
        return _merge(parent_doc, doc), (parent_file, *chain)

    def _check_structure(self, doc: PosDict, file: str) -> None:
        v = self._validator
        if v.validate(dict(doc)):
            if "rules" not in doc:
                raise MappingSyntaxError("a mapping needs rules (or extends a mapping that has them)", **_kw(doc.pos))
            if "channel" not in doc:
                raise MappingSyntaxError("a mapping needs a channel (email, sms, ...)", **_kw(doc.pos))
            return
        # Report the first error at the position of the offending key.
        path, message = _first_cerberus_error(v.errors)
        pos = position_of(doc, path, key=message.startswith("unknown field")) or doc.pos
        pointer = _pointer(path)
        if message == "unknown field":
            message = f"unknown key {path[-1]!r}"
        raise MappingSyntaxError(message, **_kw(pos), pointer=pointer or None)

    # -- compilation ----------------------------------------------------------------------

    def _value(
        self, doc: Any, path: tuple[Any, ...], pointer: str, *, expression: bool = False, allowed_vars: set[str] | None = None,
        tables: Mapping[str, Any] | None = None,
    ) -> Value:
        raw = _get(doc, path)
        pos = position_of(doc, path)
        assert pos is not None
        if isinstance(raw, PosDict):
            return self._first_of(doc, path, pointer, raw, allowed_vars=allowed_vars, tables=tables)
        if isinstance(raw, (PosList,)):
            raise MappingSyntaxError(
                "a value must be a template, a literal or {first: [...]}", **_kw(pos), pointer=pointer
            )
        value = compile_value(self.env, raw, location=pos, pointer=pointer, expression=expression)
        if isinstance(value, CompiledValue):
            self._check_template_refs(raw, value, pos, pointer, allowed_vars, tables, expression)
        return value

    def _first_of(self, doc: Any, path: tuple[Any, ...], pointer: str, raw: PosDict, *, allowed_vars: set[str] | None,
                  tables: Mapping[str, Any] | None) -> FirstOf:
        pos = position_of(doc, path)
        extra = set(raw) - {"first", "default"}
        if extra or not isinstance(raw.get("first"), PosList) or not raw["first"]:
            raise MappingSyntaxError(
                "a structured value must be {first: [candidate, ...], default: value}"
                + (f" (unknown key {sorted(extra)[0]!r})" if extra else ""),
                **_kw(pos), pointer=pointer,
            )
        cands = tuple(
            self._value(doc, (*path, "first", i), f"{pointer}.first[{i}]", allowed_vars=allowed_vars, tables=tables)
            for i in range(len(raw["first"]))
        )
        default = (
            self._value(doc, (*path, "default"), f"{pointer}.default", allowed_vars=allowed_vars, tables=tables)
            if "default" in raw else None
        )
        return FirstOf(cands, default, ":".join(map(str, pos or ())))

    def _check_template_refs(self, raw: str, value: CompiledValue, pos: Pos, pointer: str,
                             allowed_vars: set[str] | None, tables: Mapping[str, Any] | None, expression: bool) -> None:
        """``vars.x`` must be declared; ``lookup('t')`` must name a declared table."""
        ast = value.ast
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "vars" and allowed_vars is not None:
                if node.attr not in allowed_vars:
                    raise TemplateUndefinedError(
                        f"vars.{node.attr} is not declared under vars:"
                        + (f" (declared: {', '.join(sorted(allowed_vars))})" if allowed_vars else ""),
                        variable=f"vars.{node.attr}", **_kw(pos), pointer=pointer,
                    )
        if tables is None:
            return
        for node in ast.find_all(nodes.Filter):
            if node.name == "lookup" and node.args and isinstance(node.args[0], nodes.Const):
                name = node.args[0].value
                if name not in tables:
                    raise TemplateUndefinedError(
                        f"lookup: no table named {name!r} (declared: {', '.join(sorted(tables)) or 'none'})",
                        variable=str(name), **_kw(pos), pointer=pointer,
                    )

    def _compile(self, doc: PosDict, file: str, chain: tuple[str, ...], errors: _Errors) -> CompiledMapping:
        provider = doc["provider"]
        channel = doc["channel"]
        if channel not in self.catalogue.channel_types:
            raise MappingSyntaxError(
                f"unknown channel type {channel!r} (known: {', '.join(sorted(self.catalogue.channel_types))})",
                **_kw(position_of(doc, ("channel",))), pointer="channel",
            )
        parser = ParserSpec("auto")
        with errors.guard():
            parser = self._parser_spec(doc)
        verify = doc.get("verify")
        verify_options: dict[str, Any] = {}
        if isinstance(verify, dict):
            verify, verify_options = verify["name"], dict(verify.get("options") or {})
        if verify is not None and verify not in self.verifiers:
            with errors.guard():
                raise MappingSyntaxError(
                    f"unknown verifier {verify!r} (known: {', '.join(sorted(self.verifiers)) or 'none'})",
                    **_kw(position_of(doc, ("verify",))), pointer="verify",
                )
        tables = {name: dict(t) for name, t in (doc.get("tables") or {}).items()}
        declared_vars = set(doc.get("vars") or {})

        def value(path: tuple[Any, ...], *, expression: bool = False) -> Value | None:
            pointer = _pointer(path)
            result: Value | None = None
            with errors.guard():
                result = self._value(doc, path, pointer, expression=expression, allowed_vars=declared_vars, tables=tables)
            return result

        vars_ = {}
        for name in doc.get("vars") or {}:
            compiled = value(("vars", name))
            if compiled is not None:
                vars_[name] = compiled
        items = value(("items",), expression=True) if "items" in doc else None
        item_id = value(("item_id",)) if "item_id" in doc else None
        message_id = value(("message_id",)) if "message_id" in doc else None
        tracking = value(("tracking",), expression=True) if "tracking" in doc else None

        defaults = doc.get("defaults") or {}
        default_ids = {k: value(("defaults", "identifiers", k)) for k in (defaults.get("identifiers") or {})}
        default_data = {k: value(("defaults", "data", k)) for k in (defaults.get("data") or {})}

        rules: list[CompiledRule] = []
        # Duplicate ids are reported at the later occurrence in the files (after
        # `extends`, a child's rules may be reordered around the parent's).
        first_of_id: dict[str, Pos] = {}
        for i, r in sorted(enumerate(doc["rules"]), key=lambda ir: position_of(doc, ("rules", ir[0])) or doc.pos):
            first_of_id.setdefault(r["id"], position_of(doc, ("rules", i)) or doc.pos)
        catch_all: CompiledRule | None = None
        for i, raw_rule in enumerate(doc["rules"]):
            rule_pos = position_of(doc, ("rules", i))
            rid = raw_rule["id"]
            with errors.guard():
                if first_of_id[rid] != (rule_pos or doc.pos):
                    raise MappingSyntaxError(
                        f"duplicate rule id {rid!r} (first at line {first_of_id[rid][1]})",
                        **_kw(position_of(doc, ("rules", i, "id"))), pointer=f"rules[{i}].id",
                    )
                if "emit" not in raw_rule and "skip" not in raw_rule:
                    raise MappingSyntaxError(
                        f"rule {rid!r} needs emit (events) or skip (a reason)", **_kw(rule_pos), pointer=f"rules[{i}]"
                    )
                if catch_all is not None:
                    raise MappingSyntaxError(
                        f"rule {rid!r} can never match: rule {catch_all.id!r} ({catch_all.location}) matches every item",
                        **_kw(rule_pos), pointer=f"rules[{i}]",
                    )
            when = value(("rules", i, "when"), expression=True) if "when" in raw_rule else None
            events: list[CompiledEvent] = []
            if "emit" in raw_rule:
                emits = raw_rule["emit"]
                paths = [("rules", i, "emit", j) for j in range(len(emits))] if isinstance(emits, list) else [("rules", i, "emit")]
                for p in paths:
                    with errors.guard():
                        events.append(self._event(doc, p, channel, default_ids, default_data, value))
            rule = CompiledRule(
                id=rid,
                location=_loc_text(rule_pos),
                when=when,
                when_source=str(raw_rule["when"]) if "when" in raw_rule else None,
                skip=raw_rule.get("skip"),
                events=tuple(events),
                description=raw_rule.get("description"),
            )
            # Decided from the text, so a `when` that failed to compile is not taken
            # for a catch-all (which would report every later rule as unreachable).
            if ("when" not in raw_rule or raw_rule["when"] is True) and catch_all is None:
                catch_all = rule
            rules.append(rule)

        samples = doc.get("samples")
        return CompiledMapping(
            provider=provider,
            channel=channel,
            file=file,
            description=doc.get("description", ""),
            parser=parser,
            verify=verify,
            verify_options=verify_options,
            samples=samples,
            items=items,
            item_id=item_id,
            message_id=message_id,
            tracking=tracking,
            tables=tables,
            vars=vars_,
            rules=tuple(rules),
            extends=chain,
        )

    def _parser_spec(self, doc: PosDict) -> ParserSpec:
        raw = doc.get("parser", "auto")
        spec = ParserSpec(raw) if isinstance(raw, str) else ParserSpec(raw["name"], dict(raw.get("options") or {}))
        if spec.name not in self.parsers:
            raise MappingSyntaxError(
                f"unknown parser {spec.name!r} (known: {', '.join(sorted(self.parsers))})",
                **_kw(position_of(doc, ("parser",))), pointer="parser",
            )
        return spec

    def _event(
        self,
        doc: PosDict,
        path: tuple[Any, ...],
        channel: str,
        default_ids: Mapping[str, Value | None],
        default_data: Mapping[str, Value | None],
        value: Callable[..., Value | None],
    ) -> CompiledEvent:
        raw = _get(doc, path)
        pointer = _pointer(path)
        pos = position_of(doc, path)
        unknown = [k for k in raw if k not in EVENT_KEYS]
        if unknown:
            raise MappingSyntaxError(
                f"unknown key {unknown[0]!r} in an event (an event has {', '.join(EVENT_KEYS)})",
                **_kw(position_of(doc, (*path, unknown[0]), key=True)), pointer=pointer,
            )
        if "action" not in raw:
            raise MappingSyntaxError("an event needs an action", **_kw(pos), pointer=pointer)
        for section in ("identifiers", "data"):
            if section in raw and not isinstance(raw[section], dict):
                raise MappingSyntaxError(f"{section} must be a mapping", **_kw(position_of(doc, (*path, section))),
                                         pointer=f"{pointer}.{section}")
        type_ = value((*path, "type")) if "type" in raw else Literal(channel, _loc_text(pos))
        action = value((*path, "action"))
        ids = dict(default_ids)
        for k in raw.get("identifiers") or {}:
            ids[k] = value((*path, "identifiers", k))
        data = dict(default_data)
        for k in raw.get("data") or {}:
            data[k] = value((*path, "data", k))
        failed = any(v is None for v in (*ids.values(), *data.values()))  # already reported
        # An explicit null removes a default.
        ids = {k: v for k, v in ids.items() if v is not None and not (isinstance(v, Literal) and v.value is None)}
        data = {k: v for k, v in data.items() if v is not None and not (isinstance(v, Literal) and v.value is None)}
        if type_ is None or action is None:
            raise MappingSyntaxError("event type or action failed to compile", **_kw(pos), pointer=pointer)
        if isinstance(type_, Literal) and isinstance(action, Literal):
            self._check_pair(type_.value, action.value, data, doc, path, pointer)
        if not failed:
            self._check_required(ids, data, pos, pointer)
        return CompiledEvent(pointer, _loc_text(pos), type_, action, tuple(ids.items()), tuple(data.items()))

    def _check_required(self, ids: Mapping[str, Value], data: Mapping[str, Value], pos: Pos | None,
                        pointer: str) -> None:
        """Every event needs an identifier and the catalogue's required data fields (ts,
        target_address): a rule that can never build a valid event is a load-time error."""
        if not ids:
            raise MappingSyntaxError(
                "an event needs at least one identifier (under identifiers: or defaults.identifiers:)",
                **_kw(pos), pointer=pointer,
            )
        missing = [n for n, rules in self.catalogue.fields.items() if rules.get("required") and n not in data]
        if missing:
            raise MappingSyntaxError(
                f"an event needs data.{missing[0]} (under data: or defaults.data:)", **_kw(pos), pointer=pointer
            )

    def _check_pair(self, type_: Any, action: Any, data: Mapping[str, Value], doc: PosDict,
                    path: tuple[Any, ...], pointer: str) -> None:
        cat = self.catalogue
        spec = cat.lookup(str(type_), str(action))
        where = position_of(doc, (*path, "action")) or position_of(doc, path)
        if spec is None:
            if str(type_) not in cat.event_types():
                raise MappingSyntaxError(
                    f"event type {type_!r} is not in the ODP catalogue (known: {', '.join(sorted(cat.event_types()))})",
                    **_kw(position_of(doc, (*path, "type")) or where), pointer=f"{pointer}.type",
                )
            raise MappingSyntaxError(
                f"{type_}/{action} is not in the ODP catalogue (actions for {type_}: {', '.join(cat.actions_for(str(type_)))})",
                **_kw(where), pointer=f"{pointer}.action",
            )
        if spec.platform_generated and not self.allow_sent:
            raise MappingSyntaxError(
                f"{type_}/{action} is generated by ODP itself; skip the provider's event instead "
                "(e.g. skip: \"sent: ODP generates it\")",
                **_kw(where), pointer=f"{pointer}.action",
            )
        for name in spec.required:
            if name not in data:
                raise MappingSyntaxError(
                    f"{type_}/{action} requires data.{name}", **_kw(position_of(doc, path)), pointer=pointer
                )
            v = data[name]
            if isinstance(v, Literal) and name in spec.allowed and v.value not in spec.allowed[name]:
                raise MappingSyntaxError(
                    f"data.{name} must be one of {list(spec.allowed[name])} for {type_}/{action}, not {v.value!r}",
                    **_kw(position_of(doc, (*path, "data", name))), pointer=f"{pointer}.data.{name}",
                )


# -- helpers -----------------------------------------------------------------------------


def _kw(pos: Pos | None) -> dict[str, Any]:
    if pos is None:
        return {}
    return {"file": pos[0], "line": pos[1], "column": pos[2]}


def _loc_text(pos: Pos | None) -> str:
    return ":".join(map(str, pos)) if pos else "<unknown>"


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _pointer(path: tuple[Any, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _first_cerberus_error(errors: Mapping[str, Any], prefix: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str]:
    """Walk cerberus' error tree down to the first leaf: (path, message)."""
    key = sorted(errors, key=str)[0]
    entry = errors[key]
    path = (*prefix, key)
    for item in entry:
        if isinstance(item, dict):
            return _first_cerberus_error(item, path)
        if isinstance(item, str):
            return path, item
    return path, "invalid"


def _merge(parent: PosDict, child: PosDict) -> PosDict:
    """Merge ``child`` (which ``extends`` parent) over ``parent``.

    Scalars: the child's win. ``tables``/``vars``: merged by name (a child's table
    replaces the parent's table of that name). ``defaults.identifiers``/``defaults.data``:
    merged key by key. ``rules``: a child rule with the id of a parent rule replaces it
    in place; the child's other rules come first, before the parent's.
    """
    out = PosDict(parent)
    out.pos = child.pos
    out.key_pos = {**parent.key_pos}
    out.value_pos = {**parent.value_pos}

    def take(key: Any, value: Any) -> None:
        out[key] = value
        out.key_pos[key] = child.key_pos.get(key, parent.key_pos.get(key))  # type: ignore[arg-type]
        out.value_pos[key] = child.value_pos.get(key, parent.value_pos.get(key))  # type: ignore[arg-type]

    for key, value in child.items():
        if key == "extends":
            continue
        if key in ("tables", "vars") and isinstance(parent.get(key), PosDict) and isinstance(value, PosDict):
            take(key, _merge_dicts(parent[key], value))
        elif key == "defaults" and isinstance(parent.get(key), PosDict) and isinstance(value, PosDict):
            merged = _merge_dicts(parent[key], value)
            for section in ("identifiers", "data"):
                if isinstance(parent[key].get(section), PosDict) and isinstance(value.get(section), PosDict):
                    merged[section] = _merge_dicts(parent[key][section], value[section])
            take(key, merged)
        elif key == "rules" and isinstance(parent.get(key), PosList) and isinstance(value, PosList):
            take(key, _merge_rules(parent[key], value))
        else:
            take(key, value)
    out.pop("extends", None)
    return out


def _merge_dicts(a: PosDict, b: PosDict) -> PosDict:
    out = PosDict({**a, **b})
    out.pos = b.pos
    out.key_pos = {**a.key_pos, **b.key_pos}
    out.value_pos = {**a.value_pos, **b.value_pos}
    return out


def _merge_rules(parent: PosList, child: PosList) -> PosList:
    # The first child rule with a parent rule's id replaces it in place; any further
    # child rule with that id stays in the child's list, so the duplicate is reported.
    child_by_id: dict[Any, int] = {}
    for i, r in enumerate(child):
        if isinstance(r, dict) and r.get("id") not in child_by_id:
            child_by_id[r.get("id")] = i
    used: set[int] = set()
    rest: list[tuple[Any, Pos]] = []
    for r, pos in zip(parent, parent.item_pos):
        rid = r.get("id") if isinstance(r, dict) else None
        if rid is not None and rid in child_by_id:
            i = child_by_id[rid]
            rest.append((child[i], child.item_pos[i]))
            used.add(i)
        else:
            rest.append((r, pos))
    new = [(r, pos) for i, (r, pos) in enumerate(zip(child, child.item_pos)) if i not in used]
    merged = new + rest
    out = PosList(r for r, _ in merged)
    out.pos = child.pos
    out.item_pos = [p for _, p in merged]
    return out


