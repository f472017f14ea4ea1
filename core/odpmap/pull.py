"""Pull jobs: fetch a provider's events from its API (or export files), map them, store them.

Some providers keep a list of events that can be read back (Mailgun's Events API,
Twilio's message list). A *puller* reads it page by page; :func:`run_pull` maps each page
with the provider's mapping and stores its events in the outbox, its dead letters in the
dead-letter store and the position to resume from (the *cursor*) in the data directory,
all in one SQLite transaction::

    puller.pull(cursor) ──► Page ──► Engine.map ──► Store.store_page ──► outbox (+ dead letters, cursor)
         ▲                                                    │ (one transaction)
         └───────────── the next run resumes from the cursor ◄┘

**Safe to run from cron.**

* *A lock.* A run holds an exclusive ``flock`` on ``<data dir>/pull-<provider>.lock``; a
  second run of the same provider while the first is working gets :class:`PullLocked`
  at once (``odpmap pull`` exits with code 4) and does nothing.
* *Resumable.* The cursor is stored with each page's events. A run that stops (a crash,
  ``--max-pages``, the provider's API failing) leaves the cursor after the last page
  stored, and the next run goes on from there.
* *No duplicates, nothing lost.* The cursor never moves past events that are not stored
  (same transaction). A page fetched twice (overlapping time windows, a run that died
  between fetching and storing) gives the same events with the same idempotence ids
  (the provider's event id, through the mapping's ``item_id``; else a hash of the page),
  and the outbox stores an id once; an equal dead letter is not stored twice either.

Pullers are registered by plugins through the ``odpmap_register_pullers`` hook:
``register(provider_name, factory, description="")``; ``factory(**options)`` returns a
:class:`Puller`. :func:`collect_pullers` reads the registrations of an engine's plugins.
:class:`ExportFilesPuller` feeds a folder of export files (CSV, JSON lines) through the
same path. :class:`JsonApi` is an HTTP helper for pullers: basic auth, retries with
backoff, and it refuses to follow a link to another host.

See docs/pull.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import inspect
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import click

from .engine import content_type_for
from .errors import ConfigError, OdpmapError
from .outcomes import Counts
from .registry import NamedRegistry

if TYPE_CHECKING:
    import httpx

    from .engine import Engine
    from .store import Store

__all__ = [
    "EXIT_LOCKED",
    "ExportFilesPuller",
    "JsonApi",
    "Page",
    "PullError",
    "PullLocked",
    "PullResult",
    "Puller",
    "collect_pullers",
    "cursor_name_for",
    "env_name",
    "lock_path_for",
    "parse_time",
    "pull_command",
    "pull_lock",
    "puller_options",
    "run_pull",
]

#: The exit code of ``odpmap pull`` when another run of the same provider holds the lock.
EXIT_LOCKED = 4


# --- the puller interface ----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of raw reports, as the provider's API (or an export file) gave it.

    :ivar body: the raw page, mapped like a webhook body by the provider's mapping
    :ivar content_type: its content type (chooses the parser with ``parser: auto``)
    :ivar cursor: where to resume once this page is stored (opaque to odpmap, the
        puller's own format); ``None`` keeps the previous cursor
    :ivar source: where the page came from (a URL, a file name), for messages and the
        details of its dead letters
    """

    body: bytes
    content_type: str
    cursor: str | None
    source: str | None = None


@runtime_checkable
class Puller(Protocol):
    """What a puller factory returns.

    ``pull(cursor)`` yields the pages after ``cursor`` (``None`` on the first run: start
    where the puller's options say), oldest position first, each with the cursor to
    resume from once it is stored. It may raise :class:`PullError` at any point; the pages
    already yielded and stored stay stored. An optional ``close()`` is called at the end.
    """

    def pull(self, cursor: str | None) -> Iterator[Page]: ...


