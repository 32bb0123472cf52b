"""accounts v2: consent checks, permissions, pagination, and deterministic seeded data."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import date

import pytest

from ofsre.platform.accounts import data
from ofsre.platform.accounts.app import create_app as accounts_app
from ofsre.platform.app_common import consent_id_from
from ofsre.platform.consents.app import create_app as consents_app

from .test_consents import assert_of_error

BASE = "/open-banking/accounts/v2"


@pytest.fixture
async def apis(settings, registry, serve):
    """(consents client, accounts client) on the same database."""
    async with AsyncExitStack() as stack:
        consents = await stack.enter_async_context(serve(consents_app(settings, registry=registry)))
        accounts = await stack.enter_async_context(serve(accounts_app(settings, registry=registry)))
        yield consents, accounts


async def new_consent(consents, journeys, permissions=None, *, authorise=True, document=None) -> str:
    body = journeys.consent(permissions, **({"document": document} if document else {}))
    cid = (await consents.post("/open-banking/consents/v3/consents", json=body)).json()["data"]["consentId"]
    if authorise:
        assert (await consents.post(f"/_sim/consents/{cid}/authorise")).status_code == 200
    return cid


def bearer(cid: str) -> dict:
    return {"authorization": f"Bearer consent:{cid}"}


async def test_reads_with_an_authorised_consent(apis, journeys):
    consents, accounts = apis
    cid = await new_consent(consents, journeys)
    listed = await accounts.get(f"{BASE}/accounts", headers=bearer(cid))
    assert listed.status_code == 200, listed.text
    items = listed.json()["data"]
    assert [a["accountId"] for a in items] == [a.account_id for a in data.customer_accounts(journeys.cpf)]
    account_id = items[0]["accountId"]
    one = (await accounts.get(f"{BASE}/accounts/{account_id}", headers={"x-consent-id": cid})).json()["data"]
    assert one["currency"] == "BRL" and one["number"] == items[0]["number"]
    answer = await accounts.get(f"{BASE}/accounts/{account_id}/balances", headers=bearer(cid))
    balances = answer.json()["data"]
    assert balances["availableAmount"]["currency"] == "BRL"
    seeded = data.balances(data.customer_accounts(journeys.cpf)[0])
    assert balances["availableAmount"]["amount"] == seeded["availableAmount"]["amount"]


async def test_missing_consent_is_401_and_bad_consents_are_403(apis, journeys):
    consents, accounts = apis
    assert_of_error(await accounts.get(f"{BASE}/accounts"), 401, "UNAUTHORIZED")
    assert_of_error(await accounts.get(f"{BASE}/accounts", headers=bearer("urn:ofsre:unknown")), 403)
    awaiting = await new_consent(consents, journeys, authorise=False)
    assert_of_error(await accounts.get(f"{BASE}/accounts", headers=bearer(awaiting)), 403)
    revoked = await new_consent(consents, journeys)
    await consents.delete(f"/open-banking/consents/v3/consents/{revoked}")
    assert_of_error(await accounts.get(f"{BASE}/accounts", headers=bearer(revoked)), 403)


async def test_each_endpoint_needs_its_permission(apis, journeys):
    consents, accounts = apis
    only_list = await new_consent(consents, journeys, ["ACCOUNTS_READ", "RESOURCES_READ"])
    listed = await accounts.get(f"{BASE}/accounts", headers=bearer(only_list))
    account_id = listed.json()["data"][0]["accountId"]
    for suffix, permission in (("balances", "ACCOUNTS_BALANCES_READ"),
                               ("transactions", "ACCOUNTS_TRANSACTIONS_READ"),
                               ("overdraft-limits", "ACCOUNTS_OVERDRAFT_LIMITS_READ")):
        refused = await accounts.get(f"{BASE}/accounts/{account_id}/{suffix}", headers=bearer(only_list))
        err = assert_of_error(refused, 403)
        assert permission in err["detail"]
    no_list = await new_consent(consents, journeys, ["ACCOUNTS_BALANCES_READ", "RESOURCES_READ"])
    assert_of_error(await accounts.get(f"{BASE}/accounts", headers=bearer(no_list)), 403)
    balances = await accounts.get(f"{BASE}/accounts/{account_id}/balances", headers=bearer(no_list))
    assert balances.status_code == 200


async def test_another_customers_account_is_not_found(apis, journeys):
    consents, accounts = apis
    cid = await new_consent(consents, journeys, document="10987654321")
    stranger = data.customer_accounts(journeys.cpf)[0].account_id
    assert_of_error(await accounts.get(f"{BASE}/accounts/{stranger}", headers=bearer(cid)), 404)


async def test_transactions_paginate_like_the_spec(apis, journeys):
    consents, accounts = apis
    cid = await new_consent(consents, journeys)
    account = data.customer_accounts(journeys.cpf)[0]
    url = f"{BASE}/accounts/{account.account_id}/transactions"
    query = {"fromBookingDate": "2024-01-01", "toBookingDate": "2024-01-31", "page-size": 10}
    expected = data.transactions(account, date(2024, 1, 1), date(2024, 1, 31))
    first = (await accounts.get(url, params=query, headers=bearer(cid))).json()
    pages = -(-len(expected) // 10)
    assert first["meta"]["totalRecords"] == len(expected) and first["meta"]["totalPages"] == pages
    assert "prev" not in first["links"] and "page=2" in first["links"]["next"]
    seen = list(first["data"])
    for n in range(2, pages + 1):
        page = (await accounts.get(url, params={**query, "page": n}, headers=bearer(cid))).json()
        seen += page["data"]
    assert seen == expected
    assert "next" not in page["links"] and f"page={pages - 1}" in page["links"]["prev"]
    assert_of_error(await accounts.get(url, params={**query, "page": pages + 1}, headers=bearer(cid)), 422,
                    "PAGINA_INVALIDA")
    credits = (await accounts.get(url, params={**query, "creditDebitIndicator": "CREDITO", "page-size": 1000},
                                  headers=bearer(cid))).json()["data"]
    assert credits and {t["creditDebitType"] for t in credits} == {"CREDITO"}


@pytest.mark.parametrize("query, status", [
    ({"page-size": 0}, 400), ({"page-size": 1001}, 400), ({"page": "x"}, 400),
    ({"fromBookingDate": "2024-02-01", "toBookingDate": "2024-01-01"}, 422),
    ({"fromBookingDate": "2020-01-01", "toBookingDate": "2024-01-01"}, 422),
    ({"fromBookingDate": "not-a-date"}, 400),
])
async def test_invalid_transaction_queries(apis, journeys, query, status):
    consents, accounts = apis
    cid = await new_consent(consents, journeys)
    account_id = data.customer_accounts(journeys.cpf)[0].account_id
    assert_of_error(await accounts.get(f"{BASE}/accounts/{account_id}/transactions", params=query,
                                       headers=bearer(cid)), status)


def test_seeded_data_is_deterministic_per_customer():
    data.customer_accounts.cache_clear()
    first = data.customer_accounts("11122233344")
    data.customer_accounts.cache_clear()
    assert data.customer_accounts("11122233344") == first
    assert data.customer_accounts("55566677788") != first
    assert 1 <= len(first) <= 3 and len({a.account_id for a in first}) == len(first)
    day = data.transactions(first[0], date(2024, 3, 1), date(2024, 3, 3))
    assert day == data.transactions(first[0], date(2024, 3, 1), date(2024, 3, 3))
    stamps = [t["transactionDateTime"] for t in day]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize("authorization, header, expected", [
    ("Bearer consent:urn:x:1", None, "urn:x:1"),
    ("bearer consent:urn:x:1", "urn:y:2", "urn:x:1"),
    ("Bearer some-opaque-token", "urn:y:2", "urn:y:2"),
    (None, "  urn:y:2 ", "urn:y:2"),
    ("Bearer consent:", None, None),
    (None, "   ", None),
])
def test_consent_id_sources(authorization, header, expected):
    assert consent_id_from(authorization, header) == expected


# --- monthly operational limits (423) -------------------------------------------------------------

async def test_monthly_operational_limit_is_423_past_the_catalogs_tier_limit(apis, journeys):
    """/accounts is baixa (monthly_limit 8): the ninth successful call of the month is 423; another
    consent, another endpoint or another account has its own count; refused calls never count."""
    from ofsre.instrumentation.catalog import load_catalog

    limit = load_catalog().lookup("GET", f"{BASE}/accounts").tier.monthly_limit
    consents, accounts = apis
    cid = await new_consent(consents, journeys)
    own = data.customer_accounts(journeys.cpf)[0].account_id
    stranger = data.customer_accounts("10987654321")[0].account_id
    for _ in range(limit + 2):  # 404s are not successful calls
        assert (await accounts.get(f"{BASE}/accounts/{stranger}", headers=bearer(cid))).status_code == 404
    statuses = [(await accounts.get(f"{BASE}/accounts", headers=bearer(cid))).status_code
                for _ in range(limit + 1)]
    assert statuses == [200] * limit + [423]
    err = assert_of_error(await accounts.get(f"{BASE}/accounts", headers=bearer(cid)), 423,
                          "LIMITE_MENSAL_EXCEDIDO")
    assert str(limit) in err["detail"]
    assert (await accounts.get(f"{BASE}/accounts/{own}", headers=bearer(cid))).status_code == 200
    other = await new_consent(consents, journeys)
    assert (await accounts.get(f"{BASE}/accounts", headers=bearer(other))).status_code == 200


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_concurrent_calls_never_take_more_than_the_months_limit(backend, database_url, tmp_path,
                                                                      registry):
    """Three times the limit at once, each in its own session and connection: exactly the limit is
    counted, the rest are 423, on both databases the platform runs on."""
    import asyncio
    import uuid

    from ofsre.instrumentation.catalog import load_catalog
    from ofsre.platform.accounts import limits
    from ofsre.platform.db import create_engine, create_schema, session_factory
    from ofsre.platform.errors import OFError
    from ofsre.platform.settings import Settings

    url = database_url if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"
    engine = create_engine(Settings(database_url=url, data_dir=tmp_path, db_pool_size=8), service="accounts",
                           registry=registry)
    if backend == "sqlite":
        await create_schema(engine)
    sessions, catalog, route = session_factory(engine), load_catalog(), f"{BASE}/accounts"
    limit, consent = catalog.lookup("GET", route).tier.monthly_limit, f"urn:test:{uuid.uuid4()}"

    async def call() -> int:
        async with sessions() as session:
            try:
                await limits.consume(session, catalog, method="GET", route=route, consent_id=consent,
                                     resource_id=None, paging=False)
            except OFError as refused:
                return refused.status
            return 200

    try:
        statuses = await asyncio.gather(*(call() for _ in range(3 * limit)))
    finally:
        await engine.dispose()
    assert sorted(statuses) == [200] * limit + [423] * (2 * limit)


async def test_paging_on_with_the_pagination_key_does_not_count(apis, journeys):
    from ofsre.instrumentation.catalog import load_catalog

    consents, accounts = apis
    cid = await new_consent(consents, journeys)
    account = data.customer_accounts(journeys.cpf)[0]
    url = f"{BASE}/accounts/{account.account_id}/transactions"
    limit = load_catalog().lookup("GET", url.replace(account.account_id, "{accountId}")).tier.monthly_limit
    query = {"fromBookingDate": "2024-01-01", "toBookingDate": "2024-03-31", "page-size": 5}
    for _ in range(limit):
        first = await accounts.get(url, params=query, headers=bearer(cid))
        assert first.status_code == 200
    assert_of_error(await accounts.get(url, params=query, headers=bearer(cid)), 423)
    nxt = first.json()["links"]["next"]
    assert "pagination-key=" in nxt
    for _ in range(3):  # following the links pages on for free
        page = await accounts.get(nxt, headers=bearer(cid))
        assert page.status_code == 200, page.text
        nxt = page.json()["links"]["next"]
    # a made-up key does not make page 2 free
    assert_of_error(await accounts.get(url, params={**query, "page": 2, "pagination-key": "x"},
                                       headers=bearer(cid)),
                    423)
