"""The odpmap exception hierarchy.

Every error odpmap raises on purpose is an :class:`OdpmapError`. Catch by layer::

    OdpmapError
    ├── ConfigError                 configuration: fix a file or an argument, then retry
    │   ├── PluginLoadError         a plugin failed to import or register (plugin, dist)
    │   ├── LocatedError            a mistake at file:line:col (file, line, column, pointer)
    │   │   ├── MappingError        a mapping file is wrong
    │   │   │   ├── MappingSyntaxError  YAML parse error, duplicate key, bad structure
    │   │   │   └── TemplateError       a Jinja template in a mapping
    │   │   │       ├── TemplateSyntaxError     (+ template_lineno)
    │   │   │       └── TemplateUndefinedError  (variable name)
    │   │   └── ConfigFileError     the receiver's configuration file (odpmap.config)
    │   ├── SchemaDefinitionError   an event schema or catalogue fragment is wrong
    │   ├── UnknownProviderError    no provider of that name is registered
    │   └── SignatureConfigError    a verifier was misused (malformed key, missing header name)
    └── ProcessingError             processing one report or event
        ├── RenderError             a template failed while mapping an item (rule, location)
        ├── EventValidationError    an event does not satisfy the ODP schema
        └── DispatchError           a sink could not deliver a batch (retryable or not)

``str()`` of a :class:`MappingError` is compiler style, ``file:line:col: message``, so
editors and CI logs can jump to the spot.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DispatchError",
    "EventValidationError",
    "LocatedError",
    "MappingError",
    "MappingSyntaxError",
    "OdpmapError",
    "PluginLoadError",
    "ProcessingError",
    "RenderError",
    "SchemaDefinitionError",
    "SignatureConfigError",
    "TemplateError",
    "TemplateSyntaxError",
    "TemplateUndefinedError",
    "UnknownProviderError",
]


class OdpmapError(Exception):
    """Base class of every error odpmap raises on purpose."""


class ConfigError(OdpmapError):
    """Configuration is wrong: a plugin, a mapping, a schema, an argument."""


class PluginLoadError(ConfigError):
    """A plugin could not be imported or registered.

    :ivar plugin: the entry-point (plugin) name
    :ivar dist: the distribution that declares it, ``name version``, when known
    """

    def __init__(self, message: str, *, plugin: str, dist: str | None = None) -> None:
        self.plugin = plugin
        self.dist = dist
        where = f"plugin {plugin!r}" + (f" (distribution {dist})" if dist else "")
        super().__init__(f"{where}: {message}")


class LocatedError(ConfigError):
    """A mistake at a place in a file: ``str()`` is ``file:line:col: pointer: message``.

    :ivar file: path of the file (or a descriptive name)
    :ivar line: 1-based line, or ``None`` when unknown
    :ivar column: 1-based column, or ``None``
    :ivar pointer: where in the document, e.g. ``rules[2].emit.data.ts``
    """

    #: What ``file`` reads as when it is not known.
    unknown_file = "<file>"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        pointer: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.pointer = pointer
        super().__init__(self.format())

    def location(self) -> str:
        parts = [self.file or self.unknown_file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def format(self) -> str:
        where = f"{self.pointer}: " if self.pointer else ""
        return f"{self.location()}: {where}{self.message}"


class MappingError(LocatedError):
    """A mapping file is wrong. Carries the location of the mistake."""

    unknown_file = "<mapping>"


class MappingSyntaxError(MappingError):
    """The mapping file is not valid YAML, has a duplicate key or a wrong structure."""


class TemplateError(MappingError):
    """A Jinja template inside a mapping is wrong."""


class TemplateSyntaxError(TemplateError):
    """A template does not parse. ``template_lineno`` is the line inside the template."""

    def __init__(self, message: str, *, template_lineno: int | None = None, **kw: Any) -> None:
        self.template_lineno = template_lineno
        super().__init__(message, **kw)


class TemplateUndefinedError(TemplateError):
    """A template uses a variable that the mapping context does not define."""

    def __init__(self, message: str, *, variable: str | None = None, **kw: Any) -> None:
        self.variable = variable
        super().__init__(message, **kw)


class SchemaDefinitionError(ConfigError):
    """An event schema or catalogue fragment is not valid (names the schema and source)."""

    def __init__(self, message: str, *, schema: str, source: str | None = None) -> None:
        self.schema = schema
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}schema {schema!r}: {message}")


class UnknownProviderError(ConfigError):
    """No provider of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        hint = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown provider {name!r} (known: {hint})")


class SignatureConfigError(ConfigError, ValueError):
    """A signature verifier was misused: malformed key or certificate, no secret, bad URL.

    A *wrong* signature is not an error: the verifier returns ``False``.
    """


class ProcessingError(OdpmapError):
    """Processing a report, an item or an event failed."""


class RenderError(ProcessingError):
    """A template failed while an item was mapped.

    :ivar location: ``file:line:col`` of the template in its mapping
    :ivar rule_id: the rule being applied, or ``None`` for defaults and item extraction
    """

    def __init__(self, message: str, *, location: str, rule_id: str | None = None) -> None:
        self.message = message
        self.location = location
        self.rule_id = rule_id
        rule = f" (rule {rule_id!r})" if rule_id else ""
        super().__init__(f"{location}: {message}{rule}")


class EventValidationError(ProcessingError):
    """An event does not satisfy the ODP event schema.

    :ivar event: the offending event
    :ivar errors: list of ``(field_path, rule, message)``
    """

    def __init__(self, event: dict[str, Any], errors: list[tuple[str, str, str]]) -> None:
        self.event = event
        self.errors = errors
        text = "; ".join(f"{path}: {msg} [{rule}]" for path, rule, msg in errors)
        super().__init__(f"invalid ODP event: {text}")


class DispatchError(ProcessingError):
    """A sink could not deliver a batch.

    :ivar retryable: ``True`` when sending the same batch again later may succeed
    """

    def __init__(self, message: str, *, sink: str, retryable: bool) -> None:
        self.sink = sink
        self.retryable = retryable
        super().__init__(f"sink {sink!r}: {message}")
