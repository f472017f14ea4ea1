"""odpmap.service: the report worker, the in-process dispatcher, replay, and crash safety.

Real parts only: uvicorn on 127.0.0.1, SQLite files in tmp_path, the fake ODP API of
tests/odp_server.py, and ``odpmap serve`` in a subprocess killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from odpmap import Engine, hookimpl
from odpmap.config import Config, DispatchConfig, OdpConfig, SinkConfig, WorkerConfig
from odpmap.receiver import Metrics
from odpmap.service import (
    BackgroundServer,
    ReportWorker,
    Service,
    assign_idempotence_ids,
    instance_id,
    replay_dead_letters,
    status_figures,
)
from odpmap.store import Store

sys.path.insert(0, str(Path(__file__).parent))  # for odp_server (import mode importlib)
from odp_server import FakeOdpServer, forbidden, invalids, ok, slow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACTIONS = {"delivered": "delivery", "open": "open", "click": "click"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_plugins=["sendgrid"])


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def fake_odp() -> Iterator[FakeOdpServer]:
    with FakeOdpServer() as server:
        yield server


def sendgrid_batch(tag: str, size: int = 3) -> tuple[bytes, set[tuple[str, str]]]:
    """A SendGrid Event Webhook batch with unique ids; and its ``(email, action)`` pairs."""
    kinds = list(ACTIONS)
    items = [
        {"email": f"{tag}-{k}@example.com", "event": kinds[k % 3], "url": "https://example.com/offer",
         "sg_event_id": f"{tag}-{k}", "sg_message_id": f"{tag}.filter0001", "timestamp": 1_700_000_000 + k}
        for k in range(size)
    ]
    return json.dumps(items).encode(), {(i["email"], ACTIONS[i["event"]]) for i in items}


def received_pairs(server: FakeOdpServer) -> set[tuple[str, str]]:
    return {(e["identifiers"]["email"], e["action"]) for e in server.events()}


def outbox(db: Path) -> list[tuple[str, str, str]]:
    """``(idempotence_id, event, state)`` of every outbox row, read with a new connection."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT idempotence_id, event, state FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def odp_config(tmp_path: Path, server: FakeOdpServer, **overrides: Any) -> Config:
    fields: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "sink": SinkConfig("odp"),
        "odp": OdpConfig(api_key_env="TEST_ODP_KEY", base_url=server.base_url, timeout=5, max_retries=2),
        "environ": {"TEST_ODP_KEY": "test-key"},
        "dispatch": DispatchConfig(batch_size=50, idle_sleep=0.05, error_sleep=0.2),
        "worker": WorkerConfig(batch_size=50, idle_sleep=0.05),
    }
    fields.update(overrides)
    return Config(**fields)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


# --- the report worker ------------------------------------------------------------------------


def test_worker_maps_reports_into_the_outbox(engine: Engine, tmp_path: Path) -> None:
    metrics = Metrics()
    with Store(tmp_path / "db.sqlite3") as store:
        body, expected = sendgrid_batch("w")
        broken = json.dumps([{"email": "x@example.com", "event": "mystery", "timestamp": 1_700_000_000}]).encode()
        first = store.add_report("sendgrid", body, "application/json", {}, "http://h/webhooks/sendgrid")
        second = store.add_report("sendgrid", broken, "application/json", {}, None)
        worker = ReportWorker(engine, store, metrics=metrics)
        assert worker.run_once() == 2
        assert store.pending_reports() == []
        rows = outbox(store.path)
        assert {(json.loads(e)["identifiers"]["email"], json.loads(e)["action"]) for _, e, _ in rows} == expected
        [letter] = store.list_dead_letters()
        assert letter.dead_letter.reason == "unmapped"
        assert letter.dead_letter.details["report_id"] == second
        # ids are deterministic: mapping the report again gives the same ones
        again = engine.map("sendgrid", body, content_type="application/json")
        assign_idempotence_ids(again.events, f"{instance_id(store)}/report/{first}")
        assert [e["data"]["idempotence_id"] for e in again.events] == [i for i, _, _ in rows]
    assert metrics.value("odpmap_items_mapped_total", provider="sendgrid") == 3
    assert metrics.value("odpmap_events_enqueued_total", provider="sendgrid") == 3
    assert metrics.value("odpmap_dead_lettered_total", provider="sendgrid", reason="unmapped") == 1
    assert metrics.value("odpmap_reports_mapped_total", provider="sendgrid", state="mapped") == 2


