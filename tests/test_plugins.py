"""Plugin loading (odpmap.plugins) and every hook, through real engines.

Entry-point plugins are real: ``odpmap-sendgrid`` is installed in the test environment,
and ``fake_dist`` writes more distributions (``*.dist-info`` with ``entry_points.txt``)
into a folder put on ``sys.path``.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from odpmap import ConfigError, Engine, MappingError, PluginLoadError, Provider, SendReport, hookimpl
from odpmap.cli import cli
from odpmap.errors import MappingSyntaxError
from odpmap.plugins import BUILTIN_SOURCE, DEFAULT_PLUGINS, ENTRY_POINT_GROUP, make_plugin_manager

TS = 1_700_000_000

SIMPLE = """\
    format: 1
    provider: {name}
    channel: {channel}
    {extra}
    defaults:
      identifiers: {{email: "{{{{ item.email }}}}"}}
      data: {{ts: {ts}, target_address: "{{{{ item.email }}}}"}}
    rules:
      - id: all
        emit: {{action: delivery}}
    """


def simple(name: str = "acme", channel: str = "email", extra: str = "") -> str:
    return textwrap.dedent(SIMPLE).format(name=name, channel=channel, extra=extra, ts=TS)


def no_env() -> dict[str, str]:
    """An environment without ODPMAP_* variables (tests must not depend on the caller's)."""
    return {}


# -- fake distributions on sys.path -------------------------------------------------------


FakeDist = Callable[..., Path]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """``fake_dist(name, version, entry_points={ep: module}, modules={module: source})``."""
    site = tmp_path / "site"
    site.mkdir()
    modules: list[str] = []
    monkeypatch.syspath_prepend(str(site))

    def make(name: str, version: str, *, entry_points: Mapping[str, str], modules_src: Mapping[str, str]) -> Path:
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{ep} = {mod}\n" for ep, mod in entry_points.items())
        )
        for mod, source in modules_src.items():
            (site / f"{mod}.py").write_text(textwrap.dedent(source))
            modules.append(mod)
        importlib.invalidate_caches()
        return site

    yield make
    for mod in modules:
        sys.modules.pop(mod, None)
    importlib.invalidate_caches()


BROKEN = {"broken_mod_xyz": "raise ImportError('no module named acme_sdk')\n"}


def test_broken_plugin_names_plugin_and_distribution(fake_dist: FakeDist) -> None:
    fake_dist("fakeplug", "0.1", entry_points={"broken": "broken_mod_xyz"}, modules_src=BROKEN)
    with pytest.raises(PluginLoadError) as info:
        Engine(load_plugins=["broken", "sendgrid"], environ=no_env())
    err = info.value
    assert (err.plugin, err.dist) == ("broken", "fakeplug 0.1")
    assert str(err) == (
        "plugin 'broken' (distribution fakeplug 0.1): failed to import 'broken_mod_xyz': "
        "ImportError: no module named acme_sdk"
    )
    assert isinstance(err, ConfigError) and isinstance(err.__cause__, ImportError)


def test_broken_plugin_can_be_left_out(fake_dist: FakeDist) -> None:
    fake_dist("fakeplug", "0.1", entry_points={"broken": "broken_mod_xyz"}, modules_src=BROKEN)
    assert "sendgrid" in Engine(load_plugins=["sendgrid"], environ=no_env()).providers
    assert make_plugin_manager(load_plugins=["broken", "sendgrid"], block_plugins=["broken"],
                               environ=no_env()).get_plugin("sendgrid") is not None
    env = {"ODPMAP_BLOCK_PLUGINS": "broken", "ODPMAP_LOAD_PLUGINS": "broken,sendgrid"}
    assert make_plugin_manager(environ=env).get_plugin("sendgrid") is not None
    assert make_plugin_manager(autoload=False).get_plugin("broken") is None


