"""The ``odpmap`` command line: a thin shell over :class:`odpmap.Engine`.

Exit codes: 0 success; 1 something was dead-lettered (``map``, ``pull``, ``dead-letters
replay``), ODP rejected events, or a mapping has problems (``lint``); 2 usage or
configuration errors (bad mapping, unknown provider, broken plugin, a refused API key),
reported as one message without a traceback; 3 delivery or a provider's API is failing
for now (progress is kept: run again later); 4 (``pull``) another run holds the lock.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from .engine import Engine, content_type_for
from .errors import ConfigError, OdpmapError
from .outcomes import Counts, MapResult
from .sinks import dumps_event

__all__ = ["cli", "main"]


class UsageFailure(click.ClickException):
    """A configuration error: message on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"odpmap: error: {self.format_message()}", err=True)


@contextmanager
def config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        all_errors = getattr(exc, "all_errors", None)
        if all_errors and len(all_errors) > 1:
            raise UsageFailure("\n".join(str(e) for e in all_errors)) from exc
        raise UsageFailure(str(exc)) from exc


def make_engine(mappings: Sequence[str] = ()) -> Engine:
    with config_errors():
        return Engine(mapping_paths=mappings)


mappings_option = click.option(
    "--mappings",
    "mappings",
    multiple=True,
    type=click.Path(exists=True),
    help="A mapping file or a folder of *.yaml mappings to load as providers (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="odpmap")
def cli() -> None:
    """Map messaging providers' reports to Optimizely Data Platform events."""


@cli.command()
@mappings_option
@click.option("--events", "events_of", metavar="NAME", help="Print the event table of one provider.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def providers(mappings: Sequence[str], events_of: str | None, as_json: bool) -> None:
    """List providers: name, channel, where each comes from, the events it handles."""
    engine = make_engine(mappings)
    if events_of:
        with config_errors():
            info = engine.provider(events_of)
        table = info.event_table()
        if as_json:
            click.echo(json.dumps(table, indent=2))
            return
        click.echo(f"{info.name} ({info.channel}) - {info.mapping_file}")
        _print_table(["RULE", "WHEN", "OUTCOME"], [[r["rule"], r["when"], r["outcome"]] for r in table])
        return
    rows = []
    for info in engine.providers.values():
        rows.append({
            "name": info.name,
            "channel": info.channel,
            "source": info.source,
            "mapping": info.mapping_file,
            "parser": info.parser_name,
            "verifier": info.verifier_name,
            "events": info.handled_events(),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(
        ["NAME", "CHANNEL", "SOURCE", "EVENTS"],
        [[r["name"], r["channel"], r["source"], ", ".join(r["events"])] for r in rows],
    )
    for err in engine.load_errors:
        click.echo(f"odpmap: warning: {err}", err=True)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [str(row[-1])]
        click.echo("  ".join(cells).rstrip())


@cli.command("map")
@click.option("--provider", "-p", required=True, help="The provider that produced the report(s).")
@click.option("--content-type", "-t", help="Content type of the report (default: from the file name).")
@mappings_option
@click.option("--dead-letters", "dead_letters", type=click.Path(dir_okay=False, writable=True),
              help="Append dead letters as JSON lines to this file (default: standard error).")
@click.option("--sink", "sink_name", default="stdout", show_default=True, help="Where events go (a registered sink).")
@click.option("--sink-option", "sink_options", multiple=True, metavar="KEY=VALUE", help="An option for the sink.")
@click.option("--received-at", type=float, help="Receive time in epoch seconds (default: now).")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False),
              help="With --sink odp: the data directory holding the outbox and dead letters "
                   "(default: ODPMAP_DATA_DIR, else ./.odpmap).")
@click.option("--odp-base-url", "odp_base_url", metavar="URL",
              help="With --sink odp: the ODP API base, e.g. https://api.eu1.odp.optimizely.com/v3 "
                   "(default: from the API key's region).")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
def map_command(provider: str, content_type: str | None, mappings: Sequence[str], dead_letters: str | None,
                sink_name: str, sink_options: Sequence[str], received_at: float | None, files: Sequence[str],
                data_dir: str | None = None, odp_base_url: str | None = None) -> None:
    """Map report FILES (or - for standard input) to ODP events, printed as JSON lines.

    Exit 0 when every item was mapped or skipped, 1 when something was dead-lettered.

    With --sink odp, events go to the outbox of the data directory and dead letters to
    its store, then the outbox is delivered to ODP (key: ODPMAP_ODP_API_KEY). Exit 2 when
    ODP refuses the key (the events stay in the outbox), 3 when delivery failed for now
    (network, 5xx: run `odpmap dispatch --once` later).
    """
    if sink_name == "odp":
        if dead_letters:
            raise UsageFailure("--dead-letters does not apply to --sink odp: dead letters go to the data directory")
        _map_to_outbox(provider, content_type, mappings, sink_options, received_at, files, data_dir, odp_base_url)
        return
    engine = make_engine(mappings)
    with config_errors():
        engine.provider(provider)
        options = _parse_options(sink_options)
        sink = engine.sink(sink_name, **options)
    total = MapResult(provider=provider)
    dl_stream: IO[str] = open(dead_letters, "a", encoding="utf-8") if dead_letters else sys.stderr  # noqa: SIM115
    try:
        for name in files:
            body = _read(name)
            ctype = content_type or content_type_for(name)
            result = engine.map(provider, body, content_type=ctype, received_at=received_at)
            if result.events:
                report = engine.dispatch(result.events, sink)
                for index, message in report.rejected:
                    click.echo(f"odpmap: rejected event {index}: {message}", err=True)
            for dl in result.dead_letters:
                dl_stream.write(dl.to_json() + "\n")
            total.extend(result)
        dl_stream.flush()
    except OdpmapError as exc:
        raise UsageFailure(str(exc)) from exc
    finally:
        sink.close()
        if dead_letters:
            dl_stream.close()
    click.echo(f"odpmap: {provider}: {total.counts.summary()}", err=True)
    if total.dead_letters:
        sys.exit(1)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageFailure(f"cannot read {name}: {exc.strerror or exc}") from exc


def _parse_options(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageFailure(f"--sink-option takes KEY=VALUE, not {pair!r}")
        out[key.replace("-", "_")] = value
    return out


@cli.command()
@click.argument("mappings", nargs=-1, required=True, type=click.Path())
def lint(mappings: Sequence[str]) -> None:
    """Check mapping files without running them (exit 1 on any problem).

    Checks structure, duplicate keys and rule ids, Jinja syntax, unknown variables,
    filters and tables, type/action pairs against the ODP catalogue, and rules that can
    never match. Messages are file:line:col: message.
    """
    engine = make_engine()
    paths: list[str] = []
    for m in mappings:
        p = Path(m)
        paths.extend(sorted(str(f) for f in p.iterdir() if f.suffix in (".yaml", ".yml")) if p.is_dir() else [m])
    problems = engine.lint(paths)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"odpmap: {len(problems)} problem(s) in {len(paths)} file(s)", err=True)
        sys.exit(1)
    click.echo(f"odpmap: {len(paths)} file(s) OK", err=True)


@cli.command()
@mappings_option
@click.option("--provider", "-p", "only", multiple=True, help="Only these providers (repeatable).")
def demo(mappings: Sequence[str], only: Sequence[str]) -> None:
    """Map every bundled sample report and print the ODP events, then a summary.

    Events go to standard output as JSON lines; the summary goes to standard error.
    """
    engine = make_engine(mappings)
    names = list(only) or list(engine.providers)
    rows = []
    grand = Counts()
    with config_errors():
        for name in names:
            engine.provider(name)
    for name in names:
        counts = Counts()
        samples = engine.samples(name)
        for sample in samples:
            result = engine.map(name, sample.body, content_type=sample.content_type)
            for event in result.events:
                click.echo(dumps_event(event))
            counts.add(result.counts)
        grand.add(counts)
        rows.append([name, str(len(samples)), str(counts.received), str(counts.mapped), str(counts.skipped),
                     str(counts.dead_lettered), str(counts.events)])
    rows.append(["total", str(sum(int(r[1]) for r in rows)), str(grand.received), str(grand.mapped),
                 str(grand.skipped), str(grand.dead_lettered), str(grand.events)])
    out = sys.stderr
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_DEMO_HEADERS)]
    for row in [_DEMO_HEADERS, *rows]:
        out.write("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + "\n")
    out.write(("every item accounted for: received = mapped + skipped + dead-lettered\n" if grand.balanced()
               else "ACCOUNTING MISMATCH\n"))
    if not grand.balanced():
        sys.exit(1)


_DEMO_HEADERS = ["PROVIDER", "SAMPLES", "RECEIVED", "MAPPED", "SKIPPED", "DEAD", "EVENTS"]


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include odpmap's built-in plugins.")
def plugins(show_all: bool) -> None:
    """List loaded plugins, where they come from and the hooks they implement."""
    engine = make_engine()
    pm = engine.pm
    rows = []
    for name, plugin in sorted(pm.list_name_plugin()):
        source = pm.source_of(name)
        if not show_all and source.startswith("odpmap (built-in)"):
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or ())
        rows.append([name, source, ", ".join(hooks)])
    if rows:
        _print_table(["NAME", "SOURCE", "HOOKS"], rows)
    else:
        click.echo("no plugins" + ("" if show_all else " (built-ins hidden; --all shows them)"), err=True)


