"""The durable local store of PCM reports: one SQLite file, written before anything is sent.

Why SQLite and not the log shippers' spool (:mod:`ofsre.exporters._spool`): the spool is a
queue — it deletes what was delivered and belongs to one process. PCM reports must outlive
their delivery: each one keeps the regulator's verdict (``ACCEPTED``, ``DISCARDED``,
``PAIRED_INCONSISTENT``, ``UNPAIRED``, ``SINGLE`` and its ``message``), ``ofsre pcm report``
recomputes the regulator's figures from the same reports, and several processes (gateway
replicas, the worker, one sender) share one store. SQLite in WAL mode does all of that with
the standard library only; every write is one transaction, durable when it returns.

One row per report (``reports``)::

    id           SQLite's rowid: the capture's writer inserts each report once, so one report, one row
    kind         private | opendata      (which PCM endpoint it goes to)
    day          its Brasília calendar day (YYYY-MM-DD): the delivery deadline is 08:00 the next day
    role, endpoint, method, status_code, process_ms, ts (unix seconds of its ``timestamp``),
    interaction_id, client_org, server_org, correlation_id, info (additionalInfo as JSON),
    uri_prefix, ss_id            the §5 fields; the JSON body is built from them when sent
    state        pending → delivered        or   pending → held (a 4xx that retrying cannot fix)
    result, message, result_id, delivered_at          the PCM's answer for this report
    error        why a report is held (HTTP status and the PCM's message)

The fields are columns, not a ready JSON body, and the capturing service's writer thread does
as little as possible per report (it shares the GIL, and the pod's CPU, with the requests): each of
its writes is one row of ``staged`` holding the whole batch of rows, pickled (SQLite's cost is per
row inserted: ~4 µs a report as rows, ~0.4 µs as one batch). The sender process moves them into
``reports`` (:meth:`ReportStore.promote`), where they are indexed, and builds the bodies
(:func:`report_json`). A batch is read back with an unpickler that refuses every class and
function, so it can only give strings, numbers, ``None`` and tuples; one that cannot be read stays
where it is, reported, and the others move on. (``incoming``, one row a report, is where earlier
versions staged: what it holds is promoted too.)

Idempotency: a report leaves ``pending`` only when the PCM's answer for it is stored (by id, in
the same transaction for the whole batch); a sender killed in between leaves it pending, so it
is sent again (the PCM may see it twice) and is still one row and one count here. Only one
sender works on a store at a time (:mod:`.sender`), so reading a batch needs no lease. The PCM
itself pairs reports on ``fapiInteractionId`` and role.

Bounds: at most ``max_reports`` rows. Delivered reports older than ``retention_days`` are
pruned first; if the store is still full, new reports are refused and the caller counts
them (``ofsre_pcm_reports_dropped_total{reason="store_full"}``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ofsre.instrumentation._config import DATA_DIR
from ofsre.instrumentation.config import PATH, Var

__all__ = ["ReportStore", "Row", "BRT", "brasilia_day", "deadline_of", "KINDS", "STATES", "RESULTS",
           "default_store_path", "report_json", "utc_iso", "COLUMNS", "STORE"]

STORE = Var("OFSRE_PCM_STORE", PATH, None, reader="PCM capture, sender and `ofsre pcm`",
            shown="`$OFSRE_DATA_DIR/pcm/reports.db`", doc="the PCM report store (one SQLite file per host)",
            logger="ofsre.exporters.pcm")

# Brasília time. Brazil has had no daylight saving time since 2019 (Decree 9,772/2019), so a
# fixed UTC-3 is exact and needs no time-zone database on the machine.
BRT = timezone(timedelta(hours=-3), "BRT")
KINDS = ("private", "opendata")
STATES = ("pending", "delivered", "held")
RESULTS = ("ACCEPTED", "DISCARDED", "PAIRED_INCONSISTENT", "UNPAIRED", "SINGLE")
DEADLINE_HOUR = 8  # reports of a day are due by 08:00 of the next day, Brasília time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    role           TEXT NOT NULL,
    day            TEXT NOT NULL,
    ts             REAL NOT NULL,
    endpoint       TEXT NOT NULL,
    method         TEXT NOT NULL,
    status_code    INTEGER NOT NULL,
    process_ms     INTEGER NOT NULL,
    interaction_id TEXT NOT NULL,
    client_org     TEXT,
    server_org     TEXT NOT NULL,
    correlation_id TEXT,
    info           TEXT,
    uri_prefix     TEXT,
    ss_id          TEXT,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    result       TEXT,
    message      TEXT,
    result_id    TEXT,
    delivered_at REAL,
    error        TEXT
);
-- Partial indexes: a report is in the queue index only while pending (delivering it is one index
-- delete, not a move), in the held index only while held.
CREATE INDEX IF NOT EXISTS reports_pending ON reports (kind, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS reports_held ON reports (id) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS reports_day ON reports (day, role, state, result);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
-- Where the capturing services write: one row a write, its reports' rows (COLUMNS) pickled in
-- `data`, their count per kind, the oldest one's time. The sender moves them to `reports`.
CREATE TABLE IF NOT EXISTS staged (
    id INTEGER PRIMARY KEY, private INTEGER NOT NULL, opendata INTEGER NOT NULL, first_ts REAL NOT NULL,
    data BLOB NOT NULL
);
-- Where earlier versions staged, one row a report: still promoted, no longer written.
CREATE TABLE IF NOT EXISTS incoming (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, role TEXT NOT NULL, day TEXT NOT NULL, ts REAL NOT NULL,
    endpoint TEXT NOT NULL, method TEXT NOT NULL, status_code INTEGER NOT NULL, process_ms INTEGER NOT NULL,
    interaction_id TEXT NOT NULL, client_org TEXT, server_org TEXT NOT NULL, correlation_id TEXT, info TEXT,
    uri_prefix TEXT, ss_id TEXT
);
"""
# The columns a new report is inserted with, in this order (the capture's writer builds these tuples).
COLUMNS = ("kind", "role", "day", "ts", "endpoint", "method", "status_code", "process_ms", "interaction_id",
           "client_org", "server_org", "correlation_id", "info", "uri_prefix", "ss_id")
