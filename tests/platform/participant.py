"""A payment initiator as the tests play it: payments 4.0.0 bodies, signed with the initiator's key.

::

    me = Participant.register("org-1", jwks_dir)                     # key + JWKS "in the Directory"
    resp = http.post(url, **signed(me, url, payment_consent_body()))  # content + headers
    data = me.read(resp.text)                                        # verified answer

The bodies follow payments 4.0.0's schemas (``payment.details`` on the consent, ``endToEndId``
on the payment), so the contract test can validate them as they are.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from ofsre.platform.jws import Participant

__all__ = ["Participant", "signed", "payment_consent_body", "pix_body", "end_to_end_id", "CREDITOR_ACCOUNT",
           "CPF"]

CPF = "12345678901"
CREDITOR_ACCOUNT = {"ispb": "12345678", "issuer": "0001", "number": "1234567890", "accountType": "CACC"}


def signed(me: Participant, url: str, body: dict, *, key: str | None = None, token: str | None = None,
           consent: str | None = None) -> dict:
    """``httpx`` keyword arguments for a signed POST of ``body`` to ``url`` (``token`` overrides the JWS;
    ``consent`` goes in the bearer token, as the platform reads it)."""
    headers = {**me.headers, "x-idempotency-key": key or str(uuid.uuid4()),
               "x-fapi-interaction-id": str(uuid.uuid4()),
               # the document requires a token: a client-credentials one for consents, the consent's for
               # payments
               "authorization": f"Bearer consent:{consent}" if consent else "Bearer client-credentials"}
    return {"content": token if token is not None else me.sign(body, url), "headers": headers}


def payment_consent_body(amount: str = "100.00", *, cpf: str = CPF,
                         creditor_account: dict | None = None) -> dict:
    return {"data": {
        "loggedUser": {"document": {"identification": cpf, "rel": "CPF"}},
        "creditor": {"personType": "PESSOA_NATURAL", "cpfCnpj": "98765432100", "name": "Maria Recebedora"},
        "payment": {"type": "PIX", "date": datetime.now(UTC).date().isoformat(), "currency": "BRL",
                    "amount": amount,
                    "details": {"localInstrument": "MANU",
                                "creditorAccount": creditor_account or CREDITOR_ACCOUNT}}}}


def end_to_end_id(ispb: str = "12345678") -> str:
    """``E`` + the initiator's ISPB + yyyyMMddHHmm (UTC) + 11 random characters, as the Pix arrangement
    says."""
    return f"E{ispb}{datetime.now(UTC):%Y%m%d%H%M}{secrets.token_hex(6)[:11]}"


def pix_body(amount: str = "100.00", consent_id: str | None = None, *,
             creditor_account: dict | None = None) -> dict:
    item = {"endToEndId": end_to_end_id(), "localInstrument": "MANU",
            "payment": {"amount": amount, "currency": "BRL"},
            "creditorAccount": creditor_account or CREDITOR_ACCOUNT, "cnpjInitiator": "12345678000195",
            "remittanceInformation": "ofsre test"}
    if consent_id:
        item["consentId"] = consent_id
    return {"data": [item]}
