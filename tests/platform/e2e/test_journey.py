"""End-to-end through real processes: consent → authorise → accounts → Pix → settled, one trace.

The client plays the WAF: it calls the gateway from 127.0.0.1 (a trusted proxy) and forwards
the client certificate in ``x-ssl-client-cert``. Every assertion is on behaviour; waits are
polls bounded by generous timeouts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import time
import uuid

import httpx
import pytest

from ofsre.instrumentation.semconv import HTTP_IN_FLIGHT
from ofsre.platform.jws import Participant

from ..conftest import consent_request
from ..participant import payment_consent_body, pix_body, signed
from .conftest import E2E_BAIXA_TPM, start_process, stop_processes, wait_ready

CONSENTS = "/open-banking/consents/v3/consents"
ACCOUNTS = "/open-banking/accounts/v2/accounts"
PAYMENTS = "/open-banking/payments/v4"


def poll(check, timeout_s: float = 30.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(every_s)


def of_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors", "meta"} and set(body["errors"][0]) == {"code", "title", "detail"}
    return body["errors"][0]


@pytest.fixture(scope="module")
def waf(platform, pki):
    """An httpx client acting as the WAF in front of the gateway, with org ``org-e2e``'s certificate."""
    cert = pki.issue("org-e2e")
    with httpx.Client(base_url=platform.gateway.url, headers={"x-ssl-client-cert": cert.header},
                      timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def initiator(platform) -> Participant:
    """org-e2e as a payment initiator: its signing key registered in the platform's JWKS directory."""
    return Participant.register("org-e2e", platform.workdir / "jwks")


def signed_payment(platform, waf, me: Participant, headers: dict) -> httpx.Response:
    """A signed payment consent, authorised on the module, then a signed Pix payment with ``headers``."""
    url = platform.gateway.url + f"{PAYMENTS}/consents"
    created = waf.post(f"{PAYMENTS}/consents", **signed(me, url, payment_consent_body()))
    assert created.status_code == 201, created.text
    pay_consent = me.read(created.text)["data"]["consentId"]
    assert platform.bank.decide("payments", pay_consent, org_id=me.org_id).status_code == 200
    request = signed(me, platform.gateway.url + f"{PAYMENTS}/pix/payments", pix_body(), consent=pay_consent)
    return waf.post(f"{PAYMENTS}/pix/payments", content=request["content"],
                    headers={**request["headers"], **headers})


def test_full_journey_is_one_trace_from_gateway_to_worker(platform, waf, initiator):
    trace_id = secrets.token_hex(16)

    def traced() -> dict:
        return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}

    created = waf.post(CONSENTS, json=consent_request())
    assert created.status_code == 201, created.text
    cid = created.json()["data"]["consentId"]
    assert platform.bank.decide("consents", cid, org_id="org-e2e").json()["data"]["status"] == "AUTHORISED"
    token = {"authorization": f"Bearer consent:{cid}"}
    accounts = waf.get(ACCOUNTS, headers=token)
    assert accounts.status_code == 200, accounts.text
    account_id = accounts.json()["data"][0]["accountId"]
    assert waf.get(f"{ACCOUNTS}/{account_id}/balances", headers=token).status_code == 200
    transactions = waf.get(f"{ACCOUNTS}/{account_id}/transactions", headers=token).json()
    assert transactions["meta"]["totalPages"] >= 1
    assert transactions["links"]["self"].startswith(platform.gateway.url)

    paid = signed_payment(platform, waf, initiator, {**traced(), "x-fapi-interaction-id": str(uuid.uuid4())})
    assert paid.status_code == 201, paid.text
    payment = initiator.read(paid.text)["data"][0]  # payments v4 answers are signed JWS
    payment_id = payment["paymentId"]
    assert payment["status"] == "RCVD"

    final = poll(lambda: (lambda s: s if s in ("ACSC", "RJCT") else None)(
        initiator.read(waf.get(f"{PAYMENTS}/pix/payments/{payment_id}").text)["data"]["status"]))
    assert final == "ACSC"

    # One trace: gateway SERVER → payments SERVER → PRODUCER → (queue) → worker CONSUMER.
    def chain_from_consumer():
        """Services from the worker's CONSUMER span up its parents, once the whole chain has arrived."""
        spans = platform.receiver.trace(trace_id)
        by_id = {s.span_id: s for s in spans}
        consumer = next((s for s in spans if s.service == "worker" and s.kind == 5), None)  # 5: CONSUMER
        chain, span = [], consumer
        while span is not None:
            chain.append(span.service)
            span = by_id.get(span.parent_id)
        return chain if chain and chain[-1] == "gateway" else None

    chain = poll(chain_from_consumer)
    assert chain[0] == "worker" and "payments" in chain, chain


