"""A real HTTP server on 127.0.0.1 that stands in for the ODP events API in tests.

It listens on a free port (``http.server.ThreadingHTTPServer`` in a thread, HTTP/1.1 with
keep-alive), records every request, and answers ``POST /v3/events`` by following a script::

    with FakeOdpServer() as server:
        server.enqueue(status(503), too_many("2"), slow(0.5), drop(), invalids([1, 3]))
        sink = OdpSink(api_key="k", base_url=server.base_url)
        ...
        assert server.idempotence_ids() == [...]

In pytest, yield a started server from a fixture::

    @pytest.fixture
    def fake_odp() -> Iterator[FakeOdpServer]:
        with FakeOdpServer() as server:
            yield server

Each request takes the next behaviour from the queue; when the queue is empty the
``default`` behaviour applies (:func:`ok` unless changed). Answers mimic ODP's:
``202 {"title": "Accepted", ...}``, ``400 {"detail": {"invalids": [...]}}``,
``403 {"message": "Forbidden"}``. A request to another path gets ``404``.

An accepted (``202``) request counts as accepted even when the client gave up before the
answer arrived (:func:`slow` past the client timeout): like the real API, which may have
queued the events.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Behaviour",
    "FakeOdpServer",
    "RecordedRequest",
    "drop",
    "forbidden",
    "invalids",
    "not_found",
    "ok",
    "slow",
    "status",
    "too_many",
]

EVENTS_PATH = "/v3/events"


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request.

    :ivar kind: ``respond`` (``status`` + ``body`` + ``headers``), ``drop`` (close the
        connection without answering) or ``slow`` (wait ``delay`` seconds, then ``then``)
    """

    kind: str
    status: int = 202
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    then: Behaviour | None = None
    invalid_indexes: tuple[int, ...] = ()


def ok() -> Behaviour:
    """``202 Accepted`` with ODP's body."""
    return Behaviour("respond", 202)


def status(code: int, body: Any = None, headers: Iterable[tuple[str, str]] = ()) -> Behaviour:
    """Answer ``code`` with ``body`` (JSON; a default ODP-like body when ``None``)."""
    return Behaviour("respond", code, body, tuple(headers))


def too_many(retry_after: str | None = None, code: int = 429) -> Behaviour:
    """``429`` (or ``code``), with a ``Retry-After`` header when ``retry_after`` is given."""
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return Behaviour("respond", code, None, headers)


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before answering as ``then`` (default :func:`ok`)."""
    return Behaviour("slow", delay=seconds, then=then or ok())


def drop() -> Behaviour:
    """Read the request, then close the connection without a response."""
    return Behaviour("drop")


def invalids(indexes: Iterable[int], body: Any = None) -> Behaviour:
    """``400`` naming the events at ``indexes`` in ``detail.invalids`` (or answer ``body``)."""
    return Behaviour("respond", 400, body, invalid_indexes=tuple(indexes))


def forbidden() -> Behaviour:
    """``403 {"message": "Forbidden"}``, as ODP answers a wrong API key."""
    return Behaviour("respond", 403)


def not_found() -> Behaviour:
    """``404``."""
    return Behaviour("respond", 404)


@dataclass
class RecordedRequest:
    """One ``POST`` the server received and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    events: list[dict[str, Any]] | None
    client_port: int
    behaviour: str = ""
    status: int | None = None
    answered: threading.Event = field(default_factory=threading.Event, repr=False)


def _default_body(behaviour: Behaviour, events: list[dict[str, Any]] | None) -> Any:
    code = behaviour.status
    if code == 202:
        return {"title": "Accepted", "status": 202, "timestamp": "2024-01-01T00:00:00.000Z"}
    if code == 400:
        count = len(events) if isinstance(events, list) else 0
        found = [
            {"event": i, "message": f"event {i}: field 'bad_field' is not defined"}
            for i in behaviour.invalid_indexes
            if i < count
        ]
        return {
            "title": "Bad Request",
            "status": 400,
            "timestamp": "2024-01-01T00:00:00.000Z",
            "detail": {"invalids": found},
        }
    if code == 403:
        return {"message": "Forbidden"}
    if code == 404:
        return {"message": "Not Found"}
    return {"title": "Error", "status": code, "timestamp": "2024-01-01T00:00:00.000Z"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            events = json.loads(body)
        except ValueError:
            events = None
        if isinstance(events, dict):
            events = [events]
        fake = self.server.fake
        record = RecordedRequest(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            events=events,
            client_port=self.client_address[1],
        )
        behaviour = fake._next_behaviour() if self.path == EVENTS_PATH else not_found()
        fake._record(record)
        try:
            self._apply(behaviour, record)
        finally:
            record.answered.set()

    def _apply(self, behaviour: Behaviour, record: RecordedRequest) -> None:
        fake = self.server.fake
        while behaviour.kind == "slow":
            if fake._stopping.wait(behaviour.delay):
                behaviour = drop()
                break
            assert behaviour.then is not None
            behaviour = behaviour.then
        record.behaviour = behaviour.kind
        if behaviour.kind == "drop":
            self.close_connection = True
            return
        record.status = behaviour.status
        body = (
            behaviour.body
            if behaviour.body is not None
            else _default_body(behaviour, record.events)
        )
        data = json.dumps(body).encode("utf-8")
        self.send_response(behaviour.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in behaviour.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOdpServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away (timeouts, drops); report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FakeOdpServer:
    """The fake ODP API; see the module docstring. Use as a context manager."""

    def __init__(self) -> None:
        self.default: Behaviour = ok()
        self._queue: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The API base to give :class:`odpmap.odp.OdpSink` (``http://127.0.0.1:PORT/v3``)."""
        return f"http://127.0.0.1:{self.port}/v3"

    def start(self) -> FakeOdpServer:
        """Bind a free loopback port and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow answers still waiting are dropped."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeOdpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the answers of the next requests, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def in_flight(self) -> int:
        """How many requests are received but not answered yet."""
        return sum(1 for r in self.requests() if not r.answered.is_set())

    def events(self) -> list[dict[str, Any]]:
        """All events of requests answered ``202``, in order (resends appear again)."""
        return [e for r in self.requests() if r.status == 202 for e in (r.events or [])]

    def idempotence_ids(self) -> list[str]:
        """``data.idempotence_id`` of every accepted event, in order."""
        return [e["data"]["idempotence_id"] for e in self.events()]

    def wait_for(self, predicate: Callable[[FakeOdpServer], bool], timeout: float = 10.0) -> None:
        """Poll until ``predicate(self)`` holds; :class:`TimeoutError` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(0.01)
