"""The accounts service: accounts v2 over deterministic seeded data, guarded by the consent.

Spec routes (base ``/open-banking/accounts/v2``), each with the permission it needs::

    GET /accounts                                  ACCOUNTS_READ                 paginated
    GET /accounts/{accountId}                      ACCOUNTS_READ
    GET /accounts/{accountId}/balances             ACCOUNTS_BALANCES_READ
    GET /accounts/{accountId}/overdraft-limits     ACCOUNTS_OVERDRAFT_LIMITS_READ
    GET /accounts/{accountId}/transactions         ACCOUNTS_TRANSACTIONS_READ    paginated, by booking date
    GET /accounts/{accountId}/transactions-current ACCOUNTS_TRANSACTIONS_READ    last 7 days only

Which consent? Real Open Finance puts it in the access token's scope ``consent:<id>``; the
platform has no authorisation server, so the token *is* the scope: ``Authorization: Bearer
consent:<consentId>``. ``x-consent-id: <consentId>`` is accepted too (load tests, curl).
No consent → 401. A consent that is unknown, not AUTHORISED (expiry included), owned by
another institution or lacking the permission → 403. The consent is read from the shared
database on every call, so a revocation takes effect on the next request.

Pagination follows the spec: ``page`` (from 1) and ``page-size`` (1–1000, default 25); the
body's ``links`` has ``self``/``first``/``prev``/``next``/``last`` (``prev``/``next`` carry a
``pagination-key``) and ``meta`` has ``totalRecords``/``totalPages``; a page past the last one is 422.

Monthly operational limits (:mod:`.limits`): every successful call counts against the
consent's limit for that endpoint and account in the month (the catalog tier's
``monthly_limit``), except a call for a later page with ``pagination-key``; past it, 423.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.openfinance import format_datetime

from ..app_common import ClientOrg, Session, consent_id_from, envelope, of_body, owned, service_app
from ..consents.lifecycle import effective_status
from ..consents.permissions import Permission
from ..contracts import AUTHORISED
from ..errors import ERROR_RESPONSES, OFError
from ..models import Consent, utcnow
from ..settings import Settings
from . import data, limits

__all__ = ["create_app", "BASE", "paginate", "requires"]

FAMILY = load_catalog().family("accounts")
BASE = FAMILY.base
MAX_RANGE_DAYS = 366
CURRENT_DAYS = 7
AccountId = Annotated[str, Path(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,99}$")]
Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(alias="page-size", ge=1, le=1000)]


def requires(permission: Permission) -> Callable[..., Awaitable[Consent]]:
    """The dependency giving the request's consent, checked to be AUTHORISED and to grant ``permission``
    (a parameter type is ``Annotated[Consent, Depends(requires(permission))]``)."""

    async def authorised_consent(
            session: Session, org: ClientOrg,
            authorization: Annotated[str | None, Header(max_length=2048)] = None,
            x_consent_id: Annotated[str | None,
                                    Header(alias="x-consent-id", max_length=256)] = None) -> Consent:
        consent_id = consent_id_from(authorization, x_consent_id)
        if consent_id is None:
            raise OFError(401,
                          "no consent: send 'Authorization: Bearer consent:<consentId>' or 'x-consent-id'")
        consent = await owned(session, Consent, consent_id, org, "consent", status=403)
        status, _ = effective_status(consent, utcnow())
        if status != AUTHORISED:
            raise OFError(403, f"the consent is {status}")
        if permission.value not in consent.permissions:
            raise OFError(403, f"the consent does not grant {permission.value}")
        return consent

    return authorised_consent


CanReadAccounts = Annotated[Consent, Depends(requires(Permission.ACCOUNTS_READ))]
CanReadBalances = Annotated[Consent, Depends(requires(Permission.ACCOUNTS_BALANCES_READ))]
CanReadOverdraft = Annotated[Consent, Depends(requires(Permission.ACCOUNTS_OVERDRAFT_LIMITS_READ))]
CanReadTransactions = Annotated[Consent, Depends(requires(Permission.ACCOUNTS_TRANSACTIONS_READ))]


# --- pagination -----------------------------------------------------------------------------------

def paginate(request: Request, items: list, page: int, page_size: int) -> dict:
    """The spec's paginated body for ``items``; 422 when ``page`` is past the last page."""
    total = len(items)
    pages = max(1, math.ceil(total / page_size))
    if page > pages:
        raise OFError(422, f"page {page} is past the last page ({pages})", code="PAGINA_INVALIDA")

    def link(n: int, paging: bool = False) -> str:
        params: dict[str, int | str] = {"page": n, "page-size": page_size}
        if paging:  # a call that pages on does not count against the monthly limit (limits.py)
            params["pagination-key"] = _pagination_key(request)
        return str(request.url.remove_query_params("pagination-key").include_query_params(**params))

    links = {"self": str(request.url), "first": link(1), "last": link(pages)}
    if page > 1:
        links["prev"] = link(page - 1, paging=page - 1 > 1)
    if page < pages:
        links["next"] = link(page + 1, paging=True)
    start = (page - 1) * page_size
    return envelope(items[start:start + page_size], request, links=links,
                    meta={"totalRecords": total, "totalPages": pages, "requestDateTime": format_datetime()})


