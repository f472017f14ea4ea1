"""odpmap.config: the configuration file, its defaults and its errors (file:line:col)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from odpmap import Engine
from odpmap.config import Config, ConfigFileError, check_providers, load_config

SENDGRID_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
    "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_plugins=["sendgrid"])


def write(tmp_path: Path, text: str, name: str = "odpmap.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None, {})
    assert config.data_dir == Path(".odpmap")
    assert config.sink.name == "stdout"
    assert config.providers == {}
    assert config.server.max_body_bytes == 5 * 1024 * 1024
    assert config.dispatch.in_process is True
    assert config.source is None


def test_defaults_take_the_data_dir_from_the_environment() -> None:
    assert load_config(None, {"ODPMAP_DATA_DIR": "/srv/odpmap"}).data_dir == Path("/srv/odpmap")


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert config.data_dir == tmp_path / ".odpmap"  # beside the file
    assert config.sink.name == "stdout"


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
        data_dir: data
        mappings: [mappings, /abs/acme.yaml]
        plugins: {autoload: false, load: [sendgrid], block: [ses]}
        server: {host: 0.0.0.0, port: 9000, max_body_bytes: 1000, trust_proxy_headers: true,
                 log_level: warning, access_log: false}
        store: {synchronous: NORMAL}
        sink: {name: odp, options: {max_bytes: 500000}}
        odp: {api_key_env: MY_ODP_KEY, base_url: "https://api.eu1.odp.optimizely.com/v3",
              batch_size: 200, timeout: 5, max_retries: 2}
        providers:
          sendgrid: {secret_env: SG_KEY, content_types: [Application/JSON]}
          vonage: {methods: [GET]}
        dispatch: {in_process: false, batch_size: 50, idle_sleep: 0.5, error_sleep: 10}
        worker: {batch_size: 10, idle_sleep: 0.1, max_attempts: 5}
    """)
    config = load_config(path, {"SG_KEY": "secret", "MY_ODP_KEY": "key"})
    assert config.data_dir == tmp_path / "data"
    assert config.mappings == (tmp_path / "mappings", Path("/abs/acme.yaml"))
    assert (config.plugins.autoload, config.plugins.load, config.plugins.block) == (False, ("sendgrid",), ("ses",))
    assert config.server.port == 9000 and config.server.trust_proxy_headers
    assert config.synchronous == "NORMAL"
    assert config.sink.options == {"max_bytes": 500000}
    assert config.odp.base_url == "https://api.eu1.odp.optimizely.com/v3"
    assert config.odp_api_key() == "key"
    sendgrid = config.provider("sendgrid")
    assert sendgrid.secret == "secret" and sendgrid.verifies
    assert sendgrid.content_types == ("application/json",)
    assert config.provider("vonage").methods == ("GET",)
    assert config.provider("vonage").secret is None
    assert config.provider("postmark").secret is None  # not named: defaults
    assert config.dispatch == type(config.dispatch)(False, 50, 0.5, 10)
    assert config.worker.max_attempts == 5


def test_secret_value_is_not_in_the_repr(tmp_path: Path) -> None:
    path = write(tmp_path, "providers: {sendgrid: {secret_env: SG_KEY}}\n")
    config = load_config(path, {"SG_KEY": "hunter2"})
    assert "hunter2" not in repr(config)


