"""Building an engine's plugin manager: one per engine, never module-global.

Loading order (as tox does it):

1. plugins the embedding application passes explicitly (``Engine(plugins=[...])``);
2. external plugins from the ``odpmap.plugins`` entry-point group, unless
   ``autoload=False``; an allowlist (``load_plugins=`` or ``ODPMAP_LOAD_PLUGINS=a,b``;
   an empty value loads none) and a blocklist (``block_plugins=`` or
   ``ODPMAP_BLOCK_PLUGINS=a,b``) filter them by entry-point name;
3. odpmap's own plugins, :data:`DEFAULT_PLUGINS`, through the same ``register`` path;
4. ``pm.check_pending()``: a hook implementation with no matching spec is an error.

A plugin that fails to import or register raises :class:`~odpmap.errors.PluginLoadError`
naming the plugin and its distribution. ``ODPMAP_TRACE_PLUGINS=1`` prints every hook call
to standard error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginManager", "make_plugin_manager"]

ENTRY_POINT_GROUP = "odpmap.plugins"

#: odpmap's own plugins, registered like any other.
DEFAULT_PLUGINS = (
    "odpmap.builtins.filters",
    "odpmap.builtins.parsers",
    "odpmap.builtins.verifiers",
    "odpmap.builtins.sinks",
    "odpmap.builtins.library",
    "odpmap.builtins.pull",
)

BUILTIN_SOURCE = "odpmap (built-in)"


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which distribution each plugin came from."""

    def __init__(self) -> None:
        super().__init__("odpmap")
        self.dists: dict[str, str | None] = {}

    def source_of(self, plugin_name: str) -> str:
        """Where a plugin comes from: ``"odpmap-sendgrid 0.1.0"``, built-in, or its name."""
        if plugin_name in DEFAULT_PLUGINS:
            return BUILTIN_SOURCE
        return self.dists.get(plugin_name) or f"plugin {plugin_name}"


def _env_list(name: str, environ: Mapping[str, str]) -> list[str] | None:
    value = environ.get(name)
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def make_plugin_manager(
    *,
    plugins: Iterable[Any] = (),
    autoload: bool = True,
    load_plugins: Iterable[str] | None = None,
    block_plugins: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> PluginManager:
    """A new plugin manager with odpmap's hookspecs and plugins loaded.

    :param plugins: plugin modules or objects to register first
    :param autoload: load plugins from the ``odpmap.plugins`` entry points
    :param load_plugins: allowlist of entry-point names (``None``: all; default from
        ``ODPMAP_LOAD_PLUGINS``)
    :param block_plugins: entry-point names never to load (added to
        ``ODPMAP_BLOCK_PLUGINS``)
    :param environ: environment to read the variables from (default ``os.environ``)
    """
    environ = os.environ if environ is None else environ
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)

    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "plugin_name", None) or getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        _register(pm, plugin, name, dist=None)

    if autoload:
        allow = list(load_plugins) if load_plugins is not None else _env_list("ODPMAP_LOAD_PLUGINS", environ)
        blocked = set(block_plugins) | set(_env_list("ODPMAP_BLOCK_PLUGINS", environ) or ())
        for name in blocked:
            pm.set_blocked(name)
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if (allow is not None and ep.name not in allow) or pm.is_blocked(ep.name):
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else None
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure of third-party code
                raise PluginLoadError(
                    f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}", plugin=ep.name, dist=dist
                ) from exc
            _register(pm, plugin, ep.name, dist=dist)

    for modname in DEFAULT_PLUGINS:
        if pm.is_blocked(modname):
            continue
        _register(pm, importlib.import_module(modname), modname, dist=None)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or getattr(exc.plugin, "__name__", repr(exc.plugin))
        raise PluginLoadError(str(exc), plugin=name, dist=pm.dists.get(name)) from exc

    if environ.get("ODPMAP_TRACE_PLUGINS"):
        def before(hook_name: str, impls: Any, kwargs: Any) -> None:
            print(f"odpmap: hook {hook_name} -> {[i.plugin_name for i in impls]}", file=sys.stderr)

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            pass

        pm.add_hookcall_monitoring(before, after)
    return pm


def _register(pm: PluginManager, plugin: Any, name: str, *, dist: str | None) -> None:
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginLoadError(str(exc), plugin=name, dist=dist) from exc
    pm.dists[name] = dist
