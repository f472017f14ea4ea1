"""OdpSink against a real HTTP server on 127.0.0.1 (tests/odp_server.py), no network."""

from __future__ import annotations

import email.utils
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from odpmap.errors import DispatchError
from odpmap.odp import (
    AU1_BASE_URL,
    DEFAULT_BASE_URL,
    EU1_BASE_URL,
    OdpSink,
    base_url_for_api_key,
    ensure_idempotence_id,
    parse_retry_after,
)
from odpmap.sinks import Sink

sys.path.insert(0, str(Path(__file__).parent))  # for odp_server (import mode importlib)
from odp_server import (
    FakeOdpServer,
    drop,
    forbidden,
    invalids,
    not_found,
    slow,
    status,
    too_many,
)


@pytest.fixture
def fake_odp() -> Iterator[FakeOdpServer]:
    """The fake ODP API on a free loopback port."""
    with FakeOdpServer() as server:
        yield server


def make_events(count: int, *, pad: int = 0) -> list[dict[str, Any]]:
    """``count`` small valid-looking email events (``pad`` extra bytes each)."""
    return [
        {
            "type": "email",
            "action": "delivery",
            "identifiers": {"email": f"user{i}@example.com"},
            "data": {"ts": 1_700_000_000 + i, "value": "x" * pad},
        }
        for i in range(count)
    ]


class MaxJitter(random.Random):
    """A random source whose ``uniform`` returns the upper bound: jitter made visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Delays(list[float]):
    """A fake ``sleep`` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def delays() -> Delays:
    return Delays()


SinkFactory = Callable[..., OdpSink]


@pytest.fixture
def sink_for(fake_odp: FakeOdpServer, delays: Delays) -> Iterator[SinkFactory]:
    """Build OdpSinks aimed at the fake server with the recording sleep; closes them."""
    made: list[OdpSink] = []

    def build(**options: Any) -> OdpSink:
        options.setdefault("sleep", delays)
        sink = OdpSink(api_key="test-key", base_url=fake_odp.base_url, **options)
        made.append(sink)
        return sink

    yield build
    for sink in made:
        sink.close()


# --- region and configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        ("W4WzcEs-ABgXorzY7h1LCQ", DEFAULT_BASE_URL),
        ("W4WzcEs-ABgXorzY7h1LCQ-eu1", EU1_BASE_URL),
        ("W4WzcEs-ABgXorzY7h1LCQ-au1", AU1_BASE_URL),
        ("public-eu1.secret-part", EU1_BASE_URL),  # private key: region of the public part
        ("public-au1.secret-part", AU1_BASE_URL),
        ("public.secret-eu1", DEFAULT_BASE_URL),  # a suffix on the secret does not count
        ("a.b-au1.secret", AU1_BASE_URL),  # only the part after the last dot is dropped
        ("public-us1", DEFAULT_BASE_URL),
        ("public-EU1", DEFAULT_BASE_URL),  # the SDK compares case-sensitively
    ],
)
def test_region_from_api_key(api_key: str, expected: str) -> None:
    assert base_url_for_api_key(api_key) == expected
    with OdpSink(api_key=api_key) as sink:
        assert sink.url == f"{expected}/events"


def test_region_request_goes_to_regional_host_without_network() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"title": "Accepted", "status": 202})

    with OdpSink(api_key="key-eu1", transport=httpx.MockTransport(handler)) as sink:
        assert sink.send(make_events(2)).sent == 2
    assert str(seen[0].url) == "https://api.eu1.odp.optimizely.com/v3/events"
    assert seen[0].headers["x-api-key"] == "key-eu1"


def test_base_url_overrides_region() -> None:
    with OdpSink(api_key="key-eu1", base_url="https://odp.example.test/v3/") as sink:
        assert sink.url == "https://odp.example.test/v3/events"


