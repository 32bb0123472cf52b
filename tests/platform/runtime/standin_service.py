"""A tiny stand-in for an ofsre service process, used by the runtime tests.

Started like the real runner (``python standin_service.py <service> --host H --port P``),
it serves ``/healthz``, ``/readyz``, ``/metrics`` and ``/burn?ms=N`` (burns N ms of CPU, so
tests can load a replica), and shuts down cleanly on SIGTERM. As ``gateway`` it also
forwards ``/svc/<service>/<path>`` round-robin to the URLs in ``$OFSRE_UPSTREAMS_FILE``,
re-reading the file when its mtime changes, like the real gateway.

Knobs (environment): STANDIN_READY_DELAY (seconds before /readyz says 200),
STANDIN_IGNORE_SIGTERM=1 (only SIGKILL stops it), STANDIN_EXIT_CODE (exit at once with it),
STANDIN_SLOW_CLOSE_S (on SIGTERM, stop accepting on the shared port but keep its socket open
this long before exiting: a busy replica that leaves with connections waiting for it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

STARTED = time.monotonic()
READY_DELAY = float(os.environ.get("STANDIN_READY_DELAY", "0"))
COUNTS: dict[str, int] = {}
_counter = itertools.count()
_upstreams: dict = {"mtime": None, "data": {}}


def upstreams() -> dict:
    path = os.environ.get("OFSRE_UPSTREAMS_FILE", "")
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    if mtime != _upstreams["mtime"]:
        with open(path) as f:
            _upstreams.update(mtime=mtime, data=json.load(f))
    return _upstreams["data"]


class Handler(BaseHTTPRequestHandler):
    service = "standin"

    def log_message(self, *args):  # keep the log file small
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        COUNTS[url.path] = COUNTS.get(url.path, 0) + 1
        if url.path == "/healthz":
            return self._reply(200, b"ok")
        if url.path == "/readyz":
            ready = time.monotonic() - STARTED >= READY_DELAY
            return self._reply(200 if ready else 503, b"ready" if ready else b"starting")
        if url.path == "/metrics":
            lines = [f'standin_requests_total{{path="{p}"}} {n}' for p, n in sorted(COUNTS.items())]
            return self._reply(200, ("\n".join(lines) + "\n").encode())
        if url.path == "/pid":
            return self._reply(200, str(os.getpid()).encode())
        if url.path == "/burn":
            ms = float(parse_qs(url.query).get("ms", ["50"])[0])
            end = time.perf_counter() + ms / 1000
            while time.perf_counter() < end:
                pass
            return self._reply(200, str(os.getpid()).encode())
        if url.path.startswith("/svc/") and self.service == "gateway":
            return self._forward(url)
        return self._reply(404, b"not found")

    def _forward(self, url) -> None:
        _, _, name, rest = url.path.split("/", 3)
        targets = upstreams().get(name) or []
        if not targets:
            return self._reply(503, b"no upstream")
        target = targets[next(_counter) % len(targets)]
        query = f"?{url.query}" if url.query else ""
        try:
            with urllib.request.urlopen(f"{target}/{rest}{query}", timeout=10) as resp:
                return self._reply(resp.status, resp.read())
        except OSError as exc:
            return self._reply(502, str(exc).encode())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get("STANDIN_EXIT_CODE"):
        print("exiting at once as asked", flush=True)
        return int(os.environ["STANDIN_EXIT_CODE"])
    Handler.service = args.service
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    if os.environ.get("STANDIN_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shared = None
    if os.environ.get("OFSRE_SHARED_FD"):  # the gateway port's socket, inherited from the runtime (as run.py)
        shared = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
        shared.socket.close()
        shared.socket = socket.socket(fileno=int(os.environ["OFSRE_SHARED_FD"]))
        shared.daemon_threads = True
        threading.Thread(target=shared.serve_forever, daemon=True).start()
    print(f"{args.service} listening on {args.host}:{args.port} pid {os.getpid()}", flush=True)
    while not stop.wait(0.2):
        pass
    print("SIGTERM received: shutting down", flush=True)
    if shared is not None:
        shared.shutdown()
        time.sleep(float(os.environ.get("STANDIN_SLOW_CLOSE_S", "0")))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
