"""The engine: plugins, compiled mappings and the ODP schema, ready to map reports.

::

    from odpmap import Engine

    engine = Engine()                       # plugins from entry points + built-ins
    result = engine.map("sendgrid", body, content_type="application/json")
    result.events        # ODP events, validated, ready to send
    result.skipped       # items a rule skipped, with reasons
    result.dead_letters  # items that could not be mapped, with reasons and raw items
    result.counts        # received == mapped + skipped + dead_lettered

An engine is self-contained: its own plugin manager, Jinja environment, catalogue and
compiled mappings. Build it once and reuse it; :meth:`Engine.map` is safe to call from
several threads.
"""

from __future__ import annotations


import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import jinja2

from .builtins.filters import FilterError
from .catalogue import Catalogue, CatalogueBuilder
from .errors import (
    ConfigError,
    MappingError,
    MappingSyntaxError,
    RenderError,
    UnknownProviderError,
)
from .hookspecs import hookimpl
from .mapping.compiler import CompiledMapping, CompiledRule, MappingCompiler
from .mapping.loader import PosDict, load_yaml
from .outcomes import DeadLetter, MapResult, Skipped
from .plugins import PluginManager, make_plugin_manager
from .registry import NamedRegistry, Provider, Traversable
from .sinks import SendReport, Sink
from .templating import make_environment
from .validation import EventSchema

__all__ = ["Engine", "ProviderInfo", "Sample"]

_CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".csv": "text/csv",
    ".form.txt": "application/x-www-form-urlencoded",
    ".query.txt": "application/x-www-form-urlencoded",
}


