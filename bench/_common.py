"""What several benchmarks share: waiting for a port, the load generators, the in-process ASGI call
loop, best-of-rounds timing and the counting HTTP server (a log sink, an OTLP receiver).

Not a benchmark (``run.py`` runs ``bench_*.py`` only). The benchmarks import it as ``_common``:
``python bench/run.py`` and ``python bench/bench_x.py`` both put ``bench/`` first on ``sys.path``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

INTERACTION_ID = str(uuid.uuid4())   # the x-fapi-interaction-id the load generators send


def wait_port(port: int, failure: str, timeout: float = 30) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection, within ``timeout`` s (else raise ``failure``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(failure)


# -- load generators: requests/s of GET ``url`` for ``seconds``, keep-alive connections ------------

def on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that runs the child on ``cpus`` only (None: wherever the kernel likes)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs): the last CPU this process may use for the server, the
    others for the load, so the two never take turns on one core; (None, None) on one CPU or where
    affinity cannot be set."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def load_wrk(url: str, seconds: float, connections: int, cpus: set[int] | None = None) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "-H", f"x-fapi-interaction-id: {INTERACTION_ID}", url],
                         capture_output=True, text=True, check=True, preexec_fn=on_cpus(cpus)).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


_PY_CLIENT = r"""
import asyncio, sys, time
host, port, path, iid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seconds, conns = float(sys.argv[5]), int(sys.argv[6])
req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nx-fapi-interaction-id: {iid}\r\n\r\n".encode()
async def worker(stop, counts):
    r, w = await asyncio.open_connection(host, port)
    while time.monotonic() < stop:
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await r.readexactly(length)
        counts[0] += 1
    w.close()
async def main():
    counts = [0]; start = time.monotonic()
    await asyncio.gather(*(worker(start + seconds, counts) for _ in range(conns)))
    print(counts[0] / (time.monotonic() - start))
asyncio.run(main())
"""


def load_python(url: str, seconds: float, connections: int, cpus: set[int] | None = None) -> float:
    """Fallback load generator: asyncio keep-alive connections in a separate process."""
    parts = urlsplit(url)
    out = subprocess.run([sys.executable, "-c", _PY_CLIENT, parts.hostname, str(parts.port), parts.path,
                          INTERACTION_ID, str(seconds), str(connections)],
                         capture_output=True, text=True, check=True, preexec_fn=on_cpus(cpus)).stdout
    return float(out.strip())


def load_generator() -> tuple[Callable[..., float], str]:
    """wrk when it is installed, else the Python client; and the name the tables print."""
    if shutil.which("wrk"):
        return load_wrk, "wrk -t1"
    return load_python, "python asyncio client"


# -- the same app called in-process: no server, no sockets ------------------------------------------

def asgi_scope(path: str, interaction_id: str) -> dict:
    """An HTTP GET ``path`` scope, as uvicorn would pass it, carrying an ``x-fapi-interaction-id``."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"x-fapi-interaction-id", interaction_id.encode())]}


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict) -> None:
    pass


async def call_asgi(app, scope: dict, n: int) -> None:
    """Call the ASGI ``app`` ``n`` times with (a copy of) ``scope``; the response is discarded."""
    for _ in range(n):
        await app(dict(scope), _receive, _send)


def best_us(work: Callable[[], object], count: int, rounds: int = 3,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Microseconds per operation of ``work()`` (which does ``count`` of them): the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = clock()
        work()
        best = min(best, (clock() - started) / count * 1e6)
    return best


# -- a counting HTTP server in its own process (its parsing does not compete for the bench's GIL) --
# The bench's ``answer`` source defines ``answer(path, body) -> (records, status, content_type, out)``
# (``body`` already un-gzipped / inflated; content_type None for no header). GET /count returns the
# records counted so far, GET /reset the same and sets the count back to 0.

_COUNTING_SERVER = r"""
import gzip, sys, threading, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = 0
lock = threading.Lock()
{answer}

class Counter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms delayed-ACK stall
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        n, status, content_type, out = answer(self.path, body)
        with lock:
            count += n
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self):
        global count
        with lock:
            out = str(count).encode()
            if self.path == "/reset":
                count = 0
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class CountingServer:
    """The counting server, started at once; ``url`` is its base URL. Also a ``with`` block."""

    def __init__(self, answer: str, what: str = "the counting server") -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _COUNTING_SERVER.replace("{answer}", answer)],
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"{what} did not start")
        self.url = f"http://127.0.0.1:{line}"

    def _get(self, path: str) -> int:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return int(response.read())

    def count(self) -> int:
        return self._get("/count")

    def reset(self) -> int:
        return self._get("/reset")

    def wait_for(self, expected: int, timeout: float = 60.0) -> bool:
        """Whether the server counted ``expected`` records within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= expected:
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> CountingServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
