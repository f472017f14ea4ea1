"""The Mailgun puller against a real loopback HTTP server serving the Events API.

The server and the recorded pages are odpmap's test helpers (tests/pull_server.py,
tests/data/pull/); ``odpmap pull`` end to end is tested in tests/test_pull.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from odpmap import Engine
from odpmap.errors import ConfigError
from odpmap.pull import PullError, collect_pullers, puller_options, run_pull
from odpmap.store import Store
from odpmap_mailgun.pull import DEFAULT_BASE_URL, EU_BASE_URL, MailgunPuller, mailgun_puller

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from pull_server import MailgunEvents, PullServer, load_pages  # noqa: E402

DOMAIN = "mg.example.com"
KEY = "key-test"
NOW = 1_700_000_000.0
EVENTS = [item for page in load_pages("mailgun-events") for item in page["items"]]
FIRST_TS = EVENTS[0]["timestamp"]


@pytest.fixture
def server() -> Iterator[PullServer]:
    with PullServer() as srv:
        srv.app = MailgunEvents(srv, EVENTS, domain=DOMAIN, api_key=KEY)
        yield srv


def puller(server: PullServer, **kw) -> MailgunPuller:  # type: ignore[no-untyped-def]
    kw.setdefault("since", FIRST_TS - 10)
    kw.setdefault("limit", 4)
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("backoff_base", 0.0)
    return MailgunPuller(api_key=KEY, domain=DOMAIN, base_url=f"{server.base_url}/v3", clock=lambda: NOW, **kw)


def test_pages_follow_next_until_an_empty_page_each_with_the_newest_time_as_cursor(server: PullServer) -> None:
    pages = list(puller(server).pull(None))
    assert [len(json.loads(p.body)["items"]) for p in pages] == [4, 4, 3]
    assert [json.loads(p.cursor or "") for p in pages] == [
        {"begin": EVENTS[3]["timestamp"]}, {"begin": EVENTS[7]["timestamp"]}, {"begin": EVENTS[10]["timestamp"]}]
    assert {p.content_type for p in pages} == {"application/json"}
    requests = server.requests()
    assert len(requests) == 4
    assert requests[0].query == {"begin": [str(int(FIRST_TS - 10))], "end": [str(int(NOW - 1800))],
                                 "ascending": ["yes"], "limit": ["4"]}
    assert all(r.query == {} and r.path.startswith(f"/v3/{DOMAIN}/events/") for r in requests[1:])
    assert {r.basic_auth() for r in requests} == {("api", KEY)}


def test_the_window_defaults_to_a_day_ago_until_half_an_hour_ago(server: PullServer) -> None:
    p = MailgunPuller(api_key=KEY, domain=DOMAIN, base_url=f"{server.base_url}/v3", clock=lambda: NOW)
    assert p.window(None) == (NOW - 86400, NOW - 1800)
    assert p.window('{"begin": 1600000000.25}') == (1600000000.25, NOW - 1800)
    assert MailgunPuller(api_key=KEY, domain=DOMAIN, until=NOW - 60, clock=lambda: NOW).window(None)[1] == NOW - 60


def test_events_younger_than_the_settle_time_wait_for_the_next_run(server: PullServer) -> None:
    latest = EVENTS[-1]["timestamp"]
    p = puller(server, settle=NOW - latest)  # the window ends exactly at the newest event
    assert sum(len(json.loads(pg.body)["items"]) for pg in p.pull(None)) == len(EVENTS) - 1
    p = puller(server, settle=NOW - latest - 1)
    assert sum(len(json.loads(pg.body)["items"]) for pg in p.pull(None)) == len(EVENTS)


def test_nothing_is_asked_when_the_window_is_empty(server: PullServer) -> None:
    assert list(puller(server).pull(json.dumps({"begin": NOW}))) == []
    assert server.requests() == []


def test_5xx_and_429_are_retried_with_backoff_and_retry_after(server: PullServer) -> None:
    waits: list[float] = []
    server.fail(503)
    server.fail(429, headers={"Retry-After": "7"})
    pages = list(puller(server, sleep=waits.append, backoff_base=0.5).pull(None))
    assert len(pages) == 3 and waits == [0.5, 7.0]


def test_the_api_failing_for_good_is_a_retryable_pull_error(server: PullServer) -> None:
    server.fail(502, times=3, when=lambda r: r.path != f"/v3/{DOMAIN}/events")
    pages = puller(server, max_retries=2).pull(None)
    assert len(json.loads(next(pages).body)["items"]) == 4
    with pytest.raises(PullError, match=r"502 Bad Gateway for http://127\.0\.0\.1:\d+/v3/mg\.example\.com/events/\S+ "
                                        r"\(after 3 attempts\)") as info:
        next(pages)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "401 Unauthorized: the credentials were refused"), (404, "404 Not Found for http://127.0.0.1")],
)
def test_refused_credentials_or_a_wrong_domain_are_not_retried(server: PullServer, status: int, message: str) -> None:
    server.fail(status)
    with pytest.raises(PullError, match=message) as info:
        list(puller(server).pull(None))
    assert not info.value.retryable and len(server.requests()) == 1


def test_wrong_key_is_refused_by_the_api(server: PullServer) -> None:
    p = MailgunPuller(api_key="key-wrong", domain=DOMAIN, base_url=f"{server.base_url}/v3", since=FIRST_TS)
    with pytest.raises(PullError, match="credentials were refused"):
        list(p.pull(None))


def test_a_next_url_on_another_host_is_refused_before_any_request_goes_there(server: PullServer) -> None:
    with PullServer() as elsewhere:
        server.app.next_base = "https://evil.example"  # type: ignore[attr-defined]
        pages = puller(server).pull(None)
        next(pages)
        with pytest.raises(PullError, match="refusing to follow a link to another host: 'https://evil.example/v3/") as info:
            next(pages)
        assert not info.value.retryable
        server.app.next_base = elsewhere.base_url  # type: ignore[attr-defined]
        with pytest.raises(PullError, match="another host"):
            list(puller(server).pull(None))
        assert elsewhere.requests() == []


def test_a_page_that_is_not_an_events_page(server: PullServer) -> None:
    server.app = lambda request: (200, {"Content-Type": "application/json"}, b'{"message": "hi"}')
    with pytest.raises(PullError, match="not an Events API page") as info:
        list(puller(server).pull(None))
    assert info.value.retryable


def test_an_unreadable_cursor_says_how_to_start_over(server: PullServer) -> None:
    with pytest.raises(PullError, match=r"unreadable cursor 'nope' \(pull with --reset\)"):
        list(puller(server).pull("nope"))


def test_the_factory_takes_strings_from_the_environment() -> None:
    environ = {"ODPMAP_MAILGUN_API_KEY": KEY, "ODPMAP_MAILGUN_DOMAIN": DOMAIN, "ODPMAP_MAILGUN_BASE_URL": EU_BASE_URL,
               "ODPMAP_MAILGUN_SINCE": "2024-05-01", "ODPMAP_MAILGUN_LIMIT": "100", "ODPMAP_MAILGUN_SETTLE": "600"}
    p = mailgun_puller(**puller_options(mailgun_puller, "mailgun", environ=environ))
    assert (p.base_url, p.since, p.limit, p.settle) == (EU_BASE_URL, 1714521600.0, 100, 600.0)
    assert mailgun_puller(api_key=KEY, domain=DOMAIN).base_url == DEFAULT_BASE_URL == "https://api.mailgun.net/v3"
    with pytest.raises(ConfigError, match="limit must be 1 to 300"):
        mailgun_puller(api_key=KEY, domain=DOMAIN, limit="301")
    with pytest.raises(ConfigError, match="is not a sending domain"):
        mailgun_puller(api_key=KEY, domain="mg.example.com/../x")


def test_the_plugin_registers_the_puller() -> None:
    engine = Engine(load_plugins=["mailgun"], environ={})
    entry = collect_pullers(engine).entry("mailgun")
    assert (entry.value, entry.source) == (mailgun_puller, "odpmap-mailgun 0.1.0")


def test_pulled_pages_map_with_the_mailgun_mapping_and_resume_without_duplicates(
    server: PullServer, tmp_path: Path
) -> None:
    engine = Engine(load_plugins=["mailgun"], environ={})
    with Store(tmp_path) as store:
        first = run_pull(engine, store, "mailgun", puller(server), max_pages=2)
        rest = run_pull(engine, store, "mailgun", puller(server))
        # the second run starts at the second of page 2's last item (a skipped "rejected"),
        # which it reads again and skips again
        assert (first.stored, rest.stored, rest.already_stored) == (5, 2, 0)
        assert first.counts.received + rest.counts.received == len(EVENTS) + 1
        assert store.status()["outbox_pending"] == 7
