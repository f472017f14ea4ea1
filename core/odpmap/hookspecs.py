"""Hook specifications: the whole plugin API of odpmap.

Quick start for plugin authors. A plugin is a module (or object) with functions marked
``@hookimpl``, registered through the ``odpmap.plugins`` entry-point group::

    # pyproject.toml of odpmap-acme
    [project.entry-points."odpmap.plugins"]
    acme = "odpmap_acme"

    # odpmap_acme/__init__.py
    from importlib.resources import files
    from odpmap import Provider, hookimpl

    @hookimpl
    def odpmap_register_providers(register):
        register(Provider(mapping=files("odpmap_acme") / "acme.yaml"))

Every hook name starts with ``odpmap_``. Registries use a ``register`` callback, so the
engine validates and de-duplicates at registration time and knows which plugin
registered what. odpmap's own providers, parsers, filters, verifiers and sinks are
registered through these same hooks (see :data:`odpmap.plugins.DEFAULT_PLUGINS`).

Hooks evolve by adding arguments; implementations may accept a subset of them.
Reference with examples: docs/plugin-hooks.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import jinja2

    from .catalogue import CatalogueBuilder
    from .registry import Register

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("odpmap")
hookimpl = pluggy.HookimplMarker("odpmap")


# --- registration ------------------------------------------------------------------


@hookspec
def odpmap_register_providers(register: Register) -> None:
    """Register providers: ``register(provider)``.

    Called once when an :class:`~odpmap.Engine` is built. ``provider`` is an
    :class:`odpmap.Provider`, or a path / :class:`importlib.resources.abc.Traversable`
    of a YAML mapping file (a provider that needs no code). Registering a name twice is
    a :class:`~odpmap.errors.ConfigError` naming both sources.

    :param register: callback taking a ``Provider`` or a mapping path

    .. versionadded:: 0.1
    """


@hookspec
def odpmap_register_parsers(register: Register) -> None:
    """Register report parsers by name: ``register(name, parse)``.

    ``parse(body: bytes, *, content_type: str | None, headers: Mapping[str, str],
    options: Mapping[str, Any]) -> Any`` turns a raw report body into Python data (a
    dict, a list of items, ...). Raise :class:`ValueError` for a body that cannot be
    parsed; the engine turns it into an ``unparseable`` dead letter. A mapping picks a
    parser with ``parser: NAME`` (or ``parser: {name: NAME, options: {...}}``).

    .. versionadded:: 0.1
    """


@hookspec
def odpmap_register_verifiers(register: Register) -> None:
    """Register signature verifiers by scheme name: ``register(name, verify)``.

    ``verify(body: bytes, headers: Mapping[str, str], *, secret: str, url: str | None,
    now: float | None) -> bool``; ``headers`` have lower-cased names. Return ``False``
    for a wrong, missing or stale signature; raise
    :class:`~odpmap.errors.SignatureConfigError` only for misuse (malformed key). A
    provider names its scheme with ``verify: NAME`` in its mapping or
    ``Provider(verifier=...)``; :meth:`odpmap.Engine.verify` calls it.

    .. versionadded:: 0.1
    """


@hookspec
def odpmap_register_sinks(register: Register) -> None:
    """Register event sinks by name: ``register(name, factory, description="")``.

    ``factory(**options)`` returns an object implementing :class:`odpmap.sinks.Sink`.
    :meth:`odpmap.Engine.sink` and ``odpmap map --sink NAME`` create sinks by name.

    .. versionadded:: 0.1
    """


@hookspec
def odpmap_register_tracking_stores(register: Register) -> None:
    """Register campaign tracking stores by name: ``register(name, factory)``.

    ``factory(data_dir: pathlib.Path, **options)`` returns an object with
    ``remember(provider, message_id, tracking: dict) -> None`` and
    ``recall(provider, message_id) -> dict | None``. :meth:`odpmap.Engine.remember`
    writes to the engine's store at send time; :meth:`odpmap.Engine.map` looks the
    mapping's ``message_id`` up in it when a report arrives. The built-in ``sqlite``
    store keeps them in the data directory's database.

    .. versionadded:: 0.1
    """


@hookspec
def odpmap_register_pullers(register: Register) -> None:
    """Register report pullers, for providers whose API lists events:
    ``register(provider_name, factory, description="")``.

    ``factory(**options)`` returns an object implementing :class:`odpmap.pull.Puller`:
    ``pull(cursor)`` yields :class:`odpmap.pull.Page` objects (a raw page that the
    provider's mapping reads, and the cursor to resume from once it is stored), and
    raises :class:`odpmap.pull.PullError` when the API fails. The factory's keyword
    parameters are its options: ``odpmap pull --provider NAME`` passes ``--option
    KEY=VALUE`` and the environment variables ``ODPMAP_<PROVIDER>_<KEY>`` (a parameter
    without a default is required), and ``since``/``until`` (epoch seconds) when given.
    :func:`odpmap.pull.run_pull` then stores each page's events, dead letters and cursor
    in one transaction, under an exclusive lock (see docs/pull.md).
    :func:`odpmap.pull.collect_pullers` returns an engine's registrations.

    .. versionadded:: 0.1
    """


# --- templating --------------------------------------------------------------------


@hookspec
def odpmap_prepare_jinja_environment(env: jinja2.Environment) -> None:
    """Add filters, tests or globals to a new Jinja environment.

    Called once per engine, before any mapping is compiled; mutate ``env.filters``,
    ``env.tests`` and ``env.globals`` in place. Filters are pure functions of their
    arguments: they run inside the sandbox on every report item.

    .. versionadded:: 0.1
    """


# --- validation --------------------------------------------------------------------


@hookspec
def odpmap_extend_catalogue(catalogue: CatalogueBuilder) -> None:
    """Extend the ODP event catalogue and the event schema.

    ``catalogue`` offers ``add_channel_types(*names)``, ``add_event(type, actions,
    category=..., required=..., allowed=...)``, ``add_identifier(name, rules)`` and
    ``add_field(name, rules)`` (cerberus rules as a dict), and ``load(path)`` for a
    catalogue fragment in YAML. Called once per engine, after odpmap's own catalogue
    is loaded; the schema is checked by cerberus once all plugins have run.

    .. versionadded:: 0.1
    """


# --- command line -------------------------------------------------------------------


@hookspec
def odpmap_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``odpmap`` command line: ``cli.add_command(...)``.

    Called once when the CLI starts, with the plugins the CLI's engine loaded.

    .. versionadded:: 0.1
    """


# All hook names, for documentation and meta-tests.
HOOK_NAMES: tuple[str, ...] = tuple(
    sorted(name for name, obj in dict(globals()).items() if name.startswith("odpmap_") and callable(obj))
)

