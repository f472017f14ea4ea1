"""The ``odpmap`` command line, end to end: ``python -m odpmap.cli`` in a subprocess.

The subprocesses load the ``sendgrid`` entry-point plugin only (``ODPMAP_LOAD_PLUGINS``),
so other plugins installed in the environment do not change the output. Variants of
option handling run in-process with click's ``CliRunner`` (same commands, no interpreter
start-up). The last tests build and pip-install a plugin distribution, ``odpmap-acme``,
into a folder and check that the CLI finds it through its entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from odpmap import Engine
from odpmap import cli as cli_module
from odpmap.cli import cli
from odpmap.sinks import dumps_event

ROOT = Path(__file__).resolve().parents[1]
SENDGRID_SAMPLES = ROOT / "plugins" / "odpmap-sendgrid" / "src" / "odpmap_sendgrid" / "samples"
BATCH = SENDGRID_SAMPLES / "docs-all-event-types-batch.json"
DELIVERED = SENDGRID_SAMPLES / "docs-delivered.json"
VONAGE_SAMPLE = ROOT / "mappings" / "samples" / "vonage" / "dlr-delivered-courier-doc.query.txt"
VONAGE_MAPPING = ROOT / "mappings" / "vonage.yaml"
SENDGRID_MAPPING = SENDGRID_SAMPLES.parent / "sendgrid.yaml"


def odpmap(*args: str | Path, input: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter, with no ODPMAP_* variables but ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ODPMAP_")}
    environ.update({"ODPMAP_LOAD_PLUGINS": "sendgrid", "PYTHONIOENCODING": "utf-8"})
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "odpmap.cli", *map(str, args)],
        input=input, capture_output=True, text=True, env=environ, timeout=60, check=False,
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def sendgrid_engine() -> Engine:
    return Engine(load_plugins=["sendgrid"], environ={})


InProcess = Callable[..., Result]


@pytest.fixture
def odpmap_in_process(monkeypatch: pytest.MonkeyPatch, sendgrid_engine: Engine) -> InProcess:
    """Invoke the CLI group in this process. Commands get the shared sendgrid+built-ins
    engine (building engines is tested elsewhere), unless given ``--mappings``."""
    build = cli_module.make_engine
    monkeypatch.setattr(cli_module, "make_engine", lambda mappings=(): build(mappings) if mappings else sendgrid_engine)

    def invoke(*args: str | Path) -> Result:
        runner = CliRunner(env={"ODPMAP_LOAD_PLUGINS": "sendgrid", "ODPMAP_BLOCK_PLUGINS": None,
                                "ODPMAP_DATA_DIR": None})
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


# -- providers ------------------------------------------------------------------------------


def test_providers() -> None:
    proc = odpmap("providers")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CHANNEL", "SOURCE", "EVENTS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"sendgrid", "vonage"}
    assert rows["sendgrid"].split()[1:3] == ["email", "odpmap-sendgrid"]
    assert "odpmap-sendgrid 0.1.0" in rows["sendgrid"]
    assert "email/delivery, email/open, email/click" in rows["sendgrid"]
    assert "odpmap (built-in)" in rows["vonage"]
    assert "sms/delivery" in rows["vonage"] and "reachability/unreachable (hard_bounce)" in rows["vonage"]
    assert proc.stderr == ""


def test_providers_events() -> None:
    proc = odpmap("providers", "--events", "sendgrid")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"sendgrid (email) - {SENDGRID_MAPPING}"
    assert lines[1].split() == ["RULE", "WHEN", "OUTCOME"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows["processed"].endswith("skip: processed: accepted by SendGrid; ODP generates sent itself")
    assert 'vars.event == "delivered"' in rows["delivered"] and rows["delivered"].endswith("email/delivery")
    assert rows["bounce"].endswith("reachability/unreachable (hard_bounce)")
    assert rows["group-unsubscribe"].endswith("list/unsubscribe")


def test_providers_json(sendgrid_engine: Engine) -> None:
    proc = odpmap("providers", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["sendgrid"] == {
        "name": "sendgrid",
        "channel": "email",
        "source": "odpmap-sendgrid 0.1.0",
        "mapping": str(SENDGRID_MAPPING),
        "parser": "json",
        "verifier": "sendgrid",
        "events": sendgrid_engine.provider("sendgrid").handled_events(),
    }
    assert rows["vonage"]["source"] == "odpmap (built-in)" and rows["vonage"]["verifier"] == "vonage"



def test_providers_events_json(sendgrid_engine: Engine, odpmap_in_process: InProcess) -> None:
    events = json.loads(odpmap_in_process("providers", "--events", "vonage", "--json").stdout)
    assert events == sendgrid_engine.provider("vonage").event_table()
    assert [r["rule"] for r in events] == [r.id for r in sendgrid_engine.provider("vonage").mapping.rules]


def test_providers_unknown() -> None:
    proc = odpmap("providers", "--events", "nope")
    assert proc.returncode == 2
    assert proc.stderr == "odpmap: error: unknown provider 'nope' (known: sendgrid, vonage)\n"
    no_traceback(proc)


# -- map ----------------------------------------------------------------------------------


def test_map_file(sendgrid_engine: Engine) -> None:
    proc = odpmap("map", "-p", "sendgrid", BATCH)
    assert proc.returncode == 0, proc.stderr
    expected = sendgrid_engine.map("sendgrid", BATCH.read_bytes(), content_type="application/json")
    assert expected.ok and expected.events
    assert proc.stdout.splitlines() == [dumps_event(e) for e in expected.events]
    assert proc.stderr == f"odpmap: sendgrid: {expected.counts.summary()}\n"
    assert "received=11 mapped=7" in proc.stderr


def test_map_several_files_sums_up(odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("map", "-p", "sendgrid", DELIVERED, DELIVERED, BATCH)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("odpmap: sendgrid: received=13 mapped=9 skipped=4 dead_lettered=0 events=9")
    assert len(result.stdout.splitlines()) == 9


def test_map_vonage_sample_by_file_name(odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("map", "-p", "vonage", VONAGE_SAMPLE)
    assert result.exit_code == 0, result.stderr
    (event,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (event["type"], event["action"], event["identifiers"]) == ("sms", "delivery", {"phone": "+4527631111"})


def test_map_stdin() -> None:
    proc = odpmap("map", "-p", "sendgrid", "-t", "application/json", "-", input=DELIVERED.read_text())
    assert proc.returncode == 0, proc.stderr
    (event,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert event["action"] == "delivery" and event["data"]["ts"] == 1513299569


@pytest.fixture
def report_with_unmapped(tmp_path: Path) -> Path:
    items = json.loads(DELIVERED.read_text())
    items.append({"email": "b@example.com", "timestamp": 1513299569, "event": "teleported"})
    path = tmp_path / "report.json"
    path.write_text(json.dumps(items))
    return path


def test_map_dead_letters_on_stderr(report_with_unmapped: Path) -> None:
    proc = odpmap("map", "-p", "sendgrid", report_with_unmapped)
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 1  # the good item is still mapped
    dead_line, summary = proc.stderr.splitlines()
    dead = json.loads(dead_line)
    assert (dead["reason"], dead["index"], dead["provider"]) == ("unmapped", 1, "sendgrid")
    assert dead["item"]["event"] == "teleported" and dead["content_type"] == "application/json"
    assert summary == "odpmap: sendgrid: received=2 mapped=1 skipped=0 dead_lettered=1 events=1 unattributed=1"
    no_traceback(proc)


def test_map_dead_letters_appended_to_file(report_with_unmapped: Path, tmp_path: Path) -> None:
    dead_file = tmp_path / "dead.jsonl"
    dead_file.write_text('{"earlier": true}\n')
    proc = odpmap("map", "-p", "sendgrid", "--dead-letters", dead_file, report_with_unmapped, report_with_unmapped)
    assert proc.returncode == 1
    assert proc.stderr == ("odpmap: sendgrid: received=4 mapped=2 skipped=0 dead_lettered=2 events=2 "
                           "unattributed=2\n")
    lines = dead_file.read_text().splitlines()
    assert lines[0] == '{"earlier": true}'
    assert [json.loads(line)["reason"] for line in lines[1:]] == ["unmapped", "unmapped"]


def test_map_unparseable_file(tmp_path: Path, odpmap_in_process: InProcess) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'[{"event": "open"')
    result = odpmap_in_process("map", "-p", "sendgrid", path)
    assert result.exit_code == 1
    dead = json.loads(result.stderr.splitlines()[0])
    assert dead["reason"] == "unparseable" and dead["item"] == '[{"event": "open"'


def test_map_unknown_provider() -> None:
    proc = odpmap("map", "-p", "nope", DELIVERED)
    assert proc.returncode == 2
    assert proc.stderr == "odpmap: error: unknown provider 'nope' (known: sendgrid, vonage)\n"
    assert proc.stdout == ""
    no_traceback(proc)


def test_map_missing_file(odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("map", "-p", "sendgrid", "/nonexistent/report.json")
    assert result.exit_code == 2
    assert result.stderr == "odpmap: error: cannot read /nonexistent/report.json: No such file or directory\n"


def test_bad_mapping_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "acme.yaml"
    bad.write_text("format: 1\nprovider: acme\nchannel: email\nrules:\n  - id: a\n    emit:\n      action: deliver\n")
    proc = odpmap("map", "--mappings", bad, "-p", "acme", DELIVERED)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"odpmap: error: {bad}:7:15: rules[0].emit.action: email/deliver is not in the ODP")
    assert proc.stdout == ""
    no_traceback(proc)


def test_bad_mapping_with_several_problems_lists_them(tmp_path: Path, odpmap_in_process: InProcess) -> None:
    bad = tmp_path / "acme.yaml"
    bad.write_text("format: 1\nprovider: acme\nchannel: email\nverify: nope\nrules:\n  - id: a\n"
                   "    emit:\n      action: deliver\n")
    result = odpmap_in_process("providers", "--mappings", bad)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"odpmap: error: {bad}:4:9: verify: unknown verifier 'nope'")
    assert lines[1].startswith(f"{bad}:8:15: rules[0].emit.action: ")


def test_map_with_mappings_folder(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "acme.yaml").write_text(textwrap.dedent("""\
        format: 1
        provider: acme
        channel: email
        parser: json
        defaults:
          identifiers: {email: "{{ item.to }}"}
          data: {ts: "{{ received_at }}", target_address: "{{ item.to }}"}
        rules:
          - id: all
            emit: {action: delivery}
        """))
    (tmp_path / "r.json").write_text('[{"to": "a@x.io"}]')
    proc = odpmap("map", "--mappings", tmp_path / "maps", "-p", "acme", "--received-at", "1700000000.5",
                  tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"type": "email", "action": "delivery", "identifiers": {"email": "a@x.io"},
                                       "data": {"ts": 1700000000, "target_address": "a@x.io"}}


def test_map_to_jsonl_sink(tmp_path: Path, sendgrid_engine: Engine) -> None:
    out = tmp_path / "out" / "events.jsonl"
    proc = odpmap("map", "-p", "sendgrid", "--sink", "jsonl", "--sink-option", f"path={out}", BATCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    expected = sendgrid_engine.map("sendgrid", BATCH.read_bytes(), content_type="application/json").events
    assert out.read_text().splitlines() == [dumps_event(e) for e in expected]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sink", "nope"], "odpmap: error: unknown sink 'nope' (known: "),
        (["--sink", "jsonl", "--sink-option", "path"], "odpmap: error: --sink-option takes KEY=VALUE, not 'path'"),
        (["--sink", "jsonl"], "odpmap: error: sink 'jsonl': "),
    ],
    ids=["unknown-sink", "option-without-value", "missing-option"],
)
def test_map_sink_errors(args: list[str], message: str, odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("map", "-p", "sendgrid", *args, DELIVERED)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stdout == ""


# -- lint -----------------------------------------------------------------------------------


def test_lint_good_files() -> None:
    proc = odpmap("lint", VONAGE_MAPPING, SENDGRID_MAPPING)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "odpmap: 2 file(s) OK\n")


def test_lint_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        format: 1
        provider: acme
        channel: email
        verify: nope
        rules:
          - id: a
            when: item.x
            emit:
              action: deliver
          - id: b
            when: item.y
            emit:
              type: list
              action: unsubscribe
        """))
    (tmp_path / "good.yaml").write_text(VONAGE_MAPPING.read_text().replace("provider: vonage", "provider: vonage2"))
    (tmp_path / "notes.txt").write_text("not a mapping")
    not_yaml = tmp_path / "syntax.yaml"
    not_yaml.write_text("format: 1\nprovider: acme\n  channel: email\n")
    filtered = tmp_path / "filter.yaml"
    filtered.write_text("format: 1\nprovider: f\nchannel: email\nrules:\n  - id: a\n    when: item.x | nosuch\n"
                        "    skip: x\n")
    proc = odpmap("lint", tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{bad}:4:9", f"{bad}:9:15", f"{bad}:13:7", f"{filtered}:6:11", f"{not_yaml}:3:10",
    ]
    assert lines[0].startswith(f"{bad}:4:9: verify: unknown verifier 'nope' (known: ")
    assert lines[1].startswith(f"{bad}:9:15: rules[0].emit.action: email/deliver is not in the ODP catalogue")
    assert lines[2] == f"{bad}:13:7: rules[1].emit: list/unsubscribe requires data.list_id"
    assert lines[3] == f"{filtered}:6:11: rules[0].when: template syntax error: no filter named 'nosuch'"
    assert lines[4] == f"{not_yaml}:3:10: YAML syntax error: mapping values are not allowed here"
    assert proc.stderr == "odpmap: 5 problem(s) in 4 file(s)\n"
    no_traceback(proc)


