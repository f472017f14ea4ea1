"""The configuration file of the production delivery path (``odpmap serve``, ``dispatch``, ...).

One YAML file, validated with a cerberus schema; every value has a default, so odpmap
runs without any file (data in ``./.odpmap``, events to standard output)::

    data_dir: /var/lib/odpmap          # relative paths are relative to this file
    mappings: [mappings]               # extra mapping files or folders
    plugins: {autoload: true, load: [sendgrid], block: []}
    server: {host: 0.0.0.0, port: 8000, max_body_bytes: 5242880, trust_proxy_headers: false}
    store: {synchronous: FULL}
    sink: {name: odp, options: {}}
    odp: {api_key_env: ODPMAP_ODP_API_KEY, base_url: null, batch_size: 100, timeout: 10}
    providers:
      sendgrid: {secret_env: SENDGRID_WEBHOOK_PUBLIC_KEY}
    dispatch: {in_process: true, batch_size: 100, idle_sleep: 1.0}
    worker: {batch_size: 50, idle_sleep: 1.0}

**Secrets come only from environment variables.** The file names the variable
(``secret_env``, ``api_key_env``), never the value, so it can be committed. A provider
that names a variable which is not set is a configuration error (unless the command
needs no secrets, like ``odpmap status``).

Errors are :class:`ConfigFileError` (a :class:`~odpmap.errors.ConfigError`) in compiler
style, ``odpmap.yaml:12:5: server.port: must be of integer type``, one per problem.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cerberus

from .errors import ConfigError, LocatedError, MappingError, SignatureConfigError
from .mapping.loader import Pos, PosDict, load_yaml, position_of

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_MAX_BODY_BYTES",
    "CONFIG_SCHEMA",
    "Config",
    "ConfigFileError",
    "DispatchConfig",
    "OdpConfig",
    "PluginsConfig",
    "ProviderConfig",
    "ServerConfig",
    "SinkConfig",
    "WorkerConfig",
    "check_providers",
    "load_config",
]

#: The data directory when neither the file nor ``ODPMAP_DATA_DIR`` names one.
DEFAULT_DATA_DIR = ".odpmap"
#: The largest webhook body accepted by default (5 MiB).
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: The cerberus schema of the configuration file.
CONFIG_SCHEMA: dict[str, Any] = {
    "data_dir": {"type": "string", "empty": False, "nullable": True},
    "mappings": {"type": "list", "schema": {"type": "string", "empty": False}},
    "plugins": {
        "type": "dict",
        "schema": {
            "autoload": {"type": "boolean"},
            "load": {"type": "list", "nullable": True, "schema": {"type": "string"}},
            "block": {"type": "list", "schema": {"type": "string"}},
        },
    },
    "server": {
        "type": "dict",
        "schema": {
            "host": {"type": "string", "empty": False},
            "port": {"type": "integer", "min": 0, "max": 65535},
            "max_body_bytes": {"type": "integer", "min": 1},
            "trust_proxy_headers": {"type": "boolean"},
            "log_level": {
                "type": "string",
                "allowed": ["critical", "error", "warning", "info", "debug"],
            },
            "access_log": {"type": "boolean"},
        },
    },
    "store": {
        "type": "dict",
        "schema": {"synchronous": {"type": "string", "allowed": ["FULL", "NORMAL"]}},
    },
    "sink": {
        "type": "dict",
        "schema": {
            "name": {"type": "string", "empty": False},
            "options": {"type": "dict", "keysrules": {"type": "string", "regex": r"^[a-z_][a-z0-9_]*$"}},
        },
    },
    "odp": {
        "type": "dict",
        "schema": {
            "api_key_env": {"type": "string", "regex": _ENV_NAME},
            "base_url": {"type": "string", "nullable": True, "regex": r"^https?://[^\s/]+.*$"},
            "batch_size": {"type": "integer", "min": 1, "max": 500},
            "timeout": {"type": "number", "min": 0.001},
            "max_retries": {"type": "integer", "min": 0},
        },
    },
    "providers": {
        "type": "dict",
        "keysrules": {"type": "string", "empty": False},
        "valuesrules": {
            "type": "dict",
            "nullable": True,
            "schema": {
                "secret_env": {"type": "string", "regex": _ENV_NAME},
                "fetch_certificate": {"type": "boolean"},
                "methods": {
                    "type": "list",
                    "empty": False,
                    "schema": {"type": "string", "allowed": ["GET", "POST"]},
                },
                "content_types": {"type": "list", "schema": {"type": "string", "empty": False}},
                "topic_arns": {
                    "type": "list",
                    "empty": False,
                    "schema": {"type": "string", "regex": r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+"},
                },
            },
        },
    },
    "dispatch": {
        "type": "dict",
        "schema": {
            "in_process": {"type": "boolean"},
            "batch_size": {"type": "integer", "min": 1},
            "idle_sleep": {"type": "number", "min": 0},
            "error_sleep": {"type": "number", "min": 0},
        },
    },
    "worker": {
        "type": "dict",
        "schema": {
            "batch_size": {"type": "integer", "min": 1},
            "idle_sleep": {"type": "number", "min": 0},
            "max_attempts": {"type": "integer", "min": 1},
        },
    },
}


class ConfigFileError(LocatedError):
    """A configuration file is wrong: ``file:line:col: key: message``.

    :ivar key: the dotted key, e.g. ``providers.sendgrid.secret_env`` (also ``pointer``)
    :ivar all_errors: every problem found (this one first), for a report of all of them
    """

    unknown_file = "<config>"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
    ) -> None:
        self.key = key
        self.all_errors: list[ConfigFileError] = [self]
        super().__init__(message, file=file, line=line, column=column, pointer=key)


@dataclass(frozen=True)
class ServerConfig:
    """``server:`` — the webhook receiver's HTTP server."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    trust_proxy_headers: bool = False
    log_level: str = "info"
    access_log: bool = True