@pytest.mark.parametrize(
    "base_url", ["ftp://odp.example.test/v3", "api.zaius.com/v3", "https:///v3"]
)
def test_base_url_must_be_http(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url must be an http"):
        OdpSink(api_key="k", base_url=base_url)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": 501},
        {"max_bytes": 10},
        {"max_retries": -1},
        {"timeout": 0},
    ],
)
def test_bad_options_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        OdpSink(api_key="k", **options)


def test_empty_api_key_rejected() -> None:
    with pytest.raises(ValueError, match="api_key"):
        OdpSink(api_key="")


def test_is_a_sink() -> None:
    with OdpSink(api_key="k", batch_size=500) as sink:
        assert isinstance(sink, Sink)
        assert sink.name == "odp"


# --- requests, batching ----------------------------------------------------------------


def test_request_shape_and_connection_reuse(fake_odp: FakeOdpServer, sink_for: SinkFactory) -> None:
    sink = sink_for(batch_size=2)
    events = make_events(5)
    report = sink.send(events)
    assert (report.sent, report.rejected) == (5, [])
    requests = fake_odp.requests()
    assert [len(r.events or []) for r in requests] == [2, 2, 1]
    for request in requests:
        assert request.path == "/v3/events"
        assert request.headers["x-api-key"] == "test-key"
        assert request.headers["content-type"] == "application/json"
        assert isinstance(json.loads(request.body), list)
    assert len({r.client_port for r in requests}) == 1  # one kept-alive connection
    assert fake_odp.events() == events
    assert sink.stats == {"requests": 3, "retries": 0, "sent": 5, "rejected": 0}


def test_default_batch_size_is_100(fake_odp: FakeOdpServer, sink_for: SinkFactory) -> None:
    sink = sink_for()
    assert sink.send(make_events(250)).sent == 250
    assert [len(r.events or []) for r in fake_odp.requests()] == [100, 100, 50]


def test_byte_cap_splits_requests(fake_odp: FakeOdpServer, sink_for: SinkFactory) -> None:
    sink = sink_for(max_bytes=5_000)
    events = make_events(20, pad=900)
    assert sink.send(events).sent == 20
    bodies = [r.body for r in fake_odp.requests()]
    assert len(bodies) > 1
    assert all(len(body) <= 5_000 for body in bodies)
    assert max(len(body) for body in bodies) > 5_000 - 1_100  # requests are filled up
    assert fake_odp.events() == events  # order kept


