"""Built-in sinks: ``stdout`` (JSON lines) and ``jsonl`` (a JSON-lines file)."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..registry import Register
from ..sinks import JsonLinesFileSink, StdoutSink


@hookimpl
def odpmap_register_sinks(register: Register) -> None:
    register("stdout", StdoutSink, description="JSON lines on standard output")
    register("jsonl", JsonLinesFileSink, description="append JSON lines to a file (path=...)")
