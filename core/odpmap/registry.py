"""Providers and the registries the engine fills from plugin hooks.

Each registry records which plugin registered each entry, so ``odpmap providers`` can
say where a provider comes from and a duplicate names both sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .errors import ConfigError

__all__ = ["NamedRegistry", "Provider", "Register"]

T = TypeVar("T")


class Register(Protocol):
    """The ``register`` callback a registration hook receives."""

    def __call__(self, *args: Any, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class Provider:
    """A provider: a YAML mapping plus optional code.

    :param mapping: the provider's mapping file (a path, or a
        :class:`~importlib.resources.abc.Traversable` from package data). Its
        ``provider:`` and ``channel:`` keys name the provider.
    :param parser: a parser name (``"json"``) or callable
        ``parse(body, *, content_type, headers, options)``, overriding the mapping's
        ``parser:``
    :param verifier: a verifier scheme name (``"mailgun"``) or callable
        ``verify(body, headers, *, secret, url, now) -> bool``, overriding ``verify:``
    :param samples: a folder of sample reports (package data), used by ``odpmap demo``
        and conformance tests; overrides the mapping's ``samples:``
    :param name: if given, must equal the mapping's ``provider:``

    .. versionadded:: 0.1
    """

    mapping: str | PathLike[str] | Traversable
    parser: str | Callable[..., Any] | None = None
    verifier: str | Callable[..., Any] | None = None
    samples: str | PathLike[str] | Traversable | None = None
    name: str | None = None

    def mapping_text(self) -> str:
        m = self.mapping
        return (Path(m) if isinstance(m, (str, PathLike)) else m).read_text(encoding="utf-8")

    def mapping_file(self) -> str:
        """A readable name of the mapping file for messages (its path)."""
        return str(self.mapping)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    source: str
    description: str = ""


class NamedRegistry(Generic[T]):
    """Name -> value, remembering the registering plugin. Duplicates are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, *, source: str, description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries:
            first = self._entries[name].source
            raise ConfigError(f"{self.kind} {name!r} is registered twice: by {first} and by {source}")
        self._entries[name] = Entry(name, value, source, description)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].value
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]
