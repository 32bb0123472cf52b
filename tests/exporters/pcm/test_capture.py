"""Capture: SERVER reports from the middleware, CLIENT reports from the instrumented client (§5 fields)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.trace import NoOpTracerProvider

from ofsre.exporters.pcm.store import ReportStore
from ofsre.instrumentation import instrument_app
from ofsre.instrumentation.httpclient import instrumented_client, instrumented_sync_client
from ofsre.instrumentation.pcm import PcmCapture, capture_for, identify_client

from .conftest import BALANCES, ORG_THEM, ORG_US

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")
OPENDATA = "/open-banking/opendata-accounts/v1/personal-accounts"
WEBHOOK = "/open-banking/webhook/v1/payments/v4/pix/payments/{paymentId}"


@pytest.fixture
def capture(tmp_path, registry):
    cap = PcmCapture("gateway", org_id=ORG_US, software_statement_id="ss-ours", store=tmp_path / "reports.db",
                     registry=registry, flush_interval=0.05)
    yield cap
    cap.close()


def stored(capture) -> list[dict]:
    assert capture.flush(5)
    with ReportStore(capture.store_path) as store:   # the JSON bodies the sender would send
        store.promote()
        return [json.loads(body) for kind in ("private", "opendata") for _, body in store.pending(kind, 1000)]


def edge_app(capture, *, identify: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/open-banking/accounts/v2/accounts/{accountId}/balances")
    async def balances(accountId: str):  # noqa: N803 - the template's name
        if identify:
            identify_client(ORG_THEM, consentId="urn:bank:c1", correlation_id="journey-1")
        await asyncio.sleep(0.02)
        return {"data": {}}

    @app.get("/open-banking/accounts/v2/accounts/{accountId}/transactions-current")
    async def failing(accountId: str):  # noqa: N803
        identify_client(ORG_THEM)
        raise RuntimeError("boom")

    @app.get(OPENDATA)
    async def opendata():
        return {"data": []}

    @app.get("/internal/ping")
    async def ping():
        return {}

    return instrument_app(app, "gateway", registry=capture._registry, pcm=capture,
                          tracer_provider=NoOpTracerProvider())


async def call(app, path: str, iid: str | None = None) -> httpx.Response:
    headers = {"x-fapi-interaction-id": iid} if iid else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("198.51.100.9", 4433))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get(path, headers=headers)


async def test_a_server_report_has_the_documented_fields(capture):
    app = edge_app(capture)
    iid = str(uuid.uuid4())
    before = time.time()
    response = await call(app, "/open-banking/accounts/v2/accounts/acc-9/balances", iid)
    assert response.status_code == 200
    [report] = stored(capture)
    timestamp = report.pop("timestamp")
    assert TIMESTAMP.match(timestamp)
    assert before - 0.002 <= datetime.fromisoformat(timestamp.replace("Z",
                                                                      "+00:00")).timestamp() <= before + 1
    assert report.pop("processTimespan") >= 20           # integer ms, the handler slept 20 ms
    assert report == {"fapiInteractionId": iid, "endpoint": BALANCES, "statusCode": 200, "httpMethod": "GET",
                      "clientOrgId": ORG_THEM, "serverOrgId": ORG_US, "role": "SERVER",
                      "correlationId": "journey-1", "additionalInfo": {"consentId": "urn:bank:c1"}}


async def test_an_app_error_is_reported_as_500_and_outside_the_catalog_nothing(capture, registry):
    app = edge_app(capture)
    await call(app, "/open-banking/accounts/v2/accounts/a/transactions-current", str(uuid.uuid4()))
    await call(app, "/internal/ping")
    await call(app, "/open-banking/accounts/v2/unknown-thing")
    reports = stored(capture)
    assert [(r["endpoint"], r["statusCode"]) for r in reports] == [
        ("/open-banking/accounts/v2/accounts/{accountId}/transactions-current", 500)]
    assert registry.get_sample_value("ofsre_pcm_reports_captured_total",
                                     {"service": "gateway", "role": "SERVER"}) == 1


async def test_an_unidentified_private_call_is_skipped_and_counted(capture, registry):
    app = edge_app(capture, identify=False)
    await call(app, "/open-banking/accounts/v2/accounts/a/balances")
    assert stored(capture) == []
    assert registry.get_sample_value("ofsre_pcm_reports_skipped_total",
                                     {"service": "gateway", "reason": "no_client_org"}) == 1


async def test_a_client_that_left_before_any_response_is_not_reported(capture, registry):
    async def app(scope, receive, send):        # waits for the body; the client disconnects instead
        if scope["type"] == "http":
            identify_client(ORG_THEM)
            await receive()

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise AssertionError("nothing is sent")

    wrapped = instrument_app(app, "gateway", registry=registry, pcm=capture,
                             tracer_provider=NoOpTracerProvider())
    scope = {"type": "http", "method": "GET", "path": "/open-banking/accounts/v2/accounts", "headers": [],
             "query_string": b"", "client": ("198.51.100.9", 1)}
    await wrapped(scope, receive, send)
    assert stored(capture) == []
    assert registry.get_sample_value("ofsre_pcm_reports_skipped_total",
                                     {"service": "gateway", "reason": "no_response"}) == 1


async def test_open_data_reports_carry_the_client_ip(capture):
    app = edge_app(capture)
    await call(app, OPENDATA, str(uuid.uuid4()))
    [report] = stored(capture)
    assert report["additionalInfo"] == {"clientIp": "198.51.100.9"}
    assert "clientOrgId" not in report
    with ReportStore(capture.store_path) as store:
        assert store._db.execute("SELECT kind FROM reports").fetchone() == ("opendata",)


async def test_an_app_behind_a_proxy_gives_the_open_data_client_ip(capture):
    app = FastAPI()

    @app.get(OPENDATA)
    async def opendata():
        identify_client(None, clientIp="203.0.113.50")   # from its trusted x-forwarded-for
        return {"data": []}

    app = instrument_app(app, "gateway", registry=capture._registry, pcm=capture,
                         tracer_provider=NoOpTracerProvider())
    await call(app, OPENDATA, str(uuid.uuid4()))
    [report] = stored(capture)
    assert report["additionalInfo"] == {"clientIp": "203.0.113.50"}


def test_capture_is_opt_in_per_service(monkeypatch, tmp_path):
    monkeypatch.setenv("OFSRE_PCM_ORG_ID", ORG_US)
    monkeypatch.setenv("OFSRE_PCM_STORE", str(tmp_path / "r.db"))
    monkeypatch.delenv("OFSRE_PCM_CAPTURE", raising=False)
    assert capture_for("gateway", None) is None                    # default: off
    monkeypatch.setenv("OFSRE_PCM_CAPTURE", "gateway, worker")
    gateway = capture_for("gateway", None)
    assert gateway is not None and capture_for("gateway", None) is gateway   # one per process
    assert capture_for("accounts", None) is None                   # a module behind the edge: off
    assert capture_for("gateway", False) is None                   # the argument wins
    assert capture_for("accounts", True) is not None
    monkeypatch.setenv("OFSRE_PCM_ORG_ID", "")
    monkeypatch.setenv("OFSRE_PCM_CAPTURE", "payments")
    with pytest.raises(ValueError, match="OFSRE_PCM_ORG_ID"):
        capture_for("payments", None)                              # on without our org id: a clear error


async def test_a_client_report_has_the_documented_fields(capture, pcm):
    iid = str(uuid.uuid4())
    async with instrumented_client(pcm=capture, timeout=5) as client:
        before = time.time()
        response = await client.post(pcm.url + "/bank/open-banking/webhook/v1/payments/v4/pix/payments/p-1",
                                     json={}, headers={"x-fapi-interaction-id": iid},
                                     extensions={"ofsre.pcm": {"serverOrgId": ORG_THEM,
                                                               "additionalInfo": {"status": "ACSC"}}})
        await client.get(pcm.url + "/health")                     # outside the catalog: not reported
    assert response.status_code == 404
    [report] = stored(capture)
    ts = datetime.fromisoformat(report.pop("timestamp").replace("Z", "+00:00")).timestamp()
    assert before - 0.002 <= ts <= before + 1
    assert isinstance(report.pop("processTimespan"), int)
    assert report == {"fapiInteractionId": iid, "endpoint": WEBHOOK, "statusCode": 404, "httpMethod": "POST",
                      "clientOrgId": ORG_US, "serverOrgId": ORG_THEM, "role": "CLIENT",
                      "endpointUriPrefix": pcm.url + "/bank", "clientSSId": "ss-ours",
                      "additionalInfo": {"status": "ACSC"}}


def test_a_client_timeout_is_reported_as_408_with_the_time_waited(capture):
    silent = socket.create_server(("127.0.0.1", 0))       # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/open-banking/accounts/v2/accounts"
        with instrumented_sync_client(pcm=capture,
                                      timeout=0.3) as client, pytest.raises(httpx.TimeoutException):
            client.get(url, extensions={"ofsre.pcm": {"serverOrgId": ORG_THEM}})
    finally:
        silent.close()
    [report] = stored(capture)
    assert report["statusCode"] == 408
    assert 300 <= report["processTimespan"] < 2000               # the time waited, in ms
    assert uuid.UUID(report["fapiInteractionId"])                # the request got an interaction id


def test_a_plain_client_reports_nothing(capture, pcm):
    with instrumented_sync_client(timeout=5) as client:
        client.get(pcm.url + "/open-banking/accounts/v2/accounts",
                   extensions={"ofsre.pcm": {"serverOrgId": ORG_THEM}})
    assert stored(capture) == []


async def test_a_full_queue_drops_and_counts_without_hurting_the_request(tmp_path, registry):
    cap = PcmCapture("gateway", org_id=ORG_US, store=tmp_path / "r.db", registry=registry, queue_reports=2,
                     flush_interval=60)
    try:
        app = edge_app(cap)
        for _ in range(5):
            assert (await call(app, "/open-banking/accounts/v2/accounts/a/balances")).status_code == 200
        assert registry.get_sample_value("ofsre_pcm_reports_dropped_total",
                                         {"service": "gateway", "reason": "queue_full"}) == 3
        assert len(stored(cap)) == 2
    finally:
        cap.close()


async def test_an_unwritable_store_never_reaches_the_request(tmp_path, registry):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cap = PcmCapture("gateway", org_id=ORG_US, store=blocker / "r.db", registry=registry, flush_interval=0.05)
    try:
        app = edge_app(cap)
        assert (await call(app, "/open-banking/accounts/v2/accounts/a/balances")).status_code == 200
        assert cap.flush(5)
        assert registry.get_sample_value("ofsre_pcm_reports_dropped_total",
                                         {"service": "gateway", "reason": "store_error"}) == 1
    finally:
        cap.close()
