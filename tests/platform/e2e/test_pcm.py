"""PCM reports from the real platform: SERVER reports at the edge (gateway), CLIENT reports from the worker.

A platform of its own (its own database, so its worker settles only these payments) runs with
``OFSRE_PCM_CAPTURE=gateway,worker``: the gateway reports every catalog call it answers, the
modules behind it report nothing (each call is reported once), and the worker's payment
webhook to the initiator — a call the platform makes as a client of another institution — is
reported as CLIENT. Then ``ofsre pcm send --once`` delivers the store to the local PCM.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from ofsre.exporters.pcm.mock import MockPcm
from ofsre.exporters.pcm.store import ReportStore
from ofsre.platform.jws import Participant

from ...http_stub import HttpStub, Reply, Request
from ..conftest import consent_request, scratch_database
from ..participant import payment_consent_body, pix_body, signed
from .conftest import OtlpReceiver, Platform, base_env, start_process, stop_processes, wait_ready

ORG_THEM = "org-pcm-initiator"     # the calling institution (its certificate's organisationId)
ORG_US = "org-pcm-platform"        # OFSRE_PCM_ORG_ID: the platform's own organisationId
CONSENTS = "/open-banking/consents/v3/consents"
ACCOUNTS = "/open-banking/accounts/v2/accounts"
PAYMENTS = "/open-banking/payments/v4"
WEBHOOK = "/open-banking/webhook/v1/payments/v4/pix/payments/{paymentId}"


class WebhookReceiver:
    """The initiator's webhook endpoint: answers 202 and remembers each call's interaction id."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []     # (path, x-fapi-interaction-id)
        self.stub = HttpStub(self._respond, methods=("POST",), name="webhook-receiver")
        self.url = self.stub.url

    def _respond(self, request: Request) -> Reply:
        self.calls.append((request.path, request.headers.get("x-fapi-interaction-id", "")))
        return 202, {}, b""

    def close(self) -> None:
        self.stub.close()


@pytest.fixture(scope="module")
def pcm_platform(tmp_path_factory, pki, catalog_writer):
    workdir = tmp_path_factory.mktemp("pcm-platform")
    receiver, webhook = OtlpReceiver(), WebhookReceiver()
    store = workdir / "pcm" / "reports.db"
    processes = []
    with scratch_database(workdir) as database_url:
        env = base_env(database_url, workdir, receiver)
        secret = secrets.token_urlsafe(24)
        env.update({"OFSRE_CATALOG": str(catalog_writer(workdir)), "OFSRE_GATEWAY_SECRET": secret,
                    "OFSRE_PCM_CAPTURE": "gateway,worker", "OFSRE_PCM_ORG_ID": ORG_US,
                    "OFSRE_PCM_SOFTWARE_STATEMENT_ID": "ss-platform", "OFSRE_PCM_STORE": str(store),
                    "OFSRE_PCM_FLUSH_S": "0.05",
                    "OFSRE_PAYMENT_WEBHOOKS": json.dumps({ORG_THEM: webhook.url + "/tpp"})})
        client_ca = pki.write(workdir)
        try:
            services = {}
            for name in ("consents", "accounts", "payments", "worker"):
                services[name] = start_process(name,
                                               {**env, "OFSRE_SERVICE": name,
                                                "OFSRE_SIMULATION_ROUTES": "on"},
                                               workdir)
                processes.append(services[name])
            (workdir / "upstreams.json").write_text(json.dumps(
                {name: [services[name].url] for name in ("consents", "accounts", "payments")}))
            gateway = start_process("gateway", {**env, "OFSRE_SERVICE": "gateway", "OFSRE_MTLS": "on",
                                                "OFSRE_UPSTREAMS_FILE": str(workdir / "upstreams.json"),
                                                "OFSRE_CLIENT_CA_FILE": str(client_ca),
                                                "OFSRE_TRUSTED_PROXIES": "127.0.0.1/32"}, workdir)
            processes.append(gateway)
            for p in processes:
                wait_ready(p)
            yield Platform(gateway, services, receiver, workdir, env, client_ca, workdir, None, secret,
                           processes), store, webhook
        finally:
            graceful = stop_processes(processes)
            receiver.close()
            webhook.close()
    assert all(graceful.values()), graceful


def stored_reports(store_path) -> list[dict]:
    with ReportStore(store_path) as store:
        store.promote()   # what the gateway and the worker staged
        fields = ("role", "endpoint", "method", "status", "iid", "client", "server", "info", "prefix", "ss")
        return [dict(zip(fields, row, strict=True))
                for row in store._db.execute("SELECT role, endpoint, method, status_code, "
                                             "interaction_id, client_org, server_org, info, uri_prefix, "
                                             "ss_id FROM reports ORDER BY ts")]


