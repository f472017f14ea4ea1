"""``odpmap pull`` and :mod:`odpmap.pull`: pulling providers' list APIs into the outbox.

Real parts only: the pages come from real HTTP servers on 127.0.0.1 (tests/pull_server.py)
serving recorded pages (tests/data/pull/), the events go to a real SQLite store in
``tmp_path``, the lock is a real ``flock``, delivery goes to the fake ODP server of
tests/odp_server.py. The command runs in process (click's ``CliRunner``), and as the
installed ``odpmap`` entry point in a subprocess where the process boundary matters.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from odpmap import Engine, hookimpl
from odpmap.errors import ConfigError
from odpmap.outcomes import DeadLetter
from odpmap.pull import (
    EXIT_LOCKED,
    ExportFilesPuller,
    Page,
    PullError,
    PullLocked,
    collect_pullers,
    cursor_name_for,
    lock_path_for,
    parse_time,
    pull_command,
    pull_lock,
    puller_options,
    run_pull,
)
from odpmap.store import Store

sys.path.insert(0, str(Path(__file__).parent))  # the helpers (import mode importlib)
from odp_server import FakeOdpServer  # noqa: E402
from pull_server import MailgunEvents, PullServer, RecordedPages, TwilioMessages, load_pages  # noqa: E402

DOMAIN = "mg.example.com"
MG_KEY = "key-test"
ACCOUNT = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
TOKEN = "token-test"
MAILGUN_PAGES = load_pages("mailgun-events")
MAILGUN_EVENTS = [item for page in MAILGUN_PAGES for item in page["items"]]
TWILIO_PAGES = load_pages("twilio-messages")
TWILIO_MESSAGES = [m for page in TWILIO_PAGES for m in page["messages"]]


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(load_plugins=["mailgun", "twilio"], environ={})
    yield engine
    engine.close()


@pytest.fixture
def server() -> Iterator[PullServer]:
    with PullServer() as srv:
        yield srv


@pytest.fixture
def mailgun(server: PullServer) -> MailgunEvents:
    app = MailgunEvents(server, MAILGUN_EVENTS, domain=DOMAIN, api_key=MG_KEY)
    server.app = app
    return app


@pytest.fixture
def twilio(server: PullServer) -> TwilioMessages:
    app = TwilioMessages(server, TWILIO_MESSAGES, account_sid=ACCOUNT, auth_token=TOKEN)
    server.app = app
    return app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


Invoke = Callable[..., Result]


@pytest.fixture
def odpmap_pull(data_dir: Path, server: PullServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``odpmap_pull(*args, **env)``: ``odpmap pull --data-dir <data_dir> ...`` in process,
    with the Mailgun and Twilio credentials and base URLs of the loopback server."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str | Path, **env: str | None) -> Result:
        environ: dict[str, str | None] = {
            "ODPMAP_LOAD_PLUGINS": "mailgun,twilio", "ODPMAP_BLOCK_PLUGINS": None, "ODPMAP_DATA_DIR": None,
            "ODPMAP_CONFIG": None, "ODPMAP_ODP_API_KEY": None,
            "ODPMAP_MAILGUN_API_KEY": MG_KEY, "ODPMAP_MAILGUN_DOMAIN": DOMAIN,
            "ODPMAP_MAILGUN_BASE_URL": f"{server.base_url}/v3",
            "ODPMAP_TWILIO_ACCOUNT_SID": ACCOUNT, "ODPMAP_TWILIO_AUTH_TOKEN": TOKEN,
            "ODPMAP_TWILIO_BASE_URL": server.base_url,
        }
        environ.update(env)
        argv = ["--data-dir", str(data_dir), *(str(a) for a in args)]
        return CliRunner(env=environ).invoke(pull_command, argv, catch_exceptions=False)

    return invoke


def outbox(data_dir: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data_dir / "odpmap.sqlite3")
    try:
        return [json.loads(row[0]) for row in conn.execute("SELECT event FROM outbox ORDER BY id")]
    finally:
        conn.close()


def cursor(data_dir: Path, name: str) -> Any:
    with Store(data_dir) as store:
        value = store.get_cursor(name)
    return json.loads(value) if value is not None else None


def expected_ids(engine: Engine, provider: str, pages: list[dict[str, Any]]) -> set[str]:
    """The idempotence ids of every event the recorded pages map to."""
    ids = set()
    for page in pages:
        result = engine.map(provider, json.dumps(page).encode(), content_type="application/json")
        ids.update(e["data"]["idempotence_id"] for e in result.events)
    return ids


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["idempotence_id"] for e in events]


MAILGUN_SINCE = ("--since", "2013-08-01")


# --- the hook ---------------------------------------------------------------------------------


class ListPuller:
    """A puller over pages in memory: cursor = how many pages were stored."""

    def __init__(self, pages: list[bytes], *, fail_after: int | None = None) -> None:
        self.pages = pages
        self.fail_after = fail_after
        self.closed = False

    def pull(self, cursor: str | None) -> Iterator[Page]:
        start = int(cursor or 0)
        for n in range(start, len(self.pages)):
            if self.fail_after is not None and n >= self.fail_after:
                raise PullError("the list API is down", retryable=True)
            yield Page(self.pages[n], "application/x-ndjson", str(n + 1), source=f"page {n}")

    def close(self) -> None:
        self.closed = True


ACME_MAPPING = """
    format: 1
    provider: acme
    channel: sms
    item_id: "{{ item.id }}"
    defaults:
      identifiers: {phone: "{{ item.to | e164 }}"}
      data: {ts: "{{ item.at | epoch }}", target_address: "{{ item.to | e164 }}"}
    rules:
      - id: delivered
        when: item.status == "delivered"
        emit: {action: delivery}
      - id: queued
        when: item.status == "queued"
        skip: "on its way"
