"""The ``odpmap`` command line: a thin shell over :class:`odpmap.Engine`.

Exit codes: 0 success; 1 something was dead-lettered (``map``) or a mapping has
problems (``lint``); 2 usage or configuration errors (bad mapping, unknown provider,
broken plugin), reported as one message without a traceback.
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
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
def map_command(provider: str, content_type: str | None, mappings: Sequence[str], dead_letters: str | None,
                sink_name: str, sink_options: Sequence[str], received_at: float | None, files: Sequence[str]) -> None:
    """Map report FILES (or - for standard input) to ODP events, printed as JSON lines.

    Exit 0 when every item was mapped or skipped, 1 when something was dead-lettered.
    """
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
    out = click.get_text_stream("stderr")
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
