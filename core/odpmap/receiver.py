"""The webhook receiver: a plain ASGI application, stores reports before answering ``2xx``.

::

    from odpmap import Engine
    from odpmap.receiver import create_app
    from odpmap.store import Store

    app = create_app(Engine(), Store(".odpmap"))   # mount it anywhere, or run it with uvicorn

Routes (relative to where the app is mounted):

``POST /webhooks/{provider}`` (and ``GET`` for providers whose reports are query strings)
    ``404`` unknown provider; ``405`` a method the provider does not use; ``413`` a body
    over ``server.max_body_bytes`` (the ``Content-Length`` is checked first, and streamed
    bytes are counted, so no more than the limit is ever held); ``401`` a missing or
    wrong signature when a secret is configured (counted, the body is *not* stored);
    ``400`` a body the provider's parser cannot read (stored as an ``unparseable`` dead
    letter: the provider would resend it unchanged); otherwise the raw report is
    committed to the store and only *then* ``200 {"status": "stored", "report_id": N}``
    is sent. Mapping and delivery happen later, in :class:`odpmap.service.ReportWorker`
    and the :class:`~odpmap.store.Dispatcher`. ``503`` when the report could not be
    stored (the provider retries).
``GET /healthz``
    ``200 {"status": "ok"}`` (``"degraded"`` with details when the service reports a
    problem, e.g. a dispatcher refused by ODP).
``GET /metrics``
    Prometheus text exposition (version 0.0.4) of the counters in :data:`METRICS` and the
    gauges read from the store.

Amazon SNS (providers whose verifier is ``sns``): a ``SubscriptionConfirmation`` is
confirmed by fetching its ``SubscribeURL`` (after the signature check when a secret is
configured), only over https from ``sns.<region>.amazonaws.com[.cn]``;
``UnsubscribeConfirmation`` is acknowledged and logged. Neither is stored as a report.

Blocking work (signature checks, parsing, SQLite commits) runs in the event loop's
default thread pool, so the loop keeps accepting requests.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from .config import Config, ProviderConfig, load_config
from .errors import SignatureConfigError, UnknownProviderError
from .outcomes import DeadLetter

if TYPE_CHECKING:
    from .engine import Engine, ProviderInfo
    from .store import Store

__all__ = [
    "DRAIN_BYTES",
    "METRICS",
    "SENSITIVE_HEADERS",
    "UNKNOWN_PROVIDER",
    "Metrics",
    "ReceiverApp",
    "create_app",
    "fetch_url",
    "is_trusted_sns_url",
    "request_url",
    "store_gauges",
]

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Headers never written to the store (credentials of basic-auth and bearer schemes).
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
#: After a body went over the limit, at most this many further bytes are read (and
#: dropped) before ``413`` is sent, so an ordinary client gets the answer rather than a
#: reset connection. Nothing is kept.
DRAIN_BYTES = 1024 * 1024
#: The label value for requests to providers that are not loaded (their names are not
#: used as labels: anyone can invent them).
UNKNOWN_PROVIDER = "_unknown"

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_QUERY_PARSERS = frozenset({"auto", "form", "query"})


# --- metrics ---------------------------------------------------------------------------

#: Every metric: name -> (type, help, label names). Counters count since the process
#: started; gauges are read from the store at each scrape.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "odpmap_webhooks_received_total": (
        "counter", "Webhook requests for a known provider, whatever the outcome.", ("provider",)),
    "odpmap_reports_stored_total": (
        "counter", "Webhook reports committed to the store and acknowledged with 200.", ("provider",)),
    "odpmap_webhooks_rejected_total": (
        "counter", "Webhook requests refused, by HTTP status (400, 401, 404, 405, 413, 5xx).",
        ("provider", "status")),
    "odpmap_signature_failures_total": (
        "counter", "Webhook requests whose signature was missing or wrong.", ("provider",)),
    "odpmap_sns_confirmations_total": (
        "counter", "Amazon SNS subscription messages, by type and result.", ("provider", "type", "result")),
    "odpmap_sns_foreign_topics_total": (
        "counter", "Amazon SNS messages refused because their topic is not in topic_arns.", ("provider",)),
    "odpmap_items_mapped_total": (
        "counter", "Report items mapped to ODP events.", ("provider",)),
    "odpmap_items_skipped_total": (
        "counter", "Report items a rule skipped on purpose.", ("provider",)),
    "odpmap_dead_lettered_total": (
        "counter", "Items (or whole reports) stored as dead letters, by reason.", ("provider", "reason")),
    "odpmap_events_enqueued_total": (
        "counter", "ODP events written to the outbox.", ("provider",)),
    "odpmap_reports_mapped_total": (
        "counter", "Stored reports mapped by the worker, by final state.", ("provider", "state")),
    "odpmap_events_dispatched_total": (
        "counter", "Events the sink accepted.", ("sink",)),
    "odpmap_events_rejected_total": (
        "counter", "Events the destination refused for good (now dead letters).", ("sink",)),
    "odpmap_dispatch_retries_total": (
        "counter", "HTTP retries made by the sink (network errors, 429, 5xx).", ("sink",)),
    "odpmap_dispatch_failures_total": (
        "counter", "Batches that failed as a whole; their events stay pending.", ("sink", "retryable")),
    "odpmap_outbox_depth": (
        "gauge", "Events waiting in the outbox.", ()),
    "odpmap_outbox_oldest_pending_age_seconds": (
        "gauge", "Age of the oldest pending event (0 when none).", ()),
    "odpmap_reports_pending": (
        "gauge", "Stored reports not mapped yet.", ()),
    "odpmap_dead_letters": (
        "gauge", "Dead letters in the store, by reason.", ("reason",)),
    "odpmap_outbox_sent": (
        "gauge", "Events in the outbox marked sent.", ()),
    "odpmap_outbox_rejected": (
        "gauge", "Events in the outbox the destination refused.", ()),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Thread-safe counters, rendered in the Prometheus text format.

    One instance is shared by the receiver, the report worker and the dispatcher of a
    process. Names and labels are checked against :data:`METRICS`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {
            name: {} for name, (kind, _, _) in METRICS.items() if kind == "counter"
        }

    def _labels(self, name: str, labels: Mapping[str, Any]) -> tuple[str, ...]:
        names = METRICS[name][2]
        if set(labels) != set(names):
            raise ValueError(f"{name} takes labels {names}, not {tuple(labels)}")
        return tuple(str(labels[n]) for n in names)

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:
        """Add ``amount`` to a counter."""
        key = self._labels(name, labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + amount

    def touch(self, name: str, **labels: Any) -> None:
        """Make a series exist (at 0), so dashboards see it before the first event."""
        self.inc(name, 0, **labels)

    def value(self, name: str, **labels: Any) -> float:
        """A counter's current value (0 when never incremented)."""
        key = self._labels(name, labels)
        with self._lock:
            return self._values[name].get(key, 0)

    def render(self, gauges: Mapping[str, Mapping[tuple[str, ...], float]] | None = None) -> str:
        """The exposition text: ``# HELP``, ``# TYPE`` and samples of every metric.

        :param gauges: gauge values by name, then by label values
        """
        gauges = gauges or {}
        lines: list[str] = []
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        for name, (kind, help_text, label_names) in METRICS.items():
            series = snapshot.get(name, {}) if kind == "counter" else dict(gauges.get(name, {}))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for key in sorted(series):
                if label_names:
                    labels = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(label_names, key))
                    lines.append(f"{name}{{{labels}}} {_format_value(series[key])}")
                else:
                    lines.append(f"{name} {_format_value(series[key])}")
        return "\n".join(lines) + "\n"


