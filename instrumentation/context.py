"""Per-request telemetry context shared by metrics, traces and logs.

The middleware sets the ``x-fapi-interaction-id`` of the current request here; the log
formatter, the log shippers and exemplars read it. Trace and span ids come from the
current OpenTelemetry span. ``x-fapi-interaction-id`` is never a metric label.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

__all__ = ["INTERACTION_ID_HEADER", "interaction_id", "current_log_context", "use_interaction_id",
           "is_valid_interaction_id", "new_interaction_id"]

INTERACTION_ID_HEADER = "x-fapi-interaction-id"
# RFC 4122: 8-4-4-4-12 hex digits, version 1-5, variant 10xx, either case (openfinance.md §4).
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}"
                   rb"-[0-9a-fA-F]{12}\Z")

_interaction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ofsre_interaction_id",
                                                                             default=None)


def interaction_id() -> str | None:
    """The ``x-fapi-interaction-id`` of the request being served, if any."""
    return _interaction_id.get()


def is_valid_interaction_id(value: bytes) -> bool:
    """True when a raw ``x-fapi-interaction-id`` header value is an RFC 4122 UUID."""
    return _UUID.match(value) is not None


def new_interaction_id() -> str:
    """A fresh interaction id (a random RFC 4122 version 4 UUID, lowercase), for an answer to a
    request that brought no valid one.

    The same value ``str(uuid.uuid4())`` gives, at about a third of its cost: the ``uuid``
    module builds a ``UUID`` object (an int, its version checks) only to format it again.
    """
    raw = int.from_bytes(_urandom(16)) & _V4_CLEAR | _V4_SET
    h = f"{raw:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_urandom = os.urandom
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))   # the version nibble and the variant bits
_V4_SET = (0x4000 << 64) | (0x8000 << 48)        # version 4, variant 10xx


# set_interaction_id(value) -> token, reset_interaction_id(token): the ContextVar's own methods
# (no Python frame on the request path).
set_interaction_id = _interaction_id.set
reset_interaction_id = _interaction_id.reset


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
    trace_id: str | None
    span_id: str | None
    if ctx.is_valid:
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    else:
        trace_id = span_id = None
    return {"trace_id": trace_id, "span_id": span_id, "interaction_id": _interaction_id.get()}