"""


def acme_engine(tmp_path: Path, *plugins: Any) -> Engine:
    mapping = tmp_path / "acme.yaml"
    mapping.write_text(textwrap.dedent(ACME_MAPPING), encoding="utf-8")
    return Engine(plugins=list(plugins), autoload=False, mapping_paths=[mapping], environ={})


def acme_lines(*rows: tuple[str, str, str]) -> bytes:
    return "".join(
        json.dumps({"id": i, "to": to, "status": status, "at": "2024-05-01T10:00:00Z"}) + "\n" for i, to, status in rows
    ).encode()


def test_hook_odpmap_register_pullers(tmp_path: Path) -> None:
    pages = [acme_lines(("m1", "+14155550100", "delivered"), ("m2", "+14155550101", "queued")),
             acme_lines(("m3", "+14155550102", "delivered"))]

    class AcmePlugin:
        @hookimpl
        def odpmap_register_pullers(self, register):  # type: ignore[no-untyped-def]
            register("acme", lambda *, token: ListPuller(pages), description="Acme's list API")

    engine = acme_engine(tmp_path, AcmePlugin())
    registry = collect_pullers(engine)
    entry = registry.entry("acme")
    assert (registry.names(), entry.source, entry.description) == (["acme"], "plugin AcmePlugin-0", "Acme's list API")
    puller = entry.value(**puller_options(entry.value, "acme", environ={"ODPMAP_ACME_TOKEN": "t"}))
    with Store(tmp_path) as store:
        result = run_pull(engine, store, "acme", puller)
        assert (result.pages, result.counts.received, result.counts.skipped, result.stored) == (2, 3, 1, 2)
        assert (result.complete, result.cursor_before, result.cursor) == (True, None, "2")
        assert store.get_cursor("pull:acme") == "2"
        assert store.status()["outbox_pending"] == 2
    assert puller.closed


def test_a_puller_registered_twice_names_both_plugins(tmp_path: Path) -> None:
    class One:
        @hookimpl
        def odpmap_register_pullers(self, register):  # type: ignore[no-untyped-def]
            register("acme", ListPuller)

    engine = acme_engine(tmp_path, One(), One())
    with pytest.raises(ConfigError, match=r"puller 'acme' is registered twice: by plugin One-\d and by plugin One-\d"):
        collect_pullers(engine)


# --- run_pull: the contract -----------------------------------------------------------------


def test_each_page_is_stored_with_its_cursor_and_a_failing_puller_keeps_what_was_stored(tmp_path: Path) -> None:
    engine = acme_engine(tmp_path)
    pages = [acme_lines((f"m{n}", "+14155550100", "delivered")) for n in range(4)]
    seen: list[tuple[str | None, int]] = []
    with Store(tmp_path) as store:
        result = run_pull(engine, store, "acme", ListPuller(pages, fail_after=2),
                          on_page=lambda page, r: seen.append((store.get_cursor("pull:acme"), r.stored)))
        assert seen == [("1", 1), ("2", 2)]  # the cursor is stored with the page's events
        assert (result.pages, result.complete, result.cursor, str(result.error)) == (2, False, "2", "the list API is down")
        assert result.error is not None and result.error.retryable
        result = run_pull(engine, store, "acme", ListPuller(pages))
        assert (result.cursor_before, result.pages, result.stored, result.cursor) == ("2", 2, 2, "4")
        assert store.status()["outbox_pending"] == 4


def test_max_pages_stops_before_fetching_more(tmp_path: Path) -> None:
    engine = acme_engine(tmp_path)
    fetched: list[int] = []

    class Counting(ListPuller):
        def pull(self, cursor: str | None) -> Iterator[Page]:
            for page in super().pull(cursor):
                fetched.append(int(page.cursor or 0))
                yield page

    pages = [acme_lines((f"m{n}", "+14155550100", "delivered")) for n in range(3)]
    with Store(tmp_path) as store:
        result = run_pull(engine, store, "acme", Counting(pages), max_pages=1)
    assert (result.pages, result.complete, fetched) == (1, False, [1])


def test_events_without_an_item_id_get_ids_from_the_page_so_a_refetched_page_is_stored_once(tmp_path: Path) -> None:
    mapping = tmp_path / "acme.yaml"
    mapping.write_text(textwrap.dedent(ACME_MAPPING).replace('item_id: "{{ item.id }}"\n', ""), encoding="utf-8")
    engine = Engine(autoload=False, mapping_paths=[mapping], environ={})
    page = acme_lines(("m1", "+14155550100", "delivered"), ("m2", "+14155550101", "delivered"))
    with Store(tmp_path) as store:
        first = run_pull(engine, store, "acme", ListPuller([page]))
        again = run_pull(engine, store, "acme", ListPuller([page]), reset=True)
        assert (first.stored, again.stored, again.already_stored) == (2, 0, 2)


def test_store_page_is_one_transaction(tmp_path: Path) -> None:
    """A write failing in the middle of a page (here a real SQLite error from a trigger)
    leaves no event, no dead letter and the old cursor."""
    with Store(tmp_path) as store:
        store.set_cursor("pull:acme", "before")
        conn = sqlite3.connect(store.path)
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON outbox WHEN NEW.idempotence_id = 'id-2' "
                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        conn.commit()
        conn.close()
        events = [{"type": "sms", "action": "delivery", "identifiers": {}, "data": {"idempotence_id": f"id-{n}"}}
                  for n in (1, 2)]
        letter = DeadLetter(reason="unmapped", message="no rule", provider="acme", item={"id": "x"})
        with pytest.raises(sqlite3.IntegrityError, match="disk is full"):
            store.store_page("acme", events, [letter], cursor_name="pull:acme", cursor_value="after")
        assert store.get_cursor("pull:acme") == "before"
        assert store.status()["outbox_pending"] == 0
        assert store.list_dead_letters() == []


def test_store_page_stores_an_event_or_an_equal_dead_letter_once(tmp_path: Path) -> None:
    event = {"type": "sms", "action": "delivery", "identifiers": {}, "data": {"idempotence_id": "id-1"}}
    letter = DeadLetter(reason="unmapped", message="no rule", provider="acme", item={"id": "x"}, rule_id=None)
    other = DeadLetter(reason="unmapped", message="no rule", provider="acme", item={"id": "y"})
    with Store(tmp_path) as store:
        assert store.store_page("acme", [dict(event)], [letter], cursor_name="c", cursor_value="1") == (1, 0, 1)
        assert store.store_page("acme", [dict(event)], [letter, other], cursor_name="c", cursor_value="2") == (0, 1, 1)
        assert store.store_page("acme", [], [], cursor_name="c", cursor_value=None) == (0, 0, 0)
        assert store.get_cursor("c") == "2"
        assert len(store.list_dead_letters()) == 2


def test_the_lock_is_exclusive_and_released_when_the_run_ends(tmp_path: Path) -> None:
    lock = tmp_path / "pull-acme.lock"
    with pull_lock(lock):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(PullLocked, match=f"another pull holds .*pull-acme.lock \\(process {os.getpid()}\\)"):
            with pull_lock(lock):
                pass  # pragma: no cover
    with pull_lock(lock):
        pass


def test_run_pull_refuses_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    engine = acme_engine(tmp_path)
    with Store(tmp_path) as store:
        puller = ListPuller([acme_lines(("m1", "+14155550100", "delivered"))])
        with pull_lock(lock_path_for(tmp_path, "acme")), pytest.raises(PullLocked):
            run_pull(engine, store, "acme", puller)
        assert store.get_cursor("pull:acme") is None and store.status()["outbox_pending"] == 0


# --- odpmap pull --provider mailgun: the Events API -------------------------------------------


def test_mailgun_pull_stores_every_event_of_every_page(
    odpmap_pull: Invoke, mailgun: MailgunEvents, server: PullServer, data_dir: Path, engine: Engine
) -> None:
    result = odpmap_pull("--provider", "mailgun", "--option", "limit=4", *MAILGUN_SINCE)
    assert result.exit_code == 0, result.output
    newest = MAILGUN_EVENTS[-1]["timestamp"]
    assert result.output.splitlines() == [
        f"odpmap: mailgun: pages=3 received=11 mapped=7 skipped=4 dead_lettered=0 events=7 stored=7 "
        f'already_stored=0 cursor={{"begin": {newest}}}',
        "odpmap: events are in the outbox: odpmap dispatch (or --dispatch) delivers them",
    ]
    events = outbox(data_dir)
    assert set(ids_of(events)) == expected_ids(engine, "mailgun", MAILGUN_PAGES)
    assert [e["action"] for e in events] == ["open", "click", "opt-out", "unreachable", "delivery", "delivery",
                                             "unreachable"]
    assert cursor(data_dir, "pull:mailgun") == {"begin": newest}
    first = server.requests()[0]
    assert first.path == f"/v3/{DOMAIN}/events"
    assert {k: v[0] for k, v in first.query.items() if k != "end"} == {
        "begin": str(int(parse_time("2013-08-01"))), "ascending": "yes", "limit": "4"}
    assert first.basic_auth() == ("api", MG_KEY)
    assert len(server.requests()) == 4  # three pages with items, then the empty one


def test_recorded_pages_served_verbatim(odpmap_pull: Invoke, server: PullServer, data_dir: Path) -> None:
    routes = {f"/v3/{DOMAIN}/events": MAILGUN_PAGES[0]}
    for before, page in zip(MAILGUN_PAGES, MAILGUN_PAGES[1:]):
        routes[before["paging"]["next"].removeprefix("https://api.mailgun.net")] = page
    server.app = RecordedPages(server, routes, "https://api.mailgun.net")
    result = odpmap_pull("--provider", "mailgun", *MAILGUN_SINCE)
    assert result.exit_code == 0, result.output
    assert "pages=3 received=11 mapped=7 skipped=4 dead_lettered=0 events=7 stored=7" in result.output
    assert len(outbox(data_dir)) == 7


def test_mailgun_pull_resumes_after_max_pages_without_duplicates_or_gaps(
    odpmap_pull: Invoke, mailgun: MailgunEvents, server: PullServer, data_dir: Path, engine: Engine
) -> None:
    first = odpmap_pull("--provider", "mailgun", "-o", "limit=4", "--max-pages", "1", *MAILGUN_SINCE)
    assert first.exit_code == 0, first.output
    assert "pages=1 received=4 mapped=4 skipped=0 dead_lettered=0 events=4 stored=4" in first.output
    assert cursor(data_dir, "pull:mailgun") == {"begin": MAILGUN_EVENTS[3]["timestamp"]}
    assert len(server.requests()) == 1  # page 2 was not fetched

    second = odpmap_pull("--provider", "mailgun", "-o", "limit=4", *MAILGUN_SINCE)
    assert second.exit_code == 0, second.output
    # begins at the second of the last stored event: that event comes again, is stored once
    assert server.requests()[1].arg("begin") == str(int(MAILGUN_EVENTS[3]["timestamp"]))
    assert "stored=3 already_stored=1" in second.output
    events = outbox(data_dir)
    assert len(events) == len(set(ids_of(events))) == 7
    assert set(ids_of(events)) == expected_ids(engine, "mailgun", MAILGUN_PAGES)


def test_mailgun_pull_resumes_after_the_api_fails(
    odpmap_pull: Invoke, mailgun: MailgunEvents, server: PullServer, data_dir: Path, engine: Engine
) -> None:
    server.fail(500, when=lambda r: r.path != f"/v3/{DOMAIN}/events", times=1)  # page 2
    first = odpmap_pull("--provider", "mailgun", "-o", "limit=4", "-o", "max_retries=0", *MAILGUN_SINCE)
    assert first.exit_code == 3, first.output
    assert "pages=1 received=4" in first.output
    assert "stopped: Mailgun Events API: 500 Internal Server Error" in first.output
    assert "the pages before are stored, run again later to go on" in first.output
    assert len(outbox(data_dir)) == 4
    assert cursor(data_dir, "pull:mailgun") == {"begin": MAILGUN_EVENTS[3]["timestamp"]}

    second = odpmap_pull("--provider", "mailgun", "-o", "limit=4", "-o", "max_retries=0", *MAILGUN_SINCE)
    assert second.exit_code == 0, second.output
    events = outbox(data_dir)
    assert len(events) == 7 and set(ids_of(events)) == expected_ids(engine, "mailgun", MAILGUN_PAGES)


def test_a_page_that_cannot_be_stored_does_not_move_the_cursor(
    odpmap_pull: Invoke, mailgun: MailgunEvents, data_dir: Path, engine: Engine
) -> None:
    data_dir.mkdir()
    Store(data_dir).close()
    conn = sqlite3.connect(data_dir / "odpmap.sqlite3")
    conn.execute("""CREATE TRIGGER full BEFORE INSERT ON outbox WHEN NEW.event LIKE '%"action":"delivery"%'
                    BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END""")
    conn.commit()
    failed = odpmap_pull("--provider", "mailgun", "-o", "limit=4", *MAILGUN_SINCE)
    assert failed.exit_code == 3, failed.output
    assert failed.output == ("odpmap: error: mailgun: storing a page failed: database or disk is full "
                             "(the cursor was not advanced: run again once fixed)\n")
    assert len(outbox(data_dir)) == 4  # page 1 only: page 2 holds a delivery
    assert cursor(data_dir, "pull:mailgun") == {"begin": MAILGUN_EVENTS[3]["timestamp"]}

    conn.execute("DROP TRIGGER full")
    conn.commit()
    conn.close()
    again = odpmap_pull("--provider", "mailgun", "-o", "limit=4", *MAILGUN_SINCE)
    assert again.exit_code == 0, again.output
    assert set(ids_of(outbox(data_dir))) == expected_ids(engine, "mailgun", MAILGUN_PAGES)
    assert len(outbox(data_dir)) == 7


def test_a_second_run_is_refused_while_the_first_holds_the_lock(
    odpmap_pull: Invoke, mailgun: MailgunEvents, server: PullServer, data_dir: Path
) -> None:
    with pull_lock(data_dir / "pull-mailgun.lock"):
        result = odpmap_pull("--provider", "mailgun", *MAILGUN_SINCE)
    assert result.exit_code == EXIT_LOCKED == 4
    assert result.output == (f"odpmap: mailgun: another pull holds {data_dir / 'pull-mailgun.lock'} "
                             f"(process {os.getpid()}); nothing done\n")
    assert server.requests() == []
    assert cursor(data_dir, "pull:mailgun") is None


def test_the_installed_command_is_refused_while_another_process_holds_the_lock(
    mailgun: MailgunEvents, server: PullServer, data_dir: Path, tmp_path: Path
) -> None:
    """Across processes, through the real entry point (``odpmap.builtins.pull`` adds the
    command): the lock of this process keeps the child out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODPMAP_")}
    env.update({"ODPMAP_LOAD_PLUGINS": "mailgun", "ODPMAP_MAILGUN_API_KEY": MG_KEY, "ODPMAP_MAILGUN_DOMAIN": DOMAIN,
                "ODPMAP_MAILGUN_BASE_URL": f"{server.base_url}/v3"})
    argv = [sys.executable, "-m", "odpmap.cli", "pull", "-p", "mailgun", "--data-dir", str(data_dir), *MAILGUN_SINCE]
    with pull_lock(data_dir / "pull-mailgun.lock"):
        locked = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (locked.returncode, locked.stdout) == (4, "")
    assert locked.stderr.endswith("; nothing done\n") and server.requests() == []
    done = subprocess.run([*argv, "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert len(outbox(data_dir)) == 7


def test_a_next_link_to_another_host_is_refused(
    odpmap_pull: Invoke, mailgun: MailgunEvents, server: PullServer, data_dir: Path
) -> None:
    with PullServer() as elsewhere:
        mailgun.next_base = elsewhere.base_url  # another port: another origin
        result = odpmap_pull("--provider", "mailgun", "-o", "limit=4", *MAILGUN_SINCE)
        assert elsewhere.requests() == []  # the API key never went there
    assert result.exit_code == 2, result.output
    assert (f"odpmap: error: mailgun: Mailgun Events API: refusing to follow a link to another host: "
            f"'{elsewhere.base_url}/v3/{DOMAIN}/events/") in result.output
    assert len(outbox(data_dir)) == 4  # the page from the API's own host is kept


def test_missing_credentials_exit_2_naming_the_variables(odpmap_pull: Invoke, data_dir: Path) -> None:
    result = odpmap_pull("--provider", "mailgun", ODPMAP_MAILGUN_API_KEY=None, ODPMAP_MAILGUN_DOMAIN=None)
    assert result.exit_code == 2
    assert result.output == ("odpmap: error: the mailgun puller needs api_key, domain: set ODPMAP_MAILGUN_API_KEY, "
                             "ODPMAP_MAILGUN_DOMAIN\n")
    assert not data_dir.exists()  # checked before anything is written
    result = odpmap_pull("--provider", "twilio", ODPMAP_TWILIO_AUTH_TOKEN="")
    assert (result.exit_code, result.output) == (
        2, "odpmap: error: the twilio puller needs auth_token: set ODPMAP_TWILIO_AUTH_TOKEN (or --option NAME=VALUE)\n")


def test_refused_credentials_exit_2(odpmap_pull: Invoke, mailgun: MailgunEvents) -> None:
    result = odpmap_pull("--provider", "mailgun", *MAILGUN_SINCE, ODPMAP_MAILGUN_API_KEY="key-wrong")
    assert result.exit_code == 2
    assert "odpmap: error: mailgun: Mailgun Events API: 401 Unauthorized: the credentials were refused" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "nope"], "odpmap: error: unknown provider 'nope'"),
        (["--provider", "mailgun", "-o", "colour=red"], "odpmap: error: the mailgun puller has no option 'colour' "
                                                        "(options: api_key, domain, base_url, since, until, settle"),
        (["--provider", "mailgun", "-o", "limit"], "odpmap: error: --option takes KEY=VALUE, not 'limit'"),
        (["--provider", "mailgun", "--since", "yesterday"], "odpmap: error: --since: not a time: 'yesterday'"),
        (["--provider", "twilio", "--until", "1d"], "odpmap: error: the twilio puller has no option 'until'"),
        (["--provider", "mailgun", "-o", "limit=900"], "odpmap: error: mailgun puller: limit must be 1 to 300"),
        ([], "odpmap: error: --provider is required"),
    ],
)
def test_usage_errors_exit_2(odpmap_pull: Invoke, args: list[str], message: str) -> None:
    result = odpmap_pull(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message), result.output