# -- demo, plugins ------------------------------------------------------------------------


def test_demo(sendgrid_engine: Engine) -> None:
    proc = odpmap("demo")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    table = [line.split() for line in proc.stderr.splitlines() if line and not line.startswith("/")]
    header = ["PROVIDER", "SAMPLES", "RECEIVED", "MAPPED", "SKIPPED", "DEAD", "EVENTS"]
    start = table.index(header)
    rows = {row[0]: [int(n) for n in row[1:]] for row in table[start + 1:] if row[0] in ("sendgrid", "vonage", "total")}
    assert set(rows) == {"sendgrid", "vonage", "total"}
    assert rows["total"] == [a + b for a, b in zip(rows["sendgrid"], rows["vonage"])]
    samples, received, mapped, skipped, dead, n_events = rows["total"]
    assert received == mapped + skipped + dead and n_events == len(events) > 0
    assert samples == len(sendgrid_engine.samples("sendgrid")) + len(sendgrid_engine.samples("vonage"))
    assert "every item accounted for: received = mapped + skipped + dead-lettered" in proc.stderr


def test_demo_one_provider(odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("demo", "-p", "vonage")
    assert result.exit_code == 0
    assert "sendgrid" not in result.stderr and "total" in result.stderr
    assert {json.loads(line)["identifiers"].get("phone", "")[:1] for line in result.stdout.splitlines()} == {"+"}
    unknown = odpmap_in_process("demo", "-p", "nope")
    assert unknown.exit_code == 2 and "unknown provider 'nope'" in unknown.stderr


def test_demo_uses_no_deprecated_api(odpmap_in_process: InProcess) -> None:
    # regression: demo used click.get_text_stream, deprecated since Click 8.2; pytest turns
    # warnings into errors here (filterwarnings = error)
    assert odpmap_in_process("demo", "-p", "vonage").exit_code == 0


def test_plugins() -> None:
    proc = odpmap("plugins")
    assert proc.returncode == 0
    assert [line.split() for line in proc.stdout.splitlines()] == [
        ["NAME", "SOURCE", "HOOKS"],
        ["sendgrid", "odpmap-sendgrid", "0.1.0", "odpmap_register_providers"],
    ]


def test_plugins_all(odpmap_in_process: InProcess) -> None:
    proc = odpmap_in_process("plugins", "--all")
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(rows) == {"sendgrid", "odpmap.builtins.filters", "odpmap.builtins.library", "odpmap.builtins.parsers",
                         "odpmap.builtins.pull", "odpmap.builtins.sinks", "odpmap.builtins.verifiers"}
    assert "odpmap (built-in)" in rows["odpmap.builtins.parsers"]
    assert rows["odpmap.builtins.parsers"].endswith("odpmap_register_parsers")


def test_plugins_none() -> None:
    proc = odpmap("plugins", env={"ODPMAP_LOAD_PLUGINS": ""})
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == "no plugins (built-ins hidden; --all shows them)\n"


def test_version_and_help(odpmap_in_process: InProcess) -> None:
    result = odpmap_in_process("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout
    helped = odpmap_in_process("--help")
    for command in ("demo", "lint", "map", "plugins", "providers"):
        assert f"  {command} " in helped.stdout


# -- entry-point integration: a real distribution, installed with pip ------------------------

ACME_PYPROJECT = """\
    [build-system]
    requires = ["setuptools>=77"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "odpmap-acme"
    version = "0.3.0"

    [project.entry-points."odpmap.plugins"]
    acme = "odpmap_acme"

    [tool.setuptools]
    packages = ["odpmap_acme"]

    [tool.setuptools.package-data]
    odpmap_acme = ["*.yaml"]
    """

ACME_MODULE = '''\
    """odpmap provider for the ACME SMS gateway."""

    from importlib.resources import files

    import click
    from odpmap import Provider, hookimpl


    @hookimpl
    def odpmap_register_providers(register):
        register(Provider(mapping=files(__name__) / "acme.yaml"))


    @hookimpl
    def odpmap_register_commands(cli):
        @cli.command("acme-hello")
        def hello():
            """Say hello from odpmap-acme."""
            click.echo("hello from acme")
    '''

ACME_MAPPING = """\
    format: 1
    provider: acme
    channel: sms
    parser: json
    defaults:
      identifiers: {phone: "{{ item.to | e164 }}"}
      data: {ts: "{{ item.at | epoch }}", target_address: "{{ item.to | e164 }}"}
    rules:
      - id: delivered
        when: item.status == "DELIVRD"
        emit: {action: delivery}
    """


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """odpmap-acme, built and installed with pip into its own folder (use it with PYTHONPATH)."""
    base = tmp_path_factory.mktemp("acme")
    dist = base / "odpmap-acme"
    (dist / "odpmap_acme").mkdir(parents=True)
    (dist / "pyproject.toml").write_text(textwrap.dedent(ACME_PYPROJECT))
    (dist / "odpmap_acme" / "__init__.py").write_text(textwrap.dedent(ACME_MODULE))
    (dist / "odpmap_acme" / "acme.yaml").write_text(textwrap.dedent(ACME_MAPPING))
    site = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), str(dist)],
        check=True, capture_output=True, timeout=120,
    )
    assert (site / "odpmap_acme" / "acme.yaml").is_file()
    return site


