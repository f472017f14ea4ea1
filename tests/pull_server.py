"""Real HTTP servers on 127.0.0.1 that stand in for providers' list APIs in pull tests.

:class:`PullServer` is a ``ThreadingHTTPServer`` in a daemon thread on a free loopback
port. It records every request and answers through an *app*, a function from
:class:`Request` to ``(status, headers, body)``. Failures can be scripted in front of the
app (:meth:`PullServer.fail`). Apps:

* :class:`RecordedPages`: recorded pages served verbatim, by path (with the recorded
  host rewritten to the server's own, so ``next`` links lead back here);
* :class:`MailgunEvents`: the Mailgun Events API over a list of events (the items of the
  recorded pages), honouring ``begin``, ``end``, ``ascending`` and ``limit`` and paging
  with opaque ``next`` URLs, like the real one;
* :class:`TwilioMessages`: Twilio's Messages list over a list of messages, newest first,
  with ``PageSize``, the ``DateSent>`` day filter and ``next_page_uri``.

Both API apps check basic auth and answer ``401`` to wrong credentials.

The recorded pages are in tests/data/pull/, built from the plugins' sample reports.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = [
    "DATA",
    "MailgunEvents",
    "PullServer",
    "RecordedPages",
    "Request",
    "TwilioMessages",
    "load_pages",
]

#: The folder of recorded pages.
DATA = Path(__file__).resolve().parent / "data" / "pull"

Response = tuple[int, Mapping[str, str], bytes]
App = Callable[["Request"], Response]


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    target: str

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


def json_response(status: int, body: Any) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(body, indent=2).encode()


def load_pages(prefix: str) -> list[dict[str, Any]]:
    """The recorded pages ``tests/data/pull/<prefix>-page-*.json``, in order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(DATA.glob(f"{prefix}-page-*.json"))]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        request = Request(
            method="GET",
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            target=self.path,
        )
        status, headers, body = self.server.owner._answer(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: PullServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class PullServer:
    """A loopback server answering with ``app``; use as a context manager."""

    def __init__(self, app: App | None = None) -> None:
        self.app: App = app or (lambda request: json_response(404, {"message": "not found"}))
        self._failures: deque[tuple[Callable[[Request], bool], Response]] = deque()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PullServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> PullServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail(self, status: int, *, times: int = 1, when: Callable[[Request], bool] | None = None,
             body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next ``times`` requests matching ``when`` (default: any) with ``status``."""
        data = json.dumps(body if body is not None else {"message": f"error {status}"}).encode()
        response: Response = (status, {"Content-Type": "application/json", **(headers or {})}, data)
        with self._lock:
            for _ in range(times):
                self._failures.append((when or (lambda r: True), response))

    def _answer(self, request: Request) -> Response:
        with self._lock:
            self._requests.append(request)
            for entry in list(self._failures):
                if entry[0](request):
                    self._failures.remove(entry)
                    return entry[1]
        return self.app(request)

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)


# --- apps ----------------------------------------------------------------------------------


class RecordedPages:
    """Serve recorded pages verbatim: ``routes`` maps a request path (the query is ignored)
    to a page; ``recorded_base`` in the pages is replaced by the server's base URL."""

    def __init__(self, server: PullServer, routes: Mapping[str, Any], recorded_base: str) -> None:
        self.server = server
        self.routes = dict(routes)
        self.recorded_base = recorded_base

    def __call__(self, request: Request) -> Response:
        page = self.routes.get(request.path)
        if page is None:
            return json_response(404, {"message": "not found"})
        text = json.dumps(page, indent=2).replace(self.recorded_base, self.server.base_url)
        return 200, {"Content-Type": "application/json"}, text.encode()


def _token(data: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, sort_keys=True).encode()).decode().rstrip("=")


def _untoken(token: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))