def test_event_over_byte_cap_is_rejected_alone(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    sink = sink_for(max_bytes=2_000)
    events = make_events(3)
    events[1]["data"]["value"] = "y" * 3_000
    report = sink.send(events)
    assert report.sent == 2
    assert [index for index, _ in report.rejected] == [1]
    assert "over the request cap of 2000" in report.rejected[0][1]
    assert fake_odp.events() == [events[0], events[2]]


# --- idempotence ids -------------------------------------------------------------------


def test_ensure_idempotence_id_sets_once() -> None:
    event: dict[str, Any] = {"type": "email", "action": "open", "identifiers": {"email": "a@b.c"}}
    assert ensure_idempotence_id(event) is event
    first = event["data"]["idempotence_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", first)
    ensure_idempotence_id(event)
    assert event["data"]["idempotence_id"] == first
    kept = {"data": {"idempotence_id": "fixed-id"}}
    assert ensure_idempotence_id(kept)["data"]["idempotence_id"] == "fixed-id"
    with pytest.raises(TypeError, match="'data' must be an object"):
        ensure_idempotence_id({"data": [1]})


def test_send_assigns_missing_ids_and_keeps_existing(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    events = make_events(2)
    events[0]["data"]["idempotence_id"] = "from-the-outbox"
    sink_for().send(events)
    sent = fake_odp.idempotence_ids()
    assert sent[0] == "from-the-outbox"
    assert sent[1] == events[1]["data"]["idempotence_id"]  # assigned in place


# --- retries ---------------------------------------------------------------------------


def test_5xx_burst_is_retried_with_the_same_ids(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(status(500), status(502), status(503))
    sink = sink_for()
    report = sink.send(make_events(3))
    assert report.sent == 3
    requests = fake_odp.requests()
    assert [r.status for r in requests] == [500, 502, 503, 202]
    ids = [[e["data"]["idempotence_id"] for e in r.events or []] for r in requests]
    assert all(batch == ids[0] for batch in ids)  # stable across retries
    assert len(delays) == 3
    assert sink.stats == {"requests": 4, "retries": 3, "sent": 3, "rejected": 0}


def test_backoff_doubles_up_to_the_cap_then_gives_up(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(*[status(503)] * 6)
    sink = sink_for(rng=MaxJitter(), backoff_base=0.5, backoff_max=3.0, max_retries=5)
    with pytest.raises(DispatchError) as caught:
        sink.send(make_events(1))
    assert caught.value.retryable is True
    assert "after 6 attempt(s)" in str(caught.value)
    assert "HTTP 503" in str(caught.value)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(fake_odp.requests()) == 6
    assert fake_odp.events() == []


def test_jitter_stays_within_the_exponential_bounds(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(*[status(500)] * 8)
    sink = sink_for(rng=random.Random(7), backoff_base=0.5, backoff_max=30.0, max_retries=8)
    assert sink.send(make_events(1)).sent == 1
    caps = [min(30.0, 0.5 * 2**attempt) for attempt in range(8)]
    assert len(delays) == 8
    assert all(0.0 <= delay <= cap for delay, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == 8  # jittered, not a fixed schedule
    assert sum(delays[4:]) > sum(delays[:4])  # later waits are longer on the whole


def test_429_retry_after_seconds_is_honoured_and_capped(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(too_many("7"), too_many("120"), too_many())
    sink = sink_for(rng=MaxJitter(), backoff_max=30.0)
    assert sink.send(make_events(2)).sent == 2
    assert delays == [7.0, 30.0, 2.0]  # header, capped header, backoff (attempt 2)


def test_retry_after_http_date(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(too_many(email.utils.formatdate(time.time() + 6, usegmt=True), code=503))
    assert sink_for().send(make_events(1)).sent == 1
    assert 4.0 <= delays[0] <= 6.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_relative_to_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_timeout_is_retried_and_may_duplicate(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(slow(0.6))
    sink = sink_for(timeout=0.2)
    events = make_events(2)
    assert sink.send(events).sent == 2
    assert sink.stats["retries"] == 1
    fake_odp.wait_for(lambda server: server.in_flight() == 0)
    ids = [e["data"]["idempotence_id"] for e in events]
    # the slow request was accepted after the client gave up: a duplicate, same ids
    assert sorted(fake_odp.idempotence_ids()) == sorted(ids * 2)


def test_dropped_connection_is_retried(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(drop(), drop())
    sink = sink_for()
    assert sink.send(make_events(3)).sent == 3
    assert [r.behaviour for r in fake_odp.requests()] == ["drop", "drop", "respond"]
    assert len(delays) == 2


def test_refused_connection_is_retryable(delays: Delays) -> None:
    with FakeOdpServer() as server:
        base_url = server.base_url
    sink = OdpSink(api_key="k", base_url=base_url, sleep=delays, max_retries=2)
    with sink, pytest.raises(DispatchError) as caught:
        sink.send(make_events(1))
    assert caught.value.retryable is True
    assert "ConnectError" in str(caught.value)
    assert len(delays) == 2


# --- errors that are not retried -------------------------------------------------------


def test_403_is_final_and_says_the_key_is_wrong(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(forbidden())
    with pytest.raises(DispatchError) as caught:
        sink_for().send(make_events(2))
    assert caught.value.retryable is False
    assert caught.value.sink == "odp"
    assert "API key is wrong or lacks permission" in str(caught.value)
    assert delays == [] and len(fake_odp.requests()) == 1


def test_404_is_final_and_names_the_url(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(not_found())
    with pytest.raises(DispatchError) as caught:
        sink_for().send(make_events(1))
    assert caught.value.retryable is False
    assert f"{fake_odp.base_url}/events" in str(caught.value)
    assert delays == []


def test_wrong_base_path_gives_404(fake_odp: FakeOdpServer, delays: Delays) -> None:
    sink = OdpSink(api_key="k", base_url=fake_odp.base_url + "/v3", sleep=delays)
    with sink, pytest.raises(DispatchError, match=r"404 Not Found for .*/v3/v3/events"):
        sink.send(make_events(1))


def test_other_client_error_is_final(
    fake_odp: FakeOdpServer, sink_for: SinkFactory, delays: Delays
) -> None:
    fake_odp.enqueue(status(422, {"message": "Unprocessable"}))
    with pytest.raises(DispatchError, match=r"422 .*Unprocessable") as caught:
        sink_for().send(make_events(1))
    assert caught.value.retryable is False
    assert delays == []


# --- 400: per-event rejections ---------------------------------------------------------


def test_400_invalids_are_rejected_and_the_rest_resent(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    fake_odp.enqueue(invalids([1, 3]))
    sink = sink_for()
    events = make_events(5)
    report = sink.send(events)
    assert report.sent == 3
    assert [index for index, _ in report.rejected] == [1, 3]
    assert "field 'bad_field' is not defined" in report.rejected[0][1]
    resent = fake_odp.requests()[1].events
    assert resent == [events[0], events[2], events[4]]  # same ids, invalid ones left out
    assert fake_odp.events() == [events[0], events[2], events[4]]
    assert sink.stats == {"requests": 2, "retries": 0, "sent": 3, "rejected": 2}


def test_400_indexes_are_mapped_to_the_send_call(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    fake_odp.enqueue(status(202), invalids([1]))  # batches [0, 1], [2, 3], [4]
    events = make_events(5)
    report = sink_for(batch_size=2).send(events)
    assert [index for index, _ in report.rejected] == [3]
    assert report.sent == 4
    assert fake_odp.events() == [events[0], events[1], events[2], events[4]]


def test_400_with_only_out_of_range_invalids_rejects_the_batch(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    body = {"detail": {"invalids": [{"event": 7, "message": "no such event"}]}}
    fake_odp.enqueue(invalids([], body=body))
    report = sink_for().send(make_events(2))
    assert report.sent == 0
    assert [index for index, _ in report.rejected] == [0, 1]
    assert all("whole request" in message for _, message in report.rejected)


def test_400_without_invalids_rejects_the_batch(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    fake_odp.enqueue(status(400, {"title": "Bad Request", "detail": "payload is not valid JSON"}))
    report = sink_for().send(make_events(3))
    assert report.sent == 0
    assert [index for index, _ in report.rejected] == [0, 1, 2]
    assert all("payload is not valid JSON" in message for _, message in report.rejected)


def test_400_with_repeated_index_joins_messages(
    fake_odp: FakeOdpServer, sink_for: SinkFactory
) -> None:
    body = {
        "detail": {
            "invalids": [
                {"event": 0, "message": "bad ts"},
                {"event": 0, "message": "bad email"},
                {"event": "1", "message": "not an index"},
            ]
        }
    }
    fake_odp.enqueue(invalids([], body=body))
    report = sink_for().send(make_events(2))
    assert report.rejected == [(0, "ODP rejected the event: bad ts; bad email")]
    assert report.sent == 1


def test_odp_sink_is_registered_with_the_engine(fake_odp: FakeOdpServer) -> None:
    """Embedding apps get the ODP sink by name, like the built-in stdout and jsonl sinks."""
    from odpmap import Engine

    engine = Engine(autoload=False)
    sink = engine.sink("odp", api_key="test-key", base_url=fake_odp.base_url)
    try:
        result = engine.map("vonage", b"msisdn=447700900001&status=delivered&err-code=0"
                                      b"&message-timestamp=2024-01-01+00%3A00%3A00&messageId=m1")
        report = engine.dispatch(result.events, sink)
    finally:
        sink.close()
    assert report.sent == 1 and report.rejected == []
    (received,) = fake_odp.events()
    assert received["identifiers"] == {"phone": "+447700900001"}
    assert received["data"]["idempotence_id"] == result.events[0]["data"]["idempotence_id"]
