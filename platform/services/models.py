"""The platform's tables (SQLAlchemy 2 declarative), shared by the services.

consents ............. data-sharing consents (consents v3); accounts reads them to authorise a call
payment_consents ..... payment consents (payments v4)
pix_payments ......... Pix payments; the worker moves them RCVD → ACCP → ACSC / RJCT
idempotency_keys ..... first response to each ``x-idempotency-key`` (payments POSTs)
consent_extensions ... each ``POST /consents/{consentId}/extends`` (consents v3 ``/extensions`` lists them)
operational_usage .... successful calls per consent, endpoint and month (the 423 operational limits)
seen_jtis ............ ``jti`` of every signed request, per issuer, for 24 h (a replay is refused)

Times are stored in UTC. SQLite hands back naive datetimes, so read them through
:func:`as_utc`. The schema is created only by ``python -m ofsre.platform.run migrate``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Consent", "PaymentConsent", "PixPayment", "IdempotencyRecord", "ConsentExtension",
           "OperationalUsage", "SeenJti", "as_utc", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (SQLite returns naive ones)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class Consent(Base):
    """A data-sharing consent. Status: AWAITING_AUTHORISATION → AUTHORISED → REJECTED."""

    __tablename__ = "consents"

    consent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    permissions: Mapped[list] = mapped_column(JSON)
    document: Mapped[str] = mapped_column(String(20))  # the logged user's CPF: seeds their accounts
    document_rel: Mapped[str] = mapped_column(String(4))
    business_document: Mapped[str | None] = mapped_column(String(20), nullable=True)
    client_org_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    expiration_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    rejected_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    rejection_reason: Mapped[str | None] = mapped_column(String(60), nullable=True)


class PaymentConsent(Base):
    """A payment consent. Status: AWAITING_AUTHORISATION → AUTHORISED → CONSUMED, or REJECTED."""

    __tablename__ = "payment_consents"

    consent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    client_org_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # the organisation whose key signed the creating request (the JWS iss); the answers' aud
    signer_org_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    logged_user: Mapped[dict] = mapped_column(JSON)
    creditor: Mapped[dict] = mapped_column(JSON)
    payment: Mapped[dict] = mapped_column(JSON)  # type, date, currency, amount
    debtor_account: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expiration_at: Mapped[datetime] = mapped_column()
    rejection_reason: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class PixPayment(Base):
    """A Pix payment. Status: RCVD → ACCP → ACSC (settled) or RJCT (rejected)."""

    __tablename__ = "pix_payments"

    payment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(100), index=True)
    end_to_end_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(8))
    local_instrument: Mapped[str] = mapped_column(String(4))
    amount: Mapped[str] = mapped_column(String(20))  # the spec's decimal string, kept verbatim
    currency: Mapped[str] = mapped_column(String(3))
    creditor_account: Mapped[dict] = mapped_column(JSON)
    # optional fields echoed back (proxy, remittanceInformation, …)
    details: Mapped[dict] = mapped_column(JSON)
    cnpj_initiator: Mapped[str] = mapped_column(String(14))
    rejection_reason: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The first answer to an ``x-idempotency-key`` within a scope (client and operation)."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)  # the JSON body exactly as first sent
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentExtension(Base):
    """One extension of a data-sharing consent's expiry (consents v3 ``/extends``), newest listed first."""

    __tablename__ = "consent_extensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(String(100), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expiration_at: Mapped[datetime | None] = mapped_column(nullable=True)           # None: no expiry
    previous_expiration_at: Mapped[datetime | None] = mapped_column(nullable=True)
    document: Mapped[str] = mapped_column(String(20))
    document_rel: Mapped[str] = mapped_column(String(4))
    customer_ip: Mapped[str | None] = mapped_column(String(100), nullable=True)
    customer_user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)


class OperationalUsage(Base):
    """Successful calls of one consent to one endpoint in one calendar month (UTC), for the 423 limits."""

    __tablename__ = "operational_usage"

    consent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(200), primary_key=True)   # "GET <route template>"
    resource_id: Mapped[str] = mapped_column(String(100), primary_key=True)  # "-" for a list endpoint
    month: Mapped[str] = mapped_column(String(7), primary_key=True)           # "2026-12"
    calls: Mapped[int] = mapped_column(Integer, default=0)


class SeenJti(Base):
    """A signed request's ``jti``: unique per issuer for 24 h (FAPI-BR), across every replica."""

    __tablename__ = "seen_jtis"

    issuer: Mapped[str] = mapped_column(String(200), primary_key=True)
    jti: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