def _pagination_key(request: Request) -> str:
    """An opaque key naming the listing being paged (path and filters), the same on every page."""
    filters = sorted((k, v) for k, v in request.query_params.multi_items()
                     if k not in ("page", "pagination-key"))
    return hashlib.sha256(repr((request.url.path, filters)).encode()).hexdigest()[:32]


async def _count(request: Request, session: Session, consent: Consent, template: str,
                 resource_id: str | None = None, page: int = 1) -> None:
    """Count this successful call against the consent's monthly operational limit (423 past it)."""
    paging = page > 1 and request.query_params.get("pagination-key") == _pagination_key(request)
    await limits.consume(session, load_catalog(), method="GET", route=BASE + template,
                         consent_id=consent.consent_id, resource_id=resource_id, paging=paging)


# --- response bodies (documentation and schemathesis' response checks) ---------------------------

class Amount(BaseModel):
    amount: str
    currency: str


class AccountSummary(BaseModel):
    brandName: str
    companyCnpj: str
    type: str
    compeCode: str
    branchCode: str
    number: str
    checkDigit: str
    accountId: str


class AccountIdentification(BaseModel):
    compeCode: str
    branchCode: str
    number: str
    checkDigit: str
    type: str
    subtype: str
    currency: str


class Balances(BaseModel):
    availableAmount: Amount
    blockedAmount: Amount
    automaticallyInvestedAmount: Amount
    updateDateTime: str


class OverdraftLimits(BaseModel):
    overdraftContractedLimit: Amount
    overdraftUsedLimit: Amount
    unarrangedOverdraftAmount: Amount


class Transaction(BaseModel):
    transactionId: str
    completedAuthorisedPaymentType: str
    creditDebitType: Literal["CREDITO", "DEBITO"]
    transactionName: str
    type: str
    transactionAmount: Amount
    transactionDateTime: str
    partieCnpjCpf: str
    partiePersonType: str
    partieCompeCode: str
    partieBranchCode: str
    partieNumber: str
    partieCheckDigit: str


AccountsList = of_body(list[AccountSummary], "AccountsList")
AccountResponse = of_body(AccountIdentification, "AccountResponse")
BalancesResponse = of_body(Balances, "BalancesResponse")
OverdraftResponse = of_body(OverdraftLimits, "OverdraftLimitsResponse")
TransactionsResponse = of_body(list[Transaction], "TransactionsResponse")


# --- endpoints ----------------------------------------------------------------------------------

router = APIRouter(prefix=BASE, tags=["accounts"], responses={
    **ERROR_RESPONSES, 423: {"model": ERROR_RESPONSES[400]["model"],
                             "description": "Monthly operational limit used up"}})


def _get(path: str, model: type[BaseModel]):
    # exclude_none: the spec leaves an absent optional field out rather than sending null
    return router.get(path, response_model=model, response_model_exclude_none=True)


def _account(consent: Consent, account_id: str) -> data.Account:
    account = data.find_account(consent.document, account_id)
    if account is None:
        raise OFError(404, f"account {account_id} is not among the consent's accounts")
    return account


