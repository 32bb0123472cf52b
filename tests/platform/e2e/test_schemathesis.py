"""Property-based API tests: schemathesis against each running module's own OpenAPI document.

Bounded and reproducible: 20 examples per operation (10 valid, 10 invalid), derandomized (a fixed seed).
Per response: never a 5xx; the status code, content type and body match the document; every
4xx carries the Open Finance error body. Accounts and payments calls get a valid, authorised
consent in their headers (explicit headers override the generated ones), so the happy paths
are explored as well as the refusals.
"""

from __future__ import annotations

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ofsre.platform.jws import Participant, body_of

from ..conftest import consent_request
from ..participant import payment_consent_body, signed

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BOUNDED = settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


def _schema(platform, service: str):
    return schemathesis.openapi.from_url(platform.url(service) + "/openapi.json")


@pytest.fixture(scope="module")
def consents_schema(platform):
    return _schema(platform, "consents")


@pytest.fixture(scope="module")
def accounts_schema(platform):
    return _schema(platform, "accounts")


@pytest.fixture(scope="module")
def payments_schema(platform):
    return _schema(platform, "payments")


@pytest.fixture(scope="module")
def data_consent(platform) -> str:
    with httpx.Client(base_url=platform.url("consents"), headers=platform.module_headers) as http:
        created = http.post("/open-banking/consents/v3/consents", json=consent_request())
        cid = created.json()["data"]["consentId"]
    assert platform.bank.decide("consents", cid).status_code == 200
    return cid


@pytest.fixture(scope="module")
def payment_consent(platform) -> str:
    me = Participant.register("org-schemathesis", platform.workdir / "jwks")  # payments v4 takes signed JWS
    url = platform.url("payments") + "/open-banking/payments/v4/consents"
    with httpx.Client(headers=platform.module_headers) as http:
        created = http.post(url, **signed(me, url, payment_consent_body(), key="schemathesis-consent"))
        cid = me.read(created.text)["data"]["consentId"]
    assert platform.bank.decide("payments", cid).status_code == 200
    return cid


def check(case, base_url: str, headers: dict | None) -> None:
    response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
    if 400 <= response.status_code < 500:
        # payments v4 signs its 422s (application/jwt): the error body is the JWS payload
        body = body_of(jwt.decode(response.text, options={"verify_signature": False})) \
            if response.headers.get("content-type") == "application/jwt" else response.json()
        assert set(body) == {"errors", "meta"}, body
        assert body["errors"] and set(body["errors"][0]) == {"code", "title", "detail"}, body


def fuzz(schema, base_url: str, headers: dict | None = None) -> None:
    """Every operation, valid and invalid inputs, 10 examples each; one report of all failures."""
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @BOUNDED
            @given(case=operation.as_strategy(mode))
            def run(case):
                check(case, base_url, headers)

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - collect, so one run reports every broken operation
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert operations, "the OpenAPI document lists no operation"
    assert not failures, "\n\n".join(failures)


def test_consents_api(consents_schema, platform):
    fuzz(consents_schema, platform.url("consents"), platform.module_headers)


def test_accounts_api(accounts_schema, platform, data_consent):
    fuzz(accounts_schema, platform.url("accounts"),
         {**platform.module_headers, "authorization": f"Bearer consent:{data_consent}"})


def test_payments_api(payments_schema, platform, payment_consent):
    fuzz(payments_schema, platform.url("payments"),
         {**platform.module_headers, "authorization": f"Bearer consent:{payment_consent}"})
