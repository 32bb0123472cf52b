"""payments v4 on PostgreSQL with the real database queue: signed JWS both ways, consents,
idempotency, publishing, and every signature refusal with its documented status.

The client is an initiator with its own key registered in the platform's JWKS directory
(``<data dir>/jwks/org-pay.json``), calling as the gateway forwards it (``x-ofsre-client-org-id``
from its certificate); every answer is verified with the platform's published key, JSON errors
by their detached ``x-jws-signature``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import jwt
import pytest

from ofsre.platform.contracts import PAYMENTS_TOPIC
from ofsre.platform.jws import InvalidClaims, Participant, SigningKey
from ofsre.platform.payments.app import create_app as payments_app
from ofsre.platform.queue import open_queue

from .participant import payment_consent_body as consent_body
from .participant import pix_body, signed
from .test_consents import assert_of_error

BASE = "/open-banking/payments/v4"
ORIGIN = "http://testserver"


@pytest.fixture
def me(settings) -> Participant:
    return Participant.register("org-pay", settings.data_dir / "jwks")


ORG = {"x-ofsre-client-org-id": "org-pay"}  # what the gateway forwards from the client certificate


@pytest.fixture
async def http(settings, registry, serve):
    async with serve(payments_app(settings, registry=registry)) as client:
        client.headers.update(ORG)
        yield client


async def post(http, me, path, body, **kw):
    return await http.post(path, **signed(me, ORIGIN + path, body, **kw))


def assert_signed_json_error(me, response, status: int, code: str | None = None) -> dict:
    """A 400/401/403/404/415: JSON as the document lists them, signed in ``x-jws-signature``."""
    err = assert_of_error(response, status, code)
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert me.read_error(response.content, response.headers.get("x-jws-signature"))["errors"][0] == err
    return err


def assert_signed_error(me, response, status: int, code: str) -> dict:
    """A 422: the document makes it a signed JWS, with the error body inside."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/jwt"
    body = me.read(response.text)
    assert body["errors"][0]["code"] == code, body
    return body["errors"][0]


async def authorised_consent(http, me, amount="100.00") -> str:
    created = await post(http, me, f"{BASE}/consents", consent_body(amount))
    assert created.status_code == 201, created.text
    data = me.read(created.text)["data"]
    assert data["status"] == "AWAITING_AUTHORISATION"
    authorised = await http.post(f"/_sim/payments/consents/{data['consentId']}/authorise")
    assert authorised.json()["data"]["status"] == "AUTHORISED"
    return data["consentId"]


async def drain(settings, topic=PAYMENTS_TOPIC) -> list[dict]:
    """Every message waiting on ``topic`` (acknowledged, so the next test starts empty)."""
    queue = await open_queue(settings, registry=None)  # a helper: its metrics are nobody's business
    bodies = []
    try:
        async with queue.subscribe(topic, group="worker") as messages:
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages), 1.0)
                except TimeoutError:
                    break
                bodies.append(message.body)
                await message.ack()
    finally:
        await queue.close()
    return bodies


async def test_answers_are_signed_by_the_platform_for_the_initiator(http, me):
    created = await post(http, me, f"{BASE}/consents", consent_body())
    assert created.status_code == 201 and created.headers["content-type"] == "application/jwt"
    claims = jwt.decode(created.text, options={"verify_signature": False})
    header = jwt.get_unverified_header(created.text)
    assert header["alg"] == "PS256" and header["typ"] == "JWT" and header["kid"]
    assert claims["iss"] == "ofsre-bank" and claims["aud"] == "org-pay"
    assert abs(claims["iat"] - time.time()) < 5 and uuid.UUID(claims["jti"]).version == 4
    data = me.read(created.text)["data"]  # verified against the platform's key in the directory
    assert data["payment"]["details"]["localInstrument"] == "MANU"
    read = await http.get(f"{BASE}/consents/{data['consentId']}")
    assert read.status_code == 200 and me.read(read.text)["data"]["consentId"] == data["consentId"]


