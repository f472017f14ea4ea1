"""A durable SQLite store: the event outbox, dead letters, raw reports, cursors, tracking.

One database file (stdlib :mod:`sqlite3`) holds everything odpmap must not lose:

``outbox``
    Valid events waiting for (or done with) delivery. Each gets its ``data.idempotence_id``
    once, when stored (:meth:`Store.enqueue`), so every resend carries the same id.
    States: ``pending`` → ``sent`` | ``rejected``.
``dead_letters``
    Items that could not become events, and events the destination refused. Never deleted
    by odpmap; :meth:`Store.mark_replayed` records a replay.
``reports``
    Raw webhook reports, committed before the provider gets its ``2xx``
    (:meth:`Store.add_report`), then mapped. States: ``received`` → ``mapped`` | ``failed``.
``cursors``
    Named positions of pull jobs (last export file, last page token, ...).
``tracking``
    Campaign tracking fields known at send time, keyed by the provider's message id, for
    reports that do not carry them.

**Durability.** The database runs in WAL mode with ``synchronous=FULL`` by default: each
commit is fsynced before the call returns. ``NORMAL`` would survive a crash of the process
(the case that matters most) but may lose the last commits on power loss or an OS crash,
and odpmap acknowledges a webhook as soon as :meth:`Store.add_report` returns: a provider
does not resend what it was told we have. The cost is one fsync per commit, small next to
an HTTP round trip. Pass ``synchronous="NORMAL"`` where throughput matters more.

**Threads.** A :class:`Store` holds one connection guarded by a lock: every method is one
atomic step, and one instance may be shared by any number of threads (webhook handlers
enqueueing while a :class:`Dispatcher` thread sends). Other processes may open the same
file; SQLite's file locking applies (30 s busy timeout).

**Delivery.** :class:`Dispatcher` moves the outbox to a sink. A row is marked ``sent``
only after the sink returned, so delivery is *at least once*: a crash between the
destination's ``202`` and the commit resends the batch, with the same idempotence ids.

All timestamps are Unix epoch seconds (``REAL``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from odpmap.errors import ConfigError, DispatchError
from odpmap.odp import ensure_idempotence_id
from odpmap.outcomes import DeadLetter, raw_to_jsonable
from odpmap.sinks import Sink, dumps_event

__all__ = [
    "DB_FILENAME",
    "REPORT_STATES",
    "SCHEMA_VERSION",
    "DeadLetterRecord",
    "Dispatcher",
    "Store",
    "StoredReport",
]

log = logging.getLogger(__name__)

#: The file name used when :class:`Store` is given a directory.
DB_FILENAME = "odpmap.sqlite3"
#: The schema version written to ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: The states of a stored report.
REPORT_STATES = ("received", "mapped", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    idempotence_id TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'rejected')),
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_state_id ON outbox (state, id);

CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    provider TEXT NOT NULL,
    rule_id TEXT,
    item_index INTEGER,
    item TEXT NOT NULL,
    item_bytes BLOB,
    content_type TEXT,
    details TEXT NOT NULL,
    created_at REAL NOT NULL,
    replayed_at REAL,
    replay_result TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_provider_reason ON dead_letters (provider, reason);

CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT,
    headers TEXT NOT NULL,
    url TEXT,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'mapped', 'failed'))
);
CREATE INDEX IF NOT EXISTS reports_state_id ON reports (state, id);

CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS tracking (
    provider TEXT NOT NULL,
    message_id TEXT NOT NULL,
    tracking TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (provider, message_id)
);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class DeadLetterRecord:
    """A stored dead letter: the :class:`~odpmap.outcomes.DeadLetter` and its bookkeeping."""

    id: int
    dead_letter: DeadLetter
    created_at: float
    replayed_at: float | None = None
    replay_result: str | None = None


@dataclass(frozen=True)
class StoredReport:
    """A raw report as received, for mapping (or re-mapping) later."""

    id: int
    provider: str
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    url: str | None
    received_at: float
    state: str


def _stored_report(row: tuple[Any, ...]) -> StoredReport:
    rid, provider, body, ctype, headers, url, at, state = row
    return StoredReport(rid, provider, bytes(body), ctype, json.loads(headers), url, at, state)


class Store:
    """The durable store; see the module docstring.

    :param path: the database file, created with its parent directories when missing; an
        existing directory means the file :data:`DB_FILENAME` inside it
    :param synchronous: SQLite's ``synchronous`` setting, ``"FULL"`` (default) or ``"NORMAL"``
    :param clock: the current Unix time (injectable for tests)
    :raises ConfigError: the file's schema is newer than this odpmap, or WAL is unavailable
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        path = Path(path)
        if path.is_dir():
            path = path / DB_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._claimed: set[int] = set()
        self._conn = sqlite3.connect(
            str(path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup(synchronous)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, synchronous: str) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{self.path}: SQLite WAL mode is unavailable (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: database schema version {version} is newer than this "
                f"odpmap supports ({SCHEMA_VERSION}); upgrade odpmap"
            )
        with self._write():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a WAL checkpoint happens when the last one closes)."""
        with self._lock:
            self._conn.close()

    def __del__(self) -> None:
        # A store dropped without close() (an embedding app's engine going away) closes
        # its connection instead of leaving it to the garbage collector's warning.
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock up front)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- outbox -----------------------------------------------------------------------

    def enqueue(self, events: Iterable[dict[str, Any]], provider: str) -> list[int]:
        """Store ``events`` for delivery, all in one transaction; return their outbox ids.

        Each event gets its ``data.idempotence_id`` here (in place) unless it has one. An
        event whose idempotence id is already in the outbox is not stored twice: its
        existing row's id is returned, whatever that row's state.
        """
        with self._write() as conn:
            return self._insert_events(conn, events, provider)

    def _insert_events(self, conn: sqlite3.Connection, events: Iterable[dict[str, Any]], provider: str) -> list[int]:
        now = self._clock()
        ids: list[int] = []
        for event in events:
            ensure_idempotence_id(event)
            key = str(event["data"]["idempotence_id"])
            cursor = conn.execute(
                "INSERT INTO outbox (idempotence_id, provider, event, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (idempotence_id) DO NOTHING",
                (key, provider, dumps_event(event), now),
            )
            if cursor.rowcount == 1:
                ids.append(int(cursor.lastrowid or 0))
            else:
                row = conn.execute("SELECT id FROM outbox WHERE idempotence_id = ?", (key,))
                ids.append(int(row.fetchone()[0]))
        return ids

    def complete_report(
        self,
        report_id: int,
        events: Iterable[dict[str, Any]] = (),
        dead_letters: Iterable[DeadLetter] = (),
        *,
        state: str = "mapped",
    ) -> list[int]:
        """Store a mapped report's events (as :meth:`enqueue`) and dead letters and set its
        state, in ONE transaction: a crash leaves the report either untouched (mapped again
        on restart) or complete, never half stored.

        :returns: the outbox ids of the events
        :raises KeyError: no report with that id in state ``received`` (nothing written)
        """
        if state not in REPORT_STATES:
            raise ValueError(f"unknown report state {state!r}")
        with self._write() as conn:
            row = conn.execute("SELECT provider FROM reports WHERE id = ? AND state = 'received'", (report_id,)).fetchone()
            if row is None:
                raise KeyError(report_id)
            ids = self._insert_events(conn, events, row[0])
            self._insert_dead_letters(conn, dead_letters)
            conn.execute("UPDATE reports SET state = ? WHERE id = ?", (state, report_id))
        return ids

    def claim_batch(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` pending events, oldest first, as ``(id, event)``.

        Claimed rows are skipped by later claims *of this instance* until
        :meth:`mark_sent`, :meth:`mark_rejected`, :meth:`record_failure` or :meth:`release`
        names them, so several dispatcher threads never send the same row at once. Claims
        live in memory only: after a crash every pending row is claimable again. Two
        processes dispatching from one file may both send a row (at least once still holds).
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, event FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?",
                (limit + len(self._claimed),),
            ).fetchall()
            batch = [(rid, json.loads(text)) for rid, text in rows if rid not in self._claimed]
            batch = batch[:limit]
            self._claimed.update(rid for rid, _ in batch)
        return batch

    def release(self, ids: Iterable[int]) -> None:
        """Drop the claims on ``ids`` without recording anything."""
        with self._lock:
            self._claimed.difference_update(ids)

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Mark outbox rows as delivered (the destination accepted them)."""
        ids = list(ids)
        if not ids:
            return
        now = self._clock()
        with self._write() as conn:
            conn.executemany(
                "UPDATE outbox SET state = 'sent', sent_at = ?, last_error = NULL WHERE id = ?",
                [(now, i) for i in ids],
            )
            self._claimed.difference_update(ids)

    def mark_rejected(self, rejected: Iterable[tuple[int, str]]) -> None:
        """Mark outbox rows as refused by the destination, each with a dead letter.

        The dead letter has reason ``rejected``, the destination's message, the row's
        provider, the event as its item and ``{"outbox_id", "idempotence_id"}`` as details.
        """
        rejected = list(rejected)
        if not rejected:
            return
        with self._write() as conn:
            letters: list[DeadLetter] = []
            for outbox_id, message in rejected:
                row = conn.execute(
                    "SELECT provider, event, idempotence_id FROM outbox WHERE id = ?",
                    (outbox_id,),
                ).fetchone()
                if row is None:
                    raise KeyError(f"no outbox row with id {outbox_id}")
                provider, event, key = row
                conn.execute(
                    "UPDATE outbox SET state = 'rejected', last_error = ? WHERE id = ?",
                    (message, outbox_id),
                )
                letters.append(
                    DeadLetter(
                        reason="rejected",
                        message=message,
                        provider=provider,
                        item=json.loads(event),
                        details={"outbox_id": outbox_id, "idempotence_id": key},
                    )
                )
            self._insert_dead_letters(conn, letters)
            self._claimed.difference_update(i for i, _ in rejected)

    def record_failure(self, ids: Iterable[int], error: str) -> None:
        """Count a failed delivery attempt on outbox rows; they stay pending."""
        ids = list(ids)
        if not ids:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                [(error, i) for i in ids],
            )
            self._claimed.difference_update(ids)

    # --- dead letters -----------------------------------------------------------------

    def add_dead_letters(self, dead_letters: Iterable[DeadLetter]) -> list[int]:
        """Store dead letters in one transaction; return their ids."""
        with self._write() as conn:
            return self._insert_dead_letters(conn, dead_letters)

    def _insert_dead_letters(
        self, conn: sqlite3.Connection, dead_letters: Iterable[DeadLetter]
    ) -> list[int]:
        now = self._clock()
        ids: list[int] = []
        for letter in dead_letters:
            raw = letter.item
            item_bytes = bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else None
            cursor = conn.execute(
                "INSERT INTO dead_letters (reason, message, provider, rule_id, item_index, item, "
                "item_bytes, content_type, details, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    letter.reason,
                    letter.message,
                    letter.provider,
                    letter.rule_id,
                    letter.index,
                    _dumps(raw_to_jsonable(raw)),
                    item_bytes,
                    letter.content_type,
                    _dumps(letter.details),
                    now,
                ),
            )
            ids.append(int(cursor.lastrowid or 0))
        return ids

    _DEAD_LETTER_COLUMNS = (
        "id, reason, message, provider, rule_id, item_index, item, item_bytes, content_type, "
        "details, created_at, replayed_at, replay_result"
    )

    @staticmethod
    def _dead_letter_record(row: tuple[Any, ...]) -> DeadLetterRecord:
        (rid, reason, message, provider, rule_id, index, item, item_bytes, content_type,
         details, created_at, replayed_at, replay_result) = row  # fmt: skip
        letter = DeadLetter(
            reason=reason,
            message=message,
            provider=provider,
            item=bytes(item_bytes) if item_bytes is not None else json.loads(item),
            rule_id=rule_id,
            index=index,
            details=json.loads(details),
            content_type=content_type,
        )
        return DeadLetterRecord(rid, letter, created_at, replayed_at, replay_result)

    def list_dead_letters(
        self, provider: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> list[DeadLetterRecord]:
        """Dead letters, oldest first, optionally only of one provider and/or reason."""
        where: list[str] = []
        params: list[Any] = []
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        sql = f"SELECT {self._DEAD_LETTER_COLUMNS} FROM dead_letters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._dead_letter_record(row) for row in self._read(sql, params)]

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        """One dead letter by id, or ``None``."""
        rows = self._read(
            f"SELECT {self._DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (dead_letter_id,)
        )
        return self._dead_letter_record(rows[0]) if rows else None

    def mark_replayed(self, dead_letter_id: int, result: str) -> None:
        """Record that a dead letter was replayed, and the outcome (the letter is kept).

        :raises KeyError: no dead letter has that id
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE dead_letters SET replayed_at = ?, replay_result = ? WHERE id = ?",
                (self._clock(), result, dead_letter_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no dead letter with id {dead_letter_id}")

    # --- raw reports ------------------------------------------------------------------

    def add_report(
        self,
        provider: str,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
        url: str | None,
    ) -> int:
        """Store a received report as is; committed (and, with ``FULL``, fsynced) on return."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO reports (provider, body, content_type, headers, url, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (provider, bytes(body), content_type, _dumps(dict(headers)), url, self._clock()),
            )
            return int(cursor.lastrowid or 0)

    _REPORT_COLUMNS = "id, provider, body, content_type, headers, url, received_at, state"

    def pending_reports(self, limit: int | None = None) -> list[StoredReport]:
        """Reports in state ``received``, oldest first."""
        sql = f"SELECT {self._REPORT_COLUMNS} FROM reports WHERE state = 'received' ORDER BY id"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_stored_report(row) for row in self._read(sql, params)]

    def get_report(self, report_id: int) -> StoredReport | None:
        """A stored report in any state (reports are kept: a dead letter's replay re-reads
        the whole report it came from), or ``None``."""
        rows = self._read(f"SELECT {self._REPORT_COLUMNS} FROM reports WHERE id = ?", (report_id,))
        return _stored_report(rows[0]) if rows else None

    def mark_report(self, report_id: int, state: str) -> None:
        """Set a report's state, one of :data:`REPORT_STATES`.

        :raises ValueError: unknown state
        :raises KeyError: no report has that id
        """
        if state not in REPORT_STATES:
            raise ValueError(f"report state must be one of {REPORT_STATES}, not {state!r}")
        with self._write() as conn:
            cursor = conn.execute("UPDATE reports SET state = ? WHERE id = ?", (state, report_id))
            if cursor.rowcount == 0:
                raise KeyError(f"no report with id {report_id}")

    # --- cursors and tracking ---------------------------------------------------------

    def prune(self, before: float, *, tracking_before: float | None = None) -> dict[str, int]:
        """Delete what delivery no longer needs, older than ``before`` (epoch seconds):
        sent and rejected outbox rows (a rejected event is kept as a dead letter), and
        mapped or failed reports that no dead letter refers to (a replay re-reads those).
        With ``tracking_before``, also campaign tracking remembered before then.

        Never deletes pending events, unmapped reports, cursors or dead letters. A
        provider event delivered again after its outbox row is pruned is enqueued again
        (ODP sees its idempotence id twice): keep ``before`` well past the providers'
        retry windows (SendGrid retries for 24 hours; days are safe).

        :returns: how many rows were deleted, by table
        """
        with self._write() as conn:
            outbox = conn.execute(
                "DELETE FROM outbox WHERE state IN ('sent', 'rejected') AND COALESCE(sent_at, created_at) < ?",
                (before,),
            ).rowcount
            reports = conn.execute(
                "DELETE FROM reports WHERE state IN ('mapped', 'failed') AND received_at < ? AND id NOT IN "
                "(SELECT json_extract(details, '$.report_id') FROM dead_letters "
                " WHERE json_extract(details, '$.report_id') IS NOT NULL)",
                (before,),
            ).rowcount
            tracking = 0
            if tracking_before is not None:
                tracking = conn.execute("DELETE FROM tracking WHERE created_at < ?", (tracking_before,)).rowcount
        return {"outbox": outbox, "reports": reports, "tracking": tracking}

    def get_cursor(self, name: str) -> str | None:
        """The value of a pull job's cursor, or ``None`` when never set."""
        rows = self._read("SELECT value FROM cursors WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_cursor(self, name: str, value: str) -> None:
        """Set (or replace) a pull job's cursor."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (name, value, self._clock()),
            )

    def remember(self, provider: str, message_id: str, tracking: Mapping[str, Any]) -> None:
        """Keep the campaign tracking fields of a sent message (replaces earlier ones)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tracking (provider, message_id, tracking, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (provider, message_id) DO UPDATE SET "
                "tracking = excluded.tracking, created_at = excluded.created_at",
                (provider, message_id, _dumps(dict(tracking)), self._clock()),
            )

    def recall(self, provider: str, message_id: str) -> dict[str, Any] | None:
        """The tracking fields remembered for a provider's message id, or ``None``."""
        rows = self._read(
            "SELECT tracking FROM tracking WHERE provider = ? AND message_id = ?",
            (provider, message_id),
        )
        return dict(json.loads(rows[0][0])) if rows else None

    # --- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Figures for health checks and metrics.

        ``outbox_pending``, ``outbox_sent``, ``outbox_rejected`` (row counts),
        ``oldest_pending_age_seconds`` (``None`` when nothing is pending),
        ``dead_letters`` (``{reason: count}``) and ``reports_pending``.
        """
        with self._lock:
            states = dict(
                self._conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
            )
            oldest = self._conn.execute(
                "SELECT MIN(created_at) FROM outbox WHERE state = 'pending'"
            ).fetchone()[0]
            reasons = self._conn.execute(
                "SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason"
            ).fetchall()
            reports = self._conn.execute(
                "SELECT COUNT(*) FROM reports WHERE state = 'received'"
            ).fetchone()[0]
        return {
            "outbox_pending": states.get("pending", 0),
            "outbox_sent": states.get("sent", 0),
            "outbox_rejected": states.get("rejected", 0),
            "oldest_pending_age_seconds": None
            if oldest is None
            else max(0.0, self._clock() - oldest),
            "dead_letters": dict(reasons),
            "reports_pending": reports,
        }

    # --- pull jobs (odpmap.pull) --------------------------------------------------------

    def store_page(
        self,
        provider: str,
        events: Iterable[dict[str, Any]],
        dead_letters: Iterable[DeadLetter] = (),
        *,
        cursor_name: str | None = None,
        cursor_value: str | None = None,
    ) -> tuple[int, int, int]:
        """Store one pulled page: its events in the outbox, its dead letters and the pull
        job's new cursor, in ONE transaction.

        A crash (or a failed write) leaves everything as it was before the page, cursor
        included, so the page is fetched again on the next run; it can never advance the
        cursor past events that are not stored. Events are stored as :meth:`enqueue` stores
        them (an idempotence id already in the outbox is not stored again). A dead letter
        equal to one already stored (same provider, reason, rule and item: an overlapping
        pull fetched the item again) is not stored again either. The cursor is left alone
        when ``cursor_value`` is ``None``.

        :returns: ``(events stored, events already in the outbox, dead letters stored)``
        """
        now = self._clock()
        stored = already = 0
        with self._write() as conn:
            for event in events:
                ensure_idempotence_id(event)
                cursor = conn.execute(
                    "INSERT INTO outbox (idempotence_id, provider, event, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (idempotence_id) DO NOTHING",
                    (str(event["data"]["idempotence_id"]), provider, dumps_event(event), now),
                )
                if cursor.rowcount == 1:
                    stored += 1
                else:
                    already += 1
            new_letters = []
            for letter in dead_letters:
                item = _dumps(raw_to_jsonable(letter.item))
                seen = conn.execute(
                    "SELECT 1 FROM dead_letters WHERE provider = ? AND reason = ? AND rule_id IS ? "
                    "AND item = ? LIMIT 1",
                    (letter.provider, letter.reason, letter.rule_id, item),
                ).fetchone()
                if seen is None:
                    new_letters.append(letter)
            self._insert_dead_letters(conn, new_letters)
            if cursor_name is not None and cursor_value is not None:
                conn.execute(
                    "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at",
                    (cursor_name, cursor_value, now),
                )
        return stored, already, len(new_letters)


class Dispatcher:
    """Moves pending outbox events to a sink, batch by batch.

    :param store: the store whose outbox is drained
    :param sink: where events go (e.g. :class:`odpmap.odp.OdpSink`)
    :param batch_size: most events claimed per :meth:`run_once`
    :param idle_sleep: seconds :meth:`run_forever` waits when the outbox is drained or a
        retryable failure happened
    """

    def __init__(
        self, store: Store, sink: Sink, *, batch_size: int = 100, idle_sleep: float = 1.0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.store = store
        self.sink = sink
        self.batch_size = batch_size
        self.idle_sleep = idle_sleep
        self.last_error: str | None = None

    def run_once(self) -> dict[str, int]:
        """Claim a batch, send it, record the outcome; return counts.

        The counts are ``claimed``, ``sent``, ``rejected`` and ``failed`` (events left
        pending after a retryable :class:`~odpmap.errors.DispatchError`).

        :raises DispatchError: a non-retryable one, after recording the failure on the rows
            (they stay pending, to be sent once the cause is fixed)
        """
        claimed = self.store.claim_batch(self.batch_size)
        result = {"claimed": len(claimed), "sent": 0, "rejected": 0, "failed": 0}
        if not claimed:
            return result
        ids = [outbox_id for outbox_id, _ in claimed]
        try:
            report = self.sink.send([event for _, event in claimed])
        except DispatchError as exc:
            self.store.record_failure(ids, str(exc))
            self.last_error = str(exc)
            if not exc.retryable:
                raise
            log.warning("dispatch failed, %d event(s) stay pending: %s", len(ids), exc)
            result["failed"] = len(ids)
            return result
        except Exception as exc:
            self.store.record_failure(ids, f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:
            self.store.release(ids)
            raise
        rejected = [(ids[index], message) for index, message in report.rejected]
        refused = {outbox_id for outbox_id, _ in rejected}
        self.store.mark_sent([i for i in ids if i not in refused])
        self.store.mark_rejected(rejected)
        self.last_error = None
        result["sent"] = len(ids) - len(refused)
        result["rejected"] = len(refused)
        return result

    def run_forever(self, stop_event: threading.Event) -> None:
        """Call :meth:`run_once` until ``stop_event`` is set.

        Waits ``idle_sleep`` (or until stopped) after a batch smaller than ``batch_size`` or
        a retryable failure; goes straight on after a full batch.

        :raises DispatchError: a non-retryable one (e.g. a wrong API key) ends the loop
        """
        while not stop_event.is_set():
            result = self.run_once()
            if result["failed"] or result["claimed"] < self.batch_size:
                stop_event.wait(self.idle_sleep)