# --- the delivery path: map --sink odp, serve, dispatch, status, dead-letters ---------------
# (see docs/production.md; the machinery lives in odpmap.config and odpmap.service)

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="ODPMAP_CONFIG",
    help="The configuration file (default: ODPMAP_CONFIG, else built-in defaults).",
)
data_dir_option = click.option(
    "--data-dir", "data_dir", type=click.Path(file_okay=False),
    help="The data directory (default: the configuration's, else ODPMAP_DATA_DIR, else ./.odpmap).",
)

_ODP_OPTION_TYPES: dict[str, type] = {
    "batch_size": int, "max_bytes": int, "max_retries": int,
    "timeout": float, "backoff_base": float, "backoff_max": float,
}


def _load_config(config_path: str | None, data_dir: str | None = None, *, require_secrets: bool = True) -> Any:
    import dataclasses

    from .config import load_config

    with config_errors():
        config = load_config(config_path, require_secrets=require_secrets)
    if data_dir:
        config = dataclasses.replace(config, data_dir=Path(data_dir))
    return config


def _show_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _odp_sink_options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in _parse_options(pairs).items():
        kind = _ODP_OPTION_TYPES.get(key)
        if kind is None:
            raise UsageFailure(f"--sink-option {key}: the odp sink takes {', '.join(sorted(_ODP_OPTION_TYPES))}")
        try:
            out[key] = kind(value)
        except ValueError:
            raise UsageFailure(f"--sink-option {key}={value}: not a number") from None
    return out


