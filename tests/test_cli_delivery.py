"""The delivery commands: ``map --sink odp``, ``dispatch``, ``status``, ``dead-letters``, ``serve``.

In process with click's ``CliRunner`` (real commands, real SQLite files, the real fake
ODP server of tests/odp_server.py on 127.0.0.1); ``serve`` itself in a subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from odpmap.cli import cli

sys.path.insert(0, str(Path(__file__).parent))  # for odp_server (import mode importlib)
from odp_server import FakeOdpServer, forbidden, invalids, ok, status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "plugins" / "odpmap-sendgrid" / "src" / "odpmap_sendgrid" / "samples"
DELIVERED = SAMPLES / "docs-delivered.json"

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
ACME_REPORT = [
    {"to": "a@example.com", "status": "delivered", "at": 1_700_000_000},
    {"to": "b@example.com", "status": "opened", "at": 1_700_000_001},
    {"to": "c@example.com", "status": "opened", "at": 1_700_000_002},
]

Invoke = Callable[..., Result]


@pytest.fixture
def fake_odp() -> Iterator[FakeOdpServer]:
    with FakeOdpServer() as server:
        yield server


@pytest.fixture
def odpmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``odpmap(*args, key=...)``: run the CLI in process, in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str | Path, key: str | None = "test-key") -> Result:
        env = {"ODPMAP_LOAD_PLUGINS": "sendgrid", "ODPMAP_BLOCK_PLUGINS": None, "ODPMAP_DATA_DIR": None,
               "ODPMAP_CONFIG": None, "ODPMAP_ODP_API_KEY": key}
        return CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


def outbox_states(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(data_dir / "odpmap.sqlite3")
    try:
        return [row[0] for row in conn.execute("SELECT state FROM outbox ORDER BY id")]
    finally:
        conn.close()


# --- map --sink odp ----------------------------------------------------------------------------


def test_map_to_odp_through_the_outbox(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--odp-base-url", fake_odp.base_url,
                    "--data-dir", "data", DELIVERED)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "odpmap: sendgrid: received=1 mapped=1 skipped=0 dead_lettered=0 events=1 unattributed=1",
        "odpmap: odp: sent=1 rejected=0 pending=0",
    ]
    [event] = fake_odp.events()
    assert event["action"] == "delivery"
    assert fake_odp.requests()[0].headers["x-api-key"] == "test-key"
    assert outbox_states(tmp_path / "data") == ["sent"]

    # the same file again: its events have the same ids, so nothing is stored or sent twice
    again = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--odp-base-url", fake_odp.base_url,
                   "--data-dir", "data", DELIVERED)
    assert again.exit_code == 0
    assert len(fake_odp.events()) == 1
    assert outbox_states(tmp_path / "data") == ["sent"]


def test_map_to_odp_with_a_refused_key_keeps_the_events(odpmap: Invoke, fake_odp: FakeOdpServer,
                                                        tmp_path: Path) -> None:
    fake_odp.default = forbidden()
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--odp-base-url", fake_odp.base_url,
                    "--data-dir", "data", DELIVERED)
    assert result.exit_code == 2
    assert "the ODP API key is wrong" in result.stderr
    assert "1 event(s) kept in the outbox of data; once the key is fixed: odpmap dispatch --data-dir data --once" \
        in result.stderr
    assert "Traceback" not in result.output
    assert outbox_states(tmp_path / "data") == ["pending"]
    assert len(fake_odp.requests()) == 1  # no retries of a 403

    fake_odp.default = ok()
    later = odpmap("dispatch", "--data-dir", "data", "--once", "--config", write_config(tmp_path, fake_odp))
    assert later.exit_code == 0, later.output
    assert "sent=1 rejected=0 pending=0" in later.stderr
    assert outbox_states(tmp_path / "data") == ["sent"]


def test_map_to_odp_needs_the_key(odpmap: Invoke, tmp_path: Path) -> None:
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--data-dir", "data", DELIVERED, key=None)
    assert result.exit_code == 2
    assert result.stderr == "odpmap: error: set ODPMAP_ODP_API_KEY to the ODP API key to send events to ODP\n"
    assert not (tmp_path / "data").exists()


def test_map_to_odp_failing_for_now_exits_3(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    fake_odp.default = status(503)
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--odp-base-url", fake_odp.base_url,
                    "--sink-option", "max_retries=1", "--sink-option", "backoff_base=0",
                    "--data-dir", "data", DELIVERED)
    assert result.exit_code == 3, result.output
    assert "odpmap: delivery failed for now:" in result.stderr
    assert "retry: odpmap dispatch --data-dir data --once" in result.stderr
    assert len(fake_odp.requests()) == 2
    assert outbox_states(tmp_path / "data") == ["pending"]


def test_map_to_odp_dead_letters_go_to_the_store(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    report = tmp_path / "odd.json"
    report.write_text(json.dumps([
        {"email": "a@example.com", "event": "delivered", "timestamp": 1_700_000_000},
        {"email": "b@example.com", "event": "mystery", "timestamp": 1_700_000_000},
    ]))
    fake_odp.enqueue(invalids([0]))
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--odp-base-url", fake_odp.base_url,
                    "--data-dir", "data", report)
    assert result.exit_code == 1
    assert "odpmap: 1 dead letter(s) stored in data (odpmap dead-letters list)" in result.stderr
    assert "odpmap: odp: sent=0 rejected=1 pending=0" in result.stderr
    listed = odpmap("dead-letters", "list", "--data-dir", "data")
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "REASON", "REPLAYED", "MESSAGE"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["1", "sendgrid", "unmapped", "-"], ["2", "sendgrid", "rejected", "-"]]


def test_map_sink_option_errors(odpmap: Invoke) -> None:
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--sink-option", "colour=red", DELIVERED)
    assert result.exit_code == 2
    assert "--sink-option colour: the odp sink takes backoff_base, backoff_max, batch_size" in result.stderr
    result = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--dead-letters", "dl.jsonl", DELIVERED)
    assert (result.exit_code, result.stderr) == (
        2, "odpmap: error: --dead-letters does not apply to --sink odp: dead letters go to the data directory\n")


# --- status, dead letters, replay, dispatch -----------------------------------------------------


def write_config(tmp_path: Path, fake_odp: FakeOdpServer | None = None, extra: str = "") -> Path:
    base_url = fake_odp.base_url if fake_odp else "http://127.0.0.1:9/v3"
    path = tmp_path / "odpmap.yaml"
    path.write_text(textwrap.dedent(f"""
        data_dir: data
        mappings: [mappings]
        plugins: {{autoload: false}}
        sink: {{name: odp}}
        odp: {{base_url: "{base_url}", max_retries: 0}}
    """) + extra, encoding="utf-8")
    return path


def test_dead_letter_replay_after_a_mapping_fix(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    mapping = tmp_path / "mappings" / "acme.yaml"
    mapping.write_text(textwrap.dedent(ACME_V1), encoding="utf-8")
    report = tmp_path / "acme.json"
    report.write_text(json.dumps(ACME_REPORT))
    config = write_config(tmp_path, fake_odp)

    mapped = odpmap("map", "-p", "acme", "--mappings", "mappings", "--sink", "odp", "--data-dir", "data",
                    "--odp-base-url", fake_odp.base_url, report)
    assert mapped.exit_code == 1  # two items had no rule
    assert [e["identifiers"]["email"] for e in fake_odp.events()] == ["a@example.com"]

    shown = odpmap("dead-letters", "show", "1", "--config", config)
    letter = json.loads(shown.stdout)
    assert (letter["reason"], letter["item"], letter["replay_result"]) == ("unmapped", ACME_REPORT[1], None)
    assert letter["details"] == {"file": str(report)}

    mapping.write_text(textwrap.dedent(ACME_V2), encoding="utf-8")  # the fix: a rule for opened
    replayed = odpmap("dead-letters", "replay", "--config", config, "--provider", "acme")
    assert replayed.exit_code == 0, replayed.output
    assert replayed.stdout.splitlines() == [
        "1  acme  unmapped  mapped: 1 event(s) enqueued",
        "2  acme  unmapped  mapped: 1 event(s) enqueued",
    ]
    assert replayed.stderr == ("odpmap: replayed 2 dead letter(s): 2 mapped (2 event(s) enqueued), 0 skipped, "
                               "0 still dead, 0 already replayed\n")

    figures = json.loads(odpmap("status", "--config", config, "--json").stdout)
    assert (figures["outbox_pending"], figures["outbox_sent"], figures["dead_letters"]) == (2, 1, {"unmapped": 2})

    sent = odpmap("dispatch", "--config", config, "--once")
    assert sent.exit_code == 0, sent.output
    assert sorted(e["identifiers"]["email"] for e in fake_odp.events()) == [
        "a@example.com", "b@example.com", "c@example.com"]

    # the letters are kept, marked with what the replay did
    listed = odpmap("dead-letters", "list", "--config", config, "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["replay_result"] for r in rows] == ["mapped: 1 event(s) enqueued"] * 2
    again = odpmap("dead-letters", "replay", "--config", config)
    assert again.stdout.splitlines()[0] == "1  acme  unmapped  already replayed: mapped: 1 event(s) enqueued"


def test_status_figures(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake_odp)
    fake_odp.default = status(500)
    failed = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--data-dir", "data", "--odp-base-url",
                    fake_odp.base_url, "--sink-option", "max_retries=0", DELIVERED)
    assert failed.exit_code == 3
    result = odpmap("status", "--config", config)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "data directory   data"
    assert lines[1].startswith("outbox pending   1 (oldest: ") and lines[1].endswith("s)")
    assert lines[2].startswith("failing          1 (last error: sink 'odp': gave up on ")
    assert lines[3:] == [
        "sent             0",
        "rejected         0",
        "reports pending  0",
        "reports failed   0",
        "dead letters     0",
    ]
    figures = json.loads(odpmap("status", "--data-dir", "data", "--json").stdout)
    assert figures["outbox_pending"] == 1 and figures["outbox_failing"] == 1
    assert figures["data_dir"] == "data"
    assert figures["oldest_pending_age_seconds"] >= 0


def test_status_of_a_missing_data_directory(odpmap: Invoke) -> None:
    result = odpmap("status", "--data-dir", "nowhere")
    assert result.exit_code == 2
    assert result.stderr == "odpmap: error: no odpmap database in nowhere (nothing has been received there yet)\n"


def test_dead_letter_show_unknown_id(odpmap: Invoke, fake_odp: FakeOdpServer) -> None:
    odpmap("map", "-p", "sendgrid", "--sink", "odp", "--data-dir", "data", "--odp-base-url", fake_odp.base_url,
           DELIVERED)
    result = odpmap("dead-letters", "show", "7", "--data-dir", "data")
    assert (result.exit_code, result.stderr) == (2, "odpmap: error: no dead letter with id 7\n")
    assert odpmap("dead-letters", "list", "--data-dir", "data").stderr == "no dead letters\n"


# --- configuration errors -------------------------------------------------------------------------


def test_serve_reports_config_errors(odpmap: Invoke, tmp_path: Path) -> None:
    config = tmp_path / "odpmap.yaml"
    config.write_text("server:\n  port: http\nproviders:\n  sendgrid: {secret_env: NOPE_KEY}\n")
    result = odpmap("serve", "--config", config)
    assert result.exit_code == 2
    assert result.stderr == f"odpmap: error: {config}:2:9: server.port: must be of integer type\n"

    config.write_text("providers:\n  sendgrid: {secret_env: NOPE_KEY}\n")
    result = odpmap("serve", "--config", config)
    assert result.exit_code == 2
    assert "odpmap.yaml:2:14: providers.sendgrid.secret_env: environment variable NOPE_KEY is not set" in result.stderr

    config.write_text("data_dir: data\nproviders:\n  acme: {}\n")
    result = odpmap("serve", "--config", config)
    assert result.exit_code == 2
    assert "odpmap.yaml:3:3: providers.acme: unknown provider 'acme' (known: sendgrid, vonage)" in result.stderr

    config.write_text("data_dir: data\nsink: {name: odp}\n")
    result = odpmap("serve", "--config", config, key=None)
    assert result.exit_code == 2
    assert "environment variable ODPMAP_ODP_API_KEY is not set" in result.stderr


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    config = tmp_path / "odpmap.yaml"
    config.write_text("plugins: {load: [sendgrid]}\nserver: {port: 0, access_log: false}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "core"),
                                                                       os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", "from odpmap.cli import main; main()", "serve",
                                 "--config", str(config)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        url = log.read_text().split("listening on ", 1)[1].split()[0]
        response = httpx.post(f"{url}/webhooks/sendgrid", content=DELIVERED.read_bytes(),
                              headers={"Content-Type": "application/json"})
        assert response.json() == {"status": "stored", "report_id": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, log.read_text()
    assert log.read_text().endswith("odpmap: stopped\n")
    assert json.loads(out.decode().splitlines()[0])["action"] == "delivery"  # the stdout sink got the event
    # No secret is configured for sendgrid (or vonage), which sign their webhooks: serve says so.
    assert "odpmap: warning: no webhook secret configured for sendgrid, vonage:" in log.read_text()


def test_dispatch_runs_until_sigterm(odpmap: Invoke, fake_odp: FakeOdpServer, tmp_path: Path) -> None:
    import signal
    import time

    fake_odp.default = forbidden()  # the events wait in the outbox
    odpmap("map", "-p", "sendgrid", "--sink", "odp", "--data-dir", "data", "--odp-base-url", fake_odp.base_url,
           DELIVERED)
    fake_odp.default = ok()
    config = write_config(tmp_path, fake_odp, "dispatch: {idle_sleep: 0.05}\n")
    env = {**os.environ, "ODPMAP_ODP_API_KEY": "test-key",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "core"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", "from odpmap.cli import main; main()", "dispatch",
                             "--config", str(config)], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        fake_odp.wait_for(lambda s: len(s.events()) == 1, timeout=20)
        deadline = time.monotonic() + 10
        while outbox_states(tmp_path / "data") != ["sent"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert err.decode().splitlines()[-1] == "odpmap: stopped"
    assert outbox_states(tmp_path / "data") == ["sent"]


def test_prune_deletes_delivered_events_only(odpmap: Invoke, fake_odp: FakeOdpServer) -> None:
    sent = odpmap("map", "-p", "sendgrid", "--sink", "odp", "--data-dir", "data", "--odp-base-url",
                  fake_odp.base_url, DELIVERED)
    assert sent.exit_code == 0
    assert outbox_states(Path("data")) == ["sent"]
    young = odpmap("prune", "--data-dir", "data")  # 30 days by default: nothing that old
    assert young.exit_code == 0 and young.stderr == "odpmap: pruned 0 outbox row(s), 0 report(s), 0 tracking row(s)\n"
    old = odpmap("prune", "--data-dir", "data", "--older-than", "-1s")
    assert old.stderr == "odpmap: pruned 1 outbox row(s), 0 report(s), 0 tracking row(s)\n"
    assert outbox_states(Path("data")) == []
    bad = odpmap("prune", "--data-dir", "data", "--older-than", "soon")
    assert bad.exit_code == 2 and "not a duration: 'soon'" in bad.stderr
