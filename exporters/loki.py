"""Ship logs to Grafana Loki: batched JSON pushes, gzip, retries, optional disk spool.

Attach it like any handler::

    import logging
    from ofsre.exporters.loki import LokiHandler

    handler = LokiHandler("http://loki:3100", service="payments", tenant="openfinance")
    logging.getLogger().addHandler(handler)
    logging.getLogger("payments.pix").info("pix sent", extra={"payment_id": "p-1"})

or from ``logging.config.dictConfig`` (any constructor argument is a key)::

    {"version": 1,
     "handlers": {"loki": {"class": "ofsre.exporters.loki.LokiHandler",
                           "url": "http://loki:3100", "service": "payments", "labels": {"cluster": "sp1"}}},
     "root": {"handlers": ["loki"], "level": "INFO"}}

What Loki receives (``POST /loki/api/v1/push``, ``Content-Encoding: gzip``)::

    {"streams": [{"stream": {"service": "payments", "env": "prod", "level": "info"},
                  "values": [["1735787045678000000",
                              "{\\"logger\\":\\"payments.pix\\",\\"message\\":\\"pix sent\\",
                                \\"version\\":\\"1.4.0\\",
                                \\"trace_id\\":\\"4bf9…\\",\\"span_id\\":\\"00f0…\\",\\"interaction_id\\":\\"c9a3…\\",
                                \\"payment_id\\":\\"p-1\\"}"]]}]}

Streams are keyed by low-cardinality labels only (``service``, ``env``, ``level`` and the
static ``labels`` you add); ids and extras stay in the JSON line, or with
``structured_metadata=True`` the ids and the logger go to Loki's structured metadata
(Loki 3 or ``allow_structured_metadata``). Label names are cleaned with python-logging-loki's
rules (``.``, ``-`` and spaces become ``_``) and then must match ``[a-zA-Z_][a-zA-Z0-9_]*``
without the reserved ``__`` prefix; at most 15 labels.

A 400 drops the batch (counted as ``rejected``) even though Loki may have stored part of
it: the count errs on the side of reporting loss. A batch re-sent after a lost answer is
harmless, Loki ignores entries with the same timestamp and line.

The protobuf+snappy push format is not implemented: it needs two more dependencies and
saves little over gzip-compressed JSON, which Loki accepts on the same endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from logging_loki import const as _loki_const
from prometheus_client import REGISTRY, CollectorRegistry

from ._core import Entry, HttpBackend, ShippingHandler, resolve_identity
from ._json import dumps as _dumps
from ._options import LOKI, BackendLimits
from ._transport import auth_headers

__all__ = ["LokiHandler", "LokiBackend", "loki_label_name", "PUSH_PATH"]

PUSH_PATH = "/loki/api/v1/push"
LABEL_FIELDS: tuple[str, ...] = LOKI["label_fields"].default  # ("service", "env", "level")
METADATA_FIELDS = ("trace_id", "span_id", "interaction_id", "logger")
# grafana/loki pkg/validation/limits.go defaults.
MAX_LABELS, MAX_LABEL_NAME, MAX_LABEL_VALUE = 15, 1024, 2048
LOKI_LIMITS = BackendLimits(
    max_batch_records=10_000,
    max_batch_bytes=4 * 1024 * 1024,     # the default ingestion rate is 4 MB/s per tenant
    default_batch_bytes=1024 * 1024,     # Promtail's and Alloy's batch size
    max_record_bytes=256 * 1024,         # max_line_size
    max_record_age=7 * 24 * 3600.0,      # reject_old_samples_max_age
)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def loki_label_name(name: str) -> str:
    """``name`` cleaned with python-logging-loki's rules, then checked against Loki's; ValueError if
    invalid."""
    cleaned = str(name)
    for old, new in _loki_const.label_replace_with:
        cleaned = cleaned.replace(old, new)
    cleaned = "".join(c for c in cleaned if c in _loki_const.label_allowed_chars)
    if not _LABEL_NAME.fullmatch(cleaned) or cleaned.startswith("__") or len(cleaned) > MAX_LABEL_NAME:
        raise ValueError(f"invalid Loki label name {name!r} (must match [a-zA-Z_][a-zA-Z0-9_]*, "
                         "no '__' prefix)")
    return cleaned




def _parse_labels(raw: str) -> dict[str, str]:
    """``"cluster=sp1,region=sa-east-1"`` -> dict."""
    labels = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"OFSRE_LOKI_LABELS: {part!r} is not name=value")
        labels[name.strip()] = value.strip()
    return labels


def push_url(url: str) -> str:
    """Accept a base URL (``http://loki:3100``) or the full push URL."""
    url = url.rstrip("/")
    return url if url.endswith(PUSH_PATH) else url + PUSH_PATH


class LokiBackend(HttpBackend):
    """Encodes records as Loki push values and batches them into streams."""

    name = "loki"
    # The LogRecord attributes encode() and record_fields() read: all a shipper process gets.
    record_attributes = ("name", "levelno", "levelname", "created", "msecs")
    limits = LOKI_LIMITS

    def __init__(self, url: str, *, service: str, env: str, tenant: str | None, headers: Mapping[str, str],
                 labels: Mapping[str, str], label_fields: Sequence[str], structured_metadata: bool) -> None:
        self.url = push_url(url)
        self.headers = {"Content-Type": "application/json", **headers}
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        unknown = set(label_fields) - set(LABEL_FIELDS)
        if unknown:
            raise ValueError(f"label_fields may only name {LABEL_FIELDS}, not {sorted(unknown)}")
        self._label_fields = tuple(label_fields)
        static = {loki_label_name(k): str(v) for k, v in labels.items()}
        identity = {"service": service, "env": env}
        # An empty env (OFSRE_ENV unset) is no label at all: Loki refuses empty label values.
        static.update({k: identity[k] for k in self._label_fields if identity.get(k)})
        self._check_labels(static, extra=1 if "level" in self._label_fields else 0)
        self._static = static
        self._skip = frozenset(("timestamp", *self._label_fields))
        self._metadata = structured_metadata
        self._keys: dict[str, bytes] = {}

    @staticmethod
    def _check_labels(labels: Mapping[str, str], extra: int) -> None:
        if len(labels) + extra > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} Loki labels, got {len(labels) + extra}")
        for name, value in labels.items():
            if not value or len(value) > MAX_LABEL_VALUE:
                raise ValueError(f"Loki label {name}={value!r}: the value must have "
                                 f"1..{MAX_LABEL_VALUE} characters")

    def _stream_key(self, level: str) -> bytes:
        key = self._keys.get(level)
        if key is None:
            labels = dict(self._static)
            if "level" in self._label_fields:
                labels["level"] = level.lower()
            key = self._keys[level] = _dumps(labels).encode()
        return key

    @property
    def line_omits(self) -> frozenset[str]:
        """The fields of ``record_fields()`` the line leaves out: the timestamp and the stream labels."""
        return self._skip

    def encode(self, fields: dict[str, Any], record: Any) -> Entry:
        line = {k: v for k, v in fields.items() if k not in self._skip}
        return self.encode_line(line, record.created, fields["level"])

    def encode_line(self, line: dict[str, Any], created: float, level: str) -> Entry:
        """The entry of a record whose fields, without :attr:`line_omits`, are ``line`` (changed here
        with structured metadata). The shipper process builds ``line`` straight from a frame."""
        timestamp = str(int(created * 1e9))   # a string: Loki rejects a JSON number
        metadata = None
        if self._metadata:
            metadata = {k: str(line[k]) for k in METADATA_FIELDS if line.get(k) is not None}
            for k in METADATA_FIELDS:
                line.pop(k, None)
        # The value is ["<ns>", "<line JSON>"(, {metadata})], built by hand: encoding the line
        # string again is one C call, a list would go through the encoder's Python loop.
        value = '["' + timestamp + '",' + _dumps(_dumps(line))
        value += "," + _dumps(metadata) + "]" if metadata else "]"
        return Entry(self._stream_key(level), value.encode(), created)

    def body(self, entries: Sequence[Entry]) -> bytes:
        streams: dict[bytes, list[bytes]] = {}
        for entry in entries:
            streams.setdefault(entry.key, []).append(entry.body)
        return b'{"streams":[' + b",".join(
            b'{"stream":' + key + b',"values":[' + b",".join(values) + b"]}"
            for key, values in streams.items()
        ) + b"]}"


