"""Fixtures of the load-test tests: a real local platform, and locust run as its own process.

Locust runs in a subprocess (``python -m locust -f loadtests/<file>.py``) exactly as a release
engineer runs it: gevent's monkey patching then never touches the pytest process. The platform
is started with the CLI (``ofsre platform up --detach``) in a temporary data directory, with
mTLS on: the personas' PKI (``ofsre loadtest pki``) is the gateway's client CA, and the load
generator forwards each institution's certificate like the WAF in front of the gateway does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = ROOT / "loadtests"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFSRE_", "LOCUST_"))}
    env.update(extra)
    return env


def run_locust(locustfile: str, host: str, *args: str, timeout: float = 90, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``locust -f loadtests/<locustfile> --headless --host HOST ARGS`` in its own process."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / locustfile), "--headless", "--host", host,
           "--only-summary", "--loglevel", "WARNING", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env or clean_env())


@dataclass
class Platform:
    data_dir: Path
    pki: Path
    gateway: str
    runtime_metrics: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """The whole platform (real processes, SQLite, db queue, mTLS on), stopped afterwards."""
    base = tmp_path_factory.mktemp("platform")
    data_dir, pki = base / "var", base / "pki"
    ofsre = [sys.executable, "-m", "ofsre"]
    subprocess.run([*ofsre, "loadtest", "pki", str(pki), "--institutions", "6"], check=True, timeout=60,
                   env=clean_env(), capture_output=True)
    env = clean_env(OFSRE_CLIENT_CA_FILE=str(pki / "ca.pem"), OFSRE_TRUSTED_PROXIES="127.0.0.1/32")
    up = subprocess.run([*ofsre, "platform", "up", "--detach", "--data-dir", str(data_dir), "--gateway-port",
                         "0",
                         "--no-autoscale"], capture_output=True, text=True, timeout=180, env=env, cwd=base)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((data_dir / "runtime.json").read_text())
    try:
        yield Platform(data_dir, pki, state["endpoints"]["gateway"], state["endpoints"]["runtime_metrics"])
    finally:
        subprocess.run([*ofsre, "platform", "down", "--data-dir", str(data_dir)], timeout=90, env=env,
                       capture_output=True)


@pytest.fixture
def stand_in(http_stub):
    """``stand_in(respond)``: a stand-in gateway answering every GET (HTTP/1.1, keep-alive) with
    ``respond(request) -> (status, headers, body)`` (tests/http_stub.py), closed at teardown."""
    return lambda respond: http_stub(respond, methods=("GET",), protocol="HTTP/1.1")
