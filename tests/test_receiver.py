"""The webhook receiver (odpmap.receiver), served by a real uvicorn on 127.0.0.1.

Every request goes over a loopback socket to the ASGI app; reports and dead letters land
in real SQLite files. Nothing is mocked: SNS confirmations use an injected getter that
records the URLs it was asked to fetch (there is no network here).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import socket
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from odpmap import Engine
from odpmap.config import Config, ProviderConfig, ServerConfig
from odpmap.receiver import DRAIN_BYTES, METRICS, ReceiverApp, create_app, is_trusted_sns_url, request_url
from odpmap.service import BackgroundServer
from odpmap.store import Store

DATA = Path(__file__).parent / "data"
VECTOR = json.loads((DATA / "signatures" / "signature-sendgrid-python-single-event.json").read_text())
SENDGRID_KEY = VECTOR["public_key_base64_der"]
SIGNED_BODY = VECTOR["raw_body"].encode()
SIGNED_HEADERS = {**VECTOR["headers"], "Content-Type": "application/json"}

SNS_MAPPING = """
    format: 1
    provider: snsdemo
    channel: email
    description: an Amazon SNS envelope (test provider)
    parser: json
    verify: sns
    rules:
      - id: all
        skip: "test provider: nothing to map"
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = tmp_path_factory.mktemp("mappings")
    (folder / "snsdemo.yaml").write_text(textwrap.dedent(SNS_MAPPING), encoding="utf-8")
    return Engine(load_plugins=["sendgrid"], mapping_paths=[folder])


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module (building one loads the CA bundle: slow)."""
    with httpx.Client(timeout=10) as client:
        yield client


@dataclass
class Running:
    url: str
    app: ReceiverApp
    store: Store
    db: Path
    http: httpx.Client
    fetched: list[str] = field(default_factory=list)

    def post(self, path: str, content: Any = b"", headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(self.url + path, content=content, headers=headers or {})

    def count(self, name: str, **labels: Any) -> float:
        return self.app.metrics.value(name, **labels)


class Switch:
    """An ASGI app forwarding to ``self.app``: one uvicorn serves every test's app in turn
    (starting and stopping a server per test costs a quarter of a second)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[BackgroundServer, Switch]]:
    switch = Switch()
    with BackgroundServer(switch) as running:
        yield running, switch


@pytest.fixture
def receiver(tmp_path: Path, engine: Engine, http: httpx.Client,
             server: tuple[BackgroundServer, Switch]) -> Iterator[Callable[..., Running]]:
    """``receiver(config)``: a new app with its own store, served on 127.0.0.1."""
    background, switch = server
    stores: list[Store] = []

    def start(config: Config | None = None) -> Running:
        db = tmp_path / f"data{len(stores)}" / "odpmap.sqlite3"
        store = Store(db)
        stores.append(store)
        fetched: list[str] = []
        app = create_app(engine, store, config or Config(), http_get=fetched.append)
        switch.app = app
        return Running(background.url, app, store, db, http, fetched)

    yield start
    switch.app = None
    for store in stores:
        store.close()


def signed_config(**server: Any) -> Config:
    return Config(
        server=ServerConfig(**server),
        providers={"sendgrid": ProviderConfig("sendgrid", secret_env="SG_KEY", secret=SENDGRID_KEY)},
    )