async def test_pix_payment_consumes_the_consent_and_is_published(settings, http, me):
    await drain(settings)
    cid = await authorised_consent(http, me)
    paid = await post(http, me, f"{BASE}/pix/payments", pix_body(), key="pay-1-" + cid, consent=cid)
    assert paid.status_code == 201, paid.text
    payment = me.read(paid.text)["data"][0]
    assert payment["status"] == "RCVD" and payment["consentId"] == cid
    assert payment["debtorAccount"]["ispb"] == "99999999"  # the customer's own (seeded) account
    consent = me.read((await http.get(f"{BASE}/consents/{cid}")).text)["data"]
    assert consent["status"] == "CONSUMED"
    read = me.read((await http.get(f"{BASE}/pix/payments/{payment['paymentId']}")).text)["data"]
    assert read["status"] == "RCVD" and read["endToEndId"] == payment["endToEndId"]
    published = await drain(settings)
    assert [m["paymentId"] for m in published] == [payment["paymentId"]]
    assert published[0]["consentId"] == cid and published[0]["amount"] == "100.00"


async def test_a_repeated_idempotency_key_returns_the_first_answer_signed_anew(settings, http, me):
    cid = await authorised_consent(http, me)
    body = pix_body(consent_id=cid)
    first = await post(http, me, f"{BASE}/pix/payments", body, key="same-" + cid)
    again = await post(http, me, f"{BASE}/pix/payments", body, key="same-" + cid)  # re-signed: new jti
    assert first.status_code == again.status_code == 201
    assert me.read(again.text)["data"] == me.read(first.text)["data"]
    assert first.text != again.text  # the same answer, in a message of its own (iat, jti)
    other = await post(http, me, f"{BASE}/pix/payments", pix_body("100.01", consent_id=cid),
                       key="same-" + cid)
    assert_signed_error(me, other, 422, "ERRO_IDEMPOTENCIA")
    new_key = await post(http, me, f"{BASE}/pix/payments", body, key="other-" + cid)
    assert_signed_error(me, new_key, 422, "CONSENTIMENTO_INVALIDO")
    assert len([m for m in await drain(settings) if m["consentId"] == cid]) == 1


async def test_concurrent_requests_with_one_key_make_one_payment(settings, http, me):
    cid = await authorised_consent(http, me)
    body = pix_body(consent_id=cid)
    answers = await asyncio.gather(*(post(http, me, f"{BASE}/pix/payments", body, key="race-" + cid)
                                     for _ in range(5)))
    assert {a.status_code for a in answers} == {201}
    assert len({me.read(a.text)["data"][0]["paymentId"] for a in answers}) == 1
    assert len([m for m in await drain(settings) if m["consentId"] == cid]) == 1