def test_missing_certificate_is_401(platform):
    with httpx.Client(base_url=platform.gateway.url) as client:
        assert of_error(client.get(ACCOUNTS), 401)["code"] == "UNAUTHORIZED"


def test_certificate_from_another_ca_is_403(platform, rogue_pki):
    rogue = {"x-ssl-client-cert": rogue_pki.issue("org-e2e").header}
    with httpx.Client(base_url=platform.gateway.url) as client:
        assert of_error(client.get(ACCOUNTS, headers=rogue), 403)["code"] == "FORBIDDEN"


def test_certificate_claimed_by_an_untrusted_proxy_is_403(platform, pki):
    """127.0.0.2 is loopback too, but outside OFSRE_TRUSTED_PROXIES=127.0.0.1/32."""
    cert = {"x-ssl-client-cert": pki.issue("org-e2e").header}
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=platform.gateway.url, transport=transport) as client:
        assert "untrusted peer" in of_error(client.get(ACCOUNTS, headers=cert), 403)["detail"]


def test_tpm_from_the_catalog_is_429_exactly_past_the_limit(platform, pki):
    # A fresh organisation, so the journey's calls do not count; start well inside a clock minute
    # so the limit + 1 calls cannot straddle two minutes.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    cert = {"x-ssl-client-cert": pki.issue(f"org-tpm-{secrets.token_hex(4)}").header}
    with httpx.Client(base_url=platform.gateway.url, headers=cert) as client:
        statuses = [client.get(ACCOUNTS).status_code for _ in range(E2E_BAIXA_TPM + 1)]
        # the calls carry no consent: 401 from accounts, but each one counts against the origin's TPM
        assert statuses == [401] * E2E_BAIXA_TPM + [429]
        refused = client.get(ACCOUNTS)
        assert of_error(refused, 429)["code"] == "TOO_MANY_REQUESTS"
        assert int(refused.headers["retry-after"]) >= 1


