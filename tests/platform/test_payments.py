"""payments v4 on PostgreSQL with the real database queue: consents, idempotency, publishing."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ofsre.platform.payments.app import TOPIC
from ofsre.platform.payments.app import create_app as payments_app
from ofsre.platform.queue import open_queue

from .test_consents import assert_of_error

BASE = "/open-banking/payments/v4"


async def authorised_consent(http, journeys, amount="100.00", headers=None) -> str:
    created = await http.post(f"{BASE}/consents", json=journeys.payment_consent(amount),
                              headers={"x-idempotency-key": f"c-{uuid.uuid4()}", **(headers or {})})
    assert created.status_code == 201, created.text
    cid = created.json()["data"]["consentId"]
    assert created.json()["data"]["status"] == "AWAITING_AUTHORISATION"
    authorised = await http.post(f"/_sim/payments/consents/{cid}/authorise")
    assert authorised.json()["data"]["status"] == "AUTHORISED"
    return cid


async def drain(settings, topic=TOPIC) -> list[dict]:
    """Every message waiting on ``topic`` (acknowledged, so the next test starts empty)."""
    queue = await open_queue(settings)
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


async def test_pix_payment_consumes_the_consent_and_is_published(settings, serve, journeys):
    await drain(settings)
    async with serve(payments_app(settings)) as http:
        cid = await authorised_consent(http, journeys)
        paid = await http.post(f"{BASE}/pix/payments", json=journeys.pix(),
                               headers={"x-idempotency-key": "pay-1-" + cid, "authorization": f"Bearer consent:{cid}"})
        assert paid.status_code == 201, paid.text
        payment = paid.json()["data"][0]
        assert payment["status"] == "RCVD" and payment["consentId"] == cid
        assert payment["endToEndId"].startswith("E") and len(payment["endToEndId"]) == 32
        consent = (await http.get(f"{BASE}/consents/{cid}")).json()["data"]
        assert consent["status"] == "CONSUMED"
        read = (await http.get(f"{BASE}/pix/payments/{payment['paymentId']}")).json()["data"]
        assert read["status"] == "RCVD"
    published = await drain(settings)
    assert [m["paymentId"] for m in published] == [payment["paymentId"]]
    assert published[0]["consentId"] == cid and published[0]["amount"] == "100.00"


async def test_a_repeated_idempotency_key_returns_the_first_answer(settings, serve, journeys):
    async with serve(payments_app(settings)) as http:
        cid = await authorised_consent(http, journeys)
        headers = {"x-idempotency-key": "same-" + cid, "x-consent-id": cid}
        first = await http.post(f"{BASE}/pix/payments", json=journeys.pix(), headers=headers)
        again = await http.post(f"{BASE}/pix/payments", json=journeys.pix(), headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        other_body = await http.post(f"{BASE}/pix/payments", json=journeys.pix("100.01"), headers=headers)
        assert_of_error(other_body, 422, "ERRO_IDEMPOTENCIA")
        # A new key on the consumed consent is a new request, refused on its own merits.
        new_key = await http.post(f"{BASE}/pix/payments", json=journeys.pix(),
                                  headers={**headers, "x-idempotency-key": "other-" + cid})
        assert_of_error(new_key, 422, "CONSENTIMENTO_INVALIDO")
    published = [m for m in await drain(settings) if m["consentId"] == cid]
    assert len(published) == 1


async def test_a_business_refusal_is_remembered_too(settings, serve, journeys):
    async with serve(payments_app(settings)) as http:
        created = await http.post(f"{BASE}/consents", json=journeys.payment_consent(),
                                  headers={"x-idempotency-key": "awaiting"})
        cid = created.json()["data"]["consentId"]
        headers = {"x-idempotency-key": "early-" + cid, "x-consent-id": cid}
        early = await http.post(f"{BASE}/pix/payments", json=journeys.pix(), headers=headers)
        assert_of_error(early, 422, "CONSENTIMENTO_INVALIDO")
        await http.post(f"/_sim/payments/consents/{cid}/authorise")
        replay = await http.post(f"{BASE}/pix/payments", json=journeys.pix(), headers=headers)
        assert replay.status_code == 422 and replay.content == early.content


async def test_concurrent_requests_with_one_key_make_one_payment(settings, serve, journeys):
    async with serve(payments_app(settings)) as http:
        cid = await authorised_consent(http, journeys)
        headers = {"x-idempotency-key": "race-" + cid, "x-consent-id": cid}
        answers = await asyncio.gather(*(http.post(f"{BASE}/pix/payments", json=journeys.pix(), headers=headers)
                                         for _ in range(5)))
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["data"][0]["paymentId"] for a in answers}) == 1
    assert len([m for m in await drain(settings) if m["consentId"] == cid]) == 1


async def test_payment_must_match_the_consent(settings, serve, journeys):
    async with serve(payments_app(settings)) as http:
        cid = await authorised_consent(http, journeys, amount="50.00")
        wrong_amount = await http.post(f"{BASE}/pix/payments", json=journeys.pix("49.99"),
                                       headers={"x-idempotency-key": "w-" + cid, "x-consent-id": cid})
        assert_of_error(wrong_amount, 422, "PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
        mismatch = await http.post(f"{BASE}/pix/payments", json=journeys.pix("50.00", consent_id="urn:x:other"),
                                   headers={"x-idempotency-key": "m-" + cid, "x-consent-id": cid})
        assert_of_error(mismatch, 422, "PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
        from_body = await http.post(f"{BASE}/pix/payments", json=journeys.pix("50.00", consent_id=cid),
                                    headers={"x-idempotency-key": "b-" + cid})
        assert from_body.status_code == 201, from_body.text
    await drain(settings)


@pytest.mark.parametrize("headers, body, status", [
    ({}, "pix", 400),                                               # no x-idempotency-key
    ({"x-idempotency-key": "k"}, "pix", 401),                       # no consent anywhere
    ({"x-idempotency-key": "k", "x-consent-id": "urn:x:none"}, "pix", 422),
    ({"x-idempotency-key": "k", "x-consent-id": "c"}, {"data": []}, 422),
    ({"x-idempotency-key": "k", "x-consent-id": "c"}, {"data": [{"localInstrument": "XXXX"}]}, 422),
    ({"x-idempotency-key": "k", "x-consent-id": "c"}, "not json", 400),
])
async def test_invalid_pix_requests_get_of_errors(settings, serve, journeys, headers, body, status):
    async with serve(payments_app(settings)) as http:
        if body == "not json":
            response = await http.post(f"{BASE}/pix/payments", content=b"{", headers={**headers,
                                       "content-type": "application/json"})
        else:
            response = await http.post(f"{BASE}/pix/payments", json=journeys.pix() if body == "pix" else body,
                                       headers=headers)
        assert_of_error(response, status)


async def test_unknown_ids_are_404(settings, serve):
    async with serve(payments_app(settings)) as http:
        assert_of_error(await http.get(f"{BASE}/pix/payments/nope"), 404)
        assert_of_error(await http.get(f"{BASE}/consents/urn:x:nope"), 404)
        assert_of_error(await http.post("/_sim/payments/consents/urn:x:nope/authorise"), 404)


async def test_a_failed_publish_rejects_the_payment(settings, serve, journeys):
    app = payments_app(settings)
    async with serve(app) as http:
        cid = await authorised_consent(http, journeys)
        await app.state.queue.close()  # the queue refuses every publish from now on
        paid = await http.post(f"{BASE}/pix/payments", json=journeys.pix(),
                               headers={"x-idempotency-key": "q-" + cid, "x-consent-id": cid})
        assert paid.status_code == 201
        payment_id = paid.json()["data"][0]["paymentId"]
        read = (await http.get(f"{BASE}/pix/payments/{payment_id}")).json()["data"]
        assert read["status"] == "RJCT" and read["rejectionReason"]["code"] == "FALHA_INFRAESTRUTURA"