def test_installed_plugin_is_found_through_its_entry_point(acme_site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(acme_site), "ODPMAP_LOAD_PLUGINS": "acme,sendgrid"}
    proc = odpmap("providers", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(rows) == {"acme", "sendgrid", "vonage"}
    assert rows["acme"].split()[:4] == ["acme", "sms", "odpmap-acme", "0.3.0"]
    assert rows["acme"].endswith("sms/delivery")

    plugins = odpmap("plugins", env=env)
    assert "acme      odpmap-acme 0.3.0      odpmap_register_commands, odpmap_register_providers" in plugins.stdout

    # its command is added to the CLI by main()
    assert odpmap("acme-hello", env=env).stdout == "hello from acme\n"

    # and its mapping, package data read through importlib.resources, maps
    report = tmp_path / "dlr.json"
    report.write_text('[{"to": "0045 2763 1111", "at": "2024-01-02T03:04:05Z", "status": "DELIVRD"}]')
    mapped = odpmap("map", "-p", "acme", report, env=env)
    assert mapped.returncode == 0, mapped.stderr
    assert json.loads(mapped.stdout)["identifiers"] == {"phone": "+4527631111"}


def test_installed_plugin_not_loaded_when_disabled(acme_site: Path) -> None:
    env = {"PYTHONPATH": str(acme_site), "ODPMAP_LOAD_PLUGINS": ""}
    proc = odpmap("providers", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "acme" not in proc.stdout and "odpmap-acme" not in proc.stdout
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["vonage"]
    hello = odpmap("acme-hello", env=env)
    assert hello.returncode == 2 and "No such command 'acme-hello'" in hello.stderr
