"""The ODP event catalogue: which (type, action) pairs exist and what they require.

The catalogue is versioned data (``schemas/catalogue.yaml``), not code. An engine builds
its own :class:`Catalogue` from that file plus what plugins add through the
``odpmap_extend_catalogue`` hook (:class:`CatalogueBuilder`), so two engines with
different plugins never see each other's additions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import cerberus
import yaml

from .errors import SchemaDefinitionError

__all__ = ["CHANNEL", "Catalogue", "CatalogueBuilder", "EventSpec"]

#: Placeholder type meaning "the channel type" in catalogue entries.
CHANNEL = "@channel"

_ALLOWED_FIELD_TYPES = {"string", "integer", "number", "boolean", "epoch_seconds"}

_NAMES = {"type": "list", "schema": {"type": "string", "empty": False}}
# The shape of a catalogue fragment (catalogue.yaml and plugin files), checked by
# cerberus before anything of it is merged.
_FRAGMENT_SCHEMA: dict[str, Any] = {
    "version": {"type": "integer", "min": 1},
    "channel_types": _NAMES,
    "events": {
        "type": "list",
        "schema": {
            "type": "dict",
            "schema": {
                "category": {"type": "string"},
                "type": {"type": "string", "required": True, "empty": False},
                "actions": {**_NAMES, "required": True, "minlength": 1},
                "required": _NAMES,
                "allowed": {"type": "dict", "valuesrules": {"type": "list"}},
                "platform_generated": {"type": "boolean"},
                "attributable": _NAMES,
            },
        },
    },
    "identifiers": {"type": "dict", "valuesrules": {"type": "dict", "nullable": True}},
    "custom_identifier_suffixes": _NAMES,
    "fields": {"type": "dict", "valuesrules": {"type": "dict", "nullable": True}},
    "campaign_tracking_fields": _NAMES,
}


@dataclass(frozen=True)
class EventSpec:
    """One (type, action) the catalogue allows."""

    category: str
    type: str
    action: str
    required: tuple[str, ...] = ()
    allowed: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    platform_generated: bool = False
    attributable: bool = False


@dataclass(frozen=True)
class Catalogue:
    """An immutable catalogue, built by :class:`CatalogueBuilder`."""

    version: int
    channel_types: frozenset[str]
    events: tuple[EventSpec, ...]
    identifiers: Mapping[str, Mapping[str, Any]]
    custom_identifier_suffixes: tuple[str, ...]
    fields: Mapping[str, Mapping[str, Any]]
    campaign_tracking_fields: tuple[str, ...]

    def lookup(self, type_: str, action: str) -> EventSpec | None:
        """The spec for ``type_``/``action``: an entry for that type first, then, for a
        channel type, the ``@channel`` entries."""
        spec = self._index.get((type_, action))
        if spec is None and type_ in self.channel_types:
            spec = self._index.get((CHANNEL, action))
        return spec

    @property
    def _index(self) -> dict[tuple[str, str], EventSpec]:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {(e.type, e.action): e for e in self.events}
            object.__setattr__(self, "_idx", idx)
        return idx

    def actions_for(self, type_: str, *, platform_generated: bool = False) -> list[str]:
        """The actions of ``type_``; those ODP generates itself only if asked."""
        keys = {type_, CHANNEL} if type_ in self.channel_types else {type_}
        return sorted({a for (t, a), spec in self._index.items()
                       if t in keys and (platform_generated or not spec.platform_generated)})

    def event_types(self) -> set[str]:
        """All concrete ``type`` values: channel types plus fixed types (consent, list, ...)."""
        return set(self.channel_types) | {e.type for e in self.events if e.type != CHANNEL}

    def identifier_allowed(self, name: str) -> bool:
        return name in self.identifiers or name.endswith(self.custom_identifier_suffixes)

    def messaging_identifiers(self) -> list[str]:
        return [k for k, v in self.identifiers.items() if v.get("messaging")]


class CatalogueBuilder:
    """Collects the catalogue: odpmap's own file, then what plugins add.

    Plugins receive one in ``odpmap_extend_catalogue(catalogue)``.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {
            "version": 1,
            "channel_types": [],
            "events": [],
            "identifiers": {},
            "custom_identifier_suffixes": [],
            "fields": {},
            "campaign_tracking_fields": [],
        }
        self._source = "a plugin's catalogue extension"

    # -- loading -------------------------------------------------------------------

    def load_builtin(self) -> None:
        """Load odpmap's own catalogue (``odpmap/schemas/catalogue.yaml``)."""
        res = files("odpmap") / "schemas" / "catalogue.yaml"
        self.load_text(res.read_text(encoding="utf-8"), source="odpmap/schemas/catalogue.yaml")

    def load(self, path: str | Path) -> None:
        """Merge a catalogue fragment from a YAML file (same keys as the built-in one)."""
        self.load_text(Path(path).read_text(encoding="utf-8"), source=str(path))

    def load_text(self, text: str, *, source: str) -> None:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise SchemaDefinitionError(f"invalid YAML: {exc}", schema="catalogue", source=source) from exc
        if not isinstance(data, dict):
            raise SchemaDefinitionError("a catalogue fragment must be a mapping", schema="catalogue", source=source)
        unknown = set(data) - set(self._data)
        if unknown:
            raise SchemaDefinitionError(f"unknown keys {sorted(unknown)}", schema="catalogue", source=source)
        validator = cerberus.Validator(_FRAGMENT_SCHEMA)
        if not validator.validate(data):
            raise SchemaDefinitionError("; ".join(_flatten_errors(validator.errors)), schema="catalogue", source=source)
        previous, self._source = self._source, source
        try:
            self._merge(data)
        finally:
            self._source = previous

    def _merge(self, data: dict[str, Any]) -> None:
        if "version" in data:
            self._data["version"] = max(self._data["version"], int(data["version"]))
        self.add_channel_types(*data.get("channel_types", ()))
        for entry in data.get("events", ()):
            entry = dict(entry)
            type_ = entry.pop("type", None)
            actions = entry.pop("actions", None)
            self.add_event(type_, actions, **entry)
        for name, rules in (data.get("identifiers") or {}).items():
            self.add_identifier(name, rules or {})
        self._data["custom_identifier_suffixes"].extend(data.get("custom_identifier_suffixes", ()))
        for name, rules in (data.get("fields") or {}).items():
            self.add_field(name, rules or {})
        self._data["campaign_tracking_fields"].extend(data.get("campaign_tracking_fields", ()))

    # -- the public builder API (used by plugins) -----------------------------------

    def add_channel_types(self, *names: str) -> None:
        """Allow more channel types (e.g. ``"rcs"``)."""
        for name in names:
            if name not in self._data["channel_types"]:
                self._data["channel_types"].append(name)

    def add_event(
        self,
        type: str,  # noqa: A002 - the ODP field name
        actions: Iterable[str],
        *,
        category: str = "custom",
        required: Iterable[str] = (),
        allowed: Mapping[str, Iterable[Any]] | None = None,
        platform_generated: bool = False,
        attributable: Iterable[str] = (),
    ) -> None:
        """Allow ``type`` with each of ``actions``. ``type="@channel"`` means every channel type."""
        attributable = set(attributable)
        for action in actions:
            self._data["events"].append(
                EventSpec(
                    category=category,
                    type=type,
                    action=action,
                    required=tuple(required),
                    allowed={k: tuple(v) for k, v in (allowed or {}).items()},
                    platform_generated=platform_generated,
                    attributable=action in attributable,
                )
            )

    def add_identifier(self, name: str, rules: Mapping[str, Any]) -> None:
        """Declare an identifier; ``rules`` may hold ``format`` (email, e164) and ``messaging``."""
        self._data["identifiers"][name] = dict(rules)

    def add_field(self, name: str, rules: Mapping[str, Any]) -> None:
        """Declare a data field with its ``type`` (string, integer, number, boolean, epoch_seconds)."""
        rules = dict(rules)
        if rules.get("type", "string") not in _ALLOWED_FIELD_TYPES:
            raise SchemaDefinitionError(
                f"field {name!r}: type must be one of {sorted(_ALLOWED_FIELD_TYPES)}",
                schema="catalogue",
                source=self._source,
            )
        self._data["fields"][name] = rules

    def build(self) -> Catalogue:
        d = copy.deepcopy(self._data)
        # Later entries for the same (type, action) replace earlier ones.
        events: dict[tuple[str, str], EventSpec] = {}
        for spec in d["events"]:
            events[(spec.type, spec.action)] = spec
        return Catalogue(
            version=d["version"],
            channel_types=frozenset(d["channel_types"]),
            events=tuple(events.values()),
            identifiers=d["identifiers"],
            custom_identifier_suffixes=tuple(dict.fromkeys(d["custom_identifier_suffixes"])),
            fields=d["fields"],
            campaign_tracking_fields=tuple(dict.fromkeys(d["campaign_tracking_fields"])),
        )


def _flatten_errors(tree: Any, path: str = "") -> list[str]:
    """cerberus' nested error tree as ``events[0].actions: required field`` lines."""
    out: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            step = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
            out.extend(_flatten_errors(value, step))
    elif isinstance(tree, list):
        for entry in tree:
            out.extend(_flatten_errors(entry, path) if isinstance(entry, (dict, list)) else [f"{path}: {entry}"])
    return out
