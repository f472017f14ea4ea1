"""Built-in sinks (``stdout``, ``jsonl``, ``odp``) and the built-in ``sqlite`` tracking store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from ..registry import Register
from ..sinks import JsonLinesFileSink, StdoutSink


def _odp_sink(**options: Any) -> Any:
    from ..odp import OdpSink  # httpx is imported only when the ODP sink is used

    return OdpSink(**options)


def _sqlite_tracking_store(data_dir: Path, **options: Any) -> Any:
    from ..store import Store

    return Store(data_dir, **options)


@hookimpl
def odpmap_register_sinks(register: Register) -> None:
    register("stdout", StdoutSink, description="JSON lines on standard output")
    register("jsonl", JsonLinesFileSink, description="append JSON lines to a file (path=...)")
    register("odp", _odp_sink, description="the ODP events API (api_key=..., base_url=..., batch_size=...)")


@hookimpl
def odpmap_register_tracking_stores(register: Register) -> None:
    register("sqlite", _sqlite_tracking_store, description="the data directory's SQLite database")
