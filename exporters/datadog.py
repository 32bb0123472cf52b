"""Ship logs to Datadog's HTTP intake (v2): batched JSON arrays, gzip, retries, optional disk spool.

Attach it like any handler::

    import logging
    from ofsre.exporters.datadog import DatadogHandler

    # the key from DD_API_KEY
    logging.getLogger().addHandler(DatadogHandler(service="payments", site="datadoghq.eu"))

or with ``logging.config.dictConfig``::

    {"version": 1,
     "handlers": {"datadog": {"class": "ofsre.exporters.datadog.DatadogHandler", "service": "payments"}},
     "root": {"handlers": ["datadog"], "level": "INFO"}}

What Datadog receives (``POST https://http-intake.logs.<site>/api/v2/logs``, ``DD-API-KEY``,
``Content-Encoding: gzip``): a JSON array of at most 1000 items and 5 MB uncompressed::

    [{"message": "pix sent", "status": "info", "service": "payments", "hostname": "pod-1",
      "ddsource": "python", "ddtags": "env:prod,version:1.4.0", "timestamp": 1735787045678,
      "logger": {"name": "payments.pix"}, "trace_id": "4bf9…", "span_id": "00f0…",
      "dd": {"trace_id": "…", "span_id": "…"}, "interaction_id": "c9a3…", "payment_id": "p-1"}]

``dd.trace_id``/``dd.span_id`` are the lower 64 bits of the OpenTelemetry ids in decimal,
which is how Datadog links a log to an OpenTelemetry trace. An exception goes to
``error.stack``/``error.message``/``error.kind`` (Datadog's standard attributes).

Records older than 18 hours when their batch is sent are not accepted by Datadog: they are
dropped and counted (``reason="too_old"``) rather than sent to be silently discarded.
A record above 1 MB has its message truncated (Datadog would truncate it too).
Retries can duplicate a batch whose answer was lost (a timeout): Datadog has no
idempotency key, so delivery is at least once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from ofsre.instrumentation._config import ENV, SERVICE, VERSION, env_str
from ofsre.instrumentation.config import read

from ._core import Entry, HttpBackend, ShippingHandler, resolve_identity
from ._json import dumps as _dumps
from ._options import DATADOG, BackendLimits

__all__ = ["DatadogHandler", "DatadogBackend", "SITES", "intake_url"]

SITES = ("datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "ap1.datadoghq.com",
         "ap2.datadoghq.com", "datadoghq.eu", "ddog-gov.com")
DATADOG_LIMITS = BackendLimits(
    max_batch_records=1000,          # entries per array
    max_batch_bytes=5_000_000,       # 5 MB uncompressed per payload
    max_record_bytes=1_000_000,      # 1 MB per log
    max_record_age=18 * 3600.0,      # timestamps at most 18 h in the past
)
# Fields that become Datadog's reserved attributes, or are rebuilt below, rather than copied.
_RESERVED = frozenset({"timestamp", "level", "logger", "message", "service", "env", "version",
                       "exception", "stack"})


def intake_url(site: str) -> str:
    """The logs intake of a Datadog site; ValueError for an unknown site.

    An unknown site is an error, not a fallback to the US one: sending Brazilian personal
    data to a region nobody chose is worse than not starting.
    """
    site = site.strip().lower()
    if site not in SITES:
        raise ValueError(f"unknown Datadog site {site!r}; one of {', '.join(SITES)}")
    return f"https://http-intake.logs.{site}/api/v2/logs"


def _dd_id(hex_id: str | None, digits: int) -> str | None:
    """Datadog's decimal form of the lower 64 bits of an OpenTelemetry hex id."""
    if not hex_id:
        return None
    try:
        return str(int(hex_id[-digits:], 16))
    except ValueError:
        return None


def _tags(raw: Iterable[str] | str | None) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    return [t.strip() for t in raw if t and t.strip()]


