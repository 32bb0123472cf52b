"""Ship logs to Elasticsearch: ``_bulk`` NDJSON into a ``logs-<dataset>-<namespace>`` data stream.

Attach it like any handler::

    import logging
    from ofsre.exporters.elastic import ElasticHandler

    handler = ElasticHandler("https://es:9200", service="payments", api_key="<base64 id:key>")
    logging.getLogger().addHandler(handler)

or with ``logging.config.dictConfig``::

    {"version": 1,
     "handlers": {"elastic": {"class": "ofsre.exporters.elastic.ElasticHandler",
                              "url": "https://es:9200", "service": "payments", "namespace": "prod"}},
     "root": {"handlers": ["elastic"], "level": "INFO"}}

What Elasticsearch receives (``POST <url>/_bulk``, ``application/x-ndjson``, gzip)::

    {"create":{"_index":"logs-payments-prod","_id":"9f2c…"}}
    {"@timestamp":"2025-01-02T03:04:05.678Z","log.level":"info","message":"pix sent",
     "ecs.version":"1.6.0","service":{"name":"payments","version":"1.4.0","environment":"prod"},
     "event":{"dataset":"payments"},"trace":{"id":"4bf9…"},"span":{"id":"00f0…"},
     "labels":{"interaction_id":"c9a3…"},"log":{"logger":"payments.pix",…},"payment_id":"p-1",…}

Documents are ECS, made by ``ecs_logging.StdlibFormatter`` from a copy of the record whose
message, extras and error text are the *redacted* ones of
:func:`ofsre.instrumentation.logs.record_fields` (``log.original``, the raw message, is left
out). Data streams only accept ``create``; every document gets a deterministic ``_id`` (a
hash of the document, its timestamp and a per-process sequence number), so a batch sent
twice is indexed once: an item answered ``409`` is already there and counts as delivered.
Within a ``200`` answer with ``"errors": true`` each item is judged alone: 429 and 5xx items
are retried, other 4xx items are dropped and counted (``reason="rejected"``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import ecs_logging
from prometheus_client import REGISTRY, CollectorRegistry

from ._core import Entry, HttpBackend, Outcome, ShippingHandler, resolve_identity, status_outcome
from ._options import ELASTIC, BackendLimits
from ._transport import Reply, auth_headers, is_retryable

__all__ = ["ElasticHandler", "ElasticBackend", "data_stream_name"]

ELASTIC_LIMITS = BackendLimits(
    max_batch_records=5000,
    max_batch_bytes=10 * 1024 * 1024,      # Elastic suggests 5-15 MB bulk requests
    default_batch_bytes=5 * 1024 * 1024,
    max_record_bytes=1024 * 1024,          # our choice: a 1 MiB log line is already a bug
    max_record_age=None,
)
# Only what is needed to judge each item, instead of echoing every document's metadata back.
BULK_QUERY = "?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason"
_PART = re.compile(r"[a-z0-9][a-z0-9_.]{0,99}")
_RECORD_ATTRS = ("name", "levelname", "levelno", "pathname", "filename", "module", "lineno", "funcName",
                 "created", "msecs", "relativeCreated", "thread", "threadName", "processName", "process")
# record_fields keys that have an ECS home of their own; the rest are the record's extras.
_CORE = frozenset({"timestamp", "level", "logger", "message", "service", "env", "version",
                   "trace_id", "span_id", "interaction_id", "exception", "stack"})


def _part(value: str, what: str) -> str:
    if not _PART.fullmatch(value):
        raise ValueError(f"invalid data stream {what} {value!r}: lowercase letters, digits, '_' and '.', "
                         "no '-', at most 100 characters")
    return value


def _derived_part(value: str, fallback: str) -> str:
    """A dataset/namespace made from a service or env name: lowercase, ``-`` -> ``_``, odd characters gone."""
    cleaned = re.sub(r"[^a-z0-9_.]", "", value.lower().replace("-", "_"))[:100].lstrip("_.")
    return cleaned or fallback


def data_stream_name(dataset: str, namespace: str) -> str:
    """``logs-<dataset>-<namespace>``; ValueError if a part breaks Elastic's naming rules."""
    return f"logs-{_part(dataset, 'dataset')}-{_part(namespace, 'namespace')}"