def test_remapping_after_a_crash_stores_no_duplicate(engine: Engine, tmp_path: Path) -> None:
    """The process died after the events were enqueued but before the report was marked."""
    db = tmp_path / "db.sqlite3"
    body, _ = sendgrid_batch("crash")
    with Store(db) as store:
        report_id = store.add_report("sendgrid", body, "application/json", {}, None)
        # the first half of what ReportWorker.process does, then "the crash"
        result = engine.map("sendgrid", body, content_type="application/json",
                            received_at=store.pending_reports()[0].received_at)
        assign_idempotence_ids(result.events, f"{instance_id(store)}/report/{report_id}")
        store.enqueue(result.events, "sendgrid")
        before = outbox(db)
    with Store(db) as store:  # a new process: the report is still "received"
        assert [r.id for r in store.pending_reports()] == [report_id]
        assert ReportWorker(engine, store).run_once() == 1
        assert store.pending_reports() == []
    assert outbox(db) == before  # same ids, stored once


def test_ids_of_items_without_an_item_id_are_per_data_directory(engine: Engine, tmp_path: Path) -> None:
    """Without an item id, an event is known only by its report: two installations (two
    data directories) must never produce the same id for their own reports."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "acme.yaml").write_text(textwrap.dedent(ACME_V1), encoding="utf-8")
    acme = Engine(autoload=False, mapping_paths=[folder])
    body = json.dumps([{"to": "a@example.com", "status": "delivered", "at": 1_700_000_000}]).encode()
    sendgrid_body, _ = sendgrid_batch("same")
    acme_ids, sendgrid_ids = [], []
    for name in ("a", "b"):
        with Store(tmp_path / name / "db.sqlite3") as store:
            store.add_report("acme", body, "application/json", {}, None)
            ReportWorker(acme, store).run_once()
            acme_ids.append({i for i, _, _ in outbox(store.path)})
            store.add_report("sendgrid", sendgrid_body, "application/json", {}, None)
            ReportWorker(engine, store).run_once()
            sendgrid_ids.append({i for i, _, _ in outbox(store.path)} - acme_ids[-1])
    assert len(acme_ids[0]) == 1 and not acme_ids[0] & acme_ids[1]
    # SendGrid items have an id (sg_event_id): the engine derives the same ids everywhere,
    # so a redelivered event is one event in ODP
    assert len(sendgrid_ids[0]) == 3 and sendgrid_ids[0] == sendgrid_ids[1]


def test_unknown_provider_report_is_kept_as_a_raw_dead_letter(engine: Engine, tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite3") as store:
        report_id = store.add_report("retired", b"status=delivered", "application/x-www-form-urlencoded", {}, None)
        assert ReportWorker(engine, store).run_once() == 1
        [letter] = store.list_dead_letters()
        assert letter.dead_letter.item == b"status=delivered"
        assert letter.dead_letter.details["report_id"] == report_id
        assert "unknown provider 'retired'" in letter.dead_letter.message
        assert status_figures(store)["reports_failed"] == 1


class BoomParser:
    """A plugin whose parser raises something other than ValueError (a bug)."""

    calls = 0

    @hookimpl
    def odpmap_register_parsers(self, register: Any) -> None:
        def boom(body: bytes, **kw: Any) -> Any:
            BoomParser.calls += 1
            raise RuntimeError("parser bug")

        register("boom", boom)


def test_mapping_that_raises_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "boomer.yaml").write_text(textwrap.dedent("""
        format: 1
        provider: boomer
        channel: email
        parser: boom
        rules:
          - id: all
            skip: nothing
    """), encoding="utf-8")
    engine = Engine(autoload=False, plugins=[BoomParser()], mapping_paths=[folder])
    with Store(tmp_path / "db.sqlite3") as store:
        store.add_report("boomer", b"{}", "application/json", {}, None)
        worker = ReportWorker(engine, store, max_attempts=3)
        assert worker.run_once() == 0  # attempt 1: left pending
        assert worker.run_once() == 0  # attempt 2
        assert worker.run_once() == 1  # attempt 3: given up
        [letter] = store.list_dead_letters()
        assert letter.dead_letter.message == "mapping raised RuntimeError: parser bug (3 attempts)"
        assert letter.dead_letter.item == b"{}"
        assert store.pending_reports() == []
    assert BoomParser.calls == 3


# --- the service: receive, map, dispatch ----------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, engine: Engine, fake_odp: FakeOdpServer) -> Iterator[Callable[..., Service]]:
    made: list[tuple[Service, BackgroundServer]] = []

    def start(**overrides: Any) -> Service:
        svc = Service(odp_config(tmp_path, fake_odp, **overrides), engine=engine)
        server = BackgroundServer(svc.app).__enter__()
        svc.url = server.url  # type: ignore[attr-defined]
        svc.start()
        made.append((svc, server))
        return svc

    yield start
    for svc, server in made:
        server.__exit__(None, None, None)
        svc.close()


def test_every_acknowledged_webhook_reaches_odp_under_concurrent_load(
    service: Callable[..., Service], fake_odp: FakeOdpServer
) -> None:
    svc = service(synchronous="NORMAL")  # concurrency is under test here, not fsync
    threads, per_thread = 8, 50
    acked: set[tuple[str, str]] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=svc.url, timeout=30, verify=False) as http:  # loopback: no TLS
            for k in range(per_thread):
                body, pairs = sendgrid_batch(f"t{n}-{k}")
                response = http.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"})
                with lock:
                    if response.status_code == 200:
                        acked.update(pairs)
                    else:
                        failures.append(f"{response.status_code} {response.text}")

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert failures == []
    assert len(acked) == threads * per_thread * 3

    fake_odp.wait_for(lambda s: received_pairs(s) >= acked, timeout=40)
    rows = outbox(svc.store.path)
    ours = {i for i, _, _ in rows}
    received = fake_odp.idempotence_ids()
    assert set(received) <= ours  # nothing foreign
    assert received_pairs(fake_odp) == acked  # nothing lost, nothing invented
    assert len(rows) == len(acked)  # each event enqueued once
    assert svc.metrics.value("odpmap_reports_stored_total", provider="sendgrid") == threads * per_thread
    wait_until(lambda: svc.store.status()["outbox_pending"] == 0)
    assert svc.metrics.value("odpmap_events_dispatched_total", sink="odp") >= len(acked)


def test_refused_key_keeps_events_and_degrades_health(
    service: Callable[..., Service], fake_odp: FakeOdpServer, http: httpx.Client
) -> None:
    fake_odp.default = forbidden()
    svc = service()
    body, pairs = sendgrid_batch("k")
    assert http.post(f"{svc.url}/webhooks/sendgrid", content=body).status_code == 200
    wait_until(lambda: "dispatch_error" in http.get(f"{svc.url}/healthz").json())
    health = http.get(f"{svc.url}/healthz").json()
    assert health["status"] == "degraded"
    assert "the ODP API key is wrong" in health["dispatch_error"]
    assert svc.store.status()["outbox_pending"] == 3
    assert svc.metrics.value("odpmap_dispatch_failures_total", sink="odp", retryable="false") >= 1
    fake_odp.default = ok()  # the key works again (e.g. ODP side fixed): delivery resumes
    fake_odp.wait_for(lambda s: received_pairs(s) == pairs, timeout=10)
    wait_until(lambda: http.get(f"{svc.url}/healthz").json() == {"status": "ok"})


def test_retries_and_rejections_are_counted(
    service: Callable[..., Service], fake_odp: FakeOdpServer, http: httpx.Client
) -> None:
    fake_odp.enqueue(slow(0, then=invalids([1])))  # the second event of the first batch is refused
    svc = service(odp=OdpConfig(api_key_env="TEST_ODP_KEY", base_url=fake_odp.base_url, timeout=5,
                                max_retries=2))
    body, _ = sendgrid_batch("r")
    http.post(f"{svc.url}/webhooks/sendgrid", content=body)
    wait_until(lambda: svc.store.status()["outbox_rejected"] == 1 and svc.store.status()["outbox_pending"] == 0)
    assert svc.metrics.value("odpmap_events_rejected_total", sink="odp") == 1
    assert svc.metrics.value("odpmap_events_dispatched_total", sink="odp") == 2
    [letter] = svc.store.list_dead_letters(reason="rejected")
    assert letter.dead_letter.item["identifiers"]["email"] == "r-1@example.com"


# --- replaying dead letters -----------------------------------------------------------------------

ACME_V1 = """
    format: 1
    provider: acme
    channel: email
    parser: json
    defaults:
      identifiers: {email: "{{ item.to }}"}
      data: {ts: "{{ item.at }}", target_address: "{{ item.to }}"}
    rules:
      - id: delivered
        when: item.status == "delivered"
        emit: {action: delivery}