def _date_range(first: date | None, last: date | None, max_days: int) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    last = last or today
    first = first or last - timedelta(days=CURRENT_DAYS - 1)
    if first > last:
        raise OFError(422, "fromBookingDate is after toBookingDate", code="PARAMETRO_INVALIDO")
    if (last - first).days >= max_days:
        raise OFError(422, f"the date range must span at most {max_days} days", code="PARAMETRO_INVALIDO")
    return first, last


PaginationKey = Annotated[str | None, Query(alias="pagination-key", max_length=100)]


@_get("/accounts", AccountsList)
async def list_accounts(request: Request, session: Session, consent: CanReadAccounts, page: Page = 1,
                        page_size: PageSize = 25,
                        accountType: Annotated[Literal[data.ACCOUNT_TYPES] | None, Query()] = None,  # type: ignore[valid-type]
                        pagination_key: PaginationKey = None) -> dict:
    items = [a.summary() for a in data.customer_accounts(consent.document)
             if not accountType or a.type == accountType]
    body = paginate(request, items, page, page_size)
    await _count(request, session, consent, "/accounts", page=page)
    return body


@_get("/accounts/{accountId}", AccountResponse)
async def get_account(accountId: AccountId, request: Request, session: Session,
                      consent: CanReadAccounts) -> dict:
    body = envelope(_account(consent, accountId).identification(), request)
    await _count(request, session, consent, "/accounts/{accountId}", accountId)
    return body


@_get("/accounts/{accountId}/balances", BalancesResponse)
async def get_balances(accountId: AccountId, request: Request, session: Session,
                       consent: CanReadBalances) -> dict:
    body = envelope(data.balances(_account(consent, accountId)), request)
    await _count(request, session, consent, "/accounts/{accountId}/balances", accountId)
    return body


@_get("/accounts/{accountId}/overdraft-limits", OverdraftResponse)
async def get_overdraft_limits(accountId: AccountId, request: Request, session: Session,
                               consent: CanReadOverdraft) -> dict:
    body = envelope(data.overdraft_limits(_account(consent, accountId)), request)
    await _count(request, session, consent, "/accounts/{accountId}/overdraft-limits", accountId)
    return body


CreditDebit = Annotated[Literal["CREDITO", "DEBITO"] | None, Query(alias="creditDebitIndicator")]


@_get("/accounts/{accountId}/transactions", TransactionsResponse)
async def get_transactions(accountId: AccountId, request: Request, session: Session,
                           consent: CanReadTransactions,
                           page: Page = 1, page_size: PageSize = 25, fromBookingDate: date | None = None,
                           toBookingDate: date | None = None, credit_debit: CreditDebit = None,
                           pagination_key: PaginationKey = None) -> dict:
    first, last = _date_range(fromBookingDate, toBookingDate, MAX_RANGE_DAYS)
    items = data.transactions(_account(consent, accountId), first, last, credit_debit)
    body = paginate(request, items, page, page_size)
    await _count(request, session, consent, "/accounts/{accountId}/transactions", accountId, page)
    return body


@_get("/accounts/{accountId}/transactions-current", TransactionsResponse)
async def get_transactions_current(accountId: AccountId, request: Request, session: Session,
                                   consent: CanReadTransactions, page: Page = 1, page_size: PageSize = 25,
                                   fromBookingDate: date | None = None, toBookingDate: date | None = None,
                                   credit_debit: CreditDebit = None,
                                   pagination_key: PaginationKey = None) -> dict:
    first, last = _date_range(fromBookingDate, toBookingDate, CURRENT_DAYS)
    if first < datetime.now(UTC).date() - timedelta(days=CURRENT_DAYS - 1):
        raise OFError(422, f"transactions-current covers the last {CURRENT_DAYS} days only",
                      code="PARAMETRO_INVALIDO")
    items = data.transactions(_account(consent, accountId), first, last, credit_debit)
    body = paginate(request, items, page, page_size)
    await _count(request, session, consent, "/accounts/{accountId}/transactions-current", accountId, page)
    return body


def create_app(settings: Settings | None = None, *, registry: CollectorRegistry | None = None,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The accounts app; ``registry`` and ``tracer_provider`` default to the global ones
    (:func:`service_app`)."""
    return service_app("accounts", settings, title="ofsre accounts", version=FAMILY.version, routers=[router],
                       registry=registry, tracer_provider=tracer_provider,
                       description="Open Finance Brasil accounts v2 (reference platform, seeded data)")
