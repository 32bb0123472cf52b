"""Signed messages (JWS) for payments v4, as FAPI-BR requires, for both ends of a call.

Payments v4 carries every request and response body as a JWT signed with PS256
(``Content-Type: application/jwt``; the security profile's "Considerações sobre assinatura do
conteúdo de mensagens (JWS)", OpenBanking-Brasil/specs-seguranca). The rules encoded here:

* JOSE header: ``alg`` is ``PS256`` (nothing else is accepted: ``none``, HS256, RS256 are refused),
  ``kid`` names the signing key, ``typ`` is ``JWT``.
* Claims of every message: ``iss`` (the sender's organisationId), ``aud`` (request: the endpoint
  URL being called; response: the receiving client's organisationId), ``iat`` (NumericDate,
  accepted within ±60 s) and ``jti`` (a UUID v4, never reused by one client within 24 h).
  The API body (``data``, ``links``, ``meta`` or ``errors``) sits beside them.
* The receiver verifies the signature only with keys the sender registered in the Directory
  (its JWKS). A bad signature is **400 BAD_SIGNATURE**; wrong ``aud``/``iss``/``iat``/``jti`` or a
  replayed ``jti`` is **403 INVALID_CLIENT** (payments 4.0.0, "Validações" 1.2.3, 1.2.4).

The platform has no Directory: a :class:`KeyDirectory` is a folder holding one JWKS file per
organisation, ``<dir>/<organisationId>.json`` (public keys only), standing in for the
organisation's JWKS in the Directory. The same classes serve a participant (the demo, the
tests, the Locust personas) and the platform::

    key = SigningKey.generate()                                   # an institution's signing key
    KeyDirectory(jwks_dir).publish("org-1", key)                  # "register" its public key
    token = key.sign({"data": {...}}, iss="org-1", aud="https://bank.example/open-banking/payments/v4/consents")

    verifier = Verifier(KeyDirectory(jwks_dir))
    claims = verifier.verify(token, audience=url, issuer="org-1")  # JwsError on any failure

Signing and verifying use PyJWT over ``cryptography`` (no hand-written crypto). ``bench/bench_jws.py``
measures what they cost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAPSSAlgorithm

from ofsre.instrumentation._config import DATA_DIR

from .settings import JWKS_DIR, JWS_KEY_FILE, ORG_ID

_log = logging.getLogger("ofsre.platform.jws")

__all__ = ["ALGORITHM", "MEDIA_TYPE", "IAT_LEEWAY_S", "JTI_WINDOW_S", "JwsError", "BadSignature",
           "InvalidClaims",
           "SigningKey", "KeyDirectory", "Verifier", "MemoryReplayGuard", "JwsConfig", "JWT_CLAIMS",
           "body_of", "Participant", "DEFAULT_PLATFORM_ORG"]

ALGORITHM = "PS256"
MEDIA_TYPE = "application/jwt"
IAT_LEEWAY_S = 60          # "A claim iat deve ser numérica … com tolerância de +/- 60 segundos"
JTI_WINDOW_S = 86_400      # "jti deve ser única para um clientId dentro de um intervalo de 86.400 segundos"
JWT_CLAIMS = ("iss", "aud", "iat", "jti")
_MAX_TOKEN_BYTES = 1 << 20
DEFAULT_PLATFORM_ORG: str = ORG_ID.default  # the platform's organisationId unless OFSRE_ORG_ID says so
_PS256 = RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256)


class JwsError(Exception):
    """A message that must be refused: ``status`` and ``code`` are the documented answer."""

    status = 400
    code = "BAD_SIGNATURE"
    title = "Assinatura inválida"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadSignature(JwsError):
    """Not a PS256 JWS, signed by an unknown key, or the signature does not match (400)."""


class InvalidClaims(JwsError):
    """Signed correctly, but ``iss``/``aud``/``iat``/``jti`` are wrong, or the ``jti`` is replayed (403)."""

    status = 403
    code = "INVALID_CLIENT"
    title = "Cliente inválido"


# --- keys ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    """An RSA key (2048 bits, as ICP-Brasil signing certificates) with its ``kid``."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None, bits: int = 2048) -> SigningKey:
        return cls(kid or str(uuid.uuid4()), rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        key = _PS256.from_jwk(dict(jwk))
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the JWK is not an RSA private key")
        return cls(str(jwk.get("kid") or uuid.uuid4()), key)

    def private_jwk(self) -> dict:
        return {**_PS256.to_jwk(self.private_key, as_dict=True), "kid": self.kid, "alg": ALGORITHM,
                "use": "sig"}

    def public_jwk(self) -> dict:
        return {**_PS256.to_jwk(self.private_key.public_key(), as_dict=True), "kid": self.kid,
                "alg": ALGORITHM, "use": "sig"}

    def sign(self, body: Mapping[str, Any], *, iss: str, aud: str, iat: int | None = None,
             jti: str | None = None) -> str:
        """``body`` plus the claims ``iss``, ``aud``, ``iat`` (now) and ``jti`` (a new UUID v4), as a PS256
        JWS."""
        claims = {**body, "iss": iss, "aud": aud, "iat": int(time.time()) if iat is None else iat,
                  "jti": jti or str(uuid.uuid4())}
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM,
                          headers={"kid": self.kid, "typ": "JWT"})

    def sign_detached(self, content: bytes, *, iss: str, aud: str) -> str:
        """A detached JWS over ``content`` (RFC 7515 appendix F: ``header..signature``) whose protected
        header carries ``iss``, ``aud``, ``iat`` and ``jti``: how the platform signs an error that the
        document makes ``application/json`` (it travels in ``x-jws-signature``)."""
        headers = {"kid": self.kid, "typ": "JOSE", "iss": iss, "aud": aud, "iat": int(time.time()),
                   "jti": str(uuid.uuid4())}
        return jwt.api_jws.encode(content, self.private_key, algorithm=ALGORITHM, headers=headers,
                                  is_payload_detached=True)

    def save(self, path: Path) -> None:
        """Write the private JWK to ``path`` (mode 0600), atomically."""
        _atomic_write(path, json.dumps(self.private_jwk()), mode=0o600)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key stored at ``path``; if there is none, a new one is generated and stored there.

        Several replicas may start at once: each writes its own temporary file and links it into
        place only if nothing is there yet, so they all end up with the winner's key.
        """
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            candidate = cls.generate()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
            tmp.write_text(json.dumps(candidate.private_jwk()))
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # fails if another process got there first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return cls.from_jwk(json.loads(path.read_text()))


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class KeyDirectory:
    """Public keys by organisation: ``<root>/<organisationId>.json`` is that organisation's JWKS.

    Files are re-read when they change (checked at most once a second per organisation), so
    a test or an operator can register an organisation while the platform runs.
    """

    def __init__(self, root: Path, *, recheck_s: float = 1.0) -> None:
        self.root = Path(root)
        self.recheck_s = recheck_s
        self._cache: dict[str, tuple[float, float, dict[str, Any]]] = {}  # org → (checked, mtime, kid → key)
        self._lock = threading.Lock()

    def _path(self, org_id: str) -> Path | None:
        # an organisationId becomes a file name: refuse anything that could leave the folder
        if not org_id or len(org_id) > 200 or not all(c.isalnum() or c in "-_.:" for c in org_id) \
                or org_id.startswith("."):
            return None
        return self.root / f"{org_id.replace(':', '_')}.json"

    def keys(self, org_id: str) -> dict[str, Any]:
        """``kid → public key`` registered for ``org_id`` (empty when none)."""
        path = self._path(org_id)
        if path is None:
            return {}
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(org_id)
            if cached is not None and now - cached[0] < self.recheck_s:
                return cached[2]
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if cached is not None and cached[1] == mtime:
            keys = cached[2]
        else:
            keys = self._read(path) if mtime >= 0 else {}
        with self._lock:
            self._cache[org_id] = (now, mtime, keys)
        return keys

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            jwks = json.loads(path.read_text())
            found = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("kid") and "d" not in jwk:  # public keys only
                    found[str(jwk["kid"])] = _PS256.from_jwk(jwk)
            return found
        except (OSError, ValueError, TypeError, AttributeError, jwt.PyJWTError):
            return {}

    def publish(self, org_id: str, key: SigningKey) -> Path:
        """Register ``key``'s public half for ``org_id`` (kept beside its other keys)."""
        path = self._path(org_id)
        if path is None:
            raise ValueError(f"{org_id!r} cannot be an organisationId here")
        try:
            existing = json.loads(path.read_text()).get("keys", [])
        except (OSError, ValueError):
            existing = []
        keys = [k for k in existing if k.get("kid") != key.kid] + [key.public_jwk()]
        _atomic_write(path, json.dumps({"keys": keys}))
        with self._lock:
            self._cache.pop(org_id, None)
        return path


