"""The payments service: payments v4 (payment consents, Pix payments); settlement is the worker's.

Spec routes (base ``/open-banking/payments/v4``); request and response bodies are signed JWTs
(``application/jwt``, PS256: :mod:`.signing`)::

    POST /consents                   x-idempotency-key; status AWAITING_AUTHORISATION     201
    GET  /consents/{consentId}                                                             200
    POST /pix/payments               x-idempotency-key; consent AUTHORISED → CONSUMED,     201
                                     payment RCVD, then {paymentId,…} published to "pix-payments"
    GET  /pix/payments/{paymentId}   RCVD → ACCP → ACSC / RJCT as the worker settles it    200

Simulation (not in the spec; only with ``OFSRE_SIMULATION_ROUTES=on``, never routed by the
gateway, and only for the consent's own organisation)::

    POST /_sim/payments/consents/{consentId}/authorise    AWAITING_AUTHORISATION → AUTHORISED
    POST /_sim/payments/consents/{consentId}/reject       AWAITING_AUTHORISATION → REJECTED

Answers, as payments 4.0.0 lists them: 201/200 and 422 are signed ``application/jwt``; a bad
signature is 400 ``BAD_SIGNATURE``, wrong claims or a replayed ``jti`` 403 ``INVALID_CLIENT``, a
body that is not a JWS 415, and those (with 401/404) are ``application/json; charset=utf-8``.
A signed body that breaks the document's schema is 422 ``PARAMETRO_NAO_INFORMADO`` (a required
field is missing) or ``PARAMETRO_INVALIDO``.

Simplifications, on purpose:

* One payment per consent, for an immediate date (no ``schedule``: 422 ``DETALHE_PAGAMENTO_INVALIDO``).
* The consent comes from ``Authorization: Bearer consent:<id>`` or ``x-consent-id`` (as in
  accounts), else from the body's ``consentId``.
* The debtor account is the consent's ``debtorAccount``, else the customer's first account
  (the accounts service's seeded data, same CPF).

A payment is committed before it is published, so the worker can always find it. If the
publish fails, the payment is rejected (``FALHA_INFRAESTRUTURA``) instead of waiting forever.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, FastAPI, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field, ValidationError

from ofsre.instrumentation.catalog import load_catalog

from ..accounts import data as accounts_data
from ..app_common import (
    ClientOrg,
    Session,
    check_owner,
    consent_id_from,
    decide_awaiting,
    envelope,
    of_body,
    owned,
    service_app,
)
from ..contracts import (
    AUTHORISED,
    AWAITING,
    CONSUMED,
    IDEMPOTENCY_HEADER,
    PAYMENTS_TOPIC,
    RCVD,
    REJECTED,
    RJCT,
    BusinessEntity,
    LoggedUser,
    PaymentMessage,
    iso,
)
from ..db import transition
from ..errors import ERROR_RESPONSES, OFError, _validation_status, error_response
from ..jws import JwsConfig
from ..models import PaymentConsent, PixPayment, as_utc, utcnow
from ..settings import PUBLIC_URL, Settings
from .idempotency import Outcome, run_once
from .signing import JWT_MEDIA_TYPE, PaymentsJws

__all__ = ["create_app", "BASE", "FAMILY", "SIM_BASE", "payment_data", "BANK_ISPB"]

_log = logging.getLogger("ofsre.platform.payments")

FAMILY = load_catalog().family("payments")
BASE = FAMILY.base
SIM_BASE = "/_sim/payments"
BANK_ISPB = "99999999"  # the platform's own (made-up) ISPB: its endToEndIds and debtor accounts carry it
CONSENT_AUTHORISATION_WINDOW = timedelta(minutes=5)  # the spec's payment consent expiry
ConsentId = Annotated[str, Path(min_length=1, max_length=256)]
PaymentId = Annotated[str, Path(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,99}$")]
IdempotencyKey = Annotated[str, Header(alias=IDEMPOTENCY_HEADER, min_length=1, max_length=100,
                                       pattern=r"^\S(.*\S)?$")]
Amount = Annotated[str, Field(pattern=r"^((\d{1,16}\.\d{2}))$", min_length=4, max_length=19)]
_DATE = r"^(\d{4})-(1[0-2]|0?[1-9])-(3[01]|[12][0-9]|0?[1-9])$"
_NAME = r"^([A-Za-zÀ-ÖØ-öø-ÿ,.@:&*+_<>()!?/\\$%\d' -]+)$"
_END_TO_END = (r"^([E])([0-9]{8})([0-9]{4})(0[1-9]|1[0-2])(0[1-9]|[1-2][0-9]|3[0-1])(2[0-3]|[01][0-9])"
               r"([0-5][0-9])([a-zA-Z0-9]{11})$")
_CONSENT_URN = r"^urn:[a-zA-Z0-9][a-zA-Z0-9\-]{0,31}:[a-zA-Z0-9()+,\-.:=@;$_!*'%\/?#]+$"
LocalInstrument = Literal["MANU", "DICT", "QRDN", "QRES", "INIC"]


# --- request bodies (payments 4.0.0 CreatePaymentConsent, CreatePixPayment) ---------------------------

class Creditor(BaseModel):
    personType: Literal["PESSOA_NATURAL", "PESSOA_JURIDICA"]
    cpfCnpj: str = Field(pattern=r"^\d{11}$|^\d{14}$", min_length=11, max_length=14)
    name: str = Field(pattern=_NAME, max_length=120)


class BankAccount(BaseModel):
    ispb: str = Field(pattern=r"^[0-9]{8}$")
    issuer: str | None = Field(default=None, pattern=r"^[0-9]{1,4}$")
    number: str = Field(pattern=r"^[0-9]{1,20}$")
    accountType: Literal["CACC", "SVGS", "TRAN"]


class PaymentDetails(BaseModel):
    localInstrument: LocalInstrument
    qrCode: str | None = Field(default=None, max_length=512)
    proxy: str | None = Field(default=None, max_length=77)
    creditorAccount: BankAccount


class ConsentPayment(BaseModel):
    type: Literal["PIX"]
    schedule: dict | None = None
    date: str | None = Field(default=None, pattern=_DATE, max_length=10)
    currency: str = Field(pattern=r"^([A-Z]{3})$")
    amount: Amount
    ibgeTownCode: str | None = Field(default=None, pattern=r"^\d{7}$")
    details: PaymentDetails


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
    currency: str = Field(pattern=r"^([A-Z]{3})$")


class PixPaymentRequest(BaseModel):
    endToEndId: str = Field(pattern=_END_TO_END)
    localInstrument: LocalInstrument
    payment: PaymentAmount
    creditorAccount: BankAccount
    cnpjInitiator: str = Field(pattern=r"^\d{14}$")
    consentId: str | None = Field(default=None, max_length=256, pattern=_CONSENT_URN)
    remittanceInformation: str | None = Field(default=None, max_length=140)
    qrCode: str | None = Field(default=None, max_length=512)
    proxy: str | None = Field(default=None, max_length=77)
    transactionIdentification: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9]{1,35}$")
    ibgeTownCode: str | None = Field(default=None, pattern=r"^\d{7}$")
    authorisationFlow: Literal["HYBRID_FLOW", "CIBA_FLOW", "FIDO_FLOW"] | None = None


class CreatePixPayment(BaseModel):
    data: list[PixPaymentRequest] = Field(min_length=1)


# --- response bodies (the simulation routes answer JSON with them) -------------------------------------

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


PaymentConsentResponse = of_body(PaymentConsentData, "PaymentConsentResponse")


_Model = TypeVar("_Model", bound=BaseModel)


def _parse(model: type[_Model], body: dict) -> _Model:
    """The signed body as ``model``; a body that breaks the schema is the document's 422 (signed)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        missing = any(e.get("type") == "missing" for e in errors)
        where = "; ".join(".".join(str(x) for x in e.get("loc", ())) + f": {e.get('msg', 'invalid')}"
                          for e in errors[:10])  # never the input value: it may be personal data
        raise OFError(422, where or "invalid body",
                      code="PARAMETRO_NAO_INFORMADO" if missing else "PARAMETRO_INVALIDO",
                      title="Parâmetro não informado" if missing else "Parâmetro inválido") from None


