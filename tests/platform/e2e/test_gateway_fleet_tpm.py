"""Three real gateway processes enforce exactly the catalog's TPM limit together (Redis), or each
their own without a shared store (and say so at start-up).

Real parts: the Redis at 127.0.0.1:6379, ``python -m ofsre.platform.run gateway`` ×3, a catalog
copy whose baixa TPM is small (the limit still comes from the catalog), and a stand-in accounts
module answering 200. Each run uses its own Redis key prefix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from ...http_stub import Reply, Request

LIMIT = 6
ACCOUNTS = "/open-banking/accounts/v2/accounts"


def _accounts(request: Request) -> Reply:
    """The stand-in accounts module: 200 with an empty list to every GET."""
    return 200, {"content-type": "application/json"}, b'{"data": []}'


@pytest.fixture
def fleet(tmp_path, catalog_writer, http_stub):
    upstream = http_stub(_accounts, methods=("GET",), protocol="HTTP/1.1")
    catalog = catalog_writer(tmp_path, baixa_tpm=LIMIT)
    procs: list[tuple[subprocess.Popen, object]] = []

    def start(n: int, **env: str) -> list[str]:
        urls = []
        for _ in range(n):
            port_file = tmp_path / f"gw-{len(procs)}.port"
            log = open(tmp_path / f"gw-{len(procs)}.log", "wb")  # noqa: SIM115 - closed at teardown
            e = {k: v for k, v in os.environ.items() if not k.startswith("OFSRE_")}
            e.update(OFSRE_MTLS="off", OFSRE_CATALOG=str(catalog), OFSRE_DATA_DIR=str(tmp_path),
                     OFSRE_UPSTREAMS=json.dumps({"accounts": [upstream.url]}), OFSRE_GATEWAY_REPLICAS=str(n),
                     **env)
            p = subprocess.Popen([sys.executable, "-m", "ofsre.platform.run", "gateway", "--port", "0",
                                  "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT, env=e)
            procs.append((p, log))
            urls.append(port_file)
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in urls):
            assert time.monotonic() < deadline, "the gateways did not start"
            time.sleep(0.1)
        return [f"http://127.0.0.1:{f.read_text().strip()}" for f in urls]

    yield start
    for p, log in procs:
        p.terminate()
        p.wait(20)
        log.close()


def _within_one_minute() -> None:
    """Start the burst early enough in a clock minute that it cannot straddle two (a precondition)."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def _burst(urls: list[str], calls: int) -> list[int]:
    with httpx.Client(timeout=15) as client:
        return [client.get(urls[i % len(urls)] + ACCOUNTS,
                           headers={"x-fapi-interaction-id": str(uuid.uuid4())}).status_code
                for i in range(calls)]


def test_three_gateways_sharing_redis_admit_exactly_the_catalog_limit(fleet, tmp_path):
    urls = fleet(3, OFSRE_REDIS_URL="redis://127.0.0.1:6379/0",
                 OFSRE_REDIS_KEY_PREFIX=f"ofsre:test:{uuid.uuid4()}")
    _within_one_minute()
    statuses = _burst(urls, 3 * LIMIT)
    assert statuses.count(200) == LIMIT and statuses.count(429) == 2 * LIMIT, statuses
    logs = "".join((tmp_path / f"gw-{i}.log").read_text() for i in range(3))
    assert "counted fleet-wide in Redis" in logs and "no shared counter store" not in logs


def test_without_a_shared_store_each_gateway_counts_alone_and_warns(fleet, tmp_path):
    urls = fleet(3)
    _within_one_minute()
    statuses = _burst(urls, 3 * LIMIT)
    assert statuses.count(200) == 3 * LIMIT  # N replicas admit N x the limit: why the warning matters
    log = (tmp_path / "gw-0.log").read_text()
    assert "3 gateway replicas and no shared counter store" in log
