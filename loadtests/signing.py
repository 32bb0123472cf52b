"""Signed payment messages (JWS, PS256) as a receiving institution sends and checks them.

Payments v4 bodies are JWTs (``application/jwt``; openfinance.md §4): the persona signs each
request with its own RSA key (claims ``iss`` = its organisationId, ``aud`` = the URL called,
``iat``, a fresh ``jti``) and verifies each answer with the platform's public key (``iss`` =
the platform's organisationId, ``aud`` = the persona's). Keys are registered the way the
platform reads them: one JWKS file per organisation, ``<jwks_dir>/<organisationId>.json`` —
the stand-in for the Directory; with a local runtime that is ``<data dir>/jwks``.

PyJWT over ``cryptography`` does the cryptography; nothing here imports the platform (the
platform's organisationId, ``OFSRE_ORG_ID``, is declared in :mod:`ofsre.instrumentation._config`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAPSSAlgorithm

from ofsre.instrumentation._config import ORG_ID

__all__ = ["MEDIA_TYPE", "PersonaSigner", "DEFAULT_PLATFORM_ORG"]

MEDIA_TYPE = "application/jwt"
ALGORITHM = "PS256"
# the reference platform's organisationId unless OFSRE_ORG_ID says otherwise
DEFAULT_PLATFORM_ORG: str = ORG_ID.default
_PS256 = RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256)
_API_CLAIMS = ("iss", "aud", "iat", "jti", "exp", "nbf")


def _file_name(org_id: str) -> str:
    return f"{org_id.replace(':', '_')}.json"


class PersonaSigner:
    """One institution's signing key, registered in ``jwks_dir`` when created."""

    headers = {"content-type": MEDIA_TYPE, "accept": f"{MEDIA_TYPE}, application/json"}

    def __init__(self, org_id: str, jwks_dir: str | os.PathLike[str],
                 platform_org: str = DEFAULT_PLATFORM_ORG):
        self.org_id, self.platform_org = org_id, platform_org
        self.jwks_dir = Path(jwks_dir)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"{org_id}-{uuid.uuid4().hex[:8]}"
        self._platform_keys: dict[str, Any] = {}
        self._register()

    def _register(self) -> None:
        self.jwks_dir.mkdir(parents=True, exist_ok=True)
        path = self.jwks_dir / _file_name(self.org_id)
        try:
            keys = json.loads(path.read_text()).get("keys", [])
        except (OSError, ValueError):
            keys = []
        jwk = {**_PS256.to_jwk(self.key.public_key(), as_dict=True), "kid": self.kid, "alg": ALGORITHM,
               "use": "sig"}
        fd, tmp = tempfile.mkstemp(dir=self.jwks_dir, prefix=".jwks-")
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [*keys, jwk]}, f)
        os.replace(tmp, path)  # atomic: the platform never reads half a file

    def sign(self, body: dict[str, Any], url: str) -> str:
        """``body`` as a signed request to ``url`` (``aud`` is the URL without its query)."""
        claims = {**body, "iss": self.org_id, "aud": url.split("?", 1)[0], "iat": int(time.time()),
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"})

    def _platform_key(self, kid: str):
        if kid not in self._platform_keys:
            path = self.jwks_dir / _file_name(self.platform_org)
            for jwk in json.loads(path.read_text()).get("keys", []):
                self._platform_keys[jwk.get("kid")] = _PS256.from_jwk(jwk)
        return self._platform_keys[kid]

    def read(self, token: str) -> dict[str, Any]:
        """The API body of a signed answer, after checking the platform signed it for us.
        Raises ``ValueError`` (with the reason) otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            claims = jwt.decode(token, self._platform_key(kid), algorithms=[ALGORITHM], audience=self.org_id,
                                issuer=self.platform_org, options={"require": ["iat", "jti"]})
        except (jwt.PyJWTError, KeyError, OSError, ValueError) as exc:
            raise ValueError(f"the answer's JWS does not verify: {exc}") from None
        return {k: v for k, v in claims.items() if k not in _API_CLAIMS}
