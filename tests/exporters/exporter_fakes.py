"""Fake Loki, Datadog and Elasticsearch servers (and small helpers) for the shipper tests.

Each :class:`FakeBackend` is a real server on 127.0.0.1 (port 0, tests/http_stub.py) that
speaks one backend's documented wire protocol and *validates* every request (paths,
headers, gzip, JSON/NDJSON shape, Loki label names and string timestamps, Datadog item and
size limits, Elastic ``create`` actions, data stream name and ECS fields). A request that
breaks the protocol is answered 400 and noted in ``errors`` (tests assert it stays empty).

Faults are scripted: ``server.respond(Reply(429, {"Retry-After": "1"}), Reply(500))`` makes
the next requests answer those, then the server is healthy again. ``stop()``/``start()``
take the backend down (connection refused, keep-alive connections cut) and bring it back
on the same port. Every request's arrival (monotonic and wall time) and records are kept.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry

from ofsre.instrumentation import semconv

from ..http_stub import HttpStub, QuietHandler

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DATA_STREAM = re.compile(r"logs-[a-z0-9_.]+-[a-z0-9_.]+")
HIGH_CARDINALITY = {"trace_id", "span_id", "interaction_id", "logger", "message"}
SUCCESS = {"loki": 204, "datadog": 202, "elastic": 200}
PATHS = {"loki": "/loki/api/v1/push", "datadog": "/api/v2/logs", "elastic": "/_bulk"}
API_KEY = "test-api-key"


@dataclass
class Reply:
    """One scripted answer. ``status=0`` is the backend's normal success."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: threading.Event | None = None   # hold the answer until this is set
    items: list[int] | None = None        # Elastic: per-item statuses, cycled over the documents


@dataclass
class Arrival:
    monotonic: float
    wall: float
    status: int
    messages: list[str]
    ids: list[str]