def test_gateway_with_its_own_tls_listener(platform, pki, tmp_path):
    """OFSRE_TLS_CERT_FILE: the handshake requires a client certificate signed by the CA, and the
    certificate's OU still becomes the origin forwarded to the modules."""
    server = pki.issue("gateway", cn="127.0.0.1", san="127.0.0.1")
    (tmp_path / "server.pem").write_bytes(server.pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    env = {**platform.env, "OFSRE_SERVICE": "gateway", "OFSRE_MTLS": "on",
           "OFSRE_CLIENT_CA_FILE": str(platform.client_ca),
           "OFSRE_TLS_CERT_FILE": str(tmp_path / "server.pem"),
           "OFSRE_TLS_KEY_FILE": str(tmp_path / "server.key"),
           "OFSRE_UPSTREAMS": f'{{"consents": ["{platform.services["consents"].url}"]}}'}
    gateway = start_process("gateway", env, tmp_path)
    try:
        client_cert = pki.issue("org-tls")
        (tmp_path / "client.pem").write_bytes(client_cert.pem + client_cert.key_pem)
        context = ssl.create_default_context(cafile=str(platform.client_ca))
        context.load_cert_chain(str(tmp_path / "client.pem"))
        url = f"https://127.0.0.1:{gateway.port}"
        with httpx.Client(base_url=url, verify=context) as client:
            created = client.post(CONSENTS, json=consent_request())
            assert created.status_code == 201, created.text
            cid = created.json()["data"]["consentId"]
        # the consent belongs to org-tls: another organisation (via the WAF path) may not read it
        other = {"x-ssl-client-cert": pki.issue("org-other").header}
        with httpx.Client(base_url=platform.gateway.url, headers=other) as client:
            assert of_error(client.get(f"{CONSENTS}/{cid}"), 403)["code"] == "FORBIDDEN"
        anonymous = ssl.create_default_context(cafile=str(platform.client_ca))
        with httpx.Client(base_url=url, verify=anonymous) as client, pytest.raises(httpx.HTTPError):
            client.get(f"{CONSENTS}/{cid}")  # no client certificate: the handshake fails
        # The handshake accepts these (the chain verifies), the gateway does not: no organisation, or a CA.
        from cryptography.hazmat.primitives import serialization
        ca_key = pki.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
        nameless = pki.issue(None)
        for name, pem in (("nameless", nameless.pem + nameless.key_pem), ("the-ca", pki.pem + ca_key)):
            (tmp_path / f"{name}.pem").write_bytes(pem)
            context = ssl.create_default_context(cafile=str(platform.client_ca))
            context.load_cert_chain(str(tmp_path / f"{name}.pem"))
            with httpx.Client(base_url=url, verify=context) as client:
                assert of_error(client.get(f"{CONSENTS}/{cid}"), 403)["code"] == "FORBIDDEN", name
    finally:
        assert stop_processes([gateway]) == {"gateway": True}


def _in_flight(url: str, route: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(HTTP_IN_FLIGHT.name + "{") and f'route="{route}"' in line)


def test_sigterm_drains_in_flight_requests(platform, tmp_path):
    """A second consents replica gets SIGTERM while a request is in flight (its body half sent):
    the request still completes, then the process ends by itself after its lifespan shutdown
    (uvicorn re-raises the SIGTERM it handled: exit code 0 or -15)."""
    replica = start_process("consents",
                            {**platform.env, "OFSRE_SERVICE": "consents", "OFSRE_BODY_TIMEOUT_S": "60"},
                            tmp_path)
    wait_ready(replica)
    body = json.dumps(consent_request()).encode()
    head = (f"POST {CONSENTS} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"x-ofsre-gateway-secret: {platform.secret}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", replica.port), timeout=30) as conn:
        conn.sendall(head + body[:10])
        poll(lambda: _in_flight(replica.url, CONSENTS) >= 1)  # the app is waiting for the rest of the body
        os.kill(replica.proc.pid, signal.SIGTERM)
        conn.sendall(body[10:])
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert replica.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in replica.log.read_text()


def test_worker_logs_reach_loki_correlated_with_the_payments_trace(platform, waf, initiator):
    """OFSRE_LOG_SHIPPER=loki: the worker's settlement log arrives at Loki as a valid push,
    labelled by service, carrying the trace id and the x-fapi-interaction-id of the request
    that created the payment (they crossed the queue in the message headers)."""
    trace_id, interaction_id = secrets.token_hex(16), str(uuid.uuid4())
    paid = signed_payment(platform, waf, initiator,
                          {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                                                     "x-fapi-interaction-id": interaction_id})
    assert paid.status_code == 201, paid.text
    payment_id = initiator.read(paid.text)["data"][0]["paymentId"]

    def settled_line():
        return next((r for r in list(platform.loki.records)
                     if r["_labels"].get("service") == "worker" and payment_id in r.get("message", "")), None)

    line = poll(settled_line)
    assert line["trace_id"] == trace_id
    assert line["interaction_id"] == interaction_id
    assert line["_labels"]["level"] == "info" and "trace_id" not in line["_labels"]
    assert {r["_labels"]["service"] for r in platform.loki.records} >= {"gateway", "payments", "worker"}
    assert platform.loki.errors == []  # every push was valid Loki JSON with good labels