def test_entry_point_plugin_source_is_its_distribution(fake_dist: FakeDist, tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(simple())
    fake_dist("odpmap-acme", "2.3", entry_points={"acme": "good_mod_xyz"}, modules_src={"good_mod_xyz": f"""\
        from odpmap import hookimpl

        @hookimpl
        def odpmap_register_providers(register):
            register({str(tmp_path / "acme.yaml")!r})
        """})
    engine = Engine(load_plugins=["acme"], environ=no_env())
    assert engine.provider("acme").source == "odpmap-acme 2.3"
    assert engine.pm.source_of("acme") == "odpmap-acme 2.3"
    assert "acme" not in Engine(environ={"ODPMAP_LOAD_PLUGINS": "sendgrid"}).providers


def test_entry_point_plugin_with_unknown_hook_names_distribution(fake_dist: FakeDist) -> None:
    fake_dist("fakeplug", "0.1", entry_points={"nohook": "nohook_mod_xyz"}, modules_src={"nohook_mod_xyz": """\
        from odpmap import hookimpl

        @hookimpl
        def odpmap_not_a_hook():
            pass
        """})
    with pytest.raises(PluginLoadError) as info:
        Engine(load_plugins=["nohook"], environ=no_env())
    assert (info.value.plugin, info.value.dist) == ("nohook", "fakeplug 0.1")


# -- plugin managers ----------------------------------------------------------------------


def test_a_new_plugin_manager_per_call() -> None:
    one = make_plugin_manager(autoload=False, environ=no_env())
    two = make_plugin_manager(autoload=False, environ=no_env())
    assert one is not two

    class Extra:
        @hookimpl
        def odpmap_register_sinks(self, register: Any) -> None:
            pass

    one.register(Extra(), name="extra")
    assert one.get_plugin("extra") is not None and two.get_plugin("extra") is None


def test_builtins_are_plugins() -> None:
    pm = make_plugin_manager(autoload=False, environ=no_env())
    assert sorted(name for name, _ in pm.list_name_plugin()) == sorted(DEFAULT_PLUGINS)
    assert {pm.source_of(name) for name in DEFAULT_PLUGINS} == {BUILTIN_SOURCE}


def test_explicit_plugins_are_registered(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(simple())

    class Acme:
        @hookimpl
        def odpmap_register_providers(self, register: Any) -> None:
            register(tmp_path / "acme.yaml")

    engine = Engine(autoload=False, plugins=[Acme()])
    assert engine.pm.get_plugin("Acme-0") is not None
    assert engine.provider("acme").source == "plugin Acme-0"


@pytest.mark.parametrize(
    ("kwargs", "loaded"),
    [
        ({}, True),
        ({"load_plugins": []}, False),
        ({"load_plugins": ["sendgrid"]}, True),
        ({"load_plugins": ["other"]}, False),
        ({"environ": {"ODPMAP_LOAD_PLUGINS": ""}}, False),
        ({"environ": {"ODPMAP_LOAD_PLUGINS": " other , sendgrid "}}, True),
        ({"environ": {"ODPMAP_LOAD_PLUGINS": "sendgridx"}}, False),
        ({"environ": {"ODPMAP_LOAD_PLUGINS": ""}, "load_plugins": ["sendgrid"]}, True),
        ({"block_plugins": ["sendgrid"], "load_plugins": ["sendgrid"]}, False),
        ({"environ": {"ODPMAP_BLOCK_PLUGINS": "other,sendgrid", "ODPMAP_LOAD_PLUGINS": "sendgrid"}}, False),
        ({"environ": {"ODPMAP_BLOCK_PLUGINS": "sendgrid"}, "load_plugins": ["sendgrid"]}, False),
        ({"autoload": False}, False),
    ],
    ids=["default-all", "allow-none", "allow-sendgrid", "allow-other", "env-empty", "env-list",
         "not-a-prefix", "argument-beats-env", "block", "env-block", "block-beats-allow", "no-autoload"],
)
def test_which_entry_point_plugins_load(kwargs: dict[str, Any], loaded: bool) -> None:
    kwargs.setdefault("environ", no_env())
    pm = make_plugin_manager(**kwargs)
    assert (pm.get_plugin("sendgrid") is not None) is loaded
    assert all(pm.get_plugin(name) is not None for name in DEFAULT_PLUGINS)  # built-ins always load


@pytest.mark.parametrize(
    ("kwargs", "loaded"),
    [
        ({"load_plugins": []}, False),
        ({"load_plugins": ["sendgrid"]}, True),
        ({"environ": {"ODPMAP_LOAD_PLUGINS": ""}}, False),
    ],
    ids=["allow-none", "allow-sendgrid", "env-empty"],
)
def test_engine_passes_plugin_selection_on(kwargs: dict[str, Any], loaded: bool) -> None:
    kwargs.setdefault("environ", no_env())
    engine = Engine(**kwargs)
    assert ("sendgrid" in engine.providers) is loaded
    assert "vonage" in engine.providers


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODPMAP_BLOCK_PLUGINS", raising=False)
    monkeypatch.setenv("ODPMAP_LOAD_PLUGINS", "")
    assert "sendgrid" not in Engine().providers
    monkeypatch.setenv("ODPMAP_LOAD_PLUGINS", "sendgrid")
    assert make_plugin_manager().get_plugin("sendgrid") is not None
    monkeypatch.setenv("ODPMAP_BLOCK_PLUGINS", "sendgrid")
    assert make_plugin_manager().get_plugin("sendgrid") is None


def test_trace_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    Engine(autoload=False, environ={"ODPMAP_TRACE_PLUGINS": "1"}).pm.hook.odpmap_register_sinks(register=lambda *a, **kw: None)
    assert "odpmap: hook odpmap_register_sinks -> ['odpmap.builtins.sinks']" in capsys.readouterr().err


def test_hookimpl_without_spec_is_an_error() -> None:
    class NotAHook:
        @hookimpl
        def odpmap_not_a_hook(self) -> None:
            pass

    with pytest.raises(PluginLoadError, match="unknown hook 'odpmap_not_a_hook'"):
        Engine(autoload=False, plugins=[NotAHook()])


def test_hookimpl_with_unknown_argument_is_an_error() -> None:
    class BadArgs:
        @hookimpl
        def odpmap_register_sinks(self, register: Any, colour: Any) -> None:
            pass

    with pytest.raises(PluginLoadError) as info:
        Engine(autoload=False, plugins=[BadArgs()])
    assert info.value.plugin == "BadArgs-0" and "colour" in str(info.value)


def test_same_plugin_twice_is_an_error() -> None:
    module = sys.modules[__name__]
    with pytest.raises(PluginLoadError, match="already registered"):
        make_plugin_manager(autoload=False, plugins=[module, module], environ=no_env())


class Registers:
    """A plugin that registers whatever it is given through one hook."""

    def __init__(self, **hooks: Callable[[Any], None]) -> None:
        for name, fn in hooks.items():
            setattr(self, name, hookimpl(fn))


def test_duplicate_provider_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "vonage.yaml").write_text(simple("vonage", "sms"))
    dup = Registers(odpmap_register_providers=lambda register: register(Provider(mapping=tmp_path / "vonage.yaml")))
    with pytest.raises(ConfigError) as info:
        Engine(autoload=False, plugins=[dup])
    message = str(info.value)
    assert message.startswith("provider 'vonage' is defined twice: ")
    assert str(tmp_path / "vonage.yaml") in message
    assert str(Path(importlib.import_module("odpmap.mappings").__file__).parent / "vonage.yaml") in message
    # not even a lenient engine accepts it
    with pytest.raises(ConfigError, match="defined twice"):
        Engine(autoload=False, plugins=[dup], strict=False)


def test_duplicate_provider_names_both_sources(tmp_path: Path) -> None:
    (tmp_path / "vonage.yaml").write_text(simple("vonage", "sms"))
    dup = Registers(odpmap_register_providers=lambda register: register(Provider(mapping=tmp_path / "vonage.yaml")))
    with pytest.raises(ConfigError) as info:
        Engine(autoload=False, plugins=[dup])
    assert "plugin Registers-0" in str(info.value) and BUILTIN_SOURCE in str(info.value)


def test_duplicate_parser_names_both_sources() -> None:
    dup = Registers(odpmap_register_parsers=lambda register: register("json", lambda body, **kw: body))
    with pytest.raises(ConfigError, match=r"^parser 'json' is registered twice: by odpmap \(built-in\) and by "
                                          r"plugin Registers-0$"):
        Engine(autoload=False, plugins=[dup])


def test_registered_name_must_match_mapping(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(simple())
    plugin = Registers(odpmap_register_providers=lambda register: register(
        Provider(mapping=tmp_path / "acme.yaml", name="other")))
    with pytest.raises(MappingSyntaxError, match="registers provider 'other' but its mapping says provider: 'acme'"):
        Engine(autoload=False, plugins=[plugin])


def test_register_takes_providers_only() -> None:
    plugin = Registers(odpmap_register_providers=lambda register: register(42))
    with pytest.raises(ConfigError, match=r"^plugin Registers-0: register\(\) takes a Provider or a mapping path, "
                                          r"not 42$"):
        Engine(autoload=False, plugins=[plugin])


def test_unreadable_mapping(tmp_path: Path) -> None:
    plugin = Registers(odpmap_register_providers=lambda register: register(tmp_path / "missing.yaml"))
    with pytest.raises(MappingError, match="cannot read mapping: No such file or directory"):
        Engine(autoload=False, plugins=[plugin])


def test_provider_sources(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "fromfile.yaml").write_text(simple("fromfile"))
    (tmp_path / "acme.yaml").write_text(simple())
    plugin = Registers(odpmap_register_providers=lambda register: register(tmp_path / "acme.yaml"))
    engine = Engine(plugins=[plugin], mapping_paths=[tmp_path / "files"], load_plugins=["sendgrid"], environ=no_env())
    assert {name: info.source for name, info in engine.providers.items()} == {
        "acme": "plugin Registers-0",
        "fromfile": f"mapping file {tmp_path / 'files' / 'fromfile.yaml'}",
        "sendgrid": "odpmap-sendgrid 0.1.0",
        "vonage": BUILTIN_SOURCE,
    }


# -- one test per hook (tests/test_hookspecs.py checks they exist) -------------------------


def test_hook_odpmap_register_providers(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "one.json").write_text('{"email": "a@x.io"}')
    (samples / "ignored.bin").write_text("?")
    (tmp_path / "acme.yaml").write_text(simple())
    (tmp_path / "beta.yaml").write_text(simple("beta"))
    calls: list[bytes] = []

    def parse(body: bytes, **kw: Any) -> Any:
        calls.append(body)
        return [{"email": body.decode()}]

    plugin = Registers(odpmap_register_providers=lambda register: (
        register(Provider(mapping=tmp_path / "acme.yaml", parser=parse, samples=samples, name="acme")),
        register(str(tmp_path / "beta.yaml")),
    ))
    engine = Engine(autoload=False, plugins=[plugin])
    info = engine.provider("acme")
    assert (info.channel, info.parser_name, info.mapping_file) == ("email", "parse", str(tmp_path / "acme.yaml"))
    assert engine.map("acme", b"b@x.io").events[0]["identifiers"] == {"email": "b@x.io"}
    assert calls == [b"b@x.io"]
    assert [(s.name, s.content_type) for s in engine.samples("acme")] == [("one.json", "application/json")]
    assert engine.provider("beta").parser_name == "auto"


def test_hook_odpmap_register_parsers(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def mine(body: bytes, *, content_type: str | None, headers: Mapping[str, str], options: Mapping[str, Any]) -> Any:
        seen.append({"content_type": content_type, "headers": dict(headers), "options": dict(options)})
        if not body:
            raise ValueError("empty report")
        return [{"email": e} for e in body.decode().split(options["sep"])]

    plugin = Registers(odpmap_register_parsers=lambda register: register("mine", mine))
    (tmp_path / "acme.yaml").write_text(simple(extra='parser: {name: mine, options: {sep: ";"}}'))
    engine = Engine(autoload=False, plugins=[plugin], mapping_paths=[tmp_path])
    assert engine.provider("acme").parser_name == "mine"
    result = engine.map("acme", b"a@x.io;b@x.io", content_type="text/plain", headers={"X-Id": "7"})
    assert [e["identifiers"]["email"] for e in result.events] == ["a@x.io", "b@x.io"]
    assert seen == [{"content_type": "text/plain", "headers": {"x-id": "7"}, "options": {"sep": ";"}}]
    (dl,) = engine.map("acme", b"").dead_letters
    assert (dl.reason, dl.message) == ("unparseable", "mine parser: empty report")
    assert engine.parsers.entry("mine").source == "plugin Registers-0"


def test_hook_odpmap_register_verifiers(tmp_path: Path) -> None:
    def mine(body: bytes, headers: Mapping[str, str], *, secret: str, url: str | None, now: float | None) -> bool:
        return headers.get("x-mine") == f"{secret}:{body.decode()}:{url}:{now}"

    plugin = Registers(odpmap_register_verifiers=lambda register: register("mine", mine))
    (tmp_path / "acme.yaml").write_text(simple(extra="verify: mine"))
    engine = Engine(autoload=False, plugins=[plugin], mapping_paths=[tmp_path])
    assert engine.provider("acme").verifier_name == "mine"
    assert engine.verify("acme", b"b", {"X-Mine": "s:b:https://h/:5"}, secret="s", url="https://h/", now=5) is True
    assert engine.verify("acme", b"b", {"X-Mine": "wrong"}, secret="s") is False
    # without the plugin, the mapping does not load
    with pytest.raises(MappingSyntaxError, match="unknown verifier 'mine'"):
        Engine(autoload=False, mapping_paths=[tmp_path])


class MemorySink:
    name = "memory"

    def __init__(self, *, capacity: str = "2") -> None:
        self.capacity = int(capacity)
        self.events: list[dict[str, Any]] = []
        self.closed = False

    def send(self, events: Any) -> SendReport:
        self.events.extend(events)
        return SendReport(sent=len(events))

    def close(self) -> None:
        self.closed = True


def test_hook_odpmap_register_sinks() -> None:
    plugin = Registers(odpmap_register_sinks=lambda register: register("memory", MemorySink, description="RAM"))
    engine = Engine(autoload=False, plugins=[plugin])
    assert engine.sinks.names() == ["jsonl", "memory", "odp", "stdout"]
    assert engine.sinks.entry("memory").description == "RAM"
    sink = engine.sink("memory", capacity="3")
    assert isinstance(sink, MemorySink) and sink.capacity == 3
    events = [{"n": n} for n in range(5)]
    assert engine.dispatch(events, sink, batch_size=2).sent == 5 and sink.events == events
    assert "memory" not in Engine(autoload=False).sinks


def test_hook_odpmap_prepare_jinja_environment(tmp_path: Path) -> None:
    def prepare(env: Any) -> None:
        env.filters["domain"] = lambda email: email.rsplit("@", 1)[1]
        env.tests["internal"] = lambda email: email.endswith("@corp.test")
        env.globals["brand"] = "ACME"

    plugin = Registers(odpmap_prepare_jinja_environment=prepare)
    (tmp_path / "acme.yaml").write_text(textwrap.dedent("""\
        format: 1
        provider: acme
        channel: email
        defaults:
          identifiers: {email: "{{ item.email }}"}
          data: {ts: 1700000000, target_address: "{{ item.email }}"}
        rules:
          - id: internal
            when: item.email is internal
            skip: staff
          - id: all
            emit:
              action: delivery
              data: {value: "{{ brand }}@{{ item.email | domain }}"}
        """))
    engine = Engine(autoload=False, plugins=[plugin], mapping_paths=[tmp_path])
    result = engine.map("acme", [{"email": "a@x.io"}, {"email": "b@corp.test"}])
    assert [e["data"]["value"] for e in result.events] == ["ACME@x.io"]
    assert [s.reason for s in result.skipped] == ["staff"]
    assert {"domain", "epoch", "lookup"} <= set(engine.env.filters)  # added to, not replacing, the built-ins


def extend_catalogue(catalogue: Any) -> None:
    catalogue.add_channel_types("rcs")
    catalogue.add_event("survey", ["answer"], category="engagement", required=["answer_id"])
    catalogue.add_identifier("rcs_address", {"messaging": True})


RCS = """\
    format: 1
    provider: acme
    channel: rcs
    defaults:
      identifiers: {email: "{{ item.email }}"}
      data: {ts: 1700000000, target_address: "{{ item.email }}"}
    rules:
      - id: all
        emit:
          - action: delivery
          - {type: survey, action: answer, data: {answer_id: "{{ item.answer }}"}}
    """


def test_hook_odpmap_extend_catalogue(tmp_path: Path) -> None:
    plugin = Registers(odpmap_extend_catalogue=extend_catalogue)
    (tmp_path / "acme.yaml").write_text(textwrap.dedent(RCS))
    engine = Engine(autoload=False, plugins=[plugin], mapping_paths=[tmp_path])
    assert "rcs" in engine.catalogue.channel_types and engine.provider("acme").channel == "rcs"
    result = engine.map("acme", [{"email": "a@x.io", "answer": "q1"}, {"email": "a@x.io", "answer": ""}])
    assert [(e["type"], e["action"]) for e in result.events] == [("rcs", "delivery"), ("survey", "answer")]
    assert result.counts.unattributed == 1  # rcs/delivery is attributable like any channel's
    assert "survey/answer requires data.answer_id" in result.dead_letters[0].message
    assert engine.schema.errors({"type": "rcs", "action": "open", "identifiers": {"rcs_address": "x"},
                                 "data": {"ts": TS, "target_address": "x"}}) == []
    # another engine does not see the extension
    with pytest.raises(MappingSyntaxError, match="unknown channel type 'rcs'"):
        Engine(autoload=False, mapping_paths=[tmp_path])


def test_event_added_for_one_channel_type() -> None:
    def extend(catalogue: Any) -> None:
        catalogue.add_channel_types("rcs")
        catalogue.add_event("rcs", ["read"], category="engagement")

    engine = Engine(autoload=False, plugins=[Registers(odpmap_extend_catalogue=extend)])
    assert engine.catalogue.lookup("rcs", "read") is not None
    assert engine.catalogue.lookup("email", "read") is None


def test_hook_odpmap_register_commands() -> None:
    @click.command()
    @click.argument("who", default="world")
    def hello(who: str) -> None:
        """Say hello (from a plugin)."""
        click.echo(f"hello {who}")

    plugin = Registers(odpmap_register_commands=lambda cli: cli.add_command(hello))
    pm = make_plugin_manager(plugins=[plugin], autoload=False, environ=no_env())
    group = click.Group("odpmap", commands=dict(cli.commands), help=cli.help)
    pm.hook.odpmap_register_commands(cli=group)

    runner = CliRunner()
    help_text = runner.invoke(group, ["--help"]).output
    assert "hello" in help_text and "Say hello (from a plugin)." in help_text and "providers" in help_text
    result = runner.invoke(group, ["hello", "plugins"])
    assert (result.exit_code, result.output) == (0, "hello plugins\n")
    assert "hello" not in cli.commands  # the real CLI group is untouched


class MemoryStore:
    def __init__(self, data_dir: Path, **options: Any) -> None:
        self.data_dir = data_dir
        self.options = options
        self.kept: dict[tuple[str, str], dict[str, Any]] = {}

    def remember(self, provider: str, message_id: str, tracking: dict[str, Any]) -> None:
        self.kept[(provider, message_id)] = tracking

    def recall(self, provider: str, message_id: str) -> dict[str, Any] | None:
        return self.kept.get((provider, message_id))


def test_hook_odpmap_register_tracking_stores(tmp_path: Path) -> None:
    stores: list[MemoryStore] = []

    def factory(data_dir: Path, **options: Any) -> MemoryStore:
        stores.append(MemoryStore(data_dir, **options))
        return stores[-1]

    plugin = Registers(odpmap_register_tracking_stores=lambda register: register("memory", factory))
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "acme.yaml").write_text(simple(extra='message_id: "{{ item.id }}"'))
    engine = Engine(autoload=False, plugins=[plugin], mapping_paths=[tmp_path / "maps"], environ={},
                    data_dir=tmp_path / "data", tracking_store="memory")
    assert engine.tracking_stores.names() == ["memory", "sqlite"]
    assert stores == []  # created when first needed
    engine.remember("acme", "m1", {"odp_campaign_id": "42", "touchpoint_id": 7})
    (store,) = stores
    assert store.data_dir == tmp_path / "data" and store.kept == {
        ("acme", "m1"): {"odp_campaign_id": "42", "touchpoint_id": 7}
    }
    result = engine.map("acme", [{"email": "a@x.io", "id": "m1"}, {"email": "b@x.io", "id": "m2"}])
    assert [{k: e["data"].get(k) for k in ("campaign_id", "touchpoint_id")} for e in result.events] == [
        {"campaign_id": 42, "touchpoint_id": 7}, {"campaign_id": None, "touchpoint_id": None},
    ]
    assert result.counts.unattributed == 1
    with pytest.raises(ConfigError, match="not campaign tracking fields: colour"):
        engine.remember("acme", "m1", {"colour": "red"})
    with pytest.raises(ConfigError, match="needs a data directory"):
        Engine(autoload=False, mapping_paths=[tmp_path / "maps"], environ={}).remember("acme", "m1", {"campaign": "c"})
