"""Shipping settings shared by every handler: argument first, then ``OFSRE_LOG_*``, then a default.

Each option is a :class:`ofsre.instrumentation.config.Var` declared below (argument name, variable,
default, meaning); the README's variable table is generated from them (``ofsre config vars --markdown``).
An explicit argument that makes no sense raises ``ValueError``; a malformed environment value is
logged once and the default used (a typo in a variable must not stop a service).

``OFSRE_LOG_SHIPPER`` (read by :func:`ofsre.exporters.install_from_env`) and each backend's own
``OFSRE_LOKI_*``, ``OFSRE_DATADOG_*`` and ``OFSRE_ELASTIC_*`` variables are declared here too (the
backend modules import an optional dependency each, so they read these declarations instead of holding
them). Each is read as ``argument or VAR.from_env()``, the argument winning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ofsre.instrumentation.config import BOOLEAN, TEXT, UNSET, Var, choice, duration, integer, items, size

from ._buffer import DROP_NEWEST, OVERFLOW_POLICIES

__all__ = ["ShipperOptions", "BackendLimits", "resolve_options", "ENV_VARS", "OPTIONS", "BODY_MARGIN",
           "LOG_SHIPPER", "SHIPPER_PROCESS", "LOKI", "DATADOG", "ELASTIC"]

_LOGGER = "ofsre.exporters"
_MiB = 1024 * 1024
BODY_MARGIN = 1024  # bytes of a batch kept for the request envelope (brackets, Loki stream headers)


def _option(name: str, kind: Any, default: Any, argument: str, doc: str,
            shown: str | None = None) -> Var[Any]:
    return Var(name, kind, default, reader="exporters", argument=argument, doc=doc, shown=shown,
               logger=_LOGGER)


# A burst is bounded by its bytes, not its count: 32 MiB holds ~100,000 records of a 100-byte
# message (~330 bytes encoded). The count only caps the Python objects of tiny records.
OPTIONS: dict[str, Var[Any]] = {var.argument or "": var for var in (
    _option("OFSRE_LOG_QUEUE_RECORDS", integer(0), 250_000, "queue_records",
            "records the memory buffer holds (a ceiling for tiny records; the byte budget is the bound)"),
    _option("OFSRE_LOG_QUEUE_BYTES", size(), 32 * _MiB, "queue_bytes",
            "encoded bytes the memory buffer holds (the bytes bound a burst: ~100 000 records of a 100-byte "
            "message)", shown="`33554432` (32 MiB)"),
    _option("OFSRE_LOG_OVERFLOW", choice(*OVERFLOW_POLICIES), DROP_NEWEST, "overflow",
            "when the buffer is full: `drop_newest`, `drop_oldest` or `block`"),
    _option("OFSRE_LOG_BLOCK_TIMEOUT", duration(), 0.1, "block_timeout",
            "seconds a log call may wait under `block`"),
    _option("OFSRE_LOG_BATCH_WAIT", duration(), 1.0, "batch_wait", "seconds a partial batch waits for more"),
    _option("OFSRE_LOG_BATCH_RECORDS", integer(0), 0, "batch_records", "records per request",
            shown="the backend's maximum"),
    _option("OFSRE_LOG_BATCH_BYTES", size(), 0, "batch_bytes", "uncompressed bytes per request",
            shown="the backend's default (Loki 1 MiB, Datadog 1000 items and 5 MB, Elastic 5 MiB)"),
    _option("OFSRE_LOG_TIMEOUT", duration(), 10.0, "request_timeout", "seconds per HTTP request"),
    _option("OFSRE_LOG_BACKOFF", duration(), 0.5, "backoff_initial",
            "first retry delay cap, doubled each time"),
    _option("OFSRE_LOG_BACKOFF_MAX", duration(), 30.0, "backoff_max", "largest retry delay cap"),
    _option("OFSRE_LOG_RETRY_TIME", duration(unlimited=True), 300.0, "max_retry_time",
            "seconds before a failing batch is dropped; `none` (or `math.inf`): forever",
            shown="`300`; forever with a spool"),
    _option("OFSRE_LOG_SPOOL_DIR", TEXT, None, "spool_dir", "directory of the on-disk spool",
            shown="no spool"),
    _option("OFSRE_LOG_SPOOL_BYTES", size(), 256 * _MiB, "spool_bytes", "disk the spool may use",
            shown="`268435456` (256 MiB)"),
    _option("OFSRE_LOG_FLUSH_TIMEOUT", duration(), 5.0, "flush_timeout",
            "default timeout of `flush()`, `close()` and at exit"),
)}
ENV_VARS = {argument: var.name for argument, var in OPTIONS.items()}  # argument -> variable

# Read by ShippingHandler (not a ShipperOptions field: it chooses which shipper runs the options).
SHIPPER_PROCESS = _option(
    "OFSRE_LOG_SHIPPER_PROCESS", BOOLEAN, False, "shipper_process",
    "`on`: redaction, encoding, batching and HTTP run in a child process (`python -m "
    "ofsre.exporters._process`) instead of a thread sharing the app's GIL; the overflow policy is then "
    "`drop_newest` (with a spool, after a wait for the child's disk)")

# Read by install_from_env (exporters/__init__.py), which refuses an unknown name: a misconfigured log
# pipeline should stop a deploy, not silently ship nothing.
LOG_SHIPPER = Var("OFSRE_LOG_SHIPPER", TEXT, "none", logger=_LOGGER, reader="exporters (`install_from_env`)",
                  doc="the log shipper: `none` (stdout only), `loki`, `datadog` or `elastic` (another name "
                      "stops the start); each one's variables: `OFSRE_LOKI_*`, `OFSRE_DATADOG_*` (and "
                      "Datadog's `DD_*`), `OFSRE_ELASTIC_*`")


def _backend(name: str, kind: Any, default: Any, argument: str, doc: str, **more: Any) -> Var[Any]:
    backend = name.split("_")[1].lower()
    return Var(name, kind, default, reader=f"exporters (`{backend}`)", argument=argument, doc=doc,
               logger=_LOGGER, **more)


# Each backend's own variables, by argument of its handler (LokiHandler, DatadogHandler, ElasticHandler).
LOKI: dict[str, Var[Any]] = {var.argument or "": var for var in (
    _backend("OFSRE_LOKI_URL", TEXT, None, "url", "Loki base URL or full push URL", shown="required"),
    _backend("OFSRE_LOKI_TENANT", TEXT, None, "tenant", "`X-Scope-OrgID` (multi-tenant Loki)"),
    _backend("OFSRE_LOKI_USERNAME", TEXT, None, "username", "basic auth user"),
    _backend("OFSRE_LOKI_PASSWORD", TEXT, None, "password", "basic auth password"),
    _backend("OFSRE_LOKI_TOKEN", TEXT, None, "token", "bearer token (wins over basic auth)"),
    _backend("OFSRE_LOKI_LABELS", TEXT, "", "labels", "static stream labels, `cluster=sp1,region=br` (a part "
             "that is not `name=value` stops the start)"),
    _backend("OFSRE_LOKI_LABEL_FIELDS", items(str, label="fields"), ("service", "env", "level"),
             "label_fields", "which of `service`, `env`, `level` are stream labels",
             shown="`service,env,level`"),
    _backend("OFSRE_LOKI_STRUCTURED_METADATA", BOOLEAN, False, "structured_metadata",
             "`on`: the ids and the logger go to Loki's structured metadata (Loki 3), not the JSON line"),
)}
DATADOG: dict[str, Var[Any]] = {var.argument or "": var for var in (
    _backend("OFSRE_DATADOG_URL", TEXT, None, "url",
             "full intake URL, overriding `DD_SITE` (proxies, tests)", shown="the intake of `DD_SITE`"),
    _backend("OFSRE_DATADOG_SOURCE", TEXT, "python", "source", "`ddsource` of every record"),
)}
ELASTIC: dict[str, Var[Any]] = {var.argument or "": var for var in (
    _backend("OFSRE_ELASTIC_URL", TEXT, None, "url", "Elasticsearch URL", shown="required"),
    _backend("OFSRE_ELASTIC_API_KEY", TEXT, None, "api_key", "`Authorization: ApiKey …` (the encoded form)"),
    _backend("OFSRE_ELASTIC_USERNAME", TEXT, None, "username", "basic auth user"),
    _backend("OFSRE_ELASTIC_PASSWORD", TEXT, None, "password", "basic auth password"),
    _backend("OFSRE_ELASTIC_DATASET", TEXT, None, "dataset",
             "data stream dataset (`logs-<dataset>-<namespace>`)", shown="the service name"),
    _backend("OFSRE_ELASTIC_NAMESPACE", TEXT, None, "namespace", "data stream namespace",
             shown="the env, or `default`"),
)}


@dataclass(frozen=True)
class BackendLimits:
    """What one backend accepts; the shipper never builds a request beyond these."""

    max_batch_records: int
    max_batch_bytes: int           # uncompressed request body
    max_record_bytes: int          # one encoded record; longer messages are truncated to fit
    max_record_age: float | None   # seconds; older records are dropped (reason "too_old") at send time
    default_batch_bytes: int | None = None  # when smaller batches suit the backend better than its maximum


@dataclass(frozen=True)
class ShipperOptions:
    queue_records: int = OPTIONS["queue_records"].default
    queue_bytes: int = OPTIONS["queue_bytes"].default
    overflow: str = OPTIONS["overflow"].default
    block_timeout: float = OPTIONS["block_timeout"].default
    batch_wait: float = OPTIONS["batch_wait"].default
    batch_records: int = OPTIONS["batch_records"].default       # 0: the backend's maximum
    batch_bytes: int = OPTIONS["batch_bytes"].default           # 0: the backend's default
    request_timeout: float = OPTIONS["request_timeout"].default
    backoff_initial: float = OPTIONS["backoff_initial"].default
    backoff_max: float = OPTIONS["backoff_max"].default
    max_retry_time: float | None = OPTIONS["max_retry_time"].default
    spool_dir: str | None = OPTIONS["spool_dir"].default
    spool_bytes: int = OPTIONS["spool_bytes"].default
    flush_timeout: float = OPTIONS["flush_timeout"].default


def resolve_options(limits: BackendLimits, **given: Any) -> ShipperOptions:
    """Merge arguments (``None``: not given) with ``OFSRE_LOG_*`` and defaults; check them against ``limits``.

    A bad argument raises ``ValueError``; a malformed variable is logged once and its default used."""
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown shipper option(s): {', '.join(sorted(unknown))}")
    values = {name: var.get(given.get(name), default=UNSET) for name, var in OPTIONS.items()}
    if values["max_retry_time"] is UNSET and values["spool_dir"] not in (UNSET, None):
        # With a spool the disk is the buffer: giving up after five minutes would throw away
        # exactly what the spool was configured to keep.
        values["max_retry_time"] = None
    return _validate(ShipperOptions(**{name: v for name, v in values.items() if v is not UNSET}), limits)


def _validate(opts: ShipperOptions, limits: BackendLimits) -> ShipperOptions:
    batch_records = opts.batch_records or limits.max_batch_records
    batch_bytes = opts.batch_bytes or limits.default_batch_bytes or limits.max_batch_bytes
    if batch_records > limits.max_batch_records:
        raise ValueError(f"batch_records={batch_records} exceeds the backend's {limits.max_batch_records}")
    if batch_bytes > limits.max_batch_bytes:
        raise ValueError(f"batch_bytes={batch_bytes} exceeds the backend's {limits.max_batch_bytes}")
    if batch_bytes < limits.max_record_bytes + BODY_MARGIN:
        raise ValueError(f"batch_bytes={batch_bytes} is below one record's maximum "
                         f"({limits.max_record_bytes}) plus {BODY_MARGIN}")
    if opts.queue_records < 1 or opts.queue_bytes < limits.max_record_bytes:
        raise ValueError("queue_records must be >= 1 and queue_bytes >= one record's maximum "
                         f"({limits.max_record_bytes})")
    if opts.spool_dir and opts.spool_bytes < batch_bytes:
        raise ValueError(f"spool_bytes={opts.spool_bytes} is below one batch ({batch_bytes})")
    if opts.backoff_max < opts.backoff_initial:
        raise ValueError("backoff_max must be >= backoff_initial")
    return ShipperOptions(**{**opts.__dict__, "batch_records": batch_records, "batch_bytes": batch_bytes})
