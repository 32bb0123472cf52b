"""The consents service: consents v3 (create, read, revoke) plus a simulated authorisation.

Spec routes (base ``/open-banking/consents/v3``)::

    POST   /consents                 create, status AWAITING_AUTHORISATION          201
    GET    /consents/{consentId}     read (expiry applied on read)                   200
    DELETE /consents/{consentId}     revoke: AUTHORISED/AWAITING → REJECTED           204

Simulation (not in the spec; the user's authorisation at the bank happens in a browser
journey the platform does not model). Served only with ``OFSRE_SIMULATION_ROUTES=on`` (the
demo, the tests), never routed by the gateway, and only for the consent's own organisation::

    POST /_sim/consents/{consentId}/authorise    AWAITING_AUTHORISATION → AUTHORISED
    POST /_sim/consents/{consentId}/reject       AWAITING_AUTHORISATION → REJECTED

Status changes are conditional ``UPDATE … WHERE status = <expected>`` (:func:`..db.transition`):
two concurrent transitions cannot both win.

The answers are consents 3.3.1's: ``x-v`` (the API version) on every success; 422 only with the
codes the document enumerates per endpoint (a body that breaks the schema is a malformed
request, 400 ``PARAMETRO_INVALIDO``); renewal (``/extends``, ``/extensions``) in :mod:`.extensions`,
and resources v3 in :mod:`.resources`, both served by this service.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypedDict

from fastapi import APIRouter, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import AwareDatetime, BaseModel, Field

from ofsre.instrumentation.catalog import load_catalog

from ..app_common import ClientOrg, Session, decide_awaiting, envelope, of_body, owned, service_app
from ..contracts import AUTHORISED, AWAITING, REJECTED, BusinessEntity, LoggedUser, iso
from ..db import transition
from ..errors import ERROR_RESPONSES, OFError, _validation_status
from ..models import Consent, utcnow
from ..settings import Settings
from .lifecycle import effective_status
from .permissions import Permission, missing_group_permission

__all__ = ["create_app", "BASE", "FAMILY", "SIM_BASE", "consent_data"]

FAMILY = load_catalog().family("consents")
BASE = FAMILY.base
SIM_BASE = "/_sim/consents"
MAX_VALIDITY = timedelta(days=365)  # the spec caps a consent at twelve months
ConsentId = Annotated[str, Path(min_length=1, max_length=256)]


# --- request and response bodies --------------------------------------------------------------

class CreateConsentData(BaseModel):
    loggedUser: LoggedUser
    businessEntity: BusinessEntity | None = None
    permissions: list[Permission] = Field(min_length=1, max_length=len(Permission))
    expirationDateTime: AwareDatetime | None = None


class CreateConsent(BaseModel):
    data: CreateConsentData


class RejectionReason(BaseModel):
    code: str
    additionalInformation: str | None = None


class Rejection(BaseModel):
    rejectedBy: str
    reason: RejectionReason


class ConsentData(BaseModel):
    consentId: str
    creationDateTime: str
    status: Literal["AWAITING_AUTHORISATION", "AUTHORISED", "REJECTED"]
    statusUpdateDateTime: str
    permissions: list[str]
    expirationDateTime: str | None = None
    rejection: Rejection | None = None


ConsentResponse = of_body(ConsentData, "ConsentResponse")


def consent_data(consent: Consent, now: datetime) -> dict:
    status, reason = effective_status(consent, now)
    data: dict[str, Any] = {"consentId": consent.consent_id, "creationDateTime": iso(consent.created_at),
                            "status": status,
            "statusUpdateDateTime": iso(consent.status_updated_at), "permissions": list(consent.permissions),
            "expirationDateTime": iso(consent.expiration_at)}
    if status == REJECTED:
        data["rejection"] = {"rejectedBy": consent.rejected_by or "ASPSP",
                             "reason": {"code": reason or "CONSENT_TECHNICAL_ISSUE"}}
    return data


# --- endpoints ----------------------------------------------------------------------------------

class ConsentsRoute(APIRoute):
    """A route whose malformed request is 400: consents 3.3.1 lists only business codes for its 422s."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise OFError(400, _validation_status(exc)[1], code="PARAMETRO_INVALIDO") from None

        return route


router = APIRouter(responses=ERROR_RESPONSES, route_class=ConsentsRoute)


class _Out(TypedDict):
    """The answer of every route that returns a consent (typed, so the routes' ``**_OUT`` type-checks)."""

    response_model: Any
    response_model_exclude_none: bool


_OUT: _Out = {"response_model": ConsentResponse, "response_model_exclude_none": True}
X_V = {"x-v": FAMILY.version}  # the document requires the API version on every success