# --- verification -------------------------------------------------------------------------------------

class MemoryReplayGuard:
    """``seen(issuer, jti)``: True if this pair was already seen in the last 24 h. Bounded (LRU).

    Enough for one process (a participant checking the responses it receives); the platform's
    replicas share theirs in the database (``ofsre.platform.payments.replay``).
    """

    def __init__(self, max_entries: int = 100_000, window_s: float = JTI_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_entries, self.window_s, self.clock = max_entries, window_s, clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, issuer: str, jti: str) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen and (len(self._seen) >= self.max_entries
                                  or next(iter(self._seen.values())) < now - self.window_s):
                self._seen.popitem(last=False)
            if (issuer, jti) in self._seen:
                return True
            self._seen[(issuer, jti)] = now
            return False


class Verifier:
    """Checks a JWS as the security profile says; returns its claims or raises :class:`JwsError`."""

    def __init__(self, directory: KeyDirectory, *, leeway_s: float = IAT_LEEWAY_S,
                 clock: Callable[[], float] = time.time, replay: MemoryReplayGuard | None = None) -> None:
        self.directory = directory
        self.leeway_s = leeway_s
        self.clock = clock
        self.replay = replay  # None: the caller checks replays itself (the platform: in the database)

    def verify(self, token: str | bytes, *, audience: str | Collection[str] | None,
               issuer: str | None = None) -> dict[str, Any]:
        """The claims of ``token``, signed by a registered key of ``issuer`` and meant for ``audience``.

        ``issuer`` is who the transport says sent it (the client certificate's organisationId);
        when unknown, the token's own ``iss`` chooses the JWKS, and the signature must still
        verify with one of that organisation's registered keys. ``audience=None`` skips the
        ``aud`` comparison (a caller checking it another way); several values accept any of them
        (an endpoint known by its public URL and by the address the client called).
        """
        token = token.decode("ascii", "replace") if isinstance(token, bytes) else token
        token = token.strip()
        if not token or len(token) > _MAX_TOKEN_BYTES or token.count(".") != 2:
            raise BadSignature("the body is not a JWS in compact serialization")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise BadSignature(f"the JWS cannot be read: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise BadSignature(f"alg must be {ALGORITHM}, not {header.get('alg')!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadSignature("the JOSE header has no kid")
        if header.get("typ") not in (None, "JWT", "jwt"):
            raise BadSignature(f"typ must be JWT, not {header.get('typ')!r}")
        claimed = unverified.get("iss")
        owner = issuer or (claimed if isinstance(claimed, str) else None)
        if not owner:
            raise BadSignature("no issuer: the key that signed it cannot be looked up")
        key = self.directory.keys(owner).get(kid)
        if key is None:
            raise BadSignature(f"kid {kid!r} is not a registered key of {owner}")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM],
                                options={"verify_aud": False, "verify_iat": False, "verify_exp": True,
                                         "verify_nbf": True})
        except jwt.InvalidSignatureError:
            raise BadSignature("the signature does not match the content") from None
        except jwt.PyJWTError as exc:
            raise InvalidClaims(f"invalid claims: {exc}") from None
        self._check_claims(claims, audience=audience, owner=owner)
        return claims

    def _check_claims(self, claims: dict[str, Any], *, audience: str | Collection[str] | None,
                      owner: str) -> None:
        missing = [c for c in JWT_CLAIMS if c not in claims]
        if missing:
            raise InvalidClaims(f"missing claims: {', '.join(missing)}")
        if claims["iss"] != owner:
            raise InvalidClaims(f"iss {claims['iss']!r} is not the sender {owner!r}")
        aud = claims["aud"]
        if audience is not None:
            allowed = {audience} if isinstance(audience, str) else set(audience)
            given = set(aud) if isinstance(aud, list) else {aud} if isinstance(aud, str) else set()
            if not allowed & given:
                raise InvalidClaims(f"aud {aud!r} is not {' or '.join(sorted(allowed))}")
        iat = claims["iat"]
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise InvalidClaims("iat must be a NumericDate")
        if abs(self.clock() - iat) > self.leeway_s:
            raise InvalidClaims(f"iat is more than {self.leeway_s:g} s away from now")
        jti = claims["jti"]
        try:
            if not isinstance(jti, str) or uuid.UUID(jti).version != 4:
                raise ValueError
        except ValueError:
            raise InvalidClaims("jti must be a UUID v4") from None
        if self.replay is not None and self.replay.seen(owner, jti):
            raise InvalidClaims("jti already used")


    def verify_detached(self, signature: str, content: bytes, *, audience: str | None,
                        issuer: str) -> dict[str, Any]:
        """The protected header of a detached JWS over ``content`` (see :meth:`SigningKey.sign_detached`),
        after checking the signature, ``alg``, ``iss``, ``aud``, ``iat`` and ``jti`` as for a message."""
        try:
            header = jwt.get_unverified_header(signature)
        except jwt.PyJWTError as exc:
            raise BadSignature(f"the detached JWS cannot be read: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise BadSignature(f"alg must be {ALGORITHM}, not {header.get('alg')!r}")
        key = self.directory.keys(issuer).get(str(header.get("kid")))
        if key is None:
            raise BadSignature(f"kid {header.get('kid')!r} is not a registered key of {issuer}")
        try:
            jwt.api_jws.decode_complete(signature, key, algorithms=[ALGORITHM], detached_payload=content)
        except jwt.PyJWTError:
            raise BadSignature("the detached signature does not match the content") from None
        self._check_claims(header, audience=audience, owner=issuer)
        return header


def body_of(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The API body carried by a verified message: its claims without the JWT's own."""
    return {k: v for k, v in claims.items() if k not in JWT_CLAIMS}



# --- configuration ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JwsConfig:
    """Where the platform finds keys (environment variable in brackets).

    org_id    [OFSRE_ORG_ID] the platform's organisationId: ``iss`` of its messages (default ``ofsre-bank``)
    jwks_dir  [OFSRE_JWKS_DIR] one JWKS per organisation, ``<organisationId>.json`` (default
              ``$OFSRE_DATA_DIR/jwks``)
    key_file  [OFSRE_JWS_KEY_FILE] the platform's private signing JWK (default
              ``$OFSRE_DATA_DIR/jws/platform-key.json``, generated on first start; its public half is
              published in ``jwks_dir`` as ``<org_id>.json``)
    """

    org_id: str
    jwks_dir: Path
    key_file: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, data_dir: Path | None = None) -> JwsConfig:
        base: Path = DATA_DIR.get(data_dir, environ=environ)
        return cls(org_id=ORG_ID.from_env(environ),
                   jwks_dir=JWKS_DIR.from_env(environ) or base / "jwks",
                   key_file=JWS_KEY_FILE.from_env(environ) or base / "jws" / "platform-key.json")

    def platform_key(self) -> SigningKey:
        """The platform's signing key (created on first use), its public half published in ``jwks_dir``
        when that folder can be written. A read-only one (in Kubernetes, a ConfigMap of the participants'
        keys: the platform's own is in the Directory) is left as it is, with a warning."""
        key = SigningKey.load_or_create(self.key_file)
        directory = KeyDirectory(self.jwks_dir)
        if key.kid not in directory.keys(self.org_id):
            try:
                directory.publish(self.org_id, key)
            except OSError as exc:
                _log.warning("the platform's public key %s is not in %s and cannot be written there (%s): "
                             "participants must find it in the Directory", key.kid, self.jwks_dir,
                             exc.strerror or exc)
        return key


# --- the participant's side ---------------------------------------------------------------------------

class Participant:
    """An institution calling payments v4: signs its requests and verifies the platform's answers.

    What the demo, the tests and the Locust personas use, so they sign like a real initiator::

        me = Participant.register("org-1", jwks_dir)                  # new key, public half registered
        resp = httpx.post(url, content=me.sign(body, url), headers={**me.headers, "x-idempotency-key": k})
        data = me.read(resp.text)                                     # verified: iss, aud = org-1, iat, jti

    ``read`` refuses a replayed answer too (a bounded in-memory record of the ``jti`` seen).
    """

    headers = {"content-type": MEDIA_TYPE, "accept": f"{MEDIA_TYPE}, application/json"}

    def __init__(self, org_id: str, key: SigningKey, directory: KeyDirectory,
                 platform_org: str = DEFAULT_PLATFORM_ORG) -> None:
        self.org_id, self.key, self.directory, self.platform_org = org_id, key, directory, platform_org
        self.verifier = Verifier(directory, replay=MemoryReplayGuard(max_entries=10_000))

    @classmethod
    def register(cls, org_id: str, jwks_dir: Path, *,
                 platform_org: str = DEFAULT_PLATFORM_ORG) -> Participant:
        """A new signing key for ``org_id``, its public half published in ``jwks_dir`` (the Directory)."""
        directory = KeyDirectory(Path(jwks_dir))
        key = SigningKey.generate(kid=f"{org_id}-{uuid.uuid4().hex[:8]}")
        directory.publish(org_id, key)
        return cls(org_id, key, directory, platform_org)

    def sign(self, body: Mapping[str, Any], url: str) -> str:
        """``body`` as a signed request to ``url`` (``aud``: the endpoint called, without its query)."""
        return self.key.sign(body, iss=self.org_id, aud=url.split("?", 1)[0])

    def read(self, token: str | bytes) -> dict[str, Any]:
        """The API body of a signed answer, after checking it came from the platform and is meant for us."""
        return body_of(self.verifier.verify(token, audience=self.org_id, issuer=self.platform_org))

    def read_error(self, content: bytes, signature: str | None) -> dict[str, Any]:
        """A JSON error answer (400/401/403/404/415), after checking its ``x-jws-signature``."""
        if not signature:
            raise BadSignature("the error carries no x-jws-signature")
        self.verifier.verify_detached(signature, content, audience=self.org_id, issuer=self.platform_org)
        return json.loads(content)
