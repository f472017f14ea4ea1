"""The delivery service: map stored webhook reports, deliver the outbox, replay dead letters.

The production path, in one process (``odpmap serve``) or split (``odpmap dispatch``)::

    provider ──► receiver ──► Store.add_report ──► 200
                                   │ (committed first)
                                   ▼
                             ReportWorker: Engine.map ──► outbox (+ dead letters), report "mapped"
                                                            │
                                                            ▼
                                                  Dispatcher ──► sink (ODP events API)

**At least once, without duplicates of our own making.** A report is acknowledged only
after it is committed, so a crash after the answer loses nothing: the worker maps every
report still in state ``received`` when it starts. A crash *while* a report is being
completed (events enqueued, dead letters stored, report marked ``mapped``) makes the
worker map that report again. Two things keep that from duplicating events in ODP:

* every event gets a **deterministic idempotence id**, so re-mapping the same report
  gives the same ids and :meth:`Store.enqueue <odpmap.store.Store.enqueue>` (unique per
  id) stores each event once. The engine derives it from the mapping's ``item_id`` when
  the item has one (``uuid5(provider, item id, n)``: a provider's redelivery is the same
  event); the worker gives the others ``uuid5(instance id / report id / position / type
  / action)``, the instance id being a random uuid kept in the data directory (two
  installations never share those);
* :meth:`Store.complete_report <odpmap.store.Store.complete_report>` stores the events,
  the dead letters and the report's new state in one SQLite transaction, so a report is
  completed entirely or not at all.

The :class:`~odpmap.store.Dispatcher` then delivers at least once: an event is marked
sent only after the sink accepted it, and a resend carries the same idempotence id.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, check_providers
from .errors import ConfigError, DispatchError, UnknownProviderError
from .outcomes import DeadLetter, MapResult
from .receiver import Metrics, ReceiverApp, create_app
from .sinks import SendReport, Sink
from .store import DB_FILENAME, DeadLetterRecord, Dispatcher, Store, StoredReport

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "IDEMPOTENCE_NAMESPACE",
    "INSTANCE_CURSOR",
    "REPLAYABLE_REASONS",
    "BackgroundServer",
    "DispatchLoop",
    "DrainResult",
    "MeteredSink",
    "ReplayOutcome",
    "ReplaySummary",
    "ReportWorker",
    "Service",
    "assign_idempotence_ids",
    "build_engine",
    "build_sink",
    "drain_outbox",
    "format_status",
    "instance_id",
    "open_store",
    "replay_dead_letters",
    "status_figures",
]

log = logging.getLogger(__name__)

#: The uuid5 namespace of the idempotence ids odpmap derives.
IDEMPOTENCE_NAMESPACE = uuid.UUID("3435f75d-780d-445d-bf6b-4d74b61d3043")
#: The store cursor holding this data directory's random instance id.
INSTANCE_CURSOR = "odpmap.instance_id"


# --- building blocks from a Config ----------------------------------------------------------


def open_store(config: Config, *, create: bool = True) -> Store:
    """The store in ``config.data_dir`` (``odpmap.sqlite3``).

    :param create: with ``False``, a missing database is a :class:`ConfigError` rather
        than created (for commands that only read)
    """
    path = Path(config.data_dir) / DB_FILENAME
    if not create and not path.exists():
        raise ConfigError(f"no odpmap database in {config.data_dir} (nothing has been received there yet)")
    return Store(path, synchronous=config.synchronous)  # type: ignore[arg-type]


def build_engine(config: Config, *, store: Store | None = None, **overrides: Any) -> Engine:
    """An :class:`~odpmap.Engine` with the configured mappings and plugins.

    :param store: used as the campaign tracking store (one connection for everything);
        default: the engine opens the data directory's database itself when needed
    """
    from .engine import Engine

    kwargs: dict[str, Any] = {
        "mapping_paths": list(config.mappings),
        "autoload": config.plugins.autoload,
        "load_plugins": config.plugins.load,
        "block_plugins": config.plugins.block,
        "data_dir": config.data_dir,
        "environ": config.environ or None,
    }
    if store is not None:
        kwargs["tracking_store"] = store
    kwargs.update(overrides)
    return Engine(**kwargs)


def build_sink(config: Config, engine: Engine | None, *, sleep: Callable[[float], Any] | None = None) -> Sink:
    """The configured sink. ``odp`` is :class:`~odpmap.odp.OdpSink` with ``odp:`` options
    (``sink.options`` override them) and the key from ``odp.api_key_env``.

    :param sleep: the ODP sink's backoff wait (pass ``stop_event.wait`` for a prompt stop)
    :raises ConfigError: missing API key, bad options, unknown sink
    """
    if config.sink.name == "odp":
        from .odp import OdpSink

        options: dict[str, Any] = {
            "base_url": config.odp.base_url,
            "batch_size": config.odp.batch_size,
            "timeout": config.odp.timeout,
            "max_retries": config.odp.max_retries,
        }
        if sleep is not None:
            options["sleep"] = sleep
        options.update(config.sink.options)
        api_key = config.odp_api_key()
        try:
            return OdpSink(api_key=api_key, **options)
        except (TypeError, ValueError) as exc:
            raise config.error("sink.options", f"the odp sink: {exc}") from exc
    if engine is None:
        raise ConfigError(f"sink {config.sink.name!r} needs an engine (its plugins register it)")
    try:
        return engine.sink(config.sink.name, **config.sink.options)
    except ConfigError as exc:
        raise config.error("sink.name", str(exc)) from exc


def instance_id(store: Store) -> str:
    """This data directory's random id, created on first use (kept as a store cursor)."""
    value = store.get_cursor(INSTANCE_CURSOR)
    if value is None:
        store.set_cursor(INSTANCE_CURSOR, str(uuid.uuid4()))
        value = store.get_cursor(INSTANCE_CURSOR)
    assert value is not None
    return value


