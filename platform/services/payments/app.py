"""The payments service: payments v4 (payment consents, Pix payments); settlement is the worker's.

Spec routes (base ``/open-banking/payments/v4``)::

    POST /consents                   x-idempotency-key; status AWAITING_AUTHORISATION     201
    GET  /consents/{consentId}                                                             200
    POST /pix/payments               x-idempotency-key; consent AUTHORISED → CONSUMED,     201
                                     payment RCVD, then {paymentId,…} published to "pix-payments"
    GET  /pix/payments/{paymentId}   RCVD → ACCP → ACSC / RJCT as the worker settles it    200

Simulation (not in the spec; only with ``OFSRE_SIMULATION_ROUTES=on``, never routed by the
gateway, and only for the consent's own organisation)::

    POST /_sim/payments/consents/{consentId}/authorise    AWAITING_AUTHORISATION → AUTHORISED
    POST /_sim/payments/consents/{consentId}/reject       AWAITING_AUTHORISATION → REJECTED

Simplifications, on purpose:

* Bodies are JSON. The spec signs request and response bodies as JWTs (``application/jwt``,
  PS256); the platform has no key material to verify them with, so it accepts and answers
  plain JSON with the same fields.
* One payment per consent (no schedules); ``endToEndId`` is generated when a request omits it.
* The consent comes from ``Authorization: Bearer consent:<id>`` or ``x-consent-id`` (as in
  accounts), else from the body's ``consentId``.

A payment is committed before it is published, so the worker can always find it. If the
publish fails, the payment is rejected (``FALHA_INFRAESTRUTURA``) instead of waiting forever.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Header, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import update

from ..app_common import ClientOrg, Session, check_owner, consent_id_from, envelope, of_body, service_app
from ..consents.app import BusinessEntity, LoggedUser, iso
from ..consents.lifecycle import AUTHORISED, AWAITING, CONSUMED, REJECTED
from ofsre.instrumentation.catalog import load_catalog

from ..errors import ERROR_RESPONSES, OFError
from ..models import PaymentConsent, PixPayment, as_utc, utcnow
from ..settings import Settings
from .idempotency import Outcome, Stored, run_once

__all__ = ["create_app", "BASE", "FAMILY", "SIM_BASE", "TOPIC", "payment_data"]

_log = logging.getLogger("ofsre.platform.payments")

FAMILY = load_catalog().family("payments")
BASE = FAMILY.base
SIM_BASE = "/_sim/payments"
TOPIC = "pix-payments"
CONSENT_AUTHORISATION_WINDOW = timedelta(minutes=5)  # the spec's payment consent expiry
ConsentId = Annotated[str, Path(min_length=1, max_length=256)]
PaymentId = Annotated[str, Path(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,99}$")]
IdempotencyKey = Annotated[str, Header(alias="x-idempotency-key", min_length=1, max_length=100,
                                       pattern=r"^\S(.*\S)?$")]
Amount = Annotated[str, Field(pattern=r"^((\d{1,16}\.\d{2}))$", max_length=19)]


# --- request bodies ---------------------------------------------------------------------------------

class Creditor(BaseModel):
    personType: Literal["PESSOA_NATURAL", "PESSOA_JURIDICA"]
    cpfCnpj: str = Field(pattern=r"^\d{11}$|^\d{14}$")
    name: str = Field(min_length=1, max_length=140)


class BankAccount(BaseModel):
    ispb: str = Field(pattern=r"^[0-9]{8}$")
    issuer: str | None = Field(default=None, pattern=r"^\d{1,4}$")
    number: str = Field(pattern=r"^\d{1,20}$")
    accountType: Literal["CACC", "SVGS", "TRAN", "SLRY"]


class ConsentPayment(BaseModel):
    type: Literal["PIX"]
    date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    currency: Literal["BRL"]
    amount: Amount


class CreatePaymentConsentData(BaseModel):
    loggedUser: LoggedUser
    businessEntity: BusinessEntity | None = None
    creditor: Creditor
    payment: ConsentPayment
    debtorAccount: BankAccount | None = None


class CreatePaymentConsent(BaseModel):
    data: CreatePaymentConsentData


class PaymentAmount(BaseModel):
    amount: Amount
    currency: Literal["BRL"]


class PixPaymentRequest(BaseModel):
    endToEndId: str | None = Field(default=None, pattern=r"^E[0-9]{8}[0-9]{12}[a-zA-Z0-9]{11}$")
    localInstrument: Literal["MANU", "DICT", "QRDN", "QRES", "INIC"]
    payment: PaymentAmount
    creditorAccount: BankAccount
    cnpjInitiator: str = Field(pattern=r"^\d{14}$")
    consentId: str | None = Field(default=None, max_length=256)
    remittanceInformation: str | None = Field(default=None, max_length=140)
    qrCode: str | None = Field(default=None, max_length=512)
    proxy: str | None = Field(default=None, max_length=77)
    transactionIdentification: str | None = Field(default=None, max_length=35)
    ibgeTownCode: str | None = Field(default=None, pattern=r"^\d{7}$")


class CreatePixPayment(BaseModel):
    data: list[PixPaymentRequest] = Field(min_length=1, max_length=1)


# --- response bodies ----------------------------------------------------------------------------

class RejectionReason(BaseModel):
    code: str
    detail: str


class PaymentConsentData(BaseModel):
    consentId: str
    creationDateTime: str
    expirationDateTime: str
    statusUpdateDateTime: str
    status: Literal["AWAITING_AUTHORISATION", "AUTHORISED", "REJECTED", "CONSUMED"]
    loggedUser: LoggedUser
    creditor: Creditor
    payment: ConsentPayment
    debtorAccount: BankAccount | None = None
    rejectionReason: RejectionReason | None = None


class PaymentData(BaseModel):
    paymentId: str
    endToEndId: str
    consentId: str
    creationDateTime: str
    statusUpdateDateTime: str
    status: Literal["RCVD", "ACCP", "ACSC", "RJCT"]
    localInstrument: str
    cnpjInitiator: str
    payment: PaymentAmount
    creditorAccount: BankAccount
    rejectionReason: RejectionReason | None = None


PaymentConsentResponse = of_body(PaymentConsentData, "PaymentConsentResponse")
PaymentResponse = of_body(PaymentData, "PaymentResponse")
PaymentsResponse = of_body(list[PaymentData], "PaymentsResponse")


# --- helpers ------------------------------------------------------------------------------------

def _consent_status(consent: PaymentConsent, now: datetime) -> tuple[str, dict | None]:
    if consent.status == AWAITING and as_utc(consent.expiration_at) <= now:
        return REJECTED, {"code": "TEMPO_EXPIRADO_AUTORIZACAO", "detail": "not authorised in time"}
    return consent.status, consent.rejection_reason


def consent_data(consent: PaymentConsent, now: datetime) -> dict:
    status, reason = _consent_status(consent, now)
    out = {"consentId": consent.consent_id, "creationDateTime": iso(consent.created_at),
           "expirationDateTime": iso(consent.expiration_at), "statusUpdateDateTime": iso(consent.status_updated_at),
           "status": status, "loggedUser": consent.logged_user, "creditor": consent.creditor,
           "payment": consent.payment, "debtorAccount": consent.debtor_account, "rejectionReason": reason}
    return {k: v for k, v in out.items() if v is not None}


def payment_data(payment: PixPayment) -> dict:
    out = {"paymentId": payment.payment_id, "endToEndId": payment.end_to_end_id, "consentId": payment.consent_id,
           "creationDateTime": iso(payment.created_at), "statusUpdateDateTime": iso(payment.status_updated_at),
           "status": payment.status, "localInstrument": payment.local_instrument,
           "cnpjInitiator": payment.cnpj_initiator,
           "payment": {"amount": payment.amount, "currency": payment.currency},
           "creditorAccount": payment.creditor_account, **payment.details,
           "rejectionReason": payment.rejection_reason}
    return {k: v for k, v in out.items() if v is not None}


def _end_to_end_id(now: datetime) -> str:
    """``E`` + ISPB (8) + yyyyMMddHHmm (12) + 11 random characters, as the Pix arrangement defines it."""
    return f"E99999999{now:%Y%m%d%H%M}{uuid.uuid4().hex[:11]}"


def _json(stored: Stored) -> Response:
    return Response(stored.content, status_code=stored.status, media_type="application/json")


# --- endpoints ----------------------------------------------------------------------------------

router = APIRouter(responses=ERROR_RESPONSES)


@router.post(BASE + "/consents", status_code=201, response_model=PaymentConsentResponse, response_model_exclude_none=True, tags=["payments"])
async def create_payment_consent(body: CreatePaymentConsent, request: Request, session: Session, org: ClientOrg,
                                 idempotency_key: IdempotencyKey) -> Response:
    async def create(session: Session) -> Outcome:
        data, now = body.data, utcnow()
        consent = PaymentConsent(
            consent_id=f"urn:ofsrepay:{uuid.uuid4()}", status=AWAITING, client_org_id=org,
            logged_user=data.loggedUser.model_dump(exclude_none=True),
            creditor=data.creditor.model_dump(), payment=data.payment.model_dump(exclude_none=True),
            debtor_account=data.debtorAccount.model_dump(exclude_none=True) if data.debtorAccount else None,
            created_at=now, status_updated_at=now, expiration_at=now + CONSENT_AUTHORISATION_WINDOW)
        session.add(consent)
        self_link = f"{str(request.url).rstrip('/')}/{consent.consent_id}"
        return Outcome(201, envelope(consent_data(consent, now), request, links={"self": self_link}))

    return _json(await run_once(session, scope=f"{org or '-'}|payment-consents", key=idempotency_key,
                                request_body=await request.body(), operation=create))


@router.get(BASE + "/consents/{consentId}", response_model=PaymentConsentResponse, response_model_exclude_none=True, tags=["payments"])
async def get_payment_consent(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    consent = await session.get(PaymentConsent, consentId)
    if consent is None:
        raise OFError(404, f"payment consent {consentId} not found")
    check_owner(consent.client_org_id, org, "payment consent")
    return envelope(consent_data(consent, utcnow()), request)


@router.post(BASE + "/pix/payments", status_code=201, response_model=PaymentsResponse, response_model_exclude_none=True, tags=["payments"])
async def create_pix_payment(body: CreatePixPayment, request: Request, session: Session, org: ClientOrg,
                             idempotency_key: IdempotencyKey,
                             authorization: Annotated[str | None, Header(max_length=2048)] = None,
                             x_consent_id: Annotated[str | None, Header(alias="x-consent-id", max_length=256)] = None,
                             ) -> Response:
    item = body.data[0]
    consent_id = consent_id_from(authorization, x_consent_id) or item.consentId
    if not consent_id:
        raise OFError(401, "no consent: send 'Authorization: Bearer consent:<consentId>' or data[0].consentId")
    if item.consentId and item.consentId != consent_id:
        raise OFError(422, "data[0].consentId differs from the token's consent", code="PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
    queue = request.app.state.queue

    async def create(session: Session) -> Outcome:
        payment = await _consume_consent_into_payment(session, consent_id, item, org)
        links = {"self": f"{str(request.url).rstrip('/')}/{payment.payment_id}"}
        message = {"paymentId": payment.payment_id, "consentId": consent_id, "endToEndId": payment.end_to_end_id,
                   "amount": payment.amount, "currency": payment.currency}
        return Outcome(201, envelope([payment_data(payment)], request, links=links),
                       after_commit=lambda: _publish(request.app, queue, message))

    return _json(await run_once(session, scope=f"{org or '-'}|pix-payments", key=idempotency_key,
                                request_body=await request.body(), operation=create))


async def _consume_consent_into_payment(session: Session, consent_id: str, item: PixPaymentRequest,
                                        org: str | None) -> PixPayment:
    consent = await session.get(PaymentConsent, consent_id)
    if consent is None:
        raise OFError(422, f"payment consent {consent_id} not found", code="CONSENTIMENTO_INVALIDO")
    check_owner(consent.client_org_id, org, "payment consent")
    now = utcnow()
    status, _ = _consent_status(consent, now)
    if status != AUTHORISED:
        raise OFError(422, f"the payment consent is {status}, not AUTHORISED", code="CONSENTIMENTO_INVALIDO")
    if (item.payment.amount, item.payment.currency) != (consent.payment["amount"], consent.payment["currency"]):
        raise OFError(422, "amount or currency differ from the consent's", code="PAGAMENTO_DIVERGENTE_CONSENTIMENTO")
    consumed = await session.execute(
        update(PaymentConsent).where(PaymentConsent.consent_id == consent_id, PaymentConsent.status == AUTHORISED)
        .values(status=CONSUMED, status_updated_at=now))
    if consumed.rowcount != 1:
        raise OFError(422, "the payment consent was consumed meanwhile", code="CONSENTIMENTO_INVALIDO")
    details = item.model_dump(include={"remittanceInformation", "qrCode", "proxy", "transactionIdentification",
                                       "ibgeTownCode"}, exclude_none=True)
    payment = PixPayment(
        payment_id=str(uuid.uuid4()), consent_id=consent_id, end_to_end_id=item.endToEndId or _end_to_end_id(now),
        status="RCVD", local_instrument=item.localInstrument, amount=item.payment.amount,
        currency=item.payment.currency, creditor_account=item.creditorAccount.model_dump(exclude_none=True),
        details=details, cnpj_initiator=item.cnpjInitiator, created_at=now, status_updated_at=now)
    session.add(payment)
    return payment


async def _publish(app: FastAPI, queue, message: dict) -> None:
    """Hand the payment to the worker; if the queue refuses, reject the payment rather than strand it."""
    try:
        await queue.publish(TOPIC, message, key=message["paymentId"])
    except Exception as exc:  # noqa: BLE001 - any queue failure ends the same way
        _log.error("publishing payment %s failed: %s", message["paymentId"], exc)
        async with app.state.sessions() as session:
            await session.execute(
                update(PixPayment).where(PixPayment.payment_id == message["paymentId"], PixPayment.status == "RCVD")
                .values(status="RJCT", status_updated_at=utcnow(),
                        rejection_reason={"code": "FALHA_INFRAESTRUTURA", "detail": "settlement queue unavailable"}))
            await session.commit()


@router.get(BASE + "/pix/payments/{paymentId}", response_model=PaymentResponse, response_model_exclude_none=True, tags=["payments"])
async def get_pix_payment(paymentId: PaymentId, request: Request, session: Session, org: ClientOrg) -> dict:
    payment = await session.get(PixPayment, paymentId)
    if payment is None:
        raise OFError(404, f"payment {paymentId} not found")
    consent = await session.get(PaymentConsent, payment.consent_id)
    check_owner(consent.client_org_id if consent else None, org, "payment")
    return envelope(payment_data(payment), request)


sim_router = APIRouter(responses=ERROR_RESPONSES)  # only with OFSRE_SIMULATION_ROUTES=on


@sim_router.post(SIM_BASE + "/consents/{consentId}/authorise", response_model=PaymentConsentResponse, response_model_exclude_none=True, tags=["simulation"])
async def sim_authorise(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the payer approving the payment consent (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, AUTHORISED, org)


@sim_router.post(SIM_BASE + "/consents/{consentId}/reject", response_model=PaymentConsentResponse, response_model_exclude_none=True, tags=["simulation"])
async def sim_reject(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the payer refusing the payment consent (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, REJECTED, org)


async def _sim_decide(session: Session, request: Request, consent_id: str, target: str, org: str | None) -> dict:
    consent = await session.get(PaymentConsent, consent_id)
    if consent is None:
        raise OFError(404, f"payment consent {consent_id} not found")
    check_owner(consent.client_org_id, org, "payment consent")  # the consent's own organisation only
    now = utcnow()
    status, _ = _consent_status(consent, now)
    if status != AWAITING:
        raise OFError(422, f"the payment consent is {status}, not {AWAITING}", code="STATUS_INVALIDO")
    reason = {"code": "REJEITADO_USUARIO", "detail": "the payer refused"} if target == REJECTED else None
    result = await session.execute(
        update(PaymentConsent).where(PaymentConsent.consent_id == consent_id, PaymentConsent.status == AWAITING)
        .values(status=target, status_updated_at=now, rejection_reason=reason))
    if result.rowcount != 1:
        await session.rollback()
        raise OFError(409, "the payment consent changed status meanwhile")
    await session.commit()
    consent = await session.get(PaymentConsent, consent_id, populate_existing=True)
    return envelope(consent_data(consent, datetime.now(UTC)), request)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    routers = [router, sim_router] if settings.simulation_routes else [router]
    return service_app("payments", settings, title="ofsre payments", version=FAMILY.version, routers=routers,
                       queue=True,
                       description="Open Finance Brasil payments v4 (reference platform; JSON bodies, not JWT)")