def content_type_for(filename: str) -> str | None:
    """Guess a sample or export file's content type from its name."""
    name = filename.lower()
    for suffix, ctype in sorted(_CONTENT_TYPES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return ctype
    return None


@dataclass(frozen=True)
class Sample:
    """A sample report shipped with a provider."""

    provider: str
    name: str
    body: bytes
    content_type: str | None


@dataclass
class ProviderInfo:
    """A loaded provider: its compiled mapping and the code around it."""

    name: str
    channel: str
    source: str
    mapping: CompiledMapping
    parse: Callable[..., Any]
    parser_name: str
    verify: Callable[..., bool] | None
    verifier_name: str | None
    samples_dir: Path | Traversable | None = None
    description: str = ""

    @property
    def mapping_file(self) -> str:
        return self.mapping.file

    def event_table(self) -> list[dict[str, str]]:
        return self.mapping.event_table()

    def handled_events(self) -> list[str]:
        return self.mapping.handled_events()


class _MappingPaths:
    """The plugin through which ``Engine(mapping_paths=...)`` registers its mapping files."""

    plugin_name = "mapping-paths"

    def __init__(self, paths: Iterable[str | PathLike[str]]) -> None:
        self.paths = [Path(p) for p in paths]

    @hookimpl
    def odpmap_register_providers(self, register: Callable[..., None]) -> None:
        for path in self.paths:
            if path.is_dir():
                for f in sorted(path.iterdir()):
                    if f.suffix in (".yaml", ".yml") and f.is_file():
                        register(Provider(mapping=f))
            elif path.is_file():
                register(Provider(mapping=path))
            else:
                raise ConfigError(f"mapping path {str(path)!r} does not exist")


class _LazyVars(Mapping[str, Any]):
    """``vars`` in templates: each variable evaluated on first use, once per item."""

    __slots__ = ("_ctx", "_defs", "_done")

    def __init__(self, defs: Mapping[str, Any], ctx: dict[str, Any]) -> None:
        self._defs = defs
        self._ctx = ctx
        self._done: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._done:
            return self._done[key]
        value = _evaluate(self._defs[key], self._ctx, None)
        self._done[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)


def _evaluate(value: Any, ctx: Mapping[str, Any], rule_id: str | None) -> Any:
    try:
        return value(ctx)
    except RenderError:
        raise
    except jinja2.UndefinedError as exc:
        raise RenderError(f"missing field or variable: {exc.message}", location=value.location, rule_id=rule_id) from exc
    except FilterError as exc:  # a filter's own message names the filter and the value
        raise RenderError(str(exc), location=value.location, rule_id=rule_id) from exc
    except Exception as exc:  # an expression failed on this item's data
        raise RenderError(f"{type(exc).__name__}: {exc}", location=value.location, rule_id=rule_id) from exc


class Engine:
    """Maps provider reports to validated ODP events.

    :param plugins: plugin modules/objects to register besides the discovered ones
    :param autoload: discover plugins through the ``odpmap.plugins`` entry points
    :param mapping_paths: extra mapping files or folders of ``*.yaml`` files; each file
        is a provider (registered through the same hook as plugins' providers)
    :param load_plugins: allowlist of entry-point plugin names (default:
        ``ODPMAP_LOAD_PLUGINS``, else all)
    :param block_plugins: entry-point plugin names never to load
    :param strict: raise on the first broken mapping; with ``False`` a broken mapping
        only disables its provider and is listed in :attr:`load_errors`
    :param allow_sent: accept ``<channel>/sent`` events (ODP generates them itself, so
        they are refused by default)
    :param clock: returns epoch seconds; the receive time of reports (Twilio sends none)
    :param data_dir: folder for durable state (tracking store, outbox); default the
        ``ODPMAP_DATA_DIR`` environment variable. Nothing is written there until needed.
    :param tracking_store: the campaign tracking store: a registered name (default
        ``sqlite``, in ``data_dir``) or an object with ``remember``/``recall``
    :raises ConfigError: a plugin, mapping or schema is wrong (with file:line)
    """

    def __init__(
        self,
        *,
        plugins: Iterable[Any] = (),
        autoload: bool = True,
        mapping_paths: Iterable[str | PathLike[str]] = (),
        load_plugins: Iterable[str] | None = None,
        block_plugins: Iterable[str] = (),
        strict: bool = True,
        allow_sent: bool = False,
        clock: Callable[[], float] = time.time,
        data_dir: str | PathLike[str] | None = None,
        tracking_store: str | Any = "sqlite",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        extra = list(plugins)
        paths = list(mapping_paths)
        if paths:
            extra.append(_MappingPaths(paths))
        self.pm: PluginManager = make_plugin_manager(
            plugins=extra, autoload=autoload, load_plugins=load_plugins, block_plugins=block_plugins, environ=environ
        )
        self.clock = clock
        self.strict = strict
        env_dir = (os.environ if environ is None else environ).get("ODPMAP_DATA_DIR")
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else (Path(env_dir) if env_dir else None)
        self._tracking_spec = tracking_store
        self._tracking: Any = None if isinstance(tracking_store, str) else tracking_store
        self._tracking_lock = threading.Lock()
        self.load_errors: list[MappingError] = []

        self.parsers: NamedRegistry[Callable[..., Any]] = NamedRegistry("parser")
        self.verifiers: NamedRegistry[Callable[..., bool]] = NamedRegistry("verifier")
        self.sinks: NamedRegistry[Callable[..., Sink]] = NamedRegistry("sink")
        self.tracking_stores: NamedRegistry[Callable[..., Any]] = NamedRegistry("tracking store")
        self._collect("odpmap_register_tracking_stores", self.tracking_stores)
        self._collect("odpmap_register_parsers", self.parsers)
        self._collect("odpmap_register_verifiers", self.verifiers)
        self._collect("odpmap_register_sinks", self.sinks)

        self.env = make_environment([lambda env: self.pm.hook.odpmap_prepare_jinja_environment(env=env)])
        builder = CatalogueBuilder()
        builder.load_builtin()
        self.pm.hook.odpmap_extend_catalogue(catalogue=builder)
        self.catalogue: Catalogue = builder.build()
        self.schema = EventSchema(self.catalogue, allow_sent=allow_sent)
        self.compiler = MappingCompiler(
            self.env,
            self.catalogue,
            parsers=set(self.parsers.names()),
            verifiers=set(self.verifiers.names()),
            resolve=self._resolve_extends,
            allow_sent=allow_sent,
        )
        self._docs: dict[str, tuple[PosDict, str]] = {}
        self._providers: dict[str, ProviderInfo] = {}
        self._load_providers()

    # -- loading ----------------------------------------------------------------------

    def _collect(self, hook_name: str, registry: NamedRegistry[Any]) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            source = self.pm.source_of(impl.plugin_name)

            def register(name: str, value: Any, description: str = "", _source: str = source) -> None:
                registry.add(name, value, source=_source, description=description)

            impl.function(register=register)

    def _load_providers(self) -> None:
        registered: list[tuple[Provider, str]] = []

        for impl in reversed(self.pm.hook.odpmap_register_providers.get_hookimpls()):
            source = self.pm.source_of(impl.plugin_name)

            def register(provider: Any, _source: str = source) -> None:
                if isinstance(provider, (str, PathLike, Traversable)):
                    provider = Provider(mapping=provider)
                if not isinstance(provider, Provider):
                    raise ConfigError(f"{_source}: register() takes a Provider or a mapping path, not {provider!r}")
                registered.append((provider, _source))

            impl.function(register=register)

        # Parse every mapping first, so `extends` can name any provider.
        parsed: list[tuple[Provider, str, PosDict, str]] = []
        sources: dict[str, str] = {}
        for provider, source in registered:
            file = provider.mapping_file()
            if source == self.pm.source_of(_MappingPaths.plugin_name):
                source = f"mapping file {file}"
            try:
                text = provider.mapping_text()
            except OSError as exc:
                self._fail(MappingSyntaxError(f"cannot read mapping: {exc.strerror or exc}", file=file))
                continue
            try:
                doc = load_yaml(text, file)
                if not isinstance(doc, PosDict) or not isinstance(doc.get("provider"), str):
                    raise MappingSyntaxError("a mapping needs a provider: name", file=file, line=1, column=1)
            except MappingError as exc:
                self._fail(exc)
                continue
            name = doc["provider"]
            if provider.name and provider.name != name:
                self._fail(MappingSyntaxError(
                    f"{source} registers provider {provider.name!r} but its mapping says provider: {name!r}", file=file
                ))
                continue
            if name in self._docs:
                first_file, first_source = self._docs[name][1], sources[name]
                raise ConfigError(
                    f"provider {name!r} is defined twice: {first_file} ({first_source}) and {file} ({source})"
                )
            self._docs[name] = (doc, file)
            sources[name] = source
            parsed.append((provider, source, doc, file))

        for provider, source, doc, file in parsed:
            try:
                mapping = self.compiler.compile(doc, file)
                self._providers[mapping.provider] = self._runtime(provider, source, mapping)
            except ConfigError as exc:
                self._fail(exc)

    def _fail(self, exc: ConfigError) -> None:
        if self.strict:
            raise exc
        self.load_errors.append(exc)  # type: ignore[arg-type]

    def _runtime(self, provider: Provider, source: str, mapping: CompiledMapping) -> ProviderInfo:
        if callable(provider.parser):
            parse, parser_name = provider.parser, getattr(provider.parser, "__name__", "custom")
        else:
            parser_name = provider.parser or mapping.parser.name
            parse = self.parsers.get(parser_name)
        verifier_name: str | None
        if callable(provider.verifier):
            verify, verifier_name = provider.verifier, getattr(provider.verifier, "__name__", "custom")
        else:
            verifier_name = provider.verifier or mapping.verify
            verify = self.verifiers.get(verifier_name) if verifier_name else None
            if verify is not None and mapping.verify_options and not provider.verifier:
                verify = functools.partial(verify, **mapping.verify_options)
        samples: Path | Traversable | None = None
        if provider.samples is not None:
            samples = Path(provider.samples) if isinstance(provider.samples, (str, PathLike)) else provider.samples
        elif mapping.samples:
            m = provider.mapping
            base = Path(m).parent if isinstance(m, (str, PathLike)) else _traversable_parent(m)
            if base is not None:
                samples = base / mapping.samples
        return ProviderInfo(
            name=mapping.provider,
            channel=mapping.channel,
            source=source,
            mapping=mapping,
            parse=parse,
            parser_name=parser_name,
            verify=verify,
            verifier_name=verifier_name,
            samples_dir=samples,
            description=mapping.description,
        )

    def _resolve_extends(self, ref: str, from_file: str) -> tuple[PosDict, str]:
        if ref in self._docs:
            return self._docs[ref]
        candidate = Path(from_file).parent / ref
        if candidate.is_file():
            doc = load_yaml(candidate.read_text(encoding="utf-8"), str(candidate))
            if isinstance(doc, PosDict):
                return doc, str(candidate)
        raise MappingSyntaxError(f"extends {ref!r}: no provider or file of that name", file=from_file)

    # -- introspection ---------------------------------------------------------------

    @property
    def providers(self) -> dict[str, ProviderInfo]:
        """Loaded providers by name."""
        return dict(sorted(self._providers.items()))

    def provider(self, name: str) -> ProviderInfo:
        """:raises UnknownProviderError: naming the known providers"""
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProviderError(name, sorted(self._providers)) from None

    def samples(self, name: str) -> list[Sample]:
        """The sample reports a provider ships (sorted by file name)."""
        info = self.provider(name)
        folder = info.samples_dir
        if folder is None or not folder.is_dir():
            return []
        out = []
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            ctype = content_type_for(entry.name)
            if entry.is_file() and ctype is not None:
                out.append(Sample(name, entry.name, entry.read_bytes(), ctype))
        return out

    def lint(self, paths: Iterable[str | PathLike[str]]) -> list[MappingError]:
        """Check mapping files without running them; every problem, with file:line:col."""
        found: list[MappingError] = []
        for path in paths:
            file = str(path)
            try:
                doc = load_yaml(Path(path).read_text(encoding="utf-8"), file)
            except OSError as exc:
                found.append(MappingSyntaxError(f"cannot read: {exc.strerror or exc}", file=file))
                continue
            except MappingError as exc:
                found.append(exc)
                continue
            _, errors = self.compiler.check(doc, file)
            found.extend(sorted(errors, key=lambda e: (e.line or 0, e.column or 0)))
        return found

    # -- mapping ------------------------------------------------------------------------

    def map(
        self,
        provider: str,
        body: bytes | str | Any,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        received_at: float | None = None,
        tracking: Callable[[str], Mapping[str, Any] | None] | None = None,
        only: Collection[int] | None = None,
    ) -> MapResult:
        """Map one report.

        :param provider: the provider's name
        :param body: the raw report (bytes or text), or already-parsed data
            (a dict or a list of items)
        :param content_type: the report's content type (chooses a parser with ``auto``)
        :param headers: request headers (names are compared lower-cased)
        :param received_at: epoch seconds the report was received (default: now)
        :param tracking: ``tracking(message_id) -> dict | None``, campaign tracking
            remembered at send time, looked up with the mapping's ``message_id``
        :param only: map only the items at these positions (replaying one dead letter
            with its whole report); the others are not counted
        :raises UnknownProviderError: no such provider (a configuration error, so it
            raises rather than dead-letters)
        """
        info = self.provider(provider)
        mapping = info.mapping
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        result = MapResult(provider=info.name)
        counts = result.counts

        if isinstance(body, (bytes, bytearray, memoryview, str)):
            raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            try:
                report = self._parse(info, raw, content_type, hdrs)
            except ValueError as exc:
                counts.received = counts.dead_lettered = 1
                result.dead_letters.append(DeadLetter(
                    reason="unparseable", message=f"{info.parser_name} parser: {exc}", provider=info.name,
                    item=raw, content_type=content_type,
                ))
                return result
        else:
            report = body

        base = {
            "report": report,
            "provider": info.name,
            "channel": info.channel,
            "headers": hdrs,
            "received_at": int(received_at if received_at is not None else self.clock()),
            "tables": mapping.tables,
        }
        try:
            items = self._items(mapping, report, base)
        except RenderError as exc:
            counts.received = counts.dead_lettered = 1
            result.dead_letters.append(DeadLetter(
                reason="template_error", message=f"items: {exc}", provider=info.name, item=report,
                content_type=content_type,
            ))
            return result

        if tracking is None and mapping.message_id is not None:
            store = self._tracking_store(create=False)
            if store is not None:
                tracking = lambda message_id: store.recall(info.name, message_id)  # noqa: E731
        seen_ids: dict[Any, int] = {}
        for index, item in enumerate(items):
            if only is not None and index not in only:
                continue
            counts.received += 1
            self._map_item(info, mapping, item, index, base, result, seen_ids, tracking, content_type)
        return result

    def parse(self, provider: str, body: bytes, *, content_type: str | None = None,
              headers: Mapping[str, str] | None = None) -> Any:
        """Parse a raw report with the provider's parser, without mapping it.

        For receivers that must answer ``400`` to a body they cannot read.

        :raises ValueError: the body is not a report this provider's parser can read
        """
        info = self.provider(provider)
        return self._parse(info, bytes(body), content_type, {k.lower(): v for k, v in (headers or {}).items()})

    @staticmethod
    def _parse(info: ProviderInfo, raw: bytes, content_type: str | None, headers: Mapping[str, str]) -> Any:
        return info.parse(raw, content_type=content_type, headers=headers, options=info.mapping.parser.options)

    @staticmethod
    def _items(mapping: CompiledMapping, report: Any, base: Mapping[str, Any]) -> Sequence[Any]:
        selected = report
        if mapping.items is not None:
            selected = _evaluate(mapping.items, {**base, "item": None, "index": None, "vars": {}, "tracking": {}}, None)
        if selected is None:
            return []
        if isinstance(selected, (list, tuple)):
            return selected
        return [selected]

    def _map_item(
        self,
        info: ProviderInfo,
        mapping: CompiledMapping,
        item: Any,
        index: int,
        base: Mapping[str, Any],
        result: MapResult,
        seen_ids: dict[Any, int],
        tracking: Callable[[str], Mapping[str, Any] | None] | None,
        content_type: str | None,
    ) -> None:
        counts = result.counts
        ctx: dict[str, Any] = dict(base)
        ctx["item"] = item
        ctx["index"] = index
        ctx["tracking"] = {}
        ctx["vars"] = _LazyVars(mapping.vars, ctx)
        rule: CompiledRule | None = None
        item_key: str | None = None

        def dead(reason: str, message: str, **details: Any) -> None:
            counts.dead_lettered += 1
            result.dead_letters.append(DeadLetter(
                reason=reason, message=message, provider=info.name, item=item,
                rule_id=rule.id if rule else None, index=index, details=details, content_type=content_type,
            ))

        try:
            if mapping.item_id is not None:
                item_id = _evaluate(mapping.item_id, ctx, None)
                if item_id is not None:
                    key = item_id if isinstance(item_id, (str, int)) else repr(item_id)
                    item_key = str(key)
                    if key in seen_ids:
                        counts.skipped += 1
                        counts.duplicates += 1
                        result.skipped.append(Skipped(
                            info.name, index, "<duplicate>",
                            f"duplicate of item {seen_ids[key]} (id {item_id!r})", item,
                        ))
                        return
                    seen_ids[key] = index
            if tracking is not None and mapping.message_id is not None:
                message_id = _evaluate(mapping.message_id, ctx, None)
                if message_id is not None:
                    ctx["tracking"] = dict(tracking(str(message_id)) or {})

            for candidate in mapping.rules:
                if candidate.when is None or _evaluate(candidate.when, ctx, candidate.id):
                    rule = candidate
                    break
            if rule is None:
                dead("unmapped", f"no rule of {mapping.file} matched this item")
                return
            if rule.skip is not None:
                counts.skipped += 1
                result.skipped.append(Skipped(info.name, index, rule.id, rule.skip, item))
                return
            events = [self._build_event(e, ctx, rule.id) for e in rule.events]
            campaign = self._campaign_fields(mapping, ctx, rule.id)
        except RenderError as exc:
            dead("template_error", str(exc))
            return

        if campaign:
            for event in events:
                for key, value in campaign.items():
                    event["data"].setdefault(key, value)
        if item_key is not None:
            # The same provider event delivered again (a webhook retry, an overlapping
            # pull) gets the same idempotence ids, so the outbox and ODP see one event.
            for n, event in enumerate(events):
                event["data"].setdefault("idempotence_id", idempotence_id(info.name, item_key, n))
        for event in events:
            errors = self.schema.errors(event)
            if errors:
                text = "; ".join(f"{path}: {msg} [{r}]" for path, r, msg in errors)
                dead("invalid_event", f"rule {rule.id!r} ({rule.location}) built an invalid ODP event: {text}",
                     event=event, errors=[list(e) for e in errors])
                return
        counts.mapped += 1
        counts.events += len(events)
        tracking_fields = self.catalogue.campaign_tracking_fields
        for event in events:
            spec = self.catalogue.lookup(event["type"], event["action"])
            if spec is not None and spec.attributable and not any(f in event["data"] for f in tracking_fields):
                counts.unattributed += 1
        result.events.extend(events)

    def _campaign_fields(self, mapping: CompiledMapping, ctx: Mapping[str, Any], rule_id: str) -> dict[str, Any]:
        """Campaign tracking fields for this item: the mapping's ``tracking:`` source
        (provider metadata), falling back to what was remembered at send time."""
        sources: list[Mapping[str, Any]] = []
        if mapping.tracking is not None:
            found = _evaluate(mapping.tracking, ctx, rule_id)
            if isinstance(found, Mapping):
                sources.append(found)
        if ctx.get("tracking"):
            sources.append(ctx["tracking"])
        out: dict[str, Any] = {}
        for name in self.catalogue.campaign_tracking_fields:
            value = next(
                (v for source in sources for v in (source.get(name), source.get(f"odp_{name}")) if v not in (None, "")),
                None,
            )
            if value is not None:
                out[name] = _coerce_field(value, self.catalogue.fields.get(name, {}))
        return out

    @staticmethod
    def _build_event(compiled: Any, ctx: Mapping[str, Any], rule_id: str) -> dict[str, Any]:
        identifiers = {}
        for key, value in compiled.identifiers:
            v = _evaluate(value, ctx, rule_id)
            if v is not None:
                identifiers[key] = v
        data = {}
        for key, value in compiled.data:
            v = _evaluate(value, ctx, rule_id)
            if v is not None:
                data[key] = v
        return {
            "type": _evaluate(compiled.type, ctx, rule_id),
            "action": _evaluate(compiled.action, ctx, rule_id),
            "identifiers": identifiers,
            "data": data,
        }

    # -- campaign tracking ------------------------------------------------------------

    def _tracking_store(self, *, create: bool) -> Any:
        if self._tracking is not None:
            return self._tracking
        if self.data_dir is None:
            if create:
                raise ConfigError(
                    "remembering campaign tracking needs a data directory: Engine(data_dir=...) or ODPMAP_DATA_DIR"
                )
            return None
        db_exists = (self.data_dir / "odpmap.sqlite3").exists()
        if not create and not db_exists and self._tracking_spec == "sqlite":
            return None
        with self._tracking_lock:
            if self._tracking is None:
                factory = self.tracking_stores.get(self._tracking_spec)
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._tracking = factory(self.data_dir)
        return self._tracking

    def remember(self, provider: str, message_id: str, tracking: Mapping[str, Any]) -> None:
        """Remember campaign tracking for a message at send time.

        When the provider's report for ``message_id`` arrives, :meth:`map` adds these
        fields (``campaign``, ``campaign_id``, ``touchpoint_id``, ...; an ``odp_``
        prefix is accepted) to its events. For providers that echo no metadata (Twilio).
        """
        self.provider(provider)
        unknown = [k for k in tracking if k.removeprefix("odp_") not in self.catalogue.campaign_tracking_fields]
        if unknown:
            fields = ", ".join(self.catalogue.campaign_tracking_fields)
            raise ConfigError(f"not campaign tracking fields: {', '.join(sorted(unknown))} (known: {fields})")
        self._tracking_store(create=True).remember(provider, str(message_id), dict(tracking))

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine's store connections (the engine stays usable)."""
        store, self._tracking = self._tracking, (None if isinstance(self._tracking_spec, str) else self._tracking)
        if store is not None and isinstance(self._tracking_spec, str) and hasattr(store, "close"):
            store.close()

    # -- signatures and dispatch ------------------------------------------------------

    def verify(
        self,
        provider: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        secret: str,
        url: str | None = None,
        now: float | None = None,
        scheme: str | None = None,
    ) -> bool:
        """Check a report's signature with the provider's verifier.

        :param scheme: use this registered verifier instead of the provider's own (for
            providers that offer several, e.g. Brevo: bearer token or basic auth)
        :returns: ``False`` for a wrong, missing or stale signature
        :raises ConfigError: the provider has no verifier; ``SignatureConfigError`` for
            misuse such as a malformed key
        """
        info = self.provider(provider)
        verify = self.verifiers.get(scheme) if scheme is not None else info.verify
        if verify is None:
            raise ConfigError(f"provider {provider!r} has no signature verifier")
        hdrs = {k.lower(): v for k, v in headers.items()}
        return bool(verify(bytes(body), hdrs, secret=secret, url=url, now=now))

    def sink(self, name: str, **options: Any) -> Sink:
        """Create a sink registered under ``name`` with its options."""
        factory = self.sinks.get(name)
        try:
            return factory(**options)
        except TypeError as exc:
            raise ConfigError(f"sink {name!r}: {exc}") from exc

    def dispatch(self, events: Sequence[dict[str, Any]], sink: Sink, *, batch_size: int = 100) -> SendReport:
        """Send events to a sink in batches; rejected indexes refer to ``events``."""
        total = SendReport(sent=0)
        for start in range(0, len(events), batch_size):
            batch = events[start : start + batch_size]
            report = sink.send(batch)
            total.sent += report.sent
            total.rejected.extend((start + i, msg) for i, msg in report.rejected)
        return total


_IDEMPOTENCE_NAMESPACE = uuid.UUID("5c1e3a52-5b55-4b8e-9d5e-0d0f6d1b7a31")


def idempotence_id(provider: str, item_id: str, n: int) -> str:
    """A stable ``data.idempotence_id`` for the ``n``-th event of a provider's item."""
    return str(uuid.uuid5(_IDEMPOTENCE_NAMESPACE, f"{provider}\x1f{item_id}\x1f{n}"))


def _coerce_field(value: Any, rules: Mapping[str, Any]) -> Any:
    """Provider metadata arrives as text; numeric tracking fields become ints when they
    are whole numbers (anything else is left for validation to report)."""
    if rules.get("type") in ("integer", "epoch_seconds") and isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
    if rules.get("type") == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _traversable_parent(t: Traversable) -> Traversable | None:
    parent = getattr(t, "parent", None)
    if parent is not None:
        return parent  # type: ignore[no-any-return]
    return None