def test_every_schema_error_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
        server:
          port: eighty
          colour: blue
        odp:
          api_key_env: "not a variable"
        sink: {name: ""}
    """)
    with pytest.raises(ConfigFileError) as info:
        load_config(path, {})
    messages = [str(e) for e in info.value.all_errors]
    assert messages == [
        f"{path}:2:9: server.port: must be of integer type",
        f"{path}:3:3: server.colour: unknown field",
        f"{path}:5:16: odp.api_key_env: value does not match regex '^[A-Za-z_][A-Za-z0-9_]*$'",
        f"{path}:6:14: sink.name: empty values not allowed",
    ]
    assert (info.value.line, info.value.key) == (2, "server.port")


def test_yaml_syntax_error_and_duplicate_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"odpmap.yaml:3:1: YAML syntax error"):
        load_config(write(tmp_path, "server:\n  port: [1\n"), {})
    with pytest.raises(ConfigFileError, match=r"odpmap.yaml:2:1: duplicate key 'server'"):
        load_config(write(tmp_path, "server: {}\nserver: {}\n"), {})


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"odpmap.yaml:1:1: the configuration must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope.yaml: cannot read the configuration: No such file"):
        load_config(tmp_path / "nope.yaml", {})


def test_missing_secret_variable_names_file_line_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          sendgrid:
            secret_env: SENDGRID_WEBHOOK_PUBLIC_KEY
    """)
    with pytest.raises(ConfigFileError) as info:
        load_config(path, {})
    assert str(info.value) == (
        f"{path}:3:5: providers.sendgrid.secret_env: environment variable SENDGRID_WEBHOOK_PUBLIC_KEY "
        "is not set: it must hold sendgrid's webhook secret (remove secret_env to accept unsigned requests)"
    )
    # commands that only read the data directory do not need secrets
    assert load_config(path, {}, require_secrets=False).provider("sendgrid").secret is None


def test_missing_odp_key_is_reported_when_needed(tmp_path: Path) -> None:
    path = write(tmp_path, "sink: {name: odp}\nodp:\n  api_key_env: ODP_KEY\n")
    config = load_config(path, {})  # loading works: status and dead-letters need no key
    with pytest.raises(ConfigFileError, match=r"odpmap.yaml:3:3: odp.api_key_env: environment variable ODP_KEY"):
        config.odp_api_key()


def test_fetch_certificate_and_secret_env_exclude_each_other(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  ses: {secret_env: X, fetch_certificate: true}\n")
    with pytest.raises(ConfigFileError, match="providers.ses.fetch_certificate: give either"):
        load_config(path, {"X": "pem"})


def test_unknown_provider_against_the_engine(tmp_path: Path, engine: Engine) -> None:
    path = write(tmp_path, """
        providers:
          sendgrid: {secret_env: SG_KEY}
          acme: {}
    """)
    config = load_config(path, {"SG_KEY": SENDGRID_KEY})
    with pytest.raises(ConfigFileError) as info:
        check_providers(config, engine)
    assert str(info.value) == f"{path}:3:3: providers.acme: unknown provider 'acme' (known: sendgrid, vonage)"


def test_malformed_secret_is_found_at_start(tmp_path: Path, engine: Engine) -> None:
    path = write(tmp_path, "providers:\n  sendgrid: {secret_env: SG_KEY}\n")
    config = load_config(path, {"SG_KEY": "not-a-key"})
    with pytest.raises(ConfigFileError, match=r":2:14: providers.sendgrid.secret_env: the value of SG_KEY is not a usable "
                                              r"sendgrid secret"):
        check_providers(config, engine)
    check_providers(load_config(path, {"SG_KEY": SENDGRID_KEY}), engine)  # a good key passes


def test_fetch_certificate_only_for_sns(tmp_path: Path, engine: Engine) -> None:
    config = load_config(write(tmp_path, "providers:\n  sendgrid: {fetch_certificate: true}\n"), {})
    with pytest.raises(ConfigFileError, match="fetch_certificate is for Amazon SNS; sendgrid's verifier is 'sendgrid'"):
        check_providers(config, engine)


def test_error_points_at_the_nearest_known_key() -> None:
    config = Config(source="c.yaml", positions={"odp": ("c.yaml", 4, 1)})
    assert str(config.error("odp.api_key_env", "boom")) == "c.yaml:4:1: odp.api_key_env: boom"
    assert str(Config().error("x", "boom")) == "<config>: x: boom"


def test_topic_arns_are_read_and_checked(tmp_path: Path) -> None:
    from odpmap.config import load_config

    good = tmp_path / "good.yaml"
    good.write_text("providers:\n  ses:\n    topic_arns: ['arn:aws:sns:eu-west-1:123456789012:ses-events']\n")
    assert load_config(good, {}).providers["ses"].topic_arns == ("arn:aws:sns:eu-west-1:123456789012:ses-events",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  ses:\n    topic_arns: ['ses-events']\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(bad, {})
    assert "bad.yaml:3" in str(info.value) and "topic_arns" in str(info.value)
