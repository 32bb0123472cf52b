"""The one shipping core behind every ofsre log handler: buffer, batcher, retry, spool, self-metrics.

A backend (``loki``, ``datadog``, ``elastic``) supplies four things (:class:`Backend`): how
one record is encoded (on the worker thread), how a batch becomes a request body,
where it goes, and what an answer means. Everything else lives here, once:

* **app thread** (:meth:`ShippingHandler.emit`): *capture* the record (:func:`._capture.capture`:
  the formatted message, the trace/span/interaction ids — contextvars the worker cannot
  see —, the exception text and a snapshot of mutable extras) and put it in the bounded
  :class:`~._buffer.RecordBuffer` with an estimated size. No redaction, no JSON, no I/O, no
  waiting (unless ``overflow="block"``, or a full buffer with a spool that is moving it to disk):
  about 4 µs of CPU above a bare logging call.
* **worker thread** (``ofsre-log-shipper-<backend>``, daemon): *encodes* each captured record
  (:meth:`Shipper.encode`: the redacted fields of :func:`ofsre.instrumentation.logs.record_fields`,
  then the backend's serialisation, truncation to the per-record limit) — so only redacted,
  encoded records reach the network or the spool —, waits until a batch is full (records
  or bytes) or ``batch_wait`` passed, gzips it, POSTs it, and on failure retries
  with exponential backoff and full jitter, never before a ``Retry-After``; 429, 408, 5xx and
  connection errors are retried, any other 4xx drops the batch (counted) and moves on.
  With ``spool_dir`` every batch is first appended to disk (:mod:`._spool`) and acknowledged
  after delivery, so a killed process's records are sent by its successor.
* **accounting**: every record that entered is eventually delivered or dropped with a reason
  (:data:`DROP_REASONS`), counted in ``ofsre_log_records_dropped_total{backend,reason}``.
* **lifecycle**: ``flush(timeout)``, ``close(timeout)``, a flush at interpreter exit, and
  ``os.register_at_fork``: a forked child starts with an empty buffer and its own thread,
  so the parent's records are never sent twice.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation._config import SERVICE, resolve_settings
from ofsre.instrumentation.logs import record_fields
from ofsre.instrumentation.metrics import count_telemetry_error, counter, gauge, histogram

from ._buffer import Entry, RecordBuffer
from ._capture import Captured, capture
from ._options import BODY_MARGIN, SHIPPER_PROCESS, BackendLimits, ShipperOptions, resolve_options
from ._spool import Position, Spool
from ._transport import (
    Reply,
    Transport,
    TransportError,
    backoff_delay,
    is_retryable,
    mark_shipper_thread,
    retry_after_seconds,
)
from ._transport import _local as _thread_flag

if TYPE_CHECKING:
    from ._process import ProcessShipper

__all__ = ["Backend", "HttpBackend", "Outcome", "Shipper", "ShippingHandler", "Entry", "BackendLimits",
           "DROP_REASONS", "BATCH_OUTCOMES", "status_outcome", "resolve_identity",
           "unknown_service_name"]

_log = logging.getLogger("ofsre.exporters")

DROP_REASONS = (
    "buffer_full",        # memory buffer full (drop_newest / drop_oldest / block timed out)
    "too_large",          # one record above the backend's per-record limit even after truncation
    "too_old",            # older than the backend accepts (Datadog 18 h, Loki 7 d) when sent
    "rejected",           # the backend refused it for good (a 4xx other than 408/429)
    "retries_exhausted",  # still failing after max_retry_time
    "shutdown",           # still unsent when close()/exit timed out, and no spool to keep it
    "closed",             # logged after close()
    "shipper_thread",     # logged from the shipper's own thread (HTTP client debug logs…)
    "unformattable",      # the record could not be formatted (bad %-arguments)
    "spool_corrupt",      # a damaged region of the spool (one count per region)
    "spool_error",        # the spool could not be written (disk full, I/O error)
)
BATCH_OUTCOMES = ("ok", "partial", "rejected", "throttled", "server_error", "network_error")
_GZIP_LEVEL = 1     # logs compress ~10x at level 1; higher levels cost the worker CPU for little gain
_REPORT_EVERY = 60.0


# --- what a backend provides --------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What one request achieved, per record. ``retry`` holds indexes into the batch sent."""

    kind: str                                 # one of BATCH_OUTCOMES
    delivered: int = 0
    rejected: int = 0
    retry: Sequence[int] = ()
    retry_after: float | None = None
    detail: str = ""