class _EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter plus fields that are the same for every record of the handler.

    They are merged as ready-made objects: passing them as the formatter's ``extra=`` would
    de-dot and merge seven dotted names on every record (a third of its cost).
    """

    def __init__(self, static: dict[str, dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._static = static

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        result = super().format_to_ecs(record)
        for key, value in self._static.items():
            found = result.get(key)
            if found is not None and not isinstance(found, dict):
                raise TypeError(f"an extra named {key!r} clashes with the ECS object {key}")
            # Shared, never mutated: ecs-logging's json_dumps only pops from "log" and the top level.
            result[key] = {**value, **found} if found else value
        return result


class ElasticBackend(HttpBackend):
    """Encodes records as ECS documents with ``create`` actions; reads bulk answers item by item."""

    name = "elastic"
    limits = ELASTIC_LIMITS

    def __init__(self, url: str, *, service: str, env: str, version: str, dataset: str, namespace: str,
                 auth: dict[str, str]) -> None:
        self.url = url.rstrip("/") + "/_bulk" + BULK_QUERY
        self.headers = {"Content-Type": "application/x-ndjson", **auth}
        self.index = data_stream_name(dataset, namespace)
        service_fields = {"name": service, "version": version, **({"environment": env} if env else {})}
        self._formatter = _EcsFormatter(
            {"service": service_fields, "event": {"dataset": dataset},
             "data_stream": {"type": "logs", "dataset": dataset, "namespace": namespace}},
            exclude_fields=("log.original",),   # the raw, unredacted message
            ensure_ascii=False,
        )
        self._action_prefix = b'{"create":{"_index":"' + self.index.encode() + b'","_id":"'
        # _id = hash(document, sequence, origin): the origin keeps two processes (or a forked
        # child, whose pid differs) that log the same line in the same millisecond apart.
        self._origin = f"{socket.gethostname()}:{secrets.token_hex(8)}:".encode()
        self._sequence = itertools.count()

    def _safe_record(self, fields: dict[str, Any], record: logging.LogRecord,
                     prefix: str) -> logging.LogRecord:
        """A copy of ``record`` carrying only redacted text, for the ECS formatter."""
        safe = logging.LogRecord.__new__(logging.LogRecord)
        attrs = {name: getattr(record, name, None) for name in _RECORD_ATTRS}
        attrs.update(msg=fields["message"], args=None, exc_info=None, exc_text=None, stack_info=None)
        for key, value in fields.items():
            if key not in _CORE:
                attrs[prefix + key] = value
        ids = {"trace.id": fields.get("trace_id"), "span.id": fields.get("span_id"),
               "labels.interaction_id": fields.get("interaction_id")}
        attrs.update({k: v for k, v in ids.items() if v})
        error_text = fields.get("exception") or fields.get("stack")
        if error_text:
            attrs["error.stack_trace"] = error_text
            if record.exc_info and record.exc_info[0] is not None and fields.get("exception"):
                kind = record.exc_info[0].__name__
                last_line = fields["exception"].rstrip().rsplit("\n", 1)[-1]
                attrs["error.type"], attrs["error.message"] = kind, last_line.removeprefix(kind + ":").strip()
        safe.__dict__.update(attrs)
        return safe

    def _document(self, fields: dict[str, Any], record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(self._safe_record(fields, record, ""))
        except (TypeError, ValueError):
            # An extra clashes with an ECS object (extra={"log": "x"} vs log.logger): keep the
            # extras under "extra." instead of losing the record.
            return self._formatter.format(self._safe_record(fields, record, "extra."))

    def encode(self, fields: dict[str, Any], record: logging.LogRecord) -> Entry:
        document = self._document(fields, record).encode()
        digest = hashlib.blake2b(document, digest_size=16)
        digest.update(self._origin + f"{os.getpid()}:{next(self._sequence)}".encode())
        body = self._action_prefix + digest.hexdigest().encode() + b'"}}\n' + document + b"\n"
        return Entry(b"", body, record.created)

    def body(self, entries: Sequence[Entry]) -> bytes:
        return b"".join(e.body for e in entries)   # every pair already ends with "\n", as _bulk requires

    def outcome(self, reply: Reply, entries: Sequence[Entry]) -> Outcome:
        if reply.status != 200:
            return status_outcome(reply, len(entries))
        answer = json.loads(reply.content)
        if not answer.get("errors"):
            return Outcome("ok", delivered=len(entries))
        items = answer.get("items") or []
        if len(items) != len(entries):
            raise ValueError(f"bulk answer has {len(items)} items for {len(entries)} documents")
        delivered = rejected = 0
        retry: list[int] = []
        first_error = ""
        for index, item in enumerate(items):
            result = next(iter(item.values()))
            status = int(result.get("status", 500))
            if 200 <= status < 300 or status == 409:   # 409 on create with our _id: already indexed
                delivered += 1
                continue
            if is_retryable(status):
                retry.append(index)
            else:
                rejected += 1
            first_error = first_error or f"item {index}: {status} {json.dumps(result.get('error'))[:300]}"
        return Outcome("partial", delivered=delivered, rejected=rejected, retry=retry, detail=first_error)


class ElasticHandler(ShippingHandler):
    """A ``logging.Handler`` that ships ECS documents to an Elasticsearch data stream.

    Arguments (each falls back to its environment variable, then the default):

    =========================  ===================================  ==========================================
    argument                   environment                          meaning
    =========================  ===================================  ==========================================
    ``url``                    ``OFSRE_ELASTIC_URL``                Elasticsearch URL (required)
    ``api_key``                ``OFSRE_ELASTIC_API_KEY``            ``Authorization: ApiKey …`` (encoded form)
    ``username``/``password``  ``OFSRE_ELASTIC_USERNAME``/``_PASSWORD``  basic auth
    ``dataset``                ``OFSRE_ELASTIC_DATASET``            data stream dataset (the service name)
    ``namespace``              ``OFSRE_ELASTIC_NAMESPACE``          data stream namespace (env, or
                                                                    ``default``)
    ``service``                ``OFSRE_SERVICE``/``OTEL_SERVICE_NAME``  ``service.name`` (else
                                                                    ``unknown_service:<process>``)
    ``env``/``version``        ``OFSRE_ENV``/``OFSRE_VERSION``      ``service.environment``/
                                                                    ``service.version``
    =========================  ===================================  ==========================================

    plus the shipping options of :mod:`ofsre.exporters._options` (``queue_records``,
    ``overflow``, ``batch_wait``, ``spool_dir``, ``max_retry_time``…, env ``OFSRE_LOG_*``) and
    ``registry=`` for the self-metrics. Documents go to ``logs-<dataset>-<namespace>``.
    """

    def __init__(self, url: str | None = None, *, service: str | None = None, env: str | None = None,
                 version: str | None = None, dataset: str | None = None, namespace: str | None = None,
                 api_key: str | None = None, username: str | None = None, password: str | None = None,
                 registry: CollectorRegistry | None = REGISTRY, level: int | str = 0, **options: Any) -> None:
        url = url or ELASTIC["url"].from_env()
        if not url:
            raise ValueError("ElasticHandler needs an Elasticsearch URL: the url argument or "
                             "OFSRE_ELASTIC_URL")
        service, env, version = resolve_identity(service, env, version)
        dataset = dataset or ELASTIC["dataset"].from_env() or _derived_part(service, "generic")
        namespace = namespace or ELASTIC["namespace"].from_env() or _derived_part(env, "default")
        auth = auth_headers(username or ELASTIC["username"].from_env(),
                            password or ELASTIC["password"].from_env(),
                            api_key or ELASTIC["api_key"].from_env(), token_scheme="ApiKey")
        backend = ElasticBackend(url, service=service, env=env, version=version, dataset=dataset,
                                 namespace=namespace, auth=auth)
        super().__init__(backend, service=service, env=env, version=version, registry=registry, level=level,
                         **options)
