"""A shipper process: the redaction, encoding, batching and HTTP of a handler, out of the app's interpreter.

With ``shipper_process=True`` a :class:`~._core.ShippingHandler` keeps only the capture on the
application thread and hands everything else to a child Python process
(``python -m ofsre.exporters._process``, at nice +10) that runs the ordinary :class:`~._core.Shipper`
— the same backends, redaction, retries, spool and per-record limits — on another core, so its CPU
no longer competes for the app's GIL::

    app thread     capture_frame(record) -> bytes: a marshalled tuple of plain values (message, ids,
       │           attributes, a snapshot of the extras); appended under one short lock, bounded by
       │           records and bytes (full: drop_newest, or with a spool a wait for the child's disk);
       │           the whole call is one function
       ▼
    ofsre-log-feeder-<backend>    writes them, a batch at a time, to the child's stdin and
       │                          keeps them until the child reports them settled or spooled
       ▼
    child process   frame_encoder(): the record's redacted, encoded entry (Loki: its line built straight
       │            from the frame; otherwise through the rebuilt record and Shipper.encode()), its
       │            buffer, batches, gzip, HTTP, retries, spool
       │ every 20 ms: (records held durably, records settled, its counters, its send durations)
       │ on its stdout
       ▼
    ofsre-log-reports-<backend>   releases those frames, adds the child's counters to this
                                  process's self-metrics (shipped, retried, dropped{reason}, batches,
                                  telemetry errors) and observes its send durations

No record is lost when the child dies: the frames it had not reported settled are written again,
first, to the next child (started again after a pause that doubles up to 5 s), so a record may be
delivered twice (at least once, like the spool) but never missed. Meanwhile the app keeps
logging into the bounded buffer. Redaction still happens before anything reaches the network or
a disk: the frames travel through a pipe between the two processes only.

With a spool, a full buffer makes the log call wait (at most ``SPILL_TIMEOUT`` s, while a child is
running) for the child to move records to its disk, as the thread shipper does: a burst larger than
memory goes to disk. Limits of this mode: otherwise the overflow policy is always ``drop_newest`` (no
``block``); records logged while no child runs wait in memory; what a killed child counted or timed
after its last report (at most 20 ms of it) is not in this process's self-metrics.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import marshal
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from itertools import islice
from operator import itemgetter
from typing import IO, Any

from opentelemetry.trace import get_current_span as _current_span
from prometheus_client import CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation.context import _interaction_id
from ofsre.instrumentation.logs import STANDARD_ATTRS, build_fields, jsonable
from ofsre.instrumentation.metrics import count_telemetry_error, counter

from ._buffer import SPILL_TIMEOUT, Entry, linger_wait
from ._capture import RECORD_OVERHEAD, Captured

__all__ = ["capture_frame", "frame_capture", "record_of_frame", "frame_encoder", "ProcessShipper",
           "RESTART_MAX", "ALL_ATTRIBUTES"]

_log = logging.getLogger("ofsre.exporters")

# The LogRecord attributes LogRecord.__init__ always sets, in frame order. A backend whose encoding
# reads fewer of them names those in ``record_attributes`` (Loki, Datadog): smaller frames.
ALL_ATTRIBUTES = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
           "created", "msecs", "relativeCreated", "thread", "threadName", "processName", "process")
_INIT_ATTRS = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_EXACT = frozenset((str, int, float, bool, type(None)))
_EXC_FORMATTER = logging.Formatter()
_HEADER = struct.Struct("<I")
_dumps, _loads = marshal.dumps, marshal.loads
# A marshalled (attributes, message, exception type name, exception text, stack, trace id, span id,
# interaction id, extras): see frame_capture().
Frame = bytes


RESTART_MAX = 5.0       # longest pause before starting a child again
_REPORT_EVERY = 0.02    # the child's report period, seconds
_SEND_FRAMES = 8192     # frames per message to the child
_NICENESS = 10          # the shipper process's nice increment
_FEED_FRAMES = 2048     # frames that wake the feeder at once
_FEED_WAIT = 0.02       # longest a frame waits for the feeder otherwise, seconds
# Bytes a frame counts for in the byte bound beyond its own: its object, and about what its encoding
# adds (the thread shipper counts the encoded size).
_FRAME_OVERHEAD = 200
_DURATIONS_KEPT = 10_000   # send durations a child keeps for its next report (one per request)
_ERRORS = "telemetry_errors"   # the report's count of the child's swallowed errors


def _records_message(frames: list[bytes]) -> bytes:
    return _dumps(("records", frames), 2)


def _plain(value: Any) -> Any:
    """``value`` (already JSON-ready) with subclasses of str/int/float made exact, for marshal."""
    kind = type(value)
    if kind in _EXACT:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _context_lookup() -> tuple[Callable[[], Any] | None, str]:
    """OpenTelemetry's current-context ``ContextVar.get`` and the span's key in it, when the runtime
    context is the default one; else ``(None, "")`` and the capture calls ``get_current_span()``."""
    import contextvars

    from opentelemetry import context as otel_context
    from opentelemetry.trace import propagation

    current = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    key = getattr(propagation, "_SPAN_KEY", None)
    if isinstance(current, contextvars.ContextVar) and isinstance(key, str):
        return current.get, key
    return None, ""


_context_get, _SPAN_KEY = _context_lookup()
_LogRecord = logging.LogRecord


def frame_capture(attributes: tuple[str, ...] = ALL_ATTRIBUTES) -> Callable[[logging.LogRecord], bytes]:
    """``capture_frame`` keeping only the LogRecord ``attributes`` a backend reads (all by default)."""
    fields_of = itemgetter(*attributes)
    get_exc = itemgetter("exc_text", "exc_info", "stack_info")

    def capture_frame(record: logging.LogRecord) -> bytes:
        """The record as a frame for the shipper process: what :func:`._capture.capture` keeps, as bytes
        (a marshalled tuple of plain values).

        Bytes are immutable and not tracked by the garbage collector: a burst held in memory while
        the child catches up costs no collection time (a tuple per record did, measurably). Raises
        on a broken record (bad %-arguments).
        """
        attrs = record.__dict__
        plain = type(record) is _LogRecord
        if plain:   # LogRecord.getMessage(), inline
            message = attrs["msg"]
            if type(message) is not str:
                message = str(message)
            args = attrs["args"]
            if args:
                message = message % args
        else:   # a subclass may format its own way
            message = record.getMessage()
        exc_type = None
        exc_text, exc_info, stack = get_exc(attrs) if plain else (record.exc_text, record.exc_info,
                                                                  record.stack_info)
        if exc_info:
            if not exc_text:
                exc_text = record.exc_text = _EXC_FORMATTER.formatException(exc_info)
            if exc_info[0] is not None:
                exc_type = exc_info[0].__name__
        if "trace_id" in attrs:   # set by ofsre.instrumentation.logs.ContextFilter
            trace_id, span_id = attrs["trace_id"], attrs.get("span_id")
            interaction_id = attrs.get("interaction_id")
        else:   # current_log_context(), inline
            span = _context_get().get(_SPAN_KEY) if _context_get is not None else _current_span()
            context = span.get_span_context() if span is not None else None
            interaction_id = _interaction_id.get()
            if context is not None and context.is_valid:
                trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
            else:
                trace_id = span_id = None
        extras = None
        if len(attrs) > _INIT_ATTRS:
            # A plain LogRecord's __init__ attributes come first: only the rest can be extras.
            for key in islice(attrs, _INIT_ATTRS, None) if plain else attrs:
                if key in STANDARD_ATTRS or key[:1] == "_":
                    continue
                value = attrs[key]
                if type(value) not in _EXACT:
                    value = _plain(jsonable(value))   # a snapshot: the caller may mutate the original
                if extras is None:
                    extras = {key: value}
                else:
                    extras[key] = value
        frame = (fields_of(attrs), message, exc_type, exc_text, stack, trace_id, span_id, interaction_id,
                 extras)
        try:
            return _dumps(frame, 2)
        except ValueError:   # an int subclass as levelno, a str subclass as a name…: made exact
            return _dumps(tuple(tuple(map(_plain, item)) if type(item) is tuple else _plain(item)
                                for item in frame), 2)

    return capture_frame


capture_frame = frame_capture()


_exception_types: dict[str, type[BaseException]] = {}


def _exception_type(name: str) -> type[BaseException]:
    """A stand-in class named like the logged exception's (the backends read only its ``__name__``)."""
    kind = _exception_types.get(name)
    if kind is None:
        kind = _exception_types[name] = type(name, (Exception,), {})
    return kind


