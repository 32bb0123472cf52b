"""What the logging call keeps of a record, so everything else can happen on the shipper's thread.

The application thread only *captures*; the worker thread redacts, serialises and batches.
:func:`capture` takes, at the moment of the call, everything that could change or vanish
afterwards, and returns a :class:`Captured` record that no later event can alter:

* the message, formatted now (``record.getMessage()``): ``args`` may be mutable objects the
  caller changes after the call, and ``msg`` may be an object whose ``str()`` changes;
* the trace/span/interaction ids (:func:`ofsre.instrumentation.context.current_log_context`):
  they live in contextvars, which the worker thread does not see;
* the exception text (formatted now, like ``logging.Formatter`` does): the worker must not
  keep tracebacks and their frames alive;
* the extras: strings, numbers, booleans and ``None`` are immutable and kept as they are;
  anything else (a dict, a list, an object) is turned into its JSON-ready copy now.

The copy is the record's own attribute dict, so :func:`ofsre.instrumentation.logs.record_fields`
reads it exactly as it would read the original record (same fields, same redaction), only
later and on another thread. Nothing is redacted here: redaction runs on the worker before
a record is encoded, and only encoded (so redacted) records reach the network or the disk
spool.

``Captured.size`` is an *estimate* of the encoded size, used by the memory buffer's byte
bound until the worker encodes the record and replaces it with the exact size: the lengths
of the message, string extras, exception and stack texts, the ``repr`` length of container
extras, plus :data:`RECORD_OVERHEAD` for the fixed fields (timestamp, level, service, ids…).
"""

from __future__ import annotations

import logging

from ofsre.instrumentation.context import current_log_context
from ofsre.instrumentation.logs import STANDARD_ATTRS, jsonable

__all__ = ["Captured", "capture", "RECORD_OVERHEAD"]

# Bytes a record's fixed fields add to its encoding, whatever the backend (a Loki line is
# ~250 bytes beyond its message and extras, an ECS document ~600): a middle value, the
# estimate is corrected on encoding.
RECORD_OVERHEAD = 400
_SCALAR_SIZE = 24                  # an extra holding a number, a bool or None, with its key
_EXC_FORMATTER = logging.Formatter()
_IMMUTABLE = (str, int, float, bool, type(None))


class Captured(logging.LogRecord):
    """A frozen copy of a ``LogRecord`` (built by :func:`capture`, never by ``__init__``).

    ``args`` is ``None`` and ``msg`` the formatted message, so ``getMessage()`` returns the
    text of the original call; ``exc_info`` keeps only the exception type (for the
    backends' ``error.kind``), ``exc_text`` the formatted traceback.
    """

    _ofsre_size: int   # set by capture(), in the instance __dict__

    @property
    def size(self) -> int:
        """Estimated encoded size in bytes (see the module docstring)."""
        return self._ofsre_size


def capture(record: logging.LogRecord) -> Captured:
    """A :class:`Captured` copy of ``record`` that the worker can format later. Raises on a broken record."""
    message = record.getMessage()   # raises on bad %-arguments: the caller counts it as unformattable
    attrs = record.__dict__.copy()
    size = RECORD_OVERHEAD + len(message)
    attrs["msg"], attrs["args"] = message, None
    exc_info = record.exc_info
    if exc_info:
        if not record.exc_text:
            record.exc_text = _EXC_FORMATTER.formatException(exc_info)   # cached, as Formatter.format does
        attrs["exc_info"], attrs["exc_text"] = (exc_info[0], None, None), record.exc_text
        size += len(record.exc_text)
    if record.stack_info:
        size += len(record.stack_info)
    if "trace_id" not in attrs:   # ids not already set by ofsre.instrumentation.logs.ContextFilter
        attrs.update(current_log_context())
    extras = []
    for key in attrs.keys() - STANDARD_ATTRS:
        if key.startswith("_"):   # never shipped (record_fields skips them)
            continue
        extras.append(key)
        value = attrs[key]
        if type(value) is str:
            size += len(key) + len(value)
        elif isinstance(value, _IMMUTABLE):
            size += len(key) + _SCALAR_SIZE
        else:
            attrs[key] = value = jsonable(value)   # a snapshot: the caller may mutate the original
            size += len(key) + len(repr(value))
    attrs["_ofsre_size"] = size
    attrs["_ofsre_extras"] = extras   # record_fields reads these keys only, not all ~25 attributes
    captured = Captured.__new__(Captured)
    captured.__dict__ = attrs
    return captured