def _require_api_key(config: Any) -> None:
    if not config.environ.get(config.odp.api_key_env):
        raise UsageFailure(f"set {config.odp.api_key_env} to the ODP API key to send events to ODP")


def _map_to_outbox(provider: str, content_type: str | None, mappings: Sequence[str], sink_options: Sequence[str],
                   received_at: float | None, files: Sequence[str], data_dir: str | None,
                   odp_base_url: str | None) -> None:
    """``odpmap map --sink odp``: outbox and dead letters in the store, then deliver."""
    import dataclasses
    import hashlib

    from .config import SinkConfig
    from .service import assign_idempotence_ids, build_engine, build_sink, drain_outbox, instance_id, open_store
    from .store import Dispatcher

    config = _load_config(None, data_dir)
    config = dataclasses.replace(
        config,
        mappings=tuple(Path(m) for m in mappings),
        sink=SinkConfig(name="odp", options=_odp_sink_options(sink_options)),
        odp=dataclasses.replace(config.odp, base_url=odp_base_url or config.odp.base_url),
    )
    _require_api_key(config)
    with config_errors():
        store = open_store(config)
    try:
        with config_errors():
            engine = build_engine(config, store=store)
            engine.provider(provider)
            sink = build_sink(config, engine)
        total = MapResult(provider=provider)
        try:
            instance = instance_id(store)
            for name in files:
                body = _read(name)
                ctype = content_type or content_type_for(name)
                result = engine.map(provider, body, content_type=ctype, received_at=received_at)
                # ids from the file's content: mapping the same file again stores nothing twice
                key = f"{instance}/file/{provider}/{hashlib.sha256(body).hexdigest()}"
                assign_idempotence_ids(result.events, key)
                if result.events:
                    store.enqueue(result.events, provider)
                if result.dead_letters:
                    store.add_dead_letters(
                        [dataclasses.replace(dl, details={**dl.details, "file": name}) for dl in result.dead_letters]
                    )
                total.extend(result)
            click.echo(f"odpmap: {provider}: {total.counts.summary()}", err=True)
            if total.dead_letters:
                click.echo(f"odpmap: {len(total.dead_letters)} dead letter(s) stored in {_show_path(config.data_dir)}"
                           " (odpmap dead-letters list)", err=True)
            drained = drain_outbox(Dispatcher(store, sink, batch_size=config.odp.batch_size))
        except OdpmapError as exc:
            raise UsageFailure(str(exc)) from exc
        finally:
            sink.close()
    finally:
        store.close()
    click.echo(f"odpmap: odp: sent={drained.sent} rejected={drained.rejected} pending={drained.pending}", err=True)
    if drained.error is not None:
        where = _show_path(config.data_dir)
        if not drained.error.retryable:
            raise UsageFailure(
                f"{drained.error}\n{drained.pending} event(s) kept in the outbox of {where}; once the key is "
                f"fixed: odpmap dispatch --data-dir {where} --once"
            )
        click.echo(f"odpmap: delivery failed for now: {drained.error}", err=True)
        click.echo(f"odpmap: {drained.pending} event(s) kept in the outbox; retry: odpmap dispatch "
                   f"--data-dir {where} --once", err=True)
        sys.exit(3)
    if total.dead_letters or drained.rejected:
        sys.exit(1)