# What a LogRecord attribute a frame does not carry reads as in the shipper process.
_ABSENT: dict[str, Any] = {"name": "", "levelno": 0, "levelname": "", "pathname": "", "filename": "",
                           "module": "", "lineno": 0, "funcName": "", "created": 0.0, "msecs": 0.0,
                           "relativeCreated": 0.0, "thread": None, "threadName": None, "processName": None,
                           "process": None}


def record_of_frame(frame: bytes, attributes: tuple[str, ...] = ALL_ATTRIBUTES) -> Captured:
    """The :class:`~._capture.Captured` record a frame came from (in the shipper process)."""
    fields, message, exc_type, exc_text, stack_info, trace_id, span_id, interaction_id, extras = _loads(frame)
    attrs: dict[str, Any] = dict(zip(attributes, fields, strict=True))
    if len(attributes) < len(_ABSENT):
        attrs = {**_ABSENT, **attrs}
    attrs["msg"], attrs["args"], attrs["exc_text"], attrs["stack_info"] = message, None, exc_text, stack_info
    attrs["exc_info"] = (_exception_type(exc_type), None, None) if exc_type else None
    attrs["trace_id"], attrs["span_id"], attrs["interaction_id"] = trace_id, span_id, interaction_id
    attrs["taskName"], attrs["_ofsre_size"] = None, RECORD_OVERHEAD + len(frame)
    if extras:
        attrs.update(extras)
        attrs["_ofsre_extras"] = list(extras)
    else:
        attrs["_ofsre_extras"] = ()
    record = Captured.__new__(Captured)
    record.__dict__ = attrs
    return record


