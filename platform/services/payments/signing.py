"""The payments service's side of JWS: verify signed requests, sign every answer the document signs.

What payments 4.0.0 says, and where it is done here:

* ``POST /consents`` and ``POST /pix/payments`` take ``application/jwt``: :meth:`PaymentsJws.read`
  checks the content type (415 otherwise), verifies the JWS against the sender's registered
  keys (:class:`~ofsre.platform.jws.Verifier`; 400 ``BAD_SIGNATURE``), checks ``aud`` is the
  URL being called and ``iss`` is the calling organisation (403 ``INVALID_CLIENT``), and records
  the ``jti`` in the shared database (a replay within 24 h: 403 ``INVALID_CLIENT``).
* 201/200 answers and 422 refusals are ``application/jwt``, signed with the platform's key
  (:meth:`PaymentsJws.response`): ``iss`` the platform's organisationId, ``aud`` the client's,
  a fresh ``iat`` and ``jti``. Other errors (400, 401, 403, 404, 415) are
  ``application/json; charset=utf-8`` as the document lists them, and signed all the same: a
  detached JWS over the body in ``x-jws-signature`` (RFC 7515 appendix F; ``iss``, ``aud``,
  ``iat``, ``jti`` in its protected header), so a refusal is as attributable as an answer.

Who is the client? The organisationId the gateway verified from the client certificate
(``x-ofsre-client-org-id``). Without mTLS (a local demo) it is the ``iss`` of the verified
request, or, for a read, the organisation that created the resource.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta

from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from ofsre.instrumentation.openfinance import error_document

from ..errors import OFError, error_response
from ..jws import JTI_WINDOW_S, MEDIA_TYPE, JwsConfig, JwsError, KeyDirectory, Verifier, body_of
from ..models import SeenJti, utcnow

__all__ = ["PaymentsJws", "JWT_MEDIA_TYPE", "SIGNATURE_HEADER"]

_log = logging.getLogger("ofsre.platform.payments")
JWT_MEDIA_TYPE = MEDIA_TYPE
SIGNATURE_HEADER = "x-jws-signature"
_PRUNE_EVERY = 200  # on average, one in this many inserts also deletes jtis older than 24 h


def _refuse(exc: JwsError) -> OFError:
    return OFError(exc.status, exc.detail, code=exc.code, title=exc.title)


class PaymentsJws:
    """The platform's signing key, the participants' registered keys, and the replay record."""

    def __init__(self, config: JwsConfig, public_url: str | None = None) -> None:
        self.config = config
        self.public_url = public_url.rstrip("/") if public_url else None
        self.key = config.platform_key()
        self.directory = KeyDirectory(config.jwks_dir)
        self.verifier = Verifier(self.directory)

    @staticmethod
    def origin(request: Request) -> str:
        """``scheme://host`` the client called (the gateway forwards the Host and the scheme)."""
        scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
        return f"{scheme}://{request.headers.get('host') or request.url.netloc}"

    def audiences(self, request: Request) -> set[str]:
        """The ``aud`` a request may carry: the endpoint's URL as called, or under the public URL."""
        found = {self.origin(request) + request.url.path}
        if self.public_url:
            found.add(self.public_url + request.url.path)
        return found

    async def read(self, request: Request, session: AsyncSession, org: str | None) -> tuple[dict, str]:
        """The verified API body of a signed request and its issuer; raises OFError on any failure."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != MEDIA_TYPE:
            raise OFError(415,
                          f"the body must be a signed JWS ({MEDIA_TYPE}), not {content_type or 'nothing'}")
        raw = await request.body()
        try:
            claims = self.verifier.verify(raw, audience=self.audiences(request), issuer=org)
        except JwsError as exc:
            raise _refuse(exc) from None
        issuer = claims["iss"]
        request.state.jws_client = issuer
        await self._remember(session, issuer, claims["jti"])
        return body_of(claims), issuer

    async def _remember(self, session: AsyncSession, issuer: str, jti: str) -> None:
        now = utcnow()
        session.add(SeenJti(issuer=issuer, jti=jti, seen_at=now))
        try:
            if random.randrange(_PRUNE_EVERY) == 0:
                cutoff = now - timedelta(seconds=JTI_WINDOW_S)
                await session.execute(delete(SeenJti).where(SeenJti.seen_at < cutoff))
            await session.commit()
        except IntegrityError:
            await session.rollback()
            raise OFError(403, "this jti was already used", code="INVALID_CLIENT",
                          title="Cliente inválido") from None

    def response(self, body: dict | str, status: int, audience: str | None) -> Response:
        """``body`` (a dict, or JSON text as stored for idempotency) signed as ``application/jwt``."""
        data = json.loads(body) if isinstance(body, str) else body
        token = self.key.sign(data, iss=self.config.org_id, aud=audience or "unknown")
        return Response(token, status_code=status, media_type=MEDIA_TYPE)

    def error(self, request: Request, exc: OFError) -> Response:
        """An error of a spec route: a 422 is a signed JWS like any answer (the document makes it
        ``application/jwt``); any other is the JSON body with its detached signature."""
        audience = getattr(request.state, "jws_client", None) or request.headers.get("x-ofsre-client-org-id")
        if exc.status == 422:
            response = self.response(error_document(exc.code, exc.title, exc.detail), exc.status, audience)
            for name, value in (exc.headers or {}).items():
                response.headers[name] = value
            return response
        response = error_response(exc.status, exc.detail, code=exc.code, title=exc.title, headers=exc.headers)
        response.headers[SIGNATURE_HEADER] = self.key.sign_detached(bytes(response.body),
                                                                    iss=self.config.org_id,
                                                                    aud=audience or "unknown")
        return response