def reports_in(db: Path) -> list[tuple[Any, ...]]:
    """Reports as another connection sees them: committed, not just in our cache."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, provider, body, content_type, headers, url, state FROM reports").fetchall()
    finally:
        conn.close()


# --- 200: stored before the answer ----------------------------------------------------------


def test_signed_report_is_committed_then_acknowledged(receiver: Callable[..., Running]) -> None:
    running = receiver(signed_config())
    response = running.post("/webhooks/sendgrid", SIGNED_BODY, SIGNED_HEADERS)
    assert response.status_code == 200
    assert response.json() == {"status": "stored", "report_id": 1}
    [(rid, provider, body, ctype, headers, url, state)] = reports_in(running.db)
    assert (rid, provider, bytes(body), ctype, state) == (1, "sendgrid", SIGNED_BODY, "application/json", "received")
    assert url == f"{running.url}/webhooks/sendgrid"
    assert json.loads(headers)["x-twilio-email-event-webhook-timestamp"] == "1600112502"
    assert running.count("odpmap_reports_stored_total", provider="sendgrid") == 1


def test_credentials_are_not_stored(receiver: Callable[..., Running]) -> None:
    running = receiver()
    response = running.post("/webhooks/vonage", b"messageId=1&status=delivered", {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "Basic dXNlcjpwYXNz", "Cookie": "a=b", "X-Custom": "kept",
    })
    assert response.status_code == 200
    headers = json.loads(reports_in(running.db)[0][4])
    assert "authorization" not in headers and "cookie" not in headers
    assert headers["x-custom"] == "kept"


def test_get_query_string_is_the_body(receiver: Callable[..., Running]) -> None:
    running = receiver()
    query = "msisdn=447700900000&to=Vonage&messageId=0A0000001234567B&status=delivered&err-code=0"
    response = running.http.get(f"{running.url}/webhooks/vonage?{query}")
    assert response.status_code == 200
    [row] = reports_in(running.db)
    assert bytes(row[2]) == query.encode()
    assert row[3] == "application/x-www-form-urlencoded"
    assert row[5] == f"{running.url}/webhooks/vonage?{query}"


# --- 404 / 405 --------------------------------------------------------------------------------


def test_unknown_provider_and_paths(receiver: Callable[..., Running]) -> None:
    running = receiver()
    for path in ("/webhooks/acme", "/webhooks/", "/webhooks/sendgrid/extra", "/", "/hooks/sendgrid"):
        response = running.post(path, b"[]", {"Content-Type": "application/json"})
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json"
    assert running.count("odpmap_webhooks_rejected_total", provider="_unknown", status="404") == 1
    assert reports_in(running.db) == []


def test_method_not_allowed(receiver: Callable[..., Running]) -> None:
    running = receiver()
    response = running.http.get(f"{running.url}/webhooks/sendgrid?a=1")  # SendGrid only POSTs JSON
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert running.http.put(f"{running.url}/webhooks/vonage", content=b"x").headers["allow"] == "GET, POST"
    assert running.http.post(f"{running.url}/healthz").status_code == 405


def test_methods_from_config(receiver: Callable[..., Running]) -> None:
    running = receiver(Config(providers={"vonage": ProviderConfig("vonage", methods=("GET",))}))
    assert running.post("/webhooks/vonage", b"status=delivered").status_code == 405
    assert running.http.get(f"{running.url}/webhooks/vonage?status=delivered").status_code == 200


# --- 401: signatures ------------------------------------------------------------------------


def test_forged_signatures_are_refused_and_not_stored(receiver: Callable[..., Running]) -> None:
    running = receiver(signed_config())
    timestamp = "X-Twilio-Email-Event-Webhook-Timestamp"
    signature = "X-Twilio-Email-Event-Webhook-Signature"
    cases = {
        "changed body": (b"payload", SIGNED_HEADERS),
        "body without its CRLF": (SIGNED_BODY.rstrip(b"\r\n"), SIGNED_HEADERS),
        "other signature": (SIGNED_BODY, {**SIGNED_HEADERS, signature: VECTOR["negative_cases"][2]["signature"]}),
        "other timestamp": (SIGNED_BODY, {**SIGNED_HEADERS, timestamp: "1600112503"}),
        "no signature": (SIGNED_BODY, {k: v for k, v in SIGNED_HEADERS.items() if k != signature}),
        "garbage signature": (SIGNED_BODY, {**SIGNED_HEADERS, signature: "!!!not base64"}),
    }
    for name, (body, headers) in cases.items():
        response = running.post("/webhooks/sendgrid", body, headers)
        assert response.status_code == 401, name
        assert response.json() == {"error": "signature verification failed"}
    assert running.count("odpmap_signature_failures_total", provider="sendgrid") == len(cases)
    assert running.count("odpmap_webhooks_rejected_total", provider="sendgrid", status="401") == len(cases)
    assert reports_in(running.db) == []
    assert running.store.list_dead_letters() == []
    # the genuine request still passes
    assert running.post("/webhooks/sendgrid", SIGNED_BODY, SIGNED_HEADERS).status_code == 200


def test_wrong_key_refuses_the_genuine_request(receiver: Callable[..., Running]) -> None:
    other = VECTOR["negative_cases"][0]["public_key_base64_der"]
    running = receiver(Config(providers={"sendgrid": ProviderConfig("sendgrid", secret_env="K", secret=other)}))
    assert running.post("/webhooks/sendgrid", SIGNED_BODY, SIGNED_HEADERS).status_code == 401


def test_without_a_secret_nothing_is_verified(receiver: Callable[..., Running]) -> None:
    running = receiver()
    assert running.post("/webhooks/sendgrid", SIGNED_BODY, {"Content-Type": "application/json"}).status_code == 200


# --- 413: body size ----------------------------------------------------------------------------


def raw_request(url: str, head: str) -> tuple[int, bytes]:
    """Send only a request head on a raw socket; return the status and the response."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_declared_length_over_the_limit_is_refused_before_reading(receiver: Callable[..., Running]) -> None:
    running = receiver(Config(server=ServerConfig(max_body_bytes=1000)))
    # the body is never sent: the answer must come from the Content-Length alone
    status, response = raw_request(running.url, (
        "POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000000000\r\n\r\n"
    ))
    assert status == 413
    assert b"connection: close" in response.lower()
    assert running.count("odpmap_webhooks_rejected_total", provider="sendgrid", status="413") == 1
    assert reports_in(running.db) == []