class DatadogBackend(HttpBackend):
    """Encodes records as Datadog log items and batches them into JSON arrays."""

    name = "datadog"
    # The LogRecord attributes encode() and record_fields() read: all a shipper process gets.
    record_attributes = ("name", "levelno", "levelname", "created", "msecs")
    limits = DATADOG_LIMITS

    def __init__(self, url: str, *, api_key: str, service: str, env: str, version: str, source: str,
                 tags: list[str], hostname: str) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", "DD-API-KEY": api_key}
        identity = [f"env:{env}"] if env else []
        self._static = {
            "ddsource": source,
            "ddtags": ",".join([*identity, f"version:{version}", *tags]),
            "hostname": hostname,
            "service": service,
        }

    def encode(self, fields: dict[str, Any], record: logging.LogRecord) -> Entry:
        item: dict[str, Any] = {
            "message": fields["message"],
            "status": fields["level"].lower(),
            **self._static,
            "timestamp": int(record.created * 1000),
            "logger": {"name": fields["logger"]},
        }
        for key, value in fields.items():
            if key not in _RESERVED:
                item[key] = value
        dd = {"trace_id": _dd_id(fields.get("trace_id"), 16), "span_id": _dd_id(fields.get("span_id"), 16)}
        if dd["trace_id"]:
            item["dd"] = dd
        if fields.get("exception") or fields.get("stack"):
            error = {"stack": fields.get("exception") or fields.get("stack")}
            if record.exc_info and record.exc_info[0] is not None and fields.get("exception"):
                kind = record.exc_info[0].__name__
                last_line = fields["exception"].rstrip().rsplit("\n", 1)[-1]   # "ValueError: <redacted text>"
                error["kind"], error["message"] = kind, last_line.removeprefix(kind + ":").strip()
            item["error"] = error
        body = _dumps(item).encode()
        return Entry(b"", body, record.created)

    def body(self, entries: Sequence[Entry]) -> bytes:
        return b"[" + b",".join(e.body for e in entries) + b"]"


class DatadogHandler(ShippingHandler):
    """A ``logging.Handler`` that ships records to Datadog without blocking the caller.

    Arguments (each falls back to its environment variable, then the default):

    =================  ==========================  =====================================================
    argument           environment                 meaning
    =================  ==========================  =====================================================
    ``api_key``        ``DD_API_KEY``              API key, sent as ``DD-API-KEY`` (required)
    ``site``           ``DD_SITE``                 ``datadoghq.com`` (default), ``us3``/``us5``/``ap1``/
                                                   ``ap2.datadoghq.com``, ``datadoghq.eu``, ``ddog-gov.com``
    ``url``            ``OFSRE_DATADOG_URL``       full intake URL, overriding ``site`` (proxies, tests)
    ``source``         ``OFSRE_DATADOG_SOURCE``    ``ddsource`` (``python``)
    ``tags``           ``DD_TAGS``                 extra ``ddtags``: ``team:pix,region:br`` (list or str)
    ``hostname``       ``DD_HOSTNAME``             ``hostname`` (the machine's name)
    ``service``        ``OFSRE_SERVICE``/``DD_SERVICE``/``OTEL_SERVICE_NAME``  service name
                                                   (else ``unknown_service:<process>``)
    ``env``            ``OFSRE_ENV``/``DD_ENV``    ``env:`` tag
    ``version``        ``OFSRE_VERSION``/``DD_VERSION``  ``version:`` tag
    =================  ==========================  =====================================================

    plus the shipping options of :mod:`ofsre.exporters._options` (``queue_records``,
    ``overflow``, ``batch_wait``, ``spool_dir``, ``max_retry_time``…, env ``OFSRE_LOG_*``) and
    ``registry=`` for the self-metrics. Batches hold at most 1000 items and 5 MB; records
    older than 18 h at send time are dropped with reason ``too_old``.
    """

    def __init__(self, api_key: str | None = None, *, site: str | None = None, url: str | None = None,
                 service: str | None = None, env: str | None = None, version: str | None = None,
                 source: str | None = None, tags: Iterable[str] | str | None = None,
                 hostname: str | None = None,
                 registry: CollectorRegistry | None = REGISTRY, level: int | str = 0, **options: Any) -> None:
        api_key = api_key or env_str("DD_API_KEY")
        if not api_key:
            raise ValueError("DatadogHandler needs an API key: the api_key argument or DD_API_KEY")
        url = url or DATADOG["url"].from_env() or intake_url(site or env_str("DD_SITE", "datadoghq.com"))
        # OFSRE_* first (shared by every ofsre component), then Datadog's unified service tags;
        # resolve_identity then falls back to OTEL_SERVICE_NAME and the declared defaults.
        service, env, version = (
            given or read((var.name, dd), var.kind, None, logger=var.logger)
            for given, var, dd in ((service, SERVICE, "DD_SERVICE"), (env, ENV, "DD_ENV"),
                                   (version, VERSION, "DD_VERSION")))
        service, env, version = resolve_identity(service, env, version)
        backend = DatadogBackend(
            url, api_key=api_key, service=service, env=env, version=version,
            source=source or DATADOG["source"].from_env(),
            tags=_tags(tags if tags is not None else env_str("DD_TAGS")),
            hostname=hostname or env_str("DD_HOSTNAME") or socket.gethostname(),
        )
        super().__init__(backend, service=service, env=env, version=version, registry=registry, level=level,
                         **options)
