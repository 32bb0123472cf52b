"""JSON logs with trace correlation and LGPD redaction, one object per line on stdout.

Call once at startup; then log as usual::

    import logging
    from ofsre.instrumentation.logs import configure_logging

    configure_logging("payments")            # root logger -> stdout, JSON
    log = logging.getLogger("payments.pix")
    log.info("pix sent", extra={"payment_id": "p-1", "amount": "10.00"})

prints::

    {"timestamp":"2025-01-02T03:04:05.678Z","level":"INFO","logger":"payments.pix",
     "message":"pix sent","service":"payments","env":"prod","version":"1.4.0",
     "trace_id":"4bf9…","span_id":"00f0…","interaction_id":"c9a3…",
     "payment_id":"p-1","amount":"10.00"}

(on one line). ``trace_id``/``span_id`` come from the current OpenTelemetry span and
``interaction_id`` from the request's ``x-fapi-interaction-id``
(:func:`ofsre.instrumentation.context.current_log_context`); they are ``null`` outside a
request. Every ``extra`` field is included; the message, the extras and the exception
text pass through :mod:`ofsre.instrumentation.redact` first.

Settings: arguments first, then ``OFSRE_LOG_LEVEL`` (default ``INFO``), ``OFSRE_ENV``
(default empty), ``OFSRE_VERSION`` (default ``unknown``), as for the tracer's resource.

Pieces, for other handlers (the log shippers in ``ofsre.exporters`` use them):

- :func:`record_fields` builds the redacted dict for a ``LogRecord``, so every backend
  ships the same fields as stdout;
- :class:`ContextFilter` copies trace/span/interaction ids onto the record when it is
  logged, so a handler that formats later on another thread still has them.

Nothing to call in a service that uses :func:`ofsre.instrumentation.instrument_app` (or
:func:`ofsre.instrumentation.worker.instrument_worker` for a process without HTTP): unless
logging was already configured through ofsre, or ``logs=False`` is passed, they call
:func:`ensure_logging`, which configures the root logger as above and makes uvicorn's own
loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) drop the plain-text handlers
uvicorn gave them and propagate here, so the server's lines are JSON, redacted and carry
the request's ids too. Other handlers are left alone; a service that configures logging
its own way passes ``logs=False``.

A record that cannot be formatted (``log.info("%d", "x")``) still produces a line, with
the error under ``log_error``, and counts ``ofsre_telemetry_errors_total{component="logs"}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from . import metrics
from ._config import ENV, LOG_LEVEL, VERSION
from .context import current_log_context
from .redact import redact_text, redact_value

__all__ = ["JsonFormatter", "ContextFilter", "record_fields", "build_fields", "configure_logging",
           "ensure_logging", "logging_configured", "adopt_server_loggers", "CONTEXT_KEYS", "STANDARD_ATTRS",
           "jsonable"]

CONTEXT_KEYS = ("trace_id", "span_id", "interaction_id")

ENV_LEVEL, ENV_ENV, ENV_VERSION = LOG_LEVEL.name, ENV.name, VERSION.name
DEFAULT_LEVEL: str = LOG_LEVEL.default

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# ``color_message`` is uvicorn's ANSI-coloured copy of the message: noise in JSON.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName", "color_message", *CONTEXT_KEYS,
}
_JSON_SCALARS = (str, int, float, bool, type(None))
# Formats exceptions for record_fields, which has no formatter of its own.
_EXC_FORMATTER = logging.Formatter()


# The last second formatted and its text (records come in bursts). One tuple, replaced whole,
# so a thread never pairs one second with another's text.
_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2025-01-02T03:04:05.678Z``."""
    global _second
    second = int(record.created)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int(record.msecs):03d}Z"


_MAX_DEPTH = 8  # deeper containers (or a container holding itself) are cut


def jsonable(value: Any, depth: int = 0) -> Any:
    """Make ``value`` JSON-ready *before* redaction, so an object's str() is redacted too."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, dict | list | tuple | set | frozenset) and depth >= _MAX_DEPTH:
        return "[TRUNCATED]"
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)


def _context_of(record: logging.LogRecord) -> dict[str, str | None]:
    # ContextFilter may have captured the ids when the record was logged (possibly on another
    # thread than the one formatting it); otherwise read the current context.
    if hasattr(record, "trace_id"):
        return {key: getattr(record, key, None) for key in CONTEXT_KEYS}
    return current_log_context()


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
    return record.exc_text or None


def record_fields(record: logging.LogRecord, *, service: str, env: str, version: str) -> dict[str, Any]:
    """The redacted, JSON-ready fields of ``record``: the same for stdout and every log backend.

    Raises if the record itself is broken (bad ``%`` args); :class:`JsonFormatter` handles that.
    """
    attrs = record.__dict__
    # A record captured by a log shipper lists its extras already (ofsre.exporters._capture).
    extras = attrs.get("_ofsre_extras")
    items = ((key, attrs[key]) for key in extras) if extras is not None else attrs.items()
    return build_fields(_timestamp(record), record.levelname, record.name, record.getMessage(),
                        service=service, env=env, version=version, context=_context_of(record), extras=items,
                        exception=_exception_text(record), stack=record.stack_info)


def build_fields(timestamp: str | None, level: str, logger: str, message: str, *, service: str, env: str,
                 version: str, context: dict[str, Any], extras: Iterable[tuple[str, Any]],
                 exception: str | None, stack: str | None) -> dict[str, Any]:
    """:func:`record_fields` from a record's parts (``message`` already formatted, ``context`` the
    :data:`CONTEXT_KEYS`): what the log shipper process calls with the parts a frame carries."""
    fields: dict[str, Any] = {
        "timestamp": timestamp,
        "level": level,
        "logger": logger,
        "message": redact_text(message),
        "service": service,
        "env": env,
        "version": version,
    }
    fields.update(context)
    for key, value in extras:
        if key in STANDARD_ATTRS or key.startswith("_"):
            continue
        # An extra may not overwrite a core field; it is kept under another name.
        name = key if key not in fields else f"extra_{key}"
        fields[name] = redact_value(jsonable(value))
    if exception:
        fields["exception"] = redact_text(exception)
    if stack:
        fields["stack"] = redact_text(stack)
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields).

    ``env`` and ``version`` default to ``$OFSRE_ENV`` / ``$OFSRE_VERSION``. Never raises.
    """

    def __init__(self, service: str, env: str | None = None, version: str | None = None) -> None:
        super().__init__()
        self.service = service
        # Same precedence and defaults as the tracer's resource (instrumentation._config).
        self.env = env or ENV.from_env()
        self.version = version or VERSION.from_env()

    def format(self, record: logging.LogRecord) -> str:
        try:
            fields = record_fields(record, service=self.service, env=self.env, version=self.version)
            return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
        except Exception as exc:  # noqa: BLE001 - a log call must never fail the caller
            metrics.count_telemetry_error("logs")
            return self._fallback(record, exc)

    def _fallback(self, record: logging.LogRecord, exc: Exception) -> str:
        """A minimal line for a record that could not be formatted: its raw message, redacted."""
        try:
            fields = {
                "timestamp": _timestamp(record),
                "level": str(record.levelname),
                "logger": str(record.name),
                "message": redact_text(str(record.msg)),
                "service": self.service, "env": self.env, "version": self.version,
                **_context_of(record),
                "log_error": f"{type(exc).__name__}: {redact_text(str(exc))}",
            }
            return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        except Exception:  # noqa: BLE001 - even the record's msg may be unprintable
            return json.dumps({"level": "ERROR", "service": self.service,
                               "message": "unformattable log record"})