@cli.command()
@config_option
@click.option("--host", help="Interface to listen on (default: server.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one (default: server.port, 8000).")
@click.option("--dispatch/--no-dispatch", "dispatch", default=None,
              help="Deliver the outbox in this process (default: dispatch.in_process, true).")
def serve(config_path: str | None, host: str | None, port: int | None, dispatch: bool | None) -> None:
    """Receive webhooks at /webhooks/PROVIDER and deliver their events, until SIGINT/SIGTERM.

    Each report is committed to the data directory before the provider gets its 200;
    a worker thread maps it, a dispatcher thread delivers the outbox. Also serves
    /healthz and /metrics (Prometheus).
    """
    from .service import Service

    config = _load_config(config_path)
    _setup_logging(config.server.log_level)
    with config_errors():
        service = Service(config, dispatch=dispatch)
    try:
        def listening(url: str) -> None:
            click.echo(f"odpmap: listening on {url} (data directory {_show_path(config.data_dir)})", err=True)
            unsigned = sorted(name for name, info in service.engine.providers.items()
                              if info.verify is not None and not (config.providers.get(name) and config.providers[name].verifies))
            if unsigned:
                click.echo(
                    f"odpmap: warning: no webhook secret configured for {', '.join(unsigned)}: their signatures "
                    "are not checked, so anyone who knows the URL can post reports (providers.NAME.secret_env)",
                    err=True,
                )

        with config_errors():
            service.serve(host, port, on_listening=listening)
    finally:
        service.close()
    click.echo("odpmap: stopped", err=True)