def assign_idempotence_ids(events: Sequence[dict[str, Any]], key: str) -> None:
    """Give each event lacking one a deterministic ``data.idempotence_id``.

    The id is ``uuid5(IDEMPOTENCE_NAMESPACE, f"{key}/{position}/{type}/{action}")``: the
    same events derived from the same source (``key``) get the same ids, so storing them
    twice stores them once. An id the mapping set is kept.
    """
    for position, event in enumerate(events):
        data = event.setdefault("data", {})
        if data.get("idempotence_id") in (None, ""):
            name = f"{key}/{position}/{event.get('type')}/{event.get('action')}"
            data["idempotence_id"] = str(uuid.uuid5(IDEMPOTENCE_NAMESPACE, name))


def _record(metrics: Metrics | None, result: MapResult, provider: str) -> None:
    if metrics is None:
        return
    counts = result.counts
    metrics.inc("odpmap_items_mapped_total", counts.mapped, provider=provider)
    metrics.inc("odpmap_items_skipped_total", counts.skipped, provider=provider)
    metrics.inc("odpmap_events_enqueued_total", len(result.events), provider=provider)
    for letter in result.dead_letters:
        metrics.inc("odpmap_dead_lettered_total", provider=provider, reason=letter.reason)


# --- the report worker ------------------------------------------------------------------------


