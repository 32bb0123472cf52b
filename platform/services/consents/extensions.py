"""Consent renewal (consents v3): ``POST /consents/{consentId}/extends`` and ``GET …/extensions``.

A receiver renews an AUTHORISED consent without a new authorisation journey; the customer
confirmed it in the receiver's own channel, which is why the call must say who they are
(``loggedUser``, matched against the consent's customer) and from where
(``x-fapi-customer-ip-address`` and ``x-customer-user-agent``, required by the document)::

    POST /consents/{consentId}/extends   {"data": {"loggedUser": …, "expirationDateTime": "…Z"}}   201
    GET  /consents/{consentId}/extensions                                  newest first, paginated  200

Rules (consents 3.3.1, 422 codes as the document enumerates them):

* the consent must be AUTHORISED (expiry included), else 422 ``ESTADO_CONSENTIMENTO_INVALIDO``;
* the new ``expirationDateTime`` must be later than the current one and within 12 months from
  now, else 422 ``DATA_EXPIRACAO_INVALIDA``; no ``expirationDateTime`` means "no expiry";
* ``loggedUser`` (and ``businessEntity``, when the consent has one) must be the consent's, else 403.

Every extension is kept (``consent_extensions``) with the previous expiry, the customer's IP and
user agent, and ``/extensions`` lists them.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from ..accounts.app import paginate
from ..app_common import ClientOrg, Session
from ..contracts import AUTHORISED, iso
from ..errors import ERROR_RESPONSES, OFError
from ..models import Consent, ConsentExtension, utcnow
from .app import BASE, MAX_VALIDITY, X_V, ConsentId, ConsentsRoute, _load, consent_data
from .lifecycle import effective_status

__all__ = ["router"]

router = APIRouter(prefix=BASE, tags=["consents"], responses=ERROR_RESPONSES, route_class=ConsentsRoute)
CustomerHeader = Annotated[str, Header(min_length=1, max_length=100, pattern=r"^[^\s](.*[^\s])?$")]
UserAgentHeader = Annotated[str, Header(min_length=1, max_length=255, pattern=r"^[^\s](.*[^\s])?$")]


class _Document(BaseModel):
    identification: str = Field(pattern=r"^\d{11}$")
    rel: str = Field(pattern=r"^[A-Z]{3}$")


class _BusinessDocument(BaseModel):
    identification: str = Field(pattern=r"^[0-9A-Z]{12}[0-9]{2}$")
    rel: str = Field(pattern=r"^[A-Z]{4}$")


class _LoggedUser(BaseModel):
    document: _Document


class _BusinessEntity(BaseModel):
    document: _BusinessDocument


class ExtendData(BaseModel):
    loggedUser: _LoggedUser
    businessEntity: _BusinessEntity | None = None
    expirationDateTime: AwareDatetime | None = None


class ExtendConsent(BaseModel):
    data: ExtendData


@router.post("/consents/{consentId}/extends", status_code=201)
async def extend_consent(consentId: ConsentId, body: ExtendConsent, request: Request, response: Response,
                         session: Session, org: ClientOrg, x_fapi_customer_ip_address: CustomerHeader,
                         x_customer_user_agent: UserAgentHeader) -> dict:
    consent = await _load(session, consentId, org)
    now = utcnow()
    status, _ = effective_status(consent, now)
    if status != AUTHORISED:
        raise OFError(422, f"the consent is {status}, not AUTHORISED", code="ESTADO_CONSENTIMENTO_INVALIDO",
                      title="Estado inválido do consentimento")
    data = body.data
    if data.loggedUser.document.identification != consent.document or (
            consent.business_document and (
                data.businessEntity is None
                or data.businessEntity.document.identification != consent.business_document)):
        raise OFError(403, "loggedUser/businessEntity are not the consent's customer")
    previous = consent.expiration_at
    new = data.expirationDateTime.astimezone(UTC) if data.expirationDateTime else None
    current = previous.replace(tzinfo=UTC) if previous is not None and previous.tzinfo is None else previous
    if new is not None and (new > now + MAX_VALIDITY or new <= now
                            or (current is not None and new <= current)):
        raise OFError(422, "expirationDateTime must be later than the current expiry and within 12 months",
                      code="DATA_EXPIRACAO_INVALIDA", title="Data de expiração inválida")
    if new is None and current is None:
        raise OFError(422, "the consent already has no expiry", code="DATA_EXPIRACAO_INVALIDA",
                      title="Data de expiração inválida")
    changed = await session.execute(
        update(Consent).where(Consent.consent_id == consentId, Consent.status == AUTHORISED,
                              Consent.expiration_at.is_(None) if previous is None
                              else Consent.expiration_at == previous)
        .values(expiration_at=new))
    if cast("CursorResult[Any]", changed).rowcount != 1:  # an UPDATE's result is a cursor's
        await session.rollback()
        raise OFError(422, "the consent changed meanwhile; read it again", code="ERRO_NAO_MAPEADO",
                      title="Erro não mapeado")
    session.add(ConsentExtension(consent_id=consentId, requested_at=now, expiration_at=new,
                                 previous_expiration_at=previous,
                                 document=data.loggedUser.document.identification,
                                 document_rel=data.loggedUser.document.rel,
                                 customer_ip=x_fapi_customer_ip_address,
                                 customer_user_agent=x_customer_user_agent))
    await session.commit()
    extended = await session.get(Consent, consentId, populate_existing=True)
    assert extended is not None  # the update has just matched it
    out = consent_data(extended, utcnow())
    out.pop("rejection", None)
    response.headers.update(X_V)
    return {"data": {k: v for k, v in out.items() if v is not None}, "links": {"self": str(request.url)},
            "meta": {"requestDateTime": iso(now)}}


@router.get("/consents/{consentId}/extensions")
async def list_extensions(consentId: ConsentId, request: Request, response: Response, session: Session,
                          org: ClientOrg, page: Annotated[int, Query(ge=1, le=2_147_483_647)] = 1,
                          page_size: Annotated[int, Query(alias="page-size", ge=25, le=1000)] = 25) -> dict:
    await _load(session, consentId, org)
    rows = (await session.scalars(
        select(ConsentExtension).where(ConsentExtension.consent_id == consentId)
        .order_by(ConsentExtension.requested_at.desc(), ConsentExtension.id.desc()))).all()
    response.headers.update(X_V)
    return paginate(request, [_extension(row) for row in rows], page, page_size)


def _extension(row: ConsentExtension) -> dict:
    out = {"expirationDateTime": iso(row.expiration_at),
           "loggedUser": {"document": {"identification": row.document, "rel": row.document_rel}},
           "requestDateTime": iso(row.requested_at),
           "previousExpirationDateTime": iso(row.previous_expiration_at),
           "xFapiCustomerIpAddress": row.customer_ip, "xCustomerUserAgent": row.customer_user_agent}
    return {k: v for k, v in out.items() if v is not None}
