"""The runtime's own HTTP endpoint: ``/metrics`` (the kube_* series), ``/status`` (JSON), ``/healthz``.

Prometheus scrapes ``/metrics`` as it would scrape kube-state-metrics on a cluster;
``ofsre platform status`` reads ``/status`` from another shell::

    server = RuntimeServer(registry, status=runtime.status, host="127.0.0.1", port=0)
    server.start(); server.url      # 'http://127.0.0.1:41234'
    server.stop()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["RuntimeServer"]

log = logging.getLogger(__name__)


class RuntimeServer:
    def __init__(self, registry: CollectorRegistry, status: Callable[[], dict[str, Any]], *,
                 host: str = "127.0.0.1", port: int = 0):
        registry_, status_ = registry, status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the runtime's log

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                    elif path == "/status":
                        self._send(200, json.dumps(status_(), default=str).encode(), "application/json")
                    elif path == "/healthz":
                        self._send(200, b"ok", "text/plain")
                    else:
                        self._send(404, b"not found", "text/plain")
                except Exception:  # noqa: BLE001 - answer 500 rather than drop the connection
                    log.exception("runtime endpoint %s failed", path)
                    self._send(500, b"internal error", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET socket's address (bytes only for AF_UNIX)
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
