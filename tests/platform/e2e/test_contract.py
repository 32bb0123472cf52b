"""The regulator's contract, end to end: every exchange of the journeys validated with openapi-core.

Data sharing (consent → authorise → resources → accounts → renewal → revocation) and payments
(signed consent → authorise → signed Pix → settled), with their error cases, all through the
real gateway (WAF-forwarded client certificates), each request and each answer validated
against the official documents in ``../shared/schemas/openfinance/`` (:mod:`..openapi_contract`).
A hostile request is marked ``request_valid=False``: it must break the document (and does), and
its answer must still conform. Nothing is skipped: a path with no document is a deviation.

The JWS refusals of payments 4.0.0 ("Validações" 1.2.3 and 1.2.4) go through the gateway too:
tampered body, a key the initiator never registered, another organisation's signature, expired
``iat``, replayed ``jti`` and ``alg: none``, each with the documented status and code, each answer
signed by the platform (a 422 as a JWS, the JSON ones by their detached ``x-jws-signature``).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import psycopg
import pytest

from ofsre.instrumentation.catalog import load_catalog
from ofsre.platform.jws import KeyDirectory, Participant, SigningKey

from ..openapi_contract import ContractRecorder
from ..participant import CPF, payment_consent_body, pix_body, signed

CONSENTS = "/open-banking/consents/v3/consents"
RESOURCES = "/open-banking/resources/v3/resources"
ACCOUNTS = "/open-banking/accounts/v2/accounts"
PAYMENTS = "/open-banking/payments/v4"
CLIENT_TOKEN = {"authorization": "Bearer client-credentials"}  # consents and payment consents take one


@pytest.fixture(scope="module")
def recorder(platform) -> ContractRecorder:
    return ContractRecorder(KeyDirectory(platform.workdir / "jwks"))


def _new_interaction_id(request: httpx.Request) -> None:
    # one per request, as the spec says
    request.headers.setdefault("x-fapi-interaction-id", str(uuid.uuid4()))


@pytest.fixture(scope="module")
def institution(platform, pki):
    """``institution(org)`` → an httpx client playing the WAF for ``org`` (its own certificate)."""
    clients = []

    def make(org: str) -> httpx.Client:
        client = httpx.Client(base_url=platform.gateway.url, timeout=20,
                              headers={"x-ssl-client-cert": pki.issue(org).header},
                              event_hooks={"request": [_new_interaction_id]})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class Exchanges:
    """Calls through one client, each checked against the documents as it comes back."""

    def __init__(self, client: httpx.Client, recorder: ContractRecorder) -> None:
        self.client, self.recorder = client, recorder

    def __call__(self, method: str, url: str, *, request_valid: bool = True, status: int | None = None,
                 **kw) -> httpx.Response:
        response = self.client.request(method, url, **kw)
        checked = self.recorder.check(response, request_valid=request_valid)
        assert checked.ok, self.recorder.report()
        if status is not None:
            assert response.status_code == status, response.text
        return response


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def consent_body(permissions=None, *, expires: str | None = None) -> dict:
    in_90_days = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"data": {"loggedUser": {"document": {"identification": CPF, "rel": "CPF"}},
                     "permissions": permissions or ["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ",
                                                    "ACCOUNTS_TRANSACTIONS_READ",
                                                    "ACCOUNTS_OVERDRAFT_LIMITS_READ", "RESOURCES_READ"],
                     "expirationDateTime": expires or in_90_days}}


def authorised_data_consent(call: Exchanges, platform, org: str) -> str:
    created = call("POST", CONSENTS, json=consent_body(), headers=CLIENT_TOKEN, status=201)
    cid = created.json()["data"]["consentId"]
    assert platform.bank.decide("consents", cid, org_id=org).status_code == 200
    return cid


# --- data sharing ------------------------------------------------------------------------------------

def test_data_sharing_journey_conforms(platform, institution, recorder):
    org = "org-contract-data"
    call = Exchanges(institution(org), recorder)
    cid = authorised_data_consent(call, platform, org)
    token = {"authorization": f"Bearer consent:{cid}"}
    consent = call("GET", f"{CONSENTS}/{cid}", headers=CLIENT_TOKEN, status=200)
    assert consent.json()["data"]["status"] == "AUTHORISED" and consent.headers["x-v"] == "3.3.1"

    resources = call("GET", RESOURCES, headers=token, status=200)
    assert resources.headers["x-v"] == load_catalog().family("resources").version
    listed = call("GET", ACCOUNTS, headers=token, status=200).json()["data"]
    assert [r["resourceId"] for r in resources.json()["data"]] == [a["accountId"] for a in listed]
    account = listed[0]["accountId"]
    for suffix in ("", "/balances", "/overdraft-limits", "/transactions-current"):
        call("GET", f"{ACCOUNTS}/{account}{suffix}", headers=token, status=200)
    today = datetime.now(UTC).date()
    month = call("GET", f"{ACCOUNTS}/{account}/transactions", headers=token, status=200,
                 params={"fromBookingDate": (today - timedelta(days=30)).isoformat(),
                         "toBookingDate": today.isoformat()})
    assert month.json()["data"], "a month of seeded transactions is never empty"

    later = (datetime.now(UTC) + timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    extended = call("POST", f"{CONSENTS}/{cid}/extends", status=201,
                    json={"data": {"loggedUser": {"document": {"identification": CPF, "rel": "CPF"}},
                                   "expirationDateTime": later}},
                    headers={**CLIENT_TOKEN, "x-fapi-customer-ip-address": "203.0.113.7",
                             "x-customer-user-agent": "ofsre-contract-test/1.0"})
    assert extended.json()["data"]["expirationDateTime"] == later
    extensions = call("GET", f"{CONSENTS}/{cid}/extensions", headers=CLIENT_TOKEN, status=200).json()["data"]
    assert [e["expirationDateTime"] for e in extensions] == [later]

    revoked = call("DELETE", f"{CONSENTS}/{cid}", headers=CLIENT_TOKEN, status=204)
    assert revoked.headers["x-v"] == "3.3.1"
    rejection = call("GET", f"{CONSENTS}/{cid}", headers=CLIENT_TOKEN, status=200).json()["data"]["rejection"]
    assert rejection == {"rejectedBy": "USER", "reason": {"code": "CUSTOMER_MANUALLY_REVOKED"}}


def test_data_sharing_refusals_conform(platform, institution, recorder):
    org = "org-contract-refusals"
    call = Exchanges(institution(org), recorder)
    malformed = call("POST", CONSENTS, json={"data": {"permissions": ["RESOURCES_READ"]}},
                     headers=CLIENT_TOKEN, request_valid=False, status=400)
    assert error_code(malformed) == "PARAMETRO_INVALIDO"
    no_group = call("POST", CONSENTS, json=consent_body(["ACCOUNTS_READ"]), headers=CLIENT_TOKEN, status=422)
    assert error_code(no_group) == "COMBINACAO_PERMISSOES_INCORRETA"
    past = call("POST", CONSENTS, json=consent_body(expires="2001-01-01T00:00:00Z"), headers=CLIENT_TOKEN,
                status=422)
    assert error_code(past) == "DATA_EXPIRACAO_INVALIDA"
    call("GET", f"{CONSENTS}/urn:ofsre:no-such-consent", headers=CLIENT_TOKEN, status=404)

    created = call("POST", CONSENTS, json=consent_body(), headers=CLIENT_TOKEN, status=201)
    awaiting = created.json()["data"]["consentId"]
    call("GET", RESOURCES, headers={"authorization": f"Bearer consent:{awaiting}"}, status=403)
    call("GET", ACCOUNTS, request_valid=False, status=401)  # no Authorization at all
    call("POST", f"{CONSENTS}/{awaiting}/extends", status=422,
         json={"data": {"loggedUser": {"document": {"identification": CPF, "rel": "CPF"}}}},
         headers={**CLIENT_TOKEN, "x-fapi-customer-ip-address": "203.0.113.7",
                  "x-customer-user-agent": "t/1"})

    cid = authorised_data_consent(call, platform, org)
    token = {"authorization": f"Bearer consent:{cid}"}
    call("GET", f"{ACCOUNTS}/0000-not-an-account-of-this-consent", headers=token, status=404)
    account = call("GET", ACCOUNTS, headers=token, status=200).json()["data"][0]["accountId"]
    call("GET", f"{ACCOUNTS}/{account}/transactions", headers=token, status=422,
         params={"fromBookingDate": "2024-02-01", "toBookingDate": "2024-01-01"})
    call("DELETE", f"{CONSENTS}/{cid}", headers=CLIENT_TOKEN, status=204)
    twice = call("DELETE", f"{CONSENTS}/{cid}", headers=CLIENT_TOKEN, status=422)
    assert error_code(twice) == "CONSENTIMENTO_EM_STATUS_REJEITADO"
    call("GET", ACCOUNTS, headers=token, status=403)  # revoked: no more data


def test_the_monthly_operational_limit_is_a_conforming_423(platform, institution, recorder):
    """balances is alta (monthly_limit 420 in the catalog). The month's count starts where 419
    earlier calls left it (written in the shared database, as the replicas keep it; counting from
    zero is the unit tests'): the next call is the 420th, 200, and the one after it 423."""
    org = "org-contract-limits"
    call = Exchanges(institution(org), recorder)
    cid = authorised_data_consent(call, platform, org)
    token = {"authorization": f"Bearer consent:{cid}"}
    account = call("GET", ACCOUNTS, headers=token, status=200).json()["data"][0]["accountId"]
    route = ACCOUNTS + "/{accountId}/balances"
    limit = load_catalog().lookup("GET", route).tier.monthly_limit
    with psycopg.connect(platform.env["OFSRE_DATABASE_URL"].replace("+asyncpg", ""), autocommit=True) as db:
        db.execute("INSERT INTO operational_usage (consent_id, endpoint, resource_id, month, calls) "
                   "VALUES (%s, %s, %s, %s, %s)",
                   (cid, f"GET {route}", account, f"{datetime.now(UTC):%Y-%m}", limit - 1))
    statuses = [call("GET", f"{ACCOUNTS}/{account}/balances", headers=token).status_code for _ in range(2)]
    assert statuses == [200, 423]
    locked = call("GET", f"{ACCOUNTS}/{account}/balances", headers=token, status=423)
    assert error_code(locked) == "LIMITE_MENSAL_EXCEDIDO"
    call("GET", f"{ACCOUNTS}/{account}/transactions-current", headers=token, status=200)  # its own count


# --- payments ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def initiator(platform) -> Participant:
    """org-contract-pay with its key in the platform's JWKS directory (the Directory's stand-in)."""
    return Participant.register("org-contract-pay", platform.workdir / "jwks")


def _post_signed(call, gateway, me, path, body, **kw) -> httpx.Response:
    request = signed(me, gateway + path, body,
                     **{k: kw.pop(k) for k in ("key", "token", "consent") if k in kw})
    return call("POST", path, content=request["content"], headers=request["headers"], **kw)


def test_payment_journey_conforms(platform, institution, recorder, initiator):
    me, gw = initiator, platform.gateway.url
    call = Exchanges(institution(me.org_id), recorder)
    created = _post_signed(call, gw, me, f"{PAYMENTS}/consents", payment_consent_body("12.34"), status=201)
    assert created.headers["content-type"] == "application/jwt"
    cid = me.read(created.text)["data"]["consentId"]
    assert platform.bank.decide("payments", cid, org_id=me.org_id).status_code == 200
    consent = call("GET", f"{PAYMENTS}/consents/{cid}", headers=CLIENT_TOKEN, status=200)
    assert me.read(consent.text)["data"]["status"] == "AUTHORISED"

    paid = _post_signed(call, gw, me, f"{PAYMENTS}/pix/payments", pix_body("12.34", consent_id=cid),
                        consent=cid, status=201)
    payment = me.read(paid.text)["data"][0]
    deadline = time.monotonic() + 30
    while True:
        read = call("GET", f"{PAYMENTS}/pix/payments/{payment['paymentId']}",
                    headers={"authorization": f"Bearer consent:{cid}"}, status=200)
        status = me.read(read.text)["data"]["status"]
        if status in ("ACSC", "RJCT") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == "ACSC"
    consumed = call("GET", f"{PAYMENTS}/consents/{cid}", headers=CLIENT_TOKEN, status=200)
    assert me.read(consumed.text)["data"]["status"] == "CONSUMED"

    again = _post_signed(call, gw, me, f"{PAYMENTS}/pix/payments", pix_body("12.34", consent_id=cid),
                         consent=cid, status=422)
    assert me.read(again.text)["errors"][0]["code"] == "CONSENTIMENTO_INVALIDO"
    unknown = call("GET", f"{PAYMENTS}/pix/payments/no-such-payment", headers=CLIENT_TOKEN, status=404)
    error = me.read_error(unknown.content, unknown.headers["x-jws-signature"])
    assert error["errors"][0]["code"] == "NOT_FOUND"


def test_payment_refusals_conform(platform, institution, recorder, initiator):
    me, gw = initiator, platform.gateway.url
    call = Exchanges(institution(me.org_id), recorder)
    as_json = call("POST", f"{PAYMENTS}/consents", json=payment_consent_body(), request_valid=False,
                   status=415, headers={**CLIENT_TOKEN, "x-idempotency-key": str(uuid.uuid4())})
    me.read_error(as_json.content, as_json.headers["x-jws-signature"])
    no_details = payment_consent_body()
    del no_details["data"]["payment"]["details"]
    refused = _post_signed(call, gw, me, f"{PAYMENTS}/consents", no_details, request_valid=False, status=422)
    assert me.read(refused.text)["errors"][0]["code"] == "PARAMETRO_NAO_INFORMADO"


# --- JWS refusals through the gateway ---------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _refused(me: Participant, response: httpx.Response, status: int, code: str) -> None:
    """The documented status and code, in the document's JSON, signed by the platform for ``me``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = me.read_error(response.content, response.headers.get("x-jws-signature"))
    assert body["errors"][0]["code"] == code, body


def test_jws_refusals_have_the_documented_status_and_a_signed_answer(platform, institution, recorder,
                                                                     initiator):
    me, gw = initiator, platform.gateway.url
    call = Exchanges(institution(me.org_id), recorder)
    path = f"{PAYMENTS}/consents"
    url = gw + path

    valid = _post_signed(call, gw, me, path, payment_consent_body(), status=201)  # accepted
    assert me.read(valid.text)["data"]["status"] == "AWAITING_AUTHORISATION"

    header, payload, signature = me.sign(payment_consent_body("10.00"), url).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["data"]["payment"]["amount"] = "99999.00"
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    _refused(me, _post_signed(call, gw, me, path, {}, token=tampered, request_valid=False), 400,
             "BAD_SIGNATURE")

    wrong_key = SigningKey.generate(kid=me.key.kid).sign(payment_consent_body(), iss=me.org_id, aud=url)
    _refused(me, _post_signed(call, gw, me, path, {}, token=wrong_key, request_valid=False), 400,
             "BAD_SIGNATURE")

    # a message correctly signed by another registered institution, sent under this one's certificate
    other = Participant.register("org-contract-other", platform.workdir / "jwks")
    foreign = other.sign(payment_consent_body(), url)
    _refused(me, _post_signed(call, gw, me, path, {}, token=foreign), 400, "BAD_SIGNATURE")

    expired = me.key.sign(payment_consent_body(), iss=me.org_id, aud=url, iat=int(time.time()) - 600)
    _refused(me, _post_signed(call, gw, me, path, {}, token=expired, request_valid=False), 403,
             "INVALID_CLIENT")

    once = me.sign(payment_consent_body(), url)
    assert _post_signed(call, gw, me, path, {}, token=once, status=201).status_code == 201
    _refused(me, _post_signed(call, gw, me, path, {}, token=once), 403, "INVALID_CLIENT")  # replayed jti

    unsigned = jwt.encode({**payment_consent_body(), "iss": me.org_id, "aud": url, "iat": int(time.time()),
                           "jti": str(uuid.uuid4())}, None, algorithm="none", headers={"kid": me.key.kid})
    _refused(me, _post_signed(call, gw, me, path, {}, token=unsigned, request_valid=False), 400,
             "BAD_SIGNATURE")


@pytest.mark.parametrize("method, path", [
    ("POST", CONSENTS), ("GET", CONSENTS + "/urn:ofsre:x"), ("GET", "/open-banking/resources/v3/resources"),
    ("GET", "/open-banking/accounts/v2/accounts"), ("GET", "/open-banking/payments/v4/pix/payments/p-1"),
])
def test_the_gateways_own_refusals_conform(platform, pki, recorder, method, path):
    """401 without a certificate, 403 with one that names no organisation: the gateway's answers,
    not a module's, and each family's document must still hold for them."""
    for headers, status in (({}, 401), ({"x-ssl-client-cert": pki.issue(None).header}, 403)):
        with httpx.Client(base_url=platform.gateway.url, headers=headers, timeout=20,
                          event_hooks={"request": [_new_interaction_id]}) as client:
            response = client.request(method, path)
        assert response.status_code == status, response.text
        checked = recorder.check(response, request_valid=False)  # no body, no token: built to be refused
        assert not checked.response_errors, recorder.report()


def test_every_exchange_conformed(recorder):
    """The tally the report quotes: every exchange above was validated, none deviated."""
    assert recorder.checked, "no exchange was validated"
    assert not recorder.deviations, recorder.report()
    print(f"\nopenapi-core: {len(recorder.checked)} of {len(recorder.checked)} exchanges conform "
          f"({sum(not c.request_valid for c in recorder.checked)} hostile requests refused as documented)")
