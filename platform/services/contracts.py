"""What more than one service agrees on: statuses, shared request bodies, the payments topic.

A service imports its neighbours' contracts from here, never from their apps, so that
``payments`` does not load the consents app to read a body model and the worker does not
load the payments app to learn a topic name::

    from ofsre.platform.contracts import AUTHORISED, PAYMENTS_TOPIC, LoggedUser, RCVD

* consent statuses, shared by data-sharing consents (consents v3) and payment consents
  (payments v4): ``AWAITING`` → ``AUTHORISED`` → ``REJECTED``, or ``CONSUMED`` for a payment
  consent a payment used (the rules that move a data-sharing consent: :mod:`.consents.lifecycle`);
* Pix payment statuses, moved by payments (``RCVD``, or ``RJCT`` when the queue refuses the
  payment) and by the worker (``ACCP``, then ``ACSC`` or ``RJCT``);
* ``PAYMENTS_TOPIC`` and its message (:class:`PaymentMessage`), published by payments once a
  payment is committed and consumed by the worker;
* the ``loggedUser`` / ``businessEntity`` bodies that consents and payment consents both take;
* :func:`iso`, a stored time as the specifications write it;
* ``IDEMPOTENCY_HEADER``, the payments request header whose repeat gets the first answer (the
  gateway may repeat such a request on another replica).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypedDict

from pydantic import BaseModel, Field

from ofsre.instrumentation.openfinance import format_datetime

__all__ = ["IDEMPOTENCY_HEADER", "AWAITING", "AUTHORISED", "REJECTED", "CONSUMED", "RCVD", "ACCP", "ACSC",
           "RJCT", "PIX_FINAL", "PAYMENTS_TOPIC", "PaymentMessage", "PersonDocument", "BusinessDocument",
           "LoggedUser", "BusinessEntity", "iso"]

IDEMPOTENCY_HEADER = "x-idempotency-key"

AWAITING = "AWAITING_AUTHORISATION"
AUTHORISED = "AUTHORISED"
REJECTED = "REJECTED"
CONSUMED = "CONSUMED"  # payment consents only: a payment used it

# Pix payment statuses (payments v4 EnumPaymentStatusType, the ones the platform uses).
RCVD = "RCVD"  # received: committed by payments, published to the worker
ACCP = "ACCP"  # accepted for settlement by the worker
ACSC = "ACSC"  # settled
RJCT = "RJCT"  # rejected (by the simulated SPI, or because the queue refused the payment)
PIX_FINAL = (ACSC, RJCT)  # a payment in one of these never moves again

PAYMENTS_TOPIC = "pix-payments"


class PaymentMessage(TypedDict):
    """The body payments publishes on :data:`PAYMENTS_TOPIC`; the worker needs only ``paymentId``."""

    paymentId: str
    consentId: str
    endToEndId: str
    amount: str
    currency: str


class PersonDocument(BaseModel):
    identification: str = Field(pattern=r"^\d{11}$", description="CPF, 11 digits")
    rel: Literal["CPF"]


class BusinessDocument(BaseModel):
    identification: str = Field(pattern=r"^[0-9A-Z]{12}[0-9]{2}$",
                                description="CNPJ: 14 characters (alphanumeric CNPJ)")
    rel: Literal["CNPJ"]


class LoggedUser(BaseModel):
    document: PersonDocument


class BusinessEntity(BaseModel):
    document: BusinessDocument


def iso(value: datetime | None) -> str | None:
    """A stored time in the specifications' date-time format; ``None`` (no such time) stays ``None``."""
    return None if value is None else format_datetime(value)