def status_outcome(reply: Reply, count: int) -> Outcome:
    """The outcome of a request whose records all share its HTTP status (Loki, Datadog)."""
    if 200 <= reply.status < 300:
        return Outcome("ok", delivered=count)
    detail = f"HTTP {reply.status}: {reply.content[:300].decode('utf-8', 'replace')}"
    if is_retryable(reply.status):
        return Outcome("throttled" if reply.status == 429 else "server_error", retry=range(count),
                       retry_after=retry_after_seconds(reply.headers.get("retry-after")), detail=detail)
    return Outcome("rejected", rejected=count, detail=detail)


class Backend(Protocol):
    name: str                     # the ``backend`` label of the self-metrics
    limits: BackendLimits
    url: str
    headers: Mapping[str, str]    # request headers (auth, content type); the core adds Content-Encoding

    def encode(self, fields: dict[str, Any], record: logging.LogRecord) -> Entry:
        """One record (already redacted ``fields``) as the backend wants it. Runs on the worker thread.

        ``record`` is a :class:`~._capture.Captured` copy: its message is formatted and its
        ``exc_info`` holds only the exception type.
        """

    def body(self, entries: Sequence[Entry]) -> bytes:
        """The uncompressed request body for a batch."""

    def outcome(self, reply: Reply, entries: Sequence[Entry]) -> Outcome:
        """What the backend's answer means for each record of the batch."""


class HttpBackend:
    """Base for backends whose answer is all-or-nothing per request."""

    name = ""
    limits: BackendLimits
    url = ""
    headers: Mapping[str, str] = {}

    def outcome(self, reply: Reply, entries: Sequence[Entry]) -> Outcome:
        return status_outcome(reply, len(entries))


# --- self-metrics -------------------------------------------------------------------------------

class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Metrics:
    """The shipper's prometheus children, created once (every reason and outcome shows from zero)."""

    def __init__(self, backend: str, registry: CollectorRegistry | None) -> None:
        self.shipped = counter(semconv.LOG_RECORDS_SHIPPED, registry).labels(backend=backend)
        self.retried = counter(semconv.LOG_RECORDS_RETRIED, registry).labels(backend=backend)
        self.depth = gauge(semconv.LOG_QUEUE_DEPTH, registry).labels(backend=backend)
        # A histogram child; the shipper process's child keeps the durations for its next report instead.
        self.duration: Observer = histogram(semconv.LOG_SEND_DURATION, registry).labels(backend=backend)
        dropped = counter(semconv.LOG_RECORDS_DROPPED, registry)
        self.dropped = {reason: dropped.labels(backend=backend, reason=reason) for reason in DROP_REASONS}
        batches = counter(semconv.LOG_BATCHES, registry)
        self.batches = {kind: batches.labels(backend=backend, outcome=kind) for kind in BATCH_OUTCOMES}


_TRUNCATABLE = ("message", "exception", "stack")
_TRUNCATED = " …[truncated]"


def _shrink(fields: dict[str, Any], excess: int) -> bool:
    """Cut the longest text field by a bit more than ``excess`` characters; False if nothing can shrink."""
    texts = [k for k in _TRUNCATABLE if isinstance(fields.get(k), str) and fields[k]]
    if not texts:
        return False
    key = max(texts, key=lambda k: len(fields[k]))
    text = fields[key]
    keep = max(0, len(text) - excess - 256)
    fields[key] = text[:keep] + _TRUNCATED
    return keep > 0


# --- the shipper --------------------------------------------------------------------------------

def _call_weak(ref: Callable[[], Callable[[], None] | None]) -> None:
    method = ref()
    if method is not None:
        method()


