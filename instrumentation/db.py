"""Query durations, pool usage and spans for a SQLAlchemy 2 engine, sync or async.

Needs the ``db`` extra (``pip install ofsre[db]``); SQLAlchemy is imported only when an
engine is instrumented. Instrument the engine right after creating it::

    from sqlalchemy.ext.asyncio import create_async_engine
    from ofsre.instrumentation.db import instrument_engine

    engine = instrument_engine(create_async_engine("postgresql+asyncpg://…/payments"),
                               service="payments")

Then every statement observes ``DB_QUERY_DURATION{service, db, operation}`` where
``operation`` is the statement's first keyword (``SELECT``, ``INSERT``, ``UPDATE``,
``DELETE``; anything else is ``OTHER``), and gets a CLIENT span (``db.system``,
``db.namespace``, ``db.operation.name``) as a child of the current span. Neither the
statement text nor its parameters are recorded: both can hold personal data. The pool
gauges ``DB_POOL_IN_USE`` (checked out) and ``DB_POOL_SIZE`` (connections open) follow
the pool's checkout/checkin/connect/close events; several engines with the same labels
add up.

``db`` defaults to the URL's database name (the file name for SQLite). A second call
for the same engine does nothing. Errors inside the listeners are swallowed and counted
in ``ofsre_telemetry_errors_total{component="db"}``: a query never fails because of telemetry.
"""

from __future__ import annotations

import os
import re
import time
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from . import semconv
from .metrics import count_telemetry_error, gauge, histogram

__all__ = ["instrument_engine", "operation_of", "OPERATIONS", "OTHER_OPERATION"]

OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE")
OTHER_OPERATION = "OTHER"
_OPERATION_SET = frozenset(OPERATIONS)
_COMPONENT = "db"
# Attribute set on SQLAlchemy's per-execution context between before/after_cursor_execute.
_STATE = "_ofsre_query"

# Leading blanks and SQL comments, then the first word.
_FIRST_WORD = re.compile(r"(?:\s+|/\*.*?\*/|--[^\n]*(?:\n|$))*([A-Za-z]+)", re.DOTALL)

_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def operation_of(statement: str) -> str:
    """The bounded operation label of ``statement``: one of :data:`OPERATIONS` or ``OTHER``."""
    match = _FIRST_WORD.match(statement)
    word = match.group(1).upper() if match else ""
    return word if word in _OPERATION_SET else OTHER_OPERATION


def _db_label(sync_engine: Any) -> str:
    url = sync_engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database
        return os.path.basename(database) if database and database != ":memory:" else "memory"
    name: str = url.database or url.get_backend_name()
    return name


class _EngineTelemetry:
    """The listeners of one engine, holding its metric children (resolved once)."""

    def __init__(self, sync_engine: Any, service: str, db_name: str, registry: CollectorRegistry | None,
                 tracer_provider: TracerProvider | None, spans: bool) -> None:
        self.registry = registry
        labels = {"service": service, "db": db_name}
        duration = histogram(semconv.DB_QUERY_DURATION, registry)
        self.durations = {op: duration.labels(operation=op, **labels) for op in (*OPERATIONS,
                                                                                 OTHER_OPERATION)}
        self.in_use = gauge(semconv.DB_POOL_IN_USE, registry).labels(**labels)
        self.size = gauge(semconv.DB_POOL_SIZE, registry).labels(**labels)
        self.tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider) if spans else None
        self.system = sync_engine.dialect.name
        self.db_name = db_name

    def _error(self) -> None:
        count_telemetry_error(_COMPONENT, self.registry)

    # --- statements ---------------------------------------------------------------------------

    def before_cursor_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                              executemany: bool) -> None:
        if context is None:
            return
        try:
            operation = operation_of(statement)
            setattr(context, _STATE, (time.perf_counter(), operation, self._start_span(operation)))
        except Exception:  # noqa: BLE001
            self._error()

    def _start_span(self, operation: str) -> Any:
        """A CLIENT span for one statement (not made current: nothing runs inside it), or None.

        Only inside a recording span: a statement outside any request or message (a queue
        poll, a migration) would otherwise start a new root trace every time it runs."""
        if self.tracer is None or not trace.get_current_span().is_recording():
            return None
        try:
            return self.tracer.start_span(
                f"{operation} {self.db_name}", kind=SpanKind.CLIENT,
                attributes={"db.system": self.system, "db.system.name": self.system,
                            "db.namespace": self.db_name, "db.operation.name": operation})
        except Exception:  # noqa: BLE001 - the query is still timed
            self._error()
            return None

    def after_cursor_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                             executemany: bool) -> None:
        self._finish(context, None)

    def handle_error(self, exception_context: Any) -> None:
        self._finish(exception_context.execution_context, exception_context.original_exception)

    def _finish(self, context: Any, error: BaseException | None) -> None:
        state = getattr(context, _STATE, None) if context is not None else None
        if state is None:
            return
        try:
            setattr(context, _STATE, None)
            start, operation, span = state
            self.durations[operation].observe(time.perf_counter() - start)
            if span is not None:
                if error is not None:
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.end()
        except Exception:  # noqa: BLE001
            self._error()

    # --- pool ---------------------------------------------------------------------------------

    def _gauge(self, gauge: Any, delta: int) -> None:
        try:
            gauge.inc(delta)
        except Exception:  # noqa: BLE001
            self._error()

    def checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        self._gauge(self.in_use, 1)

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        self._gauge(self.in_use, -1)

    def connect(self, dbapi_connection: Any, record: Any) -> None:
        self._gauge(self.size, 1)

    def close(self, dbapi_connection: Any, record: Any) -> None:
        self._gauge(self.size, -1)

    def detach(self, dbapi_connection: Any, record: Any) -> None:
        # A detached connection leaves the pool while checked out: no checkin or close will follow.
        self._gauge(self.in_use, -1)
        self._gauge(self.size, -1)

    def count_existing(self, pool: Any) -> None:
        """Start the gauges from the pool's state, for an engine instrumented after first use."""
        try:
            checked_out = pool.checkedout() if hasattr(pool, "checkedout") else 0
            idle = pool.checkedin() if hasattr(pool, "checkedin") else 0
            self._gauge(self.in_use, checked_out)
            self._gauge(self.size, checked_out + idle)
        except Exception:  # noqa: BLE001
            self._error()


_ENGINE_EVENTS = ("before_cursor_execute", "after_cursor_execute", "handle_error")
_POOL_EVENTS = ("checkout", "checkin", "connect", "close", "detach")


def instrument_engine(engine: Any, *, service: str, db_name: str | None = None,
                      registry: CollectorRegistry | None = REGISTRY,
                      tracer_provider: TracerProvider | None = None, spans: bool = True) -> Any:
    """Add metrics and spans to ``engine`` (``Engine`` or ``AsyncEngine``); return ``engine``.

    ``spans=False`` keeps the metrics and skips the per-statement span. Idempotent.
    """
    from sqlalchemy import event  # the db extra: imported only by services that use it

    sync_engine = getattr(engine, "sync_engine", engine)
    if sync_engine in _instrumented:
        return engine
    telemetry = _EngineTelemetry(sync_engine, service, db_name or _db_label(sync_engine), registry,
                                 tracer_provider, spans)
    telemetry.count_existing(sync_engine.pool)
    for name in _ENGINE_EVENTS + _POOL_EVENTS:
        # Pool events registered on the engine follow it across pool.recreate() (engine.dispose()).
        event.listen(sync_engine, name, getattr(telemetry, name))
    _instrumented.add(sync_engine)
    return engine
