"""A local PCM: the report and token endpoints as documented, for tests, ``make bench`` and development.

The regulator's PCM cannot run here, so ofsre is tested against this server, which speaks
its documented wire protocol (openfinance.md §5, and the answers of the public mock
``Opus-Software/oof-pcm-mock``) and *checks* what it receives::

    POST /token/                          client credentials (HTTP Basic or form fields)
                                          → {"access_token", "expires_in", "token_type": "Bearer"}
    POST /report-api/v1/private/report    Bearer token, Content-Type application/json, a JSON array
    POST /report-api/v1/opendata/report   → 200 [{"reportId", "status", "correlationId"?, "message"?}]

Refusals, as the PCM's: no or unknown token → 401; a content type other than JSON → 415;
an ``Accept`` that excludes JSON → 406; a body that is not an array → 400 "Invalid payload
format: MUST be an array"; more than ``max_reports`` (5,000) reports → 413 "Record limit
exceeded". Each report is validated against §5 (required fields, ISO 8601 UTC timestamp with
milliseconds, integer ``processTimespan``, role-specific fields, private reports need a
``clientOrgId``): an invalid one is answered ``DISCARDED`` with a ``message`` naming the fault.

Faults are scripted: ``server.script(Reply(429, {"Retry-After": "1"}), Reply(500))`` makes the
next report requests answer those, then the server is healthy again; ``Reply(207,
statuses=("ACCEPTED", "UNPAIRED"))`` answers 207 cycling those results (a ``message`` on
each that is not ``ACCEPTED``); ``revoke_tokens()`` makes every issued token fail (401).
``received`` counts each accepted report by ``(fapiInteractionId, role)`` — duplicates show.

Run alone: ``python -m ofsre.exporters.pcm.mock --port 8090`` (client ``ofsre``/``secret``).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

__all__ = ["MockPcm", "Reply", "REPORT_PATHS", "validate_report"]

REPORT_PATHS = {"/report-api/v1/private/report": "private", "/report-api/v1/opendata/report": "opendata"}
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")
COMMON = ("fapiInteractionId", "endpoint", "statusCode", "httpMethod", "serverOrgId", "timestamp",
          "processTimespan", "role")
MESSAGES = {400: "Invalid payload format: MUST be an array", 401: "Unauthorized", 403: "Forbidden",
            406: "Content type not accepted", 413: "Record limit exceeded", 415: "Unsupported Media Type",
            429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass
class Reply:
    """One scripted answer to a report request (``status`` 200/207 answer with results)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    statuses: tuple[str, ...] = ("ACCEPTED",)
    delay: float = 0.0


def validate_report(report: Any, kind: str) -> str | None:
    """What is wrong with one report per §5, or None."""
    if not isinstance(report, dict):
        return "a report must be an object"
    missing = [f for f in COMMON if report.get(f) in (None, "")]
    if kind == "private" and not report.get("clientOrgId"):
        missing.append("clientOrgId")
    if report.get("role") == "CLIENT":
        missing += [f for f in ("endpointUriPrefix", "clientSSId") if not report.get(f)]
    if missing:
        return "missing fields: " + ", ".join(missing)
    if report["role"] not in ("SERVER", "CLIENT"):
        return "role must be SERVER or CLIENT"
    if not isinstance(report["statusCode"], int) or not isinstance(report["processTimespan"], int):
        return "statusCode and processTimespan must be integers"
    if not str(report["endpoint"]).startswith("/open-banking/"):
        return "endpoint must be an Open Finance template"
    if not TIMESTAMP.match(str(report["timestamp"])):
        return "timestamp must be UTC ISO 8601 with milliseconds"
    if kind == "opendata" and not isinstance(report.get("additionalInfo", {}).get("clientIp"), str):
        return "open data reports need additionalInfo.clientIp"
    return None


