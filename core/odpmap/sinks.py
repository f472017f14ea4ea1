"""Sinks: where valid ODP events go.

A sink receives *batches* of events and reports per-event rejections, so a destination
that refuses some events of a batch (the ODP API's ``400`` with ``invalids``) does not
sink the whole batch. Sinks are registered through the ``odpmap_register_sinks`` hook,
by name, as a factory taking keyword options::

    @hookimpl
    def odpmap_register_sinks(register):
        register("stdout", StdoutSink, description="JSON lines on standard output")

Contract of :meth:`Sink.send`:

* return a :class:`SendReport` once the destination has accepted the batch; events the
  destination refused for good are listed in ``rejected`` as ``(index, message)``;
* raise :class:`odpmap.errors.DispatchError` when the batch as a whole failed, with
  ``retryable=True`` when sending the same batch later may succeed (network, 429, 5xx)
  and ``retryable=False`` when it will not (wrong API key).

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

__all__ = ["JsonLinesFileSink", "SendReport", "Sink", "StdoutSink", "dumps_event"]


def dumps_event(event: dict[str, Any]) -> str:
    """One event as one compact JSON line (keys in a stable order)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass
class SendReport:
    """What a sink did with one batch."""

    sent: int
    rejected: list[tuple[int, str]] = field(default_factory=list)


@runtime_checkable
class Sink(Protocol):
    """The interface every sink implements."""

    name: str

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport: ...

    def close(self) -> None: ...


class StdoutSink:
    """Writes each event as a JSON line to standard output (or another text stream)."""

    name = "stdout"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport:
        stream = self._stream or sys.stdout
        for event in events:
            stream.write(dumps_event(event) + "\n")
        stream.flush()
        return SendReport(sent=len(events))

    def close(self) -> None:
        pass


class JsonLinesFileSink:
    """Appends each event as a JSON line to a file; each batch is flushed and fsynced."""

    name = "jsonl"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport:
        import os

        self._fh.write("".join(dumps_event(e) + "\n" for e in events))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return SendReport(sent=len(events))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
