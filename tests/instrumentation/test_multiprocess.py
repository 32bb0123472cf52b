"""Multiprocess mode: a real gunicorn with two uvicorn workers sharing PROMETHEUS_MULTIPROC_DIR.

Each worker counts into its own files; /metrics (served by whichever worker takes the
scrape) must merge them so the counter equals the number of requests sent, exactly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ofsre.instrumentation import semconv

N = 120

APP = textwrap.dedent("""
    import os

    from fastapi import FastAPI

    from ofsre.instrumentation import instrument_app

    app = FastAPI()


    @app.get("/pid")
    async def pid():
        return {"pid": os.getpid()}


    instrument_app(app, "mp-test", version="1.0.0")
""")

GUNICORN_CONFIG = ("from ofsre.instrumentation.exposition import gunicorn_child_exit as child_exit "
                   " # noqa: F401\n")


@pytest.fixture
def gunicorn(tmp_path: Path):
    (tmp_path / "mp_app.py").write_text(APP)
    (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONFIG)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OFSRE_"))}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen(
        [str(gunicorn_bin), "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"fd://{sock.fileno()}",
         "-c", str(tmp_path / "gunicorn_conf.py"), "--chdir", str(tmp_path), "--log-level", "warning",
         "mp_app:app"],
        env=env, pass_fds=[sock.fileno()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sock.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{base}/metrics", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield base, metrics_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scrape_value(text: str, name: str, **labels) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split("} ", 1)[1].split(" ")[0])
    return total


def test_counts_from_two_workers_add_up_exactly(gunicorn, promtool_check):
    base, metrics_dir = gunicorn

    def hit(_):
        # A new connection per request, so the kernel can hand requests to either worker.
        with httpx.Client(timeout=10, headers={"connection": "close"}) as client:
            response = client.get(f"{base}/pid")
        assert response.status_code == 200
        return response.json()["pid"]

    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(hit, range(N)))
    # Which worker takes which request is the kernel's choice: usually both share the load (then
    # the exact totals below prove the merge), but a test cannot insist on it.
    assert 1 <= len(set(pids)) <= 2

    text = httpx.get(f"{base}/metrics", timeout=10).text
    labels = {"service": "mp-test", "route": "/pid", "method": "GET", "status": "200"}
    assert scrape_value(text, semconv.HTTP_REQUESTS.series, **labels) == N
    assert scrape_value(text, semconv.HTTP_DURATION.name + "_count", **labels) == N
    assert scrape_value(text, semconv.HTTP_DURATION.name + "_bucket", le="+Inf", **labels) == N
    assert scrape_value(text, semconv.HTTP_IN_FLIGHT.name, route="/pid") == 0  # livesum, nothing in flight
    assert scrape_value(text, semconv.BUILD_INFO.name, service="mp-test", version="1.0.0") == 1  # max mode
    assert len(list(metrics_dir.glob("*.db"))) >= 2  # the workers' files

    openmetrics = httpx.get(f"{base}/metrics", timeout=10,
                            headers={"accept": "application/openmetrics-text; version=1.0.0"}).text
    assert "trace_id" not in openmetrics  # multiprocess mode has no exemplars
    assert scrape_value(openmetrics, semconv.HTTP_REQUESTS.series, **labels) == N
    code, output = promtool_check(text)
    assert code == 0, output