# --- child side: from a frame to an entry -------------------------------------------------------

def frame_encoder(shipper: Any, attributes: tuple[str, ...], identity: dict[str, str]
                  ) -> Callable[[bytes], Entry | None]:
    """``frame -> entry`` in the shipper process: what ``shipper.encode(record_of_frame(frame))``
    gives (``None``: dropped and counted), built without the record when the backend encodes from a line.

    A backend with ``encode_line(line, created, level)`` and ``line_omits`` (Loki) gets the line from
    :func:`~ofsre.instrumentation.logs.build_fields` called with the frame's parts, as
    :func:`~ofsre.instrumentation.logs.record_fields` calls it with a record's (no rebuilt LogRecord,
    no timestamp text). A record it cannot take that way (a line above the per-record limit, to
    truncate; an exception without its text; a malformed frame) goes through the record.
    """
    registry = shipper.registry

    def through_record(frame: bytes) -> Entry | None:
        try:
            record = record_of_frame(frame, attributes)
        except Exception:  # noqa: BLE001 - one bad frame must not stop the others
            count_telemetry_error("exporters", registry)
            shipper.drop("unformattable")
            return None
        entry: Entry | None = shipper.encode(record)   # redaction happens here; None: dropped, counted
        return entry

    backend = shipper.backend
    omits = getattr(backend, "line_omits", None)
    encode_line = getattr(backend, "encode_line", None)
    if omits is None or not callable(encode_line):
        return through_record
    try:
        i_name, i_levelname, i_created = (attributes.index(a) for a in ("name", "levelname", "created"))
    except ValueError:   # the frames do not carry what the line needs
        return through_record
    count, limit = len(attributes), backend.limits.max_record_bytes
    identity = {"service": identity["service"], "env": identity["env"], "version": identity["version"]}

    def encode(frame: bytes) -> Entry | None:
        try:
            (attrs, message, exc_type, exc_text, stack, trace_id, span_id, interaction_id,
             extras) = _loads(frame)
            if len(attrs) != count or (exc_type and not exc_text):
                return through_record(frame)
            level = attrs[i_levelname]
            context = {"trace_id": trace_id, "span_id": span_id, "interaction_id": interaction_id}
            fields = build_fields(None, level, attrs[i_name], message, **identity, context=context,
                                  extras=extras.items() if extras else (), exception=exc_text, stack=stack)
            line = {key: value for key, value in fields.items() if key not in omits}
            entry: Entry = encode_line(line, attrs[i_created], level)   # redacted by build_fields
        except Exception:  # noqa: BLE001 - the record path does it, or counts why not
            return through_record(frame)
        return entry if entry.size <= limit else through_record(frame)   # truncation is the record path's

    return encode