class FakeBackend:
    def __init__(self, kind: str, *, tenant: str | None = None) -> None:
        self.kind, self.tenant = kind, tenant
        self.arrivals: list[Arrival] = []
        self.delivered: list[str] = []        # messages of accepted records, duplicates included
        self.docs: dict[str, dict] = {}       # Elastic documents by _id
        self.records: list[Any] = []          # accepted records as decoded (Loki: (labels, value))
        self.errors: list[str] = []
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self._hangs: list[threading.Event] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port = 0
        self._server: HttpStub | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control --------------------------------------------------------------------------

    def respond(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)
            self._hangs.extend(r.hang for r in replies if r.hang is not None)

    def start(self) -> None:
        self._server = HttpStub(self._handler_class(), port=self.port, name=f"fake-{self.kind}",
                                poll_interval=0.05)
        self.port = self._server.port

    def stop(self) -> None:
        """Backend down: no listener, and open keep-alive connections are cut."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for event in self._hangs:
            event.set()
        self.stop()

    def messages(self) -> set[str]:
        with self._lock:
            return set(self.delivered)

    # --- protocol -------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # no 40 ms delayed-ACK stall between headers and body

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802
                fake._serve(self)

        return Handler

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        arrived, wall = time.monotonic(), time.time()
        raw = req.rfile.read(int(req.headers.get("Content-Length", 0)))
        with self._lock:
            reply = self.script.popleft() if self.script else self.default
        problems: list[str] = []
        try:
            body = gzip.decompress(raw) if req.headers.get("Content-Encoding") == "gzip" else raw
            if req.headers.get("Content-Encoding") != "gzip":
                problems.append("body not gzip-encoded")
            parsed = getattr(self, "_parse_" + self.kind)(req, body, problems)
        except Exception as exc:  # noqa: BLE001 - anything unparseable is a protocol error
            problems.append(f"unparseable request: {exc!r}")
            parsed = []
        messages = [p["message"] for p in parsed if isinstance(p, dict) and "message" in p]
        ids = [p.get("_id", "") for p in parsed if isinstance(p, dict)]
        if reply.hang is not None:
            reply.hang.wait(30)
        if reply.delay:
            time.sleep(reply.delay)
        if problems:
            status, payload = 400, json.dumps({"problems": problems}).encode()
            with self._lock:
                self.errors.extend(problems)
        elif reply.status and reply.status != SUCCESS[self.kind]:
            status, payload = reply.status, b'{"error":"scripted"}'
        else:
            status, payload = self._accept(parsed, reply)
        with self._lock:
            self.arrivals.append(Arrival(arrived, wall, status, messages, ids))
        try:
            req.send_response(status)
            for name, value in reply.headers.items():
                req.send_header(name, value)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            req.wfile.write(payload)
        except OSError:
            req.close_connection = True   # the client gave up waiting (a timeout test): expected

    def _accept(self, parsed: list[dict], reply: Reply) -> tuple[int, bytes]:
        with self._lock:
            if self.kind != "elastic":
                self.delivered.extend(p["message"] for p in parsed)
                self.records.extend(parsed)
                return SUCCESS[self.kind], b"" if self.kind == "loki" else b"{}"
            items, errors = [], False
            for index, doc in enumerate(parsed):
                status = reply.items[index % len(reply.items)] if reply.items else 201
                if status == 201 and doc["_id"] in self.docs:
                    status = 409  # what Elasticsearch answers to a create with an existing _id
                if status == 201:
                    self.docs[doc["_id"]] = doc
                    self.delivered.append(doc["message"])
                    self.records.append(doc)
                item = {"status": status}
                if status >= 300:
                    errors = True
                    item["error"] = {"type": "scripted_or_conflict", "reason": f"status {status}"}
                items.append({"create": item})
            return 200, json.dumps({"errors": errors, "items": items}).encode()

    def _parse_loki(self, req: BaseHTTPRequestHandler, body: bytes, problems: list[str]) -> list[dict]:
        if req.path != PATHS["loki"]:
            problems.append(f"path {req.path}")
        if req.headers.get("Content-Type") != "application/json":
            problems.append("content type")
        if self.tenant and req.headers.get("X-Scope-OrgID") != self.tenant:
            problems.append("missing X-Scope-OrgID")
        out = []
        for stream in json.loads(body)["streams"]:
            labels, values = stream["stream"], stream["values"]
            if not labels or len(labels) > 15:
                problems.append(f"label count {len(labels)}")
            for name, value in labels.items():
                if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
                    problems.append(f"invalid label name {name!r}")
                if name in HIGH_CARDINALITY:
                    problems.append(f"high-cardinality label {name!r}")
                if not isinstance(value, str) or not value:
                    problems.append(f"label value {value!r}")
            for value in values:
                if not isinstance(value[0], str) or not value[0].isdigit():
                    problems.append(f"timestamp {value[0]!r} is not a string of unix nanoseconds")
                if len(value) == 3 and not all(isinstance(v, str) for v in value[2].values()):
                    problems.append("structured metadata values must be strings")
                line = json.loads(value[1])
                out.append({**line, "_labels": labels, "_ts": value[0],
                            "_metadata": value[2] if len(value) == 3 else {}})
        return out

    def _parse_datadog(self, req: BaseHTTPRequestHandler, body: bytes, problems: list[str]) -> list[dict]:
        if req.path != PATHS["datadog"]:
            problems.append(f"path {req.path}")
        if req.headers.get("DD-API-KEY") != API_KEY:
            problems.append("DD-API-KEY header")
        if len(body) > 5_000_000:
            problems.append(f"payload of {len(body)} bytes exceeds 5 MB")
        items = json.loads(body)
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            problems.append("body must be an array of 1..1000 items")
        for item in items:
            missing = {"message", "ddsource", "ddtags", "hostname", "service", "status"} - set(item)
            if missing:
                problems.append(f"item without {sorted(missing)}")
            if time.time() * 1000 - item.get("timestamp", 0) > 18 * 3600 * 1000:
                problems.append("timestamp older than 18 h")
        return items

    def _parse_elastic(self, req: BaseHTTPRequestHandler, body: bytes, problems: list[str]) -> list[dict]:
        if not req.path.startswith(PATHS["elastic"]):
            problems.append(f"path {req.path}")
        if req.headers.get("Content-Type") != "application/x-ndjson":
            problems.append("content type")
        if not body.endswith(b"\n"):
            problems.append("NDJSON body without the final newline")
        lines = body.decode().split("\n")[:-1]
        if len(lines) % 2:
            problems.append("odd number of NDJSON lines")
        out = []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=False):
            action = json.loads(action_line)
            if list(action) != ["create"]:
                problems.append(f"action {list(action)} (data streams accept only create)")
                continue
            meta = action["create"]
            if not DATA_STREAM.fullmatch(meta.get("_index", "")):
                problems.append(f"data stream name {meta.get('_index')!r}")
            doc = json.loads(doc_line)
            missing = {"@timestamp", "ecs.version", "log.level", "message"} - set(doc)
            if missing or "name" not in doc.get("service", {}):
                problems.append(f"document without ECS fields {sorted(missing)}")
            if next(iter(doc)) != "@timestamp":
                problems.append("@timestamp is not the first field")
            out.append({**doc, "_id": meta.get("_id"), "_index": meta.get("_index")})
        return out


def sample(registry: CollectorRegistry, spec: semconv.MetricSpec, **labels: str) -> float:
    return registry.get_sample_value(spec.series, labels) or 0.0


def dropped(registry: CollectorRegistry, backend: str, reason: str | None = None) -> float:
    from ofsre.exporters._core import DROP_REASONS
    reasons = [reason] if reason else DROP_REASONS
    return sum(sample(registry, semconv.LOG_RECORDS_DROPPED, backend=backend, reason=r) for r in reasons)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


FAST = {"batch_wait": 0.05, "backoff_initial": 0.02, "backoff_max": 0.1, "request_timeout": 5.0,
        "flush_timeout": 10.0}


def make_handler(kind: str, server: FakeBackend, registry: CollectorRegistry | None, **options: Any):
    """A handler of ``kind`` pointed at ``server``, with test-short waits unless overridden."""
    opts = {**FAST, **options}
    if kind == "loki":
        from ofsre.exporters.loki import LokiHandler
        return LokiHandler(server.url, service="payments", env="test", tenant=server.tenant,
                           registry=registry, **opts)
    if kind == "datadog":
        from ofsre.exporters.datadog import DatadogHandler
        return DatadogHandler(API_KEY, url=server.url + PATHS["datadog"], service="payments", env="test",
                              registry=registry, **opts)
    from ofsre.exporters.elastic import ElasticHandler
    return ElasticHandler(server.url, service="payments", env="test", registry=registry, **opts)