@cli.command()
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="Deliver what is pending, then exit.")
def dispatch(config_path: str | None, data_dir: str | None, once: bool) -> None:
    """Deliver the outbox to the configured sink (for a dispatcher apart from `serve`).

    Runs until SIGINT/SIGTERM. With --once: exit 0 once the outbox is empty, 2 when the
    destination refuses the key, 3 when delivery failed for now (events stay pending).
    """
    import signal
    import threading

    from .service import build_engine, build_sink, drain_outbox, open_store
    from .store import Dispatcher

    config = _load_config(config_path, data_dir, require_secrets=False)
    _setup_logging(config.server.log_level)
    if config.sink.name == "odp":
        _require_api_key(config)
    stop = threading.Event()
    with config_errors():
        store = open_store(config)
    try:
        with config_errors():
            engine = build_engine(config, store=store) if config.sink.name != "odp" else None
            sink = build_sink(config, engine, sleep=stop.wait)
        dispatcher = Dispatcher(store, sink, batch_size=config.dispatch.batch_size,
                                idle_sleep=config.dispatch.idle_sleep)
        try:
            if once:
                drained = drain_outbox(dispatcher)
                click.echo(f"odpmap: sent={drained.sent} rejected={drained.rejected} pending={drained.pending}",
                           err=True)
                if drained.error is not None:
                    if not drained.error.retryable:
                        raise UsageFailure(str(drained.error))
                    click.echo(f"odpmap: delivery failed for now: {drained.error}", err=True)
                    sys.exit(3)
                return
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            click.echo(f"odpmap: dispatching {_show_path(config.data_dir)} to {sink.name}", err=True)
            try:
                dispatcher.run_forever(stop)
            except OdpmapError as exc:
                raise UsageFailure(f"{exc} (events stay in the outbox)") from exc
            click.echo("odpmap: stopped", err=True)
        finally:
            sink.close()
    finally:
        store.close()


@cli.command()
@config_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str | None, data_dir: str | None, as_json: bool) -> None:
    """Outbox depth and age, delivery figures, pending reports and dead letters by reason."""
    from .service import format_status, open_store, status_figures

    config = _load_config(config_path, data_dir, require_secrets=False)
    with config_errors():
        store = open_store(config, create=False)
    with store:
        figures = status_figures(store)
    if as_json:
        click.echo(json.dumps({"data_dir": str(config.data_dir), **figures}, indent=2, sort_keys=True))
    else:
        click.echo(format_status(figures, _show_path(config.data_dir)))


