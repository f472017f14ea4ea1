"""The Twilio puller against a real loopback HTTP server serving the Messages list.

The server and the recorded pages are odpmap's test helpers (tests/pull_server.py,
tests/data/pull/); ``odpmap pull`` end to end is tested in tests/test_pull.py.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from odpmap import Engine
from odpmap.errors import ConfigError
from odpmap.pull import PullError, collect_pullers, puller_options, run_pull
from odpmap.store import Store
from odpmap_twilio.pull import DEFAULT_BASE_URL, TwilioPuller, twilio_puller

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from pull_server import PullServer, TwilioMessages, load_pages  # noqa: E402

ACCOUNT = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
TOKEN = "token-test"
PAGES = load_pages("twilio-messages")
MESSAGES = [m for page in PAGES for m in page["messages"]]
NOW = 1441500000.0  # Sun, 06 Sep 2015 00:40:00 UTC, the day after the newest message
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@pytest.fixture
def server() -> Iterator[PullServer]:
    with PullServer() as srv:
        srv.app = TwilioMessages(srv, copy.deepcopy(MESSAGES), account_sid=ACCOUNT, auth_token=TOKEN)
        yield srv


def puller(server: PullServer, **kw) -> TwilioPuller:  # type: ignore[no-untyped-def]
    kw.setdefault("page_size", 3)
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("clock", lambda: NOW)
    return TwilioPuller(account_sid=ACCOUNT, auth_token=TOKEN, base_url=server.base_url, **kw)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(load_plugins=["twilio"], environ={})
    yield engine
    engine.close()


def test_a_first_run_lists_the_last_day_by_date_sent_and_follows_next_page_uri(server: PullServer) -> None:
    pages = list(puller(server, lookback=2 * 86400).pull(None))
    assert [len(json.loads(p.body)["messages"]) for p in pages] == [3, 2]  # sent on Sep 4 or later
    first = server.requests()[0]
    assert (first.path, first.query) == (LIST, {"PageSize": ["3"], "DateSent>": ["2015-09-04"]})
    assert first.basic_auth() == (ACCOUNT, TOKEN)
    assert [json.loads(p.cursor or "") for p in pages] == [
        {"next": json.loads(pages[0].body)["next_page_uri"], "started": NOW, "scanned_to": None},
        {"scanned_to": NOW},
    ]


def test_since_sets_the_first_day_and_the_cursor_the_next_ones(server: PullServer) -> None:
    assert len(list(puller(server, since=1441065600).pull(None))) == 3  # 2015-09-01: all 7 messages
    list(puller(server, lookback=3600).pull(json.dumps({"scanned_to": NOW - 86400})))  # 2015-09-04 23:40
    assert server.requests()[-2].query["DateSent>"] == ["2015-09-04"]


def test_a_stopped_run_goes_on_with_its_next_page(server: PullServer) -> None:
    state = {"next": PAGES[0]["next_page_uri"], "started": NOW - 60, "scanned_to": None}
    pages = list(puller(server).pull(json.dumps(state)))
    assert [r.target for r in server.requests()] == [PAGES[0]["next_page_uri"], PAGES[1]["next_page_uri"]]
    assert json.loads(pages[-1].cursor or "") == {"scanned_to": NOW - 60}  # the stopped run's start


def test_an_empty_list_still_completes_the_run(server: PullServer) -> None:
    pages = list(puller(server).pull(json.dumps({"scanned_to": NOW + 10 * 86400})))
    assert len(pages) == 1 and json.loads(pages[0].body)["messages"] == []
    assert json.loads(pages[0].cursor or "") == {"scanned_to": NOW}


def test_a_changed_status_is_a_new_event_and_an_unchanged_one_is_not_stored_again(
    server: PullServer, tmp_path: Path, engine: Engine
) -> None:
    with Store(tmp_path) as store:
        first = run_pull(engine, store, "twilio", puller(server, since=1441065600))
        assert (first.counts.received, first.stored, first.counts.skipped) == (7, 6, 1)
        sent = next(m for m in server.app.messages if m["status"] == "sent")  # type: ignore[attr-defined]
        sent.update(status="delivered", date_updated="Sat, 05 Sep 2015 23:00:00 +0000")
        later = run_pull(engine, store, "twilio", puller(server, clock=lambda: NOW + 600, lookback=3 * 86400))
        assert (later.stored, later.already_stored) == (1, 6)
        assert server.requests()[-3].query["DateSent>"] == ["2015-09-03"]
        (row,) = store.claim_batch(100)[-1:]
        assert (row[1]["action"], row[1]["data"]["ts"]) == ("delivery", 1441494000)


def test_an_absolute_next_page_uri_on_another_host_is_refused(server: PullServer) -> None:
    with PullServer() as elsewhere:
        server.app.next_base = elsewhere.base_url  # type: ignore[attr-defined]
        with pytest.raises(PullError, match="refusing to follow a link to another host") as info:
            list(puller(server, since=1441065600).pull(None))
        assert not info.value.retryable and elsewhere.requests() == []


def test_an_absolute_next_page_uri_on_the_same_host_is_followed(server: PullServer) -> None:
    server.app.next_base = server.base_url  # type: ignore[attr-defined]
    assert len(list(puller(server, since=1441065600).pull(None))) == 3


def test_a_wrong_auth_token_is_not_retried(server: PullServer) -> None:
    p = TwilioPuller(account_sid=ACCOUNT, auth_token="wrong", base_url=server.base_url, clock=lambda: NOW)
    with pytest.raises(PullError, match="Twilio Messages API: 401 Unauthorized: the credentials were refused"):
        list(p.pull(None))
    assert len(server.requests()) == 1


def test_server_errors_are_retried(server: PullServer) -> None:
    waits: list[float] = []
    server.fail(500, times=2)
    assert len(list(puller(server, since=1441065600, sleep=waits.append, backoff_base=0.25).pull(None))) == 3
    assert waits == [0.25, 0.5]


def test_the_factory_takes_strings_from_the_environment() -> None:
    environ = {"ODPMAP_TWILIO_ACCOUNT_SID": ACCOUNT, "ODPMAP_TWILIO_AUTH_TOKEN": TOKEN,
               "ODPMAP_TWILIO_LOOKBACK": "3600", "ODPMAP_TWILIO_PAGE_SIZE": "50", "ODPMAP_TWILIO_SINCE": "2d"}
    p = twilio_puller(**puller_options(twilio_puller, "twilio", environ=environ))
    assert (p.base_url, p.lookback, p.page_size, p.account_sid) == (DEFAULT_BASE_URL, 3600.0, 50, ACCOUNT)
    assert p.since is not None
    with pytest.raises(ConfigError, match="page_size must be 1 to 1000"):
        twilio_puller(account_sid=ACCOUNT, auth_token=TOKEN, page_size="0")


def test_the_plugin_registers_the_puller(engine: Engine) -> None:
    entry = collect_pullers(engine).entry("twilio")
    assert (entry.value, entry.source) == (twilio_puller, "odpmap-twilio 0.1.0")