class Shipper:
    """Buffer + worker thread + retry + optional spool for one backend. Used by :class:`ShippingHandler`."""

    def __init__(self, backend: Backend, options: ShipperOptions,
                 registry: CollectorRegistry | None = REGISTRY,
                 *, service: str, env: str, version: str) -> None:
        self.backend, self.options = backend, options
        self._identity = {"service": service, "env": env, "version": version}
        self.registry = registry   # the self-metrics' and the swallowed errors' registry
        self.metrics = _Metrics(backend.name, registry)
        self._rng = random.Random()
        self._closed = False
        self._last_report: dict[str, float] = {}
        self._setup()
        # A weak method: the hook must not keep a closed shipper alive for the process's lifetime.
        weak = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: _call_weak(weak))
        ref = weakref.ref(self)
        self._atexit_hook = lambda: _close_at_exit(ref)
        atexit.register(self._atexit_hook)

    def _setup(self) -> None:
        o = self.options
        self._buffer = RecordBuffer(
            max_records=o.queue_records, max_bytes=o.queue_bytes, policy=o.overflow,
            block_timeout=o.block_timeout, batch_records=o.batch_records, batch_bytes=o.batch_bytes,
            encode=self.encode)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._spool: Spool | None = None
        self._transport = Transport(o.request_timeout)   # no I/O yet; a bad setting fails here
        self._thread = threading.Thread(target=self._run, name=f"ofsre-log-shipper-{self.backend.name}",
                                        daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The child inherits the parent's buffer (the parent will send those records), a worker
        # thread that no longer exists, locks that may be held, the parent's sockets and spool.
        # Start over with fresh ones and leave the parent's untouched.
        if self._spool is not None:
            self._spool.abandon()
        # The parent's HTTP client is dropped, not closed: closing would shut sockets it still uses.
        if not self._closed:
            self._setup()

    # --- application side -------------------------------------------------------------------

    def submit(self, record: Captured) -> None:
        """Enqueue one captured record (app thread). Never raises, never does I/O."""
        accepted, evicted = self._buffer.put(record)
        if evicted:
            self.drop("buffer_full", evicted)
        if not accepted:
            self.drop("closed" if self._closed else "buffer_full")

    def submit_many(self, records: Sequence[Captured | Entry]) -> None:
        """:meth:`submit` each of ``records``, in order (the shipper process puts a message's entries)."""
        refused, evicted = self._buffer.put_many(records)
        if evicted:
            self.drop("buffer_full", evicted)
        if refused:
            self.drop("closed" if self._closed else "buffer_full", refused)

    def drop(self, reason: str, count: int = 1) -> None:
        self.metrics.dropped[reason].inc(count)
        self._count("dropped_" + reason, count)

    def _count(self, name: str, count: int) -> None:
        with self._counts_lock:
            self._counts[name] += count

    def stats(self) -> dict[str, int]:
        """This shipper's counters since it started (or since fork): for tests and debugging."""
        with self._counts_lock:
            counts = dict(self._counts)
        counts.update(accepted=self._buffer.accepted, settled=self._buffer.settled, queued=len(self._buffer),
                      spooled=self._spool.pending if self._spool is not None else 0)
        return counts

    # --- encoding (worker thread, called by the buffer) -----------------------------------

    def encode(self, record: Captured) -> Entry | None:
        """The redacted, encoded entry for ``record``; None when it is dropped (counted here)."""
        try:
            entry = self._encode(record)
        except Exception:  # noqa: BLE001 - one bad record must not stop the others
            count_telemetry_error("exporters", self.registry)
            self.drop("unformattable")
            return None
        if entry is None:
            self.drop("too_large")
        return entry

    def _encode(self, record: Captured) -> Entry | None:
        fields = record_fields(record, **self._identity)   # LGPD redaction happens here
        entry = self.backend.encode(fields, record)
        limit = self.backend.limits.max_record_bytes
        for _ in range(4):
            if entry.size <= limit:
                return entry
            if not _shrink(fields, entry.size - limit):
                break
            entry = self.backend.encode(fields, record)
        return entry if entry.size <= limit else None

    # --- lifecycle --------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True when it was delivered or dropped within ``timeout`` s."""
        if threading.current_thread() is self._thread:
            return False  # the worker must never wait for itself
        if self._stop.is_set():  # closed: nothing will move any more
            return self._buffer.settled >= self._buffer.accepted
        deadline = time.monotonic() + (self.options.flush_timeout if timeout is None else timeout)
        self._ready.wait(max(0.0, deadline - time.monotonic()))  # a spool's leftovers count too
        target = self._buffer.request_flush()
        return self._buffer.wait_settled(target, max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new records, flush for up to ``timeout`` s, stop the worker. Idempotent."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit_hook)
        deadline = time.monotonic() + (self.options.flush_timeout if timeout is None else timeout)
        self._buffer.close()
        delivered = self.flush(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self._buffer.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return delivered

    # --- worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        mark_shipper_thread()
        if self.options.spool_dir:   # opened on the worker: scanning a big spool must not delay the app
            self._open_spool(self.options.spool_dir)
        self._ready.set()
        drain = True   # at start, a spool's leftovers from a previous process go at once
        while True:
            try:
                self._deliver_pending(drain)
            except Exception:  # noqa: BLE001 - a bug here must not kill the shipper for good
                count_telemetry_error("exporters", self.registry)
                _log.exception("ofsre log shipper (%s): unexpected error", self.backend.name)
                self._stop.wait(1.0)
            if self._buffer.stopping:
                break
            drain = self._buffer.wait_for_batch(self.options.batch_wait)
        self._finish()

    def _open_spool(self, spool_dir: str) -> None:
        o = self.options
        try:
            self._spool = Spool.claim(os.path.join(spool_dir, self.backend.name), max_bytes=o.spool_bytes)
        except Exception:  # noqa: BLE001 - an unusable spool must not stop the shipping
            count_telemetry_error("exporters", self.registry)
            _log.exception("ofsre log shipper (%s): spool %s unusable, running without it",
                           self.backend.name, spool_dir)
            return
        self._buffer.add_carried_over(self._spool.pending)
        self._buffer.spill = self._spool.free_bytes() >= o.batch_bytes

    def _deliver_pending(self, drain: bool) -> None:
        """Send what is pending, or until close() gives up waiting.

        Without ``drain`` (a timed or full batch woke the worker) the memory buffer is sent
        as long as full batches remain, and a partial rest waits for its own ``batch_wait``:
        under steady load requests stay full. A spool is always emptied (its records already
        waited their turn in memory).
        """
        sent = 0
        while not self._stop.is_set():
            if self._spool is not None:
                self._intake()
            elif sent and not drain and not self._buffer.batch_ready():
                break
            entries, position = self._next_batch()
            if not entries:
                break
            unsent = self._deliver(entries)
            if unsent and self._spool is not None:
                break  # stopping mid-retry: the batch stays on disk for the next process
            if unsent:
                self.drop("shutdown", len(unsent))
            if self._spool is not None and position is not None:
                self._spool.ack(position, len(entries))
            self._buffer.settle(len(entries))
            self._update_depth()
            sent += 1
        self._update_depth()

    def _next_batch(self) -> tuple[list[Entry], Position | None]:
        o = self.options
        take_bytes = o.batch_bytes - BODY_MARGIN
        if self._spool is None:
            return self._buffer.take(o.batch_records, take_bytes), None
        entries, position = self._spool.read(o.batch_records, take_bytes)
        if self._spool.damaged:
            self.drop("spool_corrupt", self._spool.damaged)
            self._spool.damaged = 0
        return entries, position

    def _intake(self) -> None:
        """Move what the memory buffer holds now to the spool, in batch-sized chunks (one write and
        one fsync each), so producers waiting for room (a burst) resume after the first chunk.

        Leaves the buffer's ``spill`` on while the spool has room for another chunk: until the
        disk is full too, a full memory buffer overflows to disk instead of dropping.
        """
        assert self._spool is not None
        o = self.options
        left = len(self._buffer)   # not what arrives meanwhile: delivery must get its turn
        while left > 0:
            free = self._spool.free_bytes()
            entries = self._buffer.take(min(o.batch_records, left), min(free, o.batch_bytes), strict=True)
            if not entries:
                break
            left -= len(entries)
            try:
                self._spool.append(entries)
            except OSError:
                count_telemetry_error("exporters", self.registry)
                self._report("spool_error", f"spool write failed; {len(entries)} records dropped")
                self.drop("spool_error", len(entries))
                self._buffer.settle(len(entries))
                break
        self._buffer.spill = self._spool.free_bytes() >= o.batch_bytes

    def _deliver(self, entries: list[Entry]) -> list[Entry]:
        """Send one batch until every record is delivered or dropped; return what is left if stopping."""
        o = self.options
        pending = entries
        started = time.monotonic()
        attempt = 0
        while True:
            pending = self._without_too_old(pending)
            if not pending:
                return []
            outcome = self._send(pending)
            self._account(outcome)
            if not outcome.retry:
                return []
            pending = [pending[i] for i in outcome.retry]
            delay = backoff_delay(attempt, o.backoff_initial, o.backoff_max, self._rng)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)  # never earlier than the backend asked
            attempt += 1
            if o.max_retry_time is not None and time.monotonic() - started + delay > o.max_retry_time:
                self._report("retries_exhausted", f"giving up on {len(pending)} records: {outcome.detail}")
                self.drop("retries_exhausted", len(pending))
                return []
            if not self._pause(delay):
                return pending
            self.metrics.retried.inc(len(pending))
            self._count("retried", len(pending))

    def _without_too_old(self, entries: list[Entry]) -> list[Entry]:
        max_age = self.backend.limits.max_record_age
        if max_age is None:
            return entries
        cutoff = time.time() - max_age
        fresh = [e for e in entries if e.created >= cutoff]
        if len(fresh) < len(entries):
            self.drop("too_old", len(entries) - len(fresh))
        return fresh

    def _send(self, entries: list[Entry]) -> Outcome:
        backend = self.backend
        payload = gzip.compress(backend.body(entries), _GZIP_LEVEL, mtime=0)
        headers = {**backend.headers, "Content-Encoding": "gzip"}
        started = time.perf_counter()
        try:
            reply = self._transport.post(backend.url, payload, headers)
        except TransportError as exc:
            return Outcome("network_error", retry=range(len(entries)), detail=str(exc))
        finally:
            self.metrics.duration.observe(time.perf_counter() - started)
        try:
            return backend.outcome(reply, entries)
        except Exception as exc:  # noqa: BLE001 - an unreadable answer: treat like a server error
            count_telemetry_error("exporters", self.registry)
            return Outcome("server_error", retry=range(len(entries)), detail=f"unreadable answer: {exc!r}")

    def _account(self, outcome: Outcome) -> None:
        self.metrics.batches[outcome.kind].inc()
        if outcome.delivered:
            self.metrics.shipped.inc(outcome.delivered)
            self._count("shipped", outcome.delivered)
        if outcome.rejected:
            self.drop("rejected", outcome.rejected)
        if outcome.kind != "ok":
            self._report(outcome.kind, outcome.detail)

    def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` s (moving new records to the spool meanwhile); False if stopping."""
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self._spool is None:
                if self._stop.wait(remaining):
                    return False
                continue
            # With a spool, a burst during the outage must reach the disk before memory is full:
            # woken early by a half-full buffer (or a log call waiting for room).
            self._buffer.wait_for_pressure(min(remaining, self.options.batch_wait))
            if self._stop.is_set():
                return False
            self._intake()
        return not self._stop.is_set()

    def _finish(self) -> None:
        """Worker exit: records still in memory go to the spool if there is room, else are dropped."""
        if self._spool is not None:
            with contextlib.suppress(Exception):
                self._intake()
        left = self._buffer.discard()
        if left:
            self.drop("shutdown", left)
        self._update_depth()
        if self._spool is not None:
            self._spool.close()
        self._transport.close()

    def _update_depth(self) -> None:
        self.metrics.depth.set(len(self._buffer) + (self._spool.pending if self._spool is not None else 0))

    def _report(self, kind: str, detail: str) -> None:
        """A rate-limited warning (logged from the worker thread, so no shipping handler sends it)."""
        now = time.monotonic()
        if now - self._last_report.get(kind, -_REPORT_EVERY) >= _REPORT_EVERY:
            self._last_report[kind] = now
            _log.warning("ofsre log shipper (%s): %s: %s", self.backend.name, kind, detail)


def _close_at_exit(ref: Callable[[], Shipper | None]) -> None:
    shipper = ref()
    if shipper is not None:
        with contextlib.suppress(Exception):
            shipper.close()


# --- the handler ----------------------------------------------------------------------------------

def resolve_identity(service: str | None, env: str | None, version: str | None) -> tuple[str, str, str]:
    """``(service, env, version)`` from arguments, then OFSRE_SERVICE/OTEL_SERVICE_NAME, OFSRE_ENV,
    OFSRE_VERSION.

    The same precedence and defaults as the stdout JSON logs and the tracer (``env`` may be
    empty). With no service name anywhere, the name is ``unknown_service:<process name>``
    (OpenTelemetry's rule for ``service.name``) and a warning says so: a shipper that refused
    to start would lose every log line of a service that merely forgot a variable.
    """
    name = service or SERVICE.from_env() or unknown_service_name()
    settings = resolve_settings(name, version=version, env=env)
    return settings.service, settings.env, settings.version


def unknown_service_name(warn: bool = True) -> str:
    """``unknown_service:<process name>``, as OpenTelemetry names a service nobody named.

    The process name is the script or console entry point (``uvicorn``, ``celery``), else
    the interpreter's executable name.
    """
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    name = f"unknown_service:{script or os.path.basename(sys.executable) or 'python'}"
    if warn:
        _log.warning("ofsre log shipper: no service name (argument, OFSRE_SERVICE or OTEL_SERVICE_NAME); "
                     "shipping as %r", name)
    return name


class ShippingHandler(logging.Handler):
    """Base of the ofsre shipping handlers: a ``logging.Handler`` over a :class:`Shipper`.

    Subclasses build their :class:`Backend` and call ``super().__init__``. ``emit`` is
    thread-safe without the handler lock (the buffer has its own), so ``handle`` skips it.
    ``emit`` only captures the record; the worker thread redacts and encodes it.
    A formatter set on the handler is not used: what is shipped is built from
    :func:`~ofsre.instrumentation.logs.record_fields`, the same fields as the stdout JSON logs.

    ``shipper_process=True`` (or, when the argument is ``None``, ``OFSRE_LOG_SHIPPER_PROCESS=on``) moves
    the worker's work (redaction, encoding, batching, HTTP, spool) to a child process (:mod:`._process`);
    the log call then only captures a frame, and ``handle`` is the shipper's one function
    (:meth:`~._process.ProcessShipper.handler_for`).
    """

    def __init__(self, backend: Backend, *, service: str, env: str, version: str,
                 registry: CollectorRegistry | None = REGISTRY, level: int | str = logging.NOTSET,
                 shipper_process: bool | str | None = None, **options: Any) -> None:
        super().__init__(level)
        self.backend = backend
        self.service, self.env, self.version = service, env, version
        self.options = resolve_options(backend.limits, **options)
        self._capture: Callable[[logging.LogRecord], Any] = capture
        self._shipper: Shipper | ProcessShipper
        if SHIPPER_PROCESS.get(shipper_process):
            from ._process import ALL_ATTRIBUTES, ProcessShipper, frame_capture
            if self.options.overflow != "drop_newest":
                _log.warning("ofsre log shipper (%s): overflow=%r ignored with shipper_process "
                             "(the app thread never waits): drop_newest", backend.name, self.options.overflow)
            self._shipper = ProcessShipper(backend, self.options, registry, _Metrics(backend.name, registry),
                                           identity={"service": service, "env": env, "version": version})
            self._capture = frame_capture(getattr(backend, "record_attributes", ALL_ATTRIBUTES))
            # One function for the whole log call (an instance attribute wins over the method).
            self.__dict__["handle"] = self._shipper.handler_for(self, self._capture)
        else:
            self._shipper = Shipper(backend, self.options, registry, service=service, env=env,
                                    version=version)

    def handle(self, record: logging.LogRecord) -> bool:
        if _thread_flag.shipper:   # in_shipper_thread(), inline
            self._shipper.drop("shipper_thread")
            return False
        if self.filters and not self.filter(record):
            return False
        try:   # emit(), inline: one call less on every log call
            captured = self._capture(record)
        except Exception:  # noqa: BLE001 - a log call must never fail the caller
            count_telemetry_error("exporters", self._shipper.registry)
            self._shipper.drop("unformattable")
            return True
        self._shipper.submit(captured)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            captured = self._capture(record)
        except Exception:  # noqa: BLE001 - a log call must never fail the caller
            count_telemetry_error("exporters", self._shipper.registry)
            self._shipper.drop("unformattable")
            return
        self._shipper.submit(captured)

    def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Send everything logged so far; True if done within ``timeout`` s (default ``flush_timeout``)."""
        return self._shipper.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` s, then stop. With a spool, what is left is sent by the next
        process."""
        try:
            self._shipper.close(timeout)
        finally:
            super().close()

    def stats(self) -> dict[str, int]:
        """Counters of this handler's shipper (the same events as the prometheus self-metrics)."""
        return self._shipper.stats()
