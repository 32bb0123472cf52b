"""Consent statuses and the rules that move a consent between them.

Data-sharing consent (consents v3)::

    AWAITING_AUTHORISATION --authorise--> AUTHORISED --revoke (DELETE)--> REJECTED
             |                                  |
             +--reject / DELETE / 60 min--> REJECTED <--expirationDateTime passed--+

The statuses themselves are :mod:`ofsre.platform.contracts`' (payment consents share them).
Expiry is evaluated when a consent is read (:func:`effective_status`), so no background job is
needed and every reader (consents, accounts) sees the same answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..contracts import AUTHORISED, AWAITING, REJECTED
from ..models import Consent, as_utc

__all__ = ["AWAITING_TTL", "effective_status"]

# A consent nobody authorises within an hour is rejected. Reason codes are consents 3.3.1's enum:
# CONSENT_EXPIRED ("ultrapassou o tempo limite para autorização") for that, CONSENT_MAX_DATE_REACHED
# ("ultrapassou o tempo limite de compartilhamento") for an AUTHORISED consent past expirationDateTime.
AWAITING_TTL = timedelta(minutes=60)


def effective_status(consent: Consent, now: datetime) -> tuple[str, str | None]:
    """``(status, rejection reason code)`` of ``consent`` at ``now``, expiry included."""
    if consent.status == AWAITING and as_utc(consent.created_at) + AWAITING_TTL <= now:
        return REJECTED, "CONSENT_EXPIRED"
    expires = as_utc(consent.expiration_at)
    if consent.status == AUTHORISED and expires is not None and expires <= now:
        return REJECTED, "CONSENT_MAX_DATE_REACHED"
    return consent.status, consent.rejection_reason
