"""Client-certificate checks of the gateway: who is calling, and may we believe it.

Open Finance Brasil requires mTLS on every consent, data and payment API. The certificate
reaches the gateway one of two ways:

1. **Its own TLS listener** (``OFSRE_TLS_CERT_FILE``): the TLS handshake already verified the
   chain against ``OFSRE_CLIENT_CA_FILE`` (uvicorn ``ssl_cert_reqs=CERT_REQUIRED``), and
   :class:`~ofsre.platform.gateway.tls.PeerCertificateProtocol` hands the certificate to the
   app in the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``).
2. **Forwarded by a WAF** that terminated TLS, in a header (``OFSRE_CLIENT_CERT_HEADER``,
   default ``x-ssl-client-cert``, URL-encoded PEM as nginx's ``$ssl_client_escaped_cert``).
   The header is believed only from a peer inside ``OFSRE_TRUSTED_PROXIES``, and the
   certificate is verified here with ``cryptography``: issued by a CA of the bundle (issuer
   name and signature) and within its validity dates, as is the CA.

Outcomes: no certificate → 401; a certificate that is unreadable, untrusted, expired, or
forwarded by an untrusted peer (a spoofing attempt) → 403; and, however it arrived, a CA
certificate (basic constraints ``ca=true``, or key usage ``keyCertSign``), a certificate whose
extended key usage excludes ``clientAuth``, or one that names no organisation → 403. The
identity is the ``organisationId`` from the subject (``OU``, else ``organizationIdentifier``):
every ownership check of the modules and the per-origin TPM limits rest on it, so a caller
without one is never let in.

Verifications are cached by certificate bytes (bounded LRU); the dates are re-checked on
every hit, so a certificate that expires while cached is refused from then on.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["ClientIdentity", "CertificateRejected", "CertificateVerifier", "Authenticator", "identity_of"]

_log = logging.getLogger("ofsre.platform.gateway")
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    org_id: str
    subject: str


class CertificateRejected(Exception):
    """The request cannot be authenticated: ``status`` is 401 (none presented) or 403."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _org_id(cert: x509.Certificate) -> str | None:
    for oid in (NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_IDENTIFIER):
        values = cert.subject.get_attributes_for_oid(oid)
        if values and str(values[0].value).strip():
            return str(values[0].value).strip()
    return None


def _extension(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def identity_of(cert: x509.Certificate) -> ClientIdentity:
    """The caller a client certificate names; :class:`CertificateRejected` (403) when it names none."""
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if (constraints is not None and constraints.ca) or (usage is not None and usage.key_cert_sign):
        raise CertificateRejected(403, "a CA certificate is not a client certificate")
    extended = _extension(cert, x509.ExtendedKeyUsage)
    if extended is not None and x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in extended:
        raise CertificateRejected(403,
                                  "the certificate is not for client authentication (extended key usage)")
    org_id = _org_id(cert)
    if org_id is None:
        raise CertificateRejected(403, "the client certificate names no organisation (no OU or "
                                       "organizationIdentifier)")
    return ClientIdentity(org_id, cert.subject.rfc4514_string())


def _within_dates(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class CertificateVerifier:
    """Verify client certificates against a CA bundle (PEM file with one or more CAs)."""

    def __init__(self, ca_pem: bytes) -> None:
        cas = x509.load_pem_x509_certificates(ca_pem)
        self._cas: dict[x509.Name, list[x509.Certificate]] = {}
        for ca in cas:
            self._cas.setdefault(ca.subject, []).append(ca)
        self._cache: OrderedDict[bytes, x509.Certificate | CertificateRejected] = OrderedDict()

    @classmethod
    def from_file(cls, path: Path) -> CertificateVerifier:
        return cls(Path(path).read_bytes())

    def verify(self, cert_bytes: bytes, now: datetime | None = None) -> ClientIdentity:
        """The identity in a PEM (or DER) certificate; raises :class:`CertificateRejected` (403)."""
        now = now or datetime.now(UTC)
        found = self._cache.get(cert_bytes)
        if found is None:
            found = self._check_signature(cert_bytes, now)
            self._cache[cert_bytes] = found
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cert_bytes)
        if isinstance(found, CertificateRejected):
            raise found
        if not _within_dates(found, now):
            raise CertificateRejected(403, "client certificate is expired or not yet valid")
        return identity_of(found)

    def _check_signature(self, cert_bytes: bytes, now: datetime) -> x509.Certificate | CertificateRejected:
        try:
            cert = (x509.load_pem_x509_certificate(cert_bytes) if b"-----BEGIN" in cert_bytes
                    else x509.load_der_x509_certificate(cert_bytes))
        except ValueError:
            return CertificateRejected(403, "client certificate is not a readable X.509 certificate")
        for ca in self._cas.get(cert.issuer, ()):
            if not _within_dates(ca, now):
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: all "not this CA"
                continue
            return cert
        return CertificateRejected(403, "client certificate is not issued by a trusted CA")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _verified_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _identity_of_verified(pem: bytes) -> ClientIdentity:
    """A certificate the TLS handshake verified still has to name an organisation (and not be a CA)."""
    return identity_of(_verified_certificate(pem))


def _decode_header(value: str) -> bytes:
    """The forwarded certificate: URL-encoded PEM (nginx), plain PEM, or base64 DER."""
    text = unquote(value).strip()
    if "-----BEGIN" in text:
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return text.encode()  # unreadable: the verifier says so


class Authenticator:
    """Decide who a request comes from, following the module docstring's rules."""

    def __init__(self, verifier: CertificateVerifier | None, *, header: str,
                 trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> None:
        self.verifier = verifier
        self.header = header.lower().encode("latin-1")
        self.trusted_proxies = trusted_proxies
        self._trusted_cache: dict[str, bool] = {}

    def is_trusted_proxy(self, host: str | None) -> bool:
        if not host:
            return False
        known = self._trusted_cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host)
                known = any(address in net for net in self.trusted_proxies)
            except ValueError:
                known = False
            if len(self._trusted_cache) < 10_000:  # bounded: peers are few, scanners are not
                self._trusted_cache[host] = known
        return known

    def authenticate(self, scope: dict) -> ClientIdentity:
        """The caller's identity; raises :class:`CertificateRejected`."""
        chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
        if chain:  # our own listener: the handshake verified the whole chain already
            return _identity_of_verified(chain[0].encode() if isinstance(chain[0], str) else chain[0])
        forwarded = next((v for k, v in scope["headers"] if k == self.header), None)
        if forwarded is None:
            raise CertificateRejected(401, "a client certificate is required (mTLS)")
        client = scope.get("client")
        if not self.is_trusted_proxy(client[0] if client else None):
            _log.warning("client certificate header from untrusted peer %s", client[0] if client else "?")
            raise CertificateRejected(403, "client certificate forwarded by an untrusted peer")
        return self._verify(_decode_header(forwarded.decode("latin-1")))

    def _verify(self, cert_bytes: bytes) -> ClientIdentity:
        if self.verifier is None:
            raise CertificateRejected(403, "no client CA configured: no certificate can be trusted")
        return self.verifier.verify(cert_bytes)