async def _load(session: Session, consent_id: str, caller_org: str | None) -> Consent:
    return await owned(session, Consent, consent_id, caller_org, "consent")


@router.post(BASE + "/consents", status_code=201, tags=["consents"], **_OUT)
async def create_consent(body: CreateConsent, request: Request, response: Response, session: Session,
                         org: ClientOrg) -> dict:
    response.headers.update(X_V)
    data = body.data
    # the spec forbids repeats; keep first
    permissions = list(dict.fromkeys(p.value for p in data.permissions))
    missing = missing_group_permission(permissions)
    if missing:
        raise OFError(422, f"the permissions need {missing} to form a group",
                      code="COMBINACAO_PERMISSOES_INCORRETA")
    now = utcnow()
    expires = data.expirationDateTime.astimezone(UTC) if data.expirationDateTime else None
    if expires is not None and not now < expires <= now + MAX_VALIDITY:
        raise OFError(422, "expirationDateTime must be in the future and within 12 months",
                      code="DATA_EXPIRACAO_INVALIDA")
    consent = Consent(
        consent_id=f"urn:ofsre:{uuid.uuid4()}", status=AWAITING, permissions=permissions,
        document=data.loggedUser.document.identification, document_rel=data.loggedUser.document.rel,
        business_document=data.businessEntity.document.identification if data.businessEntity else None,
        client_org_id=org, expiration_at=expires, created_at=now, status_updated_at=now)
    session.add(consent)
    await session.commit()
    return envelope(consent_data(consent, now), request,
                    links={"self": f"{str(request.url).rstrip('/')}/{consent.consent_id}"})


@router.get(BASE + "/consents/{consentId}", tags=["consents"], **_OUT)
async def get_consent(consentId: ConsentId, request: Request, response: Response, session: Session,
                      org: ClientOrg) -> dict:
    response.headers.update(X_V)
    consent = await _load(session, consentId, org)
    return envelope(consent_data(consent, utcnow()), request)


@router.delete(BASE + "/consents/{consentId}", status_code=204, tags=["consents"], response_class=Response)
async def revoke_consent(consentId: ConsentId, session: Session, org: ClientOrg) -> Response:
    for _ in range(3):  # another transition may win meanwhile: decide again on what it left
        consent = await _load(session, consentId, org)
        status, _ = effective_status(consent, utcnow())
        if status == REJECTED:
            raise OFError(422, "the consent is already rejected", code="CONSENTIMENTO_EM_STATUS_REJEITADO")
        reason = "CUSTOMER_MANUALLY_REVOKED" if status == AUTHORISED else "CUSTOMER_MANUALLY_REJECTED"
        if await transition(session, Consent, consentId, consent.status, REJECTED, rejected_by="USER",
                            rejection_reason=reason):
            return Response(status_code=204, headers=X_V)
        session.expire_all()
    raise OFError(500, "the consent kept changing status; try again")


sim_router = APIRouter(responses=ERROR_RESPONSES)  # only with OFSRE_SIMULATION_ROUTES=on


@sim_router.post(SIM_BASE + "/{consentId}/authorise", tags=["simulation"], **_OUT)
async def sim_authorise(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the customer approving the consent at the bank (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, AUTHORISED, org)


@sim_router.post(SIM_BASE + "/{consentId}/reject", tags=["simulation"], **_OUT)
async def sim_reject(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the customer refusing the consent at the bank (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, REJECTED, org)


async def _sim_decide(session: Session, request: Request, consent_id: str, target: str,
                      org: str | None) -> dict:
    consent = await _load(session, consent_id, org)  # the consent's own organisation only
    status, _ = effective_status(consent, utcnow())
    reason = "CUSTOMER_MANUALLY_REJECTED" if target == REJECTED else None
    consent = await decide_awaiting(session, Consent, consent_id, status, target, "consent",
                                    rejected_by="USER" if reason else None, rejection_reason=reason)
    return envelope(consent_data(consent, utcnow()), request)


def create_app(settings: Settings | None = None, *, registry: CollectorRegistry | None = None,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The consents app; ``registry`` and ``tracer_provider`` default to the global ones
    (:func:`service_app`)."""
    from .extensions import router as extensions_router  # both import this module
    from .resources import FAMILY as RESOURCES
    from .resources import router as resources_router

    settings = settings or Settings.from_env()
    routers = [router, sim_router] if settings.simulation_routes else [router]
    return service_app("consents", settings, title="ofsre consents", version=FAMILY.version,
                       routers=[*routers, extensions_router, resources_router], registry=registry,
                       tracer_provider=tracer_provider,
                       description=f"Open Finance Brasil consents v{FAMILY.version} and resources "
                                   f"v{RESOURCES.version} (reference platform)")