class LokiHandler(ShippingHandler):
    """A ``logging.Handler`` that ships records to Grafana Loki without blocking the caller.

    Arguments (each falls back to its environment variable, then the default):

    ==========================  ===============================  ===========================================
    argument                    environment                      meaning
    ==========================  ===============================  ===========================================
    ``url``                     ``OFSRE_LOKI_URL``               Loki base URL or full push URL (required)
    ``tenant``                  ``OFSRE_LOKI_TENANT``            ``X-Scope-OrgID`` (multi-tenant Loki)
    ``username``/``password``   ``OFSRE_LOKI_USERNAME``/``_PASSWORD``  basic auth
    ``token``                   ``OFSRE_LOKI_TOKEN``             bearer token (wins over basic auth)
    ``labels``                  ``OFSRE_LOKI_LABELS``            static labels, ``cluster=sp1,region=br``
    ``label_fields``            ``OFSRE_LOKI_LABEL_FIELDS``      which of service,env,level are labels (all)
    ``structured_metadata``     ``OFSRE_LOKI_STRUCTURED_METADATA``  ids and logger as structured metadata
    ``service``                 ``OFSRE_SERVICE``/``OTEL_SERVICE_NAME``  service name (else
                                                                 ``unknown_service:<process>``)
    ``env``/``version``         ``OFSRE_ENV``/``OFSRE_VERSION``  deployment environment, service version
    ==========================  ===============================  ===========================================

    plus the shipping options of :mod:`ofsre.exporters._options` (``queue_records``,
    ``overflow``, ``batch_wait``, ``spool_dir``, ``max_retry_time``…, env ``OFSRE_LOG_*``) and
    ``registry=`` (a prometheus ``CollectorRegistry`` for the self-metrics).

    ``flush(timeout)`` and ``close(timeout)`` return/stop within ``timeout`` seconds; records
    are flushed at interpreter exit. The handler's formatter is not used: the line is
    the JSON of :func:`ofsre.instrumentation.logs.record_fields` (redacted, with trace ids).
    """

    def __init__(self, url: str | None = None, *, service: str | None = None, env: str | None = None,
                 version: str | None = None, tenant: str | None = None, username: str | None = None,
                 password: str | None = None, token: str | None = None,
                 labels: Mapping[str, str] | None = None,
                 label_fields: Iterable[str] | str | None = None, structured_metadata: bool | None = None,
                 registry: CollectorRegistry | None = REGISTRY, level: int | str = 0, **options: Any) -> None:
        url = url or LOKI["url"].from_env()
        if not url:
            raise ValueError("LokiHandler needs a Loki URL: the url argument or OFSRE_LOKI_URL")
        service, env, version = resolve_identity(service, env, version)
        if label_fields is None:
            label_fields = LOKI["label_fields"].from_env()
        if isinstance(label_fields, str):
            label_fields = [f.strip() for f in label_fields.split(",") if f.strip()]
        backend = LokiBackend(
            url, service=service, env=env, tenant=tenant or LOKI["tenant"].from_env(),
            headers=auth_headers(username or LOKI["username"].from_env(),
                                 password or LOKI["password"].from_env(),
                                 token or LOKI["token"].from_env()),
            labels=dict(labels) if labels is not None else _parse_labels(LOKI["labels"].from_env()),
            label_fields=list(label_fields),
            structured_metadata=LOKI["structured_metadata"].get(structured_metadata),
        )
        super().__init__(backend, service=service, env=env, version=version, registry=registry, level=level,
                         **options)