async def test_payment_must_match_the_consent(settings, http, me):
    cid = await authorised_consent(http, me, amount="50.00")
    wrong_amount = await post(http, me, f"{BASE}/pix/payments", pix_body("49.99", consent_id=cid))
    assert_signed_error(me, wrong_amount, 422, "PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
    other_account = {"ispb": "12345678", "number": "999", "accountType": "CACC"}
    wrong_creditor = await post(http, me, f"{BASE}/pix/payments",
                                pix_body("50.00", consent_id=cid, creditor_account=other_account))
    assert_signed_error(me, wrong_creditor, 422, "PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
    ok = await post(http, me, f"{BASE}/pix/payments", pix_body("50.00", consent_id=cid))
    assert ok.status_code == 201, ok.text
    await drain(settings)


async def test_a_body_that_breaks_the_schema_is_a_signed_422(http, me):
    no_details = consent_body()
    del no_details["data"]["payment"]["details"]
    assert_signed_error(me, await post(http, me, f"{BASE}/consents", no_details), 422,
                        "PARAMETRO_NAO_INFORMADO")
    bad_amount = consent_body("10")
    assert_signed_error(me, await post(http, me, f"{BASE}/consents", bad_amount), 422, "PARAMETRO_INVALIDO")
    scheduled = consent_body()
    scheduled["data"]["payment"]["schedule"] = {"single": {"date": "2030-01-01"}}
    assert_signed_error(me, await post(http, me, f"{BASE}/consents", scheduled), 422,
                        "DETALHE_PAGAMENTO_INVALIDO")


# --- signature refusals: 400 BAD_SIGNATURE, 403 INVALID_CLIENT, 415 (payments 4.0.0 "Validações") ----

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(me, path) -> dict:
    return {**consent_body(), "iss": me.org_id, "aud": ORIGIN + path, "iat": int(time.time()),
            "jti": str(uuid.uuid4())}


async def test_a_tampered_body_is_400_bad_signature(http, me):
    path = f"{BASE}/consents"
    token = me.sign(consent_body("10.00"), ORIGIN + path)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["data"]["payment"]["amount"] = "99999.00"
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert_signed_json_error(me, await post(http, me, path, {}, token=tampered), 400, "BAD_SIGNATURE")


async def test_a_key_the_initiator_never_registered_is_400(http, me):
    path = f"{BASE}/consents"
    stranger = SigningKey.generate(kid=me.key.kid)  # same kid, other key: a forged message
    token = stranger.sign(consent_body(), iss=me.org_id, aud=ORIGIN + path)
    assert_signed_json_error(me, await post(http, me, path, {}, token=token), 400, "BAD_SIGNATURE")
    unknown_org = SigningKey.generate().sign(consent_body(), iss="org-nobody", aud=ORIGIN + path)
    assert_signed_json_error(me, await post(http, me, path, {}, token=unknown_org), 400, "BAD_SIGNATURE")


async def test_alg_none_is_400(http, me):
    path = f"{BASE}/consents"
    unsigned = jwt.encode(_claims(me, path), None, algorithm="none", headers={"kid": me.key.kid})
    assert_signed_json_error(me, await post(http, me, path, {}, token=unsigned), 400, "BAD_SIGNATURE")


async def test_expired_iat_and_wrong_audience_are_403_invalid_client(http, me):
    path = f"{BASE}/consents"
    old = me.key.sign(consent_body(), iss=me.org_id, aud=ORIGIN + path, iat=int(time.time()) - 300)
    assert_signed_json_error(me, await post(http, me, path, {}, token=old), 403, "INVALID_CLIENT")
    elsewhere = me.sign(consent_body(), ORIGIN + f"{BASE}/pix/payments")
    assert_signed_json_error(me, await post(http, me, path, {}, token=elsewhere), 403, "INVALID_CLIENT")


async def test_a_replayed_jti_is_403_even_with_a_new_idempotency_key(http, me):
    path = f"{BASE}/consents"
    token = me.sign(consent_body(), ORIGIN + path)
    assert (await post(http, me, path, {}, token=token)).status_code == 201
    replay = await post(http, me, path, {}, token=token)
    err = assert_signed_json_error(me, replay, 403, "INVALID_CLIENT")
    assert "jti" in err["detail"]


async def test_a_json_body_is_415_and_a_missing_idempotency_key_400(http, me):
    path = f"{BASE}/consents"
    as_json = await http.post(path, json=consent_body(), headers={"x-idempotency-key": "k"})
    assert_signed_json_error(me, as_json, 415)
    no_key = await http.post(path, content=me.sign(consent_body(), ORIGIN + path), headers=me.headers)
    assert_signed_json_error(me, no_key, 400)


async def test_the_gateways_organisation_must_be_the_signer(http, me):
    """With mTLS the certificate's organisation is the sender: a message signed by another is refused."""
    path = f"{BASE}/consents"
    request = signed(me, ORIGIN + path, consent_body())
    refused = await http.post(path, content=request["content"],
                              headers={**request["headers"], "x-ofsre-client-org-id": "org-other"})
    assert_of_error(refused, 400, "BAD_SIGNATURE")  # org-other has no such registered key
    # signed for org-other (the sender the certificate names), so org-pay's check of aud fails
    with pytest.raises(InvalidClaims):
        me.read_error(refused.content, refused.headers["x-jws-signature"])


async def test_unknown_ids_are_404(http, me):
    assert_signed_json_error(me, await http.get(f"{BASE}/pix/payments/nope"), 404)
    assert_signed_json_error(me, await http.get(f"{BASE}/consents/urn:x:nope"), 404)


async def test_no_consent_is_401_and_an_unknown_one_a_signed_422(http, me):
    assert_signed_json_error(me, await post(http, me, f"{BASE}/pix/payments", pix_body()), 401)
    unknown = await post(http, me, f"{BASE}/pix/payments", pix_body(consent_id="urn:x:none"))
    assert_signed_error(me, unknown, 422, "CONSENTIMENTO_INVALIDO")


async def test_a_failed_publish_rejects_the_payment(settings, registry, serve, me):
    app = payments_app(settings, registry=registry)
    async with serve(app) as http:
        http.headers.update(ORG)
        cid = await authorised_consent(http, me)
        await app.state.queue.close()  # the queue refuses every publish from now on
        paid = await post(http, me, f"{BASE}/pix/payments", pix_body(consent_id=cid))
        assert paid.status_code == 201
        payment_id = me.read(paid.text)["data"][0]["paymentId"]
        read = me.read((await http.get(f"{BASE}/pix/payments/{payment_id}")).text)["data"]
        assert read["status"] == "RJCT" and read["rejectionReason"]["code"] == "FALHA_INFRAESTRUTURA"
