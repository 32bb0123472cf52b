"""The verifier's server view from a real Prometheus (Debian's binary; `make test` installs it).

Prometheus scrapes a stand-in gateway's ``/metrics`` (the real series names from semconv,
a counter growing at 20 requests/s, a histogram whose p95 sits in the 250 ms bucket); the
verifier's queries must read them back, and the comparison with the client's view must name
the routes where the two disagree.
"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest

from ofsre.instrumentation import semconv
from ofsre.loadtests.verify import disagreements
from ofsre.loadtests.watchers import prometheus_server_view

ROUTE = "/open-banking/accounts/v2/accounts"
LABELS = f'service="gateway",method="GET",route="{ROUTE}",status="200",api="accounts",tier="baixa"'
T0 = time.time()


def _metrics(request):
    n = int(20 * (time.time() - T0))
    buckets = [(0.1, int(n * 0.5)), (0.25, int(n * 0.97)), (0.5, n), ("+Inf", n)]
    lines = [f"# TYPE {semconv.HTTP_REQUESTS.name} counter",
             f"{semconv.HTTP_REQUESTS.series}{{{LABELS}}} {n}",
             f"# TYPE {semconv.HTTP_DURATION.name} histogram"]
    lines += [f'{semconv.HTTP_DURATION.name}_bucket{{{LABELS},le="{le}"}} {c}' for le, c in buckets]
    lines += [f"{semconv.HTTP_DURATION.name}_count{{{LABELS}}} {n}",
              f"{semconv.HTTP_DURATION.name}_sum{{{LABELS}}} {n * 0.12}"]
    return 200, {"content-type": "text/plain; version=0.0.4"}, ("\n".join(lines) + "\n").encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path, stand_in):
    gateway = stand_in(_metrics)
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: gateway\n"
                      f"    static_configs: [{{targets: ['{gateway.url.split('://')[1]}']}}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _wait(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s")


def test_the_server_view_comes_from_prometheus_and_disagreements_are_named(prometheus):
    def view():
        try:
            got = prometheus_server_view(prometheus, 30).get(("GET", ROUTE), {})
        except OSError:
            return None  # not listening yet
        return got if got.get("requests", 0) > 20 and "p95_ms" in got else None

    server = _wait(view)
    assert 100 < server["p95_ms"] <= 250  # the 250 ms bucket holds the 95th percentile
    n = server["requests"]
    agree = {("GET", ROUTE): {"requests": int(n), "p95_ms": server["p95_ms"]}}
    assert disagreements(agree, {("GET", ROUTE): server}) == []
    off = {("GET", ROUTE): {"requests": int(n * 3) + 10, "p95_ms": 2000.0}}
    notes = disagreements(off, {("GET", ROUTE): server}, "Prometheus")
    assert len(notes) == 2 and all(ROUTE in note and "Prometheus" in note for note in notes)
    assert httpx.get(f"{prometheus}/-/ready").status_code == 200