_SENT = ("role", "endpoint", "method", "status_code", "process_ms", "ts", "interaction_id", "client_org",
         "server_org", "correlation_id", "info", "uri_prefix", "ss_id")
_INSERT = f"INSERT INTO reports ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
PROMOTE_ROWS = 20_000   # reports moved by one of promote()'s transactions (~0.1 s at ~4 µs a row)
_PICKLE_PROTOCOL = 4   # read by every Python since 3.4: a sender on another version still reads a batch
_log = logging.getLogger("ofsre.exporters.pcm")


class _DataOnly(pickle.Unpickler):
    """An unpickler that builds no class and calls no function: strings, numbers, ``None``, tuples,
    lists and dicts only. A store file written by someone else cannot run code in the sender."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a staged batch holds {module}.{name}, not just data")


def _read_batch(data: bytes) -> list[tuple[Any, ...]]:
    """The rows of one staged batch; ValueError (or UnpicklingError) unless it is a list of
    :data:`COLUMNS`-long tuples."""
    rows = _DataOnly(io.BytesIO(data)).load()
    if type(rows) is not list or not all(type(row) is tuple and len(row) == len(COLUMNS) for row in rows):
        raise ValueError("a staged batch is not a list of report rows")
    return rows
try:  # the C string encoder json.dumps uses: a JSON string literal, escaped, quotes included
    from json.encoder import c_encode_basestring as _string  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython always has it
    from json.encoder import py_encode_basestring as _string
_string = _string or json.encoder.py_encode_basestring


def report_json(role: str, endpoint: str, method: str, status: int, process_ms: int, ts: float, iid: str,
                client_org: str | None, server_org: str, correlation: str | None, info: str | None,
                prefix: str | None, ss_id: str | None) -> str:
    """The §5 JSON document of one report (what the PCM receives), from the stored columns."""
    parts = ['{"fapiInteractionId":', _string(iid), ',"endpoint":', _string(endpoint), ',"statusCode":',
             str(int(status)), ',"httpMethod":', _string(method)]
    if client_org is not None:   # open data: anonymous caller (additionalInfo.clientIp instead)
        parts += [',"clientOrgId":', _string(client_org)]
    parts += [',"serverOrgId":', _string(server_org), ',"timestamp":', _string(utc_iso(ts)),
              ',"processTimespan":', str(int(process_ms)), ',"role":', _string(role)]
    if correlation:
        parts += [',"correlationId":', _string(correlation)]
    if prefix is not None:
        parts += [',"endpointUriPrefix":', _string(prefix)]
    if ss_id:
        parts += [',"clientSSId":', _string(ss_id)]
    if info:
        parts += [',"additionalInfo":', info]
    parts.append("}")
    return "".join(parts)


def default_store_path() -> Path:
    """``$OFSRE_PCM_STORE``, else ``$OFSRE_DATA_DIR/pcm/reports.db`` (``var/`` when unset)."""
    explicit: Path | None = STORE.from_env()
    return explicit if explicit is not None else DATA_DIR.from_env() / "pcm" / "reports.db"


def brasilia_day(ts: float) -> str:
    """The Brasília calendar day (YYYY-MM-DD) of a unix time."""
    return datetime.fromtimestamp(ts, BRT).strftime("%Y-%m-%d")


def deadline_of(day: str) -> float:
    """Unix time of the delivery deadline of ``day``'s reports: 08:00 Brasília the next day."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=BRT)
    return (start + timedelta(days=1, hours=DEADLINE_HOUR)).timestamp()


