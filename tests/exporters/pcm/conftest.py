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
from ofsre.exporters.pcm.store import ReportStore, brasilia_day

ORG_US = "11111111-1111-4111-8111-111111111111"
ORG_THEM = "22222222-2222-4222-8222-222222222222"
BALANCES = "/open-banking/accounts/v2/accounts/{accountId}/balances"


def report_row(*, ts: float | None = None, endpoint: str = BALANCES, method: str = "GET", status: int = 200,
               process_ms: int = 100, role: str = "SERVER", kind: str = "private") -> tuple:
    """One store row (``store.COLUMNS``) of a §5-valid report, as the capture's writer makes it."""
    ts = time.time() if ts is None else ts
    info = json.dumps({"clientIp": "203.0.113.7"}) if kind == "opendata" else None
    client_org = None if kind == "opendata" else ORG_THEM
    return (kind, role, brasilia_day(ts), ts, endpoint, method, status, process_ms, str(uuid.uuid4()),
            client_org, ORG_US, None, info, None, None)


def interaction_of(row: tuple) -> tuple[str, str]:
    """The PCM's pairing key of a row: ``(fapiInteractionId, role)``."""
    return row[8], row[1]


def id_of(store: ReportStore, row: tuple) -> int:
    """The store's id of a row added earlier."""
    return store._db.execute("SELECT id FROM reports WHERE interaction_id = ?", (row[8],)).fetchone()[0]


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
    values = {"url": server.url, "token_url": server.url + "/token/", "client_id": "ofsre",
              "client_secret": "secret",
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