class PullError(OdpmapError):
    """A puller could not fetch a page.

    :ivar retryable: ``True`` when running again later may work (network, ``429``,
        ``5xx``); ``False`` when it will not until something is fixed (credentials
        refused, a wrong domain or account, a link to another host)
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class PullLocked(OdpmapError):
    """Another run of the same pull job holds its lock.

    :ivar path: the lock file
    :ivar holder: the process id written by the holder, when readable
    """

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        by = f" (process {holder})" if holder else ""
        super().__init__(f"another pull holds {path}{by}")


@dataclass
class PullResult:
    """What :func:`run_pull` did.

    :ivar pages: pages fetched and stored
    :ivar counts: the mapping counts of all pages (received, mapped, skipped, ...)
    :ivar stored: events newly stored in the outbox
    :ivar already_stored: events that were in the outbox already (an overlap)
    :ivar dead_letters: dead letters newly stored
    :ivar cursor_before: the cursor the run started from
    :ivar cursor: the cursor now stored
    :ivar complete: ``True`` when the puller had nothing more; ``False`` after
        ``max_pages`` or an error
    :ivar error: the :class:`PullError` that ended the run early, if any
    """

    provider: str
    pages: int = 0
    counts: Counts = field(default_factory=Counts)
    stored: int = 0
    already_stored: int = 0
    dead_letters: int = 0
    cursor_before: str | None = None
    cursor: str | None = None
    complete: bool = False
    error: PullError | None = None

    def summary(self) -> str:
        """One line: ``pages=2 received=5 mapped=4 ... stored=4 already_stored=0 cursor=...``."""
        c = self.counts
        return (
            f"pages={self.pages} received={c.received} mapped={c.mapped} skipped={c.skipped} "
            f"dead_lettered={c.dead_lettered} events={c.events} stored={self.stored} "
            f"already_stored={self.already_stored} cursor={self.cursor if self.cursor is not None else '-'}"
        )


def collect_pullers(engine: Engine) -> NamedRegistry[Callable[..., Puller]]:
    """The pullers the engine's plugins register, by provider name."""
    registry: NamedRegistry[Callable[..., Puller]] = NamedRegistry("puller")
    for impl in reversed(engine.pm.hook.odpmap_register_pullers.get_hookimpls()):
        source = engine.pm.source_of(impl.plugin_name)

        def register(name: str, factory: Callable[..., Puller], description: str = "", _source: str = source) -> None:
            if not callable(factory):
                raise ConfigError(f"{_source}: the puller of {name!r} must be a callable factory, not {factory!r}")
            registry.add(name, factory, source=_source, description=description)

        impl.function(register=register)
    return registry


# --- running a pull ------------------------------------------------------------------------


def cursor_name_for(provider: str) -> str:
    """The store cursor of a provider's pull job: ``pull:<provider>``."""
    return f"pull:{provider}"


