"""Store and Dispatcher on real SQLite files, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from odpmap.errors import ConfigError, DispatchError
from odpmap.odp import OdpSink
from odpmap.outcomes import DeadLetter
from odpmap.store import DB_FILENAME, Dispatcher, Store

sys.path.insert(0, str(Path(__file__).parent))  # for odp_server (import mode importlib)
from odp_server import (
    FakeOdpServer,
    forbidden,
    invalids,
    ok,
    slow,
    status,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_odp() -> Iterator[FakeOdpServer]:
    """The fake ODP API on a free loopback port."""
    with FakeOdpServer() as server:
        yield server


class Clock:
    """A settable clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "type": "email",
            "action": "delivery",
            "identifiers": {"email": f"user{i}@example.com"},
            "data": {"ts": 1_700_000_000 + i},
        }
        for i in range(start, start + count)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "odpmap.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store(db) as opened:
        yield opened


def outbox_rows(path: Path) -> list[tuple[Any, ...]]:
    """``(id, idempotence_id, state, attempts, last_error)`` read with a separate connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT id, idempotence_id, state, attempts, last_error FROM outbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


# --- opening ---------------------------------------------------------------------------


def test_wal_mode_and_full_sync(store: Store, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_normal_sync_on_request(tmp_path: Path) -> None:
    with Store(tmp_path / "x.db", synchronous="NORMAL") as opened:
        assert opened._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path / "y.db", synchronous="OFF")  # type: ignore[arg-type]


def test_directory_gets_the_default_file(tmp_path: Path) -> None:
    with Store(tmp_path) as opened:
        assert opened.path == tmp_path / DB_FILENAME
    assert (tmp_path / DB_FILENAME).is_file()


def test_newer_schema_is_refused(db: Path) -> None:
    Store(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(ConfigError, match="schema version 99 is newer"):
        Store(db)


# --- outbox ----------------------------------------------------------------------------


def test_enqueue_assigns_idempotence_ids_once(store: Store, db: Path) -> None:
    events = make_events(3)
    events[1]["data"]["idempotence_id"] = "kept-id"
    ids = store.enqueue(events, "sendgrid")
    assert ids == sorted(ids) and len(set(ids)) == 3
    keys = [e["data"]["idempotence_id"] for e in events]
    assert keys[1] == "kept-id"
    assert [row[1] for row in outbox_rows(db)] == keys
    claimed = store.claim_batch(10)
    assert [event["data"]["idempotence_id"] for _, event in claimed] == keys


def test_enqueue_same_idempotence_id_is_stored_once(store: Store) -> None:
    events = make_events(2)
    first = store.enqueue(events, "sendgrid")
    again = store.enqueue([dict(events[1]), *make_events(1, start=5)], "sendgrid")
    assert again[0] == first[1]
    assert store.status()["outbox_pending"] == 3


def test_enqueue_is_one_transaction(store: Store) -> None:
    events = make_events(3)
    events[2]["data"] = ["not", "an", "object"]
    with pytest.raises(TypeError):
        store.enqueue(events, "sendgrid")
    assert store.status()["outbox_pending"] == 0


def test_claim_oldest_first_and_exclusive(store: Store) -> None:
    ids = store.enqueue(make_events(5), "p")
    first = store.claim_batch(2)
    second = store.claim_batch(2)
    assert [i for i, _ in first] == ids[:2]
    assert [i for i, _ in second] == ids[2:4]
    store.release([ids[0]])
    assert [i for i, _ in store.claim_batch(10)] == [ids[0], ids[4]]


def test_mark_sent_rejected_failure(store: Store, db: Path) -> None:
    ids = store.enqueue(make_events(4), "sendgrid")
    store.claim_batch(4)
    store.mark_sent(ids[:2])
    store.mark_rejected([(ids[2], "ODP rejected the event: bad field")])
    store.record_failure([ids[3]], "HTTP 503")
    store.record_failure([ids[3]], "HTTP 502")
    rows = {row[0]: row[2:] for row in outbox_rows(db)}
    assert rows[ids[0]] == ("sent", 0, None)
    assert rows[ids[2]] == ("rejected", 0, "ODP rejected the event: bad field")
    assert rows[ids[3]] == ("pending", 2, "HTTP 502")
    assert [i for i, _ in store.claim_batch(10)] == [ids[3]]  # failures are released
    letters = store.list_dead_letters(reason="rejected")
    assert len(letters) == 1
    letter = letters[0].dead_letter
    assert letter.provider == "sendgrid"
    assert letter.message == "ODP rejected the event: bad field"
    assert letter.item["identifiers"] == {"email": "user2@example.com"}
    assert letter.details == {"outbox_id": ids[2], "idempotence_id": outbox_rows(db)[2][1]}


def test_mark_rejected_unknown_id_changes_nothing(store: Store) -> None:
    ids = store.enqueue(make_events(1), "p")
    with pytest.raises(KeyError):
        store.mark_rejected([(ids[0], "x"), (999, "y")])
    assert store.status()["outbox_rejected"] == 0
    assert store.list_dead_letters() == []


def test_pending_rows_survive_reopening(db: Path) -> None:
    with Store(db) as first:
        ids = first.enqueue(make_events(3), "p")
        claimed = first.claim_batch(3)  # claimed, then the process "dies"
        first.mark_sent([ids[0]])
    with Store(db) as second:
        again = second.claim_batch(10)
    assert [i for i, _ in again] == ids[1:]
    assert [e for _, e in again] == [e for _, e in claimed[1:]]  # same ids and content


# --- dead letters ----------------------------------------------------------------------


def test_dead_letters_round_trip(store: Store) -> None:
    letters = [
        DeadLetter("unmapped", "no rule matched", "sendgrid", {"event": "weird"}, index=3),
        DeadLetter(
            "unparseable",
            "not JSON",
            "twilio",
            b"\xff\xfe binary \x00",
            details={"offset": 0},
            content_type="application/octet-stream",
        ),
        DeadLetter(
            "unparseable", "bad form", "twilio", b"To=%2B1&Status=x", content_type="x-www-form"
        ),
        DeadLetter("template_error", "x.yaml:3:5: missing", "sendgrid", "text item", rule_id="r1"),
    ]
    ids = store.add_dead_letters(letters)
    records = store.list_dead_letters()
    assert [r.id for r in records] == ids
    assert [r.dead_letter for r in records] == letters  # bytes stay bytes, exactly
    assert isinstance(records[1].dead_letter.item, bytes)
    assert store.list_dead_letters(provider="twilio", reason="unparseable", limit=1)[0].id == ids[1]
    assert [r.id for r in store.list_dead_letters(provider="sendgrid")] == [ids[0], ids[3]]
    assert store.get_dead_letter(ids[3]) == records[3]
    assert store.get_dead_letter(12345) is None


def test_mark_replayed_keeps_the_letter(db: Path) -> None:
    clock = Clock()
    with Store(db, clock=clock) as opened:
        [letter_id] = opened.add_dead_letters([DeadLetter("unmapped", "m", "p", {"a": 1})])
        clock.now += 60
        opened.mark_replayed(letter_id, "mapped: 1 event")
        record = opened.get_dead_letter(letter_id)
        assert record is not None
        assert (record.replayed_at, record.replay_result) == (clock.now, "mapped: 1 event")
        assert record.created_at == clock.now - 60
        assert len(opened.list_dead_letters()) == 1
        with pytest.raises(KeyError):
            opened.mark_replayed(999, "x")


# --- reports, cursors, tracking --------------------------------------------------------


def test_reports_are_durable_and_tracked(db: Path) -> None:
    body = b'[{"event":"delivered"}]\r\n'
    with Store(db) as writer:
        report_id = writer.add_report(
            "sendgrid", body, "application/json", {"X-Sig": "abc"}, "https://hooks/x?a=1"
        )
        with Store(db) as reader:  # another connection sees it: committed on return
            [report] = reader.pending_reports()
        assert (report.id, report.provider, report.body) == (report_id, "sendgrid", body)
        assert report.headers == {"X-Sig": "abc"}
        assert (report.content_type, report.url, report.state) == (
            "application/json",
            "https://hooks/x?a=1",
            "received",
        )
        second = writer.add_report("twilio", b"a=1", None, {}, None)
        writer.mark_report(report_id, "mapped")
        assert [r.id for r in writer.pending_reports()] == [second]
        writer.mark_report(second, "failed")
        assert writer.pending_reports() == []
        with pytest.raises(ValueError, match="report state"):
            writer.mark_report(second, "done")
        with pytest.raises(KeyError):
            writer.mark_report(999, "mapped")


def test_cursors(store: Store) -> None:
    assert store.get_cursor("sendgrid-export") is None
    store.set_cursor("sendgrid-export", "page-1")
    store.set_cursor("sendgrid-export", "page-2")
    assert store.get_cursor("sendgrid-export") == "page-2"


def test_tracking_remember_recall(store: Store) -> None:
    tracking = {"campaign": "Winter sale", "campaign_id": 42, "touchpoint_id": 7}
    store.remember("sendgrid", "msg-1", tracking)
    assert store.recall("sendgrid", "msg-1") == tracking
    assert store.recall("twilio", "msg-1") is None
    store.remember("sendgrid", "msg-1", {"campaign_id": 43})
    assert store.recall("sendgrid", "msg-1") == {"campaign_id": 43}


def test_status_figures(db: Path) -> None:
    clock = Clock()
    with Store(db, clock=clock) as opened:
        assert opened.status() == {
            "outbox_pending": 0,
            "outbox_sent": 0,
            "outbox_rejected": 0,
            "oldest_pending_age_seconds": None,
            "dead_letters": {},
            "reports_pending": 0,
        }
        ids = opened.enqueue(make_events(3), "p")
        clock.now += 30
        opened.enqueue(make_events(1, start=10), "p")
        clock.now += 15
        opened.mark_sent([ids[0]])
        opened.mark_rejected([(ids[1], "bad")])
        opened.add_dead_letters(
            [DeadLetter("unmapped", "m", "p", {}), DeadLetter("unmapped", "m", "p", {})]
        )
        opened.add_report("p", b"{}", None, {}, None)
        assert opened.status() == {
            "outbox_pending": 2,
            "outbox_sent": 1,
            "outbox_rejected": 1,
            "oldest_pending_age_seconds": 45.0,
            "dead_letters": {"rejected": 1, "unmapped": 2},
            "reports_pending": 1,
        }


def test_threads_share_one_store(store: Store) -> None:
    def writer(n: int) -> None:
        for i in range(20):
            store.enqueue(make_events(2, start=n * 100 + i * 2), f"p{n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.status()["outbox_pending"] == 240
    seen: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while batch := store.claim_batch(7):
            with lock:
                seen.extend(i for i, _ in batch)

    claimers = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in claimers:
        thread.start()
    for thread in claimers:
        thread.join()
    assert len(seen) == len(set(seen)) == 240  # no row claimed twice


# --- Dispatcher against the fake ODP ---------------------------------------------------


def make_sink(server: FakeOdpServer, **options: Any) -> OdpSink:
    options.setdefault("sleep", lambda seconds: None)
    return OdpSink(api_key="test-key", base_url=server.base_url, **options)


def test_dispatcher_sends_and_marks(store: Store, fake_odp: FakeOdpServer, db: Path) -> None:
    events = make_events(25)
    store.enqueue(events, "sendgrid")
    with make_sink(fake_odp) as sink:
        dispatcher = Dispatcher(store, sink, batch_size=10)
        results = [dispatcher.run_once() for _ in range(4)]
    assert [r["sent"] for r in results] == [10, 10, 5, 0]
    assert results[-1] == {"claimed": 0, "sent": 0, "rejected": 0, "failed": 0}
    assert fake_odp.idempotence_ids() == [row[1] for row in outbox_rows(db)]
    assert store.status()["outbox_sent"] == 25


def test_dispatcher_rejections_become_dead_letters(store: Store, fake_odp: FakeOdpServer) -> None:
    ids = store.enqueue(make_events(4), "sendgrid")
    fake_odp.enqueue(invalids([2]))
    with make_sink(fake_odp) as sink:
        result = Dispatcher(store, sink).run_once()
    assert result == {"claimed": 4, "sent": 3, "rejected": 1, "failed": 0}
    [record] = store.list_dead_letters(reason="rejected")
    assert record.dead_letter.details["outbox_id"] == ids[2]
    assert record.dead_letter.item["identifiers"]["email"] == "user2@example.com"
    assert "bad_field" in record.dead_letter.message
    assert len(fake_odp.events()) == 3


def test_dispatcher_keeps_events_pending_on_retryable_failure(
    store: Store, fake_odp: FakeOdpServer, db: Path
) -> None:
    store.enqueue(make_events(3), "p")
    fake_odp.enqueue(status(503), status(503))
    with make_sink(fake_odp, max_retries=1) as sink:
        dispatcher = Dispatcher(store, sink)
        assert dispatcher.run_once() == {"claimed": 3, "sent": 0, "rejected": 0, "failed": 3}
        assert dispatcher.last_error is not None and "HTTP 503" in dispatcher.last_error
        assert {row[2:4] for row in outbox_rows(db)} == {("pending", 1)}
        assert dispatcher.run_once()["sent"] == 3
    ids = [[e["data"]["idempotence_id"] for e in r.events or []] for r in fake_odp.requests()]
    assert ids[0] == ids[1] == ids[2]  # the same ids on every attempt, across run_once calls
    assert dispatcher.last_error is None


def test_dispatcher_403_raises_and_keeps_events_pending(
    store: Store, fake_odp: FakeOdpServer, db: Path
) -> None:
    store.enqueue(make_events(2), "p")
    fake_odp.enqueue(forbidden())
    sink = make_sink(fake_odp)
    with sink, pytest.raises(DispatchError, match="API key is wrong") as caught:
        Dispatcher(store, sink).run_once()
    assert caught.value.retryable is False
    rows = outbox_rows(db)
    assert [row[2:4] for row in rows] == [("pending", 1), ("pending", 1)]
    assert all("API key is wrong" in row[4] for row in rows)
    assert store.status()["outbox_pending"] == 2
    assert len(store.claim_batch(10)) == 2  # claims were released


def test_dispatcher_releases_claims_on_unexpected_error(store: Store) -> None:
    class Broken:
        name = "broken"

        def send(self, events: Any) -> Any:
            raise RuntimeError("bug in the sink")

        def close(self) -> None:
            pass

    store.enqueue(make_events(2), "p")
    with pytest.raises(RuntimeError):
        Dispatcher(store, Broken()).run_once()
    assert len(store.claim_batch(10)) == 2


def test_run_forever_drains_until_stopped(store: Store, fake_odp: FakeOdpServer) -> None:
    store.enqueue(make_events(30), "p")
    stop = threading.Event()
    with make_sink(fake_odp) as sink:
        dispatcher = Dispatcher(store, sink, batch_size=8, idle_sleep=0.05)
        worker = threading.Thread(target=dispatcher.run_forever, args=(stop,))
        worker.start()
        fake_odp.wait_for(lambda server: len(server.events()) == 30, timeout=10)
        store.enqueue(make_events(5, start=100), "p")  # picked up after an idle wait
        fake_odp.wait_for(lambda server: len(server.events()) == 35, timeout=10)
        stop.set()
        worker.join(5)
    assert not worker.is_alive()
    assert store.status()["outbox_pending"] == 0


# --- crash safety ----------------------------------------------------------------------

CHILD = """
import sys
from odpmap.odp import OdpSink
from odpmap.store import Dispatcher, Store