# --- response helpers -----------------------------------------------------------------------------

def _consent_status(consent: PaymentConsent, now: datetime) -> tuple[str, dict | None]:
    if consent.status == AWAITING and as_utc(consent.expiration_at) <= now:
        return REJECTED, {"code": "TEMPO_EXPIRADO_AUTORIZACAO", "detail": "not authorised in time"}
    return consent.status, consent.rejection_reason


def consent_data(consent: PaymentConsent, now: datetime) -> dict:
    status, reason = _consent_status(consent, now)
    out = {"consentId": consent.consent_id, "creationDateTime": iso(consent.created_at),
           "expirationDateTime": iso(consent.expiration_at),
           "statusUpdateDateTime": iso(consent.status_updated_at),
           "status": status, "loggedUser": consent.logged_user, "creditor": consent.creditor,
           "payment": consent.payment, "debtorAccount": consent.debtor_account, "rejectionReason": reason}
    return {k: v for k, v in out.items() if v is not None}


def payment_data(payment: PixPayment) -> dict:
    out = {"paymentId": payment.payment_id, "endToEndId": payment.end_to_end_id,
           "consentId": payment.consent_id,
           "creationDateTime": iso(payment.created_at),
           "statusUpdateDateTime": iso(payment.status_updated_at),
           "status": payment.status, "localInstrument": payment.local_instrument,
           "cnpjInitiator": payment.cnpj_initiator,
           "payment": {"amount": payment.amount, "currency": payment.currency},
           "creditorAccount": payment.creditor_account, **payment.details,
           "rejectionReason": payment.rejection_reason}
    return {k: v for k, v in out.items() if v is not None}