def test_server_and_client_reports_match_the_requests_made(pcm_platform, pki):
    platform, store_path, webhook = pcm_platform
    expected = []   # (interaction id, template, method, status) of every call made through the gateway

    with httpx.Client(base_url=platform.gateway.url, timeout=20,
                      headers={"x-ssl-client-cert": pki.issue(ORG_THEM).header}) as waf:
        def call(method, path, template, **kwargs):
            iid = str(uuid.uuid4())
            headers = {**kwargs.pop("headers", {}), "x-fapi-interaction-id": iid}
            response = waf.request(method, path, headers=headers, **kwargs)
            expected.append((iid, template, method, response.status_code))
            return response

        created = call("POST", CONSENTS, CONSENTS, json=consent_request())
        assert created.status_code == 201, created.text
        cid = created.json()["data"]["consentId"]
        assert platform.bank.decide("consents", cid, org_id=ORG_THEM).status_code == 200
        token = {"authorization": f"Bearer consent:{cid}"}
        accounts = call("GET", ACCOUNTS, ACCOUNTS, headers=token)
        assert accounts.status_code == 200, accounts.text
        account = accounts.json()["data"][0]["accountId"]
        assert call("GET", f"{ACCOUNTS}/{account}/balances", ACCOUNTS + "/{accountId}/balances",
                    headers=token).status_code == 200
        assert call("GET", f"{CONSENTS}/{cid}", CONSENTS + "/{consentId}").status_code == 200
        # no consent
        assert call("GET", f"{ACCOUNTS}/{account}", ACCOUNTS + "/{accountId}").status_code == 401

        # payments v4: signed JWS bodies both ways (the initiator's key registered in the platform's JWKS dir)
        me = Participant.register(ORG_THEM, platform.workdir / "jwks")
        request = signed(me, platform.gateway.url + f"{PAYMENTS}/consents", payment_consent_body())
        pay_consent = call("POST", f"{PAYMENTS}/consents", f"{PAYMENTS}/consents", **request)
        assert pay_consent.status_code == 201, pay_consent.text
        pay_cid = me.read(pay_consent.text)["data"]["consentId"]
        assert platform.bank.decide("payments", pay_cid, org_id=ORG_THEM).status_code == 200
        request = signed(me, platform.gateway.url + f"{PAYMENTS}/pix/payments", pix_body(consent_id=pay_cid),
                         consent=pay_cid)
        paid = call("POST", f"{PAYMENTS}/pix/payments", f"{PAYMENTS}/pix/payments", **request)
        assert paid.status_code == 201, paid.text
        payment_id = me.read(paid.text)["data"][0]["paymentId"]

        deadline = time.monotonic() + 30
        while me.read(call("GET", f"{PAYMENTS}/pix/payments/{payment_id}",
                           PAYMENTS + "/pix/payments/{paymentId}",
                           headers={"authorization": f"Bearer consent:{pay_cid}"}).text)["data"]["status"] \
                not in ("ACSC", "RJCT"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

    # outside the catalog, and without a certificate (unidentified): not reported
    with httpx.Client(base_url=platform.gateway.url, timeout=10) as anonymous:
        assert anonymous.get("/open-banking/nothing-here/v1/x").status_code == 404
        assert anonymous.get(ACCOUNTS).status_code == 401

    deadline = time.monotonic() + 30
    while True:
        reports = stored_reports(store_path)
        client = [r for r in reports if r["role"] == "CLIENT"]
        if len([r for r in reports if r["role"] == "SERVER"]) >= len(expected) and client:
            break
        assert time.monotonic() < deadline, (reports, expected)
        time.sleep(0.1)

    server = [r for r in reports if r["role"] == "SERVER"]
    # exactly one SERVER report per call (the modules behind the gateway report nothing), matching it
    assert sorted((r["iid"], r["endpoint"], r["method"], r["status"]) for r in server) == sorted(expected)
    assert {(r["client"], r["server"]) for r in server} == {(ORG_THEM, ORG_US)}
    balances = next(r for r in server if r["endpoint"].endswith("/balances"))
    assert json.loads(balances["info"]) == {"consentId": cid}

    [webhook_report] = client
    [(path, iid)] = webhook.calls
    assert path == "/tpp" + WEBHOOK.replace("{paymentId}", payment_id)
    assert (webhook_report["iid"], webhook_report["endpoint"], webhook_report["method"],
            webhook_report["status"]) == (iid, WEBHOOK, "POST", 202)
    assert (webhook_report["client"], webhook_report["server"]) == (ORG_US, ORG_THEM)
    assert (webhook_report["prefix"], webhook_report["ss"]) == (webhook.url + "/tpp", "ss-platform")
    info = json.loads(webhook_report["info"])
    assert (info["consentId"], info["status"], info["localInstrument"]) == (pay_cid, "ACSC", "MANU")

    # and the sender delivers every one of them to the (local) PCM, each classified
    pcm = MockPcm()
    try:
        env = {**os.environ, "OFSRE_PCM_URL": pcm.url, "OFSRE_PCM_CLIENT_ID": "ofsre",
               "OFSRE_PCM_CLIENT_SECRET": "secret"}
        sent = subprocess.run([sys.executable, "-m", "ofsre", "pcm", "send", "--once", "--timeout", "60",
                               "--store", str(store_path)], env=env, capture_output=True, text=True,
                              timeout=90)
        assert sent.returncode == 0, sent.stderr
        assert set(pcm.received) == {(r["iid"], r["role"]) for r in reports}
        assert all(n == 1 for n in pcm.received.values())
        with ReportStore(store_path) as store:
            assert store.counts_by_state()["delivered"] == len(reports)
            assert {r["result"] for r in store.results(limit=1000)} == {"ACCEPTED"}
    finally:
        pcm.close()