class MailgunEvents:
    """The Mailgun Events API (``/v3/<domain>/events``) over ``events``.

    ``next_base`` makes the ``next`` links point at another base URL (a foreign host).
    Events may be added while serving (:attr:`events` is read on each request).
    """

    def __init__(self, server: PullServer, events: Iterable[dict[str, Any]], *, domain: str, api_key: str,
                 next_base: str | None = None) -> None:
        self.server = server
        self.events = list(events)
        self.domain = domain
        self.api_key = api_key
        self.next_base = next_base

    def _base(self) -> str:
        return f"{self.next_base or self.server.base_url}/v3/{self.domain}/events"

    def __call__(self, request: Request) -> Response:
        if request.basic_auth() != ("api", self.api_key):
            return 401, {"Content-Type": "text/plain"}, b"Forbidden"
        root = f"/v3/{self.domain}/events"
        if request.path == root:
            begin = float(request.arg("begin") or 0)
            end = request.arg("end")
            if request.arg("ascending") not in ("yes", None) or end is None:
                return json_response(400, {"message": "this fake serves ascending ranges with an end only"})
            state = {"b": begin, "e": float(end), "after": None, "l": int(request.arg("limit") or 100)}
        elif request.path.startswith(root + "/"):
            state = _untoken(request.path[len(root) + 1:])
        else:
            return json_response(404, {"message": "not found"})
        if state["l"] > 300:
            return json_response(400, {"message": "limit must be <= 300"})
        selected = sorted(
            (e for e in self.events if state["b"] <= e["timestamp"] < state["e"]),
            key=lambda e: (e["timestamp"], e["id"]),
        )
        if state["after"] is not None:
            after = tuple(state["after"])
            selected = [e for e in selected if (e["timestamp"], e["id"]) > after]
        items = selected[: state["l"]]
        last = [items[-1]["timestamp"], items[-1]["id"]] if items else state["after"]
        nxt = {**state, "after": last}
        return json_response(200, {
            "items": items,
            "paging": {
                "next": f"{self._base()}/{_token(nxt)}",
                "previous": f"{self._base()}/{_token({**state, 'after': None})}",
                "first": f"{self._base()}/{_token({**state, 'after': None})}",
                "last": f"{self._base()}/{_token({**state, 'after': None})}",
            },
        })


def _sent_at(message: Mapping[str, Any]) -> datetime:
    return parsedate_to_datetime(message["date_sent"])


class TwilioMessages:
    """Twilio's Messages list (``/2010-04-01/Accounts/<sid>/Messages.json``) over ``messages``.

    Newest first (by ``date_sent``); ``PageSize`` (default 50); the ``DateSent>`` filter
    (a day, ``YYYY-MM-DD``: messages sent that day or later); ``next_page_uri`` with
    ``Page`` and ``PageToken``, ``null`` on the last page. ``next_base`` makes
    ``next_page_uri`` an absolute URL on another base.
    """

    def __init__(self, server: PullServer, messages: Iterable[dict[str, Any]], *, account_sid: str,
                 auth_token: str, next_base: str | None = None) -> None:
        self.server = server
        self.messages = list(messages)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.next_base = next_base

    def __call__(self, request: Request) -> Response:
        if request.basic_auth() != (self.account_sid, self.auth_token):
            return json_response(401, {"code": 20003, "message": "Authenticate", "status": 401})
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if request.path != path:
            return json_response(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
        size = int(request.arg("PageSize") or 50)
        day = request.arg("DateSent>")
        page = int(request.arg("Page") or 0)
        token = request.arg("PageToken")
        selected = sorted(self.messages, key=lambda m: (_sent_at(m), m["sid"]), reverse=True)
        if day:
            since = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            selected = [m for m in selected if _sent_at(m) >= since]
        if token:
            sid = token[2:]
            index = next((i for i, m in enumerate(selected) if m["sid"] == sid), None)
            if index is None:
                return json_response(400, {"code": 20001, "message": "Invalid PageToken", "status": 400})
            selected = selected[index + 1:]
        items = selected[:size]
        base_query: dict[str, Any] = {"PageSize": size}
        if day:
            base_query["DateSent>"] = day
        uri = f"{path}?{urlencode({**base_query, 'Page': page})}"
        nxt = None
        if len(selected) > size:
            nxt = f"{path}?{urlencode({**base_query, 'Page': page + 1, 'PageToken': 'PA' + items[-1]['sid']})}"
            if self.next_base:
                nxt = self.next_base + nxt
        return json_response(200, {
            "end": page * size + len(items) - 1 if items else 0,
            "first_page_uri": f"{path}?{urlencode({**base_query, 'Page': 0})}",
            "messages": items,
            "next_page_uri": nxt,
            "page": page,
            "page_size": size,
            "previous_page_uri": None,
            "start": page * size,
            "uri": uri,
        })