def test_a_provider_without_a_puller(odpmap_pull: Invoke) -> None:
    result = odpmap_pull("--provider", "vonage")
    assert result.exit_code == 2
    assert result.output == ("odpmap: error: provider 'vonage' has no puller (pullers: mailgun, twilio); "
                             "for its export files use --exports DIR, or odpmap map\n")


def test_list_shows_the_pullers_and_their_variables(odpmap_pull: Invoke) -> None:
    result = odpmap_pull("--list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "mailgun  Mailgun Events API (GET /v3/<domain>/events)  [odpmap-mailgun 0.1.0]"
    assert lines[1].startswith("    options: ODPMAP_MAILGUN_API_KEY, ODPMAP_MAILGUN_DOMAIN, "
                               "ODPMAP_MAILGUN_BASE_URL (optional)")
    assert lines[2].startswith("twilio  Twilio Messages list")


def test_pulled_items_that_cannot_be_mapped_are_dead_letters_stored_once(
    odpmap_pull: Invoke, mailgun: MailgunEvents, data_dir: Path
) -> None:
    mailgun.events.append({**MAILGUN_EVENTS[-1], "id": "future-1", "event": "teleported", "timestamp": 1666300000.5})
    first = odpmap_pull("--provider", "mailgun", *MAILGUN_SINCE)
    assert first.exit_code == 1, first.output
    assert "dead_lettered=1" in first.output and "odpmap: 1 dead letter(s) stored" in first.output
    again = odpmap_pull("--provider", "mailgun")  # overlaps the last second: the item comes again
    assert again.exit_code == 0, again.output
    assert "dead_lettered=1" in again.output and "dead letter(s) stored" not in again.output
    with Store(data_dir) as store:
        (record,) = store.list_dead_letters()
    assert (record.dead_letter.reason, record.dead_letter.item["id"]) == ("unmapped", "future-1")
    assert record.dead_letter.details["pulled_from"].startswith("http://127.0.0.1:")


def test_pull_then_deliver_to_odp(odpmap_pull: Invoke, mailgun: MailgunEvents, data_dir: Path) -> None:
    with FakeOdpServer() as odp:
        result = odpmap_pull("--provider", "mailgun", "--odp-base-url", odp.base_url, *MAILGUN_SINCE,
                             ODPMAP_ODP_API_KEY="odp-key")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "odpmap: odp: sent=7 rejected=0 pending=0"
        assert sorted(odp.idempotence_ids()) == sorted(ids_of(outbox(data_dir)))
        assert {r.headers["x-api-key"] for r in odp.requests()} == {"odp-key"}
    with Store(data_dir) as store:
        assert store.status()["outbox_sent"] == 7


def test_no_dispatch_keeps_the_events_in_the_outbox(odpmap_pull: Invoke, mailgun: MailgunEvents, data_dir: Path) -> None:
    result = odpmap_pull("--provider", "mailgun", "--no-dispatch", *MAILGUN_SINCE, ODPMAP_ODP_API_KEY="odp-key")
    assert result.exit_code == 0 and "odp:" not in result.output
    dispatch = odpmap_pull("--provider", "mailgun", "--dispatch", ODPMAP_ODP_API_KEY=None)
    assert (dispatch.exit_code, dispatch.output) == (2, "odpmap: error: --dispatch: set ODPMAP_ODP_API_KEY to the ODP API key\n")


# --- odpmap pull --provider twilio: the Messages list -----------------------------------------


def test_twilio_pull_stores_every_status_and_resumes_from_the_next_page(
    odpmap_pull: Invoke, twilio: TwilioMessages, server: PullServer, data_dir: Path, engine: Engine
) -> None:
    first = odpmap_pull("--provider", "twilio", "-o", "page_size=3", "--since", "2015-09-01", "--max-pages", "1")
    assert first.exit_code == 0, first.output
    state = cursor(data_dir, "pull:twilio")
    assert state["next"] == TWILIO_PAGES[0]["next_page_uri"]
    second = odpmap_pull("--provider", "twilio", "-o", "page_size=3")
    assert second.exit_code == 0, second.output
    assert [r.target for r in server.requests()] == [
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=3&DateSent%3E=2015-09-01",
        TWILIO_PAGES[0]["next_page_uri"],
        TWILIO_PAGES[1]["next_page_uri"],
    ]
    assert server.requests()[0].basic_auth() == (ACCOUNT, TOKEN)
    events = outbox(data_dir)
    assert set(ids_of(events)) == expected_ids(engine, "twilio", TWILIO_PAGES) and len(events) == 6
    assert cursor(data_dir, "pull:twilio") == {"scanned_to": state["started"]}
    assert sorted((e["type"], e["action"]) for e in events) == [
        ("consent", "opt-out"), ("consent", "opt-out"), ("reachability", "unreachable"), ("sms", "delivery"),
        ("sms", "soft_bounce"), ("whatsapp", "open")]


# --- export files: the same path -----------------------------------------------------------------


def bulk_export_line(message: dict[str, Any]) -> str:
    """A record of a Twilio BulkExport Messages day file: the Message resource without
    ``uri``/``subresource_uris``/``api_version``/``error_message``, dates in ISO 8601 UTC."""
    from email.utils import parsedate_to_datetime

    record = {k: v for k, v in message.items()
              if k not in ("uri", "subresource_uris", "api_version", "error_message", "price_unit")}
    for key in ("date_created", "date_sent", "date_updated"):
        record[key] = parsedate_to_datetime(message[key]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(record)


def test_map_reads_a_twilio_json_lines_export(tmp_path: Path, engine: Engine) -> None:
    export = tmp_path / "2015-09-05.jsonl"
    export.write_text("".join(bulk_export_line(m) + "\n" for m in TWILIO_MESSAGES), encoding="utf-8")
    from odpmap.cli import cli

    result = CliRunner(env={"ODPMAP_LOAD_PLUGINS": "twilio"}).invoke(cli, ["map", "-p", "twilio", str(export)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert set(ids_of(lines)) == expected_ids(engine, "twilio", TWILIO_PAGES)  # the same events as the API's
    assert "odpmap: twilio: received=7 mapped=6 skipped=1 dead_lettered=0 events=6" in result.stderr


def test_pull_exports_maps_each_file_once_into_the_same_outbox_as_the_api(
    odpmap_pull: Invoke, twilio: TwilioMessages, tmp_path: Path, data_dir: Path, engine: Engine
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    oldest = TWILIO_MESSAGES[-3:]  # the list is newest first
    (exports / "2015-09-03.jsonl").write_text("".join(bulk_export_line(m) + "\n" for m in oldest))
    (exports / "notes.txt").write_text("not an export")
    result = odpmap_pull("--provider", "twilio", "--exports", exports)
    assert result.exit_code == 0, result.output
    assert "pages=1 received=3 mapped=3 skipped=0 dead_lettered=0 events=3 stored=3" in result.output
    assert cursor(data_dir, f"pull:twilio:exports:{exports.resolve()}") == {"file": "2015-09-03.jsonl"}

    with gzip.open(exports / "2015-09-05.jsonl.gz", "wt") as f:  # Twilio's day files come gzipped
        f.writelines(bulk_export_line(m) + "\n" for m in TWILIO_MESSAGES)
    result = odpmap_pull("--provider", "twilio", "--exports", exports)
    assert "pages=1 received=7 mapped=6 skipped=1 dead_lettered=0 events=6 stored=3 already_stored=3" in result.output

    api = odpmap_pull("--provider", "twilio", "--since", "2015-09-01")  # the API has the same messages
    assert "stored=0 already_stored=6" in api.output
    assert set(ids_of(outbox(data_dir))) == expected_ids(engine, "twilio", TWILIO_PAGES)


ACME_CSV_MAPPING = """
    format: 1
    provider: acme
    channel: sms
    parser: auto
    item_id: "{{ item.MessageId }}"
    defaults:
      identifiers: {phone: "{{ item.To | e164 }}"}
      data: {ts: "{{ item.DoneDate | epoch }}", target_address: "{{ item.To | e164 }}"}
    rules:
      - id: delivered
        when: item.Status == "DELIVRD"
        emit: {action: delivery}
      - id: undeliverable
        when: item.Status == "UNDELIV"
        emit: {action: soft_bounce, data: {value: "Reason: {{ item.Error }}"}}
"""
ACME_CSV = (
    "MessageId,To,Status,Error,DoneDate\r\n"
    "a1,+14155550100,DELIVRD,,2024-05-01T10:00:00Z\r\n"
    "a2,+14155550101,UNDELIV,absent subscriber,2024-05-01T10:01:00Z\r\n"
    "a3,+14155550102,EXPLODED,,2024-05-01T10:02:00Z\r\n"
)


def test_a_csv_export_through_map_and_through_pull(odpmap_pull: Invoke, tmp_path: Path, data_dir: Path) -> None:
    mapping = tmp_path / "acme.yaml"
    mapping.write_text(textwrap.dedent(ACME_CSV_MAPPING), encoding="utf-8")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "2024-05-01.csv").write_text(ACME_CSV, encoding="utf-8")
    from odpmap.cli import cli

    mapped = CliRunner(env={"ODPMAP_LOAD_PLUGINS": ""}).invoke(
        cli, ["map", "--mappings", str(mapping), "-p", "acme", str(exports / "2024-05-01.csv")])
    assert mapped.exit_code == 1  # one row is a dead letter
    assert [json.loads(line)["action"] for line in mapped.stdout.splitlines()] == ["delivery", "soft_bounce"]
    assert "received=3 mapped=2 skipped=0 dead_lettered=1 events=2" in mapped.stderr

    pulled = odpmap_pull("--provider", "acme", "--mappings", mapping, "--exports", exports)
    assert pulled.exit_code == 1, pulled.output
    assert "pages=1 received=3 mapped=2 skipped=0 dead_lettered=1 events=2 stored=2" in pulled.output
    assert [e["action"] for e in outbox(data_dir)] == ["delivery", "soft_bounce"]
    with Store(data_dir) as store:
        (letter,) = store.list_dead_letters()
    assert letter.dead_letter.item["Status"] == "EXPLODED"
    assert letter.dead_letter.details["pulled_from"] == str(exports / "2024-05-01.csv")
    assert odpmap_pull("--provider", "acme", "--mappings", mapping, "--exports", exports).output.startswith(
        "odpmap: acme: pages=0 received=0")


def test_export_files_puller_orders_and_skips(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.csv", "c.json.gz", "d.txt", ".hidden.csv"):
        (tmp_path / name).write_bytes(gzip.compress(b"[]") if name.endswith(".gz") else b"x\n")
    puller = ExportFilesPuller(tmp_path)
    assert [p.name for p in puller.files()] == ["a.csv", "b.jsonl", "c.json.gz"]
    pages = list(puller.pull(json.dumps({"file": "a.csv"})))
    assert [(p.content_type, p.cursor, p.body) for p in pages] == [
        ("application/x-ndjson", '{"file": "b.jsonl"}', b"x\n"), ("application/json", '{"file": "c.json.gz"}', b"[]")]
    with pytest.raises(ConfigError, match="does not exist"):
        ExportFilesPuller(tmp_path / "missing")


# --- small parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2023-11-14", 1_699_920_000.0),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-15 00:13:20+02:00", 1_700_000_000.0),
        ("2d", 1_700_000_000.0 - 2 * 86400),
        ("30m", 1_700_000_000.0 - 1800),
        (1_700_000_000, 1_700_000_000.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, now=lambda: 1_700_000_000.0) == expected


def test_parse_time_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="not a time: 'soon'"):
        parse_time("soon")


def test_puller_options_come_from_arguments_then_the_environment() -> None:
    def factory(*, api_key: str, region: str = "us", since: float | None = None) -> None: ...

    environ = {"ODPMAP_ACME_API_KEY": "k", "ODPMAP_ACME_REGION": "eu", "ODPMAP_ACME_OTHER": "x"}
    assert puller_options(factory, "acme", environ=environ) == {"api_key": "k", "region": "eu"}
    assert puller_options(factory, "acme", environ=environ, options={"region": "au", "since": 5.0}) == {
        "region": "au", "since": 5.0, "api_key": "k"}
    assert cursor_name_for("acme") == "pull:acme"
    assert lock_path_for("/d", "a/b") == Path("/d/pull-a_b.lock")