@dataclass(frozen=True)
class SinkConfig:
    """``sink:`` — where events go: ``odp`` (the events API) or any registered sink."""

    name: str = "stdout"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OdpConfig:
    """``odp:`` — options of the ODP sink; the API key is read from ``api_key_env``."""

    api_key_env: str = "ODPMAP_ODP_API_KEY"
    base_url: str | None = None
    batch_size: int = 100
    timeout: float = 10.0
    max_retries: int = 5


@dataclass(frozen=True)
class ProviderConfig:
    """``providers.<name>:`` — how the receiver accepts one provider's webhooks.

    :ivar secret: the value of ``secret_env`` (``None`` when no variable is named or it
        was not resolved); ``"fetch"`` with ``fetch_certificate`` (Amazon SNS)
    :ivar methods: HTTP methods accepted (``None``: POST, and GET for providers whose
        parser reads query strings)
    :ivar content_types: accepted media types (``None``: whatever the parser reads)
    :ivar topic_arns: Amazon SNS topics accepted (``None``: any). A valid SNS signature
        proves only that SNS sent the message, not that it is *your* topic: anyone can
        subscribe their own topic to a public endpoint. Set this for every SNS provider.
    """

    name: str
    secret_env: str | None = None
    secret: str | None = field(default=None, repr=False)
    fetch_certificate: bool = False
    methods: tuple[str, ...] | None = None
    content_types: tuple[str, ...] | None = None
    topic_arns: tuple[str, ...] | None = None

    @property
    def verifies(self) -> bool:
        """True when requests must carry a valid signature."""
        return self.secret is not None


@dataclass(frozen=True)
class DispatchConfig:
    """``dispatch:`` — the outbox dispatcher."""

    in_process: bool = True
    batch_size: int = 100
    idle_sleep: float = 1.0
    error_sleep: float = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """``worker:`` — the thread that maps stored reports."""

    batch_size: int = 50
    idle_sleep: float = 1.0
    max_attempts: int = 3