def _write_message(out: IO[bytes], payload: bytes) -> None:
    out.write(_HEADER.pack(len(payload)) + payload)
    out.flush()


def _read_message(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    payload = stream.read(length)
    return payload if len(payload) == length else None


# --- app side ----------------------------------------------------------------------------------

class ProcessShipper:
    """The app side of a shipper process: the bounded frame buffer, the feeder and the reports.

    Same interface as :class:`~._core.Shipper` for :class:`~._core.ShippingHandler`: ``submit``,
    ``drop``, ``flush``, ``close``, ``stats``, ``metrics``, ``registry``.
    """

    def __init__(self, backend: Any, options: Any, registry: CollectorRegistry | None, metrics: Any,
                 *, identity: dict[str, str], command: list[str] | None = None) -> None:
        self.backend, self.options, self.registry, self.metrics = backend, options, registry, metrics
        self._config = pickle.dumps((backend, options, identity))   # fails now if the backend cannot go
        self._command = command or [sys.executable, "-m", "ofsre.exporters._process"]
        self._closed = False
        self._max_records, self._max_bytes = options.queue_records, options.queue_bytes
        self._spill = bool(options.spool_dir)   # a full buffer waits for the child's disk, as in a thread
        self._setup()
        from ._core import _call_weak, _close_at_exit
        weak = weakref.WeakMethod(self.after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: _call_weak(weak))
        ref = weakref.ref(self)
        self._atexit_hook = lambda: _close_at_exit(ref)   # type: ignore[arg-type]
        atexit.register(self._atexit_hook)

    def _setup(self) -> None:
        lock = threading.Lock()
        self._lock = lock
        self._wake = threading.Condition(lock)       # the feeder waits here
        self._room = threading.Condition(lock)       # a full buffer's callers wait here (with a spool)
        self._settled_cv = threading.Condition(lock)  # flush() waits here
        self._unsent: list[Frame] = []     # frames not yet written to the current child
        self._inflight: deque[Frame] = deque()   # written to the current child, not yet settled
        self._bytes = 0                    # of both, with RECORD_OVERHEAD each
        # Frames in acceptance order: ``released`` have left memory (the child holds them durably),
        # ``settled`` (<= released) were delivered or dropped: what flush() waits for.
        self.accepted = self.released = self.settled = 0
        self._base = 0   # frames released before the current child got its first one
        self._counts: dict[str, int] = {}
        self._child_counts: dict[str, int] = {}  # the current child's last report
        self._spooled = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._child_dead = True   # none yet: the feeder starts one at once
        self._child_ready = False   # the current child has reported
        self._child_spill = False   # ... that its spool has room
        self._first_start = True    # no child has been ready or failed yet
        self._reader: threading.Thread | None = None
        self._flush_wanted = False
        self._stopping = False
        self.restarts = 0
        self._feeder = threading.Thread(target=self._feed, name=f"ofsre-log-feeder-{self.backend.name}",
                                        daemon=True)
        self._feeder.start()

    def after_fork_in_child(self) -> None:
        """A forked child ships its own records through its own shipper process."""
        child = self._child
        if child is not None:   # our copies of the pipes: the parent's child must see the parent's EOF
            for stream in (child.stdin, child.stdout):
                with contextlib.suppress(Exception):
                    if stream is not None:
                        os.close(stream.fileno())
        if not self._closed:
            self._setup()

    # --- application side ------------------------------------------------------------------

    def submit(self, frame: Frame) -> None:
        size = len(frame) + _FRAME_OVERHEAD
        with self._lock:
            unsent = self._unsent
            if not self._fits(size) and not self._wait_for_room(size):
                refused = "closed" if self._closed else "buffer_full"
            else:
                unsent.append(frame)
                self._bytes += size
                self.accepted += 1
                if len(unsent) == 1 or len(unsent) == _FEED_FRAMES:
                    self._wake.notify()
                return
        self.drop(refused)

    def handler_for(self, handler: logging.Handler,
                    capture: Callable[[logging.LogRecord], Frame]) -> Callable[[logging.LogRecord], bool]:
        """``handler.handle`` for this shipper: ``ShippingHandler.handle`` and :meth:`submit` in one
        function (the log call's whole cost above stdlib logging is this function)."""
        from ._transport import _local as flag
        shipper, drop, registry = self, self.drop, self.registry

        def handle(record: logging.LogRecord) -> bool:
            if flag.shipper:
                drop("shipper_thread")
                return False
            if handler.filters and not handler.filter(record):
                return False
            try:
                frame = capture(record)
            except Exception:  # noqa: BLE001 - a log call must never fail the caller
                count_telemetry_error("exporters", registry)
                drop("unformattable")
                return True
            size = len(frame) + _FRAME_OVERHEAD
            with shipper._lock:   # submit(), inline
                if ((shipper.accepted - shipper.released < shipper._max_records
                        and shipper._bytes + size <= shipper._max_bytes and not shipper._closed)
                        or shipper._wait_for_room(size)):
                    unsent = shipper._unsent
                    unsent.append(frame)
                    shipper._bytes += size
                    shipper.accepted += 1
                    if len(unsent) == 1 or len(unsent) == _FEED_FRAMES:
                        shipper._wake.notify()
                    return True
                refused = "closed" if shipper._closed else "buffer_full"
            drop(refused)
            return True

        return handle

    def _fits(self, size: int) -> bool:
        return (self.accepted - self.released < self._max_records and self._bytes + size <= self._max_bytes
                and not self._closed)

    def _wait_for_room(self, size: int) -> bool:
        """Under the lock, the buffer full: with a spool, wait (at most SPILL_TIMEOUT s) while the child
        writes to disk, as the thread shipper does; without one, or with no child running, refuse."""
        if not (self._spill and self._may_wait()):
            return False
        deadline = time.monotonic() + SPILL_TIMEOUT
        self._wake.notify()   # the feeder: the child must get what is waiting
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._may_wait():
                return False
            self._room.wait(min(remaining, 0.05))
        return True

    def _may_wait(self) -> bool:
        """A child is running with room on its disk, or the first one is starting: a full buffer
        will drain. A full spool stops the waits (the thread shipper's ``spill``)."""
        return not self._closed and ((self._child_ready and self._child_spill) or self._first_start)

    def drop(self, reason: str, count: int = 1) -> None:
        self.metrics.dropped[reason].inc(count)
        self._count("dropped_" + reason, count)

    def _count(self, name: str, count: int) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + count

    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._counts)
            counts.update(accepted=self.accepted, settled=self.settled, queued=self.accepted - self.released,
                          spooled=self._spooled, restarts=self.restarts)
        return counts

    # --- feeder ----------------------------------------------------------------------------

    def _start_child(self) -> bool:
        try:
            child = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert child.stdin is not None
            _write_message(child.stdin, self._config)
        except Exception:  # noqa: BLE001 - no child now: the frames wait, the next try comes later
            count_telemetry_error("exporters", self.registry)
            _log.exception("ofsre log shipper (%s): cannot start the shipper process", self.backend.name)
            with self._lock:
                self._first_start = False
                self._room.notify_all()
            return False
        with self._lock:
            self._child, self._child_dead = child, False
            self._child_counts, self._base = {}, self.released
            # What the last child had not settled goes first, in order.
            self._unsent[:0] = self._inflight
            self._inflight = deque()
        reader = threading.Thread(target=self._read_reports, args=(child,), daemon=True,
                                  name=f"ofsre-log-reports-{self.backend.name}")
        self._reader = reader
        reader.start()
        return True

    def _feed(self) -> None:
        from ._transport import mark_shipper_thread
        mark_shipper_thread()
        pause = 0.1
        while True:
            with self._lock:
                # Woken by a full chunk of frames (or a flush, close, a dead child), else the first
                # frame waits at most _FEED_WAIT: a thread woken per record would take the GIL from
                # the app thread at every call.
                linger_wait(self._wake, lambda: (len(self._unsent) >= _FEED_FRAMES or self._stopping
                                                 or self._child_dead or self._flush_wanted),
                            lambda: bool(self._unsent), _FEED_WAIT)
                if self._stopping and not self._unsent:
                    return
                child_dead = self._child_dead or self._child is None
            if child_dead:
                self._stop_child()
                if not self._start_child():
                    if self._wait_stopping(pause):
                        return
                    pause = min(pause * 2, RESTART_MAX)
                    continue
            with self._lock:
                frames, self._unsent = self._unsent, []
                if len(frames) > _SEND_FRAMES:   # a big backlog goes in pieces
                    frames, self._unsent = frames[:_SEND_FRAMES], frames[_SEND_FRAMES:]
                self._inflight.extend(frames)
                flush, self._flush_wanted = self._flush_wanted, False
                child = self._child
            assert child is not None and child.stdin is not None
            try:
                if frames:
                    _write_message(child.stdin, _records_message(frames))
                if flush:
                    _write_message(child.stdin, _dumps(("flush",)))
                pause = 0.1
            except (OSError, ValueError):   # the child died: its reader notices; resend to the next
                with self._lock:
                    self._child_dead = True
                if self._wait_stopping(pause):
                    return
                pause = min(pause * 2, RESTART_MAX)

    def _wait_stopping(self, seconds: float) -> bool:
        with self._lock:
            if not self._stopping:
                self._wake.wait(seconds)
            return self._stopping

    def _stop_child(self) -> None:
        child = self._child
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(Exception):
            child.kill()
            child.wait(1.0)

    def _read_reports(self, child: subprocess.Popen[bytes]) -> None:
        from ._transport import mark_shipper_thread
        mark_shipper_thread()
        assert child.stdout is not None
        while True:
            try:
                payload = _read_message(child.stdout)
            except (OSError, ValueError):
                payload = None
            if payload is None:
                break
            durable, delivered, counts, durations = _loads(payload)
            self._apply(child, durable, delivered, counts, durations)
        with self._lock:
            if self._child is child:
                self._child_dead = True
                self._child_ready = self._first_start = False
                self.restarts += 0 if self._stopping else 1
                self._wake.notify_all()
                self._settled_cv.notify_all()
                self._room.notify_all()

    def _apply(self, child: subprocess.Popen[bytes], durable: int, delivered: int,
               counts: dict[str, int], durations: list[float]) -> None:
        deltas: dict[str, int] = {}
        with self._lock:
            if self._child is not child:
                return
            if not self._child_ready:
                self._child_ready, self._first_start = True, False
                self._room.notify_all()
            self._spooled = counts.pop("spooled", 0)   # levels, not counters
            self._child_spill = bool(counts.pop("spill", 0))
            for name, value in counts.items():
                delta = value - self._child_counts.get(name, 0)
                if delta > 0:
                    deltas[name] = delta
                    if not name.startswith("batch_") and name != _ERRORS:   # stats(): the record counters
                        self._counts[name] = self._counts.get(name, 0) + delta
            self._child_counts = counts
            # Frames the child holds durably (settled, or in its spool) leave memory.
            newly = min(self._base + durable - self.released, len(self._inflight))
            if newly > 0:
                inflight = self._inflight
                released = 0
                for _ in range(newly):
                    released += len(inflight.popleft())
                self._bytes -= released + newly * _FRAME_OVERHEAD
                self.released += newly
                self._room.notify_all()
            if self._base + delivered > self.settled:
                self.settled = min(self._base + delivered, self.released)
                self._settled_cv.notify_all()
        metrics = self.metrics
        for name, delta in deltas.items():
            if name == "shipped":
                metrics.shipped.inc(delta)
            elif name == "retried":
                metrics.retried.inc(delta)
            elif name.startswith("dropped_") and name[8:] in metrics.dropped:
                metrics.dropped[name[8:]].inc(delta)
            elif name.startswith("batch_") and name[6:] in metrics.batches:
                metrics.batches[name[6:]].inc(delta)
            elif name == _ERRORS:
                counter(semconv.TELEMETRY_ERRORS, self.registry).labels(component="exporters").inc(delta)
        for duration in durations:
            metrics.duration.observe(duration)
        metrics.depth.set(self.accepted - self.settled)

    # --- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.options.flush_timeout if timeout is None else timeout)
        with self._lock:
            target = self.accepted
            if not self._stopping:
                self._flush_wanted = True
                self._wake.notify_all()
            while self.settled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled_cv.wait(min(remaining, 0.1))
                if self._flush_wanted is False and self.settled < target and not self._stopping:
                    self._flush_wanted = True   # records that reached the child after the first ask
                    self._wake.notify_all()
            return True

    def close(self, timeout: float | None = None) -> bool:
        if self._closed:
            return True
        atexit.unregister(self._atexit_hook)
        deadline = time.monotonic() + (self.options.flush_timeout if timeout is None else timeout)
        with self._lock:
            self._closed = True
            self._room.notify_all()
        delivered = self.flush(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        self._feeder.join(max(0.0, deadline - time.monotonic()))
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(Exception):   # the child flushes what it holds, then exits
                _write_message(child.stdin, _dumps(("close", max(0.0, deadline - time.monotonic()))))
                child.stdin.close()
            with contextlib.suppress(Exception):
                child.wait(max(0.1, deadline - time.monotonic() + 1.0))
            self._stop_child()
        reader = self._reader
        if reader is not None:
            reader.join(max(0.1, deadline - time.monotonic()))   # the child's last report
        with self._lock:
            # Never written to a child, or held by one that could not finish: lost unless a spool has them.
            lost = len(self._unsent) + (0 if self.options.spool_dir else self.accepted - self.settled
                                        - len(self._unsent))
            self._unsent, self._inflight = [], deque()
            self.released = self.settled = self.accepted
            self._settled_cv.notify_all()
        if lost > 0:
            self.drop("shutdown", lost)
        return delivered


# --- child side --------------------------------------------------------------------------------

def _child_main() -> None:
    """The shipper process: read frames on stdin, ship them, report on (the original) stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C is for the app, which then closes us
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)   # background work: a core the app wants goes to the app
    report_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)   # a stray print must not corrupt the reports
    stdin = sys.stdin.buffer
    config = _read_message(stdin)
    if config is None:
        return
    from ._core import Shipper
    backend, options, identity = pickle.loads(config)
    options = _child_options(options)
    attributes = getattr(backend, "record_attributes", ALL_ATTRIBUTES)
    registry = CollectorRegistry()   # the child's own self-metrics, which the reports carry to the app
    shipper = Shipper(backend, options, registry, **identity)
    durations = _Durations()
    shipper.metrics.duration = durations
    errors = counter(semconv.TELEMETRY_ERRORS, registry).labels(component="exporters")
    encode = frame_encoder(shipper, attributes, identity)
    shipper._ready.wait(60)   # a spool's leftovers are counted as accepted before our first record
    buffer = shipper._buffer
    # This thread encodes each batch of frames as it reads it, and the buffer holds entries: one
    # thread doing the CPU work, not two passing each record through a lock and the GIL.
    buffer._encode = None
    carried = buffer.accepted
    state = {"submitted": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def report(last: bytes | None = None) -> bytes:
        """Send (records held durably, records settled, counters, send durations since the last report)
        unless nothing changed since ``last``."""
        with lock:
            submitted = state["submitted"]
            refused = submitted - (buffer.accepted - carried)
            delivered = max(0, buffer.settled - carried) + refused
            spool = shipper._spool
            durable = delivered
            if spool is not None:   # records on its disk survive this process: the app may let them go
                durable = max(0, buffer.settled + spool.pending - carried) + refused
            counts = {k: v for k, v in shipper.stats().items()
                      if k in ("shipped", "retried") or k.startswith("dropped_")}
            for kind, child in shipper.metrics.batches.items():
                counts["batch_" + kind] = int(child._value.get())
            counts[_ERRORS] = int(errors._value.get())
            counts["spooled"] = spool.pending if spool is not None else 0
            counts["spill"] = int(buffer.spill)   # its spool has room for another batch
            taken = durations.take()
        payload = _dumps((durable, delivered, counts, taken))
        if taken or payload != last:
            _write_message(report_out, payload)
        return payload

    def reporter() -> None:
        last = None
        while not stop.wait(_REPORT_EVERY):
            with contextlib.suppress(Exception):
                last = report(last)

    threading.Thread(target=reporter, daemon=True).start()
    close_timeout = options.flush_timeout
    while True:
        payload = _read_message(stdin)
        if payload is None:
            break
        message = _loads(payload)
        if message[0] == "records":
            entries = [entry for entry in map(encode, message[1]) if entry is not None]   # redaction here;
            shipper.submit_many(entries)                                   # None: dropped and counted
            with lock:   # after the puts: a report in between counts fewer records done, never more
                state["submitted"] += len(message[1])
        elif message[0] == "flush":
            buffer.request_flush()
        elif message[0] == "close":
            close_timeout = float(message[1])
            break
    shipper.close(close_timeout)
    stop.set()
    with contextlib.suppress(Exception):
        report()


class _Durations:
    """The child's ``ofsre_log_send_duration_seconds``: each request's duration, kept (bounded) until the
    next report hands it to the app's histogram."""

    def __init__(self) -> None:
        self._values: deque[float] = deque(maxlen=_DURATIONS_KEPT)

    def observe(self, amount: float) -> None:
        self._values.append(amount)

    def take(self) -> list[float]:
        """What was observed since the last call (the reporter is the only taker)."""
        values = self._values
        return [values.popleft() for _ in range(len(values))]


def _child_options(options: Any) -> Any:
    """The child's buffer holds what the app sends it (the app's bound applies): never drop there."""
    import dataclasses
    return dataclasses.replace(options, queue_records=sys.maxsize, queue_bytes=sys.maxsize)


if __name__ == "__main__":
    _child_main()
