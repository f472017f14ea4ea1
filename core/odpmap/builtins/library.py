"""The mapping library: every YAML file in ``odpmap.mappings`` is a provider.

These providers need no code: each is one mapping file using built-in parsers,
filters and verifiers (see docs/mapping-reference.md).
"""

from __future__ import annotations

from importlib.resources import files

from ..hookspecs import hookimpl
from ..registry import Provider, Register


@hookimpl
def odpmap_register_providers(register: Register) -> None:
    library = files("odpmap.mappings")
    for entry in sorted(library.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")) and entry.is_file():
            register(Provider(mapping=entry))