@dataclass(frozen=True)
class PluginsConfig:
    """``plugins:`` — which plugins the engine loads (as ``Engine(...)`` arguments)."""

    autoload: bool = True
    load: tuple[str, ...] | None = None
    block: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """A loaded configuration; build it with :func:`load_config`."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    mappings: tuple[Path, ...] = ()
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    synchronous: str = "FULL"
    sink: SinkConfig = field(default_factory=SinkConfig)
    odp: OdpConfig = field(default_factory=OdpConfig)
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    #: the file it came from (``None``: built-in defaults)
    source: str | None = None
    #: positions of keys in the file, by dotted key, for later errors
    positions: Mapping[str, Pos] = field(default_factory=dict, repr=False, compare=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def provider(self, name: str) -> ProviderConfig:
        """The configuration of provider ``name`` (defaults when the file names it not)."""
        return self.providers.get(name) or ProviderConfig(name=name)

    def error(self, key: str, message: str) -> ConfigFileError:
        """A :class:`ConfigFileError` pointing at ``key`` (dotted) in the file."""
        pos = self.positions.get(key)
        probe = key
        while pos is None and "." in probe:
            probe = probe.rsplit(".", 1)[0]
            pos = self.positions.get(probe)
        return ConfigFileError(
            message,
            file=self.source,
            line=pos[1] if pos else None,
            column=pos[2] if pos else None,
            key=key,
        )

    def odp_api_key(self) -> str:
        """The ODP API key, from the variable ``odp.api_key_env`` names.

        :raises ConfigFileError: the variable is not set or empty
        """
        name = self.odp.api_key_env
        value = self.environ.get(name)
        if not value:
            raise self.error(
                "odp.api_key_env",
                f"environment variable {name} is not set: it must hold the ODP API key "
                "(the sink is 'odp')",
            )
        return value


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def _collect_positions(node: Any, path: tuple[Any, ...], out: dict[str, Pos]) -> None:
    if isinstance(node, PosDict):
        for k, v in node.items():
            out[_key((*path, k))] = node.key_pos.get(k, node.pos)
            _collect_positions(v, (*path, k), out)


def _flatten_errors(tree: Any, path: tuple[Any, ...]) -> Iterable[tuple[tuple[Any, ...], str]]:
    """``(document path, message)`` of every leaf of a cerberus ``errors`` tree."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _flatten_errors(v, (*path, k))
    elif isinstance(tree, list):
        for entry in tree:
            if isinstance(entry, (Mapping, list)):
                yield from _flatten_errors(entry, path)
            else:
                yield path, str(entry)
    else:
        yield path, str(tree)


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> Config:
    """Load and validate a configuration file; ``None`` gives the defaults.

    Relative paths in the file (``data_dir``, ``mappings``) are relative to the file's
    folder. Without ``data_dir`` the data directory is ``ODPMAP_DATA_DIR``, else
    ``.odpmap`` (beside the file, or in the current folder without a file).

    :param environ: where secrets are read (default :data:`os.environ`)
    :param require_secrets: resolve every provider's ``secret_env`` and fail when one is
        unset; commands that read the data directory only pass ``False``
    :raises ConfigFileError: naming the file, line and key of every problem
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        data_dir = env.get("ODPMAP_DATA_DIR") or DEFAULT_DATA_DIR
        return Config(data_dir=Path(data_dir), environ=dict(env))

    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read the configuration: {exc.strerror or exc}", file=file) from exc
    try:
        doc = load_yaml(text, file)
    except MappingError as exc:
        raise ConfigFileError(exc.message, file=file, line=exc.line, column=exc.column) from exc
    if doc is None:
        doc = PosDict()
        doc.pos, doc.key_pos, doc.value_pos = (file, 1, 1), {}, {}
    if not isinstance(doc, dict):
        raise ConfigFileError("the configuration must be a mapping of keys to values", file=file, line=1, column=1)

    validator = cerberus.Validator(CONFIG_SCHEMA, allow_unknown=False)
    if not validator.validate(dict(doc)):
        errors = []
        for doc_path, message in _flatten_errors(validator.errors, ()):
            unknown = message == "unknown field"
            pos = position_of(doc, doc_path, key=unknown) or doc.pos
            errors.append(ConfigFileError(message, file=file, line=pos[1], column=pos[2], key=_key(doc_path)))
        errors.sort(key=lambda e: (e.line or 0, e.column or 0))
        first = errors[0]
        first.all_errors = errors
        raise first

    positions: dict[str, Pos] = {}
    _collect_positions(doc, (), positions)
    base = Path(path).parent

    def resolve(value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else base / p

    data_dir_value = doc.get("data_dir") or env.get("ODPMAP_DATA_DIR")
    data_dir = resolve(data_dir_value) if data_dir_value else base / DEFAULT_DATA_DIR

    plugins_doc = doc.get("plugins") or {}
    plugins = PluginsConfig(
        autoload=plugins_doc.get("autoload", True),
        load=tuple(plugins_doc["load"]) if plugins_doc.get("load") is not None else None,
        block=tuple(plugins_doc.get("block") or ()),
    )
    server = ServerConfig(**(doc.get("server") or {}))
    sink_doc = doc.get("sink") or {}
    sink = SinkConfig(name=sink_doc.get("name", "stdout"), options=dict(sink_doc.get("options") or {}))
    odp = OdpConfig(**(doc.get("odp") or {}))
    dispatch = DispatchConfig(**(doc.get("dispatch") or {}))
    worker = WorkerConfig(**(doc.get("worker") or {}))

    providers: dict[str, ProviderConfig] = {}
    problems: list[ConfigFileError] = []
    for name, spec in (doc.get("providers") or {}).items():
        spec = spec or {}
        secret_env = spec.get("secret_env")
        fetch = bool(spec.get("fetch_certificate", False))
        secret: str | None = None
        key = f"providers.{name}.secret_env"
        if secret_env and fetch:
            pos = positions.get(f"providers.{name}.fetch_certificate")
            problems.append(ConfigFileError(
                "give either secret_env (a pinned certificate) or fetch_certificate, not both",
                file=file, line=pos[1] if pos else None, column=pos[2] if pos else None,
                key=f"providers.{name}.fetch_certificate",
            ))
        elif fetch:
            secret = "fetch"
        elif secret_env:
            secret = env.get(secret_env) or None
            if secret is None and require_secrets:
                pos = positions.get(key)
                problems.append(ConfigFileError(
                    f"environment variable {secret_env} is not set: it must hold {name}'s "
                    "webhook secret (remove secret_env to accept unsigned requests)",
                    file=file, line=pos[1] if pos else None, column=pos[2] if pos else None, key=key,
                ))
        providers[name] = ProviderConfig(
            name=name,
            secret_env=secret_env,
            secret=secret,
            fetch_certificate=fetch,
            methods=tuple(dict.fromkeys(spec["methods"])) if spec.get("methods") else None,
            content_types=tuple(c.lower() for c in spec["content_types"]) if spec.get("content_types") else None,
            topic_arns=tuple(spec["topic_arns"]) if spec.get("topic_arns") else None,
        )
    if problems:
        problems[0].all_errors = problems
        raise problems[0]

    return Config(
        data_dir=data_dir,
        mappings=tuple(resolve(m) for m in doc.get("mappings") or ()),
        plugins=plugins,
        server=server,
        synchronous=(doc.get("store") or {}).get("synchronous", "FULL"),
        sink=sink,
        odp=odp,
        providers=providers,
        dispatch=dispatch,
        worker=worker,
        source=file,
        positions=positions,
        environ=dict(env),
    )


def check_providers(config: Config, engine: Engine) -> None:
    """Check the ``providers:`` section against the providers ``engine`` loaded.

    Every named provider must exist; a provider with a secret must have a signature
    verifier, and the secret must be usable by it (a malformed key is found here, at
    start, rather than on the first webhook); ``fetch_certificate`` is for ``sns``
    verifiers only.

    :raises ConfigFileError: naming the file, line and key of every problem
    """
    known = engine.providers
    problems: list[ConfigFileError] = []
    for name, spec in config.providers.items():
        info = known.get(name)
        if info is None:
            hint = ", ".join(known) or "none loaded"
            problems.append(config.error(f"providers.{name}", f"unknown provider {name!r} (known: {hint})"))
            continue
        if spec.fetch_certificate and info.verifier_name != "sns":
            problems.append(config.error(
                f"providers.{name}.fetch_certificate",
                f"fetch_certificate is for Amazon SNS; {name}'s verifier is {info.verifier_name!r}",
            ))
            continue
        if spec.topic_arns is not None and info.verifier_name != "sns":
            problems.append(config.error(
                f"providers.{name}.topic_arns",
                f"topic_arns is for Amazon SNS; {name}'s verifier is {info.verifier_name!r}",
            ))
            continue
        if spec.secret is None:
            continue
        if info.verify is None:
            problems.append(config.error(
                f"providers.{name}.secret_env",
                f"provider {name!r} has no signature verifier (its mapping has no verify:); remove secret_env",
            ))
            continue
        try:
            engine.verify(name, b"", {}, secret=spec.secret, url="https://odpmap.invalid/webhooks/" + name)
        except SignatureConfigError as exc:
            problems.append(config.error(
                f"providers.{name}.secret_env",
                f"the value of {spec.secret_env} is not a usable {info.verifier_name} secret: {exc}",
            ))
    if problems:
        problems[0].all_errors = problems
        raise problems[0]