@dataclass(frozen=True, slots=True)
class Row:
    """What ``ofsre pcm report`` needs of one stored report."""

    endpoint: str
    method: str
    status_code: int
    ts: float
    process_ms: int
    result: str | None
    role: str


class ReportStore:
    """A handle on the store file; one per process, thread-safe (one connection, one lock).

    Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, max_reports: int = 5_000_000,
                 retention_days: float = 40.0, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_reports = max_reports
        self.retention_days = retention_days
        self._lock = threading.Lock()
        # check_same_thread=False: the lock serialises use; the capture's writer thread and a
        # sender thread may share a handle.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")   # readers never block the writers
        self._db.execute("PRAGMA synchronous=FULL")   # a committed report survives power loss
        self._db.executescript(_SCHEMA)
        with self._tx() as db:   # the row count lives in `meta` (count(*) is a scan of the whole table)
            db.execute("INSERT OR IGNORE INTO meta (key, value)"
                       " SELECT 'rows', (SELECT count(*) FROM reports) + (SELECT count(*) FROM incoming)"
                       " + (SELECT coalesce(sum(private + opendata), 0) FROM staged)")
        self._unreadable: set[int] = set()   # staged batches that could not be read: reported once

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: take the write lock up front, no upgrade deadlock)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- capture side ------------------------------------------------------------------------

    def stage(self, reports: Sequence[tuple[Any, ...]]) -> int:
        """The capture's write: reports durably in ``staged`` (one row for all of them), one transaction.

        Each item holds the :data:`COLUMNS` values (strings, numbers, ``None``). Returns how many were
        stored; fewer than given: the store is full (the caller counts the rest as dropped).
        :meth:`promote` (the sender) moves them into ``reports``.
        """
        if not reports:
            return 0
        with self._tx() as db:
            accepted = self._room(db, reports)
            if accepted:
                private = sum(1 for row in accepted if row[0] == "private")
                db.execute("INSERT INTO staged (private, opendata, first_ts, data) VALUES (?, ?, ?, ?)",
                           (private, len(accepted) - private, min(row[3] for row in accepted),
                            pickle.dumps(accepted, _PICKLE_PROTOCOL)))
                self._count(db, len(accepted))
        return len(accepted)

    def promote(self) -> int:
        """Move staged reports into ``reports`` (indexed, queryable, sendable); returns how many.

        The sender calls it before each batch, the CLI before it reads. A report is in exactly one
        of the tables at any time: each move is one transaction, of about :data:`PROMOTE_ROWS` rows
        at most so that the capturing services' writes wait no longer than that. A staged batch that
        cannot be read (or whose rows the table refuses) is left in ``staged`` and logged once (its
        reports stay counted as unsent); the others move on.
        """
        with self._lock:   # a look first: the write lock only when there is something to move
            legacy = self._db.execute("SELECT 1 FROM incoming LIMIT 1").fetchone() is not None
            waiting = {batch_id for batch_id, in self._db.execute("SELECT id FROM staged")}
        moved = 0
        if legacy:   # staged by an earlier version, one row a report
            columns = ", ".join(COLUMNS)
            with self._tx() as db:
                moved += db.execute(f"INSERT INTO reports ({columns}) SELECT {columns} FROM incoming "
                                    "ORDER BY id").rowcount
                db.execute("DELETE FROM incoming")
        if waiting <= self._unreadable:
            return moved
        after = 0   # the id after which staged batches are still to move
        while True:
            with self._tx() as db:
                batches = db.execute("SELECT id, private + opendata FROM staged WHERE id > ? ORDER BY id",
                                     (after,)).fetchall()
                chosen: list[int] = []
                count = 0
                for batch_id, size in batches:
                    if chosen and count + size > PROMOTE_ROWS:
                        break
                    chosen.append(batch_id)
                    count += size
                for batch_id in chosen:
                    after = batch_id
                    moved += self._move(db, batch_id)
            if not chosen or len(chosen) == len(batches):
                return moved

    def _move(self, db: sqlite3.Connection, batch_id: int) -> int:
        """Move one staged batch into ``reports`` (inside a transaction); how many reports moved."""
        data = db.execute("SELECT data FROM staged WHERE id = ?", (batch_id,)).fetchone()[0]
        db.execute("SAVEPOINT batch")
        try:
            rows = _read_batch(data)
            db.executemany(_INSERT, rows)
        except (sqlite3.OperationalError, MemoryError):   # the database or the machine: try again later
            db.execute("ROLLBACK TO batch")
            db.execute("RELEASE batch")
            raise
        except Exception as exc:  # noqa: BLE001 - the batch itself: keep it, move the others
            db.execute("ROLLBACK TO batch")
            db.execute("RELEASE batch")
            if batch_id not in self._unreadable:
                self._unreadable.add(batch_id)
                _log.error("ofsre pcm: staged batch %d in %s cannot be moved (%s: %s); it is kept there "
                           "and its reports stay unsent", batch_id, self.path, type(exc).__name__, exc)
            return 0
        db.execute("DELETE FROM staged WHERE id = ?", (batch_id,))
        db.execute("RELEASE batch")
        return len(rows)

    def add(self, reports: Sequence[tuple[Any, ...]]) -> range:
        """Store reports straight into ``reports`` (tests, imports); the ids given to those stored, in order.

        Fewer ids than reports: the store is full.
        """
        if not reports:
            return range(0)
        with self._tx() as db:
            accepted = self._room(db, reports)
            db.executemany(_INSERT, accepted)
            # Under BEGIN IMMEDIATE nobody else inserts: the new rowids are consecutive.
            last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            self._count(db, len(accepted))
        return range(last - len(accepted) + 1, last + 1) if accepted else range(0)

    def _room(self, db: sqlite3.Connection, reports: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The reports that fit under ``max_reports`` (old delivered ones pruned first if needed)."""
        rows = db.execute("SELECT value FROM meta WHERE key = 'rows'").fetchone()[0]
        if self.max_reports - rows < len(reports):
            pruned = self._prune(db)
            if pruned:
                self._count(db, -pruned)
                rows -= pruned
        return list(reports[:max(0, self.max_reports - rows)])

    @staticmethod
    def _count(db: sqlite3.Connection, added: int) -> None:
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'rows'", (added,))

    def _prune(self, db: sqlite3.Connection) -> int:
        """Delete delivered reports older than the retention; return how many."""
        cutoff = brasilia_day(time.time() - self.retention_days * 86400)
        return db.execute("DELETE FROM reports WHERE day < ? AND state = 'delivered'", (cutoff,)).rowcount

    # --- sender side -------------------------------------------------------------------------

    def oldest_pending_kind(self) -> str | None:
        """The kind whose oldest pending report is the oldest (deliver the most urgent first)."""
        with self._lock:
            found = [(self._db.execute("SELECT min(id) FROM reports WHERE state = 'pending' AND kind = ?",
                                       (kind,)).fetchone()[0], kind) for kind in KINDS]
        found = [f for f in found if f[0] is not None]
        return min(found)[1] if found else None

    def pending(self, kind: str, limit: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` pending reports of ``kind`` (insertion order) as ``[(id, JSON body)]``.

        Nothing changes in the store until :meth:`deliver` or :meth:`hold`: the one sender of the
        store reads, sends, then records the answer.
        """
        with self._lock:
            rows = self._db.execute(f"SELECT id, {', '.join(_SENT)} FROM reports WHERE state = "
                                    f"'pending' AND kind = ? ORDER BY id LIMIT ?", (kind, limit)).fetchall()
        return [(r[0], report_json(*r[1:])) for r in rows]

    def deliver(self, results: Iterable[tuple[str, str | None, str | None, int]],
                now: float | None = None) -> None:
        """Store the PCM's answers: ``(result, message, result_id, id)`` per report; state ``delivered``."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.executemany("UPDATE reports SET state = 'delivered', attempts = attempts + 1, "
                           f"result = ?, message = ?, result_id = ?, delivered_at = {now!r}, error = NULL "
                           "WHERE id = ?", results)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_delivery', ?)", (now,))

    def hold(self, ids: Iterable[int], error: str) -> None:
        """Keep reports the PCM refused for good (400/401/403/406/415) out of the queue, with why."""
        with self._tx() as db:
            db.executemany("UPDATE reports SET state = 'held', attempts = attempts + 1, error "
                           "= ? WHERE id = ?",
                           [(error, i) for i in ids])

    def requeue_held(self) -> int:
        """Held reports back to ``pending`` (after the cause was fixed); returns how many."""
        with self._tx() as db:
            return db.execute("UPDATE reports SET state = 'pending', error = NULL "
                              "WHERE state = 'held'").rowcount

    # --- queries -----------------------------------------------------------------------------

    def counts_by_state(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM reports GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def backlog(self) -> dict[str, Any]:
        """Unsent reports (pending) per kind, held reports, oldest undelivered time, last delivery."""
        with self._lock:
            db = self._db
            per_kind = {kind: db.execute("SELECT count(*) FROM reports WHERE state = 'pending' AND kind = ?",
                                         (kind,)).fetchone()[0] for kind in KINDS}
            for kind, count in db.execute("SELECT kind, count(*) FROM incoming GROUP BY kind").fetchall():
                per_kind[kind] = per_kind.get(kind, 0) + count   # staged, not yet moved by the sender
            private, opendata = db.execute("SELECT coalesce(sum(private), 0), coalesce(sum(opendata), 0)"
                                           " FROM staged").fetchone()
            per_kind["private"] += private
            per_kind["opendata"] += opendata
            oldest_ids = [db.execute("SELECT min(id) FROM reports WHERE state = 'pending' AND kind = ?",
                                     (kind,)).fetchone()[0] for kind in KINDS]
            oldest_ids.append(db.execute("SELECT min(id) FROM reports WHERE state = 'held'").fetchone()[0])
            times = [db.execute("SELECT ts FROM reports WHERE id = ?", (i,)).fetchone()[0]
                     for i in oldest_ids if i is not None]
            for staged in (db.execute("SELECT ts FROM incoming ORDER BY id LIMIT 1").fetchone(),
                           db.execute("SELECT min(first_ts) FROM staged").fetchone()):
                if staged and staged[0] is not None:
                    times.append(staged[0])
            oldest = min(times) if times else None
            held = db.execute("SELECT count(*) FROM reports WHERE state = 'held'").fetchone()[0]
            found = db.execute("SELECT value FROM meta WHERE key = 'last_delivery'").fetchone()
            last = found[0] if found else None
        return {"unsent": {kind: per_kind.get(kind, 0) for kind in KINDS}, "held": held,
                "oldest_unsent_ts": oldest, "last_delivery_ts": last}

    def day_status_counts(self, day: str) -> dict[str, int]:
        """``day``'s reports by PCM result; unsent ones as PENDING, held ones as HELD."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CASE WHEN state = 'delivered' THEN coalesce(result, 'UNKNOWN')"
                " WHEN state = 'held' THEN 'HELD' ELSE 'PENDING' END AS s, count(*)"
                " FROM reports WHERE day = ? GROUP BY s", (day,)).fetchall()
        return {name: 0 for name in (*RESULTS, "PENDING", "HELD")} | dict(rows)

    def rows(self, days: Sequence[str], role: str | None = "SERVER") -> Iterator[Row]:
        """Every report of ``days`` (Brasília), optionally of one role, for the compliance figures."""
        marks = ",".join("?" * len(days))
        sql = (f"SELECT endpoint, method, status_code, ts, process_ms, result, role FROM reports"
               f" WHERE day IN ({marks})")
        params: list[Any] = list(days)
        if role:
            sql += " AND role = ?"
            params.append(role)
        with self._lock:
            fetched = self._db.execute(sql, params).fetchall()
        for r in fetched:
            yield Row(*r)

    def results(self, *, day: str | None = None, result: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Stored reports with their PCM answer (newest first), for ``ofsre pcm results``."""
        sql = ("SELECT id, kind, role, endpoint, status_code, ts, state, result, message, "
               "error, interaction_id FROM reports WHERE 1=1")
        params: list[Any] = []
        if day:
            sql += " AND day = ?"
            params.append(day)
        if result:
            sql += (" AND (result = ? OR (? = 'HELD' AND state = 'held') OR (? = 'PENDING' AND "
                    "state = 'pending'))")
            params += [result, result, result]
        sql += " ORDER BY ts DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            fetched = self._db.execute(sql, params).fetchall()
        names = ("id", "kind", "role", "endpoint", "statusCode", "ts", "state", "result", "message", "error",
                 "fapiInteractionId")
        return [dict(zip(names, r, strict=True)) for r in fetched]

    def get(self, report_id: int) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute("SELECT * FROM reports WHERE id = ?", (report_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, row, strict=True)) if row else None


_last_second: tuple[int, str] = (-1, "")   # (second, its text): replaced whole, so threads never see half


def utc_iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, as the PCM wants timestamps: ``2026-12-01T22:45:01.123Z``."""
    global _last_second
    seconds, ms = divmod(int(ts * 1000), 1000)
    cached, text = _last_second
    if cached != seconds:   # reports come in time order: most share the previous one's second
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    return f"{text}.{ms:03d}Z"