def store_gauges(store: Store) -> dict[str, dict[tuple[str, ...], float]]:
    """The gauges of :data:`METRICS`, from :meth:`Store.status <odpmap.store.Store.status>`."""
    status = store.status()
    return {
        "odpmap_outbox_depth": {(): status["outbox_pending"]},
        "odpmap_outbox_oldest_pending_age_seconds": {(): status["oldest_pending_age_seconds"] or 0},
        "odpmap_reports_pending": {(): status["reports_pending"]},
        "odpmap_dead_letters": {(reason,): count for reason, count in status["dead_letters"].items()},
        "odpmap_outbox_sent": {(): status["outbox_sent"]},
        "odpmap_outbox_rejected": {(): status["outbox_rejected"]},
    }


# --- helpers ---------------------------------------------------------------------------


def _first(value: str | None) -> str | None:
    """The first of comma-separated proxy header values (the one the client saw)."""
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


def request_url(scope: Scope, headers: Mapping[str, str], *, trust_proxy_headers: bool = False) -> str:
    """The full URL the client called: scheme, host, path and query string.

    The host is the ``Host`` header (else the server address). With
    ``trust_proxy_headers``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (their first
    values) replace the scheme and host: set it only when a proxy you run sets those
    headers and clients cannot reach the app directly.
    """
    scheme = str(scope.get("scheme") or "http")
    host = headers.get("host")
    if not host:
        server = scope.get("server")
        if server:
            name, port = server[0], server[1]
            default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
            host = name if default or port is None else f"{name}:{port}"
        else:
            host = "localhost"
    if trust_proxy_headers:
        proto = _first(headers.get("x-forwarded-proto"))
        if proto and proto.lower() in ("http", "https"):
            scheme = proto.lower()
        forwarded_host = _first(headers.get("x-forwarded-host"))
        if forwarded_host and _HOST.match(forwarded_host):
            host = forwarded_host
    raw_path = scope.get("raw_path")
    if raw_path:
        path = bytes(raw_path).decode("latin-1")
    else:
        path = quote(str(scope.get("root_path", "")) + str(scope.get("path", "/")), safe="/:@!$&'()*+,;=-._~")
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _sns_topic(body: bytes) -> str | None:
    """The ``TopicArn`` of an SNS message body, or ``None``."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    topic = message.get("TopicArn") if isinstance(message, dict) else None
    return topic if isinstance(topic, str) else None


def is_trusted_sns_url(url: str) -> bool:
    """True when ``url`` may be fetched to confirm an SNS subscription.

    ``https``, default port, no credentials, host ``sns.<region>.amazonaws.com`` or
    ``.com.cn`` (the rule of :func:`odpmap.signatures.is_trusted_sns_cert_url`, without its
    ``.pem`` path requirement).
    """
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        return False
    return (
        parsed.scheme == "https"
        and port in (None, 443)
        and parsed.username is None
        and parsed.password is None
        and _SNS_HOST.fullmatch(parsed.hostname or "") is not None
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_url(url: str) -> None:
    """GET ``url`` (an SNS ``SubscribeURL``): no redirects, 10 s timeout, 64 KiB read.

    The default ``http_get`` of :func:`create_app`.

    :raises ValueError: not a trusted SNS URL
    :raises OSError: the request failed
    """
    if not is_trusted_sns_url(url):
        raise ValueError(f"not an Amazon SNS URL: {url!r}")
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=10) as response:
        response.read(64 * 1024)


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class _Disconnected(Exception):
    """The client went away before the body was read."""


@dataclass
class _Outcome:
    status: int
    body: Any  # a JSON-able object, or text (the metrics)
    headers: tuple[tuple[str, str], ...] = ()


# --- the app -----------------------------------------------------------------------------


class ReceiverApp:
    """The ASGI application; build it with :func:`create_app`.

    :ivar metrics: the counters it updates (share them with the worker and dispatcher)
    :ivar health: ``() -> dict`` of problems to report on ``/healthz`` (empty: healthy)
    :ivar on_startup: callables run on the ASGI ``lifespan.startup`` event
    :ivar on_shutdown: callables run on ``lifespan.shutdown``
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        config: Config,
        *,
        metrics: Metrics | None = None,
        http_get: Callable[[str], Any] | None = None,
        on_report: Callable[[int], None] | None = None,
        health: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.config = config
        self.metrics = metrics or Metrics()
        self.http_get = http_get or fetch_url
        self.on_report = on_report
        self.health = health
        self.on_startup: list[Callable[[], Any]] = []
        self.on_shutdown: list[Callable[[], Any]] = []
        self.max_body_bytes = config.server.max_body_bytes
        for name in engine.providers:
            self.metrics.touch("odpmap_webhooks_received_total", provider=name)
            self.metrics.touch("odpmap_reports_stored_total", provider=name)
            self.metrics.touch("odpmap_signature_failures_total", provider=name)

    # -- ASGI entry point ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":  # websocket: not ours
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        try:
            outcome = await self._dispatch(scope, receive)
        except _Disconnected:
            return
        await self._respond(send, outcome)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await _maybe_await(hook())
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    for hook in self.on_shutdown:
                        await _maybe_await(hook())
                except Exception as exc:  # noqa: BLE001
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _respond(send: Send, outcome: _Outcome) -> None:
        if isinstance(outcome.body, str):
            payload, ctype = outcome.body.encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8"
        else:
            payload, ctype = json.dumps(outcome.body).encode("utf-8"), "application/json"
        headers = [
            (b"content-type", ctype.encode("latin-1")),
            (b"content-length", str(len(payload)).encode("latin-1")),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers),
        ]
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # -- routing ------------------------------------------------------------------------

    async def _dispatch(self, scope: Scope, receive: Receive) -> _Outcome:
        path = str(scope.get("path") or "/")
        root = str(scope.get("root_path") or "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        method = str(scope.get("method", "GET")).upper()

        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return _Outcome(405, {"error": "method not allowed"}, (("allow", "GET, HEAD"),))
            problems = dict(self.health() if self.health else {})
            return _Outcome(200, {"status": "degraded", **problems} if problems else {"status": "ok"})
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                return _Outcome(405, {"error": "method not allowed"}, (("allow", "GET, HEAD"),))
            return _Outcome(200, await self._run(self._render_metrics))  # type: ignore[arg-type]
        if path.startswith("/webhooks/"):
            name = path[len("/webhooks/"):]
            if name.endswith("/"):
                name = name[:-1]
            if name and "/" not in name:
                return await self._webhook(name, method, scope, receive)
        return _Outcome(404, {"error": "not found"})

    def _render_metrics(self) -> str:
        try:
            gauges = store_gauges(self.store)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            log.exception("cannot read the store for /metrics")
            gauges = {}
        return self.metrics.render(gauges)

    @staticmethod
    async def _run(fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    def allowed_methods(self, info: ProviderInfo, spec: ProviderConfig) -> tuple[str, ...]:
        """The HTTP methods a provider's endpoint accepts."""
        if spec.methods:
            return spec.methods
        return ("GET", "POST") if info.parser_name in _QUERY_PARSERS else ("POST",)

    # -- webhooks -------------------------------------------------------------------------

    def _refuse(self, provider: str, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Outcome:
        self.metrics.inc("odpmap_webhooks_rejected_total", provider=provider, status=status)
        return _Outcome(status, {"error": message}, headers)

    async def _webhook(self, name: str, method: str, scope: Scope, receive: Receive) -> _Outcome:
        try:
            info = self.engine.provider(name)
        except UnknownProviderError:
            return self._refuse(UNKNOWN_PROVIDER, 404, "unknown provider")
        self.metrics.inc("odpmap_webhooks_received_total", provider=name)
        spec = self.config.provider(name)
        allowed = self.allowed_methods(info, spec)
        if method not in allowed:
            return self._refuse(name, 405, "method not allowed", (("allow", ", ".join(allowed)),))

        headers = _headers(scope)
        if method == "GET":
            body = bytes(scope.get("query_string") or b"")
            content_type: str | None = "application/x-www-form-urlencoded"
            if len(body) > self.max_body_bytes:
                return self._refuse(name, 413, f"query string over {self.max_body_bytes} bytes")
        else:
            content_type = headers.get("content-type")
            declared = headers.get("content-length")
            if declared is not None:
                try:
                    length = int(declared)
                except ValueError:
                    return self._refuse(name, 400, "invalid Content-Length")
                if length > self.max_body_bytes:
                    return self._refuse(
                        name, 413, f"body over {self.max_body_bytes} bytes", (("connection", "close"),)
                    )
            body_or_none = await self._read_body(receive)
            if body_or_none is None:
                return self._refuse(
                    name, 413, f"body over {self.max_body_bytes} bytes", (("connection", "close"),)
                )
            body = body_or_none
        url = request_url(scope, headers, trust_proxy_headers=self.config.server.trust_proxy_headers)
        return await self._run(self._accept, info, spec, body, content_type, headers, url)  # type: ignore[no-any-return]

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, or ``None`` when it is over the limit (the rest is drained)."""
        chunks: list[bytes] = []
        size = 0
        limit = self.max_body_bytes
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            size += len(chunk)
            if size > limit:
                chunks.clear()
                drained = 0
                while more and drained < DRAIN_BYTES:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    drained += len(message.get("body", b""))
                    more = bool(message.get("more_body", False))
                return None
            if chunk:
                chunks.append(chunk)
        return b"".join(chunks)

    def _accept(
        self,
        info: ProviderInfo,
        spec: ProviderConfig,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str],
        url: str,
    ) -> _Outcome:
        """Verify, parse and store one webhook (runs in a worker thread)."""
        name = info.name
        if spec.secret is not None:
            try:
                ok = self.engine.verify(name, body, headers, secret=spec.secret, url=url)
            except SignatureConfigError as exc:
                log.error("%s: signature verification is misconfigured: %s", name, exc)
                return self._refuse(name, 500, "signature verification is misconfigured")
            except OSError as exc:  # SNS certificate download
                log.warning("%s: cannot verify the signature now: %s", name, exc)
                return self._refuse(name, 503, "cannot verify the signature now; retry later")
            if not ok:
                self.metrics.inc("odpmap_signature_failures_total", provider=name)
                log.warning("%s: refused a request with a missing or wrong signature (%s)", name, url)
                return self._refuse(name, 401, "signature verification failed")

        sns_type = headers.get("x-amz-sns-message-type")
        if info.verifier_name == "sns" and spec.topic_arns is not None:
            topic = _sns_topic(body)
            if topic not in spec.topic_arns:
                self.metrics.inc("odpmap_sns_foreign_topics_total", provider=name)
                log.warning("%s: refused an Amazon SNS message from topic %r (not in topic_arns)", name, topic)
                return self._refuse(name, 403, "this Amazon SNS topic is not accepted here")
        if info.verifier_name == "sns" and sns_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            return self._sns_subscription(name, sns_type, body)

        if spec.content_types is not None and _mime(content_type) not in spec.content_types:
            return self._dead(
                name, body, content_type, url,
                f"content type {_mime(content_type) or 'none'!r} is not accepted "
                f"(providers.{name}.content_types: {', '.join(spec.content_types)})",
            )
        try:
            self.engine.parse(name, body, content_type=content_type, headers=headers)
        except Exception as exc:  # noqa: BLE001 - a parser's failure is the body's fault
            detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            return self._dead(name, body, content_type, url, f"{info.parser_name} parser: {detail}")

        try:
            report_id = self.store.add_report(name, body, content_type, _storable(headers), url)
        except Exception:  # noqa: BLE001 - disk full, database locked: let the provider retry
            log.exception("%s: cannot store a report", name)
            return self._refuse(name, 503, "could not store the report; retry later")
        self.metrics.inc("odpmap_reports_stored_total", provider=name)
        if self.on_report is not None:
            try:
                self.on_report(report_id)
            except Exception:  # noqa: BLE001 - the report is stored; the worker polls anyway
                log.exception("on_report callback failed")
        return _Outcome(200, {"status": "stored", "report_id": report_id})

    def _dead(self, name: str, body: bytes, content_type: str | None, url: str, message: str) -> _Outcome:
        letter = DeadLetter(
            reason="unparseable",
            message=message,
            provider=name,
            item=body,
            content_type=content_type,
            details={"url": url, "source": "webhook"},
        )
        try:
            self.store.add_dead_letters([letter])
        except Exception:  # noqa: BLE001
            log.exception("%s: cannot store a dead letter", name)
            return self._refuse(name, 503, "could not store the report; retry later")
        self.metrics.inc("odpmap_dead_lettered_total", provider=name, reason="unparseable")
        log.warning("%s: unreadable body kept as a dead letter: %s", name, message)
        return self._refuse(name, 400, message)

    def _sns_subscription(self, name: str, sns_type: str, body: bytes) -> _Outcome:
        def count(result: str) -> None:
            self.metrics.inc("odpmap_sns_confirmations_total", provider=name, type=sns_type, result=result)

        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("Type") != sns_type:
            count("invalid")
            return self._refuse(name, 400, f"not an Amazon SNS {sns_type} message")
        topic = message.get("TopicArn")
        if sns_type == "UnsubscribeConfirmation":
            log.warning("%s: Amazon SNS unsubscribed this endpoint from %s", name, topic)
            count("acknowledged")
            return _Outcome(200, {"status": "acknowledged"})
        subscribe_url = message.get("SubscribeURL")
        if not isinstance(subscribe_url, str) or not is_trusted_sns_url(subscribe_url):
            log.warning("%s: refused to confirm a subscription at %r", name, subscribe_url)
            count("refused")
            return self._refuse(name, 400, "SubscribeURL is not an Amazon SNS https URL")
        try:
            self.http_get(subscribe_url)
        except Exception as exc:  # noqa: BLE001 - SNS resends the confirmation
            log.warning("%s: confirming the SNS subscription failed: %s", name, exc)
            count("failed")
            return self._refuse(name, 502, "confirming the subscription failed; retry later")
        log.info("%s: confirmed the Amazon SNS subscription to %s", name, topic)
        count("confirmed")
        return _Outcome(200, {"status": "confirmed"})


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        await value


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers with lower-cased names; repeated headers joined with ``, ``."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _storable(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in SENSITIVE_HEADERS}


def create_app(
    engine: Engine,
    store: Store,
    config: Config | None = None,
    *,
    metrics: Metrics | None = None,
    http_get: Callable[[str], Any] | None = None,
    on_report: Callable[[int], None] | None = None,
    health: Callable[[], Mapping[str, Any]] | None = None,
) -> ReceiverApp:
    """Build the webhook receiver ASGI app.

    :param engine: parses and verifies (mapping happens later, in the worker)
    :param store: where reports and dead letters are committed
    :param config: server and provider settings (default: :func:`~odpmap.config.load_config`
        without a file: no secrets, 5 MiB bodies)
    :param metrics: counters to update (default: new ones, at ``app.metrics``)
    :param http_get: ``url -> Any``, fetches an SNS ``SubscribeURL`` (default
        :func:`fetch_url`); raise to make SNS retry
    :param on_report: called with each stored report's id (e.g. ``worker.wake``)
    :param health: ``() -> dict`` of current problems, shown by ``/healthz``
    """
    if config is None:
        config = load_config(None, {})
    return ReceiverApp(
        engine, store, config, metrics=metrics, http_get=http_get, on_report=on_report, health=health
    )
