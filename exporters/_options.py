"""Shipping settings shared by every handler: argument first, then ``OFSRE_LOG_*``, then a default.

=============================  =====================  ==============================================
argument                       environment variable   meaning (default)
=============================  =====================  ==============================================
``queue_records``              OFSRE_LOG_QUEUE_RECORDS  records the memory buffer holds (250000: a ceiling
                                                        for tiny records; the byte budget is the bound)
``queue_bytes``                OFSRE_LOG_QUEUE_BYTES    encoded bytes the memory buffer holds (32 MiB)
``overflow``                   OFSRE_LOG_OVERFLOW       ``drop_newest`` | ``drop_oldest`` | ``block``
``block_timeout``              OFSRE_LOG_BLOCK_TIMEOUT  seconds a log call may wait under ``block`` (0.1)
``batch_wait``                 OFSRE_LOG_BATCH_WAIT     seconds a partial batch waits for more (1.0)
``batch_records``              OFSRE_LOG_BATCH_RECORDS  records per request (the backend's maximum)
``batch_bytes``                OFSRE_LOG_BATCH_BYTES    uncompressed bytes per request (backend's default)
``request_timeout``            OFSRE_LOG_TIMEOUT        seconds per HTTP request (10)
``backoff_initial``            OFSRE_LOG_BACKOFF        first retry delay cap, doubled each time (0.5)
``backoff_max``                OFSRE_LOG_BACKOFF_MAX    largest retry delay cap (30)
``max_retry_time``             OFSRE_LOG_RETRY_TIME     seconds before a failing batch is dropped; ``"none"``
                                                        or ``math.inf``: forever (300; forever with a spool)
``spool_dir``                  OFSRE_LOG_SPOOL_DIR      directory of the on-disk spool (unset: no spool)
``spool_bytes``                OFSRE_LOG_SPOOL_BYTES    disk the spool may use (256 MiB)
``flush_timeout``              OFSRE_LOG_FLUSH_TIMEOUT  default timeout of flush()/close() and at exit (5)
=============================  =====================  ==============================================

An explicit argument that makes no sense raises ``ValueError``; a malformed environment
value is logged and the default used (a typo in a variable must not stop a service).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from ._buffer import DROP_NEWEST, OVERFLOW_POLICIES

__all__ = ["ShipperOptions", "BackendLimits", "resolve_options", "ENV_VARS", "BODY_MARGIN"]

_log = logging.getLogger("ofsre.exporters")
_MiB = 1024 * 1024
BODY_MARGIN = 1024  # bytes of a batch kept for the request envelope (brackets, Loki stream headers)


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
    # A burst is bounded by its bytes, not its count: 32 MiB holds ~100,000 records of a 100-byte
    # message (~330 bytes encoded). The count only caps the Python objects of tiny records.
    queue_records: int = 250_000
    queue_bytes: int = 32 * _MiB
    overflow: str = DROP_NEWEST
    block_timeout: float = 0.1
    batch_wait: float = 1.0
    batch_records: int = 0       # 0: the backend's maximum
    batch_bytes: int = 0         # 0: the backend's default
    request_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_retry_time: float | None = 300.0
    spool_dir: str | None = None
    spool_bytes: int = 256 * _MiB
    flush_timeout: float = 5.0


ENV_VARS = {
    "queue_records": "OFSRE_LOG_QUEUE_RECORDS", "queue_bytes": "OFSRE_LOG_QUEUE_BYTES",
    "overflow": "OFSRE_LOG_OVERFLOW", "block_timeout": "OFSRE_LOG_BLOCK_TIMEOUT",
    "batch_wait": "OFSRE_LOG_BATCH_WAIT", "batch_records": "OFSRE_LOG_BATCH_RECORDS",
    "batch_bytes": "OFSRE_LOG_BATCH_BYTES", "request_timeout": "OFSRE_LOG_TIMEOUT",
    "backoff_initial": "OFSRE_LOG_BACKOFF", "backoff_max": "OFSRE_LOG_BACKOFF_MAX",
    "max_retry_time": "OFSRE_LOG_RETRY_TIME", "spool_dir": "OFSRE_LOG_SPOOL_DIR",
    "spool_bytes": "OFSRE_LOG_SPOOL_BYTES", "flush_timeout": "OFSRE_LOG_FLUSH_TIMEOUT",
}
_NO_LIMIT = frozenset({"none", "inf", "forever", "never"})


def _parse(name: str, raw: Any) -> Any:
    """Convert a raw value (argument or environment string) to the field's type; ValueError if it can't."""
    if name == "overflow":
        value = str(raw).strip().lower()
        if value not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {raw!r}")
        return value
    if name == "spool_dir":
        return os.fspath(raw) if raw else None
    if name == "max_retry_time" and (raw is math.inf or str(raw).strip().lower() in _NO_LIMIT):
        return None
    kind = int if name in ("queue_records", "queue_bytes", "batch_records", "batch_bytes", "spool_bytes") else float
    value = kind(raw)
    if value < 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, not {raw!r}")
    return value


def resolve_options(limits: BackendLimits, **given: Any) -> ShipperOptions:
    """Merge arguments (``None`` = not given) with ``OFSRE_LOG_*`` and defaults; validate against ``limits``."""
    unknown = set(given) - set(ENV_VARS)
    if unknown:
        raise TypeError(f"unknown shipper option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for field in fields(ShipperOptions):
        name = field.name
        if given.get(name) is not None:
            values[name] = _parse(name, given[name])      # a bad argument raises
            continue
        raw = os.environ.get(ENV_VARS[name], "").strip()
        if raw:
            try:
                values[name] = _parse(name, raw)
            except ValueError:
                _log.warning("%s=%r is not valid; using the default", ENV_VARS[name], raw)
    if "max_retry_time" not in values and values.get("spool_dir"):
        # With a spool the disk is the buffer: giving up after five minutes would throw away
        # exactly what the spool was configured to keep.
        values["max_retry_time"] = None
    return _validate(ShipperOptions(**values), limits)


def _validate(opts: ShipperOptions, limits: BackendLimits) -> ShipperOptions:
    batch_records = opts.batch_records or limits.max_batch_records
    batch_bytes = opts.batch_bytes or limits.default_batch_bytes or limits.max_batch_bytes
    if batch_records > limits.max_batch_records:
        raise ValueError(f"batch_records={batch_records} exceeds the backend's {limits.max_batch_records}")
    if batch_bytes > limits.max_batch_bytes:
        raise ValueError(f"batch_bytes={batch_bytes} exceeds the backend's {limits.max_batch_bytes}")
    if batch_bytes < limits.max_record_bytes + BODY_MARGIN:
        raise ValueError(f"batch_bytes={batch_bytes} is below one record's maximum ({limits.max_record_bytes})"
                         f" plus {BODY_MARGIN}")
    if opts.queue_records < 1 or opts.queue_bytes < limits.max_record_bytes:
        raise ValueError("queue_records must be >= 1 and queue_bytes >= one record's maximum "
                         f"({limits.max_record_bytes})")
    if opts.spool_dir and opts.spool_bytes < batch_bytes:
        raise ValueError(f"spool_bytes={opts.spool_bytes} is below one batch ({batch_bytes})")
    if opts.backoff_max < opts.backoff_initial:
        raise ValueError("backoff_max must be >= backoff_initial")
    return ShipperOptions(**{**opts.__dict__, "batch_records": batch_records, "batch_bytes": batch_bytes})