def _duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` or a number of days -> seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 86400
    except ValueError:
        raise UsageFailure(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)") from None


@cli.command()
@config_option
@data_dir_option
@click.option("--older-than", "older_than", default="30d", show_default=True,
              help="Delete sent events and mapped reports older than this (30d, 12h, ...).")
@click.option("--tracking-older-than", "tracking_older_than", default=None,
              help="Also delete campaign tracking remembered longer ago than this (e.g. 180d).")
def prune(config_path: str | None, data_dir: str | None, older_than: str, tracking_older_than: str | None) -> None:
    """Delete delivered events and mapped reports the data directory no longer needs.

    Pending events, reports not yet mapped, reports a dead letter refers to, cursors and
    dead letters are kept. Run it from cron; keep --older-than past your providers'
    retry windows.
    """
    import time

    from .service import open_store

    before = time.time() - _duration(older_than)
    tracking_before = time.time() - _duration(tracking_older_than) if tracking_older_than else None
    config = _load_config(config_path, data_dir, require_secrets=False)
    with config_errors():
        store = open_store(config, create=False)
    with store:
        deleted = store.prune(before, tracking_before=tracking_before)
    click.echo(f"odpmap: pruned {deleted['outbox']} outbox row(s), {deleted['reports']} report(s), "
               f"{deleted['tracking']} tracking row(s)", err=True)


@cli.group("dead-letters")
def dead_letters_group() -> None:
    """List, show and replay dead letters (odpmap never deletes them)."""


@dead_letters_group.command("list")
@config_option
@data_dir_option
@click.option("--provider", "-p", help="Only this provider's.")
@click.option("--reason", "-r", help="Only this reason's (unparseable, unmapped, template_error, ...).")
@click.option("--limit", type=int, help="At most this many (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the item.")
def dead_letters_list(config_path: str | None, data_dir: str | None, provider: str | None, reason: str | None,
                      limit: int | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    from .service import open_store

    config = _load_config(config_path, data_dir, require_secrets=False)
    with config_errors():
        store = open_store(config, create=False)
    with store:
        records = store.list_dead_letters(provider=provider, reason=reason, limit=limit)
    if as_json:
        for record in records:
            click.echo(json.dumps(_dead_letter_json(record), ensure_ascii=False, sort_keys=True, default=str))
        return
    if not records:
        click.echo("no dead letters", err=True)
        return
    rows = []
    for record in records:
        letter = record.dead_letter
        message = letter.message if len(letter.message) <= 100 else letter.message[:97] + "..."
        replayed = (record.replay_result or "").split(":", 1)[0] or "-"
        rows.append([str(record.id), letter.provider, letter.reason, replayed, message])
    _print_table(["ID", "PROVIDER", "REASON", "REPLAYED", "MESSAGE"], rows)


def _dead_letter_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "created_at": record.created_at,
        "replayed_at": record.replayed_at,
        "replay_result": record.replay_result,
        **record.dead_letter.to_dict(),
    }


@dead_letters_group.command("show")
@config_option
@data_dir_option
@click.argument("dead_letter_id", metavar="ID", type=int)
def dead_letters_show(config_path: str | None, data_dir: str | None, dead_letter_id: int) -> None:
    """Print one dead letter as JSON, with its raw item."""
    from .service import open_store

    config = _load_config(config_path, data_dir, require_secrets=False)
    with config_errors():
        store = open_store(config, create=False)
    with store:
        record = store.get_dead_letter(dead_letter_id)
    if record is None:
        raise UsageFailure(f"no dead letter with id {dead_letter_id}")
    click.echo(json.dumps(_dead_letter_json(record), ensure_ascii=False, indent=2, sort_keys=True, default=str))


@dead_letters_group.command("replay")
@config_option
@data_dir_option
@mappings_option
@click.option("--provider", "-p", help="Only this provider's.")
@click.option("--reason", "-r", help="Only this reason's (default: all but rejected).")
@click.argument("ids", nargs=-1, type=int)
def dead_letters_replay(config_path: str | None, data_dir: str | None, mappings: Sequence[str],
                        provider: str | None, reason: str | None, ids: Sequence[int]) -> None:
    """Map dead letters (or those with IDS) again through the current mappings.

    What now maps goes to the outbox (a running `odpmap serve` or `odpmap dispatch`
    delivers it); every replayed letter is marked with its result and kept. Exit 1 when
    some are still dead.
    """
    import dataclasses

    from .service import build_engine, open_store, replay_dead_letters

    config = _load_config(config_path, data_dir, require_secrets=False)
    if mappings:
        config = dataclasses.replace(config, mappings=(*config.mappings, *(Path(m) for m in mappings)))
    with config_errors():
        store = open_store(config, create=False)
    with store:
        with config_errors():
            engine = build_engine(config, store=store)
        try:
            summary = replay_dead_letters(engine, store, provider=provider, reason=reason, ids=list(ids) or None)
        except OdpmapError as exc:
            raise UsageFailure(str(exc)) from exc
    for outcome in summary.outcomes:
        click.echo(f"{outcome.id}  {outcome.provider}  {outcome.reason}  {outcome.result}: {outcome.message}")
    still = summary.count("still dead")
    click.echo(
        f"odpmap: replayed {len(summary.outcomes)} dead letter(s): {summary.count('mapped')} mapped "
        f"({summary.events} event(s) enqueued), {summary.count('skipped')} skipped, {still} still dead, "
        f"{summary.count('already replayed')} already replayed",
        err=True,
    )
    if still:
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``odpmap`` console script."""
    from .plugins import make_plugin_manager

    try:
        pm = make_plugin_manager()
        pm.hook.odpmap_register_commands(cli=cli)
    except ConfigError as exc:
        click.echo(f"odpmap: error: {exc}", err=True)
        sys.exit(2)
    cli.main(args=list(argv) if argv is not None else None, prog_name="odpmap")


if __name__ == "__main__":  # pragma: no cover
    main()