db, base_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(db)
store.enqueue(
    [{"type": "email", "action": "delivery", "identifiers": {"email": f"u{i}@example.com"},
      "data": {"ts": 1700000000 + i}} for i in range(count)],
    "crash-test",
)
dispatcher = Dispatcher(store, OdpSink(api_key="k", base_url=base_url, timeout=5), batch_size=10)
while dispatcher.run_once()["claimed"]:
    pass
print("drained", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_batch_loses_nothing(tmp_path: Path, fake_odp: FakeOdpServer) -> None:
    db = tmp_path / "crash.sqlite3"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "core"), os.environ.get("PYTHONPATH")])
        ),
    }
    command = [sys.executable, "-c", CHILD, str(db), fake_odp.base_url]

    # first process: three quick batches, then every request hangs until it is killed
    fake_odp.enqueue(ok(), ok(), ok())
    fake_odp.default = slow(1.0)
    first = subprocess.Popen(
        [*command, "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        fake_odp.wait_for(lambda s: len(s.requests()) == 4 and s.in_flight() == 1, timeout=15)
        first.send_signal(signal.SIGKILL)
    finally:
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL

    with Store(db) as after_crash:
        figures = after_crash.status()
    assert (figures["outbox_sent"], figures["outbox_pending"]) == (30, 70)  # killed mid-batch

    # second process: nothing new to enqueue, drains what the first left
    fake_odp.default = ok()
    second = subprocess.run([*command, "0"], env=env, capture_output=True, text=True, timeout=20)
    assert second.returncode == 0, second.stderr
    assert "drained" in second.stdout

    fake_odp.wait_for(lambda s: s.in_flight() == 0, timeout=5)
    enqueued = {row[1] for row in outbox_rows(db)}
    received = fake_odp.idempotence_ids()
    assert len(enqueued) == 100
    assert set(received) == enqueued  # at least once, nothing foreign
    assert len(received) == 110  # the batch in flight at the kill was accepted and resent
    assert {row[2] for row in outbox_rows(db)} == {"sent"}


def _event(n: int) -> dict[str, Any]:
    return {"type": "email", "action": "delivery", "identifiers": {"email": f"u{n}@example.com"},
            "data": {"ts": 1_700_000_000 + n, "target_address": f"u{n}@example.com"}}


def test_complete_report_stores_events_dead_letters_and_state_together(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        _complete_report_checks(store)


def _complete_report_checks(store: Store) -> None:
    rid = store.add_report("acme", b"{}", "application/json", {}, None)
    letter = DeadLetter(reason="unmapped", message="no rule", provider="acme", item={"x": 1}, index=1)
    ids = store.complete_report(rid, [_event(1), _event(2)], [letter])
    assert len(ids) == 2 and store.status()["outbox_pending"] == 2
    assert [r.dead_letter.reason for r in store.list_dead_letters()] == ["unmapped"]
    assert store.pending_reports() == []
    # A report already completed is refused and nothing more is written.
    with pytest.raises(KeyError):
        store.complete_report(rid, [_event(3)], [letter])
    assert store.status()["outbox_pending"] == 2 and len(store.list_dead_letters()) == 1


def test_complete_report_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path) as store:
        _one_transaction_checks(store, monkeypatch)


def _one_transaction_checks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = store.add_report("acme", b"{}", "application/json", {}, None)
    letter = DeadLetter(reason="unmapped", message="x", provider="acme", item={})

    def disk_full(conn: sqlite3.Connection, letters: Any) -> list[int]:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_insert_dead_letters", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        store.complete_report(rid, [_event(1)], [letter])
    # The events written before the failing dead letters were rolled back with them.
    assert store.status()["outbox_pending"] == 0
    assert [r.id for r in store.pending_reports()] == [rid]


def test_prune_keeps_what_delivery_and_replay_still_need(tmp_path: Path) -> None:
    clock = [1_000.0]
    with Store(tmp_path, clock=lambda: clock[0]) as store:
        _prune_checks(store, clock)


def _prune_checks(store: Store, clock: list[float]) -> None:
    sent, pending = store.enqueue([_event(1), _event(2)], "acme")
    store.mark_sent([sent])
    kept = store.add_report("acme", b"[]", "application/json", {}, None)
    store.complete_report(kept, [], [DeadLetter(reason="unmapped", message="x", provider="acme", item={},
                                                 index=0, details={"report_id": kept})])
    done = store.add_report("acme", b"[]", "application/json", {}, None)
    store.complete_report(done, [], [])
    waiting = store.add_report("acme", b"[]", "application/json", {}, None)
    store.remember("acme", "m1", {"campaign_id": 1})
    clock[0] = 5_000.0
    assert store.prune(2_000.0) == {"outbox": 1, "reports": 1, "tracking": 0}
    assert store.status()["outbox_pending"] == 1 and store.status()["outbox_sent"] == 0
    assert store.get_report(kept) is not None and store.get_report(done) is None
    assert [r.id for r in store.pending_reports()] == [waiting]
    assert len(store.list_dead_letters()) == 1 and store.recall("acme", "m1") == {"campaign_id": 1}
    assert store.prune(2_000.0, tracking_before=2_000.0)["tracking"] == 1
    assert store.recall("acme", "m1") is None
    del pending