class ReportWorker:
    """Maps stored reports (state ``received``) to outbox events and dead letters.

    See the module docstring for the crash semantics.

    :param batch_size: most reports read per :meth:`run_once`
    :param idle_sleep: seconds :meth:`run_forever` waits for new reports (a
        :meth:`wake` ends the wait early)
    :param max_attempts: a report whose mapping raises (a plugin bug, a locked tracking
        database) is retried this many times, then kept as a dead letter and marked
        ``failed``
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        metrics: Metrics | None = None,
        batch_size: int = 50,
        idle_sleep: float = 1.0,
        max_attempts: int = 3,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.metrics = metrics
        self.batch_size = batch_size
        self.idle_sleep = idle_sleep
        self.max_attempts = max_attempts
        self.on_enqueued = on_enqueued
        self._wake = threading.Event()
        self._attempts: dict[int, int] = {}
        self._instance: str | None = None

    def wake(self, report_id: int | None = None) -> None:
        """Tell :meth:`run_forever` that a report arrived (thread-safe)."""
        self._wake.set()

    @property
    def instance(self) -> str:
        if self._instance is None:
            self._instance = instance_id(self.store)
        return self._instance

    def run_once(self) -> int:
        """Map up to ``batch_size`` pending reports; return how many were completed."""
        done = 0
        for report in self.store.pending_reports(limit=self.batch_size):
            if self.process(report) != "retry":
                done += 1
        return done

    def run_forever(self, stop: threading.Event) -> None:
        """Call :meth:`run_once` until ``stop`` is set (set it, then :meth:`wake`)."""
        while not stop.is_set():
            self._wake.clear()
            try:
                done = self.run_once()
            except Exception:  # noqa: BLE001 - e.g. the database is locked: try again later
                log.exception("the report worker failed; retrying in %.1fs", self.idle_sleep)
                done = 0
            if done < self.batch_size and not stop.is_set():
                self._wake.wait(self.idle_sleep)

    def process(self, report: StoredReport) -> str:
        """Map one stored report and complete it; return ``mapped``, ``failed`` or ``retry``."""
        provider = report.provider
        try:
            result = self.engine.map(
                provider,
                report.body,
                content_type=report.content_type,
                headers=report.headers,
                received_at=report.received_at,
            )
        except UnknownProviderError as exc:
            letter = DeadLetter(
                reason="unmapped",
                message=f"{exc}; the raw report is this dead letter's item: replay it once the provider is loaded",
                provider=provider,
                item=report.body,
                content_type=report.content_type,
                details={"report_id": report.id, "url": report.url},
            )
            self._complete(report, MapResult(provider=provider, dead_letters=[letter]), "failed")
            return "failed"
        except Exception as exc:  # noqa: BLE001 - a plugin's bug or a transient failure
            attempts = self._attempts.get(report.id, 0) + 1
            self._attempts[report.id] = attempts
            if attempts < self.max_attempts:
                log.warning("report %d (%s): mapping failed (attempt %d): %s", report.id, provider, attempts, exc)
                return "retry"
            log.exception("report %d (%s): mapping failed %d times; kept as a dead letter", report.id, provider, attempts)
            letter = DeadLetter(
                reason="unmapped",
                message=f"mapping raised {type(exc).__name__}: {exc} ({attempts} attempts)",
                provider=provider,
                item=report.body,
                content_type=report.content_type,
                details={"report_id": report.id, "url": report.url},
            )
            self._complete(report, MapResult(provider=provider, dead_letters=[letter]), "failed")
            self._attempts.pop(report.id, None)
            return "failed"
        self._attempts.pop(report.id, None)
        assign_idempotence_ids(result.events, f"{self.instance}/report/{report.id}")
        result.dead_letters = [
            dataclasses.replace(dl, details={**dl.details, "report_id": report.id}) for dl in result.dead_letters
        ]
        self._complete(report, result, "mapped")
        _record(self.metrics, result, provider)
        return "mapped"

    def _complete(self, report: StoredReport, result: MapResult, state: str) -> None:
        try:
            self.store.complete_report(report.id, result.events, result.dead_letters, state=state)
        except KeyError:  # no longer "received": another worker completed it
            log.info("report %d was completed elsewhere", report.id)
            return
        if self.metrics is not None:
            self.metrics.inc("odpmap_reports_mapped_total", provider=report.provider, state=state)
            if state == "failed":
                for letter in result.dead_letters:
                    self.metrics.inc("odpmap_dead_lettered_total", provider=report.provider, reason=letter.reason)
        if result.events and self.on_enqueued is not None:
            self.on_enqueued()


# --- dispatching --------------------------------------------------------------------------------


class MeteredSink:
    """A sink wrapper that counts what goes through it into :class:`Metrics`."""

    def __init__(self, sink: Sink, metrics: Metrics) -> None:
        self.inner = sink
        self.metrics = metrics
        self.name = sink.name
        self._retries = self._inner_retries()

    def _inner_retries(self) -> int:
        stats = getattr(self.inner, "stats", None)
        return int(stats.get("retries", 0)) if isinstance(stats, Mapping) else 0

    def _count_retries(self) -> None:
        now = self._inner_retries()
        if now > self._retries:
            self.metrics.inc("odpmap_dispatch_retries_total", now - self._retries, sink=self.name)
        self._retries = now

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport:
        try:
            report = self.inner.send(events)
        except DispatchError as exc:
            self._count_retries()
            self.metrics.inc("odpmap_dispatch_failures_total", sink=self.name, retryable=str(exc.retryable).lower())
            raise
        self._count_retries()
        self.metrics.inc("odpmap_events_dispatched_total", report.sent, sink=self.name)
        self.metrics.inc("odpmap_events_rejected_total", len(report.rejected), sink=self.name)
        return report

    def close(self) -> None:
        self.inner.close()


class DispatchLoop:
    """Runs a :class:`~odpmap.store.Dispatcher` until stopped, surviving its errors.

    Unlike :meth:`Dispatcher.run_forever <odpmap.store.Dispatcher.run_forever>`, a
    non-retryable error (ODP refused the key) does not end the loop: it is logged, shown
    by :attr:`last_error` (and ``/healthz``), and tried again every ``error_sleep``
    seconds; webhooks keep being received and stored meanwhile.
    """

    def __init__(self, dispatcher: Dispatcher, *, error_sleep: float = 30.0) -> None:
        self.dispatcher = dispatcher
        self.error_sleep = error_sleep
        self.last_error: str | None = None
        self._wake = threading.Event()

    def wake(self) -> None:
        """New events are in the outbox: end an idle wait early."""
        self._wake.set()

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                result = self.dispatcher.run_once()
            except DispatchError as exc:
                self.last_error = str(exc)
                log.error("dispatch stopped for %.0fs: %s (events stay in the outbox)", self.error_sleep, exc)
                stop.wait(self.error_sleep)
                continue
            except Exception as exc:  # noqa: BLE001 - a database error: keep the thread alive
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dispatch failed; retrying in %.0fs", self.error_sleep)
                stop.wait(self.error_sleep)
                continue
            self.last_error = self.dispatcher.last_error
            if result["failed"]:
                stop.wait(self.dispatcher.idle_sleep)
            elif result["claimed"] < self.dispatcher.batch_size and not stop.is_set():
                self._wake.wait(self.dispatcher.idle_sleep)


@dataclass
class DrainResult:
    """What :func:`drain_outbox` did."""

    sent: int = 0
    rejected: int = 0
    pending: int = 0
    error: DispatchError | None = None

    @property
    def drained(self) -> bool:
        return self.error is None and self.pending == 0


def drain_outbox(dispatcher: Dispatcher, *, max_batches: int | None = None) -> DrainResult:
    """Send pending events batch by batch until none is left or a batch fails.

    A failed batch (the sink's own retries exhausted, or a non-retryable error such as a
    wrong API key) ends the drain; its events stay pending, and ``error`` says why.
    """
    out = DrainResult()
    batches = 0
    while max_batches is None or batches < max_batches:
        try:
            result = dispatcher.run_once()
        except DispatchError as exc:
            out.error = exc
            break
        batches += 1
        out.sent += result["sent"]
        out.rejected += result["rejected"]
        if result["failed"]:
            out.error = DispatchError(dispatcher.last_error or "delivery failed", sink=dispatcher.sink.name,
                                      retryable=True)
            break
        if not result["claimed"]:
            break
    out.pending = dispatcher.store.status()["outbox_pending"]
    return out


# --- the service --------------------------------------------------------------------------------


class Service:
    """Receiver, report worker and (by default) dispatcher, sharing one store and metrics.

    :param config: the loaded configuration
    :param engine: default :func:`build_engine`; its providers are checked against
        ``config.providers`` (:func:`~odpmap.config.check_providers`)
    :param store: default :func:`open_store`
    :param sink: default :func:`build_sink` (only when dispatching in process)
    :param dispatch: run the dispatcher here (default ``config.dispatch.in_process``)
    :param http_get: fetches SNS ``SubscribeURL`` s (see :func:`~odpmap.receiver.create_app`)

    Use :attr:`app` as an ASGI app (mounted in another app: call :meth:`start` and
    :meth:`stop` yourself), or :meth:`serve` to run it with uvicorn.
    """

    def __init__(
        self,
        config: Config,
        *,
        engine: Engine | None = None,
        store: Store | None = None,
        sink: Sink | None = None,
        metrics: Metrics | None = None,
        dispatch: bool | None = None,
        http_get: Callable[[str], Any] | None = None,
    ) -> None:
        self.config = config
        self._stop = threading.Event()
        self._owns_store = store is None
        self.store = store if store is not None else open_store(config)
        self._owns_engine = engine is None
        try:
            self.engine = engine if engine is not None else build_engine(config, store=self.store)
            check_providers(config, self.engine)
            self.metrics = metrics or Metrics()
            self.dispatch_in_process = config.dispatch.in_process if dispatch is None else dispatch
            self.sink: Sink | None = None
            self.dispatch_loop: DispatchLoop | None = None
            if self.dispatch_in_process:
                raw_sink = sink if sink is not None else build_sink(config, self.engine, sleep=self._stop.wait)
                self.sink = MeteredSink(raw_sink, self.metrics)
                dispatcher = Dispatcher(
                    self.store, self.sink, batch_size=config.dispatch.batch_size,
                    idle_sleep=config.dispatch.idle_sleep,
                )
                self.dispatch_loop = DispatchLoop(dispatcher, error_sleep=config.dispatch.error_sleep)
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise
        self.worker = ReportWorker(
            self.engine, self.store, metrics=self.metrics, batch_size=config.worker.batch_size,
            idle_sleep=config.worker.idle_sleep, max_attempts=config.worker.max_attempts,
            on_enqueued=self.dispatch_loop.wake if self.dispatch_loop else None,
        )
        self.app: ReceiverApp = create_app(
            self.engine, self.store, config, metrics=self.metrics, http_get=http_get,
            on_report=self.worker.wake, health=self.health,
        )
        self._threads: list[threading.Thread] = []

    def health(self) -> dict[str, Any]:
        """Current problems (empty when healthy), for ``/healthz``."""
        problems: dict[str, Any] = {}
        if self.dispatch_loop is not None and self.dispatch_loop.last_error:
            problems["dispatch_error"] = self.dispatch_loop.last_error
        for thread in self._threads:
            if not thread.is_alive() and not self._stop.is_set():
                problems[f"{thread.name}_thread"] = "stopped"
        return problems

    def start(self) -> None:
        """Start the report worker and dispatcher threads."""
        if self._threads:
            return
        self._stop.clear()
        targets: list[tuple[str, Callable[[threading.Event], None]]] = [("worker", self.worker.run_forever)]
        if self.dispatch_loop is not None:
            targets.append(("dispatcher", self.dispatch_loop.run_forever))
        for name, target in targets:
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the threads: the report being mapped is finished, the batch being sent
        is given ``timeout`` seconds (what is not marked sent stays pending)."""
        self._stop.set()
        self.worker.wake()
        if self.dispatch_loop is not None:
            self.dispatch_loop.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("the %s thread did not stop within %.0fs", thread.name, timeout)
        self._threads = []

    def close(self) -> None:
        """Stop, then close the sink, the engine and the store this service opened."""
        self.stop()
        if self.sink is not None:
            self.sink.close()
        if self._owns_engine:
            self.engine.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def serve(self, host: str | None = None, port: int | None = None, *,
              on_listening: Callable[[str], None] | None = None) -> None:
        """Run the app with uvicorn until SIGINT or SIGTERM, with the worker threads.

        Shutdown is graceful: no new connections, requests in progress finish (their
        reports are stored and answered), then the threads stop. Returns normally after
        a signal (the caller exits 0).

        :param on_listening: called with the base URL once the socket is bound (port 0
            picks a free port)
        """
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("odpmap serve needs uvicorn: pip install 'odpmap[serve]'") from exc

        server_config = self.config.server
        host = host or server_config.host
        port = server_config.port if port is None else port
        sock = _bind(host, port)
        bound = sock.getsockname()
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound[1]}"
        uv_config = uvicorn.Config(
            self.app,
            log_level=server_config.log_level,
            access_log=server_config.access_log,
            proxy_headers=False,  # odpmap decides (server.trust_proxy_headers), not uvicorn
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(uv_config)
        with _signals_returning(server):
            self.start()
            try:
                if on_listening is not None:
                    on_listening(url)
                server.run(sockets=[sock])
            finally:
                self.stop()
                sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextmanager
def _signals_returning(server: Any) -> Iterator[None]:
    """uvicorn re-raises the SIGINT/SIGTERM that stopped it once it is done; with these
    handlers installed under it, that re-raise only asks the (finished) server to exit, and
    :meth:`Service.serve` returns normally, so the caller can clean up and exit 0. A signal
    before uvicorn installed its own handlers stops the server as soon as it starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class BackgroundServer:
    """Serve an ASGI app with uvicorn in a thread (tests, notebooks, embedding).

    ::

        with BackgroundServer(app) as server:      # 127.0.0.1, a free port
            httpx.post(server.url + "/webhooks/sendgrid", ...)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        import uvicorn

        uvicorn_options.setdefault("log_level", "warning")
        uvicorn_options.setdefault("lifespan", "on")
        uvicorn_options.setdefault("proxy_headers", False)
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._sock.close()


# --- status -----------------------------------------------------------------------------------


def status_figures(store: Store) -> dict[str, Any]:
    """:meth:`Store.status <odpmap.store.Store.status>` plus delivery-failure figures.

    Adds ``outbox_failing`` (pending events with at least one failed attempt),
    ``last_error`` (the latest of their errors) and ``reports_failed``.
    """
    figures = dict(store.status())
    uri = Path(store.path).resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
        figures["outbox_failing"] = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND attempts > 0"
        ).fetchone()[0]
        row = conn.execute(
            "SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        figures["last_error"] = row[0] if row else None
        figures["reports_failed"] = conn.execute(
            "SELECT COUNT(*) FROM reports WHERE state = 'failed'"
        ).fetchone()[0]
    return figures


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def format_status(figures: Mapping[str, Any], data_dir: str) -> str:
    """The text ``odpmap status`` prints."""
    dead = figures["dead_letters"]
    rows = [
        ("data directory", data_dir),
        ("outbox pending", f"{figures['outbox_pending']} (oldest: {_age(figures['oldest_pending_age_seconds'])})"),
        ("failing", f"{figures['outbox_failing']}" + (f" (last error: {figures['last_error']})"
                                                      if figures.get("last_error") else "")),
        ("sent", str(figures["outbox_sent"])),
        ("rejected", str(figures["outbox_rejected"])),
        ("reports pending", str(figures["reports_pending"])),
        ("reports failed", str(figures["reports_failed"])),
        ("dead letters", str(sum(dead.values()))),
    ]
    rows.extend((f"  {reason}", str(count)) for reason, count in sorted(dead.items()))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


# --- dead letter replay -------------------------------------------------------------------------

#: Reasons replayed when no ``reason`` is asked for (``rejected`` events only on request).
REPLAYABLE_REASONS = ("unparseable", "unmapped", "template_error", "invalid_event")


@dataclass
class ReplayOutcome:
    """What replaying one dead letter gave."""

    id: int
    provider: str
    reason: str
    result: str  # "mapped", "skipped", "still dead", "already replayed"
    events: int = 0
    message: str = ""
    new_dead_letters: list[int] = field(default_factory=list)


@dataclass
class ReplaySummary:
    """Totals of :func:`replay_dead_letters`."""

    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def events(self) -> int:
        return sum(o.events for o in self.outcomes)


def replay_dead_letters(
    engine: Engine,
    store: Store,
    *,
    provider: str | None = None,
    reason: str | None = None,
    ids: Iterable[int] | None = None,
    metrics: Metrics | None = None,
) -> ReplaySummary:
    """Map dead letters again through the engine's *current* mappings.

    Selects by ``ids``, or by ``provider`` and ``reason`` (default: every reason but
    ``rejected``). A letter holding a raw report (``unparseable``, or a report that failed
    as a whole) is parsed and mapped again; an item of a stored report is mapped again
    within that report (only that item); any other item is mapped on its own. A
    ``rejected`` event (refused by ODP) is validated again and re-enqueued with a new
    idempotence id.

    Events go to the outbox with deterministic ids (the engine's, from the item's id, else
    derived from the letter's id), so replaying twice stores them once. Each letter is marked with its result
    (:meth:`Store.mark_replayed <odpmap.store.Store.mark_replayed>`), ``mapped: ...``,
    ``skipped: ...`` or ``still dead: ...``, and kept; letters already replayed into
    events are left alone. New dead letters of a partly mapped raw report are stored
    (``details.replayed_from``).
    """
    if ids is not None:
        records = [r for r in (store.get_dead_letter(i) for i in ids) if r is not None]
    else:
        records = store.list_dead_letters(provider=provider, reason=reason)
        if reason is None:
            records = [r for r in records if r.dead_letter.reason in REPLAYABLE_REASONS]
    summary = ReplaySummary()
    instance = instance_id(store)
    for record in records:
        outcome = _replay_one(engine, store, record, instance, metrics)
        summary.outcomes.append(outcome)
    return summary


def _replay_one(engine: Engine, store: Store, record: DeadLetterRecord, instance: str,
                metrics: Metrics | None) -> ReplayOutcome:
    letter = record.dead_letter
    outcome = ReplayOutcome(record.id, letter.provider, letter.reason, "still dead")
    if record.replay_result and record.replay_result.startswith("mapped"):
        outcome.result, outcome.message = "already replayed", record.replay_result
        return outcome
    key = f"{instance}/dead-letter/{record.id}"

    if letter.reason == "rejected":
        event = dict(letter.item) if isinstance(letter.item, dict) else None
        if event is None:
            outcome.message = "the item is not an event"
        else:
            event["data"] = {k: v for k, v in dict(event.get("data") or {}).items() if k != "idempotence_id"}
            try:
                errors = engine.schema.errors(event)
            except Exception as exc:  # noqa: BLE001
                errors = [("", "", f"{type(exc).__name__}: {exc}")]
            if errors:
                outcome.message = "invalid_event: " + "; ".join(f"{p}: {m}" for p, _, m in errors)
            else:
                assign_idempotence_ids([event], key)
                store.enqueue([event], letter.provider)
                outcome.result, outcome.events = "mapped", 1
                outcome.message = "1 event enqueued"
        store.mark_replayed(record.id, _result_text(outcome))
        return outcome

    raw = isinstance(letter.item, (bytes, bytearray))
    body: Any = bytes(letter.item) if raw else [letter.item]
    content_type, received_at, only = letter.content_type, record.created_at, None
    report_id = letter.details.get("report_id")
    if not raw and letter.index is not None and isinstance(report_id, int):
        # The item came from a stored report: map it within that report, so templates
        # reading other parts of the report (an SNS envelope's MessageId) see them.
        report = store.get_report(report_id)
        if report is not None:
            body, content_type, received_at, only = report.body, report.content_type, report.received_at, [letter.index]
    try:
        result = engine.map(letter.provider, body, content_type=content_type, received_at=received_at, only=only)
    except UnknownProviderError as exc:
        outcome.message = str(exc)
        store.mark_replayed(record.id, _result_text(outcome))
        return outcome
    except Exception as exc:  # noqa: BLE001
        outcome.message = f"mapping raised {type(exc).__name__}: {exc}"
        store.mark_replayed(record.id, _result_text(outcome))
        return outcome

    if result.events:
        assign_idempotence_ids(result.events, key)
        store.enqueue(result.events, letter.provider)
        outcome.result, outcome.events = "mapped", len(result.events)
        outcome.message = f"{len(result.events)} event(s) enqueued"
        if result.dead_letters:
            fresh = [dataclasses.replace(dl, details={**dl.details, "replayed_from": record.id})
                     for dl in result.dead_letters]
            outcome.new_dead_letters = store.add_dead_letters(fresh)
            outcome.message += f", {len(fresh)} item(s) dead again (dead letters {_ids(outcome.new_dead_letters)})"
    elif result.dead_letters:
        first = result.dead_letters[0]
        outcome.message = f"{first.reason}: {first.message}"
    else:
        outcome.result = "skipped"
        outcome.message = result.skipped[0].reason if result.skipped else "no items"
    store.mark_replayed(record.id, _result_text(outcome))
    if metrics is not None:
        _record(metrics, result, letter.provider)
    return outcome


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _result_text(outcome: ReplayOutcome) -> str:
    return f"{outcome.result}: {outcome.message}" if outcome.message else outcome.result