class ContextFilter(logging.Filter):
    """Sets ``record.trace_id``, ``record.span_id`` and ``record.interaction_id`` from the current context.

    Add it to a handler (``configure_logging`` does) so any formatter can use
    ``%(trace_id)s``, and so a record handed to a background thread keeps the ids of the
    request that logged it. Ids already on the record are left alone. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            try:
                for key, value in current_log_context().items():
                    setattr(record, key, value)
            except Exception:  # noqa: BLE001
                metrics.count_telemetry_error("logs")
        return True


def _level(value: str | int | None) -> int:
    raw = value if value is not None else LOG_LEVEL.from_env()
    if isinstance(raw, int):
        return raw
    level = logging.getLevelName(str(raw).strip().upper())
    if isinstance(level, int):
        return level
    logging.getLogger(__name__).warning("unknown log level %r, using %s", raw, DEFAULT_LEVEL)
    fallback: int = logging.getLevelName(DEFAULT_LEVEL)
    return fallback


_HANDLER_MARK = "_ofsre_json_handler"


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """A ``StreamHandler`` on whatever ``sys.stdout`` is *now* (like stdlib's ``lastResort``),
    so a later replacement of ``sys.stdout`` (a test runner's capture, a daemon's redirect)
    never leaves it writing to a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.setStream assigns it; stdout wins
        pass


def configure_logging(service: str, *, level: str | int | None = None, env: str | None = None,
                      version: str | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default stdout) as JSON lines; return the handler.

    Idempotent: a second call replaces the handler the first one installed and leaves any
    other handler alone. ``level`` (name or number) falls back to ``$OFSRE_LOG_LEVEL``, then INFO.
    """
    handler = logging.StreamHandler(stream) if stream is not None else _StdoutHandler()
    handler.setFormatter(JsonFormatter(service, env=env, version=version))
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler


def logging_configured() -> bool:
    """True when the root logger has the handler :func:`configure_logging` installs."""
    return any(getattr(h, _HANDLER_MARK, False) for h in logging.getLogger().handlers)


# Servers whose default logging config prints plain text on loggers that do not propagate.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def adopt_server_loggers() -> None:
    """Route uvicorn's loggers through the root logger (JSON, redacted, with the request's ids).

    Removes only the handlers uvicorn's default ``log_config`` installs (their formatter is
    uvicorn's), and lets the logger propagate when that left it none; a handler the service added
    itself stays. A logger switched off (no handler, not propagating: what uvicorn's
    ``access_log=False`` / ``--no-access-log`` does to ``uvicorn.access``) stays off. Called by
    :func:`ensure_logging` and again by the middleware on its first lifespan or HTTP call, because
    ``uvicorn.run(app)`` configures its loggers *after* the app was built. Never raises.
    """
    try:
        if not logging_configured():
            return
        for name in SERVER_LOGGERS:
            logger = logging.getLogger(name)
            theirs = [h for h in logger.handlers if type(h.formatter).__module__.startswith("uvicorn")]
            for handler in theirs:
                logger.removeHandler(handler)
            if theirs and not logger.handlers:
                logger.propagate = True
    except Exception:  # noqa: BLE001 - logging set-up must not stop a service
        metrics.count_telemetry_error("logs")


def ensure_logging(service: str, *, level: str | int | None = None, env: str | None = None,
                   version: str | None = None) -> bool:
    """JSON logs on stdout unless logging was already configured through ofsre; True if configured now.

    What :func:`~ofsre.instrumentation.instrument_app` calls by default: a service that only
    instruments its app gets redacted, correlated JSON lines, uvicorn's included
    (:func:`adopt_server_loggers`).
    """
    configured_now = False
    if not logging_configured():
        configure_logging(service, level=level, env=env, version=version)
        configured_now = True
    adopt_server_loggers()
    return configured_now