"""
ACME_V2 = ACME_V1 + """
      - id: opened
        when: item.status == "opened"
        emit: {action: open}
"""


def test_replay_after_a_mapping_fix(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    mapping = folder / "acme.yaml"
    mapping.write_text(textwrap.dedent(ACME_V1), encoding="utf-8")
    report = json.dumps([
        {"to": "a@example.com", "status": "delivered", "at": 1_700_000_000},
        {"to": "b@example.com", "status": "opened", "at": 1_700_000_001},
    ]).encode()
    with Store(tmp_path / "db.sqlite3") as store:
        store.add_report("acme", report, "application/json", {}, None)
        store.add_dead_letters([])  # nothing
        ReportWorker(Engine(autoload=False, mapping_paths=[folder]), store).run_once()
        [letter] = store.list_dead_letters()
        assert (letter.dead_letter.reason, letter.dead_letter.item["to"]) == ("unmapped", "b@example.com")

        # replay before the fix: still dead, marked so
        summary = replay_dead_letters(Engine(autoload=False, mapping_paths=[folder]), store)
        assert [o.result for o in summary.outcomes] == ["still dead"]
        assert store.get_dead_letter(letter.id).replay_result.startswith("still dead: unmapped")  # type: ignore[union-attr]

        mapping.write_text(textwrap.dedent(ACME_V2), encoding="utf-8")
        fixed = Engine(autoload=False, mapping_paths=[folder])
        summary = replay_dead_letters(fixed, store, provider="acme")
        assert [(o.id, o.result, o.events) for o in summary.outcomes] == [(letter.id, "mapped", 1)]
        record = store.get_dead_letter(letter.id)
        assert record is not None and record.replay_result == "mapped: 1 event(s) enqueued"
        events = [json.loads(e) for _, e, _ in outbox(store.path)]
        assert [(e["action"], e["identifiers"]["email"]) for e in events] == [
            ("delivery", "a@example.com"), ("open", "b@example.com")]
        # replaying again changes nothing; the letter is kept
        again = replay_dead_letters(fixed, store)
        assert [o.result for o in again.outcomes] == ["already replayed"]
        assert len(outbox(store.path)) == 2
        assert len(store.list_dead_letters()) == 1


def test_replay_of_an_unparseable_raw_report(engine: Engine, tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite3") as store:
        body, pairs = sendgrid_batch("raw", size=2)
        from odpmap.outcomes import DeadLetter

        [dl_id] = store.add_dead_letters([DeadLetter("unparseable", "json parser: boom", "sendgrid", body,
                                                     content_type="application/json")])
        summary = replay_dead_letters(engine, store, ids=[dl_id])
        assert [(o.result, o.events) for o in summary.outcomes] == [("mapped", 2)]
        assert {(json.loads(e)["identifiers"]["email"], json.loads(e)["action"])
                for _, e, _ in outbox(store.path)} == pairs


def test_rejected_events_are_replayed_only_on_request(engine: Engine, tmp_path: Path,
                                                      fake_odp: FakeOdpServer) -> None:
    from odpmap.odp import OdpSink
    from odpmap.store import Dispatcher

    with Store(tmp_path / "db.sqlite3") as store:
        event = {"type": "email", "action": "delivery", "identifiers": {"email": "a@example.com"},
                 "data": {"ts": 1_700_000_000, "target_address": "a@example.com"}}
        store.enqueue([event], "sendgrid")
        first_id = event["data"]["idempotence_id"]
        fake_odp.enqueue(invalids([0]))
        with OdpSink(api_key="k", base_url=fake_odp.base_url) as sink:
            Dispatcher(store, sink).run_once()
        assert replay_dead_letters(engine, store).outcomes == []  # not without --reason rejected
        summary = replay_dead_letters(engine, store, reason="rejected")
        assert [(o.result, o.events) for o in summary.outcomes] == [("mapped", 1)]
        rows = outbox(store.path)
        assert [state for _, _, state in rows] == ["rejected", "pending"]
        assert rows[1][0] != first_id  # a new id: ODP never accepted the first


# --- kill -9 in the middle of traffic and of a dispatch batch --------------------------------------


def start_serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "TEST_ODP_KEY": "test-key",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "core"), os.environ.get("PYTHONPATH")]))}
    env.pop("ODPMAP_LOAD_PLUGINS", None)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from odpmap.cli import main; main()", "serve", "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"odpmap serve did not start:\n{log.read_text(errors='replace')}")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_traffic_and_dispatch_loses_nothing(tmp_path: Path, fake_odp: FakeOdpServer) -> None:
    config = tmp_path / "odpmap.yaml"
    config.write_text(textwrap.dedent(f"""
        data_dir: data
        plugins: {{load: [sendgrid]}}
        server: {{host: 127.0.0.1, port: 0, access_log: false, log_level: warning}}
        sink: {{name: odp}}
        odp: {{api_key_env: TEST_ODP_KEY, base_url: "{fake_odp.base_url}", timeout: 5, max_retries: 20}}
        dispatch: {{batch_size: 10, idle_sleep: 0.05, error_sleep: 0.2}}
        worker: {{batch_size: 5, idle_sleep: 0.05}}
    """), encoding="utf-8")
    fake_odp.default = slow(0.15)  # every batch is in flight for a while
    first, url = start_serve(config, tmp_path / "first.log")

    acked: set[tuple[str, str]] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(n: int, base: str, count: int) -> None:
        with httpx.Client(base_url=base, timeout=10, verify=False) as http:
            for k in range(count):
                if stop.is_set():
                    return
                body, pairs = sendgrid_batch(f"{base[-5:]}-{n}-{k}", size=2)
                try:
                    response = http.post("/webhooks/sendgrid", content=body)
                except httpx.HTTPError:
                    return  # the server died under us: this one was not acknowledged
                if response.status_code == 200:
                    with lock:
                        acked.add(next(iter(pairs)))
                        acked.update(pairs)

    clients = [threading.Thread(target=traffic, args=(n, url, 60)) for n in range(4)]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: len(acked) >= 80 and fake_odp.in_flight() >= 1, timeout=20)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stop.set()
        for c in clients:
            c.join(20)
    assert first.returncode == -signal.SIGKILL
    acked_before_kill = set(acked)
    with Store(tmp_path / "data" / "odpmap.sqlite3") as after_crash:
        left = after_crash.status()
    assert left["outbox_pending"] + left["reports_pending"] > 0  # the restart has work to recover
    print("after the kill:", left, "in flight:", fake_odp.in_flight(), "acked:", len(acked_before_kill))

    fake_odp.default = ok()
    second, url2 = start_serve(config, tmp_path / "second.log")
    try:
        stop.clear()
        traffic(9, url2, 5)  # it serves again
        fake_odp.wait_for(lambda s: received_pairs(s) >= acked, timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()
    assert "odpmap: stopped" in (tmp_path / "second.log").read_text()

    rows = outbox(tmp_path / "data" / "odpmap.sqlite3")
    ours = {i for i, _, _ in rows}
    assert set(fake_odp.idempotence_ids()) <= ours  # every id ODP saw is one of ours
    pairs = [(json.loads(e)["identifiers"]["email"], json.loads(e)["action"]) for _, e, _ in rows]
    assert len(pairs) == len(set(pairs))  # no report's events were enqueued twice
    assert acked_before_kill <= received_pairs(fake_odp)
    assert len(acked_before_kill) >= 80
    ids = fake_odp.idempotence_ids()
    print("ODP received", len(ids), "events,", len(ids) - len(set(ids)), "resent after the kill")


ENVELOPE_V1 = """\
    format: 1
    provider: envelope
    channel: email
    items: report.events
    defaults:
      identifiers: {email: "{{ item.to }}"}
      data: {ts: "{{ report.sent_at | epoch }}", target_address: "{{ item.to }}"}
    rules:
      - id: delivered
        when: item.status == "delivered"
        emit: {action: delivery}
    """


def test_replay_maps_the_item_within_its_stored_report(tmp_path: Path) -> None:
    """A mapping reading the report around the item (here its `sent_at`) replays too."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    mapping = folder / "envelope.yaml"
    mapping.write_text(textwrap.dedent(ENVELOPE_V1), encoding="utf-8")
    report = json.dumps({"sent_at": 1_700_000_000, "events": [
        {"to": "a@example.com", "status": "delivered"},
        {"to": "b@example.com", "status": "opened"},
        {"to": "c@example.com", "status": "delivered"},
    ]}).encode()
    with Store(tmp_path / "db.sqlite3") as store:
        store.add_report("envelope", report, "application/json", {}, None)
        ReportWorker(Engine(autoload=False, mapping_paths=[folder]), store).run_once()
        [letter] = store.list_dead_letters()
        assert letter.dead_letter.index == 1 and letter.dead_letter.item == {"to": "b@example.com", "status": "opened"}

        fixed = ENVELOPE_V1.replace('''        emit: {action: delivery}''', '''        emit: {action: delivery}
      - id: opened
        when: item.status == "opened"
        emit: {action: open}''')
        mapping.write_text(textwrap.dedent(fixed), encoding="utf-8")
        summary = replay_dead_letters(Engine(autoload=False, mapping_paths=[folder]), store)
        assert [(o.result, o.events) for o in summary.outcomes] == [("mapped", 1)]
        events = [json.loads(e) for _, e, _ in outbox(store.path)]
        # Only the dead item was mapped again; the report's other items are not re-sent.
        assert sorted((e["action"], e["identifiers"]["email"], e["data"]["ts"]) for e in events) == [
            ("delivery", "a@example.com", 1_700_000_000), ("delivery", "c@example.com", 1_700_000_000),
            ("open", "b@example.com", 1_700_000_000)]