class MockPcm:
    """The server, on 127.0.0.1 (``port=0``: a free port), served by a background thread."""

    def __init__(self, *, port: int = 0, client_id: str = "ofsre", client_secret: str = "secret",
                 max_reports: int = 5000, token_lifetime: int = 300, delay: float = 0.0) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.max_reports, self.token_lifetime, self.delay = max_reports, token_lifetime, delay
        self.tokens: dict[str, float] = {}          # token → expiry (monotonic)
        self.token_requests = 0
        self.token_script: deque[int] = deque()     # statuses the token endpoint answers next
        self.replies: deque[Reply] = deque()
        self.received: Counter[tuple[str, str]] = Counter()
        self.reports: list[dict[str, Any]] = []     # every accepted report, in arrival order (duplicates too)
        self.requests: list[tuple[str, int, int]] = []   # (kind or "token", status, reports in body)
        self.unauthenticated = 0                    # report requests without a valid token
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-pcm", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- handling ------------------------------------------------------------------------------

    def _token(self, headers: Any, body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.token_requests += 1
            scripted = self.token_script.popleft() if self.token_script else None
        if scripted is not None:
            return scripted, {"message": MESSAGES.get(scripted, "error")}
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime
        return 200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def _report(self, kind: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        with self._lock:
            valid = token is not None and self.tokens.get(token, 0) > time.monotonic()
            if not valid:
                self.unauthenticated += 1
        if not valid:
            return 401, {"message": MESSAGES[401]}, {}
        if not (headers.get("content-type") or "").lower().startswith("application/json"):
            return 415, {"message": MESSAGES[415]}, {}
        accept = (headers.get("accept") or "*/*").lower()
        if "json" not in accept and "*/*" not in accept:
            return 406, {"message": MESSAGES[406]}, {}
        try:
            reports = json.loads(body)
        except ValueError:
            reports = None
        if not isinstance(reports, list):
            return 400, {"message": MESSAGES[400]}, {}
        if len(reports) > self.max_reports:
            return 413, {"message": MESSAGES[413]}, {}
        with self._lock:
            reply = self.replies.popleft() if self.replies else Reply(200)
        if reply.delay or self.delay:
            time.sleep(reply.delay or self.delay)
        if reply.status not in (200, 207):
            return reply.status, {"message": MESSAGES.get(reply.status, "error")}, reply.headers
        results = []
        accepted = []
        prefix = str(uuid.uuid4())[:24]   # reportIds: UUID-shaped, unique (uuid4 per report costs the mock)
        for i, report in enumerate(reports):
            fault = validate_report(report, kind)
            status = "DISCARDED" if fault else reply.statuses[i % len(reply.statuses)]
            result: dict[str, Any] = {"reportId": f"{prefix}{i:012x}", "status": status}
            if isinstance(report, dict) and report.get("correlationId"):
                result["correlationId"] = report["correlationId"]
            if fault or status != "ACCEPTED":
                result["message"] = fault or f"report {status.lower().replace('_', ' ')}"
            results.append(result)
            if not fault:
                accepted.append(report)
        with self._lock:
            for report in accepted:
                self.received[(report["fapiInteractionId"], report["role"])] += 1
            self.reports.extend(accepted)
        return reply.status, results, reply.headers

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.split("?", 1)[0]
                extra: dict[str, str] = {}
                count = 0
                if path in ("/token", "/token/"):
                    status, document = mock._token(headers, body)
                    kind = "token"
                elif path in REPORT_PATHS:
                    kind = REPORT_PATHS[path]
                    status, document, extra = mock._report(kind, headers, body)
                    count = len(document) if status in (200, 207) else 0
                else:
                    status, document, kind = 404, {"message": "Not Found"}, "other"
                with mock._lock:
                    mock.requests.append((kind, status, count))
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a local PCM (report and token endpoints)")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--port-file", type=Path, help="write the bound port here (with --port 0)")
    parser.add_argument("--client-id", default="ofsre")
    parser.add_argument("--client-secret", default="secret")
    args = parser.parse_args(argv)
    mock = MockPcm(port=args.port, client_id=args.client_id, client_secret=args.client_secret)
    if args.port_file:
        args.port_file.write_text(str(mock.port))
    print(f"local PCM on {mock.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        mock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