def test_streamed_body_over_the_limit(receiver: Callable[..., Running]) -> None:
    running = receiver(Config(server=ServerConfig(max_body_bytes=64 * 1024)))

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(20):
            yield b" " * 16 * 1024

    response = running.http.post(f"{running.url}/webhooks/sendgrid", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert reports_in(running.db) == []
    assert running.store.list_dead_letters() == []


def test_body_at_the_limit_is_accepted(receiver: Callable[..., Running]) -> None:
    body = json.dumps([{"email": "a@example.com", "event": "processed", "pad": ""}]).encode()
    limit = len(body) + 10
    running = receiver(Config(server=ServerConfig(max_body_bytes=limit)))
    exact = body.replace(b'"pad": ""', b'"pad": "' + b"x" * 10 + b'"')
    assert len(exact) == limit
    assert running.post("/webhooks/sendgrid", exact, {"Content-Type": "application/json"}).status_code == 200

    def two_chunks() -> Iterator[bytes]:
        yield exact
        yield b" "

    response = running.http.post(f"{running.url}/webhooks/sendgrid", content=two_chunks(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_overflow_reads_are_bounded(engine: Engine, tmp_path: Path) -> None:
    """Driven through the ASGI interface: an endless body is read up to limit + DRAIN_BYTES."""
    with Store(tmp_path / "db.sqlite3") as store:
        app = create_app(engine, store, Config(server=ServerConfig(max_body_bytes=1000)))
        received = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal received
            received += 4096
            return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/webhooks/sendgrid", "headers": [],
                 "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 80)}
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert received <= 1000 + DRAIN_BYTES + 2 * 4096


# --- 400: unreadable bodies become dead letters -----------------------------------------------


def test_unreadable_bodies_are_dead_letters(receiver: Callable[..., Running]) -> None:
    running = receiver()
    cases = [
        ("/webhooks/sendgrid", b'[{"email": "a@example.com", "event": ', "application/json", "invalid JSON"),
        ("/webhooks/sendgrid", b'[{"email": "caf\xe9"}]', "application/json", "not valid utf-8"),
        ("/webhooks/sendgrid", b"", "application/json", "empty body"),
        ("/webhooks/sendgrid", b"email=a%40example.com&event=open", "application/x-www-form-urlencoded",
         "invalid JSON"),
        ("/webhooks/vonage", b"<xml/>", "text/html", "cannot parse content type 'text/html'"),
    ]
    for path, body, ctype, expected in cases:
        response = running.post(path, body, {"Content-Type": ctype})
        assert response.status_code == 400, body
        assert expected in response.json()["error"]
    letters = running.store.list_dead_letters()
    assert [(r.dead_letter.provider, r.dead_letter.reason) for r in letters] == [
        ("sendgrid", "unparseable")] * 4 + [("vonage", "unparseable")]
    assert [r.dead_letter.item for r in letters] == [body for _, body, _, _ in cases]  # bytes kept exactly
    assert letters[4].dead_letter.content_type == "text/html"
    assert letters[0].dead_letter.details["url"] == f"{running.url}/webhooks/sendgrid"
    assert reports_in(running.db) == []
    assert running.count("odpmap_dead_lettered_total", provider="sendgrid", reason="unparseable") == 4


def test_content_types_from_config(receiver: Callable[..., Running]) -> None:
    config = Config(providers={"sendgrid": ProviderConfig("sendgrid", content_types=("application/json",))})
    running = receiver(config)
    body = b'[{"email": "a@example.com", "event": "processed"}]'
    response = running.post("/webhooks/sendgrid", body, {"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert "content type 'text/plain' is not accepted" in response.json()["error"]
    ok = running.post("/webhooks/sendgrid", body, {"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


# --- proxies and mounting -----------------------------------------------------------------------


def test_forwarded_headers_only_when_trusted(receiver: Callable[..., Running]) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com, proxy.internal",
                 "Content-Type": "application/x-www-form-urlencoded"}
    plain = receiver()
    plain.post("/webhooks/vonage?sig=1", b"status=delivered", forwarded)
    assert reports_in(plain.db)[0][5] == f"{plain.url}/webhooks/vonage?sig=1"
    trusting = receiver(Config(server=ServerConfig(trust_proxy_headers=True)))
    trusting.post("/webhooks/vonage?sig=1", b"status=delivered", forwarded)
    assert reports_in(trusting.db)[0][5] == "https://hooks.example.com/webhooks/vonage?sig=1"


def test_request_url() -> None:
    scope: dict[str, Any] = {"scheme": "http", "server": ("10.0.0.5", 8000), "path": "/webhooks/a b",
                             "query_string": b"x=1&y=%20"}
    assert request_url(scope, {}) == "http://10.0.0.5:8000/webhooks/a%20b?x=1&y=%20"
    assert request_url({**scope, "raw_path": b"/webhooks/a%20b"}, {"host": "h.example"}) == (
        "http://h.example/webhooks/a%20b?x=1&y=%20")
    headers = {"host": "h", "x-forwarded-proto": "javascript", "x-forwarded-host": "evil/path"}
    assert request_url(scope, headers, trust_proxy_headers=True).startswith("http://h/")  # invalid values ignored
    assert request_url({**scope, "server": ("h", 443), "scheme": "https", "query_string": b""}, {}) == (
        "https://h/webhooks/a%20b")


def test_mounted_under_a_prefix(engine: Engine, tmp_path: Path, http: httpx.Client) -> None:
    """As Starlette's Mount does it: root_path set, path kept whole, raw_path untouched."""
    with Store(tmp_path / "db.sqlite3") as store:
        inner = create_app(engine, store, Config())

        async def outer(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/odpmap/"):
                await inner({**scope, "root_path": "/odpmap"}, receive, send)
                return
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 418, "headers": []})
                await send({"type": "http.response.body", "body": b""})

        with BackgroundServer(outer) as server:
            assert http.get(f"{server.url}/odpmap/healthz").json() == {"status": "ok"}
            assert http.get(f"{server.url}/healthz").status_code == 418
            response = http.post(f"{server.url}/odpmap/webhooks/vonage", content=b"status=delivered")
            assert response.status_code == 200
        [report] = store.pending_reports()
        assert report.url == f"{server.url}/odpmap/webhooks/vonage"


# --- Amazon SNS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sns_cert() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650)).sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


def sns_message(key: rsa.RSAPrivateKey, kind: str, **fields: str) -> bytes:
    """An SNS envelope signed as SNS signs it (SignatureVersion 2)."""
    message = {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=y",
        "Timestamp": "2024-04-26T20:45:04.751Z",
        **fields,
    }
    if kind == "Notification":
        message.pop("Token")
        message.pop("SubscribeURL")
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    message.update(SignatureVersion="2", Signature=base64.b64encode(signature).decode(),
                   SigningCertURL="https://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem")
    return json.dumps(message).encode()


def sns_headers(kind: str) -> dict[str, str]:
    return {"x-amz-sns-message-type": kind, "Content-Type": "text/plain; charset=UTF-8"}


def test_sns_subscription_is_confirmed(receiver: Callable[..., Running], sns_cert: Any) -> None:
    key, pem = sns_cert
    running = receiver(Config(providers={"snsdemo": ProviderConfig("snsdemo", secret_env="PEM", secret=pem)}))
    body = sns_message(key, "SubscriptionConfirmation")
    response = running.post("/webhooks/snsdemo", body, sns_headers("SubscriptionConfirmation"))
    assert (response.status_code, response.json()) == (200, {"status": "confirmed"})
    assert running.fetched == ["https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=y"]
    assert reports_in(running.db) == []  # not a report
    assert running.count("odpmap_sns_confirmations_total", provider="snsdemo",
                         type="SubscriptionConfirmation", result="confirmed") == 1


@pytest.mark.parametrize("url", [
    "https://sns.us-west-2.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    "https://evil.example/?Action=ConfirmSubscription",
    "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.us-west-2.amazonaws.com:8443/?Action=ConfirmSubscription",
    "https://user@sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
])
def test_sns_foreign_subscribe_url_is_refused(receiver: Callable[..., Running], sns_cert: Any, url: str) -> None:
    key, pem = sns_cert
    running = receiver(Config(providers={"snsdemo": ProviderConfig("snsdemo", secret_env="PEM", secret=pem)}))
    body = sns_message(key, "SubscriptionConfirmation", SubscribeURL=url)  # validly signed, foreign URL
    response = running.post("/webhooks/snsdemo", body, sns_headers("SubscriptionConfirmation"))
    assert response.status_code == 400
    assert running.fetched == []


def test_sns_confirmation_with_a_bad_signature_is_not_fetched(receiver: Callable[..., Running],
                                                              sns_cert: Any) -> None:
    key, pem = sns_cert
    running = receiver(Config(providers={"snsdemo": ProviderConfig("snsdemo", secret_env="PEM", secret=pem)}))
    body = sns_message(key, "SubscriptionConfirmation").replace(b"ConfirmSubscription", b"ConfirmSubscriptioN")
    response = running.post("/webhooks/snsdemo", body, sns_headers("SubscriptionConfirmation"))
    assert response.status_code == 401
    assert running.fetched == []


def test_sns_unsubscribe_and_notification(receiver: Callable[..., Running], sns_cert: Any) -> None:
    key, pem = sns_cert
    running = receiver(Config(providers={"snsdemo": ProviderConfig("snsdemo", secret_env="PEM", secret=pem)}))
    response = running.post("/webhooks/snsdemo", sns_message(key, "UnsubscribeConfirmation"),
                            sns_headers("UnsubscribeConfirmation"))
    assert (response.status_code, response.json()) == (200, {"status": "acknowledged"})
    notification = sns_message(key, "Notification", Message='{"notificationType": "Delivery"}')
    response = running.post("/webhooks/snsdemo", notification, sns_headers("Notification"))
    assert response.json() == {"status": "stored", "report_id": 1}
    assert running.fetched == []


def test_sns_without_a_secret_still_checks_the_url(receiver: Callable[..., Running], sns_cert: Any) -> None:
    key, _ = sns_cert
    running = receiver()
    ok = sns_message(key, "SubscriptionConfirmation")
    assert running.post("/webhooks/snsdemo", ok, sns_headers("SubscriptionConfirmation")).status_code == 200
    bad = sns_message(key, "SubscriptionConfirmation", SubscribeURL="https://evil.example/")
    assert running.post("/webhooks/snsdemo", bad, sns_headers("SubscriptionConfirmation")).status_code == 400
    assert len(running.fetched) == 1


def test_sns_topics_outside_topic_arns_are_refused(receiver: Callable[..., Running], sns_cert: Any) -> None:
    """A valid SNS signature proves SNS sent it, not that it is our topic."""
    key, pem = sns_cert
    ours = "arn:aws:sns:us-west-2:123456789012:MyTopic"
    spec = ProviderConfig("snsdemo", secret_env="PEM", secret=pem, topic_arns=(ours,))
    running = receiver(Config(providers={"snsdemo": spec}))
    foreign = "arn:aws:sns:us-west-2:999999999999:AttackerTopic"
    for kind in ("SubscriptionConfirmation", "Notification"):
        extra = {"Message": '{"notificationType": "Delivery"}'} if kind == "Notification" else {}
        body = sns_message(key, kind, TopicArn=foreign, **extra)
        assert running.post("/webhooks/snsdemo", body, sns_headers(kind)).status_code == 403
    assert running.fetched == [] and reports_in(running.db) == []
    assert running.count("odpmap_sns_foreign_topics_total", provider="snsdemo") == 2
    # Our own topic still goes through.
    body = sns_message(key, "SubscriptionConfirmation")
    assert running.post("/webhooks/snsdemo", body, sns_headers("SubscriptionConfirmation")).status_code == 200


def test_is_trusted_sns_url() -> None:
    assert is_trusted_sns_url("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription")
    assert is_trusted_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x")
    assert not is_trusted_sns_url("https://sns.eu-west-1.amazonaws.com.cn.evil/x")
    assert not is_trusted_sns_url("https://SNS.evil/x")
    assert not is_trusted_sns_url("https://sns.eu-west-1.amazonaws.com:99999/x")


# --- /healthz and /metrics ----------------------------------------------------------------------

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)\})?'
    r' (?P<value>-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\+Inf|-Inf|NaN))$'
)


def parse_metrics(text: str) -> dict[str, float]:
    """Check the exposition format strictly; return ``{"name{labels}": value}``."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            typed[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert match["name"] in typed, f"{match['name']} has no TYPE line"
        key = match["name"] + (f"{{{match['labels']}}}" if match["labels"] else "")
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(match["value"])
    assert set(typed) == set(METRICS)
    return samples


def test_metrics_parse_and_move(receiver: Callable[..., Running]) -> None:
    running = receiver(signed_config())
    before = parse_metrics(running.http.get(f"{running.url}/metrics").text)
    assert before['odpmap_reports_stored_total{provider="sendgrid"}'] == 0
    assert before["odpmap_reports_pending"] == 0

    running.post("/webhooks/sendgrid", SIGNED_BODY, SIGNED_HEADERS)
    running.post("/webhooks/sendgrid", b"forged", SIGNED_HEADERS)
    running.post("/webhooks/vonage", b"<x>", {"Content-Type": "text/xml"})
    running.post("/webhooks/nope", b"")

    response = running.http.get(f"{running.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse_metrics(response.text)
    assert after['odpmap_webhooks_received_total{provider="sendgrid"}'] == 2
    assert after['odpmap_reports_stored_total{provider="sendgrid"}'] == 1
    assert after['odpmap_signature_failures_total{provider="sendgrid"}'] == 1
    assert after['odpmap_webhooks_rejected_total{provider="sendgrid",status="401"}'] == 1
    assert after['odpmap_webhooks_rejected_total{provider="vonage",status="400"}'] == 1
    assert after['odpmap_webhooks_rejected_total{provider="_unknown",status="404"}'] == 1
    assert after['odpmap_dead_lettered_total{provider="vonage",reason="unparseable"}'] == 1
    assert after["odpmap_reports_pending"] == 1  # gauges come from the store
    assert after['odpmap_dead_letters{reason="unparseable"}'] == 1
    assert after["odpmap_outbox_depth"] == 0


def test_healthz(receiver: Callable[..., Running]) -> None:
    running = receiver()
    response = running.http.get(f"{running.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    running.app.health = lambda: {"dispatch_error": "403 from ODP"}
    assert running.http.get(f"{running.url}/healthz").json() == {"status": "degraded", "dispatch_error": "403 from ODP"}