def lock_path_for(data_dir: str | os.PathLike[str], provider: str) -> Path:
    """The lock file of a provider's pull job: ``<data_dir>/pull-<provider>.lock``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", provider)
    return Path(data_dir) / f"pull-{safe}.lock"


@contextmanager
def pull_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` (created when missing).

    The lock belongs to the open file: it is released when the block ends or the process
    dies, however it dies, so a crashed run never leaves a stale lock. The file is kept
    (removing it would let two runs lock two different files); it holds the holder's pid.

    :raises PullLocked: another process (or another open of the file) holds the lock
    """
    import fcntl

    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder: int | None = None
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                holder = int(text) if text.isdigit() else None
            except OSError:
                pass
            raise PullLocked(lock, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield lock
    finally:
        os.close(fd)


def run_pull(
    engine: Engine,
    store: Store,
    provider: str,
    puller: Puller,
    *,
    cursor_name: str | None = None,
    lock_path: str | os.PathLike[str] | None = None,
    max_pages: int | None = None,
    reset: bool = False,
    now: Callable[[], float] = time.time,
    on_page: Callable[[Page, PullResult], None] | None = None,
) -> PullResult:
    """Pull a provider's pages, map them and store them; see the module docstring.

    :param engine: maps the pages (the provider must be loaded)
    :param store: where events, dead letters and the cursor go
    :param provider: the provider whose mapping reads the pages
    :param puller: where the pages come from
    :param cursor_name: the store cursor (default ``pull:<provider>``)
    :param lock_path: the lock file (default ``pull-<provider>.lock`` beside the database)
    :param max_pages: stop after this many pages (the next run goes on from there)
    :param reset: start as if no cursor were stored (the puller's ``since`` applies)
    :param now: the receive time given to the mapping (epoch seconds)
    :param on_page: called after each page is stored
    :returns: a :class:`PullResult`; a :class:`PullError` of the puller ends the run and
        is in ``result.error`` (the pages stored before it stay stored)
    :raises PullLocked: another run holds the lock (nothing was done)
    :raises UnknownProviderError: the provider is not loaded
    :raises sqlite3.Error: storing a page failed (that page and the cursor were not
        stored: the next run fetches it again)
    """
    from .service import assign_idempotence_ids, instance_id

    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, not {max_pages}")
    engine.provider(provider)
    name = cursor_name or cursor_name_for(provider)
    lock = Path(lock_path) if lock_path is not None else lock_path_for(Path(store.path).parent, provider)
    with pull_lock(lock):
        cursor = None if reset else store.get_cursor(name)
        result = PullResult(provider=provider, cursor_before=cursor, cursor=cursor)
        instance = instance_id(store)
        pages: Iterator[Page] = iter(())
        try:
            try:
                pages = iter(puller.pull(cursor))
            except PullError as exc:
                result.error = exc
            while result.error is None:
                if max_pages is not None and result.pages >= max_pages:
                    break
                try:
                    page = next(pages)
                except StopIteration:
                    result.complete = True
                    break
                except PullError as exc:
                    result.error = exc
                    break
                mapped = engine.map(provider, page.body, content_type=page.content_type, received_at=now())
                # ids of events the mapping gave none (no item_id): from the page's content,
                # so the same page stored twice is stored once
                digest = hashlib.sha256(page.body).hexdigest()
                assign_idempotence_ids(mapped.events, f"{instance}/pull/{provider}/{digest}")
                letters = [
                    dataclasses.replace(dl, details={**dl.details, "pulled_from": page.source or name})
                    for dl in mapped.dead_letters
                ]
                stored, already, dead = store.store_page(
                    provider, mapped.events, letters, cursor_name=name, cursor_value=page.cursor
                )
                result.pages += 1
                result.counts.add(mapped.counts)
                result.stored += stored
                result.already_stored += already
                result.dead_letters += dead
                if page.cursor is not None:
                    result.cursor = page.cursor
                if on_page is not None:
                    on_page(page, result)
        finally:
            close_pages = getattr(pages, "close", None)
            if close_pages is not None:
                close_pages()
            close = getattr(puller, "close", None)
            if close is not None:
                close()
    return result


# --- helpers for pullers -------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | float | int, *, now: Callable[[], float] = time.time) -> float:
    """A point in time as epoch seconds, from what a person types.

    Accepts epoch seconds (``1700000000``, ``1700000000.5``), ISO 8601 dates and times
    (``2024-05-01``, ``2024-05-01T12:00:00Z``, ``2024-05-01 12:00+02:00``; no offset
    means UTC) and durations before now (``90s``, ``30m``, ``6h``, ``2d``, ``1w``).

    :raises ValueError: not one of those
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+(?:\.\d+)?", text):
        return float(text)
    rel = _RELATIVE.match(text.lower())
    if rel:
        return now() - float(rel.group(1)) * _UNITS[rel.group(2)]
    iso = text.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"not a time: {value!r} (epoch seconds, an ISO 8601 date or time, or a duration like 2d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class JsonApi:
    """A small HTTP client for pullers of JSON APIs.

    * basic auth (``auth=(user, password)``) on every request, and only to ``base_url``'s
      host: :meth:`get` refuses a URL on another scheme, host or port (a ``next`` link
      pointing elsewhere would otherwise receive the credentials);
    * redirects are not followed;
    * network errors, timeouts, ``429`` and ``5xx`` are retried ``max_retries`` times
      with exponential backoff (``backoff_base`` × 2ⁿ, at most ``backoff_max``; a
      ``Retry-After`` header wins, capped the same), then :class:`PullError` with
      ``retryable=True``; ``401``/``403`` (credentials), ``404`` and other answers raise
      ``PullError(retryable=False)`` at once.

    :param label: names the API in messages (``"Mailgun Events API"``)
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        label: str = "the API",
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        sleep: Callable[[float], Any] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        if _origin(base_url)[0] not in ("http", "https") or not _origin(base_url)[1]:
            raise ConfigError(f"{label}: base URL must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.label = label
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.requests = 0
        self._client = httpx.Client(
            auth=auth, timeout=timeout, follow_redirects=False, transport=transport,
            headers={"Accept": "application/json", "User-Agent": "odpmap-pull"},
        )

    def __enter__(self) -> JsonApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def url(self, path_or_url: str) -> str:
        """An absolute URL: a path (``/2010-04-01/...``) is joined to the base URL; an
        absolute URL must be on the base URL's scheme, host and port.

        :raises PullError: an absolute URL elsewhere (``retryable=False``)
        """
        if path_or_url.startswith("/") and not path_or_url.startswith("//"):
            return self.base_url + path_or_url
        if _origin(path_or_url) != _origin(self.base_url):
            raise PullError(
                f"{self.label}: refusing to follow a link to another host: {path_or_url!r} "
                f"(only {self.base_url} is trusted with the credentials)",
                retryable=False,
            )
        return path_or_url

    def get(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> tuple[bytes, Any]:
        """GET a JSON document: ``(raw body, parsed JSON)``."""
        import httpx

        from .odp import parse_retry_after

        url = self.url(path_or_url)
        attempt = 0
        while True:
            wait: float | None = None
            self.requests += 1
            try:
                response = self._client.get(url, params=params)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                code = response.status_code
                if 200 <= code < 300:
                    try:
                        return response.content, json.loads(response.content)
                    except ValueError:
                        problem = f"{code} with a body that is not JSON"
                elif code in (401, 403):
                    raise PullError(
                        f"{self.label}: {code} {response.reason_phrase}: the credentials were refused", retryable=False
                    )
                elif code == 429 or code >= 500:
                    problem = f"{code} {response.reason_phrase}"
                    wait = parse_retry_after(response.headers.get("retry-after"))
                else:
                    text = response.text[:200].strip()
                    raise PullError(
                        f"{self.label}: {code} {response.reason_phrase} for {_redact(url)}" + (f": {text}" if text else ""),
                        retryable=False,
                    )
            if attempt >= self.max_retries:
                raise PullError(
                    f"{self.label}: {problem} for {_redact(url)} (after {attempt + 1} attempts)", retryable=True
                )
            if wait is None:
                wait = self.backoff_base * (2**attempt)
            self.sleep(min(self.backoff_max, max(0.0, wait)))
            attempt += 1


def _redact(url: str) -> str:
    """A URL for messages: without user info."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


class ExportFilesPuller:
    """A folder of a provider's export files, through the pull path.

    Each file whose name says its format (``.csv``, ``.jsonl``/``.ndjson``, ``.json``,
    each optionally ``.gz``-compressed) is a page; files are taken in name order and the
    cursor is the last file's name, so a new export dropped in the folder is mapped once.
    Name exports so that they sort in time order (dates first). ``suffixes`` limits the
    kinds taken.
    """

    def __init__(self, directory: str | os.PathLike[str], *, suffixes: Sequence[str] | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"export folder {str(self.directory)!r} does not exist")
        self.suffixes = tuple(suffixes) if suffixes else None

    @staticmethod
    def content_type(name: str) -> str | None:
        base = name[:-3] if name.lower().endswith(".gz") else name
        return content_type_for(base)

    def files(self) -> list[Path]:
        out = []
        for entry in sorted(self.directory.iterdir(), key=lambda p: p.name):
            if not entry.is_file() or entry.name.startswith("."):
                continue
            if self.content_type(entry.name) is None:
                continue
            if self.suffixes and not entry.name.lower().endswith(self.suffixes):
                continue
            out.append(entry)
        return out

    def pull(self, cursor: str | None) -> Iterator[Page]:
        last = json.loads(cursor).get("file") if cursor else None
        for path in self.files():
            if last is not None and path.name <= last:
                continue
            body = path.read_bytes()
            if path.name.lower().endswith(".gz"):
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError) as exc:
                    raise PullError(f"{path}: not a gzip file: {exc}", retryable=False) from None
            ctype = self.content_type(path.name)
            assert ctype is not None
            yield Page(body, ctype, json.dumps({"file": path.name}), source=str(path))


# --- options -----------------------------------------------------------------------------


def _parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, True
    params = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and not p.name.startswith("_"):
            params[p.name] = p
    return params, var_kw


def env_name(provider: str, option: str) -> str:
    """The environment variable of a puller option: ``ODPMAP_<PROVIDER>_<OPTION>``."""
    return "ODPMAP_" + re.sub(r"[^A-Za-z0-9]", "_", f"{provider}_{option}").upper()


def puller_options(
    factory: Callable[..., Any],
    provider: str,
    *,
    environ: Mapping[str, str],
    options: Mapping[str, Any] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The keyword arguments for a puller factory.

    Each keyword parameter of the factory is an option: from ``options`` (``--option``,
    ``--since``...), else from the environment variable ``ODPMAP_<PROVIDER>_<OPTION>``
    (``api_key`` of ``mailgun``: ``ODPMAP_MAILGUN_API_KEY``). Values from the
    environment are strings: factories convert them.

    :raises ConfigError: an option the factory does not take, or a required one missing
        (naming its environment variable)
    """
    params, var_kw = _parameters(factory)
    out: dict[str, Any] = {}
    for key, value in dict(options).items():
        if key not in params and not var_kw:
            known = ", ".join(params) or "none"
            raise ConfigError(f"the {provider} puller has no option {key!r} (options: {known})")
        out[key] = value
    for name in params:
        if name not in out:
            value = environ.get(env_name(provider, name))
            if value not in (None, ""):
                out[name] = value
    missing = [p for name, p in params.items() if p.default is p.empty and name not in out]
    if missing:
        names = ", ".join(env_name(provider, p.name) for p in missing)
        raise ConfigError(
            f"the {provider} puller needs {', '.join(p.name for p in missing)}: set {names}"
            + (" (or --option NAME=VALUE)" if len(missing) == 1 else "")
        )
    return out


# --- the command -------------------------------------------------------------------------


class _Failure(click.ClickException):
    """An error message on standard error without a traceback, with an exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"odpmap: error: {self.format_message()}", err=True)


@contextmanager
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        all_errors = getattr(exc, "all_errors", None)
        if all_errors and len(all_errors) > 1:
            raise _Failure("\n".join(str(e) for e in all_errors)) from exc
        raise _Failure(str(exc)) from exc


def _key_values(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _Failure(f"--option takes KEY=VALUE, not {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def _time_option(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _Failure(f"{name}: {exc}") from None


@click.command("pull")
@click.option("--provider", "-p", help="The provider to pull (odpmap pull --list shows those with a puller).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="ODPMAP_CONFIG",
              help="The configuration file (default: ODPMAP_CONFIG, else built-in defaults).")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False),
              help="The data directory: cursor, lock, outbox (default: the configuration's, else "
                   "ODPMAP_DATA_DIR, else ./.odpmap).")
@click.option("--mappings", "mappings", multiple=True, type=click.Path(exists=True),
              help="A mapping file or folder to load as providers (repeatable).")
@click.option("--since", metavar="TIME",
              help="Where to start when no cursor is stored yet: epoch seconds, ISO 8601, or a "
                   "duration like 2d (default: the puller's, e.g. 1 day ago).")
@click.option("--until", metavar="TIME", help="Pull events up to this time only (pullers that support it).")
@click.option("--reset", is_flag=True, help="Ignore the stored cursor: start from --since (or the default).")
@click.option("--max-pages", type=click.IntRange(min=1), metavar="N",
              help="Stop after N pages; the next run goes on from there.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A puller option (repeatable); each can also come from ODPMAP_<PROVIDER>_<KEY>.")
@click.option("--exports", "exports", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Map the provider's export files in DIR (CSV, JSON lines) instead of its API: "
                   "in name order, each file once.")
@click.option("--dispatch/--no-dispatch", "dispatch", default=None,
              help="Deliver the outbox to ODP afterwards (default: when ODPMAP_ODP_API_KEY is set).")
@click.option("--odp-base-url", "odp_base_url", metavar="URL", help="With --dispatch: the ODP API base.")
@click.option("--list", "list_pullers", is_flag=True, help="List the providers that have a puller, and their options.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something went wrong (for cron).")
def pull_command(provider: str | None, config_path: str | None, data_dir: str | None, mappings: Sequence[str],
                 since: str | None, until: str | None, reset: bool, max_pages: int | None, options: Sequence[str],
                 exports: str | None, dispatch: bool | None, odp_base_url: str | None, list_pullers: bool,
                 quiet: bool) -> None:
    """Fetch a provider's events from its API since the stored cursor, map them, store them.

    Events go to the outbox of the data directory, dead letters to its store, and the
    cursor moves on with each stored page (one transaction), so the command is safe to
    run from cron: rerun it and it resumes. Credentials come from environment variables,
    ODPMAP_<PROVIDER>_<OPTION> (e.g. ODPMAP_MAILGUN_API_KEY).

    Exit codes: 0 done; 1 new dead letters were stored; 2 a usage or configuration error,
    or the provider refused the credentials; 3 the provider's API (or ODP) failed for
    now, progress is kept: run again later; 4 another pull of this provider is running.
    """
    from .config import load_config
    from .service import build_engine, open_store

    with _config_errors():
        config = load_config(config_path, require_secrets=False)
    if data_dir:
        config = dataclasses.replace(config, data_dir=Path(data_dir))
    if mappings:
        config = dataclasses.replace(config, mappings=(*config.mappings, *(Path(m) for m in mappings)))
    environ = config.environ or dict(os.environ)

    if list_pullers:
        with _config_errors():
            engine = build_engine(config)
        registry = collect_pullers(engine)
        engine.close()
        for entry in registry.entries():
            params, _ = _parameters(entry.value)
            opts = ", ".join(
                env_name(entry.name, p) + ("" if params[p].default is params[p].empty else " (optional)")
                for p in params
            )
            click.echo(f"{entry.name}  {entry.description or '-'}  [{entry.source}]")
            if opts:
                click.echo(f"    options: {opts}")
        if not registry.names():
            click.echo("no pullers", err=True)
        return
    if not provider:
        raise _Failure("--provider is required (odpmap pull --list shows the providers with a puller)")
    if exports and (since or until or options):
        raise _Failure("--since, --until and --option do not apply to --exports")

    api_key_env = config.odp.api_key_env
    if dispatch is None:
        dispatch = bool(environ.get(api_key_env))
    elif dispatch and not environ.get(api_key_env):
        raise _Failure(f"--dispatch: set {api_key_env} to the ODP API key")

    # Everything is checked before the data directory is touched.
    with _config_errors():
        engine = build_engine(config)
        engine.provider(provider)
        if exports:
            puller: Puller = ExportFilesPuller(exports)
            cursor_name = f"{cursor_name_for(provider)}:exports:{Path(exports).resolve()}"
        else:
            registry = collect_pullers(engine)
            if provider not in registry:
                known = ", ".join(registry.names()) or "none"
                raise ConfigError(
                    f"provider {provider!r} has no puller (pullers: {known}); for its export files "
                    f"use --exports DIR, or odpmap map"
                )
            factory = registry.get(provider)
            given: dict[str, Any] = _key_values(options)
            for key, value in (("since", _time_option("--since", since)), ("until", _time_option("--until", until))):
                if value is not None:
                    given[key] = value
            kwargs = puller_options(factory, provider, environ=environ, options=given)
            try:
                puller = factory(**kwargs)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"the {provider} puller: {exc}") from exc
            cursor_name = cursor_name_for(provider)
    with _config_errors():
        store = open_store(config)
    try:
        try:
            result = run_pull(engine, store, provider, puller, cursor_name=cursor_name, max_pages=max_pages,
                              reset=reset, lock_path=lock_path_for(config.data_dir, provider))
        except PullLocked as exc:
            click.echo(f"odpmap: {provider}: {exc}; nothing done", err=True)
            sys.exit(EXIT_LOCKED)
        except sqlite3.Error as exc:
            raise _Failure(f"{provider}: storing a page failed: {exc} (the cursor was not advanced: "
                           f"run again once fixed)", 3) from exc
        except OdpmapError as exc:
            raise _Failure(f"{provider}: {exc}") from exc
        if not quiet or result.error is not None or result.dead_letters:
            click.echo(f"odpmap: {provider}: {result.summary()}", err=True)
        if result.dead_letters:
            click.echo(f"odpmap: {result.dead_letters} dead letter(s) stored (odpmap dead-letters list)", err=True)
        if result.error is not None:
            if not result.error.retryable:
                raise _Failure(f"{provider}: {result.error}")
            click.echo(f"odpmap: {provider}: stopped: {result.error}; the pages before are stored, "
                       "run again later to go on", err=True)

        drained_ok = True
        if dispatch:
            drained_ok = _dispatch(config, engine, store, odp_base_url, quiet)
        elif not quiet and result.stored:
            click.echo("odpmap: events are in the outbox: odpmap dispatch (or --dispatch) delivers them", err=True)
    finally:
        store.close()
        engine.close()
    if result.error is not None or not drained_ok:
        sys.exit(3)
    if result.dead_letters:
        sys.exit(1)


def _dispatch(config: Any, engine: Engine, store: Store, odp_base_url: str | None, quiet: bool) -> bool:
    """Deliver the outbox to ODP; ``False`` when delivery failed for now."""
    from .config import SinkConfig
    from .service import build_sink, drain_outbox
    from .store import Dispatcher

    config = dataclasses.replace(
        config,
        sink=SinkConfig(name="odp", options={}),
        odp=dataclasses.replace(config.odp, base_url=odp_base_url or config.odp.base_url),
    )
    with _config_errors():
        sink = build_sink(config, engine)
    try:
        drained = drain_outbox(Dispatcher(store, sink, batch_size=config.odp.batch_size))
    finally:
        sink.close()
    if not quiet or drained.error is not None or drained.rejected:
        click.echo(f"odpmap: odp: sent={drained.sent} rejected={drained.rejected} pending={drained.pending}",
                   err=True)
    if drained.error is not None:
        if not drained.error.retryable:
            raise _Failure(f"{drained.error} ({drained.pending} event(s) kept in the outbox)")
        click.echo(f"odpmap: delivery failed for now: {drained.error}; the events stay in the outbox", err=True)
        return False
    return True