def _debtor_account(consent: PaymentConsent) -> dict:
    """The account paying: the consent's, else the customer's first (seeded) account at this bank."""
    if consent.debtor_account:
        return consent.debtor_account
    account = accounts_data.customer_accounts(consent.logged_user["document"]["identification"])[0]
    return {"ispb": BANK_ISPB, "issuer": account.branch_code, "number": account.number, "accountType": "CACC"}


def _link(request: Request, *suffix: str) -> str:
    """``links.self``: under the public URL (``OFSRE_PUBLIC_URL``, the API's address in the Directory)
    when set, else the one the client called; payments 4.0.0's pattern wants an https host name."""
    jws: PaymentsJws = request.app.state.jws
    return (jws.public_url or jws.origin(request)) + "/".join((request.url.path.rstrip("/"), *suffix))


def _signed(request: Request, body: dict | str, status: int, audience: str | None) -> Response:
    return request.app.state.jws.response(body, status, audience)


# The module's own OpenAPI document says what the official one says about bodies.
_JWT = {"content": {JWT_MEDIA_TYPE: {"schema": {"type": "string", "description": "PS256 JWS"}}}}
_JWT_BODY = {"requestBody": {"required": True, **_JWT}}
_REFUSALS: dict[int | str, dict[str, Any]] = {415: {"model": ERROR_RESPONSES[400]["model"],
                                                    "description": "Not a JWS"},
             422: {**_JWT, "description": "Refused (signed)"}}


# --- endpoints ----------------------------------------------------------------------------------

router = APIRouter(responses=ERROR_RESPONSES)


@router.post(BASE + "/consents", status_code=201, tags=["payments"], response_class=Response,
             responses={201: {**_JWT, "description": "Created (signed)"}, **_REFUSALS},
             openapi_extra=_JWT_BODY)
async def create_payment_consent(request: Request, session: Session, org: ClientOrg,
                                 idempotency_key: IdempotencyKey) -> Response:
    signed, client = await request.app.state.jws.read(request, session, org)
    body: CreatePaymentConsent = _parse(CreatePaymentConsent, signed)
    if body.data.payment.schedule is not None:
        raise OFError(422, "scheduled payments are not offered: one immediate payment per consent",
                      code="DETALHE_PAGAMENTO_INVALIDO", title="Detalhe do pagamento inválido")

    async def create(session: Session) -> Outcome:
        data, now = body.data, utcnow()
        consent = PaymentConsent(
            consent_id=f"urn:ofsrepay:{uuid.uuid4()}", status=AWAITING, client_org_id=org,
            signer_org_id=client, logged_user=data.loggedUser.model_dump(exclude_none=True),
            creditor=data.creditor.model_dump(), payment=data.payment.model_dump(exclude_none=True),
            debtor_account=data.debtorAccount.model_dump(exclude_none=True) if data.debtorAccount else None,
            created_at=now, status_updated_at=now, expiration_at=now + CONSENT_AUTHORISATION_WINDOW)
        session.add(consent)
        return Outcome(201, envelope(consent_data(consent, now), request,
                                     links={"self": _link(request, consent.consent_id)}))

    # The idempotency key covers the signed content, not the JWS: a retry is signed anew (new jti, iat).
    stored = await run_once(session, scope=f"{org or client}|payment-consents", key=idempotency_key,
                            request_body=_canonical(signed), operation=create)
    return _signed(request, stored.content, stored.status, org or client)


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@router.get(BASE + "/consents/{consentId}", tags=["payments"], response_class=Response,
            responses={200: {**_JWT, "description": "The consent (signed)"}})
