"""Per-request telemetry context shared by metrics, traces and logs.

The middleware sets the ``x-fapi-interaction-id`` of the current request here; the log
formatter, the log shippers and exemplars read it. Trace and span ids come from the
current OpenTelemetry span. ``x-fapi-interaction-id`` is never a metric label.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

__all__ = ["INTERACTION_ID_HEADER", "interaction_id", "current_log_context", "use_interaction_id"]

INTERACTION_ID_HEADER = "x-fapi-interaction-id"

_interaction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ofsre_interaction_id", default=None)


def interaction_id() -> str | None:
    """The ``x-fapi-interaction-id`` of the request being served, if any."""
    return _interaction_id.get()


def set_interaction_id(value: str | None) -> contextvars.Token:
    return _interaction_id.set(value)


def reset_interaction_id(token: contextvars.Token) -> None:
    _interaction_id.reset(token)


@contextmanager
def use_interaction_id(value: str | None) -> Iterator[None]:
    """Run a block (a queue consumer, a background job) under an interaction id."""
    token = _interaction_id.set(value)
    try:
        yield
    finally:
        _interaction_id.reset(token)


def current_log_context() -> dict[str, str | None]:
    """``trace_id``, ``span_id`` (hex, None outside a span) and ``interaction_id`` for a log record."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    else:
        trace_id = span_id = None
    return {"trace_id": trace_id, "span_id": span_id, "interaction_id": _interaction_id.get()}
