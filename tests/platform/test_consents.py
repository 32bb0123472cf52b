"""consents v3 on PostgreSQL: create, authorise (simulated), read, revoke, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from ofsre.instrumentation import semconv
from ofsre.platform import db
from ofsre.platform.consents.app import create_app
from ofsre.platform.models import Consent

BASE = "/open-banking/consents/v3/consents"


def assert_of_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors", "meta"}
    err = body["errors"][0]
    assert set(err) == {"code", "title", "detail"}
    assert body["meta"]["totalRecords"] == 1 and body["meta"]["requestDateTime"].endswith("Z")
    if code:
        assert err["code"] == code
    return err


async def test_consent_lifecycle_awaiting_authorised_rejected(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        created = await http.post(BASE, json=journeys.consent())
        assert created.status_code == 201, created.text
        data = created.json()["data"]
        cid = data["consentId"]
        assert data["status"] == "AWAITING_AUTHORISATION"
        assert data["permissions"] == journeys.consent()["data"]["permissions"]
        assert created.json()["links"]["self"].endswith(cid)

        authorised = await http.post(f"/_sim/consents/{cid}/authorise")
        assert authorised.status_code == 200 and authorised.json()["data"]["status"] == "AUTHORISED"
        assert (await http.get(f"{BASE}/{cid}")).json()["data"]["status"] == "AUTHORISED"

        revoked = await http.delete(f"{BASE}/{cid}")
        assert revoked.status_code == 204 and revoked.content == b""
        after = (await http.get(f"{BASE}/{cid}")).json()["data"]
        assert after["status"] == "REJECTED"
        assert after["rejection"] == {"rejectedBy": "USER", "reason": {"code": "CUSTOMER_MANUALLY_REVOKED"}}

        assert_of_error(await http.delete(f"{BASE}/{cid}"), 422, "CONSENTIMENTO_EM_STATUS_REJEITADO")
        assert_of_error(await http.post(f"/_sim/consents/{cid}/authorise"), 422, "STATUS_INVALIDO")


async def test_rejecting_an_awaiting_consent(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        cid = (await http.post(BASE, json=journeys.consent())).json()["data"]["consentId"]
        rejected = await http.post(f"/_sim/consents/{cid}/reject")
        assert rejected.json()["data"]["rejection"]["reason"]["code"] == "CUSTOMER_MANUALLY_REJECTED"


async def test_expired_consents_read_as_rejected(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        cid = (await http.post(BASE, json=journeys.consent())).json()["data"]["consentId"]
        await http.post(f"/_sim/consents/{cid}/authorise")
        engine = db.create_engine(settings, service="test")
        async with engine.begin() as conn:
            await conn.execute(update(Consent).where(Consent.consent_id == cid)
                               .values(expiration_at=datetime.now(UTC) - timedelta(seconds=1)))
        await engine.dispose()
        data = (await http.get(f"{BASE}/{cid}")).json()["data"]
        assert data["status"] == "REJECTED"
        assert data["rejection"]["reason"]["code"] == "CONSENT_MAX_DATE_REACHED"


@pytest.mark.parametrize("body, status, code", [
    # consents 3.3.1 enumerates business codes only for 422: a body breaking the schema is 400
    ({"data": {}}, 400, "PARAMETRO_INVALIDO"),
    ({"data": {"loggedUser": {"document": {"identification": "123", "rel": "CPF"}},
               "permissions": ["ACCOUNTS_READ", "RESOURCES_READ"]}}, 400, "PARAMETRO_INVALIDO"),
    ({"data": {"loggedUser": {"document": {"identification": "12345678901", "rel": "CPF"}},
               "permissions": ["NOT_A_PERMISSION"]}}, 400, "PARAMETRO_INVALIDO"),
    ({"data": {"loggedUser": {"document": {"identification": "12345678901", "rel": "CPF"}},
               "permissions": ["ACCOUNTS_READ"]}}, 422, "COMBINACAO_PERMISSOES_INCORRETA"),
    ({"data": {"loggedUser": {"document": {"identification": "12345678901", "rel": "CPF"}},
               "permissions": ["RESOURCES_READ"], "expirationDateTime": "2001-01-01T00:00:00Z"}},
     422, "DATA_EXPIRACAO_INVALIDA"),
    ([1, 2, 3], 400, None),
])
async def test_invalid_consent_requests_get_of_errors(settings, registry, serve, body, status, code):
    async with serve(create_app(settings, registry=registry)) as http:
        assert_of_error(await http.post(BASE, json=body), status, code)


async def test_malformed_json_and_unknown_routes_get_of_errors(settings, registry, serve):
    async with serve(create_app(settings, registry=registry)) as http:
        bad = await http.post(BASE, content=b"{not json", headers={"content-type": "application/json"})
        assert_of_error(bad, 400)
        assert_of_error(await http.get(f"{BASE}/urn:ofsre:nope"), 404, "NOT_FOUND")
        assert_of_error(await http.get("/no/such/route"), 404)
        assert_of_error(await http.put(BASE, json={}), 405)


async def test_another_institution_cannot_read_or_revoke(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        mine = {"x-ofsre-client-org-id": "org-a"}
        cid = (await http.post(BASE, json=journeys.consent(), headers=mine)).json()["data"]["consentId"]
        assert (await http.get(f"{BASE}/{cid}", headers=mine)).status_code == 200
        theirs = {"x-ofsre-client-org-id": "org-b"}
        assert_of_error(await http.get(f"{BASE}/{cid}", headers=theirs), 403)
        assert_of_error(await http.delete(f"{BASE}/{cid}", headers=theirs), 403)


async def test_probes_and_metrics(settings, registry, serve):
    app = create_app(settings, registry=registry)
    async with serve(app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": True}
        for _ in range(2):
            assert_of_error(await http.get(f"{BASE}/urn:ofsre:nobody"), 404)
        scrape = (await http.get("/metrics")).text
    labels = {"service": "consents", "route": BASE + "/{consentId}", "method": "GET", "status": "404",
              "api": "consents", "tier": "alta"}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, labels) == 2
    assert registry.get_sample_value(semconv.HTTP_DURATION.name + "_count", labels) == 2
    served = [line for line in scrape.splitlines() if line.startswith(semconv.HTTP_REQUESTS.series + "{")]
    assert len(served) == 1 and served[0].endswith(" 2.0")  # the probes are not counted, the 404s are


async def test_readyz_is_503_when_the_database_is_unreachable(settings, registry, serve):
    broken = settings.__class__(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
                                data_dir=settings.data_dir)
    async with serve(create_app(broken, registry=registry)) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"database": False}
        assert (await http.get("/healthz")).status_code == 200


# --- x-v, resources v3, renewal (/extends, /extensions) ----------------------------------------------

RESOURCES = "/open-banking/resources/v3/resources"
CUSTOMER = {"x-fapi-customer-ip-address": "203.0.113.7", "x-customer-user-agent": "ofsre-test/1.0"}


async def _authorised(http, journeys, **kw) -> str:
    cid = (await http.post(BASE, json=journeys.consent(**kw))).json()["data"]["consentId"]
    assert (await http.post(f"/_sim/consents/{cid}/authorise")).status_code == 200
    return cid


async def test_every_success_carries_the_api_version(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        created = await http.post(BASE, json=journeys.consent())
        cid = created.json()["data"]["consentId"]
        assert created.headers["x-v"] == "3.3.1"
        assert (await http.get(f"{BASE}/{cid}")).headers["x-v"] == "3.3.1"
        deleted = await http.delete(f"{BASE}/{cid}")
        assert deleted.status_code == 204 and deleted.headers["x-v"] == "3.3.1"


async def test_resources_lists_the_consents_accounts(settings, registry, serve, journeys):
    from ofsre.platform.accounts import data

    async with serve(create_app(settings, registry=registry)) as http:
        cid = await _authorised(http, journeys)
        listed = await http.get(RESOURCES, headers={"authorization": f"Bearer consent:{cid}"})
        assert listed.status_code == 200 and listed.headers["x-v"] == "3.1.0"
        body = listed.json()
        own = [a.account_id for a in data.customer_accounts(journeys.cpf)]
        assert [r["resourceId"] for r in body["data"]] == own
        assert {(r["type"], r["status"]) for r in body["data"]} == {("ACCOUNT", "AVAILABLE")}
        assert body["meta"]["totalRecords"] == len(body["data"])
        assert_of_error(await http.get(RESOURCES), 401)
        awaiting = (await http.post(BASE, json=journeys.consent())).json()["data"]["consentId"]
        assert_of_error(await http.get(RESOURCES, headers={"authorization": f"Bearer consent:{awaiting}"}),
                        403)
        no_resources = await _authorised(http, journeys, permissions=["RESOURCES_READ"])
        empty = await http.get(RESOURCES, headers={"authorization": f"Bearer consent:{no_resources}"})
        assert empty.status_code == 200 and empty.json()["data"] == []
        assert_of_error(await http.get(RESOURCES, params={"page-size": 10},
                                       headers={"authorization": f"Bearer consent:{cid}"}), 400)  # minimum 25


async def test_extending_a_consent_moves_its_expiry_and_is_listed(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        cid = await _authorised(http, journeys)
        first = (datetime.now(UTC) + timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"data": {"loggedUser": {"document": {"identification": journeys.cpf, "rel": "CPF"}},
                         "expirationDateTime": first}}
        extended = await http.post(f"{BASE}/{cid}/extends", json=body, headers=CUSTOMER)
        assert extended.status_code == 201, extended.text
        assert extended.headers["x-v"] == "3.3.1" and extended.json()["data"]["expirationDateTime"] == first
        assert (await http.get(f"{BASE}/{cid}")).json()["data"]["expirationDateTime"] == first
        # no expirationDateTime: no expiry from now on
        forever = await http.post(f"{BASE}/{cid}/extends",
                                  json={"data": {"loggedUser": body["data"]["loggedUser"]}}, headers=CUSTOMER)
        assert forever.status_code == 201 and "expirationDateTime" not in forever.json()["data"]
        history = (await http.get(f"{BASE}/{cid}/extensions")).json()
        assert [e.get("expirationDateTime") for e in history["data"]] == [None, first]
        assert history["data"][0]["previousExpirationDateTime"] == first
        assert history["data"][1]["xFapiCustomerIpAddress"] == "203.0.113.7"
        assert history["data"][1]["xCustomerUserAgent"] == "ofsre-test/1.0"
        assert history["meta"]["totalRecords"] == 2


async def test_extension_refusals_use_the_documents_codes(settings, registry, serve, journeys):
    async with serve(create_app(settings, registry=registry)) as http:
        cid = await _authorised(http, journeys)
        user = {"document": {"identification": journeys.cpf, "rel": "CPF"}}
        soon = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        too_far = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
        url = f"{BASE}/{cid}/extends"
        assert (await http.post(url, json={"data": {"loggedUser": user, "expirationDateTime": soon}},
                                headers=CUSTOMER)).status_code == 201
        earlier = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for date in (earlier, too_far):
            body = {"data": {"loggedUser": user, "expirationDateTime": date}}
            assert_of_error(await http.post(url, json=body, headers=CUSTOMER), 422, "DATA_EXPIRACAO_INVALIDA")
        stranger = {"document": {"identification": "10987654321", "rel": "CPF"}}
        assert_of_error(await http.post(url, json={"data": {"loggedUser": stranger}}, headers=CUSTOMER), 403)
        # customer headers required
        assert_of_error(await http.post(url, json={"data": {"loggedUser": user}}), 400)
        awaiting = (await http.post(BASE, json=journeys.consent())).json()["data"]["consentId"]
        assert_of_error(await http.post(f"{BASE}/{awaiting}/extends", json={"data": {"loggedUser": user}},
                                        headers=CUSTOMER), 422, "ESTADO_CONSENTIMENTO_INVALIDO")
        assert_of_error(await http.get(f"{BASE}/urn:ofsre:nope/extensions"), 404)