async def get_payment_consent(consentId: ConsentId, request: Request, session: Session,
                              org: ClientOrg) -> Response:
    consent = await owned(session, PaymentConsent, consentId, org, "payment consent")
    return _signed(request,
                   envelope(consent_data(consent, utcnow()), request, links={"self": _link(request)}),
                   200, org or consent.signer_org_id)


@router.post(BASE + "/pix/payments", status_code=201, tags=["payments"], response_class=Response,
             responses={201: {**_JWT, "description": "Created (signed)"}, **_REFUSALS},
             openapi_extra=_JWT_BODY)
async def create_pix_payment(request: Request, session: Session, org: ClientOrg,
                             idempotency_key: IdempotencyKey,
                             authorization: Annotated[str | None, Header(max_length=2048)] = None,
                             x_consent_id: Annotated[str | None,
                                                     Header(alias="x-consent-id", max_length=256)] = None,
                             ) -> Response:
    signed, client = await request.app.state.jws.read(request, session, org)
    body: CreatePixPayment = _parse(CreatePixPayment, signed)
    if len(body.data) != 1:
        raise OFError(422, "one payment per consent: data must have exactly one item",
                      code="DETALHE_PAGAMENTO_INVALIDO", title="Detalhe do pagamento inválido")
    item = body.data[0]
    consent_id = consent_id_from(authorization, x_consent_id) or item.consentId
    if not consent_id:
        raise OFError(401,
                      "no consent: send 'Authorization: Bearer consent:<consentId>' or data[0].consentId")
    if item.consentId and item.consentId != consent_id:
        raise OFError(422, "data[0].consentId differs from the token's consent",
                      code="PAGAMENTO_DIVERGENTE_CONSENTIMENTO",
                      title="Divergência entre pagamento e consentimento")
    queue = request.app.state.queue

    async def create(session: Session) -> Outcome:
        payment = await _consume_consent_into_payment(session, consent_id, item, org)
        links = {"self": _link(request, payment.payment_id)}
        message = PaymentMessage(paymentId=payment.payment_id, consentId=consent_id,
                                 endToEndId=payment.end_to_end_id, amount=payment.amount,
                                 currency=payment.currency)
        return Outcome(201, envelope([payment_data(payment)], request, links=links),
                       after_commit=lambda: _publish(request.app, queue, message))

    stored = await run_once(session, scope=f"{org or client}|pix-payments", key=idempotency_key,
                            request_body=_canonical(signed), operation=create)
    return _signed(request, stored.content, stored.status, org or client)


def _diverges(item: PixPaymentRequest, consent: PaymentConsent) -> str | None:
    """What of the payment differs from what the customer authorised, if anything."""
    agreed = consent.payment
    details = agreed.get("details", {})
    if (item.payment.amount, item.payment.currency) != (agreed["amount"], agreed["currency"]):
        return "amount or currency"
    if item.localInstrument != details.get("localInstrument"):
        return "localInstrument"
    if item.creditorAccount.model_dump(exclude_none=True) != details.get("creditorAccount"):
        return "creditorAccount"
    return None


async def _consume_consent_into_payment(session: Session, consent_id: str, item: PixPaymentRequest,
                                        org: str | None) -> PixPayment:
    consent = await owned(session, PaymentConsent, consent_id, org, "payment consent", status=422,
                          code="CONSENTIMENTO_INVALIDO", title="Consentimento inválido")
    now = utcnow()
    status, _ = _consent_status(consent, now)
    if status != AUTHORISED:
        raise OFError(422, f"the payment consent is {status}, not AUTHORISED", code="CONSENTIMENTO_INVALIDO",
                      title="Consentimento inválido")
    differs = _diverges(item, consent)
    if differs:
        raise OFError(422, f"{differs} differ from the consent's", code="PAGAMENTO_DIVERGENTE_CONSENTIMENTO",
                      title="Divergência entre pagamento e consentimento")
    # Not committed here: the consent is consumed with the payment (and its idempotency record) or not at all.
    if not await transition(session, PaymentConsent, consent_id, AUTHORISED, CONSUMED, at=now, commit=False):
        raise OFError(422, "the payment consent was consumed meanwhile", code="CONSENTIMENTO_INVALIDO",
                      title="Consentimento inválido")
    details = item.model_dump(include={"remittanceInformation", "qrCode", "proxy",
                                       "transactionIdentification",
                                       "ibgeTownCode", "authorisationFlow"}, exclude_none=True)
    details["debtorAccount"] = _debtor_account(consent)
    payment = PixPayment(
        payment_id=str(uuid.uuid4()), consent_id=consent_id, end_to_end_id=item.endToEndId,
        status=RCVD, local_instrument=item.localInstrument, amount=item.payment.amount,
        currency=item.payment.currency, creditor_account=item.creditorAccount.model_dump(exclude_none=True),
        details=details, cnpj_initiator=item.cnpjInitiator, created_at=now, status_updated_at=now)
    session.add(payment)
    return payment


