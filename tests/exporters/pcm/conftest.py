"""Fixtures of the PCM tests: a local PCM (``ofsre.exporters.pcm.mock``), a store, report factories.

The local PCM is a real HTTP server on 127.0.0.1 speaking the documented report and token
protocol (array-only bodies, > 5,000 reports → 413, scripted 207/429/500/401); see its module.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ofsre.exporters.pcm.mock import MockPcm
from ofsre.exporters.pcm.sender import Sender, SenderOptions
from ofsre.exporters.pcm.store import ReportStore, brasilia_day, utc_iso

ORG_US = "11111111-1111-4111-8111-111111111111"
ORG_THEM = "22222222-2222-4222-8222-222222222222"
BALANCES = "/open-banking/accounts/v2/accounts/{accountId}/balances"


def report_row(*, ts: float | None = None, endpoint: str = BALANCES, method: str = "GET", status: int = 200,
               process_ms: int = 100, role: str = "SERVER", kind: str = "private") -> tuple:
    """One store row with a §5-valid JSON body, as the capture writes it."""
    ts = time.time() if ts is None else ts
    body = {"fapiInteractionId": str(uuid.uuid4()), "endpoint": endpoint, "statusCode": status, "httpMethod": method,
            "clientOrgId": ORG_THEM, "serverOrgId": ORG_US, "timestamp": utc_iso(ts), "processTimespan": process_ms,
            "role": role}
    if kind == "opendata":
        body["additionalInfo"] = {"clientIp": "203.0.113.7"}
    return (uuid.uuid4().hex, kind, role, brasilia_day(ts), ts, endpoint, method, status, process_ms,
            json.dumps(body))


def interaction_of(row: tuple) -> tuple[str, str]:
    body = json.loads(row[-1])
    return body["fapiInteractionId"], body["role"]


@pytest.fixture
def pcm() -> Iterator[MockPcm]:
    server = MockPcm()
    yield server
    server.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReportStore]:
    with ReportStore(tmp_path / "pcm" / "reports.db") as s:
        yield s


def sender_options(server: MockPcm, **overrides) -> SenderOptions:
    values = {"url": server.url, "token_url": server.url + "/token/", "client_id": "ofsre", "client_secret": "secret",
              "backoff_initial": 0.01, "backoff_max": 0.05, "request_timeout": 10.0, "poll_interval": 0.05}
    values.update(overrides)
    return SenderOptions(**values)


@pytest.fixture
def make_sender(store, pcm, registry):
    made: list[Sender] = []

    def make(**overrides) -> Sender:
        sender = Sender(store, sender_options(pcm, **overrides), registry=registry)
        made.append(sender)
        return sender

    yield make
    for s in made:
        s.close()