async def _publish(app: FastAPI, queue, message: PaymentMessage) -> None:
    """Hand the payment to the worker; if the queue refuses, reject the payment rather than strand it."""
    try:
        await queue.publish(PAYMENTS_TOPIC, message, key=message["paymentId"])
    except Exception as exc:  # noqa: BLE001 - any queue failure ends the same way
        _log.error("publishing payment %s failed: %s", message["paymentId"], exc)
        async with app.state.sessions() as session:
            reason = {"code": "FALHA_INFRAESTRUTURA", "detail": "settlement queue unavailable"}
            await transition(session, PixPayment, message["paymentId"], RCVD, RJCT, rejection_reason=reason)


@router.get(BASE + "/pix/payments/{paymentId}", tags=["payments"], response_class=Response,
            responses={200: {**_JWT, "description": "The payment (signed)"}})
async def get_pix_payment(paymentId: PaymentId, request: Request, session: Session,
                          org: ClientOrg) -> Response:
    payment = await session.get(PixPayment, paymentId)
    if payment is None:
        raise OFError(404, f"payment {paymentId} not found")
    consent = await session.get(PaymentConsent, payment.consent_id)
    check_owner(consent.client_org_id if consent else None, org, "payment")
    return _signed(request, envelope(payment_data(payment), request, links={"self": _link(request)}), 200,
                   org or (consent.signer_org_id if consent else None))


sim_router = APIRouter(responses=ERROR_RESPONSES)  # only with OFSRE_SIMULATION_ROUTES=on


@sim_router.post(SIM_BASE + "/consents/{consentId}/authorise", response_model=PaymentConsentResponse,
                 response_model_exclude_none=True, tags=["simulation"])
async def sim_authorise(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the payer approving the payment consent (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, AUTHORISED, org)


@sim_router.post(SIM_BASE + "/consents/{consentId}/reject", response_model=PaymentConsentResponse,
                 response_model_exclude_none=True, tags=["simulation"])
async def sim_reject(consentId: ConsentId, request: Request, session: Session, org: ClientOrg) -> dict:
    """Simulate the payer refusing the payment consent (not an Open Finance endpoint)."""
    return await _sim_decide(session, request, consentId, REJECTED, org)


async def _sim_decide(session: Session, request: Request, consent_id: str, target: str,
                      org: str | None) -> dict:
    # the consent's own organisation only
    consent = await owned(session, PaymentConsent, consent_id, org, "payment consent")
    now = utcnow()
    status, _ = _consent_status(consent, now)
    reason = {"code": "REJEITADO_USUARIO", "detail": "the payer refused"} if target == REJECTED else None
    consent = await decide_awaiting(session, PaymentConsent, consent_id, status, target, "payment consent",
                                    at=now, rejection_reason=reason)
    return envelope(consent_data(consent, utcnow()), request)


def create_app(settings: Settings | None = None, *, registry: CollectorRegistry | None = None,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The payments app; ``registry`` and ``tracer_provider`` default to the global ones
    (:func:`service_app`)."""
    settings = settings or Settings.from_env()
    routers = [router, sim_router] if settings.simulation_routes else [router]
    app = service_app("payments", settings, title="ofsre payments", version=FAMILY.version, routers=routers,
                      queue=True, registry=registry, tracer_provider=tracer_provider,
                      description="Open Finance Brasil payments v4 (reference platform; signed JWS bodies)")
    # The platform's key is created (and its public half published) before the first request.
    app.state.jws = PaymentsJws(JwsConfig.from_env(data_dir=settings.data_dir),
                                public_url=PUBLIC_URL.from_env())

    async def on_of_error(request: Request, exc: OFError) -> Response:
        """Errors of the spec routes are signed (:meth:`PaymentsJws.error`); the simulation's are not."""
        if request.url.path.startswith(BASE + "/"):
            return app.state.jws.error(request, exc)
        return error_response(exc.status, exc.detail, code=exc.code, title=exc.title, headers=exc.headers)

    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        status, detail = _validation_status(exc)  # a bad header or path parameter: 400, as everywhere
        return await on_of_error(request, OFError(status, detail))

    # Starlette types a handler as taking any Exception, though it calls each one only with its own class.
    app.add_exception_handler(OFError, on_of_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_invalid)  # type: ignore[arg-type]
    return app
